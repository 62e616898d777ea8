/* Prints a plan as an nft script: the golden-test format and `dfwctl plan`.
 * It describes the same objects the backend sends (dfw/backend.c); the
 * fixed base chains are printed from the same layout constants. */
#include "dfw/compile.h"
#include "dfw/layout.h"

#include "common/util.h"

#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

static const char *const verdicts[] = {
	[PV_ACCEPT] = "accept", [PV_DROP] = "drop", [PV_RETURN] = "return",
	[PV_REJECT_TCP] = "reject with tcp reset",
	[PV_REJECT_ICMPX] = "reject with icmpx type admin-prohibited",
};

/* The protocol's name where nft has one that reads better than a number. */
static void print_proto(uint32_t p, FILE *f)
{
	switch (p) {
	case IPPROTO_TCP: fputs("tcp", f); return;
	case IPPROTO_UDP: fputs("udp", f); return;
	case IPPROTO_ICMP: fputs("icmp", f); return;
	case IPPROTO_ICMPV6: fputs("ipv6-icmp", f); return;
	}
	fprintf(f, "%u", p);
}

/* A policy rule; in an atom's chain or a leaf chain (atom), without the
 * tests a dispatch map's key implies (dfw/dispatch.c, dfw/factor.c). */
static void print_rule(const struct prule *r, bool atom, FILE *f)
{
	uint32_t fam = 0;
	bool sep = false;
	char comment[48];

	fputs("\t\t", f);
	for (size_t i = 0; i < r->nitems; i++) {
		const struct pitem *it = &r->items[i];
		const char *ip = fam == NFPROTO_IPV6 ? "ip6" : "ip";
		const char *icmp = it->u == IPPROTO_ICMPV6 ? "icmpv6" : "icmp";

		if (atom && disp_item_implied(it))
			continue;
		if (sep)
			fputc(' ', f);
		sep = true;
		switch (it->kind) {
		case PI_NFPROTO:
			fam = it->u;
			fprintf(f, "meta nfproto %s", fam == NFPROTO_IPV4 ? "ipv4" : "ipv6");
			break;
		case PI_PORT_SET:
			fprintf(f, "meta %s %s@%s", it->u & PI_PORT_DST ? "priority" : "mark",
				it->u & PI_LOOKUP_NEG ? "!= " : "", it->name);
			break;
		case PI_SADDR_SET:
		case PI_DADDR_SET:
			fprintf(f, "%s %s %s@%s", ip, it->kind == PI_SADDR_SET ? "saddr" : "daddr",
				it->u & PI_LOOKUP_NEG ? "!= " : "", it->name);
			break;
		case PI_SADDR_NET:
		case PI_DADDR_NET:
			fprintf(f, "%s %s %s%s", ip, it->kind == PI_SADDR_NET ? "saddr" : "daddr",
				it->u & PI_LOOKUP_NEG ? "!= " : "", it->name);
			break;
		case PI_L4PROTO:
			fputs("meta l4proto ", f);
			print_proto(it->u, f);
			break;
		case PI_DPORT:
			if (it->lo == it->hi)
				fprintf(f, "th dport %u", it->lo);
			else
				fprintf(f, "th dport %u-%u", it->lo, it->hi);
			break;
		case PI_DPORT_SET:
			fprintf(f, "th dport @%s", it->name);
			break;
		case PI_ICMP_TYPE:
			fprintf(f, "%s type %u", icmp, it->lo);
			break;
		case PI_ICMP_CODE:
			fprintf(f, "%s code %u", icmp, it->lo);
			break;
		case PI_LOG:
			fprintf(f, "log prefix \"%s\" group %u", it->name, DFW_NFLOG_GROUP);
			break;
		case PI_COUNTER:
			fprintf(f, "counter name \"%s\"", it->name);
			break;
		case PI_JUMP:
			fprintf(f, "jump %s", it->name);
			break;
		case PI_VERDICT: /* in an atom's chain, an allow out goes on at admit */
			fputs(atom && it->u == PV_RETURN ? "goto " DFW_CHAIN_ADMIT : verdicts[it->u], f);
			break;
		}
	}
	fprintf(f, " comment \"%s\"\n", prule_comment(r, comment, sizeof(comment)));
}

