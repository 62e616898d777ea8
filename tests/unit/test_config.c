/* Unit tests of the policy parser (tagger/config.c): the shipped example,
 * every class of bad input with its exact file:line and message, the
 * collection of several errors, and the accepted forms of each key.
 *
 * Policies are small INI strings built here; most append to BASE, whose
 * line count is fixed (BASE_LINES) so that expected line numbers read as
 * "BASE_LINES + n", the n-th appended line. */
#include "groups/groups.h"
#include "tagger/config.h"
#include "tests/unit/unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BASE \
	"[global]\n"                          /*  1 */ \
	"default_action = drop\n"             /*  2 */ \
	"[tags]\n"                            /*  3 */ \
	"names = threat.high, role.web\n"     /*  4 */ \
	"[vm desktop1]\n"                     /*  5 */ \
	"host = hv1\n"                        /*  6 */ \
	"port = vnet-d1\n"                    /*  7 */ \
	"mac = 02:00:00:00:00:01\n"           /*  8 */ \
	"addresses = 10.0.0.1, fd00::1\n"     /*  9 */ \
	"[vm server1]\n"                      /* 10 */ \
	"host = hv1\n"                        /* 11 */ \
	"port = vnet-s1\n"                    /* 12 */ \
	"mac = 02:00:00:00:00:02\n"           /* 13 */ \
	"addresses = 10.0.0.2, fd00::2\n"     /* 14 */ \
	"[group desktops]\n"                  /* 15 */ \
	"match = name starts-with desktop\n"  /* 16 */ \
	"[group servers]\n"                   /* 17 */ \
	"members = server1\n"                 /* 18 */
#define BASE_LINES 18
#define L(n) (BASE_LINES + (n))

static const char *const FILE_NAME = "t.ini";

/* Prints every diagnostic, so that a failing expectation shows what came. */
static void dump(const struct diag *d, int line)
{
	fprintf(stderr, "\n  (test line %d) %zu diagnostics:\n", line, d->n);
	for (size_t i = 0; i < d->n; i++)
		fprintf(stderr, "    %s\n", d->msgs[i]);
}

/* True when some message starts with "t.ini:LINE: " (or "t.ini: " when line
 * is 0) and contains every non-NULL phrase. */
static bool has_msg(const struct diag *d, int line, const char *p1, const char *p2)
{
	char prefix[64];

	if (line > 0)
		snprintf(prefix, sizeof(prefix), "%s:%d: ", FILE_NAME, line);
	else
		snprintf(prefix, sizeof(prefix), "%s: ", FILE_NAME);
	for (size_t i = 0; i < d->n; i++) {
		const char *m = d->msgs[i];

		if (strncmp(m, prefix, strlen(prefix)))
			continue;
		if (p1 && !strstr(m + strlen(prefix), p1))
			continue;
		if (p2 && !strstr(m + strlen(prefix), p2))
			continue;
		return true;
	}
	return false;
}

/* Parses text and expects failure with a message at line containing p1 and
 * p2; n is the exact number of diagnostics, or -1 not to check it.
 * Assertions are reported at the caller's line. */
static void expect_err_at(int at, const char *text, int line, const char *p1,
			  const char *p2, int n)
{
	struct diag d = { 0 };
	struct dfw_policy *p = policy_parse(text, FILE_NAME, &d);
	bool ok = !p && has_msg(&d, line, p1, p2) && (n < 0 || d.n == (size_t)n);

	CU_assertImplementation(ok, (unsigned)at, "expected diagnostic", __FILE__, "", CU_FALSE);
	if (!ok)
		dump(&d, at);
	policy_free(p);
	diag_free(&d);
}

#define EXPECT_ERR(text, line, p1, p2, n) expect_err_at(__LINE__, text, line, p1, p2, n)

/* Parses text that must be valid; the caller frees the policy. */
static struct dfw_policy *parse_ok_at(int at, const char *text)
{
	struct diag d = { 0 };
	struct dfw_policy *p = policy_parse(text, FILE_NAME, &d);
	bool ok = p && d.n == 0;

	if (!ok)
		dump(&d, at);
	diag_free(&d); /* before a fatal assertion leaves this function */
	CU_assertImplementation(ok, (unsigned)at, "policy parses", __FILE__, "", CU_TRUE);
	return p;
}

#define PARSE_OK(text) parse_ok_at(__LINE__, text)

static const struct dfw_rule *rule_by_id(const struct dfw_policy *p, uint32_t id)
{
	for (size_t i = 0; i < p->nrules; i++)
		if (p->rules[i].id == id)
			return &p->rules[i];
	CU_FAIL_FATAL("no rule with that id");
	return NULL;
}

static bool addr_is(const struct dfw_addr *a, const char *s)
{
	char buf[64];

	addr_format(a, buf, sizeof(buf));
	return !strcmp(buf, s);
}

/* ---- the shipped example -------------------------------------------------- */

static void test_vdi(void)
{
	static const uint32_t order[] = { 100, 101, 110, 111, 200, 201, 210, 220, 230, 240 };
	static const char *const vms[] = {
		"desktop1", "desktop2", "desktop3", "desktop4", "cs1", "fs1", "dc1"
	};
	static const char *const groups[] = {
		"quarantine", "desktops", "connection-servers", "file-servers",
		"infra-servers", "servers"
	};
	struct diag d = { 0 };
	char *text = NULL;
	struct dfw_policy *p = policy_load("configs/vdi.ini", &text, &d);
	const struct vm *v;
	const struct group_def *g;
	const struct dfw_rule *r;
	long q, desk, cs;

	if (!p)
		dump(&d, __LINE__);
	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	CU_ASSERT_EQUAL(d.n, 0);
	CU_ASSERT_PTR_NOT_NULL_FATAL(text);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "[rule 240]"));
	CU_ASSERT_STRING_EQUAL(p->file, "configs/vdi.ini");

	CU_ASSERT_EQUAL_FATAL(p->inv.nvms, 7);
	CU_ASSERT_EQUAL_FATAL(p->inv.ngroups, 6);
	CU_ASSERT_EQUAL_FATAL(p->nrules, 10);
	CU_ASSERT_EQUAL_FATAL(p->tags.n, 3);
	CU_ASSERT_STRING_EQUAL(p->tags.v[0], "threat.high");
	CU_ASSERT_STRING_EQUAL(p->tags.v[1], "threat.medium");
	CU_ASSERT_STRING_EQUAL(p->tags.v[2], "threat.low");
	CU_ASSERT_EQUAL(p->default_action, ACT_DROP);
	CU_ASSERT_FALSE(p->default_log);

	/* Inventory and groups in file order. */
	for (size_t i = 0; i < 7; i++)
		CU_ASSERT_STRING_EQUAL(p->inv.vms[i].name, vms[i]);
	for (size_t i = 0; i < 6; i++)
		CU_ASSERT_STRING_EQUAL(p->inv.groups[i].name, groups[i]);
	/* Rules by category (emergency first), then file order. */
	for (size_t i = 0; i < 10; i++)
		CU_ASSERT_EQUAL(p->rules[i].id, order[i]);
	for (size_t i = 0; i < 4; i++)
		CU_ASSERT_EQUAL(p->rules[i].category, CAT_EMERGENCY);
	for (size_t i = 4; i < 10; i++)
		CU_ASSERT_EQUAL(p->rules[i].category, CAT_APPLICATION);

	v = &p->inv.vms[0];
	CU_ASSERT_STRING_EQUAL(v->host, "hv1");
	CU_ASSERT_STRING_EQUAL(v->port, "vnet-desktop1");
	CU_ASSERT_STRING_EQUAL(v->os, "windows-10");
	CU_ASSERT_EQUAL(v->mac[0], 0x02);
	CU_ASSERT_EQUAL(v->mac[4], 0x00);
	CU_ASSERT_EQUAL(v->mac[5], 0x11);
	CU_ASSERT_EQUAL_FATAL(v->naddrs, 2);
	CU_ASSERT_TRUE(addr_is(&v->addrs[0], "10.10.0.11"));
	CU_ASSERT_TRUE(addr_is(&v->addrs[1], "fd00:10::11"));
	CU_ASSERT_EQUAL(v->line, 44);
	CU_ASSERT_STRING_EQUAL(p->detection.tag[SEV_MEDIUM], "threat.medium");
	CU_ASSERT_TRUE(p->detection.auto_release);
	CU_ASSERT_EQUAL(p->netthreat.mode, NT_ENFORCE);
	CU_ASSERT_STRING_EQUAL(p->netthreat.tag, "threat.high");

	q = policy_find_group(p, "quarantine");
	desk = policy_find_group(p, "Desktops");
	cs = policy_find_group(p, "connection-servers");
	CU_ASSERT_EQUAL(q, 0);
	CU_ASSERT_EQUAL(desk, 1);
	CU_ASSERT_EQUAL(cs, 2);
	CU_ASSERT_EQUAL(policy_find_group(p, "desktop1"), -1);
	CU_ASSERT_EQUAL(policy_find_vm(p, "DC1"), 6);
	CU_ASSERT_EQUAL(policy_find_vm(p, "desktops"), -1);
	CU_ASSERT_STRING_EQUAL(policy_find_tag(p, "THREAT.LOW"), "threat.low");
	CU_ASSERT_PTR_NULL(policy_find_tag(p, "threat"));

	g = &p->inv.groups[q];
	CU_ASSERT_TRUE(g->quarantine);
	CU_ASSERT_FALSE(g->keep_connections);
	CU_ASSERT_EQUAL_FATAL(g->nmatch, 3);
	CU_ASSERT_EQUAL_FATAL(g->match[2].nconds, 1);
	CU_ASSERT_EQUAL(g->match[2].conds[0].field, COND_TAG);
	CU_ASSERT_EQUAL(g->match[2].conds[0].op, OP_EQUALS);
	CU_ASSERT_STRING_EQUAL(g->match[2].conds[0].value, "threat.low");
	g = &p->inv.groups[desk];
	CU_ASSERT_FALSE(g->quarantine);
	CU_ASSERT_EQUAL_FATAL(g->nmatch, 1);
	CU_ASSERT_EQUAL(g->match[0].conds[0].field, COND_NAME);
	CU_ASSERT_EQUAL(g->match[0].conds[0].op, OP_STARTS_WITH);
	CU_ASSERT_EQUAL_FATAL(g->nexclude_groups, 1);
	CU_ASSERT_EQUAL(g->exclude_groups[0], (size_t)q);
	g = &p->inv.groups[5];
	CU_ASSERT_EQUAL_FATAL(g->nincludes, 3);
	CU_ASSERT_EQUAL(g->includes[0], 2);
	CU_ASSERT_EQUAL(g->includes[1], 3);
	CU_ASSERT_EQUAL(g->includes[2], 4);
	CU_ASSERT_EQUAL_FATAL(p->inv.groups[cs].nmembers, 1);
	CU_ASSERT_EQUAL(p->inv.groups[cs].members[0], 4);

	r = &p->rules[0];
	CU_ASSERT_STRING_EQUAL(r->name, "quarantine: desktop to connection server");
	CU_ASSERT_FALSE(r->src.any);
	CU_ASSERT_EQUAL_FATAL(r->src.nrefs, 1);
	CU_ASSERT_EQUAL(r->src.refs[0].kind, REF_GROUP);
	CU_ASSERT_EQUAL(r->src.refs[0].idx, (size_t)q);
	CU_ASSERT_EQUAL_FATAL(r->nsvcs, 4);
	CU_ASSERT_EQUAL(r->svcs[0].proto, IPPROTO_TCP);
	CU_ASSERT_EQUAL(r->svcs[0].lo, 443);
	CU_ASSERT_EQUAL(r->svcs[0].hi, 443);
	/* Not ICMP type 0: no type at all. */
	CU_ASSERT_EQUAL(r->svcs[0].icmp_type, -1);
	CU_ASSERT_EQUAL(r->svcs[0].icmp_code, -1);
	CU_ASSERT_EQUAL(r->svcs[2].proto, IPPROTO_UDP);
	CU_ASSERT_EQUAL(r->svcs[2].lo, 4172);
	CU_ASSERT_EQUAL(r->action, ACT_ALLOW);
	CU_ASSERT_EQUAL(r->dir, DIR_INOUT);
	CU_ASSERT_TRUE(r->applied_everywhere);
	CU_ASSERT_FALSE(r->log);
	CU_ASSERT_FALSE(r->disabled);

	r = rule_by_id(p, 101);
	CU_ASSERT_EQUAL_FATAL(r->nsvcs, 1);
	CU_ASSERT_EQUAL(r->svcs[0].lo, 4001);
	CU_ASSERT_EQUAL(r->svcs[0].hi, 4002);

	r = rule_by_id(p, 110);
	CU_ASSERT_FALSE(r->src.any);
	CU_ASSERT_TRUE(r->dst.any);
	CU_ASSERT_EQUAL(r->dst.nrefs, 0);
	CU_ASSERT_EQUAL(r->nsvcs, 0);
	CU_ASSERT_EQUAL(r->action, ACT_DROP);
	CU_ASSERT_TRUE(r->log);

	r = rule_by_id(p, 220);
	CU_ASSERT_EQUAL_FATAL(r->nsvcs, 6);
	CU_ASSERT_EQUAL(r->svcs[0].proto, IPPROTO_UDP);
	CU_ASSERT_EQUAL(r->svcs[0].lo, 53);
	CU_ASSERT_EQUAL(r->svcs[4].proto, IPPROTO_ICMP);
	CU_ASSERT_EQUAL(r->svcs[4].lo, 0);
	CU_ASSERT_EQUAL(r->svcs[5].proto, IPPROTO_ICMPV6);
	CU_ASSERT_EQUAL(r->svcs[4].icmp_type, -1);
	CU_ASSERT_EQUAL(r->svcs[5].icmp_type, -1);
	CU_ASSERT_EQUAL(r->svcs[5].icmp_code, -1);
	CU_ASSERT_EQUAL(r->category, CAT_APPLICATION);

	policy_free(p);
	free(text);
	diag_free(&d);
}

