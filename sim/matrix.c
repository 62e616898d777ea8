/* `probe` (one connection attempt) and `matrix` (every ordered pair of VMs
 * on a list of ports), both front ends of probe_run(). */
#include "sim/lab.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define DEFAULT_TIMEOUT_MS 500
#define DEFAULT_PARALLEL 64
#define DEFAULT_PORTS "tcp/443,udp/53,icmp"

/* Milliseconds: "500", or with a unit as parse_duration_ms takes ("2s"). */
static int parse_ms(const char *s, const char *what, unsigned max, unsigned *out, char *err,
		    size_t errlen)
{
	uint64_t v;

	if (parse_u64(s, max, &v) < 0 && (parse_duration_ms(s, &v) < 0 || v > max))
		return errf(err, errlen, "%s '%s': expected milliseconds from 1 to %u (or e.g. 2s)",
			    what, s, max);
	if (v == 0)
		return errf(err, errlen, "%s '%s' must be at least 1", what, s);
	*out = (unsigned)v;
	return 0;
}

static const char *family_name(int family)
{
	return family == AF_INET6 ? "IPv6" : "IPv4";
}

/* dfw-lab probe SRC DST PROTO[/PORT] [--lab NAME] [--timeout MS] [-6]
 * Exit 0 reachable, 1 blocked; so every error here is 2, never 1. */
