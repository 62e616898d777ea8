/* Inventory, security-group definitions and the membership engine.
 *
 * Pure: inventory + tags in, member deltas out.  Nothing here knows the store,
 * the daemon or the kernel, so it is tested without root or files.  Names of
 * VMs, groups and tags are compared case-insensitively (callers store them in
 * lower case; tags keep the spelling of their declaration for display). */
#ifndef DFW_GROUPS_H
#define DFW_GROUPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

struct vm {
	char *name;  /* lower case, unique */
	char *host;  /* hypervisor this VM runs on */
	char *port;  /* host-side vNIC port (bridge port ifname) */
	uint8_t mac[6];
	struct dfw_addr *addrs; /* host addresses (plen 32/128) */
	size_t naddrs;
	char *os;    /* may be "" */
	/* addresses = learn: no declared addresses; the first IPv4 and the
	 * first IPv6 address the guest uses (ARP, neighbour discovery, DHCP)
	 * are learned and then locked (trust on first use).  The agent puts
	 * the locked ones in addrs. */
	bool learn;
	int line;    /* where it was declared, for diagnostics */
};

enum cond_field { COND_TAG, COND_NAME, COND_OS };
enum cond_op { OP_EQUALS, OP_NOT_EQUALS, OP_CONTAINS, OP_STARTS_WITH, OP_ENDS_WITH };

/* One condition.  For COND_TAG, the VM's tags are searched: EQUALS,
 * CONTAINS, STARTS_WITH, ENDS_WITH hold when SOME tag of the VM satisfies
 * them; NOT_EQUALS holds when NO tag equals the value.  For NAME and OS the
 * VM's field is compared.  All comparisons ignore case.
 *
 * Tags may carry a scope, "scope|tag" (e.g. "os|windows"; split at the
 * first '|').  A tag value "scope|x" compares the scope exactly and applies
 * the operator to the tag part; "scope|" (empty tag part) is any tag of that
 * scope; a value without '|' applies the operator to the tag part of every
 * tag, whatever its scope ("finance" matches "finance" and "dept|finance"). */
struct cond {
	enum cond_field field;
	enum cond_op op;
	char *value;
};

/* Conditions of a criterion are ANDed; criteria of a group are ORed. */
struct criterion {
	struct cond *conds;
	size_t nconds;
};

struct group_def {
	char *name;  /* lower case, unique */
	struct criterion *match;    size_t nmatch;    /* dynamic membership */
	size_t *members;            size_t nmembers;  /* static: VM indexes */
	size_t *includes;           size_t nincludes; /* nested: group indexes */
	struct dfw_addr *addrs;     size_t naddrs;    /* IP/CIDR members */
	/* Exclusion always wins over every way of being a member. */
	struct criterion *exclude_match;   size_t nexclude_match;
	size_t *exclude_members;    size_t nexclude_members; /* VM indexes */
	size_t *exclude_groups;     size_t nexclude_groups;  /* group indexes */
	bool quarantine;       /* entering it cuts the VM's existing connections */
	bool keep_connections; /* ...unless this is set */
	int line;
};

struct inventory {
	struct vm *vms;
	size_t nvms;
	struct group_def *groups;
	size_t ngroups;
};

/* Membership engine.  Owns a copy of nothing: inv must outlive it. */
struct gengine;

/* Builds the engine and evaluates every group with every VM untagged.
 * Fails (NULL, messages in d, each prefixed with file:line of the group)
 * when nested groups (includes or exclude_groups, together) form a cycle;
 * the message names the cycle, e.g. "group a: cycle a -> b -> a". */
struct gengine *gengine_new(const struct inventory *inv, const char *file,
			    struct diag *d);
void gengine_free(struct gengine *e);

/* Called once per membership change, after the engine's state is updated.
 * joined is true when vm became a member of group, false when it left.
 * base: the change is to the group's base (gengine_has_base), not to its
 * members. */
typedef void (*gengine_delta_fn)(void *arg, size_t group, size_t vm, bool joined,
				 bool base);

/* Replaces the tag set of one VM (tags compared case-insensitively,
 * duplicates ignored) and reports exactly the membership changes this causes,
 * in every group, nested ones included.  fn may be NULL.  Cost depends on the
 * groups that can see these tags, not on the number of VMs or groups. */
void gengine_set_tags(struct gengine *e, size_t vm, const char *const *tags,
		      size_t ntags, gengine_delta_fn fn, void *arg);

bool gengine_is_member(const struct gengine *e, size_t group, size_t vm);
/* True when a tag change can change the group's members: a criterion of
 * it, or of a group it includes or excludes, tests a tag. */
bool gengine_tag_driven(const struct gengine *e, size_t group);
/* The same for the group's base (gengine_has_base): through its criteria
 * and included groups only. */
bool gengine_base_tag_driven(const struct gengine *e, size_t group);
/* True when a change to the members of an isolation group (one with
 * quarantine = yes, or that some group excludes) can change this group's
 * members (base: its base's): it is such a group, or includes or excludes
 * one, directly or through other groups; a base only through what it
 * includes.  What a quarantine edits. */
bool gengine_follows_isolation(const struct gengine *e, size_t group, bool base);
/* True for an isolation group itself: quarantine = yes, or some group
 * excludes it.  Every quarantine edits its sets. */
bool gengine_is_isolation(const struct gengine *e, size_t group);
/* A group that excludes groups (exclude_groups), each of which excludes
 * none, has a base: its VM members before that exclusion.  A VM is then a
 * member exactly when it is in the base and in none of those groups, so the
 * compiler can give the kernel the base and the excluded groups' sets, and
 * a VM that enters an excluded group (quarantine) changes no base. */
bool gengine_has_base(const struct gengine *e, size_t group);
bool gengine_is_base_member(const struct gengine *e, size_t group, size_t vm);
void gengine_foreach_base_member(const struct gengine *e, size_t group,
				 void (*fn)(void *arg, size_t vm), void *arg);
/* Number of VM members of a group (addresses not counted). */
size_t gengine_count(const struct gengine *e, size_t group);
/* Visits the VM members of a group in ascending VM index order. */
void gengine_foreach_member(const struct gengine *e, size_t group,
			    void (*fn)(void *arg, size_t vm), void *arg);
/* The effective IP/CIDR members of a group: its own addrs plus those of the
 * groups it includes, transitively, sorted and without duplicates, before
 * exclusion (gengine_net_part).  The returned array belongs to the engine. */
const struct dfw_addr *gengine_addrs(const struct gengine *e, size_t group,
				     size_t *n);
/* The same in parts, by what excludes them (exclusion always wins, as for
 * VMs): an address of part k is a member unless it is an address of one of
 * the groups in *excl (sorted, *nexcl of them; its VMs' or its IP/CIDR
 * members).  The group's own addresses are excluded by its exclude_groups;
 * an included group's parts by the groups that exclude them there and by
 * this group's exclude_groups.  Parts with the same exclusions are one,
 * with sorted, unique addresses (*n); none is empty.  The arrays belong to
 * the engine. */
size_t gengine_net_parts(const struct gengine *e, size_t group);
const struct dfw_addr *gengine_net_part(const struct gengine *e, size_t group, size_t k,
					size_t *n, const size_t **excl, size_t *nexcl);

/* True when a condition / criterion list holds for a VM with these tags.
 * Exposed for `trace --assume-tag` style what-if evaluation and tests. */
bool criteria_match(const struct criterion *c, size_t n, const struct vm *vm,
		    const char *const *tags, size_t ntags);

#endif
