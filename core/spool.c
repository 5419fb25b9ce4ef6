/*
 * NAME
 *	spool - group-commit writer, recovery and queue of one worker's spool
 * DESCRIPTION
 *	See core/spool.h for the contract.  The pieces, in the order a message
 *	meets them:
 *
 *	Buffers.  Two staging buffers (struct stage), each destined for one
 *	segment at a known file offset.  `fill` takes records; `flight` is
 *	being written (linked writes of at most FLIGHT_PIECE_BYTES at its file
 *	offset, then an fdatasync when it carries commits or status records).  Records are encoded in
 *	place; content is copied once, into an open DATA record that grows
 *	while the same message keeps appending and is closed (header,
 *	checksum, padding) by any other record or by sealing the buffer.  A
 *	record's file offset is therefore known when it is written into the
 *	buffer, and the content extents of a message are recorded as it goes.
 *
 *	Failure.  A failed or short write, or a failed fdatasync, ends the
 *	segment (its tail may be torn, and after a failed fdatasync the page
 *	cache may have dropped what we wrote: see the 2018 "fsyncgate"), bumps
 *	the epoch, fails every commit waiting in either buffer, discards the
 *	fill buffer, and makes every open message fail at its next call.  The
 *	next begin opens a new segment, at most once a second while that fails.
 *
 *	Segments are created synchronously (open, its blocks allocated with
 *	limits.spool_preallocate, header into the buffer, fsync of the file and
 *	the directory so that the new name is durable before any commit in it is
 *	acknowledged): once per spool.segment_bytes_max, off the hot path.  Deletion likewise (unlink, then fsync of the directory
 *	before the next one goes), oldest first.
 * DIAGNOSTICS
 *	Broken invariants panic; I/O errors are logged and reported to the
 *	sessions as -errno.
 */
#include "core/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/spool_recover.h"

#define NONE UINT32_MAX
/* A flight goes out in linked writes of at most this: on the benchmark VM a 4 MiB
 * buffered write was often 2-4x slower than 1 MiB ones (docs/BENCHMARKS.md). */
#define FLIGHT_PIECE_BYTES ((size_t)1 << 20)
#define SEGMENT_RETRY_MS 1000		/* a failing disk: try a new segment this often */
#define RECOVER_ROUNDS_MAX 24		/* doublings of a recovery limit */
#define HOP_BUCKETS 4096		/* next-hop hash; chains hold the rest */
#define NEXTHOP_MAX 256			/* a domain is at most 255 octets */

/* One (message, next hop) pair: the message is in that hop's list. */
struct rm_queue_hop_link {
	struct rm_queue_entry *e;
	struct rm_queue_hop *hop;
	struct rm_queue_hop_link *prev, *next;
};

struct rm_queue_hop {
	char *name;
	uint32_t messages;
	struct rm_queue_hop_link *head;
	struct rm_queue_hop *hash_next;
};

struct segment {
	uint64_t seq;
	int fd;
	uint64_t size_bytes;		/* written so far (acknowledged or not) */
	uint32_t live_first;		/* open or queued messages whose BEGIN is here */
	bool synced_any;		/* a write with a sync completed here: it may hold acknowledged records */
	uint64_t synced_bytes;		/* end of the last flight whose sync completed */
};

struct stage {
	uint8_t *buf;
	size_t cap, used;
	uint64_t seq;			/* destination segment */
	int fd;
	uint64_t file_off;		/* where buf[0] goes */
	struct rm_spool_msg *commits_head, *commits_tail;
	uint32_t commit_count;
	bool marks;			/* status records: need a sync, no callback */
	bool open_data;			/* the last record is an open DATA of open_msg */
	struct rm_spool_msg *open_msg;
	size_t open_hdr;		/* offset of that record's header */
	uint32_t open_len;
	/* in flight */
	unsigned ops_pending;
	int result;			/* first error of the writes or sync */
	const char *failed_op;		/* "write" or "fdatasync", for the log */
	size_t short_got, short_want;	/* a short write, for the log (want 0: none) */
	unsigned writes_done;		/* pieces of this flight completed (in order: linked) */
	bool synced;
};

struct rm_spool_msg {
	struct rm_spool *sp;
	uint64_t qid;
	uint32_t epoch;
	uint64_t bytes, size_max;
	uint64_t first_seq;
	struct rm_queue_entry *entry;	/* built at begin, queued at acknowledgement */
	rm_spool_room_fn room;
	void *room_arg;
	struct rm_spool_msg *next_wait;
	rm_spool_commit_fn done;
	void *done_arg;
	struct rm_spool_msg *next_commit;
	bool waiting, committing;
	XXH3_state_t hash;
};

struct waiter {
	rm_spool_room_fn room;
	void *arg;
};

struct rm_spool {
	struct rm_worker *w;
	unsigned worker;
	struct rm_limits limits;	/* at open: resizing the spool needs a restart */
	char dir[300];
	int dir_fd;
	struct stage stages[2];
	struct stage *fill, *flight;	/* flight NULL: nothing in the kernel */
	uint32_t epoch;
	bool need_segment;		/* the current one ended: open a new one at next need */
	bool completing;		/* acknowledging a flight: no new submission yet */
	uint64_t segment_retry_ms;
	int last_error;
	uint64_t next_seq;
	struct segment *segs;		/* oldest first, segs_count of segments_max */
	uint32_t segs_first, segs_count;
	struct rm_queue_id_gen ids;
	uint32_t receiving;
	struct rm_spool_msg *wait_head, *wait_tail;	/* appenders waiting for room */
	struct waiter *begin_waiters;	/* receiving_max of them */
	struct waiter *begin_waiters_spare;	/* swapped in while the others are called */
	uint32_t begin_wait_count;
	struct rm_worker_timer commit_timer;
	/* status records that found both buffers busy, oldest first (see put_status) */
	struct pending_mark *marks_head, *marks_tail;
	uint32_t marks_pending;
	/* queue */
	struct rm_queue_entry **hash;
	uint32_t hash_mask;
	uint32_t queued;
	struct rm_queue_entry **heap;	/* due index, min next_attempt */
	uint32_t heap_count;
	struct rm_queue_hop **hops;	/* next-hop index, HOP_BUCKETS chains */
	struct rm_spool_stats stats;
};

/* Set by each worker for itself; worker 0's control socket reads the others'
 * counters through these pointers (relaxed atomics only). */
static _Atomic(struct rm_spool *) spools[RM_WORKERS_MAX];

struct rm_spool *rm_spool_of(const struct rm_worker *w)
{
	return atomic_load_explicit(&spools[rm_worker_index(w)], memory_order_acquire);
}

const struct rm_spool_stats *rm_spool_stats(const struct rm_spool *sp)
{
	return &sp->stats;
}

static uint64_t unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n == 0 ? 1 : n, size);

	if (p == NULL)
		rm_panic("spool: out of memory (%zu x %zu bytes)", n, size);
	return p;
}

static char *xstrndup(const char *s, size_t len)
{
	char *p = xcalloc(len + 1, 1);

	if (len > 0)
		memcpy(p, s, len);
	return p;
}

static void stat_set(_Atomic uint64_t *f, uint64_t v)
{
	atomic_store_explicit(f, v, memory_order_relaxed);
}

static void stat_add(_Atomic uint64_t *f, uint64_t v)
{
	atomic_fetch_add_explicit(f, v, memory_order_relaxed);
}

/* ---- segments ------------------------------------------------------------------- */

static struct segment *seg_at(struct rm_spool *sp, uint32_t i)
{
	return &sp->segs[(sp->segs_first + i) % sp->limits.spool_segments_max];
}

static struct segment *seg_find(struct rm_spool *sp, uint64_t seq)
{
	for (uint32_t i = 0; i < sp->segs_count; i++) {
		struct segment *s = seg_at(sp, i);

		if (s->seq == seq)
			return s;
	}
	return NULL;
}

static void seg_name(const struct rm_spool *sp, uint64_t seq, char *out, size_t size)
{
	snprintf(out, size, "%s/%016llx.seg", sp->dir, (unsigned long long)seq);
}

/*
 * Open a new segment file and start the fill buffer on it with the segment
 * header.  Synchronous, once per segment_bytes_max: see the file comment.
 */
