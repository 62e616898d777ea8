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

#endif
