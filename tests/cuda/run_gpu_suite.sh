#!/usr/bin/env bash
# The GPU half of the test suite, for a machine with a GPU and PyTorch's CUDA LibTorch (the `run`
# device): builds with MQ_TORCH_CUDA=ON (device tensors) and runs
#   test_cuda         every kernel vs the C++ reference, bit for bit
#   test_conformance  ModelOpt goldens on CPU and, with at::hasCUDA(), on CUDA tensors
#   test_quant test_kernels test_calib test_nn test_models test_export  the CPU unit suites, as a
#                     sanity check of the same build
#   test_job          the main job on the embedded model, CPU vs CUDA (same perplexity, same packed weights)
# Usage (repo root):  bash tests/cuda/run_gpu_suite.sh [outdir]     (logs go to outdir, default $OUT)
set -uo pipefail
out=${1:-${OUT:-/tmp/gpusuite}}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
nvidia-smi -L >"$out/gpu.txt" 2>&1; cat "$out/gpu.txt"
targets="test_cuda test_conformance test_quant test_kernels test_calib test_nn test_models test_export test_job"
. "$root/tests/cuda/device_toolchain.sh"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMQ_TORCH_CUDA=ON "${MQ_CC[@]}" \
  -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" >"$out/build.log" 2>&1 \
  && cmake --build build-gpu -j "$(nproc)" --target $targets >>"$out/build.log" 2>&1 \
  || { tail -40 "$out/build.log"; exit 1; }
preload=$(mq_libstdcxx_preload build-gpu/tests/test_job)
[ -n "$preload" ] && echo "binaries lack libstdc++.so.6 in DT_NEEDED: running with LD_PRELOAD=$preload"
rc=0
for t in $targets; do
  LD_PRELOAD=$preload ./build-gpu/tests/$t --gtest_brief=1 >"$out/$t.log" 2>&1; r=$?
  echo "$t rc=$r: $(grep -E '^\[  PASSED|^\[  FAILED  \] [0-9]+|tests ran' "$out/$t.log" | tr '\n' ' ')"
  [ $r -eq 0 ] || { rc=1; grep -E '^\[  FAILED' "$out/$t.log" | head -20; }
done
# At most 8 files come back from a device run: the per-target logs go into one archive.
tar czf "$out/logs.tgz" -C "$out" $(cd "$out" && ls *.log) && rm -f "$out"/test_*.log
exit $rc
