/* Unit tests of address learning's frame parser (dfw/learn.c) on
 * hand-built frames: ARP request, gratuitous ARP, ARP probe, duplicate
 * address detection, neighbour advertisement, DHCPACK (unicast and
 * broadcast), what teaches nothing, truncated frames, and the port. */
#include "dfw/learn.h"
#include "tests/unit/unit.h"

#include <netinet/in.h>
#include <string.h>

#define ETH_ARP 0x0806
#define ETH_IP 0x0800
#define ETH_IP6 0x86dd

static const uint8_t GUEST_MAC[6] = { 0x02, 0, 0, 0x10, 0, 0x11 };

static char *fmt(const struct dfw_addr *a)
{
	static char buf[64];

	addr_format(a, buf, sizeof(buf));
	return buf;
}

/* ARP for Ethernet/IPv4: op, sender IP, target IP. */
static size_t arp(uint8_t *b, uint16_t op, const uint8_t spa[4], const uint8_t tpa[4])
{
	static const uint8_t head[6] = { 0, 1, 8, 0, 6, 4 };

	memset(b, 0, 28);
	memcpy(b, head, 6);
	b[7] = (uint8_t)op;
	memcpy(b + 8, GUEST_MAC, 6);
	memcpy(b + 14, spa, 4);
	memcpy(b + 24, tpa, 4);
	return 28;
}

static void test_arp(void)
{
	const uint8_t guest[4] = { 10, 10, 0, 11 }, gw[4] = { 10, 10, 0, 1 }, any[4] = { 0 };
	struct dfw_addr a;
	uint8_t b[64];
	size_t n;

	/* A request: the sender's address. */
	n = arp(b, 1, guest, gw);
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_ARP, NULL, 0, &a), LEARN_FROM_GUEST);
	CU_ASSERT_EQUAL(a.family, AF_INET);
	CU_ASSERT_STRING_EQUAL(fmt(&a), "10.10.0.11");
	/* A reply, too. */
	n = arp(b, 2, guest, gw);
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_ARP, NULL, 0, &a), LEARN_FROM_GUEST);
	/* Gratuitous: sender and target are the guest. */
	n = arp(b, 1, guest, guest);
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_ARP, NULL, 0, &a), LEARN_FROM_GUEST);
	CU_ASSERT_STRING_EQUAL(fmt(&a), "10.10.0.11");
	/* A probe (RFC 5227): the sender has no address yet. */
	n = arp(b, 1, any, guest);
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_ARP, NULL, 0, &a), LEARN_NONE);
	/* Another operation (RARP-like) teaches nothing. */
	n = arp(b, 3, guest, gw);
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_ARP, NULL, 0, &a), LEARN_NONE);
	/* Truncated, or not Ethernet/IPv4. */
	n = arp(b, 1, guest, gw);
	CU_ASSERT_EQUAL(learn_parse_frame(b, 27, ETH_ARP, NULL, 0, &a), -1);
	CU_ASSERT_EQUAL(learn_parse_frame(b, 0, ETH_ARP, NULL, 0, &a), -1);
	b[5] = 16;
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_ARP, NULL, 0, &a), -1);
	b[5] = 4;
	b[1] = 6; /* IEEE 802 */
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_ARP, NULL, 0, &a), -1);
}

/* An ICMPv6 neighbour message: source address (NULL: ::), type, target. */
static size_t nd(uint8_t *b, const char *src, uint8_t type, const char *target)
{
	struct dfw_addr s, t;
	const char *why;

	memset(b, 0, 72);
	b[0] = 0x60;
	b[5] = 32;           /* payload: 24 + an 8-byte option */
	b[6] = IPPROTO_ICMPV6;
	b[7] = 255;
	if (src) {
		CU_ASSERT_EQUAL_FATAL(addr_parse(src, &s, &why), 0);
		memcpy(b + 8, s.a, 16);
	}
	b[24] = 0xff;        /* some destination: the target's solicited-node group */
	b[25] = 0x02;
	b[40] = type;
	CU_ASSERT_EQUAL_FATAL(addr_parse(target, &t, &why), 0);
	memcpy(b + 48, t.a, 16);
	b[64] = 1;           /* source link-layer address option */
	b[65] = 1;
	memcpy(b + 66, GUEST_MAC, 6);
	return 72;
}

