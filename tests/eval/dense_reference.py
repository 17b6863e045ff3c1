"""A plain dense-numpy implementation of the metric definitions in :mod:`refseg.eval.metrics`.

Deliberately independent of the fast path: masks are decoded to full-size arrays, erosion is a
summed-area-table window test instead of OpenCV, and counts are numpy sums. The tests and
``benchmarks/bench_metrics.py`` compare the fast implementation against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from refseg import masks


def erode(mask: np.ndarray, d: int) -> np.ndarray:
    """Erosion by a (2d+1)-square with background outside the array: a pixel survives iff every
    pixel of its window is foreground (window sum == window size)."""
    height, width = mask.shape
    padded = np.zeros((height + 2 * d, width + 2 * d), dtype=np.int32)
    padded[d : d + height, d : d + width] = mask
    table = np.zeros((height + 2 * d + 1, width + 2 * d + 1), dtype=np.int32)
    table[1:, 1:] = padded.cumsum(0).cumsum(1)
    k = 2 * d + 1
    window = table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]
    return window == k * k


def dense_score(
    gt_masks: Sequence[dict],
    pred_masks: Sequence[dict] | None,
    height: int,
    width: int,
    ratio: float = 0.02,
) -> dict:
    """The :class:`~refseg.eval.metrics.SampleScore` fields, computed densely. A sample has a
    target when it lists a mask, whatever its pixels."""
    d = max(1, round(ratio * math.hypot(height, width)))
    has_target = bool(gt_masks)
    g = np.zeros((height, width), dtype=bool)
    for rle in gt_masks:
        g |= masks.decode(rle)
    gb = g & ~erode(g, d)
    if pred_masks is None:
        gt_area = int(g.sum())
        return dict(
            iou=0.0, biou=0.0, inter=0, union=gt_area, gt_area=gt_area, pred_area=0, b_inter=0,
            b_union=int(gb.sum()), gt_empty=not has_target, pred_empty=False, failed=True,
        )  # fmt: skip
    p = np.zeros((height, width), dtype=bool)
    for rle in pred_masks:
        p |= masks.decode(rle)
    pb = p & ~erode(p, d)
    if not has_target and not p.any():  # a correct "no target"
        return dict(
            iou=1.0, biou=1.0, inter=0, union=0, gt_area=int(g.sum()), pred_area=0, b_inter=0,
            b_union=0, gt_empty=True, pred_empty=True, failed=False,
        )  # fmt: skip
    inter, union = int((g & p).sum()), int((g | p).sum())
    b_inter, b_union = int((gb & pb).sum()), int((gb | pb).sum())
    if not has_target:  # an answer on a no-target sample finds nothing
        inter = b_inter = 0
    return dict(
        iou=inter / union if union else 0.0,
        biou=b_inter / b_union if b_union else 0.0,
        inter=inter, union=union, gt_area=int(g.sum()), pred_area=int(p.sum()),
        b_inter=b_inter, b_union=b_union, gt_empty=not has_target, pred_empty=not p.any(),
        failed=False,
    )  # fmt: skip


def dense_aggregate(scores: Sequence[dict], thresholds=(0.5, 0.6, 0.7, 0.8, 0.9)) -> dict:
    """Set-level metrics from dense scores, written out directly from the definitions."""
    n = len(scores)
    target = [s for s in scores if not s["gt_empty"]]
    no_target = [s for s in scores if s["gt_empty"]]
    inter, union = sum(s["inter"] for s in scores), sum(s["union"] for s in scores)
    out = {
        "gIoU": float(np.mean([s["iou"] for s in scores])),
        "cIoU": inter / union if union else 1.0,
        "mBIoU": float(np.mean([s["biou"] for s in scores])),
    }
    for t in thresholds:
        out[f"Pr@{t:g}"] = sum(s["iou"] >= t for s in target) / len(target) if target else None
    ok_empty = [s for s in no_target if not s["failed"] and s["pred_empty"]]
    ok_full = [s for s in target if not s["failed"] and not s["pred_empty"]]
    out["N-acc"] = len(ok_empty) / len(no_target) if no_target else None
    out["T-acc"] = len(ok_full) / len(target) if target else None
    out["n"] = n
    return out
