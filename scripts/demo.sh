#!/usr/bin/env bash
# The main job on a fresh machine: environment, install, default weights, then segment the
# bundled sample image and write the result JSON, union mask and overlay to out/.
source "$(dirname "$0")/env.sh"
install_refseg "vlm"
refseg weights fetch
refseg demo --out out
