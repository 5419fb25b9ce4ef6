/*
 * NAME
 *	smtp_reply - SMTP server replies: code, enhanced status code, text
 * SUMMARY
 *	See proto/smtp_reply.h for the interface.
 * DESCRIPTION
 *	Every line is written as a continuation ("CCC-"); rm_smtp_reply_end
 *	turns the '-' of the last one into ' ' and ends it, so a caller can add
 *	lines in a loop without knowing which is last.  A last line with neither enhanced
 *	code nor text becomes "CCC" CRLF rather than "CCC " CRLF (RFC 5321
 *	4.2: the SP comes only with a textstring).
 *
 *	Writes go through put(), which refuses (and fails the reply) rather
 *	than pass cap; after a failure nothing more is written.
 * DIAGNOSTICS
 *	See the header.
 */
#include <string.h>

#include "core/log.h"
#include "proto/smtp_reply.h"

bool rm_smtp_reply_code_valid(unsigned code)
{
	return code >= 200 && code <= 599 && (code / 10) % 10 <= 5;
}

/* 1-3 digits at e[*i]; false if none or more. */
static bool digits_1_3(const char *e, size_t *i)
{
	size_t start = *i;

	while (e[*i] >= '0' && e[*i] <= '9' && *i - start < 3)
		(*i)++;
	return *i > start && !(e[*i] >= '0' && e[*i] <= '9');
}

bool rm_smtp_enhanced_valid(const char *e, unsigned code)
{
	size_t i = 2;

	if (!rm_smtp_reply_code_valid(code))
		return false;
	if (e == NULL)
		return true;
	/* RFC 3463 classes are 2, 4 and 5 and must match the reply. */
	if (code / 100 == 3 || e[0] != (char)('0' + code / 100) || e[1] != '.')
		return false;
	if (!digits_1_3(e, &i) || e[i++] != '.')
		return false;
	if (!digits_1_3(e, &i))
		return false;
	return e[i] == '\0';
}

/* Whether n more bytes fit; if not, the reply fails (and stays failed). */
static bool reserve(struct rm_smtp_reply *r, size_t n)
{
	if (!r->failed && r->cap - r->len < n)
		r->failed = true;
	return !r->failed;
}

static void put(struct rm_smtp_reply *r, const void *p, size_t n)
{
	if (!reserve(r, n))
		return;
	memcpy(r->buf + r->len, p, n);
	r->len += n;
}

/* Text bytes, each outside RFC 5321 textstring (HT, 32-126) as '?'. */
static void put_text(struct rm_smtp_reply *r, const char *text, size_t n)
{
	if (!reserve(r, n))
		return;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)text[i];

		if (c != '\t' && (c < 32 || c > 126)) {
			c = '?';
			r->replaced++;
		}
		r->buf[r->len++] = c;
	}
}

static size_t prefix_bytes(const struct rm_smtp_reply *r)
{
	return 4 + (r->enhanced_len > 0 ? (size_t)r->enhanced_len + 1 : 0);
}

/*
 * Ends the line before, if any, then writes "CCC-" and the enhanced code;
 * the text, if any, follows after a space.  A line's CRLF is written only
 * once it is known not to be the last (or by end), so that an empty last
 * line "CCC" CRLF never needs a byte more than it takes.
 */
static void line_start(struct rm_smtp_reply *r, bool has_text)
{
	if (r->lines > 0)
		put(r, "\r\n", 2);
	r->last_line = r->len;
	put(r, r->code, 3);
	put(r, "-", 1);
	if (r->enhanced_len > 0) {
		put(r, r->enhanced, r->enhanced_len);
		if (has_text)
			put(r, " ", 1);
	}
	r->lines++;
}

bool rm_smtp_reply_begin(struct rm_smtp_reply *r, uint8_t *buf, size_t cap, unsigned code,
			 const char *enhanced)
{
	memset(r, 0, sizeof(*r));
	r->buf = buf;
	r->cap = cap;
	r->line_bytes_max = RM_SMTP_REPLY_LINE_BYTES_MAX;
	if (!rm_smtp_enhanced_valid(enhanced, code)) {
		r->failed = true;
		return false;
	}
	r->code[0] = (char)('0' + code / 100);
	r->code[1] = (char)('0' + code / 10 % 10);
	r->code[2] = (char)('0' + code % 10);
	if (enhanced != NULL) {
		size_t n = strlen(enhanced);	/* validated: at most 11 */

		RM_ASSERT(n < sizeof(r->enhanced));
		memcpy(r->enhanced, enhanced, n);
		r->enhanced_len = (uint8_t)n;
	}
	return true;
}

