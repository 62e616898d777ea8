/* dfw-gen: writes a synthetic datacenter as a policy INI (docs/CONFIG.md):
 * VMs spread over hypervisors, tags, security groups of every kind and rules
 * of every category.  The same arguments always give the same file, so scale
 * tests and benchmarks can regenerate their input instead of storing it.
 * --rich also draws on the whole rule model (negated sides, port ranges,
 * ICMP types, IP protocols, service objects, reject), for tests that check
 * the compiler and `dfwctl trace` against real packets in a lab. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "tagger/config.h"

/* The parser's limits (tagger/config.c), which the output must respect. */
#define MAX_LINE 1000
#define NAME_MAX_LEN 48
/* 10.0.0.0/8 without the .0 and .255 host of every /24. */
#define MAX_VMS (65536ull * 254)
#define MAX_GROUPS 1000000ull
#define MAX_RULES 10000000ull /* ids 1000 + 10 * k stay below 2^32 */
#define MAX_HOSTS 1000000ull
#define MAX_TAGS 1000ull      /* the [tags] line runs out well before */

struct params {
	uint64_t hosts, vms, local_vms, groups, rules, tags, seed;
	const char *local_host;
	const char *applied_to; /* a fraction, parsed into applied_frac */
	const char *out;
	bool rich;
	double applied_frac;
};

enum opt_kind { OPT_U64, OPT_STR, OPT_FLAG };

static const struct option_def {
	const char *name;
	enum opt_kind kind;
	size_t off;          /* into struct params */
	uint64_t min, max;   /* OPT_U64 */
	const char *arg, *help;
} options[] = {
	{ "--hosts", OPT_U64, offsetof(struct params, hosts), 1, MAX_HOSTS, "N",
	  "hypervisors hv1..hvN (default 10)" },
	{ "--vms", OPT_U64, offsetof(struct params, vms), 1, MAX_VMS, "N",
	  "VMs vm00001... (default 1000)" },
	{ "--local-host", OPT_STR, offsetof(struct params, local_host), 0, 0, "NAME",
	  "the host that gets exactly --local-vms VMs (default hv1)" },
	{ "--local-vms", OPT_U64, offsetof(struct params, local_vms), 0, MAX_VMS, "N",
	  "VMs on --local-host (default vms/hosts)" },
	{ "--groups", OPT_U64, offsetof(struct params, groups), 1, MAX_GROUPS, "N",
	  "security groups, the quarantine group included (default 100)" },
	{ "--rules", OPT_U64, offsetof(struct params, rules), 0, MAX_RULES, "N",
	  "firewall rules, the quarantine blocks included (default 1000)" },
	{ "--tags", OPT_U64, offsetof(struct params, tags), 0, MAX_TAGS, "N",
	  "tags besides threat.high/medium/low (default 10)" },
	{ "--seed", OPT_U64, offsetof(struct params, seed), 0, UINT64_MAX, "N",
	  "random seed; the same seed gives the same file (default 1)" },
	{ "--applied-to-fraction", OPT_STR, offsetof(struct params, applied_to), 0, 0, "F",
	  "share of rules with applied_to a group, 0 to 1 (default 0.05; 0.25 with --rich)" },
	{ "--rich", OPT_FLAG, offsetof(struct params, rich), 0, 0, "",
	  "the full rule model: negation, ranges, ICMP types, proto/N, [service], reject" },
	{ "-o", OPT_STR, offsetof(struct params, out), 0, 0, "FILE",
	  "write to FILE instead of standard output" },
};

/* --- deterministic randomness -------------------------------------------- */

struct rng {
	uint64_t s;
};

static uint64_t rnd(struct rng *r) /* splitmix64 */
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [0, n); n > 0. */
static uint64_t below(struct rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rnd(r) * n) >> 64);
}

static bool percent(struct rng *r, unsigned pct)
{
	return below(r, 100) < pct;
}

/* Picks an index by weight. */
static size_t pick(struct rng *r, const unsigned *weights, size_t n)
{
	unsigned total = 0, x;

	for (size_t i = 0; i < n; i++)
		total += weights[i];
	x = (unsigned)below(r, total);
	for (size_t i = 0; i < n; i++) {
		if (x < weights[i])
			return i;
		x -= weights[i];
	}
	return n - 1;
}

/* --- the model ------------------------------------------------------------- */

static const char *const threat_tags[] = { "threat.high", "threat.medium", "threat.low" };
static const char *const oses[] = {
	"linux", "ubuntu-22.04", "rhel-9", "windows-10", "windows-11",
	"windows-server-2019", "windows-server-2022",
};
static const char *const os_prefixes[] = { "windows", "windows-server", "ubuntu", "rhel" };

/* Group 0 is the quarantine group; the others are of these kinds. */
enum gkind { G_QUARANTINE, G_TAG, G_NAME, G_OS, G_STATIC, G_NESTED, G_CIDR, G_MIXED, G_KINDS };
static const char *const kind_names[] = {
	"quarantine", "tag", "name", "os", "static", "nested", "cidr", "mixed"
};
static const unsigned kind_weights[] = { 0, 30, 18, 10, 15, 15, 5, 7 };

