"""Overlay rendering: masks, boxes and points drawn on the image, for people to look at."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from refseg.types import Result

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
    canvas = image.astype(np.float32).copy()
    height, width = image.shape[:2]
    line = max(1, round(max(height, width) / 300))
    for index, instance in enumerate(result.instances):
        mask = instance.mask
        if mask.shape != (height, width):
            continue
        canvas[mask] = canvas[mask] * (1 - alpha) + np.array(color(index), np.float32) * alpha
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    for index, instance in enumerate(result.instances):
        rgb = color(index)
        mask = instance.mask
        if mask.shape == (height, width):
            contours, _ = cv2.findContours(
                mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
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
