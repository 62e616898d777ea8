/* The host's network threat response (see threat.h). */
#include "dfw/threat.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "dfw/cutter.h"
#include "dfw/layout.h"
#include "dfw/netthreat.h"
#include "dfw/nflog.h"
#include "tagger/tags.h"

#define THREAT_REPORTS 64   /* recent reports kept for `dfwctl threats` */

struct report {
	time_t when;
	char vm[64];
	char addr[64];          /* the source address seen */
	struct nt_alert al;
	enum nt_mode mode;
	/* What was done, in the order it was done: the block (or "reported
	 * only"), the cut of the VM's connections (made on the cutter's
	 * thread, so pending at first), the tag. */
	char block[224];
	enum { CUT_NONE, CUT_PENDING, CUT_DONE, CUT_FAILED } cut;
	size_t cut_deleted;
	char cut_err[200];
	char tag[160];
};

struct threat {
	struct backend *be;
	struct cutter *cutter;
	struct store *store;
	FILE *log;
	char who[80];
	const struct dfw_policy *pol;
	const struct plan *pl;
	struct dfw_netthreat cfg;   /* in force; cfg.tag borrowed from pol */
	struct nflog *flows;
	struct nt_detector *nt;
	uint64_t flows_seen;
	struct report reports[THREAT_REPORTS];
	size_t nreports;            /* ever made; the ring holds the last ones */
	struct strv tag_retry;      /* "VM TAG": tags the store refused, tried again */
};

struct threat *threat_new(struct backend *be, struct cutter *cutter, struct store *store,
			  FILE *log, const char *who)
{
	struct threat *t = xcalloc(1, sizeof(*t));

	t->be = be;
	t->cutter = cutter;
	t->store = store;
	t->log = log;
	snprintf(t->who, sizeof(t->who), "%s", who);
	return t;
}

void threat_free(struct threat *t)
{
	if (!t)
		return;
	nflog_close(t->flows);
	nt_free(t->nt);
	strv_free(&t->tag_retry);
	free(t);
}

static bool same_thresholds(const struct dfw_netthreat *x, const struct dfw_netthreat *y)
{
	return x->window_ms == y->window_ms && x->max_ports == y->max_ports &&
	       x->max_hosts == y->max_hosts;
}

int threat_configure(struct threat *t, const struct dfw_policy *pol, const struct plan *pl,
		     char *err, size_t errlen)
{
	static const struct dfw_netthreat off = { .mode = NT_OFF };
	const struct dfw_netthreat *want = pol ? &pol->netthreat : &off;

	t->pol = pol;
	t->pl = pl;
	if (want->mode == NT_OFF) {
		if (t->flows)
			log_line(t->log, t->who, "netthreat: off");
		nflog_close(t->flows);
		t->flows = NULL;
		nt_free(t->nt);
		t->nt = NULL;
		t->cfg = *want;
		return 0;
	}
	if (!t->nt)
		t->nt = nt_new(want);
	else if (!same_thresholds(&t->cfg, want))
		nt_configure(t->nt, want);
	if (!t->flows || t->cfg.mode != want->mode || !same_thresholds(&t->cfg, want))
		log_line(t->log, t->who, "netthreat: %s; more than %u ports or %u hosts in %llu ms is a scan%s%s",
			 nt_mode_name(want->mode), want->max_ports, want->max_hosts,
			 (unsigned long long)want->window_ms,
			 want->mode == NT_ENFORCE ? "; blocks last " : "",
			 want->mode == NT_ENFORCE ? "the configured time" : "");
	t->cfg = *want;
	if (!t->flows && !(t->flows = nflog_open(DFW_NFLOG_NEWFLOWS, err, errlen)))
		return -1;
	return 0;
}

int threat_fd(const struct threat *t)
{
	return t->flows ? nflog_fd(t->flows) : -1;
}

static const struct pport *port_by_id(const struct plan *pl, uint32_t id)
{
	for (size_t i = 0; pl && i < pl->nports; i++)
		if (pl->ports[i].id == id)
			return &pl->ports[i];
	return NULL;
}

