/* Unit tests of common/util.c: strict number parsing, durations, addresses,
 * MACs, comma lists, edit distance and diagnostic formatting. */
#include "common/util.h"
#include "tests/unit/unit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- parse_u64 ---------------------------------------------------------- */

/* Expects s to be rejected with errno e. */
static void u64_bad(const char *s, uint64_t max, int e)
{
	uint64_t v = 12345;

	errno = 0;
	CU_ASSERT_EQUAL(parse_u64(s, max, &v), -1);
	CU_ASSERT_EQUAL(errno, e);
	CU_ASSERT_EQUAL(v, 12345); /* untouched on failure */
}

static void u64_ok(const char *s, uint64_t max, uint64_t want)
{
	uint64_t v = 12345;

	CU_ASSERT_EQUAL(parse_u64(s, max, &v), 0);
	CU_ASSERT_EQUAL(v, want);
}

static void test_parse_u64(void)
{
	u64_ok("0", 10, 0);
	u64_ok("42", 100, 42);
	u64_ok("007", 100, 7); /* leading zeros are decimal, not octal */
	u64_ok("65535", 65535, 65535);
	u64_ok("18446744073709551615", UINT64_MAX, UINT64_MAX);
	/* Decimal only: "tcp/0x50" or "[rule 0x10]" are typos, not numbers. */
	u64_bad("0x1f", 100, EINVAL);
	u64_bad("0XFF", 255, EINVAL);

	u64_bad(NULL, 10, EINVAL);
	u64_bad("", 10, EINVAL);
	u64_bad("abc", 10, EINVAL);
	u64_bad("12abc", 100, EINVAL);
	u64_bad("1.5", 100, EINVAL);
	u64_bad("-1", 100, EINVAL);
	u64_bad("+1", 100, EINVAL);
	u64_bad(" 1", 100, EINVAL);
	u64_bad("1 ", 100, EINVAL);
	u64_bad("1\n", 100, EINVAL);
	u64_bad("0x", 100, EINVAL);
	u64_bad("0xg", 100, EINVAL);
	u64_bad("0x-1", 100, EINVAL);
	u64_bad("65536", 65535, ERANGE);
	u64_bad("0x10000", 65535, EINVAL);
	u64_bad("18446744073709551616", UINT64_MAX, ERANGE);
	u64_bad("99999999999999999999999", UINT64_MAX, ERANGE);
	u64_bad("1", 0, ERANGE);
}

static void test_parse_bool(void)
{
	static const char *const yes[] = { "yes", "YES", "true", "True", "on", "1" };
	static const char *const no[] = { "no", "No", "false", "FALSE", "off", "0" };
	static const char *const bad[] = { "", "y", "n", "2", "yess", " yes", "yes ", "enable" };
	bool b;

	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		b = false;
		CU_ASSERT_EQUAL(parse_bool(yes[i], &b), 0);
		CU_ASSERT_TRUE(b);
	}
	for (size_t i = 0; i < ARRAY_SIZE(no); i++) {
		b = true;
		CU_ASSERT_EQUAL(parse_bool(no[i], &b), 0);
		CU_ASSERT_FALSE(b);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		b = true;
		CU_ASSERT_EQUAL(parse_bool(bad[i], &b), -1);
		CU_ASSERT_TRUE(b); /* untouched */
	}
}

