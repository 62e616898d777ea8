/* Dispatch of a long policy chain by destination port (docs/DATAPLANE.md,
 * "Dispatch by port").
 *
 * A new flow walks its policy chain rule by rule.  Most rules of a large
 * policy test a TCP or UDP destination port, and a packet fails all but a
 * few of them on that port.  A run of such rules (a segment) is therefore
 * sent to the kernel, in its place in chain C, as
 *
 *	meta l4proto tcp th dport vmap @C.k.tcp    (an interval map: atom -> jump C.k.j)
 *	meta l4proto udp th dport vmap @C.k.udp
 *	…the run's rules of other protocols…
 *
 * where atom j of the segment is a port interval on which the same rules
 * of the run match, and its chain C.k.j holds just those rules, in order,
 * without their port and protocol tests (the map's key matched them).
 * When none of them decides, the packet returns to C after the maps and
 * goes on with the rules after the run.  Rules of one protocol other than
 * TCP and UDP (ICMP, proto/N) may sit in a run: no TCP or UDP packet can
 * match them, nor any other packet a port rule, so they follow the maps
 * in their order.  An out chain's allow is "return", which in an atom's
 * chain would return to C; there it is "goto admit" instead, the base
 * chain's part after the out-policy jump (dfw/layout.h).  A packet then
 * meets the rules outside the runs, two map lookups per run and the rules
 * of its own port: what a new flow costs no longer grows with the number
 * of rules for other ports.  The rules stay in order, so the first rule
 * that matches is the one it was without dispatch, and the chains nest
 * two deep whatever the number of runs.
 */
#include "dfw/compile.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

void disp_map_name(const struct pchain *c, size_t k, uint8_t proto, char *buf, size_t len)
{
	snprintf(buf, len, "%s.%zu.%s", c->name, k, proto == IPPROTO_TCP ? "tcp" : "udp");
}

void disp_atom_name(const struct pchain *c, size_t k, size_t j, char *buf, size_t len)
{
	snprintf(buf, len, "%s.%zu.%zu", c->name, k, j);
}

const uint8_t disp_protos[2] = { IPPROTO_TCP, IPPROTO_UDP };

const struct pdisp_seg *disp_seg_at(const struct pchain *c, size_t i)
{
	for (size_t k = 0; k < c->nsegs; k++)
		if (c->segs[k].first == i)
			return &c->segs[k];
	return NULL;
}

bool disp_has_proto(const struct pdisp_seg *s, uint8_t proto)
{
	for (size_t j = 0; j < s->natoms; j++)
		if (s->atoms[j].proto == proto)
			return true;
	return false;
}

/* Whether a protocol is one that dispatch keys on (it has ports). */
static bool ported(uint32_t proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

bool disp_item_implied(const struct pitem *it)
{
	return it->kind == PI_DPORT || it->kind == PI_DPORT_SET ||
	       (it->kind == PI_L4PROTO && ported(it->u));
}

/* The destination ports a rule tests: its protocol (0: the rule tests no
 * TCP or UDP port) and port ranges [lo, hi]. */
struct rule_ports {
	uint8_t proto;
	uint32_t (*ranges)[2];
	size_t n;
	bool other; /* matches another protocol only (disp_other_proto) */
};

bool disp_other_proto(const struct prule *r)
{
	for (size_t i = 0; i < r->nitems; i++)
		if (r->items[i].kind == PI_L4PROTO)
			return !ported(r->items[i].u);
	return false;
}

static void rule_ports(const struct plan *pl, const struct prule *r, struct rule_ports *rp)
{
	const struct pitem *port = NULL;

	memset(rp, 0, sizeof(*rp));
	rp->other = disp_other_proto(r);
	for (size_t i = 0; i < r->nitems; i++) {
		const struct pitem *it = &r->items[i];

		if (it->kind == PI_DPORT || it->kind == PI_DPORT_SET)
			port = it;
		else if (it->kind == PI_L4PROTO && ported(it->u))
			rp->proto = (uint8_t)it->u;
	}
	if (!port || !rp->proto) {
		rp->proto = 0;
		return;
	}
	if (port->kind == PI_DPORT) {
		rp->ranges = xcalloc(1, sizeof(*rp->ranges));
		rp->ranges[0][0] = port->lo;
		rp->ranges[0][1] = port->hi;
		rp->n = 1;
		return;
	}
	{
		const struct pset *s = plan_find_set(pl, port->name);

		if (!s)
			abort(); /* plan_compile made it */
		rp->ranges = xcalloc(s->nelems + 1, sizeof(*rp->ranges));
		for (size_t i = 0; i < s->nelems; i++) { /* lo, hi in network order */
			rp->ranges[i][0] = (uint32_t)(s->elems[i].a[0] << 8 | s->elems[i].a[1]);
			rp->ranges[i][1] = (uint32_t)(s->elems[i].a[2] << 8 | s->elems[i].a[3]);
		}
		rp->n = s->nelems;
	}
}

static int cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;

	return a < b ? -1 : a > b;
}

