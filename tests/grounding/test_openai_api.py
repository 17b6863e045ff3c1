"""The OpenAI-compatible grounder against a real local chat-completions server."""

from __future__ import annotations

import math
import socket
import threading
import time

import numpy as np
import pytest

from refseg.errors import InputError, ModelError
from refseg.grounding import load_grounder
from refseg.grounding.coords import Convention, from_pixels
from refseg.grounding.openai_api import OpenAIGrounder, chat_completions_url
from refseg.protocol import build_prompt, format_answer
from tests.grounding.chat_server import ChatRequest, ChatServer

RECT = (40, 30, 100, 70)  # x1, y1, x2, y2 of the red rectangle in pixels


def scene(width: int = 160, height: int = 120, rect: tuple = RECT) -> np.ndarray:
    """A grey image with one red rectangle covering pixels [x1, x2) x [y1, y2)."""
    image = np.full((height, width, 3), 128, np.uint8)
    x1, y1, x2, y2 = rect
    image[y1:y2, x1:x2] = (220, 20, 20)
    return image


def red_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """The pixel box of the red pixels the server *decoded*, or None."""
    mask = (image[..., 0] > 180) & (image[..., 1] < 60)
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def locating_model(convention: str):
    """An answer function that finds the red rectangle in the decoded image and answers in
    ``convention``: what a perfect model would say."""

    def answer(request: ChatRequest) -> str:
        height, width = request.image.shape[:2]
        box = red_box(request.image)
        if box is None or "blue" in request.prompt:
            return "<answer>[]</answer>"
        center = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        model_box, points = from_pixels(box, [center], convention, width, height)
        return format_answer([(model_box, points)])

    return answer


def fast(server: ChatServer, **options) -> OpenAIGrounder:
    options.setdefault("backoff", 0.01)
    options.setdefault("timeout", 10)
    return OpenAIGrounder(server.url, "test-model", **options)


# ---------------------------------------------------------------------------------------------
# Requests and answers


