/* Compiles policy + membership into a host plan; diffs two plans. */
#include "dfw/compile.h"

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "groups/groups.h"

void plan_name_copy(char *dst, const char *src)
{
	size_t n = strnlen(src, PLAN_NAME_MAX - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

void group_set_name(const char *group, uint8_t family, char *buf, size_t len)
{
	snprintf(buf, len, "g-%s-%c", group, family == AF_INET ? '4' : '6');
}

void port_set_name(const char *group, bool dst, char *buf, size_t len)
{
	snprintf(buf, len, "p-%s-%c", group, dst ? 'i' : 'o');
}

/* --- address sets --------------------------------------------------------- */

static int cmp_addr(const void *x, const void *y)
{
	return addr_cmp(x, y);
}

static void set_push(struct pset *s, const struct dfw_addr *a)
{
	grow((void **)&s->elems, &s->cap, s->nelems + 1, sizeof(*s->elems));
	s->elems[s->nelems++] = *a;
}

/* Sorts and drops elements covered by an earlier (wider or equal) one, so
 * the kernel's interval set never sees an overlap. */
static uint16_t range_lo(const struct dfw_addr *a)
{
	return (uint16_t)(a->a[0] << 8 | a->a[1]);
}

static uint16_t range_hi(const struct dfw_addr *a)
{
	return (uint16_t)(a->a[2] << 8 | a->a[3]);
}

static struct dfw_addr port_range(uint16_t lo, uint16_t hi)
{
	struct dfw_addr a = { .family = 0, .plen = 16 };

	a.a[0] = (uint8_t)(lo >> 8);
	a.a[1] = (uint8_t)lo;
	a.a[2] = (uint8_t)(hi >> 8);
	a.a[3] = (uint8_t)hi;
	return a;
}

/* Port ranges sorted and merged where they overlap or touch: the kernel's
 * interval sets refuse overlaps. */
static void ranges_normalize(struct pset *s)
{
	size_t out = 0;

	qsort(s->elems, s->nelems, sizeof(*s->elems), cmp_addr);
	for (size_t i = 0; i < s->nelems; i++) {
		uint16_t lo = range_lo(&s->elems[i]), hi = range_hi(&s->elems[i]);

		if (out && lo <= (uint32_t)range_hi(&s->elems[out - 1]) + 1) {
			if (hi > range_hi(&s->elems[out - 1]))
				s->elems[out - 1] = port_range(range_lo(&s->elems[out - 1]), hi);
			continue;
		}
		s->elems[out++] = s->elems[i];
	}
	s->nelems = out;
}

static void set_normalize(struct pset *s)
{
	size_t out = 0;

	if (s->service && s->nelems) {
		ranges_normalize(s);
		return;
	}
	if (s->nelems)
		qsort(s->elems, s->nelems, sizeof(*s->elems), cmp_addr);
	for (size_t i = 0; i < s->nelems; i++) {
		if (out && addr_contains(&s->elems[out - 1], &s->elems[i]))
			continue;
		s->elems[out++] = s->elems[i];
	}
	s->nelems = out;
}

/* An open-addressing index from set name to its position in the plan's
 * set array (positions survive the array's growth; pointers would not). */
struct name_index {
	uint64_t *hash;
	size_t *pos;  /* position + 1; 0 = empty slot */
	size_t cap;   /* power of two */
	size_t n;
};

struct builder {
	const struct dfw_policy *p;
	const struct gengine *e;
	const char *host;
	struct plan *pl;
	size_t capsets, capchains, capcounters;
	struct name_index sets_by_name;
};

static uint64_t fnv1a(uint64_t h, const void *data, size_t len);
#define FNV_INIT 0xcbf29ce484222325ull

static void index_put(struct name_index *ix, uint64_t h, size_t pos);

static void index_grow(struct name_index *ix)
{
	struct name_index old = *ix;

	ix->cap = old.cap ? old.cap * 2 : 64;
	ix->hash = xcalloc(ix->cap, sizeof(*ix->hash));
	ix->pos = xcalloc(ix->cap, sizeof(*ix->pos));
	ix->n = 0;
	for (size_t i = 0; i < old.cap; i++)
		if (old.pos[i])
			index_put(ix, old.hash[i], old.pos[i] - 1);
	free(old.hash);
	free(old.pos);
}

static void index_put(struct name_index *ix, uint64_t h, size_t pos)
{
	size_t i;

	if (2 * (ix->n + 1) > ix->cap)
		index_grow(ix);
	for (i = h & (ix->cap - 1); ix->pos[i]; i = (i + 1) & (ix->cap - 1))
		;
	ix->hash[i] = h;
	ix->pos[i] = pos + 1;
	ix->n++;
}

static uint64_t name_hash(const char *name)
{
	return fnv1a(FNV_INIT, name, strlen(name));
}

static struct pset *find_set_mut(struct builder *b, const char *name)
{
	struct name_index *ix = &b->sets_by_name;
	uint64_t h = name_hash(name);

	if (!ix->cap)
		return NULL;
	for (size_t i = h & (ix->cap - 1); ix->pos[i]; i = (i + 1) & (ix->cap - 1)) {
		struct pset *s = &b->pl->sets[ix->pos[i] - 1];

		if (ix->hash[i] == h && !strcmp(s->name, name))
			return s;
	}
	return NULL;
}

static struct pset *new_set(struct builder *b, const char *name, uint8_t family)
{
	struct pset *s;

	grow((void **)&b->pl->sets, &b->capsets, b->pl->nsets + 1, sizeof(*b->pl->sets));
	s = &b->pl->sets[b->pl->nsets++];
	memset(s, 0, sizeof(*s));
	plan_name_copy(s->name, name);
	s->family = family;
	index_put(&b->sets_by_name, name_hash(s->name), b->pl->nsets - 1);
	return s;
}

bool vm_member_addr(const struct vm *v, uint8_t family, size_t *pos, struct dfw_addr *a)
{
	struct dfw_addr ll;

	while (*pos < v->naddrs) {
		const struct dfw_addr *x = &v->addrs[(*pos)++];

		if (!family || x->family == family) {
			*a = *x;
			return true;
		}
	}
	if (*pos > v->naddrs || (family && family != AF_INET6))
		return false;
	(*pos)++;
	ll = addr_link_local(v->mac);
	for (size_t i = 0; i < v->naddrs; i++)
		if (!addr_cmp(&v->addrs[i], &ll))
			return false; /* declared too: given once */
	*a = ll;
	return true;
}

bool pport_dst_addr(const struct dfw_addr *a)
{
	static const uint8_t unspec[16];

	return a->family == AF_INET || memcmp(a->a, unspec, sizeof(unspec));
}

bool pport_fast_addr(const struct pport *p, const struct dfw_addr *a)
{
	return a->family == AF_INET ? !p->learn4 : !p->learn6 && pport_dst_addr(a);
}

struct member_ctx {
	const struct inventory *inv;
	struct pset *set;
};

static void add_member_addrs(void *arg, size_t vm)
{
	struct member_ctx *c = arg;
	struct dfw_addr a;

	for (size_t i = 0; vm_member_addr(&c->inv->vms[vm], c->set->family, &i, &a);)
		set_push(c->set, &a);
}

/* A set of a group's base (gengine_has_base) is named as the group's,
 * with "b" after: "g-NAME-4b", "p-NAME-ib". */
static void base_name(char *name, size_t len, bool base)
{
	if (base)
		strncat(name, "b", len - strlen(name) - 1);
}

struct fill_ctx {
	void (*add)(void *arg, size_t vm);
	void *arg;
	size_t members;
};

static void fill_one(void *arg, size_t vm)
{
	struct fill_ctx *c = arg;

	c->members++;
	c->add(c->arg, vm);
}

/* Which of a group's sets s is: vNIC ids (family 0, dst: the
 * destination's) or addresses, of the group or of its base. */
static enum member_set member_kind(const struct pset *s, bool base)
{
	if (!s->family)
		return s->dst ? (base ? MS_BASE_IN : MS_PORT_IN) : (base ? MS_BASE_OUT : MS_PORT_OUT);
	if (s->family == AF_INET)
		return base ? MS_BASE4 : MS_ADDR4;
	return base ? MS_BASE6 : MS_ADDR6;
}

/* Fills set s with what add makes of each member of the group (or of its
 * base).  A group without members whose members no tag can change makes
 * a dead set (set_dead). */
static void fill_members(struct builder *b, struct pset *s, size_t group, bool base,
			 void (*add)(void *arg, size_t vm), void *arg)
{
	struct fill_ctx c = { add, arg, 0 };

	s->hot = base ? gengine_base_tag_driven(b->e, group) : gengine_tag_driven(b->e, group);
	s->isolation = s->hot && gengine_follows_isolation(b->e, group, base);
	s->iso_group = s->isolation && !base && gengine_is_isolation(b->e, group);
	s->member = true;
	s->group = group;
	s->kind = member_kind(s, base);
	if (base)
		gengine_foreach_base_member(b->e, group, fill_one, &c);
	else
		gengine_foreach_member(b->e, group, fill_one, &c);
	set_normalize(s);
	s->dead = !s->hot && !c.members;
}

/* The set of a group's VM addresses for one family (a hash set: the
 * kernel updates it in constant time, where an interval set's commit cost
 * grows with its size), created on first use; or of its base's. */
static const char *group_set(struct builder *b, size_t group, uint8_t family, bool base)
{
	char name[PLAN_NAME_MAX];
	struct member_ctx c = { &b->p->inv, NULL };
	struct pset *s;

	group_set_name(b->p->inv.groups[group].name, family, name, sizeof(name));
	base_name(name, sizeof(name), base);
	if ((s = find_set_mut(b, name)))
		return s->name;
	s = c.set = new_set(b, name, family);
	fill_members(b, s, group, base, add_member_addrs, &c);
	return s->name;
}

/* The interval set of part k of a group's IP/CIDR members
 * (gengine_net_part) for one family, or NULL when it has none of that
 * family: "g-NAME-4n", and for the parts after the first, their number
 * after it ("g-NAME-4n2").  These come from the policy alone: tags never
 * touch them.  A single one is written into inline_addr and returned, for
 * a compare (as literal_set). */
static const char *group_net_set(struct builder *b, size_t group, size_t k, uint8_t family,
				 char *inline_addr, size_t len)
{
	char name[PLAN_NAME_MAX];
	const struct dfw_addr *cidrs;
	const size_t *excl;
	size_t ncidrs, nexcl, n = 0;
	struct pset *s;

	cidrs = gengine_net_part(b->e, group, k, &ncidrs, &excl, &nexcl);
	for (size_t i = 0; i < ncidrs; i++)
		n += cidrs[i].family == family;
	if (!n)
		return NULL;
	for (size_t i = 0; n == 1 && i < ncidrs; i++) {
		if (cidrs[i].family == family) {
			addr_format(&cidrs[i], inline_addr, len);
			return inline_addr;
		}
	}
	group_set_name(b->p->inv.groups[group].name, family, name, sizeof(name));
	if (k)
		snprintf(name + strlen(name), sizeof(name) - strlen(name), "n%zu", k + 1);
	else
		strncat(name, "n", sizeof(name) - strlen(name) - 1);
	if ((s = find_set_mut(b, name)))
		return s->name;
	s = new_set(b, name, family);
	s->interval = true;
	for (size_t i = 0; i < ncidrs; i++)
		if (cidrs[i].family == family)
			set_push(s, &cidrs[i]);
	set_normalize(s);
	return s->name;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
	const uint8_t *p = data;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* The literal addresses of a rule side (VMs and IP/CIDRs) for one family, as
 * a set named by its content; NULL when the side has none of that family.
 * One address or prefix needs no set: it is written into inline_addr as
 * text and returned, for a compare in the rule (no set to create, and none
 * for the kernel to walk past when it looks a set up by name). */
static const char *literal_set(struct builder *b, const struct dfw_side *side,
			       uint8_t family, char *inline_addr, size_t len)
{
	struct pset tmp = { .family = family }, *s;
	char name[PLAN_NAME_MAX];
	uint64_t h = FNV_INIT;
	struct dfw_addr a;

	for (size_t i = 0; i < side->nrefs; i++) {
		const struct dfw_ref *r = &side->refs[i];

		if (r->kind == REF_ADDR && r->addr.family == family)
			set_push(&tmp, &r->addr);
		for (size_t k = 0;
		     r->kind == REF_VM && vm_member_addr(&b->p->inv.vms[r->idx], family, &k, &a);)
			set_push(&tmp, &a);
	}
	if (!tmp.nelems)
		return NULL;
	set_normalize(&tmp);
	if (tmp.nelems == 1) {
		addr_format(&tmp.elems[0], inline_addr, len);
		free(tmp.elems);
		return inline_addr;
	}
	h = fnv1a(h, tmp.elems, tmp.nelems * sizeof(*tmp.elems));
	snprintf(name, sizeof(name), "a-%012llx-%c", (unsigned long long)(h >> 16),
		 family == AF_INET ? '4' : '6');
	if ((s = find_set_mut(b, name))) {
		free(tmp.elems);
		return s->name;
	}
	s = new_set(b, name, family);
	s->interval = true;
	s->elems = tmp.elems;
	s->nelems = tmp.nelems;
	s->cap = tmp.cap;
	return s->name;
}

/* The ports of one protocol of a rule with several, as a content-named
 * interval set shared by every rule with the same ports. */
static const char *service_set(struct builder *b, const struct dfw_rule *r, uint8_t proto)
{
	struct pset tmp = { .service = true }, *s;
	char name[PLAN_NAME_MAX];

	for (size_t i = 0; i < r->nsvcs; i++)
		if (r->svcs[i].proto == proto && r->svcs[i].lo) {
			struct dfw_addr a = port_range(r->svcs[i].lo, r->svcs[i].hi);

			set_push(&tmp, &a);
		}
	set_normalize(&tmp);
	snprintf(name, sizeof(name), "s-%012llx",
		 (unsigned long long)(fnv1a(FNV_INIT, tmp.elems, tmp.nelems * sizeof(*tmp.elems)) >> 16));
	if ((s = find_set_mut(b, name))) {
		free(tmp.elems);
		return s->name;
	}
	s = new_set(b, name, 0);
	s->service = true;
	s->interval = true;
	s->elems = tmp.elems;
	s->nelems = tmp.nelems;
	s->cap = tmp.cap;
	return s->name;
}

/* --- rules and chains ----------------------------------------------------- */

/* A rule side compiled to alternatives: the side matches a packet when one
 * of them does.
 *   - Positive: one alternative per set (a group's hash set, its CIDR set,
 *     the side's literal set), each in its family; "any" is one alternative
 *     with no set and no family.  A group with a base (it excludes groups,
 *     gengine_has_base) is its base's set with the excluded groups' sets as
 *     negated lookups (exclusions): a VM entering quarantine then edits the
 *     quarantine set, not every group that excludes quarantine.  A part of
 *     a group's IP/CIDR members that groups exclude (gengine_net_part) is
 *     its set with those groups' sets, of their VMs and of their IP/CIDR
 *     members, as exclusions (exclusion always wins); a tag change still
 *     edits only the excluded groups' VM sets.
 *   - Negated: one alternative per family holding ALL the side's sets of
 *     that family as negated lookups (the address is in none of them).  A
 *     family without sets matches every address of that family: "not
 *     10.0.0.0/8" admits all of IPv6.  "not any" has no alternative: it
 *     matches nothing, so the rule compiles to no kernel rule.  An address
 *     in a part of a group's IP/CIDR members is still in none of the
 *     items when that part's exclusions take it out: such a part's negated
 *     lookup may be traded for a lookup in one of its exclusions' sets,
 *     which makes more alternatives (negated_alts).
 * Names are copied: creating a set may move the plan's set array. */
struct side_alt {
	uint8_t family;  /* 0: any family (the positive "any") */
	bool negate;     /* its sets are negated lookups (a negated side) */
	size_t first, n; /* its sets: names[first .. first + n) */
	size_t xfirst, xn; /* exclusions, always negated: names[xfirst .. xfirst + xn) */
};

struct side {
	struct side_alt *alts;
	size_t nalts, capalts;
	char (*names)[PLAN_NAME_MAX];
	bool *inline_addr; /* names[i] is an address, not a set */
	size_t nnames, capnames, capinline;
};

static void side_push(struct side *s, const char *name, bool inline_addr)
{
	grow((void **)&s->names, &s->capnames, s->nnames + 1, sizeof(*s->names));
	grow((void **)&s->inline_addr, &s->capinline, s->nnames + 1, sizeof(*s->inline_addr));
	s->inline_addr[s->nnames] = inline_addr;
	snprintf(s->names[s->nnames++], PLAN_NAME_MAX, "%s", name);
}

/* Pushes a copy of name k (side_push may move the names it reads from). */
static void side_copy(struct side *s, size_t k)
{
	char name[PLAN_NAME_MAX];

	memcpy(name, s->names[k], sizeof(name));
	side_push(s, name, s->inline_addr[k]);
}

static void side_name(struct side *s, const char *name)
{
	side_push(s, name, false);
}

static void side_alt(struct side *s, struct side_alt a)
{
	grow((void **)&s->alts, &s->capalts, s->nalts + 1, sizeof(*s->alts));
	s->alts[s->nalts++] = a;
}

/* A set no packet is ever in: its group has no VM, and no tag change can
 * give it one (its members change only with the policy, and that
 * recompiles; learned addresses and placement do not change members).  A
 * lookup in it never matches, so what needs one (an alternative, a guard)
 * is left out; a negated lookup in it always matches, so it is dropped.
 * Dead sets are then referenced by no rule, and plan_compile drops them: a
 * group of CIDRs only costs no kernel rule and no set for its VMs. */
static bool set_dead(struct builder *b, const char *name)
{
	const struct pset *s = find_set_mut(b, name);

	return s && s->dead;
}

/* Adds a set's name to the side unless the set is dead. */
static bool side_set(struct builder *b, struct side *s, const char *name)
{
	if (set_dead(b, name))
		return false;
	side_name(s, name);
	return true;
}

/* Makes (or finds) a set of a group, or of its base: group_set for a
 * family, port_set for a direction. */
typedef const char *(*set_maker)(struct builder *b, size_t group, unsigned arg, bool base);

/* The positive alternative of a group in family (0 for vNIC ids): its set,
 * or with base, its base's set with the excluded groups' sets as
 * exclusions; none when that set is dead. */
static void group_alt(struct builder *b, struct side *s, size_t group, bool base,
		      uint8_t family, set_maker make, unsigned arg)
{
	const struct group_def *gd = &b->p->inv.groups[group];
	struct side_alt a = { family, false, s->nnames, 1, 0, 0 };

	if (!side_set(b, s, make(b, group, arg, base)))
		return;
	a.xfirst = s->nnames;
	for (size_t i = 0; base && i < gd->nexclude_groups; i++)
		side_set(b, s, make(b, gd->exclude_groups[i], arg, false));
	a.xn = s->nnames - a.xfirst;
	side_alt(s, a);
}

static const char *make_group_set(struct builder *b, size_t group, unsigned family, bool base)
{
	return group_set(b, group, (uint8_t)family, base);
}

/* The sets (or single addresses) of the groups excl[0..n) in one family,
 * appended to the side's names: each one's VM set, unless dead, and its
 * IP/CIDR members' sets; returns how many.  What takes an address out of
 * a part of a group's IP/CIDR members (gengine_net_part).  An excluded
 * group's IP/CIDR members count whole, also where its own exclusions take
 * some out of it (docs/CONFIG.md). */
static size_t excl_lookups(struct builder *b, struct side *s, const size_t *excl, size_t n,
			   uint8_t family)
{
	size_t before = s->nnames;
	char addr[PLAN_NAME_MAX];
	const char *name;

	for (size_t i = 0; i < n; i++) {
		side_set(b, s, group_set(b, excl[i], family, false));
		for (size_t k = 0; k < gengine_net_parts(b->e, excl[i]); k++)
			if ((name = group_net_set(b, excl[i], k, family, addr, sizeof(addr))))
				side_push(s, name, name == addr);
	}
	return s->nnames - before;
}

/* The parts of a group's IP/CIDR members in one family, as names of the
 * side; a part that groups exclude is an alternative at once, with their
 * sets as exclusions (the others become alternatives of their own, as
 * any set the side names). */
static void group_nets(struct builder *b, struct side *s, size_t group, uint8_t family)
{
	char addr[PLAN_NAME_MAX];
	const char *name;

	for (size_t k = 0; k < gengine_net_parts(b->e, group); k++) {
		struct side_alt a = { family, false, s->nnames, 1, 0, 0 };
		const size_t *excl;
		size_t n, nexcl;

		if (!(name = group_net_set(b, group, k, family, addr, sizeof(addr))))
			continue;
		side_push(s, name, name == addr);
		gengine_net_part(b->e, group, k, &n, &excl, &nexcl);
		if (!nexcl)
			continue;
		a.xfirst = s->nnames;
		a.xn = excl_lookups(b, s, excl, nexcl, family);
		side_alt(s, a);
	}
}

/* Whether name i belongs to an alternative already (a base and its
 * exclusions). */
static bool in_alt(const struct side *s, size_t i)
{
	for (size_t k = 0; k < s->nalts; k++)
		if ((i >= s->alts[k].first && i < s->alts[k].first + s->alts[k].n) ||
		    (i >= s->alts[k].xfirst && i < s->alts[k].xfirst + s->alts[k].xn))
			return true;
	return false;
}

/* A negated side's alternatives per family: at most this many (the
 * kernel rules of a policy rule multiply by them). */
#define NEG_MAX_ALTS 64

/* The IP/CIDR parts of a negated side with the same exclusions: an address
 * is in none of the parts when it is in none of their sets, or in one of
 * the sets of their exclusions, names[esc .. esc + nesc). */
struct neg_factor {
	const size_t *excl;
	size_t nexcl;
	size_t esc, nesc;
	size_t stride;      /* of its choice in the alternative's number */
};

/* A negated lookup of a part, names[first + at], and its factor. */
struct neg_part {
	size_t at, factor;
};

/* The alternatives of a negated side in one family: "in none of the items"
 * is, for each factor (the parts with the same exclusions), "in none of
 * its parts' sets" or "in one of its exclusions' sets", with every other
 * item's negated lookup; one alternative per choice, the first all
 * negated.  Beyond NEG_MAX_ALTS, the remaining factors' parts are negated
 * whole, as if nothing excluded from them (docs/DATAPLANE.md). */
static void negated_alts(struct builder *b, const struct dfw_side *side, struct side *s,
			 uint8_t family)
{
	size_t first = s->nnames, nneg, nalts = 1, nf = 0, capf = 0, np = 0, capp = 0;
	struct neg_factor *f = NULL;
	struct neg_part *parts = NULL;
	size_t *of;  /* per negated lookup: its factor + 1; 0: none */
	char addr[PLAN_NAME_MAX];
	const char *name;

	for (size_t i = 0; i < side->nrefs; i++) {
		size_t g = side->refs[i].idx;

		if (side->refs[i].kind != REF_GROUP)
			continue;
		side_set(b, s, group_set(b, g, family, false));
		for (size_t k = 0; k < gengine_net_parts(b->e, g); k++) {
			const size_t *excl;
			size_t n, nexcl, j = 0;

			if (!(name = group_net_set(b, g, k, family, addr, sizeof(addr))))
				continue;
			side_push(s, name, name == addr);
			gengine_net_part(b->e, g, k, &n, &excl, &nexcl);
			if (!nexcl)
				continue;
			while (j < nf && (f[j].nexcl != nexcl ||
					  memcmp(f[j].excl, excl, nexcl * sizeof(*excl))))
				j++;
			if (j == nf) {
				grow((void **)&f, &capf, nf + 1, sizeof(*f));
				f[nf++] = (struct neg_factor){ .excl = excl, .nexcl = nexcl };
			}
			grow((void **)&parts, &capp, np + 1, sizeof(*parts));
			parts[np++] = (struct neg_part){ s->nnames - 1 - first, j };
		}
	}
	if ((name = literal_set(b, side, family, addr, sizeof(addr))))
		side_push(s, name, name == addr);
	nneg = s->nnames - first;
	of = xcalloc(nneg + 1, sizeof(*of));
	for (size_t i = 0; i < np; i++)
		of[parts[i].at] = parts[i].factor + 1;
	for (size_t j = 0; j < nf; j++) {
		f[j].esc = s->nnames;
		f[j].nesc = excl_lookups(b, s, f[j].excl, f[j].nexcl, family);
		f[j].stride = nalts;
		if (nalts * (f[j].nesc + 1) > NEG_MAX_ALTS) {
			s->nnames = f[j].esc;
			f[j].nesc = 0;
		}
		nalts *= f[j].nesc + 1;
	}
	side_alt(s, (struct side_alt){ family, true, first, nneg, 0, 0 });
	for (size_t c = 1; c < nalts; c++) {
		struct side_alt a = { family, false, s->nnames, 0, 0, 0 };

		for (size_t j = 0; j < nf; j++) {
			size_t pick = c / f[j].stride % (f[j].nesc + 1);

			if (pick)
				side_copy(s, f[j].esc + pick - 1);
		}
		a.n = s->nnames - a.first;
		a.xfirst = s->nnames;
		for (size_t k = 0; k < nneg; k++)
			if (!of[k] || !(c / f[of[k] - 1].stride % (f[of[k] - 1].nesc + 1)))
				side_copy(s, first + k);
		a.xn = s->nnames - a.xfirst;
		side_alt(s, a);
	}
	free(f);
	free(parts);
	free(of);
}

static void side_build(struct builder *b, const struct dfw_side *side, struct side *s)
{
	static const uint8_t fams[] = { AF_INET, AF_INET6 };

	memset(s, 0, sizeof(*s));
	if (side->any) {
		if (!side->negate)
			side_alt(s, (struct side_alt){ 0 });
		return;
	}
	for (size_t f = 0; f < ARRAY_SIZE(fams); f++) {
		size_t first = s->nnames;
		char addr[PLAN_NAME_MAX];
		const char *name;

		if (side->negate) {
			negated_alts(b, side, s, fams[f]);
			continue;
		}
		for (size_t i = 0; i < side->nrefs; i++) {
			size_t g = side->refs[i].idx;

			if (side->refs[i].kind != REF_GROUP)
				continue;
			if (gengine_has_base(b->e, g))
				group_alt(b, s, g, true, fams[f], make_group_set, fams[f]);
			else
				side_set(b, s, group_set(b, g, fams[f], false));
			group_nets(b, s, g, fams[f]);
		}
		if ((name = literal_set(b, side, fams[f], addr, sizeof(addr))))
			side_push(s, name, name == addr);
		for (size_t i = first; i < s->nnames; i++)
			if (!in_alt(s, i))
				side_alt(s, (struct side_alt){ fams[f], false, i, 1, 0, 0 });
	}
}

static void side_free(struct side *s)
{
	free(s->alts);
	free(s->names);
	free(s->inline_addr);
}

/* Items grow in powers of two from 8 (a rule has 5-10): the capacity is
 * implied by the count, so struct prule needs no field for it. */
static struct pitem *rule_slot(struct prule *r)
{
	size_t n = r->nitems;

	if (n == 0 || (n >= 8 && !(n & (n - 1))))
		r->items = xrealloc(r->items, (n ? 2 * n : 8) * sizeof(*r->items));
	return &r->items[r->nitems++];
}

static void rule_push(struct prule *r, struct pitem it)
{
	*rule_slot(r) = it;
}

static void rule_push_named(struct prule *r, enum pitem_kind kind, uint32_t u, const char *name)
{
	struct pitem *it = rule_slot(r);

	*it = (struct pitem){ .kind = kind, .u = u };
	plan_name_copy(it->name, name);
}

struct chain_build {
	struct prule *rules;
	size_t n, cap;
	/* The counter name of the rule being emitted (counter_id + 1; 0:
	 * none yet): a policy rule emits many kernel rules. */
	uint32_t counter_id;
	char counter[PLAN_NAME_MAX];
};

static struct prule *chain_push(struct chain_build *cb, uint32_t rule_id)
{
	struct prule *r;

	grow((void **)&cb->rules, &cb->cap, cb->n + 1, sizeof(*cb->rules));
	r = &cb->rules[cb->n++];
	memset(r, 0, sizeof(*r));
	r->rule_id = rule_id;
	return r;
}

/* The named counter of a policy rule (0: the default rule) in one
 * direction: every kernel rule it compiles to counts there, so the count
 * survives chain rewrites and covers all the rule's families and services. */
static void counter_name(uint32_t id, bool out, char *buf, size_t len)
{
	if (id)
		snprintf(buf, len, "r-%u-%s", id, out ? "out" : "in");
	else
		snprintf(buf, len, "r-default-%s", out ? "out" : "in");
}

/* A rule's services folded per protocol: TCP or UDP with several port
 * ranges become one group matching a service set; an ICMP type (and code)
 * or another protocol is one group each. */
struct svc_group {
	uint8_t proto;   /* 0: any */
	uint16_t lo, hi; /* one range (0, 0: all ports) */
	int16_t icmp_type, icmp_code; /* ICMP / ICMPv6; -1: any */
	char ports[PLAN_NAME_MAX]; /* or a service set */
};

/* What one kernel rule matches (besides its action). */
struct match {
	const struct side *guard;     /* vNIC-id sets (one alternative), or NULL */
	uint8_t family;               /* AF_INET, AF_INET6; 0: both */
	const struct side *src, *dst;
	const struct side_alt *sa, *da; /* NULL: any address */
	const struct svc_group *svc;  /* NULL: any service */
};

/* The lookup of name k of a side, or its compare when it is an address. */
static void push_lookup(struct prule *r, enum pitem_kind kind, uint32_t u, const struct side *s,
			size_t k)
{
	enum pitem_kind kk = !s->inline_addr[k] ? kind :
			     kind == PI_SADDR_SET ? PI_SADDR_NET : PI_DADDR_NET;

	rule_push_named(r, kk, u, s->names[k]);
}

/* The lookups (or address compares) of one alternative; u: the flags
 * besides negation. */
static void push_side(struct prule *r, enum pitem_kind kind, uint32_t u, const struct side *s,
		      const struct side_alt *a)
{
	for (size_t i = 0; i < a->n; i++)
		push_lookup(r, kind, u | (a->negate ? PI_LOOKUP_NEG : 0), s, a->first + i);
	for (size_t i = 0; i < a->xn; i++)
		push_lookup(r, kind, u | PI_LOOKUP_NEG, s, a->xfirst + i);
}

/* The destination port test of a service (none for the TCP variant of a
 * reject of any protocol, whose group is of another protocol). */
static void push_port(struct prule *r, const struct svc_group *s, uint8_t proto)
{
	if (!s || s->proto != proto)
		return;
	if (s->ports[0])
		rule_push_named(r, PI_DPORT_SET, 0, s->ports);
	else if (s->lo)
		rule_push(r, (struct pitem){ .kind = PI_DPORT, .lo = s->lo, .hi = s->hi });
}

static void push_proto(struct prule *r, const struct svc_group *s, uint8_t proto)
{
	rule_push(r, (struct pitem){ .kind = PI_L4PROTO, .u = proto });
	if (!s || s->proto != proto)
		return;
	if (s->icmp_type >= 0) {
		rule_push(r, (struct pitem){ .kind = PI_ICMP_TYPE, .u = proto,
					     .lo = (uint16_t)s->icmp_type });
		if (s->icmp_code >= 0)
			rule_push(r, (struct pitem){ .kind = PI_ICMP_CODE, .u = proto,
						     .lo = (uint16_t)s->icmp_code });
	}
}

/* Appends the kernel rules of one action after the matches m.  Reject of
 * any protocol needs two: a TCP reset for TCP, ICMPX for the rest.  A drop
 * or reject in monitor mode logs and counts, and lets the packet through
 * as an allow would (seed 004's monitor mode: reported, never blocked). */
static void emit(struct chain_build *cb, uint32_t id, bool out, const struct match *m,
		 enum dfw_action act, bool log, bool monitor)
{
	uint8_t proto = m->svc ? m->svc->proto : 0;
	bool watch = monitor && act != ACT_ALLOW;
	int variants = act == ACT_REJECT && proto == 0 && !watch ? 2 : 1;
	char name[PLAN_NAME_MAX];

	for (int k = 0; k < variants; k++) {
		struct prule *r = chain_push(cb, id);
		uint8_t pr = variants == 2 && k == 0 ? IPPROTO_TCP : proto;
		enum pverdict v = act == ACT_ALLOW || watch ? (out ? PV_RETURN : PV_ACCEPT) :
				  act == ACT_DROP ? PV_DROP :
				  pr == IPPROTO_TCP ? PV_REJECT_TCP : PV_REJECT_ICMPX;

		/* Most selective and cheapest first: a new flow walks the
		 * whole chain, and most rules fail on the port (one load,
		 * one compare), then on family or protocol, before any set
		 * lookup.  The port is the transport header's, which the
		 * protocol test then pins to TCP or UDP: the tests are ANDed,
		 * so their order changes no verdict. */
		if (pr)
			push_port(r, m->svc, pr);
		if (m->family)
			rule_push(r, (struct pitem){ .kind = PI_NFPROTO,
				.u = m->family == AF_INET ? NFPROTO_IPV4 : NFPROTO_IPV6 });
		if (pr)
			push_proto(r, m->svc, pr);
		if (m->guard)
			push_side(r, PI_PORT_SET, out ? 0 : PI_PORT_DST, m->guard, m->guard->alts);
		if (m->sa)
			push_side(r, PI_SADDR_SET, 0, m->src, m->sa);
		if (m->da)
			push_side(r, PI_DADDR_SET, 0, m->dst, m->da);
		if (log || watch) {
			if (id)
				snprintf(name, sizeof(name), "dfw rule=%u %s %s", id,
					 out ? "out" : "in", watch ? "monitor " : "");
			else
				snprintf(name, sizeof(name), "dfw rule=default %s ",
					 out ? "out" : "in");
			rule_push_named(r, PI_LOG, 0, name);
		}
		if (cb->counter_id != id + 1) {
			counter_name(id, out, cb->counter, sizeof(cb->counter));
			cb->counter_id = id + 1;
		}
		rule_push_named(r, PI_COUNTER, 0, cb->counter);
		rule_push(r, (struct pitem){ .kind = PI_VERDICT, .u = v });
	}
}

/* A rule applied to groups sits in the host's one chain behind a lookup of
 * the vNIC id in the groups' id sets (port_set): which rules apply to a
 * vNIC then never shapes chains, and a tag that moves a VM between
 * applied-to groups edits set elements only. */
static bool rule_guarded(const struct dfw_rule *r)
{
	return !r->applied_everywhere;
}

struct port_ctx {
	const struct builder *b;
	struct pset *set;
};

/* A vNIC id as an element of a vNIC-id set. */
static struct dfw_addr id_elem(uint32_t id)
{
	struct dfw_addr a = { .family = 0, .plen = 32 };

	memcpy(a.a, &id, 4);
	return a;
}

static void add_member_port(void *arg, size_t vm)
{
	struct port_ctx *c = arg;
	struct dfw_addr id = id_elem((uint32_t)vm + 1);

	if (strcmp(c->b->p->inv.vms[vm].host, c->b->host))
		return;
	set_push(c->set, &id);
}

/* The set of the local vNIC ids of a group (or of its base), for a
 * guarded rule. */
static const char *port_set(struct builder *b, size_t group, bool dst, bool base)
{
	char name[PLAN_NAME_MAX];
	struct port_ctx c = { b, NULL };
	struct pset *s;

	port_set_name(b->p->inv.groups[group].name, dst, name, sizeof(name));
	base_name(name, sizeof(name), base);
	if ((s = find_set_mut(b, name)))
		return s->name;
	c.set = s = new_set(b, name, 0);
	s->dst = dst;
	fill_members(b, s, group, base, add_member_port, &c);
	return s->name;
}

/* The guard of a rule applied to a group, in one direction (dst: the
 * destination vNIC's id): the group's vNIC-id set, or its base's with the
 * excluded groups' as exclusions (group_alt).  No alternative when the
 * set is dead (no local vNIC can ever be in the group): the rule then
 * compiles to nothing on this host. */
static const char *make_port_set(struct builder *b, size_t group, unsigned dst, bool base)
{
	return port_set(b, group, dst, base);
}

static void guard_build(struct builder *b, size_t group, bool dst, struct side *s)
{
	memset(s, 0, sizeof(*s));
	group_alt(b, s, group, gengine_has_base(b->e, group), 0, make_port_set, dst);
}

/* Whether service group a matches everything b does (ICMP / other
 * protocols only). */
static bool svc_covers(const struct svc_group *a, const struct svc_group *b)
{
	return a->proto == b->proto &&
	       (a->icmp_type < 0 || (a->icmp_type == b->icmp_type &&
				     (a->icmp_code < 0 || a->icmp_code == b->icmp_code)));
}

static size_t svc_groups(struct builder *b, const struct dfw_rule *r, struct svc_group *out)
{
	static const uint8_t ported[] = { IPPROTO_TCP, IPPROTO_UDP };
	size_t n = 0, first;

	if (!r->nsvcs) {
		out[n++] = (struct svc_group){ .icmp_type = -1, .icmp_code = -1 };
		return n;
	}
	for (size_t p = 0; p < ARRAY_SIZE(ported); p++) {
		size_t count = 0, last = 0;
		bool all = false;

		for (size_t i = 0; i < r->nsvcs; i++) {
			if (r->svcs[i].proto != ported[p])
				continue;
			all |= !r->svcs[i].lo;
			count++;
			last = i;
		}
		if (!count)
			continue;
		out[n] = (struct svc_group){ .proto = ported[p], .icmp_type = -1, .icmp_code = -1 };
		if (!all && count == 1) {
			out[n].lo = r->svcs[last].lo;
			out[n].hi = r->svcs[last].hi;
		} else if (!all) {
			snprintf(out[n].ports, PLAN_NAME_MAX, "%s", service_set(b, r, ported[p]));
		}
		n++;
	}
	/* ICMP types and codes, other protocols: one group each, without
	 * repeats and without what an earlier or later item covers (icmp/8
	 * next to icmp). */
	first = n;
	for (size_t i = 0; i < r->nsvcs; i++) {
		const struct dfw_service *sv = &r->svcs[i];
		struct svc_group g = { .proto = sv->proto, .icmp_type = -1, .icmp_code = -1 };
		bool covered = false;
		size_t k = first;

		if (sv->proto == IPPROTO_TCP || sv->proto == IPPROTO_UDP || !sv->proto)
			continue;
		if ((sv->proto == IPPROTO_ICMP || sv->proto == IPPROTO_ICMPV6) &&
		    sv->icmp_type >= 0) {
			g.icmp_type = sv->icmp_type;
			g.icmp_code = sv->icmp_code >= 0 ? sv->icmp_code : -1;
		}
		for (size_t j = first; j < n; j++)
			covered |= svc_covers(&out[j], &g);
		if (covered)
			continue;
		for (size_t j = first; j < n; j++) /* drop what g covers */
			if (!svc_covers(&g, &out[j]))
				out[k++] = out[j];
		n = k;
		out[n++] = g;
	}
	return n;
}

/* The kernel rules of one policy rule: sources x destinations x services,
 * combinations whose families cannot meet skipped. */
static void emit_sides(struct chain_build *cb, const struct dfw_rule *r, bool out,
		       const struct side *guard, const struct side *src, const struct side *dst,
		       const struct svc_group *svcs, size_t nsvcs)
{
	for (size_t i = 0; i < src->nalts; i++) {
		for (size_t j = 0; j < dst->nalts; j++) {
			const struct side_alt *sa = &src->alts[i], *da = &dst->alts[j];
			uint8_t fam = sa->family ? sa->family : da->family;

			if (sa->family && da->family && sa->family != da->family)
				continue;
			for (size_t k = 0; k < nsvcs; k++) {
				const struct svc_group *s = &svcs[k];
				struct match m = { guard, fam, src, dst, sa->n ? sa : NULL,
						   da->n ? da : NULL, s };

				if (s->proto == IPPROTO_ICMP) {
					if (fam == AF_INET6)
						continue;
					m.family = AF_INET;
				} else if (s->proto == IPPROTO_ICMPV6) {
					if (fam == AF_INET)
						continue;
					m.family = AF_INET6;
				}
				emit(cb, r->id, out, &m, r->action, r->log, r->monitor);
			}
		}
	}
}

static void compile_rule(struct builder *b, struct chain_build *cb,
			 const struct dfw_rule *r, bool out)
{
	struct side src, dst;
	struct svc_group *svcs = xcalloc(r->nsvcs + 2, sizeof(*svcs));
	size_t nsvcs = svc_groups(b, r, svcs);
	bool guarded = rule_guarded(r);
	size_t nguards = guarded ? r->napplied : 1;

	side_build(b, &r->src, &src);
	side_build(b, &r->dst, &dst);
	for (size_t g = 0; g < nguards; g++) {
		struct side guard;

		if (!guarded) {
			emit_sides(cb, r, out, NULL, &src, &dst, svcs, nsvcs);
			continue;
		}
		guard_build(b, r->applied_to[g], !out, &guard);
		if (guard.nalts)
			emit_sides(cb, r, out, &guard, &src, &dst, svcs, nsvcs);
		side_free(&guard);
	}
	free(svcs);
	side_free(&src);
	side_free(&dst);
}

static uint64_t hash_rules(const struct prule *rules, size_t n)
{
	uint64_t h = FNV_INIT;

	for (size_t i = 0; i < n; i++) {
		h = fnv1a(h, &rules[i].rule_id, sizeof(rules[i].rule_id));
		for (size_t j = 0; j < rules[i].nitems; j++) {
			const struct pitem *it = &rules[i].items[j];

			h = fnv1a(h, &it->kind, sizeof(it->kind));
			h = fnv1a(h, &it->u, sizeof(it->u));
			h = fnv1a(h, &it->lo, sizeof(it->lo));
			h = fnv1a(h, &it->hi, sizeof(it->hi));
			h = fnv1a(h, it->name, strlen(it->name));
		}
	}
	return h;
}

static void free_rules(struct prule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(rules[i].items);
	free(rules);
}

const char *prule_comment(const struct prule *r, char *buf, size_t len)
{
	if (r->rule_id)
		snprintf(buf, len, "rule %u", r->rule_id);
	else
		snprintf(buf, len, "default");
	return buf;
}

/* The isolated vNICs (layout.h, DFW_SET_ISOLATED): the ids of the local
 * vNICs of VMs in a group with quarantine = yes.  enforce drops what is
 * flooded to them (broadcast, multicast) before anything else, new or
 * established: rules match a destination by its address, and a
 * broadcast's is no VM's, so `any -> quarantine drop` never matched it.
 * Made also on a host with no vNIC, as enforce names it. */
static bool vm_isolated(const struct dfw_policy *p, const struct gengine *e, size_t vm)
{
	for (size_t g = 0; g < p->inv.ngroups; g++)
		if (p->inv.groups[g].quarantine && gengine_is_member(e, g, vm))
			return true;
	return false;
}

static void isolated_set(struct builder *b)
{
	struct pset *s = new_set(b, DFW_SET_ISOLATED, 0);

	s->dst = true;
	s->hot = s->isolation = s->iso_group = true; /* first: every quarantine edits it */
	for (size_t i = 0; i < b->pl->nports; i++) {
		struct dfw_addr id = id_elem(b->pl->ports[i].id);

		if (vm_isolated(b->p, b->e, b->pl->ports[i].vm))
			set_push(s, &id);
	}
	set_normalize(s);
}

/* Builds the host's out or in chain: every enabled rule of that direction
 * (rules with applied_to behind their vNIC-id guards), then the default. */
static const char *vnic_chain(struct builder *b, bool out)
{
	const struct dfw_policy *p = b->p;
	struct chain_build cb = { 0 };
	uint32_t *ids = NULL;
	size_t nids = 0;
	char name[PLAN_NAME_MAX];
	struct pchain *c;

	for (size_t i = 0; i < p->nrules; i++) {
		const struct dfw_rule *r = &p->rules[i];

		if (r->disabled || !(r->dir & (out ? DIR_OUT : DIR_IN)))
			continue;
		compile_rule(b, &cb, r, out);
		ids = xrealloc(ids, (nids + 1) * sizeof(*ids));
		ids[nids++] = r->id;
	}
	emit(&cb, 0, out, &(struct match){ 0 }, p->default_action, p->default_log, false);
	/* A counter for every rule the chain enforces, also one that compiled
	 * to no kernel rule (icmp between IPv6-only sides): it reads 0. */
	for (size_t i = 0; i <= nids; i++) {
		grow((void **)&b->pl->counters, &b->capcounters, b->pl->ncounters + 1,
		     sizeof(*b->pl->counters));
		counter_name(i < nids ? ids[i] : 0, out, b->pl->counters[b->pl->ncounters++],
			     PLAN_NAME_MAX);
	}
	snprintf(name, sizeof(name), "%c-%016llx", out ? 'o' : 'i',
		 (unsigned long long)hash_rules(cb.rules, cb.n));
	for (size_t i = 0; i < b->pl->nchains; i++) {
		if (!strcmp(b->pl->chains[i].name, name)) { /* same content both ways */
			free_rules(cb.rules, cb.n);
			free(ids);
			return b->pl->chains[i].name;
		}
	}
	grow((void **)&b->pl->chains, &b->capchains, b->pl->nchains + 1, sizeof(*b->pl->chains));
	c = &b->pl->chains[b->pl->nchains++];
	memset(c, 0, sizeof(*c));
	plan_name_copy(c->name, name);
	c->rules = cb.rules;
	c->nrules = cb.n;
	c->rule_ids = ids;
	c->nrule_ids = nids;
	c->refs = 1;
	return c->name;
}

static int cmp_port(const void *x, const void *y)
{
	return strcmp(((const struct pport *)x)->ifname, ((const struct pport *)y)->ifname);
}

static int cmp_set(const void *x, const void *y)
{
	return strcmp(((const struct pset *)x)->name, ((const struct pset *)y)->name);
}

static int cmp_chain(const void *x, const void *y)
{
	return strcmp(((const struct pchain *)x)->name, ((const struct pchain *)y)->name);
}

static int cmp_name(const void *x, const void *y)
{
	return strcmp(x, y);
}

/* Counts each set's lookups (pset.refs), by the builder's name index. */
static void count_refs(struct builder *b)
{
	struct plan *pl = b->pl;

	for (size_t c = 0; c < pl->nchains; c++) {
		for (size_t r = 0; r < pl->chains[c].nrules; r++) {
			const struct prule *pr = &pl->chains[c].rules[r];

			for (size_t i = 0; i < pr->nitems; i++) {
				struct pset *s;

				switch (pr->items[i].kind) {
				case PI_PORT_SET:
				case PI_SADDR_SET:
				case PI_DADDR_SET:
				case PI_DPORT_SET:
					if ((s = find_set_mut(b, pr->items[i].name)))
						s->refs++;
					break;
				default:
					break;
				}
			}
		}
	}
}

static int cmp_creation(const void *x, const void *y, void *arg)
{
	const struct plan *pl = arg;
	const struct pset *a = &pl->sets[*(const size_t *)x];
	const struct pset *b = &pl->sets[*(const size_t *)y];

	if (a->hot != b->hot)
		return a->hot ? -1 : 1;
	if (a->isolation != b->isolation)
		return a->isolation ? -1 : 1;
	/* What a quarantine edits most often first: the isolation groups'
	 * own sets, which every quarantine edits, then by size, as a VM of a
	 * bigger group is quarantined more often. */
	if (a->isolation && a->iso_group != b->iso_group)
		return a->iso_group ? -1 : 1;
	if (a->isolation && a->nelems != b->nelems)
		return a->nelems > b->nelems ? -1 : 1;
	if (a->refs != b->refs)
		return a->refs > b->refs ? -1 : 1;
	return strcmp(a->name, b->name);
}

void plan_set_order(const struct plan *pl, size_t *order)
{
	for (size_t i = 0; i < pl->nsets; i++)
		order[i] = i;
	qsort_r(order, pl->nsets, sizeof(*order), cmp_creation, (void *)pl);
}

/* Room in the kernel for a set's elements (pset.size): twice as many, and
 * at least SET_ROOM_MIN more, so that a set needs a full load to grow only
 * once its elements double.  None for the sets tag changes edit (a tag
 * change must never wait for a full load) or for interval sets (the
 * kernel's tree of intervals takes no size). */
#define SET_ROOM_MIN 64

static uint32_t set_size(const struct pset *s)
{
	if (s->hot || s->interval || s->service)
		return 0;
	return (uint32_t)(s->nelems + (s->nelems > SET_ROOM_MIN ? s->nelems : SET_ROOM_MIN));
}

/* Drops the dead sets (set_dead), which no rule references. */
static void drop_dead_sets(struct plan *pl)
{
	size_t n = 0;

	for (size_t i = 0; i < pl->nsets; i++) {
		if (pl->sets[i].dead)
			free(pl->sets[i].elems);
		else
			pl->sets[n++] = pl->sets[i];
	}
	pl->nsets = n;
}

/* Fills the plan's group_sets and vm_port (once its sets and ports are
 * sorted). */
static void index_members(struct plan *pl, const struct dfw_policy *p)
{
	pl->ngroups = p->inv.ngroups;
	pl->group_sets = xmalloc((pl->ngroups + 1) * sizeof(*pl->group_sets));
	for (size_t g = 0; g < pl->ngroups; g++)
		for (size_t k = 0; k < MS_COUNT; k++)
			pl->group_sets[g][k] = SIZE_MAX;
	pl->isolated = SIZE_MAX;
	for (size_t i = 0; i < pl->nsets; i++) {
		if (pl->sets[i].member)
			pl->group_sets[pl->sets[i].group][pl->sets[i].kind] = i;
		else if (!strcmp(pl->sets[i].name, DFW_SET_ISOLATED))
			pl->isolated = i;
	}
	pl->nvms = p->inv.nvms;
	pl->vm_port = xmalloc((pl->nvms + 1) * sizeof(*pl->vm_port));
	for (size_t i = 0; i < pl->nvms; i++)
		pl->vm_port[i] = SIZE_MAX;
	for (size_t i = 0; i < pl->nports; i++)
		pl->vm_port[pl->ports[i].vm] = i;
}

/* Dispatch and factoring, chain by chain, on up to SHAPE_THREADS threads:
 * each reads the plan and writes its own chain only, and a host's two
 * policy chains (one per direction) take about as long as each other. */
#define SHAPE_THREADS 4

struct shape_job {
	const struct plan *pl;
	struct pchain *chains;
	size_t n;
	atomic_size_t next;
};

static void *shape_work(void *arg)
{
	struct shape_job *j = arg;
	size_t i;

	while ((i = atomic_fetch_add(&j->next, 1)) < j->n) {
		chain_dispatch(j->pl, &j->chains[i]);
		chain_factor(&j->chains[i]);
	}
	return NULL;
}

static void plan_shape(struct plan *pl)
{
	struct shape_job j = { .pl = pl, .chains = pl->chains, .n = pl->nchains };
	pthread_t t[SHAPE_THREADS - 1];
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	size_t want = cpus > 1 ? (size_t)cpus : 1, started = 0;

	atomic_init(&j.next, 0);
	if (want > SHAPE_THREADS)
		want = SHAPE_THREADS;
	if (want > pl->nchains)
		want = pl->nchains;
	while (started + 1 < want && !pthread_create(&t[started], NULL, shape_work, &j))
		started++;
	shape_work(&j); /* also all of it, when no thread could start */
	for (size_t i = 0; i < started; i++)
		pthread_join(t[i], NULL);
}

struct plan *plan_compile(const struct dfw_policy *p, const struct gengine *e,
			  const char *host)
{
	struct builder b = { .p = p, .e = e };
	char out_chain[PLAN_NAME_MAX] = "", in_chain[PLAN_NAME_MAX] = "";
	size_t nlocal = 0;

	b.pl = xcalloc(1, sizeof(*b.pl));
	b.host = host;
	for (size_t i = 0; i < p->inv.nvms; i++)
		nlocal += !strcmp(p->inv.vms[i].host, host);
	b.pl->ports = xcalloc(nlocal, sizeof(*b.pl->ports));
	for (size_t i = 0; i < p->inv.nvms; i++) {
		const struct vm *v = &p->inv.vms[i];
		struct pport *pp;

		if (strcmp(v->host, host))
			continue;
		pp = &b.pl->ports[b.pl->nports++];
		snprintf(pp->ifname, sizeof(pp->ifname), "%s", v->port);
		pp->id = (uint32_t)i + 1;
		pp->vm = i;
		memcpy(pp->mac, v->mac, 6);
		/* What the vNIC may send from: the VM's addresses as a member
		 * (its link-local too), and "::", the source of IPv6 duplicate
		 * address detection. */
		pp->addrs = xcalloc(v->naddrs + 2, sizeof(*pp->addrs));
		for (size_t k = 0; vm_member_addr(v, 0, &k, &pp->addrs[pp->naddrs]);)
			pp->naddrs++;
		pp->addrs[pp->naddrs++] = (struct dfw_addr){ .family = AF_INET6, .plen = 128 };
		/* addresses = learn: a family with no locked address yet has its
		 * ARP / neighbour discovery / DHCP copied to the learn group. */
		pp->learn4 = pp->learn6 = v->learn;
		for (size_t a = 0; a < v->naddrs; a++) {
			if (v->addrs[a].family == AF_INET)
				pp->learn4 = false;
			else
				pp->learn6 = false;
		}
		qsort(pp->addrs, pp->naddrs, sizeof(*pp->addrs), cmp_addr);
		if (!out_chain[0]) {
			snprintf(out_chain, sizeof(out_chain), "%s", vnic_chain(&b, true));
			snprintf(in_chain, sizeof(in_chain), "%s", vnic_chain(&b, false));
		}
		snprintf(pp->out_chain, sizeof(pp->out_chain), "%s", out_chain);
		snprintf(pp->in_chain, sizeof(pp->in_chain), "%s", in_chain);
	}
	for (size_t i = 0; i < b.pl->nchains; i++)
		b.pl->chains[i].refs = b.pl->nports;
	isolated_set(&b);
	count_refs(&b);
	drop_dead_sets(b.pl);
	for (size_t i = 0; i < b.pl->nsets; i++)
		b.pl->sets[i].size = set_size(&b.pl->sets[i]);
	free(b.sets_by_name.hash);
	free(b.sets_by_name.pos);
	if (b.pl->nports)
		qsort(b.pl->ports, b.pl->nports, sizeof(*b.pl->ports), cmp_port);
	if (b.pl->nsets)
		qsort(b.pl->sets, b.pl->nsets, sizeof(*b.pl->sets), cmp_set);
	if (b.pl->nchains)
		qsort(b.pl->chains, b.pl->nchains, sizeof(*b.pl->chains), cmp_chain);
	index_members(b.pl, p);
	plan_shape(b.pl);
	if (b.pl->ncounters) {
		size_t n = 1;

		qsort(b.pl->counters, b.pl->ncounters, sizeof(*b.pl->counters), cmp_name);
		for (size_t i = 1; i < b.pl->ncounters; i++)
			if (strcmp(b.pl->counters[i], b.pl->counters[n - 1]))
				memcpy(b.pl->counters[n++], b.pl->counters[i], PLAN_NAME_MAX);
		b.pl->ncounters = n;
	}
	return b.pl;
}

void plan_free(struct plan *pl)
{
	if (!pl)
		return;
	for (size_t i = 0; i < pl->nports; i++)
		free(pl->ports[i].addrs);
	for (size_t i = 0; i < pl->nsets; i++)
		free(pl->sets[i].elems);
	for (size_t i = 0; i < pl->nchains; i++) {
		free_rules(pl->chains[i].rules, pl->chains[i].nrules);
		free(pl->chains[i].rule_ids);
		dispatch_free(&pl->chains[i]);
	}
	free(pl->ports);
	free(pl->sets);
	free(pl->chains);
	free(pl->counters);
	free(pl->group_sets);
	free(pl->vm_port);
	free(pl);
}

#define FIND(arr, n, key, field)                                              \
	do {                                                                  \
		size_t lo_ = 0, hi_ = (n);                                    \
		while (lo_ < hi_) {                                           \
			size_t mid_ = (lo_ + hi_) / 2;                        \
			int c_ = strcmp((arr)[mid_].field, key);              \
			if (!c_)                                              \
				return &(arr)[mid_];                          \
			if (c_ < 0)                                           \
				lo_ = mid_ + 1;                               \
			else                                                  \
				hi_ = mid_;                                   \
		}                                                             \
		return NULL;                                                  \
	} while (0)

const struct pchain *plan_find_chain(const struct plan *pl, const char *name)
{
	FIND(pl->chains, pl->nchains, name, name);
}

const struct pset *plan_find_set(const struct plan *pl, const char *name)
{
	FIND(pl->sets, pl->nsets, name, name);
}

const struct pport *plan_find_port(const struct plan *pl, const char *ifname)
{
	FIND(pl->ports, pl->nports, ifname, ifname);
}

/* --- diff ------------------------------------------------------------------ */

#define PUSH(arr, n, val)                                                     \
	do {                                                                  \
		(arr) = xrealloc((arr), ((n) + 1) * sizeof(*(arr)));          \
		(arr)[(n)++] = (val);                                         \
	} while (0)

static bool port_equal(const struct pport *a, const struct pport *b)
{
	return a->id == b->id && !memcmp(a->mac, b->mac, 6) &&
	       a->learn4 == b->learn4 && a->learn6 == b->learn6 &&
	       a->naddrs == b->naddrs &&
	       !memcmp(a->addrs, b->addrs, a->naddrs * sizeof(*a->addrs)) &&
	       !strcmp(a->out_chain, b->out_chain) && !strcmp(a->in_chain, b->in_chain);
}

static void diff_elems(const struct pset *from, const struct pset *to, struct plan_diff *d)
{
	size_t i = 0, j = 0;

	while (i < from->nelems || j < to->nelems) {
		int c = i == from->nelems ? 1 : j == to->nelems ? -1 :
			addr_cmp(&from->elems[i], &to->elems[j]);

		if (c < 0) {
			PUSH(d->elem_del, d->nelem_del, ((struct pelem_change){ from, from->elems[i] }));
			i++;
		} else if (c > 0) {
			PUSH(d->elem_add, d->nelem_add, ((struct pelem_change){ to, to->elems[j] }));
			j++;
		} else {
			i++;
			j++;
		}
	}
}

void plan_diff(const struct plan *from, const struct plan *to, struct plan_diff *d)
{
	static const struct plan empty;
	size_t i, j;

	memset(d, 0, sizeof(*d));
	from = from ? from : &empty;
	for (i = 0, j = 0; i < from->nports || j < to->nports;) {
		int c = i == from->nports ? 1 : j == to->nports ? -1 :
			strcmp(from->ports[i].ifname, to->ports[j].ifname);

		if (c < 0) {
			PUSH(d->port_del, d->nport_del, &from->ports[i]);
		} else if (c > 0) {
			PUSH(d->port_add, d->nport_add, &to->ports[j]);
		} else if (!port_equal(&from->ports[i], &to->ports[j])) {
			PUSH(d->port_del, d->nport_del, &from->ports[i]);
			PUSH(d->port_add, d->nport_add, &to->ports[j]);
		}
		i += c <= 0;
		j += c >= 0;
	}
	for (i = 0, j = 0; i < from->nsets || j < to->nsets;) {
		int c = i == from->nsets ? 1 : j == to->nsets ? -1 :
			strcmp(from->sets[i].name, to->sets[j].name);

		if (c == 0 && from->sets[i].family == to->sets[j].family) {
			diff_elems(&from->sets[i], &to->sets[j], d);
		} else {
			if (c <= 0)
				PUSH(d->set_del, d->nset_del, &from->sets[i]);
			if (c >= 0)
				PUSH(d->set_add, d->nset_add, &to->sets[j]);
		}
		i += c <= 0;
		j += c >= 0;
	}
	for (i = 0, j = 0; i < from->nchains || j < to->nchains;) {
		int c = i == from->nchains ? 1 : j == to->nchains ? -1 :
			strcmp(from->chains[i].name, to->chains[j].name);

		if (c < 0)
			PUSH(d->chain_del, d->nchain_del, &from->chains[i]);
		if (c > 0)
			PUSH(d->chain_add, d->nchain_add, &to->chains[j]);
		i += c <= 0;
		j += c >= 0;
	}
	/* Counters by name: one that stays keeps its kernel object (and its
	 * count), whatever happens to the chains that use it. */
	for (i = 0, j = 0; i < from->ncounters || j < to->ncounters;) {
		int c = i == from->ncounters ? 1 : j == to->ncounters ? -1 :
			strcmp(from->counters[i], to->counters[j]);

		if (c < 0)
			PUSH(d->counter_del, d->ncounter_del, from->counters[i]);
		if (c > 0)
			PUSH(d->counter_add, d->ncounter_add, to->counters[j]);
		i += c <= 0;
		j += c >= 0;
	}
}

/* Calls fn on each set of `to` that plan_diff(from, to) keeps, with its
 * counterpart in from, until fn returns true; returns that set. */
static const struct pset *kept_sets(const struct plan *from, struct plan *to,
				    bool (*fn)(const struct pset *f, struct pset *t))
{
	for (size_t i = 0, j = 0; i < from->nsets && j < to->nsets;) {
		int c = strcmp(from->sets[i].name, to->sets[j].name);

		if (c == 0 && from->sets[i].family == to->sets[j].family &&
		    fn(&from->sets[i], &to->sets[j]))
			return &to->sets[j];
		i += c <= 0;
		j += c >= 0;
	}
	return NULL;
}

static bool overfills(const struct pset *f, struct pset *t)
{
	return f->size && t->nelems > f->size;
}

static bool keep_size(const struct pset *f, struct pset *t)
{
	t->size = f->size;
	return false;
}

const struct pset *plan_keep_sizes(const struct plan *from, struct plan *to)
{
	const struct pset *over = kept_sets(from, to, overfills);

	if (!over)
		kept_sets(from, to, keep_size);
	return over;
}

void plan_diff_free(struct plan_diff *d)
{
	if (!d)
		return;
	free(d->port_del);
	free(d->port_add);
	free(d->set_del);
	free(d->set_add);
	free(d->elem_del);
	free(d->elem_add);
	free(d->chain_del);
	free(d->chain_add);
	free(d->counter_del);
	free(d->counter_add);
	memset(d, 0, sizeof(*d));
}

bool plan_diff_empty(const struct plan_diff *d)
{
	return !(d->nport_del || d->nport_add || d->nset_del || d->nset_add ||
		 d->nelem_del || d->nelem_add || d->nchain_del || d->nchain_add ||
		 d->ncounter_del || d->ncounter_add);
}

/* --- incremental ------------------------------------------------------------ */

/* Where a would sit in the set's sorted elements; *found when it is there. */
static size_t set_find(const struct pset *s, const struct dfw_addr *a, bool *found)
{
	size_t lo = 0, hi = s->nelems;

	*found = false;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = addr_cmp(&s->elems[mid], a);

		if (!c) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool set_has(const struct pset *s, const struct dfw_addr *a)
{
	bool found;

	set_find(s, a, &found);
	return found;
}

static void elem_delta(const struct pset *s, const struct dfw_addr *a, bool in,
		       struct plan_diff *d)
{
	if (in == set_has(s, a))
		return;
	if (in)
		PUSH(d->elem_add, d->nelem_add, ((struct pelem_change){ s, *a }));
	else
		PUSH(d->elem_del, d->nelem_del, ((struct pelem_change){ s, *a }));
}

/* Puts a vNIC id into set s (when the plan has it) or takes it out. */
static void id_delta(const struct plan *pl, size_t s, uint32_t id, bool in, struct plan_diff *d)
{
	struct dfw_addr a = id_elem(id);

	if (s != SIZE_MAX)
		elem_delta(&pl->sets[s], &a, in, d);
}

/* Puts a VM's addresses of one family as a member (vm_member_addr, as
 * add_member_addrs) into set s (when the plan has it) or takes them out. */
static void addrs_delta(const struct plan *pl, size_t s, uint8_t family, const struct vm *v,
			bool in, struct plan_diff *d)
{
	struct dfw_addr a;

	for (size_t i = 0; s != SIZE_MAX && vm_member_addr(v, family, &i, &a);)
		elem_delta(&pl->sets[s], &a, in, d);
}

void plan_member_delta(const struct plan *pl, const struct gengine *e,
		       const struct dfw_policy *p, size_t group, size_t vm,
		       struct plan_diff *d)
{
	const size_t *sets = pl->group_sets[group];
	const struct vm *v = &p->inv.vms[vm];
	bool joined = gengine_is_member(e, group, vm);
	bool has_base = gengine_has_base(e, group);
	bool in_base = has_base && gengine_is_base_member(e, group, vm);

	/* The group's local vNIC id sets (guarded rules), when the VM is local. */
	if (pl->vm_port[vm] != SIZE_MAX) {
		uint32_t id = pl->ports[pl->vm_port[vm]].id;

		id_delta(pl, sets[MS_PORT_OUT], id, joined, d);
		id_delta(pl, sets[MS_PORT_IN], id, joined, d);
		if (has_base) {
			id_delta(pl, sets[MS_BASE_OUT], id, in_base, d);
			id_delta(pl, sets[MS_BASE_IN], id, in_base, d);
		}
	}
	/* Isolated, a local VM of a group with quarantine = yes: once for all
	 * such groups (a delta of each may come in one change). */
	if (p->inv.groups[group].quarantine && pl->vm_port[vm] != SIZE_MAX &&
	    pl->isolated != SIZE_MAX) {
		struct dfw_addr id = id_elem(pl->ports[pl->vm_port[vm]].id);
		bool queued = false;

		for (size_t i = 0; i < d->nelem_add; i++)
			queued |= d->elem_add[i].set == &pl->sets[pl->isolated] &&
				  !addr_cmp(&d->elem_add[i].addr, &id);
		for (size_t i = 0; i < d->nelem_del; i++)
			queued |= d->elem_del[i].set == &pl->sets[pl->isolated] &&
				  !addr_cmp(&d->elem_del[i].addr, &id);
		if (!queued)
			elem_delta(&pl->sets[pl->isolated], &id, vm_isolated(p, e, vm), d);
	}
	addrs_delta(pl, sets[MS_ADDR4], AF_INET, v, joined, d);
	addrs_delta(pl, sets[MS_ADDR6], AF_INET6, v, joined, d);
	if (has_base) {
		addrs_delta(pl, sets[MS_BASE4], AF_INET, v, in_base, d);
		addrs_delta(pl, sets[MS_BASE6], AF_INET6, v, in_base, d);
	}
}

const struct pset *plan_delta_overflow(const struct plan_diff *d)
{
	for (size_t i = 0; i < d->nelem_add; i++) {
		const struct pset *s = d->elem_add[i].set;
		size_t n = s->nelems;

		if (!s->size)
			continue;
		for (size_t k = 0; k < d->nelem_add; k++)
			n += d->elem_add[k].set == s;
		for (size_t k = 0; k < d->nelem_del; k++)
			n -= d->elem_del[k].set == s;
		if (n > s->size)
			return s;
	}
	return NULL;
}

static struct pset *set_mut(struct plan *pl, const struct pset *s)
{
	return &pl->sets[s - pl->sets];
}

static int cmp_change(const void *x, const void *y)
{
	const struct pelem_change *a = x, *b = y;

	if (a->set != b->set)
		return a->set < b->set ? -1 : 1;
	return addr_cmp(&a->addr, &b->addr);
}

/* Deletes del from and inserts add into a set's sorted elements, each in
 * place at its binary-searched position: a tag change edits a few elements
 * of sets that may hold thousands, so no pass over the whole set. */
static void edit_set(struct pset *s, const struct pelem_change *del, size_t nd,
		     const struct pelem_change *add, size_t na)
{
	bool found;

	for (size_t i = 0; i < nd; i++) {
		size_t at = set_find(s, &del[i].addr, &found);

		if (!found)
			continue;
		memmove(&s->elems[at], &s->elems[at + 1], (s->nelems - at - 1) * sizeof(*s->elems));
		s->nelems--;
	}
	for (size_t i = 0; i < na; i++) {
		size_t at = set_find(s, &add[i].addr, &found);

		if (found)
			continue;
		grow((void **)&s->elems, &s->cap, s->nelems + 1, sizeof(*s->elems));
		memmove(&s->elems[at + 1], &s->elems[at], (s->nelems - at) * sizeof(*s->elems));
		s->elems[at] = add[i].addr;
		s->nelems++;
	}
}

void plan_apply_elems(struct plan *pl, const struct plan_diff *d)
{
	struct pelem_change *del = xcalloc(d->nelem_del + 1, sizeof(*del));
	struct pelem_change *add = xcalloc(d->nelem_add + 1, sizeof(*add));
	size_t di = 0, ai = 0;

	if (d->nelem_del) {
		memcpy(del, d->elem_del, d->nelem_del * sizeof(*del));
		qsort(del, d->nelem_del, sizeof(*del), cmp_change);
	}
	if (d->nelem_add) {
		memcpy(add, d->elem_add, d->nelem_add * sizeof(*add));
		qsort(add, d->nelem_add, sizeof(*add), cmp_change);
	}
	/* Walk the sets that changed, in the (pointer) order of both lists. */
	while (di < d->nelem_del || ai < d->nelem_add) {
		const struct pset *s = di == d->nelem_del ? add[ai].set :
				       ai == d->nelem_add ? del[di].set :
				       del[di].set < add[ai].set ? del[di].set : add[ai].set;
		size_t dj = di, aj = ai;

		while (dj < d->nelem_del && del[dj].set == s)
			dj++;
		while (aj < d->nelem_add && add[aj].set == s)
			aj++;
		edit_set(set_mut(pl, s), del + di, dj - di, add + ai, aj - ai);
		di = dj;
		ai = aj;
	}
	free(del);
	free(add);
}
