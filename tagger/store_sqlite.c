/* The SQLite backend of the desired-state store: one WAL-mode database file
 * holding the current keys, the change history, the revision counter and
 * the hosts' status. */
#include "tagger/store_impl.h"

#include <errno.h>
#include <fcntl.h>
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
/* ... and a host's status write: dfwd publishes from its main loop, which
 * must not stall for STORE_BUSY_MS while another process holds the write
 * lock; it publishes again ttl/3 later. */
#define HOST_BUSY_MS 500

/* kv is the current state; changes is the history, one row per key that a
 * revision changed (value NULL = deleted), kept in insertion order by seq;
 * meta holds "schema", "rev" (the current revision) and "compacted" (history
 * at or below it is gone); hosts holds each host's last status, outside the
 * revisions (stores made before it existed get it at the first publish). */
#define HOSTS_SQL \
	"CREATE TABLE IF NOT EXISTS hosts (host TEXT PRIMARY KEY," \
	" value TEXT NOT NULL, updated_ms INTEGER NOT NULL," \
	" ttl_ms INTEGER NOT NULL, withdrawn INTEGER NOT NULL) WITHOUT ROWID"

static const char schema_sql[] =
	"CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
	" mod_rev INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE TABLE changes (seq INTEGER PRIMARY KEY, rev INTEGER NOT NULL,"
	" key TEXT NOT NULL, value TEXT);"
	"CREATE INDEX changes_rev ON changes (rev);"
	"CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
	" WITHOUT ROWID;"
	"INSERT INTO meta VALUES ('schema', 1), ('rev', 0), ('compacted', 0);"
	HOSTS_SQL ";"
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

struct sqlite_store {
	struct store base;
	sqlite3 *db;
	char *path;         /* as the caller gave it, for messages */
	char *dir;          /* absolute directory of the file, for the watch */
	sqlite3_stmt *st[ST_COUNT];
	int watch_fd;
	uint64_t busy_since;
	unsigned busy_ms; /* how long to wait for the write lock: STORE_BUSY_MS */
};

