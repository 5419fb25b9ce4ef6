/*
 * NAME
 *	test_smtp_client - unit tests of proto/smtp_client
 * DESCRIPTION
 *	Replies: golden cases (one line, multi-line, with and without
 *	enhanced codes, a 3xx and a class that does not match, "250" alone,
 *	bare LF, CR and control bytes in text, pipelined replies back to
 *	back) and every protocol error (bad syntax, codes out of range, a code
 *	change mid-reply, too many lines, a line one byte too long) with the
 *	exact byte where it is seen; each is fed whole, cut at every position
 *	and byte by byte, in heap chunks of exact size, and must give the same
 *	replies, error and consumed count every time.  Then lines past 512
 *	bytes, text past the buffer (truncated, not an error).
 *
 *	EHLO: the answers of Postfix, Exim, Gmail and Exchange (with the old
 *	"AUTH=LOGIN" form), keywords in lower case, SIZE forms, a truncated
 *	text's last line, replies that are not 250.
 *
 *	Writers: every command with and without the extensions, into buffers
 *	of every size up to the command (too small is -1, never a write past
 *	the exact heap buffer); every injection attempt (CR, LF, NUL, control
 *	bytes, '>' and parameters in paths, ENVID and ORCPT) refused; the
 *	longest accepted arguments fit RM_SMTP_CLIENT_CMD_BYTES_MAX and
 *	RM_SMTP_CLIENT_AUTH_BYTES_MAX.
 *
 *	Dot-stuffing: golden cases, then those and a few thousand generated
 *	inputs (bytes from ". \r \n a") against a reference written here
 *	(whole input, byte by byte, from the header's rules), cut at every
 *	position and with output caps from 1 up, then decoded again by
 *	proto/smtp_data, which must give back the normalised content.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/smtp_client.h"
#include "proto/smtp_data.h"

/* ---- replies ------------------------------------------------------------- */

#define REPLIES_MAX 8

struct got_reply {
	unsigned code;
	char enh[RM_SMTP_CLIENT_ENHANCED_BYTES_MAX + 1];
	char text[RM_SMTP_CLIENT_REPLY_BYTES_MAX + 1];
	size_t text_len;
	unsigned lines, replaced;
	bool truncated, bare_lf, long_line;
	size_t end;			/* stream offset just after the reply */
};

struct got {
	struct got_reply r[REPLIES_MAX];
	size_t n;
	enum rm_smtp_replyp_err err;
	size_t consumed;
};

static void record(const struct rm_smtp_server_reply *out, size_t end, struct got *g)
{
	struct got_reply *r;

	assert_true(g->n < REPLIES_MAX);
	r = &g->r[g->n++];
	assert_non_null(out->text);
	assert_true(out->text_len <= RM_SMTP_CLIENT_REPLY_BYTES_MAX);
	assert_int_equal(out->text[out->text_len], '\0');
	r->code = out->code;
	memcpy(r->enh, out->enhanced, sizeof(r->enh));
	memcpy(r->text, out->text, out->text_len + 1);
	r->text_len = out->text_len;
	r->lines = out->lines;
	r->replaced = out->replaced;
	r->truncated = out->text_truncated;
	r->bare_lf = out->bare_lf;
	r->long_line = out->long_line;
	r->end = end;
}

/*
 * Feeds in[0..len) cut at cuts[0..ncuts) (ascending), or byte by byte when
 * cuts is NULL and ncuts is 1, each chunk a heap copy of exact size.
 */
static void parse(const uint8_t *in, size_t len, size_t line_max, unsigned lines_max,
		  const size_t *cuts, size_t ncuts, struct got *g)
{
	struct rm_smtp_replyp *p = malloc(sizeof(*p));
	size_t pos = 0, ci = 0;

	assert_non_null(p);
	memset(g, 0, sizeof(*g));
	rm_smtp_replyp_init(p, line_max, lines_max);
	while (pos < len && rm_smtp_replyp_error(p) == RM_SMTP_REPLYP_OK) {
		size_t next = cuts == NULL ? (ncuts == 1 ? pos + 1 : len) : (ci < ncuts ? cuts[ci++] : len);
		size_t clen = next - pos, off = 0;
		uint8_t *chunk = malloc(clen ? clen : 1);

		assert_non_null(chunk);
		memcpy(chunk, in + pos, clen);
		for (size_t guard = 0; off < clen; guard++) {
			struct rm_smtp_server_reply out;
			size_t n = rm_smtp_replyp_feed(p, chunk + off, clen - off, &out);

			assert_true(guard <= clen);
			assert_true(n <= clen - off);
			if (out.complete)
				record(&out, pos + off + n, g);
			off += n;
			if (n == 0)
				break;
		}
		free(chunk);
		pos += off;
		if (off < clen)
			break;
	}
	g->err = rm_smtp_replyp_error(p);
	g->consumed = pos;
	/* A parser in error takes nothing more. */
	if (g->err != RM_SMTP_REPLYP_OK) {
		struct rm_smtp_server_reply out;

		assert_int_equal(rm_smtp_replyp_feed(p, (const uint8_t *)"250 x\r\n", 7, &out), 0);
		assert_false(out.complete);
	}
	free(p);
}

static void same(const struct got *a, const struct got *b)
{
	assert_int_equal(a->n, b->n);
	assert_int_equal(a->err, b->err);
	assert_int_equal(a->consumed, b->consumed);
	for (size_t i = 0; i < a->n; i++) {
		const struct got_reply *x = &a->r[i], *y = &b->r[i];

		assert_int_equal(x->code, y->code);
		assert_string_equal(x->enh, y->enh);
		assert_int_equal(x->text_len, y->text_len);
		assert_memory_equal(x->text, y->text, x->text_len);
		assert_int_equal(x->lines, y->lines);
		assert_int_equal(x->replaced, y->replaced);
		assert_int_equal(x->truncated, y->truncated);
		assert_int_equal(x->bare_lf, y->bare_lf);
		assert_int_equal(x->long_line, y->long_line);
		assert_int_equal(x->end, y->end);
	}
}

/* Whole, at every cut (every `step`-th), at every pair of cuts when short, byte by byte. */
static void parse_every_way(const uint8_t *in, size_t len, size_t line_max, unsigned lines_max,
			    size_t step, struct got *whole)
{
	static struct got other;

	parse(in, len, line_max, lines_max, NULL, 0, whole);
	for (size_t c = 0; c <= len; c += step) {
		parse(in, len, line_max, lines_max, &c, 1, &other);
		same(whole, &other);
	}
	if (len <= 64) {
		for (size_t a = 0; a <= len; a++) {
			for (size_t b = a; b <= len; b++) {
				size_t cuts[2] = { a, b };

				parse(in, len, line_max, lines_max, cuts, 2, &other);
				same(whole, &other);
			}
		}
	}
	parse(in, len, line_max, lines_max, NULL, 1, &other);
	same(whole, &other);
}

#define W_BARE_LF 0x01u
#define W_LONG 0x02u
#define W_TRUNC 0x04u

struct want_reply {
	unsigned code;
	const char *enh;
	const char *text;
	unsigned lines;
	unsigned replaced;
	unsigned flags;
};

struct reply_case {
	const char *name;
	const char *in;
	size_t line_max;		/* 0: RM_SMTP_CLIENT_LINE_BYTES_DEFAULT */
	unsigned lines_max;		/* 0: RM_SMTP_CLIENT_LINES_DEFAULT */
	unsigned nwant;
	struct want_reply want[3];
	enum rm_smtp_replyp_err err;
	unsigned consumed;		/* ALL: all of it */
};

#define ALL UINT_MAX

