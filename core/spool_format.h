/*
 * NAME
 *	spool_format - on-disk records of the durable spool, and queue ids
 * SUMMARY
 *	#include "core/spool_format.h"
 *
 *	uint64_t rm_queue_id_make(uint64_t unix_ms, unsigned worker, uint32_t counter);
 *	void rm_queue_id_format(uint64_t id, char out[RM_QUEUE_ID_TEXT_BYTES]);
 *	int rm_queue_id_parse(const char *text, uint64_t *id);
 *	uint64_t rm_queue_id_time_ms(uint64_t id);
 *	void rm_queue_id_gen_init(struct rm_queue_id_gen *g, unsigned worker,
 *				  uint64_t floor_unix_ms);
 *	uint64_t rm_queue_id_gen_next(struct rm_queue_id_gen *g, uint64_t now_unix_ms);
 *
 *	ssize_t rm_spool_encode_segment(uint8_t *buf, size_t cap, const struct rm_spool_segment *seg);
 *	enum rm_spool_result rm_spool_decode_segment(const uint8_t *buf, size_t len,
 *						     struct rm_spool_segment *out);
 *	ssize_t rm_spool_encode_begin(...), rm_spool_encode_rcpt(...), rm_spool_encode_data(...),
 *		rm_spool_encode_end(...), rm_spool_encode_delivered(...),
 *		rm_spool_encode_bounced(...), rm_spool_encode_deferred(...),
 *		rm_spool_encode_mark(...);
 *	void rm_spool_data_header(uint8_t hdr[RM_SPOOL_HEADER_BYTES], uint64_t qid, uint32_t len);
 *	uint64_t rm_spool_data_checksum(const uint8_t hdr[], const void *content, size_t len);
 *	void rm_spool_checksum_start(XXH3_state_t *st, const uint8_t hdr[]);
 *	size_t rm_spool_data_trailer(uint8_t out[], XXH3_state_t *st, uint32_t len);
 *	size_t rm_spool_data_trailer_hash(uint8_t out[], uint64_t checksum, uint32_t len);
 *	enum rm_spool_result rm_spool_decode(const uint8_t *buf, size_t len,
 *					     struct rm_spool_record *out);
 *	void rm_spool_rcpt_iter_init(struct rm_spool_rcpt_iter *it, const struct rm_spool_record *rec);
 *	bool rm_spool_rcpt_next(struct rm_spool_rcpt_iter *it, struct rm_spool_rcpt *out);
 *	uint32_t rm_spool_status_index(const struct rm_spool_record *rec, uint32_t i);
 * DESCRIPTION
 *	Pure codec: no I/O, no clock, no allocation.  The writer (group commit
 *	over io_uring) and recovery (core/spool_recover.h) share it, and the
 *	tests, the fuzzer and the benchmark drive it on memory.
 *
 *	Byte layout (every integer little-endian):
 *
 *	Segment header, 40 bytes, at offset 0 of every segment file:
 *	  0  8  magic "RMSPOOL\0"
 *	  8  4  format version (1)
 *	 12  4  worker index
 *	 16  8  segment sequence number (per worker, increasing)
 *	 24  8  creation time, unix ms
 *	 32  8  xxh3-64 (seed 0) of bytes 0..31
 *	Records follow at offset 40; every record starts 8-aligned.
 *
 *	Record:
 *	  0  4  magic 'R' 'M' 'R' '1'
 *	  4  1  type (enum rm_spool_type)
 *	  5  1  flags, 0
 *	  6  2  reserved, 0
 *	  8  4  payload length L (<= RM_SPOOL_PAYLOAD_MAX)
 *	 12  8  queue id
 *	 20  L  payload
 *	 20+L 8 checksum = XXH3_64bits_withSeed(payload, L, XXH3_64bits(record[0..20)))
 *	 28+L   0..7 zero bytes to the next multiple of 8, covered by nothing
 *	The checksum covers all 20 header bytes (through the seed) and the
 *	payload.  It is seeded rather than taken over header||payload so that
 *	the writer hashes message content where it lies, with one call and no
 *	streaming state or copy, and a reader verifies a record in place.
 *	A record's size is RM_SPOOL_RECORD_BYTES(L) = (28 + L) rounded up to 8,
 *	padding included: a record counts as present only when all of it is.
 *
 *	Payloads (u8/u16/u32/u64 little-endian; str = u16 length + bytes,
 *	length <= RM_SPOOL_FIELD_MAX; text = the same with RM_SPOOL_TEXT_MAX):
 *	  BEGIN     u64 received_unix_ms, u64 size_declared_bytes (SIZE=, or 0),
 *		    u8 body_type, u8 ret, u8 flags (bit 0 SMTPUTF8), u8 0,
 *		    u32 rcpt_total (1..RM_SPOOL_RCPT_MAX), u32 n (1..rcpt_total),
 *		    str reverse_path, str envid, str client_addr, str helo,
 *		    str auth_user, then n recipients.
 *		    A recipient: u8 notify (RM_SPOOL_NOTIFY_*), str address
 *		    (length >= 1), str orcpt.
 *	  RCPT      u32 first index, u32 n (>= 1), n recipients: the rest of an
 *		    envelope too large for one record (see RCPT below).
 *	  DATA      the next bytes of the message content, raw.
 *	  END       u64 content_bytes, u64 xxh3-64 (seed 0) of the whole content.
 *	  DELIVERED u32 flags (bit 0 ALL), u32 n, n x u32 recipient index.
 *	  BOUNCED   as DELIVERED, then text reason.
 *	  DEFERRED  u64 next_attempt_unix_ms, u32 attempts, then as BOUNCED
 *		    (the text is the last error).
 *	  ABORT, DELETED, HOLD, RELEASE: empty.
 *	With ALL, n is 0; without it n >= 1.  A payload has no trailing bytes.
 *
 *	Message life in the log: BEGIN, RCPT*, DATA* (in content order), END;
 *	records of concurrent messages interleave.  END is the commit point.
 *	ABORT tells recovery that the writer gave up on a message before its
 *	END (client gone, size limit, RSET): not in the design sketch; added
 *	so that recovery frees what it tracks for that message at once instead
 *	of holding it to the end.  DELIVERED / BOUNCED / DEFERRED / DELETED /
 *	HOLD / RELEASE come after END.
 *
 *	RCPT records exist because RM_SPOOL_RCPT_MAX (65535, so that any
 *	configured SMTP recipient limit fits) recipients with fields of up to
 *	RM_SPOOL_FIELD_MAX bytes do not fit one RM_SPOOL_PAYLOAD_MAX payload.
 *	rm_spool_begin_fit and rm_spool_rcpt_fit say how many recipients the
 *	next record can take; a typical envelope is one BEGIN.
 *
 *	Queue id: 40 bits of unix ms since RM_QUEUE_ID_EPOCH_UNIX_MS
 *	(2024-01-01, good until 2058), 6 bits worker, 18 bits counter; written
 *	as 13 Crockford base32 characters, most significant first, so text
 *	order is numeric order is time order.  rm_queue_id_parse takes either
 *	case and the Crockford aliases O = 0, I = L = 1.  rm_queue_id_make
 *	clamps a time outside the 40-bit range (a clock before 2024 must not
 *	stop the daemon); uniqueness is the generator's business:
 *	rm_queue_id_gen_next returns ids strictly increasing per generator and
 *	with a time after floor_unix_ms (the newest id time found by recovery),
 *	moving the time one ms ahead when the clock stalls, goes back or the
 *	18-bit counter runs out.
 *
 *	Encoders write one whole record into buf[0..cap) and return its size,
 *	-ENOSPC when cap is too small (buf untouched past what fits is not
 *	promised: treat it as garbage), -EINVAL for input the format cannot
 *	hold (a field too long, zero or too many recipients, a text too long,
 *	ALL with indexes).  rm_spool_encode_mark writes the empty types.
 *
 *	Zero-copy DATA, for writev: rm_spool_data_header fills the 20 header
 *	bytes; then either rm_spool_data_checksum (content in one piece) and
 *	rm_spool_data_trailer_hash, or rm_spool_checksum_start, XXH3_64bits_update
 *	per piece and rm_spool_data_trailer.  A trailer is the checksum plus the
 *	padding, 8..15 bytes.  The record is hdr, content, trailer.
 *
 *	rm_spool_decode looks at one record at buf[0..len):
 *	  RM_SPOOL_OK        out filled; out->record_bytes consumed (padding
 *			     included); strings and content point into buf;
 *	  RM_SPOOL_NEED_MORE buf ends inside a record whose bytes so far are
 *			     consistent (at the end of a file: a torn tail);
 *	  RM_SPOOL_BAD       wrong magic, nonzero flags, unknown type,
 *			     impossible length, checksum mismatch or a payload
 *			     that does not parse.
 *	out->why names the reason on NEED_MORE and BAD.  A BEGIN or RCPT
 *	decodes fully before OK, so rm_spool_rcpt_next never meets bad bytes.
 *	rm_spool_decode_segment works the same way on a segment header.
 * DIAGNOSTICS
 *	Broken invariants (a NULL buffer, a length past the maximum given to
 *	the zero-copy helpers, a worker or counter out of range) panic.
 */
