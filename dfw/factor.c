/* Factored runs of kernel rules (docs/DATAPLANE.md, "Factored rules").
 *
 * A policy rule compiles to the product of its sides' alternatives, its
 * services and families (dfw/compile.c): "sources = a, b; destinations =
 * c, d, e" is 2 x 3 kernel rules per family, each with every test.  The
 * kernel's work to load a rule grows with its expressions (it finds each
 * one's type by name: about 1.5 us an expression, measured here) and its
 * set lookups (each walks the table's sets).  So a run of one policy
 * rule's kernel rules that is such a product is sent as
 *
 *	…outer tests… ip saddr @a jump C.rID    (each distinct outer rule once)
 *	…outer tests… ip saddr @b jump C.rID
 *	chain C.rID: meta nfproto ipv4 ip daddr @c counter … accept
 *	             meta nfproto ipv4 ip daddr @d counter … accept  …
 *
 * a sum instead of a product.  The side the leaf chain tests is the one
 * that makes the run cheaper.  It is the same match: every rule of the run
 * has the same log, counter and verdict, so which of them matches first
 * changes nothing, and the run is every combination of its outer and leaf
 * rules that share a family, so a packet passes an outer rule and a leaf
 * rule exactly when it passes some rule of the run.  A packet the leaf
 * does not take returns to the next outer rule.  The leaf's verdicts end
 * the evaluation (an out chain's allow is "goto admit" there, as in an
 * atom's chain).  In a dispatched segment, the outer rules stand in the
 * atoms' chains and among the segment's other-protocol rules, and the
 * leaf once for all of them.
 *
 * The kernel walks every chain of the ruleset on every commit, a tag
 * change's too (about 75 ns a chain with cold caches, measured here), so
 * a chain factors at most FACT_MAX_CHAINS runs, those that save most.
 */
#include "dfw/compile.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define CHAIN_COST 20 /* a chain's own cost in rule_cost's units, measured: creating and
		       * validating it, and a commit walking it */

void fact_leaf_name(const struct pchain *c, const struct pfact *f, char *buf, size_t len)
{
	snprintf(buf, len, "%.40s.r%u", c->name, c->rules[f->first].rule_id);
}

static bool is_tail(enum pitem_kind k)
{
	return k == PI_LOG || k == PI_COUNTER || k == PI_VERDICT;
}

static bool is_side(enum pitem_kind k, bool src)
{
	return src ? k == PI_SADDR_SET || k == PI_SADDR_NET : k == PI_DADDR_SET || k == PI_DADDR_NET;
}

static bool item_eq(const struct pitem *a, const struct pitem *b)
{
	return a->kind == b->kind && a->u == b->u && a->lo == b->lo && a->hi == b->hi &&
	       !strcmp(a->name, b->name);
}

/* Items compared from the last: rules of a run differ most in their
 * sides, which come after their services and family. */
static bool rule_eq(const struct prule *a, const struct prule *b)
{
	if (a->nitems != b->nitems)
		return false;
	for (size_t i = a->nitems; i-- > 0;)
		if (!item_eq(&a->items[i], &b->items[i]))
			return false;
	return true;
}

/* Whether a and b end with the same log, counter and verdict. */
static bool same_tail(const struct prule *a, const struct prule *b)
{
	size_t i = a->nitems, j = b->nitems;

	while (i && j && is_tail(a->items[i - 1].kind) && is_tail(b->items[j - 1].kind))
		if (!item_eq(&a->items[--i], &b->items[--j]))
			return false;
	return !(i && is_tail(a->items[i - 1].kind)) && !(j && is_tail(b->items[j - 1].kind));
}

static uint32_t rule_family(const struct prule *r)
{
	for (size_t i = 0; i < r->nitems; i++)
		if (r->items[i].kind == PI_NFPROTO)
			return r->items[i].u;
	return 0;
}

static void push_item(struct prule *r, const struct pitem *it)
{
	r->items[r->nitems++] = *it;
}

/* Splits r into its outer rule (ending in a jump to leaf) and its leaf
 * rule, in item arrays of r->nitems + 1: the family goes to both, the
 * leaf side's tests and the tail to the leaf, the rest to the outer rule,
 * each in r's order. */
