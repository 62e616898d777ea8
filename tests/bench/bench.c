/* Benchmark reporting: see bench.h. */
#include "tests/bench/bench.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

void bench_figure(const char *name, double value, const char *unit)
{
	/* Small ratios (a tag change against a full reload) keep their
	 * digits; no exponent, for tests/bench/run.sh's JSON. */
	printf(value != 0 && value > -0.01 && value < 0.01 ? "%s: %.7f %s\n" : "%s: %.3f %s\n",
	       name, value, unit);
	fflush(stdout);
}

void bench_note(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return a < b ? -1 : a > b;
}

double bench_quantile(double *samples, size_t n, double q)
{
	size_t i;

	if (!n)
		return 0;
	qsort(samples, n, sizeof(*samples), cmp_double);
	i = (size_t)(q * (double)(n - 1) + 0.5);
	return samples[i < n ? i : n - 1];
}

void bench_latency(const char *name, double *samples, size_t n, const char *unit)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "%s_p50", name);
	bench_figure(buf, bench_quantile(samples, n, 0.50), unit);
	snprintf(buf, sizeof(buf), "%s_p99", name);
	bench_figure(buf, bench_quantile(samples, n, 0.99), unit);
}

static void bench_usage(const char *prog, const char *const *parts, const char *why,
			const char *arg)
{
	const char *slash = strrchr(prog, '/'), *base = slash ? slash + 1 : prog;

	fprintf(stderr, "%s: %s '%s'\nusage: %s [--tiny]%s", base, why, arg, base,
		parts ? " [--only PART]\n  PART: " : "\n");
	for (size_t i = 0; parts && parts[i]; i++)
		fprintf(stderr, "%s%s", parts[i], parts[i + 1] ? ", " : "\n");
	exit(1);
}

bool bench_args(int argc, char **argv, const char *const *parts, const char **only)
{
	bool tiny = false;

	if (only)
		*only = NULL;
	for (int i = 1; i < argc; i++) {
		size_t k = 0;

		if (!strcmp(argv[i], "--tiny")) {
			tiny = true;
			continue;
		}
		if (!parts || strcmp(argv[i], "--only"))
			bench_usage(argv[0], parts, "unknown argument", argv[i]);
		if (++i == argc)
			bench_usage(argv[0], parts, "a part to run must follow", "--only");
		while (parts[k] && strcmp(parts[k], argv[i]))
			k++;
		if (!parts[k])
			bench_usage(argv[0], parts, "no such part", argv[i]);
		*only = parts[k];
	}
	return tiny;
}

long bench_rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

int bench_netns_here(void)
{
	return open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
}

int bench_run(char *const argv[], char *out, size_t len)
{
	int fds[2] = { -1, -1 }, st;
	size_t got = 0;
	pid_t pid;

	if (out && pipe(fds) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(out ? fds[1] : fd, STDOUT_FILENO);
		if (out)
			dup2(fds[1], STDERR_FILENO);
		execv(argv[0], argv);
		_exit(127);
	}
	if (out) {
		close(fds[1]);
		for (ssize_t n; pid > 0 && (n = read(fds[0], out + got, len - 1 - got)) != 0;) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 || (got += (size_t)n) == len - 1)
				break;
		}
		out[got] = '\0';
		close(fds[0]);
	}
	if (pid < 0)
		return -1;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
