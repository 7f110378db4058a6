#!/usr/bin/env bash
# GPU fake-quant benchmarks, ours then ModelOpt's, in one device session (same machine, same run).
# On the `run` device, from the repo root, with ModelOpt's wheels carried in .whl (see
# tests/conformance/README.md; WHL_DIR names their folder, default .whl):
#   WHL_DIR=.gpu/mo bash tests/bench/run_gpu_bench.sh [outdir]
# Builds test_cuda + bench_kernels_cuda, builds ModelOpt's three JIT CUDA extensions in parallel
# meanwhile, runs test_cuda, bench_kernels_cuda, then bench_gpu_modelopt.py --ours.
set -uo pipefail
out=${1:-${OUT:-/tmp/gpubench}}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
whl=${WHL_DIR:-.whl}  # ModelOpt's wheels (tests/conformance/README.md lists the ones needed)
if [ -d "$whl" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$whl"/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=4 PYTHONUNBUFFERED=1
# ModelOpt's extensions are JIT-built on first use (about 1-1.5 min each): build them concurrently.
for e in get_cuda_ext get_cuda_ext_fp8 get_cuda_ext_mx; do
  python3 -c "from modelopt.torch.quantization import extensions as x; print('$e', x.$e(raise_if_failed=False) is not None)" \
    >"$out/ext_$e.log" 2>&1 &
done
nvidia-smi -L >"$out/gpu.txt" 2>&1
. "$root/tests/cuda/device_toolchain.sh"
cmake -S . -B build-dev -G Ninja "${MQ_CC[@]}" -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" \
  -DCMAKE_BUILD_TYPE=Release -DMQ_BUILD_BENCH=ON >"$out/build.log" 2>&1 \
  && cmake --build build-dev --target test_cuda bench_kernels_cuda >>"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
./build-dev/tests/test_cuda >"$out/test_cuda.log" 2>&1; echo "test_cuda rc=$?"; tail -3 "$out/test_cuda.log"
wait
cat "$out"/ext_*.log | grep -v -i warn | tail -6
./build-dev/tests/bench/bench_kernels_cuda 8192 8192 100 | tee "$out/ours.md"
python3 tests/bench/bench_gpu_modelopt.py --ours "$out/ours.md" 2>"$out/modelopt.err" | tee "$out/modelopt.md"
tail -3 "$out/modelopt.err"