@pytest.mark.parametrize("convention", ["norm1000", "resized", "pixels", "resized:max_pixels=5000"])
def test_grounds_through_the_server(convention: str) -> None:
    image = scene()
    with ChatServer(locating_model(convention)) as server:
        grounder = fast(server, convention=convention, max_tokens=77, temperature=0.0)
        (g,) = grounder.ground([image], ["the red rectangle"])
        request = server.requests[0]
    assert g.parse_error is None and not g.no_target and g.invalid == 0
    (inst,) = g.instances
    frame_w, frame_h = Convention.parse(convention).frame(160, 120)
    unit_x, unit_y = 160 / frame_w, 120 / frame_h
    for got, want, unit in zip(inst.box, RECT, (unit_x, unit_y, unit_x, unit_y)):
        assert abs(got - want) <= unit / 2 + 1e-6, (inst.box, RECT)
    ((px, py),) = inst.points
    assert abs(px - 70) <= unit_x and abs(py - 50) <= unit_y
    assert g.raw_answer.startswith("<answer>[{")
    # the request: OpenAI shapes, the exact pixels (PNG is lossless), the protocol's prompt
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "test-model"
    assert request.body["max_tokens"] == 77 and request.body["temperature"] == 0.0
    (message,) = request.body["messages"]
    assert message["role"] == "user"
    assert [p["type"] for p in message["content"]] == ["image_url", "text"]
    assert message["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    np.testing.assert_array_equal(request.image, image)
    coords = Convention.parse(convention).prompt_coords
    assert request.prompt == build_prompt("the red rectangle", think=False, coords=coords)


def test_many_pairs_run_concurrently_and_keep_their_order() -> None:
    inflight = peak = 0
    lock = threading.Lock()
    model = locating_model("norm1000")

    def slow(request: ChatRequest) -> str:
        nonlocal inflight, peak
        with lock:
            inflight += 1
            peak = max(peak, inflight)
        time.sleep(0.15)
        with lock:
            inflight -= 1
        return model(request)

    rects = [(10 * i, 5, 10 * i + 20, 25 + i) for i in range(8)]
    images = [scene(rect=r) for r in rects]
    phrases = [f"red thing {i}" if i != 3 else "blue thing" for i in range(8)]
    with ChatServer(slow) as server:
        results = fast(server, concurrency=3).ground(images, phrases, think=True)
        prompts = [r.prompt for r in server.requests]
    assert 2 <= peak <= 3
    assert all("<think>" in p for p in prompts)
    for i, (rect, g) in enumerate(zip(rects, results)):
        if i == 3:
            assert g.no_target and g.instances == []
            continue
        assert g.instances[0].box == pytest.approx(rect, abs=0.16 * 1.01)


def test_unreadable_model_answers_are_parse_errors() -> None:
    answers = iter(
        ["I cannot see any rectangle.", '<answer>[{"bbox_2d": [1, 2]}]</answer>', "<answer>[]"]
    )
    with ChatServer(lambda request: next(answers)) as server:
        results = fast(server, concurrency=1).ground([scene()] * 3, ["a", "b", "c"])
    assert [g.parse_error for g in results] == [
        "no JSON found",
        "instance 1: bbox_2d needs 4 numbers",
        None,
    ]
    assert results[0].raw_answer == "I cannot see any rectangle."
    assert results[2].no_target


def test_invalid_instances_are_counted() -> None:
    answer = format_answer([((500, 500, 400, 600), []), ((100, 100, 200, 200), [(150, 150)])])
    with ChatServer(lambda request: answer) as server:
        (g,) = fast(server).ground([scene()], ["x"])
    assert g.invalid == 1 and len(g.instances) == 1 and g.parse_error is None


def test_reasoning_field_is_folded_back_into_the_answer() -> None:
    with ChatServer(lambda r: "<answer>[]</answer>") as server:
        grounder = fast(server)
        text = grounder._answer_text(
            b'{"choices": [{"message": {"content": "<answer>[]</answer>", '
            b'"reasoning_content": "nothing red"}}]}'
        )
        assert text == "<think>nothing red</think><answer>[]</answer>"
        parts = grounder._answer_text(
            b'{"choices": [{"message": {"content": [{"type": "text", "text": "<answer>"}, '
            b'{"type": "text", "text": "[]</answer>"}]}}]}'
        )
        assert parts == "<answer>[]</answer>"


# ---------------------------------------------------------------------------------------------
# Transport failures


def test_retries_then_answers() -> None:
    with ChatServer(
        lambda r: "<answer>[]</answer>", fail=lambda n: (503, b"busy") if n <= 2 else None
    ) as server:
        start = time.perf_counter()
        (g,) = fast(server, retries=3, backoff=0.05).ground([scene()], ["x"])
        elapsed = time.perf_counter() - start
        assert server.count == 3
    assert g.no_target
    assert elapsed >= 0.05 + 0.1  # backoff doubled between tries


def test_retry_after_and_429() -> None:
    def fail(n: int):
        return (
            (429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0"}) if n == 1 else None
        )

    with ChatServer(lambda r: "<answer>[]</answer>", fail=fail) as server:
        (g,) = fast(server, backoff=5.0).ground([scene()], ["x"])  # Retry-After: 0 wins
        assert server.count == 2 and g.no_target


def test_gives_up_after_the_last_try() -> None:
    with ChatServer(lambda r: "", fail=lambda n: (500, b'{"error": "boom"}')) as server:
        with pytest.raises(ModelError) as info:
            fast(server, retries=3).ground([scene()], ["x"])
        assert server.count == 3
    message = str(info.value)
    assert (
        message
        == f"endpoint {server.url}/v1/chat/completions unreachable after 3 tries: HTTP 500 (boom)"
    )


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    body = b'{"error": {"message": "model not found", "type": "x"}}'
    with ChatServer(lambda r: "", fail=lambda n: (status, body)) as server:
        with pytest.raises(
            ModelError, match=f"refused the request: HTTP {status} \\(model not found\\)"
        ):
            fast(server, logprobs=False).ground([scene()], ["x"])
        assert server.count == 1


def test_unreachable_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    grounder = OpenAIGrounder(f"http://127.0.0.1:{port}/v1", "m", retries=2, backoff=0.01)
    with pytest.raises(ModelError) as info:
        grounder.ground([scene()], ["x"])
    message = str(info.value)
    assert message.startswith(
        f"endpoint http://127.0.0.1:{port}/v1/chat/completions unreachable after 2 tries: "
    )
    assert "refused" in message.lower() and "\n" not in message


def test_timeout_is_retried_then_reported() -> None:
    def sleepy(request: ChatRequest) -> str:
        time.sleep(1.0)
        return "<answer>[]</answer>"

    with (
        ChatServer(sleepy) as server,
        pytest.raises(ModelError, match="unreachable after 2 tries: timed out"),
    ):
        fast(server, timeout=0.2, retries=2).ground([scene()], ["x"])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>Bad gateway</html>", "returned non-JSON: <html>Bad gateway</html>"),
        (b'{"object": "chat.completion"}', "returned no choices"),
        (b'{"choices": []}', "returned no choices"),
        (b'{"choices": [{"text": "hi"}]}', "a choice without a message"),
        (b'{"choices": [{"message": {"content": 5}}]}', "content of type int"),
        (b'{"error": {"message": "context too long"}}', "returned an error: context too long"),
    ],
)
def test_garbage_responses_are_one_line_model_errors(body: bytes, reason: str) -> None:
    with ChatServer(lambda r: "", fail=lambda n: (200, body)) as server:
        with pytest.raises(ModelError) as info:
            fast(server).ground([scene()], ["x"])
        assert server.count == 1  # garbage is not retried
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_api_key_header(monkeypatch: pytest.MonkeyPatch) -> None:
    with ChatServer(lambda r: "<answer>[]</answer>") as server:
        monkeypatch.delenv("REFSEG_TEST_KEY", raising=False)
        fast(server, api_key_env="REFSEG_TEST_KEY").ground([scene()], ["x"])
        monkeypatch.setenv("REFSEG_TEST_KEY", "sk-test-123")
        grounder = fast(server, api_key_env="REFSEG_TEST_KEY")
        grounder.ground([scene()], ["x"])
        fast(server, api_key_env=None).ground([scene()], ["x"])
        headers = [{k.lower(): v for k, v in r.headers.items()} for r in server.requests]
    assert "authorization" not in headers[0]
    assert headers[1]["authorization"] == "Bearer sk-test-123"
    assert "authorization" not in headers[2]
    assert "sk-test" not in repr(grounder)


