/*
 * NAME
 *	spool_recover - rebuild the queue from spool segments at start-up
 * SUMMARY
 *	See core/spool_recover.h for the interface.
 * DESCRIPTION
 *	One pass over the records, in log order, drives a small state machine
 *	per queue id (a slot): OPEN at BEGIN; COMMITTED at an END that matches
 *	what came before it; FINAL when every recipient is done or the message
 *	was DELETED; ABORTED at ABORT; BROKEN when its records contradict each
 *	other (a writer bug; the message is discarded as never committed).
 *	Slots stay to the end, whatever their state, so that later records of
 *	a queue id are recognised and each message's span of segments is known
 *	for the deletion rule.
 *
 *	The content hash of an open message is kept in a streaming XXH3 state
 *	fed with each DATA payload as it goes by: END is checked when it is
 *	read, so the bytes of older segments need not stay around.  Extents
 *	(BEGIN, RCPT and DATA places) are list nodes in one pool and go back to
 *	it as soon as a message is final or dropped; finish copies the lists
 *	of the messages returned into one array, message by message.
 *
 *	Every table is a slice of the caller's arena, sized from the limits;
 *	every loop is bounded by a limit or by the bytes fed.
 * DIAGNOSTICS
 *	-ENOBUFS (r->limit names the limit), -EINVAL; RM_ASSERT on misuse.
 */
#include <errno.h>
#include <string.h>

#include "core/log.h"
#include "core/spool_recover.h"

#define NONE UINT32_MAX
#define LIMIT_MAX (1u << 28)	/* keeps every size computation far from overflow */
#define ARENA_ALIGN 64		/* XXH3_state_t wants 64 */

enum slot_state { SLOT_OPEN = 1, SLOT_COMMITTED, SLOT_FINAL, SLOT_ABORTED, SLOT_BROKEN };

struct rm_recover_slot {
	struct rm_recover_msg pub;
	uint64_t content_seen;		/* bytes of DATA so far */
	uint32_t rcpt_seen;		/* recipients in BEGIN and RCPT so far */
	uint32_t state_idx;		/* XXH3 state while OPEN, else NONE */
	uint32_t env_head, env_tail;
	uint32_t content_head, content_tail;
	uint32_t begin_seg, last_seg;	/* indexes of fed segments */
	uint8_t state;			/* enum slot_state */
	bool has_data;
};

/* --- scanner ----------------------------------------------------------------- */

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != 0)
			return false;
	return true;
}

const char *rm_scan_stop_name(enum rm_scan_stop stop)
{
	switch (stop) {
	case RM_SCAN_END: return "end";
	case RM_SCAN_ZERO_TAIL: return "zero tail";
	case RM_SCAN_TORN: return "torn tail";
	case RM_SCAN_BAD: return "bad record";
	case RM_SCAN_BAD_HEADER: return "bad segment header";
	}
	return "unknown";
}

void rm_scan_init(struct rm_scan *s, const uint8_t *seg, size_t len)
{
	RM_ASSERT(s != NULL && (seg != NULL || len == 0));
	memset(s, 0, sizeof(*s));
	s->buf = seg;
	s->len = len;
	enum rm_spool_result res = rm_spool_decode_segment(seg, len, &s->seg);

	if (res == RM_SPOOL_OK) {
		s->header_ok = true;
		s->pos = RM_SPOOL_SEGMENT_HEADER_BYTES;
		return;
	}
	s->stopped = true;
	s->pos = 0;
	if (all_zero(seg, len)) {
		s->stop = RM_SCAN_ZERO_TAIL;
		s->why = "no segment header, zero bytes";
	} else if (res == RM_SPOOL_NEED_MORE) {
		s->stop = RM_SCAN_TORN;
		s->why = "segment header cut short";
	} else {
		s->stop = RM_SCAN_BAD_HEADER;
		s->why = "bad segment header (magic, checksum or version)";
	}
}

bool rm_scan_next(struct rm_scan *s, struct rm_spool_record *rec, size_t *offset)
{
	if (s->stopped)
		return false;
	RM_ASSERT(s->pos <= s->len);
	if (s->pos == s->len) {
		s->stopped = true;
		s->stop = RM_SCAN_END;
		return false;
	}
	enum rm_spool_result res = rm_spool_decode(s->buf + s->pos, s->len - s->pos, rec);

	if (res == RM_SPOOL_OK) {
		*offset = s->pos;
		s->pos += rec->record_bytes;
		s->records++;
		return true;
	}
	s->stopped = true;
	s->why = rec->why;
	if (res == RM_SPOOL_NEED_MORE) {
		s->stop = RM_SCAN_TORN;
	} else if (all_zero(s->buf + s->pos, s->len - s->pos)) {
		s->stop = RM_SCAN_ZERO_TAIL;
		s->why = "zero bytes";
	} else {
		s->stop = RM_SCAN_BAD;
	}
	return false;
}

