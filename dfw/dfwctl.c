/* dfwctl: writes desired state to the store (apply, tag, untag) and asks the
 * host agent what it realized (status, groups, rules).  One table drives
 * dispatch and help.  Exit: 0 ok, 1 bad usage or input, 2 dataplane
 * failure, 3 store or daemon unreachable. */
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/out.h"
#include "common/util.h"
#include "dfw/control.h"
#include "dfw/hosts.h"
#include "dfw/trace.h"
#include "tagger/config.h"
#include "tagger/state.h"
#include "tagger/store.h"
#include "tagger/tags.h"

/* 0 ok, 1 bad usage or input, 2 the dataplane failed, 3 the store or the
 * daemon cannot be reached: a daemon's answer's status is the exit status. */
enum {
	EXIT_OK = (int)CONTROL_OK,
	EXIT_INPUT = (int)CONTROL_INPUT,
	EXIT_DATAPLANE = (int)CONTROL_DATAPLANE,
	EXIT_UNREACHABLE = (int)CONTROL_STORE,
};
/* How long dfwd may take to answer (it answers between changes it realizes). */
#define ANSWER_TIMEOUT_S 60

struct ctx {
	const char *store;
	const char *socket;
	bool json;
	bool check;
	bool wait;
	uint64_t wait_ms;
	bool ipv6;
	bool all;
	const char *for_;            /* block --for */
	const char *scope;           /* block --scope */
	struct strv assume, unassume; /* trace --assume-tag / --assume-untag */
	struct strv categories;      /* mode --category */
	const char *matrix;          /* trace --matrix PORTS */
	const char *rule;            /* counters --rule ID */
	int argc;
	char **argv;
};

struct command {
	const char *name;
	const char *args;
	const char *help;
	int (*fn)(struct ctx *c);
};

static int cmd_help(struct ctx *c);
static int ask_daemon(struct ctx *c, const char *verb, const char *arg);
static bool safe_word(const char *s);

static struct store *open_store(const struct ctx *c, bool create, int *rc)
{
	char err[512];
	struct store *s;

	errno = 0;
	if (!(s = store_open(c->store, create, err, sizeof(err)))) {
		fprintf(stderr, "dfwctl: %s\n", err);
		/* A malformed URI is bad input; the rest, a store not there. */
		*rc = errno == EINVAL ? EXIT_INPUT : EXIT_UNREACHABLE;
	}
	return s;
}

static void print_diag(const struct diag *d)
{
	for (size_t i = 0; i < d->n; i++)
		fprintf(stderr, "%s\n", d->msgs[i]);
}

/* --- host status and --wait ----------------------------------------------- */

/* After a write at revision rev: waits until no host lags (host_lags), or
 * the timeout.  Prints how long it took, or the hosts that lag.  Returns
 * an exit code. */
static int wait_realized(const struct ctx *c, struct store *s, uint64_t rev)
{
	struct host_list l = { 0 };
	uint64_t t0 = now_ns();
	size_t lag = 0, live = 0;
	char err[512];
	int rc = EXIT_OK, r = hosts_wait(s, rev, c->wait_ms, &l, err, sizeof(err));

	if (r < 0) {
		fprintf(stderr, "dfwctl: --wait: %s\n", err);
		rc = EXIT_UNREACHABLE;
		goto out;
	}
	for (size_t i = 0; i < l.n; i++) {
		live += l.v[i].alive;
		lag += host_lags(&l.v[i], rev);
	}
	if (r == 0) {
		printf("realized on %zu host(s) in %.1f ms\n", live, (double)(now_ns() - t0) / 1e6);
		if (!live)
			printf("(no live host agent: nothing to wait for)\n");
		goto out;
	}
	fprintf(stderr, "dfwctl: --wait: revision %llu not realized after %llu ms by %zu host(s) (%zu live):",
		(unsigned long long)rev, (unsigned long long)c->wait_ms, lag, live);
	for (size_t i = 0; i < l.n; i++)
		if (host_lags(&l.v[i], rev))
			fprintf(stderr, " %s (at %llu%s%s%s)", l.v[i].name,
				(unsigned long long)l.v[i].rev, l.v[i].alive ? "" : ", no live agent",
				l.v[i].error[0] ? ": " : "", l.v[i].error);
	fprintf(stderr, "\n");
	rc = EXIT_DATAPLANE;
out:
	hosts_free(&l);
	return rc;
}

/* Reads the store's desired state for a read command: 0, or an exit code
 * (the reason printed). */
static int load_world(struct ctx *c, const char *what, const struct trace_assume *as,
		      struct trace_world *w)
{
	struct store *s;
	char err[512];
	int rc = EXIT_INPUT, r;

	memset(w, 0, sizeof(*w));
	if (!(s = open_store(c, false, &rc)))
		return rc;
	r = trace_world_load(s, as, w, err, sizeof(err));
	store_close(s);
	if (r) {
		fprintf(stderr, "dfwctl: %s: %s\n", what, err);
		trace_world_free(w);
		return r < 0 ? EXIT_UNREACHABLE : EXIT_INPUT;
	}
	return 0;
}

/* After a store write that returned r (tags_write's convention): the
 * reason, or the revision and --wait.  Returns the exit code. */
static int written(struct ctx *c, struct store *s, const char *what, int r, uint64_t rev,
		   const char *err)
{
	if (r) {
		fprintf(stderr, "dfwctl: %s: %s; nothing changed\n", what, err);
		return r == 1 ? EXIT_INPUT : EXIT_UNREACHABLE;
	}
	printf("revision %llu\n", (unsigned long long)rev);
	fflush(stdout);
	return c->wait ? wait_realized(c, s, rev) : EXIT_OK;
}

