"""`refseg eval` scoring path answers end to end: a JSONL dataset of real COCO instances, a
loopback OpenAI-compatible server answering each phrase with an outline, and the scores checked
against masks computed independently (pycocotools' polygon rasterizer + the dense reference
metrics), at RefCOCO-M's boundary ratio 0.05."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from refseg import masks
from refseg.cli import main
from refseg.cli.eval import default_boundary_ratio
from refseg.data.base import Sample
from refseg.data.jsonl import export_jsonl
from refseg.eval.runner import RECORDS_FILE, read_records
from refseg.paths import trace
from refseg.testing.coco_sample import load_objects
from tests.eval.dense_reference import dense_score
from tests.grounding.chat_server import ChatServer

N = 3  # samples: the largest objects of the sample (seconds, not minutes)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The dataset file and, per phrase, the outline the fake model answers (0-1000 ints)."""
    work = tmp_path_factory.mktemp("eval-paths")
    objects = sorted(load_objects(), key=lambda o: -int(o.mask.sum()))[:N]
    samples, outlines = [], {}
    for i, obj in enumerate(objects):
        height, width = obj.mask.shape
        phrase = f"object number {i}"
        samples.append(
            Sample(
                id=f"s{i}",
                image=obj.image_path,
                phrase=phrase,
                masks=[masks.encode(obj.mask)],
                width=width,
                height=height,
            )
        )
        rings = [
            np.rint(ring * [1000 / width, 1000 / height]).astype(int)
            for ring in trace(obj.mask, 24)
        ]
        outlines[phrase] = (rings, width, height)
    path = work / "objects.jsonl"
    export_jsonl(samples, path)
    return work, path, samples, outlines


def _answer(outlines):
    def answer(request) -> str:
        phrase = re.search(r"object number \d+", request.prompt).group(0)
        rings, _, _ = outlines[phrase]
        data = " ".join(
            "M " + " L ".join(f"{x} {y}" for x, y in ring.tolist()) + " Z" for ring in rings
        )
        return f'<answer>[{{"path": "{data}"}}]</answer>'

    return answer


def _independent_mask(rings, width: int, height: int) -> np.ndarray:
    """The answer's outline drawn by pycocotools (COCO's own polygon rasterizer), union of rings
    (the traced outlines of these objects have no holes at 24 vertices)."""
    polygons = [(ring * [width / 1000, height / 1000]).ravel().tolist() for ring in rings]
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def test_eval_scores_path_answers_against_independent_masks(setup, capsys) -> None:
    work, path, samples, outlines = setup
    out = work / "run"
    with ChatServer(_answer(outlines)) as server:
        code = main(
            ["eval", "--dataset", f"jsonl:{path}", "--grounder", f"openai:{server.url}#m",
             "--answer", "path", "--refiner", "none", "--boundary-ratio", "0.05",
             "--out", str(out), "--no-report"]
        )  # fmt: skip
        prompts = [r.prompt for r in server.requests]
    err = capsys.readouterr().err
    assert code == 0, err
    assert all('"path"' in p for p in prompts)  # --answer path reached the prompt
    records = {r["id"]: r for r in read_records(out / RECORDS_FILE)}
    assert len(records) == N
    for sample in samples:
        record = records[sample.id]
        assert record["error_kind"] is None, record["error"]
        rings, width, height = outlines[sample.phrase]
        expected = _independent_mask(rings, width, height)
        predicted = masks.decode(record["prediction"])
        # two rasterizers of one outline differ only on edge pixels (these objects are small:
        # 4,500-6,000 px, so an edge-pixel convention moves IoU by ~0.01)
        assert (predicted & expected).sum() / (predicted | expected).sum() > 0.97
        ref = dense_score(sample.masks, [masks.encode(expected)], height, width, ratio=0.05)
        assert record["iou"] == pytest.approx(ref["iou"], abs=0.025)
        assert record["biou"] == pytest.approx(ref["biou"], abs=0.04)
        # exactly the 5% band was scored (dense reference on the stored prediction)
        wide = dense_score(sample.masks, [record["prediction"]], height, width, ratio=0.05)
        narrow = dense_score(sample.masks, [record["prediction"]], height, width, ratio=0.02)
        assert record["biou"] == pytest.approx(wide["biou"], abs=1e-9)
        assert record["biou"] != pytest.approx(narrow["biou"], abs=1e-4)
        assert 0.5 < record["iou"] < 1.0  # a real outline, not a box or an empty mask
    config = json.loads((out / "config.json").read_text())["identity"]
    assert config["boundary_ratio"] == 0.05
    assert (config["answer"], config["refiner"], config["refine_iters"]) == ("path", "none", 1)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    mean_biou = np.mean([records[s.id]["biou"] for s in samples])
    assert metrics["mBIoU"] == pytest.approx(mean_biou, abs=1e-6)


def test_eval_refuses_resuming_with_other_path_options(setup, capsys) -> None:
    work, path, _, outlines = setup
    out = work / "resume"
    base = ["eval", "--dataset", f"jsonl:{path}", "--limit", "1", "--out", str(out), "--no-report"]
    with ChatServer(_answer(outlines)) as server:
        grounder = ["--grounder", f"openai:{server.url}#m"]
        assert main([*base, *grounder, "--answer", "path", "--refiner", "none"]) == 0
        capsys.readouterr()
        code = main([*base, *grounder, "--answer", "path", "--refiner", "sam"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    assert "different configuration (refiner: 'none' there, 'sam' now)" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--oracle-boxes", "--refiner", "none"], "--refiner goes with a grounder"),
        (["--oracle-boxes", "--min-score", "0.5"], "--min-score goes with a grounder"),
        (["--grounder", "openai:http://127.0.0.1:9#m", "--answer", "contour"], "unknown answer"),
    ],
)
def test_bad_path_options_are_one_line_errors(setup, capsys, args, message) -> None:
    work, path, _, _ = setup
    code = main(["eval", "--dataset", f"jsonl:{path}", "--out", str(work / "bad"), *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], lines


def test_refcoco_m_defaults_to_its_boundary_ratio() -> None:
    assert default_boundary_ratio("refcocom:/data/refcocom:val") == 0.05
    assert default_boundary_ratio("refcoco-m:/data/x") == 0.05
    assert default_boundary_ratio(f"jsonl:{Path('x.jsonl')}") == 0.02