static const struct reply_case reply_cases[] = {
	{ "one line, enhanced", "250 2.0.0 Ok\r\n", 0, 0, 1, { { 250, "2.0.0", "Ok", 1, 0, 0 } },
	  RM_SMTP_REPLYP_OK, ALL },
	{ "greeting", "220 mx.example.org ESMTP Postfix (Debian/GNU)\r\n", 0, 0, 1,
	  { { 220, "", "mx.example.org ESMTP Postfix (Debian/GNU)", 1, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "250 alone", "250\r\n", 0, 0, 1, { { 250, "", "", 1, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "250 and SP", "250 \r\n", 0, 0, 1, { { 250, "", "", 1, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "enhanced alone", "250 2.1.0\r\n", 0, 0, 1, { { 250, "2.1.0", "", 1, 0, 0 } },
	  RM_SMTP_REPLYP_OK, ALL },
	{ "multi-line", "250-mx.example.org\r\n250-PIPELINING\r\n250 8BITMIME\r\n", 0, 0, 1,
	  { { 250, "", "mx.example.org\nPIPELINING\n8BITMIME", 3, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "multi-line, enhanced (Gmail)",
	  "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
	  "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
	  "550 5.1.1 unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser a1-20020a - gsmtp\r\n",
	  0, 0, 1,
	  { { 550, "5.1.1",
	      "The email account that you tried to reach does not exist. Please try\n"
	      "double-checking the recipient's email address for typos or\n"
	      "unnecessary spaces. https://support.google.com/mail/?p=NoSuchUser a1-20020a - gsmtp",
	      3, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "enhanced on some lines", "451-4.7.1 Greylisted\r\n451 try later\r\n", 0, 0, 1,
	  { { 451, "4.7.1", "Greylisted\ntry later", 2, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "first enhanced kept", "550-5.7.1 a\r\n550 5.7.26 b\r\n", 0, 0, 1,
	  { { 550, "5.7.1", "a\nb", 2, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "empty continuation", "250-2.0.0\r\n250 2.0.0 Ok\r\n", 0, 0, 1,
	  { { 250, "2.0.0", "\nOk", 2, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "longest enhanced", "553 5.123.456 x\r\n", 0, 0, 1, { { 553, "5.123.456", "x", 1, 0, 0 } },
	  RM_SMTP_REPLYP_OK, ALL },
	{ "not enhanced: 4 digits", "553 5.1234.1 x\r\n", 0, 0, 1,
	  { { 553, "", "5.1234.1 x", 1, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "not enhanced: no SP", "250 2.0.0Ok\r\n", 0, 0, 1, { { 250, "", "2.0.0Ok", 1, 0, 0 } },
	  RM_SMTP_REPLYP_OK, ALL },
	{ "not enhanced: class", "250 5.0.0 x\r\n", 0, 0, 1, { { 250, "", "5.0.0 x", 1, 0, 0 } },
	  RM_SMTP_REPLYP_OK, ALL },
	{ "not enhanced: 3xx", "354 2.0.0 go ahead\r\n", 0, 0, 1,
	  { { 354, "", "2.0.0 go ahead", 1, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "not enhanced: short", "250 2.0\r\n", 0, 0, 1, { { 250, "", "2.0", 1, 0, 0 } },
	  RM_SMTP_REPLYP_OK, ALL },
	{ "bare LF", "250-mx\n250 SIZE 1000\n", 0, 0, 1,
	  { { 250, "", "mx\nSIZE 1000", 2, 0, W_BARE_LF } }, RM_SMTP_REPLYP_OK, ALL },
	{ "bare LF after code", "250\n", 0, 0, 1, { { 250, "", "", 1, 0, W_BARE_LF } },
	  RM_SMTP_REPLYP_OK, ALL },
	{ "CR and controls in text", "250 a\rb\x01" "c\x7f\xc3\xa9\t.\r\n", 0, 0, 1,
	  { { 250, "", "a?b?c???\t.", 1, 5, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "CR in head", "250 \r2.0.0 x\r\n", 0, 0, 1, { { 250, "", "?2.0.0 x", 1, 1, 0 } },
	  RM_SMTP_REPLYP_OK, ALL },
	{ "CR CR LF", "250 ok\r\r\n", 0, 0, 1, { { 250, "", "ok?", 1, 1, 0 } }, RM_SMTP_REPLYP_OK,
	  ALL },
	{ "pipelined", "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n", 0, 0, 3,
	  { { 250, "2.1.0", "Ok", 1, 0, 0 }, { 250, "2.1.5", "Ok", 1, 0, 0 },
	    { 354, "", "End data with <CR><LF>.<CR><LF>", 1, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "incomplete", "250-a\r\n25", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "line at the limit", "250 0123456789\r\n", 16, 0, 1, { { 250, "", "0123456789", 1, 0, 0 } },
	  RM_SMTP_REPLYP_OK, ALL },
	{ "line one past the limit", "250 01234567890\r\n", 16, 0, 0, { { 0 } },
	  RM_SMTP_REPLYP_E_LINE_TOO_LONG, 17 },
	{ "bare-LF line past the limit", "250 012345678901\n", 16, 0, 0, { { 0 } },
	  RM_SMTP_REPLYP_E_LINE_TOO_LONG, 17 },
	{ "lines at the limit", "250-a\r\n250-b\r\n250 c\r\n", 0, 3, 1,
	  { { 250, "", "a\nb\nc", 3, 0, 0 } }, RM_SMTP_REPLYP_OK, ALL },
	{ "too many lines", "250-a\r\n250-b\r\n250-c\r\n250 d\r\n", 0, 3, 0, { { 0 } },
	  RM_SMTP_REPLYP_E_TOO_MANY_LINES, 18 },
	{ "code changed", "250-a\r\n251 b\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_CODE_CHANGED, 10 },
	{ "class changed", "250-a\r\n550 b\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_CODE_CHANGED, 8 },
	{ "after a good reply", "250 ok\r\nxyz\r\n", 0, 0, 1, { { 250, "", "ok", 1, 0, 0 } },
	  RM_SMTP_REPLYP_E_SYNTAX, 9 },
	{ "four digits", "2500 x\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_SYNTAX, 4 },
	{ "letter in code", "2x0 x\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_SYNTAX, 2 },
	{ "tab after code", "250\tx\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_SYNTAX, 4 },
	{ "empty line", "\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_SYNTAX, 1 },
	{ "CR after code", "250\rx\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_SYNTAX, 5 },
	{ "code 600", "600 x\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_CODE, 1 },
	{ "code 199", "199 x\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_CODE, 1 },
	{ "code 260", "260 x\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_CODE, 2 },
	{ "HTTP", "HTTP/1.1 400 Bad Request\r\n", 0, 0, 0, { { 0 } }, RM_SMTP_REPLYP_E_SYNTAX, 1 },
};

static void test_reply_golden(void **state)
{
	static struct got g;

	for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
		const struct reply_case *c = &reply_cases[i];
		size_t len = strlen(c->in);
		size_t line_max = c->line_max ? c->line_max : RM_SMTP_CLIENT_LINE_BYTES_DEFAULT;
		unsigned lines_max = c->lines_max ? c->lines_max : RM_SMTP_CLIENT_LINES_DEFAULT;

		print_message("reply case: %s\n", c->name);
		parse_every_way((const uint8_t *)c->in, len, line_max, lines_max, 1, &g);
		assert_int_equal(g.err, c->err);
		assert_int_equal(g.consumed, c->consumed == ALL ? len : c->consumed);
		assert_int_equal(g.n, c->nwant);
		for (size_t k = 0; k < c->nwant; k++) {
			const struct want_reply *w = &c->want[k];

			assert_int_equal(g.r[k].code, w->code);
			assert_string_equal(g.r[k].enh, w->enh);
			assert_string_equal(g.r[k].text, w->text);
			assert_int_equal(g.r[k].text_len, strlen(w->text));
			assert_int_equal(g.r[k].lines, w->lines);
			assert_int_equal(g.r[k].replaced, w->replaced);
			assert_int_equal(g.r[k].bare_lf, (w->flags & W_BARE_LF) != 0);
			assert_int_equal(g.r[k].long_line, (w->flags & W_LONG) != 0);
			assert_int_equal(g.r[k].truncated, (w->flags & W_TRUNC) != 0);
		}
		if (c->nwant > 0 && c->err == RM_SMTP_REPLYP_OK && c->consumed == ALL)
			assert_int_equal(g.r[c->nwant - 1].end, len);
	}
}

/* Lines past RFC 5321's 512 bytes: accepted up to the limit and noted. */
static void test_reply_long_line(void **state)
{
	static uint8_t in[2100];
	static struct got g;
	size_t n = 0;

	memcpy(in, "250 ", 4);
	n = 4;
	while (n < 600)
		in[n++] = 'x';
	memcpy(in + n, "\r\n", 2);
	n += 2;
	parse_every_way(in, n, RM_SMTP_CLIENT_LINE_BYTES_DEFAULT, RM_SMTP_CLIENT_LINES_DEFAULT, 1, &g);
	assert_int_equal(g.err, RM_SMTP_REPLYP_OK);
	assert_int_equal(g.n, 1);
	assert_true(g.r[0].long_line);
	assert_int_equal(g.r[0].text_len, 596);

	/* 512 exactly is not long. */
	in[510] = '\r';
	in[511] = '\n';
	parse(in, 512, RM_SMTP_CLIENT_LINE_BYTES_DEFAULT, RM_SMTP_CLIENT_LINES_DEFAULT, NULL, 0, &g);
	assert_int_equal(g.n, 1);
	assert_false(g.r[0].long_line);

	/* With the RFC limit, 513 bytes fail at the 513th. */
	in[510] = 'x';
	in[511] = '\r';
	in[512] = '\n';
	parse_every_way(in, 513, RM_SMTP_REPLY_LINE_BYTES_MAX, RM_SMTP_CLIENT_LINES_DEFAULT, 1, &g);
	assert_int_equal(g.err, RM_SMTP_REPLYP_E_LINE_TOO_LONG);
	assert_int_equal(g.consumed, 513);

	/* A line that never ends fails at the limit, not later. */
	memset(in + 4, 'y', sizeof(in) - 4);
	parse_every_way(in, sizeof(in), RM_SMTP_CLIENT_LINE_BYTES_DEFAULT, RM_SMTP_CLIENT_LINES_DEFAULT,
			13, &g);
	assert_int_equal(g.err, RM_SMTP_REPLYP_E_LINE_TOO_LONG);
	assert_int_equal(g.consumed, RM_SMTP_CLIENT_LINE_BYTES_DEFAULT + 1);
}

/* 64 lines of 100 bytes: more text than the buffer holds, which is no error. */
static void test_reply_truncated(void **state)
{
	static uint8_t in[64 * 110];
	static struct got g;
	size_t n = 0;

	for (unsigned l = 0; l < 64; l++) {
		n += (size_t)snprintf((char *)in + n, sizeof(in) - n, "452%c4.5.3 ", l == 63 ? ' ' : '-');
		for (unsigned k = 0; k < 90; k++)
			in[n++] = (uint8_t)('a' + (l + k) % 26);
		in[n++] = '\r';
		in[n++] = '\n';
	}
	parse_every_way(in, n, RM_SMTP_CLIENT_LINE_BYTES_DEFAULT, 64, 7, &g);
	assert_int_equal(g.err, RM_SMTP_REPLYP_OK);
	assert_int_equal(g.n, 1);
	assert_int_equal(g.r[0].code, 452);
	assert_string_equal(g.r[0].enh, "4.5.3");
	assert_int_equal(g.r[0].lines, 64);
	assert_true(g.r[0].truncated);
	assert_int_equal(g.r[0].text_len, RM_SMTP_CLIENT_REPLY_BYTES_MAX);
	/* The text kept is the start of what was sent: 90 letters and an LF per line. */
	assert_int_equal(g.r[0].text[90], '\n');
	assert_int_equal(g.r[0].text[91], 'b');

	/* One line more is an error at its separator. */
	parse(in, n, RM_SMTP_CLIENT_LINE_BYTES_DEFAULT, 63, NULL, 0, &g);
	assert_int_equal(g.err, RM_SMTP_REPLYP_E_TOO_MANY_LINES);
	assert_int_equal(g.consumed, 62 * 102 + 4);
}

static void test_reply_err_text(void **state)
{
	for (unsigned e = 0; e < RM_SMTP_REPLYP_E_COUNT; e++) {
		const char *t = rm_smtp_replyp_err_text((enum rm_smtp_replyp_err)e);

		assert_non_null(t);
		assert_true(strlen(t) > 0);
	}
}

/* ---- EHLO ---------------------------------------------------------------- */

/* The one reply of text s, parsed. */
static void ehlo_of(const char *s, struct rm_smtp_ehlo *e)
{
	static struct got g;
	struct rm_smtp_server_reply r;

	parse_every_way((const uint8_t *)s, strlen(s), RM_SMTP_CLIENT_LINE_BYTES_DEFAULT,
			RM_SMTP_CLIENT_LINES_DEFAULT, strlen(s) > 64 ? 5 : 1, &g);
	assert_int_equal(g.err, RM_SMTP_REPLYP_OK);
	assert_int_equal(g.n, 1);
	memset(&r, 0, sizeof(r));
	r.complete = true;
	r.code = (uint16_t)g.r[0].code;
	r.text = g.r[0].text;
	r.text_len = g.r[0].text_len;
	r.lines = g.r[0].lines;
	r.text_truncated = g.r[0].truncated;
	rm_smtp_ehlo_parse(&r, e);
}

static void test_ehlo_postfix(void **state)
{
	struct rm_smtp_ehlo e;

	ehlo_of("250-mail.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
		"250-ETRN\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n"
		"250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n", &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_PIPELINING | RM_SMTP_EHLO_SIZE | RM_SMTP_EHLO_STARTTLS |
				RM_SMTP_EHLO_ENHANCEDSTATUSCODES | RM_SMTP_EHLO_8BITMIME |
				RM_SMTP_EHLO_DSN | RM_SMTP_EHLO_SMTPUTF8 | RM_SMTP_EHLO_CHUNKING);
	assert_int_equal(e.size_bytes_max, 10240000);
	assert_int_equal(e.auth_mechs, 0);
}

static void test_ehlo_exim(void **state)
{
	struct rm_smtp_ehlo e;

	ehlo_of("250-mx.example.org Hello client.example.net [192.0.2.1]\r\n250-SIZE 52428800\r\n"
		"250-8BITMIME\r\n250-PIPELINING\r\n250-PIPE_CONNECT\r\n250-AUTH PLAIN LOGIN\r\n"
		"250-CHUNKING\r\n250-STARTTLS\r\n250-PRDR\r\n250 HELP\r\n", &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_SIZE | RM_SMTP_EHLO_8BITMIME | RM_SMTP_EHLO_PIPELINING |
				RM_SMTP_EHLO_AUTH | RM_SMTP_EHLO_CHUNKING | RM_SMTP_EHLO_STARTTLS);
	assert_int_equal(e.size_bytes_max, 52428800);
	assert_int_equal(e.auth_mechs, RM_SMTP_AUTH_MECH_PLAIN | RM_SMTP_AUTH_MECH_LOGIN);
}

static void test_ehlo_gmail(void **state)
{
	struct rm_smtp_ehlo e;

	ehlo_of("250-mx.google.com at your service, [192.0.2.1]\r\n250-SIZE 157286400\r\n"
		"250-8BITMIME\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n"
		"250-CHUNKING\r\n250 SMTPUTF8\r\n", &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_SIZE | RM_SMTP_EHLO_8BITMIME | RM_SMTP_EHLO_STARTTLS |
				RM_SMTP_EHLO_ENHANCEDSTATUSCODES | RM_SMTP_EHLO_PIPELINING |
				RM_SMTP_EHLO_CHUNKING | RM_SMTP_EHLO_SMTPUTF8);
	assert_int_equal(e.size_bytes_max, 157286400);

	/* smtp.gmail.com after STARTTLS, on submission. */
	ehlo_of("250-smtp.gmail.com at your service, [192.0.2.1]\r\n250-SIZE 35882577\r\n"
		"250-8BITMIME\r\n250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH\r\n"
		"250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n", &e);
	assert_true(e.ext & RM_SMTP_EHLO_AUTH);
	assert_int_equal(e.auth_mechs, RM_SMTP_AUTH_MECH_PLAIN | RM_SMTP_AUTH_MECH_LOGIN);
}

static void test_ehlo_exchange(void **state)
{
	struct rm_smtp_ehlo e;

	ehlo_of("250-EXCH01.corp.example.com Hello [192.0.2.1]\r\n250-SIZE 37748736\r\n"
		"250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n"
		"250-X-ANONYMOUSTLS\r\n250-AUTH NTLM\r\n250-X-EXPS GSSAPI NTLM\r\n250-8BITMIME\r\n"
		"250-BINARYMIME\r\n250-CHUNKING\r\n250-XRDST\r\n250 XSHADOWREQUEST\r\n", &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_SIZE | RM_SMTP_EHLO_PIPELINING | RM_SMTP_EHLO_DSN |
				RM_SMTP_EHLO_ENHANCEDSTATUSCODES | RM_SMTP_EHLO_STARTTLS |
				RM_SMTP_EHLO_AUTH | RM_SMTP_EHLO_8BITMIME | RM_SMTP_EHLO_BINARYMIME |
				RM_SMTP_EHLO_CHUNKING);
	assert_int_equal(e.auth_mechs, 0);	/* NTLM only */

	/* Exchange Online submission: the pre-RFC 2554 form beside the standard one. */
	ehlo_of("250-AM0PR01CA0001.outlook.office365.com Hello [192.0.2.1]\r\n"
		"250-SIZE 157286400\r\n250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n"
		"250-AUTH LOGIN XOAUTH2\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n"
		"250 SMTPUTF8\r\n", &e);
	assert_int_equal(e.auth_mechs, RM_SMTP_AUTH_MECH_LOGIN);
	ehlo_of("250-old.example.com\r\n250-AUTH=LOGIN\r\n250 AUTH=PLAIN LOGIN CRAM-MD5\r\n", &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_AUTH);
	assert_int_equal(e.auth_mechs, RM_SMTP_AUTH_MECH_PLAIN | RM_SMTP_AUTH_MECH_LOGIN);
	ehlo_of("250-old.example.com\r\n250 AUTH=LOGIN\r\n", &e);
	assert_int_equal(e.auth_mechs, RM_SMTP_AUTH_MECH_LOGIN);
}

static void test_ehlo_forms(void **state)
{
	struct rm_smtp_ehlo e;
	struct rm_smtp_server_reply r;

	/* Any case, several spaces, REQUIRETLS and unknown keywords ignored. */
	ehlo_of("250-mx\r\n250-size  2048\r\n250-Auth plain\r\n250-starttls\r\n250-REQUIRETLS\r\n"
		"250-X-FOO bar\r\n250-pipelining\r\n250 binarymime\r\n", &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_SIZE | RM_SMTP_EHLO_AUTH | RM_SMTP_EHLO_STARTTLS |
				RM_SMTP_EHLO_PIPELINING | RM_SMTP_EHLO_BINARYMIME);
	assert_int_equal(e.size_bytes_max, 2048);
	assert_int_equal(e.auth_mechs, RM_SMTP_AUTH_MECH_PLAIN);

	/* SIZE without a value, with 0, not a number, past 2^64: the extension, no limit. */
	ehlo_of("250-mx\r\n250 SIZE\r\n", &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_SIZE);
	assert_int_equal(e.size_bytes_max, 0);
	ehlo_of("250-mx\r\n250 SIZE 0\r\n", &e);
	assert_int_equal(e.size_bytes_max, 0);
	ehlo_of("250-mx\r\n250 SIZE 10M\r\n", &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_SIZE);
	assert_int_equal(e.size_bytes_max, 0);
	ehlo_of("250-mx\r\n250 SIZE 99999999999999999999999\r\n", &e);
	assert_true(e.size_bytes_max == UINT64_MAX);
	ehlo_of("250-mx\r\n250 SIZE 18446744073709551615\r\n", &e);
	assert_true(e.size_bytes_max == UINT64_MAX);
	ehlo_of("250-mx\r\n250 SIZE 18446744073709551614\r\n", &e);
	assert_true(e.size_bytes_max == UINT64_MAX - 1);

	/* Look-alikes, and the greeting line, are no keywords. */
	ehlo_of("250-PIPELINING\r\n250-SIZEX 10\r\n250-8BITMIMEX\r\n250-DSN=1\r\n250 PIPELININ\r\n", &e);
	assert_int_equal(e.ext, 0);
	ehlo_of("250 mx.example.org\r\n", &e);
	assert_int_equal(e.ext, 0);
	/* Enhanced codes on EHLO lines (some servers) come off before the keyword. */
	ehlo_of("250-2.0.0 mx\r\n250 2.0.0 PIPELINING\r\n", &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_PIPELINING);

	/* Not 250, or not complete: nothing. */
	memset(&r, 0, sizeof(r));
	r.complete = true;
	r.code = 502;
	r.text = "mx\nPIPELINING";
	r.text_len = strlen(r.text);
	r.lines = 2;
	rm_smtp_ehlo_parse(&r, &e);
	assert_int_equal(e.ext, 0);
	r.code = 250;
	r.complete = false;
	rm_smtp_ehlo_parse(&r, &e);
	assert_int_equal(e.ext, 0);
	r.complete = true;
	rm_smtp_ehlo_parse(&r, &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_PIPELINING);
}

/* A truncated text's last line is not read: it may be a cut "SIZE 10485760". */
static void test_ehlo_truncated(void **state)
{
	static char in[8192];
	static struct got g;
	struct rm_smtp_ehlo e;
	size_t n = 0, text = 0;

	n += (size_t)snprintf(in + n, sizeof(in) - n, "250-mx.example.org\r\n250-PIPELINING\r\n");
	text = 14 + 1 + 10 + 1;
	/* Filler lines of 100 bytes of text, then one that brings the text to 4090. */
	while (text + 101 < 4090) {
		n += (size_t)snprintf(in + n, sizeof(in) - n, "250-X%099d\r\n", 0);
		text += 101;
	}
	n += (size_t)snprintf(in + n, sizeof(in) - n, "250-X%0*d\r\n", (int)(4090 - text - 2), 0);
	/* "SIZE 10485760" starts 6 bytes before the end of the buffer: "SIZE 1" is kept. */
	n += (size_t)snprintf(in + n, sizeof(in) - n, "250 SIZE 10485760\r\n");
	parse((const uint8_t *)in, n, RM_SMTP_CLIENT_LINE_BYTES_DEFAULT,
	      RM_SMTP_CLIENT_LINES_DEFAULT, NULL, 0, &g);
	assert_int_equal(g.n, 1);
	assert_true(g.r[0].truncated);
	assert_memory_equal(g.r[0].text + 4090, "SIZE 1", 6);
	ehlo_of(in, &e);
	assert_int_equal(e.ext, RM_SMTP_EHLO_PIPELINING);
	assert_int_equal(e.size_bytes_max, 0);
}

/* ---- writers ------------------------------------------------------------- */

struct wctx {
	int kind;
	const char *s1, *s2, *s3;
	const struct rm_smtp_mail_args *mail;
	const struct rm_smtp_rcpt_args *rcpt;
	const struct rm_smtp_ehlo *ehlo;
	uint64_t n;
	bool last;
};

enum { K_EHLO, K_HELO, K_MAIL, K_RCPT, K_DATA, K_BDAT, K_RSET, K_QUIT, K_STARTTLS, K_AUTH };

static ssize_t write_one(const struct wctx *w, uint8_t *buf, size_t cap)
{
	switch (w->kind) {
	case K_EHLO: return rm_smtp_write_ehlo(buf, cap, w->s1);
	case K_HELO: return rm_smtp_write_helo(buf, cap, w->s1);
	case K_MAIL: return rm_smtp_write_mail(buf, cap, w->mail, w->ehlo);
	case K_RCPT: return rm_smtp_write_rcpt(buf, cap, w->rcpt, w->ehlo);
	case K_DATA: return rm_smtp_write_data(buf, cap);
	case K_BDAT: return rm_smtp_write_bdat(buf, cap, w->n, w->last);
	case K_RSET: return rm_smtp_write_rset(buf, cap);
	case K_QUIT: return rm_smtp_write_quit(buf, cap);
	case K_STARTTLS: return rm_smtp_write_starttls(buf, cap);
	default: return rm_smtp_write_auth_plain(buf, cap, w->s1, w->s2, w->s3);
	}
}

/* The command, into exact heap buffers of every size: -1 below its length. */
static void check_writer(const struct wctx *w, const char *want)
{
	size_t wlen = strlen(want);

	for (size_t cap = 0; cap <= wlen + 2; cap++) {
		uint8_t *buf = malloc(cap ? cap : 1);
		ssize_t n;

		assert_non_null(buf);
		n = write_one(w, buf, cap);
		if (cap < wlen) {
			assert_int_equal(n, -1);
		} else {
			if (n != (ssize_t)wlen || memcmp(buf, want, wlen) != 0)
				fail_msg("wrote (%zd) '%.*s', want '%s'", n, n > 0 ? (int)n : 0,
					 (const char *)buf, want);
		}
		free(buf);
	}
}

static void check_refused(const struct wctx *w)
{
	uint8_t buf[RM_SMTP_CLIENT_AUTH_BYTES_MAX + 16];

	assert_int_equal(write_one(w, buf, sizeof(buf)), -1);
}

static const struct rm_smtp_ehlo ehlo_none = { 0, 0, 0 };
static const struct rm_smtp_ehlo ehlo_all = {
	RM_SMTP_EHLO_PIPELINING | RM_SMTP_EHLO_SIZE | RM_SMTP_EHLO_8BITMIME | RM_SMTP_EHLO_SMTPUTF8 |
	RM_SMTP_EHLO_CHUNKING | RM_SMTP_EHLO_BINARYMIME | RM_SMTP_EHLO_DSN |
	RM_SMTP_EHLO_ENHANCEDSTATUSCODES | RM_SMTP_EHLO_STARTTLS | RM_SMTP_EHLO_AUTH,
	RM_SMTP_AUTH_MECH_PLAIN, 52428800
};

static void test_write_hello(void **state)
{
	static const char *const bad[] = {
		"", "bad domain", "client.example.org\r\nRSET", "client.example.org\n", "exa_mple.org",
		"-x.example.org", "[192.0.2.256]", "[foo:bar]", "client\x01.example.org", "héllo.example",
	};
	char long_domain[300];

	check_writer(&(struct wctx){ .kind = K_EHLO, .s1 = "client.example.org" },
		     "EHLO client.example.org\r\n");
	check_writer(&(struct wctx){ .kind = K_HELO, .s1 = "client.example.org" },
		     "HELO client.example.org\r\n");
	check_writer(&(struct wctx){ .kind = K_EHLO, .s1 = "[192.0.2.1]" }, "EHLO [192.0.2.1]\r\n");
	check_writer(&(struct wctx){ .kind = K_EHLO, .s1 = "[IPv6:2001:db8::1]" },
		     "EHLO [IPv6:2001:db8::1]\r\n");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		check_refused(&(struct wctx){ .kind = K_EHLO, .s1 = bad[i] });
		check_refused(&(struct wctx){ .kind = K_HELO, .s1 = bad[i] });
	}
	memset(long_domain, 'a', sizeof(long_domain) - 1);
	long_domain[sizeof(long_domain) - 1] = '\0';
	for (size_t i = 63; i < sizeof(long_domain) - 1; i += 64)
		long_domain[i] = '.';
	check_refused(&(struct wctx){ .kind = K_EHLO, .s1 = long_domain });
}

static struct rm_smtp_mail_args mail_of(const char *from)
{
	return (struct rm_smtp_mail_args){ .reverse_path = from, .reverse_path_len = strlen(from) };
}

static void test_write_mail(void **state)
{
	struct rm_smtp_mail_args m = mail_of("sender@example.org");
	struct rm_smtp_ehlo e = ehlo_all;

	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_none },
		     "MAIL FROM:<sender@example.org>\r\n");
	m = mail_of("");
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all }, "MAIL FROM:<>\r\n");
	m.reverse_path = NULL;
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all }, "MAIL FROM:<>\r\n");

	/* Everything, offered. */
	m = mail_of("sender@example.org");
	m.size_bytes = 12345;
	m.body = RM_SMTP_BODY_8BITMIME;
	m.smtputf8 = true;
	m.ret = RM_SMTP_RET_HDRS;
	m.envid = "QQ+2B1";
	m.envid_len = 6;
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all },
		     "MAIL FROM:<sender@example.org> SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1\r\n");
	/* The same, offered nothing: the bare command. */
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_none },
		     "MAIL FROM:<sender@example.org>\r\n");
	/* One extension at a time. */
	e.ext = RM_SMTP_EHLO_SIZE;
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &e },
		     "MAIL FROM:<sender@example.org> SIZE=12345\r\n");
	e.ext = RM_SMTP_EHLO_8BITMIME;
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &e },
		     "MAIL FROM:<sender@example.org> BODY=8BITMIME\r\n");
	e.ext = RM_SMTP_EHLO_DSN;
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &e },
		     "MAIL FROM:<sender@example.org> RET=HDRS ENVID=QQ+2B1\r\n");
	e.ext = RM_SMTP_EHLO_SMTPUTF8;
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &e },
		     "MAIL FROM:<sender@example.org> SMTPUTF8\r\n");
	/* SIZE 0 is not sent; BODY=7BIT, RET=FULL. */
	m.size_bytes = 0;
	m.body = RM_SMTP_BODY_7BIT;
	m.smtputf8 = false;
	m.ret = RM_SMTP_RET_FULL;
	m.envid_len = 0;
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all },
		     "MAIL FROM:<sender@example.org> BODY=7BIT RET=FULL\r\n");
	m.size_bytes = UINT64_MAX;
	m.ret = RM_SMTP_RET_NONE;
	m.body = RM_SMTP_BODY_NONE;
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all },
		     "MAIL FROM:<sender@example.org> SIZE=18446744073709551615\r\n");

	/* BINARYMIME needs BINARYMIME and CHUNKING. */
	m = mail_of("sender@example.org");
	m.body = RM_SMTP_BODY_BINARYMIME;
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all },
		     "MAIL FROM:<sender@example.org> BODY=BINARYMIME\r\n");
	e.ext = RM_SMTP_EHLO_BINARYMIME | RM_SMTP_EHLO_8BITMIME;
	check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &e });
	e.ext = RM_SMTP_EHLO_CHUNKING | RM_SMTP_EHLO_8BITMIME;
	check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &e });

	/* UTF-8 paths only with SMTPUTF8 sent; a quoted local part with SP is a mailbox. */
	m = mail_of("j\xc3\xb6rg@b\xc3\xbc" "cher.example");
	m.smtputf8 = true;
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all },
		     "MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc" "cher.example> SMTPUTF8\r\n");
	check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_none });
	m.smtputf8 = false;
	check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all });
	m = mail_of("\"john smith\"@example.org");
	check_writer(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_none },
		     "MAIL FROM:<\"john smith\"@example.org>\r\n");
}

