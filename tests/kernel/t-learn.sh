#!/usr/bin/env bash
# Address learning, trust on first use: a guest with `addresses = learn`
# gets its first IPv4 address (from its ARP) and first IPv6 address (from
# duplicate address detection) locked; until then and after, anything else
# it sends from is dropped by the anti-spoofing.  The locks are in the
# store: they outlive dfwd, and only `dfwctl learned forget` lifts them.
source "$(dirname "$0")/lib.sh"
lab_up klearn "$TOP/tests/kernel/policies/learn.ini"
LOG=/run/dfw-lab/$LAB/hv1.log

# pings VM DST [ping args]: a ping that gets through within 3 tries (the
# first ARP or NS of a guest that is still learning is dropped).
pings() {
	local vm=$1 dst=$2 i; shift 2
	for i in 1 2 3; do
		vmexec "$vm" ping -c1 -W1 "$@" "$dst" >/dev/null 2>&1 && return 0
	done
	return 1
}

# own4 / own6 PORT: the port's entries in the bridge's fast-path maps
# (a port's own frames pass classify in one lookup; a learning family has
# none, so its frames meet the learn rules).
own4() { "$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft list map bridge dfw port_src4 | grep -c "\"$1\" \."; }
own6() { "$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft list map bridge dfw port_src6 | grep -c "\"$1\" \."; }

echo "# before: nothing learned, nothing passes"
check "learned lists the learning VMs with nothing locked" sh -c "'$LAB_BIN' ctl --lab $LAB -- learned | grep -q 'vm=learner1 locked=-'"
check "a learning port has no fast-path entries" test "$(own4 vnet-learner1) $(own6 vnet-learner1)" = "0 0"
check "a port with addresses has its own (IPv4; IPv6 with link-local, not ::)" \
	test "$(own4 vnet-srv1) $(own6 vnet-srv1)" = "1 2"
out=$(ctl trace srv1 10.30.0.50 icmp 2>&1)
check "trace: an unlearned address is not the VM's" has "$out" "verdict: drop"

echo "# IPv4: the first address used is locked"
vmexec learner1 ip addr add 10.30.0.50/24 dev eth0
check "learner1 reaches srv1 once its ARP was seen" pings learner1 10.30.0.21
check "learned: learner1 locked to 10.30.0.50" locked learner1 10.30.0.50
check "dfwd logged the lock" grep -q "learn: learner1 (vnet-learner1) locked to 10.30.0.50" "$LOG"
check "the locked IPv4 address has its fast-path entry; IPv6 still learns" \
	test "$(own4 vnet-learner1) $(own6 vnet-learner1)" = "1 0"
check "the learned address joined the group: trace allows learner1 -> srv1" \
	has "$(ctl trace learner1 srv1 icmp)" "verdict: allow"
check_not "srv1 -> learner1 stays blocked (the rule allows clients -> srv1 only)" \
	vmexec srv1 ping -c1 -W1 10.30.0.50

echo "# locked: another address of the same guest is spoofing"
vmexec learner1 ip addr flush dev eth0 scope global
vmexec learner1 ip addr add 10.30.0.51/24 dev eth0
check_not "learner1 from 10.30.0.51 is dropped" pings learner1 10.30.0.21
check "the lock stays on 10.30.0.50" locked learner1 10.30.0.50
check_not "and nothing new is learned for it" grep -q "locked to 10.30.0.51" "$LOG"

echo "# a guest cannot learn another VM's address"
vmexec learner2 ip addr add 10.30.0.21/24 dev eth0
vmexec learner2 ping -c1 -W1 10.30.0.50 >/dev/null 2>&1
sleep 0.5
check "learner2 claiming srv1's address is refused" grep -q "learner2 (vnet-learner2) claims 10.30.0.21, which belongs to another VM" "$LOG"
check "learner2 has nothing locked" sh -c "'$LAB_BIN' ctl --lab $LAB -- learned | grep -q 'vm=learner2 locked=-'"
vmexec learner2 ip addr flush dev eth0 scope global
vmexec learner2 ip addr add 10.30.0.50/24 dev eth0
vmexec learner2 ping -c1 -W1 10.30.0.21 >/dev/null 2>&1
sleep 0.5
check "learner2 claiming learner1's learned address is refused" grep -q "learner2 (vnet-learner2) claims 10.30.0.50, which belongs to another VM" "$LOG"
check_not "and learner2 does not get through" pings learner2 10.30.0.21
vmexec learner2 ip addr flush dev eth0 scope global
vmexec learner2 ip addr add 10.30.0.9/24 dev eth0
vmexec learner2 ping -c1 -W1 10.30.0.21 >/dev/null 2>&1
sleep 0.5
check "learner2 claiming the jump host's address (a host the policy names) is refused" \
	grep -q "learner2 (vnet-learner2) claims 10.30.0.9, which is a host the policy names (group jumphost)" "$LOG"
