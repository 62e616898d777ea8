/* Membership-engine benchmark, for the issue target "100k VMs x 1k groups
 * evaluated from scratch <= 1 s; one tag delta <= 100 us".
 *
 * The inventory is a policy written by dfw-gen (next to this program) and read
 * with policy_load, so the engine sees exactly what a parsed policy gives it.
 * --tiny: 1k VMs x 50 groups x 100 rules, few samples (the `make check` run). */
#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "groups/groups.h"
#include "tagger/config.h"
#include "tests/bench/bench.h"

struct scale {
	const char *vms, *groups, *rules, *hosts, *tags;
	size_t eval_runs;     /* gengine_new from scratch, median reported */
	size_t delta_samples; /* quarantine on/off of one VM */
};

static const struct scale full = { "100000", "1000", "10000", "100", "20", 5, 10000 };
static const struct scale tiny = { "1000", "50", "100", "10", "10", 3, 1000 };

#define TARGET_EVAL_MS 1000.0

static double ms_since(uint64_t t0)
{
	return (double)(now_ns() - t0) / 1e6;
}

static uint64_t rnd(uint64_t *s) /* splitmix64: the same VMs every run */
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* dfw-gen is built next to the benchmarks (both in the build directory). */
static int gen_path(char *buf, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n < 0) {
		fprintf(stderr, "bench-groups: /proc/self/exe: %s\n", strerror(errno));
		return -1;
	}
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	if ((size_t)snprintf(buf, len, "%s/dfw-gen", slash ? self : ".") >= len) {
		fprintf(stderr, "bench-groups: %s: path too long\n", self);
		return -1;
	}
	if (access(buf, X_OK) < 0) {
		fprintf(stderr, "bench-groups: %s: %s (build it with 'make build/dfw-gen')\n",
			buf, strerror(errno));
		return -1;
	}
	return 0;
}

/* Runs dfw-gen at scale s into path. */
static int generate(const struct scale *s, const char *path)
{
	char gen[PATH_MAX];
	const char *argv[] = {
		gen, "--vms", s->vms, "--groups", s->groups, "--rules", s->rules,
		"--hosts", s->hosts, "--tags", s->tags, "--seed", "1", "-o", path, NULL
	};
	pid_t pid;
	int status, err;

	if (gen_path(gen, sizeof(gen)) < 0)
		return -1;
	err = posix_spawn(&pid, gen, NULL, NULL, (char *const *)argv, environ);
	if (err) {
		fprintf(stderr, "bench-groups: %s: %s\n", gen, strerror(err));
		return -1;
	}
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "bench-groups: %s --vms %s --groups %s --rules %s failed\n",
			gen, s->vms, s->groups, s->rules);
		return -1;
	}
	return 0;
}

static void count_delta(void *arg, size_t group, size_t vm, bool joined, bool base)
{
	if (!base)
		(*(size_t *)arg)++;
}

/* The declared tags other than threat.*, which only quarantine looks at. */
static size_t plain_tags(const struct dfw_policy *p, const char **out)
{
	size_t n = 0;

	for (size_t i = 0; i < p->tags.n; i++)
		if (strncasecmp(p->tags.v[i], "threat.", 7))
			out[n++] = p->tags.v[i];
	return n;
}

