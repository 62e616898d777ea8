/* The desired-state store's front: picks the backend from the URI, passes
 * each call to it, and holds what both backends share (checking a
 * transaction's ops, prefix ranges, UTF-8). */
#include "tagger/store_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

void store_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

struct store *store_open(const char *uri, bool create, char *err, size_t errlen)
{
	if (!strncmp(uri, "etcd://", 7))
		return store_etcd_open(uri, create, err, errlen);
	if (!strncmp(uri, "sqlite:", 7))
		return store_sqlite_open(uri + 7, create, err, errlen);
	if (strstr(uri, "://")) {
		store_seterr(err, errlen,
			     "%s: unsupported store (this build knows sqlite:PATH"
			     " and etcd://HOST:PORT/PREFIX)", uri);
		errno = EINVAL;
		return NULL;
	}
	return store_sqlite_open(uri, create, err, errlen);
}

void store_close(struct store *s)
{
	if (s)
		s->ops->close(s);
}

int store_txn(struct store *s, const struct store_op *ops, size_t nops,
	      store_check_fn check, void *arg, uint64_t *rev,
	      char *err, size_t errlen)
{
	return s->ops->txn(s, ops, nops, check, arg, rev, err, errlen);
}

int store_rev(struct store *s, uint64_t *rev, char *err, size_t errlen)
{
	return s->ops->rev(s, rev, err, errlen);
}

int store_get(struct store *s, const char *key, char **value,
	      char *err, size_t errlen)
{
	return s->ops->get(s, key, value, err, errlen);
}

int store_scan(struct store *s, const char *prefix, store_kv_fn fn, void *arg,
	       uint64_t *rev, char *err, size_t errlen)
{
	return s->ops->scan(s, prefix, fn, arg, rev, err, errlen);
}

int store_changes(struct store *s, uint64_t since, store_change_fn fn,
		  void *arg, uint64_t *now, char *err, size_t errlen)
{
	return s->ops->changes(s, since, fn, arg, now, err, errlen);
}

int store_watch_fd(struct store *s)
{
	return s->ops->watch_fd(s);
}

void store_watch_ack(struct store *s)
{
	if (s)
		s->ops->watch_ack(s);
}

/* A host name is a key component in both backends. */
static bool host_name_ok(const char *host, char *err, size_t errlen)
{
	if (*host && !strchr(host, '/') && utf8_text(host, strlen(host), NULL))
		return true;
	store_seterr(err, errlen, "host name \"%s\": not a host name", host);
	return false;
}

int store_host_publish(struct store *s, const char *host, const char *value,
		       unsigned ttl_s, char *err, size_t errlen)
{
	size_t bad;

	/* The value is opaque but must be text. */
	if (!host_name_ok(host, err, errlen))
		return -1;
	if (!utf8_text(value, strlen(value), &bad)) {
		store_seterr(err, errlen,
			     "host %s: status is not UTF-8 text (byte %zu)", host, bad);
		return -1;
	}
	if (!ttl_s) {
		store_seterr(err, errlen, "host %s: status ttl must be at least 1 s",
			     host);
		return -1;
	}
	return s->ops->host_publish(s, host, value, ttl_s, err, errlen);
}

int store_host_withdraw(struct store *s, const char *host, char *err,
			size_t errlen)
{
	if (!host_name_ok(host, err, errlen))
		return -1;
	return s->ops->host_withdraw(s, host, err, errlen);
}

int store_host_scan(struct store *s, store_host_fn fn, void *arg, char *err,
		    size_t errlen)
{
	return s->ops->host_scan(s, fn, arg, err, errlen);
}

static void warn_stderr(void *arg, const char *msg)
{
	log_line(stderr, "dfw store", "%s", msg);
}

void store_set_warn(struct store *s, store_warn_fn fn, void *arg)
{
	s->warn = fn;
	s->warn_arg = arg;
}

void store_set_deadline(struct store *s, unsigned ms)
{
	s->deadline_ns = ms ? now_ns() + (uint64_t)ms * 1000000u : 0;
}

unsigned store_wait_ms(const struct store *s, unsigned max_ms)
{
	uint64_t now = now_ns(), left;

	if (!s->deadline_ns)
		return max_ms;
	left = s->deadline_ns > now ? (s->deadline_ns - now) / 1000000u : 0;
	return left < max_ms ? (unsigned)left : max_ms;
}

void store_warn(struct store *s, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	(s->warn ? s->warn : warn_stderr)(s->warn_arg, msg);
}

struct op_pos {
	const char *key;
	size_t i;
};

static int op_pos_cmp(const void *a, const void *b)
{
	const struct op_pos *x = a, *y = b;
	int c = strcmp(x->key, y->key);

	return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* etcd refuses two ops on one key in a transaction, and the history of a
 * revision is clearer with one change per key, so both backends apply only
 * the final op per key.  Sorting keeps this O(n log n) for big batches. */
int store_ops_final(const char *who, const struct store_op *ops, size_t nops,
		    struct store_op **out, size_t *nout, char *err,
		    size_t errlen)
{
	struct op_pos *pos = NULL;
	bool *keep = NULL;
	size_t n = 0;
	int ret = -1;

	*out = NULL;
	*nout = 0;
	for (size_t i = 0; i < nops; i++) {
		if (!ops[i].key ||
		    (ops[i].kind == STORE_PUT ? !ops[i].value
					      : ops[i].kind != STORE_DEL)) {
			store_seterr(err, errlen, "%s: store_txn: op %zu is malformed",
				     who, i);
			goto out;
		}
	}
	if (!nops)
		return 0;
	pos = xcalloc(nops, sizeof(*pos));
	keep = xcalloc(nops, sizeof(*keep));
	for (size_t i = 0; i < nops; i++)
		pos[i] = (struct op_pos){ ops[i].key, i };
	qsort(pos, nops, sizeof(*pos), op_pos_cmp);
	for (size_t i = 0; i < nops; i++)
		if (i + 1 == nops || strcmp(pos[i].key, pos[i + 1].key))
			keep[pos[i].i] = true;
	*out = xcalloc(nops, sizeof(**out));
	for (size_t i = 0; i < nops; i++)
		if (keep[i])
			(*out)[n++] = ops[i];
	*nout = n;
	ret = 0;
out:
	free(pos);
	free(keep);
	return ret;
}

char *store_prefix_end(const char *prefix, size_t n, size_t *len)
{
	char *end;

	while (n && (unsigned char)prefix[n - 1] == 0xff)
		n--;
	if (!n)
		return NULL;
	end = xmalloc(n + 1);
	memcpy(end, prefix, n);
	end[n] = '\0';
	end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
	if (len)
		*len = n;
	return end;
}
