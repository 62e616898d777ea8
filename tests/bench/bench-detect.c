/* Detection latency benchmark (issue 4): from a file written into a VM's
 * disk to the first packet of that VM that no longer arrives.
 *
 * A lab of configs/vdi.ini (dfw-lab, lab "bdet": one host, dfwd and
 * dfw-scan running as `dfw-lab up` starts them).  In each round a desktop
 * (desktop1..4 in turn) sends a steady stream of small UDP probes to the
 * directory server dc1 on udp/53, which the policy allows and quarantine
 * cuts; dc1 answers each, so the flow is an established connection that
 * the quarantine must cut, not only new packets it must refuse.  Then:
 *
 *   1. the bench writes a test file of the round's severity (high, medium,
 *      low in turn; the lab's signature file) into the desktop's sandbox and
 *      takes CLOCK_MONOTONIC just before;
 *   2. dfw-scan's inotify watch sees the close, scans, quarantines the file
 *      and writes the severity's tag to the store; dfwd realizes it;
 *   3. the first probe that never reaches dc1 is the drop: its send time
 *      minus the write time is the figure (resolution: the probe interval);
 *   4. the stage times come from dfw-scan's detection record (event read,
 *      scan done, tag committed; CLOCK_MONOTONIC, the same clock) and from
 *      dfwd's status (last_update_us: the kernel commit of that revision);
 *   5. `dfw-lab scan DESKTOP --full` finds the sandbox clean and releases
 *      the desktop (auto_release = yes); the round ends when probes arrive
 *      again.
 *
 * Figures: detect_write_to_drop_ms_p50/p99; the stages detect_stage_*:
 * event (write -> inotify event read), scan (-> verdict and file moved),
 * store (-> tag commit returned), agent_apply (dfwd's kernel commit) and
 * agent_cut (dfwd's conntrack cut, from its log); detect_tag_to_drop_ms
 * (tag commit -> first dropped probe: agent wake-up, membership, commit,
 * cut); detect_release_to_restore_ms (full scan and release -> probes
 * arrive again); and the p99 against the 600 s heartbeat that agent-based
 * products wait for (detect_p99_vs_heartbeat_ppm, detect_heartbeat_vs_p99).
 * --tiny: 3 infections (for `make check`); otherwise 60.  Needs root; the
 * lab is removed on exit, also after a failure or an interruption. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "sim/scanner.h"
#include "tagger/config.h"
#include "tests/bench/bench.h"

#define LAB "bdet"
#define RUN_DIR "/run/dfw-lab/" LAB
#define PROBE_PORT 53              /* desktops -> dc1 udp/53 is allowed */
#define PROBE_INTERVAL_NS 500000ull /* 2,000 probes/s */
#define MAX_SEQ 65536              /* probes of one round (32 s) */
#define WARM_PROBES 40             /* arrived before the write */
#define SILENCE_MS 250             /* nothing arrived this long: dropped */
#define ROUND_TIMEOUT_MS 10000
#define HEARTBEAT_MS 600000.0      /* the seed's 10-minute agent heartbeat */
#define NDESKTOPS 4

struct probe_pkt {
	uint32_t round, seq;
	uint64_t sent_ns;
};

static char bindir[512];
static volatile sig_atomic_t interrupted;
static bool lab_made;

/* Shared with the two threads. */
static uint64_t sent_ns[MAX_SEQ];
static atomic_uint cur_round;      /* probes of other rounds are ignored */
static atomic_int sender;          /* desktop index sending, -1: none */
static atomic_uint nsent;          /* probes sent this round */
static atomic_uint nrecv;          /* probes of this round that arrived */
static atomic_uint max_seq1;       /* highest seq arrived + 1 */
static atomic_ullong restore_mark; /* after this send time ... */
static atomic_ullong restored_ns;  /* ... the first probe that arrived */
static atomic_bool quit;
static int tx[NDESKTOPS] = { -1, -1, -1, -1 }, rx = -1;

