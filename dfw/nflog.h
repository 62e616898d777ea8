/* nfnetlink_log through libmnl: the packets that nftables `log group N`
 * rules copy to userspace, parsed down to what the firewall reasons about
 * (the vNIC id in the mark, and the packet's 5-tuple).  Works in the
 * network namespace of the calling thread. */
#ifndef DFW_NFLOG_H
#define DFW_NFLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

struct nflog_pkt {
	uint32_t mark;          /* dfw: the source vNIC's id */
	struct dfw_addr src, dst;
	uint8_t proto;          /* IPPROTO_* */
	uint16_t sport, dport;  /* TCP/UDP/SCTP ports; ICMP: type, code */
	const char *prefix;     /* the rule's log prefix, or "" */
};

struct nflog;

/* Binds to one nflog group.  Fails (with the reason) when another process
 * already listens on it. */
struct nflog *nflog_open(uint16_t group, char *err, size_t errlen);
void nflog_close(struct nflog *l); /* accepts NULL */
int nflog_fd(const struct nflog *l);

typedef void nflog_fn(void *arg, const struct nflog_pkt *p);

/* Reads what is queued without blocking; fn sees each IPv4/IPv6 packet.
 * Returns the number of packets, or -1 with errno on a socket error.
 * When the socket buffer overflowed, the kernel dropped packets: each
 * overrun counts once in nflog_lost(), and reading goes on. */
int nflog_read(struct nflog *l, nflog_fn *fn, void *arg);
uint64_t nflog_lost(const struct nflog *l);

/* Parses an IPv4/IPv6 packet (network header first) into p; -1 when it is
 * neither or is truncated before the addresses.  Exposed for tests. */
int nflog_parse_ip(const uint8_t *pkt, size_t len, struct nflog_pkt *p);

#endif
