#!/usr/bin/env bash
# The fixed, seeded synthetic benchmark whose aggregate metrics CI compares against
# results/baseline/ci.json. Recreate the baseline (after an intended change) with:
#   bash .ci/regression.sh --write
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
crbench synth "$work/data" --rois 4 --patches 2 --size 64 --seed 0
crbench data masks "$work/data" --split test
crbench run --data "$work/data" --methods least_cloudy,mosaicing --L 2 3 --split test \
    --out "$work/run"
if [ "${1:-}" = "--write" ]; then
  crbench check --results "$work/run" --baseline results/baseline/ci.json --write
else
  crbench check --results "$work/run" --baseline results/baseline/ci.json
fi
