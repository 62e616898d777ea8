# Shared helpers of the real-kernel tests (sourced).  Each test builds its own
# lab of network namespaces and removes it on exit, also when it fails.
# Counting: every check prints "ok - ..." or "not ok - ..."; run.sh sums them.
set -u
BUILD=${BUILD:-build}
LAB_BIN=$(cd "$BUILD" && pwd)/dfw-lab
CTL_BIN=$(cd "$BUILD" && pwd)/dfwctl
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PASS=0
FAIL=0
LAB=""

ok()   { PASS=$((PASS + 1)); echo "ok - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
check() { # check DESCRIPTION COMMAND...: passes when COMMAND exits 0
	local what=$1; shift
	if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}
check_not() {
	local what=$1; shift
	if "$@" >/dev/null 2>&1; then bad "$what"; else ok "$what"; fi
}

lab() { "$LAB_BIN" "$@" --lab "$LAB"; }
ctl() { "$LAB_BIN" ctl --lab "$LAB" -- "$@"; }
vmexec() { local vm=$1; shift; "$LAB_BIN" exec --lab "$LAB" "$vm" -- "$@"; }
reach() { "$LAB_BIN" probe "$@" --lab "$LAB" >/dev/null 2>&1; }
# blocked: the probe ran and was blocked (exit 1); a probe error (exit 2) fails.
blocked() { "$LAB_BIN" probe "$@" --lab "$LAB" >/dev/null 2>&1; [ $? -eq 1 ]; }

finish() {
	local rc=$?
	[ -n "$LAB" ] && "$LAB_BIN" down --lab "$LAB" >/dev/null 2>&1
	echo "# $(basename "$0"): $PASS passed, $FAIL failed"
	echo "RESULT $PASS $FAIL" >&3
	[ $FAIL -eq 0 ] && [ $rc -eq 0 ]
}

# lab_up NAME CONFIG [UP-OPTIONS...]: a fresh lab with dfwd running on
# every host.
lab_up() {
	LAB=$1
	local config=$2
	shift 2
	trap finish EXIT
	"$LAB_BIN" down --lab "$LAB" >/dev/null 2>&1
	if ! "$LAB_BIN" up "$config" --lab "$LAB" "$@"; then
		bad "lab $LAB comes up"
		exit 1
	fi
}

# wait_realized REV: until dfwd reports that revision (max 5 s).
wait_realized() {
	local want=$1 i
	for i in $(seq 50); do
		local got
		got=$(ctl status 2>/dev/null | sed -n 's/^realized_revision: //p')
		[ -n "$got" ] && [ "$got" -ge "$want" ] && return 0
		sleep 0.1
	done
	return 1
}

store_rev() { sqlite3 "/run/dfw-lab/$LAB/store.db" "SELECT value FROM meta WHERE name='rev'"; }

# wait_log PATTERN: the first host's dfwd log has a line matching the grep
# pattern, within 3 s.
wait_log() {
	local i
	for i in $(seq 30); do
		grep -q -- "$1" "/run/dfw-lab/$LAB/hv1.log" && return 0
		sleep 0.1
	done
	return 1
}
# locked VM ADDR: `dfwctl learned` shows ADDR locked for VM within 3 s.
locked() {
	local i
	for i in $(seq 30); do
		ctl learned --json | grep -q "\"vm\":\"$1\",\"locked\":\[[^]]*\"$2\"" && return 0
		sleep 0.1
	done
	return 1
}
# lock_store SECONDS: another process holds the lab's SQLite store's write
# lock for SECONDS, in the background (LOCK_PID; wait for it).
lock_store() {
	python3 -c 'import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE"); time.sleep(float(sys.argv[2])); c.execute("ROLLBACK")' \
		"/run/dfw-lab/$LAB/store.db" "$1" &
	LOCK_PID=$!
}
# status_ms: how long `dfwctl status` took, in ms.
status_ms() {
	local t0
	t0=$(date +%s%N)
	ctl status >/dev/null 2>&1
	echo $(( ($(date +%s%N) - t0) / 1000000 ))
}
# has TEXT PATTERN: TEXT contains a line matching the grep pattern.
has() { printf '%s\n' "$1" | grep -q -- "$2"; }
# ask SOCKET REQUEST: one raw control-socket exchange, first line of the answer.
ask() { printf '%s\n' "$2" | timeout 3 nc -U -q1 "$1" 2>/dev/null | head -1; }
# exits CODE COMMAND...: COMMAND ran and exited with exactly CODE.
exits() { local want=$1; shift; "$@" >/dev/null 2>&1; [ $? -eq "$want" ]; }

# stream NAME DSTVM DSTIP PORT: a long-lived TCP stream from desktop1 to
# DSTVM (nc listening there writes into $TMPD/NAME), a line every 50 ms;
# both processes' group ids go to $PGIDS for the test's cleanup.
PGIDS=""
stream() {
	setsid "$LAB_BIN" exec --lab "$LAB" "$2" -- sh -c "exec nc -l -p $4 > $TMPD/$1" &
	PGIDS="$PGIDS $!"
	sleep 0.3
	setsid "$LAB_BIN" exec --lab "$LAB" desktop1 -- sh -c \
		"i=0; while :; do i=\$((i+1)); echo \$i; sleep 0.05; done | nc $3 $4" &
	PGIDS="$PGIDS $!"
}
# stop_streams: ends every stream started so far.
stop_streams() { local p; for p in $PGIDS; do kill -- "-$p" 2>/dev/null; done; PGIDS=""; }
# lines NAME: lines the stream NAME delivered so far.
lines() { wc -l <"$TMPD/$1"; }

# rule_counter ID FIELD: a field of rule ID's named hit counters on the
# lab's first host (`dfwctl counters --json --rule ID`): out_packets,
# in_packets, out_bytes, in_bytes; empty when dfwd has no such rule.
rule_counter() {
	ctl counters --json --rule "$1" 2>/dev/null | sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
}
