/*
 * NAME
 *	test_smtp_data - unit tests of proto/smtp_data
 * DESCRIPTION
 *	Golden cases, each an input (a DATA stream, or BDAT chunks), a mode,
 *	and the decoded content, input consumed and flags it must give:
 *	dot-unstuffing, the end of data exactly at CR LF "." CR LF with a
 *	pipelined command after it, the SMTP smuggling payloads of the SEC
 *	Consult write-up (LF.LF, LF.CRLF, CR.CR, CRLF.CR, CRLF.LF, CR.CRLF,
 *	LF.CR, ...) in REJECT and NORMALISE mode, harmless bare CR and LF,
 *	line lengths at the limit and one past it, BDAT chunks with CR LF
 *	split between them, binary BDAT.
 *
 *	Every case is fed whole, cut at every position, at every pair of
 *	positions and byte by byte, each time with the fewest spans a feed
 *	may have (RM_SMTP_DATA_SPANS_MIN) and with plenty: the content, the
 *	consumed count and the flags must be the golden ones each time.  Each
 *	chunk is a heap block of exact size (ASan sees any read past it), and
 *	every span must lie in the chunk just fed or in the decoder's
 *	constant bytes.  Then every output byte limit: a decoder restored to
 *	its copy and fed again with a limit of k bytes must give exactly the
 *	first k bytes, and carry on to the same content.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/smtp_data.h"

#define OUT_MAX 4096
#define CHUNKS_MAX 8

#define F_BARE_CR 0x01u
#define F_BARE_LF 0x02u
#define F_SMUGGLE 0x04u
#define F_LONG 0x08u
#define F_NOT_DONE 0x10u

enum kind { K_DATA, K_BDAT, K_BINARY };

struct data_case {
	const char *name;
	const char *in;
	size_t in_len;
	const char *out;
	size_t out_len;
	size_t consumed;		/* SIZE_MAX: all of the input */
	enum kind kind;
	enum rm_smtp_data_mode mode;
	size_t line_max;
	unsigned flags;
	size_t nchunks;
	size_t chunks[CHUNKS_MAX];	/* BDAT chunk sizes; the last is LAST */
};

#define S(s) (s), sizeof(s) - 1
#define REJ RM_SMTP_DATA_REJECT
#define NRM RM_SMTP_DATA_NORMALISE
#define ALL SIZE_MAX
#define DATA(name, mode, in, out, flags) \
	{ name, S(in), S(out), ALL, K_DATA, mode, 1000, flags, 0, { 0 } }
#define DATA_C(name, mode, in, out, consumed, flags) \
	{ name, S(in), S(out), consumed, K_DATA, mode, 1000, flags, 0, { 0 } }
#define DATA_L(name, mode, line_max, in, out, flags) \
	{ name, S(in), S(out), ALL, K_DATA, mode, line_max, flags, 0, { 0 } }
#define BDAT(name, kind, mode, in, out, flags, ...) \
	{ name, S(in), S(out), ALL, kind, mode, 1000, flags, \
	  sizeof((size_t[]){ __VA_ARGS__ }) / sizeof(size_t), { __VA_ARGS__ } }

