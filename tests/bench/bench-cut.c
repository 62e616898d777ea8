/* Cutting a quarantined VM's connections (backend_ct_flush) against the
 * size of the host's conntrack table.
 *
 * In a network namespace of its own, the table is filled through
 * ctnetlink with UDP entries of other addresses (1k, 10k, then 100k), and
 * before each cut with 40 entries of one dual-stack VM: 10 with its IPv4
 * address as the original source, 10 as the original destination, and the
 * same for IPv6.  Each round cuts them four ways (the order turning
 * round by round): one whole-table dump read here (the baseline), two
 * dumps per address filtered in the kernel, the way dfwd picks (AUTO),
 * and AUTO on the connection cutter's thread as the network threat
 * response makes it (queued with a ticket, timed until its result is
 * reaped here after poll).  Every cut must delete exactly the VM's 40
 * entries and leave the others: the program exits 1 otherwise.
 *
 * --tiny: 2k entries, 3 rounds (the `make check` run). */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "dfw/backend.h"
#include "dfw/cutter.h"
#include "tests/bench/bench.h"

#define PER_SIDE 10 /* entries per address and side */
#define VICTIMS (4 * PER_SIDE)

#define WAYS 4
#define CUTTER 3 /* the way through the cutter's thread */
static const char *const hows[WAYS] = { "whole", "filtered", "auto", "cutter" };
static const enum backend_cut_how how_of[WAYS] = { BACKEND_CUT_WHOLE, BACKEND_CUT_FILTERED,
						   BACKEND_CUT_AUTO, BACKEND_CUT_AUTO };

static struct dfw_addr addr(const char *text)
{
	struct dfw_addr a;
	const char *why = NULL;

	if (addr_parse(text, &a, &why) < 0)
		bench_die("%s: %s", text, why);
	return a;
}

/* The VM's entries: PER_SIDE each way for each of its addresses. */
static void add_victims(struct bench_ct *ct, const struct dfw_addr *vm,
			const struct dfw_addr *peer)
{
	for (int a = 0; a < 2; a++)
		for (uint16_t k = 0; k < PER_SIDE; k++) {
			bench_ct_add(ct, &vm[a], &peer[a], (uint16_t)(2000 + k), 443);
			bench_ct_add(ct, &peer[a], &vm[a], (uint16_t)(3000 + k), 3389);
		}
	bench_ct_sync(ct);
}

static void on_result(void *arg, const struct cutter_result *r)
{
	*(struct cutter_result *)arg = *r;
}

/* A ticketed cut on the cutter's thread, waited for as dfwd's main loop
 * does (poll on its fd, then reap). */
static int cut_on_thread(struct cutter *c, const struct dfw_addr *vm, size_t n,
			 struct backend_cut *cut, char *err, size_t errlen)
{
	static uint64_t ticket;
	struct cutter_result r = { .ticket = 0 };
	struct pollfd p = { .fd = cutter_fd(c), .events = POLLIN };

	cutter_queue_ticket(c, vm, n, ++ticket);
	while (r.ticket != ticket) {
		if (poll(&p, 1, 10000) <= 0)
			bench_die("the cutter gave no result in 10 s");
		cutter_reap(c, on_result, &r);
	}
	*cut = r.cut;
	if (r.rc < 0)
		snprintf(err, errlen, "%s", r.err);
	return r.rc;
}

int main(int argc, char **argv)
{
	static const size_t full_scales[] = { 1000, 10000, 100000 };
	static const size_t tiny_scales[] = { 2000 };
	bool tiny = bench_args(argc, argv, NULL, NULL);
	const size_t *scales = tiny ? tiny_scales : full_scales;
	size_t nscales = tiny ? ARRAY_SIZE(tiny_scales) : ARRAY_SIZE(full_scales);
	size_t rounds = tiny ? 3 : 15, have = 0;
	const struct dfw_addr vm[2] = { addr("10.9.9.9"), addr("fd00:9::9") };
	const struct dfw_addr peer[2] = { addr("11.0.0.2"), addr("fd00:11::2") };
	struct bench_ct *ct;
	struct backend *be;
	struct cutter *cutter;
	char err[256];
	double *ms = xcalloc(WAYS * rounds, sizeof(*ms));

	if (unshare(CLONE_NEWNET) < 0)
		bench_die("unshare(CLONE_NEWNET): %s (needs root)", strerror(errno));
	ct = bench_ct_open();
	if (!(be = backend_open("dfwcut", err, sizeof(err))) ||
	    !(cutter = cutter_new("dfwcut", NULL, "bench-cut", err, sizeof(err))))
		bench_die("%s", err);
	for (size_t s = 0; s < nscales; s++) {
		size_t n = scales[s];
		double p50[WAYS];
		const char *auto_went = "?";

		bench_ct_fill(ct, have, n);
		have = n;
		for (size_t r = 0; r < rounds; r++)
			for (size_t k = 0; k < WAYS; k++) {
				size_t h = (k + r) % WAYS;
				struct backend_cut cut;
				uint64_t t0;
				char how[96];
				int rc;

				add_victims(ct, vm, peer);
				t0 = now_ns();
				rc = h == CUTTER
					? cut_on_thread(cutter, vm, 2, &cut, err, sizeof(err))
					: backend_ct_flush(be, vm, 2, how_of[h], &cut, err, sizeof(err));
				if (rc < 0)
					bench_die("%s cut at %zu entries: %s", hows[h], n, err);
				ms[h * rounds + r] = (double)(now_ns() - t0) / 1e6;
				if (cut.deleted != VICTIMS || backend_ct_entries() != (long)n)
					bench_die("%s cut at %zu entries deleted %zu (want %d) and left %ld (want %zu)",
					    hows[h], n, cut.deleted, VICTIMS, backend_ct_entries(), n);
				if (h == 2)
					auto_went = cut.how == BACKEND_CUT_WHOLE ? "whole" : "filtered";
				if (!r && !k)
					bench_note("%zu entries: %s", n, backend_cut_str(&cut, how, sizeof(how)));
			}
		for (size_t h = 0; h < WAYS; h++) {
			char name[64];

			snprintf(name, sizeof(name), "cut_ms_%zu_%s", n, hows[h]);
			p50[h] = bench_quantile(ms + h * rounds, rounds, 0.5);
			bench_latency(name, ms + h * rounds, rounds, "ms");
		}
		bench_note("at %zu entries AUTO chose the %s way", n, auto_went);
		{
			char name[64];

			snprintf(name, sizeof(name), "cut_auto_vs_whole_%zu", n);
			bench_figure(name, p50[2] / p50[0], "ratio");
			snprintf(name, sizeof(name), "cut_cutter_vs_auto_%zu", n);
			bench_figure(name, p50[CUTTER] / p50[2], "ratio");
		}
	}
	cutter_free(cutter);
	backend_close(be);
	bench_ct_close(ct);
	free(ms);
	return 0;
}
