/* Unit tests of the compiler (dfw/compile.c, dfw/nftprint.c): golden nft
 * scripts, structural checks of every compiled plan, and plan diffs.
 *
 * Golden files live in tests/golden/, the policies in configs/ and
 * tests/configs/; paths are relative to the repository root, where the runner
 * is started.  To (re)write the golden files after an intended change of the
 * output, run
 *
 *     DFW_UPDATE_GOLDEN=1 build/unit-tests
 *
 * and review the diff of tests/golden/ before committing it.  Each golden
 * file can be checked by the real nft parser (needs root, not done here):
 *
 *     ip netns add gold-check
 *     ip netns exec gold-check nft -c -f tests/golden/vdi-untagged.nft
 *     ip netns del gold-check
 */
#include "dfw/compile.h"
#include "tests/unit/unit.h"

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dfw/trace.h"
#include "groups/groups.h"

/* A parsed policy and its membership engine. */
struct fixture {
	struct dfw_policy *p;
	struct gengine *e;
};

static void fixture_free(struct fixture *fx)
{
	gengine_free(fx->e);
	policy_free(fx->p);
}

/* Builds the engine of a parsed policy; any diagnostic fails the test at
 * the caller's line. */
static struct fixture fixture_at(int at, struct dfw_policy *p, struct diag *d)
{
	struct fixture fx = { p, NULL };
	bool ok;

	if (fx.p)
		fx.e = gengine_new(&fx.p->inv, fx.p->file, d);
	ok = fx.p && fx.e && !d->n;
	for (size_t i = 0; i < d->n; i++)
		fprintf(stderr, "\n  %s", d->msgs[i]);
	diag_free(d);
	if (!ok)
		fixture_free(&fx); /* a fatal assertion leaves this function */
	CU_assertImplementation(ok, (unsigned)at, "policy is valid", __FILE__, "", CU_TRUE);
	return fx;
}

static struct fixture load_at(int at, const char *path)
{
	struct diag d = { 0 };

	return fixture_at(at, policy_load(path, NULL, &d), &d);
}

static struct fixture parse_at(int at, const char *text)
{
	struct diag d = { 0 };

	return fixture_at(at, policy_parse(text, "t.ini", &d), &d);
}

/* Parses text, lets mut change the policy the way dfwd does at run time
 * (monitor modes, locked learned addresses), then builds the engine. */
static struct fixture parse_mut_at(int at, const char *text, void (*mut)(struct dfw_policy *))
{
	struct diag d = { 0 };
	struct dfw_policy *p = policy_parse(text, "t.ini", &d);

	if (p && !d.n)
		mut(p);
	return fixture_at(at, p, &d);
}

#define LOAD(path) load_at(__LINE__, path)
#define PARSE(text) parse_at(__LINE__, text)
#define PARSE_MUT(text, mut) parse_mut_at(__LINE__, text, mut)

/* Replaces the tags of the named VM. */
static void set_tags(struct fixture *fx, const char *vm, const char *const *tags, size_t n)
{
	long i = policy_find_vm(fx->p, vm);

	CU_ASSERT_TRUE_FATAL(i >= 0);
	gengine_set_tags(fx->e, (size_t)i, tags, n, NULL, NULL);
}

static void tag1(struct fixture *fx, const char *vm, const char *tag)
{
	set_tags(fx, vm, &tag, 1);
}

static char *print_plan(const struct plan *pl)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	plan_print_nft(pl, "dfw", f);
	fclose(f);
	return buf;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *text = NULL;
	size_t len = 0;

	if (!f)
		return NULL;
	if (getdelim(&text, &len, '\0', f) < 0) {
		free(text);
		text = xstrdup("");
	}
	fclose(f);
	return text;
}

/* Compares text with the golden file (or rewrites it, see the top). */
static void golden_at(int at, const char *path, const char *text)
{
	const char *upd = getenv("DFW_UPDATE_GOLDEN");
	char *want;
	bool ok;

	if (upd && !strcmp(upd, "1")) {
		FILE *f = fopen(path, "w");

		ok = f && fputs(text, f) >= 0;
		if (f && fclose(f))
			ok = false;
		CU_assertImplementation(ok, (unsigned)at, "golden file written", __FILE__, "",
					CU_FALSE);
		return;
	}
	want = read_file(path);
	ok = want && !strcmp(want, text);
	if (!want) {
		fprintf(stderr, "\n  %s: cannot read (DFW_UPDATE_GOLDEN=1 creates it)\n", path);
	} else if (!ok) {
		/* Show the first differing line, enough to see what changed. */
		const char *w = want, *g = text;
		int line = 1;

		while (*w && *w == *g) {
			line += *w == '\n';
			w++;
			g++;
		}
		while (w > want && w[-1] != '\n')
			w--, g--;
		fprintf(stderr, "\n  %s:%d differs\n    want: %.*s\n    got:  %.*s\n", path, line,
			(int)strcspn(w, "\n"), w, (int)strcspn(g, "\n"), g);
	}
	CU_assertImplementation(ok, (unsigned)at, "output matches the golden file", __FILE__, "",
				CU_FALSE);
	free(want);
}

#define GOLDEN(path, text) golden_at(__LINE__, path, text)

/* ---- structural checks of a plan ------------------------------------------- */

static int cmp_str(const void *x, const void *y)
{
	return strcmp(x, y);
}

static bool sorted_names(const void *base, size_t n, size_t stride, size_t off)
{
	for (size_t i = 1; i < n; i++) {
		const char *a = (const char *)base + (i - 1) * stride + off;
		const char *b = (const char *)base + i * stride + off;

		if (strcmp(a, b) >= 0)
			return false;
	}
	return true;
}

#define PROBLEM(...) (fprintf(stderr, "\n  plan: " __VA_ARGS__), ok = false)

/* Whether kernel rule pr tests TCP or UDP destination port `port` of
 * protocol proto, and matches it there; *ported: it tests such a port at all. */
static bool rule_takes_port(const struct plan *pl, const struct prule *pr, uint8_t proto,
			    uint32_t port, bool *ported)
{
	uint32_t l4 = 0;
	bool in = false, tested = false;

	for (size_t i = 0; i < pr->nitems; i++) {
		const struct pitem *it = &pr->items[i];
		const struct pset *s;

		if (it->kind == PI_L4PROTO)
			l4 = it->u;
		else if (it->kind == PI_DPORT) {
			tested = true;
			in = it->lo <= port && port <= it->hi;
		} else if (it->kind == PI_DPORT_SET && (s = plan_find_set(pl, it->name))) {
			tested = true;
			for (size_t k = 0; k < s->nelems; k++)
				in |= (uint32_t)(s->elems[k].a[0] << 8 | s->elems[k].a[1]) <= port &&
				      port <= (uint32_t)(s->elems[k].a[2] << 8 | s->elems[k].a[3]);
		}
	}
	*ported = tested && (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP);
	return *ported && l4 == proto && in;
}

static bool rule_ported(const struct plan *pl, const struct prule *pr)
{
	bool ported;

	rule_takes_port(pl, pr, 0, 0, &ported);
	return ported;
}

/* Whether a kernel rule can only match a protocol other than TCP and UDP
 * (ICMP, proto/N), so never a packet a port rule matches. */
static bool rule_other_proto(const struct prule *pr)
{
	bool other = false;

	for (size_t i = 0; i < pr->nitems; i++)
		if (pr->items[i].kind == PI_L4PROTO)
			other = pr->items[i].u != IPPROTO_TCP && pr->items[i].u != IPPROTO_UDP;
	return other;
}

/* The dispatch of a chain (dfw/dispatch.c) keeps its meaning: segments are
 * maximal runs of rules that test a TCP or UDP port or match another
 * protocol only, with at least DISP_MIN_RULES of the former, in order; and for every protocol and port that matters (each
 * atom's ends and each rule's range ends, with their neighbours, and a
 * sweep), the chain the map enters holds exactly the segment's rules that
 * match that port, in order, and no atom holds the port when none does. */
static bool dispatch_ok(const struct plan *pl, const struct pchain *ch)
{
	static const uint8_t protos[] = { IPPROTO_TCP, IPPROTO_UDP };
	bool ok = true, ported;

	if (ch->nsegs > DISP_MAX_SEGS)
		PROBLEM("chain %s: %zu segments\n", ch->name, ch->nsegs);
	for (size_t k = 0; k < ch->nsegs; k++) {
		const struct pdisp_seg *sg = &ch->segs[k];
		uint32_t *ports = NULL;
		size_t nports = 0;

		size_t nport = 0;

		if (sg->end > ch->nrules || (k && sg->first <= ch->segs[k - 1].end))
			PROBLEM("chain %s: segment %zu [%zu, %zu) misplaced\n", ch->name, k,
				sg->first, sg->end);
		for (size_t r = sg->first; r < sg->end && r < ch->nrules; r++) {
			nport += rule_ported(pl, &ch->rules[r]);
			if (!rule_ported(pl, &ch->rules[r]) && !rule_other_proto(&ch->rules[r]))
				PROBLEM("chain %s: rule %zu in segment %zu could match any port\n",
					ch->name, r, k);
		}
		if (nport < DISP_MIN_RULES)
			PROBLEM("chain %s: segment %zu has %zu port rules\n", ch->name, k, nport);
		if (sg->first && (rule_ported(pl, &ch->rules[sg->first - 1]) ||
				  rule_other_proto(&ch->rules[sg->first - 1])))
			PROBLEM("chain %s: segment %zu could start earlier\n", ch->name, k);
		if (sg->end < ch->nrules && (rule_ported(pl, &ch->rules[sg->end]) ||
					     rule_other_proto(&ch->rules[sg->end])))
			PROBLEM("chain %s: segment %zu could end later\n", ch->name, k);
		for (size_t j = 0; j < sg->natoms; j++) {
			const struct pdisp_atom *a = &sg->atoms[j];
			const struct pdisp_atom *c = &sg->atoms[a->chain];

			if (a->chain > j || c->chain != a->chain || c->nrules != a->nrules ||
			    memcmp(c->rules, a->rules, a->nrules * sizeof(*a->rules)))
				PROBLEM("chain %s: atom %zu.%zu shares a chain of other rules\n",
					ch->name, k, j);
			if (a->lo > a->hi || (j && sg->atoms[j - 1].proto == a->proto &&
					      sg->atoms[j - 1].hi >= a->lo) ||
			    (j && sg->atoms[j - 1].proto > a->proto))
				PROBLEM("chain %s: atom %zu.%zu out of order\n", ch->name, k, j);
			ports = xrealloc(ports, (nports + 4) * sizeof(*ports));
			ports[nports++] = a->lo;
			ports[nports++] = a->hi;
			ports[nports++] = a->lo ? a->lo - 1u : 0;
			ports[nports++] = a->hi < 65535 ? a->hi + 1u : 65535;
		}
		for (size_t r = sg->first; r < sg->end && r < ch->nrules; r++) {
			const struct prule *pr = &ch->rules[r];

			for (uint32_t v = 0; v <= 65535; v += 4093) {
				ports = xrealloc(ports, (nports + 1) * sizeof(*ports));
				ports[nports++] = v + (uint32_t)r % 7;
			}
			for (size_t i = 0; i < pr->nitems; i++) { /* the rule's own ends */
				const struct pitem *it = &pr->items[i];
				const struct pset *s = it->kind == PI_DPORT_SET ?
						       plan_find_set(pl, it->name) : NULL;
				size_t n = it->kind == PI_DPORT ? 1 : s ? s->nelems : 0;

				ports = xrealloc(ports, (nports + 4 * n) * sizeof(*ports));
				for (size_t e = 0; e < n; e++) {
					uint32_t lo = s ? (uint32_t)(s->elems[e].a[0] << 8 |
								     s->elems[e].a[1]) : it->lo;
					uint32_t hi = s ? (uint32_t)(s->elems[e].a[2] << 8 |
								     s->elems[e].a[3]) : it->hi;

					ports[nports++] = lo;
					ports[nports++] = hi;
					ports[nports++] = lo ? lo - 1 : 0; /* a gap inside an atom */
					ports[nports++] = hi < 65535 ? hi + 1 : 65535;
				}
			}
		}
		for (size_t p = 0; p < ARRAY_SIZE(protos); p++) {
			for (size_t i = 0; i < nports; i++) {
				const struct pdisp_atom *hit = NULL;
				size_t n = 0;

				for (size_t j = 0; j < sg->natoms; j++)
					if (sg->atoms[j].proto == protos[p] && sg->atoms[j].lo <= ports[i] &&
					    ports[i] <= sg->atoms[j].hi)
						hit = &sg->atoms[sg->atoms[j].chain];
				for (size_t r = sg->first; r < sg->end && r < ch->nrules; r++) {
					if (!rule_takes_port(pl, &ch->rules[r], protos[p], ports[i],
							     &ported))
						continue;
					if (!hit || n >= hit->nrules || hit->rules[n] != r)
						PROBLEM("chain %s: %s port %u: rule %zu not dispatched\n",
							ch->name, protos[p] == IPPROTO_TCP ? "tcp" : "udp",
							ports[i], r);
					n++;
				}
				if (hit && n != hit->nrules)
					PROBLEM("chain %s: %s port %u: dispatched to rules that do not take it\n",
						ch->name, protos[p] == IPPROTO_TCP ? "tcp" : "udp", ports[i]);
			}
		}
		free(ports);
	}
	return ok;
}

/* What must hold for every plan: sorted unique names; each port's chains
 * exist and count it; every set a rule names exists, in the rule's family;
 * icmp only in IPv4 rules and icmpv6 only in IPv6 ones; allow is 'return'
 * in out chains and 'accept' in in chains; each chain ends with the default
 * rule (rule id 0) and rule_ids lists the policy rules it enforces.
 * Every kernel rule counts in its policy rule's named counter of the
 * chain's direction, which the plan lists (sorted, unique), and ends with
 * its verdict; in monitor mode (after a "monitor" log) that verdict is an
 * allow's; ICMP types and codes follow their protocol. */
