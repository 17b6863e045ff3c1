"""Overlay rendering: masks, boxes and points drawn on the image, for people to look at."""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from refseg import masks
from refseg.types import Instance, Result

#: Distinct, colour-blind-friendly instance colours (Okabe-Ito, then Tableau).
PALETTE = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (148, 103, 189),
    (140, 86, 75),
    (188, 189, 34),
]


#: Point colours: foreground green, background red (the web page uses the same pair). Shape
#: tells them apart too: a background dot carries a white bar, like the page's "minus".
FOREGROUND = (60, 220, 60)
BACKGROUND = (255, 77, 77)


def color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def draw_point(out: np.ndarray, x: float, y: float, label: int, line: int) -> None:
    """Draw one prompt point in place: a dark-rimmed dot, green for foreground (label 1), red
    with a white bar for background (label 0), so a reader can tell which points pushed the
    mask away."""
    center = (round(x), round(y))
    radius = 3 * line
    cv2.circle(out, center, radius + 2, (20, 20, 20), -1)
    cv2.circle(out, center, radius, FOREGROUND if label else BACKGROUND, -1)
    if not label:
        half = max(1, radius - 1)
        bar = max(1, line)
        cv2.line(out, (center[0] - half, center[1]), (center[0] + half, center[1]), (255,) * 3, bar)


def overlay(image: np.ndarray, result: Result, *, alpha: float = 0.5) -> np.ndarray:
    """Return a copy of ``image`` with each instance's mask tinted in its own colour, its
    outline, its box and its points (:func:`draw_point`: green foreground, red background)."""
    return draw_instances(image, result.instances, alpha=alpha)


def decoded_mask(instance: Instance, height: int, width: int) -> np.ndarray | None:
    """The instance's mask as a fresh boolean array (not cached on the instance), or ``None``
    when it has no pixel or another size (nothing to tint or outline: never decoded)."""
    rle = instance.rle
    try:
        if list(rle["size"]) != [height, width] or not int(masks.area([rle])[0]):
            return None
        return masks.decode(rle).astype(bool)
    except Exception:  # a hand-edited record: its panel loses the mask, not the report
        return None


def draw_instances(
    image: np.ndarray, instances: Sequence[Instance], *, alpha: float = 0.5
) -> np.ndarray:
    """Each instance's tint, outline, box and points (:func:`overlay`'s drawing), holding one
    decoded mask at a time.

    Decoding every mask first and keeping them (an instance caches its dense mask) took 3.3 GB
    to draw a prediction of 1,000 instances on a 16-megapixel image. Here each mask is decoded,
    tinted, its outline kept (a few points) and dropped, and masks without a pixel (a
    prediction's box-and-points instances) are never decoded.
    """
    canvas = image.astype(np.float32)
    height, width = image.shape[:2]
    line = max(1, round(max(height, width) / 300))
    outlines: list[Sequence[np.ndarray]] = []
    for index, instance in enumerate(instances):
        mask = decoded_mask(instance, height, width)
        if mask is None:
            outlines.append(())
            continue
        canvas[mask] = canvas[mask] * (1 - alpha) + np.array(color(index), np.float32) * alpha
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        outlines.append(contours)
        del mask
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    del canvas
    for index, (instance, contours) in enumerate(zip(instances, outlines, strict=True)):
        rgb = color(index)
        if contours:
            cv2.drawContours(out, contours, -1, rgb, line)
        if instance.box is not None:
            x1, y1, x2, y2 = (round(v) for v in instance.box)
            cv2.rectangle(out, (x1, y1), (x2, y2), rgb, line)
        for (x, y), label in zip(instance.points, instance.point_labels):
            draw_point(out, x, y, label, line)
    return out


def overlay_png(image: np.ndarray, result: Result) -> bytes:
    """:func:`overlay` encoded as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(overlay(image, result)).save(buffer, format="PNG")
    return buffer.getvalue()


def result_svg(result: Result, ids: Sequence[int] | None = None) -> str:
    """The result's outlines as an SVG over the image size, one ``<path>`` per instance.

    An instance's own ``path`` (path answers) is written as is; other instances get their
    mask's traced outline (at most 64 vertices, :func:`refseg.paths.trace`). ``ids``: see
    :func:`refseg.paths.svg_document`.
    """
    from refseg.paths import format_path, svg_document, trace

    paths = [
        inst.path if inst.path is not None else format_path(trace(inst.mask, 64), decimals=1)
        for inst in result.instances
    ]
    return svg_document(paths, result.width, result.height, ids=ids)
