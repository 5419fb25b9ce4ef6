/*
 * NAME
 *	smtp_cmd - SMTP server command line parser
 * SUMMARY
 *	#include "proto/smtp_cmd.h"
 *
 *	void rm_smtp_cmd_opts_default(struct rm_smtp_cmd_opts *o);
 *	enum rm_smtp_cmd_err rm_smtp_cmd_parse(const uint8_t *line, size_t len,
 *			const struct rm_smtp_cmd_opts *o, struct rm_smtp_cmd *out);
 *	const struct rm_smtp_status *rm_smtp_cmd_status(enum rm_smtp_cmd_err err);
 *	const char *rm_smtp_verb_name(enum rm_smtp_verb verb);
 *	bool rm_smtp_xtext_valid(const uint8_t *s, size_t len, size_t *decoded_len);
 *	ssize_t rm_smtp_xtext_decode(const uint8_t *s, size_t len, uint8_t *out, size_t cap);
 * DESCRIPTION
 *	Pure codec: one command line in (its text without the CR LF, as
 *	proto/linesplit gives it: in place in the receive buffer or in the
 *	splitter's hold buffer), one struct out.  No copies: every string in
 *	the result points into the line, with its length, and is valid as
 *	long as the line is.  out->verb is set whenever the verb is known,
 *	even when the rest of the line is refused, so the session can count
 *	errors per verb.
 *
 *	Verbs (any case): EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY
 *	EXPN HELP STARTTLS AUTH; anything else is RM_SMTP_VERB_UNKNOWN with
 *	RM_SMTP_E_UNKNOWN_VERB (500 5.5.1).  The verb is the text up to the
 *	first SP, and exactly one SP separates it from its argument.
 *	  EHLO/HELO SP (Domain / address-literal)    -> out->helo
 *	  MAIL FROM:<reverse-path> [SP params]       -> out->path (may be null)
 *	  RCPT TO:<forward-path> [SP params]         -> out->path (or <Postmaster>)
 *	  DATA, RSET, QUIT, STARTTLS                 no argument
 *	  NOOP, HELP [SP text]; VRFY, EXPN SP text   -> out->arg (printable ASCII,
 *	                                             not starting or ending with SP;
 *	                                             never interpreted here)
 *	  BDAT SP size [SP LAST]                     -> out->bdat_bytes, bdat_last
 *	  AUTH SP mechanism [SP initial-response]    -> out->auth_mech, auth_initial
 *	One SP between "FROM:"/"TO:" and "<" is tolerated (many clients send
 *	it); nothing else is: no other extra spaces, no tab, no path without
 *	brackets, no trailing SP, no control byte anywhere (RM_SMTP_E_BAD_CHAR),
 *	no non-ASCII outside a MAIL/RCPT path.
 *
 *	MAIL parameters: SIZE=1*20DIGIT (a value past 2^64-1 reads as
 *	UINT64_MAX, which any size limit refuses), BODY=7BIT|8BITMIME|BINARYMIME
 *	(BINARYMIME only with RM_SMTP_EXT_BINARYMIME, else 504), SMTPUTF8 (no
 *	value), RET=FULL|HDRS, ENVID=xtext (at most envid_bytes_max as sent,
 *	decoding to printable ASCII), AUTH=xtext ("<>" included: checked, kept
 *	in out->auth_param for the session to ignore).  RCPT parameters:
 *	NOTIFY=NEVER or a list of SUCCESS, FAILURE, DELAY (each at most once),
 *	ORCPT=addr-type;xtext (at most orcpt_bytes_max, decoding to printable
 *	ASCII).  Keywords and values in any case.  A parameter of an extension
 *	not in o->ext, or of the other verb, or unknown, is
 *	RM_SMTP_E_PARAM_UNKNOWN (555 5.5.4); the same keyword twice is
 *	RM_SMTP_E_PARAM_DUP.  xtext values are given as sent (the spool stores
 *	them so, and the client relays them so) with their decoded length;
 *	rm_smtp_xtext_decode writes the decoded form where one is needed (a
 *	DSN report).
 *
 *	UTF-8 (RFC 6531): a MAIL path may hold UTF-8 when o->ext has
 *	RM_SMTP_EXT_SMTPUTF8 and the same command has the SMTPUTF8 parameter;
 *	a RCPT path when o->smtputf8 says its transaction's MAIL had it.
 *	Otherwise a non-ASCII path is RM_SMTP_E_SENDER_UTF8 /
 *	RM_SMTP_E_RCPT_UTF8 (553 5.6.7).
 *
 *	Each error has its own code, enhanced code and short text
 *	(rm_smtp_cmd_status, ready for rm_smtp_reply_status); a path error
 *	also leaves the address codec's reason in out->addr_err for the log.
 *	RM_SMTP_E_LINE_TOO_LONG (500 5.5.6) is never returned by the parser:
 *	it is the reply for the line splitter's RM_LINE_TOO_LONG, given here so
 *	that every command-level reply lives in one table.
 *
 *	Limits (struct rm_smtp_cmd_opts; rm_smtp_cmd_opts_default gives every
 *	extension and the RFC values): the address limits of
 *	proto/smtp_addr.h, envid_bytes_max (RFC 3461: 100), orcpt_bytes_max
 *	(RFC 3461: 500).  The command line length (RFC 5321: 512 octets with
 *	the CR LF, RM_SMTP_CMD_LINE_BYTES_MAX; RFC 4954 allows AUTH lines of
 *	12288) is the line splitter's line_max, set by the session.
 * DIAGNOSTICS
 *	rm_smtp_cmd_parse returns out->err.  After RM_SMTP_E_BDAT_SYNTAX the
 *	session cannot know how many octets of chunk follow, so it can only
 *	answer and close.  rm_smtp_xtext_decode returns the decoded length, or
 *	-1 for bad xtext or too small a buffer.
 */
