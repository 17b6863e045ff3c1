"""`refseg serve`: the HTTP API and web page on uvicorn (see ``refseg.serve``)."""

from __future__ import annotations

import os

import typer

from refseg.errors import InputError, ModelError
from refseg.grounding import GROUNDER_SPECS
from refseg.segmentation import SEGMENTER_SPECS


def check_startup(
    grounder: str | None, segmenter: str, max_new_tokens: int | None, log_level: str
) -> None:
    """Refuse what would fail only after the server listens and loads a model: a malformed
    grounder or segmenter spec, a grounder option without a grounder, an unknown log level.

    Each is one line before the socket is bound, so a typo never prints "listening on ..."
    nor spends the seconds a segmenter takes to load.
    """
    from refseg.grounding import parse_grounder_spec
    from refseg.segmentation import check_segmenter_spec

    if log_level not in ("debug", "info", "warning", "error"):
        raise InputError(f"--log-level {log_level!r}: use debug, info, warning or error")
    check_segmenter_spec(segmenter)
    if grounder is not None:
        parse_grounder_spec(grounder)
    elif max_new_tokens is not None:
        raise InputError(
            "--max-new-tokens goes with --grounder: without one the server takes boxes and "
            "points only"
        )


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to ``app``."""

    @app.command("serve")
    def serve(
        host: str = typer.Option(
            "127.0.0.1", help="Address to listen on (loopback by default; see REFSEG_API_KEY)."
        ),
        port: int = typer.Option(8000, min=0, max=65535, help="Port (0 picks a free one)."),
        grounder: str | None = typer.Option(
            None,
            help=f"Grounder spec for phrase requests: {GROUNDER_SPECS}. Without one, the "
            "server takes boxes and points only.",
        ),
        segmenter: str = typer.Option("onnx-sam", help=SEGMENTER_SPECS),
        device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: auto)."),
        max_new_tokens: int | None = typer.Option(
            None, min=1, help="Grounder answer length limit (tokens; default: the grounder's)."
        ),
        max_concurrency: int = typer.Option(
            2, min=1, help="Requests running model code at once (worker threads)."
        ),
        max_queue: int = typer.Option(
            16, min=0, help="Requests waiting beyond those; more get 503 with Retry-After."
        ),
        max_body_mb: float = typer.Option(
            32.0, min=0.001, max=1_048_576, help="Request body limit (MiB)."
        ),
        body_timeout: float = typer.Option(
            60.0,
            min=0.1,
            max=86_400,
            help="Seconds a client has to send its request body (408 after).",
        ),
        max_bodies_mb: float | None = typer.Option(
            None,
            min=0.001,
            max=1_048_576,
            help="Request bodies held at once, all connections together (MiB; default 4 x "
            "--max-body-mb); past it 503 with Retry-After.",
        ),
        header_timeout: float = typer.Option(
            10.0,
            min=0.1,
            max=3600,
            help="Seconds a client has to send its request headers (408 after).",
        ),
        max_connections: int | None = typer.Option(
            None,
            min=1,
            max=1_000_000,
            help="Open connections (default: half of `ulimit -n`, at most 1000); past it the "
            "longest-waiting one without a request is closed.",
        ),
        max_pixels: int | None = typer.Option(
            None, min=1, help="Image pixel limit (default: REFSEG_MAX_PIXELS or 50 million)."
        ),
        cache_entries: int = typer.Option(32, min=0, help="Image embeddings kept (LRU)."),
        cache_mb: float = typer.Option(
            256.0, min=0, max=1_048_576, help="Memory for kept embeddings (MiB)."
        ),
        log_level: str = typer.Option("info", help="debug | info | warning | error"),
    ) -> None:
        """Serve the API (POST /v1/segment, GET /healthz) and the web page at /.

        Set REFSEG_API_KEY to require `Authorization: Bearer KEY` (or `X-API-Key: KEY`).
        """
        import logging

        from refseg.serve.app import API_KEY_ENV, create_app, default_allowed_hosts
        from refseg.serve.server import bind, is_loopback, make_server, url_of

        check_startup(grounder, segmenter, max_new_tokens, log_level)
        logging.getLogger("refseg").setLevel(log_level.upper())
        if not logging.getLogger("refseg").handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
            logging.getLogger("refseg").addHandler(handler)
        failure: list[str] = []
        holder: dict = {}

        def stop(message: str) -> None:
            failure.append(message)
            server = holder.get("server")
            if server is not None:
                server.should_exit = True

        sock = bind(host, port)
        application = create_app(
            grounder_spec=grounder,
            segmenter_spec=segmenter,
            device=device,
            grounder_options={} if max_new_tokens is None else {"max_new_tokens": max_new_tokens},
            max_concurrency=max_concurrency,
            max_queue=max_queue,
            max_body_bytes=int(max_body_mb * 2**20),
            max_bodies_bytes=None if max_bodies_mb is None else int(max_bodies_mb * 2**20),
            body_timeout=body_timeout,
            max_pixels=max_pixels,
            cache_entries=cache_entries,
            cache_bytes=int(cache_mb * 2**20),
            # Without a key: answer only to loopback names and the address bound (DNS rebinding).
            allowed_hosts=default_allowed_hosts(host),
            on_load_failure=stop,
        )
        url = url_of(sock)
        keyed = bool(os.environ.get(API_KEY_ENV))
        typer.echo(
            f"refseg serve: listening on {url} (page: {url}/, API: {url}/v1/segment, "
            f"schema: {url}/openapi.json); loading models...",
            err=True,
        )
        if not is_loopback(host) and not keyed:
            typer.echo(
                f"refseg serve: warning: {host} is reachable from other machines and "
                f"{API_KEY_ENV} is not set: anyone who can reach it can use it",
                err=True,
            )
        server = make_server(
            application,
            log_level=log_level,
            header_timeout=header_timeout,
            max_connections=max_connections,
        )
        holder["server"] = server
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass  # uvicorn shut down gracefully and re-raised the signal: a normal stop, exit 0
        finally:
            sock.close()
        if failure:
            raise ModelError(failure[0])
