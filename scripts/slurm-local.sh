#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for development and CI.
#
#   scripts/slurm-local.sh up       install (Debian slurm-wlm + munge) if missing, configure,
#                                   start munged/slurmd/slurmctld, wait until the node is idle
#   scripts/slurm-local.sh down     stop slurmctld, slurmd and munged
#   scripts/slurm-local.sh status   print daemon and node state; exit 0 if up, 1 if not
#
# Every command is idempotent. Daemons started by hand do not survive onto a new machine,
# so whatever needs the cluster (tests, CI) runs `up` itself. The controller and the node
# talk over loopback only (NodeAddr=127.0.0.1), so no name resolution or network is needed.
set -euo pipefail

readonly CLUSTER=repro
readonly PARTITION=debug
readonly CONF_DIR=/etc/slurm
readonly CONF=$CONF_DIR/slurm.conf
readonly LOG_DIR=/var/log/slurm
readonly CTLD_LOG=$LOG_DIR/slurmctld.log
readonly SLURMD_LOG=$LOG_DIR/slurmd.log
readonly CTLD_SPOOL=/var/spool/slurmctld
readonly SLURMD_SPOOL=/var/spool/slurmd
readonly CTLD_PID=/run/slurmctld.pid
readonly SLURMD_PID=/run/slurmd.pid
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGE_PID=/run/munge/munged.pid
readonly MUNGE_LOG=/var/log/munge/munged.log
readonly APT_LOG=/var/log/slurm-local-apt.log
# Bound on every wait of `up` (node idle) and `down` (per daemon); CI may raise it.
readonly WAIT_S=${SLURM_LOCAL_WAIT_S:-60}

NODE=$(hostname -s)
readonly NODE

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }

# Print the last lines of a log to stderr, so a failure explains itself.
log_tail() {
  if [[ -r $1 ]]; then
    echo "--- last lines of $1 ---" >&2
    tail -n "${2:-15}" "$1" >&2
  fi
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "'$1' must run as root (it installs packages and starts daemons); try: sudo $0 $1"
}

