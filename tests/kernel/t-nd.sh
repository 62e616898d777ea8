#!/usr/bin/env bash
# IPv6 neighbour discovery from a vNIC, with real frames: a VM (also a
# quarantined one) cannot advertise another VM's address (the IPv6
# counterpart of ARP spoofing) and sends no router advertisements or
# redirects; its advertisements of its own addresses still work, and a
# learning port's advertisement of its first address is still learned.
source "$(dirname "$0")/lib.sh"
TMPD=$(mktemp -d)

# The frames: tests/kernel/frame.py, run in the VM.
nd() { local vm=$1; shift; vmexec "$vm" python3 "$TOP/tests/kernel/frame.py" "$@"; }
# drops COMMENT: packets the classify rule with that comment dropped.
drops() {
	"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft list chain bridge dfw classify |
		sed -n "s/.*packets \([0-9]*\) .*comment \"$1\".*/\1/p"
}
# rose COMMENT BEFORE: that rule's drops grew past BEFORE.
rose() { local n; n=$(drops "$1"); [ -n "$n" ] && [ "$n" -gt "$2" ]; }
# neigh_is VM ADDR MAC: VM's neighbour entry for ADDR has MAC.
neigh_is() { sleep 0.2; vmexec "$1" ip -6 neigh show "$2" dev eth0 | grep -q "lladdr $3"; }
# cached VM ADDR MAC: puts a neighbour entry into VM's cache (stale, so that
# an advertisement with the override flag replaces its MAC).
cached() { vmexec "$1" ip -6 neigh replace "$2" lladdr "$3" dev eth0 nud stale; }

lab_up knd "$TOP/configs/vdi.ini"
trap 'rm -rf "$TMPD"; finish' EXIT
wait_realized 1 || bad "dfwd realized the first revision"
D1_MAC=02:00:00:10:00:11 D2_MAC=02:00:00:10:00:12

echo "# a VM's own neighbour discovery still works (ICMPv6 goes the long way)"
check "desktop1 reaches cs1 over IPv6 (tcp/443)" reach desktop1 cs1 tcp/443 -6
check "desktop1 pings dc1 over IPv6 (rule 220 allows icmpv6)" \
	vmexec desktop1 ping -6 -c1 -W2 fd00:10::23
cached cs1 fd00:10::11 02:00:00:10:00:99
nd desktop1 na fd00:10::11 fd00:10::11
check "desktop1's advertisement of its own address updates cs1's cache" \
	neigh_is cs1 fd00:10::11 "$D1_MAC"
cached cs1 fe80::ff:fe10:11 02:00:00:10:00:99
nd desktop1 na ll fe80::ff:fe10:11
check "and so does its advertisement of its own link-local address" \
	neigh_is cs1 fe80::ff:fe10:11 "$D1_MAC"

echo "# spoofed neighbour advertisements"
cached cs1 fd00:10::12 "$D2_MAC"
n0=$(drops "spoofed neighbour advertisement")
nd desktop1 na ll fd00:10::12
check "desktop1 claiming desktop2's address: cs1 keeps desktop2's MAC" \
	neigh_is cs1 fd00:10::12 "$D2_MAC"
check "the bridge dropped it (spoofed neighbour advertisement)" rose "spoofed neighbour advertisement" "${n0:-0}"
n0=$(drops "spoofed neighbour advertisement")
nd desktop1 na fd00:10::11 fd00:10::12
check "the same from desktop1's own global address: cs1 unchanged" \
	neigh_is cs1 fd00:10::12 "$D2_MAC"
check "and dropped" rose "spoofed neighbour advertisement" "${n0:-0}"
n0=$(drops "spoofed neighbour advertisement")
nd desktop1 na ll fe80::ff:fe10:12
check "desktop1 claiming desktop2's link-local address is dropped" \
	rose "spoofed neighbour advertisement" "${n0:-0}"
n0=$(drops "fragmented neighbour discovery")
nd desktop1 na-frag ll fd00:10::12
check "a fragmented advertisement (target cut) is dropped" \
	rose "fragmented neighbour discovery" "${n0:-0}"
check "cs1 still has desktop2's MAC" neigh_is cs1 fd00:10::12 "$D2_MAC"
n0=$(drops "fragmented neighbour discovery")
check "a fragmented ping (hop limit 64) from desktop1 still reaches dc1" \
	vmexec desktop1 ping -6 -c1 -W2 -s 3000 fd00:10::23
