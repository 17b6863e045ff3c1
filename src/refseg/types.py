"""The core types every stage speaks: prompts in, instances and results out.

A :class:`Result` is what ``refseg segment --json`` writes, what the server answers, what
evaluation scores and what training rewards read; keeping one type (and one JSON form, see
:meth:`Result.to_dict`) is what lets the stages stay independent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refseg import masks
from refseg.errors import InputError

Box = tuple[float, float, float, float]
Point = tuple[float, float]


def clip_box(box: Sequence[float], width: int, height: int) -> Box:
    """Validate an ``[x1, y1, x2, y2]`` pixel box and clip it to the image.

    Boxes partly outside the image are clipped; inverted, degenerate (zero area after clipping),
    non-finite or wholly outside boxes raise :class:`InputError`.
    """
    if len(box) != 4:
        raise InputError(f"a box needs 4 numbers x1,y1,x2,y2, got {len(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise InputError(f"box {list(box)} has a non-finite coordinate")
    if x2 < x1 or y2 < y1:
        raise InputError(f"box {list(box)} is inverted: need x1 <= x2 and y1 <= y2")
    cx1, cy1 = min(max(x1, 0.0), float(width)), min(max(y1, 0.0), float(height))
    cx2, cy2 = min(max(x2, 0.0), float(width)), min(max(y2, 0.0), float(height))
    if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
        raise InputError(f"box {list(box)} has no area inside the {width}x{height} image")
    return (cx1, cy1, cx2, cy2)


@dataclass
class Prompt:
    """What a promptable segmenter takes for one mask.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the displayed image, or ``None``.
        points: ``(x, y)`` pixel coordinates.
        labels: one per point: 1 foreground, 0 background.
        mask_input: a previous low-resolution logit mask (``256x256`` for SAM) to refine, or None.
    """

    box: Box | None = None
    points: list[Point] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    mask_input: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.labels and self.points:
            self.labels = [1] * len(self.points)
        if len(self.labels) != len(self.points):
            raise InputError("a prompt needs exactly one label per point")
        if self.box is None and not self.points:
            raise InputError("a prompt needs a box or at least one point")
        for x, y in self.points:
            if not (math.isfinite(x) and math.isfinite(y)):
                raise InputError(f"point ({x}, {y}) has a non-finite coordinate")


#: The sources of an instance's score, in the order :attr:`Instance.scores` lists them: the
#: grounder's token probability for the instance's box and the segmenter's predicted IoU.
SCORE_SOURCES = ("grounder", "segmenter")


class Instance:
    """One segmented object: its mask (COCO RLE, decoded on first use), box, points and score.

    ``point_labels`` holds one label per point (1 foreground, 0 background, as in
    :class:`Prompt`); it defaults to all foreground, which is what grounders produce.
    ``scores`` holds each source's own score in [0, 1] (:data:`SCORE_SOURCES`; ``None`` where the
    source gives none) and ``score`` their product (1.0 when none exists): one number to
    threshold, with its parts kept.
    """

    __slots__ = (
        "_dense",
        "box",
        "label",
        "path",
        "point_labels",
        "points",
        "rle",
        "score",
        "scores",
    )

    def __init__(
        self,
        rle: masks.RLE,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] = (),
        score: float = 1.0,
        label: str | None = None,
        point_labels: Sequence[int] | None = None,
        scores: dict[str, float | None] | None = None,
    ) -> None:
        self.rle = rle
        self.box = [float(v) for v in box] if box is not None else None
        self.points = [[float(p[0]), float(p[1])] for p in points]
        self.score = float(score)
        self.scores: dict[str, float | None] = dict.fromkeys(SCORE_SOURCES)
        if scores:  # recorded as given; ``score`` stays what the caller says (set_scores: both)
            self.scores.update(_checked_scores(scores))
        self.label = label
        if point_labels is None:
            point_labels = [1] * len(self.points)
        if len(point_labels) != len(self.points) or any(v not in (0, 1) for v in point_labels):
            raise InputError("point_labels needs one label per point, each 1 or 0")
        self.point_labels = [int(v) for v in point_labels]
        self._dense: np.ndarray | None = None
        #: The outline as SVG path data in image pixels (path answers; None otherwise).
        self.path: str | None = None

    def set_scores(self, **sources: float | None) -> None:
        """Record sources' scores (``grounder=``, ``segmenter=``) and recompute :attr:`score`."""
        self.scores.update(_checked_scores(sources))
        present = [v for v in self.scores.values() if v is not None]
        self.score = math.prod(present) if present else 1.0

    @classmethod
    def from_mask(cls, mask: np.ndarray, **kwargs: Any) -> Instance:
        """Build from a dense boolean mask (encoded to RLE at once)."""
        instance = cls(masks.encode(mask), **kwargs)
        instance._dense = np.asarray(mask, dtype=bool)
        return instance

    def release_mask(self) -> Instance:
        """Let go of the cached dense mask (the RLE stays; :attr:`mask` decodes it again):
        what keeps a server's memory per request at one mask, not all of them."""
        self._dense = None
        return self

    @property
    def mask(self) -> np.ndarray:
        """The dense boolean ``(H, W)`` mask, decoded lazily and cached."""
        if self._dense is None:
            self._dense = masks.decode(self.rle)
        return self._dense

    @property
    def area(self) -> int:
        return int(masks.area([self.rle])[0])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "box": self.box,
            "points": self.points,
            # Beside "points", not inside them, so readers of [[x, y]] points keep working.
            "point_labels": self.point_labels,
            "score": round(self.score, 6),
            "scores": {k: None if v is None else round(v, 6) for k, v in self.scores.items()},
            "mask": masks.normalize(self.rle),
        }
        if self.label is not None:
            out["label"] = self.label
        if self.path is not None:
            out["path"] = self.path
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Instance:
        instance = cls._from_dict(data)
        path = data.get("path")
        if path is not None and not isinstance(path, str):
            raise InputError("an instance's path must be SVG path data (a string)")
        instance.path = path
        return instance

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> Instance:
        return cls(
            masks.normalize(data["mask"]),
            box=data.get("box"),
            points=data.get("points") or (),
            score=data.get("score", 1.0),
            label=data.get("label"),
            point_labels=data.get("point_labels"),  # absent in older result JSON: foreground
            scores=_scores(data.get("scores")),
        )

    def __repr__(self) -> str:
        return f"Instance(box={self.box}, points={self.points}, score={self.score:.3f})"


