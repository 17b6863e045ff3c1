"""Threshold curves, instance precision-recall and calibration, against hand-computed values and
against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from refseg import masks
from refseg.eval.metrics import aggregate, score_sample
from refseg.eval.thresholds import (
    calibration,
    match_ious,
    precision_recall,
    ranked_ious,
    threshold_curve,
    threshold_report,
)

H, W = 40, 50


def box_mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def dense_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


@pytest.mark.parametrize("seed", range(6))
def test_matching_maximises_the_total_iou(seed) -> None:
    """The one-to-one assignment equals brute force over every assignment (greedy would not)."""
    rng = np.random.default_rng(seed)

    def random_box() -> np.ndarray:
        x0, y0 = rng.integers(0, 30), rng.integers(0, 25)
        return box_mask(x0, y0, x0 + rng.integers(5, 20), y0 + rng.integers(5, 15))

    gt = [random_box() for _ in range(rng.integers(1, 4))]
    pred = [random_box() for _ in range(rng.integers(1, 5))]
    got = match_ious([masks.encode(m) for m in gt], [masks.encode(m) for m in pred], H, W)
    iou = np.array([[dense_iou(p, g) for g in gt] for p in pred])
    best = 0.0
    slots = list(range(len(gt))) + [None] * len(pred)
    for chosen in itertools.permutations(slots, len(pred)):
        best = max(best, sum(iou[i, g] for i, g in enumerate(chosen) if g is not None))
    assert sum(got) == pytest.approx(best)
    assert all(v == 0.0 or v in iou[i] for i, v in enumerate(got))


def test_a_greedy_trap() -> None:
    gt1, gt2 = box_mask(0, 0, 10, 10), box_mask(6, 0, 16, 10)
    a, b = box_mask(3, 0, 13, 10), box_mask(0, 0, 8, 10)  # a overlaps both; b only gt1
    got = match_ious(
        [masks.encode(gt1), masks.encode(gt2)], [masks.encode(a), masks.encode(b)], H, W
    )
    assert got == pytest.approx([dense_iou(a, gt2), dense_iou(b, gt1)])
    assert match_ious([], [masks.encode(a)], H, W) == [0.0]


def test_ranked_rows_score_each_prefix_as_the_run_does() -> None:
    gt = [masks.encode(box_mask(0, 0, 20, 20))]
    preds = [box_mask(0, 0, 20, 20), box_mask(30, 20, 45, 35), box_mask(0, 0, 10, 20)]
    scores = [0.4, 0.9, 0.7]

    def iou_of(kept: list[int]) -> float:
        return score_sample(gt, [masks.encode(preds[i]) for i in kept], H, W).iou

    rows = ranked_ious(scores, iou_of)
    assert [r[0] for r in rows] == [None, 0.9, 0.7, 0.4]
    assert rows[0][1] == 0.0
    assert rows[1][1] == pytest.approx(iou_of([1]), abs=1e-6)
    assert rows[3][1] == pytest.approx(iou_of([0, 1, 2]), abs=1e-6)


def record(ranked, *, gt_empty=False, failed=False, instances=(), n_gt=1):
    iou = ranked[-1][1] if ranked else 0.0
    return {
        "iou": iou,
        "ranked": ranked,
        "gt_empty": gt_empty,
        "failed": failed,
        "pred_empty": len(ranked) <= 1,
        "instances": list(instances),
        "n_gt": 0 if gt_empty else n_gt,
    }


def test_the_curve_by_hand() -> None:
    records = [
        record([[None, 0.0], [0.9, 0.8], [0.3, 0.6]]),
        record([[None, 1.0], [0.6, 0.0]], gt_empty=True),
    ]
    rows = {r["threshold"]: r for r in threshold_curve(records, [0.0, 0.5, 0.7, 0.95])}
    assert rows[0.0] == {"threshold": 0.0, "gIoU": 0.3, "N-acc": 0.0, "T-acc": 1.0}
    assert rows[0.5]["gIoU"] == pytest.approx(0.4)
    assert rows[0.7] == {"threshold": 0.7, "gIoU": pytest.approx(0.9), "N-acc": 1.0, "T-acc": 1.0}
    assert rows[0.95] == {"threshold": 0.95, "gIoU": 0.5, "N-acc": 1.0, "T-acc": 0.0}


def test_threshold_zero_agrees_with_aggregate() -> None:
    records = [
        record([[None, 0.0], [0.9, 0.8], [0.3, 0.6]]),
        record([[None, 1.0], [0.6, 0.0]], gt_empty=True),
        record([], failed=True),
    ]
    for r in records:
        r.update(biou=0.0, inter=0, union=1)
    (row,) = threshold_curve(records, [0.0])
    full = aggregate(records)
    assert row["gIoU"] == pytest.approx(full["gIoU"])
    assert row["N-acc"] == full["N-acc"] and row["T-acc"] == full["T-acc"]


def instance(score, match_iou):
    return {"score": score, "match_iou": match_iou}


def test_average_precision_by_hand() -> None:
    records = [
        record([], instances=[instance(0.9, 0.8), instance(0.8, 0.2)], n_gt=2),
        record([], instances=[instance(0.7, 0.5)], n_gt=1),
        record([], gt_empty=True, instances=[instance(0.1, 0.0)]),
    ]
    pr = precision_recall(records)
    # ranked: right, wrong, right, wrong over 3 ground-truth instances
    assert pr["precision"] == pytest.approx([1, 0.5, 2 / 3, 0.5], abs=1e-6)
    assert pr["recall"] == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3], abs=1e-6)
    assert pr["AP"] == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3)
    assert precision_recall([record([], gt_empty=True)])["AP"] is None


def test_calibration_by_hand() -> None:
    records = [
        record(
            [],
            instances=[
                instance(0.95, 0.9),
                instance(0.92, 0.1),
                instance(0.15, 0.0),
                instance(0.12, 0.3),
            ],
            n_gt=2,
        )
    ]
    cal = calibration(records)
    top, low = cal["table"][9], cal["table"][1]
    assert top["n"] == 2 and top["accuracy"] == 0.5 and top["confidence"] == pytest.approx(0.935)
    assert low["n"] == 2 and low["accuracy"] == 0.0 and low["confidence"] == pytest.approx(0.135)
    assert cal["ECE"] == pytest.approx(0.5 * 0.435 + 0.5 * 0.135)
    assert sum(row["n"] for row in cal["table"]) == 4


def test_the_report_has_intervals_around_its_estimates() -> None:
    rng = np.random.default_rng(0)
    records = []
    for _ in range(40):
        s = float(rng.uniform())
        right = rng.uniform() < s
        records.append(
            record(
                [[None, 0.0], [round(s, 6), 0.7 if right else 0.1]],
                instances=[instance(s, 0.7 if right else 0.1)],
            )
        )
    report = threshold_report(records, n_boot=200)
    lo, hi = report["AP_ci"]
    assert lo <= report["AP"] <= hi
    # ECE is biased upwards on resamples (duplicates sharpen the bins' gaps), so its
    # percentile interval need not contain the estimate: only its shape is checked
    lo, hi = report["ECE_ci"]
    assert 0.0 <= lo <= hi <= 1.0
    row = report["curve"][5]
    assert row["gIoU_ci"][0] <= row["gIoU"] <= row["gIoU_ci"][1]
