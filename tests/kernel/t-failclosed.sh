#!/usr/bin/env bash
# Fail closed: a port the agent has not realized passes nothing; spoofed
# source IPs and MACs are dropped at the bridge; killing dfwd with SIGKILL
# leaves enforcement in place, and a restarted dfwd converges (including a
# tag made while it was down) with no open window.
source "$(dirname "$0")/lib.sh"
lab_up kfail "$TOP/configs/vdi.ini"
HOSTNS=dfwl-$LAB-h-hv1
ROGUE=dfwl-$LAB-v-rogue
PING_PID=""
trap '[ -n "$PING_PID" ] && kill $PING_PID 2>/dev/null; finish' EXIT
wait_realized 1 || bad "dfwd realized the first revision"

echo "# a port with no realized policy"
ip netns add "$ROGUE"
ip -n "$HOSTNS" link add vnet-rogue type veth peer name eth0 netns "$ROGUE"
ip -n "$HOSTNS" link set vnet-rogue master br-dfw up
ip -n "$ROGUE" link set eth0 up
ip -n "$ROGUE" addr add 10.10.0.99/24 dev eth0
check "unrealized port cannot ping the connection server" exits 1 \
	ip netns exec "$ROGUE" ping -c 2 -W 1 -i 0.2 10.10.0.21
check "unrealized port cannot open TCP to the connection server" exits 1 \
	ip netns exec "$ROGUE" nc -z -w 1 10.10.0.21 443
check "nothing reaches the unrealized port" exits 1 \
	"$LAB_BIN" exec --lab "$LAB" cs1 -- ping -c 2 -W 1 -i 0.2 10.10.0.99
check "the bridge counted drops from the unknown port" sh -c \
	"ip netns exec $HOSTNS nft list chain bridge dfw classify | grep 'unknown port' | grep -vq 'packets 0 '"
check "and drops to it (cs1's ARP broadcast flooded there)" sh -c \
	"ip netns exec $HOSTNS nft list chain bridge dfw steer | grep 'unknown port' | grep -vq 'packets 0 '"

echo "# spoofing"
vmexec desktop1 ip addr add 10.10.0.50/24 dev eth0
check "desktop1 reaches cs1 from its own address" reach desktop1 cs1 tcp/443
check "desktop1 cannot reach cs1 from a spoofed source address" exits 1 \
	"$LAB_BIN" exec --lab "$LAB" desktop1 -- nc -z -w 1 -s 10.10.0.50 10.10.0.21 443
vmexec desktop1 ip addr del 10.10.0.50/24 dev eth0
vmexec desktop2 ip link set eth0 address 02:00:00:10:00:99
check "desktop2 with a spoofed MAC reaches nothing" blocked desktop2 cs1 tcp/443
vmexec desktop2 ip link set eth0 address 02:00:00:10:00:12
vmexec desktop2 ip neigh flush dev eth0
vmexec cs1 ip neigh flush dev eth0
check "desktop2 with its own MAC again reaches cs1" reach desktop2 cs1 tcp/443

echo "# SIGKILL and restart"
lab daemon kill hv1 >/dev/null
sleep 0.3
check "dfwd is gone: status exits 3" exits 3 ctl status
check "enforcement stays: east-west still blocked" blocked desktop1 desktop2 tcp/445
check "enforcement stays: allowed flow still passes" reach desktop1 cs1 tcp/443
rev=$(ctl tag desktop4 threat.high | sed -n 's/^revision //p')
check "a tag can be written while dfwd is down" test -n "$rev"
# A blocked flow probed every 20 ms across the restart: not one reply may pass.
"$LAB_BIN" exec --lab "$LAB" desktop2 -- ping -i 0.02 -W 1 -c 150 10.10.0.13 >"$LAB.ping" 2>&1 &
PING_PID=$!
sleep 0.5
lab daemon start hv1 >/dev/null
check "restarted dfwd converges to the tag made while it was down" wait_realized "$rev"
wait $PING_PID
PING_PID=""
check "no east-west packet passed during the restart" grep -q " 0 received" "$LAB.ping"
rm -f "$LAB.ping"
check "desktop4 is isolated after the restart" blocked desktop4 fs1 tcp/445
check "desktop4 keeps its exception" reach desktop4 cs1 tcp/443
