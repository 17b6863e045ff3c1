"""Synthetic sequences: the ground truth is exact (the warp or the painter's own silhouettes)."""

from __future__ import annotations

import numpy as np

from refseg.testing.coco_sample import load_objects
from refseg.video.sequences import CameraSequence, ShapesSequence, _Mover, camera_sequences


def test_camera_ground_truth_is_the_photo_warped_with_the_frame() -> None:
    # A "photo" whose pixels are its own mask: a frame rendered without noise must show the
    # ground-truth mask exactly wherever the warp is not blurred (slow camera: no motion blur).
    mask = np.zeros((300, 400), bool)
    mask[100:200, 150:260] = True
    photo = np.repeat(mask[..., None] * np.uint8(255), 3, axis=2)
    sequence = CameraSequence(
        photo, [mask], ["the box"], length=40, size=(160, 120), zoom=1.0, noise=0.0
    )
    sequence._period[:] = 4000.0  # slow: under 2 px a frame, so no blur kernel
    for t in (0, 20, 39):
        image, (gt,) = sequence.frame(t)
        bright = image[..., 0] > 127
        # Bilinear image vs nearest-neighbour mask: they may differ only on the edge pixels.
        assert (bright != gt).sum() <= 0.05 * gt.sum() + 2 * (gt.shape[0] + gt.shape[1])
        assert gt.sum() > 0


def test_camera_sequences_over_the_coco_sample(coco_sample) -> None:
    sequences = camera_sequences(load_objects(coco_sample), count=2, length=30, size=(320, 240))
    assert len({s.name for s in sequences}) == 2
    image, masks = sequences[0].frame(10)
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    assert len(masks) == len(sequences[0].objects) and all(m.shape == (240, 320) for m in masks)
    assert any(m.any() for m in masks)
    again, _ = sequences[0].frame(10)
    assert np.array_equal(image, again)  # deterministic: a frame can be rendered twice


def test_shapes_occlude_enter_and_leave() -> None:
    movers = [
        _Mover("circle", "red", 12.0, 0.0, (40.0, 48.0), (0.0, 0.0), False),
        _Mover("square", "blue", 12.0, 0.0, (10.0, 48.0), (6.0, 0.0), False),  # passes over red
        _Mover("star", "green", 10.0, 0.0, (-40.0, 20.0), (8.0, 0.0), False),  # enters, leaves
    ]
    sequence = ShapesSequence(movers, length=30, size=96)
    areas = np.array([[m.sum() for m in sequence.frame(t)[1]] for t in range(30)])
    full_red = areas[0, 0]
    assert areas[:, 0].min() < 0.5 * full_red  # occluded by the blue square passing over it
    assert areas[0, 2] == 0 and areas[10, 2] > 0 and areas[-1, 2] == 0
    for t in (0, 5, 10):  # visible masks never overlap, and each is painted its own colour
        image, visible = sequence.frame(t)
        for a in range(3):
            for b in range(a + 1, 3):
                assert not (visible[a] & visible[b]).any()
        pixels = image[visible[0]].astype(int)  # red (its rim darker, still red)
        assert (pixels[:, 0] - pixels[:, 1] > 60).mean() > 0.95
        pixels = image[visible[1]].astype(int)  # blue
        assert (pixels[:, 2] - pixels[:, 0] > 60).mean() > 0.95
