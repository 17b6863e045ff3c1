"""The answer protocol: the one prompt and parser shared by inference, evaluation and training.

A grounding model is asked (:func:`build_prompt`) to answer with::

    <think>...</think><answer>[{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}, ...]</answer>

where the ``<think>`` block is present only when reasoning was asked for and ``[]`` means that
nothing in the image matches. Coordinates are in the model's own space (see
:mod:`refseg.grounding.coords`); this module never converts them.

Keeping prompt, parser and SFT target formatting (:func:`format_answer`) in one module is what makes
a trained model's answers parse at inference, and what makes the training format reward reward
exactly what inference can read.

:func:`parse_answer` is deliberately tolerant of the surface noise real models produce and
deliberately strict about structure. It reads, in order of preference:

* the canonical list: ``[{"bbox_2d": [4 numbers], "point_2d": [x, y]}, ...]``; ``point_2d`` is
  optional (a box-only instance) and may also be a list of points ``[[x, y], [x, y]]``;
* GenSeg-R1 style: ``{"bbox_2d": [...], "points": [[x, y], [x, y]]}`` (``points`` may also be a
  single ``[x, y]``);
* Seg-Zero style: a single object ``{"bbox": [...], "points_1": [x, y], "points_2": [x, y]}``
  (``bbox`` is accepted as a synonym of ``bbox_2d`` everywhere);

and tolerates: code fences, single-quoted (Python-literal) JSON, trailing commas, a missing
``</answer>``, prose before/after the JSON (and bracketed prose such as ``[the red car]`` before
it), numbers written as strings or floats, a bare object instead of a list, and several bare objects
separated by commas or newlines. Other keys in an instance (``label``...) are ignored.

Anything else is a structured failure: ``error`` holds a short reason, ``instances`` is empty and
``no_target`` is false. In particular it never reads coordinates out of prose, never completes a
truncated JSON value, never reads an answer out of the ``<think>`` block, never accepts
``box_2d`` (another vendor's key with y-first order), a point-only instance, several ``<answer>``
blocks, or boxes/points with the wrong count of numbers. :func:`parse_answer` never raises.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from refseg.errors import InputError

__all__ = [
    "COORDS",
    "SYSTEM_PROMPT",
    "ParsedAnswer",
    "ParsedInstance",
    "build_prompt",
    "format_answer",
    "parse_answer",
]

#: No system prompt: every instruction is in the user turn, so the model's own chat template
#: default (if any) is kept and the same text works through any chat-completions server.
SYSTEM_PROMPT: str | None = None

#: The coordinate wordings :func:`build_prompt` knows; ``resized:...`` specs use the pixel wording
#: because a Qwen2.5-VL model sees (and answers in) pixels of its own resized input.
COORDS = ("norm1000", "pixels")

_COORD_TEXT = {
    "norm1000": (
        "Coordinates are integers on a 0-1000 scale relative to the image size: (0, 0) is the "
        "top-left corner and (1000, 1000) the bottom-right corner, whatever the image's size."
    ),
    "pixels": (
        "Coordinates are integer pixel positions in the image as you see it: (0, 0) is the "
        "top-left corner, x grows to the right and y downwards."
    ),
}

_FORMAT_EXAMPLE = '[{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}]'


def _coords_key(coords: str) -> str:
    if coords == "norm1000":
        return "norm1000"
    if coords == "pixels" or coords == "resized" or coords.startswith("resized:"):
        return "pixels"
    raise InputError(f"unknown coordinate convention {coords!r}; use norm1000, pixels or resized")


def build_prompt(
    phrase: str, *, think: bool, coords: str = "norm1000", template: str | None = None
) -> str:
    """The user-turn text asking the model to ground ``phrase`` (the image goes before it).

    ``coords`` names the coordinate convention the model answers in (``norm1000``, ``pixels``
    or a ``resized:...`` spec, which uses the pixel wording; a
    :class:`~refseg.grounding.coords.Convention` works too): the prompt states it because
    Qwen models follow either convention when told, and a mismatch silently misplaces boxes.

    ``template`` (with a ``{phrase}`` field) replaces the whole text: for models trained with a
    custom prompt (``prompt_template`` in a training config), which must be asked the same way.
    """
    if not isinstance(phrase, str) or not phrase.strip():
        raise InputError("the phrase is empty")
    if template is not None:
        try:
            return template.format(phrase=phrase.strip())
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError(
                f"prompt template {template!r}: only {{phrase}} may be filled in"
            ) from exc
    wording = _COORD_TEXT[_coords_key(str(coords))]
    lines = [
        f'Find every object in the image that matches this description: "{phrase.strip()}".',
        "Several objects may match: list each of them. For each object give its bounding box "
        "[x1, y1, x2, y2] (top-left and bottom-right corners) and one point [x, y] that lies "
        "on the object itself, inside its box.",
        wording,
        "If nothing in the image matches, the answer is the empty list [].",
    ]
    if think:
        lines.append(
            "First think step by step inside <think> </think> tags, then give the final answer "
            "as a JSON list inside <answer> </answer> tags, in this form:"
        )
        lines.append(f"<think>...</think><answer>{_FORMAT_EXAMPLE}</answer>")
    else:
        lines.append(
            "Give only the answer, as a JSON list inside <answer> </answer> tags, in this form:"
        )
        lines.append(f"<answer>{_FORMAT_EXAMPLE}</answer>")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Formatting (SFT targets)


def _int_coord(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise InputError(f"{what} is not finite: {value!r}")
    return round(value)


def format_answer(
    instances: Sequence[tuple[Sequence[float], Sequence[Sequence[float]]]],
    *,
    reasoning: str | None = None,
) -> str:
    """The canonical answer string for ``instances`` (an SFT target).

    ``instances`` are ``(box, points)`` pairs in the model's coordinate space (see
    :func:`refseg.grounding.coords.from_pixels`); numbers are rounded to integers because every
    supported convention is integral. One point is written as ``"point_2d": [x, y]``, several as
    a list of points, none leaves ``point_2d`` out. An empty ``instances`` writes ``[]``.
    ``reasoning`` (when not None) becomes the ``<think>`` block.
    """
    items = []
    for n, (box, points) in enumerate(instances, start=1):
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
        items.append(item)
    answer = f"<answer>{json.dumps(items)}</answer>"
    if reasoning is None:
        return answer
    if "</think>" in reasoning or "<answer>" in reasoning:
        raise InputError("the reasoning must not contain </think> or <answer> tags")
    return f"<think>{reasoning}</think>{answer}"


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass
class ParsedInstance:
    """One instance as the model wrote it, in the model's coordinate space."""

    box: tuple[float, float, float, float]
    points: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class ParsedAnswer:
    """What :func:`parse_answer` read from one model output.

    Attributes:
        instances: the instances, empty on error or for an explicit ``[]``.
        no_target: true only for an explicit empty answer (``[]``).
        reasoning: the ``<think>`` text (stripped), or the text before a lone ``</think>``.
        error: None when the answer was read, else a short reason.
        raw: the text given.
        has_think: a complete ``<think>...</think>`` block came before the answer.
        has_answer_tags: an ``<answer>`` tag was found.
        answer_closed: the ``<answer>`` was closed by ``</answer>``.
        repairs: each deviation from the canonical form that was tolerated (e.g.
            ``"single_quotes"``, ``"trailing_comma"``, ``"dict_not_list"``, ``"key:points"``);
            empty for a canonical answer. Training format rewards read this.
    """

    instances: list[ParsedInstance] = field(default_factory=list)
    no_target: bool = False
    reasoning: str | None = None
    error: str | None = None
    raw: str = ""
    has_think: bool = False
    has_answer_tags: bool = False
    answer_closed: bool = False
    repairs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The answer was read (instances or an explicit no-target)."""
        return self.error is None

    @property
    def canonical(self) -> bool:
        """Read without any repair, inside closed ``<answer>`` tags.

        Says nothing about reasoning: a format reward for thinking mode also checks ``has_think``.
        """
        return self.ok and self.has_answer_tags and self.answer_closed and not self.repairs


class _Reject(Exception):
    """A structural problem: its message becomes ``ParsedAnswer.error``."""


class _Unterminated(_Reject):
    """A bracket that is never closed."""


class _Invalid(_Reject):
    """A bracketed span that is not JSON (nor a repairable variant of it)."""

    def __init__(self, message: str, end: int) -> None:
        super().__init__(message)
        self.end = end


_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
#: Bound the work spent on one answer: the literal_eval repair path is only tried on spans up to
#: this long, and at most this many candidate JSON starts are examined.
_MAX_REPAIR_CHARS = 20_000
_MAX_CANDIDATES = 64
_BOX_KEYS = ("bbox_2d", "bbox")
_POINT_KEYS = ("point_2d", "points", "points_1", "points_2")


def parse_answer(text: str) -> ParsedAnswer:
    """Read a model's answer; never raises (any failure becomes ``error``)."""
    if not isinstance(text, str):
        return ParsedAnswer(raw="", error=f"answer is {type(text).__name__}, not text")
    parsed = ParsedAnswer(raw=text)
    try:
        _parse_into(parsed, text)
    except _Reject as exc:
        parsed.error = str(exc)
    except Exception as exc:  # never raise: a parser bug must not crash a batch
        parsed.error = f"unreadable answer ({type(exc).__name__})"
    if parsed.error is not None:
        parsed.instances = []
        parsed.no_target = False
    return parsed


