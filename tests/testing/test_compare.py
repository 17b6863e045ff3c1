"""The tolerant mask comparison accepts flips at the threshold and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from refseg.testing.compare import assert_masks_agree


def _logits() -> np.ndarray:
    return np.linspace(-1.0, 1.0, 64, dtype=np.float32).reshape(8, 8)


def test_identical_masks_agree() -> None:
    logits = _logits()
    assert_masks_agree(logits > 0, logits > 0, logits, eps=0.0)


def test_a_flip_next_to_the_threshold_is_tolerated() -> None:
    logits = _logits()
    near = int(np.argmin(np.abs(logits)))
    flipped = (logits > 0).ravel().copy()
    flipped[near] = ~flipped[near]
    margin = float(np.abs(logits).ravel()[near])
    assert_masks_agree(flipped.reshape(8, 8), logits > 0, logits, eps=margin + 1e-6)


def test_a_flip_far_from_the_threshold_fails() -> None:
    logits = _logits()
    flipped = logits > 0
    flipped[0, 0] = True  # logit -1.0
    with pytest.raises(AssertionError, match="1 of 1 differing pixels"):
        assert_masks_agree(flipped, logits > 0, logits, eps=1e-3)


def test_shape_mismatch_fails() -> None:
    logits = _logits()
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_masks_agree(logits[:4] > 0, logits > 0, logits, eps=1.0)
