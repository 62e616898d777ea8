/* Flow logs (see flowlog.h): nflog group DFW_NFLOG_GROUP to JSON lines. */
#include "dfw/flowlog.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/out.h"
#include "common/util.h"
#include "dfw/layout.h"

#define NS_PER_S 1000000000ull
#define HOST_MAX 255
/* A packet's line is under 400 bytes with the longest host name; a line
 * that does not fit is counted as a write error, never cut. */
#define LINE_MAX_BYTES 2048
/* Lines come this late at most (batches of packets from the kernel). */
#define FLOWLOG_MAX_DELAY_MS 100

/* ---- pure parts ---- */

int flowlog_prefix_parse(const char *prefix, struct flowlog_prefix *out)
{
	static const char head[] = "dfw rule=";
	const char *p = prefix;
	size_t n;

	memset(out, 0, sizeof(*out));
	if (!p || strncmp(p, head, sizeof(head) - 1))
		return -1;
	p += sizeof(head) - 1;
	n = strcspn(p, " ");
	if (n == 7 && !strncmp(p, "default", 7)) {
		strcpy(out->rule, "default");
	} else {
		char id[16];
		uint64_t v;

		if (n == 0 || n >= sizeof(id))
			return -1;
		memcpy(id, p, n);
		id[n] = '\0';
		if (parse_u64(id, UINT32_MAX, &v) < 0)
			return -1;
		snprintf(out->rule, sizeof(out->rule), "%llu", (unsigned long long)v);
	}
	p += n;
	p += strspn(p, " ");
	n = strcspn(p, " ");
	if (n == 3 && !strncmp(p, "out", 3))
		out->out = true;
	else if (!(n == 2 && !strncmp(p, "in", 2)))
		return -1;
	for (p += n; *p; p += n) {
		p += strspn(p, " ");
		n = strcspn(p, " ");
		if (n == 7 && !strncmp(p, "monitor", 7))
			out->monitor = true;
	}
	return 0;
}

const char *flowlog_verdict(const struct flowlog_prefix *pfx, flowlog_verdict_fn *verdict_of,
			    void *arg)
{
	const char *v;

	if (pfx->monitor)
		return "monitor"; /* would have been dropped; let through */
	v = verdict_of ? verdict_of(arg, pfx->rule, pfx->out) : NULL;
	return v ? v : "unknown";
}

void flowlog_time(uint64_t ms, char buf[32])
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	if (!gmtime_r(&s, &tm) || !(n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm))) {
		strcpy(buf, "1970-01-01T00:00:00.000Z");
		return;
	}
	snprintf(buf + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}

static const char *proto_name(uint8_t proto)
{
	switch (proto) {
	case IPPROTO_TCP: return "tcp";
	case IPPROTO_UDP: return "udp";
	case IPPROTO_SCTP: return "sctp";
	case IPPROTO_ICMP: return "icmp";
	case IPPROTO_ICMPV6: return "icmpv6";
	default: return NULL;
	}
}

static void head(struct out *o, FILE *f, const char *host, uint64_t ms)
{
	char t[32];

	flowlog_time(ms, t);
	out_init(o, f, true);
	out_obj_start(o, NULL);
	out_str(o, "time", t);
	out_str(o, "host", host);
}

void flowlog_format(FILE *f, const struct nflog_pkt *p, const struct flowlog_prefix *pfx,
		    const char *host, const char *vnic, const char *verdict, uint64_t ms)
{
	const char *name = proto_name(p->proto);
	char buf[64];
	struct out o;

	head(&o, f, host, ms);
	if (vnic)
		out_str(&o, "vnic", vnic);
	if (!strcmp(pfx->rule, "default"))
		out_str(&o, "rule", "default");
	else
		out_u64(&o, "rule", strtoull(pfx->rule, NULL, 10)); /* digits: parsed */
	out_str(&o, "direction", pfx->out ? "out" : "in");
	out_str(&o, "verdict", verdict);
	if (name)
		out_str(&o, "proto", name);
	else
		out_u64(&o, "proto", p->proto);
	addr_format(&p->src, buf, sizeof(buf));
	out_str(&o, "src", buf);
	addr_format(&p->dst, buf, sizeof(buf));
	out_str(&o, "dst", buf);
	if (p->l4) {
		switch (p->proto) {
		case IPPROTO_TCP: case IPPROTO_UDP: case IPPROTO_SCTP:
			out_u64(&o, "sport", p->sport);
			out_u64(&o, "dport", p->dport);
			break;
		case IPPROTO_ICMP: case IPPROTO_ICMPV6:
			out_u64(&o, "type", p->sport);
			out_u64(&o, "code", p->dport);
			break;
		default:
			break;
		}
	}
	out_obj_end(&o);
	out_finish(&o);
}

