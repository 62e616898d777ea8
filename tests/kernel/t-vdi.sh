#!/usr/bin/env bash
# The VDI truth table with real TCP, UDP and ICMP: before tagging, while a
# desktop is quarantined, and after untagging.  Also: replies of allowed
# flows pass (stateful), an open connection of the infected VM is cut while
# its exception flow survives, every threat severity isolates, and the
# guest's IP, MAC and link are untouched.
source "$(dirname "$0")/lib.sh"
lab_up kvdi "$TOP/configs/vdi.ini"
TMPD=$(mktemp -d)
trap 'stop_streams; rm -rf "$TMPD"; finish' EXIT

expect() { # expect yes|no SRC DST PROTO [-6]
	local want=$1; shift
	if [ "$want" = yes ]; then check "$* reachable" reach "$@"
	else check "$* blocked" blocked "$@"; fi
}

normal_table() {
	expect yes desktop1 cs1 tcp/443
	expect yes desktop1 cs1 udp/4172
	expect yes desktop1 fs1 tcp/445
	expect no  desktop1 fs1 tcp/443
	expect yes desktop1 dc1 udp/53
	expect yes desktop1 dc1 icmp
	expect no  desktop1 cs1 icmp
	expect no  desktop1 desktop2 tcp/445
	expect no  desktop1 desktop2 udp/53
	expect no  desktop1 desktop2 icmp
	expect no  desktop2 desktop1 tcp/4001
	expect yes cs1 desktop1 tcp/4001
	expect no  cs1 desktop1 tcp/443
	expect yes cs1 fs1 tcp/445
	expect yes cs1 dc1 icmp
	expect no  fs1 desktop1 tcp/445
	expect yes desktop1 cs1 tcp/443 -6
	expect yes desktop1 dc1 icmp -6
	expect no  desktop1 desktop2 tcp/445 -6
	expect no  desktop3 desktop4 icmp -6
}

guest_state() { vmexec desktop1 ip -o addr show dev eth0; vmexec desktop1 ip -o link show dev eth0 | sed 's/ qlen.*//'; }

echo "# before tagging"
wait_realized 1 || bad "dfwd realized the first revision"
normal_table
before=$(guest_state)

# Two long-lived TCP streams from desktop1: to the file server (cut by the
# quarantine) and to the connection server (kept by the exception rule).
stream fs fs1 10.10.0.22 445
stream cs cs1 10.10.0.21 8443
sleep 1
check "stream to the file server flows before tagging" test "$(lines fs)" -gt 5
check "stream to the connection server flows before tagging" test "$(lines cs)" -gt 5

echo "# desktop1 tagged threat.high"
rev=$(ctl tag desktop1 threat.high | sed -n 's/^revision //p')
check "tag returned a revision" test -n "$rev"
check "dfwd realized the tag" wait_realized "$rev"
sleep 0.3
fs_at_tag=$(lines fs); cs_at_tag=$(lines cs)
sleep 1.5
check "open connection to the file server is cut" test "$(lines fs)" -le $((fs_at_tag + 1))
check "connection to the connection server survives (exception)" test "$(lines cs)" -gt $((cs_at_tag + 10))
expect yes desktop1 cs1 tcp/443
expect yes desktop1 cs1 udp/4172
expect yes cs1 desktop1 tcp/4001
expect no  desktop1 fs1 tcp/445
expect no  desktop1 dc1 udp/53
expect no  desktop1 dc1 icmp
expect no  desktop1 desktop2 tcp/445
expect no  fs1 desktop1 tcp/445
expect no  dc1 desktop1 icmp
expect no  desktop1 fs1 tcp/445 -6
expect yes desktop1 cs1 tcp/443 -6
expect yes desktop2 cs1 tcp/443
expect yes desktop2 fs1 tcp/445
check "desktop1 left the desktops group" exits 1 sh -c "'$LAB_BIN' ctl --lab $LAB -- groups desktops | grep -qw desktop1"
check "desktop1 is in the quarantine group" sh -c "'$LAB_BIN' ctl --lab $LAB -- groups quarantine | grep -qw desktop1"
check "guest IP, MAC and link unchanged while quarantined" test "$(guest_state)" = "$before"
check "guest link is up" sh -c "'$LAB_BIN' exec --lab $LAB desktop1 -- ip -o link show dev eth0 | grep -q 'state UP'"

# The streams' sockets hold the ports; end them before probing those ports.
stop_streams
sleep 0.2

echo "# desktop1 untagged"
rev=$(ctl untag desktop1 threat.high | sed -n 's/^revision //p')
check "dfwd realized the untag" wait_realized "$rev"
normal_table
check "guest IP, MAC and link unchanged after release" test "$(guest_state)" = "$before"

echo "# every severity isolates"
for sev in threat.medium threat.low THREAT.HIGH; do
	rev=$(ctl tag desktop3 "$sev" | sed -n 's/^revision //p')
	wait_realized "$rev"
	expect no desktop3 fs1 tcp/445
	expect yes desktop3 cs1 tcp/443
	rev=$(ctl untag desktop3 "$sev" | sed -n 's/^revision //p')
	wait_realized "$rev"
	expect yes desktop3 fs1 tcp/445
done
