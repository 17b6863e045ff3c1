"""Evaluation: metrics (:mod:`.metrics`), the resumable runner (:mod:`.runner`) and reports
(:mod:`.report`).

``evaluate`` is imported lazily so that ``from refseg.eval.metrics import ...`` (used by training
rewards) stays light.
"""

from __future__ import annotations

from typing import Any

from refseg.eval.metrics import METRIC_NAMES, SampleScore, aggregate, score_sample

__all__ = ["METRIC_NAMES", "SampleScore", "aggregate", "evaluate", "score_sample"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from refseg.eval.runner import evaluate

        return evaluate
    raise AttributeError(name)
