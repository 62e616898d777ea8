/* Unit tests of the membership engine: condition operators, nesting,
 * exclusion, tag deltas, cycles and effective addresses, plus a randomized
 * comparison against a direct reading of the membership rule. */
#include "groups/groups.h"
#include "tests/unit/unit.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- building inventories --------------------------------------------- */

static size_t vm_add(struct inventory *inv, const char *name, const char *os)
{
	struct vm *vm;

	inv->vms = xrealloc(inv->vms, (inv->nvms + 1) * sizeof(*inv->vms));
	vm = &inv->vms[inv->nvms];
	memset(vm, 0, sizeof(*vm));
	vm->name = xstrdup(name);
	vm->os = xstrdup(os);
	vm->line = (int)inv->nvms + 1;
	return inv->nvms++;
}

/* Group i is declared at line 10 * (i + 1), so tests can predict messages. */
static size_t group_add(struct inventory *inv, const char *name)
{
	struct group_def *gd;

	inv->groups = xrealloc(inv->groups, (inv->ngroups + 1) * sizeof(*inv->groups));
	gd = &inv->groups[inv->ngroups];
	memset(gd, 0, sizeof(*gd));
	gd->name = xstrdup(name);
	gd->line = 10 * ((int)inv->ngroups + 1);
	return inv->ngroups++;
}

static void idx_add(size_t **v, size_t *n, size_t x)
{
	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	(*v)[(*n)++] = x;
}

/* One condition: "FIELD OP VALUE" with field tag, name or os and op "=",
 * "!=", "~" (contains), "^" (starts with) or "$" (ends with). */
static void cond_parse(const char *s, struct cond *c)
{
	static const struct { const char *tok; enum cond_field field; } fields[] = {
		{ "tag", COND_TAG }, { "name", COND_NAME }, { "os", COND_OS },
	};
	static const struct { const char *tok; enum cond_op op; } ops[] = {
		{ "!=", OP_NOT_EQUALS }, { "=", OP_EQUALS }, { "~", OP_CONTAINS },
		{ "^", OP_STARTS_WITH }, { "$", OP_ENDS_WITH },
	};
	size_t i, j;

	for (i = 0; i < ARRAY_SIZE(fields); i++)
		if (!strncmp(s, fields[i].tok, strlen(fields[i].tok)))
			break;
	if (i == ARRAY_SIZE(fields))
		abort();
	s += strlen(fields[i].tok);
	for (j = 0; j < ARRAY_SIZE(ops); j++)
		if (!strncmp(s, ops[j].tok, strlen(ops[j].tok)))
			break;
	if (j == ARRAY_SIZE(ops))
		abort();
	c->field = fields[i].field;
	c->op = ops[j].op;
	c->value = xstrdup(s + strlen(ops[j].tok));
}

/* A criterion from "COND & COND ..."; "" gives an empty criterion. */
static void crit_parse(const char *spec, struct criterion *c)
{
	char *copy = xstrdup(spec), *save = NULL, *tok;

	memset(c, 0, sizeof(*c));
	for (tok = strtok_r(copy, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
		c->conds = xrealloc(c->conds, (c->nconds + 1) * sizeof(*c->conds));
		cond_parse(str_trim(tok), &c->conds[c->nconds++]);
	}
	free(copy);
}

static void crit_free(struct criterion *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < c[i].nconds; j++)
			free(c[i].conds[j].value);
		free(c[i].conds);
	}
	free(c);
}

/* Adds one criterion (ORed with the others) to match or exclude_match. */
static void crit_add(struct inventory *inv, size_t g, bool exclude, const char *spec)
{
	struct group_def *gd = &inv->groups[g];
	struct criterion **v = exclude ? &gd->exclude_match : &gd->match;
	size_t *n = exclude ? &gd->nexclude_match : &gd->nmatch;

	*v = xrealloc(*v, (*n + 1) * sizeof(**v));
	crit_parse(spec, &(*v)[(*n)++]);
}

static void addr_add(struct inventory *inv, size_t g, const char *s)
{
	struct group_def *gd = &inv->groups[g];
	const char *why;

	gd->addrs = xrealloc(gd->addrs, (gd->naddrs + 1) * sizeof(*gd->addrs));
	if (addr_parse(s, &gd->addrs[gd->naddrs++], &why))
		abort();
}

static void inv_free(struct inventory *inv)
{
	for (size_t i = 0; i < inv->nvms; i++) {
		free(inv->vms[i].name);
		free(inv->vms[i].os);
	}
	for (size_t i = 0; i < inv->ngroups; i++) {
		struct group_def *gd = &inv->groups[i];

		free(gd->name);
		crit_free(gd->match, gd->nmatch);
		crit_free(gd->exclude_match, gd->nexclude_match);
		free(gd->members);
		free(gd->includes);
		free(gd->addrs);
		free(gd->exclude_members);
		free(gd->exclude_groups);
	}
	free(inv->vms);
	free(inv->groups);
	memset(inv, 0, sizeof(*inv));
}

/* ---- observing the engine --------------------------------------------- */

/* Collects deltas or members as text, e.g. "quarantine+desktop2 desktops-desktop2". */
struct rec {
	const struct inventory *inv;
	char buf[1024];
};

static void rec_add(struct rec *r, const char *item)
{
	size_t len = strlen(r->buf);

	snprintf(r->buf + len, sizeof(r->buf) - len, "%s%s", len ? " " : "", item);
}

