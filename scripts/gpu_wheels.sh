#!/usr/bin/env bash
# Download, here (where the package index is reachable), the wheels that the GPU machine's
# image lacks and crbench needs, for CPython 3.12 on x86-64 Linux, into .whl/ (git-ignored).
#
# The image of the GPU machines lent to this project (Python 3.12, torch 2.11, numpy, scipy,
# pandas, matplotlib, opencv-python-headless, safetensors, tqdm, huggingface-hub, pillow,
# requests, click, attrs, ...) has no rasterio, s2cloudless or diffusers; below are those
# three and each of their requirements the image does not hold either (read off the wheels'
# Requires-Dist). Together about 60 MiB.
# Versions are the ones crbench is tested with here. scripts/gpu_check.sh installs them there
# with `pip install --no-index --no-deps --target ...`.
#
# Usage: bash scripts/gpu_wheels.sh [DIR]     (default: .whl in the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-.whl}"
PY="${PYTHON:-python3}"
WHEELS=(
  # crbench's own requirements that the image lacks
  rasterio==1.4.4 s2cloudless==1.7.3 diffusers==0.42.1
  # rasterio's
  affine==3.0.1 cligj==0.7.2 click-plugins==1.1.1.2
  # s2cloudless's (lightgbm) and sentinelhub's, which s2cloudless imports at import time
  lightgbm==4.7.0 sentinelhub==3.12.0 aenum==3.1.17 dataclasses-json==0.6.7
  marshmallow==3.26.2 oauthlib==4.0.1 requests-oauthlib==2.0.0 pyproj==3.7.2
  shapely==2.2.0 utm==0.9.0 tomli==2.5.0 tomli_w==1.2.0
  # diffusers' (and importlib_metadata's)
  importlib_metadata==10.2.0 lazy-importer==0.1.0
)
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
mkdir -p "$DIR"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d "$DIR" "${WHEELS[@]}"
echo "$(ls "$DIR"/*.whl | wc -l) wheels in $DIR, $(du -sh "$DIR" | cut -f1) in all"