static bool plan_ok(const struct plan *pl)
{
	bool ok = true;

	for (size_t i = 1; i < pl->ncounters; i++)
		if (strcmp(pl->counters[i - 1], pl->counters[i]) >= 0)
			PROBLEM("counters not sorted or not unique\n");

	if (!sorted_names(pl->ports, pl->nports, sizeof(*pl->ports),
			  offsetof(struct pport, ifname)))
		PROBLEM("ports not sorted or not unique\n");
	if (!sorted_names(pl->sets, pl->nsets, sizeof(*pl->sets), offsetof(struct pset, name)))
		PROBLEM("sets not sorted or not unique\n");
	{
		/* Creation order: hot sets first, a quarantine's first among them,
		 * and among those the isolation groups' own, then by size. */
		size_t *order = calloc(pl->nsets + 1, sizeof(*order));

		plan_set_order(pl, order);
		for (size_t i = 0; i < pl->nsets; i++) {
			const struct pset *s = &pl->sets[order[i]];
			const struct pset *prev = i ? &pl->sets[order[i - 1]] : NULL;

			if (s->isolation && !s->hot)
				PROBLEM("set %s: a quarantine edits it, no tag does\n", s->name);
			if (s->iso_group && !s->isolation)
				PROBLEM("set %s: of an isolation group, no quarantine edits it\n",
					s->name);
			if (prev && (s->hot > prev->hot ||
				     (s->hot == prev->hot && s->isolation > prev->isolation) ||
				     (s->isolation && prev->isolation &&
				      (s->iso_group > prev->iso_group ||
				       (s->iso_group == prev->iso_group &&
					s->nelems > prev->nelems)))))
				PROBLEM("set %s created after %s\n", s->name, prev->name);
		}
		free(order);
	}
	if (!sorted_names(pl->chains, pl->nchains, sizeof(*pl->chains),
			  offsetof(struct pchain, name)))
		PROBLEM("chains not sorted or not unique\n");
	for (size_t i = 0; i < pl->nports; i++) {
		const struct pport *pp = &pl->ports[i];

		if (pp->out_chain[0] != 'o' || !plan_find_chain(pl, pp->out_chain))
			PROBLEM("%s: bad out chain %s\n", pp->ifname, pp->out_chain);
		if (pp->in_chain[0] != 'i' || !plan_find_chain(pl, pp->in_chain))
			PROBLEM("%s: bad in chain %s\n", pp->ifname, pp->in_chain);
		if (plan_find_port(pl, pp->ifname) != pp)
			PROBLEM("%s: not found by name\n", pp->ifname);
		if (pp->vm >= pl->nvms || pl->vm_port[pp->vm] != i)
			PROBLEM("%s: not the port of its VM in vm_port\n", pp->ifname);
	}
	{
		/* The membership index: each VM's port, each group's sets. */
		static const char *const suffix[MS_COUNT] = { "-4", "-6", "-4b", "-6b",
							      "-o", "-i", "-ob", "-ib" };
		size_t local = 0;

		for (size_t v = 0; v < pl->nvms; v++)
			local += pl->vm_port[v] != SIZE_MAX;
		if (local != pl->nports)
			PROBLEM("vm_port: %zu local VMs, %zu ports\n", local, pl->nports);
		for (size_t g = 0; g < pl->ngroups; g++) {
			for (int k = 0; k < MS_COUNT; k++) {
				size_t at = pl->group_sets[g][k];
				const char *name;
				size_t n;

				if (at == SIZE_MAX)
					continue;
				if (at >= pl->nsets) {
					PROBLEM("group %zu: set index %zu of %zu\n", g, at, pl->nsets);
					continue;
				}
				name = pl->sets[at].name;
				n = strlen(name);
				if (name[0] != (k < MS_PORT_OUT ? 'g' : 'p') ||
				    n < strlen(suffix[k]) ||
				    strcmp(name + n - strlen(suffix[k]), suffix[k]))
					PROBLEM("group %zu: %s is not its %s set\n", g, name, suffix[k]);
			}
		}
	}
	for (size_t i = 0; i < pl->nsets; i++) {
		const struct pset *s = &pl->sets[i];

		if (plan_find_set(pl, s->name) != s)
			PROBLEM("set %s: not found by name\n", s->name);
		for (size_t k = 0; k < s->nelems; k++) {
			if (s->elems[k].family != s->family)
				PROBLEM("set %s: element of the other family\n", s->name);
			if (k && addr_cmp(&s->elems[k - 1], &s->elems[k]) >= 0)
				PROBLEM("set %s: elements not sorted\n", s->name);
			if (k && addr_contains(&s->elems[k - 1], &s->elems[k]))
				PROBLEM("set %s: overlapping elements\n", s->name);
		}
	}
	for (size_t c = 0; c < pl->nchains; c++) {
		const struct pchain *ch = &pl->chains[c];
		bool out = ch->name[0] == 'o';
		size_t refs = 0, ids = 0; /* next rule_ids entry to match */

		for (size_t i = 0; i < pl->nports; i++)
			refs += !strcmp(pl->ports[i].out_chain, ch->name) +
				!strcmp(pl->ports[i].in_chain, ch->name);
		if (refs != ch->refs || refs == 0)
			PROBLEM("chain %s: refs %zu, %zu ports use it\n", ch->name, ch->refs, refs);
		if (!ch->nrules || ch->rules[ch->nrules - 1].rule_id != 0)
			PROBLEM("chain %s: does not end with the default rule\n", ch->name);
		for (size_t r = 0; r < ch->nrules; r++) {
			const struct prule *pr = &ch->rules[r];
			uint32_t fam = 0;

			/* Kernel rules follow rule_ids in order (a policy rule may
			 * compile to nothing, e.g. icmp between IPv6-only sides). */
			if (pr->rule_id && (!r || pr->rule_id != ch->rules[r - 1].rule_id)) {
				while (ids < ch->nrule_ids && ch->rule_ids[ids] != pr->rule_id)
					ids++;
				if (ids == ch->nrule_ids)
					PROBLEM("chain %s: rule %u not in rule_ids, or out of order\n",
						ch->name, pr->rule_id);
				else
					ids++;
			}
			char want[PLAN_NAME_MAX];
			bool counted = false, monitor = false;
			uint32_t proto = 0;

			if (pr->rule_id)
				snprintf(want, sizeof(want), "r-%u-%s", pr->rule_id, out ? "out" : "in");
			else
				snprintf(want, sizeof(want), "r-default-%s", out ? "out" : "in");
			for (size_t k = 0; k < pr->nitems; k++) {
				const struct pitem *it = &pr->items[k];
				const struct pset *s;

				switch (it->kind) {
				case PI_COUNTER:
					if (strcmp(it->name, want))
						PROBLEM("chain %s: rule %u counts in %s\n", ch->name,
							pr->rule_id, it->name);
					if (!bsearch(it->name, pl->counters, pl->ncounters,
						     sizeof(*pl->counters), cmp_str))
						PROBLEM("chain %s: counter %s not in the plan\n", ch->name,
							it->name);
					counted = true;
					break;
				case PI_LOG:
					monitor = strstr(it->name, " monitor ") != NULL;
					break;
				case PI_ICMP_TYPE:
				case PI_ICMP_CODE:
					if (it->u != proto || !k || (it->kind == PI_ICMP_TYPE ?
						pr->items[k - 1].kind != PI_L4PROTO :
						pr->items[k - 1].kind != PI_ICMP_TYPE))
						PROBLEM("chain %s: rule %u: ICMP type/code out of place\n",
							ch->name, pr->rule_id);
					break;
				case PI_NFPROTO:
					fam = it->u;
					break;
				case PI_SADDR_SET:
				case PI_DADDR_SET:
					s = plan_find_set(pl, it->name);
					if (!s)
						PROBLEM("chain %s: no set %s\n", ch->name, it->name);
					else if (s->family != (fam == NFPROTO_IPV4 ? AF_INET : AF_INET6) ||
						 !fam)
						PROBLEM("chain %s: rule %u uses set %s of the other family\n",
							ch->name, pr->rule_id, it->name);
					break;
				case PI_L4PROTO:
					proto = it->u;
					if (it->u == IPPROTO_ICMP && fam != NFPROTO_IPV4)
						PROBLEM("chain %s: icmp outside IPv4\n", ch->name);
					if (it->u == IPPROTO_ICMPV6 && fam != NFPROTO_IPV6)
						PROBLEM("chain %s: icmpv6 outside IPv6\n", ch->name);
					break;
				case PI_VERDICT:
					if (it->u == (out ? PV_ACCEPT : PV_RETURN))
						PROBLEM("chain %s: allow must be %s\n", ch->name,
							out ? "return" : "accept");
					if (k + 1 != pr->nitems)
						PROBLEM("chain %s: verdict not last\n", ch->name);
					if (monitor && it->u != (out ? PV_RETURN : PV_ACCEPT))
						PROBLEM("chain %s: rule %u: monitor mode must let through\n",
							ch->name, pr->rule_id);
					break;
				default:
					break;
				}
			}
			if (!counted)
				PROBLEM("chain %s: rule %u counts nowhere\n", ch->name, pr->rule_id);
			if (!pr->nitems || pr->items[pr->nitems - 1].kind != PI_VERDICT)
				PROBLEM("chain %s: rule %u: no verdict\n", ch->name, pr->rule_id);
		}
		ok &= dispatch_ok(pl, ch);
	}
	return ok;
}

static struct plan *compile_at(int at, const struct fixture *fx, const char *host)
{
	struct plan *pl = plan_compile(fx->p, fx->e, host);

	CU_assertImplementation(pl != NULL, (unsigned)at, "plan compiles", __FILE__, "", CU_TRUE);
	CU_assertImplementation(plan_ok(pl), (unsigned)at, "plan is consistent", __FILE__, "",
				CU_FALSE);
	return pl;
}

#define COMPILE(fx, host) compile_at(__LINE__, fx, host)

/* The set's elements, formatted and joined with ", ". */
static bool set_is(const struct plan *pl, const char *name, const char *want)
{
	const struct pset *s = plan_find_set(pl, name);
	char buf[1024] = "", a[64];

	if (!s) {
		fprintf(stderr, "\n  no set %s\n", name);
		return false;
	}
	for (size_t i = 0; i < s->nelems; i++) {
		addr_format(&s->elems[i], a, sizeof(a));
		snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", i ? ", " : "", a);
	}
	if (strcmp(buf, want))
		fprintf(stderr, "\n  set %s: want {%s}, got {%s}\n", name, want, buf);
	return !strcmp(buf, want);
}

/* Counts the kernel rules of a chain that come from policy rule id. */
static size_t count_rules(const struct pchain *c, uint32_t id)
{
	size_t n = 0;

	for (size_t i = 0; i < c->nrules; i++)
		n += c->rules[i].rule_id == id;
	return n;
}

static bool chain_has_rule(const struct pchain *c, uint32_t id)
{
	for (size_t i = 0; i < c->nrule_ids; i++)
		if (c->rule_ids[i] == id)
			return true;
	return false;
}

/* The verdict of the k-th kernel rule of chain c from policy rule id. */
static int verdict_of(const struct pchain *c, uint32_t id, size_t k)
{
	for (size_t i = 0; i < c->nrules; i++) {
		const struct prule *r = &c->rules[i];

		if (r->rule_id != id || k--)
			continue;
		if (!r->nitems || r->items[r->nitems - 1].kind != PI_VERDICT)
			return -1;
		return (int)r->items[r->nitems - 1].u;
	}
	return -1;
}

/* ---- the shipped VDI policy ------------------------------------------------ */

static void test_vdi_untagged(void)
{
	static const uint32_t ids[] = { 100, 101, 110, 111, 200, 201, 210, 220, 230, 240 };
	struct fixture fx = LOAD("configs/vdi.ini");
	struct plan *pl = COMPILE(&fx, "hv1");
	const struct pchain *out, *in;
	const struct pport *pp;
	char *text = print_plan(pl);
	char buf[64];

	GOLDEN("tests/golden/vdi-untagged.nft", text);

	CU_ASSERT_EQUAL_FATAL(pl->nports, 7);
	/* 6 groups x 2 families; 2 service sets; the quarantine's vNIC ids
	 * (isolation: no broadcast or multicast in) */
	CU_ASSERT_EQUAL(pl->nsets, 15);
	/* Every rule applies everywhere in both directions: one out chain and
	 * one in chain, shared by all seven vNICs. */
	CU_ASSERT_EQUAL_FATAL(pl->nchains, 2);
	out = plan_find_chain(pl, pl->ports[0].out_chain);
	in = plan_find_chain(pl, pl->ports[0].in_chain);
	CU_ASSERT_PTR_NOT_NULL_FATAL(out);
	CU_ASSERT_PTR_NOT_NULL_FATAL(in);
	CU_ASSERT_EQUAL(out->refs, 7);
	CU_ASSERT_EQUAL(in->refs, 7);
	for (size_t i = 0; i < pl->nports; i++) {
		CU_ASSERT_STRING_EQUAL(pl->ports[i].out_chain, out->name);
		CU_ASSERT_STRING_EQUAL(pl->ports[i].in_chain, in->name);
	}
	CU_ASSERT_EQUAL_FATAL(out->nrule_ids, 10);
	CU_ASSERT_EQUAL_FATAL(in->nrule_ids, 10);
	for (size_t i = 0; i < 10; i++) {
		CU_ASSERT_EQUAL(out->rule_ids[i], ids[i]);
		CU_ASSERT_EQUAL(in->rule_ids[i], ids[i]);
	}
	/* Rule 100: 4 services x 2 families; rule 110: any to any, one rule;
	 * rule 220: 4 ports x 2 families + icmp (v4) + icmpv6 (v6). */
	/* tcp/443,4172,8443 as one service set, udp/4172 alone; x 2 families */
	CU_ASSERT_EQUAL(count_rules(out, 100), 4);
	CU_ASSERT_EQUAL(count_rules(out, 110), 2);
	/* tcp 53,88,389 (a set), udp/53; icmp in v4, icmpv6 in v6 */
	CU_ASSERT_EQUAL(count_rules(out, 220), 6);
	CU_ASSERT_EQUAL(count_rules(out, 0), 1);
	CU_ASSERT_EQUAL(verdict_of(out, 100, 0), PV_RETURN);
	CU_ASSERT_EQUAL(verdict_of(in, 100, 0), PV_ACCEPT);
	CU_ASSERT_EQUAL(verdict_of(out, 110, 0), PV_DROP);
	CU_ASSERT_EQUAL(verdict_of(out, 0, 0), PV_DROP);
	CU_ASSERT_EQUAL(verdict_of(in, 0, 0), PV_DROP);

	/* Ports: sorted by name, id = inventory index + 1, addresses with the
	 * EUI-64 link-local and '::' (duplicate address detection). */
	CU_ASSERT_STRING_EQUAL(pl->ports[0].ifname, "vnet-cs1");
	CU_ASSERT_STRING_EQUAL(pl->ports[6].ifname, "vnet-fs1");
	pp = plan_find_port(pl, "vnet-desktop1");
	CU_ASSERT_PTR_NOT_NULL_FATAL(pp);
	CU_ASSERT_EQUAL(pp->id, 1);
	CU_ASSERT_EQUAL(pp->vm, 0);
	CU_ASSERT_EQUAL(pp->mac[5], 0x11);
	CU_ASSERT_EQUAL_FATAL(pp->naddrs, 4);
	addr_format(&pp->addrs[0], buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "10.10.0.11");
	addr_format(&pp->addrs[1], buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "::");
	addr_format(&pp->addrs[2], buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "fd00:10::11");
	addr_format(&pp->addrs[3], buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "fe80::ff:fe10:11");
	CU_ASSERT_EQUAL(plan_find_port(pl, "vnet-dc1")->id, 7);
	CU_ASSERT_PTR_NULL(plan_find_port(pl, "vnet-nope"));

	/* Untagged: quarantine is empty, desktops holds all four.  Desktops
	 * excludes quarantine, so the kernel gets its base (4b, 6b) and a
	 * negated lookup in quarantine; there is no g-desktops-4.  A VM's
	 * IPv6 link-local address (EUI-64 of its MAC) is one of its own. */
	CU_ASSERT_TRUE(set_is(pl, "g-quarantine-4", ""));
	CU_ASSERT_TRUE(set_is(pl, "g-quarantine-6", ""));
	CU_ASSERT_TRUE(set_is(pl, "g-desktops-4b", "10.10.0.11, 10.10.0.12, 10.10.0.13, 10.10.0.14"));
	CU_ASSERT_TRUE(set_is(pl, "g-desktops-6b",
			      "fd00:10::11, fd00:10::12, fd00:10::13, fd00:10::14, "
			      "fe80::ff:fe10:11, fe80::ff:fe10:12, fe80::ff:fe10:13, fe80::ff:fe10:14"));
	CU_ASSERT_PTR_NULL(plan_find_set(pl, "g-desktops-4"));
	CU_ASSERT_TRUE(set_is(pl, "g-servers-4", "10.10.0.21, 10.10.0.22, 10.10.0.23"));
	CU_ASSERT_TRUE(set_is(pl, "g-connection-servers-6", "fd00:10::21, fe80::ff:fe10:21"));

	/* Text checks that do not depend on the golden file. */
	/* Rule 220 (desktops to infra-servers, six services) is sent
	 * factored: the destination with each service, then the sources in
	 * its leaf chain (dfw/factor.c). */
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "meta nfproto ipv4 meta l4proto icmp "
					    "ip daddr @g-infra-servers-4 jump i-"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "meta nfproto ipv6 meta l4proto ipv6-icmp "
					    "ip6 daddr @g-infra-servers-6 jump o-"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, ".r220 {\n\t\tmeta nfproto ipv4 ip saddr @g-desktops-4b "
					    "ip saddr != @g-quarantine-4 counter name \"r-220-in\" accept"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "log prefix \"dfw rule=110 out \" group 0 counter name \"r-110-out\" drop"));
	free(text);
	plan_free(pl);
	fixture_free(&fx);
}

static void test_vdi_quarantined(void)
{
	struct fixture fx = LOAD("configs/vdi.ini");
	struct plan *pl;
	char *text;

	tag1(&fx, "desktop1", "threat.high");
	pl = COMPILE(&fx, "hv1");
	text = print_plan(pl);
	GOLDEN("tests/golden/vdi-desktop1-quarantined.nft", text);

	/* Quarantine holds desktop1, its link-local address too; desktops'
	 * base does not change. */
	CU_ASSERT_TRUE(set_is(pl, "g-quarantine-4", "10.10.0.11"));
	CU_ASSERT_TRUE(set_is(pl, "g-quarantine-6", "fd00:10::11, fe80::ff:fe10:11"));
	CU_ASSERT_TRUE(set_is(pl, "g-desktops-4b", "10.10.0.11, 10.10.0.12, 10.10.0.13, 10.10.0.14"));
	CU_ASSERT_TRUE(set_is(pl, "g-desktops-6b",
			      "fd00:10::11, fd00:10::12, fd00:10::13, fd00:10::14, "
			      "fe80::ff:fe10:11, fe80::ff:fe10:12, fe80::ff:fe10:13, fe80::ff:fe10:14"));
	CU_ASSERT_EQUAL(pl->nchains, 2);
	/* ...so the kernel finds quarantine's sets first, not desktops' base. */
	CU_ASSERT_TRUE(plan_find_set(pl, "g-quarantine-4")->isolation);
	CU_ASSERT_TRUE(plan_find_set(pl, "g-quarantine-4")->iso_group);
	CU_ASSERT_FALSE(plan_find_set(pl, "g-desktops-4b")->isolation);
	free(text);
	plan_free(pl);
	fixture_free(&fx);
}

/* A tag change edits set elements only: no chain, no port, no set is added
 * or removed.  This is what keeps a quarantine a few element updates: the
 * quarantine set's, and none of the groups that exclude quarantine. */
static void test_vdi_diff_tag(void)
{
	struct fixture fx = LOAD("configs/vdi.ini");
	struct plan *before = COMPILE(&fx, "hv1"), *after, *back;
	struct plan_diff d;
	char buf[64];

	tag1(&fx, "desktop1", "threat.high");
	after = COMPILE(&fx, "hv1");
	plan_diff(before, after, &d);
	CU_ASSERT_FALSE(plan_diff_empty(&d));
	CU_ASSERT_EQUAL(d.nport_del, 0);
	CU_ASSERT_EQUAL(d.nport_add, 0);
	CU_ASSERT_EQUAL(d.nset_del, 0);
	CU_ASSERT_EQUAL(d.nset_add, 0);
	CU_ASSERT_EQUAL(d.nchain_del, 0);
	CU_ASSERT_EQUAL(d.nchain_add, 0);
	/* Its addresses, and its vNIC's id for the isolation rule. */
	CU_ASSERT_EQUAL_FATAL(d.nelem_add, 4);
	CU_ASSERT_EQUAL_FATAL(d.nelem_del, 0);
	CU_ASSERT_STRING_EQUAL(d.elem_add[0].set->name, "g-quarantine-4");
	addr_format(&d.elem_add[0].addr, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "10.10.0.11");
	CU_ASSERT_STRING_EQUAL(d.elem_add[1].set->name, "g-quarantine-6");
	addr_format(&d.elem_add[1].addr, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "fd00:10::11");
	CU_ASSERT_STRING_EQUAL(d.elem_add[2].set->name, "g-quarantine-6");
	addr_format(&d.elem_add[2].addr, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "fe80::ff:fe10:11");
	CU_ASSERT_STRING_EQUAL(d.elem_add[3].set->name, "isolated");
	/* Adds point into `to`. */
	CU_ASSERT_PTR_EQUAL(d.elem_add[0].set, plan_find_set(after, "g-quarantine-4"));
	plan_diff_free(&d);
	CU_ASSERT_EQUAL(d.nelem_add, 0);
	CU_ASSERT_PTR_NULL(d.elem_add);

	/* Untagging restores exactly the first plan. */
	set_tags(&fx, "desktop1", NULL, 0);
	back = COMPILE(&fx, "hv1");
	plan_diff(before, back, &d);
	CU_ASSERT_TRUE(plan_diff_empty(&d));
	plan_diff_free(&d);
	plan_diff(after, back, &d);
	CU_ASSERT_EQUAL(d.nelem_add, 0);
	CU_ASSERT_EQUAL(d.nelem_del, 4);
	CU_ASSERT_PTR_EQUAL(d.elem_del[0].set, plan_find_set(after, "g-quarantine-4"));
	CU_ASSERT_EQUAL(d.nchain_add + d.nchain_del + d.nport_add + d.nport_del +
			d.nset_add + d.nset_del, 0);
	plan_diff_free(&d);
	plan_free(before);
	plan_free(after);
	plan_free(back);
	fixture_free(&fx);
}

