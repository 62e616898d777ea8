/* The compiler: policy + group membership -> a plan of kernel objects for one
 * host, and the diff between two plans.
 *
 * A plan is what the host's nftables should hold (docs/DATAPLANE.md):
 *   - one port per local vNIC: its id, MAC and addresses (anti-spoofing), and
 *     the names of its out-policy and in-policy chains;
 *   - address sets: per group and family, a hash set of its VMs' addresses
 *     (tags change these; a VM's are vm_member_addr's, its link-local one
 *     too) and, when it has IP/CIDR members, interval sets of those, one
 *     per part by what excludes it, with negated lookups of the excluded
 *     groups' sets; content-named sets for literal addresses in rules.  A
 *     group that excludes groups is its base's set ("g-G-4b") with negated
 *     lookups of the excluded groups' sets, so entering quarantine edits
 *     quarantine's sets only.  A set that can never hold a VM (no members,
 *     not tag-driven) is not made, nor the kernel rules that need it;
 *   - policy chains named by a hash of their content, so vNICs with the same
 *     rule list share one chain.  applied_to groups that tags cannot change
 *     shape the chains; rules applied to groups that tags can change are in
 *     the shared chain behind a lookup in a set of the group's local vNIC
 *     ids, so that a tag change only ever edits set elements;
 *   - a named counter per policy rule and direction, which all its kernel
 *     rules reference (plan_diff adds and removes counters with their
 *     rules, so a count survives chain rewrites);
 *   - per port, whether it learns its IPv4 / IPv6 address (addresses =
 *     learn with nothing locked yet in that family).
 * A negated side ("not a, b") is one kernel rule per family with every set
 * of the side in that family as a negated lookup; a drop or reject rule in
 * monitor mode logs and counts without a verdict.
 * Only the backend turns a plan into netlink messages. */
#ifndef DFW_COMPILE_H
#define DFW_COMPILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dfw/layout.h"
#include "tagger/config.h"

#define PLAN_NAME_MAX 64

/* Copies src into a name of PLAN_NAME_MAX bytes, cut as snprintf would. */
void plan_name_copy(char *dst, const char *src);

/* One match or action of a kernel rule. */
enum pitem_kind {
	PI_PORT_SET,   /* name: port-id set; u: PI_PORT_DST (else the source
			* vNIC's id, meta mark; the destination's is meta
			* priority), PI_LOOKUP_NEG */
	PI_NFPROTO,    /* u: NFPROTO_IPV4 / NFPROTO_IPV6 */
	PI_SADDR_SET,  /* name: address set (family from the preceding PI_NFPROTO);
			* u: PI_LOOKUP_NEG (the address is NOT in the set) */
	PI_DADDR_SET,
	PI_L4PROTO,    /* u: IPPROTO_* (meta l4proto: any protocol number) */
	PI_DPORT,      /* lo..hi */
	PI_LOG,        /* name: prefix */
	PI_VERDICT,    /* u: enum pverdict */
	PI_DPORT_SET,  /* name: service set (transport destination port ranges) */
	PI_ICMP_TYPE,  /* u: IPPROTO_ICMP / IPPROTO_ICMPV6; lo: type */
	PI_ICMP_CODE,  /* u: as above; lo: code (after a PI_ICMP_TYPE) */
	PI_COUNTER,    /* name: named counter object (plan->counters) */
	PI_SADDR_NET,  /* name: one address or prefix as text ("10.0.0.0/8"), a
			* side's only literal (no set); u: PI_LOOKUP_NEG */
	PI_DADDR_NET,
	PI_JUMP,       /* name: chain (a factored run's outer rule, dfw/factor.c;
			* never in a chain's rules, which are the meaning) */
};

/* Flags in u of the set lookups. */
#define PI_PORT_DST    1u
#define PI_LOOKUP_NEG  2u

enum pverdict { PV_ACCEPT, PV_DROP, PV_RETURN, PV_REJECT_TCP, PV_REJECT_ICMPX };

