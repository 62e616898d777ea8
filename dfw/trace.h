/* What-if evaluation: runs the compiled plans (dfw/compile.h) for one new
 * connection without sending a packet, the way the kernel runs the rules
 * the backend made of them (docs/DATAPLANE.md): anti-spoofing, blocks,
 * the source vNIC's out-policy on its host, the destination vNIC's
 * in-policy on its host.  `dfwctl trace` prints the result; the kernel
 * tests check it against real probes. */
#ifndef DFW_TRACE_H
#define DFW_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfw/compile.h"
#include "tagger/state.h"

/* The first packet of a connection. */
struct trace_pkt {
	struct dfw_addr src, dst;  /* host addresses of one family */
	uint8_t proto;             /* IPPROTO_*; 0: none (matches "any" only) */
	uint16_t dport;            /* TCP/UDP/SCTP */
	int16_t icmp_type, icmp_code;
};

enum trace_verdict { TV_ALLOW, TV_DROP, TV_REJECT };

/* One policy chain's decision. */
struct trace_step {
	bool applies;           /* the chain was consulted */
	bool is_default;        /* the default rule decided */
	uint32_t rule_id;       /* else the policy rule that decided */
	enum trace_verdict verdict;
	bool logged;            /* the deciding rule logs */
	/* The deciding rule is a drop or reject in monitor mode: it logged,
	 * counted and let the packet through (verdict allow). */
	bool monitor;
};

/* Whether every test of rule r (a chain's rule, or a kernel rule of its
 * dispatch or factored form) holds for pk from vNIC src_id to dst_id. */
bool trace_rule_matches(const struct plan *pl, const struct prule *r, uint32_t src_id,
			uint32_t dst_id, const struct trace_pkt *pk);

/* Runs chain c of plan pl for pk from vNIC src_id to vNIC dst_id
 * (DFW_UPLINK_ID for the far side of an uplink). */
void trace_chain(const struct plan *pl, const struct pchain *c, uint32_t src_id, uint32_t dst_id,
		 const struct trace_pkt *pk, struct trace_step *st);

/* One end of a connection: a VM (its host's plan and port) or an address
 * outside every vNIC (vm < 0). */
struct trace_end {
	long vm;
	const struct plan *pl;   /* the plan of the VM's host */
	const struct pport *port;
};

struct trace_result {
	enum trace_verdict verdict;
	const char *decided_by;  /* "out", "in", or a base-chain reason */
	struct trace_step out, in;
	char note[384];          /* why, when no policy chain decided */
};

/* The whole path of pk from src to dst; blocks are the store's operator
 * blocks (expired ones are skipped) and eng the membership their scopes
 * use.  The threat detector's own blocks live only in the kernel and are
 * not seen here. */
void trace_path(const struct dfw_policy *p, const struct gengine *eng,
		const struct dfw_block *blocks, size_t nblocks, uint64_t now_ms,
		const struct trace_end *src, const struct trace_end *dst,
		const struct trace_pkt *pk, struct trace_result *res);

const char *trace_verdict_name(enum trace_verdict v); /* "allow", "drop", "reject" */

/* Everything a trace needs: the store's desired state (policy with
 * placement, modes and learned addresses; tags, with assumed changes;
 * operator blocks), membership, and each host's plan, compiled on demand
 * exactly as that host's dfwd compiles it. */
struct trace_world {
	struct dfw_policy *p;
	struct gengine *e;
	struct dfw_block *blocks;
	size_t nblocks;
	struct plan **plans;   /* per host of hosts */
	struct strv hosts;
	uint64_t rev;          /* the store revision it reflects */
};

/* What-if tag changes: "VM=TAG" to add (assume) or remove. */
struct trace_assume {
	const char *const *add;
	size_t nadd;
	const char *const *del;
	size_t ndel;
};

/* Reads the store and builds the world.  Returns 0, 1 for bad input
 * (an assumption naming an unknown VM or tag; reason in err), -1 when the
 * store cannot be read or holds no valid policy. */
int trace_world_load(struct store *s, const struct trace_assume *as, struct trace_world *w,
		     char *err, size_t errlen);
/* From a snapshot read elsewhere (w->rev is left 0). */
int trace_world_snapshot(const struct snapshot *snap, const struct trace_assume *as,
			 struct trace_world *w, char *err, size_t errlen);
/* From a policy text and tag keys ("tag/VM/TAG"), for tests. */
int trace_world_from(const char *policy_text, const char *const *tag_keys, size_t ntags,
		     struct trace_world *w, char *err, size_t errlen);
void trace_world_free(struct trace_world *w);

/* An end named by a VM or an address: fills end and the address to use
 * (a VM's first address of family; family 0: IPv4 unless the other end
 * decides).  Returns 0, or 1 with the reason in err. */
int trace_world_end(struct trace_world *w, const char *spec, uint8_t family,
		    struct trace_end *end, struct dfw_addr *addr, char *err, size_t errlen);

#endif
