"""Engine and real-size tests: a real OpenVINO export (its isolated environment is made once per
machine, minutes) and Qwen-VL models of the published sizes (GBs, a minute each). They run with
``bash scripts/test_engines.sh`` (CI runs it after the suite), not in the 10-minute suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("REFSEG_ENGINE_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="engine/real-size test: run bash scripts/test_engines.sh")
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def taught_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny Qwen3-VL and Qwen2.5-VL checkpoints taught one answer for the bundled photo."""
    import torch

    from refseg.grounding import load_grounder
    from refseg.image import load_image
    from refseg.testing.tiny_vlm import build_tiny_vlm, teach_answer
    from tests.engines.common import ANSWERS, ASTRONAUT, PHRASE

    image = load_image(ASTRONAUT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folders = {}
    try:
        for family, answer in ANSWERS.items():
            folder = tmp_path_factory.mktemp(family)
            build_tiny_vlm(folder, family=family, layers=2, vision_depth=1)
            grounder = load_grounder(f"{family}:{folder}")
            assert teach_answer(grounder, image, PHRASE, answer) < 0.05
            grounder.model.save_pretrained(folder)
            folders[family] = folder
    finally:
        torch.set_num_threads(threads)
    return folders