static void test_load_errors(void)
{
	struct diag d = { 0 };
	char *text = (char *)"sentinel";
	char path[256];
	FILE *f;

	CU_ASSERT_PTR_NULL(policy_load("configs/no-such-file.ini", &text, &d));
	CU_ASSERT_PTR_NULL(text);
	CU_ASSERT_EQUAL_FATAL(d.n, 1);
	CU_ASSERT_STRING_EQUAL(d.msgs[0], "configs/no-such-file.ini: No such file or directory");
	diag_free(&d);

	/* A NUL byte would hide the rest of the file from the parser. */
	snprintf(path, sizeof(path), "%s/nul.ini", unit_tmpdir());
	f = fopen(path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fwrite("[global]\n\0default_action = allow\n", 1, 33, f);
	fclose(f);
	CU_ASSERT_PTR_NULL(policy_load(path, NULL, &d));
	CU_ASSERT_EQUAL_FATAL(d.n, 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(d.msgs[0], ": contains a NUL byte"));
	diag_free(&d);

	/* Errors in a loaded file carry its path. */
	snprintf(path, sizeof(path), "%s/bad.ini", unit_tmpdir());
	f = fopen(path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs("[global]\ndefault_action = maybe\n", f);
	fclose(f);
	CU_ASSERT_PTR_NULL(policy_load(path, NULL, &d));
	CU_ASSERT_EQUAL_FATAL(d.n, 1);
	{
		char want[512];

		snprintf(want, sizeof(want), "%s:2: default_action: unknown value 'maybe'", path);
		CU_ASSERT_STRING_EQUAL(d.msgs[0], want);
	}
	diag_free(&d);
}

static void test_base_and_empty(void)
{
	struct dfw_policy *p;
	const char *s;
	int lines = 0;

	for (s = BASE; *s; s++)
		lines += *s == '\n';
	CU_ASSERT_EQUAL_FATAL(lines, BASE_LINES);
	p = PARSE_OK(BASE);
	CU_ASSERT_EQUAL(p->inv.nvms, 2);
	CU_ASSERT_EQUAL(p->inv.ngroups, 2);
	CU_ASSERT_EQUAL(p->nrules, 0);
	policy_free(p);

	/* An empty policy is valid: no inventory, default drop. */
	p = PARSE_OK("");
	CU_ASSERT_EQUAL(p->inv.nvms, 0);
	CU_ASSERT_EQUAL(p->default_action, ACT_DROP);
	CU_ASSERT_FALSE(p->default_log);
	policy_free(p);

	/* Comments, blank lines, case of sections and keys, CRLF. */
	p = PARSE_OK("; comment\r\n# another\r\n\r\n  [ GLOBAL ]  \r\nDefault_Action = Reject\r\n"
		     "default_log = on\r\n");
	CU_ASSERT_EQUAL(p->default_action, ACT_REJECT);
	CU_ASSERT_TRUE(p->default_log);
	policy_free(p);
}

/* [global] dhcp_servers: VMs, resolved after the inventory (the key may
 * come first), reported at the key's line when unknown. */
static void test_dhcp_servers(void)
{
	static const char vms[] =
		"[vm a]\nhost = hv1\nport = vnet-a\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n"
		"[vm dhcp1]\nhost = hv1\nport = vnet-d\nmac = 02:00:00:00:00:02\naddresses = 10.0.0.2\n"
		"[group g]\nmembers = a\n";
	char text[1024];
	struct dfw_policy *p;

	snprintf(text, sizeof(text), "[global]\ndhcp_servers = dhcp1, a\n%s", vms);
	p = PARSE_OK(text);
	CU_ASSERT_EQUAL_FATAL(p->ndhcp_servers, 2);
	CU_ASSERT_EQUAL(p->dhcp_servers[0], 1);
	CU_ASSERT_EQUAL(p->dhcp_servers[1], 0);
	policy_free(p);
	p = PARSE_OK(vms);
	CU_ASSERT_EQUAL(p->ndhcp_servers, 0); /* none: only beyond the uplink */
	policy_free(p);
	snprintf(text, sizeof(text), "[global]\ndhcp_servers = dhcp2, g\n%s", vms);
	EXPECT_ERR(text, 2, "dhcp_servers: unknown VM 'dhcp2'", "(did you mean 'dhcp1'?)", 2);
	EXPECT_ERR(text, 2, "dhcp_servers: unknown VM 'g'", NULL, 2);
}

/* ---- syntax --------------------------------------------------------------- */

static void test_sections(void)
{
	EXPECT_ERR(BASE "[rulez 5]\naction = allow\n", L(1), "unknown section [rulez 5]",
		   "(did you mean 'rule'?)", 1);
	EXPECT_ERR(BASE "[globl]\ndefault_log = no\n", L(1), "unknown section [globl]",
		   "(did you mean 'global'?)", 1);
	EXPECT_ERR(BASE "[firewall]\n", L(1), "unknown section [firewall]; sections are "
		   "[global], [tags], [detection], [netthreat], [vm NAME], [group NAME], "
		   "[service NAME], [rule ID]", NULL, 1);
	EXPECT_ERR(BASE "[servce web]\nentries = tcp/80\n", L(1), "unknown section [servce web]",
		   "(did you mean 'service'?)", 1);
	/* A kind without its name or id says what it needs. */
	EXPECT_ERR(BASE "[service]\nentries = tcp/80\n", L(1),
		   "section [service] needs a name: [service NAME]", NULL, 1);
	EXPECT_ERR(BASE "[rule]\naction = allow\n", L(1), "section [rule] needs an id: [rule ID]",
		   NULL, 1);
	EXPECT_ERR(BASE "[vm a\n", L(1), "malformed section header '[vm a'", NULL, -1);
	EXPECT_ERR(BASE "[vm a] x\n", L(1), "malformed section header", NULL, -1);
	/* Duplicate sections, also when they differ only in case. */
	EXPECT_ERR(BASE "[group servers]\ndescription = again\n", L(1),
		   "section [group servers] already defined at line 17", NULL, 1);
	EXPECT_ERR(BASE "[VM Desktop1]\nos = linux\n", L(1),
		   "section [vm desktop1] already defined at line 5", NULL, -1);
	EXPECT_ERR(BASE "[Global]\ndefault_log = no\n", L(1),
		   "section [global] already defined at line 1", NULL, 1);
	/* Names of the wrong shape. */
	EXPECT_ERR(BASE "[group bad!name]\nmembers = server1\n", L(1),
		   "group name 'bad!name': 1-48 letters, digits and . _ -", NULL, 1);
	EXPECT_ERR(BASE "[vm -x]\nhost = hv1\nport = p9\nmac = 02:00:00:00:00:09\n"
		   "addresses = 10.0.0.9\n", L(1), "VM name '-x': 1-48 letters, digits", NULL, 1);
}

static void test_keys(void)
{
	static const char head[] = BASE "[rule 5]\naction = allow\nname = ";
	char longline[2000];

	EXPECT_ERR(BASE "[rule 5]\naction = allow\nacton = drop\n", L(3),
		   "unknown key 'acton' in [rule 5]", "(did you mean 'action'?)", 1);
	EXPECT_ERR("[global]\ndefault_actoin = allow\n", 2,
		   "unknown key 'default_actoin' in [global]",
		   "(did you mean 'default_action'?)", 1);
	EXPECT_ERR(BASE "[group g]\nmembers = server1\ncolour = blue\n", L(3),
		   "unknown key 'colour' in [group g]", NULL, 1);
	/* No suggestion when nothing is near. */
	EXPECT_ERR(BASE "[group g]\nmembers = server1\nxyzzy = 1\n", L(3),
		   "unknown key 'xyzzy' in [group g]", NULL, 1);
	{
		struct diag d = { 0 };

		CU_ASSERT_PTR_NULL(policy_parse(BASE "[group g]\nmembers = server1\nxyzzy = 1\n",
						FILE_NAME, &d));
		CU_ASSERT_EQUAL_FATAL(d.n, 1);
		CU_ASSERT_PTR_NULL(strstr(d.msgs[0], "did you mean"));
		diag_free(&d);
	}
	/* Duplicate key: reported at the later line, naming the earlier. */
	EXPECT_ERR(BASE "[rule 5]\naction = allow\naction = drop\n", L(3),
		   "'action' already set at line 20", NULL, 1);
	EXPECT_ERR(BASE "[rule 5]\naction = allow\nACTION = drop\n", L(3),
		   "'action' already set at line 20", NULL, 1);
	/* A line without '=' and a key before any section. */
	EXPECT_ERR(BASE "[rule 5]\naction = allow\nlog\n", L(3),
		   "expected 'key = value', got 'log'", NULL, -1);
	EXPECT_ERR("action = allow\n[global]\ndefault_action = drop\n", 1,
		   "key outside of any section", NULL, 1);
	EXPECT_ERR("; leading comment\n\nfoo = bar\n", 3, "key outside of any section", NULL, 1);
	/* Continuation lines are refused (iniparser would join them). */
	EXPECT_ERR(BASE "[rule 5]\nname = a \\\naction = allow\n", L(2),
		   "line continuation is not supported", NULL, -1);
	/* Over-long lines: the name line here is about 1500 characters. */
	memset(longline, 'x', sizeof(longline));
	memcpy(longline, head, strlen(head));
	strcpy(longline + sizeof(longline) - 2, "\n");
	EXPECT_ERR(longline, L(3), "line longer than 1000 characters", NULL, -1);
}

/* iniparser joins a line ending in '\' with the next even when blanks follow
 * the backslash; the line index must see that too, or the next key vanishes
 * silently (here 'disabled = yes', so a disabled rule becomes enforced). */
static void test_continuation_trailing_blank(void)
{
	EXPECT_ERR(BASE "[rule 5]\nname = web \\  \ndisabled = yes\naction = allow\n", L(2),
		   "line continuation is not supported", NULL, -1);
}

/* One stray line must not hide the other errors of the file: every error is
 * collected before failing (config.h). */
static void test_stray_line_keeps_other_errors(void)
{
	const char *text = BASE
		"[rule 5]\n"                    /* L(1) */
		"action = allow\n"              /* L(2) */
		"stray\n"                       /* L(3) */
		"[vm x]\n"                      /* L(4) */
		"host = hv1\n"
		"port = vnet-x\n"
		"mac = 02:00:00:00:00:01\n"     /* duplicate of desktop1 */
		"addresses = 10.0.0.9\n";

	EXPECT_ERR(text, L(3), "expected 'key = value', got 'stray'", NULL, -1);
	EXPECT_ERR(text, L(4), "VM x: MAC 02:00:00:00:00:01 already used by VM desktop1",
		   NULL, -1);
}

/* ---- inventory ------------------------------------------------------------ */

#define VM_X(host, port, mac, addrs) \
	"[vm x]\nhost = " host "\nport = " port "\nmac = " mac "\naddresses = " addrs "\n"

static void test_vm_errors(void)
{
	/* Every required key missing: one message each, at the section. */
	EXPECT_ERR(BASE "[vm x]\nos = linux\n", L(1), "[vm x] needs 'host'", NULL, 4);
	EXPECT_ERR(BASE "[vm x]\nos = linux\n", L(1), "[vm x] needs 'port'", NULL, 4);
	EXPECT_ERR(BASE "[vm x]\nos = linux\n", L(1), "[vm x] needs 'mac'", NULL, 4);
	EXPECT_ERR(BASE "[vm x]\nos = linux\n", L(1), "[vm x] needs 'addresses'", NULL, 4);
	/* Present but empty: reported at the key's line. */
	EXPECT_ERR(BASE "[vm x]\nhost =\nport = p\nmac = 02:00:00:00:00:09\naddresses = 10.0.0.9\n",
		   L(2), "[vm x] needs 'host'", NULL, 1);
	/* A misspelt key: unknown, and the real one missing. */
	EXPECT_ERR(BASE "[vm x]\nhost = hv1\nport = p\nmac = 02:00:00:00:00:09\n"
		   "adresses = 10.0.0.9\n", L(5), "unknown key 'adresses' in [vm x]",
		   "(did you mean 'addresses'?)", 2);
	EXPECT_ERR(BASE "[vm x]\nhost = hv1\nport = p\nmac = 02:00:00:00:00:09\n"
		   "adresses = 10.0.0.9\n", L(1), "[vm x] needs 'addresses'", NULL, 2);

	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:zz", "10.0.0.9"), L(4),
		   "mac '02:00:00:00:00:zz' is not of the form 02:00:00:00:00:01", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:09", "10.0.0.9"), L(4),
		   "mac '02:00:00:00:09' is not of the form", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "10.0.0.300"), L(5),
		   "address '10.0.0.300': not an IPv4 or IPv6 address", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "10.0.0.9, server1"), L(5),
		   "address 'server1': not an IPv4 or IPv6 address", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "10.0.0.0/24"), L(5),
		   "address '10.0.0.0/24': a VM address has no prefix length", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "fd00:9::/64"), L(5),
		   "address 'fd00:9::/64': a VM address has no prefix length", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "10.0.0.9/24"), L(5),
		   "address '10.0.0.9/24': host bits set below the prefix length", NULL, 1);
	/* Interface names are at most 15 characters (IFNAMSIZ - 1). */
	EXPECT_ERR(BASE VM_X("hv1", "vnet-0123456789a", "02:00:00:00:00:09", "10.0.0.9"), L(3),
		   "port 'vnet-0123456789a': an interface name of 1-15 letters", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet/x", "02:00:00:00:00:09", "10.0.0.9"), L(3),
		   "port 'vnet/x': an interface name", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv 1", "vnet-x", "02:00:00:00:00:09", "10.0.0.9"), L(2),
		   "host 'hv 1': 1-48 letters, digits and . _ -", NULL, 1);

	/* Uniqueness across VMs: reported at the later VM, naming the earlier. */
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:01", "10.0.0.9"), L(1),
		   "VM x: MAC 02:00:00:00:00:01 already used by VM desktop1", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "10.0.0.9, 10.0.0.2"), L(1),
		   "VM x: address 10.0.0.2 already used by VM server1", NULL, 1);
	/* The same address spelt differently is still the same. */
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "FD00:0::2"), L(1),
		   "VM x: address fd00::2 already used by VM server1", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-s1", "02:00:00:00:00:09", "10.0.0.9"), L(1),
		   "VM x: port vnet-s1 on host hv1 already used by VM server1", NULL, 1);
	/* A VM's link-local address from its MAC is its own: another VM that
	 * declared it would pass as that VM. */
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "10.0.0.9, fe80::ff:fe00:1"),
		   L(1), "VM x: address fe80::ff:fe00:1 already used by VM desktop1 (its link-local"
		   " address, from its MAC)", NULL, 1);
	policy_free(PARSE_OK(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "10.0.0.9, fe80::ff:fe00:9")));
}

