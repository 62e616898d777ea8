/* nfnetlink_log through libmnl: the packets that nftables `log group N`
 * rules copy to userspace, parsed down to what the firewall reasons about
 * (the vNIC id in the mark, the bridge ports, and the packet's 5-tuple).
 * Works in the network namespace of the calling thread.
 *
 * What the kernel gives (seen on 6.18, with br_netfilter): the payload
 * always starts at the network header, also in the bridge family (the
 * Ethernet header comes apart, in NFULA_HWHEADER); NFULA_PACKET_HDR's
 * hw_protocol is the ethertype.  For a bridged packet, INDEV/OUTDEV are the
 * bridge and PHYSINDEV/PHYSOUTDEV its ports, both in the bridge family and
 * in the inet forward hook through br_netfilter; OUTDEV/PHYSOUTDEV only
 * once the output port is known (forward, not prerouting). */
#ifndef DFW_NFLOG_H
#define DFW_NFLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

struct nflog_pkt {
	uint32_t mark;          /* dfw: the source vNIC's id */
	struct dfw_addr src, dst; /* family 0: not an IP packet */
	uint8_t proto;          /* IPPROTO_* */
	bool l4;                /* sport/dport were read (not a later fragment,
				 * not truncated, a protocol with ports or ICMP) */
	uint16_t sport, dport;  /* TCP/UDP/SCTP ports; ICMP: type, code */
	const char *prefix;     /* the rule's log prefix, or "" */
	/* Interface indexes, 0 when the kernel gave none (see above). */
	uint32_t indev, outdev, physindev, physoutdev;
	uint16_t hwproto;       /* ethertype (host order), 0 when not given */
	uint64_t time_us;       /* the kernel's wall-clock time of the packet,
				 * 0 when not given */
	/* Borrowed for the callback only: the packet from its network header
	 * (as much as the copy length allowed), and the link-layer header. */
	const uint8_t *payload;
	size_t len;
	const uint8_t *hwhdr;
	size_t hwhdr_len;
};

struct nflog;

/* Binds to one nflog group, copying DFW_NFLOG_SNAPLEN bytes of each packet.
 * The kernel sends packets in batches: when 100 are queued, or after 1 s.
 * Fails (with the reason) when another process already listens on the
 * group. */
struct nflog *nflog_open(uint16_t group, char *err, size_t errlen);
/* The same, copying copy_len bytes (a rule's own snaplen can only shorten
 * it), and with the batches sent after at most max_delay_ms (in steps of
 * 10 ms; 0: each packet at once).  Seen on 6.18: with the kernel's
 * default, a lone packet waits 1 s for its batch. */
struct nflog *nflog_open_with(uint16_t group, uint32_t copy_len, uint32_t max_delay_ms,
			      char *err, size_t errlen);
void nflog_close(struct nflog *l); /* accepts NULL */
int nflog_fd(const struct nflog *l);

typedef void nflog_fn(void *arg, const struct nflog_pkt *p);

/* Reads what is queued without blocking; fn sees each IPv4/IPv6 packet.
 * Returns the number of packets, or -1 with errno on a socket error.
 * When the socket buffer overflowed, the kernel dropped packets: each
 * overrun counts once in nflog_lost(), and reading goes on. */
int nflog_read(struct nflog *l, nflog_fn *fn, void *arg);
/* The same for every packet, IP or not (ARP, ...): the IP fields are
 * filled in when it is IPv4/IPv6, else src.family is 0. */
int nflog_read_frames(struct nflog *l, nflog_fn *fn, void *arg);
uint64_t nflog_lost(const struct nflog *l);

/* The bridge port by which the packet came in (egress: by which it
 * leaves): the physical device of a bridged packet, else the plain
 * in/out device.  Its name in buf, or NULL when unknown or gone. */
const char *nflog_port_name(const struct nflog_pkt *p, bool egress, char buf[16]);

/* Parses an IPv4/IPv6 packet (network header first) into p; -1 when it is
 * neither or is truncated before the addresses.  Exposed for tests. */
int nflog_parse_ip(const uint8_t *pkt, size_t len, struct nflog_pkt *p);

#endif
