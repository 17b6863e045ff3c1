#!/usr/bin/env bash
# The engine and real-size tests (tests/engines/): a real OpenVINO export of tiny taught models
# (answers equal to the transformers engine's) and Qwen3-VL-2B at its published size. Slower
# than the suite (the export environment is made once per machine: a few minutes, ~1.6 GB), so
# they run here rather than in scripts/test.sh; CI (.ci/run) runs both.
source "$(dirname "$0")/env.sh"
install_refseg "vlm,train,serve,dev,openvino"
export REFSEG_LOCKED=1
stage "running the engine and real-size tests (about 3 min; the first run on a machine first makes the export environment: minutes, ~1.6 GB)"
set +e
REFSEG_ENGINE_TESTS=1 python -m pytest -q -p no:cacheprovider tests/engines "$@"
status=$?
set -e
exit $status
