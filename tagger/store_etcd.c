/* The etcd backend of the desired-state store: etcd v3 through its JSON
 * gateway (libcurl + jansson).  Writes are optimistic transactions that
 * compare a sequencer key; a thread of the handle holds a watch that feeds
 * store_changes and the watch descriptor, and reconnects by itself.
 *
 * Layout under PREFIX (docs/STORE.md):
 *   PREFIX/kv/<key>      the revisioned keys of store.h
 *   PREFIX/seq           written by every store_txn (the compare target)
 *   PREFIX/hosts/<host>  a host's last status, permanent
 *   PREFIX/alive/<host>  present while the host's lease holds */
#include "tagger/store_impl.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

#define ETCD_PORT 2379
#define CONNECT_MS 1000
#define REQUEST_MS 3000
/* How long store_txn keeps retrying while other writers win the race. */
#define TXN_RETRY_MS 10000
#define SCAN_PAGE 1000
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
/* How long store_changes waits for the watch without it making progress. */
#define CATCHUP_MS 3000
/* Watch events that cannot be decoded are reported at most this often
 * (summed up): a broken peer could send them on every change. */
#define DROPPED_SAY_MS 60000

struct buf {
	char *p;
	size_t n, cap;
};

static void buf_add(struct buf *b, const void *data, size_t n)
{
	if (b->n + n + 1 > b->cap)
		grow((void **)&b->p, &b->cap, b->n + n + 1, 1);
	memcpy(b->p + b->n, data, n);
	b->n += n;
	b->p[b->n] = '\0';
}

/* One change the watch delivered, its key without PREFIX/kv/. */
struct ev {
	uint64_t rev;
	char *key;
	char *value; /* NULL for a deletion */
	size_t klen, vlen;
};

/* The watch thread's state; everything below mu is guarded by it. */
struct watch {
	pthread_t thread;
	bool started;
	CURLM *multi; /* the thread's; other threads only wake it */
	int efd;      /* eventfd: readable after news */
	pthread_mutex_t mu;
	pthread_cond_t cond; /* news for store_changes, orders for the thread */
	bool stop;
	bool active;        /* the thread should hold a watch */
	uint64_t gen;       /* bumped by every restart */
	uint64_t base;      /* the queue holds every change after base ... */
	uint64_t seen;      /* ... up to seen */
	uint64_t compacted; /* non-zero: the watch from seen + 1 was refused */
	struct ev *q;
	size_t qhead, qn, qcap;
	char err[256]; /* why the last stream ended */
	unsigned streams; /* streams opened, for the tests' curiosity */
	unsigned dropped;     /* undecodable events skipped, not yet reported */
	uint64_t dropped_rev; /* the last one's revision (0: unknown) */
};

/* A lease this handle holds for a host's liveness. */
struct lease {
	struct lease *next;
	char *host;
	char *value; /* last published, NULL after withdraw */
	unsigned ttl;
	int64_t id; /* 0: none */
};

/* A bad key already reported, at the revision it was written. */
struct reported {
	char *key;
	uint64_t mod;
};

struct etcd_store {
	struct store base;
	char *uri;   /* as given, for messages about contents */
	char *where; /* "etcd HOST:PORT", for messages about reaching it */
	char *url;   /* "http://HOST:PORT" */
	struct buf kv, seq, hosts, alive; /* full key prefixes */
	CURL *curl;
	struct curl_slist *hdrs;
	char curl_err[CURL_ERROR_SIZE];
	struct buf resp;
	uint64_t pin;       /* non-zero inside a check: read at this revision */
	bool in_check;
	uint64_t known_rev; /* the newest revision any call saw */
	bool want_watch;    /* store_watch_fd was called */
	unsigned seed;
	struct lease *leases;
	struct reported *bad;
	size_t nbad, badcap;
	uint64_t dropped_said; /* when skipped watch events were reported (ns) */
	struct watch w;
};

#define ES(st) ((struct etcd_store *)(st))

static const struct store_ops etcd_ops;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* --- Encoding --- */

static const char b64_chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_enc(const char *data, size_t n)
{
	const unsigned char *d = (const unsigned char *)data;
	char *out = xmalloc((n + 2) / 3 * 4 + 1), *o = out;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16;

		if (i + 1 < n)
			v |= (uint32_t)d[i + 1] << 8;
		if (i + 2 < n)
			v |= d[i + 2];
		*o++ = b64_chars[v >> 18 & 63];
		*o++ = b64_chars[v >> 12 & 63];
		*o++ = i + 1 < n ? b64_chars[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? b64_chars[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

static int b64_val(char c)
{
	const char *p = c ? strchr(b64_chars, c) : NULL;

	return p ? (int)(p - b64_chars) : -1;
}

/* Decodes padded base64; *out is NUL-terminated (the data may hold NULs,
 * *outn tells).  Returns 0, or -1 on anything that is not base64. */
static int b64_dec(const char *s, char **out, size_t *outn)
{
	size_t n = strlen(s), k = 0;
	char *o;

	*out = NULL;
	if (n % 4)
		return -1;
	o = xmalloc(n / 4 * 3 + 1);
	for (size_t i = 0; i < n; i += 4) {
		int a = b64_val(s[i]), b = b64_val(s[i + 1]);
		int c = s[i + 2] == '=' ? 0 : b64_val(s[i + 2]);
		int d = s[i + 3] == '=' ? 0 : b64_val(s[i + 3]);
		bool pad2 = s[i + 2] == '=', pad3 = s[i + 3] == '=';

		if (a < 0 || b < 0 || c < 0 || d < 0 || (pad2 && !pad3) ||
		    ((pad2 || pad3) && i + 4 != n)) {
			free(o);
			return -1;
		}
		o[k++] = (char)(a << 2 | b >> 4);
		if (!pad2)
			o[k++] = (char)((b & 15) << 4 | c >> 2);
		if (!pad3)
			o[k++] = (char)((c & 3) << 6 | d);
	}
	o[k] = '\0';
	*out = o;
	*outn = k;
	return 0;
}

/* A base64 string field of j decoded, "" when absent (proto3 leaves out
 * empty fields).  Returns 0 or -1. */
static int jbytes(json_t *j, const char *field, char **out, size_t *outn)
{
	json_t *v = json_object_get(j, field);

	if (!v) {
		*out = xstrdup("");
		*outn = 0;
		return 0;
	}
	if (!json_is_string(v))
		return -1;
	return b64_dec(json_string_value(v), out, outn);
}

/* An int64 field (the gateway sends them as strings), 0 when absent. */
static int jnum(json_t *j, const char *field, uint64_t *out)
{
	json_t *v = json_object_get(j, field);

	*out = 0;
	if (!v)
		return 0;
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = (uint64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v))
		return parse_u64(json_string_value(v), INT64_MAX, out);
	return -1;
}

static uint64_t header_rev(json_t *reply)
{
	uint64_t rev = 0;

	jnum(json_object_get(reply, "header"), "revision", &rev);
	return rev;
}

/* "\xff" and other bytes that are not printable ASCII escaped, so that a
 * message can name any key. */
static char *escape(const char *s, size_t n)
{
	struct buf b = { 0 };
	char hex[5];

	buf_add(&b, "", 0);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '\\') {
			buf_add(&b, s + i, 1);
		} else {
			snprintf(hex, sizeof(hex), "\\x%02x", c);
			buf_add(&b, hex, 4);
		}
	}
	return b.p;
}

