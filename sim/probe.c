/* Real connection attempts between lab VMs: TCP handshakes, UDP echoes,
 * ICMP echoes and raw IP echoes of other protocols (proto/47), many at
 * once, from one event loop.
 *
 * A socket belongs to the network namespace it was created in, so each one
 * is opened after a setns() into the VM's namespace and then used from here:
 * the traffic is exactly what a process inside the VM would send, and there
 * are no helper processes to reap, whatever happens. */
#include "sim/lab.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/icmp6.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *const proto_names[] = {
	[PROBE_TCP] = "tcp", [PROBE_UDP] = "udp", [PROBE_ICMP] = "icmp", [PROBE_IP] = "proto",
};

/* proto/N payloads: the destination answers a request with the reply of the
 * same number.  Both start with "dfw-" so that no protocol handler of the
 * destination's kernel takes them for its own (GRE reads version 6 in
 * them, and drops them silently instead of answering "unreachable"). */
#define IP_REQUEST "dfw-lab probe "
#define IP_REPLY "dfw-lab reply "

/* Protocol numbers proto/N refuses: those with a probe kind of their own,
 * IPv6 extension headers (no upper-layer protocol: the kernel and nft's
 * l4proto look past them), those whose header conntrack checks (a probe's
 * datagram would be "ct state invalid", dropped whatever the policy says),
 * and 255 (IPPROTO_RAW, send-only sockets). */
static bool ip_proto_refused(uint64_t n, const char **why)
{
	switch (n) {
	case IPPROTO_ICMP: *why = "use icmp"; return true;
	case IPPROTO_TCP: *why = "use tcp/PORT"; return true;
	case IPPROTO_UDP: *why = "use udp/PORT"; return true;
	case IPPROTO_ICMPV6: *why = "use icmp -6"; return true;
	case IPPROTO_HOPOPTS: case IPPROTO_ROUTING: case IPPROTO_FRAGMENT: case IPPROTO_AH:
	case IPPROTO_NONE: case IPPROTO_DSTOPTS:
		*why = "an IPv6 extension header, not a protocol"; return true;
	case IPPROTO_SCTP: case IPPROTO_UDPLITE:
		*why = "conntrack checks its header, which a raw probe does not have"; return true;
	case IPPROTO_RAW: *why = "reserved"; return true;
	}
	return false;
}

int probe_port_parse(const char *s, struct probe_port *out, char *err, size_t errlen)
{
	const char *slash = strchr(s, '/');
	size_t len = slash ? (size_t)(slash - s) : strlen(s);
	uint64_t port;
	size_t p;

	for (p = 0; p < ARRAY_SIZE(proto_names); p++)
		if (strlen(proto_names[p]) == len && !strncasecmp(s, proto_names[p], len))
			break;
	if (p == ARRAY_SIZE(proto_names))
		return errf(err, errlen,
			    "'%s': unknown protocol (tcp/PORT, udp/PORT, icmp or proto/NUMBER)", s);
	out->proto = (enum probe_proto)p;
	out->port = 0;
	if (out->proto == PROBE_ICMP) {
		if (slash)
			return errf(err, errlen, "'%s': icmp takes no port", s);
		return 0;
	}
	if (out->proto == PROBE_IP) {
		const char *why;

		if (!slash || parse_u64(slash + 1, 255, &port) < 0 || port == 0)
			return errf(err, errlen, "'%s': proto needs an IP protocol number from 1 "
				    "to 254, e.g. proto/47", s);
		if (ip_proto_refused(port, &why))
			return errf(err, errlen, "'%s': protocol %u: %s", s, (unsigned)port, why);
		out->port = (uint16_t)port;
		return 0;
	}
	if (!slash)
		return errf(err, errlen, "'%s': %s needs a port, e.g. %s/443", s, proto_names[p],
			    proto_names[p]);
	if (parse_u64(slash + 1, 65535, &port) < 0 || port == 0)
		return errf(err, errlen, "'%s': port must be a number from 1 to 65535", s);
	out->port = (uint16_t)port;
	return 0;
}

void probe_port_format(const struct probe_port *p, char *buf, size_t len)
{
	if (p->proto == PROBE_ICMP)
		snprintf(buf, len, "icmp");
	else
		snprintf(buf, len, "%s/%u", proto_names[p->proto], p->port);
}

