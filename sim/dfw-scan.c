/* dfw-scan: the host's simulated agentless anti-malware appliance.
 *
 * Each VM has a sandbox directory, SANDBOX/<vm>/, standing in for its disk.
 * File events come from inotify on the top of each sandbox and, standing in
 * for the guest's thin driver, as JSON lines on a unix socket (--events).
 * An event's file is scanned (sim/scanner.c).  On a detection the tag that
 * the policy's [detection] section maps its severity to is written to the
 * store at once (no heartbeat, no polling), and the agents isolate the VM.
 * Every detection, tag and rejected event goes to the audit log as a JSON
 * line, and the guest gets a plain-text notice in its sandbox (nothing runs
 * inside the guest to show one).
 *
 * The settings come from the policy in the store, parsed at start and again
 * only when the store's "policy" key changes (its watch descriptor wakes
 * the loop), never on the detection path.
 *
 * Exit: 0 ok (a full scan: clean), 1 bad usage or input, 3 the store is
 * unreachable or a write to it failed, 4 a full scan found threats or could
 * not read everything. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/out.h"
#include "common/util.h"
#include "sim/scanner.h"
#include "tagger/config.h"
#include "tagger/store.h"
#include "tagger/tags.h"

#define NOTICE_NAME "DFW-NOTICE.txt"
#define QUARANTINE_NAME ".quarantine"
#define MAX_CLIENTS 16        /* event-channel connections at once */
#define IDLE_EVICT_MS 1000    /* when all are taken, one idle this long makes room */
#define EXCERPT_MAX 120       /* bytes of a rejected line quoted back */
#define DEFAULT_MAX_BYTES (64ull << 20)

enum { EXIT_OK = 0, EXIT_INPUT = 1, EXIT_STORE = 3, EXIT_THREATS = 4 };

/* The scanner's severities are the policy's, index for index. */
_Static_assert(SCAN_SEV_LOW == (int)SEV_LOW && SCAN_SEV_MEDIUM == (int)SEV_MEDIUM &&
		       SCAN_SEV_HIGH == (int)SEV_HIGH && SEV_COUNT == 3,
	       "scanner and policy severities differ");

static const char usage[] =
	"usage: dfw-scan --store URI --sandbox DIR [--host NAME] [--signatures FILE]\n"
	"                [--audit FILE] [--events SOCKET] [--max-bytes N]\n"
	"                [--file-action quarantine|delete]\n"
	"       dfw-scan --store URI --sandbox DIR --full-scan VM [--auto-release yes|no] [...]\n"
	"  --sandbox      DIR/<vm>/ is each VM's sandbox; files written there are scanned\n"
	"  --host         this hypervisor: events for VMs of other hosts are rejected\n"
	"  --signatures   signature file (configs/signatures.txt); EICAR is built in\n"
	"  --audit        append JSON lines here (default: stdout)\n"
	"  --events       listen on this unix socket for file events, one JSON line\n"
	"                 each: {\"vm\":\"desktop1\",\"file\":\"invoice.com\"}; one JSON\n"
	"                 line answers each\n"
	"  --max-bytes    override the policy's max_file_bytes (larger files are skipped)\n"
	"  --file-action  override the policy's file_action for infected files\n"
	"  --full-scan    scan every file of VM's sandbox once (cache cleared) and exit:\n"
	"                 0 clean, 4 threats found or files unreadable; when clean and the\n"
	"                 policy's auto_release is yes, remove the policy's threat tags\n"
	"  --auto-release with --full-scan: override the policy's auto_release\n"
	"Settings come from the [detection] section of the policy in the store and\n"
	"follow it when it changes; the options above override it.\n";

/* What the policy's [detection] section says, after the command line's
 * overrides.  Indexed by severity. */
struct settings {
	char *tag[SEV_COUNT];
	bool auto_release;
	enum scan_action action;
	uint64_t max_bytes;
};

struct overrides {
	bool max_set;
	uint64_t max_bytes;
	int action;  /* enum scan_action, or -1: the policy's */
	int release; /* 0 or 1, or -1: the policy's auto_release */
};

/* One event-channel connection and its partial line. */
struct client {
	int fd;                                  /* -1: free slot */
	uint64_t active_ns;                      /* connected or last sent a byte */
	char buf[SCAN_EVENT_LINE_MAX + 1];       /* a line and its '\n' */
	size_t len;
	bool discarding;                         /* the rest of an over-long line */
};

struct scand {
	const char *sandbox, *host;
	char qdir[PATH_MAX];
	struct store *store;
	struct scanner *scanner;
	size_t nsigs;
	FILE *audit;
	struct dfw_policy *pol;   /* the last good policy of the store, or NULL */
	uint64_t seen_rev;        /* store changes up to here were looked at */
	struct settings set;
	struct overrides ov;
	bool oneshot;             /* --full-scan: settings are not news */
	int ino;
	struct { int wd; char vm[NAME_MAX + 1]; } *watches;
	size_t nwatches, capwatches;
	int lfd;
	struct client clients[MAX_CLIENTS];
	size_t verdicts[SCAN_ERROR + 1], rejected;
};

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void logmsg(const char *fmt, ...)
{
	char *msg;
	va_list ap;

	va_start(ap, fmt);
	msg = xvasprintf(fmt, ap);
	va_end(ap);
	fputs("dfw-scan: ", stderr);
	fput_shown(stderr, msg);
	fputc('\n', stderr);
	free(msg);
}

/* ---- the audit log -------------------------------------------------------- */

/* Starts a record {"when":…,"event":event,"by":"dfw-scan"; the caller adds
 * members and calls audit_end. */