check "and was not counted as neighbour discovery" test "$(drops "fragmented neighbour discovery")" = "${n0:-0}"

echo "# router advertisements and redirects from a vNIC"
vmexec cs1 sysctl -qw net.ipv6.conf.eth0.accept_ra=1 net.ipv6.conf.eth0.forwarding=0
n0=$(drops "router advertisement from a vNIC")
nd desktop1 ra ll
sleep 0.3
check_not "desktop1's router advertisement gives cs1 no default route" \
	sh -c "'$LAB_BIN' exec --lab $LAB cs1 -- ip -6 route show default | grep -q ."
check_not "nor an address in its prefix" \
	sh -c "'$LAB_BIN' exec --lab $LAB cs1 -- ip -6 addr show dev eth0 | grep -q fd00:99:"
check "the bridge dropped it (router advertisement from a vNIC)" \
	rose "router advertisement from a vNIC" "${n0:-0}"
n0=$(drops "redirect from a vNIC")
nd desktop1 redirect ll fe80::ff:fe10:11 fd00:10::22
check "desktop1's redirect is dropped" rose "redirect from a vNIC" "${n0:-0}"

echo "# a quarantined VM"
check "tag desktop1 threat.high --wait" ctl --wait tag desktop1 threat.high
cached cs1 fd00:10::12 "$D2_MAC"
n0=$(drops "spoofed neighbour advertisement")
nd desktop1 na ll fd00:10::12
check "quarantined desktop1 claiming desktop2's address: cs1 unchanged" \
	neigh_is cs1 fd00:10::12 "$D2_MAC"
check "and dropped" rose "spoofed neighbour advertisement" "${n0:-0}"
vmexec desktop1 ip -6 neigh flush dev eth0
vmexec cs1 ip -6 neigh flush dev eth0
check "quarantined desktop1 keeps its exception to cs1 over IPv6" reach desktop1 cs1 tcp/443 -6
# "::" is for duplicate address detection only: a datagram from it
# belongs to no VM, and `any` rules would let it through.
n0=$(drops "from :: and not ICMPv6")
nd desktop1 udp :: fd00:10::21 02:00:00:10:00:21
check "quarantined desktop1's UDP datagram from :: is dropped" rose "from :: and not ICMPv6" "${n0:-0}"

echo "# VLAN-tagged frames from a vNIC"
# A frame tagged with VLAN 0 (priority-tagged) is taken as untagged by the
# receiving guest, but br_netfilter hands no tagged frame to the inet
# table: it would pass the policy and the address checks.  desktops never
# talk to each other; these come from cs1's address too (spoofed).
echos() { vmexec desktop2 nstat -az IcmpInEchos | awk '$1 == "IcmpInEchos" { print $2 }'; }
n0=$(drops "not IPv4, IPv6 or ARP")
e0=$(echos)
nd desktop1 vlan 10.10.0.21 10.10.0.12 02:00:00:10:00:12
nd desktop1 vlan 10.10.0.21 10.10.0.12 02:00:00:10:00:12 88a8
sleep 0.3
check "desktop2 got none of the VLAN-0 echoes (802.1Q and 802.1ad)" test "$(echos)" = "$e0"
check "the bridge dropped them (not IPv4, IPv6 or ARP)" rose "not IPv4, IPv6 or ARP" "${n0:-0}"
check "and exactly six" test "$(drops "not IPv4, IPv6 or ARP")" -eq $(( ${n0:-0} + 6 ))

echo "# a frame to an address that is not its egress vNIC's"
# The in-policy judges the destination address; a sender that picks
# another VM's MAC would have its datagram judged as for that address and
# delivered to the other VM (desktops never talk to each other, but
# desktops may reach cs1).  The bridge checks the address is the egress
# port's.  rx counts what reaches the VM's eth0, a packet socket.
sdrops() {
	"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft list chain bridge dfw "${2:-steer}" |
		sed -n "s/.*packets \([0-9]*\) .*comment \"$1\".*/\1/p" | awk '{ n += $1 } END { print n + 0 }'
}
rx() { nd "$1" rx 2 "$2" >"$TMPD/rx-$1" 2>&1 & }
# got VM: what rx counted (after wait, in this shell: a command
# substitution's shell has no jobs to wait for).
got() { cat "$TMPD/rx-$1"; }
D4_MAC=02:00:00:10:00:14 CS1_MAC=02:00:00:10:00:21
n0=$(sdrops "to an address not the port's")
rx desktop4 mac-swap; sleep 0.4
nd desktop2 udp4 10.10.0.12 10.10.0.21 "$D4_MAC" 4172 mac-swap
wait
check "desktop2's datagram to cs1's address in a frame to desktop4's MAC does not reach desktop4" \
	test "$(got desktop4)" = 0
