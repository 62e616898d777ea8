#!/usr/bin/env bash
# Runs every benchmark: the programs build/bench-* and the drivers
# tests/bench/bench-*.sh.  Each prints "name: value unit" lines; they are
# gathered into bench-results.json.  --tiny: the small version `make check`
# runs so that the benchmarks cannot rot (its figures are not meaningful).
set -u
BUILD=${1:-build}
shift || true
cd "$(dirname "$0")/../.." || exit 2
out=$(mktemp)
fail=0
for b in "$BUILD"/bench-*; do
	[ -x "$b" ] || continue
	echo "== $(basename "$b")"
	"$b" "$@" | tee -a "$out" || fail=1
done
for d in tests/bench/bench-*.sh; do
	[ -f "$d" ] || continue
	echo "== $(basename "$d")"
	bash "$d" "$BUILD" "$@" | tee -a "$out" || fail=1
done
json=bench-results.json
[ "${1:-}" = --tiny ] && json=$BUILD/bench-results-tiny.json
awk -F': ' 'BEGIN { printf "{" } /^[A-Za-z0-9_.-]+: -?[0-9.]+ / {
	split($2, v, " "); printf "%s\"%s\":{\"value\":%s,\"unit\":\"%s\"}", n++ ? "," : "", $1, v[1], v[2] }
	END { print "}" }' "$out" >"$json"
echo "wrote $json ($(grep -c ': ' "$out") figures)"
rm -f "$out"
[ $fail -eq 0 ] && echo "bench: $(ls "$BUILD"/bench-* tests/bench/bench-*.sh 2>/dev/null | wc -l) passed, 0 failed" || echo "bench: 0 passed, 1 failed"
exit $fail
