/*
 * NAME
 *	smtp_client - SMTP client codec: server replies, EHLO keywords,
 *	commands, dot-stuffed DATA
 * SUMMARY
 *	#include "proto/smtp_client.h"
 *
 *	void rm_smtp_replyp_init(struct rm_smtp_replyp *p, size_t line_bytes_max,
 *				 unsigned lines_max);
 *	size_t rm_smtp_replyp_feed(struct rm_smtp_replyp *p, const uint8_t *in, size_t len,
 *				   struct rm_smtp_server_reply *out);
 *	enum rm_smtp_replyp_err rm_smtp_replyp_error(const struct rm_smtp_replyp *p);
 *	const char *rm_smtp_replyp_err_text(enum rm_smtp_replyp_err err);
 *
 *	void rm_smtp_ehlo_parse(const struct rm_smtp_server_reply *r, struct rm_smtp_ehlo *out);
 *	enum rm_smtp_mail_check rm_smtp_mail_check(const struct rm_smtp_mail_args *m,
 *						   const struct rm_smtp_ehlo *e);
 *
 *	ssize_t rm_smtp_write_ehlo(uint8_t *buf, size_t cap, const char *domain);
 *	ssize_t rm_smtp_write_helo(uint8_t *buf, size_t cap, const char *domain);
 *	ssize_t rm_smtp_write_mail(uint8_t *buf, size_t cap, const struct rm_smtp_mail_args *m,
 *				   const struct rm_smtp_ehlo *e);
 *	ssize_t rm_smtp_write_rcpt(uint8_t *buf, size_t cap, const struct rm_smtp_rcpt_args *r,
 *				   const struct rm_smtp_ehlo *e);
 *	ssize_t rm_smtp_write_data(uint8_t *buf, size_t cap);
 *	ssize_t rm_smtp_write_bdat(uint8_t *buf, size_t cap, uint64_t bytes, bool last);
 *	ssize_t rm_smtp_write_rset(uint8_t *buf, size_t cap);
 *	ssize_t rm_smtp_write_quit(uint8_t *buf, size_t cap);
 *	ssize_t rm_smtp_write_starttls(uint8_t *buf, size_t cap);
 *	ssize_t rm_smtp_write_auth_plain(uint8_t *buf, size_t cap, const char *authzid,
 *					 const char *authcid, const char *passwd);
 *
 *	void rm_smtp_dotstuff_init(struct rm_smtp_dotstuff *st);
 *	size_t rm_smtp_dotstuff_feed(struct rm_smtp_dotstuff *st, const uint8_t *in, size_t len,
 *				     uint8_t *out, size_t out_cap, size_t *out_len);
 *	ssize_t rm_smtp_dotstuff_end(struct rm_smtp_dotstuff *st, uint8_t *out, size_t cap);
 * DESCRIPTION
 *	Pure codec for the client side of SMTP (outbound delivery): no I/O,
 *	no allocation.  Every state is a plain struct the caller owns.
 *
 *	Replies (RFC 5321 4.2).  rm_smtp_replyp_feed reads the server's byte
 *	stream, cut anywhere, and returns how many bytes it consumed; when
 *	those end a reply, out->complete is set and the call stops right
 *	after the reply's last line, so pipelined replies come one per call:
 *	"while (len > 0) { n = feed(); if (out.complete) ...; in += n;
 *	len -= n; }", stopping on an error.  A reply is "CCC-text" lines, then
 *	"CCC text" or "CCC" alone; every line must carry the first line's
 *	code, which must be 2xx-5xx with a second digit 0-5.  A line ends with
 *	CR LF or a bare LF (real servers send those: accepted, and
 *	out->bare_lf says so); a CR not before LF is a text byte.  Each line
 *	is at most line_bytes_max bytes with its line end (RFC 5321 4.5.3.1.5
 *	says 512, RM_SMTP_REPLY_LINE_BYTES_MAX; servers send longer, so the
 *	caller may allow more: RM_SMTP_CLIENT_LINE_BYTES_DEFAULT; a line past
 *	512 sets out->long_line), and a reply at most lines_max lines.
 *
 *	An enhanced status code (RFC 2034, RFC 3463: class.subject.detail,
 *	1-3 digits each, then SP or the line end) is recognised at the start
 *	of any line's text when its class is the code's first digit (2, 4 or
 *	5: a 3xx has none); it is taken out of that line's text, and the first
 *	one found is out->enhanced ("" when none).  The text of the reply is
 *	every line's text after the code, separator and enhanced code, lines
 *	joined by one LF, NUL-terminated, in a buffer of
 *	RM_SMTP_CLIENT_REPLY_BYTES_MAX bytes in the parser: out->text, valid
 *	until the next feed or init.  Longer text is cut there and
 *	out->text_truncated set, which is never an error.  Bytes RFC 5321
 *	textstring does not allow (anything but HT and 32-126) are stored as
 *	'?' and counted in out->replaced, so the text can be logged or quoted
 *	in a reply or a bounce as it is.
 *
 *	Anything that is not a reply line is a protocol error: the parser
 *	stops for good (feed consumes nothing more, until init) and
 *	rm_smtp_replyp_error says why; the bytes consumed include the one
 *	where the error was seen.  Where a stream is cut never changes the
 *	replies, the error, or the bytes consumed: every decision is made on
 *	one byte and the state before it.
 *
 *	EHLO (rm_smtp_ehlo_parse).  Reads a complete 250 reply (anything else
 *	gives an all-zero out) as RFC 5321 4.1.1.1 ehlo-lines after the first
 *	(the greeting); keywords and AUTH mechanisms in any case.  Known:
 *	PIPELINING, SIZE [n] (out->size_bytes_max; absent, 0, or not a number:
 *	no limit known; past 2^64-1: UINT64_MAX), 8BITMIME, SMTPUTF8, CHUNKING,
 *	BINARYMIME, DSN, ENHANCEDSTATUSCODES, STARTTLS, AUTH mechanisms (PLAIN
 *	and LOGIN go to out->auth_mechs; others are ignored; several AUTH
 *	lines add up; the pre-RFC 2554 form "AUTH=LOGIN PLAIN" counts too).
 *	Everything else (REQUIRETLS, unknown and malformed lines) is ignored.
 *	When the text was truncated, the last line may be cut (a "SIZE 10"
 *	out of "SIZE 10485760" would refuse mail the server takes), so it is
 *	ignored.
 *
 *	Commands.  Each rm_smtp_write_* writes one command line with its CR LF
 *	into buf (at most cap bytes, never past) and returns its length.
 *	Nothing from the spool can inject a command or a parameter: a path is
 *	a stored mailbox without brackets (m->reverse_path empty is the null
 *	sender "<>") and must parse again as exactly one RFC 5321 Mailbox
 *	(proto/smtp_addr, default limits, UTF-8 only when the command carries
 *	SMTPUTF8), so no CR, LF, NUL, control byte or parameter can hide in
 *	it, and holds no '<' or '>' even in a quoted local part (a server
 *	that reads the path up to the first '>' must see the same one); ENVID must be xtext of at most RM_SMTP_ENVID_BYTES_MAX bytes,
 *	ORCPT "addr-type;xtext" of at most RM_SMTP_ORCPT_BYTES_MAX, as the
 *	server side stores them; the EHLO/HELO argument a domain or address
 *	literal.  The writers send an extension's parameter only when the
 *	server offered it (struct rm_smtp_ehlo):
 *	  MAIL  SIZE=n (n > 0, SIZE), BODY=7BIT|8BITMIME (8BITMIME),
 *	        BODY=BINARYMIME (BINARYMIME and CHUNKING; without them the
 *	        writer refuses: the content cannot be sent otherwise),
 *	        SMTPUTF8 (SMTPUTF8), RET and ENVID (DSN);
 *	  RCPT  NOTIFY (NEVER alone, or SUCCESS, FAILURE, DELAY) and ORCPT,
 *	        both only with DSN; r->smtputf8 says the transaction's MAIL
 *	        went with SMTPUTF8, which lets the path hold UTF-8.
 *	rm_smtp_mail_check says beforehand what the server lacks for a
 *	message, first of: BINARYMIME (cannot be sent), SMTPUTF8 (m->smtputf8:
 *	the sender asked for it; RFC 6531 3.4 says bounce with 5.6.7, unless
 *	the caller knows every address and header is ASCII, and then the
 *	writer leaves the parameter out), SIZE (larger than the server's
 *	limit: 552 5.3.4 is what it would say), 8BITMIME (RFC 6152 forbids
 *	8-bit content then; the caller decides, as MTAs differ).
 *	AUTH PLAIN carries the RFC 4616 message as an RFC 4954 initial
 *	response (base64; authzid may be "" or NULL, authcid and passwd not;
 *	the proto/sasl limits); the stack copy holding the password is wiped.
 *	A buffer of RM_SMTP_CLIENT_CMD_BYTES_MAX (RM_SMTP_CLIENT_AUTH_BYTES_MAX
 *	for AUTH) holds every command whose arguments are accepted.
 *
 *	DATA content (rm_smtp_dotstuff_*).  A stream encoder: content in,
 *	chunks cut anywhere; out, the bytes to send after the 354, at most
 *	out_cap per call (*out_len says how many), resumable at any byte: a
 *	line that starts with "." gets another one (RFC 5321 4.5.2), and
 *	every line end is sent as CR LF.  RFC 5321 2.3.8 says a client must
 *	never send a bare CR or LF; the spool holds what our server accepted,
 *	which may have them (BDAT, or its NORMALISE mode), so a bare LF and a
 *	bare CR each become CR LF (st->bare_lf, st->bare_cr note it).  That is
 *	also what keeps the content from ending the data early at a receiver
 *	that takes bare line ends as line ends (SMTP smuggling): every dot
 *	that any receiver can see at a line start is doubled.
 *	rm_smtp_dotstuff_end writes what is still owed and the end of data:
 *	"." CR LF when the content ended with a line end (or was empty: the
 *	DATA command's CR LF is the line end), else CR LF "." CR LF, so the
 *	receiver's content then ends with a CR LF the spool did not have (DATA
 *	cannot carry any other ending; BDAT can).  st->in_bytes and
 *	st->out_bytes count both sides.
 * DIAGNOSTICS
 *	rm_smtp_replyp_error: RM_SMTP_REPLYP_OK, or the terminal error;
 *	rm_smtp_replyp_err_text names each for the log.  Writers return -1
 *	when the command does not fit cap or an argument is refused; buf then
 *	holds nothing to send.  rm_smtp_dotstuff_feed with out_cap > 0 and
 *	len > 0 always consumes a byte or writes one (with out_cap >= 2 it
 *	always consumes); rm_smtp_dotstuff_end returns -1 when cap is smaller
 *	than what it must write (RM_SMTP_DOTSTUFF_END_BYTES_MAX is always
 *	enough) and then changes nothing.  A line_bytes_max below
 *	RM_SMTP_CLIENT_LINE_BYTES_MIN, lines_max 0, or a NULL input with
 *	len > 0 are bugs and panic (RM_ASSERT).
 */
