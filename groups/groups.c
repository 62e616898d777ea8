/* Membership engine: evaluates every group once at start-up, 64 VMs at a time,
 * then keeps membership current one VM tag change at a time, touching only the
 * groups that can see the changed tags and the groups nested above them. */
#include "groups/groups.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Case-insensitive interning: each distinct lower-cased spelling gets a dense
 * id, so a VM's tag set is a small sorted array of integers and the tag index
 * is a plain array indexed by id. */
struct intern {
	char **strs;     /* id -> lower-case copy */
	size_t n, cap;
	uint32_t *slots; /* open addressing: id + 1, or 0 when free */
	size_t nslots;   /* a power of two, at least twice n */
};

/* A list of group indexes. */
struct glist {
	size_t *v;
	size_t n, cap;
};

/* Part of a group's IP/CIDR members: addresses that the same groups
 * exclude (gengine_net_part). */
struct net_part {
	struct dfw_addr *addrs; /* sorted, unique */
	size_t naddrs, cap;
	size_t *excl;           /* group indexes, sorted, unique */
	size_t nexcl;
};

struct gstate {
	size_t rank;   /* position in gengine.order */
	size_t count;  /* VM members */
	bool queued;   /* waiting in the set_tags heap */
	/* Sorted copies of the static lists, for one-VM lookups. */
	size_t *members, nmembers;
	size_t *xmembers, nxmembers;
	struct dfw_addr *addrs; /* effective IP/CIDR members, sorted, unique */
	size_t naddrs;
	struct net_part *nets;  /* the same by what excludes them (gengine_net_part) */
	size_t nnets;
	struct glist users; /* groups that include or exclude this one */
	bool tag_driven;    /* a tag change can change its members */
	bool base_tag_driven; /* ...its base's (includes, criteria) */
	bool iso_driven;    /* a change to an isolation group's members can
			     * change its members (gengine_follows_isolation) */
	bool base_iso_driven; /* ...its base's (through what it includes) */
	bool isolation;     /* an isolation group itself (gengine_is_isolation) */
	size_t base;        /* its base bitset (gengine_has_base), or NO_BASE */
	/* Per included group: its base counts in this group's, because it
	 * excludes no group this one does not (the exclusion happens here). */
	bool *inc_base;
};

#define NO_BASE SIZE_MAX

struct tagset {
	uint32_t *ids; /* sorted, unique */
	size_t n, cap;
};

struct delta {
	size_t group;
	bool joined, base;
};

struct gengine {
	const struct inventory *inv;
	struct gstate *gs;
	size_t *order;    /* groups, every group after those it depends on */
	size_t nwords;    /* 64-bit words per membership bitset */
	uint64_t *bits;   /* one bitset per group; VM i is bit i */
	uint64_t *base_bits; /* one per group with a base, in gs.base order */
	size_t nbase;
	struct tagset *vmtags;
	struct intern tags;
	/* Groups whose criteria depend only on whether a VM carries one of a
	 * few tags, by tag id; and those that any tag change may affect. */
	struct glist *by_tag;
	size_t nby_tag, by_tag_cap;
	struct glist any_tag;
	/* Scratch of gengine_set_tags, kept so that a delta does not allocate. */
	size_t *heap; /* ranks of queued groups, a binary min-heap */
	size_t nheap;
	uint32_t *ids, *diff;
	size_t ids_cap, diff_cap;
	const char **strs;
	size_t strs_cap;
	struct delta *deltas;
	size_t deltas_cap;
};

/* ---- matching ---------------------------------------------------------- */

static bool contains_nocase(const char *s, const char *value)
{
	for (; *s; s++) {
		size_t k = 0;

		while (value[k] && tolower((unsigned char)s[k]) ==
				   tolower((unsigned char)value[k]))
			k++;
		if (!value[k])
			return true;
	}
	return !*value;
}

/* NOT_EQUALS is answered as EQUALS: what its negation means depends on the
 * field, see cond_holds(). */
static bool text_match(enum cond_op op, const char *s, const char *value)
{
	size_t ls, lv;

	switch (op) {
	case OP_EQUALS:
	case OP_NOT_EQUALS:
		return !strcasecmp(s, value);
	case OP_CONTAINS:
		return contains_nocase(s, value);
	case OP_STARTS_WITH:
		return !strncasecmp(s, value, strlen(value));
	case OP_ENDS_WITH:
		ls = strlen(s);
		lv = strlen(value);
		return ls >= lv && !strcasecmp(s + ls - lv, value);
	}
	abort();
}

/* One tag against a tag condition's value.  Both may carry a scope,
 * "scope|tag" (split at the first '|').  A value with a scope needs the
 * tag's scope to be the same, and then an empty tag part ("scope|") means
 * any tag of that scope; a value without one is compared with the tag part
 * of every tag, whatever its scope ("finance" matches "dept|finance"). */
static bool tag_match(enum cond_op op, const char *tag, const char *value)
{
	const char *vbar = strchr(value, '|'), *tbar = strchr(tag, '|');
	const char *part = tbar ? tbar + 1 : tag;
	size_t scope_len;

	if (!vbar)
		return text_match(op, part, value);
	scope_len = (size_t)(vbar - value);
	if (!tbar || (size_t)(tbar - tag) != scope_len || strncasecmp(tag, value, scope_len))
		return false;
	return !vbar[1] || text_match(op, part, vbar + 1);
}

