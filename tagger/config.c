/* Parses and validates the policy INI (docs/CONFIG.md) into struct dfw_policy.
 *
 * One pass indexes every section and key with its file:line and value;
 * lookups search that index.  (iniparser was used at first: its dictionary
 * inserts and lookups scan every entry, which took 2.6 s of 2.9 s for a
 * 10k-VM, 1k-rule policy.)  All errors are collected before failing. */

#include "tagger/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_LINE 1000

struct ini_key {
	char *section; /* lower case, blanks folded */
	char *key;     /* lower case */
	char *value;   /* trimmed; quotes removed; inline comment cut */
	int line;
};

struct ini_sec {
	char *name;
	int line;
};

struct parser {
	const char *file;
	const char *text;   /* as given */
	struct diag *d;
	struct ini_key *keys;
	size_t nkeys, capkeys;
	struct ini_sec *secs;        /* file order */
	struct ini_sec *secs_sorted; /* by name, for lookups */
	size_t nsecs, capsecs;
	size_t nsecs_parse;          /* secs[] without repeated sections */
	size_t capvms, caprules;
	struct dfw_policy *p;
};

static const char *const action_names[] = { "allow", "drop", "reject" };
static const char *const category_names[] = {
	"emergency", "infrastructure", "environment", "application"
};
static const char *const field_names[] = { "tag", "name", "os" };
static const char *const op_names[] = {
	"equals", "not-equals", "contains", "starts-with", "ends-with"
};

static const char *const severity_names[] = { "low", "medium", "high" };
static const char *const nt_mode_names[] = { "off", "monitor", "enforce" };
static const char *const file_action_names[] = { "quarantine", "delete" };

const char *action_name(enum dfw_action a) { return action_names[a]; }
const char *severity_name(enum dfw_severity s) { return severity_names[s]; }
const char *nt_mode_name(enum nt_mode m) { return nt_mode_names[m]; }
const char *category_name(enum dfw_category c) { return category_names[c]; }

const char *dir_name(enum dfw_dir d)
{
	return d == DIR_IN ? "in" : d == DIR_OUT ? "out" : "in-out";
}

const char *nearest_name(const char *s, const char *const *names, size_t n)
{
	const char *best = NULL;
	size_t bestd = (size_t)-1, limit = strlen(s) / 3 + 1;

	for (size_t i = 0; i < n; i++) {
		size_t dist = edit_distance(s, names[i]);

		if (dist < bestd) {
			bestd = dist;
			best = names[i];
		}
	}
	if (limit > 3)
		limit = 3;
	return bestd <= limit ? best : NULL;
}

/* Formats " (did you mean 'x'?)" into buf, or "" when nothing is near. */
static const char *suggest(char *buf, size_t len, const char *s,
			   const char *const *names, size_t n)
{
	const char *near = nearest_name(s, names, n);

	if (near)
		snprintf(buf, len, " (did you mean '%s'?)", near);
	else
		buf[0] = '\0';
	return buf;
}

void policy_unknown(const struct dfw_policy *p, bool group, const char *name, char *buf,
		    size_t len)
{
	size_t n = group ? p->inv.ngroups : p->inv.nvms;
	const char **all = xcalloc(n + 1, sizeof(*all));
	char hint[128];

	for (size_t i = 0; i < n; i++)
		all[i] = group ? p->inv.groups[i].name : p->inv.vms[i].name;
	snprintf(buf, len, "unknown %s '%s'%s", group ? "group" : "VM", name,
		 suggest(hint, sizeof(hint), name, all, n));
	free(all);
}

static int find_word(const char *s, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcasecmp(s, names[i]))
			return (int)i;
	return -1;
}

/* --- the line index ----------------------------------------------------- */

/* Section names with blanks folded: "[vm  a]" and "[vm a]" are one name. */
int severity_parse(const char *s) { return find_word(s, severity_names, SEV_COUNT); }

static void fold_blanks(char *s)
{
	char *out = s;
	bool pending = false;

	for (char *in = s; *in; in++) {
		if (isspace((unsigned char)*in)) {
			pending = out != s;
			continue;
		}
		if (pending)
			*out++ = ' ';
		pending = false;
		*out++ = *in;
	}
	*out = '\0';
}

/* A value: "quoted" or 'quoted' verbatim, otherwise up to an inline
 * comment (';' or '#'), trimmed. */
static char *ini_value(char *v)
{
	char *end;

	v = str_trim(v);
	if ((*v == '"' || *v == '\'') && (end = strchr(v + 1, *v))) {
		*end = '\0';
		return xstrdup(v + 1);
	}
	v[strcspn(v, ";#")] = '\0';
	return xstrdup(str_trim(v));
}

static void index_lines(struct parser *ps)
{
	char sec[MAX_LINE + 1] = "";
	const char *p = ps->text;
	int lineno = 0;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		char buf[MAX_LINE + 1], *line, *eq;

		lineno++;
		if (len > MAX_LINE) {
			diag_add(ps->d, ps->file, lineno, "line longer than %d characters", MAX_LINE);
			goto reject;
		}
		memcpy(buf, p, len);
		buf[len] = '\0';
		line = str_trim(buf);
		if (!*line || *line == ';' || *line == '#')
			goto next;
		if (*line == '[') {
			char *end = strchr(line, ']');

			if (!end || str_trim(end + 1)[0] != '\0') {
				diag_add(ps->d, ps->file, lineno, "malformed section header '%s'", line);
				sec[0] = '\0';
				goto reject;
			}
			*end = '\0';
			snprintf(sec, sizeof(sec), "%s", str_trim(line + 1));
			str_lower(sec);
			fold_blanks(sec);
			grow((void **)&ps->secs, &ps->capsecs, ps->nsecs + 1, sizeof(*ps->secs));
			ps->secs[ps->nsecs++] = (struct ini_sec){ xstrdup(sec), lineno };
			goto next;
		}
		eq = strchr(line, '=');
		if (!eq) {
			diag_add(ps->d, ps->file, lineno, "expected 'key = value', got '%s'", line);
			goto reject;
		}
		if (!sec[0]) {
			diag_add(ps->d, ps->file, lineno, "key outside of any section");
			goto reject;
		}
		if (line[strlen(line) - 1] == '\\') {
			diag_add(ps->d, ps->file, lineno, "line continuation is not supported");
			goto reject;
		}
		*eq = '\0';
		line = str_trim(line);
		str_lower(line);
		grow((void **)&ps->keys, &ps->capkeys, ps->nkeys + 1, sizeof(*ps->keys));
		ps->keys[ps->nkeys++] = (struct ini_key){ xstrdup(sec), xstrdup(line),
							  ini_value(eq + 1), lineno };
		goto next;
reject:
next:
		p += len + (nl ? 1 : 0);
	}
}

