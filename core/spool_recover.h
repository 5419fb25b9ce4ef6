/*
 * NAME
 *	spool_recover - rebuild the queue from spool segments at start-up
 * SUMMARY
 *	#include "core/spool_recover.h"
 *
 *	void rm_scan_init(struct rm_scan *s, const uint8_t *seg, size_t len);
 *	bool rm_scan_next(struct rm_scan *s, struct rm_spool_record *rec, size_t *offset);
 *
 *	size_t rm_recover_arena_bytes(const struct rm_recover_limits *lim);
 *	int rm_recover_init(struct rm_recover *r, const struct rm_recover_limits *lim,
 *			    void *arena, size_t arena_bytes);
 *	int rm_recover_feed(struct rm_recover *r, const uint8_t *seg, size_t len);
 *	int rm_recover_finish(struct rm_recover *r);
 *	uint32_t rm_recover_count(const struct rm_recover *r);
 *	const struct rm_recover_msg *rm_recover_message(const struct rm_recover *r, uint32_t i);
 *	uint32_t rm_recover_segments(const struct rm_recover *r);
 *	const struct rm_recover_seg *rm_recover_segment(const struct rm_recover *r, uint32_t i);
 *	const struct rm_recover_stats *rm_recover_stats(const struct rm_recover *r);
 * DESCRIPTION
 *	Pure: the caller reads (or maps) the segment files and hands their
 *	bytes over; nothing here does I/O, reads a clock or calls malloc.
 *	Record formats are in core/spool_format.h.
 *
 *	The scanner walks one segment: rm_scan_init checks the header,
 *	rm_scan_next returns the records one by one (and their offsets) and
 *	false at the first one that is not whole and valid.  Then s->pos is
 *	where valid data ends and s->stop says why:
 *	  RM_SCAN_END        the last record ends exactly at the end of the bytes;
 *	  RM_SCAN_ZERO_TAIL  only zero bytes follow (preallocated space, or a
 *			     header never written);
 *	  RM_SCAN_TORN       a record, or the header, is cut short: the torn tail
 *			     of a crash, never acknowledged;
 *	  RM_SCAN_BAD        a record fails its checks (s->why says which);
 *	  RM_SCAN_BAD_HEADER the segment header fails its checks.
 *	Nothing after the stop is looked at: the bytes after a bad record have
 *	no trustworthy boundary, and records do not name their segment, so a
 *	resync could pick up stale records.  A checksum failure is BAD; a
 *	corrupted length that points past the end reads as TORN (no record
 *	header checksum to tell them apart); either way the segment stops.
 *
 *	Recovery: rm_recover_init takes caller limits and an arena of
 *	rm_recover_arena_bytes(lim) bytes (any alignment): every table lives
 *	there, and running out of one is the error -ENOBUFS, with r->limit
 *	naming the limit, never an allocation.  Feed every segment of one
 *	worker in increasing sequence order with rm_recover_feed (its bytes
 *	need to live only during the call), then rm_recover_finish, then read
 *	the results; the state then stays valid as long as the arena.
 *
 *	A message is committed when its BEGIN, every RCPT, every DATA and its
 *	END are present, in that order, the recipient count matches and END's
 *	length and xxh3-64 match the DATA payloads.  It is final when it was
 *	DELETED or every recipient is DELIVERED or BOUNCED.  Results:
 *	  messages   the committed, not final ones, in log order of BEGIN:
 *		     queue id; envelope extents (the BEGIN record, then any RCPT
 *		     records: whole records, padding included, to decode again
 *		     with rm_spool_decode); content extents (each DATA payload,
 *		     in order, zero-length ones left out); content length and
 *		     hash; per-recipient state (enum rm_rcpt_state) and the
 *		     pending count; next attempt, attempt count and the place
 *		     of the last error text of the latest DEFERRED; hold.
 *	  stats      recovered (returned), final, discarded (a BEGIN without a
 *		     matching END: never acknowledged), aborted (ABORT seen),
 *		     orphans (records of a queue id without a BEGIN here: its
 *		     segment is gone), anomalies (records a correct writer never
 *		     writes, ignored: a second BEGIN, DATA after END, a status
 *		     before END, an index past the recipients...), the newest
 *		     queue id time and the highest segment sequence, for the
 *		     writer's queue id generator and next segment.
 *	  segments   per fed segment: header, where and why the scan stopped,
 *		     all_final and deletable, below.
 *
 *	all_final: no committed message that is not final has records in the
 *	segment.  deletable: all_final, and deleting the segment cannot bring
 *	a message back: a final message can come back if the segment holding
 *	its BEGIN stays while a later one holding what made it final goes.  So
 *	a segment is deletable only if, for every message with records in it,
 *	the segment of that message's BEGIN is deletable too; delete deletable
 *	segments in increasing sequence order (and fsync the directory before
 *	deleting a later one), then a crash in between leaves only orphans.
 *	Both are computed over each message's span of segments (first to last
 *	record), a superset of the segments it really has records in: this can
 *	keep a segment longer, never delete one too early.  A segment that
 *	stopped at BAD or BAD_HEADER is never all_final nor deletable: what
 *	lies past the damage is unknown; keep it for a person to look at.
 *
 *	Limits (struct rm_recover_limits), all >= 1:
 *	  messages_max  queue ids with a BEGIN in the fed segments, any outcome;
 *	  open_max      messages between BEGIN and END or ABORT at any one
 *			point of the log (each holds a streaming hash, ~600 bytes);
 *	  extents_max   BEGIN, RCPT and DATA records of messages not yet final
 *			or dropped, at any one point;
 *	  rcpts_max     recipients summed over every BEGIN;
 *	  segments_max  segments fed.
 *
 *	Writer contract, which recovery relies on: queue ids are unique (see
 *	rm_queue_id_gen_next, floored by stats.max_qid_time_unix_ms); after a
 *	start, or after any failed or short write, the writer appends to a new
 *	segment, never after a possibly torn tail, since recovery reads nothing
 *	past one; segment files are new files, never recycled ones; status
 *	records follow the message's END.
 * DIAGNOSTICS
 *	rm_recover_init: -EINVAL for a zero or huge limit.  rm_recover_feed:
 *	-ENOBUFS when a limit is reached (sticky: every later call returns it;
 *	run again with larger limits), -EINVAL for a sequence number not above
 *	the previous one (the segment is ignored; the state stays usable).
 *	A damaged segment is not an error: it shows in its rm_recover_seg.
 *	Broken invariants (a small arena, a call out of order) panic.
 */
