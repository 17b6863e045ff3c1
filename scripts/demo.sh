#!/usr/bin/env bash
# The main job on a fresh machine: environment, install, default weights, then segment the
# bundled sample image and write the result JSON, union mask and overlay to out/.
source "$(dirname "$0")/env.sh"
install_refseg "vlm"
stage "fetching the default segmenter weights (once per machine, seconds; then checked by sha256)"
refseg weights fetch
stage "segmenting the bundled photo (tries the default grounder first; about 20 s)"
refseg demo --out out
