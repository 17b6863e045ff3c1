"""Install the torch build this machine should have, never CUDA wheels on a machine without a GPU.

On Linux, ``pip install torch==X`` from the public index selects the CUDA build, which pulls
about 18 ``nvidia-*`` packages (several GB) that a CPU-only machine cannot use. This script asks
pip what it *would* install (``--dry-run --report``: pip's own resolution, with whatever indexes
and wheel folders the user configured), inspects that torch's metadata, and:

- on a machine with an NVIDIA GPU, installs it whatever the build;
- without one, installs it only if it is a CPU build (no ``nvidia-*`` requirement applies here),
  and otherwise stops with one line saying how to get a CPU build.

The torch version comes from the lock file (``requirements.lock``), so the build installed is the
one the tests ran with. Exit status: 0 installed (or would be, with ``--dry-run``) or already
present, 3 no CPU build reachable, 4 pip could not resolve torch at all, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

try:  # pip vendors packaging, so this works in a bare venv too
    from packaging.requirements import Requirement
except ImportError:  # pragma: no cover - depends on the environment
    from pip._vendor.packaging.requirements import Requirement

NO_CPU_BUILD = 3
UNRESOLVED = 4


def has_nvidia_gpu() -> bool:
    """An NVIDIA driver answers here (``REFSEG_ASSUME_GPU=0/1`` overrides, for tests)."""
    forced = os.environ.get("REFSEG_ASSUME_GPU")
    if forced in ("0", "1"):
        return forced == "1"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def locked_version(lock: Path) -> str:
    """The ``torch==X`` pin of the lock file."""
    for line in lock.read_text(encoding="utf-8").splitlines():
        found = re.fullmatch(r"torch==([^\s;#]+)\s*", line)
        if found:
            return found.group(1)
    raise SystemExit(f"install_torch: no torch==X line in {lock}")


def cuda_requirements(requires: list[str]) -> list[str]:
    """The ``nvidia-*`` requirements of a torch distribution that apply on this machine."""
    found = []
    for text in requires:
        req = Requirement(text)
        if not req.name.lower().startswith("nvidia-"):
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            found.append(req.name)
    return found


def installed_torch() -> tuple[str, list[str]] | None:
    """Version and requirements of the torch already installed, if any."""
    try:
        dist = metadata.distribution("torch")
    except metadata.PackageNotFoundError:
        return None
    return dist.version, list(dist.requires or [])


def resolve(spec: str) -> tuple[str, list[str]]:
    """What pip would install for ``spec``: its version and requirements."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--quiet",
            "--no-deps",
            "--ignore-installed",
            "--report",
            str(report),
            spec,
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not report.is_file():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            reason = lines[-1] if lines else f"pip exited {done.returncode}"
            print(f"install_torch: pip cannot resolve {spec}: {reason}", file=sys.stderr)
            raise SystemExit(UNRESOLVED)
        (item,) = json.loads(report.read_text())["install"]
    meta = item["metadata"]
    return meta["version"], list(meta.get("requires_dist") or [])


def base_version(version: str) -> str:
    return version.split("+", 1)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lock", type=Path, default=Path(__file__).parents[1] / "requirements.lock"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say what pip would install, install nothing"
    )
    args = parser.parse_args(argv)
    version = locked_version(args.lock)
    spec = f"torch=={version}"
    gpu = has_nvidia_gpu()

    present = None if args.dry_run else installed_torch()
    if (
        present is not None
        and base_version(present[0]) == version
        and (gpu or not cuda_requirements(present[1]))
    ):
        print(f"torch {present[0]} already installed")
        return 0

    resolved, requires = resolve(spec)
    cuda = cuda_requirements(requires)
    build = f"CUDA build, {len(cuda)} nvidia-* packages" if cuda else "CPU build"
    if cuda and not gpu:
        print(
            f"install_torch: no NVIDIA GPU here, and pip's indexes offer only a CUDA build of"
            f" {spec} ({len(cuda)} nvidia-* packages, several GB); install a CPU build first"
            f" (pip install {spec} --index-url URL, with the CPU wheel index URL from PyTorch's"
            " install page, or set PIP_EXTRA_INDEX_URL=URL), then rerun",
            file=sys.stderr,
        )
        return NO_CPU_BUILD
    if args.dry_run:
        print(f"would install torch {resolved} ({build})")
        return 0
    print(f"installing torch {resolved} ({build})")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "-c", str(args.lock), spec],
        stderr=subprocess.PIPE,
        text=True,
    )
    # pip's errors are shown; the noise of local wheel folders is not.
    for line in done.stderr.splitlines():
        if not re.match(r"WARNING: Location .* is ignored", line):
            print(line, file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
