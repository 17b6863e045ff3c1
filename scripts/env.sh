# Sourced by the other scripts: create .venv if needed and define install_refseg (scripts/lib.sh).
# Everything is installed with requirements.lock as constraints, so a fresh machine gets exactly
# the versions CI tested; torch comes first, as the build this machine should have.
set -euo pipefail
REFSEG_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REFSEG_LOCK="$REFSEG_ROOT/requirements.lock"
cd "$REFSEG_ROOT"
PY="${PYTHON:-python3}"
# shellcheck source=scripts/lib.sh
. "$REFSEG_ROOT/scripts/lib.sh"
if [ ! -x .venv/bin/python ]; then
  stage "creating the virtual environment .venv (a few seconds)"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