def _parse_into(parsed: ParsedAnswer, text: str) -> None:
    region = _split_tags(parsed, text)
    if "```" in region:
        parsed.repairs.append("code_fence")
    if not region.strip():
        raise _Reject("empty answer")
    value, start, end = _find_json(region, parsed.repairs)
    before = region[:start].replace("```json", "").replace("```", "").strip()
    after = region[end:].replace("```", "").strip()
    if before or after:
        parsed.repairs.append("text_around_json")
    if isinstance(value, dict):
        items: list[Any] = [value]
        parsed.repairs.append("dict_not_list")
    elif isinstance(value, list):
        items = value
    else:  # _find_json only returns lists and dicts
        raise _Reject("answer is not a JSON list")
    if not items:
        parsed.no_target = True
        return
    parsed.instances = [_read_instance(n, item, parsed.repairs) for n, item in enumerate(items, 1)]


def _split_tags(parsed: ParsedAnswer, text: str) -> str:
    """Set reasoning and tag flags; return the region that should hold the JSON answer."""
    rest = text
    close = text.find(_THINK_CLOSE)
    if close >= 0:
        opened = text.rfind(_THINK_OPEN, 0, close)
        start = opened + len(_THINK_OPEN) if opened >= 0 else 0
        parsed.has_think = opened >= 0
        parsed.reasoning = text[start:close].strip()
        if text[: max(opened, 0)].strip():
            parsed.repairs.append("text_outside_tags")
        rest = text[close + len(_THINK_CLOSE) :]
    elif _THINK_OPEN in text:
        opened = text.find(_THINK_OPEN)
        answer_at = text.find(_ANSWER_OPEN, opened)
        if answer_at < 0:
            raise _Reject("<think> is never closed")
        # "<think>...<answer>...": the tags say where the answer is, so this is no guess
        parsed.repairs.append("unclosed_think")
        parsed.reasoning = text[opened + len(_THINK_OPEN) : answer_at].strip()
        if text[:opened].strip():
            parsed.repairs.append("text_outside_tags")
        rest = text[answer_at:]
    count = rest.count(_ANSWER_OPEN)
    if count > 1:
        raise _Reject(f"{count} <answer> blocks")
    if count == 0:
        if _ANSWER_CLOSE in rest:
            raise _Reject("</answer> without <answer>")
        parsed.repairs.append("no_answer_tags")
        if close >= 0 and not rest.strip():
            raise _Reject("no answer after </think>")
        return rest
    parsed.has_answer_tags = True
    head, _, body = rest.partition(_ANSWER_OPEN)
    if head.strip():
        parsed.repairs.append("text_outside_tags")
    inner, closed, tail = body.partition(_ANSWER_CLOSE)
    parsed.answer_closed = bool(closed)
    if not closed:
        parsed.repairs.append("unclosed_answer")
    elif tail.strip():
        parsed.repairs.append("text_outside_tags")
    return inner


