/* Unit tests of the network threat detector's logic (dfw/netthreat.c) and
 * of the nflog packet parser (dfw/nflog.c): thresholds, the sliding window,
 * repeated destinations, independent sources, the quiet time after an
 * alert, reconfiguration, and IPv4/IPv6/fragment/truncated packets. */
#include "dfw/netthreat.h"
#include "dfw/nflog.h"
#include "tests/unit/unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static struct dfw_addr host4(unsigned last)
{
	struct dfw_addr a = { .family = AF_INET, .plen = 32 };

	a.a[0] = 10;
	a.a[3] = (uint8_t)last;
	return a;
}

static const struct dfw_netthreat CFG = {
	.mode = NT_ENFORCE, .window_ms = 1000, .max_ports = 10, .max_hosts = 5,
	.block_ms = 60000,
};

static void test_ports_threshold(void)
{
	struct nt_detector *d = nt_new(&CFG);
	struct dfw_addr dst = host4(2);
	struct nt_alert al;

	/* 10 distinct ports on one host: at the threshold, not over it. */
	for (uint16_t p = 1; p <= 10; p++)
		CU_ASSERT_FALSE(nt_feed(d, 7, &dst, IPPROTO_TCP, p, 100 + p, 5000, &al));
	/* Repeating one of them does not count. */
	for (int i = 0; i < 50; i++)
		CU_ASSERT_FALSE(nt_feed(d, 7, &dst, IPPROTO_TCP, 3, 200, 5000, &al));
	/* The same port over UDP is another destination: the 11th. */
	CU_ASSERT_TRUE(nt_feed(d, 7, &dst, IPPROTO_UDP, 3, 300, 5000, &al));
	CU_ASSERT_EQUAL(al.src, 7);
	CU_ASSERT_EQUAL(al.ports, 11);
	CU_ASSERT_EQUAL(al.hosts, 1);
	CU_ASSERT_TRUE(al.by_ports);
	/* Quiet for hold_ms: nothing counts, nothing alerts. */
	for (uint16_t p = 100; p < 200; p++)
		CU_ASSERT_FALSE(nt_feed(d, 7, &dst, IPPROTO_TCP, p, 400 + p, 5000, &al));
	/* After that it starts over: 10 more are fine, the 11th alerts. */
	for (uint16_t p = 1; p <= 10; p++)
		CU_ASSERT_FALSE(nt_feed(d, 7, &dst, IPPROTO_TCP, p, 6000, 5000, &al));
	CU_ASSERT_TRUE(nt_feed(d, 7, &dst, IPPROTO_TCP, 11, 6001, 5000, &al));
	nt_free(d);
}

static void test_hosts_threshold(void)
{
	struct nt_detector *d = nt_new(&CFG);
	struct nt_alert al;

	for (unsigned h = 1; h <= 5; h++) {
		struct dfw_addr dst = host4(h);

		CU_ASSERT_FALSE(nt_feed(d, 9, &dst, IPPROTO_ICMP, 8 << 8, 10 * h, 100, &al));
	}
	{
		struct dfw_addr dst = host4(6);

		CU_ASSERT_TRUE(nt_feed(d, 9, &dst, IPPROTO_ICMP, 8 << 8, 60, 100, &al));
	}
	CU_ASSERT_FALSE(al.by_ports);
	CU_ASSERT_EQUAL(al.hosts, 6);
	nt_free(d);
}

static void test_window_slides(void)
{
	struct nt_detector *d = nt_new(&CFG);
	struct dfw_addr dst = host4(2);
	struct nt_alert al;
	uint64_t t = 0;

	/* One new port every 200 ms: at most 6 in any 1 s window, forever. */
	for (uint16_t p = 1; p < 500; p++, t += 200)
		CU_ASSERT_FALSE(nt_feed(d, 3, &dst, IPPROTO_TCP, p, t, 1000, &al));
	/* A burst of 11 inside one window alerts. */
	{
		bool hit = false;

		for (uint16_t p = 1000; p < 1011 && !hit; p++)
			hit = nt_feed(d, 3, &dst, IPPROTO_TCP, p, t + p - 1000, 1000, &al);
		CU_ASSERT_TRUE(hit);
	}
	nt_free(d);
}

