/*
 * NAME
 *	spool_format - on-disk records of the durable spool, and queue ids
 * SUMMARY
 *	See core/spool_format.h for the interface and the byte layout.
 * DESCRIPTION
 *	Every encoder computes the exact payload size first, checks it against
 *	the limits and the caller's room, and only then writes; so a write
 *	cursor needs no bounds checks and one assertion at the end proves the
 *	size arithmetic.  Every decoder reads through a cursor that refuses to
 *	pass the end of the payload and remembers that it did, so a parse is a
 *	straight line of reads and one check at the end, plus the limits.
 *
 *	The decoder checks the cheap header fields before the checksum so a
 *	garbage length never makes it wait for (NEED_MORE) or hash a megabyte:
 *	the checksum only runs on a record whose type, flags and length are
 *	possible.  It checks the payload structure after the checksum, because
 *	a record that passes the checksum but does not parse is a writer bug
 *	and must still not reach recovery.
 * DIAGNOSTICS
 *	Broken invariants panic through RM_ASSERT.
 */
#include <errno.h>
#include <string.h>

#include "core/log.h"
#include "core/spool_format.h"

#define TIME_REL_MAX ((1ULL << RM_QUEUE_ID_TIME_BITS) - 1)
#define BEGIN_FIXED_BYTES 28	/* two u64, four u8, two u32 */
#define BEGIN_STRS 5
#define RCPT_FIXED_BYTES 8	/* first, n */
#define RCPT_MIN_BYTES 6	/* notify, addr length, 1 addr byte, orcpt length */
#define STATUS_FIXED_BYTES 8	/* flags, n */
#define DEFERRED_EXTRA_BYTES 12	/* next attempt, attempts */

_Static_assert(RM_SPOOL_RECORD_BYTES(0) == 32, "smallest record");
_Static_assert(RM_SPOOL_SEGMENT_HEADER_BYTES % RM_SPOOL_ALIGN_BYTES == 0, "aligned first record");
_Static_assert(RM_SPOOL_FIELD_MAX <= UINT16_MAX && RM_SPOOL_TEXT_MAX <= UINT16_MAX, "u16 lengths");
/* An envelope with every field at its maximum and one recipient fits one BEGIN. */
_Static_assert(BEGIN_FIXED_BYTES + BEGIN_STRS * (2 + RM_SPOOL_FIELD_MAX) + 5 + 2 * RM_SPOOL_FIELD_MAX
	       <= RM_SPOOL_PAYLOAD_MAX, "one recipient always fits");
_Static_assert(DEFERRED_EXTRA_BYTES + STATUS_FIXED_BYTES + 4ULL * RM_SPOOL_RCPT_MAX + 2 + RM_SPOOL_TEXT_MAX
	       <= RM_SPOOL_PAYLOAD_MAX, "every status record fits");

/* --- little-endian access ---------------------------------------------- */

static void put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get_u16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* Write cursor: the size was checked before, so it only moves forward. */
struct wr {
	uint8_t *p;
};

static void wr_u8(struct wr *w, uint8_t v)
{
	*w->p++ = v;
}

static void wr_u16(struct wr *w, uint16_t v)
{
	put_u16(w->p, v);
	w->p += 2;
}

static void wr_u32(struct wr *w, uint32_t v)
{
	put_u32(w->p, v);
	w->p += 4;
}

static void wr_u64(struct wr *w, uint64_t v)
{
	put_u64(w->p, v);
	w->p += 8;
}

static void wr_str(struct wr *w, struct rm_spool_str s)
{
	wr_u16(w, (uint16_t)s.len);
	if (s.len > 0)
		memcpy(w->p, s.ptr, s.len);
	w->p += s.len;
}

/* Read cursor: past the end it yields zeros and clears ok, checked once at the end. */
struct rd {
	const uint8_t *p;
	const uint8_t *end;
	bool ok;
};

static bool rd_take(struct rd *r, size_t n)
{
	if (!r->ok || (size_t)(r->end - r->p) < n) {
		r->ok = false;
		return false;
	}
	return true;
}

static uint8_t rd_u8(struct rd *r)
{
	if (!rd_take(r, 1))
		return 0;
	return *r->p++;
}

static uint16_t rd_u16(struct rd *r)
{
	if (!rd_take(r, 2))
		return 0;
	r->p += 2;
	return get_u16(r->p - 2);
}

static uint32_t rd_u32(struct rd *r)
{
	if (!rd_take(r, 4))
		return 0;
	r->p += 4;
	return get_u32(r->p - 4);
}

static uint64_t rd_u64(struct rd *r)
{
	if (!rd_take(r, 8))
		return 0;
	r->p += 8;
	return get_u64(r->p - 8);
}

/* A u16-length string of at most max bytes. */
static struct rm_spool_str rd_str(struct rd *r, size_t max)
{
	struct rm_spool_str s = { "", 0 };
	uint16_t len = rd_u16(r);

