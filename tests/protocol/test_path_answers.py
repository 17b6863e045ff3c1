"""Path answers (the path mask head): parsing every accepted form, refusals, formatting."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refseg.errors import InputError
from refseg.grounding.coords import path_from_pixels, to_grounding
from refseg.paths import rasterize, signed_area
from refseg.protocol import (
    BOX_PATH_VIEWBOX,
    MAX_ANSWER_VERTICES,
    build_prompt,
    format_answer,
    parse_answer,
)


def _one(text: str):
    parsed = parse_answer(text)
    assert parsed.error is None, parsed.error
    assert len(parsed.instances) == 1
    return parsed.instances[0]


def _area(rings) -> float:
    return sum(abs(signed_area(np.asarray(r, dtype=float))) for r in rings)


# ---------------------------------------------------------------------------------------------
# Prompts


@pytest.mark.parametrize("think", [False, True])
def test_path_prompt_asks_for_a_path_in_the_box_coordinates(think: bool) -> None:
    text = build_prompt("the cat", think=think, answer="path")
    assert '"path"' in text and "M x y" in text and "Z" in text and "bbox_2d" in text
    assert "point_2d" not in text
    assert ("<think>" in text) == think
    assert "0-1000" in text
    assert build_prompt("the cat", think=think) != text  # the box prompt is unchanged
    with pytest.raises(InputError):
        build_prompt("the cat", think=think, answer="polygonz")


# ---------------------------------------------------------------------------------------------
# Accepted forms


def test_canonical_path_answer() -> None:
    inst = _one(
        '<answer>[{"bbox_2d": [10, 20, 110, 220], "path": "M 10 20 L 110 20 L 60 220 Z"}]</answer>'
    )
    assert inst.box == (10, 20, 110, 220) and not inst.box_derived
    assert inst.polygons == [[(10, 20), (110, 20), (60, 220)]]
    assert parse_answer(
        '<answer>[{"bbox_2d": [10, 20, 110, 220], "path": "M 10 20 L 110 20 L 60 220 Z"}]</answer>'
    ).canonical


def test_relative_and_hv_commands_match_their_absolute_form() -> None:
    absolute = _one('[{"path": "M 10 10 L 50 10 L 50 40 L 10 40 Z"}]')
    relative = _one('[{"path": "m10 10 h40 v30 h-40 z"}]')
    mixed = _one('[{"path": "M10,10 H50 V40 l-40 0Z"}]')
    assert absolute.polygons == relative.polygons == mixed.polygons
    assert relative.box == (10, 10, 50, 40) and relative.box_derived


def test_several_subpaths_are_one_object_in_several_parts() -> None:
    inst = _one('[{"path": "M0 0 L10 0 L10 10 Z m 20 0 l 10 0 l 0 10 z"}]')
    assert len(inst.polygons) == 2
    assert inst.polygons[1][0] == (20, 0)  # relative m after z starts from the subpath start
    assert inst.box == (0, 0, 30, 10)


def test_curves_and_arcs_are_flattened() -> None:
    circle = _one('[{"path": "M 0 50 A 50 50 0 1 1 100 50 A 50 50 0 1 1 0 50 Z"}]')
    assert len(circle.polygons[0]) > 16
    assert _area(circle.polygons) == pytest.approx(math.pi * 50**2, rel=0.02)
    cubic = _one('[{"path": "M0 0 C 0 0 100 0 100 100 S 0 100 0 100 Z"}]')
    quad = _one('[{"path": "M0 0 Q 50 -50 100 0 T 200 0 L 100 100 Z"}]')
    assert len(cubic.polygons[0]) > 4 and len(quad.polygons[0]) > 4
    # A quadratic through (50,-50) bulges above y=0; T reflects it below.
    ys = [y for _, y in quad.polygons[0]]
    assert min(ys) < -10 and max(ys) >= 100


def test_compact_arc_flags() -> None:
    spaced = _one('[{"path": "M0 0 a5 5 0 1 0 5 5 z"}]')
    compact = _one('[{"path": "M0 0a5 5 0 105 5z"}]')
    assert spaced.polygons == compact.polygons


def test_polygon_forms() -> None:
    one = _one('[{"polygon": [[0, 0], [10, 0], [10, 10]]}]')
    several = _one('[{"polygon": [[[0, 0], [10, 0], [10, 10]], [[20, 20], [30, 20], [30, 30]]]}]')
    assert one.polygons == [[(0, 0), (10, 0), (10, 10)]]
    assert len(several.polygons) == 2 and several.box == (0, 0, 30, 30)


def test_box_relative_form_spans_the_box() -> None:
    v = int(BOX_PATH_VIEWBOX)
    inst = _one(f'[{{"bbox_2d": [100, 200, 300, 600], "box_path": "M0 0 L{v} 0 L{v} {v} Z"}}]')
    assert inst.polygons == [[(100, 200), (300, 200), (300, 600)]]
    half = _one(f'[{{"bbox_2d": [0, 0, 100, 100], "box_path": "M{v // 2} 0 L{v} 0 L{v} {v} Z"}}]')
    assert half.polygons[0][0] == pytest.approx((50, 0))


def test_path_next_to_points_keeps_them() -> None:
    inst = _one('[{"bbox_2d": [0, 0, 10, 10], "point_2d": [5, 5], "path": "M0 0 H10 V10 Z"}]')
    assert inst.points == [(5, 5)] and inst.has_path


# ---------------------------------------------------------------------------------------------
# Refusals: structured failures, never exceptions


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('[{"bbox_2d": [0, 0, 9, 9], "path": "L 1 2 L 3 4 Z"}]', "start with M"),
        ('[{"path": "M 0 0 L 1 Z"}]', "needs 2 numbers"),
        ('[{"path": "M 0 0 L 1 x L 3 3 Z"}]', "unexpected"),
        ('[{"path": "M 0 0 L nan 1 L 3 3 Z"}]', "unexpected"),
        ('[{"path": "M 0 0 L 1e400 1 L 3 3 Z"}]', "out of range"),
        ('[{"path": "M 0 0 L 9e9 1 L 3 3 Z"}]', "out of range"),
        ('[{"path": "M 0 0 L 1 1 Z"}]', "encloses no area"),
        ('[{"path": ""}]', "empty"),
        ('[{"path": 12}]', "not text"),
        ('[{"path": "M0 0 H9 V9 Z", "polygon": [[0, 0], [1, 0], [1, 1]]}]', "both"),
        ('[{"box_path": "M0 0 L960 0 L960 960 Z"}]', "no bbox_2d"),
        ('[{"polygon": [[0, 0], [1, 0, 2], [1, 1]]}]', "2 numbers"),
        ('[{"polygon": []}]', "polygon needs"),
        ('[{"bbox_2d": [0, 0, 9, 9], "path": "M0 0 H9 V9 Z 4"}]', "after Z"),
    ],
)
def test_bad_paths_are_structured_failures(text: str, reason: str) -> None:
    parsed = parse_answer(f"<answer>{text}</answer>")
    assert parsed.error is not None and reason in parsed.error, parsed.error
    assert parsed.instances == [] and not parsed.no_target
    assert parsed.error.startswith("instance 1")


def test_vertex_bound_is_for_the_whole_answer() -> None:
    ring = " ".join(f"L {i % 97} {i % 89}" for i in range(MAX_ANSWER_VERTICES // 2 + 10))
    one = f'{{"path": "M 0 0 {ring} Z"}}'
    assert parse_answer(f"<answer>[{one}]</answer>").error is None
    start = time.perf_counter()
    parsed = parse_answer(f"<answer>[{one}, {one}]</answer>")
    assert parsed.error is not None and "vertices" in parsed.error
    assert time.perf_counter() - start < 10


# ---------------------------------------------------------------------------------------------
# Conversion to pixels: the same convention as boxes


def test_paths_convert_like_boxes_and_clip_to_the_image() -> None:
    text = '<answer>[{"bbox_2d": [100, 200, 300, 400], "path": "M100 200 L300 200 L300 400 Z"}]'
    grounding = to_grounding(parse_answer(text + "</answer>"), "norm1000", 640, 480)
    (inst,) = grounding.instances
    assert inst.box == pytest.approx((64, 96, 192, 192))
    np.testing.assert_allclose(inst.polygons[0], [[64, 96], [192, 96], [192, 192]])
    # pixels convention: no scaling; a path partly outside keeps its inside part
    out = to_grounding(
        parse_answer('[{"path": "M-100 -100 L50 -100 L50 50 L-100 50 Z"}]'), "pixels", 40, 30
    )
    (clipped,) = out.instances
    assert clipped.box == pytest.approx((0, 0, 40, 30))
    assert rasterize(clipped.polygons, 40, 30).all()


def test_paths_wholly_outside_are_invalid_instances() -> None:
    text = '[{"path": "M2000 2000 L3000 2000 L3000 3000 Z"}, {"bbox_2d": [0, 0, 500, 500]}]'
    grounding = to_grounding(parse_answer(text), "norm1000", 64, 48)
    assert grounding.invalid == 1 and len(grounding.instances) == 1
    assert not grounding.instances[0].polygons
    alone = to_grounding(parse_answer(text.split(", {")[0] + "]"), "norm1000", 64, 48)
    assert alone.parse_error is not None and "no area inside the image" in alone.parse_error


def test_resized_convention_scales_paths() -> None:
    # a 1000x500 image under the resized convention: the frame is the model's resized size
    from refseg.grounding.coords import Convention

    conv = Convention.parse("resized:max_pixels=200704")
    fw, fh = conv.frame(1000, 500)
    text = f'[{{"path": "M0 0 L{fw} 0 L{fw} {fh} L0 {fh} Z"}}]'
    (inst,) = to_grounding(parse_answer(text), conv, 1000, 500).instances
    assert inst.box == pytest.approx((0, 0, 1000, 500))


# ---------------------------------------------------------------------------------------------
# Formatting


def test_format_answer_writes_paths() -> None:
    rings = [
        np.array([[0.4, 0.0], [10.0, 0.0], [10.0, 9.6]]),
        np.array([[20, 20], [30, 20], [30, 30]]),
    ]
    text = format_answer([((0, 0, 30, 30), [], rings)], reasoning="one object in two parts")
    body = json.loads(text[text.index("<answer>") + 8 : -len("</answer>")])
    assert body == [
        {"bbox_2d": [0, 0, 30, 30], "path": "M 0 0 L 10 0 L 10 10 Z M 20 20 L 30 20 L 30 30 Z"}
    ]
    kept = format_answer([((0, 0, 9, 9), [], "m0 0 h9 v9 z")])
    assert '"path": "m0 0 h9 v9 z"' in kept
    with pytest.raises(InputError):
        format_answer([((0, 0, 9, 9), [], "M 0 0 L 1")])
    with pytest.raises(InputError):
        format_answer([((0, 0, 9, 9), [], [np.array([[0, 0], [1, 1]])])])


def test_path_from_pixels_inverts_to_grounding() -> None:
    ring = np.array([[32.0, 24.0], [96.0, 24.0], [96.0, 72.0], [32.0, 72.0]])
    model = path_from_pixels([ring], "norm1000", 128, 96)
    text = format_answer([((250, 250, 750, 750), [], model)])
    (inst,) = to_grounding(parse_answer(text), "norm1000", 128, 96).instances
    np.testing.assert_allclose(inst.polygons[0], ring, atol=0.1)


coord = st.integers(min_value=-50, max_value=3000)
ring_st = st.lists(st.tuples(coord, coord), min_size=3, max_size=12, unique=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ring_st, min_size=1, max_size=3))
def test_format_then_parse_round_trips_paths(rings: list) -> None:
    arrays = [np.array(r, dtype=float) for r in rings]
    try:
        text = format_answer([((0, 0, 10, 10), [], arrays)])
    except InputError:
        return  # every ring collapsed: nothing to write
    parsed = parse_answer(text)
    if parsed.error is not None:
        assert "encloses no area" in parsed.error  # only collinear rings may be dropped
        return
    assert parsed.canonical
    got = parsed.instances[0].polygons
    expected = [[(float(x), float(y)) for x, y in r] for r in rings if len(set(r)) >= 3]
    assert got == expected
