#!/usr/bin/env bash
# Stop the Cassandra that start.sh started, and nothing else.
#
# Reads the PID that start.sh recorded, checks that this PID is still that
# Cassandra (main class + our data dir on its command line), sends SIGTERM,
# waits up to HUDDLE_CASSANDRA_STOP_TIMEOUT seconds (default 30) for a clean
# exit, then SIGKILLs it (a start with HUDDLE_CASSANDRA_KEEP_DATA=1 replays
# the commitlog; see README.md for what a SIGKILL can lose in periodic mode).
# A no-op (exit 0) when nothing was started or it already exited.
# Leaves the run dir's data/ and logs/ in place for post-mortems.
#
# Environment (all optional), as for start.sh:
#   HUDDLE_CASSANDRA_HOME          default ~/.cache/huddle-cassandra
#   HUDDLE_CASSANDRA_RUN           run dir of the node to stop
#                                  (default $HUDDLE_CASSANDRA_HOME/run)
#   HUDDLE_CASSANDRA_STOP_TIMEOUT  seconds before SIGKILL (default 30)
set -euo pipefail

CASS_HOME="${HUDDLE_CASSANDRA_HOME:-$HOME/.cache/huddle-cassandra}"
TIMEOUT="${HUDDLE_CASSANDRA_STOP_TIMEOUT:-30}"
RUN="${HUDDLE_CASSANDRA_RUN:-$CASS_HOME/run}"
DATA="$RUN/data"
PIDFILE="$RUN/cassandra.pid"
MAIN_CLASS=org.apache.cassandra.service.CassandraDaemon

log() { echo "cassandra-dev: $*" >&2; }

if [ ! -s "$PIDFILE" ]; then
    log "nothing to stop (no $PIDFILE)"
    exit 0
fi

# Wait for a start.sh that is still booting this node, so its PID is recorded
# (start.sh holds the run dir's lock until CQL answers).
if [ -d "$RUN" ]; then
    exec 9>"$RUN/.lock"
    flock -w 180 9 || log "warning: could not take $RUN/.lock; going on"
fi

# Running and not a zombie (an exited child stays a zombie until reaped).
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
pid="$(tr -dc '0-9' <"$PIDFILE" 2>/dev/null || true)"
is_ours() {
    [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF "$MAIN_CLASS" &&
        tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "-Dcassandra.storagedir=$DATA"
}

if [ -z "$pid" ] || ! is_ours; then
    log "pid file names ${pid:-no pid}, which is not a running Cassandra from start.sh; nothing to stop"
    rm -f "$PIDFILE"
    exit 0
fi

log "stopping Cassandra (pid $pid)"
t0=$(date +%s)
kill -TERM "$pid" 2>/dev/null || true
deadline=$(( t0 + TIMEOUT ))
while alive "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do
    sleep 0.2
done
if alive "$pid" && is_ours; then
    log "still running after ${TIMEOUT} s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
fi
rm -f "$PIDFILE"
log "stopped in $(( $(date +%s) - t0 )) s"
