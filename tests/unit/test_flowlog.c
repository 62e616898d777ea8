/* Unit tests of the flow log's pure parts (dfw/flowlog.c): the log prefix,
 * the verdict, the JSON lines for IPv4, IPv6, ICMP, ICMPv6, an unknown
 * protocol and a later fragment, the count lines, and the rate limit on a
 * fake clock. */
#include "dfw/flowlog.h"
#include "tests/unit/unit.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#define MS 1000000ull
#define SEC 1000000000ull
/* 2026-11-22T17:03:19.123Z */
#define T0 1795366999123ull

static void test_prefix(void)
{
	struct flowlog_prefix p;

	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=230 out ", &p), 0);
	CU_ASSERT_STRING_EQUAL(p.rule, "230");
	CU_ASSERT_TRUE(p.out);
	CU_ASSERT_FALSE(p.monitor);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=default in ", &p), 0);
	CU_ASSERT_STRING_EQUAL(p.rule, "default");
	CU_ASSERT_FALSE(p.out);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=7 out monitor ", &p), 0);
	CU_ASSERT_STRING_EQUAL(p.rule, "7");
	CU_ASSERT_TRUE(p.out);
	CU_ASSERT_TRUE(p.monitor);
	/* Words after the direction that are not known are room to grow. */
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=7 in later monitor", &p), 0);
	CU_ASSERT_TRUE(p.monitor);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=4294967295 in", &p), 0);
	/* Not a dfw rule's prefix. */
	CU_ASSERT_EQUAL(flowlog_prefix_parse("", &p), -1);
	CU_ASSERT_EQUAL(flowlog_prefix_parse(NULL, &p), -1);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("other rule=1 out ", &p), -1);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule= out ", &p), -1);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=12x out ", &p), -1);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=-1 out ", &p), -1);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=4294967296 out ", &p), -1);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=230 sideways ", &p), -1);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=230", &p), -1);
	CU_ASSERT_EQUAL(flowlog_prefix_parse("dfw rule=defaults out", &p), -1);
}

struct asked {
	char rule[16];
	bool out;
	int calls;
};

static const char *verdict_drop(void *arg, const char *rule, bool out)
{
	struct asked *a = arg;

	snprintf(a->rule, sizeof(a->rule), "%s", rule);
	a->out = out;
	a->calls++;
	return "drop";
}

static const char *verdict_none(void *arg, const char *rule, bool out)
{
	return NULL;
}

static void test_verdict(void)
{
	struct flowlog_prefix p;
	struct asked a = { "", false, 0 };

	flowlog_prefix_parse("dfw rule=230 out ", &p);
	CU_ASSERT_STRING_EQUAL(flowlog_verdict(&p, NULL, NULL), "unknown");
	CU_ASSERT_STRING_EQUAL(flowlog_verdict(&p, verdict_drop, &a), "drop");
	CU_ASSERT_STRING_EQUAL(a.rule, "230");
	CU_ASSERT_TRUE(a.out);
	CU_ASSERT_STRING_EQUAL(flowlog_verdict(&p, verdict_none, NULL), "unknown");
	flowlog_prefix_parse("dfw rule=default in ", &p);
	CU_ASSERT_STRING_EQUAL(flowlog_verdict(&p, verdict_drop, &a), "drop");
	CU_ASSERT_STRING_EQUAL(a.rule, "default");
	CU_ASSERT_FALSE(a.out);
	/* A monitored rule let the packet through, whatever its action. */
	flowlog_prefix_parse("dfw rule=230 out monitor ", &p);
	a.calls = 0;
	CU_ASSERT_STRING_EQUAL(flowlog_verdict(&p, verdict_drop, &a), "monitor");
	CU_ASSERT_EQUAL(a.calls, 0);
}

static void test_time(void)
{
	char buf[32];

	flowlog_time(0, buf);
	CU_ASSERT_STRING_EQUAL(buf, "1970-01-01T00:00:00.000Z");
	flowlog_time(T0, buf);
	CU_ASSERT_STRING_EQUAL(buf, "2026-11-22T17:03:19.123Z");
	flowlog_time(T0 - 123 + 7, buf);
	CU_ASSERT_STRING_EQUAL(buf, "2026-11-22T17:03:19.007Z");
}

