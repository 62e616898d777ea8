/* Unit tests of sim/scanner.c: signature files, EICAR and custom patterns
 * (also across chunk boundaries), the scan cache, policy skips, actions,
 * files that cannot be scanned, full scans (also against a guest swapping
 * directories for symbolic links) and detection JSON. */
#include "sim/scanner.h"
#include "tests/unit/unit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------ */

/* The EICAR test string, split differently from the library's copy so that
 * neither file is the test virus and a typo in one is caught by the other. */
static const char *eicar(void)
{
	static char s[80];

	snprintf(s, sizeof(s), "%s%s%s", "X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-",
		 "ANTIVIRUS-TEST-FILE!$H+H*");
	return s;
}

/* A fresh directory for one test: unit_tmpdir()/scanner-<name>. */
static char *tdir(const char *name)
{
	char *d = xasprintf("%s/scanner-%s", unit_tmpdir(), name);

	CU_ASSERT_FATAL(mkdir(d, 0700) == 0);
	return d;
}

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "w");

	CU_ASSERT_FATAL(f != NULL);
	CU_ASSERT_FATAL(fwrite(data, 1, len, f) == len);
	CU_ASSERT_FATAL(fclose(f) == 0);
}

static void write_str(const char *path, const char *s)
{
	write_file(path, s, strlen(s));
}

/* Writes pad bytes of '.', then s, then a short trailer. */
static void write_padded(const char *path, size_t pad, const char *s, size_t slen)
{
	char *buf = xmalloc(pad + slen + 16);

	memset(buf, '.', pad);
	memcpy(buf + pad, s, slen);
	memcpy(buf + pad + slen, "\ntrailer\n", 9);
	write_file(path, buf, pad + slen + 9);
	free(buf);
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* How many fds the process has open, to show a walk closes all of its. */
static size_t open_fds(void)
{
	DIR *dp = opendir("/proc/self/fd");
	size_t n = 0;

	CU_ASSERT_FATAL(dp != NULL);
	while (readdir(dp))
		n++;
	closedir(dp);
	return n;
}

static struct scan_policy policy(const char *qdir)
{
	return (struct scan_policy){ .action = SCAN_QUARANTINE_FILE, .quarantine_dir = qdir };
}

/* Loads a signature file with the given text; NULL on failure (d filled). */
static struct sigdb *load_text(const char *dir, const char *text, struct diag *d, char **path)
{
	*path = xasprintf("%s/signatures.txt", dir);
	write_str(*path, text);
	return sigdb_load(*path, d);
}

/* ---- EICAR -------------------------------------------------------------- */

static void test_eicar(void)
{
	char *d = tdir("eicar"), *q = xasprintf("%s/q", d);
	char *clean = xasprintf("%s/clean.txt", d), *bad = xasprintf("%s/eicar.com", d);
	char *almost = xasprintf("%s/almost.txt", d);
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = policy(q);
	struct scanner *s = scanner_new(db, &pol);
	char *e = xstrdup(eicar());
	struct scan_result r;

	CU_ASSERT_EQUAL(strlen(e), 68);
	CU_ASSERT_EQUAL(sigdb_count(db), 1);
	write_str(clean, "nothing to see here\n");
	write_padded(bad, 5, e, strlen(e));
	e[40] ^= 1; /* one bit off is not the test file */
	write_padded(almost, 0, e, strlen(e));

	CU_ASSERT_EQUAL(scanner_scan_file(s, "desktop1", clean, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
	CU_ASSERT_STRING_EQUAL(r.signature, "");
	CU_ASSERT_EQUAL(r.bytes_scanned, 20);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "desktop1", almost, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "desktop1", bad, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);
	CU_ASSERT_STRING_EQUAL(r.signature, "EICAR-Test-File");
	CU_ASSERT_EQUAL(r.severity, SCAN_SEV_HIGH);
	CU_ASSERT(r.time >= (int64_t)time(NULL) - 5 && r.time <= (int64_t)time(NULL));

	scanner_free(s);
	sigdb_free(db);
	free(e);
	free(almost);
	free(bad);
	free(clean);
	free(q);
	free(d);
}

/* A pattern across a chunk boundary is found, for EICAR and for a custom
 * signature of the maximum length (the kept tail must be long enough). */
static void test_chunk_boundary(void)
{
	char *d = tdir("chunk"), *q = xasprintf("%s/q", d), *sigs, *f = xasprintf("%s/f", d);
	static char text[8192];
	unsigned char longpat[SIG_PATTERN_MAX];
	const size_t C = SCAN_CHUNK_SIZE;
	const size_t offs[] = { C - 68, C - 67, C - 34, C - 1, C, 2 * C - 5, 3 * C - 1023 };
	struct diag dg = { 0 };
	struct scan_policy pol = policy(q);
	struct sigdb *db;
	struct scanner *s;
	struct scan_result r;
	size_t n;

	n = (size_t)snprintf(text, sizeof(text), "Test.Long low hex:");
	for (size_t i = 0; i < sizeof(longpat); i++) {
		longpat[i] = (unsigned char)(0x80 + i % 97); /* never '.' */
		n += (size_t)snprintf(text + n, sizeof(text) - n, "%02x", longpat[i]);
	}
	snprintf(text + n, sizeof(text) - n, "\n");
	db = load_text(d, text, &dg, &sigs);
	CU_ASSERT_FATAL(db != NULL);
	CU_ASSERT_EQUAL(dg.n, 0);
	s = scanner_new(db, &pol);
	for (size_t i = 0; i < ARRAY_SIZE(offs); i++) {
		write_padded(f, offs[i], eicar(), strlen(eicar()));
		scanner_cache_clear(s);
		CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
		CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);
		CU_ASSERT_STRING_EQUAL(r.signature, "EICAR-Test-File");
		/* quarantined: put a fresh one back for the long pattern */
		write_padded(f, offs[i] - 500, (const char *)longpat, sizeof(longpat));
		CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
		CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);
		CU_ASSERT_STRING_EQUAL(r.signature, "Test.Long");
		CU_ASSERT_EQUAL(r.severity, SCAN_SEV_LOW);
	}
	/* the whole pattern but its last byte, at the end of a chunk: clean */
	write_padded(f, C - 500, (const char *)longpat, sizeof(longpat) - 1);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
	CU_ASSERT_EQUAL(r.bytes_scanned, C - 500 + sizeof(longpat) - 1 + 9);

	scanner_free(s);
	sigdb_free(db);
	diag_free(&dg);
	free(sigs);
	free(f);
	free(q);
	free(d);
}

/* ---- signature files ---------------------------------------------------- */

