/*
 * NAME
 *	test_spool_format - unit tests of core/spool_format
 * DESCRIPTION
 *	decode(encode(x)) == x for every record type, at the limits (no
 *	recipient, the most recipients, fields and texts at and past their
 *	maximum, empty and maximal content, every padding length); the
 *	zero-copy DATA helpers give the same bytes as the copying encoder;
 *	every prefix of a record is NEED_MORE and every damaged byte outside
 *	the padding is refused; queue ids round-trip, sort by time and differ
 *	across workers; the generator never repeats and stays above its floor.
 *	Records are encoded into heap blocks of exact size, so ASan sees any
 *	access past a record.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/spool_format.h"

#define S(lit) ((struct rm_spool_str){ (lit), sizeof(lit) - 1 })

static uint8_t *scratch(size_t len)
{
	uint8_t *p = malloc(len ? len : 1);

	assert_non_null(p);
	return p;
}

/* Copies a record into a block of exactly its size, for ASan. */
static uint8_t *exact_copy(const uint8_t *rec, size_t len)
{
	uint8_t *p = scratch(len);

	memcpy(p, rec, len);
	return p;
}

static void assert_str_equal(struct rm_spool_str got, struct rm_spool_str want)
{
	assert_int_equal(got.len, want.len);
	if (want.len > 0)
		assert_memory_equal(got.ptr, want.ptr, want.len);
}

/* Every proper prefix is NEED_MORE; the whole is OK; flips outside padding are not OK. */
static void check_framing(const uint8_t *rec, size_t len)
{
	struct rm_spool_record out;
	uint8_t *copy = scratch(len);
	size_t plen = (size_t)rec[8] | (size_t)rec[9] << 8 | (size_t)rec[10] << 16 |
		      (size_t)rec[11] << 24;

	for (size_t cut = 0; cut < len; cut++) {
		uint8_t *p = exact_copy(rec, cut);

		assert_int_equal(rm_spool_decode(p, cut, &out), RM_SPOOL_NEED_MORE);
		assert_non_null(out.why);
		free(p);
	}
	for (size_t i = 0; i < len; i++) {
		memcpy(copy, rec, len);
		copy[i] ^= 0xff;
		enum rm_spool_result res = rm_spool_decode(copy, len, &out);

		if (i >= RM_SPOOL_HEADER_BYTES + plen + RM_SPOOL_CHECKSUM_BYTES) {
			assert_int_equal(res, RM_SPOOL_OK);	/* padding is covered by nothing */
		} else if (i >= 8 && i < 12) {
			assert_true(res == RM_SPOOL_BAD || res == RM_SPOOL_NEED_MORE);
		} else {
			assert_int_equal(res, RM_SPOOL_BAD);
		}
	}
	free(copy);
}

/* Decodes buf[0..len) (copied to an exact block) expecting OK; the copy is returned. */
static uint8_t *decode_ok(const uint8_t *buf, size_t len, struct rm_spool_record *out)
{
	uint8_t *p = exact_copy(buf, len);

	assert_int_equal(rm_spool_decode(p, len, out), RM_SPOOL_OK);
	assert_int_equal(out->record_bytes, len);
	assert_int_equal(len % RM_SPOOL_ALIGN_BYTES, 0);
	assert_null(out->why);
	return p;
}

/* --- queue ids ---------------------------------------------------------------- */

static void test_queue_id_format_parse(void **state)
{
	char text[RM_QUEUE_ID_TEXT_BYTES];
	uint64_t id = 0;
	uint64_t rng = 0x9e3779b97f4a7c15ULL;

	rm_queue_id_format(0, text);
	assert_string_equal(text, "0000000000000");
	rm_queue_id_format(UINT64_MAX, text);
	assert_string_equal(text, "FZZZZZZZZZZZZ");
	assert_int_equal(rm_queue_id_parse("FZZZZZZZZZZZZ", &id), 0);
	assert_true(id == UINT64_MAX);
	/* Either case, and Crockford's aliases. */
	assert_int_equal(rm_queue_id_parse("fzzzzzzzzzzzz", &id), 0);
	assert_true(id == UINT64_MAX);
	assert_int_equal(rm_queue_id_parse("0000000000OIL", &id), 0);
	assert_true(id == (0u << 10 | 1u << 5 | 1u));
	/* Wrong length, characters outside the alphabet, a first digit above 15. */
	assert_int_equal(rm_queue_id_parse("", &id), -EINVAL);
	assert_int_equal(rm_queue_id_parse("000000000000", &id), -EINVAL);
	assert_int_equal(rm_queue_id_parse("00000000000000", &id), -EINVAL);
	assert_int_equal(rm_queue_id_parse("000000000000U", &id), -EINVAL);
	assert_int_equal(rm_queue_id_parse("00000000000-0", &id), -EINVAL);
	assert_int_equal(rm_queue_id_parse("G000000000000", &id), -EINVAL);

	for (int i = 0; i < 100000; i++) {
		uint64_t back = 0;

		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		rm_queue_id_format(rng, text);
		assert_int_equal(strlen(text), RM_QUEUE_ID_TEXT_LEN);
		assert_int_equal(rm_queue_id_parse(text, &back), 0);
		assert_true(back == rng);
	}
}

