/*
 * NAME
 *	fuzz_dsn - libFuzzer harness for proto/dsn
 * DESCRIPTION
 *	Input layout: byte 0 flags (bit 0 SMTPUTF8, bits 1-2 RET none, FULL,
 *	HDRS, bit 3 scan the original first, bit 4 an ORCPT, bit 5 an
 *	ENVID, bit 6 a second recipient, bit 7 a negative time zone), byte 1
 *	the output cap, byte 2 the input chunk size, byte 3 the size cap on
 *	the original (none, small, or all of it), byte 4 the first
 *	recipient's action; bytes 5-6 the reply's length (little endian,
 *	bounded by what is left), the reply (any bytes); a length byte and
 *	the recipient's address (any bytes; the ORCPT and the ENVID are made
 *	from it too); the rest is the original (any bytes).  The id is "F1",
 *	so the dictionary can offer the boundary's base "=_rm.F1.".
 *
 *	Every DSN must be well formed whatever the input: each line ends CR
 *	LF and has at most 998 bytes, no other CR or LF; the boundary occurs
 *	only in the Content-Type parameter and as delimiter lines, two or
 *	three parts and then the close delimiter, last.  Without SMTPUTF8 and
 *	without body_8bit no byte is 8-bit.  The DSN written with the input's
 *	cap and chunks is byte for byte the one written with one call each.
 *	Every write goes into a heap block of exactly the cap, so ASan sees a
 *	byte past it.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/dsn.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct out {
	uint8_t *buf;
	size_t len;
	size_t cap;
};

static void out_add(struct out *o, const uint8_t *p, size_t n)
{
	if (o->len + n > o->cap) {
		size_t cap = (o->len + n) * 2 + 256;
		uint8_t *b = realloc(o->buf, cap);

		CHECK(b != NULL);
		o->buf = b;
		o->cap = cap;
	}
	if (n > 0)
		memcpy(o->buf + o->len, p, n);
	o->len += n;
}

/* The whole DSN; returns the writer's state at the end in *wout. */
static void run(const struct rm_dsn_report *r, const uint8_t *orig, size_t olen, size_t cap,
		size_t chunk, bool scan, struct out *o, struct rm_dsn_writer *w)
{
	uint8_t *tmp = malloc(cap);
	size_t pos = 0, n, rounds = 0;

	CHECK(tmp != NULL);
	CHECK(rm_dsn_begin(w, r) == RM_DSN_OK);
	while (scan && pos < olen) {
		size_t take = olen - pos < chunk ? olen - pos : chunk;
		size_t used = rm_dsn_scan_original(w, orig + pos, take);

		pos += used;
		if (used < take)
			break;
	}
	do {
		n = rm_dsn_write_head(w, tmp, cap);
		CHECK(n <= cap);
		out_add(o, tmp, n);
		CHECK(++rounds < 50000000);
	} while (!rm_dsn_head_done(w));
	pos = 0;
	while (pos < olen && !rm_dsn_original_done(w)) {
		size_t take = olen - pos < chunk ? olen - pos : chunk;
		size_t used;

		n = rm_dsn_feed_original(w, orig + pos, take, tmp, cap, &used);
		CHECK(n <= cap && used <= take);
		CHECK(n > 0 || used > 0 || rm_dsn_original_done(w));
		out_add(o, tmp, n);
		pos += used;
		CHECK(++rounds < 50000000);
	}
	do {
		n = rm_dsn_end(w, tmp, cap);
		CHECK(n <= cap);
		out_add(o, tmp, n);
		CHECK(++rounds < 50000000);
	} while (!rm_dsn_done(w));
	free(tmp);
}

