"""HTTP for the remote grounders: one POST with retries, bounded reads and one-line errors.

The OpenAI-compatible and the Moondream grounders talk to different APIs but fail the same
ways (connection refused, timeouts, 408/429/5xx, a server that answers megabytes of garbage), so
the retry policy, the size cap and the error wording live here once.

A try's ``timeout`` is a deadline for the whole exchange (connect, send, headers, body), not
for each read: a socket timeout restarts with every byte, so a server dripping one byte a
second would keep a per-read timeout from ever firing. :func:`deadline_opener`'s connections
register their socket for the try, and a timer shuts it down at the deadline, which ends any
read blocked on it.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from refseg.errors import InputError, ModelError

#: Longest wait between two tries, whatever ``Retry-After`` asks for.
MAX_BACKOFF_S = 30.0
#: Largest response body read; an answer is a few kB, so more is a broken or hostile server.
MAX_RESPONSE_BYTES = 16 * 2**20
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT = (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException)


def endpoint_url(url: str, route: str, *, grounder: str, example: str) -> str:
    """``BASE/v1/ROUTE`` for a server URL given with or without ``/v1`` or the route itself.

    ``http://host:8000``, ``http://host:8000/v1`` and ``http://host:8000/v1/ROUTE`` all give the
    last form; anything but an http(s) URL naming a host is refused in one line.
    """
    if not isinstance(url, str) or not url.strip():
        raise InputError(f"the {grounder} grounder needs a server URL, e.g. {example}")
    base = url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"server URL {url!r} must start with http:// or https:// and name a host")
    if base.endswith(f"/{route}"):
        return base
    if base.endswith("/v1"):
        return f"{base}/{route}"
    return f"{base}/v1/{route}"


class _Deadline:
    """One try's deadline: shuts the try's socket down when it passes (from a timer thread)."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        _TRY.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _TRY.deadline = None

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


#: The deadline of the try running in this thread (set around ``opener.open``).
_TRY = threading.local()


def _register(sock: Any) -> None:
    deadline = getattr(_TRY, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.attach(sock)


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _register(self.sock)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _register(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self._context)


def deadline_opener() -> urllib.request.OpenerDirector:
    """urllib's default opener (proxies from the environment included) whose connections
    :func:`post_with_retries` can cut off at a try's deadline."""
    return urllib.request.build_opener(_HTTPHandler(), _HTTPSHandler())


def post_with_retries(
    opener: urllib.request.OpenerDirector,
    endpoint: str,
    body: bytes,
    headers: Callable[[], dict[str, str]],
    *,
    timeout: float,
    retries: int,
    backoff: float,
) -> bytes:
    """POST ``body`` and return the response body, retrying transient failures.

    ``headers`` is called per try, so a key set in the environment meanwhile is picked up.
    A status outside :data:`RETRY_STATUS` is final; ``Retry-After`` (seconds) is honoured up to
    :data:`MAX_BACKOFF_S`; otherwise the wait doubles from ``backoff`` with 10% jitter.
    ``timeout`` bounds each try as a whole (with an opener from :func:`deadline_opener`; any
    other opener gets urllib's per-read timeout only).
    """
    last = "no try made"
    for attempt in range(1, retries + 1):
        request = urllib.request.Request(endpoint, data=body, headers=headers(), method="POST")
        retry_after: float | None = None
        deadline = _Deadline(timeout)
        try:
            with deadline, opener.open(request, timeout=timeout) as response:
                data = response.read(MAX_RESPONSE_BYTES + 1)
            if deadline.expired:
                raise TimeoutError
            if len(data) > MAX_RESPONSE_BYTES:
                raise ModelError(
                    f"endpoint {endpoint} returned more than {MAX_RESPONSE_BYTES // 2**20} MiB"
                )
            return data
        except urllib.error.HTTPError as exc:
            detail = error_detail(exc)
            if exc.code not in RETRY_STATUS:
                raise ModelError(
                    f"endpoint {endpoint} refused the request: HTTP {exc.code}{detail}"
                ) from None
            last = f"HTTP {exc.code}{detail}"
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        except TRANSIENT as exc:
            last = describe(exc)
            if deadline.expired or last == "timed out":
                last = f"timed out (no whole answer within {timeout:g} s)"
        if attempt < retries:
            time.sleep(_delay(backoff, attempt, retry_after))
    tries = "try" if retries == 1 else "tries"
    raise ModelError(f"endpoint {endpoint} unreachable after {retries} {tries}: {last}")


def json_object(data: bytes, endpoint: str) -> Any:
    """A response body as JSON; garbage (and nesting too deep to parse) is a ModelError."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ModelError(f"endpoint {endpoint} returned non-JSON: {excerpt(data)}") from None


def _delay(backoff: float, attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, MAX_BACKOFF_S)
    delay = backoff * (2 ** (attempt - 1))
    return min(delay * (1.0 + 0.1 * random.random()), MAX_BACKOFF_S)


def describe(exc: BaseException) -> str:
    """A transient failure in a few words (the innermost reason of a URLError)."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        return describe(reason) if isinstance(reason, BaseException) else str(reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's error message from an HTTP error body, as `` (message)`` or ``""``."""
    try:
        body = exc.read(64 * 1024)
    except Exception:
        return ""
    if not body:
        return ""
    try:
        data = json.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message", error) if isinstance(error, dict) else error
        return f" ({excerpt(message)})"
    except (ValueError, UnicodeDecodeError, RecursionError):
        return f" ({excerpt(body)})"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
    return seconds if seconds >= 0 else None


def excerpt(value: Any, limit: int = 120) -> str:
    """At most ``limit`` characters of a value, on one line."""
    if isinstance(value, bytes):
        value = value[: limit * 4].decode("utf-8", errors="replace")
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def count_option(value: Any, what: str) -> int:
    """A whole-number option of at least 1 (retries, concurrency)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{what} must be a whole number of at least 1, got {value!r}")
    return value


def number_option(value: Any, what: str, *, low: float, strict: bool = False) -> float:
    """A finite number option at least (or, ``strict``, above) ``low`` (timeouts, backoff)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InputError(f"{what} must be a number, got {value!r}")
    if value in (float("inf"), float("-inf")):
        raise InputError(f"{what} must be a number, got {value!r}")
    if value < low or (strict and value == low):
        raise InputError(f"{what} must be {'above' if strict else 'at least'} {low}, got {value}")
    return float(value)
