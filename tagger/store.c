/* The SQLite backend of the desired-state store: one WAL-mode database file
 * holding the current keys, the change history and the revision counter. */
#include "tagger/store.h"

#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"

#define STORE_SCHEMA 1
/* PRAGMA application_id: 0x64667731, "dfw1", so that another program's
 * SQLite file is told apart from a damaged store. */
#define STORE_APP_ID 1684436785
#define STR_(x) #x
#define STR(x) STR_(x)
/* How long a writer waits for another one before giving up. */
#define STORE_BUSY_MS 10000

/* kv is the current state; changes is the history, one row per key that a
 * revision changed (value NULL = deleted), kept in insertion order by seq;
 * meta holds "schema", "rev" (the current revision) and "compacted" (history
 * at or below it is gone). */
static const char schema_sql[] =
	"CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
	" mod_rev INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE changes (seq INTEGER PRIMARY KEY, rev INTEGER NOT NULL,"
	" key TEXT NOT NULL, value TEXT);"
	"CREATE INDEX changes_rev ON changes (rev);"
	"CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
	" WITHOUT ROWID;"
	"INSERT INTO meta VALUES ('schema', 1), ('rev', 0), ('compacted', 0);"
	"PRAGMA application_id = " STR(STORE_APP_ID) ";";

static const struct { const char *type, *name; } schema_objects[] = {
	{ "table", "kv" }, { "table", "changes" }, { "index", "changes_rev" },
	{ "table", "meta" },
};

/* Statements prepared once per handle.  The ones visiting many rows (scan,
 * changes) are prepared per call instead, so that a callback may use the
 * handle again without resetting the statement being stepped. */
enum { ST_META, ST_SET_REV, ST_GET, ST_PUT, ST_DEL, ST_LOG, ST_COUNT };

static const char *const stmt_sql[ST_COUNT] = {
	[ST_META] = "SELECT value FROM meta WHERE name = ?1",
	[ST_SET_REV] = "UPDATE meta SET value = ?1 WHERE name = 'rev'",
	[ST_GET] = "SELECT value FROM kv WHERE key = ?1",
	/* A PUT of the value already there changes nothing (changes() == 0). */
	[ST_PUT] = "INSERT INTO kv (key, value, mod_rev) VALUES (?1, ?2, ?3)"
		   " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
		   " mod_rev = excluded.mod_rev WHERE value IS NOT excluded.value",
	[ST_DEL] = "DELETE FROM kv WHERE key = ?1",
	[ST_LOG] = "INSERT INTO changes (rev, key, value) VALUES (?1, ?2, ?3)",
};

struct store {
	sqlite3 *db;
	char *path;         /* as the caller gave it, for messages */
	char *dir;          /* absolute directory of the file, for the watch */
	sqlite3_stmt *st[ST_COUNT];
	int watch_fd;
	uint64_t busy_since;
};

