"""Canonical answer strings (SFT targets, test fixtures, fake servers)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from refseg.errors import InputError
from refseg.protocol.answers import BOX_PATH_VIEWBOX


def _int_coord(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{what} is not finite: {value!r}")
    return round(float(value))


def _path_text(path: Any, n: int) -> str:
    """A path given as path data (kept as written) or as polygons (written as integers)."""
    from refseg.paths import PathError, format_path, parse_path

    if isinstance(path, str):
        try:
            if not parse_path(path):
                raise InputError(f"instance {n}: the path encloses no area")
        except PathError as exc:
            raise InputError(f"instance {n}: bad path: {exc}") from None
        return path.strip()
    rings = []
    for ring in path:
        array = np.asarray(ring, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
            raise InputError(f"instance {n}: a path ring needs finite [x, y] vertices")
        rings.append(array)
    text = format_path(rings)
    if not text:
        raise InputError(f"instance {n}: the path encloses no area")
    return text


def format_answer(
    instances: Sequence[tuple],
    *,
    reasoning: str | None = None,
    outline: bool = False,
) -> str:
    """The canonical answer string for ``instances`` (an SFT target).

    ``instances`` are ``(box, points)`` pairs, or ``(box, points, path)`` triples for path
    answers, in the model's coordinate space (see :func:`refseg.grounding.coords.from_pixels`
    and :func:`~refseg.grounding.coords.path_from_pixels`); numbers are rounded to integers
    because every supported convention is integral. One point is written as
    ``"point_2d": [x, y]``, several as a list of points, none leaves ``point_2d`` out. ``path``
    is SVG path data (kept as given) or a list of rings of ``[x, y]`` vertices (written as
    ``"M x y L x y ... Z"``, one subpath per ring); None leaves ``path`` out. With ``outline``
    the rings are written as the compact ``outline`` key instead
    (:func:`refseg.protocol.outline.outline_value`). An empty
    ``instances`` writes ``[]``. ``reasoning`` (when not None) becomes the ``<think>`` block.
    """
    items = []
    for n, instance in enumerate(instances, start=1):
        if len(instance) not in (2, 3):
            raise InputError(f"instance {n}: expected (box, points) or (box, points, path)")
        box, points = instance[0], instance[1]
        path = instance[2] if len(instance) == 3 else None
        if len(box) != 4:
            raise InputError(f"instance {n}: a box needs 4 numbers, got {len(box)}")
        item: dict[str, Any] = {
            "bbox_2d": [_int_coord(v, f"instance {n} box") for v in box],
        }
        pts = []
        for p in points:
            if len(p) != 2:
                raise InputError(f"instance {n}: a point needs 2 numbers, got {len(p)}")
            pts.append([_int_coord(v, f"instance {n} point") for v in p])
        if len(pts) == 1:
            item["point_2d"] = pts[0]
        elif pts:
            item["point_2d"] = pts
        if path is not None and outline:
            from refseg.protocol.outline import outline_value

            item["outline"] = outline_value(box, [np.asarray(r, dtype=float) for r in path])
        elif path is not None:
            item["path"] = _path_text(path, n)
        items.append(item)
    answer = f"<answer>{json.dumps(items)}</answer>"
    if reasoning is None:
        return answer
    if "</think>" in reasoning or "<answer>" in reasoning:
        raise InputError("the reasoning must not contain </think> or <answer> tags")
    return f"<think>{reasoning}</think>{answer}"


#: Outline encodings :func:`encode_outline` writes (``benchmarks/bench_outline_encodings.py``
#: measures them; the parser reads all but ``grid10_packed``, which is measured only).
ENCODINGS = ("path", "box_path", "grid100", "grid100_packed", "grid10_packed")


def encode_outline(box: Sequence[float], rings: Sequence[np.ndarray], encoding: str) -> str:
    """A whole answer (box + outline) in ``encoding``; ``box`` and ``rings`` in the model's
    coordinates (e.g. Qwen3-VL's 0-1000 frame)."""
    from refseg.protocol.outline import grid_values, outline_value

    if encoding not in ENCODINGS:
        raise ValueError(f"unknown outline encoding {encoding!r}; use {', '.join(ENCODINGS)}")
    box = [round(float(v)) for v in box]
    if encoding == "path":
        return format_answer([(box, [], [np.asarray(r) for r in rings])])
    item: dict[str, object] = {"bbox_2d": box}
    if encoding == "box_path":
        x1, y1, x2, y2 = box
        scale = np.array([BOX_PATH_VIEWBOX / max(x2 - x1, 1), BOX_PATH_VIEWBOX / max(y2 - y1, 1)])
        parts = []
        for ring in rings:
            uv = np.rint((np.asarray(ring) - (x1, y1)) * scale).astype(int)
            parts.append("M " + " L ".join(f"{u} {v}" for u, v in uv) + " Z")
        item["box_path"] = " ".join(parts)
    elif encoding == "grid10_packed":
        item["outline10"] = ";".join(
            "".join(f"{x}{y}" for x, y in cells) for cells in grid_values(rings, box, 10)
        )
    else:
        item["outline"] = outline_value(box, rings, packed=encoding == "grid100_packed")
    return f"<answer>{json.dumps([item])}</answer>"
