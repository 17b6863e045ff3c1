"""Path validity: is a path answer (``answer: path``, the path mask head) usable as written?

Every instance has an outline, each ring has at least 3 distinct vertices, every vertex lies
inside the model's frame and the answer keeps the vertex budget. (How well the outline covers
the object is scored on its raster, by :mod:`refseg.train.rewards.masks`.)

>>> def answer(path):
...     return f'<answer>[{{"bbox_2d": [100, 100, 500, 500], "path": "{path}"}}]</answer>'
>>> good = answer("M 100 100 L 500 100 L 500 500 Z")
>>> off = answer("M 100 100 L 1200 100 L 500 500 Z")  # x = 1200 is off the 0-1000 frame
>>> box_only = '<answer>[{"bbox_2d": [100, 100, 500, 500]}]</answer>'
>>> answers = [good, off, box_only, "<answer>[]</answer>"]
>>> path_validity_reward(None, answers, width=[200] * 4, height=[100] * 4)
[1.0, 0.0, 0.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from refseg.train.rewards.common import RewardCache, _convention, _read_all

#: Default vertex budget of ``path_validity`` (the SFT targets' default ``path_vertices``).
PATH_VERTEX_BUDGET = 32


def path_validity_score(parsed: Any, frame: tuple[int, int], max_vertices: int) -> float:
    """Fraction of instances whose outline is usable as written; 0 unreadable, 1 explicit ``[]``.

    Judged in the model's own frame (conversion to pixels clips outlines and would hide a path
    that runs off the image). An instance counts when it has an outline whose every ring has at
    least 3 distinct vertices, every vertex inside ``[0, frame]``, and at most ``max_vertices``
    vertices in all; a box-only instance does not count (the path head was asked for outlines).
    """
    if getattr(parsed, "error", None):
        return 0.0
    instances = list(parsed.instances)
    if not instances:
        return 1.0 if parsed.no_target else 0.0
    fw, fh = frame
    good = 0
    for inst in instances:
        rings = inst.polygons
        if not rings or sum(len(r) for r in rings) > max_vertices:
            continue
        ok = all(
            len(set(ring)) >= 3 and all(0 <= x <= fw and 0 <= y <= fh for x, y in ring)
            for ring in rings
        )
        good += int(ok)
    return good / len(instances)


def path_validity_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    max_vertices: int = PATH_VERTEX_BUDGET,
    cache: RewardCache | None = None,
    **kwargs: Any,
) -> list[float]:
    """:func:`path_validity_score` of each completion (needs ``width``/``height`` columns)."""
    reads = _read_all(completions, kwargs, convention, cache)
    conv = _convention(convention)
    return [
        path_validity_score(r.parsed, conv.frame(int(w), int(h)), max_vertices)
        for r, w, h in zip(reads, kwargs["width"], kwargs["height"])
    ]