static int cmd_hosts(struct ctx *c)
{
	struct host_list l = { 0 };
	struct store *s;
	struct out o;
	char err[512];
	int rc = EXIT_INPUT;
	time_t now = time(NULL);

	if (c->argc) {
		fprintf(stderr, "usage: dfwctl hosts (no arguments)\n");
		return EXIT_INPUT;
	}
	if (!(s = open_store(c, false, &rc)))
		return rc;
	if (hosts_read(s, &l, err, sizeof(err)) < 0) {
		fprintf(stderr, "dfwctl: %s\n", err);
		store_close(s);
		return EXIT_UNREACHABLE;
	}
	out_init(&o, stdout, c->json);
	out_arr_start(&o, NULL);
	for (size_t i = 0; i < l.n; i++) {
		const struct host_row *r = &l.v[i];

		out_obj_start(&o, NULL);
		out_str(&o, "host", r->name);
		out_bool(&o, "alive", r->alive);
		out_u64(&o, "revision", r->rev);
		out_u64(&o, "vnics", r->vnics);
		out_bool(&o, "loaded", r->loaded);
		out_u64(&o, "updated", r->updated);
		out_u64(&o, "age_s", r->updated && (uint64_t)now > r->updated ? (uint64_t)now - r->updated : 0);
		out_str(&o, "last_error", r->error[0] ? r->error : "none");
		out_obj_end(&o);
	}
	out_arr_end(&o);
	out_finish(&o);
	hosts_free(&l);
	store_close(s);
	return EXIT_OK;
}

static int cmd_place(struct ctx *c)
{
	struct store *s = NULL;
	char err[512];
	uint64_t rev;
	int rc = EXIT_INPUT, r;
	bool changed;

	if (c->argc != 2) {
		fprintf(stderr, "usage: dfwctl place [--wait[=TIMEOUT]] VM HOST\n");
		return EXIT_INPUT;
	}
	if (!(s = open_store(c, false, &rc)))
		return rc;
	r = placement_write(s, c->argv[0], c->argv[1], &changed, &rev, err, sizeof(err));
	if (!r)
		printf(changed ? "placed %s on %s\n" : "%s is placed on %s already; nothing changed\n",
		       c->argv[0], c->argv[1]);
	rc = written(c, s, "place", r, rev, err);
	store_close(s);
	return rc;
}

/* Warnings (shadowed rules and the like) on stderr; they do not fail.
 * Reject gets a note: on a bridged path the kernel routes its answer in
 * the hypervisor's namespace (docs/DATAPLANE.md). */
static void print_warnings(const struct dfw_policy *p)
{
	struct diag w = { 0 };
	const struct dfw_rule *rej = NULL;
	char which[32];

	policy_warnings(p, &w);
	print_diag(&w);
	diag_free(&w);
	for (size_t i = 0; i < p->nrules && !rej; i++)
		if (p->rules[i].action == ACT_REJECT && !p->rules[i].disabled)
			rej = &p->rules[i];
	if (!rej && p->default_action != ACT_REJECT)
		return;
	if (rej)
		snprintf(which, sizeof(which), "rule %u", rej->id);
	fprintf(stderr, "%s:%d: note: reject (%s) answers bridged traffic only where the hypervisor "
		"has a route back to the client (an address or route on the bridge); elsewhere the "
		"kernel cannot send the TCP reset or ICMP error, and the packet is dropped\n",
		p->file, rej ? rej->line : 0, rej ? which : "the default rule");
}

/* Asks dfwd what applying path would change on its host, with the kernel
 * checking the very batch apply would send. */
static int plan_check(struct ctx *c, const char *path)
{
	char *abs = realpath(path, NULL);
	int rc;

	if (!abs) {
		fprintf(stderr, "dfwctl: %s: %s\n", path, strerror(errno));
		return EXIT_INPUT;
	}
	if (!safe_word(abs)) {
		fprintf(stderr, "dfwctl: plan: the path '%s' holds spaces; dfwd cannot be told it\n", abs);
		free(abs);
		return EXIT_INPUT;
	}
	rc = ask_daemon(c, "plan", abs);
	free(abs);
	return rc;
}

static int cmd_validate(struct ctx *c)
{
	struct diag d = { 0 };
	struct dfw_policy *p;

	if (c->argc != 1) {
		fprintf(stderr, "usage: dfwctl validate FILE\n");
		return EXIT_INPUT;
	}
	p = policy_load(c->argv[0], NULL, &d);
	if (!p) {
		print_diag(&d);
		fprintf(stderr, "%s: %zu error(s); nothing applied\n", c->argv[0], d.n);
		diag_free(&d);
		return EXIT_INPUT;
	}
	print_warnings(p);
	printf("%s: ok: %zu VM(s), %zu group(s), %zu rule(s), %zu tag(s)\n", c->argv[0],
	       p->inv.nvms, p->inv.ngroups, p->nrules, p->tags.n);
	policy_free(p);
	return EXIT_OK;
}

static int cmd_apply(struct ctx *c)
{
	struct diag d = { 0 };
	struct dfw_policy *p;
	struct store *s = NULL;
	char *text = NULL, err[512];
	uint64_t rev;
	int rc = EXIT_INPUT;

	if (c->argc != 1) {
		fprintf(stderr, "usage: dfwctl apply [--check] [--wait[=TIMEOUT]] FILE\n");
		return EXIT_INPUT;
	}
	p = policy_load(c->argv[0], &text, &d);
	if (!p) {
		print_diag(&d);
		fprintf(stderr, "%s: %zu error(s); nothing applied, the running policy stays in force\n",
			c->argv[0], d.n);
		goto out;
	}
	print_warnings(p);
	if (c->check) {
		printf("%s: valid; --check: nothing written; what it would change on this host:\n",
		       c->argv[0]);
		fflush(stdout);
		rc = plan_check(c, c->argv[0]);
		goto out;
	}
	if (!(s = open_store(c, true, &rc)))
		goto out;
	{
		struct store_op ops[] = {
			{ STORE_PUT, "policy", text },
			{ STORE_PUT, "policy-file", c->argv[0] },
		};

		if (store_txn(s, ops, ARRAY_SIZE(ops), NULL, NULL, &rev, err, sizeof(err)) != 0) {
			fprintf(stderr, "dfwctl: %s\n", err);
			rc = EXIT_UNREACHABLE;
			goto out;
		}
	}
	printf("applied %s as revision %llu (%zu VMs, %zu groups, %zu rules)\n", c->argv[0],
	       (unsigned long long)rev, p->inv.nvms, p->inv.ngroups, p->nrules);
	fflush(stdout);
	rc = c->wait ? wait_realized(c, s, rev) : EXIT_OK;
out:
	diag_free(&d);
	policy_free(p);
	free(text);
	store_close(s);
	return rc;
}

