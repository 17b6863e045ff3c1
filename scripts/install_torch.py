"""Install the torch build this machine should have, never CUDA wheels on a machine without a GPU.

On Linux, ``pip install torch==X`` from the public index selects the CUDA build, which pulls
about 18 ``nvidia-*`` packages (several GB) that a CPU-only machine cannot use. This script asks
pip what it *would* install (``--dry-run --report``: pip's own resolution, with whatever indexes
and wheel folders the user configured), inspects that torch's metadata, and:

- on a machine with an NVIDIA GPU, installs it whatever the build;
- without one, installs it if it is a CPU build (no ``nvidia-*`` requirement applies here);
  otherwise asks again with PyTorch's CPU wheel index added (``REFSEG_TORCH_CPU_INDEX`` names a
  mirror of it) and installs the CPU build from there;
- if that index cannot be reached or has no CPU build of the version, it says so in one line and
  installs the default (CUDA) build after all: it is large, but it runs on a CPU too, and a set-up
  that stops is worse than one that downloads more.

The torch version comes from the lock file (``requirements.lock``), so the build installed is the
one the tests ran with. Exit status: 0 installed (or would be, with ``--dry-run``) or already
present, 4 pip could not resolve torch at all, 2 bad usage; otherwise pip's own exit status.
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

UNRESOLVED = 4
#: The wheel index PyTorch documents for CPU-only installs.
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: How long one probe of the CPU index may wait for an answer (pip's own default is minutes).
PROBE_TIMEOUT_S = 20


class Unresolved(Exception):
    """pip could not resolve the requested torch (its last error line is the message)."""


def cpu_index() -> str:
    """PyTorch's CPU wheel index, or the mirror ``REFSEG_TORCH_CPU_INDEX`` names."""
    return os.environ.get("REFSEG_TORCH_CPU_INDEX") or PYTORCH_CPU_INDEX


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


def resolve(spec: str, *, extra_index: str | None = None) -> tuple[str, list[str]]:
    """What pip would install for ``spec``: its version and requirements.

    ``extra_index`` adds an index to the configured ones, probed with a short timeout and one
    retry so that an unreachable index costs seconds, not pip's default minutes.
    """
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
        ]
        if extra_index:
            command += ["--extra-index-url", extra_index, "--timeout", str(PROBE_TIMEOUT_S)]
            command += ["--retries", "1"]
        done = subprocess.run([*command, spec], capture_output=True, text=True)
        if done.returncode != 0 or not report.is_file():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise Unresolved(lines[-1] if lines else f"pip exited {done.returncode}")
        (item,) = json.loads(report.read_text())["install"]
    meta = item["metadata"]
    return meta["version"], list(meta.get("requires_dist") or [])


def cpu_build_from_index(spec: str, index: str) -> tuple[str, list[str]] | str:
    """The CPU build of ``spec`` that ``index`` offers, or why there is none to be had."""
    try:
        version, requires = resolve(spec, extra_index=index)
    except Unresolved as error:
        return str(error)
    if cuda_requirements(requires):
        return f"cannot be reached or offers no CPU build of {spec}"
    return version, requires


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

    try:
        resolved, requires = resolve(spec)
    except Unresolved as error:
        print(f"install_torch: pip cannot resolve {spec}: {error}", file=sys.stderr)
        return UNRESOLVED
    cuda = cuda_requirements(requires)
    extra_index = None
    if cuda and not gpu:
        index = cpu_index()
        found = cpu_build_from_index(spec, index)
        if isinstance(found, str):
            print(
                f"install_torch: no NVIDIA GPU here, but PyTorch's CPU wheel index ({index})"
                f" {found}: installing the default build instead, the CUDA build of {spec} with"
                f" {len(cuda)} nvidia-* packages (several GB to download; it runs on the CPU"
                " too). Set REFSEG_TORCH_CPU_INDEX=URL to use a mirror of the CPU index.",
                file=sys.stderr,
            )
        else:
            (resolved, requires), cuda, extra_index = found, [], index
    build = f"CUDA build, {len(cuda)} nvidia-* packages" if cuda else "CPU build"
    source = f" from {extra_index}" if extra_index else ""
    if args.dry_run:
        print(f"would install torch {resolved} ({build}){source}")
        return 0
    print(f"installing torch {resolved} ({build}){source}")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "-c", str(args.lock), spec]
    if extra_index:
        command += ["--extra-index-url", extra_index]
    done = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    # pip's errors are shown; the noise of local wheel folders is not.
    for line in done.stderr.splitlines():
        if not re.match(r"WARNING: Location .* is ignored", line):
            print(line, file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
