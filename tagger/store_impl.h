/* What the store's backends share behind tagger/store.h: the table of
 * functions each backend fills in, and the helpers both use. */
#ifndef DFW_STORE_IMPL_H
#define DFW_STORE_IMPL_H

#include "tagger/store.h"

struct store_ops {
	void (*close)(struct store *s);
	int (*txn)(struct store *s, const struct store_op *ops, size_t nops,
		   store_check_fn check, void *arg, uint64_t *rev, char *err,
		   size_t errlen);
	int (*rev)(struct store *s, uint64_t *rev, char *err, size_t errlen);
	int (*get)(struct store *s, const char *key, char **value, char *err,
		   size_t errlen);
	int (*scan)(struct store *s, const char *prefix, store_kv_fn fn,
		    void *arg, uint64_t *rev, char *err, size_t errlen);
	int (*changes)(struct store *s, uint64_t since, store_change_fn fn,
		       void *arg, uint64_t *now, char *err, size_t errlen);
	int (*watch_fd)(struct store *s);
	void (*watch_ack)(struct store *s);
	int (*host_publish)(struct store *s, const char *host,
			    const char *value, unsigned ttl_s, char *err,
			    size_t errlen);
	int (*host_withdraw)(struct store *s, const char *host, char *err,
			     size_t errlen);
	int (*host_scan)(struct store *s, store_host_fn fn, void *arg,
			 char *err, size_t errlen);
};

/* The head of every backend's handle. */
struct store {
	const struct store_ops *ops;
	store_warn_fn warn;
	void *warn_arg;
	uint64_t deadline_ns; /* store_set_deadline: now_ns() bound, or 0 */
};

/* How long a wait of at most max_ms may take now: max_ms, or less to keep
 * to the deadline (0: it has passed). */
unsigned store_wait_ms(const struct store *s, unsigned max_ms);

struct store *store_sqlite_open(const char *path, bool create, char *err,
				size_t errlen);
/* uri is the whole "etcd://..." string; never contacts etcd. */
struct store *store_etcd_open(const char *uri, bool create, char *err,
			      size_t errlen);

void store_seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Checks a transaction's ops (who names the store in the message) and
 * returns them with only the last op per key kept, in the order of those
 * last ops: *out is malloc'd (NULL when nops is 0), its strings borrowed
 * from ops.  Returns 0 or -1. */
int store_ops_final(const char *who, const struct store_op *ops, size_t nops,
		    struct store_op **out, size_t *nout, char *err,
		    size_t errlen);

/* The least string above every string that starts with the n bytes of
 * prefix, or NULL when there is none (n is 0, or all bytes are 0xff);
 * malloc'd, with its length in *len. */
char *store_prefix_end(const char *prefix, size_t n, size_t *len);

#endif
