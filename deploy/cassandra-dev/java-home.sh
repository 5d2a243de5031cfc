#!/usr/bin/env bash
# Prints the home of a Java 17 (or 11) runtime, the versions Cassandra 5.0
# runs on, found without a hard-coded path: HUDDLE_CASSANDRA_JAVA_HOME when
# set (and then only it), else JAVA_HOME, the `java` on PATH, and every
# /usr/lib/jvm/* — the first that is Java 17, else the first that is 11.
# Exit status 1 (with the candidates tried, on stderr) when there is none.
# Used by start.sh and scripts/install-deps.
set -euo pipefail

# The Java specification version of $1/bin/java (17, 11, 25, ...), or nothing.
java_version() {
    [ -x "$1/bin/java" ] || return 0
    "$1/bin/java" -XshowSettings:properties -version 2>&1 |
        awk -F'= ' '/java.specification.version/ {print $2}'
}

candidates=()
if [ -n "${HUDDLE_CASSANDRA_JAVA_HOME:-}" ]; then
    candidates=("$HUDDLE_CASSANDRA_JAVA_HOME")
else
    [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME")
    if on_path="$(command -v java)"; then
        candidates+=("$(dirname "$(dirname "$(readlink -f "$on_path")")")")
    fi
    for home in /usr/lib/jvm/*; do
        [ -d "$home" ] && candidates+=("$home")
    done
fi

for want in 17 11; do
    for home in "${candidates[@]}"; do
        if [ "$(java_version "$home")" = "$want" ]; then
            readlink -f "$home"
            exit 0
        fi
    done
done
echo "java-home.sh: no Java 17 or 11 among: ${candidates[*]:-(no java at all)}" >&2
exit 1
