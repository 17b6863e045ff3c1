"""The HTTP API and web page: ``create_app(...)`` builds the FastAPI application.

Routes: ``GET /`` (the web page, served from ``static/``), ``GET /healthz`` (model readiness),
``POST /v1/segment`` (image + phrase or boxes/points -> the result JSON of
``refseg segment --json`` plus timings), ``GET /sample.jpg`` (the bundled sample image) and
``GET /openapi.json``. FastAPI's ``/docs`` page is disabled: it loads its scripts from a CDN,
and the server must work with no network; the schema is at ``/openapi.json``.

Every error is JSON ``{"error": "..."}``: 400 a ``Host`` that is not this server's (keyless
servers) or ambiguous framing (``Content-Length`` with ``Transfer-Encoding``), 401 missing/wrong
API key, 403 a cross-site ``Origin`` (keyless servers), 408 a body not received in time, 413
body or pixels over the limit, 415 wrong content type, 422 unusable input, 503 (with
``Retry-After``) while the models load, when every worker and queue place is taken or when the
bodies in memory would pass their budget, 500 when a model fails on one request.

A request's body is read in full (within the size limit and a deadline) *before* it takes one
of the admission places: a place then only ever waits on the server's own work, so clients that
stall mid-upload cannot lock everyone else out. The bodies being read are bounded together
instead, by a byte budget across connections (:class:`BodyLimit`): past it, 503 with
``Retry-After``, and the rest of that body is never read.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from refseg import limits
from refseg.errors import InputError, RefsegError
from refseg.pipeline import MAX_PHRASE_CHARS
from refseg.serve.admission import Admission, BodyBudget, Overloaded
from refseg.serve.cache import EmbeddingCache
from refseg.serve.engine import Engine, public_text
from refseg.serve.inputs import (
    MULTIPART_FIELDS,
    HTTPError,
    Job,
    SegmentRequest,
    job_from_form,
    job_from_json,
)

if TYPE_CHECKING:
    from refseg.grounding.base import Grounder
    from refseg.segmentation.base import Segmenter

log = logging.getLogger("refseg.serve")

#: Default request body limit: a large photo as base64 JSON fits, a mistaken upload does not.
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
#: Request bodies held at once (being received, queued or running), in bodies at the limit:
#: a few large uploads at a time; many small ones still fill every queue place.
BODIES_PER_BUDGET = 4
#: Seconds a client has to send a whole request body (32 MiB at about 0.5 MiB/s).
DEFAULT_BODY_TIMEOUT = 60.0
#: Names a keyless server answers to by default (see :class:`HostCheck`).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
API_KEY_ENV = "REFSEG_API_KEY"
STATIC = resources.files("refseg.serve") / "static"
SAMPLE_IMAGE = resources.files("refseg") / "assets" / "astronaut.jpg"

#: The page loads nothing from elsewhere; the policy makes that a guarantee, not a habit.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class BodyTooLarge(Exception):
    """The request body grew past the limit while it was being read."""


class BodiesOverBudget(Exception):
    """The bytes of request bodies held across connections would pass the server's budget."""

    def __init__(self, budget: int, retry_after: int) -> None:
        super().__init__(
            f"server busy: request bodies in memory would pass {budget} bytes; "
            f"retry in {retry_after} s"
        )
        self.retry_after = retry_after