static void test_parse_duration(void)
{
	static const struct { const char *s; uint64_t ms; } ok[] = {
		{ "250ms", 250 }, { "0ms", 0 }, { "10s", 10000 }, { "5m", 300000 },
		{ "1h", 3600000 }, { "7", 7000 }, { "0", 0 }, { "90s", 90000 },
		{ "30d", 2592000000u }, { "1d", 86400000 },
	};
	static const char *const bad[] = {
		"", "ms", "s", "h", "-1s", "1.5s", "10 s", " 10s", "10x", "5D", "s10", "d",
		"10sm", "10S", "1mss", "99999999999999999999h",
	};
	uint64_t v;

	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		v = 1;
		CU_ASSERT_EQUAL(parse_duration_ms(ok[i].s, &v), 0);
		CU_ASSERT_EQUAL(v, ok[i].ms);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		v = 1;
		CU_ASSERT_EQUAL(parse_duration_ms(bad[i], &v), -1);
		CU_ASSERT_EQUAL(v, 1);
	}
	/* The largest value that fits in every unit, and one past it. */
	{
		char buf[64];

		snprintf(buf, sizeof(buf), "%llud", (unsigned long long)(UINT64_MAX / 86400000));
		CU_ASSERT_EQUAL(parse_duration_ms(buf, &v), 0);
		CU_ASSERT_EQUAL(v, UINT64_MAX / 86400000 * 86400000);
		snprintf(buf, sizeof(buf), "%llud", (unsigned long long)(UINT64_MAX / 86400000 + 1));
		CU_ASSERT_EQUAL(parse_duration_ms(buf, &v), -1);
	}
}

/* ---- addresses ---------------------------------------------------------- */

static void addr_ok(const char *s, int family, unsigned plen, const char *formatted)
{
	struct dfw_addr a;
	const char *why = "untouched";
	char buf[64];

	CU_ASSERT_EQUAL_FATAL(addr_parse(s, &a, &why), 0);
	CU_ASSERT_EQUAL(a.family, family);
	CU_ASSERT_EQUAL(a.plen, plen);
	addr_format(&a, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, formatted);
}