static void audit_begin(struct scand *d, struct out *o, const char *event)
{
	char when[32];
	time_t now = time(NULL);
	struct tm tm;

	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	out_init(o, d->audit, true);
	out_obj_start(o, NULL);
	out_str(o, "when", when);
	out_str(o, "event", event);
	out_str(o, "by", "dfw-scan");
}

static void audit_end(struct scand *d, struct out *o)
{
	out_obj_end(o);
	out_finish(o);
	fflush(d->audit);
}

static void audit_tag(struct scand *d, const char *event, const char *vm, const char *tag,
		      uint64_t rev, const char *error)
{
	struct out o;

	audit_begin(d, &o, event);
	out_str(&o, "vm", vm);
	out_str(&o, "tag", tag);
	if (error)
		out_str(&o, "error", error);
	else
		out_u64(&o, "revision", rev);
	audit_end(d, &o);
}

/* The path is the guest's to make long (a full scan goes 64 directories
 * deep, 255 bytes a name): the line grows to fit, never left out. */
static void audit_result(struct scand *d, const struct scan_result *r, const char *vm,
			 const char *path, const struct detection_extra *x)
{
	size_t cap = 8192;
	char *line = NULL;

	for (;;) {
		line = xrealloc(line, cap);
		if (detection_json(r, vm, path, x, line, cap) >= 0) {
			fputs(line, d->audit);
			break;
		}
		if (errno != ENOSPC || cap >= (1u << 20)) {
			logmsg("%s: no audit record for %s: %s", vm, path, strerror(errno));
			break;
		}
		cap *= 2;
	}
	free(line);
	fflush(d->audit);
}

/* ---- the policy ------------------------------------------------------------ */

static void settings_apply(struct scand *d, const struct dfw_policy *p)
{
	struct scan_policy sp = { .quarantine_dir = d->qdir };

	for (int sev = 0; sev < SEV_COUNT; sev++) {
		free(d->set.tag[sev]);
		d->set.tag[sev] = p ? xstrdup(p->detection.tag[sev])
				    : xasprintf("threat.%s", severity_name(sev));
	}
	d->set.auto_release = p ? p->detection.auto_release : true;
	d->set.action = p && p->detection.delete_files ? SCAN_DELETE_FILE : SCAN_QUARANTINE_FILE;
	d->set.max_bytes = p ? p->detection.max_file_bytes : DEFAULT_MAX_BYTES;
	if (d->ov.action >= 0)
		d->set.action = (enum scan_action)d->ov.action;
	if (d->ov.max_set)
		d->set.max_bytes = d->ov.max_bytes;
	if (d->ov.release >= 0)
		d->set.auto_release = d->ov.release;
	sp.max_bytes = d->set.max_bytes;
	sp.action = d->set.action;
	scanner_set_policy(d->scanner, &sp); /* cannot fail: qdir is set */
}

static void audit_policy(struct scand *d, uint64_t rev, const char *state, double ms)
{
	struct out o;

	if (d->oneshot)
		return;
	audit_begin(d, &o, "policy");
	out_u64(&o, "revision", rev);
	out_str(&o, "state", state);
	out_str(&o, "tag_high", d->set.tag[SEV_HIGH]);
	out_str(&o, "tag_medium", d->set.tag[SEV_MEDIUM]);
	out_str(&o, "tag_low", d->set.tag[SEV_LOW]);
	out_bool(&o, "auto_release", d->set.auto_release);
	out_str(&o, "file_action", scan_action_name(d->set.action));
	out_u64(&o, "max_file_bytes", d->set.max_bytes);
	out_strf(&o, "parse_ms", "%.1f", ms);
	audit_end(d, &o);
	logmsg("policy at revision %llu (%s, parsed in %.1f ms): tags high=%s medium=%s low=%s, "
	       "auto_release %s, file_action %s, max_file_bytes %llu",
	       (unsigned long long)rev, state, ms, d->set.tag[SEV_HIGH], d->set.tag[SEV_MEDIUM],
	       d->set.tag[SEV_LOW], d->set.auto_release ? "yes" : "no",
	       scan_action_name(d->set.action), (unsigned long long)d->set.max_bytes);
}

/* (Re)reads the store's policy.  A policy that does not parse leaves the
 * last good one in force, as dfwd does.  Returns 0, or -1 when the store
 * cannot be read (reason logged). */
static int policy_reload(struct scand *d)
{
	char *text = NULL, *file = NULL, err[512];
	struct diag dg = { 0 };
	struct dfw_policy *p;
	uint64_t rev = 0, t0;
	int r, ret = -1;

	/* The revision first: a change after it is seen by the next check. */
	if (store_rev(d->store, &rev, err, sizeof(err)) < 0 ||
	    (r = store_get(d->store, "policy", &text, err, sizeof(err))) < 0) {
		logmsg("reading the policy: %s", err);
		goto out;
	}
	d->seen_rev = rev;
	ret = 0;
	if (r == 1) {
		settings_apply(d, NULL);
		audit_policy(d, rev, "none in the store yet: defaults", 0);
		goto out;
	}
	store_get(d->store, "policy-file", &file, err, sizeof(err));
	t0 = now_ns();
	p = policy_parse(text, file ? file : "store:policy", &dg);
	if (!p) {
		struct out o;

		logmsg("the store's policy (revision %llu) does not parse; the last good settings stay: %s",
		       (unsigned long long)rev, dg.n ? dg.msgs[0] : "?");
		audit_begin(d, &o, "policy-rejected");
		out_u64(&o, "revision", rev);
		out_str(&o, "error", dg.n ? dg.msgs[0] : "?");
		audit_end(d, &o);
		goto out;
	}
	policy_free(d->pol);
	d->pol = p;
	settings_apply(d, p);
	audit_policy(d, rev, "loaded", (double)(now_ns() - t0) / 1e6);
out:
	diag_free(&dg);
	free(text);
	free(file);
	return ret;
}

