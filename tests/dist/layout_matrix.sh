#!/usr/bin/env bash
# The correctness bar of distributed calibration: the same job run under several layouts of 1, 2 and
# 4 ranks (tp x ep x dp) gives a bit-identical export (every tensor and JSON file; mqdist_job.json
# and the per-rank quantizer states differ by design and are left out), the same perplexity after
# quantization and the same tokens per expert as the single-rank run.
#
# usage: layout_matrix.sh <mqdist> <job.json> <workdir> <preset> [<kv preset>|-] <np:tp:ep> ...
# Environment: MPIEXEC (default mpiexec), MQ_LAYOUT_EXTRA (extra --set arguments for every run).
set -euo pipefail
mqdist=$1 job=$2 work=$3 preset=$4 kv=$5
shift 5
read -ra mpiexec <<< "${MPIEXEC:-mpiexec}"
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
rm -rf "$work" && mkdir -p "$work"
chunks=2  # a multiple of every tp in the matrix: the same summation order in every run
common=(--quiet --set "quant=$preset" --set parallel.reduction_chunks=$chunks --set overwrite=true
        --set calib.num_samples=8 --set calib.seq_len=64 --set calib.batch_size=2
        --set eval.max_windows=4 --set eval.seq_len=64)
[ "$kv" != "-" ] && common+=(--set "kv_cache=$kv")
case "$preset" in INT8_DEFAULT_CFG|INT4_AWQ_CFG|W4A8_AWQ_BETA_CFG|INT8_SMOOTHQUANT_CFG) common+=(--set algorithm=max);; esac
# shellcheck disable=SC2206
extra=(${MQ_LAYOUT_EXTRA:-})

run() {  # np tp ep -> $work/<np>-<tp>-<ep>/{out,log}
  local np=$1 tp=$2 ep=$3 d="$work/$1-$2-$3"
  mkdir -p "$d"
  local cmd=("$mqdist" --cfg "$job" "${common[@]}" "${extra[@]}" --set "output=$d/out"
             --set parallel.tp=$tp --set parallel.ep=$ep)
  if [ "$np" = 1 ]; then
    "${cmd[@]}" > "$d/log" 2>&1 || { cat "$d/log"; echo "FAIL: np=1 run failed"; exit 1; }
  else
    "${mpiexec[@]}" -n "$np" --oversubscribe "${cmd[@]}" > "$d/log" 2>&1 ||
      { cat "$d/log"; echo "FAIL: np=$np tp=$tp ep=$ep run failed"; exit 1; }
  fi
}

summary() {  # the lines that must agree between layouts
  grep -E '^(perplexity after|tokens per expert|exported )' "$1" | sed -E 's/ \([0-9.]+ s\)$//; s/ to [^ ]+ in [0-9.]+ s$//'
}

run 1 1 1
ref="$work/1-1-1"
fail=0
for spec in "$@"; do
  IFS=: read -r np tp ep <<< "$spec"
  [ "$np:$tp:$ep" = "1:1:1" ] && continue
  run "$np" "$tp" "$ep"
  d="$work/$np-$tp-$ep"
  if ! diff -r -q -x mqdist_job.json -x mqdist_state "$ref/out" "$d/out" > "$d/diff" 2>&1; then
    echo "FAIL: np=$np tp=$tp ep=$ep: export differs from the single-rank export:"; cat "$d/diff"; fail=1
  fi
  if ! diff <(summary "$ref/log") <(summary "$d/log") > "$d/summary.diff"; then
    echo "FAIL: np=$np tp=$tp ep=$ep: perplexity / tokens per expert differ:"; cat "$d/summary.diff"; fail=1
  fi
  n=$(find "$d/out" -type f | wc -l)
  [ "$fail" = 0 ] && echo "ok: np=$np tp=$tp ep=$ep: $n files bit-identical to the single-rank export; $(grep '^perplexity after' "$d/log" | cut -c1-60)"
done
[ "$(summary "$ref/log" | grep -c '^perplexity after')" = 1 ] || { echo "FAIL: no perplexity line"; exit 1; }
exit $fail
