"""Path validity (:mod:`refseg.train.rewards.paths`)."""

from __future__ import annotations

import numpy as np
import pytest

from refseg.train import rewards as R
from tests.train.rewards.helpers import answer, columns, n, path_inst


def test_box_only_instance_is_scored_on_its_box_area_and_fails_path_validity():
    gt = (20, 20, 60, 60)
    box_only = answer([{"bbox_2d": [*n(20, 20), *n(60, 60)]}])
    (score,) = R.mask_iou_reward([None], [box_only], **columns([[gt]]))
    assert score == pytest.approx(1.0)
    (valid,) = R.path_validity_reward([None], [box_only], **columns([[gt]]))
    assert valid == 0.0


def test_path_validity_checks_vertices_frame_and_budget():
    c = columns([[(20, 20, 60, 60)]] * 5)
    good = answer([path_inst(20, 20, 60, 60)])
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
    (relaxed,) = R.path_validity_reward(
        [None], [long], max_vertices=64, **columns([[(0, 0, 9, 9)]])
    )
    assert relaxed == 1.0


def _polygon(k: int) -> str:
    ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
    pts = [(250 + 200 * np.cos(t), 250 + 200 * np.sin(t)) for t in ang]
    return "M " + " L ".join(f"{x:.0f} {y:.0f}" for x, y in pts) + " Z"
