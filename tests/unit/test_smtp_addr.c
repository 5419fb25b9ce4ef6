/*
 * NAME
 *	test_smtp_addr - unit tests of proto/smtp_addr
 * DESCRIPTION
 *	A table of paths (RFC 5321 and RFC 3696 examples, quoted local parts
 *	and their escapes, the null path, source routes, bare postmaster,
 *	address literals, UTF-8 with and without SMTPUTF8, every length limit
 *	at its maximum and one past it) with the error or the parse each must
 *	give; each good one is rendered in canonical form, which must parse
 *	again to the same content, and every proper prefix of it must fail
 *	without reading past its end.  IPv4 and IPv6 literals are checked
 *	against the C library's inet_pton on a list of forms and on every
 *	string of up to 7 (IPv6) or 8 (IPv4) characters over a small
 *	alphabet.  Inputs are heap copies of exact size, so ASan sees any read
 *	past them.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/smtp_addr.h"

#define NUL_OK RM_SMTP_ADDR_NULL_OK
#define UTF8 RM_SMTP_ADDR_UTF8
#define PM RM_SMTP_ADDR_POSTMASTER
#define TDOT RM_SMTP_ADDR_TRAILING_DOT

/* Extra facts of a good parse. */
#define X_ROUTE 0x100u
#define X_BARE 0x200u
#define X_QUOTED 0x400u
#define X_UTF8 0x800u
#define X_NULL 0x1000u
#define X_TDOT 0x2000u

struct path_case {
	const char *in;
	size_t in_len;
	const char *content;		/* unquoted local part */
	const char *domain;		/* as written */
	const char *render;		/* canonical mailbox */
	unsigned flags;
	enum rm_smtp_addr_err err;
	enum rm_smtp_domain_kind kind;
	unsigned extra;			/* X_* | RM_SMTP_LOCAL_* */
};

#define IN(s) .in = (s), .in_len = sizeof(s) - 1
#define BAD(s, fl, e) { IN(s), .flags = (fl), .err = (e) }
#define OK(s, fl, c, d, k, r, x) \
	{ IN(s), .flags = (fl), .err = RM_SMTP_ADDR_OK, .content = (c), .domain = (d), \
	  .kind = (k), .render = (r), .extra = (x) }
#define NAME RM_SMTP_DOMAIN_NAME
#define V4 RM_SMTP_DOMAIN_IPV4
#define V6 RM_SMTP_DOMAIN_IPV6
#define NONE RM_SMTP_DOMAIN_NONE

