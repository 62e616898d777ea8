/* What-if evaluation of compiled plans. */
#include "dfw/trace.h"

#include <netinet/in.h>
#include <linux/netfilter.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "groups/groups.h"

const char *trace_verdict_name(enum trace_verdict v)
{
	return v == TV_ALLOW ? "allow" : v == TV_DROP ? "drop" : "reject";
}

static uint32_t elem_u32(const struct dfw_addr *e, size_t off)
{
	uint32_t v;

	memcpy(&v, e->a + off, 4);
	return v;
}

/* Set lookups as the kernel does them: ids (host order), port ranges
 * (network order), addresses (exact, or by prefix in interval sets). */
static bool set_has_id(const struct pset *s, uint32_t id)
{
	for (size_t i = 0; s && i < s->nelems; i++)
		if (elem_u32(&s->elems[i], 0) == id)
			return true;
	return false;
}

static bool set_has_port(const struct pset *s, uint16_t port)
{
	for (size_t i = 0; s && i < s->nelems; i++) {
		const uint8_t *a = s->elems[i].a;
		uint16_t lo = (uint16_t)(a[0] << 8 | a[1]), hi = (uint16_t)(a[2] << 8 | a[3]);

		if (port >= lo && port <= hi)
			return true;
	}
	return false;
}

static bool set_has_addr(const struct pset *s, const struct dfw_addr *a)
{
	for (size_t i = 0; s && i < s->nelems; i++)
		if (s->elems[i].family == a->family && addr_contains(&s->elems[i], a))
			return true;
	return false;
}

