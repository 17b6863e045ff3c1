"""What a score threshold buys: curves, instance precision-recall and calibration from records.

A user who thresholds instance scores (``--min-score``) trades recall for precision and, on
referring data, "no target" accuracy (N-acc) against target accuracy (T-acc) and gIoU. These
functions show that trade from an eval run's per-sample records, without re-running anything:

* at scoring time (:func:`ranked_ious`, :func:`match_ious`) each record keeps, for its instances
  in descending score order, the IoU the sample would get keeping only the top ``j`` of them
  (``ranked``), and each instance's IoU with the ground-truth instance it is matched to one to
  one (Hungarian matching on mask IoU; ``match_iou``);
* :func:`threshold_curve` then gives gIoU, N-acc and T-acc at any threshold exactly as
  :func:`refseg.eval.metrics.aggregate` would have scored the thresholded predictions;
* :func:`precision_recall` ranks every instance of the run by score (an instance is right when
  its matched IoU is at least 0.5) and gives the precision-recall curve and its average
  precision (all-point interpolation: the area under the precision envelope);
* :func:`calibration` bins instances by score and compares each bin's mean score with its share
  of right instances (a reliability table) and their weighted gap (expected calibration error).

:func:`threshold_report` adds bootstrap intervals over samples to all of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from refseg import masks
from refseg.eval.bootstrap import percentile_interval

#: The thresholds the report tabulates.
THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: An instance is right when its matched IoU reaches this (the usual detection rule).
MATCH_IOU = 0.5
#: Equal-width score bins of the reliability table.
CALIBRATION_BINS = 10


def match_ious(
    gt_masks: Sequence[masks.RLE], pred_masks: Sequence[masks.RLE], height: int, width: int
) -> list[float]:
    """Each predicted instance's IoU with the ground-truth instance a one-to-one assignment
    gives it (maximum total IoU, :func:`scipy.optimize.linear_sum_assignment`); 0 for an
    instance left unmatched (more predictions than ground truth, or a no-target sample)."""
    if not pred_masks:
        return []
    if not gt_masks:
        return [0.0] * len(pred_masks)
    from scipy.optimize import linear_sum_assignment

    gt = [masks.normalize(m) for m in gt_masks]
    pred = [masks.normalize(m) for m in pred_masks]
    iou = np.asarray(mask_utils.iou(pred, gt, [0] * len(gt)), dtype=np.float64)
    iou = iou.reshape(len(pred), len(gt))
    rows, cols = linear_sum_assignment(iou, maximize=True)
    out = [0.0] * len(pred)
    for r, c in zip(rows, cols):
        out[int(r)] = float(iou[r, c])
    return out


def ranked_ious(
    scores: Sequence[float], iou_of_kept: Callable[[list[int]], float]
) -> list[list[float | None]]:
    """``[[score, iou], ...]``: row ``j`` is the sample's IoU keeping the ``j`` best-scored
    instances (row 0: none kept, score None), ``iou_of_kept`` scoring a list of instance
    indices exactly as the run scores a prediction."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    rows: list[list[float | None]] = [[None, round(iou_of_kept([]), 6)]]
    for j in range(1, len(order) + 1):
        rows.append([round(scores[order[j - 1]], 6), round(iou_of_kept(order[:j]), 6)])
    return rows


def _kept(record: Mapping[str, Any], threshold: float) -> tuple[int, float]:
    """(instances kept, IoU) of a record at ``threshold``; a failed or unranked record keeps
    its own IoU."""
    ranked = record.get("ranked")
    if record.get("failed") or not ranked:
        return 0, float(record["iou"])
    j = sum(1 for score, _ in ranked[1:] if score is not None and score >= threshold)
    return j, float(ranked[j][1])


def threshold_curve(
    records: Sequence[Mapping[str, Any]], thresholds: Sequence[float] = THRESHOLDS
) -> list[dict[str, Any]]:
    """gIoU, N-acc and T-acc with the instances below each threshold dropped (an answer left
    with none counts as "no target"), one row per threshold."""
    rows = []
    for t in thresholds:
        ious, hits, found = [], [], []
        for record in records:
            j, iou = _kept(record, t)
            ious.append(iou)
            ok = not record.get("failed")
            (hits if record["gt_empty"] else found).append(
                ok and (j == 0) == bool(record["gt_empty"])
            )
        rows.append(
            {
                "threshold": t,
                "gIoU": math.fsum(ious) / len(ious) if ious else None,
                "N-acc": sum(hits) / len(hits) if hits else None,
                "T-acc": sum(found) / len(found) if found else None,
            }
        )
    return rows