static void __attribute__((format(printf, 3, 4)))
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* "PATH: what: sqlite's reason" */
static void db_err(const struct store *s, char *err, size_t errlen,
		   const char *what)
{
	seterr(err, errlen, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Waits for a lock held by another connection in short, even steps up to
 * STORE_BUSY_MS.  SQLite's default handler backs off to 100 ms sleeps, so
 * under steady contention a waiter keeps missing the short gaps between
 * other writers' transactions and can time out; polling every millisecond
 * catches them. */
static int busy_wait(void *arg, int count)
{
	struct store *s = arg;
	uint64_t now = now_ns();

	if (count == 0)
		s->busy_since = now;
	if (now - s->busy_since >= (uint64_t)STORE_BUSY_MS * 1000000u)
		return 0;
	sleep_ms(1);
	return 1;
}

static int exec(struct store *s, const char *sql, const char *what, char *err,
		size_t errlen)
{
	if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		db_err(s, err, errlen, what);
		return -1;
	}
	return 0;
}

/* Ends whatever transaction is open, keeping nothing; errors are moot. */
static void rollback(struct store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Whether to try again after rc: while a busy database stays busy for
 * less than STORE_BUSY_MS since start.  The busy handler normally does the
 * waiting; this covers the cases where SQLite reports SQLITE_BUSY without
 * calling it (changing the journal mode, another connection recovering
 * the WAL). */
static bool retry_busy(int rc, uint64_t start)
{
	if ((rc & 0xff) != SQLITE_BUSY ||
	    now_ns() - start >= (uint64_t)STORE_BUSY_MS * 1000000u)
		return false;
	sleep_ms(1);
	return true;
}

/* Takes the write lock. */
static int begin_write(struct store *s, char *err, size_t errlen)
{
	uint64_t start = now_ns();
	int rc;

	do
		rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	while (retry_busy(rc, start));
	if (rc != SQLITE_OK) {
		db_err(s, err, errlen, "cannot start a write");
		return -1;
	}
	return 0;
}

/* Starts a read snapshot unless a transaction is already open (a check
 * reading inside store_txn); *began says whether snap_end must end it. */
static int snap_begin(struct store *s, bool *began, char *err, size_t errlen)
{
	*began = false;
	if (!sqlite3_get_autocommit(s->db))
		return 0;
	if (exec(s, "BEGIN", "cannot read the store", err, errlen) < 0)
		return -1;
	*began = true;
	return 0;
}

static void snap_end(struct store *s, bool began)
{
	if (began && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rollback(s);
}

static int meta_get(struct store *s, const char *name, uint64_t *out,
		    char *err, size_t errlen)
{
	sqlite3_stmt *st = s->st[ST_META];
	sqlite3_int64 v;
	int rc, ret = -1;

	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		seterr(err, errlen, "%s: not a dfw store: no \"%s\" in table meta",
		       s->path, name);
		goto out;
	}
	if (rc != SQLITE_ROW) {
		db_err(s, err, errlen, "cannot read the store");
		goto out;
	}
	v = sqlite3_column_int64(st, 0);
	if (v < 0) {
		seterr(err, errlen, "%s: damaged store: meta %s is %lld", s->path,
		       name, (long long)v);
		goto out;
	}
	*out = (uint64_t)v;
	ret = 0;
out:
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

/* Steps a cached data-changing statement once and resets it; returns the
 * number of rows it changed, or -1. */
static int step_change(struct store *s, sqlite3_stmt *st, char *err,
		       size_t errlen)
{
	int ret;

	if (sqlite3_step(st) == SQLITE_DONE) {
		ret = sqlite3_changes(s->db);
	} else {
		db_err(s, err, errlen, "cannot write");
		ret = -1;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

/* Runs a statement returning one row (a pragma, a count) and gives its
 * first column as text into buf (truncated) or as an integer; returns an
 * SQLite result code. */
static int query_one(struct store *s, const char *sql, char *buf, size_t len,
		     sqlite3_int64 *num)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *v;
	uint64_t start = now_ns();
	int rc;

	rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto out;
	while (retry_busy(rc = sqlite3_step(st), start))
		sqlite3_reset(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		goto out;
	if (buf) {
		v = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
		snprintf(buf, len, "%s", v ? (const char *)v : "");
	}
	if (num)
		*num = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	rc = SQLITE_OK;
out:
	sqlite3_finalize(st);
	return rc;
}

/* Describes a failure to read the file at open: a file that is not a
 * database or is corrupt is damaged, anything else (permissions, I/O) is
 * not the file's fault. */
static void open_err(struct store *s, int rc, char *err, size_t errlen)
{
	int sys = sqlite3_system_errno(s->db);

	switch (rc & 0xff) {
	case SQLITE_NOTADB:
		db_err(s, err, errlen, "not a dfw store");
		break;
	case SQLITE_CORRUPT:
		db_err(s, err, errlen, "damaged store");
		break;
	default:
		if (sys)
			seterr(err, errlen, "%s: cannot open store: %s (%s)",
			       s->path, sqlite3_errmsg(s->db), strerror(sys));
		else
			db_err(s, err, errlen, "cannot open store");
	}
}

/* Checks that a non-empty database is a dfw store with all its tables. */
static int schema_check(struct store *s, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	sqlite3_int64 id = 0;
	int rc, ret = -1;

	rc = query_one(s, "PRAGMA application_id", NULL, 0, &id);
	if (rc != SQLITE_OK) {
		open_err(s, rc, err, errlen);
		goto out;
	}
	if (id != STORE_APP_ID) {
		seterr(err, errlen,
		       "%s: not a dfw store: an SQLite database of another program",
		       s->path);
		goto out;
	}
	rc = sqlite3_prepare_v2(s->db, "SELECT 1 FROM sqlite_master"
				" WHERE type = ?1 AND name = ?2", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		open_err(s, rc, err, errlen);
		goto out;
	}
	for (size_t i = 0; i < ARRAY_SIZE(schema_objects); i++) {
		sqlite3_bind_text(st, 1, schema_objects[i].type, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, schema_objects[i].name, -1, SQLITE_STATIC);
		rc = sqlite3_step(st);
		sqlite3_reset(st);
		if (rc == SQLITE_DONE) {
			seterr(err, errlen, "%s: not a dfw store: missing %s %s",
			       s->path, schema_objects[i].type,
			       schema_objects[i].name);
			goto out;
		}
		if (rc != SQLITE_ROW) {
			open_err(s, rc, err, errlen);
			goto out;
		}
	}
	ret = 0;
out:
	sqlite3_finalize(st);
	return ret;
}

/* Creates the schema in an empty file (when create) or checks that a
 * non-empty one is a dfw store of this schema version, then prepares the
 * cached statements. */
static int schema_setup(struct store *s, bool create, char *err, size_t errlen)
{
	sqlite3_int64 n = 0;
	uint64_t v;
	int rc, ret = -1;

	/* IMMEDIATE so that two processes creating the store at once do not
	 * both see it empty. */
	if (create)
		rc = begin_write(s, err, errlen);
	else
		rc = exec(s, "BEGIN", "cannot open store", err, errlen);
	if (rc < 0)
		goto out;
	rc = query_one(s, "SELECT count(*) FROM sqlite_master", NULL, 0, &n);
	if (rc != SQLITE_OK) {
		open_err(s, rc, err, errlen);
		goto out;
	}
	if (n == 0 && !create) {
		seterr(err, errlen,
		       "%s: no such store (empty file; run dfwctl apply first?)",
		       s->path);
		goto out;
	}
	if (n == 0)
		rc = exec(s, schema_sql, "cannot create the store", err, errlen);
	else
		rc = schema_check(s, err, errlen);
	if (rc < 0)
		goto out;
	/* Preparing every statement also checks the columns they use. */
	for (size_t i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &s->st[i],
				       NULL) != SQLITE_OK) {
			db_err(s, err, errlen, "not a dfw store");
			goto out;
		}
	}
	if (meta_get(s, "schema", &v, err, errlen) < 0)
		goto out;
	if (v != STORE_SCHEMA) {
		seterr(err, errlen, "%s: store schema version %" PRIu64
		       ", this dfw reads version %d", s->path, v, STORE_SCHEMA);
		goto out;
	}
	if (meta_get(s, "rev", &v, err, errlen) < 0 ||
	    meta_get(s, "compacted", &v, err, errlen) < 0)
		goto out;
	if (exec(s, "COMMIT", "cannot open store", err, errlen) < 0)
		goto out;
	ret = 0;
out:
	if (ret < 0)
		rollback(s);
	return ret;
}

struct store *store_open(const char *uri, bool create, char *err, size_t errlen)
{
	struct store *s = NULL, *ret = NULL;
	const char *path = uri, *full;
	struct stat sb;
	char buf[256];
	char *slash;
	int rc;

	if (!strncmp(uri, "sqlite:", 7)) {
		path = uri + 7;
	} else if (strstr(uri, "://")) {
		seterr(err, errlen,
		       "%s: unsupported store (this build knows sqlite:PATH)", uri);
		goto out;
	}
	if (!*path) {
		seterr(err, errlen, "%s: empty store path", uri);
		goto out;
	}
	/* Ask the file system first: SQLite's reason would be "unable to open
	 * database file". */
	if (!create && stat(path, &sb) < 0) {
		if (errno == ENOENT)
			seterr(err, errlen,
			       "%s: no such store (run dfwctl apply first?)", path);
		else
			seterr(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}

	s = xcalloc(1, sizeof(*s));
	s->path = xstrdup(path);
	s->watch_fd = -1;
	rc = sqlite3_open_v2(path, &s->db,
			     SQLITE_OPEN_READWRITE |
				     (create ? SQLITE_OPEN_CREATE : 0),
			     NULL);
	if (rc != SQLITE_OK) {
		if (!s->db) {
			seterr(err, errlen, "%s: cannot open store: out of memory",
			       path);
			goto out;
		}
		open_err(s, rc, err, errlen);
		goto out;
	}
	sqlite3_busy_handler(s->db, busy_wait, s);

	/* The first statement reads the header: garbage fails here. */
	rc = query_one(s, "PRAGMA journal_mode = WAL", buf, sizeof(buf), NULL);
	if (rc != SQLITE_OK) {
		open_err(s, rc, err, errlen);
		goto out;
	}
	if (strcmp(buf, "wal")) {
		seterr(err, errlen,
		       "%s: cannot use WAL mode (journal mode stays %s)", path,
		       buf);
		goto out;
	}
	/* FULL: in WAL mode this syncs the log at every commit, so a revision
	 * survives a crash once store_txn has returned. */
	if (exec(s, "PRAGMA synchronous = FULL", "cannot open store", err,
		 errlen) < 0)
		goto out;
	rc = query_one(s, "PRAGMA quick_check", buf, sizeof(buf), NULL);
	if (rc != SQLITE_OK) {
		open_err(s, rc, err, errlen);
		goto out;
	}
	if (strcmp(buf, "ok")) {
		seterr(err, errlen, "%s: damaged store: %s", path, buf);
		goto out;
	}
	if (schema_setup(s, create, err, errlen) < 0)
		goto out;

	/* SQLite resolved the absolute name; the watch must not depend on a
	 * later chdir. */
	full = sqlite3_db_filename(s->db, "main");
	if (!full || !*full)
		full = path;
	slash = strrchr(full, '/');
	if (!slash)
		s->dir = xstrdup(".");
	else
		s->dir = xasprintf("%.*s", (int)(slash == full ? 1 : slash - full),
				   full);
	ret = s;
	s = NULL;
out:
	store_close(s);
	return ret;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->st[i]);
	sqlite3_close(s->db);
	if (s->watch_fd >= 0)
		close(s->watch_fd);
	free(s->path);
	free(s->dir);
	free(s);
}

/* Applies one op at revision rev, logging it when it changed something. */
static int apply_op(struct store *s, const struct store_op *op, uint64_t rev,
		    char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int n;

	if (op->kind == STORE_PUT) {
		st = s->st[ST_PUT];
		sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, op->value, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)rev);
	} else {
		st = s->st[ST_DEL];
		sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC);
	}
	n = step_change(s, st, err, errlen);
	if (n <= 0)
		return n;
	st = s->st[ST_LOG];
	sqlite3_bind_int64(st, 1, (sqlite3_int64)rev);
	sqlite3_bind_text(st, 2, op->key, -1, SQLITE_STATIC);
	if (op->kind == STORE_PUT)
		sqlite3_bind_text(st, 3, op->value, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 3);
	return step_change(s, st, err, errlen) < 0 ? -1 : 0;
}