static int tag_common(struct ctx *c, bool add)
{
	char (*names)[TAG_KEY_MAX] = NULL;
	struct store *s = NULL;
	bool *changed = NULL, any = false;
	char err[512];
	uint64_t rev;
	int rc = EXIT_INPUT, r;

	if (c->argc < 2) {
		fprintf(stderr, "usage: dfwctl %s [--wait[=TIMEOUT]] VM TAG...\n", add ? "tag" : "untag");
		return EXIT_INPUT;
	}
	if (!(s = open_store(c, false, &rc)))
		goto out;
	names = xcalloc((size_t)c->argc, sizeof(*names));
	changed = xcalloc((size_t)c->argc, sizeof(*changed));
	r = tags_write(s, c->argv[0], c->argv + 1, (size_t)c->argc - 1, add, names, changed,
		       &rev, err, sizeof(err));
	for (int i = 0; !r && i < c->argc - 1; i++) {
		bool again = false;

		for (int j = 0; j < i; j++) /* the same tag named twice: said once */
			again |= !strcasecmp(names[j], names[i]);
		if (again)
			continue;
		if (changed[i])
			printf("%s %s %s\n", add ? "tagged" : "untagged", c->argv[0], names[i]);
		else
			printf("%s %s tag %s\n", c->argv[0], add ? "already has" : "has no",
			       names[i]);
		any |= changed[i];
	}
	if (!r && !any)
		printf("nothing changed\n");
	rc = written(c, s, add ? "tag" : "untag", r, rev, err);
out:
	store_close(s);
	free(names);
	free(changed);
	return rc;
}

static int cmd_tag(struct ctx *c) { return tag_common(c, true); }
static int cmd_untag(struct ctx *c) { return tag_common(c, false); }

struct tag_list {
	struct out *o;
	char vm[256];
	bool open;
};

static int list_tag(void *arg, const char *key, const char *value)
{
	struct tag_list *l = arg;
	const char *p = key + 4, *slash = strchr(p, '/');

	if (!slash || (size_t)(slash - p) >= sizeof(l->vm))
		return 0;
	if (!l->open || strncmp(l->vm, p, (size_t)(slash - p)) || l->vm[slash - p]) {
		if (l->open) {
			out_arr_end(l->o);
			out_obj_end(l->o);
		}
		memcpy(l->vm, p, (size_t)(slash - p));
		l->vm[slash - p] = '\0';
		out_obj_start(l->o, NULL);
		out_str(l->o, "vm", l->vm);
		out_arr_start(l->o, "tags");
		l->open = true;
	}
	out_str(l->o, NULL, slash + 1);
	return 0;
}

static int cmd_tags(struct ctx *c)
{
	struct store *s;
	struct out o;
	struct tag_list l = { .o = &o };
	char prefix[300], err[512];
	uint64_t rev;
	int rc = EXIT_INPUT;

	if (c->argc > 1) {
		fprintf(stderr, "usage: dfwctl tags [VM]\n");
		return EXIT_INPUT;
	}
	if (!(s = open_store(c, false, &rc)))
		return rc;
	if (c->argc && (rc = tags_vm_known(s, c->argv[0], err, sizeof(err)))) {
		fprintf(stderr, "dfwctl: %s\n", err);
		store_close(s);
		return rc < 0 ? EXIT_UNREACHABLE : EXIT_INPUT;
	}
	snprintf(prefix, sizeof(prefix), "tag/%s%s", c->argc ? c->argv[0] : "", c->argc ? "/" : "");
	str_lower(prefix);
	out_init(&o, stdout, c->json);
	out_arr_start(&o, NULL);
	if (store_scan(s, prefix, list_tag, &l, &rev, err, sizeof(err)) < 0) {
		fprintf(stderr, "dfwctl: %s\n", err);
		store_close(s);
		return EXIT_UNREACHABLE;
	}
	if (l.open) {
		out_arr_end(&o);
		out_obj_end(&o);
	}
	out_arr_end(&o);
	out_finish(&o);
	store_close(s);
	return EXIT_OK;
}

/* A closed peer is an error (EPIPE), not a SIGPIPE. */
static int send_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

/* Sends one request line to dfwd, "VERB" or "VERB ARG", and copies the
 * answer to stdout; the answer's status is the exit status. */
static int ask_daemon(struct ctx *c, const char *verb, const char *arg)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tmo = { ANSWER_TIMEOUT_S, 0 };
	char line[1024], req[CONTROL_REQ_MAX + 2];
	const char *msg;
	FILE *f = NULL;
	uint64_t want = 0, got = 0;
	int fd, rc, len, sized;

	len = snprintf(req, sizeof(req) - 1, "%s%s%s%s", c->json ? "json " : "", verb, arg ? " " : "",
		       arg ? arg : "");
	if (len < 0 || len > CONTROL_REQ_MAX) {
		fprintf(stderr, "dfwctl: %s: the request is longer than dfwd takes (%d bytes)\n", verb,
			CONTROL_REQ_MAX);
		return EXIT_INPUT;
	}
	if (strlen(c->socket) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "dfwctl: socket path too long\n");
		return EXIT_INPUT;
	}
	strcpy(sun.sun_path, c->socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo)) < 0 ||
	    !(f = fdopen(fd, "r"))) {
		fprintf(stderr, "dfwctl: cannot reach dfwd at %s: %s\n", c->socket, strerror(errno));
		if (fd >= 0)
			close(fd);
		return EXIT_UNREACHABLE;
	}
	req[len] = '\n'; /* over the NUL: send() needs none */
	if (send_all(fd, req, (size_t)len + 1) < 0 || shutdown(fd, SHUT_WR) < 0) {
		fprintf(stderr, "dfwctl: cannot ask dfwd at %s: %s\n", c->socket, strerror(errno));
		fclose(f);
		return EXIT_UNREACHABLE;
	}
	if (!fgets(line, sizeof(line), f)) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			fprintf(stderr, "dfwctl: dfwd did not answer within %d s\n", ANSWER_TIMEOUT_S);
		else
			fprintf(stderr, "dfwctl: dfwd closed the connection without an answer\n");
		fclose(f);
		return EXIT_UNREACHABLE;
	}
	rc = control_answer_status(line, &msg);
	if (rc != CONTROL_OK) {
		fprintf(stderr, "dfwctl: %s", msg);
	} else {
		size_t n;

		sized = control_answer_len(line, &want);
		while ((n = fread(line, 1, sizeof(line), f)) > 0) {
			fwrite(line, 1, n, stdout);
			got += n;
		}
		if (ferror(f)) {
			fprintf(stderr, "dfwctl: the answer broke off: %s\n", strerror(errno));
			rc = EXIT_UNREACHABLE;
		} else if (sized && got != want) {
			/* A clean end all the same: dfwd dropped an answer not
			 * taken in time (a pager), or went away. */
			fprintf(stderr, "dfwctl: the answer broke off after %llu of its %llu bytes "
				"(dfwd drops an answer not read within %d s)\n",
				(unsigned long long)got, (unsigned long long)want,
				CONTROL_WRITE_MS / 1000);
			rc = EXIT_UNREACHABLE;
		}
	}
	fclose(f);
	return rc;
}

