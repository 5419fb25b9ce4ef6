/*
 * NAME
 *	test_proxy_proto - unit tests of proto/proxy_proto
 * DESCRIPTION
 *	Every input is parsed from a heap copy of exact size (ASan sees any
 *	read past it), and not once but at every split point: each prefix,
 *	from empty to whole, must give NEED_MORE or exactly the whole
 *	input's answer, and once an answer is given every longer prefix must
 *	give it too; a good header must give NEED_MORE for each of its
 *	proper prefixes.
 *
 *	A table of v1 lines, each with its answer: every valid form (TCP4,
 *	TCP6 with every address shape, UNKNOWN short and long) and for every
 *	v1 error code lines that must produce exactly it.  v1 at 107 and 108
 *	bytes.  v2 headers built here, with a CRC32C from a bitwise CRC
 *	written in this file (not the codec's): PROXY over IPv4 and IPv6,
 *	LOCAL, UNSPEC, TLVs (authority, SSL with sub-TLVs, NOOP, custom),
 *	every v2 error, the length at and past the limit, TLV overruns by one
 *	byte, CRC right and wrong (every bit flipped), the TLV count at and
 *	past its limit, and a published header (AWS NLB) with its CRC.  Bytes
 *	after a header are never consumed.  The address parsers against
 *	glibc's inet_pton on tricky strings; the writers round-tripped and
 *	refused with too small a buffer; the version mask; the error texts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "proto/proxy_proto.h"

#define L(s) (s), sizeof(s) - 1

/* A copy of exactly len bytes on the heap (one byte allocated for an empty one). */
static uint8_t *heap_copy(const void *p, size_t len)
{
	uint8_t *b = malloc(len ? len : 1);

	assert_non_null(b);
	if (len)
		memcpy(b, p, len);
	return b;
}

/*
 * Results of two parses of different copies are the same when every field
 * is, the authority compared by its offset in its own copy.
 */
static void assert_same(const struct rm_proxy_header *a, const uint8_t *abuf,
			const struct rm_proxy_header *b, const uint8_t *bbuf)
{
	assert_int_equal(a->err, b->err);
	assert_int_equal(a->version, b->version);
	assert_int_equal(a->local, b->local);
	assert_int_equal(a->family, b->family);
	assert_memory_equal(&a->src, &b->src, sizeof(a->src));
	assert_memory_equal(&a->dst, &b->dst, sizeof(a->dst));
	assert_int_equal(a->consumed, b->consumed);
	assert_int_equal(a->authority.ptr == NULL, b->authority.ptr == NULL);
	if (a->authority.ptr != NULL)
		assert_int_equal(a->authority.ptr - abuf, b->authority.ptr - bbuf);
	assert_int_equal(a->authority.len, b->authority.len);
	assert_int_equal(a->ssl, b->ssl);
	assert_int_equal(a->crc32c, b->crc32c);
}

/* Errors some case produced, for the check that every one is exercised. */
static bool seen_err[RM_PROXY_E_COUNT];

/* The input, printable, for failure messages. */
static const char *show(const void *p, size_t len)
{
	static char buf[512];
	const uint8_t *b = p;
	size_t o = 0;

	for (size_t i = 0; i < len && o + 5 < sizeof(buf); i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, b[i] >= 32 && b[i] < 127 && b[i] != '\\' ?
				      "%c" : "\\x%02x", b[i]);
	buf[o] = 0;
	return buf;
}

/*
 * Parse p[0..len) at every split point; return the whole input's status,
 * its result in *out, and (when keep is not NULL) the copy the result
 * points into, for the caller to free.
 */
static enum rm_proxy_status parse_splits(const void *p, size_t len, const struct rm_proxy_opts *o,
					 struct rm_proxy_header *out, uint8_t **keep)
{
	uint8_t *whole = heap_copy(p, len);
	enum rm_proxy_status st = rm_proxy_parse(whole, len, o, out);
	bool answered = false;

	assert_true(st == RM_PROXY_NEED_MORE || st == RM_PROXY_OK || st == RM_PROXY_ERROR);
	assert_int_equal(st == RM_PROXY_ERROR, out->err != RM_PROXY_E_NONE);
	seen_err[out->err] = true;
	for (size_t k = 0; k <= len; k++) {
		uint8_t *part = heap_copy(p, k);
		struct rm_proxy_header h;
		enum rm_proxy_status sk = rm_proxy_parse(part, k, o, &h);

		if (sk == RM_PROXY_NEED_MORE) {
			if (answered || h.err != RM_PROXY_E_NONE || h.consumed != 0)
				fail_msg("'%s': prefix %zu of %zu: NEED_MORE after an answer", show(p, len), k, len);
			if (st == RM_PROXY_OK && k >= out->consumed)
				fail_msg("'%s': prefix %zu holds the header but NEED_MORE", show(p, len), k);
		} else {
			answered = true;
			if (sk != st || h.err != out->err)
				fail_msg("'%s': prefix %zu of %zu: status %d err %d (%s), whole: %d err %d (%s)",
					 show(p, len), k, len, sk, h.err, rm_proxy_err_text(h.err), st, out->err,
					 rm_proxy_err_text(out->err));
			if (st == RM_PROXY_OK && k < out->consumed)
				fail_msg("'%s': prefix %zu shorter than the header %zu answers", show(p, len), k,
					 out->consumed);
			assert_same(&h, part, out, whole);
		}
		free(part);
	}
	if (keep != NULL)
		*keep = whole;
	else
		free(whole);
	return st;
}

/* --- v1 table ---------------------------------------------------------------- */

struct v1_case {
	const char *line;
	size_t len;
	enum rm_proxy_status st;
	enum rm_proxy_err err;
};

#define GOOD(s) { L(s), RM_PROXY_OK, RM_PROXY_E_NONE }
#define BAD(s, e) { L(s), RM_PROXY_ERROR, RM_PROXY_E_##e }
#define MORE(s) { L(s), RM_PROXY_NEED_MORE, RM_PROXY_E_NONE }

#define A4 "192.0.2.1 198.51.100.2"
#define F39 "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