#ifndef RM_SMTP_CLIENT_H
#define RM_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/sasl.h"
#include "proto/smtp_cmd.h"

/* The reply text kept (lines' text and their LF separators), the NUL apart. */
#define RM_SMTP_CLIENT_REPLY_BYTES_MAX 4096u
/* Line limits: "CCC" CR LF is the shortest line; Postfix reads 2048-byte lines. */
#define RM_SMTP_CLIENT_LINE_BYTES_MIN 5u
#define RM_SMTP_CLIENT_LINE_BYTES_DEFAULT 2048u
#define RM_SMTP_CLIENT_LINES_DEFAULT 64u
/* "5.123.123": RFC 3463 class, subject and detail at their longest. */
#define RM_SMTP_CLIENT_ENHANCED_BYTES_MAX 9u
/*
 * Every command with accepted arguments fits: the longest is RCPT (9 + a
 * 254-byte mailbox + ">" + 29 for NOTIFY + 7 + 500 for ORCPT + 2 = 802).
 */
#define RM_SMTP_CLIENT_CMD_BYTES_MAX 1024u
/* "AUTH PLAIN " + the longest PLAIN message in base64 + CR LF. */
#define RM_SMTP_CLIENT_AUTH_BYTES_MAX (11u + RM_SASL_PLAIN_BASE64_BYTES_MAX + 2u)
/* An owed byte and CR LF "." CR LF. */
#define RM_SMTP_DOTSTUFF_END_BYTES_MAX 6u

