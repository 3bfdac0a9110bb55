#!/usr/bin/env bash
# The GPU check on a machine without network: installs the wheels that
# scripts/gpu_wheels.sh downloaded into .whl/ (pip install --no-index --no-deps --target),
# then crbench itself, then runs scripts/gpu_check.py with the given options.
#
# Usage (in the repository root, .whl/ beside it):
#   bash scripts/gpu_check.sh [--out FILE] [--budget-s S] [--device cuda:N] [--smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WHEELS=()
if compgen -G ".whl/*.whl" >/dev/null; then
  WHEELS=(--wheels .whl)
fi
PYTHONUNBUFFERED=1 exec "$PY" scripts/gpu_check.py ${WHEELS[@]+"${WHEELS[@]}"} "$@"