static const struct v1_case v1_cases[] = {
	GOOD("PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n"),
	GOOD("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"),
	GOOD("PROXY TCP4 10.0.0.1 10.0.0.2 1 9\r\n"),
	GOOD("PROXY TCP6 2001:db8::1 2001:db8::2 4000 587\r\n"),
	GOOD("PROXY TCP6 :: ::1 1 2\r\n"),
	GOOD("PROXY TCP6 ::ffff:192.0.2.1 FE80::A:b 1 2\r\n"),
	GOOD("PROXY TCP6 1:2:3:4:5:6:7:8 1:2:3:4:5:6:1.2.3.4 1 2\r\n"),
	GOOD("PROXY TCP6 1:: 1::8 65535 0\r\n"),
	GOOD("PROXY TCP6 " F39 " " F39 " 65535 65535\r\n"),
	GOOD("PROXY UNKNOWN\r\n"),
	GOOD("PROXY UNKNOWN \r\n"),
	GOOD("PROXY UNKNOWN " F39 " " F39 " 65535 65535\r\n"),
	GOOD("PROXY UNKNOWN anything \x01\x7f\xff goes\r\n"),
	/* Neither signature: refused at the first byte that shows it. */
	BAD("EHLO mail.example.org\r\n", NOT_PROXY),
	BAD("proxy TCP4 " A4 " 1 2\r\n", NOT_PROXY),
	BAD("PROXYTCP4 " A4 " 1 2\r\n", NOT_PROXY),
	MORE("PROX"),
	MORE("PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r"),
	BAD("\r\nQUIT\r\n", NOT_PROXY),
	BAD("\r\n\r\n\0\r\nQUIX\n", NOT_PROXY),
	BAD("\n", NOT_PROXY),
	/* Protocol */
	BAD("PROXY TCP5 " A4 " 1 2\r\n", V1_PROTO),
	BAD("PROXY tcp4 " A4 " 1 2\r\n", V1_PROTO),
	BAD("PROXY UDP4 " A4 " 1 2\r\n", V1_PROTO),
	BAD("PROXY TCP44 " A4 " 1 2\r\n", V1_PROTO),
	BAD("PROXY TCP " A4 " 1 2\r\n", V1_PROTO),
	BAD("PROXY  TCP4 " A4 " 1 2\r\n", V1_PROTO),
	BAD("PROXY \r\n", V1_PROTO),
	BAD("PROXY UNKNOWN1\r\n", V1_PROTO),
	/* Fields missing, extra, or not separated by exactly one SP */
	BAD("PROXY TCP4\r\n", V1_SYNTAX),
	BAD("PROXY TCP4:" A4 " 1 2\r\n", V1_SYNTAX),
	BAD("PROXY UNKNOWNx\r\n", V1_SYNTAX),
	BAD("PROXY TCP4 192.0.2.1\r\n", V1_SYNTAX),
	BAD("PROXY TCP4 192.0.2.1\t198.51.100.2 1 2\r\n", V1_SYNTAX),
	BAD("PROXY TCP4 " A4 "\r\n", V1_SYNTAX),
	BAD("PROXY TCP4 " A4 " 1\r\n", V1_SYNTAX),
	BAD("PROXY TCP4 " A4 " 1 2 3\r\n", V1_SYNTAX),
	BAD("PROXY TCP4 " A4 " 1 2 \r\n", V1_SYNTAX),
	BAD("PROXY TCP4 " A4 " 1 2x\r\n", V1_SYNTAX),
	BAD("PROXY TCP4 192.0.2.1/24 198.51.100.2 1 2\r\n", V1_SYNTAX),
	/* Source address */
	BAD("PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP4 192.0.2 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP4 192.0.2.1.5 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP4 192.0.02.1 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP4 00.0.0.0 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP4 256.0.0.1 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP4 1..2.3 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP4 .1.2.3 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP4 1.2.3. 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP4 1.2.3.a 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP4 ::1 198.51.100.2 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 192.0.2.1 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 1:::2 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 :1 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 : ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 1: ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 1::2::3 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 12345::1 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 1:2:3:4:5:6:7:8: ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 1::2:3:4:5:6:7:8 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 1:2:3:4:5:6:7::8 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 1:2:3:4:5:6:7:1.2.3.4 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 ::1:2:3:4:5:6:1.2.3.4 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 ::ffff:1.2.3 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 ::ffff:1.2.3.04 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 ::1.2.3.4:5 ::1 1 2\r\n", V1_SRC_ADDR),
	BAD("PROXY TCP6 g::1 ::1 1 2\r\n", V1_SRC_ADDR),
	/* Destination address */
	BAD("PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n", V1_DST_ADDR),
	BAD("PROXY TCP4 192.0.2.1 198.51.100.256 1 2\r\n", V1_DST_ADDR),
	BAD("PROXY TCP4 192.0.2.1 2001:db8::1 1 2\r\n", V1_DST_ADDR),
	BAD("PROXY TCP6 ::1 ::1::1 1 2\r\n", V1_DST_ADDR),
	BAD("PROXY TCP6 ::1 1.2.3.4 1 2\r\n", V1_DST_ADDR),
	/* Ports */
	BAD("PROXY TCP4 " A4 " 65536 2\r\n", V1_SRC_PORT),
	BAD("PROXY TCP4 " A4 " 99999 2\r\n", V1_SRC_PORT),
	BAD("PROXY TCP4 " A4 " 01 2\r\n", V1_SRC_PORT),
	BAD("PROXY TCP4 " A4 " 00 2\r\n", V1_SRC_PORT),
	BAD("PROXY TCP4 " A4 " -1 2\r\n", V1_SRC_PORT),
	BAD("PROXY TCP4 " A4 "  1 2\r\n", V1_SRC_PORT),
	BAD("PROXY TCP4 " A4 " 1 65536\r\n", V1_DST_PORT),
	BAD("PROXY TCP4 " A4 " 1 0065535\r\n", V1_DST_PORT),
	BAD("PROXY TCP4 " A4 " 1  2\r\n", V1_DST_PORT),
	BAD("PROXY TCP4 " A4 " 1 \r\n", V1_DST_PORT),
	BAD("PROXY TCP4 " A4 " 1 +2\r\n", V1_DST_PORT),
	/* Line end */
	BAD("PROXY UNKNOWN\n", V1_CRLF),
	BAD("PROXY UNKNOWN\rX\n", V1_CRLF),
	BAD("PROXY UNKNOWN foo\nbar\r\n", V1_CRLF),
	BAD("PROXY UNKNOWN foo\r\r\n", V1_CRLF),
	BAD("PROXY TCP4 " A4 " 1 2\n", V1_CRLF),
	BAD("PROXY TCP4 " A4 " 1 2\r\r\n", V1_CRLF),
	BAD("PROXY TCP4 " A4 " 1 2\rEHLO x\r\n", V1_CRLF),
	/* Too long: no complete line in 107 bytes */
	BAD("PROXY UNKNOWN xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n", V1_TOO_LONG),
};

static void test_v1_table(void **state)
{
	struct rm_proxy_opts o;

	rm_proxy_opts_default(&o);
	for (size_t i = 0; i < sizeof(v1_cases) / sizeof(v1_cases[0]); i++) {
		const struct v1_case *c = &v1_cases[i];
		struct rm_proxy_header h;
		enum rm_proxy_status st;

		st = parse_splits(c->line, c->len, &o, &h, NULL);
		if (st != c->st || h.err != c->err)
			fail_msg("'%s': status %d err %d (%s); want %d err %d (%s)", show(c->line, c->len), st,
				 h.err, rm_proxy_err_text(h.err), c->st, c->err, rm_proxy_err_text(c->err));
		if (st == RM_PROXY_OK)
			assert_int_equal(h.consumed, c->len);
		if (c->err != RM_PROXY_E_NOT_PROXY)
			assert_int_equal(h.version, c->len >= 6 ? 1 : 0);
	}
}

