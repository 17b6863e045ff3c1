"""A compact outline encoding: box-relative vertices on a 0-99 grid, two digits each.

Qwen's tokenizer writes one token per digit, so an outline's cost is its digits: a 16-vertex path
on the 0-1000 grid, ``M 512 300 L 530 310 ...``, is ~180 tokens with its box (3.7x a box + point
answer), tens of seconds on a CPU even with an optimised engine. The outline rides on the box
the answer gives anyway: ``"outline": "0512 3499 ..."`` lists each vertex as two two-digit numbers,
``x`` then ``y``, on a 0-99 grid spanning the box (0 its left/top edge, 99 its right/bottom), four
digits a vertex, a space between vertices, ``;`` between rings (an object in parts, or a hole).
``benchmarks/bench_outline_encodings.py`` measures the alternatives (tokens against round-trip
IoU on the COCO sample); the README has the table.

:func:`read_outline` is the parser's half (:func:`refseg.protocol.parse_answer` reads an
``outline`` key with it), :func:`outline_value` the writer's
(:func:`refseg.protocol.format_answer` with ``outline=True``; whole answers in every measured
encoding: :func:`refseg.protocol.formatting.encode_outline`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = ["GRID", "grid_values", "outline_value", "read_outline"]

#: Cells per box side of the ``outline`` key (values 0 to GRID - 1).
GRID = 100


def grid_values(rings: Sequence[np.ndarray], box: Sequence[float], grid: int) -> list[np.ndarray]:
    """Rings in model coordinates -> integer cells ``0..grid-1`` of the box (clamped)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    size = np.array([max(x2 - x1, 1e-9), max(y2 - y1, 1e-9)])
    out = []
    for ring in rings:
        cells = np.rint((np.asarray(ring, dtype=np.float64) - (x1, y1)) / size * (grid - 1))
        out.append(np.clip(cells, 0, grid - 1).astype(int))
    return out


def _cells_to_model(
    cells: np.ndarray, box: Sequence[float], grid: int
) -> list[tuple[float, float]]:
    x1, y1, x2, y2 = (float(v) for v in box)
    points = np.asarray(cells, dtype=np.float64) / (grid - 1) * (x2 - x1, y2 - y1) + (x1, y1)
    return [(float(x), float(y)) for x, y in points]


def read_outline(
    value: str,
    box: Sequence[float],
    max_vertices: int,
    *,
    grid: int = GRID,
) -> list[list[tuple[float, float]]]:
    """An ``outline`` value -> rings in model coordinates (``ValueError`` with a short reason).

    Each ring is vertices of exactly four digits separated by spaces (``0512 3499``; the space
    may be left out, ``05123499``); rings are separated by ``;``. At most ``max_vertices`` in all.
    ``grid=10`` reads the one-digit variant (two digits a vertex; measured, not in the protocol).
    """
    width = 1 if grid <= 10 else 2
    if not isinstance(value, str):
        raise ValueError("outline is not text")
    if len(value) > 8 * max(max_vertices, 1) + 64:
        raise ValueError("outline is too long")
    rings = []
    total = 0
    for part in value.split(";"):
        digits = re.sub(r"\s+", "", part)
        if not digits:
            continue
        if not digits.isdigit() or len(digits) % (2 * width):
            raise ValueError(f"outline vertices are {2 * width} digits each (x then y)")
        count = len(digits) // (2 * width)
        total += count
        if total > max_vertices:
            raise ValueError("the answer's outlines have too many vertices")
        numbers = np.array([int(digits[i : i + width]) for i in range(0, len(digits), width)])
        ring = _cells_to_model(numbers.reshape(count, 2), box, grid)
        if len(set(ring)) >= 3:
            rings.append(ring)
    return rings


def outline_value(
    box: Sequence[float], rings: Sequence[np.ndarray], *, packed: bool = False
) -> str:
    """The ``outline`` value of ``rings`` (model coordinates) on ``box``: four digits a vertex,
    spaces between vertices (none when ``packed``), ``;`` between rings."""
    joiner = "" if packed else " "
    return ";".join(
        joiner.join(f"{x:02d}{y:02d}" for x, y in cells) for cells in grid_values(rings, box, GRID)
    )
