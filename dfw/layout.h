/* The dataplane layout (docs/DATAPLANE.md): names, hook priorities and the
 * fixed base chains, shared by the backend that sends them and the printer
 * that shows them.
 *
 *  bridge table: classifies ports.  prerouting (-300) first passes an IPv4
 *    or IPv6 frame whose port, source MAC and source address are a
 *    port's own, with one lookup that also gives the port's id (maps
 *    port_src4 / port_src6: a port that learns a family has none there;
 *    ICMPv6 never takes this way, so that neighbour discovery meets its
 *    checks); every other frame goes the long way, which sets meta mark
 *    to the ingress vNIC id (DFW_UPLINK_ID for an uplink) and drops frames
 *    of unknown ports and spoofed MAC/IP/ARP; for ports that learn their
 *    addresses (sets learn4 / learn6), ARP, neighbour solicitations and
 *    advertisements and DHCP client messages are first copied to nflog
 *    group DFW_NFLOG_LEARN, and a DHCP client without an address passes;
 *    last, a vNIC's neighbour discovery: a neighbour advertisement whose
 *    target is not the port's own (set port_nd6) drops, and so do router
 *    advertisements, redirects and fragments of hop limit 255;
 *    forward (-100, before br_netfilter) passes a unicast IPv4 or IPv6
 *    frame to an address of its egress port with that port's id in meta
 *    priority, after one lookup (maps port_dst4 / port_dst6: most frames);
 *    the rest go the long way: the egress port's id into meta priority (a
 *    port the map does not know drops), a frame to an uplink passes, a
 *    DHCP reply to a learning port is copied to the learn group and
 *    passes, and any other unicast IP frame drops (its destination is not
 *    the port's: the sender picked another VM's MAC), as does a multicast
 *    frame to a unicast address;
 *    input (-100) drops the IP frames of vNICs for the hypervisor itself
 *    but neighbour solicitations and advertisements (an uplink's pass: the
 *    host's own network).
 *  inet table: enforces with conntrack.  forward: established/related pass,
 *    IPv6 neighbour discovery passes, invalid drops, then the source vNIC's
 *    out-policy chain (allow = return), then the destination vNIC's in-policy
 *    chain (allow = accept); anything else drops (fail closed).  Before the
 *    dispatch, new flows from or to a blocked address drop (timed blocks,
 *    expired by the kernel), and every new flow's first packet is copied to
 *    nflog group DFW_NFLOG_NEWFLOWS (nothing is copied while no one listens).
 *    The part after the out-policy chain is the chain admit, entered by
 *    goto: an out-policy allow inside a chain its dispatch map jumped to
 *    (dfw/dispatch.c) goes there too, as "return" would return to the
 *    out-policy chain. */
#ifndef DFW_LAYOUT_H
#define DFW_LAYOUT_H

#define DFW_TABLE_DEFAULT "dfw"

#define DFW_MAP_PORT_SRC "port_src"   /* ifname -> mark (src id) */
#define DFW_MAP_PORT_DST "port_dst"   /* ifname -> classid (dst id) */
#define DFW_SET_PORT_MAC "port_mac"   /* ifname . ether_addr */
#define DFW_SET_PORT_IP4 "port_ip4"   /* ifname . ipv4_addr */
#define DFW_SET_PORT_IP6 "port_ip6"   /* ifname . ipv6_addr */
/* The elements of port_ip6 again, for the target address of a neighbour
 * advertisement: nft types a load from the ICMPv6 message as an integer,
 * and `nft -f` refuses it against an ipv6_addr key, so this set's key is
 * typeof the same raw load (DFW_ND_TARGET_NFT). */
#define DFW_SET_PORT_ND6 "port_nd6"   /* ifname . @th,64,128 */
#define DFW_MAP_PORT_SRC4 "port_src4" /* ifname . ether_addr . ipv4_addr -> mark */
#define DFW_MAP_PORT_SRC6 "port_src6" /* ifname . ether_addr . ipv6_addr -> mark */
/* A unicast frame to a port's own address: (egress port, destination) ->
 * the port's id.  Every address of the port but "::". */
#define DFW_MAP_PORT_DST4 "port_dst4" /* ifname . ipv4_addr -> classid */
#define DFW_MAP_PORT_DST6 "port_dst6" /* ifname . ipv6_addr -> classid */
#define DFW_SET_LEARN4 "learn4"       /* ifname: ports learning their IPv4 address */
#define DFW_SET_LEARN6 "learn6"       /* ifname: ports learning their IPv6 address */
#define DFW_CHAIN_BR_PRE "classify"
#define DFW_CHAIN_BR_FWD "steer"
#define DFW_CHAIN_BR_IN "to_host"     /* frames for the hypervisor itself */
#define DFW_MAP_OUT "out_dispatch"    /* mark -> out-policy chain */
#define DFW_MAP_IN "in_dispatch"      /* classid -> in-policy chain */
#define DFW_CHAIN_INET_FWD "enforce"
#define DFW_CHAIN_ADMIT "admit"       /* the in-policy part of enforce */
/* The ids of the local vNICs of VMs in a group with quarantine = yes
 * (classid): a plan set, since tag changes edit it. */
