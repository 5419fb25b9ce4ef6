/*
 * NAME
 *	test_cidr - unit tests of core/cidr
 * DESCRIPTION
 *	Parsing: every accepted spelling, the refusals (host bits, prefix
 *	range, junk) with their codes and messages; formatting round trips;
 *	matching of IPv4, IPv6 and IPv4-mapped clients at prefix boundaries;
 *	the list's all-or-nothing add and its RM_CIDR_LIST_MAX limit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/un.h>

#include "core/cidr.h"

/* A client address as accept(2) gives it. */
struct client {
	struct sockaddr_storage ss;
};

static const struct sockaddr *client(struct client *c, const char *text)
{
	memset(c, 0, sizeof(*c));
	struct sockaddr_in *in = (struct sockaddr_in *)&c->ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&c->ss;

	if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons(25);
	} else {
		assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(25);
	}
	return (const struct sockaddr *)&c->ss;
}

static void assert_parses(const char *text, const char *formatted)
{
	struct rm_cidr c, again;
	char buf[RM_CIDR_TEXT_BYTES];

	assert_int_equal(rm_cidr_parse(text, &c), 0);
	assert_string_equal(rm_cidr_format(&c, buf, sizeof(buf)), formatted);
	/* What is printed parses back to the same network. */
	assert_int_equal(rm_cidr_parse(buf, &again), 0);
	assert_memory_equal(&c, &again, sizeof(c));
}

static void test_parse_accepts(void **state)
{
	assert_parses("10.0.0.0/8", "10.0.0.0/8");
	assert_parses("192.168.1.7", "192.168.1.7/32");
	assert_parses("0.0.0.0/0", "0.0.0.0/0");
	assert_parses("255.255.255.255/32", "255.255.255.255/32");
	assert_parses("172.16.0.0/12", "172.16.0.0/12");
	assert_parses("::1/128", "::1/128");
	assert_parses("::1", "::1/128");
	assert_parses("::/0", "::/0");
	assert_parses("2001:db8::/32", "2001:db8::/32");
	assert_parses("2001:DB8:0:0::/64", "2001:db8::/64");
	assert_parses("[::1]/128", "::1/128");
	assert_parses("[2001:db8::]/32", "2001:db8::/32");
	assert_parses("[fe80::1]", "fe80::1/128");
	assert_parses("[10.1.2.3]", "10.1.2.3/32");
	/* IPv4-mapped networks are stored as the IPv4 network they cover. */
	assert_parses("::ffff:10.0.0.0/104", "10.0.0.0/8");
	assert_parses("::ffff:192.0.2.1", "192.0.2.1/32");
	assert_parses("::ffff:0.0.0.0/96", "0.0.0.0/0");
	/* Shorter than /96 it is an IPv6 network like any other. */
	assert_parses("::/95", "::/95");

	struct rm_cidr c;

	assert_int_equal(rm_cidr_parse("10.0.0.0/8", &c), 0);
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix_len, 8);
	assert_int_equal(rm_cidr_parse("2001:db8::/32", &c), 0);
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix_len, 32);
}