struct pitem {
	enum pitem_kind kind;
	uint32_t u;
	uint16_t lo, hi;
	char name[PLAN_NAME_MAX];
};

struct prule {
	uint32_t rule_id; /* the policy rule this came from; 0 for the default */
	struct pitem *items;
	size_t nitems;
};

/* A kernel rule's comment: "rule ID" or "default". */
const char *prule_comment(const struct prule *r, char *buf, size_t len);

/* Dispatch of a long chain by destination port (dfw/dispatch.c).  A
 * segment is a run of consecutive rules [first, end) that each test a TCP
 * or UDP destination port or match another protocol only (ICMP, proto/N:
 * they cannot match a TCP or UDP packet).  Its atoms split the ports it
 * names into intervals on which the same of its port rules match; the
 * kernel enters an atom's chain, holding just those rules, through a
 * verdict map keyed by port, one per protocol; a packet the maps do not
 * take meets the segment's other-protocol rules.  rules[] indexes the
 * chain's rules. */
struct pdisp_atom {
	uint8_t proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	uint16_t lo, hi;
	size_t *rules;
	size_t nrules;
	size_t chain;       /* the atom whose chain it enters: the first with
			     * the same rules (its own index if none before) */
};

struct pdisp_seg {
	size_t first, end;
	struct pdisp_atom *atoms; /* by proto, then port */
	size_t natoms;
};

/* A run of one policy rule's kernel rules [first, end) of a chain that the
 * kernel holds factored (dfw/factor.c): each rule is split into an outer
 * rule (its tests but one side's, then a jump to the run's leaf chain)
 * and a leaf rule (its family, that side's tests, its log, counter and
 * verdict).  Equal outer rules are one, and so are equal leaf rules. */
struct pfact {
	size_t first, end;
	bool leaf_src;      /* the leaf tests the sources (else the destinations) */
	struct prule *outer; size_t nouter;
	size_t *outer_of;   /* per rule of the run: its outer rule */
	struct prule *leaf; size_t nleaf;
};

struct pchain {
	char name[PLAN_NAME_MAX];
	struct prule *rules;
	size_t nrules;
	uint32_t *rule_ids; /* the policy rules it enforces, in order */
	size_t nrule_ids;
	size_t refs;        /* ports dispatching to it */
	/* The kernel's form of the rules: segments entered through verdict
	 * maps (none for a short chain).  The rules above stay the meaning:
	 * trace and counters read them. */
	struct pdisp_seg *segs;
	size_t nsegs;
	struct pfact *facts; /* sorted by first */
	size_t nfacts;
};

/* The sets of one group that membership changes edit. */
enum member_set {
	MS_ADDR4, MS_ADDR6,         /* g-G-4, g-G-6 */
	MS_BASE4, MS_BASE6,         /* g-G-4b, g-G-6b */
	MS_PORT_OUT, MS_PORT_IN,    /* p-G-o, p-G-i */
	MS_BASE_OUT, MS_BASE_IN,    /* p-G-ob, p-G-ib */
	MS_COUNT
};

/* An address set (family AF_INET / AF_INET6): a hash set of host
 * addresses (a group's VMs), or with interval set, of prefixes (a group's
 * CIDRs, literal addresses of rules).  Or a set of local vNIC ids (family
 * 0: each element's id in a[0..3], host order; dst: matched against the
 * destination's id). */