static int on_store_change(void *arg, uint64_t rev, const char *key, const char *value)
{
	bool *policy_changed = arg;

	(void)rev;
	(void)value;
	if (!strcmp(key, "policy"))
		*policy_changed = true;
	return 0;
}

/* The store changed (or may have): reparse the policy only when its key
 * was written since we last looked.  Tag writes, ours included, cost one
 * read of the change log here. */
static void store_check(struct scand *d)
{
	bool changed = false;
	uint64_t now = d->seen_rev;
	char err[512];
	int r;

	store_watch_ack(d->store);
	r = store_changes(d->store, d->seen_rev, on_store_change, &changed, &now, err, sizeof(err));
	if (r == -1) {
		logmsg("reading store changes: %s", err);
		return;
	}
	if (r == -2 || changed)
		policy_reload(d);
	else
		d->seen_rev = now;
}

/* The threat tags of the policy, each once, that it declares (an undeclared
 * default cannot be on any VM). */
static size_t threat_tags(const struct scand *d, char *out[SEV_COUNT])
{
	size_t n = 0;

	for (int sev = SEV_COUNT - 1; sev >= 0; sev--) {
		const char *t = d->set.tag[sev];
		bool dup = false;

		if (!d->pol || !policy_find_tag(d->pol, t))
			continue;
		for (size_t i = 0; i < n; i++)
			dup |= str_eq_nocase(out[i], t);
		if (!dup)
			out[n++] = d->set.tag[sev];
	}
	return n;
}

/* ---- detections ---------------------------------------------------------- */

/* A plain-text notice in the guest's sandbox: nothing runs inside the
 * guest to show one (seed 000's notifier).  The guest owns that directory:
 * a symbolic link, a hard link, a FIFO or a device node in the notice's
 * place gets no notice, rather than redirecting a root write, opening a
 * device or blocking the scanner. */
static void notice(struct scand *d, const char *vm, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void notice(struct scand *d, const char *vm, const char *fmt, ...)
{
	char npath[PATH_MAX];
	struct stat st;
	va_list ap;
	FILE *f;
	int fd;

	snprintf(npath, sizeof(npath), "%s/%s/%s", d->sandbox, vm, NOTICE_NAME);
	fd = open_regular(AT_FDCWD, npath, O_WRONLY | O_APPEND | O_NONBLOCK | O_NOFOLLOW, &st);
	if (fd < 0 && errno == ENOENT && !st.st_mode) /* a new file, or nothing */
		fd = open(npath, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK |
			  O_CLOEXEC, 0644);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
	    !(f = fdopen(fd, "a"))) {
		logmsg("%s: no notice written to %s: %s", vm, npath,
		       fd < 0 && (!st.st_mode || S_ISREG(st.st_mode)) ? strerror(errno)
								: "not a regular file of one link");
		if (fd >= 0)
			close(fd);
		return;
	}
	fprintf(f, "Security notice for %s\n", vm);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputs("\n\n", f);
	fclose(f);
}

/* A detection: tag the VM at once (the tag is what isolates it), then
 * audit it with its stage times and tell the guest.  *tag_out receives the
 * tag written, or NULL. */
static void on_infected(struct scand *d, const char *vm, const char *path,
			const struct scan_result *r, const char *source, uint64_t event_ns,
			const char **tag_out)
{
	char *tag = d->set.tag[r->severity], err[512];
	struct detection_extra x = { .source = source, .event_ns = event_ns };
	char *rec_key = xasprintf(DETECTED_PREFIX "%s", vm);
	char *rec = xasprintf("%llu %s", (unsigned long long)wall_ms(),
			      scan_severity_name(r->severity));
	uint64_t rev = 0;
	int ret;

	/* The record goes with the tag: a full scan running meanwhile sees it
	 * move and keeps the VM quarantined, even when the tag was there. */
	ret = tags_write_rec(d->store, vm, &tag, 1, true, rec_key, rec, NULL, NULL, &rev, err,
			     sizeof(err));
	free(rec_key);
	free(rec);
	x.tagged_ns = now_ns();
	if (ret == 0) {
		x.tag = tag;
		x.revision = rev;
	} else {
		x.tag_error = err;
	}
	audit_result(d, r, vm, path, &x);
	audit_tag(d, ret == 0 ? "tag" : ret == 1 ? "tag-refused" : "tag-failed", vm, tag, rev,
		  ret ? err : NULL);
	d->verdicts[SCAN_INFECTED]++;
	if (ret == 0)
		logmsg("%s: %s (%s) in %s: %s; tagged %s (revision %llu)", vm, r->signature,
		       scan_severity_name(r->severity), path,
		       !r->action_done ? r->why
		       : r->action == SCAN_DELETE_FILE ? "deleted" : "moved to quarantine",
		       tag, (unsigned long long)rev);
	else
		logmsg("%s: %s (%s) in %s; tag %s NOT written: %s", vm, r->signature,
		       scan_severity_name(r->severity), path, tag, err);
	notice(d, vm, "A threat (%s, severity %s) was found in %s; the file %s.%s", r->signature,
	       scan_severity_name(r->severity), strrchr(path, '/') + 1,
	       !r->action_done ? "could not be removed"
	       : r->action == SCAN_DELETE_FILE ? "was deleted" : "was moved to quarantine",
	       ret == 0 ? "\nNetwork access of this desktop is restricted until it is cleaned." : "");
	if (tag_out)
		*tag_out = ret == 0 ? tag : NULL;
}

/* Any other verdict: counted; audited unless clean (skips and errors say
 * why a file was not judged); errors also logged. */
