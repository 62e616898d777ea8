/* dfw-scan: the host's simulated agentless anti-malware appliance.
 *
 * Each VM has a sandbox directory, SANDBOX/<vm>/, standing in for its disk;
 * inotify stands in for the guest's thin driver that notices file writes.
 * A written file is scanned (sim/scanner.c).  On a detection, the threat
 * tag of its severity is written to the store at once (no heartbeat, no
 * polling), and the agents isolate the VM.  Every detection and tag goes to
 * the audit log as a JSON line, and the guest gets a plain-text notice in
 * its sandbox (nothing runs inside the guest to show one).  Exit: 0 ok
 * (a full scan: clean), 1 bad usage or input, 3 store unreachable, 4 a full
 * scan found threats or could not read everything. */
#include <errno.h>
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
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "common/out.h"
#include "common/util.h"
#include "sim/scanner.h"
#include "tagger/store.h"
#include "tagger/tags.h"

#define NOTICE_NAME "DFW-NOTICE.txt"
#define QUARANTINE_NAME ".quarantine"

static const char usage[] =
	"usage: dfw-scan --store URI --sandbox DIR [--signatures FILE] [--audit FILE]\n"
	"                [--max-bytes N] [--delete] [--full-scan VM [--auto-release]]\n"
	"  --sandbox     DIR/<vm>/ is each VM's sandbox; written files are scanned\n"
	"  --signatures  signature file (configs/signatures.txt); EICAR is built in\n"
	"  --audit       append JSON lines here (default: stdout)\n"
	"  --max-bytes   skip larger files (default 64 MiB)\n"
	"  --delete      delete infected files instead of moving them to DIR/.quarantine\n"
	"  --full-scan   scan every file of VM's sandbox once (cache cleared) and exit\n"
	"  --auto-release  with --full-scan: when nothing is found, remove the VM's\n"
	"                threat tags (a reinfection found keeps it quarantined)\n";

static const char *const threat_tags[] = { "threat.high", "threat.medium", "threat.low" };

struct scand {
	const char *sandbox;
	struct store *store;
	struct scanner *scanner;
	FILE *audit;
	int ino;
	struct { int wd; char vm[NAME_MAX + 1]; } *watches;
	size_t nwatches, capwatches;
};

static void audit_tag(struct scand *d, const char *event, const char *vm, const char *tag,
		      uint64_t rev, const char *error)
{
	struct out o;
	char when[32];
	time_t now = time(NULL);

	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	out_init(&o, d->audit, true);
	out_obj_start(&o, NULL);
	out_str(&o, "when", when);
	out_str(&o, "event", event);
	out_str(&o, "vm", vm);
	out_str(&o, "tag", tag);
	out_str(&o, "by", "dfw-scan");
	if (error)
		out_str(&o, "error", error);
	else
		out_u64(&o, "revision", rev);
	out_obj_end(&o);
	out_finish(&o);
}

/* A plain-text notice in the guest's sandbox: nothing runs inside the
 * guest to show one (seed 000's notifier). */
