"""The HTTP API with the real ONNX segmenter: results, caching, errors, auth, overload."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from refseg import masks
from refseg.errors import ModelError
from refseg.pipeline import Pipeline, segment_prompts
from refseg.types import Prompt, Result

BOX = [150.0, 40.0, 370.0, 260.0]


def _multipart(image: bytes, **fields):
    data = {
        name: [str(v) for v in value] if isinstance(value, list) else str(value)
        for name, value in fields.items()
    }
    return {"files": {"image": ("photo.jpg", image, "image/jpeg")}, "data": data}


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


# --- results ---------------------------------------------------------------------------------


def test_box_request_matches_direct_segmentation(make_client, memo_sam, astronaut, astronaut_bytes):
    client = make_client()
    response = client.post(
        "/v1/segment", **_multipart(astronaut_bytes, box=",".join(map(str, BOX)))
    )
    assert response.status_code == 200, response.text
    body = response.json()
    result = Result.from_dict(body)
    assert (result.width, result.height) == (512, 512)
    assert len(result.instances) == 1 and not result.no_target
    expected = segment_prompts(memo_sam, astronaut, [Prompt(box=tuple(BOX))]).instances[0]
    assert masks.iou(result.instances[0].rle, expected.rle) > 0.99
    assert result.instances[0].box == BOX
    # The mask is the face: inside the box, and a real part of it.
    mask = result.instances[0].mask
    x1, y1, x2, y2 = (int(v) for v in BOX)
    inside = mask[y1:y2, x1:x2].sum()
    assert inside > 0.1 * (x2 - x1) * (y2 - y1)
    assert inside / mask.sum() > 0.95
    assert {"predict_s", "embed_s", "decode_s", "queue_s", "total_s"} <= set(body["timings"])
    assert body["embedding_cached"] is False
    assert "phrase" not in body  # prompt requests carry no grounder fields, as in the CLI


def test_json_request_with_points_and_pngs(make_client, astronaut_bytes):
    client = make_client()
    data_url = "data:image/jpeg;base64," + base64.b64encode(astronaut_bytes).decode()
    response = client.post(
        "/v1/segment",
        json={
            "image": data_url,
            "boxes": [BOX],
            "points": [[260, 150], [300, 240, 0]],
            "overlay": True,
            "mask_png": True,
            "refine": 0,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    instance = body["instances"][0]
    assert instance["points"] == [[260.0, 150.0], [300.0, 240.0]]
    assert instance["point_labels"] == [1, 0]  # the background point stays background
    union = Result.from_dict(body).union_mask()
    mask_png = masks.from_png(base64.b64decode(body["mask_png"]))
    assert np.array_equal(mask_png, union) and union.any()
    overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["overlay_png"]))))
    assert overlay.shape == (512, 512, 3)
    original = np.asarray(Image.open(io.BytesIO(astronaut_bytes)).convert("RGB"))
    changed = np.abs(overlay.astype(int) - original.astype(int)).sum(axis=2) > 30
    assert changed[union].mean() > 0.9  # tinted where the mask is
    assert changed[~union].mean() < 0.1  # untouched elsewhere, bar outline, box and dots


def test_points_alone_form_one_prompt(make_client, astronaut_bytes):
    client = make_client()
    response = client.post(
        "/v1/segment", **_multipart(astronaut_bytes, point=["256,140", "250,100,1", "20,20,0"])
    )
    assert response.status_code == 200, response.text
    [instance] = response.json()["instances"]
    assert instance["box"] is None and len(instance["points"]) == 3
    mask = masks.decode(instance["mask"])
    assert mask[140, 256] and mask.sum() > 1000


def test_embedding_is_reused_across_requests_and_encodings(make_client, astronaut_bytes):
    client = make_client()
    first = client.post("/v1/segment", **_multipart(astronaut_bytes, box="100,100,300,300"))
    second = client.post("/v1/segment", **_multipart(astronaut_bytes, box="50,300,200,500"))
    png = io.BytesIO()
    Image.open(io.BytesIO(astronaut_bytes)).convert("RGB").save(png, format="PNG")
    third = client.post(
        "/v1/segment",
        files={"image": ("same.png", png.getvalue(), "image/png")},
        data={"box": "50,300,200,500"},
    )
    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    assert first.json()["embedding_cached"] is False and "embed_s" in first.json()["timings"]
    assert second.json()["embedding_cached"] is True
    assert "embed_s" not in second.json()["timings"]
    # The same pixels re-encoded as PNG hit too: the key is the decoded content.
    assert third.json()["embedding_cached"] is True
    assert third.json()["instances"][0]["mask"] == second.json()["instances"][0]["mask"]
    cache = client.get("/healthz").json()["cache"]
    assert cache["entries"] == 1 and cache["hits"] == 2 and cache["bytes"] > 0


def test_phrase_request_matches_the_pipeline(
    make_client, grounder, memo_sam, astronaut, astronaut_bytes
):
    client = make_client(grounder=grounder)
    response = client.post(
        "/v1/segment",
        json={
            "image": base64.b64encode(astronaut_bytes).decode(),
            "phrase": " two helmets ",
            "think": True,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["phrase"] == "two helmets"
    assert body["reasoning"] == "Looking for 'two helmets' in a 512x512 image."
    assert body["raw_answer"] and body["parse_error"] is None and body["no_target"] is False
    assert "ground_s" in body["timings"]
    expected = Pipeline(grounder, memo_sam).run([(astronaut, "two helmets")], think=True)[0]
    got = Result.from_dict(body)
    assert len(got.instances) == len(expected.instances) == 2
    for a, b in zip(got.instances, expected.instances):
        assert masks.iou(a.rle, b.rle) > 0.99
        assert a.box == pytest.approx(b.box)
        assert np.allclose(np.reshape(a.points, -1), np.reshape(b.points, -1))
    # A later phrase on the same image reuses the embedding the first one stored.
    again = client.post("/v1/segment", **_multipart(astronaut_bytes, phrase="the helmet"))
    assert again.status_code == 200 and again.json()["embedding_cached"] is True


def test_no_target_and_parse_error_answers(make_client, grounder, astronaut_bytes):
    client = make_client(grounder=grounder)
    none = client.post("/v1/segment", **_multipart(astronaut_bytes, phrase="nothing", think="true"))
    assert none.status_code == 200
    body = none.json()
    assert body["no_target"] is True and body["instances"] == []
    assert body["reasoning"].startswith("Looking for 'nothing'")
    garbled = client.post("/v1/segment", **_multipart(astronaut_bytes, phrase="garbled"))
    body = garbled.json()
    assert garbled.status_code == 200
    assert body["parse_error"] == "no JSON found" and body["raw_answer"] == "the helmet is at (3"
    assert body["no_target"] is False and body["instances"] == []
    # Neither needed an image embedding.
    assert client.get("/healthz").json()["cache"]["entries"] == 0


def test_min_score_drops_instances_and_scores_are_reported(make_client, grounder, astronaut_bytes):
    client = make_client(grounder=grounder)
    both = client.post("/v1/segment", **_multipart(astronaut_bytes, phrase="two helmets")).json()
    scores = [i["score"] for i in both["instances"]]
    assert len(scores) == 2
    for instance in both["instances"]:  # a scripted grounder has no token probabilities
        assert instance["scores"]["grounder"] is None
        assert instance["score"] == pytest.approx(instance["scores"]["segmenter"], abs=1e-6)
    middle = (min(scores) + max(scores)) / 2
    kept = client.post(
        "/v1/segment",
        json={
            "image": base64.b64encode(astronaut_bytes).decode(),
            "phrase": "two helmets",
            "min_score": middle,
        },
    ).json()
    if min(scores) < middle:  # equal scores cannot be split
        assert [i["score"] for i in kept["instances"]] == [max(scores)]
    none = client.post(
        "/v1/segment", **_multipart(astronaut_bytes, phrase="two helmets", min_score="1")
    ).json()
    assert none["instances"] == [] and none["no_target"] is True


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"box": "1,2,3"}, "4 numbers"),
        ({"box": "300,300,100,100"}, "inverted"),
        ({"box": "600,600,700,700"}, "no area"),
        ({"box": "1,2,x,4"}, "number"),
        ({"point": "900,10"}, "outside"),
        ({"point": "10,10,0"}, "foreground"),
        ({"point": "10,10,2"}, "label"),
        ({"box": ["0,0,50,50", "60,60,90,90"], "point": "10,10"}, "ambiguous"),
        ({"phrase": "x", "box": "0,0,50,50"}, "not both"),
        ({}, "give a phrase"),
        ({"phrase": "x"}, "no grounder"),
        ({"box": "0,0,50,50", "colour": "red"}, "unknown field"),
        ({"box": "0,0,50,50", "overlay": "maybe"}, "true or false"),
        ({"box": "0,0,50,50", "refine": "9"}, "refine"),
        ({"box": "0,0,50,50", "min_score": "0.5"}, "min_score goes with a phrase"),
        ({"phrase": "x", "min_score": "1.5"}, "min_score: must be between 0 and 1"),
        ({"phrase": "x", "min_score": "nan"}, "min_score: must be between 0 and 1"),
    ],
)
def test_unusable_fields_are_422(make_client, astronaut_bytes, fields, needle):
    client = make_client()
    message = _error(client.post("/v1/segment", **_multipart(astronaut_bytes, **fields)), 422)
    assert needle in message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"image": "!!!not base64!!!", "boxes": [[0, 0, 5, 5]]}, "base64"),
        ({"image": "aGVsbG8=", "boxes": [[0, 0, 5, 5]]}, "not a readable image"),
        ({"boxes": [[0, 0, 5, 5]]}, "image"),
        ({"image": "aGVsbG8=", "box": [0, 0, 5, 5]}, "box"),
        ({"image": "aGVsbG8=", "boxes": [[0, 0, 5]]}, "4 numbers"),
        ({"image": "aGVsbG8=", "phrase": "   "}, "empty"),
        ({"image": "aGVsbG8=", "phrase": "x" * 1001}, "limit"),
        ([1, 2], "JSON object"),
    ],
)
def test_unusable_json_is_422(make_client, grounder, body, needle):
    client = make_client(grounder=grounder)
    assert needle in _error(client.post("/v1/segment", json=body), 422)


def test_malformed_json_and_nonfinite_numbers(make_client, astronaut_bytes):
    client = make_client()
    headers = {"content-type": "application/json"}
    assert "valid JSON" in _error(client.post("/v1/segment", content=b"{", headers=headers), 422)
    image = base64.b64encode(astronaut_bytes).decode()
    raw = '{"image": "' + image + '", "boxes": [[0, 0, NaN, 5]]}'
    assert "finite" in _error(client.post("/v1/segment", content=raw, headers=headers), 422)


def test_wrong_content_types_are_415(make_client, astronaut_bytes):
    client = make_client()
    _error(
        client.post("/v1/segment", content=astronaut_bytes, headers={"content-type": "image/jpeg"}),
        415,
    )
    _error(client.post("/v1/segment", content=b"box=1,2,3,4"), 415)  # no content type at all
    text_part = client.post(
        "/v1/segment",
        files={"image": ("notes.txt", b"hello", "text/plain")},
        data={"box": "0,0,10,10"},
    )
    assert "text/plain" in _error(text_part, 415)
    data_url = {"image": "data:text/html;base64,aGVsbG8=", "boxes": [[0, 0, 5, 5]]}
    _error(client.post("/v1/segment", json=data_url), 415)


def test_undecodable_and_truncated_images_are_422(make_client, astronaut_bytes):
    client = make_client()
    garbage = client.post(
        "/v1/segment", **_multipart(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, box="0,0,5,5")
    )
    assert "not a readable image" in _error(garbage, 422)
    truncated = client.post("/v1/segment", **_multipart(astronaut_bytes[:2000], box="0,0,5,5"))
    _error(truncated, 422)
    empty = client.post("/v1/segment", **_multipart(b"", box="0,0,5,5"))
    _error(empty, 422)


def test_body_and_pixel_limits_are_413(make_client, astronaut_bytes):
    client = make_client(max_body_bytes=20_000, max_pixels=100_000)
    # Declared too large: refused before the body is read.
    too_big = client.post("/v1/segment", **_multipart(astronaut_bytes, box="0,0,5,5"))
    assert "over the limit" in _error(too_big, 413)

    # Chunked (no Content-Length): refused once the bytes read pass the limit.
    def chunks():
        yield b'{"image": "'
        for _ in range(40):
            yield b"A" * 1000
        yield b'"}'

    chunked = client.post(
        "/v1/segment", content=chunks(), headers={"content-type": "application/json"}
    )
    _error(chunked, 413)
    # Small on the wire, too many pixels once decoded (a 4000x4000 blank PNG is ~50 KB, so use
    # a flat 400x400 one: 160,000 pixels, a few hundred bytes).
    buffer = io.BytesIO()
    Image.new("RGB", (400, 400), (10, 20, 30)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 20_000
    pixels = client.post(
        "/v1/segment",
        files={"image": ("flat.png", buffer.getvalue(), "image/png")},
        data={"box": "0,0,5,5"},
    )
    assert "160000 pixels" in _error(pixels, 413)
    # The server is fine afterwards.
    small = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 20, 30)).save(small, format="PNG")
    ok = client.post(
        "/v1/segment",
        files={"image": ("s.png", small.getvalue(), "image/png")},
        data={"box": "8,8,40,40"},
    )
    assert ok.status_code == 200, ok.text


def test_unknown_routes_answer_json(make_client):
    client = make_client()
    _error(client.get("/v2/nothing"), 404)
    _error(client.get("/v1/segment"), 405)


# --- failures, overload, auth ----------------------------------------------------------------


class BrokenSegmenter:
    """Fails to embed one particular image size: a model failure confined to some requests."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name

    def embed(self, image):
        if image.shape[0] == 64:
            raise ModelError("encoder failed: out of memory")
        if image.shape[0] == 65:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION")
        return self.inner.embed(image)

    def predict(self, embedding, prompts, *, refine=None):
        return self.inner.predict(embedding, prompts, refine=refine)