static bool same_rules(const struct pdisp_atom *a, const struct pdisp_atom *b)
{
	return a->nrules == b->nrules && !memcmp(a->rules, b->rules, a->nrules * sizeof(*a->rules));
}

/* The atoms of one protocol of segment [first, end), appended to s. */
static void seg_atoms(struct pdisp_seg *s, const struct rule_ports *rp, uint8_t proto)
{
	uint32_t *pts = NULL;
	struct pdisp_atom *iv;
	size_t npts = 0, cap = 0, n, first = s->natoms;

	for (size_t r = s->first; r < s->end; r++) {
		if (rp[r].proto != proto)
			continue;
		for (size_t i = 0; i < rp[r].n; i++) {
			grow((void **)&pts, &cap, npts + 2, sizeof(*pts));
			pts[npts++] = rp[r].ranges[i][0];
			pts[npts++] = rp[r].ranges[i][1] + 1;
		}
	}
	if (!npts)
		return;
	qsort(pts, npts, sizeof(*pts), cmp_u32);
	n = 1;
	for (size_t i = 1; i < npts; i++)
		if (pts[i] != pts[n - 1])
			pts[n++] = pts[i];
	npts = n;
	/* Elementary interval i is [pts[i], pts[i + 1]): every range starts
	 * and ends on a boundary, so it covers whole intervals. */
	iv = xcalloc(npts, sizeof(*iv));
	for (size_t r = s->first; r < s->end; r++) {
		if (rp[r].proto != proto)
			continue;
		for (size_t i = 0; i < rp[r].n; i++) {
			uint32_t lo = rp[r].ranges[i][0], hi = rp[r].ranges[i][1];
			const uint32_t *at = bsearch(&lo, pts, npts, sizeof(*pts), cmp_u32);

			for (size_t k = (size_t)(at - pts); k + 1 < npts && pts[k] <= hi; k++) {
				iv[k].rules = xrealloc(iv[k].rules, (iv[k].nrules + 1) * sizeof(size_t));
				iv[k].rules[iv[k].nrules++] = r;
			}
		}
	}
	s->atoms = xrealloc(s->atoms, (s->natoms + npts) * sizeof(*s->atoms));
	for (size_t k = 0; k + 1 < npts; k++) {
		struct pdisp_atom *prev = s->natoms > first ? &s->atoms[s->natoms - 1] : NULL;

		if (!iv[k].nrules)
			continue;
		/* Neighbours with the same rules are one atom. */
		if (prev && prev->hi + 1u == pts[k] && same_rules(prev, &iv[k])) {
			prev->hi = (uint16_t)(pts[k + 1] - 1);
			free(iv[k].rules);
			continue;
		}
		s->atoms[s->natoms++] = (struct pdisp_atom){ proto, (uint16_t)pts[k],
							     (uint16_t)(pts[k + 1] - 1), iv[k].rules,
							     iv[k].nrules };
	}
	free(iv);
	free(pts);
}

struct atom_key {
	uint64_t h;
	size_t j;
};

static int cmp_atom_key(const void *x, const void *y)
{
	const struct atom_key *a = x, *b = y;

	if (a->h != b->h)
		return a->h < b->h ? -1 : 1;
	return a->j < b->j ? -1 : a->j > b->j;
}

