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

/* One side of a group's membership, checked against the other policy:
 * each member of (p, e, g) that is not a member of (op, oe, og) there,
 * found by name (indexes differ between policies). */
struct member_walk {
	struct out *o;
	const struct dfw_policy *p, *op;
	const struct gengine *oe;
	long og;             /* -1: the group is new (or gone) there */
	const char *group, *change;
	size_t n;
};

static void member_check(void *arg, size_t vm)
{
	struct member_walk *w = arg;
	const char *name = w->p->inv.vms[vm].name;
	long ovm = w->og < 0 ? -1 : policy_find_vm(w->op, name);

	if (ovm >= 0 && gengine_is_member(w->oe, (size_t)w->og, (size_t)ovm))
		return;
	out_obj_start(w->o, NULL);
	out_str(w->o, "group", w->group);
	out_str(w->o, "vm", name);
	out_str(w->o, "change", w->change);
	out_obj_end(w->o);
	w->n++;
}

static size_t members_diff(struct out *o, const struct dfw_policy *old, const struct gengine *oe,
			   const struct dfw_policy *nw, const struct gengine *ne)
{
	size_t n = 0;

	out_arr_start(o, "members");
	for (size_t g = 0; g < nw->inv.ngroups; g++) {
		long og = policy_find_group(old, nw->inv.groups[g].name);
		struct member_walk join = { o, nw, old, oe, og, nw->inv.groups[g].name, "joins", 0 };
		struct member_walk leave = { o, old, nw, ne, (long)g, nw->inv.groups[g].name,
					     "leaves", 0 };

		/* A new group: every member joins. */
		gengine_foreach_member(ne, g, member_check, &join);
		if (og >= 0)
			gengine_foreach_member(oe, (size_t)og, member_check, &leave);
		n += join.n + leave.n;
	}
	out_arr_end(o);
	return n;
}

/* Whether every address of a is among b's (the order is no change). */
static bool addrs_within(const struct dfw_addr *a, size_t na, const struct dfw_addr *b, size_t nb)
{
	for (size_t i = 0; i < na; i++) {
		bool found = false;

		for (size_t j = 0; j < nb && !found; j++)
			found = !addr_cmp(&a[i], &b[j]);
		if (!found)
			return false;
	}
	return true;
}

static bool addrs_same(const struct dfw_addr *a, size_t na, const struct dfw_addr *b, size_t nb)
{
	return addrs_within(a, na, b, nb) && addrs_within(b, nb, a, na);
}

/* VMs added, removed, or with other addresses or MAC: what a rule's sets
 * and the anti-spoofing hold changes with them, whatever the rules say. */
static size_t vms_diff(struct out *o, const struct dfw_policy *old, const struct dfw_policy *nw)
{
	size_t n = 0;

	out_arr_start(o, "vms");
	for (size_t i = 0; i < old->inv.nvms; i++)
		if (policy_find_vm(nw, old->inv.vms[i].name) < 0) {
			change(o, "removed", old->inv.vms[i].name, NULL);
			n++;
		}
	for (size_t i = 0; i < nw->inv.nvms; i++) {
		const struct vm *v = &nw->inv.vms[i];
		long ov = policy_find_vm(old, v->name);
		const struct vm *w = ov < 0 ? NULL : &old->inv.vms[ov];
		bool addrs, mac;

		if (!w) {
			change(o, "added", v->name, NULL);
			n++;
			continue;
		}
		addrs = !addrs_same(v->addrs, v->naddrs, w->addrs, w->naddrs) || v->learn != w->learn;
		mac = memcmp(v->mac, w->mac, sizeof(v->mac)) != 0;
		if (addrs || mac) {
			change(o, "changed", v->name, addrs && mac ? "addresses, mac" : addrs ? "addresses" : "mac");
			n++;
		}
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

		const struct group_def *gd = og < 0 ? NULL : &old->inv.groups[og];

		if (!gd) {
			change(o, "added", ng->name, NULL);
			n++;
		} else if (gd->quarantine != ng->quarantine ||
			   gd->keep_connections != ng->keep_connections) {
			change(o, "changed", ng->name, ng->quarantine ? (ng->keep_connections ?
				"quarantine, keeps connections" : "quarantine, cuts connections") :
				"not a quarantine group");
			n++;
		}
		/* IP/CIDR members are no VM's: members_diff cannot show them. */
		if (gd && !addrs_same(gd->addrs, gd->naddrs, ng->addrs, ng->naddrs)) {
			change(o, "changed", ng->name, "addresses");
			n++;
		}
	}
	out_arr_end(o);
	n += vms_diff(o, old, nw);
	return n + members_diff(o, old, oe, nw, ne);
}
