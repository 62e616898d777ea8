/* The desired-state store: a revisioned key/value space.
 *
 * Every successful write is one new revision, durable before the call
 * returns.  Readers take a consistent snapshot at a revision and then follow
 * the changes after it, so a watcher that was away loses nothing.  The store
 * knows nothing of rules or the kernel.
 *
 * Keys used by dfw (see docs/STORE.md):
 *   policy              the validated config text (inventory, groups, rules)
 *   policy-file         the file name that text came from, for diagnostics
 *   tag/<vm>/<tag>      present while the VM carries the tag (value "")
 *   placement/<vm>      the host a VM runs on since it migrated (tagger/tags.h)
 *
 * Backends: "sqlite:PATH" or a plain PATH (SQLite, WAL mode), and
 * "etcd://HOST:PORT[/PREFIX]" (etcd v3 through its JSON gateway; PREFIX
 * defaults to "dfw").  Revisions only increase; with etcd they have gaps
 * (they are etcd's own revisions).  A handle is used by one thread at a
 * time. */
#ifndef DFW_STORE_H
#define DFW_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;

/* Opens (creating when missing, if create is true) the store at uri.
 * On failure returns NULL and writes a one-line reason to err.  An etcd
 * store is opened without contacting etcd: the first operation that cannot
 * reach it fails instead ("etcd HOST:PORT: connection refused").  A
 * malformed URI or an unknown scheme sets errno to EINVAL. */
struct store *store_open(const char *uri, bool create, char *err, size_t errlen);
void store_close(struct store *s);

enum store_op_kind { STORE_PUT, STORE_DEL };

struct store_op {
	enum store_op_kind kind;
	const char *key;
	const char *value; /* PUT only; may be "" */
};

/* Applies all ops atomically as ONE new revision, also when several
 * processes write at once (writers are serialized, none is lost).  When
 * several ops name one key, only the last one counts.  A DEL of a missing
 * key, or a PUT of the value already there, is a no-op within the
 * transaction (no change in the history).  When check is non-NULL
 * it is called inside the transaction, before the ops are applied, and
 * may veto the write by returning non-zero (the write is then abandoned and
 * store_txn returns 1): this is how callers validate against the current
 * state without a race.  With etcd the check reads the revision the write
 * is based on and runs again when another writer got in first, so it must
 * have no effect beyond its arg.  Returns 0 on success with *rev set, 1 on
 * veto, -1 on error (reason in err). */
typedef int (*store_check_fn)(struct store *s, void *arg, char *err, size_t errlen);
int store_txn(struct store *s, const struct store_op *ops, size_t nops,
	      store_check_fn check, void *arg, uint64_t *rev,
	      char *err, size_t errlen);

/* Current revision (0 for an empty store). */
int store_rev(struct store *s, uint64_t *rev, char *err, size_t errlen);

/* Reads one key.  Returns 0 with *value malloc'd (caller frees), 1 when the
 * key is missing, -1 on error. */
int store_get(struct store *s, const char *key, char **value,
	      char *err, size_t errlen);

/* Visits every key with the given prefix, in key order, from one
 * consistent snapshot; *rev receives that snapshot's revision.
 * fn returns non-zero to stop early.  Returns 0 or -1. */
typedef int (*store_kv_fn)(void *arg, const char *key, const char *value);
int store_scan(struct store *s, const char *prefix, store_kv_fn fn, void *arg,
	       uint64_t *rev, char *err, size_t errlen);

/* Visits every change after revision since, oldest first, as
 * fn(arg, rev, key, value) with value NULL for a deletion; *now receives
 * the revision the visit ended at.  Returns 0, -1 on error, or -2 when
 * history before since is no longer kept (caller must re-scan). */
typedef int (*store_change_fn)(void *arg, uint64_t rev, const char *key,
			       const char *value);
int store_changes(struct store *s, uint64_t since, store_change_fn fn,
		  void *arg, uint64_t *now, char *err, size_t errlen);

/* A file descriptor that becomes readable when the store may have changed
 * (SQLite: inotify on the database files; etcd: a watch held by a thread of
 * the handle, which reconnects by itself); the caller then reads it empty
 * with store_watch_ack() and calls store_changes().  -1 if not supported. */
int store_watch_fd(struct store *s);
void store_watch_ack(struct store *s);

/* Where the store reports contents it skips (etcd: a key or value that is
 * not UTF-8 text), once per key and value, as one line without newline.
 * By default a log line on stderr. */
typedef void (*store_warn_fn)(void *arg, const char *msg);
void store_set_warn(struct store *s, store_warn_fn fn, void *arg);

/* Bounds how long the calls that follow may wait, all together, for a
 * lock (SQLite) or for answers (etcd) to ms from now; a call that runs
 * out fails as when the store does not answer in time.  0 ends the bound.
 * For a caller that must not stall (dfwd's loop) and tries again later. */
void store_set_deadline(struct store *s, unsigned ms);
/* Reports contents through that function: also for the store's users,
 * when a key or value dfw did not write is left alone. */
void store_warn(struct store *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Host status: each agent's last report, outside the revisioned keyspace
 * (publishing never makes a new desired-state revision a watcher sees). */
struct store_host {
	const char *host;
	const char *value; /* what the host published, opaque text (JSON) */
	bool alive;        /* etcd: its lease holds; SQLite: published within its ttl */
};
/* Publishes this host's status, alive for ttl_s seconds unless published
 * again.  Call it on every change and every ttl_s/3 seconds; a call with
 * the value unchanged is cheap (etcd: lease keepalive only, re-granting and
 * re-putting if the lease expired).  Returns 0 or -1. */
int store_host_publish(struct store *s, const char *host, const char *value,
		       unsigned ttl_s, char *err, size_t errlen);
/* Withdraws liveness (clean shutdown): the status stays, alive false. */
int store_host_withdraw(struct store *s, const char *host, char *err, size_t errlen);
typedef int (*store_host_fn)(void *arg, const struct store_host *h);
/* Visits every host that ever published, sorted by name; fn returns
 * non-zero to stop early.  Returns 0 or -1. */
int store_host_scan(struct store *s, store_host_fn fn, void *arg, char *err, size_t errlen);

#endif
