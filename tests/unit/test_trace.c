/* trace: the what-if evaluation of compiled plans, on the VDI policy. */
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dfw/trace.h"
#include "dfw/whatif.h"
#include "unit.h"

/* The VDI policy's text with the given tag keys and (key, value) pairs of
 * modes and blocks, as a snapshot. */
static void world(struct trace_world *w, const char *const *tags, size_t ntags,
		  const char *const *modes, size_t nmodes, const char *const *blocks,
		  size_t nblocks)
{
	struct diag d = { 0 };
	struct snapshot snap = { 0 };
	struct dfw_policy *p = policy_load("configs/vdi.ini", &snap.policy, &d);
	char err[512];

	CU_ASSERT_PTR_NOT_NULL_FATAL(p);
	policy_free(p);
	for (size_t i = 0; i < ntags; i++)
		strv_push(&snap.tag_keys, tags[i]);
	for (size_t i = 0; i < nmodes; i++)
		strv_push(&snap.modes, modes[i]);
	for (size_t i = 0; i < nblocks; i++)
		strv_push(&snap.blocks, blocks[i]);
	memset(w, 0, sizeof(*w));
	CU_ASSERT_EQUAL_FATAL(trace_world_snapshot(&snap, NULL, w, err, sizeof(err)), 0);
	snapshot_free(&snap);
}

/* Traces SRC -> DST (VM names, IPv4 unless v6) on proto/port. */
static struct trace_result trace(struct trace_world *w, const char *src, const char *dst,
				 uint8_t proto, uint16_t port, bool v6)
{
	struct trace_end s, d;
	struct trace_pkt pk = { .proto = proto, .dport = port, .icmp_type = -1, .icmp_code = 0 };
	struct trace_result res;
	char err[256];

	if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6)
		pk.icmp_type = proto == IPPROTO_ICMP ? 8 : 128;
	CU_ASSERT_EQUAL_FATAL(trace_world_end(w, src, v6 ? AF_INET6 : AF_INET, &s, &pk.src, err,
					      sizeof(err)), 0);
	CU_ASSERT_EQUAL_FATAL(trace_world_end(w, dst, v6 ? AF_INET6 : AF_INET, &d, &pk.dst, err,
					      sizeof(err)), 0);
	trace_path(w->p, w->e, w->blocks, w->nblocks, wall_ms(), &s, &d, &pk, &res);
	return res;
}

static void test_allow_both_sides(void)
{
	struct trace_world w;
	struct trace_result r;

	world(&w, NULL, 0, NULL, 0, NULL, 0);
	r = trace(&w, "desktop1", "cs1", IPPROTO_TCP, 443, false);
	CU_ASSERT_EQUAL(r.verdict, TV_ALLOW);
	CU_ASSERT_STRING_EQUAL(r.decided_by, "in");
	CU_ASSERT_EQUAL(r.out.rule_id, 200);
	CU_ASSERT_EQUAL(r.in.rule_id, 200);
	r = trace(&w, "desktop1", "cs1", IPPROTO_TCP, 443, true);
	CU_ASSERT_EQUAL(r.verdict, TV_ALLOW);
	/* A port the rule does not name: the default rule, at the source. */
	r = trace(&w, "desktop1", "cs1", IPPROTO_TCP, 22, false);
	CU_ASSERT_EQUAL(r.verdict, TV_DROP);
	CU_ASSERT_STRING_EQUAL(r.decided_by, "out");
	CU_ASSERT_TRUE(r.out.is_default);
	/* East-west: rule 230 drops at the source, and logs. */
	r = trace(&w, "desktop1", "desktop2", IPPROTO_TCP, 445, false);
	CU_ASSERT_EQUAL(r.verdict, TV_DROP);
	CU_ASSERT_EQUAL(r.out.rule_id, 230);
	CU_ASSERT_TRUE(r.out.logged);
	/* ICMP echo to the directory server (rule 220), both families. */
	CU_ASSERT_EQUAL(trace(&w, "desktop3", "dc1", IPPROTO_ICMP, 0, false).verdict, TV_ALLOW);
	CU_ASSERT_EQUAL(trace(&w, "desktop3", "dc1", IPPROTO_ICMPV6, 0, true).verdict, TV_ALLOW);
	CU_ASSERT_EQUAL(trace(&w, "desktop3", "fs1", IPPROTO_ICMP, 0, false).verdict, TV_DROP);
	trace_world_free(&w);
}

