#!/usr/bin/env bash
# IPv6 neighbour discovery from a vNIC, with real frames: a VM (also a
# quarantined one) cannot advertise another VM's address (the IPv6
# counterpart of ARP spoofing) and sends no router advertisements or
# redirects; its advertisements of its own addresses still work, and a
# learning port's advertisement of its first address is still learned.
source "$(dirname "$0")/lib.sh"
TMPD=$(mktemp -d)

# The frames, built by hand and sent out of the VM's eth0 from a packet
# socket (hop limit 255, as neighbour discovery must have):
#   nd.py na SRC TARGET [LLADDR]   unsolicited advertisement to ff02::1,
#                                  override set, target link-layer address
#                                  LLADDR (default: eth0's MAC)
#   nd.py na-frag SRC TARGET       the same in two fragments, the first cut
#                                  inside the target
#   nd.py ra SRC                   a router advertisement of fd00:99::/64
#   nd.py redirect SRC TARGET DST  a redirect to ff02::1
#   nd.py udp SRC DST DSTMAC       a UDP datagram to DST port 5000
# SRC "ll" is eth0's EUI-64 link-local address.
cat >"$TMPD/nd.py" <<'PY'
import socket, struct, sys

def mac_bytes(m):
    return bytes(int(x, 16) for x in m.split(":"))

def ip6(a):
    return socket.inet_pton(socket.AF_INET6, a)

def csum(src, dst, msg, nh=58):
    data = src + dst + struct.pack("!IxxxB", len(msg), nh) + msg
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def with_csum(src, dst, msg):
    return msg[:2] + struct.pack("!H", csum(src, dst, msg)) + msg[4:]

def ip6_hdr(src, dst, nh, plen):
    return struct.pack("!IHBB", 6 << 28, plen, nh, 255) + src + dst

kind, args = sys.argv[1], sys.argv[2:]
mac = open("/sys/class/net/eth0/address").read().strip()
m = mac_bytes(mac)
ll = b"\xfe\x80" + b"\0" * 6 + bytes([m[0] ^ 2]) + m[1:3] + b"\xff\xfe" + m[3:6]
src = ll if args[0] == "ll" else ip6(args[0])
dst = ip6("ff02::1")
if kind in ("na", "na-frag"):
    lladdr = mac_bytes(args[2]) if len(args) > 2 else m
    msg = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + ip6(args[1]) + bytes([2, 1]) + lladdr
elif kind == "ra":
    msg = (struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + bytes([1, 1]) + m +
           struct.pack("!BBBBIII", 3, 4, 64, 0xc0, 86400, 14400, 0) + ip6("fd00:99::"))
elif kind == "redirect":
    msg = (struct.pack("!BBHI", 137, 0, 0, 0) + ip6(args[1]) + ip6(args[2]) +
           bytes([2, 1]) + m)
elif kind != "udp":
    sys.exit("nd.py: unknown kind " + kind)
if kind == "udp":
    dst = ip6(args[1])
    msg = struct.pack("!HHHH", 40000, 5000, 8 + 4, 0) + b"spam"
    msg = msg[:6] + struct.pack("!H", csum(src, dst, msg, 17)) + msg[8:]
    eth = mac_bytes(args[2]) + m + struct.pack("!H", 0x86dd)
else:
    msg = with_csum(src, dst, msg)
    eth = b"\x33\x33" + dst[12:] + m + struct.pack("!H", 0x86dd)
if kind == "udp":
    frames = [eth + struct.pack("!IHBB", 6 << 28, len(msg), 17, 64) + src + dst + msg]
elif kind == "na-frag":
    cut = 16  # a multiple of 8, inside the target address
    frames = []
    for off, part, more in ((0, msg[:cut], 1), (cut, msg[cut:], 0)):
        frag = struct.pack("!BBHI", 58, 0, (off // 8) << 3 | more, 0x2b1d)
        frames.append(eth + ip6_hdr(src, dst, 44, 8 + len(part)) + frag + part)
else:
    frames = [eth + ip6_hdr(src, dst, 58, len(msg)) + msg]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for f in frames:
    s.send(f)
PY
nd() { local vm=$1; shift; vmexec "$vm" python3 "$TMPD/nd.py" "$@"; }
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
