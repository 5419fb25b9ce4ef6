/*
 * NAME
 *	test_spool_recover - unit tests of core/spool_recover
 * DESCRIPTION
 *	A small spool of three segments is built in memory together with a
 *	model of what it says: messages committed or not, content interleaved
 *	with other messages' and crossing a segment, recipients in a BEGIN and
 *	an RCPT record, delivered, bounced, deferred twice, held, released,
 *	deleted, aborted, one record of a queue id whose BEGIN is gone.
 *
 *	From the model and the set of records present, an oracle says exactly
 *	what recovery must return: a message comes back if and only if its
 *	BEGIN, RCPT, DATA and END records are all present and the status
 *	records present do not make it final; then recipient states, hold,
 *	attempts, last error and the content (read back through the extents
 *	from the segment bytes and hashed) must match.  The spool is then
 *	  - cut at every byte offset of every segment, keeping the later
 *	    segments (a torn segment followed by newer ones) and dropping them
 *	    (a crash: the cut segment was the last), and
 *	  - damaged by xor 0xff at every byte offset, one at a time,
 *	and each result is held to the oracle, the scan stop and the offset
 *	where valid data ends.  A record is present when all of it, padding
 *	included, is before the cut or the damage.
 *
 *	Then: segment deletion rules, zero tails and empty segments, limits,
 *	writer bugs (anomalies), order of segments, many DATA records.
 *	With RM_SPOOL_SEED_DIR set, the spool is also written there as seed
 *	inputs for fuzz/fuzz_spool_recover (see its input layout).
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

#include "core/spool_recover.h"

#define SEG_MAX 3
#define SEG_CAP 8192
#define FED_MAX 8
#define REC_MAX 512
#define MSG_MAX 16
#define RCPT_MODEL_MAX 4
#define CONTENT_MAX 4096
#define T0_UNIX_MS 1767225600000ULL
#define WORKER 3

struct model_msg {
	uint64_t qid;
	uint32_t rcpt_total;
	char addr[RCPT_MODEL_MAX][32];
	char sender[32];
	struct rm_spool_rcpt rcpts[RCPT_MODEL_MAX];
	uint8_t content[CONTENT_MAX];
	size_t content_len;
	bool has_end;
};

struct model_rec {
	int seg;
	size_t start, end;
	enum rm_spool_type type;
	int msg;
	bool all;
	uint32_t idx[RCPT_MODEL_MAX];
	uint32_t nidx;
	uint64_t next_ms;
	uint32_t attempts;
	const char *text;
};

struct spool {
	uint8_t seg[SEG_MAX][SEG_CAP];
	size_t len[SEG_MAX];
	uint64_t seq[SEG_MAX];
	int nseg;
	struct model_msg msg[MSG_MAX];
	int nmsg;
	struct model_rec rec[REC_MAX];
	int nrec;
	struct rm_queue_id_gen gen;
};

/* --- building --------------------------------------------------------------------- */

static void sp_init(struct spool *sp, int nseg)
{
	static const uint64_t seqs[SEG_MAX] = { 10, 12, 13 };	/* a gap: 11 was deleted */

	memset(sp, 0, sizeof(*sp));
	sp->nseg = nseg;
	rm_queue_id_gen_init(&sp->gen, WORKER, T0_UNIX_MS);
	for (int s = 0; s < nseg; s++) {
		struct rm_spool_segment h = { RM_SPOOL_VERSION, WORKER, seqs[s], T0_UNIX_MS + (uint64_t)s };

		sp->seq[s] = seqs[s];
		assert_int_equal(rm_spool_encode_segment(sp->seg[s], SEG_CAP, &h),
				 RM_SPOOL_SEGMENT_HEADER_BYTES);
		sp->len[s] = RM_SPOOL_SEGMENT_HEADER_BYTES;
	}
}

static int sp_msg(struct spool *sp, uint32_t nrcpt)
{
	assert_true(sp->nmsg < MSG_MAX && nrcpt <= RCPT_MODEL_MAX);
	int m = sp->nmsg++;
	struct model_msg *mm = &sp->msg[m];

	mm->qid = rm_queue_id_gen_next(&sp->gen, T0_UNIX_MS + 5 * (uint64_t)m);
	mm->rcpt_total = nrcpt;
	snprintf(mm->sender, sizeof(mm->sender), "sender%d@client.example", m);
	for (uint32_t i = 0; i < nrcpt; i++) {
		int len = snprintf(mm->addr[i], sizeof(mm->addr[i]), "r%u.m%d@relay.example", i, m);

		mm->rcpts[i].addr = (struct rm_spool_str){ mm->addr[i], (size_t)len };
		mm->rcpts[i].orcpt = i == 1 ? (struct rm_spool_str){ "rfc822;x@y", 10 }
					    : (struct rm_spool_str){ NULL, 0 };
		mm->rcpts[i].notify = (uint8_t)i;
	}
	return m;
}

static struct model_rec *sp_add(struct spool *sp, int seg, int m, ssize_t n, enum rm_spool_type type)
{
	assert_true(n > 0);
	assert_true(sp->nrec < REC_MAX);
	struct model_rec *r = &sp->rec[sp->nrec++];

	memset(r, 0, sizeof(*r));
	r->seg = seg;
	r->start = sp->len[seg];
	r->end = r->start + (size_t)n;
	r->type = type;
	r->msg = m;
	sp->len[seg] = r->end;
	return r;
}

static uint8_t *sp_tail(struct spool *sp, int seg)
{
	return sp->seg[seg] + sp->len[seg];
}

static size_t sp_room(const struct spool *sp, int seg)
{
	return SEG_CAP - sp->len[seg];
}

static void sp_begin(struct spool *sp, int seg, int m, uint32_t n_in_begin)
{
	struct model_msg *mm = &sp->msg[m];
	struct rm_spool_envelope env = {
		.received_unix_ms = T0_UNIX_MS + (uint64_t)m,
		.body_type = RM_SPOOL_BODY_8BITMIME,
		.reverse_path = { mm->sender, strlen(mm->sender) },
		.client_addr = { "192.0.2.1", 9 },
		.helo = { "client.example", 14 },
	};
	ssize_t n = rm_spool_encode_begin(sp_tail(sp, seg), sp_room(sp, seg), mm->qid, &env,
					  mm->rcpt_total, mm->rcpts, n_in_begin);

	sp_add(sp, seg, m, n, RM_SPOOL_BEGIN);
}