/* --- Requests --- */

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	buf_add(arg, data, size * n);
	return size * n;
}

/* "etcd HOST:PORT: connection refused" rather than curl's sentence. */
static void net_err(const char *where, CURL *c, CURLcode rc, const char *ebuf,
		    char *err, size_t errlen)
{
	long os = 0;
	char why[128];

	curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os);
	if (rc == CURLE_COULDNT_CONNECT && os) {
		snprintf(why, sizeof(why), "%s", strerror((int)os));
		why[0] = (char)(why[0] >= 'A' && why[0] <= 'Z' ? why[0] + 32 : why[0]);
		store_seterr(err, errlen, "%s: %s", where, why);
	} else if (rc == CURLE_OPERATION_TIMEDOUT) {
		store_seterr(err, errlen, "%s: no answer (%s)", where,
			     ebuf[0] ? ebuf : curl_easy_strerror(rc));
	} else {
		store_seterr(err, errlen, "%s: %s", where,
			     ebuf[0] ? ebuf : curl_easy_strerror(rc));
	}
}

static void curl_common(CURL *c, struct curl_slist *hdrs, char *ebuf)
{
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_MS);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 5L);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 5L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
}

/* etcd's reason without its "etcdserver: " */
static const char *grpc_message(json_t *reply)
{
	json_t *m = json_object_get(reply, "message");
	const char *msg;

	if (!json_is_string(m))
		m = json_object_get(reply, "error");
	if (!json_is_string(m))
		return NULL;
	msg = json_string_value(m);
	if (!strncmp(msg, "etcdserver: ", 12))
		msg += 12;
	return msg;
}

/* POSTs body (consumed) to path; returns the reply, or NULL with the reason
 * in err and etcd's gRPC code in *code (0 when etcd was not reached). */
static json_t *post(struct etcd_store *s, const char *path, json_t *body,
		    int *code, char *err, size_t errlen)
{
	char *text = json_dumps(body, JSON_COMPACT);
	char *url = xasprintf("%s%s", s->url, path);
	json_t *reply = NULL, *ret = NULL;
	json_error_t jerr;
	long http = 0;
	uint64_t c = 0;
	unsigned wait, conn;
	CURLcode rc;

	json_decref(body);
	if (code)
		*code = 0;
	if (!text)
		abort();
	s->resp.n = 0;
	s->curl_err[0] = '\0';
	curl_easy_setopt(s->curl, CURLOPT_URL, url);
	curl_easy_setopt(s->curl, CURLOPT_POSTFIELDS, text);
	curl_easy_setopt(s->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
	/* Within store_set_deadline's bound (curl takes 0 as "no limit"). */
	wait = store_wait_ms(&s->base, REQUEST_MS);
	conn = wait < CONNECT_MS ? wait : CONNECT_MS;
	curl_easy_setopt(s->curl, CURLOPT_TIMEOUT_MS, (long)(wait ? wait : 1));
	curl_easy_setopt(s->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)(conn ? conn : 1));
	rc = curl_easy_perform(s->curl);
	if (rc != CURLE_OK) {
		net_err(s->where, s->curl, rc, s->curl_err, err, errlen);
		goto out;
	}
	curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &http);
	reply = json_loadb(s->resp.p ? s->resp.p : "", s->resp.n, 0, &jerr);
	if (!json_is_object(reply)) {
		store_seterr(err, errlen, "%s: %s: unreadable reply (HTTP %ld): %.80s",
			     s->where, path, http, s->resp.p ? s->resp.p : "");
		goto out;
	}
	if (json_object_get(reply, "error") || http != 200) {
		const char *msg = grpc_message(reply);

		jnum(reply, "code", &c);
		if (code)
			*code = c ? (int)c : -1;
		store_seterr(err, errlen, "%s: %s", s->where,
			     msg ? msg : "error without a message");
		goto out;
	}
	ret = reply;
	reply = NULL;
out:
	json_decref(reply);
	free(text);
	free(url);
	return ret;
}

static json_t *jb64(const char *data, size_t n)
{
	char *e = b64_enc(data, n);
	json_t *j = json_string(e);

	free(e);
	return j;
}

static json_t *jnumstr(uint64_t v)
{
	char num[24];

	snprintf(num, sizeof(num), "%" PRIu64, v);
	return json_string(num);
}

/* A range request over [key, end) (end NULL: key alone) at rev (0: the
 * newest), at most limit keys (0: all). */
static json_t *range_req(const char *key, size_t klen, const char *end,
			 size_t elen, uint64_t rev, unsigned limit)
{
	json_t *r = json_object();

	json_object_set_new(r, "key", jb64(key, klen));
	if (end)
		json_object_set_new(r, "range_end", jb64(end, elen));
	if (rev)
		json_object_set_new(r, "revision", jnumstr(rev));
	if (limit)
		json_object_set_new(r, "limit", jnumstr(limit));
	return r;
}

/* A key of the revisioned space with its full name. */
static char *kv_key(struct etcd_store *s, const char *key, size_t *len)
{
	size_t n = strlen(key);
	char *k = xmalloc(s->kv.n + n + 1);

	memcpy(k, s->kv.p, s->kv.n);
	memcpy(k + s->kv.n, key, n + 1);
	*len = s->kv.n + n;
	return k;
}

static void watch_restart(struct etcd_store *s, uint64_t since);

/* Remembers the newest revision seen; a wanted watch that is not running
 * (never started, or stopped by compaction) starts from it. */
static void note_rev(struct etcd_store *s, uint64_t rev)
{
	if (rev > s->known_rev)
		s->known_rev = rev;
	if (!s->want_watch)
		return;
	pthread_mutex_lock(&s->w.mu);
	if (!s->w.active)
		watch_restart(s, rev);
	pthread_mutex_unlock(&s->w.mu);
}

/* The sequencer's mod_revision (0 while missing) and the header revision. */
static int read_seq(struct etcd_store *s, uint64_t *mod, uint64_t *rev,
		    char *err, size_t errlen)
{
	json_t *reply = post(s, "/v3/kv/range",
			     range_req(s->seq.p, s->seq.n, NULL, 0, 0, 0), NULL,
			     err, errlen);
	json_t *kvs;

	if (!reply)
		return -1;
	*rev = header_rev(reply);
	*mod = 0;
	kvs = json_object_get(reply, "kvs");
	if (json_array_size(kvs) > 0 &&
	    jnum(json_array_get(kvs, 0), "mod_revision", mod) < 0)
		*mod = UINT64_MAX;
	json_decref(reply);
	if (!*rev || *mod == UINT64_MAX || *mod > *rev) {
		store_seterr(err, errlen, "%s: unreadable revisions in a reply",
			     s->where);
		return -1;
	}
	note_rev(s, *rev);
	return 0;
}

/* Says once per key and revision that a key or value is not text. */
static void report_bad(struct etcd_store *s, const char *key, size_t klen,
		       uint64_t mod, const char *what)
{
	char *k = escape(key, klen);

	for (size_t i = 0; i < s->nbad; i++) {
		if (s->bad[i].mod == mod && !strcmp(s->bad[i].key, k)) {
			free(k);
			return;
		}
	}
	if (s->nbad == s->badcap)
		grow((void **)&s->bad, &s->badcap, s->nbad + 1, sizeof(*s->bad));
	s->bad[s->nbad++] = (struct reported){ k, mod };
	store_warn(&s->base, "%s: key \"%s\" (revision %" PRIu64 "): %s; skipped",
		   s->uri, k, mod, what);
}