struct pset {
	char name[PLAN_NAME_MAX];
	uint8_t family;
	bool interval;
	bool dst;
	bool service;            /* family 0: port ranges, lo in a[0..1], hi in a[2..3] (network order) */
	bool hot;                /* tag changes edit it (its group is tag-driven) */
	bool isolation;          /* a quarantine edits it (gengine_follows_isolation) */
	bool iso_group;          /* ...and its group is an isolation group itself
				  * (gengine_is_isolation): every quarantine does */
	bool dead;               /* empty for good: while compiling only (dropped) */
	bool member;             /* a set of a group's members (or its base's): */
	size_t group;            /* ...that group */
	enum member_set kind;    /* ...and which of its sets (plan.group_sets) */
	size_t refs;             /* lookups of it in the plan's rules */
	struct dfw_addr *elems;  /* sorted, disjoint */
	size_t nelems, cap;
	/* The most elements the kernel's set holds (its NFTA_SET_DESC_SIZE),
	 * with room to grow (set_size); 0: no bound.  Given to the hash sets
	 * no tag change edits: with a size the kernel makes a fixed-size hash
	 * table, which takes elements faster than the resizable one it makes
	 * otherwise (docs/PERFORMANCE.md).  Only a full load can grow it. */
	uint32_t size;
};

struct pport {
	char ifname[16];
	uint32_t id;             /* src id in meta mark, dst id in meta priority */
	size_t vm;               /* inventory index */
	uint8_t mac[6];
	struct dfw_addr *addrs;  /* vm_member_addr's (declared, IPv6 link-local) + "::" */
	size_t naddrs;
	bool learn4, learn6;     /* addresses = learn, nothing locked yet for
				  * that family: ARP / ND / DHCP of the port go
				  * to nflog group DFW_NFLOG_LEARN */
	char out_chain[PLAN_NAME_MAX];
	char in_chain[PLAN_NAME_MAX];
};

struct plan {
	struct pport *ports;   size_t nports;   /* sorted by ifname */
	/* The host's uplinks (id DFW_UPLINK_ID): fixed for a dfwd's lifetime,
	 * so only a full load writes them and plan_diff ignores them. */
	char uplinks[DFW_MAX_UPLINKS][16];
	size_t nuplinks;
	struct pset *sets;     size_t nsets;    /* sorted by name */
	struct pchain *chains; size_t nchains;  /* sorted by name */
	/* Named counter objects, one per policy rule and direction
	 * ("r-ID-in", "r-ID-out"; "r-default-in/out"), sorted. */
	char (*counters)[PLAN_NAME_MAX]; size_t ncounters;
	/* Where a membership change goes (plan_member_delta), so that a tag
	 * change looks up no name: per policy group, the indexes in sets of
	 * its sets (enum member_set; SIZE_MAX: none), and per VM of the
	 * inventory, the index in ports of its vNIC (SIZE_MAX: not local). */
	size_t (*group_sets)[MS_COUNT]; size_t ngroups;
	size_t *vm_port;       size_t nvms;
	size_t isolated;       /* the index in sets of DFW_SET_ISOLATED */
};

struct gengine;

/* Compiles the plan of one host from the policy and current membership.
 * Never fails on a validated policy. */
struct plan *plan_compile(const struct dfw_policy *p, const struct gengine *e,
			  const char *host);
void plan_free(struct plan *pl);

/* Prints the plan as an nft script (loadable with `nft -f`, used by golden
 * tests and `dfwctl plan`), with the given table name. */
void plan_print_nft(const struct plan *pl, const char *table, FILE *f);

/* The order to create the plan's sets in (indexes into pl->sets): the
 * kernel finds a set by walking the table's sets in creation order, for
 * every rule lookup and element message (about 25 ns per set passed).
 * The sets that tag changes edit come first, and among them those a
 * quarantine edits (the isolation path's latency); then the others; each
 * part by the number of lookups in it, most first (ties by name). */
void plan_set_order(const struct plan *pl, size_t *order);

const struct pchain *plan_find_chain(const struct plan *pl, const char *name);
const struct pset *plan_find_set(const struct plan *pl, const char *name);
const struct pport *plan_find_port(const struct plan *pl, const char *ifname);

/* The changes that turn installed `from` into desired `to`.  Pointers
 * borrow from the two plans, which must outlive the diff. */
struct pelem_change {
	const struct pset *set;  /* in `to` for adds, in `from` for deletes */
	struct dfw_addr addr;
};