static int seg_create(struct rm_spool *sp)
{
	struct stage *f = sp->fill;
	struct rm_spool_segment hdr = { .version = RM_SPOOL_VERSION, .worker = sp->worker };
	char path[340];
	struct segment *s;
	int fd;

	RM_ASSERT(f->used == 0 && f->commit_count == 0);
	if (sp->segs_count == sp->limits.spool_segments_max) {
		rm_warn(0, "spool %s: %u segments kept (limits.spool_segments_max); refusing new mail",
			sp->dir, sp->segs_count);
		return -EMLINK;
	}
	hdr.seq = sp->next_seq;
	hdr.created_unix_ms = unix_ms();
	seg_name(sp, hdr.seq, path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		int err = -errno;

		rm_error(0, "spool: cannot create %s: %s", path, strerror(errno));
		return err;
	}
	/*
	 * The whole segment's blocks now, the size with them: an fdatasync after
	 * an append must also commit the new file size (an ext4 journal commit);
	 * one inside allocated space commits much less (docs/BENCHMARKS.md: about a
	 * quarter off each sync here).  Recovery reads the unwritten rest as a zero
	 * tail.  A file system without fallocate just appends.
	 */
	if (sp->limits.spool_preallocate &&
	    fallocate(fd, 0, 0, (off_t)sp->limits.spool_segment_bytes_max) < 0 && errno != EOPNOTSUPP)
		rm_debug(0, "spool: fallocate %s: %s", path, strerror(errno));
	if (fsync(fd) < 0 || fsync(sp->dir_fd) < 0) {
		int err = -errno;

		rm_error(0, "spool: fsync of %s: %s", sp->dir, strerror(errno));
		close(fd);
		unlink(path);
		return err;
	}
	sp->next_seq++;
	s = seg_at(sp, sp->segs_count++);
	s->seq = hdr.seq;
	s->fd = fd;
	s->size_bytes = 0;
	s->live_first = 0;
	s->synced_any = false;
	s->synced_bytes = 0;
	f->seq = hdr.seq;
	f->fd = fd;
	f->file_off = 0;
	RM_ASSERT(rm_spool_encode_segment(f->buf, f->cap, &hdr) == RM_SPOOL_SEGMENT_HEADER_BYTES);
	f->used = RM_SPOOL_SEGMENT_HEADER_BYTES;
	sp->need_segment = false;
	stat_set(&sp->stats.segments, sp->segs_count);
	rm_info(0, "spool: segment %s started", path);
	return 0;
}

/* Delete the oldest segments that nothing queued or open began in or before. */
static void seg_collect(struct rm_spool *sp)
{
	for (uint32_t guard = 0; sp->segs_count > 1 && guard < sp->limits.spool_segments_max; guard++) {
		struct segment *s = seg_at(sp, 0);
		char path[340];

		if (s->live_first > 0 || s->seq == sp->fill->seq ||
		    (sp->flight != NULL && s->seq == sp->flight->seq))
			return;
		seg_name(sp, s->seq, path, sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT) {
			rm_warn(0, "spool: cannot delete %s: %s", path, strerror(errno));
			return;
		}
		/* The deletion is durable before a newer segment can go. */
		if (fsync(sp->dir_fd) < 0)
			rm_warn(0, "spool: fsync of %s: %s", sp->dir, strerror(errno));
		if (s->fd >= 0)
			close(s->fd);
		rm_debug(0, "spool: segment %s deleted: every message in it is final", path);
		sp->segs_first = (sp->segs_first + 1) % sp->limits.spool_segments_max;
		sp->segs_count--;
		stat_set(&sp->stats.segments, sp->segs_count);
	}
}

static void seg_release(struct rm_spool *sp, uint64_t first_seq)
{
	struct segment *s = seg_find(sp, first_seq);

	/* Gone: a segment that failed before anything in it was durable (seg_discard). */
	if (s == NULL)
		return;
	RM_ASSERT(s->live_first > 0);
	s->live_first--;
}

/*
 * The newest segment failed before any sync in it completed: nothing in it
 * was ever acknowledged, so it goes at once, out of order.  Without this a
 * full disk would leave one useless file per retry.
 */
static void seg_discard(struct rm_spool *sp, uint64_t seq)
{
	struct segment *s = sp->segs_count ? seg_at(sp, sp->segs_count - 1) : NULL;
	char path[340];

	if (s == NULL || s->seq != seq || s->synced_any)
		return;
	seg_name(sp, seq, path, sizeof(path));
	if (unlink(path) < 0 && errno != ENOENT) {
		rm_warn(0, "spool: cannot delete %s: %s", path, strerror(errno));
		return;
	}
	close(s->fd);
	sp->segs_count--;
	stat_set(&sp->stats.segments, sp->segs_count);
}

/* ---- the queue ---------------------------------------------------------------------- */

static uint32_t qid_bucket(const struct rm_spool *sp, uint64_t qid)
{
	return (uint32_t)(XXH3_64bits(&qid, sizeof(qid)) & sp->hash_mask);
}

static bool heap_less(const struct rm_queue_entry *a, const struct rm_queue_entry *b)
{
	if (a->next_attempt_unix_ms != b->next_attempt_unix_ms)
		return a->next_attempt_unix_ms < b->next_attempt_unix_ms;
	return a->qid < b->qid;
}

static void heap_swap(struct rm_spool *sp, uint32_t i, uint32_t j)
{
	struct rm_queue_entry *t = sp->heap[i];

	sp->heap[i] = sp->heap[j];
	sp->heap[j] = t;
	sp->heap[i]->heap_index = i;
	sp->heap[j]->heap_index = j;
}

static void heap_up(struct rm_spool *sp, uint32_t i)
{
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;

		if (!heap_less(sp->heap[i], sp->heap[parent]))
			break;
		heap_swap(sp, i, parent);
		i = parent;
	}
}

static void heap_down(struct rm_spool *sp, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < sp->heap_count && heap_less(sp->heap[l], sp->heap[m]))
			m = l;
		if (r < sp->heap_count && heap_less(sp->heap[r], sp->heap[m]))
			m = r;
		if (m == i)
			break;
		heap_swap(sp, i, m);
		i = m;
	}
}

static void heap_insert(struct rm_spool *sp, struct rm_queue_entry *e)
{
	if (e->heap_index != NONE || e->hold || e->in_delivery)
		return;
	RM_ASSERT(sp->heap_count < sp->limits.spool_messages_max);
	e->heap_index = sp->heap_count;
	sp->heap[sp->heap_count++] = e;
	heap_up(sp, e->heap_index);
}

static void heap_remove(struct rm_spool *sp, struct rm_queue_entry *e)
{
	uint32_t i = e->heap_index;

	if (i == NONE)
		return;
	e->heap_index = NONE;
	if (--sp->heap_count == i)
		return;
	sp->heap[i] = sp->heap[sp->heap_count];
	sp->heap[i]->heap_index = i;
	heap_down(sp, i);
	heap_up(sp, sp->heap[i]->heap_index);
}

void rm_queue_nexthop_of(const char *addr, char *out, size_t size)
{
	const char *at = strrchr(addr, '@');
	const char *d = at != NULL ? at + 1 : "";
	size_t n = strlen(d);

	RM_ASSERT(size > 0);
	if (n > 0 && d[n - 1] == '.')
		n--;
	if (n >= size)
		n = size - 1;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)(d[i] >= 'A' && d[i] <= 'Z' ? d[i] + ('a' - 'A') : d[i]);
	out[n] = '\0';
}

static uint32_t hop_bucket(const char *name)
{
	return (uint32_t)(XXH3_64bits(name, strlen(name)) % HOP_BUCKETS);
}

static struct rm_queue_hop *hop_find(struct rm_spool *sp, const char *name)
{
	for (struct rm_queue_hop *h = sp->hops[hop_bucket(name)]; h != NULL; h = h->hash_next)
		if (strcmp(h->name, name) == 0)
			return h;
	return NULL;
}

static void hops_unlink(struct rm_spool *sp, struct rm_queue_entry *e)
{
	for (uint32_t i = 0; i < e->hop_count; i++) {
		struct rm_queue_hop_link *l = &e->hops[i];
		struct rm_queue_hop *h = l->hop;

		if (l->prev != NULL)
			l->prev->next = l->next;
		else
			h->head = l->next;
		if (l->next != NULL)
			l->next->prev = l->prev;
		if (--h->messages == 0) {
			struct rm_queue_hop **pp = &sp->hops[hop_bucket(h->name)];

			while (*pp != h)
				pp = &(*pp)->hash_next;
			*pp = h->hash_next;
			free(h->name);
			free(h);
		}
	}
	free(e->hops);
	e->hops = NULL;
	e->hop_count = 0;
}

/* List the message under each distinct next hop of its pending recipients. */
static void hops_link(struct rm_spool *sp, struct rm_queue_entry *e)
{
	char name[NEXTHOP_MAX];

	RM_ASSERT(e->hop_count == 0);
	e->hops = xcalloc(e->rcpt_pending, sizeof(*e->hops));
	for (uint32_t i = 0; i < e->rcpt_total; i++) {
		struct rm_queue_hop *h;
		bool seen = false;

		if (e->rcpts[i].state != RM_RCPT_PENDING)
			continue;
		rm_queue_nexthop_of(e->rcpts[i].addr, name, sizeof(name));
		h = hop_find(sp, name);
		for (uint32_t k = 0; k < e->hop_count && !seen; k++)
			seen = e->hops[k].hop == h;
		if (seen)
			continue;
		if (h == NULL) {
			uint32_t b = hop_bucket(name);

			h = xcalloc(1, sizeof(*h));
			h->name = xstrndup(name, strlen(name));
			h->hash_next = sp->hops[b];
			sp->hops[b] = h;
		}
		struct rm_queue_hop_link *l = &e->hops[e->hop_count++];

		l->e = e;
		l->hop = h;
		l->prev = NULL;
		l->next = h->head;
		if (h->head != NULL)
			h->head->prev = l;
		h->head = l;
		h->messages++;
	}
}

uint32_t rm_queue_hop_messages(struct rm_spool *sp, const char *nexthop)
{
	struct rm_queue_hop *h = hop_find(sp, nexthop);

	return h != NULL ? h->messages : 0;
}