static void test_write_mail_injection(void **state)
{
	static const struct {
		const char *s;
		size_t len;
	} bad_paths[] = {
		{ "a@example.org\r\nRSET", 19 }, { "a@example.org\nRSET", 18 }, { "a@example.org\r", 14 },
		{ "a@example.org\0x", 15 }, { "a\x01@example.org", 15 }, { "a@example.org> SIZE=1", 21 },
		{ "<a@example.org>", 15 }, { "a@example.org>", 14 }, { "a b@example.org", 15 },
		{ "a@example.org x", 15 }, { "a@example.org\x7f", 14 }, { "a@example.org\t", 14 },
		{ "@example.org", 12 }, { "a@", 2 }, { "a", 1 }, { "\"a\r\n\"@example.org", 17 },
		{ "@route.example:a@example.org", 28 }, { "\"a> NOTIFY=NEVER\"@example.org", 29 },
		{ "\"<a>\"@example.org", 17 },
	};
	static const struct {
		const char *s;
		size_t len;
	} bad_envids[] = {
		{ "a b", 3 }, { "a\r\nRSET", 7 }, { "a\0", 2 }, { "a=b", 3 }, { "a+2", 3 }, { "a+zz", 4 },
		{ "\xc3\xa9", 2 }, { "a\x01", 2 },
	};
	char envid[RM_SMTP_ENVID_BYTES_MAX + 2];
	char local[70];
	struct rm_smtp_mail_args m;

	for (size_t i = 0; i < sizeof(bad_paths) / sizeof(bad_paths[0]); i++) {
		m = (struct rm_smtp_mail_args){ .reverse_path = bad_paths[i].s,
						.reverse_path_len = bad_paths[i].len };
		check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all });
		m.smtputf8 = true;
		check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all });
	}
	/* Checked even when DSN is not offered (ENVID would not be sent). */
	for (size_t i = 0; i < sizeof(bad_envids) / sizeof(bad_envids[0]); i++) {
		m = mail_of("a@example.org");
		m.envid = bad_envids[i].s;
		m.envid_len = bad_envids[i].len;
		check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all });
		check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_none });
	}
	memset(envid, 'x', sizeof(envid));
	m = mail_of("a@example.org");
	m.envid = envid;
	m.envid_len = RM_SMTP_ENVID_BYTES_MAX + 1;
	check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all });
	/* A local part past 64 bytes. */
	memset(local, 'l', 65);
	memcpy(local + 65, "@x.y", 5);
	m = mail_of(local);
	check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all });
	/* Values outside the enums. */
	m = mail_of("a@example.org");
	m.body = (enum rm_smtp_body)7;
	check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all });
	m.body = RM_SMTP_BODY_NONE;
	m.ret = (enum rm_smtp_ret)9;
	check_refused(&(struct wctx){ .kind = K_MAIL, .mail = &m, .ehlo = &ehlo_all });
}

