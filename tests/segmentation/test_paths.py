"""Path geometry: path data <-> polygons, exact rasterization, tracing with holes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refseg.paths import (
    MAX_VERTICES,
    PathError,
    clip_polygons,
    format_path,
    parse_path,
    rasterize,
    signed_area,
    trace,
)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# ---------------------------------------------------------------------------------------------
# Rasterization against hand-computed masks


def test_box_on_pixel_edges_is_exactly_those_pixels() -> None:
    for supersample in (1, 2, 4):
        mask = rasterize(parse_path("M 2 3 H 7 V 9 H 2 Z"), 10, 12, supersample=supersample)
        expected = np.zeros((12, 10), dtype=bool)
        expected[3:9, 2:7] = True
        np.testing.assert_array_equal(mask, expected)


def test_half_covered_pixels_follow_the_half_coverage_rule() -> None:
    # the right triangle below the diagonal of a 4x4 square: pixels strictly below the diagonal
    # are in; pixels the diagonal halves are in at exactly half coverage with 2x2 samples (2 of 4
    # samples lie inside), out at 1 sample (the centre lies on the edge, half-open rule aside)
    mask = rasterize(parse_path("M 0 0 L 4 4 L 0 4 Z"), 4, 4, supersample=2)
    below = np.tril(np.ones((4, 4), dtype=bool), k=-1)
    assert (mask & below).sum() == below.sum()
    assert mask.sum() in (6, 10)  # diagonal pixels all in or all out, never a ragged mix
    assert np.array_equal(np.diag(mask), np.repeat(np.diag(mask)[0], 4))


def test_fill_rules_on_holes_and_overlaps() -> None:
    outer = "M 0 0 H 10 V 10 H 0 Z"
    same_way = parse_path(outer + " M 3 3 H 7 V 7 H 3 Z")
    opposite = parse_path(outer + " M 3 3 V 7 H 7 V 3 Z")
    assert rasterize(same_way, 12, 12).sum() == 100  # nonzero: winding 2 inside, filled
    assert rasterize(opposite, 12, 12).sum() == 84  # nonzero: opposite ring is a hole
    assert rasterize(same_way, 12, 12, fill_rule="evenodd").sum() == 84
    assert rasterize(opposite, 12, 12, fill_rule="evenodd").sum() == 84
    overlap = parse_path("M 0 0 H 6 V 6 H 0 Z M 3 3 H 9 V 9 H 3 Z")
    assert rasterize(overlap, 10, 10).sum() == 36 + 36 - 9
    assert rasterize(overlap, 10, 10, fill_rule="evenodd").sum() == 36 + 36 - 18


def test_pentagram_centre_depends_on_the_rule() -> None:
    star = np.array(
        [
            [
                10 + 8 * math.cos(math.pi / 2 + k * 4 * math.pi / 5),
                10 - 8 * math.sin(math.pi / 2 + k * 4 * math.pi / 5),
            ]
            for k in range(5)
        ]
    )
    assert rasterize([star], 20, 20)[10, 10]
    assert not rasterize([star], 20, 20, fill_rule="evenodd")[10, 10]


def test_outside_parts_are_clipped() -> None:
    mask = rasterize(parse_path("M -1e5 -1e5 L 1e5 -1e5 L 1e5 1e5 Z"), 30, 30, supersample=1)
    # the half-plane above the main diagonal: pixel centres with x >= y (a centre exactly on a
    # left edge is inside, spans being half-open [left, right) like pixels)
    np.testing.assert_array_equal(mask, np.triu(np.ones((30, 30), dtype=bool), k=0))
    assert not rasterize(parse_path("M 40 40 H 50 V 50 Z"), 30, 30).any()


def test_clip_polygons_keeps_the_inside_part() -> None:
    (ring,) = clip_polygons(
        [np.array([[-5.0, -5.0], [5.0, -5.0], [5.0, 5.0], [-5.0, 5.0]])], 0, 0, 10, 10
    )
    assert abs(signed_area(ring)) == pytest.approx(25)


def test_clip_keeps_a_bow_tie_and_drops_flat_rings() -> None:
    # A symmetric self-intersecting ring has net signed area 0 but draws two triangles.
    bow_tie = np.array([[0.0, 0.0], [8.0, 8.0], [8.0, 0.0], [0.0, 8.0]])
    assert signed_area(bow_tie) == 0
    (ring,) = clip_polygons([bow_tie], 0, 0, 10, 10)
    mask = rasterize([ring], 10, 10)
    assert mask.sum() == pytest.approx(32, abs=4)  # two triangles of 16 px each
    assert mask[4, 1] and mask[4, 7] and not mask[1, 4] and not mask[7, 4]
    flat = np.array([[0.0, 0.0], [4.0, 4.0], [8.0, 8.0]])
    assert clip_polygons([flat], 0, 0, 10, 10) == []


def test_circle_area_is_right() -> None:
    mask = rasterize(parse_path("M 10 50 A 40 40 0 1 1 90 50 A 40 40 0 1 1 10 50 Z"), 100, 100)
    assert mask.sum() == pytest.approx(math.pi * 40**2, rel=0.02)


def test_too_complex_paths_are_refused_not_rasterized_for_ever() -> None:
    zigzag = np.array([[i * 0.01, (i % 2) * 1000.0] for i in range(100_000)])
    closed = np.concatenate([zigzag, [[1000.0, 1000.0], [0.0, 1000.0]]])
    with pytest.raises(PathError, match="too complex"):
        rasterize([closed], 1000, 1000)


# ---------------------------------------------------------------------------------------------
# Tracing


def test_trace_round_trip_is_exact_for_a_mask_with_a_hole() -> None:
    mask = np.zeros((50, 60), dtype=bool)
    mask[10:40, 5:50] = True
    mask[20:30, 20:30] = False
    mask[42:46, 52:58] = True  # a second part
    rings = trace(mask, None)
    assert len(rings) == 3
    areas = sorted(signed_area(r) for r in rings)
    assert areas[0] < 0 < areas[1]  # the hole runs the other way
    np.testing.assert_array_equal(rasterize(rings, 60, 50), mask)
    np.testing.assert_array_equal(rasterize(rings, 60, 50, fill_rule="evenodd"), mask)
    # integer path data loses nothing for pixel-aligned outlines
    assert format_path(rings).startswith("M 50 10 L 50 40 L 5 40 L 5 10 Z")
    np.testing.assert_array_equal(rasterize(parse_path(format_path(rings)), 60, 50), mask)


def test_trace_respects_the_vertex_budget_and_stays_close() -> None:
    yy, xx = np.mgrid[0:120, 0:120]
    disc = (xx - 60.5) ** 2 + (yy - 60.5) ** 2 < 45**2
    for k, floor in ((8, 0.9), (16, 0.97), (32, 0.985), (64, 0.985)):
        rings = trace(disc, k)
        assert sum(len(r) for r in rings) <= k
        assert _iou(rasterize(rings, 120, 120), disc) > floor
    assert trace(np.zeros((5, 5), dtype=bool), 16) == []


def test_staircase_round_trip() -> None:
    mask = np.zeros((12, 12), dtype=bool)
    for i in range(6):
        mask[2 + i, 2 : 3 + i] = True
    np.testing.assert_array_equal(rasterize(trace(mask, None), 12, 12), mask)


# ---------------------------------------------------------------------------------------------
# Path data


def test_format_then_parse() -> None:
    rings = [np.array([[0.0, 0.0], [10.5, 0.0], [10.0, 10.0]])]
    assert format_path(rings, decimals=1) == "M 0 0 L 10.5 0 L 10 10 Z"
    assert format_path(rings) == "M 0 0 L 10 0 L 10 10 Z"  # half to even
    np.testing.assert_allclose(parse_path(format_path(rings, decimals=1))[0], rings[0])


@pytest.mark.parametrize(
    "data",
    ["", "Z", "L 1 2", "M 1", "M 1 2 L", "M 1 2 X 3 4", "M 1 2 L 3 4 Z 5 6", "M 1e999 0 L 1 1 Z"],
)
def test_malformed_path_data(data: str) -> None:
    with pytest.raises(PathError):
        parse_path(data)


def test_vertex_bound() -> None:
    data = "M 0 0 " + "L 1 2 " * (MAX_VERTICES + 1)
    with pytest.raises(PathError, match=r"vertices|numbers"):
        parse_path(data)
    with pytest.raises(PathError):
        parse_path("M 0 0 C 1 1 2 2 3 3", max_vertices=4)  # a curve counts its flattened points