static void test_custom_signatures(void)
{
	char *d = tdir("custom"), *q = xasprintf("%s/q", d), *sigs, *f = xasprintf("%s/f", d);
	static char big[2200];
	struct diag dg = { 0 };
	struct scan_policy pol = policy(q);
	struct sigdb *db;
	struct scanner *s;
	struct scan_result r;
	size_t n;
	const struct {
		const char *content, *sig;
		enum scan_severity sev;
	} cases[] = {
		{ "xx RANSOM:\x01\xff\"q\\ yy", "Test.Ransom.Sim", SCAN_SEV_HIGH },
		{ "....\xde\xad\xbe\xef\x00\x41..", "Test.Hex.Sim", SCAN_SEV_MEDIUM },
		{ "pre WORM-SIM post", "Test_Worm-2.Sim", SCAN_SEV_LOW },
		{ "EICAR-ish but not quite", "", 0 },
	};

	n = (size_t)snprintf(big, sizeof(big), "Test.Max medium \"");
	memset(big + n, 'Z', SIG_PATTERN_MAX); /* exactly the limit is fine */
	snprintf(big + n + SIG_PATTERN_MAX, sizeof(big) - n - SIG_PATTERN_MAX, "\"\n");
	{
		char *text = xasprintf("# test signatures\r\n"
				       "\n"
				       "   # indented comment\n"
				       "Test.Ransom.Sim high \"RANSOM:\\x01\\xFf\\\"q\\\\\"\n"
				       "Test.Hex.Sim\tmedium\thex:de ad BE EF 00 41  \n"
				       "Test_Worm-2.Sim low hex:574f524d2d53494d\r\n"
				       "EICAR-Test-File medium\n"
				       "%s",
				       big);

		db = load_text(d, text, &dg, &sigs);
		free(text);
	}
	CU_ASSERT_FATAL(db != NULL);
	CU_ASSERT_EQUAL(dg.n, 0);
	CU_ASSERT_EQUAL(sigdb_count(db), 5); /* EICAR + 4 */
	s = scanner_new(db, &pol);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		size_t len = strlen(cases[i].content);

		if (i == 1)
			len = 12; /* contains a NUL */
		write_file(f, cases[i].content, len);
		CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
		CU_ASSERT_EQUAL(r.verdict, cases[i].sig[0] ? SCAN_INFECTED : SCAN_CLEAN);
		CU_ASSERT_STRING_EQUAL(r.signature, cases[i].sig);
		if (cases[i].sig[0])
			CU_ASSERT_EQUAL(r.severity, cases[i].sev);
	}
	/* the file lowered EICAR's severity */
	write_str(f, eicar());
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_STRING_EQUAL(r.signature, "EICAR-Test-File");
	CU_ASSERT_EQUAL(r.severity, SCAN_SEV_MEDIUM);
	memset(big, 'Z', SIG_PATTERN_MAX);
	write_file(f, big, SIG_PATTERN_MAX);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_STRING_EQUAL(r.signature, "Test.Max");

	scanner_free(s);
	sigdb_free(db);
	diag_free(&dg);
	free(sigs);
	free(f);
	free(q);
	free(d);
}

/* The example shipped in configs/ loads and detects its own test string. */
static void test_shipped_signatures(void)
{
	char *d = tdir("shipped"), *q = xasprintf("%s/q", d), *f = xasprintf("%s/f", d);
	struct diag dg = { 0 };
	struct sigdb *db = sigdb_load("configs/signatures.txt", &dg);
	struct scan_policy pol = policy(q);
	struct scanner *s;
	struct scan_result r;

	CU_ASSERT_EQUAL(dg.n, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT(sigdb_count(db) >= 4);
	s = scanner_new(db, &pol);
	write_str(f, "...DFW-SIM-RANSOM: your files are encrypted!...");
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_STRING_EQUAL(r.signature, "Test.Ransom.Sim");
	CU_ASSERT_EQUAL(r.severity, SCAN_SEV_HIGH);

	scanner_free(s);
	sigdb_free(db);
	diag_free(&dg);
	free(f);
	free(q);
	free(d);
}

/* Every class of malformed line is reported, all at once, at its line. */
static void test_malformed_signatures(void)
{
	char *d = tdir("malformed"), *sigs, *text, *want;
	char longpat[SIG_PATTERN_MAX + 2];
	struct diag dg = { 0 };
	struct sigdb *db;
	const char *msgs[] = {
		"3: unknown severity 'hgh' (high, medium or low); did you mean 'high'?",
		"4: unknown severity 'HIGH' (high, medium or low); did you mean 'high'?",
		"5: bad hex digit 'g'",
		"6: bad hex: odd number of digits",
		"7: empty pattern",
		"8: empty pattern",
		"9: pattern longer than 1024 bytes (1025)",
		"11: duplicate signature 'Good.One' (first at line 10)",
		"12: duplicate signature 'good.one' (first at line 10)",
		"13: unknown escape '\\q' (use \\\\, \\\" or \\xNN)",
		"14: bad \\x escape: expected two hex digits",
		"15: missing pattern for 'NoPattern'",
		"16: missing closing '\"'",
		"17: unexpected text after the pattern: 'junk'",
		"18: expected NAME SEVERITY PATTERN, got 'OnlyName'",
		"19: 'EICAR-Test-File' is built in: give only its severity, no pattern",
		"20: invalid signature name 'bad/name' (1-64 of A-Z a-z 0-9 . _ -)",
		"21: pattern must be \"quoted\" or hex:…, not 'abc'",
		"22: bad hex digit 0x01",
	};

	memset(longpat, 'A', SIG_PATTERN_MAX + 1);
	longpat[SIG_PATTERN_MAX + 1] = '\0';
	text = xasprintf("# line 1\n"
			 "\n"
			 "Bad.Sev hgh \"abc\"\n"
			 "Bad.Case HIGH \"abc\"\n"
			 "Bad.Hex high hex:4g\n"
			 "Odd.Hex low hex:41 4\n"
			 "Empty.Str medium \"\"\n"
			 "Empty.Hex medium hex:\n"
			 "Too.Long low \"%s\"\n"
			 "Good.One low \"abc\"\n"
			 "Good.One high \"def\"\n"
			 "good.one high \"def\"\n"
			 "Bad.Esc low \"a\\qb\"\n"
			 "Bad.X low \"\\x4\"\n"
			 "NoPattern high\n"
			 "Unterminated low \"abc\n"
			 "Trailing low \"abc\" junk\n"
			 "OnlyName\n"
			 "EICAR-Test-File high \"x\"\n"
			 "bad/name low \"x\"\n"
			 "Bare low abc\n"
			 "Ctl.Hex low hex:4\001\n",
			 longpat);
	db = load_text(d, text, &dg, &sigs);
	CU_ASSERT_PTR_NULL(db);
	CU_ASSERT_EQUAL(dg.n, ARRAY_SIZE(msgs));
	for (size_t i = 0; i < ARRAY_SIZE(msgs) && i < dg.n; i++) {
		want = xasprintf("%s:%s", sigs, msgs[i]);
		CU_ASSERT_STRING_EQUAL(dg.msgs[i], want);
		free(want);
	}
	diag_free(&dg);
	sigdb_free(db);
	free(text);

	/* a missing file: one message naming it */
	want = xasprintf("%s/nope.txt", d);
	CU_ASSERT_PTR_NULL(sigdb_load(want, &dg));
	CU_ASSERT_EQUAL_FATAL(dg.n, 1);
	text = xasprintf("%s: No such file or directory", want);
	CU_ASSERT_STRING_EQUAL(dg.msgs[0], text);
	diag_free(&dg);
	free(text);
	free(want);
	free(sigs);
	free(d);
}

/* ---- cache -------------------------------------------------------------- */

static void test_cache(void)
{
	char *d = tdir("cache"), *q = xasprintf("%s/q", d), *f = xasprintf("%s/doc.txt", d);
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = policy(q);
	struct scanner *s = scanner_new(db, &pol);
	const struct timespec old[2] = { { .tv_sec = 1000000 }, { .tv_sec = 1000000 } };
	const struct timespec pause = { .tv_nsec = 30 * 1000 * 1000 };
	char same[69];
	struct scan_result r;

	write_str(f, "hello world\n");
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
	CU_ASSERT_EQUAL(scanner_cache_size(s), 1);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_SKIPPED_CACHED);
	CU_ASSERT_EQUAL(r.bytes_scanned, 0);

	scanner_cache_clear(s);
	CU_ASSERT_EQUAL(scanner_cache_size(s), 0);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);

	/* modified: scanned again */
	write_str(f, "hello world, again\n");
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
	CU_ASSERT_EQUAL(r.bytes_scanned, 19);
	/* only the mtime changed: scanned again */
	CU_ASSERT_FATAL(utimensat(AT_FDCWD, f, old, 0) == 0);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);

	/* rewritten with the same size and the old mtime put back: the ctime
	 * still gives it away */
	memset(same, 'A', 68);
	write_file(f, same, 68);
	CU_ASSERT_FATAL(utimensat(AT_FDCWD, f, old, 0) == 0);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_SKIPPED_CACHED);
	nanosleep(&pause, NULL); /* past the kernel's coarse timestamp tick */
	write_str(f, eicar());
	CU_ASSERT_FATAL(utimensat(AT_FDCWD, f, old, 0) == 0);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);

	scanner_free(s);
	sigdb_free(db);
	free(f);
	free(q);
	free(d);
}

