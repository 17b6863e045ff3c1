"""Box/point rewards: Hungarian-matched accuracy against the GT, and the no-target decision.

* ``accuracy`` matches predicted to ground-truth instances with the Hungarian algorithm and
  normalises by ``max(#pred, #gt)``, so both an extra and a missing instance cost.
* ``no_target`` rewards the right abstention decision (gRefCOCO-style empty targets).

The scoring cores (:func:`match_score`, :func:`no_target_score`) take a
:class:`~refseg.grounding.base.Grounding` in image pixels, so they are testable without a model.

>>> cols = {"width": [100, 100], "height": [100, 100], "gt_boxes": [[[10, 10, 50, 50]], []]}
>>> hit = '<answer>[{"bbox_2d": [100, 100, 500, 500], "point_2d": [300, 300]}]</answer>'
>>> accuracy_reward(None, [hit, hit], **cols)
[1.0, 0.0]
>>> no_target_reward(None, ["<answer>[]</answer>"] * 2, **cols)
[0.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from refseg.grounding.base import GroundedInstance, Grounding
from refseg.train.rewards.common import RewardCache, _columns, _gt_masks, _log, _read_all

#: Default thresholds of the accuracy reward (per matched pair, each criterion counts 1/3).
IOU_THRESHOLD = 0.5
#: Mean absolute corner error as a fraction of the image side (0.02 = 20 units on the 0-1000 grid).
L1_THRESHOLD = 0.02


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes (0 for degenerate ones)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def box_l1(a: Sequence[float], b: Sequence[float], width: int, height: int) -> float:
    """Mean absolute corner difference as a fraction of the image side (x by width, y by height)."""
    scale = (width, height, width, height)
    return float(sum(abs(a[i] - b[i]) / max(1, scale[i]) for i in range(4)) / 4)


def points_inside(points: Sequence[Sequence[float]], mask: np.ndarray) -> float:
    """Fraction of ``points`` (pixel ``x, y``) that fall on foreground of ``mask``; 0 if none."""
    if not points:
        return 0.0
    h, w = mask.shape
    hits = 0
    for x, y in points:
        col, row = math.floor(x), math.floor(y)
        if 0 <= row < h and 0 <= col < w and mask[row, col]:
            hits += 1
    return hits / len(points)


def pair_score(
    pred: GroundedInstance,
    gt_box: Sequence[float],
    gt_mask: np.ndarray | None,
    width: int,
    height: int,
    *,
    iou_threshold: float = IOU_THRESHOLD,
    l1_threshold: float = L1_THRESHOLD,
) -> float:
    """Score of one predicted instance against one ground-truth object, in ``[0, 1]``.

    Three criteria count a third each: box IoU above ``iou_threshold``, box L1 below
    ``l1_threshold``, and the fraction of predicted points inside the GT mask. Thresholded terms
    (rather than raw IoU) follow Seg-Zero: they give GRPO's group-relative advantage clear steps.
    Without a GT mask the point term uses the GT box.
    """
    iou_hit = 1.0 if box_iou(pred.box, gt_box) > iou_threshold else 0.0
    l1_hit = 1.0 if box_l1(pred.box, gt_box, width, height) < l1_threshold else 0.0
    if gt_mask is not None:
        point_hit = points_inside(pred.points, gt_mask)
    else:
        x1, y1, x2, y2 = gt_box
        pts = pred.points
        point_hit = (
            sum(1 for x, y in pts if x1 <= x <= x2 and y1 <= y <= y2) / len(pts) if pts else 0.0
        )
    return (iou_hit + l1_hit + point_hit) / 3.0


def match_score(
    grounding: Grounding,
    gt_boxes: Sequence[Sequence[float]],
    gt_masks: Sequence[np.ndarray | None],
    width: int,
    height: int,
    *,
    iou_threshold: float = IOU_THRESHOLD,
    l1_threshold: float = L1_THRESHOLD,
) -> float:
    """Hungarian-matched accuracy of a grounding against the ground truth, in ``[0, 1]``.

    Predictions and GT objects are matched one-to-one maximising the summed :func:`pair_score`
    (box IoU breaks ties so near misses still pair sensibly); the sum is divided by
    ``max(#pred, #gt)``, so an extra instance costs as much as a missing one. On a no-target
    sample (no GT) the score is 1 for an explicit empty answer and 0 otherwise; an unreadable
    answer scores 0 everywhere.
    """
    if grounding.parse_error:
        return 0.0
    preds = grounding.instances
    if not gt_boxes:
        return 1.0 if (grounding.no_target or not preds) and not grounding.parse_error else 0.0
    if not preds:
        return 0.0
    from scipy.optimize import linear_sum_assignment

    scores = np.zeros((len(preds), len(gt_boxes)))
    ious = np.zeros_like(scores)
    for i, pred in enumerate(preds):
        for j, gt_box in enumerate(gt_boxes):
            mask = gt_masks[j] if j < len(gt_masks) else None
            scores[i, j] = pair_score(
                pred,
                gt_box,
                mask,
                width,
                height,
                iou_threshold=iou_threshold,
                l1_threshold=l1_threshold,
            )
            ious[i, j] = box_iou(pred.box, gt_box)
    rows, cols = linear_sum_assignment(-(scores + 1e-3 * ious))
    return float(scores[rows, cols].sum() / max(len(preds), len(gt_boxes)))


def no_target_score(grounding: Grounding, is_no_target: bool) -> float:
    """Was the abstention decision right? Unreadable answers are wrong either way."""
    if grounding.parse_error:
        return 0.0
    answered_empty = grounding.no_target or not grounding.instances
    return 1.0 if answered_empty == bool(is_no_target) else 0.0


def accuracy_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    iou_threshold: float = IOU_THRESHOLD,
    l1_threshold: float = L1_THRESHOLD,
    cache: RewardCache | None = None,
    **kwargs: Any,
) -> list[float]:
    """Hungarian-matched :func:`match_score` (columns ``width``, ``height``, ``gt_boxes``,
    optional ``gt_masks``). Logs ``no_target_accuracy`` over the batch's no-target rows."""
    n = len(completions)
    reads = _read_all(completions, kwargs, convention, cache)
    boxes = _columns(n, "gt_boxes", kwargs.get("gt_boxes"))
    mask_col = kwargs.get("gt_masks")
    mask_col = _columns(n, "gt_masks", mask_col) if mask_col is not None else [None] * n
    scores = []
    for r, w, h, gt_b, gt_m in zip(reads, kwargs["width"], kwargs["height"], boxes, mask_col):
        decoded = _gt_masks(gt_m, int(h), int(w)) if gt_m else []
        scores.append(
            match_score(
                r.grounding,
                list(gt_b or []),
                decoded,
                int(w),
                int(h),
                iou_threshold=iou_threshold,
                l1_threshold=l1_threshold,
            )
        )
    empty = [s for s, b in zip(scores, boxes) if not b]
    if empty:
        _log(kwargs, "no_target_accuracy", sum(empty) / len(empty))
    return scores


def no_target_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    cache: RewardCache | None = None,
    **kwargs: Any,
) -> list[float]:
    """:func:`no_target_score`: a row is a no-target sample when its ``gt_boxes`` is empty."""
    n = len(completions)
    reads = _read_all(completions, kwargs, convention, cache)
    boxes = _columns(n, "gt_boxes", kwargs.get("gt_boxes"))
    return [no_target_score(r.grounding, not b) for r, b in zip(reads, boxes)]