#ifndef RM_SPOOL_FORMAT_H
#define RM_SPOOL_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define XXH_STATIC_LINKING_ONLY	/* XXH3_state_t must be complete for callers */
#include <xxhash.h>

/* Queue ids. */
#define RM_QUEUE_ID_EPOCH_UNIX_MS 1704067200000ULL	/* 2024-01-01T00:00:00Z */
#define RM_QUEUE_ID_TIME_BITS 40
#define RM_QUEUE_ID_WORKER_BITS 6
#define RM_QUEUE_ID_COUNTER_BITS 18
#define RM_QUEUE_ID_WORKER_MAX ((1u << RM_QUEUE_ID_WORKER_BITS) - 1)
#define RM_QUEUE_ID_COUNTER_MAX ((1u << RM_QUEUE_ID_COUNTER_BITS) - 1)
#define RM_QUEUE_ID_TEXT_LEN 13
#define RM_QUEUE_ID_TEXT_BYTES (RM_QUEUE_ID_TEXT_LEN + 1)

/* Segment header. */
#define RM_SPOOL_SEGMENT_MAGIC "RMSPOOL"	/* 8 bytes with its NUL */
#define RM_SPOOL_SEGMENT_MAGIC_BYTES 8
#define RM_SPOOL_VERSION 1
#define RM_SPOOL_SEGMENT_HEADER_BYTES 40

