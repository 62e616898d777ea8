/* Policy-level differences for `dfwctl plan`. */
#include "dfw/whatif.h"

#include <string.h>

static bool str_same(const char *a, const char *b)
{
	return !strcmp(a ? a : "", b ? b : "");
}

static const char *ref_name(const struct dfw_policy *p, const struct dfw_ref *r)
{
	return r->kind == REF_GROUP ? p->inv.groups[r->idx].name : p->inv.vms[r->idx].name;
}

static bool side_same(const struct dfw_policy *pa, const struct dfw_side *a,
		      const struct dfw_policy *pb, const struct dfw_side *b)
{
	if (a->any != b->any || a->negate != b->negate || a->nrefs != b->nrefs)
		return false;
	for (size_t i = 0; i < a->nrefs; i++) {
		const struct dfw_ref *x = &a->refs[i], *y = &b->refs[i];

		if (x->kind != y->kind)
			return false;
		if (x->kind == REF_ADDR ? addr_cmp(&x->addr, &y->addr) != 0
					: strcmp(ref_name(pa, x), ref_name(pb, y)) != 0)
			return false;
	}
	return true;
}

bool rule_same(const struct dfw_policy *pa, const struct dfw_rule *a,
	       const struct dfw_policy *pb, const struct dfw_rule *b)
{
	if (a->id != b->id || !str_same(a->name, b->name) || a->category != b->category ||
	    a->dir != b->dir || a->action != b->action || a->log != b->log ||
	    a->disabled != b->disabled || a->monitor != b->monitor ||
	    a->applied_everywhere != b->applied_everywhere || a->napplied != b->napplied ||
	    a->nsvcs != b->nsvcs || !side_same(pa, &a->src, pb, &b->src) ||
	    !side_same(pa, &a->dst, pb, &b->dst))
		return false;
	for (size_t i = 0; i < a->nsvcs; i++) {
		const struct dfw_service *x = &a->svcs[i], *y = &b->svcs[i];

		if (x->proto != y->proto || x->lo != y->lo || x->hi != y->hi ||
		    x->icmp_type != y->icmp_type || x->icmp_code != y->icmp_code)
			return false;
	}
	for (size_t i = 0; i < a->napplied; i++)
		if (strcmp(pa->inv.groups[a->applied_to[i]].name, pb->inv.groups[b->applied_to[i]].name))
			return false;
	return true;
}

static void change(struct out *o, const char *what, const char *name, const char *detail)
{
	out_obj_start(o, NULL);
	out_str(o, "change", what);
	out_str(o, "name", name);
	if (detail && *detail)
		out_str(o, "detail", detail);
	out_obj_end(o);
}

static size_t rules_diff(struct out *o, const struct dfw_policy *old, const struct dfw_policy *nw)
{
	size_t n = 0;
	char id[16];

	out_arr_start(o, "rules");
	for (size_t i = 0; i < old->nrules; i++) {
		const struct dfw_rule *r = &old->rules[i], *m = policy_find_rule(nw, r->id);

		snprintf(id, sizeof(id), "%u", r->id);
		if (!m) {
			change(o, "removed", id, r->name);
			n++;
		} else if (!rule_same(old, r, nw, m)) {
			change(o, "changed", id, m->name);
			n++;
		}
	}
	for (size_t i = 0; i < nw->nrules; i++) {
		const struct dfw_rule *r = &nw->rules[i];

		snprintf(id, sizeof(id), "%u", r->id);
		if (!policy_find_rule(old, r->id)) {
			change(o, "added", id, r->name);
			n++;
		}
	}
	/* First match wins: the same rules in another order change the policy. */
	for (size_t i = 0, j = 0; i < old->nrules && j < nw->nrules;) {
		if (!policy_find_rule(nw, old->rules[i].id)) {
			i++;
		} else if (!policy_find_rule(old, nw->rules[j].id)) {
			j++;
		} else if (old->rules[i].id != nw->rules[j].id) {
			snprintf(id, sizeof(id), "%u", nw->rules[j].id);
			change(o, "moved", id, "evaluation order changed");
			n++;
			break;
		} else {
			i++;
			j++;
		}
	}
	/* The default rule: the most consequential edit of all. */
	if (old->default_action != nw->default_action || old->default_log != nw->default_log) {
		char detail[64];

		snprintf(detail, sizeof(detail), "%s%s -> %s%s", action_name(old->default_action),
			 old->default_log ? ", logged" : "", action_name(nw->default_action),
			 nw->default_log ? ", logged" : "");
		change(o, "changed", "default", detail);
		n++;
	}
	out_arr_end(o);
	return n;
}

struct names {
	const struct dfw_policy *p;
	struct strv v;
};

static void collect(void *arg, size_t vm)
{
	struct names *n = arg;

	strv_push(&n->v, n->p->inv.vms[vm].name);
}

static size_t members_diff(struct out *o, const struct dfw_policy *old, const struct gengine *oe,
			   const struct dfw_policy *nw, const struct gengine *ne)
{
	size_t n = 0;

	out_arr_start(o, "members");
	for (size_t g = 0; g < nw->inv.ngroups; g++) {
		long og = policy_find_group(old, nw->inv.groups[g].name);
		struct names a = { old, { 0 } }, b = { nw, { 0 } };

		if (og >= 0) /* a new group: every member joins */
			gengine_foreach_member(oe, (size_t)og, collect, &a);
		gengine_foreach_member(ne, g, collect, &b);
		for (int k = 0; k < 2; k++) {
			const struct strv *from = k ? &a.v : &b.v, *to = k ? &b.v : &a.v;

			for (size_t i = 0; i < from->n; i++) {
				if (strv_contains(to, from->v[i], false))
					continue;
				out_obj_start(o, NULL);
				out_str(o, "group", nw->inv.groups[g].name);
				out_str(o, "vm", from->v[i]);
				out_str(o, "change", k ? "leaves" : "joins");
				out_obj_end(o);
				n++;
			}
		}
		strv_free(&a.v);
		strv_free(&b.v);
	}
	out_arr_end(o);
	return n;
}

size_t whatif_print(struct out *o, const struct dfw_policy *old, const struct gengine *oe,
		    const struct dfw_policy *nw, const struct gengine *ne)
{
	size_t n = rules_diff(o, old, nw);

	out_arr_start(o, "groups");
	for (size_t g = 0; g < old->inv.ngroups; g++) {
		if (policy_find_group(nw, old->inv.groups[g].name) < 0) {
			change(o, "removed", old->inv.groups[g].name, NULL);
			n++;
		}
	}
	for (size_t g = 0; g < nw->inv.ngroups; g++) {
		const struct group_def *ng = &nw->inv.groups[g];
		long og = policy_find_group(old, ng->name);

		if (og < 0) {
			change(o, "added", ng->name, NULL);
			n++;
		} else if (old->inv.groups[og].quarantine != ng->quarantine ||
			   old->inv.groups[og].keep_connections != ng->keep_connections) {
			change(o, "changed", ng->name, ng->quarantine ? (ng->keep_connections ?
				"quarantine, keeps connections" : "quarantine, cuts connections") :
				"not a quarantine group");
			n++;
		}
	}
	out_arr_end(o);
	return n + members_diff(o, old, oe, nw, ne);
}