static void test_queue_id_fields_order(void **state)
{
	const uint64_t t0 = 1767225600123ULL;	/* 2026-01-01T00:00:00.123Z */
	char a[RM_QUEUE_ID_TEXT_BYTES], b[RM_QUEUE_ID_TEXT_BYTES];
	uint64_t prev = 0;

	uint64_t id = rm_queue_id_make(t0, 37, 123456);

	assert_true(rm_queue_id_time_ms(id) == t0);
	assert_int_equal(rm_queue_id_worker(id), 37);
	assert_int_equal(rm_queue_id_counter(id), 123456);
	/* Clamped, not wrapped, outside 2024..2058. */
	assert_true(rm_queue_id_time_ms(rm_queue_id_make(0, 0, 0)) == RM_QUEUE_ID_EPOCH_UNIX_MS);
	assert_true(rm_queue_id_time_ms(rm_queue_id_make(UINT64_MAX, 0, 0)) ==
		    RM_QUEUE_ID_EPOCH_UNIX_MS + (1ULL << 40) - 1);
	/* Same ms and counter on every worker: all different. */
	for (unsigned w = 0; w <= RM_QUEUE_ID_WORKER_MAX; w++)
		for (unsigned v = 0; v < w; v++)
			assert_true(rm_queue_id_make(t0, w, 7) != rm_queue_id_make(t0, v, 7));
	/* Text order is numeric order is time order. */
	for (uint64_t dt = 0; dt < 5000; dt += 7) {
		for (unsigned w = 0; w < 64; w += 21) {
			uint64_t cur = rm_queue_id_make(t0 + dt, w, (uint32_t)(dt * 31) & RM_QUEUE_ID_COUNTER_MAX);

			if (prev != 0) {
				rm_queue_id_format(prev, a);
				rm_queue_id_format(cur, b);
				assert_true(cur > prev);
				assert_true(strcmp(a, b) < 0);
			}
			prev = cur;
		}
	}
}

static void test_queue_id_generator(void **state)
{
	const uint64_t t0 = 1767225600000ULL;
	struct rm_queue_id_gen g;
	uint64_t prev = 0;

	/* Recovery saw ids up to t0: every new id is later, even if the clock is behind. */
	rm_queue_id_gen_init(&g, 5, t0);
	uint64_t first = rm_queue_id_gen_next(&g, t0 - 60000);

	assert_true(rm_queue_id_time_ms(first) > t0);
	assert_int_equal(rm_queue_id_worker(first), 5);
	prev = first;
	/* A stalled clock: the counter, then borrowed ms when it runs out. */
	for (uint32_t i = 0; i < 3 * (RM_QUEUE_ID_COUNTER_MAX + 1); i++) {
		uint64_t id = rm_queue_id_gen_next(&g, t0);

		assert_true(id > prev);
		prev = id;
	}
	assert_true(rm_queue_id_time_ms(prev) >= t0 + 3);
	/* The clock goes back: still increasing. */
	uint64_t back = rm_queue_id_gen_next(&g, t0 - 1000);

	assert_true(back > prev);
	/* The clock jumps ahead: the time follows and the counter restarts. */
	uint64_t ahead = rm_queue_id_gen_next(&g, t0 + 100000);

	assert_true(rm_queue_id_time_ms(ahead) == t0 + 100000);
	assert_int_equal(rm_queue_id_counter(ahead), 0);
	/* A fresh generator floored at the newest time never repeats an old id. */
	rm_queue_id_gen_init(&g, 5, rm_queue_id_time_ms(ahead));
	assert_true(rm_queue_id_gen_next(&g, t0 + 100000) > ahead);
}

/* --- segment header ------------------------------------------------------------- */

