/* The simulated agentless anti-malware appliance's core: a signature
 * database, a scanner with a scan cache and a per-host policy, the file
 * events it receives from a guest's thin driver (one JSON line each), and
 * the detection events it emits.  No event loop, no inotify, no store:
 * callers hand it file paths from a VM's sandbox directory. */
#ifndef DFW_SCANNER_H
#define DFW_SCANNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define SIG_NAME_MAX 64        /* bytes of a signature name */
#define SIG_PATTERN_MAX 1024   /* bytes of a decoded pattern */
#define SCAN_CHUNK_SIZE 65536  /* files are read in chunks of this size */
#define SCAN_CACHE_MAX 4096    /* clean-file cache entries before it is cleared */
#define SCAN_TREE_MAX_DEPTH 64 /* deeper directories are reported as errors */
#define SCAN_EICAR_NAME "EICAR-Test-File"

enum scan_severity { SCAN_SEV_LOW, SCAN_SEV_MEDIUM, SCAN_SEV_HIGH };
enum scan_action { SCAN_QUARANTINE_FILE, SCAN_DELETE_FILE };
enum scan_verdict {
	SCAN_CLEAN,
	SCAN_INFECTED,
	SCAN_SKIPPED_POLICY,
	SCAN_SKIPPED_CACHED,
	SCAN_ERROR,
};

/* "high", "medium", "low"; "clean", "infected", "skipped-policy",
 * "skipped-cached", "error"; "quarantine", "delete". */
const char *scan_severity_name(enum scan_severity sev);
/* Parses "high", "medium" or "low"; -1 with the reason (and a "did you
 * mean") in why otherwise. */
int scan_severity_parse(const char *s, enum scan_severity *out, char *why, size_t len);
const char *scan_verdict_name(enum scan_verdict v);
const char *scan_action_name(enum scan_action a);

/* ---- signature database ------------------------------------------------- */

struct sigdb;

/* Loads the signature file at path (format: configs/signatures.txt).  The
 * EICAR test signature is always present; a line "EICAR-Test-File SEVERITY"
 * (no pattern) only changes its severity (default high).  Every error is
 * added to d as "path:line: reason" and NULL is returned when there is any;
 * an unreadable file gives one "path: reason". */
struct sigdb *sigdb_load(const char *path, struct diag *d);
/* The built-in EICAR signature alone, at severity high. */
struct sigdb *sigdb_builtin(void);
void sigdb_free(struct sigdb *db); /* accepts NULL */
size_t sigdb_count(const struct sigdb *db); /* including EICAR */
/* A signature of severity sev, to write a test file with: EICAR when it has
 * that severity, else the first of the file's.  The name and pattern are
 * borrowed from db.  Returns 0, or -1 when db has none of that severity. */
int sigdb_pick(const struct sigdb *db, enum scan_severity sev, const char **name,
	       const unsigned char **pat, size_t *len);

/* ---- scanner ------------------------------------------------------------ */

struct scan_policy {
	uint64_t max_bytes;               /* larger files are skipped; 0: no limit */
	const char *const *skip_suffixes; /* e.g. ".iso"; matched without case */
	size_t nskip;
	enum scan_action action;          /* for infected files */
	const char *quarantine_dir;       /* for SCAN_QUARANTINE_FILE */
};

struct scan_result {
	enum scan_verdict verdict;
	char signature[SIG_NAME_MAX + 1]; /* infected: the signature found */
	enum scan_severity severity;      /* infected: its severity */
	char why[512];           /* skips and errors; a failed action; else "" */
	enum scan_action action; /* infected: the policy's action */
	bool action_done;        /* infected: the file was moved or deleted */
	char moved_to[4096];     /* quarantined: the file's new path; else "" */
	uint64_t bytes_scanned;
	int64_t time;            /* when the verdict was made, epoch seconds */
	uint64_t done_ns;        /* when the verdict and its action were done, CLOCK_MONOTONIC */
};

struct scan_summary {
	size_t files;    /* regular files visited */
	size_t clean;    /* scanned clean */
	size_t infected; /* whether or not the action succeeded */
	size_t skipped;  /* by policy or by the cache */
	size_t errors;   /* files that failed and directories that could not be read */
};

struct scanner;

/* Borrows db, which must outlive the scanner; copies the policy and its
 * strings.  Returns NULL with errno EINVAL when the action is quarantine
 * and quarantine_dir is empty. */
struct scanner *scanner_new(const struct sigdb *db, const struct scan_policy *pol);
void scanner_free(struct scanner *s); /* accepts NULL */
/* Replaces the policy (copied) of a running scanner, as scanner_new checks
 * it: -1 with errno EINVAL changes nothing.  The scan cache is kept: it
 * holds only files that were read whole, whatever the policy. */
int scanner_set_policy(struct scanner *s, const struct scan_policy *pol);

