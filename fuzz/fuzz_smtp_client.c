/*
 * NAME
 *	fuzz_smtp_client - libFuzzer harness for proto/smtp_client
 * DESCRIPTION
 *	Input layout: byte 0 the parser's limits (bits 0-1: line_bytes_max 5,
 *	16, 512 or 2048; bits 2-4: lines_max 1, 2, 3, 4, 8, 16, 64, 200);
 *	bytes 1-2 a split position; byte 3 how streams are cut (bits 0-1:
 *	whole, byte by byte, fixed size, sizes from a small generator; the
 *	rest the fixed size or seed); byte 4 the dot-stuffer's output cap per
 *	call (1 + byte); the rest is the stream.
 *
 *	Replies: the stream is parsed whole, cut at the split position, byte
 *	by byte and cut as byte 3 says; every run must give the same replies
 *	(offset, code, enhanced code, text, lines, flags), the same error and
 *	the same bytes consumed.  Each run is also checked against a reference
 *	written here, line by line from RFC 5321 4.2 and the header (no state
 *	machine): the replies before the first bad line must be exactly its
 *	replies, and the parser's error must fall inside that line.  Bounds:
 *	text within RM_SMTP_CLIENT_REPLY_BYTES_MAX and only textstring bytes
 *	and LF, codes and enhanced codes valid, lines within lines_max.  Each
 *	complete reply also goes through rm_smtp_ehlo_parse.
 *
 *	DATA: the stream as message content is dot-stuffed, cut as byte 3 says
 *	with the output cap of byte 4, and whole; both must be the same bytes,
 *	and proto/smtp_data (REJECT mode) must decode them to exactly the
 *	content with every bare CR and LF made CR LF (and a final CR LF when
 *	it had none), ending exactly at the end of what was sent, with no bare
 *	line end or smuggling pattern seen.
 *
 *	Writers: the stream as a mailbox, ENVID, ORCPT and EHLO domain; any
 *	command written must be one line: no CR, LF or other control byte
 *	before its final CR LF, and the path exactly what was given between
 *	"<" and the first ">".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_client.h"
#include "proto/smtp_data.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

enum { STREAM_MAX = 8192, REPLIES_MAX = STREAM_MAX / 4 + 1 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- replies: one run's record ------------------------------------------- */

struct rec {
	size_t end;
	uint16_t code;
	unsigned lines, replaced;
	bool truncated, bare_lf, long_line;
	char enh[RM_SMTP_CLIENT_ENHANCED_BYTES_MAX + 1];
	size_t text_len;
	uint64_t text_hash;
};

struct run {
	struct rec r[REPLIES_MAX];
	size_t n;
	enum rm_smtp_replyp_err err;
	size_t consumed;
};

static uint64_t fnv(const void *p, size_t n)
{
	const uint8_t *s = p;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}

static bool is_text(uint8_t c)
{
	return c == '\t' || (c >= 32 && c <= 126);
}

static void check_reply(const struct rm_smtp_server_reply *out, unsigned lines_max)
{
	struct rm_smtp_ehlo e;

	CHECK(rm_smtp_reply_code_valid(out->code));
	CHECK(out->lines >= 1 && out->lines <= lines_max);
	CHECK(out->text != NULL && out->text_len <= RM_SMTP_CLIENT_REPLY_BYTES_MAX);
	CHECK(out->text[out->text_len] == '\0');
	for (size_t i = 0; i < out->text_len; i++)
		CHECK(is_text((uint8_t)out->text[i]) || out->text[i] == '\n');
	CHECK(out->enhanced[0] == '\0' || rm_smtp_enhanced_valid(out->enhanced, out->code));
	rm_smtp_ehlo_parse(out, &e);
	CHECK(out->code == 250 || e.ext == 0);
}

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

/* The next chunk's length; split_at, when set, cuts once there instead. */
static size_t chunk_len(struct chunker *ch, size_t pos, size_t left, size_t split_at)
{
	size_t len;

	if (split_at != SIZE_MAX)
		return pos < split_at ? split_at - pos : left;
	switch (ch->mode) {
	case 0: len = left; break;
	case 1: len = 1; break;
	case 2: len = ch->fixed; break;
	default: len = 1 + next_rand(&ch->rng) % 97; break;
	}
	return len < left ? len : left;
}

static void parse_run(const uint8_t *in, size_t len, size_t line_max, unsigned lines_max,
		      struct chunker ch, size_t split_at, struct run *run)
{
	static struct rm_smtp_replyp p;
	size_t pos = 0;

