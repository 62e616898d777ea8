/* Dataplane benchmarks: issue targets 1-4 and 7 (docs/PERFORMANCE.md).
 *
 *  1. one tag change -> kernel commit acknowledged, at 1k and 10k local
 *     vNICs, through the real agent (store write, agent_sync); netlink
 *     bytes per change.  Each scale has a network namespace of its own,
 *     and the two take turns in blocks of changes;
 *  2. one tag change against a full recompile and reload of the same policy;
 *  3. full compile + commit of 1k VMs x 1k rules against `nft -f` of the
 *     same ruleset as text (written by plan_print_nft), and kernel objects
 *     against a naive one-rule-per-member-per-vNIC expansion;
 *  4. set elements per second through our batches, against `nft -f` and
 *     against the kernel's own (system) time for the same load;
 *  7. resident memory of a real dfwd at 10k vNICs and 1k groups;
 *  8. churn: tag changes written at a fixed rate by another thread, the
 *     agent realizing them as they come (coalesced), write-to-realized
 *     latency, and at the end the kernel's sets read back and compared
 *     with a fresh compile of the final store.
 *
 * Runs in a network namespace of its own (unshare), so nothing it loads is
 * seen elsewhere and everything goes when it exits.  Needs root. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dfw/agent.h"
#include "dfw/backend.h"
#include "dfw/compile.h"
#include "groups/groups.h"
#include "tagger/config.h"
#include "tagger/store.h"
#include "tests/bench/bench.h"

static char bindir[512];
static char tmpdir[64];

/* Reports the figure NAME_LABEL. */
static void figure(const char *name, const char *label, double v, const char *unit)
{
	char fig[96];

	snprintf(fig, sizeof(fig), "%s_%s", name, label);
	bench_figure(fig, v, unit);
}

static double ms_since(uint64_t t0)
{
	return (double)(now_ns() - t0) / 1e6;
}

/* Runs a command; returns its wall time in ms and (optionally) its system
 * CPU time in ms.  Output goes to /dev/null.  Dies when it fails. */
static double run(char *const argv[], double *sys_ms)
{
	struct rusage ru;
	uint64_t t0 = now_ns();
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(fd, 1);
		execvp(argv[0], argv);
		_exit(127);
	}
	if (pid < 0 || wait4(pid, &status, 0, &ru) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status))
		bench_die("%s failed", argv[0]);
	if (sys_ms)
		*sys_ms = (double)ru.ru_stime.tv_sec * 1e3 + (double)ru.ru_stime.tv_usec / 1e3;
	return ms_since(t0);
}

/* Writes a synthetic policy with dfw-gen and parses it. */
static struct dfw_policy *gen_policy(const char *name, unsigned hosts, unsigned vms,
				     unsigned local, unsigned groups, unsigned rules,
				     char **text)
{
	char path[256], gen[600], a[5][16];
	struct diag d = { 0 };
	struct dfw_policy *p;

	snprintf(path, sizeof(path), "%s/%s.ini", tmpdir, name);
	snprintf(gen, sizeof(gen), "%s/dfw-gen", bindir);
	snprintf(a[0], sizeof(a[0]), "%u", hosts);
	snprintf(a[1], sizeof(a[1]), "%u", vms);
	snprintf(a[2], sizeof(a[2]), "%u", local);
	snprintf(a[3], sizeof(a[3]), "%u", groups);
	snprintf(a[4], sizeof(a[4]), "%u", rules);
	{
		char *argv[] = { gen, (char *)"--hosts", a[0], (char *)"--vms", a[1],
				 (char *)"--local-vms", a[2], (char *)"--groups", a[3],
				 (char *)"--rules", a[4], (char *)"--seed", (char *)"7",
				 (char *)"-o", path, NULL };

		run(argv, NULL);
	}
	p = policy_load(path, text, &d);
	if (!p)
		bench_die("%s: %s", path, d.n ? d.msgs[0] : "?");
	return p;
}

static struct store *store_with(const char *name, const char *text)
{
	char path[256], err[256];
	struct store *s;
	struct store_op ops[] = {
		{ STORE_PUT, "policy", text }, { STORE_PUT, "policy-file", name },
	};
	uint64_t rev;

	snprintf(path, sizeof(path), "%s/%s.db", tmpdir, name);
	s = store_open(path, true, err, sizeof(err));
	if (!s || store_txn(s, ops, 2, NULL, NULL, &rev, err, sizeof(err)) != 0)
		bench_die("store %s: %s", path, err);
	return s;
}

/* --- 1, 2: tag changes through the real agent -------------------------------- */

/* One scale of the tag benchmark: a policy, its store and a real agent, in
 * a network namespace of its own, so that the kernel's commit walks only
 * this scale's tables.  The two scales take turns in blocks of changes
 * (tag_rounds): both see the machine as it is in the same minutes. */
