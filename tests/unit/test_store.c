/* Unit tests of the SQLite store: reads and writes, prefix scans, revisions,
 * the change history, vetoes, durability, concurrent writers in separate
 * processes, damaged files and the watch descriptor. */
#include "tests/unit/unit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "tagger/store.h"
#include "tagger/tags.h"

#define NWRITERS 4
#define NTXNS 200

/* A path for this test's store, with any earlier files of that name gone. */
static char *fresh_path(const char *name)
{
	static const char *const suffixes[] = { "", "-wal", "-shm" };
	char *path = xasprintf("%s/%s", unit_tmpdir(), name);

	for (size_t i = 0; i < ARRAY_SIZE(suffixes); i++) {
		char *f = xasprintf("%s%s", path, suffixes[i]);

		unlink(f);
		free(f);
	}
	return path;
}

static struct store *open_ok(const char *path, bool create)
{
	char err[256] = "";
	struct store *s = store_open(path, create, err, sizeof(err));

	if (!s)
		fprintf(stderr, "\nstore_open: %s\n", err);
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	return s;
}

static uint64_t txn_ok(struct store *s, const struct store_op *ops, size_t n)
{
	char err[256] = "";
	uint64_t rev = 0;
	int rc = store_txn(s, ops, n, NULL, NULL, &rev, err, sizeof(err));

	if (rc)
		fprintf(stderr, "\nstore_txn: %s\n", err);
	CU_ASSERT_EQUAL_FATAL(rc, 0);
	return rev;
}

static uint64_t put(struct store *s, const char *key, const char *value)
{
	struct store_op op = { STORE_PUT, key, value };

	return txn_ok(s, &op, 1);
}

static uint64_t del(struct store *s, const char *key)
{
	struct store_op op = { STORE_DEL, key, NULL };

	return txn_ok(s, &op, 1);
}

static uint64_t rev_of(struct store *s)
{
	char err[256];
	uint64_t rev = UINT64_MAX;

	CU_ASSERT_EQUAL_FATAL(store_rev(s, &rev, err, sizeof(err)), 0);
	return rev;
}

/* The value of key, or NULL when it is missing; caller frees. */
static char *get(struct store *s, const char *key)
{
	char err[256], *v = (char *)"unset";
	int rc = store_get(s, key, &v, err, sizeof(err));

	CU_ASSERT(rc == 0 || rc == 1);
	if (rc == 1) {
		CU_ASSERT_PTR_NULL(v);
	}
	return rc == 0 ? v : NULL;
}

static void assert_value(struct store *s, const char *key, const char *want)
{
	char *v = get(s, key);

	if (!want) {
		CU_ASSERT_PTR_NULL(v);
	} else if (!v) {
		CU_FAIL("key missing");
	} else {
		CU_ASSERT_STRING_EQUAL(v, want);
	}
	free(v);
}

/* Collects "key=value" strings; stops after limit items when limit > 0. */
struct collect {
	struct strv items;
	size_t limit;
};

static int collect_kv(void *arg, const char *key, const char *value)
{
	struct collect *c = arg;
	char *item = xasprintf("%s=%s", key, value);

	strv_push(&c->items, item);
	free(item);
	return c->limit && c->items.n >= c->limit;
}

/* "rev:key=value", or "rev:key" for a deletion. */
static int collect_change(void *arg, uint64_t rev, const char *key,
			  const char *value)
{
	struct collect *c = arg;
	char *item = value ? xasprintf("%" PRIu64 ":%s=%s", rev, key, value)
			   : xasprintf("%" PRIu64 ":%s", rev, key);

	strv_push(&c->items, item);
	free(item);
	return c->limit && c->items.n >= c->limit;
}

static void assert_items(const struct strv *got, const char *const *want,
			 size_t n)
{
	if (got->n != n)
		fprintf(stderr, "\ngot %zu items, want %zu\n", got->n, n);
	CU_ASSERT_EQUAL(got->n, n);
	for (size_t i = 0; i < n && i < got->n; i++) {
		if (strcmp(got->v[i], want[i]))
			fprintf(stderr, "\nitem %zu: got \"%s\", want \"%s\"\n", i,
				got->v[i], want[i]);
		CU_ASSERT_STRING_EQUAL(got->v[i], want[i]);
	}
}