def _find_json(region: str, repairs: list[str]) -> tuple[Any, int, int]:
    """The first answer-shaped JSON value in ``region`` and its span.

    Candidates start at each ``[`` or ``{`` not inside an earlier candidate. A candidate that
    reads as a dict, an empty list or a list holding a dict is the answer (even if it then fails
    validation: a second answer is never looked for). Candidates that read as something else
    (``[1, 2]``, ``["a"]``) or do not read at all (``[the red car]``) are taken as prose and
    skipped; if no answer is found, the first of those is reported. An object followed only by
    commas/whitespace and more objects is read as the list of all of them.
    """
    first_problem: str | None = None
    skip_until = 0
    tried = 0
    for match in re.finditer(r"[\[{]", region):
        start = match.start()
        if start < skip_until:
            continue  # inside a value already looked at
        tried += 1
        if tried > _MAX_CANDIDATES:
            break
        local: list[str] = []
        try:
            value, end = _read_value(region, start, local)
        except _Unterminated:
            # Every later bracket lies inside this value: reading one of them would take a
            # fragment of a truncated answer for the whole answer.
            raise _Reject("unterminated JSON (truncated answer?)") from None
        except _Invalid as exc:
            first_problem = first_problem or str(exc)
            skip_until = exc.end
            continue
        if isinstance(value, dict):
            more, end = _collect_bare_dicts(region, end, local)
            if more:
                local.append("bare_dicts")
                value = [value, *more]
        if isinstance(value, dict) or (
            isinstance(value, list) and (not value or any(isinstance(v, dict) for v in value))
        ):
            repairs.extend(local)
            return value, start, end
        if first_problem is None:
            if isinstance(value, list) and all(map(_is_number, value)):
                first_problem = "answer is a bare list of numbers, not objects with bbox_2d"
            else:
                first_problem = "answer is not a list of objects"
        skip_until = end
    raise _Reject(first_problem or "no JSON found")