/* An infected file whose action fails stays infected on every scan. */
static void test_infected_not_cached(void)
{
	char *d = tdir("nocache"), *q = xasprintf("%s/notadir/q", d);
	char *blocker = xasprintf("%s/notadir", d), *f = xasprintf("%s/x.exe", d);
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = policy(q);
	struct scanner *s = scanner_new(db, &pol);
	struct scan_result r;

	write_str(blocker, "a file where the quarantine directory should go");
	write_str(f, eicar());
	for (int i = 0; i < 2; i++) {
		CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
		CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);
		CU_ASSERT_FALSE(r.action_done);
		CU_ASSERT_STRING_EQUAL(r.moved_to, "");
		CU_ASSERT_PTR_NOT_NULL(strstr(r.why, "quarantine: cannot create"));
		CU_ASSERT_TRUE(exists(f));
	}
	CU_ASSERT_EQUAL(scanner_cache_size(s), 0);

	scanner_free(s);
	sigdb_free(db);
	free(f);
	free(blocker);
	free(q);
	free(d);
}

/* The cache is bounded: one entry past the limit starts it afresh. */
static void test_cache_bounded(void)
{
	char *d = tdir("bounded"), *q = xasprintf("%s/q", d), *f;
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = policy(q);
	struct scanner *s = scanner_new(db, &pol);
	struct scan_result r;

	for (int i = 0; i <= SCAN_CACHE_MAX; i++) {
		f = xasprintf("%s/f%d", d, i);
		write_str(f, "clean");
		CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
		CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
		free(f);
		if (i == SCAN_CACHE_MAX - 1)
			CU_ASSERT_EQUAL(scanner_cache_size(s), SCAN_CACHE_MAX);
	}
	CU_ASSERT_EQUAL(scanner_cache_size(s), 1);
	f = xasprintf("%s/f0", d);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
	free(f);
	f = xasprintf("%s/f%d", d, SCAN_CACHE_MAX);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_SKIPPED_CACHED);
	free(f);

	scanner_free(s);
	sigdb_free(db);
	free(q);
	free(d);
}

/* ---- actions ------------------------------------------------------------ */

static void test_quarantine(void)
{
	char *d = tdir("quarantine"), *q = xasprintf("%s/q", d), *f = xasprintf("%s/invoice.pdf", d);
	char *prefix = xasprintf("%s/q/desktop7/invoice.pdf.", d), *first, longname[NAME_MAX + 1];
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = policy(q);
	struct scanner *s = scanner_new(db, &pol);
	struct scan_result r;
	struct stat st;

	write_padded(f, 10, eicar(), strlen(eicar()));
	CU_ASSERT_EQUAL(scanner_scan_file(s, "desktop7", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);
	CU_ASSERT_EQUAL(r.action, SCAN_QUARANTINE_FILE);
	CU_ASSERT_TRUE(r.action_done);
	CU_ASSERT_STRING_EQUAL(r.why, "");
	CU_ASSERT_FALSE(exists(f));
	CU_ASSERT_TRUE(stat(r.moved_to, &st) == 0 && S_ISREG(st.st_mode) &&
		       st.st_size == 10 + 68 + 9);
	CU_ASSERT_EQUAL(strncmp(r.moved_to, prefix, strlen(prefix)), 0);
	CU_ASSERT_EQUAL(strtoll(r.moved_to + strlen(prefix), NULL, 10), r.time);
	first = xstrdup(r.moved_to);

	/* the same name again in the same second: nothing is overwritten */
	write_str(f, eicar());
	CU_ASSERT_EQUAL(scanner_scan_file(s, "desktop7", f, &r), 0);
	CU_ASSERT_TRUE(r.action_done);
	CU_ASSERT_FALSE(exists(f));
	CU_ASSERT_TRUE(exists(r.moved_to));
	CU_ASSERT_TRUE(stat(first, &st) == 0 && st.st_size == 10 + 68 + 9);
	if (r.time == strtoll(first + strlen(prefix), NULL, 10))
		CU_ASSERT_STRING_NOT_EQUAL(r.moved_to, first);

	/* a name of NAME_MAX bytes is cut to make room for the suffix */
	memset(longname, 'n', NAME_MAX);
	longname[NAME_MAX] = '\0';
	free(f);
	f = xasprintf("%s/%s", d, longname);
	for (int i = 0; i < 2; i++) { /* the second in the same second gets ".1" */
		write_str(f, eicar());
		CU_ASSERT_EQUAL(scanner_scan_file(s, "desktop7", f, &r), 0);
		CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);
		CU_ASSERT_STRING_EQUAL(r.why, "");
		CU_ASSERT_FATAL(r.action_done);
		CU_ASSERT_FALSE(exists(f));
		CU_ASSERT_TRUE(exists(r.moved_to));
		CU_ASSERT_TRUE(strlen(strrchr(r.moved_to, '/') + 1) <= NAME_MAX);
		CU_ASSERT_EQUAL(strncmp(strrchr(r.moved_to, '/') + 1, longname, 200), 0);
	}

	scanner_free(s);
	sigdb_free(db);
	free(first);
	free(prefix);
	free(f);
	free(q);
	free(d);
}

static void test_delete(void)
{
	char *d = tdir("delete"), *f = xasprintf("%s/dropper.exe", d);
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = { .action = SCAN_DELETE_FILE };
	struct scanner *s = scanner_new(db, &pol);
	struct scan_result r;

	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	write_str(f, eicar());
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);
	CU_ASSERT_EQUAL(r.action, SCAN_DELETE_FILE);
	CU_ASSERT_TRUE(r.action_done);
	CU_ASSERT_STRING_EQUAL(r.moved_to, "");
	CU_ASSERT_FALSE(exists(f));

	/* quarantine needs a directory */
	pol.action = SCAN_QUARANTINE_FILE;
	errno = 0;
	CU_ASSERT_PTR_NULL(scanner_new(db, &pol));
	CU_ASSERT_EQUAL(errno, EINVAL);

	scanner_free(s);
	scanner_free(NULL);
	sigdb_free(db);
	sigdb_free(NULL);
	free(f);
	free(d);
}

/* ---- policy and unscannable files --------------------------------------- */