static struct rm_smtp_rcpt_args rcpt_of(const char *to)
{
	return (struct rm_smtp_rcpt_args){ .forward_path = to, .forward_path_len = strlen(to) };
}

static void test_write_rcpt(void **state)
{
	static const char *const bad_orcpt[] = {
		"rfc822", ";a@example.org", "rfc822;", "rfc 822;a@example.org", "rfc822;a@example.org\r\nRSET",
		"rfc822;a b", "rfc822;a=b", "rfc822;a+0", "rfc822:a", "rfc\"822;a", "rfc822;\xc3\xa9",
	};
	static const uint8_t bad_notify[] = {
		RM_SMTP_NOTIFY_NEVER | RM_SMTP_NOTIFY_SUCCESS, RM_SMTP_NOTIFY_NEVER | RM_SMTP_NOTIFY_DELAY,
		0x10, 0x80,
	};
	struct rm_smtp_rcpt_args r = rcpt_of("rcpt@example.net");
	struct rm_smtp_ehlo e = ehlo_all;
	char orcpt[RM_SMTP_ORCPT_BYTES_MAX + 2];

	check_writer(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_none },
		     "RCPT TO:<rcpt@example.net>\r\n");
	r.notify = RM_SMTP_NOTIFY_SUCCESS | RM_SMTP_NOTIFY_FAILURE | RM_SMTP_NOTIFY_DELAY;
	r.orcpt = "rfc822;Rcpt+2Bx@example.net";
	r.orcpt_len = strlen(r.orcpt);
	check_writer(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all },
		     "RCPT TO:<rcpt@example.net> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;Rcpt+2Bx@example.net\r\n");
	/* Without DSN, neither. */
	e.ext = ehlo_all.ext & ~RM_SMTP_EHLO_DSN;
	check_writer(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &e },
		     "RCPT TO:<rcpt@example.net>\r\n");
	r.notify = RM_SMTP_NOTIFY_NEVER;
	r.orcpt_len = 0;
	check_writer(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all },
		     "RCPT TO:<rcpt@example.net> NOTIFY=NEVER\r\n");
	r.notify = RM_SMTP_NOTIFY_DELAY | RM_SMTP_NOTIFY_FAILURE;
	check_writer(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all },
		     "RCPT TO:<rcpt@example.net> NOTIFY=FAILURE,DELAY\r\n");
	r.notify = 0;
	r.orcpt = "utf-8;user+40example.net";
	r.orcpt_len = strlen(r.orcpt);
	check_writer(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all },
		     "RCPT TO:<rcpt@example.net> ORCPT=utf-8;user+40example.net\r\n");

	/* UTF-8 only in an SMTPUTF8 transaction. */
	r = rcpt_of("\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.example");
	check_refused(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all });
	r.smtputf8 = true;
	check_writer(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all },
		     "RCPT TO:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.example>\r\n");

	/* Refusals: an empty or injecting path, NOTIFY combinations, ORCPT forms, lengths. */
	r = rcpt_of("");
	check_refused(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all });
	r = rcpt_of("rcpt@example.net> NOTIFY=NEVER");
	check_refused(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all });
	r = (struct rm_smtp_rcpt_args){ .forward_path = "rcpt@example.net\r\nDATA", .forward_path_len = 22 };
	check_refused(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all });
	r = (struct rm_smtp_rcpt_args){ .forward_path = "rcpt@example.net\0", .forward_path_len = 17 };
	check_refused(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all });
	for (size_t i = 0; i < sizeof(bad_notify); i++) {
		r = rcpt_of("rcpt@example.net");
		r.notify = bad_notify[i];
		check_refused(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all });
		check_refused(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_none });
	}
	for (size_t i = 0; i < sizeof(bad_orcpt) / sizeof(bad_orcpt[0]); i++) {
		r = rcpt_of("rcpt@example.net");
		r.orcpt = bad_orcpt[i];
		r.orcpt_len = strlen(bad_orcpt[i]);
		check_refused(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all });
		check_refused(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_none });
	}
	memcpy(orcpt, "rfc822;", 7);
	memset(orcpt + 7, 'x', sizeof(orcpt) - 7);
	r = rcpt_of("rcpt@example.net");
	r.orcpt = orcpt;
	r.orcpt_len = RM_SMTP_ORCPT_BYTES_MAX;
	assert_true(rm_smtp_write_rcpt((uint8_t[RM_SMTP_CLIENT_CMD_BYTES_MAX]){ 0 },
				       RM_SMTP_CLIENT_CMD_BYTES_MAX, &r, &ehlo_all) > 0);
	r.orcpt_len = RM_SMTP_ORCPT_BYTES_MAX + 1;
	check_refused(&(struct wctx){ .kind = K_RCPT, .rcpt = &r, .ehlo = &ehlo_all });
}

