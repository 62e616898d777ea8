/* The simulated anti-malware appliance: signature file parser, streaming
 * multi-pattern scanner, scan cache, actions, thin-driver event lines and
 * detection events.  See scanner.h. */
#include "sim/scanner.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/out.h"

struct sig {
	char *name;
	enum scan_severity sev;
	unsigned char *pat;
	size_t len;
	int line; /* in the signature file; 0 when built in */
};

struct sigdb {
	struct sig *v;
	size_t n, cap;
	size_t maxlen; /* longest pattern */
};

const char *scan_severity_name(enum scan_severity sev)
{
	static const char *const names[] = { "low", "medium", "high" };

	return (unsigned)sev < ARRAY_SIZE(names) ? names[sev] : "?";
}

const char *scan_verdict_name(enum scan_verdict v)
{
	static const char *const names[] = { "clean", "infected", "skipped-policy",
					     "skipped-cached", "error" };

	return (unsigned)v < ARRAY_SIZE(names) ? names[v] : "?";
}

const char *scan_action_name(enum scan_action a)
{
	return a == SCAN_DELETE_FILE ? "delete" : "quarantine";
}

/* ---- signature database ------------------------------------------------- */

static void sigdb_add(struct sigdb *db, const char *name, enum scan_severity sev,
		      const unsigned char *pat, size_t len, int line)
{
	struct sig *g;

	grow((void **)&db->v, &db->cap, db->n + 1, sizeof(*db->v));
	g = &db->v[db->n++];
	g->name = xstrdup(name);
	g->sev = sev;
	g->pat = xmalloc(len);
	memcpy(g->pat, pat, len);
	g->len = len;
	g->line = line;
	if (len > db->maxlen)
		db->maxlen = len;
}

static struct sig *sigdb_find(struct sigdb *db, const char *name)
{
	for (size_t i = 0; i < db->n; i++)
		if (str_eq_nocase(db->v[i].name, name))
			return &db->v[i];
	return NULL;
}

/* Built from two halves so that this source file is not itself the test
 * virus to a scanner that looks at the tree. */
struct sigdb *sigdb_builtin(void)
{
	static const char a[] = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-";
	static const char b[] = "STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
	struct sigdb *db = xcalloc(1, sizeof(*db));
	unsigned char eicar[sizeof(a) + sizeof(b)];

	memcpy(eicar, a, sizeof(a) - 1);
	memcpy(eicar + sizeof(a) - 1, b, sizeof(b) - 1);
	sigdb_add(db, SCAN_EICAR_NAME, SCAN_SEV_HIGH, eicar, sizeof(a) + sizeof(b) - 2, 0);
	return db;
}

void sigdb_free(struct sigdb *db)
{
	if (!db)
		return;
	for (size_t i = 0; i < db->n; i++) {
		free(db->v[i].name);
		free(db->v[i].pat);
	}
	free(db->v);
	free(db);
}

size_t sigdb_count(const struct sigdb *db)
{
	return db->n;
}

/* The built-in EICAR comes first in db->v, then the file's in file order. */
int sigdb_pick(const struct sigdb *db, enum scan_severity sev, const char **name,
	       const unsigned char **pat, size_t *len)
{
	for (size_t i = 0; i < db->n; i++) {
		if (db->v[i].sev != sev)
			continue;
		*name = db->v[i].name;
		*pat = db->v[i].pat;
		*len = db->v[i].len;
		return 0;
	}
	return -1;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A printable rendering of byte c for messages. */
static const char *show(int c, char buf[8])
{
	if (isprint(c))
		snprintf(buf, 8, "'%c'", c);
	else
		snprintf(buf, 8, "0x%02x", (unsigned)(unsigned char)c);
	return buf;
}

/* Decodes a PATTERN field (the rest of the line) into out[SIG_PATTERN_MAX]
 * and *len.  Returns NULL or the reason it is malformed (in why). */
static const char *parse_pattern(const char *p, unsigned char *out, size_t *len,
				 char *why, size_t whylen)
{
	size_t n = 0, total = 0; /* total counts past the limit, for the message */
	char c1[8];

	if (!strncmp(p, "hex:", 4)) {
		p += 4;
		for (;;) {
			int hi, lo;

			while (*p == ' ' || *p == '\t')
				p++;
			if (!*p)
				break;
			hi = hexval((unsigned char)p[0]);
			lo = hi < 0 ? -1 : hexval((unsigned char)p[1]);
			if (hi < 0 || lo < 0) {
				int bad = hi < 0 ? p[0] : p[1];

				if (!bad || bad == ' ' || bad == '\t')
					snprintf(why, whylen, "bad hex: odd number of digits");
				else
					snprintf(why, whylen, "bad hex digit %s", show((unsigned char)bad, c1));
				return why;
			}
			if (n < SIG_PATTERN_MAX)
				out[n++] = (unsigned char)(hi << 4 | lo);
			total++;
			p += 2;
		}
	} else if (*p == '"') {
		for (p++;; p++) {
			int c = (unsigned char)*p;

			if (!c) {
				snprintf(why, whylen, "missing closing '\"'");
				return why;
			}
			if (c == '"')
				break;
			if (c == '\\') {
				c = (unsigned char)*++p;
				if (c == 'x') {
					int hi = hexval((unsigned char)p[1]);
					int lo = hi < 0 ? -1 : hexval((unsigned char)p[2]);

					if (hi < 0 || lo < 0) {
						snprintf(why, whylen, "bad \\x escape: expected two hex digits");
						return why;
					}
					c = hi << 4 | lo;
					p += 2;
				} else if (c != '\\' && c != '"') {
					snprintf(why, whylen, "unknown escape '\\%s' (use \\\\, \\\" or \\xNN)",
						 c ? (char[]){ (char)c, 0 } : "");
					return why;
				}
			}
			if (n < SIG_PATTERN_MAX)
				out[n++] = (unsigned char)c;
			total++;
		}
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p) {
			snprintf(why, whylen, "unexpected text after the pattern: '%.32s'", p);
			return why;
		}
	} else {
		snprintf(why, whylen, "pattern must be \"quoted\" or hex:…, not '%.32s'", p);
		return why;
	}
	if (total == 0) {
		snprintf(why, whylen, "empty pattern");
		return why;
	}
	if (total > SIG_PATTERN_MAX) {
		snprintf(why, whylen, "pattern longer than %d bytes (%zu)", SIG_PATTERN_MAX, total);
		return why;
	}
	*len = n;
	return NULL;
}

