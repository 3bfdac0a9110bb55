#!/usr/bin/env bash
# The fixed, seeded synthetic benchmark whose aggregate metrics CI compares against
# results/baseline/ci.json. Recreate the baseline (after an intended change) with:
#   bash .ci/regression.sh --write
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# three official test ROIs x 3 patches, 64 px, seed 0: 9 samples per L
crbench synth "$work/data" --rois ROIs1868/119,ROIs1970/139,ROIs2017/108 --patches 3 \
    --size 64 --seed 0 --quiet
crbench data masks "$work/data" --split test --no-progress
crbench run --data "$work/data" --methods least_cloudy,mosaicing --L 3 4 5 --split test \
    --out "$work/run" --no-progress
if [ "${1:-}" = "--write" ]; then
  crbench check --results "$work/run" --baseline results/baseline/ci.json --write
else
  crbench check --results "$work/run" --baseline results/baseline/ci.json
fi