struct gen {
	const struct params *p;
	FILE *f;
	struct rng r;
	int vm_width;       /* digits of VM names: vm00001 */
	uint8_t *kinds;     /* per group */
	size_t local_host;  /* index in hv1..hvN, or hosts when another name */
	struct strv tags;   /* the extra tags */
	size_t nsvcobj;     /* --rich: [service] objects svc1-web ... */
};

static void vm_name(const struct gen *g, uint64_t i, char *buf, size_t len)
{
	snprintf(buf, len, "vm%0*llu", g->vm_width, (unsigned long long)(i + 1));
}

static void group_name(const struct gen *g, size_t i, char *buf, size_t len)
{
	if (i == 0)
		snprintf(buf, len, "quarantine");
	else
		snprintf(buf, len, "g%04zu-%s", i, kind_names[g->kinds[i]]);
}

/* VM i's IPv4 address as a 32-bit number: 10.0.0.1, ..., 10.0.0.254, 10.0.1.1. */
static uint32_t vm_ipv4(uint64_t i)
{
	uint64_t block = i / 254;

	return (10u << 24) | (uint32_t)(block << 8) | (uint32_t)(i % 254 + 1);
}

/* A prefix around a random VM's address, IPv4 or the IPv6 one with the
 * same low 32 bits (fd00::/96 + the IPv4 address, as write_vms gives them),
 * from 10.0.0.0/8 down to the one VM: in a lab such prefixes decide flows,
 * where the 172.16/12 and 192.168/16 networks of the other items never do. */
static void vm_cidr(struct gen *g, char *buf, size_t len)
{
	static const unsigned plens[] = { 8, 24, 29, 30, 31, 32 };
	uint32_t a = vm_ipv4(below(&g->r, g->p->vms));
	unsigned plen = plens[below(&g->r, ARRAY_SIZE(plens))];
	uint32_t m = a & (uint32_t)(0xffffffffull << (32 - plen));

	if (percent(&g->r, 50))
		snprintf(buf, len, "%u.%u.%u.%u/%u", m >> 24, (m >> 16) & 0xff, (m >> 8) & 0xff,
			 m & 0xff, plen);
	else
		snprintf(buf, len, "fd00::%x:%x/%u", m >> 16, m & 0xffff, plen + 96);
}

/* A tag for criteria: an extra one when there are any. */
static const char *some_tag(struct gen *g)
{
	if (g->tags.n)
		return g->tags.v[below(&g->r, g->tags.n)];
	return threat_tags[below(&g->r, ARRAY_SIZE(threat_tags))];
}

/* A tag VALUE for an equals or not-equals criterion: a declared tag; with
 * --rich, for a scoped one, also "scope|" (any tag of the scope) or the bare
 * tag part ("t1" holds for t1, app|t1, env|t1 ...), docs/CONFIG.md.  The
 * result is the tag itself or buf. */
static const char *tag_value(struct gen *g, char *buf, size_t len)
{
	const char *t = some_tag(g), *bar = strchr(t, '|');

	if (!g->p->rich || !bar)
		return t;
	switch (below(&g->r, 4)) {
	case 0:
		snprintf(buf, len, "%.*s", (int)(bar + 1 - t), t);
		return buf;
	case 1:
		snprintf(buf, len, "%s", bar + 1);
		return buf;
	default:
		return t;
	}
}

/* A random group other than quarantine among the first n, or quarantine
 * when there is no other. */
static size_t some_group(struct gen *g, size_t n)
{
	return n > 1 ? 1 + (size_t)below(&g->r, n - 1) : 0;
}

/* --- writers ---------------------------------------------------------------- */

static void write_header(struct gen *g)
{
	const struct params *p = g->p;
	/* --rich: every default action, so that rules of every action matter */
	static const unsigned def_w[] = { 30, 50, 20 };
	enum dfw_action def = ACT_DROP;
	bool def_log = false;

	if (p->rich) {
		def = (enum dfw_action)pick(&g->r, def_w, ARRAY_SIZE(def_w));
		def_log = percent(&g->r, 20);
	}
	fprintf(g->f,
		"; A synthetic datacenter written by dfw-gen --hosts %llu --vms %llu\n"
		"; --local-host %s --local-vms %llu --groups %llu --rules %llu --tags %llu\n"
		"; --seed %llu --applied-to-fraction %g%s\n"
		"; Format: docs/CONFIG.md.  Check it with: dfwctl validate FILE\n\n"
		"[global]\ndefault_action = %s\ndefault_log = %s\n\n",
		(unsigned long long)p->hosts, (unsigned long long)p->vms, p->local_host,
		(unsigned long long)p->local_vms, (unsigned long long)p->groups,
		(unsigned long long)p->rules, (unsigned long long)p->tags,
		(unsigned long long)p->seed, p->applied_frac, p->rich ? " --rich" : "",
		action_name(def), def_log ? "yes" : "no");
}