static void test_diff_identity_and_full(void)
{
	struct fixture fx = LOAD("configs/vdi.ini");
	struct plan *pl = COMPILE(&fx, "hv1"), *none = COMPILE(&fx, "hv9");
	struct plan_diff d;

	plan_diff(pl, pl, &d);
	CU_ASSERT_TRUE(plan_diff_empty(&d));
	plan_diff_free(&d);

	/* From nothing: everything is added, nothing else. */
	plan_diff(NULL, pl, &d);
	CU_ASSERT_FALSE(plan_diff_empty(&d));
	CU_ASSERT_EQUAL(d.nport_add, 7);
	CU_ASSERT_EQUAL(d.nset_add, 15);
	CU_ASSERT_EQUAL(d.nchain_add, 2);
	CU_ASSERT_EQUAL(d.nport_del + d.nset_del + d.nchain_del + d.nelem_add + d.nelem_del, 0);
	for (size_t i = 0; i < d.nport_add; i++)
		CU_ASSERT_PTR_EQUAL(d.port_add[i], &pl->ports[i]);
	plan_diff_free(&d);

	/* A host without VMs has an empty plan but the (empty) set of
	 * isolated vNICs, which enforce names; going there removes the rest. */
	CU_ASSERT_EQUAL(none->nports + none->nchains, 0);
	CU_ASSERT_EQUAL_FATAL(none->nsets, 1);
	CU_ASSERT_STRING_EQUAL(none->sets[0].name, "isolated");
	plan_diff(pl, none, &d);
	CU_ASSERT_EQUAL(d.nport_del, 7);
	CU_ASSERT_EQUAL(d.nset_del, 14);
	CU_ASSERT_EQUAL(d.nchain_del, 2);
	CU_ASSERT_EQUAL(d.nport_add + d.nset_add + d.nchain_add + d.nelem_add + d.nelem_del, 0);
	plan_diff_free(&d);
	plan_diff(NULL, none, &d);
	CU_ASSERT_EQUAL(d.nset_add, 1);
	plan_diff_free(&d);
	plan_diff_free(NULL);
	plan_free(NULL);
	plan_free(pl);
	plan_free(none);
	fixture_free(&fx);
}

/* Chain names come from content alone: two independent compiles agree, and
 * so does the whole printed plan. */
static void test_names_stable(void)
{
	struct fixture a = LOAD("configs/vdi.ini"), b = LOAD("configs/vdi.ini");
	struct plan *pa, *pb;
	char *ta, *tb;

	/* Tag b's engine and untag it, so that its internal state differs. */
	tag1(&b, "desktop3", "threat.low");
	set_tags(&b, "desktop3", NULL, 0);
	pa = COMPILE(&a, "hv1");
	pb = COMPILE(&b, "hv1");
	CU_ASSERT_EQUAL_FATAL(pa->nchains, pb->nchains);
	for (size_t i = 0; i < pa->nchains; i++)
		CU_ASSERT_STRING_EQUAL(pa->chains[i].name, pb->chains[i].name);
	ta = print_plan(pa);
	tb = print_plan(pb);
	CU_ASSERT_STRING_EQUAL(ta, tb);
	free(ta);
	free(tb);
	plan_free(pa);
	plan_free(pb);
	fixture_free(&a);
	fixture_free(&b);
}

/* ---- applied_to, literals, reject, log, disabled, direction ------------------ */

static void test_applied(void)
{
	struct fixture fx = LOAD("tests/configs/applied.ini");
	struct plan *pl = COMPILE(&fx, "hv1");
	const struct pport *web1, *web2, *db1, *db2;
	const struct pchain *c;
	char *text = print_plan(pl);

	GOLDEN("tests/golden/applied.nft", text);

	CU_ASSERT_EQUAL_FATAL(pl->nports, 4); /* admin runs on hv2 */
	CU_ASSERT_PTR_NULL(plan_find_port(pl, "vnet-admin"));
	web1 = plan_find_port(pl, "vnet-web1");
	web2 = plan_find_port(pl, "vnet-web2");
	db1 = plan_find_port(pl, "vnet-db1");
	db2 = plan_find_port(pl, "vnet-db2");
	CU_ASSERT_FATAL(web1 && web2 && db1 && db2);
	/* Rules applied to groups sit in the host's one out chain and one in
	 * chain behind their groups' vNIC-id sets, so every vNIC shares them. */
	CU_ASSERT_EQUAL(pl->nchains, 2);
	CU_ASSERT_STRING_EQUAL(web1->out_chain, web2->out_chain);
	CU_ASSERT_STRING_EQUAL(web1->in_chain, web2->in_chain);
	CU_ASSERT_STRING_EQUAL(db1->out_chain, db2->out_chain);
	CU_ASSERT_STRING_EQUAL(db1->in_chain, db2->in_chain);
	CU_ASSERT_STRING_EQUAL(web1->out_chain, db1->out_chain);
	CU_ASSERT_STRING_EQUAL(web1->in_chain, db1->in_chain);
	{
		const struct pset *ids = plan_find_set(pl, "p-web-i");
		uint32_t a = 0, b = 0;

		CU_ASSERT_FATAL(ids && ids->family == 0 && ids->dst && ids->nelems == 2);
		memcpy(&a, ids->elems[0].a, 4);
		memcpy(&b, ids->elems[1].a, 4);
		/* web1 and web2 only: db vNICs are not members. */
		CU_ASSERT_TRUE((a == web1->id && b == web2->id) || (a == web2->id && b == web1->id));
	}

	/* In: 10 and 25 (everywhere), 20 (web, guarded), 21 and 50 (db,
	 * guarded), in evaluation order. */
	c = plan_find_chain(pl, web1->in_chain);
	CU_ASSERT_FATAL(c && c->nrule_ids == 5);
	CU_ASSERT_EQUAL(c->rule_ids[0], 10);
	CU_ASSERT_EQUAL(c->rule_ids[1], 20);
	CU_ASSERT_EQUAL(c->rule_ids[2], 21);
	CU_ASSERT_EQUAL(c->rule_ids[3], 25);
	CU_ASSERT_EQUAL(c->rule_ids[4], 50);
	/* Rule 10: tcp/22 from the literal set, once per family. */
	CU_ASSERT_EQUAL(count_rules(c, 10), 2);
	CU_ASSERT_EQUAL(count_rules(c, 20), 2); /* one service set x 2 families */
	CU_ASSERT_EQUAL(count_rules(c, 25), 2); /* icmp in v4, icmpv6 in v6 */
	CU_ASSERT_EQUAL(c->refs, 4);
	/* Out: 22 (web, guarded), 30 and 31 (everywhere, out); 40 is disabled. */
	c = plan_find_chain(pl, web1->out_chain);
	CU_ASSERT_FATAL(c && c->nrule_ids == 3);
	CU_ASSERT_EQUAL(c->rule_ids[0], 22);
	CU_ASSERT_EQUAL(c->rule_ids[1], 30);
	CU_ASSERT_EQUAL(c->rule_ids[2], 31);
	CU_ASSERT_FALSE(chain_has_rule(c, 40));
	/* Rule 30: reject any protocol = TCP reset, then ICMPX, per family. */
	CU_ASSERT_EQUAL(count_rules(c, 30), 4);
	CU_ASSERT_EQUAL(verdict_of(c, 30, 0), PV_REJECT_TCP);
	CU_ASSERT_EQUAL(verdict_of(c, 30, 1), PV_REJECT_ICMPX);
	CU_ASSERT_EQUAL(verdict_of(c, 30, 2), PV_REJECT_TCP);
	CU_ASSERT_EQUAL(verdict_of(c, 30, 3), PV_REJECT_ICMPX);
	/* Rule 31: tcp/25 gets a reset, udp/514 an ICMPX. */
	CU_ASSERT_EQUAL(count_rules(c, 31), 2);
	CU_ASSERT_EQUAL(verdict_of(c, 31, 0), PV_REJECT_TCP);
	CU_ASSERT_EQUAL(verdict_of(c, 31, 1), PV_REJECT_ICMPX);
	/* The reject default with logging: two variants. */
	CU_ASSERT_EQUAL(count_rules(c, 0), 2);
	CU_ASSERT_EQUAL(verdict_of(c, 0, 0), PV_REJECT_TCP);
	CU_ASSERT_EQUAL(verdict_of(c, 0, 1), PV_REJECT_ICMPX);
	/* Rule 50 (in, db, guarded by the db ids) drops. */
	c = plan_find_chain(pl, db1->in_chain);
	CU_ASSERT_FATAL(c != NULL);
	CU_ASSERT_EQUAL(verdict_of(c, 50, 0), PV_DROP);
	/* Rule 10: unguarded; the port first, then family and protocol. */
	CU_ASSERT_EQUAL(c->rules[0].items[0].kind, PI_DPORT);
	CU_ASSERT_EQUAL(c->rules[0].items[1].kind, PI_NFPROTO);
	CU_ASSERT_EQUAL(c->rules[0].items[2].kind, PI_L4PROTO);
	CU_ASSERT_EQUAL(count_rules(c, 50), 2);
	c = plan_find_chain(pl, db1->out_chain);
	CU_ASSERT_FATAL(c && c->nrule_ids == 3);
	CU_ASSERT_EQUAL(c->rule_ids[0], 22);
	CU_ASSERT_EQUAL(c->rule_ids[1], 30);
	CU_ASSERT_EQUAL(c->rule_ids[2], 31);
	/* Guarded rules test the vNIC id (source id in out chains) after
	 * protocol and port, before the address sets. */
	{
		const struct prule *r0 = &c->rules[0];
		size_t k = 0;

		while (k < r0->nitems && r0->items[k].kind != PI_PORT_SET)
			k++;
		CU_ASSERT_FATAL(k < r0->nitems);
		CU_ASSERT_STRING_EQUAL(r0->items[k].name, "p-web-o");
		for (size_t j = k + 1; j < r0->nitems; j++)
			CU_ASSERT(r0->items[j].kind != PI_L4PROTO && r0->items[j].kind != PI_DPORT &&
				  r0->items[j].kind != PI_DPORT_SET);
	}
	for (size_t i = 0; i < pl->nchains; i++)
		CU_ASSERT_FALSE(chain_has_rule(&pl->chains[i], 40));

	/* Literal sets: vm:admin plus CIDRs, normalized, named by content; a
	 * single literal is a compare, not a set. */
	/* web, db x 2; one literal pair; web ids both ways; db ids for its
	 * inbound rules only. */
	CU_ASSERT_EQUAL(pl->nsets, 11); /* one service set (80, 443, 8000-8999); isolated */
	CU_ASSERT_PTR_NOT_NULL(plan_find_set(pl, "p-db-i"));
	CU_ASSERT_PTR_NULL(plan_find_set(pl, "p-db-o"));
	{
		size_t lit = 0;

		for (size_t i = 0; i < pl->nsets; i++) {
			const char *n = pl->sets[i].name;

			if (strncmp(n, "a-", 2))
				continue;
			lit++;
			CU_ASSERT_EQUAL(strlen(n), 16); /* a-<12 hex>-4 */
			CU_ASSERT_EQUAL(n[15], pl->sets[i].family == AF_INET ? '4' : '6');
		}
		CU_ASSERT_EQUAL(lit, 2);
	}
	CU_ASSERT_TRUE(set_is(pl, "g-web-4", "10.20.0.1, 10.20.0.2"));
	/* db1 has no IPv6 address but its link-local one (and so has a VM
	 * named as a literal: admin, on another host). */
	CU_ASSERT_TRUE(set_is(pl, "g-db-6", "fd00:20::12, fe80::ff:fe20:11, fe80::ff:fe20:12"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "elements = { 10.20.1.1, 192.0.2.0/24 }"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "elements = { 2001:db8::/32, fd00:21::1, "
					    "fe80::ff:fe20:21 }"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "meta nfproto ipv4 ip daddr 198.51.100.7 log "));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "meta nfproto ipv6 ip6 daddr 2001:db8:ffff::7 log "));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "elements = { 80, 443, 8000-8999 }"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "log prefix \"dfw rule=30 out \" group 0 counter name "
					    "\"r-30-out\" reject with tcp reset"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "log prefix \"dfw rule=default in \" group 0 counter name "
					    "\"r-default-in\" reject with icmpx type admin-prohibited"));
	free(text);
	plan_free(pl);
	fixture_free(&fx);
}

/* Moving a VM between applied-to groups re-points its dispatch entries: the
 * port changes, its out chain becomes the one the web tier already uses,
 * its in chain is new; no other chain is touched. */
struct delta_rec {
	size_t group[16], vm[16];
	bool joined[16];
	size_t n;
};

static void rec_delta(void *arg, size_t group, size_t vm, bool joined, bool base)
{
	struct delta_rec *r = arg;

	if (base)
		return;
	if (r->n < 16) {
		r->group[r->n] = group;
		r->vm[r->n] = vm;
		r->joined[r->n++] = joined;
	}
}

static bool has_elem(const struct plan_diff *d, bool add, const char *set, const char *addr)
{
	const struct pelem_change *c = add ? d->elem_add : d->elem_del;
	size_t n = add ? d->nelem_add : d->nelem_del;
	char buf[64];

	for (size_t i = 0; i < n; i++) {
		uint32_t id;

		if (c[i].set->family) {
			addr_format(&c[i].addr, buf, sizeof(buf));
		} else {
			memcpy(&id, c[i].addr.a, 4);
			snprintf(buf, sizeof(buf), "id %u", id);
		}
		if (!strcmp(c[i].set->name, set) && !strcmp(buf, addr))
			return true;
	}
	return false;
}

/* A tag that moves a VM into an applied_to group changes set elements only:
 * the group's addresses and its local vNIC id sets (the rules applied to a
 * tag-driven group are guarded by those ids).  The incremental path
 * (plan_member_delta) finds exactly what a full compile and diff finds. */
static void test_applied_diff(void)
{
	struct fixture fx = LOAD("tests/configs/applied.ini");
	struct plan *before = COMPILE(&fx, "hv1"), *after;
	struct delta_rec rec = { 0 };
	const char *tag = "role.web";
	long db1 = policy_find_vm(fx.p, "db1");
	struct plan_diff d, inc;
	char *text;

	CU_ASSERT_FATAL(db1 >= 0);
	gengine_set_tags(fx.e, (size_t)db1, &tag, 1, rec_delta, &rec);
	after = COMPILE(&fx, "hv1");
	text = print_plan(after);
	GOLDEN("tests/golden/applied-db1-web.nft", text);
	free(text);

	plan_diff(before, after, &d);
	CU_ASSERT_EQUAL(d.nport_del + d.nport_add, 0);
	CU_ASSERT_EQUAL(d.nchain_del + d.nchain_add, 0);
	CU_ASSERT_EQUAL(d.nset_add + d.nset_del, 0);
	CU_ASSERT_EQUAL(d.nelem_del, 0);
	/* db1 (IPv4 only, vNIC id 3) joins the web sets, the IPv6 one with
	 * its link-local address, and both id sets. */
	CU_ASSERT_EQUAL_FATAL(d.nelem_add, 4);
	CU_ASSERT_TRUE(has_elem(&d, true, "g-web-4", "10.20.0.11"));
	CU_ASSERT_TRUE(has_elem(&d, true, "g-web-6", "fe80::ff:fe20:11"));
	CU_ASSERT_TRUE(has_elem(&d, true, "p-web-i", "id 3"));
	CU_ASSERT_TRUE(has_elem(&d, true, "p-web-o", "id 3"));

	memset(&inc, 0, sizeof(inc));
	CU_ASSERT_EQUAL_FATAL(rec.n, 1);
	for (size_t i = 0; i < rec.n; i++)
		plan_member_delta(before, fx.e, fx.p, rec.group[i], rec.vm[i], &inc);
	CU_ASSERT_EQUAL_FATAL(inc.nelem_add, 4);
	CU_ASSERT_EQUAL(inc.nelem_del, 0);
	CU_ASSERT_TRUE(has_elem(&inc, true, "g-web-4", "10.20.0.11"));
	CU_ASSERT_TRUE(has_elem(&inc, true, "g-web-6", "fe80::ff:fe20:11"));
	CU_ASSERT_TRUE(has_elem(&inc, true, "p-web-i", "id 3"));
	CU_ASSERT_TRUE(has_elem(&inc, true, "p-web-o", "id 3"));
	/* Applied to the installed plan, it becomes the freshly compiled one. */
	plan_apply_elems(before, &inc);
	plan_diff_free(&d);
	plan_diff(before, after, &d);
	CU_ASSERT_TRUE(plan_diff_empty(&d));
	plan_diff_free(&d);
	plan_diff_free(&inc);

	/* And back. */
	rec.n = 0;
	gengine_set_tags(fx.e, (size_t)db1, NULL, 0, rec_delta, &rec);
	memset(&inc, 0, sizeof(inc));
	for (size_t i = 0; i < rec.n; i++)
		plan_member_delta(before, fx.e, fx.p, rec.group[i], rec.vm[i], &inc);
	CU_ASSERT_EQUAL(inc.nelem_del, 4);
	CU_ASSERT_EQUAL(inc.nelem_add, 0);
	plan_diff_free(&inc);
	plan_free(before);
	plan_free(after);
	fixture_free(&fx);
}