struct rm_queue_entry *rm_queue_next_due_at(struct rm_spool *sp, const char *nexthop, uint64_t now_unix_ms)
{
	struct rm_queue_hop *h = hop_find(sp, nexthop);
	struct rm_queue_entry *best = NULL;

	/* Linear in the messages of this hop: bounded by spool_messages_max. */
	for (struct rm_queue_hop_link *l = h != NULL ? h->head : NULL; l != NULL; l = l->next) {
		struct rm_queue_entry *e = l->e;

		if (e->heap_index == NONE || e->next_attempt_unix_ms > now_unix_ms)
			continue;	/* held, in delivery, or not due */
		if (best == NULL || heap_less(e, best))
			best = e;
	}
	if (best != NULL) {
		heap_remove(sp, best);
		best->in_delivery = true;
	}
	return best;
}

void rm_queue_hop_walk(struct rm_spool *sp, bool (*visit)(const char *nexthop, uint32_t messages, void *arg),
		       void *arg)
{
	for (uint32_t b = 0; b < HOP_BUCKETS; b++)
		for (struct rm_queue_hop *h = sp->hops[b]; h != NULL; h = h->hash_next)
			if (!visit(h->name, h->messages, arg))
				return;
}

static void queue_insert(struct rm_spool *sp, struct rm_queue_entry *e)
{
	uint32_t b = qid_bucket(sp, e->qid);

	e->hash_next = sp->hash[b];
	sp->hash[b] = e;
	e->heap_index = NONE;
	sp->queued++;
	stat_set(&sp->stats.queued, sp->queued);
	heap_insert(sp, e);
	hops_link(sp, e);
}

struct rm_queue_entry *rm_queue_find(struct rm_spool *sp, uint64_t qid)
{
	for (struct rm_queue_entry *e = sp->hash[qid_bucket(sp, qid)]; e != NULL; e = e->hash_next)
		if (e->qid == qid)
			return e;
	return NULL;
}

uint32_t rm_queue_count(const struct rm_spool *sp)
{
	return sp->queued;
}

static void entry_free(struct rm_queue_entry *e)
{
	if (e == NULL)
		return;
	for (uint32_t i = 0; i < e->rcpt_total && e->rcpts != NULL; i++) {
		free(e->rcpts[i].addr);
		free(e->rcpts[i].orcpt);
	}
	free(e->rcpts);
	free(e->sender);
	free(e->envid);
	free(e->last_error);
	free(e->content);
	free(e->hops);
	free(e);
}

/* The message is final: out of the queue, and its BEGIN segment may go. */
static void queue_remove(struct rm_spool *sp, struct rm_queue_entry *e)
{
	struct rm_queue_entry **pp = &sp->hash[qid_bucket(sp, e->qid)];

	for (uint32_t guard = 0; *pp != NULL && guard <= sp->queued; guard++, pp = &(*pp)->hash_next) {
		if (*pp == e) {
			*pp = e->hash_next;
			break;
		}
	}
	heap_remove(sp, e);
	hops_unlink(sp, e);
	RM_ASSERT(sp->queued > 0);
	sp->queued--;
	stat_set(&sp->stats.queued, sp->queued);
	seg_release(sp, e->first_seq);
	entry_free(e);
	seg_collect(sp);
}

struct rm_queue_entry *rm_queue_next_due(struct rm_spool *sp, uint64_t now_unix_ms)
{
	struct rm_queue_entry *e;

	if (sp->heap_count == 0 || sp->heap[0]->next_attempt_unix_ms > now_unix_ms)
		return NULL;
	e = sp->heap[0];
	heap_remove(sp, e);
	e->in_delivery = true;
	return e;
}

void rm_queue_walk(struct rm_spool *sp, bool (*visit)(const struct rm_queue_entry *e, void *arg), void *arg)
{
	for (uint32_t b = 0; b <= sp->hash_mask; b++)
		for (const struct rm_queue_entry *e = sp->hash[b]; e != NULL; e = e->hash_next)
			if (!visit(e, arg))
				return;
}

static bool flush_one(struct rm_spool *sp, struct rm_queue_entry *e, uint64_t now_unix_ms)
{
	if (e->hold || e->in_delivery || e->next_attempt_unix_ms <= now_unix_ms)
		return false;
	e->next_attempt_unix_ms = now_unix_ms;
	if (e->heap_index != NONE)
		heap_up(sp, e->heap_index);
	return true;
}

uint32_t rm_queue_flush(struct rm_spool *sp, const char *domain, uint64_t now_unix_ms)
{
	uint32_t n = 0;

	if (domain != NULL) {
		char name[NEXTHOP_MAX];
		char at_name[NEXTHOP_MAX + 1];
		struct rm_queue_hop *h;

		snprintf(at_name, sizeof(at_name), "@%s", domain);
		rm_queue_nexthop_of(at_name, name, sizeof(name));
		h = hop_find(sp, name);
		for (struct rm_queue_hop_link *l = h != NULL ? h->head : NULL; l != NULL; l = l->next)
			n += flush_one(sp, l->e, now_unix_ms);
		return n;
	}
	for (uint32_t b = 0; b <= sp->hash_mask; b++)
		for (struct rm_queue_entry *e = sp->hash[b]; e != NULL; e = e->hash_next)
			n += flush_one(sp, e, now_unix_ms);
	return n;
}

/* ---- buffers -------------------------------------------------------------------------- */

static void close_data(struct rm_spool *sp, struct stage *f)
{
	uint8_t *hdr;
	uint64_t sum;
	size_t trailer;

	if (!f->open_data)
		return;
	hdr = f->buf + f->open_hdr;
	rm_spool_data_header(hdr, f->open_msg->qid, f->open_len);
	sum = rm_spool_data_checksum(hdr, hdr + RM_SPOOL_HEADER_BYTES, f->open_len);
	trailer = rm_spool_data_trailer_hash(hdr + RM_SPOOL_HEADER_BYTES + f->open_len, sum, f->open_len);
	f->used = f->open_hdr + RM_SPOOL_HEADER_BYTES + f->open_len + trailer;
	f->open_data = false;
	f->open_msg = NULL;
}

/*
 * Tell everyone who waited for room.  Both lists are detached first: a
 * callback that finds no room again waits on the new list, for the next
 * completion, instead of looping here.
 */
static void wake_waiters(struct rm_spool *sp)
{
	struct waiter *begin = sp->begin_waiters;
	uint32_t n = sp->begin_wait_count;
	struct rm_spool_msg *m = sp->wait_head;

	sp->begin_waiters = sp->begin_waiters_spare;
	sp->begin_waiters_spare = begin;
	sp->begin_wait_count = 0;
	sp->wait_head = sp->wait_tail = NULL;
	/* Appenders first: they hold messages already begun, which finish sooner. */
	for (uint32_t guard = 0; m != NULL && guard < sp->limits.spool_receiving_max; guard++) {
		struct rm_spool_msg *next = m->next_wait;

		m->waiting = false;
		m->room(m->room_arg);
		m = next;
	}
	for (uint32_t i = 0; i < n; i++)
		begin[i].room(begin[i].arg);
}

static void stage_reset(struct stage *f)
{
	f->used = 0;
	f->commits_head = f->commits_tail = NULL;
	f->commit_count = 0;
	f->marks = false;
	f->open_data = false;
	f->open_msg = NULL;
	f->ops_pending = 0;
	f->result = 0;
	f->failed_op = NULL;
	f->short_got = f->short_want = 0;
	f->writes_done = 0;
	f->synced = false;
}

static void flight_done(struct rm_spool *sp);
static void drain_marks(struct rm_spool *sp);

static void file_op_done(struct rm_spool *sp, int res, const char *op)
{
	struct stage *f = sp->flight;

	RM_ASSERT(f != NULL && f->ops_pending > 0);
	if (res < 0 && f->result == 0) {
		f->result = res;
		f->failed_op = op;
	}
	if (--f->ops_pending == 0)
		flight_done(sp);
}

static void on_sync_done(void *arg, int res)
{
	file_op_done(arg, res, "fdatasync");
}

static void on_write_done(void *arg, int res)
{
	struct rm_spool *sp = arg;
	struct stage *f = sp->flight;
	size_t at = (size_t)f->writes_done++ * FLIGHT_PIECE_BYTES;
	size_t want = f->used - at < FLIGHT_PIECE_BYTES ? f->used - at : FLIGHT_PIECE_BYTES;

	/* A short write breaks the link: the later pieces and the fdatasync are
	 * cancelled (-ECANCELED); the first failure is the one reported. */
	if (res >= 0 && (size_t)res != want) {
		if (f->result == 0) {
			f->short_got = (size_t)res;
			f->short_want = want;
		}
		res = -EIO;
	}
	file_op_done(sp, res, "write");
}

