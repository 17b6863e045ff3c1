"""Hostile dataset and prediction files (issue 11, the data-file half): each used to hang,
crash the interpreter or eat memory; now each ends in one line (exit 2) or, for a bad
prediction, a scored failure, inside the harness's memory limit and timeout.

Files are generated here (pickles assembled from opcodes, see ``tests/data/hostile_files``).
Several readers' cases share one child process (``refseg.cli.main`` per case) to keep the
suite fast; the cases whose regression would hang or kill the process get a child each.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.data import hostile_files
from tests.data.helpers import refs, write_refer
from tests.hostile.harness import run_cli, run_limited, run_python

#: The probe's RLE: 10 pixels of counts for a 427x640 mask.
BAD_RLE = {"size": [8, 10], "counts": [0, 10]}
GOOD_RLE = {"size": [8, 10], "counts": [20, 10, 50]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 10x8 image, a good and a bad dataset line, a good and a bad prediction line."""
    root = tmp_path_factory.mktemp("tiny")
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(root / "a.png")
    record = {"id": "s0", "image": "a.png", "phrase": "thing", "width": 10, "height": 8}
    (root / "good.jsonl").write_text(json.dumps({**record, "masks": [GOOD_RLE]}) + "\n")
    (root / "bad.jsonl").write_text(json.dumps({**record, "masks": [BAD_RLE]}) + "\n")
    result = {"id": "s0", "image": {"width": 10, "height": 8}, "no_target": False}
    instance = {"box": [0, 0, 5, 5], "points": [], "score": 1.0}
    for name, mask in (("good_preds", GOOD_RLE), ("bad_preds", BAD_RLE)):
        line = {**result, "instances": [{**instance, "mask": mask}]}
        (root / f"{name}.jsonl").write_text(json.dumps(line) + "\n")
    return root


def test_eval_with_an_rle_that_does_not_add_up_in_the_dataset(tiny: Path, tmp_path: Path) -> None:
    """Item 1: pycocotools' merge never returned; the run hung for ever."""
    done = run_cli(
        "eval", "--dataset", f"jsonl:{tiny / 'bad.jsonl'}",
        "--predictions", str(tiny / "good_preds.jsonl"), "--out", str(tmp_path / "run"),
        "--no-report", timeout=30,
    )  # fmt: skip
    assert done.one_line_error, done.stderr
    assert "bad.jsonl:1: RLE counts add up to 10 pixels, but size 8x10 has 80" in done.stderr