static void print_elems(const struct pset *s, FILE *f)
{
	char buf[64];

	if (!s->nelems)
		return;
	fputs("\t\telements = { ", f);
	for (size_t i = 0; i < s->nelems; i++) {
		uint32_t id;

		if (s->family) {
			addr_format(&s->elems[i], buf, sizeof(buf));
		} else if (s->service) {
			unsigned lo = s->elems[i].a[0] << 8 | s->elems[i].a[1];
			unsigned hi = s->elems[i].a[2] << 8 | s->elems[i].a[3];

			if (lo == hi)
				snprintf(buf, sizeof(buf), "%u", lo);
			else
				snprintf(buf, sizeof(buf), "%u-%u", lo, hi);
		} else {
			memcpy(&id, s->elems[i].a, 4);
			if (s->dst)
				snprintf(buf, sizeof(buf), "%x:%x", id >> 16, id & 0xffff);
			else
				snprintf(buf, sizeof(buf), "0x%08x", id);
		}
		fprintf(f, "%s%s", i ? ", " : "", buf);
	}
	fputs(" }\n", f);
}

enum port_addrs {
	PA_SET,    /* port_ip4 / port_ip6: port . address */
	PA_ND,     /* port_nd6: port_ip6's elements, keyed as a raw load */
	PA_OWN,    /* port_src4 / port_src6: port . MAC . address : id */
	PA_DST,    /* port_dst4 / port_dst6: port . address : id (classid) */
};

/* The ports' addresses of family af: the anti-spoofing set (port .
 * address), the same IPv6 elements for the neighbour advertisements'
 * targets (as 128-bit integers: the set is typeof a raw load, layout.h),
 * the fast-path map (port . MAC . address : id) without the families a
 * port still learns, or the egress map (port . address : id) without
 * "::". */
static void print_port_addrs(const struct plan *pl, uint8_t af, enum port_addrs kind, FILE *f)
{
	bool first = true, v6 = af == AF_INET6;
	char mac[18], buf[64];

	if (kind == PA_OWN)
		fprintf(f, "\tmap %s {\n\t\ttype ifname . ether_addr . %s : mark\n",
			v6 ? DFW_MAP_PORT_SRC6 : DFW_MAP_PORT_SRC4, v6 ? "ipv6_addr" : "ipv4_addr");
	else if (kind == PA_DST)
		fprintf(f, "\tmap %s {\n\t\ttype ifname . %s : classid\n",
			v6 ? DFW_MAP_PORT_DST6 : DFW_MAP_PORT_DST4, v6 ? "ipv6_addr" : "ipv4_addr");
	else if (kind == PA_ND)
		fprintf(f, "\tset %s {\n\t\ttypeof iifname . %s\n", DFW_SET_PORT_ND6,
			DFW_ND_TARGET_NFT);
	else
		fprintf(f, "\tset %s {\n\t\ttype ifname . %s\n",
			v6 ? DFW_SET_PORT_IP6 : DFW_SET_PORT_IP4, v6 ? "ipv6_addr" : "ipv4_addr");
	for (size_t i = 0; i < pl->nports; i++) {
		const struct pport *p = &pl->ports[i];

		mac_format(p->mac, mac, sizeof(mac));
		for (size_t a = 0; a < p->naddrs; a++) {
			if (p->addrs[a].family != af ||
			    (kind == PA_OWN && !pport_fast_addr(p, &p->addrs[a])) ||
			    (kind == PA_DST && !pport_dst_addr(&p->addrs[a])))
				continue;
			addr_format(&p->addrs[a], buf, sizeof(buf));
			fprintf(f, "%s\"%s\" . ", first ? "\t\telements = { " : ", ", p->ifname);
			if (kind == PA_OWN) {
				fprintf(f, "%s . %s : 0x%08x", mac, buf, p->id);
			} else if (kind == PA_DST) {
				fprintf(f, "%s : %x:%x", buf, p->id >> 16, p->id & 0xffff);
			} else if (kind == PA_ND) {
				fputs("0x", f);
				for (size_t k = 0; k < 16; k++)
					fprintf(f, "%02x", p->addrs[a].a[k]);
			} else {
				fputs(buf, f);
			}
			first = false;
		}
	}
	fprintf(f, "%s\t}\n", first ? "" : " }\n");
}