/* The line flowlog_format writes for the packet in pkt (network header
 * first); malloc'd. */
static char *line(const uint8_t *pkt, size_t len, const char *prefix, const char *vnic,
		  const char *host)
{
	struct flowlog_prefix pfx;
	struct nflog_pkt p;
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	CU_ASSERT_FATAL(f != NULL);
	CU_ASSERT_EQUAL_FATAL(nflog_parse_ip(pkt, len, &p), 0);
	CU_ASSERT_EQUAL_FATAL(flowlog_prefix_parse(prefix, &pfx), 0);
	flowlog_format(f, &p, &pfx, host, vnic, flowlog_verdict(&pfx, NULL, NULL), T0);
	fclose(f);
	return buf;
}

static void test_format_ipv4(void)
{
	const uint8_t tcp[24] = { 0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0,
				  10, 10, 0, 11, 10, 10, 0, 12, 0x9d, 0x78, 0x01, 0xbd };
	uint8_t udp[28] = { 0x45, 0, 0, 28, 0, 0, 0, 0, 64, IPPROTO_UDP, 0, 0,
			    10, 10, 0, 11, 10, 10, 0, 23, 0x30, 0x39, 0, 53 };
	char *s;

	s = line(tcp, sizeof(tcp), "dfw rule=230 out ", "vnet-desktop1", "hv1");
	CU_ASSERT_STRING_EQUAL(s, "{\"time\":\"2026-11-22T17:03:19.123Z\",\"host\":\"hv1\","
			       "\"vnic\":\"vnet-desktop1\",\"rule\":230,\"direction\":\"out\","
			       "\"verdict\":\"unknown\",\"proto\":\"tcp\",\"src\":\"10.10.0.11\","
			       "\"dst\":\"10.10.0.12\",\"sport\":40312,\"dport\":445}\n");
	free(s);
	s = line(udp, sizeof(udp), "dfw rule=default in ", "vnet-dc1", "hv1");
	CU_ASSERT_STRING_EQUAL(s, "{\"time\":\"2026-11-22T17:03:19.123Z\",\"host\":\"hv1\","
			       "\"vnic\":\"vnet-dc1\",\"rule\":\"default\",\"direction\":\"in\","
			       "\"verdict\":\"unknown\",\"proto\":\"udp\",\"src\":\"10.10.0.11\","
			       "\"dst\":\"10.10.0.23\",\"sport\":12345,\"dport\":53}\n");
	free(s);
	/* A later fragment has no ports: none are written (not zeros). */
	udp[6] = 0x00;
	udp[7] = 0x10;
	s = line(udp, sizeof(udp), "dfw rule=1 in ", "p", "hv1");
	CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"proto\":\"udp\",\"src\":\"10.10.0.11\",\"dst\":\"10.10.0.23\"}\n"));
	CU_ASSERT_PTR_NULL(strstr(s, "port"));
	free(s);
	/* Unknown vNIC: the member is left out.  The host is escaped. */
	s = line(tcp, sizeof(tcp), "dfw rule=230 out ", NULL, "h\"1");
	CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"host\":\"h\\\"1\",\"rule\":230,"));
	CU_ASSERT_PTR_NULL(strstr(s, "vnic"));
	free(s);
}