static void addr_bad(const char *s, const char *why_want)
{
	struct dfw_addr a;
	const char *why = NULL;

	CU_ASSERT_EQUAL(addr_parse(s, &a, &why), -1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(why);
	CU_ASSERT_STRING_EQUAL(why, why_want);
}

static void test_addr_parse(void)
{
	struct dfw_addr a;
	const char *why;

	addr_ok("10.0.0.1", AF_INET, 32, "10.0.0.1");
	addr_ok("10.0.0.1/32", AF_INET, 32, "10.0.0.1");
	addr_ok("10.0.0.0/24", AF_INET, 24, "10.0.0.0/24");
	addr_ok("10.0.0.0/8", AF_INET, 8, "10.0.0.0/8");
	addr_ok("0.0.0.0/0", AF_INET, 0, "0.0.0.0/0");
	addr_ok("192.168.1.128/25", AF_INET, 25, "192.168.1.128/25");
	addr_ok("fd00::1", AF_INET6, 128, "fd00::1");
	addr_ok("FD00:0:0::1/128", AF_INET6, 128, "fd00::1");
	addr_ok("fd00::/64", AF_INET6, 64, "fd00::/64");
	addr_ok("2001:db8:0:0:0:0:0:0/32", AF_INET6, 32, "2001:db8::/32");
	addr_ok("::/0", AF_INET6, 0, "::/0");
	addr_ok("::", AF_INET6, 128, "::");
	addr_ok("::ffff:10.0.0.1", AF_INET6, 128, "::ffff:10.0.0.1");

	/* The bytes are in network order, IPv4 in a[0..3], the rest zero. */
	CU_ASSERT_EQUAL_FATAL(addr_parse("10.1.2.3", &a, &why), 0);
	CU_ASSERT_EQUAL(a.a[0], 10);
	CU_ASSERT_EQUAL(a.a[1], 1);
	CU_ASSERT_EQUAL(a.a[2], 2);
	CU_ASSERT_EQUAL(a.a[3], 3);
	for (int i = 4; i < 16; i++)
		CU_ASSERT_EQUAL(a.a[i], 0);

	addr_bad("", "not an IP address");
	addr_bad("/24", "not an IP address");
	addr_bad("10.0.0", "not an IPv4 or IPv6 address");
	addr_bad("10.0.0.256", "not an IPv4 or IPv6 address");
	addr_bad("10.0.0.1.2", "not an IPv4 or IPv6 address");
	addr_bad(" 10.0.0.1", "not an IPv4 or IPv6 address");
	addr_bad("desktop1", "not an IPv4 or IPv6 address");
	addr_bad("fd00:::1", "not an IPv4 or IPv6 address");
	addr_bad("fd00::g", "not an IPv4 or IPv6 address");
	/* Host bits under the prefix: the 10.0.0.1/24 typo. */
	addr_bad("10.0.0.1/24", "host bits set below the prefix length");
	addr_bad("11.0.0.0/7", "host bits set below the prefix length");
	addr_bad("0.0.0.1/0", "host bits set below the prefix length");
	addr_bad("fd00::1/64", "host bits set below the prefix length");
	addr_bad("fd00::/7", "host bits set below the prefix length");
	/* Bad prefix lengths. */
	addr_bad("10.0.0.0/33", "prefix length must be 0-32");
	addr_bad("10.0.0.0/", "prefix length must be 0-32");
	addr_bad("10.0.0.0/-1", "prefix length must be 0-32");
	addr_bad("10.0.0.0/+8", "prefix length must be 0-32");
	addr_bad("10.0.0.0/8 ", "prefix length must be 0-32");
	addr_bad("10.0.0.0/24/8", "prefix length must be 0-32");
	addr_bad("10.0.0.0/abc", "prefix length must be 0-32");
	addr_bad("fd00::/129", "prefix length must be 0-128");
	addr_bad("fd00::/", "prefix length must be 0-128");
	{
		/* Longer than any address: rejected, not overflowed. */
		char longs[200];

		memset(longs, '1', sizeof(longs) - 1);
		longs[sizeof(longs) - 1] = '\0';
		addr_bad(longs, "not an IP address");
	}
}

static struct dfw_addr A(const char *s)
{
	struct dfw_addr a;
	const char *why;

	if (addr_parse(s, &a, &why) < 0)
		CU_FAIL_FATAL("bad address in test");
	return a;
}

static void test_addr_contains_cmp(void)
{
	struct dfw_addr n24 = A("10.0.0.0/24"), n0 = A("0.0.0.0/0");
	struct dfw_addr h1 = A("10.0.0.1"), h2 = A("10.0.1.1"), n25 = A("10.0.0.128/25");
	struct dfw_addr v6n = A("fd00::/64"), v6h = A("fd00::5"), v6o = A("fd01::5");
	struct dfw_addr n8 = A("10.0.0.0/8"), n31 = A("10.0.0.0/31");

	CU_ASSERT_TRUE(addr_contains(&n24, &h1));
	CU_ASSERT_FALSE(addr_contains(&n24, &h2));
	CU_ASSERT_TRUE(addr_contains(&n24, &n24));
	CU_ASSERT_TRUE(addr_contains(&n24, &n25));
	CU_ASSERT_FALSE(addr_contains(&n25, &n24)); /* narrower cannot hold wider */
	CU_ASSERT_FALSE(addr_contains(&n25, &h1));
	CU_ASSERT_TRUE(addr_contains(&n0, &h2));
	CU_ASSERT_TRUE(addr_contains(&n8, &h2));
	CU_ASSERT_TRUE(addr_contains(&n31, &h1));
	CU_ASSERT_TRUE(addr_contains(&h1, &h1));
	CU_ASSERT_FALSE(addr_contains(&h1, &h2));
	CU_ASSERT_TRUE(addr_contains(&v6n, &v6h));
	CU_ASSERT_FALSE(addr_contains(&v6n, &v6o));
	/* Families never mix, even ::/0 and 0.0.0.0/0. */
	CU_ASSERT_FALSE(addr_contains(&n0, &v6h));
	{
		struct dfw_addr all6 = A("::/0");

		CU_ASSERT_TRUE(addr_contains(&all6, &v6o));
		CU_ASSERT_FALSE(addr_contains(&all6, &h1));
	}

	/* Every prefix length, against a bit-by-bit reading: the host is
	 * the network with one bit flipped, before or after the prefix. */
	srand(7);
	for (int i = 0; i < 4000; i++) {
		struct dfw_addr net = { .family = i % 2 ? AF_INET6 : AF_INET }, host;
		unsigned max = net.family == AF_INET ? 32 : 128, flip, bit;
		bool inside = true;

		net.plen = (uint8_t)(rand() % (int)(max + 1));
		for (unsigned k = 0; k < max / 8; k++)
			net.a[k] = (uint8_t)rand();
		host = net;
		host.plen = (uint8_t)max;
		flip = (unsigned)rand() % max;
		host.a[flip / 8] ^= (uint8_t)(0x80 >> (flip % 8));
		for (bit = 0; bit < net.plen; bit++)
			if ((net.a[bit / 8] ^ host.a[bit / 8]) & (0x80 >> (bit % 8)))
				inside = false;
		CU_ASSERT_EQUAL(addr_contains(&net, &host), inside);
		CU_ASSERT_EQUAL(inside, flip >= net.plen);
	}

	CU_ASSERT_EQUAL(addr_cmp(&h1, &h1), 0);
	CU_ASSERT_TRUE(addr_cmp(&h1, &h2) < 0);
	CU_ASSERT_TRUE(addr_cmp(&h2, &h1) > 0);
	CU_ASSERT_TRUE(addr_cmp(&n24, &h1) < 0); /* 10.0.0.0 < 10.0.0.1 */
	CU_ASSERT_TRUE(addr_cmp(&n8, &n24) < 0); /* same bytes, shorter first */
	CU_ASSERT_TRUE(addr_cmp(&h2, &v6h) < 0); /* IPv4 before IPv6 */
}

static void test_addr_round_trip(void)
{
	static const char *const in[] = {
		"1.2.3.4", "255.255.255.255", "10.10.0.0/16", "172.16.0.0/12",
		"fd00:10::11", "fe80::ff:fe00:1", "2001:db8::/32", "::1", "::/0",
		"0.0.0.0/0",
	};
	char buf[64], buf2[64];

	for (size_t i = 0; i < ARRAY_SIZE(in); i++) {
		struct dfw_addr a = A(in[i]), b;
		const char *why;

		addr_format(&a, buf, sizeof(buf));
		CU_ASSERT_STRING_EQUAL(buf, in[i]);
		CU_ASSERT_EQUAL_FATAL(addr_parse(buf, &b, &why), 0);
		CU_ASSERT_EQUAL(addr_cmp(&a, &b), 0);
		addr_format(&b, buf2, sizeof(buf2));
		CU_ASSERT_STRING_EQUAL(buf2, buf);
	}
	/* A short buffer truncates, it does not overflow. */
	{
		struct dfw_addr a = A("10.10.0.0/16");
		char small[6];

		addr_format(&a, small, sizeof(small));
		CU_ASSERT_STRING_EQUAL(small, "10.10");
	}
}

/* ---- MAC addresses ------------------------------------------------------- */

static void test_mac_parse(void)
{
	static const char *const bad[] = {
		"", "02:00:00:00:00", "02:00:00:00:00:01:02", "02:00:00:00:00:1",
		"2:0:0:0:0:1", "02:00:00:00:00:0g", "0g:00:00:00:00:01",
		"02-00-00-00-00-01", "02:00:00:00:00:01 ", " 02:00:00:00:00:01",
		"020000000001", "02:00:00:00:0001", "xx:xx:xx:xx:xx:xx",
		"02:00:00:00:00:001",
	};
	uint8_t mac[6], want[6] = { 0x02, 0xab, 0xcd, 0xef, 0x00, 0xff };
	char buf[18];

	CU_ASSERT_EQUAL_FATAL(mac_parse("02:ab:cd:EF:00:ff", mac), 0);
	CU_ASSERT_EQUAL(memcmp(mac, want, 6), 0);
	mac_format(mac, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "02:ab:cd:ef:00:ff");

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		CU_ASSERT_EQUAL(mac_parse(bad[i], mac), -1);
}

/* Same length as a MAC, but sscanf's %2x takes a sign or skips a blank, so
 * that "+2:..." reads as 02 and "-1:..." as ff: a strict parser refuses. */
static void test_mac_parse_strict(void)
{
	static const char *const bad[] = {
		"+2:00:00:00:00:01", "-1:00:00:00:00:01", " 2:00:00:00:00:01",
		"02:00:00:00:00:+1", "02: 0:00:00:00:01",
	};
	uint8_t mac[6];

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		int r = mac_parse(bad[i], mac);

		if (r != -1)
			fprintf(stderr, "\n  mac_parse accepted '%s'\n", bad[i]);
		CU_ASSERT_EQUAL(r, -1);
	}
}