int cmd_probe(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lab", required_argument, NULL, 'l' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct probe_opts po = { AF_INET, DEFAULT_TIMEOUT_MS, 1 };
	const char *labname = LAB_DEFAULT_NAME;
	struct probe p = { 0 };
	struct lab *lab = NULL;
	char err[LAB_ERRLEN], shown[32];
	long src, dst;
	int c, ret = LAB_EKERNEL;

	while ((c = getopt_long(argc, argv, "6h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': labname = optarg; break;
		case '6': po.family = AF_INET6; break;
		case 't':
			if (parse_ms(optarg, "--timeout", 600000, &po.timeout_ms, err, sizeof(err)) < 0) {
				lab_errorf("probe: %s", err);
				goto out;
			}
			break;
		case 'h': lab_usage("probe"); ret = LAB_OK; goto out;
		default: lab_usage("probe"); goto out;
		}
	}
	if (argc - optind != 3) {
		lab_usage("probe");
		goto out;
	}
	if (probe_port_parse(argv[optind + 2], &p.port, err, sizeof(err)) < 0) {
		lab_errorf("probe: %s", err);
		goto out;
	}
	if (lab_open(labname, &lab, err, sizeof(err)) != LAB_OK) {
		lab_errorf("%s", err);
		goto out;
	}
	src = lab_find_vm(lab, argv[optind], err, sizeof(err));
	if (src < 0) {
		lab_errorf("probe: %s", err);
		goto out;
	}
	dst = lab_find_vm(lab, argv[optind + 1], err, sizeof(err));
	if (dst < 0) {
		lab_errorf("probe: %s", err);
		goto out;
	}
	if (src == dst) {
		lab_errorf("probe: source and destination are both '%s': pick two VMs", argv[optind]);
		goto out;
	}
	p.src = (size_t)src;
	p.dst = (size_t)dst;
	for (size_t k = 0; k < 2; k++) {
		size_t v = k ? p.dst : p.src;

		if (!lab_vm_addr(lab, v, po.family)) {
			lab_errorf("probe: VM %s has no %s address%s", lab->pol->inv.vms[v].name,
				   family_name(po.family), po.family == AF_INET ? " (try -6)" : "");
			goto out;
		}
	}
	lab_catch_signals();
	if (probe_run(lab, &p, 1, &po, err, sizeof(err)) < 0) {
		lab_errorf("probe: %s", err);
		goto out;
	}
	probe_port_format(&p.port, shown, sizeof(shown));
	printf("%s -> %s %s: %s (%u ms)\n", lab->pol->inv.vms[src].name,
	       lab->pol->inv.vms[dst].name, shown, p.reachable ? "reachable" : "blocked", p.ms);
	ret = p.reachable ? 0 : 1;
out:
	lab_free(lab);
	return ret;
}

/* Results of a matrix: for each ordered pair, a bit per port (or NA). */
struct grid {
	const struct lab *lab;
	const struct probe_port *ports;
	size_t nports;
	char **labels;    /* short cell labels of the ports: "443", "icmp" */
	uint64_t *bits;   /* nvms * nvms; bit k: ports[k] reachable */
	bool *na;         /* the pair has no address of the family */
};

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

/* One cell's text: "443,53,icmp", "-" for nothing, "." for the VM itself. */
static void cell_text(const struct grid *g, size_t i, size_t j, char *buf, size_t len)
{
	size_t off = 0;
	uint64_t b = g->bits[i * g->lab->pol->inv.nvms + j];

	snprintf(buf, len, "%s", i == j ? "." : g->na[i * g->lab->pol->inv.nvms + j] ? "n/a" : "-");
	for (size_t k = 0; i != j && k < g->nports && off < len; k++)
		if (b & (1ull << k))
			off += (size_t)snprintf(buf + off, len - off, "%s%s", off ? "," : "", g->labels[k]);
}

static void grid_print(const struct grid *g, bool json)
{
	const struct inventory *inv = &g->lab->pol->inv;
	size_t n = inv->nvms, first = strlen("src\\dst"), *width = xcalloc(n ? n : 1, sizeof(*width));
	char cell[512], port[32];

	if (json) {
		printf("{");
		for (size_t i = 0; i < n; i++) {
			bool any = false;

			printf("%s", i ? "," : "");
			json_str(inv->vms[i].name);
			printf(":{");
			for (size_t j = 0; j < n; j++) {
				uint64_t b = g->bits[i * n + j];
				bool firstport = true;

				if (i == j || g->na[i * n + j])
					continue;
				printf("%s", any ? "," : "");
				any = true;
				json_str(inv->vms[j].name);
				printf(":[");
				for (size_t k = 0; k < g->nports; k++) {
					if (!(b & (1ull << k)))
						continue;
					probe_port_format(&g->ports[k], port, sizeof(port));
					printf("%s", firstport ? "" : ",");
					firstport = false;
					json_str(port);
				}
				printf("]");
			}
			printf("}");
		}
		printf("}\n");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (strlen(inv->vms[i].name) > first)
			first = strlen(inv->vms[i].name);
		width[i] = strlen(inv->vms[i].name);
		for (size_t r = 0; r < n; r++) {
			cell_text(g, r, i, cell, sizeof(cell));
			if (strlen(cell) > width[i])
				width[i] = strlen(cell);
		}
	}
	printf("%-*s", (int)first, "src\\dst");
	for (size_t j = 0; j < n; j++) /* no padding after the last column */
		printf("  %-*s", j + 1 < n ? (int)width[j] : 0, inv->vms[j].name);
	printf("\n");
	for (size_t i = 0; i < n; i++) {
		printf("%-*s", (int)first, inv->vms[i].name);
		for (size_t j = 0; j < n; j++) {
			cell_text(g, i, j, cell, sizeof(cell));
			printf("  %-*s", j + 1 < n ? (int)width[j] : 0, cell);
		}
		printf("\n");
	}
out:
	free(width);
}

/* Short labels: the port number alone, unless tcp and udp share it. */
static char **port_labels(const struct probe_port *ports, size_t n)
{
	char **labels = xcalloc(n ? n : 1, sizeof(*labels));

	for (size_t k = 0; k < n; k++) {
		bool shared = false;
		char buf[32];

		for (size_t m = 0; m < n; m++)
			shared |= m != k && ports[m].proto != PROBE_ICMP && ports[m].port == ports[k].port;
		if (ports[k].proto == PROBE_ICMP)
			labels[k] = xstrdup("icmp");
		else if (shared) {
			probe_port_format(&ports[k], buf, sizeof(buf));
			labels[k] = xstrdup(buf);
		} else
			labels[k] = xasprintf("%u", ports[k].port);
	}
	return labels;
}

/* dfw-lab matrix [--lab NAME] [--ports LIST] [--json] [-6] [--timeout MS] [--parallel N] */
int cmd_matrix(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lab", required_argument, NULL, 'l' },
		{ "ports", required_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 't' },
		{ "parallel", required_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct probe_opts po = { AF_INET, DEFAULT_TIMEOUT_MS, DEFAULT_PARALLEL };
	const char *labname = LAB_DEFAULT_NAME, *portlist = DEFAULT_PORTS;
	struct strv items = { 0 };
	struct probe_port *ports = NULL;
	struct probe *pr = NULL;
	struct grid g = { 0 };
	struct lab *lab = NULL;
	char err[LAB_ERRLEN];
	size_t nvms, npr = 0;
	bool json = false;
	uint64_t t0;
	int c, ret = LAB_EINPUT;

	while ((c = getopt_long(argc, argv, "6h", opts, NULL)) != -1) {
		switch (c) {
		case 'l': labname = optarg; break;
		case 'p': portlist = optarg; break;
		case 'j': json = true; break;
		case '6': po.family = AF_INET6; break;
		case 't':
			if (parse_ms(optarg, "--timeout", 600000, &po.timeout_ms, err, sizeof(err)) < 0) {
				lab_errorf("matrix: %s", err);
				goto out;
			}
			break;
		case 'P':
			if (parse_ms(optarg, "--parallel", 4096, &po.parallel, err, sizeof(err)) < 0) {
				lab_errorf("matrix: %s", err);
				goto out;
			}
			break;
		case 'h': lab_usage("matrix"); ret = LAB_OK; goto out;
		default: ret = lab_usage("matrix"); goto out;
		}
	}
	if (optind != argc) {
		lab_errorf("matrix: unexpected argument '%s'", argv[optind]);
		ret = lab_usage("matrix");
		goto out;
	}
	strv_split(&items, portlist);
	if (items.n == 0 || items.n > 64) {
		lab_errorf("matrix: --ports '%s': list 1 to 64 ports, e.g. %s", portlist, DEFAULT_PORTS);
		goto out;
	}
	ports = xcalloc(items.n, sizeof(*ports));
	for (size_t k = 0; k < items.n; k++) {
		if (!*items.v[k]) {
			lab_errorf("matrix: --ports '%s': empty item", portlist);
			goto out;
		}
		if (probe_port_parse(items.v[k], &ports[k], err, sizeof(err)) < 0) {
			lab_errorf("matrix: --ports: %s", err);
			goto out;
		}
		for (size_t m = 0; m < k; m++) {
			if (ports[m].proto == ports[k].proto && ports[m].port == ports[k].port) {
				lab_errorf("matrix: --ports: '%s' is listed twice", items.v[k]);
				goto out;
			}
		}
	}
	ret = lab_open(labname, &lab, err, sizeof(err));
	if (ret != LAB_OK) {
		lab_errorf("%s", err);
		goto out;
	}
	ret = LAB_EKERNEL;
	nvms = lab->pol->inv.nvms;
	g.lab = lab;
	g.ports = ports;
	g.nports = items.n;
	g.labels = port_labels(ports, items.n);
	g.bits = xcalloc(nvms * nvms + 1, sizeof(*g.bits));
	g.na = xcalloc(nvms * nvms + 1, sizeof(*g.na));
	pr = xcalloc(nvms * nvms * items.n + 1, sizeof(*pr));
	for (size_t i = 0; i < nvms; i++) {
		for (size_t j = 0; j < nvms; j++) {
			if (i == j)
				continue;
			if (!lab_vm_addr(lab, i, po.family) || !lab_vm_addr(lab, j, po.family)) {
				g.na[i * nvms + j] = true;
				continue;
			}
			for (size_t k = 0; k < items.n; k++)
				pr[npr++] = (struct probe){ .src = i, .dst = j, .port = ports[k] };
		}
	}
	lab_catch_signals();
	t0 = now_ns();
	if (probe_run(lab, pr, npr, &po, err, sizeof(err)) < 0) {
		lab_errorf("matrix: %s", err);
		goto out;
	}
	for (size_t q = 0; q < npr; q++) {
		size_t k = 0;

		while (ports[k].proto != pr[q].port.proto || ports[k].port != pr[q].port.port)
			k++;
		if (pr[q].reachable)
			g.bits[pr[q].src * nvms + pr[q].dst] |= 1ull << k;
	}
	grid_print(&g, json);
	fprintf(stderr, "%zu probes (%s) in %llu ms\n", npr, family_name(po.family),
		(unsigned long long)((now_ns() - t0) / 1000000));
	ret = LAB_OK;
out:
	for (size_t k = 0; g.labels && k < g.nports; k++)
		free(g.labels[k]);
	free(g.labels);
	free(g.bits);
	free(g.na);
	free(pr);
	free(ports);
	strv_free(&items);
	lab_free(lab);
	return ret;
}