static const struct data_case cases[] = {
	/* Plain content, unstuffing, the end. */
	DATA("plain", REJ, "Subject: x\r\n\r\nbody\r\n.\r\n", "Subject: x\r\n\r\nbody\r\n", 0),
	DATA("empty", REJ, ".\r\n", "", 0),
	DATA("empty-line", REJ, "\r\n.\r\n", "\r\n", 0),
	DATA("stuffed-dot", REJ, "..\r\n.\r\n", ".\r\n", 0),
	DATA("stuffed", REJ, "a\r\n..b\r\n...\r\n.x\r\n.\r\n", "a\r\n.b\r\n..\r\nx\r\n", 0),
	DATA("dot-mid-line", REJ, "a.\r\nb..c\r\n.\r\n", "a.\r\nb..c\r\n", 0),
	DATA_C("pipelined", REJ, "a\r\n.\r\nQUIT\r\n", "a\r\n", 6, 0),
	DATA_C("pipelined-empty", REJ, ".\r\nRSET\r\n", "", 3, 0),
	DATA_C("no-end", REJ, "abc\r\n.", "abc\r\n", ALL, F_NOT_DONE),
	DATA_C("no-end-cr", REJ, "abc\r\n.\r", "abc\r\n", ALL, F_NOT_DONE),
	DATA_C("end-split-dot", REJ, "x\r\n.\r\n.\r\n", "x\r\n", 6, 0),
	DATA("crlf-pairs", REJ, "\r\n\r\n\r\n.\r\n", "\r\n\r\n\r\n", 0),
	DATA("nul-and-8bit", REJ, "a\0b\xff\r\n.\r\n", "a\0b\xff\r\n", 0),
	/* SMTP smuggling payloads, REJECT: flagged, passed on unchanged (but
	 * for unstuffing after CR LF), and reading goes on to the real end. */
	DATA("lf.lf", REJ, "a\n.\nMAIL FROM:<x@y>\r\n.\r\n", "a\n.\nMAIL FROM:<x@y>\r\n",
	     F_BARE_LF | F_SMUGGLE),
	DATA("lf.crlf", REJ, "a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n", "a\n.\r\nMAIL FROM:<x@y>\r\n",
	     F_BARE_LF | F_SMUGGLE),
	DATA("cr.cr", REJ, "a\r.\rMAIL\r\n.\r\n", "a\r.\rMAIL\r\n", F_BARE_CR | F_SMUGGLE),
	DATA("crlf.cr", REJ, "a\r\n.\rMAIL\r\n.\r\n", "a\r\n\rMAIL\r\n", F_BARE_CR | F_SMUGGLE),
	DATA("crlf.lf", REJ, "a\r\n.\nMAIL\r\n.\r\n", "a\r\n\nMAIL\r\n", F_BARE_LF | F_SMUGGLE),
	DATA("cr.crlf", REJ, "a\r.\r\nMAIL\r\n.\r\n", "a\r.\r\nMAIL\r\n", F_BARE_CR | F_SMUGGLE),
	DATA("lf.cr", REJ, "a\n.\rMAIL\r\n.\r\n", "a\n.\rMAIL\r\n", F_BARE_LF | F_BARE_CR | F_SMUGGLE),
	DATA("cr.lf", REJ, "a\r.\nMAIL\r\n.\r\n", "a\r.\nMAIL\r\n", F_BARE_LF | F_BARE_CR | F_SMUGGLE),
	DATA("crlf.crcrlf", REJ, "a\r\n.\r\r\nb\r\n.\r\n", "a\r\n\r\r\nb\r\n", F_BARE_CR | F_SMUGGLE),
	DATA("start.lf", REJ, ".\nMAIL\r\n.\r\n", "\nMAIL\r\n", F_BARE_LF | F_SMUGGLE),
	DATA("start-lf.lf", REJ, "\n.\nx\r\n.\r\n", "\n.\nx\r\n", F_BARE_LF | F_SMUGGLE),
	DATA("full-sec-consult", REJ,
	     "Subject: hi\r\n\r\nhello\n.\nMAIL FROM:<admin@example.com>\r\nRCPT TO:<v@example.org>\r\n"
	     "DATA\r\nFrom: admin\r\n\r\nsmuggled\r\n.\r\n",
	     "Subject: hi\r\n\r\nhello\n.\nMAIL FROM:<admin@example.com>\r\nRCPT TO:<v@example.org>\r\n"
	     "DATA\r\nFrom: admin\r\n\r\nsmuggled\r\n", F_BARE_LF | F_SMUGGLE),
	/* Harmless bare CR and LF: noted, not smuggling. */
	DATA("bare-lf", REJ, "a\nb\r\n.\r\n", "a\nb\r\n", F_BARE_LF),
	DATA("bare-cr", REJ, "a\rb\r\n.\r\n", "a\rb\r\n", F_BARE_CR),
	DATA("bare-lf-dots", REJ, "a\n..\n.x\r\n.\r\n", "a\n..\n.x\r\n", F_BARE_LF),
	DATA("crcrlf", REJ, "a\r\r\n.\r\n", "a\r\r\n", F_BARE_CR),
	DATA("lf-then-end", REJ, "a\n\r\n.\r\n", "a\n\r\n", F_BARE_LF),
	/* NORMALISE: bare CR and LF become CR LF, a lone dot between line ends
	 * that are not both CR LF is a line "." of content. */
	DATA("n-lf.lf", NRM, "a\n.\nMAIL FROM:<x@y>\r\n.\r\n", "a\r\n.\r\nMAIL FROM:<x@y>\r\n",
	     F_BARE_LF | F_SMUGGLE),
	DATA("n-lf.crlf", NRM, "a\n.\r\nMAIL\r\n.\r\n", "a\r\n.\r\nMAIL\r\n", F_BARE_LF | F_SMUGGLE),
	DATA("n-cr.cr", NRM, "a\r.\rMAIL\r\n.\r\n", "a\r\n.\r\nMAIL\r\n", F_BARE_CR | F_SMUGGLE),
	DATA("n-crlf.cr", NRM, "a\r\n.\rMAIL\r\n.\r\n", "a\r\n.\r\nMAIL\r\n", F_BARE_CR | F_SMUGGLE),
	DATA("n-crlf.lf", NRM, "a\r\n.\nMAIL\r\n.\r\n", "a\r\n.\r\nMAIL\r\n", F_BARE_LF | F_SMUGGLE),
	DATA("n-cr.crlf", NRM, "a\r.\r\nMAIL\r\n.\r\n", "a\r\n.\r\nMAIL\r\n", F_BARE_CR | F_SMUGGLE),
	DATA("n-lf.cr", NRM, "a\n.\rMAIL\r\n.\r\n", "a\r\n.\r\nMAIL\r\n", F_BARE_LF | F_BARE_CR | F_SMUGGLE),
	DATA("n-start.lf", NRM, ".\nMAIL\r\n.\r\n", ".\r\nMAIL\r\n", F_BARE_LF | F_SMUGGLE),
	DATA("n-lf-dot-end", NRM, "\n.\r\n.\r\n", "\r\n.\r\n", F_BARE_LF | F_SMUGGLE),
	DATA("n-bare-lf", NRM, "a\nb\r\n.\r\n", "a\r\nb\r\n", F_BARE_LF),
	DATA("n-bare-cr", NRM, "a\rb\r\n.\r\n", "a\r\nb\r\n", F_BARE_CR),
	DATA("n-crcrlf", NRM, "a\r\r\n.\r\n", "a\r\n\r\n", F_BARE_CR),
	DATA("n-lf-stuffed", NRM, "a\n..b\n.c\r\n.\r\n", "a\r\n.b\r\nc\r\n", F_BARE_LF),
	DATA("n-plain", NRM, "x\r\n..y\r\n.\r\n", "x\r\n.y\r\n", 0),
	DATA("n-lflf-no-end", NRM, "\n\n.\r\n", "\r\n\r\n.\r\n", F_BARE_LF | F_SMUGGLE | F_NOT_DONE),
	DATA("lflf-no-end", REJ, "\n\n.\r\n", "\n\n.\r\n", F_BARE_LF | F_SMUGGLE | F_NOT_DONE),
	DATA_C("n-pipelined", NRM, "a\n.\nb\r\n.\r\nQUIT\r\n", "a\r\n.\r\nb\r\n", 10,
	       F_BARE_LF | F_SMUGGLE),
	/* Line length: the limit counts the decoded line with its CR LF. */
	DATA_L("line-at-limit", REJ, 12, "0123456789\r\n.\r\n", "0123456789\r\n", 0),
	DATA_L("line-past-limit", REJ, 12, "0123456789a\r\n.\r\n", "0123456789a\r\n", F_LONG),
	DATA_L("line-stuffed-at-limit", REJ, 12, "..23456789a\r\n.\r\n", ".23456789a\r\n", 0),
	DATA_L("line-long-then-short", REJ, 4, "abcdef\r\nab\r\n.\r\n", "abcdef\r\nab\r\n", F_LONG),
	DATA_L("line-bare-lf-counts", REJ, 6, "ab\ncd\r\n.\r\n", "ab\ncd\r\n", F_LONG | F_BARE_LF),
	DATA_L("n-line-bare-lf-splits", NRM, 6, "ab\ncd\r\n.\r\n", "ab\r\ncd\r\n", F_BARE_LF),
	DATA_L("n-line-cr-grows", NRM, 3, "a\rb\r\n.\r\n", "a\r\nb\r\n", F_BARE_CR),
	DATA_L("n-line-cr-past", NRM, 3, "ab\r\r\n.\r\n", "ab\r\n\r\n", F_BARE_CR | F_LONG),
	DATA_L("line-no-check", REJ, 0, "0123456789abcdef\r\n.\r\n", "0123456789abcdef\r\n", 0),
	/* BDAT: exact counts, no unstuffing, no end marker. */
	BDAT("bdat-plain", K_BDAT, REJ, "a\r\n.\r\nb", "a\r\n.\r\nb", 0, 7),
	BDAT("bdat-dots", K_BDAT, REJ, "..\r\n.x\r\n", "..\r\n.x\r\n", 0, 8),
	BDAT("bdat-split-crlf", K_BDAT, REJ, "a\r\nb", "a\r\nb", 0, 2, 2),
	BDAT("bdat-lf.lf", K_BDAT, REJ, "a\n.\nb", "a\n.\nb", F_BARE_LF | F_SMUGGLE, 3, 2),
	BDAT("bdat-cr-end", K_BDAT, REJ, "abc\r", "abc\r", F_BARE_CR, 4),
	BDAT("bdat-cr-chunk-end", K_BDAT, REJ, "ab\rc", "ab\rc", F_BARE_CR, 3, 1),
	BDAT("bdat-dotcr-end", K_BDAT, REJ, "a\r\n.\r", "a\r\n.\r", F_BARE_CR | F_SMUGGLE, 2, 3),
	BDAT("bdat-empty-last", K_BDAT, REJ, "abc", "abc", 0, 3, 0),
	BDAT("bdat-zero-last", K_BDAT, REJ, "", "", 0, 0),
	BDAT("bdat-n-bare", K_BDAT, NRM, "a\nb\r", "a\r\nb\r\n", F_BARE_LF | F_BARE_CR, 2, 2),
	BDAT("bdat-n-lf.lf", K_BDAT, NRM, "a\n.\nb", "a\r\n.\r\nb", F_BARE_LF | F_SMUGGLE, 5),
	BDAT("bdat-n-cr.cr", K_BDAT, NRM, "a\r.\rb", "a\r\n.\r\nb", F_BARE_CR | F_SMUGGLE, 1, 4),
	BDAT("bdat-n-crlf.cr", K_BDAT, NRM, "\r\n.\rb", "\r\n.\r\nb", F_BARE_CR | F_SMUGGLE, 5),
	BDAT("bdat-binary", K_BINARY, REJ, "\r\n.\r\n\n.\n\r\0\xff", "\r\n.\r\n\n.\n\r\0\xff", 0, 4, 7),
	BDAT("bdat-binary-n", K_BINARY, NRM, "a\nb\r", "a\nb\r", 0, 4),
};