static void test_nd(void)
{
	struct dfw_addr a;
	uint8_t b[80];
	size_t n;

	/* Duplicate address detection: from ::, the tentative target. */
	n = nd(b, NULL, 135, "fd00:10::11");
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP6, NULL, 0, &a), LEARN_FROM_GUEST);
	CU_ASSERT_EQUAL(a.family, AF_INET6);
	CU_ASSERT_EQUAL(a.plen, 128);
	CU_ASSERT_STRING_EQUAL(fmt(&a), "fd00:10::11");
	/* Without the ethertype, the version says IPv6. */
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, 0, NULL, 0, &a), LEARN_FROM_GUEST);
	/* Address resolution (a source address): nothing. */
	n = nd(b, "fd00:10::11", 135, "fd00:10::1");
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP6, NULL, 0, &a), LEARN_NONE);
	/* An advertisement, solicited or not: its target. */
	n = nd(b, "fd00:10::11", 136, "fd00:10::11");
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP6, NULL, 0, &a), LEARN_FROM_GUEST);
	CU_ASSERT_STRING_EQUAL(fmt(&a), "fd00:10::11");
	/* Other ICMPv6 (a router solicitation), other IPv6: nothing. */
	n = nd(b, "fd00:10::11", 133, "fd00:10::11");
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP6, NULL, 0, &a), LEARN_NONE);
	n = nd(b, "fd00:10::11", 136, "fd00:10::11");
	b[6] = IPPROTO_UDP;
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP6, NULL, 0, &a), LEARN_NONE);
	/* Invalid (RFC 4861 7.1): forwarded (hop limit below 255), a
	 * multicast target, too short a message. */
	n = nd(b, "fd00:10::11", 136, "fd00:10::11");
	b[7] = 64;
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP6, NULL, 0, &a), -1);
	n = nd(b, NULL, 135, "ff02::1");
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP6, NULL, 0, &a), -1);
	n = nd(b, NULL, 135, "fd00:10::11");
	b[5] = 20;
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP6, NULL, 0, &a), -1);
	/* Truncated: before the target, in the header, empty. */
	n = nd(b, NULL, 135, "fd00:10::11");
	CU_ASSERT_EQUAL(learn_parse_frame(b, 63, ETH_IP6, NULL, 0, &a), -1);
	CU_ASSERT_EQUAL(learn_parse_frame(b, 43, ETH_IP6, NULL, 0, &a), -1);
	CU_ASSERT_EQUAL(learn_parse_frame(b, 39, ETH_IP6, NULL, 0, &a), -1);
	CU_ASSERT_EQUAL(learn_parse_frame(b, 0, ETH_IP6, NULL, 0, &a), -1);
	/* Not IPv6 at all, under the IPv6 ethertype. */
	b[0] = 0x45;
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP6, NULL, 0, &a), -1);
}

static void udp_len(uint8_t *b, size_t len)
{
	b[24] = (uint8_t)(len >> 8);
	b[25] = (uint8_t)len;
}

/* An IPv4/UDP/BOOTP message from sport to dport: op, yiaddr, options. */
static size_t dhcp(uint8_t *b, uint16_t sport, uint16_t dport, uint8_t op, const uint8_t yiaddr[4],
		   const uint8_t *opts, size_t nopts)
{
	static const uint8_t cookie[4] = { 99, 130, 83, 99 };
	size_t total = 20 + 8 + 236 + 4 + nopts;
	uint8_t *u = b + 20, *m = b + 28;

	memset(b, 0, total);
	b[0] = 0x45;
	b[2] = (uint8_t)(total >> 8);
	b[3] = (uint8_t)total;
	b[8] = 64;
	b[9] = IPPROTO_UDP;
	b[12] = 10, b[13] = 10, b[14] = 0, b[15] = 1;  /* the server */
	b[16] = 10, b[17] = 10, b[18] = 0, b[19] = 11;
	u[0] = (uint8_t)(sport >> 8), u[1] = (uint8_t)sport;
	u[2] = (uint8_t)(dport >> 8), u[3] = (uint8_t)dport;
	udp_len(b, total - 20);
	m[0] = op;
	m[1] = 1;
	m[2] = 6;
	memcpy(m + 16, yiaddr, 4);
	memcpy(m + 28, GUEST_MAC, 6);
	memcpy(m + 236, cookie, 4);
	memcpy(m + 240, opts, nopts);
	return total;
}