	memset(run, 0, sizeof(*run));
	rm_smtp_replyp_init(&p, line_max, lines_max);
	for (size_t guard = 0; pos < len; guard++) {
		size_t clen = chunk_len(&ch, pos, len - pos, split_at), off = 0;
		uint8_t *chunk = malloc(clen ? clen : 1);

		CHECK(guard <= len && chunk != NULL);
		memcpy(chunk, in + pos, clen);
		for (size_t calls = 0; off < clen; calls++) {
			struct rm_smtp_server_reply out;
			size_t n = rm_smtp_replyp_feed(&p, chunk + off, clen - off, &out);

			CHECK(calls <= clen && n <= clen - off);
			if (out.complete) {
				struct rec *r = &run->r[run->n++];

				CHECK(run->n <= REPLIES_MAX);
				check_reply(&out, lines_max);
				r->end = pos + off + n;
				r->code = out.code;
				r->lines = out.lines;
				r->replaced = out.replaced;
				r->truncated = out.text_truncated;
				r->bare_lf = out.bare_lf;
				r->long_line = out.long_line;
				memcpy(r->enh, out.enhanced, sizeof(r->enh));
				r->text_len = out.text_len;
				r->text_hash = fnv(out.text, out.text_len);
			}
			off += n;
			if (n == 0)
				break;
		}
		free(chunk);
		pos += off;
		if (off < clen)
			break;
	}
	run->err = rm_smtp_replyp_error(&p);
	run->consumed = pos;
	CHECK(run->err != RM_SMTP_REPLYP_OK || pos == len);
}

static void same_run(const struct run *a, const struct run *b)
{
	CHECK(a->n == b->n && a->err == b->err && a->consumed == b->consumed);
	for (size_t i = 0; i < a->n; i++) {
		const struct rec *x = &a->r[i], *y = &b->r[i];

		CHECK(x->end == y->end && x->code == y->code && x->lines == y->lines);
		CHECK(x->replaced == y->replaced && x->truncated == y->truncated);
		CHECK(x->bare_lf == y->bare_lf && x->long_line == y->long_line);
		CHECK(strcmp(x->enh, y->enh) == 0);
		CHECK(x->text_len == y->text_len && x->text_hash == y->text_hash);
	}
}

/* ---- replies: the reference ------------------------------------------------ */

static bool digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* An RFC 3463 code of class cls at t[0..n), then the end or SP: its length, else 0. */
static size_t ref_enhanced(const uint8_t *t, size_t n, uint8_t cls)
{
	size_t i = 2, a, b;

	if (n < 5 || t[0] != cls || t[1] != '.')
		return 0;
	for (a = 0; i < n && digit(t[i]) && a < 4; i++, a++)
		;
	if (a < 1 || a > 3 || i >= n || t[i] != '.')
		return 0;
	i++;
	for (b = 0; i < n && digit(t[i]) && b < 4; i++, b++)
		;
	if (b < 1 || b > 3 || (i < n && t[i] != ' '))
		return 0;
	return i;
}

struct ref_text {
	char buf[RM_SMTP_CLIENT_REPLY_BYTES_MAX];
	size_t len;
	bool truncated;
	unsigned replaced;
};

static void ref_put(struct ref_text *t, uint8_t c, bool count)
{
	if (count && !is_text(c)) {
		c = '?';
		t->replaced++;
	}
	if (t->len < sizeof(t->buf))
		t->buf[t->len++] = (char)c;
	else
		t->truncated = true;
}

/* Whether the start s[0..n) of an unfinished line already cannot be a reply line. */
static bool partial_bad(const uint8_t *s, size_t n, unsigned lines, unsigned code,
			unsigned lines_max)
{
	static const unsigned weight[3] = { 100, 10, 1 };

	for (size_t i = 0; i < n && i < 3; i++) {
		unsigned d = (unsigned)(s[i] - '0');

		if (!digit(s[i]))
			return true;
		if (lines > 0 ? code / weight[i] % 10 != d : (i == 0 && (d < 2 || d > 5)) || (i == 1 && d > 5))
			return true;
	}
	if (n > 3) {
		if (s[3] == '-')
			return lines + 1 >= lines_max;
		if (s[3] == '\r')
			return n > 4;	/* only LF may follow "CCC" CR */
		return s[3] != ' ';
	}
	return false;
}

/*
 * The replies of in[0..len) up to the first line that is not a good reply
 * line (its start in *bad_start, its length in *bad_len; SIZE_MAX when
 * there is none).
 */