/* v1 at exactly 107 bytes is good; at 108 it is too long as soon as 107 are in. */
static void test_v1_limit(void **state)
{
	/* 45 + 36 bytes of addresses: 11 + 45 + 1 + 36 + 1 + 5 + 1 + 5 + 2 = 107. */
	static const char at[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
				 "ffff:ffff:ffff:ffff:ffff:fff:1.2.3.4 65535 65535\r\n";
	static const char past[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
				   "ffff:ffff:ffff:ffff:ffff:ffff:1.2.3.4 65535 65535\r\n";
	char unknown[200];
	struct rm_proxy_opts o;
	struct rm_proxy_header h;

	rm_proxy_opts_default(&o);
	assert_int_equal(sizeof(at) - 1, RM_PROXY_V1_BYTES_MAX);
	assert_int_equal(parse_splits(L(at), &o, &h, NULL), RM_PROXY_OK);
	assert_int_equal(h.consumed, 107);
	assert_int_equal(h.family, AF_INET6);
	assert_int_equal(sizeof(past) - 1, RM_PROXY_V1_BYTES_MAX + 1);
	assert_int_equal(parse_splits(L(past), &o, &h, NULL), RM_PROXY_ERROR);
	assert_int_equal(h.err, RM_PROXY_E_V1_TOO_LONG);
	/* Decided at 107 bytes: the caller never needs to hold more. */
	assert_int_equal(parse_splits(past, 107, &o, &h, NULL), RM_PROXY_ERROR);
	assert_int_equal(h.err, RM_PROXY_E_V1_TOO_LONG);
	assert_int_equal(parse_splits(past, 106, &o, &h, NULL), RM_PROXY_NEED_MORE);

	/* UNKNOWN padded to 107 and 108, and far past. */
	for (size_t total = 15; total <= sizeof(unknown); total++) {
		if (total == 15) {
			memcpy(unknown, "PROXY UNKNOWN\r\n", 15);
		} else {
			memcpy(unknown, "PROXY UNKNOWN ", 14);
			memset(unknown + 14, 'x', total - 16);
			memcpy(unknown + total - 2, "\r\n", 2);
		}
		assert_int_equal(parse_splits(unknown, total, &o, &h, NULL),
				 total <= 107 ? RM_PROXY_OK : RM_PROXY_ERROR);
		assert_int_equal(h.err, total <= 107 ? RM_PROXY_E_NONE : RM_PROXY_E_V1_TOO_LONG);
		if (total <= 107) {
			assert_true(h.local);
			assert_int_equal(h.family, AF_UNSPEC);
			assert_int_equal(h.consumed, total);
		}
	}
}

static void assert_in4(const struct sockaddr_storage *ss, const char *addr, uint16_t port)
{
	const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
	struct in_addr want;

	assert_int_equal(inet_pton(AF_INET, addr, &want), 1);
	assert_int_equal(s->sin_family, AF_INET);
	assert_memory_equal(&s->sin_addr, &want, 4);
	assert_int_equal(s->sin_port, htons(port));
}

static void assert_in6(const struct sockaddr_storage *ss, const char *addr, uint16_t port)
{
	const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
	struct in6_addr want;

	assert_int_equal(inet_pton(AF_INET6, addr, &want), 1);
	assert_int_equal(s->sin6_family, AF_INET6);
	assert_memory_equal(&s->sin6_addr, &want, 16);
	assert_int_equal(s->sin6_port, htons(port));
}

static void assert_zero(const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		assert_int_equal(b[i], 0);
}

/* The values of good v1 lines, and bytes after the line left alone. */
static void test_v1_values(void **state)
{
	static const char tcp4[] = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\nEHLO x\r\n";
	static const char tcp6[] = "PROXY TCP6 2001:db8::1 ::ffff:198.51.100.2 0 65535\r\nA001 CAPA";
	static const char unk[] = "PROXY UNKNOWN\r\nPROXY TCP4 ";
	struct rm_proxy_opts o;
	struct rm_proxy_header h;

	rm_proxy_opts_default(&o);
	assert_int_equal(parse_splits(L(tcp4), &o, &h, NULL), RM_PROXY_OK);
	assert_int_equal(h.consumed, sizeof(tcp4) - 1 - 8);
	assert_int_equal(h.version, 1);
	assert_false(h.local);
	assert_int_equal(h.family, AF_INET);
	assert_in4(&h.src, "192.0.2.1", 56324);
	assert_in4(&h.dst, "198.51.100.2", 25);
	assert_null(h.authority.ptr);
	assert_false(h.ssl || h.crc32c);

	assert_int_equal(parse_splits(L(tcp6), &o, &h, NULL), RM_PROXY_OK);
	assert_int_equal(h.consumed, sizeof(tcp6) - 1 - 9);
	assert_int_equal(h.family, AF_INET6);
	assert_in6(&h.src, "2001:db8::1", 0);
	assert_in6(&h.dst, "::ffff:198.51.100.2", 65535);

	assert_int_equal(parse_splits(L(unk), &o, &h, NULL), RM_PROXY_OK);
	assert_int_equal(h.consumed, 15);
	assert_true(h.local);
	assert_int_equal(h.family, AF_UNSPEC);
	assert_zero(&h.src, sizeof(h.src));
	assert_zero(&h.dst, sizeof(h.dst));
}

/* --- v2 builder ------------------------------------------------------------------- */

static const uint8_t sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* Bitwise CRC32C, independent of the codec's table. */
static uint32_t ref_crc32c(const uint8_t *p, size_t n)
{
	uint32_t c = 0xffffffffu;

	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = c & 1 ? c >> 1 ^ 0x82f63b78u : c >> 1;
	}
	return ~c;
}

struct v2b {
	uint8_t b[16 + 65535 + 64];
	size_t n;
	size_t crc_at;	/* 0: none */
};

static void v2_start(struct v2b *v, uint8_t ver_cmd, uint8_t fam)
{
	memcpy(v->b, sig, 12);
	v->b[12] = ver_cmd;
	v->b[13] = fam;
	v->n = 16;
	v->crc_at = 0;
}

static void v2_put(struct v2b *v, const void *p, size_t n)
{
	assert_true(v->n + n <= sizeof(v->b));
	memcpy(v->b + v->n, p, n);
	v->n += n;
}

static void v2_addr4(struct v2b *v)
{
	static const uint8_t a[12] = { 192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x00, 0x19 };

	v2_put(v, a, sizeof(a));	/* 192.0.2.1:56324 -> 198.51.100.2:25 */
}

static void v2_addr6(struct v2b *v)
{
	uint8_t a[36];

	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", a), 1);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::25", a + 16), 1);
	a[32] = 0x9c;
	a[33] = 0x40;	/* 40000 */
	a[34] = 0x02;
	a[35] = 0x4b;	/* 587 */
	v2_put(v, a, sizeof(a));
}