/* epoll tags: a server socket or an in-flight probe's slot. */
#define TAG_SLOT (1ull << 63)

/* A listening (tcp) or echoing (udp) socket in a destination VM; fd -1 when
 * the port was taken by something else there, which then answers. */
struct server {
	size_t dst;
	struct probe_port port;
	int fd;
};

struct slot {
	size_t probe;
	int fd;           /* -1: slot free */
	uint64_t start, deadline;
	uint16_t id, seq; /* icmp */
};

/* A VM's rtnetlink socket (in its namespace) and eth0's ifindex. */
struct vm_nl {
	int fd;
	int ifindex;
};

struct run {
	struct lab *lab;
	struct probe *pr;
	const struct probe_opts *o;
	int epfd;
	struct server *srv;
	size_t nsrv;
	struct slot *slots;
	size_t inflight;
	/* neighbour entries to forget once a pair is done */
	unsigned *pending;   /* [src * nvms + dst]: probes not finished */
	struct vm_nl *nl;    /* per VM */
};

static socklen_t sockaddr_of(const struct dfw_addr *a, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (a->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, a->a, 4);
		return sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, a->a, 16);
		return sizeof(*sin6);
	}
}

/* A socket created inside VM vm's namespace. */
static int vm_socket(struct run *r, size_t vm, int type, int proto, char *err, size_t errlen)
{
	int nsfd = lab_vm_fd(r->lab, vm, err, errlen), fd;

	if (nsfd < 0 || netns_enter(nsfd, err, errlen) < 0)
		return -1;
	fd = socket(r->o->family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, proto);
	if (fd < 0)
		errf(err, errlen, "VM %s: socket: %s", r->lab->pol->inv.vms[vm].name, strerror(errno));
	netns_leave(NULL, 0);
	return fd;
}

static int watch(struct run *r, int fd, uint32_t events, uint64_t tag, char *err, size_t errlen)
{
	struct epoll_event ev = { .events = events, .data.u64 = tag };

	if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return errf(err, errlen, "epoll_ctl: %s", strerror(errno));
	return 0;
}

static int server_open(struct run *r, struct server *s, size_t idx, char *err, size_t errlen)
{
	const struct vm *vm = &r->lab->pol->inv.vms[s->dst];
	const struct dfw_addr *a = lab_vm_addr(r->lab, s->dst, r->o->family);
	bool tcp = s->port.proto == PROBE_TCP;
	struct sockaddr_storage ss;
	socklen_t sl = sockaddr_of(a, s->port.port, &ss);
	int one = 1;

	if (s->port.proto == PROBE_IP) {
		/* A raw socket sees every datagram of its protocol (besides the
		 * kernel's own handler, if any): no port to take, nothing to bind. */
		s->fd = vm_socket(r, s->dst, SOCK_RAW, s->port.port, err, errlen);
		if (s->fd < 0)
			return -1;
		return watch(r, s->fd, EPOLLIN, idx, err, errlen);
	}
	s->fd = vm_socket(r, s->dst, tcp ? SOCK_STREAM : SOCK_DGRAM, 0, err, errlen);
	if (s->fd < 0)
		return -1;
	/* TCP: a lingering TIME_WAIT of an earlier probe must not stop us.
	 * UDP: no SO_REUSEADDR, so that a service already there keeps the
	 * port (EADDRINUSE below) and answers in our place. */
	if (tcp)
		setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(s->fd, (struct sockaddr *)&ss, sl) < 0) {
		int e = errno;

		close(s->fd);
		s->fd = -1;
		if (e == EADDRINUSE)
			return 0;
		return errf(err, errlen, "VM %s: cannot bind %s/%u: %s", vm->name,
			    proto_names[s->port.proto], s->port.port, strerror(e));
	}
	if (tcp && listen(s->fd, 1024) < 0) {
		if (errno == EADDRINUSE) {
			close(s->fd);
			s->fd = -1;
			return 0;
		}
		return errf(err, errlen, "VM %s: cannot listen on tcp/%u: %s", vm->name,
			    s->port.port, strerror(errno));
	}
	return watch(r, s->fd, EPOLLIN, idx, err, errlen);
}

/* The payload of a datagram read from a raw socket: IPv4 raw sockets see
 * the IP header in front of it, IPv6 ones do not.  NULL when malformed. */