/* Kernel set sizes (pset.size): room for the hash sets no tag edits, none
 * for tag-driven and interval sets; a kept set keeps its kernel size, and
 * a diff or a tag change that would overfill one is found. */
static void test_set_sizes(void)
{
	struct fixture fx = LOAD("tests/configs/applied.ini");
	struct plan *before = COMPILE(&fx, "hv1"), *after = COMPILE(&fx, "hv1");
	struct pset *db4 = (struct pset *)plan_find_set(before, "g-db-4");
	struct pset *web4 = (struct pset *)plan_find_set(before, "g-web-4");
	struct delta_rec rec = { 0 };
	const char *tag = "role.web";
	long db1 = policy_find_vm(fx.p, "db1");
	struct plan_diff inc;

	CU_ASSERT_FATAL(db4 && web4 && db1 >= 0);
	CU_ASSERT_EQUAL(db4->nelems, 2);
	CU_ASSERT_EQUAL(db4->size, 2 + 64);   /* static: twice, at least 64 more */
	CU_ASSERT_EQUAL(web4->size, 0);       /* a tag can move db1 into web */
	for (size_t i = 0; i < before->nsets; i++)
		if (before->sets[i].interval)
			CU_ASSERT_EQUAL(before->sets[i].size, 0);
	CU_ASSERT_PTR_NULL(plan_keep_sizes(before, after));

	/* A kernel set made smaller (when db had fewer members), which the
	 * new plan overfills: the new plan keeps its own sizes, for the full
	 * load that makes its sets anew. */
	db4->size = 1;
	CU_ASSERT_PTR_EQUAL(plan_keep_sizes(before, after), plan_find_set(after, "g-db-4"));
	CU_ASSERT_EQUAL(plan_find_set(after, "g-db-4")->size, 2 + 64);
	/* Room enough: kept with the kernel's size. */
	db4->size = 2;
	CU_ASSERT_PTR_NULL(plan_keep_sizes(before, after));
	CU_ASSERT_EQUAL(plan_find_set(after, "g-db-4")->size, 2);

	/* db1 tagged role.web joins web's sets. */
	gengine_set_tags(fx.e, (size_t)db1, &tag, 1, rec_delta, &rec);
	memset(&inc, 0, sizeof(inc));
	for (size_t i = 0; i < rec.n; i++)
		plan_member_delta(before, fx.e, fx.p, rec.group[i], rec.vm[i], &inc);
	CU_ASSERT_PTR_NULL(plan_delta_overflow(&inc));
	web4->size = (uint32_t)web4->nelems; /* a kernel set already full */
	CU_ASSERT_PTR_EQUAL(plan_delta_overflow(&inc), web4);
	web4->size = (uint32_t)web4->nelems + 1;
	CU_ASSERT_PTR_NULL(plan_delta_overflow(&inc));
	plan_diff_free(&inc);
	plan_free(before);
	plan_free(after);
	fixture_free(&fx);
}

/* Every (group, VM) pair a tag change touched, bases included, once (as
 * the agent counts them). */
static void rec_pair(void *arg, size_t group, size_t vm, bool joined, bool base)
{
	struct delta_rec *r = arg;

	for (size_t i = 0; i < r->n; i++)
		if (r->group[i] == group && r->vm[i] == vm)
			return;
	if (r->n < 16) {
		r->group[r->n] = group;
		r->vm[r->n++] = vm;
	}
}

/* One tag change through the incremental path: the recorded pairs'
 * element changes, applied to the installed plan, give exactly a fresh
 * compile.  Returns the number of element changes. */
static size_t incremental_step(struct fixture *fx, struct plan *installed, const char *vm,
			       const char *const *tags, size_t n, const char *set_changed)
{
	struct delta_rec rec = { 0 };
	struct plan_diff inc, d;
	struct plan *fresh;
	size_t changes;
	long v = policy_find_vm(fx->p, vm);
	bool seen = !set_changed;

	CU_ASSERT_FATAL(v >= 0);
	gengine_set_tags(fx->e, (size_t)v, tags, n, rec_pair, &rec);
	memset(&inc, 0, sizeof(inc));
	for (size_t i = 0; i < rec.n; i++)
		plan_member_delta(installed, fx->e, fx->p, rec.group[i], rec.vm[i], &inc);
	changes = inc.nelem_add + inc.nelem_del;
	for (size_t i = 0; set_changed && i < inc.nelem_add; i++)
		seen |= !strcmp(inc.elem_add[i].set->name, set_changed);
	for (size_t i = 0; set_changed && i < inc.nelem_del; i++)
		seen |= !strcmp(inc.elem_del[i].set->name, set_changed);
	CU_ASSERT_TRUE(seen);
	plan_apply_elems(installed, &inc);
	fresh = COMPILE(fx, "hv1");
	plan_diff(installed, fresh, &d);
	CU_ASSERT_TRUE(plan_diff_empty(&d));
	plan_diff_free(&d);
	plan_diff_free(&inc);
	plan_free(fresh);
	return changes;
}

/* A group that excludes quarantine is its base's set and a negated lookup
 * of quarantine's: entering quarantine edits quarantine's set only, and the
 * base follows the group's own criteria.  A negated side ("not web") and a
 * group that includes web still use web's members.  At each step the
 * incremental path gives exactly a fresh compile. */
static void test_base_sets(void)
{
	struct fixture fx = PARSE(
		"[tags]\nnames = threat.high, role.web\n"
		"[vm a]\nhost = hv1\nport = vnet-a\nmac = 02:00:00:40:00:01\n"
		"addresses = 10.40.0.1, fd00:40::1\n"
		"[vm b]\nhost = hv1\nport = vnet-b\nmac = 02:00:00:40:00:02\n"
		"addresses = 10.40.0.2\n"
		"[group quarantine]\nmatch = tag equals threat.high\nquarantine = yes\n"
		"[group web]\nmatch = tag equals role.web\nexclude_groups = quarantine\n"
		"[group front]\ninclude = web\n"
		"[rule 1]\nsources = web\ndestinations = any\nservices = tcp/80\naction = allow\n"
		"[rule 2]\nsources = not web\ndestinations = b\nservices = tcp/22\naction = drop\n"
		"[rule 3]\nsources = front\ndestinations = b\nservices = tcp/443\naction = allow\n"
		"[rule 4]\nsources = any\ndestinations = any\nservices = tcp/8080\n"
		"applied_to = web\naction = drop\n"
		"[group edge]\ninclude = web\nexclude_groups = quarantine\n"
		"[rule 5]\nsources = edge\ndestinations = b\nservices = tcp/9000\naction = allow\n");
	struct plan *pl = COMPILE(&fx, "hv1");
	const char *web[] = { "role.web" }, *both[] = { "role.web", "threat.high" };
	const char *threat[] = { "threat.high" };
	char *text = print_plan(pl);

	CU_ASSERT_TRUE(set_is(pl, "g-web-4b", ""));
	CU_ASSERT_TRUE(set_is(pl, "g-web-4", "")); /* for "not web" */
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "ip saddr @g-web-4b ip saddr != @g-quarantine-4 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "ip saddr != @g-web-4 "));
	/* Applied to web: the base's vNIC ids, not quarantine's. */
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "meta mark @p-web-ob meta mark != @p-quarantine-o "));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "meta priority @p-web-ib meta priority != @p-quarantine-i "));
	CU_ASSERT_PTR_NULL(plan_find_set(pl, "p-web-o"));
	free(text);

	/* a becomes web: base and members.  g-web-4b 6b 4 6, g-front-4 6,
	 * p-web-ob ib, g-edge-4b 6b, the IPv6 ones with a's link-local
	 * address as well. */
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "a", web, 1, "g-edge-4b"), 14);
	CU_ASSERT_TRUE(set_is(pl, "g-web-4b", "10.40.0.1"));
	CU_ASSERT_TRUE(set_is(pl, "g-web-4", "10.40.0.1"));
	CU_ASSERT_TRUE(set_is(pl, "g-front-4", "10.40.0.1"));
	/* a is quarantined: quarantine gains it, web and front lose it, the
	 * bases keep it: g-quarantine-4 6, p-quarantine-o i; g-web-4 6,
	 * g-front-4 6.  Edge includes web but excludes quarantine itself, so
	 * its base holds web's base: unchanged. */
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "a", both, 2, "p-quarantine-o"), 12);
	CU_ASSERT_TRUE(set_is(pl, "g-edge-4b", "10.40.0.1"));
	CU_ASSERT_TRUE(set_is(pl, "g-web-4b", "10.40.0.1"));
	CU_ASSERT_TRUE(set_is(pl, "g-web-6b", "fd00:40::1, fe80::ff:fe40:1"));
	CU_ASSERT_TRUE(set_is(pl, "g-quarantine-6", "fd00:40::1, fe80::ff:fe40:1"));
	CU_ASSERT_TRUE(set_is(pl, "g-web-4", ""));
	CU_ASSERT_TRUE(set_is(pl, "g-front-4", ""));
	/* role.web goes while quarantined: only the bases change. */
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "a", threat, 1, "p-web-ib"), 8);
	CU_ASSERT_TRUE(set_is(pl, "g-edge-4b", ""));
	CU_ASSERT_TRUE(set_is(pl, "g-web-4b", ""));
	incremental_step(&fx, pl, "a", NULL, 0, "g-quarantine-4");
	CU_ASSERT_TRUE(set_is(pl, "g-quarantine-4", ""));
	plan_free(pl);
	fixture_free(&fx);
}

/* Creation order among the sets a quarantine edits: the isolation
 * group's own (every quarantine edits them), then the bigger groups', whose
 * VMs are quarantined more often; the kernel finds a set by walking them
 * in that order. */
static void test_quarantine_set_order(void)
{
	struct fixture fx = PARSE(
		"[tags]\nnames = threat.high, role.web, role.db\n"
		"[vm a]\nhost = hv1\nport = vnet-a\nmac = 02:00:00:41:00:01\naddresses = 10.41.0.1\n"
		"[vm b]\nhost = hv1\nport = vnet-b\nmac = 02:00:00:41:00:02\naddresses = 10.41.0.2\n"
		"[vm c]\nhost = hv1\nport = vnet-c\nmac = 02:00:00:41:00:03\naddresses = 10.41.0.3\n"
		"[group quarantine]\nmatch = tag equals threat.high\nquarantine = yes\n"
		"[group small]\nmatch = tag equals role.db\nexclude_groups = quarantine\n"
		"[group big]\nmatch = tag equals role.web\nexclude_groups = quarantine\n"
		"[rule 1]\nsources = not small\ndestinations = any\nservices = tcp/80\naction = allow\n"
		"[rule 2]\nsources = not big\ndestinations = any\nservices = tcp/81\naction = allow\n"
		"[rule 3]\nsources = quarantine\ndestinations = any\naction = drop\n");
	const char *web[] = { "role.web" }, *both[] = { "role.web", "role.db" };
	struct plan *pl;
	size_t *order, pos[4] = { 0 };
	static const char *const names[] = { "g-quarantine-4", "g-big-4", "g-small-4",
					     "g-quarantine-6" };

	set_tags(&fx, "a", both, 2);
	set_tags(&fx, "b", web, 1);
	set_tags(&fx, "c", web, 1);
	pl = COMPILE(&fx, "hv1");
	CU_ASSERT_TRUE(set_is(pl, "g-big-4", "10.41.0.1, 10.41.0.2, 10.41.0.3"));
	CU_ASSERT_TRUE(set_is(pl, "g-small-4", "10.41.0.1"));
	order = calloc(pl->nsets, sizeof(*order));
	plan_set_order(pl, order);
	for (size_t i = 0; i < pl->nsets; i++)
		for (size_t k = 0; k < ARRAY_SIZE(names); k++)
			if (!strcmp(pl->sets[order[i]].name, names[k]))
				pos[k] = i + 1;
	CU_ASSERT_TRUE(pos[0] && pos[1] && pos[2] && pos[3]);
	CU_ASSERT_TRUE(pos[0] < pos[1] && pos[3] < pos[1]); /* quarantine's own first */
	CU_ASSERT_TRUE(pos[1] < pos[2]);                    /* then the bigger group's */
	CU_ASSERT_TRUE(plan_find_set(pl, "g-big-4")->isolation);
	CU_ASSERT_FALSE(plan_find_set(pl, "g-big-4")->iso_group);
	free(order);
	plan_free(pl);
	fixture_free(&fx);
}

static void test_minimal(void)
{
	struct fixture fx = LOAD("tests/configs/minimal.ini");
	struct plan *pl = COMPILE(&fx, "hv1");
	const struct pchain *out, *in;
	char *text = print_plan(pl);

	GOLDEN("tests/golden/minimal.nft", text);
	CU_ASSERT_EQUAL_FATAL(pl->nports, 1);
	/* VM members in hash sets (constant-time updates); IP/CIDR members in
	 * an interval set of their own, normalized: 10.30.0.0/24 lies inside
	 * 10.30.0.0/16. */
	CU_ASSERT_EQUAL(pl->nsets, 4); /* and isolated */
	CU_ASSERT_TRUE(set_is(pl, "g-lan-4", "10.30.0.5, 10.30.1.1"));
	/* other has no IPv6 address but its link-local one. */
	CU_ASSERT_TRUE(set_is(pl, "g-lan-6", "fd00:30::5, fe80::ff:fe30:1, fe80::ff:fe30:2"));
	CU_ASSERT_TRUE(set_is(pl, "g-lan-4n", "10.30.0.0/16, 192.0.2.1"));
	CU_ASSERT_FALSE(plan_find_set(pl, "g-lan-4")->interval);
	CU_ASSERT_TRUE(plan_find_set(pl, "g-lan-4n")->interval);
	CU_ASSERT_PTR_NULL(plan_find_set(pl, "g-lan-6n"));
	out = plan_find_chain(pl, pl->ports[0].out_chain);
	in = plan_find_chain(pl, pl->ports[0].in_chain);
	CU_ASSERT_FATAL(out && in);
	/* Rule 1 once per source set (g-lan-4, g-lan-4n, g-lan-6), default. */
	CU_ASSERT_EQUAL(out->nrules, 4);
	CU_ASSERT_EQUAL(verdict_of(out, 1, 0), PV_DROP);
	CU_ASSERT_EQUAL(verdict_of(out, 0, 0), PV_RETURN); /* default allow, out */
	CU_ASSERT_EQUAL(in->nrules, 1); /* only the default */
	CU_ASSERT_EQUAL(in->nrule_ids, 0);
	CU_ASSERT_EQUAL(verdict_of(in, 0, 0), PV_ACCEPT);
	free(text);
	plan_free(pl);
	fixture_free(&fx);
}

/* Uplinks (dfwd --uplink) share one id in both port maps and have no
 * dispatch, MAC or address elements; the golden file goes through nft -c
 * in the kernel tests. */
static void test_uplinks(void)
{
	struct fixture fx = LOAD("tests/configs/minimal.ini");
	struct plan *pl = COMPILE(&fx, "hv1");
	struct plan *bare = COMPILE(&fx, "hv1");
	struct plan_diff d;
	char *text;

	snprintf(pl->uplinks[0], sizeof(pl->uplinks[0]), "dfw-uplink");
	snprintf(pl->uplinks[1], sizeof(pl->uplinks[1]), "bond0");
	pl->nuplinks = 2;
	text = print_plan(pl);
	GOLDEN("tests/golden/minimal-uplinks.nft", text);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"dfw-uplink\" : 0xfffffffe"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"bond0\" : ffff:fffe"));
	CU_ASSERT_PTR_NULL(strstr(text, "\"bond0\" . "));
	/* Fixed for a dfwd's lifetime: never part of a diff. */
	plan_diff(bare, pl, &d);
	CU_ASSERT_TRUE(plan_diff_empty(&d));
	plan_diff_free(&d);
	free(text);
	plan_free(pl);
	plan_free(bare);
	fixture_free(&fx);
}

/* Literal sets are named by content: the same addresses in another order,
 * or through a VM rather than its address, give the same set. */
static void test_literal_sets_shared(void)
{
	struct fixture fx = PARSE(
		"[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n"
		"[rule 1]\nsources = 10.0.0.9, vm:a\ndirection = in\naction = allow\n"
		"[rule 2]\nsources = 10.0.0.1, 10.0.0.9, 10.0.0.0/30\ndirection = in\naction = drop\n"
		"[rule 3]\nsources = 10.0.0.9, 10.0.0.1\ndirection = in\naction = drop\n");
	struct plan *pl = COMPILE(&fx, "h");
	const struct pchain *in;

	/* Rules 1 and 3 share {10.0.0.1, 10.0.0.9}; rule 2's set is
	 * {10.0.0.0/30, 10.0.0.9} after normalization.  Rule 1 also has a's
	 * link-local address, a compare in a rule of its own. */
	CU_ASSERT_EQUAL_FATAL(pl->nsets, 3); /* and isolated, sorted last */
	in = plan_find_chain(pl, pl->ports[0].in_chain);
	CU_ASSERT_PTR_NOT_NULL_FATAL(in);
	CU_ASSERT_EQUAL_FATAL(in->nrules, 5);
	CU_ASSERT_EQUAL(in->rules[1].items[1].kind, PI_SADDR_NET);
	CU_ASSERT_STRING_EQUAL(in->rules[1].items[1].name, "fe80::ff:fe00:1");
	CU_ASSERT_STRING_EQUAL(in->rules[0].items[1].name, in->rules[3].items[1].name);
	CU_ASSERT_STRING_NOT_EQUAL(in->rules[0].items[1].name, in->rules[2].items[1].name);
	CU_ASSERT_TRUE(set_is(pl, in->rules[2].items[1].name, "10.0.0.0/30, 10.0.0.9"));
	CU_ASSERT_TRUE(set_is(pl, in->rules[0].items[1].name, "10.0.0.1, 10.0.0.9"));
	plan_free(pl);
	fixture_free(&fx);
}

