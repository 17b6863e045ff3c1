"""Hostile images through the CLI: no external interpreter, no crash on extreme shapes."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from tests.hostile.harness import run_cli, run_python

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


def _png_header(width: int, height: int) -> bytes:
    """A PNG of a 1-bit ``width x height`` image with no pixel data: the header alone."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_max_pixels_above_pillows_own_bound_is_honoured(tmp_path):
    """REFSEG_MAX_PIXELS above Pillow's bound (2 x 89,478,485: ~179 M) was silently capped:
    a 196 M-pixel image under a 250 M limit was refused as a decompression bomb."""
    path = tmp_path / "header.png"
    path.write_bytes(_png_header(14_000, 14_000))
    env = {"REFSEG_MAX_PIXELS": "250000000"}
    code = f"""
        from refseg.image import image_size
        print(image_size(open({str(path)!r}, "rb").read()))
    """
    sized = run_python(code, env=env, memory=2 * 1024**3)
    assert sized.returncode == 0 and "(14000, 14000)" in sized.stdout, sized.stderr[-2000:]
    outcome = run_cli("segment", str(path), "--box", "0,0,10,10", env=env, memory=2 * 1024**3)
    assert outcome.one_line_error, outcome.stderr[-2000:]
    assert "bomb" not in outcome.stderr and "not a readable image" in outcome.stderr
    # refseg's own limit still holds, and is the one named.
    outcome = run_cli(
        "segment", str(path), "--box", "0,0,10,10", env={"REFSEG_MAX_PIXELS": "100000000"}
    )
    assert outcome.one_line_error and "over the limit of 100000000" in outcome.stderr