/* The extra tags alternate between applications and environments; with
 * --rich they are scoped, app|t1, env|t1, dept|t1, and then t1 unscoped,
 * so that one tag part stands in several scopes and alone. */
static int make_tags(struct gen *g)
{
	static const char *const scopes[] = { "app|", "env|", "dept|", "" };
	size_t len = strlen("names = ");
	char buf[64];

	for (size_t i = 0; i < ARRAY_SIZE(threat_tags); i++)
		len += strlen(threat_tags[i]) + 2;
	for (uint64_t i = 0; i < g->p->tags; i++) {
		if (g->p->rich)
			snprintf(buf, sizeof(buf), "%st%llu", scopes[i % 4],
				 (unsigned long long)(i / 4 + 1));
		else
			snprintf(buf, sizeof(buf), "%s.%llu", i % 2 ? "env" : "app",
				 (unsigned long long)(i / 2 + 1));
		len += strlen(buf) + 2;
		if (len - 2 > MAX_LINE) {
			fprintf(stderr, "dfw-gen: --tags %llu: the [tags] line would exceed %d "
				"characters; at most %llu fit\n", (unsigned long long)g->p->tags,
				MAX_LINE, (unsigned long long)i);
			return -1;
		}
		strv_push(&g->tags, buf);
	}
	return 0;
}

static void write_tags(struct gen *g)
{
	fprintf(g->f, "[tags]\nnames = %s, %s, %s", threat_tags[0], threat_tags[1],
		threat_tags[2]);
	for (size_t i = 0; i < g->tags.n; i++)
		fprintf(g->f, ", %s", g->tags.v[i]);
	fputs("\n\n", g->f);
}

/* Exactly local_vms VMs, spread evenly over the index range, are on the local
 * host; the others go round-robin over the remaining hosts. */
static void write_vms(struct gen *g)
{
	const struct params *p = g->p;
	uint64_t other = 0, nother = p->hosts - (g->local_host < p->hosts);
	char name[32];

	for (uint64_t i = 0; i < p->vms; i++) {
		bool local = (i + 1) * p->local_vms / p->vms != i * p->local_vms / p->vms;
		uint32_t a = vm_ipv4(i);
		uint64_t n = i + 1;

		vm_name(g, i, name, sizeof(name));
		fprintf(g->f, "[vm %s]\n", name);
		if (local) {
			fprintf(g->f, "host = %s\n", p->local_host);
		} else {
			uint64_t h = other++ % nother;

			/* Skip the local host's slot among hv1..hvN. */
			if (h >= g->local_host)
				h++;
			fprintf(g->f, "host = hv%llu\n", (unsigned long long)(h + 1));
		}
		fprintf(g->f,
			"port = vn%llu\n"
			"mac = 02:00:%02x:%02x:%02x:%02x\n"
			"addresses = %u.%u.%u.%u, fd00::%x:%x\n"
			"os = %s\n\n",
			(unsigned long long)n,
			(unsigned)(n >> 24) & 0xff, (unsigned)(n >> 16) & 0xff,
			(unsigned)(n >> 8) & 0xff, (unsigned)n & 0xff,
			a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff,
			a >> 16, a & 0xffff,
			oses[below(&g->r, ARRAY_SIZE(oses))]);
	}
}

/* "key = a, b, c" of distinct VMs. */
static void write_vm_list(struct gen *g, const char *key, size_t n)
{
	uint64_t picked[8];
	char name[32];

	if (n > ARRAY_SIZE(picked))
		n = ARRAY_SIZE(picked);
	if (n > g->p->vms)
		n = g->p->vms;
	fprintf(g->f, "%s = ", key);
	for (size_t i = 0; i < n; i++) {
		bool dup;

		do {
			picked[i] = below(&g->r, g->p->vms);
			dup = false;
			for (size_t j = 0; j < i; j++)
				dup |= picked[j] == picked[i];
		} while (dup);
		vm_name(g, picked[i], name, sizeof(name));
		fprintf(g->f, "%s%s", i ? ", " : "", name);
	}
	fputc('\n', g->f);
}

/* "key = a, b" of n distinct groups other than quarantine, all before group
 * gi (so nesting never forms a cycle), after "quarantine" when asked. */
static void write_group_list(struct gen *g, const char *key, size_t gi, size_t n,
			     bool quarantine)
{
	size_t picked[4];
	char name[NAME_MAX_LEN + 1];

	if (n > ARRAY_SIZE(picked))
		n = ARRAY_SIZE(picked);
	if (n > gi - 1)
		n = gi - 1;
	fprintf(g->f, "%s = %s", key, quarantine ? "quarantine" : "");
	for (size_t i = 0; i < n; i++) {
		bool dup;

		do {
			picked[i] = some_group(g, gi);
			dup = false;
			for (size_t j = 0; j < i; j++)
				dup |= picked[j] == picked[i];
		} while (dup);
		group_name(g, picked[i], name, sizeof(name));
		fprintf(g->f, "%s%s", i || quarantine ? ", " : "", name);
	}
	fputc('\n', g->f);
}