/* Every successful call makes exactly one new revision, also when ops is
 * empty or changes nothing (a DEL of a missing key, a PUT of the value
 * already there): callers can count on the revision moving.  Such no-op
 * ops leave no row in the history.  The ops are read only after check
 * returns, so a check may fill in the values they point to from what it
 * read. */
int store_txn(struct store *s, const struct store_op *ops, size_t nops,
	      store_check_fn check, void *arg, uint64_t *rev,
	      char *err, size_t errlen)
{
	bool began = false;
	uint64_t cur;
	int ret = -1;

	/* Inside a check or a scan callback the transaction is not ours to
	 * end. */
	if (!sqlite3_get_autocommit(s->db)) {
		seterr(err, errlen,
		       "%s: store_txn inside a transaction (called from a check?)",
		       s->path);
		goto out;
	}
	if (begin_write(s, err, errlen) < 0)
		goto out;
	began = true;
	if (check) {
		seterr(err, errlen, "%s", "");
		if (check(s, arg, err, errlen)) {
			if (err && errlen && !err[0])
				seterr(err, errlen,
				       "%s: write refused by its check", s->path);
			ret = 1;
			goto out;
		}
		if (sqlite3_get_autocommit(s->db)) {
			seterr(err, errlen,
			       "%s: the transaction ended during its check",
			       s->path);
			goto out;
		}
	}
	for (size_t i = 0; i < nops; i++) {
		if (!ops[i].key ||
		    (ops[i].kind == STORE_PUT ? !ops[i].value
					      : ops[i].kind != STORE_DEL)) {
			seterr(err, errlen, "%s: store_txn: op %zu is malformed",
			       s->path, i);
			goto out;
		}
	}
	if (meta_get(s, "rev", &cur, err, errlen) < 0)
		goto out;
	cur++;
	for (size_t i = 0; i < nops; i++)
		if (apply_op(s, &ops[i], cur, err, errlen) < 0)
			goto out;
	sqlite3_bind_int64(s->st[ST_SET_REV], 1, (sqlite3_int64)cur);
	if (step_change(s, s->st[ST_SET_REV], err, errlen) < 0)
		goto out;
	if (exec(s, "COMMIT", "cannot commit", err, errlen) < 0)
		goto out;
	if (rev)
		*rev = cur;
	ret = 0;
out:
	if (began && ret != 0)
		rollback(s);
	return ret;
}