static void test_policy_skips(void)
{
	char *d = tdir("policy"), *q = xasprintf("%s/q", d);
	char *big = xasprintf("%s/big.bin", d), *exact = xasprintf("%s/exact.bin", d);
	char *iso = xasprintf("%s/disk.ISO", d), *isox = xasprintf("%s/disk.isox", d);
	const char *const skip[] = { ".iso", ".vmdk" };
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = { .max_bytes = 100, .skip_suffixes = skip, .nskip = 2,
				   .action = SCAN_QUARANTINE_FILE, .quarantine_dir = q };
	struct scanner *s = scanner_new(db, &pol);
	struct scan_result r;

	write_padded(big, 40, eicar(), strlen(eicar())); /* 117 bytes */
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", big, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_SKIPPED_POLICY);
	CU_ASSERT_STRING_EQUAL(r.why, "larger than max_bytes (117 > 100)");
	CU_ASSERT_TRUE(exists(big));

	write_padded(exact, 23, eicar(), strlen(eicar())); /* 100 bytes */
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", exact, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);

	/* Clean and exactly max_bytes long: clean (not "grew past"). */
	write_padded(exact, 91, "", 0);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", exact, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
	CU_ASSERT_EQUAL(r.bytes_scanned, 100);

	write_str(iso, eicar());
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", iso, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_SKIPPED_POLICY);
	CU_ASSERT_STRING_EQUAL(r.why, "suffix .iso is not scanned");
	CU_ASSERT_TRUE(exists(iso));

	write_str(isox, eicar());
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", isox, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);

	/* A file that grows past max_bytes while it is read (here one whose
	 * size says 0) is not known clean: the rest was not read. */
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", "/proc/self/status", &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_SKIPPED_POLICY);
	CU_ASSERT_STRING_EQUAL(r.why, "grew larger than max_bytes (100) while read");
	CU_ASSERT_EQUAL(r.bytes_scanned, 100);

	scanner_free(s);
	sigdb_free(db);
	free(isox);
	free(iso);
	free(exact);
	free(big);
	free(q);
	free(d);
}

/* A sparse file costs its data only: with no size limit, 64 GiB of hole
 * before a signature take no reading, and a pattern inside a hole, or
 * across either end of one, is still found (a hole reads as zeros). */
static void sparse_file(const char *path, const char *head, size_t nhead, off_t hole,
			const char *tail, size_t ntail)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(write(fd, head, nhead), (ssize_t)nhead);
	CU_ASSERT_EQUAL(pwrite(fd, tail, ntail, (off_t)nhead + hole), (ssize_t)ntail);
	CU_ASSERT_EQUAL(ftruncate(fd, (off_t)nhead + hole + (off_t)ntail), 0);
	close(fd);
}

static void test_sparse(void)
{
	char *d = tdir("sparse"), *q = xasprintf("%s/q", d), *f = xasprintf("%s/f", d), *sigs;
	struct scan_policy pol = policy(q); /* max_bytes 0: no limit */
	struct diag dg = { 0 };
	struct sigdb *db = load_text(d,
				     "Test.Into low hex:41 42 43 00 00 00\n"
				     "Test.OutOf low hex:00 00 00 44 45 46\n"
				     "Test.Gap low hex:58 59 00 00 00 00 00 00 00 00 00 00 00 00 5a\n",
				     &dg, &sigs);
	struct sigdb *zeros = NULL;
	struct scanner *s;
	struct scan_result r;
	const off_t big = (off_t)64 << 30;
	uint64_t t0;

	CU_ASSERT_FATAL(db != NULL);
	s = scanner_new(db, &pol);
	t0 = now_ns();
	sparse_file(f, "x", 1, big, eicar(), strlen(eicar()));
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	printf("\n  [EICAR after a 64 GiB hole: found in %.1f ms] ", (double)(now_ns() - t0) / 1e6);
	CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);
	CU_ASSERT_STRING_EQUAL(r.signature, "EICAR-Test-File");
	CU_ASSERT(now_ns() - t0 < 2000000000u);
	/* Into a hole, out of one (at 1 MiB: past a chunk), both within
	 * the scanned zeros' reach; and a gap the hole is too long for. */
	sparse_file(f, "..ABC", 5, 1 << 20, "end", 3);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_STRING_EQUAL(r.signature, "Test.Into");
	sparse_file(f, "start", 5, 1 << 20, "DEF..", 5);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_STRING_EQUAL(r.signature, "Test.OutOf");
	sparse_file(f, "XY", 2, 1 << 20, "Z", 1);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
	CU_ASSERT_EQUAL(r.bytes_scanned, 2 + (1 << 20) + 1);
	/* A hole up to the end of the file. */
	sparse_file(f, "..ABC", 5, 1 << 20, "", 0);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_STRING_EQUAL(r.signature, "Test.Into");
	scanner_free(s);
	/* A pattern of zeros only, inside a hole. */
	free(sigs);
	zeros = load_text(d, "Test.Zeros low hex:00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n",
			  &dg, &sigs);
	CU_ASSERT_FATAL(zeros != NULL);
	s = scanner_new(zeros, &pol);
	sparse_file(f, "a", 1, 1 << 20, "b", 1);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_STRING_EQUAL(r.signature, "Test.Zeros");
	scanner_free(s);
	sigdb_free(zeros);
	sigdb_free(db);
	diag_free(&dg);
	free(sigs);
	free(f);
	free(q);
	free(d);
}

/* Directories, FIFOs, symlinks and missing files are clean errors; the
 * scanner goes on working afterwards. */
static void test_unscannable(void)
{
	char *d = tdir("unscannable"), *q = xasprintf("%s/q", d);
	char *fifo = xasprintf("%s/pipe", d), *link = xasprintf("%s/link", d);
	char *dangling = xasprintf("%s/dangling", d), *gone = xasprintf("%s/gone", d);
	char *target = xasprintf("%s/target", d), *sock = xasprintf("%s/sock", d);
	char *dev = xasprintf("%s/dev", d);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = policy(q);
	struct scanner *s = scanner_new(db, &pol);
	struct scan_result r;
	int sfd;

	CU_ASSERT_FATAL(mkfifo(fifo, 0600) == 0);
	write_str(target, eicar());
	CU_ASSERT_FATAL(symlink(target, link) == 0);
	CU_ASSERT_FATAL(symlink(gone, dangling) == 0);

	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", d, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_ERROR);
	CU_ASSERT_STRING_EQUAL(r.why, "not a regular file (directory)");
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", fifo, &r), 0); /* does not block */
	CU_ASSERT_EQUAL(r.verdict, SCAN_ERROR);
	CU_ASSERT_STRING_EQUAL(r.why, "not a regular file (fifo)");
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", link, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_ERROR);
	CU_ASSERT_STRING_EQUAL(r.why, "symbolic link, not followed");
	CU_ASSERT_TRUE(exists(target));
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", dangling, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_ERROR);
	CU_ASSERT_STRING_EQUAL(r.why, "symbolic link, not followed");
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", gone, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_ERROR);
	CU_ASSERT_STRING_EQUAL(r.why, "No such file or directory");
	/* neither a socket nor a device node is opened (opening a socket
	 * fails with ENXIO, and a device runs its driver's open) */
	sfd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	CU_ASSERT_FATAL(sfd >= 0 && bind(sfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", sock, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_ERROR);
	CU_ASSERT_STRING_EQUAL(r.why, "not a regular file (socket)");
	close(sfd);
	/* /dev/ptmx's driver fails to open it away from a devpts (ENOENT) */
	if (mknod(dev, S_IFCHR | 0600, makedev(5, 2)) == 0) {
		CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", dev, &r), 0);
		CU_ASSERT_EQUAL(r.verdict, SCAN_ERROR);
		CU_ASSERT_STRING_EQUAL(r.why, "not a regular file (character device)");
	}
	CU_ASSERT_EQUAL(scanner_cache_size(s), 0);

	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", target, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);

	/* bad VM names are argument errors, not verdicts */
	CU_ASSERT_EQUAL(scanner_scan_file(s, "..", target, &r), -1);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "a/b", target, &r), -1);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "", target, &r), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);

	scanner_free(s);
	sigdb_free(db);
	free(dev);
	free(sock);
	free(target);
	free(gone);
	free(dangling);
	free(link);
	free(fifo);
	free(q);
	free(d);
}

/* ---- full scan ---------------------------------------------------------- */

struct seen {
	char paths[8][256];
	enum scan_verdict verdict[8];
	size_t n;
};