/* Whether a key and value read from etcd are text, reporting them if not.
 * prefix is the part of key the message leaves out. */
static bool text_ok(struct etcd_store *s, const char *key, size_t klen,
		    const char *value, size_t vlen, uint64_t mod, size_t prefix)
{
	size_t bad;

	if (!utf8_text(key + prefix, klen - prefix, &bad)) {
		report_bad(s, key + prefix, klen - prefix, mod,
			   "the key is not UTF-8 text");
		return false;
	}
	if (value && !utf8_text(value, vlen, &bad)) {
		char what[64];

		snprintf(what, sizeof(what), "the value is not UTF-8 text (byte %zu)",
			 bad);
		report_bad(s, key + prefix, klen - prefix, mod, what);
		return false;
	}
	return true;
}

/* Whether a key of a reply is one range_all asked for: under the prefix
 * (the callers cut it off) and not before the page's first key (a reply
 * that goes back would be asked again and again). */
static bool in_range(const char *key, size_t klen, const char *prefix, size_t plen,
		     const char *next, size_t nlen)
{
	int c = memcmp(key, next, klen < nlen ? klen : nlen);

	return klen >= plen && !memcmp(key, prefix, plen) && (c > 0 || (c == 0 && klen >= nlen));
}

/* Visits every key that starts with the plen bytes of prefix, page by
 * page, all pages read at one revision (rev when non-zero, else the first
 * page's), which goes to *rev.  fn gets the key and value decoded; returns
 * non-zero to stop.  A key of the reply outside that range is reported
 * and skipped. */
typedef int (*range_fn)(struct etcd_store *s, void *arg, const char *key,
			size_t klen, const char *value, size_t vlen,
			uint64_t mod);

static int range_all(struct etcd_store *s, const char *prefix, size_t plen, uint64_t *rev,
		     range_fn fn, void *arg, char *err, size_t errlen)
{
	char *next = xmalloc(plen + 1), *key = NULL, *value = NULL, *end;
	size_t nlen = plen, klen, vlen, elen = 0, taken;
	json_t *reply = NULL, *kvs, *kv;
	bool more = true;
	uint64_t at = *rev, mod;
	int ret = -1, stop = 0;

	/* Every prefix here starts with PREFIX/, so end exists. */
	end = store_prefix_end(prefix, plen, &elen);
	memcpy(next, prefix, plen);
	while (more && !stop) {
		reply = post(s, "/v3/kv/range",
			     range_req(next, nlen, end, elen, at, SCAN_PAGE), NULL,
			     err, errlen);
		if (!reply)
			goto out;
		if (!at)
			at = header_rev(reply);
		more = json_is_true(json_object_get(reply, "more"));
		kvs = json_object_get(reply, "kvs");
		taken = 0;
		for (size_t i = 0; i < json_array_size(kvs) && !stop; i++) {
			kv = json_array_get(kvs, i);
			free(key);
			free(value);
			value = NULL;
			if (jbytes(kv, "key", &key, &klen) < 0 ||
			    jbytes(kv, "value", &value, &vlen) < 0 ||
			    jnum(kv, "mod_revision", &mod) < 0) {
				store_seterr(err, errlen, "%s: undecodable key in a reply",
					     s->where);
				goto out;
			}
			if (!in_range(key, klen, prefix, plen, next, nlen)) {
				report_bad(s, key, klen, mod,
					   "outside the range asked for (etcd would not send it)");
				continue;
			}
			/* The next page starts just after this key. */
			free(next);
			next = xmalloc(klen + 1);
			memcpy(next, key, klen);
			next[klen] = '\0';
			nlen = klen + 1;
			taken++;
			stop = fn(s, arg, key, klen, value, vlen, mod);
		}
		if (!json_array_size(kvs))
			more = false;
		json_decref(reply);
		reply = NULL;
		if (more && !taken) {
			store_seterr(err, errlen, "%s: a reply with more to come but no key of"
				     " the range asked for", s->where);
			goto out;
		}
	}
	*rev = at;
	note_rev(s, at);
	ret = 0;
out:
	json_decref(reply);
	free(next);
	free(end);
	free(key);
	free(value);
	return ret;
}

/* --- Opening --- */

static void watch_init(struct watch *w)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&w->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->cond, &ca);
	pthread_condattr_destroy(&ca);
	w->efd = -1;
}

static void etcd_close(struct store *base);

/* etcd://HOST[:PORT][/PREFIX]: HOST a name, an IPv4 address or [IPv6];
 * PREFIX slash-separated names of [A-Za-z0-9._-]. */
static int parse_uri(const char *uri, char **hostport, char **prefix,
		     char *err, size_t errlen)
{
	const char *p = uri + 7, *h = p, *he, *slash;
	uint64_t port = ETCD_PORT;
	char *num;

	if (*p == '[') {
		he = strchr(p, ']');
		if (!he || he == p + 1) {
			store_seterr(err, errlen, "%s: bad host", uri);
			return -1;
		}
		for (const char *c = p + 1; c < he; c++) {
			if (!strchr("0123456789abcdefABCDEF:.", *c)) {
				store_seterr(err, errlen, "%s: bad host", uri);
				return -1;
			}
		}
		he++;
	} else {
		he = p + strspn(p, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-");
		if (he == p) {
			store_seterr(err, errlen, "%s: %s", uri,
				     *p && *p != ':' && *p != '/' ? "bad host" : "no host");
			return -1;
		}
	}
	p = he;
	if (*p == ':') {
		slash = strchr(p, '/');
		num = slash ? xasprintf("%.*s", (int)(slash - p - 1), p + 1)
			    : xstrdup(p + 1);
		if (parse_u64(num, 65535, &port) < 0 || port == 0) {
			store_seterr(err, errlen, "%s: bad port \"%s\"", uri, num);
			free(num);
			return -1;
		}
		free(num);
		p = slash ? slash : p + strlen(p);
	}
	if (*p && *p != '/') {
		store_seterr(err, errlen, "%s: bad host", uri);
		return -1;
	}
	if (*p == '/')
		p++;
	if (!*p) {
		*prefix = xstrdup("dfw");
	} else {
		for (const char *c = p; *c; c++) {
			if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/", *c) ||
			    (*c == '/' && (c == p || c[1] == '/' || !c[1]))) {
				store_seterr(err, errlen,
					     "%s: bad prefix \"%s\" (names of letters,"
					     " digits, '.', '_' and '-' between single"
					     " slashes)", uri, p);
				return -1;
			}
		}
		*prefix = xstrdup(p);
	}
	*hostport = xasprintf("%.*s:%" PRIu64, (int)(he - h), h, port);
	return 0;
}

static void prefix_key(struct buf *b, const char *prefix, const char *name)
{
	buf_add(b, prefix, strlen(prefix));
	buf_add(b, "/", 1);
	buf_add(b, name, strlen(name));
}