static void rec_delta(void *arg, size_t g, size_t vm, bool joined, bool base)
{
	struct rec *r = arg;
	char item[256];

	if (base)
		return;
	snprintf(item, sizeof(item), "%s%c%s", r->inv->groups[g].name,
		 joined ? '+' : '-', r->inv->vms[vm].name);
	rec_add(r, item);
}

static void rec_member(void *arg, size_t vm)
{
	struct rec *r = arg;

	rec_add(r, r->inv->vms[vm].name);
}

/* Replaces the tags of vm with a comma-separated list; returns the deltas. */
static const char *retag(struct gengine *e, struct rec *r, size_t vm, const char *csv)
{
	struct strv tags = { 0 };

	strv_split(&tags, csv);
	r->buf[0] = '\0';
	gengine_set_tags(e, vm, (const char *const *)tags.v, tags.n, rec_delta, r);
	strv_free(&tags);
	return r->buf;
}

/* The members of g as text, checking that gengine_count agrees. */
static const char *members(const struct gengine *e, struct rec *r, size_t g)
{
	size_t n = 0;

	r->buf[0] = '\0';
	gengine_foreach_member(e, g, rec_member, r);
	for (const char *p = r->buf; *p; p++)
		n += *p == ' ';
	CU_ASSERT_EQUAL(gengine_count(e, g), r->buf[0] ? n + 1 : 0);
	return r->buf;
}

static bool holds(const char *spec, const struct vm *vm, const char *const *tags,
		  size_t ntags)
{
	struct criterion *c = xmalloc(sizeof(*c));
	bool ok;

	crit_parse(spec, c);
	ok = criteria_match(c, 1, vm, tags, ntags);
	crit_free(c, 1);
	return ok;
}

static struct gengine *engine(const struct inventory *inv)
{
	struct diag d = { 0 };
	struct gengine *e = gengine_new(inv, "t.ini", &d);

	CU_ASSERT_EQUAL(d.n, 0);
	diag_free(&d);
	return e;
}

/* ---- operators --------------------------------------------------------- */

static void test_tag_ops(void)
{
	struct vm vm = { .name = (char *)"web1", .os = (char *)"linux" };
	const char *const tags[] = { "Env:Prod", "tier-web" };

	CU_ASSERT_TRUE(holds("tag=env:prod", &vm, tags, 2));
	CU_ASSERT_TRUE(holds("tag=ENV:PROD", &vm, tags, 2));
	CU_ASSERT_FALSE(holds("tag=prod", &vm, tags, 2));
	CU_ASSERT_FALSE(holds("tag!=env:prod", &vm, tags, 2));
	CU_ASSERT_TRUE(holds("tag!=env:dev", &vm, tags, 2));
	CU_ASSERT_TRUE(holds("tag!=env:prod", &vm, NULL, 0));
	CU_ASSERT_TRUE(holds("tag~PROD", &vm, tags, 2));
	CU_ASSERT_FALSE(holds("tag~db", &vm, tags, 2));
	CU_ASSERT_TRUE(holds("tag^Tier", &vm, tags, 2));
	CU_ASSERT_FALSE(holds("tag^web", &vm, tags, 2));
	CU_ASSERT_TRUE(holds("tag$-WEB", &vm, tags, 2));
	CU_ASSERT_FALSE(holds("tag$tier", &vm, tags, 2));
	CU_ASSERT_FALSE(holds("tag=env:prod", &vm, NULL, 0));
	CU_ASSERT_FALSE(holds("tag~e", &vm, NULL, 0));
}

/* Scoped tags, "scope|tag": a value with a scope needs it; one without
 * looks at the tag part of every tag; "scope|" is any tag of the scope. */
static void test_scoped_tag_ops(void)
{
	struct vm vm = { .name = (char *)"pc1", .os = (char *)"" };
	const char *const tags[] = { "dept|Finance", "OS|windows", "plain" };
	static const struct { const char *spec; bool want; } cases[] = {
		{ "tag=finance", true },       /* the tag part, in any scope */
		{ "tag=FINANCE", true },
		{ "tag=dept|finance", true },
		{ "tag=Dept|FINANCE", true },
		{ "tag=os|finance", false },   /* the scope is compared */
		{ "tag=dept", false },         /* a scope is not a tag */
		{ "tag=dept|Finance2", false },
		{ "tag=plain", true },
		{ "tag=x|plain", false },      /* plain has no scope */
		{ "tag=plain|", false },
		{ "tag=dept|", true },         /* any tag of the scope */
		{ "tag=os|", true },
		{ "tag=hr|", false },
		{ "tag!=dept|", false },
		{ "tag!=hr|", true },
		{ "tag!=finance", false },
		{ "tag!=dept|finance", false },
		{ "tag!=os|finance", true },
		{ "tag!=windows", false },
		{ "tag~fin", true },
		{ "tag~dept", false },         /* operators see the tag part only */
		{ "tag~os|IND", true },
		{ "tag~dept|ind", false },
		{ "tag^os|WIN", true },
		{ "tag^win", true },
		{ "tag^os", false },
		{ "tag$dept|nce", true },
		{ "tag$os|nce", false },
		{ "tag$ws", true },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		bool got = holds(cases[i].spec, &vm, tags, 3);

		if (got != cases[i].want)
			fprintf(stderr, "\n  %s: got %d\n", cases[i].spec, got);
		CU_ASSERT_EQUAL(got, cases[i].want);
	}
	/* With no tags at all, only not-equals holds. */
	CU_ASSERT_TRUE(holds("tag!=dept|", &vm, NULL, 0));
	CU_ASSERT_FALSE(holds("tag=dept|", &vm, NULL, 0));
	CU_ASSERT_FALSE(holds("tag=finance", &vm, NULL, 0));
}