static void test_dhcp(void)
{
	const uint8_t yi[4] = { 10, 10, 0, 11 }, none[4] = { 0 };
	const uint8_t ack[] = { 53, 1, 5, 255 }, offer[] = { 53, 1, 2, 255 };
	/* Pads and another option before the message type. */
	const uint8_t ack_late[] = { 0, 0, 54, 4, 10, 10, 0, 1, 53, 1, 5, 255 };
	const uint8_t no_type[] = { 54, 4, 10, 10, 0, 1, 255 };
	uint8_t eth[14] = { 0 }, bcast[14], b[400];
	struct dfw_addr a;
	size_t n;

	memcpy(eth, GUEST_MAC, 6);
	memset(bcast, 0xff, 6);
	eth[12] = bcast[12] = 0x08;
	/* A DHCPACK to the client's MAC: yiaddr, towards the guest. */
	n = dhcp(b, 67, 68, 2, yi, ack, sizeof(ack));
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), LEARN_TO_GUEST);
	CU_ASSERT_EQUAL(a.family, AF_INET);
	CU_ASSERT_STRING_EQUAL(fmt(&a), "10.10.0.11");
	n = dhcp(b, 67, 68, 2, yi, ack_late, sizeof(ack_late));
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), LEARN_TO_GUEST);
	/* Broadcast (flooded to every port), or no Ethernet header: not used. */
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, bcast, sizeof(bcast), &a), LEARN_NONE);
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, NULL, 0, &a), LEARN_NONE);
	/* An offer, a message without a type, no yiaddr: nothing. */
	n = dhcp(b, 67, 68, 2, yi, offer, sizeof(offer));
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), LEARN_NONE);
	n = dhcp(b, 67, 68, 2, yi, no_type, sizeof(no_type));
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), LEARN_NONE);
	n = dhcp(b, 67, 68, 2, none, ack, sizeof(ack));
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), LEARN_NONE);
	/* Client to server (a request): nothing is granted yet. */
	n = dhcp(b, 68, 67, 1, none, ack, sizeof(ack));
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), LEARN_NONE);
	/* Other UDP, TCP, a fragment: nothing. */
	n = dhcp(b, 53, 68, 2, yi, ack, sizeof(ack));
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), LEARN_NONE);
	n = dhcp(b, 67, 68, 2, yi, ack, sizeof(ack));
	b[9] = IPPROTO_TCP;
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), LEARN_NONE);
	n = dhcp(b, 67, 68, 2, yi, ack, sizeof(ack));
	b[6] = 0x20; /* more fragments */
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), LEARN_NONE);
	/* Truncated: in the options, in the fixed part, in the UDP header,
	 * in the IP header; a UDP length that cuts the options short. */
	n = dhcp(b, 67, 68, 2, yi, ack_late, sizeof(ack_late));
	CU_ASSERT_EQUAL(learn_parse_frame(b, n - 3, ETH_IP, eth, sizeof(eth), &a), -1);
	CU_ASSERT_EQUAL(learn_parse_frame(b, n - 5, ETH_IP, eth, sizeof(eth), &a), -1);
	CU_ASSERT_EQUAL(learn_parse_frame(b, 20 + 8 + 239, ETH_IP, eth, sizeof(eth), &a), -1);
	CU_ASSERT_EQUAL(learn_parse_frame(b, 27, ETH_IP, eth, sizeof(eth), &a), -1);
	CU_ASSERT_EQUAL(learn_parse_frame(b, 19, ETH_IP, eth, sizeof(eth), &a), -1);
	udp_len(b, n - 20 - 4);
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), -1);
	udp_len(b, 7); /* shorter than a UDP header */
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), -1);
	/* An option that claims more than is there. */
	{
		const uint8_t bad[] = { 54, 40, 10 };

		n = dhcp(b, 67, 68, 2, yi, bad, sizeof(bad));
		CU_ASSERT_EQUAL(learn_parse_frame(b, n, ETH_IP, eth, sizeof(eth), &a), -1);
	}
	/* Other ethertypes teach nothing. */
	CU_ASSERT_EQUAL(learn_parse_frame(b, n, 0x88cc, eth, sizeof(eth), &a), LEARN_NONE);
}