static void sp_rcpt(struct spool *sp, int seg, int m, uint32_t first, uint32_t count)
{
	struct model_msg *mm = &sp->msg[m];
	ssize_t n = rm_spool_encode_rcpt(sp_tail(sp, seg), sp_room(sp, seg), mm->qid, first,
					 mm->rcpts + first, count);

	sp_add(sp, seg, m, n, RM_SPOOL_RCPT);
}

static void sp_data(struct spool *sp, int seg, int m, size_t len)
{
	struct model_msg *mm = &sp->msg[m];

	assert_true(mm->content_len + len <= CONTENT_MAX);
	for (size_t i = 0; i < len; i++)
		mm->content[mm->content_len + i] = (uint8_t)('A' + (m * 7 + mm->content_len + i) % 26);
	ssize_t n = rm_spool_encode_data(sp_tail(sp, seg), sp_room(sp, seg), mm->qid,
					 mm->content + mm->content_len, len);

	mm->content_len += len;
	sp_add(sp, seg, m, n, RM_SPOOL_DATA);
}

static void sp_end(struct spool *sp, int seg, int m)
{
	struct model_msg *mm = &sp->msg[m];
	ssize_t n = rm_spool_encode_end(sp_tail(sp, seg), sp_room(sp, seg), mm->qid, mm->content_len,
					XXH3_64bits(mm->content, mm->content_len));

	mm->has_end = true;
	sp_add(sp, seg, m, n, RM_SPOOL_END);
}

static void sp_status(struct spool *sp, int seg, int m, enum rm_spool_type type, bool all,
		      const uint32_t *idx, uint32_t nidx, uint64_t next_ms, uint32_t attempts,
		      const char *text)
{
	uint64_t qid = sp->msg[m].qid;
	struct rm_spool_str t = { text, text ? strlen(text) : 0 };
	ssize_t n;

	switch (type) {
	case RM_SPOOL_DELIVERED:
		n = rm_spool_encode_delivered(sp_tail(sp, seg), sp_room(sp, seg), qid, all, idx, nidx);
		break;
	case RM_SPOOL_BOUNCED:
		n = rm_spool_encode_bounced(sp_tail(sp, seg), sp_room(sp, seg), qid, all, idx, nidx, t);
		break;
	case RM_SPOOL_DEFERRED:
		n = rm_spool_encode_deferred(sp_tail(sp, seg), sp_room(sp, seg), qid, next_ms, attempts,
					     all, idx, nidx, t);
		break;
	default:
		n = rm_spool_encode_mark(sp_tail(sp, seg), sp_room(sp, seg), type, qid);
		break;
	}
	struct model_rec *r = sp_add(sp, seg, m, n, type);

	r->all = all;
	r->nidx = nidx;
	if (nidx > 0)
		memcpy(r->idx, idx, nidx * sizeof(*idx));
	r->next_ms = next_ms;
	r->attempts = attempts;
	r->text = text;
}

static void sp_mark(struct spool *sp, int seg, int m, enum rm_spool_type type)
{
	sp_status(sp, seg, m, type, false, NULL, 0, 0, 0, NULL);
}

/*
 * The spool of the DESCRIPTION.  Outcome uncut: B, D, H recovered; A, E, G
 * final; C, I discarded; F aborted; one orphan.
 */
enum { MA, MB, MC, MD, ME, MF, MG, MH, MI, MX };

static void build_spool(struct spool *sp)
{
	const uint32_t i0 = 0, i1 = 1;

	sp_init(sp, 3);
	for (int m = MA; m <= MX; m++)
		sp_msg(sp, m == MA || m == ME || m == MH ? 2 : m == MD ? 3 : 1);
	/* Segment 10. */
	sp_begin(sp, 0, MA, 2);
	sp_begin(sp, 0, MB, 1);
	sp_data(sp, 0, MA, 40);
	sp_data(sp, 0, MB, 33);
	sp_data(sp, 0, MA, 17);
	sp_end(sp, 0, MA);
	sp_begin(sp, 0, MC, 1);
	sp_data(sp, 0, MC, 20);
	sp_begin(sp, 0, MD, 1);
	sp_rcpt(sp, 0, MD, 1, 2);
	sp_end(sp, 0, MD);	/* empty content */
	sp_status(sp, 0, MA, RM_SPOOL_DELIVERED, false, &i0, 1, 0, 0, NULL);
	sp_data(sp, 0, MB, 25);
	/* Segment 12. */
	sp_begin(sp, 1, ME, 2);
	sp_data(sp, 1, ME, 50);
	sp_data(sp, 1, ME, 1);
	sp_data(sp, 1, ME, 70);
	sp_end(sp, 1, ME);
	sp_end(sp, 1, MB);	/* B crosses the segment boundary */
	sp_begin(sp, 1, MF, 1);
	sp_data(sp, 1, MF, 10);
	sp_mark(sp, 1, MF, RM_SPOOL_ABORT);
	sp_status(sp, 1, MD, RM_SPOOL_BOUNCED, false, &i1, 1, 0, 0, "550 5.1.1 no such user");
	sp_begin(sp, 1, MG, 1);
	sp_data(sp, 1, MG, 9);
	sp_end(sp, 1, MG);
	sp_status(sp, 1, MG, RM_SPOOL_DELIVERED, true, NULL, 0, 0, 0, NULL);
	sp_status(sp, 1, MB, RM_SPOOL_DEFERRED, true, NULL, 0, T0_UNIX_MS + 600000, 1,
		  "451 4.7.1 try later");
	sp_mark(sp, 1, ME, RM_SPOOL_DELETED);
	/* Segment 13. */
	sp_status(sp, 2, MA, RM_SPOOL_DELIVERED, false, &i1, 1, 0, 0, NULL);
	sp_mark(sp, 2, MB, RM_SPOOL_HOLD);
	sp_begin(sp, 2, MH, 2);
	sp_data(sp, 2, MH, 64);
	sp_end(sp, 2, MH);
	sp_status(sp, 2, MH, RM_SPOOL_DEFERRED, false, &i0, 1, T0_UNIX_MS + 900000, 2, "421 busy");
	sp_status(sp, 2, MX, RM_SPOOL_DELIVERED, true, NULL, 0, 0, 0, NULL);	/* orphan */
	sp_mark(sp, 2, MD, RM_SPOOL_HOLD);
	sp_mark(sp, 2, MD, RM_SPOOL_RELEASE);
	sp_status(sp, 2, MB, RM_SPOOL_DEFERRED, true, NULL, 0, T0_UNIX_MS + 1200000, 2,
		  "452 4.2.2 mailbox full");
	sp_begin(sp, 2, MI, 1);
	sp_data(sp, 2, MI, 30);
}

