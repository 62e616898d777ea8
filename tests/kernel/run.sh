#!/usr/bin/env bash
# Runs every real-kernel test (needs root: namespaces, nftables) and prints
# one closing line "kernel: N passed, N failed".
set -u
BUILD=${1:-build}
export BUILD
cd "$(dirname "$0")/../.." || exit 2
if [ "$(id -u)" != 0 ]; then
	echo "kernel tests need root (network namespaces and nftables)" >&2
	exit 2
fi
pass=0 fail=0 failed_tests=""
results=$(mktemp)
for t in tests/kernel/t-*.sh; do
	echo "== $t"
	: >"$results"
	bash "$t" 3>"$results"
	rc=$?
	read -r _ p f <"$results" || { p=0; f=1; }
	pass=$((pass + ${p:-0}))
	fail=$((fail + ${f:-1}))
	if [ $rc -ne 0 ]; then
		failed_tests="$failed_tests $t"
		[ "${f:-0}" -eq 0 ] && fail=$((fail + 1))
	fi
done
rm -f "$results"
[ -n "$failed_tests" ] && echo "failed:$failed_tests"
echo "kernel: $pass passed, $fail failed"
[ $fail -eq 0 ]