static int bench(const struct scale *s, const char *path)
{
	struct dfw_policy *p = NULL;
	struct gengine *e = NULL;
	struct diag d = { 0 };
	double *samples = NULL, ms;
	const char **tags = NULL, *vmtags[3];
	bool *quarantined = NULL;
	size_t nvms, ntags, deltas = 0;
	uint64_t t0, seed = 1;
	long q;
	int rc = -1;

	t0 = now_ns();
	if (generate(s, path) < 0)
		goto out;
	bench_note("dfw-gen: %.0f ms", ms_since(t0));

	t0 = now_ns();
	p = policy_load(path, NULL, &d);
	ms = ms_since(t0);
	if (!p) {
		for (size_t i = 0; i < d.n; i++)
			fprintf(stderr, "%s\n", d.msgs[i]);
		fprintf(stderr, "bench-groups: the generated policy does not load\n");
		goto out;
	}
	nvms = p->inv.nvms;
	bench_note("%zu VMs, %zu groups, %zu rules, %zu tags", nvms, p->inv.ngroups,
		   p->nrules, p->tags.n);
	bench_figure("groups_parse_ms", ms, "ms");

	samples = xcalloc(s->delta_samples > s->eval_runs ? s->delta_samples : s->eval_runs,
			  sizeof(*samples));
	for (size_t i = 0; i < s->eval_runs; i++) {
		gengine_free(e);
		t0 = now_ns();
		e = gengine_new(&p->inv, p->file, &d);
		samples[i] = ms_since(t0);
		if (!e) {
			fprintf(stderr, "bench-groups: gengine_new failed: %s\n",
				d.n ? d.msgs[0] : "?");
			goto out;
		}
	}
	ms = bench_quantile(samples, s->eval_runs, 0.5);
	bench_figure("groups_eval_scratch_ms", ms, "ms");
	bench_figure("groups_eval_vs_target", ms / TARGET_EVAL_MS, "ratio");

	/* Every VM gets one application and one environment tag. */
	tags = xcalloc(p->tags.n, sizeof(*tags));
	ntags = plain_tags(p, tags);
	if (ntags < 2) {
		fprintf(stderr, "bench-groups: the policy declares %zu plain tags, 2 needed\n",
			ntags);
		goto out;
	}
	t0 = now_ns();
	for (size_t v = 0; v < nvms; v++) {
		vmtags[0] = tags[(2 * v) % ntags];
		vmtags[1] = tags[(2 * v + 1) % ntags];
		gengine_set_tags(e, v, vmtags, 2, count_delta, &deltas);
	}
	bench_figure("groups_tag_all_ms", ms_since(t0), "ms");
	bench_note("tagging every VM: %zu membership changes", deltas);

	/* One delta: a VM enters or leaves quarantine, keeping its other tags. */
	q = policy_find_group(p, "quarantine");
	if (q < 0) {
		fprintf(stderr, "bench-groups: the policy has no group 'quarantine'\n");
		goto out;
	}
	quarantined = xcalloc(nvms, sizeof(*quarantined));
	deltas = 0;
	for (size_t i = 0; i < s->delta_samples; i++) {
		size_t v = (size_t)(rnd(&seed) % nvms);

		quarantined[v] = !quarantined[v];
		vmtags[0] = tags[(2 * v) % ntags];
		vmtags[1] = tags[(2 * v + 1) % ntags];
		vmtags[2] = "threat.high";
		t0 = now_ns();
		gengine_set_tags(e, v, vmtags, quarantined[v] ? 3 : 2, count_delta, &deltas);
		samples[i] = (double)(now_ns() - t0) / 1e3;
		/* A benchmark of a wrong answer measures nothing. */
		if (gengine_is_member(e, (size_t)q, v) != quarantined[v]) {
			fprintf(stderr, "bench-groups: VM %s %s quarantine but should not\n",
				p->inv.vms[v].name, quarantined[v] ? "is not in" : "is in");
			goto out;
		}
	}
	bench_latency("groups_tag_delta_us", samples, s->delta_samples, "us");
	bench_note("%zu tag deltas: %.1f membership changes each", s->delta_samples,
		   (double)deltas / (double)s->delta_samples);
	bench_note("resident memory: %ld KiB", bench_rss_kib());
	rc = 0;
out:
	free(quarantined);
	free(tags);
	free(samples);
	gengine_free(e);
	policy_free(p);
	diag_free(&d);
	return rc;
}

int main(int argc, char **argv)
{
	const char *tmp = getenv("TMPDIR");
	char path[PATH_MAX];
	bool small = bench_args(argc, argv, NULL, NULL);
	int fd, rc;

	snprintf(path, sizeof(path), "%s/dfw-bench-groups-XXXXXX.ini", tmp && *tmp ? tmp : "/tmp");
	fd = mkstemps(path, 4);
	if (fd < 0) {
		fprintf(stderr, "bench-groups: %s: %s\n", path, strerror(errno));
		return 1;
	}
	close(fd);
	rc = bench(small ? &tiny : &full, path);
	unlink(path);
	return rc < 0 ? 1 : 0;
}