static void on_other(struct scand *d, const char *vm, const char *path,
		     const struct scan_result *r, const char *source, uint64_t event_ns)
{
	struct detection_extra x = { .source = source, .event_ns = event_ns };

	d->verdicts[r->verdict]++;
	if (r->verdict == SCAN_CLEAN)
		return;
	audit_result(d, r, vm, path, &x);
	if (r->verdict == SCAN_ERROR)
		logmsg("%s: cannot scan %s: %s", vm, path, r->why);
}

/* Scans file name of vm's sandbox for an event read at event_ns.  Fills
 * *r; *tag (may be NULL) receives the tag of a detection. */
static void scan_one(struct scand *d, const char *vm, const char *name, const char *source,
		     uint64_t event_ns, struct scan_result *r, const char **tag)
{
	char path[PATH_MAX];

	if (tag)
		*tag = NULL;
	if (!strcmp(name, NOTICE_NAME)) {
		/* Our own notice, written just now (full scans do read it). */
		memset(r, 0, sizeof(*r));
		r->verdict = SCAN_SKIPPED_POLICY;
		snprintf(r->why, sizeof(r->why), "%s is the scanner's own notice", NOTICE_NAME);
		return;
	}
	snprintf(path, sizeof(path), "%s/%s/%s", d->sandbox, vm, name);
	if (scanner_scan_file(d->scanner, vm, path, r) < 0) {
		memset(r, 0, sizeof(*r));
		r->verdict = SCAN_ERROR;
		snprintf(r->why, sizeof(r->why), "invalid VM name");
		return;
	}
	if (r->verdict == SCAN_INFECTED)
		on_infected(d, vm, path, r, source, event_ns, tag);
	else
		on_other(d, vm, path, r, source, event_ns);
}

/* ---- full scan ------------------------------------------------------------ */

struct full_ctx {
	struct scand *d;
	const char *vm;
	size_t skipped; /* by policy (size, suffix): not known clean */
};

static void full_report(void *arg, const struct scan_result *r, const char *path)
{
	struct full_ctx *c = arg;

	c->skipped += r->verdict == SCAN_SKIPPED_POLICY;
	if (r->verdict == SCAN_INFECTED)
		on_infected(c->d, c->vm, path, r, "full-scan", 0, NULL);
	else
		on_other(c->d, c->vm, path, r, "full-scan", 0);
}

/* The VM's inventory spelling, checked against --host; NULL with why. */
static const char *known_vm(const struct scand *d, const char *vm, char *why, size_t len)
{
	const struct vm *v;
	long i;

	if (!d->pol) {
		snprintf(why, len, "the store holds no policy yet, so no VM is known");
		return NULL;
	}
	i = policy_find_vm(d->pol, vm);
	if (i < 0) {
		policy_unknown(d->pol, false, vm, why, len);
		return NULL;
	}
	v = &d->pol->inv.vms[i];
	if (d->host && strcmp(v->host, d->host)) {
		snprintf(why, len, "VM '%s' runs on host %s, not on %s", v->name, v->host, d->host);
		return NULL;
	}
	return v->name;
}

/* Removes the policy's threat tags from a VM found clean, if it carries
 * any and no detection came in since its scan began (its record,
 * rec_key = detected/VM, still holds rec: NULL when absent).  The tag
 * dfwd's network threat detector put (its record netthreat/VM) stays: a
 * clean disk says nothing of the network.  Returns an exit code. */
static int release(struct scand *d, const char *vm, const char *rec_key, const char *rec)
{
	char *tags[SEV_COUNT], *val = NULL, *net = NULL, key[TAG_KEY_MAX + 300], err[512];
	char names[SEV_COUNT][TAG_KEY_MAX], ntkey[TAG_KEY_MAX], list[256] = "", kept[256] = "";
	bool changed[SEV_COUNT];
	size_t n = threat_tags(d, tags), carried = 0;
	uint64_t rev = 0;
	int ret;

	netthreat_key(ntkey, vm);
	ret = store_get(d->store, ntkey, &net, err, sizeof(err));
	if (ret > 0)
		net = NULL; /* no record */
	for (size_t i = 0; ret >= 0 && i < n; i++) {
		const char *spelled = policy_find_tag(d->pol, tags[i]);
		bool held = net && !strcasecmp(net, tags[i]);

		snprintf(key, sizeof(key), "tag/%s/%s", vm, spelled);
		ret = store_get(d->store, key, &val, err, sizeof(err));
		free(val);
		val = NULL;
		if (ret == 0 && held)
			snprintf(kept, sizeof(kept), "%s", tags[i]);
		carried += ret == 0 && !held;
	}
	free(net);
	if (ret < 0) {
		logmsg("%s", err);
		return EXIT_STORE;
	}
	if (!carried) {
		logmsg("full scan of %s: clean; it carries no threat tag to release%s%s%s", vm,
		       kept[0] ? " (" : "", kept,
		       kept[0] ? " stays: dfwd's network threat detector put it; dfwctl untag releases it)" : "");
		return EXIT_OK;
	}
	ret = tags_write_rec(d->store, vm, tags, n, false, rec_key, rec, names, changed, &rev,
			     err, sizeof(err));
	for (size_t i = 0, len; i < n; i++) {
		if (ret == 0 && !changed[i])
			continue; /* kept, or not on the VM */
		len = strlen(list);
		snprintf(list + len, sizeof(list) - len, "%s%s", len ? ", " : "", tags[i]);
	}
	audit_tag(d, ret == 0 ? "untag" : ret < 0 ? "untag-failed" : "untag-refused", vm, list,
		  rev, ret ? err : NULL);
	if (ret == 2) {
		logmsg("full scan of %s: clean, but a detection came in during the scan (%s); "
		       "its tags stay", vm, err);
		return EXIT_THREATS;
	}
	if (ret) {
		logmsg("full scan of %s: clean, but its threat tags could not be removed: %s", vm, err);
		return ret == 1 ? EXIT_INPUT : EXIT_STORE;
	}
	if (!kept[0])
		notice(d, vm, "A full scan found nothing; network access is restored.");
	logmsg("full scan of %s: clean; released (%s removed, revision %llu)%s%s%s", vm, list,
	       (unsigned long long)rev, kept[0] ? "; " : "", kept,
	       kept[0] ? " stays: dfwd's network threat detector put it" : "");
	return EXIT_OK;
}