static void reference(const uint8_t *in, size_t len, size_t line_max, unsigned lines_max,
		      struct run *run, size_t *bad_start, size_t *bad_len)
{
	static struct ref_text t;
	size_t pos = 0;
	unsigned lines = 0, code = 0;
	bool bare = false, long_line = false;
	char enh[RM_SMTP_CLIENT_ENHANCED_BYTES_MAX + 1] = "";

	memset(run, 0, sizeof(*run));
	memset(&t, 0, sizeof(t));
	*bad_start = SIZE_MAX;
	*bad_len = 0;
	while (pos < len) {
		const uint8_t *lf = memchr(in + pos, '\n', len - pos);
		size_t l = lf != NULL ? (size_t)(lf - (in + pos)) + 1 : len - pos;
		const uint8_t *s = in + pos;
		size_t c = l - (lf != NULL);	/* content without LF, then without its CR */
		unsigned lc;
		bool last;

		if (l > line_max || (lf == NULL && partial_bad(s, l, lines, code, lines_max))) {
			*bad_start = pos;
			*bad_len = l;
			return;
		}
		if (lf == NULL)
			return;	/* the stream ends inside a line that may still be good */
		if (c > 0 && s[c - 1] == '\r')
			c--;
		else
			bare = true;
		if (c < 3 || !digit(s[0]) || !digit(s[1]) || !digit(s[2]) ||
		    (c > 3 && s[3] != ' ' && s[3] != '-'))
			goto bad;
		lc = (unsigned)(s[0] - '0') * 100 + (unsigned)(s[1] - '0') * 10 + (unsigned)(s[2] - '0');
		if (lines == 0 ? !rm_smtp_reply_code_valid(lc) : lc != code)
			goto bad;
		last = c == 3 || s[3] == ' ';
		if (!last && lines + 1 >= lines_max)
			goto bad;
		code = lc;
		lines++;
		if (l > RM_SMTP_REPLY_LINE_BYTES_MAX)
			long_line = true;
		if (c > 4) {
			unsigned cls = code / 100;
			size_t k = cls == 3 ? 0 : ref_enhanced(s + 4, c - 4, (uint8_t)('0' + cls));
			size_t from = 4;

			if (k > 0) {
				if (enh[0] == '\0') {
					memcpy(enh, s + 4, k);
					enh[k] = '\0';
				}
				from = 4 + k + (4 + k < c);
			}
			for (size_t i = from; i < c; i++)
				ref_put(&t, s[i], true);
		}
		pos += l;
		if (!last) {
			ref_put(&t, '\n', false);
			continue;
		}
		{
			struct rec *r = &run->r[run->n++];

			CHECK(run->n <= REPLIES_MAX);
			r->end = pos;
			r->code = (uint16_t)code;
			r->lines = lines;
			r->replaced = t.replaced;
			r->truncated = t.truncated;
			r->bare_lf = bare;
			r->long_line = long_line;
			memcpy(r->enh, enh, sizeof(enh));
			r->text_len = t.len;
			r->text_hash = fnv(t.buf, t.len);
		}
		memset(&t, 0, sizeof(t));
		lines = 0;
		code = 0;
		bare = long_line = false;
		enh[0] = '\0';
	}
	return;
bad:
	*bad_start = pos;
	*bad_len = memchr(in + pos, '\n', len - pos) != NULL ?
		   (size_t)((const uint8_t *)memchr(in + pos, '\n', len - pos) - (in + pos)) + 1 :
		   len - pos;
}

static void fuzz_replies(const uint8_t *in, size_t len, const uint8_t *hdr)
{
	static const size_t line_maxes[4] = { RM_SMTP_CLIENT_LINE_BYTES_MIN, 16,
					      RM_SMTP_REPLY_LINE_BYTES_MAX, RM_SMTP_CLIENT_LINE_BYTES_DEFAULT };
	static const unsigned lines_maxes[8] = { 1, 2, 3, 4, 8, 16, 64, 200 };
	static struct run want, got, ref;
	size_t line_max = line_maxes[hdr[0] & 3], bad_start, bad_len;
	unsigned lines_max = lines_maxes[(hdr[0] >> 2) & 7];
	struct chunker whole = { 0, 0, 0 }, bytes = { 1, 0, 0 };
	struct chunker ch = { hdr[3] & 3u, 1 + (hdr[3] >> 2), 0x9e3779b9u ^ hdr[3] };
	size_t split = ((size_t)hdr[1] << 8 | hdr[2]) % (len + 1);

	parse_run(in, len, line_max, lines_max, whole, SIZE_MAX, &want);
	parse_run(in, len, line_max, lines_max, whole, split, &got);
	same_run(&want, &got);
	parse_run(in, len, line_max, lines_max, bytes, SIZE_MAX, &got);
	same_run(&want, &got);
	parse_run(in, len, line_max, lines_max, ch, SIZE_MAX, &got);
	same_run(&want, &got);

	reference(in, len, line_max, lines_max, &ref, &bad_start, &bad_len);
	if (bad_start == SIZE_MAX) {
		/* Good lines all through (the last one maybe unfinished): no error. */
		ref.err = RM_SMTP_REPLYP_OK;
		ref.consumed = len;
		same_run(&ref, &want);
	} else {
		/* The replies before the bad line, and an error inside it. */
		CHECK(want.err != RM_SMTP_REPLYP_OK);
		CHECK(want.consumed > bad_start && want.consumed <= bad_start + bad_len);
		CHECK(want.consumed <= bad_start + line_max + 1);
		ref.err = want.err;
		ref.consumed = want.consumed;
		same_run(&ref, &want);
	}
}

