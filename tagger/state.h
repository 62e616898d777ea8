/* The desired state beyond the policy text, as the store holds it, read
 * in one snapshot and laid onto a parsed policy.  Shared by dfwd (which
 * realizes it) and dfwctl (which traces and lists it), so both see the
 * same thing.
 *
 * Keys (docs/STORE.md):
 *   tag/<vm>/<tag>          ""          a security tag on a VM
 *   placement/<vm>          HOST        where a VM runs since it migrated
 *   mode/category/<name>    "monitor"   monitor mode for a category
 *   mode/rule/<id>          "monitor"   monitor mode for one rule
 *   learned/<vm>/ipv4|ipv6  ADDRESS     an address learned on first use, locked
 *   block/<addr>            UNTIL_MS    a timed block everywhere
 *   block/<addr>/<group>    UNTIL_MS    a timed block at the group's vNICs
 * A key of these shapes that does not fit the policy (unknown VM, rule,
 * group, a bad address) is reported through warn and ignored. */
#ifndef DFW_STATE_H
#define DFW_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "tagger/config.h"
#include "tagger/store.h"

#define MODE_PREFIX "mode/"
#define LEARNED_PREFIX "learned/"
#define BLOCK_PREFIX "block/"

/* What one store_scan saw, sorted by kind; pairs are (key without its
 * prefix, value). */
struct snapshot {
	char *policy;
	char *policy_file;
	struct strv tag_keys;   /* full keys */
	struct strv placement;  /* VM, host, ... */
	struct strv modes;      /* "category/x" or "rule/N", value, ... */
	struct strv learned;    /* "vm/ipv4", address, ... */
	struct strv blocks;     /* "addr[/group]", until, ... */
};

typedef void (*state_warn_fn)(void *arg, const char *msg);

/* Reads the whole store at one revision.  Keys dfw does not write are
 * reported through warn (may be NULL) and skipped.  Returns 0 or -1. */
int snapshot_read(struct store *s, struct snapshot *snap, uint64_t *rev, state_warn_fn warn,
		  void *arg, char *err, size_t errlen);
void snapshot_free(struct snapshot *snap);

/* Whether key is of a shape dfw writes (docs/STORE.md); any other is
 * reported and ignored, whether a snapshot or a change brings it. */
bool state_key_known(const char *key);

/* True for keys whose change reshapes the plan (policy, placement, modes,
 * learned addresses), as opposed to tags and blocks, which only edit set
 * elements. */
bool state_key_reshapes(const char *key);

/* Lays placement, monitor modes and learned addresses onto p (a policy
 * parsed from snap->policy, or an equivalent one). */
void state_apply(struct dfw_policy *p, const struct snapshot *snap, state_warn_fn warn,
		 void *arg);

/* One tag key: the VM's index and the tag's declared spelling; false (with
 * the reason through warn) when the key does not fit the policy. */
bool state_tag_key(const struct dfw_policy *p, const char *key, size_t *vm,
		   const char **tag, state_warn_fn warn, void *arg);

/* A timed block, from its key and value. */
struct dfw_block {
	struct dfw_addr addr;   /* a host address */
	long group;             /* the scope's group index, or -1: everywhere */
	uint64_t until_ms;      /* wall clock (ms since the epoch) when it ends */
};
/* The longest block dfwctl writes; a longer one found in the store is
 * cut to it when realized. */
#define BLOCK_MAX_MS (30ull * 86400 * 1000)

/* Parses "addr[/group]" and its value against p; false with the reason in
 * err when it does not fit. */
bool state_block(const struct dfw_policy *p, const char *key, const char *value,
		 struct dfw_block *b, char *err, size_t errlen);

/* A number as dfw writes it into the store (mode/rule/ID, a block's
 * value): decimal digits without sign, blank or leading zero, at most max.
 * Nothing else may alias it: dfwctl deletes mode/rule/1, never
 * mode/rule/01.  Returns false when s is not one. */
bool state_number(const char *s, uint64_t max, uint64_t *out);

/* The family key of a learned address: "ipv4" or "ipv6". */
const char *learned_family(uint8_t family);

#endif