static void split_rule(const struct prule *r, bool leaf_src, const char *leaf,
		       struct prule *outer, struct prule *in)
{
	struct pitem jump = { .kind = PI_JUMP };

	outer->rule_id = in->rule_id = r->rule_id;
	outer->nitems = in->nitems = 0;
	for (size_t i = 0; i < r->nitems; i++) {
		const struct pitem *it = &r->items[i];
		bool to_leaf = is_tail(it->kind) || is_side(it->kind, leaf_src);

		if (it->kind == PI_NFPROTO || !to_leaf)
			push_item(outer, it);
		if (it->kind == PI_NFPROTO || to_leaf)
			push_item(in, it);
	}
	plan_name_copy(jump.name, leaf);
	push_item(outer, &jump);
}

/* Distinct rules (a run has few distinct outer and leaf rules). */
struct rule_list {
	struct prule *r;
	size_t n;
};

/* The index of r in l, with a copy of r appended when it is new. */
static size_t intern(struct rule_list *l, const struct prule *r)
{
	for (size_t i = 0; i < l->n; i++)
		if (rule_eq(&l->r[i], r))
			return i;
	l->r = xrealloc(l->r, (l->n + 1) * sizeof(*l->r));
	l->r[l->n] = (struct prule){ r->rule_id, xcalloc(r->nitems, sizeof(*r->items)), r->nitems };
	memcpy(l->r[l->n].items, r->items, r->nitems * sizeof(*r->items));
	return l->n++;
}

static void fact_free(struct pfact *f)
{
	for (size_t i = 0; i < f->nouter; i++)
		free(f->outer[i].items);
	for (size_t i = 0; i < f->nleaf; i++)
		free(f->leaf[i].items);
	free(f->outer);
	free(f->leaf);
	free(f->outer_of);
	memset(f, 0, sizeof(*f));
}

/* Builds the factored form of run [first, end) of c with the leaf testing
 * the sources (leaf_src) or the destinations.  False (f freed) unless
 * the run is every combination of its outer and leaf rules of one family
 * (a rule of no family combines with every other). */
static bool build(const struct pchain *c, size_t first, size_t end, bool leaf_src,
		  struct pfact *f)
{
	size_t n = end - first, *leaf_of = xcalloc(n, sizeof(*leaf_of)), pairs = 0, combos = 0;
	size_t most = 0;
	struct rule_list outer = { 0 }, leaf = { 0 };
	struct prule o, l;
	char name[PLAN_NAME_MAX];
	uint32_t *fam; /* per leaf rule: its family */
	bool *have;

	*f = (struct pfact){ .first = first, .end = end, .leaf_src = leaf_src };
	f->outer_of = xcalloc(n, sizeof(*f->outer_of));
	fact_leaf_name(c, f, name, sizeof(name));
	for (size_t i = first; i < end; i++)
		most = c->rules[i].nitems > most ? c->rules[i].nitems : most;
	o.items = xcalloc(most + 1, sizeof(*o.items));
	l.items = xcalloc(most + 1, sizeof(*l.items));
	for (size_t i = 0; i < n; i++) {
		split_rule(&c->rules[first + i], leaf_src, name, &o, &l);
		f->outer_of[i] = intern(&outer, &o);
		leaf_of[i] = intern(&leaf, &l);
	}
	free(o.items);
	free(l.items);
	f->outer = outer.r;
	f->nouter = outer.n;
	f->leaf = leaf.r;
	f->nleaf = leaf.n;
	have = xcalloc(f->nouter * f->nleaf, sizeof(*have));
	for (size_t i = 0; i < n; i++) {
		bool *h = &have[f->outer_of[i] * f->nleaf + leaf_of[i]];

		pairs += !*h;
		*h = true;
	}
	fam = xcalloc(f->nleaf, sizeof(*fam));
	for (size_t k = 0; k < f->nleaf; k++)
		fam[k] = rule_family(&f->leaf[k]);
	for (size_t i = 0; i < f->nouter; i++) {
		uint32_t fo = rule_family(&f->outer[i]);

		for (size_t k = 0; k < f->nleaf; k++)
			combos += !fo || !fam[k] || fo == fam[k];
	}
	free(fam);
	free(have);
	free(leaf_of);
	if (pairs == combos)
		return true;
	fact_free(f);
	return false;
}