/* --- oracle --------------------------------------------------------------------------- */

struct expect_msg {
	bool begin;
	bool committed;
	bool aborted;
	bool final;
	bool hold;
	uint8_t st[RCPT_MODEL_MAX];
	uint32_t pending;
	uint64_t next_ms;
	uint32_t attempts;
	const char *err;
};

struct expect {
	struct expect_msg msg[MSG_MAX];
	uint64_t recovered, final, discarded, aborted, orphans;
};

static bool is_content(enum rm_spool_type t)
{
	return t == RM_SPOOL_BEGIN || t == RM_SPOOL_RCPT || t == RM_SPOOL_DATA || t == RM_SPOOL_END;
}

/* keep[s]: records of segment s ending at or before it are present; fed[s]: segment fed. */
static void oracle(const struct spool *sp, const size_t *keep, const bool *fed, struct expect *ex)
{
	bool present[REC_MAX];

	memset(ex, 0, sizeof(*ex));
	for (int i = 0; i < sp->nrec; i++) {
		const struct model_rec *r = &sp->rec[i];

		present[i] = fed[r->seg] && r->end <= keep[r->seg];
	}
	for (int m = 0; m < sp->nmsg; m++) {
		struct expect_msg *e = &ex->msg[m];
		bool all_content = sp->msg[m].has_end;

		for (int i = 0; i < sp->nrec; i++) {
			if (sp->rec[i].msg != m)
				continue;
			if (sp->rec[i].type == RM_SPOOL_BEGIN && present[i])
				e->begin = true;
			if (is_content(sp->rec[i].type) && !present[i])
				all_content = false;
			if (sp->rec[i].type == RM_SPOOL_ABORT && present[i])
				e->aborted = true;
		}
		e->committed = e->begin && all_content;
		e->pending = sp->msg[m].rcpt_total;
	}
	/* Status records in log order: segment by segment, then by offset (= creation order). */
	for (int s = 0; s < sp->nseg; s++) {
		for (int i = 0; i < sp->nrec; i++) {
			const struct model_rec *r = &sp->rec[i];
			struct expect_msg *e = &ex->msg[r->msg];

			if (r->seg != s || !present[i])
				continue;
			if (!e->begin && r->type != RM_SPOOL_BEGIN) {
				ex->orphans++;
				continue;
			}
			if (!e->committed || e->final || is_content(r->type))
				continue;
			switch (r->type) {
			case RM_SPOOL_DELIVERED:
			case RM_SPOOL_BOUNCED:
				for (uint32_t k = 0; k < sp->msg[r->msg].rcpt_total; k++) {
					bool hit = r->all;

					for (uint32_t j = 0; j < r->nidx; j++)
						hit = hit || r->idx[j] == k;
					if (hit && e->st[k] == RM_RCPT_PENDING) {
						e->st[k] = r->type == RM_SPOOL_DELIVERED ? RM_RCPT_DELIVERED
											 : RM_RCPT_BOUNCED;
						e->pending--;
					}
				}
				e->final = e->pending == 0;
				break;
			case RM_SPOOL_DEFERRED:
				e->next_ms = r->next_ms;
				e->attempts = r->attempts;
				e->err = r->text;
				break;
			case RM_SPOOL_DELETED:
				e->final = true;
				break;
			case RM_SPOOL_HOLD:
				e->hold = true;
				break;
			case RM_SPOOL_RELEASE:
				e->hold = false;
				break;
			default:
				break;
			}
		}
	}
	for (int m = 0; m < sp->nmsg; m++) {
		const struct expect_msg *e = &ex->msg[m];

		if (!e->begin)
			continue;
		if (e->committed && e->final)
			ex->final++;
		else if (e->committed)
			ex->recovered++;
		else if (e->aborted)
			ex->aborted++;
		else
			ex->discarded++;
	}
}

/* --- running and checking ---------------------------------------------------------- */

struct run {
	struct rm_recover r;
	void *arena;
	size_t arena_bytes;
	struct rm_recover_limits lim;
	const uint8_t *segs[FED_MAX];	/* what was fed, by feed index */
	size_t lens[FED_MAX];
	uint64_t seqs[FED_MAX];
	int nfed;
};

static const struct rm_recover_limits test_limits = { 64, 16, 256, 256, 8 };

static void run_open(struct run *run, const struct rm_recover_limits *lim)
{
	memset(run, 0, sizeof(*run));
	run->lim = *lim;
	run->arena_bytes = rm_recover_arena_bytes(lim);
	assert_true(run->arena_bytes > 0);
	run->arena = malloc(run->arena_bytes ? run->arena_bytes : 1);
	assert_non_null(run->arena);
}

static void run_start(struct run *run)
{
	assert_int_equal(rm_recover_init(&run->r, &run->lim, run->arena, run->arena_bytes), 0);
	run->nfed = 0;
}

static int run_feed(struct run *run, const uint8_t *seg, size_t len)
{
	int rc = rm_recover_feed(&run->r, seg, len);

	if (rc == 0) {
		assert_true(run->nfed < FED_MAX);
		run->segs[run->nfed] = seg;
		run->lens[run->nfed] = len;
		run->seqs[run->nfed] = rm_recover_segment(&run->r, rm_recover_segments(&run->r) - 1)->seq;
		run->nfed++;
	}
	return rc;
}

static void run_close(struct run *run)
{
	free(run->arena);
}