static void test_segment_header(void **state)
{
	const struct rm_spool_segment in = { RM_SPOOL_VERSION, 63, 0x0102030405060708ULL,
					     1767225600000ULL };
	uint8_t buf[RM_SPOOL_SEGMENT_HEADER_BYTES];
	struct rm_spool_segment out;

	assert_int_equal(rm_spool_encode_segment(buf, sizeof(buf) - 1, &in), -ENOSPC);
	assert_int_equal(rm_spool_encode_segment(buf, sizeof(buf), &in), RM_SPOOL_SEGMENT_HEADER_BYTES);
	assert_memory_equal(buf, "RMSPOOL\0\1\0\0\0\77\0\0\0\10\7\6\5\4\3\2\1", 24);
	assert_int_equal(rm_spool_decode_segment(buf, sizeof(buf), &out), RM_SPOOL_OK);
	assert_memory_equal(&out, &in, sizeof(in));
	for (size_t cut = 0; cut < sizeof(buf); cut++)
		assert_int_equal(rm_spool_decode_segment(buf, cut, &out), RM_SPOOL_NEED_MORE);
	for (size_t i = 0; i < sizeof(buf); i++) {
		buf[i] ^= 0xff;
		assert_int_equal(rm_spool_decode_segment(buf, sizeof(buf), &out), RM_SPOOL_BAD);
		buf[i] ^= 0xff;
	}
	/* A garbage start is BAD at once, not NEED_MORE. */
	assert_int_equal(rm_spool_decode_segment((const uint8_t *)"RMX", 3, &out), RM_SPOOL_BAD);
	/* Version 2 with a valid checksum: not ours. */
	struct rm_spool_segment v2 = in;

	v2.version = 2;
	rm_spool_encode_segment(buf, sizeof(buf), &v2);
	buf[8] = 2;
	/* Re-seal by hand: encode always writes version 1. */
	uint64_t h = XXH3_64bits(buf, 32);

	for (int i = 0; i < 8; i++)
		buf[32 + i] = (uint8_t)(h >> (8 * i));
	assert_int_equal(rm_spool_decode_segment(buf, sizeof(buf), &out), RM_SPOOL_BAD);
}

/* --- envelope ------------------------------------------------------------------- */

static const struct rm_spool_envelope sample_env = {
	.received_unix_ms = 1767225600123ULL,
	.size_declared_bytes = 48213,
	.body_type = RM_SPOOL_BODY_8BITMIME,
	.ret = RM_SPOOL_RET_HDRS,
	.smtputf8 = true,
	.reverse_path = { "alice@client.example.org", 24 },
	.envid = { "QQ314159", 8 },
	.client_addr = { "192.0.2.7", 9 },
	.helo = { "mail.client.example.org", 23 },
	.auth_user = { "alice", 5 },
};

static void assert_env_equal(const struct rm_spool_envelope *got, const struct rm_spool_envelope *want)
{
	assert_true(got->received_unix_ms == want->received_unix_ms);
	assert_true(got->size_declared_bytes == want->size_declared_bytes);
	assert_int_equal(got->body_type, want->body_type);
	assert_int_equal(got->ret, want->ret);
	assert_int_equal(got->smtputf8, want->smtputf8);
	assert_str_equal(got->reverse_path, want->reverse_path);
	assert_str_equal(got->envid, want->envid);
	assert_str_equal(got->client_addr, want->client_addr);
	assert_str_equal(got->helo, want->helo);
	assert_str_equal(got->auth_user, want->auth_user);
}

static void assert_rcpts_equal(const struct rm_spool_record *rec, const struct rm_spool_rcpt *want,
			       uint32_t n)
{
	struct rm_spool_rcpt_iter it;
	struct rm_spool_rcpt got;
	uint32_t k = 0;

	memset(&got, 0, sizeof(got));
	rm_spool_rcpt_iter_init(&it, rec);
	while (k < n && rm_spool_rcpt_next(&it, &got)) {
		assert_int_equal(got.notify, want[k].notify);
		assert_str_equal(got.addr, want[k].addr);
		assert_str_equal(got.orcpt, want[k].orcpt);
		k++;
	}
	assert_int_equal(k, n);
	assert_false(rm_spool_rcpt_next(&it, &got));
}

static void test_begin_roundtrip(void **state)
{
	const struct rm_spool_rcpt rcpts[3] = {
		{ S("bob@relay.example.net"), S("rfc822;bob@relay.example.net"),
		  RM_SPOOL_NOTIFY_SUCCESS | RM_SPOOL_NOTIFY_FAILURE },
		{ S("carol@relay.example.net"), { NULL, 0 }, 0 },
		{ S("dave@relay.example.net"), { NULL, 0 }, RM_SPOOL_NOTIFY_NEVER },
	};
	uint8_t buf[1024];
	struct rm_spool_record rec;
	const uint64_t qid = rm_queue_id_make(1767225600123ULL, 3, 9);

	ssize_t n = rm_spool_encode_begin(buf, sizeof(buf), qid, &sample_env, 3, rcpts, 3);

	assert_true(n > 0);
	uint8_t *p = decode_ok(buf, (size_t)n, &rec);

	assert_int_equal(rec.type, RM_SPOOL_BEGIN);
	assert_true(rec.qid == qid);
	assert_env_equal(&rec.u.begin.env, &sample_env);
	assert_int_equal(rec.u.begin.rcpt_total, 3);
	assert_int_equal(rec.u.begin.rcpt_count, 3);
	assert_rcpts_equal(&rec, rcpts, 3);
	/* Zero copy: the strings point into the decoded bytes. */
	assert_true((const uint8_t *)rec.u.begin.env.helo.ptr > p &&
		    (const uint8_t *)rec.u.begin.env.helo.ptr < p + n);
	check_framing(p, (size_t)n);
	free(p);

	/* Too small a buffer, by one byte. */
	assert_int_equal(rm_spool_encode_begin(buf, (size_t)n - 1, qid, &sample_env, 3, rcpts, 3), -ENOSPC);

	/* The null sender and empty optional fields. */
	struct rm_spool_envelope empty = { 0 };

	n = rm_spool_encode_begin(buf, sizeof(buf), qid, &empty, 1, rcpts, 1);
	assert_true(n > 0);
	p = decode_ok(buf, (size_t)n, &rec);
	assert_env_equal(&rec.u.begin.env, &empty);
	assert_rcpts_equal(&rec, rcpts, 1);
	free(p);

	/* Part of the recipients in BEGIN, the rest in an RCPT record. */
	n = rm_spool_encode_begin(buf, sizeof(buf), qid, &sample_env, 3, rcpts, 1);
	assert_true(n > 0);
	p = decode_ok(buf, (size_t)n, &rec);
	assert_int_equal(rec.u.begin.rcpt_total, 3);
	assert_int_equal(rec.u.begin.rcpt_count, 1);
	free(p);
	n = rm_spool_encode_rcpt(buf, sizeof(buf), qid, 1, rcpts + 1, 2);
	assert_true(n > 0);
	p = decode_ok(buf, (size_t)n, &rec);
	assert_int_equal(rec.type, RM_SPOOL_RCPT);
	assert_int_equal(rec.u.rcpt.first, 1);
	assert_int_equal(rec.u.rcpt.rcpt_count, 2);
	assert_rcpts_equal(&rec, rcpts + 1, 2);
	check_framing(p, (size_t)n);
	free(p);
}