/* Start writing the fill buffer; it becomes the flight.  The other buffer is free. */
static void seal_and_submit(struct rm_spool *sp)
{
	struct stage *f = sp->fill;
	struct iovec iov;
	bool sync;

	RM_ASSERT(sp->flight == NULL && f->used > 0);
	close_data(sp, f);
	sync = f->commit_count > 0 || f->marks;
	unsigned pieces = (unsigned)((f->used + FLIGHT_PIECE_BYTES - 1) / FLIGHT_PIECE_BYTES);

	f->result = 0;
	f->synced = sync;
	f->writes_done = 0;
	f->ops_pending = pieces + (sync ? 1 : 0);
	sp->flight = f;
	/* Linked pieces, in order: one short piece cancels the rest and the sync. */
	for (unsigned i = 0; i < pieces; i++) {
		size_t at = (size_t)i * FLIGHT_PIECE_BYTES;

		iov.iov_base = f->buf + at;
		iov.iov_len = f->used - at < FLIGHT_PIECE_BYTES ? f->used - at : FLIGHT_PIECE_BYTES;
		if (rm_file_writev(sp->w, f->fd, &iov, 1, f->file_off + at, sync || i + 1 < pieces,
				   on_write_done, sp) < 0)
			rm_panic("spool: file operation pool full");	/* <= 257 of RM_FILE_OPS_MAX */
	}
	if (sync && rm_file_fdatasync(sp->w, f->fd, false, on_sync_done, sp) < 0)
		rm_panic("spool: file operation pool full");
	stat_add(&sp->stats.writes, 1);
	if (sync)
		stat_add(&sp->stats.syncs, 1);
	/* The other buffer continues the same segment right after this one. */
	struct stage *next = f == &sp->stages[0] ? &sp->stages[1] : &sp->stages[0];

	RM_ASSERT(next->used == 0 && next->ops_pending == 0);
	stage_reset(next);
	next->seq = f->seq;
	next->fd = f->fd;
	next->file_off = f->file_off + f->used;
	sp->fill = next;
	struct segment *s = seg_find(sp, f->seq);

	RM_ASSERT(s != NULL);
	s->size_bytes = next->file_off;
	if (next->file_off >= sp->limits.spool_segment_bytes_max || sp->need_segment)
		sp->need_segment = true;
}

static void fail_commits(struct rm_spool *sp, struct stage *f, int err);
static void ack(struct rm_spool *sp, struct rm_spool_msg *m);

/* Sync what waits in fill, if anything asks for it and nothing is in flight. */
static void kick(struct rm_spool *sp)
{
	struct stage *f = sp->fill;

	if (sp->flight != NULL || sp->completing || f->used == 0)
		return;
	if (f->commit_count == 0 && !f->marks)
		return;
	if (sp->limits.spool_commit_interval_ms > 0 && f->commit_count < sp->limits.spool_commit_batch_max &&
	    rm_timer_armed(&sp->commit_timer.timer))
		return;		/* the interval timer seals it */
	rm_worker_timer_cancel(sp->w, &sp->commit_timer);
	seal_and_submit(sp);
}

static void on_commit_timer(struct rm_worker *w, void *arg)
{
	struct rm_spool *sp = arg;

	kick(sp);
}

static void spool_failed(struct rm_spool *sp, struct stage *f, int err)
{
	sp->last_error = err;
	stat_add(&sp->stats.write_errors, 1);
	if (f->short_want != 0)
		rm_error(0, "spool: short write to segment %016llx (%zu of %zu bytes; disk full?); "
			 "nothing in it is acknowledged, new mail waits for a new segment",
			 (unsigned long long)f->seq, f->short_got, f->short_want);
	else
		rm_error(0, "spool: %s of segment %016llx failed: %s; nothing in it is acknowledged, "
			 "new mail waits for a new segment", f->failed_op ? f->failed_op : "write",
			 (unsigned long long)f->seq, strerror(-err));
	sp->epoch++;
	/* Before any callback runs: what a callback begins must wait for a new
	 * segment, not go into the fill buffer that is dropped below. */
	sp->need_segment = true;
	fail_commits(sp, f, err);
	fail_commits(sp, sp->fill, err);
	/* The fill buffer was to follow a possibly torn tail: drop it. */
	stage_reset(sp->fill);
	/* A segment that never synced failed at once: the disk is full or broken,
	 * so wait before the next try instead of making a file per message. */
	struct segment *s = seg_find(sp, f->seq);

	sp->segment_retry_ms = s != NULL && !s->synced_any ? rm_worker_now_ms(sp->w) + SEGMENT_RETRY_MS : 0;
	/* What follows the last completed sync was never acknowledged, but whole
	 * records of it (the messages just answered 452) would be recovered at
	 * the next start and delivered as well: cut them off (best effort). */
	if (s != NULL && s->synced_any && s->fd >= 0 && s->size_bytes > s->synced_bytes) {
		if (ftruncate(s->fd, (off_t)s->synced_bytes) < 0 || fdatasync(s->fd) < 0)
			rm_warn(0, "spool: cannot cut segment %016llx back to %llu bytes: %s; messages that "
				"failed may come back at the next start", (unsigned long long)s->seq,
				(unsigned long long)s->synced_bytes, strerror(errno));
		else
			s->size_bytes = s->synced_bytes;
	}
	seg_discard(sp, f->seq);
}

/*
 * The flight's write (and sync) completed: acknowledge or fail its commits.
 * Their callbacks may begin, append and commit other messages; `completing`
 * keeps those from submitting while this buffer is still being emptied.
 */
static void flight_done(struct rm_spool *sp)
{
	struct stage *f = sp->flight;
	int err = f->result;

	sp->flight = NULL;
	sp->completing = true;
	if (err != 0) {
		spool_failed(sp, f, err);
	} else {
		struct segment *s = seg_find(sp, f->seq);

		if (s != NULL && f->synced) {
			s->synced_any = true;
			s->synced_bytes = f->file_off + f->used;
		}
		stat_add(&sp->stats.bytes_written, f->used);
		for (uint32_t guard = 0; f->commits_head != NULL && guard <= f->commit_count; guard++) {
			struct rm_spool_msg *m = f->commits_head;

			f->commits_head = m->next_commit;
			ack(sp, m);
		}
	}
	stage_reset(f);
	sp->completing = false;
	drain_marks(sp);
	/* A full fill buffer goes out now even without commits: appenders wait for it. */
	if (sp->flight == NULL && sp->fill->used > 0 && (sp->fill->commit_count > 0 || sp->fill->marks ||
				   sp->fill->used + RM_SPOOL_RECORD_BYTES_MIN * 2 > sp->fill->cap ||
				   sp->wait_head != NULL))
		seal_and_submit(sp);
	seg_collect(sp);
	wake_waiters(sp);
}

/*
 * Make the fill buffer able to take `need` more bytes: seal it (if nothing is
 * in flight) and start a new segment when due.  0, -EAGAIN (wait for room),
 * or -errno when the spool cannot write.
 */
static int make_room(struct rm_spool *sp, size_t need)
{
	struct stage *f = sp->fill;

	RM_ASSERT(need + RM_SPOOL_SEGMENT_HEADER_BYTES <= f->cap);
	if (!sp->need_segment && f->used + need <= f->cap)
		return 0;
	if (sp->completing)
		return -EAGAIN;		/* flight_done seals and wakes the waiters */
	if (f->used > 0) {
		if (sp->flight != NULL)
			return -EAGAIN;
		seal_and_submit(sp);
		f = sp->fill;
	}
	if (sp->need_segment) {
		uint64_t now = rm_worker_now_ms(sp->w);
		int rc;

		if (sp->flight != NULL)
			return -EAGAIN;	/* the new segment's header goes after the flight completes */
		if (sp->segment_retry_ms > now)
			return sp->last_error != 0 ? sp->last_error : -EIO;
		rc = seg_create(sp);
		if (rc < 0) {
			sp->last_error = rc;
			sp->segment_retry_ms = now + SEGMENT_RETRY_MS;
			return rc;
		}
		sp->last_error = 0;
	}
	return f->used + need <= f->cap ? 0 : -EAGAIN;
}

/* ---- receiving ----------------------------------------------------------------------------- */

static void msg_free(struct rm_spool *sp, struct rm_spool_msg *m)
{
	RM_ASSERT(sp->receiving > 0);
	sp->receiving--;
	if (m->waiting) {
		struct rm_spool_msg *prev = NULL, *x = sp->wait_head;

		for (uint32_t guard = 0; x != NULL && guard < sp->limits.spool_receiving_max; guard++) {
			if (x == m) {
				if (prev != NULL)
					prev->next_wait = m->next_wait;
				else
					sp->wait_head = m->next_wait;
				if (sp->wait_tail == m)
					sp->wait_tail = prev;
				break;
			}
			prev = x;
			x = x->next_wait;
		}
	}
	if (sp->fill->open_msg == m)
		close_data(sp, sp->fill);
	entry_free(m->entry);
	free(m);
}

static void fail_commits(struct rm_spool *sp, struct stage *f, int err)
{
	for (uint32_t guard = 0; f->commits_head != NULL && guard <= f->commit_count; guard++) {
		struct rm_spool_msg *m = f->commits_head;

		f->commits_head = m->next_commit;
		stat_add(&sp->stats.commit_failed, 1);
		seg_release(sp, m->first_seq);
		m->done(m->done_arg, m->qid, err);
		msg_free(sp, m);
	}
	f->commits_tail = NULL;
	f->commit_count = 0;
}

