/* Host agent core: store -> membership -> plan -> one kernel batch. */
#include "dfw/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/out.h"
#include "dfw/backend.h"
#include "dfw/compile.h"
#include "dfw/control.h"
#include "dfw/cutter.h"
#include "dfw/learn.h"
#include "dfw/threat.h"
#include "dfw/trace.h"
#include "dfw/whatif.h"
#include "groups/groups.h"
#include "tagger/config.h"
#include "tagger/state.h"
#include "tagger/store.h"
#include "tagger/tags.h"

/* A store call that failed waits before the next try: base_ms, doubling
 * with each failure in a row up to 32 times as long, and never longer
 * than max_ms. */
struct backoff {
	uint64_t until_ns;
	unsigned fails;
};

static unsigned backoff_fail(struct backoff *b, unsigned base_ms, unsigned max_ms)
{
	unsigned ms = base_ms << (b->fails < 5 ? b->fails : 5);

	if (ms > max_ms)
		ms = max_ms;
	b->fails++;
	b->until_ns = now_ns() + ms * 1000000ull;
	return ms;
}

/* How long a learned address's store write may hold the loop. */
#define LEARN_WAIT_MS 250

static bool backoff_waiting(const struct backoff *b)
{
	return now_ns() < b->until_ns;
}

static void backoff_ok(struct backoff *b)
{
	*b = (struct backoff){ 0 };
}

struct agent {
	char host[64];
	char who[80];               /* "dfwd[HOST]", for the log */
	char table[64];
	char uplinks[DFW_MAX_UPLINKS][16];
	size_t nuplinks;
	FILE *log;
	struct store *store;
	struct backend *be;
	struct cutter *cutter;      /* quarantine's connection cuts, on a thread */

	struct dfw_policy *realized_pol; /* the threat responder's: a->pol when realized */
	struct learn_seen learn_last; /* the last refused learn frame */
	uint64_t learn_log_s;       /* the second learn_logged counts in */
	uint64_t learn_logged, learn_unlogged;
	uint64_t rev;               /* realized store revision */
	bool loaded;                /* the kernel holds `installed` */
	bool kept;                  /* no policy: the kernel's ruleset was kept... */
	uint64_t kept_rev;          /* ...as of this store revision */
	/* After the kernel refused revision failed_rev (fails times in a
	 * row), it is tried again in full no sooner than retry_ns (a new
	 * revision is tried at once). */
	uint64_t failed_rev, retry_ns;
	unsigned fails;
	/* After a failed read of the store's changes, or a failed status
	 * publish, the next waits (struct backoff): each can take the store's
	 * whole timeout (an etcd that drops packets), and dfwd's loop answers
	 * nothing meanwhile.  The store's watch firing ends the read's wait. */
	struct backoff read_backoff, publish_backoff;
	/* After a learned address the store did not take (in LEARN_WAIT_MS),
	 * learning waits: a guest's frames must not hold the loop one store
	 * timeout each. */
	struct backoff learn_backoff;
	bool own_tables;            /* asked for; logged once if the kernel cannot */
	struct dfw_policy *pol;     /* last good policy, or NULL */
	struct gengine *eng;
	struct strv *vm_tags;       /* per VM of pol */
	struct plan *installed;
	struct threat *threat;      /* [netthreat]: the network threat response */

	/* Operator blocks (dfwctl block), as the store holds them. */
	struct dfw_block *blocks;
	size_t nblocks;
	bool blocks_dirty;          /* to be (re)written to the kernel */
	bool blocks_stale;          /* re-reading them failed: try again */

	/* Learned addresses written to the store, "vm/ipv4", until the
	 * rebuild that realizes them. */
	struct strv learn_pending;

	/* Link presence of local ports, by name. */
	struct strv present;
	/* VMs (names) that entered a quarantine in a change the kernel
	 * refused: cut once a commit succeeds (the retry's full load brings
	 * no membership change to cut them for). */
	struct strv cut_pending;
	/* During rebuild: the VMs the old engine had in a quarantine that
	 * cuts; a fresh engine has them "join" again, and they are not cut
	 * again (their connections since were allowed by the policy). */
	struct strv was_cut;

	/* Host status in the store (store_host_publish). */
	unsigned status_ttl_s;
	char *published;            /* the value last published, or NULL */
	uint64_t published_ns;      /* when (CLOCK_MONOTONIC) */
	bool status_dirty;          /* something published changed since */

	/* For status. */
	time_t last_update;
	uint64_t last_update_us, last_book_us;
	uint64_t updates;
	char last_error[512];
	bool policy_rejected;       /* last_error: the store's policy is invalid */
	struct backend_stats last_stats;
};

#define logf_(a, ...) log_line((a)->log, (a)->who, __VA_ARGS__)

/* The first and the longest wait after a failed read of the store. */
#define STORE_RETRY_MS 1000
#define STORE_RETRY_MAX_MS (32 * STORE_RETRY_MS)

/* The errors of a rejected store policy that the log shows. */
#define POLICY_ERRORS_LOGGED 20

/* Store contents the backend cannot read (a key or value written behind
 * dfw's back), into the agent's log. */
static void on_store_warning(void *arg, const char *msg)
{
	struct agent *a = arg;

	logf_(a, "store: %s", msg);
}

struct agent *agent_new(const struct agent_opts *o, char *err, size_t errlen)
{
	struct agent *a = xcalloc(1, sizeof(*a));

	snprintf(a->host, sizeof(a->host), "%s", o->host);
	snprintf(a->who, sizeof(a->who), "dfwd[%s]", o->host);
	snprintf(a->table, sizeof(a->table), "%s", o->table);
	a->log = o->log;
	if (o->nuplinks > DFW_MAX_UPLINKS) {
		snprintf(err, errlen, "at most %d uplinks", DFW_MAX_UPLINKS);
		goto fail;
	}
	for (size_t i = 0; i < o->nuplinks; i++) {
		if (!*o->uplinks[i] || strlen(o->uplinks[i]) >= sizeof(a->uplinks[i]) ||
		    strpbrk(o->uplinks[i], "/: \t")) {
			snprintf(err, errlen, "uplink '%s' is not an interface name (1-15 characters)",
				 o->uplinks[i]);
			goto fail;
		}
		snprintf(a->uplinks[i], sizeof(a->uplinks[i]), "%s", o->uplinks[i]);
	}
	a->nuplinks = o->nuplinks;
	a->status_ttl_s = o->status_ttl_s ? o->status_ttl_s : AGENT_STATUS_TTL_S;
	a->store = store_open(o->store_uri, true, err, errlen);
	if (!a->store)
		goto fail;
	store_set_warn(a->store, on_store_warning, a);
	a->be = backend_open(o->table, err, errlen);
	if (!a->be)
		goto fail;
	backend_own_tables(a->be, o->own_tables);
	a->own_tables = o->own_tables;
	a->cutter = cutter_new(o->table, a->log, a->who, err, errlen);
	if (!a->cutter)
		goto fail;
	a->threat = threat_new(a->be, a->cutter, a->store, a->log, a->who);
	return a;
fail:
	agent_free(a);
	return NULL;
}

/* The policy goes; the threat responder keeps the realized one (it names
 * the VMs of the installed plan's ports) until the next is realized. */
static void drop_policy(struct agent *a)
{
	if (a->pol) {
		for (size_t i = 0; i < a->pol->inv.nvms; i++)
			strv_free(&a->vm_tags[i]);
	}
	free(a->vm_tags);
	a->vm_tags = NULL;
	gengine_free(a->eng);
	a->eng = NULL;
	if (a->pol != a->realized_pol)
		policy_free(a->pol);
	a->pol = NULL;
	memset(&a->learn_last, 0, sizeof(a->learn_last)); /* may be learned now */
}