struct result {
	uint8_t out[OUT_MAX];
	size_t out_len;
	size_t consumed;
	struct rm_smtp_data d;
};

static void opts_of(const struct data_case *c, struct rm_smtp_data_opts *o)
{
	rm_smtp_data_opts_default(o);
	o->mode = c->mode;
	o->line_bytes_max = c->line_max;
}

static void init_of(const struct data_case *c, struct rm_smtp_data *d, size_t *chunk_i)
{
	struct rm_smtp_data_opts o;

	opts_of(c, &o);
	*chunk_i = 0;
	if (c->kind == K_DATA)
		rm_smtp_data_init(d, &o);
	else
		rm_smtp_data_init_bdat(d, &o, c->kind == K_BINARY);
}

/* BDAT: the next BDAT command, once the current chunk is in. */
static void next_chunk(const struct data_case *c, struct rm_smtp_data *d, size_t *chunk_i)
{
	if (c->kind == K_DATA || d->last || !rm_smtp_data_chunk_done(d) || *chunk_i >= c->nchunks)
		return;
	rm_smtp_data_bdat_chunk(d, c->chunks[*chunk_i], *chunk_i + 1 == c->nchunks);
	(*chunk_i)++;
}

static void take_spans(const struct rm_smtp_data_out *out, const uint8_t *chunk, size_t len,
		       struct result *r)
{
	size_t sum = 0;