struct store *store_etcd_open(const char *uri, bool create, char *err,
			      size_t errlen)
{
	struct etcd_store *s = NULL;
	char *hostport = NULL, *prefix = NULL;
	struct store *ret = NULL;

	if (parse_uri(uri, &hostport, &prefix, err, errlen) < 0) {
		errno = EINVAL; /* the URI, not the store: store_open */
		goto out;
	}
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		store_seterr(err, errlen, "%s: cannot start libcurl: %s", uri,
			     curl_easy_strerror(curl_init_rc));
		goto out;
	}
	s = xcalloc(1, sizeof(*s));
	s->base.ops = &etcd_ops;
	watch_init(&s->w);
	s->uri = xstrdup(uri);
	s->where = xasprintf("etcd %s", hostport);
	s->url = xasprintf("http://%s", hostport);
	prefix_key(&s->kv, prefix, "kv/");
	prefix_key(&s->seq, prefix, "seq");
	prefix_key(&s->hosts, prefix, "hosts/");
	prefix_key(&s->alive, prefix, "alive/");
	s->seed = (unsigned)(now_ns() ^ (uint64_t)getpid() << 16);
	s->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	s->hdrs = curl_slist_append(s->hdrs, "Expect:");
	s->curl = curl_easy_init();
	s->w.multi = curl_multi_init();
	s->w.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!s->hdrs || !s->curl || !s->w.multi || s->w.efd < 0) {
		store_seterr(err, errlen, "%s: cannot set up: %s", uri,
			     s->w.efd < 0 ? strerror(errno) : "libcurl failed");
		goto out;
	}
	curl_common(s->curl, s->hdrs, s->curl_err);
	curl_easy_setopt(s->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &s->resp);
	ret = &s->base;
	s = NULL;
out:
	if (s)
		etcd_close(&s->base);
	free(hostport);
	free(prefix);
	return ret;
}

/* --- The watch thread --- */

static void ev_free(struct ev *e)
{
	free(e->key);
	free(e->value);
}

static void *watch_main(void *arg);

/* Called with mu held: the queue is emptied and the thread (re)starts
 * watching the changes after since. */
static void watch_restart(struct etcd_store *s, uint64_t since)
{
	struct watch *w = &s->w;

	for (size_t i = w->qhead; i < w->qn; i++)
		ev_free(&w->q[i]);
	w->qhead = w->qn = 0;
	w->base = w->seen = since;
	w->compacted = 0;
	w->active = true;
	w->gen++;
	w->err[0] = '\0';
	if (!w->started) {
		int rc = pthread_create(&w->thread, NULL, watch_main, s);

		if (rc == 0)
			w->started = true;
		else
			snprintf(w->err, sizeof(w->err),
				 "cannot start the watch thread: %s", strerror(rc));
	}
	pthread_cond_broadcast(&w->cond);
	curl_multi_wakeup(w->multi);
}

/* One stream of the watch thread, as read so far. */
struct stream {
	struct etcd_store *s;
	uint64_t gen;
	struct buf line;
	bool created; /* etcd accepted the watch */
	bool ended;   /* etcd ended it (compaction, an error) */
	char err[256];
};

/* Handles one WatchResponse: queues its changes, notes how far the watch
 * got, and wakes whoever waits. */
static void stream_line(struct stream *st, const char *text, size_t n)
{
	struct etcd_store *s = st->s;
	struct watch *w = &s->w;
	json_error_t jerr;
	json_t *j = json_loadb(text, n, 0, &jerr), *res, *evs;
	struct ev *add = NULL;
	size_t nadd = 0, i;
	uint64_t top = 0, compact = 0, droprev = 0;
	unsigned ndrop = 0;

	res = json_object_get(j, "result");
	if (!json_is_object(res)) {
		json_t *e = json_object_get(j, "error");
		const char *msg = json_is_object(e) ? grpc_message(e) : grpc_message(j);

		snprintf(st->err, sizeof(st->err), "%s: watch: %s", s->where,
			 msg ? msg : "unreadable reply");
		st->ended = true;
		goto out;
	}
	if (json_is_true(json_object_get(res, "created")))
		st->created = true;
	if (json_is_true(json_object_get(res, "canceled"))) {
		jnum(res, "compact_revision", &compact);
		if (!compact) {
			json_t *why = json_object_get(res, "cancel_reason");

			snprintf(st->err, sizeof(st->err), "%s: watch canceled: %s",
				 s->where, json_is_string(why) ? json_string_value(why)
							       : "no reason given");
		}
		st->ended = true;
	}
	evs = json_object_get(res, "events");
	add = xcalloc(json_array_size(evs) + 1, sizeof(*add));
	for (i = 0; i < json_array_size(evs); i++) {
		json_t *ev = json_array_get(evs, i), *kv = json_object_get(ev, "kv");
		json_t *type = json_object_get(ev, "type");
		bool del = json_is_string(type) && !strcmp(json_string_value(type), "DELETE");
		char *key = NULL, *value = NULL;
		size_t klen = 0, vlen = 0;
		uint64_t mod = 0;
		bool ok = jnum(kv, "mod_revision", &mod) == 0 &&
			  jbytes(kv, "key", &key, &klen) == 0 &&
			  (del || jbytes(kv, "value", &value, &vlen) == 0);

		if (mod > top)
			top = mod;
		if (ok && klen >= s->kv.n && !memcmp(key, s->kv.p, s->kv.n)) {
			memmove(key, key + s->kv.n, klen - s->kv.n + 1);
			add[nadd++] = (struct ev){ mod, key, value, klen - s->kv.n, vlen };
			continue;
		}
		/* Else the sequencer (a revision of store_txn, maybe without
		 * changes), a key of another store whose prefix falls in the
		 * watched range (PREFIX/lab/...), or not etcd's doing: the
		 * revision still counts as seen, and store_changes says that
		 * something was skipped. */
		if (!ok) {
			ndrop++;
			droprev = mod;
		}
		free(key);
		free(value);
	}
	pthread_mutex_lock(&w->mu);
	if (w->gen == st->gen) {
		if (compact)
			w->compacted = compact;
		if (nadd) {
			if (w->qn + nadd > w->qcap)
				grow((void **)&w->q, &w->qcap, w->qn + nadd, sizeof(*w->q));
			memcpy(w->q + w->qn, add, nadd * sizeof(*add));
			w->qn += nadd;
			nadd = 0;
		}
		if (top > w->seen)
			w->seen = top;
		w->dropped += ndrop;
		if (ndrop)
			w->dropped_rev = droprev;
		if (top || compact) {
			efd_wake(w->efd);
			pthread_cond_broadcast(&w->cond);
		}
	}
	pthread_mutex_unlock(&w->mu);
out:
	for (i = 0; i < nadd; i++)
		ev_free(&add[i]);
	free(add);
	json_decref(j);
}

/* The gateway sends one JSON object per line. */
static size_t on_stream(char *data, size_t size, size_t n, void *arg)
{
	struct stream *st = arg;
	char *start, *nl;
	size_t left;

	buf_add(&st->line, data, size * n);
	start = st->line.p;
	while (!st->ended &&
	       (nl = memchr(start, '\n', (size_t)(st->line.p + st->line.n - start)))) {
		if (nl > start)
			stream_line(st, start, (size_t)(nl - start));
		start = nl + 1;
	}
	if (st->ended)
		return 0; /* ends the transfer */
	left = (size_t)(st->line.p + st->line.n - start);
	memmove(st->line.p, start, left);
	st->line.n = left;
	return size * n;
}

/* Holds one watch from revision from until it breaks, etcd ends it, or
 * the handle wants another (stop, restart). */