	if (len > max)
		r->ok = false;
	if (!r->ok || !rd_take(r, len))
		return s;
	s.ptr = (const char *)r->p;
	s.len = len;
	r->p += len;
	return s;
}

/* --- queue ids ------------------------------------------------------------ */

static const char crockford[32] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static uint64_t time_rel(uint64_t unix_ms)
{
	if (unix_ms < RM_QUEUE_ID_EPOCH_UNIX_MS)
		return 0;
	unix_ms -= RM_QUEUE_ID_EPOCH_UNIX_MS;
	return unix_ms > TIME_REL_MAX ? TIME_REL_MAX : unix_ms;
}

uint64_t rm_queue_id_make(uint64_t unix_ms, unsigned worker, uint32_t counter)
{
	RM_ASSERT(worker <= RM_QUEUE_ID_WORKER_MAX);
	RM_ASSERT(counter <= RM_QUEUE_ID_COUNTER_MAX);
	return time_rel(unix_ms) << (RM_QUEUE_ID_WORKER_BITS + RM_QUEUE_ID_COUNTER_BITS) |
	       (uint64_t)worker << RM_QUEUE_ID_COUNTER_BITS | counter;
}

uint64_t rm_queue_id_time_ms(uint64_t id)
{
	return (id >> (RM_QUEUE_ID_WORKER_BITS + RM_QUEUE_ID_COUNTER_BITS)) + RM_QUEUE_ID_EPOCH_UNIX_MS;
}

unsigned rm_queue_id_worker(uint64_t id)
{
	return (unsigned)(id >> RM_QUEUE_ID_COUNTER_BITS) & RM_QUEUE_ID_WORKER_MAX;
}

uint32_t rm_queue_id_counter(uint64_t id)
{
	return (uint32_t)id & RM_QUEUE_ID_COUNTER_MAX;
}

/* 13 characters: the top 4 bits, then 12 groups of 5, most significant first. */
void rm_queue_id_format(uint64_t id, char out[RM_QUEUE_ID_TEXT_BYTES])
{
	out[0] = crockford[id >> 60];
	for (int k = 1; k < RM_QUEUE_ID_TEXT_LEN; k++)
		out[k] = crockford[(id >> (60 - 5 * k)) & 31];
	out[RM_QUEUE_ID_TEXT_LEN] = '\0';
}

static int crockford_value(char c)
{
	if (c >= 'a' && c <= 'z')
		c = (char)(c - 'a' + 'A');
	if (c == 'O')
		return 0;
	if (c == 'I' || c == 'L')
		return 1;
	for (int v = 0; v < 32; v++)
		if (crockford[v] == c)
			return v;
	return -1;
}

int rm_queue_id_parse(const char *text, uint64_t *id)
{
	uint64_t v = 0;

	RM_ASSERT(text != NULL && id != NULL);
	if (strnlen(text, RM_QUEUE_ID_TEXT_BYTES) != RM_QUEUE_ID_TEXT_LEN)
		return -EINVAL;
	for (int k = 0; k < RM_QUEUE_ID_TEXT_LEN; k++) {
		int d = crockford_value(text[k]);

		/* The first character carries only 4 bits: 13 x 5 = 65. */
		if (d < 0 || (k == 0 && d > 15))
			return -EINVAL;
		v = v << 5 | (uint64_t)d;
	}
	*id = v;
	return 0;
}

void rm_queue_id_gen_init(struct rm_queue_id_gen *g, unsigned worker, uint64_t floor_unix_ms)
{
	RM_ASSERT(worker <= RM_QUEUE_ID_WORKER_MAX);
	g->worker = worker;
	/*
	 * Ids with the floor's time may exist with any counter: pretend the
	 * counter of that ms is spent, so the first id is at least 1 ms later.
	 */
	g->last_rel_ms = time_rel(floor_unix_ms);
	g->counter = RM_QUEUE_ID_COUNTER_MAX;
	g->started = true;
}

uint64_t rm_queue_id_gen_next(struct rm_queue_id_gen *g, uint64_t now_unix_ms)
{
	uint64_t now_rel = time_rel(now_unix_ms);

	RM_ASSERT(g->started);
	if (now_rel > g->last_rel_ms) {
		g->last_rel_ms = now_rel;
		g->counter = 0;
	} else if (g->counter < RM_QUEUE_ID_COUNTER_MAX) {
		g->counter++;
	} else {
		/* The clock stalled or went back and this ms is spent: borrow the next. */
		RM_ASSERT(g->last_rel_ms < TIME_REL_MAX);
		g->last_rel_ms++;
		g->counter = 0;
	}
	return g->last_rel_ms << (RM_QUEUE_ID_WORKER_BITS + RM_QUEUE_ID_COUNTER_BITS) |
	       (uint64_t)g->worker << RM_QUEUE_ID_COUNTER_BITS | g->counter;
}

/* --- segment header --------------------------------------------------------- */

