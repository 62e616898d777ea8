/* nfnetlink_log: bind a group, copy packets, parse them (see nflog.h). */
#include "dfw/nflog.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dfw/layout.h"

#define NFLOG_RCVBUF (4 << 20)
#define NFLOG_BUF_SIZE 65536
#define NFLOG_KERNEL_DELAY_MS 1000 /* NFULNL_TIMEOUT_DEFAULT */

struct nflog {
	struct mnl_socket *nl;
	uint16_t group;
	uint32_t seq;
	uint64_t lost;
	char *buf;
};

/* One NFULNL_MSG_CONFIG request with one attribute, acknowledged. */
static int config(struct nflog *l, uint8_t family, uint16_t attr, const void *data,
		  size_t len)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct nfgenmsg *g;
	ssize_t n;

	nlh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	nlh->nlmsg_seq = ++l->seq;
	g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
	g->nfgen_family = family;
	g->version = NFNETLINK_V0;
	g->res_id = htons(l->group);
	mnl_attr_put(nlh, attr, len, data);
	if (mnl_socket_sendto(l->nl, nlh, nlh->nlmsg_len) < 0)
		return -1;
	n = mnl_socket_recvfrom(l->nl, buf, sizeof(buf));
	if (n < 0)
		return -1;
	return mnl_cb_run(buf, (size_t)n, l->seq, mnl_socket_get_portid(l->nl), NULL, NULL) < 0
		? -1 : 0;
}

struct nflog *nflog_open(uint16_t group, char *err, size_t errlen)
{
	return nflog_open_with(group, DFW_NFLOG_SNAPLEN, NFLOG_KERNEL_DELAY_MS, err, errlen);
}