static void stream_run(struct etcd_store *s, CURL *c, struct curl_slist *hdrs,
		       struct stream *st, uint64_t from)
{
	struct watch *w = &s->w;
	char ebuf[CURL_ERROR_SIZE] = "", *url = xasprintf("%s/v3/watch", s->url);
	json_t *req = json_object(), *cr = json_object();
	char *body;

	/* The range [PREFIX/kv/, PREFIX/seq] also holds the sequencer, so
	 * that every store_txn shows here even when it changed nothing:
	 * store_changes knows when the watch has caught up. */
	json_object_set_new(cr, "key", jb64(s->kv.p, s->kv.n));
	json_object_set_new(cr, "range_end", jb64(s->seq.p, s->seq.n + 1));
	json_object_set_new(cr, "start_revision", jnumstr(from));
	json_object_set_new(req, "create_request", cr);
	body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!body)
		abort();
	curl_easy_reset(c);
	curl_common(c, hdrs, ebuf);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_stream);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, st);
	curl_multi_add_handle(w->multi, c);
	for (;;) {
		int running = 0, left;
		bool quit;
		CURLMsg *m;
		CURLcode rc = CURLE_OK;

		if (curl_multi_perform(w->multi, &running) != CURLM_OK) {
			snprintf(st->err, sizeof(st->err), "%s: watch: libcurl failed",
				 s->where);
			break;
		}
		if (st->ended)
			break;
		if (!running) {
			while ((m = curl_multi_info_read(w->multi, &left)))
				if (m->msg == CURLMSG_DONE)
					rc = m->data.result;
			if (rc != CURLE_OK)
				net_err(s->where, c, rc, ebuf, st->err, sizeof(st->err));
			else
				snprintf(st->err, sizeof(st->err),
					 "%s: the watch stream ended", s->where);
			break;
		}
		pthread_mutex_lock(&w->mu);
		quit = w->stop || w->gen != st->gen;
		pthread_mutex_unlock(&w->mu);
		if (quit)
			break;
		curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
	}
	curl_multi_remove_handle(w->multi, c);
	free(body);
	free(url);
}

static struct timespec deadline_in(unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* Holds the watch while it is wanted; after a broken stream (etcd down or
 * restarting) reconnects with exponential backoff, resuming after the last
 * revision seen, sleeping in between so that an absent etcd costs no CPU. */
static void *watch_main(void *arg)
{
	struct etcd_store *s = arg;
	struct watch *w = &s->w;
	struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	CURL *c = curl_easy_init();
	unsigned backoff = BACKOFF_MIN_MS;

	pthread_mutex_lock(&w->mu);
	while (!w->stop) {
		struct stream st = { .s = s };
		struct timespec until;
		uint64_t from;

		if (!w->active) {
			pthread_cond_wait(&w->cond, &w->mu);
			continue;
		}
		if (!c || !hdrs) {
			snprintf(w->err, sizeof(w->err), "%s: cannot set up libcurl",
				 s->where);
			w->active = false;
			pthread_cond_broadcast(&w->cond);
			continue;
		}
		st.gen = w->gen;
		from = w->seen + 1;
		w->streams++;
		pthread_mutex_unlock(&w->mu);
		stream_run(s, c, hdrs, &st, from);
		free(st.line.p);
		pthread_mutex_lock(&w->mu);
		if (w->stop)
			break;
		if (w->gen != st.gen) {
			backoff = BACKOFF_MIN_MS;
			continue;
		}
		if (w->compacted) {
			w->active = false;
			pthread_cond_broadcast(&w->cond);
			continue;
		}
		if (st.created)
			backoff = BACKOFF_MIN_MS;
		snprintf(w->err, sizeof(w->err), "%s", st.err);
		pthread_cond_broadcast(&w->cond);
		until = deadline_in(backoff);
		while (!w->stop && w->gen == st.gen &&
		       pthread_cond_timedwait(&w->cond, &w->mu, &until) != ETIMEDOUT)
			;
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
	pthread_mutex_unlock(&w->mu);
	curl_easy_cleanup(c);
	curl_slist_free_all(hdrs);
	return NULL;
}

static void etcd_close(struct store *base)
{
	struct etcd_store *s = ES(base);
	struct watch *w = &s->w;

	if (w->started) {
		pthread_mutex_lock(&w->mu);
		w->stop = true;
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->mu);
		curl_multi_wakeup(w->multi);
		pthread_join(w->thread, NULL);
	}
	for (size_t i = w->qhead; i < w->qn; i++)
		ev_free(&w->q[i]);
	free(w->q);
	if (w->multi)
		curl_multi_cleanup(w->multi);
	if (w->efd >= 0)
		close(w->efd);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cond);
	while (s->leases) {
		struct lease *l = s->leases;

		s->leases = l->next;
		free(l->host);
		free(l->value);
		free(l);
	}
	for (size_t i = 0; i < s->nbad; i++)
		free(s->bad[i].key);
	free(s->bad);
	if (s->curl)
		curl_easy_cleanup(s->curl);
	curl_slist_free_all(s->hdrs);
	free(s->resp.p);
	free(s->kv.p);
	free(s->seq.p);
	free(s->hosts.p);
	free(s->alive.p);
	free(s->uri);
	free(s->where);
	free(s->url);
	free(s);
}

/* --- Reading --- */

static int etcd_rev(struct store *base, uint64_t *rev, char *err, size_t errlen)
{
	struct etcd_store *s = ES(base);
	uint64_t mod;

	if (s->pin) {
		*rev = s->pin;
		return 0;
	}
	return read_seq(s, &mod, rev, err, errlen);
}

static int etcd_get(struct store *base, const char *key, char **value,
		    char *err, size_t errlen)
{
	struct etcd_store *s = ES(base);
	size_t klen, vlen, bad;
	char *full = kv_key(s, key, &klen), *v = NULL;
	json_t *reply, *kvs;
	uint64_t mod = 0;
	int ret = -1;

	*value = NULL;
	reply = post(s, "/v3/kv/range", range_req(full, klen, NULL, 0, s->pin, 0),
		     NULL, err, errlen);
	if (!reply)
		goto out;
	if (!s->pin)
		note_rev(s, header_rev(reply));
	kvs = json_object_get(reply, "kvs");
	if (json_array_size(kvs) == 0) {
		ret = 1;
		goto out;
	}
	if (jbytes(json_array_get(kvs, 0), "value", &v, &vlen) < 0) {
		store_seterr(err, errlen, "%s: key \"%s\": undecodable value", s->uri, key);
		goto out;
	}
	jnum(json_array_get(kvs, 0), "mod_revision", &mod);
	if (!utf8_text(v, vlen, &bad)) {
		report_bad(s, key, strlen(key), mod, "the value is not UTF-8 text");
		store_seterr(err, errlen, "%s: key \"%s\": the value is not UTF-8 text"
			     " (byte %zu)", s->uri, key, bad);
		goto out;
	}
	*value = v;
	v = NULL;
	ret = 0;
out:
	json_decref(reply);
	free(full);
	free(v);
	return ret;
}

struct scan_ctx {
	store_kv_fn fn;
	void *arg;
};

static int scan_one(struct etcd_store *s, void *arg, const char *key,
		    size_t klen, const char *value, size_t vlen, uint64_t mod)
{
	struct scan_ctx *c = arg;

	if (!text_ok(s, key, klen, value, vlen, mod, s->kv.n))
		return 0;
	return c->fn(c->arg, key + s->kv.n, value);
}

/* One consistent snapshot however many pages: every page is read at the
 * first page's revision (or, inside a check, at the check's). */
