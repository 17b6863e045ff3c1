"""J&F, the video object segmentation metric of DAVIS, Ref-YouTube-VOS and MeViS.

J is the region similarity (mask IoU); F the boundary F-measure: the one-pixel boundaries of the
prediction and of the ground truth (DAVIS's ``seg2bmap``) are matched within a tolerance of
``ceil(0.008 x image diagonal)`` pixels (a disk), precision is the share of predicted boundary
pixels near a true one, recall the converse, F their harmonic mean. J&F is the mean of the two.

Empty cases follow the DAVIS 2017 reference code rather than turning 0/0 into a silent number:
J is 1 when both masks are empty; F is 1 when both boundaries are empty, and 0 when exactly one
is (precision 1 recall 0, or the converse). A sequence's J (F) is the mean over its frames;
``skip_first_last`` drops the first and last frame as DAVIS's semi-supervised evaluation does
(its first frame is given); Ref-YouTube-VOS and MeViS score every frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

#: DAVIS's boundary tolerance as a fraction of the image diagonal.
BOUND_TH = 0.008


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mask IoU; 1.0 when both masks are empty (DAVIS ``db_eval_iou``).

    >>> a = np.zeros((4, 4), bool); a[:2] = True
    >>> region_j(a, a), region_j(a, ~a), region_j(a & False, a & False)
    (1.0, 0.0, 1.0)
    """
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """The one-pixel boundary of a binary mask, as DAVIS's ``seg2bmap`` at the mask's own size:
    a pixel is boundary where it differs from its east, south or south-east neighbour."""
    seg = np.asarray(mask, bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


@lru_cache(maxsize=16)
def _disk(radius: int) -> np.ndarray:
    """skimage's ``disk(radius)``: the pixels with ``x^2 + y^2 <= r^2``."""
    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xs * xs + ys * ys <= radius * radius).astype(np.uint8)


def boundary_tolerance(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """The matching distance in pixels: ``ceil(bound_th x diagonal)`` (``bound_th`` >= 1 is a
    pixel count already).

    >>> boundary_tolerance(480, 854)
    8
    """
    if bound_th >= 1:
        return int(bound_th)
    return math.ceil(bound_th * math.hypot(height, width))


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """DAVIS's boundary F-measure of one frame (``db_eval_boundary``)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    radius = boundary_tolerance(*gt.shape[:2], bound_th)
    fg = seg2bmap(pred)
    gt_b = seg2bmap(gt)
    n_fg, n_gt = int(np.count_nonzero(fg)), int(np.count_nonzero(gt_b))
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # precision 1 and recall 0, or the converse
    disk = _disk(radius)
    fg_dil = cv2.dilate(fg.astype(np.uint8), disk).astype(bool)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), disk).astype(bool)
    precision = np.count_nonzero(fg & gt_dil) / n_fg
    recall = np.count_nonzero(gt_b & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass
class JF:
    """One object's (or expression's) scores over a sequence."""

    j: float
    f: float
    frames: int

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


def sequence_jf(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    *,
    skip_first_last: bool = False,
    bound_th: float = BOUND_TH,
) -> JF:
    """Mean J and mean F over a sequence's frames (same length, same sizes)."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predicted frames for {len(gts)} ground-truth frames")
    pairs = list(zip(preds, gts))
    if skip_first_last:
        pairs = pairs[1:-1]
    if not pairs:
        raise ValueError("no frames to score")
    js = [region_j(p, g) for p, g in pairs]
    fs = [boundary_f(p, g, bound_th) for p, g in pairs]
    return JF(float(np.mean(js)), float(np.mean(fs)), len(pairs))


class JFAccumulator:
    """Per-frame J and F summed as frames stream by, so a long sequence is scored without
    keeping its masks."""

    def __init__(self, bound_th: float = BOUND_TH) -> None:
        self.bound_th = bound_th
        self.j: list[float] = []
        self.f: list[float] = []

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self.j.append(region_j(pred, gt))
        self.f.append(boundary_f(pred, gt, self.bound_th))

    def result(self) -> JF:
        if not self.j:
            raise ValueError("no frames to score")
        return JF(float(np.mean(self.j)), float(np.mean(self.f)), len(self.j))
