""":func:`refseg.train.rewards.build_rewards`: the configured set, named for TRL."""

from __future__ import annotations

import pytest

from refseg.errors import InputError
from refseg.train import rewards as R


def test_build_rewards_drops_zero_weights_and_names_functions():
    funcs, weights = R.build_rewards({"format": 0.5, "accuracy": 1.0, "validity": 0}, think=False)
    from trl.trainer.utils import get_callable_name

    assert [get_callable_name(f) for f in funcs] == ["format_reward", "accuracy_reward"]
    assert weights == [0.5, 1.0]


def test_build_rewards_refuses_unknown_and_all_zero():
    with pytest.raises(InputError, match="unknown reward"):
        R.build_rewards({"acuracy": 1.0}, think=False)
    with pytest.raises(InputError, match="zero"):
        R.build_rewards({"format": 0.0}, think=False)


def test_build_rewards_names_the_path_rewards_for_trl():
    funcs, weights = R.build_rewards(
        {"path_validity": 0.25, "mask_iou": 1.0, "boundary_iou": 0.5}, think=False
    )
    assert [f.__name__ for f in funcs] == ["path_validity", "mask_iou", "boundary_iou"]
    assert weights == [0.25, 1.0, 0.5]