static int etcd_scan(struct store *base, const char *prefix, store_kv_fn fn,
		     void *arg, uint64_t *rev, char *err, size_t errlen)
{
	struct etcd_store *s = ES(base);
	struct scan_ctx c = { fn, arg };
	size_t flen;
	char *from = kv_key(s, prefix, &flen);
	uint64_t at = s->pin;
	int ret;

	ret = range_all(s, from, flen, &at, scan_one, &c, err, errlen);
	if (ret == 0 && rev)
		*rev = at;
	free(from);
	return ret;
}

/* --- Writing --- */

static json_t *put_op(const char *key, size_t klen, const char *value,
		      int64_t lease)
{
	json_t *put = json_object(), *op = json_object();

	json_object_set_new(put, "key", jb64(key, klen));
	json_object_set_new(put, "value", jb64(value, strlen(value)));
	if (lease) {
		char id[24];

		snprintf(id, sizeof(id), "%" PRId64, lease);
		json_object_set_new(put, "lease", json_string(id));
	}
	json_object_set_new(op, "request_put", put);
	return op;
}

static json_t *del_op(const char *key, size_t klen)
{
	json_t *del = json_object(), *op = json_object();

	json_object_set_new(del, "key", jb64(key, klen));
	json_object_set_new(op, "request_delete_range", del);
	return op;
}

/* Drops from ops the PUTs of the value already there, so that the history
 * holds changes only, as with SQLite.  The keys are read in one request
 * after the check: if the transaction then commits, no other store_txn
 * came in between (the sequencer did not move), so they were still the
 * values at the commit.  (Comparing values inside the transaction would
 * send every value twice, and a big policy would pass etcd's request size
 * limit sooner.) */
static int drop_unchanged(struct etcd_store *s, struct store_op *ops, size_t *n,
			  char *err, size_t errlen)
{
	json_t *reads = json_array(), *reply, *resps;
	size_t nputs = 0, k = 0, vlen, r = 0;
	char *v;

	for (size_t i = 0; i < *n; i++) {
		size_t klen;
		char *key;
		json_t *op;

		if (ops[i].kind != STORE_PUT)
			continue;
		key = kv_key(s, ops[i].key, &klen);
		op = json_object();
		json_object_set_new(op, "request_range", range_req(key, klen, NULL, 0, 0, 0));
		json_array_append_new(reads, op);
		free(key);
		nputs++;
	}
	if (!nputs) {
		json_decref(reads);
		return 0;
	}
	reply = post(s, "/v3/kv/txn", json_pack("{s:o}", "success", reads), NULL,
		     err, errlen);
	if (!reply)
		return -1;
	resps = json_object_get(reply, "responses");
	for (size_t i = 0; i < *n; i++) {
		bool same = false;

		if (ops[i].kind == STORE_PUT) {
			json_t *kvs = json_object_get(json_object_get(json_array_get(resps, r++),
								      "response_range"), "kvs");

			if (json_array_size(kvs) &&
			    jbytes(json_array_get(kvs, 0), "value", &v, &vlen) == 0) {
				same = vlen == strlen(ops[i].value) && !memcmp(v, ops[i].value, vlen);
				free(v);
			}
		}
		if (!same)
			ops[k++] = ops[i];
	}
	*n = k;
	json_decref(reply);
	return 0;
}

/* The transaction: if the sequencer is still at mod, apply ops and bump
 * it.  A sequencer never written has mod_revision 0, which etcd compares
 * like any other (tested). */
