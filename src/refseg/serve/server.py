"""Running the app on uvicorn: in the foreground (``refseg serve``) or in a thread (tests).

The socket is bound here, before uvicorn starts, so ``--port 0`` works: the real port is known
at once and announced, and nothing races for a "free" port between choosing and binding it.

uvicorn bounds a request once its headers are in (the app's body limit and deadline take over),
but not the connection before that: one that never finishes its headers stays open forever, and
a few hundred of them use up the process's file descriptors, so nobody else (``/healthz``
included) gets answered. :class:`GuardedH11` adds the two missing bounds: a deadline for each
request's headers, and a cap on open connections that closes the longest-waiting header-less
one to make room for a new one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import resource
import socket
import threading
import time
from types import TracebackType
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from refseg.errors import InputError


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0 picks a free one)."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


#: Seconds a client has to send a request's headers, from connecting (or from the previous
#: answer on a kept-alive connection). Real clients send them in one packet.
DEFAULT_HEADER_TIMEOUT = 10.0
#: Most connections held open at once, whatever the open-file limit allows.
MAX_CONNECTIONS_CEILING = 1000


def default_max_connections() -> int:
    """Open connections to allow: half the open-file limit (``ulimit -n``), at most 1,000.

    The other half is left for what the process opens itself (model files, libraries, the
    listening socket), so that accepting a connection never fails for want of a descriptor.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_CEILING
    return max(8, min(MAX_CONNECTIONS_CEILING, soft // 2))


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a bound on open connections.

    A connection whose request headers have not all arrived ``header_timeout`` seconds after it
    opened (or after its previous answer) is closed: with a 408 if it sent part of a request,
    silently if it sent nothing. When a new connection would make more than
    ``max_connections``, the oldest connection still waiting for headers is closed instead;
    if every connection is busy with a request, the new one gets a 503 and is closed.
    Subclassed per server by :func:`make_server`, which sets the two class attributes.
    """

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = MAX_CONNECTIONS_CEILING

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._got_bytes = False
        self._arm_header_timer()
        if len(self.connections) > self.max_connections:
            waiting = [
                c
                for c in self.connections
                if isinstance(c, GuardedH11) and c is not self and c.awaiting_headers
            ]
            if waiting:
                min(waiting, key=lambda c: c._waiting_since).close_for_room()
            else:
                self._refuse(503, "too many open connections", {"Retry-After": "1"})

    @property
    def awaiting_headers(self) -> bool:
        """No request is in progress: the connection waits for (the rest of) its headers."""
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._got_bytes = False
            self._arm_header_timer()  # the next request's headers get a fresh deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._waiting_since = time.monotonic()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if not self.awaiting_headers:
            return  # the headers arrived; the app's own deadlines cover the rest
        if self._got_bytes:
            self._refuse(
                408, f"the request headers did not arrive within {self.header_timeout:g} s"
            )
        else:
            self.close_for_room()

    def close_for_room(self) -> None:
        """Close an idle connection without a word (it has no request to answer)."""
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.transport.close()

    def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """Answer ``status`` with the app's JSON error shape and close, before any request."""
        body = json.dumps({"error": message}).encode()
        fields = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("connection", "close"),
            *(headers or {}).items(),
        ]
        try:
            self.transport.write(self.conn.send(h11.Response(status_code=status, headers=fields)))
            self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            pass  # mid-request after all: just close
        self.close_for_room()


def make_server(
    app: FastAPI,
    *,
    log_level: str = "info",
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int | None = None,
) -> uvicorn.Server:
    """A uvicorn server for ``app``; call ``.run(sockets=[bind(host, port)])`` to serve.

    ``header_timeout`` and ``max_connections`` (default :func:`default_max_connections`) bound
    connections before their request starts (see :class:`GuardedH11`).
    """
    if not header_timeout > 0 or header_timeout == float("inf"):
        raise InputError(
            f"--header-timeout must be a positive number of seconds, not {header_timeout}"
        )
    limit = max_connections if max_connections is not None else default_max_connections()
    if limit < 1:
        raise InputError("--max-connections must be at least 1")
    protocol = type(
        "GuardedH11",
        (GuardedH11,),
        {"header_timeout": float(header_timeout), "max_connections": int(limit)},
    )
    config = uvicorn.Config(
        app,
        http=protocol,
        # asyncio accepts up to ``backlog`` connections in one go, before any of them can push
        # an idle one out: half the cap keeps such a burst within the open-file limit (the cap
        # is half of it), and is still deep enough that a burst of connects is not slowed by
        # the kernel dropping their SYNs.
        backlog=max(16, min(2048, limit // 2)),
        log_level=log_level,
        # One line per request (uvicorn's access log, on stdout) from --log-level info down.
        access_log=log_level in ("debug", "info", "trace"),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    return uvicorn.Server(config)


class BackgroundServer:
    """``with BackgroundServer(app) as server: httpx.get(server.url + "/healthz")``.

    Runs real uvicorn in a daemon thread on a loopback socket with a free port, and stops it
    (gracefully, then by force) on exit. ``options`` go to :func:`make_server`
    (``header_timeout``, ``max_connections``).
    """

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        **options: Any,
    ) -> None:
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = make_server(app, log_level=log_level, **options)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.sock.close()
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self._thread.join(15)
        if self._thread.is_alive():
            self.server.force_exit = True
            self._thread.join(5)
        self.sock.close()