void agent_free(struct agent *a)
{
	if (!a)
		return;
	threat_free(a->threat);
	cutter_free(a->cutter);
	drop_policy(a);
	policy_free(a->realized_pol);
	plan_free(a->installed);
	free(a->blocks);
	strv_free(&a->learn_pending);
	strv_free(&a->present);
	strv_free(&a->cut_pending);
	strv_free(&a->was_cut);
	free(a->published);
	backend_close(a->be);
	store_close(a->store);
	free(a);
}

int agent_threat_fd(struct agent *a)
{
	return threat_fd(a->threat);
}

void agent_threat_read(struct agent *a)
{
	threat_read(a->threat);
}

int agent_cutter_fd(struct agent *a)
{
	return cutter_fd(a->cutter);
}

void agent_cutter_read(struct agent *a)
{
	cutter_reap(a->cutter, threat_cut_done, a->threat);
}

int agent_store_fd(struct agent *a)
{
	return store_watch_fd(a->store);
}

void agent_store_ack(struct agent *a)
{
	store_watch_ack(a->store);
	a->read_backoff.until_ns = 0; /* something came: read it now */
}

/* --- reading the store --------------------------------------------------- */

static void state_warn(void *arg, const char *msg)
{
	struct agent *a = arg;

	logf_(a, "%s", msg);
}

/* Records one tag key of the store in vm_tags; bad keys are reported with
 * the key and ignored. */
static long apply_tag_key(struct agent *a, const char *key, bool present)
{
	const char *declared;
	size_t idx;

	if (!state_tag_key(a->pol, key, &idx, &declared, state_warn, a))
		return -1;
	if (present) {
		if (!strv_contains(&a->vm_tags[idx], declared, true))
			strv_push(&a->vm_tags[idx], declared);
	} else {
		strv_remove(&a->vm_tags[idx], declared, true);
	}
	return (long)idx;
}

/* Quarantine groups a VM just entered: their connections are cut after the
 * commit (unless the group keeps connections). */
struct member_change {
	size_t group, vm;
};

struct deltas {
	struct agent *a;
	size_t *cut;
	size_t ncut, capcut;
	struct member_change *changes; /* (group, vm) pairs touched */
	size_t nchanges, capchanges;
	size_t nmember;   /* of those, changes of members (not of bases) */
	bool needs_full;  /* the policy changed: compile everything */
};

/* Whether vm is, by the current engine, in a quarantine group whose
 * members' connections are cut. */
static bool in_cutting_quarantine(const struct agent *a, size_t vm)
{
	for (size_t g = 0; g < a->pol->inv.ngroups; g++) {
		const struct group_def *def = &a->pol->inv.groups[g];

		if (def->quarantine && !def->keep_connections && gengine_is_member(a->eng, g, vm))
			return true;
	}
	return false;
}

static void on_delta(void *arg, size_t group, size_t vm, bool joined, bool base)
{
	struct deltas *d = arg;
	const struct group_def *g = &d->a->pol->inv.groups[group];

	if (!base && joined && g->quarantine && !g->keep_connections &&
	    !strv_contains(&d->a->was_cut, d->a->pol->inv.vms[vm].name, false)) {
		grow((void **)&d->cut, &d->capcut, d->ncut + 1, sizeof(*d->cut));
		d->cut[d->ncut++] = vm;
	}
	grow((void **)&d->changes, &d->capchanges, d->nchanges + 1, sizeof(*d->changes));
	d->changes[d->nchanges++] = (struct member_change){ group, vm };
	/* Membership is logged one line each for small updates; large ones
	 * (a policy load, churn) are summed up in the realization line. */
	if (!base && ++d->nmember < 32)
		logf_(d->a, "group %s: %s %s", g->name, joined ? "+" : "-",
		      d->a->pol->inv.vms[vm].name);
}

static void set_vm_tags(struct agent *a, size_t vm, struct deltas *d)
{
	gengine_set_tags(a->eng, vm, (const char *const *)a->vm_tags[vm].v,
			 a->vm_tags[vm].n, on_delta, d);
}

/* The operator blocks of the store ("addr[/group]", until, ...) that fit
 * the policy; the others are reported and ignored. */
static void blocks_load(struct agent *a, const struct strv *pairs)
{
	char err[256];

	a->nblocks = 0;
	a->blocks = xrealloc(a->blocks, (pairs->n / 2 + 1) * sizeof(*a->blocks));
	for (size_t i = 0; i + 1 < pairs->n; i += 2) {
		if (state_block(a->pol, pairs->v[i], pairs->v[i + 1], &a->blocks[a->nblocks], err,
				sizeof(err)))
			a->nblocks++;
		else
			logf_(a, "store key '%s%s': %s; ignored", BLOCK_PREFIX, pairs->v[i], err);
	}
	a->blocks_dirty = true;
}

static int collect_block(void *arg, const char *key, const char *value)
{
	strv_push(arg, key + strlen(BLOCK_PREFIX));
	strv_push(arg, value);
	return 0;
}

/* Re-reads the blocks after block/ keys changed. */
static void blocks_reload(struct agent *a)
{
	struct strv pairs = { 0 };
	char err[256];
	uint64_t rev;

	a->blocks_stale = store_scan(a->store, BLOCK_PREFIX, collect_block, &pairs, &rev, err,
				     sizeof(err)) < 0;
	if (a->blocks_stale)
		logf_(a, "reading blocks: %s (tried again at the heartbeat)", err);
	else
		blocks_load(a, &pairs);
	strv_free(&pairs);
}

/* Reads the whole store at one revision and rebuilds policy and membership.
 * A policy that does not parse leaves the last good one in force. */
static int rebuild(struct agent *a, uint64_t *rev, struct deltas *d)
{
	struct snapshot s;
	char err[256];
	int ret = -1;

	if (backoff_waiting(&a->read_backoff))
		return -1;
	if (snapshot_read(a->store, &s, rev, state_warn, a, err, sizeof(err)) < 0) {
		logf_(a, "reading the store: %s (next try in %u ms, or when the store's watch fires)",
		      err, backoff_fail(&a->read_backoff, STORE_RETRY_MS, STORE_RETRY_MAX_MS));
		goto out;
	}
	backoff_ok(&a->read_backoff);
	if (s.policy) {
		struct diag dg = { 0 };
		const char *file = s.policy_file ? s.policy_file : "store:policy";
		struct dfw_policy *p = policy_parse(s.policy, file, &dg);
		struct gengine *e = NULL;

		if (p) {
			/* Placement, modes and learned addresses shape the
			 * inventory the engine indexes. */
			state_apply(p, &s, state_warn, a);
			e = gengine_new(&p->inv, file, &dg);
		}
		if (!e) {
			logf_(a, "store key 'policy' is not a valid policy; keeping the last good one:");
			/* Enough to fix it by: a text written behind dfwctl's
			 * back can hold an error on each of its lines, and each
			 * later full read would log them all again. */
			for (size_t i = 0; i < dg.n && i < POLICY_ERRORS_LOGGED; i++)
				logf_(a, "  %s", dg.msgs[i]);
			if (dg.n > POLICY_ERRORS_LOGGED)
				logf_(a, "  ... and %zu more error(s) ('dfwctl validate' lists them all)",
				      dg.n - POLICY_ERRORS_LOGGED);
			a->status_dirty = true;
			a->policy_rejected = true;
			snprintf(a->last_error, sizeof(a->last_error),
				 "store key 'policy' rejected: %s", dg.n ? dg.msgs[0] : "?");
			policy_free(p);
		} else {
			/* Whatever the last error said of the store's policy
			 * (rejected, none read yet) is over; a refusal of the
			 * kernel's is not (a first load that failed re-reads
			 * the store at every wake-up while realize waits). */
			if (a->policy_rejected || a->kept) {
				a->last_error[0] = '\0';
				a->status_dirty = true;
			}
			a->policy_rejected = false;
			strv_free(&a->was_cut);
			for (size_t i = 0; a->pol && i < a->pol->inv.nvms; i++)
				if (in_cutting_quarantine(a, i))
					strv_push(&a->was_cut, a->pol->inv.vms[i].name);
			drop_policy(a);
			a->pol = p;
			a->eng = e;
			a->vm_tags = xcalloc(p->inv.nvms, sizeof(*a->vm_tags));
		}
		diag_free(&dg);
	}
	if (a->pol) {
		for (size_t i = 0; i < a->pol->inv.nvms; i++)
			strv_free(&a->vm_tags[i]);
		for (size_t i = 0; i < s.tag_keys.n; i++)
			apply_tag_key(a, s.tag_keys.v[i], true);
		for (size_t i = 0; i < a->pol->inv.nvms; i++)
			set_vm_tags(a, i, d);
		blocks_load(a, &s.blocks);
	}
	strv_free(&a->was_cut);
	strv_free(&a->learn_pending);
	ret = 0;
out:
	snapshot_free(&s);
	return ret;
}