/* Several ports of one protocol become one service set, with ranges that
 * overlap or touch merged (the kernel refuses overlapping intervals), shared
 * by every rule with the same ports. */
static void test_service_sets(void)
{
	struct fixture fx = PARSE(
		"[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n"
		"[rule 1]\ndestinations = 10.9.0.0/16\nservices = tcp/80, tcp/70-90, tcp/91, udp/53\n"
		"direction = out\naction = allow\n"
		"[rule 2]\ndestinations = 10.8.0.0/16\nservices = tcp/91, tcp/70-79, tcp/80-90\n"
		"direction = out\naction = drop\n");
	struct plan *pl = COMPILE(&fx, "h");
	const struct pchain *out;
	size_t services = 0;

	for (size_t i = 0; i < pl->nsets; i++) {
		if (!pl->sets[i].service)
			continue;
		services++;
		CU_ASSERT_EQUAL(pl->sets[i].nelems, 1); /* 70-91 */
		CU_ASSERT_EQUAL(pl->sets[i].elems[0].a[1], 70);
		CU_ASSERT_EQUAL(pl->sets[i].elems[0].a[3], 91);
	}
	CU_ASSERT_EQUAL(services, 1); /* both rules share it */
	out = plan_find_chain(pl, pl->ports[0].out_chain);
	CU_ASSERT_FATAL(out != NULL);
	/* rule 1: tcp (set) and udp/53 alone; rule 2: tcp (set); IPv4 only */
	CU_ASSERT_EQUAL(count_rules(out, 1), 2);
	CU_ASSERT_EQUAL(count_rules(out, 2), 1);
	plan_free(pl);
	fixture_free(&fx);
}

/* Dispatch by port (dfw/dispatch.c) on random policies: rules on a few
 * ports, ranges that overlap them, several services per rule (service
 * sets), tcp and udp on one port, with rules of no port (any, icmp, all of
 * tcp) between them.  plan_ok's dispatch_ok checks each plan's maps and
 * atoms against the rules; every policy here has runs long enough to be
 * dispatched, and a chain of fewer port rules than DISP_MIN_RULES has none. */
static unsigned lcg(unsigned *x)
{
	*x = *x * 1103515245u + 12345u;
	return (*x >> 16) & 0x7fff;
}

/* A random policy's text, written to f from the seed's numbers (lcg on
 * x); text is complete after fclose(f). */
struct rnd_text {
	char *text;
	size_t len;
	FILE *f;
	unsigned x;
};

static void rnd_text_begin(struct rnd_text *rt, unsigned seed)
{
	*rt = (struct rnd_text){ NULL, 0, NULL, seed * 2654435761u };
	rt->f = open_memstream(&rt->text, &rt->len);
	CU_ASSERT_PTR_NOT_NULL_FATAL(rt->f);
}

static void test_dispatch_random(void)
{
	static const char *const svcs[] = {
		"tcp/80", "tcp/443", "tcp/80-90", "tcp/85", "udp/53", "tcp/53", "tcp/1-1024",
		"udp/1000-2000", "tcp/65535", "tcp/60000-65535", "udp/1-65535", "tcp/8080",
		"tcp/8000-8099", "udp/123", "tcp/22",
	};
	static const char *const portless[] = { "any", "icmp", "tcp", "udp, icmp" };
	size_t dispatched = 0;

	for (unsigned seed = 1; seed <= 40; seed++) {
		struct rnd_text rt;
		FILE *f;
		size_t nrules = 20 + seed % 50;
		struct fixture fx;
		struct plan *pl;

		rnd_text_begin(&rt, seed);
		f = rt.f;
#define NEXT() lcg(&rt.x)
		fputs("[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n"
		      "[vm b]\nhost = h\nport = pb\nmac = 02:00:00:00:00:02\naddresses = 10.0.0.2\n"
		      "[group ga]\nmembers = a\n[group gb]\nmembers = b\n", f);
		for (size_t r = 1; r <= nrules; r++) {
			fprintf(f, "[rule %zu]\nsources = %s\ndestinations = 10.%u.0.0/16\n", r,
				NEXT() % 2 ? "ga" : "gb", NEXT() % 4);
			if (NEXT() % 6 == 0) {
				fprintf(f, "services = %s\n", portless[NEXT() % ARRAY_SIZE(portless)]);
			} else {
				size_t n = 1 + NEXT() % 3;

				fputs("services = ", f);
				for (size_t i = 0; i < n; i++)
					fprintf(f, "%s%s", i ? ", " : "", svcs[NEXT() % ARRAY_SIZE(svcs)]);
				fputc('\n', f);
			}
			fprintf(f, "action = %s\n", NEXT() % 2 ? "allow" : "drop");
		}
#undef NEXT
		fclose(f);
		fx = PARSE(rt.text);
		pl = COMPILE(&fx, "h");
		for (size_t c = 0; c < pl->nchains; c++)
			dispatched += pl->chains[c].nsegs > 0;
		plan_free(pl);
		fixture_free(&fx);
		free(rt.text);
	}
	CU_ASSERT(dispatched >= 40); /* most chains of these have a long run */
	{
		struct fixture fx = PARSE(
			"[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n"
			"[rule 1]\ndestinations = 10.9.0.0/16\nservices = tcp/80, tcp/81, tcp/82, tcp/83\n"
			"action = allow\n"
			"[rule 2]\ndestinations = 10.8.0.0/16\nservices = tcp/84, tcp/85, tcp/86\n"
			"action = drop\n");
		struct plan *pl = COMPILE(&fx, "h");

		for (size_t c = 0; c < pl->nchains; c++)
			CU_ASSERT_EQUAL(pl->chains[c].nsegs, 0); /* 2 port rules: linear */
		plan_free(pl);
		fixture_free(&fx);
	}
	{
		/* 8 runs of 8, 9, 8, 10, 8, 11, 8, 12 port rules, a rule of all
		 * TCP ports after each: the 6 longest are dispatched, in chain
		 * order (golden: tests/golden/dispatch-runs.nft). */
		static const size_t len[] = { 8, 9, 8, 10, 8, 11, 8, 12 };
		static const size_t want_first[] = { 0, 9, 19, 28, 48, 69 };
		char *text = NULL;
		size_t tlen = 0, id = 1;
		FILE *f = open_memstream(&text, &tlen);
		struct fixture fx;
		struct plan *pl;
		const struct pchain *out;

		fputs("[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n", f);
		for (size_t r = 0; r < ARRAY_SIZE(len); r++) {
			for (size_t i = 0; i <= len[r]; i++, id++)
				fprintf(f, "[rule %zu]\ndestinations = 10.9.0.0/16\nservices = %s%zu\n"
					"direction = out\naction = allow\n", id,
					i < len[r] ? "tcp/" : "tcp", i < len[r] ? 1000 + id : (size_t)0);
		}
		fclose(f);
		/* "tcp0" is no service: the separators are "tcp", every port */
		for (char *at = text; (at = strstr(at, "tcp0")); )
			memmove(at + 3, at + 4, strlen(at + 4) + 1);
		fx = PARSE(text);
		pl = COMPILE(&fx, "h");
		out = plan_find_chain(pl, pl->ports[0].out_chain);
		CU_ASSERT_FATAL(out != NULL && out->nsegs == ARRAY_SIZE(want_first));
		for (size_t k = 0; k < out->nsegs; k++)
			CU_ASSERT_EQUAL(out->segs[k].first, want_first[k]);
		free(text);
		/* t-golden has the kernel check it */
		text = print_plan(pl);
		GOLDEN("tests/golden/dispatch-runs.nft", text);
		plan_free(pl);
		fixture_free(&fx);
		free(text);
	}
}

/* --- factored runs (dfw/factor.c) ------------------------------------------ */

/* The kernel's answer for pk in chain ch as the backend sends it: its
 * dispatch (the atom's chain the map enters for the packet's port, then
 * the segment's other-protocol rules) and its factored runs (an outer
 * rule that matches enters its leaf chain; a leaf rule that matches
 * decides, else the packet returns).  The deciding kernel rule's policy
 * rule and verdict. */
struct kanswer {
	uint32_t rule_id;
	uint32_t verdict;
};

static bool kernel_rule(const struct plan *pl, const struct pchain *ch, const struct prule *r,
			uint32_t src, uint32_t dst, const struct trace_pkt *pk, struct kanswer *out)
{
	const struct pitem *last = &r->items[r->nitems - 1];

	if (!trace_rule_matches(pl, r, src, dst, pk))
		return false;
	if (last->kind == PI_JUMP) {
		char name[PLAN_NAME_MAX];

		for (size_t f = 0; f < ch->nfacts; f++) {
			fact_leaf_name(ch, &ch->facts[f], name, sizeof(name));
			if (strcmp(name, last->name))
				continue;
			for (size_t l = 0; l < ch->facts[f].nleaf; l++)
				if (kernel_rule(pl, ch, &ch->facts[f].leaf[l], src, dst, pk, out))
					return true;
			return false;
		}
		CU_FAIL("a jump to no leaf chain");
		return false;
	}
	if (last->kind != PI_VERDICT || (last->u == PV_REJECT_TCP && pk->proto != IPPROTO_TCP))
		return false;
	*out = (struct kanswer){ r->rule_id, last->u };
	return true;
}

/* Rules idx[0..n) of ch in one place (an atom's chain). */
static bool kernel_place(const struct plan *pl, const struct pchain *ch, const size_t *idx,
			 size_t n, uint32_t src, uint32_t dst, const struct trace_pkt *pk,
			 struct kanswer *out)
{
	struct kwalk w = { 0 };
	bool done = false;

	for (size_t i = 0; i < n && !done; i++) {
		const struct prule *r = kwalk_rule(&w, ch, idx[i]);

		done = r && kernel_rule(pl, ch, r, src, dst, pk, out);
	}
	kwalk_free(&w);
	return done;
}

/* The same from the chain's rules (its meaning): the first rule that
 * matches decides, as trace_chain has it, with its exact verdict. */
static struct kanswer meaning_chain(const struct plan *pl, const struct pchain *ch, uint32_t src,
				    uint32_t dst, const struct trace_pkt *pk)
{
	struct kanswer a = { 0, 99 };

	for (size_t i = 0; i < ch->nrules; i++)
		if (kernel_rule(pl, ch, &ch->rules[i], src, dst, pk, &a))
			break;
	return a;
}

static bool kernel_chain(const struct plan *pl, const struct pchain *ch, uint32_t src,
			 uint32_t dst, const struct trace_pkt *pk, struct kanswer *out)
{
	struct kwalk w = { 0 };
	bool done = false;

	for (size_t i = 0; i < ch->nrules && !done; i++) {
		const struct pdisp_seg *seg = disp_seg_at(ch, i);
		const struct prule *r;

		if (!seg) {
			done = (r = kwalk_rule(&w, ch, i)) && kernel_rule(pl, ch, r, src, dst, pk, out);
			continue;
		}
		for (size_t j = 0; j < seg->natoms && !done; j++) {
			const struct pdisp_atom *a = &seg->atoms[j], *c = &seg->atoms[a->chain];

			if (a->proto == pk->proto && a->lo <= pk->dport && pk->dport <= a->hi)
				done = kernel_place(pl, ch, c->rules, c->nrules, src, dst, pk, out);
		}
		for (size_t k = seg->first; k < seg->end && !done; k++)
			done = disp_other_proto(&ch->rules[k]) && (r = kwalk_rule(&w, ch, k)) &&
			       kernel_rule(pl, ch, r, src, dst, pk, out);
		i = seg->end - 1;
	}
	kwalk_free(&w);
	return done;
}

/* Random policies whose rules have sides of several alternatives (groups
 * of VMs, a group that excludes another, CIDR groups, literal addresses,
 * negations), several services, reject, applied_to, with long runs of
 * port rules (dispatched): for every packet of a sample over addresses in
 * and outside the groups, both families, protocols and ports, each chain's
 * kernel form (dispatch and factored runs, as the backend sends it)
 * decides by the same policy rule and verdict as the chain's rules. */
static void test_factor_random(void)
{
	static const char *const refs[] = {
		"ga", "gb", "gc", "gx", "gq", "a", "e", "10.7.0.0/16", "fd07::5", "10.0.0.3",
	};
	static const char *const svcs[] = {
		"tcp/80", "tcp/443", "tcp/80-90", "udp/53", "tcp/53", "icmp", "icmpv6/128",
		"tcp/8000-8099", "udp/123", "tcp/22", "proto/47", "tcp", "udp",
	};
	static const char *const addrs[] = {
		"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.7.1.1", "10.8.0.1",
		"fd00::1", "fd00::2", "fd00::3", "fd00::4", "fd07::5", "fd07::6", "fd09::1",
	};
	static const uint8_t protos[] = { IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6,
					  47 };
	static const uint16_t ports[] = { 22, 53, 80, 85, 90, 91, 123, 443, 8050, 9000 };
	size_t facts = 0, seg_facts = 0, packets = 0, wrong = 0;

	for (unsigned seed = 1; seed <= 30; seed++) {
		struct rnd_text rt;
		size_t nrules = 12 + seed % 30;
		struct fixture fx;
		struct plan *pl;

		rnd_text_begin(&rt, seed);
#define NEXT() lcg(&rt.x)
		for (int v = 1; v <= 5; v++)
			fprintf(rt.f, "[vm %c]\nhost = h\nport = p%c\nmac = 02:00:00:00:00:0%d\n"
				"addresses = 10.0.0.%d, fd00::%d\n", 'a' + v - 1, 'a' + v - 1, v, v, v);
		fputs("[group ga]\nmembers = a, b\n[group gb]\nmatch = name equals c\n"
		      "[group gc]\naddresses = 10.7.0.0/16, fd07::/64\nmembers = d\n"
		      "[group gq]\nmembers = b\nquarantine = yes\n"
		      "[group gx]\nmembers = a, b, c, e\nexclude_groups = gq\n", rt.f);
		for (size_t r = 1; r <= nrules; r++) {
			size_t ns = 1 + NEXT() % 3, nd = 1 + NEXT() % 3, nv = 1 + NEXT() % 3;
			static const char *const acts[] = { "allow", "drop", "reject" };

			fprintf(rt.f, "[rule %zu]\nsources = %s", r, NEXT() % 7 ? "" : "not ");
			for (size_t i = 0; i < ns; i++)
				fprintf(rt.f, "%s%s", i ? ", " : "", refs[NEXT() % ARRAY_SIZE(refs)]);
			fprintf(rt.f, "\ndestinations = %s", NEXT() % 7 ? "" : "not ");
			for (size_t i = 0; i < nd; i++)
				fprintf(rt.f, "%s%s", i ? ", " : "", refs[NEXT() % ARRAY_SIZE(refs)]);
			fputs("\nservices = ", rt.f);
			for (size_t i = 0; i < nv; i++)
				fprintf(rt.f, "%s%s", i ? ", " : "", svcs[NEXT() % ARRAY_SIZE(svcs)]);
			if (NEXT() % 5 == 0)
				fprintf(rt.f, "\napplied_to = %s", NEXT() % 2 ? "ga" : "gx");
			fprintf(rt.f, "\naction = %s\n", acts[NEXT() % ARRAY_SIZE(acts)]);
		}
#undef NEXT
		fclose(rt.f);
		fx = PARSE(rt.text);
		pl = COMPILE(&fx, "h");
		for (size_t c = 0; c < pl->nchains; c++) {
			const struct pchain *ch = &pl->chains[c];

			facts += ch->nfacts;
			for (size_t k = 0; k < ch->nfacts; k++)
				for (size_t g = 0; g < ch->nsegs; g++)
					seg_facts += ch->segs[g].first <= ch->facts[k].first &&
						     ch->facts[k].first < ch->segs[g].end;
			for (size_t s = 0; s < ARRAY_SIZE(addrs); s++) {
				for (size_t d = 0; d < ARRAY_SIZE(addrs); d++) {
					struct trace_pkt pk = { .icmp_type = 8, .icmp_code = 0 };
					const char *why;

					if (addr_parse(addrs[s], &pk.src, &why) < 0 ||
					    addr_parse(addrs[d], &pk.dst, &why) < 0 ||
					    pk.src.family != pk.dst.family)
						continue;
					for (size_t p = 0; p < ARRAY_SIZE(protos); p++) {
						for (size_t q = 0; q < ARRAY_SIZE(ports); q++) {
							uint32_t sid = 1 + (uint32_t)(s % 5), did = 1 + (uint32_t)(d % 5);
							struct trace_step st;
							struct kanswer k = { 0, 99 }, m;
							bool ok;

							pk.proto = protos[p];
							pk.dport = ports[q];
							pk.icmp_type = pk.proto == IPPROTO_ICMPV6 ? 128 : 8;
							trace_chain(pl, ch, sid, did, &pk, &st);
							m = meaning_chain(pl, ch, sid, did, &pk);
							ok = kernel_chain(pl, ch, sid, did, &pk, &k) &&
							     k.rule_id == m.rule_id && k.verdict == m.verdict &&
							     m.rule_id == st.rule_id;
							packets++;
							if (!ok && wrong++ < 5)
								fprintf(stderr, "\n  seed %u chain %s %s -> %s proto %u "
									"port %u: kernel rule %u, chain rule %u",
									seed, ch->name, addrs[s], addrs[d], pk.proto,
									pk.dport, k.rule_id, st.rule_id);
						}
					}
				}
			}
		}
		plan_free(pl);
		fixture_free(&fx);
		free(rt.text);
	}
	fprintf(stderr, "\n  [%zu factored runs, %zu in segments, %zu packets]", facts, seg_facts, packets);
	CU_ASSERT_EQUAL(wrong, 0);
	CU_ASSERT(facts >= 30);     /* the test is about them */
	CU_ASSERT(seg_facts >= 10); /* some inside dispatched segments */
	CU_ASSERT(facts - seg_facts >= 10); /* and some outside */
	CU_ASSERT(packets > 100000);
}