struct nflog *nflog_open_with(uint16_t group, uint32_t copy_len, uint32_t max_delay_ms,
			      char *err, size_t errlen)
{
	struct nflog *l = xcalloc(1, sizeof(*l));
	struct nfulnl_msg_config_cmd bind = { NFULNL_CFG_CMD_BIND };
	struct nfulnl_msg_config_mode mode = { htonl(copy_len), NFULNL_COPY_PACKET, 0 };
	uint32_t qthresh = htonl(1), timeout = htonl((max_delay_ms + 9) / 10);
	int rcvbuf = NFLOG_RCVBUF;

	l->group = group;
	l->buf = xmalloc(NFLOG_BUF_SIZE);
	l->nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
	if (!l->nl || mnl_socket_bind(l->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		snprintf(err, errlen, "nflog socket: %s", strerror(errno));
		goto fail;
	}
	if (config(l, AF_UNSPEC, NFULA_CFG_CMD, &bind, sizeof(bind)) < 0) {
		snprintf(err, errlen, "binding nflog group %u: %s%s", group, strerror(errno),
			 errno == EBUSY ? " (another process listens on it)" : "");
		goto fail;
	}
	if (config(l, AF_UNSPEC, NFULA_CFG_MODE, &mode, sizeof(mode)) < 0) {
		snprintf(err, errlen, "nflog group %u copy mode: %s", group, strerror(errno));
		goto fail;
	}
	/* A batch goes when it holds the queue threshold's packets (the
	 * kernel's default: 100), or when its timer runs out. */
	if ((max_delay_ms == 0 &&
	     config(l, AF_UNSPEC, NFULA_CFG_QTHRESH, &qthresh, sizeof(qthresh)) < 0) ||
	    (max_delay_ms && max_delay_ms != NFLOG_KERNEL_DELAY_MS &&
	     config(l, AF_UNSPEC, NFULA_CFG_TIMEOUT, &timeout, sizeof(timeout)) < 0)) {
		snprintf(err, errlen, "nflog group %u batching: %s", group, strerror(errno));
		goto fail;
	}
	setsockopt(mnl_socket_get_fd(l->nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
	return l;
fail:
	nflog_close(l);
	return NULL;
}

void nflog_close(struct nflog *l)
{
	if (!l)
		return;
	if (l->nl)
		mnl_socket_close(l->nl); /* the kernel drops the binding with it */
	free(l->buf);
	free(l);
}

int nflog_fd(const struct nflog *l)
{
	return mnl_socket_get_fd(l->nl);
}

/* Overruns: each ENOBUFS says the kernel dropped at least one packet. */
uint64_t nflog_lost(const struct nflog *l)
{
	return l->lost;
}

/* Source then destination address, adjacent in both IP headers. */
static void set_addrs(struct nflog_pkt *p, uint8_t family, const uint8_t *addrs, uint8_t proto)
{
	size_t alen = family == AF_INET ? 4 : 16;

	p->src.family = p->dst.family = family;
	p->src.plen = p->dst.plen = (uint8_t)(alen * 8);
	memcpy(p->src.a, addrs, alen);
	memcpy(p->dst.a, addrs + alen, alen);
	p->proto = proto;
}

int nflog_parse_ip(const uint8_t *pkt, size_t len, struct nflog_pkt *p)
{
	size_t l4;

	memset(p, 0, sizeof(*p));
	p->prefix = "";
	if (len < 1)
		return -1;
	if (pkt[0] >> 4 == 4) {
		size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
		uint16_t frag;

		if (len < 20 || ihl < 20)
			return -1;
		set_addrs(p, AF_INET, pkt + 12, pkt[9]);
		frag = (uint16_t)(pkt[6] << 8 | pkt[7]);
		if (frag & 0x1fff) /* a later fragment: no ports */
			return 0;
		l4 = ihl;
	} else if (pkt[0] >> 4 == 6) {
		if (len < 40)
			return -1;
		set_addrs(p, AF_INET6, pkt + 8, pkt[6]);
		l4 = 40; /* extension headers are not walked: their ports stay 0 */
	} else {
		return -1;
	}
	if (len < l4 + 4)
		return 0;
	switch (p->proto) {
	case IPPROTO_TCP: case IPPROTO_UDP: case IPPROTO_SCTP: case IPPROTO_UDPLITE:
		p->sport = (uint16_t)(pkt[l4] << 8 | pkt[l4 + 1]);
		p->dport = (uint16_t)(pkt[l4 + 2] << 8 | pkt[l4 + 3]);
		p->l4 = true;
		break;
	case IPPROTO_ICMP: case IPPROTO_ICMPV6:
		p->sport = pkt[l4];
		p->dport = pkt[l4 + 1];
		p->l4 = true;
		break;
	default:
		break;
	}
	return 0;
}

const char *nflog_port_name(const struct nflog_pkt *p, bool egress, char buf[16])
{
	uint32_t ifindex = egress ? (p->physoutdev ? p->physoutdev : p->outdev)
				  : (p->physindev ? p->physindev : p->indev);

	return ifindex ? if_indextoname(ifindex, buf) : NULL;
}

struct read_ctx {
	nflog_fn *fn;
	void *arg;
	int n;
	bool frames;   /* non-IP packets too */
};

static int attr_cb(const struct nlattr *a, void *data)
{
	const struct nlattr **tb = data;
	int type = mnl_attr_get_type(a);

	if (mnl_attr_type_valid(a, NFULA_MAX) > 0)
		tb[type] = a;
	return MNL_CB_OK;
}

static uint32_t attr_u32(const struct nlattr *a)
{
	return a && mnl_attr_get_payload_len(a) == 4 ? ntohl(mnl_attr_get_u32(a)) : 0;
}

static int packet_cb(const struct nlmsghdr *nlh, void *data)
{
	const struct nlattr *tb[NFULA_MAX + 1] = { 0 };
	struct read_ctx *c = data;
	struct nflog_pkt p;
	const uint8_t *payload;
	size_t len;
	uint16_t hwproto = 0;
	bool ip;

	if ((nlh->nlmsg_type & 0xff) != NFULNL_MSG_PACKET)
		return MNL_CB_OK;
	mnl_attr_parse(nlh, sizeof(struct nfgenmsg), attr_cb, tb);
	if (!tb[NFULA_PAYLOAD])
		return MNL_CB_OK;
	payload = mnl_attr_get_payload(tb[NFULA_PAYLOAD]);
	len = mnl_attr_get_payload_len(tb[NFULA_PAYLOAD]);
	if (tb[NFULA_PACKET_HDR] &&
	    mnl_attr_get_payload_len(tb[NFULA_PACKET_HDR]) >= sizeof(struct nfulnl_msg_packet_hdr)) {
		const struct nfulnl_msg_packet_hdr *h = mnl_attr_get_payload(tb[NFULA_PACKET_HDR]);

		hwproto = ntohs(h->hw_protocol);
	}
	/* An ARP payload may well start with a nibble of 4 or 6: trust the
	 * ethertype when there is one. */
	ip = (hwproto == 0 || hwproto == 0x0800 || hwproto == 0x86dd) &&
	     nflog_parse_ip(payload, len, &p) == 0;
	if (!ip) {
		if (!c->frames)
			return MNL_CB_OK;
		memset(&p, 0, sizeof(p));
		p.prefix = "";
	}
	p.mark = attr_u32(tb[NFULA_MARK]);
	if (tb[NFULA_PREFIX])
		p.prefix = mnl_attr_get_str(tb[NFULA_PREFIX]);
	p.indev = attr_u32(tb[NFULA_IFINDEX_INDEV]);
	p.outdev = attr_u32(tb[NFULA_IFINDEX_OUTDEV]);
	p.physindev = attr_u32(tb[NFULA_IFINDEX_PHYSINDEV]);
	p.physoutdev = attr_u32(tb[NFULA_IFINDEX_PHYSOUTDEV]);
	p.hwproto = hwproto;
	if (tb[NFULA_TIMESTAMP] &&
	    mnl_attr_get_payload_len(tb[NFULA_TIMESTAMP]) >= sizeof(struct nfulnl_msg_packet_timestamp)) {
		struct nfulnl_msg_packet_timestamp ts;

		memcpy(&ts, mnl_attr_get_payload(tb[NFULA_TIMESTAMP]), sizeof(ts));
		p.time_us = be64toh(ts.sec) * 1000000u + be64toh(ts.usec);
	}
	p.payload = payload;
	p.len = len;
	if (tb[NFULA_HWHEADER]) {
		p.hwhdr = mnl_attr_get_payload(tb[NFULA_HWHEADER]);
		p.hwhdr_len = mnl_attr_get_payload_len(tb[NFULA_HWHEADER]);
	}
	c->n++;
	c->fn(c->arg, &p);
	return MNL_CB_OK;
}

static int read_all(struct nflog *l, bool frames, nflog_fn *fn, void *arg)
{
	struct read_ctx c = { fn, arg, 0, frames };

	for (;;) {
		ssize_t n = recv(mnl_socket_get_fd(l->nl), l->buf, NFLOG_BUF_SIZE, MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				break;
			if (errno == ENOBUFS) { /* the kernel dropped some: go on */
				l->lost++;
				continue;
			}
			return -1;
		}
		mnl_cb_run(l->buf, (size_t)n, 0, 0, packet_cb, &c);
	}
	return c.n;
}

int nflog_read(struct nflog *l, nflog_fn *fn, void *arg)
{
	return read_all(l, false, fn, arg);
}

int nflog_read_frames(struct nflog *l, nflog_fn *fn, void *arg)
{
	return read_all(l, true, fn, arg);
}