check "learner2 still has nothing locked" sh -c "'$LAB_BIN' ctl --lab $LAB -- learned | grep -q 'vm=learner2 locked=-'"
# The same claim again and again (a guest can send as many as it likes)
# is not logged again.
for i in 1 2 3 4 5; do
	vmexec learner2 ip neigh flush dev eth0
	vmexec learner2 ping -c1 -W1 10.30.0.21 >/dev/null 2>&1
done
check "five more ARPs of that claim add no log line" test "$(grep -c 'claims 10.30.0.9' "$LOG")" -eq 1
vmexec learner2 ip addr flush dev eth0 scope global

echo "# DHCP: only a VM in dhcp_servers may answer"
# srv1 sends learner2 a DHCPACK of its own making (from its own MAC and
# address, so it passes srv1's anti-spoofing): not learned.  The same ACK
# from dhcp1, the policy's DHCP server, is.
L2MAC=02:00:00:30:00:52
vmexec srv1 python3 "$TOP/tests/kernel/frame.py" dhcpack 10.30.0.21 $L2MAC 10.30.0.77
sleep 0.5
check "a DHCPACK from srv1 (no DHCP server) is refused" grep -q \
	"a DHCPACK of 10.30.0.77 for learner2 (vnet-learner2) came from VM srv1, which is not in \[global\] dhcp_servers; not learned" "$LOG"
check "learner2 has nothing locked after it" sh -c "'$LAB_BIN' ctl --lab $LAB -- learned | grep -q 'vm=learner2 locked=-'"
vmexec dhcp1 python3 "$TOP/tests/kernel/frame.py" dhcpack 10.30.0.2 02:00:00:30:00:99 10.30.0.78
sleep 0.5
check "an ACK of dhcp1 to another client's MAC (flooded to learner2) is refused" grep -q \
	"a DHCPACK of 10.30.0.78 for 02:00:00:30:00:99 passed learner2 (vnet-learner2); not learned" "$LOG"
vmexec dhcp1 python3 "$TOP/tests/kernel/frame.py" dhcpack 10.30.0.2 $L2MAC 10.30.0.77
check "the same DHCPACK from dhcp1 is learned: learner2 locked to 10.30.0.77" locked learner2 10.30.0.77

echo "# the locks outlive dfwd"
lab daemon stop hv1 >/dev/null
lab daemon start hv1 >/dev/null
check "after a restart learner1 is still locked to 10.30.0.50" locked learner1 10.30.0.50
check_not "and 10.30.0.51 is still dropped" pings learner1 10.30.0.21

echo "# forget: the next address is learned"
check "learned forget learner1 --wait" ctl learned forget learner1 --wait
# Only ARP, neighbour discovery and DHCP teach: the guest's cached
# neighbour entry would keep it from sending an ARP for a while.
vmexec learner1 ip neigh flush dev eth0
check "learner1 from 10.30.0.51 now gets through" pings learner1 10.30.0.21
check "learned: learner1 locked to 10.30.0.51" locked learner1 10.30.0.51

echo "# IPv6: duplicate address detection's target is learned"
vmexec learner1 sysctl -qw net.ipv6.conf.eth0.accept_dad=1
vmexec learner1 ip -6 addr add fd00:30::50/64 dev eth0
check "learned: learner1 locked to fd00:30::50" locked learner1 fd00:30::50
check "learner1 reaches srv1 over IPv6" pings learner1 fd00:30::21 -6
check "the IPv4 lock stays" locked learner1 10.30.0.51
vmexec learner1 ip -6 addr add fd00:30::99/64 dev eth0 nodad
check_not "a second IPv6 address is dropped" pings learner1 fd00:30::21 -6 -I fd00:30::99

echo "# a locked store holds dfwd briefly, and learning resumes after it"
check "learned forget learner1 --wait (again)" ctl learned forget learner1 --wait
vmexec learner1 ip neigh flush dev eth0
# Another process holds the store's write lock for 6 s while learner1's
# ARPs come (one a second): each learn write gives up after 250 ms and
# learning waits, so dfwd answers meanwhile (before: 10 s per frame).
lock_store 6
sleep 0.5
vmexec learner1 ping -c4 -i0.5 -W1 10.30.0.21 >/dev/null 2>&1 &
PING_PID=$!
sleep 1.5
took=$(status_ms)
echo "# dfwctl status while learner1's frames meet a locked store: $took ms"
check "dfwd answers while the store stays locked (under 3 s)" test $took -lt 3000
wait $PING_PID
wait $LOCK_PID
check "the failed write is logged with the wait" grep -q "learn: learner1 (vnet-learner1) 10.30.0.51: .*locked.*; learning waits" "$LOG"
check "once the store is free learner1 is learned again" pings learner1 10.30.0.21
check "learned: learner1 locked to 10.30.0.51 again" locked learner1 10.30.0.51
