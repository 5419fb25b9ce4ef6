/*
 * NAME
 *	test_dns_msg - unit tests of proto/dns_msg and proto/mx
 * DESCRIPTION
 *	Responses are built here record by record (a tiny writer with name
 *	compression on request), then parsed from exact heap copies so ASan
 *	sees any read past the end.  Covered: the header, question skipping,
 *	compression (forward and self pointers refused, chains bounded),
 *	labels with bytes no mail domain has, names at 255 bytes and one past,
 *	truncation at every length, RDATA lengths; MX ordering by preference
 *	with random ties, duplicates, CNAME chains and loops, null MX, the
 *	implicit MX, NXDOMAIN with the SOA negative TTL, SERVFAIL and TC;
 *	A and AAAA collection.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "proto/dns_msg.h"
#include "proto/mx.h"

struct msg {
	uint8_t b[4096];
	size_t len;
	uint16_t counts[4];		/* qd an ns ar */
};

static void put16(struct msg *m, uint16_t v)
{
	m->b[m->len++] = (uint8_t)(v >> 8);
	m->b[m->len++] = (uint8_t)v;
}

static void put32(struct msg *m, uint32_t v)
{
	put16(m, (uint16_t)(v >> 16));
	put16(m, (uint16_t)v);
}

/* A name in labels; "" is the root. */
static void put_name(struct msg *m, const char *name)
{
	const char *p = name;

	while (*p != '\0') {
		const char *dot = strchr(p, '.');
		size_t n = dot != NULL ? (size_t)(dot - p) : strlen(p);

		m->b[m->len++] = (uint8_t)n;
		memcpy(m->b + m->len, p, n);
		m->len += n;
		p += n;
		if (*p == '.')
			p++;
	}
	m->b[m->len++] = 0;
}

static void put_pointer(struct msg *m, size_t target)
{
	put16(m, (uint16_t)(0xc000 | target));
}

static void start(struct msg *m, uint16_t flags, const char *qname, uint16_t qtype)
{
	memset(m, 0, sizeof(*m));
	put16(m, 0x1234);
	put16(m, flags);
	m->len = 12;
	put_name(m, qname);
	put16(m, qtype);
	put16(m, RM_DNS_CLASS_IN);
	m->counts[0] = 1;
}

static void finish(struct msg *m)
{
	for (int i = 0; i < 4; i++) {
		m->b[4 + 2 * i] = (uint8_t)(m->counts[i] >> 8);
		m->b[5 + 2 * i] = (uint8_t)m->counts[i];
	}
}

/* An RR header; the caller writes RDATA and then calls rr_end. */
static size_t rr_begin(struct msg *m, int section, const char *owner, uint16_t type, uint32_t ttl)
{
	put_name(m, owner);
	put16(m, type);
	put16(m, RM_DNS_CLASS_IN);
	put32(m, ttl);
	put16(m, 0);
	m->counts[section]++;
	return m->len;
}

static void rr_end(struct msg *m, size_t rdata)
{
	size_t n = m->len - rdata;

	m->b[rdata - 2] = (uint8_t)(n >> 8);
	m->b[rdata - 1] = (uint8_t)n;
}

static void add_mx(struct msg *m, const char *owner, uint16_t pref, const char *host, uint32_t ttl)
{
	size_t r = rr_begin(m, 1, owner, RM_DNS_TYPE_MX, ttl);

	put16(m, pref);
	put_name(m, host);
	rr_end(m, r);
}

static void add_a(struct msg *m, const char *owner, const uint8_t ip[4], uint32_t ttl)
{
	size_t r = rr_begin(m, 1, owner, RM_DNS_TYPE_A, ttl);

	memcpy(m->b + m->len, ip, 4);
	m->len += 4;
	rr_end(m, r);
}

static void add_soa(struct msg *m, const char *owner, uint32_t ttl, uint32_t minimum)
{
	size_t r = rr_begin(m, 2, owner, RM_DNS_TYPE_SOA, ttl);

	put_name(m, "ns.example");
	put_name(m, "hostmaster.example");
	put32(m, 1);
	put32(m, 3600);
	put32(m, 600);
	put32(m, 86400);
	put32(m, minimum);
	rr_end(m, r);
}

static uint8_t *copy(const struct msg *m)
{
	uint8_t *p = malloc(m->len ? m->len : 1);

	assert_non_null(p);
	memcpy(p, m->b, m->len);
	return p;
}

#define RESPONSE 0x8180u	/* QR, RD, RA, NOERROR */