/* A request without arguments. */
static int ask_plain(struct ctx *c, const char *req)
{
	if (c->argc) {
		fprintf(stderr, "usage: dfwctl %s (no arguments)\n", req);
		return EXIT_INPUT;
	}
	return ask_daemon(c, req, NULL);
}

static int cmd_status(struct ctx *c)
{
	return ask_plain(c, "status");
}

static int cmd_threats(struct ctx *c)
{
	return ask_plain(c, "threats");
}

static bool safe_word(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= ' ')
			return false;
	return true;
}

static int cmd_groups(struct ctx *c)
{
	if (c->argc > 1 || (c->argc && !safe_word(c->argv[0]))) {
		fprintf(stderr, "usage: dfwctl groups [GROUP]\n");
		return EXIT_INPUT;
	}
	return ask_daemon(c, "groups", c->argc ? c->argv[0] : NULL);
}

static int cmd_rules(struct ctx *c)
{
	if (c->argc != 1 || !safe_word(c->argv[0])) {
		fprintf(stderr, "usage: dfwctl rules VM\n");
		return EXIT_INPUT;
	}
	return ask_daemon(c, "rules", c->argv[0]);
}


static int cmd_plan(struct ctx *c)
{
	struct diag d = { 0 };
	struct dfw_policy *p;

	if (c->argc != 1) {
		fprintf(stderr, "usage: dfwctl plan FILE\n");
		return EXIT_INPUT;
	}
	if (!(p = policy_load(c->argv[0], NULL, &d))) {
		print_diag(&d);
		fprintf(stderr, "%s: %zu error(s); nothing planned\n", c->argv[0], d.n);
		diag_free(&d);
		return EXIT_INPUT;
	}
	print_warnings(p);
	policy_free(p);
	return plan_check(c, c->argv[0]);
}

static int cmd_counters(struct ctx *c)
{
	if (c->argc || (c->rule && !safe_word(c->rule))) {
		fprintf(stderr, "usage: dfwctl counters [--rule ID]\n");
		return EXIT_INPUT;
	}
	return ask_daemon(c, "counters", c->rule);
}

/* --- trace ------------------------------------------------------------------ */

/* The first packet of a connection on service svc (tcp/443, udp/53,
 * icmp/echo-request, icmp = an echo request, proto/47). */
static int trace_service(const char *svc, uint8_t family, struct trace_pkt *pk, char *err,
			 size_t errlen)
{
	struct dfw_service s;
	char why[256];
	int r = service_parse(svc, &s, why, sizeof(why));

	if (r < 0 || r == 1) {
		snprintf(err, errlen, "service '%s': %s", svc,
			 r < 0 ? why : "trace needs one service, not any");
		return 1;
	}
	/* Plain "icmp" is a ping in either family, as dfw-lab probe sends it. */
	if (!strcasecmp(svc, "icmp") && family == AF_INET6)
		s.proto = IPPROTO_ICMPV6;
	if ((s.proto == IPPROTO_ICMP && family == AF_INET6) ||
	    (s.proto == IPPROTO_ICMPV6 && family == AF_INET)) {
		snprintf(err, errlen, "service '%s' does not fit %s addresses", svc,
			 family == AF_INET ? "IPv4" : "IPv6");
		return 1;
	}
	if ((s.proto == IPPROTO_TCP || s.proto == IPPROTO_UDP) && (s.lo != s.hi || !s.lo)) {
		snprintf(err, errlen, "service '%s': trace one port (e.g. %s/443), not %s", svc,
			 s.proto == IPPROTO_TCP ? "tcp" : "udp", s.lo ? "a range" : "all of them");
		return 1;
	}
	pk->proto = s.proto;
	pk->dport = s.lo;
	pk->icmp_type = s.icmp_type;
	pk->icmp_code = s.icmp_code < 0 ? 0 : s.icmp_code;
	if ((s.proto == IPPROTO_ICMP || s.proto == IPPROTO_ICMPV6) && s.icmp_type < 0)
		pk->icmp_type = s.proto == IPPROTO_ICMP ? 8 : 128; /* echo request, as ping */
	return 0;
}

static void print_step(struct out *o, const struct dfw_policy *p, const char *key,
		       const struct trace_end *e, const struct trace_step *st)
{
	const struct dfw_rule *r = st->is_default ? NULL : policy_find_rule(p, st->rule_id);

	out_obj_start(o, key);
	out_str(o, "vm", p->inv.vms[e->vm].name);
	out_str(o, "host", p->inv.vms[e->vm].host);
	out_str(o, "vnic", e->port->ifname);
	if (r) {
		out_u64(o, "rule", r->id);
		out_str(o, "name", r->name);
		out_str(o, "category", category_name(r->category));
	} else {
		out_str(o, "rule", "default");
	}
	out_str(o, "verdict", trace_verdict_name(st->verdict));
	out_bool(o, "logged", st->logged);
	if (st->monitor)
		out_str(o, "monitor", "would drop or reject: logged, counted, let through");
	out_obj_end(o);
}