static void test_vm_accepted(void)
{
	struct dfw_policy *p;
	const struct vm *v;

	/* The same port name on another host is fine; 15-character names too;
	 * a VM may have one family only; /32 is a host address. */
	p = PARSE_OK(BASE VM_X("hv2", "vnet-s1", "02:00:00:00:00:09", "10.0.0.9/32")
		     "[vm y]\nhost = hv2\nport = vnet-0123456789\nmac = 02:00:00:00:00:0A\n"
		     "addresses = fd00::a\nos = Linux\n");
	CU_ASSERT_EQUAL_FATAL(p->inv.nvms, 4);
	v = &p->inv.vms[2];
	CU_ASSERT_STRING_EQUAL(v->name, "x");
	CU_ASSERT_STRING_EQUAL(v->host, "hv2");
	CU_ASSERT_STRING_EQUAL(v->os, "");
	CU_ASSERT_EQUAL(v->naddrs, 1);
	CU_ASSERT_EQUAL(v->addrs[0].plen, 32);
	v = &p->inv.vms[3];
	CU_ASSERT_STRING_EQUAL(v->port, "vnet-0123456789");
	CU_ASSERT_STRING_EQUAL(v->os, "Linux");
	CU_ASSERT_EQUAL(v->mac[5], 0x0a);
	CU_ASSERT_EQUAL_FATAL(v->naddrs, 1);
	CU_ASSERT_EQUAL(v->addrs[0].family, AF_INET6);
	policy_free(p);
}

/* Two sections that differ only in inner blanks declare the same VM name;
 * the second must not silently become a second VM of that name. */
static void test_vm_name_twice(void)
{
	struct diag d = { 0 };
	struct dfw_policy *p = policy_parse(BASE "[vm  desktop1]\nhost = hv2\nport = vnet-d9\n"
					    "mac = 02:00:00:00:00:09\naddresses = 10.0.0.9\n",
					    FILE_NAME, &d);

	CU_ASSERT_PTR_NULL(p);
	CU_ASSERT_TRUE(has_msg(&d, L(1), "desktop1", NULL));
	policy_free(p);
	diag_free(&d);
}

/* Distinct long host names must not collide in the uniqueness check. */
static void test_long_host_names(void)
{
	struct dfw_policy *p = PARSE_OK(
		"[vm a]\nhost = hypervisor-with-a-long-name-in-rack-1\nport = vnet-a\n"
		"mac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n"
		"[vm b]\nhost = hypervisor-with-a-long-name-in-rack-2\nport = vnet-a\n"
		"mac = 02:00:00:00:00:02\naddresses = 10.0.0.2\n");

	policy_free(p);
}

static void test_tags_errors(void)
{
	EXPECT_ERR("[tags]\nnames = ok, bad tag, x\n", 2,
		   "tag 'bad tag': 1-48 letters, digits and . _ = : -", NULL, 1);
	EXPECT_ERR("[tags]\nnames = a, b,\n", 2, "names: empty item in the list (a stray comma?)", NULL, 1);
	EXPECT_ERR("[tags]\nnames = Threat.High, threat.high\n", 2,
		   "tag 'threat.high' declared twice", NULL, 1);
	{
		struct dfw_policy *p = PARSE_OK("[tags]\nnames = env=prod, a:b, x_y-z.1\n");

		CU_ASSERT_EQUAL(p->tags.n, 3);
		CU_ASSERT_STRING_EQUAL(p->tags.v[0], "env=prod");
		policy_free(p);
	}
	/* Scoped tags: one '|' with a scope before it and a tag after it. */
	{
		struct dfw_policy *p = PARSE_OK("[tags]\nnames = os|Windows, dept|finance, finance\n");

		CU_ASSERT_EQUAL(p->tags.n, 3);
		CU_ASSERT_STRING_EQUAL(policy_find_tag(p, "OS|WINDOWS"), "os|Windows");
		CU_ASSERT_PTR_NULL(policy_find_tag(p, "windows"));
		policy_free(p);
	}
	EXPECT_ERR("[tags]\nnames = |windows\n", 2, "tag '|windows': 1-48 letters, digits and "
		   ". _ = : -, optionally after a scope and '|' (os|windows)", NULL, 1);
	EXPECT_ERR("[tags]\nnames = os|\n", 2, "tag 'os|': 1-48 letters", NULL, 1);
	EXPECT_ERR("[tags]\nnames = a|b|c\n", 2, "tag 'a|b|c': 1-48 letters", NULL, 1);
	EXPECT_ERR("[tags]\nnames = os|Windows, OS|windows\n", 2,
		   "tag 'OS|windows' declared twice", NULL, 1);
}

/* Conditions on scoped tags: the forms, and what equals / not-equals must
 * name. */
static void test_scoped_criteria(void)
{
#define TAGS "[tags]\nnames = os|windows, os|linux, dept|finance, threat.high\n"
	struct dfw_policy *p = PARSE_OK(TAGS
		"[group a]\nmatch = tag equals os|windows or tag equals OS|Linux\n"
		"[group b]\nmatch = tag equals finance and tag not-equals os|\n"
		"[group c]\nmatch = tag contains os|win or tag starts-with fin or tag ends-with dept|ce\n"
		"[group d]\nmatch = tag equals dept| and tag not-equals threat.high\n"
		"[group e]\nexclude_match = tag contains hr|x\n");
	const struct group_def *g = &p->inv.groups[1];

	CU_ASSERT_EQUAL_FATAL(g->nmatch, 1);
	CU_ASSERT_EQUAL_FATAL(g->match[0].nconds, 2);
	CU_ASSERT_STRING_EQUAL(g->match[0].conds[0].value, "finance");
	CU_ASSERT_STRING_EQUAL(g->match[0].conds[1].value, "os|");
	CU_ASSERT_EQUAL(g->match[0].conds[1].op, OP_NOT_EQUALS);
	policy_free(p);

	/* a scope no declared tag has */
	EXPECT_ERR(TAGS "[group g]\nmatch = tag equals dpt|\n", 4,
		   "match: no tag of scope 'dpt' is declared in [tags]", "(did you mean 'dept|'?)", 1);
	EXPECT_ERR(TAGS "[group g]\nmatch = tag not-equals hr|\n", 4,
		   "match: no tag of scope 'hr' is declared in [tags]", NULL, 1);
	/* a scoped tag that is not declared */
	EXPECT_ERR(TAGS "[group g]\nmatch = tag equals os|windws\n", 4,
		   "match: tag 'os|windws' is not declared in [tags]", "(did you mean 'os|windows'?)", 1);
	EXPECT_ERR(TAGS "[group g]\nmatch = tag equals dept|windows\n", 4,
		   "match: tag 'dept|windows' is not declared", NULL, 1);
	/* an unscoped tag that is neither declared nor the tag part of one */
	EXPECT_ERR(TAGS "[group g]\nmatch = tag equals financ\n", 4,
		   "match: tag 'financ' is not declared", NULL, 1);
	EXPECT_ERR(TAGS "[group g]\nmatch = tag equals os\n", 4,
		   "match: tag 'os' is not declared", NULL, 1);
	/* any tag of a scope only with equals / not-equals */
	EXPECT_ERR(TAGS "[group g]\nmatch = tag contains os|\n", 4,
		   "match: 'os|' (any tag of scope 'os') works only with equals or not-equals",
		   NULL, 1);
	EXPECT_ERR(TAGS "[group g]\nmatch = tag starts-with os|\n", 4, "works only with equals",
		   NULL, 1);
	/* the shape of the value, for every operator */
	EXPECT_ERR(TAGS "[group g]\nmatch = tag equals |windows\n", 4,
		   "match: tag '|windows': write SCOPE|TAG, SCOPE| (any tag of the scope) or TAG",
		   NULL, 1);
	EXPECT_ERR(TAGS "[group g]\nmatch = tag contains a|b|c\n", 4,
		   "match: tag 'a|b|c': write SCOPE|TAG", NULL, 1);
	EXPECT_ERR(TAGS "[group g]\nmatch = tag ends-with |\n", 4, "match: tag '|': write", NULL, 1);
	/* every bad condition of a criterion is reported */
	EXPECT_ERR(TAGS "[group g]\nmatch = tag equals nope1 and tag equals hr|\n", 4,
		   "tag 'nope1' is not declared", NULL, 2);
	EXPECT_ERR(TAGS "[group g]\nmatch = tag equals nope1 and tag equals hr|\n", 4,
		   "no tag of scope 'hr'", NULL, 2);
	/* name and os values are free text: '|' means nothing there */
	p = PARSE_OK(TAGS "[group g]\nmatch = os equals a|b\n");
	policy_free(p);
#undef TAGS
}

/* A VALUE in double quotes keeps its blanks (an os such as "Windows
 * Server 2022" matches exactly) and may read "and" or "or". */
static void test_quoted_criteria(void)
{
#define VMS "[tags]\nnames = threat.high\n" \
	"[vm a]\nhost = hv1\nport = vnet-a\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n" \
	"os = Windows Server 2022\n" \
	"[vm b]\nhost = hv1\nport = vnet-b\nmac = 02:00:00:00:00:02\naddresses = 10.0.0.2\n" \
	"os = windows server 2022 datacenter\n" \
	"[vm c]\nhost = hv1\nport = vnet-c\nmac = 02:00:00:00:00:03\naddresses = 10.0.0.3\n" \
	"os = and\n"
	struct dfw_policy *p = PARSE_OK(VMS
		"[group exact]\nmatch = os equals \"windows server 2022\"\n"
		"[group word]\nmatch = os equals \"and\" or os starts-with \"Windows  Server\"\n");
	struct diag d = { 0 };
	struct gengine *e;

	CU_ASSERT_STRING_EQUAL(p->inv.groups[0].match[0].conds[0].value, "windows server 2022");
	CU_ASSERT_EQUAL(p->inv.groups[1].nmatch, 2);
	e = gengine_new(&p->inv, FILE_NAME, &d);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT(gengine_is_member(e, 0, 0));  /* case differs only */
	CU_ASSERT(!gengine_is_member(e, 0, 1)); /* a longer os */
	CU_ASSERT(!gengine_is_member(e, 0, 2));
	CU_ASSERT(gengine_is_member(e, 1, 2));  /* os "and" */
	CU_ASSERT(!gengine_is_member(e, 1, 0)); /* two blanks in the value */
	gengine_free(e);
	policy_free(p);
	diag_free(&d);

	EXPECT_ERR(VMS "[group g]\nmatch = os equals \"Windows Server\n", 22,
		   "match: a quoted value has no closing '\"'", NULL, 1);
	EXPECT_ERR(VMS "[group g]\nmatch = os equals \"Windows\"Server\n", 22,
		   "match: a closing '\"' must end its word", NULL, 1);
	EXPECT_ERR(VMS "[group g]\nmatch = os equals Win\"dows\n", 22,
		   "match: a '\"' may only open a quoted value", NULL, 1);
	EXPECT_ERR(VMS "[group g]\nmatch = os equals \"\"\n", 22,
		   "match: a quoted value is empty", NULL, 1);
	EXPECT_ERR(VMS "[group g]\nmatch = os \"equals\" x\n", 22,
		   "match: only a VALUE may be quoted, not '\"equals\"'", NULL, 1);
	EXPECT_ERR(VMS "[group g]\nmatch = os equals \"a b\" \"and\" os equals x\n", 22,
		   "match: expected 'and' or 'or' before 'and'", NULL, 1);
#undef VMS
}

/* ---- [detection] and [netthreat] ------------------------------------------ */