/* Each form of value is found by the tag index: a change of "dept|finance"
 * reaches the groups on "dept|finance", on "dept|" and on "finance". */
static void test_scoped_tag_deltas(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	struct rec r = { .inv = &inv };
	size_t a = vm_add(&inv, "a", "");
	size_t b = vm_add(&inv, "b", "");
	size_t finance = group_add(&inv, "finance");
	size_t dfin = group_add(&inv, "dfin");
	size_t dept = group_add(&inv, "dept");
	size_t nodept = group_add(&inv, "nodept");
	size_t win = group_add(&inv, "win");

	crit_add(&inv, finance, false, "tag=finance");
	crit_add(&inv, dfin, false, "tag=dept|finance");
	crit_add(&inv, dept, false, "tag=dept|");
	crit_add(&inv, nodept, false, "tag!=dept|");
	crit_add(&inv, win, false, "tag^os|win");
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(members(e, &r, nodept), "a b");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "finance"), "finance+a");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "Dept|Finance"),
			       "dfin+a dept+a nodept-a");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "dept|hr"), "finance-a dfin-a");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, b, "hr|finance,os|windows-11"), "finance+b win+b");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, b, "os|windows-11"), "finance-b");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, ""), "dept-a nodept+a");
	CU_ASSERT_STRING_EQUAL(members(e, &r, win), "b");
	CU_ASSERT_STRING_EQUAL(members(e, &r, dept), "");
	gengine_free(e);
	inv_free(&inv);
}

/* Name and OS operators, through criteria_match and through the engine's
 * first evaluation, which finds candidates through indexes. */
static void test_name_os_ops(void)
{
	static const struct { const char *spec, *want; } cases[] = {
		{ "name=web1", "web1" },
		{ "name=WEB1", "web1" },
		{ "name^WEB", "web1 web2 web10" },
		{ "name^web1", "web1 web10" },
		{ "name^", "web1 web2 web10 db1 db2" },
		{ "name!=web1", "web2 web10 db1 db2" },
		{ "name~EB1", "web1 web10" },
		{ "name$2", "web2 db2" },
		{ "os=WINDOWS 11", "web1" },
		{ "os^win", "web1 db2" },
		{ "os!=ubuntu", "web1 db1 db2" },
		{ "os$TU", "web2 web10" },
		{ "os~dows", "web1 db2" },
		{ "os=", "db1" },
		{ "name=nope", "" },
	};
	struct inventory inv = { 0 };
	struct gengine *e;
	struct rec r = { .inv = &inv };

	vm_add(&inv, "web1", "Windows 11");
	vm_add(&inv, "web2", "ubuntu");
	vm_add(&inv, "web10", "Ubuntu");
	vm_add(&inv, "db1", "");
	vm_add(&inv, "db2", "windows server");
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		crit_add(&inv, group_add(&inv, cases[i].spec), false, cases[i].spec);
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		CU_ASSERT_STRING_EQUAL(members(e, &r, i), cases[i].want);
		for (size_t v = 0; v < inv.nvms; v++)
			CU_ASSERT_EQUAL(gengine_is_member(e, i, v),
					holds(cases[i].spec, &inv.vms[v], NULL, 0));
	}
	gengine_free(e);
	inv_free(&inv);
}

static void test_and_or(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	struct rec r = { .inv = &inv };
	size_t app1 = vm_add(&inv, "app1", "Linux");
	size_t app2 = vm_add(&inv, "app2", "windows");
	size_t bastion = vm_add(&inv, "bastion", "windows");
	size_t g = group_add(&inv, "g");

	vm_add(&inv, "app3", "linux");
	crit_add(&inv, g, false, "tag=prod & os^linux");
	crit_add(&inv, g, false, "name=bastion");
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(members(e, &r, g), "bastion");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, app1, "prod"), "g+app1");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, app2, "prod"), "");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, bastion, "prod"), "");
	CU_ASSERT_STRING_EQUAL(members(e, &r, g), "app1 bastion");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, app1, "dev"), "g-app1");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, bastion, ""), "");
	CU_ASSERT_STRING_EQUAL(members(e, &r, g), "bastion");
	gengine_free(e);
	inv_free(&inv);
}

/* NOT_EQUALS, CONTAINS and friends: tags outside the condition's value
 * matter too, so these groups are re-checked on every tag change. */