/* Atoms with the same rules (ports apart: tcp/443 and tcp/8443 of one
 * rule) enter one chain. */
static void share_chains(struct pdisp_seg *s)
{
	struct atom_key *keys = xcalloc(s->natoms + 1, sizeof(*keys));

	for (size_t j = 0; j < s->natoms; j++) {
		uint64_t h = 0xcbf29ce484222325ull;

		for (size_t i = 0; i < s->atoms[j].nrules; i++)
			h = (h ^ s->atoms[j].rules[i]) * 0x100000001b3ull;
		keys[j] = (struct atom_key){ h ^ s->atoms[j].nrules, j };
		s->atoms[j].chain = j;
	}
	qsort(keys, s->natoms, sizeof(*keys), cmp_atom_key);
	for (size_t i = 0, g; i < s->natoms; i = g) {
		for (g = i; g < s->natoms && keys[g].h == keys[i].h; g++)
			;
		/* The first of each group of equal rule lists in it names the
		 * chain (hash collisions form separate groups). */
		for (size_t a = i; a < g; a++) {
			struct pdisp_atom *at = &s->atoms[keys[a].j];

			for (size_t b = i; b < a; b++) {
				const struct pdisp_atom *first = &s->atoms[keys[b].j];

				if (first->chain == keys[b].j && same_rules(first, at)) {
					at->chain = keys[b].j;
					break;
				}
			}
		}
	}
	free(keys);
}

static int cmp_seg_len(const void *x, const void *y)
{
	const struct pdisp_seg *a = x, *b = y;
	size_t la = a->end - a->first, lb = b->end - b->first;

	if (la != lb)
		return la > lb ? -1 : 1;
	return a->first < b->first ? -1 : a->first > b->first;
}

static int cmp_seg_pos(const void *x, const void *y)
{
	const struct pdisp_seg *a = x, *b = y;

	return a->first < b->first ? -1 : a->first > b->first;
}

void chain_dispatch(const struct plan *pl, struct pchain *c)
{
	struct rule_ports *rp = xcalloc(c->nrules + 1, sizeof(*rp));
	size_t cap = 0;

	for (size_t r = 0; r < c->nrules; r++)
		rule_ports(pl, &c->rules[r], &rp[r]);
	/* The runs of port rules (with other-protocol rules among them) that
	 * have enough port rules, the DISP_MAX_SEGS longest in chain order. */
	for (size_t r = 0, end; r < c->nrules; r = end + 1) {
		size_t nport = 0;

		for (end = r; end < c->nrules && (rp[end].proto || rp[end].other); end++)
			nport += rp[end].proto != 0;
		if (nport < DISP_MIN_RULES)
			continue;
		grow((void **)&c->segs, &cap, c->nsegs + 1, sizeof(*c->segs));
		c->segs[c->nsegs++] = (struct pdisp_seg){ .first = r, .end = end };
	}
	if (c->nsegs > DISP_MAX_SEGS) {
		qsort(c->segs, c->nsegs, sizeof(*c->segs), cmp_seg_len);
		c->nsegs = DISP_MAX_SEGS;
		qsort(c->segs, c->nsegs, sizeof(*c->segs), cmp_seg_pos);
	}
	for (size_t k = 0; k < c->nsegs; k++) {
		seg_atoms(&c->segs[k], rp, IPPROTO_TCP);
		seg_atoms(&c->segs[k], rp, IPPROTO_UDP);
		share_chains(&c->segs[k]);
	}
	for (size_t r = 0; r < c->nrules; r++)
		free(rp[r].ranges);
	free(rp);
}

void dispatch_free(struct pchain *c)
{
	for (size_t k = 0; k < c->nsegs; k++) {
		for (size_t j = 0; j < c->segs[k].natoms; j++)
			free(c->segs[k].atoms[j].rules);
		free(c->segs[k].atoms);
	}
	free(c->segs);
	c->segs = NULL;
	c->nsegs = 0;
	fact_free_all(c);
}