/* A name prefix that selects about 10, 100 or 1000 VMs. */
static void name_prefix(struct gen *g, char *buf, size_t len)
{
	char name[32];
	size_t keep;

	vm_name(g, below(&g->r, g->p->vms), name, sizeof(name));
	keep = strlen(name) - 1 - (size_t)below(&g->r, 3);
	if (keep < 3)
		keep = 3;
	snprintf(buf, len, "%.*s", (int)keep, name);
}

static void write_group(struct gen *g, size_t gi)
{
	enum gkind kind = (enum gkind)g->kinds[gi];
	char name[NAME_MAX_LEN + 1], prefix[32], tv[2][64];
	/* Percent of groups that exclude quarantined VMs, as the normal
	 * groups of docs/CONFIG.md must. */
	unsigned xq = 35;

	group_name(g, gi, name, sizeof(name));
	fprintf(g->f, "[group %s]\n", name);
	switch (kind) {
	case G_QUARANTINE:
		fprintf(g->f, "description = every VM with a threat tag, whose connections are cut "
			"when it enters\nmatch = tag equals %s or tag equals %s or tag equals %s\n"
			"quarantine = yes\n\n", threat_tags[0], threat_tags[1], threat_tags[2]);
		return;
	case G_TAG:
		fprintf(g->f, "match = tag equals %s", tag_value(g, tv[0], sizeof(tv[0])));
		if (percent(&g->r, 30))
			fprintf(g->f, " or tag equals %s", tag_value(g, tv[1], sizeof(tv[1])));
		fputc('\n', g->f);
		break;
	case G_NAME:
		name_prefix(g, prefix, sizeof(prefix));
		fprintf(g->f, "match = name starts-with %s\n", prefix);
		if (percent(&g->r, 15))
			write_vm_list(g, "exclude_members", 1 + (size_t)below(&g->r, 2));
		break;
	case G_OS:
		if (percent(&g->r, 70))
			fprintf(g->f, "match = os equals %s", oses[below(&g->r, ARRAY_SIZE(oses))]);
		else
			fprintf(g->f, "match = os starts-with %s",
				os_prefixes[below(&g->r, ARRAY_SIZE(os_prefixes))]);
		if (percent(&g->r, 30))
			fprintf(g->f, " and tag equals %s", tag_value(g, tv[0], sizeof(tv[0])));
		fputc('\n', g->f);
		break;
	case G_STATIC:
		fprintf(g->f, "description = a handful of named VMs\n");
		write_vm_list(g, "members", 2 + (size_t)below(&g->r, 7));
		xq = 20;
		break;
	case G_NESTED:
		write_group_list(g, "include", gi, 2 + (size_t)below(&g->r, 3), false);
		/* exclude_groups is one key: quarantine and another group together. */
		if (gi > 3 && percent(&g->r, 10)) {
			write_group_list(g, "exclude_groups", gi, 1, percent(&g->r, 40));
			xq = 0;
		} else {
			xq = 40;
		}
		break;
	case G_CIDR:
		fprintf(g->f, "description = external networks\n"
			"addresses = 172.%zu.%zu.0/24, fd10:0:%zx::/48",
			16 + (gi >> 8) % 16, gi & 0xff, gi & 0xffff);
		if (g->p->rich && percent(&g->r, 60)) {
			vm_cidr(g, prefix, sizeof(prefix));
			fprintf(g->f, ", %s", prefix);
		}
		fputc('\n', g->f);
		if (percent(&g->r, 50)) {
			name_prefix(g, prefix, sizeof(prefix));
			fprintf(g->f, "match = name starts-with %s\n", prefix);
		}
		break;
	case G_MIXED:
		/* Operators beyond equals; a tag condition that is not a plain
		 * equality makes the group depend on every tag change, so few. */
		fprintf(g->f, "match = tag equals %s and os starts-with windows or name ends-with %llu",
			tag_value(g, tv[0], sizeof(tv[0])), (unsigned long long)below(&g->r, 10));
		if (percent(&g->r, 20))
			fprintf(g->f, " or tag starts-with %s", g->p->rich ?
				(percent(&g->r, 50) ? "app|t" : "t") :
				(percent(&g->r, 50) ? "app." : "env."));
		fputc('\n', g->f);
		fprintf(g->f, "exclude_match = os contains server and tag not-equals %s\n",
			tag_value(g, tv[0], sizeof(tv[0])));
		break;
	case G_KINDS:
		abort();
	}
	if (percent(&g->r, xq))
		fprintf(g->f, "exclude_groups = quarantine\n");
	fputc('\n', g->f);
}

/* --- rules -------------------------------------------------------------- */