static bool cond_holds(const struct cond *c, const struct vm *vm,
		       const char *const *tags, size_t ntags)
{
	bool negate = c->op == OP_NOT_EQUALS;

	switch (c->field) {
	case COND_NAME:
		return text_match(c->op, vm->name, c->value) != negate;
	case COND_OS:
		return text_match(c->op, vm->os ? vm->os : "", c->value) != negate;
	case COND_TAG:
		for (size_t i = 0; i < ntags; i++)
			if (tag_match(c->op, tags[i], c->value))
				return !negate;
		return negate;
	}
	abort();
}

bool criteria_match(const struct criterion *c, size_t n, const struct vm *vm,
		    const char *const *tags, size_t ntags)
{
	for (size_t i = 0; i < n; i++) {
		size_t j = 0;

		/* An empty criterion matches nothing: a slip in a config must
		 * not put every VM into a group.  criteria_bulk() agrees. */
		if (!c[i].nconds)
			continue;
		while (j < c[i].nconds && cond_holds(&c[i].conds[j], vm, tags, ntags))
			j++;
		if (j == c[i].nconds)
			return true;
	}
	return false;
}

/* ---- small containers -------------------------------------------------- */

/* Hashes the first len characters of s. */
static uint64_t hash_nocase(const char *s, size_t len)
{
	uint64_t h = 14695981039346656037ull; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (uint64_t)tolower((unsigned char)s[i]);
		h *= 1099511628211ull;
	}
	return h;
}

/* The slot of the first len characters of s: theirs, or the free one where
 * they would go. */
static size_t intern_slot_n(const struct intern *t, const char *s, size_t len)
{
	size_t mask = t->nslots - 1, i = (size_t)hash_nocase(s, len) & mask;

	while (t->slots[i] && (strncasecmp(t->strs[t->slots[i] - 1], s, len) ||
			       t->strs[t->slots[i] - 1][len]))
		i = (i + 1) & mask;
	return i;
}

static size_t intern_slot(const struct intern *t, const char *s)
{
	return intern_slot_n(t, s, strlen(s));
}

/* The id of the first len characters of s, without interning them; UINT32_MAX
 * when they have none. */
static uint32_t intern_find(const struct intern *t, const char *s, size_t len)
{
	size_t i;

	if (!t->nslots)
		return UINT32_MAX;
	i = intern_slot_n(t, s, len);
	return t->slots[i] ? t->slots[i] - 1 : UINT32_MAX;
}

static uint32_t intern_id(struct intern *t, const char *s)
{
	size_t i;
	char *copy;

	if ((t->n + 1) * 2 > t->nslots) {
		free(t->slots);
		t->nslots = t->nslots ? t->nslots * 2 : 16;
		t->slots = xcalloc(t->nslots, sizeof(*t->slots));
		for (size_t id = 0; id < t->n; id++)
			t->slots[intern_slot(t, t->strs[id])] = (uint32_t)(id + 1);
	}
	i = intern_slot(t, s);
	if (t->slots[i])
		return t->slots[i] - 1;
	copy = xstrdup(s);
	str_lower(copy);
	grow((void **)&t->strs, &t->cap, t->n + 1, sizeof(*t->strs));
	t->strs[t->n++] = copy;
	t->slots[i] = (uint32_t)t->n;
	return (uint32_t)(t->n - 1);
}

static void intern_free(struct intern *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->strs[i]);
	free(t->strs);
	free(t->slots);
}

/* Appends g unless it is already last: callers add one group's entries
 * together, so this is enough to keep lists free of duplicates. */
static void glist_add_once(struct glist *l, size_t g)
{
	if (l->n && l->v[l->n - 1] == g)
		return;
	grow((void **)&l->v, &l->cap, l->n + 1, sizeof(*l->v));
	l->v[l->n++] = g;
}