static void test_header_and_walk(void **state)
{
	struct msg m;
	struct rm_dns_msg d;
	struct rm_dns_rr rr;
	uint16_t pref;
	char host[256];
	uint8_t *p;

	start(&m, RESPONSE, "Example.ORG", RM_DNS_TYPE_MX);
	add_mx(&m, "example.org", 10, "mx1.example.org", 300);
	add_soa(&m, "example.org", 60, 30);
	finish(&m);
	p = copy(&m);
	assert_int_equal(rm_dns_msg_parse(p, m.len, &d), 0);
	assert_int_equal(d.id, 0x1234);
	assert_int_equal(d.rcode, 0);
	assert_false(d.tc);
	assert_int_equal(rm_dns_msg_next(&d, &rr), 1);
	assert_string_equal(rr.name, "example.org");
	assert_int_equal(rr.type, RM_DNS_TYPE_MX);
	assert_int_equal(rr.ttl, 300);
	assert_int_equal(rr.section, RM_DNS_ANSWER);
	assert_int_equal(rm_dns_rr_mx(&d, &rr, &pref, host, sizeof(host)), 0);
	assert_int_equal(pref, 10);
	assert_string_equal(host, "mx1.example.org");
	assert_int_equal(rm_dns_msg_next(&d, &rr), 1);
	assert_int_equal(rr.section, RM_DNS_AUTHORITY);
	assert_int_equal(rm_dns_msg_next(&d, &rr), 0);
	assert_int_equal(rm_dns_msg_next(&d, &rr), 0);
	free(p);

	/* Every truncation is refused or ends the walk early, never read past. */
	for (size_t cut = 0; cut < m.len; cut++) {
		struct msg t = m;
		int rc;

		t.len = cut;
		p = copy(&t);
		rc = rm_dns_msg_parse(p, cut, &d);
		for (unsigned i = 0; rc == 0 && i < 10; i++)
			rc = rm_dns_msg_next(&d, &rr) == 1 ? 0 : -1;
		free(p);
	}

	/* A query, not a response. */
	start(&m, 0x0100, "example.org", RM_DNS_TYPE_MX);
	finish(&m);
	p = copy(&m);
	assert_int_equal(rm_dns_msg_parse(p, m.len, &d), RM_DNS_E_NOT_RESPONSE);
	free(p);
}

static void test_names(void **state)
{
	struct msg m;
	char out[256];
	size_t end = 0;
	uint8_t *p;

	/* Compression: "mx.example.org" as "mx" + pointer to the question's name. */
	start(&m, RESPONSE, "example.org", RM_DNS_TYPE_MX);
	size_t at = m.len;

	m.b[m.len++] = 2;
	memcpy(m.b + m.len, "MX", 2);
	m.len += 2;
	put_pointer(&m, 12);
	p = copy(&m);
	assert_int_equal(rm_dns_name_decode(p, m.len, at, out, sizeof(out), &end), 0);
	assert_string_equal(out, "mx.example.org");
	assert_int_equal(end, at + 5);
	free(p);

	/* A pointer to itself or forwards: refused (no loops possible). */
	start(&m, RESPONSE, "example.org", RM_DNS_TYPE_MX);
	at = m.len;
	put_pointer(&m, at);
	p = copy(&m);
	assert_int_equal(rm_dns_name_decode(p, m.len, at, out, sizeof(out), &end), RM_DNS_E_NAME);
	free(p);
	start(&m, RESPONSE, "example.org", RM_DNS_TYPE_MX);
	at = m.len;
	put_pointer(&m, at + 2);
	put_name(&m, "x");
	p = copy(&m);
	assert_int_equal(rm_dns_name_decode(p, m.len, at, out, sizeof(out), &end), RM_DNS_E_NAME);
	free(p);

	/* Bytes no mail domain has: a dot inside a label, controls, 8-bit. */
	static const char *const bad[] = { "a.b", "a\x01", "a b", "\xc3\xa9" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&m, 0, sizeof(m));
		m.b[0] = (uint8_t)strlen(bad[i]);
		memcpy(m.b + 1, bad[i], strlen(bad[i]));
		m.len = 1 + strlen(bad[i]) + 1;
		p = copy(&m);
		assert_int_equal(rm_dns_name_decode(p, m.len, 0, out, sizeof(out), &end), RM_DNS_E_NAME);
		free(p);
	}

	/* 255 bytes on the wire is the most: 3 labels of 63, one of 61, the root. */
	for (int extra = 0; extra <= 1; extra++) {
		memset(&m, 0, sizeof(m));
		for (int l = 0; l < 4; l++) {
			size_t n = l < 3 ? 63 : (size_t)(61 + extra);

			m.b[m.len++] = (uint8_t)n;
			memset(m.b + m.len, 'a', n);
			m.len += n;
		}
		m.b[m.len++] = 0;
		p = copy(&m);
		assert_int_equal(rm_dns_name_decode(p, m.len, 0, out, sizeof(out), &end), extra ? RM_DNS_E_NAME : 0);
		if (!extra)
			assert_int_equal(strlen(out), 253);
		free(p);
	}

	/* Extended label types (0x40, 0x80) are refused. */
	memset(&m, 0, sizeof(m));
	m.b[0] = 0x41;
	m.len = 3;
	p = copy(&m);
	assert_int_equal(rm_dns_name_decode(p, m.len, 0, out, sizeof(out), &end), RM_DNS_E_NAME);
	free(p);

	assert_true(rm_dns_name_equal("Example.ORG.", "example.org"));
	assert_false(rm_dns_name_equal("example.org", "example.or"));
}