int store_rev(struct store *s, uint64_t *rev, char *err, size_t errlen)
{
	return meta_get(s, "rev", rev, err, errlen);
}

int store_get(struct store *s, const char *key, char **value,
	      char *err, size_t errlen)
{
	sqlite3_stmt *st = s->st[ST_GET];
	const unsigned char *v;
	int rc, ret = -1;

	*value = NULL;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		ret = 1;
	} else if (rc != SQLITE_ROW || !(v = sqlite3_column_text(st, 0))) {
		db_err(s, err, errlen, "cannot read the store");
	} else {
		*value = xstrdup((const char *)v);
		ret = 0;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return ret;
}

/* The least string above every string that starts with prefix, or NULL when
 * there is none (empty prefix, or only 0xff bytes).  Keys compare bytewise
 * (BINARY collation), which makes [prefix, end) exactly the keys with the
 * prefix and lets SQLite walk the primary key index; LIKE would need '%' and
 * '_' escaped and could not. */
static char *prefix_end(const char *prefix)
{
	size_t n = strlen(prefix);
	char *end;

	while (n && (unsigned char)prefix[n - 1] == 0xff)
		n--;
	if (!n)
		return NULL;
	end = xmalloc(n + 1);
	memcpy(end, prefix, n);
	end[n] = '\0';
	end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
	return end;
}

