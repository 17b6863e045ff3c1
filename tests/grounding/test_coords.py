"""Coordinate conventions: smart_resize, conversions to pixels and back, validity rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refseg.errors import InputError
from refseg.grounding.coords import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    Convention,
    from_pixels,
    smart_resize,
    to_grounding,
)
from refseg.protocol import ParsedAnswer, ParsedInstance, format_answer, parse_answer

# ---------------------------------------------------------------------------------------------
# smart_resize


def test_smart_resize_hand_computed() -> None:
    # 480 / 28 = 17.14 -> 17 * 28 = 476; 640 / 28 = 22.86 -> 23 * 28 = 644; 476 * 644 = 306,544
    # lies within [3,136, 12,845,056], so no rescale.
    assert smart_resize(480, 640) == (476, 644)
    # 1080x1920 with the 1280-token budget (1,003,520 px): rounding gives 1092 x 1932 = 2.1 MP,
    # too many; beta = sqrt(1080 * 1920 / 1003520) = 1.43747; 1080 / beta / 28 = 26.8 -> 26 * 28
    # = 728; 1920 / beta / 28 = 47.7 -> 47 * 28 = 1316.
    assert smart_resize(1080, 1920, max_pixels=28 * 28 * 1280) == (728, 1316)
    # 10x10 rounds to 0 -> one factor (28x28 = 784 < 3,136): beta = sqrt(3136 / 100) = 5.6,
    # ceil(56 / 28) * 28 = 56.
    assert smart_resize(10, 10) == (56, 56)
    # half-way sides round half to even like the reference: 42 / 28 = 1.5 -> 2 -> 56 and
    # 70 / 28 = 2.5 -> 2 -> 56; 3000 / 28 = 107.1 -> 107 * 28 = 2996.
    assert smart_resize(42, 640) == (56, 644)
    assert smart_resize(70, 3000) == (56, 2996)


def test_smart_resize_defaults_are_the_released_checkpoint_budget() -> None:
    assert DEFAULT_MIN_PIXELS == 3136
    assert DEFAULT_MAX_PIXELS == 12845056


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6000),
    st.integers(1, 6000),
    st.sampled_from([(3136, 12845056), (3136, 1003520), (200704, 1003520), (3136, 50000)]),
)
def test_smart_resize_invariants(height: int, width: int, budget: tuple[int, int]) -> None:
    lo, hi = budget
    if max(height, width) / min(height, width) > 200:
        with pytest.raises(InputError):
            smart_resize(height, width, min_pixels=lo, max_pixels=hi)
        return
    h, w = smart_resize(height, width, min_pixels=lo, max_pixels=hi)
    assert h % 28 == 0 and w % 28 == 0 and h >= 28 and w >= 28
    assert h * w <= hi or min(h, w) == 28  # a side never drops below one factor
    assert h * w >= lo


def test_smart_resize_matches_the_real_processor() -> None:
    """Our rule against transformers' Qwen2-VL image processor (the one Qwen2.5-VL uses)."""
    import numpy as np

    qwen = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
    sizes = [(h, w) for h in (1, 13, 14, 27, 42, 97, 480, 1080, 4000) for w in (50, 640, 1920)]
    sizes = [s for s in sizes if max(s) / min(s) <= 200]
    for lo, hi in [(3136, 12845056), (3136, 1003520), (200704, 1003520)]:
        for h, w in sizes:
            assert smart_resize(h, w, 28, lo, hi) == tuple(qwen.smart_resize(h, w, 28, lo, hi))
    # and the processor itself: its patch grid (14-pixel patches) is the resized size
    processor = qwen.Qwen2VLImageProcessorPil(size={"shortest_edge": 3136, "longest_edge": 200000})
    for h, w in [(480, 640), (1080, 1920), (33, 700)]:
        grid = processor(images=[np.zeros((h, w, 3), np.uint8)], return_tensors="np")
        _, gh, gw = (int(v) for v in grid["image_grid_thw"][0])
        assert (gh * 14, gw * 14) == smart_resize(h, w, max_pixels=200000)


