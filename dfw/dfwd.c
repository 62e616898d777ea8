/* dfwd: the host agent.  One event loop over store changes, link events
 * (libnl-3), the control socket, and nflog (flow logs, address learning);
 * signals only set flags (signalfd). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netlink/netlink.h>
#include <netlink/route/link.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "dfw/agent.h"
#include "dfw/backend.h"
#include "dfw/control.h"
#include "dfw/flowlog.h"
#include "dfw/layout.h"
#include "dfw/learn.h"
#include "dfw/nflog.h"

#define HEARTBEAT_MS 10000
/* A safety net only: inotify wakes us on every store write. */
#define STORE_POLL_MS 1000
/* Flow log write errors are logged at most this often. */
#define FLOWLOG_WARN_NS (10 * 1000000000ull)

static const char usage[] =
	"usage: dfwd --host NAME [--store URI] [--socket PATH] [--table NAME]\n"
	"            [--log FILE] [--pidfile FILE] [--uplink IFNAME]...\n"
	"            [--status-ttl SECONDS] [--flow-log PATH [--flow-log-rate N]]\n"
	"            [--shared-tables]\n"
	"  --host     this hypervisor's name, as in the inventory's 'host' keys\n"
	"  --store    desired-state store (default /var/lib/dfw/store.db)\n"
	"  --socket   control socket (default /run/dfw/dfwd.sock)\n"
	"  --table    nftables table name (default dfw)\n"
	"  --log      append log lines here (default stderr)\n"
	"  --status-ttl SECONDS  host status liveness in the store (default 10)\n"
	"  --uplink   a bridge port to other hosts (e.g. a VXLAN device); repeatable:\n"
	"             traffic from it is checked at its destination vNIC, traffic to\n"
	"             it at its source vNIC\n"
	"  --flow-log PATH  append a JSON line per packet of rules with log = yes\n"
	"             (reopened on SIGHUP)\n"
	"  --flow-log-rate N  at most N lines a second, in bursts of N (default 1000);\n"
	"             lines left out are counted in the flow log\n"
	"  --shared-tables  do not own the dfw tables: other processes may change\n"
	"             them (by default only this dfwd can, while it runs)\n";

struct links {
	struct nl_sock *sk;
	struct agent *agent;
};

static void link_obj(struct nl_object *obj, void *arg)
{
	struct links *l = arg;
	struct rtnl_link *link = (struct rtnl_link *)obj;
	const char *name = rtnl_link_get_name(link);

	if (name)
		agent_link(l->agent, name, nl_object_get_msgtype(obj) != RTM_DELLINK);
}

static int link_msg(struct nl_msg *msg, void *arg)
{
	nl_msg_parse(msg, link_obj, arg);
	return NL_OK;
}

/* Subscribes to link events, then lists the links that already exist. */
static int links_open(struct links *l, struct agent *a)
{
	struct nl_cache *cache = NULL;
	struct nl_sock *list;

	l->agent = a;
	l->sk = nl_socket_alloc();
	if (!l->sk)
		return -1;
	nl_socket_disable_seq_check(l->sk);
	nl_socket_modify_cb(l->sk, NL_CB_VALID, NL_CB_CUSTOM, link_msg, l);
	if (nl_connect(l->sk, NETLINK_ROUTE) < 0 ||
	    nl_socket_add_membership(l->sk, RTNLGRP_LINK) < 0)
		return -1;
	nl_socket_set_nonblocking(l->sk);
	list = nl_socket_alloc();
	if (list && nl_connect(list, NETLINK_ROUTE) == 0 &&
	    rtnl_link_alloc_cache(list, AF_UNSPEC, &cache) == 0) {
		for (struct nl_object *o = nl_cache_get_first(cache); o; o = nl_cache_get_next(o))
			link_obj(o, l);
		nl_cache_free(cache);
	}
	nl_socket_free(list);
	return 0;
}

/* Address learning: the ARP / ND / DHCP frames the bridge table copies for
 * learning ports go to the agent as (port, address). */
static void on_learn(void *arg, const struct nflog_pkt *p)
{
	struct learn_seen seen;

	if (learn_parse(p, &seen) > 0)
		agent_learn(arg, &seen);
}

/* Listens on the learn group (always: while no port learns, the kernel
 * copies nothing), each frame at once: the guest's traffic waits for it.
 * A failure is logged once; the heartbeat retries. */
static struct nflog *learn_open(FILE *log, bool *warned)
{
	char err[256];
	struct nflog *l = nflog_open_with(DFW_NFLOG_LEARN, LEARN_COPY_LEN, 0, err, sizeof(err));

	if (!l && !*warned)
		fprintf(log, "dfwd: address learning off until it can listen: %s\n", err);
	*warned = !l;
	return l;
}

/* Logs the flow log's new write errors, at most every FLOWLOG_WARN_NS. */
static void flowlog_warn(struct flowlog *fl, const char *path, FILE *log, uint64_t *seen,
			 uint64_t *when)
{
	struct flowlog_stats st;

	flowlog_stats(fl, &st);
	if (st.write_errors == *seen || (*when && now_ns() - *when < FLOWLOG_WARN_NS))
		return;
	fprintf(log, "dfwd: flow log %s: %llu line(s) not written: %s\n", path,
		(unsigned long long)(st.write_errors - *seen), strerror(st.last_errno));
	*seen = st.write_errors;
	*when = now_ns();
}