/* ---- dot-stuffing round trip ------------------------------------------------ */

static uint8_t stuffed[2 * STREAM_MAX + RM_SMTP_DOTSTUFF_END_BYTES_MAX];
static uint8_t stuffed_whole[sizeof(stuffed)];
static uint8_t decoded[sizeof(stuffed)];
static uint8_t normal[sizeof(stuffed)];

static size_t stuff(const uint8_t *in, size_t len, struct chunker ch, size_t out_cap, uint8_t *dst)
{
	struct rm_smtp_dotstuff st;
	uint8_t *out = malloc(out_cap);
	size_t pos = 0, total = 0;
	ssize_t n;

	CHECK(out != NULL);
	rm_smtp_dotstuff_init(&st);
	for (size_t guard = 0; pos < len; guard++) {
		size_t clen = chunk_len(&ch, pos, len - pos, SIZE_MAX), off = 0;

		CHECK(guard <= len);
		for (size_t calls = 0; off < clen; calls++) {
			size_t w, k = rm_smtp_dotstuff_feed(&st, in + pos + off, clen - off, out, out_cap, &w);

			CHECK(calls <= 3 * clen + 2);
			CHECK(k <= clen - off && w <= out_cap && (k > 0 || w > 0));
			CHECK(out_cap < 2 || k > 0);
			CHECK(total + w <= sizeof(stuffed));
			memcpy(dst + total, out, w);
			total += w;
			off += k;
		}
		pos += clen;
	}
	n = rm_smtp_dotstuff_end(&st, out, out_cap);
	if (n < 0) {
		uint8_t end[RM_SMTP_DOTSTUFF_END_BYTES_MAX];

		CHECK(out_cap < RM_SMTP_DOTSTUFF_END_BYTES_MAX);
		n = rm_smtp_dotstuff_end(&st, end, sizeof(end));
		CHECK(n > 0);
		memcpy(dst + total, end, (size_t)n);
	} else {
		memcpy(dst + total, out, (size_t)n);
	}
	total += (size_t)n;
	CHECK(st.in_bytes == len && st.out_bytes == total);
	free(out);
	return total;
}

static void fuzz_dotstuff(const uint8_t *in, size_t len, const uint8_t *hdr)
{
	struct chunker whole = { 0, 0, 0 };
	struct chunker ch = { hdr[3] & 3u, 1 + (hdr[3] >> 2), 0x2545f491u ^ hdr[3] };
	size_t out_cap = 1 + (size_t)hdr[4], n, nw, nn = 0, dlen = 0, pos = 0;
	struct rm_smtp_data_opts o;
	struct rm_smtp_data d;
	struct rm_smtp_data_span spans[RM_SMTP_DATA_SPANS_MIN];

	n = stuff(in, len, ch, out_cap, stuffed);
	nw = stuff(in, len, whole, sizeof(stuffed), stuffed_whole);
	CHECK(n == nw && memcmp(stuffed, stuffed_whole, n) == 0);

	/* What the receiver must get: line ends as CR LF, and a final one. */
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\r' || in[i] == '\n') {
			if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
				i++;
			normal[nn++] = '\r';
			normal[nn++] = '\n';
		} else {
			normal[nn++] = in[i];
		}
	}
	if (nn > 0 && normal[nn - 1] != '\n') {
		normal[nn++] = '\r';
		normal[nn++] = '\n';
	}

	rm_smtp_data_opts_default(&o);
	o.line_bytes_max = 0;
	rm_smtp_data_init(&d, &o);
	for (size_t guard = 0; !rm_smtp_data_done(&d) && pos < n; guard++) {
		size_t clen = chunk_len(&ch, pos, n - pos, SIZE_MAX), k;
		struct rm_smtp_data_out out = { spans, RM_SMTP_DATA_SPANS_MIN, SIZE_MAX, 0, 0 };

		CHECK(guard <= 2 * n + 2);
		k = rm_smtp_data_feed(&d, stuffed + pos, clen, &out);
		for (size_t i = 0; i < out.span_count; i++) {
			CHECK(dlen + out.span[i].len <= sizeof(decoded));
			memcpy(decoded + dlen, out.span[i].ptr, out.span[i].len);
			dlen += out.span[i].len;
		}
		pos += k;
	}
	CHECK(rm_smtp_data_done(&d) && pos == n);
	CHECK(!d.bare_cr && !d.bare_lf && !d.smuggle);
	CHECK(dlen == nn && memcmp(decoded, normal, nn) == 0);
}

