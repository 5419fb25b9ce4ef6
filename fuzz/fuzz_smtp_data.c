/*
 * NAME
 *	fuzz_smtp_data - libFuzzer harness for proto/smtp_data
 * DESCRIPTION
 *	Input layout: byte 0 the mode (bit 0 NORMALISE), the kind (bits 1-2:
 *	DATA, BDAT, binary BDAT) and the line limit (bits 3-7: off, 1..30 or
 *	1000); bytes 1-2 a split position; byte 3 how the stream is cut into
 *	receive chunks (whole, byte by byte, fixed size, sizes from a small
 *	generator); byte 4 an output byte limit per call (0: none); byte 5
 *	seeds the BDAT chunk sizes; the rest is the content.  For DATA the
 *	harness appends "\r\n.\r\nQUIT\r\n", so every stream has an end and
 *	a pipelined command after it.
 *
 *	The decoder runs three times: whole (unlimited output), cut in two at
 *	the split position, and cut as byte 3 says with the byte limit (each
 *	call copied first and, when the "spool" takes fewer bytes than it
 *	gave, restored and fed again with that limit, as a session under
 *	back-pressure does).  Each run must give exactly what a reference
 *	decoder written here (line by line, from the rules of RFC 5321 4.5.2
 *	and the header's description, no state machine) gives: the content,
 *	the input consumed (the end of data exactly at the first CR LF "." CR
 *	LF, counting the DATA line's CR LF, and never past it), the flags (bare
 *	CR, bare LF, smuggling pattern, long line) and content_bytes.  Every
 *	span lies in the chunk just fed or in the decoder's constant bytes;
 *	each chunk is a heap block of exact size.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_data.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

enum { CONTENT_MAX = 8192, OUT_MAX = 3 * CONTENT_MAX + 64, SPANS = RM_SMTP_DATA_SPANS_MIN };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum kind { K_DATA, K_BDAT, K_BINARY };

struct setup {
	enum kind kind;
	enum rm_smtp_data_mode mode;
	size_t line_max;
	const uint8_t *in;
	size_t len;
	size_t bdat_sizes[64];
	size_t bdat_n;
};

struct result {
	uint8_t out[OUT_MAX];
	size_t out_len;
	size_t consumed;
	bool done, bare_cr, bare_lf, smuggle, long_line;
};

/* ---- the reference ---------------------------------------------------- */

enum term { T_NONE, T_CRLF, T_LF, T_CR };

static enum term term_at(const uint8_t *s, size_t n, size_t i, size_t *len)
{
	if (i >= n)
		return T_NONE;
	if (s[i] == '\r') {
		bool lf = i + 1 < n && s[i + 1] == '\n';

		*len = lf ? 2 : 1;
		return lf ? T_CRLF : T_CR;
	}
	if (s[i] == '\n') {
		*len = 1;
		return T_LF;
	}
	return T_NONE;
}

static void ref_put(struct result *r, const void *p, size_t n)
{
	CHECK(r->out_len + n <= sizeof(r->out));
	memcpy(r->out + r->out_len, p, n);
	r->out_len += n;
}

/* DATA: the end is the first CR LF "." CR LF of CR LF + input. */
static size_t ref_end(const uint8_t *s, size_t n)
{
	for (size_t i = 0; i + 3 <= n; i++) {
		bool crlf_before = i == 0 || (i >= 2 && s[i - 2] == '\r' && s[i - 1] == '\n');

		if (crlf_before && s[i] == '.' && s[i + 1] == '\r' && s[i + 2] == '\n')
			return i + 3;
	}
	return SIZE_MAX;
}

static void ref_data_reject(const uint8_t *s, size_t content, struct result *r)
{
	for (size_t i = 0; i < content; i++) {
		bool ls = i == 0 || (i >= 2 && s[i - 2] == '\r' && s[i - 1] == '\n');

		if (!(ls && s[i] == '.'))
			ref_put(r, s + i, 1);
	}
}

/* NORMALISE, line by line; dots only for DATA. */
static void ref_normalise(const uint8_t *s, size_t n, bool data, struct result *r)
{
	size_t pos = 0, tl = 0;
	bool ls_crlf = true;

	while (pos < n) {
		if (data && s[pos] == '.') {
			enum term t = term_at(s, n, pos + 1, &tl);

			CHECK(!(t == T_CRLF && ls_crlf));	/* the end is not in s */
			if (t != T_NONE) {
				ref_put(r, ".\r\n", 3);
				ls_crlf = t == T_CRLF;
				pos += 1 + tl;
				continue;
			}
			pos++;
		}
		while (pos < n && s[pos] != '\r' && s[pos] != '\n')
			ref_put(r, s + pos++, 1);
		if (pos == n)
			break;
		enum term t = term_at(s, n, pos, &tl);

		ref_put(r, "\r\n", 2);
		ls_crlf = t == T_CRLF;
		pos += tl;
	}
}