static void test_rdata_lengths(void **state)
{
	struct msg m;
	struct rm_dns_msg d;
	struct rm_dns_rr rr;
	uint8_t *p;
	size_t r;

	start(&m, RESPONSE, "h.example", RM_DNS_TYPE_A);
	r = rr_begin(&m, 1, "h.example", RM_DNS_TYPE_A, 60);
	put16(&m, 0x7f00);	/* 2 bytes: an A needs 4 */
	rr_end(&m, r);
	finish(&m);
	p = copy(&m);
	assert_int_equal(rm_dns_msg_parse(p, m.len, &d), 0);
	assert_int_equal(rm_dns_msg_next(&d, &rr), RM_DNS_E_RDATA);
	free(p);

	/* RDATA running past the end. */
	start(&m, RESPONSE, "h.example", RM_DNS_TYPE_A);
	r = rr_begin(&m, 1, "h.example", RM_DNS_TYPE_A, 60);
	m.b[r - 1] = 200;
	finish(&m);
	p = copy(&m);
	assert_int_equal(rm_dns_msg_parse(p, m.len, &d), 0);
	assert_int_equal(rm_dns_msg_next(&d, &rr), RM_DNS_E_SHORT);
	free(p);

	/* A TTL with the top bit set reads as 0 (RFC 2181 8). */
	start(&m, RESPONSE, "h.example", RM_DNS_TYPE_A);
	add_a(&m, "h.example", (const uint8_t[]){ 192, 0, 2, 1 }, 0x80000001u);
	finish(&m);
	p = copy(&m);
	assert_int_equal(rm_dns_msg_parse(p, m.len, &d), 0);
	assert_int_equal(rm_dns_msg_next(&d, &rr), 1);
	assert_int_equal(rr.ttl, 0);
	free(p);
}

static void mx_of(const struct msg *m, const char *domain, uint64_t random, struct rm_mx_result *out)
{
	uint8_t *p = copy(m);

	assert_int_equal(rm_mx_from_answer(p, m->len, domain, random, out), 0);
	free(p);
}

static void test_mx_order_and_ties(void **state)
{
	struct msg m;
	struct rm_mx_result r;
	unsigned first_b = 0;

	start(&m, RESPONSE, "example.org", RM_DNS_TYPE_MX);
	add_mx(&m, "example.org", 20, "c.example.org", 600);
	add_mx(&m, "example.org", 10, "a.example.org", 300);
	add_mx(&m, "example.org", 10, "b.example.org", 900);
	add_mx(&m, "EXAMPLE.org", 10, "A.example.org", 900);	/* the same host again */
	add_mx(&m, "other.example", 5, "x.other.example", 900);	/* not ours */
	finish(&m);
	for (uint64_t seed = 0; seed < 200; seed++) {
		mx_of(&m, "example.org.", seed, &r);
		assert_int_equal(r.status, RM_MX_OK);
		assert_int_equal(r.count, 3);
		assert_int_equal(r.ttl_s, 300);
		assert_int_equal(r.hosts[0].preference, 10);
		assert_int_equal(r.hosts[1].preference, 10);
		assert_string_equal(r.hosts[2].name, "c.example.org");
		first_b += strcmp(r.hosts[0].name, "b.example.org") == 0;
	}
	/* Ties in both orders, roughly evenly. */
	assert_true(first_b > 50 && first_b < 150);
}