enum rm_smtp_replyp_err {
	RM_SMTP_REPLYP_OK = 0,
	RM_SMTP_REPLYP_E_SYNTAX,	/* not 3 digits then SP, '-' or the line end */
	RM_SMTP_REPLYP_E_CODE,		/* first digit not 2-5, or second not 0-5 */
	RM_SMTP_REPLYP_E_CODE_CHANGED,	/* a line with another code than the first */
	RM_SMTP_REPLYP_E_LINE_TOO_LONG,	/* past line_bytes_max */
	RM_SMTP_REPLYP_E_TOO_MANY_LINES,	/* a continuation after lines_max lines */
	RM_SMTP_REPLYP_E_COUNT
};

struct rm_smtp_server_reply {
	bool complete;			/* the rest is set only when this is */
	uint16_t code;
	char enhanced[RM_SMTP_CLIENT_ENHANCED_BYTES_MAX + 1];	/* "" when none */
	const char *text;		/* in the parser, valid until its next feed */
	size_t text_len;
	unsigned lines;
	unsigned replaced;		/* text bytes stored as '?' */
	bool text_truncated;
	bool bare_lf;			/* some line ended with LF alone */
	bool long_line;			/* some line passed RFC 5321's 512 bytes */
};

struct rm_smtp_replyp {
	/* Set at init. */
	size_t line_bytes_max;
	unsigned lines_max;
	/* Where the parser is: plain values. */
	uint8_t state;
	uint8_t cr_from;		/* the state a CR came from */
	bool reset;			/* the last feed ended a reply: start a new one */
	enum rm_smtp_replyp_err err;
	bool last_line;			/* this line's separator was SP or the line end */
	size_t line_bytes;		/* bytes of the current line so far */
	uint16_t code;			/* the first line's code, once known */
	uint16_t line_code;		/* the current line's, digit by digit */
	uint8_t head_len;		/* line text held to look for an enhanced code */
	uint8_t head[RM_SMTP_CLIENT_ENHANCED_BYTES_MAX + 1];
	/* The reply so far. */
	unsigned lines;
	unsigned replaced;
	bool text_truncated, bare_lf, long_line;
	uint8_t enhanced_len;
	char enhanced[RM_SMTP_CLIENT_ENHANCED_BYTES_MAX + 1];
	size_t text_len;
	char text[RM_SMTP_CLIENT_REPLY_BYTES_MAX + 1];
};

