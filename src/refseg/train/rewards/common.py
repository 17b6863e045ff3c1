"""What every reward shares: reading completions, dataset columns, logging, and the caches.

TRL passes a completion as a plain string or in its conversational form (a list of messages
whose last ``content`` is a string or a list of typed parts); :func:`completion_text` reads
both. Answers are read with the project's one parser (:func:`refseg.protocol.parse_answer`) and
converted with :func:`refseg.grounding.coords.to_grounding`, exactly as inference does: a reward
that parsed differently from the grounder would teach a format the grounder cannot read.

>>> completion_text([{"role": "assistant", "content": "<answer>[]</answer>"}])
'<answer>[]</answer>'
>>> read = read_answer('<answer>[{"bbox_2d": [100, 100, 500, 500]}]</answer>', 200, 100)
>>> read.grounding.instances[0].box
(20.0, 10.0, 100.0, 50.0)

:class:`RewardCache` holds what the reward functions of one run share between calls (TRL calls
every reward function on the same batch in turn): the last batch read, decoded GT masks of
recent rows and the last batch's mask matches. :func:`~refseg.train.rewards.build_rewards`
gives the functions it builds one cache of their own; reward functions called directly use
:data:`DEFAULT_CACHE` (:func:`reset_caches` empties it). The caches never change a score, they
only skip repeated work.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refseg import masks
from refseg.grounding.base import Grounding

RewardFunc = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or TRL's conversational list of messages.

    A conversational completion is ``[{"role": "assistant", "content": ...}]`` where content is
    a string or a list of ``{"type": "text", "text": ...}`` parts; the assistant messages' texts
    are joined.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts: list[str] = []
    for message in completion:
        if not isinstance(message, dict):
            parts.append(str(message))
            continue
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content", "")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
    return "".join(parts)


@dataclass
class ReadAnswer:
    """One completion, parsed and converted to pixels."""

    text: str
    parsed: Any  # refseg.protocol.ParsedAnswer
    grounding: Grounding


def read_answer(completion: Any, width: int, height: int, convention: Any = None) -> ReadAnswer:
    """Parse a completion with the project's parser and convert it to pixels.

    ``convention`` is a :class:`refseg.grounding.coords.Convention` (or its name); ``None`` means
    the protocol's default 0-1000 grid.
    """
    from refseg.grounding.coords import to_grounding
    from refseg.protocol import parse_answer

    text = completion_text(completion)
    parsed = parse_answer(text)
    grounding = to_grounding(parsed, _convention(convention), int(width), int(height))
    if not grounding.raw_answer:
        grounding.raw_answer = text
    return ReadAnswer(text=text, parsed=parsed, grounding=grounding)


def _convention(convention: Any) -> Any:
    from refseg.grounding.coords import Convention

    return Convention.parse("norm1000" if convention is None else convention)


def _columns(n: int, name: str, values: Any) -> list[Any]:
    """A per-completion column from TRL's kwargs, checked for length."""
    if values is None:
        raise KeyError(f"reward needs the dataset column {name!r}")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def _log(kwargs: dict[str, Any], name: str, value: float) -> None:
    """Log a scalar through TRL's ``log_metric`` hook when the trainer provides one."""
    hook = kwargs.get("log_metric")
    if hook is not None and math.isfinite(value):
        hook(name, float(value))


def _gt_masks(values: Any, height: int, width: int) -> list[np.ndarray | None]:
    """Decode one row's ``gt_masks`` (RLE dicts, or bare ``counts`` strings of size h x w)."""
    out: list[np.ndarray | None] = []
    for value in values or []:
        if value is None:
            out.append(None)
            continue
        rle = value if isinstance(value, dict) else {"size": [height, width], "counts": value}
        out.append(masks.decode(masks.normalize(rle)))
    return out


# --------------------------------------------------------------------------------------------
# Caches


class GTMaskCache:
    """Decoded GT masks of recent rows (LRU of ``size`` rows): a group's 8-16 rollouts share one
    sample's GT, so it is decoded once per group, not once per rollout."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._items: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()

    def get(self, values: Any, height: int, width: int) -> list[np.ndarray]:
        key = (height, width, tuple(v if isinstance(v, str) else repr(v) for v in values or []))
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        decoded = [m for m in _gt_masks(values, height, width) if m is not None]
        self._items[key] = decoded
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return decoded

    def clear(self) -> None:
        self._items.clear()


class RewardCache:
    """What the reward functions of one run share between calls; never changes a score.

    * ``read_all``: the last batch read, keyed by its texts, sizes and convention. TRL calls
      every reward function on the same batch in turn, and parsing (path answers above all) is
      the largest cost they share.
    * ``gt``: a :class:`GTMaskCache` of decoded GT masks.
    * ``last_match``: the last batch's mask matches, so ``mask_iou`` and ``boundary_iou`` match
      each batch once between them (:mod:`refseg.train.rewards.masks`).
    """

    def __init__(self, gt_size: int = 32) -> None:
        self.gt = GTMaskCache(gt_size)
        self._last_read: tuple[Any, list[ReadAnswer]] | None = None
        #: ``(key, reads, matches)`` of the last mask matching, or None.
        self.last_match: tuple[Any, Any, Any] | None = None

    def read_all(
        self, completions: Sequence[Any], kwargs: dict[str, Any], convention: Any
    ) -> list[ReadAnswer]:
        """Every completion of a batch read (columns ``width``, ``height``), once per batch."""
        n = len(completions)
        widths = _columns(n, "width", kwargs.get("width"))
        heights = _columns(n, "height", kwargs.get("height"))
        texts = tuple(completion_text(c) for c in completions)
        key = (texts, tuple(map(int, widths)), tuple(map(int, heights)), str(convention))
        if self._last_read is not None and self._last_read[0] == key:
            return self._last_read[1]
        reads = [
            read_answer(t, int(w), int(h), convention) for t, w, h in zip(texts, widths, heights)
        ]
        self._last_read = (key, reads)
        return reads

    def clear(self) -> None:
        """Forget everything (the next call reads, decodes and matches afresh)."""
        self.gt.clear()
        self._last_read = None
        self.last_match = None


#: The cache of reward functions called directly (not built by ``build_rewards``).
DEFAULT_CACHE = RewardCache()


def reset_caches() -> None:
    """Empty :data:`DEFAULT_CACHE`."""
    DEFAULT_CACHE.clear()


def _read_all(
    completions: Sequence[Any],
    kwargs: dict[str, Any],
    convention: Any,
    cache: RewardCache | None = None,
) -> list[ReadAnswer]:
    return (DEFAULT_CACHE if cache is None else cache).read_all(completions, kwargs, convention)
