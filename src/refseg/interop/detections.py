"""The supervision-facing half of :mod:`refseg.interop.supervision`, on the ground floor.

``Result.to_supervision()`` is a method of a core type, and core types may not import the
layers above them (``tests/test_layers.py``), so the Result -> ``Detections`` conversion lives
here, reading a result only through the attributes it uses (:class:`ResultLike`). Everything
that needs refseg's own types (prompts) is in :mod:`refseg.interop.supervision`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from refseg.errors import InputError

if TYPE_CHECKING:
    import supervision

#: The one line a missing optional package gives.
INSTALL_HINT = "supervision is not installed: pip install 'refseg[supervision]'"

#: Where supervision's label annotators look for a detection's name.
CLASS_NAME = "class_name"


class InstanceLike(Protocol):
    box: list[float] | None
    score: float
    label: str | None
    path: str | None

    @property
    def mask(self) -> np.ndarray: ...


class ResultLike(Protocol):
    width: int
    height: int
    phrase: str | None
    no_target: bool

    @property
    def instances(self) -> Sequence[InstanceLike]: ...


def load_supervision() -> Any:
    """The ``supervision`` module, or :class:`InputError` with the install line."""
    try:
        import supervision
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return supervision


def _box(instance: InstanceLike) -> list[float]:
    """The instance's box; for a points-only prompt (no box) the mask's tight box in pixel
    edges, as :func:`refseg.masks.to_bbox` gives it (zeros for an empty mask)."""
    if instance.box is not None:
        return [float(v) for v in instance.box]
    mask = instance.mask
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def to_detections(result: ResultLike, *, class_id: int = 0) -> supervision.Detections:
    """A :class:`refseg.types.Result` as ``supervision.Detections``, one detection a instance.

    ``xyxy`` are the instance boxes in pixels (``float32``), ``mask`` the ``(N, H, W)`` boolean
    masks (``(0, H, W)`` for a result without instances, so code that stacks masks needs no
    special case), ``confidence`` the instance scores and ``class_id`` ``class_id`` for all:
    one result answers one phrase. ``data`` holds ``class_name`` (the instance's label, else
    the phrase: what supervision's label annotators print), ``phrase`` and, where any instance
    has an outline (path answers), ``path`` (SVG path data, ``None`` for the others).
    ``metadata`` keeps the image size, the phrase and ``no_target``.
    """
    sv = load_supervision()
    instances = list(result.instances)
    count = len(instances)
    height, width = int(result.height), int(result.width)
    if count:
        masks = np.stack([np.asarray(i.mask, dtype=bool) for i in instances])
    else:
        masks = np.zeros((0, height, width), dtype=bool)
    phrase = result.phrase if result.phrase is not None else ""
    data: dict[str, np.ndarray] = {
        CLASS_NAME: np.array([i.label or phrase for i in instances], dtype=object),
        "phrase": np.array([phrase] * count, dtype=object),
    }
    if any(i.path is not None for i in instances):
        data["path"] = np.array([i.path for i in instances], dtype=object)
    return sv.Detections(
        xyxy=np.array([_box(i) for i in instances], dtype=np.float32).reshape(count, 4),
        mask=masks,
        confidence=np.array([i.score for i in instances], dtype=np.float32),
        class_id=np.full(count, int(class_id), dtype=int),
        data=data,
        metadata={
            "width": width,
            "height": height,
            "phrase": result.phrase,
            "no_target": bool(result.no_target),
        },
    )


def detection_boxes(detections: Any) -> list[tuple[float, float, float, float]]:
    """The ``xyxy`` boxes of ``supervision.Detections`` as tuples, checked to be an ``(N, 4)``
    array of numbers (the values themselves are checked where prompts are made)."""
    xyxy = getattr(detections, "xyxy", None)
    if xyxy is None:
        raise InputError(f"expected supervision.Detections, got {type(detections).__name__}")
    try:
        array = np.asarray(xyxy, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("detections.xyxy is not an array of numbers") from None
    if array.ndim != 2 or array.shape[1] != 4:
        raise InputError(f"detections.xyxy must have shape (N, 4), got {array.shape}")
    return [(float(a), float(b), float(c), float(d)) for a, b, c, d in array]
