/*
 * NAME
 *	fuzz_spool_recover - libFuzzer harness for core/spool_recover and spool_format
 * DESCRIPTION
 *	Input layout: u8 flags, u16 LE split, then segment bytes.
 *	  flags bit 0  prepend a valid segment header to each segment (seq 1, 2)
 *	  flags bit 1  fix checksums: the segment header's and every record's
 *		       that is framed well enough to be found, so mutations
 *		       reach the payload parsers and the recovery state machine
 *		       instead of dying at the first checksum
 *	  flags bit 2  two segments: the first split bytes, then the rest
 *	  flags 3..7   0: roomy limits; n: every limit n (overflow paths)
 *	Each segment is a heap block of exact size, so ASan flags any read
 *	past one.  The seeds (fuzz/corpus/fuzz_spool_recover) are the spool of
 *	tests/unit/test_spool_recover.c, written by that test when
 *	RM_SPOOL_SEED_DIR is set.
 *
 *	After recovery, every message returned must be backed by the bytes:
 *	its envelope extents decode as its BEGIN and RCPT records and give
 *	exactly rcpt_total recipients; its content extents are DATA payloads
 *	of that queue id inside the valid part of a fed segment, and hash to
 *	content_xxh3 over content_bytes; an END record with that length and
 *	hash is present; the recipient states add up.  The stats must add up
 *	to the BEGINs scanned.  Any broken invariant traps.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/spool_recover.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

enum { SEGS_MAX = 2, QIDS_MAX = 4096 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fed {
	uint8_t *buf[SEGS_MAX];
	size_t len[SEGS_MAX];
	int n;
};

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Rewrites the checksums of everything that frames well (flag bit 1). */
static void fixup(uint8_t *seg, size_t len)
{
	size_t pos = RM_SPOOL_SEGMENT_HEADER_BYTES;

	if (len < RM_SPOOL_SEGMENT_HEADER_BYTES ||
	    memcmp(seg, RM_SPOOL_SEGMENT_MAGIC, RM_SPOOL_SEGMENT_MAGIC_BYTES) != 0)
		return;
	put_u64(seg + 32, XXH3_64bits(seg, 32));
	/* Each step moves at least RM_SPOOL_RECORD_BYTES_MIN. */
	while (len - pos >= RM_SPOOL_HEADER_BYTES) {
		uint32_t plen = get_u32(seg + pos + 8);

		if (memcmp(seg + pos, RM_SPOOL_RECORD_MAGIC, RM_SPOOL_RECORD_MAGIC_BYTES) != 0 ||
		    plen > RM_SPOOL_PAYLOAD_MAX || RM_SPOOL_RECORD_BYTES(plen) > len - pos)
			return;
		put_u64(seg + pos + RM_SPOOL_HEADER_BYTES + plen,
			XXH3_64bits_withSeed(seg + pos + RM_SPOOL_HEADER_BYTES, plen,
					     XXH3_64bits(seg + pos, RM_SPOOL_HEADER_BYTES)));
		pos += RM_SPOOL_RECORD_BYTES(plen);
	}
}

static uint8_t *make_segment(const uint8_t *part, size_t part_len, bool synth, bool fix,
			     uint64_t seq, size_t *len)
{
	size_t head = synth ? RM_SPOOL_SEGMENT_HEADER_BYTES : 0;
	uint8_t *seg = malloc(head + part_len + 1);

	CHECK(seg != NULL);
	if (synth) {
		const struct rm_spool_segment h = { RM_SPOOL_VERSION, 1, seq, 1767225600000ULL };

		CHECK(rm_spool_encode_segment(seg, head, &h) == RM_SPOOL_SEGMENT_HEADER_BYTES);
	}
	if (part_len > 0)
		memcpy(seg + head, part, part_len);
	*len = head + part_len;
	if (fix)
		fixup(seg, *len);
	return seg;
}

/* The valid part of the fed segment with this sequence number, or NULL. */
static const uint8_t *segment_of(const struct rm_recover *r, const struct fed *fd, uint64_t seq,
				 size_t *valid_end)
{
	for (int i = 0; i < fd->n; i++) {
		const struct rm_recover_seg *g = rm_recover_segment(r, (uint32_t)i);

		if (g->header_ok && g->seq == seq) {
			*valid_end = g->valid_end_bytes;
			return fd->buf[i];
		}
	}
	return NULL;
}