static void test_sources_independent(void)
{
	struct nt_detector *d = nt_new(&CFG);
	struct dfw_addr dst = host4(2);
	struct nt_alert al;

	/* 1,000 sources with 10 ports each: none alerts, all are tracked. */
	for (uint32_t s = 1; s <= 1000; s++)
		for (uint16_t p = 1; p <= 10; p++)
			CU_ASSERT_FALSE(nt_feed(d, s, &dst, IPPROTO_TCP, p, 10, 100, &al));
	CU_ASSERT_EQUAL(nt_sources(d), 1000);
	CU_ASSERT_TRUE(nt_feed(d, 500, &dst, IPPROTO_TCP, 99, 11, 100, &al));
	CU_ASSERT_EQUAL(al.src, 500);
	/* Source id 0 (not a dfw vNIC) is never tracked. */
	for (uint16_t p = 1; p < 100; p++)
		CU_ASSERT_FALSE(nt_feed(d, 0, &dst, IPPROTO_TCP, p, 12, 100, &al));
	/* New thresholds start every source over. */
	{
		struct dfw_netthreat c = CFG;

		c.max_ports = 2;
		nt_configure(d, &c);
		CU_ASSERT_EQUAL(nt_sources(d), 0);
		CU_ASSERT_FALSE(nt_feed(d, 1, &dst, IPPROTO_TCP, 1, 20, 100, &al));
		CU_ASSERT_FALSE(nt_feed(d, 1, &dst, IPPROTO_TCP, 2, 20, 100, &al));
		CU_ASSERT_TRUE(nt_feed(d, 1, &dst, IPPROTO_TCP, 3, 20, 100, &al));
	}
	nt_free(d);
}

static void test_parse_packets(void)
{
	uint8_t v4[28] = { 0x45, 0, 0, 28, 0, 0, 0, 0, 64, IPPROTO_TCP, 0, 0,
			   10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x01, 0xbb };
	uint8_t v6[44] = { 0x60 };
	struct nflog_pkt p;
	char buf[64];

	CU_ASSERT_EQUAL(nflog_parse_ip(v4, sizeof(v4), &p), 0);
	addr_format(&p.src, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "10.0.0.1");
	addr_format(&p.dst, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "10.0.0.2");
	CU_ASSERT_EQUAL(p.proto, IPPROTO_TCP);
	CU_ASSERT_EQUAL(p.sport, 12345);
	CU_ASSERT_EQUAL(p.dport, 443);
	/* A later fragment has no ports. */
	v4[6] = 0x00;
	v4[7] = 0x10;
	CU_ASSERT_EQUAL(nflog_parse_ip(v4, sizeof(v4), &p), 0);
	CU_ASSERT_EQUAL(p.dport, 0);
	/* Truncated before the addresses, or not IP at all. */
	CU_ASSERT_EQUAL(nflog_parse_ip(v4, 19, &p), -1);
	CU_ASSERT_EQUAL(nflog_parse_ip((const uint8_t *)"\x10", 1, &p), -1);
	CU_ASSERT_EQUAL(nflog_parse_ip(v4, 0, &p), -1);
	/* IPv6 UDP to port 53. */
	v6[6] = IPPROTO_UDP;
	v6[8] = 0xfd;
	v6[23] = 1;
	v6[24] = 0xfd;
	v6[39] = 2;
	v6[42] = 0;
	v6[43] = 53;
	CU_ASSERT_EQUAL(nflog_parse_ip(v6, sizeof(v6), &p), 0);
	CU_ASSERT_EQUAL(p.dst.family, AF_INET6);
	addr_format(&p.dst, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "fd00::2");
	CU_ASSERT_EQUAL(p.dport, 53);
	CU_ASSERT_EQUAL(nflog_parse_ip(v6, 39, &p), -1);
	/* Addresses but no room for ports: ports stay 0. */
	CU_ASSERT_EQUAL(nflog_parse_ip(v6, 40, &p), 0);
	CU_ASSERT_EQUAL(p.dport, 0);
}

void register_netthreat_tests(void)
{
	static const struct unit_test tests[] = {
		{ "distinct ports threshold and quiet time", test_ports_threshold },
		{ "distinct hosts threshold", test_hosts_threshold },
		{ "the window slides", test_window_slides },
		{ "sources are independent; reconfiguration", test_sources_independent },
		{ "nflog packet parsing", test_parse_packets },
	};

	unit_suite("netthreat", tests, ARRAY_SIZE(tests));
}
