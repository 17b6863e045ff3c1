"""refseg results as ``supervision.Detections``, and detections as refseg box prompts.

supervision (roboflow) is the common currency of detection and segmentation tools in Python:
its annotators draw, its trackers follow and its dataset writers export ``Detections``. A
:class:`~refseg.types.Result` becomes one with ``result.to_supervision()`` (or
:func:`to_supervision`); the boxes of a detector's ``Detections`` become prompts refseg can
segment with :func:`from_supervision`::

    prompts = from_supervision(detections, width=w, height=h)
    result = refseg.segment_prompts(segmenter, image, prompts)
    annotated = sv.MaskAnnotator().annotate(image.copy(), result.to_supervision())

supervision is optional (``pip install 'refseg[supervision]'``); without it these functions
raise :class:`~refseg.errors.InputError` saying so in one line.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from refseg.errors import InputError
from refseg.interop.detections import INSTALL_HINT, detection_boxes, load_supervision
from refseg.limits import check_prompt_counts
from refseg.types import Prompt, Result, build_prompts

if TYPE_CHECKING:
    import supervision

__all__ = ["INSTALL_HINT", "from_supervision", "to_supervision"]


def to_supervision(result: Result, *, class_id: int = 0) -> supervision.Detections:
    """``result`` as ``supervision.Detections`` (see :meth:`refseg.types.Result.to_supervision`)."""
    return result.to_supervision(class_id=class_id)


def from_supervision(
    detections: supervision.Detections | Any,
    *,
    width: int | None = None,
    height: int | None = None,
) -> list[Prompt]:
    """One box prompt per detection, in order.

    With the image's ``width`` and ``height`` the boxes go through the rules of ``--box``
    (:func:`refseg.types.build_prompts`: clipped to the image, a box with no area inside it
    refused, the prompt limits of :mod:`refseg.limits` checked); without them each box must be
    finite with ``x1 < x2`` and ``y1 < y2``. A bad box raises :class:`InputError` naming it.
    Masks, classes and scores of the detections are not prompts and are left aside.
    """
    load_supervision()  # a missing package is the install line, not an AttributeError
    boxes = detection_boxes(detections)
    if (width is None) != (height is None):
        raise InputError("give both width and height of the image, or neither")
    if width is not None and height is not None:
        return build_prompts(boxes, [], int(width), int(height))
    check_prompt_counts(len(boxes), [])
    for number, box in enumerate(boxes):
        if not all(math.isfinite(v) for v in box):
            raise InputError(f"detection {number}: box {list(box)} has a non-finite coordinate")
        if not (box[0] < box[2] and box[1] < box[3]):
            raise InputError(f"detection {number}: box {list(box)} is inverted or has no area")
    return [Prompt(box=box) for box in boxes]
