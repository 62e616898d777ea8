/* Unit tests of the store, one body for both backends (suites "store" on
 * SQLite and "store-etcd" on the etcd named by DFW_TEST_ETCD, which
 * tests/unit/with-etcd.sh provides): reads and writes, prefix scans,
 * revisions, the change history, vetoes, durability, concurrent writers in
 * separate processes, the watch descriptor and host status; then what only
 * one backend has (damaged SQLite files; etcd's URIs, compaction, reconnects
 * and contents that are not text). */
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
#include <curl/curl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "tagger/config.h"
#include "tagger/state.h"
#include "tagger/store.h"
#include "tagger/tags.h"

#define NWRITERS 4
#define NTXNS 200

enum backend { B_SQLITE, B_ETCD };
static enum backend backend;

static int use_sqlite(void)
{
	backend = B_SQLITE;
	return 0;
}

static int use_etcd(void)
{
	backend = B_ETCD;
	return 0;
}

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

/* A store of the backend under test that nobody used before: a new file,
 * or a new prefix in the test etcd. */
static char *fresh_uri(const char *name)
{
	static unsigned seq;

	if (backend == B_SQLITE)
		return fresh_path(name);
	return xasprintf("%s-%u-%s", getenv("DFW_TEST_ETCD"), ++seq, name);
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

/* The revision the running test started at (0 with SQLite; etcd's
 * revisions are shared by all tests): histories are written relative to it. */
static uint64_t hist_base;

static uint64_t base_rev(struct store *s)
{
	hist_base = rev_of(s);
	if (backend == B_SQLITE) {
		CU_ASSERT_EQUAL(hist_base, 0);
	}
	return hist_base;
}

/* "rev:key=value", or "rev:key" for a deletion, rev relative to
 * hist_base. */
static int collect_change(void *arg, uint64_t rev, const char *key,
			  const char *value)
{
	struct collect *c = arg;
	uint64_t r = rev - hist_base;
	char *item = value ? xasprintf("%" PRIu64 ":%s=%s", r, key, value)
			   : xasprintf("%" PRIu64 ":%s", r, key);

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

static size_t on_reply(char *data, size_t size, size_t n, void *arg)
{
	strv_push(arg, data); /* the tests' replies are small; truncation ok */
	return size * n;
}

/* POSTs json to the test etcd's gateway, as another client would; returns
 * the first bytes of the reply (caller frees) or NULL. */
static char *etcd_post(const char *path, const char *json)
{
	const char *base = getenv("DFW_TEST_ETCD") + strlen("etcd://");
	char *url = xasprintf("http://%.*s%s", (int)strcspn(base, "/"), base, path);
	struct strv reply = { 0 };
	CURL *c = curl_easy_init();
	char *ret = NULL;
	long http = 0;

	CU_ASSERT_PTR_NOT_NULL_FATAL(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_reply);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
	if (curl_easy_perform(c) == CURLE_OK &&
	    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http) == CURLE_OK &&
	    http == 200 && reply.n)
		ret = xstrdup(reply.v[0]);
	else
		fprintf(stderr, "\n%s %s: HTTP %ld %s\n", url, json, http,
			reply.n ? reply.v[0] : "");
	curl_easy_cleanup(c);
	strv_free(&reply);
	free(url);
	return ret;
}

static void etcd_compact(uint64_t rev)
{
	char *json = xasprintf("{\"revision\":\"%" PRIu64 "\",\"physical\":true}", rev);
	char *reply = etcd_post("/v3/kv/compaction", json);

	CU_ASSERT_PTR_NOT_NULL(reply);
	free(reply);
	free(json);
}

static char *b64(const char *data, size_t n)
{
	static const char tab[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *d = (const unsigned char *)data;
	char *out = xmalloc((n + 2) / 3 * 4 + 1), *o = out;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? d[i + 1] << 8 : 0) |
			     (i + 2 < n ? d[i + 2] : 0);

		*o++ = tab[v >> 18 & 63];
		*o++ = tab[v >> 12 & 63];
		*o++ = i + 1 < n ? tab[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? tab[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

/* Puts raw bytes at PREFIX/kv/KEY of the store at uri, past store_txn. */
static void etcd_raw_put(const char *uri, const char *key, const char *value)
{
	const char *prefix = strchr(uri + strlen("etcd://"), '/') + 1;
	char *full = xasprintf("%s/kv/%s", prefix, key);
	char *k = b64(full, strlen(full)), *v = b64(value, strlen(value));
	char *json = xasprintf("{\"key\":\"%s\",\"value\":\"%s\"}", k, v);
	char *reply = etcd_post("/v3/kv/put", json);

	CU_ASSERT_PTR_NOT_NULL(reply);
	free(reply);
	free(json);
	free(k);
	free(v);
	free(full);
}

static void test_put_get_del(void)
{
	char *path = fresh_uri("basic");
	struct store *s = open_ok(path, true);
	struct store_op ops[] = {
		{ STORE_PUT, "policy", "[vm web1]\n" },
		{ STORE_PUT, "tag/web1/pci", "" },
	};

	base_rev(s);
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
	char *path = fresh_uri("tags"), err[256];
	struct store *s = open_ok(path, true);
	char *blue[1] = { (char *)"BLUE" }, *red[1] = { (char *)"red" };
	char names[1][TAG_KEY_MAX];
	uint64_t rev = 0;

	CU_ASSERT_EQUAL(tags_write(s, "web1", blue, 1, true, names, NULL, &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no policy yet"));
	put(s, "policy", pol1);
	CU_ASSERT_EQUAL(tags_write(s, "web1", blue, 1, true, names, NULL, &rev, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(names[0], "blue");
	assert_value(s, "tag/web1/blue", "");
	CU_ASSERT_EQUAL(tags_write(s, "web2", red, 1, true, NULL, NULL, &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown VM 'web2' (did you mean 'web1'?)"));
	/* A new policy without "blue": the cached parse must not be used. */
	put(s, "policy", pol2);
	CU_ASSERT_EQUAL(tags_write(s, "web1", blue, 1, true, NULL, NULL, &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown tag 'BLUE'"));
	CU_ASSERT_EQUAL(tags_write(s, "web1", red, 1, true, NULL, NULL, &rev, err, sizeof(err)), 0);
	put(s, "policy", "[tags]\nnames = red,,\n");
	CU_ASSERT_EQUAL(tags_write(s, "web1", red, 1, false, NULL, NULL, &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "the stored policy does not parse"));
	assert_value(s, "tag/web1/red", "");
	store_close(s);
	free(path);
}

static int untag(struct store *s, const char *vm, const char *tag, char *name, char *err,
		 size_t errlen)
{
	char *tags[1] = { (char *)tag }, names[1][TAG_KEY_MAX] = { "" };
	uint64_t rev;
	int r = tags_write(s, vm, tags, 1, false, names, NULL, &rev, err, errlen);

	if (name)
		strcpy(name, names[0]);
	return r;
}

#define VM_A "[vm a]\nhost = h\nport = p1\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n"
#define VM_B "[vm b]\nhost = h\nport = p2\nmac = 02:00:00:00:00:02\naddresses = 10.0.0.2\n"

/* Names compare ignoring case, keys keep their spelling: after the
 * declared case of a tag (or VM) changed, tag adds no second key and untag
 * removes every key that is the same ignoring case. */
/* place VM HOST: a host of the inventory, or one whose agent reported; a
 * typo is refused with nothing written. */
static void test_place_known_host(void)
{
	static const char pol[] = "[vm web1]\nhost = hv1\nport = p1\nmac = 02:00:00:00:00:01\n"
				  "addresses = 10.0.0.1\n";
	char *path = fresh_uri("place"), err[256], *v = NULL;
	struct store *s = open_ok(path, true);
	uint64_t rev = 0, before;
	bool changed;

	put(s, "policy", pol);
	CU_ASSERT_EQUAL(placement_write(s, "web1", "hv2", NULL, &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown host 'hv2' (did you mean 'hv1'?)"));
	CU_ASSERT_EQUAL(store_get(s, "placement/web1", &v, err, sizeof(err)), 1);
	CU_ASSERT_EQUAL(placement_write(s, "web1", "hv1", NULL, &rev, err, sizeof(err)), 0);
	assert_value(s, "placement/web1", "hv1");
	/* A new host, not yet in the inventory: its agent has reported. */
	CU_ASSERT_EQUAL(store_host_publish(s, "hv2", "{}", 10, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(placement_write(s, "web1", "hv2", &changed, &rev, err, sizeof(err)), 0);
	CU_ASSERT_TRUE(changed);
	assert_value(s, "placement/web1", "hv2");
	/* There already: nothing written. */
	before = rev_of(s);
	CU_ASSERT_EQUAL(placement_write(s, "web1", "hv2", &changed, &rev, err, sizeof(err)), 0);
	CU_ASSERT_FALSE(changed);
	CU_ASSERT_EQUAL(rev, before);
	CU_ASSERT_EQUAL(rev_of(s), before);
	free(v);
	store_close(s);
	free(path);
}

/* Monitor mode: a rule that allows is refused; modes as asked already
 * write nothing. */
static void test_modes_write(void)
{
	char *path = fresh_uri("modes"), err[256];
	struct store *s = open_ok(path, true);
	char *emergency[1] = { (char *)"emergency" };
	const uint32_t allow[1] = { 20 }, drop[1] = { 10 };
	uint64_t rev = 0, before;
	bool changed;

	put(s, "policy", "[rule 10]\nsources = any\ndestinations = any\naction = drop\n"
			 "[rule 20]\nsources = any\ndestinations = any\nservices = tcp/22\n"
			 "action = allow\n");
	before = rev_of(s);
	CU_ASSERT_EQUAL(modes_write(s, true, NULL, 0, allow, 1, false, &changed, &rev, err,
				    sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "rule 20 allows: monitor mode is for drop and reject"));
	CU_ASSERT_EQUAL(rev_of(s), before);
	CU_ASSERT_EQUAL(modes_write(s, true, emergency, 1, drop, 1, false, &changed, &rev, err,
				    sizeof(err)), 0);
	CU_ASSERT_TRUE(changed);
	before = rev_of(s);
	CU_ASSERT_EQUAL(modes_write(s, true, emergency, 1, drop, 1, false, &changed, &rev, err,
				    sizeof(err)), 0);
	CU_ASSERT_FALSE(changed);
	CU_ASSERT_EQUAL(rev_of(s), before);
	/* Enforce of a rule not monitored: nothing; --all then clears both. */
	CU_ASSERT_EQUAL(modes_write(s, false, NULL, 0, allow, 1, false, &changed, &rev, err,
				    sizeof(err)), 0);
	CU_ASSERT_FALSE(changed);
	CU_ASSERT_EQUAL(modes_write(s, false, NULL, 0, NULL, 0, true, &changed, &rev, err,
				    sizeof(err)), 0);
	CU_ASSERT_TRUE(changed);
	CU_ASSERT(rev > before);
	assert_scan(s, "mode/", NULL, 0);
	CU_ASSERT_EQUAL(modes_write(s, false, NULL, 0, NULL, 0, true, &changed, &rev, err,
				    sizeof(err)), 0);
	CU_ASSERT_FALSE(changed);
	store_close(s);
	free(path);
}

static void test_tags_any_case(void)
{
	static const char *const one[] = { "tag/a/threat.high=" };
	char *path = fresh_uri("tagcase"), err[256], name[TAG_KEY_MAX];
	struct store *s = open_ok(path, true);
	char *tags[2] = { (char *)"threat.high", (char *)"THREAT.high" }, names[2][TAG_KEY_MAX];
	uint64_t rev;

	put(s, "policy", "[tags]\nnames = threat.high\n" VM_A);
	CU_ASSERT_EQUAL(tags_write(s, "a", tags, 1, true, names, NULL, &rev, err, sizeof(err)), 0);
	put(s, "policy", "[tags]\nnames = Threat.High\n" VM_A);
	CU_ASSERT_EQUAL(tags_write(s, "A", tags, 2, true, names, NULL, &rev, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(names[0], "Threat.High");
	assert_scan(s, "tag/", one, ARRAY_SIZE(one));
	CU_ASSERT_EQUAL(untag(s, "a", "threat.high", name, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(name, "threat.high");
	assert_scan(s, "tag/", NULL, 0);

	/* A store written before: several spellings of one tag, all go in
	 * one revision; the same tag named twice is fine. */
	put(s, "tag/a/Threat.High", "");
	put(s, "tag/a/threat.high", "");
	put(s, "tag/a/THREAT.HIGH", "");
	put(s, "tag/ab/threat.high", "");
	rev = rev_of(s);
	CU_ASSERT_EQUAL(tags_write(s, "a", tags, 2, false, names, NULL, &rev, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, rev_of(s));
	{
		static const char *const left[] = { "tag/ab/threat.high=" };

		assert_scan(s, "tag/", left, ARRAY_SIZE(left));
	}
	/* Not tagged: a no-op, as before, in the declared spelling. */
	CU_ASSERT_EQUAL(untag(s, "a", "THREAT.HIGH", name, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(name, "Threat.High");
	store_close(s);
	free(path);
}

/* A tag the VM has already, or has not when removed, is no change: with
 * no other change nothing is written (no revision, every host would
 * re-read for it), and changed says which tags were written. */
static void test_tags_noop(void)
{
	char *path = fresh_uri("tagnoop"), err[256];
	struct store *s = open_ok(path, true);
	char *red[1] = { (char *)"red" }, *both[2] = { (char *)"RED", (char *)"blue" };
	bool changed[2];
	uint64_t rev = 0, before;

	put(s, "policy", "[tags]\nnames = red, blue\n" VM_A);
	before = rev_of(s);
	CU_ASSERT_EQUAL(tags_write(s, "a", red, 1, false, NULL, changed, &rev, err, sizeof(err)), 0);
	CU_ASSERT_FALSE(changed[0]);
	CU_ASSERT_EQUAL(rev, before);
	CU_ASSERT_EQUAL(rev_of(s), before);
	CU_ASSERT_EQUAL(tags_write(s, "a", red, 1, true, NULL, changed, &rev, err, sizeof(err)), 0);
	CU_ASSERT_TRUE(changed[0]);
	CU_ASSERT(rev > before);
	before = rev;
	CU_ASSERT_EQUAL(tags_write(s, "a", red, 1, true, NULL, changed, &rev, err, sizeof(err)), 0);
	CU_ASSERT_FALSE(changed[0]);
	CU_ASSERT_EQUAL(rev_of(s), before);
	/* One of two is a change: one revision, which says so per tag. */
	CU_ASSERT_EQUAL(tags_write(s, "a", both, 2, true, NULL, changed, &rev, err, sizeof(err)), 0);
	CU_ASSERT_FALSE(changed[0]);
	CU_ASSERT_TRUE(changed[1]);
	CU_ASSERT(rev > before);
	before = rev;
	CU_ASSERT_EQUAL(tags_write(s, "a", both, 2, false, NULL, changed, &rev, err, sizeof(err)), 0);
	CU_ASSERT(changed[0] && changed[1]);
	CU_ASSERT(rev > before);
	assert_scan(s, "tag/", NULL, 0);
	/* Unknown names are still refused, also when nothing would change. */
	CU_ASSERT_EQUAL(tags_write(s, "a", (char *[]){ (char *)"green" }, 1, false, NULL, changed,
				   &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown tag 'green'"));
	store_close(s);
	free(path);
}

/* A detection's record goes with its tag; a release writes only while the
 * record is what its full scan read before it began. */
static void test_tags_write_rec(void)
{
	char *path = fresh_uri("tagrec"), err[256];
	struct store *s = open_ok(path, true);
	char *red[1] = { (char *)"red" };
	uint64_t rev, r0;

	put(s, "policy", "[tags]\nnames = red\n" VM_A);
	/* Tagged before: the detection still makes a revision, its record. */
	CU_ASSERT_EQUAL(tags_write(s, "a", red, 1, true, NULL, NULL, &rev, err, sizeof(err)), 0);
	r0 = rev_of(s);
	CU_ASSERT_EQUAL(tags_write_rec(s, "a", red, 1, true, "detected/a", "1 high", NULL, NULL, &rev,
				       err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, r0 + 1);
	assert_value(s, "detected/a", "1 high");
	assert_value(s, "tag/a/red", "");
	/* A scan that began before it (no record then) does not release. */
	r0 = rev_of(s);
	CU_ASSERT_EQUAL(tags_write_rec(s, "a", red, 1, false, "detected/a", NULL, NULL, NULL, &rev, err,
				       sizeof(err)), 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "'detected/a' changed"));
	CU_ASSERT_EQUAL(tags_write_rec(s, "a", red, 1, false, "detected/a", "0 low", NULL, NULL, &rev,
				       err, sizeof(err)), 2);
	CU_ASSERT_EQUAL(rev_of(s), r0);
	assert_value(s, "tag/a/red", "");
	/* One that began after it does. */
	CU_ASSERT_EQUAL(tags_write_rec(s, "a", red, 1, false, "detected/a", "1 high", NULL, NULL, &rev,
				       err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, r0 + 1);
	assert_scan(s, "tag/", NULL, 0);
	store_close(s);
	free(path);
}

/* The network detector's tag, with its record netthreat/VM: a release
 * (a clean file scan) keeps it and removes the rest; an untag by anyone
 * else removes the tag and the record together. */
static void test_netthreat_rec(void)
{
	char *path = fresh_uri("ntrec"), err[256], names[2][TAG_KEY_MAX];
	struct store *s = open_ok(path, true);
	char *both[2] = { (char *)"red", (char *)"blue" }, *red[1] = { both[0] };
	uint64_t rev;

	put(s, "policy", "[tags]\nnames = red, blue\n" VM_A);
	CU_ASSERT_EQUAL(tags_write_rec(s, "a", red, 1, true, "netthreat/a", "red", NULL, NULL, &rev,
				       err, sizeof(err)), 0);
	assert_value(s, "netthreat/a", "red");
	CU_ASSERT_EQUAL(tags_write_rec(s, "a", &both[1], 1, true, "detected/a", "1 high", NULL,
				       NULL, &rev, err, sizeof(err)), 0);
	/* The release removes blue, keeps red (its name comes back empty). */
	CU_ASSERT_EQUAL(tags_write_rec(s, "a", both, 2, false, "detected/a", "1 high", names, NULL, &rev,
				       err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(names[0], "");
	CU_ASSERT_STRING_EQUAL(names[1], "blue");
	{
		static const char *const left[] = { "tag/a/red=" };

		assert_scan(s, "tag/", left, ARRAY_SIZE(left));
	}
	assert_value(s, "netthreat/a", "red");
	/* Untagging blue (not carried) leaves the record; untagging red,
	 * in another spelling, ends it. */
	CU_ASSERT_EQUAL(tags_write(s, "a", &both[1], 1, false, NULL, NULL, &rev, err, sizeof(err)), 0);
	assert_value(s, "netthreat/a", "red");
	{
		char *upper[1] = { (char *)"RED" };

		CU_ASSERT_EQUAL(tags_write(s, "a", upper, 1, false, NULL, NULL, &rev, err, sizeof(err)), 0);
	}
	assert_scan(s, "tag/", NULL, 0);
	assert_scan(s, "netthreat/", NULL, 0);
	store_close(s);
	free(path);
}

/* A tag of a VM, or a tag, the policy no longer has can still be removed
 * (else it comes back with them); tagging them is refused, and so is
 * untagging them where there is no key. */
static void test_untag_gone(void)
{
	static const char *const kept[] = { "tag/b/red=" };
	char *path = fresh_uri("untaggone"), err[256], name[TAG_KEY_MAX];
	struct store *s = open_ok(path, true);
	char *red[1] = { (char *)"red" };
	uint64_t rev;

	put(s, "policy", "[tags]\nnames = red, blue\n" VM_A VM_B);
	CU_ASSERT_EQUAL(tags_write(s, "a", red, 1, true, NULL, NULL, &rev, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(tags_write(s, "b", red, 1, true, NULL, NULL, &rev, err, sizeof(err)), 0);
	put(s, "policy", "[tags]\nnames = blue\n" VM_B);
	CU_ASSERT_EQUAL(tags_write(s, "a", red, 1, true, NULL, NULL, &rev, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown VM 'a'"));
	CU_ASSERT_EQUAL(untag(s, "A", "RED", name, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(name, "red");
	assert_scan(s, "tag/", kept, ARRAY_SIZE(kept));
	CU_ASSERT_EQUAL(untag(s, "a", "blue", NULL, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown VM 'a'"));
	CU_ASSERT_EQUAL(untag(s, "b", "green", NULL, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "unknown tag 'green'"));
	CU_ASSERT_EQUAL(untag(s, "b", "red", NULL, err, sizeof(err)), 0);
	assert_scan(s, "tag/", NULL, 0);
	store_close(s);
	free(path);
}

static void capture_warn(void *arg, const char *msg)
{
	strv_push(arg, msg);
}

static size_t count_containing(const struct strv *v, const char *what)
{
	size_t n = 0;

	for (size_t i = 0; i < v->n; i++)
		n += strstr(v->v[i], what) != NULL;
	return n;
}

/* A block's time in any other form than the one written (sign, blank,
 * leading zero) is not taken for expired, nor left unsaid. */
static void test_block_values_strict(void)
{
	static const char *const left[] = { "block/10.0.0.1=", "block/10.0.0.7=-1",
					    "block/10.0.0.8= 5", "block/10.0.0.9=05" };
	char *path = fresh_uri("blockvals"), err[256];
	struct store *s = open_ok(path, true);
	struct strv warned = { 0 };
	struct dfw_addr a;
	const char *why;
	struct collect c = { 0 };
	uint64_t rev;

	store_set_warn(s, capture_warn, &warned);
	put(s, "block/10.0.0.6", "5");
	put(s, "block/10.0.0.7", "-1");
	put(s, "block/10.0.0.8", " 5");
	put(s, "block/10.0.0.9", "05");
	CU_ASSERT_EQUAL_FATAL(addr_parse("10.0.0.1", &a, &why), 0);
	CU_ASSERT_EQUAL(block_write(s, &a, NULL, wall_ms() + 60000, &rev, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(store_scan(s, "block/", collect_kv, &c, &rev, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL_FATAL(c.items.n, ARRAY_SIZE(left));
	for (size_t i = 0; i < ARRAY_SIZE(left); i++)
		CU_ASSERT_EQUAL(strncmp(c.items.v[i], left[i], strlen(left[i])), 0);
	CU_ASSERT_EQUAL(warned.n, 3);
	/* Addresses no host has are refused, and nothing is written. */
	for (size_t i = 0; i < 4; i++) {
		static const char *const none[] = { "0.0.0.0", "255.255.255.255", "::ffff:10.0.0.1",
						    "224.0.0.251" };
		char key[64], *v = NULL;

		CU_ASSERT_EQUAL_FATAL(addr_parse(none[i], &a, &why), 0);
		CU_ASSERT_EQUAL(block_write(s, &a, NULL, wall_ms() + 60000, &rev, err, sizeof(err)), 1);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a host's own"));
		snprintf(key, sizeof(key), "block/%s", none[i]);
		CU_ASSERT_EQUAL(store_get(s, key, &v, err, sizeof(err)), 1);
		free(v);
	}
	CU_ASSERT_EQUAL(count_containing(&warned, "store key 'block/10.0.0.7': value '-1'"), 1);
	CU_ASSERT_EQUAL(count_containing(&warned, "store key 'block/10.0.0.8'"), 1);
	CU_ASSERT_EQUAL(count_containing(&warned, "store key 'block/10.0.0.9'"), 1);
	strv_free(&c.items);
	strv_free(&warned);
	store_close(s);
	free(path);
}

/* Keeps the items without a byte 0xff, which etcd cannot hold as text. */
static size_t text_items(const char *const *in, size_t n, const char **out)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		if (backend == B_SQLITE || !strchr(in[i], '\xff'))
			out[k++] = in[i];
	return k;
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
	const char *want[ARRAY_SIZE(all)];
	char *path = fresh_uri("scan");
	struct store *s = open_ok(path, true);
	struct collect c = { .limit = 2 };
	char err[256];
	uint64_t r0 = base_rev(s), rev = 0, n = 0;

	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		struct store_op op = { STORE_PUT, keys[i], "v" };

		if (backend == B_SQLITE || !strchr(keys[i], '\xff')) {
			put(s, keys[i], "v");
			n++;
			continue;
		}
		/* etcd would skip it when reading: refused when written. */
		CU_ASSERT_EQUAL(store_txn(s, &op, 1, NULL, NULL, NULL, err,
					  sizeof(err)), -1);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "is not UTF-8 text"));
	}
	assert_scan(s, "", want, text_items(all, ARRAY_SIZE(all), want));
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
	assert_scan(s, "z\xff", want, text_items(ff, ARRAY_SIZE(ff), want));
	assert_scan(s, "\xff", NULL, 0);

	/* Stopping early. */
	CU_ASSERT_EQUAL(store_scan(s, "", collect_kv, &c, &rev, err,
				   sizeof(err)), 0);
	CU_ASSERT_EQUAL(c.items.n, 2);
	CU_ASSERT_EQUAL(rev, r0 + n);
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

	char *path = fresh_uri("snapshot");
	struct store *s = open_ok(path, true);
	struct interfere in = { .other = open_ok(path, false) };
	char err[256];
	uint64_t r0 = base_rev(s), rev = 0;

	put(s, "s/a", "1");
	put(s, "s/b", "2");
	CU_ASSERT_EQUAL(store_scan(s, "s/", scan_and_write, &in, &rev, err,
				   sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, r0 + 2);
	CU_ASSERT_EQUAL(in.rev, r0 + 3);
	assert_items(&in.seen.items, before, ARRAY_SIZE(before));
	strv_free(&in.seen.items);
	assert_scan(s, "s/", after, ARRAY_SIZE(after));

	CU_ASSERT_EQUAL(store_changes(s, r0, changes_and_write, &in, &rev, err,
				      sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, r0 + 3);
	CU_ASSERT_EQUAL(in.rev, r0 + 4);
	assert_items(&in.seen.items, hist, ARRAY_SIZE(hist));
	strv_free(&in.seen.items);
	/* Revision 4 wrote the same again: a revision without changes. */
	assert_changes(s, r0 + 2, hist + 2, ARRAY_SIZE(hist) - 2);
	CU_ASSERT_EQUAL(rev_of(s), r0 + 4);

	store_close(in.other);
	store_close(s);
	free(path);
}

static void test_revisions(void)
{
	char *path = fresh_uri("rev");
	struct store *s = open_ok(path, true);
	struct store_op two[] = {
		{ STORE_PUT, "a", "1" },
		{ STORE_PUT, "b", "2" },
	};
	char err[256];
	uint64_t r0 = base_rev(s);

	CU_ASSERT_EQUAL(put(s, "a", "0"), r0 + 1);
	CU_ASSERT_EQUAL(txn_ok(s, two, ARRAY_SIZE(two)), r0 + 2);
	/* Writes that change nothing still make one revision each. */
	CU_ASSERT_EQUAL(txn_ok(s, NULL, 0), r0 + 3);
	CU_ASSERT_EQUAL(del(s, "missing"), r0 + 4);
	CU_ASSERT_EQUAL(put(s, "a", "1"), r0 + 5);
	CU_ASSERT_EQUAL(rev_of(s), r0 + 5);
	/* A NULL rev pointer is allowed. */
	CU_ASSERT_EQUAL(store_txn(s, two, 1, NULL, NULL, NULL, err,
				  sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev_of(s), r0 + 6);
	/* A malformed op fails the whole write. */
	two[1].value = NULL;
	CU_ASSERT_EQUAL(store_txn(s, two, 2, NULL, NULL, NULL, err,
				  sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "op 1 is malformed"));
	CU_ASSERT_EQUAL(rev_of(s), r0 + 6);
	store_close(s);
	free(path);
}

static void test_changes(void)
{
	static const char *const all[] = {
		"1:a=1", "1:b=2", "2:a", "4:b=3", "5:c=2",
	};
	char *path = fresh_uri("changes");
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
	uint64_t r0 = base_rev(s), now = 0;

	assert_changes(s, r0, NULL, 0);
	txn_ok(s, r1, ARRAY_SIZE(r1));
	txn_ok(s, r2, ARRAY_SIZE(r2));
	txn_ok(s, NULL, 0);
	put(s, "b", "3");
	txn_ok(s, r5, ARRAY_SIZE(r5));
	CU_ASSERT_EQUAL(rev_of(s), r0 + 5);
	assert_value(s, "a", NULL);

	assert_changes(s, r0, all, ARRAY_SIZE(all));
	assert_changes(s, r0 + 1, all + 2, ARRAY_SIZE(all) - 2);
	assert_changes(s, r0 + 2, all + 3, ARRAY_SIZE(all) - 3);
	assert_changes(s, r0 + 3, all + 3, ARRAY_SIZE(all) - 3);
	assert_changes(s, r0 + 4, all + 4, 1);
	assert_changes(s, r0 + 5, NULL, 0);

	/* Stopping after revision 2's change: *now is the revision before,
	 * so that resuming from it skips nothing. */
	CU_ASSERT_EQUAL(store_changes(s, r0, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	CU_ASSERT_EQUAL(c.items.n, 3);
	CU_ASSERT_EQUAL(now, r0 + 1);
	strv_free(&c.items);

	/* A revision beyond the store's: the caller must re-scan. */
	CU_ASSERT_EQUAL(store_changes(s, rev_of(s) + 1, collect_change, &c, &now,
				      err, sizeof(err)), -2);
	CU_ASSERT_EQUAL(c.items.n, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
	store_close(s);

	/* History compacted (by another tool): asking from before it is -2,
	 * from it on is fine.  etcd keeps the history from the revision it
	 * compacted at on. */
	if (backend == B_SQLITE)
		raw_exec(path, "DELETE FROM changes WHERE rev <= 2;"
			       "UPDATE meta SET value = 2 WHERE name = 'compacted'");
	else
		etcd_compact(r0 + 3);
	s = open_ok(path, false);
	err[0] = '\0';
	CU_ASSERT_EQUAL(store_changes(s, r0 + 1, collect_change, &c, &now, err,
				      sizeof(err)), -2);
	CU_ASSERT_EQUAL(c.items.n, 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no longer kept"));
	assert_changes(s, r0 + 2, all + 3, ARRAY_SIZE(all) - 3);
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
	char *path = fresh_uri("veto");
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
	char *path = fresh_uri("durable");
	/* The same store by another name: sqlite:PATH for PATH. */
	char *uri = backend == B_SQLITE ? xasprintf("sqlite:%s", path) : xstrdup(path);
	struct store *s = open_ok(uri, true);
	static const char *const hist[] = { "1:a=1", "2:b=2", "3:a", "4:c=3" };
	uint64_t r, r0 = base_rev(s);
	int fds[2], status;
	pid_t pid;

	put(s, "a", "1");
	put(s, "b", "2");
	del(s, "a");
	store_close(s);

	s = open_ok(path, false);
	CU_ASSERT_EQUAL(rev_of(s), r0 + 3);
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
	CU_ASSERT_EQUAL(r, r0 + 4);

	s = open_ok(uri, false);
	CU_ASSERT_EQUAL(rev_of(s), r0 + 4);
	assert_value(s, "c", "3");
	assert_changes(s, r0, hist, ARRAY_SIZE(hist));
	store_close(s);
	free(uri);
	free(path);
}

/* A read-modify-write: the check reads the counter inside the transaction
 * and fills in the value the PUT op points to. */
/* Checks run by this process: more than its transactions when etcd made
 * it retry. */
static unsigned checks_run;

static int bump_counter(struct store *s, void *arg, char *err, size_t errlen)
{
	char *buf = arg, *v = NULL;

	checks_run++;
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
 * bumping the shared counter; reports how many checks it ran on
 * report_fd.  Returns the exit status. */
static int writer(const char *path, int id, int start_fd, int report_fd)
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
	ret = write(report_fd, &checks_run, sizeof(checks_run)) == sizeof(checks_run) ? 0 : 1;
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
	char *path = fresh_uri("concurrent");
	struct store *s = open_ok(path, true);
	struct history h = { 0 };
	struct collect c = { 0 };
	char err[256], key[32];
	pid_t pids[NWRITERS];
	int fds[2], rep[2], status, failed = 0;
	uint64_t r0, now = 0, rev = 0, t0;
	unsigned checks = 0, n;
	size_t i = 0;

	r0 = put(s, "unrelated", "1");
	/* No handle is open across fork. */
	store_close(s);
	CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
	CU_ASSERT_EQUAL_FATAL(pipe(rep), 0);
	for (int w = 0; w < NWRITERS; w++) {
		pids[w] = fork();
		CU_ASSERT_FATAL(pids[w] >= 0);
		if (pids[w] == 0) {
			close(fds[1]);
			_exit(writer(path, w, fds[0], rep[1]));
		}
	}
	close(fds[0]);
	t0 = now_ns();
	close(fds[1]);
	close(rep[1]);
	for (int w = 0; w < NWRITERS; w++) {
		CU_ASSERT_EQUAL(waitpid(pids[w], &status, 0), pids[w]);
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			failed++;
	}
	CU_ASSERT_EQUAL(failed, 0);
	while (read(rep[0], &n, sizeof(n)) == sizeof(n))
		checks += n;
	close(rep[0]);
	printf("\n  [%s: %d writers x %d read-modify-write txns in %.0f ms;"
	       " %u checks run, %u of them retries] ",
	       backend == B_SQLITE ? "sqlite" : "etcd", NWRITERS, NTXNS,
	       (double)(now_ns() - t0) / 1e6, checks, checks - NWRITERS * NTXNS);
	CU_ASSERT_EQUAL(checks >= NWRITERS * NTXNS, true);

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
	char *path = fresh_uri("create");
	struct store *s;
	struct collect c = { 0 };
	pid_t pids[NWRITERS];
	int fds[2], status, failed = 0;
	char err[256];
	uint64_t rev = 0, r0 = 0;

	/* etcd's revisions are shared: where this test starts (no handle is
	 * open across fork). */
	if (backend == B_ETCD) {
		s = open_ok(path, true);
		r0 = rev_of(s);
		store_close(s);
	}

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
	CU_ASSERT_EQUAL(rev_of(s), r0 + NWRITERS);
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
	char *path = fresh_uri("watch");
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

/* "host=value alive" or "host=value dead". */
static int collect_host(void *arg, const struct store_host *h)
{
	char *item = xasprintf("%s=%s %s", h->host, h->value, h->alive ? "alive" : "dead");

	strv_push(arg, item);
	free(item);
	return 0;
}

static void assert_hosts(struct store *s, const char *const *want, size_t n)
{
	struct strv got = { 0 };
	char err[256];

	CU_ASSERT_EQUAL(store_host_scan(s, collect_host, &got, err, sizeof(err)), 0);
	assert_items(&got, want, n);
	strv_free(&got);
}

static bool host_alive(struct store *s, const char *host)
{
	struct strv got = { 0 };
	char err[256];
	bool alive = false;

	CU_ASSERT_EQUAL(store_host_scan(s, collect_host, &got, err, sizeof(err)), 0);
	for (size_t i = 0; i < got.n; i++)
		if (!strncmp(got.v[i], host, strlen(host)) && got.v[i][strlen(host)] == '=')
			alive = strstr(got.v[i], " alive") != NULL;
	strv_free(&got);
	return alive;
}

static void publish_ok(struct store *s, const char *host, const char *value,
		       unsigned ttl)
{
	char err[256] = "";
	int rc = store_host_publish(s, host, value, ttl, err, sizeof(err));

	if (rc)
		fprintf(stderr, "\nstore_host_publish: %s\n", err);
	CU_ASSERT_EQUAL(rc, 0);
}

static void withdraw_ok(struct store *s, const char *host)
{
	char err[256] = "";
	int rc = store_host_withdraw(s, host, err, sizeof(err));

	if (rc)
		fprintf(stderr, "\nstore_host_withdraw: %s\n", err);
	CU_ASSERT_EQUAL(rc, 0);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void test_hosts(void)
{
	static const char *const two[] = { "h1={\"n\":1} alive", "h2={\"n\":2} alive" };
	static const char *const changed[] = { "h1={\"n\":1} alive", "h2={\"n\":22} alive" };
	static const char *const gone[] = { "h1={\"n\":1} dead", "h2={\"n\":22} alive" };
	char *path = fresh_uri("hosts");
	struct store *s = open_ok(path, true), *other = open_ok(path, false);
	struct collect c = { 0 };
	char err[256];
	uint64_t r0, r1, now = 0, t0;
	long ms;

	r0 = put(s, "policy", "p");
	hist_base = r0;
	assert_hosts(s, NULL, 0);
	publish_ok(s, "h2", "{\"n\":2}", 30);
	publish_ok(other, "h1", "{\"n\":1}", 30);
	assert_hosts(s, two, ARRAY_SIZE(two));

	/* Outside the desired state: nothing for a watcher. */
	CU_ASSERT_EQUAL(store_changes(s, r0, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	CU_ASSERT_EQUAL(c.items.n, 0);
	CU_ASSERT_EQUAL(now, r0);
	if (backend == B_SQLITE) {
		CU_ASSERT_EQUAL(rev_of(s), r0);
	}

	/* The same again is cheap: with etcd a keepalive, no write. */
	r1 = rev_of(s);
	publish_ok(s, "h2", "{\"n\":2}", 30);
	CU_ASSERT_EQUAL(rev_of(s), r1);
	publish_ok(s, "h2", "{\"n\":22}", 30);
	assert_hosts(s, changed, ARRAY_SIZE(changed));

	/* Withdrawn: the status stays, not alive; back on publishing. */
	withdraw_ok(other, "h1");
	assert_hosts(s, gone, ARRAY_SIZE(gone));
	publish_ok(other, "h1", "{\"n\":1}", 30);
	assert_hosts(s, changed, ARRAY_SIZE(changed));

	/* Not published again within its ttl: not alive (etcd's leases last
	 * at least about 2 s whatever was asked). */
	publish_ok(s, "h3", "x", 1);
	t0 = now_ns();
	CU_ASSERT_TRUE(host_alive(s, "h3"));
	while (host_alive(s, "h3") && now_ns() - t0 < 10000000000ull)
		sleep_ms(50);
	ms = (long)((now_ns() - t0) / 1000000);
	CU_ASSERT_FALSE(host_alive(s, "h3"));
	CU_ASSERT(ms >= 900);
	printf("\n  [%s: a 1 s status ttl ran out after %ld ms] ",
	       backend == B_SQLITE ? "sqlite" : "etcd", ms);
	/* Publishing the same value after that makes it alive again. */
	publish_ok(s, "h3", "x", 1);
	CU_ASSERT_TRUE(host_alive(s, "h3"));

	CU_ASSERT_EQUAL(store_host_publish(s, "a/b", "x", 5, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a host name"));
	CU_ASSERT_EQUAL(store_host_publish(s, "", "x", 5, err, sizeof(err)), -1);
	CU_ASSERT_EQUAL(store_host_publish(s, "h4", "\xff", 5, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not UTF-8"));

	/* No lease left to expire into a later test's revisions. */
	withdraw_ok(s, "h2");
	withdraw_ok(s, "h3");
	withdraw_ok(other, "h1");
	store_close(other);
	store_close(s);
	free(path);
}

/* A store made before host status existed gets its table at the first
 * publish; reading it before that finds no hosts. */
static void test_hosts_old_store(void)
{
	static const char *const one[] = { "h=v alive" };
	char *path = make_store("oldhosts.db");
	struct store *s;

	raw_exec(path, "DROP TABLE hosts");
	s = open_ok(path, false);
	assert_hosts(s, NULL, 0);
	publish_ok(s, "h", "v", 30);
	assert_hosts(s, one, ARRAY_SIZE(one));
	CU_ASSERT_EQUAL(rev_of(s), 100);
	store_close(s);
	s = open_ok(path, false);
	assert_hosts(s, one, ARRAY_SIZE(one));
	store_close(s);
	free(path);
}

/* While another handle holds the write lock (here: inside its check), a
 * host's status write gives up after a short wait: dfwd publishes from its
 * main loop, which must not stall for the 10 s a desired-state write
 * waits. */
static int publish_in_check(struct store *s, void *arg, char *err, size_t errlen)
{
	struct store *other = arg;
	char perr[256] = "";
	uint64_t t0 = now_ns();
	int rc = store_host_publish(other, "h", "v", 30, perr, sizeof(perr));
	double ms = (double)(now_ns() - t0) / 1e6;

	printf("\n  [host publish against a held write lock: rc %d after %.0f ms: %s] ", rc, ms,
	       perr);
	CU_ASSERT_EQUAL(rc, -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(perr, "locked"));
	CU_ASSERT(ms < 2000);
	return 1; /* veto: nothing to write */
}

static void test_hosts_publish_locked(void)
{
	char *path = fresh_path("publock.db"), err[256];
	struct store *s = open_ok(path, true), *other = open_ok(path, false);
	struct store_op op = { STORE_PUT, "k", "v" };
	uint64_t rev = 0;

	CU_ASSERT_EQUAL(store_txn(s, &op, 1, publish_in_check, other, &rev, err, sizeof(err)), 1);
	publish_ok(other, "h", "v", 30); /* and once the lock is free, at once */
	store_close(other);
	store_close(s);
	free(path);
}

/* store_set_deadline: a caller that must not stall (dfwd's threat
 * response, in its loop) gets its answer within the bound when the store
 * holds it up: a write lock held by another handle (SQLite), an etcd that
 * takes connections and answers nothing (stopped with SIGSTOP).  Without
 * the bound these wait 10 s and 3 s per request. */
static void etcd_ctl(const char *what);

static int write_in_check(struct store *s, void *arg, char *err, size_t errlen)
{
	struct store *other = arg;
	struct store_op op = { STORE_PUT, "k", "2" };
	char werr[256] = "";
	uint64_t t0 = now_ns(), rev;
	int rc;

	store_set_deadline(other, 200);
	rc = store_txn(other, &op, 1, NULL, NULL, &rev, werr, sizeof(werr));
	store_set_deadline(other, 0);
	printf("\n  [sqlite: a write bound to 200 ms against a held lock: rc %d after %.0f ms] ",
	       rc, (double)(now_ns() - t0) / 1e6);
	CU_ASSERT_EQUAL(rc, -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(werr, "locked"));
	CU_ASSERT(now_ns() - t0 < 2000000000u);
	return 1;
}

static void test_deadline(void)
{
	char *path = fresh_uri("deadline"), err[256];
	struct store *s = open_ok(path, true), *other = open_ok(path, false);
	struct store_op op = { STORE_PUT, "k", "1" };
	uint64_t rev = 0, t0;
	int rc;

	if (backend == B_SQLITE) {
		CU_ASSERT_EQUAL(store_txn(s, &op, 1, write_in_check, other, &rev, err,
					  sizeof(err)), 1);
	} else if (!getenv("DFW_TEST_ETCD_CTL")) {
		fprintf(stderr, "\n  SKIPPED: DFW_TEST_ETCD_CTL is not set\n");
	} else {
		put(s, "k", "1");
		etcd_ctl("pause");
		t0 = now_ns();
		store_set_deadline(other, 300);
		rc = store_txn(other, &op, 1, NULL, NULL, &rev, err, sizeof(err));
		store_set_deadline(other, 0);
		etcd_ctl("resume");
		printf("\n  [etcd: a write bound to 300 ms, etcd frozen: rc %d after %.0f ms] ", rc,
		       (double)(now_ns() - t0) / 1e6);
		CU_ASSERT_EQUAL(rc, -1);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "no answer"));
		CU_ASSERT(now_ns() - t0 < 2000000000u);
	}
	/* The bound ended: the next write waits as usual, and succeeds. */
	op.value = "3";
	CU_ASSERT_EQUAL(store_txn(other, &op, 1, NULL, NULL, &rev, err, sizeof(err)), 0);
	assert_value(s, "k", "3");
	store_close(other);
	store_close(s);
	free(path);
}

/* A port on 127.0.0.1 that nobody listens on (just released). */
static unsigned closed_port(void)
{
	char *cmd = NULL;
	unsigned port = 0;
	FILE *f;

	/* bash's /dev/tcp would need a listener; the kernel picks a free
	 * port for an unbound connect-less socket instead. */
	cmd = xasprintf("python3 -c 'import socket; s=socket.socket();"
			" s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'"
			" 2>/dev/null");
	f = popen(cmd, "r");
	if (f) {
		if (fscanf(f, "%u", &port) != 1)
			port = 0;
		pclose(f);
	}
	free(cmd);
	return port ? port : 9; /* discard: nobody listens on loopback */
}

static void test_etcd_uri(void)
{
	char err[256], *v = NULL, *uri, *want;
	struct store *s;
	uint64_t rev = 0;
	struct store_op op = { STORE_PUT, "k", "v" };
	unsigned port = closed_port();

	assert_open_fails("etcd://127.0.0.1:99999/x", true, "etcd://127.0.0.1:99999/x", "bad port");
	assert_open_fails("etcd://127.0.0.1:/x", true, "etcd://127.0.0.1:/x", "bad port");
	assert_open_fails("etcd://127.0.0.1:23x9", true, "etcd://", "bad port \"23x9\"");
	assert_open_fails("etcd://127.0.0.1:0", true, "etcd://", "bad port");
	assert_open_fails("etcd://:2379/x", true, "etcd://:2379/x", "no host");
	assert_open_fails("etcd:///x", true, "etcd:///x", "no host");
	assert_open_fails("etcd://user@h:1/x", true, "etcd://user@h:1/x", "bad host");
	assert_open_fails("etcd://h_1:1/x", true, "etcd://h_1:1/x", "bad host");
	assert_open_fails("etcd://[zz]:1/x", true, "etcd://[zz]:1/x", "bad host");
	assert_open_fails("etcd://h:1/a//b", true, "etcd://h:1/a//b", "bad prefix");
	assert_open_fails("etcd://h:1/a/", true, "etcd://h:1/a/", "bad prefix");
	assert_open_fails("etcd://h:1/a b", true, "etcd://h:1/a b", "bad prefix");
	store_close(open_ok("etcd://[::1]:2379/a/b-c_d.e", false));
	store_close(open_ok("etcd://localhost", false));

	/* Opening never needs etcd; the first call that does says why. */
	uri = xasprintf("etcd://127.0.0.1:%u", port);
	want = xasprintf("etcd 127.0.0.1:%u: connection refused", port);
	s = open_ok(uri, true);
	CU_ASSERT_EQUAL(store_rev(s, &rev, err, sizeof(err)), -1);
	CU_ASSERT_STRING_EQUAL(err, want);
	CU_ASSERT_EQUAL(store_get(s, "k", &v, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NULL(v);
	CU_ASSERT_STRING_EQUAL(err, want);
	CU_ASSERT_EQUAL(store_scan(s, "", collect_kv, NULL, &rev, err, sizeof(err)), -1);
	CU_ASSERT_EQUAL(store_txn(s, &op, 1, NULL, NULL, &rev, err, sizeof(err)), -1);
	CU_ASSERT_STRING_EQUAL(err, want);
	CU_ASSERT_EQUAL(store_changes(s, 0, collect_change, NULL, &rev, err, sizeof(err)), -1);
	CU_ASSERT_STRING_EQUAL(err, want);
	CU_ASSERT_EQUAL(store_host_publish(s, "h", "x", 5, err, sizeof(err)), -1);
	CU_ASSERT_STRING_EQUAL(err, want);
	CU_ASSERT_FATAL(store_watch_fd(s) >= 0);
	CU_ASSERT_FALSE(readable(store_watch_fd(s), 0));
	store_close(s);
	free(want);
	free(uri);
}

/* Stored numbers are read only in the form dfw writes them: mode/rule/01
 * is not rule 1 (dfwctl mode enforce 1 would leave it), and says so. */
static void test_state_numbers(void)
{
	static const char *const bad[] = { "01", "+1", " 1", "1 ", "-1", "", "4294967297" };
	static const char pol[] = "[tags]\nnames = red\n" VM_A "[rule 1]\naction = drop\n";
	struct snapshot snap = { 0 };
	struct strv warned = { 0 };
	struct diag d = { 0 };
	struct dfw_policy *p = policy_parse(pol, "t.ini", &d);
	struct dfw_block b;
	char err[128];
	uint64_t v = 7;

	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *k = xasprintf("rule/%s", bad[i]);

		strv_push(&snap.modes, k);
		strv_push(&snap.modes, "monitor");
		free(k);
	}
	state_apply(p, &snap, capture_warn, &warned);
	CU_ASSERT_FALSE(policy_find_rule(p, 1)->monitor);
	CU_ASSERT_EQUAL(warned.n, ARRAY_SIZE(bad));
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char *w = xasprintf("store key 'mode/rule/%s': '%s' is not a rule id", bad[i],
				    bad[i]);

		CU_ASSERT_EQUAL(count_containing(&warned, w), 1);
		free(w);
	}
	strv_push(&snap.modes, "rule/1");
	strv_push(&snap.modes, "monitor");
	state_apply(p, &snap, NULL, NULL);
	CU_ASSERT_TRUE(policy_find_rule(p, 1)->monitor);

	CU_ASSERT_TRUE(state_number("0", 10, &v) && v == 0);
	CU_ASSERT_TRUE(state_number("18446744073709551615", UINT64_MAX, &v) && v == UINT64_MAX);
	CU_ASSERT_FALSE(state_number("18446744073709551616", UINT64_MAX, &v));
	CU_ASSERT_FALSE(state_number("11", 10, &v));
	CU_ASSERT_FALSE(state_number("00", 10, &v));
	CU_ASSERT_TRUE(state_block(p, "10.0.0.9", "5", &b, err, sizeof(err)) && b.until_ms == 5);
	CU_ASSERT_FALSE(state_block(p, "10.0.0.9", "05", &b, err, sizeof(err)));
	CU_ASSERT_FALSE(state_block(p, "10.0.0.9", "+5", &b, err, sizeof(err)));
	snapshot_free(&snap);
	strv_free(&warned);
	diag_free(&d);
	policy_free(p);
}

/* --- a fake etcd gateway --- */

/* For replies a real etcd never sends: a child process on a loopback
 * port answers every POST to path with body; a stream (the watch) is held
 * open until the client goes. */
struct fake_route {
	const char *path, *body;
	bool stream;
};

static void fake_answer(int fd, const struct fake_route *r, size_t n)
{
	static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
				 "Connection: close\r\n\r\n";
	char req[16384], *end, *cl, *head;
	size_t got = 0, want = 0;
	ssize_t k;

	/* The request, headers and body, so that the client is not cut. */
	while (got < sizeof(req) - 1 && (k = read(fd, req + got, sizeof(req) - 1 - got)) > 0) {
		got += (size_t)k;
		req[got] = '\0';
		if ((end = strstr(req, "\r\n\r\n"))) {
			cl = strcasestr(req, "content-length:");
			want = (size_t)(end + 4 - req) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
			if (got >= want)
				break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		size_t plen = strlen(r[i].path);

		if (strncmp(req, "POST ", 5) || strncmp(req + 5, r[i].path, plen) ||
		    req[5 + plen] != ' ')
			continue;
		head = r[i].stream
			       ? xasprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
					   "Connection: close\r\n\r\n%s", r[i].body)
			       : xasprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
					   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
					   strlen(r[i].body), r[i].body);
		if (write(fd, head, strlen(head)) < 0)
			_exit(1);
		free(head);
		while (r[i].stream && read(fd, req, sizeof(req)) > 0)
			;
		return;
	}
	if (write(fd, nf, strlen(nf)) < 0)
		_exit(1);
}

/* Starts the gateway; *uri gets its store URI (prefix "fake"). */
static pid_t fake_etcd(const struct fake_route *r, size_t n, char **uri)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c;
	pid_t pid;

	CU_ASSERT_FATAL(ls >= 0);
	CU_ASSERT_FATAL(bind(ls, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(ls, 16) == 0 &&
			getsockname(ls, (struct sockaddr *)&a, &alen) == 0);
	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		/* Gone with the test, whatever happens to it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		alarm(60);
		signal(SIGCHLD, SIG_IGN);
		for (;;) {
			if ((c = accept(ls, NULL, NULL)) < 0)
				continue;
			if (fork() == 0) {
				close(ls);
				alarm(20);
				fake_answer(c, r, n);
				_exit(0);
			}
			close(c);
		}
	}
	close(ls);
	*uri = xasprintf("etcd://127.0.0.1:%u/fake", (unsigned)ntohs(a.sin_port));
	return pid;
}

static void fake_stop(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

/* "kvs" entries for a range reply: keys and values in base64. */
static char *fake_kv(const char *key, const char *value, unsigned mod)
{
	char *k = b64(key, strlen(key)), *v = b64(value, strlen(value));
	char *kv = xasprintf("{\"key\":\"%s\",\"value\":\"%s\",\"mod_revision\":\"%u\"}", k, v,
			     mod);

	free(k);
	free(v);
	return kv;
}

/* Runs fn(uri) in a child process, so that a crash, or a loop that does
 * not end, fails this test only. */
static void in_child(void (*fn)(const char *uri), const char *range_body)
{
	struct fake_route r[] = { { "/v3/kv/range", range_body, false } };
	char *uri;
	pid_t fake = fake_etcd(r, ARRAY_SIZE(r), &uri), pid;
	int status = 0;

	fflush(NULL);
	pid = fork();
	CU_ASSERT_FATAL(pid >= 0);
	if (pid == 0) {
		unsigned failed = CU_get_number_of_failures();

		alarm(20);
		fn(uri);
		_exit(CU_get_number_of_failures() != failed);
	}
	CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fprintf(stderr, "\nchild: %s %d\n", WIFEXITED(status) ? "exit" : "signal",
			WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	fake_stop(fake);
	free(uri);
}

/* Exits non-zero from the child when cond is false. */
#define CHILD_ASSERT(cond)                                                              \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "\n%s:%d: %s\n", __FILE__, __LINE__, #cond);    \
			_exit(1);                                                       \
		}                                                                       \
	} while (0)

/* A child's handle on the fake gateway, with what it warned and found. */
struct child_store {
	struct store *s;
	struct strv warned;
	struct collect c;
	char err[256];
};

static void child_open(struct child_store *w, const char *uri)
{
	memset(w, 0, sizeof(*w));
	w->s = open_ok(uri, false);
	store_set_warn(w->s, capture_warn, &w->warned);
}

static void child_close(struct child_store *w)
{
	strv_free(&w->c.items);
	strv_free(&w->warned);
	store_close(w->s);
}

static void scan_outside(const char *uri)
{
	struct child_store w;
	uint64_t rev;

	child_open(&w, uri);
	CHILD_ASSERT(store_scan(w.s, "", collect_kv, &w.c, &rev, w.err, sizeof(w.err)) == 0);
	CHILD_ASSERT(w.c.items.n == 1 && !strcmp(w.c.items.v[0], "a=1"));
	CHILD_ASSERT(count_containing(&w.warned, "key \"fake/k\"") == 1);
	CHILD_ASSERT(count_containing(&w.warned, "outside the range asked for") == 2);
	child_close(&w);
}

static int count_hosts(void *arg, const struct store_host *h)
{
	struct collect *c = arg;
	char *item = xasprintf("%s=%s%s", h->host, h->value, h->alive ? " alive" : "");

	strv_push(&c->items, item);
	free(item);
	return 0;
}

static void hosts_outside(const char *uri)
{
	struct child_store w;

	child_open(&w, uri);
	CHILD_ASSERT(store_host_scan(w.s, count_hosts, &w.c, w.err, sizeof(w.err)) == 0);
	/* fake/hosts/h1 is outside fake/alive/: h1 is not alive. */
	CHILD_ASSERT(w.c.items.n == 1 && !strcmp(w.c.items.v[0], "h1=x"));
	CHILD_ASSERT(count_containing(&w.warned, "key \"fake/k\"") == 1);
	CHILD_ASSERT(count_containing(&w.warned, "key \"fake/hosts/h1\"") == 1);
	child_close(&w);
}

static void scan_goes_back(const char *uri)
{
	struct child_store w;
	uint64_t rev;

	child_open(&w, uri);
	CHILD_ASSERT(store_scan(w.s, "", collect_kv, &w.c, &rev, w.err, sizeof(w.err)) == -1);
	CHILD_ASSERT(strstr(w.err, "no key of the range asked for") != NULL);
	child_close(&w);
}

/* An etcd reply with keys outside the range asked for (shorter than the
 * prefix, beside it, repeated): reported and skipped, never read past. */
static void test_etcd_reply_outside_range(void)
{
	char *kv[4] = { fake_kv("fake/kv/a", "1", 3), fake_kv("fake/k", "x", 4),
			fake_kv("fake/kw/b", "2", 5), fake_kv("fake/hosts/h1", "x", 6) };
	char *body;

	body = xasprintf("{\"header\":{\"revision\":\"9\"},\"kvs\":[%s,%s,%s],\"count\":\"3\"}",
			 kv[0], kv[1], kv[2]);
	in_child(scan_outside, body);
	free(body);
	body = xasprintf("{\"header\":{\"revision\":\"9\"},\"kvs\":[%s,%s],\"count\":\"2\"}",
			 kv[3], kv[1]);
	in_child(hosts_outside, body);
	free(body);
	/* "more" with the first key again and again: an error, not a loop. */
	body = xasprintf("{\"header\":{\"revision\":\"9\"},\"kvs\":[%s],\"more\":true}", kv[0]);
	in_child(scan_goes_back, body);
	free(body);
	for (size_t i = 0; i < ARRAY_SIZE(kv); i++)
		free(kv[i]);
}

/* A watch event that cannot be decoded is skipped, and said, once. */
static void test_etcd_watch_undecodable(void)
{
	char *seq = b64("fake/seq", 8), *key = b64("fake/kv/a", 9), *one = b64("1", 1);
	char *range = xasprintf("{\"header\":{\"revision\":\"10\"},\"kvs\":[{\"key\":\"%s\","
				"\"mod_revision\":\"10\"}],\"count\":\"1\"}", seq);
	char *watch = xasprintf(
		"{\"result\":{\"header\":{\"revision\":\"10\"},\"created\":true}}\n"
		"{\"result\":{\"header\":{\"revision\":\"10\"},\"events\":["
		"{\"kv\":{\"key\":\"not base64!\",\"mod_revision\":\"9\"}},"
		"{\"kv\":{\"key\":\"%s\",\"value\":\"%s\",\"mod_revision\":\"9\"}},"
		"{\"kv\":{\"key\":\"%s\",\"mod_revision\":\"10\"}}]}}\n", key, one, seq);
	struct fake_route r[] = { { "/v3/kv/range", range, false }, { "/v3/watch", watch, true } };
	struct strv warned = { 0 };
	struct collect c = { 0 };
	struct store *s;
	char err[256], *uri;
	pid_t fake = fake_etcd(r, ARRAY_SIZE(r), &uri);
	uint64_t now = 0;

	s = open_ok(uri, false);
	store_set_warn(s, capture_warn, &warned);
	hist_base = 0;
	CU_ASSERT_EQUAL(store_changes(s, 8, collect_change, &c, &now, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(now, 10);
	CU_ASSERT_EQUAL(c.items.n, 1);
	CU_ASSERT(c.items.n == 1 && !strcmp(c.items.v[0], "9:a=1"));
	CU_ASSERT_EQUAL(warned.n, 1);
	CU_ASSERT_EQUAL(count_containing(&warned, "watch: 1 event not decodable"), 1);
	CU_ASSERT_EQUAL(count_containing(&warned, "revision 9"), 1);
	store_close(s);
	fake_stop(fake);
	strv_free(&c.items);
	strv_free(&warned);
	free(uri);
	free(watch);
	free(range);
	free(seq);
	free(key);
	free(one);
}

/* --- etcd only --- */

/* A check that reads two keys while another writer changes both in
 * between: the reads are of one revision, and the write happens only
 * after the check ran again without interference. */
struct pinned {
	struct store *other;
	unsigned runs;
	struct strv seen;
};

static int pinned_check(struct store *s, void *arg, char *err, size_t errlen)
{
	static const struct store_op both[] = {
		{ STORE_PUT, "a", "2" },
		{ STORE_PUT, "b", "2" },
	};
	struct pinned *p = arg;
	char *a = NULL, *b = NULL, *item;

	p->runs++;
	if (store_get(s, "a", &a, err, errlen) != 0)
		return -1;
	if (p->runs == 1)
		CU_ASSERT_EQUAL(store_txn(p->other, both, 2, NULL, NULL, NULL, err,
					  errlen), 0);
	if (store_get(s, "b", &b, err, errlen) != 0) {
		free(a);
		return -1;
	}
	item = xasprintf("%s%s", a, b);
	strv_push(&p->seen, item);
	free(item);
	free(a);
	free(b);
	return 0;
}

static void test_etcd_check_pinned(void)
{
	static const char *const seen[] = { "11", "22" };
	char *path = fresh_uri("pinned");
	struct store *s = open_ok(path, true);
	struct pinned p = { .other = open_ok(path, false) };
	struct store_op op = { STORE_PUT, "c", "3" };
	struct store_op ab[] = { { STORE_PUT, "a", "1" }, { STORE_PUT, "b", "1" } };
	char err[256];
	uint64_t r0 = base_rev(s), rev = 0;

	txn_ok(s, ab, 2);
	CU_ASSERT_EQUAL(store_txn(s, &op, 1, pinned_check, &p, &rev, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(p.runs, 2);
	assert_items(&p.seen, seen, ARRAY_SIZE(seen));
	CU_ASSERT_EQUAL(rev, r0 + 3);
	strv_free(&p.seen);
	store_close(p.other);
	store_close(s);
	free(path);
}

/* Keys and values that are not text, written past the store: each is
 * reported once, with its key, and skipped; nothing else is lost. */
static void test_etcd_not_text(void)
{
	static const char *const good[] = { "a=1", "z=2" };
	static const char *const hist[] = { "1:a=1", "4:z=2" };
	char *path = fresh_uri("nottext");
	struct store *s = open_ok(path, true);
	struct strv warned = { 0 };
	struct collect c = { 0 };
	char err[256], *v = NULL;
	uint64_t r0 = base_rev(s), rev, now;

	store_set_warn(s, capture_warn, &warned);
	put(s, "a", "1");
	etcd_raw_put(path, "bad", "\xff\xfe");
	etcd_raw_put(path, "b\xc0\xaf" "d", "x"); /* an overlong '/' */
	put(s, "z", "2");
	assert_scan(s, "", good, ARRAY_SIZE(good));
	assert_scan(s, "", good, ARRAY_SIZE(good));
	CU_ASSERT_EQUAL(warned.n, 2);
	CU_ASSERT_EQUAL(count_containing(&warned, "key \"bad\""), 1);
	CU_ASSERT_EQUAL(count_containing(&warned, "the value is not UTF-8 text"), 1);
	CU_ASSERT_EQUAL(count_containing(&warned, "key \"b\\xc0\\xafd\""), 1);
	CU_ASSERT_EQUAL(count_containing(&warned, "the key is not UTF-8 text"), 1);
	CU_ASSERT_EQUAL(count_containing(&warned, path), 2);

	/* The history skips them too, without saying it again. */
	CU_ASSERT_EQUAL(store_changes(s, r0, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	assert_items(&c.items, hist, ARRAY_SIZE(hist));
	CU_ASSERT_EQUAL(now, r0 + 4);
	CU_ASSERT_EQUAL(warned.n, 2);
	strv_free(&c.items);

	CU_ASSERT_EQUAL(store_get(s, "bad", &v, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "key \"bad\": the value is not UTF-8"));
	CU_ASSERT_PTR_NULL(v);

	/* Rewritten as text, it is read again. */
	put(s, "bad", "ok");
	assert_value(s, "bad", "ok");
	CU_ASSERT_EQUAL(store_rev(s, &rev, err, sizeof(err)), 0);
	strv_free(&warned);
	store_close(s);
	free(path);
}

/* Compaction: a running watch is past it and goes on; a handle that has to
 * start its watch from before it gets -2, re-scans, and follows from the
 * scan's revision. */
static void test_etcd_compaction(void)
{
	static const char *const abc[] = { "1:a=1", "2:b=2", "3:c=3" };
	static const char *const d[] = { "4:d=4" };
	char *path = fresh_uri("compaction");
	struct store *s = open_ok(path, true), *late = open_ok(path, false);
	struct collect c = { 0 };
	char err[256] = "";
	uint64_t r0 = base_rev(s), now, rev = 0;
	int fd = store_watch_fd(s), fd2 = store_watch_fd(late);

	CU_ASSERT_FATAL(fd >= 0 && fd2 >= 0);
	put(s, "a", "1");
	put(s, "b", "2");
	CU_ASSERT_TRUE(readable(fd, 2000));
	etcd_compact(rev_of(s));
	put(s, "c", "3");
	assert_changes(s, r0, abc, ARRAY_SIZE(abc));

	/* late's watch started at r0; asked for r0 + 1 on it is fine, it
	 * holds that history; from further back it must restart, and
	 * cannot. */
	CU_ASSERT_EQUAL(store_changes(late, r0 - 1, collect_change, &c, &now, err,
				      sizeof(err)), -2);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "no longer kept"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
	CU_ASSERT_EQUAL(c.items.n, 0);
	CU_ASSERT_EQUAL(now, rev_of(s));
	/* Asking from there again is still -2. */
	CU_ASSERT_EQUAL(store_changes(late, r0 - 1, collect_change, &c, &now, err,
				      sizeof(err)), -2);
	CU_ASSERT_EQUAL(store_scan(late, "", collect_kv, &c, &rev, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, r0 + 3);
	CU_ASSERT_EQUAL(c.items.n, 3);
	strv_free(&c.items);
	store_watch_ack(late);
	put(s, "d", "4");
	CU_ASSERT_TRUE(readable(fd2, 2000));
	store_watch_ack(late);
	CU_ASSERT_EQUAL(store_changes(late, rev, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	assert_items(&c.items, d, ARRAY_SIZE(d));
	CU_ASSERT_EQUAL(now, r0 + 4);
	strv_free(&c.items);
	store_close(late);
	store_close(s);
	free(path);
}

/* Many keys: pages of a scan are one snapshot; a fresh handle catches up
 * over many revisions of history. */
struct page_interfere {
	struct store *other;
	size_t n;
	struct strv seen;
};

static int page_scan(void *arg, const char *key, const char *value)
{
	static const struct store_op ops[] = {
		{ STORE_PUT, "k99999", "late" },
		{ STORE_DEL, "k02400", NULL },
	};
	struct page_interfere *p = arg;
	char err[256];

	strv_push(&p->seen, key);
	if (++p->n == 1500)
		CU_ASSERT_EQUAL(store_txn(p->other, ops, 2, NULL, NULL, NULL, err,
					  sizeof(err)), 0);
	return 0;
}

static void test_etcd_paging(void)
{
	char *path = fresh_uri("paging");
	struct store *s = open_ok(path, true), *cold;
	struct page_interfere p = { .other = open_ok(path, false) };
	struct store_op ops[100];
	char keys[100][16], err[256];
	struct collect c = { 0 };
	uint64_t r0 = base_rev(s), rev = 0, now = 0, t0;
	size_t bad = 0;

	for (int t = 0; t < 25; t++) {
		for (int i = 0; i < 100; i++) {
			snprintf(keys[i], sizeof(keys[i]), "k%05d", t * 100 + i);
			ops[i] = (struct store_op){ STORE_PUT, keys[i], "v" };
		}
		txn_ok(s, ops, 100);
	}
	CU_ASSERT_EQUAL(store_scan(s, "", page_scan, &p, &rev, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(rev, r0 + 25);
	CU_ASSERT_EQUAL(p.seen.n, 2500);
	for (size_t i = 0; i < p.seen.n; i++) {
		snprintf(keys[0], sizeof(keys[0]), "k%05u", (unsigned)i);
		bad += strcmp(p.seen.v[i], keys[0]) != 0;
	}
	CU_ASSERT_EQUAL(bad, 0);
	strv_free(&p.seen);

	cold = open_ok(path, false);
	t0 = now_ns();
	CU_ASSERT_EQUAL(store_changes(cold, r0, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	printf("\n  [etcd: 2502 changes over 26 revisions read by a new handle in %.1f ms] ",
	       (double)(now_ns() - t0) / 1e6);
	CU_ASSERT_EQUAL(c.items.n, 2502);
	CU_ASSERT_EQUAL(now, r0 + 26);
	if (c.items.n == 2502) {
		CU_ASSERT_STRING_EQUAL(c.items.v[0], "1:k00000=v");
		CU_ASSERT_STRING_EQUAL(c.items.v[2500], "26:k99999=late");
		CU_ASSERT_STRING_EQUAL(c.items.v[2501], "26:k02400");
	}
	strv_free(&c.items);
	store_close(cold);
	store_close(p.other);
	store_close(s);
	free(path);
}

/* A policy as big as a 10,000-VM datacenter's (1.4 MB) goes through a
 * transaction, a read and the watch; the same again is no change. */
static void test_etcd_big_value(void)
{
	enum { SIZE = 1400 * 1000 };
	char *path = fresh_uri("big");
	struct store *s = open_ok(path, true), *other = open_ok(path, false);
	char *big = xmalloc(SIZE + 1), *v, err[256];
	struct collect c = { 0 };
	uint64_t r0 = base_rev(s), now = 0;

	for (size_t i = 0; i < SIZE; i++)
		big[i] = (char)('a' + i % 26);
	big[SIZE] = '\0';
	put(s, "policy", big);
	put(s, "policy", big);
	v = get(other, "policy");
	CU_ASSERT_TRUE(v && !strcmp(v, big));
	free(v);
	CU_ASSERT_EQUAL(store_changes(other, r0, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	CU_ASSERT_EQUAL(c.items.n, 1);
	CU_ASSERT_EQUAL(now, r0 + 2);
	CU_ASSERT_TRUE(c.items.n == 1 && strlen(c.items.v[0]) == SIZE + strlen("1:policy="));
	strv_free(&c.items);
	free(big);
	store_close(other);
	store_close(s);
	free(path);
}

static int sort_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* From store_txn starting in one handle to another's watch descriptor. */
static void test_etcd_watch_latency(void)
{
	enum { N = 50 };
	char *path = fresh_uri("latency");
	struct store *s = open_ok(path, true), *other = open_ok(path, false);
	uint64_t lat[N], txn[N], r, t0, since = rev_of(s), now;
	struct collect c = { 0 };
	char err[256], val[16];
	int fd = store_watch_fd(s);

	CU_ASSERT_FATAL(fd >= 0);
	for (int i = 0; i < N; i++) {
		snprintf(val, sizeof(val), "%d", i);
		t0 = now_ns();
		r = put(other, "k", val);
		txn[i] = now_ns() - t0;
		CU_ASSERT_TRUE(readable(fd, 2000));
		lat[i] = now_ns() - t0;
		store_watch_ack(s);
		CU_ASSERT_EQUAL(store_changes(s, since, collect_change, &c, &now, err,
					      sizeof(err)), 0);
		CU_ASSERT_EQUAL(now, r);
		since = now;
	}
	CU_ASSERT_EQUAL(c.items.n, N);
	qsort(lat, N, sizeof(*lat), sort_u64);
	qsort(txn, N, sizeof(*txn), sort_u64);
	printf("\n  [etcd: store_txn median %.2f ms; from its start to the other"
	       " handle's watch fd: median %.2f ms, max %.2f ms] ",
	       (double)txn[N / 2] / 1e6, (double)lat[N / 2] / 1e6,
	       (double)lat[N - 1] / 1e6);
	CU_ASSERT(lat[N - 1] < 1000000000ull);
	strv_free(&c.items);
	store_close(other);
	store_close(s);
	free(path);
}

static void etcd_ctl(const char *what)
{
	char *cmd = xasprintf("%s %s", getenv("DFW_TEST_ETCD_CTL"), what);

	CU_ASSERT_EQUAL(system(cmd), 0);
	free(cmd);
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* etcd stopped and started again under a running watch: calls fail with
 * the reason meanwhile, the watch thread waits quietly, then resumes after
 * the last revision it saw: nothing lost, nothing twice. */
static void test_etcd_reconnect(void)
{
	static const char *const one[] = { "1:k=1" };
	static const char *const two[] = { "2:k=2", "3:j=3" };
	char *path, err[256];
	struct store *s, *other;
	struct collect c = { 0 };
	uint64_t r0, now = 0, rev, t0;
	double cpu;
	int fd;

	if (!getenv("DFW_TEST_ETCD_CTL")) {
		fprintf(stderr, "\n  SKIPPED: DFW_TEST_ETCD_CTL is not set"
				" (tests/unit/with-etcd.sh sets it)\n");
		return;
	}
	path = fresh_uri("reconnect");
	s = open_ok(path, true);
	other = open_ok(path, false);
	r0 = base_rev(s);
	fd = store_watch_fd(s);
	CU_ASSERT_FATAL(fd >= 0);
	put(other, "k", "1");
	CU_ASSERT_TRUE(readable(fd, 2000));
	store_watch_ack(s);
	CU_ASSERT_EQUAL(store_changes(s, r0, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	assert_items(&c.items, one, ARRAY_SIZE(one));
	strv_free(&c.items);

	etcd_ctl("stop");
	CU_ASSERT_EQUAL(store_rev(s, &rev, err, sizeof(err)), -1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "connection refused"));
	CU_ASSERT_EQUAL(store_changes(s, now, collect_change, &c, &now, err,
				      sizeof(err)), -1);
	cpu = cpu_s();
	sleep_ms(2000);
	cpu = cpu_s() - cpu;
	printf("\n  [etcd down 2 s: the watch thread used %.1f ms of CPU] ", cpu * 1e3);
	CU_ASSERT(cpu < 0.2);
	CU_ASSERT_FALSE(readable(fd, 0));

	etcd_ctl("start");
	t0 = now_ns();
	put(other, "k", "2");
	put(other, "j", "3");
	CU_ASSERT_TRUE(readable(fd, 5000));
	printf("[etcd back: the watch delivered %.0f ms after it answered] ",
	       (double)(now_ns() - t0) / 1e6);
	store_watch_ack(s);
	CU_ASSERT_EQUAL(store_changes(s, now, collect_change, &c, &now, err,
				      sizeof(err)), 0);
	assert_items(&c.items, two, ARRAY_SIZE(two));
	CU_ASSERT_EQUAL(now, r0 + 3);
	strv_free(&c.items);
	store_close(other);
	store_close(s);
	free(path);
}

/* The tests both backends pass. */
static const struct unit_test common_tests[] = {
	{ "put, get and del", test_put_get_del },
	{ "scan by prefix", test_scan_prefix },
	{ "tags_write follows the stored policy", test_tags_write_follows_policy },
	{ "place needs a known host", test_place_known_host },
	{ "monitor mode: allow refused; as asked already writes nothing", test_modes_write },
	{ "tag and untag agree whatever the case", test_tags_any_case },
	{ "untag of a VM or tag gone from the policy", test_untag_gone },
	{ "a detection's record; a release only while it holds", test_tags_write_rec },
	{ "a tag already there (or absent when removed) writes nothing", test_tags_noop },
	{ "a release keeps the network detector's tag; an untag ends its record", test_netthreat_rec },
	{ "block values only as written", test_block_values_strict },
	{ "scan and changes read one snapshot", test_snapshot },
	{ "one revision per transaction", test_revisions },
	{ "changes since a revision", test_changes },
	{ "check vetoes a write", test_veto },
	{ "durable across close, reopen and kill", test_durability },
	{ "concurrent writers lose nothing", test_concurrent_writers },
	{ "concurrent creation", test_concurrent_create },
	{ "watch fd wakes on another writer", test_watch },
	{ "host status: publish, ttl, withdraw", test_hosts },
	{ "a deadline bounds the waits for a held-up store", test_deadline },
};

static CU_pSuite add_suite(const char *name, CU_InitializeFunc init,
			   const struct unit_test *a, size_t na,
			   const struct unit_test *b, size_t nb)
{
	CU_pSuite s = CU_add_suite(name, init, NULL);

	if (!s)
		abort();
	for (size_t i = 0; i < na + nb; i++) {
		const struct unit_test *t = i < na ? &a[i] : &b[i - na];

		if (!CU_add_test(s, t->name, t->fn))
			abort();
	}
	return s;
}

void register_store_tests(void)
{
	static const struct unit_test sqlite_tests[] = {
		{ "missing store", test_missing },
		{ "damaged store rejected", test_damaged },
		{ "host status in a store made before it", test_hosts_old_store },
		{ "host status against a held write lock", test_hosts_publish_locked },
		{ "etcd URIs checked; opening needs no etcd", test_etcd_uri },
		{ "stored numbers only as written", test_state_numbers },
		{ "etcd: reply keys outside the range", test_etcd_reply_outside_range },
		{ "etcd: undecodable watch events said", test_etcd_watch_undecodable },
	};
	static const struct unit_test etcd_tests[] = {
		{ "a check reads one revision", test_etcd_check_pinned },
		{ "contents that are not text are skipped", test_etcd_not_text },
		{ "compaction: -2, re-scan, follow on", test_etcd_compaction },
		{ "scan pages are one snapshot; long catch-up", test_etcd_paging },
		{ "a 1.4 MB value", test_etcd_big_value },
		{ "watch latency", test_etcd_watch_latency },
		{ "reconnect after etcd restarts", test_etcd_reconnect },
	};
	CU_pSuite etcd;

	add_suite("store", use_sqlite, common_tests, ARRAY_SIZE(common_tests),
		  sqlite_tests, ARRAY_SIZE(sqlite_tests));
	etcd = add_suite("store-etcd", use_etcd, common_tests,
			 ARRAY_SIZE(common_tests), etcd_tests, ARRAY_SIZE(etcd_tests));
	if (!getenv("DFW_TEST_ETCD")) {
		fprintf(stderr, "\n*** store-etcd: SKIPPED: DFW_TEST_ETCD is not set;"
				" run the tests through tests/unit/with-etcd.sh"
				" (make unit and make check do) ***\n\n");
		CU_set_suite_active(etcd, CU_FALSE);
	}
}
