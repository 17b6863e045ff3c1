"""The install scripts: torch build choice, failing installs, the lock, the base-install CLI.

These run pip for real (dry runs against the configured indexes and, for the no-local-wheels
case, the public index), because what is under test is pip's resolution on this machine.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
LOCK = ROOT / "requirements.lock"
ASTRONAUT = ROOT / "src" / "refseg" / "assets" / "astronaut.jpg"


def _load_install_torch():
    spec = importlib.util.spec_from_file_location("install_torch", SCRIPTS / "install_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install_torch = _load_install_torch()


def _locked(name: str) -> str:
    for line in LOCK.read_text().splitlines():
        if line.startswith(f"{name}=="):
            return line.split("==", 1)[1]
    raise AssertionError(f"{name} is not in {LOCK}")


def _dry_run(
    gpu: bool, *, local_config: bool, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """install_torch.py --dry-run as on a machine with/without a GPU, with/without this
    machine's pip configuration (its local wheel folder and index mirrors)."""
    env = {**os.environ, "REFSEG_ASSUME_GPU": "1" if gpu else "0"}
    env.pop("REFSEG_TORCH_CPU_INDEX", None)
    if not local_config:
        env["PIP_CONFIG_FILE"] = os.devnull  # no config files: the public index only
        for key in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_CONSTRAINT"):
            env.pop(key, None)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "install_torch.py"), "--dry-run", "--lock", str(LOCK)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _skip_if_offline(done: subprocess.CompletedProcess) -> None:
    if done.returncode == install_torch.UNRESOLVED and "cannot resolve" in done.stderr:
        pytest.skip(f"the public index is not reachable here: {done.stderr.strip()}")


def test_cuda_requirements_follow_markers() -> None:
    requires = [
        "filelock",
        'nvidia-cublas==13.0.0.19; platform_system == "Linux"',
        'nvidia-nccl==2.28; sys_platform == "win32"',
        'typing-extensions>=4.10; extra == "opt"',
    ]
    found = install_torch.cuda_requirements(requires)
    expected = ["nvidia-cublas"] if sys.platform == "linux" else []
    assert found == expected


