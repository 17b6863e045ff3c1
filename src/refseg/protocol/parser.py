"""The answer parser: reads what a grounding model wrote, tolerant of noise, strict on structure.

A grounding model is asked (:func:`refseg.protocol.build_prompt`) to answer with::

    <think>...</think><answer>[{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}, ...]</answer>

where the ``<think>`` block is present only when reasoning was asked for and ``[]`` means that
nothing in the image matches. Coordinates are in the model's own space (see
:mod:`refseg.grounding.coords`); this module never converts them.

Keeping prompt, parser and SFT target formatting (:func:`refseg.protocol.format_answer`) in one
package is what makes a trained model's answers parse at inference, and what makes the training
format reward reward exactly what inference can read.

:func:`parse_answer` is deliberately tolerant of the surface noise real models produce and
deliberately strict about structure. It reads, in order of preference:

* the canonical list: ``[{"bbox_2d": [4 numbers], "point_2d": [x, y]}, ...]``; ``point_2d`` is
  optional (a box-only instance) and may also be a list of points ``[[x, y], [x, y]]``;
* GenSeg-R1 style: ``{"bbox_2d": [...], "points": [[x, y], [x, y]]}`` (``points`` may also be a
  single ``[x, y]``);
* Seg-Zero style: a single object ``{"bbox": [...], "points_1": [x, y], "points_2": [x, y]}``
  (``bbox`` is accepted as a synonym of ``bbox_2d`` everywhere);
* path answers (the path mask head): ``{"bbox_2d": [...], "path": "M x y L x y ... Z"}``, SVG
  path data in the same coordinates as the box (read by
  :func:`refseg.paths.parse_path`: ``M/L/H/V/Z`` absolute and relative, curves and
  arcs flattened, each subpath one ring: an object in several parts, or a hole); or
  ``"polygon": [[x, y], ...]`` (one ring) or ``[[[x, y], ...], ...]`` (several); or
  ``"box_path": "M u v ..."``, Moondream's box-relative form: path data on a 0-960 square that
  spans ``bbox_2d`` (which it then needs); or ``"outline": "0512 3499 ..."``, the compact
  encoding of :mod:`refseg.protocol.outline` (box-relative vertices on a 0-99 grid, four digits
  each; needs ``bbox_2d`` too). ``bbox_2d`` may be left out next to ``path`` or
  ``polygon``: the outline's bounding box is used (``box_derived``). Each instance has at most
  one of the three; a path that is malformed, encloses no area, holds a non-finite or huge
  number, or has more than 100,000 vertices (across the whole answer) is a structured failure
  like a bad box;

and tolerates: code fences, single-quoted (Python-literal) JSON, trailing commas, a missing
``</answer>``, prose before/after the JSON (and bracketed prose such as ``[the red car]`` before
it), numbers written as strings or floats, a bare object instead of a list, and several bare objects
separated by commas or newlines. Other keys in an instance (``label``...) are ignored.

When several answer-shaped values appear, the last one is the answer (the last fenced one, if
any is in a code fence): models quote examples in prose before answering. A list cut off by the
token limit keeps the objects it completed and is marked ``truncated`` (a repair, so never
canonical: training's format reward scores it as a failure).

Anything else is a structured failure: ``error`` holds a short reason, ``instances`` is empty and
``no_target`` is false. In particular it never reads coordinates out of prose, never completes a
truncated JSON value (a cut-off object is dropped, never guessed), never reads an answer out of
the ``<think>`` block, never accepts ``box_2d`` (another vendor's key with y-first order), a
point-only instance, several ``<answer>`` blocks, or boxes/points with the wrong count of numbers.
:func:`parse_answer` never raises.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from refseg.protocol.answers import BOX_PATH_VIEWBOX, ParsedAnswer, ParsedInstance


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
_PATH_KEYS = ("path", "polygon", "box_path", "outline")
#: Most outline vertices one answer may hold, all instances together.
MAX_ANSWER_VERTICES = 100_000


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
    parsed.truncated = "truncated" in parsed.repairs
    if not items:
        parsed.no_target = True
        return
    budget = [MAX_ANSWER_VERTICES]
    parsed.instances = [
        _read_instance(n, item, parsed.repairs, budget) for n, item in enumerate(items, 1)
    ]


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


def _fences(region: str) -> list[tuple[int, int]]:
    """Spans of the code-fenced blocks (between a pair of triple backticks)."""
    marks = [m.start() for m in re.finditer("```", region)]
    return list(zip(marks[::2], marks[1::2]))


def _find_json(region: str, repairs: list[str]) -> tuple[Any, int, int]:
    """The answer: the last answer-shaped JSON value in ``region`` (the last fenced one, if any
    is fenced), and its span.

    Candidates start at each ``[`` or ``{`` not inside an earlier candidate. A candidate that
    reads as a dict, an empty list or a list holding a dict is answer-shaped. Models quote
    example values in prose before the real answer ("not the empty list [] because a cat is
    visible: ```json [...]```"), so the final value wins, and a fenced one wins over unfenced
    prose; earlier answer-shaped values are taken as prose (``earlier_value_ignored``). The chosen
    one is the answer even if it then fails validation. Candidates that read as something else
    (``[1, 2]``, ``["a"]``) or do not read at all (``[the red car]``) are prose too; if no answer
    is found, the first of those is reported. An object followed only by commas/whitespace and
    more objects is read as the list of all of them.

    A list cut off before its end (``max_new_tokens`` in a crowded scene) keeps the objects it
    completed and is marked ``truncated``; a cut-off value with no complete object is refused.
    """
    first_problem: str | None = None
    skip_until = 0
    tried = 0
    found: list[tuple[Any, int, int, list[str]]] = []
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
            # Every later bracket lies inside this value: it is the last one.
            salvaged = _complete_objects(region, start, local)
            if not salvaged:
                raise _Reject("unterminated JSON (truncated answer?)") from None
            found.append((salvaged, start, len(region), [*local, "truncated"]))
            break
        except _Invalid as exc:
            first_problem = first_problem or str(exc)
            skip_until = exc.end
            continue
        if isinstance(value, dict):
            more, end = _collect_bare_dicts(region, end, local)
            if more:
                local.append("bare_dicts")
                value = [value, *more]
        skip_until = end
        if isinstance(value, dict) or (
            isinstance(value, list) and (not value or any(isinstance(v, dict) for v in value))
        ):
            found.append((value, start, end, local))
        elif first_problem is None:
            if isinstance(value, list) and all(map(_is_number, value)):
                first_problem = "answer is a bare list of numbers, not objects with bbox_2d"
            else:
                first_problem = "answer is not a list of objects"
    if not found:
        raise _Reject(first_problem or "no JSON found")
    fences = _fences(region)
    fenced = [f for f in found if any(a < f[1] < b for a, b in fences)]
    value, start, end, local = (fenced or found)[-1]
    repairs.extend(local)
    if len(found) > 1:
        repairs.append("earlier_value_ignored")
    return value, start, end


def _complete_objects(region: str, start: int, repairs: list[str]) -> list[dict]:
    """The objects a list cut off before its ``]`` completed (empty for anything else)."""
    if region[start] != "[":
        return []
    out: list[dict] = []
    pos = start + 1
    while len(out) < _MAX_CANDIDATES * 64:
        while pos < len(region) and region[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(region) or region[pos] != "{":
            return out
        try:
            value, pos = _read_value(region, pos, repairs)
        except _Reject:
            return out
        if not isinstance(value, dict):
            return out
        out.append(value)
    return out


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


def _read_instance(n: int, item: Any, repairs: list[str], budget: list[int]) -> ParsedInstance:
    where = f"instance {n}"
    if not isinstance(item, dict):
        raise _Reject(f"{where}: not an object")
    box_keys = [k for k in _BOX_KEYS if k in item]
    path_keys = [k for k in _PATH_KEYS if k in item]
    if len(path_keys) > 1:
        raise _Reject(f"{where}: both {path_keys[0]} and {path_keys[1]}")
    box: tuple[float, float, float, float] | None = None
    if not box_keys:
        if "box_2d" in item:
            raise _Reject(f"{where}: box_2d is not supported (use bbox_2d, x1,y1,x2,y2)")
        if not path_keys or path_keys[0] in ("box_path", "outline"):
            raise _Reject(f"{where}: no bbox_2d")
    elif len(box_keys) > 1:
        raise _Reject(f"{where}: both bbox_2d and bbox")
    else:
        key = box_keys[0]
        if key != "bbox_2d":
            _note(repairs, f"key:{key}")
        x1, y1, x2, y2 = _numbers(item[key], 4, f"{where}: {key}", repairs)
        box = (x1, y1, x2, y2)
    polygons: list[list[tuple[float, float]]] = []
    if path_keys:
        polygons = _read_outline(where, path_keys[0], item[path_keys[0]], box, repairs, budget)
    box_derived = box is None
    if box is None:
        xs = [x for ring in polygons for x, _ in ring]
        ys = [y for ring in polygons for _, y in ring]
        box = (min(xs), min(ys), max(xs), max(ys))
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
    return ParsedInstance(box=box, points=points, polygons=polygons, box_derived=box_derived)


def _read_outline(
    where: str,
    key: str,
    value: Any,
    box: tuple[float, float, float, float] | None,
    repairs: list[str],
    budget: list[int],
) -> list[list[tuple[float, float]]]:
    """The rings of a ``path``, ``polygon``, ``box_path`` or ``outline`` value, in model
    coordinates.

    ``budget`` is the answer's remaining vertex allowance (one list shared by all instances),
    so a long answer of many paths is bounded as a whole.
    """
    from refseg.paths import MAX_ABS_COORD, PathError, parse_path

    if key == "polygon":
        if not isinstance(value, list) or not value:
            raise _Reject(f"{where}: polygon needs a list of [x, y] vertices")
        nested = all(isinstance(v, list) and v and isinstance(v[0], list) for v in value)
        rings_in = value if nested else [value]
        rings = []
        for ring in rings_in:
            if not isinstance(ring, list):
                raise _Reject(f"{where}: polygon needs lists of [x, y] vertices")
            budget[0] -= len(ring)
            if budget[0] < 0:
                raise _Reject(f"{where}: the answer's outlines have too many vertices")
            pts = [tuple(_numbers(v, 2, f"{where}: polygon", repairs)) for v in ring]
            if any(abs(c) > MAX_ABS_COORD for p in pts for c in p):
                raise _Reject(f"{where}: polygon has a number out of range")
            if len(set(pts)) >= 3:
                rings.append(pts)
    elif key == "outline":
        from refseg.protocol.outline import read_outline

        assert box is not None  # checked by the caller
        try:
            rings = read_outline(value, box, max(0, budget[0]))
        except ValueError as exc:
            raise _Reject(f"{where}: bad outline: {exc}") from None
        budget[0] -= sum(len(r) for r in rings)
    else:
        if not isinstance(value, str):
            raise _Reject(f"{where}: {key} is not text (SVG path data)")
        try:
            arrays = parse_path(value, max_vertices=max(0, budget[0]))
        except PathError as exc:
            raise _Reject(f"{where}: bad {key}: {exc}") from None
        budget[0] -= sum(len(a) for a in arrays)
        rings = [[(float(x), float(y)) for x, y in a.tolist()] for a in arrays]
        if key == "box_path":
            assert box is not None  # checked by the caller
            bx1, by1, bx2, by2 = box
            sx, sy = (bx2 - bx1) / BOX_PATH_VIEWBOX, (by2 - by1) / BOX_PATH_VIEWBOX
            rings = [[(bx1 + u * sx, by1 + v * sy) for u, v in ring] for ring in rings]
    if not rings:
        raise _Reject(f"{where}: the {key} encloses no area")
    return rings


def _note(repairs: list[str], name: str) -> None:
    if name not in repairs:
        repairs.append(name)