static void test_parse_refuses(void **state)
{
	static const struct {
		const char *text;
		int rc;
	} cases[] = {
		{ "", RM_CIDR_EEMPTY },
		{ "10.0.0.1/8", RM_CIDR_EHOSTBITS },
		{ "192.168.1.1/24", RM_CIDR_EHOSTBITS },
		{ "10.128.0.0/8", RM_CIDR_EHOSTBITS },
		{ "10.0.0.1/31", RM_CIDR_EHOSTBITS },
		{ "2001:db8::1/32", RM_CIDR_EHOSTBITS },
		{ "::1/127", RM_CIDR_EHOSTBITS },
		{ "::ffff:10.0.0.1/104", RM_CIDR_EHOSTBITS },
		{ "10.0.0.0/33", RM_CIDR_ERANGE },
		{ "10.0.0.0/999", RM_CIDR_ERANGE },
		{ "::/129", RM_CIDR_ERANGE },
		{ "10.0.0.0/", RM_CIDR_EPREFIX },
		{ "10.0.0.0/-1", RM_CIDR_EPREFIX },
		{ "10.0.0.0/+8", RM_CIDR_EPREFIX },
		{ "10.0.0.0/08", RM_CIDR_EPREFIX },
		{ "10.0.0.0/8x", RM_CIDR_EPREFIX },
		{ "10.0.0.0/8/8", RM_CIDR_EPREFIX },
		{ "10.0.0.0/ 8", RM_CIDR_EPREFIX },
		{ "10.0.0.0/1000000000000", RM_CIDR_EPREFIX },
		{ "/8", RM_CIDR_EADDRESS },
		{ "10.0.0", RM_CIDR_EADDRESS },
		{ "10.0.0.256", RM_CIDR_EADDRESS },
		{ "010.0.0.0/8", RM_CIDR_EADDRESS },
		{ "0x0a.0.0.0/8", RM_CIDR_EADDRESS },
		{ " 10.0.0.0/8", RM_CIDR_EADDRESS },
		{ "10.0.0.0/8 ", RM_CIDR_EPREFIX },
		{ "localhost", RM_CIDR_EADDRESS },
		{ "fe80::1%eth0", RM_CIDR_EADDRESS },
		{ "2001:db8:::/32", RM_CIDR_EADDRESS },
		{ "[::1", RM_CIDR_EBRACKET },
		{ "::1]", RM_CIDR_EBRACKET },
		{ "[::1]x", RM_CIDR_EBRACKET },
		{ "[::1]]/128", RM_CIDR_EBRACKET },
		{ "[]", RM_CIDR_EADDRESS },
		{ "[::1/128]", RM_CIDR_EADDRESS },
		{ "[::1]/", RM_CIDR_EPREFIX },
		{ "1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc:dddd/12",
		  RM_CIDR_ETOOLONG },
	};
	struct rm_cidr c, before;

	memset(&before, 0x5a, sizeof(before));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc;

		c = before;
		rc = rm_cidr_parse(cases[i].text, &c);
		if (rc != cases[i].rc)
			fail_msg("\"%s\": got %d (%s), want %d", cases[i].text, rc,
				 rm_cidr_parse_error(rc), cases[i].rc);
		/* Untouched on error. */
		assert_memory_equal(&c, &before, sizeof(c));
		assert_true(strlen(rm_cidr_parse_error(rc)) > 0);
	}
	assert_int_equal(rm_cidr_parse(NULL, &c), RM_CIDR_EEMPTY);
}

static void test_host_bits_message(void **state)
{
	struct rm_cidr_list l;
	char err[256];

	rm_cidr_list_init(&l);
	assert_int_equal(rm_cidr_list_add(&l, "10.0.0.1/8", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "10.0.0.1/8: "));
	assert_non_null(strstr(err, "beyond the /8 prefix"));
	assert_non_null(strstr(err, "10.0.0.0/8"));
	assert_int_equal(rm_cidr_list_add(&l, "2001:db8::1/32", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "2001:db8::/32"));
	assert_int_equal(l.count, 0);
}