static void teardown(void);

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("bench-detect: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	teardown();
	exit(1);
}

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int lab_cmd(const char *a1, const char *a2, const char *a3, const char *a4,
		   char *out, size_t len)
{
	char prog[600];
	char *argv[] = { prog, (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL };

	snprintf(prog, sizeof(prog), "%s/dfw-lab", bindir);
	return bench_run(argv, out, len);
}

static void teardown(void)
{
	atomic_store(&quit, true);
	if (lab_made) {
		char *argv[] = { NULL, (char *)"down", (char *)"--lab", (char *)LAB, NULL };
		char prog[600];

		snprintf(prog, sizeof(prog), "%s/dfw-lab", bindir);
		argv[0] = prog;
		bench_run(argv, NULL, 0);
		lab_made = false;
	}
}

/* A UDP socket made inside the named lab namespace (sockets keep theirs). */
static int ns_socket(const char *vm, int self)
{
	char path[256];
	int fd, nsfd;

	snprintf(path, sizeof(path), "/run/netns/dfwl-" LAB "-v-%s", vm);
	nsfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0)
		die("%s: %s", path, strerror(errno));
	close(nsfd);
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setns(self, CLONE_NEWNET) < 0)
		die("socket in %s: %s", vm, strerror(errno));
	return fd;
}

static struct sockaddr_in vm_addr4(const struct dfw_policy *p, const char *name)
{
	long i = policy_find_vm(p, name);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(PROBE_PORT) };

	if (i < 0)
		die("configs/vdi.ini has no VM %s", name);
	for (size_t k = 0; k < p->inv.vms[i].naddrs; k++)
		if (p->inv.vms[i].addrs[k].family == AF_INET) {
			memcpy(&sa.sin_addr, p->inv.vms[i].addrs[k].a, 4);
			return sa;
		}
	die("VM %s has no IPv4 address", name);
}

/* Sends one probe every PROBE_INTERVAL_NS from the current sender. */
static void *send_loop(void *arg)
{
	struct timespec next;
	char sink[64];

	(void)arg;
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!atomic_load(&quit)) {
		int s = atomic_load(&sender);

		if (s >= 0) {
			unsigned seq = atomic_load(&nsent);

			if (seq < MAX_SEQ) {
				struct probe_pkt p = { atomic_load(&cur_round), seq, now_ns() };

				sent_ns[seq] = p.sent_ns;
				atomic_store(&nsent, seq + 1);
				send(tx[s], &p, sizeof(p), MSG_DONTWAIT);
			}
			while (recv(tx[s], sink, sizeof(sink), MSG_DONTWAIT) > 0)
				; /* dc1's answers: they only make the flow established */
		}
		next.tv_nsec += (long)PROBE_INTERVAL_NS;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_sec++;
			next.tv_nsec -= 1000000000L;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	return NULL;
}

/* dc1: notes each probe of the current round and answers it. */
static void *recv_loop(void *arg)
{
	(void)arg;
	while (!atomic_load(&quit)) {
		struct sockaddr_in from;
		socklen_t flen = sizeof(from);
		struct probe_pkt p;
		ssize_t n = recvfrom(rx, &p, sizeof(p), 0, (struct sockaddr *)&from, &flen);
		unsigned m;
		uint64_t mark, zero = 0;

		if (n != (ssize_t)sizeof(p) || p.round != atomic_load(&cur_round))
			continue;
		sendto(rx, &p, sizeof(p), MSG_DONTWAIT, (struct sockaddr *)&from, flen);
		atomic_fetch_add(&nrecv, 1);
		m = atomic_load(&max_seq1);
		while (p.seq + 1 > m && !atomic_compare_exchange_weak(&max_seq1, &m, p.seq + 1))
			;
		mark = atomic_load(&restore_mark);
		if (mark && p.sent_ns > mark)
			atomic_compare_exchange_strong(&restored_ns, &zero, p.sent_ns);
	}
	return NULL;
}

static bool json_u64(const char *text, const char *key, uint64_t *out)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(text, pat);
	if (!p)
		return false;
	*out = strtoull(p + strlen(pat), NULL, 10);
	return true;
}

/* The audit line of host's scanner about the detection of file (a path
 * ending in "/file"). */
