#!/usr/bin/env bash
# The whole test suite: installs everything the tests need, then runs pytest.
source "$(dirname "$0")/env.sh"
install_refseg "vlm,train,serve,dev"
refseg weights fetch >/dev/null
set +e
python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
# pytest exits 5 when nothing was collected: that is a failure here, not a pass.
exit $status