/* "PATH: what: sqlite's reason" */
static void db_err(const struct sqlite_store *s, char *err, size_t errlen,
		   const char *what)
{
	store_seterr(err, errlen, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

#define SQ(st) ((struct sqlite_store *)(st))

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Whether a wait for a busy database that began at since is over: busy_ms
 * passed, or the deadline of store_set_deadline. */
static bool busy_over(const struct sqlite_store *s, uint64_t since)
{
	return now_ns() - since >= (uint64_t)s->busy_ms * 1000000u ||
	       !store_wait_ms(&s->base, 1);
}

/* Waits for a lock held by another connection in short, even steps up to
 * busy_ms.  SQLite's default handler backs off to 100 ms sleeps, so
 * under steady contention a waiter keeps missing the short gaps between
 * other writers' transactions and can time out; polling every millisecond
 * catches them. */
static int busy_wait(void *arg, int count)
{
	struct sqlite_store *s = arg;

	if (count == 0)
		s->busy_since = now_ns();
	if (busy_over(s, s->busy_since))
		return 0;
	sleep_ms(1);
	return 1;
}

static int exec(struct sqlite_store *s, const char *sql, const char *what, char *err,
		size_t errlen)
{
	if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		db_err(s, err, errlen, what);
		return -1;
	}
	return 0;
}

/* Ends whatever transaction is open, keeping nothing; errors are moot. */
static void rollback(struct sqlite_store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Whether to try again after rc: while a busy database stays busy for
 * less than busy_ms since start.  The busy handler normally does the
 * waiting; this covers the cases where SQLite reports SQLITE_BUSY without
 * calling it (changing the journal mode, another connection recovering
 * the WAL). */
static bool retry_busy(const struct sqlite_store *s, int rc, uint64_t start)
{
	if ((rc & 0xff) != SQLITE_BUSY || busy_over(s, start))
		return false;
	sleep_ms(1);
	return true;
}

/* Takes the write lock. */
static int begin_write(struct sqlite_store *s, char *err, size_t errlen)
{
	uint64_t start = now_ns();
	int rc;

	do
		rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	while (retry_busy(s, rc, start));
	if (rc != SQLITE_OK) {
		db_err(s, err, errlen, "cannot start a write");
		return -1;
	}
	return 0;
}

/* Starts a read snapshot unless a transaction is already open (a check
 * reading inside store_txn); *began says whether snap_end must end it. */
static int snap_begin(struct sqlite_store *s, bool *began, char *err, size_t errlen)
{
	*began = false;
	if (!sqlite3_get_autocommit(s->db))
		return 0;
	if (exec(s, "BEGIN", "cannot read the store", err, errlen) < 0)
		return -1;
	*began = true;
	return 0;
}

static void snap_end(struct sqlite_store *s, bool began)
{
	if (began && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rollback(s);
}

static int meta_get(struct sqlite_store *s, const char *name, uint64_t *out,
		    char *err, size_t errlen)
{
	sqlite3_stmt *st = s->st[ST_META];
	sqlite3_int64 v;
	int rc, ret = -1;

	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		store_seterr(err, errlen, "%s: not a dfw store: no \"%s\" in table meta",
		       s->path, name);
		goto out;
	}
	if (rc != SQLITE_ROW) {
		db_err(s, err, errlen, "cannot read the store");
		goto out;
	}
	v = sqlite3_column_int64(st, 0);
	if (v < 0) {
		store_seterr(err, errlen, "%s: damaged store: meta %s is %lld", s->path,
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
static int step_change(struct sqlite_store *s, sqlite3_stmt *st, char *err,
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
static int query_one(struct sqlite_store *s, const char *sql, char *buf, size_t len,
		     sqlite3_int64 *num)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *v;
	uint64_t start = now_ns();
	int rc;

	rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto out;
	while (retry_busy(s, rc = sqlite3_step(st), start))
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

/* Whether path's directory cannot take new files (a read-only mount, or
 * no write permission): SQLite then says only "unable to open database
 * file" or "attempt to write a readonly database". */
static bool dir_read_only(const char *path)
{
	char *dir = xstrdup(path), *slash = strrchr(dir, '/');
	bool ro;

	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	ro = access(slash ? dir : ".", W_OK) < 0 && (errno == EROFS || errno == EACCES);
	free(dir);
	return ro;
}

/* Describes a failure to read the file at open: a file that is not a
 * database or is corrupt is damaged, anything else (permissions, I/O) is
 * not the file's fault. */
static void open_err(struct sqlite_store *s, int rc, char *err, size_t errlen)
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
		if (dir_read_only(s->path))
			store_seterr(err, errlen, "%s: cannot open store: its directory is read-only "
				     "(the store keeps its -wal and -shm files beside it)", s->path);
		else if (sys)
			store_seterr(err, errlen, "%s: cannot open store: %s (%s)",
			       s->path, sqlite3_errmsg(s->db), strerror(sys));
		else
			db_err(s, err, errlen, "cannot open store");
	}
}

/* Checks that a non-empty database is a dfw store with all its tables. */
static int schema_check(struct sqlite_store *s, char *err, size_t errlen)
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
		store_seterr(err, errlen,
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
			store_seterr(err, errlen, "%s: not a dfw store: missing %s %s",
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
static int schema_setup(struct sqlite_store *s, bool create, char *err, size_t errlen)
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
		store_seterr(err, errlen,
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
		store_seterr(err, errlen, "%s: store schema version %" PRIu64
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

static const struct store_ops sqlite_ops;
static void sq_close(struct store *base);

struct store *store_sqlite_open(const char *path, bool create, char *err,
				size_t errlen)
{
	struct sqlite_store *s = NULL;
	struct store *ret = NULL;
	const char *full;
	struct stat sb;
	char buf[256];
	char *slash;
	int rc;

	if (!*path) {
		store_seterr(err, errlen, "sqlite:%s: empty store path", path);
		goto out;
	}
	/* Ask the file system first: SQLite's reason would be "unable to open
	 * database file". */
	if (!create && stat(path, &sb) < 0) {
		if (errno == ENOENT)
			store_seterr(err, errlen,
			       "%s: no such store (run dfwctl apply first?)", path);
		else
			store_seterr(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}

	s = xcalloc(1, sizeof(*s));
	s->base.ops = &sqlite_ops;
	s->path = xstrdup(path);
	s->watch_fd = -1;
	s->busy_ms = STORE_BUSY_MS;
	rc = sqlite3_open_v2(path, &s->db,
			     SQLITE_OPEN_READWRITE |
				     (create ? SQLITE_OPEN_CREATE : 0),
			     NULL);
	if (rc != SQLITE_OK) {
		if (!s->db) {
			store_seterr(err, errlen, "%s: cannot open store: out of memory",
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
		store_seterr(err, errlen,
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
		store_seterr(err, errlen, "%s: damaged store: %s", path, buf);
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
	ret = &s->base;
	s = NULL;
out:
	if (s)
		sq_close(&s->base);
	return ret;
}

static void sq_close(struct store *base)
{
	struct sqlite_store *s = SQ(base);

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
static int apply_op(struct sqlite_store *s, const struct store_op *op, uint64_t rev,
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

/* Wakes watchers once the commit is visible.  The -wal file is written
 * before the commit is published in the shared-memory index, which inotify
 * cannot see: a watcher woken by the -wal write alone can read the old
 * revision and then hear nothing more.  A write to DB-commit after COMMIT
 * closes that race.  Best effort: a watcher also polls. */
static void notify_commit(struct sqlite_store *s)
{
	const char *db = sqlite3_db_filename(s->db, "main");
	char *path;
	int fd;

	if (!db || !*db)
		return;
	path = xasprintf("%s-commit", db);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd >= 0) {
		if (pwrite(fd, "", 1, 0) < 0) {
			/* nothing to do: watchers poll as well */
		}
		close(fd);
	}
	free(path);
}

/* Every successful call makes exactly one new revision, also when ops is
 * empty or changes nothing (a DEL of a missing key, a PUT of the value
 * already there): callers can count on the revision moving.  Such no-op
 * ops leave no row in the history.  The ops are read only after check
 * returns, so a check may fill in the values they point to from what it
 * read. */
static int sq_txn(struct store *base, const struct store_op *ops, size_t nops,
	      store_check_fn check, void *arg, uint64_t *rev,
	      char *err, size_t errlen)
{
	struct sqlite_store *s = SQ(base);
	struct store_op *fin = NULL;
	size_t nfin = 0;
	bool began = false;
	uint64_t cur;
	int ret = -1;

	/* Inside a check or a scan callback the transaction is not ours to
	 * end. */
	if (!sqlite3_get_autocommit(s->db)) {
		store_seterr(err, errlen,
		       "%s: store_txn inside a transaction (called from a check?)",
		       s->path);
		goto out;
	}
	if (begin_write(s, err, errlen) < 0)
		goto out;
	began = true;
	if (check) {
		store_seterr(err, errlen, "%s", "");
		if (check(base, arg, err, errlen)) {
			if (err && errlen && !err[0])
				store_seterr(err, errlen,
				       "%s: write refused by its check", s->path);
			ret = 1;
			goto out;
		}
		if (sqlite3_get_autocommit(s->db)) {
			store_seterr(err, errlen,
			       "%s: the transaction ended during its check",
			       s->path);
			goto out;
		}
	}
	if (store_ops_final(s->path, ops, nops, &fin, &nfin, err, errlen) < 0)
		goto out;
	if (meta_get(s, "rev", &cur, err, errlen) < 0)
		goto out;
	cur++;
	for (size_t i = 0; i < nfin; i++)
		if (apply_op(s, &fin[i], cur, err, errlen) < 0)
			goto out;
	sqlite3_bind_int64(s->st[ST_SET_REV], 1, (sqlite3_int64)cur);
	if (step_change(s, s->st[ST_SET_REV], err, errlen) < 0)
		goto out;
	if (exec(s, "COMMIT", "cannot commit", err, errlen) < 0)
		goto out;
	notify_commit(s);
	if (rev)
		*rev = cur;
	ret = 0;
out:
	if (began && ret != 0)
		rollback(s);
	free(fin);
	return ret;
}

static int sq_rev(struct store *base, uint64_t *rev, char *err, size_t errlen)
{
	struct sqlite_store *s = SQ(base);
	return meta_get(s, "rev", rev, err, errlen);
}

static int sq_get(struct store *base, const char *key, char **value,
	      char *err, size_t errlen)
{
	struct sqlite_store *s = SQ(base);
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

/* Keys compare bytewise (BINARY collation), which makes [prefix, end)
 * exactly the keys with the prefix and lets SQLite walk the primary key
 * index; LIKE would need '%' and '_' escaped and could not. */
/* key and value passed to fn are valid only during the call. */
static int sq_scan(struct store *base, const char *prefix, store_kv_fn fn, void *arg,
	       uint64_t *rev, char *err, size_t errlen)
{
	struct sqlite_store *s = SQ(base);
	char *end = store_prefix_end(prefix, strlen(prefix), NULL);
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
static int sq_changes(struct store *base, uint64_t since, store_change_fn fn,
		  void *arg, uint64_t *now, char *err, size_t errlen)
{
	struct sqlite_store *s = SQ(base);
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
		store_seterr(err, errlen,
		       "%s: history up to revision %" PRIu64 " is no longer kept"
		       " (asked for changes after %" PRIu64 ")",
		       s->path, compacted, since);
		ret = -2;
		goto out;
	}
	if (since > cur) {
		store_seterr(err, errlen,
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
static int sq_watch_fd(struct store *base)
{
	struct sqlite_store *s = SQ(base);
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

static void sq_watch_ack(struct store *base)
{
	struct sqlite_store *s = SQ(base);
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

static uint64_t realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Runs one statement with host (and value, updated, ttl when value is not
 * NULL) bound, inside a write transaction that also creates the hosts
 * table of a store made before it existed.  Never touches the revision:
 * watchers compare revisions and see no change. */
static int host_write(struct sqlite_store *s, const char *sql, const char *host,
		      const char *value, uint64_t ttl_ms, char *err,
		      size_t errlen)
{
	sqlite3_stmt *st = NULL;
	bool began = false;
	int ret = -1, rc;

	if (!sqlite3_get_autocommit(s->db)) {
		store_seterr(err, errlen,
			     "%s: host status written inside a transaction", s->path);
		goto out;
	}
	s->busy_ms = HOST_BUSY_MS;
	rc = begin_write(s, err, errlen);
	s->busy_ms = STORE_BUSY_MS;
	if (rc < 0)
		goto out;
	began = true;
	if (exec(s, HOSTS_SQL, "cannot add the hosts table", err, errlen) < 0)
		goto out;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
		db_err(s, err, errlen, "cannot write host status");
		goto out;
	}
	sqlite3_bind_text(st, 1, host, -1, SQLITE_STATIC);
	if (value) {
		sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)realtime_ms());
		sqlite3_bind_int64(st, 4, (sqlite3_int64)ttl_ms);
	}
	if (sqlite3_step(st) != SQLITE_DONE) {
		db_err(s, err, errlen, "cannot write host status");
		goto out;
	}
	if (exec(s, "COMMIT", "cannot commit", err, errlen) < 0)
		goto out;
	ret = 0;
out:
	sqlite3_finalize(st);
	if (began && ret != 0)
		rollback(s);
	return ret;
}

static int sq_host_publish(struct store *base, const char *host,
			   const char *value, unsigned ttl_s, char *err,
			   size_t errlen)
{
	return host_write(SQ(base),
			  "INSERT INTO hosts (host, value, updated_ms, ttl_ms, withdrawn)"
			  " VALUES (?1, ?2, ?3, ?4, 0) ON CONFLICT (host) DO UPDATE"
			  " SET value = excluded.value, updated_ms = excluded.updated_ms,"
			  " ttl_ms = excluded.ttl_ms, withdrawn = 0",
			  host, value, (uint64_t)ttl_s * 1000u, err, errlen);
}

static int sq_host_withdraw(struct store *base, const char *host, char *err,
			    size_t errlen)
{
	return host_write(SQ(base), "UPDATE hosts SET withdrawn = 1 WHERE host = ?1",
			  host, NULL, 0, err, errlen);
}

static int sq_host_scan(struct store *base, store_host_fn fn, void *arg,
			char *err, size_t errlen)
{
	struct sqlite_store *s = SQ(base);
	sqlite3_stmt *st = NULL;
	sqlite3_int64 have = 0;
	uint64_t now = realtime_ms();
	bool began = false;
	int rc, ret = -1;

	if (snap_begin(s, &began, err, errlen) < 0)
		goto out;
	rc = query_one(s, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
		       " AND name = 'hosts'", NULL, 0, &have);
	if (rc != SQLITE_OK) {
		db_err(s, err, errlen, "cannot read the store");
		goto out;
	}
	if (!have) {
		ret = 0; /* no host ever published */
		goto out;
	}
	if (sqlite3_prepare_v2(s->db, "SELECT host, value, updated_ms, ttl_ms,"
			       " withdrawn FROM hosts ORDER BY host", -1, &st,
			       NULL) != SQLITE_OK) {
		db_err(s, err, errlen, "cannot read host status");
		goto out;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_host h = {
			.host = (const char *)sqlite3_column_text(st, 0),
			.value = (const char *)sqlite3_column_text(st, 1),
		};
		sqlite3_int64 updated = sqlite3_column_int64(st, 2);
		sqlite3_int64 ttl = sqlite3_column_int64(st, 3);

		if (!h.host || !h.value) {
			db_err(s, err, errlen, "cannot read host status");
			goto out;
		}
		/* A clock stepped back counts as just published. */
		h.alive = !sqlite3_column_int64(st, 4) && updated >= 0 && ttl > 0 &&
			  (now < (uint64_t)updated || now - (uint64_t)updated < (uint64_t)ttl);
		if (fn(arg, &h))
			break;
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		db_err(s, err, errlen, "cannot read host status");
		goto out;
	}
	ret = 0;
out:
	sqlite3_finalize(st);
	snap_end(s, began);
	return ret;
}

static const struct store_ops sqlite_ops = {
	.close = sq_close,
	.txn = sq_txn,
	.rev = sq_rev,
	.get = sq_get,
	.scan = sq_scan,
	.changes = sq_changes,
	.watch_fd = sq_watch_fd,
	.watch_ack = sq_watch_ack,
	.host_publish = sq_host_publish,
	.host_withdraw = sq_host_withdraw,
	.host_scan = sq_host_scan,
};
