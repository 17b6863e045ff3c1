"""Comparisons of float-derived outputs that hold across machines and library releases.

Two computations of the same mask (batched vs one by one, ours vs a reference implementation)
agree on the logits only up to float rounding, which changes with the BLAS kernel, the batch
shape and the library release. A thresholded mask can therefore differ exactly where the logit
lies within that rounding of the threshold, and nowhere else: that is what these helpers assert,
instead of bit equality (which broke a fresh machine when transformers moved by one release).
"""

from __future__ import annotations

import numpy as np


def assert_masks_agree(
    mask: np.ndarray,
    reference: np.ndarray,
    logits: np.ndarray,
    *,
    eps: float,
    threshold: float = 0.0,
) -> None:
    """Assert two thresholded masks differ only where ``|logits - threshold| <= eps``.

    ``logits`` are one computation's full-resolution logits (either side's will do when ``eps``
    bounds the difference between the two); ``eps`` must follow from the math of the caller,
    e.g. the measured maximum difference of the low-resolution logits, since bilinear upsampling
    is a convex combination and cannot enlarge it.
    """
    mask = np.asarray(mask, dtype=bool)
    reference = np.asarray(reference, dtype=bool)
    logits = np.asarray(logits, dtype=np.float64)
    if mask.shape != reference.shape or mask.shape != logits.shape:
        raise AssertionError(
            f"shapes differ: mask {mask.shape}, reference {reference.shape}, logits {logits.shape}"
        )
    differ = mask != reference
    margin = np.abs(logits - threshold)
    bad = differ & (margin > eps)
    if bad.any():
        ys, xs = np.nonzero(bad)
        raise AssertionError(
            f"{int(bad.sum())} of {int(differ.sum())} differing pixels have a logit farther than "
            f"{eps:g} from the threshold (first at row {ys[0]}, column {xs[0]}: "
            f"logit {logits[ys[0], xs[0]]:.6g})"
        )
