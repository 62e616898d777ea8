/* Benchmark reporting: see bench.h. */
#include "tests/bench/bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"

void bench_figure(const char *name, double value, const char *unit)
{
	/* Small ratios (a tag change against a full reload) keep their
	 * digits; no exponent, for tests/bench/run.sh's JSON. */
	printf(value != 0 && value > -0.01 && value < 0.01 ? "%s: %.7f %s\n" : "%s: %.3f %s\n",
	       name, value, unit);
	fflush(stdout);
}

void bench_die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", program_invocation_short_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void bench_note(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return a < b ? -1 : a > b;
}

double bench_quantile(double *samples, size_t n, double q)
{
	size_t i;

	if (!n)
		return 0;
	qsort(samples, n, sizeof(*samples), cmp_double);
	i = (size_t)(q * (double)(n - 1) + 0.5);
	return samples[i < n ? i : n - 1];
}

void bench_latency(const char *name, double *samples, size_t n, const char *unit)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "%s_p50", name);
	bench_figure(buf, bench_quantile(samples, n, 0.50), unit);
	snprintf(buf, sizeof(buf), "%s_p99", name);
	bench_figure(buf, bench_quantile(samples, n, 0.99), unit);
}

static void bench_usage(const char *prog, const char *const *parts, const char *why,
			const char *arg)
{
	const char *slash = strrchr(prog, '/'), *base = slash ? slash + 1 : prog;

	fprintf(stderr, "%s: %s '%s'\nusage: %s [--tiny]%s", base, why, arg, base,
		parts ? " [--only PART]\n  PART: " : "\n");
	for (size_t i = 0; parts && parts[i]; i++)
		fprintf(stderr, "%s%s", parts[i], parts[i + 1] ? ", " : "\n");
	exit(1);
}

bool bench_args(int argc, char **argv, const char *const *parts, const char **only)
{
	bool tiny = false;

	if (only)
		*only = NULL;
	for (int i = 1; i < argc; i++) {
		size_t k = 0;

		if (!strcmp(argv[i], "--tiny")) {
			tiny = true;
			continue;
		}
		if (!parts || strcmp(argv[i], "--only"))
			bench_usage(argv[0], parts, "unknown argument", argv[i]);
		if (++i == argc)
			bench_usage(argv[0], parts, "a part to run must follow", "--only");
		while (parts[k] && strcmp(parts[k], argv[i]))
			k++;
		if (!parts[k])
			bench_usage(argv[0], parts, "no such part", argv[i]);
		*only = parts[k];
	}
	return tiny;
}

long bench_rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

int bench_netns_here(void)
{
	return open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
}

int bench_run(char *const argv[], char *out, size_t len)
{
	int fds[2] = { -1, -1 }, st;
	size_t got = 0;
	pid_t pid;

	if (out && pipe(fds) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(out ? fds[1] : fd, STDOUT_FILENO);
		if (out)
			dup2(fds[1], STDERR_FILENO);
		execv(argv[0], argv);
		_exit(127);
	}
	if (out) {
		close(fds[1]);
		for (ssize_t n; pid > 0 && (n = read(fds[0], out + got, len - 1 - got)) != 0;) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 || (got += (size_t)n) == len - 1)
				break;
		}
		out[got] = '\0';
		close(fds[0]);
	}
	if (pid < 0)
		return -1;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* --- conntrack entries ------------------------------------------------------------ */

#define CT_PER_SEND 100 /* requests per send: their acks fit the socket's buffer */

struct bench_ct {
	struct mnl_socket *nl;
	char buf[CT_PER_SEND * 256];
	size_t len, queued;
	uint32_t seq;
};

static void ct_die(const char *what, int err)
{
	bench_die("%s: %s", what, strerror(err));
}

struct bench_ct *bench_ct_open(void)
{
	struct bench_ct *c = xcalloc(1, sizeof(*c));

	c->nl = mnl_socket_open(NETLINK_NETFILTER);
	if (!c->nl || mnl_socket_bind(c->nl, 0, MNL_SOCKET_AUTOPID) < 0)
		ct_die("netfilter netlink socket", errno);
	c->seq = 1;
	return c;
}

void bench_ct_sync(struct bench_ct *c)
{
	static char rbuf[1 << 16];
	size_t acked = 0;

	if (!c->queued)
		return;
	if (mnl_socket_sendto(c->nl, c->buf, c->len) < 0)
		ct_die("adding conntrack entries", errno);
	while (acked < c->queued) {
		ssize_t n = mnl_socket_recvfrom(c->nl, rbuf, sizeof(rbuf));
		int left = (int)n;

		if (n < 0)
			ct_die("adding conntrack entries", errno);
		for (const struct nlmsghdr *h = (const struct nlmsghdr *)rbuf; mnl_nlmsg_ok(h, left);
		     h = mnl_nlmsg_next(h, &left)) {
			const struct nlmsgerr *e = mnl_nlmsg_get_payload(h);

			if (h->nlmsg_type != NLMSG_ERROR)
				continue;
			if (e->error)
				ct_die("adding a conntrack entry", -e->error);
			acked++;
		}
	}
	c->len = c->queued = 0;
}

static void ct_tuple(struct nlmsghdr *nlh, uint16_t type, const struct dfw_addr *s,
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

void bench_ct_add(struct bench_ct *c, const struct dfw_addr *s, const struct dfw_addr *d,
		  uint16_t sport, uint16_t dport)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(c->buf + c->len);
	struct nfgenmsg *g;

	nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK;
	nlh->nlmsg_seq = c->seq++;
	g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
	g->nfgen_family = s->family;
	g->version = NFNETLINK_V0;
	ct_tuple(nlh, CTA_TUPLE_ORIG, s, d, sport, dport);
	ct_tuple(nlh, CTA_TUPLE_REPLY, d, s, dport, sport);
	mnl_attr_put_u32(nlh, CTA_TIMEOUT, htonl(3600));
	c->len += nlh->nlmsg_len;
	if (++c->queued == CT_PER_SEND)
		bench_ct_sync(c);
}

void bench_ct_fill(struct bench_ct *c, size_t from, size_t n)
{
	struct dfw_addr peer = { .family = AF_INET, .plen = 32, .a = { 100, 127, 0, 1 } };

	for (size_t i = from; i < n; i++) {
		struct dfw_addr s = { .family = AF_INET, .plen = 32 };
		uint32_t v = htonl(0x64400000u + (uint32_t)i + 1); /* 100.64.0.0 + i + 1 */

		memcpy(s.a, &v, 4);
		bench_ct_add(c, &s, &peer, (uint16_t)(1024 + i % 60000), 53);
	}
	bench_ct_sync(c);
}

void bench_ct_close(struct bench_ct *c)
{
	if (!c)
		return;
	mnl_socket_close(c->nl);
	free(c);
}
