/*
 * NAME
 *	spool - the durable spool of one worker: group commit over io_uring,
 *	recovery at start, and the queue of messages it holds
 * SUMMARY
 *	#include "core/spool.h"
 *
 *	int rm_spool_open(struct rm_worker *w, const struct rm_config *cfg,
 *			  struct rm_spool **out);
 *	struct rm_spool *rm_spool_of(const struct rm_worker *w);
 *	void rm_spool_close(struct rm_spool *sp);
 *
 *	int rm_spool_begin(struct rm_spool *sp, const struct rm_spool_envelope *env,
 *			   const struct rm_spool_rcpt *rcpts, uint32_t n,
 *			   uint64_t size_max_bytes, struct rm_spool_msg **out);
 *	ssize_t rm_spool_append(struct rm_spool_msg *m, const void *data, size_t len);
 *	void rm_spool_wait_room(struct rm_spool_msg *m, rm_spool_room_fn room, void *arg);
 *	int rm_spool_commit(struct rm_spool_msg *m, rm_spool_commit_fn done, void *arg);
 *	void rm_spool_abort(struct rm_spool_msg *m);
 *	uint64_t rm_spool_msg_qid(const struct rm_spool_msg *m);
 *
 *	struct rm_queue_entry *rm_queue_next_due(struct rm_spool *sp, uint64_t now_unix_ms);
 *	struct rm_queue_entry *rm_queue_find(struct rm_spool *sp, uint64_t qid);
 *	ssize_t rm_spool_read(struct rm_spool *sp, const struct rm_queue_entry *e,
 *			      uint64_t offset, void *buf, size_t len);
 *	int rm_spool_mark_delivered(struct rm_spool *sp, struct rm_queue_entry *e,
 *				    const uint32_t *idx, uint32_t n);
 *	int rm_spool_mark_bounced(..., const uint32_t *idx, uint32_t n, const char *reason);
 *	int rm_spool_mark_deferred(..., uint64_t next_attempt_unix_ms, const char *error);
 *	int rm_spool_delete(struct rm_spool *sp, struct rm_queue_entry *e);
 *	int rm_spool_hold(struct rm_spool *sp, struct rm_queue_entry *e, bool hold);
 * DESCRIPTION
 *	Each worker owns one spool: a directory <spool_dir>/wNN holding
 *	append-only segment files <seq>.seg in the format of
 *	core/spool_format.h.  Nothing of it is shared with other workers.
 *
 *	Receiving (the SMTP session): rm_spool_begin writes the envelope
 *	records and gives a message handle; rm_spool_append copies content
 *	into the worker's fill buffer as it arrives (one copy, never the whole
 *	message in memory: the buffer goes to disk when it fills);
 *	rm_spool_commit appends the END record (-EAGAIN: no room in either
 *	buffer, wait with rm_spool_wait_room and commit again; another -errno:
 *	the message failed, done is never called) and calls done(arg, qid, err)
 *	from the loop once the fdatasync that covers END has completed (err
 *	0), or when the spool could not make it durable (err -EIO, -ENOSPC,
 *	...: answer 452 4.3.1).  The message handle is gone after commit's
 *	callback or after rm_spool_abort.  The 250 must be sent from done,
 *	never before.
 *
 *	Group commit: two buffers of spool.buffer_bytes.  One fills while the
 *	other is written (linked writes, then one fdatasync when it holds a
 *	commit); when that completes, every commit it held is acknowledged
 *	and the filled buffer goes next.  So a burst of N sessions costs about
 *	one fdatasync, and a lone session pays exactly one.
 *	limits.spool_commit_interval_ms > 0 waits that long for more commits
 *	before a sync when none is in progress; limits.spool_commit_batch_max
 *	waiting commits start that sync at once.  (How many commits one sync
 *	covers is bounded by the buffer: everything in it.)
 *
 *	Back-pressure: rm_spool_append returns how many bytes it took, 0 when
 *	both buffers are busy; rm_spool_wait_room(m, room, arg) then calls
 *	room(arg) once from the loop when there is room (the session resumes
 *	its held input).  rm_spool_begin says -EAGAIN in the same case and
 *	room is waited for the same way with m = NULL through
 *	rm_spool_wait_begin.
 *
 *	Errors: append -EFBIG once the content passes size_max_bytes (the
 *	session answers 552 5.3.4 after the end of data and aborts);
 *	begin -ENOSPC / -EIO when the spool cannot write (disk full, a failed
 *	write or fdatasync: then the current segment is abandoned, since its
 *	tail may be torn, every message not yet acknowledged fails, and a new
 *	segment is tried at the next begin, at most once a second); begin
 *	-EMLINK when spool.messages_max messages are queued or
 *	spool.receiving_max are being received (both: 452).
 *
 *	Delivery side: every committed message is a struct rm_queue_entry of
 *	the worker's queue, indexed by next hop (below) and by due time
 *	(rm_queue_next_due returns the
 *	earliest entry due at now that is not held, and takes it off the due
 *	index until a mark puts it back) and by queue id.  Marks append status
 *	records (durable with the next group: a crash before that sync forgets
 *	the mark, so a message may be delivered twice or a deletion undone, never
 *	a message lost).  A mark never says -EAGAIN: when both buffers are busy
 *	its record is kept in memory, in order, and written after the flight in
 *	progress; it fails only when the spool cannot write (-EIO, -ENOSPC) or
 *	without memory, and then changes nothing.  rm_spool_delete says -EBUSY for a message in delivery;
 *	a message whose recipients are
 *	all delivered or bounced, or that is deleted, leaves the queue, and a
 *	segment is deleted once it is not the current one and no queued or
 *	open message began in it or in an older segment (segments go oldest
 *	first, so a deleted segment can never leave behind a status record
 *	that would make a message come back without its final record).
 *
 *	Recovery (inside rm_spool_open, on the worker's thread before it
 *	serves): every segment of the directory in sequence order through
 *	core/spool_recover.h; the queue is rebuilt from the committed messages
 *	that are not final; what was recovered, final, discarded (never
 *	acknowledged), damaged, and the segments deleted are logged with counts.
 *	Writing then starts in a new segment (never after a possibly torn
 *	tail).
 * DIAGNOSTICS
 *	rm_spool_open: -errno with a logged reason (directory, limits, a
 *	damaged segment is kept and logged but is no error).
 */