/* A TLV of type t whose length field says len_field, with n value bytes. */
static void v2_tlv_raw(struct v2b *v, uint8_t t, size_t len_field, const void *val, size_t n)
{
	uint8_t head[3] = { t, (uint8_t)(len_field >> 8), (uint8_t)len_field };

	v2_put(v, head, 3);
	if (n)
		v2_put(v, val, n);
}

static void v2_tlv(struct v2b *v, uint8_t t, const void *val, size_t n)
{
	v2_tlv_raw(v, t, n, val, n);
}

static void v2_crc_tlv(struct v2b *v)
{
	static const uint8_t zero[4] = { 0 };

	v2_tlv(v, RM_PP2_TYPE_CRC32C, zero, 4);
	v->crc_at = v->n - 4;
}

/* Set the length field to what was put (or to len_field if not SIZE_MAX); fill the CRC. */
static size_t v2_end_len(struct v2b *v, size_t len_field)
{
	size_t body = len_field != SIZE_MAX ? len_field : v->n - 16;

	v->b[14] = (uint8_t)(body >> 8);
	v->b[15] = (uint8_t)body;
	if (v->crc_at != 0) {
		uint32_t c;

		memset(v->b + v->crc_at, 0, 4);
		c = ref_crc32c(v->b, v->n);
		v->b[v->crc_at] = (uint8_t)(c >> 24);
		v->b[v->crc_at + 1] = (uint8_t)(c >> 16);
		v->b[v->crc_at + 2] = (uint8_t)(c >> 8);
		v->b[v->crc_at + 3] = (uint8_t)c;
	}
	return v->n;
}

static size_t v2_end(struct v2b *v)
{
	return v2_end_len(v, SIZE_MAX);
}

static struct v2b vb;	/* large: not on the stack */

static void expect_v2(const struct rm_proxy_opts *o, enum rm_proxy_status want_st,
		      enum rm_proxy_err want_err, const char *what)
{
	struct rm_proxy_header h;
	enum rm_proxy_status st = parse_splits(vb.b, vb.n, o, &h, NULL);

	if (st != want_st || h.err != want_err)
		fail_msg("%s: status %d err %d (%s); want %d err %d (%s)", what, st, h.err,
			 rm_proxy_err_text(h.err), want_st, want_err, rm_proxy_err_text(want_err));
	if (st != RM_PROXY_NEED_MORE)
		assert_int_equal(h.version, 2);
	if (st == RM_PROXY_OK)
		assert_int_equal(h.consumed, vb.n);
}

static void test_v2_good(void **state)
{
	static const char sni[] = "mail.example.org";
	static const uint8_t ssl[] = { 0x07, 0, 0, 0, 0, 0x21, 0x00, 0x07, 'T', 'L', 'S', 'v', '1', '.', '3' };
	static const uint8_t custom[] = { 1, 2, 3 };
	static const char tail[] = "EHLO x\r\n";
	struct rm_proxy_opts o;
	struct rm_proxy_header h;
	uint8_t *keep;

	rm_proxy_opts_default(&o);
	/* PROXY over IPv4, with bytes of SMTP after it. */
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_end(&vb);
	v2_put(&vb, tail, sizeof(tail) - 1);
	assert_int_equal(parse_splits(vb.b, vb.n, &o, &h, NULL), RM_PROXY_OK);
	assert_int_equal(h.consumed, 28);
	assert_int_equal(h.version, 2);
	assert_false(h.local);
	assert_int_equal(h.family, AF_INET);
	assert_in4(&h.src, "192.0.2.1", 56324);
	assert_in4(&h.dst, "198.51.100.2", 25);
	assert_null(h.authority.ptr);
	assert_false(h.ssl || h.crc32c);

	/* PROXY over IPv6 with every kind of TLV and a CRC. */
	v2_start(&vb, 0x21, 0x21);
	v2_addr6(&vb);
	v2_tlv(&vb, 0x04, "\0\0\0", 3);			/* NOOP */
	v2_tlv(&vb, RM_PP2_TYPE_AUTHORITY, sni, sizeof(sni) - 1);
	v2_tlv(&vb, RM_PP2_TYPE_SSL, ssl, sizeof(ssl));
	v2_tlv(&vb, 0xe0, custom, sizeof(custom));	/* PP2_TYPE_MIN_CUSTOM */
	v2_tlv(&vb, 0x01, "smtp", 4);			/* ALPN */
	v2_tlv(&vb, 0x05, NULL, 0);			/* UNIQUE_ID, empty */
	v2_crc_tlv(&vb);
	v2_end(&vb);
	assert_int_equal(parse_splits(vb.b, vb.n, &o, &h, &keep), RM_PROXY_OK);
	assert_int_equal(h.consumed, vb.n);
	assert_int_equal(h.family, AF_INET6);
	assert_in6(&h.src, "2001:db8::1", 40000);
	assert_in6(&h.dst, "2001:db8::25", 587);
	assert_int_equal(h.authority.len, sizeof(sni) - 1);
	assert_memory_equal(h.authority.ptr, sni, sizeof(sni) - 1);
	assert_true(h.authority.ptr > keep && h.authority.ptr + h.authority.len <= keep + vb.n);
	assert_true(h.ssl && h.crc32c);
	free(keep);

	/* SSL without the client bit; an SSL TLV of just its fixed 5 bytes. */
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_SSL, "\x06\0\0\0\0", 5);
	v2_end(&vb);
	assert_int_equal(parse_splits(vb.b, vb.n, &o, &h, NULL), RM_PROXY_OK);
	assert_false(h.ssl);

	/* LOCAL: the socket's addresses are kept, whatever the block says. */
	v2_start(&vb, 0x20, 0x00);
	v2_end(&vb);
	assert_int_equal(parse_splits(vb.b, vb.n, &o, &h, NULL), RM_PROXY_OK);
	assert_true(h.local);
	assert_int_equal(h.family, AF_UNSPEC);
	assert_int_equal(h.consumed, 16);
	v2_start(&vb, 0x20, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_AUTHORITY, "a", 1);
	v2_crc_tlv(&vb);
	v2_end(&vb);
	assert_int_equal(parse_splits(vb.b, vb.n, &o, &h, NULL), RM_PROXY_OK);
	assert_true(h.local && h.crc32c);
	assert_int_equal(h.family, AF_UNSPEC);
	assert_zero(&h.src, sizeof(h.src));
	assert_int_equal(h.authority.len, 1);
	v2_start(&vb, 0x20, 0x21);
	v2_addr6(&vb);
	v2_end(&vb);
	assert_int_equal(parse_splits(vb.b, vb.n, &o, &h, NULL), RM_PROXY_OK);
	assert_true(h.local);

	/* PROXY with UNSPEC: like LOCAL; TLVs start right after the fixed part. */
	v2_start(&vb, 0x21, 0x00);
	v2_tlv(&vb, RM_PP2_TYPE_AUTHORITY, "b", 1);
	v2_end(&vb);
	assert_int_equal(parse_splits(vb.b, vb.n, &o, &h, NULL), RM_PROXY_OK);
	assert_true(h.local);
	assert_int_equal(h.authority.len, 1);

	/* An address block longer than the family's, holding no TLV: the extra bytes are TLVs. */
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, 0x04, NULL, 0);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_OK, RM_PROXY_E_NONE, "IPv4 + empty NOOP");
}