def _png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (120, 40, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_model_failure_fails_only_its_request(make_client, memo_sam, grounder, astronaut_bytes):
    client = make_client(segmenter=BrokenSegmenter(memo_sam), grounder=grounder)
    failed = client.post("/v1/segment", **_multipart(_png(64), box="1,1,30,30"))
    assert "out of memory" in _error(failed, 500)
    crashed = client.post("/v1/segment", **_multipart(_png(65), box="1,1,30,30"))
    assert "RuntimeError" in _error(crashed, 500)
    exploded = client.post("/v1/segment", **_multipart(astronaut_bytes, phrase="explode"))
    assert "device-side assert" in _error(exploded, 500)
    fine = client.post("/v1/segment", **_multipart(astronaut_bytes, box="100,100,300,300"))
    assert fine.status_code == 200
    assert client.get("/healthz").json()["load"]["admitted"] == 0  # every slot was given back


def test_overload_answers_503_with_retry_after(make_client, grounder, astronaut_bytes):
    client = make_client(grounder=grounder, max_concurrency=1, max_queue=1)
    grounder.gate = threading.Event()
    answers: list = []

    def send(phrase: str) -> None:
        answers.append(client.post("/v1/segment", **_multipart(astronaut_bytes, phrase=phrase)))

    workers = [threading.Thread(target=send, args=(p,)) for p in ("nothing", "nothing either")]
    try:
        for worker in workers:
            worker.start()
        assert grounder.entered.wait(10)  # one runs, blocked in the grounder
        deadline = time.monotonic() + 10
        while client.get("/healthz").json()["load"]["admitted"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        rejected = client.post("/v1/segment", **_multipart(astronaut_bytes, box="1,1,50,50"))
        assert "busy" in _error(rejected, 503)
        assert int(rejected.headers["Retry-After"]) >= 1
    finally:
        grounder.gate.set()
        for worker in workers:
            worker.join(30)
    assert [a.status_code for a in answers] == [200, 200]
    load = client.get("/healthz").json()["load"]
    assert load["rejected"] == 1 and load["admitted"] == 0 and load["completed"] == 2


def test_api_key(make_client, astronaut_bytes, monkeypatch):
    monkeypatch.setenv("REFSEG_API_KEY", "s3cret-key")
    client = make_client(api_key=None)  # read from the environment
    request = _multipart(astronaut_bytes, box="100,100,300,300")
    missing = client.post("/v1/segment", **request)
    assert "API key" in _error(missing, 401)
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    _error(client.post("/v1/segment", headers={"Authorization": "Bearer wrong"}, **request), 401)
    _error(client.post("/v1/segment", headers={"X-API-Key": "s3cret-ke"}, **request), 401)
    bearer = client.post("/v1/segment", headers={"Authorization": "Bearer s3cret-key"}, **request)
    assert bearer.status_code == 200
    header = client.post("/v1/segment", headers={"X-API-Key": "s3cret-key"}, **request)
    assert header.status_code == 200
    health = client.get("/healthz")  # open, so monitors need no key
    assert health.status_code == 200 and health.json()["auth_required"] is True
    assert "s3cret" not in health.text


# --- health, schema, page --------------------------------------------------------------------


def test_healthz_schema_and_page(make_client, grounder):
    client = make_client()
    health = client.get("/healthz").json()
    assert health["ready"] is True and health["status"] == "ready"
    assert health["segmenter"] == "onnx-sam" and health["grounder"] is None
    assert health["prompts"] == ["box", "point"]
    assert make_client(grounder=grounder).get("/healthz").json()["prompts"][-1] == "phrase"

    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)
    assert "phrase" in content["application/json"]["schema"]["properties"]
    assert client.get("/docs").status_code == 404  # its assets would come from a CDN

    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "decodeRle" in script.text
    assert "://" not in script.text  # nothing fetched from elsewhere
    sample = client.get("/sample.jpg")
    assert sample.headers["content-type"] == "image/jpeg" and sample.content[:2] == b"\xff\xd8"


def test_models_load_from_specs_in_the_lifespan(make_client, tiny_qwen3_vl_dir, astronaut_bytes):
    client = make_client(
        segmenter=None,
        segmenter_spec="onnx-sam",
        grounder_spec=f"qwen3-vl:{tiny_qwen3_vl_dir}",
        grounder_options={"max_new_tokens": 12},
    )
    deadline = time.monotonic() + 60
    while (health := client.get("/healthz")).json()["status"] == "loading":
        assert health.status_code == 503
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert health.status_code == 200, health.text
    assert health.json()["grounder"].startswith("qwen3-vl:")
    # The tiny random model answers nonsense: the reply is still a well-formed result.
    response = client.post("/v1/segment", **_multipart(astronaut_bytes, phrase="the helmet"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["phrase"] == "the helmet" and isinstance(body["raw_answer"], str)
    assert body["parse_error"] is not None or body["no_target"] or body["instances"]
    assert body["timings"]["ground_s"] > 0


def test_a_failed_load_is_reported(make_client, tmp_path, astronaut_bytes):
    failures: list[str] = []
    client = make_client(
        segmenter=None,
        segmenter_spec=f"onnx:{tmp_path}/enc.onnx,{tmp_path}/dec.onnx",
        on_load_failure=failures.append,
    )
    deadline = time.monotonic() + 10
    while (health := client.get("/healthz")).json()["status"] == "loading":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert health.status_code == 503
    assert health.json()["status"] == "failed" and "is not a file" in health.json()["error"]
    assert failures == [health.json()["error"]]
    message = _error(client.post("/v1/segment", **_multipart(astronaut_bytes, box="1,1,9,9")), 500)
    assert "failed to load" in message


# --- path answers (issue 12) -----------------------------------------------------------------

#: A triangle over the astronaut's face, in Qwen3-VL's 0-1000 frame (what the fake model says).
TRIANGLE = [(300, 100), (700, 120), (500, 500)]


@pytest.fixture
def path_model():
    """A loopback OpenAI-compatible endpoint answering an outline when the prompt asks for one
    and a box otherwise (the model side is a fake; the grounder and server are real)."""
    from refseg.grounding.openai_api import OpenAIGrounder
    from tests.grounding.chat_server import ChatServer

    def answer(request) -> str:
        if '"path"' in request.prompt:
            data = "M " + " L ".join(f"{x} {y}" for x, y in TRIANGLE) + " Z"
            return f'<answer>[{{"bbox_2d": [300, 100, 700, 500], "path": "{data}"}}]</answer>'
        return '<answer>[{"bbox_2d": [300, 100, 700, 500]}]</answer>'

    with ChatServer(answer) as server:
        yield server, OpenAIGrounder(server.url, "m", retries=1)


def _shoelace(points) -> float:
    xs, ys = np.array(points, dtype=float).T
    return 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))


def test_path_answers_through_json_and_multipart(make_client, path_model, astronaut_bytes):
    from refseg.paths import parse_path, rasterize

    server, grounder = path_model
    client = make_client(grounder=grounder)
    image = base64.b64encode(astronaut_bytes).decode()
    response = client.post(
        "/v1/segment",
        json={"image": image, "phrase": "the face", "answer": "path", "refiner": "none"},
    )
    assert response.status_code == 200, response.text
    (instance,) = response.json()["instances"]
    assert '"path"' in server.requests[-1].prompt  # the request's answer reached the prompt
    # refiner none: the mask is the outline's raster, and the outline is in image pixels
    mask = masks.decode(instance["mask"])
    pixels = [(x * 512 / 1000, y * 512 / 1000) for x, y in TRIANGLE]
    assert mask.sum() == pytest.approx(_shoelace(pixels), rel=0.02)
    assert (rasterize(parse_path(instance["path"]), 512, 512) == mask).mean() > 0.999
    # the same request as multipart, with the gated sam refiner and 2 iterations: still a path
    refined = client.post(
        "/v1/segment",
        **_multipart(astronaut_bytes, phrase="the face", answer="path", refiner="sam",
                     refine_iters="2"),
    )  # fmt: skip
    assert refined.status_code == 200, refined.text
    (instance,) = refined.json()["instances"]
    assert instance["path"].startswith("M ")
    # answer=box (and the default) ask for boxes: no path in the result
    for fields in ({"answer": "box"}, {}):
        boxed = client.post("/v1/segment", **_multipart(astronaut_bytes, phrase="x", **fields))
        assert boxed.status_code == 200, boxed.text
        assert "path" not in boxed.json()["instances"][0]
        assert '"path"' not in server.requests[-1].prompt
    assert grounder.answer == "box"  # a request's answer does not stick to the shared grounder


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"answer": "contour"}, "answer: expected box or path or outline"),
        ({"refiner": "/etc/refiner.pt"}, "refiner: expected none or sam or sam-raw"),
        ({"refine_iters": "17"}, "refine_iters: must be between 0 and 16"),
        ({"refine_iters": "x"}, "refine_iters: expected an integer"),
    ],
)
def test_bad_path_options_are_422(make_client, path_model, astronaut_bytes, fields, needle):
    server, grounder = path_model
    client = make_client(grounder=grounder)
    form = _multipart(astronaut_bytes, phrase="the face", **fields)
    assert needle in _error(client.post("/v1/segment", **form), 422)
    body = {"image": base64.b64encode(astronaut_bytes).decode(), "phrase": "the face"}
    body.update(
        {k: int(v) if k == "refine_iters" and v.isdigit() else v for k, v in fields.items()}
    )
    name = next(iter(fields))
    assert name in _error(client.post("/v1/segment", json=body), 422)
    assert not server.requests  # refused before the model was asked
    boxes = _multipart(astronaut_bytes, box="0,0,50,50", answer="path")
    assert "goes with a phrase" in _error(client.post("/v1/segment", **boxes), 422)


def test_openapi_documents_the_path_options(make_client):
    schema = make_client().get("/openapi.json").json()
    content = schema["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    for media in ("application/json", "multipart/form-data"):
        properties = content[media]["schema"]["properties"]
        assert {"answer", "refiner", "refine_iters"} <= set(properties), media
    json_props = content["application/json"]["schema"]["properties"]
    assert "path" in json_props["answer"]["description"]