/* key and value passed to fn are valid only during the call. */
int store_scan(struct store *s, const char *prefix, store_kv_fn fn, void *arg,
	       uint64_t *rev, char *err, size_t errlen)
{
	char *end = prefix_end(prefix);
	sqlite3_stmt *st = NULL;
	const unsigned char *k, *v;
	bool began = false;
	uint64_t cur;
	int rc, ret = -1;

	if (snap_begin(s, &began, err, errlen) < 0)
		goto out;
	if (meta_get(s, "rev", &cur, err, errlen) < 0)
		goto out;
	rc = sqlite3_prepare_v2(s->db,
				end ? "SELECT key, value FROM kv WHERE key >= ?1"
				      " AND key < ?2 ORDER BY key"
				    : "SELECT key, value FROM kv WHERE key >= ?1"
				      " ORDER BY key",
				-1, &st, NULL);
	if (rc != SQLITE_OK) {
		db_err(s, err, errlen, "cannot read the store");
		goto out;
	}
	sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
	if (end)
		sqlite3_bind_text(st, 2, end, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		k = sqlite3_column_text(st, 0);
		v = sqlite3_column_text(st, 1);
		if (!k || !v) {
			db_err(s, err, errlen, "cannot read the store");
			goto out;
		}
		if (fn(arg, (const char *)k, (const char *)v))
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_err(s, err, errlen, "cannot read the store");
		goto out;
	}
	if (rev)
		*rev = cur;
	ret = 0;
out:
	sqlite3_finalize(st);
	snap_end(s, began);
	free(end);
	return ret;
}