static const char *const services[] = {
	"tcp/22", "tcp/53", "udp/53", "tcp/80", "tcp/443", "tcp/445", "tcp/389",
	"tcp/636", "tcp/88", "udp/88", "udp/123", "udp/161", "udp/514", "tcp/1433",
	"tcp/3306", "tcp/3389", "tcp/5432", "tcp/6379", "tcp/8080", "tcp/8443",
	"tcp/9200", "tcp/27017", "tcp/4001-4002", "tcp/8000-8099", "udp/10000-20000",
	"tcp/49152-65535", "icmp", "icmpv6",
};

/* --rich: every form of service the parser takes; tcp/443, tcp/85, udp/53
 * and udp/55 fall in several of them, so a lab can probe the overlaps.
 * Some pairs are the same service written twice (proto/47 and proto/gre,
 * proto/6 and tcp), which the parser folds. */
static const char *const rich_services[] = {
	"tcp", "udp", "tcp/22", "tcp/80-90", "tcp/443", "tcp/440-450", "tcp/8000-8099",
	"tcp/4001-4002", "udp/53", "udp/50-60", "udp/123", "udp/4172",
	"icmp", "icmp/echo-request", "icmp/echo-reply", "icmp/3:4", "icmp/destination-unreachable",
	"icmp/time-exceeded", "icmp/8:0", "icmp/13",
	"icmpv6", "icmpv6/128", "icmpv6/echo-request", "icmpv6/128:0", "icmpv6/129",
	"icmpv6/1:4", "icmpv6/packet-too-big",
	"proto/47", "proto/gre", "proto/50", "proto/132", "proto/112", "proto/6", "proto/17",
	"proto/1", "proto/58",
};
static const char *const service_words[] = {
	"web", "dns", "mgmt", "ping", "tunnels", "vdi", "monitoring", "db",
};

/* Service object k (0-based): svc1-web, svc2-dns, ... */
static void service_obj_name(size_t k, char *buf, size_t len)
{
	snprintf(buf, len, "svc%zu-%s", k + 1, service_words[k % ARRAY_SIZE(service_words)]);
}

/* n distinct items of the rich services, the service objects before obj
 * among them (a quarter of the picks when there are any), as "a, b". */
static void write_rich_service_list(struct gen *g, size_t n, size_t obj)
{
	size_t picked[4];
	char name[NAME_MAX_LEN + 1];

	if (n > ARRAY_SIZE(picked))
		n = ARRAY_SIZE(picked);
	for (size_t i = 0; i < n; i++) {
		bool dup;

		do {
			if (obj && percent(&g->r, 25))
				picked[i] = ARRAY_SIZE(rich_services) + (size_t)below(&g->r, obj);
			else
				picked[i] = (size_t)below(&g->r, ARRAY_SIZE(rich_services));
			dup = false;
			for (size_t j = 0; j < i; j++)
				dup |= picked[j] == picked[i];
		} while (dup);
		if (picked[i] < ARRAY_SIZE(rich_services))
			snprintf(name, sizeof(name), "%s", rich_services[picked[i]]);
		else
			service_obj_name(picked[i] - ARRAY_SIZE(rich_services), name, sizeof(name));
		fprintf(g->f, "%s%s", i ? ", " : "", name);
	}
}

/* --rich: [service NAME] objects of 2-4 entries; an object may list
 * earlier ones, never a later one, so there is no cycle. */
static void write_service_objects(struct gen *g)
{
	char name[NAME_MAX_LEN + 1];

	for (size_t k = 0; k < g->nsvcobj; k++) {
		service_obj_name(k, name, sizeof(name));
		fprintf(g->f, "[service %s]\n", name);
		if (percent(&g->r, 50))
			fprintf(g->f, "description = %s services\n",
				service_words[k % ARRAY_SIZE(service_words)]);
		fprintf(g->f, "entries = ");
		write_rich_service_list(g, 2 + (size_t)below(&g->r, 3), k);
		fputs("\n\n", g->f);
	}
}

/* FNV-1a: tells written items apart when they have no index of their own. */
static uint64_t text_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return h;
}

/* sources / destinations: any, or 1-3 distinct groups, VMs and CIDRs;
 * --rich: more VMs and CIDRs (prefixes of the VMs' own addresses too), and
 * a fifth of the lists negated. */