static const struct path_case cases[] = {
	/* Plain and RFC 3696 section 3 examples (in their RFC 5321 forms). */
	OK("<user@example.org>", 0, "user", "example.org", NAME, "user@example.org", 0),
	OK("<Smith@bar.com>", 0, "Smith", "bar.com", NAME, "Smith@bar.com", 0),
	OK("<a.b.c@x.y.z>", 0, "a.b.c", "x.y.z", NAME, "a.b.c@x.y.z", 0),
	OK("<\"Abc\\@def\"@example.com>", 0, "Abc@def", "example.com", NAME,
	   "\"Abc@def\"@example.com", X_QUOTED | RM_SMTP_LOCAL_AT),
	OK("<\"Fred\\ Bloggs\"@example.com>", 0, "Fred Bloggs", "example.com", NAME,
	   "\"Fred Bloggs\"@example.com", X_QUOTED),
	OK("<\"Joe.\\\\Blow\"@example.com>", 0, "Joe.\\Blow", "example.com", NAME,
	   "\"Joe.\\\\Blow\"@example.com", X_QUOTED),
	OK("<\"Abc@def\"@example.com>", 0, "Abc@def", "example.com", NAME,
	   "\"Abc@def\"@example.com", X_QUOTED | RM_SMTP_LOCAL_AT),
	OK("<customer/department=shipping@example.com>", 0, "customer/department=shipping",
	   "example.com", NAME, "customer/department=shipping@example.com", 0),
	OK("<$A12345@example.com>", 0, "$A12345", "example.com", NAME, "$A12345@example.com", 0),
	OK("<!def!xyz%abc@example.com>", 0, "!def!xyz%abc", "example.com", NAME,
	   "!def!xyz%abc@example.com", RM_SMTP_LOCAL_BANG | RM_SMTP_LOCAL_PERCENT),
	OK("<_somename@example.com>", 0, "_somename", "example.com", NAME,
	   "_somename@example.com", 0),
	OK("<#$&'*+-/=?^_`{|}~@x>", 0, "#$&'*+-/=?^_`{|}~", "x", NAME,
	   "#$&'*+-/=?^_`{|}~@x", 0),
	BAD("<Abc\\@def@example.com>", 0, RM_SMTP_ADDR_E_NO_AT),
	BAD("<Fred Bloggs@example.com>", 0, RM_SMTP_ADDR_E_NO_AT),
	/* Quoted strings: canonical form drops needless quotes and escapes. */
	OK("<\"abc\"@example.org>", 0, "abc", "example.org", NAME, "abc@example.org", X_QUOTED),
	OK("<\"\\a\\b\\c\"@x>", 0, "abc", "x", NAME, "abc@x", X_QUOTED),
	OK("<\"a\\\"b\"@x.y>", 0, "a\"b", "x.y", NAME, "\"a\\\"b\"@x.y", X_QUOTED),
	OK("<\"\"@x>", 0, "", "x", NAME, "\"\"@x", X_QUOTED),
	OK("<\"a..b\"@x>", 0, "a..b", "x", NAME, "\"a..b\"@x", X_QUOTED),
	OK("<\".a\"@x>", 0, ".a", "x", NAME, "\".a\"@x", X_QUOTED),
	OK("<\"a.\"@x>", 0, "a.", "x", NAME, "\"a.\"@x", X_QUOTED),
	OK("<\"a b\"@x>", 0, "a b", "x", NAME, "\"a b\"@x", X_QUOTED),
	OK("<\"<>[]:,;\"@x>", 0, "<>[]:,;", "x", NAME, "\"<>[]:,;\"@x", X_QUOTED),
	OK("<\"~\\~\"@x>", 0, "~~", "x", NAME, "~~@x", X_QUOTED),
	BAD("<\"abc@x>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<\"abc>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<\"a\x01\"@x>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<\"a\x7f\"@x>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<\"a\\\x01\"@x>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<\"a\\\"@x>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<\"a\\", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<\"a\"b@x>", 0, RM_SMTP_ADDR_E_NO_AT),
	BAD("<a\"b\"@x>", 0, RM_SMTP_ADDR_E_NO_AT),
	/* Dot-strings. */
	BAD("<.a@x>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<a.@x>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<a..b@x>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<@x>", 0, RM_SMTP_ADDR_E_ROUTE),
	BAD("<(comment)a@x>", 0, RM_SMTP_ADDR_E_LOCAL),
	/* Null path and brackets. */
	OK("<>", NUL_OK, NULL, "", NONE, "", X_NULL),
	BAD("<>", 0, RM_SMTP_ADDR_E_NULL),
	BAD("", 0, RM_SMTP_ADDR_E_NO_OPEN),
	BAD("user@x", 0, RM_SMTP_ADDR_E_NO_OPEN),
	BAD(" <user@x>", 0, RM_SMTP_ADDR_E_NO_OPEN),
	BAD("<", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<user@x", 0, RM_SMTP_ADDR_E_NO_CLOSE),
	BAD("<user@x y>", 0, RM_SMTP_ADDR_E_NO_CLOSE),
	BAD("<user@x_y>", 0, RM_SMTP_ADDR_E_NO_CLOSE),
	BAD("<user>", 0, RM_SMTP_ADDR_E_NO_AT),
	BAD("< user@x>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<user@x >", 0, RM_SMTP_ADDR_E_NO_CLOSE),
	BAD("<user@>", 0, RM_SMTP_ADDR_E_DOMAIN),
	BAD("<<user@x>>", 0, RM_SMTP_ADDR_E_LOCAL),
	/* Source routes: accepted, checked, ignored. */
	OK("<@hosta.int,@jkl.org:userc@d.bar.org>", 0, "userc", "d.bar.org", NAME,
	   "userc@d.bar.org", X_ROUTE),
	OK("<@foo.bar.com:Smith@bar.com>", 0, "Smith", "bar.com", NAME, "Smith@bar.com", X_ROUTE),
	BAD("<@a,b:u@d>", 0, RM_SMTP_ADDR_E_ROUTE),
	BAD("<@a u@d>", 0, RM_SMTP_ADDR_E_ROUTE),
	BAD("<@a:>", 0, RM_SMTP_ADDR_E_LOCAL),
	BAD("<@:u@d>", 0, RM_SMTP_ADDR_E_ROUTE),
	BAD("<@a,:u@d>", 0, RM_SMTP_ADDR_E_ROUTE),
	BAD("<@a,@b>", 0, RM_SMTP_ADDR_E_ROUTE),
	BAD("<@[192.0.2.1]:u@d>", 0, RM_SMTP_ADDR_E_ROUTE),
	BAD("<@-a:u@d>", 0, RM_SMTP_ADDR_E_ROUTE),
	/* Postmaster without a domain (RCPT only). */
	OK("<Postmaster>", PM, "Postmaster", "", NONE, "Postmaster", X_BARE),
	OK("<postmaster>", PM, "postmaster", "", NONE, "postmaster", X_BARE),
	OK("<POSTMASTER>", PM, "POSTMASTER", "", NONE, "POSTMASTER", X_BARE),
	OK("<\"postMaster\">", PM, "postMaster", "", NONE, "postMaster", X_BARE | X_QUOTED),
	OK("<postmaster@x>", PM, "postmaster", "x", NAME, "postmaster@x", 0),
	BAD("<Postmaster>", 0, RM_SMTP_ADDR_E_NO_AT),
	BAD("<postmistress>", PM, RM_SMTP_ADDR_E_NO_AT),
	BAD("<postmaster.x>", PM, RM_SMTP_ADDR_E_NO_AT),
	BAD("<>", PM, RM_SMTP_ADDR_E_NULL),
	/* Domains. */
	OK("<a@b>", 0, "a", "b", NAME, "a@b", 0),
	OK("<a@1.2.3.4>", 0, "a", "1.2.3.4", NAME, "a@1.2.3.4", 0),
	OK("<a@xn--bcher-kva.example>", 0, "a", "xn--bcher-kva.example", NAME,
	   "a@xn--bcher-kva.example", 0),
	OK("<a@a-b--c.D-E>", 0, "a", "a-b--c.D-E", NAME, "a@a-b--c.D-E", 0),
	BAD("<a@-b>", 0, RM_SMTP_ADDR_E_DOMAIN),
	BAD("<a@b->", 0, RM_SMTP_ADDR_E_DOMAIN),
	BAD("<a@b-.c>", 0, RM_SMTP_ADDR_E_DOMAIN),
	BAD("<a@b.-c>", 0, RM_SMTP_ADDR_E_DOMAIN),
	BAD("<a@b..c>", 0, RM_SMTP_ADDR_E_DOMAIN),
	BAD("<a@.b>", 0, RM_SMTP_ADDR_E_DOMAIN),
	BAD("<a@b.>", 0, RM_SMTP_ADDR_E_DOMAIN),
	OK("<a@b.c.>", TDOT, "a", "b.c.", NAME, "a@b.c.", X_TDOT),
	BAD("<a@b..>", TDOT, RM_SMTP_ADDR_E_NO_CLOSE),
	BAD("<a@.>", TDOT, RM_SMTP_ADDR_E_DOMAIN),
	/* Address literals. */
	OK("<a@[192.0.2.1]>", 0, "a", "[192.0.2.1]", V4, "a@[192.0.2.1]", 0),
	OK("<a@[0.0.0.0]>", 0, "a", "[0.0.0.0]", V4, "a@[0.0.0.0]", 0),
	OK("<a@[255.255.255.255]>", 0, "a", "[255.255.255.255]", V4, "a@[255.255.255.255]", 0),
	OK("<a@[IPv6:2001:db8::1]>", 0, "a", "[IPv6:2001:db8::1]", V6, "a@[IPv6:2001:db8::1]", 0),
	OK("<a@[ipv6:::]>", 0, "a", "[ipv6:::]", V6, "a@[ipv6:::]", 0),
	OK("<a@[IPv6:::ffff:192.0.2.1]>", 0, "a", "[IPv6:::ffff:192.0.2.1]", V6,
	   "a@[IPv6:::ffff:192.0.2.1]", 0),
	OK("<a@[IPV6:1:2:3:4:5:6:7:8]>", 0, "a", "[IPV6:1:2:3:4:5:6:7:8]", V6,
	   "a@[IPV6:1:2:3:4:5:6:7:8]", 0),
	BAD("<a@[192.0.2.01]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[256.0.0.1]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[1.2.3]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[1.2.3.4.5]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[1.2.3.4.]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[192.0.2.1>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[x-tag:foo]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[IPv6:]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[IPv6:1:2:3:4:5:6:7:8:9]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[IPv6:1::2::3]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@[IPv6:2001:db8::1]x>", 0, RM_SMTP_ADDR_E_NO_CLOSE),
	BAD("<a@[2001:db8::1]>", 0, RM_SMTP_ADDR_E_LITERAL),
	BAD("<a@b[192.0.2.1]>", 0, RM_SMTP_ADDR_E_NO_CLOSE),
	/* UTF-8 (RFC 6531): only with SMTPUTF8, and only well formed. */
	OK("<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a>", UTF8,
	   "\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a", NAME,
	   "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a", X_UTF8),
	OK("<j\xc3\xb6rg@m\xc3\xbcller.example>", UTF8, "j\xc3\xb6rg", "m\xc3\xbcller.example",
	   NAME, "j\xc3\xb6rg@m\xc3\xbcller.example", X_UTF8),
	OK("<\"\xc3\xbc x\"@b>", UTF8, "\xc3\xbc x", "b", NAME, "\"\xc3\xbc x\"@b",
	   X_UTF8 | X_QUOTED),
	OK("<a@b.\xf0\x9f\x98\x80>", UTF8, "a", "b.\xf0\x9f\x98\x80", NAME,
	   "a@b.\xf0\x9f\x98\x80", X_UTF8),
	OK("<@\xc3\xa9.x:a@b>", UTF8, "a", "b", NAME, "a@b", X_ROUTE | X_UTF8),
	BAD("<j\xc3\xb6rg@x>", 0, RM_SMTP_ADDR_E_UTF8),
	BAD("<a@m\xc3\xbcller.example>", 0, RM_SMTP_ADDR_E_UTF8),
	BAD("<\"\xc3\xbc\"@b>", 0, RM_SMTP_ADDR_E_UTF8),
	BAD("<\"\\\xc3\xbc\"@b>", 0, RM_SMTP_ADDR_E_UTF8),
	BAD("<\"\\\xc3\xbc\"@b>", UTF8, RM_SMTP_ADDR_E_LOCAL),
	BAD("<@\xc3\xa9.x:a@b>", 0, RM_SMTP_ADDR_E_UTF8),
	BAD("<a\xc0\xaf@b>", UTF8, RM_SMTP_ADDR_E_BAD_UTF8),
	BAD("<a\xe0\x80\xaf@b>", UTF8, RM_SMTP_ADDR_E_BAD_UTF8),
	BAD("<a\xed\xa0\x80@b>", UTF8, RM_SMTP_ADDR_E_BAD_UTF8),
	BAD("<a\xf4\x90\x80\x80@b>", UTF8, RM_SMTP_ADDR_E_BAD_UTF8),
	BAD("<a\xf5\x80\x80\x80@b>", UTF8, RM_SMTP_ADDR_E_BAD_UTF8),
	BAD("<a\x80@b>", UTF8, RM_SMTP_ADDR_E_BAD_UTF8),
	BAD("<a\xe4\xbd@b>", UTF8, RM_SMTP_ADDR_E_BAD_UTF8),
	BAD("<a@b\xc3>", UTF8, RM_SMTP_ADDR_E_BAD_UTF8),
	BAD("<a@[\xc3\xa9]>", UTF8, RM_SMTP_ADDR_E_LITERAL),
};

static uint8_t *exact(const void *src, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	if (len > 0)
		memcpy(p, src, len);
	return p;
}

static void assert_bytes(const uint8_t *got, size_t got_len, const char *want, size_t want_len,
			 const char *what, const char *in)
{
	if (got_len != want_len || (want_len > 0 && memcmp(got, want, want_len) != 0))
		fail_msg("%s: %s is '%.*s', want '%.*s'", in, what, (int)got_len,
			 (const char *)got, (int)want_len, want);
}

/* Two parses of the same mailbox agree on everything but where they point. */
static void assert_same_mailbox(const struct rm_smtp_path *a, const struct rm_smtp_path *b)
{
	uint8_t ua[512], ub[512];
	ssize_t na = rm_smtp_local_unquote(a, ua, sizeof(ua));
	ssize_t nb = rm_smtp_local_unquote(b, ub, sizeof(ub));

	assert_int_equal(a->null, b->null);
	assert_int_equal(a->bare_postmaster, b->bare_postmaster);
	if (!a->route)	/* a route's UTF-8 counts in utf8, and rendering drops the route */
		assert_int_equal(a->utf8, b->utf8);
	assert_int_equal(a->local_route_chars, b->local_route_chars);
	assert_true(na >= 0 && na == nb);
	assert_memory_equal(ua, ub, (size_t)na);
	assert_int_equal(a->domain.kind, b->domain.kind);
	assert_int_equal(a->domain.len, b->domain.len);
	if (a->domain.len > 0)
		assert_memory_equal(a->domain.text, b->domain.text, a->domain.len);
	assert_memory_equal(a->domain.ip, b->domain.ip, 16);
}

static void check_case(const struct path_case *c)
{
	uint8_t *in = exact(c->in, c->in_len);
	struct rm_smtp_path p;
	size_t consumed = 99;
	enum rm_smtp_addr_err err = rm_smtp_path_parse(in, c->in_len, c->flags, NULL, &p, &consumed);
	uint8_t buf[600];

	if (err != c->err)
		fail_msg("'%s': error %d (%s), want %d (%s)", c->in, err, rm_smtp_addr_err_text(err),
			 c->err, rm_smtp_addr_err_text(c->err));
	if (err != RM_SMTP_ADDR_OK) {
		assert_int_equal(consumed, 0);
		free(in);
		return;
	}
	assert_true(consumed > 0 && consumed <= c->in_len);
	assert_ptr_equal(p.text, in);
	assert_int_equal(p.len, consumed);
	assert_int_equal(in[consumed - 1], '>');
	if (c->content == NULL && c->render == NULL) {
		free(in);	/* only the error was of interest */
		return;
	}
	if (c->extra & X_NULL) {
		assert_true(p.null);
		assert_int_equal(rm_smtp_path_render(&p, buf, sizeof(buf)), 2);
		assert_memory_equal(buf, "<>", 2);
		free(in);
		return;
	}
	assert_false(p.null);
	assert_int_equal(consumed, c->in_len);
	assert_int_equal(p.route, !!(c->extra & X_ROUTE));
	assert_int_equal(p.bare_postmaster, !!(c->extra & X_BARE));
	assert_int_equal(p.local_quoted, !!(c->extra & X_QUOTED));
	assert_int_equal(p.utf8, !!(c->extra & X_UTF8));
	assert_int_equal(p.domain.trailing_dot, !!(c->extra & X_TDOT));
	assert_int_equal(p.local_route_chars, c->extra & 0xffu);
	assert_int_equal(p.domain.kind, c->kind);
	assert_true(p.local >= in && p.local + p.local_len <= in + consumed);
	assert_true(p.mailbox == p.local);
	assert_int_equal(p.local_unquoted_len, strlen(c->content));

	ssize_t n = rm_smtp_local_unquote(&p, buf, sizeof(buf));

	assert_true(n >= 0);
	assert_bytes(buf, (size_t)n, c->content, strlen(c->content), "content", c->in);
	assert_bytes(p.domain.text, p.domain.len, c->domain, strlen(c->domain), "domain", c->in);
	n = rm_smtp_mailbox_render(&p, buf, sizeof(buf));
	assert_true(n >= 0);
	assert_bytes(buf, (size_t)n, c->render, strlen(c->render), "render", c->in);
	assert_true((size_t)n <= p.mailbox_len);
	/* Too small a buffer, by one byte: refused, never overrun. */
	for (size_t cap = 0; cap < (size_t)n; cap++) {
		uint8_t *small = exact(buf, cap);

		assert_int_equal(rm_smtp_mailbox_render(&p, small, cap), -1);
		free(small);
	}
	/* The canonical form parses to the same mailbox, as a path and bare. */
	uint8_t *again = exact(buf, (size_t)n);
	struct rm_smtp_path q;

	assert_int_equal(rm_smtp_mailbox_parse(again, (size_t)n, c->flags, NULL, &q), RM_SMTP_ADDR_OK);
	assert_same_mailbox(&p, &q);
	free(again);
	n = rm_smtp_path_render(&p, buf, sizeof(buf));
	assert_true(n >= 2);
	again = exact(buf, (size_t)n);
	assert_int_equal(rm_smtp_path_parse(again, (size_t)n, c->flags, NULL, &q, &consumed),
			 RM_SMTP_ADDR_OK);
	assert_int_equal(consumed, (size_t)n);
	assert_false(q.route);
	assert_same_mailbox(&p, &q);
	free(again);
	/* Every proper prefix fails (no '>'), reading nothing past its end. */
	for (size_t k = 0; k < c->in_len; k++) {
		uint8_t *pre = exact(c->in, k);

		assert_int_not_equal(rm_smtp_path_parse(pre, k, c->flags, NULL, &q, &consumed),
				     RM_SMTP_ADDR_OK);
		assert_int_equal(consumed, 0);
		free(pre);
	}
	free(in);
}

static void test_table(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_case(&cases[i]);
}

/* The parser stops after '>': what follows is the caller's. */
static void test_consumed(void **state)
{
	static const char *const inputs[] = { "<a@x>>", "<a@x> SIZE=10", "<>x", "<\"a>b\"@x>y" };
	static const size_t want[] = { 5, 5, 2, 9 };

	for (size_t i = 0; i < 4; i++) {
		struct rm_smtp_path p;
		size_t consumed;

		assert_int_equal(rm_smtp_path_parse((const uint8_t *)inputs[i], strlen(inputs[i]),
						    NUL_OK, NULL, &p, &consumed), RM_SMTP_ADDR_OK);
		assert_int_equal(consumed, want[i]);
	}
}

/*
 * Builds "<" local "@" domain ">": a local part of local_len bytes (quoted
 * or not), a domain of domain_len bytes in labels of at most label_len
 * (>= 2) bytes.  Returns the length.
 */
static size_t build(char *out, size_t local_len, bool quoted, size_t label_len, size_t domain_len)
{
	size_t n = 0;

	out[n++] = '<';
	if (quoted) {
		out[n++] = '"';
		memset(out + n, 'q', local_len - 2);
		n += local_len - 2;
		out[n++] = '"';
	} else {
		memset(out + n, 'l', local_len);
		n += local_len;
	}
	out[n++] = '@';
	for (size_t i = 0; i < domain_len; i++)
		out[n + i] = i % (label_len + 1) == label_len ? '.' : 'd';
	if (domain_len >= 2 && out[n + domain_len - 1] == '.') {
		out[n + domain_len - 2] = '.';	/* never end on a dot */
		out[n + domain_len - 1] = 'd';
	}
	n += domain_len;
	out[n++] = '>';
	return n;
}

static enum rm_smtp_addr_err parse_built(const char *s, size_t len,
					 const struct rm_smtp_addr_limits *lim)
{
	uint8_t *in = exact(s, len);
	struct rm_smtp_path p;
	size_t consumed;
	enum rm_smtp_addr_err err = rm_smtp_path_parse(in, len, 0, lim, &p, &consumed);

	if (err == RM_SMTP_ADDR_OK)
		assert_int_equal(consumed, len);
	free(in);
	return err;
}

/* Every limit at its maximum and one past it. */
static void test_limits(void **state)
{
	char buf[2048];
	struct rm_smtp_addr_limits wide;
	size_t n;

	rm_smtp_addr_limits_default(&wide);
	assert_int_equal(wide.local_bytes_max, 64);
	assert_int_equal(wide.domain_bytes_max, 255);
	assert_int_equal(wide.label_bytes_max, 63);
	assert_int_equal(wide.path_bytes_max, 256);
	wide.path_bytes_max = 1024;

	/* Local part 64 / 65, plain and quoted (as written). */
	n = build(buf, 64, false, 10, 10);
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_OK);
	n = build(buf, 65, false, 10, 10);
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_E_LOCAL_TOO_LONG);
	n = build(buf, 64, true, 10, 10);
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_OK);
	n = build(buf, 65, true, 10, 10);
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_E_LOCAL_TOO_LONG);
	/* Label 63 / 64. */
	n = build(buf, 1, false, 63, 63);
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_OK);
	n = build(buf, 1, false, 64, 64);
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_E_LABEL_TOO_LONG);
	n = build(buf, 1, false, 63, 127);	/* 63.63 */
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_OK);
	/* Domain 255 / 256 (with room in the path). */
	n = build(buf, 1, false, 63, 255);
	assert_int_equal(n, 1 + 1 + 1 + 255 + 1);
	assert_int_equal(parse_built(buf, n, &wide), RM_SMTP_ADDR_OK);
	n = build(buf, 1, false, 63, 256);
	assert_int_equal(parse_built(buf, n, &wide), RM_SMTP_ADDR_E_DOMAIN_TOO_LONG);
	/* Path 256 / 257, brackets included. */
	n = build(buf, 64, false, 63, 189);
	assert_int_equal(n, 256);
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_OK);
	n = build(buf, 64, false, 63, 190);
	assert_int_equal(n, 257);
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_E_PATH_TOO_LONG);
	/* A source route counts in the path. */
	memcpy(buf, "<@r:", 4);
	n = build(buf + 3, 64, false, 63, 186);
	buf[3] = ':';
	n += 3;
	assert_int_equal(n, 256);
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_OK);
	n = build(buf + 3, 64, false, 63, 187) + 3;
	buf[3] = ':';
	assert_int_equal(parse_built(buf, n, NULL), RM_SMTP_ADDR_E_PATH_TOO_LONG);
	/* Limits are parameters: tighter ones apply too. */
	wide.local_bytes_max = 3;
	wide.label_bytes_max = 2;
	n = build(buf, 3, false, 2, 5);
	assert_int_equal(parse_built(buf, n, &wide), RM_SMTP_ADDR_OK);
	n = build(buf, 4, false, 2, 5);
	assert_int_equal(parse_built(buf, n, &wide), RM_SMTP_ADDR_E_LOCAL_TOO_LONG);
	n = build(buf, 3, false, 3, 3);
	assert_int_equal(parse_built(buf, n, &wide), RM_SMTP_ADDR_E_LABEL_TOO_LONG);
	/* A non-ASCII label is bounded by the domain only. */
	{
		static char u[300];
		struct rm_smtp_path p;
		size_t c;

		n = 0;
		u[n++] = '<';
		u[n++] = 'a';
		u[n++] = '@';
		for (int i = 0; i < 40; i++) {
			u[n++] = (char)0xc3;
			u[n++] = (char)0xa9;
		}
		u[n++] = '>';
		assert_int_equal(rm_smtp_path_parse((const uint8_t *)u, n, UTF8, NULL, &p, &c),
				 RM_SMTP_ADDR_OK);
	}
}