/* The bytes of an extent, from the segments fed; NULL if it lies outside them. */
static const uint8_t *extent_bytes(const struct run *run, const struct rm_spool_extent *x)
{
	for (int i = 0; i < run->nfed; i++) {
		if (run->seqs[i] != x->seq)
			continue;
		if (x->offset > run->lens[i] || x->len > run->lens[i] - x->offset)
			return NULL;
		return run->segs[i] + x->offset;
	}
	return NULL;
}

static void check_envelope(const struct run *run, const struct rm_recover_msg *got,
			   const struct model_msg *mm)
{
	uint32_t next = 0;

	assert_true(got->env_count >= 1);
	for (uint32_t i = 0; i < got->env_count; i++) {
		const uint8_t *p = extent_bytes(run, &got->env[i]);
		struct rm_spool_record rec;
		struct rm_spool_rcpt_iter it;
		struct rm_spool_rcpt rc;

		assert_non_null(p);
		assert_int_equal(rm_spool_decode(p, got->env[i].len, &rec), RM_SPOOL_OK);
		assert_true(rec.qid == mm->qid);
		assert_int_equal(rec.type, i == 0 ? RM_SPOOL_BEGIN : RM_SPOOL_RCPT);
		if (i == 0) {
			assert_int_equal(rec.u.begin.rcpt_total, mm->rcpt_total);
			assert_int_equal(rec.u.begin.env.reverse_path.len, strlen(mm->sender));
			assert_memory_equal(rec.u.begin.env.reverse_path.ptr, mm->sender, strlen(mm->sender));
		} else {
			assert_int_equal(rec.u.rcpt.first, next);
		}
		rm_spool_rcpt_iter_init(&it, &rec);
		while (rm_spool_rcpt_next(&it, &rc)) {
			assert_true(next < mm->rcpt_total);
			assert_int_equal(rc.addr.len, mm->rcpts[next].addr.len);
			assert_memory_equal(rc.addr.ptr, mm->rcpts[next].addr.ptr, rc.addr.len);
			assert_int_equal(rc.notify, mm->rcpts[next].notify);
			next++;
		}
	}
	assert_int_equal(next, mm->rcpt_total);
}

/* Content read back through the extents must be the model's, and hash as END said. */
static void check_content(const struct run *run, const struct rm_recover_msg *got,
			  const struct model_msg *mm)
{
	XXH3_state_t st;
	uint64_t at = 0;

	XXH3_64bits_reset(&st);
	for (uint32_t i = 0; i < got->content_count; i++) {
		const uint8_t *p = extent_bytes(run, &got->content[i]);

		assert_non_null(p);
		assert_true(got->content[i].len > 0);
		assert_true(at + got->content[i].len <= mm->content_len);
		assert_memory_equal(p, mm->content + at, got->content[i].len);
		XXH3_64bits_update(&st, p, got->content[i].len);
		at += got->content[i].len;
	}
	assert_true(at == got->content_bytes);
	assert_true(at == mm->content_len);
	assert_true(XXH3_64bits_digest(&st) == got->content_xxh3);
	assert_true(got->content_xxh3 == XXH3_64bits(mm->content, mm->content_len));
}

static void check_against(const struct spool *sp, const struct run *run, const struct expect *ex)
{
	const struct rm_recover_stats *st = rm_recover_stats(&run->r);
	uint32_t count = rm_recover_count(&run->r);
	bool seen[MSG_MAX] = { false };

	assert_int_equal(count, ex->recovered);
	assert_int_equal(st->recovered, ex->recovered);
	assert_int_equal(st->final, ex->final);
	assert_int_equal(st->discarded, ex->discarded);
	assert_int_equal(st->aborted, ex->aborted);
	assert_int_equal(st->orphans, ex->orphans);
	for (uint32_t i = 0; i < count; i++) {
		const struct rm_recover_msg *got = rm_recover_message(&run->r, i);
		int m = 0;

		while (m < sp->nmsg && sp->msg[m].qid != got->qid)
			m++;
		assert_true(m < sp->nmsg);
		assert_false(seen[m]);
		seen[m] = true;
		const struct expect_msg *e = &ex->msg[m];
		const struct model_msg *mm = &sp->msg[m];

		assert_true(e->committed && !e->final);
		assert_int_equal(got->rcpt_total, mm->rcpt_total);
		assert_int_equal(got->rcpt_pending, e->pending);
		assert_memory_equal(got->rcpt_state, e->st, mm->rcpt_total);
		assert_int_equal(got->hold, e->hold);
		assert_true(got->next_attempt_unix_ms == e->next_ms);
		assert_int_equal(got->attempts, e->attempts);
		if (e->err == NULL) {
			assert_int_equal(got->last_error.len, 0);
		} else {
			const uint8_t *p = extent_bytes(run, &got->last_error);

			assert_non_null(p);
			assert_int_equal(got->last_error.len, strlen(e->err));
			assert_memory_equal(p, e->err, strlen(e->err));
		}
		check_envelope(run, got, mm);
		check_content(run, got, mm);
	}
}

/* --- the full spool, uncut --------------------------------------------------------- */