struct change_ctx {
	struct agent *a;
	bool policy_changed;
	bool blocks_changed;
	bool *dirty; /* per VM */
};

static int on_change(void *arg, uint64_t rev, const char *key, const char *value)
{
	struct change_ctx *c = arg;
	long vm;

	if (state_key_reshapes(key)) {
		c->policy_changed = true;
		return 0;
	}
	if (!strncmp(key, BLOCK_PREFIX, strlen(BLOCK_PREFIX))) {
		c->blocks_changed = true;
		return 0;
	}
	/* A full read reports it too; a change must not pass in silence. */
	if (!state_key_known(key)) {
		logf_(c->a, "store key '%s': not a key dfw writes; ignored", key);
		return 0;
	}
	if (c->policy_changed || !c->a->pol || strncmp(key, "tag/", 4))
		return 0;
	vm = apply_tag_key(c->a, key, value != NULL);
	if (vm >= 0)
		c->dirty[vm] = true;
	return 0;
}

/* --- realizing ------------------------------------------------------------ */

static struct plan *desired_plan(struct agent *a)
{
	static const struct dfw_policy empty = { .file = (char *)"(none)" };
	struct plan *pl = a->pol ? plan_compile(a->pol, a->eng, a->host)
				 : plan_compile(&empty, NULL, a->host);

	memcpy(pl->uplinks, a->uplinks, sizeof(pl->uplinks));
	pl->nuplinks = a->nuplinks;
	return pl;
}

/* Queues the cut of the existing connections of the local VMs that
 * entered a quarantine group, one cut for all of them (dfw/cutter.h: made
 * on the cutter's thread, while the agent goes on).  A VM on another host
 * is cut there: every packet of its connections crosses its own host's
 * conntrack, so one cut suffices, and the other hosts spare the walk. */
static void cut_connections(struct agent *a, const struct deltas *d)
{
	struct dfw_addr *addrs = NULL;
	size_t n = 0, cap = 0, nvms = 0;
	const char *first = NULL;

	size_t npend = a->cut_pending.n;

	for (size_t i = 0; i < d->ncut + npend; i++) {
		long k = i < d->ncut ? (long)d->cut[i]
				     : policy_find_vm(a->pol, a->cut_pending.v[i - d->ncut]);
		const struct vm *v = k >= 0 ? &a->pol->inv.vms[k] : NULL;
		const struct pport *port = v && a->installed ? plan_find_port(a->installed, v->port)
							     : NULL;

		if (!port || port->vm != (size_t)k)
			continue;
		/* A pending one: unless it left the quarantine since. */
		if (i >= d->ncut && !in_cutting_quarantine(a, (size_t)k))
			continue;
		if (!nvms++)
			first = v->name;
		/* Its link-local connections too: they are the VM's. */
		grow((void **)&addrs, &cap, n + v->naddrs + 1, sizeof(*addrs));
		for (size_t j = 0; vm_member_addr(v, 0, &j, &addrs[n]);)
			n++;
	}
	strv_free(&a->cut_pending);
	if (n)
		cutter_queue(a->cutter, addrs, n, nvms, first);
	free(addrs);
}

/* Bookkeeping after the kernel took a revision: commit time (from t0 to
 * the acknowledgement at acked), the time since (recording it in the
 * installed plan), then the connection cuts that follow it. */
static void realized(struct agent *a, uint64_t rev, const struct backend_stats *st,
		     uint64_t t0, uint64_t acked, const struct deltas *d)
{
	char err[256];

	a->last_update_us = (acked - t0) / 1000;
	a->last_book_us = (now_ns() - acked) / 1000;
	if (a->own_tables && !backend_owns_tables(a->be)) {
		logf_(a, "warning: this kernel cannot keep the dfw tables to dfwd (no "
		      "NFT_TABLE_F_PERSIST before Linux 6.9): other processes can change them");
		a->own_tables = false;
	}
	cut_connections(a, d);
	if (a->realized_pol != a->pol)
		policy_free(a->realized_pol);
	a->realized_pol = a->pol;
	if (threat_configure(a->threat, a->pol, a->installed, err, sizeof(err)) < 0)
		logf_(a, "netthreat: cannot watch new flows: %s", err);
	a->rev = rev;
	a->status_dirty = true;
	/* The kernel took it: an earlier refusal is over (a rejected policy
	 * in the store is not, while the last good one is what got in). */
	if (!a->policy_rejected)
		a->last_error[0] = '\0';
	a->last_update = time(NULL);
	a->last_stats = *st;
	a->updates++;
}

struct scope_ctx {
	struct agent *a;
	const struct plan *pl; /* the vNIC ids */
	const struct dfw_block *b;
	uint64_t left_ms;
	struct backend_scoped_block *v;
	size_t n, cap;
};

static void add_scoped(void *arg, size_t vm)
{
	struct scope_ctx *c = arg;
	const struct pport *port = plan_find_port(c->pl, c->a->pol->inv.vms[vm].port);

	if (!port || port->vm != vm)
		return; /* not a vNIC of this host */
	grow((void **)&c->v, &c->cap, c->n + 1, sizeof(*c->v));
	c->v[c->n++] = (struct backend_scoped_block){ c->b->addr, port->id, c->left_ms };
}

/* The operator blocks as the kernel holds them: global ones as addresses,
 * scoped ones as (address, vNIC id of plan pl) pairs for the scope's local
 * members, each with its time left.  Free with blocks_free. */
static void blocks_collect(struct agent *a, const struct plan *pl, struct backend_op_blocks *ob)
{
	struct backend_block *g = xcalloc(a->nblocks + 1, sizeof(*g));
	struct scope_ctx c = { .a = a, .pl = pl };
	uint64_t now = wall_ms();
	size_t ng = 0;

	for (size_t i = 0; i < a->nblocks; i++) {
		const struct dfw_block *b = &a->blocks[i];
		uint64_t left = b->until_ms - now;

		if (b->until_ms <= now)
			continue;
		if (left > BLOCK_MAX_MS)
			left = BLOCK_MAX_MS; /* written behind dfwctl's back */
		if (b->group < 0) {
			g[ng++] = (struct backend_block){ b->addr, left };
			continue;
		}
		c.b = b;
		c.left_ms = left;
		gengine_foreach_member(a->eng, (size_t)b->group, add_scoped, &c);
	}
	*ob = (struct backend_op_blocks){ g, ng, c.v, c.n };
}

static void blocks_free(struct backend_op_blocks *ob)
{
	free((void *)ob->g);
	free((void *)ob->sc);
}

static void blocks_said(struct agent *a, const struct backend_op_blocks *ob)
{
	a->blocks_dirty = false;
	logf_(a, "operator blocks: %zu address(es) everywhere, %zu (address, vNIC) pair(s) in scopes",
	      ob->ng, ob->ns);
}

/* Writes the operator blocks to the kernel, replacing what the sets held
 * (one batch). */
static void blocks_sync(struct agent *a)
{
	struct backend_op_blocks ob;
	struct backend_stats st = { 0 };
	char err[512];

	blocks_collect(a, a->installed, &ob);
	if (backend_set_op_blocks(a->be, ob.g, ob.ng, ob.sc, ob.ns, &st, err, sizeof(err)) < 0) {
		logf_(a, "operator blocks: %s", err);
		snprintf(a->last_error, sizeof(a->last_error), "operator blocks: %.400s", err);
		a->status_dirty = true;
	} else {
		blocks_said(a, &ob);
	}
	blocks_free(&ob);
}