static void assert_scan(struct store *s, const char *prefix,
			const char *const *want, size_t n)
{
	struct collect c = { 0 };
	char err[256];
	uint64_t rev = UINT64_MAX;

	CU_ASSERT_EQUAL(store_scan(s, prefix, collect_kv, &c, &rev, err,
				   sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, rev_of(s));
	assert_items(&c.items, want, n);
	strv_free(&c.items);
}

/* Changes after since, checking *now against the current revision. */
static void assert_changes(struct store *s, uint64_t since,
			   const char *const *want, size_t n)
{
	struct collect c = { 0 };
	char err[256];
	uint64_t now = UINT64_MAX;

	CU_ASSERT_EQUAL(store_changes(s, since, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	CU_ASSERT_EQUAL(now, rev_of(s));
	assert_items(&c.items, want, n);
	strv_free(&c.items);
}

/* Runs SQL on the file directly, as a damaged disk or another tool would. */
static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	CU_ASSERT_EQUAL_FATAL(sqlite3_open(path, &db), SQLITE_OK);
	CU_ASSERT_EQUAL(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void test_put_get_del(void)
{
	char *path = fresh_path("basic.db");
	struct store *s = open_ok(path, true);
	struct store_op ops[] = {
		{ STORE_PUT, "policy", "[vm web1]\n" },
		{ STORE_PUT, "tag/web1/pci", "" },
	};

	CU_ASSERT_EQUAL(rev_of(s), 0);
	assert_value(s, "policy", NULL);
	txn_ok(s, ops, ARRAY_SIZE(ops));
	assert_value(s, "policy", "[vm web1]\n");
	assert_value(s, "tag/web1/pci", "");
	assert_value(s, "tag/web1", NULL);
	put(s, "policy", "v2");
	assert_value(s, "policy", "v2");
	del(s, "tag/web1/pci");
	assert_value(s, "tag/web1/pci", NULL);
	assert_value(s, "policy", "v2");
	store_close(s);
	store_close(NULL);
	free(path);
}

/* tags_write validates against the stored policy; a process reuses its
 * parse only while the stored text is the same. */
static void test_tags_write_follows_policy(void)
{
	static const char pol1[] = "[tags]\nnames = red, blue\n[vm web1]\nhost = h\nport = p1\n"
				   "mac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n";
	static const char pol2[] = "[tags]\nnames = red\n[vm web1]\nhost = h\nport = p1\n"
				   "mac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n";
	char *path = fresh_path("tags.db"), err[256];
	struct store *s = open_ok(path, true);
	char *blue[1] = { (char *)"BLUE" }, *red[1] = { (char *)"red" };
	char names[1][TAG_KEY_MAX];
	uint64_t rev = 0;

	CU_ASSERT_EQUAL(tags_write(s, "web1", blue, 1, true, names, &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no policy yet"));
	put(s, "policy", pol1);
	CU_ASSERT_EQUAL(tags_write(s, "web1", blue, 1, true, names, &rev, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(names[0], "blue");
	assert_value(s, "tag/web1/blue", "");
	CU_ASSERT_EQUAL(tags_write(s, "web2", red, 1, true, NULL, &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown VM 'web2' (did you mean 'web1'?)"));
	/* A new policy without "blue": the cached parse must not be used. */
	put(s, "policy", pol2);
	CU_ASSERT_EQUAL(tags_write(s, "web1", blue, 1, true, NULL, &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown tag 'BLUE'"));
	CU_ASSERT_EQUAL(tags_write(s, "web1", red, 1, true, NULL, &rev, err, sizeof(err)), 0);
	put(s, "policy", "[tags]\nnames = red,,\n");
	CU_ASSERT_EQUAL(tags_write(s, "web1", red, 1, false, NULL, &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "the stored policy does not parse"));
	assert_value(s, "tag/web1/red", "");
	store_close(s);
	free(path);
}

static void test_scan_prefix(void)
{
	static const char *const keys[] = {
		"tag/vm1/a", "tag/vm1/b", "tag/vm10/x", "tag/vm2/a", "tag_x",
		"tag%y", "tagz", "policy", "a_b/1", "a_bc", "axb/1", "a%b/1",
		"aXb", "z\xff\x01", "z\xff", "{",
	};
	static const char *const all[] = {
		"a%b/1=v", "aXb=v", "a_b/1=v", "a_bc=v", "axb/1=v", "policy=v",
		"tag%y=v", "tag/vm1/a=v", "tag/vm1/b=v", "tag/vm10/x=v",
		"tag/vm2/a=v", "tag_x=v", "tagz=v", "z\xff=v", "z\xff\x01=v",
		"{=v",
	};
	static const char *const vm1[] = { "tag/vm1/a=v", "tag/vm1/b=v" };
	static const char *const vm1x[] = {
		"tag/vm1/a=v", "tag/vm1/b=v", "tag/vm10/x=v",
	};
	static const char *const tag[] = {
		"tag/vm1/a=v", "tag/vm1/b=v", "tag/vm10/x=v", "tag/vm2/a=v",
	};
	static const char *const under[] = { "a_b/1=v", "a_bc=v" };
	static const char *const pct[] = { "a%b/1=v" };
	static const char *const tagpct[] = { "tag%y=v" };
	static const char *const ff[] = { "z\xff=v", "z\xff\x01=v" };
	char *path = fresh_path("scan.db");
	struct store *s = open_ok(path, true);
	struct collect c = { .limit = 2 };
	char err[256];
	uint64_t rev = 0;

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
		put(s, keys[i], "v");
	assert_scan(s, "", all, ARRAY_SIZE(all));
	assert_scan(s, "tag/vm1/", vm1, ARRAY_SIZE(vm1));
	assert_scan(s, "tag/vm1", vm1x, ARRAY_SIZE(vm1x));
	assert_scan(s, "tag/", tag, ARRAY_SIZE(tag));
	/* '_' and '%' are LIKE wildcards; here they must match themselves. */
	assert_scan(s, "a_b", under, ARRAY_SIZE(under));
	assert_scan(s, "a%b", pct, ARRAY_SIZE(pct));
	assert_scan(s, "tag%", tagpct, ARRAY_SIZE(tagpct));
	assert_scan(s, "tag/vm3", NULL, 0);
	assert_scan(s, "zz", NULL, 0);
	/* A prefix ending in 0xff has a shorter upper bound. */
	assert_scan(s, "z\xff", ff, ARRAY_SIZE(ff));
	assert_scan(s, "\xff", NULL, 0);

	/* Stopping early. */
	CU_ASSERT_EQUAL(store_scan(s, "", collect_kv, &c, &rev, err,
				   sizeof(err)), 0);
	CU_ASSERT_EQUAL(c.items.n, 2);
	CU_ASSERT_EQUAL(rev, ARRAY_SIZE(keys));
	strv_free(&c.items);
	store_close(s);
	free(path);
}

/* Writes through a second handle once a visit is under way, recording
 * what the visit sees. */
struct interfere {
	struct store *other;
	struct collect seen;
	uint64_t rev;
};

static void interfere_once(struct interfere *in)
{
	static const struct store_op ops[] = {
		{ STORE_PUT, "s/b", "changed" },
		{ STORE_PUT, "s/c", "new" },
		{ STORE_DEL, "s/a", NULL },
	};
	char err[256];

	if (in->seen.items.n == 1)
		CU_ASSERT_EQUAL(store_txn(in->other, ops, ARRAY_SIZE(ops), NULL,
					  NULL, &in->rev, err, sizeof(err)), 0);
}

static int scan_and_write(void *arg, const char *key, const char *value)
{
	struct interfere *in = arg;

	collect_kv(&in->seen, key, value);
	interfere_once(in);
	return 0;
}

static int changes_and_write(void *arg, uint64_t rev, const char *key,
			     const char *value)
{
	struct interfere *in = arg;

	collect_change(&in->seen, rev, key, value);
	interfere_once(in);
	return 0;
}

/* A visit goes on from its own snapshot while another connection commits,
 * and reports that snapshot's revision. */
static void test_snapshot(void)
{
	static const char *const before[] = { "s/a=1", "s/b=2" };
	static const char *const after[] = { "s/b=changed", "s/c=new" };
	static const char *const hist[] = {
		"1:s/a=1", "2:s/b=2", "3:s/b=changed", "3:s/c=new", "3:s/a",
	};

	char *path = fresh_path("snapshot.db");
	struct store *s = open_ok(path, true);
	struct interfere in = { .other = open_ok(path, false) };
	char err[256];
	uint64_t rev = 0;

	put(s, "s/a", "1");
	put(s, "s/b", "2");
	CU_ASSERT_EQUAL(store_scan(s, "s/", scan_and_write, &in, &rev, err,
				   sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, 2);
	CU_ASSERT_EQUAL(in.rev, 3);
	assert_items(&in.seen.items, before, ARRAY_SIZE(before));
	strv_free(&in.seen.items);
	assert_scan(s, "s/", after, ARRAY_SIZE(after));

	CU_ASSERT_EQUAL(store_changes(s, 0, changes_and_write, &in, &rev, err,
				      sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, 3);
	CU_ASSERT_EQUAL(in.rev, 4);
	assert_items(&in.seen.items, hist, ARRAY_SIZE(hist));
	strv_free(&in.seen.items);
	/* Revision 4 wrote the same again: a revision without changes. */
	assert_changes(s, 2, hist + 2, ARRAY_SIZE(hist) - 2);
	CU_ASSERT_EQUAL(rev_of(s), 4);

	store_close(in.other);
	store_close(s);
	free(path);
}

static void test_revisions(void)
{
	char *path = fresh_path("rev.db");
	struct store *s = open_ok(path, true);
	struct store_op two[] = {
		{ STORE_PUT, "a", "1" },
		{ STORE_PUT, "b", "2" },
	};
	char err[256];

	CU_ASSERT_EQUAL(rev_of(s), 0);
	CU_ASSERT_EQUAL(put(s, "a", "0"), 1);
	CU_ASSERT_EQUAL(txn_ok(s, two, ARRAY_SIZE(two)), 2);
	/* Writes that change nothing still make one revision each. */
	CU_ASSERT_EQUAL(txn_ok(s, NULL, 0), 3);
	CU_ASSERT_EQUAL(del(s, "missing"), 4);
	CU_ASSERT_EQUAL(put(s, "a", "1"), 5);
	CU_ASSERT_EQUAL(rev_of(s), 5);
	/* A NULL rev pointer is allowed. */
	CU_ASSERT_EQUAL(store_txn(s, two, 1, NULL, NULL, NULL, err,
				  sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev_of(s), 6);
	/* A malformed op fails the whole write. */
	two[1].value = NULL;
	CU_ASSERT_EQUAL(store_txn(s, two, 2, NULL, NULL, NULL, err,
				  sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "op 1 is malformed"));
	CU_ASSERT_EQUAL(rev_of(s), 6);
	store_close(s);
	free(path);
}

static void test_changes(void)
{
	static const char *const all[] = {
		"1:a=1", "1:b=2", "2:a", "4:b=3", "5:c=2",
	};
	char *path = fresh_path("changes.db");
	struct store *s = open_ok(path, true);
	struct store_op r1[] = {
		{ STORE_PUT, "a", "1" },
		{ STORE_PUT, "b", "2" },
	};
	struct store_op r2[] = {
		{ STORE_DEL, "a", NULL },
		{ STORE_DEL, "missing", NULL },
		{ STORE_PUT, "b", "2" }, /* same value: not a change */
	};
	/* Several ops on one key: only the last counts. */
	struct store_op r5[] = {
		{ STORE_PUT, "a", "x" },
		{ STORE_PUT, "c", "1" },
		{ STORE_DEL, "a", NULL },
		{ STORE_PUT, "c", "2" },
	};
	struct collect c = { .limit = 3 };
	char err[256] = "";
	uint64_t now = 0;

	assert_changes(s, 0, NULL, 0);
	txn_ok(s, r1, ARRAY_SIZE(r1));
	txn_ok(s, r2, ARRAY_SIZE(r2));
	txn_ok(s, NULL, 0);
	put(s, "b", "3");
	txn_ok(s, r5, ARRAY_SIZE(r5));
	CU_ASSERT_EQUAL(rev_of(s), 5);
	assert_value(s, "a", NULL);

	assert_changes(s, 0, all, ARRAY_SIZE(all));
	assert_changes(s, 1, all + 2, ARRAY_SIZE(all) - 2);
	assert_changes(s, 2, all + 3, ARRAY_SIZE(all) - 3);
	assert_changes(s, 3, all + 3, ARRAY_SIZE(all) - 3);
	assert_changes(s, 4, all + 4, 1);
	assert_changes(s, 5, NULL, 0);

	/* Stopping after revision 2's change: *now is the revision before,
	 * so that resuming from it skips nothing. */
	CU_ASSERT_EQUAL(store_changes(s, 0, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	CU_ASSERT_EQUAL(c.items.n, 3);
	CU_ASSERT_EQUAL(now, 1);
	strv_free(&c.items);

	/* A revision beyond the store's: the caller must re-scan. */
	CU_ASSERT_EQUAL(store_changes(s, 6, collect_change, &c, &now, err,
				      sizeof(err)), -2);
	CU_ASSERT_EQUAL(c.items.n, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
	store_close(s);

	/* History compacted (by another tool): asking from before it is -2,
	 * from it on is fine. */
	raw_exec(path, "DELETE FROM changes WHERE rev <= 2;"
		       "UPDATE meta SET value = 2 WHERE name = 'compacted'");
	s = open_ok(path, false);
	err[0] = '\0';
	CU_ASSERT_EQUAL(store_changes(s, 1, collect_change, &c, &now, err,
				      sizeof(err)), -2);
	CU_ASSERT_EQUAL(c.items.n, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no longer kept"));
	assert_changes(s, 2, all + 3, ARRAY_SIZE(all) - 3);
	store_close(s);
	free(path);
}

/* A check that reads the state inside the transaction. */
struct veto {
	const char *forbidden; /* veto when this key exists */
	size_t scanned;
	bool nested_failed;
};

static int count_kv(void *arg, const char *key, const char *value)
{
	(*(size_t *)arg)++;
	return 0;
}

static int veto_check(struct store *s, void *arg, char *err, size_t errlen)
{
	struct veto *v = arg;
	struct store_op op = { STORE_PUT, "nested", "x" };
	char nerr[256], *val = NULL;
	uint64_t rev;
	int rc;

	v->scanned = 0;
	if (store_scan(s, "k/", count_kv, &v->scanned, &rev, err, errlen) < 0)
		return -1;
	v->nested_failed = store_txn(s, &op, 1, NULL, NULL, NULL, nerr,
				     sizeof(nerr)) == -1;
	rc = store_get(s, v->forbidden, &val, err, errlen);
	free(val);
	if (rc < 0)
		return -1;
	if (rc == 0) {
		snprintf(err, errlen, "%s is set", v->forbidden);
		return 1;
	}
	return 0;
}

static int silent_veto(struct store *s, void *arg, char *err, size_t errlen)
{
	return 1;
}

static void test_veto(void)
{
	char *path = fresh_path("veto.db");
	struct store *s = open_ok(path, true);
	struct store_op op = { STORE_PUT, "k/new", "1" };
	struct veto v = { .forbidden = "lock" };
	struct collect c = { 0 };
	char err[256] = "";
	uint64_t r0, rev = 0, now;

	put(s, "k/1", "");
	put(s, "k/2", "");
	r0 = put(s, "lock", "held");
	CU_ASSERT_EQUAL(store_txn(s, &op, 1, veto_check, &v, &rev, err,
				  sizeof(err)), 1);
	CU_ASSERT_STRING_EQUAL(err, "lock is set");
	CU_ASSERT_EQUAL(v.scanned, 2);
	CU_ASSERT_TRUE(v.nested_failed);
	CU_ASSERT_EQUAL(rev_of(s), r0);
	assert_value(s, "k/new", NULL);
	assert_value(s, "nested", NULL);
	CU_ASSERT_EQUAL(store_changes(s, r0, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	CU_ASSERT_EQUAL(c.items.n, 0);
	CU_ASSERT_EQUAL(now, r0);

	/* A veto without a reason still says something. */
	err[0] = '\0';
	CU_ASSERT_EQUAL(store_txn(s, &op, 1, silent_veto, NULL, &rev, err,
				  sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
	CU_ASSERT_EQUAL(rev_of(s), r0);

	/* Once the reason is gone, the same check lets the write through,
	 * and the handle is usable after the vetoes. */
	del(s, "lock");
	CU_ASSERT_EQUAL(store_txn(s, &op, 1, veto_check, &v, &rev, err,
				  sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, r0 + 2);
	assert_value(s, "k/new", "1");
	store_close(s);
	free(path);
}

static void test_durability(void)
{
	char *path = fresh_path("durable.db");
	char *uri = xasprintf("sqlite:%s", path);
	struct store *s = open_ok(uri, true);
	static const char *const hist[] = { "1:a=1", "2:b=2", "3:a", "4:c=3" };
	uint64_t r;
	int fds[2], status;
	pid_t pid;

	put(s, "a", "1");
	put(s, "b", "2");
	del(s, "a");
	store_close(s);

	s = open_ok(path, false);
	CU_ASSERT_EQUAL(rev_of(s), 3);
	assert_value(s, "a", NULL);
	assert_value(s, "b", "2");
	store_close(s);

	/* A writer killed right after store_txn returned, before any clean
	 * close or checkpoint, has still written its revision. */
	CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		char err[256];
		struct store *cs = store_open(uri, false, err, sizeof(err));
		struct store_op op = { STORE_PUT, "c", "3" };

		r = 0;
		if (cs && store_txn(cs, &op, 1, NULL, NULL, &r, err,
				    sizeof(err)) == 0 &&
		    write(fds[1], &r, sizeof(r)) == sizeof(r))
			for (;;)
				pause();
		_exit(1);
	}
	close(fds[1]);
	r = 0;
	CU_ASSERT_EQUAL(read(fds[0], &r, sizeof(r)), sizeof(r));
	close(fds[0]);
	kill(pid, SIGKILL);
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CU_ASSERT_EQUAL(r, 4);

	s = open_ok(uri, false);
	CU_ASSERT_EQUAL(rev_of(s), 4);
	assert_value(s, "c", "3");
	assert_changes(s, 0, hist, ARRAY_SIZE(hist));
	store_close(s);
	free(uri);
	free(path);
}

/* A read-modify-write: the check reads the counter inside the transaction
 * and fills in the value the PUT op points to. */
static int bump_counter(struct store *s, void *arg, char *err, size_t errlen)
{
	char *buf = arg, *v = NULL;
	uint64_t n = 0;
	int rc = store_get(s, "counter", &v, err, errlen);

	if (rc == 0 && parse_u64(v, UINT64_MAX - 1, &n) < 0) {
		snprintf(err, errlen, "bad counter \"%s\"", v);
		rc = -1;
	}
	free(v);
	if (rc < 0)
		return -1;
	snprintf(buf, 32, "%" PRIu64, n + 1);
	return 0;
}

/* One writer process: NTXNS transactions, each adding its own key and
 * bumping the shared counter.  Returns the exit status. */
static int writer(const char *path, int id, int start_fd)
{
	char err[256], key[32], counter[32];
	struct store_op ops[] = {
		{ STORE_PUT, key, "x" },
		{ STORE_PUT, "counter", counter },
	};
	struct store *s;
	char c;
	int ret = 1;

	/* Everyone starts at once, when the parent closes the pipe. */
	if (read(start_fd, &c, 1) != 0)
		return 1;
	s = store_open(path, false, err, sizeof(err));
	if (!s)
		goto out;
	for (int i = 0; i < NTXNS; i++) {
		snprintf(key, sizeof(key), "w/%d/%03d", id, i);
		counter[0] = '\0';
		if (store_txn(s, ops, ARRAY_SIZE(ops), bump_counter, counter,
			      NULL, err, sizeof(err)) != 0)
			goto out;
	}
	ret = 0;
out:
	if (ret)
		fprintf(stderr, "\nwriter %d: %s\n", id, err);
	store_close(s);
	return ret;
}

/* Checks the history after r0: one revision per transaction, each with its
 * own key and the counter at the value of its position. */
struct history {
	uint64_t r0, n, bad;
	uint64_t last_rev;
};

static int check_history(void *arg, uint64_t rev, const char *key,
			 const char *value)
{
	struct history *h = arg;
	uint64_t k = rev - h->r0, v;

	if (h->n % 2 == 0) {
		/* the writer's own key, at the next revision */
		if (rev != h->last_rev + 1 || strncmp(key, "w/", 2))
			h->bad++;
	} else if (rev != h->last_rev || strcmp(key, "counter") || !value ||
		   parse_u64(value, UINT64_MAX, &v) < 0 || v != k) {
		h->bad++;
	}
	h->last_rev = rev;
	h->n++;
	return 0;
}

static void test_concurrent_writers(void)
{
	char *path = fresh_path("concurrent.db");
	struct store *s = open_ok(path, true);
	struct history h = { 0 };
	struct collect c = { 0 };
	char err[256], key[32];
	pid_t pids[NWRITERS];
	int fds[2], status, failed = 0;
	uint64_t r0, now = 0, rev = 0;
	size_t i = 0;

	r0 = put(s, "unrelated", "1");
	/* No handle is open across fork. */
	store_close(s);
	CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
	for (int w = 0; w < NWRITERS; w++) {
		pids[w] = fork();
		CU_ASSERT_FATAL(pids[w] >= 0);
		if (pids[w] == 0) {
			close(fds[1]);
			_exit(writer(path, w, fds[0]));
		}
	}
	close(fds[0]);
	close(fds[1]);
	for (int w = 0; w < NWRITERS; w++) {
		CU_ASSERT_EQUAL(waitpid(pids[w], &status, 0), pids[w]);
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			failed++;
	}
	CU_ASSERT_EQUAL(failed, 0);

	s = open_ok(path, false);
	CU_ASSERT_EQUAL(rev_of(s), r0 + NWRITERS * NTXNS);
	assert_value(s, "counter", "800");
	CU_ASSERT_EQUAL(store_scan(s, "w/", collect_kv, &c, &rev, err,
				   sizeof(err)), 0);
	CU_ASSERT_EQUAL(c.items.n, NWRITERS * NTXNS);
	for (int w = 0; w < NWRITERS; w++) {
		for (int t = 0; t < NTXNS && i < c.items.n; t++, i++) {
			snprintf(key, sizeof(key), "w/%d/%03d=x", w, t);
			CU_ASSERT_STRING_EQUAL(c.items.v[i], key);
		}
	}
	strv_free(&c.items);

	h.r0 = h.last_rev = r0;
	CU_ASSERT_EQUAL(store_changes(s, r0, check_history, &h, &now, err,
				      sizeof(err)), 0);
	CU_ASSERT_EQUAL(h.n, 2 * NWRITERS * NTXNS);
	CU_ASSERT_EQUAL(h.bad, 0);
	CU_ASSERT_EQUAL(h.last_rev, r0 + NWRITERS * NTXNS);
	CU_ASSERT_EQUAL(now, r0 + NWRITERS * NTXNS);
	store_close(s);
	free(path);
}

/* Several processes creating the same new store at once: one creates it,
 * the others open it, and every write lands. */
static void test_concurrent_create(void)
{
	char *path = fresh_path("create.db");
	struct store *s;
	struct collect c = { 0 };
	pid_t pids[NWRITERS];
	int fds[2], status, failed = 0;
	char err[256];
	uint64_t rev = 0;

	CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
	for (int w = 0; w < NWRITERS; w++) {
		pids[w] = fork();
		CU_ASSERT_FATAL(pids[w] >= 0);
		if (pids[w] == 0) {
			struct store *cs;
			char key[16], ch;
			struct store_op op = { STORE_PUT, key, "" };
			int rc = 1;

			close(fds[1]);
			snprintf(key, sizeof(key), "k/%d", w);
			if (read(fds[0], &ch, 1) == 0) {
				cs = store_open(path, true, err, sizeof(err));
				if (!cs)
					fprintf(stderr, "\n%s\n", err);
				rc = !cs || store_txn(cs, &op, 1, NULL, NULL,
						      NULL, err, sizeof(err));
				store_close(cs);
			}
			_exit(rc);
		}
	}
	close(fds[0]);
	close(fds[1]);
	for (int w = 0; w < NWRITERS; w++) {
		CU_ASSERT_EQUAL(waitpid(pids[w], &status, 0), pids[w]);
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			failed++;
	}
	CU_ASSERT_EQUAL(failed, 0);
	s = open_ok(path, false);
	CU_ASSERT_EQUAL(rev_of(s), NWRITERS);
	CU_ASSERT_EQUAL(store_scan(s, "k/", collect_kv, &c, &rev, err,
				   sizeof(err)), 0);
	CU_ASSERT_EQUAL(c.items.n, NWRITERS);
	strv_free(&c.items);
	store_close(s);
	free(path);
}

/* store_open must fail with a message naming the file and containing why. */
static void assert_open_fails(const char *uri, bool create, const char *name,
			      const char *why)
{
	char err[256] = "";
	struct store *s = store_open(uri, create, err, sizeof(err));

	CU_ASSERT_PTR_NULL(s);
	store_close(s);
	if (!strstr(err, name) || !strstr(err, why))
		fprintf(stderr, "\nunexpected message: %s\n", err);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, name));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, why));
}

static void test_missing(void)
{
	char *path = fresh_path("missing.db");
	char *uri = xasprintf("sqlite:%s", path);
	char *nodir = xasprintf("%s/no/such/dir/x.db", unit_tmpdir());
	struct stat sb;

	assert_open_fails(path, false, path, "no such store");
	assert_open_fails(uri, false, path, "no such store");
	CU_ASSERT(stat(path, &sb) < 0 && errno == ENOENT);
	assert_open_fails(nodir, true, nodir, "cannot open store");
	assert_open_fails("consul://127.0.0.1:8500", true, "consul://127.0.0.1:8500",
			  "unsupported");
	assert_open_fails("sqlite:", true, "sqlite:", "empty store path");

	/* An empty file is no store until one is created in it. */
	close(open(path, O_CREAT | O_WRONLY, 0644));
	assert_open_fails(path, false, path, "no such store");
	store_close(open_ok(path, true));
	store_close(open_ok(path, false));
	free(nodir);
	free(uri);
	free(path);
}

static void write_file(const char *path, const char *text, size_t repeat)
{
	FILE *f = fopen(path, "w");

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	for (size_t i = 0; i < repeat; i++)
		fputs(text, f);
	CU_ASSERT_EQUAL(fclose(f), 0);
}

/* Makes a store with some data, closed (and so checkpointed). */
static char *make_store(const char *name)
{
	char *path = fresh_path(name);
	struct store *s = open_ok(path, true);
	char key[32], value[128];

	memset(value, 'v', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "tag/vm%d/t", i);
		put(s, key, value);
	}
	store_close(s);
	return path;
}

static void test_damaged(void)
{
	char *path = fresh_path("garbage.db");
	struct stat sb;
	char page[4096];
	int fd;

	write_file(path, "this is not a database, just text\n", 200);
	assert_open_fails(path, false, path,
			  "not a dfw store: file is not a database");
	assert_open_fails(path, true, path,
			  "not a dfw store: file is not a database");
	free(path);

	/* Another program's SQLite database. */
	path = fresh_path("foreign.db");
	raw_exec(path, "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT)");
	assert_open_fails(path, false, path, "not a dfw store");
	assert_open_fails(path, true, path, "another program");
	free(path);

	/* Missing pieces and a future schema. */
	path = make_store("notable.db");
	raw_exec(path, "DROP TABLE changes");
	assert_open_fails(path, false, path,
			  "not a dfw store: missing table changes");
	free(path);
	path = make_store("noindex.db");
	raw_exec(path, "DROP INDEX changes_rev");
	assert_open_fails(path, false, path, "missing index changes_rev");
	free(path);
	path = make_store("nocolumn.db");
	raw_exec(path, "ALTER TABLE kv DROP COLUMN mod_rev");
	assert_open_fails(path, false, path, "not a dfw store: ");
	free(path);
	path = make_store("norev.db");
	raw_exec(path, "DELETE FROM meta WHERE name = 'rev'");
	assert_open_fails(path, false, path, "no \"rev\" in table meta");
	free(path);
	path = make_store("future.db");
	raw_exec(path, "UPDATE meta SET value = 99 WHERE name = 'schema'");
	assert_open_fails(path, false, path, "schema version 99");
	free(path);

	/* A page of the data overwritten: quick_check (or the first read)
	 * finds it. */
	path = make_store("torn.db");
	CU_ASSERT_EQUAL_FATAL(stat(path, &sb), 0);
	CU_ASSERT_FATAL(sb.st_size >= 3 * (off_t)sizeof(page));
	memset(page, 0x5a, sizeof(page));
	fd = open(path, O_WRONLY);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(pwrite(fd, page, sizeof(page),
			       sb.st_size - (off_t)sizeof(page)),
			(ssize_t)sizeof(page));
	close(fd);
	assert_open_fails(path, false, path, "damaged store");
	free(path);
}

static bool readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static void test_watch(void)
{
	char *path = fresh_path("watch.db");
	struct store *s, *other;
	char err[256];
	uint64_t r = 0;
	int fds[2], fd, status;
	pid_t pid;

	/* The other process is forked before any handle is open here, and
	 * writes once fds[1] is closed. */
	CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		struct store_op op = { STORE_PUT, "tag/vm1/x", "" };
		struct store *cs = NULL;
		int rc = 1;
		char c;

		close(fds[1]);
		if (read(fds[0], &c, 1) == 0 &&
		    (cs = store_open(path, false, err, sizeof(err))))
			rc = store_txn(cs, &op, 1, NULL, NULL, NULL, err,
				       sizeof(err));
		store_close(cs);
		_exit(rc);
	}
	close(fds[0]);

	s = open_ok(path, true);
	other = open_ok(path, false);
	fd = store_watch_fd(s);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(store_watch_fd(s), fd);
	store_watch_ack(s);
	CU_ASSERT_FALSE(readable(fd, 0));

	/* Another handle in this process. */
	r = put(other, "tag/vm1/web", "");
	CU_ASSERT_TRUE(readable(fd, 2000));
	store_watch_ack(s);
	CU_ASSERT_FALSE(readable(fd, 0));
	CU_ASSERT_EQUAL(rev_of(s), r);

	/* Another process. */
	close(fds[1]);
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CU_ASSERT_TRUE(readable(fd, 2000));
	store_watch_ack(s);
	CU_ASSERT_EQUAL(rev_of(s), r + 1);
	assert_value(s, "tag/vm1/x", "");

	store_watch_ack(NULL);
	store_close(other);
	store_close(s);
	free(path);
}

void register_store_tests(void)
{
	static const struct unit_test tests[] = {
		{ "put, get and del", test_put_get_del },
		{ "scan by prefix", test_scan_prefix },
		{ "tags_write follows the stored policy", test_tags_write_follows_policy },
		{ "scan and changes read one snapshot", test_snapshot },
		{ "one revision per transaction", test_revisions },
		{ "changes since a revision", test_changes },
		{ "check vetoes a write", test_veto },
		{ "durable across close, reopen and kill", test_durability },
		{ "concurrent writers lose nothing", test_concurrent_writers },
		{ "concurrent creation", test_concurrent_create },
		{ "missing store", test_missing },
		{ "damaged store rejected", test_damaged },
		{ "watch fd wakes on another writer", test_watch },
	};

	unit_suite("store", tests, ARRAY_SIZE(tests));
}