/* A published header: AWS NLB's (elastic-load-balancing-tools, proprot tests), CRC32C included. */
static void test_v2_aws(void **state)
{
	static const uint8_t aws[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21, 0x11, 0x00, 0x54,
		0xac, 0x1f, 0x07, 0x71, 0xac, 0x1f, 0x0a, 0x1f, 0xc8, 0xf2, 0x00, 0x50,
		0x03, 0x00, 0x04, 0xe8, 0xd6, 0x89, 0x2d,
		0xea, 0x00, 0x17, 0x01, 'v', 'p', 'c', 'e', '-', '0', '8', 'd', '2', 'b', 'f', '1', '5',
		'f', 'a', 'c', '5', '0', '0', '1', 'c', '9',
		0x04, 0x00, 0x24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	};
	uint8_t bad[sizeof(aws)];
	struct rm_proxy_opts o;
	struct rm_proxy_header h;

	rm_proxy_opts_default(&o);
	assert_int_equal(sizeof(aws), 16 + 0x54);
	assert_int_equal(parse_splits(aws, sizeof(aws), &o, &h, NULL), RM_PROXY_OK);
	assert_true(h.crc32c);
	assert_in4(&h.src, "172.31.7.113", 51442);
	assert_in4(&h.dst, "172.31.10.31", 80);
	memcpy(bad, aws, sizeof(aws));
	bad[sizeof(bad) - 1] ^= 1;	/* inside the NOOP padding: only the CRC can tell */
	assert_int_equal(parse_splits(bad, sizeof(bad), &o, &h, NULL), RM_PROXY_ERROR);
	assert_int_equal(h.err, RM_PROXY_E_V2_CRC);
}

static void test_v2_errors(void **state)
{
	static const uint8_t vercmds_bad_version[] = { 0x01, 0x11, 0x31, 0xf1, 0x00, 0x10 };
	static const uint8_t vercmds_bad_command[] = { 0x22, 0x23, 0x2f };
	static const uint8_t fams_bad_family[] = { 0x31, 0x32, 0x30, 0x41, 0x51, 0xf1 };
	static const uint8_t fams_bad_transport[] = { 0x12, 0x22, 0x10, 0x20, 0x13, 0x1f, 0x01, 0x02 };
	uint8_t big[300];
	struct rm_proxy_opts o;

	rm_proxy_opts_default(&o);
	memset(big, 'a', sizeof(big));
	for (size_t i = 0; i < sizeof(vercmds_bad_version); i++) {
		v2_start(&vb, vercmds_bad_version[i], 0x11);
		v2_addr4(&vb);
		v2_end(&vb);
		expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_VERSION, "version");
	}
	for (size_t i = 0; i < sizeof(vercmds_bad_command); i++) {
		v2_start(&vb, vercmds_bad_command[i], 0x11);
		v2_addr4(&vb);
		v2_end(&vb);
		expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_COMMAND, "command");
	}
	for (size_t i = 0; i < sizeof(fams_bad_family); i++) {
		v2_start(&vb, 0x21, fams_bad_family[i]);
		v2_put(&vb, big, 216);	/* what AF_UNIX would need */
		v2_end(&vb);
		expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_FAMILY, "family");
		v2_start(&vb, 0x20, fams_bad_family[i]);	/* LOCAL too */
		v2_end(&vb);
		expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_FAMILY, "LOCAL family");
	}
	for (size_t i = 0; i < sizeof(fams_bad_transport); i++) {
		v2_start(&vb, 0x21, fams_bad_transport[i]);
		v2_addr6(&vb);
		v2_end(&vb);
		expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TRANSPORT, "transport");
	}
	/* Address block short by one. */
	v2_start(&vb, 0x21, 0x11);
	v2_put(&vb, big, 11);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_ADDR_SHORT, "IPv4 11 bytes");
	v2_start(&vb, 0x21, 0x21);
	v2_put(&vb, big, 35);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_ADDR_SHORT, "IPv6 35 bytes");
	v2_start(&vb, 0x20, 0x21);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_ADDR_SHORT, "LOCAL IPv6 0 bytes");

	/* TLV header cut: 1 and 2 bytes left. */
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_put(&vb, "\x04", 1);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_TRUNCATED, "TLV 1 byte");
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_put(&vb, "\x04\x00", 2);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_TRUNCATED, "TLV 2 bytes");
	/* A value one byte past the end, and the same TLV fitting exactly. */
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv_raw(&vb, 0x04, 5, big, 4);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_TRUNCATED, "TLV value +1");
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv_raw(&vb, 0x04, 4, big, 4);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_OK, RM_PROXY_E_NONE, "TLV value exact");
	/* The length field cuts a TLV that the bytes after the header would complete. */
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv_raw(&vb, 0x04, 4, big, 4);
	v2_end_len(&vb, 12 + 6);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_TRUNCATED, "length cuts a TLV");
	/* An SSL sub-TLV past the SSL TLV's end (but not the header's). */
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_SSL, "\x01\0\0\0\0\x22\x00\x05" "abcd", 12);
	v2_tlv(&vb, 0x04, "xx", 2);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_TRUNCATED, "SSL sub-TLV +1");
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_SSL, "\x01\0\0\0\0\x22\x00", 7);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_TRUNCATED, "SSL sub-TLV head cut");

	/* Lengths of the TLVs that are read. */
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_AUTHORITY, NULL, 0);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_LENGTH, "authority empty");
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_AUTHORITY, big, 256);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_LENGTH, "authority 256");
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_AUTHORITY, big, 255);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_OK, RM_PROXY_E_NONE, "authority 255");
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_CRC32C, big, 3);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_LENGTH, "CRC 3 bytes");
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_CRC32C, big, 5);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_LENGTH, "CRC 5 bytes");
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_SSL, "\x01\0\0\0", 4);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_LENGTH, "SSL 4 bytes");

	/* Twice. */
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_AUTHORITY, "a", 1);
	v2_tlv(&vb, RM_PP2_TYPE_AUTHORITY, "a", 1);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_DUP, "authority twice");
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_SSL, "\x01\0\0\0\0", 5);
	v2_tlv(&vb, RM_PP2_TYPE_SSL, "\x01\0\0\0\0", 5);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_DUP, "SSL twice");
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_crc_tlv(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TLV_DUP, "CRC twice");
}