static void test_begin_limits(void **state)
{
	const struct rm_spool_rcpt ok = { S("a@b"), { NULL, 0 }, 0 };
	struct rm_spool_rcpt bad = ok;
	struct rm_spool_envelope env = sample_env;
	static char big[RM_SPOOL_FIELD_MAX + 1];
	uint8_t buf[4096];
	struct rm_spool_record rec;

	memset(big, 'x', sizeof(big));
	/* No recipient: invalid. */
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, 0, &ok, 0), -EINVAL);
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, 1, &ok, 0), -EINVAL);
	/* More in this record than the total, or a total past the maximum. */
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, 1, &ok, 2), -EINVAL);
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, RM_SPOOL_RCPT_MAX + 1, &ok, 1),
			 -EINVAL);
	/* An empty address, bad NOTIFY bits, fields one past their maximum. */
	bad.addr.len = 0;
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, 1, &bad, 1), -EINVAL);
	bad = ok;
	bad.notify = 0x10;
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, 1, &bad, 1), -EINVAL);
	bad = ok;
	bad.addr = (struct rm_spool_str){ big, RM_SPOOL_FIELD_MAX + 1 };
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, 1, &bad, 1), -EINVAL);
	bad = ok;
	bad.orcpt = (struct rm_spool_str){ big, RM_SPOOL_FIELD_MAX + 1 };
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, 1, &bad, 1), -EINVAL);
	env.helo = (struct rm_spool_str){ big, RM_SPOOL_FIELD_MAX + 1 };
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, 1, &ok, 1), -EINVAL);
	env = sample_env;
	env.body_type = RM_SPOOL_BODY_LAST + 1;
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, 1, &ok, 1), -EINVAL);
	env = sample_env;
	env.ret = RM_SPOOL_RET_LAST + 1;
	assert_int_equal(rm_spool_encode_begin(buf, sizeof(buf), 1, &env, 1, &ok, 1), -EINVAL);
	assert_int_equal(rm_spool_encode_rcpt(buf, sizeof(buf), 1, 0, &ok, 1), -EINVAL);
	assert_int_equal(rm_spool_encode_rcpt(buf, sizeof(buf), 1, 1, &ok, 0), -EINVAL);
	assert_int_equal(rm_spool_encode_rcpt(buf, sizeof(buf), 1, RM_SPOOL_RCPT_MAX, &ok, 1), -EINVAL);

	/* Every field exactly at its maximum: fits, decodes. */
	struct rm_spool_str max = { big, RM_SPOOL_FIELD_MAX };
	struct rm_spool_envelope full = { 1, 2, RM_SPOOL_BODY_BINARYMIME, RM_SPOOL_RET_FULL, false,
					  max, max, max, max, max };
	const struct rm_spool_rcpt maxr = { max, max, RM_SPOOL_NOTIFY_MASK };
	uint8_t *large = scratch(RM_SPOOL_RECORD_BYTES_MAX);
	ssize_t n = rm_spool_encode_begin(large, RM_SPOOL_RECORD_BYTES_MAX, 7, &full, 1, &maxr, 1);

	assert_true(n > 0);
	uint8_t *p = decode_ok(large, (size_t)n, &rec);

	assert_env_equal(&rec.u.begin.env, &full);
	assert_rcpts_equal(&rec, &maxr, 1);
	free(p);
	free(large);
}

