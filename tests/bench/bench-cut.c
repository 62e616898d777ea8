/* Cutting a quarantined VM's connections (backend_ct_flush) against the
 * size of the host's conntrack table.
 *
 * In a network namespace of its own, the table is filled through
 * ctnetlink with UDP entries of other addresses (1k, 10k, then 100k), and
 * before each cut with 40 entries of one dual-stack VM: 10 with its IPv4
 * address as the original source, 10 as the original destination, and the
 * same for IPv6.  Each round cuts them the three ways (the order turning
 * round by round): one whole-table dump read here (the baseline), two
 * dumps per address filtered in the kernel, and the way dfwd picks
 * (AUTO).  Every cut must delete exactly the VM's 40 entries and leave the
 * others: the program exits 1 otherwise.
 *
 * --tiny: 2k entries, 3 rounds (the `make check` run). */
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "dfw/backend.h"
#include "tests/bench/bench.h"

#define PER_SIDE 10 /* entries per address and side */
#define VICTIMS (4 * PER_SIDE)
#define PER_SEND 100 /* requests per send: their acks fit the socket's buffer */

static const char *const hows[] = { "whole", "filtered", "auto" };
static const enum backend_cut_how how_of[] = { BACKEND_CUT_WHOLE, BACKEND_CUT_FILTERED,
					       BACKEND_CUT_AUTO };

struct filler {
	struct mnl_socket *nl;
	char buf[PER_SEND * 256];
	size_t len, queued;
	uint32_t seq;
};

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("bench-cut: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* Sends the queued requests and reads one acknowledgement each. */
static void flush_queue(struct filler *f)
{
	static char rbuf[1 << 16];
	size_t acked = 0;

	if (!f->queued)
		return;
	if (mnl_socket_sendto(f->nl, f->buf, f->len) < 0)
		die("adding conntrack entries: %s", strerror(errno));
	while (acked < f->queued) {
		ssize_t n = mnl_socket_recvfrom(f->nl, rbuf, sizeof(rbuf));
		int left = (int)n;

		if (n < 0)
			die("adding conntrack entries: %s", strerror(errno));
		for (const struct nlmsghdr *h = (const struct nlmsghdr *)rbuf; mnl_nlmsg_ok(h, left);
		     h = mnl_nlmsg_next(h, &left)) {
			const struct nlmsgerr *e = mnl_nlmsg_get_payload(h);

			if (h->nlmsg_type != NLMSG_ERROR)
				continue;
			if (e->error)
				die("adding a conntrack entry: %s", strerror(-e->error));
			acked++;
		}
	}
	f->len = f->queued = 0;
}

static void put_tuple(struct nlmsghdr *nlh, uint16_t type, const struct dfw_addr *s,
		      const struct dfw_addr *d, uint16_t sport, uint16_t dport)
{
	bool v4 = s->family == AF_INET;
	struct nlattr *t = mnl_attr_nest_start(nlh, type), *n;

	n = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
	mnl_attr_put(nlh, v4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, v4 ? 4 : 16, s->a);
	mnl_attr_put(nlh, v4 ? CTA_IP_V4_DST : CTA_IP_V6_DST, v4 ? 4 : 16, d->a);
	mnl_attr_nest_end(nlh, n);
	n = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
	mnl_attr_put_u8(nlh, CTA_PROTO_NUM, IPPROTO_UDP);
	mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(sport));
	mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(dport));
	mnl_attr_nest_end(nlh, n);
	mnl_attr_nest_end(nlh, t);
}

/* Queues one UDP entry s:sport -> d:dport (and its reply). */
static void add_entry(struct filler *f, const struct dfw_addr *s, const struct dfw_addr *d,
		      uint16_t sport, uint16_t dport)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(f->buf + f->len);
	struct nfgenmsg *g;

	nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
	nlh->nlmsg_seq = f->seq++;
	g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
	g->nfgen_family = s->family;
	g->version = NFNETLINK_V0;
	put_tuple(nlh, CTA_TUPLE_ORIG, s, d, sport, dport);
	put_tuple(nlh, CTA_TUPLE_REPLY, d, s, dport, sport);
	mnl_attr_put_u32(nlh, CTA_TIMEOUT, htonl(3600));
	f->len += nlh->nlmsg_len;
	if (++f->queued == PER_SEND)
		flush_queue(f);
}

static struct dfw_addr addr(const char *text)
{
	struct dfw_addr a;
	const char *why = NULL;

	if (addr_parse(text, &a, &why) < 0)
		die("%s: %s", text, why);
	return a;
}

