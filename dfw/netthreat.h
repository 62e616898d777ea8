/* The network threat detector's logic (seed 004): a source vNIC that, within
 * a sliding window, starts flows to too many distinct (destination,
 * protocol, port) or too many distinct destination addresses is scanning.
 * No I/O: dfwd feeds it the first packet of each new flow (nflog.h) and acts
 * on its alerts.  Memory per source is bounded by the thresholds. */
#ifndef DFW_NETTHREAT_H
#define DFW_NETTHREAT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"
#include "tagger/config.h"

struct nt_detector;

struct nt_alert {
	uint32_t src;       /* the source vNIC id */
	uint32_t ports;     /* distinct (destination, protocol, port) in the window */
	uint32_t hosts;     /* distinct destination addresses in the window */
	bool by_ports;      /* which threshold was crossed (ports first) */
};

struct nt_detector *nt_new(const struct dfw_netthreat *cfg);
void nt_free(struct nt_detector *d); /* accepts NULL */
/* New thresholds: every source starts over. */
void nt_configure(struct nt_detector *d, const struct dfw_netthreat *cfg);

/* One new flow from src to dst.  Returns true (and fills *out) when src
 * has just gone over a threshold; src is then quiet (not counted, not
 * alerted again) for hold_ms, and starts over after. */
bool nt_feed(struct nt_detector *d, uint32_t src, const struct dfw_addr *dst, uint8_t proto,
	     uint16_t port, uint64_t now_ms, uint64_t hold_ms, struct nt_alert *out);

/* Sources currently tracked (for status and tests). */
size_t nt_sources(const struct nt_detector *d);

#endif
