#!/usr/bin/env bash
# Broadcast and multicast into an isolated vNIC.  The in-policy matches a
# destination by its address, and a broadcast's or multicast's is no VM's,
# so `any -> quarantine drop` does not match what the bridge floods to a
# quarantined VM: its vNIC takes no broadcast or multicast at all, while
# the others still get what the policy allows them.  rx counts what
# reaches a VM's eth0 (a packet socket), so a datagram counts even where
# no socket listens.
source "$(dirname "$0")/lib.sh"
TMPD=$(mktemp -d)
lab_up kbcast "$TOP/tests/kernel/policies/broadcast.ini"
trap 'rm -rf "$TMPD"; finish' EXIT
wait_realized 1 || bad "dfwd realized the first revision"

frame() { local vm=$1; shift; vmexec "$vm" python3 "$TOP/tests/kernel/frame.py" "$@"; }
rx() { frame "$1" rx 2 "$2" >"$TMPD/rx-$1-$2" 2>&1 & }
seen() { cat "$TMPD/rx-$1-$2"; }
# send MARKER: a1's IPv4 broadcast (to 10.31.0.255) and its IPv6 all-nodes
# multicast (frame.py's udp kind holds "spam"), each seen by b1 and q1.
send() {
	rx b1 "$1"; rx q1 "$1"; rx b1 spam; rx q1 spam; sleep 0.5
	frame a1 udp4 10.31.0.11 10.31.0.255 ff:ff:ff:ff:ff:ff 5000 "$1"
	frame a1 udp fd00:31::11 ff02::1 33:33:00:00:00:01
	wait
}
isolated() {
	"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft list chain inet dfw enforce |
		sed -n 's/.*packets \([0-9]*\) .*comment "isolated: no broadcast or multicast".*/\1/p'
}

echo "# before: every app gets a1's broadcast and multicast"
send bc-before
check "b1 gets a1's IPv4 broadcast" test "$(seen b1 bc-before)" -ge 1
check "q1 gets it too (not quarantined yet)" test "$(seen q1 bc-before)" -ge 1
check "q1 gets a1's IPv6 all-nodes multicast" test "$(seen q1 spam)" -ge 1
out=$(ctl trace a1 255.255.255.255 udp/5000 2>&1)
check "trace says a broadcast is decided at each receiving vNIC" has "$out" "decided_by: each receiving vNIC"
out=$(ctl trace a1 ff02::1 udp/5000 2>&1)
check "and so is a multicast" has "$out" "decided_by: each receiving vNIC"
out=$(ctl trace a1 10.31.0.255 udp/5000 2>&1)
check "a subnet's broadcast address (no prefix known) gets a note" has "$out" "a subnet's broadcast address is flooded to every vNIC"

echo "# q1 quarantined: its vNIC takes no broadcast or multicast"
check "tag q1 threat.high --wait" ctl --wait tag q1 threat.high
n0=$(isolated)
send bc-q
check "b1 still gets a1's IPv4 broadcast" test "$(seen b1 bc-q)" -ge 1
check "b1 still gets the IPv6 multicast" test "$(seen b1 spam)" -ge 1
check "quarantined q1 gets no IPv4 broadcast" test "$(seen q1 bc-q)" = 0
check "nor the IPv6 multicast" test "$(seen q1 spam)" = 0
check "the isolation rule counted them" test "$(isolated)" -gt "${n0:-0}"
check "a1 still reaches b1 (udp/5000 unicast)" reach a1 b1 udp/5000
check "unicast to q1 stays dropped (rule 11)" blocked a1 q1 udp/5000
# A flow a1 -> b1 that conntrack has seen answered: its next datagram, in
# a broadcast frame, is flooded to q1 too as part of an established flow,
# which passes before any policy; the isolation comes before that.
rx b1 est-1; sleep 0.5
frame a1 udp4 10.31.0.11 10.31.0.31 02:00:00:31:00:31 5000 est-1
wait
rx a1 est-2; sleep 0.5
frame b1 udp4 10.31.0.31 10.31.0.11 02:00:00:31:00:11 40000 est-2 5000
wait
check "the flow a1:40000 -> b1:5000 is answered (b1 -> a1 passes as established)" \
	test "$(seen a1 est-2)" -ge 1
n0=$(isolated)
rx b1 est-bc; rx q1 est-bc; sleep 0.5
frame a1 udp4 10.31.0.11 10.31.0.31 ff:ff:ff:ff:ff:ff 5000 est-bc
wait
check "its next datagram in a broadcast frame reaches b1" test "$(seen b1 est-bc)" -ge 1
check "but not quarantined q1 (an established flow's broadcast)" test "$(seen q1 est-bc)" = 0
check "the isolation rule counted it" test "$(isolated)" -gt "${n0:-0}"

echo "# released: q1 gets them again"
check "untag q1 threat.high --wait" ctl --wait untag q1 threat.high
send bc-after
check "q1 gets a1's IPv4 broadcast again" test "$(seen q1 bc-after)" -ge 1
check "and the IPv6 multicast" test "$(seen q1 spam)" -ge 1