static void test_format_ipv6(void)
{
	uint8_t v6[44] = { 0x60 };
	char *s;

	v6[6] = IPPROTO_UDP;
	v6[8] = 0xfd;
	v6[9] = 0x00;
	v6[10] = 0x00;
	v6[11] = 0x10;
	v6[23] = 0x11;
	v6[24] = 0xfd;
	v6[27] = 0x10;
	v6[39] = 0x12;
	v6[40] = 0x13;
	v6[41] = 0x88;
	v6[42] = 0x10;
	v6[43] = 0x4c;
	s = line(v6, sizeof(v6), "dfw rule=230 in ", "vnet-desktop2", "hv1");
	CU_ASSERT_STRING_EQUAL(s, "{\"time\":\"2026-11-22T17:03:19.123Z\",\"host\":\"hv1\","
			       "\"vnic\":\"vnet-desktop2\",\"rule\":230,\"direction\":\"in\","
			       "\"verdict\":\"unknown\",\"proto\":\"udp\",\"src\":\"fd00:10::11\","
			       "\"dst\":\"fd00:10::12\",\"sport\":5000,\"dport\":4172}\n");
	free(s);
	/* ICMPv6 echo request: type and code instead of ports. */
	v6[6] = IPPROTO_ICMPV6;
	v6[40] = 128;
	v6[41] = 0;
	s = line(v6, sizeof(v6), "dfw rule=230 out monitor ", "vnet-desktop1", "hv1");
	CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"verdict\":\"monitor\",\"proto\":\"icmpv6\",\"src\":\"fd00:10::11\","
				      "\"dst\":\"fd00:10::12\",\"type\":128,\"code\":0}\n"));
	CU_ASSERT_PTR_NULL(strstr(s, "port"));
	free(s);
}

static void test_format_icmp_and_other(void)
{
	uint8_t icmp[28] = { 0x45, 0, 0, 28, 0, 0, 0, 0, 64, IPPROTO_ICMP, 0, 0,
			     10, 10, 0, 11, 10, 10, 0, 12, 3, 13, 0, 0 };
	char *s;

	s = line(icmp, sizeof(icmp), "dfw rule=230 out ", "vnet-desktop1", "hv1");
	CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"proto\":\"icmp\",\"src\":\"10.10.0.11\",\"dst\":\"10.10.0.12\","
				      "\"type\":3,\"code\":13}\n"));
	free(s);
	/* GRE: the protocol's number, no ports. */
	icmp[9] = 47;
	s = line(icmp, sizeof(icmp), "dfw rule=230 out ", "vnet-desktop1", "hv1");
	CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"proto\":47,\"src\":\"10.10.0.11\",\"dst\":\"10.10.0.12\"}\n"));
	free(s);
	/* SCTP has ports. */
	icmp[9] = IPPROTO_SCTP;
	s = line(icmp, sizeof(icmp), "dfw rule=230 out ", "vnet-desktop1", "hv1");
	CU_ASSERT_PTR_NOT_NULL(strstr(s, "\"proto\":\"sctp\",\"src\":\"10.10.0.11\",\"dst\":\"10.10.0.12\","
				      "\"sport\":781,\"dport\":0}\n"));
	free(s);
	/* Too short for ports: none are written. */
	icmp[9] = IPPROTO_TCP;
	{
		struct flowlog_prefix pfx;
		struct nflog_pkt p;
		char *buf = NULL;
		size_t size = 0;
		FILE *f = open_memstream(&buf, &size);

		CU_ASSERT_EQUAL(nflog_parse_ip(icmp, 22, &p), 0);
		CU_ASSERT_FALSE(p.l4);
		flowlog_prefix_parse("dfw rule=230 out ", &pfx);
		flowlog_format(f, &p, &pfx, "hv1", "v", "drop", T0);
		fclose(f);
		CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\"verdict\":\"drop\",\"proto\":\"tcp\",\"src\":\"10.10.0.11\","
						   "\"dst\":\"10.10.0.12\"}\n"));
		free(buf);
	}
}

static void test_format_count(void)
{
	char *buf = NULL;
	size_t size = 0;
	FILE *f = open_memstream(&buf, &size);

	flowlog_format_count(f, "hv1", "suppressed", 480, T0);
	fclose(f);
	CU_ASSERT_STRING_EQUAL(buf, "{\"time\":\"2026-11-22T17:03:19.123Z\",\"host\":\"hv1\",\"suppressed\":480}\n");
	free(buf);
}

