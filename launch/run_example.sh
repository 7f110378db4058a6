#!/usr/bin/env bash
# The main job on the embedded default model: builds mqdist if needed (cmake/build.sh, which runs
# cmake/setup.sh on a fresh machine), then quantizes assets/models/mq-tiny-dense (a Llama-architecture
# model of ours trained on Debian manual pages) to NVFP4 with ModelOpt's NVFP4_DEFAULT_CFG, calibrating
# on assets/text/calib.txt, prints the quantizer summary and the held-out perplexity before and after,
# and writes the unified HF checkpoint to build/out/mq-tiny-dense-nvfp4.
#   MQ_BUILD_DIR  build directory (default: <repo>/build)
#   MQ_JOB        job file (default: configs/jobs/tiny_dense_nvfp4.json; the MoE model:
#                 configs/jobs/tiny_moe_nvfp4.json)
# Extra arguments go to mqdist (e.g. --set quant=FP8_DEFAULT_CFG, --quiet, --dry-run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(bash "$root/cmake/build.sh" --target mqdist | tail -n 1)
exec "$build/launch/mqdist" --cfg "${MQ_JOB:-$root/configs/jobs/tiny_dense_nvfp4.json}" "$@"
