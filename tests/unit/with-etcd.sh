#!/bin/bash
# Runs a command beside a private etcd on loopback, for the store's etcd
# tests: free random ports, a temporary data dir, DFW_TEST_ETCD exported;
# afterwards etcd is stopped by its pid and the data dir removed, also when
# the command fails or is interrupted.
#
#   tests/unit/with-etcd.sh COMMAND [ARG...]
#
# Exported to the command:
#   DFW_TEST_ETCD      etcd://127.0.0.1:PORT/tRANDOM (tests add their own
#                      suffix to the prefix, one per test)
#   DFW_TEST_ETCD_CTL  a command taking "stop" or "start": stops etcd or
#                      starts it again on the same ports and data, for the
#                      reconnect test; "pause" and "resume" freeze it
#                      (SIGSTOP: connects succeed, nothing answers) and
#                      thaw it
set -u

ETCD=${ETCD:-etcd}

# Whether something answers on 127.0.0.1:$1 (bash's /dev/tcp: no curl
# needed).
listening() {
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

healthy() {
	timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 &&
		printf 'GET /health HTTP/1.0\r\n\r\n' >&3 &&
		grep -q '\"health\":\"true\"' <&3" 2>/dev/null
}

# ctl DIR start|stop: the state lives in DIR (ports, pid, data, log).
ctl_start() {
	local dir=$1 cport peer i
	read -r cport peer <"$dir/ports"
	setsid "$ETCD" --name dfwtest --data-dir "$dir/data" \
		--listen-client-urls "http://127.0.0.1:$cport" \
		--advertise-client-urls "http://127.0.0.1:$cport" \
		--listen-peer-urls "http://127.0.0.1:$peer" \
		--initial-advertise-peer-urls "http://127.0.0.1:$peer" \
		--initial-cluster "dfwtest=http://127.0.0.1:$peer" \
		--logger zap --log-outputs stderr \
		</dev/null >>"$dir/log" 2>&1 &
	echo $! >"$dir/pid"
	for i in $(seq 100); do
		healthy "$cport" && return 0
		kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
		sleep 0.1
	done
	echo "with-etcd: etcd did not come up on 127.0.0.1:$cport; its log:" >&2
	tail -n 20 "$dir/log" >&2
	ctl_stop "$dir"
	return 1
}

ctl_stop() {
	local dir=$1 pid i
	[ -f "$dir/pid" ] || return 0
	pid=$(cat "$dir/pid")
	kill "$pid" 2>/dev/null
	kill -CONT "$pid" 2>/dev/null
	for i in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null
	rm -f "$dir/pid"
}

if [ "${1:-}" = --ctl ]; then
	case "${3:-}" in
	start) ctl_start "$2" ;;
	stop) ctl_stop "$2" ;;
	pause) kill -STOP "$(cat "$2/pid")" ;;
	resume) kill -CONT "$(cat "$2/pid")" ;;
	*) echo "usage: $0 --ctl DIR start|stop|pause|resume" >&2; exit 1 ;;
	esac
	exit
fi

if [ $# -eq 0 ]; then
	echo "usage: $0 COMMAND [ARG...]" >&2
	exit 1
fi
if ! command -v "$ETCD" >/dev/null; then
	echo "with-etcd: no $ETCD (apt-get install etcd-server)" >&2
	exit 1
fi

dir=$(mktemp -d /tmp/dfw-etcd-XXXXXX) || exit 1
child=
cleanup() {
	[ -n "$child" ] && kill "$child" 2>/dev/null
	ctl_stop "$dir"
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port taken between the check and etcd's bind: try other ones.
started=
for try in 1 2 3 4 5; do
	cport=$((20000 + RANDOM % 40000))
	peer=$((20000 + RANDOM % 40000))
	if [ "$cport" = "$peer" ] || listening "$cport" || listening "$peer"; then
		continue
	fi
	echo "$cport $peer" >"$dir/ports"
	rm -rf "$dir/data"
	if ctl_start "$dir"; then
		started=1
		break
	fi
done
if [ -z "$started" ]; then
	echo "with-etcd: could not start etcd" >&2
	exit 1
fi

export DFW_TEST_ETCD="etcd://127.0.0.1:$cport/t$RANDOM$RANDOM"
export DFW_TEST_ETCD_CTL="$(cd "$(dirname "$0")" && pwd)/$(basename "$0") --ctl $dir"
# In the background so that a signal to this script is handled at once
# (bash runs traps only between foreground commands).
"$@" &
child=$!
wait "$child"
rc=$?
child=
exit $rc
