import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from refseg import masks


def random_mask(rng: np.random.Generator, h: int = 37, w: int = 53) -> np.ndarray:
    return rng.random((h, w)) > 0.6


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_encode_decode_round_trip(mask):
    rle = masks.encode(mask)
    assert isinstance(rle["counts"], str)
    assert rle["size"] == list(mask.shape)
    np.testing.assert_array_equal(masks.decode(rle), mask)
    assert masks.area([rle])[0] == mask.sum()


def test_area_chunks_past_255_rles():
    rng = np.random.default_rng(0)
    dense = [random_mask(rng) for _ in range(600)]
    rles = [masks.encode(m) for m in dense]
    np.testing.assert_array_equal(masks.area(rles), [m.sum() for m in dense])


def test_union_intersection_iou_match_dense():
    rng = np.random.default_rng(1)
    a, b = random_mask(rng), random_mask(rng)
    ra, rb = masks.encode(a), masks.encode(b)
    np.testing.assert_array_equal(masks.decode(masks.union([ra, rb], *a.shape)), a | b)
    assert masks.intersection_area(ra, rb) == (a & b).sum()
    assert masks.iou(ra, rb) == pytest.approx((a & b).sum() / (a | b).sum())
    empty = masks.empty(*a.shape)
    assert masks.iou(empty, empty) == 1.0
    assert masks.iou(empty, ra) == 0.0
    assert masks.decode(masks.union([], 4, 5)).shape == (4, 5)


def test_uncompressed_counts_are_accepted():
    mask = np.zeros((4, 3), bool)
    mask[1:3, 1] = True
    # column-major runs: 5 zeros, 2 ones, 5 zeros
    rle = {"size": [4, 3], "counts": [5, 2, 5]}
    np.testing.assert_array_equal(masks.decode(rle), mask)
    assert masks.normalize(rle) == masks.encode(mask)


def test_polygons_round_trip_a_rectangle():
    mask = np.zeros((50, 60), bool)
    mask[10:30, 15:45] = True
    polygons = masks.to_polygons(mask)
    assert len(polygons) == 1
    back = masks.decode(masks.from_polygons(polygons, 50, 60))
    assert (back & mask).sum() / (back | mask).sum() > 0.9
    assert masks.decode(masks.from_polygons([], 5, 5)).sum() == 0


def test_png_round_trip_and_label_png():
    rng = np.random.default_rng(2)
    mask = random_mask(rng)
    np.testing.assert_array_equal(masks.from_png(masks.to_png(mask)), mask)
    np.testing.assert_array_equal(masks.from_png(masks.to_png(masks.encode(mask))), mask)
    other = ~mask
    labels = masks.from_png(masks.label_png([mask, other], *mask.shape))
    assert labels.all()


def test_to_bbox():
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:25] = True
    assert masks.to_bbox(masks.encode(mask)) == [10.0, 5.0, 25.0, 9.0]
    assert masks.to_bbox(masks.empty(3, 3)) is None