/* Literal text through our parser and through inet_pton must agree. */
static void check_literal_oracle(const char *text, size_t len, bool v6)
{
	char lit[64], cstr[64];
	size_t n = 0;
	uint8_t want[16];
	struct rm_smtp_domain d;
	int ok_libc;

	assert_true(len + 8 < sizeof(lit));
	memcpy(cstr, text, len);
	cstr[len] = '\0';
	ok_libc = memchr(text, '\0', len) == NULL &&
		  inet_pton(v6 ? AF_INET6 : AF_INET, cstr, want) == 1;
	lit[n++] = '[';
	if (v6) {
		memcpy(lit + n, "IPv6:", 5);
		n += 5;
	}
	memcpy(lit + n, text, len);
	n += len;
	lit[n++] = ']';

	uint8_t *in = exact(lit, n);
	enum rm_smtp_addr_err err = rm_smtp_domain_parse(in, n, 0, NULL, &d);

	free(in);
	if ((err == RM_SMTP_ADDR_OK) != (ok_libc != 0))
		fail_msg("literal '%s' (%s): ours %s, inet_pton %s", cstr, v6 ? "v6" : "v4",
			 rm_smtp_addr_err_text(err), ok_libc ? "accepts" : "refuses");
	if (ok_libc) {
		assert_int_equal(d.kind, v6 ? RM_SMTP_DOMAIN_IPV6 : RM_SMTP_DOMAIN_IPV4);
		assert_memory_equal(d.ip, want, v6 ? 16 : 4);
	}
}

