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


# --------------------------------------------------------------------------------------------
# Dataset registry: ``open_dataset("KIND:PATH[:SPLIT]")`` -> samples.
#
# Readers are named by "module:function" strings and imported only when used, so importing
# ``refseg.data.base`` stays cheap (no pyarrow, no cv2 start-up for a JSONL user) and readers
# can import this module without a cycle. Each reader is called as
# ``function(spec: DatasetSpec, **options)`` and returns a list of samples.

#: kind -> (reader "module:function", fixed keyword arguments).
_READERS: dict[str, tuple[str, dict[str, Any]]] = {}


def register_reader(kind: str, target: str, **fixed: Any) -> None:
    """Make ``KIND:...`` specs open with ``target`` (``"package.module:function"``).

    ``fixed`` keyword arguments are passed on every call (e.g. which REFER split-by a kind
    means), before the caller's options.
    """
    if ":" not in target:
        raise ValueError(f"reader target {target!r} must be 'module:function'")
    _READERS[kind.lower()] = (target, dict(fixed))


def dataset_kinds() -> list[str]:
    """Every registered dataset kind, sorted."""
    return sorted(_READERS)


def open_dataset(spec: str | DatasetSpec, **options: Any) -> list[Sample]:
    """Read the dataset a ``KIND:PATH[:SPLIT]`` spec names.

    ``options`` go to the reader (e.g. ``images_dir=`` for the COCO-based layouts,
    ``limit=`` everywhere). Unknown kinds raise :class:`InputError` listing the known ones.
    """
    import importlib
    import inspect

    parsed = DatasetSpec.parse(spec) if isinstance(spec, str) else spec
    entry = _READERS.get(parsed.kind)
    if entry is None:
        raise InputError(
            f"dataset kind {parsed.kind!r} is unknown; known kinds: {', '.join(dataset_kinds())}"
        )
    target, fixed = entry
    module_name, _, function_name = target.partition(":")
    reader = getattr(importlib.import_module(module_name), function_name)
    accepted = inspect.signature(reader).parameters
    unknown = sorted(k for k in options if k not in accepted or k in fixed)
    if unknown:
        raise InputError(f"option(s) {', '.join(unknown)} do not apply to {parsed.kind} datasets")
    return reader(parsed, **{**fixed, **options})


def limit_samples(samples: list[Sample], limit: int | None) -> list[Sample]:
    """The first ``limit`` samples (all of them for ``None``); shared by every reader."""
    if limit is None:
        return samples
    if limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    return samples[:limit]


for _kind, _split_by in (("refcoco", "unc"), ("refcoco-unc", "unc"), ("refcoco-google", "google")):
    register_reader(_kind, "refseg.data.refer:read_refer", dataset="refcoco", split_by=_split_by)
for _kind in ("refcoco+", "refcocop", "refcoco+-unc"):
    register_reader(_kind, "refseg.data.refer:read_refer", dataset="refcoco+", split_by="unc")
for _kind, _split_by in (
    ("refcocog", "umd"),
    ("refcocog-umd", "umd"),
    ("refcocog-google", "google"),
):
    register_reader(_kind, "refseg.data.refer:read_refer", dataset="refcocog", split_by=_split_by)
register_reader("grefcoco", "refseg.data.refer:read_grefcoco")
register_reader("reasonseg", "refseg.data.reasonseg:read_reasonseg")
for _kind in ("refcoco-m", "refcocom"):
    register_reader(_kind, "refseg.data.refcocom:read_refcocom")
register_reader("jsonl", "refseg.data.jsonl:read_jsonl_spec")
register_reader("refshapes", "refseg.data.jsonl:read_jsonl_spec", require_split=True)
register_reader("coco", "refseg.data.coco:read_coco_spec")
