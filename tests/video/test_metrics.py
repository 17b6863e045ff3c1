"""J&F as DAVIS defines it: region IoU J and boundary F with its empty-mask conventions."""

from __future__ import annotations

import numpy as np
import pytest

from refseg.video.metrics import (
    JFAccumulator,
    boundary_f,
    boundary_tolerance,
    region_j,
    seg2bmap,
    sequence_jf,
)


def square(size: int, x: int, y: int, side: int, shape=(100, 100)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y : y + side, x : x + side] = True
    return mask


@pytest.mark.parametrize(
    ("pred", "gt", "j"),
    [
        (square(0, 10, 10, 20), square(0, 10, 10, 20), 1.0),
        (square(0, 10, 10, 20), square(0, 20, 10, 20), 200 / 600),
        (np.zeros((100, 100), bool), np.zeros((100, 100), bool), 1.0),
        (square(0, 10, 10, 20), np.zeros((100, 100), bool), 0.0),
    ],
)
def test_region_j(pred, gt, j) -> None:
    assert region_j(pred, gt) == pytest.approx(j)


def test_seg2bmap_marks_the_one_pixel_boundary() -> None:
    mask = np.zeros((6, 6), bool)
    mask[1:4, 1:4] = True
    b = seg2bmap(mask)
    # DAVIS's map: the pixels differing from their east, south or south-east neighbour.
    expected = np.zeros((6, 6), bool)
    expected[0, 0:4] = True  # outside, above: south (or south-east) neighbour inside
    expected[1:4, 0] = True  # outside, left: east neighbour inside
    expected[1:4, 3] = True
    expected[3, 1:4] = True
    assert b.tolist() == expected.tolist()


def test_boundary_f_tolerance_and_empty_cases() -> None:
    assert boundary_tolerance(480, 854) == 8  # ceil(0.008 * 979.7)
    a = square(0, 30, 30, 30)
    assert boundary_f(a, a) == 1.0
    # Within the tolerance (ceil(0.008 * 141.4) = 2 px) a shifted outline still matches...
    assert boundary_f(square(0, 31, 30, 30), a) == 1.0
    # ...and far beyond it only the shared edges do.
    far = boundary_f(square(0, 40, 30, 30), a)
    assert 0.2 < far < 0.6
    empty = np.zeros_like(a)
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(empty, a) == 0.0 and boundary_f(a, empty) == 0.0


def test_sequence_jf_and_accumulator_agree() -> None:
    gts = [square(0, 10 + t, 10, 20) for t in range(5)]
    preds = [square(0, 10, 10, 20) for _ in range(5)]
    score = sequence_jf(preds, gts)
    acc = JFAccumulator()
    for p, g in zip(preds, gts):
        acc.add(p, g)
    assert acc.result() == score
    assert score.frames == 5 and 0 < score.j < 1 and score.jf == (score.j + score.f) / 2
    assert sequence_jf(preds, gts, skip_first_last=True).frames == 3
    with pytest.raises(ValueError):
        sequence_jf(preds[:2], gts)