#ifndef RM_SPOOL_H
#define RM_SPOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/engine.h"
#include "core/spool_format.h"

struct rm_spool;
struct rm_spool_msg;

typedef void (*rm_spool_commit_fn)(void *arg, uint64_t qid, int err);
typedef void (*rm_spool_room_fn)(void *arg);

/* A recipient of a queued message. */
struct rm_queue_rcpt {
	char *addr;
	char *orcpt;			/* ORCPT as received ("" = none), for relaying and DSNs */
	uint8_t state;			/* enum rm_rcpt_state */
	uint8_t notify;			/* RM_SPOOL_NOTIFY_* */
};

struct rm_queue_hop;
struct rm_queue_hop_link;

/* A queued message (committed, not final).  Read-only outside spool.c. */
struct rm_queue_entry {
	uint64_t qid;
	uint64_t received_unix_ms;
	uint64_t size_bytes;		/* content */
	uint64_t content_xxh3;
	uint64_t next_attempt_unix_ms;	/* 0: due now */
	uint32_t attempts;
	uint32_t rcpt_total;
	uint32_t rcpt_pending;
	bool hold;
	bool in_delivery;		/* taken by rm_queue_next_due, not yet marked */
	char *sender;			/* "" = null sender */
	char *envid;			/* ENVID as received (xtext), "" = none */
	char *last_error;		/* "" = none */
	uint64_t size_declared_bytes;
	uint8_t body_type;		/* enum rm_spool_body */
	uint8_t ret;			/* enum rm_spool_ret */
	bool smtputf8;
	struct rm_queue_rcpt *rcpts;
	/* private */
	uint64_t first_seq;		/* segment of BEGIN */
	struct rm_spool_extent *content;
	uint32_t content_count, content_cap;
	uint32_t heap_index;		/* in the due heap; UINT32_MAX = not there */
	struct rm_queue_entry *hash_next;
	struct rm_queue_hop_link *hops;	/* one per next hop of its pending recipients */
	uint32_t hop_count;
};

