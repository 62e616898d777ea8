/* Cluster latency benchmark (issue 5): one tag change -> realized on every
 * host, for a 3-host lab with its store in etcd, beside the same for one
 * host with its store in SQLite.
 *
 * Two runs, made with dfw-lab and removed on exit (also after a failure or
 * an interruption):
 *   - "bclu": configs/cluster.ini on three hosts (VXLAN between them), the
 *     store an etcd in the lab's fabric namespace (`up --store etcd`);
 *   - "bone": configs/vdi.ini on one host, the store a SQLite file.
 * In each round the bench puts threat.high on desktop3 (or takes it off:
 * the rounds alternate), so that desktop3 moves between the "desktops" and
 * "quarantine" groups, whose address sets every host holds.  It takes
 * CLOCK_MONOTONIC before the write (tags_write, as `dfwctl tag` does) and
 * polls the hosts' published status (hosts_wait, as `dfwctl tag --wait`
 * does, every millisecond) until every host reports a realized revision at
 * or past the write's.  For etcd the bench runs in the fabric namespace,
 * where etcd listens, as dfwctl does in the lab.
 *
 * Figures: cluster_etcd3_tag_to_all_ms_p50/p99 (3 hosts, etcd; tag =
 * quarantine, which includes the conntrack cut on desktop3's host) and
 * …_untag_to_all_ms (release), the same for cluster_sqlite1 (1 host,
 * SQLite), the store write alone for each (…_write_ms_p50/p99), and the
 * ratio of the tag p50s (cluster_etcd3_vs_sqlite1_p50).  --tiny: 10
 * changes each; else 400 (200 tags, 200 untags). */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "dfw/hosts.h"
#include "tagger/store.h"
#include "tagger/tags.h"
#include "tests/bench/bench.h"

#define VM "desktop3"
#define TAG "threat.high"
#define WAIT_MS 10000

struct lab_run {
	const char *name, *config, *store_kind; /* kind: "etcd" or "sqlite" */
	const char *figure;                     /* figure name prefix */
	size_t hosts;
	bool made;
};

static struct lab_run runs[] = {
	{ "bclu", "configs/cluster.ini", "etcd", "cluster_etcd3", 3, false },
	{ "bone", "configs/vdi.ini", "sqlite", "cluster_sqlite1", 1, false },
};
static char bindir[512], topdir[600];

static int lab(const char *verb, struct lab_run *l, char *out, size_t len)
{
	char prog[600], config[1100];
	char *up[] = { prog, (char *)"up", config, (char *)"--lab", (char *)l->name,
		       (char *)"--store", (char *)l->store_kind, NULL };
	char *down[] = { prog, (char *)"down", (char *)"--lab", (char *)l->name, NULL };

	snprintf(prog, sizeof(prog), "%s/dfw-lab", bindir);
	snprintf(config, sizeof(config), "%s/%s", topdir, l->config);
	return bench_run(!strcmp(verb, "up") ? up : down, out, len);
}

static void teardown(void)
{
	for (size_t i = 0; i < ARRAY_SIZE(runs); i++)
		if (runs[i].made) {
			lab("down", &runs[i], NULL, 0);
			runs[i].made = false;
		}
}