struct tag_run {
	const char *label;
	int netns;
	struct dfw_policy *p;
	char *text;
	struct store *s;
	struct agent *a;
	FILE *devnull;
	double *lat, *book, *bytes;
	unsigned n;
};

static void enter_netns(int fd)
{
	if (setns(fd, CLONE_NEWNET) < 0)
		bench_die("setns: %s", strerror(errno));
}

static void tag_open(struct tag_run *t, const char *label, unsigned total_vms, unsigned local,
		     unsigned groups, unsigned rules, unsigned changes)
{
	char name[64], storepath[256], err[256];
	struct agent_info info;

	memset(t, 0, sizeof(*t));
	t->label = label;
	if (unshare(CLONE_NEWNET) < 0)
		bench_die("unshare(CLONE_NEWNET): %s", strerror(errno));
	t->netns = bench_netns_here();
	if (t->netns < 0)
		bench_die("my network namespace: %s", strerror(errno));
	t->devnull = fopen("/dev/null", "w");
	t->lat = xcalloc(changes, sizeof(*t->lat));
	t->book = xcalloc(changes, sizeof(*t->book));
	t->bytes = xcalloc(changes, sizeof(*t->bytes));
	snprintf(name, sizeof(name), "tags-%s", label);
	t->p = gen_policy(name, total_vms == local ? 1 : 10, total_vms, local, groups, rules,
			  &t->text);
	t->s = store_with(name, t->text);
	snprintf(storepath, sizeof(storepath), "%s/%s.db", tmpdir, name);
	{
		struct agent_opts o = { .host = "hv1", .store_uri = storepath,
					.table = "dfwbench", .log = getenv("BENCH_LOG") ? stderr : t->devnull };

		t->a = agent_new(&o, err, sizeof(err));
		if (!t->a)
			bench_die("agent: %s", err);
	}
	if (agent_sync(t->a) < 0)
		bench_die("the first load failed");
	agent_info(t->a, &info);
	bench_note("%s: %zu local vNICs, %u VMs, %zu groups, %zu rules: %zu chains, %zu sets",
		   label, info.vnics, total_vms, t->p->inv.ngroups, t->p->nrules, info.chains,
		   info.sets);
}

/* Quarantines (put) or releases VM vm through the store and the agent, and
 * records the agent's figures for the change. */
static void tag_change(struct tag_run *t, const char *vm, bool put)
{
	char key[300], err[256];
	long found = policy_find_vm(t->p, vm);
	struct store_op op;
	struct agent_info info;
	uint64_t rev;

	if (found < 0 || strcmp(t->p->inv.vms[found].host, "hv1"))
		bench_die("VM %s is not local at scale %s", vm, t->label);
	snprintf(key, sizeof(key), "tag/%s/threat.high", vm);
	op = (struct store_op){ put ? STORE_PUT : STORE_DEL, key, put ? "" : NULL };
	if (store_txn(t->s, &op, 1, NULL, NULL, &rev, err, sizeof(err)) != 0)
		bench_die("store: %s", err);
	if (agent_sync(t->a) < 0)
		bench_die("tag change %u was not realized", t->n);
	agent_info(t->a, &info);
	if (info.rev != rev)
		bench_die("realized %llu, wrote %llu", (unsigned long long)info.rev,
		    (unsigned long long)rev);
	t->lat[t->n] = (double)info.last_update_us;
	t->book[t->n] = (double)info.last_book_us;
	t->bytes[t->n] = (double)info.last_bytes;
	t->n++;
}

/* Prints the run's figures; returns its commit p50 and p99. */
static void tag_figures(const struct tag_run *t, double *p50, double *p99)
{
	char fig[64];

	*p50 = bench_quantile(t->lat, t->n, 0.5);
	*p99 = bench_quantile(t->lat, t->n, 0.99);
	snprintf(fig, sizeof(fig), "tag_commit_us_%s", t->label);
	bench_latency(fig, t->lat, t->n, "us");
	/* After the ack, before the next change can start: the installed
	 * plan's sets take the elements (sorted arrays). */
	snprintf(fig, sizeof(fig), "tag_after_ack_us_%s", t->label);
	bench_latency(fig, t->book, t->n, "us");
	figure("tag_netlink_bytes", t->label, bench_quantile(t->bytes, t->n, 0.5), "bytes");
	figure("tag_netlink_bytes_max", t->label, bench_quantile(t->bytes, t->n, 1.0), "bytes");
}

/* 2: the run's policy compiled from scratch and loaded whole, three times
 * (medians in ms), in the run's namespace beside its agent's table. */
