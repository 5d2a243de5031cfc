#!/usr/bin/env bash
# Start a single-node Apache Cassandra 5.0 on 127.0.0.1 as the local stand-in
# for a ScyllaDB node (CQL native protocol v4 on port 9042). See README.md.
#
# Idempotent:
#   - if a CQL server already answers on 127.0.0.1:$PORT, says so, exits 0;
#   - if the node this script started earlier is still booting, waits for it;
#   - otherwise fetches the jars (first time only), wipes the data directory
#     (unless HUDDLE_CASSANDRA_KEEP_DATA=1), starts Cassandra in the background
#     and waits until CQL answers.
# Exit status: 0 when CQL answers; non-zero (with the log tail) otherwise.
#
# A second, private node beside the default one needs its own run dir and
# ports (it shares the jar cache); nothing else listens (JMX is off, the
# legacy ssl_storage_port is not bound):
#   HUDDLE_CASSANDRA_RUN=/tmp/cass2 HUDDLE_CASSANDRA_PORT=9142 \
#   HUDDLE_CASSANDRA_STORAGE_PORT=7100 HUDDLE_CASSANDRA_HEAP=512M start.sh
# (same HUDDLE_CASSANDRA_RUN for stop.sh; add HUDDLE_CASSANDRA_KEEP_DATA=1
# to restart it on the data it had, e.g. after a kill -9).
#
# Environment (all optional):
#   HUDDLE_CASSANDRA_HOME       jar cache root (default ~/.cache/huddle-cassandra)
#   HUDDLE_CASSANDRA_RUN        run dir: data, logs, pid file, yaml; absolute
#                               path (default $HUDDLE_CASSANDRA_HOME/run)
#   HUDDLE_CASSANDRA_KEEP_DATA  1: keep the data dir (previous logs move to
#                               logs.prev); default 0: wipe data and logs
#   HUDDLE_CASSANDRA_COMMITLOG_SYNC  periodic (default) or batch. periodic
#                               acks writes before the commitlog marks them,
#                               so a kill -9 loses the last ~100 ms of acked
#                               writes; batch acks after the sync: none lost
#   HUDDLE_CASSANDRA_VERSION    cassandra-all version        (default 5.0.8)
#   HUDDLE_CASSANDRA_JAVA_HOME  Java 17 or 11  (default: found by java-home.sh)
#   HUDDLE_CASSANDRA_PORT       CQL native port              (default 9042)
#   HUDDLE_CASSANDRA_STORAGE_PORT  inter-node port, loopback only (default 7000)
#   HUDDLE_CASSANDRA_HEAP       -Xms/-Xmx                    (default 1G)
#   HUDDLE_CASSANDRA_START_TIMEOUT  seconds to wait for CQL   (default 120)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CASS_HOME="${HUDDLE_CASSANDRA_HOME:-$HOME/.cache/huddle-cassandra}"
VERSION="${HUDDLE_CASSANDRA_VERSION:-5.0.8}"
HOST=127.0.0.1
PORT="${HUDDLE_CASSANDRA_PORT:-9042}"
STORAGE_PORT="${HUDDLE_CASSANDRA_STORAGE_PORT:-7000}"
HEAP="${HUDDLE_CASSANDRA_HEAP:-1G}"
TIMEOUT="${HUDDLE_CASSANDRA_START_TIMEOUT:-120}"
KEEP_DATA="${HUDDLE_CASSANDRA_KEEP_DATA:-0}"
COMMITLOG_SYNC="${HUDDLE_CASSANDRA_COMMITLOG_SYNC:-periodic}"

LIB="$CASS_HOME/lib"
RUN="${HUDDLE_CASSANDRA_RUN:-$CASS_HOME/run}"
DATA="$RUN/data"
LOGS="$RUN/logs"
PIDFILE="$RUN/cassandra.pid"
OUT="$LOGS/cassandra.out"
MAIN_CLASS=org.apache.cassandra.service.CassandraDaemon

