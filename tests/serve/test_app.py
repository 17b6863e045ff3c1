"""The app's defences against hostile and careless requests: request limits, slow clients,
foreign Hosts and Origins, refused formats, and what error answers reveal."""

from __future__ import annotations

import base64
import io
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from refseg import masks
from refseg.serve import create_app
from refseg.serve.server import BackgroundServer

BOX = "150,40,370,260"


def _png(width: int, height: int, split: bool = False) -> bytes:
    pixels = np.full((height, width, 3), 40, np.uint8)
    if split:  # bright left half, dark right half
        pixels[:, : width // 2] = 230
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    return body["error"]


def _image(data: bytes, name: str = "photo.jpg", media: str = "image/jpeg") -> dict:
    return {"image": (name, data, media)}


# --- prompt limits ----------------------------------------------------------------------------


def test_prompt_limits_are_422_before_any_model_work(make_client, astronaut_bytes, memo_sam):
    client = make_client()
    before = len(memo_sam._memo)
    points = [[10 + i % 50, 10 + i // 50, 1] for i in range(10_000)]
    image = base64.b64encode(astronaut_bytes).decode()
    started = time.perf_counter()
    message = _error(client.post("/v1/segment", json={"image": image, "points": points}), 422)
    assert "10000 points" in message and "REFSEG_MAX_POINTS" in message
    boxes = [[1, 1, 100, 100]] * 600
    message = _error(client.post("/v1/segment", json={"image": image, "boxes": boxes}), 422)
    assert "600 prompts" in message and "REFSEG_MAX_PROMPTS" in message
    assert time.perf_counter() - started < 10  # was 41 s for the points alone
    assert len(memo_sam._memo) == before  # nothing was encoded


def test_pixels_times_prompts_limit(make_client, astronaut_bytes, monkeypatch):
    monkeypatch.setenv("REFSEG_MAX_PROMPT_PIXELS", str(512 * 512 * 2))
    client = make_client()
    over = client.post("/v1/segment", files=_image(astronaut_bytes), data={"box": [BOX] * 3})
    message = _error(over, 422)
    assert "3 prompts on a 512x512 image" in message and "at most 2" in message
    within = client.post("/v1/segment", files=_image(astronaut_bytes), data={"box": [BOX] * 2})
    assert within.status_code == 200, within.text
    assert len(within.json()["instances"]) == 2
    health = client.get("/healthz").json()["limits"]
    assert health["max_prompt_pixels"] == 512 * 512 * 2
    assert health["max_prompts"] == 100 and health["max_points_per_prompt"] == 32


# --- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(2049, 1), (1, 2049), (6000, 2)])
def test_extremely_elongated_images_segment(make_client, size):
    width, height = size
    client = make_client()
    box = f"0,0,{width / 2:g},{height}" if width > height else f"0,0,{width},{height / 2:g}"
    response = client.post(
        "/v1/segment",
        files=_image(_png(width, height), "strip.png", "image/png"),
        data={"box": box},
    )
    assert response.status_code == 200, response.text
    [instance] = response.json()["instances"]
    assert masks.decode(instance["mask"]).shape == (height, width)


def test_only_allowed_formats_are_decoded(make_client):
    client = make_client()
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n{ } loop\n"
    tga = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tga, format="TGA")
    for data in (eps, tga.getvalue()):
        response = client.post("/v1/segment", files=_image(data), data={"box": "0,0,4,4"})
        assert "accepted format" in _error(response, 422)


def test_lone_surrogate_phrase_is_422_not_500(make_client, grounder, astronaut_bytes):
    client = make_client(grounder=grounder)
    image = base64.b64encode(astronaut_bytes).decode()
    body = '{"image": "' + image + '", "phrase": "bad \\ud800"}'
    response = client.post(
        "/v1/segment", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert "surrogate" in _error(response, 422)
    assert grounder.calls == 0


# --- what answers reveal ----------------------------------------------------------------------


class _FailingRemote:
    """A grounder whose failure message names its endpoint, as an HTTP client's would."""

    name = "openai"

    def ground(self, images, phrases, *, think=False):
        raise RuntimeError("connection refused: http://10.0.0.7:8000/v1/chat/completions")


def test_grounder_url_is_hidden_from_clients(make_client, astronaut_bytes):
    spec = "openai:http://10.0.0.7:8000/v1#Qwen/Qwen3-VL-8B-Instruct;timeout=30"
    client = make_client(grounder=_FailingRemote(), grounder_spec=spec)
    health = client.get("/healthz")
    assert health.status_code == 200
    assert "10.0.0.7" not in health.text
    assert health.json()["grounder"] == "openai:<hidden>#Qwen/Qwen3-VL-8B-Instruct;timeout=30"
    response = client.post(
        "/v1/segment", files=_image(astronaut_bytes), data={"phrase": "the helmet"}
    )
    message = _error(response, 500)
    assert "10.0.0.7" not in message and "connection refused" in message


# --- Host and Origin on a keyless server ------------------------------------------------------


def test_keyless_server_refuses_foreign_host_and_cross_site_origin(make_client, astronaut_bytes):
    client = make_client()
    assert client.get("/healthz").status_code == 200  # Host 127.0.0.1:8000
    for host in ("localhost:8000", "[::1]:8000", "LOCALHOST"):
        assert client.get("/healthz", headers={"host": host}).status_code == 200
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", ""):
        assert "Host" in _error(client.get("/healthz", headers={"host": host}), 400)
    form = {"files": _image(astronaut_bytes), "data": {"box": BOX}}
    evil = client.post("/v1/segment", headers={"origin": "http://attacker.example"}, **form)
    assert "cross-site" in _error(evil, 403)
    other_port = client.post("/v1/segment", headers={"origin": "http://127.0.0.1:3000"}, **form)
    _error(other_port, 403)
    same = client.post("/v1/segment", headers={"origin": "http://127.0.0.1:8000"}, **form)
    assert same.status_code == 200, same.text


def test_keyed_or_wildcard_servers_take_any_host(make_client):
    keyed = make_client(api_key="k")
    assert keyed.get("/healthz", headers={"host": "gpu-box.lan"}).status_code == 200
    wildcard = make_client(allowed_hosts=["*"])
    assert wildcard.get("/healthz", headers={"host": "gpu-box.lan"}).status_code == 200
    named = make_client(allowed_hosts=["gpu-box.lan"])
    assert named.get("/healthz", headers={"host": "gpu-box.lan:8000"}).status_code == 200
    _error(named.get("/healthz", headers={"host": "other.lan"}), 400)


# --- bodies: size and time --------------------------------------------------------------------


def test_chunked_multipart_over_the_limit_is_413(make_client):
    client = make_client(max_body_bytes=2**20)

    def chunks():
        yield (
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        for _ in range(3):
            yield b"\0" * 2**20
        yield b"\r\n--xyz--\r\n"

    response = client.post(
        "/v1/segment",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert "over the limit" in _error(response, 413)


def _stall(host: str, port: int) -> socket.socket:
    """A client that sends headers and a few bytes of a promised 1000-byte body, then waits."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(
        b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"ima'
    )
    return sock


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_stalled_uploads_neither_lock_out_others_nor_stay_forever(memo_sam, astronaut_bytes):
    app = create_app(
        segmenter=memo_sam, api_key="", max_concurrency=1, max_queue=0, body_timeout=2.0
    )
    with BackgroundServer(app) as server:
        host, port = server.sock.getsockname()[:2]
        stalled = [_stall(host, port) for _ in range(4)]
        try:
            time.sleep(0.3)
            response = httpx.post(
                server.url + "/v1/segment",
                files=_image(astronaut_bytes),
                data={"box": BOX},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            started = time.monotonic()
            for sock in stalled:
                assert _answer(sock).startswith(b"HTTP/1.1 408")
            assert time.monotonic() - started < 10
        finally:
            for sock in stalled:
                sock.close()