static int size_cmp(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

static int u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int addr_qcmp(const void *a, const void *b)
{
	return addr_cmp(a, b);
}

static size_t *sorted_copy(const size_t *v, size_t n)
{
	size_t *copy;

	if (!n)
		return NULL;
	copy = xmalloc(n * sizeof(*copy));
	memcpy(copy, v, n * sizeof(*copy));
	qsort(copy, n, sizeof(*copy), size_cmp);
	return copy;
}

static bool in_sorted(const size_t *v, size_t n, size_t x)
{
	return n && bsearch(&x, v, n, sizeof(*v), size_cmp);
}

static uint64_t *group_bits(const struct gengine *e, size_t g)
{
	return e->bits + g * e->nwords;
}

static uint64_t *base_bits(const struct gengine *e, size_t g)
{
	return e->base_bits + e->gs[g].base * e->nwords;
}

static void fill_ones(const struct gengine *e, uint64_t *b)
{
	size_t tail = e->inv->nvms % 64;

	memset(b, 0xff, e->nwords * sizeof(*b));
	if (tail)
		b[e->nwords - 1] = (1ull << tail) - 1;
}

static void bit_set(uint64_t *b, size_t i)
{
	b[i / 64] |= 1ull << (i % 64);
}

/* ---- the membership rule ---------------------------------------------- */

/* The one statement of the rule, for the 64 VMs of word w: a VM is a member
 * when it is matched, listed or in an included group, and no exclusion
 * applies.  direct and excluded carry what the group's own criteria and lists
 * say; nested groups are read from their (already current) bitsets.  *base
 * gets the members before the exclusion by groups (gengine_has_base). */
static uint64_t combine(const struct gengine *e, size_t g, size_t w, uint64_t direct,
			uint64_t excluded, uint64_t *base)
{
	const struct group_def *gd = &e->inv->groups[g];
	const bool *inc_base = e->gs[g].inc_base;
	uint64_t xgroups = 0;

	for (size_t i = 0; i < gd->nincludes; i++)
		direct |= (inc_base && inc_base[i] ? base_bits(e, gd->includes[i]) :
			   group_bits(e, gd->includes[i]))[w];
	for (size_t i = 0; i < gd->nexclude_groups; i++)
		xgroups |= group_bits(e, gd->exclude_groups[i])[w];
	*base = direct & ~excluded;
	return *base & ~xgroups;
}

/* Whether one VM, carrying tags, belongs to group g (and to its base). */
static bool eval_vm(const struct gengine *e, size_t g, size_t v,
		    const char *const *tags, size_t ntags, bool *in_base)
{
	const struct group_def *gd = &e->inv->groups[g];
	const struct gstate *gs = &e->gs[g];
	const struct vm *vm = &e->inv->vms[v];
	uint64_t bit = 1ull << (v % 64), direct = 0, excluded = 0, base;
	bool in;

	if (in_sorted(gs->members, gs->nmembers, v) ||
	    criteria_match(gd->match, gd->nmatch, vm, tags, ntags))
		direct = bit;
	if (in_sorted(gs->xmembers, gs->nxmembers, v) ||
	    criteria_match(gd->exclude_match, gd->nexclude_match, vm, tags, ntags))
		excluded = bit;
	in = combine(e, g, v / 64, direct, excluded, &base) & bit;
	*in_base = base & bit;
	return in;
}

/* ---- first evaluation, every VM untagged -------------------------------- */

struct named {
	const char *name;
	size_t vm;
};

static int named_cmp(const void *a, const void *b)
{
	return strcasecmp(((const struct named *)a)->name,
			  ((const struct named *)b)->name);
}

/* Indexes that let the first evaluation look at candidates instead of every
 * VM, and scratch bitsets.  Indexes are built only when a condition uses them. */
struct bulk {
	struct named *by_name; /* sorted by name, ignoring case */
	struct intern os;      /* distinct OS spellings */
	size_t *os_off;        /* VMs of OS id i: os_vms[os_off[i] .. os_off[i+1]) */
	size_t *os_vms;
	uint64_t *direct, *excluded, *acc, *cond;
};

/* Fills out with the VMs for which c holds, all of them untagged. */
static void cond_bulk(const struct gengine *e, const struct bulk *b,
		      const struct cond *c, uint64_t *out)
{
	const struct vm *vms = e->inv->vms;
	size_t nvms = e->inv->nvms, lo, hi, lv;

	memset(out, 0, e->nwords * sizeof(*out));
	switch (c->field) {
	case COND_TAG:
		/* With no tags anywhere, any one VM answers for all. */
		if (cond_holds(c, &vms[0], NULL, 0))
			fill_ones(e, out);
		return;
	case COND_OS:
		/* Comparisons ignore case, so one VM per distinct spelling
		 * answers for every VM with that OS. */
		for (size_t id = 0; id < b->os.n; id++) {
			const size_t *v = b->os_vms + b->os_off[id];
			const size_t *end = b->os_vms + b->os_off[id + 1];

			if (cond_holds(c, &vms[*v], NULL, 0))
				for (; v < end; v++)
					bit_set(out, *v);
		}
		return;
	case COND_NAME:
		break;
	}
	if (c->op != OP_EQUALS && c->op != OP_STARTS_WITH) {
		for (size_t v = 0; v < nvms; v++)
			if (cond_holds(c, &vms[v], NULL, 0))
				bit_set(out, v);
		return;
	}
	/* Only names that start with the value can equal it or start with it:
	 * they form one run of the sorted names. */
	lv = strlen(c->value);
	lo = 0;
	hi = nvms;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strncasecmp(b->by_name[mid].name, c->value, lv) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < nvms && !strncasecmp(b->by_name[lo].name, c->value, lv); lo++)
		if (cond_holds(c, &vms[b->by_name[lo].vm], NULL, 0))
			bit_set(out, b->by_name[lo].vm);
}

static void criteria_bulk(const struct gengine *e, struct bulk *b,
			  const struct criterion *c, size_t n, uint64_t *out)
{
	memset(out, 0, e->nwords * sizeof(*out));
	for (size_t i = 0; i < n; i++) {
		if (!c[i].nconds)
			continue; /* matches nothing, as in criteria_match() */
		fill_ones(e, b->acc);
		for (size_t j = 0; j < c[i].nconds; j++) {
			cond_bulk(e, b, &c[i].conds[j], b->cond);
			for (size_t w = 0; w < e->nwords; w++)
				b->acc[w] &= b->cond[w];
		}
		for (size_t w = 0; w < e->nwords; w++)
			out[w] |= b->acc[w];
	}
}

static void list_bulk(const size_t *v, size_t n, uint64_t *out)
{
	for (size_t i = 0; i < n; i++)
		bit_set(out, v[i]);
}