/* bsearch comparators ignore the line, so any entry of a name is found. */
static int cmp_key_name(const void *x, const void *y)
{
	const struct ini_key *a = x, *b = y;
	int c = strcmp(a->section, b->section);

	return c ? c : strcmp(a->key, b->key);
}

static int cmp_sec_name(const void *x, const void *y)
{
	return strcmp(((const struct ini_sec *)x)->name, ((const struct ini_sec *)y)->name);
}

static int cmp_key(const void *x, const void *y)
{
	const struct ini_key *a = x, *b = y;
	int c = strcmp(a->section, b->section);

	if (!c)
		c = strcmp(a->key, b->key);
	return c ? c : a->line - b->line;
}

static int cmp_sec(const void *x, const void *y)
{
	const struct ini_sec *a = x, *b = y;
	int c = strcmp(a->name, b->name);

	return c ? c : a->line - b->line;
}

/* Sorts the index for binary search; reports duplicates (the later line). */
static void index_finish(struct parser *ps)
{
	if (ps->nkeys)
		qsort(ps->keys, ps->nkeys, sizeof(*ps->keys), cmp_key);
	ps->secs_sorted = xcalloc(ps->nsecs, sizeof(*ps->secs_sorted));
	if (ps->nsecs) {
		memcpy(ps->secs_sorted, ps->secs, ps->nsecs * sizeof(*ps->secs));
		qsort(ps->secs_sorted, ps->nsecs, sizeof(*ps->secs), cmp_sec);
	}
	for (size_t i = 1; i < ps->nkeys; i++)
		if (!strcmp(ps->keys[i].section, ps->keys[i - 1].section) &&
		    !strcmp(ps->keys[i].key, ps->keys[i - 1].key))
			diag_add(ps->d, ps->file, ps->keys[i].line, "'%s' already set at line %d",
				 ps->keys[i].key, ps->keys[i - 1].line);
	for (size_t i = 1; i < ps->nsecs; i++) {
		size_t first = i - 1;

		if (strcmp(ps->secs_sorted[i].name, ps->secs_sorted[first].name))
			continue;
		while (first && !strcmp(ps->secs_sorted[first - 1].name, ps->secs_sorted[i].name))
			first--;
		diag_add(ps->d, ps->file, ps->secs_sorted[i].line,
			 "section [%s] already defined at line %d",
			 ps->secs_sorted[i].name, ps->secs_sorted[first].line);
		/* Parse a repeated section once: drop the repetition from the
		 * file-order list; its keys stay in the index for the checks). */
		for (size_t j = 0; j < ps->nsecs; j++)
			if (ps->secs[j].line == ps->secs_sorted[i].line)
				ps->secs[j].line = -1;
	}
	{
		size_t out = 0;

		/* Names are shared with secs_sorted, which frees them. */
		for (size_t j = 0; j < ps->nsecs; j++)
			if (ps->secs[j].line >= 0)
				ps->secs[out++] = ps->secs[j];
		ps->nsecs_parse = out;
	}
}

static int key_line(const struct parser *ps, const char *sec, const char *key)
{
	struct ini_key k = { (char *)sec, (char *)key, NULL, 0 }, *hit;

	hit = ps->nkeys ? bsearch(&k, ps->keys, ps->nkeys, sizeof(k), cmp_key_name) : NULL;
	return hit ? hit->line : 0;
}

static int sec_line(const struct parser *ps, const char *sec)
{
	struct ini_sec k = { (char *)sec, 0 }, *hit;

	hit = ps->nsecs ? bsearch(&k, ps->secs_sorted, ps->nsecs, sizeof(k), cmp_sec_name) : NULL;
	return hit ? hit->line : 0;
}

