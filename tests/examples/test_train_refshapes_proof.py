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


def test_control_steps_match_the_chosen_grpo_runs_measured_compute(proof) -> None:
    stages = {
        "sft": {"curriculum": {"refshapes": {"steps": 100, "seconds": 50.0, "cpu_seconds": 90}}},
        "sft+grpo[acc]": {"steps": 4, "seconds": 120.0, "cpu_seconds": 180.0},
    }
    assert proof.matched_steps(stages, "sft+grpo[acc]") == 200  # 180 CPU s at 0.9 per SFT step
    # Records made before CPU seconds were kept fall back to wall seconds.
    wall_only = {
        "sft": {"curriculum": {"refshapes": {"steps": 100, "seconds": 50.0}}},
        "sft+grpo[acc]": {"steps": 4, "seconds": 120.0},
    }
    assert proof.matched_steps(wall_only, "sft+grpo[acc]") == 240  # 120 s at 0.5 s per step


def test_toy_run_is_step_budgeted_with_intervals(proof, tmp_path: Path, capsys) -> None:
    import json

    args = [
        "--work", str(tmp_path / "w"), "--n-train", "6", "--n-val", "3", "--n-eval", "4",
        "--n-single", "4", "--n-warmup", "4", "--warmup-steps", "2", "--single-steps", "1",
        "--sft-steps", "2", "--rl-steps", "1", "--rl-prompts", "1", "--batch", "2",
        "--max-new-tokens", "12", "--variants", "acc", "--skip-untrained",
    ]  # fmt: skip
    assert proof.main(args) == 0
    summary = json.loads((tmp_path / "w" / "results-acc.json").read_text())
    stages = summary["stages"]
    assert [stages["sft"]["curriculum"][k]["steps"] for k in ("warmup", "single", "refshapes")] == [
        2, 1, 2
    ]  # fmt: skip
    assert stages["sft+grpo[acc]"]["steps"] == 1
    assert stages["sft-continued"]["steps"] == proof.matched_steps(stages, "sft+grpo[acc]")
    for name, res in summary["results"].items():
        for split in ("test", "ood"):
            ci = res[split]["ci"]["all"]
            assert ci["gIoU"][0] <= res[split]["all"]["gIoU"] <= ci["gIoU"][1], name
    assert "test" in summary["paired_deltas"]
    assert "paired bootstrap 95%" in capsys.readouterr().out