# pid_of NAME PIDFILE -> prints the pid of the running daemon NAME, or nothing.
# The pid file is trusted only if that pid really is NAME; otherwise fall back to an exact
# process-name match (pid files are lost when /run is cleared but daemons may survive).
pid_of() {
  local name=$1 pidfile=$2 pid=""
  if [[ -r $pidfile ]]; then
    pid=$(<"$pidfile")
    if [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
      echo "$pid"
      return
    fi
  fi
  pgrep -x "$name" | head -n 1 || true
}

# stop_daemon NAME PIDFILE: SIGTERM, wait (bounded), then SIGKILL.
stop_daemon() {
  local name=$1 pidfile=$2 pid i
  pid=$(pid_of "$name" "$pidfile")
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < WAIT_S * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.2
  done
  echo "slurm-local: $name (pid $pid) ignored SIGTERM for ${WAIT_S}s; sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

# wait_started NAME PIDFILE LOG: the daemon forks into the background; give it a few seconds
# to either settle or die, and turn a death into a one-line error plus its log tail.
wait_started() {
  local name=$1 pidfile=$2 log=$3 i
  for ((i = 0; i < 50; i++)); do
    [[ -n $(pid_of "$name" "$pidfile") ]] && return 0
    sleep 0.2
  done
  log_tail "$log"
  die "$name did not start (see $log)"
}

install_packages() {
  local missing=0 bin
  for bin in munged munge slurmctld slurmd sbatch srun sinfo scontrol; do
    command -v "$bin" >/dev/null 2>&1 || missing=1
  done
  ((missing)) || return 0
  echo "slurm-local: installing slurm-wlm and munge with apt-get (log: $APT_LOG)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages' init scripts from starting daemons with their own defaults: this
  # script starts them itself, with its own config and key (standard Debian policy hook).
  local policy=/usr/sbin/policy-rc.d own_policy=0 ok=1
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && own_policy=1
  fi
  { apt-get update -q && apt-get install -y -q slurm-wlm munge; } >"$APT_LOG" 2>&1 || ok=0
  ((own_policy)) && rm -f "$policy"
  if ((!ok)); then
    log_tail "$APT_LOG"
    die "apt-get could not install slurm-wlm and munge (see $APT_LOG)"
  fi
}

# munge authenticates every SLURM message: it needs a private key of >= 1024 bytes
# owned by the munge user, and the daemon running as that user.
start_munge() {
  local key_changed=0 pid
  install -d -o munge -g munge -m 0700 /etc/munge
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  if [[ ! -s $MUNGE_KEY ]] || (($(stat -c %s "$MUNGE_KEY") < 1024)); then
    (umask 077 && dd if=/dev/urandom of="$MUNGE_KEY.tmp" bs=1024 count=1 status=none)
    mv -f "$MUNGE_KEY.tmp" "$MUNGE_KEY"
    key_changed=1
  fi
  chown munge:munge "$MUNGE_KEY"
  chmod 0400 "$MUNGE_KEY"
  pid=$(pid_of munged "$MUNGE_PID")
  if [[ -n $pid ]] && ((key_changed)); then
    stop_daemon munged "$MUNGE_PID"  # a running munged keeps the old key in memory
    pid=""
  fi
  if [[ -z $pid ]]; then
    su -s /bin/sh munge -c /usr/sbin/munged >/dev/null 2>&1 || true
    wait_started munged "$MUNGE_PID" "$MUNGE_LOG"
  fi
  munge -n | unmunge >/dev/null 2>&1 || { log_tail "$MUNGE_LOG"; die "munge does not round-trip a credential (munge -n | unmunge)"; }
}

# The slurm.conf this machine should have. Sizes come from the machine so that the node
# registers with at least what it claims (otherwise slurmctld drains it as "Low RealMemory").
render_conf() {
  local cpus mem_mib margin real_mem
  cpus=$(nproc)
  mem_mib=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
  margin=$((mem_mib / 20 > 512 ? mem_mib / 20 : 512))  # 5%, at least 512 MiB, for the OS
  real_mem=$((mem_mib - margin))
  cat <<EOF
# Written by scripts/slurm-local.sh; rewritten (and the daemons restarted) whenever it differs.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
# No mail server here; the packaged default (/usr/bin/mail) does not exist.
MailProg=/bin/true
# No cgroups: plain process tracking works in containers and sandboxes.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Cores and memory are consumable, so several small jobs (or array tasks) share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# Backfill more often than the 30 s default: on one node the cost is nil, and short test
# jobs then start within seconds of a slot freeing up.
SchedulerParameters=bf_interval=5
MaxArraySize=10001
# Batch jobs may be requeued (submitit requeues itself on timeout/preemption).
JobRequeue=1
# A node that was down comes back by itself as soon as slurmd registers with a valid config.
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
# Jobs that do not ask for memory get an even share per CPU instead of the whole node.
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=$((real_mem / cpus))
EOF
}

# Writes slurm.conf if it differs from what it should be; returns 0 if it changed.
write_conf() {
  local want
  want=$(render_conf)
  install -d -m 0755 "$CONF_DIR"
  if [[ -r $CONF ]] && [[ $(<"$CONF") == "$want" ]]; then
    return 1
  fi
  printf '%s\n' "$want" >"$CONF.tmp"
  chmod 0644 "$CONF.tmp"
  mv -f "$CONF.tmp" "$CONF"
  return 0
}

# Long node state (idle, mixed, down*, drained, ...) as slurmctld sees it; empty if unreachable.
node_state() {
  timeout 10 sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1 || true
}

cmd_up() {
  need_root up
  install_packages
  start_munge

  install -d -m 0755 "$LOG_DIR" "$CTLD_SPOOL" "$SLURMD_SPOOL"
  if write_conf; then
    # Node sizes or plugins may have changed: a full restart is the one reliable reload.
    stop_daemon slurmctld "$CTLD_PID"
    stop_daemon slurmd "$SLURMD_PID"
  fi

  if [[ -z $(pid_of slurmd "$SLURMD_PID") ]]; then
    slurmd -N "$NODE" || { log_tail "$SLURMD_LOG"; die "slurmd would not start (see $SLURMD_LOG)"; }
    wait_started slurmd "$SLURMD_PID" "$SLURMD_LOG"
  fi
  if [[ -z $(pid_of slurmctld "$CTLD_PID") ]]; then
    slurmctld || { log_tail "$CTLD_LOG"; die "slurmctld would not start (see $CTLD_LOG)"; }
    wait_started slurmctld "$CTLD_PID" "$CTLD_LOG"
  fi

  local state="" deadline=$((SECONDS + WAIT_S)) last_resume=-100
  while ((SECONDS < deadline)); do
    # Both daemons fork before they read all their state: a fatal error (port in use, bad
    # config) shows up as a daemon that is gone a moment later.
    [[ -n $(pid_of slurmctld "$CTLD_PID") ]] || { log_tail "$CTLD_LOG"; die "slurmctld exited after starting (see $CTLD_LOG)"; }
    [[ -n $(pid_of slurmd "$SLURMD_PID") ]] || { log_tail "$SLURMD_LOG"; die "slurmd exited after starting (see $SLURMD_LOG)"; }
    state=$(node_state)
    case $state in
      idle | mixed | allocated | completing)
        say "up (node $NODE $state, partition $PARTITION)"
        return 0
        ;;
      down | drained | draining | drain)
        # Responding but administratively down (e.g. left so by an earlier crash): resume.
        if ((SECONDS - last_resume >= 5)); then
          scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
          last_resume=$SECONDS
        fi
        ;;
    esac
    sleep 0.5
  done
  timeout 10 sinfo -R >&2 2>/dev/null || true
  log_tail "$CTLD_LOG"
  log_tail "$SLURMD_LOG"
  die "node $NODE not idle after ${WAIT_S}s (state: '${state:-controller unreachable}')"
}

cmd_down() {
  need_root down
  stop_daemon slurmctld "$CTLD_PID"
  stop_daemon slurmd "$SLURMD_PID"
  stop_daemon munged "$MUNGE_PID"
  say "down"
}

cmd_status() {
  local up=1 name pidfile pid state
  for name in munged slurmd slurmctld; do
    case $name in
      munged) pidfile=$MUNGE_PID ;;
      slurmd) pidfile=$SLURMD_PID ;;
      slurmctld) pidfile=$CTLD_PID ;;
    esac
    pid=$(pid_of "$name" "$pidfile")
    if [[ -n $pid ]]; then
      echo "$name: running (pid $pid)"
    else
      echo "$name: stopped"
      up=0
    fi
  done
  state=""
  if ((up)) && command -v sinfo >/dev/null 2>&1; then
    timeout 10 sinfo 2>&1 || true
    state=$(node_state)
  fi
  case $state in
    idle | mixed | allocated | completing)
      say "up (node $NODE $state, partition $PARTITION)"
      return 0
      ;;
  esac
  say "down${state:+ (node $NODE $state)}"
  return 1
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 {up|down|status}" >&2
    exit 2
    ;;
esac