static void bulk_index(struct bulk *b, const struct inventory *inv)
{
	bool by_name = false, by_os = false;
	size_t *os_of;

	for (size_t g = 0; g < inv->ngroups; g++) {
		const struct group_def *gd = &inv->groups[g];

		for (size_t k = 0; k < 2; k++) {
			const struct criterion *c = k ? gd->exclude_match : gd->match;
			size_t n = k ? gd->nexclude_match : gd->nmatch;

			for (size_t i = 0; i < n; i++) {
				for (size_t j = 0; j < c[i].nconds; j++) {
					const struct cond *cd = &c[i].conds[j];

					by_os |= cd->field == COND_OS;
					by_name |= cd->field == COND_NAME &&
						   (cd->op == OP_EQUALS ||
						    cd->op == OP_STARTS_WITH);
				}
			}
		}
	}
	if (by_name) {
		b->by_name = xmalloc(inv->nvms * sizeof(*b->by_name));
		for (size_t v = 0; v < inv->nvms; v++)
			b->by_name[v] = (struct named){ inv->vms[v].name, v };
		qsort(b->by_name, inv->nvms, sizeof(*b->by_name), named_cmp);
	}
	if (by_os) {
		os_of = xmalloc(inv->nvms * sizeof(*os_of));
		for (size_t v = 0; v < inv->nvms; v++)
			os_of[v] = intern_id(&b->os, inv->vms[v].os ? inv->vms[v].os : "");
		/* Counting sort of the VMs by OS id. */
		b->os_off = xcalloc(b->os.n + 1, sizeof(*b->os_off));
		b->os_vms = xmalloc(inv->nvms * sizeof(*b->os_vms));
		for (size_t v = 0; v < inv->nvms; v++)
			b->os_off[os_of[v] + 1]++;
		for (size_t id = 0; id < b->os.n; id++)
			b->os_off[id + 1] += b->os_off[id];
		for (size_t v = 0; v < inv->nvms; v++)
			b->os_vms[b->os_off[os_of[v]]++] = v;
		for (size_t id = b->os.n; id > 0; id--)
			b->os_off[id] = b->os_off[id - 1];
		b->os_off[0] = 0;
		free(os_of);
	}
}

static void evaluate_all(struct gengine *e)
{
	const struct inventory *inv = e->inv;
	struct bulk b = { 0 };

	if (!inv->nvms)
		return;
	bulk_index(&b, inv);
	b.direct = xmalloc(4 * e->nwords * sizeof(*b.direct));
	b.excluded = b.direct + e->nwords;
	b.acc = b.excluded + e->nwords;
	b.cond = b.acc + e->nwords;
	for (size_t r = 0; r < inv->ngroups; r++) {
		size_t g = e->order[r];
		const struct group_def *gd = &inv->groups[g];
		uint64_t *out = group_bits(e, g), base;
		size_t count = 0;

		criteria_bulk(e, &b, gd->match, gd->nmatch, b.direct);
		list_bulk(gd->members, gd->nmembers, b.direct);
		criteria_bulk(e, &b, gd->exclude_match, gd->nexclude_match, b.excluded);
		list_bulk(gd->exclude_members, gd->nexclude_members, b.excluded);
		for (size_t w = 0; w < e->nwords; w++) {
			out[w] = combine(e, g, w, b.direct[w], b.excluded[w], &base);
			count += (size_t)__builtin_popcountll(out[w]);
			if (e->gs[g].base != NO_BASE)
				base_bits(e, g)[w] = base;
		}
		e->gs[g].count = count;
	}
	free(b.direct);
	free(b.by_name);
	intern_free(&b.os);
	free(b.os_off);
	free(b.os_vms);
}

/* ---- construction ------------------------------------------------------ */

static bool refs_valid(const struct group_def *gd, const char *what,
		       const size_t *v, size_t n, size_t limit,
		       const char *file, struct diag *d)
{
	for (size_t i = 0; i < n; i++) {
		if (v[i] >= limit) {
			diag_add(d, file, gd->line,
				 "group %s: %s index %zu out of range (%zu defined)",
				 gd->name, what, v[i], limit);
			return false;
		}
	}
	return true;
}

static bool inventory_valid(const struct inventory *inv, const char *file,
			    struct diag *d)
{
	size_t nv = inv->nvms, ng = inv->ngroups;
	bool ok = true;

	for (size_t g = 0; g < ng; g++) {
		const struct group_def *gd = &inv->groups[g];

		ok &= refs_valid(gd, "members", gd->members, gd->nmembers, nv, file, d);
		ok &= refs_valid(gd, "exclude_members", gd->exclude_members,
				 gd->nexclude_members, nv, file, d);
		ok &= refs_valid(gd, "includes", gd->includes, gd->nincludes, ng, file, d);
		ok &= refs_valid(gd, "exclude_groups", gd->exclude_groups,
				 gd->nexclude_groups, ng, file, d);
	}
	return ok;
}

/* The i-th group gd depends on: includes, then exclude_groups. */
static size_t dep_at(const struct group_def *gd, size_t i)
{
	return i < gd->nincludes ? gd->includes[i]
				 : gd->exclude_groups[i - gd->nincludes];
}

/* Reports the cycle path[0..len) -> path[0], at the line of path[0]. */
static void report_cycle(const struct inventory *inv, const size_t *path,
			 size_t len, const char *file, struct diag *d)
{
	const struct group_def *first = &inv->groups[path[0]];
	size_t size = strlen(first->name) + 1, off = 0;
	char *buf;

	for (size_t i = 0; i < len; i++)
		size += strlen(inv->groups[path[i]].name) + 4;
	buf = xmalloc(size);
	for (size_t i = 0; i < len; i++)
		off += (size_t)snprintf(buf + off, size - off, "%s -> ",
					inv->groups[path[i]].name);
	snprintf(buf + off, size - off, "%s", first->name);
	diag_add(d, file, first->line, "group %s: cycle %s", first->name, buf);
	free(buf);
}

struct sort_ctx {
	struct gengine *e;
	size_t norder;
	const char *file;
	struct diag *d;
};

static size_t group_degree(void *arg, size_t g)
{
	const struct group_def *gd = &((struct sort_ctx *)arg)->e->inv->groups[g];

	return gd->nincludes + gd->nexclude_groups;
}