static void test_mx_cases(void **state)
{
	struct msg m;
	struct rm_mx_result r;

	/* Null MX (RFC 7505). */
	start(&m, RESPONSE, "nomail.example", RM_DNS_TYPE_MX);
	add_mx(&m, "nomail.example", 0, "", 3600);
	finish(&m);
	mx_of(&m, "nomail.example", 1, &r);
	assert_int_equal(r.status, RM_MX_NULL);

	/* A "." among real exchangers is ignored. */
	start(&m, RESPONSE, "mixed.example", RM_DNS_TYPE_MX);
	add_mx(&m, "mixed.example", 0, "", 3600);
	add_mx(&m, "mixed.example", 10, "mx.mixed.example", 3600);
	finish(&m);
	mx_of(&m, "mixed.example", 1, &r);
	assert_int_equal(r.status, RM_MX_OK);
	assert_int_equal(r.count, 1);

	/* No MX: the implicit MX, negative TTL from the SOA. */
	start(&m, RESPONSE, "plain.example", RM_DNS_TYPE_MX);
	add_soa(&m, "example", 120, 45);
	finish(&m);
	mx_of(&m, "Plain.Example", 1, &r);
	assert_int_equal(r.status, RM_MX_IMPLICIT);
	assert_int_equal(r.count, 1);
	assert_string_equal(r.hosts[0].name, "plain.example");
	assert_int_equal(r.ttl_s, 45);

	/* NXDOMAIN. */
	start(&m, 0x8183, "gone.example", RM_DNS_TYPE_MX);
	add_soa(&m, "example", 30, 600);
	finish(&m);
	mx_of(&m, "gone.example", 1, &r);
	assert_int_equal(r.status, RM_MX_NXDOMAIN);
	assert_int_equal(r.ttl_s, 30);

	/* SERVFAIL, REFUSED, truncated: defer. */
	start(&m, 0x8182, "x.example", RM_DNS_TYPE_MX);
	finish(&m);
	mx_of(&m, "x.example", 1, &r);
	assert_int_equal(r.status, RM_MX_TEMPFAIL);
	assert_string_equal(r.why, "SERVFAIL");
	start(&m, 0x8385, "x.example", RM_DNS_TYPE_MX);
	finish(&m);
	mx_of(&m, "x.example", 1, &r);
	assert_int_equal(r.status, RM_MX_TEMPFAIL);

	/* A CNAME chain to the records; a loop is a failure. */
	start(&m, RESPONSE, "alias.example", RM_DNS_TYPE_MX);
	add_mx(&m, "real.example", 5, "mx.real.example", 100);
	{
		size_t rd = rr_begin(&m, 1, "alias.example", RM_DNS_TYPE_CNAME, 100);

		put_name(&m, "mid.example");
		rr_end(&m, rd);
		rd = rr_begin(&m, 1, "mid.example", RM_DNS_TYPE_CNAME, 100);
		put_name(&m, "real.example");
		rr_end(&m, rd);
	}
	finish(&m);
	mx_of(&m, "alias.example", 1, &r);
	assert_int_equal(r.status, RM_MX_OK);
	assert_string_equal(r.hosts[0].name, "mx.real.example");
	start(&m, RESPONSE, "loop.example", RM_DNS_TYPE_MX);
	{
		size_t rd = rr_begin(&m, 1, "loop.example", RM_DNS_TYPE_CNAME, 100);

		put_name(&m, "loop2.example");
		rr_end(&m, rd);
		rd = rr_begin(&m, 1, "loop2.example", RM_DNS_TYPE_CNAME, 100);
		put_name(&m, "loop.example");
		rr_end(&m, rd);
	}
	finish(&m);
	mx_of(&m, "loop.example", 1, &r);
	assert_int_equal(r.status, RM_MX_TEMPFAIL);

	/* Garbage. */
	memset(&m, 0, sizeof(m));
	m.len = 5;
	mx_of(&m, "x.example", 1, &r);
	assert_int_equal(r.status, RM_MX_TEMPFAIL);
	assert_non_null(r.why);
}

static void test_addresses(void **state)
{
	struct msg m;
	struct rm_mx_addrs a;
	uint8_t *p;

	start(&m, RESPONSE, "mx.example", RM_DNS_TYPE_A);
	add_a(&m, "mx.example", (const uint8_t[]){ 127, 0, 0, 2 }, 50);
	add_a(&m, "mx.example", (const uint8_t[]){ 127, 0, 0, 3 }, 40);
	add_a(&m, "other.example", (const uint8_t[]){ 10, 0, 0, 1 }, 40);
	finish(&m);
	p = copy(&m);
	assert_int_equal(rm_mx_addresses(p, m.len, "MX.example.", &a), 0);
	free(p);
	assert_int_equal(a.status, RM_MX_OK);
	assert_int_equal(a.family, AF_INET);
	assert_int_equal(a.count, 2);
	assert_int_equal(a.addr[1][3], 3);
	assert_int_equal(a.ttl_s, 40);

	start(&m, RESPONSE, "v6only.example", RM_DNS_TYPE_A);
	add_soa(&m, "example", 10, 20);
	finish(&m);
	p = copy(&m);
	assert_int_equal(rm_mx_addresses(p, m.len, "v6only.example", &a), 0);
	free(p);
	assert_int_equal(a.status, RM_MX_IMPLICIT);
	assert_int_equal(a.count, 0);
	assert_int_equal(a.ttl_s, 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_and_walk),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_rdata_lengths),
		cmocka_unit_test(test_mx_order_and_ties),
		cmocka_unit_test(test_mx_cases),
		cmocka_unit_test(test_addresses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