/* What the kernel spends on loading a rule, in rough units of one
 * expression: one per expression (an address loaded once for consecutive
 * lookups, as the backend sends it), two more per set lookup (the walk
 * of the table's sets), one for the rule itself; in an atom's chain
 * without the tests its map's key implies. */
static long rule_cost(const struct prule *r, bool atom)
{
	enum pitem_kind held = PI_VERDICT;
	long n = 1;

	for (size_t i = 0; i < r->nitems; i++) {
		const struct pitem *it = &r->items[i];

		if (atom && disp_item_implied(it))
			continue;
		switch (it->kind) {
		case PI_SADDR_SET:
		case PI_DADDR_SET:
			n += (held == it->kind ? 1 : 2) + 2;
			held = it->kind;
			continue;
		case PI_PORT_SET:
		case PI_DPORT_SET:
			n += 4;
			break;
		case PI_SADDR_NET:
		case PI_DADDR_NET:
			n += 3;
			break;
		case PI_LOG:
		case PI_COUNTER:
		case PI_VERDICT:
		case PI_JUMP:
			n += 1;
			break;
		default:
			n += 2;
			break;
		}
		held = PI_VERDICT;
	}
	return n;
}

/* The costs of a chain's rules and of a run's outer rules, in the chain
 * itself ([0]) and in an atom's chain ([1]); seen: a place's outer rules
 * already counted. */
struct costs {
	long (*rule)[2];
	long (*outer)[2];
	bool *seen;
};

/* The index of the first of sorted v[0..n) that is at least x. */
static size_t lower_bound(const size_t *v, size_t n, size_t x)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v[mid] < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The cost of the rules of run f among idx[0..n) (sorted) in one place,
 * as they are and as f's outer rules. */
static void place_cost(const struct pfact *f, const size_t *idx, size_t n, bool atom,
		       struct costs *k, long *flat, long *fact)
{
	memset(k->seen, 0, f->nouter * sizeof(*k->seen));
	for (size_t i = lower_bound(idx, n, f->first); i < n && idx[i] < f->end; i++) {
		size_t o = f->outer_of[idx[i] - f->first];

		*flat += k->rule[idx[i]][atom];
		if (!k->seen[o])
			*fact += k->outer[o][atom];
		k->seen[o] = true;
	}
}

/* What factoring run f saves, over every place its rules stand in. */
static long savings(const struct pchain *c, const struct pfact *f, struct costs *k)
{
	const struct pdisp_seg *s = NULL;
	long flat = 0, fact = CHAIN_COST;
	size_t n = f->end - f->first, *idx = xcalloc(n, sizeof(*idx)), m = 0;

	k->outer = xcalloc(f->nouter, sizeof(*k->outer));
	k->seen = xcalloc(f->nouter, sizeof(*k->seen));
	for (size_t o = 0; o < f->nouter; o++)
		for (int atom = 0; atom < 2; atom++)
			k->outer[o][atom] = rule_cost(&f->outer[o], atom);
	for (size_t g = 0; g < c->nsegs; g++)
		if (c->segs[g].first <= f->first && f->first < c->segs[g].end)
			s = &c->segs[g];
	for (size_t r = f->first; r < f->end; r++) /* in the chain itself */
		if (!s || disp_other_proto(&c->rules[r]))
			idx[m++] = r;
	place_cost(f, idx, m, false, k, &flat, &fact);
	for (size_t j = 0; s && j < s->natoms; j++)
		if (s->atoms[j].chain == j)
			place_cost(f, s->atoms[j].rules, s->atoms[j].nrules, true, k, &flat, &fact);
	for (size_t l = 0; l < f->nleaf; l++)
		fact += rule_cost(&f->leaf[l], true);
	free(k->outer);
	free(k->seen);
	free(idx);
	return flat - fact;
}

