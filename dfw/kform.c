/* The kernel's form of a policy chain: its rules with their dispatch by
 * port (dfw/dispatch.c) and factored runs (dfw/factor.c), walked in one
 * order by the backend, the printer and disp_size, so that they cannot
 * disagree. */
#include "dfw/compile.h"

#include "common/util.h"

#include <stdlib.h>
#include <string.h>

#define CALL(ops, f, ...)                  \
	do {                               \
		if ((ops)->f)              \
			(ops)->f(__VA_ARGS__); \
	} while (0)

/* Segment k's maps, one per protocol with atoms. */
static void walk_maps(const struct pchain *c, size_t k, const struct kform_ops *ops, void *arg)
{
	const struct pdisp_seg *s = &c->segs[k];
	struct kform_jump *j = xcalloc(s->natoms + 1, sizeof(*j));
	char name[PLAN_NAME_MAX];

	for (size_t p = 0; p < ARRAY_SIZE(disp_protos); p++) {
		size_t n = 0;

		for (size_t i = 0; i < s->natoms; i++) {
			const struct pdisp_atom *a = &s->atoms[i];

			if (a->proto != disp_protos[p])
				continue;
			j[n].lo = a->lo;
			j[n].hi = a->hi;
			disp_atom_name(c, k, a->chain, j[n].atom, sizeof(j[n].atom));
			n++;
		}
		if (!n)
			continue;
		disp_map_name(c, k, disp_protos[p], name, sizeof(name));
		ops->map(arg, name, j, n);
	}
	free(j);
}

void kform_walk(const struct pchain *c, const struct kform_ops *ops, void *arg)
{
	char name[PLAN_NAME_MAX];
	struct kwalk w = { 0 };

	for (size_t f = 0; f < c->nfacts; f++) {
		fact_leaf_name(c, &c->facts[f], name, sizeof(name));
		CALL(ops, chain, arg, name);
		for (size_t i = 0; i < c->facts[f].nleaf; i++)
			CALL(ops, rule, arg, &c->facts[f].leaf[i], true);
		CALL(ops, end, arg);
	}
	for (size_t k = 0; k < c->nsegs; k++) {
		for (size_t j = 0; j < c->segs[k].natoms; j++) {
			const struct pdisp_atom *a = &c->segs[k].atoms[j];

			if (a->chain != j)
				continue;
			disp_atom_name(c, k, j, name, sizeof(name));
			CALL(ops, chain, arg, name);
			for (size_t i = 0; ops->rule && i < a->nrules; i++) {
				const struct prule *r = kwalk_rule(&w, c, a->rules[i]);

				if (r)
					ops->rule(arg, r, true);
			}
			CALL(ops, end, arg);
			kwalk_free(&w); /* a new place */
		}
		if (ops->map)
			walk_maps(c, k, ops, arg);
	}
	CALL(ops, chain, arg, c->name);
	for (size_t i = 0; i < c->nrules; i++) {
		const struct pdisp_seg *seg = disp_seg_at(c, i);
		const struct prule *r;

		if (!seg) {
			if (ops->rule && (r = kwalk_rule(&w, c, i)))
				ops->rule(arg, r, false);
			continue;
		}
		for (size_t p = 0; p < ARRAY_SIZE(disp_protos); p++)
			if (disp_has_proto(seg, disp_protos[p]))
				CALL(ops, map_lookup, arg, c, (size_t)(seg - c->segs), disp_protos[p]);
		for (size_t k = seg->first; ops->rule && k < seg->end; k++)
			if (disp_other_proto(&c->rules[k]) && (r = kwalk_rule(&w, c, k)))
				ops->rule(arg, r, false);
		i = seg->end - 1;
	}
	CALL(ops, end, arg);
	kwalk_free(&w);
}

/* --- disp_size ------------------------------------------------------------------ */

struct size_ctx {
	struct disp_size *sz;
	bool main; /* in the chain itself: what every new flow walks */
	const char *name;
};

static void sz_chain(void *arg, const char *name)
{
	struct size_ctx *s = arg;

	s->sz->chains++;
	s->main = !strcmp(name, s->name);
}

static void sz_end(void *arg)
{
	((struct size_ctx *)arg)->main = false;
}

static void sz_rule(void *arg, const struct prule *r, bool atom)
{
	struct size_ctx *s = arg;

	(void)r;
	s->sz->rules++;
	s->sz->walked += s->main && !atom;
}

static void sz_map(void *arg, const char *name, const struct kform_jump *j, size_t n)
{
	struct size_ctx *s = arg;

	(void)name;
	s->sz->maps++;
	for (size_t i = 0; i < n; i++)
		s->sz->elems += j[i].hi < 65535 ? 2 : 1;
}

static void sz_map_lookup(void *arg, const struct pchain *c, size_t seg, uint8_t proto)
{
	struct size_ctx *s = arg;

	(void)c, (void)seg, (void)proto;
	s->sz->rules++;
}

void disp_size(const struct pchain *c, struct disp_size *sz)
{
	static const struct kform_ops ops = {
		sz_chain, sz_end, sz_rule, sz_map, sz_map_lookup,
	};
	struct size_ctx s = { sz, false, c->name };

	memset(sz, 0, sizeof(*sz));
	kform_walk(c, &ops, &s);
}