static bool valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > SIG_NAME_MAX)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
			return false;
	return true;
}

int scan_severity_parse(const char *s, enum scan_severity *out, char *why, size_t len)
{
	const char *near = NULL;

	for (int i = SCAN_SEV_LOW; i <= SCAN_SEV_HIGH; i++) {
		if (!strcmp(s, scan_severity_name(i))) {
			*out = i;
			return 0;
		}
		if (edit_distance(s, scan_severity_name(i)) <= 2)
			near = scan_severity_name(i);
	}
	snprintf(why, len, "unknown severity '%.32s' (high, medium or low)%s%s%s", s,
		 near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
	return -1;
}

/* Splits off the next blank-separated word of *p (NULL at end of line). */
static char *next_word(char **p)
{
	char *s = *p, *e;

	while (*s == ' ' || *s == '\t')
		s++;
	if (!*s)
		return NULL;
	e = s + strcspn(s, " \t");
	if (*e)
		*e++ = '\0';
	*p = e;
	return s;
}

static void parse_line(struct sigdb *db, char *line, const char *path, int lineno,
		       struct diag *d)
{
	static unsigned char pat[SIG_PATTERN_MAX];
	char *rest = line, *name, *sevs, why[160];
	enum scan_severity sev;
	struct sig *old;
	size_t len;

	name = next_word(&rest);
	sevs = next_word(&rest);
	while (*rest == ' ' || *rest == '\t')
		rest++;
	if (!sevs) {
		diag_add(d, path, lineno, "expected NAME SEVERITY PATTERN, got '%.64s'", name);
		return;
	}
	if (!valid_name(name)) {
		diag_add(d, path, lineno,
			 "invalid signature name '%.80s' (1-%d of A-Z a-z 0-9 . _ -)", name,
			 SIG_NAME_MAX);
		return;
	}
	if (scan_severity_parse(sevs, &sev, why, sizeof(why)) < 0) {
		diag_add(d, path, lineno, "%s", why);
		return;
	}
	old = sigdb_find(db, name);
	if (old && old->line == 0 && !strcmp(old->name, SCAN_EICAR_NAME) && !*rest) {
		old->sev = sev; /* the built-in EICAR, first override */
		old->line = lineno;
		return;
	}
	if (old) {
		if (old->line)
			diag_add(d, path, lineno, "duplicate signature '%s' (first at line %d)",
				 name, old->line);
		else
			diag_add(d, path, lineno,
				 "'%s' is built in: give only its severity, no pattern", old->name);
		return;
	}
	if (!*rest) {
		diag_add(d, path, lineno, "missing pattern for '%s'", name);
		return;
	}
	if (parse_pattern(rest, pat, &len, why, sizeof(why))) {
		diag_add(d, path, lineno, "%s", why);
		return;
	}
	sigdb_add(db, name, sev, pat, len, lineno);
}

struct sigdb *sigdb_load(const char *path, struct diag *d)
{
	struct sigdb *db = NULL;
	size_t before = d->n, cap = 0;
	char *line = NULL, *p;
	int lineno = 0;
	ssize_t got;
	FILE *f;

	f = fopen(path, "re");
	if (!f) {
		diag_add(d, path, 0, "%m");
		return NULL;
	}
	db = sigdb_builtin();
	while ((got = getline(&line, &cap, f)) >= 0) {
		lineno++;
		if (memchr(line, '\0', (size_t)got)) {
			diag_add(d, path, lineno, "NUL byte in line");
			continue;
		}
		p = str_trim(line);
		if (*p && *p != '#')
			parse_line(db, p, path, lineno, d);
	}
	if (ferror(f))
		diag_add(d, path, 0, "read error: %m");
	fclose(f);
	free(line);
	if (d->n > before) {
		sigdb_free(db);
		return NULL;
	}
	return db;
}

/* ---- scan cache --------------------------------------------------------- */

/* What identifies one version of a file.  ctime is in the key because a
 * guest can put mtime back after a same-size rewrite (timestomping), but
 * cannot set ctime. */
struct cache_key {
	uint64_t dev, ino, size, mtime_ns, ctime_ns;
};

/* Open addressing, twice as many slots as entries; cleared when full
 * rather than evicting, since a full scan rebuilds it anyway. */
#define CACHE_SLOTS (2 * SCAN_CACHE_MAX)

struct cache {
	struct cache_key *slot;
	bool *used;
	size_t n;
};

static size_t cache_hash(const struct cache_key *k)
{
	uint64_t h = 1469598103934665603ULL;
	const uint64_t w[] = { k->dev, k->ino, k->size, k->mtime_ns, k->ctime_ns };

	for (size_t i = 0; i < ARRAY_SIZE(w); i++) {
		h ^= w[i];
		h *= 1099511628211ULL;
		h ^= h >> 29;
	}
	return (size_t)(h % CACHE_SLOTS);
}

/* The slot holding k, or the free slot where it would go. */
static size_t cache_probe(const struct cache *c, const struct cache_key *k)
{
	size_t i = cache_hash(k);

	while (c->used[i] && memcmp(&c->slot[i], k, sizeof(*k)))
		i = (i + 1) % CACHE_SLOTS;
	return i;
}

static bool cache_has(const struct cache *c, const struct cache_key *k)
{
	return c->used[cache_probe(c, k)];
}

static void cache_reset(struct cache *c)
{
	memset(c->used, 0, CACHE_SLOTS * sizeof(*c->used));
	c->n = 0;
}

static void cache_put(struct cache *c, const struct cache_key *k)
{
	size_t i;

	if (cache_has(c, k))
		return;
	if (c->n >= SCAN_CACHE_MAX)
		cache_reset(c);
	i = cache_probe(c, k);
	c->slot[i] = *k;
	c->used[i] = true;
	c->n++;
}

/* ---- scanner ------------------------------------------------------------ */

struct scanner {
	const struct sigdb *db;
	uint64_t max_bytes;
	struct strv skip;
	enum scan_action action;
	char *qdir;
	struct cache cache;
	unsigned char *buf; /* the kept tail, then one chunk */
	size_t keep;        /* longest pattern - 1 */
};

static bool policy_ok(const struct scan_policy *pol)
{
	return pol && (pol->action != SCAN_QUARANTINE_FILE ||
		       (pol->quarantine_dir && *pol->quarantine_dir));
}

static void policy_copy(struct scanner *s, const struct scan_policy *pol)
{
	strv_free(&s->skip);
	free(s->qdir);
	s->max_bytes = pol->max_bytes;
	for (size_t i = 0; i < pol->nskip; i++)
		strv_push(&s->skip, pol->skip_suffixes[i]);
	s->action = pol->action;
	s->qdir = pol->quarantine_dir ? xstrdup(pol->quarantine_dir) : NULL;
}

struct scanner *scanner_new(const struct sigdb *db, const struct scan_policy *pol)
{
	struct scanner *s;

	if (!db || !policy_ok(pol)) {
		errno = EINVAL;
		return NULL;
	}
	s = xcalloc(1, sizeof(*s));
	s->db = db;
	policy_copy(s, pol);
	s->cache.slot = xcalloc(CACHE_SLOTS, sizeof(*s->cache.slot));
	s->cache.used = xcalloc(CACHE_SLOTS, sizeof(*s->cache.used));
	s->keep = db->maxlen ? db->maxlen - 1 : 0;
	s->buf = xmalloc(s->keep + SCAN_CHUNK_SIZE);
	return s;
}

void scanner_free(struct scanner *s)
{
	if (!s)
		return;
	strv_free(&s->skip);
	free(s->qdir);
	free(s->cache.slot);
	free(s->cache.used);
	free(s->buf);
	free(s);
}

int scanner_set_policy(struct scanner *s, const struct scan_policy *pol)
{
	if (!s || !policy_ok(pol)) {
		errno = EINVAL;
		return -1;
	}
	policy_copy(s, pol);
	return 0;
}

void scanner_cache_clear(struct scanner *s)
{
	cache_reset(&s->cache);
}

size_t scanner_cache_size(const struct scanner *s)
{
	return s->cache.n;
}

static bool valid_vm(const char *vm)
{
	return vm && *vm && strcmp(vm, ".") && strcmp(vm, "..") && !strchr(vm, '/');
}

static struct cache_key key_of(const struct stat *st)
{
	return (struct cache_key){
		.dev = st->st_dev,
		.ino = st->st_ino,
		.size = (uint64_t)st->st_size,
		.mtime_ns = (uint64_t)st->st_mtim.tv_sec * 1000000000ULL +
			    (uint64_t)st->st_mtim.tv_nsec,
		.ctime_ns = (uint64_t)st->st_ctim.tv_sec * 1000000000ULL +
			    (uint64_t)st->st_ctim.tv_nsec,
	};
}

static const char *file_type(mode_t m)
{
	return S_ISDIR(m) ? "directory" : S_ISFIFO(m) ? "fifo" : S_ISSOCK(m) ? "socket"
		: S_ISCHR(m) ? "character device" : S_ISBLK(m) ? "block device" : "special file";
}

static bool skipped_suffix(const struct scanner *s, const char *path, const char **which)
{
	size_t n = strlen(path);

	for (size_t i = 0; i < s->skip.n; i++) {
		size_t m = strlen(s->skip.v[i]);

		if (m && m <= n && !strcasecmp(path + n - m, s->skip.v[i])) {
			*which = s->skip.v[i];
			return true;
		}
	}
	return false;
}

/* Where scan_fd is in a file that may have holes. */
struct rpos {
	off_t off;      /* the file's bytes passed */
	off_t hole_end; /* > off: in a hole that ends there */
	size_t zeros;   /* of that hole, the zeros still to scan */
	bool no_holes;  /* the file system cannot tell (SEEK_DATA failed) */
};

/* Puts up to want bytes of fd at p->off into dst: read, or a hole's zeros.
 * A hole is scanned as at most 2 * keep + 1 zeros: every window of a
 * pattern's length inside it, or across either of its ends, is among
 * those, so a sparse file costs its data only (1 TB of hole is no work).
 * *passed: the file's bytes this covered.  Returns the bytes put (0 at
 * the end), -1 with errno. */
static ssize_t next_bytes(int fd, struct rpos *p, size_t keep, unsigned char *dst, size_t want,
			  uint64_t *passed)
{
	ssize_t got;

	*passed = 0;
	if (p->off >= p->hole_end && !p->no_holes) {
		off_t data = lseek(fd, p->off, SEEK_DATA);

		if (data < 0 && errno == ENXIO) /* a hole up to the end, or the end */
			data = lseek(fd, 0, SEEK_END);
		/* Cannot tell, or a size that says less than was read (proc). */
		if (data < p->off) {
			p->no_holes = true;
			if (lseek(fd, p->off, SEEK_SET) < 0)
				return -1;
		} else if (data > p->off) {
			p->hole_end = data;
			p->zeros = (uint64_t)(data - p->off) < 2 * (uint64_t)keep + 1
					   ? (size_t)(data - p->off) : 2 * keep + 1;
		}
	}
	if (p->off < p->hole_end) {
		size_t n = p->zeros < want ? p->zeros : want;

		memset(dst, 0, n);
		p->zeros -= n;
		*passed = p->zeros ? n : (uint64_t)(p->hole_end - p->off);
		p->off = p->zeros ? p->off + (off_t)n : p->hole_end;
		return (ssize_t)n;
	}
	do
		got = read(fd, dst, want);
	while (got < 0 && errno == EINTR);
	if (got > 0) {
		p->off += got;
		*passed = (uint64_t)got;
	}
	return got;
}

/* Streams fd through every pattern, keeping the last keep bytes of the
 * previous chunk in front of the next so that a pattern across a chunk
 * boundary is still whole in the buffer.  *bytes: the file's bytes
 * passed (a hole's too).  Returns the matching signature, NULL when
 * clean, or NULL with *err set to errno on a read error, EFBIG when the
 * file grew past limit while it was read (the rest is unread). */
static const struct sig *scan_fd(struct scanner *s, int fd, uint64_t limit, uint64_t *bytes,
				 int *err)
{
	const struct sigdb *db = s->db;
	struct rpos pos = { 0 };
	size_t have = 0;

	*bytes = 0;
	*err = 0;
	for (;;) {
		size_t want = SCAN_CHUNK_SIZE;
		uint64_t passed;
		ssize_t got;
		bool over;

		/* One byte past the limit tells a file that grew from one
		 * that ends there. */
		if (limit && limit - *bytes < want)
			want = (size_t)(limit - *bytes) + 1;
		got = next_bytes(fd, &pos, s->keep, s->buf + have, want, &passed);
		if (got < 0) {
			*err = errno;
			return NULL;
		}
		if (got == 0)
			return NULL;
		/* Grew past max_bytes while we read: what is within is
		 * scanned, the file is not known clean. */
		over = limit && *bytes + passed > limit;
		if (over) {
			passed = limit - *bytes;
			got = got < (ssize_t)passed ? got : (ssize_t)passed;
		}
		*bytes += passed;
		have += (size_t)got;
		for (size_t i = 0; i < db->n; i++)
			if (memmem(s->buf, have, db->v[i].pat, db->v[i].len))
				return &db->v[i];
		if (over) {
			*err = EFBIG;
			return NULL;
		}
		if (have > s->keep) {
			memmove(s->buf, s->buf + have - s->keep, s->keep);
			have = s->keep;
		}
	}
}

static int mkdir_ok(const char *path)
{
	return mkdir(path, 0700) == 0 || errno == EEXIST ? 0 : -1;
}

/* Opens a directory below dfd (or AT_FDCWD) for a walk or an action: a
 * symbolic link in its place is refused, never followed. */
static int open_dir_at(int dfd, const char *name)
{
	return openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Moves name (of directory dfd) into quarantine_dir/<vm>/ without
 * overwriting anything there.  Source and target are both named relative
 * to directory fds, so that no directory swapped for a symbolic link since
 * the scan can send the rename anywhere else. */
static int quarantine(struct scanner *s, const char *vm, int dfd, const char *name,
		      struct scan_result *out)
{
	char *dir = xasprintf("%s/%s", s->qdir, vm);
	size_t base = strlen(dir) + 1; /* the new name within moved_to */
	int qfd = -1, vfd = -1, ret = -1;

	if (mkdir_ok(s->qdir) < 0 || (qfd = open_dir_at(AT_FDCWD, s->qdir)) < 0 ||
	    (mkdirat(qfd, vm, 0700) < 0 && errno != EEXIST) || (vfd = open_dir_at(qfd, vm)) < 0) {
		snprintf(out->why, sizeof(out->why), "quarantine: cannot create %.400s: %m", dir);
		goto out;
	}
	for (int i = 0; i < 1000; i++) {
		char sfx[48];
		int n;

		if (i)
			snprintf(sfx, sizeof(sfx), ".%lld.%d", (long long)out->time, i);
		else
			snprintf(sfx, sizeof(sfx), ".%lld", (long long)out->time);
		/* The guest's name may be NAME_MAX long already: it is cut so that
		 * the suffix fits, or the file would stay where it is. */
		n = snprintf(out->moved_to, sizeof(out->moved_to), "%s/%.*s%s", dir,
			     NAME_MAX - (int)strlen(sfx), name, sfx);
		if (n < 0 || (size_t)n >= sizeof(out->moved_to)) {
			snprintf(out->why, sizeof(out->why), "quarantine: path too long");
			goto out;
		}
		if (renameat2(dfd, name, vfd, out->moved_to + base, RENAME_NOREPLACE) == 0) {
			ret = 0;
			goto out;
		}
		if (errno != EEXIST) {
			snprintf(out->why, sizeof(out->why), "quarantine: cannot move to %.400s: %m",
				 out->moved_to);
			goto out;
		}
	}
	snprintf(out->why, sizeof(out->why), "quarantine: too many copies of %.200s in %.200s", name, dir);
out:
	if (ret < 0)
		out->moved_to[0] = '\0';
	if (vfd >= 0)
		close(vfd);
	if (qfd >= 0)
		close(qfd);
	free(dir);
	return ret;
}

static void act(struct scanner *s, const char *vm, int dfd, const char *name,
		struct scan_result *out)
{
	out->action = s->action;
	if (s->action == SCAN_DELETE_FILE) {
		if (unlinkat(dfd, name, 0) == 0)
			out->action_done = true;
		else
			snprintf(out->why, sizeof(out->why), "delete failed: %m");
	} else if (quarantine(s, vm, dfd, name, out) == 0) {
		out->action_done = true;
	}
}

/* Scans the file name of directory dfd, or when dfd is -1 of the directory
 * dir (opened here); path names the file for the suffix policy.  Reading
 * and acting go through dfd, never through path, so a guest that swaps a
 * directory of its sandbox for a symbolic link cannot point either of them
 * outside: the last component is opened without following links, and its
 * type is checked on the fd. */
static void scan_at(struct scanner *s, const char *vm, int dfd, const char *dir,
		    const char *name, const char *path, struct scan_result *out)
{
	const struct sig *hit;
	struct cache_key key;
	struct stat st;
	const char *suffix;
	struct timespec now;
	int own = -1, fd = -1, err;

	memset(out, 0, sizeof(*out));
	clock_gettime(CLOCK_REALTIME, &now);
	out->time = now.tv_sec;
	out->verdict = SCAN_ERROR;
	if (skipped_suffix(s, path, &suffix)) {
		out->verdict = SCAN_SKIPPED_POLICY;
		snprintf(out->why, sizeof(out->why), "suffix %s is not scanned", suffix);
		goto out;
	}
	if (dfd < 0) {
		dfd = own = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0) {
			snprintf(out->why, sizeof(out->why), "%m");
			goto out;
		}
	}
	/* Only a regular file is opened; O_NONBLOCK: a guest's lease on it
	 * must not hang the scanner either. */
	fd = open_regular(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW, &st);
	if (fd < 0) {
		if (S_ISLNK(st.st_mode))
			snprintf(out->why, sizeof(out->why), "symbolic link, not followed");
		else if (st.st_mode && !S_ISREG(st.st_mode))
			snprintf(out->why, sizeof(out->why), "not a regular file (%s)",
				 file_type(st.st_mode));
		else
			snprintf(out->why, sizeof(out->why), "%m");
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		snprintf(out->why, sizeof(out->why), "%m");
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(out->why, sizeof(out->why), "not a regular file (%s)", file_type(st.st_mode));
		goto out;
	}
	if (s->max_bytes && (uint64_t)st.st_size > s->max_bytes) {
		out->verdict = SCAN_SKIPPED_POLICY;
		snprintf(out->why, sizeof(out->why), "larger than max_bytes (%llu > %llu)",
			 (unsigned long long)st.st_size, (unsigned long long)s->max_bytes);
		goto out;
	}
	key = key_of(&st);
	if (cache_has(&s->cache, &key)) {
		out->verdict = SCAN_SKIPPED_CACHED;
		goto out;
	}
	hit = scan_fd(s, fd, s->max_bytes, &out->bytes_scanned, &err);
	if (err == EFBIG) {
		out->verdict = SCAN_SKIPPED_POLICY;
		snprintf(out->why, sizeof(out->why), "grew larger than max_bytes (%llu) while read",
			 (unsigned long long)s->max_bytes);
		goto out;
	}
	if (err) {
		errno = err;
		snprintf(out->why, sizeof(out->why), "read error: %m");
		goto out;
	}
	if (hit) {
		out->verdict = SCAN_INFECTED;
		snprintf(out->signature, sizeof(out->signature), "%s", hit->name);
		out->severity = hit->sev;
		close(fd);
		fd = -1;
		act(s, vm, dfd, name, out);
		goto out;
	}
	out->verdict = SCAN_CLEAN;
	/* Cache only what was read: a file changed under us is scanned again. */
	if (fstat(fd, &st) == 0) {
		struct cache_key after = key_of(&st);

		if (!memcmp(&key, &after, sizeof(key)))
			cache_put(&s->cache, &key);
	}
out:
	if (fd >= 0)
		close(fd);
	if (own >= 0)
		close(own);
	out->done_ns = now_ns();
}

int scanner_scan_file(struct scanner *s, const char *vm, const char *path,
		      struct scan_result *out)
{
	const char *slash;
	char *dir;

	memset(out, 0, sizeof(*out));
	if (!s || !valid_vm(vm) || !path || !*path) {
		errno = EINVAL;
		return -1;
	}
	/* The directory part is the caller's (the sandbox and the VM's
	 * directory in it); the guest names only the last component. */
	slash = strrchr(path, '/');
	dir = !slash ? xstrdup(".")
		     : xasprintf("%.*s", slash == path ? 1 : (int)(slash - path), path);
	scan_at(s, vm, -1, dir, slash && slash[1] ? slash + 1 : slash ? "." : path, path, out);
	free(dir);
	return 0;
}

/* ---- full scan ---------------------------------------------------------- */

struct walk {
	struct scanner *s;
	const char *vm;
	bool have_q;
	dev_t qdev;
	ino_t qino;
	scan_report_fn *fn;
	void *arg;
	struct scan_summary *sum;
};

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void report_dir_error(struct walk *w, const char *dir, const char *why)
{
	struct scan_result r = { .verdict = SCAN_ERROR, .time = (int64_t)time(NULL) };

	snprintf(r.why, sizeof(r.why), "%s", why);
	w->sum->errors++;
	if (w->fn)
		w->fn(w->arg, &r, dir);
}

static void report_file(struct walk *w, const struct scan_result *r, const char *path)
{
	w->sum->files++;
	switch (r->verdict) {
	case SCAN_CLEAN: w->sum->clean++; break;
	case SCAN_INFECTED: w->sum->infected++; break;
	case SCAN_SKIPPED_POLICY:
	case SCAN_SKIPPED_CACHED: w->sum->skipped++; break;
	case SCAN_ERROR: w->sum->errors++; break;
	}
	if (w->fn)
		w->fn(w->arg, r, path);
}

static int walk_dir(struct walk *w, int dfd, const char *dir, int depth);

/* Visits subdirectory name of dfd (path in reports): opened by fd without
 * following a link, whatever fstatat said a moment ago, and skipped when it
 * is the quarantine. */
static void walk_subdir(struct walk *w, int dfd, const char *name, const char *path,
			int depth)
{
	struct stat st;
	char why[300];
	int fd;

	if (depth > SCAN_TREE_MAX_DEPTH) {
		report_dir_error(w, path, "directory nesting too deep");
		return;
	}
	fd = open_dir_at(dfd, name);
	if (fd >= 0 && fstat(fd, &st) == 0 && w->have_q && st.st_dev == w->qdev &&
	    st.st_ino == w->qino) {
		close(fd);
		return;
	}
	if (fd < 0 || walk_dir(w, fd, path, depth) < 0) {
		snprintf(why, sizeof(why), "cannot read directory: %m");
		report_dir_error(w, path, why);
	}
}

/* Walks the directory open at dfd (taken over and closed), reported as dir.
 * Reads its names first, then visits them in order, so that files moved
 * away by the actions do not disturb the listing.  Every entry is reached
 * relative to dfd: at most one fd per level of nesting is open. */
static int walk_dir(struct walk *w, int dfd, const char *dir, int depth)
{
	struct strv names = { 0 };
	struct dirent *e;
	DIR *dp = fdopendir(dfd);

	if (!dp) {
		int err = errno;

		close(dfd);
		errno = err;
		return -1;
	}
	while ((e = readdir(dp)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			strv_push(&names, e->d_name);
	if (names.n)
		qsort(names.v, names.n, sizeof(*names.v), cmp_str);
	for (size_t i = 0; i < names.n; i++) {
		char *path = xasprintf("%s/%s", dir, names.v[i]);
		struct scan_result r;
		struct stat st;

		/* Only a hint of what to try: the object itself is checked on its fd. */
		if (fstatat(dfd, names.v[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno != ENOENT) { /* gone since the listing: nothing to scan */
				char why[300];

				snprintf(why, sizeof(why), "%m");
				report_dir_error(w, path, why);
			}
		} else if (S_ISDIR(st.st_mode)) {
			walk_subdir(w, dfd, names.v[i], path, depth + 1);
		} else if (S_ISREG(st.st_mode)) {
			scan_at(w->s, w->vm, dfd, NULL, names.v[i], path, &r);
			report_file(w, &r, path);
		}
		free(path);
	}
	closedir(dp);
	strv_free(&names);
	return 0;
}

int scanner_scan_tree(struct scanner *s, const char *vm, const char *dir, bool full,
		      scan_report_fn *fn, void *arg, struct scan_summary *sum)
{
	struct scan_summary dummy;
	struct walk w = { .s = s, .vm = vm, .fn = fn, .arg = arg, .sum = sum ? sum : &dummy };
	struct stat st;
	int fd;

	memset(w.sum, 0, sizeof(*w.sum));
	if (!s || !valid_vm(vm) || !dir) {
		errno = EINVAL;
		return -1;
	}
	if (full)
		scanner_cache_clear(s);
	if (s->qdir && stat(s->qdir, &st) == 0) {
		w.have_q = true;
		w.qdev = st.st_dev;
		w.qino = st.st_ino;
	}
	/* The root is the caller's path; everything below it is the guest's
	 * and is reached only through directory fds. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -1 : walk_dir(&w, fd, dir, 0);
}

/* ---- detection events --------------------------------------------------- */

int detection_from_result(const struct scan_result *r, const char *vm, const char *path,
			  struct detection *ev)
{
	if (r->verdict != SCAN_INFECTED) {
		errno = EINVAL;
		return -1;
	}
	*ev = (struct detection){ .vm = vm, .path = path, .signature = r->signature,
				  .severity = r->severity, .time = r->time };
	return 0;
}

int detection_json(const struct scan_result *r, const char *vm, const char *path,
		   const struct detection_extra *x, char *buf, size_t len)
{
	char stamp[32] = "";
	time_t t = (time_t)r->time;
	struct out o;
	struct tm tm;
	size_t n = 0;
	char *mem = NULL;
	FILE *f;

	if (gmtime_r(&t, &tm))
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	/* Through the one JSON printer, so escaping is the project's. */
	f = open_memstream(&mem, &n);
	if (!f)
		abort();
	out_init(&o, f, true);
	out_obj_start(&o, NULL);
	if (r->verdict == SCAN_INFECTED) {
		out_str(&o, "event", "detection");
		out_str(&o, "vm", vm);
		out_str(&o, "path", path);
		out_str(&o, "signature", r->signature);
		out_str(&o, "severity", scan_severity_name(r->severity));
		out_str(&o, "action", scan_action_name(r->action));
		out_bool(&o, "action_done", r->action_done);
		if (r->moved_to[0])
			out_str(&o, "moved_to", r->moved_to);
	} else {
		out_str(&o, "event", "scan");
		out_str(&o, "vm", vm);
		out_str(&o, "path", path);
		out_str(&o, "verdict", scan_verdict_name(r->verdict));
	}
	if (r->why[0])
		out_str(&o, "why", r->why);
	if (x && x->source)
		out_str(&o, "source", x->source);
	if (x && x->tag)
		out_str(&o, "tag", x->tag);
	if (x && x->tag_error)
		out_str(&o, "tag_error", x->tag_error);
	if (x && x->revision)
		out_u64(&o, "revision", x->revision);
	out_str(&o, "time", stamp);
	out_u64(&o, "epoch", r->time < 0 ? 0 : (uint64_t)r->time);
	/* The hypervisor-side stages of a detection, for latency breakdowns. */
	if (x && x->event_ns)
		out_u64(&o, "event_ns", x->event_ns);
	if (x && r->done_ns)
		out_u64(&o, "scanned_ns", r->done_ns);
	if (x && x->tagged_ns)
		out_u64(&o, "tagged_ns", x->tagged_ns);
	out_obj_end(&o);
	out_finish(&o);
	fclose(f);
	if (n >= len || n > INT_MAX) {
		if (len)
			buf[0] = '\0';
		free(mem);
		errno = ENOSPC;
		return -1;
	}
	memcpy(buf, mem, n + 1);
	free(mem);
	return (int)n;
}

/* ---- thin-driver events ------------------------------------------------- */

/* A strict reader of the one JSON shape the channel carries: an object of
 * string members.  Nothing more of JSON is needed, and accepting less
 * keeps every odd line a clear rejection. */
struct jreader {
	const unsigned char *p, *end;
	char *why;
	size_t whylen;
};

static int jfail(struct jreader *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int jfail(struct jreader *j, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->why, j->whylen, fmt, ap);
	va_end(ap);
	return -1;
}

static void jblanks(struct jreader *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r'))
		j->p++;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	/* No overlong forms, no surrogates, nothing above U+10FFFF. */
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
	*out = 0;
	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		int v = hexval(p[i]);

		if (v < 0)
			return -1;
		*out = *out << 4 | (unsigned)v;
	}
	return 0;
}

static size_t utf8_put(unsigned cp, unsigned char *o)
{
	if (cp < 0x80) {
		o[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (unsigned char)(0xc0 | cp >> 6);
		o[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (unsigned char)(0xe0 | cp >> 12);
		o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (unsigned char)(0xf0 | cp >> 18);
	o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Reads a JSON string at j->p into out (cap bytes, NUL-terminated; the
 * decoded length in *len).  what names it in messages. */
static int jstring(struct jreader *j, const char *what, char *out, size_t cap, size_t *len)
{
	unsigned char *o = (unsigned char *)out, u8[4];
	size_t n = 0;

	if (j->p >= j->end || *j->p != '"')
		return jfail(j, "%s must be a string", what);
	for (j->p++;;) {
		size_t k;
		unsigned cp;

		if (j->p >= j->end)
			return jfail(j, "%s: missing closing '\"'", what);
		if (*j->p == '"') {
			j->p++;
			break;
		}
		if (*j->p < 0x20)
			return jfail(j, "%s: raw control character 0x%02x (escape it)", what, *j->p);
		if (*j->p == '\\') {
			if (j->end - j->p < 2)
				return jfail(j, "%s: missing closing '\"'", what);
			switch (j->p[1]) {
			case '"': case '\\': case '/': u8[0] = j->p[1]; k = 1; break;
			case 'b': u8[0] = '\b'; k = 1; break;
			case 'f': u8[0] = '\f'; k = 1; break;
			case 'n': u8[0] = '\n'; k = 1; break;
			case 'r': u8[0] = '\r'; k = 1; break;
			case 't': u8[0] = '\t'; k = 1; break;
			case 'u':
				if (hex4(j->p + 2, j->end, &cp) < 0)
					return jfail(j, "%s: bad \\u escape (four hex digits)", what);
				j->p += 4;
				if (cp >= 0xdc00 && cp <= 0xdfff)
					return jfail(j, "%s: lone low surrogate in \\u escape", what);
				if (cp >= 0xd800 && cp <= 0xdbff) {
					unsigned lo;

					if (j->end - j->p < 4 || j->p[2] != '\\' || j->p[3] != 'u' ||
					    hex4(j->p + 4, j->end, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
						return jfail(j, "%s: high surrogate without its low half", what);
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					j->p += 6;
				}
				if (cp == 0)
					return jfail(j, "%s contains a NUL character", what);
				k = utf8_put(cp, u8);
				break;
			default:
				return jfail(j, "%s: unknown escape '\\%c'", what,
					     isprint(j->p[1]) ? j->p[1] : '?');
			}
			j->p += 2;
		} else {
			k = utf8_seq(j->p, (size_t)(j->end - j->p));
			if (!k)
				return jfail(j, "%s is not valid UTF-8", what);
			memcpy(u8, j->p, k);
			j->p += k;
		}
		if (n + k >= cap)
			return jfail(j, "%s is longer than %zu bytes", what, cap - 1);
		memcpy(o + n, u8, k);
		n += k;
	}
	o[n] = '\0';
	*len = n;
	return 0;
}

/* A VM or file name that stays inside the sandbox. */
static int check_name(struct jreader *j, const char *what, const char *s, size_t len)
{
	if (len == 0)
		return jfail(j, "empty %s name", what);
	if (strlen(s) != len)
		return jfail(j, "%s name contains a NUL character", what);
	if (strchr(s, '/'))
		return jfail(j, "%s name '%.80s' contains '/' (names only: no paths)", what, s);
	if (!strcmp(s, ".") || !strcmp(s, ".."))
		return jfail(j, "%s name '%s' would leave the sandbox", what, s);
	return 0;
}

int scan_event_parse(const char *line, size_t len, struct scan_event *ev, char *why,
		     size_t whylen)
{
	struct jreader j = { (const unsigned char *)line, (const unsigned char *)line + len,
			     why, whylen };
	bool have_vm = false, have_file = false;
	char key[32], val[SCAN_EVENT_LINE_MAX + 1];
	size_t klen, vlen;

	memset(ev, 0, sizeof(*ev));
	why[0] = '\0';
	if (len > SCAN_EVENT_LINE_MAX)
		return jfail(&j, "line longer than %d bytes", SCAN_EVENT_LINE_MAX);
	jblanks(&j);
	if (j.p >= j.end)
		return jfail(&j, "empty line");
	if (*j.p != '{')
		return jfail(&j, "not a JSON object (expected '{', got '%c')",
			     isprint(*j.p) ? *j.p : '?');
	j.p++;
	jblanks(&j);
	if (j.p < j.end && *j.p == '}') {
		j.p++;
	} else {
		for (;;) {
			char *dst;
			bool *seen;

			jblanks(&j);
			if (j.p >= j.end)
				return jfail(&j, "the line ends inside the object");
			if (*j.p != '"')
				return jfail(&j, "expected a member name in quotes at byte %zu",
					     (size_t)(j.p - (const unsigned char *)line) + 1);
			if (jstring(&j, "member name", key, sizeof(key), &klen) < 0)
				return -1;
			if (!strcmp(key, "vm")) {
				dst = ev->vm;
				seen = &have_vm;
			} else if (!strcmp(key, "file")) {
				dst = ev->file;
				seen = &have_file;
			} else {
				return jfail(&j, "unknown member \"%s\" (expected \"vm\" and \"file\")", key);
			}
			if (*seen)
				return jfail(&j, "duplicate member \"%s\"", key);
			*seen = true;
			jblanks(&j);
			if (j.p >= j.end || *j.p != ':')
				return jfail(&j, "expected ':' after \"%s\"", key);
			j.p++;
			jblanks(&j);
			if (jstring(&j, key, val, sizeof(val), &vlen) < 0)
				return -1;
			if (vlen > SCAN_EVENT_NAME_MAX)
				return jfail(&j, "%s name longer than %d bytes", key, SCAN_EVENT_NAME_MAX);
			if (check_name(&j, key, val, vlen) < 0)
				return -1;
			memcpy(dst, val, vlen + 1);
			jblanks(&j);
			if (j.p < j.end && *j.p == ',') {
				j.p++;
				continue;
			}
			if (j.p < j.end && *j.p == '}') {
				j.p++;
				break;
			}
			return jfail(&j, "expected ',' or '}' after \"%s\"", key);
		}
	}
	jblanks(&j);
	if (j.p < j.end)
		return jfail(&j, "unexpected text after the object at byte %zu",
			     (size_t)(j.p - (const unsigned char *)line) + 1);
	if (!have_vm || !have_file)
		return jfail(&j, "missing member \"%s\"", !have_vm ? "vm" : "file");
	return 0;
}
