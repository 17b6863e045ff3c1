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
from tests.hostile.harness import BOXDEC_CONFIG, run_cli_cases

IMAGE = str(ASSETS / "astronaut.jpg")


def _boxdec(folder: Path, config: object, **meta: object) -> str:
    data = {"format": "refseg-boxdec/1", "config": config, "vlm_fingerprint": "x", **meta}
    (folder / "boxdec.json").write_text(json.dumps(data))
    (folder / "boxdec.safetensors").write_bytes(b"")
    return f"boxdec:{folder}"


#: Every field within its own bound; together ~41 billion parameters (153 GiB of floats).
_BOMB = {
    "sources": [f"s{i}" for i in range(64)],
    "source_dims": [65536] * 64,
    "text_dim": 65536,
    "width": 4096,
    "heads": 64,
    "depth": 32,
    "mlp_ratio": 16.0,
}
BOXDEC_CONFIG_CASES = {
    "boxdec-bomb": (_BOMB, "parameters"),
    "boxdec-no-sources": ({k: v for k, v in BOXDEC_CONFIG.items() if k != "sources"}, "sources"),
    "boxdec-no-text-dim": ({k: v for k, v in BOXDEC_CONFIG.items() if k != "text_dim"}, "text_dim"),
    "boxdec-null": (None, "unreadable config"),
}
_CHANNELS = {"abc": "abc", "inf": float("inf"), "list": [64], "null": None, "true": True}
_CHANNELS["huge"] = 1e300


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


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case in one limited child: ``refseg segment`` with each checkpoint."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("checkpoints")
    cases = {}
    for name, (config, _) in BOXDEC_CONFIG_CASES.items():
        (root / name).mkdir()
        spec = _boxdec(root / name, config)
        cases[name] = ["segment", IMAGE, "--box", "1,1,50,50", "--segmenter", spec]
    bomb = root / "bomb.pt"
    _torch_zip(bomb, {}, inflated=600 << 20)
    assert bomb.stat().st_size < 2 << 20
    cases["refiner-bomb"] = ["segment", IMAGE, "a person", "--refiner", str(bomb)]
    for name, value in _CHANNELS.items():
        path = root / f"channels-{name}.pt"
        _torch_zip(path, {"channels": value})
        cases[f"channels-{name}"] = ["segment", IMAGE, "a person", "--refiner", str(path)]
    return run_cli_cases(cases)


@pytest.mark.parametrize("name", list(BOXDEC_CONFIG_CASES))
def test_boxdec_bombs_and_missing_keys_are_one_line_before_building(outcomes, name):
    out = outcomes[name]
    assert out.one_line_error, out.stderr[-2000:]
    assert BOXDEC_CONFIG_CASES[name][1] in out.stderr


def test_refiner_deflate_bomb_is_refused_before_inflating(outcomes):
    out = outcomes["refiner-bomb"]
    assert out.one_line_error, out.stderr[-2000:]
    assert "uncompressed" in out.stderr


@pytest.mark.parametrize("name", list(_CHANNELS))
def test_refiner_config_types_are_one_line(outcomes, name):
    out = outcomes[f"channels-{name}"]
    assert out.one_line_error, out.stderr[-2000:]
    assert "channels" in out.stderr
