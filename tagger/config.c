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
	size_t *service_by_name;     /* sorted index of p->services, for lookups */
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

/* The value of key on line lineno: "quoted" or 'quoted' verbatim (blanks,
 * ';' and '#' included), followed by nothing but blanks or a comment;
 * otherwise up to an inline comment (';' or '#'), trimmed.  A quote left
 * open, or text after the closing one, is an error: dropping that text
 * silently would change the value ("allow" drop is not allow). */
static char *ini_value(struct parser *ps, int lineno, const char *key, char *v)
{
	char *end, *rest;

	v = str_trim(v);
	if (*v != '"' && *v != '\'') {
		v[strcspn(v, ";#")] = '\0';
		return xstrdup(str_trim(v));
	}
	if (!(end = strchr(v + 1, *v))) {
		diag_add(ps->d, ps->file, lineno, "%s: the quote %c is not closed on this line",
			 key, *v);
		return xstrdup(v + 1);
	}
	*end = '\0';
	rest = str_trim(end + 1);
	if (*rest && *rest != ';' && *rest != '#')
		diag_add(ps->d, ps->file, lineno, "%s: '%s' after the closing quote; only a "
			 "comment (; or #) may follow a quoted value", key, rest);
	return xstrdup(v + 1);
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
		size_t bad;

		lineno++;
		if (len > MAX_LINE) {
			diag_add(ps->d, ps->file, lineno, "line longer than %d characters", MAX_LINE);
			goto reject;
		}
		/* The store keeps the file's text as it is, and etcd holds only
		 * UTF-8: a Latin-1 byte (even in a comment) would be refused
		 * there, without a line.  The line is still parsed, so that what
		 * else is wrong with it is reported too. */
		if (!utf8_text(p, len, &bad))
			diag_add(ps->d, ps->file, lineno, "byte 0x%02x at column %zu is not UTF-8; "
				 "a policy is UTF-8 text", (unsigned char)p[bad], bad + 1);
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
							  ini_value(ps, lineno, line, eq + 1),
							  lineno };
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

/* The lists where the word any means every address, service or vNIC. */
static const char *const any_keys[] = { "sources", "destinations", "services", "applied_to" };

/* Splits a comma-separated value; empty items are reported and dropped.
 * An empty value is an error, not an empty list: "sources = ${SRC}" with
 * SRC unset must not mean any, nor "exclude_groups =" exclude nothing. */
