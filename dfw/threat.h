/* The network threat response of one host (seed 004): the first packet of
 * every new flow (nflog group DFW_NFLOG_NEWFLOWS) goes through the detector
 * (netthreat.h); a scanning VM is reported, and in enforce mode its
 * addresses are blocked in the kernel for [netthreat] block_for (a timed
 * set element; its connections are cut) and it gets the configured tag.
 * The agent owns one and hands it the policy and plan it realized. */
#ifndef DFW_THREAT_H
#define DFW_THREAT_H

#include <stdio.h>

#include "common/out.h"
#include "dfw/backend.h"
#include "dfw/compile.h"
#include "dfw/cutter.h"
#include "tagger/config.h"
#include "tagger/store.h"

struct threat;

/* Borrows be, cutter and store.  log receives one line per event ("who:
 * ..."). */
struct threat *threat_new(struct backend *be, struct cutter *cutter, struct store *store,
			  FILE *log, const char *who);
void threat_free(struct threat *t); /* accepts NULL */

/* The policy and plan now realized (both borrowed until the next call; pol
 * may be NULL).  Starts or stops listening as [netthreat] mode says, and
 * restarts the detector when its thresholds changed.  Returns 0, or -1
 * when listening failed (reason in err; retried at the next call). */
int threat_configure(struct threat *t, const struct dfw_policy *pol, const struct plan *pl,
		     char *err, size_t errlen);

/* The descriptor to poll (-1 while off), and what to do when it is readable. */
int threat_fd(const struct threat *t);
void threat_read(struct threat *t);

/* Tags the store refused when a scan was detected (enforce mode with a
 * tag), written now if the store takes them; called at each heartbeat. */
void threat_retry(struct threat *t);

/* A cut it queued is done (for cutter_reap): its report says so. */
void threat_cut_done(void *arg, const struct cutter_result *res);

/* Mode, recent reports (newest first) and the running blocks. */
void threat_print(struct threat *t, struct out *o);

#endif
