/* Cuts connections on a thread of its own.
 *
 * A cut walks the host's conntrack table, which takes longer the more
 * entries it holds (docs/PERFORMANCE.md, "Cutting connections": 11 ms
 * with 1k entries, 127 ms with 100k).  The agent queues a cut once the
 * kernel has acknowledged a quarantine and goes on realizing the next
 * changes; cuts queued while one runs are made together in the next.
 * The network threat response queues its cuts with a ticket instead, each
 * made alone, and reads each one's result back on its own thread
 * (cutter_fd, cutter_reap), so it can report the count.
 * A cut that lands after the VM's release is harmless: a flow whose entry
 * is gone is looked at again by the policy in force, which then allows
 * it. */
#ifndef DFW_CUTTER_H
#define DFW_CUTTER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/util.h"
#include "dfw/backend.h"

struct cutter;

/* Starts the thread, with a backend of its own for table (its own netlink
 * socket); log lines go to log (may be NULL) as who.  NULL with the reason
 * in err. */
struct cutter *cutter_new(const char *table, FILE *log, const char *who, char *err,
			  size_t errlen);
/* Queues a cut of the connections of addrs (copied), the addresses of nvms
 * VMs entering quarantine, the first named first (for the log).  Returns
 * at once. */
void cutter_queue(struct cutter *c, const struct dfw_addr *addrs, size_t n, size_t nvms,
		  const char *first);

/* How a ticketed cut went. */
struct cutter_result {
	uint64_t ticket;
	int rc;                 /* 0, or -1 with the reason in err */
	struct backend_cut cut;
	uint64_t us;            /* from queueing to the end of the cut */
	char err[200];
};

/* Queues a cut of addrs (copied), made alone; its result comes back
 * through cutter_reap under ticket.  Returns at once. */
void cutter_queue_ticket(struct cutter *c, const struct dfw_addr *addrs, size_t n,
			 uint64_t ticket);
/* Readable while results wait to be reaped. */
int cutter_fd(const struct cutter *c);
/* Hands every result made since the last call to fn, in the order the
 * cuts were queued, on the caller's thread. */
void cutter_reap(struct cutter *c, void (*fn)(void *arg, const struct cutter_result *r),
		 void *arg);
/* Makes the queued cuts, then stops the thread.  Results not reaped are
 * dropped.  Accepts NULL. */
void cutter_free(struct cutter *c);

#endif