void flowlog_format_count(FILE *f, const char *host, const char *key, uint64_t n, uint64_t ms)
{
	struct out o;

	head(&o, f, host, ms);
	out_u64(&o, key, n);
	out_obj_end(&o);
	out_finish(&o);
}

void flowlog_limit_init(struct flowlog_limit *l, uint32_t rate, uint64_t now_ns)
{
	memset(l, 0, sizeof(*l));
	l->rate = rate < 1 ? 1 : rate > FLOWLOG_RATE_MAX ? FLOWLOG_RATE_MAX : rate;
	l->credit = l->rate * NS_PER_S;
	l->refilled_ns = now_ns;
}

/* rate lines a second is rate credit a ns; the bucket holds rate lines, so
 * a second refills it whatever it held (and nothing overflows: at most
 * 1e6 * 1e9). */
static void refill(struct flowlog_limit *l, uint64_t now_ns)
{
	uint64_t dt;

	if (now_ns <= l->refilled_ns)
		return;
	dt = now_ns - l->refilled_ns;
	l->refilled_ns = now_ns;
	if (dt >= NS_PER_S)
		l->credit = l->rate * NS_PER_S;
	else
		l->credit += dt * l->rate;
	if (l->credit > l->rate * NS_PER_S)
		l->credit = l->rate * NS_PER_S;
}

bool flowlog_limit_take(struct flowlog_limit *l, uint64_t now_ns)
{
	refill(l, now_ns);
	if (l->credit >= NS_PER_S) {
		l->credit -= NS_PER_S;
		return true;
	}
	l->suppressed++;
	return false;
}

uint64_t flowlog_limit_due(struct flowlog_limit *l, uint64_t now_ns)
{
	uint64_t n = l->suppressed;

	refill(l, now_ns);
	if (!n || l->credit < NS_PER_S)
		return 0;
	if (l->reported && now_ns - l->reported_ns < NS_PER_S)
		return 0;
	l->suppressed = 0;
	l->reported = true;
	l->reported_ns = now_ns;
	return n;
}

/* ---- the socket and the file ---- */

struct flowlog {
	struct nflog *nl;
	char *path, *host;
	int fd;
	struct flowlog_limit lim;
	flowlog_verdict_fn *verdict_of;
	void *verdict_arg;
	struct flowlog_stats st;
	uint64_t overruns_reported;
	uint64_t overruns_ns;
	char line[LINE_MAX_BYTES];
};

static int open_file(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);

	if (fd < 0)
		snprintf(err, errlen, "flow log %s: %s", path, strerror(errno));
	return fd;
}

static uint64_t wall_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct flowlog *flowlog_open(const struct flowlog_opts *o, char *err, size_t errlen)
{
	struct flowlog *fl;

	if (o->rate < 1 || o->rate > FLOWLOG_RATE_MAX) {
		snprintf(err, errlen, "flow log rate %u: lines a second, 1 to %u", o->rate,
			 FLOWLOG_RATE_MAX);
		return NULL;
	}
	if (strlen(o->host) > HOST_MAX) {
		snprintf(err, errlen, "flow log: host name longer than %d bytes", HOST_MAX);
		return NULL;
	}
	fl = xcalloc(1, sizeof(*fl));
	fl->path = xstrdup(o->path);
	fl->host = xstrdup(o->host);
	fl->verdict_of = o->verdict_of;
	fl->verdict_arg = o->verdict_arg;
	flowlog_limit_init(&fl->lim, o->rate, now_ns());
	fl->fd = open_file(o->path, err, errlen);
	if (fl->fd < 0)
		goto fail;
	fl->nl = nflog_open_with(DFW_NFLOG_GROUP, DFW_NFLOG_SNAPLEN, FLOWLOG_MAX_DELAY_MS, err, errlen);
	if (!fl->nl)
		goto fail;
	return fl;
fail:
	flowlog_close(fl);
	return NULL;
}