static void record(void *arg, const struct scan_result *r, const char *path)
{
	struct seen *s = arg;

	if (s->n < ARRAY_SIZE(s->paths)) {
		snprintf(s->paths[s->n], sizeof(s->paths[0]), "%s", path);
		s->verdict[s->n] = r->verdict;
	}
	s->n++;
}

static void tree_mkdir(const char *root, const char *rel)
{
	char *p = xasprintf("%s/%s", root, rel);

	CU_ASSERT_FATAL(mkdir(p, 0700) == 0);
	free(p);
}

static void tree_file(const char *root, const char *rel, const char *content)
{
	char *p = xasprintf("%s/%s", root, rel);

	write_str(p, content);
	free(p);
}

static void test_scan_tree(void)
{
	char *d = tdir("tree"), *q = xasprintf("%s/quarantine", d), *p;
	const char *const skip[] = { ".iso" };
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = { .skip_suffixes = skip, .nskip = 1,
				   .action = SCAN_QUARANTINE_FILE, .quarantine_dir = q };
	struct scanner *s = scanner_new(db, &pol);
	struct scan_summary sum;
	struct seen seen = { 0 };
	const char *order[] = { "a.txt", "big.iso", "sub/b.bin", "sub/deep/c.doc" };
	const enum scan_verdict verdicts[] = { SCAN_CLEAN, SCAN_SKIPPED_POLICY, SCAN_INFECTED,
					       SCAN_INFECTED };

	tree_mkdir(d, "sub");
	tree_mkdir(d, "sub/deep");
	tree_mkdir(d, "quarantine");
	tree_file(d, "a.txt", "clean");
	tree_file(d, "big.iso", eicar());
	tree_file(d, "sub/b.bin", eicar());
	tree_file(d, "sub/deep/c.doc", eicar());
	tree_file(d, "quarantine/old.exe.1", eicar());
	p = xasprintf("%s/fifo", d);
	CU_ASSERT_FATAL(mkfifo(p, 0600) == 0);
	free(p);
	p = xasprintf("%s/link", d);
	CU_ASSERT_FATAL(symlink("sub/b.bin", p) == 0);
	free(p);

	CU_ASSERT_EQUAL(scanner_scan_tree(s, "vm1", d, false, record, &seen, &sum), 0);
	CU_ASSERT_EQUAL(sum.files, 4);
	CU_ASSERT_EQUAL(sum.clean, 1);
	CU_ASSERT_EQUAL(sum.infected, 2);
	CU_ASSERT_EQUAL(sum.skipped, 1);
	CU_ASSERT_EQUAL(sum.errors, 0);
	CU_ASSERT_EQUAL_FATAL(seen.n, 4);
	for (size_t i = 0; i < 4; i++) {
		char *want = xasprintf("%s/%s", d, order[i]);

		CU_ASSERT_STRING_EQUAL(seen.paths[i], want);
		CU_ASSERT_EQUAL(seen.verdict[i], verdicts[i]);
		free(want);
	}

	/* again: the infected files are gone, the clean one is cached */
	CU_ASSERT_EQUAL(scanner_scan_tree(s, "vm1", d, false, NULL, NULL, &sum), 0);
	CU_ASSERT_EQUAL(sum.files, 2);
	CU_ASSERT_EQUAL(sum.skipped, 2);
	CU_ASSERT_EQUAL(sum.infected, 0);
	/* a full scan reads everything again */
	CU_ASSERT_EQUAL(scanner_scan_tree(s, "vm1", d, true, NULL, NULL, &sum), 0);
	CU_ASSERT_EQUAL(sum.files, 2);
	CU_ASSERT_EQUAL(sum.clean, 1);
	CU_ASSERT_EQUAL(sum.skipped, 1);
	CU_ASSERT_EQUAL(sum.infected, 0);

	p = xasprintf("%s/missing", d);
	errno = 0;
	CU_ASSERT_EQUAL(scanner_scan_tree(s, "vm1", p, true, NULL, NULL, &sum), -1);
	CU_ASSERT_EQUAL(errno, ENOENT);
	CU_ASSERT_EQUAL(sum.files, 0);
	free(p);

	scanner_free(s);
	sigdb_free(db);
	free(q);
	free(d);
}

/* A guest racing the walk: after the walk reported the first file of sub/,
 * sub/ is renamed away and replaced by a symbolic link to a host directory
 * (a loop of RENAME_EXCHANGE does the same by chance; the callback makes it
 * certain).  A walk by path then reads the host's files and moves or
 * deletes them; a walk by directory fds goes on in the directory it opened. */
struct swap {
	const char *after;               /* the reported path that triggers it */
	const char *dir, *moved, *target; /* dir becomes a link to target */
	struct seen seen;
	bool done;
};

static void swap_after(void *arg, const struct scan_result *r, const char *path)
{
	struct swap *w = arg;

	record(&w->seen, r, path);
	if (!w->done && !strcmp(path, w->after)) {
		CU_ASSERT_FATAL(rename(w->dir, w->moved) == 0);
		CU_ASSERT_FATAL(symlink(w->target, w->dir) == 0);
		w->done = true;
	}
}

/* The number of entries of dir (0 when it does not exist) and the size of
 * the last one read. */