static void split_list(struct parser *ps, const char *sec, const char *key,
		       const char *v, struct strv *out)
{
	struct strv all = { 0 };

	if (!*v) {
		ERR(ps, sec, key, "%s: empty value: %s", key,
		    find_word(key, any_keys, ARRAY_SIZE(any_keys)) >= 0
			    ? "write 'any' to mean any" : "leave the key out for none");
		return;
	}
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

/* Words the policy gives a meaning where VM or group names stand: in
 * sources and destinations (any, not), applied_to (any), a VM's addresses
 * (learn) and criteria (and, or: "name equals and" cannot be written). */
static const char *const reserved_names[] = { "any", "not", "learn", "and", "or" };

/* Reports a VM or group (what) name, at the line of its section, that is
 * not of the shape of policy_name_ok or that a reference to it would read
 * as something else: a reserved word, or an address ("sources = 10.9.9.9"
 * is the address even when a VM has that name). */
static void check_name(struct parser *ps, int line, const char *what, const char *name)
{
	struct dfw_addr a;
	const char *why;

	if (!policy_name_ok(name))
		diag_add(ps->d, ps->file, line, "%s name '%s': 1-48 letters, digits and . _ -",
			 what, name);
	else if (find_word(name, reserved_names, ARRAY_SIZE(reserved_names)) >= 0)
		diag_add(ps->d, ps->file, line, "%s name '%s' is a reserved word (any, not, "
			 "learn, and, or); choose another name", what, name);
	else if (addr_parse(name, &a, &why) == 0)
		diag_add(ps->d, ps->file, line, "%s name '%s' is an IP address, and rules would "
			 "read it as one; choose another name", what, name);
}

/* A tag: letters, digits and . _ = : -, optionally in a scope, "scope|tag"
 * (one '|', with something on both sides). */
static bool valid_tag(const char *s)
{
	const char *bar = strchr(s, '|');

	if (!*s || strlen(s) > NAME_MAX_LEN || bar == s || (bar && (!bar[1] || strchr(bar + 1, '|'))))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._=:-|", *s))
			return false;
	return true;
}

/* --- sections ----------------------------------------------------------- */

static const char *const global_keys[] = { "default_action", "default_log", "dhcp_servers" };
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
static const char *const service_keys[] = { "entries", "description" };
static const char *const detection_keys[] = {
	"tag_high", "tag_medium", "tag_low", "auto_release", "file_action", "max_file_bytes"
};
static const char *const netthreat_keys[] = {
	"mode", "window", "max_ports", "max_hosts", "block_for", "tag"
};
static const char *const section_kinds[] = {
	"global", "tags", "detection", "netthreat", "vm", "group", "service", "rule"
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
			ERR(ps, "tags", "names", "tag '%s': 1-48 letters, digits and . _ = : -, "
			    "optionally after a scope and '|' (os|windows)", names.v[i]);
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

/* A VM's MAC and addresses are what its vNIC may send from (anti-spoofing),
 * so they must be one guest's own: not a group's (multicast, broadcast),
 * not the host's (loopback), not "no one's" (all zeros, unspecified). */
static void check_vm_mac(struct parser *ps, const char *sec, const char *v,
			 const uint8_t mac[6])
{
	static const uint8_t zero[6];

	if (mac[0] & 1)
		ERR(ps, sec, "mac", "mac '%s': a multicast or broadcast MAC (the first byte "
		    "is odd) cannot be a VM's own", v);
	else if (!memcmp(mac, zero, sizeof(zero)))
		ERR(ps, sec, "mac", "mac '%s': the all-zero MAC cannot be a VM's own", v);
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
	check_name(ps, vm->line, "VM", name);
	if (vm->host[0] && !policy_name_ok(vm->host))
		ERR(ps, sec, "host", "host '%s': 1-48 letters, digits and . _ -", vm->host);
	if (vm->port[0] && (strlen(vm->port) > 15 || !policy_name_ok(vm->port)))
		ERR(ps, sec, "port", "port '%s': an interface name of 1-15 letters, digits, . _ -",
		    vm->port);
	if ((v = require(ps, sec, "mac")) && mac_parse(v, vm->mac) < 0)
		ERR(ps, sec, "mac", "mac '%s' is not of the form 02:00:00:00:00:01", v);
	else if (v)
		check_vm_mac(ps, sec, v, vm->mac);
	if ((v = require(ps, sec, "addresses")))
		split_list(ps, sec, "addresses", v, &addrs);
	vm->addrs = xcalloc(addrs.n, sizeof(*vm->addrs));
	for (size_t i = 0; i < addrs.n; i++) {
		struct dfw_addr a;
		const char *why;

		/* learn: the agent locks the first addresses the guest uses. */
		if (!strcasecmp(addrs.v[i], "learn")) {
			if (addrs.n > 1 && !vm->learn)
				ERR(ps, sec, "addresses", "addresses: 'learn' cannot be combined "
				    "with addresses (a learning VM declares none)");
			vm->learn = true;
			continue;
		}
		if (addr_parse(addrs.v[i], &a, &why) < 0)
			ERR(ps, sec, "addresses", "address '%s': %s", addrs.v[i], why);
		else if (a.plen != (a.family == AF_INET ? 32 : 128))
			ERR(ps, sec, "addresses", "address '%s': a VM address has no prefix length",
			    addrs.v[i]);
		else if ((why = addr_not_own(&a)))
			ERR(ps, sec, "addresses", "address '%s': %s cannot be a VM's own",
			    addrs.v[i], why);
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

		if (g < 0 && policy_find_vm(ps->p, names.v[i]) >= 0)
			ERR(ps, sec, key, "%s: '%s' is a VM; %s takes groups (a group with it as"
			    " member: [group NAME] members = %s)", key, names.v[i], key, names.v[i]);
		else if (g < 0)
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

/* Whether tag t has the scope of the first len characters of s. */
static bool tag_in_scope(const char *t, const char *s, size_t len)
{
	const char *bar = strchr(t, '|');

	return bar && (size_t)(bar - t) == len && !strncasecmp(t, s, len);
}

static bool tag_part_is(const char *t, const char *part)
{
	const char *bar = strchr(t, '|');

	return !strcasecmp(bar ? bar + 1 : t, part);
}

/* The value of a tag condition: SCOPE|TAG, SCOPE| (any tag of the scope,
 * with equals / not-equals only) or TAG.  equals / not-equals must be able
 * to match a declared tag: a typo there would silently never match. */
static void check_tag_value(struct parser *ps, const char *sec, const char *key, int op,
			 const char *v)
{
	const struct strv *tags = &ps->p->tags;
	const char *bar = strchr(v, '|');
	bool presence = op == OP_EQUALS || op == OP_NOT_EQUALS;
	char hint[128];

	if (bar && (bar == v || strchr(bar + 1, '|'))) {
		ERR(ps, sec, key, "%s: tag '%s': write SCOPE|TAG, SCOPE| (any tag of the scope) "
		    "or TAG", key, v);
		return;
	}
	if (bar && !bar[1] && !presence) {
		ERR(ps, sec, key, "%s: '%s' (any tag of scope '%.*s') works only with equals "
		    "or not-equals", key, v, (int)(bar - v), v);
		return;
	}
	if (!presence)
		return;
	if (bar && !bar[1]) {
		const char **scopes = xcalloc(tags->n, sizeof(*scopes));
		char (*buf)[NAME_MAX_LEN + 1] = xcalloc(tags->n, sizeof(*buf));
		size_t n = 0;
		bool found = false;

		for (size_t i = 0; i < tags->n; i++) {
			const char *tb = strchr(tags->v[i], '|');

			found |= tag_in_scope(tags->v[i], v, (size_t)(bar - v));
			if (tb) {
				snprintf(buf[n], sizeof(buf[n]), "%.*s|", (int)(tb - tags->v[i]),
					 tags->v[i]);
				scopes[n] = buf[n];
				n++;
			}
		}
		if (!found)
			ERR(ps, sec, key, "%s: no tag of scope '%.*s' is declared in [tags]%s", key,
			    (int)(bar - v), v, suggest(hint, sizeof(hint), v, scopes, n));
		free(scopes);
		free(buf);
		return;
	}
	if (policy_find_tag(ps->p, v))
		return;
	/* TAG without a scope also matches it in any scope */
	for (size_t i = 0; !bar && i < tags->n; i++)
		if (tag_part_is(tags->v[i], v))
			return;
	ERR(ps, sec, key, "%s: tag '%s' is not declared in [tags]%s", key, v,
	    suggest(hint, sizeof(hint), v, (const char *const *)tags->v, tags->n));
}

/* The next word of a criterion at *pos, cut out in place: a run of
 * non-blanks, or "text in double quotes" (blanks kept, the quotes
 * dropped; then *quoted is set).  NULL at the end, or with *why set. */
static char *crit_word(char **pos, bool *quoted, const char **why)
{
	char *p = *pos + strspn(*pos, " \t"), *w = p;

	*quoted = false;
	*why = NULL;
	if (!*p)
		return NULL;
	if (*p == '"') {
		char *end = strchr(++w, '"');

		if (!end) {
			*why = "a quoted value has no closing '\"'";
			return NULL;
		}
		if (end[1] && end[1] != ' ' && end[1] != '\t') {
			*why = "a closing '\"' must end its word";
			return NULL;
		}
		if (end == w) {
			*why = "a quoted value is empty";
			return NULL;
		}
		*quoted = true;
		p = end;
	} else {
		p += strcspn(p, " \t");
		if (memchr(w, '"', (size_t)(p - w))) {
			*why = "a '\"' may only open a quoted value";
			return NULL;
		}
	}
	*pos = *p ? p + 1 : p;
	*p = '\0';
	return w;
}

/* Parses "tag equals x and name starts-with d or os contains win"; a
 * VALUE with blanks, or that reads "and" or "or", is written in double
 * quotes: os equals "Windows Server 2022". */
static struct criterion *parse_criteria(struct parser *ps, const char *sec,
					const char *key, size_t *ncrit)
{
	const char *v = get(ps, sec, key);
	struct criterion *crit = NULL;
	char *copy, *pos, *tok;
	char *words[3];
	int nw = 0;
	char hint[128];

	*ncrit = 0;
	if (!v)
		return NULL;
	copy = pos = xstrdup(v);
	crit = xcalloc(1, sizeof(*crit));
	*ncrit = 1;
	for (;;) {
		bool quoted;
		const char *why;
		bool is_and, is_or;

		tok = crit_word(&pos, &quoted, &why);
		if (why) {
			ERR(ps, sec, key, "%s: %s", key, why);
			goto fail;
		}
		is_and = tok && !quoted && !strcasecmp(tok, "and");
		is_or = tok && !quoted && !strcasecmp(tok, "or");
		if (tok && quoted && nw < 2) {
			ERR(ps, sec, key, "%s: only a VALUE may be quoted, not '\"%s\"'", key, tok);
			goto fail;
		}
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
			if (f == COND_TAG && o >= 0)
				check_tag_value(ps, sec, key, o, words[2]);
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

/* The word 'not' at the start of s (alone or before blanks): the rest of s,
 * or NULL when s does not start with it. */
static const char *after_not(const char *s)
{
	if (strncasecmp(s, "not", 3) || (s[3] && !isspace((unsigned char)s[3])))
		return NULL;
	s += 3;
	while (isspace((unsigned char)*s))
		s++;
	return s;
}

/* Sources or destinations: any, or a list of group:X, vm:X, X (group or
 * VM) and IP/CIDR items; "not" before the first item negates the list. */
static void parse_side(struct parser *ps, const char *sec, const char *key,
		       struct dfw_side *side)
{
	const char *v = get(ps, sec, key);
	struct strv items = { 0 };
	const char **groups = group_names(ps->p);
	char hint[128];

	if (!v) {
		side->any = true;
		goto out;
	}
	split_list(ps, sec, key, v, &items);
	side->refs = xcalloc(items.n, sizeof(*side->refs));
	for (size_t i = 0; i < items.n; i++) {
		const char *it = items.v[i], *why, *rest = after_not(it);
		struct dfw_ref r = { 0 };
		long g, vm;

		if (rest && i > 0) {
			ERR(ps, sec, key, "%s: 'not' may only start the list; it negates the "
			    "whole list ('not a, b': every address in neither a nor b)", key);
			continue;
		}
		if (rest) {
			side->negate = true;
			if (!*rest) {
				ERR(ps, sec, key, "%s: 'not' must be followed by a group, VM or "
				    "address, e.g. 'not desktops'", key);
				continue;
			}
			it = rest;
		}
		if (!strcasecmp(it, "any")) {
			if (side->negate)
				ERR(ps, sec, key, "%s: 'not any' matches no address; disable the "
				    "rule instead", key);
			else
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

/* --- services ----------------------------------------------------------- */

static size_t *name_index(const void *base, size_t n, size_t stride);
static long find_name(const void *base, size_t stride, const size_t *idx, size_t n,
		      const char *name);

struct type_name {
	int n;
	const char *name;
};

/* nft's names of ICMP and ICMPv6 types, so that rules read like nft's. */
static const struct type_name icmp4_types[] = {
	{ 0, "echo-reply" }, { 3, "destination-unreachable" }, { 4, "source-quench" },
	{ 5, "redirect" }, { 8, "echo-request" }, { 9, "router-advertisement" },
	{ 10, "router-solicitation" }, { 11, "time-exceeded" }, { 12, "parameter-problem" },
	{ 13, "timestamp-request" }, { 14, "timestamp-reply" }, { 15, "info-request" },
	{ 16, "info-reply" }, { 17, "address-mask-request" }, { 18, "address-mask-reply" },
};
static const struct type_name icmp6_types[] = {
	{ 1, "destination-unreachable" }, { 2, "packet-too-big" }, { 3, "time-exceeded" },
	{ 4, "parameter-problem" }, { 128, "echo-request" }, { 129, "echo-reply" },
	{ 130, "mld-listener-query" }, { 131, "mld-listener-report" },
	{ 132, "mld-listener-done" }, { 133, "nd-router-solicit" },
	{ 134, "nd-router-advert" }, { 135, "nd-neighbor-solicit" },
	{ 136, "nd-neighbor-advert" }, { 137, "nd-redirect" }, { 138, "router-renumbering" },
	{ 143, "mld2-listener-report" },
};
/* IP protocols by name, for proto/NAME (/etc/protocols' names). */
static const struct type_name ip_protos[] = {
	{ 1, "icmp" }, { 2, "igmp" }, { 4, "ipip" }, { 6, "tcp" }, { 8, "egp" },
	{ 17, "udp" }, { 46, "rsvp" }, { 47, "gre" }, { 50, "esp" }, { 51, "ah" },
	{ 58, "icmpv6" }, { 89, "ospf" }, { 103, "pim" }, { 112, "vrrp" }, { 115, "l2tp" },
	{ 132, "sctp" }, { 136, "udplite" },
};

static const struct type_name *icmp_table(uint8_t proto, size_t *n)
{
	*n = proto == IPPROTO_ICMP ? ARRAY_SIZE(icmp4_types) : ARRAY_SIZE(icmp6_types);
	return proto == IPPROTO_ICMP ? icmp4_types : icmp6_types;
}

static int type_by_name(const struct type_name *t, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcasecmp(t[i].name, name))
			return t[i].n;
	return -1;
}

/* The names of a table, for suggestions; the caller frees the array. */
static const char **type_names(const struct type_name *t, size_t n)
{
	const char **v = xcalloc(n, sizeof(*v));

	for (size_t i = 0; i < n; i++)
		v[i] = t[i].name;
	return v;
}

const char *icmp_type_name(uint8_t proto, int type)
{
	const struct type_name *t;
	size_t n;

	if (proto != IPPROTO_ICMP && proto != IPPROTO_ICMPV6)
		return NULL;
	t = icmp_table(proto, &n);
	for (size_t i = 0; i < n; i++)
		if (t[i].n == type)
			return t[i].name;
	return NULL;
}

void service_format(const struct dfw_service *s, char *buf, size_t len)
{
	const char *icmp = s->proto == IPPROTO_ICMP ? "icmp" : "icmpv6";
	const char *pname = s->proto == IPPROTO_TCP ? "tcp" : "udp";
	const char *tname = icmp_type_name(s->proto, s->icmp_type);

	switch (s->proto) {
	case 0:
		snprintf(buf, len, "any");
		break;
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		if (!s->lo)
			snprintf(buf, len, "%s", pname);
		else if (s->lo == s->hi)
			snprintf(buf, len, "%s/%u", pname, s->lo);
		else
			snprintf(buf, len, "%s/%u-%u", pname, s->lo, s->hi);
		break;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (s->icmp_type < 0)
			snprintf(buf, len, "%s", icmp);
		else if (s->icmp_code >= 0)
			snprintf(buf, len, "%s/%d:%d", icmp, s->icmp_type, s->icmp_code);
		else if (tname)
			snprintf(buf, len, "%s/%s", icmp, tname);
		else
			snprintf(buf, len, "%s/%d", icmp, s->icmp_type);
		break;
	default:
		snprintf(buf, len, "proto/%u", s->proto);
		break;
	}
}

static bool all_digits(const char *s)
{
	return *s && s[strspn(s, "0123456789")] == '\0';
}

/* The words that start a service literal; they cannot name service objects. */
enum svc_kw { KW_TCP, KW_UDP, KW_ICMP, KW_ICMPV6, KW_ANY, KW_PROTO };
static const char *const svc_keywords[] = { "tcp", "udp", "icmp", "icmpv6", "any", "proto" };

enum lit { LIT_NAME = -2, LIT_BAD = -1, LIT_OK = 0, LIT_ANY = 1 };

/* tcp/PORT or tcp/LOW-HIGH (arg is what follows the slash). */
static enum lit svc_ports(const char *item, char *arg, struct dfw_service *s,
			  char *why, size_t len)
{
	char *dash = strchr(arg, '-');
	uint64_t lo, hi = 0;

	if (dash)
		*dash++ = '\0';
	if (parse_u64(arg, 65535, &lo) < 0 || lo == 0 ||
	    (dash && (parse_u64(dash, 65535, &hi) < 0 || hi < lo))) {
		snprintf(why, len, "'%s': ports are 1-65535, a range is LOW-HIGH", item);
		return LIT_BAD;
	}
	s->lo = (uint16_t)lo;
	s->hi = (uint16_t)(dash ? hi : lo);
	return LIT_OK;
}

/* icmp/TYPE or icmp/TYPE:CODE, TYPE a number or a name of that family. */
static enum lit svc_icmp(const char *item, char *arg, struct dfw_service *s,
			 char *why, size_t len)
{
	const char *fam = s->proto == IPPROTO_ICMP ? "ICMP" : "ICMPv6";
	uint8_t other = s->proto == IPPROTO_ICMP ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
	char *colon = strchr(arg, ':');
	const struct type_name *t;
	uint64_t n;
	size_t nt;
	int type;

	if (colon)
		*colon++ = '\0';
	t = icmp_table(s->proto, &nt);
	if (all_digits(arg)) {
		if (parse_u64(arg, 255, &n) < 0) {
			snprintf(why, len, "'%s': an %s type is 0-255 or a name such as "
				 "echo-request", item, fam);
			return LIT_BAD;
		}
		type = (int)n;
	} else if ((type = type_by_name(t, nt, arg)) < 0) {
		const char **names = type_names(t, nt);
		size_t no;
		const struct type_name *ot = icmp_table(other, &no);
		char hint[128];

		if (type_by_name(ot, no, arg) >= 0)
			snprintf(why, len, "'%s': '%s' is an %s type; write %s/%s", item, arg,
				 other == IPPROTO_ICMP ? "ICMP" : "ICMPv6",
				 other == IPPROTO_ICMP ? "icmp" : "icmpv6", arg);
		else
			snprintf(why, len, "'%s': unknown %s type '%s'%s; a type is 0-255 or a "
				 "name such as echo-request", item, fam, arg,
				 suggest(hint, sizeof(hint), arg, names, nt));
		free(names);
		return LIT_BAD;
	}
	s->icmp_type = (int16_t)type;
	if (colon) {
		if (parse_u64(colon, 255, &n) < 0) {
			snprintf(why, len, "'%s': an %s code is 0-255", item, fam);
			return LIT_BAD;
		}
		s->icmp_code = (int16_t)n;
	}
	return LIT_OK;
}

/* proto/N or proto/NAME; the protocols that have their own syntax become it. */
static enum lit svc_proto(const char *item, const char *arg, struct dfw_service *s,
			  char *why, size_t len)
{
	uint64_t n;
	int num;

	if (all_digits(arg)) {
		if (parse_u64(arg, 255, &n) < 0) {
			snprintf(why, len, "'%s': a protocol number is 1-255", item);
			return LIT_BAD;
		}
		num = (int)n;
	} else if ((num = type_by_name(ip_protos, ARRAY_SIZE(ip_protos), arg)) < 0) {
		const char **names = type_names(ip_protos, ARRAY_SIZE(ip_protos));
		char hint[128];

		snprintf(why, len, "'%s': unknown protocol '%s'%s; write a number 1-255 or a "
			 "name such as gre, esp, sctp", item, arg,
			 suggest(hint, sizeof(hint), arg, names, ARRAY_SIZE(ip_protos)));
		free(names);
		return LIT_BAD;
	}
	if (num == 0) {
		snprintf(why, len, "'%s': protocol 0 is reserved; write any for every protocol",
			 item);
		return LIT_BAD;
	}
	/* tcp, udp, icmp and icmpv6: the same as their own keyword alone */
	s->proto = (uint8_t)num;
	return LIT_OK;
}

/* Parses one service literal into s.  LIT_NAME: item is not a literal (so
 * it may name a service object); LIT_BAD: why says what is wrong. */
static enum lit service_literal(const char *item, struct dfw_service *s, char *why,
				size_t len)
{
	char buf[MAX_LINE + 1], *arg, hint[128];
	int kw;

	*s = (struct dfw_service){ .icmp_type = -1, .icmp_code = -1 };
	snprintf(buf, sizeof(buf), "%s", item);
	if ((arg = strchr(buf, '/')))
		*arg++ = '\0';
	kw = find_word(buf, svc_keywords, ARRAY_SIZE(svc_keywords));
	switch (kw) {
	case -1:
		if (!arg)
			return LIT_NAME;
		if (type_by_name(ip_protos, ARRAY_SIZE(ip_protos), buf) >= 0)
			snprintf(why, len, "unknown protocol '%s'; other IP protocols are "
				 "written proto/%s, without ports", buf, buf);
		else
			snprintf(why, len, "unknown protocol '%s'%s", buf,
				 suggest(hint, sizeof(hint), buf, svc_keywords,
					 ARRAY_SIZE(svc_keywords)));
		return LIT_BAD;
	case KW_ANY:
		if (arg) {
			snprintf(why, len, "'any' takes no port");
			return LIT_BAD;
		}
		return LIT_ANY;
	case KW_TCP:
	case KW_UDP:
		s->proto = kw == KW_TCP ? IPPROTO_TCP : IPPROTO_UDP;
		return arg ? svc_ports(item, arg, s, why, len) : LIT_OK;
	case KW_ICMP:
	case KW_ICMPV6:
		s->proto = kw == KW_ICMP ? IPPROTO_ICMP : IPPROTO_ICMPV6;
		return arg ? svc_icmp(item, arg, s, why, len) : LIT_OK;
	case KW_PROTO:
		if (!arg) {
			snprintf(why, len, "'proto' needs a protocol: proto/NUMBER or "
				 "proto/NAME, e.g. proto/gre");
			return LIT_BAD;
		}
		return svc_proto(item, arg, s, why, len);
	}
	abort();
}

static bool svc_equal(const struct dfw_service *a, const struct dfw_service *b)
{
	return a->proto == b->proto && a->lo == b->lo && a->hi == b->hi &&
	       a->icmp_type == b->icmp_type && a->icmp_code == b->icmp_code;
}

/* Appends s unless the list has it already: repeated entries (often through
 * service objects) are folded, so a list never holds one service twice. */
static void svc_append(struct dfw_service **v, size_t *n, size_t *cap,
		       const struct dfw_service *s)
{
	for (size_t i = 0; i < *n; i++)
		if (svc_equal(&(*v)[i], s))
			return;
	grow((void **)v, cap, *n + 1, sizeof(**v));
	(*v)[(*n)++] = *s;
}

/* One entry of a services list: a literal, or a service object. */
struct svc_item {
	bool ref;
	size_t obj;               /* ref: index in p->services */
	struct dfw_service svc;   /* otherwise */
};

static long find_service(const struct parser *ps, const char *name);

static void unknown_service(struct parser *ps, const char *sec, const char *key,
			    const char *name)
{
	const struct dfw_policy *p = ps->p;
	const char **all = xcalloc(p->nservices + ARRAY_SIZE(svc_keywords), sizeof(*all));
	size_t n = 0;
	char hint[128];

	for (size_t i = 0; i < p->nservices; i++)
		all[n++] = p->services[i].name;
	for (size_t i = 0; i < ARRAY_SIZE(svc_keywords); i++)
		all[n++] = svc_keywords[i];
	if (all_digits(name))
		ERR(ps, sec, key, "%s: '%s': a port needs its protocol, e.g. tcp/%s or udp/%s",
		    key, name, name, name);
	else
		ERR(ps, sec, key, "%s: unknown service '%s'%s", key, name,
		    suggest(hint, sizeof(hint), name, all, n));
	free(all);
}

/* Parses the list in sec:key (a rule's services or a service object's
 * entries) into items; *any is set when 'any' was among them. */
static struct svc_item *parse_svc_items(struct parser *ps, const char *sec, const char *key,
					bool object, size_t *n, bool *any)
{
	const char *v = get(ps, sec, key);
	struct strv items = { 0 };
	struct svc_item *out;

	*n = 0;
	*any = false;
	if (!v)
		return NULL;
	split_list(ps, sec, key, v, &items);
	out = xcalloc(items.n, sizeof(*out));
	for (size_t i = 0; i < items.n; i++) {
		struct svc_item it = { 0 };
		char why[3 * MAX_LINE];
		long obj;

		switch (service_literal(items.v[i], &it.svc, why, sizeof(why))) {
		case LIT_BAD:
			ERR(ps, sec, key, "%s: %s", key, why);
			continue;
		case LIT_ANY:
			*any = true;
			if (object)
				ERR(ps, sec, key, "%s: 'any' cannot be part of a service object; "
				    "a rule with services = any allows every service", key);
			else if (items.n > 1)
				ERR(ps, sec, key, "%s: 'any' cannot be combined with other items",
				    key);
			continue;
		case LIT_NAME:
			if ((obj = find_service(ps, items.v[i])) < 0) {
				unknown_service(ps, sec, key, items.v[i]);
				continue;
			}
			it.ref = true;
			it.obj = (size_t)obj;
			break;
		case LIT_OK:
			break;
		}
		out[(*n)++] = it;
	}
	strv_free(&items);
	return out;
}

/* Expands items into a service list; objects must be expanded already. */
static void expand_svc_items(const struct dfw_policy *p, const struct svc_item *items,
			     size_t n, struct dfw_service **svcs, size_t *nsvcs)
{
	size_t cap = 0;

	for (size_t i = 0; i < n; i++) {
		const struct dfw_service_obj *o = items[i].ref ? &p->services[items[i].obj] : NULL;

		if (!o)
			svc_append(svcs, nsvcs, &cap, &items[i].svc);
		for (size_t k = 0; o && k < o->nsvcs; k++)
			svc_append(svcs, nsvcs, &cap, &o->svcs[k]);
	}
}

static void parse_services(struct parser *ps, const char *sec, struct dfw_rule *r)
{
	size_t n;
	bool any;
	struct svc_item *items = parse_svc_items(ps, sec, "services", false, &n, &any);

	/* any, or no key at all, is every service: nsvcs = 0 (an empty value
	 * is an error, from split_list) */
	if (!any)
		expand_svc_items(ps->p, items, n, &r->svcs, &r->nsvcs);
	free(items);
}

/* Reports the cycle path[0..len) -> path[0] of service objects. */
static void report_service_cycle(struct parser *ps, const size_t *path, size_t len)
{
	const struct dfw_service_obj *first = &ps->p->services[path[0]];
	char buf[MAX_LINE * 2];
	size_t off = 0;

	for (size_t i = 0; i < len && off < sizeof(buf); i++)
		off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s -> ",
					ps->p->services[path[i]].name);
	if (off < sizeof(buf))
		snprintf(buf + off, sizeof(buf) - off, "%s", first->name);
	diag_add(ps->d, ps->file, first->line, "service %s: cycle %s", first->name, buf);
}

struct expand_ctx {
	struct parser *ps;
	struct svc_item **items;
	const size_t *nitems;
};

static size_t svc_degree(void *arg, size_t o)
{
	return ((struct expand_ctx *)arg)->nitems[o];
}

static size_t svc_edge(void *arg, size_t o, size_t k)
{
	const struct svc_item *it = &((struct expand_ctx *)arg)->items[o][k];

	return it->ref ? it->obj : DFS_NO_EDGE;
}

static void svc_done(void *arg, size_t o)
{
	struct expand_ctx *c = arg;
	struct dfw_policy *p = c->ps->p;

	expand_svc_items(p, c->items[o], c->nitems[o], &p->services[o].svcs,
			 &p->services[o].nsvcs);
}

static void svc_cycle(void *arg, const size_t *path, size_t len)
{
	report_service_cycle(((struct expand_ctx *)arg)->ps, path, len);
}

/* Expands every service object, each after those it lists (depth-first,
 * post-order), reporting each cycle found. */
static void expand_services(struct parser *ps, struct svc_item **items, const size_t *nitems)
{
	static const struct dfs_ops ops = { svc_degree, svc_edge, svc_done, svc_cycle };
	struct expand_ctx c = { ps, items, nitems };

	dfs_postorder(ps->p->nservices, &ops, &c);
}

/* [service NAME] sections: all names first, since objects may list others. */
static void parse_service_objects(struct parser *ps)
{
	struct dfw_policy *p = ps->p;
	struct svc_item **items;
	size_t *nitems, cap = 0;

	for (size_t i = 0; i < ps->nsecs_parse; i++) {
		const char *sec = ps->secs[i].name, *name = sec + 8;
		struct dfw_service_obj *o;

		if (strncmp(sec, "service ", 8))
			continue;
		if (!policy_name_ok(name))
			diag_add(ps->d, ps->file, ps->secs[i].line,
				 "service name '%s': 1-48 letters, digits and . _ -", name);
		else if (find_word(name, svc_keywords, ARRAY_SIZE(svc_keywords)) >= 0)
			diag_add(ps->d, ps->file, ps->secs[i].line,
				 "service name '%s' is a protocol keyword; choose another name",
				 name);
		grow((void **)&p->services, &cap, p->nservices + 1, sizeof(*p->services));
		o = &p->services[p->nservices++];
		*o = (struct dfw_service_obj){ .name = xstrdup(name), .line = ps->secs[i].line };
	}
	ps->service_by_name = name_index(p->services, p->nservices, sizeof(*p->services));
	items = xcalloc(p->nservices, sizeof(*items));
	nitems = xcalloc(p->nservices, sizeof(*nitems));
	for (size_t i = 0; i < p->nservices; i++) {
		char sec[MAX_LINE + 16];
		bool any;

		snprintf(sec, sizeof(sec), "service %s", p->services[i].name);
		check_keys(ps, sec, service_keys, ARRAY_SIZE(service_keys));
		if (require(ps, sec, "entries"))
			items[i] = parse_svc_items(ps, sec, "entries", true, &nitems[i], &any);
	}
	expand_services(ps, items, nitems);
	for (size_t i = 0; i < p->nservices; i++)
		free(items[i]);
	free(items);
	free(nitems);
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
	if (!v || !strcasecmp(v, "any"))
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
	bool derived; /* OWN_ADDR: the VM's link-local address from its MAC */
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

/* MACs, host ports and addresses must be unique: sort, compare neighbours.
 * A VM's addresses include the link-local one its MAC gives (its port may
 * send from it, and groups hold it): another VM that declares it would
 * pass as the first. */
static void check_inventory(struct parser *ps)
{
	const struct inventory *inv = &ps->p->inv;
	struct owned *o = NULL;
	size_t n = 0, cap = 0;

	for (size_t i = 0; i < inv->nvms; i++) {
		const struct vm *vm = &inv->vms[i];
		struct dfw_addr ll = addr_link_local(vm->mac);
		bool declared = false;

		grow((void **)&o, &cap, n + 3 + vm->naddrs, sizeof(*o));
		o[n] = (struct owned){ .kind = OWN_MAC, .vm = i };
		memcpy(o[n++].u.mac, vm->mac, 6);
		o[n++] = (struct owned){ .kind = OWN_PORT, .vm = i };
		for (size_t a = 0; a < vm->naddrs; a++) {
			declared |= !addr_cmp(&vm->addrs[a], &ll);
			o[n++] = (struct owned){ .kind = OWN_ADDR, .vm = i, .u.addr = vm->addrs[a] };
		}
		if (!declared)
			o[n++] = (struct owned){ .kind = OWN_ADDR, .vm = i, .derived = true,
						 .u.addr = ll };
	}
	if (n)
		qsort_r(o, n, sizeof(*o), cmp_owned, inv->vms);
	for (size_t i = 1; i < n; i++) {
		const struct vm *a = &inv->vms[o[i].vm], *b = &inv->vms[o[i - 1].vm];
		const char *by = "";
		char what[128];

		/* Two derived from one MAC: the MAC's error says it. */
		if (o[i].vm == o[i - 1].vm || o[i].kind != o[i - 1].kind ||
		    (o[i].derived && o[i - 1].derived))
			continue;
		if (o[i].kind == OWN_MAC && !memcmp(o[i].u.mac, o[i - 1].u.mac, 6)) {
			char mac[18];

			mac_format(o[i].u.mac, mac, sizeof(mac));
			snprintf(what, sizeof(what), "MAC %s", mac);
		} else if (o[i].kind == OWN_ADDR && !addr_cmp(&o[i].u.addr, &o[i - 1].u.addr)) {
			char buf[64];

			addr_format(&o[i].u.addr, buf, sizeof(buf));
			snprintf(what, sizeof(what), "address %s%s", buf,
				 o[i].derived ? " (its link-local address, from its MAC)" : "");
			by = o[i - 1].derived ? " (its link-local address, from its MAC)" : "";
		} else if (o[i].kind == OWN_PORT && !strcmp(a->host, b->host) &&
			   !strcmp(a->port, b->port)) {
			snprintf(what, sizeof(what), "port %s on host %s", a->port, a->host);
		} else {
			continue;
		}
		diag_add(ps->d, ps->file, a->line, "VM %s: %s already used by VM %s%s",
			 a->name, what, b->name, by);
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

static long find_service(const struct parser *ps, const char *name)
{
	return find_name(ps->p->services, sizeof(*ps->p->services), ps->service_by_name,
			 ps->p->nservices, name);
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
		if (!strcmp(kind, "vm") || !strcmp(kind, "group") || !strcmp(kind, "service") ||
		    !strcmp(kind, "rule")) {
			if (!arg || !*arg)
				diag_add(ps->d, ps->file, ps->secs[i].line, "section [%s] needs %s: [%s %s]",
					 kind, strcmp(kind, "rule") ? "a name" : "an id", kind,
					 strcmp(kind, "rule") ? "NAME" : "ID");
			else if (!strcmp(kind, "group")) {
				ngroups++;
				check_name(ps, ps->secs[i].line, "group", arg);
			}
			continue;
		}
		diag_add(ps->d, ps->file, ps->secs[i].line,
			 "unknown section [%s]; sections are [global], [tags], [detection], [netthreat], "
			 "[vm NAME], [group NAME], [service NAME], [rule ID]%s",
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
	p->dhcp_servers = resolve_vms(ps, "global", "dhcp_servers", &p->ndhcp_servers);
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
	parse_service_objects(ps);
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
	free(ps.service_by_name);
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
	FILE *f = fopen(path, "r");

	if (!f) {
		if (text_out)
			*text_out = NULL;
		diag_add(d, path, 0, "%s", strerror(errno));
		return NULL;
	}
	return policy_read(f, path, text_out, d);
}

struct dfw_policy *policy_read(FILE *f, const char *path, char **text_out, struct diag *d)
{
	struct dfw_policy *p = NULL;
	char *text = NULL;
	size_t len = 0;

	if (text_out)
		*text_out = NULL;
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
	for (size_t i = 0; i < p->nservices; i++) {
		free(p->services[i].name);
		free(p->services[i].svcs);
	}
	free(p->services);
	free(p->vm_by_name);
	free(p->dhcp_servers);
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

/* --- warnings ----------------------------------------------------------- */

/* Containment is judged from the text of the policy only, so that a
 * warning is always true: the same group or VM, a CIDR inside a CIDR, a
 * port range inside a port range.  Anything subtler (a VM inside a group,
 * two ranges that together cover a third) is left unjudged. */

static bool ref_covers(const struct dfw_ref *a, const struct dfw_ref *b)
{
	if (a->kind != b->kind)
		return false;
	return a->kind == REF_ADDR ? addr_contains(&a->addr, &b->addr) : a->idx == b->idx;
}

static bool ref_equal(const struct dfw_ref *a, const struct dfw_ref *b)
{
	if (a->kind != b->kind)
		return false;
	return a->kind == REF_ADDR ? !addr_cmp(&a->addr, &b->addr) : a->idx == b->idx;
}

/* Every ref of b is covered (equal) by some ref of a. */
static bool refs_within(const struct dfw_side *a, const struct dfw_side *b, bool equal)
{
	for (size_t i = 0; i < b->nrefs; i++) {
		size_t j = 0;

		while (j < a->nrefs && !(equal ? ref_equal(&a->refs[j], &b->refs[i])
					       : ref_covers(&a->refs[j], &b->refs[i])))
			j++;
		if (j == a->nrefs)
			return false;
	}
	return true;
}

/* Whether side a holds every address of side b.  Negated sides count only
 * when they negate the same list. */
static bool side_covers(const struct dfw_side *a, const struct dfw_side *b)
{
	if (a->any)
		return true;
	if (b->any)
		return false;
	if (a->negate || b->negate)
		return a->negate && b->negate && refs_within(a, b, true) && refs_within(b, a, true);
	return refs_within(a, b, false);
}

static bool svc_covers(const struct dfw_service *a, const struct dfw_service *b)
{
	if (a->proto != b->proto)
		return false;
	switch (a->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		return !a->lo || (b->lo && a->lo <= b->lo && b->hi <= a->hi);
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		return a->icmp_type < 0 || (a->icmp_type == b->icmp_type &&
					    (a->icmp_code < 0 || a->icmp_code == b->icmp_code));
	}
	return true;
}

static bool svcs_cover(const struct dfw_rule *a, const struct dfw_rule *b)
{
	if (!a->nsvcs)
		return true;
	if (!b->nsvcs)
		return false;
	for (size_t i = 0; i < b->nsvcs; i++) {
		size_t j = 0;

		while (j < a->nsvcs && !svc_covers(&a->svcs[j], &b->svcs[i]))
			j++;
		if (j == a->nsvcs)
			return false;
	}
	return true;
}

static bool applied_covers(const struct dfw_rule *a, const struct dfw_rule *b)
{
	if (a->applied_everywhere)
		return true;
	if (b->applied_everywhere)
		return false;
	for (size_t i = 0; i < b->napplied; i++) {
		size_t j = 0;

		while (j < a->napplied && a->applied_to[j] != b->applied_to[i])
			j++;
		if (j == a->napplied)
			return false;
	}
	return true;
}

/* Rule a matches every packet that rule b matches. */
static bool rule_covers(const struct dfw_rule *a, const struct dfw_rule *b)
{
	return (a->dir & b->dir) == b->dir && applied_covers(a, b) && svcs_cover(a, b) &&
	       side_covers(&a->src, &b->src) && side_covers(&a->dst, &b->dst);
}

static const char *action_verb(enum dfw_action a)
{
	return a == ACT_ALLOW ? "allows" : a == ACT_DROP ? "drops" : "rejects";
}

void policy_warnings(const struct dfw_policy *p, struct diag *w)
{
	for (size_t g = 0; g < p->inv.ngroups; g++) {
		const struct group_def *gd = &p->inv.groups[g];

		if (!gd->nmatch && !gd->nmembers && !gd->nincludes && !gd->naddrs)
			diag_add(w, p->file, gd->line, "warning: group %s can never have members "
				 "(it has no match, members, include or addresses)", gd->name);
	}
	for (size_t i = 0; i < p->nrules; i++) {
		const struct dfw_rule *b = &p->rules[i];

		if (b->disabled)
			continue;
		if (b->src.nrefs == 1 && b->dst.nrefs == 1 && !b->src.negate && !b->dst.negate &&
		    b->src.refs[0].kind == REF_VM && b->dst.refs[0].kind == REF_VM &&
		    b->src.refs[0].idx == b->dst.refs[0].idx)
			diag_add(w, p->file, b->line, "warning: rule %u: sources and destinations "
				 "are the same VM %s; a VM's traffic to itself never crosses the "
				 "bridge, so the rule never matches", b->id,
				 p->inv.vms[b->src.refs[0].idx].name);
		for (size_t j = 0; j < i; j++) {
			const struct dfw_rule *a = &p->rules[j];

			if (a->disabled || !rule_covers(a, b))
				continue;
			if (a->action == b->action)
				diag_add(w, p->file, b->line, "warning: rule %u never matches: rule %u "
					 "(line %d) comes first and covers it; redundant, both %s",
					 b->id, a->id, a->line, action_name(a->action));
			else
				diag_add(w, p->file, b->line, "warning: rule %u never matches: rule %u "
					 "(line %d) comes first and covers it; conflicting, rule %u "
					 "%s what rule %u would %s", b->id, a->id, a->line, a->id,
					 action_verb(a->action), b->id, action_name(b->action));
			break;
		}
	}
}

int service_parse(const char *item, struct dfw_service *s, char *why, size_t len)
{
	switch (service_literal(item, s, why, len)) {
	case LIT_OK:
		return 0;
	case LIT_ANY:
		return 1;
	case LIT_NAME:
		snprintf(why, len, "'%s' is not a service (tcp/PORT, udp/PORT, icmp/TYPE, proto/N)",
			 item);
		return -1;
	case LIT_BAD:
		break;
	}
	return -1;
}

const struct dfw_rule *policy_find_rule(const struct dfw_policy *p, uint32_t id)
{
	for (size_t i = 0; i < p->nrules; i++)
		if (p->rules[i].id == id)
			return &p->rules[i];
	return NULL;
}