ssize_t rm_spool_encode_segment(uint8_t *buf, size_t cap, const struct rm_spool_segment *seg)
{
	RM_ASSERT(buf != NULL && seg != NULL);
	if (cap < RM_SPOOL_SEGMENT_HEADER_BYTES)
		return -ENOSPC;
	memcpy(buf, RM_SPOOL_SEGMENT_MAGIC, RM_SPOOL_SEGMENT_MAGIC_BYTES);
	put_u32(buf + 8, RM_SPOOL_VERSION);
	put_u32(buf + 12, seg->worker);
	put_u64(buf + 16, seg->seq);
	put_u64(buf + 24, seg->created_unix_ms);
	put_u64(buf + 32, XXH3_64bits(buf, 32));
	return RM_SPOOL_SEGMENT_HEADER_BYTES;
}

enum rm_spool_result rm_spool_decode_segment(const uint8_t *buf, size_t len,
					     struct rm_spool_segment *out)
{
	size_t magic_len = len < RM_SPOOL_SEGMENT_MAGIC_BYTES ? len : RM_SPOOL_SEGMENT_MAGIC_BYTES;

	RM_ASSERT(out != NULL && (buf != NULL || len == 0));
	memset(out, 0, sizeof(*out));
	if (magic_len > 0 && memcmp(buf, RM_SPOOL_SEGMENT_MAGIC, magic_len) != 0)
		return RM_SPOOL_BAD;
	if (len < RM_SPOOL_SEGMENT_HEADER_BYTES)
		return RM_SPOOL_NEED_MORE;
	if (get_u64(buf + 32) != XXH3_64bits(buf, 32))
		return RM_SPOOL_BAD;
	out->version = get_u32(buf + 8);
	out->worker = get_u32(buf + 12);
	out->seq = get_u64(buf + 16);
	out->created_unix_ms = get_u64(buf + 24);
	/* A newer format is not ours to guess at. */
	return out->version == RM_SPOOL_VERSION ? RM_SPOOL_OK : RM_SPOOL_BAD;
}

/* --- record framing -------------------------------------------------------- */

static void header_put(uint8_t *hdr, enum rm_spool_type type, uint64_t qid, uint32_t payload_len)
{
	memcpy(hdr, RM_SPOOL_RECORD_MAGIC, RM_SPOOL_RECORD_MAGIC_BYTES);
	hdr[4] = (uint8_t)type;
	hdr[5] = 0;
	put_u16(hdr + 6, 0);
	put_u32(hdr + 8, payload_len);
	put_u64(hdr + 12, qid);
}

static uint64_t header_seed(const uint8_t *hdr)
{
	return XXH3_64bits(hdr, RM_SPOOL_HEADER_BYTES);
}

size_t rm_spool_data_trailer_hash(uint8_t out[RM_SPOOL_TRAILER_BYTES_MAX], uint64_t checksum,
				  uint32_t payload_len)
{
	size_t trailer = RM_SPOOL_RECORD_BYTES(payload_len) - RM_SPOOL_HEADER_BYTES - payload_len;

	RM_ASSERT(trailer >= RM_SPOOL_CHECKSUM_BYTES && trailer <= RM_SPOOL_TRAILER_BYTES_MAX);
	put_u64(out, checksum);
	memset(out + RM_SPOOL_CHECKSUM_BYTES, 0, trailer - RM_SPOOL_CHECKSUM_BYTES);
	return trailer;
}

/*
 * Opens a record of payload_len bytes in buf; returns the payload's place,
 * or NULL when the whole record does not fit cap.
 */
static uint8_t *record_open(uint8_t *buf, size_t cap, enum rm_spool_type type, uint64_t qid,
			    size_t payload_len)
{
	RM_ASSERT(buf != NULL);
	RM_ASSERT(payload_len <= RM_SPOOL_PAYLOAD_MAX);
	if (cap < RM_SPOOL_RECORD_BYTES(payload_len))
		return NULL;
	header_put(buf, type, qid, (uint32_t)payload_len);
	return buf + RM_SPOOL_HEADER_BYTES;
}

/* Checksums the record opened in buf (payload written) and returns its size. */
static ssize_t record_seal(uint8_t *buf, size_t payload_len)
{
	const uint8_t *payload = buf + RM_SPOOL_HEADER_BYTES;
	uint64_t sum = XXH3_64bits_withSeed(payload, payload_len, header_seed(buf));

	rm_spool_data_trailer_hash(buf + RM_SPOOL_HEADER_BYTES + payload_len, sum,
				   (uint32_t)payload_len);
	return (ssize_t)RM_SPOOL_RECORD_BYTES(payload_len);
}

/* --- envelope ---------------------------------------------------------------- */

static size_t rcpt_bytes(const struct rm_spool_rcpt *rc)
{
	return 1 + 2 + rc->addr.len + 2 + rc->orcpt.len;
}