def _collect_bare_dicts(region: str, end: int, repairs: list[str]) -> tuple[list[dict], int]:
    """The objects following one at ``end``, separated only by commas/whitespace."""
    more: list[dict] = []
    pos = end
    while True:
        probe = pos
        while probe < len(region) and region[probe] in " \t\r\n":
            probe += 1
        if probe < len(region) and region[probe] == ",":
            probe += 1
            while probe < len(region) and region[probe] in " \t\r\n":
                probe += 1
        if probe >= len(region) or region[probe] != "{":
            return more, pos
        try:
            value, new_end = _read_value(region, probe, repairs)
        except _Reject:
            return more, pos
        if not isinstance(value, dict):
            return more, pos
        more.append(value)
        pos = new_end


def _read_value(region: str, start: int, repairs: list[str]) -> tuple[Any, int]:
    """Read one JSON value starting at ``region[start]`` (``[`` or ``{``), repairing if needed."""
    try:
        return json.JSONDecoder().raw_decode(region, start)
    except (ValueError, RecursionError):
        pass
    end = _matching_end(region, start)
    span = region[start:end]
    stripped = _strip_trailing_commas(span)
    if stripped != span:
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            pass
        else:
            repairs.append("trailing_comma")
            return value, end
    if len(span) <= _MAX_REPAIR_CHARS:
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
        else:
            if isinstance(value, (list, dict)):
                repairs.append("single_quotes" if "'" in span else "python_literal")
                if stripped != span:
                    repairs.append("trailing_comma")
                return value, end
    raise _Invalid("invalid JSON", end)


def _matching_end(text: str, start: int) -> int:
    """Index just past the bracket closing ``text[start]`` (string-aware); rejects if none."""
    depth = 0
    quote: str | None = None
    escaped = False
    previous = ""  # last non-space character outside strings
    for i in range(start, len(text)):
        ch = text[i]
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch == '"' or (ch == "'" and previous in "[{,:"):
            # an apostrophe inside a word ("man's") does not open a string
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
        if not ch.isspace():
            previous = ch
    raise _Unterminated("unterminated JSON")