static void test_contains_boundaries(void **state)
{
	struct rm_cidr c;
	struct client cl;

	assert_int_equal(rm_cidr_parse("192.168.4.0/22", &c), 0);
	assert_true(rm_cidr_contains(&c, client(&cl, "192.168.4.0")));
	assert_true(rm_cidr_contains(&c, client(&cl, "192.168.7.255")));
	assert_false(rm_cidr_contains(&c, client(&cl, "192.168.8.0")));
	assert_false(rm_cidr_contains(&c, client(&cl, "192.168.3.255")));
	assert_true(rm_cidr_contains(&c, client(&cl, "::ffff:192.168.5.5")));
	assert_false(rm_cidr_contains(&c, client(&cl, "::ffff:192.168.8.5")));
	/* An IPv4 entry never matches a real IPv6 client, nor an IPv4-compatible one. */
	assert_false(rm_cidr_contains(&c, client(&cl, "::192.168.5.5")));
	assert_false(rm_cidr_contains(&c, client(&cl, "2001:db8::1")));

	assert_int_equal(rm_cidr_parse("2001:db8:80::/41", &c), 0);
	assert_true(rm_cidr_contains(&c, client(&cl, "2001:db8:80::")));
	assert_true(rm_cidr_contains(&c, client(&cl, "2001:db8:ff:ffff:ffff:ffff:ffff:ffff")));
	assert_false(rm_cidr_contains(&c, client(&cl, "2001:db8:100::")));
	assert_false(rm_cidr_contains(&c, client(&cl, "2001:db8:7f::")));
	assert_false(rm_cidr_contains(&c, client(&cl, "10.0.0.1")));

	assert_int_equal(rm_cidr_parse("0.0.0.0/0", &c), 0);
	assert_true(rm_cidr_contains(&c, client(&cl, "203.0.113.9")));
	assert_true(rm_cidr_contains(&c, client(&cl, "::ffff:203.0.113.9")));
	assert_false(rm_cidr_contains(&c, client(&cl, "::1")));

	assert_int_equal(rm_cidr_parse("::/0", &c), 0);
	assert_true(rm_cidr_contains(&c, client(&cl, "::1")));
	assert_false(rm_cidr_contains(&c, client(&cl, "203.0.113.9")));
	assert_false(rm_cidr_contains(&c, client(&cl, "::ffff:203.0.113.9")));

	/* Every prefix length of one IPv6 address: the address itself is in, one bit off is out. */
	for (unsigned p = 1; p <= 128; p++) {
		char text[80];
		struct in6_addr a, flip;
		char abuf[INET6_ADDRSTRLEN];

		memset(&a, 0xff, sizeof(a));
		a.s6_addr[0] = 0x20;	/* not mapped */
		for (unsigned bit = p; bit < 128; bit++)
			a.s6_addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
		inet_ntop(AF_INET6, &a, abuf, sizeof(abuf));
		snprintf(text, sizeof(text), "%s/%u", abuf, p);
		assert_int_equal(rm_cidr_parse(text, &c), 0);
		assert_true(rm_cidr_contains(&c, client(&cl, abuf)));
		flip = a;
		flip.s6_addr[(p - 1) / 8] ^= (uint8_t)(0x80u >> ((p - 1) % 8));
		inet_ntop(AF_INET6, &flip, abuf, sizeof(abuf));
		assert_false(rm_cidr_contains(&c, client(&cl, abuf)));
	}
}

static void test_other_families(void **state)
{
	struct rm_cidr_list l;
	struct sockaddr_un un;

	rm_cidr_list_init(&l);
	assert_int_equal(rm_cidr_list_add(&l, "0.0.0.0/0 ::/0", NULL, 0), 0);
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	assert_false(rm_cidr_list_match(&l, (const struct sockaddr *)&un));
	assert_false(rm_cidr_list_match(&l, NULL));
}

