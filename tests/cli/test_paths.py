"""`refseg segment IMAGE "phrase"` with path answers from a loopback OpenAI-compatible server.

The server (tests/grounding/chat_server.py) answers with the traced outline of a real COCO
instance, so the whole path head runs: prompt asking for paths -> HTTP -> parse -> convert ->
rasterize -> refine (none and the gated sam) -> result JSON with ``path`` -> ``--svg``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from refseg import masks
from refseg.cli import main
from refseg.grounding.coords import path_from_pixels
from refseg.paths import parse_path, rasterize, trace
from refseg.protocol import format_answer
from refseg.testing.coco_sample import load_objects
from tests.grounding.chat_server import ChatServer


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def largest_object():
    return max(load_objects(), key=lambda o: o.mask.sum())


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("refiner", ["none", "sam"])
def test_path_answer_end_to_end(largest_object, tmp_path, capsys, refiner: str) -> None:
    obj = largest_object
    height, width = obj.mask.shape
    rings = trace(obj.mask, 32)
    model_rings = path_from_pixels(rings, "norm1000", width, height)
    answer = format_answer([((0, 0, 1000, 1000), [], model_rings)])
    answer = answer.replace('"bbox_2d": [0, 0, 1000, 1000], ', "")  # box derived from the path
    with ChatServer(lambda request: answer) as server:
        out = tmp_path / "r.json"
        svg = tmp_path / "o.svg"
        code, _, err = run(
            [
                "segment",
                str(obj.image_path),
                "the object",
                "--grounder",
                f"openai:{server.url}#m",
                "--answer",
                "path",
                "--refiner",
                refiner,
                "--json",
                str(out),
                "--svg",
                str(svg),
            ],
            capsys,
        )
        prompt = server.requests[0].prompt
    assert code == 0, err
    assert '"path"' in prompt and "M x y" in prompt  # --answer path changed the prompt
    data = json.loads(out.read_text())
    (inst,) = data["instances"]
    assert set(inst) >= {"box", "points", "point_labels", "score", "mask", "path"}
    mask = masks.decode(inst["mask"])
    assert _iou(mask, obj.mask) > 0.85
    # the path is in image pixels and draws (close to) the mask it sits beside
    assert _iou(rasterize(parse_path(inst["path"]), width, height), mask) > 0.9
    x1, _, _, y2 = inst["box"]
    assert x1 == pytest.approx(obj.box[0], abs=3) and y2 == pytest.approx(obj.box[3], abs=3)
    # SVG: one <path> per instance, over the image size, parsed back to the same outline
    root = ET.fromstring(svg.read_text())
    assert root.tag.endswith("svg")
    assert (root.get("width"), root.get("height")) == (str(width), str(height))
    (element,) = [e for e in root.iter() if e.tag.endswith("path")]
    assert element.get("d") == inst["path"]


def test_box_answers_are_unchanged_and_svg_traces_their_masks(
    largest_object, tmp_path, capsys
) -> None:
    obj = largest_object
    height, width = obj.mask.shape
    x1, y1, x2, y2 = obj.box
    box = [round(x1 / width * 1000), round(y1 / height * 1000)]
    box += [round(x2 / width * 1000), round(y2 / height * 1000)]
    answer = format_answer([(box, [])])
    with ChatServer(lambda request: answer) as server:
        out = tmp_path / "r.json"
        svg = tmp_path / "o.svg"
        code, _, err = run(
            [
                "segment",
                str(obj.image_path),
                "the object",
                "--grounder",
                f"openai:{server.url}#m",
                "--json",
                str(out),
                "--svg",
                str(svg),
            ],
            capsys,
        )
        prompt = server.requests[0].prompt
    assert code == 0, err
    assert "point_2d" in prompt and '"path"' not in prompt
    (inst,) = json.loads(out.read_text())["instances"]
    assert "path" not in inst  # box answers keep the old JSON exactly
    (element,) = [e for e in ET.fromstring(svg.read_text()).iter() if e.tag.endswith("path")]
    traced = rasterize(parse_path(element.get("d")), width, height)
    assert _iou(traced, masks.decode(inst["mask"])) > 0.9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--answer", "contour"], "unknown answer kind"),
        (["--refiner", "bogus"], "unknown refiner"),
        (["--refiner", "/nonexistent/refiner.pt"], "not a file"),
    ],
)
def test_bad_options_are_one_line_errors(largest_object, capsys, args, message) -> None:
    with ChatServer(lambda request: "<answer>[]</answer>") as server:
        code, _, err = run(
            [
                "segment",
                str(largest_object.image_path),
                "x",
                "--grounder",
                f"openai:{server.url}#m",
                *args,
            ],
            capsys,
        )
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err


def test_batch_with_path_answers_records_options_and_refuses_others(
    largest_object, tmp_path, capsys
) -> None:
    obj = largest_object
    height, width = obj.mask.shape
    model_rings = path_from_pixels(trace(obj.mask, 32), "norm1000", width, height)
    answer = format_answer([((0, 0, 1000, 1000), [], model_rings)])
    pairs, out = tmp_path / "pairs.jsonl", tmp_path / "run"
    pairs.write_text(
        "".join(json.dumps({"image": str(obj.image_path), "phrase": p}) + "\n" for p in "ab")
    )
    with ChatServer(lambda request: answer) as server:
        argv = ["segment", "--batch", str(pairs), "--out", str(out), "--grounder",
                f"openai:{server.url}#m", "--answer", "path"]  # fmt: skip
        code, stdout, err = run([*argv, "--refiner", "none"], capsys)
        assert code == 0, err
        assert '"path"' in server.requests[0].prompt
        records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert [r["options"] for r in records] == [
            {"answer": "path", "refiner": "none", "refine_iters": 1}
        ] * 2
        (inst,) = records[0]["instances"]
        # --refiner none: the mask is the path's raster, and the path is in image pixels
        raster = rasterize(parse_path(inst["path"]), width, height)
        assert _iou(masks.decode(inst["mask"]), raster) > 0.99
        assert _iou(raster, obj.mask) > 0.85
        # the same options resume; other options are refused in one line, naming the option
        code, stdout, _ = run([*argv, "--refiner", "none"], capsys)
        assert code == 0 and "all 2 pairs already done" in stdout
        for other, key in (
            (["--refiner", "sam"], "refiner"),
            (["--refiner", "none", "--refine-iters", "2"], "refine_iters"),
        ):
            code, _, err = run([*argv, *other], capsys)
            lines = [line for line in err.splitlines() if line.strip()]
            assert code == 2 and len(lines) == 1, err
            assert f"other options ({key}:" in lines[0] and "--fresh" in lines[0]
        code, _, err = run([*argv[:-2], "--refiner", "none"], capsys)  # box answers now
        assert code == 2 and "other options (answer: 'path' there, 'box' now)" in err
        n_before = len(server.requests)
        code, _, err = run([*argv, "--refiner", "bogus"], capsys)
        assert code == 2 and "unknown refiner" in err
        assert len(server.requests) == n_before  # refused before any work
