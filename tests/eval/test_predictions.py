"""Stored predictions in the runner: contradictory answers, the dataset's no-target flag, the
per-sample instance bound and the scoring convention as part of a run's configuration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refseg import masks
from refseg.data.base import Sample
from refseg.errors import InputError
from refseg.eval.runner import RECORDS_FILE, evaluate, load_predictions, read_records
from refseg.types import Instance, Result

H, W = 20, 30


def rect(y0: int, y1: int, x0: int, x1: int) -> dict:
    dense = np.zeros((H, W), dtype=bool)
    dense[y0:y1, x0:x1] = True
    return masks.encode(dense)


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.zeros((H, W, 3), dtype=np.uint8)).save(path)
    return path


def _line(sample_id: str, **fields) -> str:
    return json.dumps({"id": sample_id, "image": {"width": W, "height": H}, **fields})


def test_no_target_with_masks_is_refused_in_one_line(tmp_path: Path) -> None:
    """Before: accepted silently, and scored by its masks (ReLA would read the flag)."""
    instance = Instance(rect(0, 5, 0, 5)).to_dict()
    path = tmp_path / "preds.jsonl"
    path.write_text(
        _line("a", instances=[], no_target=True) + "\n"
        + _line("b", instances=[instance], no_target=True) + "\n"
    )  # fmt: skip
    with pytest.raises(InputError) as caught:
        load_predictions(path)
    message = str(caught.value)
    assert "line 2" in message and '"no_target": true with 1 instance' in message
    assert "\n" not in message
    # the same from Python: a mapping of results
    both = Result(width=W, height=H, instances=[Instance(rect(0, 5, 0, 5))], no_target=True)
    with pytest.raises(InputError, match="no_target"):
        evaluate([], predictions={"b": both}, out_dir=tmp_path / "run", report=False)


def test_instances_per_sample_are_bounded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REFSEG_MAX_PROMPTS", "3")
    instance = Instance(rect(0, 5, 0, 5)).to_dict()
    path = tmp_path / "preds.jsonl"
    path.write_text(_line("a", instances=[instance] * 4) + "\n")
    with pytest.raises(InputError, match=r"line 1: 4 instances; at most 3 per sample"):
        load_predictions(path)
    monkeypatch.setenv("REFSEG_MAX_PROMPTS", "100")
    monkeypatch.setenv("REFSEG_MAX_PROMPT_PIXELS", str(3 * H * W))
    with pytest.raises(InputError, match=r"4 instances on a 30x20 image is over the limit"):
        load_predictions(path)
    path.write_text(_line("a", instances=[instance] * 3) + "\n")
    assert len(load_predictions(path)["a"]["instances"]) == 3


def test_the_dataset_flag_decides_target_samples(tmp_path: Path, image: Path) -> None:
    """A listed target whose mask has no pixel is a target sample (IoU 0, T-acc, Pr@X), and the
    breakdown by number of targets counts it where scoring does."""
    samples = [
        Sample("hit", image, "a", [rect(0, 5, 0, 5)], W, H),
        Sample("blank", image, "b", [masks.empty(H, W)], W, H),  # listed, no pixel
        Sample("none", image, "c", [], W, H, meta={"no_target": True}),
    ]
    predictions = {
        "hit": Result(width=W, height=H, instances=[Instance(rect(0, 5, 0, 5))]),
        "blank": Result(width=W, height=H, no_target=True),
        "none": Result(width=W, height=H, no_target=True),
    }
    doc = evaluate(samples, predictions=predictions, out_dir=tmp_path / "run", report=False)
    records = {r["id"]: r for r in read_records(tmp_path / "run" / RECORDS_FILE)}
    assert records["blank"]["iou"] == 0.0 and not records["blank"]["gt_empty"]
    metrics = doc["metrics"]
    assert (metrics["n_target"], metrics["n_no_target"]) == (2, 1)
    assert metrics["Pr@0.5"] == 0.5 and metrics["T-acc"] == 0.5 and metrics["N-acc"] == 1.0
    targets = doc["breakdowns"]["targets"]
    assert {k: v["n"] for k, v in targets.items()} == {"none": 1, "one": 2}


def test_convention_is_part_of_the_configuration(tmp_path: Path, image: Path) -> None:
    samples = [Sample("blank", image, "b", [masks.empty(H, W)], W, H)]
    predictions = {"blank": Result(width=W, height=H, no_target=True)}
    out = tmp_path / "run"
    lisa = evaluate(samples, predictions=predictions, out_dir=out, convention="lisa")
    assert lisa["config"]["convention"] == "lisa"
    assert lisa["metrics"]["gIoU"] == 1.0 and lisa["metrics"]["n_no_target"] == 1
    with pytest.raises(InputError, match="convention: 'lisa' there, 'refseg' now"):
        evaluate(samples, predictions=predictions, out_dir=out)
    rela = evaluate(samples, predictions=predictions, out_dir=tmp_path / "r", convention="rela")
    assert rela["metrics"]["gIoU"] == 0.0 and rela["metrics"]["T-acc"] == 0.0


def test_a_folder_from_before_conventions_resumes(tmp_path: Path, image: Path) -> None:
    samples = [Sample("hit", image, "a", [rect(0, 5, 0, 5)], W, H)]
    predictions = {"hit": Result(width=W, height=H, instances=[Instance(rect(0, 5, 0, 5))])}
    out = tmp_path / "run"
    evaluate(samples, predictions=predictions, out_dir=out, report=False)
    config = json.loads((out / "config.json").read_text())
    del config["identity"]["convention"]
    (out / "config.json").write_text(json.dumps(config))
    evaluate(samples, predictions=predictions, out_dir=out, report=False)


def test_deeply_nested_config_is_one_line(tmp_path: Path, image: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"identity": ' + "[" * 100_000 + "]" * 100_000 + "}")
    samples = [Sample("hit", image, "a", [rect(0, 5, 0, 5)], W, H)]
    with pytest.raises(InputError, match="is not a refseg eval config"):
        evaluate(samples, predictions={}, out_dir=out, report=False)


def test_compare_notes_runs_scored_under_different_conventions(tmp_path: Path, image: Path) -> None:
    from refseg.eval.compare import compare_runs

    samples = [Sample("blank", image, "b", [masks.empty(H, W)], W, H)]
    predictions = {"blank": Result(width=W, height=H, no_target=True)}
    for name in ("refseg", "lisa"):
        evaluate(
            samples, predictions=predictions, out_dir=tmp_path / name, convention=name,
            report=False,
        )  # fmt: skip
    notes = compare_runs([tmp_path / "refseg", tmp_path / "lisa"]).document["notes"]
    assert any("different conventions (lisa, refseg)" in note for note in notes)