/* The length at the limit and one past; the limit clamped to the field's 65535. */
static void test_v2_length(void **state)
{
	static uint8_t pad[65535];
	struct rm_proxy_opts o;
	struct rm_proxy_header h;

	rm_proxy_opts_default(&o);
	assert_int_equal(o.v2_bytes_max, RM_PROXY_V2_BYTES_MAX_DEFAULT);
	for (size_t body = 12 + 3; body <= 520; body++) {
		v2_start(&vb, 0x21, 0x11);
		v2_addr4(&vb);
		v2_tlv(&vb, RM_PP2_TYPE_NOOP, pad, body - 12 - 3);
		v2_end(&vb);
		if (body < 500) {	/* every split of each is slow: the ends only */
			assert_int_equal(rm_proxy_parse(vb.b, vb.n, &o, &h), RM_PROXY_OK);
			continue;
		}
		expect_v2(&o, body <= 512 ? RM_PROXY_OK : RM_PROXY_ERROR,
			  body <= 512 ? RM_PROXY_E_NONE : RM_PROXY_E_V2_TOO_LONG, "length vs 512");
	}
	/* Refused as soon as the 16 bytes say so. */
	assert_int_equal(rm_proxy_parse(vb.b, 16, &o, &h), RM_PROXY_ERROR);
	assert_int_equal(h.err, RM_PROXY_E_V2_TOO_LONG);
	assert_int_equal(rm_proxy_parse(vb.b, 15, &o, &h), RM_PROXY_NEED_MORE);

	o.v2_bytes_max = 12;
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_OK, RM_PROXY_E_NONE, "12 at 12");
	v2_start(&vb, 0x21, 0x21);
	v2_addr6(&vb);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_TOO_LONG, "36 past 12");
	o.v2_bytes_max = 0;
	v2_start(&vb, 0x20, 0x00);
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_OK, RM_PROXY_E_NONE, "LOCAL at 0");

	/* The whole 65535: one NOOP TLV after the addresses. */
	for (int pass = 0; pass < 2; pass++) {
		uint8_t *copy;

		o.v2_bytes_max = pass == 0 ? 65535 : SIZE_MAX;
		v2_start(&vb, 0x21, 0x11);
		v2_addr4(&vb);
		v2_tlv(&vb, RM_PP2_TYPE_NOOP, pad, 65535 - 12 - 3);
		v2_crc_tlv(&vb);	/* past the end: then the length is 65535 + 7 */
		vb.n -= 7;
		vb.crc_at = 0;
		v2_end(&vb);
		assert_int_equal(vb.n, 16 + 65535);
		copy = heap_copy(vb.b, vb.n);
		assert_int_equal(rm_proxy_parse(copy, vb.n, &o, &h), RM_PROXY_OK);
		assert_int_equal(h.consumed, 16 + 65535);
		assert_int_equal(rm_proxy_parse(copy, vb.n - 1, &o, &h), RM_PROXY_NEED_MORE);
		free(copy);
	}
	o.v2_bytes_max = 65534;
	assert_int_equal(rm_proxy_parse(vb.b, 16, &o, &h), RM_PROXY_ERROR);
	assert_int_equal(h.err, RM_PROXY_E_V2_TOO_LONG);
}

/* The TLV count at its limit and one past, SSL sub-TLVs counted too. */
static void test_v2_tlv_count(void **state)
{
	struct rm_proxy_opts o;

	rm_proxy_opts_default(&o);
	for (unsigned n = RM_PROXY_V2_TLVS_MAX - 1; n <= RM_PROXY_V2_TLVS_MAX + 1; n++) {
		v2_start(&vb, 0x21, 0x11);
		v2_addr4(&vb);
		for (unsigned i = 0; i < n; i++)
			v2_tlv(&vb, RM_PP2_TYPE_NOOP, NULL, 0);
		v2_end(&vb);
		expect_v2(&o, n <= RM_PROXY_V2_TLVS_MAX ? RM_PROXY_OK : RM_PROXY_ERROR,
			  n <= RM_PROXY_V2_TLVS_MAX ? RM_PROXY_E_NONE : RM_PROXY_E_V2_TLV_COUNT, "count");
	}
	for (unsigned subs = RM_PROXY_V2_TLVS_MAX - 1; subs <= RM_PROXY_V2_TLVS_MAX; subs++) {
		uint8_t ssl[5 + 3 * RM_PROXY_V2_TLVS_MAX] = { 0x01 };

		for (unsigned i = 0; i < subs; i++)
			ssl[5 + 3 * i] = 0x21;
		v2_start(&vb, 0x21, 0x11);
		v2_addr4(&vb);
		v2_tlv(&vb, RM_PP2_TYPE_SSL, ssl, 5 + 3 * subs);
		v2_end(&vb);
		expect_v2(&o, subs < RM_PROXY_V2_TLVS_MAX ? RM_PROXY_OK : RM_PROXY_ERROR,
			  subs < RM_PROXY_V2_TLVS_MAX ? RM_PROXY_E_NONE : RM_PROXY_E_V2_TLV_COUNT,
			  "SSL sub count");
	}
}

static void test_crc32c(void **state)
{
	uint8_t data[1000];
	struct rm_proxy_opts o;
	struct rm_proxy_header h;

	/* The check value of CRC-32C (Castagnoli). */
	assert_int_equal(rm_proxy_crc32c((const uint8_t *)"123456789", 9), 0xe3069283u);
	assert_int_equal(ref_crc32c((const uint8_t *)"123456789", 9), 0xe3069283u);
	assert_int_equal(rm_proxy_crc32c(NULL, 0), 0);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + (i >> 3));
	for (size_t n = 0; n <= sizeof(data); n += 37)
		assert_int_equal(rm_proxy_crc32c(data, n), ref_crc32c(data, n));

	rm_proxy_opts_default(&o);
	v2_start(&vb, 0x21, 0x21);
	v2_addr6(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_AUTHORITY, "mx.example", 10);
	v2_crc_tlv(&vb);
	v2_tlv(&vb, RM_PP2_TYPE_NOOP, "pad", 3);	/* the CRC covers what follows it too */
	v2_end(&vb);
	expect_v2(&o, RM_PROXY_OK, RM_PROXY_E_NONE, "CRC right");
	/*
	 * Every single bit flipped in ver_cmd, fam or after the fixed part is
	 * noticed, but one: the CRC TLV's own type byte turned into a type that
	 * is skipped leaves nothing to check (the protocol's limit, not ours).
	 * The length bytes are left out: a longer length is NEED_MORE.
	 */
	for (size_t bit = 12 * 8; bit < vb.n * 8; bit++) {
		uint8_t *copy;
		enum rm_proxy_status st;

		if (bit / 8 == 14 || bit / 8 == 15)
			continue;
		copy = heap_copy(vb.b, vb.n);
		copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		st = rm_proxy_parse(copy, vb.n, &o, &h);
		free(copy);
		if (st == RM_PROXY_OK && bit / 8 == vb.crc_at - 3 && !h.crc32c)
			continue;
		if (st != RM_PROXY_ERROR)
			fail_msg("bit %zu flipped: status %d", bit, st);
	}
	/* The CRC wrong by one, in each byte of its value. */
	for (size_t k = 0; k < 4; k++) {
		uint8_t *copy = heap_copy(vb.b, vb.n);

		copy[vb.crc_at + k] ^= 0x80;
		assert_int_equal(rm_proxy_parse(copy, vb.n, &o, &h), RM_PROXY_ERROR);
		assert_int_equal(h.err, RM_PROXY_E_V2_CRC);
		assert_null(h.authority.ptr);
		free(copy);
	}
	memcpy(vb.b + vb.crc_at, "\0\0\0\0", 4);	/* zero is not "no CRC" */
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_V2_CRC, "CRC zero");
}

