#!/usr/bin/env bash
# The distributed job on a GPU machine (the `run` device): builds mqdist and the multi-rank tests with
# MQ_TORCH_CUDA=ON and runs
#   test_dist_mpi / test_dist_amax_sync / test_dist_export / test_dist_model_forward   (np 2 and 4, CPU tensors)
#   test_dist_nccl     NCCL collectives (needs >= 2 GPUs; skips itself on one)
#   the layout matrix with device=cuda: every layout's export bit-identical to the single-rank CUDA
#                      export. With one GPU the ranks share it and device tensors travel through the
#                      host (parallel.nccl=off); with >= 2 GPUs (MQ_DIST_NCCL=1) one GPU per rank, NCCL.
#   tests/bench/dist_scaling.sh  DP throughput (CPU ranks) and TP=1 vs TP=2 peak memory (CUDA)
# Boost.ProgramOptions is not installed on the device: Debian's .debs in .gpu/debs (apt-get download
# libboost-program-options1.74.0 libboost-program-options1.74-dev libboost1.74-dev) are unpacked.
# Usage (repo root):  bash tests/cuda/run_dist_gpu.sh [outdir]
set -uo pipefail
out=${1:-${OUT:-/tmp/distgpu}}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
nvidia-smi -L | tee "$out/gpu.txt"
ngpu=$(nvidia-smi -L | grep -c '^GPU')
pfx=$root/.gpu/boost
mkdir -p "$pfx" && for d in .gpu/debs/*.deb; do dpkg -x "$d" "$pfx"; done
. "$root/tests/cuda/device_toolchain.sh"
targets="mqdist test_dist_mpi test_dist_amax_sync test_dist_export test_dist_model_forward test_dist_nccl"
t0=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMQ_TORCH_CUDA=ON "${MQ_CC[@]}" -DBOOST_ROOT="$pfx/usr" \
  -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)');$pfx/usr" >"$out/build.log" 2>&1 \
  && cmake --build build-gpu -j "$(nproc)" --target $targets >>"$out/build.log" 2>&1 \
  || { tail -40 "$out/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
export LD_LIBRARY_PATH=$pfx/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
preload=$(mq_libstdcxx_preload build-gpu/launch/mqdist)
[ -n "$preload" ] && echo "binaries lack libstdc++.so.6 in DT_NEEDED: LD_PRELOAD=$preload"
export LD_PRELOAD=$preload OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
rc=0
for t in test_dist_mpi test_dist_amax_sync test_dist_export; do
  for np in 2; do
    mpirun -n $np --oversubscribe -x LD_PRELOAD -x LD_LIBRARY_PATH -x OMP_NUM_THREADS ./build-gpu/tests/dist/$t --gtest_brief=1 >"$out/${t}_np$np.log" 2>&1; r=$?
    echo "$t np=$np rc=$r: $(grep -E '^\[  PASSED|^\[  FAILED  \] [0-9]+' "$out/${t}_np$np.log" | sort -u | tr '\n' ' ')"
    [ $r -eq 0 ] || rc=1
  done
done
if [ "$ngpu" -ge 2 ]; then
  mpirun -n 2 -x LD_PRELOAD -x LD_LIBRARY_PATH ./build-gpu/tests/dist/test_dist_nccl --gtest_brief=1 >"$out/nccl.log" 2>&1; r=$?
  echo "test_dist_nccl np=2 rc=$r: $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$out/nccl.log" | sort -u | tr '\n' ' ')"
  [ $r -eq 0 ] || rc=1
  extra="--set device=cuda"
else
  echo "test_dist_nccl: not run (NCCL needs one GPU per rank; this machine has $ngpu)"
  extra="--set device=cuda --set parallel.nccl=off"
fi
export MPIEXEC="mpirun -x LD_PRELOAD -x LD_LIBRARY_PATH -x OMP_NUM_THREADS"
m=build-gpu/launch/mqdist
for spec in "dense tiny_dense_nvfp4.json NVFP4_DEFAULT_CFG 2:2:1 2:1:1 4:2:1 4:1:1" \
            "dense tiny_dense_nvfp4.json FP8_DEFAULT_CFG 2:2:1 4:2:1" \
            "moe tiny_moe_nvfp4.json NVFP4_DEFAULT_CFG 2:2:1 2:1:2 4:2:2 4:1:4" \
            "moe tiny_moe_nvfp4.json MXFP8_DEFAULT_CFG 2:1:2 4:2:2"; do
  set -- $spec
  model=$1 job=$2 preset=$3; shift 3
  MQ_LAYOUT_EXTRA="$extra" bash tests/dist/layout_matrix.sh $m configs/jobs/$job "$out/lm_${model}_$preset" $preset - "$@" \
    > "$out/layout_${model}_$preset.log" 2>&1; r=$?
  echo "layout matrix cuda $model $preset rc=$r:"; sed 's/^/  /' "$out/layout_${model}_$preset.log" | tail -8
  [ $r -eq 0 ] || rc=1
  rm -rf "$out/lm_${model}_$preset"
done
echo "== DP scaling: embedded MoE model, CPU ranks with 1 thread each, 16 batches of 8 x 256 tokens"
MQDIST=$m MPIEXEC="$MPIEXEC" bash tests/bench/dist_scaling.sh configs/jobs/tiny_moe_nvfp4.json "1 2 4" 2 \
  --set calib.num_samples=128 --set calib.batch_size=8 --set eval.max_windows=1 2>&1 | tee "$out/bench_dp_cpu.md"
echo "== TP=1 vs TP=2 peak memory per rank: random Llama (hidden 2048, 8 layers, 16 heads / 8 KV, MLP 8192), bf16 on CUDA"
python3 tools/bench_models/make_random_llama.py /tmp/randllama --hidden 2048 --layers 8 --heads 16 --kv-heads 8 --intermediate 8192
MQDIST=$m MPIEXEC="$MPIEXEC" MQ_BENCH_DEVICE=cuda bash tests/bench/dist_scaling.sh configs/jobs/tiny_dense_nvfp4.json "1" 2 \
  --set model=/tmp/randllama --set dtype=bfloat16 --set calib.num_samples=32 --set calib.batch_size=8 \
  --set eval.max_windows=1 $([ "$ngpu" -ge 2 ] || echo --set parallel.nccl=off) 2>&1 | tee "$out/bench_tp_cuda.md"
tar czf "$out/logs.tgz" -C "$out" $(cd "$out" && ls *.log) && rm -f "$out"/*.log
exit $rc
