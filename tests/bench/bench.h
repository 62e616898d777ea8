/* Shared reporting of the benchmark programs.
 *
 * Every figure is one line on stdout, "name: value unit", which
 * tests/bench/run.sh gathers into bench-results.json.  Latencies are
 * summarized as median and p99 over repeated runs; ratios are computed
 * against a baseline measured in the same run.  No benchmark asserts a
 * wall time: the figures are read against the targets in
 * docs/PERFORMANCE.md. */
#ifndef DFW_BENCH_H
#define DFW_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Prints "name: value unit" (value with up to 3 decimals). */
void bench_figure(const char *name, double value, const char *unit);
/* A comment line ("# ..."), for context that is not a figure. */
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reports "PROGRAM: message" on stderr and exits 1. */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Sorts samples in place and returns the q-quantile (0..1). */
double bench_quantile(double *samples, size_t n, double q);
/* Reports name_p50 and name_p99 of the samples. */
void bench_latency(const char *name, double *samples, size_t n, const char *unit);

/* The command line of a benchmark program: [--tiny] (the `make check`
 * run) and, when parts is not NULL, [--only PART] with PART one of
 * parts[] (NULL-terminated; *only is NULL when not given).  Anything else
 * is reported with the usage and exits 1.  Returns true for --tiny. */
bool bench_args(int argc, char **argv, const char *const *parts, const char **only);

/* Runs argv; its stdout and stderr into out[len] (when out is not NULL;
 * else stdout is dropped and stderr is ours).  Returns the exit status, or
 * -1. */
int bench_run(char *const argv[], char *out, size_t len);

/* Resident set size of this process, in KiB (from /proc/self/status). */
long bench_rss_kib(void);

/* A descriptor of the calling thread's network namespace, to come back
 * to (setns) from another; -1 with errno when it cannot be opened. */
int bench_netns_here(void);

/* Conntrack entries made through ctnetlink in the calling thread's
 * network namespace, to give a cut a table of a chosen size (counted with
 * backend_ct_entries).  Failures are reported and exit 1. */
struct bench_ct;
struct dfw_addr;
struct bench_ct *bench_ct_open(void);
/* Queues a UDP entry s:sport -> d:dport (both addresses of one family),
 * sent some at a time; bench_ct_sync sends the rest. */
void bench_ct_add(struct bench_ct *c, const struct dfw_addr *s, const struct dfw_addr *d,
		  uint16_t sport, uint16_t dport);
void bench_ct_sync(struct bench_ct *c);
/* Adds entries number from..n-1 of addresses no VM of dfw-gen's has
 * (100.64.0.0/10 to 100.127.0.1), and sends them. */
void bench_ct_fill(struct bench_ct *c, size_t from, size_t n);
void bench_ct_close(struct bench_ct *c);

#endif