#ifndef RM_SMTP_CMD_H
#define RM_SMTP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/smtp_addr.h"
#include "proto/smtp_reply.h"

/* RFC 5321 4.5.3.1.4, CR LF included (text lines: RM_SMTP_DATA_LINE_BYTES_MAX); RFC 4954 4. */
#define RM_SMTP_CMD_LINE_BYTES_MAX 512u
#define RM_SMTP_AUTH_LINE_BYTES_MAX 12288u
/* RFC 3461 4.4 and 4.2, as sent (xtext). */
#define RM_SMTP_ENVID_BYTES_MAX 100u
#define RM_SMTP_ORCPT_BYTES_MAX 500u
/* RFC 4422 3.1: a SASL mechanism name. */
#define RM_SMTP_SASL_MECH_BYTES_MAX 20u
/* RFC 1870 / RFC 3030: size-value and chunk-size digits that fit in 64 bits. */
#define RM_SMTP_SIZE_DIGITS_MAX 20u

enum rm_smtp_verb {
	RM_SMTP_VERB_UNKNOWN = 0,
	RM_SMTP_VERB_EHLO,
	RM_SMTP_VERB_HELO,
	RM_SMTP_VERB_MAIL,
	RM_SMTP_VERB_RCPT,
	RM_SMTP_VERB_DATA,
	RM_SMTP_VERB_BDAT,
	RM_SMTP_VERB_RSET,
	RM_SMTP_VERB_NOOP,
	RM_SMTP_VERB_QUIT,
	RM_SMTP_VERB_VRFY,
	RM_SMTP_VERB_EXPN,
	RM_SMTP_VERB_HELP,
	RM_SMTP_VERB_STARTTLS,
	RM_SMTP_VERB_AUTH,
	RM_SMTP_VERB_COUNT
};

/* Extensions the session advertised: their parameters are recognised. */
#define RM_SMTP_EXT_SIZE 0x01u
#define RM_SMTP_EXT_8BITMIME 0x02u
#define RM_SMTP_EXT_SMTPUTF8 0x04u
#define RM_SMTP_EXT_DSN 0x08u
#define RM_SMTP_EXT_BINARYMIME 0x10u	/* with CHUNKING only */
#define RM_SMTP_EXT_AUTH 0x20u
#define RM_SMTP_EXT_ALL 0x3fu

enum rm_smtp_cmd_err {
	RM_SMTP_OK = 0,
	RM_SMTP_E_EMPTY,		/* 500 5.5.2 */
	RM_SMTP_E_UNKNOWN_VERB,		/* 500 5.5.1 */
	RM_SMTP_E_LINE_TOO_LONG,	/* 500 5.5.6, for the line splitter's event */
	RM_SMTP_E_BAD_CHAR,		/* 501 5.5.2 control byte, or non-ASCII outside a path */
	RM_SMTP_E_NO_ARGS,		/* 501 5.5.4 DATA/RSET/QUIT/STARTTLS with an argument */
	RM_SMTP_E_ARG_MISSING,		/* 501 5.5.4 VRFY/EXPN without one */
	RM_SMTP_E_ARG_SYNTAX,		/* 501 5.5.4 empty or space-padded argument */
	RM_SMTP_E_HELO_SYNTAX,		/* 501 5.5.4 HELO/EHLO without a domain */
	RM_SMTP_E_HELO_DOMAIN,		/* 501 5.5.4 not a domain or address literal */
	RM_SMTP_E_MAIL_SYNTAX,		/* 501 5.5.4 not "FROM:<" */
	RM_SMTP_E_RCPT_SYNTAX,		/* 501 5.5.4 not "TO:<" */
	RM_SMTP_E_SENDER_SYNTAX,	/* 501 5.1.7 */
	RM_SMTP_E_SENDER_TOO_LONG,	/* 501 5.1.7 */
	RM_SMTP_E_SENDER_UTF8,		/* 553 5.6.7 */
	RM_SMTP_E_RCPT_ADDR_SYNTAX,	/* 501 5.1.3 */
	RM_SMTP_E_RCPT_TOO_LONG,	/* 501 5.1.3 */
	RM_SMTP_E_RCPT_NULL,		/* 501 5.1.3 RCPT TO:<> */
	RM_SMTP_E_RCPT_UTF8,		/* 553 5.6.7 */
	RM_SMTP_E_AFTER_PATH,		/* 501 5.5.4 bytes right after '>' */
	RM_SMTP_E_PARAM_SYNTAX,		/* 501 5.5.4 */
	RM_SMTP_E_PARAM_UNKNOWN,	/* 555 5.5.4 */
	RM_SMTP_E_PARAM_DUP,		/* 501 5.5.4 */
	RM_SMTP_E_PARAM_NO_VALUE,	/* 501 5.5.4 SIZE, BODY, ... without "=value" */
	RM_SMTP_E_PARAM_HAS_VALUE,	/* 501 5.5.4 SMTPUTF8=... */
	RM_SMTP_E_SIZE_VALUE,		/* 501 5.5.4 */
	RM_SMTP_E_BODY_VALUE,		/* 504 5.5.4 */
	RM_SMTP_E_RET_VALUE,		/* 501 5.5.4 */
	RM_SMTP_E_ENVID_VALUE,		/* 501 5.5.4 */
	RM_SMTP_E_AUTH_PARAM_VALUE,	/* 501 5.5.4 */
	RM_SMTP_E_NOTIFY_VALUE,		/* 501 5.5.4 */
	RM_SMTP_E_ORCPT_VALUE,		/* 501 5.5.4 */
	RM_SMTP_E_BDAT_SYNTAX,		/* 501 5.5.4 */
	RM_SMTP_E_AUTH_SYNTAX,		/* 501 5.5.4 */
	RM_SMTP_E_AUTH_RESPONSE,	/* 501 5.5.2 initial response not base64 */
	RM_SMTP_E_COUNT
};