static size_t group_edge(void *arg, size_t g, size_t k)
{
	return dep_at(&((struct sort_ctx *)arg)->e->inv->groups[g], k);
}

static void group_done(void *arg, size_t g)
{
	struct sort_ctx *c = arg;

	c->e->order[c->norder++] = g;
}

static void group_cycle(void *arg, const size_t *path, size_t len)
{
	struct sort_ctx *c = arg;

	report_cycle(c->e->inv, path, len, c->file, c->d);
}

/* Orders the groups so that each comes after every group it includes or
 * excludes (depth-first, post-order), reporting each cycle found. */
static bool sort_groups(struct gengine *e, const char *file, struct diag *d)
{
	static const struct dfs_ops ops = { group_degree, group_edge, group_done, group_cycle };
	struct sort_ctx c = { e, 0, file, d };

	return dfs_postorder(e->inv->ngroups, &ops, &c) == 0;
}

/* Files group g under the tags its criteria depend on.  A criterion whose tag
 * conditions are all EQUALS / NOT_EQUALS only changes when one of those tags
 * comes or goes; any other tag condition may change with any tag.  The key
 * is the value as written: "scope|tag", "scope|" or "tag"; a tag change
 * looks up all three forms of the tag (gengine_set_tags). */
static void index_tags(struct gengine *e, size_t g, const struct criterion *c,
		       size_t n)
{
	for (size_t i = 0; i < n; i++) {
		bool tagged = false, presence = true;

		for (size_t j = 0; j < c[i].nconds; j++) {
			const struct cond *cd = &c[i].conds[j];

			if (cd->field != COND_TAG)
				continue;
			tagged = true;
			presence &= cd->op == OP_EQUALS || cd->op == OP_NOT_EQUALS;
		}
		if (!tagged)
			continue;
		if (!presence) {
			glist_add_once(&e->any_tag, g);
			continue;
		}
		for (size_t j = 0; j < c[i].nconds; j++) {
			const struct cond *cd = &c[i].conds[j];
			uint32_t id;

			if (cd->field != COND_TAG)
				continue;
			id = intern_id(&e->tags, cd->value);
			if (id >= e->nby_tag) {
				grow((void **)&e->by_tag, &e->by_tag_cap, id + 1,
				     sizeof(*e->by_tag));
				memset(e->by_tag + e->nby_tag, 0,
				       (id + 1 - e->nby_tag) * sizeof(*e->by_tag));
				e->nby_tag = id + 1;
			}
			glist_add_once(&e->by_tag[id], g);
		}
	}
}

static size_t append_addrs(struct dfw_addr *dst, size_t n,
			   const struct dfw_addr *src, size_t nsrc)
{
	if (nsrc) /* src is NULL when empty, which memcpy may not be given */
		memcpy(dst + n, src, nsrc * sizeof(*src));
	return n + nsrc;
}

/* Sorts v[0..n) and drops repeats; returns how many are left. */
static size_t addrs_unique(struct dfw_addr *v, size_t n)
{
	size_t k = 0;

	if (n)
		qsort(v, n, sizeof(*v), addr_qcmp);
	for (size_t i = 0; i < n; i++)
		if (!k || addr_cmp(&v[k - 1], &v[i]))
			v[k++] = v[i];
	return k;
}

/* Writes the union of a and b (each sorted, unique) to out, sorted and
 * unique; returns its length. */
static size_t union_sorted(const size_t *a, size_t na, const size_t *b, size_t nb, size_t *out)
{
	size_t i = 0, j = 0, n = 0;

	while (i < na || j < nb) {
		if (j == nb || (i < na && a[i] < b[j]))
			out[n++] = a[i++];
		else if (i == na || b[j] < a[i])
			out[n++] = b[j++];
		else {
			out[n++] = a[i++];
			j++;
		}
	}
	return n;
}

/* Adds addrs[0..n) to the part of gs's IP/CIDR members that exactly the
 * groups excl[0..nexcl) exclude, made when missing. */
static void net_add(struct gstate *gs, const size_t *excl, size_t nexcl,
		    const struct dfw_addr *addrs, size_t n)
{
	struct net_part *p = NULL;

	if (!n)
		return;
	for (size_t i = 0; i < gs->nnets && !p; i++)
		if (gs->nets[i].nexcl == nexcl &&
		    (!nexcl || !memcmp(gs->nets[i].excl, excl, nexcl * sizeof(*excl))))
			p = &gs->nets[i];
	if (!p) {
		gs->nets = xrealloc(gs->nets, (gs->nnets + 1) * sizeof(*gs->nets));
		p = &gs->nets[gs->nnets++];
		memset(p, 0, sizeof(*p));
		p->excl = sorted_copy(excl, nexcl);
		p->nexcl = nexcl;
	}
	grow((void **)&p->addrs, &p->cap, p->naddrs + n, sizeof(*p->addrs));
	p->naddrs = append_addrs(p->addrs, p->naddrs, addrs, n);
}

/* Its own addresses plus those of the groups it includes, which are complete
 * already because groups are prepared in dependency order.  In parts, by
 * what excludes them, as combine() excludes VMs (exclusion always wins):
 * its own addresses are taken out by its exclude_groups, an included
 * group's parts by the groups that exclude them there and by these. */
