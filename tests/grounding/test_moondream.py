"""The moondream: grounder against a local server with Moondream's documented segment shape:
the request it sends, the conversion of its box-relative path answer to pixels, failures and
retries, and `refseg segment` end to end (rasterize + refine its outline)."""

from __future__ import annotations

import json

import pytest

from refseg import masks
from refseg.cli import main
from refseg.errors import InputError, ModelError
from refseg.grounding import load_grounder, set_answer
from refseg.grounding.moondream import MoondreamGrounder, segment_url
from refseg.paths import format_path, parse_path, rasterize, trace
from refseg.testing.coco_sample import load_objects
from tests.grounding.moondream_server import MoondreamServer


@pytest.fixture(scope="module")
def obj():
    return max(load_objects(), key=lambda o: o.mask.sum())


@pytest.fixture(scope="module")
def image(obj):
    from refseg.image import load_image

    return load_image(obj.image_path)


def moondream_answer(obj, frame: str = "box") -> dict:
    """The object's traced outline as Moondream writes it: the box normalized to the image,
    the path in unit coordinates of the box (or of the image, for ``frame="image"``)."""
    height, width = obj.mask.shape
    x1, y1, x2, y2 = obj.box
    rings = trace(obj.mask, 32)
    if frame == "box":
        unit = [(r - [x1, y1]) / [x2 - x1, y2 - y1] for r in rings]
    else:
        unit = [r / [width, height] for r in rings]
    bbox = {"x_min": x1 / width, "y_min": y1 / height, "x_max": x2 / width, "y_max": y2 / height}
    return {"path": format_path(unit, decimals=4), "bbox": bbox}, rings


def test_request_shape_and_box_relative_path_to_pixels(obj, image, monkeypatch) -> None:
    monkeypatch.setenv("MOONDREAM_API_KEY", "k-123")
    answer, rings = moondream_answer(obj)
    with MoondreamServer(lambda r: answer, key="k-123") as server:
        grounder = load_grounder(f"moondream:{server.url};timeout=10")
        (grounding,) = grounder.ground([image], [" the dog "])
        (request,) = server.requests
    assert request.path == "/v1/segment"
    assert request.headers["X-Moondream-Auth"] == "k-123"
    assert request.body["object"] == "the dog" and request.body["stream"] is False
    assert request.body["image_url"].startswith("data:image/jpeg;base64,")
    assert request.image.shape == image.shape
    assert grounding.parse_error is None and not grounding.no_target
    (inst,) = grounding.instances
    assert inst.box == pytest.approx(obj.box, abs=0.01)
    # the outline is back in image pixels: its raster is the traced outline's raster
    ours = rasterize(inst.polygons, image.shape[1], image.shape[0])
    truth = rasterize(rings, image.shape[1], image.shape[0])
    assert (ours & truth).sum() / (ours | truth).sum() > 0.99


def test_image_frame_option(obj, image) -> None:
    answer, rings = moondream_answer(obj, frame="image")
    with MoondreamServer(lambda r: answer) as server:
        box_frame = load_grounder(f"moondream:{server.url}").ground([image], ["x"])[0]
        image_frame = load_grounder(f"moondream:{server.url};frame=image").ground([image], ["x"])
    truth = rasterize(rings, image.shape[1], image.shape[0])
    ours = rasterize(image_frame[0].instances[0].polygons, image.shape[1], image.shape[0])
    assert (ours & truth).sum() / (ours | truth).sum() > 0.99
    # read in the wrong frame, the same answer lands elsewhere (so the option matters)
    wrong = rasterize(box_frame.instances[0].polygons, image.shape[1], image.shape[0])
    assert (wrong & truth).sum() / (wrong | truth).sum() < 0.5


@pytest.mark.parametrize(
    ("answer", "check"),
    [
        ({"path": "", "bbox": None}, lambda g: g.no_target and not g.instances),
        ({}, lambda g: g.no_target),
        (
            {"path": "", "bbox": {"x_min": 0.1, "y_min": 0.1, "x_max": 0.5, "y_max": 0.6}},
            lambda g: len(g.instances) == 1 and not g.instances[0].polygons,
        ),
        ({"path": "M 0 0 L 1 x", "bbox": {"x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1}},
         lambda g: "bad path" in g.parse_error),
        ({"path": "M 0 0 L 1 0 L 1 1 Z"}, lambda g: "without its bbox" in g.parse_error),
        ({"path": "M 0 0 L 1 1 Z", "bbox": {"x_min": "a"}}, lambda g: "bbox" in g.parse_error),
        (
            {"path": "M 0 0 L 1 0 L 1 1 Z", "bbox": {"x_min": 0.9, "y_min": 0, "x_max": 0.1,
                                                      "y_max": 1}},
            lambda g: "invalid" in g.parse_error,
        ),
        # a /detect-shaped reply: boxes (0-1 of the image), never silently "no target"
        (
            {"objects": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.5, "y_max": 0.6},
                         {"x_min": 0.6, "y_min": 0.1, "x_max": 0.9, "y_max": 0.3}]},
            lambda g: len(g.instances) == 2 and not g.no_target
            and g.instances[0].box == pytest.approx((64.0, 72.0, 320.0, 216.0)),  # 640x360
        ),
        ({"objects": []}, lambda g: g.no_target and not g.parse_error),
        ({"objects": [{"x_min": 0.1}]}, lambda g: "objects: bbox" in g.parse_error),
        ({"objects": "many"}, lambda g: "not a list" in g.parse_error),
    ],
)  # fmt: skip
def test_unusual_answers_are_no_target_box_only_or_parse_errors(image, answer, check) -> None:
    with MoondreamServer(lambda r: answer) as server:
        (grounding,) = load_grounder(f"moondream:{server.url}").ground([image], ["x"])
    assert check(grounding), grounding


