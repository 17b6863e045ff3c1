"""Hostile inputs to ``refseg eval`` and ``eval-compare`` that cost time and memory instead of
breaking a parser: a predictions line with 1,000 instances on a 16-megapixel image, a 3 GiB
sparse records file, a hand-edited record whose 1,000 instances the report must draw, and
dataset ``meta`` values that are HTML. Each runs in a bounded child (tests/hostile/harness.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from refseg import masks
from refseg.eval.metrics import METRIC_NAMES
from tests.hostile.harness import run_cli

BIG_W, BIG_H = 4000, 4000  # 16 megapixels


def _image(path: Path, width: int, height: int) -> Path:
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(path, quality=50)
    return path


def _dataset(folder: Path, width: int, height: int, meta: dict | None = None) -> Path:
    image = _image(folder / "img.jpg", width, height)
    box = [10, 10, 60, 40]
    sample = {
        "id": "s0",
        "image": str(image),
        "phrase": "the thing",
        "masks": [{"polygons": [[10, 10, 60, 10, 60, 40, 10, 40]]}],
        "boxes": [box],
        "width": width,
        "height": height,
        "meta": meta or {},
    }
    path = folder / "data.jsonl"
    path.write_text(json.dumps(sample) + "\n")
    return path


def _instances(count: int, width: int, height: int) -> list[dict]:
    empty = masks.empty(height, width)
    return [
        {"box": [i % 50, 0, i % 50 + 20, 20], "points": [], "point_labels": [], "mask": empty}
        for i in range(count)
    ]


def test_a_thousand_instances_on_16_megapixels_are_refused_at_once(tmp_path: Path) -> None:
    """Before: scored for about a minute, then the report decoded all 1,000 masks (3.3 GB)."""
    data = _dataset(tmp_path, BIG_W, BIG_H)
    line = {"id": "s0", "image": {"width": BIG_W, "height": BIG_H}}
    line["instances"] = _instances(1000, BIG_W, BIG_H)
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps(line) + "\n")
    start = time.monotonic()
    done = run_cli(
        "eval", "--dataset", f"jsonl:{data}", "--predictions", str(preds),
        "--out", str(tmp_path / "run"), timeout=45,
    )  # fmt: skip
    assert done.one_line_error, done.stderr
    assert "1000 instances; at most 100 per sample" in done.stderr
    assert time.monotonic() - start < 30


def _run_folder(folder: Path, records: list[dict], dataset: str = "jsonl:/nowhere.jsonl") -> Path:
    folder.mkdir()
    identity = {"format": 1, "mode": "predictions", "dataset": dataset}
    (folder / "config.json").write_text(json.dumps({"identity": identity, "notes": {}}))
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _record(**fields) -> dict:
    base = {"id": "s0", "phrase": "the thing", "iou": 0.5, "biou": 0.25, "inter": 5,
            "union": 10, "failed": False, "gt_empty": False, "pred_empty": False,
            "n_gt": 1}  # fmt: skip
    return {**base, **fields}


def test_a_3_gib_sparse_records_file_is_one_line(tmp_path: Path) -> None:
    """Before: read whole (3.1 GB), then MemoryError with a traceback."""
    good = _run_folder(tmp_path / "good", [_record()])
    sparse = _run_folder(tmp_path / "sparse", [])
    with open(sparse / "records.jsonl", "wb") as handle:
        handle.truncate(3 << 30)  # holes: no disk, no newline
    done = run_cli("eval-compare", str(good), str(sparse), timeout=30)
    assert done.one_line_error, done.stderr
    assert "is longer than" in done.stderr and "not a record file" in done.stderr


def test_a_record_with_a_thousand_instances_is_drawn_one_at_a_time(tmp_path: Path) -> None:
    """A hand-edited record: 1,000 box instances on a 16-megapixel image. Before: every
    instance's (empty) mask was decoded and kept, 16 GB, past the child's 6 GiB limit."""
    image = _image(tmp_path / "big.jpg", BIG_W, BIG_H)
    prediction = masks.encode(np.pad(np.ones((30, 50), bool), ((10, BIG_H - 40), (10, BIG_W - 60))))
    wide = {"image": str(image), "width": BIG_W, "height": BIG_H}
    plain = _record(**wide, prediction=prediction, instances=[])
    many = _record(**wide, iou=0.1, prediction=prediction,
                   instances=[{k: v for k, v in i.items() if k != "mask"}
                              for i in _instances(1000, BIG_W, BIG_H)])  # fmt: skip
    first = _run_folder(tmp_path / "one", [plain])
    second = _run_folder(tmp_path / "two", [many])
    done = run_cli(
        "eval-compare", str(first), str(second), "--out", str(tmp_path / "cmp"), timeout=60
    )
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert page.count("data:image/jpeg") >= 2


def test_meta_values_reach_metrics_md_escaped(tmp_path: Path) -> None:
    """Before: a breakdown group named by meta was copied into metrics.md as raw HTML."""
    script, img = "<script>alert(1)</script>", "<img src=x onerror=alert(1)>"
    data = _dataset(tmp_path, 80, 60, meta={"kind": script, "difficulty": f"{img} | x"})
    preds = tmp_path / "preds.jsonl"
    line = {"id": "s0", "image": {"width": 80, "height": 60}, "instances": []}
    preds.write_text(json.dumps(line) + "\n")
    out = tmp_path / "run"
    done = run_cli(
        "eval", "--dataset", f"jsonl:{data}", "--predictions", str(preds), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    text = (out / "metrics.md").read_text()
    assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;" in text and "&lt;img src=x onerror=alert(1)&gt; \\| x" in text
    # the escaped "|" keeps the breakdown row at its number of cells
    row = next(line for line in text.splitlines() if "onerror" in line)
    assert row.replace("\\|", "").count("|") == len(METRIC_NAMES) + 3


def test_an_unknown_convention_is_one_line_before_anything_is_read(tmp_path: Path) -> None:
    done = run_cli(
        "eval", "--dataset", f"jsonl:{tmp_path / 'absent.jsonl'}", "--predictions",
        str(tmp_path / "absent.jsonl"), "--out", str(tmp_path / "run"), "--convention", "nope",
    )  # fmt: skip
    assert done.one_line_error, done.stderr
    assert "unknown convention 'nope'; choose one of refseg, lisa, rela" in done.stderr
    assert not (tmp_path / "run").exists()