static void test_full_spool(void **state)
{
	static struct spool sp;
	struct run run;
	struct expect ex;
	const size_t keep[SEG_MAX] = { SEG_CAP, SEG_CAP, SEG_CAP };
	const bool fed[SEG_MAX] = { true, true, true };

	build_spool(&sp);
	run_open(&run, &test_limits);
	run_start(&run);
	for (int s = 0; s < sp.nseg; s++)
		assert_int_equal(run_feed(&run, sp.seg[s], sp.len[s]), 0);
	assert_int_equal(rm_recover_finish(&run.r), 0);
	oracle(&sp, keep, fed, &ex);
	/* The oracle agrees with the plan in build_spool's comment. */
	assert_int_equal(ex.recovered, 3);
	assert_int_equal(ex.final, 3);
	assert_int_equal(ex.discarded, 2);
	assert_int_equal(ex.aborted, 1);
	assert_int_equal(ex.orphans, 1);
	assert_true(ex.msg[MB].hold && !ex.msg[MD].hold);
	check_against(&sp, &run, &ex);

	const struct rm_recover_stats *st = rm_recover_stats(&run.r);

	assert_int_equal(st->anomalies, 0);
	assert_int_equal(st->records, sp.nrec);
	assert_true(st->max_seq == 13);
	assert_true(st->max_qid_time_unix_ms == rm_queue_id_time_ms(sp.msg[MX].qid));
	for (int s = 0; s < sp.nseg; s++) {
		const struct rm_recover_seg *g = rm_recover_segment(&run.r, (uint32_t)s);

		assert_int_equal(g->stop, RM_SCAN_END);
		assert_int_equal(g->valid_end_bytes, sp.len[s]);
		assert_true(g->header_ok && g->seq == sp.seq[s] && g->worker == WORKER);
		/* B is pending and spans all three. */
		assert_false(g->all_final);
		assert_false(g->deletable);
	}
	/* Recovered in log order of BEGIN: B, D, H. */
	assert_true(rm_recover_message(&run.r, 0)->qid == sp.msg[MB].qid);
	assert_true(rm_recover_message(&run.r, 1)->qid == sp.msg[MD].qid);
	assert_true(rm_recover_message(&run.r, 2)->qid == sp.msg[MH].qid);
	assert_int_equal(rm_recover_message(&run.r, 1)->env_count, 2);	/* BEGIN + RCPT */
	assert_int_equal(rm_recover_message(&run.r, 1)->content_count, 0);
	assert_int_equal(rm_recover_message(&run.r, 0)->content_count, 2);	/* across segments */
	assert_true(rm_recover_message(&run.r, 0)->content[0].seq == 10);
	run_close(&run);
}

/* The expected stop of segment s cut at cut bytes, and where valid data ends. */
static void expect_cut(const struct spool *sp, int s, size_t cut, enum rm_scan_stop *stop,
		       size_t *valid_end)
{
	if (cut < RM_SPOOL_SEGMENT_HEADER_BYTES) {
		*stop = cut == 0 ? RM_SCAN_ZERO_TAIL : RM_SCAN_TORN;
		*valid_end = 0;
		return;
	}
	*valid_end = RM_SPOOL_SEGMENT_HEADER_BYTES;
	for (int i = 0; i < sp->nrec; i++)
		if (sp->rec[i].seg == s && sp->rec[i].end <= cut && sp->rec[i].end > *valid_end)
			*valid_end = sp->rec[i].end;
	*stop = *valid_end == cut ? RM_SCAN_END : RM_SCAN_TORN;
}

/*
 * Invariant (1): cut every segment at every offset.  With drop_later the
 * segments after the cut one are not fed (a crash while writing it); else
 * they are (a torn segment, then newer ones).
 */
static void every_cut(bool drop_later)
{
	static struct spool sp;
	struct run run;
	uint64_t runs = 0;

	build_spool(&sp);
	run_open(&run, &test_limits);
	for (int s = 0; s < sp.nseg; s++) {
		for (size_t cut = 0; cut <= sp.len[s]; cut++) {
			size_t keep[SEG_MAX];
			bool fed[SEG_MAX];
			struct expect ex;
			uint8_t *copy = malloc(cut ? cut : 1);	/* exact size: ASan sees overreads */

			assert_non_null(copy);
			memcpy(copy, sp.seg[s], cut);
			run_start(&run);
			for (int k = 0; k < sp.nseg; k++) {
				fed[k] = !(drop_later && k > s);
				keep[k] = k == s ? cut : SEG_CAP;
				if (!fed[k])
					continue;
				assert_int_equal(run_feed(&run, k == s ? copy : sp.seg[k],
							  k == s ? cut : sp.len[k]), 0);
			}
			assert_int_equal(rm_recover_finish(&run.r), 0);
			oracle(&sp, keep, fed, &ex);
			check_against(&sp, &run, &ex);

			const struct rm_recover_seg *g = rm_recover_segment(&run.r, (uint32_t)s);
			enum rm_scan_stop stop;
			size_t valid_end;

			expect_cut(&sp, s, cut, &stop, &valid_end);
			assert_int_equal(g->stop, stop);
			assert_int_equal(g->valid_end_bytes, valid_end);
			/* A prefix of a correct log holds nothing a correct writer would not write. */
			if (drop_later)
				assert_int_equal(rm_recover_stats(&run.r)->anomalies, 0);
			free(copy);
			runs++;
		}
	}
	run_close(&run);
	print_message("  %llu cuts checked\n", (unsigned long long)runs);
}

static void test_every_cut_keep_later(void **state)
{
	every_cut(false);
}

static void test_every_cut_drop_later(void **state)
{
	every_cut(true);
}

/* Invariant (2): damage one byte at a time, at every offset of every segment. */
static void test_every_flip(void **state)
{
	static struct spool sp;
	struct run run;
	uint64_t runs = 0, bad = 0, torn = 0, harmless = 0;

	build_spool(&sp);
	run_open(&run, &test_limits);
	for (int s = 0; s < sp.nseg; s++) {
		uint8_t *copy = malloc(sp.len[s]);

		assert_non_null(copy);
		for (size_t at = 0; at < sp.len[s]; at++) {
			size_t keep[SEG_MAX] = { SEG_CAP, SEG_CAP, SEG_CAP };
			const bool fed[SEG_MAX] = { true, true, true };
			enum rm_scan_stop want = RM_SCAN_END;
			size_t valid_end = sp.len[s];
			bool in_length = false;
			struct expect ex;

			memcpy(copy, sp.seg[s], sp.len[s]);
			copy[at] ^= 0xff;
			if (at < RM_SPOOL_SEGMENT_HEADER_BYTES) {
				keep[s] = 0;
				want = RM_SCAN_BAD_HEADER;
				valid_end = 0;
			}
			for (int i = 0; i < sp.nrec; i++) {
				const struct model_rec *r = &sp.rec[i];
				uint32_t plen = (uint32_t)sp.seg[s][r->start + 8] |
						(uint32_t)sp.seg[s][r->start + 9] << 8 |
						(uint32_t)sp.seg[s][r->start + 10] << 16;

				if (r->seg != s || at < r->start || at >= r->end)
					continue;
				/* Padding is covered by nothing: a flip there changes nothing. */
				if (at >= r->start + RM_SPOOL_HEADER_BYTES + plen + RM_SPOOL_CHECKSUM_BYTES)
					break;
				keep[s] = r->start;
				want = RM_SCAN_BAD;
				valid_end = r->start;
				in_length = at >= r->start + 8 && at < r->start + 12;
			}
			run_start(&run);
			for (int k = 0; k < sp.nseg; k++)
				assert_int_equal(run_feed(&run, k == s ? copy : sp.seg[k], sp.len[k]), 0);
			assert_int_equal(rm_recover_finish(&run.r), 0);
			oracle(&sp, keep, fed, &ex);
			check_against(&sp, &run, &ex);

			const struct rm_recover_seg *g = rm_recover_segment(&run.r, (uint32_t)s);

			assert_int_equal(g->valid_end_bytes, valid_end);
			/* A length pointing past the end reads as a torn tail; all else is BAD. */
			if (in_length && g->stop == RM_SCAN_TORN) {
				torn++;
			} else {
				assert_int_equal(g->stop, want);
				if (want == RM_SCAN_BAD || want == RM_SCAN_BAD_HEADER) {
					assert_false(g->deletable || g->all_final);
					bad++;
				} else {
					harmless++;
				}
			}
			if (want == RM_SCAN_BAD && !in_length && at >= valid_end + RM_SPOOL_HEADER_BYTES)
				assert_string_equal(g->why, "record checksum mismatch");
			runs++;
		}
		free(copy);
	}
	run_close(&run);
	print_message("  %llu flips: %llu bad, %llu torn (length field), %llu in padding\n",
		      (unsigned long long)runs, (unsigned long long)bad, (unsigned long long)torn,
		      (unsigned long long)harmless);
}