	assert_true(out->span_count <= out->span_max);
	for (size_t i = 0; i < out->span_count; i++) {
		const struct rm_smtp_data_span *s = &out->span[i];

		assert_true(s->len > 0);
		if (!rm_smtp_data_span_static(s))
			assert_true(s->ptr >= chunk && s->ptr + s->len <= chunk + len);
		assert_true(r->out_len + s->len <= OUT_MAX);
		memcpy(r->out + r->out_len, s->ptr, s->len);
		r->out_len += s->len;
		sum += s->len;
	}
	assert_int_equal(sum, out->bytes);
}

/*
 * Feeds c->in cut at cuts[0..ncuts) with span_max spans a call, as a
 * session would: each chunk in a fresh heap block, fed until it is
 * consumed or the data is done (then the rest is the next command).
 */
static void run(const struct data_case *c, const size_t *cuts, size_t ncuts, size_t span_max,
		struct result *r)
{
	struct rm_smtp_data_span spans[64];
	size_t chunk_i, start = 0;

	assert_true(span_max <= 64);
	memset(r, 0, sizeof(*r));
	init_of(c, &r->d, &chunk_i);
	for (size_t k = 0; k <= ncuts && !rm_smtp_data_done(&r->d); k++) {
		size_t end = k < ncuts ? cuts[k] : c->in_len;
		size_t len = end - start, off = 0;
		uint8_t *chunk = malloc(len ? len : 1);

		assert_non_null(chunk);
		memcpy(chunk, c->in + start, len);
		for (size_t calls = 0; !rm_smtp_data_done(&r->d); calls++) {
			struct rm_smtp_data_out out = { spans, span_max, SIZE_MAX, 0, 0 };
			size_t n;

			assert_true(calls <= 4 * len + 16);
			next_chunk(c, &r->d, &chunk_i);
			n = rm_smtp_data_feed(&r->d, chunk + off, len - off, &out);
			take_spans(&out, chunk + off, len - off, r);
			off += n;
			if (n == 0 && out.bytes == 0)
				break;
		}
		/* Unlimited output: all of a chunk goes in unless the data ended in it. */
		assert_true(off == len || rm_smtp_data_done(&r->d));
		r->consumed = start + off;
		free(chunk);
		start = end;
	}
}

