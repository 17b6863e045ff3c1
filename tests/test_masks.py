import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from refseg import masks
from refseg.errors import InputError


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


# --------------------------------------------------------------------------------------------
# Validation of outside RLEs and polygons (pycocotools trusts them: hang, heap corruption,
# segfault otherwise; the hostile suite runs those in child processes).


def runs_to_dense(runs: list[int], height: int, width: int) -> np.ndarray:
    """Column-major run lengths (background first) drawn with numpy: the reference decoder."""
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return flat.reshape(width, height).T


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ({"size": [427, 640], "counts": [0, 10]}, "add up to 10 pixels"),
        ({"size": [2, 2], "counts": [5, -1]}, "negative"),
        ({"size": [2, 2], "counts": 4}, "not int"),
        ({"size": [2, 2], "counts": [1.5, 2.5]}, "integers"),
        ({"size": [2, 2], "counts": [True, 3]}, "integers"),
        ({"size": [2, 2], "counts": []}, "empty"),
        ({"size": [2, 2], "counts": "0P"}, "middle of a value"),
        ({"size": [2, 2], "counts": "~~"}, "alphabet"),
        ({"size": [2, 2], "counts": "\u00e9"}, "non-ASCII"),
        ({"size": [2, 2], "counts": "1" + "o" * 7 + "0"}, "too large"),
        ({"size": [0, 4], "counts": [0]}, "positive"),
        ({"size": [2.0, 2], "counts": [4]}, "two integers"),
        ({"size": [10**6, 10**6], "counts": [10**12]}, "over the limit"),
        ({"size": [2], "counts": [4]}, "size must be"),
        ({"counts": [4]}, "'size' and 'counts'"),
        ([4], "'size' and 'counts'"),
    ],
)
def test_bad_rles_are_refused_in_one_line(rle, message):
    with pytest.raises(InputError, match=message) as info:
        masks.normalize(rle)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError):
        masks.decode(rle)


def test_pixel_limit_follows_refseg_max_pixels(monkeypatch):
    rle = {"size": [10, 10], "counts": [100]}
    assert masks.normalize(rle)["size"] == [10, 10]
    monkeypatch.setenv("REFSEG_MAX_PIXELS", "99")
    with pytest.raises(InputError, match="REFSEG_MAX_PIXELS"):
        masks.normalize(rle)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 9),
    st.lists(st.integers(0, 81), min_size=0, max_size=12),
    st.data(),
)
def test_string_decoder_agrees_with_pycocotools(height, width, cuts, data):
    """The numpy decoder of compressed counts reads what pycocotools writes, exactly."""
    total = height * width
    bounds = sorted(min(c, total) for c in cuts)
    runs = np.diff([0, *bounds, total]).tolist()
    dense = runs_to_dense(runs, height, width)
    text = masks.encode(dense)["counts"]
    decoded = masks._string_runs(text.encode())
    assert int(decoded.sum()) == total
    np.testing.assert_array_equal(runs_to_dense(decoded.tolist(), height, width), dense)
    # Zero-length runs in the middle (legal in the format, fatal to pycocotools' merge) are
    # made canonical, and every operation then agrees with numpy.
    rle = masks.normalize({"size": [height, width], "counts": runs})
    other = data.draw(arrays(np.bool_, (height, width)))
    np.testing.assert_array_equal(masks.decode(rle), dense)
    assert masks.area([rle])[0] == dense.sum()
    union = masks.union([rle, masks.encode(other)], height, width)
    np.testing.assert_array_equal(masks.decode(union), dense | other)
    assert masks.intersection_area(rle, masks.encode(other)) == (dense & other).sum()


def test_zero_runs_are_merged_away():
    rle = masks.normalize({"size": [1, 4], "counts": [1, 0, 0, 0, 0, 3, 0]})
    assert masks._string_runs(rle["counts"].encode()).tolist() == [1, 3]