static void ack(struct rm_spool *sp, struct rm_spool_msg *m)
{
	struct rm_queue_entry *e = m->entry;

	RM_ASSERT(m->epoch == sp->epoch);
	m->entry = NULL;
	e->size_bytes = m->bytes;
	e->content_xxh3 = XXH3_64bits_digest(&m->hash);
	queue_insert(sp, e);
	stat_add(&sp->stats.committed, 1);
	m->done(m->done_arg, m->qid, 0);
	msg_free(sp, m);
}

static int msg_state(const struct rm_spool_msg *m)
{
	if (m->epoch != m->sp->epoch)
		return m->sp->last_error != 0 ? m->sp->last_error : -EIO;
	return 0;
}

static void add_extent(struct rm_queue_entry *e, uint64_t seq, uint64_t off, uint32_t len)
{
	struct rm_spool_extent *last = e->content_count ? &e->content[e->content_count - 1] : NULL;

	if (last != NULL && last->seq == seq && last->offset + last->len == off) {
		last->len += len;	/* the same open DATA record grew */
		return;
	}
	if (e->content_count == e->content_cap) {
		uint32_t cap = e->content_cap ? e->content_cap * 2 : 4;
		struct rm_spool_extent *n = realloc(e->content, cap * sizeof(*n));

		if (n == NULL)
			rm_panic("spool: out of memory for extents");
		e->content = n;
		e->content_cap = cap;
	}
	RM_ASSERT(e->content != NULL && e->content_count < e->content_cap);
	e->content[e->content_count++] = (struct rm_spool_extent){ .seq = seq, .offset = off, .len = len };
}

/* What delivery relays of the envelope (RFC 3461: ENVID, RET; the body type; SMTPUTF8). */
static void entry_envelope(struct rm_queue_entry *e, const struct rm_spool_envelope *env)
{
	e->envid = xstrndup(env->envid.ptr, env->envid.len);
	e->size_declared_bytes = env->size_declared_bytes;
	e->body_type = env->body_type;
	e->ret = env->ret;
	e->smtputf8 = env->smtputf8;
}

static struct rm_queue_entry *entry_from_envelope(uint64_t qid, const struct rm_spool_envelope *env,
						  const struct rm_spool_rcpt *rcpts, uint32_t n)
{
	struct rm_queue_entry *e = xcalloc(1, sizeof(*e));

	e->qid = qid;
	e->received_unix_ms = env->received_unix_ms;
	e->sender = xstrndup(env->reverse_path.ptr, env->reverse_path.len);
	entry_envelope(e, env);
	e->last_error = xstrndup("", 0);
	e->rcpt_total = n;
	e->rcpt_pending = n;
	e->rcpts = xcalloc(n, sizeof(*e->rcpts));
	for (uint32_t i = 0; i < n; i++) {
		e->rcpts[i].addr = xstrndup(rcpts[i].addr.ptr, rcpts[i].addr.len);
		e->rcpts[i].orcpt = xstrndup(rcpts[i].orcpt.ptr, rcpts[i].orcpt.len);
		e->rcpts[i].notify = rcpts[i].notify;
	}
	e->heap_index = NONE;
	return e;
}

/* Encode BEGIN and RCPT records at the end of the fill buffer; false when they do not fit. */
static bool put_envelope(struct stage *f, uint64_t qid, const struct rm_spool_envelope *env,
			 const struct rm_spool_rcpt *rcpts, uint32_t n)
{
	size_t start = f->used;
	uint32_t done = rm_spool_begin_fit(env, rcpts, n);
	ssize_t len;

	RM_ASSERT(done >= 1);
	len = rm_spool_encode_begin(f->buf + f->used, f->cap - f->used, qid, env, n, rcpts, done);
	if (len < 0)
		goto rollback;
	f->used += (size_t)len;
	for (uint32_t guard = 0; done < n && guard < n; guard++) {
		uint32_t k = rm_spool_rcpt_fit(rcpts + done, n - done);

		RM_ASSERT(k >= 1);
		len = rm_spool_encode_rcpt(f->buf + f->used, f->cap - f->used, qid, done, rcpts + done, k);
		if (len < 0)
			goto rollback;
		f->used += (size_t)len;
		done += k;
	}
	return true;
rollback:
	f->used = start;
	return false;
}

int rm_spool_begin(struct rm_spool *sp, const struct rm_spool_envelope *env,
		   const struct rm_spool_rcpt *rcpts, uint32_t n, uint64_t size_max_bytes,
		   struct rm_spool_msg **out)
{
	struct rm_spool_msg *m;
	uint64_t qid;
	int rc;

	*out = NULL;
	if (n == 0 || n > RM_SPOOL_RCPT_MAX)
		return -EINVAL;
	if (sp->queued + sp->receiving >= sp->limits.spool_messages_max ||
	    sp->receiving + sp->begin_wait_count >= sp->limits.spool_receiving_max)
		return -EMLINK;
	close_data(sp, sp->fill);
	/* Two tries: the rest of the fill buffer, then an empty one. */
	for (int attempt = 0; ; attempt++) {
		rc = make_room(sp, RM_SPOOL_RECORD_BYTES_MIN * 2);
		if (rc < 0)
			return rc;
		qid = rm_queue_id_gen_next(&sp->ids, unix_ms());
		if (put_envelope(sp->fill, qid, env, rcpts, n))
			break;
		if (attempt == 1 || sp->fill->used == 0)
			return -EINVAL;		/* cannot fit an empty buffer: impossible by the limits */
		if (sp->flight != NULL || sp->completing)
			return -EAGAIN;
		seal_and_submit(sp);
	}
	m = xcalloc(1, sizeof(*m));
	m->sp = sp;
	m->qid = qid;
	m->epoch = sp->epoch;
	m->size_max = size_max_bytes;
	m->first_seq = sp->fill->seq;
	m->entry = entry_from_envelope(qid, env, rcpts, n);
	m->entry->first_seq = m->first_seq;
	XXH3_64bits_reset(&m->hash);
	seg_find(sp, m->first_seq)->live_first++;
	sp->receiving++;
	*out = m;
	return 0;
}

void rm_spool_wait_begin(struct rm_spool *sp, rm_spool_room_fn room, void *arg)
{
	RM_ASSERT(sp->begin_wait_count < sp->limits.spool_receiving_max);
	sp->begin_waiters[sp->begin_wait_count++] = (struct waiter){ room, arg };
}

uint64_t rm_spool_msg_qid(const struct rm_spool_msg *m)
{
	return m->qid;
}

uint64_t rm_spool_msg_bytes(const struct rm_spool_msg *m)
{
	return m->bytes;
}

ssize_t rm_spool_append(struct rm_spool_msg *m, const void *data, size_t len)
{
	struct rm_spool *sp = m->sp;
	const uint8_t *p = data;
	size_t taken = 0;
	int rc = msg_state(m);

	if (rc < 0)
		return rc;
	RM_ASSERT(!m->committing);
	if (m->bytes + len > m->size_max)
		return -EFBIG;
	for (uint32_t guard = 0; taken < len && guard < 64; guard++) {
		struct stage *f = sp->fill;
		size_t room, n;

		if (f->open_data && f->open_msg == m && f->open_len < RM_SPOOL_PAYLOAD_MAX) {
			room = f->cap - (f->open_hdr + RM_SPOOL_HEADER_BYTES + f->open_len) - RM_SPOOL_TRAILER_BYTES_MAX;
			if (room > RM_SPOOL_PAYLOAD_MAX - f->open_len)
				room = RM_SPOOL_PAYLOAD_MAX - f->open_len;
		} else {
			close_data(sp, f);
			rc = make_room(sp, RM_SPOOL_RECORD_BYTES(1) + RM_SPOOL_ALIGN_BYTES);
			if (rc == -EAGAIN)
				break;
			if (rc < 0)
				return taken > 0 ? (ssize_t)taken : rc;
			f = sp->fill;
			f->open_data = true;
			f->open_msg = m;
			f->open_hdr = f->used;
			f->open_len = 0;
			continue;
		}
		if (room == 0) {
			close_data(sp, f);
			continue;
		}
		n = len - taken < room ? len - taken : room;
		uint64_t off = f->open_hdr + RM_SPOOL_HEADER_BYTES + f->open_len;

		memcpy(f->buf + off, p + taken, n);
		add_extent(m->entry, f->seq, f->file_off + off, (uint32_t)n);
		XXH3_64bits_update(&m->hash, p + taken, n);
		f->open_len += (uint32_t)n;
		f->used = off + n;	/* the trailer is added at close */
		taken += n;
		m->bytes += n;
	}
	return (ssize_t)taken;
}

void rm_spool_wait_room(struct rm_spool_msg *m, rm_spool_room_fn room, void *arg)
{
	struct rm_spool *sp = m->sp;

	m->room = room;
	m->room_arg = arg;
	if (m->waiting)
		return;
	m->waiting = true;
	m->next_wait = NULL;
	if (sp->wait_tail != NULL)
		sp->wait_tail->next_wait = m;
	else
		sp->wait_head = m;
	sp->wait_tail = m;
	/* Room comes from a flight completing; with none in flight, make one. */
	if (sp->flight == NULL && !sp->completing && sp->fill->used > 0)
		seal_and_submit(sp);
}