int rm_spool_open(struct rm_worker *w, const struct rm_config *cfg, struct rm_spool **out);
struct rm_spool *rm_spool_of(const struct rm_worker *w);
void rm_spool_close(struct rm_spool *sp);

int rm_spool_begin(struct rm_spool *sp, const struct rm_spool_envelope *env,
		   const struct rm_spool_rcpt *rcpts, uint32_t n, uint64_t size_max_bytes,
		   struct rm_spool_msg **out);
void rm_spool_wait_begin(struct rm_spool *sp, rm_spool_room_fn room, void *arg);
ssize_t rm_spool_append(struct rm_spool_msg *m, const void *data, size_t len);
void rm_spool_wait_room(struct rm_spool_msg *m, rm_spool_room_fn room, void *arg);
int rm_spool_commit(struct rm_spool_msg *m, rm_spool_commit_fn done, void *arg);
void rm_spool_abort(struct rm_spool_msg *m);
uint64_t rm_spool_msg_qid(const struct rm_spool_msg *m);
uint64_t rm_spool_msg_bytes(const struct rm_spool_msg *m);

struct rm_queue_entry *rm_queue_next_due(struct rm_spool *sp, uint64_t now_unix_ms);
struct rm_queue_entry *rm_queue_find(struct rm_spool *sp, uint64_t qid);
uint32_t rm_queue_count(const struct rm_spool *sp);
/* Visit every queued message, in no particular order (hash order); stop when
 * visit returns false. */
void rm_queue_walk(struct rm_spool *sp, bool (*visit)(const struct rm_queue_entry *e, void *arg),
		   void *arg);
/* Make every held-back message due now (flush); domain NULL = all, else only
 * messages with a pending recipient at that next hop.  Returns how many. */
uint32_t rm_queue_flush(struct rm_spool *sp, const char *domain, uint64_t now_unix_ms);

/*
 * The next-hop index: every queued message is listed under each next hop of
 * its pending recipients.  Until routing exists (issue 6: transport maps, MX,
 * smarthost), a recipient's next hop is its domain, lower case, without a
 * trailing dot ("" for an address without one).  rm_queue_next_due_at gives
 * the earliest due message of one next hop that is not held or in delivery,
 * for connection reuse, and takes it off the due index like rm_queue_next_due.
 */
void rm_queue_nexthop_of(const char *addr, char *out, size_t size);
uint32_t rm_queue_hop_messages(struct rm_spool *sp, const char *nexthop);
struct rm_queue_entry *rm_queue_next_due_at(struct rm_spool *sp, const char *nexthop,
					    uint64_t now_unix_ms);
void rm_queue_hop_walk(struct rm_spool *sp, bool (*visit)(const char *nexthop, uint32_t messages,
							   void *arg), void *arg);

ssize_t rm_spool_read(struct rm_spool *sp, const struct rm_queue_entry *e, uint64_t offset,
		      void *buf, size_t len);
int rm_spool_mark_delivered(struct rm_spool *sp, struct rm_queue_entry *e, const uint32_t *idx,
			    uint32_t n);
int rm_spool_mark_bounced(struct rm_spool *sp, struct rm_queue_entry *e, const uint32_t *idx,
			  uint32_t n, const char *reason);
int rm_spool_mark_deferred(struct rm_spool *sp, struct rm_queue_entry *e,
			   uint64_t next_attempt_unix_ms, const char *error);
int rm_spool_delete(struct rm_spool *sp, struct rm_queue_entry *e);
int rm_spool_hold(struct rm_spool *sp, struct rm_queue_entry *e, bool hold);

/* Counters for stats (written by the worker, read relaxed by the control socket). */
struct rm_spool_stats {
	_Atomic uint64_t committed;
	_Atomic uint64_t commit_failed;
	_Atomic uint64_t syncs;
	_Atomic uint64_t writes;
	_Atomic uint64_t bytes_written;
	_Atomic uint64_t queued;
	_Atomic uint64_t segments;
	_Atomic uint64_t write_errors;
};
const struct rm_spool_stats *rm_spool_stats(const struct rm_spool *sp);

#endif