/* Whether run [first, end) lies inside one segment or outside all. */
static bool run_placed(const struct pchain *c, size_t first, size_t end)
{
	for (size_t k = 0; k < c->nsegs; k++) {
		const struct pdisp_seg *s = &c->segs[k];
		bool in_first = first >= s->first && first < s->end;
		bool in_last = end - 1 >= s->first && end - 1 < s->end;

		if (in_first != in_last)
			return false;
	}
	return true;
}

struct cand {
	struct pfact f;
	long save;
};

static int cmp_save(const void *x, const void *y)
{
	const struct cand *a = x, *b = y;

	if (a->save != b->save)
		return a->save > b->save ? -1 : 1;
	return a->f.first < b->f.first ? -1 : a->f.first > b->f.first;
}

static int cmp_first(const void *x, const void *y)
{
	const struct pfact *a = x, *b = y;

	return a->first < b->first ? -1 : a->first > b->first;
}

/* The better of a run's two factored forms, when it saves anything. */
static bool best_form(const struct pchain *c, size_t first, size_t end, struct costs *costs,
		      struct cand *out)
{
	bool found = false;

	for (int leaf_src = 0; leaf_src < 2; leaf_src++) {
		struct cand k;

		if (!build(c, first, end, leaf_src, &k.f))
			continue;
		k.save = savings(c, &k.f, costs);
		if (k.save > 0 && (!found || k.save > out->save)) {
			if (found)
				fact_free(&out->f);
			*out = k;
			found = true;
		} else {
			fact_free(&k.f);
		}
	}
	return found;
}

void chain_factor(struct pchain *c)
{
	struct costs costs = { xcalloc(c->nrules + 1, sizeof(*costs.rule)), NULL, NULL };
	struct cand *cands = NULL;
	size_t n = 0, cap = 0;

	for (size_t r = 0; r < c->nrules; r++)
		for (int atom = 0; atom < 2; atom++)
			costs.rule[r][atom] = rule_cost(&c->rules[r], atom);

	for (size_t first = 0, end; first < c->nrules; first = end) {
		bool tails = true;

		for (end = first + 1; end < c->nrules && c->rules[end].rule_id == c->rules[first].rule_id;
		     end++)
			tails &= same_tail(&c->rules[first], &c->rules[end]);
		if (!c->rules[first].rule_id || end - first < 2 || !tails ||
		    !run_placed(c, first, end))
			continue;
		grow((void **)&cands, &cap, n + 1, sizeof(*cands));
		n += best_form(c, first, end, &costs, &cands[n]);
	}
	if (n > 1)
		qsort(cands, n, sizeof(*cands), cmp_save);
	for (size_t i = FACT_MAX_CHAINS; i < n; i++)
		fact_free(&cands[i].f);
	if (n > FACT_MAX_CHAINS)
		n = FACT_MAX_CHAINS;
	c->facts = xcalloc(n + 1, sizeof(*c->facts));
	for (size_t i = 0; i < n; i++)
		c->facts[i] = cands[i].f;
	c->nfacts = n;
	qsort(c->facts, n, sizeof(*c->facts), cmp_first);
	free(cands);
	free(costs.rule);
}

void fact_free_all(struct pchain *c)
{
	for (size_t i = 0; i < c->nfacts; i++)
		fact_free(&c->facts[i]);
	free(c->facts);
	c->facts = NULL;
	c->nfacts = 0;
}

static const struct pfact *fact_at(const struct pchain *c, size_t i)
{
	size_t lo = 0, hi = c->nfacts;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c->facts[mid].end <= i)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < c->nfacts && c->facts[lo].first <= i ? &c->facts[lo] : NULL;
}

const struct prule *kwalk_rule(struct kwalk *w, const struct pchain *c, size_t i)
{
	const struct pfact *f = fact_at(c, i);
	size_t o;

	if (!f)
		return &c->rules[i];
	if (f != w->f) {
		grow((void **)&w->seen, &w->cap, f->nouter, sizeof(*w->seen));
		memset(w->seen, 0, f->nouter * sizeof(*w->seen));
		w->f = f;
	}
	o = f->outer_of[i - f->first];
	if (w->seen[o])
		return NULL;
	w->seen[o] = true;
	return &f->outer[o];
}

void kwalk_free(struct kwalk *w)
{
	free(w->seen);
	memset(w, 0, sizeof(*w));
}
