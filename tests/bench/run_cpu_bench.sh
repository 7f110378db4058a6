#!/usr/bin/env bash
# CPU fake-quant benchmark, ours then ModelOpt's, in one run on the same machine (issue 2 §6: CPU >= 3x
# ModelOpt), and the merged table with the speedup per (format, dtype).
#   bash tests/bench/run_cpu_bench.sh [outdir] [threads...]     (default: torch's thread count)
# Python: MQ_PYTHON (default ~/.cache/mqdist/venv-ref/bin/python, the conformance venv with ModelOpt
# 0.47.0); on the GPU device, where ModelOpt comes as carried wheels, WHL_DIR names their folder and
# python3 is used. Builds bench_cpu_fake_quant in $MQ_BUILD_DIR (default build-bench-cpu, no CUDA).
set -uo pipefail
out=${1:-${OUT:-/tmp/cpubench}}
shift || true
threads=("$@")
((${#threads[@]})) || threads=(0)
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
py=${MQ_PYTHON:-$HOME/.cache/mqdist/venv-ref/bin/python}
if [ -n "${WHL_DIR:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHL_DIR"/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  py=python3
fi
bdir=${MQ_BUILD_DIR:-build-bench-cpu}
. "$root/tests/cuda/device_toolchain.sh"
# Locally CMake finds cmake/setup.sh's LibTorch by itself; on the device, the installed torch's.
prefix=
[ -n "${WHL_DIR:-}" ] && prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
cmake -S . -B "$bdir" -G Ninja "${MQ_CC[@]}" -DCMAKE_BUILD_TYPE=Release -DMQ_CUDA=OFF -DMQ_BUILD_BENCH=ON \
  ${prefix:+-DCMAKE_PREFIX_PATH=$prefix} >"$out/build.log" 2>&1 \
  && cmake --build "$bdir" --target bench_cpu_fake_quant >>"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
preload=$(mq_libstdcxx_preload "$bdir/tests/bench/bench_cpu_fake_quant")
{ lscpu | grep -E '^Model name|^CPU\(s\)'; uptime; } | tee "$out/machine.txt"
dt=float32,bfloat16,float16
for t in "${threads[@]}"; do
  targ=(); [ "$t" != 0 ] && targ=(--threads "$t")
  LD_PRELOAD=$preload "$bdir/tests/bench/bench_cpu_fake_quant" "${targ[@]}" --dtypes $dt | tee "$out/ours_t$t.txt"
  "$py" tests/bench/bench_cpu_modelopt.py "${targ[@]}" --dtypes $dt --json "$out/modelopt_t$t.json" 2>"$out/modelopt_t$t.err" \
    | tee "$out/modelopt_t$t.md"
  "$py" - "$out/ours_t$t.txt" "$out/modelopt_t$t.json" <<'EOF' | tee "$out/merged_t$t.md"
import json, re, sys
ours = {}
for line in open(sys.argv[1]):
    m = re.match(r"^(.+?)\s+(float32|bfloat16|float16)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
    if m:
        ours[(m.group(1).strip(), m.group(2))] = float(m.group(3))
rows = json.load(open(sys.argv[2]))
rows = rows["rows"] if isinstance(rows, dict) else rows
print("| format | dtype | mqdist ms | ModelOpt ms | speedup (target 3x) |\n|---|---|---:|---:|---:|")
for r in rows:
    k = (r["format"], r["dtype"])
    if k in ours:
        mo = r["median_ms"]
        print(f"| {k[0]} | {k[1]} | {ours[k]:.1f} | {mo:.1f} | {mo / ours[k]:.1f}x |")
EOF
done
