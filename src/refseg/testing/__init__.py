"""Helpers for refseg's own tests and proofs: tiny offline models of the real architectures.

Nothing here is needed at inference; it lives in the package (not under ``tests/``) because
the training proof and downstream users' tests build the same tiny checkpoints.
"""

from __future__ import annotations

from refseg.testing.tiny_vlm import build_tiny_vlm

__all__ = ["build_tiny_vlm"]