static json_t *txn_req(struct etcd_store *s, uint64_t mod,
		       const struct store_op *ops, size_t n)
{
	json_t *req = json_object(), *cmp = json_object(), *succ = json_array();

	json_object_set_new(cmp, "key", jb64(s->seq.p, s->seq.n));
	json_object_set_new(cmp, "target", json_string("MOD"));
	json_object_set_new(cmp, "result", json_string("EQUAL"));
	json_object_set_new(cmp, "mod_revision", jnumstr(mod));
	json_array_append_new(succ, put_op(s->seq.p, s->seq.n, "", 0));
	for (size_t i = 0; i < n; i++) {
		size_t klen;
		char *key = kv_key(s, ops[i].key, &klen);

		json_array_append_new(succ, ops[i].kind == STORE_PUT
						    ? put_op(key, klen, ops[i].value, 0)
						    : del_op(key, klen));
		free(key);
	}
	json_object_set_new(req, "compare", json_pack("[o]", cmp));
	json_object_set_new(req, "success", succ);
	return req;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Optimistic: read the sequencer (M) and the revision (R), run the check
 * reading at R, then commit only if the sequencer is still at M, i.e. no
 * other store_txn got in between; otherwise all over again after a short
 * random pause, for up to TXN_RETRY_MS. */
static int etcd_txn(struct store *base, const struct store_op *ops, size_t nops,
		    store_check_fn check, void *arg, uint64_t *rev, char *err,
		    size_t errlen)
{
	struct etcd_store *s = ES(base);
	uint64_t start = now_ns(), mod, at, tries = 0;
	struct store_op *fin = NULL;
	size_t nfin = 0, bad;
	json_t *reply = NULL;
	int ret = -1, rc;

	if (s->in_check) {
		store_seterr(err, errlen,
			     "%s: store_txn inside a transaction (called from a check?)",
			     s->uri);
		return -1;
	}
	for (;;) {
		tries++;
		if (read_seq(s, &mod, &at, err, errlen) < 0)
			goto out;
		if (check) {
			store_seterr(err, errlen, "%s", "");
			s->in_check = true;
			s->pin = at;
			rc = check(base, arg, err, errlen);
			s->in_check = false;
			s->pin = 0;
			if (rc) {
				if (err && errlen && !err[0])
					store_seterr(err, errlen,
						     "%s: write refused by its check", s->uri);
				ret = 1;
				goto out;
			}
		}
		free(fin);
		if (store_ops_final(s->uri, ops, nops, &fin, &nfin, err, errlen) < 0)
			goto out;
		for (size_t i = 0; i < nfin; i++) {
			const char *what = !utf8_text(fin[i].key, strlen(fin[i].key), &bad)
						   ? "key"
					   : fin[i].kind == STORE_PUT &&
							   !utf8_text(fin[i].value,
								       strlen(fin[i].value), &bad)
						   ? "value"
						   : NULL;

			if (what) {
				store_seterr(err, errlen,
					     "%s: store_txn: the %s of \"%s\" is not UTF-8"
					     " text (byte %zu)", s->uri, what, fin[i].key, bad);
				goto out;
			}
		}
		if (drop_unchanged(s, fin, &nfin, err, errlen) < 0)
			goto out;
		reply = post(s, "/v3/kv/txn", txn_req(s, mod, fin, nfin), NULL, err,
			     errlen);
		if (!reply)
			goto out;
		if (json_is_true(json_object_get(reply, "succeeded"))) {
			if (rev)
				*rev = header_rev(reply);
			note_rev(s, header_rev(reply));
			ret = 0;
			goto out;
		}
		json_decref(reply);
		reply = NULL;
		if (now_ns() - start > (uint64_t)TXN_RETRY_MS * 1000000u ||
		    !store_wait_ms(&s->base, 1)) {
			store_seterr(err, errlen,
				     "%s: store_txn: other writers kept winning for %" PRIu64
				     " ms (%" PRIu64 " tries)", s->uri,
				     (now_ns() - start) / 1000000u, tries);
			goto out;
		}
		/* Up to 1, 2, 4 ... 32 ms: the writers that lost spread out. */
		sleep_ms((unsigned)rand_r(&s->seed) % (1u << (tries < 6 ? tries : 6)));
	}
out:
	json_decref(reply);
	free(fin);
	return ret;
}

/* --- Changes --- */

/* Moves the queued changes up to revision end out of the queue into *out
 * (malloc'd); returns how many. */
static size_t take_upto(struct watch *w, uint64_t end, struct ev **out)
{
	size_t n = 0;

	while (w->qhead + n < w->qn && w->q[w->qhead + n].rev <= end)
		n++;
	*out = n ? xmalloc(n * sizeof(**out)) : NULL;
	if (n)
		memcpy(*out, w->q + w->qhead, n * sizeof(**out));
	w->qhead += n;
	/* The dead front is reused once it is the bigger part. */
	if (w->qhead > 64 && w->qhead > w->qn / 2) {
		memmove(w->q, w->q + w->qhead, (w->qn - w->qhead) * sizeof(*w->q));
		w->qn -= w->qhead;
		w->qhead = 0;
	}
	return n;
}

/* Puts k changes back at the head of the queue. */
static void put_back(struct watch *w, const struct ev *evs, size_t k)
{
	size_t live = w->qn - w->qhead;

	if (w->qhead < k) {
		if (live + k > w->qcap)
			grow((void **)&w->q, &w->qcap, live + k, sizeof(*w->q));
		memmove(w->q + k, w->q + w->qhead, live * sizeof(*w->q));
		w->qhead = k;
		w->qn = k + live;
	}
	w->qhead -= k;
	memcpy(w->q + w->qhead, evs, k * sizeof(*evs));
}

/* The changes after since come from the watch thread's queue, started
 * from since + 1 when it does not hold them.  They are delivered up to the
 * sequencer's revision read now (the last store_txn): once the watch has
 * shown it, every change up to it is queued, since the watched range holds
 * the sequencer too.  Whatever else it already queued goes along. */
static int etcd_changes(struct store *base, uint64_t since, store_change_fn fn,
			void *arg, uint64_t *now, char *err, size_t errlen)
{
	struct etcd_store *s = ES(base);
	struct watch *w = &s->w;
	struct ev *batch = NULL;
	size_t n = 0, i;
	uint64_t mod, cur, end, last, upto, gen, dropped_rev = 0;
	unsigned dropped = 0;
	struct timespec until;

	if (now)
		*now = since;
	if (read_seq(s, &mod, &cur, err, errlen) < 0)
		return -1;
	if (since > cur) {
		store_seterr(err, errlen,
			     "%s: revision %" PRIu64 " is ahead of the store (at %" PRIu64
			     "); was etcd replaced?", s->uri, since, cur);
		if (now)
			*now = cur;
		return -2;
	}
	pthread_mutex_lock(&w->mu);
	if (w->compacted && since + 1 < w->compacted)
		goto compacted;
	if (!w->active || w->compacted || since < w->base)
		watch_restart(s, since);
	/* Changes up to since are the caller's already. */
	n = take_upto(w, since, &batch);
	for (i = 0; i < n; i++)
		ev_free(&batch[i]);
	free(batch);
	batch = NULL;
	if (w->base < since)
		w->base = since;
	last = w->seen;
	until = deadline_in(CATCHUP_MS);
	while (w->seen < mod && !w->compacted && w->active) {
		if (pthread_cond_timedwait(&w->cond, &w->mu, &until) == ETIMEDOUT) {
			if (w->seen == last) {
				store_seterr(err, errlen,
					     "%s: the watch did not reach revision %" PRIu64
					     " within %d ms (at %" PRIu64 "%s%s)", s->uri,
					     mod, CATCHUP_MS, w->seen, w->err[0] ? ": " : "",
					     w->err);
				pthread_mutex_unlock(&w->mu);
				return -1;
			}
			last = w->seen;
			until = deadline_in(CATCHUP_MS);
		}
	}
	if (w->compacted)
		goto compacted;
	if (!w->active) {
		store_seterr(err, errlen, "%s: %s", s->uri, w->err);
		pthread_mutex_unlock(&w->mu);
		return -1;
	}
	end = w->seen > mod ? w->seen : mod;
	if (end < since)
		end = since;
	gen = w->gen;
	n = take_upto(w, end, &batch);
	if (w->dropped && (!s->dropped_said ||
			   now_ns() - s->dropped_said >= DROPPED_SAY_MS * 1000000ull)) {
		dropped = w->dropped;
		dropped_rev = w->dropped_rev;
		w->dropped = 0;
		s->dropped_said = now_ns();
	}
	pthread_mutex_unlock(&w->mu);
	/* Here, not in the watch thread: warn runs on the caller's. */
	if (dropped)
		store_warn(base, "%s: watch: %u event%s not decodable, skipped (the last at"
			   " revision %" PRIu64 "): their changes are missed until the next"
			   " full read", s->uri, dropped,
			   dropped == 1 ? "" : "s", dropped_rev);

	upto = end;
	for (i = 0; i < n; i++) {
		struct ev *e = &batch[i];

		if (!text_ok(s, e->key, e->klen, e->value, e->vlen, e->rev, 0))
			continue;
		if (fn(arg, e->rev, e->key, e->value)) {
			/* Resuming from here repeats part of this revision
			 * at most and skips nothing. */
			upto = e->rev - 1;
			break;
		}
	}
	if (now)
		*now = upto;
	/* What was not visited goes back to the head of the queue, unless a
	 * call inside fn restarted the watch. */
	pthread_mutex_lock(&w->mu);
	for (i = 0; i < n && batch[i].rev <= upto; i++)
		ev_free(&batch[i]);
	if (i < n && w->gen == gen) {
		put_back(w, batch + i, n - i);
		i = n;
	} else {
		for (; i < n; i++)
			ev_free(&batch[i]);
	}
	if (w->gen == gen && w->base < upto)
		w->base = upto;
	pthread_mutex_unlock(&w->mu);
	free(batch);
	return 0;

compacted:
	store_seterr(err, errlen,
		     "%s: history up to revision %" PRIu64 " is no longer kept"
		     " (asked for changes after %" PRIu64 ")", s->uri,
		     w->compacted - 1, since);
	/* Idle until a scan (or a call from further on) restarts it. */
	w->active = false;
	pthread_mutex_unlock(&w->mu);
	if (now)
		*now = cur;
	return -2;
}

static int etcd_watch_fd(struct store *base)
{
	struct etcd_store *s = ES(base);
	uint64_t rev;

	s->want_watch = true;
	/* Starts from the newest revision known; from any revision the
	 * caller holds, store_changes restarts it if need be. */
	if (s->known_rev)
		note_rev(s, s->known_rev);
	else
		etcd_rev(base, &rev, NULL, 0);
	return s->w.efd;
}

static void etcd_watch_ack(struct store *base)
{
	efd_clear(ES(base)->w.efd);
}

/* --- Host status --- */

static struct lease *lease_of(struct etcd_store *s, const char *host, bool add)
{
	struct lease *l;

	for (l = s->leases; l; l = l->next)
		if (!strcmp(l->host, host))
			return l;
	if (!add)
		return NULL;
	l = xcalloc(1, sizeof(*l));
	l->host = xstrdup(host);
	l->next = s->leases;
	s->leases = l;
	return l;
}

static json_t *lease_req(int64_t id, unsigned ttl)
{
	char num[24];

	snprintf(num, sizeof(num), "%" PRId64, id);
	return id ? json_pack("{s:s}", "ID", num) : json_pack("{s:I}", "TTL", (json_int_t)ttl);
}

static int64_t lease_id(json_t *j)
{
	json_t *v = json_object_get(j, "ID");
	long long id = 0;
	char *end;

	if (json_is_string(v)) {
		errno = 0;
		id = strtoll(json_string_value(v), &end, 10);
		if (errno || *end || end == json_string_value(v))
			id = 0;
	} else if (json_is_integer(v)) {
		id = json_integer_value(v);
	}
	return id > 0 ? (int64_t)id : 0;
}

/* Keeps the lease alive once: 1 while it holds, 0 when it expired. */
static int keepalive(struct etcd_store *s, int64_t id, char *err, size_t errlen)
{
	json_t *reply = post(s, "/v3/lease/keepalive", lease_req(id, 0), NULL, err,
			     errlen);
	uint64_t ttl = 0;

	if (!reply)
		return -1;
	/* A stream of one result; an expired lease comes back without TTL. */
	jnum(json_object_get(reply, "result"), "TTL", &ttl);
	json_decref(reply);
	return ttl > 0;
}

static int lease_revoke(struct etcd_store *s, int64_t id, char *err, size_t errlen)
{
	json_t *reply;
	int code;

	reply = post(s, "/v3/lease/revoke", lease_req(id, 0), &code, err, errlen);
	json_decref(reply);
	/* 5, NotFound: expired already, which is as good. */
	return reply || code == 5 ? 0 : -1;
}

/* Status and liveness in one transaction: hosts/<host> without a lease (it
 * stays), alive/<host> on the lease (it goes with it). */
static int etcd_host_publish(struct store *base, const char *host,
			     const char *value, unsigned ttl_s, char *err,
			     size_t errlen)
{
	struct etcd_store *s = ES(base);
	struct lease *l = lease_of(s, host, true);
	struct buf hk = { 0 }, ak = { 0 };
	json_t *req, *reply;
	int64_t old = 0;
	int ret = -1, rc;

	if (l->id && l->ttl == ttl_s && l->value && !strcmp(l->value, value)) {
		rc = keepalive(s, l->id, err, errlen);
		if (rc != 0)
			return rc > 0 ? 0 : -1;
		l->id = 0; /* expired: grant and put again */
	}
	if (l->id && l->ttl != ttl_s) {
		old = l->id;
		l->id = 0;
	}
	if (!l->id) {
		reply = post(s, "/v3/lease/grant", lease_req(0, ttl_s), NULL, err, errlen);
		if (!reply)
			goto out;
		l->id = lease_id(reply);
		json_decref(reply);
		if (!l->id) {
			store_seterr(err, errlen, "%s: lease grant without an ID", s->where);
			goto out;
		}
		l->ttl = ttl_s;
	}
	buf_add(&hk, s->hosts.p, s->hosts.n);
	buf_add(&hk, host, strlen(host));
	buf_add(&ak, s->alive.p, s->alive.n);
	buf_add(&ak, host, strlen(host));
	req = json_pack("{s:[o,o]}", "success", put_op(hk.p, hk.n, value, 0),
			put_op(ak.p, ak.n, "", l->id));
	reply = post(s, "/v3/kv/txn", req, NULL, err, errlen);
	if (!reply) {
		l->id = 0; /* perhaps "lease not found": a new one next time */
		goto out;
	}
	json_decref(reply);
	free(l->value);
	l->value = xstrdup(value);
	ret = 0;
out:
	if (old)
		lease_revoke(s, old, NULL, 0);
	free(hk.p);
	free(ak.p);
	return ret;
}

static int etcd_host_withdraw(struct store *base, const char *host, char *err,
			      size_t errlen)
{
	struct etcd_store *s = ES(base);
	struct lease *l = lease_of(s, host, false);
	struct buf ak = { 0 };
	json_t *reply;
	int ret = -1;

	if (l && l->id) {
		if (lease_revoke(s, l->id, err, errlen) < 0)
			return -1;
		l->id = 0;
		free(l->value);
		l->value = NULL;
	}
	/* Also when another handle published it. */
	buf_add(&ak, s->alive.p, s->alive.n);
	buf_add(&ak, host, strlen(host));
	reply = post(s, "/v3/kv/deleterange", json_pack("{s:o}", "key", jb64(ak.p, ak.n)),
		     NULL, err, errlen);
	if (reply)
		ret = 0;
	json_decref(reply);
	free(ak.p);
	return ret;
}

struct host_row {
	char *host, *value;
	bool alive;
};

struct host_list {
	struct host_row *v;
	size_t n, cap;
	struct strv alive;
};

static int host_one(struct etcd_store *s, void *arg, const char *key,
		    size_t klen, const char *value, size_t vlen, uint64_t mod)
{
	struct host_list *l = arg;

	if (!text_ok(s, key, klen, value, vlen, mod, s->hosts.n - 6))
		return 0;
	if (l->n == l->cap)
		grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v));
	l->v[l->n++] = (struct host_row){ xstrdup(key + s->hosts.n), xstrdup(value), false };
	return 0;
}