static void ref_flags(const uint8_t *c, size_t n, struct result *r)
{
	for (size_t i = 0; i < n; i++) {
		if (c[i] == '\n' && (i == 0 || c[i - 1] != '\r'))
			r->bare_lf = true;
		if (c[i] == '\r' && (i + 1 == n || c[i + 1] != '\n'))
			r->bare_cr = true;
		if (c[i] != '.')
			continue;
		/* T1: what ends the line before the dot; T2: what ends the dot's line. */
		bool t1_crlf = i == 0 || (c[i - 1] == '\n' && i >= 2 && c[i - 2] == '\r');
		bool t1 = i == 0 || c[i - 1] == '\n' || c[i - 1] == '\r';
		size_t tl;
		enum term t2 = term_at(c, n, i + 1, &tl);

		if (t1 && t2 != T_NONE && !(t1_crlf && t2 == T_CRLF))
			r->smuggle = true;
	}
}

/* Line lengths of the content: lines end after each CR LF. */
static bool ref_long(const uint8_t *o, size_t n, size_t max)
{
	size_t start = 0;

	if (max == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && o[i] == '\r' && o[i + 1] == '\n') {
			if (i + 2 - start > max)
				return true;
			start = i + 2;
			i++;
		}
	}
	return n - start > max;
}

static void reference(const struct setup *su, struct result *r)
{
	memset(r, 0, sizeof(*r));
	r->done = true;
	if (su->kind == K_DATA) {
		size_t end = ref_end(su->in, su->len);

		CHECK(end != SIZE_MAX);	/* the harness appended one */
		r->consumed = end;
		if (su->mode == RM_SMTP_DATA_REJECT)
			ref_data_reject(su->in, end - 3, r);
		else
			ref_normalise(su->in, end - 3, true, r);
		ref_flags(su->in, end, r);
	} else {
		r->consumed = su->len;
		if (su->kind == K_BINARY || su->mode == RM_SMTP_DATA_REJECT)
			ref_put(r, su->in, su->len);
		else
			ref_normalise(su->in, su->len, false, r);
		if (su->kind == K_BDAT)
			ref_flags(su->in, su->len, r);
	}
	r->long_line = su->kind != K_BINARY && ref_long(r->out, r->out_len, su->line_max);
}

/* ---- the decoder, as a session drives it ---------------------------------- */

struct chunker {
	unsigned mode;
	size_t fixed;
	uint32_t rng;
};

