#!/usr/bin/env bash
# A real single-node SLURM on this host for tests/test_slurm.py (and CI, .ci/run).
#
#   sudo bash tests/slurm/start.sh      # install if needed, configure, start, wait until the node is idle
#   sudo bash tests/slurm/stop.sh       # stop the daemons again (by PID)
#
# Installs Debian's slurmctld, slurmd, slurm-client and munge (apt, --no-install-recommends) when
# they are missing, writes /etc/slurm/slurm.conf for this host (controller and node on 127.0.0.1,
# the node's CPUs and memory as `slurmd -C` measures them, one default partition, no cgroups,
# no accounting database) and starts munged, slurmctld and slurmd by hand: there is no systemd.
# Needs root. State, logs and PID files live in $SAE_SLURM_DIR (default /tmp/sae-slurm).
#
# Without slurmdbd `sacct` fails, so Snakemake's SLURM plugin must poll with
# `--slurm-status-command squeue`; MinJobAge keeps finished jobs visible to squeue and
# `scontrol show job` for a day: the plugin needs them longer than its longest poll interval (180 s), the
# test checks every job of a smoke run, which took over an hour on a busy 2-core machine.
set -euo pipefail

DIR=${SAE_SLURM_DIR:-/tmp/sae-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by sae tests/slurm/start.sh"
PARTITION=${SAE_SLURM_PARTITION:-debug}
WAIT_S=${SAE_SLURM_WAIT_S:-60}

die() {
    echo "tests/slurm/start.sh: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (it installs packages and starts slurmd as root)"
t0=$(date +%s)

need=()
for cmd in slurmctld slurmd sbatch squeue sinfo scontrol munged munge unmunge; do
    command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "installing slurmctld slurmd slurm-client munge (missing: ${need[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi
t_install=$(date +%s)

# Refuse to touch a running or foreign SLURM: this script only manages the test cluster it wrote.
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not overwriting a real cluster's configuration"
fi
for pidfile in "$DIR/slurmctld.pid" "$DIR/slurmd.pid"; do
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        die "$(basename "$pidfile" .pid) is already running (PID $(cat "$pidfile")); run tests/slurm/stop.sh first"
    fi
done

# The node as slurmd measures it: "NodeName=vm CPUs=2 Boards=1 ... RealMemory=24105".
node_line=$(slurmd -C | head -n 1)
case "$node_line" in
    NodeName=*RealMemory=*) ;;
    *) die "unexpected 'slurmd -C' output: $node_line" ;;
esac
node=${node_line%% *}
node=${node#NodeName=}
hardware=${node_line#* }

mkdir -p "$DIR/state" "$DIR/spool"
chown slurm:slurm "$DIR/state"
touch "$DIR/slurmctld.log" "$DIR/slurmd.log"
chown slurm:slurm "$DIR/slurmctld.log"
mkdir -p "$(dirname "$CONF")"
cat >"$CONF.tmp" <<EOF
$MARK: a single-node test cluster.
# Stop it with tests/slurm/stop.sh; state and logs are in $DIR.
ClusterName=sae-test
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=86400
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.tmp" "$CONF"

# munged refuses to start unless its socket directory belongs to the munge user.
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
# A munged that already answers (the host's own) is used and left alone; one started here
# writes its PID to $DIR/munged.pid, which stop.sh stops.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    touch "$DIR/munged.pid"
    chown munge:munge "$DIR/munged.pid"
    runuser -u munge -- munged --pid-file="$DIR/munged.pid"
fi
munge -n | unmunge >/dev/null || die "munge does not round-trip a credential (see /var/log/munge/munged.log)"

slurmctld -c || die "slurmctld did not start (see $DIR/slurmctld.log)"
slurmd || die "slurmd did not start (see $DIR/slurmd.log)"

# Wait for the node to register and turn idle.
state=""
for _ in $(seq "$WAIT_S"); do
    state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 1
done
if [ "$state" != idle ]; then
    tail -n 20 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
    die "node $node is '${state:-unknown}', not idle, after ${WAIT_S}s"
fi
t_end=$(date +%s)
echo "SLURM up: node $node ($hardware), partition $PARTITION;" \
    "install $((t_install - t0)) s, start $((t_end - t_install)) s"
