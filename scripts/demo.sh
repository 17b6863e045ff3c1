#!/usr/bin/env bash
# The main job on a fresh machine: environment, install, default weights, then segment the
# bundled sample image and write the result JSON, union mask and overlay to out/.
source "$(dirname "$0")/env.sh"
# openvino: the grounder's CPU engine, which the default grounder uses where it runs on a CPU.
install_refseg "vlm,openvino"
stage "fetching the default segmenter weights (once per machine, seconds; then checked by sha256)"
refseg weights fetch
stage "segmenting the bundled photo (tries the default grounder first; seconds without its weights, a few minutes the first time with them: download and OpenVINO export)"
refseg demo --out out
