"""Recording GRPO rollouts (``grpo.record_rollouts: DIR``): the refiner's training data.

Every rollout of a path-GRPO run is a coarse mask (its outline, rasterized) paired with the
sample's ground truth, which is exactly what a refiner learns from (Moondream Segmentation's
observation): :mod:`refseg.train.refiner` reads these files. One JSON line per rollout in
``DIR/rollouts.jsonl`` (``rollouts-rankR.jsonl`` for process ``R`` > 0 under a launcher)::

    {"step": 3, "index": 5, "sample_id": "...", "image": "...", "width": 640, "height": 480,
     "completion": "<answer>...</answer>", "paths": ["M ... Z"], "boxes": [[x1, y1, x2, y2]],
     "masks": [RLE per instance], "reward": 1.23, "rewards": {"mask_iou": 0.8, ...},
     "gt_boxes": [[...]], "gt_masks": [counts, ...]}

``step`` is the trainer's completed-step count when the rollouts were generated (so the
rollouts of optimizer step ``N + 1`` carry ``N``), ``index`` the rollout's position in that
generation batch. Resuming: a run resumed from ``checkpoint-N`` regenerates every rollout from
step ``N`` on, so :meth:`RolloutRecorder.prepare` first drops the recorded lines with
``step >= N`` (and a line cut short by a kill), rewriting the file atomically; a fresh run (no
checkpoint) starts the file empty. A kill and resume therefore never leaves duplicates.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from refseg import masks
from refseg.errors import InputError

#: Longest line read back when trimming a recording (a rollout with a 100k-vertex path and its
#: masks fits easily); a longer line is treated as damaged and dropped.
MAX_LINE_BYTES = 64 * 1024 * 1024


def _rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:
        pass
    return 0


def rollout_file(folder: str | os.PathLike[str], rank: int | None = None) -> Path:
    """The JSONL file process ``rank`` records into."""
    rank = _rank() if rank is None else rank
    name = "rollouts.jsonl" if rank == 0 else f"rollouts-rank{rank}.jsonl"
    return Path(folder) / name


def read_rollouts(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete record of a rollout file (a damaged or cut-off line is skipped)."""
    out = []
    with open(path, "rb") as handle:
        while True:
            line = handle.readline(MAX_LINE_BYTES + 1)  # never more than this in memory
            if not line:
                break
            if len(line) > MAX_LINE_BYTES:
                while line and not line.endswith(b"\n"):  # skip the rest of an overlong line
                    line = handle.readline(MAX_LINE_BYTES + 1)
                continue
            if not line.endswith(b"\n"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                out.append(record)
    return out


class RolloutRecorder:
    """A zero-weight reward function that records every rollout with its rewards.

    TRL calls a GRPO trainer's reward functions in order with the same batch; the recorder
    :meth:`wrap`\\ s the others so it sees their outputs, and is placed last (weight 0: it never
    changes the advantage) to write one line per rollout with the weighted total.
    """

    __name__ = "record_rollouts"

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        convention: Any = None,
        rank: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.convention = convention
        self.path = rollout_file(self.folder, rank)
        self.weights: dict[str, float] = {}
        self._last: dict[str, list[float]] = {}
        self._step_counts: dict[int, int] = {}

    def wrap(self, func: Callable[..., list[float]], name: str, weight: float) -> Callable:
        """``func`` with its outputs kept for the record (TRL names it ``name``)."""
        self.weights[name] = float(weight)

        def recorded(prompts: Any, completions: Any, **kwargs: Any) -> list[float]:
            values = func(prompts, completions, **kwargs)
            self._last[name] = [float(v) if v is not None else float("nan") for v in values]
            return values

        recorded.__name__ = name  # type: ignore[attr-defined]
        return recorded

    def prepare(self, resume_step: int) -> int:
        """Drop the records a resume from ``resume_step`` regenerates; returns how many stay."""
        self.folder.mkdir(parents=True, exist_ok=True)
        kept = []
        if self.path.is_file():
            kept = [r for r in read_rollouts(self.path) if r["step"] < resume_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as handle:
            for record in kept:
                handle.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path)
        self._step_counts = {}
        for record in kept:
            self._step_counts[record["step"]] = self._step_counts.get(record["step"], 0) + 1
        return len(kept)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        from refseg.paths import format_path
        from refseg.train.rewards.common import _columns, read_answer
        from refseg.train.rewards.masks import instance_mask

        n = len(completions)
        state = kwargs.get("trainer_state")
        step = int(getattr(state, "global_step", 0) or 0)
        widths = _columns(n, "width", kwargs.get("width"))
        heights = _columns(n, "height", kwargs.get("height"))
        gt_boxes = kwargs.get("gt_boxes") or [[] for _ in range(n)]
        gt_masks = kwargs.get("gt_masks") or [[] for _ in range(n)]
        ids = kwargs.get("sample_id") or [None] * n
        images = kwargs.get("image_path") or kwargs.get("image") or [None] * n
        start = self._step_counts.get(step, 0)
        lines = []
        for k, completion in enumerate(completions):
            w, h = int(widths[k]), int(heights[k])
            read = read_answer(completion, w, h, self.convention)
            instances = read.grounding.instances
            rewards = {name: values[k] for name, values in self._last.items() if len(values) == n}
            total = sum(self.weights.get(name, 0.0) * v for name, v in rewards.items())
            record = {
                "step": step,
                "index": start + k,
                "sample_id": ids[k],
                "image": images[k] if isinstance(images[k], str) else None,
                "width": w,
                "height": h,
                "completion": read.text,
                "parse_error": read.grounding.parse_error,
                "paths": [format_path(i.polygons, decimals=1) for i in instances],
                "boxes": [[round(float(v), 2) for v in i.box] for i in instances],
                "masks": [masks.encode(instance_mask(i, w, h)) for i in instances],
                "reward": _finite(total),
                "rewards": {name: _finite(v) for name, v in rewards.items()},
                "gt_boxes": [[float(v) for v in b] for b in (gt_boxes[k] or [])],
                "gt_masks": list(gt_masks[k] or []),
            }
            lines.append(json.dumps(record) + "\n")
        self._step_counts[step] = start + n
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write("".join(lines))
            handle.flush()
        self._last = {}
        return [0.0] * n


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def attach(
    folder: str | os.PathLike[str],
    funcs: list[Callable],
    weights: list[float],
    *,
    convention: Any,
) -> tuple[RolloutRecorder, list[Callable], list[float]]:
    """Wrap ``funcs`` for recording and append the recorder (weight 0)."""
    if not str(folder).strip():
        raise InputError("grpo.record_rollouts: the folder is empty")
    recorder = RolloutRecorder(folder, convention=convention)
    wrapped = [
        recorder.wrap(f, getattr(f, "__name__", f"reward{i}"), w)
        for i, (f, w) in enumerate(zip(funcs, weights))
    ]
    return recorder, [*wrapped, recorder], [*weights, 0.0]