/* Both ends and the family: an address given fixes the family. */
static int trace_ends(struct ctx *c, struct trace_world *w, const char *a, const char *b,
		      struct trace_end *src, struct trace_end *dst, struct trace_pkt *pk,
		      char *err, size_t errlen)
{
	uint8_t fam = c->ipv6 || !strncasecmp(c->argv[2], "icmpv6", 6) ? AF_INET6 : AF_INET;
	struct dfw_addr t;
	const char *why;

	if (addr_parse(a, &t, &why) == 0 || addr_parse(b, &t, &why) == 0) {
		if (c->ipv6 && t.family == AF_INET) {
			snprintf(err, errlen, "--ipv6 with the IPv4 address %s", t.family == AF_INET &&
				 addr_parse(a, &t, &why) == 0 ? a : b);
			return 1;
		}
		fam = t.family;
	}
	if (trace_world_end(w, a, fam, src, &pk->src, err, errlen) ||
	    trace_world_end(w, b, fam, dst, &pk->dst, err, errlen))
		return 1;
	if (pk->src.family != pk->dst.family) {
		snprintf(err, errlen, "%s and %s are of different address families", a, b);
		return 1;
	}
	if (src->vm >= 0 && src->vm == dst->vm) {
		snprintf(err, errlen, "source and destination are both VM %s", w->p->inv.vms[src->vm].name);
		return 1;
	}
	if (src->vm < 0 && dst->vm < 0) {
		snprintf(err, errlen, "neither %s nor %s is a VM of the policy: no vNIC sees that traffic",
			 a, b);
		return 1;
	}
	return 0;
}

static void print_trace(struct out *o, const struct trace_world *w, const char *svc,
			const struct trace_end *src, const struct trace_end *dst,
			const struct trace_pkt *pk, const struct trace_result *res)
{
	char buf[64];

	out_obj_start(o, NULL);
	addr_format(&pk->src, buf, sizeof(buf));
	out_strf(o, "src", "%s%s%s", src->vm >= 0 ? w->p->inv.vms[src->vm].name : "", src->vm >= 0 ? " " : "", buf);
	addr_format(&pk->dst, buf, sizeof(buf));
	out_strf(o, "dst", "%s%s%s", dst->vm >= 0 ? w->p->inv.vms[dst->vm].name : "", dst->vm >= 0 ? " " : "", buf);
	out_str(o, "service", svc);
	out_u64(o, "revision", w->rev);
	if (res->out.applies)
		print_step(o, w->p, "out", src, &res->out);
	if (res->in.applies)
		print_step(o, w->p, "in", dst, &res->in);
	out_str(o, "decided_by", res->decided_by);
	if (res->note[0])
		out_str(o, "note", res->note);
	out_str(o, "verdict", trace_verdict_name(res->verdict));
	out_obj_end(o);
}

/* Every ordered pair of VMs on each of a list of services, as the JSON of
 * `dfw-lab matrix --json`: {"src": {"dst": ["tcp/443", ...]}}, the
 * services allowed; pairs without an address of the family left out. */
static int trace_matrix(struct ctx *c, struct trace_world *w)
{
	uint8_t fam = c->ipv6 ? AF_INET6 : AF_INET;
	struct strv svcs = { 0 };
	struct trace_pkt *pk;
	struct trace_end *ends = NULL;
	struct dfw_addr *addrs = NULL;
	bool *has = NULL;
	uint64_t now;
	size_t n;
	struct out o;
	char err[512];
	int rc = EXIT_OK;

	strv_split(&svcs, c->matrix);
	pk = xcalloc(svcs.n + 1, sizeof(*pk));
	if (!svcs.n) {
		fprintf(stderr, "dfwctl: trace --matrix '%s': no service (e.g. tcp/443,udp/53,icmp)\n",
			c->matrix);
		rc = EXIT_INPUT;
		goto out;
	}
	for (size_t k = 0; k < svcs.n; k++) {
		if (trace_service(svcs.v[k], fam, &pk[k], err, sizeof(err))) {
			fprintf(stderr, "dfwctl: trace --matrix: %s\n", err);
			rc = EXIT_INPUT;
			goto out;
		}
	}
	/* Each VM's end once (its host's plan, its port, its address); a VM
	 * without an address of the family is left out. */
	n = w->p->inv.nvms;
	ends = xcalloc(n + 1, sizeof(*ends));
	addrs = xcalloc(n + 1, sizeof(*addrs));
	has = xcalloc(n + 1, sizeof(*has));
	for (size_t i = 0; i < n; i++)
		has[i] = !trace_world_end(w, w->p->inv.vms[i].name, fam, &ends[i], &addrs[i], err,
					  sizeof(err));
	now = wall_ms();
	out_init(&o, stdout, c->json);
	out_obj_start(&o, NULL);
	for (size_t i = 0; i < n; i++) {
		out_obj_start(&o, w->p->inv.vms[i].name);
		for (size_t j = 0; j < n; j++) {
			if (i == j || !has[i] || !has[j])
				continue;
			out_arr_start(&o, w->p->inv.vms[j].name);
			for (size_t k = 0; k < svcs.n; k++) {
				struct trace_result res;

				pk[k].src = addrs[i];
				pk[k].dst = addrs[j];
				trace_path(w->p, w->e, w->blocks, w->nblocks, now, &ends[i], &ends[j], &pk[k],
					   &res);
				if (res.verdict == TV_ALLOW)
					out_str(&o, NULL, svcs.v[k]);
			}
			out_arr_end(&o);
		}
		out_obj_end(&o);
	}
	out_obj_end(&o);
	out_finish(&o);
out:
	free(ends);
	free(addrs);
	free(has);
	free(pk);
	strv_free(&svcs);
	return rc;
}

static int cmd_trace(struct ctx *c)
{
	struct trace_assume as = { (const char *const *)c->assume.v, c->assume.n,
				   (const char *const *)c->unassume.v, c->unassume.n };
	struct trace_world w;
	struct trace_end src, dst;
	struct trace_pkt pk = { 0 };
	struct trace_result res;
	struct out o;
	char err[512];
	int rc;

	if (c->matrix ? c->argc != 0 : c->argc != 3) {
		fprintf(stderr, "usage: dfwctl trace SRC DST SERVICE [--assume-tag VM=TAG]... [--assume-untag VM=TAG]... [--ipv6]\n"
				"       dfwctl trace --matrix SERVICE,... [--assume-tag VM=TAG]... [--ipv6]\n");
		return EXIT_INPUT;
	}
	if ((rc = load_world(c, "trace", &as, &w)))
		return rc;
	if (c->matrix) {
		rc = trace_matrix(c, &w);
	} else if (trace_ends(c, &w, c->argv[0], c->argv[1], &src, &dst, &pk, err, sizeof(err)) ||
		   trace_service(c->argv[2], pk.src.family, &pk, err, sizeof(err))) {
		fprintf(stderr, "dfwctl: trace: %s\n", err);
		rc = EXIT_INPUT;
	} else {
		trace_path(w.p, w.e, w.blocks, w.nblocks, wall_ms(), &src, &dst, &pk, &res);
		out_init(&o, stdout, c->json);
		print_trace(&o, &w, c->argv[2], &src, &dst, &pk, &res);
		out_finish(&o);
	}
	trace_world_free(&w);
	return rc;
}