/* Reports keys of sec that are not in allowed, with a suggestion. */
static void check_keys(struct parser *ps, const char *sec,
		       const char *const *allowed, size_t n)
{
	char hint[128];

	size_t lo = 0, hi = ps->nkeys;

	while (lo < hi) { /* first key of the section */
		size_t mid = (lo + hi) / 2;

		if (strcmp(ps->keys[mid].section, sec) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < ps->nkeys && !strcmp(ps->keys[i].section, sec); i++) {
		const struct ini_key *k = &ps->keys[i];

		if (find_word(k->key, allowed, n) >= 0)
			continue;
		diag_add(ps->d, ps->file, k->line, "unknown key '%s' in [%s]%s", k->key,
			 sec, suggest(hint, sizeof(hint), k->key, allowed, n));
	}
}

/* The value of sec:key, or NULL when absent. */
static const char *get(const struct parser *ps, const char *sec, const char *key)
{
	struct ini_key k = { (char *)sec, (char *)key, NULL, 0 }, *hit;

	hit = ps->nkeys ? bsearch(&k, ps->keys, ps->nkeys, sizeof(k), cmp_key_name) : NULL;
	return hit ? hit->value : NULL;
}

#define ERR(ps, sec, key, ...) \
	diag_add((ps)->d, (ps)->file, key_line(ps, sec, key) ?: sec_line(ps, sec), __VA_ARGS__)

static const char *require(struct parser *ps, const char *sec, const char *key)
{
	const char *v = get(ps, sec, key);

	if (!v || !*v) {
		diag_add(ps->d, ps->file, key_line(ps, sec, key) ?: sec_line(ps, sec),
			 "[%s] needs '%s'", sec, key);
		return NULL;
	}
	return v;
}

static bool get_bool(struct parser *ps, const char *sec, const char *key, bool def)
{
	const char *v = get(ps, sec, key);
	bool b = def;

	if (v && parse_bool(v, &b) < 0)
		ERR(ps, sec, key, "%s: '%s' is not yes or no", key, v);
	return b;
}

static int get_word(struct parser *ps, const char *sec, const char *key,
		    const char *const *names, size_t n, int def)
{
	const char *v = get(ps, sec, key);
	char hint[128];
	int i;

	if (!v)
		return def;
	i = find_word(v, names, n);
	if (i < 0)
		ERR(ps, sec, key, "%s: unknown value '%s'%s", key, v,
		    suggest(hint, sizeof(hint), v, names, n));
	return i < 0 ? def : i;
}

/* Names become parts of nftables object names (at most 64 characters with
 * dfw's prefixes), so they are kept short. */
#define NAME_MAX_LEN 48

/* Splits a comma-separated value; empty items are reported and dropped. */
static void split_list(struct parser *ps, const char *sec, const char *key,
		       const char *v, struct strv *out)
{
	struct strv all = { 0 };

	strv_split(&all, v);
	for (size_t i = 0; i < all.n; i++) {
		if (all.v[i][0])
			strv_push(out, all.v[i]);
		else
			ERR(ps, sec, key, "%s: empty item in the list (a stray comma?)", key);
	}
	strv_free(&all);
}

bool policy_name_ok(const char *s)
{
	if (!*s || !isalnum((unsigned char)*s) || strlen(s) > NAME_MAX_LEN)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-", *s))
			return false;
	return true;
}

static bool valid_tag(const char *s)
{
	if (!*s || strlen(s) > NAME_MAX_LEN)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._=:-", *s))
			return false;
	return true;
}

/* --- sections ----------------------------------------------------------- */

static const char *const global_keys[] = { "default_action", "default_log" };
static const char *const tags_keys[] = { "names" };
static const char *const vm_keys[] = { "host", "port", "mac", "addresses", "os" };
static const char *const group_keys[] = {
	"match", "members", "include", "addresses", "exclude_match",
	"exclude_members", "exclude_groups", "quarantine", "keep_connections",
	"description"
};
static const char *const rule_keys[] = {
	"name", "category", "sources", "destinations", "services", "applied_to",
	"direction", "action", "log", "disabled", "notes"
};
static const char *const detection_keys[] = {
	"tag_high", "tag_medium", "tag_low", "auto_release", "file_action", "max_file_bytes"
};
static const char *const netthreat_keys[] = {
	"mode", "window", "max_ports", "max_hosts", "block_for", "tag"
};
static const char *const section_kinds[] = {
	"global", "tags", "detection", "netthreat", "vm", "group", "rule"
};

static void parse_global(struct parser *ps)
{
	check_keys(ps, "global", global_keys, ARRAY_SIZE(global_keys));
	ps->p->default_action = (enum dfw_action)get_word(ps, "global", "default_action",
		action_names, ARRAY_SIZE(action_names), ACT_DROP);
	ps->p->default_log = get_bool(ps, "global", "default_log", false);
}

static void parse_tags(struct parser *ps)
{
	struct strv names = { 0 };
	const char *v;

	check_keys(ps, "tags", tags_keys, ARRAY_SIZE(tags_keys));
	v = get(ps, "tags", "names");
	if (!v)
		return;
	split_list(ps, "tags", "names", v, &names);
	for (size_t i = 0; i < names.n; i++) {
		if (!valid_tag(names.v[i]))
			ERR(ps, "tags", "names", "tag '%s': 1-48 letters, digits and . _ = : -",
			    names.v[i]);
		else if (strv_contains(&ps->p->tags, names.v[i], true))
			ERR(ps, "tags", "names", "tag '%s' declared twice", names.v[i]);
		else
			strv_push(&ps->p->tags, names.v[i]);
	}
	strv_free(&names);
}

/* A tag named by [detection] or [netthreat]: it must be declared, and the
 * declared spelling is kept. */
static char *declared_tag(struct parser *ps, const char *sec, const char *key, const char *v)
{
	const char *t = policy_find_tag(ps->p, v);
	char hint[128];

	if (!t)
		ERR(ps, sec, key, "%s: tag '%s' is not declared in [tags]%s", key, v,
		    suggest(hint, sizeof(hint), v, (const char *const *)ps->p->tags.v, ps->p->tags.n));
	return t ? xstrdup(t) : NULL;
}

/* A whole number, or with duration a duration in ms, in [min, max]. */
static uint64_t get_ranged(struct parser *ps, const char *sec, const char *key, uint64_t def,
			   uint64_t min, uint64_t max, bool duration)
{
	const char *v = get(ps, sec, key);
	uint64_t n;
	int r;

	if (!v)
		return def;
	r = duration ? parse_duration_ms(v, &n) : parse_u64(v, max, &n);
	if (r == 0 && n >= min && n <= max)
		return n;
	if (duration)
		ERR(ps, sec, key, "%s: '%s' is not a duration from %llu ms to %llu s "
			"(e.g. 500ms, 10s, 5m, 1h)", key, v, (unsigned long long)min,
		    (unsigned long long)(max / 1000));
	else
		ERR(ps, sec, key, "%s: '%s' is not a whole number from %llu to %llu", key, v,
		    (unsigned long long)min, (unsigned long long)max);
	return def;
}

/* [detection]: defaults are threat.<severity>, which need to be declared
 * only when the section is present (a policy without it never scans). */
static void parse_detection(struct parser *ps)
{
	struct dfw_detection *det = &ps->p->detection;
	bool present = sec_line(ps, "detection") > 0;

	check_keys(ps, "detection", detection_keys, ARRAY_SIZE(detection_keys));
	for (int sev = SEV_COUNT - 1; sev >= 0; sev--) {
		char key[16], def[32];
		const char *v;

		snprintf(key, sizeof(key), "tag_%s", severity_names[sev]);
		snprintf(def, sizeof(def), "threat.%s", severity_names[sev]);
		v = get(ps, "detection", key);
		if (present)
			det->tag[sev] = declared_tag(ps, "detection", key, v ? v : def);
		else
			det->tag[sev] = xstrdup(def);
	}
	det->auto_release = get_bool(ps, "detection", "auto_release", true);
	det->delete_files = get_word(ps, "detection", "file_action", file_action_names,
				     ARRAY_SIZE(file_action_names), 0) == 1;
	det->max_file_bytes = get_ranged(ps, "detection", "max_file_bytes", 64ull << 20,
					  0, UINT64_MAX, false);
}

static void parse_netthreat(struct parser *ps)
{
	struct dfw_netthreat *nt = &ps->p->netthreat;
	const char *v;

	check_keys(ps, "netthreat", netthreat_keys, ARRAY_SIZE(netthreat_keys));
	nt->mode = (enum nt_mode)get_word(ps, "netthreat", "mode", nt_mode_names,
					  ARRAY_SIZE(nt_mode_names), NT_OFF);
	nt->window_ms = get_ranged(ps, "netthreat", "window", 10000, 100, 3600000, true);
	nt->max_ports = (uint32_t)get_ranged(ps, "netthreat", "max_ports", 50, 2, 65536, false);
	nt->max_hosts = (uint32_t)get_ranged(ps, "netthreat", "max_hosts", 20, 2, 65536, false);
	nt->block_ms = get_ranged(ps, "netthreat", "block_for", 300000, 1000, 7 * 86400000ull, true);
	if ((v = get(ps, "netthreat", "tag")) && *v)
		nt->tag = declared_tag(ps, "netthreat", "tag", v);
}

static void parse_vm(struct parser *ps, const char *sec, const char *name)
{
	struct inventory *inv = &ps->p->inv;
	struct vm *vm;
	struct strv addrs = { 0 };
	const char *v;

	check_keys(ps, sec, vm_keys, ARRAY_SIZE(vm_keys));
	grow((void **)&inv->vms, &ps->capvms, inv->nvms + 1, sizeof(*inv->vms));
	vm = &inv->vms[inv->nvms++];
	memset(vm, 0, sizeof(*vm));
	vm->name = xstrdup(name);
	vm->line = sec_line(ps, sec);
	vm->host = xstrdup((v = require(ps, sec, "host")) ? v : "");
	vm->port = xstrdup((v = require(ps, sec, "port")) ? v : "");
	vm->os = xstrdup((v = get(ps, sec, "os")) ? v : "");
	if (!policy_name_ok(name))
		diag_add(ps->d, ps->file, vm->line,
			 "VM name '%s': 1-48 letters, digits and . _ -", name);
	if (vm->host[0] && !policy_name_ok(vm->host))
		ERR(ps, sec, "host", "host '%s': 1-48 letters, digits and . _ -", vm->host);
	if (vm->port[0] && (strlen(vm->port) > 15 || !policy_name_ok(vm->port)))
		ERR(ps, sec, "port", "port '%s': an interface name of 1-15 letters, digits, . _ -",
		    vm->port);
	if ((v = require(ps, sec, "mac")) && mac_parse(v, vm->mac) < 0)
		ERR(ps, sec, "mac", "mac '%s' is not of the form 02:00:00:00:00:01", v);
	if ((v = require(ps, sec, "addresses")))
		split_list(ps, sec, "addresses", v, &addrs);
	vm->addrs = xcalloc(addrs.n, sizeof(*vm->addrs));
	for (size_t i = 0; i < addrs.n; i++) {
		struct dfw_addr a;
		const char *why;

		if (addr_parse(addrs.v[i], &a, &why) < 0)
			ERR(ps, sec, "addresses", "address '%s': %s", addrs.v[i], why);
		else if (a.plen != (a.family == AF_INET ? 32 : 128))
			ERR(ps, sec, "addresses", "address '%s': a VM address has no prefix length",
			    addrs.v[i]);
		else
			vm->addrs[vm->naddrs++] = a;
	}
	strv_free(&addrs);
}

static void unknown_vm(struct parser *ps, const char *sec, const char *key, const char *name)
{
	char msg[256];

	policy_unknown(ps->p, false, name, msg, sizeof(msg));
	ERR(ps, sec, key, "%s: %s", key, msg);
}

/* Resolves a list of VM names to indexes. */
static size_t *resolve_vms(struct parser *ps, const char *sec, const char *key, size_t *n)
{
	const char *v = get(ps, sec, key);
	struct strv names = { 0 };
	size_t *idx;

	*n = 0;
	if (!v)
		return NULL;
	split_list(ps, sec, key, v, &names);
	idx = xcalloc(names.n, sizeof(*idx));
	for (size_t i = 0; i < names.n; i++) {
		long vm = policy_find_vm(ps->p, names.v[i]);

		if (vm < 0)
			unknown_vm(ps, sec, key, names.v[i]);
		else
			idx[(*n)++] = (size_t)vm;
	}
	strv_free(&names);
	return idx;
}

static const char **group_names(const struct dfw_policy *p)
{
	const char **all = xcalloc(p->inv.ngroups, sizeof(*all));

	for (size_t j = 0; j < p->inv.ngroups; j++)
		all[j] = p->inv.groups[j].name;
	return all;
}

static size_t *resolve_groups(struct parser *ps, const char *sec, const char *key, size_t *n)
{
	const char *v = get(ps, sec, key);
	const char **all = group_names(ps->p);
	struct strv names = { 0 };
	size_t *idx = NULL;

	*n = 0;
	if (!v)
		goto out;
	split_list(ps, sec, key, v, &names);
	idx = xcalloc(names.n, sizeof(*idx));
	for (size_t i = 0; i < names.n; i++) {
		long g = policy_find_group(ps->p, names.v[i]);
		char hint[128];

		if (g < 0)
			ERR(ps, sec, key, "%s: unknown group '%s'%s", key, names.v[i],
			    suggest(hint, sizeof(hint), names.v[i], all, ps->p->inv.ngroups));
		else
			idx[(*n)++] = (size_t)g;
	}
out:
	strv_free(&names);
	free(all);
	return idx;
}

/* Parses "tag equals x and name starts-with d or os contains win". */
static struct criterion *parse_criteria(struct parser *ps, const char *sec,
					const char *key, size_t *ncrit)
{
	const char *v = get(ps, sec, key);
	struct criterion *crit = NULL;
	char *copy, *save = NULL, *tok;
	char *words[3];
	int nw = 0;
	char hint[128];

	*ncrit = 0;
	if (!v)
		return NULL;
	copy = xstrdup(v);
	crit = xcalloc(1, sizeof(*crit));
	*ncrit = 1;
	for (tok = strtok_r(copy, " \t", &save);; tok = strtok_r(NULL, " \t", &save)) {
		bool is_and = tok && !strcasecmp(tok, "and");
		bool is_or = tok && !strcasecmp(tok, "or");

		if (tok && !is_and && !is_or) {
			if (nw == 3) {
				ERR(ps, sec, key, "%s: expected 'and' or 'or' before '%s'", key, tok);
				goto fail;
			}
			words[nw++] = tok;
			continue;
		}
		if (nw != 3) {
			ERR(ps, sec, key, "%s: a condition is FIELD OP VALUE, e.g. 'tag equals threat.high'",
			    key);
			goto fail;
		}
		{
			int f = find_word(words[0], field_names, ARRAY_SIZE(field_names));
			int o = find_word(words[1], op_names, ARRAY_SIZE(op_names));
			struct criterion *c = &crit[*ncrit - 1];

			if (f < 0)
				ERR(ps, sec, key, "%s: unknown field '%s'%s", key, words[0],
				    suggest(hint, sizeof(hint), words[0], field_names,
					    ARRAY_SIZE(field_names)));
			if (o < 0)
				ERR(ps, sec, key, "%s: unknown operator '%s'%s", key, words[1],
				    suggest(hint, sizeof(hint), words[1], op_names,
					    ARRAY_SIZE(op_names)));
			if (f == COND_TAG && (o == OP_EQUALS || o == OP_NOT_EQUALS) &&
			    !policy_find_tag(ps->p, words[2])) {
				const char **tags = (const char **)ps->p->tags.v;

				ERR(ps, sec, key, "%s: tag '%s' is not declared in [tags]%s", key,
				    words[2], suggest(hint, sizeof(hint), words[2], tags,
						      ps->p->tags.n));
			}
			if (f < 0 || o < 0)
				goto fail;
			c->conds = xrealloc(c->conds, (c->nconds + 1) * sizeof(*c->conds));
			c->conds[c->nconds++] = (struct cond){ (enum cond_field)f,
							       (enum cond_op)o,
							       xstrdup(words[2]) };
		}
		nw = 0;
		if (!tok)
			break;
		if (is_or) {
			crit = xrealloc(crit, (*ncrit + 1) * sizeof(*crit));
			memset(&crit[(*ncrit)++], 0, sizeof(*crit));
		}
	}
	free(copy);
	return crit;
fail:
	free(copy);
	for (size_t i = 0; i < *ncrit; i++) {
		for (size_t j = 0; j < crit[i].nconds; j++)
			free(crit[i].conds[j].value);
		free(crit[i].conds);
	}
	free(crit);
	*ncrit = 0;
	return NULL;
}

static struct dfw_addr *parse_addr_list(struct parser *ps, const char *sec,
					const char *key, size_t *n)
{
	const char *v = get(ps, sec, key);
	struct strv items = { 0 };
	struct dfw_addr *out;

	*n = 0;
	if (!v)
		return NULL;
	split_list(ps, sec, key, v, &items);
	out = xcalloc(items.n, sizeof(*out));
	for (size_t i = 0; i < items.n; i++) {
		const char *why;

		if (addr_parse(items.v[i], &out[*n], &why) < 0)
			ERR(ps, sec, key, "%s: '%s': %s", key, items.v[i], why);
		else
			(*n)++;
	}
	strv_free(&items);
	return out;
}

/* Group bodies are parsed after every group name is known (nesting). */
static void parse_group(struct parser *ps, const char *sec, struct group_def *g)
{
	check_keys(ps, sec, group_keys, ARRAY_SIZE(group_keys));
	g->match = parse_criteria(ps, sec, "match", &g->nmatch);
	g->members = resolve_vms(ps, sec, "members", &g->nmembers);
	g->includes = resolve_groups(ps, sec, "include", &g->nincludes);
	g->addrs = parse_addr_list(ps, sec, "addresses", &g->naddrs);
	g->exclude_match = parse_criteria(ps, sec, "exclude_match", &g->nexclude_match);
	g->exclude_members = resolve_vms(ps, sec, "exclude_members", &g->nexclude_members);
	g->exclude_groups = resolve_groups(ps, sec, "exclude_groups", &g->nexclude_groups);
	g->quarantine = get_bool(ps, sec, "quarantine", false);
	g->keep_connections = get_bool(ps, sec, "keep_connections", false);
	if (g->keep_connections && !g->quarantine)
		ERR(ps, sec, "keep_connections",
		    "keep_connections only applies to a group with quarantine = yes");
}

/* One source/destination item: any, group:X, vm:X, X (group or VM), IP/CIDR. */
static void parse_side(struct parser *ps, const char *sec, const char *key,
		       struct dfw_side *side)
{
	const char *v = get(ps, sec, key);
	struct strv items = { 0 };
	const char **groups = group_names(ps->p);
	char hint[128];

	if (!v || !*v) {
		side->any = true;
		goto out;
	}
	split_list(ps, sec, key, v, &items);
	side->refs = xcalloc(items.n, sizeof(*side->refs));
	for (size_t i = 0; i < items.n; i++) {
		const char *it = items.v[i], *why;
		struct dfw_ref r = { 0 };
		long g, vm;

		if (!strcasecmp(it, "any")) {
			side->any = true;
			continue;
		}
		if (strchr(it, '.') && isdigit((unsigned char)it[0]) &&
		    addr_parse(it, &r.addr, &why) == 0) {
			r.kind = REF_ADDR;
		} else if (strchr(it, ':') && !strncasecmp(it, "group:", 6)) {
			if ((g = policy_find_group(ps->p, it + 6)) < 0) {
				ERR(ps, sec, key, "%s: unknown group '%s'%s", key, it + 6,
				    suggest(hint, sizeof(hint), it + 6, groups, ps->p->inv.ngroups));
				continue;
			}
			r.kind = REF_GROUP;
			r.idx = (size_t)g;
		} else if (!strncasecmp(it, "vm:", 3)) {
			if ((vm = policy_find_vm(ps->p, it + 3)) < 0) {
				unknown_vm(ps, sec, key, it + 3);
				continue;
			}
			r.kind = REF_VM;
			r.idx = (size_t)vm;
		} else if (strchr(it, ':') && addr_parse(it, &r.addr, &why) == 0) {
			r.kind = REF_ADDR;
		} else {
			g = policy_find_group(ps->p, it);
			vm = policy_find_vm(ps->p, it);
			if (g >= 0 && vm >= 0) {
				ERR(ps, sec, key, "%s: '%s' is both a group and a VM; write group:%s or vm:%s",
				    key, it, it, it);
				continue;
			}
			if (g < 0 && vm < 0) {
				if (isdigit((unsigned char)it[0]) && addr_parse(it, &r.addr, &why) < 0)
					ERR(ps, sec, key, "%s: '%s': %s", key, it, why);
				else
					ERR(ps, sec, key, "%s: '%s' is no group, VM or address%s", key, it,
					    suggest(hint, sizeof(hint), it, groups, ps->p->inv.ngroups));
				continue;
			}
			r.kind = g >= 0 ? REF_GROUP : REF_VM;
			r.idx = (size_t)(g >= 0 ? g : vm);
		}
		side->refs[side->nrefs++] = r;
	}
	if (side->any && side->nrefs)
		ERR(ps, sec, key, "%s: 'any' cannot be combined with other items", key);
out:
	strv_free(&items);
	free(groups);
}

static void parse_services(struct parser *ps, const char *sec, struct dfw_rule *r)
{
	const char *v = get(ps, sec, "services");
	struct strv items = { 0 };
	static const char *const protos[] = { "tcp", "udp", "icmp", "icmpv6", "any" };
	bool any = false;

	if (!v)
		return;
	split_list(ps, sec, "services", v, &items);
	r->svcs = xcalloc(items.n, sizeof(*r->svcs));
	for (size_t i = 0; i < items.n; i++) {
		char *it = items.v[i], *slash = strchr(it, '/'), *dash;
		struct dfw_service s = { 0 };
		uint64_t lo, hi;
		char hint[128];
		int pr;

		if (slash)
			*slash = '\0';
		pr = find_word(it, protos, ARRAY_SIZE(protos));
		if (pr < 0) {
			ERR(ps, sec, "services", "services: unknown protocol '%s'%s", it,
			    suggest(hint, sizeof(hint), it, protos, ARRAY_SIZE(protos)));
			continue;
		}
		if (pr == 4) { /* any: the rule matches every service */
			if (slash)
				ERR(ps, sec, "services", "services: 'any' takes no port");
			if (items.n > 1)
				ERR(ps, sec, "services", "services: 'any' cannot be combined with other items");
			any = true;
			continue;
		}
		s.proto = (uint8_t)(pr == 0 ? IPPROTO_TCP : pr == 1 ? IPPROTO_UDP :
				    pr == 2 ? IPPROTO_ICMP : IPPROTO_ICMPV6);
		if (slash && pr >= 2) {
			ERR(ps, sec, "services", "services: %s takes no port", it);
			continue;
		}
		if (slash) {
			dash = strchr(slash + 1, '-');
			if (dash)
				*dash = '\0';
			if (parse_u64(slash + 1, 65535, &lo) < 0 || lo == 0 ||
			    (dash && (parse_u64(dash + 1, 65535, &hi) < 0 || hi < lo))) {
				if (dash)
					*dash = '-';
				ERR(ps, sec, "services",
				    "services: '%s/%s': ports are 1-65535, a range is LOW-HIGH",
				    it, slash + 1);
				continue;
			}
			s.lo = (uint16_t)lo;
			s.hi = (uint16_t)(dash ? hi : lo);
		}
		r->svcs[r->nsvcs++] = s;
	}
	if (any) { /* no service list means every service */
		free(r->svcs);
		r->svcs = NULL;
		r->nsvcs = 0;
	}
	strv_free(&items);
}

static void parse_rule(struct parser *ps, const char *sec, const char *idstr)
{
	struct dfw_policy *p = ps->p;
	struct dfw_rule *r;
	uint64_t id = 0;
	const char *v;

	check_keys(ps, sec, rule_keys, ARRAY_SIZE(rule_keys));
	grow((void **)&p->rules, &ps->caprules, p->nrules + 1, sizeof(*p->rules));
	r = &p->rules[p->nrules++];
	memset(r, 0, sizeof(*r));
	r->line = sec_line(ps, sec);
	if (parse_u64(idstr, UINT32_MAX, &id) < 0 || id == 0)
		diag_add(ps->d, ps->file, r->line,
			 "rule id '%s' must be a number from 1 to 4294967295", idstr);
	r->id = (uint32_t)id;
	r->name = xstrdup((v = get(ps, sec, "name")) ? v : "");
	r->category = (enum dfw_category)get_word(ps, sec, "category", category_names,
						  CAT_COUNT, CAT_APPLICATION);
	parse_side(ps, sec, "sources", &r->src);
	parse_side(ps, sec, "destinations", &r->dst);
	parse_services(ps, sec, r);
	v = get(ps, sec, "applied_to");
	if (!v || !strcasecmp(v, "any") || !*v)
		r->applied_everywhere = true;
	else
		r->applied_to = resolve_groups(ps, sec, "applied_to", &r->napplied);
	{
		/* Index + 1 is the dfw_dir value. */
		static const char *const dirs[] = { "in", "out", "in-out" };

		r->dir = (enum dfw_dir)(get_word(ps, sec, "direction", dirs, ARRAY_SIZE(dirs),
						 DIR_INOUT - 1) + 1);
	}
	if (!get(ps, sec, "action"))
		diag_add(ps->d, ps->file, r->line, "[%s] needs 'action' (allow, drop or reject)", sec);
	r->action = (enum dfw_action)get_word(ps, sec, "action", action_names,
					      ARRAY_SIZE(action_names), ACT_DROP);
	r->log = get_bool(ps, sec, "log", false);
	r->disabled = get_bool(ps, sec, "disabled", false);
}

/* An inventory item that must be unique, with the VM that holds it:
 * compact typed keys, so that 100k VMs sort in a few megabytes. */
enum owned_kind { OWN_MAC, OWN_PORT, OWN_ADDR };

struct owned {
	enum owned_kind kind;
	size_t vm;
	union {
		uint8_t mac[6];
		struct dfw_addr addr;
	} u;
};

static int cmp_owned(const void *x, const void *y, void *arg)
{
	const struct owned *a = x, *b = y;
	const struct vm *vms = arg;
	int c = (int)a->kind - (int)b->kind;

	if (!c && a->kind == OWN_MAC)
		c = memcmp(a->u.mac, b->u.mac, 6);
	if (!c && a->kind == OWN_ADDR)
		c = addr_cmp(&a->u.addr, &b->u.addr);
	if (!c && a->kind == OWN_PORT) {
		c = strcmp(vms[a->vm].host, vms[b->vm].host);
		c = c ? c : strcmp(vms[a->vm].port, vms[b->vm].port);
	}
	return c ? c : (a->vm < b->vm ? -1 : a->vm > b->vm);
}

/* MACs, host ports and addresses must be unique: sort, compare neighbours. */
static void check_inventory(struct parser *ps)
{
	const struct inventory *inv = &ps->p->inv;
	struct owned *o = NULL;
	size_t n = 0, cap = 0;

	for (size_t i = 0; i < inv->nvms; i++) {
		const struct vm *vm = &inv->vms[i];

		grow((void **)&o, &cap, n + 2 + vm->naddrs, sizeof(*o));
		o[n] = (struct owned){ .kind = OWN_MAC, .vm = i };
		memcpy(o[n++].u.mac, vm->mac, 6);
		o[n++] = (struct owned){ .kind = OWN_PORT, .vm = i };
		for (size_t a = 0; a < vm->naddrs; a++)
			o[n++] = (struct owned){ .kind = OWN_ADDR, .vm = i, .u.addr = vm->addrs[a] };
	}
	if (n)
		qsort_r(o, n, sizeof(*o), cmp_owned, inv->vms);
	for (size_t i = 1; i < n; i++) {
		const struct vm *a = &inv->vms[o[i].vm], *b = &inv->vms[o[i - 1].vm];
		char what[128];

		if (o[i].vm == o[i - 1].vm || o[i].kind != o[i - 1].kind)
			continue;
		if (o[i].kind == OWN_MAC && !memcmp(o[i].u.mac, o[i - 1].u.mac, 6)) {
			char mac[18];

			mac_format(o[i].u.mac, mac, sizeof(mac));
			snprintf(what, sizeof(what), "MAC %s", mac);
		} else if (o[i].kind == OWN_ADDR && !addr_cmp(&o[i].u.addr, &o[i - 1].u.addr)) {
			char buf[64];

			addr_format(&o[i].u.addr, buf, sizeof(buf));
			snprintf(what, sizeof(what), "address %s", buf);
		} else if (o[i].kind == OWN_PORT && !strcmp(a->host, b->host) &&
			   !strcmp(a->port, b->port)) {
			snprintf(what, sizeof(what), "port %s on host %s", a->port, a->host);
		} else {
			continue;
		}
		diag_add(ps->d, ps->file, a->line, "VM %s: %s already used by VM %s",
			 a->name, what, b->name);
	}
	free(o);
}

struct name_ctx {
	const void *base;
	size_t stride;
};

/* Both struct vm and struct group_def start with their name. */
static const char *name_at(const struct name_ctx *c, size_t i)
{
	return *(char *const *)((const char *)c->base + i * c->stride);
}

static int cmp_name_at(const void *x, const void *y, void *arg)
{
	return strcmp(name_at(arg, *(const size_t *)x), name_at(arg, *(const size_t *)y));
}

static long find_name(const void *base, size_t stride, const size_t *idx, size_t n,
		      const char *name)
{
	struct name_ctx c = { base, stride };
	size_t lo = 0, hi = n;
	char key[256];

	snprintf(key, sizeof(key), "%s", name);
	str_lower(key);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int r = strcmp(name_at(&c, idx[mid]), key);

		if (!r)
			return (long)idx[mid];
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* Sorted name indexes make lookups O(log n) for large inventories. */
static size_t *name_index(const void *base, size_t n, size_t stride)
{
	size_t *idx = xcalloc(n, sizeof(*idx));

	for (size_t i = 0; i < n; i++)
		idx[i] = i;
	if (n)
		qsort_r(idx, n, sizeof(*idx), cmp_name_at, (void *)&(struct name_ctx){ base, stride });
	return idx;
}

static int cmp_rule_id(const void *x, const void *y)
{
	const struct dfw_rule *a = x, *b = y;

	if (a->id != b->id)
		return a->id < b->id ? -1 : 1;
	return a->line - b->line;
}

/* Rule ids are unique: sorted by id, neighbours differ. */
static void check_rule_ids(struct parser *ps)
{
	struct dfw_rule *by_id = xcalloc(ps->p->nrules + 1, sizeof(*by_id));

	if (ps->p->nrules) {
		memcpy(by_id, ps->p->rules, ps->p->nrules * sizeof(*by_id));
		qsort(by_id, ps->p->nrules, sizeof(*by_id), cmp_rule_id);
	}
	for (size_t i = 1; i < ps->p->nrules; i++)
		if (by_id[i].id && by_id[i].id == by_id[i - 1].id)
			diag_add(ps->d, ps->file, by_id[i].line, "rule id %u already used at line %d",
				 by_id[i].id, by_id[i - 1].line);
	free(by_id);
}

static int cmp_rule(const void *x, const void *y)
{
	const struct dfw_rule *a = x, *b = y;

	if (a->category != b->category)
		return a->category < b->category ? -1 : 1;
	return a->line - b->line;
}

/* Sections sorted by kind: groups must all be named before any is parsed. */
static void parse_sections(struct parser *ps)
{
	struct dfw_policy *p = ps->p;
	size_t ngroups = 0;

	for (size_t i = 0; i < ps->nsecs_parse; i++) {
		const char *sec = ps->secs[i].name;
		const char *sp = strchr(sec, ' ');
		char kind[32], hint[128];
		size_t klen = sp ? (size_t)(sp - sec) : strlen(sec);
		const char *arg = sp ? str_trim((char *)sp) : NULL;

		snprintf(kind, sizeof(kind), "%.*s", (int)(klen < 31 ? klen : 31), sec);
		if (!strcmp(sec, "global") || !strcmp(sec, "tags") ||
		    !strcmp(sec, "detection") || !strcmp(sec, "netthreat"))
			continue;
		if ((!strcmp(kind, "vm") || !strcmp(kind, "group") || !strcmp(kind, "rule")) && arg && *arg) {
			if (!strcmp(kind, "group")) {
				ngroups++;
				if (!policy_name_ok(arg))
					diag_add(ps->d, ps->file, ps->secs[i].line,
						 "group name '%s': 1-48 letters, digits and . _ -", arg);
			}
			continue;
		}
		diag_add(ps->d, ps->file, ps->secs[i].line,
			 "unknown section [%s]; sections are [global], [tags], [detection], [netthreat], "
			 "[vm NAME], [group NAME], [rule ID]%s",
			 sec, suggest(hint, sizeof(hint), kind, section_kinds, ARRAY_SIZE(section_kinds)));
	}
	parse_global(ps);
	parse_tags(ps);
	parse_detection(ps);
	parse_netthreat(ps);
	for (size_t i = 0; i < ps->nsecs_parse; i++)
		if (!strncmp(ps->secs[i].name, "vm ", 3))
			parse_vm(ps, ps->secs[i].name, str_trim(ps->secs[i].name + 3));
	check_inventory(ps);
	p->vm_by_name = name_index(p->inv.vms, p->inv.nvms, sizeof(*p->inv.vms));
	p->inv.groups = xcalloc(ngroups, sizeof(*p->inv.groups));
	for (size_t i = 0; i < ps->nsecs_parse; i++) {
		if (strncmp(ps->secs[i].name, "group ", 6))
			continue;
		p->inv.groups[p->inv.ngroups].name = xstrdup(str_trim(ps->secs[i].name + 6));
		p->inv.groups[p->inv.ngroups++].line = ps->secs[i].line;
		if (policy_find_vm(p, p->inv.groups[p->inv.ngroups - 1].name) >= 0)
			diag_add(ps->d, ps->file, ps->secs[i].line,
				 "group '%s' has the name of a VM; references to it would be ambiguous",
				 p->inv.groups[p->inv.ngroups - 1].name);
	}
	p->group_by_name = name_index(p->inv.groups, p->inv.ngroups, sizeof(*p->inv.groups));
	for (size_t i = 0, g = 0; i < ps->nsecs_parse; i++)
		if (!strncmp(ps->secs[i].name, "group ", 6))
			parse_group(ps, ps->secs[i].name, &p->inv.groups[g++]);
	for (size_t i = 0; i < ps->nsecs_parse; i++)
		if (!strncmp(ps->secs[i].name, "rule ", 5))
			parse_rule(ps, ps->secs[i].name, str_trim(ps->secs[i].name + 5));
	check_rule_ids(ps);
	if (p->nrules)
		qsort(p->rules, p->nrules, sizeof(*p->rules), cmp_rule);
}

struct dfw_policy *policy_parse(const char *text, const char *file, struct diag *d)
{
	struct parser ps = { .file = file, .d = d };
	size_t before = d->n;

	ps.p = xcalloc(1, sizeof(*ps.p));
	ps.p->file = xstrdup(file);
	ps.text = text;
	index_lines(&ps);
	index_finish(&ps);
	parse_sections(&ps);
	if (d->n == before) {
		struct gengine *e = gengine_new(&ps.p->inv, file, d);

		gengine_free(e);
	}
	for (size_t i = 0; i < ps.nkeys; i++) {
		free(ps.keys[i].section);
		free(ps.keys[i].key);
		free(ps.keys[i].value);
	}
	for (size_t i = 0; i < ps.nsecs; i++)
		free(ps.secs_sorted[i].name);
	free(ps.keys);
	free(ps.secs);
	free(ps.secs_sorted);
	if (d->n != before) {
		policy_free(ps.p);
		return NULL;
	}
	return ps.p;
}

struct dfw_policy *policy_load(const char *path, char **text_out, struct diag *d)
{
	struct dfw_policy *p = NULL;
	char *text = NULL;
	size_t len = 0;
	FILE *f = fopen(path, "r");

	if (text_out)
		*text_out = NULL;
	if (!f) {
		diag_add(d, path, 0, "%s", strerror(errno));
		return NULL;
	}
	if (getdelim(&text, &len, '\0', f) < 0 && ferror(f)) {
		diag_add(d, path, 0, "%s", strerror(errno));
		goto out;
	}
	if (!text)
		text = xstrdup("");
	if (strlen(text) != (size_t)ftell(f)) {
		diag_add(d, path, 0, "contains a NUL byte; not a text file");
		goto out;
	}
	p = policy_parse(text, path, d);
	if (p && text_out) {
		*text_out = text;
		text = NULL;
	}
out:
	fclose(f);
	free(text);
	return p;
}

static void free_criteria(struct criterion *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < c[i].nconds; j++)
			free(c[i].conds[j].value);
		free(c[i].conds);
	}
	free(c);
}