struct plan_diff {
	const struct pport **port_del;   size_t nport_del;  /* from */
	const struct pport **port_add;   size_t nport_add;  /* to */
	const struct pset **set_del;     size_t nset_del;
	const struct pset **set_add;     size_t nset_add;   /* with elements */
	struct pelem_change *elem_del;   size_t nelem_del;  /* in kept sets */
	struct pelem_change *elem_add;   size_t nelem_add;
	const struct pchain **chain_del; size_t nchain_del;
	const struct pchain **chain_add; size_t nchain_add;
	const char **counter_del;        size_t ncounter_del; /* names */
	const char **counter_add;        size_t ncounter_add;
};

void plan_diff(const struct plan *from, const struct plan *to, struct plan_diff *d);
void plan_diff_free(struct plan_diff *d);
bool plan_diff_empty(const struct plan_diff *d);

/* Incremental path: the set-element changes one membership delta (to the
 * group's members or its base) causes in the installed plan pl (the group's
 * address sets, its base's, and for a local VM, its vNIC-id sets), as the
 * engine e has them now, appended to d; pointers in d borrow from pl,
 * which must have been compiled from policy p.  Cost: the VM's addresses,
 * whatever the size of the policy; no set is found by name. */
void plan_member_delta(const struct plan *pl, const struct gengine *e,
		       const struct dfw_policy *p, size_t group, size_t vm,
		       struct plan_diff *d);
/* Records in pl the element changes of d, after the kernel took them. */
void plan_apply_elems(struct plan *pl, const struct plan_diff *d);

/* The kernel keeps a set that plan_diff(from, to) keeps, with its size.
 * Returns the first kept set of `to` that holds more elements than its
 * size in `from`: such a plan goes in only by a full load, which makes
 * every set anew with the size `to` gives it.  NULL if none, and then each
 * kept set's size in `to` is its kernel size, copied from `from`. */
const struct pset *plan_keep_sizes(const struct plan *from, struct plan *to);
/* The first set of the installed plan that its element changes d (from
 * plan_member_delta) would fill past its size, NULL if none.  The kernel
 * takes a batch's deletes before its adds (backend_apply). */
const struct pset *plan_delta_overflow(const struct plan_diff *d);

/* One element of a segment's dispatch map: ports lo-hi jump to an
 * atom's chain. */
struct kform_jump {
	uint16_t lo, hi;
	char atom[PLAN_NAME_MAX];
};

/* The kernel's form of chain c with its dispatch and factored runs
 * (dfw/kform.c), in the order the backend creates it: its leaf chains,
 * its atoms' chains each followed, per segment, by its maps (one per
 * protocol that has atoms), then the chain itself.  Every chain begins
 * with chain() and ends with end(); a rule in an atom's or a leaf chain
 * has atom set; map_lookup() is a segment's map lookup of one protocol in
 * the chain.  A NULL callback is skipped.  The reverse order deletes. */
struct kform_ops {
	void (*chain)(void *arg, const char *name);
	void (*end)(void *arg);
	void (*rule)(void *arg, const struct prule *r, bool atom);
	void (*map)(void *arg, const char *name, const struct kform_jump *j, size_t n);
	void (*map_lookup)(void *arg, const struct pchain *c, size_t seg, uint8_t proto);
};
void kform_walk(const struct pchain *c, const struct kform_ops *ops, void *arg);

/* What the kernel holds for chain c with its dispatch and factored runs
 * (kform_walk): chains, rules (a rule in several atoms' chains counted in
 * each; the map lookups and the leaf chains' rules counted) and map
 * elements (interval ends counted); and the rules every new flow meets,
 * outside the atoms' and leaf chains (walked). */
struct disp_size {
	size_t chains, rules, maps, elems, walked;
};
void disp_size(const struct pchain *c, struct disp_size *sz);

/* Dispatch (dfw/dispatch.c).  chain_dispatch fills the segments of chain
 * c of pl (after pl's sets are final; it only reads pl, so chains can be
 * dispatched at once on several threads); dispatch_free frees a chain's.
 * Names of the kernel objects of segment k of chain c: its maps
 * ("C.k.tcp", "C.k.udp") and its atoms' chains ("C.k.j", j the index of
 * the first atom with those rules, pdisp_atom.chain). */
