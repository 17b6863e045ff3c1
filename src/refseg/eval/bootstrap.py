"""Bootstrap confidence intervals of the set-level metrics, over samples.

A table of small-sample results (the CPU-scale proofs evaluate a few hundred samples, one-object
scenes a few dozen) means little without its uncertainty: a difference of 0.03 gIoU on 40
samples is noise. :func:`bootstrap_metrics` resamples the per-sample records with replacement
and recomputes gIoU, cIoU, mBIoU and N-acc exactly as :func:`refseg.eval.metrics.aggregate`
does, giving the percentile interval of each. :func:`bootstrap_difference` does the same for the
difference of two models scored on the *same* samples (paired resampling), which is the interval
that says whether one model beats another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Metrics with intervals, in table order.
CI_METRICS = ("gIoU", "cIoU", "mBIoU", "N-acc")


def _arrays(records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    failed = np.array([bool(r["failed"]) for r in records])
    gt_empty = np.array([bool(r["gt_empty"]) for r in records])
    pred_empty = np.array([bool(r["pred_empty"]) for r in records])
    return {
        "iou": np.array([float(r["iou"]) for r in records]),
        "biou": np.array([float(r["biou"]) for r in records]),
        "inter": np.array([int(r["inter"]) for r in records], dtype=np.float64),
        "union": np.array([int(r["union"]) for r in records], dtype=np.float64),
        "no_target": gt_empty.astype(np.float64),
        "hit": (gt_empty & ~failed & pred_empty).astype(np.float64),
    }


def _metrics(a: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of resampling indices ``idx`` (B, n)."""
    union = a["union"][idx].sum(1)
    no_target = a["no_target"][idx].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "gIoU": a["iou"][idx].mean(1),
            "cIoU": np.where(union > 0, a["inter"][idx].sum(1) / union, 1.0),
            "mBIoU": a["biou"][idx].mean(1),
            "N-acc": np.where(no_target > 0, a["hit"][idx].sum(1) / no_target, np.nan),
        }


def percentile_interval(values: np.ndarray, level: float) -> list[float] | None:
    """The percentile interval of a statistic's resampled values (non-finite ones left out:
    resamples on which it is undefined); None when none is finite."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [round(float(lo), 4), round(float(hi), 4)]


def bootstrap_metrics(
    records: Sequence[Mapping[str, Any]],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float] | None]:
    """Percentile intervals (``[lo, hi]``) of gIoU, cIoU, mBIoU and N-acc over samples.

    None for a metric that is undefined on every resample (N-acc without no-target samples) and
    for all of them on an empty record list.
    """
    records = list(records)
    if not records:
        return dict.fromkeys(CI_METRICS)
    a = _arrays(records)
    idx = np.random.default_rng(seed).integers(0, len(records), size=(n_boot, len(records)))
    values = _metrics(a, idx)
    return {name: percentile_interval(values[name], level) for name in CI_METRICS}


def bootstrap_difference(
    records_a: Sequence[Mapping[str, Any]],
    records_b: Sequence[Mapping[str, Any]],
    *,
    key: str = "id",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The difference A - B of each metric with its paired bootstrap interval.

    Records are paired by ``key`` (the sample id) and only samples scored by both count; the
    same resampled samples score both models, so what is shared (a hard sample) cancels.
    """
    by_b = {r[key]: r for r in records_b}
    pairs = [(r, by_b[r[key]]) for r in records_a if r[key] in by_b]
    if not pairs:
        return {"n": 0, **{m: None for m in CI_METRICS}}
    a = _arrays([p[0] for p in pairs])
    b = _arrays([p[1] for p in pairs])
    full = np.arange(len(pairs))[None]
    idx = np.random.default_rng(seed).integers(0, len(pairs), size=(n_boot, len(pairs)))
    point_a, point_b = _metrics(a, full), _metrics(b, full)
    boot_a, boot_b = _metrics(a, idx), _metrics(b, idx)
    out: dict[str, Any] = {"n": len(pairs)}
    for name in CI_METRICS:
        delta = float(point_a[name][0] - point_b[name][0])
        out[name] = {
            "delta": round(delta, 4) if np.isfinite(delta) else None,
            "ci": percentile_interval(boot_a[name] - boot_b[name], level),
        }
    return out
