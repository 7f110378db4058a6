#!/usr/bin/env bash
# The slurm/ templates against a real single-node Slurm that this script starts and stops
# (../shared/reference/toolchain.md §4): munged, slurmctld and slurmd as root on localhost with a
# generated slurm.conf, private munge socket and free ports in a temp dir, so that concurrent runs and
# a system Slurm do not collide. The daemons run in the foreground as children of this script: the
# EXIT trap stops them, and a ctest timeout (which kills the whole process tree) takes them too.
#   slurm_test.sh SRC_DIR MQDIST MPI_PROBE      (exit 77 = skipped: not root, or Slurm not installed)
# Jobs, all submitted at once with `sbatch --wait` and checked afterwards:
#   probe_srun / probe_mpirun   mqdist-1node.sbatch, 2 ranks of tests/slurm/mpi_probe under
#                               srun --mpi=pmix / mpirun: one MPI world, one (fake) GPU per local rank
#   job_srun / job_mpirun       mqdist-1node.sbatch, $MQ_RANKS ranks of mqdist on the embedded model
#                               job: exit 0 and a complete NVFP4 export (--set output / MQ_OUTPUT=%j)
#   job_multinode               mqdist-multinode.sbatch on one node: node check, then the same job
#   requeue / requeue_term      USR1 / TERM (job RUNNING) during the first attempt -> scontrol requeue
#                               -> the second attempt (SLURM_RESTART_COUNT=1) writes the export
#   cancel                      scancel during the first attempt -> not requeued, no export
#   no_config / bad_job         no job config -> exit 2 with one line; a rank fails -> its exit code
#   launch_fail                 srun cannot launch the step (pmix directory taken) -> exit 1, although
#                               srun itself exits 0
# MQ_SLURM_KEEP=1 keeps the temp dir (configs, daemon and job logs).
set -euo pipefail
src=$1 mqdist=$2 probe=$3
ranks=${MQ_RANKS:-1}

skip() {
  echo "SKIP: $*"
  exit 77
}
[ "$(id -u)" = 0 ] || skip "needs root (starts munged, slurmctld and slurmd on localhost)"
export PATH=$PATH:/usr/sbin:/sbin
for b in munged munge unmunge slurmctld slurmd sbatch srun scontrol sinfo squeue scancel; do
  command -v "$b" >/dev/null || skip "$b is not installed (cmake/setup.sh installs slurm-wlm and munge)"
done
[ -r /etc/munge/munge.key ] || skip "/etc/munge/munge.key is missing (created by the munge package)"
unset SLURM_JOB_ID SLURM_JOBID SLURM_NTASKS MQ_BIN MQ_OUTPUT MQ_LAUNCHER MQ_CFG MQ_ROOT CUDA_VISIBLE_DEVICES \
      OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMPI_MCA_rmaps_base_oversubscribe
export OMP_NUM_THREADS=1

