"""Request parsing: CLI strings and API numbers give the same prompts, base64 forms, fields."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refseg.cli.segment import build_prompts as cli_build_prompts
from refseg.errors import InputError
from refseg.serve.inputs import (
    HTTPError,
    decode_base64_image,
    job_from_form,
    job_from_json,
)
from refseg.types import build_prompts

coordinate = st.floats(min_value=-50, max_value=250, allow_nan=False, width=32)
boxes = st.lists(st.tuples(coordinate, coordinate, coordinate, coordinate), max_size=3)
points = st.lists(st.tuples(coordinate, coordinate, st.sampled_from([0, 1])), max_size=3)


def _outcome(function, *args):
    try:
        prompts = function(*args)
    except InputError:
        return "refused"
    return [(p.box, p.points, p.labels) for p in prompts]


@settings(max_examples=300, deadline=None)
@given(boxes=boxes, points=points, width=st.integers(1, 200), height=st.integers(1, 200))
def test_api_prompts_follow_the_cli_rules(boxes, points, width, height):
    """Same clipping, same refusals, same prompts as ``refseg segment --box/--point``."""
    cli = _outcome(
        cli_build_prompts,
        [",".join(repr(float(v)) for v in b) for b in boxes],
        [f"{x!r},{y!r},{label}" for x, y, label in points],
        width,
        height,
    )
    assert _outcome(build_prompts, boxes, points, width, height) == cli


def test_base64_forms():
    data = b"\x89PNG\r\n\x1a\n-some-bytes-\xff\xfe"
    plain = base64.b64encode(data).decode()
    assert decode_base64_image(plain) == data
    assert decode_base64_image("data:image/png;base64," + plain) == data
    assert decode_base64_image(base64.urlsafe_b64encode(data).decode().rstrip("=")) == data
    wrapped = "\n".join(plain[i : i + 8] for i in range(0, len(plain), 8))
    assert decode_base64_image(wrapped) == data
    with pytest.raises(HTTPError) as info:
        decode_base64_image("data:text/plain;base64," + plain)
    assert info.value.status == 415
    for bad in ("", "####", "data:image/png,rawtext"):
        with pytest.raises(HTTPError) as info:
            decode_base64_image(bad)
        assert info.value.status == 422


def test_form_fields():
    job = job_from_form(
        [
            ("box", "1,2,30,40"),
            ("point", "5,6"),
            ("point", "7,8,0"),
            ("points", "[[9, 10, 1]]"),
            ("overlay", "on"),
            ("mask_png", "0"),
            ("refine", "2"),
        ],
        b"img",
    )
    assert job.boxes == [(1.0, 2.0, 30.0, 40.0)]
    assert job.points == [(5.0, 6.0, 1), (7.0, 8.0, 0), (9.0, 10.0, 1)]
    assert (job.overlay, job.mask_png, job.refine, job.phrase) == (True, False, 2, None)
    with pytest.raises(HTTPError, match="one phrase"):
        job_from_form([("phrase", "a"), ("phrase", "b")], b"img")
    with pytest.raises(HTTPError, match="no 'image'"):
        job_from_form([("phrase", "a")], None)
    with pytest.raises(HTTPError, match="list of lists"):
        job_from_form([("boxes", "[1, 2, 3, 4]")], b"img")


def test_json_rejects_unknown_fields_and_bool_coordinates():
    image = base64.b64encode(b"x").decode()
    with pytest.raises(HTTPError, match="mask_pngs"):
        job_from_json(b'{"image": "%s", "mask_pngs": true}' % image.encode())
    with pytest.raises(HTTPError) as info:
        job_from_json(b'{"image": "%s", "points": [[1, 2, 5]]}' % image.encode())
    assert "label" in info.value.message
