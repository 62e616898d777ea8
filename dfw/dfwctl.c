/* dfwctl: writes desired state to the store (apply, tag, untag) and asks the
 * host agent what it realized (status, groups, rules).  One table drives
 * dispatch and help.  Exit: 0 ok, 1 bad usage or input, 2 dataplane
 * failure, 3 store or daemon unreachable. */
#include <errno.h>
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
#include "dfw/hosts.h"
#include "tagger/config.h"
#include "tagger/store.h"
#include "tagger/tags.h"

enum { EXIT_OK = 0, EXIT_INPUT = 1, EXIT_DATAPLANE = 2, EXIT_UNREACHABLE = 3 };

struct ctx {
	const char *store;
	const char *socket;
	bool json;
	bool check;
	bool wait;
	uint64_t wait_ms;
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

static struct store *open_store(const struct ctx *c, bool create, int *rc)
{
	char err[512];
	struct store *s = store_open(c->store, create, err, sizeof(err));

	if (!s) {
		fprintf(stderr, "dfwctl: %s\n", err);
		*rc = EXIT_UNREACHABLE;
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

	if (c->argc != 2) {
		fprintf(stderr, "usage: dfwctl place [--wait[=TIMEOUT]] VM HOST\n");
		return EXIT_INPUT;
	}
	if (!(s = open_store(c, false, &rc)))
		return rc;
	r = placement_write(s, c->argv[0], c->argv[1], &rev, err, sizeof(err));
	if (r != 0) {
		fprintf(stderr, "dfwctl: %s; nothing changed\n", err);
		store_close(s);
		return r == 1 ? EXIT_INPUT : EXIT_UNREACHABLE;
	}
	printf("placed %s on %s\nrevision %llu\n", c->argv[0], c->argv[1], (unsigned long long)rev);
	rc = c->wait ? wait_realized(c, s, rev) : EXIT_OK;
	store_close(s);
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
	if (c->check) {
		printf("%s: valid; --check: nothing written\n", c->argv[0]);
		rc = EXIT_OK;
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
	r = tags_write(s, c->argv[0], c->argv + 1, (size_t)c->argc - 1, add, names, &rev,
		       err, sizeof(err));
	if (r != 0) {
		fprintf(stderr, "dfwctl: %s; nothing changed\n", err);
		rc = r == 1 ? EXIT_INPUT : EXIT_UNREACHABLE;
		goto out;
	}
	for (int i = 0; i < c->argc - 1; i++)
		printf("%s %s %s\n", add ? "tagged" : "untagged", c->argv[0], names[i]);
	printf("revision %llu\n", (unsigned long long)rev);
	fflush(stdout);
	rc = c->wait ? wait_realized(c, s, rev) : EXIT_OK;
out:
	store_close(s);
	free(names);
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

/* Sends one request line to dfwd and copies the answer to stdout. */
static int ask_daemon(struct ctx *c, const char *req)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char line[1024];
	FILE *f;
	int fd, rc = EXIT_OK;

	if (strlen(c->socket) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "dfwctl: socket path too long\n");
		return EXIT_INPUT;
	}
	strcpy(sun.sun_path, c->socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		fprintf(stderr, "dfwctl: cannot reach dfwd at %s: %s\n", c->socket, strerror(errno));
		if (fd >= 0)
			close(fd);
		return EXIT_UNREACHABLE;
	}
	f = fdopen(fd, "r+");
	fprintf(f, "%s%s\n", req, c->json ? " json" : "");
	fflush(f);
	shutdown(fd, SHUT_WR);
	if (!fgets(line, sizeof(line), f)) {
		fprintf(stderr, "dfwctl: dfwd closed the connection without an answer\n");
		rc = EXIT_UNREACHABLE;
	} else if (strncmp(line, "ok", 2)) {
		fprintf(stderr, "dfwctl: %s", line);
		rc = EXIT_INPUT;
	} else {
		size_t n;

		while ((n = fread(line, 1, sizeof(line), f)) > 0)
			fwrite(line, 1, n, stdout);
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
	return ask_daemon(c, req);
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
	char req[300];

	if (c->argc > 1 || (c->argc && !safe_word(c->argv[0]))) {
		fprintf(stderr, "usage: dfwctl groups [GROUP]\n");
		return EXIT_INPUT;
	}
	snprintf(req, sizeof(req), "groups %s", c->argc ? c->argv[0] : "");
	return ask_daemon(c, req);
}

static int cmd_rules(struct ctx *c)
{
	char req[300];

	if (c->argc != 1 || !safe_word(c->argv[0])) {
		fprintf(stderr, "usage: dfwctl rules VM\n");
		return EXIT_INPUT;
	}
	snprintf(req, sizeof(req), "rules %s", c->argv[0]);
	return ask_daemon(c, req);
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
	       "  --wait[=TIMEOUT]  apply, tag, untag, place: return once every live host\n"
	       "            agent has realized the change (default timeout 30s)\n"
	       "exit: 0 ok, 1 bad usage or input, 2 dataplane failure, 3 store or daemon unreachable\n");
	return EXIT_OK;
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
	if (c.wait && cmd->fn != cmd_apply && cmd->fn != cmd_tag && cmd->fn != cmd_untag &&
	    cmd->fn != cmd_place) {
		fprintf(stderr, "dfwctl: --wait goes with apply, tag, untag and place, not %s\n",
			cmd->name);
		free(rest);
		return EXIT_INPUT;
	}
	c.argc = nrest - 1;
	c.argv = rest + 1;
	rc = cmd->fn(&c);
	free(rest);
	return rc;
}
