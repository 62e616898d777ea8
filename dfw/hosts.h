/* Host status as the agents publish it (dfwd: agent_publish) and as the
 * CLI and the benchmarks read it: each host's realized revision, vNIC
 * count, liveness and last error, and waiting until every host that must
 * realize a revision has (`--wait`). */
#ifndef DFW_HOSTS_H
#define DFW_HOSTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tagger/store.h"

struct host_row {
	char name[64];
	bool alive;      /* the store's liveness (etcd: lease) */
	bool valid;      /* the published value parsed */
	uint64_t rev;    /* realized revision */
	uint64_t vnics;
	uint64_t updated; /* time of the last realization (epoch s) */
	bool loaded;     /* the kernel holds the agent's plan */
	char error[256]; /* the agent's last error, or why the value is unreadable */
};

struct host_list {
	struct host_row *v;
	size_t n, cap;
};

/* Reads every host's status (sorted by name) into l, replacing its rows.
 * A value that does not parse is kept as a row with valid false.
 * Returns 0 or -1 (err). */
int hosts_read(struct store *s, struct host_list *l, char *err, size_t errlen);
void hosts_free(struct host_list *l);

/* Whether the host must still realize rev: every live agent (each holds
 * the changed VM's addresses in its group sets), and a dead one that still
 * holds vNICs (its ports keep the last policy it realized until its agent
 * returns). */
bool host_lags(const struct host_row *r, uint64_t rev);

/* Polls the host statuses (every millisecond, after 200 ms every 50 ms)
 * until no host lags behind rev, or timeout_ms.  l holds the last read.
 * Returns 0 (done), 1 (timed out) or -1 (store error, in err). */
int hosts_wait(struct store *s, uint64_t rev, uint64_t timeout_ms, struct host_list *l,
	       char *err, size_t errlen);

#endif
