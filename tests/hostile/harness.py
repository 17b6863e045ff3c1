"""The hostile-input suite's harness: every case runs in a child process under limits.

A hostile input's failure modes are the ones a test process cannot survive in-process: a
segmentation fault, a hang, a runaway allocation. So each case runs as a child Python process
with an address-space limit (``RLIMIT_AS``) and a wall-clock timeout; the test then asserts on
the child's exit status and its stderr. A case that hangs or blows the limit fails with a
message that names it, instead of taking the suite down.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Address-space limit of a case's child process. torch, onnxruntime and the model weights
#: map a lot of virtual memory, so this is generous; a runaway allocation still hits it.
MEMORY_LIMIT = 6 * 1024**3

#: A small but complete box-decoder config (boxdec.json): the hostile cases change one field.
BOXDEC_CONFIG = {
    "sources": ["final"],
    "source_dims": [128],
    "text_dim": 128,
    "width": 32,
    "heads": 4,
    "depth": 1,
}
#: Wall-clock limit of one case (seconds).
TIMEOUT = 60


@dataclass
class Outcome:
    """What a child process did: exit status, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def one_line_error(self) -> bool:
        """Exited 2 with exactly one non-empty line on stderr and no traceback."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return self.returncode == 2 and len(lines) == 1 and "Traceback" not in self.stderr


def _limit(memory: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_limited(
    argv: list[str],
    *,
    timeout: float = TIMEOUT,
    memory: int = MEMORY_LIMIT,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> Outcome:
    """Run ``argv`` under the memory limit; fail the test (not hang) past ``timeout``."""
    try:
        done = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            preexec_fn=_limit(memory),
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung: {argv[:4]} ran past {timeout} s")
    if done.returncode < 0:
        pytest.fail(
            f"killed by signal {-done.returncode}: {argv[:4]}\n{done.stderr.decode()[-2000:]}"
        )
    return Outcome(
        done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    )


def run_python(code: str, **kwargs) -> Outcome:
    """Run a Python snippet (dedented) in a limited child process."""
    return run_limited([sys.executable, "-c", textwrap.dedent(code)], **kwargs)


def run_cli(*args: str, **kwargs) -> Outcome:
    """Run ``refseg ARGS`` (this interpreter's package) in a limited child process."""
    return run_limited([sys.executable, "-m", "refseg", *args], **kwargs)


_CASES = r"""
import contextlib, io, json, os, sys, traceback
from refseg.cli import main

cases = json.loads(sys.stdin.read())
out = {}
for name, (argv, env) in cases.items():
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    out[name] = [code, stdout.getvalue(), stderr.getvalue()]
print("\n@@cases@@" + json.dumps(out))
"""


def run_cli_cases(
    cases: dict[str, list[str] | tuple[list[str], dict[str, str]]], **kwargs
) -> dict[str, Outcome]:
    """Run several ``refseg ARGS`` in one limited child (``refseg.cli.main``, as the console
    script does), each with its own stdout/stderr and optional extra environment.

    One interpreter start instead of one per case keeps a table of hostile inputs fast; a
    case that hangs or blows the limit still fails the test (every case then fails with it).
    """
    import json

    table = {
        name: (list(case), {}) if isinstance(case, list) else (list(case[0]), dict(case[1]))
        for name, case in cases.items()
    }
    done = run_limited([sys.executable, "-c", _CASES], stdin=json.dumps(table).encode(), **kwargs)
    if done.returncode != 0:
        pytest.fail(f"the cases' child failed: {done.stderr[-2000:]}")
    results = json.loads(done.stdout.rsplit("@@cases@@", 1)[-1])
    return {name: Outcome(*result) for name, result in results.items()}