/* A run is factored only when it is every combination of its outer and
 * leaf rules: 3 sources x 3 destinations of one rule is; the same without
 * one of the nine is not (its leaf would take that combination too). */
static void test_factor_product_only(void)
{
	for (int missing = 0; missing < 2; missing++) {
		struct plan *pl = xcalloc(1, sizeof(*pl));
		struct pchain *c;

		pl->chains = xcalloc(1, sizeof(*pl->chains));
		pl->nchains = 1;
		c = &pl->chains[0];
		snprintf(c->name, sizeof(c->name), "o-test");
		c->rules = xcalloc(9, sizeof(*c->rules));
		for (int i = 0; i < 9; i++) {
			struct prule *r;
			struct pitem it[5] = {
				{ .kind = PI_NFPROTO, .u = NFPROTO_IPV4 },
				{ .kind = PI_SADDR_SET }, { .kind = PI_DADDR_SET },
				{ .kind = PI_COUNTER, .name = "r-5-out" },
				{ .kind = PI_VERDICT, .u = PV_DROP },
			};

			if (missing && i == 5)
				continue;
			r = &c->rules[c->nrules++];
			r->rule_id = 5;
			snprintf(it[1].name, sizeof(it[1].name), "g-s%d-4", i / 3);
			snprintf(it[2].name, sizeof(it[2].name), "g-d%d-4", i % 3);
			r->items = xcalloc(5, sizeof(*r->items));
			memcpy(r->items, it, sizeof(it));
			r->nitems = 5;
		}
		chain_factor(c);
		CU_ASSERT_EQUAL(c->nfacts, missing ? 0u : 1u);
		if (c->nfacts == 1) {
			CU_ASSERT_EQUAL(c->facts[0].first, 0);
			CU_ASSERT_EQUAL(c->facts[0].end, 9);
			CU_ASSERT_EQUAL(c->facts[0].nouter, 3);
			CU_ASSERT_EQUAL(c->facts[0].nleaf, 3);
		}
		plan_free(pl);
	}
}

/* Names become parts of nftables object names (at most 64 characters), so
 * a name that could not stay distinct there is refused with its line. */
static void test_long_group_names(void)
{
	struct diag d = { 0 };
	struct dfw_policy *p = policy_parse(
		"[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\n"
		"addresses = 10.0.0.1, fd00::1\n"
		"[group tenant-0123456789-0123456789-0123456789-0123456789-0123456789-a]\n"
		"members = a\n", "t.ini", &d);

	CU_ASSERT_PTR_NULL(p);
	CU_ASSERT_EQUAL(d.n, 1);
	if (d.n)
		CU_ASSERT_PTR_NOT_NULL(strstr(d.msgs[0], "t.ini:6: group name 'tenant-0123456789-"));
	if (d.n)
		CU_ASSERT_PTR_NOT_NULL(strstr(d.msgs[0], "1-48 letters"));
	policy_free(p);
	diag_free(&d);
}

/* ---- negation, ICMP, protocols, monitor mode, counters, learning --------- */

static struct dfw_rule *find_rule(struct dfw_policy *p, uint32_t id)
{
	for (size_t i = 0; i < p->nrules; i++)
		if (p->rules[i].id == id)
			return &p->rules[i];
	CU_FAIL_FATAL("no such rule");
	return NULL;
}

/* The k-th kernel rule of chain c from policy rule id, as nft text. */
static char *rule_text(const struct pchain *c, uint32_t id, size_t k)
{
	struct plan one = { 0 };
	struct pchain ch = { .name = "x" };
	char *text, *line, *end;

	for (size_t i = 0; i < c->nrules; i++) {
		if (c->rules[i].rule_id != id || k--)
			continue;
		ch.rules = &c->rules[i];
		ch.nrules = 1;
		break;
	}
	if (!ch.nrules)
		return xstrdup("(none)");
	one.chains = &ch;
	one.nchains = 1;
	text = print_plan(&one);
	line = strstr(text, "chain x {\n\t\t");
	CU_ASSERT_PTR_NOT_NULL_FATAL(line);
	line += strlen("chain x {\n\t\t");
	end = strchr(line, '\n');
	*end = '\0';
	memmove(text, line, strlen(line) + 1);
	return text;
}

static bool rule_is_at(int at, const struct pchain *c, uint32_t id, size_t k, const char *want)
{
	char *got = rule_text(c, id, k);
	bool ok = !strcmp(got, want);

	if (!ok)
		fprintf(stderr, "\n  line %d: rule %u #%zu\n    want: %s\n    got:  %s\n", at, id, k,
			want, got);
	free(got);
	return ok;
}

#define RULE_IS(c, id, k, want) CU_ASSERT_TRUE(rule_is_at(__LINE__, c, id, k, want))

static const char negation_ini[] =
	"[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1, fd00::1\n"
	"[vm b]\nhost = h2\nport = pb\nmac = 02:00:00:00:00:02\naddresses = 10.0.0.2\n"
	"[group ga]\nmembers = a\n"
	"[group gb]\nmembers = b\naddresses = 10.99.0.0/16\n"
	"[rule 1]\nsources = not ga\nservices = tcp/22\ndirection = in\naction = drop\n"
	"[rule 2]\ndestinations = not gb, 10.0.0.0/8\ndirection = out\naction = drop\n"
	"[rule 3]\nsources = not ga\ndestinations = not 192.0.2.0/24\ndirection = in\n"
	"action = reject\n"
	"[rule 4]\nsources = not ga\ndestinations = fd00:99::/64\ndirection = in\naction = allow\n"
	"[rule 5]\nsources = not 10.0.0.0/8\nservices = icmp/echo-request, icmpv6/echo-request\n"
	"direction = in\naction = allow\n";

/* A negated side matches an address in none of its sets: per family one
 * kernel rule with every set of the side of that family as a negated
 * lookup; a family in which the side has no set matches all of it. */
static void test_negation(void)
{
	struct fixture fx = PARSE(negation_ini);
	struct plan *pl = COMPILE(&fx, "h");
	const struct pchain *in, *out;
	char *text = print_plan(pl);

	GOLDEN("tests/golden/negation.nft", text);
	in = plan_find_chain(pl, pl->ports[0].in_chain);
	out = plan_find_chain(pl, pl->ports[0].out_chain);
	CU_ASSERT_FATAL(in && out);

	/* Source negated, destination any: both families. */
	CU_ASSERT_EQUAL(count_rules(in, 1), 2);
	RULE_IS(in, 1, 0, "th dport 22 meta nfproto ipv4 meta l4proto tcp ip saddr != @g-ga-4 "
			      "counter name \"r-1-in\" drop comment \"rule 1\"");
	RULE_IS(in, 1, 1, "th dport 22 meta nfproto ipv6 meta l4proto tcp ip6 saddr != @g-ga-6 "
			      "counter name \"r-1-in\" drop comment \"rule 1\"");

	/* A group with a CIDR member and a literal: the group's set and both
	 * prefixes (one each: compares) in one IPv4 rule; IPv6 has only the
	 * group's set. */
	CU_ASSERT_EQUAL(count_rules(out, 2), 2);
	CU_ASSERT_EQUAL(out->rules[0].items[3].kind, PI_DADDR_NET);
	RULE_IS(out, 2, 0, "meta nfproto ipv4 ip daddr != @g-gb-4 ip daddr != 10.99.0.0/16 "
			       "ip daddr != 10.0.0.0/8 counter name \"r-2-out\" drop comment \"rule 2\"");
	RULE_IS(out, 2, 1, "meta nfproto ipv6 ip6 daddr != @g-gb-6 counter name \"r-2-out\" "
			       "drop comment \"rule 2\"");

	/* Both sides negated; the destination has no IPv6 set, so in IPv6
	 * only the source is tested.  Reject: TCP reset, then ICMPX. */
	CU_ASSERT_EQUAL(count_rules(in, 3), 4);
	RULE_IS(in, 3, 0, "meta nfproto ipv4 meta l4proto tcp ip saddr != @g-ga-4 "
			      "ip daddr != 192.0.2.0/24 counter name \"r-3-in\" reject with tcp reset "
			      "comment \"rule 3\"");
	RULE_IS(in, 3, 1, "meta nfproto ipv4 ip saddr != @g-ga-4 ip daddr != 192.0.2.0/24 "
			      "counter name \"r-3-in\" reject with icmpx type admin-prohibited "
			      "comment \"rule 3\"");
	RULE_IS(in, 3, 3, "meta nfproto ipv6 ip6 saddr != @g-ga-6 counter name \"r-3-in\" "
			      "reject with icmpx type admin-prohibited comment \"rule 3\"");

	/* Negated source, IPv6-only positive destination: IPv6 only. */
	CU_ASSERT_EQUAL(count_rules(in, 4), 1);
	RULE_IS(in, 4, 0, "meta nfproto ipv6 ip6 saddr != @g-ga-6 ip6 daddr fd00:99::/64 "
			      "counter name \"r-4-in\" accept comment \"rule 4\"");

	/* "not 10.0.0.0/8" with ICMP: IPv4 outside 10/8; ICMPv6 from any
	 * IPv6 address. */
	CU_ASSERT_EQUAL(count_rules(in, 5), 2);
	RULE_IS(in, 5, 1, "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 128 "
			      "counter name \"r-5-in\" accept comment \"rule 5\"");
	{
		char *r5 = rule_text(in, 5, 0);

		CU_ASSERT_PTR_NOT_NULL(strstr(r5, "meta nfproto ipv4 meta l4proto icmp icmp type 8 "
						  "ip saddr != 10.0.0.0/8 "));
		free(r5);
	}
	free(text);
	plan_free(pl);
	fixture_free(&fx);
}

/* "not any" (refused by the parser, but the compiler must not widen it)
 * matches nothing: no kernel rule, while the counter still exists. */
static void not_any(struct dfw_policy *p)
{
	find_rule(p, 2)->dst.any = true;
}

static void test_negated_any(void)
{
	struct fixture fx = PARSE_MUT(negation_ini, not_any);
	struct plan *pl = COMPILE(&fx, "h");
	const struct pchain *out = plan_find_chain(pl, pl->ports[0].out_chain);

	CU_ASSERT_FATAL(out != NULL);
	CU_ASSERT_TRUE(find_rule(fx.p, 2)->dst.negate);
	CU_ASSERT_EQUAL(count_rules(out, 2), 0);
	CU_ASSERT_TRUE(chain_has_rule(out, 2));
	CU_ASSERT_PTR_NOT_NULL(bsearch("r-2-out", pl->counters, pl->ncounters,
				       sizeof(*pl->counters), cmp_str));
	plan_free(pl);
	fixture_free(&fx);
}

static const char services_ini[] =
	"[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1, fd00::1\n"
	"[service web]\nentries = tcp/80, tcp/443, tcp/8000-8999\n"
	"[rule 10]\ndestinations = 10.5.0.0/16\nservices = web, udp/1000-2000\n"
	"direction = out\naction = allow\n"
	"[rule 11]\nservices = icmp/echo-request, icmp/3:4, icmpv6/128, icmpv6/1:4\n"
	"direction = in\naction = allow\n"
	"[rule 12]\nservices = icmp/echo-request, icmp, icmpv6/echo-reply\n"
	"direction = in\naction = drop\n"
	"[rule 13]\nservices = proto/47, proto/sctp, tcp\ndirection = in\naction = drop\n"
	"[rule 14]\nservices = tcp/25, udp/514, icmp/timestamp-request\ndirection = out\n"
	"action = reject\n";

/* ICMP types and codes in their own family only, protocols by number in
 * both, all ports of a protocol, port ranges, service objects, reject per
 * protocol. */
static void test_services(void)
{
	struct fixture fx = PARSE(services_ini);
	struct plan *pl = COMPILE(&fx, "h");
	const struct pchain *in, *out;
	char *text = print_plan(pl);

	GOLDEN("tests/golden/services.nft", text);
	in = plan_find_chain(pl, pl->ports[0].in_chain);
	out = plan_find_chain(pl, pl->ports[0].out_chain);
	CU_ASSERT_FATAL(in && out);

	/* The service object's ports as a set, the UDP range alone. */
	CU_ASSERT_EQUAL(count_rules(out, 10), 2);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "elements = { 80, 443, 8000-8999 }"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "th dport 1000-2000 meta nfproto ipv4 meta l4proto udp "
					    "ip daddr 10.5.0.0/16 "));

	CU_ASSERT_EQUAL(count_rules(in, 11), 4);
	RULE_IS(in, 11, 0, "meta nfproto ipv4 meta l4proto icmp icmp type 8 "
			       "counter name \"r-11-in\" accept comment \"rule 11\"");
	RULE_IS(in, 11, 1, "meta nfproto ipv4 meta l4proto icmp icmp type 3 icmp code 4 "
			       "counter name \"r-11-in\" accept comment \"rule 11\"");
	RULE_IS(in, 11, 2, "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 128 "
			       "counter name \"r-11-in\" accept comment \"rule 11\"");
	RULE_IS(in, 11, 3, "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 1 "
			       "icmpv6 code 4 counter name \"r-11-in\" accept comment \"rule 11\"");

	/* icmp covers icmp/echo-request. */
	CU_ASSERT_EQUAL(count_rules(in, 12), 2);
	RULE_IS(in, 12, 0, "meta nfproto ipv4 meta l4proto icmp "
			       "counter name \"r-12-in\" drop comment \"rule 12\"");
	RULE_IS(in, 12, 1, "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 129 "
			       "counter name \"r-12-in\" drop comment \"rule 12\"");

	/* Other protocols by number, in both families (no family match);
	 * tcp alone is all its ports. */
	CU_ASSERT_EQUAL(count_rules(in, 13), 3);
	RULE_IS(in, 13, 0, "meta l4proto tcp counter name \"r-13-in\" drop comment \"rule 13\"");
	RULE_IS(in, 13, 1, "meta l4proto 47 counter name \"r-13-in\" drop comment \"rule 13\"");
	RULE_IS(in, 13, 2, "meta l4proto 132 counter name \"r-13-in\" drop comment \"rule 13\"");

	CU_ASSERT_EQUAL(count_rules(out, 14), 3);
	CU_ASSERT_EQUAL(verdict_of(out, 14, 0), PV_REJECT_TCP);
	CU_ASSERT_EQUAL(verdict_of(out, 14, 1), PV_REJECT_ICMPX);
	RULE_IS(out, 14, 2, "meta nfproto ipv4 meta l4proto icmp icmp type 13 counter name "
				"\"r-14-out\" reject with icmpx type admin-prohibited comment \"rule 14\"");
	free(text);
	plan_free(pl);
	fixture_free(&fx);
}

static const char monitor_ini[] =
	"[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1, fd00::1\n"
	"[group lan]\naddresses = 10.0.0.0/8, fd00::/16\n"
	"[rule 20]\nsources = lan\nservices = tcp/23\ndirection = in\naction = drop\n"
	"[rule 21]\nsources = lan\ndirection = out\naction = reject\nlog = yes\n"
	"[rule 22]\nservices = tcp/22\ndirection = in\naction = allow\n"
	"[rule 23]\nservices = udp/53\ndirection = in\naction = drop\n";

static void monitor_some(struct dfw_policy *p)
{
	find_rule(p, 20)->monitor = true;
	find_rule(p, 21)->monitor = true;
	find_rule(p, 22)->monitor = true; /* allow: unaffected */
}

/* Monitor mode: a drop or reject rule logs (always), counts and lets the
 * packet through as an allow would; allow rules are unaffected. */
static void test_monitor(void)
{
	struct fixture fx = PARSE_MUT(monitor_ini, monitor_some);
	struct plan *pl = COMPILE(&fx, "h");
	const struct pchain *in, *out;
	char *text = print_plan(pl);

	GOLDEN("tests/golden/monitor.nft", text);
	in = plan_find_chain(pl, pl->ports[0].in_chain);
	out = plan_find_chain(pl, pl->ports[0].out_chain);
	CU_ASSERT_FATAL(in && out);
	/* The group's CIDR, one per family (a compare each): it has no VM, so
	 * its VM sets are dead (no rule, no set). */
	CU_ASSERT_EQUAL(count_rules(in, 20), 2);
	CU_ASSERT_PTR_NULL(plan_find_set(pl, "g-lan-4"));
	CU_ASSERT_PTR_NULL(plan_find_set(pl, "g-lan-4n"));
	RULE_IS(in, 20, 0, "th dport 23 meta nfproto ipv4 meta l4proto tcp ip saddr 10.0.0.0/8 "
			       "log prefix \"dfw rule=20 in monitor \" group 0 "
			       "counter name \"r-20-in\" accept comment \"rule 20\"");
	CU_ASSERT_EQUAL(verdict_of(in, 20, 0), PV_ACCEPT);
	/* Reject of any protocol: one rule per match, no TCP / ICMPX pair. */
	CU_ASSERT_EQUAL(count_rules(out, 21), 2);
	RULE_IS(out, 21, 1, "meta nfproto ipv6 ip6 saddr fd00::/16 "
				"log prefix \"dfw rule=21 out monitor \" group 0 "
				"counter name \"r-21-out\" return comment \"rule 21\"");
	RULE_IS(in, 22, 0, "th dport 22 meta l4proto tcp counter name \"r-22-in\" accept "
			       "comment \"rule 22\"");
	CU_ASSERT_EQUAL(verdict_of(in, 23, 0), PV_DROP);
	/* The monitored rule's chain differs from the enforcing one. */
	{
		struct fixture fe = PARSE(monitor_ini);
		struct plan *enforcing = COMPILE(&fe, "h");
		struct plan_diff d;

		plan_diff(enforcing, pl, &d);
		CU_ASSERT_EQUAL(d.nchain_add, 2);
		CU_ASSERT_EQUAL(d.nchain_del, 2);
		CU_ASSERT_EQUAL(d.ncounter_add + d.ncounter_del, 0); /* counts go on */
		plan_diff_free(&d);
		plan_free(enforcing);
		fixture_free(&fe);
	}
	free(text);
	plan_free(pl);
	fixture_free(&fx);
}