/* Scans one file of VM vm's sandbox.  Returns 0 with *out filled whatever
 * happened to the file (I/O failures are SCAN_ERROR verdicts), and -1 with
 * errno EINVAL only for bad arguments (vm empty, ".", ".." or with a '/').
 * The directory part of path is the caller's and is opened as given; the
 * last component (the guest's) is opened relative to it and never followed
 * when it is a symbolic link, and the action goes through the same
 * directory fd.  An infected file gets the policy's action: moved to
 * quarantine_dir/<vm>/<basename>.<epoch>[.N] (the basename cut to fit
 * NAME_MAX; the directories are created, the last two never followed as
 * links) or deleted; a clean one enters the
 * scan cache, keyed by (device, inode, size, mtime, ctime), and is not
 * scanned again (SCAN_SKIPPED_CACHED) until it changes or the cache is
 * cleared. */
int scanner_scan_file(struct scanner *s, const char *vm, const char *path,
		      struct scan_result *out);
/* Forgets every cached verdict, so that the next scans read every file. */
void scanner_cache_clear(struct scanner *s);
size_t scanner_cache_size(const struct scanner *s);

typedef void scan_report_fn(void *arg, const struct scan_result *r, const char *path);

/* Scans every regular file under dir, in name order, skipping the
 * quarantine directory; full clears the cache first.  fn (may be NULL) sees
 * each result, and also a SCAN_ERROR result for a directory that cannot be
 * read.  dir is opened as given; everything below it is reached only
 * through directory fds, never by path, and symbolic links are neither
 * entered nor read, even when a guest swaps a directory for one during the
 * walk.  Paths in results are dir/NAME/... as listed.  Returns 0, or -1
 * with errno when dir itself cannot be read (or vm is invalid); sum (may be
 * NULL) is zeroed and filled either way. */
int scanner_scan_tree(struct scanner *s, const char *vm, const char *dir, bool full,
		      scan_report_fn *fn, void *arg, struct scan_summary *sum);

/* ---- detection events --------------------------------------------------- */

/* A detection as the manager sees it; the strings are borrowed. */
struct detection {
	const char *vm, *path, *signature;
	enum scan_severity severity;
	int64_t time; /* epoch seconds */
};

/* Fills ev from an infected result; -1 with errno EINVAL for other verdicts. */
int detection_from_result(const struct scan_result *r, const char *vm, const char *path,
			  struct detection *ev);

/* What the caller adds to a verdict's audit record: where the event came
 * from, the tag written for a detection, and the hypervisor-side stage
 * times (CLOCK_MONOTONIC ns) that break a detection's latency down.  Any
 * member may be NULL or 0 (then left out). */
struct detection_extra {
	const char *source;   /* "watch" (inotify), "event" (the event channel), "full-scan" */
	const char *tag;      /* the tag the detection put on the VM */
	const char *tag_error; /* or why it could not */
	uint64_t revision;    /* the store revision of the tag */
	uint64_t event_ns;    /* the file event was read */
	uint64_t tagged_ns;   /* the tag's store commit returned */
};

/* Writes the result as one JSON line (with its '\n') for the audit log:
 * {"event":"detection","vm":…,"path":…,"signature":…,"severity":…,
 *  "action":…,"action_done":…,"moved_to":…,"time":"…Z","epoch":…}, and for
 * other verdicts {"event":"scan","vm":…,"path":…,"verdict":…,"why":…,
 * "time":…,"epoch":…}.  With x: "source", "tag" (or "tag_error"),
 * "revision", and "event_ns", "scanned_ns" (r->done_ns), "tagged_ns".
 * Returns the length written, or -1 with errno ENOSPC when it does not fit
 * in len (buf is then ""). */
int detection_json(const struct scan_result *r, const char *vm, const char *path,
		   const struct detection_extra *x, char *buf, size_t len);

/* ---- thin-driver events --------------------------------------------------- */

/* A file event as a guest's thin driver would send it: one line of JSON,
 * {"vm":"NAME","file":"NAME"}, the file being a name in the top directory
 * of the VM's sandbox. */
#define SCAN_EVENT_LINE_MAX 4096 /* bytes of a line, without its '\n' */
#define SCAN_EVENT_NAME_MAX 255  /* bytes of a VM or file name */

struct scan_event {
	char vm[SCAN_EVENT_NAME_MAX + 1];
	char file[SCAN_EVENT_NAME_MAX + 1];
};

/* Parses one line (len bytes, no '\n') strictly: one JSON object with
 * exactly the string members "vm" and "file" (standard escapes, valid
 * UTF-8, nothing after it but blanks).  The names must be 1 to
 * SCAN_EVENT_NAME_MAX bytes with no '/' and no NUL, and not "." or "..",
 * so that they cannot leave the sandbox.  Returns 0, or -1 with the reason
 * in why (e.g. "missing member \"file\"", "file name contains '/'"). */
int scan_event_parse(const char *line, size_t len, struct scan_event *ev, char *why,
		     size_t whylen);

#endif