static void write_side(struct gen *g, const char *key, bool allow_any)
{
	static const unsigned w[] = { 85, 8, 7 }, rich_w[] = { 50, 20, 30 };
	bool rich = g->p->rich;
	size_t n = 1 + (size_t)below(&g->r, 3), done = 0;
	uint64_t seen[3][2]; /* kind, value of the items written */

	if (allow_any && percent(&g->r, 10)) {
		fprintf(g->f, "%s = any\n", key);
		return;
	}
	fprintf(g->f, "%s = %s", key, rich && percent(&g->r, 20) ? "not " : "");
	for (size_t i = 0; i < n; i++) {
		uint64_t kind = rich ? pick(&g->r, rich_w, ARRAY_SIZE(rich_w)) :
				       pick(&g->r, w, ARRAY_SIZE(w)), v;
		char item[NAME_MAX_LEN + 8];
		bool dup = false;

		switch (kind) {
		case 0:
			v = some_group(g, g->p->groups);
			snprintf(item, sizeof(item), "%s", percent(&g->r, 10) ? "group:" : "");
			group_name(g, v, item + strlen(item), sizeof(item) - strlen(item));
			break;
		case 1:
			v = below(&g->r, g->p->vms);
			snprintf(item, sizeof(item), "%s", percent(&g->r, 50) ? "vm:" : "");
			vm_name(g, v, item + strlen(item), sizeof(item) - strlen(item));
			break;
		default:
			if (rich && percent(&g->r, 60)) {
				vm_cidr(g, item, sizeof(item));
				v = text_hash(item) | 1ull << 63; /* never a value below */
				break;
			}
			v = below(&g->r, 0x20000);
			if (v < 0x10000)
				snprintf(item, sizeof(item), "192.168.%llu.0/24",
					 (unsigned long long)v % 256);
			else
				snprintf(item, sizeof(item), "fd20:%llx::/64",
					 (unsigned long long)v - 0x10000);
			if (v < 0x10000)
				v %= 256;
			break;
		}
		for (size_t j = 0; j < done; j++)
			dup |= seen[j][0] == kind && seen[j][1] == v;
		if (dup)
			continue; /* a shorter list rather than a repeated item */
		seen[done][0] = kind;
		seen[done][1] = v;
		fprintf(g->f, "%s%s", done++ ? ", " : "", item);
	}
	fputc('\n', g->f);
}

static void write_services(struct gen *g)
{
	size_t n = 1 + (size_t)below(&g->r, 4), picked[4];

	if (percent(&g->r, 8)) {
		if (percent(&g->r, 50))
			fprintf(g->f, "services = any\n");
		return;
	}
	fprintf(g->f, "services = ");
	if (g->p->rich) {
		write_rich_service_list(g, n, g->nsvcobj);
		fputc('\n', g->f);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		bool dup;

		do {
			picked[i] = (size_t)below(&g->r, ARRAY_SIZE(services));
			dup = false;
			for (size_t j = 0; j < i; j++)
				dup |= picked[j] == picked[i];
		} while (dup);
		fprintf(g->f, "%s%s", i ? ", " : "", services[picked[i]]);
	}
	fputc('\n', g->f);
}

/* Rules 100, 110 and 111 isolate quarantine as configs/vdi.ini does; the
 * others get ids 1000, 1010, ... in file order. */
static void write_rules(struct gen *g)
{
	const struct params *p = g->p;
	static const unsigned cat_w[] = { 5, 20, 25, 50 }, rich_cat_w[] = { 25, 25, 25, 25 };
	static const unsigned act_w[] = { 85, 10, 5 }, rich_act_w[] = { 55, 30, 15 };
	static const unsigned dir_w[] = { 80, 10, 10 }, rich_dir_w[] = { 60, 20, 20 };
	static const char *const dirs[] = { "in-out", "in", "out" };
	char name[NAME_MAX_LEN + 1];
	uint64_t k = 0;

	if (p->rules >= 3 && p->groups > 1) {
		group_name(g, 1, name, sizeof(name));
		fprintf(g->f, "[rule 100]\nname = quarantine: reach the remediation servers\n"
			"category = emergency\nsources = quarantine\ndestinations = %s\n"
			"services = tcp/443, tcp/8443\naction = allow\n\n", name);
		k++;
	}
	if (k < p->rules) {
		fprintf(g->f, "[rule 110]\nname = quarantine: block outgoing\ncategory = emergency\n"
			"sources = quarantine\ndestinations = any\naction = drop\nlog = yes\n\n");
		k++;
	}
	if (k < p->rules) {
		fprintf(g->f, "[rule 111]\nname = quarantine: block incoming\ncategory = emergency\n"
			"sources = any\ndestinations = quarantine\naction = drop\nlog = yes\n\n");
		k++;
	}
	for (uint64_t id = 1000; k < p->rules; k++, id += 10) {
		size_t cat = p->rich ? pick(&g->r, rich_cat_w, ARRAY_SIZE(rich_cat_w)) :
				       pick(&g->r, cat_w, ARRAY_SIZE(cat_w));
		size_t act = p->rich ? pick(&g->r, rich_act_w, ARRAY_SIZE(rich_act_w)) :
				       pick(&g->r, act_w, ARRAY_SIZE(act_w));
		bool src_any;

		fprintf(g->f, "[rule %llu]\nname = %s rule %llu\ncategory = %s\n",
			(unsigned long long)id, category_name((enum dfw_category)cat),
			(unsigned long long)id, category_name((enum dfw_category)cat));
		src_any = percent(&g->r, 10);
		if (src_any)
			fprintf(g->f, "sources = any\n");
		else
			write_side(g, "sources", false);
		/* Never any to any: that is one rule, not a thousand. */
		write_side(g, "destinations", !src_any);
		write_services(g);
		if ((double)below(&g->r, 1000000) < p->applied_frac * 1e6) {
			size_t first = some_group(g, p->groups), second = some_group(g, p->groups);

			group_name(g, first, name, sizeof(name));
			fprintf(g->f, "applied_to = %s", name);
			if (second != first && percent(&g->r, 30)) {
				group_name(g, second, name, sizeof(name));
				fprintf(g->f, ", %s", name);
			}
			fputc('\n', g->f);
		} else if (p->rich && percent(&g->r, 5)) {
			fprintf(g->f, "applied_to = any\n");
		}
		{
			size_t dir = p->rich ? pick(&g->r, rich_dir_w, ARRAY_SIZE(rich_dir_w)) :
					       pick(&g->r, dir_w, ARRAY_SIZE(dir_w));

			if (dir || percent(&g->r, 20))
				fprintf(g->f, "direction = %s\n", dirs[dir]);
		}
		fprintf(g->f, "action = %s\n", action_name((enum dfw_action)act));
		if (act != ACT_ALLOW ? percent(&g->r, 50) : p->rich && percent(&g->r, 10))
			fprintf(g->f, "log = yes\n");
		if (percent(&g->r, p->rich ? 8 : 1))
			fprintf(g->f, "disabled = yes\nnotes = kept for the audit trail\n");
		fputc('\n', g->f);
	}
}