void policy_free(struct dfw_policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->inv.nvms; i++) {
		struct vm *vm = &p->inv.vms[i];

		free(vm->name);
		free(vm->host);
		free(vm->port);
		free(vm->os);
		free(vm->addrs);
	}
	free(p->inv.vms);
	for (size_t i = 0; i < p->inv.ngroups; i++) {
		struct group_def *g = &p->inv.groups[i];

		free(g->name);
		free_criteria(g->match, g->nmatch);
		free_criteria(g->exclude_match, g->nexclude_match);
		free(g->members);
		free(g->includes);
		free(g->addrs);
		free(g->exclude_members);
		free(g->exclude_groups);
	}
	free(p->inv.groups);
	for (size_t i = 0; i < p->nrules; i++) {
		struct dfw_rule *r = &p->rules[i];

		free(r->name);
		free(r->src.refs);
		free(r->dst.refs);
		free(r->svcs);
		free(r->applied_to);
	}
	free(p->rules);
	free(p->vm_by_name);
	free(p->group_by_name);
	strv_free(&p->tags);
	for (size_t i = 0; i < SEV_COUNT; i++)
		free(p->detection.tag[i]);
	free(p->netthreat.tag);
	free(p->file);
	free(p);
}

long policy_find_vm(const struct dfw_policy *p, const char *name)
{
	return find_name(p->inv.vms, sizeof(*p->inv.vms), p->vm_by_name, p->inv.nvms, name);
}

long policy_find_group(const struct dfw_policy *p, const char *name)
{
	return find_name(p->inv.groups, sizeof(*p->inv.groups), p->group_by_name,
			 p->inv.ngroups, name);
}

const char *policy_find_tag(const struct dfw_policy *p, const char *tag)
{
	for (size_t i = 0; i < p->tags.n; i++)
		if (!strcasecmp(p->tags.v[i], tag))
			return p->tags.v[i];
	return NULL;
}
