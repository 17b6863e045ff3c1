"""The answer protocol: prompts, the tolerant-but-strict parser and canonical formatting."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refseg.errors import InputError
from refseg.protocol import (
    SYSTEM_PROMPT,
    ParsedAnswer,
    ParsedInstance,
    build_prompt,
    format_answer,
    parse_answer,
)

# ---------------------------------------------------------------------------------------------
# Prompts


def test_prompt_states_the_convention_multiplicity_and_empty_answer() -> None:
    norm = build_prompt("the red car", think=False)
    pix = build_prompt("the red car", think=False, coords="pixels")
    assert '"the red car"' in norm
    assert "0-1000" in norm and "0-1000" not in pix
    assert "pixel" in pix
    for text in (norm, pix):
        assert "[]" in text
        assert "Several objects may match" in text
        assert "<answer>" in text and "bbox_2d" in text and "point_2d" in text
        assert "<think>" not in text


def test_prompt_with_reasoning_asks_for_think_block() -> None:
    text = build_prompt("a dog", think=True)
    assert "<think>" in text and "</think>" in text
    assert text.index("<think>") < text.rindex("<answer>")


def test_resized_specs_use_the_pixel_wording() -> None:
    pix = build_prompt("x", think=False, coords="pixels")
    assert build_prompt("x", think=False, coords="resized:max_pixels=1003520") == pix
    with pytest.raises(InputError):
        build_prompt("x", think=False, coords="percent")
    with pytest.raises(InputError):
        build_prompt("  ", think=False)


def test_system_prompt_is_text_or_none() -> None:
    assert SYSTEM_PROMPT is None or isinstance(SYSTEM_PROMPT, str)


# ---------------------------------------------------------------------------------------------
# A battery of real-model-style outputs that must be read


def boxes(parsed: ParsedAnswer) -> list[tuple]:
    return [(i.box, i.points) for i in parsed.instances]


ACCEPTED = [
    # (name, text, expected instances as (box, points), expected repairs subset)
    (
        "canonical",
        '<answer>[{"bbox_2d": [10, 20, 110, 220], "point_2d": [60, 120]}]</answer>',
        [((10, 20, 110, 220), [(60, 120)])],
        set(),
    ),
    (
        "canonical with think",
        "<think>The red car is on the left.</think>"
        '<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]}, '
        '{"bbox_2d": [5, 6, 7, 8], "point_2d": [6, 7]}]</answer>',
        [((1, 2, 3, 4), [(2, 3)]), ((5, 6, 7, 8), [(6, 7)])],
        set(),
    ),
    (
        "box only",
        '<answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>',
        [((1, 2, 3, 4), [])],
        set(),
    ),
    (
        "point_2d as a list of points",
        '<answer>[{"bbox_2d": [0, 0, 9, 9], "point_2d": [[1, 1], [5, 5]]}]</answer>',
        [((0, 0, 9, 9), [(1, 1), (5, 5)])],
        set(),
    ),
    (
        "GenSeg-R1 points",
        '<think>two points</think><answer>[{"bbox_2d": [0, 0, 50, 50], '
        '"points": [[10, 10], [40, 40]]}]</answer>',
        [((0, 0, 50, 50), [(10, 10), (40, 40)])],
        {"key:points"},
    ),
    (
        "Seg-Zero single dict",
        '<think>...</think> <answer>{"bbox": [100, 200, 300, 400], '
        '"points_1": [150, 250], "points_2": [250, 350]}</answer>',
        [((100, 200, 300, 400), [(150, 250), (250, 350)])],
        {"key:bbox", "key:points_n", "dict_not_list"},
    ),
    (
        "Qwen3-VL native with label and code fence, no tags",
        '```json\n[\n  {"bbox_2d": [12, 34, 56, 78], "label": "car"}\n]\n```',
        [((12, 34, 56, 78), [])],
        {"code_fence", "no_answer_tags"},
    ),
    (
        "single quotes and trailing commas",
        "<answer>[{'bbox_2d': [1, 2, 3, 4], 'point_2d': [2, 3],},]</answer>",
        [((1, 2, 3, 4), [(2, 3)])],
        {"single_quotes", "trailing_comma"},
    ),
    (
        "trailing comma in double-quoted JSON",
        '<answer>[{"bbox_2d": [1, 2, 3, 4,], "point_2d": [2, 3]},]</answer>',
        [((1, 2, 3, 4), [(2, 3)])],
        {"trailing_comma"},
    ),
    (
        "missing </answer> (cut after the JSON)",
        '<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]}]',
        [((1, 2, 3, 4), [(2, 3)])],
        {"unclosed_answer"},
    ),
    (
        "prose around the JSON",
        '<answer>Sure! Here it is: [{"bbox_2d": [1, 2, 3, 4]}] Hope this helps.</answer>',
        [((1, 2, 3, 4), [])],
        {"text_around_json"},
    ),
    (
        "bracketed prose before the JSON",
        'I looked for [the man\'s hat] and found: [{"bbox_2d": [1, 2, 3, 4]}]',
        [((1, 2, 3, 4), [])],
        {"text_around_json", "no_answer_tags"},
    ),
    (
        "numbers as strings and floats",
        '<answer>[{"bbox_2d": ["1", "2.5", 30.25, 40], "point_2d": [" 7 ", 8.0]}]</answer>',
        [((1, 2.5, 30.25, 40), [(7, 8)])],
        {"string_numbers", "float_numbers"},
    ),
    (
        "bare dicts separated by commas and newlines",
        '<answer>{"bbox_2d": [1, 2, 3, 4]},\n{"bbox_2d": [5, 6, 7, 8]}\n{"bbox_2d": [9, 9, 10, 10]}'
        "</answer>",
        [((1, 2, 3, 4), []), ((5, 6, 7, 8), []), ((9, 9, 10, 10), [])],
        {"bare_dicts"},
    ),
    (
        "reasoning-model output: lone </think> (template opened it)",
        'the cat sits left</think>\n\n<answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>',
        [((1, 2, 3, 4), [])],
        set(),
    ),
    (
        "unclosed <think> followed by tagged answer",
        '<think>the dog<answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>',
        [((1, 2, 3, 4), [])],
        {"unclosed_think"},
    ),
    (
        "JSON in the reasoning is ignored",
        '<think>maybe [{"bbox_2d": [0, 0, 1, 1]}]?</think><answer>[{"bbox_2d": [5, 5, 9, 9]}]'
        "</answer>",
        [((5, 5, 9, 9), [])],
        set(),
    ),
    (
        "escaped strings inside the JSON",
        '<answer>[{"label": "a \\"quoted\\" ] word", "bbox_2d": [1, 2, 3, 4]}]</answer>',
        [((1, 2, 3, 4), [])],
        set(),
    ),
]


@pytest.mark.parametrize(
    ("name", "text", "expected", "repairs"), ACCEPTED, ids=[a[0] for a in ACCEPTED]
)
def test_accepted_variants(name: str, text: str, expected: list, repairs: set[str]) -> None:
    parsed = parse_answer(text)
    assert parsed.error is None, parsed.error
    assert not parsed.no_target
    assert boxes(parsed) == [
        (tuple(float(v) for v in box), [tuple(float(v) for v in p) for p in pts])
        for box, pts in expected
    ]
    assert repairs <= set(parsed.repairs), parsed.repairs
    assert parsed.canonical == (not parsed.repairs and parsed.answer_closed)
    assert parsed.raw == text


def test_canonical_flags() -> None:
    parsed = parse_answer('<think> looks left </think><answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>')
    assert parsed.canonical and parsed.has_think and parsed.has_answer_tags and parsed.answer_closed
    assert parsed.reasoning == "looks left"
    assert parsed.repairs == []
    lone = parse_answer('reasoning</think><answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>')
    assert lone.reasoning == "reasoning" and not lone.has_think
    noisy = parse_answer('Answer: <answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer> done')
    assert noisy.ok and not noisy.canonical and "text_outside_tags" in noisy.repairs
    untagged = parse_answer('[{"bbox_2d": [1, 2, 3, 4]}]')
    assert untagged.ok and not untagged.has_answer_tags and not untagged.canonical


@pytest.mark.parametrize(
    "text",
    [
        "<answer>[]</answer>",
        "<think>nothing red here</think><answer>[]</answer>",
        "[]",
        "<answer> [ ] ",
    ],
)
def test_empty_list_is_no_target(text: str) -> None:
    parsed = parse_answer(text)
    assert parsed.ok and parsed.no_target and parsed.instances == []


# ---------------------------------------------------------------------------------------------
# Several values, cut-off lists

FINAL_VALUE_WINS = [
    # an empty list quoted in prose, then the fenced answer
    (
        "There is not the empty list [] because a cat is visible: ```json\n"
        '[{"bbox_2d": [10, 20, 30, 40]}]\n```',
        [(10, 20, 30, 40)],
    ),
    # an example box in prose before the real answer
    (
        'Boxes look like {"bbox_2d": [0, 0, 1, 1]}. Answer: [{"bbox_2d": [5, 6, 7, 8]}]',
        [(5, 6, 7, 8)],
    ),
    # a fenced answer, then a prose afterthought quoting a value: the fenced one wins
    (
        '```json\n[{"bbox_2d": [5, 6, 7, 8]}]\n``` (not [] since a cat is there)',
        [(5, 6, 7, 8)],
    ),
]


@pytest.mark.parametrize(("text", "boxes"), FINAL_VALUE_WINS)
def test_the_final_answer_shaped_value_wins(text: str, boxes: list) -> None:
    parsed = parse_answer(text)
    assert parsed.ok and not parsed.no_target, parsed.error
    assert [i.box for i in parsed.instances] == boxes
    assert "earlier_value_ignored" in parsed.repairs and not parsed.canonical


def test_one_value_is_not_marked_as_chosen_among_several() -> None:
    parsed = parse_answer('<answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>')
    assert parsed.canonical and "earlier_value_ignored" not in parsed.repairs


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ('<answer>[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6', 1),
        ('[{"bbox_2d": [1, 2, 3, 4], "point_2d": [2, 3]},\n {"bbox_2d": [5, 6, 7, 8]}, {"bb', 2),
        ('<think>many</think><answer>[{"bbox_2d": [1, 2, 3, 4]}, ', 1),
    ],
)
def test_a_cut_off_list_keeps_its_complete_objects(text: str, kept: int) -> None:
    parsed = parse_answer(text)
    assert parsed.ok and parsed.truncated and len(parsed.instances) == kept
    assert "truncated" in parsed.repairs and not parsed.canonical


# ---------------------------------------------------------------------------------------------
# Rejections: structured failures, never guesses

REJECTED = [
    ("", "empty answer"),
    ("<answer></answer>", "empty answer"),
    ("There is no red car in this image.", "no JSON found"),
    ("<think>the car is at [10, 20, 30, 40]", "<think> is never closed"),
    ('<think>[{"bbox_2d": [1, 2, 3, 4]}]</think>', "no answer after </think>"),
    ('<answer>[{"bbox_2d": [1, 2, 3, 4]</answer>', "unterminated JSON"),
    ('<answer>[{"bbox_2d": [1, 2, 3]}]</answer>', "instance 1: bbox_2d needs 4 numbers"),
    (
        '<answer>[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [1, 2, 3, 4, 5]}]</answer>',
        "instance 2: bbox_2d needs 4 numbers",
    ),
    ('<answer>[{"bbox_2d": "1,2,3,4"}]</answer>', "instance 1: bbox_2d needs 4 numbers"),
    ('<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [1, 2, 3]}]</answer>', "point_2d needs 2"),
    ('<answer>[{"point_2d": [1, 2]}]</answer>', "instance 1: no bbox_2d"),
    ('<answer>[{"box_2d": [1, 2, 3, 4]}]</answer>', "box_2d is not supported"),
    ('<answer>[{"bbox_2d": [1, 2, 3, 4], "bbox": [1, 2, 3, 4]}]</answer>', "both bbox_2d and bbox"),
    (
        '<answer>[{"bbox_2d": [1, 2, 3, 4], "point_2d": [1, 2], "points": [[1, 2]]}]</answer>',
        "both point_2d and points",
    ),
    ('<answer>[{"bbox_2d": [1, 2, "three", 4]}]</answer>', "non-number"),
    ('<answer>[{"bbox_2d": [1, 2, true, 4]}]</answer>', "non-number true"),
    ('<answer>[{"bbox_2d": [1, 2, NaN, 4]}]</answer>', "non-finite"),
    ('<answer>[{"bbox_2d": [1, 2, "1e999", 4]}]</answer>', "non-finite"),
    ('<answer>[{"bbox_2d": [1, 2, null, 4]}]</answer>', "non-number"),
    ('<answer>[{"bbox_2d": [[1, 2], [3, 4]]}]</answer>', "bbox_2d needs 4 numbers"),
    ("<answer>[10, 20, 30, 40]</answer>", "bare list of numbers"),
    ('<answer>["car"]</answer>', "not a list of objects"),
    ('<answer>[{"bbox_2d": [1, 2, 3, 4]}, "car"]</answer>', "instance 2: not an object"),
    (
        '<answer>[]</answer><answer>[{"bbox_2d": [1, 2, 3, 4]}]</answer>',
        "2 <answer> blocks",
    ),
    ('[{"bbox_2d": [1, 2, 3, 4]}]</answer>', "</answer> without <answer>"),
    ("<answer>{'bbox_2d': [1, 2, 3, 4]</answer>", "unterminated JSON"),
    ("<answer>[{bbox_2d: [1, 2, 3, 4]}]</answer>", "invalid JSON"),
    ('<answer>[{"bbox_2d": [1, 2, 3, 4], "points": [1, 2, 3, 4]}]</answer>', "points needs 2"),
]


@pytest.mark.parametrize(("text", "reason"), REJECTED, ids=[r[1] for r in REJECTED])
def test_rejected_outputs_are_structured_failures(text: str, reason: str) -> None:
    parsed = parse_answer(text)
    assert parsed.error is not None and reason in parsed.error, parsed.error
    assert "\n" not in parsed.error and len(parsed.error) < 120
    assert parsed.instances == [] and not parsed.no_target and not parsed.ok
    assert not parsed.canonical
    assert parsed.raw == text


def test_non_text_input_is_an_error_not_an_exception() -> None:
    parsed = parse_answer(None)  # type: ignore[arg-type]
    assert parsed.error == "answer is NoneType, not text"


def test_pathological_nesting_does_not_raise() -> None:
    for text in ("[" * 5000, "[" * 5000 + "]" * 5000, "{" * 3000 + "}" * 3000, "'" + "[" * 500):
        parsed = parse_answer(text)
        assert parsed.error is not None


# ---------------------------------------------------------------------------------------------
# Formatting


def test_format_answer_shapes() -> None:
    text = format_answer(
        [((1.4, 2, 3, 4.6), [(2, 3)]), ((0, 0, 9, 9), []), ((0, 0, 9, 9), [(1, 1), (8, 8)])],
        reasoning="two cars and a sign",
    )
    assert text.startswith("<think>two cars and a sign</think><answer>[")
    assert text.endswith("]</answer>")
    body = json.loads(text[text.index("<answer>") + 8 : -len("</answer>")])
    assert body == [
        {"bbox_2d": [1, 2, 3, 5], "point_2d": [2, 3]},
        {"bbox_2d": [0, 0, 9, 9]},
        {"bbox_2d": [0, 0, 9, 9], "point_2d": [[1, 1], [8, 8]]},
    ]
    assert format_answer([]) == "<answer>[]</answer>"
    assert parse_answer(format_answer([], reasoning="none")).no_target


@pytest.mark.parametrize(
    "instances",
    [
        [((1, 2, 3), [])],
        [((1, 2, 3, 4), [(1, 2, 3)])],
        [((1, 2, float("nan"), 4), [])],
        [((1, 2, True, 4), [])],
        [((1, 2, "3", 4), [])],
    ],
)
def test_format_answer_refuses_bad_instances(instances: list) -> None:
    with pytest.raises(InputError):
        format_answer(instances)


def test_format_answer_refuses_tags_in_reasoning() -> None:
    with pytest.raises(InputError):
        format_answer([], reasoning="x</think>y")


# ---------------------------------------------------------------------------------------------
# Properties

coord = st.integers(min_value=-50, max_value=5000)
point = st.tuples(coord, coord)
instance = st.tuples(st.tuples(coord, coord, coord, coord), st.lists(point, max_size=3))
reasoning = st.one_of(
    st.none(),
    st.text(max_size=60).filter(lambda s: "</think>" not in s and "<answer>" not in s),
)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.lists(instance, max_size=5), reasoning)
def test_format_then_parse_round_trips(instances: list, why: str | None) -> None:
    parsed = parse_answer(format_answer(instances, reasoning=why))
    assert parsed.error is None and parsed.canonical
    assert parsed.no_target == (not instances)
    assert parsed.instances == [
        ParsedInstance(
            box=tuple(float(v) for v in box), points=[(float(x), float(y)) for x, y in pts]
        )
        for box, pts in instances
    ]
    if why is not None:
        assert parsed.has_think and parsed.reasoning == why.strip()


def _check_never_raises(text: str) -> None:
    parsed = parse_answer(text)
    assert isinstance(parsed, ParsedAnswer)
    assert parsed.raw == text
    if parsed.error is not None:
        assert parsed.instances == [] and not parsed.no_target
        assert "\n" not in parsed.error
    else:
        assert parsed.no_target == (not parsed.instances)


@FAST
@given(st.text(max_size=300))
def test_random_text_never_raises(text: str) -> None:
    _check_never_raises(text)


ALPHABET = [*"[]{}\",:'0123456789.-e ", "<answer>", "</answer>", "<think>", "</think>"]


@FAST
@given(st.lists(st.sampled_from(ALPHABET), max_size=80).map("".join))
def test_json_like_noise_never_raises(text: str) -> None:
    _check_never_raises(text)


@FAST
@given(st.lists(instance, min_size=1, max_size=3), reasoning, st.data())
def test_mutated_valid_answers_never_raise(instances: list, why: str | None, data) -> None:
    text = format_answer(instances, reasoning=why)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(text)))
        op = data.draw(st.sampled_from(["delete", "insert", "truncate", "swap"]))
        if op == "delete":
            text = text[:pos] + text[pos + 1 :]
        elif op == "insert":
            text = text[:pos] + data.draw(st.sampled_from(ALPHABET)) + text[pos:]
        elif op == "truncate":
            text = text[:pos]
        elif pos + 1 < len(text):
            text = text[:pos] + text[pos + 1] + text[pos] + text[pos + 2 :]
    _check_never_raises(text)
