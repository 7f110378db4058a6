#!/usr/bin/env bash
# The GPU half of gen_export.py on the `run` device (H100, torch 2.11+cu130, no network): ModelOpt,
# transformers and their missing dependencies come as wheels from .whl/ (pinned as in
# tests/conformance/requirements.txt). Only ModelOpt's MX CUDA extension is JIT-built (NVFP4 uses Triton).
# Outputs go to $OUT/llama/<preset>/.
set -euo pipefail
python3 -V
nvidia-smi --query-gpu=name --format=csv,noheader
target=$(mktemp -d)
pip install -q --no-deps --no-index --target "$target" .whl/*.whl
export PYTHONPATH=$target TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
python3 tests/export_golden/gen_export.py --gpu --out "$OUT" --budget-s "${BUDGET_S:-280}" 2>&1 |
  grep -v -e "Warning" -e "warn(" -e "it/s]"