/* The record an extent names; traps unless it lies in the valid part of a segment. */
static void record_at(const struct rm_recover *r, const struct fed *fd, uint64_t seq,
		      uint64_t offset, struct rm_spool_record *rec)
{
	size_t valid_end = 0;
	const uint8_t *seg = segment_of(r, fd, seq, &valid_end);

	CHECK(seg != NULL);
	CHECK(offset >= RM_SPOOL_SEGMENT_HEADER_BYTES && offset < valid_end);
	CHECK(rm_spool_decode(seg + offset, valid_end - offset, rec) == RM_SPOOL_OK);
}

static void check_message(const struct rm_recover *r, const struct fed *fd,
			  const struct rm_recover_msg *m)
{
	struct rm_spool_record rec;
	uint32_t rcpts = 0, pending = 0;
	uint64_t total = 0;
	XXH3_state_t st;

	CHECK(m->rcpt_total >= 1 && m->rcpt_total <= RM_SPOOL_RCPT_MAX);
	for (uint32_t i = 0; i < m->rcpt_total; i++) {
		CHECK(m->rcpt_state[i] <= RM_RCPT_BOUNCED);
		pending += m->rcpt_state[i] == RM_RCPT_PENDING;
	}
	CHECK(pending == m->rcpt_pending && pending > 0);

	CHECK(m->env_count >= 1);
	for (uint32_t i = 0; i < m->env_count; i++) {
		record_at(r, fd, m->env[i].seq, m->env[i].offset, &rec);
		CHECK(rec.record_bytes == m->env[i].len && rec.qid == m->qid);
		if (i == 0) {
			CHECK(rec.type == RM_SPOOL_BEGIN && rec.u.begin.rcpt_total == m->rcpt_total);
			rcpts = rec.u.begin.rcpt_count;
		} else {
			CHECK(rec.type == RM_SPOOL_RCPT && rec.u.rcpt.first == rcpts);
			rcpts += rec.u.rcpt.rcpt_count;
		}
	}
	CHECK(rcpts == m->rcpt_total);

	XXH3_64bits_reset(&st);
	for (uint32_t i = 0; i < m->content_count; i++) {
		const struct rm_spool_extent *x = &m->content[i];
		size_t valid_end = 0;
		const uint8_t *seg = segment_of(r, fd, x->seq, &valid_end);

		CHECK(x->len > 0 && x->offset >= RM_SPOOL_SEGMENT_HEADER_BYTES + RM_SPOOL_HEADER_BYTES);
		record_at(r, fd, x->seq, x->offset - RM_SPOOL_HEADER_BYTES, &rec);
		CHECK(rec.type == RM_SPOOL_DATA && rec.qid == m->qid && rec.payload_len == x->len);
		CHECK(x->offset + x->len <= valid_end);
		XXH3_64bits_update(&st, seg + x->offset, x->len);
		total += x->len;
	}
	CHECK(total == m->content_bytes);
	CHECK(XXH3_64bits_digest(&st) == m->content_xxh3);

	/* Its END is there, saying the same. */
	bool end_found = false;

	for (int i = 0; i < fd->n && !end_found; i++) {
		struct rm_scan sc;
		size_t off = 0;

		rm_scan_init(&sc, fd->buf[i], fd->len[i]);
		while (rm_scan_next(&sc, &rec, &off))
			if (rec.type == RM_SPOOL_END && rec.qid == m->qid &&
			    rec.u.end.content_bytes == m->content_bytes &&
			    rec.u.end.content_xxh3 == m->content_xxh3)
				end_found = true;
	}
	CHECK(end_found);

	if (m->last_error.len > 0) {
		size_t valid_end = 0;

		CHECK(segment_of(r, fd, m->last_error.seq, &valid_end) != NULL);
		CHECK(m->last_error.offset + m->last_error.len <= valid_end);
		CHECK(m->last_error.len <= RM_SPOOL_TEXT_MAX);
	}
}

