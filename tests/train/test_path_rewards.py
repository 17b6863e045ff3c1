"""Path rewards (TRL signature): validity, Hungarian-matched rasterized mask IoU, boundary IoU."""

from __future__ import annotations

import json

import numpy as np
import pytest

from refseg import masks
from refseg.train import rewards as R

W, H = 200, 100


def rect(x1, y1, x2, y2, w=W, h=H) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def n(x, y):
    """Pixel -> 0-1000 grid of the W x H image."""
    return round(x * 1000 / W), round(y * 1000 / H)


def path_of(x1, y1, x2, y2) -> str:
    pts = [n(x1, y1), n(x2, y1), n(x2, y2), n(x1, y2)]
    return "M " + " L ".join(f"{a} {b}" for a, b in pts) + " Z"


def inst(x1, y1, x2, y2) -> dict:
    return {"bbox_2d": [*n(x1, y1), *n(x2, y2)], "path": path_of(x1, y1, x2, y2)}


def answer(items) -> str:
    return f"<answer>{json.dumps(items)}</answer>"


def cols(gt_rows) -> dict:
    return {
        "width": [W] * len(gt_rows),
        "height": [H] * len(gt_rows),
        "gt_boxes": [[list(map(float, b)) for b in row] for row in gt_rows],
        "gt_masks": [[masks.encode(rect(*b))["counts"] for b in row] for row in gt_rows],
    }


def iou(a, b) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_exact_outline_scores_one_and_extra_instances_are_normalised_by_max():
    gt = (20, 20, 60, 60)
    exact = answer([inst(*gt)])
    extra = answer([inst(*gt), inst(120, 10, 180, 90)])
    scores = R.mask_iou_reward([None] * 2, [exact, extra], **cols([[gt], [gt]]))
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == pytest.approx(0.5)  # one perfect match over max(2 preds, 1 gt)
    missing = R.mask_iou_reward([None], [exact], **cols([[gt, (120, 10, 180, 90)]]))
    assert missing[0] == pytest.approx(0.5)


def test_hungarian_beats_greedy_best_first_pairing():
    # GT a and b side by side; pred P spans both (its best overlap is with b), pred Q lies
    # inside b only. Best-first pairing takes P-b, leaving Q-a = 0; the optimum is P-a + Q-b.
    a, b = (0, 0, 80, 50), (80, 0, 200, 50)
    p, q = (0, 0, 190, 50), (80, 0, 140, 50)
    gts = [rect(*a), rect(*b)]
    preds = [rect(*p), rect(*q)]
    m = np.array([[iou(x, g) for g in gts] for x in preds])
    greedy_first = np.unravel_index(np.argmax(m), m.shape)
    greedy = m[greedy_first] + m[1 - greedy_first[0], 1 - greedy_first[1]]
    best = max(m[0, 0] + m[1, 1], m[0, 1] + m[1, 0])
    assert best > greedy + 0.2  # the case is one where the two differ
    (score,) = R.mask_iou_reward([None], [answer([inst(*p), inst(*q)])], **cols([[a, b]]))
    assert score == pytest.approx(best / 2, abs=0.02)
    assert score > greedy / 2 + 0.1


def test_box_only_instance_is_scored_on_its_box_area_and_fails_path_validity():
    gt = (20, 20, 60, 60)
    box_only = answer([{"bbox_2d": [*n(20, 20), *n(60, 60)]}])
    (score,) = R.mask_iou_reward([None], [box_only], **cols([[gt]]))
    assert score == pytest.approx(1.0)
    (valid,) = R.path_validity_reward([None], [box_only], **cols([[gt]]))
    assert valid == 0.0


def test_path_validity_checks_vertices_frame_and_budget():
    c = cols([[(20, 20, 60, 60)]] * 5)
    good = answer([inst(20, 20, 60, 60)])
    outside = answer(
        [{"bbox_2d": [100, 200, 300, 400], "path": "M 100 200 L 1200 200 L 300 400 Z"}]
    )
    degenerate = answer([{"bbox_2d": [0, 0, 10, 10], "path": "M 0 0 L 10 10 L 0 0 L 10 10 Z"}])
    long = answer([{"bbox_2d": [0, 0, 500, 500], "path": _polygon(40)}])
    unreadable = "<answer>[{</answer>"
    scores = R.path_validity_reward(
        [None] * 5, [good, outside, degenerate, long, unreadable], max_vertices=32, **c
    )
    assert scores[0] == 1.0 and scores[3] == 0.0 and scores[4] == 0.0
    assert scores[1] == 0.0  # a vertex at x=1200 on the 0-1000 frame
    assert scores[2] == 0.0  # parses to nothing usable, or fails the 3-vertex rule
    (relaxed,) = R.path_validity_reward([None], [long], max_vertices=64, **cols([[(0, 0, 9, 9)]]))
    assert relaxed == 1.0


def _polygon(k: int) -> str:
    ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
    pts = [(250 + 200 * np.cos(t), 250 + 200 * np.sin(t)) for t in ang]
    return "M " + " L ".join(f"{x:.0f} {y:.0f}" for x, y in pts) + " Z"


def test_boundary_iou_separates_outlines_that_mask_iou_barely_does():
    # Two predictions with similar mask IoU on a big object: one shrunk evenly by 2 px all
    # round (its edge misses the band), one exact but with a notch: boundary IoU tells them apart.
    gt = (20, 10, 180, 90)
    shrunk = answer([inst(23, 13, 177, 87)])
    exact = answer([inst(*gt)])
    c = cols([[gt], [gt]])
    m = R.mask_iou_reward([None] * 2, [shrunk, exact], **c)
    b = R.boundary_iou_reward([None] * 2, [shrunk, exact], boundary_ratio=0.01, **c)
    assert m[0] > 0.85
    assert b[1] == pytest.approx(1.0) and b[0] < 0.5


def test_no_target_and_unreadable_answers():
    gt = (20, 20, 60, 60)
    c = cols([[], [], [gt]])
    comps = [answer([]), answer([inst(*gt)]), "nonsense"]
    assert R.mask_iou_reward([None] * 3, comps, **c) == [1.0, 0.0, 0.0]
    assert R.boundary_iou_reward([None] * 3, comps, **c) == [1.0, 0.0, 0.0]
    assert R.no_target_reward([None] * 3, comps, **c) == [1.0, 0.0, 0.0]


def test_reduced_raster_scale_stays_close_to_full_resolution():
    rng = np.random.default_rng(0)
    gt = (40, 20, 150, 80)
    comps = []
    for _ in range(8):
        jit = rng.integers(-8, 9, size=4)
        comps.append(answer([inst(*(np.array(gt) + jit).tolist())]))
    c = cols([[gt]] * 8)
    full = R.mask_iou_reward([None] * 8, comps, **c)
    half = R.mask_iou_reward([None] * 8, comps, scale=0.5, **c)
    assert max(abs(a - b) for a, b in zip(full, half)) < 0.03
    assert len(set(np.round(full, 3))) > 1  # the jitter does change the score


def test_build_rewards_names_the_path_rewards_for_trl():
    funcs, weights = R.build_rewards(
        {"path_validity": 0.25, "mask_iou": 1.0, "boundary_iou": 0.5}, think=False
    )
    assert [f.__name__ for f in funcs] == ["path_validity", "mask_iou", "boundary_iou"]
    assert weights == [0.25, 1.0, 0.5]
