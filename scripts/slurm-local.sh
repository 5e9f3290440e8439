#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, from Debian's packages, for the tests and for trying
# `greenprobe study --executor slurm` without a cluster. Root only (it installs packages and starts
# munged, slurmctld and slurmd). Idempotent: `start` on a running cluster only checks it.
#
#   bash scripts/slurm-local.sh start    # install if needed, configure, start, wait until the node is idle
#   bash scripts/slurm-local.sh status
#   bash scripts/slurm-local.sh stop
#
# The configuration suits a VM or container: ProctrackType=proctrack/linuxproc and
# TaskPlugin=task/none need no cgroup set-up; select/linear gives each job whole nodes (a
# measurement alone on its node); no accounting database: finished jobs stay visible to
# `scontrol show job` for MinJobAge (an hour). Files: /etc/slurm/slurm.conf, logs in /var/log/slurm.
set -euo pipefail
action=${1:-start}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)

die() { echo "slurm-local: $*" >&2; exit 1; }

running() { scontrol ping 2>/dev/null | grep -q "is UP" && pgrep -x slurmd > /dev/null; }

node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1; }

install() {
  command -v slurmctld > /dev/null && command -v munged > /dev/null && return
  echo "slurm-local: installing slurm-wlm and munge (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge > /dev/null
}

configure() {
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  cat > "$CONF" <<EOF
# Written by greenprobe's scripts/slurm-local.sh: a one-node cluster on $HOST.
ClusterName=greenprobe-local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/linear
ReturnToService=2
MinJobAge=3600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=EXCLUSIVE
EOF
}

start() {
  [ "$(id -u)" = 0 ] || die "run as root (it starts munged, slurmctld and slurmd)"
  if running && [ "$(node_state)" = idle ]; then
    echo "slurm-local: already running, node $HOST idle"
    return
  fi
  install
  configure
  pgrep -x munged > /dev/null || runuser -u munge -- /usr/sbin/munged
  munge -n < /dev/null | unmunge > /dev/null || die "munge does not work (see /var/log/munge/munged.log)"
  pgrep -x slurmctld > /dev/null || slurmctld
  pgrep -x slurmd > /dev/null || slurmd
  for _ in $(seq 1 60); do
    state=$(node_state || true)
    case "$state" in
      idle) echo "slurm-local: node $HOST idle (sinfo), partition debug"; return ;;
      down*|drain*|drained*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 1
  done
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  die "the node did not become idle in 60 s (state: ${state:-none}); logs above"
}

stop() {
  scontrol shutdown 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
  echo "slurm-local: stopped"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "slurm-local: running, node $HOST $(node_state)"; else echo "slurm-local: not running"; exit 1; fi ;;
  *) die "usage: $0 start|stop|status" ;;
esac