/* Records. */
#define RM_SPOOL_RECORD_MAGIC "RMR1"
#define RM_SPOOL_RECORD_MAGIC_BYTES 4
#define RM_SPOOL_HEADER_BYTES 20
#define RM_SPOOL_CHECKSUM_BYTES 8
#define RM_SPOOL_ALIGN_BYTES 8
#define RM_SPOOL_TRAILER_BYTES_MAX (RM_SPOOL_CHECKSUM_BYTES + RM_SPOOL_ALIGN_BYTES - 1)
#define RM_SPOOL_PAYLOAD_MAX (1u << 20)	/* larger content goes in several DATA records */
#define RM_SPOOL_RECORD_BYTES(payload_len) \
	((RM_SPOOL_HEADER_BYTES + (size_t)(payload_len) + RM_SPOOL_CHECKSUM_BYTES + 7) & ~(size_t)7)
#define RM_SPOOL_RECORD_BYTES_MIN RM_SPOOL_RECORD_BYTES(0)
#define RM_SPOOL_RECORD_BYTES_MAX RM_SPOOL_RECORD_BYTES(RM_SPOOL_PAYLOAD_MAX)

/* Field limits, enforced by encoder and decoder alike. */
#define RM_SPOOL_RCPT_MAX 65535u	/* recipients of one message */
#define RM_SPOOL_FIELD_MAX 1024u	/* an address, ORCPT, ENVID, HELO, user... */
#define RM_SPOOL_TEXT_MAX 2048u		/* a bounce reason or last error */

enum rm_spool_type {
	RM_SPOOL_BEGIN = 1,
	RM_SPOOL_RCPT = 2,
	RM_SPOOL_DATA = 3,
	RM_SPOOL_END = 4,
	RM_SPOOL_ABORT = 5,
	RM_SPOOL_DELIVERED = 8,
	RM_SPOOL_BOUNCED = 9,
	RM_SPOOL_DEFERRED = 10,
	RM_SPOOL_DELETED = 11,
	RM_SPOOL_HOLD = 12,
	RM_SPOOL_RELEASE = 13,
};

