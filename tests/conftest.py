"""Shared fixtures: the real default segmenter and the real COCO sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refseg.testing.coco_sample import DEFAULT_FOLDER as COCO_SAMPLE

ASSETS = Path(__file__).resolve().parents[1] / "src" / "refseg" / "assets"


@pytest.fixture(scope="session")
def coco_sample() -> Path:
    """Folder of the 2-image COCO val2017 sample (``images/``, ``instances.json``)."""
    if not (COCO_SAMPLE / "instances.json").is_file():
        pytest.fail(f"the bundled COCO sample is missing at {COCO_SAMPLE}")
    return COCO_SAMPLE


@pytest.fixture(scope="session")
def coco_instances(coco_sample: Path) -> dict:
    return json.loads((coco_sample / "instances.json").read_text())


@pytest.fixture(scope="session")
def sam():
    """The embedded default segmenter with its real weights (fetched once per machine)."""
    from refseg.segmentation import load_segmenter

    return load_segmenter("onnx-sam")


@pytest.fixture(scope="session")
def astronaut():
    """The bundled sample image as an RGB array."""
    from refseg.image import load_image

    return load_image(ASSETS / "astronaut.jpg")


# --- tiny VLM fixtures ---
# Tiny randomly initialised Qwen-VL checkpoints of the real architectures (built offline in
# about a second each): grounding, server, openai and training tests load them through the
# same from_pretrained path as real checkpoints.


def taught_tiny_qwen(
    folder: Path, image, phrase: str, answer: str, *, answer_kind: str = "box", **options
):
    """``(folder, grounder)``: a tiny Qwen3-VL overfitted to answer ``answer`` for ``(image,
    phrase)`` through the real generate (taught on one thread, then saved to ``folder``);
    ``options`` go to the grounder (``max_new_tokens``...)."""
    import torch

    from refseg.grounding import load_grounder
    from refseg.testing.tiny_vlm import build_tiny_vlm, teach_answer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_tiny_vlm(folder, layers=2, vision_depth=1)
        grounder = load_grounder(f"qwen3-vl:{folder}", **options)
        grounder.answer = answer_kind
        assert teach_answer(grounder, image, phrase, answer) < 0.05
        grounder.model.save_pretrained(folder)
    finally:
        torch.set_num_threads(threads)
    return folder, grounder


@pytest.fixture(scope="session")
def tiny_qwen3_vl_dir(tmp_path_factory) -> Path:
    """A ~2M-parameter Qwen3-VL checkpoint folder (patch 16, merge 2, seed 0)."""
    from refseg.testing.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-qwen3-vl"), family="qwen3-vl")


@pytest.fixture(scope="session")
def tiny_qwen25_vl_dir(tmp_path_factory) -> Path:
    """A ~2M-parameter Qwen2.5-VL checkpoint folder (patch 14, merge 2, seed 0)."""
    from refseg.testing.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-qwen25-vl"), family="qwen2.5-vl")