/* When fn stops the visit early, *now is the last revision whose changes
 * were all visited, so that resuming from it repeats at most part of one
 * revision and skips nothing.  A since beyond the current revision means
 * the store was replaced under the caller: that is -2 as well. */
int store_changes(struct store *s, uint64_t since, store_change_fn fn,
		  void *arg, uint64_t *now, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *k, *v;
	uint64_t cur, compacted, r;
	bool began = false;
	int rc, ret = -1;

	if (snap_begin(s, &began, err, errlen) < 0)
		goto out;
	if (meta_get(s, "rev", &cur, err, errlen) < 0 ||
	    meta_get(s, "compacted", &compacted, err, errlen) < 0)
		goto out;
	if (now)
		*now = cur;
	if (since < compacted) {
		seterr(err, errlen,
		       "%s: history up to revision %" PRIu64 " is no longer kept"
		       " (asked for changes after %" PRIu64 ")",
		       s->path, compacted, since);
		ret = -2;
		goto out;
	}
	if (since > cur) {
		seterr(err, errlen,
		       "%s: revision %" PRIu64 " is ahead of the store (at %" PRIu64
		       "); was the store replaced?", s->path, since, cur);
		ret = -2;
		goto out;
	}
	rc = sqlite3_prepare_v2(s->db,
				"SELECT rev, key, value FROM changes WHERE rev > ?1"
				" ORDER BY rev, seq", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		db_err(s, err, errlen, "cannot read the store");
		goto out;
	}
	sqlite3_bind_int64(st, 1, (sqlite3_int64)since);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		r = (uint64_t)sqlite3_column_int64(st, 0);
		k = sqlite3_column_text(st, 1);
		v = sqlite3_column_text(st, 2);
		if (!k || (!v && sqlite3_column_type(st, 2) != SQLITE_NULL)) {
			db_err(s, err, errlen, "cannot read the store");
			goto out;
		}
		if (fn(arg, r, (const char *)k, (const char *)v)) {
			if (now)
				*now = r - 1;
			break;
		}
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_err(s, err, errlen, "cannot read the store");
		goto out;
	}
	ret = 0;
out:
	sqlite3_finalize(st);
	snap_end(s, began);
	return ret;
}

/* Another process's commit writes the -wal file (and a checkpoint the
 * database), both in the store's directory.  Other files there wake the
 * watcher too; callers compare revisions, so that only costs a read. */
int store_watch_fd(struct store *s)
{
	int fd;

	if (s->watch_fd >= 0)
		return s->watch_fd;
	fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd < 0)
		return -1;
	if (inotify_add_watch(fd, s->dir, IN_MODIFY | IN_CLOSE_WRITE |
					  IN_CREATE | IN_MOVED_TO) < 0) {
		close(fd);
		return -1;
	}
	s->watch_fd = fd;
	return fd;
}

void store_watch_ack(struct store *s)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	if (!s || s->watch_fd < 0)
		return;
	for (;;) {
		n = read(s->watch_fd, buf, sizeof(buf));
		if (n > 0 || (n < 0 && errno == EINTR))
			continue;
		break;
	}
}