int rm_spool_commit(struct rm_spool_msg *m, rm_spool_commit_fn done, void *arg)
{
	struct rm_spool *sp = m->sp;
	struct stage *f;
	ssize_t len;
	int rc = msg_state(m);

	if (rc == 0) {
		close_data(sp, sp->fill);
		rc = make_room(sp, RM_SPOOL_RECORD_BYTES(16));
	}
	if (rc == -EAGAIN) {
		/* Both buffers busy: the END waits for room like content does. */
		return -EAGAIN;
	}
	if (rc < 0) {
		seg_release(sp, m->first_seq);
		stat_add(&sp->stats.commit_failed, 1);
		msg_free(sp, m);
		return rc;
	}
	f = sp->fill;
	len = rm_spool_encode_end(f->buf + f->used, f->cap - f->used, m->qid, m->bytes,
				  XXH3_64bits_digest(&m->hash));
	RM_ASSERT(len > 0);
	f->used += (size_t)len;
	m->committing = true;
	m->done = done;
	m->done_arg = arg;
	m->next_commit = NULL;
	if (f->commits_tail != NULL)
		f->commits_tail->next_commit = m;
	else
		f->commits_head = m;
	f->commits_tail = m;
	f->commit_count++;
	if (sp->limits.spool_commit_interval_ms > 0 && sp->flight == NULL &&
	    !rm_timer_armed(&sp->commit_timer.timer) && f->commit_count < sp->limits.spool_commit_batch_max) {
		rm_worker_timer_set(sp->w, &sp->commit_timer, sp->limits.spool_commit_interval_ms);
		return 0;
	}
	kick(sp);
	return 0;
}

void rm_spool_abort(struct rm_spool_msg *m)
{
	struct rm_spool *sp = m->sp;
	struct stage *f = sp->fill;

	RM_ASSERT(!m->committing);
	/* An ABORT record lets recovery forget the message early; best effort. */
	if (msg_state(m) == 0) {
		close_data(sp, f);
		if (f->used + RM_SPOOL_RECORD_BYTES_MIN <= f->cap && !sp->need_segment) {
			ssize_t len = rm_spool_encode_mark(f->buf + f->used, f->cap - f->used, RM_SPOOL_ABORT, m->qid);

			if (len > 0)
				f->used += (size_t)len;
		}
	}
	seg_release(sp, m->first_seq);
	msg_free(sp, m);
	seg_collect(sp);
}

/* ---- delivery side -------------------------------------------------------------------------- */

ssize_t rm_spool_read(struct rm_spool *sp, const struct rm_queue_entry *e, uint64_t offset, void *buf,
		      size_t len)
{
	uint64_t pos = 0;
	size_t got = 0;

	for (uint32_t i = 0; i < e->content_count && got < len; i++) {
		const struct rm_spool_extent *x = &e->content[i];

		if (offset + got >= pos + x->len) {
			pos += x->len;
			continue;
		}
		struct segment *s = seg_find(sp, x->seq);
		uint64_t in = offset + got - pos;
		size_t n = x->len - in < len - got ? (size_t)(x->len - in) : len - got;
		ssize_t r;

		if (s == NULL || s->fd < 0)
			return -ENOENT;
		/* Content still in a buffer not yet written is never read: only
		 * acknowledged messages are queued, and their bytes are written. */
		r = pread(s->fd, (uint8_t *)buf + got, n, (off_t)(x->offset + in));
		if (r < 0)
			return -errno;
		if ((size_t)r != n)
			return -EIO;
		got += n;
		pos += x->len;
	}
	return (ssize_t)got;
}

/* Append a status record built by encode() into the fill buffer. */
/*
 * A status record that waits for room: marks come from delivery, which has
 * nothing to wait with and must not lose them, so instead of -EAGAIN the
 * record is kept here and written, in order, at the next completion
 * (drain_marks).  Bounded by what is in delivery (a mark per attempt's
 * outcome, limits.delivery_in_flight_max attempts).
 */
struct pending_mark {
	struct pending_mark *next;
	size_t len;
	uint8_t rec[];
};

static int put_record(struct rm_spool *sp, const uint8_t *rec, size_t len)
{
	struct stage *f;
	int rc = make_room(sp, len);

	if (rc < 0)
		return rc;
	f = sp->fill;
	memcpy(f->buf + f->used, rec, len);
	f->used += len;
	f->marks = true;
	return 0;
}

/*
 * The kept status records into the fill buffer, oldest first, while there
 * is room (from flight_done, which then seals the fill buffer for them; a
 * full one may already have gone out through make_room).
 */
static void drain_marks(struct rm_spool *sp)
{
	for (uint32_t guard = sp->marks_pending; sp->marks_head != NULL && guard > 0; guard--) {
		struct pending_mark *pm = sp->marks_head;

		close_data(sp, sp->fill);
		if (put_record(sp, pm->rec, pm->len) < 0)
			break;
		sp->marks_head = pm->next;
		if (sp->marks_head == NULL)
			sp->marks_tail = NULL;
		sp->marks_pending--;
		free(pm);
	}
}

static int put_status(struct rm_spool *sp, size_t need,
		      ssize_t (*encode)(uint8_t *buf, size_t cap, const void *ctx), const void *ctx)
{
	struct stage *f;
	ssize_t len;
	int rc;

	close_data(sp, sp->fill);
	/* Behind kept records, or without room: kept too, so that records stay in order. */
	rc = sp->marks_head != NULL ? -EAGAIN : make_room(sp, need);
	if (rc == -EAGAIN) {
		struct pending_mark *pm = malloc(sizeof(*pm) + need);

		if (pm == NULL)
			return -ENOMEM;
		len = encode(pm->rec, need, ctx);
		if (len < 0) {
			free(pm);
			return (int)len;
		}
		pm->len = (size_t)len;
		pm->next = NULL;
		if (sp->marks_tail != NULL)
			sp->marks_tail->next = pm;
		else
			sp->marks_head = pm;
		sp->marks_tail = pm;
		sp->marks_pending++;
		return 0;
	}
	if (rc < 0)
		return rc;
	f = sp->fill;
	len = encode(f->buf + f->used, f->cap - f->used, ctx);
	if (len < 0)
		return (int)len;
	f->used += (size_t)len;
	f->marks = true;
	kick(sp);
	return 0;
}

struct status_ctx {
	enum rm_spool_type type;
	uint64_t qid;
	const uint32_t *idx;
	uint32_t n;
	struct rm_spool_str text;
	uint64_t next_ms;
	uint32_t attempts;
};

static ssize_t encode_status(uint8_t *buf, size_t cap, const void *arg)
{
	const struct status_ctx *c = arg;
	bool all = c->idx == NULL;

	switch (c->type) {
	case RM_SPOOL_DELIVERED:
		return rm_spool_encode_delivered(buf, cap, c->qid, all, c->idx, all ? 0 : c->n);
	case RM_SPOOL_BOUNCED:
		return rm_spool_encode_bounced(buf, cap, c->qid, all, c->idx, all ? 0 : c->n, c->text);
	case RM_SPOOL_DEFERRED:
		return rm_spool_encode_deferred(buf, cap, c->qid, c->next_ms, c->attempts, true, NULL, 0, c->text);
	default:
		return rm_spool_encode_mark(buf, cap, c->type, c->qid);
	}
}

static struct rm_spool_str text_of(const char *s)
{
	size_t len = s != NULL ? strlen(s) : 0;

	if (len > RM_SPOOL_TEXT_MAX)
		len = RM_SPOOL_TEXT_MAX;
	return (struct rm_spool_str){ s != NULL ? s : "", len };
}

/* Recipients done: idx NULL = all pending. */
static int mark_rcpts(struct rm_spool *sp, struct rm_queue_entry *e, const uint32_t *idx, uint32_t n,
		      enum rm_spool_type type, const char *reason)
{
	struct status_ctx c = { .type = type, .qid = e->qid, .idx = idx, .n = n, .text = text_of(reason) };
	uint8_t to = type == RM_SPOOL_DELIVERED ? RM_RCPT_DELIVERED : RM_RCPT_BOUNCED;
	int rc;

	for (uint32_t i = 0; idx != NULL && i < n; i++)
		if (idx[i] >= e->rcpt_total)
			return -EINVAL;
	rc = put_status(sp, RM_SPOOL_RECORD_BYTES(16 + (size_t)n * 4 + RM_SPOOL_TEXT_MAX), encode_status, &c);
	if (rc < 0)
		return rc;
	for (uint32_t i = 0; i < (idx != NULL ? n : e->rcpt_total); i++) {
		struct rm_queue_rcpt *r = &e->rcpts[idx != NULL ? idx[i] : i];

		if (r->state == RM_RCPT_PENDING) {
			r->state = to;
			e->rcpt_pending--;
		}
	}
	if (e->rcpt_pending == 0) {
		queue_remove(sp, e);
		return 0;
	}
	/* Some recipients are done: the message leaves the hops that only they had. */
	hops_unlink(sp, e);
	hops_link(sp, e);
	return 0;
}

int rm_spool_mark_delivered(struct rm_spool *sp, struct rm_queue_entry *e, const uint32_t *idx, uint32_t n)
{
	return mark_rcpts(sp, e, idx, n, RM_SPOOL_DELIVERED, NULL);
}

