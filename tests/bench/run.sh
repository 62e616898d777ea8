#!/usr/bin/env bash
# Runs every benchmark: the programs build/bench-* (bench-dataplane,
# bench-groups, bench-detect: file write in a VM -> first dropped packet)
# and the drivers tests/bench/bench-*.sh.  Each prints "name: value unit"
# lines; they are gathered into bench-results.json.  --tiny: the small
# version `make check` runs so that the benchmarks cannot rot (its figures
# are not meaningful).
set -u
BUILD=${1:-build}
shift || true
cd "$(dirname "$0")/../.." || exit 2
out=$(mktemp)
fail=0 ran=0 failed=""
# Each program refuses an argument it does not know, with its usage, and
# runs nothing (checked in the --tiny run: it costs no time).
if [ "${1:-}" = --tiny ]; then
	for b in "$BUILD"/bench-* tests/bench/bench-*.sh; do
		case "$b" in
		*.sh) [ -f "$b" ] || continue; cmd=(bash "$b" "$BUILD" --no-such-option) ;;
		*) [ -f "$b" ] && [ -x "$b" ] || continue; cmd=("$b" --no-such-option) ;;
		esac
		msg=$("${cmd[@]}" 2>&1 >/dev/null)
		rc=$?
		if [ $rc -ne 1 ] || ! grep -q "usage:" <<<"$msg"; then
			echo "$(basename "$b"): a bad argument gave exit $rc and: $msg"
			fail=$((fail + 1)) failed="$failed $(basename "$b")(args)"
		fi
	done
	msg=$("$BUILD"/bench-dataplane --only nosuch 2>&1 >/dev/null)
	[ $? -eq 1 ] && grep -q "no such part 'nosuch'" <<<"$msg" ||
		{ echo "bench-dataplane --only nosuch: $msg"; fail=$((fail + 1)) failed="$failed bench-dataplane(--only)"; }
fi
for b in "$BUILD"/bench-*; do
	[ -f "$b" ] && [ -x "$b" ] || continue
	echo "== $(basename "$b")"
	ran=$((ran + 1))
	"$b" "$@" | tee -a "$out"
	[ "${PIPESTATUS[0]}" -eq 0 ] || { fail=$((fail + 1)); failed="$failed $(basename "$b")"; }
done
for d in tests/bench/bench-*.sh; do
	[ -f "$d" ] || continue
	echo "== $(basename "$d")"
	ran=$((ran + 1))
	bash "$d" "$BUILD" "$@" | tee -a "$out"
	[ "${PIPESTATUS[0]}" -eq 0 ] || { fail=$((fail + 1)); failed="$failed $(basename "$d")"; }
done
json=bench-results.json
[ "${1:-}" = --tiny ] && json=$BUILD/bench-results-tiny.json
awk -F': ' 'BEGIN { printf "{" } /^[A-Za-z0-9_.-]+: -?[0-9.]+ / {
	split($2, v, " "); printf "%s\"%s\":{\"value\":%s,\"unit\":\"%s\"}", n++ ? "," : "", $1, v[1], v[2] }
	END { print "}" }' "$out" >"$json"
echo "wrote $json ($(grep -c ': ' "$out") figures)"
rm -f "$out"
[ -n "$failed" ] && echo "failed:$failed"
echo "bench: $((ran - fail)) passed, $fail failed"
[ $fail -eq 0 ]
