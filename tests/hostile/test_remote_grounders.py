"""Hostile answers from remote grounders (moondream: and openai: servers): deep JSON, huge or
non-finite paths and boxes, an oversized body. Each ends as a parse error on that answer or one
line, fast, in bounded memory."""

from __future__ import annotations

from tests.hostile.harness import run_python

CASES = r"""
import json, time
import numpy as np
from refseg.errors import RefsegError
from refseg.grounding.moondream import MoondreamGrounder
from tests.grounding.moondream_server import MoondreamServer

BOX = {"x_min": 0.1, "y_min": 0.1, "x_max": 0.9, "y_max": 0.9}
ring = " ".join(f"L {i % 2} {i / 200000}" for i in range(200_000))
cases = {
    "deep": b"[" * 200_000 + b"]" * 200_000,
    "huge_body": b'{"path": "' + b"M 0 0 " * 3_000_000 + b'"}',
    "many_vertices": {"path": "M 0 0 " + ring + " Z", "bbox": BOX},
    "huge_numbers": {"path": "M 0 0 L 1e300 0 L 0 1e300 Z", "bbox": BOX},
    "nan_box": b'{"path": "M 0 0 L 1 0 L 1 1 Z", '
               b'"bbox": {"x_min": NaN, "y_min": 0, "x_max": 1, "y_max": 1}}',
    "huge_box": {"path": "M 0 0 L 1 0 L 1 1 Z",
                 "bbox": {"x_min": 0, "y_min": 0, "x_max": 1e300, "y_max": 1e300}},
    "far_outside": {"path": "M 5 5 L 6 5 L 6 6 Z", "bbox": BOX},
    "bowtie": {"path": "M 0 0 L 1 1 L 1 0 L 0 1 Z", "bbox": BOX},
    "path_list": {"path": ["M", 0, 0], "bbox": BOX},
}
image = np.zeros((64, 80, 3), np.uint8)
for name, answer in cases.items():
    start = time.perf_counter()
    with MoondreamServer(lambda r, a=answer: a) as server:
        try:
            (g,) = MoondreamGrounder(server.url, retries=1).ground([image], ["x"])
            what = f"parse_error={g.parse_error!r}" if g.parse_error else (
                f"instances={len(g.instances)}")
        except RefsegError as exc:
            assert "\n" not in str(exc), name
            what = f"error={str(exc)[:80]!r}"
    print(name, round(time.perf_counter() - start, 2), what)
"""


def test_hostile_moondream_answers_are_bounded() -> None:
    outcome = run_python(CASES)
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in outcome.stdout.splitlines())
    assert set(lines) == {
        "deep", "huge_body", "many_vertices", "huge_numbers", "nan_box", "huge_box",
        "far_outside", "bowtie", "path_list",
    }  # fmt: skip
    for name, rest in lines.items():
        seconds = rest.split(" ", 1)[0]
        assert float(seconds) < 10, (name, rest)
    assert "non-JSON" in lines["deep"] and "16 MiB" in lines["huge_body"]
    assert "parse_error" in lines["many_vertices"] and "parse_error" in lines["huge_numbers"]
    assert "parse_error" in lines["nan_box"] and "parse_error" in lines["path_list"]
    assert "parse_error" in lines["far_outside"]  # wholly outside the image: invalid
    assert "instances=1" in lines["bowtie"]
    assert "bbox x_max is out of range" in lines["huge_box"]


DEEP_OPENAI = r"""
import subprocess, sys
from tests.grounding.chat_server import ChatServer

with ChatServer(lambda r: "x", fail=lambda n: (200, b"[" * 200_000)) as server:
    spec = f"openai:{server.url}#m;retries=1"
    argv = ["segment", "src/refseg/assets/astronaut.jpg", "x", "--grounder", spec,
            "--answer", "path", "--refiner", "none"]
    done = subprocess.run([sys.executable, "-m", "refseg", *argv], capture_output=True, text=True)
sys.stderr.write(done.stderr)
sys.exit(done.returncode)
"""


def test_deeply_nested_openai_response_is_one_line() -> None:
    outcome = run_python(DEEP_OPENAI)
    assert outcome.one_line_error, outcome.stderr[-1500:]
    assert "non-JSON" in outcome.stderr