int rm_spool_mark_bounced(struct rm_spool *sp, struct rm_queue_entry *e, const uint32_t *idx, uint32_t n,
			  const char *reason)
{
	return mark_rcpts(sp, e, idx, n, RM_SPOOL_BOUNCED, reason);
}

int rm_spool_mark_deferred(struct rm_spool *sp, struct rm_queue_entry *e, uint64_t next_attempt_unix_ms,
			   const char *error)
{
	struct status_ctx c = { .type = RM_SPOOL_DEFERRED, .qid = e->qid, .text = text_of(error),
				.next_ms = next_attempt_unix_ms, .attempts = e->attempts + 1 };
	int rc = put_status(sp, RM_SPOOL_RECORD_BYTES(32 + RM_SPOOL_TEXT_MAX), encode_status, &c);

	if (rc < 0)
		return rc;
	e->attempts++;
	e->next_attempt_unix_ms = next_attempt_unix_ms;
	free(e->last_error);
	e->last_error = xstrndup(c.text.ptr, c.text.len);
	e->in_delivery = false;
	heap_remove(sp, e);	/* its key changed: re-sift it if it was in the due index */
	heap_insert(sp, e);
	return 0;
}

int rm_spool_delete(struct rm_spool *sp, struct rm_queue_entry *e)
{
	struct status_ctx c = { .type = RM_SPOOL_DELETED, .qid = e->qid };
	int rc;

	/* The delivery side holds the entry until it marks it. */
	if (e->in_delivery)
		return -EBUSY;
	rc = put_status(sp, RM_SPOOL_RECORD_BYTES_MIN, encode_status, &c);
	if (rc < 0)
		return rc;
	queue_remove(sp, e);
	return 0;
}

int rm_spool_hold(struct rm_spool *sp, struct rm_queue_entry *e, bool hold)
{
	struct status_ctx c = { .type = hold ? RM_SPOOL_HOLD : RM_SPOOL_RELEASE, .qid = e->qid };
	int rc;

	if (e->hold == hold)
		return 0;
	rc = put_status(sp, RM_SPOOL_RECORD_BYTES_MIN, encode_status, &c);
	if (rc < 0)
		return rc;
	e->hold = hold;
	if (hold)
		heap_remove(sp, e);
	else
		heap_insert(sp, e);
	return 0;
}

/* ---- recovery and open ------------------------------------------------------------------------ */

struct seg_file {
	uint64_t seq;
	int fd;
	uint8_t *map;
	size_t len;
};

static int seg_file_cmp(const void *a, const void *b)
{
	const struct seg_file *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The segment files of the directory, mapped, in sequence order. */
static int list_segments(struct rm_spool *sp, struct seg_file **out, uint32_t *count)
{
	DIR *d = opendir(sp->dir);
	struct seg_file *files = NULL;
	uint32_t n = 0, cap = 0;
	struct dirent *de;

	*out = NULL;
	*count = 0;
	if (d == NULL)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		unsigned long long seq;
		char tail[8];
		struct stat st;

		if (sscanf(de->d_name, "%16llx.%3s", &seq, tail) != 2 || strcmp(tail, "seg") != 0 ||
		    strlen(de->d_name) != 20)
			continue;
		if (n == sp->limits.spool_segments_max) {
			rm_error(0, "spool %s: more than limits.spool_segments_max = %u segments", sp->dir,
				 sp->limits.spool_segments_max);
			closedir(d);
			for (uint32_t i = 0; i < n; i++) {
				if (files[i].map != NULL)
					munmap(files[i].map, files[i].len);
				close(files[i].fd);
			}
			free(files);
			return -EMLINK;
		}
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			files = realloc(files, cap * sizeof(*files));
			if (files == NULL)
				rm_panic("spool: out of memory listing segments");
		}
		int fd = openat(sp->dir_fd, de->d_name, O_RDWR | O_CLOEXEC);

		if (fd < 0 || fstat(fd, &st) < 0) {
			rm_error(0, "spool %s/%s: %s", sp->dir, de->d_name, strerror(errno));
			if (fd >= 0)
				close(fd);
			continue;
		}
		files[n] = (struct seg_file){ .seq = seq, .fd = fd, .len = (size_t)st.st_size };
		if (st.st_size > 0) {
			files[n].map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
			if (files[n].map == MAP_FAILED)
				rm_panic("spool: mmap %s/%s: %s", sp->dir, de->d_name, strerror(errno));
		}
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(files, n, sizeof(*files), seg_file_cmp);
	*out = files;
	*count = n;
	return 0;
}

static void grow_limit(struct rm_recover_limits *lim, const char *which)
{
	uint32_t *f = strcmp(which, "messages_max") == 0 ? &lim->messages_max :
		      strcmp(which, "open_max") == 0 ? &lim->open_max :
		      strcmp(which, "extents_max") == 0 ? &lim->extents_max :
		      strcmp(which, "rcpts_max") == 0 ? &lim->rcpts_max : &lim->segments_max;

	*f = *f * 2;
}

/* A recovered message as a queue entry, its envelope decoded from its records. */
static struct rm_queue_entry *entry_recovered(const struct seg_file *files, uint32_t nfiles,
					      const struct rm_recover_msg *rm)
{
	struct rm_queue_entry *e = xcalloc(1, sizeof(*e));
	uint32_t ri = 0;

	e->qid = rm->qid;
	e->rcpt_total = rm->rcpt_total;
	e->rcpt_pending = rm->rcpt_pending;
	e->rcpts = xcalloc(rm->rcpt_total, sizeof(*e->rcpts));
	e->size_bytes = rm->content_bytes;
	e->content_xxh3 = rm->content_xxh3;
	e->next_attempt_unix_ms = rm->next_attempt_unix_ms;
	e->attempts = rm->attempts;
	e->hold = rm->hold;
	e->first_seq = rm->env[0].seq;
	e->heap_index = NONE;
	for (uint32_t x = 0; x < rm->env_count; x++) {
		const struct rm_spool_extent *ext = &rm->env[x];
		const struct seg_file *f = NULL;
		struct rm_spool_record rec;
		struct rm_spool_rcpt_iter it;
		struct rm_spool_rcpt rc;

		for (uint32_t i = 0; i < nfiles && f == NULL; i++)
			if (files[i].seq == ext->seq)
				f = &files[i];
		RM_ASSERT(f != NULL && ext->offset + ext->len <= f->len);
		RM_ASSERT(rm_spool_decode(f->map + ext->offset, ext->len, &rec) == RM_SPOOL_OK);
		if (rec.type == RM_SPOOL_BEGIN) {
			e->received_unix_ms = rec.u.begin.env.received_unix_ms;
			e->sender = xstrndup(rec.u.begin.env.reverse_path.ptr, rec.u.begin.env.reverse_path.len);
			entry_envelope(e, &rec.u.begin.env);
		}
		rm_spool_rcpt_iter_init(&it, &rec);
		while (ri < rm->rcpt_total && rm_spool_rcpt_next(&it, &rc)) {
			e->rcpts[ri].addr = xstrndup(rc.addr.ptr, rc.addr.len);
			e->rcpts[ri].orcpt = xstrndup(rc.orcpt.ptr, rc.orcpt.len);
			e->rcpts[ri].notify = rc.notify;
			e->rcpts[ri].state = rm->rcpt_state[ri];
			ri++;
		}
	}
	RM_ASSERT(ri == rm->rcpt_total && e->sender != NULL);
	if (rm->last_error.len > 0) {
		for (uint32_t i = 0; i < nfiles; i++) {
			if (files[i].seq != rm->last_error.seq)
				continue;
			e->last_error = xstrndup((const char *)files[i].map + rm->last_error.offset, rm->last_error.len);
		}
	}
	if (e->last_error == NULL)
		e->last_error = xstrndup("", 0);
	e->content_count = e->content_cap = rm->content_count;
	e->content = xcalloc(rm->content_count, sizeof(*e->content));
	memcpy(e->content, rm->content, rm->content_count * sizeof(*e->content));
	return e;
}

