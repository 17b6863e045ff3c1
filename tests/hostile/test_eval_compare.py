"""Hostile run folders for ``refseg eval-compare``: hand-edited or corrupted records must end in
one line and exit 2 (or, for a record whose mask cannot be drawn, in a page without that
overlay), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ASSETS
from tests.hostile.harness import run_cli

RECORD = {"iou": 0.5, "biou": 0.25, "inter": 5, "union": 10, "failed": False,
          "gt_empty": False, "pred_empty": False, "n_gt": 1, "phrase": "a thing"}  # fmt: skip


def make_run(folder: Path, lines: list[str]) -> Path:
    folder.mkdir()
    identity = {"format": 1, "mode": "predictions", "dataset": "jsonl:/nowhere.jsonl"}
    (folder / "config.json").write_text(json.dumps({"identity": identity, "notes": {}}))
    (folder / "records.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


def test_deeply_nested_record_line(tmp_path: Path) -> None:
    """json.loads raises RecursionError (not ValueError) on it: a traceback before."""
    good = make_run(tmp_path / "good", [json.dumps({"id": "a", **RECORD})])
    deep = make_run(
        tmp_path / "deep", ['{"id": "a", "meta": ' + "[" * 200_000 + "]" * 200_000 + "}"]
    )
    done = run_cli("eval-compare", str(good), str(deep))
    assert done.one_line_error, done.stderr
    assert "nested too deeply" in done.stderr


def test_odd_meta_and_prediction_in_records(tmp_path: Path) -> None:
    """A list as meta and a string as prediction: compared, and the page drawn without it."""
    odd = {
        "id": "a",
        **RECORD,
        "meta": [1],
        "prediction": "garbage",
        "image": str(ASSETS / "astronaut.jpg"),
    }
    first = make_run(tmp_path / "one", [json.dumps({**odd, "meta": {}, "prediction": None})])
    second = make_run(tmp_path / "two", [json.dumps(odd)])
    done = run_cli("eval-compare", str(first), str(second), "--out", str(tmp_path / "cmp"))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "#2: IoU 50.00" in page and page.count("data:image/jpeg") == 2  # truth, run #1


def test_deeply_nested_config(tmp_path: Path) -> None:
    """json.loads raises RecursionError on a config.json nested 200,000 deep: a traceback
    before."""
    good = make_run(tmp_path / "good", [json.dumps({"id": "a", **RECORD})])
    deep = make_run(tmp_path / "deep", [json.dumps({"id": "a", **RECORD})])
    (deep / "config.json").write_text('{"identity": ' + "[" * 200_000 + "]" * 200_000 + "}")
    done = run_cli("eval-compare", str(good), str(deep))
    assert done.one_line_error, done.stderr
    assert "config.json: nested too deeply" in done.stderr