static void test_detection(void)
{
	struct dfw_policy *p = PARSE_OK(BASE);

	/* Absent: the defaults, with no need to declare them. */
	CU_ASSERT_STRING_EQUAL(p->detection.tag[SEV_HIGH], "threat.high");
	CU_ASSERT_STRING_EQUAL(p->detection.tag[SEV_LOW], "threat.low");
	CU_ASSERT_TRUE(p->detection.auto_release);
	CU_ASSERT_FALSE(p->detection.delete_files);
	CU_ASSERT_EQUAL(p->detection.max_file_bytes, 64ull << 20);
	CU_ASSERT_EQUAL(p->netthreat.mode, NT_OFF);
	CU_ASSERT_PTR_NULL(p->netthreat.tag);
	policy_free(p);

	p = PARSE_OK(BASE "[detection]\ntag_high = Threat.High\ntag_medium = threat.high\n"
		     "tag_low = role.web\nauto_release = no\nfile_action = delete\n"
		     "max_file_bytes = 1000\n"
		     "[netthreat]\nmode = enforce\nwindow = 2s\nmax_ports = 10\n"
		     "max_hosts = 5\nblock_for = 1m\ntag = threat.high\n");
	CU_ASSERT_STRING_EQUAL(p->detection.tag[SEV_HIGH], "threat.high"); /* declared spelling */
	CU_ASSERT_STRING_EQUAL(p->detection.tag[SEV_LOW], "role.web");
	CU_ASSERT_FALSE(p->detection.auto_release);
	CU_ASSERT_TRUE(p->detection.delete_files);
	CU_ASSERT_EQUAL(p->detection.max_file_bytes, 1000);
	CU_ASSERT_EQUAL(p->netthreat.mode, NT_ENFORCE);
	CU_ASSERT_EQUAL(p->netthreat.window_ms, 2000);
	CU_ASSERT_EQUAL(p->netthreat.max_ports, 10);
	CU_ASSERT_EQUAL(p->netthreat.max_hosts, 5);
	CU_ASSERT_EQUAL(p->netthreat.block_ms, 60000);
	CU_ASSERT_STRING_EQUAL(p->netthreat.tag, "threat.high");
	policy_free(p);

	/* Present: the default tags must then be declared (threat.medium is not). */
	EXPECT_ERR(BASE "[detection]\nauto_release = yes\n", L(1),
		   "tag_medium: tag 'threat.medium' is not declared in [tags]", NULL, 2);
	EXPECT_ERR(BASE "[detection]\ntag_high = threat.hihg\n", L(2),
		   "tag 'threat.hihg' is not declared", "did you mean 'threat.high'", 3);
	EXPECT_ERR(BASE "[detection]\ntag_high = threat.high\ntag_medium = threat.high\n"
		   "tag_low = threat.high\nfile_action = shred\n", L(5),
		   "file_action: unknown value 'shred'", NULL, 1);
	EXPECT_ERR(BASE "[detection]\ntag_high = threat.high\ntag_medium = threat.high\n"
		   "tag_low = threat.high\nmax_file_bytes = 10MB\nseverity = high\n", L(5),
		   "max_file_bytes: '10MB' is not a whole number", NULL, 2);
	EXPECT_ERR(BASE "[netthreat]\nmode = block\n", L(2),
		   "mode: unknown value 'block'", NULL, 1);
	EXPECT_ERR(BASE "[netthreat]\nwindow = 10 seconds\n", L(2),
		   "window: '10 seconds' is not a duration", NULL, 1);
	EXPECT_ERR(BASE "[netthreat]\nwindow = 1ms\n", L(2),
		   "window: '1ms' is not a duration from 100 ms", NULL, 1);
	EXPECT_ERR(BASE "[netthreat]\nmax_ports = 1\n", L(2),
		   "max_ports: '1' is not a whole number from 2 to 65536", NULL, 1);
	EXPECT_ERR(BASE "[netthreat]\nmax_hosts = -3\n", L(2), "max_hosts: '-3'", NULL, 1);
	EXPECT_ERR(BASE "[netthreat]\nblock_for = 8d\n", L(2), "block_for: '8d'", NULL, 1);
	EXPECT_ERR(BASE "[netthreat]\ntag = threat.low\n", L(2),
		   "tag: tag 'threat.low' is not declared", NULL, 1);
	EXPECT_ERR(BASE "[netthreat]\nthreshold = 5\n", L(2),
		   "unknown key 'threshold' in [netthreat]", NULL, 1);
	CU_ASSERT_STRING_EQUAL(severity_name(SEV_MEDIUM), "medium");
	CU_ASSERT_EQUAL(severity_parse("HIGH"), SEV_HIGH);
	CU_ASSERT_EQUAL(severity_parse("severe"), -1);
	CU_ASSERT_STRING_EQUAL(nt_mode_name(NT_MONITOR), "monitor");
}

/* ---- groups --------------------------------------------------------------- */

static void test_group_refs(void)
{
	EXPECT_ERR(BASE "[group g]\nmembers = desktp1\n", L(2),
		   "members: unknown VM 'desktp1'", "(did you mean 'desktop1'?)", 1);
	EXPECT_ERR(BASE "[group g]\nexclude_members = server1, srv\n", L(2),
		   "exclude_members: unknown VM 'srv'", NULL, 1);
	EXPECT_ERR(BASE "[group g]\ninclude = servrs\n", L(2),
		   "include: unknown group 'servrs'", "(did you mean 'servers'?)", 1);
	EXPECT_ERR(BASE "[group g]\nexclude_groups = dsktops\nmembers = server1\n", L(2),
		   "exclude_groups: unknown group 'dsktops'", "(did you mean 'desktops'?)", 1);
	EXPECT_ERR(BASE "[group g]\naddresses = 10.0.0.0/8, 10.1.0.1/16\n", L(2),
		   "addresses: '10.1.0.1/16': host bits set below the prefix length", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmembers = desktop1\nquarantine = sometimes\n", L(3),
		   "quarantine: 'sometimes' is not yes or no", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmembers = desktop1\nkeep_connections = yes\n", L(3),
		   "keep_connections only applies to a group with quarantine = yes", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmembers = desktop1\nquarantine = no\nkeep_connections = yes\n",
		   L(4), "keep_connections only applies", NULL, 1);
	/* A group may not share a VM's name. */
	EXPECT_ERR(BASE "[group desktop1]\nmembers = server1\n", L(1),
		   "group 'desktop1' has the name of a VM; references to it would be ambiguous",
		   NULL, 1);
	EXPECT_ERR(BASE "[group SERVER1]\nmembers = server1\n", L(1),
		   "group 'server1' has the name of a VM", NULL, 1);
}

static void test_criteria_errors(void)
{
	EXPECT_ERR(BASE "[group g]\nmatch = tag equals threat.hihg\n", L(2),
		   "match: tag 'threat.hihg' is not declared in [tags]",
		   "(did you mean 'threat.high'?)", 1);
	EXPECT_ERR(BASE "[group g]\nmatch = tag not-equals role.wbe\n", L(2),
		   "tag 'role.wbe' is not declared", "(did you mean 'role.web'?)", 1);
	EXPECT_ERR(BASE "[group g]\nmembers = server1\nexclude_match = tag equals nope\n", L(3),
		   "exclude_match: tag 'nope' is not declared in [tags]", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmatch = tag equals\n", L(2),
		   "match: a condition is FIELD OP VALUE, e.g. 'tag equals threat.high'", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmatch =\n", L(2), "match: a condition is FIELD OP VALUE",
		   NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmatch = tag equals role.web and\n", L(2),
		   "match: a condition is FIELD OP VALUE", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmatch = or tag equals role.web\n", L(2),
		   "match: a condition is FIELD OP VALUE", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmatch = tag equals role.web threat.high\n", L(2),
		   "match: expected 'and' or 'or' before 'threat.high'", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmatch = tags equals role.web\n", L(2),
		   "match: unknown field 'tags'", "(did you mean 'tag'?)", 1);
	EXPECT_ERR(BASE "[group g]\nmatch = colour equals red\n", L(2),
		   "match: unknown field 'colour'", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmatch = tag equal role.web\n", L(2),
		   "match: unknown operator 'equal'", "(did you mean 'equals'?)", 1);
	EXPECT_ERR(BASE "[group g]\nmatch = name is web\n", L(2),
		   "match: unknown operator 'is'", NULL, 1);
	/* Both parts of a bad condition are reported. */
	EXPECT_ERR(BASE "[group g]\nmatch = nme equls web\n", L(2),
		   "unknown field 'nme'", "(did you mean 'name'?)", 2);
	EXPECT_ERR(BASE "[group g]\nmatch = nme equls web\n", L(2),
		   "unknown operator 'equls'", "(did you mean 'equals'?)", 2);
}

static void test_cycles(void)
{
	EXPECT_ERR(BASE "[group a]\ninclude = b\n[group b]\ninclude = a\n", L(1),
		   "group a: cycle a -> b -> a", NULL, 1);
	EXPECT_ERR(BASE "[group a]\ninclude = a\n", L(1), "group a: cycle a -> a", NULL, 1);
	/* exclude_groups count as edges too. */
	EXPECT_ERR(BASE "[group a]\nexclude_groups = b\nmembers = server1\n"
		   "[group b]\ninclude = c\n[group c]\ninclude = a\n", L(1),
		   "group a: cycle a -> b -> c -> a", NULL, 1);
	EXPECT_ERR(BASE "[group a]\nmembers = server1\n[group b]\ninclude = a\n"
		   "[group c]\nexclude_groups = c\nmembers = desktop1\n", L(5),
		   "group c: cycle c -> c", NULL, 1);
}

/* ---- rules ---------------------------------------------------------------- */

#define RULE5 "[rule 5]\naction = allow\n" /* L(1), L(2); keys follow at L(3) */

static void test_rule_errors(void)
{
	EXPECT_ERR(BASE "[rule abc]\naction = allow\n", L(1),
		   "rule id 'abc' must be a number from 1 to 4294967295", NULL, 1);
	EXPECT_ERR(BASE "[rule 0]\naction = allow\n", L(1), "rule id '0' must be a number", NULL, 1);
	EXPECT_ERR(BASE "[rule -3]\naction = allow\n", L(1), "rule id '-3' must be a number",
		   NULL, 1);
	EXPECT_ERR(BASE "[rule 4294967296]\naction = allow\n", L(1),
		   "rule id '4294967296' must be a number", NULL, 1);
	EXPECT_ERR(BASE "[rule 1 2]\naction = allow\n", L(1), "rule id '1 2' must be a number",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "[rule 7]\naction = drop\n[rule 005]\naction = drop\n", L(5),
		   "rule id 5 already used at line 19", NULL, 1);
	EXPECT_ERR(BASE "[rule 5]\nname = no action\n", L(1),
		   "[rule 5] needs 'action' (allow, drop or reject)", NULL, 1);
	EXPECT_ERR(BASE "[rule 5]\naction = alow\n", L(2),
		   "action: unknown value 'alow'", "(did you mean 'allow'?)", 1);
	EXPECT_ERR(BASE "[rule 5]\naction = accept\n", L(2), "action: unknown value 'accept'",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "category = emergncy\n", L(3),
		   "category: unknown value 'emergncy'", "(did you mean 'emergency'?)", 1);
	EXPECT_ERR(BASE RULE5 "category = infra\n", L(3), "category: unknown value 'infra'",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "direction = inn\n", L(3),
		   "direction: unknown value 'inn'", "(did you mean 'in'?)", 1);
	EXPECT_ERR(BASE RULE5 "direction = both\n", L(3), "direction: unknown value 'both'",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "log = maybe\n", L(3), "log: 'maybe' is not yes or no", NULL, 1);
	EXPECT_ERR(BASE RULE5 "disabled = 2\n", L(3), "disabled: '2' is not yes or no", NULL, 1);
	EXPECT_ERR(BASE RULE5 "applied_to = servrs\n", L(3),
		   "applied_to: unknown group 'servrs'", "(did you mean 'servers'?)", 1);
	EXPECT_ERR(BASE RULE5 "applied_to = server1\n", L(3),
		   "applied_to: 'server1' is a VM; applied_to takes groups", NULL, 1);
	EXPECT_ERR("[global]\ndefault_action = permit\n", 2,
		   "default_action: unknown value 'permit'", NULL, 1);
	EXPECT_ERR("[global]\ndefault_log = perhaps\n", 2,
		   "default_log: 'perhaps' is not yes or no", NULL, 1);
}

/* A suggestion is a name: an empty string is never one. */
static void test_direction_no_empty_suggestion(void)
{
	struct diag d = { 0 };

	CU_ASSERT_PTR_NULL(policy_parse(BASE RULE5 "direction = x\n", FILE_NAME, &d));
	CU_ASSERT_TRUE(has_msg(&d, L(3), "direction: unknown value 'x'", NULL));
	CU_ASSERT_FALSE(has_msg(&d, L(3), "did you mean ''", NULL));
	diag_free(&d);
}

static void test_side_errors(void)
{
	EXPECT_ERR(BASE RULE5 "sources = desktps\n", L(3),
		   "sources: 'desktps' is no group, VM or address", "(did you mean 'desktops'?)", 1);
	EXPECT_ERR(BASE RULE5 "destinations = group:dsktops\n", L(3),
		   "destinations: unknown group 'dsktops'", "(did you mean 'desktops'?)", 1);
	EXPECT_ERR(BASE RULE5 "destinations = vm:servr1\n", L(3),
		   "destinations: unknown VM 'servr1'", "(did you mean 'server1'?)", 1);
	/* The prefixes are strict: a VM is not a group and vice versa. */
	EXPECT_ERR(BASE RULE5 "sources = group:server1\n", L(3),
		   "sources: unknown group 'server1'", NULL, 1);
	EXPECT_ERR(BASE RULE5 "sources = vm:servers\n", L(3), "sources: unknown VM 'servers'",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "sources = 10.0.0.1/24\n", L(3),
		   "sources: '10.0.0.1/24': host bits set below the prefix length", NULL, 1);
	EXPECT_ERR(BASE RULE5 "sources = 10.0.0.0/40\n", L(3),
		   "sources: '10.0.0.0/40': prefix length must be 0-32", NULL, 1);
	EXPECT_ERR(BASE RULE5 "sources = any, desktops\n", L(3),
		   "sources: 'any' cannot be combined with other items", NULL, 1);
	EXPECT_ERR(BASE RULE5 "destinations = 10.0.0.0/8, ANY\n", L(3),
		   "destinations: 'any' cannot be combined with other items", NULL, 1);
}

