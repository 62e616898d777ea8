/* Shared helpers: diagnostics, string vectors, strict parsing, addresses. */
#include "common/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		abort();
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		abort();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		abort();
	return p;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		abort();
	return p;
}

char *xvasprintf(const char *fmt, va_list ap)
{
	char *p;

	if (vasprintf(&p, fmt, ap) < 0)
		abort();
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	p = xvasprintf(fmt, ap);
	va_end(ap);
	return p;
}

void grow(void **v, size_t *cap, size_t need, size_t sz)
{
	size_t c = *cap;

	if (need <= c)
		return;
	while (c < need)
		c = c ? c * 2 : 8;
	*v = xrealloc(*v, c * sz);
	*cap = c;
}

void diag_add(struct diag *d, const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	grow((void **)&d->msgs, &d->cap, d->n + 1, sizeof(*d->msgs));
	if (file && line > 0)
		d->msgs[d->n++] = xasprintf("%s:%d: %s", file, line, msg);
	else if (file)
		d->msgs[d->n++] = xasprintf("%s: %s", file, msg);
	else
		d->msgs[d->n++] = xstrdup(msg);
}

void diag_free(struct diag *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n; i++)
		free(d->msgs[i]);
	free(d->msgs);
	d->msgs = NULL;
	d->n = d->cap = 0;
}

void diag_join(const struct diag *d, char *buf, size_t len)
{
	size_t off = 0;

	if (len)
		buf[0] = '\0';
	for (size_t i = 0; i < d->n && off < len; i++) {
		int w = snprintf(buf + off, len - off, "%s%s", i ? "\n" : "", d->msgs[i]);

		if (w < 0)
			break;
		off += (size_t)w;
	}
}

void strv_push(struct strv *s, const char *str)
{
	grow((void **)&s->v, &s->cap, s->n + 1, sizeof(*s->v));
	s->v[s->n++] = xstrdup(str);
}

void strv_free(struct strv *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}

bool strv_contains(const struct strv *s, const char *str, bool nocase)
{
	for (size_t i = 0; i < s->n; i++)
		if (nocase ? !strcasecmp(s->v[i], str) : !strcmp(s->v[i], str))
			return true;
	return false;
}

bool strv_remove(struct strv *s, const char *str, bool nocase)
{
	for (size_t i = 0; i < s->n; i++) {
		if (nocase ? strcasecmp(s->v[i], str) : strcmp(s->v[i], str))
			continue;
		free(s->v[i]);
		s->v[i] = s->v[--s->n]; /* order is not kept */
		return true;
	}
	return false;
}

char *str_trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

void strv_split(struct strv *out, const char *list)
{
	char *copy = xstrdup(list), *p = copy, *comma;

	if (*str_trim(copy) == '\0') {
		free(copy);
		return;
	}
	for (;;) {
		comma = strchr(p, ',');
		if (comma)
			*comma = '\0';
		strv_push(out, str_trim(p));
		if (!comma)
			break;
		p = comma + 1;
	}
	free(copy);
}

void str_lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

bool str_eq_nocase(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || !isdigit((unsigned char)s[0])) {
		errno = EINVAL;
		return -1;
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end) {
		errno = errno ? errno : EINVAL;
		return -1;
	}
	if (v > max) {
		errno = ERANGE;
		return -1;
	}
	*out = v;
	return 0;
}

int parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

int parse_duration_ms(const char *s, uint64_t *out)
{
	static const struct { const char *suffix; uint64_t ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
		{ "d", 86400000 }, { "", 1000 },
	};
	size_t len = strlen(s);

	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		size_t sl = strlen(units[i].suffix);
		char num[32];
		uint64_t v;

		if (len <= sl || len - sl >= sizeof(num) ||
		    strcmp(s + len - sl, units[i].suffix))
			continue;
		memcpy(num, s, len - sl);
		num[len - sl] = '\0';
		if (parse_u64(num, UINT64_MAX / 86400000, &v) < 0)
			continue;
		*out = v * units[i].ms;
		return 0;
	}
	return -1;
}