/* --- arguments ------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f, "Usage: dfw-gen [OPTIONS]\n\n"
		   "Writes a synthetic datacenter as a policy INI (docs/CONFIG.md): VMs over\n"
		   "hypervisors, tags, security groups and rules, the same for the same seed.\n\n");
	for (size_t i = 0; i < ARRAY_SIZE(options); i++) {
		char left[64];

		snprintf(left, sizeof(left), "%s%s%s", options[i].name, *options[i].arg ? " " : "",
			 options[i].arg);
		fprintf(f, "  %-27s %s\n", left, options[i].help);
	}
	fprintf(f, "  %-27s %s\n", "-h, --help", "show this help");
}

static const struct option_def *find_option(const char *name, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(options); i++)
		if (strlen(options[i].name) == len && !strncmp(options[i].name, name, len))
			return &options[i];
	return NULL;
}

/* Strict: digits and at most one point, a value from 0 to 1. */
static int parse_fraction(const char *s, double *out)
{
	char *end;
	double v;

	if (!s[0] || strspn(s, "0123456789.") != strlen(s) || strchr(s, '.') != strrchr(s, '.'))
		return -1;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || end == s || !(v >= 0 && v <= 1))
		return -1;
	*out = v;
	return 0;
}

/* 0 to go on, 1 when help was asked for, -1 (after a message) on bad input. */
static int parse_args(int argc, char **argv, struct params *p)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq = strchr(arg, '='), *val;
		const struct option_def *o;
		size_t len = eq && arg[0] == '-' && arg[1] == '-' ? (size_t)(eq - arg) : strlen(arg);

		if (!strcmp(arg, "-h") || !strcmp(arg, "--help"))
			return 1;
		o = arg[0] == '-' ? find_option(arg, len) : NULL;
		if (!o) {
			const char *names[ARRAY_SIZE(options)], *near;
			char opt[64];

			if (arg[0] != '-') {
				fprintf(stderr, "dfw-gen: unexpected argument '%s'; see dfw-gen --help\n",
					arg);
				return -1;
			}
			for (size_t k = 0; k < ARRAY_SIZE(options); k++)
				names[k] = options[k].name;
			snprintf(opt, sizeof(opt), "%.*s", (int)(len < 63 ? len : 63), arg);
			near = nearest_name(opt, names, ARRAY_SIZE(options));
			fprintf(stderr, "dfw-gen: unknown option '%s'%s%s%s; see dfw-gen --help\n",
				arg, near ? " (did you mean '" : "", near ? near : "",
				near ? "'?)" : "");
			return -1;
		}
		if (o->kind == OPT_FLAG) {
			if (len < strlen(arg)) {
				fprintf(stderr, "dfw-gen: %s takes no value ('%s')\n", o->name, arg);
				return -1;
			}
			*(bool *)((char *)p + o->off) = true;
			continue;
		}
		if (len < strlen(arg)) {
			val = eq + 1;
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			fprintf(stderr, "dfw-gen: %s needs a value (%s)\n", o->name, o->arg);
			return -1;
		}
		if (o->kind == OPT_STR) {
			if (!val[0]) {
				fprintf(stderr, "dfw-gen: %s: empty value\n", o->name);
				return -1;
			}
			*(const char **)((char *)p + o->off) = val;
			continue;
		}
		if (parse_u64(val, o->max, (uint64_t *)((char *)p + o->off)) < 0 ||
		    *(uint64_t *)((char *)p + o->off) < o->min) {
			fprintf(stderr, "dfw-gen: %s '%s': expected a whole number from %llu to %llu\n",
				o->name, val, (unsigned long long)o->min, (unsigned long long)o->max);
			return -1;
		}
	}
	if (!p->applied_to)
		p->applied_to = p->rich ? "0.25" : "0.05";
	if (parse_fraction(p->applied_to, &p->applied_frac) < 0) {
		fprintf(stderr, "dfw-gen: --applied-to-fraction '%s': expected a number from 0 to 1, "
			"e.g. 0.05\n", p->applied_to);
		return -1;
	}
	return 0;
}

