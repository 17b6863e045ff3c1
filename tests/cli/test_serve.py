"""`refseg serve` on the command line: help, and a failed model load as one line, exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from typer.testing import CliRunner

from refseg.cli import app


def test_help_lists_the_options():
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--grounder", "--segmenter", "--max-concurrency"):
        assert option in result.output
    assert "--max-queue" in result.output and "REFSEG_API_KEY" in result.output


def test_a_model_that_fails_to_load_stops_the_server_with_one_line(tmp_path):
    """A well-formed spec whose files are not models fails only once loading starts (a
    malformed spec is refused before listening: tests/cli/test_serve_checks.py)."""
    env = {**os.environ, "REFSEG_API_KEY": ""}
    encoder, decoder = tmp_path / "e.onnx", tmp_path / "d.onnx"
    encoder.write_bytes(b"not a model")
    decoder.write_bytes(b"not a model")
    serve = [sys.executable, "-m", "refseg.cli", "serve", "--port", "0"]
    done = subprocess.run(
        [*serve, "--segmenter", f"onnx:{encoder},{decoder}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("refseg: error:")]
    assert len(errors) == 1 and "e.onnx" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert "listening on http://127.0.0.1:" in done.stderr


def test_a_port_in_use_is_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "refseg.cli", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"refseg: error: cannot listen on 127.0.0.1:{port}")


def test_requests_are_logged_at_info(tmp_path):
    """Issue 10: at --log-level info (the default) the server logged no request lines."""
    import httpx

    env = {**os.environ, "REFSEG_API_KEY": ""}
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "refseg.cli", "serve", "--port", "0"),
            *("--log-level", "info", "--max-bodies-mb", "64"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = process.stderr.readline()  # "refseg serve: listening on http://...:PORT (page..."
        url = first.split("listening on ", 1)[1].split(" ", 1)[0]
        health = httpx.get(url + "/healthz", timeout=30)  # 503 while loading
        status = health.status_code
        assert health.json()["limits"]["max_bodies_bytes"] == 64 * 2**20  # the flag arrives
    finally:
        process.send_signal(2)  # SIGINT: a normal stop
        out, err = process.communicate(timeout=60)
    lines = [line for line in (out + err).splitlines() if '"GET /healthz HTTP/1.1"' in line]
    assert len(lines) == 1 and str(status) in lines[0], out + err