static bool is_ported(uint8_t proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* Whether an address is in the prefix written as text (PI_SADDR_NET). */
static bool net_has(const char *text, const struct dfw_addr *a)
{
	struct dfw_addr net;
	const char *why;

	return addr_parse(text, &net, &why) == 0 && addr_contains(&net, a);
}

/* Whether one match item holds for the packet. */
static bool item_matches(const struct plan *pl, const struct pitem *it, uint32_t src_id,
			 uint32_t dst_id, const struct trace_pkt *pk)
{
	uint8_t nfproto = pk->src.family == AF_INET ? NFPROTO_IPV4 : NFPROTO_IPV6;

	switch (it->kind) {
	case PI_PORT_SET:
		return set_has_id(plan_find_set(pl, it->name),
				  it->u & PI_PORT_DST ? dst_id : src_id) != !!(it->u & PI_LOOKUP_NEG);
	case PI_NFPROTO:
		return it->u == nfproto;
	case PI_SADDR_SET:
		return set_has_addr(plan_find_set(pl, it->name), &pk->src) !=
		       !!(it->u & PI_LOOKUP_NEG);
	case PI_DADDR_SET:
		return set_has_addr(plan_find_set(pl, it->name), &pk->dst) !=
		       !!(it->u & PI_LOOKUP_NEG);
	case PI_SADDR_NET:
	case PI_DADDR_NET:
		return net_has(it->name, it->kind == PI_SADDR_NET ? &pk->src : &pk->dst) !=
		       !!(it->u & PI_LOOKUP_NEG);
	case PI_L4PROTO:
		return it->u == pk->proto;
	case PI_DPORT:
		return is_ported(pk->proto) && pk->dport >= it->lo && pk->dport <= it->hi;
	case PI_DPORT_SET:
		return is_ported(pk->proto) && set_has_port(plan_find_set(pl, it->name), pk->dport);
	case PI_ICMP_TYPE:
		return pk->proto == it->u && pk->icmp_type == it->lo;
	case PI_ICMP_CODE:
		return pk->proto == it->u && pk->icmp_code == it->lo;
	case PI_LOG:
	case PI_VERDICT:
	case PI_COUNTER:
	case PI_JUMP: /* only in the kernel's form of a chain, never here */
		return true;
	}
	return false;
}

bool trace_rule_matches(const struct plan *pl, const struct prule *r, uint32_t src_id,
			uint32_t dst_id, const struct trace_pkt *pk)
{
	for (size_t j = 0; j < r->nitems; j++)
		if (!item_matches(pl, &r->items[j], src_id, dst_id, pk))
			return false;
	return true;
}

void trace_chain(const struct plan *pl, const struct pchain *c, uint32_t src_id, uint32_t dst_id,
		 const struct trace_pkt *pk, struct trace_step *st)
{
	memset(st, 0, sizeof(*st));
	st->applies = true;
	st->verdict = TV_DROP; /* a chain without a verdict: fail closed */
	for (size_t i = 0; c && i < c->nrules; i++) {
		const struct prule *r = &c->rules[i];
		const struct pitem *verdict = NULL;
		bool logged = false, monitor = false;

		if (!trace_rule_matches(pl, r, src_id, dst_id, pk))
			continue;
		for (size_t j = 0; j < r->nitems; j++) {
			const struct pitem *it = &r->items[j];

			logged |= it->kind == PI_LOG;
			monitor |= it->kind == PI_LOG && strstr(it->name, " monitor ");
			if (it->kind == PI_VERDICT)
				verdict = it;
		}
		if (!verdict)
			continue;
		if (verdict->u == PV_REJECT_TCP && pk->proto != IPPROTO_TCP)
			continue; /* the kernel's reject-with-reset needs TCP */
		st->rule_id = r->rule_id;
		st->is_default = !r->rule_id;
		st->logged = logged;
		st->monitor = monitor;
		st->verdict = verdict->u == PV_ACCEPT || verdict->u == PV_RETURN ? TV_ALLOW :
			      verdict->u == PV_DROP ? TV_DROP : TV_REJECT;
		return;
	}
}

/* --- the whole path ----------------------------------------------------------- */

static bool addr_eq(const struct dfw_addr *x, const struct dfw_addr *y)
{
	return !addr_cmp(x, y);
}

static bool member(const struct gengine *eng, long group, long vm)
{
	return vm >= 0 && gengine_is_member(eng, (size_t)group, (size_t)vm);
}

static const struct dfw_block *blocked(const struct dfw_block *blocks, size_t n, uint64_t now,
				       const struct gengine *eng, const struct trace_end *src,
				       const struct trace_end *dst, const struct trace_pkt *pk)
{
	for (size_t i = 0; i < n; i++) {
		const struct dfw_block *b = &blocks[i];

		if (b->until_ms <= now)
			continue;
		if (b->group < 0 && (addr_eq(&b->addr, &pk->src) || addr_eq(&b->addr, &pk->dst)))
			return b;
		if (b->group >= 0 && ((addr_eq(&b->addr, &pk->src) && member(eng, b->group, dst->vm)) ||
				      (addr_eq(&b->addr, &pk->dst) && member(eng, b->group, src->vm))))
			return b;
	}
	return NULL;
}

static bool port_has_addr(const struct pport *port, const struct dfw_addr *a)
{
	for (size_t i = 0; i < port->naddrs; i++)
		if (addr_eq(&port->addrs[i], a))
			return true;
	return false;
}

void trace_path(const struct dfw_policy *p, const struct gengine *eng,
		const struct dfw_block *blocks, size_t nblocks, uint64_t now_ms,
		const struct trace_end *src, const struct trace_end *dst,
		const struct trace_pkt *pk, struct trace_result *res)
{
	uint32_t src_id = src->port ? src->port->id : DFW_UPLINK_ID;
	uint32_t dst_id = dst->port ? dst->port->id : DFW_UPLINK_ID;
	const struct dfw_block *b;
	char a[64];

	(void)p;
	memset(res, 0, sizeof(*res));
	res->verdict = TV_DROP;
	if (src->port && !port_has_addr(src->port, &pk->src)) {
		res->decided_by = "anti-spoofing";
		addr_format(&pk->src, a, sizeof(a));
		snprintf(res->note, sizeof(res->note), "%s is not an address of vNIC %s%s", a,
			 src->port->ifname,
			 (pk->src.family == AF_INET ? src->port->learn4 : src->port->learn6)
				 ? " (its address is not learned yet)" : "");
		return;
	}
	if (pk->src.family == AF_INET6 && pk->proto == IPPROTO_ICMPV6 && pk->icmp_type >= 133 &&
	    pk->icmp_type <= 136) {
		res->verdict = TV_ALLOW;
		res->decided_by = "neighbour discovery";
		snprintf(res->note, sizeof(res->note), "router/neighbour solicitations and advertisements pass before the policy");
		return;
	}
	if ((b = blocked(blocks, nblocks, now_ms, eng, src, dst, pk))) {
		res->decided_by = "operator block";
		addr_format(&b->addr, a, sizeof(a));
		snprintf(res->note, sizeof(res->note), "%s is blocked%s%s for %llu s more", a,
			 b->group >= 0 ? " in scope " : "",
			 b->group >= 0 ? p->inv.groups[b->group].name : "",
			 (unsigned long long)((b->until_ms - now_ms + 999) / 1000));
		return;
	}
	if (src->port) {
		trace_chain(src->pl, plan_find_chain(src->pl, src->port->out_chain), src_id,
			    src->pl == dst->pl ? dst_id : DFW_UPLINK_ID, pk, &res->out);
		if (res->out.verdict != TV_ALLOW) {
			res->verdict = res->out.verdict;
			res->decided_by = "out";
			return;
		}
	}
	if (!dst->port) {
		const char *what = addr_not_own(&pk->dst);
		bool flooded = what && (strstr(what, "multicast") || strstr(what, "broadcast"));

		res->verdict = TV_ALLOW;
		res->decided_by = flooded ? "each receiving vNIC" : "uplink";
		addr_format(&pk->dst, a, sizeof(a));
		if (flooded)
			snprintf(res->note, sizeof(res->note),
				 "%s is %s: the bridge floods the packet to every vNIC (and uplink), and each vNIC's in-policy judges it by that address; a vNIC of a group with quarantine = yes takes none. Trace follows unicast only",
				 a, what);
		else
			snprintf(res->note, sizeof(res->note),
				 "%s is not a vNIC of any host: the packet leaves through the host's uplink (without one, the bridge drops it; a subnet's broadcast address is flooded to every vNIC, and each one's in-policy decides)",
				 a);
		return;
	}
	trace_chain(dst->pl, plan_find_chain(dst->pl, dst->port->in_chain),
		    src->pl == dst->pl ? src_id : DFW_UPLINK_ID, dst_id, pk, &res->in);
	res->verdict = res->in.verdict;
	res->decided_by = "in";
}

/* --- the world -------------------------------------------------------------------- */

static const struct plan *world_plan(struct trace_world *w, const char *host)
{
	for (size_t i = 0; i < w->hosts.n; i++)
		if (!strcmp(w->hosts.v[i], host))
			return w->plans[i];
	strv_push(&w->hosts, host);
	w->plans = xrealloc(w->plans, w->hosts.n * sizeof(*w->plans));
	return w->plans[w->hosts.n - 1] = plan_compile(w->p, w->e, host);
}

static bool tag_present(const struct strv *t, const char *tag)
{
	return strv_contains(t, tag, true);
}

/* "VM=TAG" against the policy. */
static int assume_one(const struct dfw_policy *p, const char *spec, size_t *vm,
		      const char **tag, char *err, size_t errlen)
{
	const char *eq = strchr(spec, '=');
	char name[128];
	long idx;

	if (!eq || eq == spec || !eq[1] || (size_t)(eq - spec) >= sizeof(name)) {
		snprintf(err, errlen, "'%s': write VM=TAG", spec);
		return 1;
	}
	memcpy(name, spec, (size_t)(eq - spec));
	name[eq - spec] = '\0';
	if ((idx = policy_find_vm(p, name)) < 0) {
		policy_unknown(p, false, name, err, errlen);
		return 1;
	}
	if (!(*tag = policy_find_tag(p, eq + 1))) {
		snprintf(err, errlen, "'%s': tag '%s' is not declared in the policy", spec, eq + 1);
		return 1;
	}
	*vm = (size_t)idx;
	return 0;
}

int trace_world_snapshot(const struct snapshot *snap, const struct trace_assume *as,
			 struct trace_world *w, char *err, size_t errlen)
{
	struct diag d = { 0 };
	const char *file = snap->policy_file ? snap->policy_file : "store:policy";
	struct strv *tags;
	size_t vm;
	const char *tag;
	int ret = 1;

	if (!snap->policy) {
		snprintf(err, errlen, "the store holds no policy yet: run 'dfwctl apply FILE' first");
		return -1;
	}
	if (!(w->p = policy_parse(snap->policy, file, &d))) {
		snprintf(err, errlen, "the stored policy does not parse: %s", d.n ? d.msgs[0] : "?");
		diag_free(&d);
		return -1;
	}
	state_apply(w->p, snap, NULL, NULL);
	if (!(w->e = gengine_new(&w->p->inv, file, &d))) {
		snprintf(err, errlen, "%s", d.n ? d.msgs[0] : "?");
		diag_free(&d);
		return -1;
	}
	tags = xcalloc(w->p->inv.nvms + 1, sizeof(*tags));
	for (size_t i = 0; i < snap->tag_keys.n; i++)
		if (state_tag_key(w->p, snap->tag_keys.v[i], &vm, &tag, NULL, NULL) &&
		    !tag_present(&tags[vm], tag))
			strv_push(&tags[vm], tag);
	for (size_t i = 0; as && i < as->nadd; i++) {
		if (assume_one(w->p, as->add[i], &vm, &tag, err, errlen))
			goto out;
		if (!tag_present(&tags[vm], tag))
			strv_push(&tags[vm], tag);
	}
	for (size_t i = 0; as && i < as->ndel; i++) {
		if (assume_one(w->p, as->del[i], &vm, &tag, err, errlen))
			goto out;
		strv_remove(&tags[vm], tag, true);
	}
	for (size_t i = 0; i < w->p->inv.nvms; i++)
		gengine_set_tags(w->e, i, (const char *const *)tags[i].v, tags[i].n, NULL, NULL);
	w->blocks = xcalloc(snap->blocks.n / 2 + 1, sizeof(*w->blocks));
	for (size_t i = 0; i + 1 < snap->blocks.n; i += 2)
		if (state_block(w->p, snap->blocks.v[i], snap->blocks.v[i + 1], &w->blocks[w->nblocks],
				err, errlen))
			w->nblocks++;
	ret = 0;
out:
	for (size_t i = 0; i < w->p->inv.nvms; i++)
		strv_free(&tags[i]);
	free(tags);
	diag_free(&d);
	return ret;
}

int trace_world_load(struct store *s, const struct trace_assume *as, struct trace_world *w,
		     char *err, size_t errlen)
{
	struct snapshot snap;
	int ret;

	memset(w, 0, sizeof(*w));
	if (snapshot_read(s, &snap, &w->rev, NULL, NULL, err, errlen) < 0) {
		snapshot_free(&snap);
		return -1;
	}
	ret = trace_world_snapshot(&snap, as, w, err, errlen);
	snapshot_free(&snap);
	return ret;
}

int trace_world_from(const char *policy_text, const char *const *tag_keys, size_t ntags,
		     struct trace_world *w, char *err, size_t errlen)
{
	struct snapshot snap = { 0 };
	int ret;

	memset(w, 0, sizeof(*w));
	snap.policy = xstrdup(policy_text);
	for (size_t i = 0; i < ntags; i++)
		strv_push(&snap.tag_keys, tag_keys[i]);
	ret = trace_world_snapshot(&snap, NULL, w, err, errlen);
	snapshot_free(&snap);
	return ret;
}

void trace_world_free(struct trace_world *w)
{
	for (size_t i = 0; i < w->hosts.n; i++)
		plan_free(w->plans[i]);
	free(w->plans);
	strv_free(&w->hosts);
	free(w->blocks);
	gengine_free(w->e);
	policy_free(w->p);
	memset(w, 0, sizeof(*w));
}

int trace_world_end(struct trace_world *w, const char *spec, uint8_t family,
		    struct trace_end *end, struct dfw_addr *addr, char *err, size_t errlen)
{
	const char *why = NULL;
	long vm = policy_find_vm(w->p, spec);
	const struct vm *v;

	memset(end, 0, sizeof(*end));
	end->vm = -1;
	if (vm < 0) {
		if (addr_parse(spec, addr, &why) < 0) {
			policy_unknown(w->p, false, spec, err, errlen);
			return 1;
		}
		if (addr->plen != (addr->family == AF_INET ? 32 : 128)) {
			snprintf(err, errlen, "'%s': a host address, not a prefix", spec);
			return 1;
		}
		/* An address of a VM (its link-local one too) is that VM. */
		for (size_t i = 0; i < w->p->inv.nvms && vm < 0; i++) {
			struct dfw_addr m;

			for (size_t j = 0; vm < 0 && vm_member_addr(&w->p->inv.vms[i], 0, &j, &m);)
				if (addr_eq(&m, addr))
					vm = (long)i;
		}
	} else {
		v = &w->p->inv.vms[vm];
		memset(addr, 0, sizeof(*addr));
		for (size_t j = 0; j < v->naddrs && !addr->family; j++)
			if (v->addrs[j].family == (family ? family : AF_INET))
				*addr = v->addrs[j];
		if (!addr->family) {
			snprintf(err, errlen, "VM %s has no %s address%s", v->name,
				 family == AF_INET6 ? "IPv6" : "IPv4",
				 v->learn ? " (none learned yet)" : "");
			return 1;
		}
	}
	if (vm >= 0) {
		v = &w->p->inv.vms[vm];
		end->vm = vm;
		end->pl = world_plan(w, v->host);
		end->port = plan_find_port(end->pl, v->port);
	}
	return 0;
}