static void test_quarantine_and_assume(void)
{
	static const char *const tag[] = { "tag/desktop1/threat.high" };
	struct trace_world w;
	struct trace_result r;

	world(&w, tag, 1, NULL, 0, NULL, 0);
	r = trace(&w, "desktop1", "fs1", IPPROTO_TCP, 445, false);
	CU_ASSERT_EQUAL(r.verdict, TV_DROP);
	CU_ASSERT_EQUAL(r.out.rule_id, 110);
	r = trace(&w, "desktop1", "cs1", IPPROTO_TCP, 443, false);
	CU_ASSERT_EQUAL(r.verdict, TV_ALLOW);
	CU_ASSERT_EQUAL(r.out.rule_id, 100);
	r = trace(&w, "cs1", "desktop1", IPPROTO_TCP, 4001, false);
	CU_ASSERT_EQUAL(r.verdict, TV_ALLOW);
	CU_ASSERT_EQUAL(r.in.rule_id, 101);
	trace_world_free(&w);
}

static void test_monitor_mode(void)
{
	static const char *const tag[] = { "tag/desktop1/threat.high" };
	static const char *const mode[] = { "category/emergency", "monitor" };
	struct trace_world w;
	struct trace_result r;

	world(&w, tag, 1, mode, 2, NULL, 0);
	/* The quarantine drops log, count and let the packet through. */
	r = trace(&w, "desktop1", "fs1", IPPROTO_TCP, 445, false);
	CU_ASSERT_EQUAL(r.verdict, TV_ALLOW);
	CU_ASSERT_EQUAL(r.out.rule_id, 110);
	CU_ASSERT_TRUE(r.out.monitor);
	CU_ASSERT_TRUE(r.in.monitor);
	/* Allow rules are not affected; an unmonitored category still drops. */
	r = trace(&w, "desktop1", "cs1", IPPROTO_TCP, 443, false);
	CU_ASSERT_EQUAL(r.out.rule_id, 100);
	CU_ASSERT_FALSE(r.out.monitor);
	trace_world_free(&w);
}

static void test_blocks(void)
{
	static const char *const blocks[] = {
		"10.10.0.12", "99999999999999",            /* desktop2, everywhere */
		"10.10.0.13/file-servers", "99999999999999", /* desktop3, at fs1 only */
		"10.10.0.14", "1",                          /* desktop4: long expired */
	};
	struct trace_world w;
	struct trace_result r;

	world(&w, NULL, 0, NULL, 0, blocks, ARRAY_SIZE(blocks));
	CU_ASSERT_EQUAL(w.nblocks, 3);
	r = trace(&w, "desktop2", "cs1", IPPROTO_TCP, 443, false);
	CU_ASSERT_EQUAL(r.verdict, TV_DROP);
	CU_ASSERT_STRING_EQUAL(r.decided_by, "operator block");
	CU_ASSERT_EQUAL(trace(&w, "cs1", "desktop2", IPPROTO_TCP, 4001, false).verdict, TV_DROP);
	CU_ASSERT_EQUAL(trace(&w, "desktop3", "fs1", IPPROTO_TCP, 445, false).verdict, TV_DROP);
	CU_ASSERT_EQUAL(trace(&w, "desktop3", "cs1", IPPROTO_TCP, 443, false).verdict, TV_ALLOW);
	CU_ASSERT_EQUAL(trace(&w, "desktop4", "cs1", IPPROTO_TCP, 443, false).verdict, TV_ALLOW);
	trace_world_free(&w);
}

