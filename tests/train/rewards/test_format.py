"""Format, validity and non-repetition rewards (:mod:`refseg.train.rewards.format`)."""

from __future__ import annotations

import pytest

from refseg.train import rewards as R
from tests.train.rewards.helpers import GT_A, H, W, answer, inst


@pytest.mark.parametrize(
    ("text", "think", "expected"),
    [
        (answer([]), False, 1.0),
        (answer([], think="look"), True, 1.0),
        (answer([], think="look"), False, 0.0),  # reasoning when told not to
        (answer([]), True, 0.0),  # no reasoning when asked
        ("[]", False, 0.0),  # no tags
        ("<answer>[]", False, 0.0),  # unclosed
        ("sure! " + answer([]), False, 0.0),  # prose outside the tags
        ("<answer>not json</answer>", False, 0.0),
        ("<think>a</think><answer>[{'bbox_2d': [1, 2, 3, 4]}]</answer>", True, 1.0),
    ],
)
def test_format_reward(text, think, expected):
    assert R.format_reward(None, [text], think=think) == [expected]


def test_format_strict_refuses_repairs_and_logs_rate():
    logged = {}
    text = "<answer>[{'bbox_2d': [1, 2, 3, 4]}]</answer>"
    assert R.format_reward(None, [text], think=False) == [1.0]
    out = R.format_reward(
        None, [text, answer([])], think=False, strict=True, log_metric=logged.__setitem__
    )
    assert out == [0.0, 1.0]
    assert logged["format_rate"] == 0.5


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], 1.0),
        ([{"bbox_2d": [10, 10, 500, 500], "point_2d": [100, 100]}], 1.0),
        ([{"bbox_2d": [10, 10, 500, 1200], "point_2d": [100, 100]}], 0.0),  # outside the image
        ([{"bbox_2d": [500, 10, 10, 500], "point_2d": [100, 100]}], 0.0),  # inverted
        ([{"bbox_2d": [10, 10, 500, 500], "point_2d": [600, 100]}], 0.0),  # point outside box
        ([{"bbox_2d": [10, 10, 500, 500]}], 0.0),  # no point
        (
            [
                {"bbox_2d": [10, 10, 500, 500], "point_2d": [100, 100]},
                {"bbox_2d": [10, 10, 500, 500], "point_2d": [900, 100]},
            ],
            0.5,
        ),
    ],
)
def test_validity(items, expected):
    assert R.validity_reward(None, [answer(items)], width=[W], height=[H]) == [expected]


def test_validity_of_unreadable_answer_is_zero():
    assert R.validity_reward(None, ["<answer>[{]</answer>"], width=[W], height=[H]) == [0.0]


def test_non_repetition():
    loop = "<think>" + "the red square " * 30 + "</think>" + answer([inst(GT_A)])
    fine = "<think>the red square is left of the blue circle near the top</think>" + answer(
        [inst(GT_A)]
    )
    dup = answer([inst(GT_A), inst(GT_A)])
    out = R.non_repetition_reward(None, [loop, fine, dup], width=[W] * 3, height=[H] * 3)
    assert out[0] < 0.2
    assert out[1] == 1.0
    assert out[2] == 0.5