static void test_write_simple(void **state)
{
	check_writer(&(struct wctx){ .kind = K_DATA }, "DATA\r\n");
	check_writer(&(struct wctx){ .kind = K_RSET }, "RSET\r\n");
	check_writer(&(struct wctx){ .kind = K_QUIT }, "QUIT\r\n");
	check_writer(&(struct wctx){ .kind = K_STARTTLS }, "STARTTLS\r\n");
	check_writer(&(struct wctx){ .kind = K_BDAT, .n = 65536 }, "BDAT 65536\r\n");
	check_writer(&(struct wctx){ .kind = K_BDAT, .n = 0, .last = true }, "BDAT 0 LAST\r\n");
	check_writer(&(struct wctx){ .kind = K_BDAT, .n = UINT64_MAX, .last = true },
		     "BDAT 18446744073709551615 LAST\r\n");
}

static void test_write_auth(void **state)
{
	static char zid[RM_SASL_AUTHZID_BYTES_MAX + 2], cid[RM_SASL_AUTHCID_BYTES_MAX + 2],
		pw[RM_SASL_PASSWD_BYTES_MAX + 2];
	uint8_t buf[RM_SMTP_CLIENT_AUTH_BYTES_MAX];
	ssize_t n;

	check_writer(&(struct wctx){ .kind = K_AUTH, .s1 = NULL, .s2 = "user", .s3 = "pass" },
		     "AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
	check_writer(&(struct wctx){ .kind = K_AUTH, .s1 = "", .s2 = "user", .s3 = "pass" },
		     "AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
	check_writer(&(struct wctx){ .kind = K_AUTH, .s1 = "admin", .s2 = "user@example.org",
				     .s3 = "s3cr\xc3\xa9t" },
		     "AUTH PLAIN YWRtaW4AdXNlckBleGFtcGxlLm9yZwBzM2Nyw6l0\r\n");
	/* A password with CR LF is only bytes in base64. */
	n = rm_smtp_write_auth_plain(buf, sizeof(buf), NULL, "u", "a\r\nQUIT\r\n");
	assert_true(n > 0);
	assert_null(memchr(buf, '\r', (size_t)n - 2));
	assert_null(memchr(buf, '\n', (size_t)n - 2));
	check_refused(&(struct wctx){ .kind = K_AUTH, .s1 = NULL, .s2 = "", .s3 = "pass" });
	check_refused(&(struct wctx){ .kind = K_AUTH, .s1 = NULL, .s2 = "user", .s3 = "" });

	/* The longest fields fit the constant; one more byte in any is refused. */
	memset(zid, 'z', RM_SASL_AUTHZID_BYTES_MAX);
	memset(cid, 'c', RM_SASL_AUTHCID_BYTES_MAX);
	memset(pw, 'p', RM_SASL_PASSWD_BYTES_MAX);
	n = rm_smtp_write_auth_plain(buf, sizeof(buf), zid, cid, pw);
	assert_int_equal(n, RM_SMTP_CLIENT_AUTH_BYTES_MAX);
	zid[RM_SASL_AUTHZID_BYTES_MAX] = 'z';
	check_refused(&(struct wctx){ .kind = K_AUTH, .s1 = zid, .s2 = cid, .s3 = pw });
	zid[RM_SASL_AUTHZID_BYTES_MAX] = '\0';
	cid[RM_SASL_AUTHCID_BYTES_MAX] = 'c';
	check_refused(&(struct wctx){ .kind = K_AUTH, .s1 = zid, .s2 = cid, .s3 = pw });
	cid[RM_SASL_AUTHCID_BYTES_MAX] = '\0';
	pw[RM_SASL_PASSWD_BYTES_MAX] = 'p';
	check_refused(&(struct wctx){ .kind = K_AUTH, .s1 = zid, .s2 = cid, .s3 = pw });
}

/* The longest accepted MAIL and RCPT fit RM_SMTP_CLIENT_CMD_BYTES_MAX. */
static void test_write_longest(void **state)
{
	static char mbox[300], envid[RM_SMTP_ENVID_BYTES_MAX], orcpt[RM_SMTP_ORCPT_BYTES_MAX];
	uint8_t buf[RM_SMTP_CLIENT_CMD_BYTES_MAX];
	struct rm_smtp_mail_args m;
	struct rm_smtp_rcpt_args r;
	size_t n = 0;
	ssize_t w;

	/* 64-byte local part, then labels of 63 up to a 254-byte mailbox (a 256-byte path). */
	memset(mbox, 'l', 64);
	n = 64;
	mbox[n++] = '@';
	while (n < 254) {
		size_t label = 254 - n > 63 ? 63 : 254 - n;

		memset(mbox + n, 'd', label);
		n += label;
		if (n < 254)
			mbox[n++] = '.';
	}
	if (mbox[253] == '.')
		mbox[253] = 'd';
	memset(envid, 'e', sizeof(envid));
	memcpy(orcpt, "rfc822;", 7);
	memset(orcpt + 7, 'o', sizeof(orcpt) - 7);

	m = (struct rm_smtp_mail_args){ mbox, 254, UINT64_MAX, RM_SMTP_BODY_BINARYMIME, true,
					RM_SMTP_RET_HDRS, envid, sizeof(envid) };
	w = rm_smtp_write_mail(buf, sizeof(buf), &m, &ehlo_all);
	assert_true(w > 400 && w <= (ssize_t)sizeof(buf));
	r = (struct rm_smtp_rcpt_args){ mbox, 254,
					RM_SMTP_NOTIFY_SUCCESS | RM_SMTP_NOTIFY_FAILURE | RM_SMTP_NOTIFY_DELAY,
					orcpt, sizeof(orcpt), true };
	w = rm_smtp_write_rcpt(buf, sizeof(buf), &r, &ehlo_all);
	assert_int_equal(w, 802);
	/* One byte more in the mailbox is past RFC 5321's 256-byte path. */
	mbox[254] = 'd';
	r.forward_path_len = 255;
	assert_int_equal(rm_smtp_write_rcpt(buf, sizeof(buf), &r, &ehlo_all), -1);
}

static void test_mail_check(void **state)
{
	struct rm_smtp_mail_args m = mail_of("a@example.org");
	struct rm_smtp_ehlo e = ehlo_all;

	assert_int_equal(rm_smtp_mail_check(&m, &ehlo_none), RM_SMTP_MAIL_OK);
	m.size_bytes = 52428800;
	assert_int_equal(rm_smtp_mail_check(&m, &e), RM_SMTP_MAIL_OK);
	m.size_bytes = 52428801;
	assert_int_equal(rm_smtp_mail_check(&m, &e), RM_SMTP_MAIL_E_SIZE);
	e.size_bytes_max = 0;
	assert_int_equal(rm_smtp_mail_check(&m, &e), RM_SMTP_MAIL_OK);
	assert_int_equal(rm_smtp_mail_check(&m, &ehlo_none), RM_SMTP_MAIL_OK);
	m.body = RM_SMTP_BODY_8BITMIME;
	assert_int_equal(rm_smtp_mail_check(&m, &ehlo_none), RM_SMTP_MAIL_E_8BITMIME);
	m.smtputf8 = true;
	assert_int_equal(rm_smtp_mail_check(&m, &ehlo_none), RM_SMTP_MAIL_E_SMTPUTF8);
	m.body = RM_SMTP_BODY_BINARYMIME;
	assert_int_equal(rm_smtp_mail_check(&m, &ehlo_none), RM_SMTP_MAIL_E_BINARYMIME);
	e.ext = RM_SMTP_EHLO_BINARYMIME | RM_SMTP_EHLO_SMTPUTF8;
	assert_int_equal(rm_smtp_mail_check(&m, &e), RM_SMTP_MAIL_E_BINARYMIME);
	e.ext |= RM_SMTP_EHLO_CHUNKING;
	assert_int_equal(rm_smtp_mail_check(&m, &e), RM_SMTP_MAIL_OK);
}

/* ---- dot-stuffing ------------------------------------------------------ */

#define DS_MAX 256

struct ds_result {
	uint8_t out[3 * DS_MAX + 8];
	size_t len;
	bool bare_cr, bare_lf;
};

/* The reference: the whole input, line ends first, then dots at line starts. */
static void ds_reference(const uint8_t *in, size_t len, struct ds_result *r)
{
	bool ls = true;

	memset(r, 0, sizeof(*r));
	for (size_t i = 0; i < len; i++) {
		uint8_t c = in[i];

		if (c == '\r' || c == '\n') {
			if (c == '\r' && i + 1 < len && in[i + 1] == '\n')
				i++;
			else if (c == '\r')
				r->bare_cr = true;
			else
				r->bare_lf = true;
			r->out[r->len++] = '\r';
			r->out[r->len++] = '\n';
			ls = true;
			continue;
		}
		if (ls && c == '.')
			r->out[r->len++] = '.';
		r->out[r->len++] = c;
		ls = false;
	}
	if (!ls) {
		r->out[r->len++] = '\r';
		r->out[r->len++] = '\n';
	}
	memcpy(r->out + r->len, ".\r\n", 3);
	r->len += 3;
}

/* The encoder, input cut at `cut` (SIZE_MAX: byte by byte), output cap out_cap per call. */
static void ds_run(const uint8_t *in, size_t len, size_t cut, size_t out_cap, struct ds_result *r)
{
	struct rm_smtp_dotstuff st;
	uint8_t *out = malloc(out_cap);
	size_t pos = 0;
	ssize_t n;
	uint8_t end[RM_SMTP_DOTSTUFF_END_BYTES_MAX];

	assert_non_null(out);
	memset(r, 0, sizeof(*r));
	rm_smtp_dotstuff_init(&st);
	while (pos < len) {
		size_t stop = cut == SIZE_MAX ? pos + 1 : (pos < cut ? cut : len);
		uint8_t *chunk = malloc(stop - pos ? stop - pos : 1);
		size_t clen = stop - pos, off = 0;

		assert_non_null(chunk);
		memcpy(chunk, in + pos, clen);
		for (size_t guard = 0; off < clen; guard++) {
			size_t w, k;

			assert_true(guard <= 4 * clen + 4);
			k = rm_smtp_dotstuff_feed(&st, chunk + off, clen - off, out, out_cap, &w);
			assert_true(w <= out_cap && k <= clen - off);
			assert_true(k > 0 || w > 0);
			if (out_cap >= 2)
				assert_true(k > 0);
			assert_true(r->len + w <= sizeof(r->out));
			memcpy(r->out + r->len, out, w);
			r->len += w;
			off += k;
		}
		free(chunk);
		pos = stop;
	}
	/* Every cap below what end needs is refused, and changes nothing. */
	for (size_t cap = 0; cap <= sizeof(end); cap++) {
		struct rm_smtp_dotstuff before = st;

		n = rm_smtp_dotstuff_end(&st, end, cap);
		if (n >= 0)
			break;
		assert_memory_equal(&before, &st, sizeof(st));
	}
	assert_true(n > 0);
	memcpy(r->out + r->len, end, (size_t)n);
	r->len += (size_t)n;
	r->bare_cr = st.bare_cr;
	r->bare_lf = st.bare_lf;
	assert_int_equal(st.in_bytes, len);
	assert_int_equal(st.out_bytes, r->len);
	free(out);
}

/* The content as the receiver must see it: every line end CR LF, and a last one. */
static size_t ds_normalise(const uint8_t *in, size_t len, uint8_t *out)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\r' || in[i] == '\n') {
			if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
				i++;
			out[n++] = '\r';
			out[n++] = '\n';
		} else {
			out[n++] = in[i];
		}
	}
	if (n > 0 && out[n - 1] != '\n') {
		out[n++] = '\r';
		out[n++] = '\n';
	}
	return n;
}