# ---------------------------------------------------------------------------------------------
# Construction


def test_url_forms() -> None:
    want = "http://h:8000/v1/chat/completions"
    for url in ("http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/", want):
        assert chat_completions_url(url) == want
    assert chat_completions_url("https://x.test/api/v1") == "https://x.test/api/v1/chat/completions"
    for bad in ("", "localhost:8000", "ftp://h/v1", "http://"):
        with pytest.raises(InputError):
            chat_completions_url(bad)


def test_load_grounder_spec() -> None:
    grounder = load_grounder("openai:http://127.0.0.1:9/v1#my-model", convention="resized")
    assert isinstance(grounder, OpenAIGrounder)
    assert grounder.name == "openai:http://127.0.0.1:9/v1#my-model"
    assert grounder.model == "my-model" and grounder.convention == Convention("resized")
    assert grounder.endpoint == "http://127.0.0.1:9/v1/chat/completions"
    assert OpenAIGrounder("http://h", "m", max_new_tokens=12).max_tokens == 12


@pytest.mark.parametrize(
    "options",
    [
        {"model": ""},
        {"convention": "percent"},
        {"retries": 0},
        {"timeout": 0},
        {"concurrency": 0},
        {"temperature": -1},
        {"max_tokens": 1.5},
        {"image_format": "gif"},
    ],
)
def test_bad_options(options: dict) -> None:
    kwargs = {"model": "m", **options}
    model = kwargs.pop("model")
    with pytest.raises(InputError):
        OpenAIGrounder("http://h", model, **kwargs)


def test_bad_inputs_fail_before_any_request() -> None:
    with ChatServer(lambda r: "<answer>[]</answer>") as server:
        grounder = fast(server)
        with pytest.raises(InputError, match="2 images but 1 phrases"):
            grounder.ground([scene(), scene()], ["x"])
        with pytest.raises(InputError, match="uint8 RGB"):
            grounder.ground([scene().astype(np.float32)], ["x"])
        with pytest.raises(InputError, match="phrase 1 is empty"):
            grounder.ground([scene(), scene()], ["x", "  "])
        with pytest.raises(InputError, match="aspect ratio"):
            fast(server, convention="resized").ground([np.zeros((1, 300, 3), np.uint8)], ["x"])
        assert grounder.ground([], []) == []
        assert server.count == 0


def test_jpeg_images() -> None:
    with ChatServer(locating_model("norm1000")) as server:
        (g,) = fast(server, image_format="jpeg").ground([scene()], ["the red rectangle"])
        url = server.requests[0].body["messages"][0]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert g.instances[0].box == pytest.approx(RECT, abs=1.5)