static void test_limit_burst_and_refill(void)
{
	struct flowlog_limit l;
	uint64_t t = 5 * SEC; /* any start */

	flowlog_limit_init(&l, 10, t);
	/* A burst of 10, then refused. */
	for (int i = 0; i < 10; i++)
		CU_ASSERT_TRUE(flowlog_limit_take(&l, t));
	CU_ASSERT_FALSE(flowlog_limit_take(&l, t));
	CU_ASSERT_FALSE(flowlog_limit_take(&l, t + 50 * MS)); /* half a line */
	/* Not due while the bucket is empty. */
	CU_ASSERT_EQUAL(flowlog_limit_due(&l, t + 99 * MS), 0);
	/* A line's worth after 100 ms: the count is due (the first report). */
	CU_ASSERT_EQUAL(flowlog_limit_due(&l, t + 100 * MS), 2);
	CU_ASSERT_EQUAL(flowlog_limit_due(&l, t + 100 * MS), 0);
	CU_ASSERT_TRUE(flowlog_limit_take(&l, t + 100 * MS));
	CU_ASSERT_FALSE(flowlog_limit_take(&l, t + 100 * MS));
	/* Again a line's worth, but the last report is less than 1 s ago. */
	CU_ASSERT_EQUAL(flowlog_limit_due(&l, t + 300 * MS), 0);
	CU_ASSERT_EQUAL(flowlog_limit_due(&l, t + 1099 * MS), 0);
	CU_ASSERT_EQUAL(flowlog_limit_due(&l, t + 1100 * MS), 1);
	/* Idle: the bucket fills to 10, not more. */
	t += 60 * SEC;
	for (int i = 0; i < 10; i++)
		CU_ASSERT_TRUE(flowlog_limit_take(&l, t));
	CU_ASSERT_FALSE(flowlog_limit_take(&l, t));
	/* A clock that goes back adds nothing. */
	CU_ASSERT_FALSE(flowlog_limit_take(&l, t - SEC));
	CU_ASSERT_EQUAL(flowlog_limit_due(&l, t + 2 * SEC), 2);
	/* A rate of 0 is taken as 1. */
	flowlog_limit_init(&l, 0, 0);
	CU_ASSERT_TRUE(flowlog_limit_take(&l, 0));
	CU_ASSERT_FALSE(flowlog_limit_take(&l, 999 * MS));
	CU_ASSERT_TRUE(flowlog_limit_take(&l, 1000 * MS));
}

/* A flood of 1000 packets a second for 10 s at a limit of 100 lines a
 * second: about the limit is written, the reports come about once a
 * second, and lines + reported + pending account for every packet. */
static void test_limit_flood(void)
{
	struct flowlog_limit l;
	uint64_t lines = 0, reported = 0, reports = 0, last_report = 0;
	const uint64_t n = 10000;

	flowlog_limit_init(&l, 100, 0);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t t = i * MS, due = flowlog_limit_due(&l, t);

		if (due) {
			CU_ASSERT_TRUE(reports == 0 || t - last_report >= SEC);
			reports++;
			reported += due;
			last_report = t;
		}
		lines += flowlog_limit_take(&l, t);
	}
	CU_ASSERT_EQUAL(lines + reported + l.suppressed, n);
	CU_ASSERT_TRUE(lines >= 100 + 9 * 100 && lines <= 100 + 10 * 100);
	CU_ASSERT_TRUE(reports >= 9 && reports <= 10);
	/* Afterwards the rest comes out once the limit allows. */
	reported += flowlog_limit_due(&l, n * MS + SEC);
	CU_ASSERT_EQUAL(lines + reported, n);
	CU_ASSERT_EQUAL(l.suppressed, 0);
}

void register_flowlog_tests(void)
{
	static const struct unit_test tests[] = {
		{ "log prefix", test_prefix },
		{ "verdict: callback, monitor, unknown", test_verdict },
		{ "ISO-8601 time with ms", test_time },
		{ "IPv4 lines (TCP, UDP, fragment, unknown vNIC)", test_format_ipv4 },
		{ "IPv6 lines (UDP, ICMPv6)", test_format_ipv6 },
		{ "ICMP, SCTP, an unknown protocol, no ports", test_format_icmp_and_other },
		{ "count line", test_format_count },
		{ "rate limit: burst, refill, reports", test_limit_burst_and_refill },
		{ "rate limit: a flood is accounted for", test_limit_flood },
	};

	unit_suite("flowlog", tests, ARRAY_SIZE(tests));
}