void flowlog_close(struct flowlog *fl)
{
	if (!fl)
		return;
	nflog_close(fl->nl);
	if (fl->fd >= 0)
		close(fl->fd);
	free(fl->path);
	free(fl->host);
	free(fl);
}

int flowlog_fd(const struct flowlog *fl)
{
	return nflog_fd(fl->nl);
}

int flowlog_reopen(struct flowlog *fl, char *err, size_t errlen)
{
	int fd = open_file(fl->path, err, errlen);

	if (fd < 0)
		return -1;
	close(fl->fd);
	fl->fd = fd;
	return 0;
}

void flowlog_stats(const struct flowlog *fl, struct flowlog_stats *out)
{
	*out = fl->st;
	out->overruns = nflog_lost(fl->nl);
}

/* A line is formatted in fl->line, then goes out in one write(2): on an
 * O_APPEND file it lands whole, after whatever others appended. */
static FILE *line_start(struct flowlog *fl)
{
	FILE *f = fmemopen(fl->line, sizeof(fl->line), "w");

	if (!f) {
		fl->st.write_errors++;
		fl->st.last_errno = errno;
	}
	return f;
}

static bool line_end(struct flowlog *fl, FILE *f)
{
	long len = ftell(f);
	ssize_t n;

	fclose(f);
	if (len <= 0 || (size_t)len >= sizeof(fl->line) || fl->line[len - 1] != '\n') {
		fl->st.write_errors++;
		fl->st.last_errno = EMSGSIZE;
		return false;
	}
	n = write(fl->fd, fl->line, (size_t)len);
	if (n != (ssize_t)len) {
		fl->st.write_errors++;
		fl->st.last_errno = n < 0 ? errno : EIO;
		return false;
	}
	return true;
}

static void count_line(struct flowlog *fl, const char *key, uint64_t n)
{
	FILE *f = line_start(fl);

	if (!f)
		return;
	flowlog_format_count(f, fl->host, key, n, wall_now_ms());
	line_end(fl, f);
}

/* The count lines that are due: suppressed lines (see flowlog_limit_due),
 * and socket overruns at most once a second. */
static void counts_due(struct flowlog *fl, uint64_t now)
{
	uint64_t n = flowlog_limit_due(&fl->lim, now), lost = nflog_lost(fl->nl);

	if (n)
		count_line(fl, "suppressed", n);
	if (lost > fl->overruns_reported &&
	    (!fl->overruns_ns || now - fl->overruns_ns >= NS_PER_S)) {
		/* Each overrun lost at least one packet; how many, the kernel
		 * does not say. */
		count_line(fl, "overruns", lost - fl->overruns_reported);
		fl->overruns_reported = lost;
		fl->overruns_ns = now;
	}
}

static void on_packet(void *arg, const struct nflog_pkt *p)
{
	struct flowlog *fl = arg;
	struct flowlog_prefix pfx;
	uint64_t now = now_ns();
	char ifname[16];
	const char *vnic;
	FILE *f;

	fl->st.packets++;
	if (flowlog_prefix_parse(p->prefix, &pfx) < 0) {
		fl->st.foreign++; /* another rule's `log group 0` */
		return;
	}
	counts_due(fl, now);
	if (!flowlog_limit_take(&fl->lim, now)) {
		fl->st.suppressed++;
		return;
	}
	/* out: leaving the source vNIC, i.e. the port it came in by; in:
	 * entering the destination vNIC, the port it leaves by. */
	vnic = nflog_port_name(p, !pfx.out, ifname);
	f = line_start(fl);
	if (!f)
		return;
	flowlog_format(f, p, &pfx, fl->host, vnic, flowlog_verdict(&pfx, fl->verdict_of, fl->verdict_arg),
		       p->time_us ? p->time_us / 1000 : wall_now_ms());
	if (line_end(fl, f))
		fl->st.lines++;
}

int flowlog_read(struct flowlog *fl)
{
	int n = nflog_read(fl->nl, on_packet, fl), e = errno;

	counts_due(fl, now_ns());
	errno = e;
	return n;
}

void flowlog_tick(struct flowlog *fl)
{
	counts_due(fl, now_ns());
}