/* Cross-checks that single options cannot see; resolves the local host. */
static int check_params(struct params *p, size_t *local_host)
{
	const char *s = p->local_host;
	bool valid = strlen(s) <= NAME_MAX_LEN && ((s[0] >= 'a' && s[0] <= 'z') ||
		     (s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= '0' && s[0] <= '9'));
	char hv[32];
	uint64_t h;

	for (; *s && valid; s++)
		valid = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			       "0123456789._-", *s);
	if (!valid) {
		fprintf(stderr, "dfw-gen: --local-host '%s': 1-%d letters, digits and . _ -, "
			"starting with a letter or digit\n", p->local_host, NAME_MAX_LEN);
		return -1;
	}
	/* The local host is one of hv1..hvN, or a host of its own. */
	*local_host = p->hosts;
	if (!strncmp(p->local_host, "hv", 2) && parse_u64(p->local_host + 2, p->hosts, &h) == 0 &&
	    h >= 1) {
		/* "hv01" is a host of its own, not hv1. */
		snprintf(hv, sizeof(hv), "hv%llu", (unsigned long long)h);
		if (!strcmp(hv, p->local_host))
			*local_host = (size_t)h - 1;
	}
	if (p->local_vms == UINT64_MAX)
		p->local_vms = p->vms / p->hosts;
	if (p->local_vms > p->vms) {
		fprintf(stderr, "dfw-gen: --local-vms %llu: more than the %llu VMs (--vms)\n",
			(unsigned long long)p->local_vms, (unsigned long long)p->vms);
		return -1;
	}
	if (p->local_vms < p->vms && p->hosts - (*local_host < p->hosts) == 0) {
		fprintf(stderr, "dfw-gen: --local-vms %llu leaves %llu VMs but no other host "
			"for them (--hosts %llu)\n", (unsigned long long)p->local_vms,
			(unsigned long long)(p->vms - p->local_vms), (unsigned long long)p->hosts);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct params p = {
		.hosts = 10, .vms = 1000, .local_vms = UINT64_MAX, .groups = 100,
		.rules = 1000, .tags = 10, .seed = 1, .local_host = "hv1",
	};
	struct gen g = { .p = &p };
	static char buf[1 << 20];
	struct stat st;
	bool regular = false;
	int rc = 1;

	switch (parse_args(argc, argv, &p)) {
	case -1:
		return 1;
	case 1:
		usage(stdout);
		return 0;
	}
	if (check_params(&p, &g.local_host) < 0)
		return 1;
	g.r.s = p.seed;
	g.vm_width = snprintf(NULL, 0, "%llu", (unsigned long long)p.vms);
	if (g.vm_width < 5)
		g.vm_width = 5;
	if (make_tags(&g) < 0)
		goto out;
	g.kinds = xcalloc(p.groups, sizeof(*g.kinds));
	for (size_t i = 1; i < p.groups; i++) {
		g.kinds[i] = (uint8_t)pick(&g.r, kind_weights, ARRAY_SIZE(kind_weights));
		/* Nesting needs two earlier groups to be worth the name. */
		if (g.kinds[i] == G_NESTED && i < 3)
			g.kinds[i] = G_TAG;
	}
	g.f = p.out && strcmp(p.out, "-") ? fopen(p.out, "w") : stdout;
	if (!g.f) {
		fprintf(stderr, "dfw-gen: %s: %s\n", p.out, strerror(errno));
		goto out;
	}
	/* Only a regular file is removed on failure: -o may name a device. */
	regular = g.f != stdout && fstat(fileno(g.f), &st) == 0 && S_ISREG(st.st_mode);
	setvbuf(g.f, buf, _IOFBF, sizeof(buf));
	write_header(&g);
	write_tags(&g);
	write_vms(&g);
	for (size_t i = 0; i < p.groups; i++)
		write_group(&g, i);
	if (p.rich) {
		g.nsvcobj = 2 + (size_t)below(&g.r, 5);
		write_service_objects(&g);
	}
	write_rules(&g);
	if (fflush(g.f) || ferror(g.f)) {
		fprintf(stderr, "dfw-gen: %s: %s\n", g.f == stdout ? "standard output" : p.out,
			strerror(errno));
		goto out;
	}
	rc = 0;
out:
	if (g.f && g.f != stdout && fclose(g.f) && !rc) {
		fprintf(stderr, "dfw-gen: %s: %s\n", p.out, strerror(errno));
		rc = 1;
	}
	if (rc && regular)
		unlink(p.out); /* no half-written policy left behind */
	strv_free(&g.tags);
	free(g.kinds);
	return rc;
}
