"""Crops around the target for ``compare.html``: the same window cut from every panel of a sample.

A whole-photo panel shrunk to a report column shows a 20-pixel object as a few pixels, so two
heads that both "found" it cannot be told apart. The comparison therefore adds, under each
sample's row of whole-photo panels, a row of crops around the target: the bounding box of the
ground truth and of every run's prediction together (:func:`crop_window`), with a margin so the
object's surroundings (what a near miss grabbed instead) stay in view. One window serves the
whole row, so the crops line up like the panels above them.

The crop is cut and enlarged *before* the overlay is drawn (:func:`crop_panel`): outlines keep
the report's usual thickness instead of being blown up with the pixels, and enlargement is by a
whole factor with nearest-neighbour sampling, so each image pixel (and each mask pixel) shows as
a sharp block and a one-pixel miss is visible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from refseg.data.base import Sample
    from refseg.types import Instance

#: Margin around the union box: this fraction of its longer side, and at least
#: :data:`MIN_MARGIN` pixels (a 10-pixel object with a 1.5-pixel margin shows no context).
MARGIN = 0.15
MIN_MARGIN = 16
#: Longer side, in pixels, that a crop is enlarged (by a whole factor) or shrunk towards.
CROP_SIZE = 640

#: ``(x1, y1, x2, y2)`` in whole pixels, pixel edges: ``image[y1:y2, x1:x2]``.
Window = tuple[int, int, int, int]


def crop_window(
    boxes: Iterable[Sequence[float] | None],
    width: int,
    height: int,
    *,
    margin: float = MARGIN,
    min_margin: float = MIN_MARGIN,
) -> Window | None:
    """The window around all ``boxes`` (``[x1, y1, x2, y2]``, pixel edges): their union's
    bounding box grown by ``max(min_margin, margin * longer side)`` on every side and clamped to
    the ``width`` x ``height`` image.

    ``None`` when there is nothing to crop around (no box: a no-target sample that every run
    answered with no target) or when the union lies wholly outside the image. ``None`` entries
    and boxes with non-finite coordinates (a hand-edited record) are skipped; swapped corners are
    put in order.
    """
    x1 = y1 = math.inf
    x2 = y2 = -math.inf
    for box in boxes:
        if box is None or len(box) != 4:
            continue
        try:
            a, b, c, d = (float(v) for v in box)
        except (TypeError, ValueError):
            continue
        if not all(math.isfinite(v) for v in (a, b, c, d)):
            continue
        x1, x2 = min(x1, a, c), max(x2, a, c)
        y1, y2 = min(y1, b, d), max(y2, b, d)
    if x1 == math.inf:
        return None
    grow = max(float(min_margin), margin * max(x2 - x1, y2 - y1))
    left = max(0, math.floor(x1 - grow))
    top = max(0, math.floor(y1 - grow))
    right = min(int(width), math.ceil(x2 + grow))
    bottom = min(int(height), math.ceil(y2 + grow))
    if right <= left or bottom <= top:
        return None
    return (left, top, right, bottom)


def _mask_box(rle: Any, height: int, width: int) -> list[float] | None:
    """Tight box of a stored mask of the image's size; ``None`` for an empty, foreign-sized or
    unreadable one (a broken record loses its crop box, not the report)."""
    from refseg import masks

    try:
        if list(rle["size"]) != [height, width]:
            return None
        return masks.to_bbox(rle)
    except Exception:
        return None


def truth_boxes(sample: Sample | None, height: int, width: int) -> list[list[float]]:
    """Boxes of the ground truth's masks and given boxes, when the sample is of this image
    (the same condition :func:`refseg.eval.report.truth_panel` draws them under)."""
    if sample is None or (sample.height, sample.width) != (height, width):
        return []
    found = [_mask_box(rle, height, width) for rle in sample.masks]
    try:
        found += [list(b) for b in sample.gt_boxes()]
    except Exception:
        pass
    return [b for b in found if b is not None]


def prediction_boxes(record: Mapping[str, Any], height: int, width: int) -> list[list[float]]:
    """Boxes of a record's predicted mask and its instances' boxes (what its panel draws)."""
    prediction = record.get("prediction")
    if not isinstance(prediction, Mapping):
        return []
    found = [_mask_box(prediction, height, width)]
    for instance in record.get("instances") or []:
        if isinstance(instance, Mapping):
            found.append(instance.get("box"))
    return [list(b) for b in found if isinstance(b, (list, tuple))]


def truth_instances(sample: Sample | None, height: int, width: int) -> list[Instance]:
    """The ground truth as drawn, in the panels (:func:`refseg.eval.report.truth_panel`) and
    their crops alike (same order, hence the same colours in a crop as in its panel)."""
    from refseg.types import Instance

    if sample is None or (sample.height, sample.width) != (height, width):
        return []
    boxes = sample.gt_boxes()
    return [
        Instance(rle, box=boxes[i] if i < len(boxes) else None)
        for i, rle in enumerate(sample.masks)
    ]


def prediction_instances(record: Mapping[str, Any], height: int, width: int) -> list[Instance]:
    """A record's prediction as drawn, in panels and crops alike: the mask, then each
    instance's box and points on an empty mask."""
    from refseg import masks
    from refseg.types import Instance

    prediction = record.get("prediction")
    if not prediction or list(prediction["size"]) != [height, width]:
        return []
    out = [Instance(prediction)]
    blank = masks.empty(height, width)  # once: encoding an empty 16 MP mask takes 0.2 s
    out += [
        Instance(
            blank,
            box=i.get("box"),
            points=i.get("points") or (),
            point_labels=i.get("point_labels"),
        )
        for i in record.get("instances") or []
    ]
    return out