static void tag_full(const struct tag_run *t, double *compile_ms, double *load_ms)
{
	char err[256];
	struct backend *be;
	double comp[3], load[3];
	struct diag d = { 0 };

	enter_netns(t->netns);
	if (!(be = backend_open("dfwfull", err, sizeof(err))))
		bench_die("backend: %s", err);
	for (int r = 0; r < 3; r++) {
		uint64_t t0 = now_ns();
		struct gengine *e = gengine_new(&t->p->inv, t->p->file, &d);
		struct plan *pl = plan_compile(t->p, e, "hv1");

		comp[r] = ms_since(t0);
		t0 = now_ns();
		if (backend_load(be, pl, false, NULL, err, sizeof(err)) < 0)
			bench_die("full load: %s", err);
		load[r] = ms_since(t0);
		plan_free(pl);
		gengine_free(e);
	}
	*compile_ms = bench_quantile(comp, 3, 0.5);
	*load_ms = bench_quantile(load, 3, 0.5);
	backend_close(be);
}

static void tag_close(struct tag_run *t)
{
	agent_free(t->a);
	store_close(t->s);
	policy_free(t->p);
	free(t->text);
	free(t->lat);
	free(t->book);
	free(t->bytes);
	fclose(t->devnull);
	close(t->netns);
}

#define TAG_BLOCK 10 /* changes per turn of a scale */

/* 1 and 2: a local VM of the small scale (local at both) quarantined and
 * released, changes/2 times, by both scales in turns of TAG_BLOCK changes,
 * the scale that goes first alternating. */
static void tag_rounds(bool tiny)
{
	unsigned changes = tiny ? 20 : 2000;
	struct tag_run run[2];
	size_t *locals, nlocal = 0;
	double p50[2], p99[2], comp, load;
	int home = bench_netns_here();

	if (home < 0)
		bench_die("my network namespace: %s", strerror(errno));
	tag_open(&run[0], tiny ? "100" : "1k", tiny ? 300 : 10000, tiny ? 100 : 1000,
		 tiny ? 20 : 1000, tiny ? 50 : 1000, changes);
	tag_open(&run[1], tiny ? "300" : "10k", tiny ? 300 : 10000, tiny ? 300 : 10000,
		 tiny ? 20 : 1000, tiny ? 50 : 1000, changes);
	locals = xcalloc(run[0].p->inv.nvms, sizeof(*locals));
	for (size_t i = 0; i < run[0].p->inv.nvms; i++)
		if (!strcmp(run[0].p->inv.vms[i].host, "hv1"))
			locals[nlocal++] = i;
	srand(11);
	for (unsigned b = 0; b < changes; b += TAG_BLOCK) {
		const char *vms[TAG_BLOCK / 2];

		for (unsigned k = 0; k < TAG_BLOCK / 2; k++)
			vms[k] = run[0].p->inv.vms[locals[(size_t)rand() % nlocal]].name;
		for (unsigned turn = 0; turn < 2; turn++) {
			struct tag_run *t = &run[(b / TAG_BLOCK + turn) % 2];

			enter_netns(t->netns);
			for (unsigned k = 0; k < TAG_BLOCK && b + k < changes; k++)
				tag_change(t, vms[k / 2], k % 2 == 0);
		}
	}
	for (int i = 0; i < 2; i++)
		tag_figures(&run[i], &p50[i], &p99[i]);
	bench_figure("tag_commit_p99_ratio_large_vs_small", p99[1] / p99[0], "ratio");
	tag_full(&run[1], &comp, &load);
	bench_figure("full_recompile_ms_large", comp, "ms");
	bench_figure("full_reload_ms_large", load, "ms");
	bench_figure("tag_vs_full_ratio_large", p50[1] / 1e3 / (comp + load), "ratio");
	enter_netns(home);
	close(home);
	for (int i = 0; i < 2; i++)
		tag_close(&run[i]);
	free(locals);
}

/* --- 3: full compile + commit against nft -f; kernel objects ------------------ */

/* Members a rule side expands to when every member is a rule of its own. */
static size_t side_members(const struct dfw_policy *p, const struct gengine *e,
			   const struct dfw_side *side)
{
	size_t n = 0;

	if (side->any)
		return 1;
	for (size_t i = 0; i < side->nrefs; i++) {
		const struct dfw_ref *r = &side->refs[i];

		if (r->kind == REF_GROUP) {
			size_t ncidr;

			gengine_addrs(e, r->idx, &ncidr);
			n += gengine_count(e, r->idx) + ncidr;
		} else {
			n++;
		}
	}
	return n;
}

static const struct dfw_rule *rule_by_id(const struct dfw_policy *p, uint32_t id)
{
	for (size_t i = 0; i < p->nrules; i++)
		if (p->rules[i].id == id)
			return &p->rules[i];
	return NULL;
}