static void test_literal_forms(void **state)
{
	static const char *const v6[] = {
		"::", "::1", "1::", "1::2", "2001:db8::1", "2001:DB8:0:0:8:800:200C:417A",
		"FF01::101", "::ffff:192.0.2.1", "::192.0.2.1", "1:2:3:4:5:6:1.2.3.4",
		"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1::8",
		"fe80::1:2:3:4", "0:0:0:0:0:0:0:0", "0000:0000:0000:0000:0000:0000:0000:0001",
		/* refused */
		"", ":", ":::", "1:", ":1", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8::",
		"::1:2:3:4:5:6:7:8", "12345::", "g::", "1:2:3:4:5:6:7:1.2.3.4", "::1.2.3",
		"::01.2.3.4", "::1.2.3.4.5", "::256.1.1.1", "1.2.3.4", "::1.2.3.4:5", "::1 ",
		" ::1", "1::2:", "::ffff:1.2.3.4x", ":::1", "1:::2", "::1%eth0", "[::1]",
	};
	static const char *const v4[] = {
		"0.0.0.0", "1.2.3.4", "255.255.255.255", "192.0.2.1", "10.0.0.10",
		"", "1", "1.2", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1.2.3.04", "00.0.0.0",
		"256.0.0.0", "1.2.3.256", "1..2.3", ".1.2.3", "1.2.3.", "1.2.3.4 ", "a.b.c.d",
		"0x1.2.3.4", "1.2.3.-4", "1000.1.1.1", "1.2.3.4.",
	};

	for (size_t i = 0; i < sizeof(v6) / sizeof(v6[0]); i++)
		check_literal_oracle(v6[i], strlen(v6[i]), true);
	for (size_t i = 0; i < sizeof(v4) / sizeof(v4[0]); i++)
		check_literal_oracle(v4[i], strlen(v4[i]), false);
}