/* A full scan of one VM's sandbox: anything found (or unreadable) keeps
 * it quarantined; a clean result releases it when auto_release says so. */
static int full_scan(struct scand *d, const char *vm_arg)
{
	struct scan_summary sum;
	char dir[PATH_MAX], why[512], rec_key[TAG_KEY_MAX + 16], *rec = NULL;
	const char *vm = known_vm(d, vm_arg, why, sizeof(why));
	const char *result;
	struct full_ctx c;
	struct stat st;
	struct out o;
	int r;

	if (!vm) {
		logmsg("--full-scan %s: %s", vm_arg, why);
		return EXIT_INPUT;
	}
	snprintf(dir, sizeof(dir), "%s/%s", d->sandbox, vm);
	if ((r = stat(dir, &st)) < 0 || !S_ISDIR(st.st_mode)) {
		logmsg("--full-scan %s: no sandbox %s (%s)", vm, dir,
		       r < 0 ? strerror(errno) : "not a directory");
		return EXIT_INPUT;
	}
	/* The last detection's record before the scan: the release checks it
	 * did not move (a detection during the scan, by the watcher). */
	snprintf(rec_key, sizeof(rec_key), DETECTED_PREFIX "%s", vm);
	if ((r = store_get(d->store, rec_key, &rec, why, sizeof(why))) < 0) {
		logmsg("--full-scan %s: %s", vm, why);
		return EXIT_STORE;
	}
	c = (struct full_ctx){ d, vm, 0 };
	if (scanner_scan_tree(d->scanner, vm, dir, true, full_report, &c, &sum) < 0) {
		logmsg("--full-scan %s: %s: %s", vm, dir, strerror(errno));
		free(rec);
		return EXIT_INPUT;
	}
	result = sum.infected ? "threats found" : sum.errors || c.skipped ? "incomplete" : "clean";
	audit_begin(d, &o, "full-scan");
	out_str(&o, "vm", vm);
	out_u64(&o, "files", sum.files);
	out_u64(&o, "clean", sum.clean);
	out_u64(&o, "infected", sum.infected);
	out_u64(&o, "skipped", sum.skipped);
	out_u64(&o, "skipped_by_policy", c.skipped);
	out_u64(&o, "errors", sum.errors);
	out_str(&o, "result", result);
	out_bool(&o, "auto_release", d->set.auto_release);
	audit_end(d, &o);
	if (sum.infected || sum.errors || c.skipped) {
		logmsg("full scan of %s: %zu file(s), %zu infected, %zu unreadable, %zu not scanned "
		       "(max_file_bytes or a skipped suffix): %s; its tags stay",
		       vm, sum.files, sum.infected, sum.errors, c.skipped, result);
		free(rec);
		return EXIT_THREATS;
	}
	if (!d->set.auto_release) {
		logmsg("full scan of %s: %zu file(s), clean; auto_release is off%s: its tags stay "
		       "(dfwctl untag releases it)", vm, sum.files,
		       d->ov.release >= 0 ? " (--auto-release no)" : " in the policy");
		free(rec);
		return EXIT_OK;
	}
	r = release(d, vm, rec_key, rec);
	free(rec);
	return r;
}

/* ---- the watcher (inotify) ------------------------------------------------ */

static void watch_vm(struct scand *d, const char *vm)
{
	char dir[PATH_MAX];
	int wd;

	if (vm[0] == '.')
		return; /* .quarantine, and nothing a VM is named */
	snprintf(dir, sizeof(dir), "%s/%s", d->sandbox, vm);
	wd = inotify_add_watch(d->ino, dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR);
	if (wd < 0) {
		logmsg("cannot watch %s: %s", dir, strerror(errno));
		return;
	}
	for (size_t i = 0; i < d->nwatches; i++)
		if (d->watches[i].wd == wd)
			return; /* already watched */
	grow((void **)&d->watches, &d->capwatches, d->nwatches + 1, sizeof(*d->watches));
	d->watches[d->nwatches].wd = wd;
	snprintf(d->watches[d->nwatches++].vm, NAME_MAX + 1, "%s", vm);
}

static const char *vm_of(const struct scand *d, int wd)
{
	for (size_t i = 0; i < d->nwatches; i++)
		if (d->watches[i].wd == wd)
			return d->watches[i].vm;
	return NULL;
}

static void unwatch(struct scand *d, int wd)
{
	for (size_t i = 0; i < d->nwatches; i++)
		if (d->watches[i].wd == wd) {
			d->watches[i] = d->watches[--d->nwatches];
			return;
		}
}

/* Watches every directory under the sandbox root (watch_vm skips those
 * watched already).  Returns -1 with errno when the root cannot be read. */