/* --- arena -------------------------------------------------------------------- */

struct layout {
	size_t slots, hash, states, states_free, nodes, rcpts, segs, out_ext, out_idx, total;
	uint32_t hash_cap;
};

static size_t align_up(size_t n)
{
	return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

static bool limits_valid(const struct rm_recover_limits *lim)
{
	return lim->messages_max >= 1 && lim->messages_max <= LIMIT_MAX && lim->open_max >= 1 &&
	       lim->open_max <= LIMIT_MAX && lim->extents_max >= 1 && lim->extents_max <= LIMIT_MAX &&
	       lim->rcpts_max >= 1 && lim->rcpts_max <= LIMIT_MAX && lim->segments_max >= 1 &&
	       lim->segments_max <= LIMIT_MAX;
}

static void layout_of(const struct rm_recover_limits *lim, struct layout *l)
{
	size_t at = 0;

	/* Open addressing at most half full keeps probes short. */
	l->hash_cap = 2;
	while (l->hash_cap < 2 * lim->messages_max)
		l->hash_cap *= 2;
	l->slots = at;
	at = align_up(at + sizeof(struct rm_recover_slot) * lim->messages_max);
	l->hash = at;
	at = align_up(at + sizeof(uint32_t) * l->hash_cap);
	l->states = at;
	at = align_up(at + sizeof(XXH3_state_t) * lim->open_max);
	l->states_free = at;
	at = align_up(at + sizeof(uint32_t) * lim->open_max);
	l->nodes = at;
	at = align_up(at + sizeof(struct rm_spool_extent) * lim->extents_max);
	l->rcpts = at;
	at = align_up(at + lim->rcpts_max);
	l->segs = at;
	at = align_up(at + sizeof(struct rm_recover_seg) * lim->segments_max);
	l->out_ext = at;
	at = align_up(at + sizeof(struct rm_spool_extent) * lim->extents_max);
	l->out_idx = at;
	at = align_up(at + sizeof(uint32_t) * lim->messages_max);
	l->total = at + ARENA_ALIGN;	/* room to align the caller's pointer */
}

size_t rm_recover_arena_bytes(const struct rm_recover_limits *lim)
{
	struct layout l;

	RM_ASSERT(lim != NULL);
	if (!limits_valid(lim))
		return 0;
	layout_of(lim, &l);
	return l.total;
}

int rm_recover_init(struct rm_recover *r, const struct rm_recover_limits *lim, void *arena,
		    size_t arena_bytes)
{
	struct layout l;

	RM_ASSERT(r != NULL && lim != NULL);
	memset(r, 0, sizeof(*r));
	if (!limits_valid(lim))
		return -EINVAL;
	layout_of(lim, &l);
	RM_ASSERT(arena != NULL && arena_bytes >= l.total);

	uintptr_t addr = (uintptr_t)arena;
	uint8_t *base = (uint8_t *)arena + ((ARENA_ALIGN - addr % ARENA_ALIGN) % ARENA_ALIGN);

	r->lim = *lim;
	r->slots = (struct rm_recover_slot *)(void *)(base + l.slots);
	r->hash = (uint32_t *)(void *)(base + l.hash);
	r->hash_mask = l.hash_cap - 1;
	r->states = (XXH3_state_t *)(void *)(base + l.states);
	r->states_free = (uint32_t *)(void *)(base + l.states_free);
	r->nodes = (struct rm_spool_extent *)(void *)(base + l.nodes);
	r->rcpts = base + l.rcpts;
	r->segs = (struct rm_recover_seg *)(void *)(base + l.segs);
	r->out_ext = (struct rm_spool_extent *)(void *)(base + l.out_ext);
	r->out_idx = (uint32_t *)(void *)(base + l.out_idx);
	memset(r->hash, 0, sizeof(uint32_t) * l.hash_cap);
	/* Hand out states from index 0 up, so a small run touches little memory. */
	for (uint32_t i = 0; i < lim->open_max; i++)
		r->states_free[i] = lim->open_max - 1 - i;
	r->states_free_count = lim->open_max;
	r->nodes_free = NONE;
	return 0;
}

static int overflow(struct rm_recover *r, const char *limit)
{
	r->error = -ENOBUFS;
	r->limit = limit;
	return -ENOBUFS;
}

/* --- tables ----------------------------------------------------------------- */

static uint32_t qid_hash(uint64_t qid)
{
	/* splitmix64's finalizer: ids of one worker differ in few bits. */
	qid ^= qid >> 30;
	qid *= 0xbf58476d1ce4e5b9ULL;
	qid ^= qid >> 27;
	qid *= 0x94d049bb133111ebULL;
	qid ^= qid >> 31;
	return (uint32_t)qid;
}

/* The slot of qid, or NONE with *bucket where it would go. */
static uint32_t slot_find(const struct rm_recover *r, uint64_t qid, uint32_t *bucket)
{
	uint32_t h = qid_hash(qid);

	/* At most half full: an empty bucket comes long before the bound. */
	for (uint32_t i = 0; i <= r->hash_mask; i++) {
		uint32_t b = (h + i) & r->hash_mask;
		uint32_t v = r->hash[b];

		if (v == 0) {
			*bucket = b;
			return NONE;
		}
		if (r->slots[v - 1].pub.qid == qid)
			return v - 1;
	}
	rm_panic("spool_recover: hash table full (%u slots used)", r->slots_used);
}

static int node_add(struct rm_recover *r, uint32_t *head, uint32_t *tail, uint64_t seq,
		    uint64_t offset, uint32_t len)
{
	uint32_t n;

	if (r->nodes_free != NONE) {
		n = r->nodes_free;
		r->nodes_free = r->nodes[n].next;
	} else if (r->nodes_used < r->lim.extents_max) {
		n = r->nodes_used++;
	} else {
		return overflow(r, "extents_max");
	}
	r->nodes[n] = (struct rm_spool_extent){ .seq = seq, .offset = offset, .len = len, .next = NONE };
	if (*tail == NONE)
		*head = n;
	else
		r->nodes[*tail].next = n;
	*tail = n;
	return 0;
}

static void nodes_release(struct rm_recover *r, uint32_t *head, uint32_t *tail)
{
	uint32_t n = *head;

	for (uint32_t guard = 0; n != NONE; guard++) {
		uint32_t next = r->nodes[n].next;

		RM_ASSERT(guard < r->lim.extents_max);
		r->nodes[n].next = r->nodes_free;
		r->nodes_free = n;
		n = next;
	}
	*head = *tail = NONE;
}

/* Gives back what a message holds beyond its slot and recipient states. */
static void slot_release(struct rm_recover *r, struct rm_recover_slot *s)
{
	if (s->state_idx != NONE) {
		RM_ASSERT(r->states_free_count < r->lim.open_max);
		r->states_free[r->states_free_count++] = s->state_idx;
		s->state_idx = NONE;
	}
	nodes_release(r, &s->env_head, &s->env_tail);
	nodes_release(r, &s->content_head, &s->content_tail);
	s->pub.env_count = s->pub.content_count = 0;
}

static void slot_break(struct rm_recover *r, struct rm_recover_slot *s)
{
	slot_release(r, s);
	s->state = SLOT_BROKEN;
	r->stats.anomalies++;
}

/* --- records ----------------------------------------------------------------- */

struct feed_ctx {
	const uint8_t *base;	/* the segment's bytes */
	uint32_t seg_idx;
	uint64_t seq;
};

static int apply_begin(struct rm_recover *r, const struct feed_ctx *fc,
		       const struct rm_spool_record *rec, size_t offset)
{
	uint32_t bucket = 0;

	if (slot_find(r, rec->qid, &bucket) != NONE) {
		r->stats.anomalies++;	/* a queue id used twice: keep the first */
		return 0;
	}
	uint32_t total = rec->u.begin.rcpt_total;

	if (r->slots_used == r->lim.messages_max)
		return overflow(r, "messages_max");
	if (r->states_free_count == 0)
		return overflow(r, "open_max");
	if (total > r->lim.rcpts_max - r->rcpts_used)
		return overflow(r, "rcpts_max");

	uint32_t idx = r->slots_used++;
	struct rm_recover_slot *s = &r->slots[idx];

	memset(s, 0, sizeof(*s));
	s->pub.qid = rec->qid;
	s->pub.rcpt_total = total;
	s->pub.rcpt_state = r->rcpts + r->rcpts_used;
	memset(r->rcpts + r->rcpts_used, RM_RCPT_PENDING, total);
	r->rcpts_used += total;
	s->rcpt_seen = rec->u.begin.rcpt_count;
	s->env_head = s->env_tail = s->content_head = s->content_tail = NONE;
	s->begin_seg = s->last_seg = fc->seg_idx;
	s->state = SLOT_OPEN;
	s->state_idx = r->states_free[--r->states_free_count];
	XXH_errorcode rc = XXH3_64bits_reset(&r->states[s->state_idx]);

	RM_ASSERT(rc == XXH_OK);
	r->hash[bucket] = idx + 1;
	s->pub.env_count = 1;
	return node_add(r, &s->env_head, &s->env_tail, fc->seq, offset, (uint32_t)rec->record_bytes);
}

static int apply_rcpt(struct rm_recover *r, const struct feed_ctx *fc, struct rm_recover_slot *s,
		      const struct rm_spool_record *rec, size_t offset)
{
	uint32_t first = rec->u.rcpt.first, n = rec->u.rcpt.rcpt_count;

	if (s->state != SLOT_OPEN) {
		r->stats.anomalies++;
		return 0;
	}
	if (s->has_data || first != s->rcpt_seen || n > s->pub.rcpt_total - first) {
		slot_break(r, s);
		return 0;
	}
	s->rcpt_seen += n;
	s->pub.env_count++;
	return node_add(r, &s->env_head, &s->env_tail, fc->seq, offset, (uint32_t)rec->record_bytes);
}

static int apply_data(struct rm_recover *r, const struct feed_ctx *fc, struct rm_recover_slot *s,
		      const struct rm_spool_record *rec, size_t offset)
{
	if (s->state != SLOT_OPEN) {
		r->stats.anomalies++;
		return 0;
	}
	if (s->rcpt_seen != s->pub.rcpt_total) {
		slot_break(r, s);	/* content before the whole envelope */
		return 0;
	}
	XXH_errorcode rc = XXH3_64bits_update(&r->states[s->state_idx], rec->payload,
					      rec->payload_len);

	RM_ASSERT(rc == XXH_OK);
	s->content_seen += rec->payload_len;
	s->has_data = true;
	if (rec->payload_len == 0)
		return 0;
	s->pub.content_count++;
	return node_add(r, &s->content_head, &s->content_tail, fc->seq,
			offset + RM_SPOOL_HEADER_BYTES, rec->payload_len);
}

static void apply_end(struct rm_recover *r, struct rm_recover_slot *s,
		      const struct rm_spool_record *rec)
{
	if (s->state != SLOT_OPEN) {
		r->stats.anomalies++;
		return;
	}
	uint64_t hash = XXH3_64bits_digest(&r->states[s->state_idx]);

	if (s->rcpt_seen != s->pub.rcpt_total || s->content_seen != rec->u.end.content_bytes ||
	    hash != rec->u.end.content_xxh3) {
		slot_break(r, s);
		return;
	}
	r->states_free[r->states_free_count++] = s->state_idx;
	s->state_idx = NONE;
	s->pub.content_bytes = rec->u.end.content_bytes;
	s->pub.content_xxh3 = hash;
	s->pub.rcpt_pending = s->pub.rcpt_total;
	s->state = SLOT_COMMITTED;
}

static void slot_final(struct rm_recover *r, struct rm_recover_slot *s)
{
	slot_release(r, s);
	s->state = SLOT_FINAL;
}

static void mark_rcpt(struct rm_recover *r, struct rm_recover_slot *s, uint32_t i, uint8_t to)
{
	uint8_t *st = (uint8_t *)s->pub.rcpt_state;

	if (i >= s->pub.rcpt_total) {
		r->stats.anomalies++;
		return;
	}
	if (st[i] != RM_RCPT_PENDING)
		return;	/* a recipient's final state does not change */
	st[i] = to;
	s->pub.rcpt_pending--;
}

static void apply_status(struct rm_recover *r, const struct feed_ctx *fc, struct rm_recover_slot *s,
			 const struct rm_spool_record *rec)
{
	if (s->state == SLOT_FINAL)
		return;	/* nothing changes a final message */
	if (s->state != SLOT_COMMITTED) {
		r->stats.anomalies++;	/* status of a message never committed */
		return;
	}
	switch (rec->type) {
	case RM_SPOOL_DELIVERED:
	case RM_SPOOL_BOUNCED: {
		uint8_t to = rec->type == RM_SPOOL_DELIVERED ? RM_RCPT_DELIVERED : RM_RCPT_BOUNCED;

		if (rec->u.status.all) {
			for (uint32_t i = 0; i < s->pub.rcpt_total; i++)
				mark_rcpt(r, s, i, to);
		} else {
			for (uint32_t i = 0; i < rec->u.status.index_count; i++)
				mark_rcpt(r, s, rm_spool_status_index(rec, i), to);
		}
		if (s->pub.rcpt_pending == 0)
			slot_final(r, s);
		break;
	}
	case RM_SPOOL_DEFERRED:
		s->pub.next_attempt_unix_ms = rec->u.status.next_attempt_unix_ms;
		s->pub.attempts = rec->u.status.attempts;
		s->pub.last_error = (struct rm_spool_extent){
			.seq = fc->seq,
			.offset = rec->u.status.text.len ?
				  (uint64_t)((const uint8_t *)rec->u.status.text.ptr - fc->base) : 0,
			.len = (uint32_t)rec->u.status.text.len,
			.next = NONE,
		};
		break;
	case RM_SPOOL_DELETED:
		slot_final(r, s);
		break;
	case RM_SPOOL_HOLD:
		s->pub.hold = true;
		break;
	case RM_SPOOL_RELEASE:
		s->pub.hold = false;
		break;
	default:
		rm_panic("spool_recover: %s is not a status record", rm_spool_type_name(rec->type));
	}
}

static int apply(struct rm_recover *r, const struct feed_ctx *fc, const struct rm_spool_record *rec,
		 size_t offset)
{
	uint32_t bucket = 0;
	uint64_t t = rm_queue_id_time_ms(rec->qid);

	r->stats.records++;
	if (t > r->stats.max_qid_time_unix_ms)
		r->stats.max_qid_time_unix_ms = t;
	if (rec->type == RM_SPOOL_BEGIN)
		return apply_begin(r, fc, rec, offset);

	uint32_t idx = slot_find(r, rec->qid, &bucket);

	if (idx == NONE) {
		r->stats.orphans++;	/* its BEGIN was in a segment deleted before */
		return 0;
	}
	struct rm_recover_slot *s = &r->slots[idx];

	s->last_seg = fc->seg_idx;
	switch (rec->type) {
	case RM_SPOOL_RCPT:
		return apply_rcpt(r, fc, s, rec, offset);
	case RM_SPOOL_DATA:
		return apply_data(r, fc, s, rec, offset);
	case RM_SPOOL_END:
		apply_end(r, s, rec);
		return 0;
	case RM_SPOOL_ABORT:
		if (s->state != SLOT_OPEN) {
			r->stats.anomalies++;	/* only an uncommitted message can be aborted */
			return 0;
		}
		slot_release(r, s);
		s->state = SLOT_ABORTED;
		return 0;
	case RM_SPOOL_BEGIN:
		break;
	case RM_SPOOL_DELIVERED:
	case RM_SPOOL_BOUNCED:
	case RM_SPOOL_DEFERRED:
	case RM_SPOOL_DELETED:
	case RM_SPOOL_HOLD:
	case RM_SPOOL_RELEASE:
		apply_status(r, fc, s, rec);
		return 0;
	}
	rm_panic("spool_recover: record type %u", (unsigned)rec->type);
}

int rm_recover_feed(struct rm_recover *r, const uint8_t *seg, size_t len)
{
	struct rm_scan sc;
	struct rm_spool_record rec;
	size_t offset = 0;

	RM_ASSERT(r != NULL && r->slots != NULL && !r->finished);
	if (r->error != 0)
		return r->error;
	rm_scan_init(&sc, seg, len);
	if (sc.header_ok && r->have_seq && sc.seg.seq <= r->last_seq)
		return -EINVAL;
	if (r->segs_used == r->lim.segments_max)
		return overflow(r, "segments_max");

	struct feed_ctx fc = { .base = seg, .seg_idx = r->segs_used, .seq = sc.seg.seq };
	struct rm_recover_seg *info = &r->segs[r->segs_used++];

	memset(info, 0, sizeof(*info));
	info->seq = sc.seg.seq;
	info->worker = sc.seg.worker;
	info->header_ok = sc.header_ok;
	info->len_bytes = len;
	info->span_last = fc.seg_idx;
	if (sc.header_ok) {
		r->have_seq = true;
		r->last_seq = sc.seg.seq;
		if (sc.seg.seq > r->stats.max_seq)
			r->stats.max_seq = sc.seg.seq;
	}
	/* Each record is at least RM_SPOOL_RECORD_BYTES_MIN long. */
	for (size_t guard = 0; rm_scan_next(&sc, &rec, &offset); guard++) {
		RM_ASSERT(guard <= len / RM_SPOOL_RECORD_BYTES_MIN);
		int rc = apply(r, &fc, &rec, offset);

		if (rc < 0)
			return rc;
	}
	info->stop = sc.stop;
	info->why = sc.why;
	info->valid_end_bytes = sc.pos;
	info->records = sc.records;
	return 0;
}

/* --- results ----------------------------------------------------------------- */

static uint32_t copy_list(struct rm_recover *r, uint32_t head, uint32_t at)
{
	uint32_t n = head;

	for (uint32_t guard = 0; n != NONE; guard++) {
		RM_ASSERT(guard < r->lim.extents_max && at < r->lim.extents_max);
		r->out_ext[at] = r->nodes[n];
		r->out_ext[at].next = NONE;
		at++;
		n = r->nodes[n].next;
	}
	return at;
}

/* all_final and deletable per segment: see the header. */
static void segments_decide(struct rm_recover *r)
{
	uint32_t nsegs = r->segs_used;
	int64_t pins = 0;
	uint32_t blocked_end = 0;	/* segments below it may not go */

	for (uint32_t i = 0; i < r->slots_used; i++) {
		const struct rm_recover_slot *s = &r->slots[i];
		struct rm_recover_seg *b = &r->segs[s->begin_seg];

		if (s->state != SLOT_COMMITTED && s->state != SLOT_FINAL)
			continue;
		if (s->last_seg > b->span_last)
			b->span_last = s->last_seg;
		if (s->state == SLOT_COMMITTED) {
			b->pin_delta++;
			if (s->last_seg + 1 < nsegs)
				r->segs[s->last_seg + 1].pin_delta--;
		}
	}
	for (uint32_t i = 0; i < nsegs; i++) {
		struct rm_recover_seg *g = &r->segs[i];
		bool damaged = g->stop == RM_SCAN_BAD || g->stop == RM_SCAN_BAD_HEADER;

		pins += g->pin_delta;
		RM_ASSERT(pins >= 0);
		g->all_final = pins == 0 && !damaged;
		g->deletable = g->all_final && i >= blocked_end;
		/* Messages that begin here and end later must not outlive this segment. */
		if (!g->deletable && g->span_last + 1 > blocked_end)
			blocked_end = g->span_last + 1;
	}
}

int rm_recover_finish(struct rm_recover *r)
{
	uint32_t at = 0;

	RM_ASSERT(r != NULL && r->slots != NULL && !r->finished);
	if (r->error != 0)
		return r->error;
	r->finished = true;
	for (uint32_t i = 0; i < r->slots_used; i++) {
		struct rm_recover_slot *s = &r->slots[i];

		switch (s->state) {
		case SLOT_OPEN:
			slot_release(r, s);
			s->state = SLOT_BROKEN;
			r->stats.discarded++;	/* no END: never acknowledged */
			break;
		case SLOT_BROKEN:
			r->stats.discarded++;
			break;
		case SLOT_ABORTED:
			r->stats.aborted++;
			break;
		case SLOT_FINAL:
			r->stats.final++;
			break;
		case SLOT_COMMITTED:
			r->stats.recovered++;
			r->out_idx[r->out_count++] = i;
			s->pub.env = r->out_ext + at;
			at = copy_list(r, s->env_head, at);
			s->pub.content = r->out_ext + at;
			at = copy_list(r, s->content_head, at);
			RM_ASSERT(s->pub.env + s->pub.env_count + s->pub.content_count == r->out_ext + at);
			break;
		default:
			rm_panic("spool_recover: slot %u in state %u", i, s->state);
		}
	}
	segments_decide(r);
	return 0;
}

uint32_t rm_recover_count(const struct rm_recover *r)
{
	RM_ASSERT(r->finished);
	return r->out_count;
}

const struct rm_recover_msg *rm_recover_message(const struct rm_recover *r, uint32_t i)
{
	RM_ASSERT(r->finished && i < r->out_count);
	return &r->slots[r->out_idx[i]].pub;
}

uint32_t rm_recover_segments(const struct rm_recover *r)
{
	return r->segs_used;
}

const struct rm_recover_seg *rm_recover_segment(const struct rm_recover *r, uint32_t i)
{
	RM_ASSERT(i < r->segs_used);
	return &r->segs[i];
}

const struct rm_recover_stats *rm_recover_stats(const struct rm_recover *r)
{
	return &r->stats;
}
