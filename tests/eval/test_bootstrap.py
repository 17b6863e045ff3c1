"""Bootstrap intervals: they hold the point estimate, shrink with n, and pair by sample id."""

from __future__ import annotations

import numpy as np
import pytest

from refseg.eval.bootstrap import bootstrap_difference, bootstrap_metrics
from refseg.eval.metrics import aggregate


def records(ious, *, no_target=0, hits=0, prefix="s"):
    out = []
    for k, iou in enumerate(ious):
        out.append(
            {"id": f"{prefix}{k}", "iou": iou, "biou": iou / 2, "inter": int(100 * iou),
             "union": 100, "failed": False, "gt_empty": False, "pred_empty": False}
        )  # fmt: skip
    for k in range(no_target):
        hit = k < hits
        out.append(
            {"id": f"n{k}", "iou": float(hit), "biou": float(hit), "inter": 0, "union": 0,
             "failed": False, "gt_empty": True, "pred_empty": hit}
        )  # fmt: skip
    return out


def test_interval_contains_the_aggregate_and_narrows_with_more_samples():
    rng = np.random.default_rng(0)
    small = records(rng.uniform(0, 1, 40).tolist(), no_target=10, hits=6)
    large = records(rng.uniform(0, 1, 1000).tolist(), no_target=250, hits=150)
    for recs in (small, large):
        ci, point = bootstrap_metrics(recs), aggregate(recs)
        for name in ("gIoU", "cIoU", "mBIoU", "N-acc"):
            assert ci[name][0] <= point[name] <= ci[name][1], name
    width = {k: bootstrap_metrics(r)["gIoU"] for k, r in (("s", small), ("l", large))}
    assert (width["l"][1] - width["l"][0]) < 0.5 * (width["s"][1] - width["s"][0])
    assert bootstrap_metrics(records([0.5, 0.6]))["N-acc"] is None


def test_paired_difference_sees_a_small_consistent_gain_that_unpaired_intervals_miss():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 60)
    a = records((base + 0.03).clip(0, 1).tolist())
    b = records(base.tolist())
    diff = bootstrap_difference(a, b)
    assert diff["n"] == 60 and diff["gIoU"]["delta"] == pytest.approx(0.03, abs=0.005)
    assert diff["gIoU"]["ci"][0] > 0  # paired: every sample gained
    ca, cb = bootstrap_metrics(a)["gIoU"], bootstrap_metrics(b)["gIoU"]
    assert ca[0] < cb[1]  # unpaired intervals overlap
    unrelated = bootstrap_difference(a, records([0.5] * 5, prefix="x"))
    assert unrelated["n"] == 0 and unrelated["gIoU"] is None
