/*
 * NAME
 *	dsn - delivery status notifications (RFC 3464, RFC 6522, RFC 6533)
 *	composed as a message to spool
 * SUMMARY
 *	#include "proto/dsn.h"
 *
 *	bool rm_dsn_should_send(const uint8_t *sender, size_t sender_len,
 *				uint8_t notify, enum rm_dsn_action action,
 *				bool delay_if_unset);
 *	enum rm_dsn_err rm_dsn_begin(struct rm_dsn_writer *w,
 *				     const struct rm_dsn_report *r);
 *	size_t rm_dsn_scan_original(struct rm_dsn_writer *w, const uint8_t *in,
 *				    size_t len);
 *	size_t rm_dsn_write_head(struct rm_dsn_writer *w, uint8_t *out, size_t cap);
 *	size_t rm_dsn_feed_original(struct rm_dsn_writer *w, const uint8_t *in,
 *				    size_t len, uint8_t *out, size_t cap,
 *				    size_t *consumed);
 *	size_t rm_dsn_end(struct rm_dsn_writer *w, uint8_t *out, size_t cap);
 *	bool rm_dsn_head_done(const struct rm_dsn_writer *w);
 *	bool rm_dsn_original_done(const struct rm_dsn_writer *w);
 *	bool rm_dsn_done(const struct rm_dsn_writer *w);
 *	const char *rm_dsn_boundary(const struct rm_dsn_writer *w, size_t *len);
 *	const char *rm_dsn_err_text(enum rm_dsn_err err);
 * DESCRIPTION
 *	Pure codec: no I/O, no allocation, no clock (every time is a field
 *	of the report).  The DSN is written into the caller's buffers, at
 *	most cap bytes per call and never past them; every call can stop
 *	anywhere and the next one goes on where it stopped, so the output
 *	never depends on the caps (tests and the fuzzer hold it to that).
 *
 *	rm_dsn_should_send says whether a DSN goes out at all (RFC 3461
 *	5.2 and 6.2): never to the null sender ("" or "<>"), never with
 *	NOTIFY=NEVER; a failure when NOTIFY was not given or has FAILURE; a
 *	delay when NOTIFY has DELAY, or was not given and delay_if_unset
 *	(the policy); delivered, relayed and expanded only when NOTIFY has
 *	SUCCESS.  notify is the RM_SMTP_NOTIFY_* bits, 0 when not given.
 *
 *	The message (struct rm_dsn_report, which with every string in it
 *	must stay valid and unchanged until rm_dsn_done): header fields
 *	From: "display" <MAILER-DAEMON@hostname> (no display name when
 *	from_display is empty), To: the original envelope sender, Subject:
 *	"Undelivered Mail Returned to Sender" when a recipient failed, else
 *	"Delayed Mail (still being retried)" when one is delayed, else
 *	"Successful Mail Delivery Report"; Date: (RFC 5322, now_unix_s shown
 *	at tz_offset_min), Message-ID: <id.now_unix_s@hostname>,
 *	Auto-Submitted: auto-replied (RFC 3834), MIME-Version and a
 *	multipart/report; report-type=delivery-status of three parts:
 *	  1 text/plain: what happened, one paragraph per recipient (its
 *	    address, what became of it, the remote server's reply or our
 *	    reason, and for a delay until when it is retried);
 *	  2 message/delivery-status: Original-Envelope-Id (ENVID decoded from
 *	    xtext; as sent when that fails), Reporting-MTA: dns; hostname,
 *	    Arrival-Date, then per recipient Original-Recipient (ORCPT: its
 *	    addr-type and the value decoded from xtext, or as sent),
 *	    Final-Recipient: rfc822; addr, Action, Status, Remote-MTA: dns;
 *	    host, Diagnostic-Code: smtp; reply (or X-ringmail; reason when
 *	    there is no reply), Last-Attempt-Date, Will-Retry-Until (delayed);
 *	  3 the original: message/rfc822 with RET=FULL when original_bytes
 *	    is at most original_bytes_max, else text/rfc822-headers (its
 *	    header section only, up to the first empty line); none when
 *	    original_bytes_max is 0.  The text part says which.
 *	With r->smtputf8 (RFC 6533) the types are message/global-delivery-
 *	status (report-type=global-delivery-status), message/global and
 *	message/global-headers, text is utf-8 and a non-ASCII recipient is
 *	"utf-8; " in utf-8-addr-unitext form (UTF-8 as is; '+', '=', '\',
 *	controls and space as \x{HEX}).  Without it everything this codec
 *	writes is 7-bit: non-ASCII becomes '?'.
 *
 *	Text from outside (reply, reason, addresses) is never trusted: it
 *	cannot end a line or a field.  In a reply or reason every run of
 *	CR, LF, SP and HT is one separator; one with a line break in it
 *	(the lines of a multi-line reply) becomes a fold (CRLF SP, or CRLF and
 *	four spaces in the text part), others a space or a fold when the next
 *	word would pass column 78; other controls are '?'.  Every line of the
 *	DSN is at most RM_DSN_LINE_BYTES_MAX bytes before its CR LF: a longer
 *	run without space is cut with a fold, and the original's lines are
 *	cut too (CRLF SP in its header section, CRLF in its body).
 *
 *	Writing: rm_dsn_begin checks the report and prepares; then, when
 *	the original is included, rm_dsn_scan_original may be given the
 *	original (in chunks cut anywhere; it returns how much it took, less
 *	than len once the included part has ended); then rm_dsn_write_head
 *	until rm_dsn_head_done; then rm_dsn_feed_original with the original
 *	from its start (it consumes what it wrote, *consumed; it stops taking
 *	input at the end of the header section for text/rfc822-headers and
 *	after original_bytes_max bytes in any case: rm_dsn_original_done);
 *	then rm_dsn_end until rm_dsn_done.  The caller may stop feeding at
 *	any point (a short spool file): the part is closed where it stops.
 *	The original is passed on with its line ends made CR LF (CR LF, a
 *	bare CR and a bare LF each end a line), NUL as '?', and bytes >= 0x80
 *	as they are when the scan saw them (the part then says
 *	Content-Transfer-Encoding: 8bit, w->body_8bit is set and the caller
 *	must relay the DSN with BODY=8BITMIME), else as '?'.
 *
 *	The boundary: "=_rm." id "." D, D being digits.  The scan (of the
 *	parts this codec writes, at rm_dsn_begin, and of the original, by
 *	rm_dsn_scan_original) finds the longest run of digits that follows
 *	"=_rm." id "." anywhere; D is one digit longer, so the boundary
 *	occurs nowhere in the content.  Should that make it longer than RFC
 *	2046 allows (70; the content holds such a run of over 30 digits), or
 *	the original fed differ from the one scanned, every output byte is
 *	still checked: the last digit of an occurrence is written as 'X'
 *	(w->boundary_hits counts them).  The boundary is thus never in the
 *	body but as a delimiter line, whatever the input.
 *
 *	Cost: a write call regenerates the piece it stopped in (the headers,
 *	one recipient's paragraph, one recipient's fields: each a few KiB at
 *	most) to skip what was written, so caps of a few KiB cost nothing
 *	and caps of one byte work, slowly.
 * DIAGNOSTICS
 *	rm_dsn_begin returns RM_DSN_OK or what is wrong with the report
 *	(w->err_rcpt names the recipient); rm_dsn_err_text names it for logs.
 *	The write calls return the bytes written (0 with cap 0).  Calls out
 *	of order (a write before begin succeeded, a scan after the head was
 *	begun, a feed before the head is done) are bugs and panic (RM_ASSERT).
 */
