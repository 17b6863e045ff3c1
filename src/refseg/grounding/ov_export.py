"""Qwen-VL checkpoints exported to OpenVINO IR, once, into the cache, verified on every load.

The export is optimum-intel's (``optimum-cli export openvino --task image-text-to-text``): it
writes the vision encoder, the merger, the text embeddings and a stateful language model that
OpenVINO GenAI's ``VLMPipeline`` runs. optimum-intel pins transformers older than refseg's and
pulls a torchvision that does not load beside a CPU build of torch, so the export runs in an
environment of its own, made by refseg in the cache with pinned versions (:data:`EXPORT_PINS`;
torch the version refseg runs with, the CPU build on a machine without an NVIDIA GPU) and
without torchvision (transformers does not need it to export). Running the exported model needs
only ``openvino-genai`` in refseg's own environment (``pip install 'refseg[openvino]'``).

Both the environment and each export are made in a temporary place and marked complete last
(the environment's ``READY`` file, the export's folder renamed into place with a manifest of
every file's sha256), under a file lock: a killed run leaves nothing that looks finished, and
two runs do not build the same thing at once. An export is keyed by the source (its path,
config and the names, sizes and times of its files), the weight format and the pins, so a
changed checkpoint is exported again; at load every file is checked against the manifest, and a
corrupted export is refused in one line naming the repair (delete the folder and load again).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from refseg.errors import InputError, ModelError
from refseg.npm import cache_dir, sha256_file

__all__ = [
    "EXPORT_PINS",
    "MANIFEST",
    "WEIGHT_FORMATS",
    "export_dir",
    "export_environment",
    "export_model",
    "verify_export",
]

#: The export environment: optimum-intel and what it was tested with (torch is added apart).
EXPORT_PINS = (
    "optimum-intel[openvino]==2.2.0",
    "optimum==2.3.0",
    "transformers==5.0.0",
    "nncf==3.4.0",
    "openvino==2026.4.1",
    "openvino-tokenizers==2026.4.1.0",
)
#: ``weights=`` values and the optimum-cli arguments for each. int4 is asymmetric 4-bit in
#: groups of 128 on every layer but the embeddings (nncf keeps those int8).
WEIGHT_FORMATS: dict[str, tuple[str, ...]] = {
    "fp32": ("--weight-format", "fp32"),
    "fp16": ("--weight-format", "fp16"),
    "int8": ("--weight-format", "int8"),
    "int4": ("--weight-format", "int4", "--group-size", "128", "--ratio", "1.0"),
}
MANIFEST = "refseg-openvino.json"
#: PyTorch's CPU wheel index (as scripts/install_torch.py; ``REFSEG_TORCH_CPU_INDEX``: a mirror).
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: The files whose names, sizes and times identify a source checkpoint.
_SOURCE_SUFFIXES = (".json", ".safetensors", ".jinja", ".txt", ".model")
#: Longest an export may run (a 8B model at int4 on a slow machine is well under it).
EXPORT_TIMEOUT_S = 4 * 3600

Say = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"refseg: {message}", file=sys.stderr, flush=True)


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _torch_version() -> str:
    """The torch release refseg runs with (the export environment uses the same one, so its
    build is one pip already has at hand), else the locked default."""
    try:
        from importlib.metadata import version

        return version("torch").split("+", 1)[0]
    except Exception:
        return "2.13.0"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created), waiting for another process's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], what: str, *, timeout: float = 3600) -> None:
    """Run a step of the set-up; its failure is one line with the tool's own last words."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ModelError(f"{what} took more than {timeout:.0f} s; stopped") from None
    if done.returncode != 0:
        lines = [
            line
            for line in (done.stderr or done.stdout).splitlines()
            if line.strip() and not line.startswith("WARNING: Location")
        ]
        raise ModelError(f"{what} failed: {lines[-1].strip() if lines else done.returncode}")


