"""The sample type every dataset reader yields, and the ``KIND:PATH[:SPLIT]`` spec.

A :class:`Sample` is one referring expression with its ground truth: the masks of every object it
refers to (several for multi-target expressions, none for no-target ones). Readers for the
published layouts (REFER, gRefCOCO, ReasonSeg, RefCOCO-M) and the project's JSONL interchange
format all produce it, so evaluation and training never see layout details.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refseg import masks
from refseg.errors import InputError


@dataclass
class Sample:
    """One (image, phrase) pair with its ground truth.

    Attributes:
        id: unique within the dataset and stable across runs (used to resume).
        image: path of the image file.
        phrase: the referring expression.
        masks: COCO RLEs of every referred object; empty means "no target".
        width, height: image size in pixels (displayed orientation).
        boxes: ``[x1, y1, x2, y2]`` per mask (derived from the masks when the layout lacks them).
        meta: layout-specific extras (split, difficulty, category, is_sentence, ...).
    """

    id: str
    image: Path
    phrase: str
    masks: list[masks.RLE]
    width: int
    height: int
    boxes: list[list[float]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def no_target(self) -> bool:
        return not self.masks

    def gt_boxes(self) -> list[list[float]]:
        """Boxes of the ground-truth masks (given ones first, else tight boxes of the masks)."""
        if self.boxes:
            return self.boxes
        return [b for b in (masks.to_bbox(m) for m in self.masks) if b is not None]

    def union_rle(self) -> masks.RLE:
        return masks.union(self.masks, self.height, self.width)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``KIND:PATH[:SPLIT]`` string, e.g. ``refcocog:data/refcocog:val``."""

    kind: str
    path: Path
    split: str | None = None

    @classmethod
    def parse(cls, spec: str) -> DatasetSpec:
        kind, sep, rest = spec.partition(":")
        if not sep or not kind or not rest:
            raise InputError(f"dataset spec {spec!r}: expected KIND:PATH[:SPLIT]")
        path, _, split = rest.rpartition(":")
        if not path:  # no split given
            path, split = rest, ""
        return cls(kind=kind.lower(), path=Path(path).expanduser(), split=split or None)