def _instances(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, right, ground-truth instances) over a run's scored instances."""
    scores, right = [], []
    n_gt = 0
    for record in records:
        if not record["gt_empty"]:
            n_gt += int(record.get("n_gt", 0))
        for instance in record.get("instances") or []:
            if instance.get("match_iou") is None:
                continue
            scores.append(float(instance["score"]))
            right.append(float(instance["match_iou"]) >= MATCH_IOU)
    return np.asarray(scores, dtype=np.float64), np.asarray(right, dtype=bool), n_gt


def precision_recall(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Instance precision-recall over the run, ranked by score, and its average precision
    (``None`` without ground-truth instances)."""
    scores, right, n_gt = _instances(records)
    return _pr(scores, right, n_gt)


def _pr(scores: np.ndarray, right: np.ndarray, n_gt: int) -> dict[str, Any]:
    if not n_gt:
        return {"AP": None, "precision": [], "recall": [], "n_instances": len(scores)}
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(right[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / n_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(order) else precision
    steps = np.diff(np.concatenate([[0.0], recall]))
    ap = float(np.sum(steps * envelope)) if len(order) else 0.0
    return {
        "AP": ap,
        "precision": [round(float(v), 6) for v in precision],
        "recall": [round(float(v), 6) for v in recall],
        "n_instances": len(scores),
    }


def calibration(
    records: Sequence[Mapping[str, Any]], bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """The reliability table (per score bin: instances, mean score, share right) and the
    expected calibration error (the bins' gaps weighted by their share of instances)."""
    scores, right, _ = _instances(records)
    return _calibration(scores, right, bins)


def _calibration(scores: np.ndarray, right: np.ndarray, bins: int) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        chosen = index == b
        n = int(chosen.sum())
        row = {"bin": [round(float(edges[b]), 3), round(float(edges[b + 1]), 3)], "n": n}
        if n:
            confidence, accuracy = float(scores[chosen].mean()), float(right[chosen].mean())
            row.update(confidence=confidence, accuracy=accuracy)
            ece += n / len(scores) * abs(accuracy - confidence)
        table.append(row)
    return {"ECE": ece if len(scores) else None, "table": table}


def threshold_report(
    records: Sequence[Mapping[str, Any]],
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Curves, AP and calibration with percentile bootstrap intervals over samples (the
    samples are what was drawn; their instances come along)."""
    records = [r for r in records if not r.get("skipped")]  # as aggregate leaves them out
    curve = threshold_curve(records, thresholds)
    pr = precision_recall(records)
    cal = calibration(records)
    out: dict[str, Any] = {
        "curve": curve,
        "AP": pr["AP"],
        "n_instances": pr["n_instances"],
        "calibration": cal,
    }
    if not records:
        return out
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"AP": [], "ECE": []}
    curve_draws: list[list[dict[str, Any]]] = []
    for _ in range(n_boot):
        sample = [records[i] for i in rng.integers(0, len(records), len(records))]
        scores, right, n_gt = _instances(sample)
        ap = _pr(scores, right, n_gt)["AP"]
        ece = _calibration(scores, right, CALIBRATION_BINS)["ECE"]
        draws["AP"].append(math.nan if ap is None else ap)
        draws["ECE"].append(math.nan if ece is None else ece)
        curve_draws.append(threshold_curve(sample, thresholds))
    out["AP_ci"] = percentile_interval(np.asarray(draws["AP"]), level)
    out["ECE_ci"] = percentile_interval(np.asarray(draws["ECE"]), level)
    for k, row in enumerate(curve):
        for name in ("gIoU", "N-acc", "T-acc"):
            values = [math.nan if d[k][name] is None else d[k][name] for d in curve_draws]
            row[f"{name}_ci"] = percentile_interval(np.asarray(values), level)
    return out
