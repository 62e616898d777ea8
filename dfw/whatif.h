/* What a new policy would change, in the terms a security team reads:
 * rules added, removed and changed (by id), groups added and removed, and
 * the VMs that would join or leave each group.  Used by `dfwctl plan`
 * (dfwd answers it), next to the kernel batch check. */
#ifndef DFW_WHATIF_H
#define DFW_WHATIF_H

#include "common/out.h"
#include "groups/groups.h"
#include "tagger/config.h"

/* Prints the differences from (old, oe) to (nw, ne) into o as the arrays
 * "rules", "groups" and "members"; returns the number of differences. */
size_t whatif_print(struct out *o, const struct dfw_policy *old, const struct gengine *oe,
		    const struct dfw_policy *nw, const struct gengine *ne);

/* True when the two rules say the same (names of referenced groups and
 * VMs compared, not their indexes). */
bool rule_same(const struct dfw_policy *pa, const struct dfw_rule *a,
	       const struct dfw_policy *pb, const struct dfw_rule *b);

#endif