/* ---- writers ------------------------------------------------------------------ */

/* One command line: printable (or UTF-8) bytes, SP, then CR LF at the end only. */
static void check_line(const uint8_t *buf, ssize_t n, const char *verb)
{
	size_t vl = strlen(verb);

	if (n < 0)
		return;
	CHECK((size_t)n >= vl + 2 && memcmp(buf, verb, vl) == 0);
	CHECK(buf[n - 2] == '\r' && buf[n - 1] == '\n');
	for (ssize_t i = 0; i < n - 2; i++)
		CHECK(buf[i] >= 32 && buf[i] != 127);
}

/* "<path>": exactly the path up to the first '>'. */
static void check_path(const uint8_t *buf, ssize_t n, const uint8_t *path, size_t plen)
{
	const uint8_t *lt, *gt;

	if (n < 0)
		return;
	lt = memchr(buf, '<', (size_t)n);
	CHECK(lt != NULL);
	gt = memchr(lt, '>', (size_t)(buf + n - lt));
	CHECK(gt != NULL && (size_t)(gt - lt - 1) == plen && memcmp(lt + 1, path, plen) == 0);
}

static void fuzz_writers(const uint8_t *in, size_t len, const uint8_t *hdr)
{
	static const struct rm_smtp_ehlo all = { 0x3ffu, 3u, 0 };
	static char domain[300];
	uint8_t buf[RM_SMTP_CLIENT_CMD_BYTES_MAX];
	struct rm_smtp_mail_args m = { (const char *)in, len, hdr[1], (enum rm_smtp_body)(hdr[2] & 3),
				       (hdr[2] & 4) != 0, (enum rm_smtp_ret)((hdr[2] >> 3) % 3),
				       (const char *)in, len < 120 ? len : 120 };
	struct rm_smtp_rcpt_args r = { (const char *)in, len, (uint8_t)(hdr[4] & 0x0f),
				       (const char *)in, len, (hdr[2] & 4) != 0 };
	ssize_t n;

	n = rm_smtp_write_mail(buf, sizeof(buf), &m, &all);
	check_line(buf, n, "MAIL FROM:<");
	check_path(buf, n, in, len);
	m.envid_len = 0;
	n = rm_smtp_write_mail(buf, sizeof(buf), &m, &all);
	check_line(buf, n, "MAIL FROM:<");
	check_path(buf, n, in, len);
	r.orcpt_len = 0;
	n = rm_smtp_write_rcpt(buf, sizeof(buf), &r, &all);
	check_line(buf, n, "RCPT TO:<");
	check_path(buf, n, in, len);
	/* The input as ENVID and as ORCPT, with a good path. */
	m = (struct rm_smtp_mail_args){ "a@example.org", 13, 0, RM_SMTP_BODY_NONE, false,
					RM_SMTP_RET_NONE, (const char *)in, len };
	check_line(buf, rm_smtp_write_mail(buf, sizeof(buf), &m, &all), "MAIL FROM:<a@example.org>");
	r = (struct rm_smtp_rcpt_args){ "a@example.org", 13, 0, (const char *)in, len, false };
	check_line(buf, rm_smtp_write_rcpt(buf, sizeof(buf), &r, &all), "RCPT TO:<a@example.org>");
	/* The input as an EHLO domain (up to its first NUL). */
	n = (ssize_t)(len < sizeof(domain) - 1 ? len : sizeof(domain) - 1);
	memcpy(domain, in, (size_t)n);
	domain[n] = '\0';
	check_line(buf, rm_smtp_write_ehlo(buf, sizeof(buf), domain), "EHLO ");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 5 || size - 5 > STREAM_MAX)
		return 0;
	fuzz_replies(data + 5, size - 5, data);
	fuzz_dotstuff(data + 5, size - 5, data);
	if (size - 5 <= 600)
		fuzz_writers(data + 5, size - 5, data);
	return 0;
}