# ---------------------------------------------------------------------------------------------
# A real (tiny, randomly initialised) Qwen-VL model behind the server


def serve_model(grounder, inputs: dict | None = None):
    """An answer function running the model's real generate on the decoded image and prompt.

    ``inputs`` (when given) records the model inputs built for each prompt.
    """
    import torch
    from PIL import Image

    lock = threading.Lock()

    def answer(request: ChatRequest) -> str:
        content = [{"type": "image"}, {"type": "text", "text": request.prompt}]
        processor = grounder.processor
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        batch = processor(
            text=[text], images=[Image.fromarray(request.image)], padding=True, return_tensors="pt"
        )
        with lock, torch.inference_mode():
            if inputs is not None:
                inputs[request.prompt] = batch
            out = grounder.model.generate(
                **batch, max_new_tokens=request.body["max_tokens"], do_sample=False
            )
        new = out[:, batch["input_ids"].shape[1] :]
        return processor.batch_decode(new, skip_special_tokens=True)[0]

    return answer


@pytest.mark.parametrize("family", ["qwen3-vl", "qwen2.5-vl"])
def test_tiny_model_served_equals_in_process(family: str, request: pytest.FixtureRequest) -> None:
    """The same model behind the endpoint sees exactly the inputs, and so writes exactly the
    answers, of the in-process grounder."""
    torch = pytest.importorskip("torch")
    from refseg.grounding.qwen import QwenGrounder

    folder = request.getfixturevalue(
        {"qwen3-vl": "tiny_qwen3_vl_dir", "qwen2.5-vl": "tiny_qwen25_vl_dir"}[family]
    )
    local = QwenGrounder.from_pretrained(folder, family=family, device="cpu", max_new_tokens=24)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), scene()]
    phrases = ["the red rectangle", "a small dog"]
    expected = local.ground(images, phrases)
    inputs: dict = {}
    with ChatServer(serve_model(local, inputs)) as server:
        remote = OpenAIGrounder(
            server.url, family, convention=local.convention, max_tokens=24, concurrency=2
        )
        got = remote.ground(images, phrases)
        assert len(server.requests) == 2
    for image, phrase, want, have in zip(images, phrases, expected, got):
        served = inputs[build_prompt(phrase, think=False, coords=local.convention.prompt_coords)]
        direct = local.prepare([image], [phrase])
        for key in ("input_ids", "pixel_values", "image_grid_thw"):
            assert torch.equal(served[key], direct[key]), key
        assert have.raw_answer == want.raw_answer and have.raw_answer
        assert have.parse_error == want.parse_error
        assert have.no_target == want.no_target and have.instances == want.instances


# ---------------------------------------------------------------------------------------------
# Token log-probabilities: scores


def char_logprobs(text: str) -> list[dict]:
    """One token per character, each with probability 0.9; where the list opens on an object,
    the empty list's "]" had 0.05."""
    entries = []
    for i, ch in enumerate(text):
        top = [{"token": ch, "logprob": math.log(0.9)}]
        if ch == "{" and text[:i].rstrip().endswith("["):
            top.append({"token": "]", "logprob": math.log(0.05)})
        entries.append({"token": ch, "logprob": math.log(0.9), "top_logprobs": top})
    return entries


def test_returned_logprobs_give_scores() -> None:
    with ChatServer(locating_model("norm1000"), logprobs=char_logprobs) as server:
        (grounding,) = fast(server).ground([scene()], ["the red rectangle"])
        body = server.requests[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    (instance,) = grounding.instances
    assert instance.score == pytest.approx(0.9)
    assert grounding.no_target_score == pytest.approx(0.05 / 0.95)


def test_servers_without_logprobs_are_asked_again_without() -> None:
    with ChatServer(locating_model("norm1000"), refuse_logprobs=True) as server:
        grounder = fast(server)
        (first,) = grounder.ground([scene()], ["the red rectangle"])
        (second,) = grounder.ground([scene()], ["the red rectangle"])
        assert server.count == 3  # refused once, then never asked again
        assert "logprobs" not in server.requests[-1].body
    for grounding in (first, second):
        assert grounding.instances[0].score is None and grounding.no_target_score is None


def test_no_logprobs_in_the_answer_gives_no_scores() -> None:
    with ChatServer(locating_model("norm1000")) as server:
        (grounding,) = fast(server).ground([scene()], ["the red rectangle"])
    assert grounding.instances[0].score is None and grounding.no_target_score is None