static void test_negation_errors(void)
{
	EXPECT_ERR(BASE RULE5 "sources = not\n", L(3), "sources: 'not' must be followed by a "
		   "group, VM or address, e.g. 'not desktops'", NULL, 1);
	EXPECT_ERR(BASE RULE5 "destinations = NOT , servers\n", L(3),
		   "destinations: 'not' must be followed by a group", NULL, 1);
	EXPECT_ERR(BASE RULE5 "sources = not any\n", L(3),
		   "sources: 'not any' matches no address; disable the rule instead", NULL, 1);
	EXPECT_ERR(BASE RULE5 "sources = not desktops, any\n", L(3), "sources: 'not any'", NULL, 1);
	EXPECT_ERR(BASE RULE5 "destinations = desktops, not servers\n", L(3),
		   "destinations: 'not' may only start the list; it negates the whole list", NULL, 1);
	/* What follows 'not' is checked like any item. */
	EXPECT_ERR(BASE RULE5 "sources = not desktps\n", L(3),
		   "sources: 'desktps' is no group, VM or address", "(did you mean 'desktops'?)", 1);
	EXPECT_ERR(BASE RULE5 "sources = not 10.0.0.1/8\n", L(3),
		   "sources: '10.0.0.1/8': host bits set", NULL, 1);
	/* 'nothing' is a name, not 'not hing'. */
	EXPECT_ERR(BASE RULE5 "sources = nothing\n", L(3), "sources: 'nothing' is no group", NULL, 1);
}

static void test_negation_accepted(void)
{
	struct dfw_policy *p = PARSE_OK(BASE
		"[rule 5]\naction = drop\nsources = not desktops, 10.0.0.0/8\n"
		"destinations = Not   vm:server1\n"
		"[rule 6]\naction = allow\nsources = desktops\ndestinations = group:not-servers\n"
		"[group not-servers]\nmatch = name equals nothing\n");
	const struct dfw_rule *r = rule_by_id(p, 5);

	CU_ASSERT_TRUE(r->src.negate);
	CU_ASSERT_FALSE(r->src.any);
	CU_ASSERT_EQUAL_FATAL(r->src.nrefs, 2);
	CU_ASSERT_EQUAL(r->src.refs[0].kind, REF_GROUP);
	CU_ASSERT_EQUAL(r->src.refs[0].idx, (size_t)policy_find_group(p, "desktops"));
	CU_ASSERT_EQUAL(r->src.refs[1].kind, REF_ADDR);
	CU_ASSERT_TRUE(addr_is(&r->src.refs[1].addr, "10.0.0.0/8"));
	CU_ASSERT_TRUE(r->dst.negate);
	CU_ASSERT_EQUAL_FATAL(r->dst.nrefs, 1);
	CU_ASSERT_EQUAL(r->dst.refs[0].kind, REF_VM);
	CU_ASSERT_EQUAL(r->dst.refs[0].idx, 1);
	r = rule_by_id(p, 6);
	CU_ASSERT_FALSE(r->src.negate);
	CU_ASSERT_FALSE(r->dst.negate);
	CU_ASSERT_EQUAL_FATAL(r->dst.nrefs, 1);
	CU_ASSERT_EQUAL(r->dst.refs[0].idx, (size_t)policy_find_group(p, "not-servers"));
	policy_free(p);
}

static void test_service_errors(void)
{
	EXPECT_ERR(BASE RULE5 "services = tcpp/80\n", L(3),
		   "services: unknown protocol 'tcpp'", "(did you mean 'tcp'?)", 1);
	EXPECT_ERR(BASE RULE5 "services = sctp/80\n", L(3), "services: unknown protocol 'sctp'",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = tcp/0\n", L(3),
		   "services: 'tcp/0': ports are 1-65535, a range is LOW-HIGH", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = udp/70000\n", L(3), "services: 'udp/70000': ports are",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = tcp/65536\n", L(3), "'tcp/65536': ports are", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = tcp/2000-1000\n", L(3), "'tcp/2000-1000': ports are",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = tcp/0-10\n", L(3), "'tcp/0-10': ports are", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = tcp/\n", L(3), "'tcp/': ports are", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = tcp/80-\n", L(3), "'tcp/80-': ports are", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = tcp/http\n", L(3), "'tcp/http': ports are", NULL, 1);
	/* Other IP protocols are proto/NAME, and take no port. */
	EXPECT_ERR(BASE RULE5 "services = sctp/80\n", L(3), "services: unknown protocol 'sctp'; "
		   "other IP protocols are written proto/sctp, without ports", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = icmp/256\n", L(3),
		   "services: 'icmp/256': an ICMP type is 0-255 or a name such as echo-request",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = icmp/echo-reqest\n", L(3),
		   "services: 'icmp/echo-reqest': unknown ICMP type 'echo-reqest'",
		   "(did you mean 'echo-request'?)", 1);
	EXPECT_ERR(BASE RULE5 "services = icmp/nd-neighbor-solicit\n", L(3),
		   "'icmp/nd-neighbor-solicit': 'nd-neighbor-solicit' is an ICMPv6 type; "
		   "write icmpv6/nd-neighbor-solicit", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = icmpv6/source-quench\n", L(3),
		   "'icmpv6/source-quench': 'source-quench' is an ICMP type; write icmp/source-quench",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = icmpv6/-1\n", L(3), "unknown ICMPv6 type '-1'", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = icmp/\n", L(3), "'icmp/': unknown ICMP type ''", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = icmp/3:256\n", L(3),
		   "services: 'icmp/3:256': an ICMP code is 0-255", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = icmpv6/1:\n", L(3),
		   "services: 'icmpv6/1:': an ICMPv6 code is 0-255", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = icmp/3:x\n", L(3), "'icmp/3:x': an ICMP code is 0-255",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = proto\n", L(3), "services: 'proto' needs a protocol: "
		   "proto/NUMBER or proto/NAME, e.g. proto/gre", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = proto/0\n", L(3),
		   "services: 'proto/0': protocol 0 is reserved", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = proto/256\n", L(3),
		   "services: 'proto/256': a protocol number is 1-255", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = proto/grr\n", L(3),
		   "services: 'proto/grr': unknown protocol 'grr' (did you mean 'gre'?)", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = proto/\n", L(3), "'proto/': unknown protocol ''", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = proto/47/1\n", L(3), "unknown protocol '47/1'", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = proto/-6\n", L(3), "unknown protocol '-6'", NULL, 1);
	/* A word that is no literal names a service object. */
	EXPECT_ERR(BASE RULE5 "services = tpc\n", L(3), "services: unknown service 'tpc'",
		   "(did you mean 'tcp'?)", 1);
	EXPECT_ERR(BASE RULE5 "services = 443\n", L(3),
		   "services: '443': a port needs its protocol, e.g. tcp/443 or udp/443", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services = any/80\n", L(3), "services: 'any' takes no port", NULL, 1);
	/* Each bad item is reported. */
	EXPECT_ERR(BASE RULE5 "services = tcp/0, udp/99999, tcp/22\n", L(3), "'tcp/0'", NULL, 2);
	EXPECT_ERR(BASE RULE5 "services = tcp/0, udp/99999, tcp/22\n", L(3), "'udp/99999'", NULL, 2);
}

/* Every literal form, and what it becomes. */
static void test_service_literals(void)
{
	static const struct {
		const char *text;
		uint8_t proto;
		uint16_t lo, hi;
		int type, code;
		const char *formatted;
	} cases[] = {
		{ "tcp", IPPROTO_TCP, 0, 0, -1, -1, "tcp" },
		{ "UDP", IPPROTO_UDP, 0, 0, -1, -1, "udp" },
		{ "tcp/443", IPPROTO_TCP, 443, 443, -1, -1, "tcp/443" },
		{ "udp/4001-4002", IPPROTO_UDP, 4001, 4002, -1, -1, "udp/4001-4002" },
		{ "tcp/1-65535", IPPROTO_TCP, 1, 65535, -1, -1, "tcp/1-65535" },
		{ "icmp", IPPROTO_ICMP, 0, 0, -1, -1, "icmp" },
		{ "icmpv6", IPPROTO_ICMPV6, 0, 0, -1, -1, "icmpv6" },
		{ "icmp/echo-request", IPPROTO_ICMP, 0, 0, 8, -1, "icmp/echo-request" },
		{ "icmp/Echo-Reply", IPPROTO_ICMP, 0, 0, 0, -1, "icmp/echo-reply" },
		{ "icmp/8", IPPROTO_ICMP, 0, 0, 8, -1, "icmp/echo-request" },
		{ "icmp/42", IPPROTO_ICMP, 0, 0, 42, -1, "icmp/42" },
		{ "icmp/3:4", IPPROTO_ICMP, 0, 0, 3, 4, "icmp/3:4" },
		{ "icmp/destination-unreachable:13", IPPROTO_ICMP, 0, 0, 3, 13, "icmp/3:13" },
		{ "icmp/address-mask-reply", IPPROTO_ICMP, 0, 0, 18, -1, "icmp/address-mask-reply" },
		{ "icmpv6/echo-request", IPPROTO_ICMPV6, 0, 0, 128, -1, "icmpv6/echo-request" },
		{ "icmpv6/128:0", IPPROTO_ICMPV6, 0, 0, 128, 0, "icmpv6/128:0" },
		{ "icmpv6/nd-neighbor-solicit", IPPROTO_ICMPV6, 0, 0, 135, -1,
		  "icmpv6/nd-neighbor-solicit" },
		{ "icmpv6/mld2-listener-report", IPPROTO_ICMPV6, 0, 0, 143, -1,
		  "icmpv6/mld2-listener-report" },
		{ "icmpv6/packet-too-big:255", IPPROTO_ICMPV6, 0, 0, 2, 255, "icmpv6/2:255" },
		{ "icmpv6/0", IPPROTO_ICMPV6, 0, 0, 0, -1, "icmpv6/0" },
		{ "proto/47", 47, 0, 0, -1, -1, "proto/47" },
		{ "proto/gre", 47, 0, 0, -1, -1, "proto/47" },
		{ "PROTO/ESP", 50, 0, 0, -1, -1, "proto/50" },
		{ "proto/ah", 51, 0, 0, -1, -1, "proto/51" },
		{ "proto/igmp", 2, 0, 0, -1, -1, "proto/2" },
		{ "proto/ipip", 4, 0, 0, -1, -1, "proto/4" },
		{ "proto/ospf", 89, 0, 0, -1, -1, "proto/89" },
		{ "proto/vrrp", 112, 0, 0, -1, -1, "proto/112" },
		{ "proto/sctp", 132, 0, 0, -1, -1, "proto/132" },
		{ "proto/255", 255, 0, 0, -1, -1, "proto/255" },
		/* The protocols with their own syntax become it. */
		{ "proto/6", IPPROTO_TCP, 0, 0, -1, -1, "tcp" },
		{ "proto/udp", IPPROTO_UDP, 0, 0, -1, -1, "udp" },
		{ "proto/1", IPPROTO_ICMP, 0, 0, -1, -1, "icmp" },
		{ "proto/58", IPPROTO_ICMPV6, 0, 0, -1, -1, "icmpv6" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char text[512], buf[64];
		struct dfw_policy *p;
		const struct dfw_rule *r;

		snprintf(text, sizeof(text), BASE RULE5 "services = %s\n", cases[i].text);
		p = PARSE_OK(text);
		r = &p->rules[0];
		CU_ASSERT_EQUAL_FATAL(r->nsvcs, 1);
		CU_ASSERT_EQUAL(r->svcs[0].proto, cases[i].proto);
		CU_ASSERT_EQUAL(r->svcs[0].lo, cases[i].lo);
		CU_ASSERT_EQUAL(r->svcs[0].hi, cases[i].hi);
		CU_ASSERT_EQUAL(r->svcs[0].icmp_type, cases[i].type);
		CU_ASSERT_EQUAL(r->svcs[0].icmp_code, cases[i].code);
		service_format(&r->svcs[0], buf, sizeof(buf));
		if (strcmp(buf, cases[i].formatted))
			fprintf(stderr, "\n  %s formatted as %s\n", cases[i].text, buf);
		CU_ASSERT_STRING_EQUAL(buf, cases[i].formatted);
		policy_free(p);
	}
}

/* Repeated services fold into one; the order of first appearance stays. */
static void test_service_duplicates(void)
{
	struct dfw_policy *p = PARSE_OK(BASE RULE5
		"services = tcp/80, udp/53, TCP/80, proto/6, tcp, icmp/8, icmp/echo-request, "
		"proto/tcp\n");
	const struct dfw_rule *r = &p->rules[0];

	CU_ASSERT_EQUAL_FATAL(r->nsvcs, 4);
	CU_ASSERT_EQUAL(r->svcs[0].lo, 80);
	CU_ASSERT_EQUAL(r->svcs[1].proto, IPPROTO_UDP);
	CU_ASSERT_EQUAL(r->svcs[2].proto, IPPROTO_TCP);
	CU_ASSERT_EQUAL(r->svcs[2].lo, 0);
	CU_ASSERT_EQUAL(r->svcs[3].icmp_type, 8);
	policy_free(p);
}

static void test_service_format_helpers(void)
{
	struct dfw_service s = { .icmp_type = -1, .icmp_code = -1 };
	char buf[64];

	service_format(&s, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "any");
	s.proto = IPPROTO_TCP;
	s.lo = 4001;
	s.hi = 4002;
	service_format(&s, buf, 8); /* truncated, terminated */
	CU_ASSERT_STRING_EQUAL(buf, "tcp/400");
	CU_ASSERT_STRING_EQUAL(icmp_type_name(IPPROTO_ICMP, 8), "echo-request");
	CU_ASSERT_STRING_EQUAL(icmp_type_name(IPPROTO_ICMPV6, 8 + 120), "echo-request");
	CU_ASSERT_STRING_EQUAL(icmp_type_name(IPPROTO_ICMPV6, 136), "nd-neighbor-advert");
	CU_ASSERT_STRING_EQUAL(icmp_type_name(IPPROTO_ICMP, 13), "timestamp-request");
	CU_ASSERT_PTR_NULL(icmp_type_name(IPPROTO_ICMP, 1));
	CU_ASSERT_PTR_NULL(icmp_type_name(IPPROTO_ICMP, -1));
	CU_ASSERT_PTR_NULL(icmp_type_name(IPPROTO_ICMPV6, 135 - 128));
	CU_ASSERT_PTR_NULL(icmp_type_name(IPPROTO_TCP, 8));
}

/* ---- service objects ------------------------------------------------------ */

static void test_service_objects(void)
{
	struct dfw_policy *p = PARSE_OK(BASE
		"[service web]\n"                                   /* L(1) */
		"entries = tcp/80, tcp/443\n"
		"description = the web\n"
		"[service Admin]\n"                                 /* L(4) */
		"entries = tcp/22, web, ping, tcp/443\n"           /* ping: declared later */
		"[service ping]\n"                                  /* L(6) */
		"entries = icmp/echo-request, icmpv6/echo-request\n"
		"[service unused]\n"                                /* L(8): no error */
		"entries = udp/53\n"
		"[rule 5]\naction = allow\nservices = udp/123, admin, tcp/80\n"
		"[rule 6]\naction = allow\nservices = WEB\n");
	const struct dfw_service_obj *o;
	const struct dfw_rule *r;
	char buf[64];

	CU_ASSERT_EQUAL_FATAL(p->nservices, 4);
	o = &p->services[0];
	CU_ASSERT_STRING_EQUAL(o->name, "web");
	CU_ASSERT_EQUAL(o->line, L(1));
	CU_ASSERT_EQUAL_FATAL(o->nsvcs, 2);
	CU_ASSERT_EQUAL(o->svcs[1].lo, 443);
	CU_ASSERT_EQUAL(o->svcs[1].icmp_type, -1);
	o = &p->services[1];
	CU_ASSERT_STRING_EQUAL(o->name, "admin");
	/* expanded in place; tcp/443 again is folded */
	CU_ASSERT_EQUAL_FATAL(o->nsvcs, 5);
	{
		static const char *const want[] = {
			"tcp/22", "tcp/80", "tcp/443", "icmp/echo-request", "icmpv6/echo-request"
		};

		for (size_t i = 0; i < 5; i++) {
			service_format(&o->svcs[i], buf, sizeof(buf));
			CU_ASSERT_STRING_EQUAL(buf, want[i]);
		}
	}
	CU_ASSERT_EQUAL(p->services[3].nsvcs, 1);
	r = rule_by_id(p, 5);
	CU_ASSERT_EQUAL_FATAL(r->nsvcs, 6);
	service_format(&r->svcs[0], buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "udp/123");
	service_format(&r->svcs[1], buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "tcp/22");
	service_format(&r->svcs[5], buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "icmpv6/echo-request");
	r = rule_by_id(p, 6);
	CU_ASSERT_EQUAL_FATAL(r->nsvcs, 2);
	CU_ASSERT_EQUAL(r->svcs[0].lo, 80);
	policy_free(p);
}

static void test_service_object_errors(void)
{
	EXPECT_ERR(BASE "[service web]\ndescription = x\n", L(1), "[service web] needs 'entries'",
		   NULL, 1);
	EXPECT_ERR(BASE "[service web]\nentries =\n", L(2), "[service web] needs 'entries'", NULL, 1);
	EXPECT_ERR(BASE "[service web]\nentries = tcp/80\nports = 80\n", L(3),
		   "unknown key 'ports' in [service web]", NULL, 1);
	EXPECT_ERR(BASE "[service web]\nentries = tcp/80,\n", L(2),
		   "entries: empty item in the list", NULL, 1);
	EXPECT_ERR(BASE "[service web]\nentries = tcp/0\n", L(2),
		   "entries: 'tcp/0': ports are 1-65535", NULL, 1);
	EXPECT_ERR(BASE "[service web]\nentries = any\n", L(2),
		   "entries: 'any' cannot be part of a service object", NULL, 1);
	EXPECT_ERR(BASE "[service web!]\nentries = tcp/80\n", L(1),
		   "service name 'web!': 1-48 letters, digits and . _ -", NULL, 1);
	EXPECT_ERR(BASE "[service TCP]\nentries = tcp/80\n", L(1),
		   "service name 'tcp' is a protocol keyword; choose another name", NULL, 1);
	EXPECT_ERR(BASE "[service proto]\nentries = tcp/80\n", L(1),
		   "service name 'proto' is a protocol keyword", NULL, 1);
	EXPECT_ERR(BASE "[service web]\nentries = tcp/80\n[service Web]\nentries = tcp/81\n", L(3),
		   "section [service web] already defined at line 19", NULL, -1);
	/* Unknown names, with the nearest service object. */
	EXPECT_ERR(BASE "[service https]\nentries = tcp/443\n" RULE5 "services = htps\n", L(5),
		   "services: unknown service 'htps'", "(did you mean 'https'?)", 1);
	EXPECT_ERR(BASE "[service https]\nentries = tcp/443\n[service web]\nentries = htps\n",
		   L(4), "entries: unknown service 'htps'", "(did you mean 'https'?)", 1);
	/* Cycles, named. */
	EXPECT_ERR(BASE "[service a]\nentries = tcp/1, b\n[service b]\nentries = a\n", L(1),
		   "service a: cycle a -> b -> a", NULL, 1);
	EXPECT_ERR(BASE "[service a]\nentries = a\n", L(1), "service a: cycle a -> a", NULL, 1);
	EXPECT_ERR(BASE "[service x]\nentries = a\n[service a]\nentries = udp/1, b\n"
		   "[service b]\nentries = c\n[service c]\nentries = tcp/2, a\n", L(3),
		   "service a: cycle a -> b -> c -> a", NULL, 1);
	/* 'any' and a service object do not mix in a rule either. */
	EXPECT_ERR(BASE "[service web]\nentries = tcp/80\n" RULE5 "services = any, web\n", L(5),
		   "services: 'any' cannot be combined with other items", NULL, 1);
}

/* ---- address learning ----------------------------------------------------- */

static void test_vm_learn(void)
{
	struct dfw_policy *p = PARSE_OK(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "Learn")
		"[vm y]\nhost = hv1\nport = vnet-y\nmac = 02:00:00:00:00:0a\naddresses = learn\n"
		RULE5 "sources = x\ndestinations = vm:y\n");

	CU_ASSERT_EQUAL_FATAL(p->inv.nvms, 4);
	CU_ASSERT_TRUE(p->inv.vms[2].learn);
	CU_ASSERT_EQUAL(p->inv.vms[2].naddrs, 0);
	CU_ASSERT_TRUE(p->inv.vms[3].learn);
	CU_ASSERT_FALSE(p->inv.vms[0].learn);
	policy_free(p);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "learn, 10.0.0.9"), L(5),
		   "addresses: 'learn' cannot be combined with addresses", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "10.0.0.9, learn"), L(5),
		   "addresses: 'learn' cannot be combined with addresses", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "learn, learn"), L(5),
		   "addresses: 'learn' cannot be combined", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "lern"), L(5),
		   "address 'lern': not an IPv4 or IPv6 address", NULL, 1);
}