static int watch_sandboxes(struct scand *d)
{
	DIR *dir = opendir(d->sandbox);

	if (!dir)
		return -1;
	for (struct dirent *e; (e = readdir(dir));)
		if (e->d_type == DT_DIR && strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			watch_vm(d, e->d_name);
	closedir(dir);
	return 0;
}

/* Scans every file at the top of vm's sandbox, what the watcher covers:
 * after events were lost.  Unchanged files are skipped by the cache. */
static void rescan_top(struct scand *d, const char *vm)
{
	struct strv names = { 0 };
	struct scan_result r;
	char dir[PATH_MAX];
	struct dirent *e;
	DIR *dp;

	snprintf(dir, sizeof(dir), "%s/%s", d->sandbox, vm);
	if (!(dp = opendir(dir))) {
		logmsg("%s: cannot rescan %s: %s", vm, dir, strerror(errno));
		return;
	}
	while ((e = readdir(dp)))
		if ((e->d_type == DT_REG || e->d_type == DT_UNKNOWN) && strcmp(e->d_name, ".") &&
		    strcmp(e->d_name, ".."))
			strv_push(&names, e->d_name);
	closedir(dp);
	for (size_t i = 0; i < names.n; i++)
		scan_one(d, vm, names.v[i], "rescan", now_ns(), &r, NULL);
	strv_free(&names);
}

/* A guest that makes file events faster than they are scanned fills the
 * one inotify queue of the host, and the kernel drops the events of every
 * VM: the files at the top of every sandbox are scanned again instead. */
static void drain(struct scand *d, int root_wd)
{
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct scan_result r;
	bool lost = false;
	ssize_t n;

	while ((n = read(d->ino, buf, sizeof(buf))) > 0) {
		uint64_t t = now_ns();

		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			const char *vm;

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				lost = true;
				continue;
			}
			if (ev->mask & IN_IGNORED) {
				unwatch(d, ev->wd); /* the sandbox went away */
				continue;
			}
			if (!ev->len)
				continue;
			if (ev->wd == root_wd) {
				if (ev->mask & IN_ISDIR)
					watch_vm(d, ev->name); /* a new VM's sandbox */
			} else if ((vm = vm_of(d, ev->wd)) && !(ev->mask & IN_ISDIR)) {
				scan_one(d, vm, ev->name, "watch", t, &r, NULL);
			}
		}
	}
	if (lost) {
		/* The root's events went too: a sandbox made meanwhile is
		 * watched (and scanned) now, or never. */
		watch_sandboxes(d);
		logmsg("inotify queue overflow: file events were lost; rescanning the top of "
		       "%zu sandbox(es)", d->nwatches);
		for (size_t i = 0; i < d->nwatches; i++)
			rescan_top(d, d->watches[i].vm);
	}
}

/* ---- the event channel (the thin driver's messages) ----------------------- */

/* A rejected line as it can be quoted: printable ASCII, the rest as \xNN,
 * cut at EXCERPT_MAX bytes. */
static void excerpt(const char *line, size_t len, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < len && i < EXCERPT_MAX && o + 5 < cap; i++) {
		unsigned char c = (unsigned char)line[i];

		if (c >= 0x20 && c < 0x7f)
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
	}
	if (len > EXCERPT_MAX && o + 4 < cap)
		o += (size_t)snprintf(out + o, cap - o, "...");
	out[o] = '\0';
}

static void client_close(struct client *c);

/* One answer line; a client that does not read them loses them (the
 * socket is non-blocking: a slow peer never stalls the scanner).  Part of
 * a line would run into the next answer: such a client is closed. */
static void reply(struct client *c, char *text, size_t len)
{
	ssize_t w;

	if (c->fd < 0)
		return;
	w = send(c->fd, text, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (w < 0 && errno != EAGAIN && errno != EPIPE && errno != ECONNRESET)
		logmsg("answering an event: %s", strerror(errno));
	if (w >= 0 && (size_t)w < len) {
		logmsg("event channel: a client does not read its answers; closed");
		client_close(c);
	}
}

static void reject(struct scand *d, struct client *c, const char *why, const char *line,
		   size_t len)
{
	char quoted[EXCERPT_MAX * 4 + 8], *mem = NULL;
	size_t n = 0;
	struct out o;
	FILE *f;

	d->rejected++;
	excerpt(line, len, quoted, sizeof(quoted));
	logmsg("event rejected: %s: '%s'", why, quoted);
	audit_begin(d, &o, "event-rejected");
	out_str(&o, "source", "event");
	out_str(&o, "error", why);
	out_str(&o, "line", quoted);
	audit_end(d, &o);
	if (!(f = open_memstream(&mem, &n)))
		abort();
	out_init(&o, f, true);
	out_obj_start(&o, NULL);
	out_str(&o, "status", "rejected");
	out_str(&o, "error", why);
	out_obj_end(&o);
	out_finish(&o);
	fclose(f);
	reply(c, mem, n);
	free(mem);
}

static void handle_line(struct scand *d, struct client *c, const char *line, size_t len,
			uint64_t t)
{
	struct scan_event ev;
	struct scan_result r;
	char why[PATH_MAX + 512], dir[PATH_MAX], *mem = NULL;
	const char *vm, *tag;
	struct stat st;
	size_t n = 0;
	int sr;
	struct out o;
	FILE *f;

	if (scan_event_parse(line, len, &ev, why, sizeof(why)) < 0 ||
	    !(vm = known_vm(d, ev.vm, why, sizeof(why)))) {
		reject(d, c, why, line, len);
		return;
	}
	snprintf(dir, sizeof(dir), "%s/%s", d->sandbox, vm);
	if ((sr = stat(dir, &st)) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(why, sizeof(why), "no sandbox for VM '%s' (%s: %s)", vm, dir,
			 sr < 0 ? strerror(errno) : "not a directory");
		reject(d, c, why, line, len);
		return;
	}
	scan_one(d, vm, ev.file, "event", t, &r, &tag);
	if (!(f = open_memstream(&mem, &n)))
		abort();
	out_init(&o, f, true);
	out_obj_start(&o, NULL);
	out_str(&o, "status", "scanned");
	out_str(&o, "vm", vm);
	out_str(&o, "file", ev.file);
	out_str(&o, "verdict", scan_verdict_name(r.verdict));
	if (r.verdict == SCAN_INFECTED) {
		out_str(&o, "signature", r.signature);
		out_str(&o, "severity", scan_severity_name(r.severity));
		if (tag)
			out_str(&o, "tag", tag);
	}
	if (r.why[0])
		out_str(&o, "why", r.why);
	out_obj_end(&o);
	out_finish(&o);
	fclose(f);
	reply(c, mem, n);
	free(mem);
}

static void client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->len = 0;
	c->discarding = false;
}