# Leftovers of a run killed outright: SIGKILL of the test's process tree takes the daemons, but the
# job step daemons (slurmstepd, re-parented to init, deaf to TERM) with the job's processes and the
# temp dir stay. Removed here: orphans (parent 1) whose SLURM_CONF names a temp dir whose slurmd is
# gone, with all their descendants. A concurrent run's slurmd is alive, so its jobs are left alone.
slurmd_alive() {
  local dpid
  dpid=$(cat "$1/slurmd.pid" 2>/dev/null) || return 0   # no pid file: starting, or not ours
  [ "$(cat "/proc/$dpid/comm" 2>/dev/null)" = slurmd ]
}
sweep_leftovers() {
  local proc pid stat rest conf dir
  local -A parent=()
  local -a doomed=()
  for proc in /proc/[0-9]*; do
    stat=$(cat "$proc/stat" 2>/dev/null) || continue
    rest=${stat##*) }
    rest=${rest#* }
    parent[${proc#/proc/}]=${rest%% *}
  done
  for pid in "${!parent[@]}"; do
    [ "${parent[$pid]}" = 1 ] || continue
    # The process may be gone by now: a read error is "not ours", not a failure.
    conf=$(cat "/proc/$pid/environ" 2>/dev/null | tr '\0' '\n' | sed -n 's/^SLURM_CONF=//p') || conf=
    [[ $conf == /tmp/mq-slurm.*/slurm.conf ]] || continue
    slurmd_alive "${conf%/slurm.conf}" || doomed+=("$pid")
  done
  local i=0
  while ((i < ${#doomed[@]})); do
    for pid in "${!parent[@]}"; do [ "${parent[$pid]}" = "${doomed[i]}" ] && doomed+=("$pid"); done
    i=$((i + 1))
  done
  ((${#doomed[@]} == 0)) || kill -9 "${doomed[@]}" 2>/dev/null || true
  for dir in /tmp/mq-slurm.*; do
    [ -f "$dir/slurmd.pid" ] && ! slurmd_alive "$dir" && [ -n "$(find "$dir" -maxdepth 0 -mmin +10)" ] &&
      rm -rf "$dir"
  done
  return 0
}
sweep_leftovers

tmp=$(mktemp -d /tmp/mq-slurm.XXXXXX)
chmod 755 "$tmp"   # munged runs as user munge and must reach its socket directory
export SLURM_CONF=$tmp/slurm.conf
daemons=()
failed=0

fail() {
  echo "FAIL: $*" >&2
  failed=1
}

stop_all() {
  local rc=$? pid i
  trap - EXIT
  if [ -f "$SLURM_CONF" ] && ((${#daemons[@]})); then
    scancel --quiet --full "$(squeue -h -o %i | paste -sd, -)" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
  # Reverse start order: slurmd, slurmctld, munged.
  for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do kill "${daemons[i]}" 2>/dev/null || true; done
  for pid in "${daemons[@]}"; do
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if ((rc != 0)); then
    for f in "$tmp"/log/slurmctld.log "$tmp"/log/slurmd.log "$tmp"/*.out; do
      [ -f "$f" ] || continue
      echo "---- $f (last 40 lines)" >&2
      tail -n 40 "$f" >&2
    done
  fi
  if [ "${MQ_SLURM_KEEP:-0}" = 1 ]; then
    rm -f "$tmp/slurmd.pid"   # not a leftover for sweep_leftovers
    echo "kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap stop_all EXIT
trap 'exit 1' INT TERM HUP

# ---- munge: private socket, the machine's key
mkdir -p "$tmp/munge" "$tmp/ctld" "$tmp/spool" "$tmp/log" "$tmp/jobtmp"
chown munge:munge "$tmp/munge"
chmod 755 "$tmp/munge"
sock=$tmp/munge/munge.socket
setpriv --reuid=munge --regid=munge --init-groups munged --foreground --socket="$sock" --pid-file="$tmp/munge/munged.pid" \
  --log-file="$tmp/munge/munged.log" --seed-file="$tmp/munge/munged.seed" >"$tmp/log/munged.stdout" 2>&1 &
daemons+=($!)
for ((i = 0; i < 50; i++)); do
  munge -n --socket="$sock" 2>/dev/null | unmunge --socket="$sock" >/dev/null 2>&1 && break
  sleep 0.1
done
((i < 50)) || { echo "munged did not start: $(cat "$tmp/munge/munged.log" 2>/dev/null)" >&2; exit 1; }

# ---- slurm.conf (toolchain.md §4) on two free ports
read -r ctld_port d_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
host=$(hostname -s)
cat >"$SLURM_CONF" <<EOF
ClusterName=mqtest
# Job ids and TmpFS apart from concurrent runs: srun --mpi=pmix creates <TmpFS>/spmix_appdir_<uid>_<job>.<step>
# and fails the launch when another cluster's job of the same id has it.
FirstJobId=$((RANDOM * 1000 + 1000))
TmpFS=$tmp/jobtmp
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket=$sock
MpiDefault=pmix
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$tmp/ctld
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=24 RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D >"$tmp/log/slurmctld.stdout" 2>&1 &
daemons+=($!)
slurmd -D >"$tmp/log/slurmd.stdout" 2>&1 &
daemons+=($!)
for ((i = 0; i < 150; i++)); do
  [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && break
  sleep 0.2
done
((i < 150)) || { echo "the node did not become idle: $(sinfo 2>&1)" >&2; exit 1; }
echo "slurm up on $host (ports $ctld_port/$d_port) in $tmp"

# ---- jobs
cfg=$src/configs/jobs/tiny_dense_nvfp4.json
one=$src/slurm/mqdist-1node.sbatch
multi=$src/slurm/mqdist-multinode.sbatch
small=(--quiet --set calib.num_samples=8 --set eval.max_windows=4)
cat >"$tmp/slow_first.sh" <<EOF
#!/usr/bin/env bash
# The first attempt waits for the test's USR1; the requeued one runs mqdist.
if [ "\${SLURM_RESTART_COUNT:-0}" = 0 ]; then echo "slow_first: attempt 0 waiting"; sleep 300; fi
exec "$mqdist" "\$@"
EOF
chmod +x "$tmp/slow_first.sh"

declare -A pids
# submit NAME [VAR=value...] -- [sbatch options] SCRIPT [args]: sbatch --wait in the background,
# its exit code in NAME.rc, the job log in NAME.out.
submit() {
  local name=$1
  shift
  local -a vars=()
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  (
    rc=0
    env "${vars[@]}" sbatch --wait --job-name="$name" -o "$tmp/$name.out" "$@" >"$tmp/$name.sbatch" 2>&1 || rc=$?
    echo "$rc" >"$tmp/$name.rc"
  ) &
  pids[$name]=$!
}
nores=(--gres=none)
submit probe_srun MQ_BIN="$probe" MQ_NUM_GPUS=2 -- "${nores[@]}" --ntasks-per-node=2 "$one" "$cfg"
submit probe_mpirun MQ_BIN="$probe" MQ_NUM_GPUS=2 MQ_LAUNCHER=mpirun -- "${nores[@]}" --ntasks-per-node=2 "$one" "$cfg"
submit job_srun MQ_BIN="$mqdist" -- "${nores[@]}" --ntasks-per-node="$ranks" "$one" "$cfg" "${small[@]}" \
  --set "output=$tmp/out-srun"
submit job_mpirun MQ_BIN="$mqdist" MQ_LAUNCHER=mpirun MQ_OUTPUT="$tmp/out-mpirun-%j" -- "${nores[@]}" \
  --ntasks-per-node="$ranks" "$one" "$cfg" "${small[@]}"
submit job_multinode MQ_BIN="$mqdist" -- "${nores[@]}" --oversubscribe --nodes=1 --ntasks-per-node="$ranks" \
  "$multi" "$cfg" "${small[@]}" --set "output=$tmp/out-multinode"
submit requeue MQ_BIN="$tmp/slow_first.sh" -- "${nores[@]}" --ntasks-per-node="$ranks" "$one" "$cfg" \
  "${small[@]}" --set "output=$tmp/out-requeue"
submit no_config MQ_BIN="$mqdist" -- "${nores[@]}" --ntasks-per-node=1 "$one"
submit bad_job MQ_BIN="$mqdist" -- "${nores[@]}" --ntasks-per-node="$ranks" "$one" "$cfg" --set calib.seq_len=0 \
  --set "output=$tmp/out-bad"

# launch_fail: the pmix plugin cannot create the step's directory, srun reports "task 0 launch
# failed" and exits 0; the template must turn that into a failure.
submit launch_fail MQ_BIN="$mqdist" -- "${nores[@]}" --hold --ntasks-per-node=1 "$one" "$cfg" \
  --set "output=$tmp/out-launch-fail"
for ((i = 0; i < 100; i++)); do
  launch_fail_id=$(grep -o 'Submitted batch job [0-9]*' "$tmp/launch_fail.sbatch" 2>/dev/null | grep -o '[0-9]*$') && break
  sleep 0.1
done
if [ -n "${launch_fail_id:-}" ]; then
  mkdir -p "$tmp/jobtmp/spmix_appdir_$(id -u)_$launch_fail_id.0"
  scontrol release "$launch_fail_id"
else
  fail "launch_fail: no job id"
fi

# Preemption: once every rank of the first attempt waits (slow_first.sh), signal the batch shell:
#   requeue       USR1 (what --signal=B:USR1@120 sends before the time limit) -> requeued
#   requeue_term  TERM while RUNNING (a preemption hook) -> requeued
#   cancel        plain scancel (TERM while COMPLETING) -> not requeued
# A requeued job is released at once (Slurm holds it back ~2 minutes: Reason=BeginTime).
submit requeue_term MQ_BIN="$tmp/slow_first.sh" -- "${nores[@]}" --ntasks-per-node=1 "$one" "$cfg" \
  "${small[@]}" --set "output=$tmp/out-requeue-term"
submit cancel MQ_BIN="$tmp/slow_first.sh" -- "${nores[@]}" --ntasks-per-node=1 "$one" "$cfg" \
  "${small[@]}" --set "output=$tmp/out-cancel"
deadline=$((SECONDS + 200))
job_id() { grep -o 'Submitted batch job [0-9]*' "$tmp/$1.sbatch" 2>/dev/null | grep -o '[0-9]*$' || true; }
# preempt NAME RANKS SCANCEL_ARGS...
preempt() {
  local name=$1 n=$2 id count
  shift 2
  while :; do
    count=$(grep -c '^slow_first: attempt 0 waiting' "$tmp/$name.out" 2>/dev/null) || true
    ((${count:-0} < n)) || break
    ((SECONDS < deadline)) || { fail "$name: the first attempt did not start"; return; }
    sleep 0.2
  done
  id=$(job_id "$name")
  [ -n "$id" ] || { fail "$name: no job id"; return; }
  scancel "$@" "$id"
  [ "$name" = cancel ] && return
  for ((i = 0; i < 100; i++)); do
    [ "$(squeue -h -j "$id" -o %T 2>/dev/null)" = PENDING ] && break
    sleep 0.2
  done
  scontrol update JobId="$id" StartTime=now || fail "$name: cannot release job $id"
}
preempt requeue "$ranks" --batch --signal=USR1
preempt requeue_term 1 --batch --signal=TERM
preempt cancel 1
requeue_id=$(job_id requeue)

for name in "${!pids[@]}"; do
  while kill -0 "${pids[$name]}" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
  if kill -0 "${pids[$name]}" 2>/dev/null; then
    fail "$name: sbatch --wait still waiting after 200 s"
    exit 1
  fi
  wait "${pids[$name]}" || true
done

# ---- checks
rc_of() { cat "$tmp/$1.rc" 2>/dev/null || echo none; }
has() { grep -q -- "$2" "$tmp/$1.out" 2>/dev/null || fail "$1: log lacks '$2'"; }
export_ok() {
  local name=$1 out=$2
  grep -q '"quant_algo": "NVFP4"' "$out/hf_quant_config.json" 2>/dev/null ||
    fail "$name: $out has no NVFP4 hf_quant_config.json"
  [ -f "$out/mqdist_job.json" ] || fail "$name: $out lacks mqdist_job.json"
  [ -z "$(find "$(dirname "$out")" -maxdepth 1 -name "$(basename "$out").tmp-*")" ] ||
    fail "$name: a temporary export directory was left next to $out"
}
for name in probe_srun probe_mpirun job_srun job_mpirun job_multinode requeue; do
  [ "$(rc_of "$name")" = 0 ] || fail "$name: sbatch --wait exit $(rc_of "$name"), expected 0"
done
for l in srun mpirun; do
  has probe_$l "launcher $l"
  has probe_$l "^mpi_probe: 2 ranks, allreduce ok$"
  for r in 0 1; do has probe_$l "^mpi_probe: rank $r of 2 local $r cuda=$r omp="; done
done
has job_srun "launcher srun"
export_ok job_srun "$tmp/out-srun"
has job_mpirun "launcher mpirun"
mpirun_id=$(grep -o 'Submitted batch job [0-9]*' "$tmp/job_mpirun.sbatch" | grep -o '[0-9]*$' || true)
export_ok job_mpirun "$tmp/out-mpirun-$mpirun_id"
has job_multinode "checking 1 node(s)"
export_ok job_multinode "$tmp/out-multinode"
has requeue "USR1 (time limit close): requeueing job $requeue_id (restart 1)"
has requeue "restart 1: $ranks tasks"
export_ok requeue "$tmp/out-requeue"
[ "$(rc_of requeue_term)" = 0 ] || fail "requeue_term: sbatch --wait exit $(rc_of requeue_term), expected 0"
has requeue_term "TERM while RUNNING: requeueing job $(job_id requeue_term) (restart 1)"
has requeue_term "restart 1: 1 tasks"
export_ok requeue_term "$tmp/out-requeue-term"
[ "$(rc_of cancel)" != 0 ] || fail "cancel: sbatch --wait exit 0 for a cancelled job"
has cancel "TERM (job COMPLETING): stopping"
! grep -q 'requeueing\|restart 1' "$tmp/cancel.out" || fail "cancel: a cancelled job was requeued"
[ ! -e "$tmp/out-cancel" ] || fail "cancel: wrote $tmp/out-cancel"
[ "$(rc_of no_config)" = 2 ] || fail "no_config: exit $(rc_of no_config), expected 2"
has no_config "^mqdist-slurm: no job config: "
[ "$(rc_of launch_fail)" = 1 ] || fail "launch_fail: exit $(rc_of launch_fail), expected 1"
has launch_fail "srun exited 0 but did not launch every task"
[ ! -e "$tmp/out-launch-fail" ] || fail "launch_fail: wrote $tmp/out-launch-fail"
[ "$(rc_of bad_job)" != 0 ] || fail "bad_job: exit 0"
has bad_job "calib.seq_len: 0 must be > 0$"
[ ! -e "$tmp/out-bad" ] || fail "bad_job: wrote $tmp/out-bad"

((failed == 0)) || exit 1
echo "slurm templates: srun --mpi=pmix and mpirun inside sbatch --wait ok ($ranks mqdist ranks, requeue ok)"