def _strip_trailing_commas(span: str) -> str:
    """Drop commas directly followed (after whitespace) by ``]`` or ``}``, outside strings."""
    out: list[str] = []
    quote: str | None = None
    escaped = False
    previous = ""
    n = len(span)
    for i, ch in enumerate(span):
        if quote is not None:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch == '"' or (ch == "'" and previous in "[{,:"):
            quote = ch
        elif ch == ",":
            j = i + 1
            while j < n and span[j] in " \t\r\n":
                j += 1
            if j < n and span[j] in "]}":
                continue
        if not ch.isspace():
            previous = ch
        out.append(ch)
    return "".join(out)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, what: str, repairs: list[str]) -> float:
    if isinstance(value, bool):
        raise _Reject(f"{what} has a non-number {json.dumps(value)}")
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Reject(f"{what} has a non-finite number")
        if not value.is_integer() and "float_numbers" not in repairs:
            repairs.append("float_numbers")
        return value
    if isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
        number = float(value.strip())
        if not math.isfinite(number):
            raise _Reject(f"{what} has a non-finite number")
        if "string_numbers" not in repairs:
            repairs.append("string_numbers")
        return number
    shown = repr(value) if len(repr(value)) <= 20 else repr(value)[:20] + "..."
    raise _Reject(f"{what} has a non-number {shown}")


def _numbers(value: Any, count: int, what: str, repairs: list[str]) -> list[float]:
    if not isinstance(value, list) or len(value) != count:
        raise _Reject(f"{what} needs {count} numbers")
    return [_number(v, what, repairs) for v in value]


def _points(value: Any, what: str, repairs: list[str]) -> list[tuple[float, float]]:
    """``[x, y]`` (one point) or ``[[x, y], ...]`` (several)."""
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        pts = [_numbers(v, 2, what, repairs) for v in value]
        return [(p[0], p[1]) for p in pts]
    x, y = _numbers(value, 2, what, repairs)
    return [(x, y)]


def _read_instance(n: int, item: Any, repairs: list[str]) -> ParsedInstance:
    where = f"instance {n}"
    if not isinstance(item, dict):
        raise _Reject(f"{where}: not an object")
    box_keys = [k for k in _BOX_KEYS if k in item]
    if not box_keys:
        if "box_2d" in item:
            raise _Reject(f"{where}: box_2d is not supported (use bbox_2d, x1,y1,x2,y2)")
        raise _Reject(f"{where}: no bbox_2d")
    if len(box_keys) > 1:
        raise _Reject(f"{where}: both bbox_2d and bbox")
    key = box_keys[0]
    if key != "bbox_2d":
        _note(repairs, f"key:{key}")
    x1, y1, x2, y2 = _numbers(item[key], 4, f"{where}: {key}", repairs)
    point_keys = [k for k in _POINT_KEYS if k in item]
    if "point_2d" in point_keys and len(point_keys) > 1:
        raise _Reject(f"{where}: both point_2d and {point_keys[1]}")
    if "points" in point_keys and len(point_keys) > 1:
        raise _Reject(f"{where}: both points and {point_keys[-1]}")
    points: list[tuple[float, float]] = []
    for pk in point_keys:
        value = item[pk]
        if pk == "point_2d":
            points = _points(value, f"{where}: point_2d", repairs)
        elif pk == "points":
            _note(repairs, "key:points")
            points = _points(value, f"{where}: points", repairs)
        else:  # points_1 / points_2 (Seg-Zero): exactly one point each
            _note(repairs, "key:points_n")
            x, y = _numbers(value, 2, f"{where}: {pk}", repairs)
            points.append((x, y))
    return ParsedInstance(box=(x1, y1, x2, y2), points=points)


def _note(repairs: list[str], name: str) -> None:
    if name not in repairs:
        repairs.append(name)