static bool has_name(const char *const *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i], name))
			return true;
	return false;
}

/* One named counter per policy rule and direction, also for the default
 * rule; a diff adds and removes counters with their rules and keeps the
 * counters of rules that stay, even when their chain is rewritten. */
static void test_counters(void)
{
	struct fixture a = PARSE(monitor_ini);
	struct fixture b = PARSE(
		"[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1, fd00::1\n"
		"[group lan]\naddresses = 10.0.0.0/8, fd00::/16\n"
		"[rule 20]\nsources = lan\nservices = tcp/2323\ndirection = in\naction = drop\n"
		"[rule 21]\nsources = lan\ndirection = in\naction = reject\nlog = yes\n"
		"[rule 23]\nservices = udp/53\ndirection = in\naction = drop\n"
		"[rule 24]\nservices = udp/123\ndirection = in-out\naction = allow\n");
	struct plan *pa = COMPILE(&a, "h"), *pb = COMPILE(&b, "h"), *none = COMPILE(&a, "nohost");
	static const char *const want[] = { "r-20-in", "r-21-out", "r-22-in", "r-23-in",
					    "r-default-in", "r-default-out" };
	struct plan_diff d;

	CU_ASSERT_EQUAL_FATAL(pa->ncounters, ARRAY_SIZE(want));
	for (size_t i = 0; i < ARRAY_SIZE(want); i++)
		CU_ASSERT_STRING_EQUAL(pa->counters[i], want[i]);
	{
		char *text = print_plan(pa);

		CU_ASSERT_PTR_NOT_NULL(strstr(text, "\tcounter r-20-in {\n\t}\n"));
		free(text);
	}

	plan_diff(pa, pb, &d);
	CU_ASSERT_EQUAL(d.nchain_add, 2);
	CU_ASSERT_EQUAL(d.nchain_del, 2);
	/* 21 moved from out to in; 22 went; 24 came in both directions. */
	CU_ASSERT_EQUAL(d.ncounter_del, 2);
	CU_ASSERT_TRUE(has_name(d.counter_del, d.ncounter_del, "r-21-out"));
	CU_ASSERT_TRUE(has_name(d.counter_del, d.ncounter_del, "r-22-in"));
	CU_ASSERT_EQUAL(d.ncounter_add, 3);
	CU_ASSERT_TRUE(has_name(d.counter_add, d.ncounter_add, "r-21-in"));
	CU_ASSERT_TRUE(has_name(d.counter_add, d.ncounter_add, "r-24-in"));
	CU_ASSERT_TRUE(has_name(d.counter_add, d.ncounter_add, "r-24-out"));
	/* Borrowed from the plans. */
	for (size_t i = 0; i < d.ncounter_add; i++)
		CU_ASSERT_TRUE(d.counter_add[i] >= pb->counters[0] &&
			       d.counter_add[i] <= pb->counters[pb->ncounters - 1]);
	CU_ASSERT_FALSE(plan_diff_empty(&d));
	plan_diff_free(&d);
	CU_ASSERT_PTR_NULL(d.counter_add);

	/* From nothing and to nothing. */
	plan_diff(NULL, pa, &d);
	CU_ASSERT_EQUAL(d.ncounter_add, pa->ncounters);
	CU_ASSERT_EQUAL(d.ncounter_del, 0);
	plan_diff_free(&d);
	CU_ASSERT_EQUAL(none->ncounters, 0);
	plan_diff(pa, none, &d);
	CU_ASSERT_EQUAL(d.ncounter_del, pa->ncounters);
	plan_diff_free(&d);
	plan_diff(pa, pa, &d);
	CU_ASSERT_TRUE(plan_diff_empty(&d));
	plan_diff_free(&d);
	plan_free(pa);
	plan_free(pb);
	plan_free(none);
	fixture_free(&a);
	fixture_free(&b);
}

static const char learning_ini[] =
	"[vm l1]\nhost = h\nport = vnet-l1\nmac = 02:00:00:00:00:11\naddresses = learn\n"
	"[vm l2]\nhost = h\nport = vnet-l2\nmac = 02:00:00:00:00:12\naddresses = learn\n"
	"[vm s]\nhost = h\nport = vnet-s\nmac = 02:00:00:00:00:13\naddresses = 10.0.0.3\n"
	"[group learners]\nmembers = l1, l2\n"
	"[rule 30]\nsources = learners\nservices = tcp/80\ndirection = out\naction = allow\n";

/* What dfwd does once l2's guest used 10.0.0.7: the store locks it and the
 * agent puts it in the VM's addresses. */
static void lock_l2(struct dfw_policy *p)
{
	struct vm *v = &p->inv.vms[policy_find_vm(p, "l2")];
	const char *why;

	CU_ASSERT_TRUE_FATAL(v->learn && v->naddrs == 0);
	free(v->addrs);
	v->addrs = xcalloc(1, sizeof(*v->addrs));
	CU_ASSERT_EQUAL_FATAL(addr_parse("10.0.0.7", &v->addrs[0], &why), 0);
	v->naddrs = 1;
}

/* Ports of VMs with addresses = learn are in the bridge's learn sets, per
 * family, until an address of that family is locked; a lock changes the
 * port (its anti-spoofing elements and learn set membership) in a diff. */
static void test_learning(void)
{
	struct fixture fx = PARSE(learning_ini), lk = PARSE_MUT(learning_ini, lock_l2);
	struct plan *pl = COMPILE(&fx, "h"), *locked = COMPILE(&lk, "h");
	const struct pport *l1, *l2, *st;
	struct plan_diff d;
	char *text = print_plan(pl), *ltext = print_plan(locked);

	GOLDEN("tests/golden/learning.nft", text);
	GOLDEN("tests/golden/learning-l2-locked.nft", ltext);
	l1 = plan_find_port(pl, "vnet-l1");
	l2 = plan_find_port(pl, "vnet-l2");
	st = plan_find_port(pl, "vnet-s");
	CU_ASSERT_FATAL(l1 && l2 && st);
	CU_ASSERT_TRUE(l1->learn4 && l1->learn6 && l2->learn4 && l2->learn6);
	CU_ASSERT_FALSE(st->learn4 || st->learn6);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "set learn4 {\n\t\ttype ifname\n\t\telements = { "
					    "\"vnet-l1\", \"vnet-l2\" }\n\t}\n"));
	/* Nothing learned yet: no IPv4 source passes anti-spoofing, and the
	 * group's address set is empty. */
	CU_ASSERT_PTR_NULL(strstr(text, "\"vnet-l1\" . 10."));
	CU_ASSERT_TRUE(set_is(pl, "g-learners-4", ""));

	l2 = plan_find_port(locked, "vnet-l2");
	CU_ASSERT_FATAL(l2 != NULL);
	CU_ASSERT_FALSE(l2->learn4);
	CU_ASSERT_TRUE(l2->learn6);
	CU_ASSERT_PTR_NOT_NULL(strstr(ltext, "set learn4 {\n\t\ttype ifname\n\t\telements = { "
					     "\"vnet-l1\" }\n\t}\n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(ltext, "\"vnet-l2\" . 10.0.0.7"));

	plan_diff(pl, locked, &d);
	CU_ASSERT_EQUAL_FATAL(d.nport_del, 1);
	CU_ASSERT_EQUAL_FATAL(d.nport_add, 1);
	CU_ASSERT_STRING_EQUAL(d.port_del[0]->ifname, "vnet-l2");
	CU_ASSERT_TRUE(d.port_del[0]->learn4);
	CU_ASSERT_FALSE(d.port_add[0]->learn4);
	CU_ASSERT_EQUAL(d.nchain_add + d.nchain_del + d.ncounter_add + d.ncounter_del, 0);
	CU_ASSERT_TRUE(has_elem(&d, true, "g-learners-4", "10.0.0.7"));
	plan_diff_free(&d);
	free(text);
	free(ltext);
	plan_free(pl);
	plan_free(locked);
	fixture_free(&fx);
	fixture_free(&lk);
}

/* ---- a VM's addresses as a member; exclusion of IP/CIDR members --------- */

/* The EUI-64 link-local address of a MAC, worked out here rather than
 * taken from the compiler. */
static struct dfw_addr eui64_of(const uint8_t mac[6])
{
	struct dfw_addr a = { .family = AF_INET6, .plen = 128, .a = { 0xfe, 0x80 } };

	a.a[8] = mac[0] ^ 0x02;
	memcpy(a.a + 9, mac + 1, 2);
	a.a[11] = 0xff;
	a.a[12] = 0xfe;
	memcpy(a.a + 13, mac + 3, 3);
	return a;
}

/* A new TCP connection from VM src at address saddr to VM dst at daddr
 * (both on host hv1, whose plan is pl), as `dfwctl trace` has it from
 * the compiled rules; *rule is the deciding rule (0: a default rule). */
static enum trace_verdict trace_tcp(const struct fixture *fx, const struct plan *pl,
				    const char *src, const char *saddr, const char *dst,
				    const char *daddr, uint16_t port, uint32_t *rule)
{
	struct trace_pkt pk = { .proto = IPPROTO_TCP, .dport = port, .icmp_type = -1,
				.icmp_code = -1 };
	long s = policy_find_vm(fx->p, src), d = policy_find_vm(fx->p, dst);
	struct trace_end se = { s, pl, NULL }, de = { d, pl, NULL };
	struct trace_result res;
	const char *why;

	CU_ASSERT_FATAL(s >= 0 && d >= 0);
	CU_ASSERT_FATAL(addr_parse(saddr, &pk.src, &why) == 0 &&
			addr_parse(daddr, &pk.dst, &why) == 0);
	se.port = plan_find_port(pl, fx->p->inv.vms[s].port);
	de.port = plan_find_port(pl, fx->p->inv.vms[d].port);
	CU_ASSERT_FATAL(se.port && de.port);
	trace_path(fx->p, fx->e, NULL, 0, 0, &se, &de, &pk, &res);
	CU_ASSERT_FATAL(res.decided_by != NULL);
	*rule = !strcmp(res.decided_by, "out") ? res.out.rule_id :
		!strcmp(res.decided_by, "in") ? res.in.rule_id : UINT32_MAX;
	return res.verdict;
}

/* TRACE(verdict, rule, ...): trace_tcp decides so, by that rule. */
#define TRACE(v, id, fx, pl, src, saddr, dst, daddr, port)                                  \
	do {                                                                              \
		uint32_t rule_;                                                           \
		enum trace_verdict v_ = trace_tcp(fx, pl, src, saddr, dst, daddr, port, &rule_); \
		if (v_ != (v) || rule_ != (id))                                           \
			fprintf(stderr, "\n  %s %s -> %s %s tcp/%u: %s by rule %u", src, saddr, \
				dst, daddr, port, trace_verdict_name(v_), rule_);          \
		CU_ASSERT(v_ == (v) && rule_ == (id));                                    \
	} while (0)

/* A VM's IPv6 link-local address (EUI-64 of its MAC), which its vNIC may
 * send from, is one of its addresses wherever the VM is a member: group
 * sets (and bases), VM literals of rules, and the sets a tag change edits,
 * also for a VM with IPv4 addresses only or with addresses = learn.  "::"
 * (every VM's duplicate address detection) is in no set.  Traced: a
 * quarantined VM sending from its link-local address is dropped, a rule
 * naming a VM matches traffic to its link-local address. */
static void test_link_local_member(void)
{
	struct fixture fx = PARSE(
		"[tags]\nnames = threat.high\n"
		"[vm a]\nhost = hv1\nport = vnet-a\nmac = 02:00:00:00:00:01\naddresses = fd00::1\n"
		"[vm b]\nhost = hv1\nport = vnet-b\nmac = 02:00:00:00:00:02\naddresses = 10.0.0.2\n"
		"[vm c]\nhost = hv1\nport = vnet-c\nmac = 02:00:00:00:00:03\n"
		"addresses = 10.0.0.3, fd00::3\n"
		"[vm k]\nhost = hv1\nport = vnet-k\nmac = 02:00:00:00:00:04\naddresses = learn\n"
		"[vm e]\nhost = hv1\nport = vnet-e\nmac = 02:00:00:00:00:05\n"
		"addresses = 10.0.0.5, fe80::ff:fe00:5\n"
		"[group quarantine]\nmatch = tag equals threat.high\nquarantine = yes\n"
		"[group servers]\nmembers = c, e\n"
		"[group web]\nmembers = a, b, k\nexclude_groups = quarantine\n"
		"[rule 10]\ncategory = emergency\nsources = quarantine\naction = drop\n"
		"[rule 20]\nsources = any\ndestinations = c\nservices = tcp/22\naction = allow\n"
		"[rule 30]\nsources = not servers\ndestinations = a\nservices = tcp/80\n"
		"action = allow\n"
		"[rule 40]\nsources = b, k\ndestinations = c\nservices = tcp/443\naction = allow\n"
		"[rule 50]\nsources = web\ndestinations = c\nservices = tcp/8080\naction = allow\n");
	const char *threat[] = { "threat.high" };
	struct plan *pl = COMPILE(&fx, "hv1");
	const struct pport *pe = plan_find_port(pl, "vnet-e");
	char *text = print_plan(pl);
	struct dfw_addr ll, unspec = { .family = AF_INET6, .plen = 128 };
	char buf[64];

	ll = eui64_of(fx.p->inv.vms[0].mac);
	addr_format(&ll, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "fe80::ff:fe00:1");
	CU_ASSERT_TRUE(set_is(pl, "g-servers-6", "fd00::3, fe80::ff:fe00:3, fe80::ff:fe00:5"));
	CU_ASSERT_TRUE(set_is(pl, "g-servers-4", "10.0.0.3, 10.0.0.5"));
	/* b: IPv4 only; k: nothing learned yet. */
	CU_ASSERT_TRUE(set_is(pl, "g-web-6b", "fd00::1, fe80::ff:fe00:1, fe80::ff:fe00:2, "
					       "fe80::ff:fe00:4"));
	CU_ASSERT_TRUE(set_is(pl, "g-web-4b", "10.0.0.2"));
	CU_ASSERT_TRUE(set_is(pl, "g-quarantine-6", ""));
	/* Rule 40's VM literals: b and k have IPv6 link-local addresses. */
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "elements = { fe80::ff:fe00:2, fe80::ff:fe00:4 }"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "elements = { fd00::3, fe80::ff:fe00:3 }"));
	/* e declares its link-local address: one element, one port address. */
	CU_ASSERT_FATAL(pe != NULL);
	CU_ASSERT_EQUAL(pe->naddrs, 3); /* 10.0.0.5, ::, fe80::ff:fe00:5 */
	free(text);

	TRACE(TV_ALLOW, 20, &fx, pl, "a", "fe80::ff:fe00:1", "c", "fd00::3", 22);
	TRACE(TV_ALLOW, 20, &fx, pl, "a", "fe80::ff:fe00:1", "c", "fe80::ff:fe00:3", 22);
	TRACE(TV_DROP, 0, &fx, pl, "c", "fe80::ff:fe00:3", "a", "fd00::1", 80);
	TRACE(TV_ALLOW, 30, &fx, pl, "b", "fe80::ff:fe00:2", "a", "fe80::ff:fe00:1", 80);
	TRACE(TV_ALLOW, 40, &fx, pl, "b", "fe80::ff:fe00:2", "c", "fd00::3", 443);
	TRACE(TV_ALLOW, 40, &fx, pl, "k", "fe80::ff:fe00:4", "c", "fe80::ff:fe00:3", 443);
	TRACE(TV_ALLOW, 50, &fx, pl, "b", "fe80::ff:fe00:2", "c", "fd00::3", 8080);

	/* Quarantined through the incremental path (a tag change), which
	 * gives exactly a fresh compile: a's two IPv6 addresses; b's IPv4
	 * address and its link-local; k's link-local; e's two addresses (its
	 * link-local once).  web excludes quarantine: its base stays. */
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "a", threat, 1, "g-quarantine-6"), 3);
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "b", threat, 1, "g-quarantine-6"), 3);
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "k", threat, 1, "g-quarantine-6"), 2);
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "e", threat, 1, "g-quarantine-6"), 3);
	CU_ASSERT_TRUE(set_is(pl, "g-quarantine-6", "fd00::1, fe80::ff:fe00:1, fe80::ff:fe00:2, "
						     "fe80::ff:fe00:4, fe80::ff:fe00:5"));
	CU_ASSERT_TRUE(set_is(pl, "g-quarantine-4", "10.0.0.2, 10.0.0.5"));
	TRACE(TV_DROP, 10, &fx, pl, "a", "fe80::ff:fe00:1", "c", "fd00::3", 22);
	TRACE(TV_DROP, 10, &fx, pl, "a", "fd00::1", "c", "fd00::3", 22);
	TRACE(TV_DROP, 10, &fx, pl, "b", "fe80::ff:fe00:2", "c", "fd00::3", 8080);
	TRACE(TV_DROP, 10, &fx, pl, "k", "fe80::ff:fe00:4", "c", "fe80::ff:fe00:3", 443);
	TRACE(TV_DROP, 10, &fx, pl, "e", "fe80::ff:fe00:5", "c", "fd00::3", 22);
	/* Released: the link-local addresses leave the sets again. */
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "a", NULL, 0, "g-quarantine-6"), 3);
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "b", NULL, 0, "g-quarantine-6"), 3);
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "k", NULL, 0, "g-quarantine-6"), 2);
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "e", NULL, 0, "g-quarantine-6"), 3);
	CU_ASSERT_TRUE(set_is(pl, "g-quarantine-6", ""));
	TRACE(TV_ALLOW, 20, &fx, pl, "a", "fe80::ff:fe00:1", "c", "fd00::3", 22);
	/* "::" is a vNIC's address (anti-spoofing), never a member's. */
	for (size_t i = 0; i < pl->nsets; i++)
		for (size_t k = 0; k < pl->sets[i].nelems; k++)
			CU_ASSERT_NOT_EQUAL(addr_cmp(&pl->sets[i].elems[k], &unspec), 0);
	plan_free(pl);
	fixture_free(&fx);
}