/* The kernel refused: report, and replace everything at the next attempt:
 * at once the first time (something deleted behind dfwd's back), then
 * after 1, 2, 4 ... up to 64 s for the same revision, so that a refusal
 * that persists does not become a full load on every wake-up. */
static int not_realized(struct agent *a, uint64_t rev, const char *err)
{
	unsigned wait_s;

	a->fails = rev == a->failed_rev && a->fails ? a->fails + 1 : 1;
	a->failed_rev = rev;
	wait_s = a->fails == 1 ? 0 : 1u << (a->fails - 2 < 6 ? a->fails - 2 : 6);
	a->retry_ns = now_ns() + wait_s * 1000000000ull;
	if (wait_s)
		logf_(a, "revision %llu not realized: %s (refused %u times; next try in %u s)",
		      (unsigned long long)rev, err, a->fails, wait_s);
	else
		logf_(a, "revision %llu not realized: %s", (unsigned long long)rev, err);
	snprintf(a->last_error, sizeof(a->last_error), "%s", err);
	a->loaded = false;
	a->status_dirty = true;
	return -1;
}

/* Why a new plan needs a full load: its kept set over (plan_keep_sizes)
 * outgrows the kernel's. */
static void overfill_reason(const struct agent *a, const struct pset *over, char *buf,
			    size_t len)
{
	snprintf(buf, len, "set %s: %zu elements, more than the kernel's set holds (%u)",
		 over->name, over->nelems, plan_find_set(a->installed, over->name)->size);
}

static int realize(struct agent *a, uint64_t rev, const struct deltas *d)
{
	const struct pset *over = NULL;
	struct plan *want;
	struct backend_stats st = { 0 };
	struct plan_diff diff;
	char err[512];
	uint64_t t0 = now_ns(), acked;
	int ret;

	if (!a->loaded && a->fails && rev == a->failed_rev && t0 < a->retry_ns)
		return -1; /* refused: not again yet */
	/* No policy read yet (the store unreachable, or its policy invalid),
	 * and dfw tables in the kernel: they are the last ruleset this host
	 * realized, and stay in force.  Only where there are none does the
	 * empty ruleset go in, which drops every vNIC's traffic (fail closed). */
	if (!a->pol && !a->loaded && backend_tables_exist(a->be)) {
		if (!a->kept) {
			logf_(a, "no valid policy read yet: the dfw ruleset in the kernel (the last "
			      "realized) stays in force");
			snprintf(a->last_error, sizeof(a->last_error),
				 "no valid policy read yet; the kernel's last ruleset stays in force");
			a->status_dirty = true;
		}
		/* Nothing more to do until the store changes (a->rev stays: no
		 * revision was realized). */
		a->kept = true;
		a->kept_rev = rev;
		return -1;
	}
	a->kept = false;
	want = desired_plan(a);
	if (a->loaded && (over = plan_keep_sizes(a->installed, want))) {
		overfill_reason(a, over, err, sizeof(err));
		logf_(a, "%s: a full load", err);
	}
	if (a->loaded && !over) {
		plan_diff(a->installed, want, &diff);
		ret = backend_apply(a->be, &diff, false, &st, err, sizeof(err));
		plan_diff_free(&diff);
	} else if (a->pol) {
		/* The operator blocks go in with the tables they live in. */
		struct backend_op_blocks ob;

		blocks_collect(a, want, &ob);
		ret = backend_load_blocks(a->be, want, &ob, &st, err, sizeof(err));
		if (ret == 0)
			blocks_said(a, &ob);
		blocks_free(&ob);
	} else {
		ret = backend_load(a->be, want, false, &st, err, sizeof(err));
	}
	if (ret < 0) {
		plan_free(want);
		return not_realized(a, rev, err);
	}
	acked = now_ns();
	plan_free(a->installed);
	a->installed = want;
	a->loaded = true;
	a->fails = 0;
	realized(a, rev, &st, t0, acked, d);
	logf_(a, "realized revision %llu: %zu vNIC(s), %zu chain(s), %zu set(s); %zu message(s), %zu bytes, committed in %llu us",
	      (unsigned long long)rev, want->nports, want->nchains, want->nsets, st.msgs,
	      st.bytes, (unsigned long long)a->last_update_us);
	return 0;
}

static int cmp_change(const void *x, const void *y)
{
	const struct member_change *a = x, *b = y;

	if (a->group != b->group)
		return a->group < b->group ? -1 : 1;
	return a->vm < b->vm ? -1 : a->vm > b->vm;
}

/* A tag change: only set elements change (tags can only move VMs between
 * tag-driven groups, whose rules are guarded by vNIC-id sets rather than
 * shaping chains), computed from the membership deltas against the
 * installed plan, without recompiling.
 * Each (group, VM) pair counts once, with its final membership, so a tag
 * and untag coalesced into one batch cancel out. */
static int realize_deltas(struct agent *a, uint64_t rev, struct deltas *d)
{
	const struct pset *over;
	struct backend_stats st = { 0 };
	struct plan_diff diff;
	char err[512];
	uint64_t t0 = now_ns(), acked;
	size_t n = 0;

	memset(&diff, 0, sizeof(diff));
	if (d->nchanges)
		qsort(d->changes, d->nchanges, sizeof(*d->changes), cmp_change);
	for (size_t i = 0; i < d->nchanges; i++) {
		const struct member_change *c = &d->changes[i];

		if (i && !cmp_change(c, &d->changes[i - 1]))
			continue;
		plan_member_delta(a->installed, a->eng, a->pol, c->group, c->vm, &diff);
		n++;
	}
	/* Tag changes edit only sets made without a size (set_size); a set
	 * whose group became tag-driven in place keeps its size until a full
	 * load makes it anew. */
	if ((over = plan_delta_overflow(&diff))) {
		logf_(a, "set %s: full (%u elements): a full load", over->name, over->size);
		plan_diff_free(&diff);
		a->loaded = false;
		return realize(a, rev, d);
	}
	if (backend_apply(a->be, &diff, false, &st, err, sizeof(err)) < 0) {
		plan_diff_free(&diff);
		return not_realized(a, rev, err);
	}
	acked = now_ns();
	plan_apply_elems(a->installed, &diff);
	realized(a, rev, &st, t0, acked, d);
	logf_(a, "realized revision %llu: %zu membership change(s), +%zu -%zu set element(s); %zu message(s), %zu bytes, committed in %llu us",
	      (unsigned long long)rev, n, diff.nelem_add, diff.nelem_del, st.msgs, st.bytes,
	      (unsigned long long)a->last_update_us);
	plan_diff_free(&diff);
	return 0;
}

/* Blocks follow membership of their scope groups and survive full loads. */
static bool blocks_need_sync(const struct agent *a, const struct deltas *d)
{
	if (a->blocks_dirty)
		return true;
	for (size_t i = 0; i < a->nblocks && d->nchanges; i++)
		if (a->blocks[i].group >= 0)
			return true;
	return false;
}

