"""Hostile and careless use of the CLI's files: bad pairs files and unwritable outputs must end
in one line and exit 2, never a traceback, and never leave a half-written file (issue 11).

Child processes are slow to start, so beside two cases through the real entry point, the other
cases run one after another in a single child (``refseg.cli.main`` per case, stderr captured).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import ASSETS
from tests.hostile.harness import run_cli, run_limited

IMAGE = str(ASSETS / "astronaut.jpg")
#: A grounder nobody listens on: every case must fail before or without it.
DEAD = "openai:http://127.0.0.1:9#m;retries=1"


def test_lone_surrogate_in_a_pairs_file(tmp_path: Path) -> None:
    """It crashed the batch record writer with a traceback, at the same pair on every rerun."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(
        b'{"image": "a.jpg", "phrase": "ok"}\n{"image": "a.jpg", "phrase": "\\ud800"}'
    )
    out = str(tmp_path / "o")
    done = run_cli("segment", "--batch", str(pairs), "--out", out, "--grounder", DEAD)
    assert done.one_line_error, done.stderr
    assert f"{pairs}: line 2: the phrase has" in done.stderr


def test_full_device_as_output(tmp_path: Path) -> None:
    done = run_cli("segment", IMAGE, "--box", "1,1,50,50", "--json", "/dev/full", cwd=tmp_path)
    assert done.one_line_error, done.stderr
    assert "cannot write /dev/full: no space left" in done.stderr


CASES = """
import contextlib, io, json, sys
from refseg.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def test_careless_files(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("keep")
    photo = tmp_path / "v.jpg"
    photo.write_bytes(Path(IMAGE).read_bytes())
    (tmp_path / "latin1.jsonl").write_bytes(b'{"image": "a.jpg", "phrase": "caf\xe9"}\n')
    (tmp_path / "utf16.jsonl").write_bytes('{"image": "a.jpg"}\n'.encode("utf-16"))
    (tmp_path / "ok.jsonl").write_text(json.dumps({"image": IMAGE, "phrase": "the face"}) + "\n")
    (tmp_path / "o" / "results.jsonl").mkdir(parents=True)
    box = ["segment", IMAGE, "--box", "1,1,50,50"]
    batch = ["segment", "--grounder", DEAD, "--batch"]
    cases = {
        "cannot write .: it is a folder": [*box, "--json", "."],
        "afile is a file, not a folder": [*box, "--json", "afile/x.json"],
        "cannot write /proc/self/x.json": [*box, "--mask-png", "/proc/self/x.json"],
        "is the input file": ["segment", "v.jpg", "--box", "1,1,50,50", "--overlay", "v.jpg"],
        "latin1.jsonl: line 1: not UTF-8": [*batch, "latin1.jsonl", "--out", "o2"],
        "utf16.jsonl: line 1: not UTF-8": [*batch, "utf16.jsonl", "--out", "o2"],
        "results.jsonl: it is a folder": [*batch, "ok.jsonl", "--out", "o"],
    }
    done = run_limited(
        [sys.executable, "-c", CASES, json.dumps(list(cases.values()))], cwd=tmp_path
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    for message, (code, err) in zip(cases, json.loads(done.stdout.splitlines()[-1])):
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and message in lines[0], (message, err)
    assert photo.read_bytes() == Path(IMAGE).read_bytes()
    left = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".jsonl")
    assert left == ["afile", "o", "v.jpg"]  # no half-written or stray files