static void test_tag_deltas_any_op(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	struct rec r = { .inv = &inv };
	size_t a = vm_add(&inv, "a", "");
	size_t unmanaged = group_add(&inv, "unmanaged");
	size_t web = group_add(&inv, "web");
	size_t prodweb = group_add(&inv, "prodweb");

	vm_add(&inv, "b", "");
	crit_add(&inv, unmanaged, false, "tag!=managed");
	crit_add(&inv, web, false, "tag~web");
	crit_add(&inv, prodweb, false, "tag=prod & tag$web");
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(members(e, &r, unmanaged), "a b");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "Managed"), "unmanaged-a");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "managed,prod"), "");
	/* prod stays: only the new front-WEB tag can complete prodweb */
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "managed,prod,front-WEB"),
			       "web+a prodweb+a");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "prod,front-web"), "unmanaged+a");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "prod,front"), "web-a prodweb-a");
	CU_ASSERT_STRING_EQUAL(members(e, &r, unmanaged), "a b");
	CU_ASSERT_STRING_EQUAL(members(e, &r, web), "");
	gengine_free(e);
	inv_free(&inv);
}

/* ---- membership structure --------------------------------------------- */

static void test_empty_criteria(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	struct rec r = { .inv = &inv };
	size_t a = vm_add(&inv, "a", "linux");
	size_t none = group_add(&inv, "none");
	size_t empty = group_add(&inv, "empty");

	crit_add(&inv, empty, false, "");
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(members(e, &r, none), "");
	CU_ASSERT_STRING_EQUAL(members(e, &r, empty), "");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "x"), "");
	gengine_free(e);
	inv_free(&inv);
}

static void test_static_members(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	struct rec r = { .inv = &inv };
	size_t a = vm_add(&inv, "a", "");
	size_t b = vm_add(&inv, "b", "");
	size_t c = vm_add(&inv, "c", "");
	size_t g = group_add(&inv, "g");

	idx_add(&inv.groups[g].members, &inv.groups[g].nmembers, c);
	idx_add(&inv.groups[g].members, &inv.groups[g].nmembers, a);
	crit_add(&inv, g, false, "tag=x");
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(members(e, &r, g), "a c");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, b, "x"), "g+b");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "x"), "");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, ""), "");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, b, ""), "g-b");
	CU_ASSERT_STRING_EQUAL(members(e, &r, g), "a c");
	gengine_free(e);
	inv_free(&inv);
}

/* Declared outermost first, so evaluation must follow dependencies, not
 * declaration order. */
static void test_nested_includes(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	struct rec r = { .inv = &inv };
	size_t web1 = vm_add(&inv, "web1", "");
	size_t db1 = vm_add(&inv, "db1", "");
	size_t outer = group_add(&inv, "outer");
	size_t mid = group_add(&inv, "mid");
	size_t inner = group_add(&inv, "inner");

	vm_add(&inv, "other", "");
	idx_add(&inv.groups[outer].includes, &inv.groups[outer].nincludes, mid);
	idx_add(&inv.groups[mid].includes, &inv.groups[mid].nincludes, inner);
	idx_add(&inv.groups[mid].members, &inv.groups[mid].nmembers, db1);
	crit_add(&inv, inner, false, "tag=web");
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(members(e, &r, outer), "db1");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, web1, "WEB"),
			       "inner+web1 mid+web1 outer+web1");
	CU_ASSERT_STRING_EQUAL(members(e, &r, outer), "web1 db1");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, db1, "web"), "inner+db1");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, web1, ""),
			       "inner-web1 mid-web1 outer-web1");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, db1, ""), "inner-db1");
	CU_ASSERT_STRING_EQUAL(members(e, &r, outer), "db1");
	CU_ASSERT_STRING_EQUAL(members(e, &r, mid), "db1");
	gengine_free(e);
	inv_free(&inv);
}

static void test_exclusion_wins(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	struct rec r = { .inv = &inv };
	size_t a = vm_add(&inv, "a", "");
	size_t b = vm_add(&inv, "b", "");
	size_t c = vm_add(&inv, "c", "");
	size_t mixed = group_add(&inv, "mixed");
	size_t base = group_add(&inv, "base");
	size_t quar = group_add(&inv, "quar");
	struct group_def *gd;

	gd = &inv.groups[base];
	idx_add(&gd->members, &gd->nmembers, a);
	idx_add(&gd->members, &gd->nmembers, b);
	idx_add(&gd->members, &gd->nmembers, c);
	idx_add(&gd->exclude_members, &gd->nexclude_members, b);
	crit_add(&inv, base, false, "tag=x");
	crit_add(&inv, quar, false, "tag=bad");
	gd = &inv.groups[mixed];
	idx_add(&gd->includes, &gd->nincludes, base);
	idx_add(&gd->exclude_groups, &gd->nexclude_groups, quar);
	crit_add(&inv, mixed, false, "tag=x");
	crit_add(&inv, mixed, true, "tag=frozen");
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(members(e, &r, base), "a c");
	CU_ASSERT_STRING_EQUAL(members(e, &r, mixed), "a c");
	/* exclude_members beats matching and static membership */
	CU_ASSERT_STRING_EQUAL(retag(e, &r, b, "x"), "mixed+b");
	CU_ASSERT_STRING_EQUAL(members(e, &r, base), "a c");
	/* exclude_match beats inclusion */
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "frozen"), "mixed-a");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, "frozen,x"), "");
	/* exclude_groups beats inclusion and matching */
	CU_ASSERT_STRING_EQUAL(retag(e, &r, c, "bad,x"), "quar+c mixed-c");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, c, "x"), "quar-c mixed+c");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, b, "x,bad"), "quar+b mixed-b");
	CU_ASSERT_STRING_EQUAL(members(e, &r, mixed), "c");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, a, ""), "mixed+a");
	gengine_free(e);
	inv_free(&inv);
}