int agent_sync(struct agent *a)
{
	struct deltas d = { .a = a };
	uint64_t rev = 0;
	char err[256];
	int ret = -1, r;

	if (!a->loaded && !a->installed && !a->kept) {
		/* First load: whatever the kernel holds is replaced atomically. */
		if (backend_check_bridge_nf(err, sizeof(err)) < 0)
			logf_(a, "warning: %s", err);
		if (rebuild(a, &rev, &d) < 0)
			goto out;
		ret = realize(a, rev, &d);
		goto blocks;
	}
	{
		struct change_ctx c = { .a = a };
		uint64_t since = a->kept ? a->kept_rev : a->rev;

		if (backoff_waiting(&a->read_backoff))
			goto out;
		c.dirty = a->pol ? xcalloc(a->pol->inv.nvms, sizeof(*c.dirty)) : NULL;
		r = store_changes(a->store, since, on_change, &c, &rev, err, sizeof(err));
		if (r == -1) {
			logf_(a, "reading store changes: %s (next try in %u ms, or when the store's watch fires)",
			      err, backoff_fail(&a->read_backoff, STORE_RETRY_MS, STORE_RETRY_MAX_MS));
			free(c.dirty);
			goto out;
		}
		backoff_ok(&a->read_backoff);
		if (rev == since && (a->loaded || a->kept)) {
			free(c.dirty);
			ret = 0;
			goto out;
		}
		if (r == -2 || c.policy_changed || !a->pol) {
			ret = rebuild(a, &rev, &d);
			d.needs_full = true;
		} else {
			for (size_t i = 0; i < a->pol->inv.nvms; i++)
				if (c.dirty[i])
					set_vm_tags(a, i, &d);
			ret = 0;
		}
		free(c.dirty);
		if (ret == 0 && c.blocks_changed && !d.needs_full && a->pol)
			blocks_reload(a);
		if (ret == 0 && !d.needs_full && a->loaded)
			ret = realize_deltas(a, rev, &d);
		else if (ret == 0)
			ret = realize(a, rev, &d);
	}
blocks:
	if (ret == 0 && a->pol && a->loaded && blocks_need_sync(a, &d))
		blocks_sync(a);
out:
	/* Refused: whom this change quarantined is cut after the next commit. */
	for (size_t i = 0; ret != 0 && a->pol && i < d.ncut; i++)
		if (!strv_contains(&a->cut_pending, a->pol->inv.vms[d.cut[i]].name, false))
			strv_push(&a->cut_pending, a->pol->inv.vms[d.cut[i]].name);
	free(d.cut);
	free(d.changes);
	return ret;
}

void agent_heartbeat(struct agent *a)
{
	char err[256];
	int nf;

	threat_retry(a->threat);
	/* Without br_netfilter's call into the inet table, bridged IP meets
	 * no policy at all (fail open): someone switched it off since the
	 * start, so it goes back on. */
	nf = a->loaded ? backend_restore_bridge_nf(err, sizeof(err)) : 0;
	if (nf > 0)
		logf_(a, "heartbeat: bridge-nf-call-iptables/ip6tables was off (bridged traffic "
		      "bypassed the policy); set to 1 again");
	else if (nf < 0)
		logf_(a, "heartbeat: %s", err);
	if (a->loaded && !backend_tables_exist(a->be)) {
		logf_(a, "heartbeat: dfw tables are missing from the kernel; reloading");
		a->loaded = false;
	}
	if (!a->loaded) {
		struct deltas d = { .a = a };

		realize(a, a->rev, &d); /* the operator blocks go with it */
	} else if (a->pol) {
		/* Blocks that could not be read or written last time. */
		if (a->blocks_stale)
			blocks_reload(a);
		if (a->blocks_dirty && !a->blocks_stale)
			blocks_sync(a);
	}
}

void agent_link(struct agent *a, const char *ifname, bool present)
{
	bool known = a->installed && plan_find_port(a->installed, ifname);
	bool had = strv_contains(&a->present, ifname, false);

	if (present == had)
		return;
	if (present)
		strv_push(&a->present, ifname);
	else
		strv_remove(&a->present, ifname, false);
	if (known)
		logf_(a, "vNIC port %s %s", ifname, present ? "appeared (policy realized)" : "went away");
}

/* Why addr cannot be vm's, or NULL: another VM holds it (declared or
 * locked), or the policy names it as a host of its own (a group's address
 * or a rule's, at full length): a learning guest must not take the rights
 * the policy gives that host.  who receives the other's name. */
static const char *addr_claimed(const struct dfw_policy *p, size_t vm, const struct dfw_addr *addr,
				char *who, size_t len)
{
	unsigned full = addr->family == AF_INET ? 32 : 128;

	for (size_t i = 0; i < p->inv.nvms; i++)
		for (size_t j = 0; i != vm && j < p->inv.vms[i].naddrs; j++)
			if (!addr_cmp(&p->inv.vms[i].addrs[j], addr)) {
				snprintf(who, len, "VM %s", p->inv.vms[i].name);
				return "belongs to another VM";
			}
	for (size_t g = 0; g < p->inv.ngroups; g++)
		for (size_t j = 0; j < p->inv.groups[g].naddrs; j++)
			if (p->inv.groups[g].addrs[j].plen == full &&
			    !addr_cmp(&p->inv.groups[g].addrs[j], addr)) {
				snprintf(who, len, "group %s", p->inv.groups[g].name);
				return "is a host the policy names";
			}
	for (size_t r = 0; r < p->nrules; r++)
		for (int d = 0; d < 2; d++) {
			const struct dfw_side *side = d ? &p->rules[r].dst : &p->rules[r].src;

			for (size_t j = 0; j < side->nrefs; j++)
				if (side->refs[j].kind == REF_ADDR && side->refs[j].addr.plen == full &&
				    !addr_cmp(&side->refs[j].addr, addr)) {
					snprintf(who, len, "rule %u", p->rules[r].id);
					return "is a host the policy names";
				}
		}
	return NULL;
}

/* Why a DHCPACK may not teach, or NULL.  Its source MAC names its sender:
 * every dfw host holds its vNICs to their VMs' MACs, so a VM's ACK (from
 * this host or through the uplink) carries that VM's MAC, and only VMs in
 * [global] dhcp_servers may answer DHCP.  An ACK from beyond the VMs (the
 * uplink, a MAC no VM has) is the network's DHCP server or relay.  who
 * receives the sender. */
static const char *dhcp_untrusted(const struct dfw_policy *p, const struct learn_seen *seen,
				  char *who, size_t len)
{
	for (size_t i = 0; i < p->inv.nvms; i++) {
		if (memcmp(p->inv.vms[i].mac, seen->server, sizeof(seen->server)))
			continue;
		snprintf(who, len, "VM %s", p->inv.vms[i].name);
		for (size_t k = 0; k < p->ndhcp_servers; k++)
			if (p->dhcp_servers[k] == i)
				return NULL;
		return "which is not in [global] dhcp_servers";
	}
	if (seen->from != DFW_UPLINK_ID) { /* cannot pass classify; fail closed */
		mac_format(seen->server, who, len);
		return "a MAC of no VM, from a vNIC";
	}
	return NULL;
}

/* A refused learn frame is logged, at most LEARN_LOG_PER_S lines a second
 * (a guest can send them as fast as it likes); the same refusal again at
 * once is not looked at twice. */
#define LEARN_LOG_PER_S 5

