#!/usr/bin/env bash
# Builds mqdist if needed (cmake/build.sh) and runs the tensor mode on the shipped example with
# NVFP4_DEFAULT_CFG: fake-quantizes both weights and prints amax, mean |error| and SNR per tensor.
#   MQ_BUILD_DIR  build directory (default: <repo>/build)
#   MQ_PRESET     quantizer spec (default: NVFP4_DEFAULT_CFG:weight)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(bash "$root/cmake/build.sh" --target mqdist | tail -n 1)
out="$build/example/tensors_nvfp4.safetensors"
mkdir -p "$(dirname "$out")"
"$build/launch/mqdist" tensor --quantizer "${MQ_PRESET:-NVFP4_DEFAULT_CFG:weight}" \
    --in "$root/configs/examples/tensors.safetensors" --out "$out"