/* Signatures, the version mask, and what is refused before any version is known. */
static void test_versions(void **state)
{
	static const char v1[] = "PROXY TCP4 192.0.2.1 198.51.100.2 1 2\r\n";
	struct rm_proxy_opts o;
	struct rm_proxy_header h;

	rm_proxy_opts_default(&o);
	assert_int_equal(rm_proxy_parse((const uint8_t *)"", 0, &o, &h), RM_PROXY_NEED_MORE);
	assert_int_equal(h.version, 0);
	assert_int_equal(rm_proxy_parse((const uint8_t *)"E", 1, &o, &h), RM_PROXY_ERROR);
	assert_int_equal(h.err, RM_PROXY_E_NOT_PROXY);
	assert_int_equal(h.version, 0);
	/* Every first byte but the two signatures' is refused at once. */
	for (unsigned b = 0; b < 256; b++) {
		uint8_t c = (uint8_t)b;

		assert_int_equal(rm_proxy_parse(&c, 1, &o, &h),
				 b == 'P' || b == '\r' ? RM_PROXY_NEED_MORE : RM_PROXY_ERROR);
	}
	v2_start(&vb, 0x21, 0x11);
	v2_addr4(&vb);
	v2_end(&vb);

	o.versions = RM_PROXY_V2;
	assert_int_equal(parse_splits(L(v1), &o, &h, NULL), RM_PROXY_ERROR);
	assert_int_equal(h.err, RM_PROXY_E_VERSION_OFF);
	assert_int_equal(h.version, 1);
	assert_int_equal(rm_proxy_parse((const uint8_t *)"PROXY", 5, &o, &h), RM_PROXY_NEED_MORE);
	assert_int_equal(rm_proxy_parse((const uint8_t *)"PROXY ", 6, &o, &h), RM_PROXY_ERROR);
	assert_int_equal(rm_proxy_parse((const uint8_t *)"PRX", 3, &o, &h), RM_PROXY_ERROR);
	assert_int_equal(h.err, RM_PROXY_E_NOT_PROXY);
	expect_v2(&o, RM_PROXY_OK, RM_PROXY_E_NONE, "v2 on a v2 listener");

	o.versions = RM_PROXY_V1;
	expect_v2(&o, RM_PROXY_ERROR, RM_PROXY_E_VERSION_OFF, "v2 on a v1 listener");
	assert_int_equal(rm_proxy_parse(vb.b, 11, &o, &h), RM_PROXY_NEED_MORE);
	assert_int_equal(parse_splits(L(v1), &o, &h, NULL), RM_PROXY_OK);

	o.versions = 0;
	assert_int_equal(parse_splits(L(v1), &o, &h, NULL), RM_PROXY_ERROR);
	assert_int_equal(h.err, RM_PROXY_E_VERSION_OFF);
}

/* --- address parsers against inet_pton ------------------------------------------ */

static void check_addr(int family, const char *text)
{
	char line[256];
	uint8_t want[16];
	int n = snprintf(line, sizeof(line), "PROXY %s %s %s 1 2\r\n", family == AF_INET ? "TCP4" : "TCP6",
			 text, family == AF_INET ? "1.1.1.1" : "::1");
	int good = inet_pton(family, text, want);
	struct rm_proxy_opts o;
	struct rm_proxy_header h;
	enum rm_proxy_status st;

	assert_true(n > 0 && (size_t)n < sizeof(line) && n <= (int)RM_PROXY_V1_BYTES_MAX);
	rm_proxy_opts_default(&o);
	st = parse_splits(line, (size_t)n, &o, &h, NULL);
	if ((st == RM_PROXY_OK) != (good == 1))
		fail_msg("%s '%s': parser %s, inet_pton %d", family == AF_INET ? "IPv4" : "IPv6", text,
			 st == RM_PROXY_OK ? "accepts" : rm_proxy_err_text(h.err), good);
	if (st == RM_PROXY_OK) {
		if (family == AF_INET)
			assert_memory_equal(&((struct sockaddr_in *)&h.src)->sin_addr, want, 4);
		else
			assert_memory_equal(&((struct sockaddr_in6 *)&h.src)->sin6_addr, want, 16);
	}
}

static void test_addresses(void **state)
{
	static const char *const v4[] = {
		"0.0.0.0", "1.2.3.4", "255.255.255.255", "10.0.0.10", "100.200.250.199",
		"256.1.1.1", "1.2.3.256", "01.2.3.4", "1.2.3.04", "1.2.3", "1.2.3.4.5", "1..3.4",
		"1.2.3.", ".1.2.3", "1234.1.1.1", "1.2.3.0000", "0.0.0.00", "a.b.c.d", "1.2.3.4a",
	};
	static const char *const v6[] = {
		"::", "::1", "1::", "1::2", "::ffff:1.2.3.4", "::1.2.3.4", "1:2:3:4:5:6:7:8",
		"1:2:3:4:5:6:1.2.3.4", "1::3:4:5:6:7:8", "1:2:3:4:5:6::8", "1:2:3:4:5:6:7::",
		"::2:3:4:5:6:7:8", "FFFF:abcd:EF01:2345:6789:0:0:0", "0000:0000:0000:0000:0000:0000:0000:0000",
		"1::2:3:4:5:6:1.2.3.4", "::1:2:3:4:5:1.2.3.4", "1:2:3:4:5::1.2.3.4", "fe80::1:2",
		":", ":::", "1:::2", ":1", "1:", "1::2::3", "12345::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9",
		"1:2:3:4:5:6:7:8:", ":1:2:3:4:5:6:7:8", "1::2:3:4:5:6:7:8", "::1:2:3:4:5:6:7:8",
		"1:2:3:4:5:6:7:1.2.3.4", "::1:2:3:4:5:6:1.2.3.4", "1.2.3.4", "::1.2.3", "::1.2.3.4.5",
		"::01.2.3.4", "::256.1.1.1", "::1.2.3.4:1", "1:2:3:4:5:6:7:8::", "::ffff:1.2.3.4.",
		"1::1.2.3.4::", "::a.b.c.d", "::1234.1.1.1", "0::0", "1:2:3:4::5:6:7",
	};

	for (size_t i = 0; i < sizeof(v4) / sizeof(v4[0]); i++)
		check_addr(AF_INET, v4[i]);
	for (size_t i = 0; i < sizeof(v6) / sizeof(v6[0]); i++)
		check_addr(AF_INET6, v6[i]);
}

