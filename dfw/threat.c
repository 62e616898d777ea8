/* The host's network threat response (see threat.h). */
#include "dfw/threat.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

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
	char action[256];
};

struct threat {
	struct backend *be;
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
};

struct threat *threat_new(struct backend *be, struct store *store, FILE *log, const char *who)
{
	struct threat *t = xcalloc(1, sizeof(*t));

	t->be = be;
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

/* Enforce: block every address of the VM (and the one seen) for
 * block_for, cut its connections, tag it.  Writes what was done into
 * action. */
static void enforce(struct threat *t, const struct vm *vm, const struct dfw_addr *seen,
		    char *action, size_t len)
{
	struct backend_block *bl = xcalloc(vm->naddrs + 1, sizeof(*bl));
	struct dfw_addr *addrs = xcalloc(vm->naddrs + 1, sizeof(*addrs));
	size_t n = 0, off;
	struct backend_cut cut;
	bool listed = false;
	char err[512];

	for (size_t i = 0; i < vm->naddrs; i++) {
		addrs[n++] = vm->addrs[i];
		listed |= !addr_cmp(&vm->addrs[i], seen);
	}
	if (!listed)
		addrs[n++] = *seen;
	for (size_t i = 0; i < n; i++) {
		bl[i].addr = addrs[i];
		bl[i].timeout_ms = t->cfg.block_ms;
	}
	if (backend_block(t->be, bl, n, NULL, err, sizeof(err)) < 0)
		off = (size_t)snprintf(action, len, "block FAILED: %.160s", err);
	else
		off = (size_t)snprintf(action, len, "blocked %zu address(es) for %llu s", n,
				       (unsigned long long)t->cfg.block_ms / 1000);
	if (backend_ct_flush(t->be, addrs, n, BACKEND_CUT_AUTO, &cut, err, sizeof(err)) == 0 &&
	    off < len)
		off += (size_t)snprintf(action + off, len - off, ", cut %zu connection(s)",
					cut.deleted);
	if (t->cfg.tag && off < len) {
		char *tags[1] = { t->cfg.tag };
		uint64_t rev = 0;
		int r = tags_write(t->store, vm->name, tags, 1, true, NULL, &rev, err, sizeof(err));

		if (r == 0)
			snprintf(action + off, len - off, ", tagged %s (revision %llu)", t->cfg.tag,
				 (unsigned long long)rev);
		else
			snprintf(action + off, len - off, ", tagging %s FAILED: %.120s", t->cfg.tag, err);
	}
	free(bl);
	free(addrs);
}

static void on_flow(void *arg, const struct nflog_pkt *p)
{
	struct threat *t = arg;
	uint64_t now = now_ns() / 1000000;
	const struct pport *port;
	const struct vm *vm;
	struct nt_alert al;
	struct report *r;

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
		enforce(t, vm, &p->src, r->action, sizeof(r->action));
	else
		snprintf(r->action, sizeof(r->action), "reported only (monitor mode)");
	log_line(t->log, t->who, "netthreat: %s (%s, port %s) is scanning: %u destination port(s), %u host(s) within %llu ms; %s",
		 r->vm, r->addr, port->ifname, al.ports, al.hosts,
		 (unsigned long long)t->cfg.window_ms, r->action);
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
	char err[256], buf[64];

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
		out_str(o, "action", r->action);
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
