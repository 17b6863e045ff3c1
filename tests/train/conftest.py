"""Fixtures for training tests: a tiny Qwen3-VL and a tiny RefShapes set, built once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    """A randomly initialised tiny Qwen3-VL checkpoint folder (seconds to build)."""
    from refseg.testing.tiny_vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"), family="qwen3-vl", layers=2)


@pytest.fixture(scope="session")
def tiny_refshapes(tmp_path_factory) -> Path:
    """A few RefShapes samples per split (generated, not downloaded)."""
    from refseg.data.refshapes import generate_refshapes

    out = tmp_path_factory.mktemp("refshapes")
    generate_refshapes(out, {"train": 12, "val": 4}, seed=0)
    return out
