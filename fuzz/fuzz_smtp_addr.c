/*
 * NAME
 *	fuzz_smtp_addr - libFuzzer harness for proto/smtp_addr
 * DESCRIPTION
 *	Input layout: byte 0 gives the parse flags (low 4 bits) and, in bit
 *	4, tight limits instead of the defaults; the rest is the text.  The
 *	text goes through all three parsers (path, mailbox, domain), each on a
 *	heap copy of exact size, so ASan flags any read past it.
 *
 *	Invariants (any failure traps):
 *	- a failed parse consumes nothing; a good path ends with the '>' at
 *	  consumed - 1, and every string it gives lies inside the input;
 *	- lengths are within the limits in force; without RM_SMTP_ADDR_UTF8
 *	  no byte >= 0x80 is accepted, with it what is accepted is valid UTF-8;
 *	- a parsed address rendered in canonical form is no longer than it
 *	  was written and parses again, as a path and as a bare mailbox, to
 *	  the same content, domain, literal bytes and flags; rendering into
 *	  any smaller buffer is refused;
 *	- an accepted IPv4 or IPv6 literal is accepted by inet_pton with the
 *	  same bytes, and the text of any bracketed literal that inet_pton
 *	  accepts is accepted by the domain parser (the same definition);
 *	- the normalised form of a good domain is lower case, has no
 *	  trailing dot, is idempotent, and parses again as the same kind.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/smtp_addr.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

enum { TEXT_MAX = 1024, RENDER_MAX = 2048 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool inside(const uint8_t *p, size_t n, const uint8_t *base, size_t len)
{
	return n == 0 || (p >= base && p + n <= base + len);
}

static void check_limits(const struct rm_smtp_path *p, const struct rm_smtp_addr_limits *lim)
{
	CHECK(p->local_len <= lim->local_bytes_max);
	CHECK(p->domain.len <= lim->domain_bytes_max);
	CHECK(p->local_unquoted_len <= p->local_len);
}

static void check_same(const struct rm_smtp_path *a, const struct rm_smtp_path *b)
{
	static uint8_t ua[RENDER_MAX], ub[RENDER_MAX];
	ssize_t na = rm_smtp_local_unquote(a, ua, sizeof(ua));
	ssize_t nb = rm_smtp_local_unquote(b, ub, sizeof(ub));

	CHECK(na >= 0 && na == nb && memcmp(ua, ub, (size_t)na) == 0);
	CHECK(a->null == b->null && a->bare_postmaster == b->bare_postmaster);
	CHECK(a->local_route_chars == b->local_route_chars);
	CHECK(a->route || a->utf8 == b->utf8);
	CHECK(a->domain.kind == b->domain.kind && a->domain.len == b->domain.len);
	CHECK(a->domain.len == 0 || memcmp(a->domain.text, b->domain.text, a->domain.len) == 0);
	CHECK(memcmp(a->domain.ip, b->domain.ip, sizeof(a->domain.ip)) == 0);
	CHECK(rm_smtp_path_is_postmaster(a) == rm_smtp_path_is_postmaster(b));
}

/* Canonical rendering parses back to the same mailbox. */
static void check_render(const struct rm_smtp_path *p, unsigned flags,
			 const struct rm_smtp_addr_limits *lim)
{
	static uint8_t buf[RENDER_MAX];
	struct rm_smtp_path q;
	size_t consumed;
	ssize_t n = rm_smtp_path_render(p, buf, sizeof(buf));

	CHECK(n >= 2);
	CHECK(p->null || (size_t)n - 2 <= p->mailbox_len);
	/* Any smaller buffer is refused. */
	CHECK(rm_smtp_path_render(p, buf, (size_t)n - 1) == -1);
	n = rm_smtp_path_render(p, buf, sizeof(buf));

	uint8_t *copy = malloc((size_t)n);

	CHECK(copy != NULL);
	memcpy(copy, buf, (size_t)n);
	CHECK(rm_smtp_path_parse(copy, (size_t)n, flags, lim, &q, &consumed) == RM_SMTP_ADDR_OK);
	CHECK(consumed == (size_t)n && !q.route);
	check_same(p, &q);
	free(copy);
	if (p->null)
		return;
	n = rm_smtp_mailbox_render(p, buf, sizeof(buf));
	CHECK(n > 0);
	copy = malloc((size_t)n);
	CHECK(copy != NULL);
	memcpy(copy, buf, (size_t)n);
	CHECK(rm_smtp_mailbox_parse(copy, (size_t)n, flags, lim, &q) == RM_SMTP_ADDR_OK);
	check_same(p, &q);
	free(copy);
}

static void check_utf8_rule(const uint8_t *s, size_t len, unsigned flags)
{
	if (!(flags & RM_SMTP_ADDR_UTF8)) {
		for (size_t i = 0; i < len; i++)
			CHECK(s[i] < 0x80);
	}
}