static size_t dir_entries(const char *dir, off_t *size)
{
	DIR *dp = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	*size = -1;
	if (!dp)
		return 0;
	while ((e = readdir(dp))) {
		struct stat st;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		n++;
		*size = fstatat(dirfd(dp), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st.st_size : -1;
	}
	closedir(dp);
	return n;
}

static void test_scan_tree_symlinks(void)
{
	char *d = tdir("escape"), *root = xasprintf("%s/sandbox", d);
	char *vm = xasprintf("%s/vm1", root), *host = xasprintf("%s/host", d);
	char *sub = xasprintf("%s/sub", vm), *moved = xasprintf("%s/sub.moved", vm), *p;
	const char *host_files[] = { "2.exe", "3.exe", "evil.exe" };
	const enum scan_action actions[] = { SCAN_QUARANTINE_FILE, SCAN_DELETE_FILE };
	const off_t padded = 7 + 68 + 9; /* the sandbox's 3.exe, not the host's */
	struct sigdb *db = sigdb_builtin();

	CU_ASSERT_FATAL(mkdir(root, 0700) == 0);
	CU_ASSERT_FATAL(mkdir(vm, 0700) == 0);
	CU_ASSERT_FATAL(mkdir(host, 0700) == 0);
	tree_mkdir(vm, "sub");
	tree_file(vm, "sub/1.txt", "clean");
	tree_file(vm, "sub/2.exe", "clean too");
	p = xasprintf("%s/link-dir", vm); /* listed before sub/, never entered */
	CU_ASSERT_FATAL(symlink(host, p) == 0);
	free(p);
	p = xasprintf("%s/link-file", vm); /* never read */
	CU_ASSERT_FATAL(symlink("../../host/evil.exe", p) == 0);
	free(p);

	for (size_t i = 0; i < ARRAY_SIZE(actions); i++) {
		char *q = xasprintf("%s/.quarantine%zu", root, i), *qvm = xasprintf("%s/vm1", q);
		struct scan_policy pol = { .action = actions[i], .quarantine_dir = q };
		struct scanner *s = scanner_new(db, &pol);
		char *first = xasprintf("%s/1.txt", sub), *third = xasprintf("%s/3.exe", sub);
		struct swap w = { .after = first, .dir = sub, .moved = moved, .target = host };
		struct scan_summary sum;
		size_t fds = open_fds();
		off_t size;

		for (size_t j = 0; j < ARRAY_SIZE(host_files); j++)
			tree_file(host, host_files[j], eicar());
		p = xasprintf("%s/sub/3.exe", vm);
		write_padded(p, 7, eicar(), strlen(eicar()));
		free(p);

		CU_ASSERT_EQUAL(scanner_scan_tree(s, "vm1", vm, true, swap_after, &w, &sum), 0);
		CU_ASSERT_EQUAL(open_fds(), fds);
		CU_ASSERT_TRUE(w.done);
		CU_ASSERT_EQUAL(sum.files, 3);
		CU_ASSERT_EQUAL(sum.clean, 2);
		CU_ASSERT_EQUAL(sum.infected, 1);
		CU_ASSERT_EQUAL(sum.errors, 0);
		CU_ASSERT_EQUAL_FATAL(w.seen.n, 3);
		/* reported by the names the walk listed, read from the directory it opened */
		CU_ASSERT_STRING_EQUAL(w.seen.paths[0], first);
		CU_ASSERT_EQUAL(w.seen.verdict[1], SCAN_CLEAN);
		CU_ASSERT_STRING_EQUAL(w.seen.paths[2], third);
		CU_ASSERT_EQUAL(w.seen.verdict[2], SCAN_INFECTED);
		/* nothing of the host's was read, moved or deleted */
		for (size_t j = 0; j < ARRAY_SIZE(host_files); j++) {
			p = xasprintf("%s/%s", host, host_files[j]);
			CU_ASSERT_TRUE(exists(p));
			free(p);
		}
		/* the action hit the sandbox's own file, through the moved directory */
		p = xasprintf("%s/3.exe", moved);
		CU_ASSERT_FALSE(exists(p));
		free(p);
		if (actions[i] == SCAN_QUARANTINE_FILE) {
			CU_ASSERT_EQUAL(dir_entries(qvm, &size), 1);
			CU_ASSERT_EQUAL(size, padded);
		} else {
			CU_ASSERT_EQUAL(dir_entries(qvm, &size), 0);
		}

		/* undo the swap for the next action */
		CU_ASSERT_FATAL(unlink(sub) == 0);
		CU_ASSERT_FATAL(rename(moved, sub) == 0);
		scanner_free(s);
		free(third);
		free(first);
		free(qvm);
		free(q);
	}

	sigdb_free(db);
	free(moved);
	free(sub);
	free(host);
	free(vm);
	free(root);
	free(d);
}

/* Nesting is bounded (and so are the directories a walk holds open): the
 * directory one level too deep is an error, the one above it is scanned. */
static void test_scan_tree_depth(void)
{
	char *d = tdir("depth"), *q = xasprintf("%s/q", d), *rel = xstrdup("");
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = policy(q);
	struct scanner *s = scanner_new(db, &pol);
	struct scan_summary sum;
	struct seen seen = { 0 };
	size_t fds;
	char *want;

	for (int i = 1; i <= SCAN_TREE_MAX_DEPTH + 1; i++) {
		char *next = xasprintf("%s%sa", rel, *rel ? "/" : "");

		free(rel);
		rel = next;
		tree_mkdir(d, rel);
		if (i >= SCAN_TREE_MAX_DEPTH) {
			char *f = xasprintf("%s/f", rel);

			tree_file(d, f, "clean");
			free(f);
		}
	}
	fds = open_fds();
	CU_ASSERT_EQUAL(scanner_scan_tree(s, "vm", d, true, record, &seen, &sum), 0);
	CU_ASSERT_EQUAL(open_fds(), fds);
	CU_ASSERT_EQUAL(sum.files, 1);
	CU_ASSERT_EQUAL(sum.clean, 1);
	CU_ASSERT_EQUAL(sum.errors, 1);
	CU_ASSERT_EQUAL_FATAL(seen.n, 2);
	want = xasprintf("%s/%s", d, rel);
	CU_ASSERT_STRING_EQUAL(seen.paths[0], want); /* "a" sorts before "f" */
	CU_ASSERT_EQUAL(seen.verdict[0], SCAN_ERROR);
	free(want);

	scanner_free(s);
	sigdb_free(db);
	free(rel);
	free(q);
	free(d);
}

/* ---- detection events --------------------------------------------------- */

static void test_detection_json(void)
{
	char *d = tdir("json"), *q = xasprintf("%s/q", d), *f;
	const char *want;
	const char *odd = "we\"ird\\na\nme\t.exe";
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = policy(q);
	struct scanner *s = scanner_new(db, &pol);
	struct scan_result r = { .verdict = SCAN_INFECTED, .severity = SCAN_SEV_HIGH,
				 .action = SCAN_QUARANTINE_FILE, .action_done = true,
				 .signature = "Test.Ransom.Sim", .moved_to = "/q/vm/x.0",
				 .time = 86400 + 3661 };
	struct detection ev;
	char buf[1024];
	int n;

	n = detection_json(&r, "desktop1", "/sb/a\"b\\c\nd\x01", NULL, buf, sizeof(buf));
	want = "{\"event\":\"detection\",\"vm\":\"desktop1\",\"path\":\"/sb/a\\\"b\\\\c\\nd\\u0001\","
	       "\"signature\":\"Test.Ransom.Sim\",\"severity\":\"high\",\"action\":\"quarantine\","
	       "\"action_done\":true,\"moved_to\":\"/q/vm/x.0\",\"time\":\"1970-01-02T01:01:01Z\","
	       "\"epoch\":90061}\n";
	CU_ASSERT_STRING_EQUAL(buf, want);
	CU_ASSERT_EQUAL(n, (int)strlen(want));
	/* a name that is not UTF-8 still gives a line of JSON (UTF-8 text) */
	detection_json(&r, "desktop1", "/sb/inv\xff\xfe.com \xc3\xa9\xe2\x82", NULL, buf, sizeof(buf));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"path\":\"/sb/inv\\ufffd\\ufffd.com \xc3\xa9\\ufffd\\ufffd\","));
	CU_ASSERT_TRUE(utf8_text(buf, strlen(buf), NULL));
	errno = 0;
	CU_ASSERT_EQUAL(detection_json(&r, "desktop1", "/sb/x", NULL, buf, 50), -1);
	CU_ASSERT_EQUAL(errno, ENOSPC);
	CU_ASSERT_STRING_EQUAL(buf, "");

	CU_ASSERT_EQUAL(detection_from_result(&r, "desktop1", "/sb/x", &ev), 0);
	CU_ASSERT_STRING_EQUAL(ev.vm, "desktop1");
	CU_ASSERT_STRING_EQUAL(ev.signature, "Test.Ransom.Sim");
	CU_ASSERT_EQUAL(ev.severity, SCAN_SEV_HIGH);
	CU_ASSERT_EQUAL(ev.time, 90061);

	r = (struct scan_result){ .verdict = SCAN_ERROR, .why = "not a regular file (fifo)" };
	CU_ASSERT_EQUAL(detection_from_result(&r, "vm", "/p", &ev), -1);
	detection_json(&r, "vm", "/p", NULL, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "{\"event\":\"scan\",\"vm\":\"vm\",\"path\":\"/p\","
				    "\"verdict\":\"error\",\"why\":\"not a regular file (fifo)\","
				    "\"time\":\"1970-01-01T00:00:00Z\",\"epoch\":0}\n");

	/* end to end: an odd file name, quarantined, in the event */
	f = xasprintf("%s/%s", d, odd);
	write_str(f, eicar());
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", f, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);
	CU_ASSERT(detection_json(&r, "vm", f, NULL, buf, sizeof(buf)) > 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "/we\\\"ird\\\\na\\nme\\u0009.exe\",\"signature\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"moved_to\":\""));
	CU_ASSERT_PTR_EQUAL(strchr(buf, '\n'), buf + strlen(buf) - 1); /* one line */

	scanner_free(s);
	sigdb_free(db);
	free(f);
	free(q);
	free(d);
}


