/* Putting security tags on VMs and taking them off, as one store revision,
 * validated against the stored policy (unknown VMs and undeclared tags are
 * refused with a suggestion). */
#ifndef DFW_TAGS_H
#define DFW_TAGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tagger/store.h"

#define TAG_KEY_MAX 512

/* Adds (add) or removes tags of vm in one revision.  names, when not NULL,
 * receives the declared spelling of each tag.  Returns 0 with *rev, 1 when
 * the input is refused (reason in err; nothing written), -1 on a store
 * error. */
int tags_write(struct store *s, const char *vm, char *const *tags, size_t ntags, bool add,
	       char (*names)[TAG_KEY_MAX], uint64_t *rev, char *err, size_t errlen);

/* Where a VM runs since it migrated: "placement/VM" holds the host and
 * overrides the inventory's `host` (dfwd on every host follows it). */
#define PLACEMENT_PREFIX "placement/"

/* Records that vm now runs on host, as one revision, validated against
 * the stored policy.  Returns like tags_write. */
int placement_write(struct store *s, const char *vm, const char *host, uint64_t *rev, char *err,
		    size_t errlen);

#endif
