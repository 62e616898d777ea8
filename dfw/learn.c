/* Address learning: ARP / neighbour discovery / DHCP frames (see learn.h). */
#include "dfw/learn.h"

#include <netinet/in.h>
#include <string.h>

#define ETH_P_IP_ 0x0800
#define ETH_P_ARP_ 0x0806
#define ETH_P_IPV6_ 0x86dd

#define ND_NS 135
#define ND_NA 136

#define DHCP_SERVER_PORT 67
#define DHCP_CLIENT_PORT 68
#define BOOTP_FIXED 236     /* op .. file, before the magic cookie */
#define BOOTP_YIADDR 16
#define BOOTP_CHADDR 28
#define DHCP_OPT_PAD 0
#define DHCP_OPT_MSGTYPE 53
#define DHCP_OPT_END 255
#define DHCPACK 5

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void set_addr(struct dfw_addr *addr, int family, const uint8_t *a)
{
	size_t alen = family == AF_INET ? 4 : 16;

	memset(addr, 0, sizeof(*addr));
	addr->family = (uint8_t)family;
	addr->plen = (uint8_t)(alen * 8);
	memcpy(addr->a, a, alen);
}

static int arp(const uint8_t *pkt, size_t len, struct dfw_addr *addr)
{
	static const uint8_t any[4];
	uint16_t op;

	/* Ethernet and IPv4: sha(6) spa(4) tha(6) tpa(4) after 8 bytes. */
	if (len < 28 || be16(pkt) != 1 || be16(pkt + 2) != ETH_P_IP_ || pkt[4] != 6 || pkt[5] != 4)
		return -1;
	op = be16(pkt + 6);
	if (op != 1 && op != 2)
		return LEARN_NONE;
	if (!memcmp(pkt + 14, any, 4))
		return LEARN_NONE; /* a probe: the address is not the guest's yet */
	set_addr(addr, AF_INET, pkt + 14);
	return LEARN_FROM_GUEST;
}

static int nd(const uint8_t *pkt, size_t len, struct dfw_addr *addr)
{
	static const uint8_t any[16];
	const uint8_t *icmp = pkt + 40, *target = pkt + 48;

	if (len < 40 || pkt[0] >> 4 != 6)
		return -1;
	if (pkt[6] != IPPROTO_ICMPV6)
		return LEARN_NONE; /* neighbour discovery never has extension headers */
	if (len < 40 + 4)
		return -1;
	if ((icmp[0] != ND_NS && icmp[0] != ND_NA) || icmp[1] != 0)
		return LEARN_NONE;
	/* RFC 4861 7.1: the hop limit is 255 (never forwarded), the message at
	 * least 24 bytes, the target not multicast. */
	if (be16(pkt + 4) < 24 || len < 40 + 24)
		return -1;
	if (pkt[7] != 255 || target[0] == 0xff)
		return -1;
	if (icmp[0] == ND_NS && memcmp(pkt + 8, any, 16))
		return LEARN_NONE; /* address resolution, not duplicate address detection */
	set_addr(addr, AF_INET6, target);
	return LEARN_FROM_GUEST;
}

/* A DHCPACK to the client: yiaddr, when the frame goes to chaddr. */
static int dhcp_reply(const uint8_t *b, size_t len, const uint8_t *eth, size_t ethlen,
		      struct dfw_addr *addr)
{
	static const uint8_t cookie[4] = { 99, 130, 83, 99 }, any[4];
	size_t i = BOOTP_FIXED + sizeof(cookie);
	int type = -1;

	if (len < i)
		return -1;
	if (b[0] != 2 || b[1] != 1 || b[2] != 6 || memcmp(b + BOOTP_FIXED, cookie, 4))
		return LEARN_NONE; /* not a BOOTREPLY for Ethernet, or BOOTP */
	while (i < len && type < 0) {
		uint8_t code = b[i];

		if (code == DHCP_OPT_END)
			break;
		if (code == DHCP_OPT_PAD) {
			i++;
			continue;
		}
		if (i + 2 > len || i + 2 + b[i + 1] > len)
			return -1; /* cut off in the options */
		if (code == DHCP_OPT_MSGTYPE && b[i + 1] == 1)
			type = b[i + 2];
		i += 2 + (size_t)b[i + 1];
	}
	if (type < 0 && i >= len)
		return -1; /* the options ran out before their end */
	if (type != DHCPACK || !memcmp(b + BOOTP_YIADDR, any, 4))
		return LEARN_NONE;
	if (!eth || ethlen < 14 || memcmp(eth, b + BOOTP_CHADDR, 6))
		return LEARN_NONE; /* broadcast, or not to the client: see learn.h */
	set_addr(addr, AF_INET, b + BOOTP_YIADDR);
	return LEARN_TO_GUEST;
}

static int ipv4(const uint8_t *pkt, size_t len, const uint8_t *eth, size_t ethlen,
		struct dfw_addr *addr)
{
	size_t ihl, end;
	const uint8_t *udp;

	if (len < 20 || pkt[0] >> 4 != 4)
		return -1;
	ihl = (size_t)(pkt[0] & 0x0f) * 4;
	if (ihl < 20 || len < ihl)
		return -1;
	if (pkt[9] != IPPROTO_UDP || (be16(pkt + 6) & 0x3fff))
		return LEARN_NONE; /* not UDP, or a fragment */
	if (len < ihl + 8)
		return -1;
	udp = pkt + ihl;
	if (be16(udp) != DHCP_SERVER_PORT || be16(udp + 2) != DHCP_CLIENT_PORT)
		return LEARN_NONE; /* client to server (or other UDP): nothing granted yet */
	if (be16(udp + 4) < 8)
		return -1;
	/* What was copied, but no further than the datagram. */
	end = ihl + be16(udp + 4);
	return dhcp_reply(udp + 8, (end < len ? end : len) - ihl - 8, eth, ethlen, addr);
}

int learn_parse_frame(const uint8_t *pkt, size_t len, uint16_t hwproto, const uint8_t *eth,
		      size_t ethlen, struct dfw_addr *addr)
{
	switch (hwproto) {
	case ETH_P_ARP_:
		return arp(pkt, len, addr);
	case ETH_P_IP_:
		return ipv4(pkt, len, eth, ethlen, addr);
	case ETH_P_IPV6_:
		return nd(pkt, len, addr);
	case 0:
		if (len >= 1 && pkt[0] >> 4 == 4)
			return ipv4(pkt, len, eth, ethlen, addr);
		if (len >= 1 && pkt[0] >> 4 == 6)
			return nd(pkt, len, addr);
		return -1;
	default:
		return LEARN_NONE;
	}
}

int learn_parse(const struct nflog_pkt *p, struct learn_seen *seen)
{
	int r = learn_parse_frame(p->payload, p->len, p->hwproto, p->hwhdr, p->hwhdr_len,
				  &seen->addr);

	if (r <= 0)
		return r;
	seen->to_guest = r == LEARN_TO_GUEST;
	memset(seen->client, 0, sizeof(seen->client));
	memset(seen->server, 0, sizeof(seen->server));
	seen->from = p->mark;
	if (seen->to_guest) { /* dhcp_reply() saw a whole Ethernet header */
		memcpy(seen->client, p->hwhdr, sizeof(seen->client));
		memcpy(seen->server, p->hwhdr + 6, sizeof(seen->server));
	}
	return nflog_port_name(p, seen->to_guest, seen->ifname) ? 1 : -1;
}