/* What the server's EHLO answer offered. */
#define RM_SMTP_EHLO_PIPELINING 0x001u
#define RM_SMTP_EHLO_SIZE 0x002u
#define RM_SMTP_EHLO_8BITMIME 0x004u
#define RM_SMTP_EHLO_SMTPUTF8 0x008u
#define RM_SMTP_EHLO_CHUNKING 0x010u
#define RM_SMTP_EHLO_BINARYMIME 0x020u
#define RM_SMTP_EHLO_DSN 0x040u
#define RM_SMTP_EHLO_ENHANCEDSTATUSCODES 0x080u
#define RM_SMTP_EHLO_STARTTLS 0x100u
#define RM_SMTP_EHLO_AUTH 0x200u

#define RM_SMTP_AUTH_MECH_PLAIN 0x01u
#define RM_SMTP_AUTH_MECH_LOGIN 0x02u

struct rm_smtp_ehlo {
	uint32_t ext;			/* RM_SMTP_EHLO_* */
	uint32_t auth_mechs;		/* RM_SMTP_AUTH_MECH_* */
	uint64_t size_bytes_max;	/* SIZE's value; 0: no limit known */
};

/* MAIL FROM, from the spool's envelope.  Strings are bytes with a length. */
struct rm_smtp_mail_args {
	const char *reverse_path;	/* mailbox without < >; length 0: the null sender */
	size_t reverse_path_len;
	uint64_t size_bytes;		/* SIZE=; 0: not sent */
	enum rm_smtp_body body;		/* proto/smtp_cmd.h; NONE: not sent */
	bool smtputf8;			/* the sender asked for SMTPUTF8 */
	enum rm_smtp_ret ret;		/* NONE: not sent */
	const char *envid;		/* xtext as received; length 0: not sent */
	size_t envid_len;
};