static void learn_refused(struct agent *a, const struct learn_seen *seen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void learn_refused(struct agent *a, const struct learn_seen *seen, const char *fmt, ...)
{
	uint64_t now = now_ns() / 1000000000ull;
	char line[512];
	va_list ap;

	a->learn_last = *seen;
	if (now != a->learn_log_s) {
		if (a->learn_unlogged)
			logf_(a, "learn: %llu more refused frame(s) not logged",
			      (unsigned long long)a->learn_unlogged);
		a->learn_log_s = now;
		a->learn_logged = 0;
		a->learn_unlogged = 0;
	}
	if (a->learn_logged >= LEARN_LOG_PER_S) {
		a->learn_unlogged++;
		return;
	}
	a->learn_logged++;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	logf_(a, "learn: %s", line);
}

void agent_learn(struct agent *a, const struct learn_seen *seen)
{
	const struct dfw_addr *addr = &seen->addr;
	const struct pport *port = a->installed ? plan_find_port(a->installed, seen->ifname) : NULL;
	char buf[64], key[128], err[512], who[96], mac[18];
	const char *why;
	struct vm *v;
	uint64_t rev;
	int r;

	/* The installed plan may be of an older policy than a->pol (its
	 * realization failed): the port must still be that VM's. */
	if (!port || !a->pol || port->vm >= a->pol->inv.nvms ||
	    strcmp(a->pol->inv.vms[port->vm].port, seen->ifname))
		return;
	v = &a->pol->inv.vms[port->vm];
	if (!v->learn || !(addr->family == AF_INET ? port->learn4 : port->learn6))
		return; /* locked already: the anti-spoofing decides */
	/* Only unicast that identifies the guest is learned: IPv6 link-local
	 * is derived from the MAC anyway; IPv4 link-local (169.254/16) is what
	 * a guest without DHCP picks for itself; unspecified, multicast,
	 * broadcast and loopback never identify one. */
	if (addr_not_own(addr) ||
	    (addr->family == AF_INET && addr->a[0] == 169 && addr->a[1] == 254) ||
	    (addr->family == AF_INET6 && addr->a[0] == 0xfe && (addr->a[1] & 0xc0) == 0x80))
		return;
	if (!strcmp(a->learn_last.ifname, seen->ifname) && !addr_cmp(&a->learn_last.addr, addr) &&
	    a->learn_last.to_guest == seen->to_guest &&
	    !memcmp(a->learn_last.client, seen->client, sizeof(seen->client)) &&
	    !memcmp(a->learn_last.server, seen->server, sizeof(seen->server)))
		return; /* refused just now */
	addr_format(addr, buf, sizeof(buf));
	/* A DHCPACK to another client (flooded to this port, its destination
	 * unknown to the bridge) is not this guest's. */
	if (seen->to_guest && memcmp(seen->client, v->mac, sizeof(v->mac))) {
		mac_format(seen->client, mac, sizeof(mac));
		learn_refused(a, seen, "a DHCPACK of %s for %s passed %s (%s); not learned", buf, mac,
			      v->name, seen->ifname);
		return;
	}
	if (seen->to_guest && (why = dhcp_untrusted(a->pol, seen, who, sizeof(who)))) {
		learn_refused(a, seen, "a DHCPACK of %s for %s (%s) came from %s, %s; not learned",
			      buf, v->name, seen->ifname, who, why);
		return;
	}
	if ((why = addr_claimed(a->pol, port->vm, addr, who, sizeof(who)))) {
		learn_refused(a, seen, "%s (%s) claims %s, which %s (%s); not learned", v->name,
			      seen->ifname, buf, why, who);
		return;
	}
	snprintf(key, sizeof(key), "%s/%s", v->name, learned_family(addr->family));
	if (strv_contains(&a->learn_pending, key, false))
		return; /* written; realized with the next rebuild */
	if (backoff_waiting(&a->learn_backoff))
		return; /* the store failed just now: a later frame tries */
	store_set_deadline(a->store, LEARN_WAIT_MS);
	r = learned_write(a->store, v->name, addr, &rev, err, sizeof(err));
	store_set_deadline(a->store, 0);
	if (r < 0) {
		logf_(a, "learn: %s (%s) %s: %s; learning waits %u ms", v->name, seen->ifname, buf,
		      err, backoff_fail(&a->learn_backoff, 500, 8000));
		return;
	}
	backoff_ok(&a->learn_backoff);
	strv_push(&a->learn_pending, key);
	if (r == 0) {
		logf_(a, "learn: %s (%s) locked to %s on first use (revision %llu)", v->name,
		      seen->ifname, buf, (unsigned long long)rev);
	} else {
		logf_(a, "learn: %s (%s) %s: %s", v->name, seen->ifname, buf, err);
	}
}

const char *agent_rule_verdict(void *agent, const char *rule, bool out)
{
	struct agent *a = agent;
	const struct dfw_rule *r;
	uint64_t id;

	(void)out; /* a rule has one action in both directions */
	if (!a->pol)
		return NULL;
	if (!strcmp(rule, "default"))
		return action_name(a->pol->default_action);
	if (parse_u64(rule, UINT32_MAX, &id) < 0 || !(r = policy_find_rule(a->pol, (uint32_t)id)))
		return NULL;
	return action_name(r->action);
}

void agent_info(const struct agent *a, struct agent_info *out)
{
	memset(out, 0, sizeof(*out));
	out->rev = a->rev;
	out->last_update_us = a->last_update_us;
	out->last_book_us = a->last_book_us;
	out->last_msgs = a->last_stats.msgs;
	out->last_bytes = a->last_stats.bytes;
	out->in_sync = a->loaded;
	if (a->installed) {
		out->vnics = a->installed->nports;
		out->chains = a->installed->nchains;
		out->sets = a->installed->nsets;
	}
}

/* --- control requests ------------------------------------------------------ */

static void req_status(struct agent *a, struct out *o)
{
	char ts[32] = "never";
	size_t up = 0;

	if (a->last_update)
		strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime(&a->last_update));
	if (a->installed)
		for (size_t i = 0; i < a->installed->nports; i++)
			up += strv_contains(&a->present, a->installed->ports[i].ifname, false);
	out_obj_start(o, NULL);
	out_str(o, "host", a->host);
	out_u64(o, "realized_revision", a->rev);
	out_str(o, "policy", a->pol ? a->pol->file : "(none: all vNIC traffic dropped)");
	out_u64(o, "vnics", a->installed ? a->installed->nports : 0);
	out_u64(o, "vnics_present", up);
	out_u64(o, "chains", a->installed ? a->installed->nchains : 0);
	out_u64(o, "sets", a->installed ? a->installed->nsets : 0);
	out_str(o, "last_update", ts);
	out_u64(o, "last_update_us", a->last_update_us);
	out_u64(o, "last_batch_messages", a->last_stats.msgs);
	out_u64(o, "last_batch_bytes", a->last_stats.bytes);
	out_u64(o, "updates", a->updates);
	out_bool(o, "in_sync", a->loaded);
	out_str(o, "last_error", a->last_error[0] ? a->last_error : "none");
	out_obj_end(o);
}

struct name_list {
	struct out *o;
	const struct dfw_policy *p;
};

static void print_member(void *arg, size_t vm)
{
	struct name_list *nl = arg;

	out_str(nl->o, NULL, nl->p->inv.vms[vm].name);
}

static void print_group(struct agent *a, struct out *o, size_t g)
{
	const struct group_def *gd = &a->pol->inv.groups[g];
	struct name_list nl = { o, a->pol };
	const struct dfw_addr *addrs;
	size_t n;
	char buf[64];

	out_obj_start(o, NULL);
	out_str(o, "group", gd->name);
	out_bool(o, "quarantine", gd->quarantine);
	out_arr_start(o, "members");
	gengine_foreach_member(a->eng, g, print_member, &nl);
	out_arr_end(o);
	out_arr_start(o, "addresses");
	addrs = gengine_addrs(a->eng, g, &n);
	for (size_t i = 0; i < n; i++) {
		addr_format(&addrs[i], buf, sizeof(buf));
		out_str(o, NULL, buf);
	}
	out_arr_end(o);
	out_obj_end(o);
}

static int req_groups(struct agent *a, struct out *o, const char *name, char *err, size_t len)
{
	long g = -1;

	if (!a->pol) {
		snprintf(err, len, "no policy realized yet");
		return 1;
	}
	if (name && (g = policy_find_group(a->pol, name)) < 0) {
		policy_unknown(a->pol, true, name, err, len);
		return 1;
	}
	out_arr_start(o, NULL);
	for (size_t i = 0; i < a->pol->inv.ngroups; i++)
		if (g < 0 || (size_t)g == i)
			print_group(a, o, i);
	out_arr_end(o);
	return 0;
}

struct hits {
	uint32_t *ids;
	uint64_t *packets;
	size_t n;
};

static void count_hit(void *arg, uint32_t id, uint64_t packets, uint64_t bytes)
{
	struct hits *h = arg;

	for (size_t i = 0; i < h->n; i++) {
		if (h->ids[i] == id) {
			h->packets[i] += packets;
			return;
		}
	}
	h->ids = xrealloc(h->ids, (h->n + 1) * sizeof(*h->ids));
	h->packets = xrealloc(h->packets, (h->n + 1) * sizeof(*h->packets));
	h->ids[h->n] = id;
	h->packets[h->n++] = packets;
}