/* Our literal against inet_pton, both ways. */
static void check_literal(const struct rm_smtp_domain *d, enum rm_smtp_addr_err err,
			  const uint8_t *s, size_t len, const struct rm_smtp_addr_limits *lim)
{
	char text[TEXT_MAX + 1];
	uint8_t ip[16];
	bool v6;
	size_t off;

	if (len < 2 || s[0] != '[' || s[len - 1] != ']' || memchr(s, '\0', len) != NULL ||
	    len > lim->domain_bytes_max)
		return;
	v6 = len >= 7 && strncasecmp((const char *)s + 1, "IPv6:", 5) == 0;
	off = v6 ? 6 : 1;
	memcpy(text, s + off, len - 1 - off);
	text[len - 1 - off] = '\0';
	if (inet_pton(v6 ? AF_INET6 : AF_INET, text, ip) == 1) {
		CHECK(err == RM_SMTP_ADDR_OK);
		CHECK(d->kind == (v6 ? RM_SMTP_DOMAIN_IPV6 : RM_SMTP_DOMAIN_IPV4));
		CHECK(memcmp(d->ip, ip, v6 ? 16 : 4) == 0);
	} else {
		CHECK(err != RM_SMTP_ADDR_OK);
	}
}

static void check_domain(const uint8_t *s, size_t len, unsigned flags,
			 const struct rm_smtp_addr_limits *lim)
{
	struct rm_smtp_domain d, e;
	enum rm_smtp_addr_err err = rm_smtp_domain_parse(s, len, flags, lim, &d);
	static uint8_t norm[RENDER_MAX], again[RENDER_MAX];

	check_literal(&d, err, s, len, lim);
	if (err != RM_SMTP_ADDR_OK)
		return;
	CHECK(d.text == s && d.len == len && len <= lim->domain_bytes_max);
	CHECK(d.kind != RM_SMTP_DOMAIN_NONE);
	check_utf8_rule(s, len, flags);
	CHECK(rm_smtp_utf8_valid(s, len));

	ssize_t n = rm_smtp_domain_normalise(s, len, norm, sizeof(norm));

	CHECK(n >= 0 && (size_t)n == len - d.trailing_dot);
	CHECK(n == 0 || norm[n - 1] != '.');
	for (ssize_t i = 0; i < n; i++)
		CHECK(!(norm[i] >= 'A' && norm[i] <= 'Z'));
	CHECK(rm_smtp_domain_normalise(norm, (size_t)n, again, sizeof(again)) == n);
	CHECK(memcmp(norm, again, (size_t)n) == 0);

	uint8_t *copy = malloc((size_t)n + 1);

	CHECK(copy != NULL);
	memcpy(copy, norm, (size_t)n);
	CHECK(rm_smtp_domain_parse(copy, (size_t)n, flags & ~RM_SMTP_ADDR_TRAILING_DOT, lim, &e) ==
	      RM_SMTP_ADDR_OK);
	CHECK(e.kind == d.kind && memcmp(e.ip, d.ip, sizeof(e.ip)) == 0);
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size - 1 > TEXT_MAX)
		return 0;

	unsigned flags = data[0] & 0x0fu;
	struct rm_smtp_addr_limits lim;
	size_t len = size - 1;
	uint8_t *s = malloc(len ? len : 1);
	struct rm_smtp_path p;
	size_t consumed = 1;
	enum rm_smtp_addr_err err;

	CHECK(s != NULL);
	memcpy(s, data + 1, len);
	rm_smtp_addr_limits_default(&lim);
	if (data[0] & 0x10u) {
		lim.local_bytes_max = 8;
		lim.domain_bytes_max = 16;
		lim.label_bytes_max = 4;
		lim.path_bytes_max = 24;
	}

	err = rm_smtp_path_parse(s, len, flags, &lim, &p, &consumed);
	if (err != RM_SMTP_ADDR_OK) {
		CHECK(consumed == 0);
	} else {
		CHECK(consumed >= 2 && consumed <= len && s[consumed - 1] == '>');
		CHECK(consumed <= lim.path_bytes_max);
		CHECK(p.text == s && p.len == consumed);
		CHECK(p.null == (consumed == 2) && (!p.null || (flags & RM_SMTP_ADDR_NULL_OK)));
		CHECK(!p.bare_postmaster || (flags & RM_SMTP_ADDR_POSTMASTER));
		CHECK(inside(p.mailbox, p.mailbox_len, s, consumed));
		CHECK(inside(p.local, p.local_len, s, consumed));
		CHECK(inside(p.domain.text, p.domain.len, s, consumed));
		check_utf8_rule(s, consumed, flags);
		CHECK(!p.utf8 || rm_smtp_utf8_valid(s, consumed));
		check_limits(&p, &lim);
		check_render(&p, flags, &lim);
		/* The UTF8 flag changes nothing for ASCII. */
		if (!p.utf8 && !(flags & RM_SMTP_ADDR_UTF8)) {
			struct rm_smtp_path q;
			size_t c2;

			CHECK(rm_smtp_path_parse(s, len, flags | RM_SMTP_ADDR_UTF8, &lim, &q, &c2) ==
			      RM_SMTP_ADDR_OK && c2 == consumed);
			check_same(&p, &q);
		}
	}

	err = rm_smtp_mailbox_parse(s, len, flags, &lim, &p);
	if (err == RM_SMTP_ADDR_OK) {
		CHECK(p.mailbox == s && p.mailbox_len == len && !p.route && !p.null);
		CHECK(len + 2 <= lim.path_bytes_max);
		check_limits(&p, &lim);
		check_utf8_rule(s, len, flags);
		check_render(&p, flags, &lim);
		size_t at;

		if (!p.bare_postmaster) {
			CHECK(rm_smtp_mailbox_split(s, len, &at));
			CHECK(at == p.local_len);
		}
	}

	check_domain(s, len, flags, &lim);
	free(s);
	return 0;
}