static void check(const struct data_case *c, const struct result *r, const char *how)
{
	const struct rm_smtp_data *d = &r->d;
	unsigned flags = (d->bare_cr ? F_BARE_CR : 0) | (d->bare_lf ? F_BARE_LF : 0) |
			 (d->smuggle ? F_SMUGGLE : 0) | (d->long_line ? F_LONG : 0) |
			 (rm_smtp_data_done(d) ? 0 : F_NOT_DONE);
	size_t want_consumed = c->consumed == ALL ? c->in_len : c->consumed;

	if (r->out_len != c->out_len || memcmp(r->out, c->out, c->out_len) != 0)
		fail_msg("%s (%s): content (%zu) differs from the golden one (%zu)", c->name, how,
			 r->out_len, c->out_len);
	if (r->consumed != want_consumed)
		fail_msg("%s (%s): consumed %zu, want %zu", c->name, how, r->consumed, want_consumed);
	if (flags != c->flags)
		fail_msg("%s (%s): flags %#x, want %#x", c->name, how, flags, c->flags);
	assert_int_equal(d->content_bytes, r->out_len);
	if (c->mode == RM_SMTP_DATA_REJECT && (c->flags & F_SMUGGLE) && c->kind != K_BINARY) {
		const struct rm_smtp_status *st = rm_smtp_data_status(d);

		assert_non_null(st);
		assert_int_equal(st->code, 550);
		assert_string_equal(st->enhanced, "5.6.0");
	} else {
		assert_null(rm_smtp_data_status(d));
	}
}

static void test_whole(void **state)
{
	static struct result r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		run(&cases[i], NULL, 0, 64, &r);
		check(&cases[i], &r, "whole");
		run(&cases[i], NULL, 0, RM_SMTP_DATA_SPANS_MIN, &r);
		check(&cases[i], &r, "whole, fewest spans");
	}
}

static void test_every_cut(void **state)
{
	static struct result r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (size_t cut = 1; cut < cases[i].in_len; cut++) {
			run(&cases[i], &cut, 1, RM_SMTP_DATA_SPANS_MIN, &r);
			check(&cases[i], &r, "one cut");
		}
	}
}

static void test_every_cut_pair(void **state)
{
	static struct result r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct data_case *c = &cases[i];

		if (c->in_len > 64)
			continue;
		for (size_t a = 1; a < c->in_len; a++)
			for (size_t b = a + 1; b < c->in_len; b++) {
				size_t cuts[2] = { a, b };

				run(c, cuts, 2, RM_SMTP_DATA_SPANS_MIN, &r);
				check(c, &r, "two cuts");
			}
	}
}