int addr_parse(const char *s, struct dfw_addr *out, const char **why)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t len = slash ? (size_t)(slash - s) : strlen(s);
	uint64_t plen;
	unsigned maxlen;

	memset(out, 0, sizeof(*out));
	if (len == 0 || len >= sizeof(buf)) {
		*why = "not an IP address";
		return -1;
	}
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET, buf, out->a) == 1) {
		out->family = AF_INET;
		maxlen = 32;
	} else if (inet_pton(AF_INET6, buf, out->a) == 1) {
		out->family = AF_INET6;
		maxlen = 128;
	} else {
		*why = "not an IPv4 or IPv6 address";
		return -1;
	}
	out->plen = (uint8_t)maxlen;
	if (slash) {
		if (parse_u64(slash + 1, maxlen, &plen) < 0) {
			*why = out->family == AF_INET ? "prefix length must be 0-32"
						      : "prefix length must be 0-128";
			return -1;
		}
		out->plen = (uint8_t)plen;
	}
	for (unsigned bit = out->plen; bit < maxlen; bit++) {
		if (out->a[bit / 8] & (0x80 >> (bit % 8))) {
			*why = "host bits set below the prefix length";
			return -1;
		}
	}
	return 0;
}

void addr_format(const struct dfw_addr *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	unsigned max = a->family == AF_INET ? 32 : 128;

	inet_ntop(a->family, a->a, ip, sizeof(ip));
	if (a->plen == max)
		snprintf(buf, len, "%s", ip);
	else
		snprintf(buf, len, "%s/%u", ip, a->plen);
}

bool addr_contains(const struct dfw_addr *net, const struct dfw_addr *host)
{
	unsigned whole = net->plen / 8, rest = net->plen % 8;
	uint8_t m = (uint8_t)(0xff00 >> rest);

	if (net->family != host->family || host->plen < net->plen)
		return false;
	if (memcmp(net->a, host->a, whole))
		return false;
	return !rest || !((net->a[whole] ^ host->a[whole]) & m);
}

struct dfw_addr addr_link_local(const uint8_t mac[6])
{
	struct dfw_addr a = { .family = AF_INET6, .plen = 128 };

	a.a[0] = 0xfe;
	a.a[1] = 0x80;
	a.a[8] = mac[0] ^ 0x02;
	a.a[9] = mac[1];
	a.a[10] = mac[2];
	a.a[11] = 0xff;
	a.a[12] = 0xfe;
	a.a[13] = mac[3];
	a.a[14] = mac[4];
	a.a[15] = mac[5];
	return a;
}

const char *addr_not_own(const struct dfw_addr *a)
{
	static const struct {
		struct dfw_addr net;
		const char *what;
	} nets[] = {
		{ { AF_INET, 8, { 0 } }, "an unspecified ('this network', 0.0.0.0/8) address" },
		{ { AF_INET, 8, { 127 } }, "a loopback address" },
		{ { AF_INET, 4, { 224 } }, "a multicast address" },
		{ { AF_INET, 32, { 255, 255, 255, 255 } }, "the broadcast address" },
		{ { AF_INET, 4, { 240 } }, "a reserved (240.0.0.0/4) address" },
		{ { AF_INET6, 128, { 0 } }, "the unspecified address" },
		{ { AF_INET6, 128, { [15] = 1 } }, "the loopback address" },
		{ { AF_INET6, 8, { 0xff } }, "a multicast address" },
		{ { AF_INET6, 96, { [10] = 0xff, [11] = 0xff } }, "an IPv4-mapped address" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(nets); i++)
		if (addr_contains(&nets[i].net, a))
			return nets[i].what;
	return NULL;
}

int addr_cmp(const struct dfw_addr *x, const struct dfw_addr *y)
{
	int c;

	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	c = memcmp(x->a, y->a, 16);
	if (c)
		return c;
	return (int)x->plen - (int)y->plen;
}

int mac_parse(const char *s, uint8_t mac[6])
{
	/* Exactly six pairs of hex digits separated by colons. */
	if (strlen(s) != 17)
		return -1;
	for (int i = 0; i < 6; i++) {
		const char *p = s + 3 * i;
		char hex[3] = { p[0], p[1], '\0' };

		if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]) ||
		    (i < 5 && p[2] != ':'))
			return -1;
		mac[i] = (uint8_t)strtoul(hex, NULL, 16);
	}
	return 0;
}

void mac_format(const uint8_t mac[6], char *buf, size_t len)
{
	snprintf(buf, len, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1],
		 mac[2], mac[3], mac[4], mac[5]);
}