def test_transient_failures_are_retried_and_others_are_one_line(image) -> None:
    ok = {"path": "M 0 0 L 1 0 L 1 1 Z", "bbox": {"x_min": 0, "y_min": 0, "x_max": 1, "y_max": 1}}
    fail = lambda n: (503, b'{"error": "busy"}') if n == 1 else None  # noqa: E731
    with MoondreamServer(lambda r: ok, fail=fail) as server:
        grounder = MoondreamGrounder(server.url, backoff=0.0)
        assert grounder.ground([image], ["x"])[0].instances
        assert server.count == 2
    with MoondreamServer(lambda r: ok, key="right") as server:
        with pytest.raises(ModelError, match=r"HTTP 401 \(invalid API key\)") as info:
            MoondreamGrounder(server.url, api_key_env=None).ground([image], ["x"])
        assert server.count == 1 and "\n" not in str(info.value)
    garbage = MoondreamServer(lambda r: b"<html>oops</html>")
    with garbage as server, pytest.raises(ModelError, match="non-JSON"):
        MoondreamGrounder(server.url).ground([image], ["x"])
    down = MoondreamServer(lambda r: ok, fail=lambda n: (500, b"{}"))
    with down as server, pytest.raises(ModelError, match="unreachable after 2 tries"):
        MoondreamGrounder(server.url, retries=2, backoff=0.0).ground([image], ["x"])


def test_specs_and_fixed_answer() -> None:
    assert segment_url("http://h:2020") == "http://h:2020/v1/segment"
    assert segment_url("http://h:2020/v1/") == "http://h:2020/v1/segment"
    assert segment_url("https://h/v1/segment") == "https://h/v1/segment"
    for spec, message in (
        ("moondream:ftp://h", "http"),
        ("moondream:http://h;colour=red", "unknown option"),
        ("moondream:http://h;frame=page", "frame must be box or image"),
        ("moondream:http://h;timeout=x", "needs a number"),
    ):
        with pytest.raises(InputError, match=message):
            load_grounder(spec)
    grounder = load_grounder("moondream:http://127.0.0.1:9/v1")
    set_answer(grounder, "path")
    with pytest.raises(InputError, match="always answers with a path"):
        set_answer(grounder, "box")


def test_segment_cli_end_to_end(obj, tmp_path, capsys) -> None:
    answer, _ = moondream_answer(obj)
    out = tmp_path / "r.json"
    with MoondreamServer(lambda r: answer) as server:
        argv = ["segment", str(obj.image_path), "the dog", "--grounder", f"moondream:{server.url}"]
        code = main([*argv, "--refiner", "none", "--json", str(out)])
        err = capsys.readouterr().err
        assert code == 0, err
        (inst,) = json.loads(out.read_text())["instances"]
        mask = masks.decode(inst["mask"])
        assert (mask & obj.mask).sum() / (mask | obj.mask).sum() > 0.85
        height, width = obj.mask.shape
        assert (rasterize(parse_path(inst["path"]), width, height) == mask).mean() > 0.999
        code = main([*argv, "--answer", "box"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "always answers with a path" in lines[0]


def test_eval_with_moondream_scores_its_outlines(obj, tmp_path, capsys) -> None:
    from refseg.data.base import Sample
    from refseg.data.jsonl import export_jsonl

    height, width = obj.mask.shape
    sample = Sample(
        id="dog",
        image=obj.image_path,
        phrase="the dog",
        masks=[masks.encode(obj.mask)],
        width=width,
        height=height,
    )
    dataset = tmp_path / "one.jsonl"
    export_jsonl([sample], dataset)
    answer, rings = moondream_answer(obj)
    out = tmp_path / "run"
    with MoondreamServer(lambda r: answer) as server:
        code = main(
            ["eval", "--dataset", f"jsonl:{dataset}", "--grounder", f"moondream:{server.url}",
             "--refiner", "none", "--out", str(out), "--no-report"]
        )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    document = json.loads((out / "metrics.json").read_text())
    assert document["config"]["answer"] == "path"  # moondream's own answer kind, recorded
    # refiner none: the score is the traced outline's raster against the ground truth
    raster = rasterize(rings, width, height)
    expected = (raster & obj.mask).sum() / (raster | obj.mask).sum()
    assert document["metrics"]["gIoU"] == pytest.approx(expected, abs=0.01)