static void test_byte_by_byte(void **state)
{
	static struct result r;
	static size_t cuts[OUT_MAX];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct data_case *c = &cases[i];

		for (size_t k = 1; k < c->in_len; k++)
			cuts[k - 1] = k;
		run(c, cuts, c->in_len ? c->in_len - 1 : 0, RM_SMTP_DATA_SPANS_MIN, &r);
		check(c, &r, "byte by byte");
	}
}

/*
 * Back-pressure: copy the decoder, feed everything, pretend the spool took
 * only k bytes, restore the copy and feed again with a limit of k; the
 * limited call must give exactly the first k bytes, and carrying on that
 * way must give the same content as one unlimited run.  Every k, every
 * case, whole input and byte by byte.
 */
static void replay(const struct data_case *c, size_t k, size_t step, struct result *r)
{
	struct rm_smtp_data_span spans[RM_SMTP_DATA_SPANS_MIN];
	size_t chunk_i, off = 0;
	uint8_t *in = malloc(c->in_len ? c->in_len : 1);

	assert_non_null(in);
	memcpy(in, c->in, c->in_len);
	memset(r, 0, sizeof(*r));
	init_of(c, &r->d, &chunk_i);
	for (size_t calls = 0; !rm_smtp_data_done(&r->d); calls++) {
		size_t avail = c->in_len - off < step ? c->in_len - off : step;
		struct rm_smtp_data saved;
		struct rm_smtp_data_out out = { spans, RM_SMTP_DATA_SPANS_MIN, SIZE_MAX, 0, 0 };
		uint8_t first[OUT_MAX];
		size_t n, take, first_len = 0;

		assert_true(calls <= 8 * c->in_len + 16);
		next_chunk(c, &r->d, &chunk_i);
		saved = r->d;
		n = rm_smtp_data_feed(&r->d, in + off, avail, &out);
		take = out.bytes < k ? out.bytes : k;
		if (take < out.bytes) {
			for (size_t i = 0; i < out.span_count && first_len < take; i++) {
				size_t m = out.span[i].len < take - first_len ? out.span[i].len :
					   take - first_len;

				memcpy(first + first_len, out.span[i].ptr, m);
				first_len += m;
			}
			r->d = saved;
			out = (struct rm_smtp_data_out){ spans, RM_SMTP_DATA_SPANS_MIN, take, 0, 0 };
			n = rm_smtp_data_feed(&r->d, in + off, avail, &out);
			assert_int_equal(out.bytes, take);
			take_spans(&out, in + off, avail, r);
			assert_memory_equal(r->out + r->out_len - take, first, take);
		} else {
			take_spans(&out, in + off, avail, r);
		}
		off += n;
		if (n == 0 && out.bytes == 0 && off == c->in_len)
			break;
	}
	r->consumed = off;
	free(in);
}

static void test_byte_limit_replay(void **state)
{
	static struct result whole, r;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct data_case *c = &cases[i];

		run(c, NULL, 0, RM_SMTP_DATA_SPANS_MIN, &whole);
		for (size_t k = 1; k <= whole.out_len; k++) {
			replay(c, k, SIZE_MAX, &r);
			check(c, &r, "byte limit");
			replay(c, k, 1, &r);
			check(c, &r, "byte limit, byte by byte");
		}
	}
}

/* A limit of 0 takes nothing and changes nothing. */
static void test_zero_limit(void **state)
{
	struct rm_smtp_data_opts o;
	struct rm_smtp_data d, saved;
	struct rm_smtp_data_span spans[RM_SMTP_DATA_SPANS_MIN];

	rm_smtp_data_opts_default(&o);
	for (int mode = 0; mode < 2; mode++) {
		o.mode = (enum rm_smtp_data_mode)mode;
		rm_smtp_data_init(&d, &o);
		saved = d;
		struct rm_smtp_data_out out = { spans, RM_SMTP_DATA_SPANS_MIN, 0, 0, 0 };

		assert_int_equal(rm_smtp_data_feed(&d, (const uint8_t *)"a\nb\r\n", 5, &out), 0);
		assert_int_equal(out.bytes, 0);
		assert_int_equal(out.span_count, 0);
		assert_memory_equal(&d, &saved, sizeof(d));
	}
}