/* The VDI pattern: a tagged desktop moves from its normal group to
 * quarantine and back, with nothing else reported. */
static void test_vdi_quarantine(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	struct rec r = { .inv = &inv };
	size_t desktop2, desktops, quarantine;

	vm_add(&inv, "desktop1", "windows 10");
	desktop2 = vm_add(&inv, "desktop2", "windows 10");
	vm_add(&inv, "server1", "linux");
	desktops = group_add(&inv, "desktops");
	quarantine = group_add(&inv, "quarantine");
	crit_add(&inv, desktops, false, "name^desktop");
	idx_add(&inv.groups[desktops].exclude_groups,
		&inv.groups[desktops].nexclude_groups, quarantine);
	crit_add(&inv, quarantine, false, "tag=threat.high");
	crit_add(&inv, quarantine, false, "tag=threat.medium");
	inv.groups[quarantine].quarantine = true;
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(members(e, &r, desktops), "desktop1 desktop2");
	CU_ASSERT_STRING_EQUAL(members(e, &r, quarantine), "");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, desktop2, "threat.high"),
			       "quarantine+desktop2 desktops-desktop2");
	CU_ASSERT_STRING_EQUAL(members(e, &r, desktops), "desktop1");
	CU_ASSERT_STRING_EQUAL(members(e, &r, quarantine), "desktop2");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, desktop2, "threat.high"), "");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, desktop2, "Threat.High,THREAT.HIGH"), "");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, desktop2, "threat.medium"), "");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, desktop2, ""),
			       "quarantine-desktop2 desktops+desktop2");
	CU_ASSERT_STRING_EQUAL(members(e, &r, desktops), "desktop1 desktop2");
	CU_ASSERT_STRING_EQUAL(members(e, &r, quarantine), "");
	CU_ASSERT_STRING_EQUAL(retag(e, &r, desktop2, ""), "");
	gengine_free(e);
	inv_free(&inv);
}

/* Which groups follow isolation: the quarantine groups (excluded, or
 * flagged), a group that excludes quarantine (not its base), a group that
 * includes such a group (not the base of one that also excludes
 * quarantine itself), and not a tag group beside them. */
static void test_follows_isolation(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	size_t desktops, quarantine, vdi, lab, apps, held;

	vm_add(&inv, "desktop1", "windows 10");
	desktops = group_add(&inv, "desktops");
	quarantine = group_add(&inv, "quarantine");
	vdi = group_add(&inv, "vdi");
	lab = group_add(&inv, "lab");
	apps = group_add(&inv, "apps");
	held = group_add(&inv, "held");
	crit_add(&inv, desktops, false, "name^desktop");
	idx_add(&inv.groups[desktops].exclude_groups, &inv.groups[desktops].nexclude_groups,
		quarantine);
	crit_add(&inv, quarantine, false, "tag=threat.high");
	idx_add(&inv.groups[vdi].includes, &inv.groups[vdi].nincludes, desktops);
	idx_add(&inv.groups[lab].includes, &inv.groups[lab].nincludes, desktops);
	idx_add(&inv.groups[lab].exclude_groups, &inv.groups[lab].nexclude_groups, quarantine);
	crit_add(&inv, apps, false, "tag=app.web");
	crit_add(&inv, held, false, "tag=hold");
	inv.groups[held].quarantine = true; /* excluded by none: flagged */
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_TRUE(gengine_follows_isolation(e, quarantine, false));
	CU_ASSERT_TRUE(gengine_follows_isolation(e, held, false));
	CU_ASSERT_TRUE(gengine_follows_isolation(e, desktops, false));
	CU_ASSERT_FALSE(gengine_follows_isolation(e, desktops, true));
	CU_ASSERT_TRUE(gengine_follows_isolation(e, vdi, false));
	CU_ASSERT_TRUE(gengine_follows_isolation(e, lab, false));
	/* lab excludes quarantine itself: its base takes desktops' base */
	CU_ASSERT_FALSE(gengine_follows_isolation(e, lab, true));
	CU_ASSERT_FALSE(gengine_follows_isolation(e, apps, false));
	/* The isolation groups themselves: quarantine = yes, or excluded. */
	CU_ASSERT_TRUE(gengine_is_isolation(e, quarantine));
	CU_ASSERT_TRUE(gengine_is_isolation(e, held));
	CU_ASSERT_FALSE(gengine_is_isolation(e, desktops));
	CU_ASSERT_FALSE(gengine_is_isolation(e, vdi));
	CU_ASSERT_FALSE(gengine_is_isolation(e, lab));
	CU_ASSERT_FALSE(gengine_is_isolation(e, apps));
	gengine_free(e);
	inv_free(&inv);
}

/* ---- construction errors ----------------------------------------------- */

/* Builds an engine that must fail; returns its messages joined. */
static const char *rejected(const struct inventory *inv, char *buf, size_t len)
{
	struct diag d = { 0 };
	struct gengine *e = gengine_new(inv, "t.ini", &d);

	CU_ASSERT_PTR_NULL(e);
	gengine_free(e);
	diag_join(&d, buf, len);
	diag_free(&d);
	return buf;
}