size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t *row = xcalloc(lb + 1, sizeof(*row)), d;

	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best;

			best = diag + (tolower((unsigned char)a[i - 1]) !=
				       tolower((unsigned char)b[j - 1]));
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	d = row[lb];
	free(row);
	return d;
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void efd_wake(int fd)
{
	uint64_t one = 1;

	if (write(fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is full, so it is readable anyway. */
	}
}

void efd_clear(int fd)
{
	uint64_t v;

	while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

size_t dfs_postorder(size_t n, const struct dfs_ops *ops, void *arg)
{
	enum { NEW, OPEN, DONE };
	uint8_t *state = xcalloc(n + 1, sizeof(*state));
	size_t *path = xcalloc(n + 1, sizeof(*path));
	size_t *next = xcalloc(n + 1, sizeof(*next)); /* next edge of path[i] */
	size_t cycles = 0;

	for (size_t root = 0; root < n; root++) {
		size_t depth = 1;

		if (state[root] != NEW)
			continue;
		state[root] = OPEN;
		path[0] = root;
		next[0] = 0;
		while (depth) {
			size_t v = path[depth - 1], h, i;

			if (next[depth - 1] == ops->degree(arg, v)) {
				state[v] = DONE;
				ops->done(arg, v);
				depth--;
				continue;
			}
			if ((h = ops->edge(arg, v, next[depth - 1]++)) == DFS_NO_EDGE)
				continue;
			if (state[h] == NEW) {
				state[h] = OPEN;
				path[depth] = h;
				next[depth++] = 0;
			} else if (state[h] == OPEN) {
				for (i = 0; path[i] != h; i++)
					;
				ops->cycle(arg, path + i, depth - i);
				cycles++;
			}
		}
	}
	free(state);
	free(path);
	free(next);
	return cycles;
}

uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

int open_regular(int dfd, const char *name, int flags, struct stat *st)
{
	char proc[32];
	int pfd, fd, err;

	memset(st, 0, sizeof(*st));
	pfd = openat(dfd, name, O_PATH | (flags & O_NOFOLLOW) | O_CLOEXEC);
	if (pfd < 0)
		return -1;
	if (fstat(pfd, st) < 0 || !S_ISREG(st->st_mode)) {
		err = S_ISLNK(st->st_mode) ? ELOOP : st->st_mode ? EINVAL : errno;
		close(pfd);
		errno = err;
		return -1;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	fd = open(proc, (flags & ~(O_CREAT | O_NOFOLLOW)) | O_CLOEXEC | O_NOCTTY);
	err = errno;
	close(pfd);
	errno = err;
	return fd;
}

void fput_shown(FILE *f, const char *s)
{
	size_t n = strlen(s), i = 0, bad;

	while (i < n) {
		size_t end = utf8_text(s + i, n - i, &bad) ? n : i + bad;

		for (; i < end; i++) {
			unsigned char c = (unsigned char)s[i];
			bool c1 = c == 0xc2 && (unsigned char)s[i + 1] <= 0x9f; /* U+0080-U+009F */

			if (c < 0x20 || c == 0x7f || c1)
				fprintf(f, "\\x%02x", c);
			else if (c == '\\')
				fputs("\\\\", f); /* so that \xNN is always ours */
			else
				fputc(c, f);
			if (c1)
				fprintf(f, "\\x%02x", (unsigned char)s[++i]);
		}
		if (i < n)
			fprintf(f, "\\x%02x", (unsigned char)s[i++]);
	}
}

void log_line(FILE *f, const char *who, const char *fmt, ...)
{
	char ts[32], *msg;
	time_t now = time(NULL);
	struct tm tm;
	va_list ap;

	if (!f)
		return;
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", gmtime_r(&now, &tm));
	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	/* One line at a time, from any thread (dfw/cutter.c logs from its own).
	 * A message can quote what others wrote (a store key, a policy line, a
	 * guest's file name): fput_shown keeps it one line that cannot forge
	 * the next one. */
	flockfile(f);
	fprintf(f, "%s %s: ", ts, who);
	fput_shown(f, msg);
	fputc('\n', f);
	fflush(f);
	funlockfile(f);
	free(msg);
}

/* Strict: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool utf8_text(const char *str, size_t n, size_t *bad)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < n) {
		unsigned char c = s[i];
		size_t len;
		uint32_t cp;

		if (c == 0)
			goto fail;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			cp = c & 0x07;
		} else {
			goto fail;
		}
		if (n - i < len)
			goto fail;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				goto fail;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
			goto fail;
		i += len;
	}
	return true;
fail:
	if (bad)
		*bad = i;
	return false;
}
