"""Hostile box decoder checkpoints: huge sizes, bad types, corrupt weights — one line each."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ASSETS
from tests.hostile.harness import BOXDEC_CONFIG, run_cli

IMAGE = str(ASSETS / "astronaut.jpg")


@pytest.mark.parametrize(
    "config, weights, expect",
    [
        ({**BOXDEC_CONFIG, "width": 2**30}, b"", "4096"),  # would allocate ~10^18 floats
        ({**BOXDEC_CONFIG, "source_dims": [10**12]}, b"", "65536"),
        ({**BOXDEC_CONFIG, "sources": ["final"] * 1000, "source_dims": [1] * 1000}, b"", "1-64"),
        ({**BOXDEC_CONFIG, "mlp_ratio": "lots"}, b"", "number"),
        ({**BOXDEC_CONFIG, "depth": None}, b"", "depth"),
        (BOXDEC_CONFIG, (2**62).to_bytes(8, "little") + b"{}", "unreadable weights"),
        (BOXDEC_CONFIG, b"\x00" * 3, "unreadable weights"),
        ("not a mapping", b"", "unreadable config"),
    ],
)
def test_bad_checkpoints_end_in_one_line(tmp_path, config, weights, expect):
    meta = {"format": "refseg-boxdec/1", "config": config, "vlm_fingerprint": "x"}
    (tmp_path / "boxdec.json").write_text(json.dumps(meta))
    (tmp_path / "boxdec.safetensors").write_bytes(weights)
    out = run_cli("segment", IMAGE, "--box", "1,1,50,50", "--segmenter", f"boxdec:{tmp_path}")
    assert out.one_line_error, out.stderr[-2000:]
    assert expect in out.stderr
