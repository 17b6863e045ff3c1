# Shell functions shared by the scripts (sourced; defines functions only, changes nothing).

# One line on stderr per set-up stage: what it does and how long it usually takes, so that a
# quiet minute of installing is never a mystery. Times are for a 2-core machine.
stage() {
  printf '[refseg %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

# pip install under the lock's constraints. pip's output is kept (only the noise of local wheel
# folders, "WARNING: Location ... is ignored", is dropped); pip's exit status is returned, so a
# failed install stops the caller with pip's error on the screen.
pip_install() {
  local log status=0
  log="$(mktemp)"
  python -m pip install --quiet -c "$REFSEG_LOCK" "$@" 2>"$log" || status=$?
  grep -v "^WARNING: Location .* is ignored" "$log" >&2 || true
  rm -f "$log"
  if [ "$status" -ne 0 ]; then
    echo "pip install $* failed (exit $status)" >&2
  fi
  return "$status"
}

# Install refseg (editable) with the given extras, the locked versions, and the torch build this
# machine should have (scripts/install_torch.py: never CUDA wheels without an NVIDIA GPU).
install_refseg() {
  local extras="$1"
  if [[ "$extras" == *vlm* || "$extras" == *train* ]]; then
    stage "checking torch (first run: downloads and installs the build for this machine, 1-3 min)"
    python "$REFSEG_ROOT/scripts/install_torch.py" --lock "$REFSEG_LOCK" || return $?
  fi
  stage "installing refseg[${extras}] at the locked versions (first run: about 1 min; then seconds)"
  pip_install -e "$REFSEG_ROOT[${extras}]" || return $?
  python -c "import refseg" || { echo "refseg failed to install" >&2; return 1; }
}