/* What `dfw-lab infect` writes: a signature of each severity, EICAR first. */
static void test_sigdb_pick(void)
{
	char *d = tdir("pick"), *path;
	struct diag dg = { 0 };
	struct sigdb *db = load_text(d, "Low.A low \"aaa\"\nLow.B low \"bbb\"\nHigh.C high \"ccc\"\n",
				     &dg, &path);
	struct sigdb *builtin = sigdb_builtin();
	const unsigned char *pat;
	const char *name;
	size_t len;

	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT_EQUAL(sigdb_pick(db, SCAN_SEV_HIGH, &name, &pat, &len), 0);
	CU_ASSERT_STRING_EQUAL(name, SCAN_EICAR_NAME);
	CU_ASSERT_EQUAL(len, strlen(eicar()));
	CU_ASSERT(!memcmp(pat, eicar(), len));
	CU_ASSERT_EQUAL(sigdb_pick(db, SCAN_SEV_LOW, &name, &pat, &len), 0);
	CU_ASSERT_STRING_EQUAL(name, "Low.A"); /* the first of the file's */
	CU_ASSERT_EQUAL(len, 3);
	CU_ASSERT(!memcmp(pat, "aaa", 3));
	CU_ASSERT_EQUAL(sigdb_pick(db, SCAN_SEV_MEDIUM, &name, &pat, &len), -1);
	CU_ASSERT_EQUAL(sigdb_pick(builtin, SCAN_SEV_LOW, &name, &pat, &len), -1);
	sigdb_free(db);
	free(path);

	/* EICAR moved to medium: high is the file's own */
	db = load_text(d, "EICAR-Test-File medium\nHigh.C high \"ccc\"\n", &dg, &path);
	CU_ASSERT_PTR_NOT_NULL_FATAL(db);
	CU_ASSERT_EQUAL(sigdb_pick(db, SCAN_SEV_HIGH, &name, &pat, &len), 0);
	CU_ASSERT_STRING_EQUAL(name, "High.C");
	CU_ASSERT_EQUAL(sigdb_pick(db, SCAN_SEV_MEDIUM, &name, &pat, &len), 0);
	CU_ASSERT_STRING_EQUAL(name, SCAN_EICAR_NAME);

	sigdb_free(db);
	sigdb_free(builtin);
	diag_free(&dg);
	free(path);
	free(d);
}

/* A running scanner follows a new policy (the store's [detection]) and
 * keeps its cache. */
static void test_set_policy(void)
{
	char *d = tdir("setpol"), *q = xasprintf("%s/q", d), *big = xasprintf("%s/big", d);
	char *clean = xasprintf("%s/clean", d), *bad = xasprintf("%s/bad", d);
	struct sigdb *db = sigdb_builtin();
	struct scan_policy pol = policy(q);
	struct scanner *s = scanner_new(db, &pol);
	struct scan_result r;

	write_padded(big, 5000, eicar(), strlen(eicar()));
	write_str(clean, "nothing here");
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", clean, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_CLEAN);
	CU_ASSERT(r.done_ns > 0);

	pol.max_bytes = 1000;
	pol.action = SCAN_DELETE_FILE;
	CU_ASSERT_EQUAL(scanner_set_policy(s, &pol), 0);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", big, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_SKIPPED_POLICY);
	CU_ASSERT_PTR_NOT_NULL(strstr(r.why, "larger than max_bytes (5077 > 1000)"));
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", clean, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_SKIPPED_CACHED); /* the cache survived */
	write_str(bad, eicar());
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", bad, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_INFECTED);
	CU_ASSERT_EQUAL(r.action, SCAN_DELETE_FILE);
	CU_ASSERT_TRUE(r.action_done);
	CU_ASSERT_FALSE(exists(bad));

	/* A bad policy changes nothing. */
	pol.action = SCAN_QUARANTINE_FILE;
	pol.quarantine_dir = "";
	errno = 0;
	CU_ASSERT_EQUAL(scanner_set_policy(s, &pol), -1);
	CU_ASSERT_EQUAL(errno, EINVAL);
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", big, &r), 0);
	CU_ASSERT_EQUAL(r.verdict, SCAN_SKIPPED_POLICY);
	write_str(bad, eicar());
	CU_ASSERT_EQUAL(scanner_scan_file(s, "vm", bad, &r), 0);
	CU_ASSERT_EQUAL(r.action, SCAN_DELETE_FILE);

	scanner_free(s);
	sigdb_free(db);
	free(bad);
	free(clean);
	free(big);
	free(q);
	free(d);
}

/* The thin driver's event lines: the one good shape, and every way a line
 * can be wrong, each with its reason. */