/* The decoder state is plain values: a copy carries on exactly like the original. */
static void test_checkpoint_copy(void **state)
{
	static const char in[] = "a\r\n..b\r\n.\rc\nd\r\n.\r\n";
	struct rm_smtp_data_opts o;
	struct rm_smtp_data a, b;
	struct rm_smtp_data_span sa[16], sb[16];

	rm_smtp_data_opts_default(&o);
	for (size_t cut = 0; cut < sizeof(in) - 1; cut++) {
		struct rm_smtp_data_out oa = { sa, 16, SIZE_MAX, 0, 0 }, ob = { sb, 16, SIZE_MAX, 0, 0 };

		rm_smtp_data_init(&a, &o);
		rm_smtp_data_feed(&a, (const uint8_t *)in, cut, &oa);
		b = a;
		size_t na = rm_smtp_data_feed(&a, (const uint8_t *)in + cut, sizeof(in) - 1 - cut, &oa);
		size_t nb = rm_smtp_data_feed(&b, (const uint8_t *)in + cut, sizeof(in) - 1 - cut, &ob);

		assert_int_equal(na, nb);
		assert_int_equal(oa.span_count, ob.span_count);
		for (size_t i = 0; i < oa.span_count; i++) {
			assert_ptr_equal(sa[i].ptr, sb[i].ptr);
			assert_int_equal(sa[i].len, sb[i].len);
		}
		assert_memory_equal(&a, &b, sizeof(a));
	}
}

/* Zero copy: plain content comes back as one span pointing at the input. */
static void test_zero_copy(void **state)
{
	static char in[70000];
	struct rm_smtp_data_opts o;
	struct rm_smtp_data d;
	struct rm_smtp_data_span spans[RM_SMTP_DATA_SPANS_MIN];
	struct rm_smtp_data_out out = { spans, RM_SMTP_DATA_SPANS_MIN, SIZE_MAX, 0, 0 };
	size_t n = 0;

	while (n + 80 < sizeof(in) - 8) {
		memset(in + n, 'x', 76);
		memcpy(in + n + 76, "\r\n", 2);
		n += 78;
	}
	memcpy(in + n, ".\r\n", 3);
	rm_smtp_data_opts_default(&o);
	rm_smtp_data_init(&d, &o);
	assert_int_equal(rm_smtp_data_feed(&d, (const uint8_t *)in, n + 3, &out), n + 3);
	assert_true(rm_smtp_data_done(&d));
	assert_int_equal(out.span_count, 1);
	assert_ptr_equal(spans[0].ptr, (const uint8_t *)in);
	assert_int_equal(spans[0].len, n);
	assert_int_equal(d.content_bytes, n);
	assert_false(d.long_line || d.bare_cr || d.bare_lf || d.smuggle);
	/* Feeding after the end takes nothing. */
	assert_int_equal(rm_smtp_data_feed(&d, (const uint8_t *)"x", 1, &out), 0);
	assert_int_equal(out.span_count, 0);
}

/* A dot-heavy message needs a span per stuffed dot; a small span array just means more calls. */
static void test_dot_heavy_spans(void **state)
{
	static char in[4096];
	struct rm_smtp_data_opts o;
	struct rm_smtp_data d;
	struct rm_smtp_data_span spans[RM_SMTP_DATA_SPANS_MIN];
	size_t n = 0, off = 0, got = 0, calls = 0;

	for (int i = 0; i < 200; i++) {
		memcpy(in + n, "..x\r\n", 5);
		n += 5;
	}
	memcpy(in + n, ".\r\n", 3);
	n += 3;
	rm_smtp_data_opts_default(&o);
	rm_smtp_data_init(&d, &o);
	while (!rm_smtp_data_done(&d)) {
		struct rm_smtp_data_out out = { spans, RM_SMTP_DATA_SPANS_MIN, SIZE_MAX, 0, 0 };
		size_t k = rm_smtp_data_feed(&d, (const uint8_t *)in + off, n - off, &out);

		assert_true(k > 0);
		assert_true(++calls < 1000);
		got += out.bytes;
		off += k;
	}
	assert_int_equal(off, n);
	assert_int_equal(got, 200 * 4);
	assert_true(calls >= 200 / RM_SMTP_DATA_SPANS_MIN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole),
		cmocka_unit_test(test_every_cut),
		cmocka_unit_test(test_every_cut_pair),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_byte_limit_replay),
		cmocka_unit_test(test_zero_limit),
		cmocka_unit_test(test_checkpoint_copy),
		cmocka_unit_test(test_zero_copy),
		cmocka_unit_test(test_dot_heavy_spans),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