/* Every string up to a length over an alphabet, through both parsers. */
static void enumerate(const char *alphabet, size_t max_len, bool v6)
{
	size_t k = strlen(alphabet);
	char s[16];
	size_t idx[16];

	for (size_t len = 0; len <= max_len; len++) {
		memset(idx, 0, sizeof(idx));
		for (;;) {
			for (size_t i = 0; i < len; i++)
				s[i] = alphabet[idx[i]];
			check_literal_oracle(s, len, v6);
			size_t i = 0;

			while (i < len && ++idx[i] == k)
				idx[i++] = 0;
			if (i == len)
				break;
		}
	}
}

static void test_literal_exhaustive(void **state)
{
	enumerate(":1f.0", 7, true);
	enumerate("012.5", 8, false);
	enumerate(":.a9", 7, true);
}

static void test_domain_parse(void **state)
{
	static const struct {
		const char *in;
		unsigned flags;
		enum rm_smtp_addr_err err;
		enum rm_smtp_domain_kind kind;
	} cases_d[] = {
		{ "mail.example.org", 0, RM_SMTP_ADDR_OK, NAME },
		{ "localhost", 0, RM_SMTP_ADDR_OK, NAME },
		{ "[127.0.0.1]", 0, RM_SMTP_ADDR_OK, V4 },
		{ "[IPv6:::1]", 0, RM_SMTP_ADDR_OK, V6 },
		{ "example.org.", TDOT, RM_SMTP_ADDR_OK, NAME },
		{ "example.org.", 0, RM_SMTP_ADDR_E_DOMAIN, 0 },
		{ "", 0, RM_SMTP_ADDR_E_DOMAIN, 0 },
		{ "a b", 0, RM_SMTP_ADDR_E_TRAILING, 0 },
		{ "my_host", 0, RM_SMTP_ADDR_E_TRAILING, 0 },
		{ "[127.0.0.1] ", 0, RM_SMTP_ADDR_E_TRAILING, 0 },
		{ "127.0.0.1", 0, RM_SMTP_ADDR_OK, NAME },
		{ "[127.0.0.1", 0, RM_SMTP_ADDR_E_LITERAL, 0 },
		{ "ex\xc3\xa4mple.org", 0, RM_SMTP_ADDR_E_UTF8, 0 },
		{ "ex\xc3\xa4mple.org", UTF8, RM_SMTP_ADDR_OK, NAME },
	};

	for (size_t i = 0; i < sizeof(cases_d) / sizeof(cases_d[0]); i++) {
		size_t len = strlen(cases_d[i].in);
		uint8_t *in = exact(cases_d[i].in, len);
		struct rm_smtp_domain d;
		enum rm_smtp_addr_err err = rm_smtp_domain_parse(in, len, cases_d[i].flags, NULL, &d);

		if (err != cases_d[i].err)
			fail_msg("domain '%s': %s", cases_d[i].in, rm_smtp_addr_err_text(err));
		if (err == RM_SMTP_ADDR_OK) {
			assert_int_equal(d.kind, cases_d[i].kind);
			assert_ptr_equal(d.text, in);
			assert_int_equal(d.len, len);
		}
		free(in);
	}
	/* 255 bytes as a whole domain, 256 refused. */
	char big[300];

	for (size_t i = 0; i < 256; i++)
		big[i] = i % 50 == 49 ? '.' : 'x';
	struct rm_smtp_domain d;

	assert_int_equal(rm_smtp_domain_parse((const uint8_t *)big, 255, 0, NULL, &d),
			 RM_SMTP_ADDR_OK);
	assert_int_equal(rm_smtp_domain_parse((const uint8_t *)big, 256, 0, NULL, &d),
			 RM_SMTP_ADDR_E_DOMAIN_TOO_LONG);
}