static void test_begin_max_recipients(void **state)
{
	struct rm_spool_rcpt *rcpts = calloc(RM_SPOOL_RCPT_MAX, sizeof(*rcpts));
	char (*addr)[16] = calloc(RM_SPOOL_RCPT_MAX, 16);
	static char longaddr[RM_SPOOL_FIELD_MAX];
	uint8_t *buf = scratch(RM_SPOOL_RECORD_BYTES_MAX);
	struct rm_spool_record rec;
	ssize_t n;

	assert_non_null(rcpts);
	assert_non_null(addr);
	for (uint32_t i = 0; i < RM_SPOOL_RCPT_MAX; i++) {
		int len = snprintf(addr[i], 16, "u%u@x", i);

		rcpts[i].addr = (struct rm_spool_str){ addr[i], (size_t)len };
		rcpts[i].notify = (uint8_t)(i & RM_SPOOL_NOTIFY_MASK);
	}
	/* 65535 short recipients fit one BEGIN. */
	assert_int_equal(rm_spool_begin_fit(&sample_env, rcpts, RM_SPOOL_RCPT_MAX), RM_SPOOL_RCPT_MAX);
	n = rm_spool_encode_begin(buf, RM_SPOOL_RECORD_BYTES_MAX, 1, &sample_env, RM_SPOOL_RCPT_MAX,
				  rcpts, RM_SPOOL_RCPT_MAX);
	assert_true(n > 0);
	uint8_t *p = decode_ok(buf, (size_t)n, &rec);

	assert_int_equal(rec.u.begin.rcpt_count, RM_SPOOL_RCPT_MAX);
	assert_rcpts_equal(&rec, rcpts, RM_SPOOL_RCPT_MAX);
	free(p);

	/* Long ones do not: BEGIN plus RCPT records, as the fit functions say. */
	memset(longaddr, 'l', sizeof(longaddr));
	for (uint32_t i = 0; i < RM_SPOOL_RCPT_MAX; i += 2)
		rcpts[i].orcpt = (struct rm_spool_str){ longaddr, sizeof(longaddr) };
	uint32_t done = rm_spool_begin_fit(&sample_env, rcpts, RM_SPOOL_RCPT_MAX);

	assert_true(done > 0 && done < RM_SPOOL_RCPT_MAX);
	/* One more than fits is refused. */
	assert_int_equal(rm_spool_encode_begin(buf, RM_SPOOL_RECORD_BYTES_MAX, 1, &sample_env,
					       RM_SPOOL_RCPT_MAX, rcpts, done + 1), -EINVAL);
	n = rm_spool_encode_begin(buf, RM_SPOOL_RECORD_BYTES_MAX, 1, &sample_env, RM_SPOOL_RCPT_MAX,
				  rcpts, done);
	assert_true(n > 0);
	p = decode_ok(buf, (size_t)n, &rec);
	assert_rcpts_equal(&rec, rcpts, done);
	free(p);
	for (int records = 1; done < RM_SPOOL_RCPT_MAX; records++) {
		uint32_t k = rm_spool_rcpt_fit(rcpts + done, RM_SPOOL_RCPT_MAX - done);

		assert_true(records < 200 && k > 0);
		n = rm_spool_encode_rcpt(buf, RM_SPOOL_RECORD_BYTES_MAX, 1, done, rcpts + done, k);
		assert_true(n > 0 && (size_t)n <= RM_SPOOL_RECORD_BYTES_MAX);
		p = decode_ok(buf, (size_t)n, &rec);
		assert_int_equal(rec.u.rcpt.first, done);
		assert_rcpts_equal(&rec, rcpts + done, k);
		free(p);
		done += k;
	}
	free(buf);
	free(addr);
	free(rcpts);
}

/* --- content ----------------------------------------------------------------------- */

