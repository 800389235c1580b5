#!/usr/bin/env bash
# A single-node Slurm on this machine, for tests/test_cluster.py (`make test-slurm`): Debian's
# slurmctld + slurmd + munge, one partition "cpu" holding every core, no accounting database (so
# sacct answers "accounting storage is disabled", as on many small clusters). Needs root.
#   tests/cluster/slurm.sh install | up | down | status | remove
# `remove` uninstalls what `install` added (and nothing that was there before): with slurm-client
# installed and no controller running, every snakemake start waits ~9 s, because the Slurm executor
# plugin runs `scontrol show config` when it is imported and scontrol retries until it gives up.
set -euo pipefail
HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)
ADDED=/var/lib/optin-test-slurm.added

installed() { dpkg-query -W -f='${db:Status-Status} ${Package}\n' | awk '$1 == "installed" {print $2}' | sort; }

install() {
  local missing=()
  for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    local before
    before=$(mktemp)
    installed > "$before"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Every package this install brought in, dependencies included: exactly what `remove` purges.
    installed | comm -13 "$before" - >> "$ADDED"
    rm -f "$before"
  fi
}

remove() {
  down
  if [ -s "$ADDED" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq $(sort -u "$ADDED") >/dev/null
    rm -f "$ADDED"
  fi
}

up() {
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 0400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
  local mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 2048 ))
  cat > "$CONF" <<CONF
ClusterName=optin-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  rm -f /etc/slurm/cgroup.conf  # slurmd's default (cgroup/v1 here) only loads; nothing is confined
  pgrep -x slurmctld >/dev/null || slurmctld || { tail -20 /var/log/slurm/slurmctld.log >&2; return 1; }
  pgrep -x slurmd >/dev/null || slurmd || { tail -20 /var/log/slurm/slurmd.log >&2; return 1; }
  for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -q idle; then sinfo; return 0; fi
    sleep 1
  done
  echo "slurm did not come up:" >&2
  tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  return 1
}

down() {
  scancel --user="$(id -un)" 2>/dev/null || true
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  pkill -x munged 2>/dev/null || true
}

status() { sinfo && squeue; }

"${1:?install | up | down | status | remove}"