static uint32_t next_rand(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

static size_t chunk_len(struct chunker *ch, size_t left)
{
	size_t len;

	switch (ch->mode) {
	case 0:
		len = left;
		break;
	case 1:
		len = 1;
		break;
	case 2:
		len = ch->fixed;
		break;
	default:
		len = 1 + next_rand(&ch->rng) % 97;
		break;
	}
	return len < left ? len : left;
}

static void take(const struct rm_smtp_data_out *out, const uint8_t *chunk, size_t len,
		 size_t limit, struct result *r)
{
	size_t sum = 0;

	CHECK(out->span_count <= out->span_max);
	for (size_t i = 0; i < out->span_count && sum < limit; i++) {
		const struct rm_smtp_data_span *s = &out->span[i];
		size_t n = s->len < limit - sum ? s->len : limit - sum;

		CHECK(s->len > 0 && s->ptr != NULL);
		CHECK(rm_smtp_data_span_static(s) || (s->ptr >= chunk && s->ptr + s->len <= chunk + len));
		CHECK(r->out_len + n <= sizeof(r->out));
		memcpy(r->out + r->out_len, s->ptr, n);
		r->out_len += n;
		sum += n;
	}
}

static void run(const struct setup *su, const size_t *cuts, size_t ncuts, struct chunker *ch,
		size_t limit, struct result *r)
{
	struct rm_smtp_data_opts o;
	struct rm_smtp_data d;
	struct rm_smtp_data_span spans[SPANS];
	size_t pos = 0, next_cut = 0, bdat_i = 0;

	memset(r, 0, sizeof(*r));
	rm_smtp_data_opts_default(&o);
	o.mode = su->mode;
	o.line_bytes_max = su->line_max;
	if (su->kind == K_DATA)
		rm_smtp_data_init(&d, &o);
	else
		rm_smtp_data_init_bdat(&d, &o, su->kind == K_BINARY);

	for (size_t guard = 0; !rm_smtp_data_done(&d); guard++) {
		size_t len;

		CHECK(guard <= 8 * su->len + 64);
		if (cuts != NULL)
			len = (next_cut < ncuts ? cuts[next_cut] : su->len) - pos;
		else
			len = chunk_len(ch, su->len - pos);
		uint8_t *chunk = malloc(len ? len : 1);
		size_t off = 0;

		CHECK(chunk != NULL);
		memcpy(chunk, su->in + pos, len);
		for (size_t calls = 0; !rm_smtp_data_done(&d); calls++) {
			struct rm_smtp_data saved;
			struct rm_smtp_data_out out = { spans, SPANS, SIZE_MAX, 0, 0 };
			size_t n;

			CHECK(calls <= 8 * len + 64);
			if (su->kind != K_DATA && rm_smtp_data_chunk_done(&d) && !d.last && bdat_i < su->bdat_n) {
				rm_smtp_data_bdat_chunk(&d, su->bdat_sizes[bdat_i], bdat_i + 1 == su->bdat_n);
				bdat_i++;
			}
			saved = d;
			n = rm_smtp_data_feed(&d, chunk + off, len - off, &out);
			if (limit != 0 && out.bytes > limit) {
				/* The spool took only `limit`: feed again from the copy with that limit. */
				struct result first;

				first.out_len = 0;
				take(&out, chunk + off, len - off, limit, &first);
				d = saved;
				out = (struct rm_smtp_data_out){ spans, SPANS, limit, 0, 0 };
				n = rm_smtp_data_feed(&d, chunk + off, len - off, &out);
				CHECK(out.bytes == limit);
				take(&out, chunk + off, len - off, SIZE_MAX, r);
				CHECK(memcmp(r->out + r->out_len - limit, first.out, limit) == 0);
			} else {
				take(&out, chunk + off, len - off, SIZE_MAX, r);
			}
			CHECK(d.content_bytes == r->out_len);
			off += n;
			if (n == 0 && out.bytes == 0)
				break;
		}
		free(chunk);
		CHECK(off == len || rm_smtp_data_done(&d));
		pos += off;
		next_cut++;
		if (pos == su->len && !rm_smtp_data_done(&d)) {
			/* Everything is in: only a BDAT LAST may still have to finish. */
			struct rm_smtp_data_out out = { spans, SPANS, SIZE_MAX, 0, 0 };

			CHECK(su->kind != K_DATA);
			if (rm_smtp_data_chunk_done(&d) && !d.last && bdat_i < su->bdat_n) {
				rm_smtp_data_bdat_chunk(&d, su->bdat_sizes[bdat_i], bdat_i + 1 == su->bdat_n);
				bdat_i++;
			}
			CHECK(rm_smtp_data_feed(&d, NULL, 0, &out) == 0);
			take(&out, NULL, 0, SIZE_MAX, r);
		}
	}
	r->consumed = pos;
	r->done = true;
	r->bare_cr = d.bare_cr;
	r->bare_lf = d.bare_lf;
	r->smuggle = d.smuggle;
	r->long_line = d.long_line;
	CHECK((rm_smtp_data_status(&d) != NULL) ==
	      (d.smuggle && su->mode == RM_SMTP_DATA_REJECT && su->kind != K_BINARY));
}

static void same(const struct result *a, const struct result *b)
{
	CHECK(a->out_len == b->out_len && memcmp(a->out, b->out, a->out_len) == 0);
	CHECK(a->consumed == b->consumed && a->done == b->done);
	CHECK(a->bare_cr == b->bare_cr && a->bare_lf == b->bare_lf);
	CHECK(a->smuggle == b->smuggle && a->long_line == b->long_line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char tail[] = "\r\n.\r\nQUIT\r\n";
	static uint8_t stream[CONTENT_MAX + sizeof(tail)];
	static struct result want, got;
	struct setup su;
	struct chunker ch;
	size_t body_len, split;
	uint32_t rng;

	if (size < 6 || size - 6 > CONTENT_MAX)
		return 0;
	memset(&su, 0, sizeof(su));
	su.mode = data[0] & 1 ? RM_SMTP_DATA_NORMALISE : RM_SMTP_DATA_REJECT;
	su.kind = (enum kind)((data[0] >> 1) & 3);
	if (su.kind > K_BINARY)
		su.kind = K_DATA;
	su.line_max = (data[0] >> 3) == 31 ? 1000 : data[0] >> 3;
	body_len = size - 6;
	memcpy(stream, data + 6, body_len);
	su.in = stream;
	su.len = body_len;
	if (su.kind == K_DATA) {
		memcpy(stream + body_len, tail, sizeof(tail) - 1);
		su.len += sizeof(tail) - 1;
	} else {
		/* BDAT chunk sizes that add up to the content, sometimes a "BDAT 0 LAST". */
		size_t left = su.len;

		rng = 0x2545f491u ^ data[5];
		while (left > 0 && su.bdat_n < 63) {
			size_t n = 1 + next_rand(&rng) % (data[5] & 0x80 ? 7 : 300);

			n = n < left ? n : left;
			su.bdat_sizes[su.bdat_n++] = n;
			left -= n;
		}
		if (left > 0)
			su.bdat_sizes[su.bdat_n - 1] += left;
		if (su.bdat_n == 0 || (data[5] & 1))
			su.bdat_sizes[su.bdat_n++] = 0;
	}

	reference(&su, &want);

	run(&su, NULL, 0, &(struct chunker){ 0, 0, 0 }, 0, &got);
	same(&want, &got);

	split = ((size_t)data[1] << 8 | data[2]) % (su.len + 1);
	run(&su, &split, 1, NULL, 0, &got);
	same(&want, &got);

	ch.mode = data[3] & 3;
	ch.fixed = 1 + (data[3] >> 2);
	ch.rng = 0x9e3779b9u ^ data[3];
	run(&su, NULL, 0, &ch, data[4], &got);
	same(&want, &got);
	return 0;
}