static void test_data_roundtrip(void **state)
{
	uint8_t *content = scratch(RM_SPOOL_PAYLOAD_MAX + 1);
	uint8_t *buf = scratch(RM_SPOOL_RECORD_BYTES_MAX + 8);
	struct rm_spool_record rec;
	const size_t lens[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 1024, 4096, 65536,
				RM_SPOOL_PAYLOAD_MAX - 1, RM_SPOOL_PAYLOAD_MAX };

	for (size_t i = 0; i < RM_SPOOL_PAYLOAD_MAX + 1; i++)
		content[i] = (uint8_t)(i * 131 + (i >> 9));
	for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
		size_t len = lens[k];
		ssize_t n = rm_spool_encode_data(buf, RM_SPOOL_RECORD_BYTES_MAX + 8, 42, content, len);

		assert_int_equal(n, RM_SPOOL_RECORD_BYTES(len));
		assert_int_equal(rm_spool_encode_data(buf, (size_t)n - 1, 42, content, len), -ENOSPC);
		n = rm_spool_encode_data(buf, (size_t)n, 42, content, len);
		uint8_t *p = decode_ok(buf, (size_t)n, &rec);

		assert_int_equal(rec.type, RM_SPOOL_DATA);
		assert_int_equal(rec.payload_len, len);
		if (len > 0)
			assert_memory_equal(rec.payload, content, len);
		if (len < 64)
			check_framing(p, (size_t)n);

		/* Zero copy, one piece: header, content in place, trailer. */
		uint8_t hdr[RM_SPOOL_HEADER_BYTES], trailer[RM_SPOOL_TRAILER_BYTES_MAX];

		rm_spool_data_header(hdr, 42, (uint32_t)len);
		size_t tlen = rm_spool_data_trailer_hash(trailer, rm_spool_data_checksum(hdr, content, len),
							 (uint32_t)len);

		assert_int_equal(RM_SPOOL_HEADER_BYTES + len + tlen, (size_t)n);
		assert_memory_equal(hdr, p, RM_SPOOL_HEADER_BYTES);
		assert_memory_equal(trailer, p + RM_SPOOL_HEADER_BYTES + len, tlen);

		/* Zero copy, in pieces through a streaming state. */
		XXH3_state_t st;
		size_t pos = 0;

		rm_spool_checksum_start(&st, hdr);
		for (size_t piece = 1; pos < len; piece = piece * 3 + 1) {
			size_t take = piece < len - pos ? piece : len - pos;

			XXH3_64bits_update(&st, content + pos, take);
			pos += take;
		}
		memset(trailer, 0xaa, sizeof(trailer));
		assert_int_equal(rm_spool_data_trailer(trailer, &st, (uint32_t)len), tlen);
		assert_memory_equal(trailer, p + RM_SPOOL_HEADER_BYTES + len, tlen);
		free(p);
	}
	assert_int_equal(rm_spool_encode_data(buf, RM_SPOOL_RECORD_BYTES_MAX + 8, 42, content,
					      RM_SPOOL_PAYLOAD_MAX + 1), -EINVAL);
	free(buf);
	free(content);
}

/* A message split over many DATA records: the pieces, glued, are the content. */
static void test_data_split(void **state)
{
	enum { CONTENT = 300000, CHUNK = 4093 };
	uint8_t *content = scratch(CONTENT);
	uint8_t *log = scratch(CONTENT + (CONTENT / CHUNK + 2) * 64);
	uint8_t *glued = scratch(CONTENT);
	size_t at = 0, got = 0;
	struct rm_spool_record rec;

	for (size_t i = 0; i < CONTENT; i++)
		content[i] = (uint8_t)(i ^ (i >> 8));
	for (size_t pos = 0; pos < CONTENT; pos += CHUNK) {
		size_t len = CONTENT - pos < CHUNK ? CONTENT - pos : CHUNK;
		ssize_t n = rm_spool_encode_data(log + at, 2 * CHUNK, 9, content + pos, len);

		assert_true(n > 0);
		at += (size_t)n;
	}
	ssize_t n = rm_spool_encode_end(log + at, 64, 9, CONTENT, XXH3_64bits(content, CONTENT));

	assert_int_equal(n, 48);
	at += (size_t)n;
	for (size_t pos = 0, guard = 0; pos < at; pos += rec.record_bytes, guard++) {
		assert_true(guard < CONTENT);
		assert_int_equal(rm_spool_decode(log + pos, at - pos, &rec), RM_SPOOL_OK);
		if (rec.type == RM_SPOOL_DATA) {
			memcpy(glued + got, rec.payload, rec.payload_len);
			got += rec.payload_len;
		} else {
			assert_int_equal(rec.type, RM_SPOOL_END);
			assert_true(rec.u.end.content_bytes == CONTENT);
			assert_true(rec.u.end.content_xxh3 == XXH3_64bits(glued, got));
		}
	}
	assert_int_equal(got, CONTENT);
	assert_memory_equal(glued, content, CONTENT);
	free(glued);
	free(log);
	free(content);
}

/* --- after commit ------------------------------------------------------------------ */

static void test_end_and_marks(void **state)
{
	uint8_t buf[64];
	struct rm_spool_record rec;
	const enum rm_spool_type marks[] = { RM_SPOOL_ABORT, RM_SPOOL_DELETED, RM_SPOOL_HOLD,
					     RM_SPOOL_RELEASE };

	ssize_t n = rm_spool_encode_end(buf, sizeof(buf), 77, 0, XXH3_64bits(NULL, 0));

	assert_int_equal(n, 48);
	uint8_t *p = decode_ok(buf, (size_t)n, &rec);

	assert_int_equal(rec.type, RM_SPOOL_END);
	assert_true(rec.qid == 77);
	assert_true(rec.u.end.content_bytes == 0);
	assert_true(rec.u.end.content_xxh3 == XXH3_64bits(NULL, 0));
	check_framing(p, (size_t)n);
	free(p);
	assert_int_equal(rm_spool_encode_end(buf, 47, 77, 0, 0), -ENOSPC);
	for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
		n = rm_spool_encode_mark(buf, sizeof(buf), marks[i], 78);
		assert_int_equal(n, RM_SPOOL_RECORD_BYTES_MIN);
		p = decode_ok(buf, (size_t)n, &rec);
		assert_int_equal(rec.type, marks[i]);
		assert_true(rec.qid == 78);
		assert_int_equal(rec.payload_len, 0);
		check_framing(p, (size_t)n);
		free(p);
		assert_int_equal(rm_spool_encode_mark(buf, RM_SPOOL_RECORD_BYTES_MIN - 1, marks[i], 1), -ENOSPC);
	}
	assert_int_equal(rm_spool_encode_mark(buf, sizeof(buf), RM_SPOOL_DATA, 1), -EINVAL);
	assert_int_equal(rm_spool_encode_mark(buf, sizeof(buf), RM_SPOOL_END, 1), -EINVAL);
}