def test_masks_of_different_sizes_are_not_merged():
    with pytest.raises(InputError, match="different sizes"):
        masks.union([masks.empty(2, 3), masks.empty(3, 2)], 2, 3)
    with pytest.raises(InputError, match="different sizes"):
        masks.iou(masks.empty(2, 3), masks.empty(3, 2))


@pytest.mark.parametrize(
    ("polygon", "message"),
    [
        ([0, 0, float("nan"), 0, 5, 5], "finite"),
        ([0, 0, float("inf"), 0, 5, 5], "finite"),
        ([0, 0, 1, 0, 5], "odd"),
        ([0, 0, "1", 0, 5, 5], "numbers"),
        ([0, 0, True, 0, 5, 5], "numbers"),
        ([0, 0, 10**400, 0, 5, 5], "numbers"),
    ],
)
def test_bad_polygons_are_refused(polygon, message):
    with pytest.raises(InputError, match=message):
        masks.from_polygons([polygon], 427, 640)


def test_polygon_bounds():
    many = [float(v) for v in range(2 * (masks.MAX_POLYGON_VERTICES + 1))]
    with pytest.raises(InputError, match="vertices"):
        masks.from_polygons([many], 50, 50)
    # 40,000 vertices bouncing across a 500-pixel image: ~20 million pixels of outline.
    zigzag = [v for i in range(20_000) for v in (0.0, (i % 2) * 499.0, 499.0, (i % 2) * 499.0)]
    with pytest.raises(InputError, match="outlines total"):
        masks.from_polygons([zigzag], 500, 500)


def test_far_vertices_are_clipped_without_changing_the_image_part():
    # The triangle (0,0) (1e9,0) (1e9,1e9) covers the image's upper-right half (x >= y).
    rle = masks.from_polygons([[0, 0, 1e9, 0, 1e9, 1e9]], 427, 640)
    rows, cols = np.mgrid[0:427, 0:640]
    expected = cols >= rows
    got = masks.decode(rle)
    assert (got != expected).mean() < 0.005


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(-400, 460), st.floats(-400, 440)), min_size=3, max_size=12))
def test_clipping_matches_unclipped_raster(points):
    """Far-out vertices (that pycocotools can still draw) give the same mask once clipped."""
    flat = [v for p in points for v in p]
    reference = mask_utils.frPyObjects([flat], 40, 60)[0]
    clipped = masks.from_polygons([flat], 40, 60)
    a = mask_utils.decode(reference).astype(bool)
    b = masks.decode(clipped)
    # pycocotools rounds vertices to 1/5 pixel, so a vertex moved onto the clip line can move its
    # edge by up to 0.1 pixel inside the image: differences may only touch the mask's outline.
    # Either mask's outline counts (a sliver may exist in one raster only), and so does the
    # image border: a polygon cut by the border has its edge there (hence a background border
    # for erode, not OpenCV's default foreground one).
    kernel = np.ones((3, 3), np.uint8)

    def outline(mask: np.ndarray) -> np.ndarray:
        dense = mask.astype(np.uint8)
        eroded = cv2.erode(dense, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        return cv2.dilate(dense, kernel) != eroded

    assert not ((a != b) & ~(outline(a) | outline(b))).any()


def test_hard_ceiling_whatever_the_environment(monkeypatch):
    """Past 2**29 pixels pycocotools' string format cannot hold the run lengths."""
    monkeypatch.setenv("REFSEG_MAX_PIXELS", str(10**12))
    with pytest.raises(InputError, match="the most pycocotools holds"):
        masks.check_size(2**15, 2**15)
    assert masks.check_size(2**14, 2**15) == (2**14, 2**15)


def test_geometry_examples_hold() -> None:
    """The ``>>>`` examples in :mod:`refseg.masks` are part of its documentation: they run."""
    import doctest

    import refseg.masks

    failed, tried = doctest.testmod(refseg.masks, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried >= 3 and failed == 0