static void test_cycle_includes(void)
{
	struct inventory inv = { 0 };
	char buf[512];
	size_t a = group_add(&inv, "a");
	size_t b = group_add(&inv, "b");

	idx_add(&inv.groups[a].includes, &inv.groups[a].nincludes, b);
	idx_add(&inv.groups[b].includes, &inv.groups[b].nincludes, a);
	CU_ASSERT_STRING_EQUAL(rejected(&inv, buf, sizeof(buf)),
			       "t.ini:10: group a: cycle a -> b -> a");
	inv_free(&inv);

	a = group_add(&inv, "loop");
	idx_add(&inv.groups[a].includes, &inv.groups[a].nincludes, a);
	CU_ASSERT_STRING_EQUAL(rejected(&inv, buf, sizeof(buf)),
			       "t.ini:10: group loop: cycle loop -> loop");
	inv_free(&inv);
}

/* A cycle that goes through exclude_groups, reached from a group outside it. */
static void test_cycle_excludes(void)
{
	struct inventory inv = { 0 };
	char buf[512];
	size_t top = group_add(&inv, "top");
	size_t a = group_add(&inv, "a");
	size_t b = group_add(&inv, "b");
	size_t c = group_add(&inv, "c");

	vm_add(&inv, "vm1", "");
	idx_add(&inv.groups[top].includes, &inv.groups[top].nincludes, a);
	idx_add(&inv.groups[a].exclude_groups, &inv.groups[a].nexclude_groups, b);
	idx_add(&inv.groups[b].includes, &inv.groups[b].nincludes, c);
	idx_add(&inv.groups[c].includes, &inv.groups[c].nincludes, a);
	CU_ASSERT_STRING_EQUAL(rejected(&inv, buf, sizeof(buf)),
			       "t.ini:20: group a: cycle a -> b -> c -> a");
	inv_free(&inv);
}

static void test_bad_index(void)
{
	struct inventory inv = { 0 };
	char buf[512];
	size_t a = group_add(&inv, "a");

	vm_add(&inv, "vm1", "");
	idx_add(&inv.groups[a].includes, &inv.groups[a].nincludes, 7);
	idx_add(&inv.groups[a].members, &inv.groups[a].nmembers, 1);
	CU_ASSERT_STRING_EQUAL(rejected(&inv, buf, sizeof(buf)),
			       "t.ini:10: group a: members index 1 out of range (1 defined)\n"
			       "t.ini:10: group a: includes index 7 out of range (1 defined)");
	inv_free(&inv);
}

/* ---- queries ------------------------------------------------------------ */

static const char *addrs_text(const struct gengine *e, size_t g, char *buf, size_t len)
{
	size_t n, off = 0;
	const struct dfw_addr *a = gengine_addrs(e, g, &n);

	buf[0] = '\0';
	for (size_t i = 0; i < n && off < len; i++) {
		char one[64];

		addr_format(&a[i], one, sizeof(one));
		off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? " " : "", one);
	}
	return buf;
}

static void test_addrs(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	char buf[256];
	size_t outer = group_add(&inv, "outer");
	size_t mid = group_add(&inv, "mid");
	size_t inner = group_add(&inv, "inner");
	size_t other = group_add(&inv, "other");
	size_t n;

	addr_add(&inv, inner, "fd00::1");
	addr_add(&inv, inner, "10.0.0.2");
	addr_add(&inv, inner, "10.0.0.1");
	addr_add(&inv, mid, "10.0.0.1");
	addr_add(&inv, mid, "10.0.0.0/24");
	addr_add(&inv, outer, "10.0.0.2");
	addr_add(&inv, other, "192.168.0.1");
	idx_add(&inv.groups[outer].includes, &inv.groups[outer].nincludes, mid);
	idx_add(&inv.groups[mid].includes, &inv.groups[mid].nincludes, inner);
	/* An excluded group adds nothing. */
	idx_add(&inv.groups[outer].exclude_groups, &inv.groups[outer].nexclude_groups, other);
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(addrs_text(e, outer, buf, sizeof(buf)),
			       "10.0.0.0/24 10.0.0.1 10.0.0.2 fd00::1");
	CU_ASSERT_STRING_EQUAL(addrs_text(e, mid, buf, sizeof(buf)),
			       "10.0.0.0/24 10.0.0.1 10.0.0.2 fd00::1");
	CU_ASSERT_STRING_EQUAL(addrs_text(e, inner, buf, sizeof(buf)),
			       "10.0.0.1 10.0.0.2 fd00::1");
	gengine_addrs(e, outer, &n);
	CU_ASSERT_EQUAL(n, 4);
	CU_ASSERT_EQUAL(gengine_count(e, outer), 0);
	gengine_free(e);
	inv_free(&inv);
}

static void test_members_across_words(void)
{
	static const size_t listed[] = { 149, 3, 64, 63, 0, 127, 128 };
	struct inventory inv = { 0 };
	struct gengine *e;
	struct rec r = { .inv = &inv };
	char name[16];
	size_t g;

	for (int i = 0; i < 150; i++) {
		snprintf(name, sizeof(name), "%d", i);
		vm_add(&inv, name, "");
	}
	g = group_add(&inv, "g");
	for (size_t i = 0; i < ARRAY_SIZE(listed); i++)
		idx_add(&inv.groups[g].members, &inv.groups[g].nmembers, listed[i]);
	crit_add(&inv, g, false, "tag=t");
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_STRING_EQUAL(members(e, &r, g), "0 3 63 64 127 128 149");
	CU_ASSERT_TRUE(gengine_is_member(e, g, 64));
	CU_ASSERT_FALSE(gengine_is_member(e, g, 65));
	CU_ASSERT_STRING_EQUAL(retag(e, &r, 65, "t"), "g+65");
	CU_ASSERT_STRING_EQUAL(members(e, &r, g), "0 3 63 64 65 127 128 149");
	gengine_free(e);
	inv_free(&inv);
}

