"""Odd settings and what killed runs leave behind: one line each, and cleaned up next time.

``WORLD_SIZE``/``RANK`` set to text, ``serve --max-body-mb inf``, ``REFSEG_CACHE`` naming a
file or a folder that cannot be made ended in tracebacks; a killed ``weights fetch`` left a
35 MB ``.fetch-*`` folder and a killed int8 build a ``.build-*`` folder that nothing removed.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import ASSETS
from tests.hostile.harness import run_cli_cases

IMAGE = str(ASSETS / "astronaut.jpg")


LAUNCHER = {
    "world-text": ({"WORLD_SIZE": "abc"}, "WORLD_SIZE"),
    "rank-text": ({"WORLD_SIZE": "2", "RANK": "first"}, "RANK"),
    "world-float": ({"WORLD_SIZE": "1e3"}, "WORLD_SIZE"),
}
SERVE = ["--max-body-mb", "--cache-mb", "--body-timeout"]
CACHES = ["file", "under-a-file", "proc"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every CLI case in one limited child."""
    root = tmp_path_factory.mktemp("leftovers")
    pairs = root / "pairs.jsonl"
    pairs.write_text(f'{{"image": "{IMAGE}", "boxes": [[1, 1, 50, 50]]}}\n')
    cases: dict = {}
    for name, (env, _) in LAUNCHER.items():
        cases[name] = (["segment", "--batch", str(pairs), "--out", str(root / name)], env)
    for option in SERVE:
        cases[option] = ["serve", option, "inf"]
    file = root / "a-file"
    file.write_text("x")
    for where in CACHES:
        cache = {"file": file, "under-a-file": file / "cache", "proc": "/proc/refseg-cache"}
        cases[where] = (["weights", "fetch"], {"REFSEG_CACHE": str(cache[where])})
    return run_cli_cases(cases, timeout=60)


@pytest.mark.parametrize("name", list(LAUNCHER))
def test_launcher_variables_that_are_not_numbers_are_one_line(outcomes, name):
    out = outcomes[name]
    assert out.one_line_error, out.stderr[-2000:]
    assert LAUNCHER[name][1] in out.stderr


@pytest.mark.parametrize("option", SERVE)
def test_serve_sizes_of_infinity_are_usage_errors(outcomes, option):
    out = outcomes[option]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert option in out.stderr


@pytest.mark.parametrize("where", CACHES)
def test_a_cache_that_cannot_be_a_folder_is_one_line(outcomes, where):
    out = outcomes[where]
    assert out.one_line_error, out.stderr[-2000:]
    assert "REFSEG_CACHE" in out.stderr


def _aged(folder, seconds: float) -> None:
    folder.mkdir()
    (folder / "part.tgz").write_bytes(b"x" * 1000)
    old = time.time() - seconds
    os.utime(folder, (old, old))


def test_work_folders_of_killed_runs_are_removed_by_the_next_one(tmp_path):
    from refseg.npm import work_dir

    dead = 2**22 + 12345  # above the default pid_max: no such process
    _aged(tmp_path / f".fetch-{dead}-abc", 120)  # its process is gone: removed
    _aged(tmp_path / ".fetch-old_style", 7 * 3600)  # unknown owner, hours old: removed
    _aged(tmp_path / ".fetch-young_style", 600)  # unknown owner, recent: kept
    _aged(tmp_path / f".fetch-{os.getpid()}-live", 7200)  # a live process's: kept
    _aged(tmp_path / f".build-{dead}-xyz", 120)  # another prefix: not this one's business
    with work_dir(tmp_path, ".fetch-") as tmp:
        assert os.path.basename(tmp).startswith(f".fetch-{os.getpid()}-")
        left = sorted(p.name for p in tmp_path.iterdir() if p.name != os.path.basename(tmp))
    assert left == [
        f".build-{dead}-xyz",
        f".fetch-{os.getpid()}-live",
        ".fetch-young_style",
    ]