#define DISP_MIN_RULES 8 /* a shorter run stays a run of rules */
/* The kernel walks every chain of every table on each commit, also one
 * that only edits set elements (a tag change): each atom's chain costs
 * every later commit a little.  A chain dispatches its 6 longest runs. */
#define DISP_MAX_SEGS 6
void chain_dispatch(const struct plan *pl, struct pchain *c);
void dispatch_free(struct pchain *c);
void disp_map_name(const struct pchain *c, size_t k, uint8_t proto, char *buf, size_t len);
void disp_atom_name(const struct pchain *c, size_t k, size_t j, char *buf, size_t len);
/* The segment that starts at rule i of c, or NULL. */
const struct pdisp_seg *disp_seg_at(const struct pchain *c, size_t i);
/* The protocols a map dispatches, in the order of the maps' rules. */
extern const uint8_t disp_protos[2];
/* Whether segment s has atoms of proto (and so a map for it). */
bool disp_has_proto(const struct pdisp_seg *s, uint8_t proto);
/* Whether rule r matches one protocol other than TCP and UDP. */
bool disp_other_proto(const struct prule *r);
/* Whether item it of a rule in an atom's chain is left out there: the
 * map's key already matched the port and its protocol. */
bool disp_item_implied(const struct pitem *it);

/* Factored runs (dfw/factor.c).  chain_factor chooses them in chain c,
 * after chain_dispatch (it touches c alone); dispatch_free frees them
 * with the segments.
 * The leaf chain of run f of chain c is "C.rID" (ID: its policy rule). */
#define FACT_MAX_CHAINS 512 /* leaf chains per chain: each costs every commit a little */
void chain_factor(struct pchain *c);
void fact_free_all(struct pchain *c);
void fact_leaf_name(const struct pchain *c, const struct pfact *f, char *buf, size_t len);
/* The kernel's rules in one place (a chain, or an atom's chain) of a
 * policy chain's rules, as they are met in chain order, with one walker
 * per place (zeroed, then kwalk_free): kwalk_rule gives the kernel rule
 * of rule i of c, or NULL when an earlier rule of the place gave it (a
 * factored run's outer rule is held once per place). */
struct kwalk {
	const struct pfact *f;
	bool *seen;
	size_t cap;
};
const struct prule *kwalk_rule(struct kwalk *w, const struct pchain *c, size_t i);
void kwalk_free(struct kwalk *w);

/* A VM's addresses as a member of a set (a group's, its base's, a rule's
 * VM literal, what a tag change edits): its declared or locked addresses
 * and the IPv6 link-local address derived from its MAC (EUI-64), which its
 * vNIC may always send from, also with addresses = learn or IPv4 only.
 * Not "::" (every VM's source of duplicate address detection).  Iterates
 * the addresses of family (0: both) from *pos (0 at first):
 *
 *     for (size_t i = 0; vm_member_addr(v, AF_INET6, &i, &a);)
 *
 * fills *a and returns true, or returns false after the last. */
bool vm_member_addr(const struct vm *v, uint8_t family, size_t *pos, struct dfw_addr *a);

/* Whether a port's frames from its address a pass classify in one lookup
 * (port_src4 / port_src6): not while the port learns that family (its
 * frames meet the learn rules), and never from "::" (only duplicate
 * address detection and listener reports may come from it). */
bool pport_fast_addr(const struct pport *p, const struct dfw_addr *a);
/* Whether a port's address is in the egress map (port_dst4 / port_dst6):
 * all but "::", which is no packet's destination. */
bool pport_dst_addr(const struct dfw_addr *a);

/* Set names, so that callers (daemon, trace) can find a group's sets. */
void group_set_name(const char *group, uint8_t family, char *buf, size_t len);
void port_set_name(const char *group, bool dst, char *buf, size_t len);

#endif
