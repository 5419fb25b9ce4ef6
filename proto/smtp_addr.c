/*
 * NAME
 *	smtp_addr - RFC 5321 paths, mailboxes and domains
 * SUMMARY
 *	See proto/smtp_addr.h for the interface.
 * DESCRIPTION
 *	One forward pass over the bytes, no backtracking: every loop advances
 *	its position by at least one byte or returns, so the work is bounded
 *	by the input length (a command line, itself bounded by the line
 *	splitter).  The grammar is RFC 5321 4.1.2 with the RFC 6531 UTF-8
 *	extensions (atext, qtextSMTP and sub-domain =/ UTF8-non-ascii) behind
 *	RM_SMTP_ADDR_UTF8.
 *
 *	Address literals follow inet_pton(3) exactly rather than RFC 5321's
 *	own IPv6 ABNF (which wants "::" to stand for two or more groups): the
 *	relay compares them with addresses from the resolver and the kernel,
 *	which use inet_pton's rules, so one definition is kept everywhere.
 *	The two functions below are glibc's inet_pton4/inet_pton6 algorithm
 *	on a (pointer, length) string; the unit tests and the fuzzer compare
 *	them with the C library byte for byte.
 *
 *	Lengths are checked after the syntax, in the order local part, domain,
 *	path, so a long but well-formed address gets a "too long" error and a
 *	malformed one a syntax error.
 * DIAGNOSTICS
 *	See the header.
 */
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "proto/smtp_addr.h"

static const struct rm_smtp_addr_limits default_limits = {
	.local_bytes_max = RM_SMTP_LOCAL_BYTES_MAX,
	.domain_bytes_max = RM_SMTP_DOMAIN_BYTES_MAX,
	.label_bytes_max = RM_SMTP_LABEL_BYTES_MAX,
	.path_bytes_max = RM_SMTP_PATH_BYTES_MAX,
};

void rm_smtp_addr_limits_default(struct rm_smtp_addr_limits *lim)
{
	*lim = default_limits;
}

/* The input being parsed and where we are in it. */
struct scan {
	const uint8_t *s;
	size_t len;
	size_t pos;
	unsigned flags;
	const struct rm_smtp_addr_limits *lim;
};