static void test_mailbox_parse(void **state)
{
	struct rm_smtp_path p;
	const uint8_t *s;

	s = (const uint8_t *)"user@Example.ORG";
	assert_int_equal(rm_smtp_mailbox_parse(s, 16, 0, NULL, &p), RM_SMTP_ADDR_OK);
	assert_int_equal(p.local_len, 4);
	assert_int_equal(p.domain.len, 11);
	assert_int_equal(rm_smtp_mailbox_parse(s, 15, 0, NULL, &p), RM_SMTP_ADDR_OK);
	s = (const uint8_t *)"<user@x>";
	assert_int_equal(rm_smtp_mailbox_parse(s, 8, 0, NULL, &p), RM_SMTP_ADDR_E_LOCAL);
	s = (const uint8_t *)"user@x y";
	assert_int_equal(rm_smtp_mailbox_parse(s, 8, 0, NULL, &p), RM_SMTP_ADDR_E_TRAILING);
	s = (const uint8_t *)"@r:user@x";
	assert_int_equal(rm_smtp_mailbox_parse(s, 9, 0, NULL, &p), RM_SMTP_ADDR_E_LOCAL);
	assert_int_equal(rm_smtp_mailbox_parse(s, 0, 0, NULL, &p), RM_SMTP_ADDR_E_LOCAL);
	s = (const uint8_t *)"postmaster";
	assert_int_equal(rm_smtp_mailbox_parse(s, 10, PM, NULL, &p), RM_SMTP_ADDR_OK);
	assert_true(p.bare_postmaster);
	assert_true(rm_smtp_path_is_postmaster(&p));
}