static int recover(struct rm_spool *sp)
{
	struct seg_file *files;
	uint32_t nfiles;
	struct rm_recover r;
	struct rm_recover_limits lim;
	void *arena = NULL;
	bool skipped = false;
	int rc;

	rc = list_segments(sp, &files, &nfiles);
	if (rc < 0)
		return rc;
	lim = (struct rm_recover_limits){ .messages_max = 1024, .open_max = 256, .extents_max = 4096,
					  .rcpts_max = 4096, .segments_max = nfiles + 1 };
	for (int round = 0; ; round++) {
		size_t bytes = rm_recover_arena_bytes(&lim);

		free(arena);
		arena = xcalloc(1, bytes);
		RM_ASSERT(rm_recover_init(&r, &lim, arena, bytes) == 0);
		rc = 0;
		skipped = false;
		for (uint32_t i = 0; i < nfiles && rc != -ENOBUFS; i++) {
			struct rm_spool_segment hdr;

			/* Extents name segments by their header's sequence number, the
			 * table by the file name: a file whose two differ is not read. */
			if (rm_spool_decode_segment(files[i].map, files[i].len, &hdr) == RM_SPOOL_OK &&
			    hdr.seq != files[i].seq)
				rc = -EINVAL;
			else
				rc = rm_recover_feed(&r, files[i].map, files[i].len);
			if (rc == -EINVAL) {
				skipped = true;
				if (round == 0)
					rm_warn(0, "spool %s: segment %016llx out of order or misnamed; kept, not read",
						sp->dir, (unsigned long long)files[i].seq);
			}
		}
		if (rc != -ENOBUFS)
			rc = rm_recover_finish(&r);
		if (rc != -ENOBUFS)
			break;
		if (round == RECOVER_ROUNDS_MAX) {
			rm_error(0, "spool %s: recovery needs more than %s = %u", sp->dir, r.limit,
				 lim.messages_max);
			rc = -ENOMEM;
			goto out;
		}
		grow_limit(&lim, r.limit);
	}
	const struct rm_recover_stats *st = rm_recover_stats(&r);
	uint32_t damaged = 0;

	for (uint32_t i = 0; i < rm_recover_segments(&r); i++) {
		const struct rm_recover_seg *s = rm_recover_segment(&r, i);

		if (s->stop == RM_SCAN_BAD || s->stop == RM_SCAN_BAD_HEADER) {
			damaged++;
			rm_error(0, "spool %s: segment %016llx damaged at byte %zu (%s%s%s): kept for inspection",
				 sp->dir, (unsigned long long)s->seq, s->valid_end_bytes, rm_scan_stop_name(s->stop),
				 s->why ? ": " : "", s->why ? s->why : "");
		} else if (s->stop == RM_SCAN_TORN) {
			rm_info(0, "spool %s: segment %016llx ends in a torn tail at byte %zu (never acknowledged)",
				sp->dir, (unsigned long long)s->seq, s->valid_end_bytes);
		}
		if (s->header_ok && s->worker != sp->worker)
			rm_warn(0, "spool %s: segment %016llx was written by worker %u", sp->dir,
				(unsigned long long)s->seq, s->worker);
	}
	/* Segments in order; the deletable prefix goes now (see spool_recover.h). */
	uint32_t deleted = 0, first_kept = 0;

	for (uint32_t i = 0; i < nfiles; i++) {
		const struct rm_recover_seg *s = i < rm_recover_segments(&r) ? rm_recover_segment(&r, i) : NULL;
		char path[340];

		/* With a segment skipped, indexes of files and results differ: keep all. */
		if (skipped || s == NULL || !s->deletable || first_kept != i)
			continue;
		seg_name(sp, files[i].seq, path, sizeof(path));
		if (unlink(path) == 0 && fsync(sp->dir_fd) == 0) {
			deleted++;
			first_kept = i + 1;
		}
	}
	for (uint32_t i = first_kept; i < nfiles; i++) {
		struct segment *s = seg_at(sp, sp->segs_count++);

		s->seq = files[i].seq;
		s->fd = files[i].fd;
		files[i].fd = -1;
		s->size_bytes = files[i].len;
		s->live_first = 0;
		s->synced_any = true;	/* from an earlier run: may hold acknowledged records */
		s->synced_bytes = files[i].len;
	}
	for (uint32_t i = 0; i < rm_recover_count(&r); i++) {
		const struct rm_recover_msg *m = rm_recover_message(&r, i);
		struct rm_queue_entry *e;
		struct segment *s;

		if (sp->queued >= sp->limits.spool_messages_max) {
			rm_error(0, "spool %s: more than limits.spool_messages_max = %u messages to recover; "
				 "the rest stays on disk for a restart with a larger limit", sp->dir,
				 sp->limits.spool_messages_max);
			/* Pin the segments: nothing of them may be deleted. */
			if (sp->segs_count > 0)
				seg_at(sp, 0)->live_first++;
			break;
		}
		e = entry_recovered(files, nfiles, m);
		s = seg_find(sp, e->first_seq);
		RM_ASSERT(s != NULL);
		s->live_first++;
		queue_insert(sp, e);
	}
	rm_info(0, "spool %s: recovered %llu queued messages from %u segments (%llu records); "
		"%llu final, %llu discarded (never acknowledged), %llu aborted, %llu orphan records, "
		"%llu anomalies, %u damaged segments; %u segments deleted",
		sp->dir, (unsigned long long)st->recovered, nfiles, (unsigned long long)st->records,
		(unsigned long long)st->final, (unsigned long long)st->discarded,
		(unsigned long long)st->aborted, (unsigned long long)st->orphans,
		(unsigned long long)st->anomalies, damaged, deleted);
	sp->next_seq = (st->max_seq > (nfiles ? files[nfiles - 1].seq : 0) ? st->max_seq :
			(nfiles ? files[nfiles - 1].seq : 0)) + 1;
	rm_queue_id_gen_init(&sp->ids, sp->worker, st->max_qid_time_unix_ms);
	rc = 0;
out:
	for (uint32_t i = 0; i < nfiles; i++) {
		if (files[i].map != NULL)
			munmap(files[i].map, files[i].len);
		if (files[i].fd >= 0)
			close(files[i].fd);
	}
	free(files);
	free(arena);
	return rc;
}

static uint8_t *map_buffer(size_t bytes)
{
	/* Reserved, touched on first use: an idle worker's buffers cost no memory. */
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		rm_panic("spool: mmap of %zu bytes: %s", bytes, strerror(errno));
	return p;
}

int rm_spool_open(struct rm_worker *w, const struct rm_config *cfg, struct rm_spool **out)
{
	struct rm_spool *sp = xcalloc(1, sizeof(*sp));
	uint32_t hash_size = 16;
	int rc;

	*out = NULL;
	sp->w = w;
	sp->worker = rm_worker_index(w);
	sp->limits = cfg->limits;
	snprintf(sp->dir, sizeof(sp->dir), "%s/w%02u", cfg->spool_dir, sp->worker);
	if (mkdir(sp->dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		rm_error(0, "spool: mkdir %s: %s", sp->dir, strerror(errno));
		free(sp);
		return rc;
	}
	sp->dir_fd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->dir_fd < 0) {
		rc = -errno;
		rm_error(0, "spool: open %s: %s", sp->dir, strerror(errno));
		free(sp);
		return rc;
	}
	sp->segs = xcalloc(sp->limits.spool_segments_max, sizeof(*sp->segs));
	while (hash_size < sp->limits.spool_messages_max && hash_size < (1u << 24))
		hash_size <<= 1;
	sp->hash = xcalloc(hash_size, sizeof(*sp->hash));
	sp->hash_mask = hash_size - 1;
	sp->heap = xcalloc(sp->limits.spool_messages_max, sizeof(*sp->heap));
	sp->hops = xcalloc(HOP_BUCKETS, sizeof(*sp->hops));
	sp->begin_waiters = xcalloc(sp->limits.spool_receiving_max, sizeof(*sp->begin_waiters));
	sp->begin_waiters_spare = xcalloc(sp->limits.spool_receiving_max, sizeof(*sp->begin_waiters));
	for (int i = 0; i < 2; i++) {
		sp->stages[i].cap = sp->limits.spool_buffer_bytes;
		sp->stages[i].buf = map_buffer(sp->stages[i].cap);
		sp->stages[i].fd = -1;
	}
	sp->fill = &sp->stages[0];
	sp->commit_timer.fire = on_commit_timer;
	sp->commit_timer.arg = sp;
	rc = recover(sp);
	if (rc < 0) {
		rm_spool_close(sp);
		return rc;
	}
	/* Never append after a possibly torn tail: a new segment now. */
	sp->need_segment = true;
	rc = make_room(sp, RM_SPOOL_RECORD_BYTES_MIN);
	if (rc < 0)
		rm_warn(0, "spool %s: no segment yet (%s); new mail gets 452 until one can be made",
			sp->dir, strerror(-rc));
	atomic_store_explicit(&spools[sp->worker], sp, memory_order_release);
	*out = sp;
	return 0;
}

void rm_spool_close(struct rm_spool *sp)
{
	if (sp == NULL)
		return;
	RM_ASSERT(sp->flight == NULL);
	if (atomic_load(&spools[sp->worker]) == sp)
		atomic_store(&spools[sp->worker], NULL);
	for (uint32_t b = 0; b <= sp->hash_mask && sp->hash != NULL; b++) {
		struct rm_queue_entry *e = sp->hash[b];

		while (e != NULL) {
			struct rm_queue_entry *next = e->hash_next;

			hops_unlink(sp, e);
			entry_free(e);
			e = next;
		}
	}
	for (uint32_t i = 0; i < sp->segs_count; i++)
		if (seg_at(sp, i)->fd >= 0)
			close(seg_at(sp, i)->fd);
	for (int i = 0; i < 2; i++)
		if (sp->stages[i].buf != NULL)
			munmap(sp->stages[i].buf, sp->stages[i].cap);
	rm_worker_timer_cancel(sp->w, &sp->commit_timer);
	close(sp->dir_fd);
	free(sp->segs);
	free(sp->hash);
	free(sp->heap);
	free(sp->hops);
	free(sp->begin_waiters);
	free(sp->begin_waiters_spare);
	/* Kept marks not written: like a mark before its sync, forgotten (delivered again at worst). */
	for (uint32_t guard = sp->marks_pending; sp->marks_head != NULL && guard > 0; guard--) {
		struct pending_mark *pm = sp->marks_head;

		sp->marks_head = pm->next;
		free(pm);
	}
	free(sp);
}
