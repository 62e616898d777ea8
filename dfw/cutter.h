/* Cuts the connections of VMs entering quarantine on a thread of its own.
 *
 * A cut walks the host's conntrack table, which takes longer the more
 * entries it holds (docs/PERFORMANCE.md, "Cutting connections": 11 ms
 * with 1k entries, 127 ms with 100k).  The agent queues a cut once the
 * kernel has acknowledged the quarantine and goes on realizing the next
 * changes; cuts queued while one runs are made together in the next.
 * A cut that lands after the VM's release is harmless: a flow whose entry
 * is gone is looked at again by the policy in force, which then allows
 * it. */
#ifndef DFW_CUTTER_H
#define DFW_CUTTER_H

#include <stddef.h>
#include <stdio.h>

#include "common/util.h"

struct cutter;

/* Starts the thread, with a backend of its own for table (its own netlink
 * socket); log lines go to log (may be NULL) as who.  NULL with the reason
 * in err. */
struct cutter *cutter_new(const char *table, FILE *log, const char *who, char *err,
			  size_t errlen);
/* Queues a cut of the connections of addrs (copied), the addresses of nvms
 * VMs, the first named first (for the log).  Returns at once. */
void cutter_queue(struct cutter *c, const struct dfw_addr *addrs, size_t n, size_t nvms,
		  const char *first);
/* Makes the queued cuts, then stops the thread. */
void cutter_free(struct cutter *c);

#endif