static void effective_addrs(struct gengine *e, size_t g)
{
	const struct group_def *gd = &e->inv->groups[g];
	struct gstate *gs = &e->gs[g];
	size_t *xg = sorted_copy(gd->exclude_groups, gd->nexclude_groups), *excl = NULL;
	size_t nx = 0, n = 0, k = 0;

	for (size_t i = 0; i < gd->nexclude_groups; i++) /* unique */
		if (!nx || xg[nx - 1] != xg[i])
			xg[nx++] = xg[i];
	net_add(gs, xg, nx, gd->addrs, gd->naddrs);
	for (size_t i = 0; i < gd->nincludes; i++) {
		const struct gstate *in = &e->gs[gd->includes[i]];

		for (size_t j = 0; j < in->nnets; j++) {
			const struct net_part *p = &in->nets[j];

			excl = xrealloc(excl, (p->nexcl + nx + 1) * sizeof(*excl));
			net_add(gs, excl, union_sorted(p->excl, p->nexcl, xg, nx, excl), p->addrs,
				p->naddrs);
		}
	}
	free(xg);
	free(excl);
	for (size_t i = 0; i < gs->nnets; i++) {
		gs->nets[i].naddrs = addrs_unique(gs->nets[i].addrs, gs->nets[i].naddrs);
		n += gs->nets[i].naddrs;
	}
	if (!n)
		return;
	gs->addrs = xmalloc(n * sizeof(*gs->addrs));
	for (size_t i = 0; i < gs->nnets; i++)
		k = append_addrs(gs->addrs, k, gs->nets[i].addrs, gs->nets[i].naddrs);
	gs->naddrs = addrs_unique(gs->addrs, k);
}

static bool uses_tags(const struct criterion *c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < c[i].nconds; j++)
			if (c[i].conds[j].field == COND_TAG)
				return true;
	return false;
}

static bool excludes_group(const struct group_def *gd, size_t x)
{
	for (size_t i = 0; i < gd->nexclude_groups; i++)
		if (gd->exclude_groups[i] == x)
			return true;
	return false;
}

/* Which included groups' bases make up a group's base: (A minus X) or B,
 * then minus Y, is (A or B) minus Y when X is part of Y.  So a VM entering
 * quarantine changes no base of a group that includes desktops (which
 * excludes quarantine) and excludes quarantine itself. */
static void base_includes(struct gengine *e, size_t g)
{
	const struct group_def *gd = &e->inv->groups[g];
	struct gstate *gs = &e->gs[g];

	/* Tags reach the base through its criteria and what it includes. */
	gs->base_tag_driven = uses_tags(gd->match, gd->nmatch) ||
			      uses_tags(gd->exclude_match, gd->nexclude_match);
	if (gs->base != NO_BASE && gd->nincludes)
		gs->inc_base = xcalloc(gd->nincludes, sizeof(*gs->inc_base));
	for (size_t i = 0; i < gd->nincludes; i++) {
		const struct group_def *inc = &e->inv->groups[gd->includes[i]];
		const struct gstate *is = &e->gs[gd->includes[i]];
		bool sub = gs->inc_base && is->base != NO_BASE;

		for (size_t k = 0; sub && k < inc->nexclude_groups; k++)
			sub = excludes_group(gd, inc->exclude_groups[k]);
		if (gs->inc_base)
			gs->inc_base[i] = sub;
		gs->base_tag_driven |= sub ? is->base_tag_driven : is->tag_driven;
		gs->base_iso_driven |= sub ? is->base_iso_driven : is->iso_driven;
	}
}

bool gengine_tag_driven(const struct gengine *e, size_t group)
{
	return e->gs[group].tag_driven;
}

bool gengine_base_tag_driven(const struct gengine *e, size_t group)
{
	return e->gs[group].base_tag_driven;
}

bool gengine_follows_isolation(const struct gengine *e, size_t group, bool base)
{
	return base ? e->gs[group].base_iso_driven : e->gs[group].iso_driven;
}

bool gengine_is_isolation(const struct gengine *e, size_t group)
{
	return e->gs[group].isolation;
}

struct gengine *gengine_new(const struct inventory *inv, const char *file,
			    struct diag *d)
{
	struct gengine *e = xcalloc(1, sizeof(*e));
	size_t ng = inv->ngroups;