static void print_bridge(const struct plan *pl, const char *table, FILE *f)
{
	char mac[18];

	fprintf(f, "table bridge %s {\n", table);
	for (int dst = 0; dst < 2; dst++) {
		size_t n = 0;

		fprintf(f, "\tmap %s {\n\t\ttype ifname : %s\n",
			dst ? DFW_MAP_PORT_DST : DFW_MAP_PORT_SRC, dst ? "classid" : "mark");
		for (size_t i = 0; i < pl->nports + pl->nuplinks; i++, n++) {
			bool up = i >= pl->nports;
			const char *name = up ? pl->uplinks[i - pl->nports] : pl->ports[i].ifname;
			uint32_t id = up ? DFW_UPLINK_ID : pl->ports[i].id;

			fprintf(f, "%s\"%s\" : ", n ? ", " : "\t\telements = { ", name);
			if (dst)
				fprintf(f, "%x:%x", id >> 16, id & 0xffff);
			else
				fprintf(f, "0x%08x", id);
		}
		fprintf(f, "%s\t}\n", n ? " }\n" : "");
	}
	fprintf(f, "\tset %s {\n\t\ttype ifname . ether_addr\n", DFW_SET_PORT_MAC);
	for (size_t i = 0; i < pl->nports; i++) {
		mac_format(pl->ports[i].mac, mac, sizeof(mac));
		fprintf(f, "%s\"%s\" . %s", i ? ", " : "\t\telements = { ", pl->ports[i].ifname, mac);
	}
	fprintf(f, "%s\t}\n", pl->nports ? " }\n" : "");
	for (int fam = 0; fam < 2; fam++)
		print_port_addrs(pl, fam ? AF_INET6 : AF_INET, PA_SET, f);
	print_port_addrs(pl, AF_INET6, PA_ND, f);
	for (int v6 = 0; v6 < 2; v6++) {
		size_t n = 0;

		fprintf(f, "\tset %s {\n\t\ttype ifname\n", v6 ? DFW_SET_LEARN6 : DFW_SET_LEARN4);
		for (size_t i = 0; i < pl->nports; i++)
			if (v6 ? pl->ports[i].learn6 : pl->ports[i].learn4)
				fprintf(f, "%s\"%s\"", n++ ? ", " : "\t\telements = { ",
					pl->ports[i].ifname);
		fprintf(f, "%s\t}\n", n ? " }\n" : "");
	}
	for (int fam = 0; fam < 2; fam++)
		print_port_addrs(pl, fam ? AF_INET6 : AF_INET, PA_OWN, f);
	for (int fam = 0; fam < 2; fam++)
		print_port_addrs(pl, fam ? AF_INET6 : AF_INET, PA_DST, f);
	fprintf(f, "%s", DFW_BRIDGE_CHAINS_NFT);
	fprintf(f, "}\n");
}

/* A policy chain in its kernel form, in the order the backend creates it
 * (kform_walk). */
static void pr_chain(void *arg, const char *name)
{
	fprintf(arg, "\tchain %s {\n", name);
}

static void pr_end(void *arg)
{
	fputs("\t}\n", arg);
}

static void pr_rule(void *arg, const struct prule *r, bool atom)
{
	print_rule(r, atom, arg);
}