static bool rcpt_valid(const struct rm_spool_rcpt *rc)
{
	return rc->addr.len >= 1 && rc->addr.len <= RM_SPOOL_FIELD_MAX && rc->addr.ptr != NULL &&
	       rc->orcpt.len <= RM_SPOOL_FIELD_MAX && (rc->orcpt.len == 0 || rc->orcpt.ptr != NULL) &&
	       (rc->notify & ~RM_SPOOL_NOTIFY_MASK) == 0;
}

static bool str_valid(struct rm_spool_str s)
{
	return s.len <= RM_SPOOL_FIELD_MAX && (s.len == 0 || s.ptr != NULL);
}

static size_t envelope_bytes(const struct rm_spool_envelope *env)
{
	return BEGIN_FIXED_BYTES + BEGIN_STRS * 2 + env->reverse_path.len + env->envid.len +
	       env->client_addr.len + env->helo.len + env->auth_user.len;
}

static bool envelope_valid(const struct rm_spool_envelope *env)
{
	return str_valid(env->reverse_path) && str_valid(env->envid) && str_valid(env->client_addr) &&
	       str_valid(env->helo) && str_valid(env->auth_user) &&
	       env->body_type <= RM_SPOOL_BODY_LAST && env->ret <= RM_SPOOL_RET_LAST;
}

/* How many of rcpts[0..n) fit a payload that already holds used bytes. */
static uint32_t rcpts_fitting(const struct rm_spool_rcpt *rcpts, uint32_t n, size_t used)
{
	uint32_t k = 0;

	if (n > RM_SPOOL_RCPT_MAX)
		n = RM_SPOOL_RCPT_MAX;
	for (; k < n; k++) {
		/* A field over its limit counts as its limit; the encoder refuses it anyway. */
		size_t b = rcpt_bytes(&rcpts[k]);

		if (b > 5 + 2 * RM_SPOOL_FIELD_MAX)
			b = 5 + 2 * RM_SPOOL_FIELD_MAX;
		if (used + b > RM_SPOOL_PAYLOAD_MAX)
			break;
		used += b;
	}
	return k;
}

uint32_t rm_spool_begin_fit(const struct rm_spool_envelope *env, const struct rm_spool_rcpt *rcpts,
			    uint32_t n)
{
	RM_ASSERT(env != NULL && (rcpts != NULL || n == 0));
	if (!envelope_valid(env))
		return 0;	/* and rm_spool_encode_begin says -EINVAL */
	return rcpts_fitting(rcpts, n, envelope_bytes(env));
}

uint32_t rm_spool_rcpt_fit(const struct rm_spool_rcpt *rcpts, uint32_t n)
{
	RM_ASSERT(rcpts != NULL || n == 0);
	return rcpts_fitting(rcpts, n, RCPT_FIXED_BYTES);
}

static void wr_rcpts(struct wr *w, const struct rm_spool_rcpt *rcpts, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		wr_u8(w, rcpts[i].notify);
		wr_str(w, rcpts[i].addr);
		wr_str(w, rcpts[i].orcpt);
	}
}

/* Sum of the encoded sizes, or 0 when one recipient is invalid. */
static size_t rcpts_size(const struct rm_spool_rcpt *rcpts, uint32_t n)
{
	size_t sum = 0;

	for (uint32_t i = 0; i < n; i++) {
		if (!rcpt_valid(&rcpts[i]))
			return 0;
		sum += rcpt_bytes(&rcpts[i]);
	}
	return sum;
}

ssize_t rm_spool_encode_begin(uint8_t *buf, size_t cap, uint64_t qid,
			      const struct rm_spool_envelope *env, uint32_t rcpt_total,
			      const struct rm_spool_rcpt *rcpts, uint32_t n)
{
	RM_ASSERT(env != NULL && (rcpts != NULL || n == 0));
	if (rcpt_total == 0 || rcpt_total > RM_SPOOL_RCPT_MAX || n == 0 || n > rcpt_total ||
	    !envelope_valid(env))
		return -EINVAL;

	size_t rsize = rcpts_size(rcpts, n);
	size_t plen = envelope_bytes(env) + rsize;

	if (rsize == 0 || plen > RM_SPOOL_PAYLOAD_MAX)
		return -EINVAL;
	uint8_t *payload = record_open(buf, cap, RM_SPOOL_BEGIN, qid, plen);
	struct wr w = { payload };

	if (payload == NULL)
		return -ENOSPC;
	wr_u64(&w, env->received_unix_ms);
	wr_u64(&w, env->size_declared_bytes);
	wr_u8(&w, env->body_type);
	wr_u8(&w, env->ret);
	wr_u8(&w, env->smtputf8 ? 1 : 0);
	wr_u8(&w, 0);
	wr_u32(&w, rcpt_total);
	wr_u32(&w, n);
	wr_str(&w, env->reverse_path);
	wr_str(&w, env->envid);
	wr_str(&w, env->client_addr);
	wr_str(&w, env->helo);
	wr_str(&w, env->auth_user);
	wr_rcpts(&w, rcpts, n);
	RM_ASSERT(w.p == payload + plen);
	return record_seal(buf, plen);
}