def test_eval_with_an_rle_that_does_not_add_up_in_a_prediction(tiny: Path, tmp_path: Path) -> None:
    """Item 1 through --predictions: the sample scores as an invalid prediction, the run ends."""
    out = tmp_path / "run"
    done = run_cli(
        "eval", "--dataset", f"jsonl:{tiny / 'good.jsonl'}",
        "--predictions", str(tiny / "bad_preds.jsonl"), "--out", str(out), "--no-report",
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert record["error_kind"] == "invalid" and "add up to 10 pixels" in record["error"]


POLYGONS = """
import sys
from refseg import masks
from refseg.errors import InputError
for polygon in ([0, 0, 1e9, 0, 1e9, 1e9], [0, 0, float("nan"), 0, 5, 5], [0, 0, 1e308, 0, 5, 5]):
    try:
        rle = masks.from_polygons([polygon], 427, 640)
        print("area", int(masks.area([rle])[0]))
    except InputError as exc:
        print("refused", exc)
"""


def test_polygons_with_huge_or_nan_coordinates() -> None:
    """Item 2: segmentation fault (1e9) and a 24 GB allocation (NaN) in pycocotools."""
    done = run_python(POLYGONS, memory=3 * 1024**3, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("area ") and int(lines[0].split()[1]) > 100_000
    assert lines[1] == "refused polygon 0 has a coordinate that is not a finite number"
    assert lines[2].startswith("area ")


def _refer_with(root: Path, pickled: bytes) -> Path:
    write_refer(root, with_images=False)
    (root / "refs(umd).p").write_bytes(pickled)
    return root


def test_refer_pickle_of_shared_references(tmp_path: Path) -> None:
    """Item 3: a 1 KB pickle whose bytes->str walk visited 2**60 leaves (4.9 GB after 60 s)."""
    data = hostile_files.shared_dag_pickle(60)
    assert len(data) < 1024
    root = _refer_with(tmp_path / "refcocog", data)
    done = run_cli("data", "info", "--dataset", f"refcocog:{root}", timeout=30)
    assert done.one_line_error, done.stderr
    assert "expands to more than" in done.stderr


CASES = """
import contextlib, io, json, sys
from refseg.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_other_hostile_files_in_one_child(tmp_path: Path, tiny: Path) -> None:
    """Items 3 and 12 and the rest of the class: each case one line, exit 2.

    Deep pickles and deep JSON ended in RecursionError tracebacks, huge declared lengths and
    memo indices in MemoryError (or a multi-GB table cleared byte by byte), wrong field types
    in KeyError/TypeError tracebacks.
    """
    cases: list[tuple[list[str], str]] = []

    def refer_case(name: str, pickled: bytes, expect: str) -> None:
        root = _refer_with(tmp_path / name, pickled)
        cases.append((["data", "info", "--dataset", f"refcocog:{root}"], expect))

    refer_case("deep", hostile_files.nested_pickle(200_000), "nest more than 100 levels")
    refer_case("cycle", hostile_files.cyclic_pickle(), "nest more than 100 levels")
    refer_case("length", hostile_files.huge_length_pickle(), "declares 68719476736 bytes")
    refer_case("memo", hostile_files.huge_memo_pickle(), "memo index 4294967280")
    refer_case("textmemo", hostile_files.huge_text_memo_pickle(), "memo index")
    bad_refs = refs()
    bad_refs[1]["ref_id"] = "abc"
    refer_case("refid", pickle.dumps(bad_refs, protocol=2), "record 1: ref_id must be an")

    deep = tmp_path / "deep.jsonl"
    deep.write_text(hostile_files.deep_json(100_000) + "\n")
    cases.append((["data", "info", "--dataset", f"jsonl:{deep}"], "nested too deeply"))
    long_line = tmp_path / "long.jsonl"
    with open(long_line, "wb") as handle:  # sparse: 65 MB of nothing, no newline
        handle.truncate(65 << 20)
    cases.append((["data", "info", "--dataset", f"jsonl:{long_line}"], "line is longer than"))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"id": "\xe9"}\n')
    cases.append((["data", "info", "--dataset", f"jsonl:{latin}"], "latin.jsonl:1: not UTF-8"))
    nan_size = tmp_path / "nan.jsonl"
    nan_size.write_text(
        '{"id": "a", "image": "a.png", "phrase": "x", "width": 10, "height": 8, '
        '"masks": [{"size": [Infinity, 10], "counts": [80]}]}\n'
    )
    cases.append((["data", "info", "--dataset", f"jsonl:{nan_size}"], "nan.jsonl:1: mask size"))
    preds = tmp_path / "deep_preds.jsonl"
    preds.write_text(hostile_files.deep_json(100_000) + "\n")
    cases.append(
        (
            ["eval", "--dataset", f"jsonl:{tiny / 'good.jsonl'}", "--predictions", str(preds),
             "--out", str(tmp_path / "run"), "--no-report"],
            "deep_preds.jsonl: line 1: bad JSON (nested too deeply)",
        )
    )  # fmt: skip

    argv = [sys.executable, "-c", CASES, json.dumps([c[0] for c in cases])]
    done = run_limited(argv, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    for (args, expect), (code, stderr) in zip(cases, json.loads(done.stdout), strict=True):
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and "Traceback" not in stderr, (args, stderr)
        assert expect in stderr, (args, stderr)


def test_prediction_masks_of_another_size_score_as_invalid(tiny: Path, tmp_path: Path) -> None:
    """A mask sized for another image used to reach the union (pycocotools merged it into a
    0x0 "mask"; with sizes checked, an uncaught error); now that sample is an invalid prediction."""
    from refseg.data import open_dataset
    from refseg.eval import evaluate

    samples = open_dataset(f"jsonl:{tiny / 'good.jsonl'}")
    line = json.loads((tiny / "good_preds.jsonl").read_text())
    line["instances"][0]["mask"] = {"size": [10, 8], "counts": [80]}
    doc = evaluate(samples, predictions={"s0": line}, out_dir=tmp_path / "run", report=False)
    assert doc["failures"] == {"invalid": 1}
    record = json.loads((tmp_path / "run" / "records.jsonl").read_text())
    assert record["error"] == "prediction mask is 8x10, the image 10x8"