/* --- deletion rules ------------------------------------------------------------------ */

static void feed_all(struct run *run, struct spool *sp)
{
	run_start(run);
	for (int s = 0; s < sp->nseg; s++)
		assert_int_equal(run_feed(run, sp->seg[s], sp->len[s]), 0);
	assert_int_equal(rm_recover_finish(&run->r), 0);
}

static void test_deletable(void **state)
{
	static struct spool sp;
	struct run run;

	run_open(&run, &test_limits);

	/*
	 * X and Y in 10; X delivered in 12.  12 holds only final messages, but
	 * deleting it while 10 stays (Y pending) would bring X back.
	 */
	sp_init(&sp, 2);
	int x = sp_msg(&sp, 1), y = sp_msg(&sp, 1);

	sp_begin(&sp, 0, x, 1);
	sp_data(&sp, 0, x, 5);
	sp_end(&sp, 0, x);
	sp_begin(&sp, 0, y, 1);
	sp_end(&sp, 0, y);
	sp_status(&sp, 1, x, RM_SPOOL_DELIVERED, true, NULL, 0, 0, 0, NULL);
	feed_all(&run, &sp);
	assert_false(rm_recover_segment(&run.r, 0)->all_final);
	assert_false(rm_recover_segment(&run.r, 0)->deletable);
	assert_true(rm_recover_segment(&run.r, 1)->all_final);
	assert_false(rm_recover_segment(&run.r, 1)->deletable);

	/* Y delivered in 13: everything may go, 10 first. */
	sp.nseg = 3;
	struct rm_spool_segment h = { RM_SPOOL_VERSION, WORKER, 13, T0_UNIX_MS };

	sp.seq[2] = 13;
	rm_spool_encode_segment(sp.seg[2], SEG_CAP, &h);
	sp.len[2] = RM_SPOOL_SEGMENT_HEADER_BYTES;
	sp_status(&sp, 2, y, RM_SPOOL_BOUNCED, true, NULL, 0, 0, 0, "550 gone");
	feed_all(&run, &sp);
	for (uint32_t s = 0; s < 3; s++) {
		assert_true(rm_recover_segment(&run.r, s)->all_final);
		assert_true(rm_recover_segment(&run.r, s)->deletable);
	}
	assert_int_equal(rm_recover_count(&run.r), 0);
	assert_int_equal(rm_recover_stats(&run.r)->final, 2);

	/*
	 * Z pending in 10..12; W final, wholly in 13: 13 may go although 10
	 * may not, since no message of 10 has records past 12.
	 */
	sp_init(&sp, 3);
	int z = sp_msg(&sp, 1), w = sp_msg(&sp, 1);

	sp_begin(&sp, 0, z, 1);
	sp_data(&sp, 0, z, 3);
	sp_data(&sp, 1, z, 3);
	sp_end(&sp, 1, z);
	sp_begin(&sp, 2, w, 1);
	sp_end(&sp, 2, w);
	sp_mark(&sp, 2, w, RM_SPOOL_DELETED);
	feed_all(&run, &sp);
	assert_false(rm_recover_segment(&run.r, 0)->deletable);
	assert_false(rm_recover_segment(&run.r, 1)->deletable);
	assert_true(rm_recover_segment(&run.r, 2)->deletable);
	assert_int_equal(rm_recover_count(&run.r), 1);

	/* Only uncommitted and aborted messages: nothing to keep. */
	sp_init(&sp, 1);
	int u = sp_msg(&sp, 1), v = sp_msg(&sp, 1);

	sp_begin(&sp, 0, u, 1);
	sp_data(&sp, 0, u, 3);
	sp_begin(&sp, 0, v, 1);
	sp_mark(&sp, 0, v, RM_SPOOL_ABORT);
	feed_all(&run, &sp);
	assert_true(rm_recover_segment(&run.r, 0)->deletable);
	assert_int_equal(rm_recover_stats(&run.r)->discarded, 1);
	assert_int_equal(rm_recover_stats(&run.r)->aborted, 1);

	/* A damaged segment is kept even when what could be read is final. */
	sp.seg[0][sp.len[0]] = 0x55;	/* garbage after the last record */
	sp.len[0] += 8;
	feed_all(&run, &sp);
	assert_int_equal(rm_recover_segment(&run.r, 0)->stop, RM_SCAN_BAD);
	assert_false(rm_recover_segment(&run.r, 0)->deletable);
	run_close(&run);
}

/* --- segment edge cases ---------------------------------------------------------------- */