/* proto/smtp_data decodes the stuffed stream back to the normalised content, to its end. */
static void ds_decode_check(const struct ds_result *stuffed, const uint8_t *in, size_t len)
{
	struct rm_smtp_data_opts o;
	struct rm_smtp_data d;
	struct rm_smtp_data_span spans[RM_SMTP_DATA_SPANS_MIN];
	uint8_t dec[sizeof(stuffed->out)], want[sizeof(stuffed->out)];
	size_t dlen = 0, pos = 0, wlen = ds_normalise(in, len, want);

	rm_smtp_data_opts_default(&o);
	o.line_bytes_max = 0;
	rm_smtp_data_init(&d, &o);
	for (size_t guard = 0; !rm_smtp_data_done(&d) && pos < stuffed->len; guard++) {
		struct rm_smtp_data_out out = { spans, RM_SMTP_DATA_SPANS_MIN, SIZE_MAX, 0, 0 };
		size_t n = rm_smtp_data_feed(&d, stuffed->out + pos, stuffed->len - pos, &out);

		assert_true(guard <= stuffed->len);
		for (size_t i = 0; i < out.span_count; i++) {
			assert_true(dlen + out.span[i].len <= sizeof(dec));
			memcpy(dec + dlen, out.span[i].ptr, out.span[i].len);
			dlen += out.span[i].len;
		}
		pos += n;
	}
	assert_true(rm_smtp_data_done(&d));
	assert_int_equal(pos, stuffed->len);
	assert_false(d.bare_cr || d.bare_lf || d.smuggle);
	assert_int_equal(dlen, wlen);
	assert_memory_equal(dec, want, wlen);
}