static const char *raw_payload(const uint8_t *pkt, size_t *len, bool v6)
{
	size_t ihl;

	if (v6)
		return (const char *)pkt;
	if (*len < 20 || (ihl = (size_t)(pkt[0] & 0x0f) * 4) < 20 || *len < ihl)
		return NULL;
	*len -= ihl;
	return (const char *)pkt + ihl;
}

/* proto/N: answers a request with the reply of the same number; anything
 * else (replies to this VM's own probes among them) is not ours. */
static void ip_echo(struct run *r, struct server *s, const uint8_t *pkt, size_t n,
		    const struct sockaddr_storage *from, socklen_t fl)
{
	const char *data = raw_payload(pkt, &n, r->o->family == AF_INET6);
	char reply[64];

	if (!data || n <= strlen(IP_REQUEST) || n >= sizeof(reply) ||
	    memcmp(data, IP_REQUEST, strlen(IP_REQUEST)))
		return;
	memcpy(reply, data, n);
	memcpy(reply, IP_REPLY, strlen(IP_REPLY));
	sendto(s->fd, reply, n, 0, (const struct sockaddr *)from, fl);
}

static void server_event(struct run *r, struct server *s)
{
	uint8_t buf[2048];
	struct sockaddr_storage from;
	socklen_t fl;
	ssize_t n;
	int c;

	if (s->port.proto == PROBE_TCP) {
		/* The handshake is the answer: take the connection and drop it. */
		while ((c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
			close(c);
		return;
	}
	for (;;) {
		fl = sizeof(from);
		n = recvfrom(s->fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				break;
			continue; /* an error queued on the socket (raw: ICMP) */
		}
		if (s->port.proto == PROBE_IP)
			ip_echo(r, s, buf, (size_t)n, &from, fl);
		else
			sendto(s->fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
	}
}

static int cmp_server(const void *x, const void *y)
{
	const struct server *a = x, *b = y;

	if (a->dst != b->dst)
		return a->dst < b->dst ? -1 : 1;
	if (a->port.proto != b->port.proto)
		return a->port.proto < b->port.proto ? -1 : 1;
	return (int)a->port.port - (int)b->port.port;
}

/* One server per distinct destination and tcp/udp port, opened up front. */
static int servers_open(struct run *r, size_t n, char *err, size_t errlen)
{
	size_t k = 0;

	r->srv = xcalloc(n ? n : 1, sizeof(*r->srv));
	for (size_t i = 0; i < n; i++)
		if (r->pr[i].port.proto != PROBE_ICMP)
			r->srv[k++] = (struct server){ r->pr[i].dst, r->pr[i].port, -1 };
	qsort(r->srv, k, sizeof(*r->srv), cmp_server);
	for (size_t i = 0; i < k; i++)
		if (r->nsrv == 0 || cmp_server(&r->srv[r->nsrv - 1], &r->srv[i]))
			r->srv[r->nsrv++] = r->srv[i];
	for (size_t i = 0; i < r->nsrv; i++)
		r->srv[i].fd = -1;
	for (size_t i = 0; i < r->nsrv; i++)
		if (server_open(r, &r->srv[i], i, err, errlen) < 0)
			return -1;
	return 0;
}

static int vm_nl_open(struct run *r, size_t vm, char *err, size_t errlen)
{
	struct vm_nl *v = &r->nl[vm];
	int nsfd;

	if (v->fd >= 0)
		return 0;
	nsfd = lab_vm_fd(r->lab, vm, err, errlen);
	if (nsfd < 0 || netns_enter(nsfd, err, errlen) < 0)
		return -1;
	v->fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
	v->ifindex = (int)if_nametoindex("eth0");
	netns_leave(NULL, 0);
	if (v->fd < 0 || v->ifindex == 0)
		return errf(err, errlen, "VM %s: no rtnetlink socket or no eth0: %s",
			    r->lab->pol->inv.vms[vm].name, strerror(errno));
	return 0;
}

/* Deletes vm's neighbour entry for a (no reply awaited: a missing entry
 * is fine).  The kernel's neighbour table is one for all namespaces,
 * with room for 1024 entries (gc_thresh3, not ours to change): a lab
 * whose every pair has met would overflow it, for every namespace on
 * the machine, so each pair's entries go when its probes are done. */
static void neigh_forget(struct run *r, size_t vm, const struct dfw_addr *a)
{
	struct {
		struct nlmsghdr nh;
		struct ndmsg nd;
		struct rtattr rta;
		uint8_t addr[16];
	} req;
	size_t alen = a->family == AF_INET ? 4 : 16;
	char sink[1024];

	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = (uint32_t)(NLMSG_LENGTH(sizeof(req.nd)) + RTA_LENGTH(alen));
	req.nh.nlmsg_type = RTM_DELNEIGH;
	req.nh.nlmsg_flags = NLM_F_REQUEST;
	req.nd.ndm_family = a->family;
	req.nd.ndm_ifindex = r->nl[vm].ifindex;
	req.rta.rta_type = NDA_DST;
	req.rta.rta_len = (unsigned short)RTA_LENGTH(alen);
	memcpy(req.addr, a->a, alen);
	send(r->nl[vm].fd, &req, req.nh.nlmsg_len, 0);
	/* Errors (ENOENT) come back even unasked: drop them. */
	while (recv(r->nl[vm].fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
		;
}

static void finish(struct run *r, size_t s, bool reachable)
{
	struct slot *sl = &r->slots[s];
	struct probe *p = &r->pr[sl->probe];
	size_t nvms = r->lab->pol->inv.nvms;

	p->reachable = reachable;
	p->ms = (unsigned)((now_ns() - sl->start + 500000) / 1000000);
	close(sl->fd);
	sl->fd = -1;
	r->inflight--;
	if (--r->pending[p->src * nvms + p->dst] == 0) {
		neigh_forget(r, p->src, lab_vm_addr(r->lab, p->dst, r->o->family));
		neigh_forget(r, p->dst, lab_vm_addr(r->lab, p->src, r->o->family));
	}
}

static uint16_t inet_csum(const void *data, size_t len)
{
	const uint8_t *b = data;
	uint32_t sum = 0;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(b[i] << 8 | b[i + 1]);
	if (len & 1)
		sum += (uint32_t)(b[len - 1] << 8);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons((uint16_t)~sum);
}

/* An echo request: 8 bytes of header and a recognizable payload. */
static size_t icmp_echo(uint8_t *buf, bool v6, uint16_t id, uint16_t seq)
{
	static const char payload[] = "dfw-lab probe!!";
	size_t len = 8 + sizeof(payload);
	uint16_t v;

	memset(buf, 0, 8);
	buf[0] = v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO;
	v = htons(id);
	memcpy(buf + 4, &v, 2);
	v = htons(seq);
	memcpy(buf + 6, &v, 2);
	memcpy(buf + 8, payload, sizeof(payload));
	if (!v6) { /* the kernel computes ICMPv6 checksums itself */
		v = inet_csum(buf, len);
		memcpy(buf + 2, &v, 2);
	}
	return len;
}

static bool echo_matches(const uint8_t *icmp, size_t len, uint8_t type, uint16_t id, uint16_t seq)
{
	return len >= 8 && icmp[0] == type && icmp[4] == id >> 8 && icmp[5] == (id & 0xff) &&
	       icmp[6] == seq >> 8 && icmp[7] == (seq & 0xff);
}

/* 1: our echo reply, 0: not ours, -1: an "unreachable" about our request
 * (a reject rule answering), so the verdict is in before the timeout. */
static int icmp_verdict(const uint8_t *pkt, size_t len, bool v6, uint16_t id, uint16_t seq)
{
	const uint8_t *icmp = pkt, *inner;
	size_t ihl;

	if (!v6) { /* raw IPv4 sockets see the IP header */
		if (len < 20 || (ihl = (size_t)(pkt[0] & 0x0f) * 4) < 20 || len < ihl)
			return 0;
		icmp = pkt + ihl;
		len -= ihl;
	}
	if (echo_matches(icmp, len, v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY, id, seq))
		return 1;
	if (len < 8 || icmp[0] != (v6 ? ICMP6_DST_UNREACH : ICMP_DEST_UNREACH))
		return 0;
	inner = icmp + 8;
	len -= 8;
	if (v6) {
		if (len < 40 || inner[6] != IPPROTO_ICMPV6)
			return 0;
		return echo_matches(inner + 40, len - 40, ICMP6_ECHO_REQUEST, id, seq) ? -1 : 0;
	}
	if (len < 20 || (ihl = (size_t)(inner[0] & 0x0f) * 4) < 20 || len < ihl ||
	    inner[9] != IPPROTO_ICMP)
		return 0;
	return echo_matches(inner + ihl, len - ihl, ICMP_ECHO, id, seq) ? -1 : 0;
}

static int probe_start(struct run *r, size_t s, size_t i, char *err, size_t errlen)
{
	struct probe *p = &r->pr[i];
	struct slot *sl = &r->slots[s];
	const struct dfw_addr *dst = lab_vm_addr(r->lab, p->dst, r->o->family);
	bool v6 = r->o->family == AF_INET6;
	struct sockaddr_storage ss;
	socklen_t len = sockaddr_of(dst, p->port.proto == PROBE_IP ? 0 : p->port.port, &ss);
	uint32_t events = EPOLLIN;
	uint8_t pkt[64];
	size_t plen;
	int type = SOCK_DGRAM, proto = 0;

	if (p->port.proto == PROBE_TCP) {
		type = SOCK_STREAM;
		events = EPOLLOUT;
	} else if (p->port.proto == PROBE_ICMP) {
		type = SOCK_RAW;
		proto = v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
	} else if (p->port.proto == PROBE_IP) {
		type = SOCK_RAW;
		proto = p->port.port;
	}
	if (vm_nl_open(r, p->src, err, errlen) < 0 || vm_nl_open(r, p->dst, err, errlen) < 0)
		return -1;
	sl->probe = i;
	sl->fd = vm_socket(r, p->src, type, proto, err, errlen);
	if (sl->fd < 0)
		return -1;
	r->inflight++;
	sl->start = now_ns();
	sl->deadline = sl->start + (uint64_t)r->o->timeout_ms * 1000000ull;
	if (p->port.proto == PROBE_ICMP && v6) {
		struct icmp6_filter f;

		ICMP6_FILTER_SETBLOCKALL(&f);
		ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f);
		ICMP6_FILTER_SETPASS(ICMP6_DST_UNREACH, &f);
		setsockopt(sl->fd, IPPROTO_ICMPV6, ICMP6_FILTER, &f, sizeof(f));
	}
	/* Connected sockets: only what comes back from dst is read here
	 * (raw sockets too filter on the connected address). */
	if (connect(sl->fd, (struct sockaddr *)&ss, len) < 0) {
		if (errno != EINPROGRESS) {
			finish(r, s, false);
			return 0;
		}
	} else if (p->port.proto == PROBE_TCP) {
		finish(r, s, true);
		return 0;
	}
	if (p->port.proto != PROBE_TCP) {
		if (p->port.proto == PROBE_UDP || p->port.proto == PROBE_IP) {
			plen = (size_t)snprintf((char *)pkt, sizeof(pkt), IP_REQUEST "%zu", i);
		} else {
			sl->id = (uint16_t)(getpid() ^ (int)(i >> 16));
			sl->seq = (uint16_t)i;
			plen = icmp_echo(pkt, v6, sl->id, sl->seq);
		}
		if (send(sl->fd, pkt, plen, 0) < 0) {
			finish(r, s, false);
			return 0;
		}
	}
	return watch(r, sl->fd, events, TAG_SLOT | s, err, errlen);
}

static void probe_event(struct run *r, size_t s, uint32_t events)
{
	struct slot *sl = &r->slots[s];
	enum probe_proto proto = r->pr[sl->probe].port.proto;
	bool v6 = r->o->family == AF_INET6;
	uint8_t buf[2048];
	char want[64];
	const char *data;
	socklen_t el = sizeof(int);
	size_t len;
	ssize_t n;
	int e = 0, v;

	if (sl->fd < 0)
		return;
	switch (proto) {
	case PROBE_TCP:
		getsockopt(sl->fd, SOL_SOCKET, SO_ERROR, &e, &el);
		if (e == 0 && !(events & (EPOLLERR | EPOLLHUP)))
			finish(r, s, true);
		else
			finish(r, s, false); /* refused (a reject rule) or unreachable */
		return;
	case PROBE_UDP:
		n = recv(sl->fd, buf, sizeof(buf), 0);
		if (n >= 0)
			finish(r, s, true);
		else if (errno != EAGAIN && errno != EINTR)
			finish(r, s, false); /* ICMP unreachable: refused */
		return;
	case PROBE_ICMP:
		while ((n = recv(sl->fd, buf, sizeof(buf), 0)) >= 0) {
			v = icmp_verdict(buf, (size_t)n, v6, sl->id, sl->seq);
			if (v) {
				finish(r, s, v > 0);
				return;
			}
		}
		return;
	case PROBE_IP:
		/* The connected raw socket also reads dst's own requests of
		 * this protocol (a matrix probes both ways): only our reply
		 * counts.  An error is an ICMP unreachable: refused. */
		snprintf(want, sizeof(want), IP_REPLY "%zu", sl->probe);
		while ((n = recv(sl->fd, buf, sizeof(buf), 0)) >= 0) {
			len = (size_t)n;
			data = raw_payload(buf, &len, v6);
			if (data && len == strlen(want) && !memcmp(data, want, len)) {
				finish(r, s, true);
				return;
			}
		}
		if (errno != EAGAIN && errno != EINTR)
			finish(r, s, false);
		return;
	}
}

static void run_free(struct run *r, size_t nslots)
{
	for (size_t i = 0; i < r->nsrv; i++)
		if (r->srv[i].fd >= 0)
			close(r->srv[i].fd);
	for (size_t s = 0; r->slots && s < nslots; s++)
		if (r->slots[s].fd >= 0)
			close(r->slots[s].fd);
	if (r->epfd >= 0)
		close(r->epfd);
	free(r->srv);
	free(r->slots);
	for (size_t v = 0; r->nl && v < r->lab->pol->inv.nvms; v++)
		if (r->nl[v].fd >= 0)
			close(r->nl[v].fd);
	free(r->nl);
	free(r->pending);
}

int probe_run(struct lab *lab, struct probe *pr, size_t n, const struct probe_opts *o,
	      char *err, size_t errlen)
{
	struct run r = { .lab = lab, .pr = pr, .o = o, .epfd = -1 };
	size_t nslots = o->parallel ? o->parallel : 1, next = 0, nvms = lab->pol->inv.nvms;
	struct epoll_event evs[64];
	int ret = -1;

	r.slots = xcalloc(nslots, sizeof(*r.slots));
	r.pending = xcalloc(nvms * nvms + 1, sizeof(*r.pending));
	r.nl = xcalloc(nvms + 1, sizeof(*r.nl));
	for (size_t v = 0; v < nvms; v++)
		r.nl[v].fd = -1;
	for (size_t i = 0; i < n; i++)
		r.pending[pr[i].src * nvms + pr[i].dst]++;
	for (size_t s = 0; s < nslots; s++)
		r.slots[s].fd = -1;
	r.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (r.epfd < 0) {
		errf(err, errlen, "epoll_create1: %s", strerror(errno));
		goto out;
	}
	if (servers_open(&r, n, err, errlen) < 0)
		goto out;
	while (next < n || r.inflight) {
		uint64_t now, first = UINT64_MAX;
		int nev, wait_ms;

		for (size_t s = 0; s < nslots && next < n; s++)
			if (r.slots[s].fd < 0 && probe_start(&r, s, next++, err, errlen) < 0)
				goto out;
		if (!r.inflight)
			continue;
		for (size_t s = 0; s < nslots; s++)
			if (r.slots[s].fd >= 0 && r.slots[s].deadline < first)
				first = r.slots[s].deadline;
		now = now_ns();
		wait_ms = first <= now ? 0 : (int)((first - now + 999999) / 1000000);
		nev = epoll_wait(r.epfd, evs, (int)ARRAY_SIZE(evs), wait_ms);
		if (nev < 0 && errno != EINTR) {
			errf(err, errlen, "epoll_wait: %s", strerror(errno));
			goto out;
		}
		if (lab_interrupted) {
			errf(err, errlen, "interrupted");
			goto out;
		}
		for (int k = 0; k < nev; k++) {
			uint64_t tag = evs[k].data.u64;

			if (tag & TAG_SLOT)
				probe_event(&r, (size_t)(tag & ~TAG_SLOT), evs[k].events);
			else
				server_event(&r, &r.srv[tag]);
		}
		now = now_ns();
		for (size_t s = 0; s < nslots; s++)
			if (r.slots[s].fd >= 0 && r.slots[s].deadline <= now)
				finish(&r, s, false);
	}
	ret = 0;
out:
	run_free(&r, nslots);
	return ret;
}