/* ---- string vectors ------------------------------------------------------ */

/* Splits list and compares to the n expected items. */
static void split_is(const char *list, const char *const *want, size_t n)
{
	struct strv s = { 0 };

	strv_split(&s, list);
	CU_ASSERT_EQUAL(s.n, n);
	for (size_t i = 0; i < n && i < s.n; i++)
		CU_ASSERT_STRING_EQUAL(s.v[i], want[i]);
	strv_free(&s);
}

static void test_strv_split(void)
{
	static const char *const one[] = { "a" };
	static const char *const three[] = { "a", "b c", "d" };
	static const char *const holes[] = { "a", "", "b", "" };
	static const char *const commas[] = { "", "" };
	static const char *const lead[] = { "", "x" };
	struct strv s = { 0 };

	split_is("", NULL, 0);
	split_is("   \t ", NULL, 0);
	split_is("a", one, 1);
	split_is("  a  ", one, 1);
	split_is("a, b c ,d", three, 3);
	split_is("a,\t,b, ", holes, 4);
	split_is(",", commas, 2);
	split_is(" , x", lead, 2);

	/* Appends to what is there; contains() and free(). */
	strv_push(&s, "First");
	strv_split(&s, "second, third");
	CU_ASSERT_EQUAL(s.n, 3);
	CU_ASSERT_TRUE(strv_contains(&s, "first", true));
	CU_ASSERT_FALSE(strv_contains(&s, "first", false));
	CU_ASSERT_TRUE(strv_contains(&s, "third", false));
	CU_ASSERT_FALSE(strv_contains(&s, "fourth", true));
	strv_free(&s);
	CU_ASSERT_EQUAL(s.n, 0);
	CU_ASSERT_PTR_NULL(s.v);
	strv_free(&s); /* twice is harmless */
	strv_free(NULL);
}