static int alive_one(struct etcd_store *s, void *arg, const char *key,
		     size_t klen, const char *value, size_t vlen, uint64_t mod)
{
	struct host_list *l = arg;

	if (utf8_text(key, klen, NULL))
		strv_push(&l->alive, key + s->alive.n);
	return 0;
}

/* Both ranges at one revision; etcd returns keys in order, so the hosts
 * come sorted by name. */
static int etcd_host_scan(struct store *base, store_host_fn fn, void *arg,
			  char *err, size_t errlen)
{
	struct etcd_store *s = ES(base);
	struct host_list l = { 0 };
	size_t k = 0;
	uint64_t at = 0;
	int ret = -1;

	if (range_all(s, s->hosts.p, s->hosts.n, &at, host_one, &l, err, errlen) < 0 ||
	    range_all(s, s->alive.p, s->alive.n, &at, alive_one, &l, err, errlen) < 0)
		goto out;
	for (size_t i = 0; i < l.n; i++) {
		while (k < l.alive.n && strcmp(l.alive.v[k], l.v[i].host) < 0)
			k++;
		l.v[i].alive = k < l.alive.n && !strcmp(l.alive.v[k], l.v[i].host);
	}
	for (size_t i = 0; i < l.n; i++) {
		struct store_host h = { l.v[i].host, l.v[i].value, l.v[i].alive };

		if (fn(arg, &h))
			break;
	}
	ret = 0;
out:
	for (size_t i = 0; i < l.n; i++) {
		free(l.v[i].host);
		free(l.v[i].value);
	}
	free(l.v);
	strv_free(&l.alive);
	return ret;
}

static const struct store_ops etcd_ops = {
	.close = etcd_close,
	.txn = etcd_txn,
	.rev = etcd_rev,
	.get = etcd_get,
	.scan = etcd_scan,
	.changes = etcd_changes,
	.watch_fd = etcd_watch_fd,
	.watch_ack = etcd_watch_ack,
	.host_publish = etcd_host_publish,
	.host_withdraw = etcd_host_withdraw,
	.host_scan = etcd_host_scan,
};
