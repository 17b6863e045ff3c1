#!/usr/bin/env bash
# Refresh requirements.lock: resolve the newest versions pyproject.toml allows for everything the
# README's two commands install (extras vlm, train, serve, dev, openvino, supervision, plus the
# CPU build of torch) and record them, exactly, transitively. Then run the tests and commit both:
#   bash scripts/lock.sh && bash scripts/test.sh && git commit requirements.lock -m "lock: refresh"
# TORCH_VERSION picks the torch release (its CPU build must be reachable from pip's indexes).
# The lock is resolved for this machine's Python and platform; elsewhere it is still used as a
# constraints file, where pins of packages that are not needed are ignored.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' requirements.lock 2>/dev/null || true)}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A throwaway venv with a current pip: resolution only, nothing is installed.
"$PY" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
REFSEG_LOCK=/dev/null  # no constraints: the newest versions pyproject.toml allows
PATH="$work/venv/bin:$PATH" pip_install --dry-run --ignore-installed \
  --report "$work/report.json" "torch==$TORCH_VERSION" ".[vlm,train,serve,dev,openvino,supervision]"
"$work/venv/bin/python" - "$work/report.json" "$ROOT/requirements.lock" <<'PY'
import json, os, platform, sys, tempfile
report, lock = sys.argv[1], sys.argv[2]
pins = {}
for item in json.load(open(report))["install"]:
    name = item["metadata"]["name"].lower().replace("_", "-")
    if name == "refseg":
        continue
    # Local labels (torch's "+cpu") are dropped: "torch==2.13.0" admits the CPU build here and
    # the CUDA build on a GPU machine.
    pins[name] = item["metadata"]["version"].split("+", 1)[0]
header = [
    "# The dependency set the tests ran with: every package scripts/test.sh installs, exact.",
    "# Made by scripts/lock.sh (do not edit by hand); used as pip constraints (-c) by scripts/.",
    f"# Resolved for CPython {platform.python_version()} on {sys.platform} {platform.machine()}.",
]
text = "\n".join(header + [f"{n}=={v}" for n, v in sorted(pins.items())]) + "\n"
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(lock), prefix=".lock.")
with os.fdopen(fd, "w") as f:
    f.write(text)
os.replace(tmp, lock)
print(f"wrote {lock}: {len(pins)} packages")
PY