/* What was done, as one line. */
static const char *report_action(const struct report *r, char *buf, size_t len)
{
	size_t off = (size_t)snprintf(buf, len, "%s", r->block);

	if (r->cut == CUT_PENDING && off < len)
		off += (size_t)snprintf(buf + off, len - off, ", cutting connections");
	else if (r->cut == CUT_DONE && off < len)
		off += (size_t)snprintf(buf + off, len - off, ", cut %zu connection(s)",
					r->cut_deleted);
	else if (r->cut == CUT_FAILED && off < len)
		off += (size_t)snprintf(buf + off, len - off, ", cut FAILED: %s", r->cut_err);
	if (r->tag[0] && off < len)
		snprintf(buf + off, len - off, ", %s", r->tag);
	return buf;
}

/* How long a tag write may hold dfwd's loop (the next scan's block
 * waits for it): a store that is locked or does not answer in that time
 * gets the tag at a later heartbeat instead. */
#define TAG_WAIT_MS 250

/* Puts tag on vm with its record (a clean file scan's release keeps this
 * tag); what happened goes to done.  -1 when the store failed or took
 * longer than TAG_WAIT_MS: the tag is tried again at each threat_retry
 * until it is written; 1 when the stored policy refuses it (no such VM or
 * tag there now): never. */
static int tag_vm(struct threat *t, const char *vm, const char *tag, char *done, size_t len)
{
	char *tags[1] = { (char *)tag }, key[TAG_KEY_MAX], err[256];
	uint64_t rev = 0;
	int r;

	netthreat_key(key, vm);
	store_set_deadline(t->store, TAG_WAIT_MS);
	r = tags_write_rec(t->store, vm, tags, 1, true, key, tag, NULL, NULL, &rev, err, sizeof(err));
	store_set_deadline(t->store, 0);
	if (r) {
		snprintf(done, len, "tagging %s FAILED%s: %.100s", tag,
			 r < 0 ? " (tried again every 10 s)" : "", err);
		return r < 0 ? -1 : 1;
	}
	snprintf(done, len, "tagged %s (revision %llu)", tag, (unsigned long long)rev);
	return 0;
}

/* Enforce: block every address of the VM (and the one seen, unless it is
 * no one's own: the 0.0.0.0 of a DHCP client, the :: of duplicate address
 * detection, whose block would stop every other guest's) for block_for,
 * queue the cut of its connections (threat_cut_done reports it), tag it.
 * Writes what was done into r; ticket names the cut. */
static void enforce(struct threat *t, const struct vm *vm, const struct dfw_addr *seen,
		    struct report *r, uint64_t ticket)
{
	struct backend_block *bl = xcalloc(vm->naddrs + 2, sizeof(*bl));
	struct dfw_addr *addrs = xcalloc(vm->naddrs + 2, sizeof(*addrs));
	bool listed = false;
	size_t n = 0;
	char err[512];

	/* Its link-local address too: the vNIC may send from it. */
	for (size_t i = 0; vm_member_addr(vm, 0, &i, &addrs[n]);)
		listed |= !addr_cmp(&addrs[n++], seen);
	if (!listed && !addr_not_own(seen))
		addrs[n++] = *seen;
	for (size_t i = 0; i < n; i++) {
		bl[i].addr = addrs[i];
		bl[i].timeout_ms = t->cfg.block_ms;
	}
	if (n == 0)
		snprintf(r->block, sizeof(r->block), "no address of its own to block yet");
	else if (backend_block(t->be, bl, n, NULL, err, sizeof(err)) < 0)
		snprintf(r->block, sizeof(r->block), "block FAILED: %.190s", err);
	else
		snprintf(r->block, sizeof(r->block), "blocked %zu address(es) for %llu s", n,
			 (unsigned long long)t->cfg.block_ms / 1000);
	/* Established flows pass the block (it follows the conntrack
	 * accept): the cut ends them.  It is made on the cutter's thread,
	 * so the tag below (and the quarantine it brings) waits for no walk
	 * of the conntrack table. */
	if (n) {
		cutter_queue_ticket(t->cutter, addrs, n, ticket);
		r->cut = CUT_PENDING;
	}
	if (t->cfg.tag && tag_vm(t, vm->name, t->cfg.tag, r->tag, sizeof(r->tag)) < 0) {
		char retry[160];

		snprintf(retry, sizeof(retry), "%s %s", vm->name, t->cfg.tag);
		if (!strv_contains(&t->tag_retry, retry, false))
			strv_push(&t->tag_retry, retry);
	}
	free(bl);
	free(addrs);
}

