"""The proof script's own pieces: the warm-up set and the image-reliance measure."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from refseg import masks

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_refshapes_proof.py"


@pytest.fixture(scope="module")
def proof():
    spec = importlib.util.spec_from_file_location("train_refshapes_proof", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_warmup_set_masks_are_the_red_square(proof, tmp_path: Path) -> None:
    from PIL import Image

    samples = proof.generate_warmup(tmp_path / "warmup", 5, seed=0)
    assert len(samples) == 5 and {s.phrase for s in samples} == {"the red square"}
    for s in samples:
        image = np.asarray(Image.open(s.image).convert("RGB"))
        red = (image == (220, 30, 30)).all(-1)
        assert np.array_equal(masks.decode(s.masks[0]), red) and red.sum() >= 30 * 30
    # A second call reuses the set instead of rewriting it.
    stamp = (tmp_path / "warmup" / "train.jsonl").stat().st_mtime_ns
    proof.generate_warmup(tmp_path / "warmup", 5, seed=0)
    assert (tmp_path / "warmup" / "train.jsonl").stat().st_mtime_ns == stamp


def test_image_gap_is_zero_exactly_when_the_images_carry_nothing(
    proof, tmp_path: Path, tiny_qwen3_vl_dir: Path
) -> None:
    samples = proof.generate_warmup(tmp_path / "warmup", 4, seed=0)
    gap = proof.image_gap(tiny_qwen3_vl_dir, tmp_path, samples, 64 * 64, batch=4)
    assert np.isfinite(gap) and gap != 0.0  # a random model's answers depend on its input
    # Every sample shows the same image: swapping images cannot change any loss.
    for s in samples[1:]:
        shutil.copyfile(samples[0].image, s.image)
    assert proof.image_gap(tiny_qwen3_vl_dir, tmp_path, samples, 64 * 64, batch=4) == 0.0