	e->inv = inv;
	e->gs = xcalloc(ng, sizeof(*e->gs));
	e->order = xmalloc(ng * sizeof(*e->order));
	if (!inventory_valid(inv, file, d) || !sort_groups(e, file, d))
		goto fail;
	e->nwords = (inv->nvms + 63) / 64;
	e->bits = xcalloc(ng * e->nwords, sizeof(*e->bits));
	e->vmtags = xcalloc(inv->nvms, sizeof(*e->vmtags));
	e->heap = xmalloc(ng * sizeof(*e->heap));
	/* Quarantine groups, and the groups other groups exclude, are
	 * isolation groups. */
	for (size_t g = 0; g < ng; g++) {
		e->gs[g].isolation |= inv->groups[g].quarantine;
		for (size_t i = 0; i < inv->groups[g].nexclude_groups; i++)
			e->gs[inv->groups[g].exclude_groups[i]].isolation = true;
	}
	for (size_t g = 0; g < ng; g++)
		e->gs[g].iso_driven = e->gs[g].isolation;
	for (size_t r = 0; r < ng; r++) {
		size_t g = e->order[r];
		const struct group_def *gd = &inv->groups[g];
		struct gstate *gs = &e->gs[g];

		gs->rank = r;
		gs->members = sorted_copy(gd->members, gd->nmembers);
		gs->nmembers = gd->nmembers;
		gs->xmembers = sorted_copy(gd->exclude_members, gd->nexclude_members);
		gs->nxmembers = gd->nexclude_members;
		for (size_t i = 0; i < gd->nincludes + gd->nexclude_groups; i++)
			glist_add_once(&e->gs[dep_at(gd, i)].users, g);
		index_tags(e, g, gd->match, gd->nmatch);
		index_tags(e, g, gd->exclude_match, gd->nexclude_match);
		effective_addrs(e, g);
		gs->tag_driven = uses_tags(gd->match, gd->nmatch) ||
				 uses_tags(gd->exclude_match, gd->nexclude_match);
		/* order: the groups it depends on are done already */
		for (size_t i = 0; i < gd->nincludes + gd->nexclude_groups; i++) {
			gs->tag_driven |= e->gs[dep_at(gd, i)].tag_driven;
			gs->iso_driven |= e->gs[dep_at(gd, i)].iso_driven;
		}
	}
	/* A base where a group excludes groups that exclude none: the
	 * kernel can then test "in the base and in none of those groups"
	 * with their own sets, and a VM entering an excluded group (say,
	 * quarantine) leaves the base's set alone. */
	for (size_t g = 0; g < ng; g++) {
		const struct group_def *gd = &inv->groups[g];
		bool base = gd->nexclude_groups > 0;

		for (size_t i = 0; i < gd->nexclude_groups; i++)
			base &= !inv->groups[gd->exclude_groups[i]].nexclude_groups;
		e->gs[g].base = base ? e->nbase++ : NO_BASE;
	}
	for (size_t r = 0; r < ng; r++)
		base_includes(e, e->order[r]);
	e->base_bits = xcalloc(e->nbase * e->nwords + 1, sizeof(*e->base_bits));
	evaluate_all(e);
	return e;

fail:
	gengine_free(e);
	return NULL;
}

void gengine_free(struct gengine *e)
{
	if (!e)
		return;
	for (size_t g = 0; g < e->inv->ngroups; g++) {
		free(e->gs[g].members);
		free(e->gs[g].xmembers);
		free(e->gs[g].addrs);
		for (size_t i = 0; i < e->gs[g].nnets; i++) {
			free(e->gs[g].nets[i].addrs);
			free(e->gs[g].nets[i].excl);
		}
		free(e->gs[g].nets);
		free(e->gs[g].users.v);
		free(e->gs[g].inc_base);
	}
	if (e->vmtags)
		for (size_t v = 0; v < e->inv->nvms; v++)
			free(e->vmtags[v].ids);
	for (size_t i = 0; i < e->nby_tag; i++)
		free(e->by_tag[i].v);
	free(e->by_tag);
	free(e->any_tag.v);
	intern_free(&e->tags);
	free(e->gs);
	free(e->order);
	free(e->bits);
	free(e->base_bits);
	free(e->vmtags);
	free(e->heap);
	free(e->ids);
	free(e->diff);
	free(e->strs);
	free(e->deltas);
	free(e);
}

/* ---- tag changes ------------------------------------------------------- */

static void heap_push(struct gengine *e, size_t g)
{
	size_t r = e->gs[g].rank, i;

	if (e->gs[g].queued)
		return;
	e->gs[g].queued = true;
	for (i = e->nheap++; i && e->heap[(i - 1) / 2] > r; i = (i - 1) / 2)
		e->heap[i] = e->heap[(i - 1) / 2];
	e->heap[i] = r;
}

/* Removes the queued group that comes first in dependency order.  No group
 * is queued again once popped: only groups that depend on it, so later in
 * the order, are queued after it. */
static size_t heap_pop(struct gengine *e)
{
	size_t top = e->heap[0], last = e->heap[--e->nheap], i = 0, c, g;

	while ((c = 2 * i + 1) < e->nheap) {
		if (c + 1 < e->nheap && e->heap[c + 1] < e->heap[c])
			c++;
		if (last <= e->heap[c])
			break;
		e->heap[i] = e->heap[c];
		i = c;
	}
	e->heap[i] = last;
	g = e->order[top];
	e->gs[g].queued = false;
	return g;
}

/* Writes the ids in exactly one of a and b (both sorted) to out. */
static size_t sym_diff(const uint32_t *a, size_t na, const uint32_t *b,
		       size_t nb, uint32_t *out)
{
	size_t i = 0, j = 0, n = 0;

	while (i < na || j < nb) {
		if (j == nb || (i < na && a[i] < b[j]))
			out[n++] = a[i++];
		else if (i == na || b[j] < a[i])
			out[n++] = b[j++];
		else
			i++, j++;
	}
	return n;
}

/* Queues the groups filed under tag key id (UINT32_MAX: none). */
static void push_tag_groups(struct gengine *e, uint32_t id)
{
	const struct glist *l = id < e->nby_tag ? &e->by_tag[id] : NULL;

	for (size_t k = 0; l && k < l->n; k++)
		heap_push(e, l->v[k]);
}

static void push_delta(struct gengine *e, size_t *n, struct delta d)
{
	grow((void **)&e->deltas, &e->deltas_cap, *n + 1, sizeof(*e->deltas));
	e->deltas[(*n)++] = d;
}