struct rm_smtp_rcpt_args {
	const char *forward_path;	/* mailbox without < > */
	size_t forward_path_len;
	uint8_t notify;			/* RM_SMTP_NOTIFY_*; 0: not sent */
	const char *orcpt;		/* "addr-type;xtext" as received; length 0: not sent */
	size_t orcpt_len;
	bool smtputf8;			/* this transaction's MAIL carried SMTPUTF8 */
};

enum rm_smtp_mail_check {
	RM_SMTP_MAIL_OK = 0,
	RM_SMTP_MAIL_E_BINARYMIME,	/* BODY=BINARYMIME without BINARYMIME + CHUNKING */
	RM_SMTP_MAIL_E_SMTPUTF8,	/* SMTPUTF8 asked for, not offered */
	RM_SMTP_MAIL_E_SIZE,		/* larger than the server's SIZE */
	RM_SMTP_MAIL_E_8BITMIME,	/* BODY=8BITMIME, not offered */
};

struct rm_smtp_dotstuff {
	bool line_start;		/* the output so far is empty or ends with CR LF */
	bool after_cr;			/* the last input byte was a CR (sent as CR LF) */
	uint8_t owed;			/* a byte still to write (0: none) */
	bool bare_cr, bare_lf;
	uint64_t in_bytes, out_bytes;
};

void rm_smtp_replyp_init(struct rm_smtp_replyp *p, size_t line_bytes_max, unsigned lines_max);
size_t rm_smtp_replyp_feed(struct rm_smtp_replyp *p, const uint8_t *in, size_t len,
			   struct rm_smtp_server_reply *out);
enum rm_smtp_replyp_err rm_smtp_replyp_error(const struct rm_smtp_replyp *p);
const char *rm_smtp_replyp_err_text(enum rm_smtp_replyp_err err);

void rm_smtp_ehlo_parse(const struct rm_smtp_server_reply *r, struct rm_smtp_ehlo *out);
enum rm_smtp_mail_check rm_smtp_mail_check(const struct rm_smtp_mail_args *m,
					   const struct rm_smtp_ehlo *e);

ssize_t rm_smtp_write_ehlo(uint8_t *buf, size_t cap, const char *domain);
ssize_t rm_smtp_write_helo(uint8_t *buf, size_t cap, const char *domain);
ssize_t rm_smtp_write_mail(uint8_t *buf, size_t cap, const struct rm_smtp_mail_args *m,
			   const struct rm_smtp_ehlo *e);
ssize_t rm_smtp_write_rcpt(uint8_t *buf, size_t cap, const struct rm_smtp_rcpt_args *r,
			   const struct rm_smtp_ehlo *e);
ssize_t rm_smtp_write_data(uint8_t *buf, size_t cap);
ssize_t rm_smtp_write_bdat(uint8_t *buf, size_t cap, uint64_t bytes, bool last);
ssize_t rm_smtp_write_rset(uint8_t *buf, size_t cap);
ssize_t rm_smtp_write_quit(uint8_t *buf, size_t cap);
ssize_t rm_smtp_write_starttls(uint8_t *buf, size_t cap);
ssize_t rm_smtp_write_auth_plain(uint8_t *buf, size_t cap, const char *authzid,
				 const char *authcid, const char *passwd);

void rm_smtp_dotstuff_init(struct rm_smtp_dotstuff *st);
size_t rm_smtp_dotstuff_feed(struct rm_smtp_dotstuff *st, const uint8_t *in, size_t len,
			     uint8_t *out, size_t out_cap, size_t *out_len);
ssize_t rm_smtp_dotstuff_end(struct rm_smtp_dotstuff *st, uint8_t *out, size_t cap);

#endif