log() { echo "cassandra-dev: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

probe() { # 0: CQL answers, 1: nothing listening, 2: listener that is not CQL
    python3 "$HERE/cql.py" probe --host "$HOST" --port "$PORT" --timeout 2 >/dev/null 2>&1
}

# PID from the pid file if that process is alive and is the Cassandra we
# started (guards against a stale file whose PID got reused); empty otherwise.
our_pid() {
    [ -s "$PIDFILE" ] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$PIDFILE")"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 0
    if tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF "$MAIN_CLASS" &&
       tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "-Dcassandra.storagedir=$DATA"; then
        echo "$pid"
    fi
}

# Running and not a zombie (an exited child stays a zombie until reaped).
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# Is some TCP socket (any address, this network namespace) listening on port $1?
listening() {
    local hex f files=()
    hex="$(printf ':%04X' "$1")"
    for f in /proc/net/tcp /proc/net/tcp6; do [ -r "$f" ] && files+=("$f"); done
    [ "${#files[@]}" -gt 0 ] || return 1
    awk -v p="$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 }
                     END { exit !found }' "${files[@]}"
}

rss_mib() { awk '/^VmRSS:/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

show_logs() {
    log "---- last lines of $OUT ----"
    tail -n 30 "$OUT" >&2 2>/dev/null || true
    if grep -q '^ERROR' "$LOGS/system.log" 2>/dev/null; then
        log "---- first errors in $LOGS/system.log ----"
        grep -A 3 '^ERROR' "$LOGS/system.log" | head -n 30 >&2 || true
    fi
    log "---- last lines of $LOGS/system.log ----"
    tail -n 25 "$LOGS/system.log" >&2 2>/dev/null || true
}

# Wait until CQL answers or the process dies or the deadline passes.
wait_for_cql() {
    local pid="$1" started="$2" now
    while :; do
        if probe; then
            now=$(date +%s.%N)
            log "CQL v4 up on $HOST:$PORT after $(awk -v a="$started" -v b="$now" 'BEGIN{printf "%.1f", b-a}') s (pid $pid, RSS $(rss_mib "$pid") MiB, logs in $LOGS)"
            return 0
        fi
        if ! alive "$pid"; then
            log "Cassandra (pid $pid) exited before CQL came up"
            show_logs
            rm -f "$PIDFILE"
            return 1
        fi
        now=$(date +%s.%N)
        if awk -v a="$started" -v b="$now" -v t="$TIMEOUT" 'BEGIN{exit !(b-a > t)}'; then
            log "CQL did not come up on $HOST:$PORT within ${TIMEOUT} s; stopping pid $pid"
            show_logs
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.2; done
            kill -KILL "$pid" 2>/dev/null || true
            rm -f "$PIDFILE"
            return 1
        fi
        sleep 0.5
    done
}

command -v python3 >/dev/null || die "python3 is required (for the CQL probe)"
# The run dir gets rm -rf'd below: insist on an absolute path, two levels deep.
case "$RUN" in /*/*) ;; *) die "refusing to use run dir '$RUN' (must be an absolute path like /tmp/cass2)";; esac
case "$KEEP_DATA" in 0|1) ;; *) die "HUDDLE_CASSANDRA_KEEP_DATA must be 0 or 1, not '$KEEP_DATA'";; esac
case "$COMMITLOG_SYNC" in
    periodic) COMMITLOG_YAML='commitlog_sync: periodic\ncommitlog_sync_period: 10000ms' ;;
    batch) COMMITLOG_YAML='commitlog_sync: batch' ;;
    *) die "HUDDLE_CASSANDRA_COMMITLOG_SYNC must be periodic or batch, not '$COMMITLOG_SYNC'" ;;
esac

# Fast path, no lock: something already speaks CQL there.
if probe; then
    log "a CQL server already answers on $HOST:$PORT; not starting another"
    exit 0
fi

mkdir -p "$CASS_HOME" "$RUN"
# Serialise concurrent start.sh/stop.sh calls on this run dir (fd 9, closed
# for java below). Nodes in other run dirs do not wait for each other, except
# around the one-time jar fetch (fd 8 on $CASS_HOME/.lock, below).
exec 9>"$RUN/.lock"
flock -w $((TIMEOUT + 60)) 9 || die "could not take $RUN/.lock"

# A node of this run dir killed just now (kill -9) may still be exiting: its
# command line already reads empty, but it holds its ports until it is gone.
# Give it up to 10 s (a zombie has closed its sockets already).
old_pid="$(tr -dc '0-9' 2>/dev/null <"$PIDFILE" || true)"
if [ -n "$old_pid" ] && [ -z "$(our_pid)" ]; then
    for i in $(seq 0 50); do
        alive "$old_pid" && [ -z "$(tr -d '\0' 2>/dev/null <"/proc/$old_pid/cmdline")" ] || break
        sleep 0.2
    done
    [ "$i" = 0 ] || log "waited $((i / 5)).$((i % 5 * 2)) s for the previous node (pid $old_pid) to exit"
fi

rc=0; probe || rc=$?
if [ "$rc" = 0 ]; then
    log "a CQL server already answers on $HOST:$PORT; not starting another"
    exit 0
fi

pid="$(our_pid)"
if [ -n "$pid" ]; then
    log "Cassandra started earlier (pid $pid) is still booting; waiting for it"
    wait_for_cql "$pid" "$(stat -c %Y "$PIDFILE")"
    exit $?
fi

if [ "$rc" = 2 ]; then
    die "something on $HOST:$PORT accepts TCP but does not speak CQL v4; not starting"
fi

# ---- Java: 17 or 11, the versions Cassandra 5.0 runs on (java-home.sh says
# which homes it tried)
JAVA_HOME_C="$("$HERE/java-home.sh")" ||
    die "no Java 17 or 11 (scripts/install-deps installs openjdk-17-jdk-headless; or set HUDDLE_CASSANDRA_JAVA_HOME)"
JAVA="$JAVA_HOME_C/bin/java"

if listening "$STORAGE_PORT"; then
    die "TCP port $STORAGE_PORT (storage port) is already in use, by another node? set HUDDLE_CASSANDRA_STORAGE_PORT"
fi

# ---- Jars (fetched once from Maven Central, reused afterwards; serialised
# across all run dirs that share $CASS_HOME)
exec 8>"$CASS_HOME/.lock"
flock -w 600 8 || die "could not take $CASS_HOME/.lock (jar fetch)"
if [ ! -f "$LIB/.complete-$VERSION" ]; then
    command -v mvn >/dev/null || die "mvn is required to fetch cassandra-all $VERSION"
    log "fetching cassandra-all $VERSION and its dependencies into $LIB (one time)"
    t0=$(date +%s)
    rm -rf "$LIB.tmp" "$CASS_HOME/fetch"
    mkdir -p "$CASS_HOME/fetch"
    cp "$HERE/pom.xml" "$CASS_HOME/fetch/pom.xml"
    if ! JAVA_HOME="$JAVA_HOME_C" mvn -B -q -Dstyle.color=never -f "$CASS_HOME/fetch/pom.xml" \
            -Dcassandra.version="$VERSION" -Dcassandra.lib.dir="$LIB.tmp" package >&2; then
        die "maven could not fetch cassandra-all $VERSION"
    fi
    touch "$LIB.tmp/.complete-$VERSION"
    rm -rf "$LIB"
    mv "$LIB.tmp" "$LIB"
    rm -rf "$CASS_HOME/fetch"
    log "fetched $(ls "$LIB" | wc -l) jars ($(du -sh "$LIB" | cut -f1)) in $(( $(date +%s) - t0 )) s"
fi
exec 8>&-
JAMM="$(ls "$LIB"/jamm-*.jar 2>/dev/null | head -n 1)"
[ -n "$JAMM" ] || die "no jamm jar in $LIB"

# ---- Run directory: data wiped on every start unless KEEP_DATA=1
if [ "$KEEP_DATA" = 1 ]; then
    if [ -d "$LOGS" ]; then
        rm -rf "$RUN/logs.prev"
        mv "$LOGS" "$RUN/logs.prev"
    fi
    log "keeping the data in $DATA (previous logs in $RUN/logs.prev)"
else
    rm -rf "$DATA" "$LOGS" "$RUN/logs.prev"
fi
mkdir -p "$DATA" "$LOGS"
esc() { printf '%s' "$1" | sed -e 's/[\/&|]/\\&/g'; }
sed -e "s|@@DATA_DIR@@|$(esc "$DATA")|g" \
    -e "s|@@NATIVE_PORT@@|$PORT|g" \
    -e "s|@@STORAGE_PORT@@|$STORAGE_PORT|g" \
    -e "s|^@@COMMITLOG_SYNC@@\$|$COMMITLOG_YAML|" \
    "$HERE/cassandra.yaml" >"$RUN/cassandra.yaml"

mapfile -t JVM_OPTS < <(grep -E '^-' "$HERE/jvm17.options" | sed -e 's/[[:space:]]*$//')
JVM_OPTS+=(
    "-Xms$HEAP" "-Xmx$HEAP"
    "-javaagent:$JAMM"
    "-XX:ErrorFile=$LOGS/hs_err_pid%p.log"
    "-Dcassandra-foreground=yes"
    "-Dcassandra.config=file://$RUN/cassandra.yaml"
    "-Dcassandra.storagedir=$DATA"
    "-Dcassandra.logdir=$LOGS"
    "-Dlogback.configurationFile=file://$HERE/logback.xml"
    "-Dcassandra.skip_wait_for_gossip_to_settle=0"
    "-Dcassandra.ring_delay_ms=1000"
)

# ---- Launch: own session (a Ctrl-C in the caller's terminal does not reach
# it), stdin closed, the lock fd closed, output to $OUT. The inner bash writes
# its own PID and then execs java, so the PID file names the java process.
log "starting Cassandra $VERSION (heap $HEAP, commitlog_sync $COMMITLOG_SYNC) on $HOST:$PORT (storage port $STORAGE_PORT), data in $DATA"
started=$(date +%s.%N)
rm -f "$PIDFILE"
setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    "$JAVA" "${JVM_OPTS[@]}" -cp "$LIB/*" "$MAIN_CLASS" \
    </dev/null >"$OUT" 2>&1 9>&- &
for _ in $(seq 1 50); do [ -s "$PIDFILE" ] && break; sleep 0.1; done
pid="$(tr -dc '0-9' <"$PIDFILE" 2>/dev/null || true)"
[ -n "$pid" ] || { show_logs; die "java did not start"; }

wait_for_cql "$pid" "$started"