/* Exclusion wins over IP/CIDR members as over VMs: a desktops group of
 * networks that excludes quarantine (a tag) and a group of one address
 * (blocked) leaves out a quarantined VM's addresses and the blocked one;
 * a group that includes desktops keeps that exclusion for desktops'
 * networks, not for its own address; "not desktops" holds for exactly the
 * addresses desktops leaves out.  A tag change edits quarantine's sets
 * only (the incremental path equals a fresh compile). */
static void test_net_exclusion(void)
{
	struct fixture fx = PARSE(
		"[tags]\nnames = threat.high\n"
		"[vm d1]\nhost = hv1\nport = vnet-d1\nmac = 02:00:00:50:00:11\n"
		"addresses = 10.10.0.11, fd00:10::11\n"
		"[vm d2]\nhost = hv1\nport = vnet-d2\nmac = 02:00:00:50:00:12\naddresses = 10.10.0.12\n"
		"[vm fs]\nhost = hv1\nport = vnet-fs\nmac = 02:00:00:50:00:21\n"
		"addresses = 10.10.1.5, fd00:11::5\n"
		"[group quarantine]\nmatch = tag equals threat.high\nquarantine = yes\n"
		"[group blocked]\naddresses = 10.10.0.12\n"
		"[group desktops]\naddresses = 10.10.0.0/28, 10.10.0.32/28, fd00:10::/120\n"
		"exclude_groups = quarantine, blocked\n"
		"[group office]\ninclude = desktops\naddresses = 10.10.0.12\n"
		"[rule 10]\nsources = desktops\ndestinations = fs\nservices = tcp/445\naction = allow\n"
		"[rule 20]\nsources = not desktops\ndestinations = fs\nservices = tcp/139\n"
		"action = allow\n"
		"[rule 30]\nsources = office\ndestinations = fs\nservices = tcp/8080\naction = allow\n");
	const char *threat[] = { "threat.high" };
	struct plan *pl = COMPILE(&fx, "hv1");
	char *text = print_plan(pl);

	CU_ASSERT_TRUE(set_is(pl, "g-desktops-4n", "10.10.0.0/28, 10.10.0.32/28"));
	/* office: its own address, then desktops' networks with desktops'
	 * exclusions. */
	CU_ASSERT_TRUE(set_is(pl, "g-office-4n2", "10.10.0.0/28, 10.10.0.32/28"));
	CU_ASSERT_PTR_NULL(plan_find_set(pl, "g-office-4n"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "ip saddr @g-desktops-4n ip saddr != @g-quarantine-4 "
					    "ip saddr != 10.10.0.12 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "ip6 saddr fd00:10::/120 ip6 saddr != @g-quarantine-6 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "ip saddr @g-office-4n2 ip saddr != @g-quarantine-4 "
					    "ip saddr != 10.10.0.12 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "ip saddr 10.10.0.12 ip daddr 10.10.1.5 counter name "
					    "\"r-30-out\""));
	/* blocked has no VM and no tag can give it one: no set, no lookup. */
	CU_ASSERT_PTR_NULL(strstr(text, "g-blocked-"));
	/* not desktops: in neither of its sets, or in an exclusion's. */
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "ip saddr != @g-desktops-4 ip saddr != @g-desktops-4n "));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "ip saddr @g-quarantine-4 ip saddr != @g-desktops-4 "));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "ip saddr 10.10.0.12 ip saddr != @g-desktops-4 "));
	free(text);

	TRACE(TV_ALLOW, 10, &fx, pl, "d1", "10.10.0.11", "fs", "10.10.1.5", 445);
	TRACE(TV_ALLOW, 10, &fx, pl, "d1", "fd00:10::11", "fs", "fd00:11::5", 445);
	TRACE(TV_DROP, 0, &fx, pl, "d1", "10.10.0.11", "fs", "10.10.1.5", 139);
	TRACE(TV_ALLOW, 30, &fx, pl, "d1", "10.10.0.11", "fs", "10.10.1.5", 8080);
	/* d2's address is blocked's: not a desktop, but office's own. */
	TRACE(TV_DROP, 0, &fx, pl, "d2", "10.10.0.12", "fs", "10.10.1.5", 445);
	TRACE(TV_ALLOW, 20, &fx, pl, "d2", "10.10.0.12", "fs", "10.10.1.5", 139);
	TRACE(TV_ALLOW, 30, &fx, pl, "d2", "10.10.0.12", "fs", "10.10.1.5", 8080);

	/* d1 quarantined: quarantine's sets change (its two addresses and
	 * its link-local one), nothing else. */
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "d1", threat, 1, "g-quarantine-4"), 4);
	TRACE(TV_DROP, 0, &fx, pl, "d1", "10.10.0.11", "fs", "10.10.1.5", 445);
	TRACE(TV_DROP, 0, &fx, pl, "d1", "fd00:10::11", "fs", "fd00:11::5", 445);
	TRACE(TV_ALLOW, 20, &fx, pl, "d1", "10.10.0.11", "fs", "10.10.1.5", 139);
	TRACE(TV_ALLOW, 20, &fx, pl, "d1", "fd00:10::11", "fs", "fd00:11::5", 139);
	TRACE(TV_DROP, 0, &fx, pl, "d1", "10.10.0.11", "fs", "10.10.1.5", 8080);
	TRACE(TV_ALLOW, 30, &fx, pl, "d2", "10.10.0.12", "fs", "10.10.1.5", 8080);
	/* Released. */
	CU_ASSERT_EQUAL(incremental_step(&fx, pl, "d1", NULL, 0, "g-quarantine-4"), 4);
	TRACE(TV_ALLOW, 10, &fx, pl, "d1", "10.10.0.11", "fs", "10.10.1.5", 445);
	TRACE(TV_DROP, 0, &fx, pl, "d1", "10.10.0.11", "fs", "10.10.1.5", 139);
	plan_free(pl);
	fixture_free(&fx);
}

/* Reference membership of an address, by the rule of docs/CONFIG.md:
 * addr is one of a VM's (declared, or its EUI-64 link-local address) of
 * group g's members, or in g's IP/CIDR members and not taken out by
 * exclusion. */
static bool ref_vm_addr(const struct fixture *fx, size_t g, const struct dfw_addr *addr)
{
	for (size_t v = 0; v < fx->p->inv.nvms; v++) {
		const struct vm *vm = &fx->p->inv.vms[v];
		struct dfw_addr ll = eui64_of(vm->mac);

		if (!gengine_is_member(fx->e, g, v))
			continue;
		if (!addr_cmp(&ll, addr))
			return true;
		for (size_t k = 0; k < vm->naddrs; k++)
			if (!addr_cmp(&vm->addrs[k], addr))
				return true;
	}
	return false;
}

/* In g's own IP/CIDR members or those of a group it includes (whole). */
static bool ref_in_nets(const struct fixture *fx, size_t g, const struct dfw_addr *addr)
{
	const struct group_def *gd = &fx->p->inv.groups[g];

	for (size_t i = 0; i < gd->naddrs; i++)
		if (gd->addrs[i].family == addr->family && addr_contains(&gd->addrs[i], addr))
			return true;
	for (size_t i = 0; i < gd->nincludes; i++)
		if (ref_in_nets(fx, gd->includes[i], addr))
			return true;
	return false;
}

/* The same, less what exclusion takes out: at each group on the way, an
 * address of a group it excludes (a member VM's, or in its IP/CIDR
 * members, whole). */
static bool ref_nets(const struct fixture *fx, size_t g, const struct dfw_addr *addr)
{
	const struct group_def *gd = &fx->p->inv.groups[g];
	bool in = false;

	for (size_t i = 0; i < gd->naddrs && !in; i++)
		in = gd->addrs[i].family == addr->family && addr_contains(&gd->addrs[i], addr);
	for (size_t i = 0; i < gd->nincludes && !in; i++)
		in = ref_nets(fx, gd->includes[i], addr);
	for (size_t i = 0; i < gd->nexclude_groups && in; i++)
		in = !ref_vm_addr(fx, gd->exclude_groups[i], addr) &&
		     !ref_in_nets(fx, gd->exclude_groups[i], addr);
	return in;
}

/* Random policies of groups with VMs (IPv4 and IPv6, IPv4 only, IPv6
 * only, learning), tags, IP/CIDR members (some covering VMs' addresses and
 * link-local ones), includes and exclusions: for every group G, "sources =
 * G" and "sources = not G" match, in the compiled rules (trace) and in
 * their kernel form, exactly the addresses the reference says are in G,
 * and are not.  The tags come through the incremental path, which gives a
 * fresh compile each time. */
static void test_member_addrs_random(void)
{
	static const char *const nets[] = {
		"10.0.0.0/30", "10.0.0.4/30", "10.0.0.0/29", "10.0.0.2", "10.0.0.3", "fd00::/126",
		"fd00::4/126", "fd00::2", "fe80::/64", "fe80::ff:fe00:3",
	};
	static const char *const probes[] = {
		"10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6",
		"10.0.0.8", "10.0.1.1", "fd00::", "fd00::1", "fd00::2", "fd00::3", "fd00::4", "fd00::5",
		"fd00::8", "fe80::ff:fe00:1", "fe80::ff:fe00:2", "fe80::ff:fe00:3", "fe80::ff:fe00:4",
		"fe80::1", "2001:db8::1",
	};
	enum { NVMS = 4, NGROUPS = 6 };
	size_t checked = 0, wrong = 0, excluded = 0;

	for (unsigned seed = 1; seed <= 120; seed++) {
		struct rnd_text rt;
		struct fixture fx;
		struct plan *pl;
		const struct pchain *out;

		rnd_text_begin(&rt, seed);
#define NEXT() lcg(&rt.x)
		fputs("[tags]\nnames = t0, t1\n", rt.f);
		for (int v = 1; v <= NVMS; v++) {
			unsigned k = NEXT() % 4; /* both families, IPv4, IPv6, learn */

			fprintf(rt.f, "[vm v%d]\nhost = hv1\nport = p%d\nmac = 02:00:00:00:00:0%d\n"
				"addresses = ", v, v, v);
			if (k < 2)
				fprintf(rt.f, "10.0.0.%d%s", v, k ? "" : ", ");
			if (k == 0 || k == 2)
				fprintf(rt.f, "fd00::%d", v);
			fputs(k == 3 ? "learn\n" : "\n", rt.f);
		}
		for (int g = 0; g < NGROUPS; g++) {
			bool some = false;
			int inc = -1;

			fprintf(rt.f, "[group g%d]\n", g);
			if (NEXT() % 2) {
				fprintf(rt.f, "match = tag equals t%u\n", NEXT() % 2);
				some = true;
			}
			if (NEXT() % 3 == 0) {
				fprintf(rt.f, "members = v%u\n", 1 + NEXT() % NVMS);
				some = true;
			}
			if (g && NEXT() % 2) {
				inc = (int)(NEXT() % (unsigned)g);
				fprintf(rt.f, "include = g%d\n", inc);
				some = true;
			}
			if (!some || NEXT() % 2) {
				unsigned a = NEXT() % ARRAY_SIZE(nets), b = NEXT() % ARRAY_SIZE(nets);

				fprintf(rt.f, "addresses = %s", nets[a]);
				if (b != a && NEXT() % 2)
					fprintf(rt.f, ", %s", nets[b]);
				fputc('\n', rt.f);
			}
			if (g && NEXT() % 2) {
				int x = (int)(NEXT() % (unsigned)g);

				if (x != inc)
					fprintf(rt.f, "exclude_groups = g%d\n", x);
			}
		}
		for (int g = 0; g < NGROUPS; g++)
			fprintf(rt.f, "[rule %d]\nsources = g%d\nservices = tcp/%d\naction = allow\n"
				"[rule %d]\nsources = not g%d\nservices = tcp/%d\naction = allow\n",
				2 * g + 1, g, 100 + 2 * g, 2 * g + 2, g, 101 + 2 * g);
		fclose(rt.f);
		fx = PARSE(rt.text);
		pl = COMPILE(&fx, "hv1");
		for (int v = 1; v <= NVMS; v++) {
			const char *tags[2];
			size_t n = 0;
			char name[8];

			if (NEXT() % 3 == 0)
				tags[n++] = "t0";
			if (NEXT() % 3 == 0)
				tags[n++] = "t1";
			snprintf(name, sizeof(name), "v%d", v);
			incremental_step(&fx, pl, name, tags, n, NULL);
		}
#undef NEXT
		out = plan_find_chain(pl, pl->ports[0].out_chain);
		CU_ASSERT_PTR_NOT_NULL_FATAL(out);
		for (size_t g = 0; g < NGROUPS; g++) {
			for (size_t i = 0; i < ARRAY_SIZE(probes); i++) {
				struct trace_pkt pk = { .proto = IPPROTO_TCP, .icmp_type = -1 };
				const char *why;
				bool in;

				CU_ASSERT_FATAL(addr_parse(probes[i], &pk.src, &why) == 0);
				addr_parse(pk.src.family == AF_INET ? "10.9.9.9" : "fd09::9", &pk.dst,
					   &why);
				in = ref_vm_addr(&fx, g, &pk.src) || ref_nets(&fx, g, &pk.src);
				excluded += !in && ref_in_nets(&fx, g, &pk.src) &&
					    !ref_vm_addr(&fx, g, &pk.src);
				for (uint32_t neg = 0; neg < 2; neg++) {
					uint32_t id = 2 * (uint32_t)g + 1 + neg;
					struct trace_step st;
					struct kanswer k = { 0, 99 };
					bool want = neg ? !in : in;

					pk.dport = (uint16_t)(100 + 2 * g + neg);
					trace_chain(pl, out, 1, 2, &pk, &st);
					kernel_chain(pl, out, 1, 2, &pk, &k);
					checked++;
					if ((st.rule_id == id) != want || k.rule_id != st.rule_id) {
						if (wrong++ < 5)
							fprintf(stderr, "\n  seed %u: %s is%s in g%zu, but "
								"sources = %sg%zu %s", seed, probes[i],
								in ? "" : " not", g, neg ? "not " : "", g,
								st.rule_id == id ? "matches" : "does not match");
					}
				}
			}
		}
		plan_free(pl);
		fixture_free(&fx);
		free(rt.text);
	}
	fprintf(stderr, "\n  [%zu addresses checked, %zu taken out of a group's networks by exclusion]",
		checked, excluded);
	CU_ASSERT_EQUAL(wrong, 0);
	CU_ASSERT(excluded >= 100); /* the test is about them too */
}

void register_compile_tests(void)
{
	static const struct unit_test tests[] = {
		{ "vdi untagged (golden)", test_vdi_untagged },
		{ "vdi desktop1 quarantined (golden)", test_vdi_quarantined },
		{ "a quarantine's sets: its own, then by size", test_quarantine_set_order },
		{ "a tag change only edits set elements", test_vdi_diff_tag },
		{ "bases of groups that exclude groups, incrementally", test_base_sets },
		{ "diff with itself, from and to nothing", test_diff_identity_and_full },
		{ "chain names are stable across compiles", test_names_stable },
		{ "applied_to, literals, reject, log, disabled (golden)", test_applied },
		{ "moving a VM between applied-to groups", test_applied_diff },
		{ "kernel set sizes: kept, and overfilled", test_set_sizes },
		{ "default allow, normalized sets (golden)", test_minimal },
		{ "uplinks in the port maps (golden)", test_uplinks },
		{ "literal sets are named by content", test_literal_sets_shared },
		{ "service sets merge and are shared", test_service_sets },
		{ "dispatch by port keeps every rule's meaning", test_dispatch_random },
		{ "factored runs keep every rule's meaning", test_factor_random },
		{ "only a product of outer and leaf rules is factored", test_factor_product_only },
		{ "long group names keep distinct sets", test_long_group_names },
		{ "negated sides, per family (golden)", test_negation },
		{ "not any matches nothing", test_negated_any },
		{ "ICMP types, protocols, ports, service objects (golden)", test_services },
		{ "monitor mode logs, counts, lets through (golden)", test_monitor },
		{ "named counters per rule and direction, in diffs", test_counters },
		{ "address learning ports (golden)", test_learning },
		{ "a VM's link-local address is its own in every set", test_link_local_member },
		{ "exclusion wins over a group's IP/CIDR members", test_net_exclusion },
		{ "groups match the addresses they hold, on random policies",
		  test_member_addrs_random },
	};

	unit_suite("compile", tests, ARRAY_SIZE(tests));
}
