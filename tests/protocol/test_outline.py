"""The compact outline encoding: box-relative vertices on a 0-99 grid, four digits each."""

from __future__ import annotations

import numpy as np
import pytest

from refseg.protocol import parse_answer
from refseg.protocol.formatting import ENCODINGS, encode_outline
from refseg.protocol.outline import read_outline

BOX = (100.0, 200.0, 298.0, 398.0)  # 198 wide: one grid cell is 2 units


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0000 9900 9999", [[(100, 200), (298, 200), (298, 398)]]),
        ("000099009999", [[(100, 200), (298, 200), (298, 398)]]),  # the packed form
        ("0000 9900 9999;4040 6040 5060", [
            [(100, 200), (298, 200), (298, 398)], [(180, 280), (220, 280), (200, 320)],
        ]),
        ("0000 0000 0000", []),  # fewer than 3 distinct vertices: no area
    ],
)  # fmt: skip
def test_read_outline(value, expected) -> None:
    rings = read_outline(value, BOX, 100)
    assert [[pytest.approx(p) for p in ring] for ring in rings] == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("0000 990 9999", "4 digits each"),
        ("00a0 9900 9999", "4 digits each"),
        ("0000 " * 50, "too many vertices"),
        ("9" * 100_000, "too long"),
    ],
)
def test_bad_outlines_are_one_line_errors(value, error) -> None:
    with pytest.raises(ValueError, match=error):
        read_outline(value, BOX, 40)


def test_outline_answers_parse_as_path_answers() -> None:
    parsed = parse_answer(
        '<answer>[{"bbox_2d": [100, 200, 298, 398], "outline": "0000 9900 9999"}]'
    )
    (instance,) = parsed.instances
    assert instance.has_path and instance.box == BOX
    assert parse_answer('[{"outline": "0000 9900 9999"}]').error == "instance 1: no bbox_2d"
    bad = parse_answer('[{"bbox_2d": [1, 2, 3, 4], "outline": "12"}]')
    assert "bad outline" in bad.error


@pytest.mark.parametrize("encoding", [e for e in ENCODINGS if e != "grid10_packed"])
def test_every_encoding_reads_back_within_its_grid(encoding) -> None:
    ring = np.array([[120.0, 210.0], [290.0, 230.0], [250.0, 390.0], [110.0, 350.0]])
    parsed = parse_answer(encode_outline(BOX, [ring], encoding))
    (instance,) = parsed.instances
    cell = (BOX[2] - BOX[0]) / 99  # the coarsest of the encodings
    assert np.abs(np.asarray(instance.polygons[0]) - ring).max() <= cell


def test_format_answer_writes_outline_targets_the_parser_reads() -> None:
    from refseg.protocol import build_prompt, format_answer

    ring = np.array([[120.0, 210.0], [290.0, 230.0], [250.0, 390.0]])
    text = format_answer([(BOX, [], [ring]), (BOX, [], [ring + 2])], outline=True)
    assert '"outline": "' in text and '"path"' not in text
    parsed = parse_answer(text)
    assert parsed.canonical and len(parsed.instances) == 2
    assert all(i.has_path for i in parsed.instances)
    prompt = build_prompt("the cat", think=False, answer="outline")
    assert '"outline": "xxyy' in prompt and "00" in prompt and "99" in prompt