#ifndef RM_DSN_H
#define RM_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/smtp_cmd.h"

/* RFC 5322 2.1.1: a line, without its CR LF (998), and where folding is due (78). */
#define RM_DSN_LINE_BYTES_MAX 998u
#define RM_DSN_FOLD_COLUMN 78u
/* RFC 2046 5.1.1. */
#define RM_DSN_BOUNDARY_BYTES_MAX 70u
/* The report's own strings. */
#define RM_DSN_ID_BYTES_MAX 32u
#define RM_DSN_HOSTNAME_BYTES_MAX 253u
#define RM_DSN_DISPLAY_BYTES_MAX 64u
#define RM_DSN_REMOTE_MTA_BYTES_MAX 255u
/* A reply or reason: what is longer is cut here (a reply is 512 bytes a line). */
#define RM_DSN_TEXT_BYTES_MAX 4096u
#define RM_DSN_RCPT_MAX 10000u

enum rm_dsn_action {
	RM_DSN_FAILED = 0,
	RM_DSN_DELAYED,
	RM_DSN_DELIVERED,
	RM_DSN_RELAYED,
	RM_DSN_EXPANDED,
	RM_DSN_ACTION_COUNT
};

enum rm_dsn_err {
	RM_DSN_OK = 0,
	RM_DSN_E_HOSTNAME,		/* not 1-253 bytes of letters, digits, '-', '.' */
	RM_DSN_E_ID,			/* not 1-32 bytes of letters, digits, '-', '_' */
	RM_DSN_E_DISPLAY,		/* longer than 64 or not printable ASCII */
	RM_DSN_E_SENDER,		/* null or longer than a path */
	RM_DSN_E_ENVID,			/* longer than RFC 3461 allows */
	RM_DSN_E_TIME,			/* before 1970, after 9999, or a bad offset */
	RM_DSN_E_RCPT_COUNT,		/* none, or more than RM_DSN_RCPT_MAX */
	RM_DSN_E_RCPT_ADDR,		/* empty or longer than a path */
	RM_DSN_E_ORCPT,			/* bad addr-type or longer than RFC 3461 allows */
	RM_DSN_E_ACTION,
	RM_DSN_E_STATUS,		/* not X.Y.Z, or its class not the action's */
	RM_DSN_E_REMOTE_MTA,		/* longer than 255 or not printable ASCII */
	RM_DSN_E_COUNT
};