/* Other addresses' entries, from the table's current size up to n. */
static void fill_to(struct filler *f, size_t from, size_t n)
{
	const struct dfw_addr peer = addr("11.0.0.1");

	for (size_t i = from; i < n; i++) {
		struct dfw_addr s = { .family = AF_INET, .plen = 32 };
		uint32_t v = htonl(0x0a000000u + (uint32_t)i + 1);

		memcpy(s.a, &v, 4);
		add_entry(f, &s, &peer, (uint16_t)(1024 + i % 60000), 53);
	}
	flush_queue(f);
}

/* The VM's entries: PER_SIDE each way for each of its addresses. */
static void add_victims(struct filler *f, const struct dfw_addr *vm, const struct dfw_addr *peer)
{
	for (int a = 0; a < 2; a++)
		for (uint16_t k = 0; k < PER_SIDE; k++) {
			add_entry(f, &vm[a], &peer[a], (uint16_t)(2000 + k), 443);
			add_entry(f, &peer[a], &vm[a], (uint16_t)(3000 + k), 3389);
		}
	flush_queue(f);
}

static long table_size(void)
{
	FILE *fp = fopen("/proc/sys/net/netfilter/nf_conntrack_count", "r");
	long n = -1;

	if (!fp)
		die("/proc/sys/net/netfilter/nf_conntrack_count: %s", strerror(errno));
	if (fscanf(fp, "%ld", &n) != 1)
		n = -1;
	fclose(fp);
	return n;
}

int main(int argc, char **argv)
{
	static const size_t full_scales[] = { 1000, 10000, 100000 };
	static const size_t tiny_scales[] = { 2000 };
	bool tiny = bench_args(argc, argv, NULL, NULL);
	const size_t *scales = tiny ? tiny_scales : full_scales;
	size_t nscales = tiny ? ARRAY_SIZE(tiny_scales) : ARRAY_SIZE(full_scales);
	size_t rounds = tiny ? 3 : 15, have = 0;
	const struct dfw_addr vm[2] = { addr("10.9.9.9"), addr("fd00:9::9") };
	const struct dfw_addr peer[2] = { addr("11.0.0.2"), addr("fd00:11::2") };
	struct filler f = { .seq = 1 };
	struct backend *be;
	char err[256];
	double *ms = xcalloc(3 * rounds, sizeof(*ms));

	if (unshare(CLONE_NEWNET) < 0)
		die("unshare(CLONE_NEWNET): %s (needs root)", strerror(errno));
	f.nl = mnl_socket_open(NETLINK_NETFILTER);
	if (!f.nl || mnl_socket_bind(f.nl, 0, MNL_SOCKET_AUTOPID) < 0)
		die("netfilter netlink socket: %s", strerror(errno));
	if (!(be = backend_open("dfwcut", err, sizeof(err))))
		die("%s", err);
	for (size_t s = 0; s < nscales; s++) {
		size_t n = scales[s];
		double p50[3];
		const char *auto_went = "?";

		fill_to(&f, have, n);
		have = n;
		for (size_t r = 0; r < rounds; r++)
			for (size_t k = 0; k < 3; k++) {
				size_t h = (k + r) % 3;
				struct backend_cut cut;
				uint64_t t0;
				char how[96];

				add_victims(&f, vm, peer);
				t0 = now_ns();
				if (backend_ct_flush(be, vm, 2, how_of[h], &cut, err, sizeof(err)) < 0)
					die("%s cut at %zu entries: %s", hows[h], n, err);
				ms[h * rounds + r] = (double)(now_ns() - t0) / 1e6;
				if (cut.deleted != VICTIMS || table_size() != (long)n)
					die("%s cut at %zu entries deleted %zu (want %d) and left %ld (want %zu)",
					    hows[h], n, cut.deleted, VICTIMS, table_size(), n);
				if (h == 2)
					auto_went = cut.how == BACKEND_CUT_WHOLE ? "whole" : "filtered";
				if (!r && !k)
					bench_note("%zu entries: %s", n, backend_cut_str(&cut, how, sizeof(how)));
			}
		for (size_t h = 0; h < 3; h++) {
			char name[64];

			snprintf(name, sizeof(name), "cut_ms_%zu_%s", n, hows[h]);
			p50[h] = bench_quantile(ms + h * rounds, rounds, 0.5);
			bench_latency(name, ms + h * rounds, rounds, "ms");
		}
		bench_note("at %zu entries AUTO chose the %s way", n, auto_went);
		{
			char name[64];

			snprintf(name, sizeof(name), "cut_auto_vs_whole_%zu", n);
			bench_figure(name, p50[2] / p50[0], "ratio");
		}
	}
	backend_close(be);
	mnl_socket_close(f.nl);
	free(ms);
	return 0;
}
