/* The kernel backend: turns plans and plan diffs into ONE nf_tables batch
 * each (one atomic transaction), and removes conntrack entries.  Every
 * libnftnl / libmnl / ctnetlink call of the project lives behind this header.
 * Works in the network namespace of the calling thread. */
#ifndef DFW_BACKEND_H
#define DFW_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dfw/compile.h"

struct backend;

struct backend_stats {
	size_t msgs;   /* netlink messages in the batch */
	size_t bytes;  /* bytes sent */
	uint32_t genid; /* ruleset generation after the commit */
};

/* Opens a netfilter netlink socket.  table: the name of dfw's tables. */
struct backend *backend_open(const char *table, char *err, size_t errlen);
void backend_close(struct backend *b);

/* Replaces dfw's bridge and inet tables (creating them when missing) with
 * exactly the plan, in one transaction: packets see the old or the new
 * policy, never neither.  The tables are deleted and rebuilt whole, but
 * running timed blocks and the counts of the named rule counters that the
 * plan keeps are read first and carried over (what is counted between
 * that read and the commit is lost).  With check_only the kernel validates
 * the batch and discards it.  Returns 0, or -1 with the kernel's reason in
 * err. */
int backend_load(struct backend *b, const struct plan *pl, bool check_only,
		 struct backend_stats *st, char *err, size_t errlen);

/* Applies a diff between the installed and the desired plan in one
 * transaction: new counter objects before the chains that use them, old
 * ones after the chains that used them are gone; counters in both plans
 * keep their counts.  An empty diff sends nothing.  Returns 0 or -1. */
int backend_apply(struct backend *b, const struct plan_diff *d, bool check_only,
		  struct backend_stats *st, char *err, size_t errlen);

/* How a cut finds its conntrack entries: one dump of the whole table,
 * read here, or two dumps per address filtered in the kernel (original
 * source, original destination).  AUTO picks the cheaper for the table's
 * size and the number of addresses (docs/PERFORMANCE.md). */
enum backend_cut_how { BACKEND_CUT_AUTO, BACKEND_CUT_WHOLE, BACKEND_CUT_FILTERED };

struct backend_cut {
	size_t deleted;		  /* entries deleted */
	long entries;		  /* in this namespace's table when the cut began; -1: no conntrack */
	enum backend_cut_how how; /* what was done (AUTO: nothing, the table was empty) */
	size_t dumps;		  /* dumps made */
};

/* Deletes every conntrack entry whose original source or destination is one
 * of addrs (both families), and says how in *cut.  An empty table costs
 * nothing.  Returns 0, or -1 with the reason in err. */
int backend_ct_flush(struct backend *b, const struct dfw_addr *addrs, size_t n,
		     enum backend_cut_how how, struct backend_cut *cut, char *err,
		     size_t errlen);

/* The entries of this namespace's conntrack table (nf_conntrack_count),
 * or -1 when there is no conntrack. */
long backend_ct_entries(void);

/* How a cut went, in words ("2 filtered dumps of 10000 conntrack
 * entries"), in buf. */
const char *backend_cut_str(const struct backend_cut *c, char *buf, size_t len);

/* True when both dfw tables exist in this namespace. */
bool backend_tables_exist(struct backend *b);
/* The netlink port id of another process that owns one of the tables
 * (NFT_TABLE_F_OWNER: while its socket is open, it alone may change
 * them), or 0: none, or not found. */
uint32_t backend_tables_owner(struct backend *b);

/* Reads the hit counts of the policy rules of one inet chain, in chain
 * order: fn gets each rule's id (from its comment; 0 for the default) once,
 * with the counts of the named counter its kernel rules share ("r-ID-out"
 * / "r-ID-in").  That counter also counts the rule's hits in other chains
 * of the same direction, and it outlives chain rewrites.  (A rule with an
 * anonymous counter, from a ruleset without named counters, is reported
 * per kernel rule.)  Returns 0, or -1 with the reason in err. */
typedef void (*backend_counter_fn)(void *arg, uint32_t rule_id, uint64_t packets,
				   uint64_t bytes);
