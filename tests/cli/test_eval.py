"""`refseg eval` end to end in real subprocesses, on the real COCO sample with the real default
segmenter: oracle boxes, ``kill -9`` and resume, stored predictions, and a two-process run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from refseg import masks
from refseg.eval.runner import RECORDS_FILE, read_records

N_INSTANCES = 40  # non-crowd instances in data/coco-sample


def refseg_eval(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "refseg.cli", "eval", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("eval-cli")


@pytest.fixture(scope="module")
def coco_jsonl(coco_sample: Path, work: Path) -> Path:
    """The COCO sample as interchange JSONL: one sample per instance, phrased by category."""
    from refseg.data.coco import coco_instances_to_samples
    from refseg.data.jsonl import export_jsonl

    samples = coco_instances_to_samples(
        coco_sample / "instances.json", coco_sample / "images", per_instance=True
    )
    assert len(samples) == N_INSTANCES
    path = work / "coco.jsonl"
    export_jsonl(samples, path)
    return path


@pytest.fixture(scope="module")
def oracle_run(coco_jsonl: Path, work: Path) -> Path:
    """An uninterrupted ``--oracle-boxes`` run with the default segmenter (onnx-sam)."""
    out = work / "oracle"
    done = refseg_eval("--dataset", f"jsonl:{coco_jsonl}", "--oracle-boxes", "--out", str(out),
                       cwd=work)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_oracle_boxes_on_coco_sample(oracle_run: Path, coco_jsonl: Path) -> None:
    from refseg.data.jsonl import read_jsonl

    doc = json.loads((oracle_run / "metrics.json").read_text())
    metrics = doc["metrics"]
    assert doc["config"]["mode"] == "oracle-boxes" and doc["config"]["segmenter"]
    assert metrics["n"] == N_INSTANCES and metrics["n_failed"] == 0
    # SAM prompted with ground-truth boxes: most masks are good, T-acc is perfect
    assert 0.55 < metrics["gIoU"] < 0.95 and metrics["Pr@0.5"] > 0.7
    assert metrics["T-acc"] == 1.0 and metrics["N-acc"] is None
    # every stored IoU agrees with a direct computation from the stored prediction
    samples = {s.id: s for s in read_jsonl(coco_jsonl)}
    for record in read_records(oracle_run / RECORDS_FILE)[:10]:
        gt = samples[record["id"]].union_rle()
        assert record["iou"] == pytest.approx(masks.iou(gt, record["prediction"]), abs=1e-12)
        assert record["timings"]["predict_s"] > 0
    html = (oracle_run / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") == 16
    assert (oracle_run / "metrics.md").read_text().startswith("# Evaluation:")


def test_explicit_default_refine_resumes_the_same_run(oracle_run: Path, coco_jsonl: Path) -> None:
    """``--refine 1`` is the default: the run made without it is the same configuration (issue
    10: it was refused as "refine: None there, 1 now"); another value is refused with a way
    out."""
    config = json.loads((oracle_run / "config.json").read_text())
    assert config["identity"]["refine"] == 1  # the default, resolved before it was recorded
    args = ["--dataset", f"jsonl:{coco_jsonl}", "--oracle-boxes", "--out", str(oracle_run)]
    same = refseg_eval(*args, "--refine", "1", "--no-report", cwd=oracle_run.parent)
    assert same.returncode == 0, same.stderr
    other = refseg_eval(*args, "--refine", "2", cwd=oracle_run.parent)
    assert other.returncode == 2
    lines = other.stderr.strip().splitlines()
    assert len(lines) == 1 and "refine: 1 there, 2 now" in lines[0] and "--fresh" in lines[0]


def test_interrupt_kill_9_and_resume(oracle_run: Path, coco_jsonl: Path, work: Path) -> None:
    """Ctrl-C a run, resume it, kill -9 it, tear its last line, rerun: one record per sample and
    the same records and metrics as the uninterrupted oracle run (on the first 20 samples, to
    stay fast: records are per sample, so its first 20 records are an uninterrupted run)."""
    from refseg.eval.metrics import aggregate, breakdowns

    limit = 20
    out = work / "killed"
    args = ["--dataset", f"jsonl:{coco_jsonl}", "--oracle-boxes", "--out", str(out),
            "--limit", str(limit)]  # fmt: skip
    records = out / RECORDS_FILE

    def start_and_wait(at_least: int) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "refseg.cli", "eval", *args],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # A suite started in the background (`cmd &` without job control) runs with SIGINT
            # ignored, and the child would inherit that and never see the Ctrl-C.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if records.is_file() and records.read_text().count("\n") >= at_least:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be stopped"
        return process

    # Ctrl-C: the records so far are kept, exit status 130 with a hint to resume.
    process = start_and_wait(2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "rerun the same command to resume" in stderr
    after_ctrl_c = records.read_text().count("\n")
    assert after_ctrl_c >= 2
    # kill -9 of the resumed run
    process = start_and_wait(after_ctrl_c + 2)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    survived = records.read_text().count("\n")
    assert after_ctrl_c + 2 <= survived < limit
    assert not (out / "metrics.json").exists()
    with open(records, "a") as handle:  # a torn write, as if killed mid-line
        handle.write('{"id": "coco:142238:ann')
    resumed = refseg_eval(*args, cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    mine = read_records(records)
    assert len(mine) == len({r["id"] for r in mine}) == limit
    assert records.read_text().endswith("\n")

    reference = read_records(oracle_run / RECORDS_FILE)[:limit]
    assert {r["id"] for r in reference} == {r["id"] for r in mine}

    def without_timings(rs):
        return sorted(({**r, "timings": None} for r in rs), key=lambda r: r["id"])

    assert without_timings(mine) == without_timings(reference)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["metrics"] == aggregate(reference)
    assert doc["breakdowns"] == breakdowns(reference)


def test_resume_with_other_config_is_one_line_error(oracle_run: Path, coco_jsonl: Path) -> None:
    done = refseg_eval("--dataset", f"jsonl:{coco_jsonl}", "--oracle-boxes", "--out",
                       str(oracle_run), "--refine", "0", cwd=oracle_run)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "different configuration (refine" in done.stderr


def _write_predictions(records: list[dict], path: Path, skip: int = 0) -> None:
    """Stored predictions as ``refseg segment --json`` writes them, plus ``id``."""
    with open(path, "w") as handle:
        for record in records[skip:]:
            result = {
                "id": record["id"],
                "image": {"width": record["width"], "height": record["height"]},
                "no_target": False,
                "instances": [{"box": None, "points": [], "score": 1.0,
                               "mask": record["prediction"]}],
            }  # fmt: skip
            handle.write(json.dumps(result) + "\n")


@pytest.fixture(scope="module")
def predictions(oracle_run: Path, work: Path) -> Path:
    path = work / "preds.jsonl"
    _write_predictions(read_records(oracle_run / RECORDS_FILE), path)
    return path


def test_predictions_mode(oracle_run: Path, coco_jsonl: Path, predictions: Path, work: Path):
    out = work / "scored"
    done = refseg_eval("--dataset", f"jsonl:{coco_jsonl}", "--predictions", str(predictions),
                       "--out", str(out), "--no-report", cwd=work)  # fmt: skip
    assert done.returncode == 0, done.stderr
    scored = json.loads((out / "metrics.json").read_text())
    reference = json.loads((oracle_run / "metrics.json").read_text())
    # re-scoring the oracle's own predictions reproduces its numbers exactly
    assert scored["metrics"] == reference["metrics"]
    assert scored["breakdowns"] == reference["breakdowns"]

    partial = work / "partial.jsonl"
    _write_predictions(read_records(oracle_run / RECORDS_FILE), partial, skip=3)
    done = refseg_eval("--dataset", f"jsonl:{coco_jsonl}", "--predictions", str(partial),
                       "--out", str(work / "partial"), "--no-report", cwd=work)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 samples have no prediction" in done.stdout.replace("\n", " ")
    doc = json.loads((work / "partial" / "metrics.json").read_text())
    assert doc["failures"] == {"missing": 3} and doc["metrics"]["n_failed"] == 3
    assert doc["metrics"]["gIoU"] < reference["metrics"]["gIoU"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_run_equals_single_process(
    oracle_run: Path, coco_jsonl: Path, predictions: Path, work: Path
) -> None:
    single = work / "single"
    done = refseg_eval("--dataset", f"jsonl:{coco_jsonl}", "--predictions", str(predictions),
                       "--out", str(single), "--no-report", cwd=work)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sharded = work / "sharded"
    # --multi_gpu selects accelerate's torchrun launcher, which also runs CPU processes (gloo);
    # --cpu would pick the MPI launcher instead.
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "refseg.cli", "eval", "--dataset", f"jsonl:{coco_jsonl}",
        "--predictions", str(predictions), "--out", str(sharded), "--no-report",
    ]  # fmt: skip
    # torchelastic makes its scratch folders (torchelastic_*) with tempfile, under TMPDIR: keep
    # them in this test's folder instead of the machine's /tmp.
    scratch = work / "tmp"
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(scratch)}
    run = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=180, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(scratch.glob("torchelastic_*")), "the launcher's scratch folder is not in TMPDIR"
    assert (sharded / "metrics.json").read_bytes() == (single / "metrics.json").read_bytes()
    records = read_records(sharded / RECORDS_FILE)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in read_records(
        single / RECORDS_FILE))  # fmt: skip
    assert not list(sharded.glob("records.rank*.jsonl"))  # merged into records.jsonl


def test_images_option_finds_refer_images_elsewhere(tmp_path: Path, monkeypatch, capsys) -> None:
    """Issue 10: the README promised `--images` for REFER layouts, but `eval` had no such flag."""
    from refseg.cli import main
    from tests.data.helpers import write_refer

    monkeypatch.delenv("REFSEG_COCO_IMAGES", raising=False)
    root = write_refer(tmp_path / "refcoco", "unc")
    elsewhere = tmp_path / "photos"  # not a folder name the reader looks for by itself
    (root / "images").rename(elsewhere)
    predictions = tmp_path / "none.jsonl"
    predictions.write_text("")
    args = ["eval", "--dataset", f"refcoco:{root}:val", "--predictions", str(predictions),
            "--no-report"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "images are missing" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--images", str(elsewhere)]) == 0
    document = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert document["n_samples"] == 3 and document["failures"] == {"missing": 3}


def test_run_folder_files_cannot_be_the_inputs(coco_jsonl: Path, tmp_path: Path) -> None:
    """``--predictions run/records.jsonl --out run`` would append to its own input."""
    run = tmp_path / "run"
    run.mkdir()
    preds = run / "records.jsonl"
    preds.write_text("")
    done = refseg_eval("--dataset", f"jsonl:{coco_jsonl}", "--predictions", str(preds),
                       "--out", str(run), cwd=tmp_path, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "input file" in done.stderr
    assert done.stderr.count("\n") == 1 and preds.read_text() == ""


def test_the_summary_prints_paths_and_notes_as_text(capsys) -> None:
    """An --out like 'run[/]3' was read as rich markup after the run (MarkupError)."""
    from refseg.cli.eval import _print_summary
    from refseg.eval.metrics import aggregate

    document = {"metrics": aggregate([]), "failures": {"parse": 1}, "n_samples": 1}
    _print_summary(document, Path("run[/]3"), report=False)
    out = capsys.readouterr().out
    assert "run[/]3" in out