/* Reads what a client sent and handles each whole line. */
static void client_read(struct scand *d, struct client *c)
{
	ssize_t got = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
	uint64_t t = now_ns();
	size_t start = 0;

	if (got < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (got <= 0) {
		if (c->len && !c->discarding)
			reject(d, c, "incomplete line: the stream ended before its newline", c->buf,
			       c->len);
		client_close(c);
		return;
	}
	c->active_ns = t;
	c->len += (size_t)got;
	for (size_t i = 0; i < c->len; i++) {
		if (c->buf[i] != '\n')
			continue;
		if (c->discarding)
			c->discarding = false; /* the end of a line rejected already */
		else
			handle_line(d, c, c->buf + start, i - start, t);
		if (c->fd < 0)
			return;
		start = i + 1;
	}
	memmove(c->buf, c->buf + start, c->len - start);
	c->len -= start;
	if (c->len == sizeof(c->buf)) {
		/* A full buffer without a newline: longer than any event. */
		if (!c->discarding) {
			char why[64];

			snprintf(why, sizeof(why), "line longer than %d bytes", SCAN_EVENT_LINE_MAX);
			reject(d, c, why, c->buf, c->len);
		}
		c->discarding = true;
		c->len = 0;
	}
}

static void client_accept(struct scand *d)
{
	int fd = accept4(d->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	static char busy[] = "{\"status\":\"rejected\",\"error\":\"too many connections\"}\n";

	static char idle[] = "{\"status\":\"rejected\",\"error\":\"idle: closed to make room\"}\n";
	struct client *lru = NULL;
	uint64_t now = now_ns();

	if (fd < 0)
		return;
	for (size_t i = 0; i < MAX_CLIENTS; i++) {
		struct client *c = &d->clients[i];

		if (c->fd < 0) {
			*c = (struct client){ .fd = fd, .active_ns = now };
			return;
		}
		if (!lru || c->active_ns < lru->active_ns)
			lru = c;
	}
	/* Full: connections that send nothing (or half a line) must not lock
	 * the thin drivers out.  The one idle longest makes room. */
	if (now - lru->active_ns >= IDLE_EVICT_MS * 1000000ull) {
		logmsg("event channel: %d connections; the one idle for %llu ms closed to make room",
		       MAX_CLIENTS, (unsigned long long)((now - lru->active_ns) / 1000000));
		reply(lru, idle, sizeof(idle) - 1);
		client_close(lru);
		*lru = (struct client){ .fd = fd, .active_ns = now };
		return;
	}
	logmsg("event channel: more than %d connections; one refused", MAX_CLIENTS);
	send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

/* A fresh listening socket at path, root-only.  A stale socket file is
 * replaced, but not a live one nor anything that is not a socket. */
static int events_listen(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "%s: longer than %zu bytes, the limit of a socket path", path,
			 sizeof(sa.sun_path) - 1);
		return -1;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", path);
			return -1;
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(fd);
			snprintf(err, errlen, "%s: another scanner listens there", path);
			return -1;
		}
		if (fd >= 0)
			close(fd);
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	old = umask(0177);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, MAX_CLIENTS) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		umask(old);
		close(fd);
		return -1;
	}
	umask(old);
	return fd;
}

/* ---- main ---------------------------------------------------------------- */

static int parse_yes_no(const char *opt, const char *v, int *out)
{
	bool b;

	if (parse_bool(v, &b) < 0) {
		logmsg("%s '%s': yes or no", opt, v);
		return -1;
	}
	*out = b;
	return 0;
}