/* 'any' ends the list, so what follows it is never looked at: a typo there
 * must still be reported (as sources and destinations do). */
static void test_service_any_hides_items(void)
{
	EXPECT_ERR(BASE RULE5 "services = any, tcpp/80\n", L(3), "tcpp", NULL, -1);
}

/* ---- values that must not be read as something else ------------------------ */

/* A present but empty value is an error: "sources = ${SRC}" with SRC unset
 * must not open the rule to any source.  Only a missing key has a default. */
static void test_empty_values(void)
{
	struct dfw_policy *p;
	const struct dfw_rule *r;

	EXPECT_ERR(BASE RULE5 "sources =\n", L(3),
		   "sources: empty value: write 'any' to mean any", NULL, 1);
	EXPECT_ERR(BASE RULE5 "destinations =  \n", L(3),
		   "destinations: empty value: write 'any' to mean any", NULL, 1);
	EXPECT_ERR(BASE RULE5 "services =\n", L(3),
		   "services: empty value: write 'any' to mean any", NULL, 1);
	EXPECT_ERR(BASE RULE5 "applied_to =\n", L(3),
		   "applied_to: empty value: write 'any' to mean any", NULL, 1);
	/* Empty after its comment is cut, or quoted: empty still. */
	EXPECT_ERR(BASE RULE5 "sources = ; filled in by the template\n", L(3),
		   "sources: empty value", NULL, 1);
	EXPECT_ERR(BASE RULE5 "destinations = \"\"\n", L(3), "destinations: empty value",
		   NULL, 1);
	/* The other lists: empty is not "none" either (an empty exclude_groups
	 * would keep quarantined VMs in their group). */
	EXPECT_ERR(BASE "[group g]\nmatch = name equals x\nexclude_groups =\n", L(3),
		   "exclude_groups: empty value: leave the key out for none", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmembers =\n", L(2), "members: empty value", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmembers = server1\ninclude =\n", L(3),
		   "include: empty value", NULL, 1);
	EXPECT_ERR(BASE "[group g]\naddresses =\n", L(2), "addresses: empty value", NULL, 1);
	EXPECT_ERR(BASE "[group g]\nmembers = server1\nexclude_members =\n", L(3),
		   "exclude_members: empty value", NULL, 1);
	EXPECT_ERR("[tags]\nnames =\n", 2, "names: empty value", NULL, 1);

	/* Absent keys keep their defaults: any, every service, every vNIC. */
	p = PARSE_OK(BASE RULE5);
	r = rule_by_id(p, 5);
	CU_ASSERT_TRUE(r->src.any);
	CU_ASSERT_TRUE(r->dst.any);
	CU_ASSERT_EQUAL(r->nsvcs, 0);
	CU_ASSERT_TRUE(r->applied_everywhere);
	policy_free(p);
}

/* A VM or group named like an address or a word of the rule syntax could
 * not be referred to: "sources = 10.9.9.9" is the address, "any" is any. */
static void test_reserved_names(void)
{
	struct dfw_policy *p;

	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "02:00:00:00:00:09", "10.0.0.9")
		   "[vm 10.9.9.9]\nhost = hv1\nport = vnet-y\nmac = 02:00:00:00:00:0a\n"
		   "addresses = 10.0.0.10\n", L(6),
		   "VM name '10.9.9.9' is an IP address, and rules would read it as one", NULL, 1);
	EXPECT_ERR(BASE "[group 192.0.2.1]\nmembers = server1\n", L(1),
		   "group name '192.0.2.1' is an IP address", NULL, 1);
	EXPECT_ERR(BASE "[group any]\nmembers = server1\n", L(1),
		   "group name 'any' is a reserved word (any, not, learn, and, or); "
		   "choose another name", NULL, 1);
	EXPECT_ERR(BASE "[group NOT]\nmembers = server1\n", L(1),
		   "group name 'not' is a reserved word", NULL, 1);
	EXPECT_ERR(BASE "[vm learn]\nhost = hv1\nport = vnet-l\nmac = 02:00:00:00:00:09\n"
		   "addresses = 10.0.0.9\n", L(1), "VM name 'learn' is a reserved word", NULL, 1);
	EXPECT_ERR(BASE "[vm and]\nhost = hv1\nport = vnet-l\nmac = 02:00:00:00:00:09\n"
		   "addresses = 10.0.0.9\n", L(1), "VM name 'and' is a reserved word", NULL, 1);
	EXPECT_ERR(BASE "[group or]\nmembers = server1\n", L(1),
		   "group name 'or' is a reserved word", NULL, 1);
	/* Near misses are names. */
	p = PARSE_OK(BASE "[group any1]\nmembers = server1\n[group not-any]\nmembers = server1\n"
		     "[group 10.9.9]\nmembers = server1\n[group 10.9.9.9.9]\nmembers = server1\n"
		     "[vm learner]\nhost = hv1\nport = vnet-l\nmac = 02:00:00:00:00:09\n"
		     "addresses = 10.0.0.9\n"
		     RULE5 "sources = any1, 10.9.9, 10.9.9.9.9\ndestinations = learner\n");
	CU_ASSERT_EQUAL(rule_by_id(p, 5)->src.nrefs, 3);
	CU_ASSERT_EQUAL(rule_by_id(p, 5)->src.refs[1].kind, REF_GROUP);
	policy_free(p);
}

/* What quotes do: the text between them is the value, verbatim; after the
 * closing quote only a comment may follow. */