void threat_retry(struct threat *t)
{
	for (size_t i = 0; i < t->tag_retry.n;) {
		char vm[80] = "", tag[80] = "", done[128];
		struct report *r = NULL;

		if (sscanf(t->tag_retry.v[i], "%79s %79s", vm, tag) != 2 ||
		    (t->pol && policy_find_vm(t->pol, vm) < 0)) {
			log_line(t->log, t->who, "netthreat: %s is no VM of the policy now; not tagged %s",
				 vm, tag);
			strv_remove(&t->tag_retry, t->tag_retry.v[i], false);
			continue;
		}
		/* The store failed again: the others wait for the next
		 * heartbeat too (each try holds dfwd's loop for up to
		 * TAG_WAIT_MS). */
		if (tag_vm(t, vm, tag, done, sizeof(done)) < 0)
			break;
		log_line(t->log, t->who, "netthreat: %s %s, tried again after the store failed", vm, done);
		/* The newest report of the VM says so too. */
		for (size_t k = 0; k < t->nreports && k < THREAT_REPORTS && !r; k++) {
			struct report *c = &t->reports[(t->nreports - 1 - k) % THREAT_REPORTS];

			r = !strcmp(c->vm, vm) ? c : NULL;
		}
		if (r)
			snprintf(r->tag, sizeof(r->tag), "%s, tried again", done);
		strv_remove(&t->tag_retry, t->tag_retry.v[i], false);
	}
}

void threat_cut_done(void *arg, const struct cutter_result *res)
{
	struct threat *t = arg;
	struct report *r;
	char how[96];

	if (!res->ticket || res->ticket > t->nreports ||
	    t->nreports - res->ticket >= THREAT_REPORTS) {
		if (res->rc == 0)
			log_line(t->log, t->who, "netthreat: cut %zu connection(s) for report %llu (no longer kept)",
				 res->cut.deleted, (unsigned long long)res->ticket);
		else
			log_line(t->log, t->who, "netthreat: cutting connections for report %llu (no longer kept): %s",
				 (unsigned long long)res->ticket, res->err);
		return;
	}
	r = &t->reports[(res->ticket - 1) % THREAT_REPORTS];
	if (res->rc == 0) {
		r->cut = CUT_DONE;
		r->cut_deleted = res->cut.deleted;
		log_line(t->log, t->who, "netthreat: cut %zu connection(s) of %s (%s) in %llu us (%s)",
			 res->cut.deleted, r->vm, r->addr, (unsigned long long)res->us,
			 backend_cut_str(&res->cut, how, sizeof(how)));
	} else {
		r->cut = CUT_FAILED;
		snprintf(r->cut_err, sizeof(r->cut_err), "%s", res->err);
		log_line(t->log, t->who, "netthreat: cutting the connections of %s (%s): %s", r->vm,
			 r->addr, res->err);
	}
}