@pytest.mark.parametrize("size", [(0, 10), (10, -1), (1, 300)])
def test_smart_resize_refuses_bad_sizes(size: tuple[int, int]) -> None:
    with pytest.raises(InputError):
        smart_resize(*size)


# ---------------------------------------------------------------------------------------------
# Convention specs


def test_convention_parse_and_str() -> None:
    assert Convention.parse("norm1000") == Convention("norm1000")
    assert Convention.parse(" pixels ").kind == "pixels"
    resized = Convention.parse("resized:min_pixels=200704, max_pixels=1003520")
    assert (resized.kind, resized.min_pixels, resized.max_pixels, resized.factor) == (
        "resized",
        200704,
        1003520,
        28,
    )
    assert Convention.parse(str(resized)) == resized
    assert Convention.parse("resized") == Convention("resized")
    assert Convention.parse("resized:factor=32").factor == 32
    assert Convention.parse(resized) is resized
    assert Convention.parse("norm1000").prompt_coords == "norm1000"
    assert resized.prompt_coords == "pixels" and Convention("pixels").prompt_coords == "pixels"


@pytest.mark.parametrize(
    "spec",
    [
        "percent",
        "norm1000:x=1",
        "resized:max=5",
        "resized:max_pixels=lots",
        "resized:min_pixels=10,max_pixels=5",
        "resized:factor=0",
        "",
    ],
)
def test_convention_parse_errors_are_one_line(spec: str) -> None:
    with pytest.raises(InputError) as info:
        Convention.parse(spec)
    assert "\n" not in str(info.value)


def test_frames() -> None:
    assert Convention("norm1000").frame(640, 480) == (1000, 1000)
    assert Convention("pixels").frame(640, 480) == (640, 480)
    assert Convention("resized").frame(640, 480) == (644, 476)
    with pytest.raises(InputError):
        Convention("pixels").frame(0, 480)


# ---------------------------------------------------------------------------------------------
# to_grounding


def answer(*instances: tuple) -> ParsedAnswer:
    return ParsedAnswer(
        instances=[
            ParsedInstance(box=tuple(b), points=[tuple(p) for p in pts]) for b, pts in instances
        ],
        raw="raw text",
        reasoning="why",
    )


def test_norm1000_to_pixels() -> None:
    g = to_grounding(answer(((100, 200, 300, 400), [(250, 250)])), "norm1000", 640, 480)
    assert g.parse_error is None and not g.no_target and g.invalid == 0
    (inst,) = g.instances
    assert inst.box == pytest.approx((64.0, 96.0, 192.0, 192.0))
    assert inst.points == [pytest.approx((160.0, 120.0))]
    assert g.raw_answer == "raw text" and g.reasoning == "why"


def test_resized_to_pixels() -> None:
    # 640x480 is seen by the model as 644x476
    g = to_grounding(answer(((322, 238, 644, 476), [(483, 357)])), "resized", 640, 480)
    (inst,) = g.instances
    assert inst.box == pytest.approx((320.0, 240.0, 640.0, 480.0))
    assert inst.points == [pytest.approx((480.0, 360.0))]
    # another pixel budget is another frame: the same answer lands elsewhere
    # 640x480 under a 50,000-pixel budget is 252x168: beta = sqrt(307200 / 50000) = 2.4787,
    # 480 / beta / 28 = 6.9 -> 168, 640 / beta / 28 = 9.2 -> 252.
    small = to_grounding(answer(((126, 84, 252, 168), [])), "resized:max_pixels=50000", 640, 480)
    assert small.instances[0].box == pytest.approx((320.0, 240.0, 640.0, 480.0))


def test_pixels_identity_with_clipping() -> None:
    g = to_grounding(answer(((-10, 5, 700, 50), [(3, 6)]), ((1, 2, 3, 4), [])), "pixels", 640, 480)
    assert [i.box for i in g.instances] == [(0.0, 5.0, 640.0, 50.0), (1.0, 2.0, 3.0, 4.0)]
    assert g.instances[0].points == [(3.0, 6.0)] and g.instances[1].points == []