ssize_t rm_spool_encode_rcpt(uint8_t *buf, size_t cap, uint64_t qid, uint32_t first,
			     const struct rm_spool_rcpt *rcpts, uint32_t n)
{
	RM_ASSERT(rcpts != NULL || n == 0);
	/* BEGIN holds index 0, so a continuation starts at 1 or later. */
	if (first == 0 || n == 0 || first > RM_SPOOL_RCPT_MAX || n > RM_SPOOL_RCPT_MAX - first)
		return -EINVAL;

	size_t rsize = rcpts_size(rcpts, n);
	size_t plen = RCPT_FIXED_BYTES + rsize;

	if (rsize == 0 || plen > RM_SPOOL_PAYLOAD_MAX)
		return -EINVAL;
	uint8_t *payload = record_open(buf, cap, RM_SPOOL_RCPT, qid, plen);
	struct wr w = { payload };

	if (payload == NULL)
		return -ENOSPC;
	wr_u32(&w, first);
	wr_u32(&w, n);
	wr_rcpts(&w, rcpts, n);
	RM_ASSERT(w.p == payload + plen);
	return record_seal(buf, plen);
}

/* --- content ----------------------------------------------------------------- */

ssize_t rm_spool_encode_data(uint8_t *buf, size_t cap, uint64_t qid, const void *content,
			     size_t len)
{
	RM_ASSERT(content != NULL || len == 0);
	if (len > RM_SPOOL_PAYLOAD_MAX)
		return -EINVAL;
	uint8_t *payload = record_open(buf, cap, RM_SPOOL_DATA, qid, len);

	if (payload == NULL)
		return -ENOSPC;
	if (len > 0)
		memcpy(payload, content, len);
	return record_seal(buf, len);
}

ssize_t rm_spool_encode_end(uint8_t *buf, size_t cap, uint64_t qid, uint64_t content_bytes,
			    uint64_t content_xxh3)
{
	uint8_t *payload = record_open(buf, cap, RM_SPOOL_END, qid, 16);
	struct wr w = { payload };

	if (payload == NULL)
		return -ENOSPC;
	wr_u64(&w, content_bytes);
	wr_u64(&w, content_xxh3);
	return record_seal(buf, 16);
}

void rm_spool_data_header(uint8_t hdr[RM_SPOOL_HEADER_BYTES], uint64_t qid, uint32_t payload_len)
{
	RM_ASSERT(hdr != NULL);
	RM_ASSERT(payload_len <= RM_SPOOL_PAYLOAD_MAX);
	header_put(hdr, RM_SPOOL_DATA, qid, payload_len);
}

uint64_t rm_spool_data_checksum(const uint8_t hdr[RM_SPOOL_HEADER_BYTES], const void *content,
				size_t len)
{
	RM_ASSERT(content != NULL || len == 0);
	RM_ASSERT(len == get_u32(hdr + 8));
	return XXH3_64bits_withSeed(content, len, header_seed(hdr));
}

void rm_spool_checksum_start(XXH3_state_t *st, const uint8_t hdr[RM_SPOOL_HEADER_BYTES])
{
	RM_ASSERT(st != NULL && hdr != NULL);
	XXH_errorcode rc = XXH3_64bits_reset_withSeed(st, header_seed(hdr));

	RM_ASSERT(rc == XXH_OK);
}

size_t rm_spool_data_trailer(uint8_t out[RM_SPOOL_TRAILER_BYTES_MAX], XXH3_state_t *st,
			     uint32_t payload_len)
{
	RM_ASSERT(st != NULL && payload_len <= RM_SPOOL_PAYLOAD_MAX);
	return rm_spool_data_trailer_hash(out, XXH3_64bits_digest(st), payload_len);
}

/* --- after commit -------------------------------------------------------------- */

/* The common part of DELIVERED / BOUNCED / DEFERRED: -EINVAL or the list's bytes. */
static ssize_t status_list_bytes(bool all, const uint32_t *idx, uint32_t n)
{
	if (all ? n != 0 : (n == 0 || n > RM_SPOOL_RCPT_MAX || idx == NULL))
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++)
		if (idx[i] >= RM_SPOOL_RCPT_MAX)
			return -EINVAL;
	return (ssize_t)(STATUS_FIXED_BYTES + 4 * (size_t)n);
}

static void wr_status_list(struct wr *w, bool all, const uint32_t *idx, uint32_t n)
{
	wr_u32(w, all ? RM_SPOOL_STATUS_ALL : 0);
	wr_u32(w, n);
	for (uint32_t i = 0; i < n; i++)
		wr_u32(w, idx[i]);
}

static bool text_valid(struct rm_spool_str s)
{
	return s.len <= RM_SPOOL_TEXT_MAX && (s.len == 0 || s.ptr != NULL);
}