static void ds_check_all(const uint8_t *in, size_t len, bool decode)
{
	static const size_t caps[] = { 1, 2, 3, 5, 7, 64, 3 * DS_MAX + 8 };
	static struct ds_result want, got;

	ds_reference(in, len, &want);
	for (size_t ci = 0; ci < sizeof(caps) / sizeof(caps[0]); ci++) {
		for (size_t cut = 0; cut <= len; cut++) {
			ds_run(in, len, cut, caps[ci], &got);
			assert_int_equal(got.len, want.len);
			assert_memory_equal(got.out, want.out, want.len);
			assert_int_equal(got.bare_cr, want.bare_cr);
			assert_int_equal(got.bare_lf, want.bare_lf);
		}
		ds_run(in, len, SIZE_MAX, caps[ci], &got);
		assert_int_equal(got.len, want.len);
		assert_memory_equal(got.out, want.out, want.len);
	}
	if (decode)
		ds_decode_check(&got, in, len);
}

static void test_dotstuff_golden(void **state)
{
	static const struct {
		const char *in, *out;
		bool bare_cr, bare_lf;
	} cases[] = {
		{ "", ".\r\n", false, false },
		{ "abc", "abc\r\n.\r\n", false, false },
		{ "abc\r\n", "abc\r\n.\r\n", false, false },
		{ ".", "..\r\n.\r\n", false, false },
		{ ".\r\n", "..\r\n.\r\n", false, false },
		{ "..\r\n", "...\r\n.\r\n", false, false },
		{ "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n", false, false },
		{ "a.b\r\n.a.\r\n", "a.b\r\n..a.\r\n.\r\n", false, false },
		{ "\r\n\r\n", "\r\n\r\n.\r\n", false, false },
		/* Bare LF and CR become CR LF, and the dots after them are doubled too. */
		{ "a\nb", "a\r\nb\r\n.\r\n", false, true },
		{ "\n.\n", "\r\n..\r\n.\r\n", false, true },
		{ "\r.\r", "\r\n..\r\n.\r\n", true, false },
		{ "a\rb\r\n", "a\r\nb\r\n.\r\n", true, false },
		{ "a\r", "a\r\n.\r\n", true, false },
		{ "a\r\r\n", "a\r\n\r\n.\r\n", true, false },
		{ "a\n\r", "a\r\n\r\n.\r\n", true, true },
		{ "x\r\n.\r\n.\r\n", "x\r\n..\r\n..\r\n.\r\n", false, false },
		{ "x\r\n.\n.\r\n", "x\r\n..\r\n..\r\n.\r\n", false, true },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ds_result got;
		size_t len = strlen(cases[i].in);

		ds_run((const uint8_t *)cases[i].in, len, len, 64, &got);
		if (got.len != strlen(cases[i].out) || memcmp(got.out, cases[i].out, got.len) != 0)
			fail_msg("case %zu: got '%.*s'", i, (int)got.len, (const char *)got.out);
		assert_int_equal(got.bare_cr, cases[i].bare_cr);
		assert_int_equal(got.bare_lf, cases[i].bare_lf);
		ds_check_all((const uint8_t *)cases[i].in, len, true);
	}
}