def test_locked_version_reads_the_torch_pin(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.write_text("# header\ntorchvision==0.29.0\ntorch==2.13.0\n")
    assert install_torch.locked_version(lock) == "2.13.0"
    lock.write_text("numpy==2.0\n")
    with pytest.raises(SystemExit):
        install_torch.locked_version(lock)


def _fake_wheel(index: Path, version: str, requires: list[str]) -> None:
    """A torch wheel that carries only metadata, in a PEP 503 simple index at ``index``."""
    folder = index / "torch"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"torch-{version}-py3-none-any.whl"
    info = f"torch-{version.split('+')[0]}.dist-info"
    meta = "Metadata-Version: 2.1\nName: torch\nVersion: " + version + "\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(folder / name, "w") as wheel:
        wheel.writestr(f"{info}/METADATA", meta)
        wheel.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{info}/RECORD", "")
    links = "".join(f'<a href="{w.name}">{w.name}</a>\n' for w in sorted(folder.glob("*.whl")))
    (folder / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    (index / "index.html").write_text('<html><body><a href="torch/">torch</a></body></html>\n')


@pytest.fixture(scope="module")
def fake_indexes(tmp_path_factory) -> dict[str, str]:
    """file:// indexes standing in for the public index (CUDA or CPU builds) and PyTorch's
    CPU index; this machine cannot reach the real PyTorch index."""
    root = tmp_path_factory.mktemp("indexes")
    version = _locked("torch")
    cuda = ['nvidia-cublas==13.0.0.19; platform_system == "Linux"', "filelock"]
    _fake_wheel(root / "public-cuda", version, cuda)
    _fake_wheel(root / "public-cpu", version, ["filelock"])
    _fake_wheel(root / "pytorch-cpu", f"{version}+cpu", ["filelock"])
    urls = {path.name: path.as_uri() for path in root.iterdir()}
    urls["missing"] = (root / "no-such-index").as_uri()
    return urls


@pytest.mark.skipif(sys.platform != "linux", reason="CUDA wheels are a Linux matter")
@pytest.mark.parametrize(
    ("gpu", "public", "cpu_index", "expected", "notice"),
    [
        # no GPU, the public index has only the CUDA build: the CPU index's build
        (False, "public-cuda", "pytorch-cpu", "+cpu (CPU build) from ", False),
        # no GPU, the CPU index is unreachable: the default build after all, with one line
        (False, "public-cuda", "missing", " (CUDA build, 1 nvidia-* packages)", True),
        # no GPU, the CPU index has no CPU build (it serves the CUDA one): the same fallback
        (False, "public-cuda", "public-cuda", " (CUDA build, 1 nvidia-* packages)", True),
        # the configured indexes already offer a CPU build: the CPU index is never asked
        (False, "public-cpu", "missing", " (CPU build)", False),
        # a GPU takes the CUDA build, never asking the CPU index
        (True, "public-cuda", "missing", " (CUDA build, 1 nvidia-* packages)", False),
    ],
)
def test_torch_build_choice(fake_indexes, gpu, public, cpu_index, expected, notice) -> None:
    done = _dry_run(
        gpu,
        local_config=False,
        extra_env={
            "PIP_INDEX_URL": fake_indexes[public],
            "REFSEG_TORCH_CPU_INDEX": fake_indexes[cpu_index],
        },
    )
    assert done.returncode == 0, done.stderr
    assert f"would install torch {_locked('torch')}{expected}" in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("install_torch:")]
    if notice:
        assert len(lines) == 1, done.stderr
        assert fake_indexes[cpu_index] in lines[0] and "installing the default build" in lines[0]
        assert "REFSEG_TORCH_CPU_INDEX" in lines[0]
    else:
        assert not lines, done.stderr


def test_the_cpu_index_defaults_to_pytorchs(monkeypatch) -> None:
    monkeypatch.delenv("REFSEG_TORCH_CPU_INDEX", raising=False)
    assert install_torch.cpu_index() == install_torch.PYTORCH_CPU_INDEX
    monkeypatch.setenv("REFSEG_TORCH_CPU_INDEX", "file:///mirror/cpu")
    assert install_torch.cpu_index() == "file:///mirror/cpu"


@pytest.mark.skipif(sys.platform != "linux", reason="CUDA wheels are a Linux matter")
def test_without_local_wheels_a_cpu_machine_never_stops() -> None:
    """With the public index only, a CPU machine gets the CPU build where PyTorch's CPU index
    answers, and otherwise the default build with one line saying why: never a stop."""
    cpu = _dry_run(gpu=False, local_config=False)
    _skip_if_offline(cpu)
    assert cpu.returncode == 0, cpu.stderr
    if "CUDA build" in cpu.stdout:
        lines = [line for line in cpu.stderr.splitlines() if line.startswith("install_torch:")]
        assert len(lines) == 1 and "installing the default build" in lines[0]
    else:
        assert "+cpu (CPU build) from " in cpu.stdout


def test_with_this_machines_configuration_no_cuda_wheels_without_a_gpu() -> None:
    """With this machine's pip configuration, where a local CPU wheel exists (this machine,
    CI), it is chosen without asking any other index."""
    done = _dry_run(gpu=False, local_config=True)
    local_cpu_wheels = list(Path("/opt/wheels").glob(f"torch-{_locked('torch')}+cpu-*.whl"))
    if not local_cpu_wheels:
        pytest.skip("no local CPU wheel of torch on this machine")
    assert done.returncode == 0, done.stderr
    assert f"would install torch {_locked('torch')}+cpu (CPU build)\n" == done.stdout


def _bash(script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )


def test_a_failed_install_stops_the_script_with_pips_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    bad.write_bytes(b"not a zip")
    done = _bash(
        f"set -euo pipefail; REFSEG_LOCK={LOCK}; . scripts/lib.sh; pip_install {bad}; "
        "echo still-running"
    )
    assert done.returncode != 0
    assert "still-running" not in done.stdout
    assert "pip install" in done.stderr and "failed" in done.stderr
    assert "ERROR" in done.stderr  # pip's own message is shown, not swallowed


def test_lock_pins_every_package_and_the_key_ones() -> None:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert name == name.lower() and "+" not in version, line
            pins[name] = version
    for name in ("torch", "transformers", "trl", "onnxruntime", "numpy", "fastapi", "pytest"):
        assert name in pins, name


def _required_closure(root: str, extras: set[str]) -> set[str]:
    """Names of the installed distributions ``root[extras]`` needs, transitively."""
    seen: set[str] = set()
    todo = [(root, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": e}) for e in (wanted or {""})
            ):
                continue
            key = req.name.lower().replace("_", "-")
            if key == root:  # refseg[train] requires refseg[vlm]
                todo.append((root, frozenset(req.extras)))
            elif key not in seen:
                seen.add(key)
                todo.append((key, frozenset(req.extras)))
    return seen


@pytest.mark.skipif(
    os.environ.get("REFSEG_LOCKED") != "1", reason="only in an environment made by scripts/"
)
def test_the_environment_is_the_locked_one() -> None:
    """What scripts/test.sh installs is exactly the lock: every package refseg needs is
    pinned there, and installed at the pinned version."""
    pins = {
        line.split("==")[0]: line.split("==")[1]
        for line in LOCK.read_text().splitlines()
        if line and not line.startswith("#")
    }
    needed = _required_closure(
        "refseg", {"vlm", "train", "serve", "dev", "openvino", "supervision"}
    )
    off = []
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        version = dist.version.split("+", 1)[0]
        if name in needed and name not in pins:
            off.append(f"{name} {version} (not in the lock)")
        elif name in pins and pins[name] != version:
            off.append(f"{name} {version} (lock: {pins[name]})")
    assert needed, "refseg's requirements were not found"
    assert not off, "not as locked (run scripts/lock.sh, then the tests): " + ", ".join(off)


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    """A venv with refseg's core dependencies only (no extras), as `pip install refseg` gives,
    versions from the lock; refseg itself from this checkout's src/ through a .pth file."""
    venv = tmp_path_factory.mktemp("base") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-c", str(LOCK), *core],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"core dependencies did not install: {done.stderr[-2000:]}")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "refseg-checkout.pth").write_text(str(ROOT / "src") + "\n")
    return python


def _refseg(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "refseg", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_base_install_has_no_extras(base_venv: Path, tmp_path: Path) -> None:
    for module in ("torch", "click", "fastapi", "transformers"):
        probe = subprocess.run([str(base_venv), "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"{module} is importable in the base venv"


def test_base_install_usage_error_is_clicks_message(base_venv: Path, tmp_path: Path) -> None:
    done = _refseg(base_venv, "segment", "x.jpg", "--no-such-option", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "No such option: --no-such-option" in done.stderr


@pytest.mark.parametrize(
    ("args", "extra"),
    [(("serve",), "serve"), (("segment", str(ASTRONAUT), "the face"), "vlm")],
)
def test_base_install_names_the_missing_extra(base_venv, tmp_path, args, extra) -> None:
    done = _refseg(base_venv, *args, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"pip install 'refseg[{extra}]'" in lines[0]


def test_base_install_segments_with_a_box(base_venv: Path, tmp_path: Path) -> None:
    """The embedded default segmenter needs nothing beyond the core dependencies."""
    done = _refseg(
        base_venv,
        "segment",
        str(ASTRONAUT),
        "--box",
        "140,20,320,200",
        "--json",
        str(tmp_path / "r.json"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r.json").is_file()