void rm_smtp_reply_add(struct rm_smtp_reply *r, const char *text, size_t len)
{
	size_t off = 0, room;

	if (r->failed)
		return;
	if (r->line_bytes_max < RM_SMTP_REPLY_LINE_BYTES_MIN) {
		r->failed = true;
		return;
	}
	room = r->line_bytes_max - prefix_bytes(r) - 2;	/* >= 4 */
	/* Each round writes one line of at least min(room, rest) bytes. */
	do {
		size_t take = len - off < room ? len - off : room;

		line_start(r, take > 0);
		put_text(r, text + off, take);
		off += take;
	} while (off < len && !r->failed);
}

ssize_t rm_smtp_reply_end(struct rm_smtp_reply *r)
{
	if (r->failed || r->lines == 0)
		return -1;
	RM_ASSERT(r->len >= r->last_line + 4 && r->buf[r->last_line + 3] == '-');
	if (r->len - r->last_line == 4) {
		/* "CCC-": nothing after the code, so no space either. */
		r->buf[r->last_line + 3] = '\r';
		put(r, "\n", 1);
	} else {
		r->buf[r->last_line + 3] = ' ';
		put(r, "\r\n", 2);
	}
	return r->failed ? -1 : (ssize_t)r->len;
}

ssize_t rm_smtp_reply_line(uint8_t *buf, size_t cap, unsigned code, const char *enhanced,
			   const char *text)
{
	struct rm_smtp_reply r;

	rm_smtp_reply_begin(&r, buf, cap, code, enhanced);
	rm_smtp_reply_add(&r, text, strlen(text));
	return rm_smtp_reply_end(&r);
}

ssize_t rm_smtp_reply_status(uint8_t *buf, size_t cap, const struct rm_smtp_status *st)
{
	return rm_smtp_reply_line(buf, cap, st->code, st->enhanced, st->text);
}

static bool is_alnum(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 5321 ehlo-line: ehlo-keyword *( SP ehlo-param ). */
static bool ehlo_line_valid(const char *s, size_t len)
{
	size_t i = 0;

	if (len == 0 || !is_alnum((uint8_t)s[0]))
		return false;
	while (i < len && (is_alnum((uint8_t)s[i]) || s[i] == '-'))
		i++;
	while (i < len) {
		size_t start;

		if (s[i++] != ' ')
			return false;
		start = i;
		while (i < len && (uint8_t)s[i] >= 33 && (uint8_t)s[i] <= 126)
			i++;
		if (i == start)
			return false;
	}
	return true;
}

ssize_t rm_smtp_reply_ehlo(uint8_t *buf, size_t cap, const char *domain, const char *greeting,
			   const char *const *keywords, size_t n)
{
	struct rm_smtp_reply r;
	size_t dlen = strlen(domain), glen = greeting != NULL ? strlen(greeting) : 0;

	rm_smtp_reply_begin(&r, buf, cap, 250, NULL);
	if (dlen == 0)
		return -1;
	for (size_t i = 0; i < dlen; i++)
		if ((uint8_t)domain[i] < 33 || (uint8_t)domain[i] > 126)
			return -1;
	/* The first line is never continued: a client would read a keyword there. */
	if (4 + dlen + (glen > 0 ? 1 + glen : 0) + 2 > r.line_bytes_max)
		return -1;
	line_start(&r, true);
	put(&r, domain, dlen);
	if (glen > 0) {
		put(&r, " ", 1);
		put_text(&r, greeting, glen);
	}
	for (size_t k = 0; k < n; k++) {
		size_t klen = strlen(keywords[k]);

		if (!ehlo_line_valid(keywords[k], klen) || 4 + klen + 2 > r.line_bytes_max)
			return -1;
		line_start(&r, true);
		put(&r, keywords[k], klen);
	}
	return rm_smtp_reply_end(&r);
}