static void test_str_helpers(void)
{
	char a[] = "  \tHello World \n", b[] = "MiXeD-1";

	CU_ASSERT_STRING_EQUAL(str_trim(a), "Hello World");
	str_lower(b);
	CU_ASSERT_STRING_EQUAL(b, "mixed-1");
	CU_ASSERT_TRUE(str_eq_nocase("Desktop1", "DESKTOP1"));
	CU_ASSERT_FALSE(str_eq_nocase("desktop1", "desktop2"));
}

static void test_edit_distance(void)
{
	CU_ASSERT_EQUAL(edit_distance("", ""), 0);
	CU_ASSERT_EQUAL(edit_distance("", "abc"), 3);
	CU_ASSERT_EQUAL(edit_distance("abc", ""), 3);
	CU_ASSERT_EQUAL(edit_distance("kitten", "sitting"), 3);
	CU_ASSERT_EQUAL(edit_distance("sitting", "kitten"), 3);
	CU_ASSERT_EQUAL(edit_distance("flaw", "lawn"), 2);
	CU_ASSERT_EQUAL(edit_distance("adresses", "addresses"), 1);
	CU_ASSERT_EQUAL(edit_distance("desktops", "desktops"), 0);
	CU_ASSERT_EQUAL(edit_distance("DeskTops", "desktops"), 0); /* ignores case */
	CU_ASSERT_EQUAL(edit_distance("ab", "ba"), 2); /* no transpositions */
	CU_ASSERT_EQUAL(edit_distance("quarantine", "quarantien"), 2);
}

/* ---- diagnostics --------------------------------------------------------- */