ssize_t rm_spool_encode_delivered(uint8_t *buf, size_t cap, uint64_t qid, bool all,
				  const uint32_t *idx, uint32_t n)
{
	ssize_t list = status_list_bytes(all, idx, n);

	if (list < 0)
		return list;
	uint8_t *payload = record_open(buf, cap, RM_SPOOL_DELIVERED, qid, (size_t)list);
	struct wr w = { payload };

	if (payload == NULL)
		return -ENOSPC;
	wr_status_list(&w, all, idx, n);
	RM_ASSERT(w.p == payload + list);
	return record_seal(buf, (size_t)list);
}

ssize_t rm_spool_encode_bounced(uint8_t *buf, size_t cap, uint64_t qid, bool all,
				const uint32_t *idx, uint32_t n, struct rm_spool_str reason)
{
	ssize_t list = status_list_bytes(all, idx, n);

	if (list < 0 || !text_valid(reason))
		return -EINVAL;
	size_t plen = (size_t)list + 2 + reason.len;
	uint8_t *payload = record_open(buf, cap, RM_SPOOL_BOUNCED, qid, plen);
	struct wr w = { payload };

	if (payload == NULL)
		return -ENOSPC;
	wr_status_list(&w, all, idx, n);
	wr_str(&w, reason);
	RM_ASSERT(w.p == payload + plen);
	return record_seal(buf, plen);
}

ssize_t rm_spool_encode_deferred(uint8_t *buf, size_t cap, uint64_t qid,
				 uint64_t next_attempt_unix_ms, uint32_t attempts, bool all,
				 const uint32_t *idx, uint32_t n, struct rm_spool_str last_error)
{
	ssize_t list = status_list_bytes(all, idx, n);

	if (list < 0 || !text_valid(last_error))
		return -EINVAL;
	size_t plen = DEFERRED_EXTRA_BYTES + (size_t)list + 2 + last_error.len;
	uint8_t *payload = record_open(buf, cap, RM_SPOOL_DEFERRED, qid, plen);
	struct wr w = { payload };

	if (payload == NULL)
		return -ENOSPC;
	wr_u64(&w, next_attempt_unix_ms);
	wr_u32(&w, attempts);
	wr_status_list(&w, all, idx, n);
	wr_str(&w, last_error);
	RM_ASSERT(w.p == payload + plen);
	return record_seal(buf, plen);
}

ssize_t rm_spool_encode_mark(uint8_t *buf, size_t cap, enum rm_spool_type type, uint64_t qid)
{
	if (type != RM_SPOOL_ABORT && type != RM_SPOOL_DELETED && type != RM_SPOOL_HOLD &&
	    type != RM_SPOOL_RELEASE)
		return -EINVAL;
	if (record_open(buf, cap, type, qid, 0) == NULL)
		return -ENOSPC;
	return record_seal(buf, 0);
}

/* --- decoding ------------------------------------------------------------------- */

const char *rm_spool_type_name(enum rm_spool_type type)
{
	switch (type) {
	case RM_SPOOL_BEGIN: return "BEGIN";
	case RM_SPOOL_RCPT: return "RCPT";
	case RM_SPOOL_DATA: return "DATA";
	case RM_SPOOL_END: return "END";
	case RM_SPOOL_ABORT: return "ABORT";
	case RM_SPOOL_DELIVERED: return "DELIVERED";
	case RM_SPOOL_BOUNCED: return "BOUNCED";
	case RM_SPOOL_DEFERRED: return "DEFERRED";
	case RM_SPOOL_DELETED: return "DELETED";
	case RM_SPOOL_HOLD: return "HOLD";
	case RM_SPOOL_RELEASE: return "RELEASE";
	}
	return "unknown";
}

/* Possible payload lengths per type; false for an unknown type. */
static bool payload_bounds(unsigned type, uint32_t *min, uint32_t *max)
{
	const uint32_t list_max = STATUS_FIXED_BYTES + 4 * RM_SPOOL_RCPT_MAX;

	switch (type) {
	case RM_SPOOL_BEGIN:
		*min = BEGIN_FIXED_BYTES + BEGIN_STRS * 2 + RCPT_MIN_BYTES;
		*max = RM_SPOOL_PAYLOAD_MAX;
		return true;
	case RM_SPOOL_RCPT:
		*min = RCPT_FIXED_BYTES + RCPT_MIN_BYTES;
		*max = RM_SPOOL_PAYLOAD_MAX;
		return true;
	case RM_SPOOL_DATA:
		*min = 0;
		*max = RM_SPOOL_PAYLOAD_MAX;
		return true;
	case RM_SPOOL_END:
		*min = *max = 16;
		return true;
	case RM_SPOOL_ABORT:
	case RM_SPOOL_DELETED:
	case RM_SPOOL_HOLD:
	case RM_SPOOL_RELEASE:
		*min = *max = 0;
		return true;
	case RM_SPOOL_DELIVERED:
		*min = STATUS_FIXED_BYTES;
		*max = list_max;
		return true;
	case RM_SPOOL_BOUNCED:
		*min = STATUS_FIXED_BYTES + 2;
		*max = list_max + 2 + RM_SPOOL_TEXT_MAX;
		return true;
	case RM_SPOOL_DEFERRED:
		*min = DEFERRED_EXTRA_BYTES + STATUS_FIXED_BYTES + 2;
		*max = DEFERRED_EXTRA_BYTES + list_max + 2 + RM_SPOOL_TEXT_MAX;
		return true;
	default:
		return false;
	}
}