#ifndef RM_SPOOL_RECOVER_H
#define RM_SPOOL_RECOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/spool_format.h"

enum rm_scan_stop {
	RM_SCAN_END = 0,
	RM_SCAN_ZERO_TAIL,
	RM_SCAN_TORN,
	RM_SCAN_BAD,
	RM_SCAN_BAD_HEADER,
};

struct rm_scan {
	const uint8_t *buf;
	size_t len;
	size_t pos;			/* next record; once stopped, where valid data ends */
	struct rm_spool_segment seg;	/* valid when header_ok */
	bool header_ok;
	bool stopped;
	enum rm_scan_stop stop;		/* valid when stopped */
	const char *why;		/* the decoder's reason for TORN / BAD */
	uint64_t records;		/* returned so far */
};

/* A byte range of one segment. */
struct rm_spool_extent {
	uint64_t seq;			/* segment sequence number */
	uint64_t offset;		/* from the start of the segment file */
	uint32_t len;
	uint32_t next;			/* private: list link while recovering */
};

enum rm_rcpt_state { RM_RCPT_PENDING = 0, RM_RCPT_DELIVERED = 1, RM_RCPT_BOUNCED = 2 };

struct rm_recover_msg {
	uint64_t qid;
	uint32_t rcpt_total;
	uint32_t rcpt_pending;
	const uint8_t *rcpt_state;		/* rcpt_total x enum rm_rcpt_state */
	const struct rm_spool_extent *env;	/* BEGIN, then RCPT records */
	uint32_t env_count;
	const struct rm_spool_extent *content;	/* DATA payloads in order */
	uint32_t content_count;
	uint64_t content_bytes;
	uint64_t content_xxh3;
	uint64_t next_attempt_unix_ms;		/* 0: never deferred */
	uint32_t attempts;
	struct rm_spool_extent last_error;	/* len 0: none */
	bool hold;
};

struct rm_recover_seg {
	uint64_t seq;			/* valid when header_ok */
	uint32_t worker;
	bool header_ok;
	enum rm_scan_stop stop;
	const char *why;
	size_t len_bytes;		/* bytes fed */
	size_t valid_end_bytes;		/* where the scan stopped */
	uint64_t records;
	bool all_final;			/* after rm_recover_finish */
	bool deletable;			/* after rm_recover_finish */
	/* private */
	int32_t pin_delta;
	uint32_t span_last;
};

struct rm_recover_stats {
	uint64_t records;
	uint64_t recovered;
	uint64_t final;
	uint64_t discarded;
	uint64_t aborted;
	uint64_t orphans;
	uint64_t anomalies;
	uint64_t max_qid_time_unix_ms;	/* 0: no record */
	uint64_t max_seq;		/* 0: no valid header */
};

struct rm_recover_limits {
	uint32_t messages_max;
	uint32_t open_max;
	uint32_t extents_max;
	uint32_t rcpts_max;
	uint32_t segments_max;
};

struct rm_recover_slot;

/* Everything private except through the functions below. */
struct rm_recover {
	struct rm_recover_limits lim;
	struct rm_recover_slot *slots;
	uint32_t slots_used;
	uint32_t *hash;			/* slot index + 1; 0 empty */
	uint32_t hash_mask;
	XXH3_state_t *states;
	uint32_t *states_free;
	uint32_t states_free_count;
	struct rm_spool_extent *nodes;
	uint32_t nodes_free;		/* free list head */
	uint32_t nodes_used;		/* high water */
	uint8_t *rcpts;
	uint32_t rcpts_used;
	struct rm_recover_seg *segs;
	uint32_t segs_used;
	bool have_seq;
	uint64_t last_seq;
	struct rm_spool_extent *out_ext;
	uint32_t *out_idx;
	uint32_t out_count;
	struct rm_recover_stats stats;
	int error;			/* sticky -ENOBUFS */
	const char *limit;		/* which limit, on -ENOBUFS */
	bool finished;
};

void rm_scan_init(struct rm_scan *s, const uint8_t *seg, size_t len);
bool rm_scan_next(struct rm_scan *s, struct rm_spool_record *rec, size_t *offset);
const char *rm_scan_stop_name(enum rm_scan_stop stop);

size_t rm_recover_arena_bytes(const struct rm_recover_limits *lim);
int rm_recover_init(struct rm_recover *r, const struct rm_recover_limits *lim, void *arena,
		    size_t arena_bytes);
int rm_recover_feed(struct rm_recover *r, const uint8_t *seg, size_t len);
int rm_recover_finish(struct rm_recover *r);
uint32_t rm_recover_count(const struct rm_recover *r);
const struct rm_recover_msg *rm_recover_message(const struct rm_recover *r, uint32_t i);
uint32_t rm_recover_segments(const struct rm_recover *r);
const struct rm_recover_seg *rm_recover_segment(const struct rm_recover *r, uint32_t i);
const struct rm_recover_stats *rm_recover_stats(const struct rm_recover *r);

#endif
