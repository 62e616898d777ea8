/* Putting security tags on VMs and taking them off, as one store revision,
 * validated against the stored policy (unknown VMs and undeclared tags are
 * refused with a suggestion). */
#ifndef DFW_TAGS_H
#define DFW_TAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "tagger/store.h"

#define TAG_KEY_MAX 512

/* Adds (add) or removes tags of vm in one revision.  Names compare
 * ignoring case: a tag already stored in another spelling is kept as it
 * is, and removing takes every spelling, also of a VM or tag the policy
 * no longer has (adding those is refused).  names, when not NULL,
 * receives the spelling of each tag: declared, or as stored when removed.
 * changed, when not NULL, says per tag whether it was written: false for
 * a tag the VM had already (adding) or did not have (removing).  When no
 * tag changes, nothing is written and *rev is the store's revision.
 * Returns 0 with *rev, 1 when the input is refused (reason in err; nothing
 * written), -1 on a store error. */
int tags_write(struct store *s, const char *vm, char *const *tags, size_t ntags, bool add,
	       char (*names)[TAG_KEY_MAX], bool *changed, uint64_t *rev, char *err,
	       size_t errlen);

/* 0 when vm is a VM of the stored policy; 1 with the reason in err (an
 * unknown name, with the nearest one; no policy stored); -1 when the
 * store could not be read. */
int tags_vm_known(struct store *s, const char *vm, char *err, size_t errlen);

/* tags_write with a record key.  Adding, it also puts rec_key = rec_value
 * in the same revision (a detection's record).  Removing (a release), it
 * writes only while rec_key still holds rec_value (NULL: is absent), read
 * in the same transaction, and returns 2 (reason in err; nothing written)
 * when it does not: a release cannot undo a detection it did not see.  A
 * release also keeps the tag of the VM's NETTHREAT_PREFIX record (its
 * name in names is then empty). */
int tags_write_rec(struct store *s, const char *vm, char *const *tags, size_t ntags, bool add,
		   const char *rec_key, const char *rec_value, char (*names)[TAG_KEY_MAX],
		   bool *changed, uint64_t *rev, char *err, size_t errlen);

/* detected/VM: the scanner's last detection in a VM (epoch ms, severity),
 * written with its tag; a release checks it did not move during its full
 * scan.  No part of any plan. */
#define DETECTED_PREFIX "detected/"

/* netthreat/VM: the tag dfwd's network threat detector put on the VM,
 * written with it.  A release (tags_write_rec removing) keeps that tag:
 * a clean file scan says nothing of a network threat.  Any other untag
 * of the tag removes the record with it. */
#define NETTHREAT_PREFIX "netthreat/"

/* The key of vm's NETTHREAT_PREFIX record (VM names in keys are lower
 * case). */
void netthreat_key(char key[TAG_KEY_MAX], const char *vm);

/* Where a VM runs since it migrated: "placement/VM" holds the host and
 * overrides the inventory's `host` (dfwd on every host follows it). */
#define PLACEMENT_PREFIX "placement/"

/* Records that vm now runs on host, as one revision, validated against
 * the stored policy; nothing when it is recorded there already (*changed
 * false, *rev the store's).  Returns like tags_write. */
int placement_write(struct store *s, const char *vm, const char *host, bool *changed,
		    uint64_t *rev, char *err, size_t errlen);

/* Monitor mode (keys mode/..., tagger/state.h): puts the given categories
 * (names as in the policy) and rules (ids) in monitor mode, or back in
 * enforce mode, as one revision validated against the stored policy.  With
 * all and !monitor, every monitor key goes.  A rule that allows cannot be
 * put in monitor mode.  When every category and rule is in that mode
 * already nothing is written (*changed false, *rev the store's).  Returns
 * like tags_write. */
int modes_write(struct store *s, bool monitor, char *const *categories, size_t ncat,
		const uint32_t *rules, size_t nrules, bool all, bool *changed, uint64_t *rev,
		char *err, size_t errlen);

/* Timed blocks (keys block/..., tagger/state.h): blocks addr (a host
 * address) until until_ms (wall clock, ms), at the vNICs of scope (a group
 * of the stored policy) or everywhere (scope NULL); expired blocks are
 * removed in the same revision.  block_delete removes one.  Returns like
 * tags_write (block_delete: 1 also when there is no such block). */
int block_write(struct store *s, const struct dfw_addr *addr, const char *scope,
		uint64_t until_ms, uint64_t *rev, char *err, size_t errlen);
int block_delete(struct store *s, const struct dfw_addr *addr, const char *scope,
		 uint64_t *rev, char *err, size_t errlen);

/* Address learning: locks addr as the learned address of its family for
 * vm, unless one is locked already (first writer wins, also between hosts).
 * Returns 0 when it was locked now (*rev set), 1 when refused (one is
 * locked already, or vm does not learn; reason in err), -1 on error.
 * learned_forget removes the VM's locked addresses (both families). */
int learned_write(struct store *s, const char *vm, const struct dfw_addr *addr, uint64_t *rev,
		  char *err, size_t errlen);
int learned_forget(struct store *s, const char *vm, uint64_t *rev, char *err, size_t errlen);

#endif
