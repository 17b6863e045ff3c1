"""A real OpenAI-style chat-completions server for tests (stdlib ``http.server`` in a thread).

It listens on ``127.0.0.1`` (a free port), implements ``POST /v1/chat/completions`` with the
OpenAI request and response shapes, decodes the data-URL image of the user turn into a
``uint8`` RGB array, and answers with whatever a pluggable ``answer(request) -> str`` returns.
Failure modes (HTTP errors for the first N requests, garbage bodies) are injected with
``fail``; every request is recorded for assertions (headers, body, decoded image, prompt).

Usage::

    with ChatServer(lambda req: '<answer>[]</answer>') as server:
        grounder = OpenAIGrounder(server.url, "test-model")
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class ChatRequest:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    images: list[np.ndarray] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def image(self) -> np.ndarray:
        return self.images[0]

    @property
    def prompt(self) -> str:
        return "\n".join(self.texts)


#: ``fail(request_number) -> None`` to answer normally, or ``(status, body_bytes)`` /
#: ``(status, body_bytes, headers)`` to send instead (``request_number`` counts from 1).
FailFn = Callable[[int], "tuple | None"]


class ChatServer:
    """A chat-completions server on 127.0.0.1 running ``answer`` for each request."""

    def __init__(
        self,
        answer: Callable[[ChatRequest], str],
        *,
        fail: FailFn | None = None,
        logprobs: Callable[[str], list[dict]] | None = None,
        refuse_logprobs: bool = False,
    ):
        """``logprobs(text)`` gives the ``logprobs.content`` entries returned when a request
        asks for them; ``refuse_logprobs`` answers such a request 400, as servers without
        them do."""
        self.answer = answer
        self.fail = fail
        self.logprobs = logprobs
        self.refuse_logprobs = refuse_logprobs
        self.requests: list[ChatRequest] = []
        self.count = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The server root (clients add ``/v1/chat/completions``)."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with server._lock:
                    server.count += 1
                    number = server.count
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "no such route"}}')
                    return
                failure = server.fail(number) if server.fail else None
                if failure is not None:
                    self._send(*failure)
                    return
                try:
                    request = _read_request(self.path, dict(self.headers), raw)
                except ValueError as exc:
                    body = {"error": {"message": str(exc), "type": "invalid_request_error"}}
                    self._send(400, json.dumps(body).encode())
                    return
                with server._lock:
                    server.requests.append(request)
                asked = bool(request.body.get("logprobs"))
                if asked and server.refuse_logprobs:
                    self._send(400, b'{"error": {"message": "logprobs is not supported"}}')
                    return
                text = server.answer(request)
                response = {
                    "id": f"chatcmpl-{number}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": request.body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                            **(
                                {"logprobs": {"content": server.logprobs(text)}}
                                if asked and server.logprobs
                                else {}
                            ),
                        }
                    ],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                }
                self._send(200, json.dumps(response).encode())

        return Handler


def _read_request(path: str, headers: dict[str, str], raw: bytes) -> ChatRequest:
    """Validate the OpenAI request shape and decode its images; ValueError when malformed."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise ValueError("body needs a model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("body needs messages")
    request = ChatRequest(path=path, headers=headers, body=body)
    for message in messages:
        if message.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"bad role {message.get('role')!r}")
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            if part.get("type") == "text":
                request.texts.append(part["text"])
            elif part.get("type") == "image_url":
                request.images.append(_decode_data_url(part["image_url"]["url"]))
            else:
                raise ValueError(f"unknown content part {part.get('type')!r}")
    return request


def _decode_data_url(url: str) -> np.ndarray:
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        raise ValueError("image_url must be a base64 data URL")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        return np.asarray(image.convert("RGB"))
    except (binascii.Error, OSError) as exc:
        raise ValueError(f"undecodable image: {exc}") from None