static bool audit_detection(const char *host, const char *file, char *line, size_t len)
{
	char pat[128], *buf = NULL, path[300];
	size_t cap = 0;
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), RUN_DIR "/%s.audit.jsonl", host);
	if (!(f = fopen(path, "re")))
		return false;
	if (!f)
		return false;
	snprintf(pat, sizeof(pat), "/%s\"", file);
	while (getline(&buf, &cap, f) > 0)
		if (strstr(buf, "\"event\":\"detection\"") && strstr(buf, pat)) {
			snprintf(line, len, "%s", buf);
			found = true;
		}
	free(buf);
	fclose(f);
	return found;
}

/* dfwd's connection cut for revision rev, from its log: the "quarantine:
 * cut ... in N us" line logged just before "realized revision REV:". */
static bool log_cut_us(const char *host, uint64_t rev, uint64_t *us)
{
	char path[300], want[64], *buf = NULL, *p;
	uint64_t last = 0;
	bool have = false, found = false;
	size_t cap = 0;
	FILE *f;

	snprintf(path, sizeof(path), RUN_DIR "/%s.log", host);
	snprintf(want, sizeof(want), "realized revision %llu:", (unsigned long long)rev);
	if (!(f = fopen(path, "re")))
		return false;
	while (getline(&buf, &cap, f) > 0) {
		if (strstr(buf, "quarantine: cut ") && (p = strstr(buf, ") in "))) {
			last = strtoull(p + 5, NULL, 10);
			have = true;
		} else if (strstr(buf, want)) {
			found = have;
			*us = last;
		} else if (strstr(buf, "realized revision ")) {
			have = false;
		}
	}
	free(buf);
	fclose(f);
	return found;
}

static double ms(uint64_t from, uint64_t to)
{
	return ((double)to - (double)from) / 1e6;
}

/* Waits until cond() or ms elapse; false on timeout or interruption. */
static bool wait_for(bool (*cond)(void), unsigned timeout)
{
	uint64_t end = now_ns() + timeout * 1000000ull;

	while (!cond()) {
		if (interrupted || now_ns() > end)
			return false;
		sleep_ms(1);
	}
	return true;
}

static bool warm(void)
{
	return atomic_load(&nrecv) >= WARM_PROBES;
}

static bool restored(void)
{
	return atomic_load(&restored_ns) != 0;
}