enum rm_spool_result { RM_SPOOL_OK = 0, RM_SPOOL_NEED_MORE, RM_SPOOL_BAD };

enum rm_spool_body { RM_SPOOL_BODY_NONE = 0, RM_SPOOL_BODY_7BIT, RM_SPOOL_BODY_8BITMIME,
		     RM_SPOOL_BODY_BINARYMIME, RM_SPOOL_BODY_LAST = RM_SPOOL_BODY_BINARYMIME };
enum rm_spool_ret { RM_SPOOL_RET_NONE = 0, RM_SPOOL_RET_FULL, RM_SPOOL_RET_HDRS,
		    RM_SPOOL_RET_LAST = RM_SPOOL_RET_HDRS };

/* DSN NOTIFY (RFC 3461); 0 = not given. */
#define RM_SPOOL_NOTIFY_NEVER 0x01u
#define RM_SPOOL_NOTIFY_SUCCESS 0x02u
#define RM_SPOOL_NOTIFY_FAILURE 0x04u
#define RM_SPOOL_NOTIFY_DELAY 0x08u
#define RM_SPOOL_NOTIFY_MASK 0x0fu

#define RM_SPOOL_STATUS_ALL 0x01u	/* status flags: every recipient */

/* Bytes with an explicit length; never NUL-terminated when decoded. */
struct rm_spool_str {
	const char *ptr;
	size_t len;
};

struct rm_spool_rcpt {
	struct rm_spool_str addr;	/* RCPT TO path, >= 1 byte */
	struct rm_spool_str orcpt;	/* ORCPT value, may be empty */
	uint8_t notify;			/* RM_SPOOL_NOTIFY_* */
};

/* The envelope of MAIL FROM and the session, recipients apart. */
struct rm_spool_envelope {
	uint64_t received_unix_ms;
	uint64_t size_declared_bytes;	/* SIZE=, 0 when not given */
	uint8_t body_type;		/* enum rm_spool_body */
	uint8_t ret;			/* enum rm_spool_ret */
	bool smtputf8;
	struct rm_spool_str reverse_path;	/* empty: the null sender <> */
	struct rm_spool_str envid;
	struct rm_spool_str client_addr;
	struct rm_spool_str helo;
	struct rm_spool_str auth_user;
};

struct rm_spool_segment {
	uint32_t version;
	uint32_t worker;
	uint64_t seq;
	uint64_t created_unix_ms;
};

/* A decoded record.  Pointers go into the decoded buffer. */
struct rm_spool_record {
	enum rm_spool_type type;
	uint64_t qid;
	const uint8_t *payload;
	uint32_t payload_len;
	size_t record_bytes;		/* consumed, padding included */
	const char *why;		/* reason on NEED_MORE / BAD, else NULL */
	union {
		struct {
			struct rm_spool_envelope env;
			uint32_t rcpt_total;
			uint32_t rcpt_count;	/* in this record */
			const uint8_t *rcpts;	/* encoded recipients, for the iterator */
			size_t rcpts_len;
		} begin;
		struct {
			uint32_t first;
			uint32_t rcpt_count;
			const uint8_t *rcpts;
			size_t rcpts_len;
		} rcpt;
		struct {
			uint64_t content_bytes;
			uint64_t content_xxh3;
		} end;
		struct {			/* DELIVERED, BOUNCED, DEFERRED */
			bool all;
			uint32_t index_count;
			const uint8_t *index_le;	/* index_count x u32 LE, unaligned */
			struct rm_spool_str text;	/* reason / last error */
			uint64_t next_attempt_unix_ms;	/* DEFERRED */
			uint32_t attempts;		/* DEFERRED */
		} status;
	} u;
};

struct rm_spool_rcpt_iter {
	const uint8_t *p;
	const uint8_t *end;
	uint32_t left;
};

struct rm_queue_id_gen {
	uint64_t last_rel_ms;		/* time field of the last id */
	uint32_t counter;		/* counter of the last id */
	unsigned worker;
	bool started;
};