/* --- monitor mode, blocks, learned addresses --------------------------------------- */

static void print_modes(struct out *o, const struct trace_world *w)
{
	out_obj_start(o, NULL);
	out_arr_start(o, "categories");
	for (int k = 0; k < CAT_COUNT; k++) {
		bool all = true, any = false;

		for (size_t i = 0; i < w->p->nrules; i++) {
			if (w->p->rules[i].category != (enum dfw_category)k)
				continue;
			any = true;
			all &= w->p->rules[i].monitor;
		}
		out_obj_start(o, NULL);
		out_str(o, "category", category_name((enum dfw_category)k));
		out_str(o, "mode", any && all ? "monitor" : "enforce");
		out_obj_end(o);
	}
	out_arr_end(o);
	/* The drop and reject rules in monitor mode: allow rules are the
	 * same in both modes. */
	out_arr_start(o, "monitored_rules");
	for (size_t i = 0; i < w->p->nrules; i++)
		if (w->p->rules[i].monitor && w->p->rules[i].action != ACT_ALLOW)
			out_u64(o, NULL, w->p->rules[i].id);
	out_arr_end(o);
	out_obj_end(o);
}

static int cmd_mode(struct ctx *c)
{
	uint32_t *ids = NULL;
	struct store *s;
	char err[512];
	uint64_t rev;
	int rc = EXIT_INPUT, r;
	bool monitor, changed;

	if (!c->argc && !c->categories.n && !c->all) {
		struct trace_world w;
		struct out o;

		if (c->wait) {
			fprintf(stderr, "dfwctl: mode: --wait goes with a change, not with showing the modes\n");
			return EXIT_INPUT;
		}
		if ((rc = load_world(c, "mode", NULL, &w)))
			return rc;
		out_init(&o, stdout, c->json);
		print_modes(&o, &w);
		out_finish(&o);
		trace_world_free(&w);
		return EXIT_OK;
	}
	if (!c->argc || (strcmp(c->argv[0], "monitor") && strcmp(c->argv[0], "enforce")) ||
	    (c->argc == 1 && !c->categories.n && !c->all) ||
	    (c->all && (c->argc > 1 || c->categories.n || strcmp(c->argv[0], "enforce")))) {
		fprintf(stderr, "usage: dfwctl mode                         (show)\n"
				"       dfwctl mode monitor|enforce [--category NAME]... [RULE-ID]...\n"
				"       dfwctl mode enforce --all\n");
		return EXIT_INPUT;
	}
	monitor = !strcmp(c->argv[0], "monitor");
	ids = xcalloc((size_t)c->argc, sizeof(*ids));
	for (int i = 1; i < c->argc; i++) {
		uint64_t v;

		if (parse_u64(c->argv[i], UINT32_MAX, &v) < 0 || !v) {
			fprintf(stderr, "dfwctl: mode: '%s' is not a rule id (1-4294967295)\n", c->argv[i]);
			free(ids);
			return EXIT_INPUT;
		}
		ids[i - 1] = (uint32_t)v;
	}
	if (!(s = open_store(c, false, &rc))) {
		free(ids);
		return rc;
	}
	r = modes_write(s, monitor, c->categories.v, c->categories.n, ids, (size_t)c->argc - 1,
			c->all, &changed, &rev, err, sizeof(err));
	if (!r)
		printf("%s: %s%zu categor%s, %d rule(s)%s\n", monitor ? "monitor" : "enforce",
		       c->all ? "all modes cleared; " : "", c->categories.n,
		       c->categories.n == 1 ? "y" : "ies", c->argc - 1,
		       changed ? "" : "; so already, nothing changed");
	rc = written(c, s, "mode", r, rev, err);
	if (!r) {
		/* What holds now: a rule stays monitored while its category is. */
		struct trace_world w;
		struct out o;

		if (load_world(c, "mode", NULL, &w) == 0) {
			printf("now:\n");
			out_init(&o, stdout, false);
			print_modes(&o, &w);
			out_finish(&o);
			trace_world_free(&w);
		}
	}
	store_close(s);
	free(ids);
	return rc;
}

static int parse_block_addr(const char *text, struct dfw_addr *a)
{
	const char *why = NULL;

	if (addr_parse(text, a, &why) < 0 || a->plen != (a->family == AF_INET ? 32 : 128)) {
		fprintf(stderr, "dfwctl: '%s' is not a host address%s%s\n", text, why ? ": " : "",
			why ? why : " (a prefix cannot be blocked)");
		return -1;
	}
	return 0;
}

static int cmd_block(struct ctx *c)
{
	struct dfw_addr a;
	struct store *s;
	uint64_t ms, rev;
	char err[512];
	int rc = EXIT_INPUT, r;

	if (c->argc != 1 || !c->for_) {
		fprintf(stderr, "usage: dfwctl block IP --for DURATION [--scope GROUP]\n");
		return EXIT_INPUT;
	}
	if (parse_block_addr(c->argv[0], &a) < 0)
		return EXIT_INPUT;
	if (parse_duration_ms(c->for_, &ms) < 0 || ms < 1000 || ms > BLOCK_MAX_MS) {
		fprintf(stderr, "dfwctl: block --for '%s': a duration from 1s to 30d (e.g. 90s, 10m, 2h)\n",
			c->for_);
		return EXIT_INPUT;
	}
	if (!(s = open_store(c, false, &rc)))
		return rc;
	r = block_write(s, &a, c->scope, wall_ms() + ms, &rev, err, sizeof(err));
	if (!r)
		printf("blocked %s for %s%s%s\n", c->argv[0], c->for_,
		       c->scope ? " at the vNICs of " : " everywhere", c->scope ? c->scope : "");
	rc = written(c, s, "block", r, rev, err);
	store_close(s);
	return rc;
}

static int cmd_unblock(struct ctx *c)
{
	struct dfw_addr a;
	struct store *s;
	uint64_t rev;
	char err[512];
	int rc = EXIT_INPUT, r;

	if (c->argc != 1) {
		fprintf(stderr, "usage: dfwctl unblock IP [--scope GROUP]\n");
		return EXIT_INPUT;
	}
	if (parse_block_addr(c->argv[0], &a) < 0)
		return EXIT_INPUT;
	if (!(s = open_store(c, false, &rc)))
		return rc;
	r = block_delete(s, &a, c->scope, &rev, err, sizeof(err));
	if (!r)
		printf("unblocked %s\n", c->argv[0]);
	rc = written(c, s, "unblock", r, rev, err);
	store_close(s);
	return rc;
}

