# shellcheck shell=bash
# The body shared by slurm/mqdist-1node.sbatch and slurm/mqdist-multinode.sbatch (sourced inside the
# batch job; see slurm/README.md). Entry point: mq_slurm_job "$@" with the template's arguments
# (JOB.json [mqdist arguments]) and MQ_ROOT = the checkout. Runs one mqdist rank per Slurm task, each
# through launch/mqdist-rank (one GPU per rank), and requeues the job on USR1 (the
# --signal=B:USR1@120 warning before the time limit) or on a TERM that arrives while Slurm itself is
# not ending the job.

mq_log() { echo "[mqdist-slurm $(date -u +%H:%M:%S)] $*"; }
mq_fail() {
  echo "mqdist-slurm: $*" >&2
  exit 2
}

mq_requeued=0
mq_child=""

# scontrol requeue kills the running job and queues it again under the same job id
# (SLURM_RESTART_COUNT counts the restarts). A killed mqdist leaves only its <output>.tmp-<pid>
# directory behind: the export directory appears by rename once complete.
mq_requeue() {
  ((mq_requeued)) && return 0
  mq_requeued=1
  mq_log "$1: requeueing job $SLURM_JOB_ID (restart $((${SLURM_RESTART_COUNT:-0} + 1)))"
  scontrol requeue "$SLURM_JOB_ID" || mq_log "scontrol requeue $SLURM_JOB_ID failed"
}

mq_on_usr1() { mq_requeue "USR1 (time limit close)"; }

# scancel, the time limit and a requeue end the job with a TERM too; the job is COMPLETING by then
# and must not come back. A TERM while it is still RUNNING comes from outside Slurm's own ending
# (a preemption hook, `scancel --batch --signal=TERM`): requeue, then stop the ranks.
mq_on_term() {
  local state
  state=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
  if [ "$state" = RUNNING ]; then
    mq_requeue "TERM while RUNNING"
  else
    mq_log "TERM (job $state): stopping"
  fi
  if [ -n "$mq_child" ]; then
    pkill -TERM -P "$mq_child" 2>/dev/null || true   # srun under the stderr-copying subshell
    kill -TERM "$mq_child" 2>/dev/null || true
  fi
}

# Every node runs mqdist and reads the job file from the same paths: one task per node checks that.
mq_check_nodes() {
  local n=${SLURM_JOB_NUM_NODES:-1}
  mq_log "checking $n node(s): $1 executable, $2 readable"
  # shellcheck disable=SC2016  # expanded by the remote bash
  srun --mpi=none --nodes="$n" --ntasks="$n" --ntasks-per-node=1 \
    bash -c '[ -x "$1" ] && [ -r "$2" ] || { echo "$(hostname -s): cannot run $1 or read $2" >&2; exit 1; }' \
    _ "$1" "$2" || mq_fail "node check failed (paths must be the same on every node; MQ_NODE_CHECK=0 skips the check)"
}

mq_slurm_job() {
  [ -n "${SLURM_JOB_ID:-}" ] || mq_fail "run this script with sbatch (no SLURM_JOB_ID)"
  local root cfg bin out launcher rc
  root=$(cd "${MQ_ROOT:?the template sets MQ_ROOT}" && pwd)

  cfg=${MQ_CFG:-}
  if (($#)) && [[ $1 != -* ]]; then
    cfg=$1
    shift
  fi
  [ -n "$cfg" ] || mq_fail "no job config: sbatch <template> JOB.json [mqdist arguments] (or MQ_CFG=JOB.json)"
  [[ $cfg == /* ]] || cfg=${SLURM_SUBMIT_DIR:-$PWD}/$cfg
  [ -r "$cfg" ] || mq_fail "$cfg: cannot read the job config"

  if [ -n "${MQ_BIN:-}" ]; then
    bin=$MQ_BIN
  else
    bin=${MQ_BUILD_DIR:-$root/build}/launch/mqdist
    # Built once by the batch step when missing (needs the build tools on this node); rebuild
    # before submitting after source changes.
    [ -x "$bin" ] || bin=$(bash "$root/cmake/build.sh" --target mqdist | tail -n 1)/launch/mqdist
  fi
  [ -x "$bin" ] || mq_fail "$bin: no mqdist executable (set MQ_BIN or build with cmake/build.sh)"

  local -a args=(--cfg "$cfg" "$@")
  out=""
  if [ -n "${MQ_OUTPUT:-}" ]; then
    out=${MQ_OUTPUT//%j/$SLURM_JOB_ID}
    out=${out//%x/${SLURM_JOB_NAME:-mqdist}}
    args+=(--set "output=$out")
  fi

  launcher=${MQ_LAUNCHER:-srun}
  local -a cmd
  case $launcher in
    srun)
      # shellcheck disable=SC2206  # MQ_SRUN_ARGS is a list of options
      cmd=(srun --mpi="${MQ_SRUN_MPI:-pmix}" --kill-on-bad-exit=1 ${MQ_SRUN_ARGS:-}
           "$root/launch/mqdist-rank" "$bin" "${args[@]}") ;;
    mpirun)
      # shellcheck disable=SC2206  # MQ_MPIRUN_ARGS is a list of options
      cmd=(env MQ_BIN="$bin" "$root/launch/mqdist-mpirun" -np "$SLURM_NTASKS" ${MQ_MPIRUN_ARGS:-}
           -- "${args[@]}") ;;
    *) mq_fail "MQ_LAUNCHER=$launcher: expected srun or mpirun" ;;
  esac

  mq_log "job $SLURM_JOB_ID (${SLURM_JOB_NAME:-}) restart ${SLURM_RESTART_COUNT:-0}: $SLURM_NTASKS tasks on" \
         "${SLURM_JOB_NUM_NODES:-1} node(s) ${SLURM_JOB_NODELIST:-}, launcher $launcher"
  [ "${MQ_NODE_CHECK:-0}" = 0 ] || mq_check_nodes "$bin" "$cfg"
  mq_log "command: ${cmd[*]}"

  trap mq_on_usr1 USR1
  trap mq_on_term TERM
  # In the background so that the traps run while the ranks do (bash runs a trap only between
  # commands); wait returns > 128 on each trapped signal while the launcher is still alive.
  # srun (22.05) exits 0 when a task could not be launched ("task 0 launch failed", e.g. the pmix
  # plugin failing in the step), so its stderr also goes to a file that is checked afterwards.
  local errlog=""
  if [ "$launcher" = srun ]; then
    errlog=$(mktemp "${TMPDIR:-/tmp}/mqdist-srun.XXXXXX")
    ("${cmd[@]}" 2>&1 1>&3 3>&- | tee "$errlog" >&2; exit "${PIPESTATUS[0]}") 3>&1 &
  else
    "${cmd[@]}" &
  fi
  mq_child=$!
  while :; do
    rc=0
    wait "$mq_child" || rc=$?
    kill -0 "$mq_child" 2>/dev/null || break
  done
  trap - USR1 TERM
  if [ -n "$errlog" ]; then
    if ((rc == 0)) && grep -qE '^srun: error: .*launch failed|aborted before step completely launched' "$errlog"; then
      mq_log "srun exited 0 but did not launch every task"
      rc=1
    fi
    rm -f "$errlog"
  fi
  if ((mq_requeued)); then
    mq_log "requeued: exit $rc of this attempt"
    return "$rc"
  fi
  if ((rc == 0)) && [ -n "$out" ] && [ -d "$out" ]; then mq_log "export: $out"; fi
  mq_log "exit $rc"
  return "$rc"
}
