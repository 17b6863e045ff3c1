"""The sample type every dataset reader yields, and the ``KIND:PATH[:SPLIT]`` spec.

A :class:`Sample` is one referring expression with its ground truth: the masks of every object it
refers to (several for multi-target expressions, none for no-target ones). Readers for the
published layouts (REFER, gRefCOCO, ReasonSeg, RefCOCO-M) and the project's JSONL interchange
format all produce it, so evaluation and training never see layout details.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refseg import masks
from refseg.errors import InputError

# --------------------------------------------------------------------------------------------
# Field checks for record parsers.
#
# Annotation files come from outside, and a field of the wrong type (a string id, a dict where a
# list belongs) used to surface as a KeyError or TypeError traceback from deep inside a reader.
# Each reader's record parser checks every field it uses with these; they raise ValueError with
# the problem only, and the reader wraps it as ``FILE: record N: problem`` (one InputError line).


def record_error(source: Any, where: str, exc: Exception) -> InputError:
    """The one-line error for a malformed record: ``SOURCE: WHERE: problem``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"{source}: {where}: {text}")


def need_int(value: Any, what: str) -> int:
    """``value`` if it is an integer (``bool`` is not), else ``ValueError``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise ValueError(f"{what} must be an integer, got {_show(value)}")


def need_str(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"{what} must be a string, got {_show(value)}")


def need_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, list):
        return value
    raise ValueError(f"{what} must be a list, got {_show(value)}")


def need_dict(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise ValueError(f"{what} must be an object, got {_show(value)}")


def need_box(value: Any, what: str, *, xywh: bool = False) -> list[float]:
    """Four finite numbers; COCO ``[x, y, w, h]`` are turned into ``[x1, y1, x2, y2]``."""
    if not (isinstance(value, (list, tuple)) and len(value) == 4) or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{what} must be 4 numbers, got {_show(value)}")
    box = [float(v) for v in value]
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"{what} must hold finite numbers")
    if xywh:
        x, y, w, h = box
        box = [x, y, x + w, y + h]
    return box


def _show(value: Any) -> str:
    """A short description of a bad value for an error line (never the whole value)."""
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class Sample:
    """One (image, phrase) pair with its ground truth.

    Attributes:
        id: unique within the dataset and stable across runs (used to resume).
        image: path of the image file.
        phrase: the referring expression.
        masks: COCO RLEs of every referred object; empty means "no target" (unless
            ``meta.no_target`` says otherwise, see :attr:`no_target`).
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
        """Whether the phrase refers to nothing, as the dataset says: its own flag
        (``meta.no_target``, gRefCOCO) where it has one, else whether it lists no mask.

        Never the pixels: a listed target whose mask covers no pixel is still a target (scoring
        and the per-target-count breakdown follow this one rule, see
        :func:`refseg.eval.metrics.score_sample`)."""
        flag = self.meta.get("no_target")
        return flag if isinstance(flag, bool) else not self.masks

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
            from refseg.data.suggest import did_you_mean

            hint = did_you_mean(spec) if not sep else ""  # a bare path: what does it hold?
            raise InputError(
                f"dataset spec {spec!r}: expected KIND:PATH[:SPLIT]"
                + (hint or f" (kinds: {', '.join(dataset_kinds())})")
            )
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
        from refseg.data.suggest import did_you_mean

        # "data/x.jsonl:val" reads as kind "data/x.jsonl": a path without its kind.
        written = spec.partition(":")[0] if isinstance(spec, str) else parsed.kind
        hint = did_you_mean(written)
        raise InputError(
            f"dataset kind {parsed.kind!r} is unknown"
            + (hint or f"; known kinds: {', '.join(dataset_kinds())}")
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
# Hugging Face `datasets` Parquet repositories of the same benchmarks (lmms-lab, jxu124 layouts).
for _name in ("refcoco", "refcoco+", "refcocog", "grefcoco"):
    register_reader(f"{_name}-parquet", "refseg.data.parquet:read_refcoco_parquet", dataset=_name)
