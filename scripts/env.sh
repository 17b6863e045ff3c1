# Sourced by the other scripts: create .venv if needed and install refseg with the given extras.
# On a machine without an NVIDIA GPU, torch is pinned to the CPU build 2.13.0 *before* refseg's
# extras are resolved, so the extras' torch range is already met and no CUDA wheels are pulled.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_quiet() { pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
install_refseg() {
  local extras="$1"
  if [[ "$extras" == *vlm* || "$extras" == *train* ]] && ! python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
      pip_quiet torch
    else
      pip_quiet torch==2.13.0
    fi
  fi
  pip_quiet -e ".[${extras}]"
  python -c "import refseg" || { echo "refseg failed to install" >&2; exit 1; }
}
