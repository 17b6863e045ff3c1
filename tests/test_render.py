"""Overlays: prompt points are drawn by label, so background points read as background."""

import numpy as np

from refseg import masks
from refseg.render import BACKGROUND, FOREGROUND, overlay
from refseg.types import Instance, Result


def _colour_pixels(image: np.ndarray, x: int, y: int, rgb: tuple[int, int, int]) -> int:
    window = image[y - 8 : y + 9, x - 8 : x + 9]
    return int((window == np.array(rgb, np.uint8)).all(axis=-1).sum())


def test_foreground_and_background_points_look_different() -> None:
    image = np.full((120, 160, 3), 128, np.uint8)
    instance = Instance(masks.empty(120, 160), points=[[40, 60], [120, 60]], point_labels=[1, 0])
    drawn = overlay(image, Result(160, 120, [instance]))
    assert _colour_pixels(drawn, 40, 60, FOREGROUND) > 0
    assert _colour_pixels(drawn, 40, 60, BACKGROUND) == 0
    assert _colour_pixels(drawn, 120, 60, BACKGROUND) > 0
    assert _colour_pixels(drawn, 120, 60, FOREGROUND) == 0
    assert (drawn[60, 120] == 255).all()  # the background dot's white bar, a shape cue
    assert np.array_equal(drawn[:5, :5], image[:5, :5])  # nothing drawn away from the points
