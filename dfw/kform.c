/* The kernel's form of a policy chain: its rules with their dispatch by
 * port (dfw/dispatch.c) and factored runs (dfw/factor.c), walked in one
 * order by the backend, the printer and disp_size, so that they cannot
 * disagree. */
#include "dfw/compile.h"

#include "common/util.h"

#include <string.h>

void kform_walk(const struct pchain *c, const struct kform_ops *ops, void *arg)
{
	char name[PLAN_NAME_MAX];
	struct kwalk w = { 0 };

	for (size_t f = 0; f < c->nfacts; f++) {
		fact_leaf_name(c, &c->facts[f], name, sizeof(name));
		ops->chain(arg, name);
		for (size_t i = 0; i < c->facts[f].nleaf; i++)
			ops->rule(arg, &c->facts[f].leaf[i], true);
		ops->end(arg);
	}
	for (size_t k = 0; k < c->nsegs; k++) {
		for (size_t j = 0; j < c->segs[k].natoms; j++) {
			const struct pdisp_atom *a = &c->segs[k].atoms[j];

			if (a->chain != j)
				continue;
			disp_atom_name(c, k, j, name, sizeof(name));
			ops->chain(arg, name);
			for (size_t i = 0; i < a->nrules; i++) {
				const struct prule *r = kwalk_rule(&w, c, a->rules[i]);

				if (r)
					ops->rule(arg, r, true);
			}
			ops->end(arg);
			kwalk_free(&w); /* a new place */
		}
		ops->map(arg, c, k);
	}
	ops->chain(arg, c->name);
	for (size_t i = 0; i < c->nrules; i++) {
		const struct pdisp_seg *seg = disp_seg_at(c, i);
		const struct prule *r;

		if (!seg) {
			if ((r = kwalk_rule(&w, c, i)))
				ops->rule(arg, r, false);
			continue;
		}
		for (size_t p = 0; p < ARRAY_SIZE(disp_protos); p++)
			if (disp_has_proto(seg, disp_protos[p]))
				ops->map_lookup(arg, c, (size_t)(seg - c->segs), disp_protos[p]);
		for (size_t k = seg->first; k < seg->end; k++)
			if (disp_other_proto(&c->rules[k]) && (r = kwalk_rule(&w, c, k)))
				ops->rule(arg, r, false);
		i = seg->end - 1;
	}
	ops->end(arg);
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

static void sz_map(void *arg, const struct pchain *c, size_t seg)
{
	struct size_ctx *s = arg;
	const struct pdisp_seg *sg = &c->segs[seg];

	for (size_t p = 0; p < ARRAY_SIZE(disp_protos); p++)
		s->sz->maps += disp_has_proto(sg, disp_protos[p]);
	for (size_t j = 0; j < sg->natoms; j++)
		s->sz->elems += sg->atoms[j].hi < 65535 ? 2 : 1;
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