static void print_chain_rules(struct agent *a, struct out *o, const char *key, const char *chain)
{
	const struct pchain *c = plan_find_chain(a->installed, chain);
	struct hits h = { 0 };
	char err[256];

	if (backend_chain_counters(a->be, chain, count_hit, &h, err, sizeof(err)) < 0)
		logf_(a, "hit counters of %s: %s", chain, err);
	out_arr_start(o, key);
	for (size_t i = 0; c && i <= c->nrule_ids; i++) {
		uint32_t id = i < c->nrule_ids ? c->rule_ids[i] : 0;
		const struct dfw_rule *r = NULL;
		uint64_t hits = 0;

		for (size_t j = 0; j < a->pol->nrules && id; j++)
			if (a->pol->rules[j].id == id)
				r = &a->pol->rules[j];
		for (size_t j = 0; j < h.n; j++)
			if (h.ids[j] == id)
				hits = h.packets[j];
		out_obj_start(o, NULL);
		if (r) {
			out_u64(o, "id", r->id);
			out_str(o, "name", r->name);
			out_str(o, "category", category_name(r->category));
			out_str(o, "action", action_name(r->action));
		} else {
			out_str(o, "id", "default");
			out_str(o, "name", "default rule");
			out_str(o, "category", "default");
			out_str(o, "action", action_name(a->pol->default_action));
		}
		out_u64(o, "hits", hits);
		out_obj_end(o);
	}
	out_arr_end(o);
	free(h.ids);
	free(h.packets);
}

static int req_rules(struct agent *a, struct out *o, const char *vm, char *err, size_t len)
{
	const struct pport *port = NULL;
	long idx;

	if (!vm) {
		snprintf(err, len, "usage: rules VM");
		return 1;
	}
	if (!a->pol || (idx = policy_find_vm(a->pol, vm)) < 0) {
		snprintf(err, len, "unknown VM '%s'", vm);
		return 1;
	}
	if (strcmp(a->pol->inv.vms[idx].host, a->host)) {
		snprintf(err, len, "VM %s runs on host %s, not on %s", a->pol->inv.vms[idx].name,
			 a->pol->inv.vms[idx].host, a->host);
		return 1;
	}
	port = plan_find_port(a->installed, a->pol->inv.vms[idx].port);
	if (!port) {
		snprintf(err, len, "VM %s has no realized policy yet", vm);
		return 1;
	}
	out_obj_start(o, NULL);
	out_str(o, "vm", a->pol->inv.vms[idx].name);
	out_str(o, "port", port->ifname);
	out_u64(o, "revision", a->rev);
	/* Chains are shared by vNICs with the same rule list; so are counters. */
	out_str(o, "out_chain", port->out_chain);
	out_u64(o, "out_chain_shared_by", plan_find_chain(a->installed, port->out_chain)->refs);
	out_str(o, "in_chain", port->in_chain);
	out_u64(o, "in_chain_shared_by", plan_find_chain(a->installed, port->in_chain)->refs);
	print_chain_rules(a, o, "out", port->out_chain);
	print_chain_rules(a, o, "in", port->in_chain);
	out_obj_end(o);
	return 0;
}

/* plan FILE: what applying FILE would change on this host, and the very
 * batch that apply would send, checked by the kernel without a commit. */
static int req_plan(struct agent *a, struct out *o, const char *path, char *err, size_t len)
{
	struct trace_world w = { 0 };
	struct snapshot snap;
	struct diag d = { 0 };
	struct dfw_policy *check;
	struct plan *want = NULL;
	const struct pset *over;
	struct plan_diff diff = { 0 };
	struct backend_stats st = { 0 };
	char kerr[512], *text = NULL;
	struct stat sb;
	uint64_t rev;
	FILE *f;
	int ret = 1, fd;

	if (!path) {
		snprintf(err, len, "usage: plan FILE");
		return 1;
	}
	/* dfwd reads it between changes: a FIFO or a device could block it,
	 * and opening a device runs its driver.  open_regular opens regular
	 * files only, and checks what it opens (the name may be swapped in
	 * between); a file of /proc that would wait for data fails instead. */
	if ((fd = open_regular(AT_FDCWD, path, O_RDONLY | O_NONBLOCK, &sb)) < 0) {
		if (sb.st_mode && !S_ISREG(sb.st_mode))
			snprintf(err, len, "%s: not a regular file", path);
		else
			snprintf(err, len, "%s: %s", path, strerror(errno));
		return CONTROL_INPUT;
	}
	if (!(f = fdopen(fd, "r"))) {
		snprintf(err, len, "%s: %s", path, strerror(errno));
		close(fd);
		return CONTROL_INPUT;
	}
	if (!(check = policy_read(f, path, &text, &d))) {
		snprintf(err, len, "%s: %zu error(s), first: %s", path, d.n, d.n ? d.msgs[0] : "?");
		diag_free(&d);
		return 1;
	}
	policy_free(check);
	ret = CONTROL_STORE;
	if (snapshot_read(a->store, &snap, &rev, NULL, NULL, err, len) < 0)
		goto out;
	free(snap.policy);
	free(snap.policy_file);
	snap.policy = text;
	snap.policy_file = xstrdup(path);
	text = NULL;
	if (trace_world_snapshot(&snap, NULL, &w, err, len))
		goto out;
	want = plan_compile(w.p, w.e, a->host);
	memcpy(want->uplinks, a->uplinks, sizeof(want->uplinks));
	want->nuplinks = a->nuplinks;
	out_obj_start(o, NULL);
	out_str(o, "host", a->host);
	out_str(o, "file", path);
	out_u64(o, "store_revision", rev);
	if (a->pol)
		out_u64(o, "changes", whatif_print(o, a->pol, a->eng, w.p, w.e));
	else
		out_str(o, "changes", "everything (no policy realized yet)");
	if (a->loaded) {
		plan_diff(a->installed, want, &diff);
		out_arr_start(o, "vnics");
		for (size_t i = 0; i < diff.nport_add; i++)
			out_str(o, NULL, diff.port_add[i]->ifname);
		for (size_t i = 0; i < diff.nport_del; i++)
			if (!plan_find_port(want, diff.port_del[i]->ifname))
				out_strf(o, NULL, "%s (removed)", diff.port_del[i]->ifname);
		out_arr_end(o);
		out_u64(o, "chains_added", diff.nchain_add);
		out_u64(o, "chains_removed", diff.nchain_del);
		out_u64(o, "sets_added", diff.nset_add);
		out_u64(o, "sets_removed", diff.nset_del);
		out_u64(o, "elements_added", diff.nelem_add);
		out_u64(o, "elements_removed", diff.nelem_del);
		if ((over = plan_keep_sizes(a->installed, want))) {
			/* As realize would: everything, in one full load. */
			overfill_reason(a, over, kerr, sizeof(kerr));
			out_str(o, "full_load", kerr);
			ret = backend_load(a->be, want, true, &st, kerr, sizeof(kerr));
		} else {
			ret = backend_apply(a->be, &diff, true, &st, kerr, sizeof(kerr));
		}
	} else {
		ret = backend_load(a->be, want, true, &st, kerr, sizeof(kerr));
	}
	if (ret < 0) {
		/* The answer is the refusal; the changes are not shown. */
		snprintf(err, len, "the kernel refuses the batch that applying %s would send: %.300s",
			 path, kerr);
		ret = CONTROL_DATAPLANE;
		goto out;
	}
	out_str(o, "kernel_check", "accepted (nothing committed)");
	out_u64(o, "batch_messages", st.msgs);
	out_u64(o, "batch_bytes", st.bytes);
	out_obj_end(o);
	ret = 0;
out:
	plan_diff_free(&diff);
	plan_free(want);
	trace_world_free(&w);
	snapshot_free(&snap);
	free(text);
	return ret;
}