static void test_no_vms(void)
{
	struct inventory inv = { 0 };
	struct gengine *e;
	size_t g = group_add(&inv, "g");
	size_t n;

	crit_add(&inv, g, false, "name^x");
	crit_add(&inv, g, false, "os=linux");
	addr_add(&inv, g, "10.1.0.0/16");
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_EQUAL(gengine_count(e, g), 0);
	gengine_addrs(e, g, &n);
	CU_ASSERT_EQUAL(n, 1);
	gengine_free(e);
	inv_free(&inv);
	gengine_free(NULL);
}

/* ---- randomized comparison with the rule as written ------------------- */

static bool ref_member(const struct inventory *inv, const struct strv *tags,
		       size_t g, size_t v)
{
	const struct group_def *gd = &inv->groups[g];
	const struct vm *vm = &inv->vms[v];
	const char *const *t = (const char *const *)tags[v].v;
	bool direct = criteria_match(gd->match, gd->nmatch, vm, t, tags[v].n);
	bool excluded = criteria_match(gd->exclude_match, gd->nexclude_match, vm, t,
				       tags[v].n);

	for (size_t i = 0; i < gd->nmembers; i++)
		direct |= gd->members[i] == v;
	for (size_t i = 0; i < gd->nincludes; i++)
		direct |= ref_member(inv, tags, gd->includes[i], v);
	for (size_t i = 0; i < gd->nexclude_members; i++)
		excluded |= gd->exclude_members[i] == v;
	for (size_t i = 0; i < gd->nexclude_groups; i++)
		excluded |= ref_member(inv, tags, gd->exclude_groups[i], v);
	return direct && !excluded;
}

static uint32_t rnd_state = 12345;

static size_t rnd(size_t n)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 17;
	rnd_state ^= rnd_state << 5;
	return rnd_state % n;
}

static void random_criterion(struct inventory *inv, size_t g, bool exclude)
{
	static const char *const conds[] = {
		"tag=web", "tag=PROD", "tag!=db", "tag~e", "tag^pro", "tag$EU",
		"tag=dept|web", "tag=DEPT|", "tag!=os|", "tag=os|db", "tag~dept|e",
		"tag!=dept|x",
		"name=vm1", "name=VM12", "name^vm1", "name!=vm3", "name~2", "name$0",
		"os=linux", "os^LINUX", "os!=windows", "os~rt", "os=", "os$s",
	};
	char spec[128];

	snprintf(spec, sizeof(spec), "%s", conds[rnd(ARRAY_SIZE(conds))]);
	if (rnd(2)) {
		size_t len = strlen(spec);

		snprintf(spec + len, sizeof(spec) - len, " & %s",
			 conds[rnd(ARRAY_SIZE(conds))]);
	}
	crit_add(inv, g, exclude, spec);
}

struct seen {
	const struct gengine *e;
	size_t n, vm, nbase;
	size_t group[64];
	bool joined[64];
};

static void seen_delta(void *arg, size_t g, size_t vm, bool joined, bool base)
{
	struct seen *s = arg;

	if (base) {
		s->nbase += gengine_is_base_member(s->e, g, vm) == joined;
		return;
	}
	if (s->n < ARRAY_SIZE(s->group)) {
		s->group[s->n] = g;
		s->joined[s->n] = joined;
	}
	s->n++;
	s->vm = vm;
}

/* Whether the engine and the rule agree on every member and count, and
 * each base is what the kernel sees: a member is exactly a VM of the base
 * in none of the excluded groups. */
static bool agrees(const struct gengine *e, const struct inventory *inv,
		   const struct strv *tags)
{
	for (size_t g = 0; g < inv->ngroups; g++) {
		const struct group_def *gd = &inv->groups[g];
		size_t count = 0;

		for (size_t v = 0; v < inv->nvms; v++) {
			bool want = ref_member(inv, tags, g, v), via_base;

			count += want;
			if (gengine_is_member(e, g, v) != want)
				return false;
			if (!gengine_has_base(e, g))
				continue;
			via_base = gengine_is_base_member(e, g, v);
			for (size_t i = 0; i < gd->nexclude_groups; i++)
				via_base &= !ref_member(inv, tags, gd->exclude_groups[i], v);
			if (via_base != want)
				return false;
		}
		if (gengine_count(e, g) != count)
			return false;
	}
	return true;
}