rx cs1 mac-swap; sleep 0.4
nd desktop2 udp4 10.10.0.12 10.10.0.21 "$CS1_MAC" 4172 mac-swap
wait
check "the same datagram to cs1's MAC reaches cs1 (rule 200 allows it)" test "$(got cs1)" -ge 1
rx desktop4 spam; sleep 0.4
nd desktop2 udp fd00:10::12 fd00:10::21 "$D4_MAC"
wait
check "and over IPv6: nothing reaches desktop4" test "$(got desktop4)" = 0
check "the bridge counted them (to an address not the port's)" test "$(sdrops "to an address not the port's")" -ge $((n0 + 4))
# A multicast frame must carry a multicast address.
rx desktop4 mcast-swap; sleep 0.4
nd desktop2 udp4 10.10.0.12 10.10.0.21 01:00:5e:00:00:01 4172 mcast-swap
wait
check "a multicast frame to cs1's address reaches no desktop" test "$(got desktop4)" = 0
check "the bridge counted it (multicast frame to a unicast address)" \
	test "$(sdrops "multicast frame to a unicast address")" -ge 3

echo "# the hypervisor itself is out of the guests' reach"
# The bridge's own addresses: its automatic IPv6 link-local, and an IPv4
# address put on it here.  The policy is enforced on the forward path, so
# frames for the host took the input path past it.
BR_LL=$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- ip -6 -o addr show dev br-dfw scope link |
	awk '{ sub("/.*", "", $4); print $4 }' | head -1)
"$LAB_BIN" exec --lab "$LAB" host:hv1 -- ip addr add 10.10.0.250/24 dev br-dfw
h0=$(sdrops "from a vNIC to the hypervisor" to_host)
check_not "desktop2 cannot ping the hypervisor's bridge address (IPv4)" vmexec desktop2 ping -c1 -W1 10.10.0.250
if [ -n "$BR_LL" ]; then
	check_not "nor its link-local address (IPv6)" vmexec desktop2 ping -6 -c1 -W1 "$BR_LL%eth0"
else
	bad "the bridge has a link-local address"
fi
check "the bridge counted the drops (from a vNIC to the hypervisor)" \
	test "$(sdrops "from a vNIC to the hypervisor" to_host)" -gt "$h0"
check "desktop2 still reaches cs1 (tcp/443)" reach desktop2 cs1 tcp/443

echo "# the ruleset prints as nft reads it"
"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft -s list ruleset >"$TMPD/ruleset.nft"
NS=dfwt-nd-$$
ip netns add "$NS"
check "nft -c reads back the host's listed ruleset" ip netns exec "$NS" nft -c -f "$TMPD/ruleset.nft"
ip netns del "$NS"

echo "# a learning port: its first address is learned from its advertisement"
"$LAB_BIN" down --lab "$LAB" >/dev/null 2>&1
lab_up kndlearn "$TOP/tests/kernel/policies/learn.ini"
trap 'rm -rf "$TMPD"; finish' EXIT
n0=$(drops "spoofed neighbour advertisement")
nd learner2 na ll fd00:30::70
check "learned: learner2 locked to fd00:30::70 from its advertisement" locked learner2 fd00:30::70
check "the advertisement was copied, then dropped (not yet its address)" \
	rose "spoofed neighbour advertisement" "${n0:-0}"
n0=$(drops "spoofed neighbour advertisement")
nd learner2 na ll fd00:30::70
sleep 0.2
check "once locked, its advertisement passes" test "$(drops "spoofed neighbour advertisement")" = "${n0:-0}"
n0=$(drops "spoofed neighbour advertisement")
nd learner1 na ll fd00:30::21
check "learner1 advertising srv1's address is refused by learning" \
	wait_log "learner1 (vnet-learner1) claims fd00:30::21, which belongs to another VM"
check "and dropped by the bridge" rose "spoofed neighbour advertisement" "${n0:-0}"