static uint32_t next_rand(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

/* Inputs of the bytes that matter, against the reference at every cut and cap. */
static void test_dotstuff_generated(void **state)
{
	static const uint8_t alphabet[] = { '.', '\r', '\n', 'a', '.', '\r', '\n', 0 };
	uint8_t in[DS_MAX];
	uint32_t rng = 0x12345678u;

	for (unsigned t = 0; t < 1000; t++) {
		size_t len = next_rand(&rng) % 24;

		for (size_t i = 0; i < len; i++)
			in[i] = alphabet[next_rand(&rng) % sizeof(alphabet)];
		ds_check_all(in, len, true);
	}
	/* Longer runs of text for the word-at-a-time scan. */
	for (unsigned t = 0; t < 50; t++) {
		size_t len = 64 + next_rand(&rng) % (DS_MAX - 64);

		for (size_t i = 0; i < len; i++) {
			uint32_t x = next_rand(&rng) % 40;

			in[i] = x < 3 ? alphabet[x] : (uint8_t)('A' + x);
		}
		ds_check_all(in, len, true);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_golden),
		cmocka_unit_test(test_reply_long_line),
		cmocka_unit_test(test_reply_truncated),
		cmocka_unit_test(test_reply_err_text),
		cmocka_unit_test(test_ehlo_postfix),
		cmocka_unit_test(test_ehlo_exim),
		cmocka_unit_test(test_ehlo_gmail),
		cmocka_unit_test(test_ehlo_exchange),
		cmocka_unit_test(test_ehlo_forms),
		cmocka_unit_test(test_ehlo_truncated),
		cmocka_unit_test(test_write_hello),
		cmocka_unit_test(test_write_mail),
		cmocka_unit_test(test_write_mail_injection),
		cmocka_unit_test(test_write_rcpt),
		cmocka_unit_test(test_write_simple),
		cmocka_unit_test(test_write_auth),
		cmocka_unit_test(test_write_longest),
		cmocka_unit_test(test_mail_check),
		cmocka_unit_test(test_dotstuff_golden),
		cmocka_unit_test(test_dotstuff_generated),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