def _checked_scores(sources: dict[str, Any]) -> dict[str, float | None]:
    """Known sources, each a number in [0, 1] or None (a predicted IoU a little out of range is
    clipped; a non-finite one is None)."""
    out: dict[str, float | None] = {}
    for name, value in sources.items():
        if name not in SCORE_SOURCES:
            raise InputError(f"unknown score source {name!r}; use {', '.join(SCORE_SOURCES)}")
        if value is not None:
            value = float(value)
            value = min(max(value, 0.0), 1.0) if math.isfinite(value) else None
        out[name] = value
    return out


def _scores(data: Any) -> dict[str, float | None] | None:
    """An instance's ``scores`` from JSON (absent in results written before scores existed)."""
    if data is None:
        return None
    if not isinstance(data, dict) or not set(data) <= set(SCORE_SOURCES):
        raise InputError(f"an instance's scores maps {' and '.join(SCORE_SOURCES)} to numbers")
    return {k: None if v is None else float(v) for k, v in data.items()}


@dataclass
class Result:
    """Everything refseg knows about one (image, phrase) request.

    ``no_target`` is true when the grounder answered that nothing matches (then there are no
    instances). ``parse_error`` is set, with ``raw_answer`` kept, when the grounder's answer could
    not be read; the result then has no instances and ``no_target`` is false.
    """

    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)
    no_target: bool = False
    phrase: str | None = None
    raw_answer: str | None = None
    reasoning: str | None = None
    parse_error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: The grounder's probability of an empty answer where it chose between one and a list of
    #: objects (token probabilities); None when the grounder gives none.
    no_target_score: float | None = None

    def union_rle(self) -> masks.RLE:
        """The union of all instance masks as an RLE."""
        return masks.union([i.rle for i in self.instances], self.height, self.width)

    def union_mask(self) -> np.ndarray:
        """The union of all instance masks as a dense boolean array."""
        return masks.decode(self.union_rle())

    def to_dict(self, *, timings: bool = False) -> dict[str, Any]:
        """The project's result JSON (see README, "Result format")."""
        out: dict[str, Any] = {
            "image": {"width": self.width, "height": self.height},
            "no_target": self.no_target,
            "no_target_score": (
                None if self.no_target_score is None else round(self.no_target_score, 6)
            ),
            "instances": [i.to_dict() for i in self.instances],
        }
        if self.phrase is not None:
            out["phrase"] = self.phrase
            out["raw_answer"] = self.raw_answer
            out["reasoning"] = self.reasoning
            out["parse_error"] = self.parse_error
        if timings and self.timings:
            out["timings"] = {k: round(v, 6) for k, v in self.timings.items()}
        return out

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(**kwargs))

    def to_supervision(self, *, class_id: int = 0) -> Any:
        """The instances as ``supervision.Detections`` (``xyxy``, ``(N, H, W)`` masks,
        ``confidence`` = scores, ``data`` with the phrase and any outline path), for
        supervision's annotators, trackers and dataset writers. Needs the optional package
        (``pip install 'refseg[supervision]'``); see :mod:`refseg.interop.supervision`."""
        from refseg.interop.detections import to_detections

        return to_detections(self, class_id=class_id)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """Read the result JSON back (also what ``refseg eval --predictions`` consumes)."""
        try:
            image = data["image"]
            return cls(
                width=int(image["width"]),
                height=int(image["height"]),
                instances=[Instance.from_dict(i) for i in data.get("instances") or []],
                no_target=bool(data.get("no_target", False)),
                phrase=data.get("phrase"),
                raw_answer=data.get("raw_answer"),
                reasoning=data.get("reasoning"),
                parse_error=data.get("parse_error"),
                timings=dict(data.get("timings") or {}),
                no_target_score=_probability(data.get("no_target_score")),
            )
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise InputError(f"not a refseg result: {exc!r}") from exc


