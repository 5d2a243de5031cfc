#!/usr/bin/env bash
# Smoke check of a running node (start.sh first): over CQL v4, create a
# keyspace (SimpleStrategy, RF 1) and a table, write a row, read it back,
# drop the keyspace. Exit 0 when the row read back is the one written.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${HUDDLE_CASSANDRA_PORT:-9042}"
KS="huddle_smoke_$$"
cql() { python3 "$HERE/cql.py" query --port "$PORT" "$@"; }

cql "SELECT release_version, native_protocol_version FROM system.local"
cql "CREATE KEYSPACE $KS WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}" \
    "CREATE TABLE $KS.kv (k text PRIMARY KEY, v int)" \
    "INSERT INTO $KS.kv (k, v) VALUES ('answer', 42)"
got="$(cql "SELECT v FROM $KS.kv WHERE k = 'answer'" | sed -n 2p)"
cql "DROP KEYSPACE $KS" >/dev/null
if [ "$got" = 42 ]; then
    echo "cassandra-dev smoke: OK (wrote and read back a row in $KS)"
else
    echo "cassandra-dev smoke: FAILED (read back '$got', expected 42)" >&2
    exit 1
fi