static void test_helpers(void **state)
{
	uint8_t out[64];
	struct rm_smtp_path p;
	size_t consumed, at;

	assert_int_equal(rm_smtp_domain_normalise((const uint8_t *)"ExAmPle.ORG.", 12, out, 64), 11);
	assert_memory_equal(out, "example.org", 11);
	assert_int_equal(rm_smtp_domain_normalise((const uint8_t *)"a.b", 3, out, 3), 3);
	assert_int_equal(rm_smtp_domain_normalise((const uint8_t *)"a.b.", 4, out, 3), 3);
	assert_int_equal(rm_smtp_domain_normalise((const uint8_t *)"a.bc", 4, out, 3), -1);
	assert_int_equal(rm_smtp_domain_normalise((const uint8_t *)".", 1, out, 0), 0);
	assert_int_equal(rm_smtp_domain_normalise((const uint8_t *)"[IPv6:DB8::1]", 13, out, 64), 13);
	assert_memory_equal(out, "[ipv6:db8::1]", 13);
	assert_int_equal(rm_smtp_domain_normalise((const uint8_t *)"\xc3\x89.Z", 4, out, 64), 4);
	assert_memory_equal(out, "\xc3\x89.z", 4);

	assert_true(rm_smtp_mailbox_split((const uint8_t *)"\"a@b\"@c", 7, &at));
	assert_int_equal(at, 5);
	assert_false(rm_smtp_mailbox_split((const uint8_t *)"abc", 3, &at));
	assert_false(rm_smtp_mailbox_split((const uint8_t *)"", 0, &at));

	assert_int_equal(rm_smtp_path_parse((const uint8_t *)"<Postmaster@X>", 14, 0, NULL, &p,
					    &consumed), RM_SMTP_ADDR_OK);
	assert_true(rm_smtp_path_is_postmaster(&p));
	assert_int_equal(rm_smtp_path_parse((const uint8_t *)"<\"post\\master\"@X>", 18, 0, NULL,
					    &p, &consumed), RM_SMTP_ADDR_OK);
	assert_true(rm_smtp_path_is_postmaster(&p));
	assert_int_equal(rm_smtp_path_parse((const uint8_t *)"<postmaste@X>", 13, 0, NULL, &p,
					    &consumed), RM_SMTP_ADDR_OK);
	assert_false(rm_smtp_path_is_postmaster(&p));
	assert_int_equal(rm_smtp_path_parse((const uint8_t *)"<>", 2, NUL_OK, NULL, &p, &consumed),
			 RM_SMTP_ADDR_OK);
	assert_false(rm_smtp_path_is_postmaster(&p));
	assert_int_equal(rm_smtp_mailbox_render(&p, out, 0), 0);
	assert_int_equal(rm_smtp_path_render(&p, out, 1), -1);

	for (int e = 0; e <= RM_SMTP_ADDR_E_COUNT; e++)
		assert_non_null(rm_smtp_addr_err_text((enum rm_smtp_addr_err)e));
}

