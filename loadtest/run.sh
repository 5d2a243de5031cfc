#!/usr/bin/env bash
# Runs huddle-loadtest against a fresh release gateway on its embedded
# defaults (data in ./huddle-data), the way ../shared/baseline/run.sh runs the
# baseline: builds what is missing, starts the gateway, passes every argument
# to huddle-loadtest with --server-pid, prints its JSON on stdout, and stops
# the gateway. Gateway log: $LOG (default /tmp/huddle-loadtest-gateway.log).
#   loadtest/run.sh --scenario connect-storm --url ws://127.0.0.1:7350 --clients 19000 --source-ips 4 --hold-s 10
#   loadtest/run.sh --scenario lobby-churn --url ws://127.0.0.1:7350 --clients 15000 --lobby-size 4 --think-ms 1000 --duration-s 20
#   loadtest/run.sh --scenario matchmaking-storm --url ws://127.0.0.1:7350 --clients 2000 --arrivals-per-min 10000 --duration-s 30
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
log=${LOG:-/tmp/huddle-loadtest-gateway.log}
# Each run gets a fresh data directory (dev secret, certificate, history), so
# runs are independent; the load generator reads the same directory.
data=$(mktemp -d /tmp/huddle-loadtest-data.XXXXXX)
export HUDDLE_SERVER__DATA_DIR=$data
cargo build --release -q -p huddle -p huddle-loadtest >&2
bin=$CARGO_TARGET_DIR/release
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$bin/huddle" serve >"$log" 2>&1 &
gw=$!
trap 'kill $gw 2>/dev/null; wait $gw 2>/dev/null || true; rm -rf "$data"' EXIT
for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.1; done
grep -q listening "$log" || { echo "gateway did not start; see $log" >&2; exit 1; }
"$bin/huddle-loadtest" "$@" --data-dir "$data" --server-pid "$gw"