static void test_quotes(void)
{
	struct dfw_policy *p;

	EXPECT_ERR(BASE RULE5 "[rule 6]\naction = \"allow\" drop\n", L(4),
		   "action: 'drop' after the closing quote; only a comment (; or #) may follow "
		   "a quoted value", NULL, 1);
	EXPECT_ERR(BASE RULE5 "name = 'web' 'db'\n", L(3), "name: ''db'' after the closing quote",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "name = \"web\"x\n", L(3), "name: 'x' after the closing quote",
		   NULL, 1);
	EXPECT_ERR(BASE RULE5 "name = \"web ; db\n", L(3),
		   "name: the quote \" is not closed on this line", NULL, 1);
	p = PARSE_OK(BASE "[rule 5]\naction = \"allow\" ; the quotes go\n"
		     "name = \"a; b # c \"  # a comment\n"
		     "notes = 'say \"hi\"'\n"
		     "[rule 6]\naction = 'drop'#\nname = \"\"\n");
	CU_ASSERT_EQUAL(rule_by_id(p, 5)->action, ACT_ALLOW);
	CU_ASSERT_STRING_EQUAL(rule_by_id(p, 5)->name, "a; b # c ");
	CU_ASSERT_EQUAL(rule_by_id(p, 6)->action, ACT_DROP);
	CU_ASSERT_STRING_EQUAL(rule_by_id(p, 6)->name, "");
	policy_free(p);
}

/* The store keeps the file's text, and etcd only UTF-8: a Latin-1 byte must
 * fail here, at its line, not later in the store without one. */
static void test_utf8(void)
{
	struct dfw_policy *p;

	EXPECT_ERR(BASE "[vm x]\nhost = hv1\nport = vnet-x\nmac = 02:00:00:00:00:09\n"
		   "addresses = 10.0.0.9\nos = caf\xe9\n", L(6),
		   "byte 0xe9 at column 9 is not UTF-8; a policy is UTF-8 text", NULL, 1);
	EXPECT_ERR(BASE "[group caf\xc3]\nmembers = server1\n", L(1), "byte 0xc3 at column 11",
		   NULL, -1);
	EXPECT_ERR(BASE "; r\xe9sum\xe9\n", L(1), "byte 0xe9 at column 4 is not UTF-8", NULL, 1);
	/* Overlong forms and surrogates are not UTF-8 either. */
	EXPECT_ERR(BASE RULE5 "name = \xc0\xaf\n", L(3), "byte 0xc0 at column 8", NULL, 1);
	EXPECT_ERR(BASE RULE5 "name = \xed\xa0\x80\n", L(3), "byte 0xed at column 8", NULL, 1);
	p = PARSE_OK(BASE "[vm x]\nhost = hv1\nport = vnet-x\nmac = 02:00:00:00:00:09\n"
		     "addresses = 10.0.0.9\nos = caf\xc3\xa9 \xe2\x9c\x93\n");
	CU_ASSERT_STRING_EQUAL(p->inv.vms[2].os, "caf\xc3\xa9 \xe2\x9c\x93");
	policy_free(p);
}

/* A VM's MAC and addresses are what its vNIC may send from: never a
 * group's, the host's or no one's.  CIDRs of groups and rules may be any. */
static void test_vm_own_addresses(void)
{
	static const struct {
		const char *addr, *why;
	} bad[] = {
		{ "0.0.0.0", "an unspecified ('this network', 0.0.0.0/8) address" },
		{ "0.1.2.3", "an unspecified" },
		{ "127.0.0.1", "a loopback address" },
		{ "127.1.2.3", "a loopback address" },
		{ "224.0.0.1", "a multicast address" },
		{ "239.255.255.250", "a multicast address" },
		{ "255.255.255.255", "the broadcast address" },
		{ "240.0.0.1", "a reserved (240.0.0.0/4) address" },
		{ "::ffff:10.0.0.1", "an IPv4-mapped address" },
		{ "::", "the unspecified address" },
		{ "::1", "the loopback address" },
		{ "ff02::1", "a multicast address" },
		{ "FF05::1:3", "a multicast address" },
	};
	struct dfw_policy *p;

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char text[1024], want[256];

		snprintf(text, sizeof(text), "%s" VM_X("hv1", "vnet-x", "02:00:00:00:00:09",
						       "10.0.0.9, %s"), BASE, bad[i].addr);
		snprintf(want, sizeof(want), "address '%s': %s", bad[i].addr, bad[i].why);
		EXPECT_ERR(text, L(5), want, "cannot be a VM's own", 1);
	}
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "ff:ff:ff:ff:ff:ff", "10.0.0.9"), L(4),
		   "mac 'ff:ff:ff:ff:ff:ff': a multicast or broadcast MAC (the first byte is odd) "
		   "cannot be a VM's own", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "01:00:5e:00:00:01", "10.0.0.9"), L(4),
		   "mac '01:00:5e:00:00:01': a multicast or broadcast MAC", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "33:33:00:00:00:01", "10.0.0.9"), L(4),
		   "mac '33:33:00:00:00:01': a multicast", NULL, 1);
	EXPECT_ERR(BASE VM_X("hv1", "vnet-x", "00:00:00:00:00:00", "10.0.0.9"), L(4),
		   "mac '00:00:00:00:00:00': the all-zero MAC cannot be a VM's own", NULL, 1);
	/* Unicast MACs of any vendor, link-local and other unicast addresses,
	 * learn; and CIDRs elsewhere, which name networks, not a VM's own. */
	p = PARSE_OK(BASE VM_X("hv1", "vnet-x", "52:54:00:12:34:56",
			       "169.254.0.9, fe80::9, 126.255.255.255, 128.0.0.1, 223.255.255.254")
		     "[vm y]\nhost = hv1\nport = vnet-y\nmac = 00:00:00:00:00:01\naddresses = learn\n"
		     "[group g]\naddresses = 224.0.0.0/4, ff00::/8, 127.0.0.0/8, 0.0.0.0/0, ::/0\n"
		     RULE5 "sources = 255.255.255.255, ::1, 0.0.0.0/8\ndestinations = ff02::1\n");
	CU_ASSERT_EQUAL(p->inv.vms[2].naddrs, 5);
	CU_ASSERT_TRUE(p->inv.vms[3].learn);
	policy_free(p);
}

/* ---- several errors at once ----------------------------------------------- */

static void test_all_errors_reported(void)
{
	const char *text = BASE
		"[vm x]\n"                        /* L(1): needs 'addresses' */
		"host = hv1\n"
		"port = vnet-x\n"
		"mac = 02:00:00:00:00:0z\n"       /* L(4): bad mac */
		"[group g]\n"                     /* L(5) */
		"members = desktp1\n"             /* L(6): unknown VM */
		"match = tag equals nope\n"       /* L(7): undeclared tag */
		"[rule 5]\n"                      /* L(8) */
		"action = alow\n"                 /* L(9): unknown action */
		"services = tcp/0\n"              /* L(10): bad port */
		"sources = any, desktops\n"       /* L(11): any combined */
		"colour = red\n"                  /* L(12): unknown key */
		"[group h]\n"                     /* L(13) */
		"include = g\n"                   /* L(14) */
		"include = servers\n"             /* L(15): duplicate key */
		"[bogus]\n";                      /* L(16): unknown section */
	struct diag d = { 0 };
	struct dfw_policy *p = policy_parse(text, FILE_NAME, &d);

	CU_ASSERT_PTR_NULL(p);
	if (d.n != 10)
		dump(&d, __LINE__);
	CU_ASSERT_EQUAL(d.n, 10);
	CU_ASSERT_TRUE(has_msg(&d, L(1), "[vm x] needs 'addresses'", NULL));
	CU_ASSERT_TRUE(has_msg(&d, L(4), "mac '02:00:00:00:00:0z'", NULL));
	CU_ASSERT_TRUE(has_msg(&d, L(6), "members: unknown VM 'desktp1'", NULL));
	CU_ASSERT_TRUE(has_msg(&d, L(7), "tag 'nope' is not declared", NULL));
	CU_ASSERT_TRUE(has_msg(&d, L(9), "action: unknown value 'alow'", NULL));
	CU_ASSERT_TRUE(has_msg(&d, L(10), "'tcp/0': ports are", NULL));
	CU_ASSERT_TRUE(has_msg(&d, L(11), "'any' cannot be combined", NULL));
	CU_ASSERT_TRUE(has_msg(&d, L(12), "unknown key 'colour' in [rule 5]", NULL));
	CU_ASSERT_TRUE(has_msg(&d, L(15), "'include' already set at line 32", NULL));
	CU_ASSERT_TRUE(has_msg(&d, L(16), "unknown section [bogus]", NULL));
	policy_free(p);
	diag_free(&d);
}

/* ---- accepted forms ------------------------------------------------------- */

static void test_accepted_rules(void)
{
	struct dfw_policy *p = PARSE_OK(BASE
		"[group desktop-and-web]\n"
		"match = name starts-with desktop and tag equals ROLE.WEB or os contains win\n"
		"include = servers\n"
		"addresses = 192.0.2.0/24, 2001:db8::/32\n"
		"exclude_members = server1\n"
		"quarantine = yes\n"
		"keep_connections = yes\n"
		"description = anything at all\n"
		"[rule 9]\n"
		"name = prefixes\n"
		"category = infrastructure\n"
		"sources = group:desktops, vm:server1, 2001:db8:1::/48, 198.51.100.7\n"
		"destinations = desktop1, servers, fd00::2\n"
		"services = tcp/1000-2000, udp/53, icmp, icmpv6, TCP/22\n"
		"applied_to = servers, desktops\n"
		"direction = in\n"
		"action = reject\n"
		"log = yes\n"
		"notes = free text\n"
		"[rule 3]\n"
		"sources = any\n"
		"notes = destinations left out: any\n"
		"services = any\n"
		"applied_to = any\n"
		"direction = out\n"
		"action = ALLOW\n"
		"disabled = yes\n"
		"[rule 4]\n"
		"category = Emergency\n"
		"direction = in-out\n"
		"action = drop\n");
	const struct dfw_rule *r;
	const struct group_def *g;
	long desktops = policy_find_group(p, "desktops"), servers = policy_find_group(p, "servers");

	CU_ASSERT_EQUAL_FATAL(p->nrules, 3);
	/* Order: emergency (4), infrastructure (9), application (3). */
	CU_ASSERT_EQUAL(p->rules[0].id, 4);
	CU_ASSERT_EQUAL(p->rules[1].id, 9);
	CU_ASSERT_EQUAL(p->rules[2].id, 3);

	g = &p->inv.groups[2];
	CU_ASSERT_STRING_EQUAL(g->name, "desktop-and-web");
	CU_ASSERT_EQUAL_FATAL(g->nmatch, 2);
	CU_ASSERT_EQUAL_FATAL(g->match[0].nconds, 2);
	CU_ASSERT_EQUAL(g->match[0].conds[1].field, COND_TAG);
	CU_ASSERT_STRING_EQUAL(g->match[0].conds[1].value, "ROLE.WEB");
	CU_ASSERT_EQUAL_FATAL(g->match[1].nconds, 1);
	CU_ASSERT_EQUAL(g->match[1].conds[0].field, COND_OS);
	CU_ASSERT_EQUAL(g->match[1].conds[0].op, OP_CONTAINS);
	CU_ASSERT_EQUAL(g->nincludes, 1);
	CU_ASSERT_EQUAL_FATAL(g->naddrs, 2);
	CU_ASSERT_TRUE(addr_is(&g->addrs[0], "192.0.2.0/24"));
	CU_ASSERT_TRUE(addr_is(&g->addrs[1], "2001:db8::/32"));
	CU_ASSERT_EQUAL(g->nexclude_members, 1);
	CU_ASSERT_TRUE(g->quarantine);
	CU_ASSERT_TRUE(g->keep_connections);

	r = rule_by_id(p, 9);
	CU_ASSERT_STRING_EQUAL(r->name, "prefixes");
	CU_ASSERT_EQUAL(r->category, CAT_INFRASTRUCTURE);
	CU_ASSERT_FALSE(r->src.any);
	CU_ASSERT_EQUAL_FATAL(r->src.nrefs, 4);
	CU_ASSERT_EQUAL(r->src.refs[0].kind, REF_GROUP);
	CU_ASSERT_EQUAL(r->src.refs[0].idx, (size_t)desktops);
	CU_ASSERT_EQUAL(r->src.refs[1].kind, REF_VM);
	CU_ASSERT_EQUAL(r->src.refs[1].idx, 1);
	CU_ASSERT_EQUAL(r->src.refs[2].kind, REF_ADDR);
	CU_ASSERT_TRUE(addr_is(&r->src.refs[2].addr, "2001:db8:1::/48"));
	CU_ASSERT_EQUAL(r->src.refs[3].kind, REF_ADDR);
	CU_ASSERT_TRUE(addr_is(&r->src.refs[3].addr, "198.51.100.7"));
	CU_ASSERT_EQUAL_FATAL(r->dst.nrefs, 3);
	CU_ASSERT_EQUAL(r->dst.refs[0].kind, REF_VM); /* bare name of a VM */
	CU_ASSERT_EQUAL(r->dst.refs[0].idx, 0);
	CU_ASSERT_EQUAL(r->dst.refs[1].kind, REF_GROUP); /* bare name of a group */
	CU_ASSERT_EQUAL(r->dst.refs[1].idx, (size_t)servers);
	CU_ASSERT_EQUAL(r->dst.refs[2].kind, REF_ADDR);
	CU_ASSERT_TRUE(addr_is(&r->dst.refs[2].addr, "fd00::2"));
	CU_ASSERT_EQUAL_FATAL(r->nsvcs, 5);
	CU_ASSERT_EQUAL(r->svcs[0].proto, IPPROTO_TCP);
	CU_ASSERT_EQUAL(r->svcs[0].lo, 1000);
	CU_ASSERT_EQUAL(r->svcs[0].hi, 2000);
	CU_ASSERT_EQUAL(r->svcs[1].proto, IPPROTO_UDP);
	CU_ASSERT_EQUAL(r->svcs[1].lo, 53);
	CU_ASSERT_EQUAL(r->svcs[1].hi, 53);
	CU_ASSERT_EQUAL(r->svcs[2].proto, IPPROTO_ICMP);
	CU_ASSERT_EQUAL(r->svcs[2].lo, 0);
	CU_ASSERT_EQUAL(r->svcs[2].hi, 0);
	CU_ASSERT_EQUAL(r->svcs[3].proto, IPPROTO_ICMPV6);
	CU_ASSERT_EQUAL(r->svcs[4].proto, IPPROTO_TCP);
	CU_ASSERT_EQUAL(r->svcs[4].lo, 22);
	CU_ASSERT_FALSE(r->applied_everywhere);
	CU_ASSERT_EQUAL_FATAL(r->napplied, 2);
	CU_ASSERT_EQUAL(r->applied_to[0], (size_t)servers);
	CU_ASSERT_EQUAL(r->applied_to[1], (size_t)desktops);
	CU_ASSERT_EQUAL(r->dir, DIR_IN);
	CU_ASSERT_EQUAL(r->action, ACT_REJECT);
	CU_ASSERT_TRUE(r->log);
	CU_ASSERT_FALSE(r->disabled);

	r = rule_by_id(p, 3);
	CU_ASSERT_STRING_EQUAL(r->name, "");
	CU_ASSERT_EQUAL(r->category, CAT_APPLICATION);
	CU_ASSERT_TRUE(r->src.any);
	CU_ASSERT_EQUAL(r->src.nrefs, 0);
	CU_ASSERT_TRUE(r->dst.any);
	CU_ASSERT_EQUAL(r->nsvcs, 0);
	CU_ASSERT_PTR_NULL(r->svcs);
	CU_ASSERT_TRUE(r->applied_everywhere);
	CU_ASSERT_EQUAL(r->dir, DIR_OUT);
	CU_ASSERT_EQUAL(r->action, ACT_ALLOW);
	CU_ASSERT_TRUE(r->disabled);
	CU_ASSERT_FALSE(r->log);

	r = rule_by_id(p, 4);
	CU_ASSERT_EQUAL(r->category, CAT_EMERGENCY);
	CU_ASSERT_EQUAL(r->dir, DIR_INOUT);
	CU_ASSERT_EQUAL(r->action, ACT_DROP);
	CU_ASSERT_TRUE(r->src.any);
	CU_ASSERT_TRUE(r->dst.any);
	CU_ASSERT_EQUAL(r->line, L(28));
	policy_free(p);
}