static void test_utf8(void **state)
{
	static const char *const good[] = {
		"", "abc", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80",
		"\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "a\xc3\xa9z",
	};
	static const char *const bad[] = {
		"\x80", "\xbf", "\xc0\x80", "\xc1\xbf", "\xc2", "\xc2\x41", "\xe0\x9f\xbf",
		"\xe0\xa0", "\xed\xa0\x80", "\xed\xbf\xbf", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80",
		"\xf5\x80\x80\x80", "\xf8\x88\x80\x80\x80", "\xfe", "\xff", "\xe1\x80\xc0",
		"\xf1\x80\x80", "\xf1\x80\x80\x7f",
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		uint8_t *s = exact(good[i], strlen(good[i]));

		assert_true(rm_smtp_utf8_valid(s, strlen(good[i])));
		free(s);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t *s = exact(bad[i], strlen(bad[i]));

		if (rm_smtp_utf8_valid(s, strlen(bad[i])))
			fail_msg("bad UTF-8 #%zu accepted", i);
		free(s);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_consumed),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_literal_forms),
		cmocka_unit_test(test_literal_exhaustive),
		cmocka_unit_test(test_domain_parse),
		cmocka_unit_test(test_mailbox_parse),
		cmocka_unit_test(test_helpers),
		cmocka_unit_test(test_utf8),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