static int cmd_blocks(struct ctx *c)
{
	struct trace_world w;
	struct out o;
	char buf[64];
	uint64_t now = wall_ms();
	int rc;

	if (c->argc) {
		fprintf(stderr, "usage: dfwctl blocks (no arguments)\n");
		return EXIT_INPUT;
	}
	if ((rc = load_world(c, "blocks", NULL, &w)))
		return rc;
	out_init(&o, stdout, c->json);
	out_arr_start(&o, NULL);
	for (size_t i = 0; i < w.nblocks; i++) {
		const struct dfw_block *b = &w.blocks[i];

		if (b->until_ms <= now)
			continue; /* the kernel dropped it; the next block write removes the key */
		out_obj_start(&o, NULL);
		addr_format(&b->addr, buf, sizeof(buf));
		out_str(&o, "address", buf);
		out_str(&o, "scope", b->group >= 0 ? w.p->inv.groups[b->group].name : "everywhere");
		out_u64(&o, "left_s", (b->until_ms - now + 999) / 1000);
		out_obj_end(&o);
	}
	out_arr_end(&o);
	out_finish(&o);
	trace_world_free(&w);
	return EXIT_OK;
}

static int cmd_learned(struct ctx *c)
{
	struct trace_world w;
	struct store *s;
	struct out o;
	char err[512], buf[64];
	uint64_t rev;
	int rc = EXIT_INPUT, r;

	if (c->argc == 2 && !strcmp(c->argv[0], "forget")) {
		if (!(s = open_store(c, false, &rc)))
			return rc;
		r = learned_forget(s, c->argv[1], &rev, err, sizeof(err));
		if (!r)
			printf("forgot the learned addresses of %s: the next ones it uses are learned\n",
			       c->argv[1]);
		rc = written(c, s, "learned forget", r, rev, err);
		store_close(s);
		return rc;
	}
	if (c->argc) {
		fprintf(stderr, "usage: dfwctl learned [forget VM]\n");
		return EXIT_INPUT;
	}
	if (c->wait) {
		fprintf(stderr, "dfwctl: learned: --wait goes with 'learned forget VM'\n");
		return EXIT_INPUT;
	}
	if ((rc = load_world(c, "learned", NULL, &w)))
		return rc;
	out_init(&o, stdout, c->json);
	out_arr_start(&o, NULL);
	for (size_t i = 0; i < w.p->inv.nvms; i++) {
		const struct vm *v = &w.p->inv.vms[i];

		if (!v->learn)
			continue;
		out_obj_start(&o, NULL);
		out_str(&o, "vm", v->name);
		out_arr_start(&o, "locked");
		for (size_t j = 0; j < v->naddrs; j++) {
			addr_format(&v->addrs[j], buf, sizeof(buf));
			out_str(&o, NULL, buf);
		}
		out_arr_end(&o);
		out_obj_end(&o);
	}
	out_arr_end(&o);
	out_finish(&o);
	trace_world_free(&w);
	return EXIT_OK;
}

static const struct command commands[] = {
	{ "validate", "FILE", "check a policy file; change nothing", cmd_validate },
	{ "apply", "[--check] FILE", "validate and publish a policy as one store revision", cmd_apply },
	{ "tag", "VM TAG...", "put security tags on a VM", cmd_tag },
	{ "untag", "VM TAG...", "remove security tags from a VM", cmd_untag },
	{ "tags", "[VM]", "list the tags in the store", cmd_tags },
	{ "place", "VM HOST", "record that a VM now runs on HOST (migration)", cmd_place },
	{ "hosts", "", "every host agent: alive, realized revision, vNICs, last update", cmd_hosts },
	{ "status", "", "what dfwd on this host has realized", cmd_status },
	{ "groups", "[GROUP]", "group members as dfwd sees them", cmd_groups },
	{ "rules", "VM", "the rules in force at a VM's vNIC, with hit counts", cmd_rules },
	{ "threats", "", "network threat detector: mode, scans reported, addresses blocked (time left)",
	  cmd_threats },
	{ "plan", "FILE", "what applying FILE would change on this host (rules, groups,\n"
	  "                             members, vNICs), the batch checked by the kernel", cmd_plan },
	{ "counters", "[--rule ID]", "hits per rule on this host, per direction", cmd_counters },
	{ "trace", "SRC DST SERVICE", "what the policy does with a new connection, without a packet\n"
	  "                             (--assume-tag VM=TAG, --assume-untag VM=TAG, --ipv6;\n"
	  "                             --matrix SERVICE,...: every pair of VMs)", cmd_trace },
	{ "mode", "[monitor|enforce ...]", "monitor mode per category (--category NAME) or rule id;\n"
	  "                             'mode enforce --all' clears; no argument: show", cmd_mode },
	{ "block", "IP --for DUR", "block an address (--scope GROUP: at that group's vNICs only);\n"
	  "                             the kernel expires it", cmd_block },
	{ "unblock", "IP", "lift a block (--scope GROUP for a scoped one)", cmd_unblock },
	{ "blocks", "", "the operator blocks in force, with time left", cmd_blocks },
	{ "learned", "[forget VM]", "addresses learned on first use (addresses = learn); forget\n"
	  "                             unlocks a VM's", cmd_learned },
	{ "help", "", "this text", cmd_help },
};

static int cmd_help(struct ctx *c)
{
	printf("usage: dfwctl [--store URI] [--socket PATH] [--json] COMMAND [ARGS]\n\n");
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		printf("  %-9s %-16s %s\n", commands[i].name, commands[i].args, commands[i].help);
	printf("\n  --store   store URI (env DFW_STORE; default /var/lib/dfw/store.db)\n"
	       "  --socket  dfwd control socket (env DFW_SOCKET; default /run/dfw/dfwd.sock)\n"
	       "  --json    JSON output for read commands\n"
	       "  --wait[=TIMEOUT]  apply, tag, untag, place, mode, block, unblock, learned\n"
	       "            forget: return once every live host agent has realized the\n"
	       "            change (default timeout 30s)\n"
	       "exit: 0 ok, 1 bad usage or input, 2 dataplane failure, 3 store or daemon unreachable\n");
	return EXIT_OK;
}