int backend_chain_counters(struct backend *b, const char *chain,
			   backend_counter_fn fn, void *arg, char *err, size_t errlen);

/* Reads every named counter object of dfw's inet table (plan->counters:
 * one per policy rule and direction), in the kernel's order.  Returns 0,
 * or -1 with the reason in err. */
typedef void (*backend_obj_counter_fn)(void *arg, const char *name, uint64_t packets,
				       uint64_t bytes);
int backend_read_counters(struct backend *b, backend_obj_counter_fn fn, void *arg,
			  char *err, size_t errlen);

/* Reads the elements of one of dfw's inet sets back from the kernel:
 * fn(arg, key, len, end, left_ms) per element (interval ends included,
 * flagged by end; left_ms: time before a timed element expires, else 0).
 * Returns 0, or -1 with the reason in err. */
typedef void (*backend_elem_fn)(void *arg, const uint8_t *key, uint32_t len, bool end,
				uint64_t left_ms);
int backend_read_set(struct backend *b, const char *set, backend_elem_fn fn, void *arg,
		     char *err, size_t errlen);

/* Timed blocks: new flows from or to a blocked address are dropped until
 * the kernel expires the element by itself.  A full load keeps the blocks
 * that are still running. */
struct backend_block {
	struct dfw_addr addr;  /* a host address */
	uint64_t timeout_ms;   /* block for (add) / time left (read) */
};
/* Adds blocks in one transaction; an address already blocked keeps its
 * running timeout.  Returns 0 or -1. */
int backend_block(struct backend *b, const struct backend_block *bl, size_t n,
		  struct backend_stats *st, char *err, size_t errlen);
/* The running blocks (malloc'd array, *n entries) with their time left. */
int backend_read_blocks(struct backend *b, struct backend_block **out, size_t *n,
			char *err, size_t errlen);

/* Operator blocks (dfwctl block): replaces, in one transaction, the
 * addresses blocked everywhere (g) and the (address, vNIC id) pairs
 * blocked at vNICs of a scope (sc: traffic from or to that address at
 * that vNIC), each with its time left; the kernel expires them. */
struct backend_scoped_block {
	struct dfw_addr addr;
	uint32_t port_id;
	uint64_t timeout_ms;
};
int backend_set_op_blocks(struct backend *b, const struct backend_block *g, size_t ng,
			  const struct backend_scoped_block *sc, size_t ns,
			  struct backend_stats *st, char *err, size_t errlen);
/* backend_load with the operator blocks (as backend_set_op_blocks takes
 * them) in the same transaction: a full load never leaves them out, not
 * even for the time between two commits. */
struct backend_op_blocks {
	const struct backend_block *g;
	size_t ng;
	const struct backend_scoped_block *sc;
	size_t ns;
};
int backend_load_blocks(struct backend *b, const struct plan *pl,
			const struct backend_op_blocks *ob, struct backend_stats *st, char *err,
			size_t errlen);

/* Checks that bridged IPv4/IPv6 traffic reaches the inet hooks
 * (net.bridge.bridge-nf-call-iptables / -ip6tables = 1 in this namespace).
 * Returns 0, or -1 with what to do in err. */
int backend_check_bridge_nf(char *err, size_t errlen);
/* Sets both knobs back to 1 where they are not: 1 when one was off and is
 * on again, 0 when both were on, -1 (err) when one cannot be set. */
int backend_restore_bridge_nf(char *err, size_t errlen);

/* Whether the tables the next full loads make belong to b's socket
 * (default: no).  Owned, no other process can change or delete them
 * while b is open (the kernel answers EPERM; `nft flush ruleset` leaves
 * them), and they stay in force, owned by no one, once it closes.  A
 * kernel without NFT_TABLE_F_PERSIST (before Linux 6.9) refuses that;
 * the load is then made without it, and backend_owns_tables turns false. */
void backend_own_tables(struct backend *b, bool own);
bool backend_owns_tables(const struct backend *b);

#endif