/* --- writers ---------------------------------------------------------------------- */

static void sa4(struct sockaddr_storage *ss, const char *addr, uint16_t port)
{
	struct sockaddr_in *s = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof(*ss));
	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, addr, &s->sin_addr), 1);
}

static void sa6(struct sockaddr_storage *ss, const char *addr, uint16_t port)
{
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	s->sin6_family = AF_INET6;
	s->sin6_port = htons(port);
	assert_int_equal(inet_pton(AF_INET6, addr, &s->sin6_addr), 1);
}

/* Write both versions into buffers of every size up to the length; parse back. */
static void round_trip(const struct sockaddr_storage *src, const struct sockaddr_storage *dst,
		       const char *want_v1, int want_family)
{
	char v1[RM_PROXY_V1_BYTES_MAX];
	uint8_t v2[RM_PROXY_V2_WRITE_BYTES_MAX];
	struct rm_proxy_opts o;
	struct rm_proxy_header h;
	ssize_t n1 = rm_proxy_write_v1((const struct sockaddr *)src, (const struct sockaddr *)dst, v1,
				       sizeof(v1));
	ssize_t n2 = rm_proxy_write_v2((const struct sockaddr *)src, (const struct sockaddr *)dst, v2,
				       sizeof(v2));

	rm_proxy_opts_default(&o);
	assert_true(n1 > 0 && n2 >= 16);
	if (want_v1 != NULL) {
		assert_int_equal(n1, strlen(want_v1));
		assert_memory_equal(v1, want_v1, (size_t)n1);
	}
	for (size_t cap = 0; cap < (size_t)n1; cap++) {
		char *b = malloc(cap ? cap : 1);

		assert_int_equal(rm_proxy_write_v1((const struct sockaddr *)src, (const struct sockaddr *)dst,
						   b, cap), -1);
		free(b);
	}
	for (size_t cap = 0; cap < (size_t)n2; cap++) {
		uint8_t *b = malloc(cap ? cap : 1);

		assert_int_equal(rm_proxy_write_v2((const struct sockaddr *)src, (const struct sockaddr *)dst,
						   b, cap), -1);
		free(b);
	}
	for (int version = 1; version <= 2; version++) {
		const void *p = version == 1 ? (const void *)v1 : (const void *)v2;
		size_t n = (size_t)(version == 1 ? n1 : n2);

		assert_int_equal(parse_splits(p, n, &o, &h, NULL), RM_PROXY_OK);
		assert_int_equal(h.consumed, n);
		assert_int_equal(h.version, version);
		assert_int_equal(h.family, want_family);
		assert_int_equal(h.local, want_family == AF_UNSPEC);
		if (want_family == AF_INET || (want_family == AF_INET6 && src->ss_family == AF_INET6 &&
					       dst->ss_family == AF_INET6)) {
			assert_memory_equal(&h.src, src, sizeof(h.src));
			assert_memory_equal(&h.dst, dst, sizeof(h.dst));
		}
	}
}

static void test_writers(void **state)
{
	struct sockaddr_storage a, b, u;
	struct rm_proxy_opts o;
	struct rm_proxy_header h;
	char v1[RM_PROXY_V1_BYTES_MAX];
	uint8_t v2[RM_PROXY_V2_WRITE_BYTES_MAX];
	ssize_t n;

	sa4(&a, "192.0.2.1", 56324);
	sa4(&b, "198.51.100.2", 25);
	round_trip(&a, &b, "PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n", AF_INET);
	sa4(&a, "0.0.0.0", 0);
	sa4(&b, "255.255.255.255", 65535);
	round_trip(&a, &b, "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", AF_INET);
	sa6(&a, "2001:db8::1", 40000);
	sa6(&b, "2001:db8::25", 587);
	round_trip(&a, &b, "PROXY TCP6 2001:db8::1 2001:db8::25 40000 587\r\n", AF_INET6);
	sa6(&a, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
	sa6(&b, "::ffff:255.255.255.255", 65535);
	round_trip(&a, &b, "PROXY TCP6 " F39 " ::ffff:255.255.255.255 65535 65535\r\n", AF_INET6);
	sa6(&a, "::", 1);
	sa6(&b, "::2:3", 2);	/* inet_ntop writes it as ::0.2.0.3 */
	round_trip(&a, &b, NULL, AF_INET6);

	/* One of each family: TCP6 with the IPv4 one mapped. */
	sa4(&a, "192.0.2.1", 1);
	sa6(&b, "2001:db8::25", 2);
	round_trip(&a, &b, "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::25 1 2\r\n", AF_INET6);
	rm_proxy_opts_default(&o);
	n = rm_proxy_write_v2((const struct sockaddr *)&a, (const struct sockaddr *)&b, v2, sizeof(v2));
	assert_int_equal(rm_proxy_parse(v2, (size_t)n, &o, &h), RM_PROXY_OK);
	assert_in6(&h.src, "::ffff:192.0.2.1", 1);
	assert_in6(&h.dst, "2001:db8::25", 2);

	/* Unknown: NULL or a family not written. */
	memset(&u, 0, sizeof(u));
	u.ss_family = AF_UNIX;
	round_trip(&a, &u, "PROXY UNKNOWN\r\n", AF_UNSPEC);
	n = rm_proxy_write_v1(NULL, (const struct sockaddr *)&b, v1, sizeof(v1));
	assert_int_equal(n, 15);
	assert_memory_equal(v1, "PROXY UNKNOWN\r\n", 15);
	n = rm_proxy_write_v2((const struct sockaddr *)&a, NULL, v2, sizeof(v2));
	assert_int_equal(n, 16);
	assert_int_equal(v2[12], 0x20);
	assert_int_equal(v2[13], 0x00);
}

static void test_err_texts(void **state)
{
	bool missing = false;

	for (int a = 0; a < RM_PROXY_E_COUNT; a++) {
		const char *t = rm_proxy_err_text((enum rm_proxy_err)a);

		assert_non_null(t);
		assert_true(strlen(t) > 0);
		for (int b = 0; b < a; b++)
			assert_string_not_equal(t, rm_proxy_err_text((enum rm_proxy_err)b));
	}
	/* Run last: every error some case above produced. */
	for (int e = 1; e < RM_PROXY_E_COUNT; e++)
		if (!seen_err[e]) {
			print_error("no case gives error %d (%s)\n", e, rm_proxy_err_text((enum rm_proxy_err)e));
			missing = true;
		}
	assert_false(missing);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_table),
		cmocka_unit_test(test_v1_limit),
		cmocka_unit_test(test_v1_values),
		cmocka_unit_test(test_v2_good),
		cmocka_unit_test(test_v2_aws),
		cmocka_unit_test(test_v2_errors),
		cmocka_unit_test(test_v2_length),
		cmocka_unit_test(test_v2_tlv_count),
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_versions),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_writers),
		cmocka_unit_test(test_err_texts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