static void test_zero_tail_and_empty(void **state)
{
	static struct spool sp;
	static uint8_t padded[SEG_CAP + 4096];
	static const uint8_t zeros[100];
	struct run run;

	build_spool(&sp);
	run_open(&run, &test_limits);
	/* Segment 10 preallocated with zeros past its records: same result, ZERO_TAIL. */
	memcpy(padded, sp.seg[0], sp.len[0]);
	memset(padded + sp.len[0], 0, 4096);
	run_start(&run);
	assert_int_equal(run_feed(&run, zeros, 0), 0);			/* empty file */
	assert_int_equal(run_feed(&run, zeros, sizeof(zeros)), 0);	/* header never written */
	assert_int_equal(run_feed(&run, padded, sp.len[0] + 4096), 0);
	assert_int_equal(run_feed(&run, sp.seg[1], sp.len[1]), 0);
	assert_int_equal(run_feed(&run, sp.seg[2], sp.len[2]), 0);
	assert_int_equal(rm_recover_finish(&run.r), 0);
	assert_int_equal(rm_recover_count(&run.r), 3);
	assert_int_equal(rm_recover_segment(&run.r, 0)->stop, RM_SCAN_ZERO_TAIL);
	assert_int_equal(rm_recover_segment(&run.r, 1)->stop, RM_SCAN_ZERO_TAIL);
	assert_true(rm_recover_segment(&run.r, 0)->deletable);
	assert_true(rm_recover_segment(&run.r, 1)->deletable);
	assert_int_equal(rm_recover_segment(&run.r, 2)->stop, RM_SCAN_ZERO_TAIL);
	assert_int_equal(rm_recover_segment(&run.r, 2)->valid_end_bytes, sp.len[0]);

	/* Out of order: refused, and the state goes on. */
	run_start(&run);
	assert_int_equal(run_feed(&run, sp.seg[1], sp.len[1]), 0);
	assert_int_equal(run_feed(&run, sp.seg[0], sp.len[0]), -EINVAL);
	assert_int_equal(run_feed(&run, sp.seg[1], sp.len[1]), -EINVAL);
	assert_int_equal(run_feed(&run, sp.seg[2], sp.len[2]), 0);
	assert_int_equal(rm_recover_finish(&run.r), 0);
	assert_int_equal(rm_recover_segments(&run.r), 2);
	run_close(&run);
}

/* --- limits ---------------------------------------------------------------------------- */

static void test_limit_overflow(void **state)
{
	static struct spool sp;
	struct run run;
	const struct {
		struct rm_recover_limits lim;
		const char *name;
	} cases[] = {
		{ { 8, 16, 256, 256, 8 }, "messages_max" },
		{ { 64, 2, 256, 256, 8 }, "open_max" },
		{ { 64, 16, 8, 256, 8 }, "extents_max" },
		{ { 64, 16, 256, 8, 8 }, "rcpts_max" },
		{ { 64, 16, 256, 256, 2 }, "segments_max" },
	};
	const struct rm_recover_limits zero = { 0, 1, 1, 1, 1 };
	struct rm_recover r;

	assert_int_equal(rm_recover_arena_bytes(&zero), 0);
	assert_int_equal(rm_recover_init(&r, &zero, &r, sizeof(r)), -EINVAL);
	build_spool(&sp);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		int rc = 0;

		run_open(&run, &cases[c].lim);
		run_start(&run);
		for (int s = 0; s < sp.nseg && rc == 0; s++)
			rc = run_feed(&run, sp.seg[s], sp.len[s]);
		assert_int_equal(rc, -ENOBUFS);
		assert_string_equal(run.r.limit, cases[c].name);
		/* Sticky. */
		assert_int_equal(rm_recover_feed(&run.r, sp.seg[2], sp.len[2]), -ENOBUFS);
		assert_int_equal(rm_recover_finish(&run.r), -ENOBUFS);
		run_close(&run);
	}
	/*
	 * Exactly enough: 9 BEGINs, at most 3 messages open at once, at most
	 * 16 extents held at once, 14 recipients, 3 segments.
	 */
	const struct rm_recover_limits tight = { 9, 3, 16, 14, 3 };

	run_open(&run, &tight);
	feed_all(&run, &sp);
	assert_int_equal(rm_recover_count(&run.r), 3);
	run_close(&run);
}

/* --- writer bugs ------------------------------------------------------------------------ */

static void test_anomalies(void **state)
{
	static struct spool sp;
	struct run run;
	const uint32_t past = 3;

	run_open(&run, &test_limits);
	sp_init(&sp, 1);
	int a = sp_msg(&sp, 2), b = sp_msg(&sp, 1), c = sp_msg(&sp, 1), d = sp_msg(&sp, 1);
	int e = sp_msg(&sp, 3), f = sp_msg(&sp, 3);

	sp_begin(&sp, 0, a, 2);
	sp_mark(&sp, 0, a, RM_SPOOL_HOLD);			/* status before END: 1 */
	sp_data(&sp, 0, a, 10);
	sp_end(&sp, 0, a);
	sp_data(&sp, 0, a, 10);					/* DATA after END: 2 */
	sp_end(&sp, 0, a);					/* END again: 3 */
	sp_begin(&sp, 0, a, 2);					/* BEGIN again: 4 */
	sp_mark(&sp, 0, a, RM_SPOOL_ABORT);			/* ABORT after END: 5 */
	sp_status(&sp, 0, a, RM_SPOOL_DELIVERED, false, &past, 1, 0, 0, NULL);	/* index: 6 */
	sp_begin(&sp, 0, b, 1);
	sp_data(&sp, 0, b, 10);
	/* An END whose hash does not match: broken, discarded (7). */
	ssize_t n = rm_spool_encode_end(sp_tail(&sp, 0), sp_room(&sp, 0), sp.msg[b].qid, 10, 12345);

	sp_add(&sp, 0, b, n, RM_SPOOL_END);
	sp_begin(&sp, 0, c, 1);
	sp_data(&sp, 0, c, 10);
	/* An END with the wrong length: broken (8). */
	n = rm_spool_encode_end(sp_tail(&sp, 0), sp_room(&sp, 0), sp.msg[c].qid, 11,
				XXH3_64bits(sp.msg[c].content, 10));
	sp_add(&sp, 0, c, n, RM_SPOOL_END);
	/* DATA before the last RCPT: broken (9); its RCPT and END then (10, 11). */
	sp_begin(&sp, 0, e, 1);
	sp_data(&sp, 0, e, 4);
	sp_rcpt(&sp, 0, e, 1, 2);
	sp_end(&sp, 0, e);
	/* An RCPT that skips an index: broken (12); its END (13). */
	sp_begin(&sp, 0, f, 1);
	sp_rcpt(&sp, 0, f, 2, 1);
	sp_end(&sp, 0, f);
	sp_begin(&sp, 0, d, 1);
	sp_end(&sp, 0, d);
	feed_all(&run, &sp);

	const struct rm_recover_stats *st = rm_recover_stats(&run.r);

	assert_int_equal(st->anomalies, 13);
	assert_int_equal(st->discarded, 4);			/* b, c, e, f */
	assert_int_equal(rm_recover_count(&run.r), 2);		/* a (the first, intact), d */
	const struct rm_recover_msg *ma = rm_recover_message(&run.r, 0);

	assert_true(ma->qid == sp.msg[a].qid);
	assert_true(ma->content_bytes == 10 && ma->content_count == 1);
	assert_false(ma->hold);
	assert_int_equal(ma->rcpt_pending, 2);
	run_close(&run);
}

