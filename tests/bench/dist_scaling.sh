#!/usr/bin/env bash
# Distributed calibration benchmark (issue 4 §5): DP calibration throughput for 1 and N ranks on the
# same model and data, and peak memory per rank for TP = 1 vs TP = t. Prints a markdown table.
#
# usage: tests/bench/dist_scaling.sh <job.json> <np list, e.g. "1 2"> <tp for the memory rows> [--set k=v ...]
#   MQDIST (default: build/launch/mqdist), MPIEXEC (default: mpiexec), MQ_BENCH_DEVICE=cuda to run
#   on GPUs (one per rank with NCCL; add --set parallel.nccl=off to share one GPU).
set -euo pipefail
job=$1 nps=$2 tp=$3
shift 3
mqdist=${MQDIST:-build/launch/mqdist}
read -ra mpiexec <<< "${MPIEXEC:-mpiexec}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dev=(--set "device=${MQ_BENCH_DEVICE:-cpu}")
run() {  # np tp label [--set ...]: prints the log path
  local np=$1 t=$2 log="$work/$3.log"
  shift 3
  local cmd=("$mqdist" --cfg "$job" --quiet "${dev[@]}" --set export=false --set "parallel.tp=$t" "$@")
  if [ "$np" = 1 ]; then "${cmd[@]}" > "$log" 2>&1; else
    "${mpiexec[@]}" -n "$np" --oversubscribe "${cmd[@]}" > "$log" 2>&1; fi || { cat "$log" >&2; exit 1; }
  echo "$log"
}
echo "| ranks | layout | calib batches | calibration s | tokens/s | scaling eff. | peak host MB per rank | peak device MB per rank |"
echo "|---|---|---|---|---|---|---|---|"
base=""
for np in $nps; do
  log=$(run "$np" 1 "dp$np" "$@")
  t=$(grep -oP '^calibrated \(.*\) in \K[0-9.]+' "$log")
  toks=$(grep -oP 'calib .*\(\K[0-9]+ samples x [0-9]+' "$log" | awk '{print $1*$4}')
  [ -n "$toks" ] || toks=$(grep -oP '^  calib .*\(\K[0-9]+(?= samples)' "$log")
  thr=$(awk -v n="$toks" -v t="$t" 'BEGIN{printf "%.0f", n/t}')
  [ -z "$base" ] && base=$thr
  eff=$(awk -v a="$thr" -v b="$base" -v n="$np" 'BEGIN{printf "%.0f%%", 100*a/(b*n)}')
  host=$(grep -oP '^peak host memory( per rank)?: \K.*' "$log" | sed 's/, device.*//')
  devm=$(grep -oP '^peak device memory per rank: \K.*' "$log" || grep -oP 'device \K[0-9]+ MB' "$log" || echo "-")
  batches=$(grep -oP 'calibrating: batch [0-9]+/\K[0-9]+.*?(?=,)' "$log" | tail -1)
  echo "| $np | dp $np | $batches | $t | $thr | $eff | $host | $devm |"
done
for t in 1 "$tp"; do
  log=$(run "$t" "$t" "tp$t" "$@")
  c=$(grep -oP '^calibrated \(.*\) in \K[0-9.]+' "$log")
  host=$(grep -oP '^peak host memory( per rank)?: \K.*' "$log" | sed 's/, device.*//')
  devm=$(grep -oP '^peak device memory per rank: \K.*' "$log" || grep -oP 'device \K[0-9]+ MB' "$log" || echo "-")
  echo "| $t | tp $t | | $c | | | $host | $devm |"
done