/* The port: where a guest's frame came in (the bridge port, else the
 * plain device), where a frame to the guest leaves.  Ifindex 1 is "lo"
 * in any namespace. */
static void test_port(void)
{
	const uint8_t guest[4] = { 10, 10, 0, 11 }, gw[4] = { 10, 10, 0, 1 };
	const uint8_t ack[] = { 53, 1, 5, 255 };
	uint8_t b[400], eth[14] = { 0 };
	struct nflog_pkt p = { 0 };
	struct learn_seen seen;

	p.payload = b;
	p.len = arp(b, 1, guest, gw);
	p.hwproto = ETH_ARP;
	p.physindev = 1;
	p.indev = 999999;  /* the bridge: not the port */
	CU_ASSERT_EQUAL(learn_parse(&p, &seen), 1);
	CU_ASSERT_STRING_EQUAL(seen.ifname, "lo");
	CU_ASSERT_STRING_EQUAL(fmt(&seen.addr), "10.10.0.11");
	p.physindev = 0;
	p.indev = 1;
	CU_ASSERT_EQUAL(learn_parse(&p, &seen), 1);
	CU_ASSERT_STRING_EQUAL(seen.ifname, "lo");
	/* No way in known: no port. */
	p.indev = 0;
	p.outdev = p.physoutdev = 1;
	CU_ASSERT_EQUAL(learn_parse(&p, &seen), -1);
	/* A DHCPACK goes by the way out; its sender is its source MAC and
	 * the vNIC it came in by (the mark). */
	memcpy(eth, GUEST_MAC, 6);
	memcpy(eth + 6, (const uint8_t[6]){ 0x02, 0, 0, 0, 0, 0x67 }, 6);
	p.mark = 7;
	p.len = dhcp(b, 67, 68, 2, guest, ack, sizeof(ack));
	p.hwproto = ETH_IP;
	p.hwhdr = eth;
	p.hwhdr_len = sizeof(eth);
	p.physindev = 999999;
	p.physoutdev = 1;
	CU_ASSERT_EQUAL(learn_parse(&p, &seen), 1);
	CU_ASSERT_STRING_EQUAL(seen.ifname, "lo");
	CU_ASSERT(seen.to_guest);
	CU_ASSERT_EQUAL(memcmp(seen.client, GUEST_MAC, 6), 0);
	CU_ASSERT_EQUAL(memcmp(seen.server, eth + 6, 6), 0);
	CU_ASSERT_EQUAL(seen.from, 7);
	p.physoutdev = p.outdev = 0;
	CU_ASSERT_EQUAL(learn_parse(&p, &seen), -1);
	/* Nothing to learn is 0, whatever the ports. */
	p.len = arp(b, 1, (const uint8_t[4]){ 0 }, guest);
	p.hwproto = ETH_ARP;
	CU_ASSERT_EQUAL(learn_parse(&p, &seen), 0);
}

void register_learn_tests(void)
{
	static const struct unit_test tests[] = {
		{ "ARP: request, reply, gratuitous, probe, truncated", test_arp },
		{ "neighbour discovery: DAD, NA, NS, invalid, truncated", test_nd },
		{ "DHCP: ACK, broadcast, offer, request, truncated", test_dhcp },
		{ "the guest's port", test_port },
	};

	unit_suite("learn", tests, ARRAY_SIZE(tests));
}