static void on_signal(int sig)
{
	teardown();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* The store of lab l, entered from the namespace it is reached from. */
static struct store *lab_store(const struct lab_run *l, int self)
{
	char path[256], uri[512] = "", err[512];
	struct store *s;
	FILE *f;

	snprintf(path, sizeof(path), "/run/dfw-lab/%s/store.uri", l->name);
	if ((f = fopen(path, "re"))) {
		if (!fgets(uri, sizeof(uri), f))
			uri[0] = '\0';
		uri[strcspn(uri, "\n")] = '\0';
		fclose(f);
	}
	if (!uri[0])
		snprintf(uri, sizeof(uri), "/run/dfw-lab/%s/store.db", l->name);
	if (!strcmp(l->store_kind, "etcd")) {
		int fd;

		snprintf(path, sizeof(path), "/run/netns/dfwl-%s-fabric", l->name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
			bench_die("%s: %s", path, strerror(errno));
		close(fd);
	} else if (setns(self, CLONE_NEWNET) < 0) {
		bench_die("back to our namespace: %s", strerror(errno));
	}
	s = store_open(uri, false, err, sizeof(err));
	if (!s)
		bench_die("%s", err);
	return s;
}

static void measure(struct lab_run *l, size_t rounds, int self, double *p50)
{
	/* [0]: tag (quarantine, with the conntrack cut on desktop3's host),
	 * [1]: untag (release). */
	double *all[2] = { xcalloc(rounds, sizeof(double)), xcalloc(rounds, sizeof(double)) };
	double *write = xcalloc(rounds, sizeof(*write));
	size_t nall[2] = { 0, 0 };
	struct host_list hl = { 0 };
	char err[512], out[4096], name[128];
	struct store *s;

	if (lab("up", l, out, sizeof(out)) != 0)
		bench_die("dfw-lab up %s failed:\n%s", l->config, out);
	l->made = true;
	s = lab_store(l, self);
	/* Every host has realized the policy before the first round. */
	if (hosts_wait(s, 1, WAIT_MS, &hl, err, sizeof(err)) != 0 || hl.n != l->hosts)
		bench_die("%s: hosts not ready (%zu of %zu): %s", l->name, hl.n, l->hosts, err);
	for (size_t i = 0; i < rounds; i++) {
		char *tags[] = { (char *)TAG };
		uint64_t t0 = now_ns(), t1, rev;
		int r = tags_write(s, VM, tags, 1, i % 2 == 0, NULL, NULL, &rev, err, sizeof(err));

		t1 = now_ns();
		if (r != 0)
			bench_die("%s: tag %s: %s", l->name, VM, err);
		if (hosts_wait(s, rev, WAIT_MS, &hl, err, sizeof(err)) != 0)
			bench_die("%s: revision %llu not realized on every host within %d ms%s%s", l->name,
			    (unsigned long long)rev, WAIT_MS, err[0] ? ": " : "", err);
		all[i % 2][nall[i % 2]++] = (double)(now_ns() - t0) / 1e6;
		write[i] = (double)(t1 - t0) / 1e6;
	}
	store_close(s);
	if (setns(self, CLONE_NEWNET) < 0)
		bench_die("back to our namespace: %s", strerror(errno));
	bench_note("%s: %zu host(s), store %s, %zu tag changes of %s", l->name, l->hosts,
		   l->store_kind, rounds, VM);
	snprintf(name, sizeof(name), "%s_tag_to_all_ms", l->figure);
	bench_latency(name, all[0], nall[0], "ms");
	snprintf(name, sizeof(name), "%s_untag_to_all_ms", l->figure);
	bench_latency(name, all[1], nall[1], "ms");
	*p50 = bench_quantile(all[0], nall[0], 0.5);
	snprintf(name, sizeof(name), "%s_write_ms", l->figure);
	bench_latency(name, write, rounds, "ms");
	lab("down", l, NULL, 0);
	l->made = false;
	hosts_free(&hl);
	free(all[0]);
	free(all[1]);
	free(write);
}

int main(int argc, char **argv)
{
	size_t rounds = bench_args(argc, argv, NULL, NULL) ? 10 : 400;
	double p50[ARRAY_SIZE(runs)];
	ssize_t n = readlink("/proc/self/exe", bindir, sizeof(bindir) - 1);
	int self = bench_netns_here();

	if (n <= 0 || self < 0)
		bench_die("cannot find myself: %s", strerror(errno));
	bindir[n] = '\0';
	*strrchr(bindir, '/') = '\0';
	snprintf(topdir, sizeof(topdir), "%s/..", bindir);
	if (geteuid() != 0)
		bench_die("needs root (network namespaces, nftables)");
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	atexit(teardown);
	for (size_t i = 0; i < ARRAY_SIZE(runs); i++)
		measure(&runs[i], rounds, self, &p50[i]);
	bench_figure("cluster_etcd3_vs_sqlite1_p50", p50[0] / p50[1], "x");
	close(self);
	return 0;
}