#define DFW_SET_ISOLATED "isolated"
#define DFW_SET_BLOCK4 "blocked4"     /* ipv4_addr, element timeouts */
#define DFW_SET_BLOCK6 "blocked6"     /* ipv6_addr, element timeouts */
/* Operator blocks (dfwctl block): everywhere, and scoped to vNICs as
 * (address . vNIC id); element timeouts.  Apart from the threat
 * detector's, because the agent rewrites them whole. */
#define DFW_SET_OPBLOCK4 "opblock4"
#define DFW_SET_OPBLOCK6 "opblock6"
#define DFW_SET_OPSCOPE4 "opscope4"   /* ipv4_addr . mark: at the source vNIC */
#define DFW_SET_OPSCOPE6 "opscope6"   /* ipv6_addr . mark */
/* The same pairs with the id as a classid, at the destination vNIC (meta
 * priority): nft types the two ids apart, as in the p-G-o / p-G-i sets. */
#define DFW_SET_OPSCOPE4_IN "opscope4i" /* ipv4_addr . classid */
#define DFW_SET_OPSCOPE6_IN "opscope6i" /* ipv6_addr . classid */

/* The id of the host's uplinks (the overlay's ports on the bridge, e.g. a
 * VXLAN device): frames from an uplink were checked at the sending host's
 * source vNIC (out) and are checked here at the destination vNIC (in);
 * frames to an uplink are checked here (out) and at the receiving host
 * (in).  Uplinks carry many MACs, so they skip anti-spoofing. */
#define DFW_UPLINK_ID 0xfffffffeu
#define DFW_UPLINK_ID_NFT "0xfffffffe"
#define DFW_UPLINK_CLASSID_NFT "ffff:fffe"
#define DFW_MAX_UPLINKS 8

#define DFW_PRIO_BR_PRE (-300)
#define DFW_PRIO_BR_FWD (-100)
#define DFW_PRIO_BR_IN (-100)
#define DFW_PRIO_INET_FWD 0

#define DFW_NFLOG_GROUP 0      /* rules with log = yes */
#define DFW_NFLOG_NEWFLOWS 1   /* every new flow's first packet, for the
				* network threat detector */
#define DFW_NFLOG_LEARN 2      /* ARP / ND / DHCP of ports that learn
				* their addresses (bridge table) */
#define DFW_NFLOG_SNAPLEN 80   /* an IPv6 header and the ports */
#define DFW_NFLOG_LEARN_SNAPLEN 400 /* from the network header: a whole
				     * ARP / ND message, a DHCP message up to
				     * its first options (the yiaddr is at 16
				     * of 236 fixed bytes after the UDP header) */

/* The target address of a neighbour solicitation or advertisement: ICMPv6
 * bytes 8-23 (RFC 4861 4.3, 4.4). */
#define DFW_ND_TARGET_OFF 8
#define DFW_ND_TARGET_NFT "@th,64,128"

#define DFW_STR_(x) #x
#define DFW_STR(x) DFW_STR_(x)

#define DFW_LEARN_LOG_NFT \
	"log group " DFW_STR(DFW_NFLOG_LEARN) " snaplen " DFW_STR(DFW_NFLOG_LEARN_SNAPLEN)

/* The base chains as nft text, for plan_print_nft().  Keep in step with
 * backend.c's base_chains(); the kernel tests check the behaviour. */
