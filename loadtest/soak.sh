#!/usr/bin/env bash
# A memory soak: chat-fanout for a long window (default 300 s) through
# loadtest/run.sh, sampling the gateway's resident set every $EVERY seconds
# (default 30). Prints a table of elapsed seconds and RSS (MiB) on stderr, then
# the load generator's JSON on stdout. Bounded in time like every load run:
# it stops when chat-fanout does.
#   loadtest/soak.sh --clients 2000 --room-size 10 --interval-ms 1000 --duration-s 300
set -euo pipefail
cd "$(dirname "$0")/.."
every=${EVERY:-30}
out=$(mktemp)
loadtest/run.sh --scenario chat-fanout --url ws://127.0.0.1:7350 "$@" >"$out" &
run=$!
# The gateway is the newest `huddle serve` once run.sh has started it.
gw=""
for _ in $(seq 600); do
  gw=$(pgrep -n -f 'release/huddle serve' || true)
  [ -n "$gw" ] && break
  sleep 0.1
done
[ -n "$gw" ] || { echo "soak: no gateway started" >&2; wait $run; exit 1; }
start=$(date +%s)
printf '%8s %10s\n' elapsed_s rss_mib >&2
while kill -0 "$gw" 2>/dev/null && kill -0 "$run" 2>/dev/null; do
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$gw/status" 2>/dev/null || true)
  [ -n "$rss" ] && printf '%8d %10.1f\n' "$(( $(date +%s) - start ))" "$(echo "$rss / 1024" | bc -l)" >&2
  sleep "$every"
done
wait $run
cat "$out"
rm -f "$out"
