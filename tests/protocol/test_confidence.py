"""Instance and no-target scores from token traces, on traces written by hand."""

from __future__ import annotations

import math

import pytest

from refseg.protocol import parse_answer
from refseg.protocol.confidence import (
    TokenTrace,
    instance_scores,
    no_target_score,
)

LOG = math.log


def trace_of(pieces: list[tuple[str, float]], alternatives=None) -> TokenTrace:
    """A trace from ``(text, probability)`` pieces."""
    return TokenTrace([text for text, _ in pieces], [LOG(p) for _, p in pieces], alternatives or [])


def digits(number: int, p: float) -> list[tuple[str, float]]:
    """Qwen writes one token per digit."""
    return [(d, p) for d in str(number)]


def box_answer(boxes: list[tuple[list[int], float]]) -> list[tuple[str, float]]:
    pieces: list[tuple[str, float]] = [("[", 0.99)]
    for n, (box, p) in enumerate(boxes):
        pieces.append(((", " if n else "") + '{"', 0.99))
        pieces.append(('bbox_2d": [', 0.99))
        for i, value in enumerate(box):
            pieces += digits(value, p)
            pieces.append((", " if i < 3 else "]", 0.99))
        pieces.append(("}", 0.99))
    pieces.append(("]", 0.99))
    return pieces


def test_an_instance_scores_the_geometric_mean_of_its_box_tokens() -> None:
    pieces = box_answer([([12, 340, 56, 780], 0.8)])
    # make one digit hesitant: the geometric mean over the 10 digits falls accordingly
    pieces[3] = (pieces[3][0], 0.1)
    trace = trace_of(pieces)
    parsed = parse_answer(trace.text)
    assert parsed.ok and len(parsed.instances) == 1
    expected = math.exp((9 * LOG(0.8) + LOG(0.1)) / 10)  # the box's ten digit tokens
    assert instance_scores(trace, parsed) == [pytest.approx(expected)]


def test_scores_follow_their_instances_and_skip_numbers_in_reasoning() -> None:
    reasoning = [("<think>", 1.0), ("box 12 34 56 78 maybe", 0.2), ("</think>", 1.0)]
    pieces = reasoning + box_answer([([12, 34, 56, 78], 0.9), ([100, 200, 300, 400], 0.5)])
    trace = trace_of(pieces)
    parsed = parse_answer(trace.text)
    first, second = instance_scores(trace, parsed)
    assert first == pytest.approx(0.9)
    assert second == pytest.approx(0.5)


def test_no_trace_or_another_text_gives_none() -> None:
    trace = trace_of(box_answer([([1, 2, 3, 4], 0.9)]))
    parsed = parse_answer(trace.text)
    assert instance_scores(None, parsed) == [None]
    other = parse_answer(trace.text.replace("[1,", "[2,"))
    assert instance_scores(trace, other) == [None] * len(other.instances)
    assert no_target_score(trace, parsed) is None  # no alternatives recorded


def test_no_target_score_reads_the_step_that_decided() -> None:
    # the model chose "[]" (0.6) over "[{" (0.3); "[" alone decides nothing; " [" is another
    # path (a space first) and not a vote
    step = [("[]", LOG(0.6)), ("[{", LOG(0.3)), ("[", LOG(0.05)), (" [", LOG(0.04))]
    trace = TokenTrace(["[]"], [LOG(0.6)], [step])
    parsed = parse_answer("[]")
    assert parsed.no_target
    assert no_target_score(trace, parsed) == pytest.approx(0.6 / 0.9)


def test_no_target_score_of_an_answer_with_objects() -> None:
    pieces = box_answer([([10, 20, 30, 40], 0.9)])
    alternatives = [[(text, LOG(p))] for text, p in pieces]
    # the step after "[" chose '{"' (0.7) over "]" (0.2) and "]\n" (0.05)
    alternatives[1] = [('{"', LOG(0.7)), ("]", LOG(0.2)), ("]\n", LOG(0.05)), ("x", LOG(0.05))]
    trace = trace_of(pieces, alternatives)
    parsed = parse_answer(trace.text)
    assert no_target_score(trace, parsed) == pytest.approx(0.25 / 0.95)


def test_no_decision_step_gives_none() -> None:
    # a bare dict is not a list: no step chose between empty and objects
    text = '{"bbox_2d": [1, 2, 3, 4]}'
    trace = TokenTrace([text], [LOG(0.9)], [[(text, LOG(0.9))]])
    parsed = parse_answer(text)
    assert parsed.ok and no_target_score(trace, parsed) is None


def test_a_trace_needs_one_probability_per_token() -> None:
    with pytest.raises(ValueError):
        TokenTrace(["a", "b"], [0.0])