#define DFW_BRIDGE_CHAINS_NFT \
	"\tchain " DFW_CHAIN_BR_PRE " {\n" \
	"\t\ttype filter hook prerouting priority -300; policy accept;\n" \
	"\t\tether type ip meta mark set iifname . ether saddr . ip saddr map @" DFW_MAP_PORT_SRC4 \
	" accept comment \"a port's own\"\n" \
	"\t\tether type ip6 meta l4proto != ipv6-icmp meta mark set iifname . ether saddr . ip6 saddr map @" \
	DFW_MAP_PORT_SRC6 " accept comment \"a port's own\"\n" \
	"\t\tmeta mark set 0x0\n" \
	"\t\tmeta mark set iifname map @" DFW_MAP_PORT_SRC "\n" \
	"\t\tmeta mark 0x0 counter drop comment \"unknown port\"\n" \
	"\t\tmeta mark " DFW_UPLINK_ID_NFT " accept comment \"uplink: checked at the sending host\"\n" \
	"\t\tiifname . ether saddr != @" DFW_SET_PORT_MAC " counter drop comment \"spoofed MAC\"\n" \
	"\t\tether type != { ip, ip6, arp } counter drop comment \"not IPv4, IPv6 or ARP\"\n" \
	"\t\tether type arp iifname @" DFW_SET_LEARN4 " " DFW_LEARN_LOG_NFT " comment \"learn\"\n" \
	"\t\tether type ip6 meta l4proto ipv6-icmp icmpv6 type 135-136 iifname @" DFW_SET_LEARN6 " " \
	DFW_LEARN_LOG_NFT " comment \"learn\"\n" \
	"\t\tether type ip meta l4proto udp th sport 68 th dport 67 iifname @" DFW_SET_LEARN4 " " \
	DFW_LEARN_LOG_NFT " comment \"learn: DHCP\"\n" \
	"\t\tether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 " \
	"meta l4proto udp th sport 68 th dport 67 iifname @" DFW_SET_LEARN4 " accept comment \"learn: DHCP without an address\"\n" \
	"\t\tether type ip iifname . ip saddr != @" DFW_SET_PORT_IP4 " counter drop comment \"spoofed IPv4\"\n" \
	"\t\tether type arp iifname . arp saddr ether != @" DFW_SET_PORT_MAC " counter drop comment \"spoofed ARP\"\n" \
	"\t\tether type arp iifname . arp saddr ip != @" DFW_SET_PORT_IP4 " counter drop comment \"spoofed ARP\"\n" \
	"\t\tether type ip6 iifname . ip6 saddr != @" DFW_SET_PORT_IP6 " counter drop comment \"spoofed IPv6\"\n" \
	"\t\tether type ip6 ip6 saddr :: meta l4proto != ipv6-icmp counter drop comment \"from :: and not ICMPv6\"\n" \
	"\t\tether type ip6 ip6 saddr :: ip6 daddr != ff00::/8 counter drop comment \"from :: to no multicast group\"\n" \
	"\t\tether type ip6 ip6 hoplimit 255 exthdr frag exists " \
	"counter drop comment \"fragmented neighbour discovery\"\n" \
	"\t\tether type ip6 meta l4proto ipv6-icmp icmpv6 type nd-router-advert " \
	"counter drop comment \"router advertisement from a vNIC\"\n" \
	"\t\tether type ip6 meta l4proto ipv6-icmp icmpv6 type nd-redirect " \
	"counter drop comment \"redirect from a vNIC\"\n" \
	"\t\tether type ip6 meta l4proto ipv6-icmp icmpv6 type nd-neighbor-advert iifname . " \
	DFW_ND_TARGET_NFT " != @" DFW_SET_PORT_ND6 " counter drop comment \"spoofed neighbour advertisement\"\n" \
	"\t}\n" \
	"\tchain " DFW_CHAIN_BR_FWD " {\n" \
	"\t\ttype filter hook forward priority -100; policy accept;\n" \
	"\t\tether type ip meta pkttype other meta priority set oifname . ip daddr map @" \
	DFW_MAP_PORT_DST4 " accept comment \"to a port's own\"\n" \
	"\t\tether type ip6 meta pkttype other meta priority set oifname . ip6 daddr map @" \
	DFW_MAP_PORT_DST6 " accept comment \"to a port's own\"\n" \
	"\t\tmeta priority set none\n" \
	"\t\tmeta priority set oifname map @" DFW_MAP_PORT_DST "\n" \
	"\t\tmeta priority none counter drop comment \"unknown port\"\n" \
	"\t\tmeta priority " DFW_UPLINK_CLASSID_NFT " accept comment \"to an uplink: the receiving host checks\"\n" \
	"\t\tether type ip meta l4proto udp th sport 67 th dport 68 oifname @" DFW_SET_LEARN4 " " \
	DFW_LEARN_LOG_NFT " accept comment \"learn: DHCP reply\"\n" \
	"\t\tether type ip meta pkttype != broadcast meta pkttype != multicast " \
	"counter drop comment \"to an address not the port's\"\n" \
	"\t\tether type ip6 meta pkttype != multicast counter drop comment \"to an address not the port's\"\n" \
	"\t\tether type ip6 ip6 daddr != ff00::/8 counter drop comment \"multicast frame to a unicast address\"\n" \
	"\t\tether type ip meta pkttype multicast ip daddr != 224.0.0.0/4 " \
	"counter drop comment \"multicast frame to a unicast address\"\n" \
	"\t}\n" \
	"\tchain " DFW_CHAIN_BR_IN " {\n" \
	"\t\ttype filter hook input priority -100; policy accept;\n" \
	"\t\tmeta mark " DFW_UPLINK_ID_NFT " accept comment \"from an uplink: the host's own network\"\n" \
	"\t\tether type ip6 meta l4proto ipv6-icmp icmpv6 type 135-136 accept comment \"neighbour discovery\"\n" \
	"\t\tether type ip counter drop comment \"from a vNIC to the hypervisor\"\n" \
	"\t\tether type ip6 counter drop comment \"from a vNIC to the hypervisor\"\n" \
	"\t}\n"