/* ---- warnings ------------------------------------------------------------- */

/* Parses text (valid) and returns its warnings in w; n: the exact count. */
static void warnings_at(int at, const char *text, struct diag *w, size_t n)
{
	struct dfw_policy *p = parse_ok_at(at, text);

	policy_warnings(p, w);
	if (w->n != n)
		dump(w, at);
	CU_assertImplementation(w->n == n, (unsigned)at, "warning count", __FILE__, "", CU_FALSE);
	policy_free(p);
}

#define WARNINGS(text, w, n) warnings_at(__LINE__, text, w, n)

static void test_shadow_warnings(void)
{
	struct diag w = { 0 };

	/* Conflicting: an earlier drop covers a later allow. */
	WARNINGS(BASE
		 "[rule 10]\nsources = desktops\naction = drop\n"                      /* L(1) */
		 "[rule 20]\nsources = desktops\ndestinations = servers\n"           /* L(4) */
		 "services = tcp/443\naction = allow\n", &w, 1);
	CU_ASSERT_TRUE(has_msg(&w, L(4), "warning: rule 20 never matches: rule 10 (line 19) comes "
			       "first and covers it; conflicting, rule 10 drops what rule 20 would "
			       "allow", NULL));
	diag_free(&w);

	/* Redundant: CIDR in CIDR, range in range, one direction of in-out,
	 * applied_to any over a group, ICMP any type over one type. */
	WARNINGS(BASE
		 "[rule 30]\nsources = 10.0.0.0/8, desktops\ndestinations = servers, fd00::/16\n"
		 "services = tcp/1000-2000, icmp, icmpv6/destination-unreachable\naction = allow\n"
		 "[rule 31]\nsources = 10.1.0.0/16\ndestinations = fd00:1::/32, servers\n"  /* L(6) */
		 "services = tcp/1500-1600, icmp/echo-request, icmpv6/1:3, tcp/2000\n"
		 "direction = in\napplied_to = servers\naction = allow\n", &w, 1);
	CU_ASSERT_TRUE(has_msg(&w, L(6), "warning: rule 31 never matches: rule 30 (line 19) comes "
			       "first and covers it; redundant, both allow", NULL));
	diag_free(&w);

	/* Evaluation order is category first: an emergency rule later in the
	 * file shadows an application rule above it.  reject != drop. */
	WARNINGS(BASE
		 "[rule 1]\nsources = servers\nservices = udp/53\naction = drop\n"    /* L(1) */
		 "[rule 2]\ncategory = emergency\nsources = servers\naction = reject\n",
		 &w, 1);
	CU_ASSERT_TRUE(has_msg(&w, L(1), "warning: rule 1 never matches: rule 2 (line 23) comes "
			       "first and covers it; conflicting, rule 2 rejects what rule 1 would "
			       "drop", NULL));
	diag_free(&w);

	/* Negated sides: only the same list (in any order) counts. */
	WARNINGS(BASE
		 "[rule 1]\nsources = not desktops, 10.0.0.0/8\naction = drop\n"
		 "[rule 2]\nsources = not 10.0.0.0/8, group:desktops\nservices = tcp\n"
		 "action = drop\n", &w, 1);
	CU_ASSERT_TRUE(has_msg(&w, L(4), "rule 2 never matches: rule 1", "redundant, both drop"));
	diag_free(&w);

	/* Service objects are judged by what they expand to; the earliest
	 * covering rule is named, once. */
	WARNINGS(BASE
		 "[service web]\nentries = tcp/80, tcp/443\n"
		 "[rule 1]\nservices = tcp\naction = allow\n"                          /* L(3) */
		 "[rule 2]\nservices = web\naction = allow\n"
		 "[rule 3]\nservices = tcp/443\naction = drop\n", &w, 2);
	CU_ASSERT_TRUE(has_msg(&w, L(9), "rule 3 never matches: rule 1 (line 21)", "conflicting"));
	diag_free(&w);

	/* Negative cases: nothing is covered. */
	WARNINGS(BASE
		 /* disabled rules neither shadow nor are reported */
		 "[rule 1]\naction = drop\ndisabled = yes\n"
		 "[rule 2]\nsources = desktops\nservices = tcp/443\naction = allow\n"
		 /* narrower before wider */
		 "[rule 3]\nsources = desktops\nservices = tcp\naction = allow\n"
		 /* a range only partly covered; together they would, but that is
		  * not judged */
		 "[rule 4]\nsources = desktops\nservices = udp/100-200\naction = allow\n"
		 "[rule 5]\nsources = desktops\nservices = udp/150-250\naction = drop\n"
		 /* one direction does not cover both */
		 "[rule 6]\nsources = servers\ndirection = in\naction = drop\n"
		 "[rule 7]\nsources = servers\naction = allow\n"
		 /* applied to a group does not cover everywhere */
		 "[rule 8]\ndestinations = servers\napplied_to = servers\naction = drop\n"
		 "[rule 9]\ndestinations = servers\naction = allow\n"
		 /* a VM in a group is not judged, nor negated against plain */
		 "[rule 10]\nsources = not servers\ndestinations = desktops\naction = drop\n"
		 "[rule 11]\nsources = desktop1\ndestinations = desktops\naction = allow\n"
		 /* one ICMP type does not cover another, nor a code any code */
		 "[rule 12]\nservices = icmp/echo-request, icmpv6/1:3\naction = drop\n"
		 "[rule 13]\nservices = icmp/echo-reply, icmpv6/1\naction = allow\n"
		 /* negated lists that differ */
		 "[rule 14]\ndestinations = not 10.0.0.0/8\naction = drop\n"
		 "[rule 15]\ndestinations = not 10.0.0.0/16\naction = allow\n"
		 /* another protocol */
		 "[rule 16]\nsources = 10.9.0.0/16\nservices = proto/gre\naction = drop\n"
		 "[rule 17]\nsources = 10.9.0.0/16\nservices = proto/esp\naction = allow\n",
		 &w, 0);
	diag_free(&w);

	/* The shipped examples have nothing to warn about. */
	{
		static const char *const files[] = {
			"configs/vdi.ini", "configs/cluster.ini", "configs/segmentation.ini"
		};

		for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
			struct diag d = { 0 };
			struct dfw_policy *p = policy_load(files[i], NULL, &d);

			if (!p)
				dump(&d, __LINE__);
			CU_ASSERT_PTR_NOT_NULL_FATAL(p);
			policy_warnings(p, &w);
			if (w.n)
				dump(&w, __LINE__);
			CU_ASSERT_EQUAL(w.n, 0);
			policy_free(p);
			diag_free(&w);
			diag_free(&d);
		}
	}
}

static void test_other_warnings(void)
{
	struct diag w = { 0 };

	WARNINGS(BASE
		 "[group empty]\nexclude_members = server1\n"                           /* L(1) */
		 "[group fine]\naddresses = 192.0.2.0/24\n"
		 "[rule 1]\nsources = vm:server1\ndestinations = server1\naction = drop\n" /* L(5) */
		 "[rule 2]\nsources = server1\ndestinations = server1, desktop1\naction = drop\n"
		 "[rule 3]\nsources = not server1\ndestinations = server1\naction = drop\n",
		 &w, 2);
	CU_ASSERT_TRUE(has_msg(&w, L(1), "warning: group empty can never have members (it has no "
			       "match, members, include or addresses)", NULL));
	CU_ASSERT_TRUE(has_msg(&w, L(5), "warning: rule 1: sources and destinations are the same "
			       "VM server1; a VM's traffic to itself never crosses the bridge", NULL));
	diag_free(&w);
}

static void test_names_helpers(void)
{
	static const char *const names[] = { "allow", "drop", "reject" };

	CU_ASSERT_STRING_EQUAL(nearest_name("alow", names, 3), "allow");
	CU_ASSERT_STRING_EQUAL(nearest_name("DROP", names, 3), "drop");
	CU_ASSERT_PTR_NULL(nearest_name("permit", names, 3));
	CU_ASSERT_PTR_NULL(nearest_name("x", names, 0));
	CU_ASSERT_STRING_EQUAL(action_name(ACT_REJECT), "reject");
	CU_ASSERT_STRING_EQUAL(category_name(CAT_ENVIRONMENT), "environment");
	CU_ASSERT_STRING_EQUAL(dir_name(DIR_IN), "in");
	CU_ASSERT_STRING_EQUAL(dir_name(DIR_OUT), "out");
	CU_ASSERT_STRING_EQUAL(dir_name(DIR_INOUT), "in-out");
}

void register_config_tests(void)
{
	static const struct unit_test tests[] = {
		{ "shipped configs/vdi.ini", test_vdi },
		{ "policy_load errors", test_load_errors },
		{ "base policy, empty policy, comments, case", test_base_and_empty },
		{ "bad sections", test_sections },
		{ "bad keys and lines", test_keys },
		{ "continuation with trailing blanks", test_continuation_trailing_blank },
		{ "a stray line keeps the other errors", test_stray_line_keeps_other_errors },
		{ "bad VMs", test_vm_errors },
		{ "accepted VMs", test_vm_accepted },
		{ "one VM name in two sections", test_vm_name_twice },
		{ "long host names do not collide", test_long_host_names },
		{ "tags", test_tags_errors },
		{ "[detection] and [netthreat]", test_detection },
		{ "group references", test_group_refs },
		{ "group criteria", test_criteria_errors },
		{ "scoped tags in criteria", test_scoped_criteria },
		{ "quoted values in criteria", test_quoted_criteria },
		{ "dhcp_servers", test_dhcp_servers },
		{ "nested-group cycles", test_cycles },
		{ "bad rules", test_rule_errors },
		{ "no empty suggestion for direction", test_direction_no_empty_suggestion },
		{ "bad sources and destinations", test_side_errors },
		{ "bad services", test_service_errors },
		{ "bad negations", test_negation_errors },
		{ "negated sides", test_negation_accepted },
		{ "service literals", test_service_literals },
		{ "repeated services fold", test_service_duplicates },
		{ "service_format and icmp_type_name", test_service_format_helpers },
		{ "service objects", test_service_objects },
		{ "bad service objects", test_service_object_errors },
		{ "addresses = learn", test_vm_learn },
		{ "services after 'any' are checked", test_service_any_hides_items },
		{ "present but empty values", test_empty_values },
		{ "names that read as addresses or keywords", test_reserved_names },
		{ "quoted values", test_quotes },
		{ "UTF-8 only", test_utf8 },
		{ "a VM's own MAC and addresses", test_vm_own_addresses },
		{ "all errors are reported", test_all_errors_reported },
		{ "accepted rule forms", test_accepted_rules },
		{ "shadowed rules", test_shadow_warnings },
		{ "other warnings", test_other_warnings },
		{ "names and suggestions", test_names_helpers },
	};

	unit_suite("config", tests, ARRAY_SIZE(tests));
}
