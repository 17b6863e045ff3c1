"""Format rewards: the answer's structure, its validity as written, and no repetition.

* ``format`` keeps the ``<think>``/``<answer>`` structure (or a bare answer when reasoning is off).
* ``validity`` rewards answers the segmenter can use: known keys, 4-number boxes inside the
  image, points inside their own box.
* ``non_repetition`` penalises degenerate loops in the reasoning and duplicated instances.

>>> format_reward(None, ["<think>look</think><answer>[]</answer>", "<answer>[]</answer>"])
[1.0, 0.0]
>>> item = '{"bbox_2d": [10, 10, 500, 500], "point_2d": [100, 100]}'
>>> ok, dup = f"<answer>[{item}]</answer>", f"<answer>[{item}, {item}]</answer>"
>>> off = ok.replace("500]", "1200]")  # the box runs off the 0-1000 frame
>>> validity_reward(None, [ok, off], width=[200, 200], height=[100, 100])
[1.0, 0.0]
>>> loop = "<think>" + "the red one " * 10 + "</think>" + ok
>>> scores = non_repetition_reward(None, [ok, dup, loop], width=[200] * 3, height=[100] * 3)
>>> [round(s, 2) for s in scores]
[1.0, 0.5, 0.38]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from refseg.grounding.base import Grounding
from refseg.train.rewards.boxes import box_iou
from refseg.train.rewards.common import (
    RewardCache,
    _convention,
    _log,
    _read_all,
    completion_text,
)


def format_ok(parsed: Any, *, think: bool, strict: bool = False) -> bool:
    """Whether a parsed answer has the structure the prompt asked for.

    Readable, inside a closed ``<answer>`` block with nothing outside the tags, with a complete
    ``<think>`` block before it exactly when ``think``. ``strict`` also refuses any repaired
    surface noise (single quotes, trailing commas, ...): the canonical form only.
    """
    if not parsed.ok or not parsed.has_answer_tags or not parsed.answer_closed:
        return False
    if "text_outside_tags" in parsed.repairs or "unclosed_think" in parsed.repairs:
        return False
    if strict and not parsed.canonical:
        return False
    return parsed.has_think == bool(think)


def format_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    think: bool = True,
    strict: bool = False,
    **kwargs: Any,
) -> list[float]:
    """1.0 when the completion has the expected structure, else 0.0.

    With ``think`` the answer must be ``<think>...</think>`` followed by ``<answer>...</answer>``;
    without it, a readable answer with no ``<think>`` block. Logs ``format_rate``.
    """
    from refseg.protocol import parse_answer

    scores = []
    for completion in completions:
        parsed = parse_answer(completion_text(completion))
        scores.append(1.0 if format_ok(parsed, think=think, strict=strict) else 0.0)
    if scores:
        _log(kwargs, "format_rate", sum(scores) / len(scores))
    return scores


def validity_score(parsed: Any, frame: tuple[int, int]) -> float:
    """1.0 when every instance is usable as written, partial credit otherwise.

    Judged on the answer as the model wrote it (``parsed``, a
    :class:`~refseg.protocol.ParsedAnswer`) in its own coordinate frame (``frame`` = the
    convention's ``(width, height)``, e.g. ``(1000, 1000)``), because conversion to pixels clips
    boxes and would hide an out-of-image box. An unreadable answer scores 0; an explicit empty
    answer is valid. Otherwise the score is the fraction of instances whose box has 4 finite
    numbers with ``x1 < x2``, ``y1 < y2``, inside ``[0, frame]``, and whose points (at least one)
    lie inside their own box.
    """
    if getattr(parsed, "error", None):
        return 0.0
    instances = list(parsed.instances)
    if not instances:
        return 1.0 if parsed.no_target else 0.0
    fw, fh = frame
    good = 0
    for inst in instances:
        x1, y1, x2, y2 = inst.box
        finite = all(math.isfinite(v) for v in inst.box)
        inside = finite and 0 <= x1 < x2 <= fw and 0 <= y1 < y2 <= fh
        pts_ok = bool(inst.points) and all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in inst.points)
        good += int(inside and pts_ok)
    return good / len(instances)


def validity_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    cache: RewardCache | None = None,
    **kwargs: Any,
) -> list[float]:
    """:func:`validity_score` of each completion (needs ``width``/``height`` columns)."""
    reads = _read_all(completions, kwargs, convention, cache)
    conv = _convention(convention)
    return [
        validity_score(r.parsed, conv.frame(int(w), int(h)))
        for r, w, h in zip(reads, kwargs["width"], kwargs["height"])
    ]


def repetition_score(text: str, grounding: Grounding | None = None, *, n: int = 4) -> float:
    """``1 - (repeated fraction)``: of word ``n``-grams in the text and of duplicate instances.

    Degenerate sampling loops ("the red the red the red ...") and the same box answered twice
    are the two failure modes GRPO tends to amplify; the worse of the two sets the score.
    """
    words = re.findall(r"\w+", text.lower())
    ngram_rep = 0.0
    if len(words) >= n + 1:
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        counts = Counter(grams)
        ngram_rep = sum(c - 1 for c in counts.values()) / len(grams)
    dup_rep = 0.0
    if grounding is not None and len(grounding.instances) > 1:
        boxes = [i.box for i in grounding.instances]
        dups = sum(
            1
            for i in range(1, len(boxes))
            if any(box_iou(boxes[i], boxes[j]) > 0.9 for j in range(i))
        )
        dup_rep = dups / len(boxes)
    return float(1.0 - max(ngram_rep, dup_rep))


def non_repetition_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    convention: Any = None,
    cache: RewardCache | None = None,
    **kwargs: Any,
) -> list[float]:
    """:func:`repetition_score` of each completion (reasoning loops and duplicate instances)."""
    if kwargs.get("width") is None or kwargs.get("height") is None:
        return [repetition_score(completion_text(c)) for c in completions]
    reads = _read_all(completions, kwargs, convention, cache)
    return [repetition_score(r.text, r.grounding) for r in reads]