int main(int argc, char **argv)
{
	static const char *const desktops[NDESKTOPS] = { "desktop1", "desktop2", "desktop3",
							 "desktop4" };
	static const enum scan_severity sevs[] = { SCAN_SEV_HIGH, SCAN_SEV_MEDIUM, SCAN_SEV_LOW };
	bool tiny = bench_args(argc, argv, NULL, NULL);
	size_t rounds = tiny ? 3 : 60, napply = 0, ncut = 0;
	double *total, *ev, *scan, *store, *apply, *cut, *tagdrop, *release, p99;
	char exe[512], config[600], sigfile[600], out[8192], line[8192];
	struct sigaction sa = { .sa_handler = on_signal };
	struct dfw_policy *pol;
	struct sigdb *db;
	struct diag d = { 0 };
	pthread_t ts, tr;
	int self;
	ssize_t n;

	if (geteuid() != 0)
		die("needs root (network namespaces)");
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		die("cannot find my own directory");
	exe[n] = '\0';
	snprintf(bindir, sizeof(bindir), "%s", exe);
	*strrchr(bindir, '/') = '\0';
	snprintf(config, sizeof(config), "%s/../configs/vdi.ini", bindir);
	pol = policy_load(config, NULL, &d);
	if (!pol)
		die("%s: %s", config, d.n ? d.msgs[0] : "?");
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	lab_cmd("down", "--lab", LAB, NULL, NULL, 0);
	lab_made = true;
	if (lab_cmd("up", config, "--lab", LAB, NULL, 0) != 0)
		die("dfw-lab up %s --lab " LAB " failed", config);
	snprintf(sigfile, sizeof(sigfile), RUN_DIR "/signatures.txt");
	db = sigdb_load(sigfile, &d);
	if (!db)
		die("%s: %s", sigfile, d.n ? d.msgs[0] : "?");

	self = bench_netns_here();
	if (self < 0)
		die("my network namespace: %s", strerror(errno));
	{
		struct sockaddr_in any = { .sin_family = AF_INET, .sin_port = htons(PROBE_PORT) };
		struct sockaddr_in dc1 = vm_addr4(pol, "dc1");
		struct timeval tv = { 0, 100000 };

		rx = ns_socket("dc1", self);
		setsockopt(rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		if (bind(rx, (struct sockaddr *)&any, sizeof(any)) < 0)
			die("dc1: bind udp/%d: %s", PROBE_PORT, strerror(errno));
		for (size_t i = 0; i < NDESKTOPS; i++) {
			if (policy_find_vm(pol, desktops[i]) < 0)
				die("%s has no VM %s", config, desktops[i]);
			tx[i] = ns_socket(desktops[i], self);
			if (connect(tx[i], (struct sockaddr *)&dc1, sizeof(dc1)) < 0)
				die("%s: connect to dc1: %s", desktops[i], strerror(errno));
		}
	}
	atomic_store(&sender, -1);
	if (pthread_create(&ts, NULL, send_loop, NULL) || pthread_create(&tr, NULL, recv_loop, NULL))
		die("cannot start the probe threads");

	total = xcalloc(rounds, sizeof(double));
	ev = xcalloc(rounds, sizeof(double));
	scan = xcalloc(rounds, sizeof(double));
	store = xcalloc(rounds, sizeof(double));
	apply = xcalloc(rounds, sizeof(double));
	cut = xcalloc(rounds, sizeof(double));
	tagdrop = xcalloc(rounds, sizeof(double));
	release = xcalloc(rounds, sizeof(double));
	bench_note("lab " LAB ": %s, %zu infections; probes udp desktopN -> dc1:%d every %.1f ms, answered",
		   config, rounds, PROBE_PORT, (double)PROBE_INTERVAL_NS / 1e6);

	for (size_t r = 0; r < rounds; r++) {
		size_t k = r % NDESKTOPS;
		enum scan_severity sev = sevs[r % ARRAY_SIZE(sevs)];
		uint64_t t_write, t_drop, evns = 0, scns = 0, tgns = 0, rev = 0, realized = 0, us = 0;
		uint64_t cut_us = 0;
		unsigned last, first_drop;
		uint64_t last_change;
		const unsigned char *pat;
		const char *signame, *host = pol->inv.vms[policy_find_vm(pol, desktops[k])].host;
		char file[64], path[512];
		size_t len;
		int fd, rc;

		if (sigdb_pick(db, sev, &signame, &pat, &len) < 0)
			die("%s has no %s signature", sigfile, scan_severity_name(sev));
		snprintf(file, sizeof(file), "bench-r%zu.com", r);
		snprintf(path, sizeof(path), RUN_DIR "/sandbox/%s/%s/%s", host, desktops[k], file);

		/* A steady, answered stream from the desktop before the write. */
		atomic_store(&sender, -1);
		sleep_ms(5);
		atomic_store(&cur_round, (unsigned)r + 1);
		atomic_store(&nsent, 0);
		atomic_store(&nrecv, 0);
		atomic_store(&max_seq1, 0);
		atomic_store(&restore_mark, 0);
		atomic_store(&restored_ns, 0);
		atomic_store(&sender, (int)k);
		if (!wait_for(warm, 3000))
			die("%s: probes to dc1 do not arrive before the infection", desktops[k]);

		t_write = now_ns();
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || write(fd, pat, len) != (ssize_t)len || close(fd) < 0)
			die("%s: %s", path, strerror(errno));

		/* The drop: nothing has arrived for SILENCE_MS. */
		last = atomic_load(&nrecv);
		last_change = now_ns();
		for (;;) {
			unsigned now_recv = atomic_load(&nrecv);

			if (interrupted)
				die("interrupted");
			if (now_recv != last) {
				last = now_recv;
				last_change = now_ns();
			} else if (now_ns() - last_change > SILENCE_MS * 1000000ull) {
				break;
			}
			if (now_ns() - t_write > ROUND_TIMEOUT_MS * 1000000ull)
				die("round %zu: %s is not isolated %d ms after the infection", r,
				    desktops[k], ROUND_TIMEOUT_MS);
			sleep_ms(1);
		}
		first_drop = atomic_load(&max_seq1);
		if (first_drop >= atomic_load(&nsent))
			die("round %zu: no probe was sent after the last one that arrived", r);
		t_drop = sent_ns[first_drop];
		if (t_drop < t_write)
			die("round %zu: probes stopped arriving before the file was written", r);
		total[r] = ms(t_write, t_drop);

		/* The hypervisor-side stages, from the scanner's record. */
		if (!audit_detection(host, file, line, sizeof(line)) || !json_u64(line, "event_ns", &evns) ||
		    !json_u64(line, "scanned_ns", &scns) || !json_u64(line, "tagged_ns", &tgns) ||
		    !json_u64(line, "revision", &rev))
			die("round %zu: no complete detection record of %s in the audit log", r, file);
		ev[r] = ms(t_write, evns);
		scan[r] = ms(evns, scns);
		store[r] = ms(scns, tgns);
		tagdrop[r] = ms(tgns, t_drop);
		/* dfwd's commit of that revision (nothing else changed since). */
		{
			char prog[600];
			char *cargv[] = { prog, (char *)"ctl", (char *)"--lab", (char *)LAB,
					  (char *)"--", (char *)"--json", (char *)"status", NULL };

			snprintf(prog, sizeof(prog), "%s/dfw-lab", bindir);
			if (bench_run(cargv, out, sizeof(out)) == 0 &&
			    json_u64(out, "realized_revision", &realized) &&
			    json_u64(out, "last_update_us", &us) && realized == rev)
				apply[napply++] = (double)us / 1e3;
		}
		if (log_cut_us(host, rev, &cut_us))
			cut[ncut++] = (double)cut_us / 1e3;

		/* Release: a clean full scan (auto_release = yes). */
		atomic_store(&restore_mark, now_ns());
		rc = lab_cmd("scan", desktops[k], "--full", "--lab=" LAB, out, sizeof(out));
		if (rc != 0)
			die("round %zu: dfw-lab scan %s --full exited %d:\n%s", r, desktops[k], rc, out);
		if (!wait_for(restored, 5000))
			die("round %zu: %s does not reach dc1 again after its release", r, desktops[k]);
		release[r] = ms(atomic_load(&restore_mark), atomic_load(&restored_ns));
		if (!tiny && r % 10 == 9)
			bench_note("%zu infections, last: %.1f ms (event %.2f, scan %.2f, store %.2f, tag->drop %.1f)",
				   r + 1, total[r], ev[r], scan[r], store[r], tagdrop[r]);
	}
	atomic_store(&sender, -1);
	atomic_store(&quit, true);
	pthread_join(ts, NULL);
	pthread_join(tr, NULL);

	bench_figure("detect_infections", (double)rounds, "count");
	bench_figure("detect_probe_interval_ms", (double)PROBE_INTERVAL_NS / 1e6, "ms");
	bench_latency("detect_write_to_drop_ms", total, rounds, "ms");
	bench_latency("detect_stage_event_ms", ev, rounds, "ms");
	bench_latency("detect_stage_scan_ms", scan, rounds, "ms");
	bench_latency("detect_stage_store_ms", store, rounds, "ms");
	bench_latency("detect_stage_agent_apply_ms", apply, napply, "ms");
	bench_latency("detect_stage_agent_cut_ms", cut, ncut, "ms");
	bench_latency("detect_tag_to_drop_ms", tagdrop, rounds, "ms");
	bench_latency("detect_release_to_restore_ms", release, rounds, "ms");
	p99 = bench_quantile(total, rounds, 0.99);
	bench_figure("detect_p99_vs_heartbeat_ppm", p99 / HEARTBEAT_MS * 1e6, "ppm");
	bench_figure("detect_heartbeat_vs_p99", HEARTBEAT_MS / p99, "x");
	if (napply < rounds || ncut < rounds)
		bench_note("agent apply from %zu, connection cut from %zu of %zu rounds (others: a later revision realized, or no log line)",
			   napply, ncut, rounds);

	for (size_t i = 0; i < NDESKTOPS; i++)
		close(tx[i]);
	close(rx);
	close(self);
	free(total);
	free(ev);
	free(scan);
	free(store);
	free(apply);
	free(cut);
	free(tagdrop);
	free(release);
	sigdb_free(db);
	policy_free(pol);
	diag_free(&d);
	teardown();
	return 0;
}