static void assert_indexes(const struct rm_spool_record *rec, const uint32_t *idx, uint32_t n)
{
	assert_int_equal(rec->u.status.index_count, n);
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(rm_spool_status_index(rec, i), idx[i]);
}

static void test_status_roundtrip(void **state)
{
	const uint32_t idx[] = { 0, 2, 65534, 7 };
	static char text[RM_SPOOL_TEXT_MAX + 1];
	const struct rm_spool_str reason = S("550 5.1.1 <bob@relay.example.net>: no such user");
	const size_t cap = RM_SPOOL_RECORD_BYTES_MAX;
	uint8_t *buf = scratch(cap);
	struct rm_spool_record rec;
	uint8_t *p;
	ssize_t n;

	memset(text, 't', sizeof(text));
	n = rm_spool_encode_delivered(buf, cap, 5, false, idx, 4);
	p = decode_ok(buf, (size_t)n, &rec);
	assert_int_equal(rec.type, RM_SPOOL_DELIVERED);
	assert_false(rec.u.status.all);
	assert_indexes(&rec, idx, 4);
	check_framing(p, (size_t)n);
	free(p);
	n = rm_spool_encode_delivered(buf, cap, 5, true, NULL, 0);
	p = decode_ok(buf, (size_t)n, &rec);
	assert_true(rec.u.status.all);
	assert_int_equal(rec.u.status.index_count, 0);
	free(p);

	n = rm_spool_encode_bounced(buf, cap, 5, false, idx + 1, 1, reason);
	p = decode_ok(buf, (size_t)n, &rec);
	assert_int_equal(rec.type, RM_SPOOL_BOUNCED);
	assert_indexes(&rec, idx + 1, 1);
	assert_str_equal(rec.u.status.text, reason);
	check_framing(p, (size_t)n);
	free(p);

	n = rm_spool_encode_deferred(buf, cap, 5, 1767225900000ULL, 3, true, NULL, 0,
				     (struct rm_spool_str){ text, RM_SPOOL_TEXT_MAX });
	p = decode_ok(buf, (size_t)n, &rec);
	assert_int_equal(rec.type, RM_SPOOL_DEFERRED);
	assert_true(rec.u.status.next_attempt_unix_ms == 1767225900000ULL);
	assert_int_equal(rec.u.status.attempts, 3);
	assert_true(rec.u.status.all);
	assert_str_equal(rec.u.status.text, ((struct rm_spool_str){ text, RM_SPOOL_TEXT_MAX }));
	free(p);
	n = rm_spool_encode_deferred(buf, cap, 5, 9, 1, false, idx, 4, (struct rm_spool_str){ NULL, 0 });
	p = decode_ok(buf, (size_t)n, &rec);
	assert_indexes(&rec, idx, 4);
	assert_int_equal(rec.u.status.text.len, 0);
	check_framing(p, (size_t)n);
	free(p);

	/* Every recipient listed: the largest status record. */
	uint32_t *all = calloc(RM_SPOOL_RCPT_MAX, sizeof(*all));

	assert_non_null(all);
	for (uint32_t i = 0; i < RM_SPOOL_RCPT_MAX; i++)
		all[i] = RM_SPOOL_RCPT_MAX - 1 - i;
	n = rm_spool_encode_deferred(buf, cap, 5, 9, 1, false, all, RM_SPOOL_RCPT_MAX,
				     (struct rm_spool_str){ text, RM_SPOOL_TEXT_MAX });
	p = decode_ok(buf, (size_t)n, &rec);
	assert_indexes(&rec, all, RM_SPOOL_RCPT_MAX);
	free(p);
	free(all);

	/* Refused: ALL with indexes, neither, an index past the maximum, a long text. */
	assert_int_equal(rm_spool_encode_delivered(buf, cap, 5, true, idx, 1), -EINVAL);
	assert_int_equal(rm_spool_encode_delivered(buf, cap, 5, false, idx, 0), -EINVAL);
	const uint32_t past = RM_SPOOL_RCPT_MAX;

	assert_int_equal(rm_spool_encode_delivered(buf, cap, 5, false, &past, 1), -EINVAL);
	assert_int_equal(rm_spool_encode_bounced(buf, cap, 5, true, NULL, 0,
						 (struct rm_spool_str){ text, RM_SPOOL_TEXT_MAX + 1 }), -EINVAL);
	assert_int_equal(rm_spool_encode_deferred(buf, cap, 5, 1, 1, true, NULL, 0,
						  (struct rm_spool_str){ text, RM_SPOOL_TEXT_MAX + 1 }), -EINVAL);
	assert_int_equal(rm_spool_encode_delivered(buf, RM_SPOOL_RECORD_BYTES(8) - 1, 5, true, NULL, 0),
			 -ENOSPC);
	free(buf);
}

