#!/usr/bin/env bash
# Stop the single-node test SLURM that tests/slurm/start.sh started: slurmd, slurmctld and the munged it
# started (if any), each by the PID in its PID file (nothing is killed by name). Needs root. Idempotent: a daemon
# that is not running is skipped. Exits non-zero if a daemon does not stop within 30 s.
set -euo pipefail

DIR=${SAE_SLURM_DIR:-/tmp/sae-slurm}
status=0

stop() { # stop NAME PIDFILE
    local name=$1 pidfile=$2 pid
    if [ ! -s "$pidfile" ]; then
        echo "$name: no PID file $pidfile, not running"
        return 0
    fi
    pid=$(cat "$pidfile")
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "$name: PID $pid from $pidfile is not running"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name: PID $pid still running 30 s after SIGTERM" >&2
        status=1
        return 0
    fi
    rm -f "$pidfile"
    echo "$name: stopped (PID $pid)"
}

[ "$(id -u)" -eq 0 ] || {
    echo "tests/slurm/stop.sh: needs root" >&2
    exit 1
}
stop slurmd "$DIR/slurmd.pid"
stop slurmctld "$DIR/slurmctld.pid"
stop munged "$DIR/munged.pid"
exit $status