void gengine_set_tags(struct gengine *e, size_t vm, const char *const *tags,
		      size_t ntags, gengine_delta_fn fn, void *arg)
{
	struct tagset *ts;
	size_t n = 0, ndiff, ndeltas = 0;

	if (vm >= e->inv->nvms)
		abort();
	ts = &e->vmtags[vm];
	grow((void **)&e->ids, &e->ids_cap, ntags, sizeof(*e->ids));
	for (size_t i = 0; i < ntags; i++)
		e->ids[i] = intern_id(&e->tags, tags[i]);
	if (ntags > 1)
		qsort(e->ids, ntags, sizeof(*e->ids), u32_cmp);
	for (size_t i = 0; i < ntags; i++)
		if (!n || e->ids[n - 1] != e->ids[i])
			e->ids[n++] = e->ids[i];

	grow((void **)&e->diff, &e->diff_cap, ts->n + n, sizeof(*e->diff));
	ndiff = sym_diff(ts->ids, ts->n, e->ids, n, e->diff);
	if (!ndiff)
		return;
	grow((void **)&ts->ids, &ts->cap, n, sizeof(*ts->ids));
	if (n)
		memcpy(ts->ids, e->ids, n * sizeof(*ts->ids));
	ts->n = n;
	grow((void **)&e->strs, &e->strs_cap, n, sizeof(*e->strs));
	for (size_t i = 0; i < n; i++)
		e->strs[i] = e->tags.strs[ts->ids[i]];

	for (size_t i = 0; i < ndiff; i++) {
		const char *t = e->tags.strs[e->diff[i]], *bar = strchr(t, '|');

		push_tag_groups(e, e->diff[i]);
		/* "scope|tag" is also seen by conditions on "scope|" (any tag of
		 * the scope) and on "tag" (that tag part in any scope). */
		if (bar) {
			push_tag_groups(e, intern_find(&e->tags, t, (size_t)(bar - t) + 1));
			push_tag_groups(e, intern_find(&e->tags, bar + 1, strlen(bar + 1)));
		}
	}
	for (size_t k = 0; k < e->any_tag.n; k++)
		heap_push(e, e->any_tag.v[k]);

	/* Dependency order: a group is re-evaluated after every group it reads
	 * has its final answer for this VM. */
	while (e->nheap) {
		size_t g = heap_pop(e);
		uint64_t *w = &group_bits(e, g)[vm / 64], bit = 1ull << (vm % 64);
		bool in_base, was = *w & bit, is = eval_vm(e, g, vm, e->strs, n, &in_base);
		const struct glist *users = &e->gs[g].users;

		bool changed = false;

		if (e->gs[g].base != NO_BASE) {
			uint64_t *bw = &base_bits(e, g)[vm / 64];

			if (!(*bw & bit) != !in_base) {
				*bw ^= bit;
				push_delta(e, &ndeltas, (struct delta){ g, in_base, true });
				changed = true; /* users' bases may read it */
			}
		}
		if (was != is) {
			*w ^= bit;
			if (is)
				e->gs[g].count++;
			else
				e->gs[g].count--;
			push_delta(e, &ndeltas, (struct delta){ g, is, false });
			changed = true;
		}
		for (size_t k = 0; changed && k < users->n; k++)
			heap_push(e, users->v[k]);
	}
	/* Reported once the whole engine is current, so fn may query it
	 * (but must not change tags: the deltas live in scratch space). */
	for (size_t i = 0; fn && i < ndeltas; i++)
		fn(arg, e->deltas[i].group, vm, e->deltas[i].joined, e->deltas[i].base);
}

/* ---- queries ----------------------------------------------------------- */

bool gengine_is_member(const struct gengine *e, size_t group, size_t vm)
{
	if (group >= e->inv->ngroups || vm >= e->inv->nvms)
		abort();
	return group_bits(e, group)[vm / 64] >> (vm % 64) & 1;
}

size_t gengine_count(const struct gengine *e, size_t group)
{
	if (group >= e->inv->ngroups)
		abort();
	return e->gs[group].count;
}

static void foreach_bit(const struct gengine *e, const uint64_t *b,
			void (*fn)(void *arg, size_t vm), void *arg)
{
	for (size_t w = 0; w < e->nwords; w++)
		for (uint64_t x = b[w]; x; x &= x - 1)
			fn(arg, w * 64 + (size_t)__builtin_ctzll(x));
}

void gengine_foreach_member(const struct gengine *e, size_t group,
			    void (*fn)(void *arg, size_t vm), void *arg)
{
	if (group >= e->inv->ngroups)
		abort();
	foreach_bit(e, group_bits(e, group), fn, arg);
}

bool gengine_has_base(const struct gengine *e, size_t group)
{
	if (group >= e->inv->ngroups)
		abort();
	return e->gs[group].base != NO_BASE;
}

bool gengine_is_base_member(const struct gengine *e, size_t group, size_t vm)
{
	if (!gengine_has_base(e, group) || vm >= e->inv->nvms)
		abort();
	return base_bits(e, group)[vm / 64] >> (vm % 64) & 1;
}

void gengine_foreach_base_member(const struct gengine *e, size_t group,
				 void (*fn)(void *arg, size_t vm), void *arg)
{
	if (!gengine_has_base(e, group))
		abort();
	foreach_bit(e, base_bits(e, group), fn, arg);
}

const struct dfw_addr *gengine_addrs(const struct gengine *e, size_t group,
				     size_t *n)
{
	if (group >= e->inv->ngroups)
		abort();
	*n = e->gs[group].naddrs;
	return e->gs[group].addrs;
}

size_t gengine_net_parts(const struct gengine *e, size_t group)
{
	if (group >= e->inv->ngroups)
		abort();
	return e->gs[group].nnets;
}

const struct dfw_addr *gengine_net_part(const struct gengine *e, size_t group, size_t k,
					size_t *n, const size_t **excl, size_t *nexcl)
{
	const struct net_part *p;

	if (k >= gengine_net_parts(e, group))
		abort();
	p = &e->gs[group].nets[k];
	*n = p->naddrs;
	*excl = p->excl;
	*nexcl = p->nexcl;
	return p->addrs;
}