/* The structure; returns the number of parts. */
static size_t check_structure(const struct out *o, const char *b, size_t blen)
{
	const uint8_t *p = o->buf;
	size_t start = 0, delims = 0;
	bool closed = false, in_header = true, param = false;

	CHECK(blen >= 1 && blen <= RM_DSN_BOUNDARY_BYTES_MAX);
	for (size_t i = 0; i < o->len; i++) {
		CHECK(p[i] != '\n');
		if (p[i] != '\r')
			continue;
		CHECK(i + 1 < o->len && p[i + 1] == '\n');
		CHECK(i - start <= RM_DSN_LINE_BYTES_MAX);
		CHECK(!closed);

		const uint8_t *l = p + start;
		size_t ll = i - start;

		if (ll == 0)
			in_header = false;
		if (ll >= 2 + blen && l[0] == '-' && l[1] == '-' && memcmp(l + 2, b, blen) == 0) {
			if (ll == 2 + blen)
				delims++;
			else if (ll == 4 + blen && l[2 + blen] == '-' && l[3 + blen] == '-')
				closed = true;
			else
				CHECK(0);
		} else {
			for (size_t k = 0; k + blen <= ll; k++) {
				if (memcmp(l + k, b, blen) != 0)
					continue;
				CHECK(in_header && !param && k >= 10 &&
				      memcmp(l + k - 10, "boundary=\"", 10) == 0);
				param = true;
			}
		}
		start = i + 2;
		i++;
	}
	CHECK(start == o->len && param && closed);
	return delims;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const status[RM_DSN_ACTION_COUNT] = { "5.1.1", "4.4.1", "2.0.0", "2.0.0", "2.1.5" };
	struct rm_dsn_rcpt rc[2];
	struct rm_dsn_report r;
	struct rm_dsn_writer w1, w2;
	struct out o1 = { 0 }, o2 = { 0 };
	size_t pos = 7, rlen, alen, blen1, blen2;
	const char *b1, *b2;
	char b1copy[RM_DSN_BOUNDARY_BYTES_MAX + 1];

	if (size < 7)
		return 0;

	uint8_t flags = data[0];
	size_t cap = data[1] < 16 ? (size_t)data[1] + 1 : (size_t)data[1] * 24;
	size_t chunk = data[2] < 32 ? (size_t)data[2] + 1 : (size_t)data[2] * 64;
	bool scan = flags & 0x08;

	rlen = (size_t)data[5] | (size_t)data[6] << 8;
	if (rlen > size - pos)
		rlen = size - pos;
	/* A one-byte cap regenerates a piece per byte: keep such runs short. */
	if (cap < 16 && rlen > 200)
		rlen = 200;
	const uint8_t *reply = data + pos;

	pos += rlen;
	alen = pos < size ? data[pos++] : 0;
	if (alen > size - pos)
		alen = size - pos;
	const uint8_t *addr = data + pos;

	pos += alen;

	const uint8_t *orig = data + pos;
	size_t olen = size - pos;

	if (cap < 16 && olen > 4096)
		olen = 4096;
	memset(rc, 0, sizeof(rc));
	rc[0].addr = alen > 0 ? (struct rm_smtp_span){ addr, alen } :
				(struct rm_smtp_span){ (const uint8_t *)"u@example.net", 13 };
	rc[0].action = (enum rm_dsn_action)(data[4] % RM_DSN_ACTION_COUNT);
	rc[0].status = status[rc[0].action];
	rc[0].remote_mta = (struct rm_smtp_span){ (const uint8_t *)"mx.example.net", 14 };
	rc[0].reply = (struct rm_smtp_span){ reply, rlen };
	rc[0].last_attempt_unix_s = 1700000000;
	rc[0].retry_until_unix_s = 1700400000;
	if (flags & 0x10) {
		rc[0].orcpt_type = (struct rm_smtp_span){ (const uint8_t *)"rfc822", 6 };
		rc[0].orcpt = (struct rm_smtp_span){ addr, alen < RM_SMTP_ORCPT_BYTES_MAX ? alen : 0 };
	}
	rc[1] = rc[0];
	rc[1].action = RM_DSN_DELAYED;
	rc[1].status = "4.2.2";
	rc[1].reply = (struct rm_smtp_span){ NULL, 0 };
	rc[1].reason = (struct rm_smtp_span){ reply, rlen };
	rc[1].remote_mta = (struct rm_smtp_span){ NULL, 0 };

	memset(&r, 0, sizeof(r));
	r.hostname = (struct rm_smtp_span){ (const uint8_t *)"mx.example.org", 14 };
	r.from_display = (struct rm_smtp_span){ (const uint8_t *)"Mail \"Delivery\" System", 22 };
	r.id = (struct rm_smtp_span){ (const uint8_t *)"F1", 2 };
	/* The sender may not be null; the address as sender is fine otherwise. */
	r.sender = alen == 2 && addr[0] == '<' && addr[1] == '>' ?
		   (struct rm_smtp_span){ (const uint8_t *)"s@example.com", 13 } : rc[0].addr;
	if (flags & 0x20)
		r.envid = (struct rm_smtp_span){ addr, alen < RM_SMTP_ENVID_BYTES_MAX ? alen : 0 };
	r.ret = (enum rm_smtp_ret)((flags >> 1) & 3) == 3 ? RM_SMTP_RET_NONE :
		(enum rm_smtp_ret)((flags >> 1) & 3);
	r.smtputf8 = flags & 0x01;
	r.arrival_unix_s = 1699990000;
	r.now_unix_s = 1700000000;
	r.tz_offset_min = flags & 0x80 ? -(int32_t)(data[3] % 24) * 60 - 30 : (int32_t)(data[3] % 24) * 60;
	r.original_bytes = olen;
	r.original_bytes_max = data[3] < 32 ? 0 : data[3] < 128 ? (uint64_t)data[3] : olen + 1;
	r.rcpt = rc;
	r.rcpt_count = flags & 0x40 ? 2 : 1;

	run(&r, orig, olen, cap, chunk, scan, &o1, &w1);
	b1 = rm_dsn_boundary(&w1, &blen1);
	CHECK(b1 != NULL);
	memcpy(b1copy, b1, blen1);
	b1copy[blen1] = '\0';
	CHECK(check_structure(&o1, b1copy, blen1) == (r.original_bytes_max > 0 ? 3u : 2u));
	if (!r.smtputf8 && !w1.body_8bit)
		for (size_t i = 0; i < o1.len; i++)
			CHECK(o1.buf[i] < 0x80);
	/* With the original scanned the guard never has to break anything. */
	if (scan && blen1 < RM_DSN_BOUNDARY_BYTES_MAX)
		CHECK(w1.boundary_hits == 0);

	/* The same in one go. */
	run(&r, orig, olen, o1.len + 16, olen + 1, scan, &o2, &w2);
	b2 = rm_dsn_boundary(&w2, &blen2);
	CHECK(blen1 == blen2 && memcmp(b1copy, b2, blen1) == 0);
	CHECK(o1.len == o2.len && memcmp(o1.buf, o2.buf, o1.len) == 0);
	CHECK(w1.boundary_hits == w2.boundary_hits && w1.replaced == w2.replaced);
	free(o1.buf);
	free(o2.buf);
	return 0;
}