enum rm_smtp_body {
	RM_SMTP_BODY_NONE = 0,
	RM_SMTP_BODY_7BIT,
	RM_SMTP_BODY_8BITMIME,
	RM_SMTP_BODY_BINARYMIME,
};

enum rm_smtp_ret { RM_SMTP_RET_NONE = 0, RM_SMTP_RET_FULL, RM_SMTP_RET_HDRS };

/* DSN NOTIFY (RFC 3461); 0 = not given.  The same bits as the spool's RM_SPOOL_NOTIFY_*. */
#define RM_SMTP_NOTIFY_NEVER 0x01u
#define RM_SMTP_NOTIFY_SUCCESS 0x02u
#define RM_SMTP_NOTIFY_FAILURE 0x04u
#define RM_SMTP_NOTIFY_DELAY 0x08u

struct rm_smtp_span {
	const uint8_t *ptr;
	size_t len;
};

struct rm_smtp_cmd_opts {
	uint32_t ext;			/* RM_SMTP_EXT_* advertised */
	bool smtputf8;			/* RCPT: the transaction's MAIL had SMTPUTF8 */
	unsigned addr_flags;		/* extra RM_SMTP_ADDR_* (RM_SMTP_ADDR_TRAILING_DOT) */
	struct rm_smtp_addr_limits addr;
	size_t envid_bytes_max;
	size_t orcpt_bytes_max;
};

struct rm_smtp_cmd {
	enum rm_smtp_verb verb;
	enum rm_smtp_cmd_err err;
	enum rm_smtp_addr_err addr_err;	/* why a path or HELO domain was refused */
	struct rm_smtp_span verb_text;	/* as sent */
	struct rm_smtp_span arg;	/* everything after "VERB " */
	struct rm_smtp_domain helo;	/* HELO, EHLO */
	struct rm_smtp_path path;	/* MAIL, RCPT */
	/* MAIL parameters */
	bool size_given;
	bool smtputf8;
	enum rm_smtp_body body;
	enum rm_smtp_ret ret;
	uint64_t size_bytes;
	struct rm_smtp_span envid;	/* xtext as sent */
	size_t envid_decoded_len;
	struct rm_smtp_span auth_param;	/* AUTH= value as sent, ptr NULL if absent */
	/* RCPT parameters */
	uint8_t notify;			/* RM_SMTP_NOTIFY_* */
	struct rm_smtp_span orcpt_type;	/* addr-type, e.g. "rfc822" */
	struct rm_smtp_span orcpt;	/* xtext as sent, after the ';' */
	size_t orcpt_decoded_len;
	/* BDAT */
	bool bdat_last;
	uint64_t bdat_bytes;
	/* AUTH */
	struct rm_smtp_span auth_mech;
	struct rm_smtp_span auth_initial;	/* ptr NULL if absent; "=" is an empty response */
};

void rm_smtp_cmd_opts_default(struct rm_smtp_cmd_opts *o);
enum rm_smtp_cmd_err rm_smtp_cmd_parse(const uint8_t *line, size_t len,
				       const struct rm_smtp_cmd_opts *o, struct rm_smtp_cmd *out);
const struct rm_smtp_status *rm_smtp_cmd_status(enum rm_smtp_cmd_err err);
const char *rm_smtp_verb_name(enum rm_smtp_verb verb);
bool rm_smtp_xtext_valid(const uint8_t *s, size_t len, size_t *decoded_len);
ssize_t rm_smtp_xtext_decode(const uint8_t *s, size_t len, uint8_t *out, size_t cap);

#endif