/* Distinct BEGIN queue ids and the newest id time in the valid parts. */
static uint64_t scan_begins(const struct fed *fd, uint64_t *max_time, uint64_t *records)
{
	static uint64_t qids[QIDS_MAX];
	uint64_t n = 0;

	*max_time = 0;
	*records = 0;
	for (int i = 0; i < fd->n; i++) {
		struct rm_scan sc;
		struct rm_spool_record rec;
		size_t off = 0;

		rm_scan_init(&sc, fd->buf[i], fd->len[i]);
		while (rm_scan_next(&sc, &rec, &off)) {
			uint64_t t = rm_queue_id_time_ms(rec.qid);
			bool seen = false;

			(*records)++;
			if (t > *max_time)
				*max_time = t;
			if (rec.type != RM_SPOOL_BEGIN)
				continue;
			for (uint64_t k = 0; k < n && !seen; k++)
				seen = qids[k] == rec.qid;
			if (!seen) {
				CHECK(n < QIDS_MAX);
				qids[n++] = rec.qid;
			}
		}
		/* The scanner stops inside the bytes and on a record boundary. */
		CHECK(sc.stopped && sc.pos <= fd->len[i]);
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;

	uint8_t flags = data[0];
	size_t split = (size_t)data[1] | (size_t)data[2] << 8;
	const uint8_t *body = data + 3;
	size_t body_len = size - 3;
	bool synth = flags & 1, fix = flags & 2, two = flags & 4;
	uint32_t lim_n = flags >> 3;
	size_t a_len = two && split < body_len ? split : body_len;
	struct fed fd = { .n = 0 };
	struct rm_recover_limits lim = { 256, 64, 2048, 8192, SEGS_MAX };
	int rc = 0;

	if (lim_n != 0)
		lim = (struct rm_recover_limits){ lim_n, lim_n, lim_n, lim_n, SEGS_MAX };
	uint8_t *seg[SEGS_MAX] = { NULL, NULL };
	size_t seg_len[SEGS_MAX] = { 0, 0 };
	int nseg = two ? 2 : 1;

	seg[0] = make_segment(body, a_len, synth, fix, 1, &seg_len[0]);
	if (two)
		seg[1] = make_segment(body + a_len, body_len - a_len, synth, fix, 2, &seg_len[1]);

	size_t arena_bytes = rm_recover_arena_bytes(&lim);
	void *arena = malloc(arena_bytes);
	struct rm_recover r;

	CHECK(arena_bytes > 0 && arena != NULL);
	CHECK(rm_recover_init(&r, &lim, arena, arena_bytes) == 0);
	/* fd lists the segments recovery took, in feed order (a second one may be refused). */
	for (int i = 0; i < nseg && rc != -ENOBUFS; i++) {
		rc = rm_recover_feed(&r, seg[i], seg_len[i]);
		CHECK(rc == 0 || rc == -ENOBUFS || (rc == -EINVAL && i == 1));
		if (rc == 0) {
			fd.buf[fd.n] = seg[i];
			fd.len[fd.n] = seg_len[i];
			fd.n++;
		}
	}

	rc = rm_recover_finish(&r);
	if (rc == 0) {
		const struct rm_recover_stats *st = rm_recover_stats(&r);
		uint64_t max_time = 0, records = 0;
		uint64_t begins = scan_begins(&fd, &max_time, &records);

		CHECK(rm_recover_count(&r) == st->recovered);
		CHECK(st->recovered + st->final + st->discarded + st->aborted == begins);
		CHECK(st->records == records && st->max_qid_time_unix_ms == max_time);
		for (uint32_t i = 0; i < rm_recover_count(&r); i++)
			check_message(&r, &fd, rm_recover_message(&r, i));
		for (uint32_t i = 0; i < rm_recover_segments(&r); i++) {
			const struct rm_recover_seg *g = rm_recover_segment(&r, i);

			CHECK(g->valid_end_bytes <= g->len_bytes);
			CHECK(!g->deletable || g->all_final);
			CHECK(g->header_ok ? g->valid_end_bytes >= RM_SPOOL_SEGMENT_HEADER_BYTES
					   : g->valid_end_bytes == 0);
			CHECK(g->valid_end_bytes % RM_SPOOL_ALIGN_BYTES == 0);
		}
	} else {
		CHECK(rc == -ENOBUFS);
	}
	free(arena);
	free(seg[0]);
	free(seg[1]);
	return 0;
}