static int watch_loop(struct scand *d, const char *events)
{
	char err[512];
	int root_wd, sfd = -1, ret = EXIT_INPUT;
	sigset_t mask;

	d->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	root_wd = d->ino < 0 ? -1 : inotify_add_watch(d->ino, d->sandbox,
						       IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
	if (root_wd < 0 || watch_sandboxes(d) < 0) {
		logmsg("%s: %s", d->sandbox, strerror(errno));
		return EXIT_INPUT;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	/* The socket last: a client that can connect finds everything ready. */
	if (events && (d->lfd = events_listen(events, err, sizeof(err))) < 0) {
		logmsg("--events %s", err);
		goto out;
	}
	logmsg("watching %zu sandbox(es) under %s, %zu signature(s)%s%s", d->nwatches, d->sandbox,
	       d->nsigs, events ? ", events on " : "", events ? events : "");
	for (;;) {
		struct pollfd p[4 + MAX_CLIENTS] = {
			{ .fd = sfd, .events = POLLIN },
			{ .fd = d->ino, .events = POLLIN },
			{ .fd = d->lfd, .events = POLLIN },
			{ .fd = store_watch_fd(d->store), .events = POLLIN },
		};

		for (size_t i = 0; i < MAX_CLIENTS; i++)
			p[4 + i] = (struct pollfd){ .fd = d->clients[i].fd, .events = POLLIN };
		/* Without a store watch, look at the store once a second. */
		if (poll(p, ARRAY_SIZE(p), p[3].fd >= 0 ? -1 : 1000) < 0 && errno != EINTR)
			break;
		if (p[0].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(sfd, &si, sizeof(si)) == sizeof(si) && si.ssi_signo == SIGHUP) {
				policy_reload(d);
				continue;
			}
			break;
		}
		/* File events first: they are the latency path. */
		if (p[1].revents & POLLIN)
			drain(d, root_wd);
		for (size_t i = 0; i < MAX_CLIENTS; i++)
			if (p[4 + i].revents & (POLLIN | POLLHUP | POLLERR))
				client_read(d, &d->clients[i]);
		if (p[2].revents & POLLIN)
			client_accept(d);
		if (p[3].fd < 0 || (p[3].revents & POLLIN))
			store_check(d);
	}
	ret = EXIT_OK;
out:
	for (size_t i = 0; i < MAX_CLIENTS; i++)
		client_close(&d->clients[i]);
	if (d->lfd >= 0) {
		close(d->lfd);
		unlink(events);
	}
	if (sfd >= 0)
		close(sfd);
	logmsg("exiting: %zu clean, %zu infected, %zu skipped, %zu unreadable, %zu event(s) rejected",
	       d->verdicts[SCAN_CLEAN], d->verdicts[SCAN_INFECTED],
	       d->verdicts[SCAN_SKIPPED_POLICY] + d->verdicts[SCAN_SKIPPED_CACHED],
	       d->verdicts[SCAN_ERROR], d->rejected);
	return ret;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "sandbox", required_argument, NULL, 'd' },
		{ "host", required_argument, NULL, 'H' },
		{ "signatures", required_argument, NULL, 'g' },
		{ "audit", required_argument, NULL, 'a' },
		{ "events", required_argument, NULL, 'e' },
		{ "max-bytes", required_argument, NULL, 'm' },
		{ "file-action", required_argument, NULL, 'A' },
		{ "full-scan", required_argument, NULL, 'F' },
		{ "auto-release", required_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *store_uri = NULL, *sigs = NULL, *audit = NULL, *full_vm = NULL;
	const char *events = NULL;
	struct scan_policy sp = { .action = SCAN_QUARANTINE_FILE };
	struct scand d = { .ino = -1, .lfd = -1, .ov = { .action = -1, .release = -1 } };
	struct sigdb *db = NULL;
	struct diag dg = { 0 };
	char err[512];
	int c, ret = EXIT_INPUT;

	for (size_t i = 0; i < MAX_CLIENTS; i++)
		d.clients[i].fd = -1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_uri = optarg; break;
		case 'd': d.sandbox = optarg; break;
		case 'H': d.host = optarg; break;
		case 'g': sigs = optarg; break;
		case 'a': audit = optarg; break;
		case 'e': events = optarg; break;
		case 'F': full_vm = optarg; break;
		case 'R':
			if (parse_yes_no("--auto-release", optarg, &d.ov.release) < 0)
				return EXIT_INPUT;
			break;
		case 'A':
			if (!strcmp(optarg, "quarantine") || !strcmp(optarg, "delete")) {
				d.ov.action = !strcmp(optarg, "delete") ? SCAN_DELETE_FILE
									: SCAN_QUARANTINE_FILE;
				break;
			}
			logmsg("--file-action '%s': quarantine or delete", optarg);
			return EXIT_INPUT;
		case 'm':
			if (parse_u64(optarg, UINT64_MAX, &d.ov.max_bytes) < 0) {
				logmsg("--max-bytes '%s': a whole number of bytes (0: no limit)", optarg);
				return EXIT_INPUT;
			}
			d.ov.max_set = true;
			break;
		case 'h': fputs(usage, stdout); return EXIT_OK;
		default: fputs(usage, stderr); return EXIT_INPUT;
		}
	}
	if (!store_uri || !d.sandbox || optind != argc) {
		logmsg("%s", optind != argc ? "unexpected argument" : "--store and --sandbox are required");
		fputs(usage, stderr);
		return EXIT_INPUT;
	}
	if (d.ov.release >= 0 && !full_vm) {
		logmsg("--auto-release applies to --full-scan only");
		return EXIT_INPUT;
	}
	if (events && full_vm) {
		logmsg("--events is for the watching scanner, not --full-scan");
		return EXIT_INPUT;
	}
	db = sigs ? sigdb_load(sigs, &dg) : sigdb_builtin();
	if (!db) {
		for (size_t i = 0; i < dg.n; i++)
			fprintf(stderr, "%s\n", dg.msgs[i]);
		logmsg("%s: %zu error(s); not started", sigs, dg.n);
		goto out;
	}
	snprintf(d.qdir, sizeof(d.qdir), "%s/%s", d.sandbox, QUARANTINE_NAME);
	sp.quarantine_dir = d.qdir;
	d.scanner = scanner_new(db, &sp);
	d.nsigs = sigdb_count(db);
	d.audit = audit ? fopen(audit, "ae") : stdout;
	if (!d.scanner || !d.audit) {
		logmsg("%s: %s", audit, strerror(errno));
		goto out;
	}
	d.store = store_open(store_uri, false, err, sizeof(err));
	if (!d.store) {
		logmsg("%s", err);
		ret = EXIT_STORE;
		goto out;
	}
	d.oneshot = full_vm != NULL;
	if (policy_reload(&d) < 0) {
		ret = EXIT_STORE;
		goto out;
	}
	if (full_vm)
		ret = full_scan(&d, full_vm);
	else
		ret = watch_loop(&d, events);
out:
	if (d.ino >= 0)
		close(d.ino);
	if (d.audit && d.audit != stdout)
		fclose(d.audit);
	for (int sev = 0; sev < SEV_COUNT; sev++)
		free(d.set.tag[sev]);
	free(d.watches);
	policy_free(d.pol);
	store_close(d.store);
	scanner_free(d.scanner);
	sigdb_free(db);
	diag_free(&dg);
	return ret;
}
