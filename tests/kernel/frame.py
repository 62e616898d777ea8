#!/usr/bin/env python3
# Frames built by hand and sent out of the VM's eth0 from a packet socket.
# IPv6 (hop limit 255, as neighbour discovery must have); SRC "ll" is
# eth0's EUI-64 link-local address:
#   frame.py na SRC TARGET [LLADDR]   unsolicited advertisement to ff02::1,
#                                     override set, target link-layer
#                                     address LLADDR (default: eth0's MAC)
#   frame.py na-frag SRC TARGET       the same in two fragments, the first
#                                     cut inside the target
#   frame.py ra SRC                   a router advertisement of fd00:99::/64
#   frame.py redirect SRC TARGET DST  a redirect to ff02::1
#   frame.py udp SRC DST DSTMAC       a UDP datagram to DST port 5000
#   frame.py echo SRC DST [N]         an ICMPv6 echo request to the
#                                     multicast group DST (to N groups:
#                                     DST and the next N - 1)
# IPv4:
#   frame.py vlan SRC DST DSTMAC [TPID]
#                                     an ICMP echo request from SRC to DST in
#                                     an 802.1Q header of VLAN 0 (TPID 0x8100;
#                                     0x88a8: 802.1ad), three times
#   frame.py dhcpack SRC CLIENTMAC YIADDR
#                                     a DHCPACK from SRC (and eth0's MAC)
#                                     that gives YIADDR to CLIENTMAC, sent
#                                     to it
#   frame.py udp4 SRC DST DSTMAC PORT MARKER [SPORT]
#                                     a UDP datagram holding MARKER to DST
#                                     port PORT (from SPORT, default 40000),
#                                     in a frame to DSTMAC (which may be
#                                     another VM's or broadcast), 3 times
# Receiving:
#   frame.py rx SECONDS MARKER        counts the frames eth0 receives in
#                                     SECONDS that hold MARKER; prints it
import select, socket, struct, sys, time

def mac_bytes(m):
    return bytes(int(x, 16) for x in m.split(":"))

def ip6(a):
    return socket.inet_pton(socket.AF_INET6, a)

def ones(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff

def csum(src, dst, msg, nh=58):
    return ones(src + dst + struct.pack("!IxxxB", len(msg), nh) + msg)

def send(frames):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    for f in frames:
        s.send(f)

def with_csum(src, dst, msg):
    return msg[:2] + struct.pack("!H", csum(src, dst, msg)) + msg[4:]

def ip6_hdr(src, dst, nh, plen):
    return struct.pack("!IHBB", 6 << 28, plen, nh, 255) + src + dst

kind, args = sys.argv[1], sys.argv[2:]
mac = open("/sys/class/net/eth0/address").read().strip()
m = mac_bytes(mac)
ll = b"\xfe\x80" + b"\0" * 6 + bytes([m[0] ^ 2]) + m[1:3] + b"\xff\xfe" + m[3:6]
if kind == "vlan":
    sip, dip = socket.inet_aton(args[0]), socket.inet_aton(args[1])
    tpid = int(args[3], 16) if len(args) > 3 else 0x8100
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x6466, 1) + b"vlan"
    icmp = icmp[:2] + struct.pack("!H", ones(icmp)) + icmp[4:]
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0) + sip + dip
    hdr = hdr[:10] + struct.pack("!H", ones(hdr)) + hdr[12:]
    send([mac_bytes(args[2]) + m + struct.pack("!HHH", tpid, 0, 0x0800) + hdr + icmp] * 3)
    sys.exit(0)
if kind == "udp4":
    sip, dip, body = socket.inet_aton(args[0]), socket.inet_aton(args[1]), args[4].encode()
    sport = int(args[5]) if len(args) > 5 else 40000
    udp = struct.pack("!HHHH", sport, int(args[3]), 8 + len(body), 0) + body
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0) + sip + dip
    hdr = hdr[:10] + struct.pack("!H", ones(hdr)) + hdr[12:]
    send([mac_bytes(args[2]) + m + struct.pack("!H", 0x0800) + hdr + udp] * 3)
    sys.exit(0)
if kind == "rx":
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind(("eth0", 0))
    end, marker, n = time.time() + float(args[0]), args[1].encode(), 0
    while time.time() < end:
        if not select.select([s], [], [], max(0, end - time.time()))[0]:
            break
        data, addr = s.recvfrom(65535)
        n += addr[2] != socket.PACKET_OUTGOING and marker in data
    print(n)
    sys.exit(0)
if kind == "dhcpack":
    sip, cmac, yi = socket.inet_aton(args[0]), mac_bytes(args[1]), socket.inet_aton(args[2])
    bootp = (struct.pack("!BBBBIHH", 2, 1, 6, 0, 0x64667764, 0, 0) + b"\0" * 4 + yi + sip +
             b"\0" * 4 + cmac + b"\0" * (10 + 64 + 128))
    opts = bytes([99, 130, 83, 99, 53, 1, 5, 54, 4]) + sip + bytes([51, 4, 0, 0, 14, 16, 255])
    udp = struct.pack("!HHHH", 67, 68, 8 + len(bootp) + len(opts), 0) + bootp + opts
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0) + sip + yi
    hdr = hdr[:10] + struct.pack("!H", ones(hdr)) + hdr[12:]
    send([cmac + m + struct.pack("!H", 0x0800) + hdr + udp])
    sys.exit(0)
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
elif kind == "echo":
    dst = ip6(args[1])
    msg = struct.pack("!BBHHH", 128, 0, 0, 0x6466, 1) + b"ping"
elif kind != "udp":
    sys.exit("frame.py: unknown kind " + kind)
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
elif kind == "echo":
    frames = []
    for k in range(int(args[2]) if len(args) > 2 else 1):
        d = dst[:14] + struct.pack("!H", (struct.unpack("!H", dst[14:])[0] + k) & 0xffff)
        e = b"\x33\x33" + d[12:] + m + struct.pack("!H", 0x86dd)
        body = msg[:2] + b"\0\0" + msg[4:]  # its checksum is for d
        frames.append(e + ip6_hdr(src, d, 58, len(body)) + with_csum(src, d, body))
elif kind == "na-frag":
    cut = 16  # a multiple of 8, inside the target address
    frames = []
    for off, part, more in ((0, msg[:cut], 1), (cut, msg[cut:], 0)):
        frag = struct.pack("!BBHI", 58, 0, (off // 8) << 3 | more, 0x2b1d)
        frames.append(eth + ip6_hdr(src, dst, 44, 8 + len(part)) + frag + part)
else:
    frames = [eth + ip6_hdr(src, dst, 58, len(msg)) + msg]
send(frames)
