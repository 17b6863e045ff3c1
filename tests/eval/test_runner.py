"""The runner in-process: modes, grouping by image, failures, resuming, config checks, reports.

The grounder and segmenter here are small deterministic stand-ins for the *models* (the runner is
what is under test): the segmenter fills the prompted box, the grounder answers from a table.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refseg import masks
from refseg.data.base import Sample
from refseg.errors import InputError
from refseg.eval.metrics import aggregate, score_sample
from refseg.eval.runner import RECORDS_FILE, evaluate, read_records
from refseg.grounding.base import GroundedInstance, Grounding
from refseg.image import image_digest
from refseg.pipeline import Pipeline
from refseg.segmentation.base import Embedding, MaskPrediction
from refseg.types import Instance, Result

H, W = 30, 40


class BoxFiller:
    """A segmenter whose mask is exactly the prompted box (integer-rounded)."""

    name = "box-filler"

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed(self, image: np.ndarray) -> Embedding:
        self.embedded.append(image_digest(image))
        return Embedding(image.shape[0], image.shape[1], None, self.name)

    def predict(self, embedding, prompts, *, refine=None):
        out = []
        for prompt in prompts:
            mask = np.zeros((embedding.height, embedding.width), dtype=bool)
            x1, y1, x2, y2 = (round(v) for v in prompt.box)
            mask[y1:y2, x1:x2] = True
            out.append(MaskPrediction(mask, 1.0))
        return out


class TableGrounder:
    """Answers from a phrase table; ``"boom"`` raises, ``"garbled"`` is unreadable."""

    name = "table"

    def __init__(self, table: dict[str, list]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    def ground(self, images, phrases, *, think=False):
        self.calls.append(list(phrases))
        if "boom" in phrases:
            raise RuntimeError("grounder exploded")
        out = []
        for phrase in phrases:
            if phrase == "garbled":
                out.append(Grounding(raw_answer="<<", parse_error="no JSON found"))
            elif not self.table.get(phrase):
                out.append(Grounding(no_target=True, raw_answer="[]"))
            else:
                boxes = self.table[phrase]
                out.append(Grounding([GroundedInstance(tuple(b)) for b in boxes], raw_answer="ok"))
        return out


def rect(y0: int, y1: int, x0: int, x1: int) -> dict:
    dense = np.zeros((H, W), dtype=bool)
    dense[y0:y1, x0:x1] = True
    return masks.encode(dense)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for index in range(3):
        path = tmp_path / f"img{index}.png"
        Image.fromarray(np.full((H, W, 3), 40 * index, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def make_samples(images: list[Path]) -> list[Sample]:
    """Interleaved images, one- and multi-target and no-target samples."""
    a, b, c = images
    return [
        Sample("s0", a, "left", [rect(0, 10, 0, 10)], W, H, meta={"difficulty": "easy"}),
        Sample("s1", b, "right", [rect(5, 25, 20, 40)], W, H, meta={"difficulty": "hard"}),
        Sample("s2", a, "nothing", [], W, H, meta={"difficulty": "hard"}),
        Sample("s3", b, "two", [rect(0, 5, 0, 5), rect(20, 30, 30, 40)], W, H),
        Sample("s4", a, "garbled", [rect(0, 10, 0, 10)], W, H),
        Sample("s5", c, "left", [rect(0, 12, 0, 10)], W, H),
        Sample("s6", a, "boom", [rect(0, 10, 0, 10)], W, H),
    ]


TABLE = {
    "left": [(0, 0, 10, 10)],
    "right": [(20, 5, 40, 20)],
    "two": [(0, 0, 5, 5), (30, 20, 40, 30)],
}


def test_pipeline_mode(tmp_path: Path, images: list[Path]) -> None:
    samples = make_samples(images)
    segmenter, grounder = BoxFiller(), TableGrounder(TABLE)
    doc = evaluate(
        samples, pipeline=Pipeline(grounder, segmenter), out_dir=tmp_path / "run", batch_size=3
    )
    records = {r["id"]: r for r in read_records(tmp_path / "run" / RECORDS_FILE)}
    assert sorted(records) == [s.id for s in samples]
    # each image with a prompt is embedded exactly once although its samples are interleaved
    assert len(segmenter.embedded) == len(set(segmenter.embedded)) == 3
    assert records["s0"]["iou"] == 1.0 and records["s3"]["iou"] == 1.0
    assert records["s1"]["inter"] == 15 * 20 and records["s1"]["union"] == 20 * 20
    assert records["s2"]["gt_empty"] and records["s2"]["pred_empty"] and records["s2"]["iou"] == 1
    assert records["s2"]["no_target_answer"] is True
    assert records["s4"]["error_kind"] == "parse" and records["s4"]["iou"] == 0.0
    assert records["s4"]["raw_answer"] == "<<"
    # the exploding phrase fails alone; its batch-mates were retried one by one
    assert records["s6"]["error_kind"] == "grounder" and "exploded" in records["s6"]["error"]
    assert records["s5"]["error_kind"] is None and records["s5"]["iou"] == pytest.approx(100 / 120)
    assert doc["failures"] == {"grounder": 1, "parse": 1}
    assert doc["metrics"] == aggregate(records[s.id] for s in samples)
    assert doc["metrics"]["gIoU"] == pytest.approx((3 + 300 / 400 + 100 / 120) / 7)
    assert set(doc["breakdowns"]) == {"difficulty", "targets"}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == doc
    html = (tmp_path / "run" / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 8 and "By difficulty" in html
    assert "| all |" in (tmp_path / "run" / "metrics.md").read_text()


def test_oracle_boxes_mode(tmp_path: Path, images: list[Path]) -> None:
    samples = make_samples(images)
    segmenter = BoxFiller()
    doc = evaluate(samples, segmenter=segmenter, out_dir=tmp_path / "run", report=False)
    # rectangles prompted with their own boxes come back exactly; no-target needs no prompt
    assert doc["metrics"]["gIoU"] == 1.0 and doc["metrics"]["N-acc"] == 1.0
    assert doc["failures"] == {}
    assert len(segmenter.embedded) == 3
    assert not (tmp_path / "run" / "report.html").exists()


def test_predictions_mode_counts_missing_and_invalid(tmp_path: Path, images: list[Path]) -> None:
    samples = make_samples(images)[:4]
    predictions = {
        "s0": Result(W, H, [Instance(rect(0, 10, 0, 5))]).to_dict(),
        "s1": Result(W + 1, H).to_dict(),  # wrong size
        "s2": Result(W, H, no_target=True),
        "unrelated": Result(W, H).to_dict(),
    }
    doc = evaluate(samples, predictions=predictions, out_dir=tmp_path / "run", report=False)
    records = {r["id"]: r for r in read_records(tmp_path / "run" / RECORDS_FILE)}
    assert records["s0"]["iou"] == 0.5
    assert records["s1"]["error_kind"] == "invalid"
    assert records["s3"]["error_kind"] == "missing" and records["s3"]["union"] == 25 + 100
    assert doc["failures"] == {"invalid": 1, "missing": 1}
    assert doc["metrics"]["gIoU"] == pytest.approx(1.5 / 4)


def test_predictions_file(tmp_path: Path, images: list[Path]) -> None:
    samples = make_samples(images)[:2]
    path = tmp_path / "preds.jsonl"
    line = {"id": "s0", **Result(W, H, [Instance(rect(0, 10, 0, 10))]).to_dict()}
    path.write_text(json.dumps(line) + "\n")
    doc = evaluate(samples, predictions=path, out_dir=tmp_path / "run", report=False)
    assert doc["failures"] == {"missing": 1}
    assert len(doc["config"]["predictions_sha256"]) == 64
    path.write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(InputError, match="repeats id"):
        evaluate(samples, predictions=path, out_dir=tmp_path / "run2")
    path.write_text("{nope\n")
    with pytest.raises(InputError, match="line 1"):
        evaluate(samples, predictions=path, out_dir=tmp_path / "run3")


def test_resume_after_torn_write_gives_identical_metrics(
    tmp_path: Path, images: list[Path]
) -> None:
    samples = make_samples(images)
    full = evaluate(samples, pipeline=Pipeline(TableGrounder(TABLE), BoxFiller()),
                    out_dir=tmp_path / "full", report=False)  # fmt: skip
    # Simulate a crash: three records survived, the fourth was torn mid-line.
    lines = (tmp_path / "full" / RECORDS_FILE).read_text().splitlines(keepends=True)
    run = tmp_path / "resumed"
    run.mkdir()
    (run / "config.json").write_text((tmp_path / "full" / "config.json").read_text())
    (run / RECORDS_FILE).write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    grounder = TableGrounder(TABLE)
    resumed = evaluate(samples, pipeline=Pipeline(grounder, BoxFiller()), out_dir=run, report=False)
    records = read_records(run / RECORDS_FILE)
    assert sorted(r["id"] for r in records) == sorted(s.id for s in samples)
    # records come image by image: s0, s2 and s4 share the first image
    assert [json.loads(x)["id"] for x in lines[:3]] == ["s0", "s2", "s4"]
    assert run.joinpath(RECORDS_FILE).read_text().startswith("".join(lines[:3]))
    asked = {p for batch in grounder.calls for p in batch}
    assert "garbled" not in asked and "nothing" not in asked  # only s2 and s4 use these phrases
    assert "right" in asked
    assert resumed == full
    assert (run / "metrics.json").read_bytes() == (tmp_path / "full" / "metrics.json").read_bytes()


def test_resume_skips_finished_samples(tmp_path: Path, images: list[Path]) -> None:
    samples = make_samples(images)
    evaluate(samples[:3], segmenter=BoxFiller(), out_dir=tmp_path / "run", report=False)
    segmenter = BoxFiller()
    doc = evaluate(samples, segmenter=segmenter, out_dir=tmp_path / "run", report=False)
    assert doc["n_samples"] == len(samples)
    assert len(read_records(tmp_path / "run" / RECORDS_FILE)) == len(samples)
    assert len(segmenter.embedded) == 3  # image a again (s3/s4/s6), b (s3), c (s5)


def test_different_config_is_refused(tmp_path: Path, images: list[Path]) -> None:
    samples = make_samples(images)[:2]
    evaluate(samples, segmenter=BoxFiller(), out_dir=tmp_path / "run", report=False)
    with pytest.raises(InputError, match=r"different configuration \(boundary_ratio"):
        evaluate(samples, segmenter=BoxFiller(), out_dir=tmp_path / "run", boundary_ratio=0.05)
    with pytest.raises(InputError, match=r"different configuration \(mode"):
        evaluate(samples, predictions={}, out_dir=tmp_path / "run")
    # resume=False starts over instead
    doc = evaluate(samples, predictions={}, out_dir=tmp_path / "run", resume=False, report=False)
    assert doc["failures"] == {"missing": 2}


def test_corrupt_records_and_bad_input(tmp_path: Path, images: list[Path]) -> None:
    samples = make_samples(images)[:2]
    evaluate(samples, segmenter=BoxFiller(), out_dir=tmp_path / "run", report=False)
    path = tmp_path / "run" / RECORDS_FILE
    path.write_text("garbage\n" + path.read_text())
    with pytest.raises(InputError, match="line 1 is not a JSON record"):
        evaluate(samples, segmenter=BoxFiller(), out_dir=tmp_path / "run")
    with pytest.raises(InputError, match="more than once"):
        evaluate([samples[0], samples[0]], segmenter=BoxFiller(), out_dir=tmp_path / "dup")
    with pytest.raises(InputError, match="exactly one"):
        evaluate(samples, segmenter=BoxFiller(), predictions={}, out_dir=tmp_path / "x")


def test_image_problems_are_failures(tmp_path: Path, images: list[Path]) -> None:
    wrong_size = Sample("w", images[0], "left", [masks.empty(H + 1, W)], W, H + 1)
    missing = Sample("m", tmp_path / "nope.png", "left", [rect(0, 1, 0, 1)], W, H)
    doc = evaluate([wrong_size, missing], segmenter=BoxFiller(), out_dir=tmp_path / "r")
    assert doc["failures"] == {"image": 2}
    html = (tmp_path / "r" / "report.html").read_text()
    assert "image unavailable" in html or "data:image/jpeg" in html


def test_scores_match_metrics_module(tmp_path: Path, images: list[Path]) -> None:
    """Records carry exactly what score_sample computes for the union of predicted masks."""
    samples = make_samples(images)[:4]
    preds = {s.id: Result(W, H, [Instance(rect(2, 12, 3, 30)), Instance(rect(20, 30, 0, 8))])
             for s in samples}  # fmt: skip
    evaluate(samples, predictions=preds, out_dir=tmp_path / "run", report=False)
    for record, sample in zip(read_records(tmp_path / "run" / RECORDS_FILE), samples):
        expected = score_sample(sample.masks, [i.rle for i in preds[sample.id].instances], H, W)
        assert {k: record[k] for k in expected.to_record()} == expected.to_record()
        assert masks.iou(record["prediction"], preds[sample.id].union_rle()) == 1.0


def test_second_writer_on_a_run_is_refused(tmp_path: Path) -> None:
    from refseg.eval.runner import RecordWriter

    with RecordWriter(tmp_path / RECORDS_FILE) as writer:
        writer.write({"id": "a"})
        with pytest.raises(InputError, match="another refseg eval"):
            RecordWriter(tmp_path / RECORDS_FILE)
    with RecordWriter(tmp_path / RECORDS_FILE) as writer:  # free again once closed
        writer.write({"id": "b"})
    assert [r["id"] for r in read_records(tmp_path / RECORDS_FILE)] == ["a", "b"]


def test_pipeline_mode_with_a_real_tiny_vlm(tmp_path: Path, sam) -> None:
    """The real QwenGrounder (a tiny random checkpoint built offline) through ``evaluate``: its
    unreadable answers become parse failures with the raw answer kept, nothing crashes."""
    torch = pytest.importorskip("torch")
    from refseg.grounding import load_grounder
    from refseg.testing.tiny_vlm import build_tiny_vlm

    from ..conftest import ASSETS

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = build_tiny_vlm(tmp_path / "vlm", layers=1, vision_depth=1)
        grounder = load_grounder(f"qwen3-vl:{folder}", max_new_tokens=16)
        image = ASSETS / "astronaut.jpg"
        face = masks.encode(np.pad(np.ones((100, 80), bool), ((50, 362), (200, 232))))
        samples = [
            Sample("face", image, "the face", [face], 512, 512),
            Sample("flag", image, "the flag", [face], 512, 512),
            Sample("cat", image, "the cat", [], 512, 512),
        ]
        doc = evaluate(samples, pipeline=Pipeline(grounder, sam), out_dir=tmp_path / "run",
                       report=False)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    records = read_records(tmp_path / "run" / RECORDS_FILE)
    assert [r["id"] for r in records] == ["face", "flag", "cat"]
    assert doc["config"]["mode"] == "pipeline" and doc["config"]["grounder"]
    for record in records:
        if record["error_kind"] is not None:
            assert record["error_kind"] == "parse" and record["iou"] == 0.0
            assert record["error"] and record["raw_answer"] is not None
        assert record["timings"]["ground_s"] > 0
    assert doc["metrics"]["n"] == 3


def test_default_refine_is_resolved_before_it_is_recorded(tmp_path: Path, images) -> None:
    """Issue 10: `--refine 1` (the default) on a run made without it was refused as "refine:
    None there, 1 now". The configuration records the rounds really used; a real difference
    is refused with a pointer to --fresh."""
    samples = make_samples(images)[:2]
    segmenter = BoxFiller()
    segmenter.refine = 1  # the segmenter's own default, as onnx-sam and the SAMs carry it
    evaluate(samples, segmenter=segmenter, out_dir=tmp_path / "run", report=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["identity"]["refine"] == 1
    evaluate(samples, segmenter=segmenter, refine=1, out_dir=tmp_path / "run", report=False)
    with pytest.raises(InputError, match=r"refine: 1 there, 2 now.*--fresh"):
        evaluate(samples, segmenter=segmenter, refine=2, out_dir=tmp_path / "run")
    # A folder written before the default was resolved (refine: null) still resumes.
    config["identity"]["refine"] = None
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    evaluate(samples, segmenter=segmenter, refine=1, out_dir=tmp_path / "run", report=False)
    pipe = Pipeline(TableGrounder(TABLE), segmenter)
    evaluate(samples, pipeline=pipe, out_dir=tmp_path / "pipe", report=False)
    again = Pipeline(TableGrounder(TABLE), segmenter, refine=1)
    evaluate(samples, pipeline=again, out_dir=tmp_path / "pipe", report=False)


class OutageGrounder(TableGrounder):
    """The table grounder behind an endpoint that is down until ``down`` is cleared."""

    def __init__(self, table: dict[str, list]) -> None:
        super().__init__(table)
        self.down = True

    def ground(self, images, phrases, *, think=False):
        if self.down:
            from refseg.errors import ModelError

            raise ModelError("endpoint http://gpu-box:8000 unreachable after 3 tries")
        return super().ground(images, phrases, think=think)


def test_failed_samples_are_tried_again_on_rerun(tmp_path: Path, images: list[Path]) -> None:
    """Issue 11: after a grounder outage every sample stayed failed until --fresh."""
    samples = make_samples(images)[:5]  # s4 is "garbled": the model's own parse failure
    grounder = OutageGrounder(TABLE)
    pipe = Pipeline(grounder, BoxFiller())
    doc = evaluate(samples, pipeline=pipe, out_dir=tmp_path / "run", report=False)
    assert doc["failures"] == {"grounder": 5}
    grounder.down = False
    doc = evaluate(samples, pipeline=pipe, out_dir=tmp_path / "run", report=False)
    assert doc["failures"] == {"parse": 1}
    records = read_records(tmp_path / "run" / RECORDS_FILE)
    assert sorted(r["id"] for r in records) == [s.id for s in samples]  # one record each
    reference = evaluate(
        samples, pipeline=Pipeline(TableGrounder(TABLE), BoxFiller()), out_dir=tmp_path / "ref"
    )
    assert doc["metrics"] == reference["metrics"]
    # the model's unreadable answer is a result, not an outage: it is not asked again
    grounder.calls.clear()
    evaluate(samples, pipeline=pipe, out_dir=tmp_path / "run", report=False)
    assert grounder.calls == []


def test_fresh_waits_for_the_run_in_progress(tmp_path: Path, images: list[Path]) -> None:
    """Issue 11: a second run with resume=False (--fresh) deleted the records of the first."""
    import threading

    started, release = threading.Event(), threading.Event()

    class SlowGrounder(TableGrounder):
        def ground(self, images, phrases, *, think=False):
            started.set()
            release.wait(30)
            return super().ground(images, phrases, think=think)

    samples = make_samples(images)[:4]
    first_pipe = Pipeline(SlowGrounder(TABLE), BoxFiller())
    result: dict = {}

    def first() -> None:
        result["doc"] = evaluate(
            samples, pipeline=first_pipe, out_dir=tmp_path / "run", batch_size=1, report=False
        )

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(30)
        second = Pipeline(TableGrounder(TABLE), BoxFiller())
        with pytest.raises(InputError, match="another refseg eval"):
            evaluate(samples, pipeline=second, out_dir=tmp_path / "run", resume=False)
    finally:
        release.set()
        thread.join(30)
    assert result["doc"]["n_samples"] == 4
    assert len(read_records(tmp_path / "run" / RECORDS_FILE)) == 4


def test_reasonseg_ignore_shapes_are_excluded_as_lisa_does(tmp_path) -> None:
    """A ReasonSeg sample with ignore shapes: a prediction covering target and ignore regions
    scores 1 (LISA removes ignore pixels from I and U); before, the ignore pixels counted as
    false positives."""
    from refseg.data.base import open_dataset
    from tests.data.test_other_readers import _reasonseg

    (sample,) = open_dataset(f"reasonseg:{_reasonseg(tmp_path / 'ReasonSeg')}:val")
    target = masks.decode(sample.masks[0]).astype(bool)
    ignore = masks.decode(sample.meta["ignore"]).astype(bool)
    both = Instance(masks.encode(target | ignore))
    predictions = {sample.id: Result(sample.width, sample.height, [both]).to_dict()}
    doc = evaluate([sample], predictions=predictions, out_dir=tmp_path / "run", report=False)
    assert doc["metrics"]["gIoU"] == pytest.approx(1.0)
    only_target = Result(sample.width, sample.height, [Instance(sample.masks[0])]).to_dict()
    doc = evaluate(
        [sample], predictions={sample.id: only_target}, out_dir=tmp_path / "run2", report=False
    )
    assert doc["metrics"]["gIoU"] == pytest.approx(1.0)


def test_records_keep_what_a_score_threshold_changes(tmp_path: Path, images: list[Path]) -> None:
    """Scored predictions: each record ranks its instances, matches them one to one, and the
    run's metrics and report carry the threshold curve, AP and calibration."""
    samples = make_samples(images)[:4]
    right, wrong = Instance(rect(0, 10, 0, 10), score=0.9), Instance(rect(20, 30, 0, 10), score=0.2)
    predictions = {
        "s0": Result(W, H, [right, wrong]).to_dict(),
        "s1": Result(W, H, [Instance(rect(5, 25, 20, 40), score=0.6)]).to_dict(),
        "s2": Result(W, H, [Instance(rect(0, 5, 0, 5), score=0.3)]).to_dict(),  # no target
        "s3": Result(W, H, no_target=True).to_dict(),
    }
    doc = evaluate(samples, predictions=predictions, out_dir=tmp_path / "run")
    records = {r["id"]: r for r in read_records(tmp_path / "run" / RECORDS_FILE)}
    s0 = records["s0"]
    assert [i["match_iou"] for i in s0["instances"]] == [1.0, 0.0]
    # keeping none, the better one, both: IoU 0, 1, then 100 / 200
    assert s0["ranked"] == [[None, 0.0], [0.9, 1.0], [0.2, 0.5]]
    assert records["s3"]["ranked"] is None  # nothing to rank
    curve = {row["threshold"]: row for row in doc["thresholds"]["curve"]}
    assert curve[0.0]["gIoU"] == pytest.approx(doc["metrics"]["gIoU"])
    # at 0.5: s0 keeps its right instance (1.0), s1 its own (1.0), s2 drops its false one
    assert curve[0.5]["gIoU"] == pytest.approx(3 / 4) and curve[0.5]["N-acc"] == 1.0
    # 2 right of 4 instances over 4 ground-truth instances, the right ones ranked first
    assert doc["thresholds"]["AP"] == pytest.approx(0.5)
    text = (tmp_path / "run" / "metrics.md").read_text()
    assert "## Score thresholds" in text and "Expected calibration error" in text