static bool is_alnum(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 5321 atext (RFC 5322 3.2.3). */
static bool is_atext(uint8_t c)
{
	if (is_alnum(c))
		return true;
	switch (c) {
	case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
	case '-': case '/': case '=': case '?': case '^': case '_': case '`': case '{':
	case '|': case '}': case '~':
		return true;
	default:
		return false;
	}
}

/* qtextSMTP: %d32-33 / %d35-91 / %d93-126. */
static bool is_qtext(uint8_t c)
{
	return c >= 32 && c <= 126 && c != '"' && c != '\\';
}

static unsigned route_bit(uint8_t c)
{
	return c == '%' ? RM_SMTP_LOCAL_PERCENT : c == '!' ? RM_SMTP_LOCAL_BANG :
	       c == '@' ? RM_SMTP_LOCAL_AT : 0;
}

/*
 * Length of the well-formed UTF-8 sequence at s[0] (a byte >= 0x80), or 0:
 * no overlong forms (C0, C1, E0 80-9F, F0 80-8F), no surrogates (ED A0-BF),
 * nothing above U+10FFFF (F4 90-, F5-FF), no stray continuation bytes.
 */
static size_t utf8_seq(const uint8_t *s, size_t len)
{
	uint8_t c = s[0], lo = 0x80, hi = 0xbf;
	size_t n;

	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		lo = c == 0xe0 ? 0xa0 : 0x80;
		hi = c == 0xed ? 0x9f : 0xbf;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		lo = c == 0xf0 ? 0x90 : 0x80;
		hi = c == 0xf4 ? 0x8f : 0xbf;
	} else {
		return 0;
	}
	if (len < n || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

bool rm_smtp_utf8_valid(const uint8_t *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		size_t n = utf8_seq(s + i, len - i);

		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* A non-ASCII character at sc->pos: its length, or 0 with *err set. */
static size_t scan_utf8(const struct scan *sc, enum rm_smtp_addr_err *err)
{
	size_t n;

	if (!(sc->flags & RM_SMTP_ADDR_UTF8)) {
		*err = RM_SMTP_ADDR_E_UTF8;
		return 0;
	}
	n = utf8_seq(sc->s + sc->pos, sc->len - sc->pos);
	if (n == 0)
		*err = RM_SMTP_ADDR_E_BAD_UTF8;
	return n;
}

/* inet_pton4 on s[0..len): four decimal parts 0..255, no leading zeros. */
static bool ipv4_parse(const uint8_t *s, size_t len, uint8_t out[4])
{
	uint8_t tmp[4] = { 0 };
	size_t tp = 0;
	unsigned octets = 0;
	bool saw_digit = false;

	for (size_t i = 0; i < len; i++) {
		uint8_t ch = s[i];

		if (ch >= '0' && ch <= '9') {
			unsigned v = tmp[tp] * 10u + (unsigned)(ch - '0');

			if (saw_digit && tmp[tp] == 0)
				return false;
			if (v > 255)
				return false;
			tmp[tp] = (uint8_t)v;
			if (!saw_digit) {
				if (++octets > 4)
					return false;
				saw_digit = true;
			}
		} else if (ch == '.' && saw_digit) {
			if (octets == 4)
				return false;
			tmp[++tp] = 0;
			saw_digit = false;
		} else {
			return false;
		}
	}
	if (octets < 4)
		return false;
	memcpy(out, tmp, 4);
	return true;
}

static int hex_value(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * inet_pton6 on s[0..len): up to eight groups of 1-4 hex digits, one "::"
 * for one or more zero groups, optionally an IPv4 tail in the last 4 bytes.
 */
static bool ipv6_parse(const uint8_t *s, size_t len, uint8_t out[16])
{
	uint8_t tmp[16] = { 0 };
	size_t tp = 0, colonp = SIZE_MAX, i = 0, curtok;
	unsigned digits = 0, val = 0;

	if (len == 0)
		return false;
	if (s[0] == ':') {
		if (len < 2 || s[1] != ':')
			return false;
		i = 1;
	}
	curtok = i;
	while (i < len) {
		uint8_t ch = s[i++];
		int h = hex_value(ch);

		if (h >= 0) {
			if (digits == 4)
				return false;
			val = val << 4 | (unsigned)h;
			digits++;
			continue;
		}
		if (ch == ':') {
			curtok = i;
			if (digits == 0) {
				if (colonp != SIZE_MAX)
					return false;
				colonp = tp;
				continue;
			}
			if (i == len || tp + 2 > 16)
				return false;
			tmp[tp++] = (uint8_t)(val >> 8);
			tmp[tp++] = (uint8_t)val;
			digits = 0;
			val = 0;
			continue;
		}
		if (ch == '.' && tp + 4 <= 16 && ipv4_parse(s + curtok, len - curtok, tmp + tp)) {
			tp += 4;
			digits = 0;
			break;
		}
		return false;
	}
	if (digits > 0) {
		if (tp + 2 > 16)
			return false;
		tmp[tp++] = (uint8_t)(val >> 8);
		tmp[tp++] = (uint8_t)val;
	}
	if (colonp != SIZE_MAX) {
		if (tp == 16)
			return false;	/* "::" would stand for no group */
		size_t n = tp - colonp;

		memmove(tmp + 16 - n, tmp + colonp, n);
		memset(tmp + colonp, 0, 16 - n - colonp);
		tp = 16;
	}
	if (tp != 16)
		return false;
	memcpy(out, tmp, 16);
	return true;
}

/* "[" IPv4 "]" or "[IPv6:" IPv6 "]" at sc->pos (a '['). */
static enum rm_smtp_addr_err parse_literal(struct scan *sc, struct rm_smtp_domain *d)
{
	const uint8_t *in = sc->s + sc->pos + 1;
	size_t room = sc->len - sc->pos - 1;
	const uint8_t *close = memchr(in, ']', room);

	if (close == NULL)
		return RM_SMTP_ADDR_E_LITERAL;
	size_t n = (size_t)(close - in);

	if (n >= 5 && strncasecmp((const char *)in, "IPv6:", 5) == 0) {
		if (!ipv6_parse(in + 5, n - 5, d->ip))
			return RM_SMTP_ADDR_E_LITERAL;
		d->kind = RM_SMTP_DOMAIN_IPV6;
	} else if (ipv4_parse(in, n, d->ip)) {
		d->kind = RM_SMTP_DOMAIN_IPV4;
	} else {
		return RM_SMTP_ADDR_E_LITERAL;
	}
	sc->pos += n + 2;
	return RM_SMTP_ADDR_OK;
}

/*
 * One letter-digit-hyphen label at sc->pos; *ascii says whether it had only
 * ASCII bytes.  A non-ASCII character counts as a letter.
 */
static enum rm_smtp_addr_err parse_label(struct scan *sc, bool *ascii, bool *utf8)
{
	size_t start = sc->pos;
	uint8_t last = 0;
	enum rm_smtp_addr_err err = RM_SMTP_ADDR_OK;

	*ascii = true;
	while (sc->pos < sc->len) {
		uint8_t c = sc->s[sc->pos];

		if (is_alnum(c)) {
			sc->pos++;
		} else if (c == '-') {
			if (sc->pos == start)
				return RM_SMTP_ADDR_E_DOMAIN;
			sc->pos++;
		} else if (c >= 0x80) {
			size_t n = scan_utf8(sc, &err);

			if (n == 0)
				return err;
			sc->pos += n;
			*ascii = false;
			*utf8 = true;
			c = 'a';
		} else {
			break;
		}
		last = c;
	}
	if (sc->pos == start || last == '-')
		return RM_SMTP_ADDR_E_DOMAIN;
	if (*ascii && sc->pos - start > sc->lim->label_bytes_max)
		return RM_SMTP_ADDR_E_LABEL_TOO_LONG;
	return RM_SMTP_ADDR_OK;
}

/*
 * Domain (or, when literal_ok, an address literal) at sc->pos.  Stops at
 * the first byte that cannot continue it; the caller checks what that is.
 */
static enum rm_smtp_addr_err parse_domain(struct scan *sc, struct rm_smtp_domain *d,
					  bool literal_ok)
{
	size_t start = sc->pos;
	enum rm_smtp_addr_err err;

	memset(d, 0, sizeof(*d));
	if (sc->pos < sc->len && sc->s[sc->pos] == '[') {
		if (!literal_ok)
			return RM_SMTP_ADDR_E_DOMAIN;
		err = parse_literal(sc, d);
	} else {
		d->kind = RM_SMTP_DOMAIN_NAME;
		err = RM_SMTP_ADDR_OK;
		/* Each round takes a label (>= 1 byte) and its dot: at most len rounds. */
		for (size_t round = 0; round <= sc->len; round++) {
			bool ascii;

			err = parse_label(sc, &ascii, &d->utf8);
			if (err != RM_SMTP_ADDR_OK)
				break;
			if (sc->pos >= sc->len || sc->s[sc->pos] != '.')
				break;
			uint8_t next = sc->pos + 1 < sc->len ? sc->s[sc->pos + 1] : 0;

			if (is_alnum(next) || next >= 0x80) {
				sc->pos++;
				continue;
			}
			if (!(sc->flags & RM_SMTP_ADDR_TRAILING_DOT)) {
				err = RM_SMTP_ADDR_E_DOMAIN;
				break;
			}
			sc->pos++;
			d->trailing_dot = true;
			break;
		}
	}
	if (err != RM_SMTP_ADDR_OK)
		return err;
	d->text = sc->s + start;
	d->len = sc->pos - start;
	return RM_SMTP_ADDR_OK;
}

/* One ASCII content byte c of a local part, written as `advance` input bytes. */
static void take_ascii(struct scan *sc, struct rm_smtp_path *out, uint8_t c, size_t advance,
		       size_t *content)
{
	out->local_route_chars |= route_bit(c);
	sc->pos += advance;
	(*content)++;
}

/* One non-ASCII character of a local part at sc->pos. */
static enum rm_smtp_addr_err take_utf8(struct scan *sc, struct rm_smtp_path *out, size_t *content)
{
	enum rm_smtp_addr_err err = RM_SMTP_ADDR_OK;
	size_t n = scan_utf8(sc, &err);

	if (n == 0)
		return err;
	sc->pos += n;
	*content += n;
	out->utf8 = true;
	return RM_SMTP_ADDR_OK;
}

/* Dot-string or Quoted-string at sc->pos. */
static enum rm_smtp_addr_err parse_local(struct scan *sc, struct rm_smtp_path *out)
{
	size_t start = sc->pos, content = 0;
	enum rm_smtp_addr_err err = RM_SMTP_ADDR_OK;

	if (sc->pos < sc->len && sc->s[sc->pos] == '"') {
		bool closed = false;

		sc->pos++;
		while (sc->pos < sc->len) {
			uint8_t c = sc->s[sc->pos];

			if (c == '"') {
				sc->pos++;
				closed = true;
				break;
			}
			if (c == '\\') {
				if (sc->pos + 1 >= sc->len)
					return RM_SMTP_ADDR_E_LOCAL;
				c = sc->s[sc->pos + 1];
				if (c >= 0x80 && !(sc->flags & RM_SMTP_ADDR_UTF8))
					return RM_SMTP_ADDR_E_UTF8;
				if (c < 32 || c > 126)
					return RM_SMTP_ADDR_E_LOCAL;
				take_ascii(sc, out, c, 2, &content);
			} else if (c >= 0x80) {
				err = take_utf8(sc, out, &content);
				if (err != RM_SMTP_ADDR_OK)
					return err;
			} else if (is_qtext(c)) {
				take_ascii(sc, out, c, 1, &content);
			} else {
				return RM_SMTP_ADDR_E_LOCAL;
			}
		}
		if (!closed)
			return RM_SMTP_ADDR_E_LOCAL;
		out->local_quoted = true;
	} else {
		bool need_atom = true;	/* at the start or right after a dot */

		while (sc->pos < sc->len) {
			uint8_t c = sc->s[sc->pos];

			if (c == '.') {
				if (need_atom)
					return RM_SMTP_ADDR_E_LOCAL;
				need_atom = true;
				sc->pos++;
				content++;
				continue;
			}
			if (c >= 0x80) {
				err = take_utf8(sc, out, &content);
				if (err != RM_SMTP_ADDR_OK)
					return err;
			} else if (is_atext(c)) {
				take_ascii(sc, out, c, 1, &content);
			} else {
				break;
			}
			need_atom = false;
		}
		if (need_atom)
			return RM_SMTP_ADDR_E_LOCAL;
	}
	out->local = sc->s + start;
	out->local_len = sc->pos - start;
	out->local_unquoted_len = content;
	return RM_SMTP_ADDR_OK;
}

/*
 * The content bytes of a parsed local part, one per call: *i starts at 0
 * and the call returns false at the end.
 */
static bool local_next(const struct rm_smtp_path *p, size_t *i, uint8_t *c)
{
	size_t end = p->local_quoted ? p->local_len - 1 : p->local_len;

	if (*i == 0 && p->local_quoted)
		*i = 1;
	if (*i >= end)
		return false;
	if (p->local_quoted && p->local[*i] == '\\') {
		*c = p->local[*i + 1];
		*i += 2;
	} else {
		*c = p->local[*i];
		*i += 1;
	}
	return true;
}

bool rm_smtp_path_is_postmaster(const struct rm_smtp_path *p)
{
	static const char want[] = "postmaster";
	size_t i = 0, n = 0;
	uint8_t c;

	if (p->null || p->local_unquoted_len != sizeof(want) - 1)
		return false;
	while (local_next(p, &i, &c)) {
		if ((c >= 'A' && c <= 'Z' ? c | 0x20 : c) != (uint8_t)want[n++])
			return false;
	}
	return n == sizeof(want) - 1;
}

/* Local part, then "@" domain (or a bare postmaster), at sc->pos. */
static enum rm_smtp_addr_err parse_mailbox(struct scan *sc, struct rm_smtp_path *out)
{
	size_t start = sc->pos;
	enum rm_smtp_addr_err err = parse_local(sc, out);

	if (err != RM_SMTP_ADDR_OK)
		return err;
	if (sc->pos < sc->len && sc->s[sc->pos] == '@') {
		sc->pos++;
		err = parse_domain(sc, &out->domain, true);
		if (err != RM_SMTP_ADDR_OK)
			return err;
		out->utf8 |= out->domain.utf8;
	} else if ((sc->flags & RM_SMTP_ADDR_POSTMASTER) && rm_smtp_path_is_postmaster(out)) {
		out->bare_postmaster = true;
	} else {
		return RM_SMTP_ADDR_E_NO_AT;
	}
	out->mailbox = sc->s + start;
	out->mailbox_len = sc->pos - start;
	return RM_SMTP_ADDR_OK;
}

static enum rm_smtp_addr_err check_lengths(const struct scan *sc, const struct rm_smtp_path *p,
					   size_t path_len)
{
	if (p->local_len > sc->lim->local_bytes_max)
		return RM_SMTP_ADDR_E_LOCAL_TOO_LONG;
	if (p->domain.len > sc->lim->domain_bytes_max)
		return RM_SMTP_ADDR_E_DOMAIN_TOO_LONG;
	if (path_len > sc->lim->path_bytes_max)
		return RM_SMTP_ADDR_E_PATH_TOO_LONG;
	return RM_SMTP_ADDR_OK;
}

/* A-d-l ":" at sc->pos (an '@'): checked, remembered, otherwise ignored. */
static enum rm_smtp_addr_err parse_route(struct scan *sc, struct rm_smtp_path *out)
{
	while (sc->pos < sc->len && sc->s[sc->pos] == '@') {
		struct rm_smtp_domain hop;
		enum rm_smtp_addr_err err;

		sc->pos++;
		err = parse_domain(sc, &hop, false);
		if (err == RM_SMTP_ADDR_E_UTF8)
			return err;
		if (err != RM_SMTP_ADDR_OK || hop.len > sc->lim->domain_bytes_max)
			return RM_SMTP_ADDR_E_ROUTE;
		out->utf8 |= hop.utf8;
		if (sc->pos < sc->len && sc->s[sc->pos] == ':') {
			sc->pos++;
			out->route = true;
			return RM_SMTP_ADDR_OK;
		}
		if (sc->pos + 1 >= sc->len || sc->s[sc->pos] != ',' || sc->s[sc->pos + 1] != '@')
			return RM_SMTP_ADDR_E_ROUTE;
		sc->pos++;
	}
	return RM_SMTP_ADDR_E_ROUTE;
}

enum rm_smtp_addr_err rm_smtp_path_parse(const uint8_t *s, size_t len, unsigned flags,
					 const struct rm_smtp_addr_limits *lim,
					 struct rm_smtp_path *out, size_t *consumed)
{
	struct scan sc = { s, len, 1, flags, lim != NULL ? lim : &default_limits };
	enum rm_smtp_addr_err err;

	memset(out, 0, sizeof(*out));
	*consumed = 0;
	if (len == 0 || s[0] != '<')
		return RM_SMTP_ADDR_E_NO_OPEN;
	if (len >= 2 && s[1] == '>') {
		if (!(flags & RM_SMTP_ADDR_NULL_OK))
			return RM_SMTP_ADDR_E_NULL;
		out->null = true;
		out->text = s;
		out->len = 2;
		*consumed = 2;
		return RM_SMTP_ADDR_OK;
	}
	if (len >= 2 && s[1] == '@') {
		err = parse_route(&sc, out);
		if (err != RM_SMTP_ADDR_OK)
			return err;
	}
	err = parse_mailbox(&sc, out);
	if (err != RM_SMTP_ADDR_OK)
		return err;
	if (sc.pos >= len || s[sc.pos] != '>')
		return RM_SMTP_ADDR_E_NO_CLOSE;
	sc.pos++;
	err = check_lengths(&sc, out, sc.pos);
	if (err != RM_SMTP_ADDR_OK)
		return err;
	out->text = s;
	out->len = sc.pos;
	*consumed = sc.pos;
	return RM_SMTP_ADDR_OK;
}

enum rm_smtp_addr_err rm_smtp_mailbox_parse(const uint8_t *s, size_t len, unsigned flags,
					    const struct rm_smtp_addr_limits *lim,
					    struct rm_smtp_path *out)
{
	struct scan sc = { s, len, 0, flags, lim != NULL ? lim : &default_limits };
	enum rm_smtp_addr_err err;

	memset(out, 0, sizeof(*out));
	err = parse_mailbox(&sc, out);
	if (err != RM_SMTP_ADDR_OK)
		return err;
	if (sc.pos != len)
		return RM_SMTP_ADDR_E_TRAILING;
	err = check_lengths(&sc, out, len + 2);
	if (err != RM_SMTP_ADDR_OK)
		return err;
	out->text = s;
	out->len = len;
	return RM_SMTP_ADDR_OK;
}

enum rm_smtp_addr_err rm_smtp_domain_parse(const uint8_t *s, size_t len, unsigned flags,
					   const struct rm_smtp_addr_limits *lim,
					   struct rm_smtp_domain *out)
{
	struct scan sc = { s, len, 0, flags, lim != NULL ? lim : &default_limits };
	enum rm_smtp_addr_err err = parse_domain(&sc, out, true);

	if (err != RM_SMTP_ADDR_OK)
		return err;
	if (sc.pos != len)
		return RM_SMTP_ADDR_E_TRAILING;
	if (out->len > sc.lim->domain_bytes_max)
		return RM_SMTP_ADDR_E_DOMAIN_TOO_LONG;
	return RM_SMTP_ADDR_OK;
}

ssize_t rm_smtp_local_unquote(const struct rm_smtp_path *p, uint8_t *out, size_t cap)
{
	size_t i = 0, n = 0;
	uint8_t c;

	if (p->local_unquoted_len > cap)
		return -1;
	while (local_next(p, &i, &c))
		out[n++] = c;
	RM_ASSERT(n == p->local_unquoted_len);
	return (ssize_t)n;
}

/* Whether a local part's content can be written as a Dot-string. */
static bool local_is_dot_string(const struct rm_smtp_path *p)
{
	size_t i = 0;
	uint8_t c;
	bool need_atom = true;

	while (local_next(p, &i, &c)) {
		if (c == '.') {
			if (need_atom)
				return false;
			need_atom = true;
			continue;
		}
		/* Content >= 0x80 is well-formed UTF-8 that parsed under the UTF8 flag. */
		if (c < 0x80 && !is_atext(c))
			return false;
		need_atom = false;
	}
	return !need_atom;
}

ssize_t rm_smtp_mailbox_render(const struct rm_smtp_path *p, uint8_t *out, size_t cap)
{
	size_t n = 0, i = 0;
	uint8_t c;

	if (p->null)
		return 0;
	if (!p->local_quoted || local_is_dot_string(p)) {
		if (p->local_unquoted_len > cap)
			return -1;
		while (local_next(p, &i, &c))
			out[n++] = c;
	} else {
		if (cap < 2)
			return -1;
		out[n++] = '"';
		while (local_next(p, &i, &c)) {
			bool esc = c == '"' || c == '\\';

			if (n + esc + 1 > cap - 1)
				return -1;
			if (esc)
				out[n++] = '\\';
			out[n++] = c;
		}
		out[n++] = '"';
	}
	if (p->domain.kind != RM_SMTP_DOMAIN_NONE) {
		if (cap - n < 1 + p->domain.len)
			return -1;
		out[n++] = '@';
		memcpy(out + n, p->domain.text, p->domain.len);
		n += p->domain.len;
	}
	return (ssize_t)n;
}

ssize_t rm_smtp_path_render(const struct rm_smtp_path *p, uint8_t *out, size_t cap)
{
	ssize_t n;

	if (cap < 2)
		return -1;
	out[0] = '<';
	n = rm_smtp_mailbox_render(p, out + 1, cap - 2);
	if (n < 0)
		return -1;
	out[n + 1] = '>';
	return n + 2;
}

ssize_t rm_smtp_domain_normalise(const uint8_t *d, size_t len, uint8_t *out, size_t cap)
{
	if (len > 0 && d[len - 1] == '.')
		len--;
	if (len > cap)
		return -1;
	for (size_t i = 0; i < len; i++)
		out[i] = d[i] >= 'A' && d[i] <= 'Z' ? (uint8_t)(d[i] | 0x20) : d[i];
	return (ssize_t)len;
}

bool rm_smtp_mailbox_split(const uint8_t *s, size_t len, size_t *at)
{
	const uint8_t *p = len > 0 ? memrchr(s, '@', len) : NULL;

	if (p == NULL)
		return false;
	*at = (size_t)(p - s);
	return true;
}

const char *rm_smtp_addr_err_text(enum rm_smtp_addr_err err)
{
	static const char *const text[RM_SMTP_ADDR_E_COUNT] = {
		[RM_SMTP_ADDR_OK] = "ok",
		[RM_SMTP_ADDR_E_NO_OPEN] = "no '<' at the start of the path",
		[RM_SMTP_ADDR_E_NO_CLOSE] = "no '>' after the mailbox",
		[RM_SMTP_ADDR_E_NULL] = "null path not allowed here",
		[RM_SMTP_ADDR_E_ROUTE] = "bad source route",
		[RM_SMTP_ADDR_E_LOCAL] = "bad local part",
		[RM_SMTP_ADDR_E_NO_AT] = "no @domain after the local part",
		[RM_SMTP_ADDR_E_DOMAIN] = "bad domain",
		[RM_SMTP_ADDR_E_LITERAL] = "bad address literal",
		[RM_SMTP_ADDR_E_LABEL_TOO_LONG] = "domain label too long",
		[RM_SMTP_ADDR_E_LOCAL_TOO_LONG] = "local part too long",
		[RM_SMTP_ADDR_E_DOMAIN_TOO_LONG] = "domain too long",
		[RM_SMTP_ADDR_E_PATH_TOO_LONG] = "path too long",
		[RM_SMTP_ADDR_E_UTF8] = "non-ASCII address without SMTPUTF8",
		[RM_SMTP_ADDR_E_BAD_UTF8] = "malformed UTF-8",
		[RM_SMTP_ADDR_E_TRAILING] = "bytes after the address",
	};

	if ((unsigned)err >= RM_SMTP_ADDR_E_COUNT)
		return "unknown error";
	return text[err];
}
