"""Box/point accuracy and no-target rewards (:mod:`refseg.train.rewards.boxes`)."""

from __future__ import annotations

import numpy as np
import pytest

from refseg import masks
from refseg.train import rewards as R
from tests.train.rewards.helpers import GT_A, GT_B, H, W, answer, columns, inst


def test_accuracy_perfect_and_order_free():
    cols = columns([[GT_A, GT_B]] * 2)
    texts = [answer([inst(GT_A), inst(GT_B)]), answer([inst(GT_B), inst(GT_A)])]
    assert R.accuracy_reward(None, texts, **cols) == [1.0, 1.0]


def test_accuracy_extra_and_missing_both_cost():
    one_gt = columns([[GT_A]])
    two_gt = columns([[GT_A, GT_B]])
    extra = R.accuracy_reward(None, [answer([inst(GT_A), inst(GT_B)])], **one_gt)
    missing = R.accuracy_reward(None, [answer([inst(GT_A)])], **two_gt)
    assert extra == [0.5]
    assert missing == [0.5]


def test_accuracy_criteria_each_count_a_third():
    cols = columns([[GT_A]])
    # point outside the GT mask, box exact
    off_point = R.accuracy_reward(None, [answer([inst(GT_A, point=(21, 21))])], **cols)
    inside = R.accuracy_reward(None, [answer([inst(GT_A, point=(40, 40))])], **cols)
    assert inside == [1.0]
    # (21, 21) is inside the mask; a point in the box corner but outside a smaller mask:
    ring = np.zeros((H, W), dtype=bool)
    ring[20:60, 20:60] = True
    ring[30:50, 30:50] = False
    ring_cols = dict(cols, gt_masks=[[masks.encode(ring)["counts"]]])
    hole = R.accuracy_reward(None, [answer([inst(GT_A, point=(40, 40))])], **ring_cols)
    assert hole == [pytest.approx(2 / 3)]
    assert off_point == [1.0]
    # box shifted: IoU still > 0.5 but L1 too large
    shifted = (26, 26, 66, 66)
    s = R.accuracy_reward(None, [answer([inst(shifted, point=(40, 40))])], **cols)
    assert s == [pytest.approx(2 / 3)]
    # box far away: nothing but nothing
    far = R.accuracy_reward(None, [answer([inst(GT_B)])], **cols)
    assert far == [0.0]


def test_accuracy_no_target_cases_and_metric():
    logged = {}
    cols = columns([[], [], [GT_A]])
    texts = [answer([]), answer([inst(GT_A)]), answer([])]
    out = R.accuracy_reward(None, texts, log_metric=logged.__setitem__, **cols)
    assert out == [1.0, 0.0, 0.0]
    assert logged["no_target_accuracy"] == 0.5


def test_accuracy_unreadable_is_zero_even_on_no_target():
    cols = columns([[], [GT_A]])
    assert R.accuracy_reward(None, ["garbage", "<answer>[</answer>"], **cols) == [0.0, 0.0]


def test_accuracy_without_masks_uses_the_box_for_points():
    cols = columns([[GT_A]])
    del cols["gt_masks"]
    assert R.accuracy_reward(None, [answer([inst(GT_A)])], **cols) == [1.0]


def test_hungarian_beats_greedy():
    # Greedy (first prediction takes its best GT) would pair the wide box with A and leave B
    # unmatched; the optimal assignment scores both.
    a, b = (20, 20, 60, 60), (50, 20, 90, 60)
    wide = (20, 20, 75, 60)  # IoU with a 0.73, with b 0.45
    cols = columns([[a, b]])
    text = answer([inst(wide, point=(55, 40)), inst(a, point=(30, 30))])
    score = R.accuracy_reward(None, [text], **cols)[0]
    # wide -> b (point inside b, box L1 and IoU fail) and a -> a (perfect): (1/3 + 1) / 2
    assert score == pytest.approx((1 / 3 + 1) / 2)


def test_no_target_reward():
    cols = columns([[], [], [GT_A], [GT_A]])
    texts = [answer([]), answer([inst(GT_A)]), answer([]), answer([inst(GT_B)])]
    assert R.no_target_reward(None, texts, **cols) == [1.0, 0.0, 0.0, 1.0]