static void objects(const struct dfw_policy *p, const struct gengine *e, const struct plan *pl,
		    size_t *ours, size_t *naive)
{
	*ours = 0;
	*naive = 0;
	for (size_t i = 0; i < pl->nchains; i++) {
		struct disp_size sz;

		disp_size(&pl->chains[i], &sz);
		*ours += sz.rules + sz.elems;
	}
	for (size_t i = 0; i < pl->nsets; i++)
		*ours += pl->sets[i].nelems;
	for (size_t i = 0; i < pl->nports; i++) {
		const struct pchain *c[2] = { plan_find_chain(pl, pl->ports[i].out_chain),
					      plan_find_chain(pl, pl->ports[i].in_chain) };

		*ours += 5 + pl->ports[i].naddrs; /* 2 maps, MAC, addresses, 2 dispatch */
		for (size_t a = 0; a < pl->ports[i].naddrs; a++) /* to the port's own */
			*ours += pport_dst_addr(&pl->ports[i].addrs[a]);
		for (int dir = 0; dir < 2; dir++) {
			for (size_t k = 0; c[dir] && k < c[dir]->nrule_ids; k++) {
				const struct dfw_rule *r = rule_by_id(p, c[dir]->rule_ids[k]);
				size_t svcs = r->nsvcs ? r->nsvcs : 1;

				/* out: one rule per destination member; in: per source. */
				*naive += side_members(p, e, dir == 0 ? &r->dst : &r->src) * svcs;
			}
		}
	}
}

#define FULL_ROUNDS 5

