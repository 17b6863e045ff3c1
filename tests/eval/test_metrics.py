"""Metric definitions: hand-computed cases, every no-target combination, and a property test
against the plain dense-numpy reference in ``dense_reference.py``."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refseg import masks
from refseg.errors import InputError
from refseg.eval.metrics import (
    METRIC_NAMES,
    aggregate,
    boundary,
    boundary_width,
    breakdowns,
    score_sample,
    target_group,
)

from .dense_reference import dense_aggregate, dense_score


def box_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> dict:
    """RLE of a rectangle covering rows y0..y1-1 and columns x0..x1-1."""
    dense = np.zeros((h, w), dtype=bool)
    dense[y0:y1, x0:x1] = True
    return masks.encode(dense)


SQUARE3 = box_mask(4, 4, 0, 3, 0, 3)  # 9 pixels in the top-left corner
SQUARE2 = box_mask(4, 4, 1, 3, 1, 3)  # 4 pixels inside SQUARE3


def test_boundary_width() -> None:
    assert boundary_width(480, 640) == 16  # diagonal 800
    assert boundary_width(480, 640, 0.05) == 40
    assert boundary_width(1, 1) == 1  # never below one pixel
    with pytest.raises(InputError):
        boundary_width(10, 10, 0.0)


def test_boundary_of_hand_drawn_masks() -> None:
    square = masks.decode(SQUARE3)
    # d = 1: only the centre pixel (1, 1) survives erosion (the image edge counts as background).
    expected = square.copy()
    expected[1, 1] = False
    assert np.array_equal(boundary(square, 1), expected)
    # A 2x2 square is all boundary; a one-pixel line too.
    assert np.array_equal(boundary(masks.decode(SQUARE2), 1), masks.decode(SQUARE2))
    full = np.ones((10, 10), dtype=bool)
    ring = boundary(full, 2)
    assert ring.sum() == 100 - 36 and not ring[2:8, 2:8].any()


def test_iou_and_boundary_iou_hand_computed() -> None:
    s = score_sample([SQUARE3], [SQUARE2], 4, 4)
    assert (s.inter, s.union, s.gt_area, s.pred_area) == (4, 9, 9, 4)
    assert s.iou == pytest.approx(4 / 9)
    # boundary(G) = 8 pixels (all but (1,1)); boundary(P) = P's 4 pixels, 3 of them in boundary(G)
    assert (s.b_inter, s.b_union) == (3, 9)
    assert s.biou == pytest.approx(1 / 3)


def test_boundary_iou_is_stricter_than_iou() -> None:
    """An inner square overlapping a full-image mask by 36 % touches none of its boundary."""
    full = box_mask(10, 10, 0, 10, 0, 10)
    inner = box_mask(10, 10, 2, 8, 2, 8)
    s = score_sample([full], [inner], 10, 10, boundary_ratio=0.15)  # d = round(2.12) = 2
    assert s.iou == pytest.approx(0.36)
    assert s.b_inter == 0 and s.b_union == 64 + 32 and s.biou == 0.0
    same = score_sample([full], [full], 10, 10, boundary_ratio=0.15)
    assert same.biou == 1.0 and same.b_inter == same.b_union == 64


def test_multi_target_unions() -> None:
    left = box_mask(4, 4, 0, 4, 0, 1)
    right = box_mask(4, 4, 0, 4, 3, 4)
    s = score_sample([left, right], [left, box_mask(4, 4, 0, 2, 3, 4)], 4, 4)
    assert (s.gt_area, s.pred_area, s.inter, s.union) == (8, 6, 6, 8)
    # overlapping predicted instances are counted once
    t = score_sample([left], [left, left], 4, 4)
    assert (t.pred_area, t.iou) == (4, 1.0)


EMPTY = []
# (gt, prediction (None = parse error / failure)) -> (iou, inter, union, pred_empty, failed)
NO_TARGET_TABLE = [
    pytest.param(EMPTY, EMPTY, (1.0, 0, 0, True, False), id="gt-empty/pred-empty"),
    pytest.param(EMPTY, [SQUARE2], (0.0, 0, 4, False, False), id="gt-empty/pred-full"),
    pytest.param(EMPTY, None, (0.0, 0, 0, False, True), id="gt-empty/parse-error"),
    pytest.param([SQUARE3], EMPTY, (0.0, 0, 9, True, False), id="gt-full/pred-empty"),
    pytest.param([SQUARE3], [SQUARE2], (4 / 9, 4, 9, False, False), id="gt-full/pred-full"),
    pytest.param([SQUARE3], None, (0.0, 0, 9, False, True), id="gt-full/parse-error"),
]


@pytest.mark.parametrize(("gt", "pred", "expected"), NO_TARGET_TABLE)
def test_every_no_target_combination(gt, pred, expected) -> None:
    s = score_sample(gt, pred, 4, 4)
    iou, inter, union, pred_empty, failed = expected
    assert s.iou == pytest.approx(iou)
    assert (s.inter, s.union, s.pred_empty, s.failed) == (inter, union, pred_empty, failed)
    assert s.gt_empty == (not gt)
    # The boundary IoU follows the same conventions.
    assert s.biou == (1.0 if iou == 1.0 else s.biou)
    if iou == 0.0:
        assert s.biou == 0.0
    # a prediction whose instances cover no pixel is an empty prediction
    if pred == EMPTY:
        assert score_sample(gt, [masks.empty(4, 4)], 4, 4) == s


def test_aggregate_hand_computed() -> None:
    records = [
        score_sample([SQUARE3], [SQUARE3], 4, 4),  # a: IoU 1
        score_sample([SQUARE3], [SQUARE2], 4, 4),  # b: IoU 4/9
        score_sample([SQUARE3], [], 4, 4),  # c: target answered "no target"
        score_sample([SQUARE3], None, 4, 4),  # d: parse error on a target sample
        score_sample([], [], 4, 4),  # e: correct "no target"
        score_sample([], [SQUARE2], 4, 4),  # f: false positive on a no-target sample
        score_sample([], None, 4, 4),  # g: parse error on a no-target sample
    ]
    m = aggregate(r.to_record() for r in records)
    assert m["gIoU"] == pytest.approx((2 + 4 / 9) / 7)
    assert m["cIoU"] == pytest.approx(13 / 40)
    assert m["Pr@0.5"] == m["Pr@0.9"] == pytest.approx(1 / 4)
    assert m["N-acc"] == pytest.approx(1 / 3)
    assert m["T-acc"] == pytest.approx(2 / 4)
    assert (m["n"], m["n_target"], m["n_no_target"], m["n_failed"]) == (7, 4, 3, 2)
    assert set(METRIC_NAMES) <= set(m)


def test_aggregate_edge_cases() -> None:
    assert aggregate([])["gIoU"] is None
    only_empty = aggregate([score_sample([], [], 4, 4).to_record()] * 3)
    assert only_empty["cIoU"] == 1.0 and only_empty["N-acc"] == 1.0
    assert only_empty["T-acc"] is None and only_empty["Pr@0.5"] is None
    targets = aggregate([score_sample([SQUARE3], [SQUARE3], 4, 4).to_record()])
    assert targets["N-acc"] is None


def test_aggregate_is_order_independent_and_survives_json() -> None:
    rng = np.random.default_rng(1)
    records = []
    for _ in range(300):
        gt = [masks.encode(rng.random((12, 9)) < 0.4)] if rng.random() < 0.8 else []
        pred = [masks.encode(rng.random((12, 9)) < 0.4)] if rng.random() < 0.8 else []
        records.append(score_sample(gt, None if rng.random() < 0.1 else pred, 12, 9).to_record())
    reference = aggregate(records)
    shuffled = [json.loads(json.dumps(r)) for r in records]
    random.Random(0).shuffle(shuffled)
    assert aggregate(shuffled) == reference  # bit-identical, not approximately equal


def test_size_mismatch_is_refused() -> None:
    with pytest.raises(InputError, match="does not match"):
        score_sample([SQUARE3], [box_mask(5, 4, 0, 1, 0, 1)], 4, 4)


def test_breakdowns() -> None:
    def record(gt, pred, **meta):
        r = score_sample(gt, pred, 4, 4).to_record()
        r.update(meta=meta, n_gt=len(gt))
        return r

    records = [
        record([SQUARE3], [SQUARE3], difficulty="easy"),
        record([SQUARE3], [], difficulty="hard"),
        record([SQUARE3, SQUARE2], [SQUARE3], difficulty="hard"),
        record([], [], difficulty="hard"),
    ]
    out = breakdowns(records)
    assert out["difficulty"]["easy"]["gIoU"] == 1.0
    assert out["difficulty"]["hard"]["n"] == 3
    assert set(out["targets"]) == {"none", "one", "multiple"}
    assert "kind" not in out
    # meta.n_objects counts the scene's objects (RefShapes), not the referred ones
    assert target_group({"meta": {"n_objects": 3}, "n_gt": 1}) == "one"
    scene = breakdowns(
        [record([SQUARE3], [SQUARE3], n_objects=1), record([SQUARE3], [], n_objects=4)]
    )
    assert scene["scene_objects"]["one-object scene"]["gIoU"] == 1.0
    assert scene["scene_objects"]["several objects"]["gIoU"] == 0.0
    assert "targets" not in scene  # both refer to one object


# --- property test against the dense reference ---------------------------------------------


@st.composite
def mask_sets(draw, height: int, width: int, max_masks: int = 3) -> list[dict]:
    """A few masks, each the union of random rectangles (blobs with real interiors)."""
    out = []
    for _ in range(draw(st.integers(0, max_masks))):
        dense = np.zeros((height, width), dtype=bool)
        for _ in range(draw(st.integers(1, 3))):
            y0 = draw(st.integers(0, height - 1))
            x0 = draw(st.integers(0, width - 1))
            y1 = draw(st.integers(y0 + 1, height))
            x1 = draw(st.integers(x0 + 1, width))
            dense[y0:y1, x0:x1] = True
        if draw(st.booleans()):  # punch a hole or speckle
            dense[draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))] ^= True
        out.append(masks.encode(dense))
    return out


@st.composite
def samples(draw):
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    gt = draw(mask_sets(height, width))
    pred = None if draw(st.integers(0, 9)) == 0 else draw(mask_sets(height, width))
    ratio = draw(st.sampled_from([0.02, 0.05, 0.1, 0.25]))
    return gt, pred, height, width, ratio


@settings(max_examples=300, deadline=None)
@given(st.lists(samples(), min_size=1, max_size=8))
def test_matches_dense_reference(batch) -> None:
    fast, slow = [], []
    for gt, pred, height, width, ratio in batch:
        fast.append(score_sample(gt, pred, height, width, boundary_ratio=ratio).to_record())
        slow.append(dense_score(gt, pred, height, width, ratio))
        assert fast[-1] == slow[-1]
    got, want = aggregate(fast), dense_aggregate(slow)
    for name in METRIC_NAMES:
        if want[name] is None:
            assert got[name] is None
        else:
            assert got[name] == pytest.approx(want[name], abs=1e-12)


def _lisa_iou(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray) -> float:
    """LISA's per-sample foreground IoU, from its formulas: the target is 1 on G, 255 on the
    ignore region, 0 elsewhere; predicted pixels on ignore are set to 255 too; intersection
    and union count class 1 only; an empty union scores 1."""
    target = np.where(ignore, 255, gt.astype(np.uint8))
    output = np.where(target == 255, 255, pred.astype(np.uint8))
    inter = np.count_nonzero((output == 1) & (target == 1))
    union = np.count_nonzero(output == 1) + np.count_nonzero(target == 1) - inter
    return 1.0 if union == 0 else inter / union


def _dense(h: int, w: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    out = np.zeros((h, w), bool)
    for y0, y1, x0, x1 in boxes:
        out[y0:y1, x0:x1] = True
    return out


@pytest.mark.parametrize(
    ("gt", "pred", "ignore"),
    [
        # a prediction spilling onto the ignore band costs nothing there
        ((2, 8, 2, 8), (2, 8, 2, 10), (2, 8, 8, 10)),
        # an ignore region inside the target's box: neither missed nor found there
        ((0, 10, 0, 10), (0, 10, 0, 7), (0, 10, 5, 10)),
        # a target that is all ignore, an empty prediction: both empty, IoU 1
        (None, None, (0, 5, 0, 5)),
        # a prediction only on the ignore region of a target-less sample: IoU 1
        (None, (1, 3, 1, 3), (0, 5, 0, 5)),
        # ignore elsewhere: plain IoU
        ((0, 4, 0, 4), (2, 6, 2, 6), (8, 10, 8, 10)),
    ],
)
def test_ignore_regions_score_as_lisa(gt, pred, ignore) -> None:
    h = w = 10
    g = _dense(h, w, *([gt] if gt else []))
    p = _dense(h, w, *([pred] if pred else []))
    ign = _dense(h, w, ignore)
    g &= ~ign  # readers keep targets and ignore apart (a later target shape wins)
    score = score_sample(
        [masks.encode(g)] if g.any() else [],
        [masks.encode(p)] if p.any() else [],
        h,
        w,
        ignore=masks.encode(ign),
    )
    assert score.iou == pytest.approx(_lisa_iou(g, p, ign))
    plain = score_sample(
        [masks.encode(g)] if g.any() else [], [masks.encode(p)] if p.any() else [], h, w
    )
    if (p & ign).any():
        assert plain.iou < score.iou  # without it the predicted ignore pixels counted against


def test_an_ignore_mask_of_another_size_is_refused() -> None:
    with pytest.raises(InputError, match="ignore mask"):
        score_sample([SQUARE3], [SQUARE2], 4, 4, ignore=box_mask(5, 5, 0, 1, 0, 1))
