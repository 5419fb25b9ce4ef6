/*
 * NAME
 *	smtp_reply - SMTP server replies: code, enhanced status code, text
 * SUMMARY
 *	#include "proto/smtp_reply.h"
 *
 *	bool rm_smtp_reply_begin(struct rm_smtp_reply *r, uint8_t *buf, size_t cap,
 *				 unsigned code, const char *enhanced);
 *	void rm_smtp_reply_add(struct rm_smtp_reply *r, const char *text, size_t len);
 *	ssize_t rm_smtp_reply_end(struct rm_smtp_reply *r);
 *
 *	ssize_t rm_smtp_reply_line(uint8_t *buf, size_t cap, unsigned code,
 *				   const char *enhanced, const char *text);
 *	ssize_t rm_smtp_reply_status(uint8_t *buf, size_t cap,
 *				     const struct rm_smtp_status *st);
 *	ssize_t rm_smtp_reply_ehlo(uint8_t *buf, size_t cap, const char *domain,
 *				   const char *greeting, const char *const *keywords,
 *				   size_t n);
 *	bool rm_smtp_reply_code_valid(unsigned code);
 *	bool rm_smtp_enhanced_valid(const char *enhanced, unsigned code);
 * DESCRIPTION
 *	Pure codec: writes replies into a caller's buffer of cap bytes and
 *	never past it.  RFC 5321 4.2: "CCC-text" CRLF for every line but the
 *	last, "CCC text" CRLF for the last; with an enhanced status code
 *	(RFC 3463, RFC 2034) every line carries it: "550-5.1.1 text".
 *
 *	rm_smtp_reply_begin checks the code (RFC 5321: first digit 2-5,
 *	second 0-5) and the enhanced code (class.subject.detail, 1-3 digits
 *	each, class equal to the code's first digit; NULL for none, and it
 *	must be NULL for 3xx, which has no class); a bad one fails the reply.
 *	Each rm_smtp_reply_add is a line of text; text longer than a line can
 *	hold (r->line_bytes_max, RFC 5321's 512 octets with the CRLF by
 *	default; set the field after begin to change it) continues on the
 *	next lines, cut at that length.  rm_smtp_reply_end marks the last
 *	line and returns the reply's length.
 *
 *	Text is never trusted to be a single line: every byte that RFC 5321
 *	textstring does not allow (anything but HT and 32-126, so CR, LF, NUL,
 *	other controls and non-ASCII) is replaced by '?', and r->replaced
 *	counts them, so text from a peer or a file can never end a reply early
 *	or inject another one.
 *
 *	rm_smtp_reply_line is a one-line reply (text NUL-terminated, possibly
 *	continued as above); rm_smtp_reply_status the same from a
 *	struct rm_smtp_status (what the other SMTP codecs return for their
 *	errors).  rm_smtp_reply_ehlo builds the EHLO answer: "250-domain
 *	greeting", then one line per keyword ("PIPELINING", "SIZE 10485760",
 *	"AUTH PLAIN LOGIN"), the last with a space, and no enhanced codes
 *	(RFC 2034 leaves EHLO alone).  The domain must be 1*(33-126) bytes, the
 *	greeting is sanitised like any text, and each keyword line must be an
 *	RFC 5321 ehlo-line (keyword of letters, digits, '-', starting with a
 *	letter or digit, then SP-separated 33-126 parameters) that fits one line.
 * DIAGNOSTICS
 *	-1 for a reply that does not fit cap, a bad code or enhanced code, a
 *	bad EHLO domain or keyword, or a reply without a line; then buf holds
 *	nothing to send.
 */
#ifndef RM_SMTP_REPLY_H
#define RM_SMTP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* RFC 5321 4.5.3.1.5: a reply line, CRLF included. */
#define RM_SMTP_REPLY_LINE_BYTES_MAX 512u
/* "CCC-" + "5.123.123 " + CRLF: the smallest line_bytes_max that leaves text room. */
#define RM_SMTP_REPLY_LINE_BYTES_MIN 20u

/* A reply as the codecs hand it to the session: enhanced may be NULL. */
struct rm_smtp_status {
	uint16_t code;
	const char *enhanced;
	const char *text;
};

struct rm_smtp_reply {
	uint8_t *buf;
	size_t cap;
	size_t len;
	size_t line_bytes_max;		/* RM_SMTP_REPLY_LINE_BYTES_MAX after begin */
	size_t last_line;		/* offset of the last line written */
	unsigned lines;
	unsigned replaced;		/* text bytes replaced by '?' */
	bool failed;
	char code[3];
	uint8_t enhanced_len;
	char enhanced[12];
};

bool rm_smtp_reply_begin(struct rm_smtp_reply *r, uint8_t *buf, size_t cap, unsigned code,
			 const char *enhanced);
void rm_smtp_reply_add(struct rm_smtp_reply *r, const char *text, size_t len);
ssize_t rm_smtp_reply_end(struct rm_smtp_reply *r);
ssize_t rm_smtp_reply_line(uint8_t *buf, size_t cap, unsigned code, const char *enhanced,
			   const char *text);
ssize_t rm_smtp_reply_status(uint8_t *buf, size_t cap, const struct rm_smtp_status *st);
ssize_t rm_smtp_reply_ehlo(uint8_t *buf, size_t cap, const char *domain, const char *greeting,
			   const char *const *keywords, size_t n);
bool rm_smtp_reply_code_valid(unsigned code);
bool rm_smtp_enhanced_valid(const char *enhanced, unsigned code);

#endif