static void test_random_against_rule(void)
{
	static const char *const vocab[] = {
		"web", "Web", "db", "prod", "PROD-eu", "eu", "x", "dept|web", "os|DB", "Dept|x",
		"os|prod",
	};
	static const char *const oses[] = { "linux", "Linux-RT", "windows", "", "solaris" };
	enum { NVMS = 70, NGROUPS = 12, ROUNDS = 400 };
	struct inventory inv = { 0 };
	struct strv tags[NVMS] = { 0 };
	size_t perm[NGROUPS];
	bool before[NGROUPS], before_base[NGROUPS];
	struct gengine *e;
	char name[16];

	for (size_t v = 0; v < NVMS; v++) {
		snprintf(name, sizeof(name), "vm%zu", v);
		vm_add(&inv, name, oses[rnd(ARRAY_SIZE(oses))]);
	}
	/* Groups may depend only on groups earlier in a shuffled order, so
	 * the graph has no cycle but declaration order is not evaluation order. */
	for (size_t g = 0; g < NGROUPS; g++)
		perm[g] = g;
	for (size_t g = NGROUPS - 1; g > 0; g--) {
		size_t k = rnd(g + 1), t = perm[g];

		perm[g] = perm[k];
		perm[k] = t;
	}
	for (size_t g = 0; g < NGROUPS; g++) {
		struct group_def *gd;

		snprintf(name, sizeof(name), "g%zu", g);
		group_add(&inv, name);
		for (size_t i = rnd(3); i > 0; i--)
			random_criterion(&inv, g, false);
		for (size_t i = rnd(3) / 2; i > 0; i--)
			random_criterion(&inv, g, true);
		gd = &inv.groups[g];
		for (size_t i = rnd(3); i > 0; i--)
			idx_add(&gd->members, &gd->nmembers, rnd(NVMS));
		for (size_t i = rnd(3) / 2; i > 0; i--)
			idx_add(&gd->exclude_members, &gd->nexclude_members, rnd(NVMS));
	}
	for (size_t g = 0; g < NGROUPS; g++) {
		struct group_def *gd = &inv.groups[g];

		for (size_t h = 0; h < NGROUPS; h++) {
			if (perm[h] >= perm[g] || rnd(4))
				continue;
			if (rnd(3))
				idx_add(&gd->includes, &gd->nincludes, h);
			else
				idx_add(&gd->exclude_groups, &gd->nexclude_groups, h);
		}
	}
	e = engine(&inv);
	CU_ASSERT_PTR_NOT_NULL_FATAL(e);
	CU_ASSERT_TRUE_FATAL(agrees(e, &inv, tags));
	{
		size_t bases = 0;

		for (size_t g = 0; g < NGROUPS; g++)
			bases += gengine_has_base(e, g);
		CU_ASSERT(bases > 0);
	}
	for (int round = 0; round < ROUNDS; round++) {
		size_t v = rnd(NVMS), changes = 0, base_changes = 0;
		struct seen s = { .e = e };
		bool ok = true;

		for (size_t g = 0; g < NGROUPS; g++) {
			before[g] = gengine_is_member(e, g, v);
			before_base[g] = gengine_has_base(e, g) && gengine_is_base_member(e, g, v);
		}
		strv_free(&tags[v]);
		for (size_t i = rnd(4); i > 0; i--)
			strv_push(&tags[v], vocab[rnd(ARRAY_SIZE(vocab))]);
		gengine_set_tags(e, v, (const char *const *)tags[v].v, tags[v].n,
				 seen_delta, &s);
		CU_ASSERT_TRUE_FATAL(agrees(e, &inv, tags));
		/* Exactly one delta per group that changed, in the right direction. */
		for (size_t g = 0; g < NGROUPS; g++)
			changes += before[g] != gengine_is_member(e, g, v);
		CU_ASSERT_EQUAL_FATAL(s.n, changes);
		/* One base delta per base that changed. */
		for (size_t g = 0; g < NGROUPS; g++)
			base_changes += gengine_has_base(e, g) &&
					before_base[g] != gengine_is_base_member(e, g, v);
		CU_ASSERT_EQUAL_FATAL(s.nbase, base_changes);
		for (size_t i = 0; i < s.n; i++) {
			ok &= s.vm == v && s.joined[i] != before[s.group[i]] &&
			      s.joined[i] == gengine_is_member(e, s.group[i], v);
			for (size_t j = 0; j < i; j++)
				ok &= s.group[j] != s.group[i];
		}
		CU_ASSERT_TRUE_FATAL(ok);
	}
	gengine_free(e);
	for (size_t v = 0; v < NVMS; v++)
		strv_free(&tags[v]);
	inv_free(&inv);
}

void register_groups_tests(void)
{
	static const struct unit_test tests[] = {
		{ "tag operators", test_tag_ops },
		{ "scoped tag operators", test_scoped_tag_ops },
		{ "scoped tag deltas", test_scoped_tag_deltas },
		{ "name and os operators", test_name_os_ops },
		{ "AND within, OR across criteria", test_and_or },
		{ "tag deltas for non-equality operators", test_tag_deltas_any_op },
		{ "empty criteria match nothing", test_empty_criteria },
		{ "static members", test_static_members },
		{ "nested includes propagate deltas", test_nested_includes },
		{ "exclusion wins", test_exclusion_wins },
		{ "VDI quarantine pattern", test_vdi_quarantine },
		{ "which groups a quarantine changes", test_follows_isolation },
		{ "cycle through includes", test_cycle_includes },
		{ "cycle through exclude_groups", test_cycle_excludes },
		{ "out-of-range indexes", test_bad_index },
		{ "effective addresses", test_addrs },
		{ "members across bitset words", test_members_across_words },
		{ "inventory without VMs", test_no_vms },
		{ "random deltas agree with the rule", test_random_against_rule },
	};

	unit_suite("groups", tests, ARRAY_SIZE(tests));
}