class BodyLimit:
    """ASGI middleware bounding request bodies, each and all together.

    Refused at once, before a byte of the body is read (each answer closes the connection, so
    the unread body never needs draining): ``Content-Length`` together with
    ``Transfer-Encoding`` (400: where the body ends is ambiguous, and a proxy that trusts the
    other header would see a second, smuggled request in it; RFC 9112 section 6.3), a malformed
    ``Content-Length`` (400), one over ``max_bytes`` (413), and one that does not fit in what
    ``budget`` has left (503 with ``Retry-After``). While the body arrives, each chunk is
    counted against both: :class:`BodyTooLarge` past ``max_bytes`` (a chunked body), and
    :class:`BodiesOverBudget` past the budget. The bytes are given back when the request has
    been answered, as that is when its body leaves memory.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        budget: BodyBudget,
        retry_after: Callable[[], int] = lambda: 1,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.budget = budget
        self.retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._check_framing(scope.get("headers", ()))
        if problem is not None:
            response = _error(*problem)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0
        taken = 0

        async def limited() -> Message:
            nonlocal received, taken
            message = await receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                received += size
                if received > self.max_bytes:
                    raise BodyTooLarge()
                if not self.budget.take(size):
                    raise BodiesOverBudget(self.budget.max_bytes, self.retry_after())
                taken += size
            return message

        try:
            await self.app(scope, limited, send)
        finally:
            self.budget.give(taken)

    def _check_framing(
        self, headers: Sequence[tuple[bytes, bytes]]
    ) -> tuple[int, str, dict[str, str]] | None:
        """The refusal (status, message, headers) owed before reading the body, or None."""
        lengths = [value for name, value in headers if name == b"content-length"]
        if lengths and any(name == b"transfer-encoding" for name, _ in headers):
            return (
                400,
                "Content-Length and Transfer-Encoding together make the body's end ambiguous "
                "(RFC 9112 section 6.3); send one of them",
                {},
            )
        if not lengths:
            return None
        try:
            declared = int(lengths[0])
        except ValueError:
            declared = -1
        if declared < 0:
            return 400, "invalid Content-Length", {}
        if declared > self.max_bytes:
            return (
                413,
                f"request body of {declared} bytes is over the limit of {self.max_bytes} bytes",
                {},
            )
        if not self.budget.fits(declared):
            self.budget.refuse()
            busy = BodiesOverBudget(self.budget.max_bytes, self.retry_after())
            return 503, str(busy), {"Retry-After": str(busy.retry_after)}
        return None


class HostCheck:
    """ASGI middleware for keyless servers: refuse other sites' requests (DNS rebinding, CSRF).

    Without an API key, anything that can make a browser send a request can use the server: a
    web page whose domain is re-pointed at 127.0.0.1 (its requests then carry that domain in
    ``Host``), or a page that posts a form cross-site (its ``Origin`` is the other site). So the
    ``Host`` must be one of ``hosts`` (400 otherwise), and a request with an ``Origin`` must come
    from the page this server serves, same scheme-less host and port as ``Host`` (403
    otherwise). Clients without an ``Origin`` (curl, scripts) are not affected. A keyed server
    does not need this: browsers do not attach the key cross-site.
    """

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.hosts = {h.strip("[]").lower() for h in hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v for k, v in scope.get("headers", ())}
        host = headers.get(b"host", b"").decode("latin-1")
        name = _hostname(host)
        problem: tuple[int, str] | None = None
        if name is None or name not in self.hosts:
            problem = (
                400,
                f"Host {host[:100]!r} is not one of this server's names "
                f"({', '.join(sorted(self.hosts))}); a keyless server answers only to them "
                "(set REFSEG_API_KEY to serve other names)",
            )
        elif b"origin" in headers:
            origin = headers[b"origin"].decode("latin-1")
            try:
                same = urlsplit(origin).netloc.lower() == host.lower()
            except ValueError:
                same = False
            if not same:
                problem = (403, f"cross-site request from Origin {origin[:100]!r} refused")
        if problem is not None:
            response = _error(*problem)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _hostname(host: str) -> str | None:
    """The name in a ``Host`` header value (no port, no brackets, lower case), or None."""
    try:
        name = urlsplit("//" + host).hostname
        urlsplit("//" + host).port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return None
    return name or None


def default_allowed_hosts(bound: str | None) -> list[str]:
    """Names a keyless server answers to: loopback names, plus ``bound`` if it is an address.

    A wildcard bind (``0.0.0.0``, ``::``) answers to any name (``["*"]``): such a server is
    reachable by anyone anyway, and ``refseg serve`` warns when it has no key.
    """
    if bound is not None and bound.strip("[]") in ("0.0.0.0", "::", ""):
        return ["*"]
    names = list(LOOPBACK_NAMES)
    if bound is not None and bound.strip("[]").lower() not in names:
        names.append(bound.strip("[]").lower())
    return names


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(
    grounder: Grounder | None = None,
    segmenter: Segmenter | None = None,
    *,
    grounder_spec: str | None = None,
    segmenter_spec: str | None = None,
    device: str | None = None,
    grounder_options: dict[str, Any] | None = None,
    max_concurrency: int = 2,
    max_queue: int = 16,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_bodies_bytes: int | None = None,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_pixels: int | None = None,
    cache_entries: int = 32,
    cache_bytes: int = 256 * 2**20,
    api_key: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
    on_load_failure: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> FastAPI:
    """Build the app.

    Pass model objects (tests, notebooks) or specs (``refseg serve``); specs load once, in a
    background thread started by the lifespan, so ``/healthz`` can say ``loading`` meanwhile.
    With no grounder the server takes box/point prompts only; ``grounder_options`` go to
    :func:`refseg.grounding.load_grounder` (``max_new_tokens``, ``dtype``, ...).
    ``api_key`` defaults to ``$REFSEG_API_KEY`` (``""`` turns it off); when set, ``/v1``
    requests need ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. Without a key, only
    requests whose ``Host`` is in ``allowed_hosts`` (default: loopback names; ``["*"]``: any)
    and that carry no cross-site ``Origin`` are served (see :class:`HostCheck`).
    ``body_timeout`` bounds the seconds a client has to send its body (408 after).
    ``max_bodies_bytes`` bounds the request bodies held at once, all connections together
    (default :data:`BODIES_PER_BUDGET` times ``max_body_bytes``; 503 past it).
    ``on_load_failure`` is called with the one-line reason if loading fails (the CLI uses it to
    stop the server).
    ``threads`` is the CPU thread budget to split (default: :func:`refseg.threads.thread_budget`):
    each of the ``max_concurrency`` concurrent model calls gets an equal share, so together they
    use the budget instead of each sizing its thread pool to the whole machine.
    """
    from refseg.threads import thread_budget

    budget = threads if threads is not None else thread_budget()
    engine = Engine(
        segmenter=segmenter,
        grounder=grounder,
        segmenter_spec=segmenter_spec,
        grounder_spec=grounder_spec,
        device=device,
        grounder_options=grounder_options,
        cache=EmbeddingCache(cache_entries, cache_bytes),
        max_pixels=max_pixels,
        threads=max(1, budget // max(1, max_concurrency)),
    )
    admission = Admission(max_concurrency, max_queue)
    if max_bodies_bytes is None:
        max_bodies_bytes = BODIES_PER_BUDGET * max_body_bytes
    if max_bodies_bytes < max_body_bytes:
        raise InputError(
            f"the request body budget ({max_bodies_bytes} bytes) is below the limit of one "
            f"body ({max_body_bytes} bytes): a body at the limit could never be read"
        )
    bodies = BodyBudget(max_bodies_bytes)
    # An explicit "" turns the key off even when the environment sets one.
    key = (api_key if api_key is not None else os.environ.get(API_KEY_ENV)) or None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine.needs_load:
            # A daemon thread, not a task: shutting down must not wait for a half-loaded VLM.
            threading.Thread(
                target=engine.load, args=(on_load_failure,), name="refseg-load", daemon=True
            ).start()
        yield

    app = FastAPI(
        title="refseg",
        summary="Language-guided image segmentation: phrase or boxes/points -> masks.",
        version=_version(),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.admission = admission
    app.state.bodies = bodies
    app.add_middleware(
        BodyLimit, max_bytes=max_body_bytes, budget=bodies, retry_after=admission.retry_after
    )
    hosts = list(allowed_hosts) if allowed_hosts is not None else default_allowed_hosts(None)
    if key is None and "*" not in hosts:
        app.add_middleware(HostCheck, hosts=hosts)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        response = _error(413, f"request body is over the limit of {max_body_bytes} bytes")
        response.headers["Connection"] = "close"
        return response

    @app.exception_handler(BodiesOverBudget)
    async def _over_budget(request: Request, exc: BodiesOverBudget) -> JSONResponse:
        # The rest of the body stays unread: closing is the only way to be done with it.
        return _error(503, str(exc), {"Retry-After": str(exc.retry_after), "Connection": "close"})

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> Response:
        # Nobody is left to read an answer; not a server error worth a traceback in the log.
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    async def require_key(request: Request) -> None:
        if key is None:
            return
        supplied = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if supplied is None and auth[:7].lower() == "bearer ":
            supplied = auth[7:].strip()
        if supplied is None or not hmac.compare_digest(supplied.encode(), key.encode()):
            raise HTTPError(
                401, "missing or wrong API key", {"WWW-Authenticate": 'Bearer realm="refseg"'}
            )

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        html = (STATIC / "index.html").read_bytes()
        return Response(
            html,
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/sample.jpg", include_in_schema=False)
    async def sample() -> FileResponse:
        return FileResponse(str(SAMPLE_IMAGE), media_type="image/jpeg")

    @app.get("/healthz", summary="Whether the models are loaded, and which")
    async def healthz() -> JSONResponse:
        body: dict[str, Any] = engine.describe()
        body["auth_required"] = key is not None
        body["limits"] = {
            "max_body_bytes": max_body_bytes,
            "max_bodies_bytes": max_bodies_bytes,
            "body_timeout_s": body_timeout,
            "max_pixels": engine.max_pixels,
            "max_prompts": limits.max_prompts(),
            "max_points_per_prompt": limits.max_points(),
            "max_prompt_pixels": limits.max_prompt_pixels(),
            "max_phrase_chars": MAX_PHRASE_CHARS,
            "max_concurrency": admission.max_concurrency,
            "max_queue": admission.max_queue,
        }
        body["load"] = admission.stats()
        body["bodies"] = bodies.stats()
        body["cache"] = engine.cache.stats()
        body["threads"] = {"budget": budget, "per_call": engine.threads}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    multipart_schema = {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "string", "format": "binary", "description": "the image file"},
            **{name: {"type": "string", "description": d} for name, d in MULTIPART_FIELDS.items()},
        },
    }

    @app.post(
        "/v1/segment",
        summary="Segment an image from a phrase or from boxes/points",
        dependencies=[Depends(require_key)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {"schema": multipart_schema},
                    "application/json": {"schema": SegmentRequest.model_json_schema()},
                },
            }
        },
        responses={
            200: {"description": "The result JSON of `refseg segment --json`, plus timings."},
            400: {
                "description": "A Host that is not this server's (keyless servers), or "
                "Content-Length with Transfer-Encoding."
            },
            401: {"description": "Missing or wrong API key."},
            403: {"description": "A cross-site Origin (keyless servers)."},
            408: {"description": "The body did not arrive in time."},
            413: {"description": "Body or image over the size limit."},
            415: {"description": "Not multipart/form-data or JSON, or not an image."},
            422: {"description": "Unusable input (unreadable image, bad box, empty phrase)."},
            500: {"description": "The model failed on this request."},
            503: {
                "description": "Busy (workers, queue or body budget) or still loading; see "
                "Retry-After."
            },
        },
    )
    async def segment(request: Request) -> JSONResponse:
        """Multipart (``image`` file + ``phrase`` or ``box``/``point`` fields) or JSON (see
        the ``application/json`` schema). Answers with the result JSON (``image``,
        ``no_target``, ``instances`` with COCO RLE masks (and ``path``, the outline as SVG
        path data in image pixels, for path answers: ``answer=path``), ``phrase``, ``raw_answer``,
        ``reasoning``, ``parse_error``), ``timings`` (seconds) and ``embedding_cached``;
        ``overlay_png``/``mask_png`` (base64 PNG) when asked for."""
        received = time.perf_counter()
        _check_ready(engine)
        parse = _body_parser(request.headers.get("content-type", ""))
        # The whole body first, bounded in size (BodyLimit) and time, outside admission.
        await _read_body(request, body_timeout)
        try:
            async with admission.slot():
                job = (await parse(request)).check(have_grounder=engine.grounder is not None)
                body, waited = await admission.run(lambda: _run(engine, job))
        except Overloaded as exc:
            return _error(503, str(exc), {"Retry-After": str(exc.retry_after)})
        timings = body.setdefault("timings", {})
        timings["queue_s"] = round(waited, 6)
        timings["total_s"] = round(time.perf_counter() - received, 6)
        return JSONResponse(body)

    return app


async def _read_body(request: Request, timeout: float) -> bytes:
    """The request body, or 408 if it has not all arrived within ``timeout`` seconds.

    Starlette keeps it on the request, so the JSON and multipart parsers read it from memory.
    """
    try:
        with anyio.fail_after(timeout):
            return await request.body()
    except TimeoutError as exc:
        raise HTTPError(
            408, f"the request body did not arrive within {timeout:g} s", {"Connection": "close"}
        ) from exc


def _check_ready(engine: Engine) -> None:
    if engine.status == "loading":
        raise HTTPError(503, "models are still loading", {"Retry-After": "5"})
    if engine.status == "failed":
        raise HTTPError(500, f"models failed to load: {public_text(engine.error or '')}")


def _run(engine: Engine, job: Job) -> dict[str, Any]:
    """:meth:`Engine.segment`, with a model failure turned into this request's 500."""
    try:
        return engine.segment(job)
    except HTTPError:
        raise
    except RefsegError as exc:
        log.warning("request failed: %s", exc)
        raise HTTPError(500, _one_line(exc)) from exc
    except Exception as exc:
        log.exception("model failure")
        raise HTTPError(500, f"model failure: {type(exc).__name__}: {_one_line(exc)}") from exc


