"""Request parsing: CLI strings and API numbers give the same prompts, base64 forms, fields."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refseg.cli.segment import build_prompts as cli_build_prompts
from refseg.errors import InputError
from refseg.serve.inputs import (
    HTTPError,
    decode_base64_image,
    decode_image,
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


# --- hostile bodies: every refusal is a 4xx HTTPError ----------------------------------------

_IMAGE_B64 = base64.b64encode(b"x").decode()


def _status(function, *args) -> int | None:
    """None when ``function`` accepted the input, else the HTTPError's status."""
    try:
        function(*args)
    except HTTPError as exc:
        assert exc.message and "\n" not in exc.message
        return exc.status
    return None


@pytest.mark.parametrize(
    "body",
    [
        b'{"image": "%s", "boxes": [[%s, 0, 10, 10]]}' % (_IMAGE_B64.encode(), b"9" * 5000),
        b'{"image": "%s", "boxes": %s}' % (_IMAGE_B64.encode(), b"[" * 50_000 + b"]" * 50_000),
        b'{"image": "%s", "boxes": [[1e999, 0, 10, 10]]}' % _IMAGE_B64.encode(),
        b'{"image": "%s", "points": [[%s, 1]]}' % (_IMAGE_B64.encode(), b"1" + b"0" * 400),
        b'\xff\xfe{"image": 1}',
        b'{"image": "\\ud800"}',
    ],
    ids=["5000-digit-int", "deep-nesting", "float-overflow", "400-digit-int", "not-utf8", "lone"],
)
def test_json_edge_cases_are_422(body):
    assert _status(job_from_json, body) == 422


def test_deeply_nested_form_field_is_422():
    assert _status(job_from_form, [("points", "[" * 50_000 + "]" * 50_000)], b"img") == 422
    assert _status(job_from_form, [("refine", "9" * 5000)], b"img") == 422


def test_lone_surrogate_phrase_is_refused_by_check():
    job = job_from_json(b'{"image": "%s", "phrase": "bad \\ud800"}' % _IMAGE_B64.encode())
    with pytest.raises(HTTPError) as info:
        job.check(have_grounder=True)
    assert info.value.status == 422 and "surrogate" in info.value.message


def test_prompt_counts_are_refused_before_the_image_is_read():
    """Job.check refuses before decoding: the image here is not even an image."""
    points = [[1, 1, 1]] * 33
    job = job_from_json(json.dumps({"image": _IMAGE_B64, "points": points}).encode())
    with pytest.raises(HTTPError) as info:
        job.check(have_grounder=False)
    assert info.value.status == 422 and "33 points" in info.value.message
    job = job_from_json(json.dumps({"image": _IMAGE_B64, "boxes": [[0, 0, 5, 5]] * 101}).encode())
    with pytest.raises(HTTPError, match="101 prompts"):
        job.check(have_grounder=False)
    job = job_from_json(json.dumps({"image": _IMAGE_B64, "boxes": [[0, 0, 5, 5]] * 100}).encode())
    assert job.check(have_grounder=False) is job


# JSON values of every kind, nested, plus the fields the parser knows, so the fuzz reaches past
# the first type check.
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "image": st.one_of(st.just(_IMAGE_B64), st.just("data:image/png;base64,eA=="), st.text()),
        "phrase": _json_values,
        "boxes": _json_values,
        "points": _json_values,
        "think": _json_values,
        "refine": _json_values,
        "overlay": _json_values,
        "mask_png": _json_values,
    },
)


def _assert_job_or_4xx(function, *args, have_grounder: bool = True) -> None:
    try:
        job = function(*args)
        job.check(have_grounder=have_grounder)
    except HTTPError as exc:
        assert 400 <= exc.status < 500, exc.status
        assert isinstance(exc.message, str) and exc.message and "\n" not in exc.message
        return
    assert isinstance(job.image, bytes) and job.image
    assert all(len(b) == 4 and all(math.isfinite(v) for v in b) for b in job.boxes)
    assert all(len(p) == 3 and p[2] in (0, 1) for p in job.points)
    assert (job.phrase is None) != (not job.boxes and not job.points)
    if job.phrase is not None:
        job.phrase.encode("utf-8")  # writable as the response and records need


@settings(max_examples=400, deadline=None)
@given(data=_fields, extra=st.dictionaries(st.text(max_size=6), _json_values, max_size=2))
def test_fuzz_json_bodies_give_a_job_or_a_4xx(data, extra):
    body = json.dumps({**extra, **data}).encode()
    _assert_job_or_4xx(job_from_json, body)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=200)
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
)
def test_fuzz_raw_json_bytes_give_a_job_or_a_4xx(body):
    _assert_job_or_4xx(job_from_json, body)


_form_names = st.sampled_from(
    ["phrase", "box", "point", "boxes", "points", "think", "refine", "overlay", "mask_png", "x"]
)


@settings(max_examples=400, deadline=None)
@given(
    fields=st.lists(st.tuples(_form_names, st.text(max_size=40)), max_size=6),
    image=st.none() | st.binary(min_size=1, max_size=8),
)
def test_fuzz_multipart_fields_give_a_job_or_a_4xx(fields, image):
    _assert_job_or_4xx(job_from_form, fields, image)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_fuzz_image_bytes_decode_or_4xx(data):
    try:
        image = decode_image(data, 10_000)
    except HTTPError as exc:
        assert exc.status in (413, 422) and "\n" not in exc.message
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_a_key_with_a_line_break_gives_a_one_line_422() -> None:
    """Found by the fuzz test above: an unknown key named "\\n" made a two-line message."""
    with pytest.raises(HTTPError) as caught:
        job_from_json(json.dumps({"\n": None, "image": "aGVsbG8=", "phrase": "x"}).encode())
    assert caught.value.status == 422 and "\n" not in caught.value.message
    assert "'\\n'" in caught.value.message
