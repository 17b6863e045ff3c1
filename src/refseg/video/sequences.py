"""Synthetic video sequences whose ground truth is exact, for measuring trackers.

Two kinds, both rendered one frame at a time (a sequence of any length costs one frame):

- :class:`CameraSequence`: a moving camera over a real photo (the bundled COCO sample). A crop
  window pans, zooms and rotates over the photo; the frame is the window resampled (bilinear),
  then motion-blurred along the pan and given sensor noise. The ground-truth masks are the
  photo's COCO instance masks sampled through the very same warp (nearest neighbour), so every
  ground-truth pixel is the annotated pixel the frame pixel came from. The window is kept inside
  the photo, so nothing is invented at the edges; objects still leave and enter the window.
- :class:`ShapesSequence`: RefShapes video. Coloured shapes (the still RefShapes' shapes,
  colours and rendering) move over a static textured background, bounce, pass over each other
  (fixed depth order, so the one below is occluded exactly by the silhouettes painted above it)
  and enter and leave the frame. Each object has a phrase ("the red star").

A frame is ``(image, masks)``: ``uint8`` RGB ``(H, W, 3)`` and one boolean mask per object of
:attr:`objects` (empty where the object is out of view or wholly hidden).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np


@dataclass
class SequenceObject:
    """One ground-truth object of a sequence: its index and what it is called."""

    index: int
    phrase: str


class _Sequence:
    objects: list[SequenceObject]
    length: int
    name: str

    def frame(self, t: int) -> tuple[np.ndarray, list[np.ndarray]]:
        raise NotImplementedError

    def frames(self) -> Iterator[tuple[int, np.ndarray, list[np.ndarray]]]:
        for t in range(self.length):
            image, masks = self.frame(t)
            yield t, image, masks


# --------------------------------------------------------------------------------------------
# Moving camera over a real photo


class CameraSequence(_Sequence):
    """A camera path over ``photo`` (see the module docstring).

    Args:
        photo: the ``uint8`` RGB photo.
        masks: its instance masks (photo size), with ``phrases`` naming them.
        length: frames.
        size: ``(width, height)`` of the frames.
        seed: the camera path, blur and noise.
        zoom: photo pixels per frame pixel, around which the zoom swings (+-20 %).
        max_angle: the rotation swings within +-this many degrees.
    """

    def __init__(
        self,
        photo: np.ndarray,
        masks: list[np.ndarray],
        phrases: list[str],
        *,
        length: int = 120,
        size: tuple[int, int] = (640, 480),
        seed: int = 0,
        zoom: float = 0.6,
        max_angle: float = 12.0,
        noise: float = 3.0,
        name: str = "camera",
    ) -> None:
        self.photo = photo
        self.masks = [np.ascontiguousarray(m, dtype=np.uint8) for m in masks]
        self.objects = [SequenceObject(i, p) for i, p in enumerate(phrases)]
        self.length = length
        self.size = size
        self.noise = noise
        self.name = name
        rng = np.random.default_rng(seed)
        self._phase = rng.uniform(0, 2 * math.pi, size=5)
        # Periods in frames, not in sequence lengths: the speed of the camera does not depend
        # on how long the sequence runs.
        self._period = rng.uniform(80.0, 160.0, size=5)
        self._zoom = zoom
        self._angle = max_angle
        self._seed = seed

    def _pose(self, t: float) -> tuple[float, float, float, float]:
        """``(cx, cy, zoom, angle)`` of the window at time ``t`` (smooth, kept in the photo)."""
        ph, pw = self.photo.shape[:2]
        w, h = self.size
        s = [math.sin(2 * math.pi * t / p + f) for p, f in zip(self._period, self._phase)]
        zoom = self._zoom * (1 + 0.2 * s[2])
        angle = self._angle * s[3]
        a = math.radians(angle)
        # Half extents of the rotated window in photo pixels; shrink the zoom until it fits.
        while True:
            ex = zoom * (abs(math.cos(a)) * w + abs(math.sin(a)) * h) / 2
            ey = zoom * (abs(math.sin(a)) * w + abs(math.cos(a)) * h) / 2
            if 2 * ex < pw - 2 and 2 * ey < ph - 2:
                break
            zoom *= 0.95
        cx = pw / 2 + (pw / 2 - ex - 1) * s[0]
        cy = ph / 2 + (ph / 2 - ey - 1) * s[1]
        return cx, cy, zoom, angle

    def _matrix(self, t: float) -> np.ndarray:
        """The affine map from frame pixels to photo pixels."""
        cx, cy, zoom, angle = self._pose(t)
        w, h = self.size
        a = math.radians(angle)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * zoom
        offset = np.array([cx, cy]) - rot @ np.array([w / 2, h / 2])
        return np.hstack([rot, offset[:, None]])

    def frame(self, t: int) -> tuple[np.ndarray, list[np.ndarray]]:
        matrix = self._matrix(t)
        w, h = self.size
        flags = cv2.WARP_INVERSE_MAP
        image = cv2.warpAffine(
            self.photo,
            matrix,
            (w, h),
            flags=cv2.INTER_LINEAR | flags,
            borderMode=cv2.BORDER_REPLICATE,
        )
        masks = [
            cv2.warpAffine(
                m,
                matrix,
                (w, h),
                flags=cv2.INTER_NEAREST | flags,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            ).astype(bool)
            for m in self.masks
        ]
        # Motion blur along the window's motion (in frame pixels), then sensor noise.
        here, before = self._pose(t), self._pose(t - 1)
        dx, dy = (here[0] - before[0]) / here[2], (here[1] - before[1]) / here[2]
        length = int(min(9, round(math.hypot(dx, dy))))
        if length >= 2:
            kernel = np.zeros((length, length), np.float32)
            ux, uy = dx / math.hypot(dx, dy), dy / math.hypot(dx, dy)
            c = (length - 1) / 2
            for k in np.linspace(-c, c, 2 * length):
                x, y = round(c + k * ux), round(c + k * uy)
                kernel[min(max(y, 0), length - 1), min(max(x, 0), length - 1)] = 1
            image = cv2.filter2D(image, -1, kernel / kernel.sum())
        if self.noise:
            rng = np.random.default_rng((self._seed, t))
            noisy = image.astype(np.float32) + rng.normal(0, self.noise, image.shape)
            image = np.clip(noisy, 0, 255).astype(np.uint8)
        return image, masks


def camera_sequences(
    objects: Sequence[Any],
    *,
    count: int = 2,
    length: int = 120,
    size: tuple[int, int] = (640, 480),
    min_area: int = 1500,
    max_objects: int = 6,
) -> list[CameraSequence]:
    """``count`` camera sequences over the photos of ``objects`` (ground-truth instances with
    ``image_path``, dense ``mask`` and ``category``, as
    :func:`refseg.testing.coco_sample.load_objects` gives for the COCO sample), the photos
    taken in turn, a new camera path each, each following the photo's ``max_objects`` largest
    instances of at least ``min_area`` photo pixels."""
    from refseg.image import load_image

    objects = [o for o in objects if int(o.mask.sum()) >= min_area]
    by_photo: dict[Path, list] = {}
    for obj in objects:
        by_photo.setdefault(obj.image_path, []).append(obj)
    photos = sorted(by_photo)
    out = []
    for k in range(count):
        path = photos[k % len(photos)]
        chosen = sorted(by_photo[path], key=lambda o: -int(o.mask.sum()))[:max_objects]
        out.append(
            CameraSequence(
                load_image(path),
                [o.mask for o in chosen],
                [f"the {o.category}" for o in chosen],
                length=length,
                size=size,
                seed=k,
                name=f"camera-{path.stem}-{k}",
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# RefShapes video


@dataclass
class _Mover:
    shape: str
    colour: str
    radius: float
    angle: float
    position: tuple[float, float]
    velocity: tuple[float, float]
    bounce: bool


class ShapesSequence(_Sequence):
    """RefShapes video (see the module docstring).

    Objects later in the list are painted above earlier ones. Bouncing objects stay in view;
    the others cross the frame, entering and leaving it. ``spin`` rotates shapes by that many
    degrees per frame.
    """

    def __init__(
        self,
        movers: list[_Mover],
        *,
        length: int = 120,
        size: int = 320,
        seed: int = 0,
        spin: float = 0.0,
        name: str = "shapes",
    ) -> None:
        from refseg.data.refshapes_scene import background

        self.movers = movers
        self.length = length
        self.size = size
        self.seed = seed
        self.spin = spin
        self.name = name
        self.objects = [
            SequenceObject(i, f"the {m.colour} {m.shape}") for i, m in enumerate(movers)
        ]
        self._background, _ = background(np.random.default_rng(seed), size)

    def position(self, index: int, t: int) -> tuple[float, float]:
        """Where object ``index`` is at frame ``t`` (straight lines; bouncers reflect off the
        walls, keeping their whole shape in view)."""
        m = self.movers[index]
        out = []
        for axis in range(2):
            p = m.position[axis] + m.velocity[axis] * t
            if m.bounce:
                low, high = m.radius * 1.2, self.size - m.radius * 1.2
                span = high - low
                q = (p - low) % (2 * span)
                p = low + (q if q <= span else 2 * span - q)
            out.append(p)
        return out[0], out[1]

    def silhouettes(self, t: int) -> list[np.ndarray]:
        from refseg.data.refshapes_scene import rasterize, shape_polygon

        out = []
        for index, m in enumerate(self.movers):
            cx, cy = self.position(index, t)
            polygon = shape_polygon(m.shape, cx, cy, m.radius, m.angle + self.spin * t)
            out.append(rasterize(polygon, self.size))
        return out

    def frame(self, t: int) -> tuple[np.ndarray, list[np.ndarray]]:
        from refseg.data.refshapes_scene import COLOURS

        full = self.silhouettes(t)
        image = self._background.copy()
        kernel = np.ones((3, 3), np.uint8)
        for m, region in zip(self.movers, full):
            if not region.any():
                continue
            image[region] = np.asarray(COLOURS[m.colour], np.float32)
            rim = region & ~cv2.erode(region.astype(np.uint8), kernel).astype(bool)
            image[rim] *= 0.55
        visible = []
        for index, region in enumerate(full):
            above = np.zeros_like(region)
            for later in full[index + 1 :]:
                above |= later
            visible.append(region & ~above)
        rng = np.random.default_rng((self.seed, t))
        image = image + rng.normal(0, 2.0, size=(self.size, self.size, 1))
        return np.clip(image, 0, 255).astype(np.uint8), visible


def shapes_sequence(
    seed: int = 0, *, length: int = 120, size: int = 320, objects: int = 5, crossers: int = 2
) -> ShapesSequence:
    """A random RefShapes video: ``objects - crossers`` bouncing shapes and ``crossers`` that
    enter from one side part-way through and leave by the other, all distinct (colour, shape)
    pairs so each phrase names one object."""
    from refseg.data.refshapes_scene import COLOURS, SHAPES, SIZES

    rng = np.random.default_rng(seed)
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    picks = rng.choice(len(combos), size=objects, replace=False)
    movers = []
    for k, pick in enumerate(picks):
        colour, shape = combos[int(pick)]
        radius = size * SIZES[("medium", "large")[int(rng.integers(0, 2))]]
        speed = float(rng.uniform(1.0, 3.0)) * size / 320
        if k < objects - crossers:
            theta = float(rng.uniform(0, 2 * math.pi))
            start = tuple(float(v) for v in rng.uniform(radius * 1.3, size - radius * 1.3, 2))
            velocity = (speed * math.cos(theta), speed * math.sin(theta))
            movers.append(_Mover(shape, colour, radius, 0.0, start, velocity, True))
        else:
            # Enter at frame t0 from the left or right edge, cross in about half the sequence.
            t0 = float(rng.uniform(0.1, 0.4)) * length
            direction = 1 if rng.integers(0, 2) else -1
            vx = direction * (size + 2.5 * radius) / (0.45 * length)
            x_at_t0 = -1.2 * radius if direction > 0 else size + 1.2 * radius
            y = float(rng.uniform(radius * 1.3, size - radius * 1.3))
            vy = float(rng.uniform(-0.3, 0.3))
            start = (x_at_t0 - vx * t0, y - vy * t0)
            movers.append(_Mover(shape, colour, radius, 0.0, start, (vx, vy), False))
    return ShapesSequence(movers, length=length, size=size, seed=seed, name=f"shapes-{seed}")
