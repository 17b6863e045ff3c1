"""Hostile images through the CLI: no external interpreter, no crash on extreme shapes."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from tests.hostile.harness import run_cli

EPS_LOOP = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n{ } loop\nshowpage\n"


@pytest.fixture(scope="module")
def strip(tmp_path_factory):
    """A 2049x1 PNG: SAM's resize rounds its height to 0."""
    path = tmp_path_factory.mktemp("hostile-image") / "strip.png"
    Image.fromarray(np.full((1, 2049, 3), 200, np.uint8)).save(path)
    return path


def test_eps_with_an_endless_loop_is_refused_at_once(tmp_path):
    path = tmp_path / "loop.eps"
    path.write_bytes(EPS_LOOP)
    started = time.monotonic()
    outcome = run_cli("segment", str(path), "--box", "0,0,10,10", timeout=30)
    assert outcome.one_line_error and "accepted format" in outcome.stderr
    assert time.monotonic() - started < 30


def test_a_2049x1_image_segments(strip, tmp_path):
    out = tmp_path / "out.json"
    outcome = run_cli("segment", str(strip), "--box", "0,0,1000,1", "--json", str(out))
    assert outcome.returncode == 0, outcome.stderr
    [instance] = json.loads(out.read_text())["instances"]
    assert instance["mask"]["size"] == [1, 2049]


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path):
    buffer = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buffer, format="PNG")  # 144 Mpx, ~20 KB
    path = tmp_path / "bomb.png"
    path.write_bytes(buffer.getvalue())
    outcome = run_cli("segment", str(path), "--box", "0,0,10,10", memory=2 * 1024**3)
    assert outcome.one_line_error and (
        "over the limit" in outcome.stderr or "bomb" in outcome.stderr
    )
