"""Re-grounding meets tracking: which detection is which track (Hungarian on mask IoU).

When the grounder looks at a frame again, its objects are matched one to one with the tracks
carried into that frame by maximising total mask IoU (``scipy.optimize.linear_sum_assignment``);
a pair below ``min_iou`` is no match. A matched detection keeps its track's ID, an unmatched
detection is a new object (a new ID), and an unmatched track is an object the grounder no longer
sees (it left, or was never the phrase's): its track ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from refseg.masks import pair_ious

#: Below this IoU a detection and a track are different objects.
DEFAULT_MIN_IOU = 0.3


@dataclass
class Matching:
    """``pairs``: (track index, detection index); the rest unmatched, each in ascending order."""

    pairs: list[tuple[int, int]] = field(default_factory=list)
    unmatched_tracks: list[int] = field(default_factory=list)
    unmatched_detections: list[int] = field(default_factory=list)
    ious: np.ndarray | None = None


def match(
    tracks: Sequence[np.ndarray],
    detections: Sequence[np.ndarray],
    *,
    min_iou: float = DEFAULT_MIN_IOU,
) -> Matching:
    """Match track masks to detection masks (dense boolean, same frame).

    >>> a = np.zeros((8, 8), bool); a[:4] = True
    >>> m = match([a], [~a, a])
    >>> m.pairs, m.unmatched_tracks, m.unmatched_detections
    ([(0, 1)], [], [0])
    """
    ious = pair_ious(list(tracks), list(detections))
    pairs: list[tuple[int, int]] = []
    if len(tracks) and len(detections):
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-ious)
        pairs = sorted((int(r), int(c)) for r, c in zip(rows, cols) if ious[r, c] >= min_iou)
    matched_t = {t for t, _ in pairs}
    matched_d = {d for _, d in pairs}
    return Matching(
        pairs=pairs,
        unmatched_tracks=[i for i in range(len(tracks)) if i not in matched_t],
        unmatched_detections=[i for i in range(len(detections)) if i not in matched_d],
        ious=ious,
    )