static void test_event_parse(void)
{
	static const struct {
		const char *line, *why; /* why NULL: accepted */
		const char *vm, *file;
	} cases[] = {
		{ "{\"vm\":\"desktop1\",\"file\":\"invoice.com\"}", NULL, "desktop1", "invoice.com" },
		{ "  { \"file\" : \"a b.exe\" , \"vm\" : \"d\" }\r", NULL, "d", "a b.exe" },
		{ "{\"vm\":\"d\",\"file\":\"caf\\u00e9 \\\"x\\\" \\\\ \\b.txt\"}", NULL, "d",
		  "caf\xc3\xa9 \"x\" \\ \b.txt" },
		{ "{\"vm\":\"d\",\"file\":\"\\ud83d\\ude00.exe\"}", NULL, "d", "\xf0\x9f\x98\x80.exe" },
		{ "{\"vm\":\"d\",\"file\":\"r\xc3\xa9sum\xc3\xa9.pdf\"}", NULL, "d", "r\xc3\xa9sum\xc3\xa9.pdf" },
		{ "{\"vm\":\"d\",\"file\":\"..x\"}", NULL, "d", "..x" },
		{ "", "empty line" },
		{ "   ", "empty line" },
		{ "not json", "not a JSON object (expected '{', got 'n')" },
		{ "[1]", "not a JSON object (expected '{', got '[')" },
		{ "{}", "missing member \"vm\"" },
		{ "{\"vm\":\"d\"}", "missing member \"file\"" },
		{ "{\"file\":\"f\"}", "missing member \"vm\"" },
		{ "{\"vm\":\"d\",\"file\":\"f\",\"x\":\"y\"}", "unknown member \"x\" (expected \"vm\" and \"file\")" },
		{ "{\"vm\":\"d\",\"vm\":\"e\",\"file\":\"f\"}", "duplicate member \"vm\"" },
		{ "{\"vm\":1,\"file\":\"f\"}", "vm must be a string" },
		{ "{\"vm\":\"d\",\"file\":null}", "file must be a string" },
		{ "{\"vm\" \"d\"}", "expected ':' after \"vm\"" },
		{ "{\"vm\":\"d\" \"file\":\"f\"}", "expected ',' or '}' after \"vm\"" },
		{ "{\"vm\":\"d\",}", "expected a member name in quotes at byte 11" },
		{ "{\"vm\":\"d\",", "the line ends inside the object" },
		{ "{\"vm\":\"d", "vm: missing closing '\"'" },
		{ "{\"vm\":\"d\",\"file\":\"f\"} x", "unexpected text after the object at byte 23" },
		{ "{\"vm\":\"d\",\"file\":\"f\"}{}", "unexpected text after the object at byte 22" },
		{ "{\"vm\":\"d\",\"file\":\"a/b\"}", "file name 'a/b' contains '/' (names only: no paths)" },
		{ "{\"vm\":\"d\",\"file\":\"../../etc/passwd\"}",
		  "file name '../../etc/passwd' contains '/' (names only: no paths)" },
		{ "{\"vm\":\"d\",\"file\":\"\\/etc\"}", "file name '/etc' contains '/' (names only: no paths)" },
		{ "{\"vm\":\"d\",\"file\":\"..\"}", "file name '..' would leave the sandbox" },
		{ "{\"vm\":\".\",\"file\":\"f\"}", "vm name '.' would leave the sandbox" },
		{ "{\"vm\":\"a/..\",\"file\":\"f\"}", "vm name 'a/..' contains '/' (names only: no paths)" },
		{ "{\"vm\":\"\",\"file\":\"f\"}", "empty vm name" },
		{ "{\"vm\":\"d\",\"file\":\"a\\u0000b\"}", "file contains a NUL character" },
		{ "{\"vm\":\"d\",\"file\":\"a\tb\"}", "file: raw control character 0x09 (escape it)" },
		{ "{\"vm\":\"d\",\"file\":\"a\\qb\"}", "file: unknown escape '\\q'" },
		{ "{\"vm\":\"d\",\"file\":\"a\\u12\"}", "file: bad \\u escape (four hex digits)" },
		{ "{\"vm\":\"d\",\"file\":\"\\ud83d.exe\"}", "file: high surrogate without its low half" },
		{ "{\"vm\":\"d\",\"file\":\"\\ude00\"}", "file: lone low surrogate in \\u escape" },
		{ "{\"vm\":\"d\",\"file\":\"\xff.exe\"}", "file is not valid UTF-8" },
		{ "{\"vm\":\"d\",\"file\":\"\xc0\xaf.exe\"}", "file is not valid UTF-8" },   /* overlong '/' */
		{ "{\"vm\":\"d\",\"file\":\"\xed\xa0\x80\"}", "file is not valid UTF-8" },   /* surrogate */
		{ "{\"vm\":\"d\",\"file\":\"\xf4\x90\x80\x80\"}", "file is not valid UTF-8" }, /* > U+10FFFF */
		{ "{\"vm\":\"d\",\"file\":\"\xe2\x82\"}", "file is not valid UTF-8" },       /* cut short */
	};
	static const char nul[] = "{\"vm\":\"d\0\",\"file\":\"f\"}";
	struct scan_event ev;
	char why[256], *line;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int r = scan_event_parse(cases[i].line, strlen(cases[i].line), &ev, why, sizeof(why));

		if (cases[i].why) {
			CU_ASSERT_EQUAL(r, -1);
			if (strcmp(why, cases[i].why))
				fprintf(stderr, "\ncase %zu: got '%s', want '%s'\n", i, why, cases[i].why);
			CU_ASSERT_STRING_EQUAL(why, cases[i].why);
		} else {
			CU_ASSERT_EQUAL(r, 0);
			if (r)
				fprintf(stderr, "\ncase %zu: rejected: %s\n", i, why);
			CU_ASSERT_STRING_EQUAL(ev.vm, cases[i].vm);
			CU_ASSERT_STRING_EQUAL(ev.file, cases[i].file);
		}
	}

	/* A NUL byte inside the line, not escaped */
	CU_ASSERT_EQUAL(scan_event_parse(nul, sizeof(nul) - 1, &ev, why, sizeof(why)), -1);
	CU_ASSERT_STRING_EQUAL(why, "vm: raw control character 0x00 (escape it)");

	/* Lengths: a 255-byte name is fine, 256 is not; a line has a limit. */
	line = xasprintf("{\"vm\":\"d\",\"file\":\"%0255d\"}", 0);
	CU_ASSERT_EQUAL(scan_event_parse(line, strlen(line), &ev, why, sizeof(why)), 0);
	CU_ASSERT_EQUAL(strlen(ev.file), 255);
	free(line);
	line = xasprintf("{\"vm\":\"d\",\"file\":\"%0256d\"}", 0);
	CU_ASSERT_EQUAL(scan_event_parse(line, strlen(line), &ev, why, sizeof(why)), -1);
	CU_ASSERT_STRING_EQUAL(why, "file name longer than 255 bytes");
	free(line);
	line = xasprintf("{\"vm\":\"d\",\"file\":\"%04100d\"}", 0);
	CU_ASSERT_EQUAL(scan_event_parse(line, strlen(line), &ev, why, sizeof(why)), -1);
	CU_ASSERT_STRING_EQUAL(why, "line longer than 4096 bytes");
	free(line);
	line = xasprintf("{\"%040d\":\"d\"}", 0);
	CU_ASSERT_EQUAL(scan_event_parse(line, strlen(line), &ev, why, sizeof(why)), -1);
	CU_ASSERT_STRING_EQUAL(why, "member name is longer than 31 bytes");
	free(line);
}

/* The audit record of a detection with its source, tag and stage times. */
static void test_detection_extra(void)
{
	struct scan_result r = { .verdict = SCAN_INFECTED, .severity = SCAN_SEV_LOW,
				 .action = SCAN_DELETE_FILE, .action_done = true,
				 .signature = "Test.Adware.Sim", .time = 0, .done_ns = 2000 };
	struct detection_extra x = { .source = "event", .tag = "threat.low", .revision = 7,
				     .event_ns = 1000, .tagged_ns = 3000 };
	char buf[1024];

	CU_ASSERT(detection_json(&r, "vm", "/sb/vm/a", &x, buf, sizeof(buf)) > 0);
	CU_ASSERT_STRING_EQUAL(buf, "{\"event\":\"detection\",\"vm\":\"vm\",\"path\":\"/sb/vm/a\","
				    "\"signature\":\"Test.Adware.Sim\",\"severity\":\"low\","
				    "\"action\":\"delete\",\"action_done\":true,\"source\":\"event\","
				    "\"tag\":\"threat.low\",\"revision\":7,"
				    "\"time\":\"1970-01-01T00:00:00Z\",\"epoch\":0,"
				    "\"event_ns\":1000,\"scanned_ns\":2000,\"tagged_ns\":3000}\n");
	x = (struct detection_extra){ .source = "watch", .tag_error = "unknown VM 'vm'" };
	CU_ASSERT(detection_json(&r, "vm", "/sb/vm/a", &x, buf, sizeof(buf)) > 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"source\":\"watch\",\"tag_error\":\"unknown VM 'vm'\","));
	CU_ASSERT_PTR_NULL(strstr(buf, "\"revision\""));
	CU_ASSERT_PTR_NULL(strstr(buf, "\"event_ns\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"scanned_ns\":2000}"));
	/* without extras, no stage times at all */
	CU_ASSERT(detection_json(&r, "vm", "/sb/vm/a", NULL, buf, sizeof(buf)) > 0);
	CU_ASSERT_PTR_NULL(strstr(buf, "_ns\""));
}

void register_scanner_tests(void)
{
	static const struct unit_test tests[] = {
		{ "eicar", test_eicar },
		{ "chunk boundary", test_chunk_boundary },
		{ "custom signatures", test_custom_signatures },
		{ "shipped signatures", test_shipped_signatures },
		{ "malformed signatures", test_malformed_signatures },
		{ "cache", test_cache },
		{ "infected not cached", test_infected_not_cached },
		{ "cache bounded", test_cache_bounded },
		{ "quarantine", test_quarantine },
		{ "delete", test_delete },
		{ "policy skips", test_policy_skips },
		{ "a sparse file costs its data only; holes read as zeros", test_sparse },
		{ "unscannable files", test_unscannable },
		{ "scan tree", test_scan_tree },
		{ "scan tree symlinks", test_scan_tree_symlinks },
		{ "scan tree depth", test_scan_tree_depth },
		{ "detection json", test_detection_json },
		{ "sigdb pick", test_sigdb_pick },
		{ "set policy", test_set_policy },
		{ "event parse", test_event_parse },
		{ "detection extra", test_detection_extra },
	};

	unit_suite("scanner", tests, ARRAY_SIZE(tests));
}