def _probability(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise InputError(f"no_target_score must be in [0, 1], got {value}")
    return value


def build_prompts(
    boxes: Sequence[Sequence[float]],
    points: Sequence[tuple[float, float, int]],
    width: int,
    height: int,
) -> list[Prompt]:
    """User boxes and ``(x, y, label)`` points -> prompts: one rule set for the CLI and server.

    Boxes are clipped to the image (:func:`clip_box`); points must lie inside it. With one box,
    points refine it; without a box, all points form one prompt (and need a foreground point);
    points next to several boxes are ambiguous and refused. The limits of
    :mod:`refseg.limits` (prompts, points per prompt, pixels x prompts) are checked first.
    """
    from refseg.limits import check_prompt_counts, check_prompt_pixels

    count = len(boxes) if boxes else int(bool(points))
    check_prompt_counts(count, [len(points)])
    check_prompt_pixels(count, width, height)
    clipped = [clip_box(b, width, height) for b in boxes]
    for x, y, _ in points:
        if not (0 <= x <= width and 0 <= y <= height):
            raise InputError(f"point ({x:g}, {y:g}) is outside the {width}x{height} image")
    coords = [(x, y) for x, y, _ in points]
    labels = [label for _, _, label in points]
    if len(clipped) > 1 and points:
        raise InputError("points with several boxes are ambiguous: give points with one box")
    if clipped:
        return [Prompt(box=clipped[0], points=coords, labels=labels)] + [
            Prompt(box=b) for b in clipped[1:]
        ]
    if points:
        if not any(labels):
            raise InputError("points alone need at least one foreground point (label 1)")
        return [Prompt(points=coords, labels=labels)]
    return []