#define DFW_INET_SETS_NFT \
	"\tset " DFW_SET_BLOCK4 " {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t}\n" \
	"\tset " DFW_SET_BLOCK6 " {\n\t\ttype ipv6_addr\n\t\tflags timeout\n\t}\n" \
	"\tset " DFW_SET_OPBLOCK4 " {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t}\n" \
	"\tset " DFW_SET_OPBLOCK6 " {\n\t\ttype ipv6_addr\n\t\tflags timeout\n\t}\n" \
	"\tset " DFW_SET_OPSCOPE4 " {\n\t\ttype ipv4_addr . mark\n\t\tflags timeout\n\t}\n" \
	"\tset " DFW_SET_OPSCOPE6 " {\n\t\ttype ipv6_addr . mark\n\t\tflags timeout\n\t}\n" \
	"\tset " DFW_SET_OPSCOPE4_IN " {\n\t\ttype ipv4_addr . classid\n\t\tflags timeout\n\t}\n" \
	"\tset " DFW_SET_OPSCOPE6_IN " {\n\t\ttype ipv6_addr . classid\n\t\tflags timeout\n\t}\n"

#define DFW_INET_CHAINS_NFT \
	"\tchain " DFW_CHAIN_INET_FWD " {\n" \
	"\t\ttype filter hook forward priority 0; policy accept;\n" \
	"\t\tmeta mark 0x0 accept comment \"not bridged through a dfw port\"\n" \
	"\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept\n" \
	"\t\tmeta pkttype != host meta priority @" DFW_SET_ISOLATED \
	" counter drop comment \"isolated: no broadcast or multicast\"\n" \
	"\t\tct state established,related accept\n" \
	"\t\tct state invalid counter drop\n" \
	"\t\tip saddr @" DFW_SET_BLOCK4 " counter drop comment \"blocked\"\n" \
	"\t\tip daddr @" DFW_SET_BLOCK4 " counter drop comment \"blocked\"\n" \
	"\t\tip6 saddr @" DFW_SET_BLOCK6 " counter drop comment \"blocked\"\n" \
	"\t\tip6 daddr @" DFW_SET_BLOCK6 " counter drop comment \"blocked\"\n" \
	"\t\tip saddr @" DFW_SET_OPBLOCK4 " counter drop comment \"operator block\"\n" \
	"\t\tip daddr @" DFW_SET_OPBLOCK4 " counter drop comment \"operator block\"\n" \
	"\t\tip6 saddr @" DFW_SET_OPBLOCK6 " counter drop comment \"operator block\"\n" \
	"\t\tip6 daddr @" DFW_SET_OPBLOCK6 " counter drop comment \"operator block\"\n" \
	"\t\tip saddr . meta priority @" DFW_SET_OPSCOPE4_IN " counter drop comment \"operator block in scope\"\n" \
	"\t\tip daddr . meta mark @" DFW_SET_OPSCOPE4 " counter drop comment \"operator block in scope\"\n" \
	"\t\tip6 saddr . meta priority @" DFW_SET_OPSCOPE6_IN " counter drop comment \"operator block in scope\"\n" \
	"\t\tip6 daddr . meta mark @" DFW_SET_OPSCOPE6 " counter drop comment \"operator block in scope\"\n" \
	"\t\tlog group " DFW_STR(DFW_NFLOG_NEWFLOWS) " snaplen " DFW_STR(DFW_NFLOG_SNAPLEN) \
	" comment \"new flow\"\n" \
	"\t\tmeta mark vmap @" DFW_MAP_OUT "\n" \
	"\t\tgoto " DFW_CHAIN_ADMIT "\n" \
	"\t}\n" \
	"\tchain " DFW_CHAIN_ADMIT " {\n" \
	"\t\tmeta priority " DFW_UPLINK_CLASSID_NFT " accept comment \"to an uplink: the receiving host checks\"\n" \
	"\t\tmeta priority vmap @" DFW_MAP_IN "\n" \
	"\t\tcounter drop comment \"no realized policy\"\n" \
	"\t}\n"

#endif