/* Walks n encoded recipients; true when all are valid and end exactly at r->end. */
static bool rcpts_check(struct rd *r, uint32_t n)
{
	for (uint32_t i = 0; i < n && r->ok; i++) {
		uint8_t notify = rd_u8(r);
		struct rm_spool_str addr = rd_str(r, RM_SPOOL_FIELD_MAX);

		rd_str(r, RM_SPOOL_FIELD_MAX);
		if ((notify & ~RM_SPOOL_NOTIFY_MASK) != 0 || addr.len == 0)
			r->ok = false;
	}
	return r->ok && r->p == r->end;
}

static bool parse_begin(struct rd *r, struct rm_spool_record *out)
{
	struct rm_spool_envelope *env = &out->u.begin.env;

	env->received_unix_ms = rd_u64(r);
	env->size_declared_bytes = rd_u64(r);
	env->body_type = rd_u8(r);
	env->ret = rd_u8(r);
	uint8_t flags = rd_u8(r);
	uint8_t zero = rd_u8(r);

	env->smtputf8 = (flags & 1) != 0;
	out->u.begin.rcpt_total = rd_u32(r);
	out->u.begin.rcpt_count = rd_u32(r);
	env->reverse_path = rd_str(r, RM_SPOOL_FIELD_MAX);
	env->envid = rd_str(r, RM_SPOOL_FIELD_MAX);
	env->client_addr = rd_str(r, RM_SPOOL_FIELD_MAX);
	env->helo = rd_str(r, RM_SPOOL_FIELD_MAX);
	env->auth_user = rd_str(r, RM_SPOOL_FIELD_MAX);
	out->u.begin.rcpts = r->p;
	out->u.begin.rcpts_len = (size_t)(r->end - r->p);
	if (!r->ok || env->body_type > RM_SPOOL_BODY_LAST || env->ret > RM_SPOOL_RET_LAST ||
	    (flags & ~1u) != 0 || zero != 0)
		return false;
	uint32_t total = out->u.begin.rcpt_total, n = out->u.begin.rcpt_count;

	if (total == 0 || total > RM_SPOOL_RCPT_MAX || n == 0 || n > total)
		return false;
	return rcpts_check(r, n);
}

static bool parse_rcpt(struct rd *r, struct rm_spool_record *out)
{
	uint32_t first = rd_u32(r), n = rd_u32(r);

	out->u.rcpt.first = first;
	out->u.rcpt.rcpt_count = n;
	out->u.rcpt.rcpts = r->p;
	out->u.rcpt.rcpts_len = (size_t)(r->end - r->p);
	if (!r->ok || first == 0 || n == 0 || first > RM_SPOOL_RCPT_MAX || n > RM_SPOOL_RCPT_MAX - first)
		return false;
	return rcpts_check(r, n);
}

static bool parse_status(struct rd *r, struct rm_spool_record *out)
{
	enum rm_spool_type type = out->type;

	if (type == RM_SPOOL_DEFERRED) {
		out->u.status.next_attempt_unix_ms = rd_u64(r);
		out->u.status.attempts = rd_u32(r);
	}
	uint32_t flags = rd_u32(r), n = rd_u32(r);

	if (!r->ok || (flags & ~RM_SPOOL_STATUS_ALL) != 0 || n > RM_SPOOL_RCPT_MAX)
		return false;
	out->u.status.all = (flags & RM_SPOOL_STATUS_ALL) != 0;
	if (out->u.status.all ? n != 0 : n == 0)
		return false;
	out->u.status.index_count = n;
	out->u.status.index_le = r->p;
	if (!rd_take(r, 4 * (size_t)n))
		return false;
	for (uint32_t i = 0; i < n; i++)
		if (get_u32(r->p + 4 * (size_t)i) >= RM_SPOOL_RCPT_MAX)
			return false;
	r->p += 4 * (size_t)n;
	if (type != RM_SPOOL_DELIVERED)
		out->u.status.text = rd_str(r, RM_SPOOL_TEXT_MAX);
	return r->ok && r->p == r->end;
}

static enum rm_spool_result decode_fail(struct rm_spool_record *out, enum rm_spool_result res,
					const char *why)
{
	out->why = why;
	return res;
}