@pytest.mark.parametrize(
    ("point", "kept"),
    [
        ((200, 250), (128.0, 120.0)),  # on the edge
        ((205, 250), (128.0, 120.0)),  # 5 grid units past it: rounding, clamped onto the edge
        ((210, 250), (128.0, 120.0)),  # 1% of the side: the tolerance
        ((150, 95), (96.0, 48.0)),  # past the top edge
    ],
)
def test_a_point_just_past_its_box_edge_is_clamped(point: tuple, kept: tuple) -> None:
    g = to_grounding(answer(((100, 100, 200, 400), [point])), "norm1000", 640, 480)
    assert g.invalid == 0 and g.instances[0].points == [pytest.approx(kept)]


@pytest.mark.parametrize(
    ("instance", "reason"),
    [
        (((300, 100, 200, 400), []), "inverted box"),
        (((100, 400, 200, 300), []), "inverted box"),
        (((100, 100, 100, 400), []), "no area"),
        (((1100, 100, 1200, 400), []), "no area"),
        (((-50, -50, -1, -1), []), "no area"),
        (((float("nan"), 100, 200, 400), []), "non-finite box"),
        (((100, 100, 200, 400), [(150, 450)]), "point outside its box"),
        (((100, 100, 200, 400), [(150, 150), (89, 150)]), "point outside its box"),
        (((900, 100, 1100, 400), [(1050, 150)]), "point outside its box"),
        (((100, 100, 200, 400), [(float("inf"), 150)]), "non-finite point"),
    ],
)
def test_invalid_instances(instance: tuple, reason: str) -> None:
    good = ((0, 0, 500, 500), [(250, 250)])
    mixed = to_grounding(answer(good, instance), "norm1000", 640, 480)
    assert mixed.invalid == 1 and len(mixed.instances) == 1 and mixed.parse_error is None
    assert mixed.instances[0].box == pytest.approx((0.0, 0.0, 320.0, 240.0))
    alone = to_grounding(answer(instance, instance), "norm1000", 640, 480)
    assert alone.instances == [] and alone.invalid == 2 and not alone.no_target
    assert alone.parse_error.startswith("all 2 instances invalid") and reason in alone.parse_error


def test_point_on_box_border_is_valid() -> None:
    g = to_grounding(answer(((100, 100, 300, 300), [(100, 300), (300, 100)])), "norm1000", 333, 777)
    assert g.invalid == 0
    (x1, y1, x2, y2) = g.instances[0].box
    for x, y in g.instances[0].points:
        assert x1 <= x <= x2 and y1 <= y <= y2


def test_parse_error_and_no_target_pass_through() -> None:
    bad = to_grounding(parse_answer("no idea"), "norm1000", 10, 10)
    assert bad.parse_error == "no JSON found" and not bad.no_target and bad.raw_answer == "no idea"
    none = to_grounding(parse_answer("<think>no</think><answer>[]</answer>"), "pixels", 10, 10)
    assert none.no_target and none.parse_error is None and none.reasoning == "no"


def test_to_grounding_refuses_bad_sizes() -> None:
    with pytest.raises(InputError):
        to_grounding(answer(((1, 1, 2, 2), [])), "pixels", 0, 10)


# ---------------------------------------------------------------------------------------------
# from_pixels and round trips


def test_from_pixels_examples() -> None:
    box, pts = from_pixels((64, 96, 192, 192), [(160, 120)], "norm1000", 640, 480)
    assert box == (100, 200, 300, 400) and pts == [(250, 250)]
    assert all(isinstance(v, int) for v in box)
    assert from_pixels((320, 240, 640, 480), [], "resized", 640, 480) == ((322, 238, 644, 476), [])
    assert from_pixels((1.4, 2.6, 3, 4), [(2, 3)], "pixels", 10, 10) == ((1, 3, 3, 4), [(2, 3)])
    # an object narrower than one model unit keeps one unit
    box, _ = from_pixels((100.0, 10.0, 100.2, 20.0), [], "norm1000", 4000, 100)
    assert box[2] - box[0] == 1
    box, _ = from_pixels((3999.9, 10.0, 4000.0, 20.0), [], "norm1000", 4000, 100)
    assert box[:3:2] == (999, 1000)


