"""A local server with the request/response shape of Moondream's documented segment API.

``POST /v1/segment`` takes ``{"image_url": "data:image/...;base64,...", "object": TEXT,
"stream": false[, "model", "spatial_refs", "settings"]}`` with the key in ``X-Moondream-Auth``
and answers ``{"path": SVG path data, "bbox": {"x_min", "y_min", "x_max", "y_max"}}`` (what
``answer(request)`` returns, as a dict; bytes are sent as they are). Shape sources: the README's
Moondream section. ``fail(n)`` injects HTTP failures; ``key`` makes a wrong or missing key a 401.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from tests.grounding.chat_server import _decode_data_url

_KNOWN = {"image_url", "object", "stream", "model", "spatial_refs", "settings"}


@dataclass
class SegmentRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    image: np.ndarray


class MoondreamServer:
    """The segment endpoint on 127.0.0.1 (a free port); ``url`` is its ``/v1`` root."""

    def __init__(
        self,
        answer: Callable[[SegmentRequest], dict | bytes],
        *,
        fail: Callable[[int], tuple | None] | None = None,
        key: str | None = None,
    ) -> None:
        self.answer, self.fail, self.key = answer, fail, key
        self.requests: list[SegmentRequest] = []
        self.count = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> MoondreamServer:
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

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server._lock:
                    server.count += 1
                    number = server.count
                if self.path.rstrip("/") != "/v1/segment":
                    self._send(404, b'{"error": "not found"}')
                    return
                if server.key is not None and self.headers.get("X-Moondream-Auth") != server.key:
                    self._send(401, b'{"error": "invalid API key"}')
                    return
                failure = server.fail(number) if server.fail else None
                if failure is not None:
                    self._send(*failure)
                    return
                try:
                    body = json.loads(raw)
                    if not isinstance(body, dict) or set(body) - _KNOWN:
                        raise ValueError(f"unknown fields {sorted(set(body) - _KNOWN)}")
                    if not isinstance(body.get("object"), str) or not body["object"]:
                        raise ValueError("object is required")
                    image = _decode_data_url(body["image_url"])
                except (ValueError, KeyError, TypeError) as exc:
                    self._send(400, json.dumps({"error": str(exc)}).encode())
                    return
                request = SegmentRequest(self.path, dict(self.headers), body, image)
                with server._lock:
                    server.requests.append(request)
                answer = server.answer(request)
                self._send(
                    200, answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                )

        return Handler
