#!/usr/bin/env bash
# ModelOpt-on-CUDA goldens for every case of golden/manifest.json (the CPU cases): on the `run`
# device, from the repo root, with ModelOpt's wheels carried (README.md lists the seven needed; WHL_DIR
# names their folder, default .whl; carry only those seven if .whl holds more than fits):
#     WHL_DIR=build-x/whl bash tests/conformance/run_cuda_goldens.sh OUTDIR
# Leaves OUTDIR/manifest_cuda_replay.json, OUTDIR/cuda_replay.safetensors (absent when every ModelOpt
# CUDA result equals its CPU golden) and OUTDIR/gen.log; commit the first two into
# tests/conformance/golden/.
set -uo pipefail
out=${1:-${OUT:-/tmp/cuda_goldens}}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
log="$out/gen.log"
whl=${WHL_DIR:-.whl}
if [ -d "$whl" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$whl"/*.whl \
    >"$log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=4 PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c 'import torch, modelopt; print("torch", torch.__version__, "modelopt", modelopt.__version__)'; } >>"$log" 2>&1
# ModelOpt's JIT extensions (about 1-1.5 min each): build them concurrently, the generator then
# loads them from the cache.
pids=()
for e in get_cuda_ext get_cuda_ext_fp8 get_cuda_ext_mx; do
  python3 -c "from modelopt.torch.quantization import extensions as x; print('$e', x.$e(raise_if_failed=False) is not None)" \
    >"/tmp/ext_$e.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for e in get_cuda_ext get_cuda_ext_fp8 get_cuda_ext_mx; do grep -v -i warn "/tmp/ext_$e.log" | tail -2 >>"$log"; done
python3 tests/conformance/gen_golden.py --device cuda --replay-cpu-manifest --out "$out" >>"$log" 2>&1
rc=$?
tail -25 "$log"
ls -la "$out"
exit $rc