def _has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        return subprocess.run([smi, "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _torch_source(python: Path, spec: str) -> list[str]:
    """Extra pip arguments that get a CPU build of ``spec`` on a machine without an NVIDIA GPU:
    none when pip's own indexes already offer one (a local wheel folder, a mirror), else
    PyTorch's CPU index, probed briefly (pip falls back to the default build if it cannot be
    reached: large, but it runs on a CPU)."""
    if _has_nvidia_gpu():
        return []
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        probe = [str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps"]
        probe += ["--ignore-installed", "--report", str(report), spec]
        done = subprocess.run(probe, capture_output=True, text=True, timeout=600)
        if done.returncode == 0 and report.is_file():
            requires = json.loads(report.read_text())["install"][0]["metadata"]
            if not any(r.startswith("nvidia-") for r in requires.get("requires_dist") or []):
                return []
    index = os.environ.get("REFSEG_TORCH_CPU_INDEX") or PYTORCH_CPU_INDEX
    return ["--extra-index-url", index, "--timeout", "20", "--retries", "1"]


def export_environment(*, say: Say = _stderr) -> Path:
    """The Python of the export environment, made once (a few minutes and ~1.6 GB)."""
    torch = _torch_version()
    pins = (*EXPORT_PINS, f"torch=={torch}")
    root = cache_dir() / f"openvino-export-env-{_digest(pins)}"
    python = root / "venv" / "bin" / "python"
    ready = root / "READY"
    if ready.is_file():
        return python
    with _locked(root.parent / f".{root.name}.lock"):
        if ready.is_file():  # another process made it while this one waited
            return python
        say(
            f"making the OpenVINO export environment in {root} (once per machine; a few "
            "minutes and about 1.6 GB)"
        )
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _run([sys.executable, "-m", "venv", str(root / "venv")], "creating the export venv")
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        say(f"installing torch {torch} into the export environment")
        source = _torch_source(python, f"torch=={torch}")
        _run([*pip, *source, f"torch=={torch}"], "installing torch for the export")
        say("installing optimum-intel, transformers, nncf and openvino for the export")
        _run([*pip, *pins], "installing the exporter")  # torch is there: no other index asked
        # optimum-intel pulls torchvision, whose PyPI build does not load beside a CPU torch;
        # transformers exports without it.
        _run([str(python), "-m", "pip", "uninstall", "--quiet", "-y", "torchvision"], "cleanup")
        _run([str(python), "-c", "import optimum.intel, openvino"], "checking the exporter")
        freeze = subprocess.run(
            [str(python), "-m", "pip", "freeze"], capture_output=True, text=True
        ).stdout
        ready.write_text(freeze)
    return python


def _source_key(source: Path) -> dict[str, object]:
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix in _SOURCE_SUFFIXES)
    if not (source / "config.json").is_file():
        raise InputError(f"{source} has no config.json: not a transformers checkpoint")
    return {
        "source": str(source.resolve()),
        "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files],
    }


def export_dir(source: Path, weights: str) -> Path:
    """Where the export of ``source`` at ``weights`` lives (whether made yet or not)."""
    if weights not in WEIGHT_FORMATS:
        raise InputError(f"weights={weights!r}: use {' or '.join(WEIGHT_FORMATS)}")
    key = _digest({**_source_key(source), "weights": weights, "pins": EXPORT_PINS})
    return cache_dir() / "openvino" / f"{source.name}-{weights}-{key}"


def verify_export(folder: Path) -> dict[str, object]:
    """The export's manifest, every file checked against its sha256 (one-line refusal)."""
    manifest = folder / MANIFEST
    repair = f"delete {folder} and load again to export anew"
    try:
        data = json.loads(manifest.read_text())
        files = dict(data["files"])
    except (OSError, ValueError, KeyError, TypeError):
        message = f"the OpenVINO export in {folder} has no readable manifest; {repair}"
        raise ModelError(message) from None
    for name, expected in files.items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != expected:
            raise ModelError(
                f"the OpenVINO export in {folder} is corrupted ({name} fails its sha256 check); "
                f"{repair}"
            )
    return data


def export_model(
    source: Path, weights: str = "int8", *, say: Say = _stderr, verify: bool = True
) -> Path:
    """The OpenVINO export of checkpoint folder ``source`` at ``weights``, made if needed."""
    target = export_dir(source, weights)
    if (target / MANIFEST).is_file():
        if verify:
            verify_export(target)
        return target
    python = export_environment(say=say)
    with _locked(target.parent / f".{target.name}.lock"):
        if (target / MANIFEST).is_file():
            return target
        staging = target.parent / f".{target.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        say(f"exporting {source} to OpenVINO ({weights}; once: about 1-2 min per 1B parameters)")
        started = time.perf_counter()
        command = [
            str(python),
            "-m",
            "optimum.commands.optimum_cli",
            "export",
            "openvino",
            "--model",
            str(source),
            "--task",
            "image-text-to-text",
            *WEIGHT_FORMATS[weights],
            str(staging),
        ]
        try:
            _run(command, f"exporting {source} to OpenVINO", timeout=EXPORT_TIMEOUT_S)
            files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
            manifest = {
                "format": 1,
                "source": str(source.resolve()),
                "weights": weights,
                "pins": list(EXPORT_PINS),
                "export_s": round(time.perf_counter() - started, 1),
                "files": files,
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        say(f"exported in {time.perf_counter() - started:.0f} s to {target}")
    return target
