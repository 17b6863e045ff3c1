"""A remote grounder's ``timeout=S`` is a deadline for the whole request, not for each read.

A server that drips one byte every fraction of a second never lets a per-read timeout fire, so
``refseg segment`` waited for as long as the server liked. Each case runs a dripping server on
127.0.0.1 (in headers, and in the body) and asks with ``timeout=1``: one line within seconds.
"""

from __future__ import annotations

import json

import pytest

from tests.hostile.harness import run_python

CODE = r"""
import json, socket, sys, threading, time
import numpy as np
from refseg.errors import RefsegError

stage = sys.argv[1] if len(sys.argv) > 1 else {stage!r}
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
port = listener.getsockname()[1]

def drip(conn):
    try:
        conn.recv(65536)
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        if stage == "body":
            conn.sendall(head + b"Content-Length: 100000\r\n\r\n")
        else:
            conn.sendall(head)
        while True:  # one byte every 0.1 s, forever
            conn.sendall(b"x" if stage == "headers" else b" ")
            time.sleep(0.1)
    except OSError:
        pass

def serve():
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=drip, args=(conn,), daemon=True).start()

threading.Thread(target=serve, daemon=True).start()
image = np.zeros((32, 32, 3), np.uint8)
kind = {kind!r}
if kind == "openai":
    from refseg.grounding.openai_api import OpenAIGrounder
    grounder = OpenAIGrounder(f"http://127.0.0.1:{{port}}", "m", timeout=1, retries=1)
else:
    from refseg.grounding.moondream import MoondreamGrounder
    grounder = MoondreamGrounder(f"http://127.0.0.1:{{port}}", timeout=1, retries=1)
start = time.perf_counter()
try:
    grounder.ground([image], ["x"])
    message = "answered"
except RefsegError as exc:
    message = str(exc)
print(json.dumps({{"seconds": time.perf_counter() - start, "message": message}}))
"""


@pytest.mark.parametrize("kind", ["openai", "moondream"])
@pytest.mark.parametrize("stage", ["headers", "body"])
def test_a_dripping_server_is_cut_off_at_the_deadline(kind, stage):
    out = run_python(CODE.format(kind=kind, stage=stage), timeout=20)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    assert result["seconds"] < 5, result
    assert "\n" not in result["message"] and "1 s" in result["message"], result