/* Options of single commands, each with a value: 1 when argv[*i] was
 * one (*i moves past its value; past argc when the value is missing), -1
 * when it takes one value and was given before. */
static int cmd_option(struct ctx *c, char **argv, int argc, int *i)
{
	static const char *const names[] = { "--for", "--scope", "--assume-tag", "--assume-untag",
					     "--category", "--matrix", "--rule" };
	const char **one[] = { &c->for_, &c->scope, NULL, NULL, NULL, &c->matrix, &c->rule };
	size_t k;

	for (k = 0; k < ARRAY_SIZE(names) && strcmp(argv[*i], names[k]); k++)
		;
	if (k == ARRAY_SIZE(names))
		return 0;
	if (one[k] && *one[k])
		return -1;
	if (++*i >= argc)
		return 1;
	if (one[k])
		*one[k] = argv[*i];
	else
		strv_push(k == 2 ? &c->assume : k == 3 ? &c->unassume : &c->categories, argv[*i]);
	return 1;
}

int main(int argc, char **argv)
{
	struct ctx c = {
		.store = getenv("DFW_STORE") ? getenv("DFW_STORE") : "/var/lib/dfw/store.db",
		.socket = getenv("DFW_SOCKET") ? getenv("DFW_SOCKET") : "/run/dfw/dfwd.sock",
		.wait_ms = 30000,
	};
	const struct command *cmd = NULL;
	const char *names[ARRAY_SIZE(commands)], *near;
	int i = 1;

	/* Options may stand before or after the command. */
	char **rest = xcalloc((size_t)argc, sizeof(*rest));
	int nrest = 0, rc;

	for (; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			c.json = true;
		} else if (!strcmp(argv[i], "--check")) {
			c.check = true;
		} else if (!strcmp(argv[i], "--wait") || !strncmp(argv[i], "--wait=", 7)) {
			c.wait = true;
			if (argv[i][6] == '=' && (parse_duration_ms(argv[i] + 7, &c.wait_ms) < 0 ||
						  !c.wait_ms)) {
				fprintf(stderr, "dfwctl: --wait=%s: not a duration (e.g. 500ms, 10s, 2m)\n",
					argv[i] + 7);
				free(rest);
				return EXIT_INPUT;
			}
		} else if ((!strcmp(argv[i], "--store") || !strcmp(argv[i], "--socket"))) {
			if (i + 1 == argc) {
				fprintf(stderr, "dfwctl: %s needs a value\n", argv[i]);
				free(rest);
				return EXIT_INPUT;
			}
			*(!strcmp(argv[i], "--store") ? &c.store : &c.socket) = argv[i + 1];
			i++;
		} else if (!strcmp(argv[i], "--ipv6") || !strcmp(argv[i], "-6")) {
			c.ipv6 = true;
		} else if (!strcmp(argv[i], "--all")) {
			c.all = true;
		} else if ((rc = cmd_option(&c, argv, argc, &i)) != 0) {
			if (rc < 0) {
				fprintf(stderr, "dfwctl: %s given twice; it takes one value\n", argv[i]);
				free(rest);
				return EXIT_INPUT;
			}
			if (i >= argc) {
				fprintf(stderr, "dfwctl: %s needs a value\n", argv[argc - 1]);
				free(rest);
				return EXIT_INPUT;
			}
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			rest[nrest++] = (char *)"help";
		} else if (argv[i][0] == '-' && argv[i][1] == '-') {
			fprintf(stderr, "dfwctl: unknown option '%s'\n", argv[i]);
			free(rest);
			return EXIT_INPUT;
		} else {
			rest[nrest++] = argv[i];
		}
	}
	if (!nrest) {
		cmd_help(&c);
		free(rest);
		return EXIT_INPUT;
	}
	for (size_t k = 0; k < ARRAY_SIZE(commands); k++) {
		names[k] = commands[k].name;
		if (!strcmp(rest[0], commands[k].name))
			cmd = &commands[k];
	}
	if (!cmd) {
		near = nearest_name(rest[0], names, ARRAY_SIZE(commands));
		fprintf(stderr, "dfwctl: unknown command '%s'%s%s%s; see 'dfwctl help'\n", rest[0],
			near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
		free(rest);
		return EXIT_INPUT;
	}
	{
		/* Each command-specific option with the commands it goes with. */
		const struct {
			bool given;
			const char *opt, *with;
			int (*fn[6])(struct ctx *);
		} use[] = {
			{ c.wait, "--wait", "apply, tag, untag, place, mode, block, unblock, learned forget",
			  { cmd_apply, cmd_tag, cmd_untag, cmd_place, cmd_mode, cmd_block } },
			{ c.for_ != NULL, "--for", "block", { cmd_block } },
			{ c.scope != NULL, "--scope", "block and unblock", { cmd_block, cmd_unblock } },
			{ c.assume.n || c.unassume.n || c.matrix, "--assume-tag, --assume-untag and --matrix",
			  "trace", { cmd_trace } },
			{ c.ipv6, "--ipv6", "trace", { cmd_trace } },
			{ c.rule != NULL, "--rule", "counters", { cmd_counters } },
			{ c.check, "--check", "apply", { cmd_apply } },
			{ c.categories.n || c.all, "--category and --all", "mode", { cmd_mode } },
		};

		for (size_t k = 0; k < ARRAY_SIZE(use); k++) {
			bool ok = !use[k].given || (use[k].opt[2] == 'w' && (cmd->fn == cmd_unblock ||
									    cmd->fn == cmd_learned));

			for (size_t f = 0; f < ARRAY_SIZE(use[k].fn) && !ok; f++)
				ok = use[k].fn[f] == cmd->fn;
			if (!ok) {
				fprintf(stderr, "dfwctl: %s goes with %s, not %s\n", use[k].opt,
					use[k].with, cmd->name);
				free(rest);
				strv_free(&c.assume);
				strv_free(&c.unassume);
				strv_free(&c.categories);
				return EXIT_INPUT;
			}
		}
	}
	c.argc = nrest - 1;
	c.argv = rest + 1;
	rc = cmd->fn(&c);
	free(rest);
	strv_free(&c.assume);
	strv_free(&c.unassume);
	strv_free(&c.categories);
	return rc;
}