/* Queue ids. */
uint64_t rm_queue_id_make(uint64_t unix_ms, unsigned worker, uint32_t counter);
void rm_queue_id_format(uint64_t id, char out[RM_QUEUE_ID_TEXT_BYTES]);
int rm_queue_id_parse(const char *text, uint64_t *id);
uint64_t rm_queue_id_time_ms(uint64_t id);
unsigned rm_queue_id_worker(uint64_t id);
uint32_t rm_queue_id_counter(uint64_t id);
void rm_queue_id_gen_init(struct rm_queue_id_gen *g, unsigned worker, uint64_t floor_unix_ms);
uint64_t rm_queue_id_gen_next(struct rm_queue_id_gen *g, uint64_t now_unix_ms);

/* Segment header. */
ssize_t rm_spool_encode_segment(uint8_t *buf, size_t cap, const struct rm_spool_segment *seg);
enum rm_spool_result rm_spool_decode_segment(const uint8_t *buf, size_t len,
					     struct rm_spool_segment *out);

/* Envelope. */
uint32_t rm_spool_begin_fit(const struct rm_spool_envelope *env, const struct rm_spool_rcpt *rcpts,
			    uint32_t n);
uint32_t rm_spool_rcpt_fit(const struct rm_spool_rcpt *rcpts, uint32_t n);
ssize_t rm_spool_encode_begin(uint8_t *buf, size_t cap, uint64_t qid,
			      const struct rm_spool_envelope *env, uint32_t rcpt_total,
			      const struct rm_spool_rcpt *rcpts, uint32_t n);
ssize_t rm_spool_encode_rcpt(uint8_t *buf, size_t cap, uint64_t qid, uint32_t first,
			     const struct rm_spool_rcpt *rcpts, uint32_t n);

/* Content. */
ssize_t rm_spool_encode_data(uint8_t *buf, size_t cap, uint64_t qid, const void *content,
			     size_t len);
ssize_t rm_spool_encode_end(uint8_t *buf, size_t cap, uint64_t qid, uint64_t content_bytes,
			    uint64_t content_xxh3);
void rm_spool_data_header(uint8_t hdr[RM_SPOOL_HEADER_BYTES], uint64_t qid, uint32_t payload_len);
uint64_t rm_spool_data_checksum(const uint8_t hdr[RM_SPOOL_HEADER_BYTES], const void *content,
				size_t len);
void rm_spool_checksum_start(XXH3_state_t *st, const uint8_t hdr[RM_SPOOL_HEADER_BYTES]);
size_t rm_spool_data_trailer(uint8_t out[RM_SPOOL_TRAILER_BYTES_MAX], XXH3_state_t *st,
			     uint32_t payload_len);
size_t rm_spool_data_trailer_hash(uint8_t out[RM_SPOOL_TRAILER_BYTES_MAX], uint64_t checksum,
				  uint32_t payload_len);

/* After commit. */
ssize_t rm_spool_encode_delivered(uint8_t *buf, size_t cap, uint64_t qid, bool all,
				  const uint32_t *idx, uint32_t n);
ssize_t rm_spool_encode_bounced(uint8_t *buf, size_t cap, uint64_t qid, bool all,
				const uint32_t *idx, uint32_t n, struct rm_spool_str reason);
ssize_t rm_spool_encode_deferred(uint8_t *buf, size_t cap, uint64_t qid,
				 uint64_t next_attempt_unix_ms, uint32_t attempts, bool all,
				 const uint32_t *idx, uint32_t n, struct rm_spool_str last_error);
ssize_t rm_spool_encode_mark(uint8_t *buf, size_t cap, enum rm_spool_type type, uint64_t qid);

/* Decoding. */
enum rm_spool_result rm_spool_decode(const uint8_t *buf, size_t len, struct rm_spool_record *out);
void rm_spool_rcpt_iter_init(struct rm_spool_rcpt_iter *it, const struct rm_spool_record *rec);
bool rm_spool_rcpt_next(struct rm_spool_rcpt_iter *it, struct rm_spool_rcpt *out);
uint32_t rm_spool_status_index(const struct rm_spool_record *rec, uint32_t i);
const char *rm_spool_type_name(enum rm_spool_type type);

#endif