/* Content of many DATA records across segments, interleaved with another message. */
static void test_many_data(void **state)
{
	static struct spool sp;
	struct run run;
	struct expect ex;
	const size_t keep[SEG_MAX] = { SEG_CAP, SEG_CAP, SEG_CAP };
	const bool fed[SEG_MAX] = { true, true, true };
	const struct rm_recover_limits lim = { 4, 4, 512, 8, 4 };

	sp_init(&sp, 3);
	int a = sp_msg(&sp, 1), b = sp_msg(&sp, 1);

	sp_begin(&sp, 0, a, 1);
	sp_begin(&sp, 0, b, 1);
	for (int i = 0; i < 300; i++) {
		int s = i < 100 ? 0 : i < 200 ? 1 : 2;

		sp_data(&sp, s, a, (size_t)(i % 13));	/* zero-length ones too */
		if (i % 50 == 0)
			sp_data(&sp, s, b, 7);
	}
	sp_end(&sp, 2, a);
	sp_end(&sp, 2, b);
	run_open(&run, &lim);
	feed_all(&run, &sp);
	oracle(&sp, keep, fed, &ex);
	check_against(&sp, &run, &ex);
	assert_int_equal(rm_recover_count(&run.r), 2);
	assert_int_equal(rm_recover_message(&run.r, 0)->content_count, 300 - 300 / 13 - 1);
	run_close(&run);
}

/* --- scanner --------------------------------------------------------------------------- */

static void test_scanner(void **state)
{
	static struct spool sp;
	struct rm_scan sc;
	struct rm_spool_record rec;
	size_t offset = 0, expect_at = RM_SPOOL_SEGMENT_HEADER_BYTES;
	int i = 0;

	build_spool(&sp);
	rm_scan_init(&sc, sp.seg[1], sp.len[1]);
	assert_true(sc.header_ok);
	assert_true(sc.seg.seq == 12);
	while (rm_scan_next(&sc, &rec, &offset)) {
		while (sp.rec[i].seg != 1)
			i++;
		assert_int_equal(offset, expect_at);
		assert_int_equal(offset, sp.rec[i].start);
		assert_int_equal(rec.type, sp.rec[i].type);
		expect_at += rec.record_bytes;
		i++;
	}
	assert_int_equal(sc.stop, RM_SCAN_END);
	assert_int_equal(sc.pos, sp.len[1]);
	assert_false(rm_scan_next(&sc, &rec, &offset));	/* stays stopped */
	assert_string_equal(rm_scan_stop_name(RM_SCAN_TORN), "torn tail");
}

/* --- seeds for the fuzzer ------------------------------------------------------------ */

/* Fuzz input: u8 flags, u16 LE split, segment bytes (see fuzz/fuzz_spool_recover.c). */
static void write_seed(const char *dir, const char *name, uint8_t flags, const uint8_t *a,
		       size_t alen, const uint8_t *b, size_t blen)
{
	char path[512];
	FILE *f;
	uint8_t head[3] = { flags, (uint8_t)alen, (uint8_t)(alen >> 8) };

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(head, 1, 3, f), 3);
	assert_int_equal(fwrite(a, 1, alen, f), alen);
	if (blen > 0)
		assert_int_equal(fwrite(b, 1, blen, f), blen);
	assert_int_equal(fclose(f), 0);
}

static void test_write_seeds_if_asked(void **state)
{
	static struct spool sp;
	const char *dir = getenv("RM_SPOOL_SEED_DIR");
	const size_t h = RM_SPOOL_SEGMENT_HEADER_BYTES;

	if (dir == NULL)
		return;	/* only when asked: the seeds are committed */
	build_spool(&sp);
	write_seed(dir, "two-segments", 0x04, sp.seg[0], sp.len[0], sp.seg[1], sp.len[1]);
	write_seed(dir, "later-two", 0x04, sp.seg[1], sp.len[1], sp.seg[2], sp.len[2]);
	write_seed(dir, "one-segment", 0x00, sp.seg[2], sp.len[2], NULL, 0);
	write_seed(dir, "fixup-two", 0x07, sp.seg[0] + h, sp.len[0] - h, sp.seg[1] + h, sp.len[1] - h);
	write_seed(dir, "fixup-one", 0x03, sp.seg[2] + h, sp.len[2] - h, NULL, 0);
	write_seed(dir, "small-limits", 0x04 | (3 << 3), sp.seg[0], sp.len[0], sp.seg[1], sp.len[1]);
	write_seed(dir, "torn", 0x04, sp.seg[0], sp.len[0], sp.seg[1], sp.len[1] / 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_spool),
		cmocka_unit_test(test_scanner),
		cmocka_unit_test(test_every_cut_keep_later),
		cmocka_unit_test(test_every_cut_drop_later),
		cmocka_unit_test(test_every_flip),
		cmocka_unit_test(test_deletable),
		cmocka_unit_test(test_zero_tail_and_empty),
		cmocka_unit_test(test_limit_overflow),
		cmocka_unit_test(test_anomalies),
		cmocka_unit_test(test_many_data),
		cmocka_unit_test(test_write_seeds_if_asked),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