@pytest.mark.parametrize(
    ("box", "points"),
    [((10, 10, 5, 20), []), ((0, 0, 0, 5), []), ((1, 2, 3), []), ((0, 0, 5, 5), [(6, 1)])],
)
def test_from_pixels_refuses_bad_input(box: tuple, points: list) -> None:
    with pytest.raises(InputError):
        from_pixels(box, points, "norm1000", 10, 10)


conventions = st.sampled_from(
    ["norm1000", "pixels", "resized", "resized:max_pixels=1003520", "resized:max_pixels=40000"]
)


@settings(max_examples=300, deadline=None)
@given(conventions, st.integers(16, 3000), st.integers(16, 3000), st.data())
def test_pixels_to_model_to_pixels_round_trip(spec: str, width: int, height: int, data) -> None:
    if max(width, height) / min(width, height) > 150:
        return
    xs = sorted(data.draw(st.lists(st.floats(0, width), min_size=2, max_size=2)))
    ys = sorted(data.draw(st.lists(st.floats(0, height), min_size=2, max_size=2)))
    if xs[1] - xs[0] < 1e-3 or ys[1] - ys[0] < 1e-3:
        return
    point = (data.draw(st.floats(xs[0], xs[1])), data.draw(st.floats(ys[0], ys[1])))
    box = (xs[0], ys[0], xs[1], ys[1])
    model_box, model_points = from_pixels(box, [point], spec, width, height)
    parsed = parse_answer(format_answer([(model_box, model_points)]))
    grounding = to_grounding(parsed, spec, width, height)
    assert grounding.parse_error is None and grounding.invalid == 0
    (inst,) = grounding.instances
    frame_w, frame_h = Convention.parse(spec).frame(width, height)
    unit_x, unit_y = width / frame_w, height / frame_h
    # each coordinate within half a unit, or one unit where a thin box was widened
    thin_x = (box[2] - box[0]) / unit_x < 1
    thin_y = (box[3] - box[1]) / unit_y < 1
    tol_x = unit_x * (1.0 if thin_x else 0.5) + 1e-6
    tol_y = unit_y * (1.0 if thin_y else 0.5) + 1e-6
    for got, want, tol in zip(inst.box, box, (tol_x, tol_y, tol_x, tol_y)):
        assert math.isclose(got, want, abs_tol=tol)
    assert math.isclose(inst.points[0][0], point[0], abs_tol=tol_x)
    assert math.isclose(inst.points[0][1], point[1], abs_tol=tol_y)


@settings(max_examples=200, deadline=None)
@given(conventions, st.integers(16, 2000), st.integers(16, 2000), st.data())
def test_model_to_pixels_to_model_round_trip(spec: str, width: int, height: int, data) -> None:
    if max(width, height) / min(width, height) > 150:
        return
    conv = Convention.parse(spec)
    frame_w, frame_h = conv.frame(width, height)
    if frame_w / width > 1.0 or frame_h / height > 1.0:
        return  # model frame finer than pixels: several model values map into one pixel
    xs = sorted(data.draw(st.lists(st.integers(0, frame_w), min_size=2, max_size=2, unique=True)))
    ys = sorted(data.draw(st.lists(st.integers(0, frame_h), min_size=2, max_size=2, unique=True)))
    box = (xs[0], ys[0], xs[1], ys[1])
    grounding = to_grounding(answer((box, [])), conv, width, height)
    back, _ = from_pixels(grounding.instances[0].box, [], conv, width, height)
    assert back == box


@pytest.mark.parametrize(
    ("size", "even", "up"),
    [
        ((140, 294), (140, 280), (140, 308)),
        ((140, 266), (140, 280), (140, 280)),
        ((42, 42), (56, 56), (56, 56)),
    ],
)
def test_smart_resize_rounding_modes(size, even, up) -> None:
    from refseg.grounding.coords import smart_resize

    h, w = size
    assert smart_resize(h, w, 28, 4 * 28 * 28, 64 * 28 * 28) == even
    assert smart_resize(h, w, 28, 4 * 28 * 28, 64 * 28 * 28, half_up=True) == up