static void pr_map(void *arg, const char *name, const struct kform_jump *j, size_t n)
{
	FILE *f = arg;

	fprintf(f, "\tmap %s {\n\t\ttype inet_service : verdict\n\t\tflags interval\n"
		"\t\telements = { ", name);
	for (size_t i = 0; i < n; i++) {
		if (j[i].lo == j[i].hi)
			fprintf(f, "%s%u", i ? ", " : "", j[i].lo);
		else
			fprintf(f, "%s%u-%u", i ? ", " : "", j[i].lo, j[i].hi);
		fprintf(f, " : jump %s", j[i].atom);
	}
	fputs(" }\n\t}\n", f);
}

static void pr_map_lookup(void *arg, const struct pchain *c, size_t k, uint8_t proto)
{
	char name[PLAN_NAME_MAX];

	disp_map_name(c, k, proto, name, sizeof(name));
	fputs("\t\tmeta l4proto ", arg);
	print_proto(proto, arg);
	fprintf(arg, " th dport vmap @%s\n", name);
}

static void print_chain(const struct pchain *c, FILE *f)
{
	static const struct kform_ops ops = {
		pr_chain, pr_end, pr_rule, pr_map, pr_map_lookup,
	};

	kform_walk(c, &ops, f);
}

void plan_print_nft(const struct plan *pl, const char *table, FILE *f)
{
	size_t *order = xcalloc(pl->nsets + 1, sizeof(*order));

	print_bridge(pl, table, f);
	fprintf(f, "table inet %s {\n", table);
	for (size_t i = 0; i < pl->ncounters; i++)
		fprintf(f, "\tcounter %s {\n\t}\n", pl->counters[i]);
	/* In the order the backend creates them (plan_set_order). */
	plan_set_order(pl, order);
	for (size_t i = 0; i < pl->nsets; i++) {
		const struct pset *s = &pl->sets[order[i]];

		if (s->family)
			fprintf(f, "\tset %s {\n\t\ttype %s\n%s", s->name,
				s->family == AF_INET ? "ipv4_addr" : "ipv6_addr",
				s->interval ? "\t\tflags interval\n" : "");
		else if (s->service)
			fprintf(f, "\tset %s {\n\t\ttype inet_service\n\t\tflags interval\n", s->name);
		else
			fprintf(f, "\tset %s {\n\t\ttype %s\n", s->name, s->dst ? "classid" : "mark");
		if (s->size)
			fprintf(f, "\t\tsize %u\n", s->size);
		print_elems(s, f);
		fprintf(f, "\t}\n");
	}
	free(order);
	if (!plan_find_set(pl, DFW_SET_ISOLATED)) /* enforce names it (as the backend) */
		fprintf(f, "\tset %s {\n\t\ttype classid\n\t}\n", DFW_SET_ISOLATED);
	for (size_t i = 0; i < pl->nchains; i++)
		print_chain(&pl->chains[i], f);
	fprintf(f, "\tmap %s {\n\t\ttype mark : verdict\n", DFW_MAP_OUT);
	for (size_t i = 0; i < pl->nports; i++)
		fprintf(f, "%s0x%08x : jump %s", i ? ", " : "\t\telements = { ",
			pl->ports[i].id, pl->ports[i].out_chain);
	fprintf(f, "%s\t}\n", pl->nports ? " }\n" : "");
	fprintf(f, "\tmap %s {\n\t\ttype classid : verdict\n", DFW_MAP_IN);
	for (size_t i = 0; i < pl->nports; i++)
		fprintf(f, "%s%x:%x : jump %s", i ? ", " : "\t\telements = { ",
			pl->ports[i].id >> 16, pl->ports[i].id & 0xffff, pl->ports[i].in_chain);
	fprintf(f, "%s\t}\n", pl->nports ? " }\n" : "");
	fprintf(f, "%s%s", DFW_INET_SETS_NFT, DFW_INET_CHAINS_NFT);
	fprintf(f, "}\n");
}