/* Hand-built records that pass the checksum but break the payload rules. */
static void seal(uint8_t *rec, uint32_t plen)
{
	uint64_t sum = XXH3_64bits_withSeed(rec + RM_SPOOL_HEADER_BYTES, plen,
					    XXH3_64bits(rec, RM_SPOOL_HEADER_BYTES));

	for (int i = 0; i < 8; i++)
		rec[RM_SPOOL_HEADER_BYTES + plen + i] = (uint8_t)(sum >> (8 * i));
}

static void test_decode_rejects(void **state)
{
	uint8_t buf[256];
	struct rm_spool_record rec;
	const uint32_t idx = 1;

	/* A valid DELIVERED, then its count made 2 (payload too short for it). */
	ssize_t n = rm_spool_encode_delivered(buf, sizeof(buf), 5, false, &idx, 1);

	assert_true(n > 0);
	buf[RM_SPOOL_HEADER_BYTES + 4] = 2;
	seal(buf, 12);
	assert_int_equal(rm_spool_decode(buf, (size_t)n, &rec), RM_SPOOL_BAD);
	assert_string_equal(rec.why, "malformed payload");
	/* ALL and an index at once. */
	buf[RM_SPOOL_HEADER_BYTES + 4] = 1;
	buf[RM_SPOOL_HEADER_BYTES] = 1;
	seal(buf, 12);
	assert_int_equal(rm_spool_decode(buf, (size_t)n, &rec), RM_SPOOL_BAD);
	/* An END of the wrong length is impossible before any checksum. */
	n = rm_spool_encode_end(buf, sizeof(buf), 5, 1, 2);
	buf[8] = 15;
	assert_int_equal(rm_spool_decode(buf, (size_t)n, &rec), RM_SPOOL_BAD);
	assert_string_equal(rec.why, "impossible payload length");
	/* A DATA longer than the maximum. */
	assert_true(rm_spool_encode_data(buf, sizeof(buf), 5, "x", 1) > 0);
	buf[8] = 1;
	buf[9] = 0;
	buf[10] = 0x10;
	assert_int_equal(rm_spool_decode(buf, 12, &rec), RM_SPOOL_BAD);
	/* Unknown type, garbage magic, zeros. */
	assert_true(rm_spool_encode_data(buf, sizeof(buf), 5, "x", 1) > 0);
	buf[4] = 99;
	assert_int_equal(rm_spool_decode(buf, 5, &rec), RM_SPOOL_BAD);
	assert_string_equal(rec.why, "unknown record type");
	memset(buf, 0, sizeof(buf));
	assert_int_equal(rm_spool_decode(buf, 1, &rec), RM_SPOOL_BAD);
	assert_int_equal(rm_spool_decode((const uint8_t *)"RMR", 3, &rec), RM_SPOOL_NEED_MORE);
	assert_int_equal(rm_spool_decode((const uint8_t *)"RMX", 3, &rec), RM_SPOOL_BAD);
	assert_int_equal(rm_spool_decode(NULL, 0, &rec), RM_SPOOL_NEED_MORE);

	/* A BEGIN whose recipient count says 2 but holds 1. */
	const struct rm_spool_rcpt r1 = { S("a@b"), { NULL, 0 }, 0 };

	n = rm_spool_encode_begin(buf, sizeof(buf), 5, &sample_env, 2, &r1, 1);
	assert_true(n > 0);
	uint32_t plen = (uint32_t)buf[8] | (uint32_t)buf[9] << 8;

	buf[RM_SPOOL_HEADER_BYTES + 24] = 2;
	seal(buf, plen);
	assert_int_equal(rm_spool_decode(buf, (size_t)n, &rec), RM_SPOOL_BAD);
	assert_string_equal(rec.why, "malformed payload");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_queue_id_format_parse),
		cmocka_unit_test(test_queue_id_fields_order),
		cmocka_unit_test(test_queue_id_generator),
		cmocka_unit_test(test_segment_header),
		cmocka_unit_test(test_begin_roundtrip),
		cmocka_unit_test(test_begin_limits),
		cmocka_unit_test(test_begin_max_recipients),
		cmocka_unit_test(test_data_roundtrip),
		cmocka_unit_test(test_data_split),
		cmocka_unit_test(test_end_and_marks),
		cmocka_unit_test(test_status_roundtrip),
		cmocka_unit_test(test_decode_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