static void test_diag(void)
{
	struct diag d = { 0 };
	char buf[256], small[12];

	diag_add(&d, "p.ini", 7, "unknown key '%s'", "hots");
	diag_add(&d, "p.ini", 0, "cannot be parsed as INI");
	diag_add(&d, "p.ini", -3, "negative line: %d", -3);
	diag_add(&d, NULL, 5, "no file, line %d ignored", 5);
	CU_ASSERT_EQUAL_FATAL(d.n, 4);
	CU_ASSERT_STRING_EQUAL(d.msgs[0], "p.ini:7: unknown key 'hots'");
	CU_ASSERT_STRING_EQUAL(d.msgs[1], "p.ini: cannot be parsed as INI");
	CU_ASSERT_STRING_EQUAL(d.msgs[2], "p.ini: negative line: -3");
	CU_ASSERT_STRING_EQUAL(d.msgs[3], "no file, line 5 ignored");

	diag_join(&d, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "p.ini:7: unknown key 'hots'\n"
				    "p.ini: cannot be parsed as INI\n"
				    "p.ini: negative line: -3\n"
				    "no file, line 5 ignored");
	/* Truncation keeps the buffer terminated. */
	diag_join(&d, small, sizeof(small));
	CU_ASSERT_STRING_EQUAL(small, "p.ini:7: un");

	/* Many messages grow the array; free resets it. */
	for (int i = 0; i < 100; i++)
		diag_add(&d, "f", i + 1, "m%d", i);
	CU_ASSERT_EQUAL(d.n, 104);
	CU_ASSERT_STRING_EQUAL(d.msgs[103], "f:100: m99");
	diag_free(&d);
	CU_ASSERT_EQUAL(d.n, 0);
	CU_ASSERT_PTR_NULL(d.msgs);
	diag_join(&d, buf, sizeof(buf));
	CU_ASSERT_STRING_EQUAL(buf, "");
	diag_free(NULL);
}

/* ---- log_line ----------------------------------------------------------- */

/* A message quoting a key written behind dfw's back stays one line: its
 * control characters are escaped, so it cannot forge another entry. */
static void test_log_line_one_line(void)
{
	char buf[512] = "", *nl;
	FILE *f = tmpfile();
	size_t n;

	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	log_line(f, "dfwd[hv1]", "store key '%s': ignored",
		 "tag/ghost\n2026-01-01T00:00:00 dfwd[hv1]: realized revision 9\x1b[0m");
	rewind(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	nl = strchr(buf, '\n');
	CU_ASSERT_PTR_NOT_NULL_FATAL(nl);
	CU_ASSERT_STRING_EQUAL(nl + 1, "");
	CU_ASSERT_PTR_NOT_NULL(strstr(buf, " dfwd[hv1]: store key 'tag/ghost\\x0a2026-01-01T00:00:00"
					  " dfwd[hv1]: realized revision 9\\x1b[0m': ignored\n"));
	/* bytes that are not UTF-8, and C1 controls, are shown too; other
	 * UTF-8 stays as it is */
	f = tmpfile();
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fput_shown(f, "a\xff\xc2\x9b[31m \xc3\xa9 \\x0a");
	rewind(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	CU_ASSERT_STRING_EQUAL(buf, "a\\xff\\xc2\\x9b[31m \xc3\xa9 \\\\x0a");
}

void register_util_tests(void)
{
	static const struct unit_test tests[] = {
		{ "parse_u64", test_parse_u64 },
		{ "parse_bool", test_parse_bool },
		{ "parse_duration_ms", test_parse_duration },
		{ "addr_parse", test_addr_parse },
		{ "addr_contains and addr_cmp", test_addr_contains_cmp },
		{ "addr_format round trip", test_addr_round_trip },
		{ "mac_parse", test_mac_parse },
		{ "mac_parse refuses signs and blanks", test_mac_parse_strict },
		{ "strv_split", test_strv_split },
		{ "string helpers", test_str_helpers },
		{ "edit_distance", test_edit_distance },
		{ "diag_add formatting", test_diag },
		{ "log_line keeps a message on one line", test_log_line_one_line },
	};

	unit_suite("util", tests, ARRAY_SIZE(tests));
}
