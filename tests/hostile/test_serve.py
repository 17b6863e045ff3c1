"""Hostile requests against a real server in a child process (memory-limited, timed): floods of
prompts, stalled uploads, unencodable phrases. Each must end in a 4xx, never a hang or 500."""

from __future__ import annotations

from tests.hostile.harness import run_cli, run_python

#: The server side of every case: a keyless app on the real segmenter, max 1 worker, no queue,
#: a 2 s body deadline; ``ATTACK`` runs against ``URL`` and prints one word per check.
SERVER = """
import base64, io, json, socket, time
import httpx
from PIL import Image
from refseg.segmentation import load_segmenter
from refseg.serve import create_app
from refseg.serve.server import BackgroundServer

def png(w, h):
    b = io.BytesIO(); Image.new("RGB", (w, h), (90, 90, 90)).save(b, "PNG"); return b.getvalue()

app = create_app(segmenter=load_segmenter("onnx-sam"), api_key="", max_concurrency=1,
                 max_queue=0, body_timeout=2.0)
with BackgroundServer(app) as server:
    URL = server.url
    HOST, PORT = server.sock.getsockname()[:2]
{attack}
"""


def _serve(attack: str, **kwargs):
    body = "\n".join("    " + line for line in attack.strip().splitlines())
    return run_python(SERVER.format(attack=body), **kwargs)


def test_prompt_floods_are_refused_fast_and_small():
    outcome = _serve(
        """
image = base64.b64encode(png(2000, 2000)).decode()
post = lambda body: httpx.post(URL + "/v1/segment", json={"image": image, **body}, timeout=30)
t = time.monotonic()
r = post({"points": [[i % 2000, i // 2000, 1] for i in range(10_000)]})
print("points", r.status_code, round(time.monotonic() - t, 1))
t = time.monotonic()
r = post({"boxes": [[0, 0, 100, 100]] * 600})
print("boxes", r.status_code, round(time.monotonic() - t, 1))
image = base64.b64encode(png(4000, 2000)).decode()
r = post({"boxes": [[0, 0, 100, 100]] * 63})
print("pixels", r.status_code, r.json()["error"][:40])
""",
        memory=3 * 1024**3,
    )
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in outcome.stdout.splitlines())
    assert lines["points"].startswith("422") and float(lines["points"].split()[1]) < 5
    assert lines["boxes"].startswith("422") and float(lines["boxes"].split()[1]) < 5
    assert lines["pixels"].startswith("422 63 prompts on a 4000x2000")


def test_stalled_uploads_do_not_lock_out_a_keyless_server():
    outcome = _serve(
        """
stalled = []
for _ in range(20):
    s = socket.create_connection((HOST, PORT))
    s.sendall(b"POST /v1/segment HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n"
              b"Content-Type: application/json\\r\\nContent-Length: 100000\\r\\n\\r\\n{")
    stalled.append(s)
time.sleep(0.5)
r = httpx.post(URL + "/v1/segment", files={"image": ("a.png", png(64, 64), "image/png")},
               data={"box": "1,1,40,40"}, timeout=30)
print("served", r.status_code)
time.sleep(2.5)
answers = []
for s in stalled:
    s.settimeout(5)
    answers.append(s.recv(12)[9:12].decode())
print("stalled", ",".join(sorted(set(answers))))
""",
    )
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert "served 200" in outcome.stdout
    assert "stalled 408" in outcome.stdout


def test_unencodable_phrase_on_the_cli_is_one_line(tmp_path):
    from tests.conftest import ASSETS

    outcome = run_cli("segment", str(ASSETS / "astronaut.jpg"), "bad \udcff", "--grounder", "x:y")
    assert outcome.one_line_error and "surrogate" in outcome.stderr, outcome.stderr
