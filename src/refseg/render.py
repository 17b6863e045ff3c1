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


def color(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def overlay(image: np.ndarray, result: Result, *, alpha: float = 0.5) -> np.ndarray:
    """Return a copy of ``image`` with each instance's mask tinted in its own colour, its
    outline, its box and its points (green foreground dots with a dark rim)."""
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
        for x, y in instance.points:
            center = (round(x), round(y))
            cv2.circle(out, center, 3 * line + 2, (20, 20, 20), -1)
            cv2.circle(out, center, 3 * line, (60, 220, 60), -1)
    return out


def overlay_png(image: np.ndarray, result: Result) -> bytes:
    """:func:`overlay` encoded as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(overlay(image, result)).save(buffer, format="PNG")
    return buffer.getvalue()
