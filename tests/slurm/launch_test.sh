#!/usr/bin/env bash
# launch/mqdist-mpirun and launch/mqdist-rank without Slurm (tests/slurm/CMakeLists.txt: launch.*).
#   launch_test.sh CASE SRC_DIR MQDIST MPI_PROBE
# The wrapper must bring its own root/oversubscription settings, so the OMPI_* variables of the other
# multi-rank tests are removed first.
# shellcheck disable=SC2015  # "A && B || fail": fail exits
set -euo pipefail
case_=$1 src=$2 mqdist=$3 probe=$4
unset OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMPI_MCA_rmaps_base_oversubscribe \
      CUDA_VISIBLE_DEVICES OMP_NUM_THREADS MQ_NUM_GPUS MQ_GPU_BIND MQ_THREADS_PER_RANK
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run=$src/launch/mqdist-mpirun
fail() {
  echo "FAIL ($case_): $*" >&2
  for f in "$work"/stdout "$work"/stderr; do [ -f "$f" ] && sed "s|^|  $(basename "$f"): |" "$f" >&2; done
  exit 1
}
# Runs the wrapper with stdout/stderr captured; sets rc.
launch() {
  rc=0
  "$@" >"$work/stdout" 2>"$work/stderr" || rc=$?
}
expect_line() { grep -qx -- "$1" "$work/stdout" || fail "no line '$1'"; }
# Physical cores, as the wrapper counts them.
cores=$(lscpu -p=Core,Socket 2>/dev/null | grep -v '^#' | sort -u | wc -l)
((cores > 0)) || cores=$(nproc)

case $case_ in
  usage)
    # One line on stderr naming the problem, exit 2, nothing started.
    check_usage() {
      local want=$1
      shift
      launch env MQ_BIN="$probe" "$run" "$@"
      ((rc == 2)) || fail "$*: exit $rc, expected 2"
      [ "$(wc -l <"$work/stderr")" = 1 ] || fail "$*: expected one stderr line"
      grep -q "^mqdist-mpirun: $want (usage: " "$work/stderr" || fail "$*: stderr lacks '$want'"
      [ ! -s "$work/stdout" ] || fail "$*: something ran"
    }
    check_usage "-np N is required" -- --cfg x.json
    check_usage "-np N is required"
    check_usage "-np '0' is not a positive number of ranks" -np 0 -- --cfg x.json
    check_usage "-np 'two' is not a positive number of ranks" -np two -- --cfg x.json
    check_usage "-np needs a number of ranks" -np
    check_usage "no -- between the mpirun options and the mqdist arguments" -np 2 --cfg x.json
    check_usage "no mqdist arguments after --" -np 2 --
    launch env MQ_BIN="$work/missing" "$run" -np 1 -- --cfg x.json
    ((rc == 2)) && grep -q "MQ_BIN=$work/missing is not an executable" "$work/stderr" || fail "missing MQ_BIN: exit $rc"
    launch "$run" --help
    ((rc == 0)) && grep -q 'launch/mqdist-mpirun -np N \[mpirun options\] -- --cfg job.json' "$work/stdout" || fail "--help"
    ;;
  ranks)
    # Two ranks in one world, one (fake) GPU each by local rank, OMP threads = cores per rank.
    launch env MQ_BIN="$probe" MQ_NUM_GPUS=2 "$run" -np 2 -- --cfg job.json
    ((rc == 0)) || fail "exit $rc"
    expect_line "mpi_probe: 2 ranks, allreduce ok"
    for r in 0 1; do
      grep -q "^mpi_probe: rank $r of 2 local $r cuda=$r omp=" "$work/stdout" || fail "rank $r: no cuda=$r"
      # Each rank is bound to cores/2 cores and runs as many threads (oversubscribed: unbound).
      ((cores < 2)) || expect_line "mpi_probe: rank $r of 2 local $r cuda=$r omp=$((cores / 2))"
    done
    ;;
  gpu_list)
    # A device list (as Slurm sets it) is split over the local ranks; MQ_GPU_BIND=none keeps it;
    # no GPU and no list: nothing is set; fewer GPUs than ranks: left alone with a warning.
    launch env MQ_BIN="$probe" CUDA_VISIBLE_DEVICES=4,6 OMP_NUM_THREADS=3 "$run" -np 2 -- --cfg j.json
    ((rc == 0)) || fail "list: exit $rc"
    expect_line "mpi_probe: rank 0 of 2 local 0 cuda=4 omp=3"
    expect_line "mpi_probe: rank 1 of 2 local 1 cuda=6 omp=3"
    launch env MQ_BIN="$probe" CUDA_VISIBLE_DEVICES=4,6 MQ_GPU_BIND=none "$run" -np 2 -- --cfg j.json
    ((rc == 0)) && grep -q "^mpi_probe: rank 1 of 2 local 1 cuda=4,6 " "$work/stdout" || fail "MQ_GPU_BIND=none"
    launch env MQ_BIN="$probe" MQ_NUM_GPUS=0 "$run" -np 2 -- --cfg j.json
    ((rc == 0)) && grep -q "^mpi_probe: rank 1 of 2 local 1 cuda=unset " "$work/stdout" || fail "no GPU"
    launch env MQ_BIN="$probe" MQ_NUM_GPUS=1 "$run" -np 2 -- --cfg j.json
    ((rc == 0)) && grep -q "^mpi_probe: rank 1 of 2 local 1 cuda=unset " "$work/stdout" || fail "1 GPU, 2 ranks"
    grep -q "^mqdist-rank: 2 ranks on .* but 1 GPUs: CUDA_VISIBLE_DEVICES not set$" "$work/stderr" || fail "no warning"
    ;;
  oversubscribe)
    # More ranks than cores: --oversubscribe instead of an Open MPI refusal.
    np=$((cores + 1))
    launch env MQ_BIN="$probe" "$run" -np "$np" -- --cfg job.json
    ((rc == 0)) || fail "exit $rc"
    expect_line "mpi_probe: $np ranks, allreduce ok"
    ;;
  exit_code)
    # The failing rank's exit code comes back through mpirun.
    launch env MQ_BIN="$probe" "$run" -np 2 -- --cfg job.json --exit-code 3
    ((rc == 3)) || fail "exit $rc, expected 3"
    ;;
  mqdist)
    # The real job (2 ranks once mqdist runs multi-rank; see MQ_RANKS in CMakeLists.txt).
    out=$work/export
    launch env MQ_BIN="$mqdist" "$run" -np "${MQ_RANKS:-1}" -- --cfg "$src/configs/jobs/tiny_dense_nvfp4.json" \
      --quiet --set calib.num_samples=8 --set eval.max_windows=4 --set "output=$out"
    ((rc == 0)) || fail "exit $rc"
    grep -q '^quality: perplexity [0-9.]* -> [0-9.]* (.*) with NVFP4_DEFAULT_CFG$' "$work/stdout" || fail "no quality line"
    grep -q '"quant_algo": "NVFP4"' "$out/hf_quant_config.json" || fail "export lacks an NVFP4 hf_quant_config.json"
    [ -f "$out/mqdist_job.json" ] || fail "export lacks mqdist_job.json"
    launch env MQ_BIN="$mqdist" "$run" -np 1 -- --cfg "$work/no_such_job.json"
    ((rc != 0)) && grep -q "no_such_job.json: cannot open job file$" "$work/stderr" || fail "bad job: exit $rc"
    ;;
  *) fail "unknown case" ;;
esac
echo "launch.$case_: ok"