def crop_scale(window: Window, size: int = CROP_SIZE) -> float:
    """How much a crop is scaled: a whole factor up to ``size`` on its longer side (pixels stay
    square blocks), or down to ``size`` when it is larger."""
    x1, y1, x2, y2 = window
    longer = max(x2 - x1, y2 - y1)
    if longer >= size:
        return size / longer
    return float(max(1, size // longer))


def crop_panel(
    image: np.ndarray, instances: Sequence[Instance], window: Window, size: int = CROP_SIZE
) -> np.ndarray:
    """``instances`` drawn on the ``window`` of ``image``, scaled by :func:`crop_scale`.

    Enlarged crops are cut and scaled (nearest neighbour, image and masks alike) before drawing
    so outlines stay thin; shrunk ones are drawn at full resolution and then area-averaged, so
    thin mask parts are not lost to sampling. Masks are cut one at a time
    (:func:`refseg.render.draw_instances`).
    """
    import cv2

    from refseg import masks
    from refseg.render import decoded_mask, draw_instances
    from refseg.types import Instance

    x1, y1, x2, y2 = window
    scale = crop_scale(window, size)
    factor = scale if scale > 1 else 1.0
    full_height, full_width = image.shape[:2]
    crop = image[y1:y2, x1:x2]
    height, width = crop.shape[:2]
    k = int(factor)
    if factor > 1:
        crop = np.repeat(np.repeat(crop, k, axis=0), k, axis=1)
        height, width = height * k, width * k

    def moved(x: float, y: float) -> list[float]:
        return [(x - x1) * factor, (y - y1) * factor]

    cut: list[Instance] = []
    blank: masks.RLE | None = None
    for instance in instances:
        whole = decoded_mask(instance, full_height, full_width)
        if whole is None:
            blank = rle = blank or masks.empty(height, width)
        else:
            mask = whole[y1:y2, x1:x2]
            del whole
            if factor > 1:
                mask = np.repeat(np.repeat(mask, k, axis=0), k, axis=1)
            rle = masks.encode(mask)
        box = None
        if instance.box is not None:
            bx1, by1, bx2, by2 = instance.box
            box = [*moved(bx1, by1), *moved(bx2, by2)]
        cut.append(
            Instance(
                rle,
                box=box,
                points=[moved(x, y) for x, y in instance.points],
                point_labels=instance.point_labels,
            )
        )
    drawn = draw_instances(np.ascontiguousarray(crop), cut)
    if scale < 1:
        size_out = (max(1, round(drawn.shape[1] * scale)), max(1, round(drawn.shape[0] * scale)))
        drawn = cv2.resize(drawn, size_out, interpolation=cv2.INTER_AREA)
    return drawn