static void notice(struct scand *d, const char *vm, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void notice(struct scand *d, const char *vm, const char *fmt, ...)
{
	char npath[PATH_MAX];
	va_list ap;
	FILE *f;

	snprintf(npath, sizeof(npath), "%s/%s/%s", d->sandbox, vm, NOTICE_NAME);
	if (!(f = fopen(npath, "a")))
		return;
	fprintf(f, "Security notice for %s\n", vm);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputs("\n\n", f);
	fclose(f);
}

/* A detection: audit it, tag the VM at once (the tag is what isolates
 * it), tell the guest. */
static void on_infected(struct scand *d, const char *vm, const char *path,
			const struct scan_result *r)
{
	char line[8192], err[512], tag[64];
	char *tags[1] = { tag };
	uint64_t rev = 0;
	int ret;

	if (detection_json(r, vm, path, line, sizeof(line)) >= 0) {
		fputs(line, d->audit);
		fputc('\n', d->audit);
	}
	snprintf(tag, sizeof(tag), "threat.%s", scan_severity_name(r->severity));
	ret = tags_write(d->store, vm, tags, 1, true, NULL, &rev, err, sizeof(err));
	audit_tag(d, ret ? "tag-refused" : "tag", vm, tag, rev, ret ? err : NULL);
	notice(d, vm, "A threat (%s, severity %s) was found in %s; the file was %s.\n"
		      "Network access of this desktop is restricted until it is cleaned.",
	       r->signature, scan_severity_name(r->severity), strrchr(path, '/') + 1,
	       r->action == SCAN_DELETE_FILE ? "deleted" : "moved to quarantine");
	fflush(d->audit);
}

static void scan_one(struct scand *d, const char *vm, const char *name)
{
	char path[PATH_MAX];
	struct scan_result r;

	if (!strcmp(name, NOTICE_NAME) || name[0] == '.')
		return;
	snprintf(path, sizeof(path), "%s/%s/%s", d->sandbox, vm, name);
	if (scanner_scan_file(d->scanner, vm, path, &r) == 0 && r.verdict == SCAN_INFECTED)
		on_infected(d, vm, path, &r);
}

struct full_ctx {
	struct scand *d;
	const char *vm;
};

static void full_report(void *arg, const struct scan_result *r, const char *path)
{
	struct full_ctx *c = arg;

	if (r->verdict == SCAN_INFECTED)
		on_infected(c->d, c->vm, path, r);
}

/* A full scan of one VM's sandbox.  With auto-release, a clean result
 * removes its threat tags; anything found (or unreadable) keeps it
 * quarantined.  Returns 0 clean, 4 infected or incomplete, -1 on error. */
static int full_scan(struct scand *d, const char *vm, bool auto_release)
{
	struct full_ctx c = { d, vm };
	struct scan_summary sum;
	char dir[PATH_MAX], err[512];
	uint64_t rev = 0;
	struct out o;

	snprintf(dir, sizeof(dir), "%s/%s", d->sandbox, vm);
	if (scanner_scan_tree(d->scanner, vm, dir, true, full_report, &c, &sum) < 0) {
		fprintf(stderr, "dfw-scan: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	out_init(&o, d->audit, true);
	out_obj_start(&o, NULL);
	out_str(&o, "event", "full-scan");
	out_str(&o, "vm", vm);
	out_u64(&o, "files", sum.files);
	out_u64(&o, "infected", sum.infected);
	out_u64(&o, "errors", sum.errors);
	out_obj_end(&o);
	out_finish(&o);
	if (sum.infected || sum.errors)
		return 4;
	if (auto_release) {
		int ret = tags_write(d->store, vm, (char *const *)threat_tags,
				     ARRAY_SIZE(threat_tags), false, NULL, &rev, err, sizeof(err));

		audit_tag(d, ret ? "untag-refused" : "untag", vm, "threat.*", rev, ret ? err : NULL);
		if (ret)
			return -1;
		notice(d, vm, "A full scan found nothing; network access is restored.");
	}
	return 0;
}

static void watch_vm(struct scand *d, const char *vm)
{
	char dir[PATH_MAX];
	int wd;

	if (vm[0] == '.')
		return;
	snprintf(dir, sizeof(dir), "%s/%s", d->sandbox, vm);
	wd = inotify_add_watch(d->ino, dir, IN_CLOSE_WRITE | IN_MOVED_TO);
	if (wd < 0)
		return;
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

static void drain(struct scand *d, int root_wd)
{
	char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;

	while ((n = read(d->ino, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)p;
			const char *vm;

			p += sizeof(*ev) + ev->len;
			if (!ev->len)
				continue;
			if (ev->wd == root_wd) {
				if (ev->mask & IN_ISDIR)
					watch_vm(d, ev->name); /* a new VM's sandbox */
			} else if ((vm = vm_of(d, ev->wd)) && !(ev->mask & IN_ISDIR)) {
				scan_one(d, vm, ev->name);
			}
		}
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "sandbox", required_argument, NULL, 'd' },
		{ "signatures", required_argument, NULL, 'g' },
		{ "audit", required_argument, NULL, 'a' },
		{ "max-bytes", required_argument, NULL, 'm' },
		{ "delete", no_argument, NULL, 'D' },
		{ "full-scan", required_argument, NULL, 'F' },
		{ "auto-release", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	const char *store_uri = NULL, *sigs = NULL, *audit = NULL, *full_vm = NULL;
	bool auto_release = false;
	char qdir[PATH_MAX], err[512];
	struct scan_policy pol = { .max_bytes = 64ull << 20, .action = SCAN_QUARANTINE_FILE };
	struct scand d = { 0 };
	struct sigdb *db = NULL;
	struct diag dg = { 0 };
	int c, ret = 1, root_wd, sfd;
	sigset_t mask;
	DIR *dir;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_uri = optarg; break;
		case 'd': d.sandbox = optarg; break;
		case 'g': sigs = optarg; break;
		case 'a': audit = optarg; break;
		case 'D': pol.action = SCAN_DELETE_FILE; break;
		case 'F': full_vm = optarg; break;
		case 'R': auto_release = true; break;
		case 'm':
			if (parse_u64(optarg, UINT64_MAX, &pol.max_bytes) < 0) {
				fprintf(stderr, "dfw-scan: --max-bytes '%s': a whole number of bytes\n", optarg);
				return 1;
			}
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (!store_uri || !d.sandbox || optind != argc) {
		fprintf(stderr, "dfw-scan: --store and --sandbox are required\n%s", usage);
		return 1;
	}
	db = sigs ? sigdb_load(sigs, &dg) : sigdb_builtin();
	if (!db) {
		for (size_t i = 0; i < dg.n; i++)
			fprintf(stderr, "%s\n", dg.msgs[i]);
		fprintf(stderr, "dfw-scan: %s: %zu error(s); not started\n", sigs, dg.n);
		goto out;
	}
	snprintf(qdir, sizeof(qdir), "%s/%s", d.sandbox, QUARANTINE_NAME);
	pol.quarantine_dir = qdir;
	d.scanner = scanner_new(db, &pol);
	d.audit = audit ? fopen(audit, "a") : stdout;
	if (!d.scanner || !d.audit) {
		fprintf(stderr, "dfw-scan: %s\n", !d.audit ? strerror(errno) : "cannot set up the scanner");
		goto out;
	}
	d.store = store_open(store_uri, false, err, sizeof(err));
	if (!d.store) {
		fprintf(stderr, "dfw-scan: %s\n", err);
		ret = 3;
		goto out;
	}
	if (full_vm) {
		int r = full_scan(&d, full_vm, auto_release);

		ret = r < 0 ? 1 : r;
		goto out;
	}
	d.ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	root_wd = inotify_add_watch(d.ino, d.sandbox, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
	if (d.ino < 0 || root_wd < 0 || !(dir = opendir(d.sandbox))) {
		fprintf(stderr, "dfw-scan: %s: %s\n", d.sandbox, strerror(errno));
		goto out;
	}
	for (struct dirent *e; (e = readdir(dir));)
		if (e->d_type == DT_DIR && strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			watch_vm(&d, e->d_name);
	closedir(dir);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	fprintf(stderr, "dfw-scan: watching %zu sandbox(es) under %s, %zu signature(s)\n",
		d.nwatches, d.sandbox, sigdb_count(db));
	for (;;) {
		struct pollfd p[2] = { { .fd = sfd, .events = POLLIN }, { .fd = d.ino, .events = POLLIN } };

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[0].revents & POLLIN)
			break;
		if (p[1].revents & POLLIN)
			drain(&d, root_wd);
	}
	ret = 0;
	close(sfd);
out:
	if (d.ino > 0)
		close(d.ino);
	if (d.audit && d.audit != stdout)
		fclose(d.audit);
	free(d.watches);
	store_close(d.store);
	scanner_free(d.scanner);
	sigdb_free(db);
	diag_free(&dg);
	return ret;
}
