#!/usr/bin/env bash
# The whole test suite: installs everything the tests need, then runs pytest.
source "$(dirname "$0")/env.sh"
install_refseg "vlm,train,serve,dev,openvino,supervision"
# The browser test drives Debian's Chromium (a test tool's own browser download cannot work
# offline), so install the system package when it is missing.
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    stage "installing Debian's chromium for the browser test (once per machine, about 1 min)"
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium) >/dev/null
  else
    echo "note: chromium is not installed; the browser test will skip outside CI" >&2
  fi
fi
stage "fetching the default segmenter weights (once per machine, seconds; then checked by sha256)"
refseg weights fetch >/dev/null
# Tells tests/scripts/test_install.py that this environment was made from requirements.lock.
export REFSEG_LOCKED=1
stage "running the test suite (about 7 min on 2 idle cores)"
set +e
python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
# pytest exits 5 when nothing was collected: that is a failure here, not a pass.
exit $status