static void full_vs_nft(unsigned vms, unsigned rules, unsigned groups, const char *label)
{
	char *text = NULL, path[256], err[256];
	struct dfw_policy *p = gen_policy(label, 1, vms, vms, groups, rules, &text);
	struct diag d = { 0 };
	struct gengine *e = gengine_new(&p->inv, p->file, &d);
	struct backend *be = backend_open("dfw", err, sizeof(err));
	double ours[FULL_ROUNDS], comp[FULL_ROUNDS], sys[FULL_ROUNDS], again[FULL_ROUNDS];
	double nft[FULL_ROUNDS], nft_sys[FULL_ROUNDS], nft_again[FULL_ROUNDS];
	double speedup[FULL_ROUNDS], speedup_again[FULL_ROUNDS];
	char *flush[] = { (char *)"nft", (char *)"flush", (char *)"ruleset", NULL };
	char *load[] = { (char *)"nft", (char *)"-f", path, NULL };
	struct plan *pl;
	size_t n_ours, n_naive;
	FILE *f;

	if (!e || !be)
		bench_die("setup: %s", err);
	pl = plan_compile(p, e, "hv1");
	snprintf(path, sizeof(path), "%s/%s.nft", tmpdir, label);
	if (!(f = fopen(path, "w")))
		bench_die("%s: %s", path, strerror(errno));
	/* Deletes what the file then adds: a no-op into an empty ruleset. */
	fprintf(f, "table bridge dfw\ndelete table bridge dfw\n"
		   "table inet dfw\ndelete table inet dfw\n");
	plan_print_nft(pl, "dfw", f);
	fclose(f);
	/* Rounds of: dfw into an empty ruleset (flushed, untimed), dfw again
	 * over its own load (a reload replaces the tables in the same
	 * transaction), then nft -f the same two ways (the file deletes the
	 * tables first, as dfw's batch does).  Each round's ratios compare
	 * runs of the same minute: this shared machine drifts by 20-30%. */
	for (int r = 0; r < FULL_ROUNDS; r++) {
		uint64_t t0;
		struct rusage r0, r1;

		run(flush, NULL);
		t0 = now_ns();
		plan_free(pl);
		pl = plan_compile(p, e, "hv1");
		comp[r] = ms_since(t0);
		getrusage(RUSAGE_SELF, &r0);
		if (backend_load(be, pl, false, NULL, err, sizeof(err)) < 0)
			bench_die("load: %s", err);
		getrusage(RUSAGE_SELF, &r1);
		ours[r] = ms_since(t0);
		sys[r] = (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e3 +
			 (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e3;
		t0 = now_ns();
		plan_free(pl);
		pl = plan_compile(p, e, "hv1");
		if (backend_load(be, pl, false, NULL, err, sizeof(err)) < 0)
			bench_die("reload: %s", err);
		again[r] = ms_since(t0);
		run(flush, NULL);
		nft[r] = run(load, &nft_sys[r]);
		nft_again[r] = run(load, NULL);
		speedup[r] = nft[r] / ours[r];
		speedup_again[r] = nft_again[r] / again[r];
	}
	run(flush, NULL);
	figure("full_compile_commit_ms", label, bench_quantile(ours, FULL_ROUNDS, 0.5), "ms");
	figure("full_compile_ms", label, bench_quantile(comp, FULL_ROUNDS, 0.5), "ms");
	figure("full_commit_kernel_ms", label, bench_quantile(sys, FULL_ROUNDS, 0.5), "ms");
	figure("full_nft_f_ms", label, bench_quantile(nft, FULL_ROUNDS, 0.5), "ms");
	figure("full_nft_f_kernel_ms", label, bench_quantile(nft_sys, FULL_ROUNDS, 0.5), "ms");
	figure("full_speedup_vs_nft_f", label, bench_quantile(speedup, FULL_ROUNDS, 0.5), "ratio");
	figure("full_reload_compile_commit_ms", label, bench_quantile(again, FULL_ROUNDS, 0.5), "ms");
	figure("full_reload_nft_f_ms", label, bench_quantile(nft_again, FULL_ROUNDS, 0.5), "ms");
	figure("full_reload_speedup_vs_nft_f", label, bench_quantile(speedup_again, FULL_ROUNDS, 0.5), "ratio");
	bench_note("%s: speedup per round, fresh %.2f-%.2f, reload %.2f-%.2f", label,
		   bench_quantile(speedup, FULL_ROUNDS, 0), bench_quantile(speedup, FULL_ROUNDS, 1),
		   bench_quantile(speedup_again, FULL_ROUNDS, 0),
		   bench_quantile(speedup_again, FULL_ROUNDS, 1));
	objects(p, e, pl, &n_ours, &n_naive);
	{
		struct disp_size sz, all = { 0 };
		size_t nrules = 0;

		for (size_t i = 0; i < pl->nchains; i++) {
			disp_size(&pl->chains[i], &sz);
			nrules += pl->chains[i].nrules;
			all.chains += sz.chains;
			all.rules += sz.rules;
			all.maps += sz.maps;
			all.elems += sz.elems;
			all.walked += sz.walked;
		}
		bench_note("%s: %zu policy chains of %zu rules, in the kernel %zu chains of %zu rules "
			   "with %zu dispatch maps of %zu elements; %zu sets; %zu of the policy chains' "
			   "rules are outside the dispatched runs (every new flow meets them)", label,
			   pl->nchains, nrules, all.chains, all.rules, all.maps, all.elems, pl->nsets,
			   all.walked);
	}
	figure("kernel_objects", label, (double)n_ours, "objects");
	figure("kernel_objects_naive", label, (double)n_naive, "objects");
	figure("kernel_objects_ratio", label, n_naive ? (double)n_ours / (double)n_naive : 0, "ratio");
	plan_free(pl);
	backend_close(be);
	gengine_free(e);
	policy_free(p);
	free(text);
	diag_free(&d);
}

/* --- 4: set elements per second ------------------------------------------------ */

#define ELEM_ROUNDS 5

static void elements_rate(size_t n)
{
	struct plan pl = { 0 };
	struct pset set = { .family = AF_INET };
	struct backend *be;
	struct rusage r0, r1;
	char err[256], path[256];
	char *flush[] = { (char *)"nft", (char *)"flush", (char *)"ruleset", NULL };
	char *load[] = { (char *)"nft", (char *)"-f", path, NULL };
	double ours[ELEM_ROUNDS], sys[ELEM_ROUNDS], nft[ELEM_ROUNDS];
	FILE *f;

	snprintf(set.name, sizeof(set.name), "g-bench-4");
	set.elems = xcalloc(n, sizeof(*set.elems));
	for (size_t i = 0; i < n; i++) {
		/* 10.0.0.0 upwards, every other address: no two adjacent. */
		uint32_t a = htonl(0x0a000000u + 2 * (uint32_t)i + 1);

		set.elems[i].family = AF_INET;
		set.elems[i].plen = 32;
		memcpy(set.elems[i].a, &a, 4);
	}
	set.nelems = n;
	pl.sets = &set;
	pl.nsets = 1;
	be = backend_open("dfw", err, sizeof(err));
	if (!be)
		bench_die("backend: %s", err);
	snprintf(path, sizeof(path), "%s/elements.nft", tmpdir);
	if (!(f = fopen(path, "w")))
		bench_die("%s: %s", path, strerror(errno));
	plan_print_nft(&pl, "dfw", f);
	fclose(f);
	/* Rounds alternate, each load into an empty ruleset (flushed, not
	 * timed): a load over the last round's table would also time the
	 * deletion of its elements. */
	for (int r = 0; r < ELEM_ROUNDS; r++) {
		uint64_t t0;

		run(flush, NULL);
		t0 = now_ns();
		getrusage(RUSAGE_SELF, &r0);
		if (backend_load(be, &pl, false, NULL, err, sizeof(err)) < 0)
			bench_die("load: %s", err);
		getrusage(RUSAGE_SELF, &r1);
		ours[r] = ms_since(t0);
		sys[r] = (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1e3 +
			 (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e3;
		run(flush, NULL);
		nft[r] = run(load, NULL);
	}
	{
		double o = bench_quantile(ours, ELEM_ROUNDS, 0.5);
		double s = bench_quantile(sys, ELEM_ROUNDS, 0.5);
		double t = bench_quantile(nft, ELEM_ROUNDS, 0.5);

		bench_note("%zu IPv4 elements in one interval set, one batch; medians of %d rounds",
			   n, ELEM_ROUNDS);
		bench_figure("set_elems_per_s_ours", (double)n / (o / 1e3), "elem/s");
		bench_figure("set_elems_per_s_nft_f", (double)n / (t / 1e3), "elem/s");
		bench_figure("set_elems_kernel_floor_per_s", (double)n / (s / 1e3), "elem/s");
		bench_figure("set_elems_ratio_vs_nft_f", t / o, "ratio");
		bench_figure("set_elems_ratio_vs_kernel_floor", s / o, "ratio");
	}
	run(flush, NULL);
	backend_close(be);
	free(set.elems);
}

/* --- 7: a real dfwd's resident memory ------------------------------------------- */

static void dfwd_rss(unsigned vms, unsigned groups, unsigned rules)
{
	char *text = NULL, dfwd[600], store[256], sock[256], line[256], status[64];
	struct dfw_policy *p = gen_policy("rss", 1, vms, vms, groups, rules, &text);
	struct store *s = store_with("rss", text);
	long rss = -1;
	pid_t pid;

	snprintf(dfwd, sizeof(dfwd), "%s/dfwd", bindir);
	snprintf(store, sizeof(store), "%s/rss.db", tmpdir);
	snprintf(sock, sizeof(sock), "%s/rss.sock", tmpdir);
	pid = fork();
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(fd, 2);
		execl(dfwd, dfwd, "--host", "hv1", "--store", store, "--socket", sock,
		      "--table", "dfwrss", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 600 && access(sock, F_OK) < 0; i++)
		usleep(100000);
	if (access(sock, F_OK) < 0)
		bench_die("dfwd did not come up");
	snprintf(status, sizeof(status), "/proc/%d/status", (int)pid);
	{
		FILE *f = fopen(status, "r");

		while (f && fgets(line, sizeof(line), f))
			if (sscanf(line, "VmRSS: %ld kB", &rss) == 1)
				break;
		if (f)
			fclose(f);
	}
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	bench_note("dfwd realizing %u local vNICs, %u groups, %u rules", vms, groups, rules);
	bench_figure("dfwd_rss_mib", (double)rss / 1024.0, "MiB");
	store_close(s);
	policy_free(p);
	free(text);
}

/* --- 8: churn ----------------------------------------------------------------- */

struct churn {
	const char *store_path;
	const struct dfw_policy *p;
	unsigned rate, seconds;
	uint64_t *written_ns;  /* by revision */
	size_t cap;
	bool *tagged;          /* per VM: the writer's view of the final state */
	uint64_t last_rev;
	volatile bool done;
	size_t writes;
};

static void *churn_writer(void *arg)
{
	struct churn *c = arg;
	char err[256], key[300];
	struct store *s = store_open(c->store_path, false, err, sizeof(err));
	uint64_t start = now_ns(), period = 1000000000ull / c->rate;
	unsigned seed = 5;

	if (!s)
		bench_die("writer: %s", err);
	for (size_t i = 0; now_ns() - start < (uint64_t)c->seconds * 1000000000ull; i++) {
		size_t vm = (size_t)rand_r(&seed) % c->p->inv.nvms;
		struct store_op op;
		uint64_t rev, due = start + i * period;

		while (now_ns() < due)
			;
		snprintf(key, sizeof(key), "tag/%s/threat.high", c->p->inv.vms[vm].name);
		c->tagged[vm] = !c->tagged[vm];
		op = (struct store_op){ c->tagged[vm] ? STORE_PUT : STORE_DEL, key,
					c->tagged[vm] ? "" : NULL };
		if (store_txn(s, &op, 1, NULL, NULL, &rev, err, sizeof(err)) != 0)
			bench_die("writer: %s", err);
		if (rev < c->cap)
			c->written_ns[rev] = now_ns();
		c->last_rev = rev;
		c->writes++;
	}
	c->done = true;
	store_close(s);
	return NULL;
}

struct elem_list {
	struct dfw_addr *a;
	size_t n, cap;
	uint8_t family;
};

static void collect_elem(void *arg, const uint8_t *key, uint32_t len, bool end,
			 uint64_t left_ms)
{
	struct elem_list *l = arg;
	struct dfw_addr a = { .family = l->family, .plen = len == 16 ? 128 : 32 };

	memcpy(a.a, key, len > 16 ? 16 : len);
	grow((void **)&l->a, &l->cap, l->n + 1, sizeof(*l->a));
	l->a[l->n++] = a;
}

static int cmp_elem(const void *x, const void *y)
{
	return addr_cmp(x, y);
}

/* Kernel sets (hash and vNIC-id sets: what tags change) against a plan. */
static size_t kernel_mismatches(struct backend *be, const struct plan *want)
{
	size_t bad = 0;
	char err[256];

	for (size_t i = 0; i < want->nsets; i++) {
		const struct pset *s = &want->sets[i];
		struct elem_list l = { .family = s->family };

		if (s->interval)
			continue;
		if (backend_read_set(be, s->name, collect_elem, &l, err, sizeof(err)) < 0)
			bench_die("%s", err);
		if (l.n)
			qsort(l.a, l.n, sizeof(*l.a), cmp_elem);
		if (l.n != s->nelems || (l.n && memcmp(l.a, s->elems, l.n * sizeof(*l.a))))
			bad++;
		free(l.a);
	}
	return bad;
}

/* Figure name: prefix_what. */
static const char *fig(char *buf, size_t len, const char *prefix, const char *what)
{
	snprintf(buf, len, "%s_%s", prefix, what);
	return buf;
}

/* The agent's quarantine cuts in its log: how many, and their median in ms. */
static void cuts_in_log(const char *path, size_t *n, double *p50)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	double *ms = NULL;
	size_t cap = 0;

	*n = 0;
	*p50 = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		const char *at = strstr(line, "quarantine: cut ");
		unsigned long long us;

		if (!at || !(at = strstr(at, ") in ")) || sscanf(at, ") in %llu us", &us) != 1)
			continue;
		grow((void **)&ms, &cap, *n + 1, sizeof(*ms));
		ms[(*n)++] = (double)us / 1000.0;
	}
	fclose(f);
	if (*n)
		*p50 = bench_quantile(ms, *n, 0.5);
	free(ms);
}

/* prefix names the figures and the run's files.  With ct_entries, the run
 * has a network namespace of its own whose conntrack table holds that many
 * entries of other addresses, so that each quarantine's connection cut
 * walks them. */
static void churn(bool tiny, unsigned rate, unsigned seconds, const char *prefix,
		  size_t ct_entries)
{
	char *text = NULL, storepath[256], err[256], name[96], logpath[256];
	struct dfw_policy *p = tiny ? gen_policy(prefix, 3, 300, 100, 20, 50, &text)
				    : gen_policy(prefix, 10, 10000, 1000, 1000, 1000, &text);
	struct store *s = store_with(prefix, text);
	FILE *devnull = fopen("/dev/null", "w"), *log = devnull;
	int home = -1;
	struct churn c = { .p = p, .rate = rate, .seconds = seconds };
	struct agent_info info;
	struct agent *a;
	pthread_t writer;
	double *lat;
	size_t nlat = 0, batches = 0;
	uint64_t seen = 1;

	if (ct_entries) {
		struct bench_ct *ct;

		if ((home = bench_netns_here()) < 0)
			bench_die("my network namespace: %s", strerror(errno));
		if (unshare(CLONE_NEWNET) < 0)
			bench_die("unshare(CLONE_NEWNET): %s", strerror(errno));
		ct = bench_ct_open();
		bench_ct_fill(ct, 0, ct_entries);
		bench_ct_close(ct);
		bench_note("%s: %ld conntrack entries in the agent's namespace", prefix,
			   backend_ct_entries());
		snprintf(logpath, sizeof(logpath), "%s/%s.log", tmpdir, prefix);
		if (!(log = fopen(logpath, "w")))
			bench_die("%s: %s", logpath, strerror(errno));
	}
	snprintf(storepath, sizeof(storepath), "%s/%s.db", tmpdir, prefix);
	c.store_path = storepath;
	c.cap = (size_t)rate * seconds + 16;
	c.written_ns = xcalloc(c.cap, sizeof(*c.written_ns));
	c.tagged = xcalloc(p->inv.nvms, sizeof(*c.tagged));
	lat = xcalloc(c.cap, sizeof(*lat));
	{
		struct agent_opts o = { .host = "hv1", .store_uri = storepath,
					.table = "dfwchurn", .log = log };

		if (!(a = agent_new(&o, err, sizeof(err))))
			bench_die("agent: %s", err);
	}
	if (agent_sync(a) < 0)
		bench_die("churn: first load failed");
	if (pthread_create(&writer, NULL, churn_writer, &c))
		bench_die("pthread_create");
	for (;;) {
		struct pollfd pfd = { .fd = agent_store_fd(a), .events = POLLIN };
		uint64_t now;

		poll(&pfd, 1, 5);
		agent_store_ack(a);
		if (agent_sync(a) < 0)
			bench_die("churn: a batch was not realized");
		agent_info(a, &info);
		now = now_ns();
		if (info.rev > seen) {
			batches++;
			for (uint64_t r = seen + 1; r <= info.rev && r < c.cap; r++)
				if (c.written_ns[r])
					lat[nlat++] = (double)(now - c.written_ns[r]) / 1e6;
			seen = info.rev;
		}
		if (c.done && info.rev >= c.last_rev)
			break;
	}
	pthread_join(writer, NULL);
	bench_note("%s: %zu tag changes in %u s by another thread, %zu realizations", prefix,
		   c.writes, seconds, batches);
	bench_figure(fig(name, sizeof(name), prefix, "changes_per_s"), (double)c.writes / seconds,
		     "changes/s");
	bench_figure(fig(name, sizeof(name), prefix, "changes_per_batch"),
		     batches ? (double)c.writes / (double)batches : 0, "changes");
	bench_latency(fig(name, sizeof(name), prefix, "apply_ms"), lat, nlat, "ms");
	{
		/* The end state: a fresh compile of what the writer left... */
		struct diag d = { 0 };
		struct gengine *e = gengine_new(&p->inv, p->file, &d);
		struct backend *be = backend_open("dfwchurn", err, sizeof(err));
		struct plan *want;
		const char *tag = "threat.high";

		for (size_t i = 0; i < p->inv.nvms; i++)
			if (c.tagged[i])
				gengine_set_tags(e, i, &tag, 1, NULL, NULL);
		want = plan_compile(p, e, "hv1");
		/* ...against what the kernel holds. */
		bench_figure(fig(name, sizeof(name), prefix, "kernel_sets_differing"),
			     (double)kernel_mismatches(be, want), "sets");
		plan_free(want);
		backend_close(be);
		gengine_free(e);
	}
	agent_free(a); /* after the cuts still queued */
	if (ct_entries) {
		size_t ncuts;
		double cut_ms;

		fclose(log);
		cuts_in_log(logpath, &ncuts, &cut_ms);
		bench_note("%s: %zu connection cuts (on the agent's cutter thread), median %.1f ms",
			   prefix, ncuts, cut_ms);
		enter_netns(home);
		close(home);
	}
	store_close(s);
	policy_free(p);
	free(text);
	free(c.written_ns);
	free(c.tagged);
	free(lat);
	fclose(devnull);
}

/* --only PART runs one part: tags, full, elements, rss, churn or churnct. */
static bool want(const char *only, const char *part)
{
	return !only || !strcmp(only, part);
}

int main(int argc, char **argv)
{
	static const char *const parts[] = { "tags",  "full",	 "elements", "rss",
					     "churn", "churnct", NULL };
	const char *only;
	bool tiny = bench_args(argc, argv, parts, &only);
	char exe[512];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

	if (n <= 0)
		bench_die("cannot find my own path");
	exe[n] = '\0';
	snprintf(bindir, sizeof(bindir), "%s", exe);
	*strrchr(bindir, '/') = '\0';
	if (unshare(CLONE_NEWNET) < 0)
		bench_die("unshare(CLONE_NEWNET): %s (needs root)", strerror(errno));
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/dfw-bench-XXXXXX");
	if (!mkdtemp(tmpdir))
		bench_die("mkdtemp: %s", strerror(errno));

	if (want(only, "tags")) /* 1 and 2 */
		tag_rounds(tiny);
	if (want(only, "full")) /* 3 */
		full_vs_nft(tiny ? 100 : 1000, tiny ? 100 : 1000, tiny ? 20 : 100,
			    tiny ? "100x100" : "1kx1k");
	if (want(only, "elements")) /* 4 */
		elements_rate(tiny ? 2000 : 300000);
	if (want(only, "rss")) /* 7 */
		dfwd_rss(tiny ? 300 : 10000, tiny ? 20 : 1000, tiny ? 50 : 1000);
	if (want(only, "churn")) /* 8 */
		churn(tiny, tiny ? 200 : 1000, tiny ? 2 : 60, "churn", 0);
	if (want(only, "churnct")) /* 8, beside a full conntrack table */
		churn(tiny, tiny ? 200 : 1000, tiny ? 2 : 60, "churn_ct",
		      tiny ? 2000 : 100000);

	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			bench_note("could not remove %s", tmpdir);
	}
	return 0;
}