static void test_list(void **state)
{
	static struct rm_cidr_list l;
	struct client cl;
	char err[256];

	rm_cidr_list_init(&l);
	assert_false(rm_cidr_list_match(&l, client(&cl, "127.0.0.1")));
	assert_int_equal(rm_cidr_list_add(&l, "127.0.0.0/8, [::1]/128,192.168.0.0/16\t10.1.2.3",
					  err, sizeof(err)), 0);
	assert_int_equal(l.count, 4);
	assert_int_equal(rm_cidr_list_add(&l, "  ,, \n", err, sizeof(err)), 0);
	assert_int_equal(rm_cidr_list_add(&l, "", err, sizeof(err)), 0);
	assert_int_equal(l.count, 4);
	assert_true(rm_cidr_list_match(&l, client(&cl, "127.0.0.1")));
	assert_true(rm_cidr_list_match(&l, client(&cl, "::ffff:127.3.4.5")));
	assert_true(rm_cidr_list_match(&l, client(&cl, "::1")));
	assert_true(rm_cidr_list_match(&l, client(&cl, "192.168.200.1")));
	assert_true(rm_cidr_list_match(&l, client(&cl, "10.1.2.3")));
	assert_false(rm_cidr_list_match(&l, client(&cl, "10.1.2.4")));
	assert_false(rm_cidr_list_match(&l, client(&cl, "::2")));
	assert_false(rm_cidr_list_match(&l, client(&cl, "8.8.8.8")));

	/* All or nothing: a bad entry after good ones adds none of them. */
	assert_int_equal(rm_cidr_list_add(&l, "8.8.8.0/24 bogus 9.9.9.9", err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "bogus: not an IPv4 or IPv6 address");
	assert_int_equal(l.count, 4);
	assert_false(rm_cidr_list_match(&l, client(&cl, "8.8.8.8")));

	/* A very long word is cut in the message, which stays one line. */
	char longword[300];

	memset(longword, 'a', sizeof(longword) - 1);
	longword[sizeof(longword) - 1] = '\0';
	assert_int_equal(rm_cidr_list_add(&l, longword, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "...: network text too long"));
	assert_true(strlen(err) < 100);
	/* err too small: still terminated. */
	assert_int_equal(rm_cidr_list_add(&l, "x", err, 4), -EINVAL);
	assert_string_equal(err, "x: ");
}

static void test_list_limit(void **state)
{
	static struct rm_cidr_list l;
	struct client cl;
	char err[256], text[32];

	rm_cidr_list_init(&l);
	for (unsigned i = 0; i < RM_CIDR_LIST_MAX; i++) {
		snprintf(text, sizeof(text), "10.%u.%u.0/24", i / 256, i % 256);
		assert_int_equal(rm_cidr_list_add(&l, text, err, sizeof(err)), 0);
	}
	assert_int_equal(l.count, RM_CIDR_LIST_MAX);
	assert_int_equal(rm_cidr_list_add(&l, "192.0.2.0/24", err, sizeof(err)), -ENOSPC);
	assert_non_null(strstr(err, "more than 256 networks"));
	assert_int_equal(l.count, RM_CIDR_LIST_MAX);
	assert_true(rm_cidr_list_match(&l, client(&cl, "10.0.255.1")));
	assert_false(rm_cidr_list_match(&l, client(&cl, "192.0.2.1")));

	/* Many in one call that overflow: none added. */
	rm_cidr_list_init(&l);
	char many[RM_CIDR_LIST_MAX * 16 + 64];
	size_t used = 0;

	for (unsigned i = 0; i <= RM_CIDR_LIST_MAX; i++)
		used += (size_t)snprintf(many + used, sizeof(many) - used, "10.0.%u.%u ", i / 256,
					 i % 256);
	assert_int_equal(rm_cidr_list_add(&l, many, err, sizeof(err)), -ENOSPC);
	assert_int_equal(l.count, 0);
}

static void test_format_small_buffer(void **state)
{
	struct rm_cidr c;
	char buf[8];

	assert_int_equal(rm_cidr_parse("192.168.100.0/24", &c), 0);
	assert_string_equal(rm_cidr_format(&c, buf, sizeof(buf)), "192.168");
	assert_null(rm_cidr_format(&c, NULL, 0));
	assert_int_equal(rm_cidr_parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &c), 0);
	char big[RM_CIDR_TEXT_BYTES];

	rm_cidr_format(&c, big, sizeof(big));
	assert_string_equal(big, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_accepts),
		cmocka_unit_test(test_parse_refuses),
		cmocka_unit_test(test_host_bits_message),
		cmocka_unit_test(test_contains_boundaries),
		cmocka_unit_test(test_other_families),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_list_limit),
		cmocka_unit_test(test_format_small_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
