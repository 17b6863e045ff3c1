"""Hostile checkpoints from others: parameter bombs, deflate bombs, bad config types.

A checkpoint is a file someone else made. Its JSON may describe a decoder whose every field is
within its own bound but whose product is tens of gigabytes; its zip may inflate a thousandfold.
Each must end in one line before the allocation, not after.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ASSETS
from tests.hostile.harness import run_cli

IMAGE = str(ASSETS / "astronaut.jpg")

_BOXDEC = {
    "sources": ["final"],
    "source_dims": [128],
    "text_dim": 128,
    "width": 32,
    "heads": 4,
    "depth": 1,
}


def _boxdec(folder: Path, config: object, **meta: object) -> str:
    data = {"format": "refseg-boxdec/1", "config": config, "vlm_fingerprint": "x", **meta}
    (folder / "boxdec.json").write_text(json.dumps(data))
    (folder / "boxdec.safetensors").write_bytes(b"")
    return f"boxdec:{folder}"


def test_boxdec_parameter_bomb_is_refused_before_building(tmp_path):
    # Every field within its own bound; together ~41 billion parameters (153 GiB of floats).
    bomb = {
        "sources": [f"s{i}" for i in range(64)],
        "source_dims": [65536] * 64,
        "text_dim": 65536,
        "width": 4096,
        "heads": 64,
        "depth": 32,
        "mlp_ratio": 16.0,
    }
    out = run_cli("segment", IMAGE, "--box", "1,1,50,50", "--segmenter", _boxdec(tmp_path, bomb))
    assert out.one_line_error, out.stderr[-2000:]
    assert "parameters" in out.stderr


@pytest.mark.parametrize(
    "config, expect",
    [
        ({k: v for k, v in _BOXDEC.items() if k != "sources"}, "sources"),  # a missing key
        ({k: v for k, v in _BOXDEC.items() if k != "text_dim"}, "text_dim"),
        (None, "unreadable config"),
    ],
)
def test_boxdec_missing_keys_are_one_line(tmp_path, config, expect):
    out = run_cli("segment", IMAGE, "--box", "1,1,50,50", "--segmenter", _boxdec(tmp_path, config))
    assert out.one_line_error, out.stderr[-2000:]
    assert expect in out.stderr


def _torch_zip(path: Path, config: object, *, inflated: int = 0) -> None:
    """A refiner checkpoint; with ``inflated``, its tensor record re-stored as ``inflated``
    deflated zero bytes (a ~1,000:1 bomb: 600 MiB from ~600 KB)."""
    import torch

    buffer = io.BytesIO()
    state = {"x": torch.zeros(1, dtype=torch.uint8)}
    torch.save(
        {"format": "refseg-refiner", "version": 1, "config": config, "state_dict": state}, buffer
    )
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            if inflated and info.filename.endswith("/data/0"):
                with out.open(info.filename, "w", force_zip64=True) as record:
                    chunk = bytes(1 << 20)
                    for _ in range(inflated >> 20):
                        record.write(chunk)
            else:
                out.writestr(info.filename, source.read(info.filename))


def _refine(checkpoint: Path):
    return run_cli("segment", IMAGE, "a person", "--refiner", str(checkpoint))


def test_refiner_deflate_bomb_is_refused_before_inflating(tmp_path):
    pytest.importorskip("torch")
    bomb = tmp_path / "bomb.pt"
    _torch_zip(bomb, {}, inflated=600 << 20)
    assert bomb.stat().st_size < 2 << 20
    out = _refine(bomb)
    assert out.one_line_error, out.stderr[-2000:]
    assert "uncompressed" in out.stderr


@pytest.mark.parametrize("value", ["abc", float("inf"), [64], None, True, 1e300])
def test_refiner_config_types_are_one_line(tmp_path, value):
    pytest.importorskip("torch")
    path = tmp_path / "odd.pt"
    _torch_zip(path, {"channels": value})
    out = _refine(path)
    assert out.one_line_error, out.stderr[-2000:]
    assert "channels" in out.stderr