struct counter_row {
	uint32_t id;     /* 0: default */
	uint64_t pk[2], by[2]; /* out, in */
};

struct counters {
	struct counter_row *v;
	size_t n;
	long only;       /* one rule id, or -1 */
};

static void add_counter(void *arg, const char *name, uint64_t packets, uint64_t bytes)
{
	struct counters *c = arg;
	char dir[8] = "";
	unsigned id = 0;
	size_t i;

	/* r-ID-out, r-ID-in, r-default-out, r-default-in */
	if (sscanf(name, "r-%u-%7s", &id, dir) != 2 && sscanf(name, "r-default-%7s", dir) != 1)
		return;
	if (c->only >= 0 && (long)id != c->only)
		return;
	for (i = 0; i < c->n && c->v[i].id != id; i++)
		;
	if (i == c->n) {
		c->v = xrealloc(c->v, (c->n + 1) * sizeof(*c->v));
		memset(&c->v[c->n++], 0, sizeof(*c->v));
		c->v[i].id = id;
	}
	c->v[i].pk[strcmp(dir, "out") != 0] += packets;
	c->v[i].by[strcmp(dir, "out") != 0] += bytes;
}

/* counters [RULE]: the hits of each rule on this host, per direction. */
static int req_counters(struct agent *a, struct out *o, const char *rule, char *err, size_t len)
{
	struct counters c = { .only = -1 };
	uint64_t id = 0;

	if (rule && (parse_u64(rule, UINT32_MAX, &id) < 0 || !id)) {
		snprintf(err, len, "'%.32s' is not a rule id", rule);
		return 1;
	}
	if (rule && (!a->pol || !policy_find_rule(a->pol, (uint32_t)id))) {
		snprintf(err, len, "no rule %s in the realized policy", rule);
		return 1;
	}
	c.only = rule ? (long)id : -1;
	if (backend_read_counters(a->be, add_counter, &c, err, len) < 0) {
		free(c.v);
		return CONTROL_DATAPLANE;
	}
	out_arr_start(o, NULL);
	for (size_t i = 0; a->pol && i <= a->pol->nrules; i++) {
		const struct dfw_rule *r = i < a->pol->nrules ? &a->pol->rules[i] : NULL;
		const struct counter_row *row = NULL;

		for (size_t k = 0; k < c.n && !row; k++)
			if (c.v[k].id == (r ? r->id : 0))
				row = &c.v[k];
		if (!row)
			continue;
		out_obj_start(o, NULL);
		if (r)
			out_u64(o, "rule", r->id);
		else
			out_str(o, "rule", "default");
		out_str(o, "host", a->host);
		out_str(o, "action", action_name(r ? r->action : a->pol->default_action));
		out_bool(o, "monitor", r && r->monitor && r->action != ACT_ALLOW);
		out_u64(o, "out_packets", row->pk[0]);
		out_u64(o, "out_bytes", row->by[0]);
		out_u64(o, "in_packets", row->pk[1]);
		out_u64(o, "in_bytes", row->by[1]);
		out_obj_end(o);
	}
	out_arr_end(o);
	free(c.v);
	return 0;
}

int agent_request(struct agent *a, const char *line, FILE *f)
{
	char buf[CONTROL_REQ_MAX + 1], *words[4], *save = NULL, *w, err[512] = "";
	size_t n = 0;
	bool json = false;
	struct out o;
	char *body = NULL;
	size_t bodylen = 0;
	FILE *mem;
	int ret = CONTROL_INPUT;

	if (strlen(line) >= sizeof(buf)) {
		control_error(f, CONTROL_INPUT, "request too long (at most %d bytes)", CONTROL_REQ_MAX);
		return CONTROL_INPUT;
	}
	snprintf(buf, sizeof(buf), "%s", line);
	/* "json" first asks for JSON; anywhere else it is a word like any
	 * other (a group may be called json). */
	for (w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
		if (!n && !json && !strcmp(w, "json")) {
			json = true;
			continue;
		}
		if (n == ARRAY_SIZE(words)) {
			control_error(f, CONTROL_INPUT, "too many words in request");
			return CONTROL_INPUT;
		}
		words[n++] = w;
	}
	if (!n) {
		control_error(f, CONTROL_INPUT, "empty request");
		return CONTROL_INPUT;
	}
	if (!(mem = open_memstream(&body, &bodylen))) {
		control_error(f, CONTROL_INPUT, "out of memory");
		return CONTROL_INPUT;
	}
	out_init(&o, mem, json);
	if (!strcmp(words[0], "status") && n == 1) {
		req_status(a, &o);
		ret = CONTROL_OK;
	} else if (!strcmp(words[0], "groups") && n <= 2) {
		ret = req_groups(a, &o, n == 2 ? words[1] : NULL, err, sizeof(err));
	} else if (!strcmp(words[0], "rules") && n <= 2) {
		ret = req_rules(a, &o, n == 2 ? words[1] : NULL, err, sizeof(err));
	} else if (!strcmp(words[0], "plan") && n <= 2) {
		ret = req_plan(a, &o, n == 2 ? words[1] : NULL, err, sizeof(err));
	} else if (!strcmp(words[0], "counters") && n <= 2) {
		ret = req_counters(a, &o, n == 2 ? words[1] : NULL, err, sizeof(err));
	} else if (!strcmp(words[0], "threats") && n == 1) {
		threat_print(a->threat, &o);
		ret = CONTROL_OK;
	} else {
		snprintf(err, sizeof(err),
			 "unknown request '%.64s' (status, groups [GROUP], rules VM, threats, plan FILE, counters [RULE]; json first for JSON)",
			 line);
	}
	out_finish(&o);
	fclose(mem);
	if (ret == CONTROL_OK) {
		fprintf(f, "ok %zu\n", bodylen);
		fwrite(body, 1, bodylen, f);
	} else {
		control_error(f, ret, "%s", err);
	}
	free(body);
	return ret;
}

/* --- host status ----------------------------------------------------------- */

void agent_publish(struct agent *a)
{
	uint64_t now = now_ns(), every = (uint64_t)a->status_ttl_s * 1000000000ull / 3;
	char *val = NULL, err[256];
	size_t len = 0;
	FILE *f;
	struct out o;

	/* A changed status goes out at once, an unchanged one (a keepalive)
	 * every ttl/3; after a failure, the next try waits (ttl/3, doubling
	 * up to the ttl: once the store is back, the host is not shown dead
	 * for longer than a ttl).
	 * Called on every wake-up of dfwd's loop, so the common case costs
	 * nothing. */
	if (backoff_waiting(&a->publish_backoff) ||
	    (a->published && !a->status_dirty && now - a->published_ns < every))
		return;
	f = open_memstream(&val, &len);
	out_init(&o, f, true);
	out_obj_start(&o, NULL);
	out_u64(&o, "revision", a->rev);
	out_u64(&o, "vnics", a->installed ? a->installed->nports : 0);
	out_bool(&o, "loaded", a->loaded);
	out_str(&o, "last_error", a->last_error);
	out_u64(&o, "updated", (uint64_t)a->last_update);
	out_u64(&o, "pid", (uint64_t)getpid());
	out_obj_end(&o);
	out_finish(&o);
	fclose(f);
	a->published_ns = now;
	free(a->published);
	a->published = NULL;
	if (store_host_publish(a->store, a->host, val, a->status_ttl_s, err, sizeof(err)) < 0) {
		logf_(a, "publishing host status: %s (next try in %u ms)", err,
		      backoff_fail(&a->publish_backoff, (unsigned)(every / 1000000),
				   a->status_ttl_s * 1000));
		free(val);
		return;
	}
	backoff_ok(&a->publish_backoff);
	a->published = val;
	a->status_dirty = false;
}

void agent_withdraw(struct agent *a)
{
	char err[256];

	if (a->published && store_host_withdraw(a->store, a->host, err, sizeof(err)) < 0)
		logf_(a, "withdrawing host status: %s", err);
}
