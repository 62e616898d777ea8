/* The host agent's core: the one place where store, membership, compiler
 * and backend meet.  dfwd.c wraps it in an event loop.
 *
 * It realizes the store's desired state for the vNICs of one host: a full
 * load at start (one atomic replace of whatever the kernel holds), then one
 * batch per group of store changes.  A policy in the store that fails to
 * parse is reported and ignored: the last good policy stays in force. */
#ifndef DFW_AGENT_H
#define DFW_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct agent;

struct agent_opts {
	const char *host;      /* this hypervisor's name in the inventory */
	const char *store_uri;
	const char *table;     /* nftables table name */
	FILE *log;             /* one line per event */
	const char *const *uplinks; /* the bridge's overlay ports (e.g. VXLAN) */
	size_t nuplinks;            /* at most DFW_MAX_UPLINKS */
	unsigned status_ttl_s;      /* host status liveness; 0: AGENT_STATUS_TTL_S */
	bool own_tables;            /* backend_own_tables: no one else may change them */
};

#define AGENT_STATUS_TTL_S 10

struct agent *agent_new(const struct agent_opts *o, char *err, size_t errlen);
void agent_free(struct agent *a);

/* Realizes every store change not yet realized (all at once, one batch).
 * Returns 0, or -1 when the kernel refused (logged; retried next time with
 * a full load). */
int agent_sync(struct agent *a);
/* Publishes this host's status (realized revision, vNICs, last error) in
 * the store when it changed, and every status_ttl_s/3 to stay alive;
 * cheap to call on every loop. */
void agent_publish(struct agent *a);
/* Clean shutdown: the host's status stays, marked not alive. */
void agent_withdraw(struct agent *a);
/* Periodic check: reloads the whole plan if dfw's tables went missing. */
void agent_heartbeat(struct agent *a);
/* A link appeared or went away in this namespace. */
void agent_link(struct agent *a, const char *ifname, bool present);
/* The network threat detector's nflog descriptor (-1 while [netthreat] is
 * off), and what to do when it is readable. */
int agent_threat_fd(struct agent *a);
void agent_threat_read(struct agent *a);
/* The connection cutter's descriptor: readable when cuts the threat
 * response queued are done; agent_cutter_read reports them. */
int agent_cutter_fd(struct agent *a);
void agent_cutter_read(struct agent *a);
/* Address learning (trust on first use): the guest behind vNIC
 * seen->ifname used seen->addr (seen in its ARP / neighbour discovery /
 * DHCP by the learn nflog group).  For a VM with addresses = learn that
 * has no locked address of that family yet, the agent locks it in the
 * store (first writer wins, cluster-wide) and realizes it, unless another
 * VM holds it, the policy names it as a host of its own, or a DHCPACK
 * was for another MAC; otherwise it is ignored. */
struct learn_seen;
void agent_learn(struct agent *a, const struct learn_seen *seen);
/* The action of the realized policy's rule ("230" or "default") as a flow
 * log states it: "allow", "drop", "reject"; NULL when there is no such
 * rule (a flow logged under an older policy). */
const char *agent_rule_verdict(void *agent, const char *rule, bool out);
/* The store's watch descriptor (or -1) and its acknowledgement. */
int agent_store_fd(struct agent *a);
void agent_store_ack(struct agent *a);

/* What the last realized update cost, for benchmarks and status. */
struct agent_info {
	uint64_t rev;            /* realized revision */
	uint64_t last_update_us; /* store read to kernel ack of the last update */
	uint64_t last_book_us;   /* after that ack: recording it in the installed plan */
	size_t last_msgs;        /* netlink messages of its batch */
	size_t last_bytes;       /* and their bytes */
	size_t vnics, chains, sets;
	bool in_sync;
};
void agent_info(const struct agent *a, struct agent_info *out);

/* Answers one control request line ("status", "groups [G]", "rules VM",
 * "threats", "plan FILE", "counters [RULE]", each optionally preceded by
 * "json") on f: "ok LEN" and the answer, or an error line.  Returns the
 * answer's status (enum control_status, dfw/control.h). */
int agent_request(struct agent *a, const char *line, FILE *f);

#endif