def _one_line(exc: Exception, limit: int = 300) -> str:
    """The message for a client: one line, bounded, with addresses (a grounder's URL) hidden."""
    text = public_text(" ".join(str(exc).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _body_parser(content_type: str) -> Callable[[Request], Awaitable[Job]]:
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return _parse_json
    if media == "multipart/form-data":
        return _parse_multipart
    shown = media or "none"
    raise HTTPError(
        415, f"content type {shown!r} is not accepted: send multipart/form-data or JSON"
    )


async def _parse_json(request: Request) -> Job:
    body = await request.body()
    # Decoding tens of MB of JSON + base64 takes a while: keep it off the event loop.
    return await anyio.to_thread.run_sync(job_from_json, body)


async def _parse_multipart(request: Request) -> Job:
    from starlette.datastructures import UploadFile

    form = await request.form(max_files=2, max_fields=64, max_part_size=1 * 2**20)
    try:
        fields: list[tuple[str, str]] = []
        image: bytes | None = None
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "image":
                    raise HTTPError(
                        422, f"unexpected file part {name!r}; send the image as 'image'"
                    )
                if image is not None:
                    raise HTTPError(422, "send one image per request")
                media = (value.content_type or "").split(";", 1)[0].strip().lower()
                if media and not (
                    media.startswith("image/") or media == "application/octet-stream"
                ):
                    raise HTTPError(415, f"the image part has content type {media!r}, not image/*")
                image = await value.read()
            elif name == "image":
                raise HTTPError(
                    422, "the 'image' field must be a file part (curl: -F image=@photo.jpg)"
                )
            else:
                fields.append((name, value))
        if image is not None and not image:
            raise HTTPError(422, "image: empty file")
        return job_from_form(fields, image)
    finally:
        await form.close()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("refseg")
    except Exception:
        return "0"