/* Whether another process owns the tables (another dfwd for this host,
 * started with a control socket of its own); the reason in err. */
static bool tables_owned(const char *table, char *err, size_t errlen)
{
	struct backend *b = backend_open(table, err, errlen);
	uint32_t owner = b ? backend_tables_owner(b) : 0;

	backend_close(b);
	if (owner)
		snprintf(err, errlen, "the tables %s belong to another process (netlink port %u):"
			 " another dfwd for this host?", table, owner);
	return owner != 0;
}

static int control_request(void *arg, const char *line, FILE *out)
{
	return agent_request(arg, line, out);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "store", required_argument, NULL, 's' },
		{ "socket", required_argument, NULL, 'S' },
		{ "table", required_argument, NULL, 't' },
		{ "log", required_argument, NULL, 'l' },
		{ "pidfile", required_argument, NULL, 'p' },
		{ "uplink", required_argument, NULL, 'u' },
		{ "status-ttl", required_argument, NULL, 'T' },
		{ "flow-log", required_argument, NULL, 'f' },
		{ "flow-log-rate", required_argument, NULL, 'r' },
		{ "shared-tables", no_argument, NULL, 'O' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	struct agent_opts ao = { .store_uri = "/var/lib/dfw/store.db", .table = DFW_TABLE_DEFAULT,
				 .own_tables = true };
	const char *sock_path = "/run/dfw/dfwd.sock", *log_path = NULL, *pidfile = NULL;
	const char *uplinks[DFW_MAX_UPLINKS];
	size_t nuplinks = 0;
	struct links links = { 0 };
	struct agent *a = NULL;
	struct flowlog_opts fo = { .rate = FLOWLOG_RATE_DEFAULT, .verdict_of = agent_rule_verdict };
	struct flowlog *fl = NULL;
	struct nflog *learn = NULL;
	bool learn_warned = false;
	char err[512];
	struct control *ctl = NULL;
	int c, sfd = -1, ret = 1, poll_ms;
	uint64_t last_beat, fl_errors = 0, fl_warned = 0;
	sigset_t mask;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'H': ao.host = optarg; break;
		case 's': ao.store_uri = optarg; break;
		case 'S': sock_path = optarg; break;
		case 't': ao.table = optarg; break;
		case 'l': log_path = optarg; break;
		case 'p': pidfile = optarg; break;
		case 'T': {
			uint64_t v;

			if (parse_u64(optarg, 3600, &v) < 0 || v < 2) {
				fprintf(stderr, "dfwd: --status-ttl '%s': seconds, 2 to 3600\n", optarg);
				return 1;
			}
			ao.status_ttl_s = (unsigned)v;
			break;
		}
		case 'f': fo.path = optarg; break;
		case 'O': ao.own_tables = false; break;
		case 'r': {
			uint64_t v;

			if (parse_u64(optarg, FLOWLOG_RATE_MAX, &v) < 0 || v < 1) {
				fprintf(stderr, "dfwd: --flow-log-rate '%s': lines a second, 1 to %u\n",
					optarg, FLOWLOG_RATE_MAX);
				return 1;
			}
			fo.rate = (uint32_t)v;
			break;
		}
		case 'u':
			if (nuplinks == DFW_MAX_UPLINKS) {
				fprintf(stderr, "dfwd: at most %d --uplink\n", DFW_MAX_UPLINKS);
				return 1;
			}
			uplinks[nuplinks++] = optarg;
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 1;
		}
	}
	if (!ao.host || optind != argc) {
		fprintf(stderr, "dfwd: %s\n%s", !ao.host ? "--host is required" : "unexpected argument",
			usage);
		return 1;
	}
	ao.uplinks = uplinks;
	ao.nuplinks = nuplinks;
	ao.log = log_path ? fopen(log_path, "a") : stderr;
	if (!ao.log) {
		fprintf(stderr, "dfwd: %s: %s\n", log_path, strerror(errno));
		return 1;
	}
	setvbuf(ao.log, NULL, _IOLBF, 0);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		/* Without it SIGTERM, blocked above, could never stop us. */
		fprintf(ao.log, "dfwd: signalfd: %s\n", strerror(errno));
		goto out;
	}
	/* Before the kernel is touched: a second dfwd would load the table
	 * under the first and take its control socket. */
	if (control_in_use(sock_path, err, sizeof(err))) {
		fprintf(ao.log, "dfwd: %s; not starting\n", err);
		goto out;
	}
	/* ...and one with a socket of its own finds the tables owned by
	 * the first: it could change nothing, and would publish the host's
	 * status over the first's. */
	if (tables_owned(ao.table, err, sizeof(err))) {
		fprintf(ao.log, "dfwd: %s; not starting\n", err);
		goto out;
	}
	a = agent_new(&ao, err, sizeof(err));
	if (!a) {
		fprintf(ao.log, "dfwd: %s\n", err);
		ret = 3;
		goto out;
	}
	if (links_open(&links, a) < 0) {
		fprintf(ao.log, "dfwd: link events: cannot subscribe\n");
		goto out;
	}
	if (fo.path) {
		fo.host = ao.host;
		fo.verdict_arg = a;
		fl = flowlog_open(&fo, err, sizeof(err));
		if (!fl) {
			fprintf(ao.log, "dfwd: %s\n", err);
			goto out;
		}
	}
	learn = learn_open(ao.log, &learn_warned);
	/* Realize before answering anyone: status then shows a real revision. */
	agent_sync(a);
	ctl = control_open(sock_path, ao.log, err, sizeof(err));
	if (!ctl) {
		fprintf(ao.log, "dfwd: %s\n", err);
		goto out;
	}
	if (pidfile) {
		FILE *pf = fopen(pidfile, "w");

		if (!pf || fprintf(pf, "%d\n", (int)getpid()) < 0 || fclose(pf) != 0) {
			fprintf(ao.log, "dfwd: pidfile %s: %s\n", pidfile, strerror(errno));
			if (pf)
				fclose(pf);
			goto out;
		}
	}
	last_beat = now_ns();
	poll_ms = ao.status_ttl_s && ao.status_ttl_s * 1000 / 3 < STORE_POLL_MS
			  ? (int)(ao.status_ttl_s * 1000 / 3) : STORE_POLL_MS;
	for (;;) {
		enum { P_SIG, P_LINK, P_THREAT, P_STORE, P_FLOWLOG, P_LEARN, P_CUTTER, P_CONTROL };
		struct pollfd p[P_CONTROL + CONTROL_NFDS] = {
			[P_SIG] = { .fd = sfd, .events = POLLIN },
			[P_LINK] = { .fd = nl_socket_get_fd(links.sk), .events = POLLIN },
			[P_THREAT] = { .fd = agent_threat_fd(a), .events = POLLIN },
			[P_STORE] = { .fd = agent_store_fd(a), .events = POLLIN },
			[P_FLOWLOG] = { .fd = fl ? flowlog_fd(fl) : -1, .events = POLLIN },
			[P_LEARN] = { .fd = learn ? nflog_fd(learn) : -1, .events = POLLIN },
			[P_CUTTER] = { .fd = agent_cutter_fd(a), .events = POLLIN },
		};
		int n;

		control_pollfds(ctl, &p[P_CONTROL]);
		n = poll(p, ARRAY_SIZE(p), poll_ms); /* fd -1 is skipped */

		if (n < 0 && errno != EINTR)
			break;
		if (p[P_SIG].revents & POLLIN) {
			struct signalfd_siginfo si;

			if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
				if (si.ssi_signo != SIGHUP) {
					fprintf(ao.log, "dfwd: signal %u: exiting; the kernel keeps enforcing the last realized policy\n",
						si.ssi_signo);
					ret = 0;
					break;
				}
				agent_heartbeat(a);
				/* logrotate moved the flow log away */
				if (fl && flowlog_reopen(fl, err, sizeof(err)) < 0)
					fprintf(ao.log, "dfwd: %s (still writing to the old file)\n", err);
			}
		}
		if (p[P_LINK].revents & POLLIN)
			nl_recvmsgs_default(links.sk);
		if (p[P_THREAT].revents & POLLIN)
			agent_threat_read(a);
		if (p[P_CUTTER].revents & POLLIN)
			agent_cutter_read(a);
		if (p[P_STORE].revents & POLLIN)
			agent_store_ack(a);
		/* POLLERR too: an overrun (ENOBUFS) is read like a packet. */
		if (p[P_FLOWLOG].revents & (POLLIN | POLLERR) && flowlog_read(fl) < 0)
			fprintf(ao.log, "dfwd: flow log: reading nflog: %s\n", strerror(errno));
		if (fl) {
			flowlog_tick(fl);
			flowlog_warn(fl, fo.path, ao.log, &fl_errors, &fl_warned);
		}
		if (p[P_LEARN].revents & (POLLIN | POLLERR) && nflog_read_frames(learn, on_learn, a) < 0)
			fprintf(ao.log, "dfwd: address learning: reading nflog: %s\n", strerror(errno));
		agent_sync(a);
		agent_publish(a);
		control_serve(ctl, &p[P_CONTROL], control_request, a); /* also its deadlines */
		if (now_ns() - last_beat > HEARTBEAT_MS * 1000000ull) {
			agent_heartbeat(a);
			if (!learn)
				learn = learn_open(ao.log, &learn_warned);
			last_beat = now_ns();
		}
	}
	if (ret == 0)
		agent_withdraw(a);
out:
	control_close(ctl);
	if (pidfile && ret == 0)
		unlink(pidfile);
	nl_socket_free(links.sk);
	flowlog_close(fl);
	nflog_close(learn);
	agent_free(a);
	if (sfd >= 0)
		close(sfd);
	if (ao.log && ao.log != stderr)
		fclose(ao.log);
	return ret;
}