struct rm_dsn_rcpt {
	struct rm_smtp_span addr;	/* local@domain as delivered to */
	struct rm_smtp_span orcpt_type;	/* ORCPT addr-type ("rfc822"); ptr NULL: no ORCPT */
	struct rm_smtp_span orcpt;	/* ORCPT value, xtext as sent */
	enum rm_dsn_action action;
	const char *status;		/* RFC 3463 "5.1.1": class 5 failed, 4 delayed, else 2 */
	struct rm_smtp_span remote_mta;	/* ptr NULL: none */
	struct rm_smtp_span reply;	/* the remote reply, any bytes; ptr NULL: none */
	struct rm_smtp_span reason;	/* ours ("connect to ...: refused"); ptr NULL: none */
	int64_t last_attempt_unix_s;	/* 0: none */
	int64_t retry_until_unix_s;	/* delayed only; 0: none */
};

struct rm_dsn_report {
	struct rm_smtp_span hostname;	/* ours: Reporting-MTA, From, Message-ID */
	struct rm_smtp_span from_display;	/* "Mail Delivery System"; len 0: none */
	struct rm_smtp_span id;		/* unique per DSN (queue id and a count) */
	struct rm_smtp_span sender;	/* the original's envelope sender, no brackets */
	struct rm_smtp_span envid;	/* ENVID, xtext as sent; ptr NULL: none */
	enum rm_smtp_ret ret;
	bool smtputf8;
	int64_t arrival_unix_s;
	int64_t now_unix_s;
	int32_t tz_offset_min;		/* for Date: and the other dates, -1439..1439 */
	uint64_t original_bytes;	/* the original's size, as it will be fed */
	uint64_t original_bytes_max;	/* the most of it ever included; 0: none */
	const struct rm_dsn_rcpt *rcpt;
	size_t rcpt_count;
};

/* Pattern matcher for the boundary's base (see dsn.c); plain values. */
struct rm_dsn_match {
	uint8_t base_at;		/* bytes of the base matched */
	uint8_t d_at;			/* digits matched after it; 0xff: not after a base */
	uint8_t run;			/* scan: digits after the base so far */
};

/* The original as it is normalised, once for the scan and once for the feed. */
struct rm_dsn_orig {
	uint64_t in_bytes;		/* input taken */
	uint32_t line_bytes;		/* bytes on the current output line */
	bool prev_cr;
	bool in_body;			/* past the empty line */
	bool done;
	struct rm_dsn_match m;
};

struct rm_dsn_writer {
	const struct rm_dsn_report *r;
	enum rm_dsn_err err;
	size_t err_rcpt;
	/* Decided at begin. */
	uint8_t include;		/* RM_DSN_INCLUDE_* in dsn.c */
	bool too_big;
	bool any_failed;
	bool any_delayed;
	uint8_t base_len;
	uint8_t boundary_len;
	char boundary[RM_DSN_BOUNDARY_BYTES_MAX + 1];
	uint8_t run_max;		/* longest digit run after the base seen */
	bool parts_8bit;		/* parts 1 and 2 have bytes >= 0x80 */
	bool orig_8bit;			/* the scan saw bytes >= 0x80 in the original */
	bool boundary_ready;
	/* Where the writer is. */
	uint8_t phase;
	uint8_t unit;
	bool close_crlf;		/* the original's last line needs its CR LF */
	size_t rcpt_i;
	size_t unit_off;		/* bytes of the current piece already written */
	struct rm_dsn_orig scan;
	struct rm_dsn_orig feed;
	uint8_t owed[4];		/* feed output that did not fit */
	uint8_t owed_off;
	uint8_t owed_len;
	/* Results. */
	bool body_8bit;			/* the DSN has 8-bit bytes: relay with BODY=8BITMIME */
	uint64_t replaced;		/* original bytes written as '?' */
	uint64_t boundary_hits;		/* boundary occurrences broken with 'X' */
};

bool rm_dsn_should_send(const uint8_t *sender, size_t sender_len, uint8_t notify,
			enum rm_dsn_action action, bool delay_if_unset);
enum rm_dsn_err rm_dsn_begin(struct rm_dsn_writer *w, const struct rm_dsn_report *r);
size_t rm_dsn_scan_original(struct rm_dsn_writer *w, const uint8_t *in, size_t len);
size_t rm_dsn_write_head(struct rm_dsn_writer *w, uint8_t *out, size_t cap);
size_t rm_dsn_feed_original(struct rm_dsn_writer *w, const uint8_t *in, size_t len, uint8_t *out,
			    size_t cap, size_t *consumed);
size_t rm_dsn_end(struct rm_dsn_writer *w, uint8_t *out, size_t cap);
bool rm_dsn_head_done(const struct rm_dsn_writer *w);
bool rm_dsn_original_done(const struct rm_dsn_writer *w);
bool rm_dsn_done(const struct rm_dsn_writer *w);
const char *rm_dsn_boundary(const struct rm_dsn_writer *w, size_t *len);
const char *rm_dsn_err_text(enum rm_dsn_err err);

#endif