enum rm_spool_result rm_spool_decode(const uint8_t *buf, size_t len, struct rm_spool_record *out)
{
	uint32_t min = 0, max = 0;

	RM_ASSERT(out != NULL && (buf != NULL || len == 0));
	memset(out, 0, sizeof(*out));
	/* Check each header field as soon as its bytes are there: garbage is BAD early. */
	size_t magic_len = len < RM_SPOOL_RECORD_MAGIC_BYTES ? len : RM_SPOOL_RECORD_MAGIC_BYTES;

	if (magic_len > 0 && memcmp(buf, RM_SPOOL_RECORD_MAGIC, magic_len) != 0)
		return decode_fail(out, RM_SPOOL_BAD, "bad record magic");
	if (len > 4 && !payload_bounds(buf[4], &min, &max))
		return decode_fail(out, RM_SPOOL_BAD, "unknown record type");
	if ((len > 5 && buf[5] != 0) || (len > 6 && buf[6] != 0) || (len > 7 && buf[7] != 0))
		return decode_fail(out, RM_SPOOL_BAD, "nonzero flags or reserved bits");
	if (len >= 12) {
		uint32_t plen = get_u32(buf + 8);

		if (plen < min || plen > max)
			return decode_fail(out, RM_SPOOL_BAD, "impossible payload length");
	}
	if (len < RM_SPOOL_HEADER_BYTES)
		return decode_fail(out, RM_SPOOL_NEED_MORE, "record header cut short");

	out->type = (enum rm_spool_type)buf[4];
	out->payload_len = get_u32(buf + 8);
	out->qid = get_u64(buf + 12);
	out->payload = buf + RM_SPOOL_HEADER_BYTES;
	out->record_bytes = RM_SPOOL_RECORD_BYTES(out->payload_len);
	if (len < out->record_bytes)
		return decode_fail(out, RM_SPOOL_NEED_MORE, "record cut short");
	uint64_t sum = XXH3_64bits_withSeed(out->payload, out->payload_len, header_seed(buf));

	if (get_u64(out->payload + out->payload_len) != sum)
		return decode_fail(out, RM_SPOOL_BAD, "record checksum mismatch");

	struct rd r = { out->payload, out->payload + out->payload_len, true };
	bool ok = true;

	switch (out->type) {
	case RM_SPOOL_BEGIN:
		ok = parse_begin(&r, out);
		break;
	case RM_SPOOL_RCPT:
		ok = parse_rcpt(&r, out);
		break;
	case RM_SPOOL_END:
		out->u.end.content_bytes = rd_u64(&r);
		out->u.end.content_xxh3 = rd_u64(&r);
		ok = r.ok;
		break;
	case RM_SPOOL_DELIVERED:
	case RM_SPOOL_BOUNCED:
	case RM_SPOOL_DEFERRED:
		ok = parse_status(&r, out);
		break;
	case RM_SPOOL_DATA:
	case RM_SPOOL_ABORT:
	case RM_SPOOL_DELETED:
	case RM_SPOOL_HOLD:
	case RM_SPOOL_RELEASE:
		break;	/* lengths were checked against payload_bounds */
	}
	if (!ok)
		return decode_fail(out, RM_SPOOL_BAD, "malformed payload");
	return RM_SPOOL_OK;
}

void rm_spool_rcpt_iter_init(struct rm_spool_rcpt_iter *it, const struct rm_spool_record *rec)
{
	RM_ASSERT(rec->type == RM_SPOOL_BEGIN || rec->type == RM_SPOOL_RCPT);
	if (rec->type == RM_SPOOL_BEGIN) {
		it->p = rec->u.begin.rcpts;
		it->end = it->p + rec->u.begin.rcpts_len;
		it->left = rec->u.begin.rcpt_count;
	} else {
		it->p = rec->u.rcpt.rcpts;
		it->end = it->p + rec->u.rcpt.rcpts_len;
		it->left = rec->u.rcpt.rcpt_count;
	}
}

bool rm_spool_rcpt_next(struct rm_spool_rcpt_iter *it, struct rm_spool_rcpt *out)
{
	if (it->left == 0)
		return false;
	struct rd r = { it->p, it->end, true };

	out->notify = rd_u8(&r);
	out->addr = rd_str(&r, RM_SPOOL_FIELD_MAX);
	out->orcpt = rd_str(&r, RM_SPOOL_FIELD_MAX);
	/* rm_spool_decode walked these bytes already: a failure here is a bug. */
	RM_ASSERT(r.ok);
	it->p = r.p;
	it->left--;
	return true;
}

uint32_t rm_spool_status_index(const struct rm_spool_record *rec, uint32_t i)
{
	RM_ASSERT(rec->type == RM_SPOOL_DELIVERED || rec->type == RM_SPOOL_BOUNCED ||
		  rec->type == RM_SPOOL_DEFERRED);
	RM_ASSERT(i < rec->u.status.index_count);
	return get_u32(rec->u.status.index_le + 4 * (size_t)i);
}