static void on_flow(void *arg, const struct nflog_pkt *p)
{
	struct threat *t = arg;
	uint64_t t0 = now_ns() / 1000, now = t0 / 1000;
	const struct pport *port;
	const struct vm *vm;
	struct nt_alert al;
	struct report *r;
	char action[640];

	t->flows_seen++;
	if (p->mark == DFW_UPLINK_ID)
		return; /* another host's vNIC: its own host watches it */
	if (!nt_feed(t->nt, p->mark, &p->dst, p->proto, p->dport, now,
		     t->cfg.mode == NT_ENFORCE ? t->cfg.block_ms : t->cfg.window_ms, &al))
		return;
	port = port_by_id(t->pl, p->mark);
	if (!port || !t->pol)
		return; /* a vNIC that went away meanwhile */
	vm = &t->pol->inv.vms[port->vm];
	r = &t->reports[t->nreports++ % THREAT_REPORTS];
	memset(r, 0, sizeof(*r));
	r->when = time(NULL);
	snprintf(r->vm, sizeof(r->vm), "%s", vm->name);
	addr_format(&p->src, r->addr, sizeof(r->addr));
	r->al = al;
	r->mode = t->cfg.mode;
	if (t->cfg.mode == NT_ENFORCE)
		enforce(t, vm, &p->src, r, t->nreports);
	else
		snprintf(r->block, sizeof(r->block), "reported only (monitor mode)");
	log_line(t->log, t->who, "netthreat: %s (%s, port %s) is scanning: %u destination port(s), %u host(s) within %llu ms; %s (in %llu us)",
		 r->vm, r->addr, port->ifname, al.ports, al.hosts,
		 (unsigned long long)t->cfg.window_ms, report_action(r, action, sizeof(action)),
		 (unsigned long long)(now_ns() / 1000 - t0));
}

void threat_read(struct threat *t)
{
	uint64_t lost = t->flows ? nflog_lost(t->flows) : 0;

	if (!t->flows)
		return;
	if (nflog_read(t->flows, on_flow, t) < 0)
		log_line(t->log, t->who, "netthreat: reading nflog: %s", strerror(errno));
	if (nflog_lost(t->flows) != lost)
		log_line(t->log, t->who, "netthreat: the kernel dropped new-flow records (socket buffer full); counts may be low");
}

void threat_print(struct threat *t, struct out *o)
{
	struct backend_block *bl = NULL;
	size_t nbl = 0, nrep = t->nreports < THREAT_REPORTS ? t->nreports : THREAT_REPORTS;
	char err[256], buf[64], action[640];

	out_obj_start(o, NULL);
	out_str(o, "mode", nt_mode_name(t->cfg.mode));
	if (t->cfg.mode != NT_OFF) {
		out_u64(o, "window_ms", t->cfg.window_ms);
		out_u64(o, "max_ports", t->cfg.max_ports);
		out_u64(o, "max_hosts", t->cfg.max_hosts);
		out_u64(o, "new_flows_seen", t->flows_seen);
		out_u64(o, "overruns", t->flows ? nflog_lost(t->flows) : 0);
	}
	out_u64(o, "reports_total", t->nreports);
	out_arr_start(o, "reports");
	for (size_t i = 0; i < nrep; i++) {
		const struct report *r = &t->reports[(t->nreports - 1 - i) % THREAT_REPORTS];
		char when[32];

		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&r->when));
		out_obj_start(o, NULL);
		out_str(o, "when", when);
		out_str(o, "vm", r->vm);
		out_str(o, "address", r->addr);
		out_u64(o, "ports", r->al.ports);
		out_u64(o, "hosts", r->al.hosts);
		out_str(o, "threshold", r->al.by_ports ? "ports" : "hosts");
		out_str(o, "mode", nt_mode_name(r->mode));
		out_str(o, "action", report_action(r, action, sizeof(action)));
		out_obj_end(o);
	}
	out_arr_end(o);
	out_arr_start(o, "blocks");
	if (backend_read_blocks(t->be, &bl, &nbl, err, sizeof(err)) == 0) {
		for (size_t i = 0; i < nbl; i++) {
			out_obj_start(o, NULL);
			addr_format(&bl[i].addr, buf, sizeof(buf));
			out_str(o, "address", buf);
			out_u64(o, "seconds_left", (bl[i].timeout_ms + 999) / 1000);
			out_obj_end(o);
		}
	}
	out_arr_end(o);
	out_obj_end(o);
	free(bl);
}
