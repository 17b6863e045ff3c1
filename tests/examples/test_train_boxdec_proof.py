"""The box decoder proof at toy size: every stage runs and the table it writes is consistent."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from refseg import masks

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_boxdec_proof.py"


@pytest.fixture(scope="module")
def proof():
    spec = importlib.util.spec_from_file_location("train_boxdec_proof", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_toy_run_end_to_end(proof, tmp_path: Path, sam) -> None:
    argv = [
        "--work",
        str(tmp_path),
        "--n-train",
        "12",
        "--n-eval",
        "3",
        "--steps",
        "1",
        "--bootstrap",
        "10",
        "--variants",
        "boxdec,no-pixel-fusion",
        "--width",
        "32",
        "--depth",
        "1",
    ]
    assert proof.main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["training"]["boxdec"]["steps"] == 1
    for split in ("test", "ood"):
        for kind in ("gt", "jitter"):
            table = results[split][kind]
            assert set(table) >= {"boxdec", "no-pixel-fusion", "box", "onnx-sam"}
            for name in ("boxdec", "box", "onnx-sam"):
                for value, low, high in (table[name][m] for m in ("gIoU", "cIoU", "mBIoU")):
                    assert 0 <= low <= value <= high <= 1
            # SAM prompted with the very boxes outlines flat shapes far better than the boxes.
            assert table["onnx-sam"]["gIoU"][0] > table["box"]["gIoU"][0]
        assert results[split]["cpu_ms_per_image"]["boxdec"] > 0
    # The box-as-mask row is the IoU of the filled GT boxes, computed here independently.
    from refseg.data.base import open_dataset

    ious = []
    for s in open_dataset(f"refshapes:{tmp_path / 'data'}:test"):
        if not s.masks:
            continue
        gt = np.zeros((s.height, s.width), bool)
        box = np.zeros_like(gt)
        for rle, (x1, y1, x2, y2) in zip(s.masks, s.gt_boxes()):
            gt |= masks.decode(rle)
            box[round(y1) : round(y2), round(x1) : round(x2)] = True
        ious.append((gt & box).sum() / (gt | box).sum())
    assert results["test"]["gt"]["box"]["gIoU"][0] == pytest.approx(np.mean(ious))
    assert "| boxdec |" in (tmp_path / "results.md").read_text()
    # A rerun reuses the trained decoders instead of training again.
    weights = tmp_path / "decoders" / "boxdec" / "boxdec.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert proof.main([*argv, "--no-sam"]) == 0
    assert weights.stat().st_mtime_ns == stamp