static void test_bad_ends(void)
{
	struct trace_world w;
	struct trace_end e;
	struct dfw_addr a;
	char err[256];

	world(&w, NULL, 0, NULL, 0, NULL, 0);
	CU_ASSERT_EQUAL(trace_world_end(&w, "desktp1", AF_INET, &e, &a, err, sizeof(err)), 1);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "desktop1"));
	CU_ASSERT_EQUAL(trace_world_end(&w, "10.0.0.0/8", AF_INET, &e, &a, err, sizeof(err)), 1);
	/* An address of a VM is that VM; another one is outside. */
	CU_ASSERT_EQUAL(trace_world_end(&w, "10.10.0.21", AF_INET, &e, &a, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(e.vm, policy_find_vm(w.p, "cs1"));
	CU_ASSERT_EQUAL(trace_world_end(&w, "192.0.2.1", AF_INET, &e, &a, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(e.vm, -1);
	/* Its link-local address (EUI-64 of 02:00:00:10:00:21) is it too. */
	CU_ASSERT_EQUAL(trace_world_end(&w, "fe80::ff:fe10:21", AF_INET6, &e, &a, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(e.vm, policy_find_vm(w.p, "cs1"));
	trace_world_free(&w);
}

/* plan's policy-level differences: rules, the default, groups, members. */
static void test_whatif(void)
{
	static const char base[] =
		"[global]\ndefault_action = drop\n"
		"[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n"
		"[vm b]\nhost = h\nport = pb\nmac = 02:00:00:00:00:02\naddresses = 10.0.0.2\n"
		"[group g]\nmembers = a\n"
		"[group nets]\naddresses = 10.0.0.0/8\n"
		"[rule 1]\nsources = g\nservices = tcp/22\naction = allow\n"
		"[rule 2]\naction = drop\n";
	static const char next[] =
		"[global]\ndefault_action = allow\n"
		"[vm a]\nhost = h\nport = pa\nmac = 02:00:00:00:00:01\naddresses = 10.0.0.1\n"
		"[vm b]\nhost = h\nport = pb\nmac = 02:00:00:00:00:02\naddresses = 10.0.0.9\n"
		"[group g]\nmembers = b\nquarantine = yes\n"
		"[group n]\nmembers = a\n"
		"[group nets]\naddresses = 10.1.0.0/16\n"
		"[rule 1]\nsources = g\nservices = tcp/22, tcp/23\naction = allow\n"
		"[rule 3]\naction = drop\n";
	struct trace_world w0, w1;
	struct out o;
	char err[256], *text = NULL;
	size_t len = 0, n;
	FILE *f;

	CU_ASSERT_EQUAL_FATAL(trace_world_from(base, NULL, 0, &w0, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL_FATAL(trace_world_from(next, NULL, 0, &w1, err, sizeof(err)), 0);
	f = open_memstream(&text, &len);
	out_init(&o, f, true);
	out_obj_start(&o, NULL);
	n = whatif_print(&o, w0.p, w0.e, w1.p, w1.e);
	out_obj_end(&o);
	out_finish(&o);
	fclose(f);
	CU_ASSERT_EQUAL(n, 11);
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "{\"change\":\"changed\",\"name\":\"nets\",\"detail\":\"addresses\"}"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"vms\":[{\"change\":\"changed\",\"name\":\"b\",\"detail\":\"addresses\"}]"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "{\"change\":\"changed\",\"name\":\"1\"}"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "{\"change\":\"removed\",\"name\":\"2\"}"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "{\"change\":\"added\",\"name\":\"3\"}"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"name\":\"default\",\"detail\":\"drop -> allow\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "{\"change\":\"added\",\"name\":\"n\"}"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"name\":\"g\",\"detail\":\"quarantine, cuts connections\""));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "{\"group\":\"g\",\"vm\":\"a\",\"change\":\"leaves\"}"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "{\"group\":\"g\",\"vm\":\"b\",\"change\":\"joins\"}"));
	CU_ASSERT_PTR_NOT_NULL(strstr(text, "{\"group\":\"n\",\"vm\":\"a\",\"change\":\"joins\"}"));
	free(text);
	/* The same policy twice: nothing. */
	f = open_memstream(&text, &len);
	out_init(&o, f, true);
	out_obj_start(&o, NULL);
	CU_ASSERT_EQUAL(whatif_print(&o, w0.p, w0.e, w0.p, w0.e), 0);
	out_obj_end(&o);
	out_finish(&o);
	fclose(f);
	free(text);
	trace_world_free(&w0);
	trace_world_free(&w1);
}

void register_trace_tests(void)
{
	static const struct unit_test tests[] = {
		{ "allow at both sides, default and east-west drops", test_allow_both_sides },
		{ "quarantine exceptions first", test_quarantine_and_assume },
		{ "monitor mode: drops log, the next rule decides", test_monitor_mode },
		{ "operator blocks, scoped and expired", test_blocks },
		{ "bad ends", test_bad_ends },
		{ "plan: what a new policy changes", test_whatif },
	};

	unit_suite("trace", tests, ARRAY_SIZE(tests));
}
