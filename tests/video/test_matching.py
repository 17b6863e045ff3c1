"""Hungarian matching of re-grounded objects to tracks on mask IoU."""

from __future__ import annotations

import numpy as np

from refseg.video import matching


def test_global_optimum_not_greedy(monkeypatch) -> None:
    # Greedy would pair track 0 with detection 0 (0.6) and leave track 1 alone; the assignment
    # that maximises total IoU pairs 0-1 and 1-0 (0.5 + 0.55).
    ious = np.array([[0.6, 0.5], [0.55, 0.0]])
    monkeypatch.setattr(matching, "pair_ious", lambda a, b: ious)
    masks = [np.zeros((2, 2), bool)] * 2
    result = matching.match(masks, masks)
    assert result.pairs == [(0, 1), (1, 0)]
    assert result.unmatched_tracks == [] and result.unmatched_detections == []


def test_low_iou_pairs_are_new_objects_and_ended_tracks() -> None:
    a = np.zeros((10, 10), bool)
    a[:5, :5] = True
    b = np.zeros((10, 10), bool)
    b[5:, 5:] = True
    c = np.zeros((10, 10), bool)
    c[:5, :4] = True  # IoU 0.8 with a
    result = matching.match([a, b], [c, np.roll(b, 4, axis=1)], min_iou=0.3)
    assert result.pairs == [(0, 0)]
    assert result.unmatched_tracks == [1]  # b's detection moved too far: its track ends
    assert result.unmatched_detections == [1]  # and the far object is a new one
    empty = matching.match([], [a])
    assert empty.pairs == [] and empty.unmatched_detections == [0]
