/*
 * NAME
 *	smtp_addr - RFC 5321 paths, mailboxes and domains
 * SUMMARY
 *	#include "proto/smtp_addr.h"
 *
 *	void rm_smtp_addr_limits_default(struct rm_smtp_addr_limits *lim);
 *	enum rm_smtp_addr_err rm_smtp_path_parse(const uint8_t *s, size_t len,
 *			unsigned flags, const struct rm_smtp_addr_limits *lim,
 *			struct rm_smtp_path *out, size_t *consumed);
 *	enum rm_smtp_addr_err rm_smtp_mailbox_parse(const uint8_t *s, size_t len,
 *			unsigned flags, const struct rm_smtp_addr_limits *lim,
 *			struct rm_smtp_path *out);
 *	enum rm_smtp_addr_err rm_smtp_domain_parse(const uint8_t *s, size_t len,
 *			unsigned flags, const struct rm_smtp_addr_limits *lim,
 *			struct rm_smtp_domain *out);
 *	ssize_t rm_smtp_local_unquote(const struct rm_smtp_path *p, uint8_t *out, size_t cap);
 *	ssize_t rm_smtp_mailbox_render(const struct rm_smtp_path *p, uint8_t *out, size_t cap);
 *	ssize_t rm_smtp_path_render(const struct rm_smtp_path *p, uint8_t *out, size_t cap);
 *	ssize_t rm_smtp_domain_normalise(const uint8_t *d, size_t len, uint8_t *out, size_t cap);
 *	bool rm_smtp_path_is_postmaster(const struct rm_smtp_path *p);
 *	bool rm_smtp_mailbox_split(const uint8_t *s, size_t len, size_t *at);
 *	bool rm_smtp_utf8_valid(const uint8_t *s, size_t len);
 *	const char *rm_smtp_addr_err_text(enum rm_smtp_addr_err err);
 * DESCRIPTION
 *	Pure codec: no I/O, no allocation, no copies.  Every string in a
 *	result points into the caller's input, with its length; the input
 *	must outlive the result.
 *
 *	rm_smtp_path_parse reads one RFC 5321 Path (or Reverse-path) starting
 *	at s[0] == '<' and stops after its '>': *consumed says how many bytes
 *	that was, so a command parser goes on with what follows (parameters).
 *	  Path     = "<" [ A-d-l ":" ] Mailbox ">"   A-d-l = "@" Domain *("," "@" Domain)
 *	  Mailbox  = Local-part "@" ( Domain / address-literal )
 *	The source route (A-d-l) is checked, then ignored (RFC 5321 C):
 *	out->route says one was there.  Flags:
 *	  RM_SMTP_ADDR_NULL_OK     "<>" is accepted (MAIL FROM: the null
 *	                           reverse path); out->null is set;
 *	  RM_SMTP_ADDR_UTF8        UTF-8 in local parts and domains (the
 *	                           transaction has SMTPUTF8, RFC 6531); without
 *	                           it any byte >= 0x80 is RM_SMTP_ADDR_E_UTF8;
 *	                           with it UTF-8 must be well formed (no
 *	                           overlong forms, no surrogates, <= U+10FFFF);
 *	  RM_SMTP_ADDR_POSTMASTER  "<Postmaster>" without a domain is accepted
 *	                           (RCPT TO, RFC 5321 4.5.1; any case);
 *	                           out->bare_postmaster is set;
 *	  RM_SMTP_ADDR_TRAILING_DOT one final "." after a domain name is
 *	                           accepted ("user@example.org."), which RFC
 *	                           5321 does not allow; off by default.
 *	Local parts are a Dot-string or a Quoted-string; out->local is the
 *	part as written (quotes and backslashes included) and
 *	out->local_unquoted_len the length of its content (quotes removed,
 *	each quoted-pair one byte).  `"a.b"@x` and `a.b@x` are the same
 *	mailbox: rm_smtp_local_unquote writes the content, and
 *	rm_smtp_mailbox_render the canonical form (a Dot-string when the
 *	content is one, else a Quoted-string with only '"' and '\' escaped),
 *	which is never longer than what was written, so it parses again under
 *	the same flags and limits to the same content.  rm_smtp_path_render
 *	is that between < > (the route dropped; "<>" for the null path).
 *
 *	Domains are letter-digit-hyphen labels separated by dots (a label
 *	starts and ends with a letter or digit; with RM_SMTP_ADDR_UTF8 a
 *	non-ASCII character counts as a letter) or an address literal:
 *	"[" IPv4 "]" or "[IPv6:" IPv6 "]" (tag in any case), validated as
 *	inet_pton(3) does (no leading zeros in IPv4 parts, "::" for one or
 *	more zero groups, an embedded IPv4 tail), implemented here; out->ip
 *	holds the address in network order.  Other tags (RFC 5321
 *	General-address-literal) are refused: none is standardised.
 *	rm_smtp_domain_parse checks that all of s[0..len) is one such domain
 *	(HELO/EHLO).  rm_smtp_mailbox_parse checks that all of it is one
 *	Mailbox without brackets or route (configuration, stored addresses).
 *
 *	Limits (struct rm_smtp_addr_limits, NULL for the defaults; RFC 5321
 *	4.5.3.1): local part as written <= local_bytes_max (64), domain as
 *	written <= domain_bytes_max (255), each ASCII label <= label_bytes_max
 *	(63; a label with non-ASCII bytes is bounded only by the domain, since
 *	its A-label length is not known here), the whole path with its
 *	brackets <= path_bytes_max (256).
 *
 *	Policy helpers: out->local_route_chars has RM_SMTP_LOCAL_PERCENT,
 *	_BANG and _AT for '%', '!' and a quoted '@' in the local part's content
 *	(old source routing forms a relay may refuse; the caller decides).
 *	rm_smtp_path_is_postmaster: the local part's content is "postmaster" in
 *	any case (the caller checks the domain is one of its own).
 *	rm_smtp_domain_normalise writes a domain for policy lookups: ASCII
 *	lower case, one trailing dot dropped (non-ASCII bytes are copied as
 *	they are; address literals are lower-cased text, compare out->ip for
 *	addresses).  rm_smtp_mailbox_split finds the '@' between local part and
 *	domain of a stored mailbox string (the last '@': a domain has none).
 * DIAGNOSTICS
 *	Parsers return RM_SMTP_ADDR_OK or the first error found, and
 *	rm_smtp_addr_err_text names it for logs.  Renderers and the normaliser
 *	return the length written, or -1 when cap is too small (nothing
 *	useful is left in out then).  Broken invariants panic (RM_ASSERT).
 */
#ifndef RM_SMTP_ADDR_H
#define RM_SMTP_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* RFC 5321 4.5.3.1 and RFC 1035 2.3.4. */
#define RM_SMTP_LOCAL_BYTES_MAX 64u
#define RM_SMTP_DOMAIN_BYTES_MAX 255u
#define RM_SMTP_LABEL_BYTES_MAX 63u
#define RM_SMTP_PATH_BYTES_MAX 256u

struct rm_smtp_addr_limits {
	size_t local_bytes_max;
	size_t domain_bytes_max;
	size_t label_bytes_max;
	size_t path_bytes_max;
};

#define RM_SMTP_ADDR_NULL_OK 0x01u
#define RM_SMTP_ADDR_UTF8 0x02u
#define RM_SMTP_ADDR_POSTMASTER 0x04u
#define RM_SMTP_ADDR_TRAILING_DOT 0x08u

enum rm_smtp_addr_err {
	RM_SMTP_ADDR_OK = 0,
	RM_SMTP_ADDR_E_NO_OPEN,		/* no '<' where a path starts */
	RM_SMTP_ADDR_E_NO_CLOSE,	/* the mailbox is not followed by '>' */
	RM_SMTP_ADDR_E_NULL,		/* "<>" where it is not allowed */
	RM_SMTP_ADDR_E_ROUTE,		/* bad source route */
	RM_SMTP_ADDR_E_LOCAL,		/* bad local part */
	RM_SMTP_ADDR_E_NO_AT,		/* local part without "@domain" */
	RM_SMTP_ADDR_E_DOMAIN,		/* bad domain name */
	RM_SMTP_ADDR_E_LITERAL,		/* bad address literal */
	RM_SMTP_ADDR_E_LABEL_TOO_LONG,
	RM_SMTP_ADDR_E_LOCAL_TOO_LONG,
	RM_SMTP_ADDR_E_DOMAIN_TOO_LONG,
	RM_SMTP_ADDR_E_PATH_TOO_LONG,
	RM_SMTP_ADDR_E_UTF8,		/* non-ASCII without RM_SMTP_ADDR_UTF8 */
	RM_SMTP_ADDR_E_BAD_UTF8,	/* malformed UTF-8 */
	RM_SMTP_ADDR_E_TRAILING,	/* bytes after a whole mailbox or domain */
	RM_SMTP_ADDR_E_COUNT
};

enum rm_smtp_domain_kind {
	RM_SMTP_DOMAIN_NONE = 0,	/* no domain (null path, bare postmaster) */
	RM_SMTP_DOMAIN_NAME,
	RM_SMTP_DOMAIN_IPV4,
	RM_SMTP_DOMAIN_IPV6,
};

struct rm_smtp_domain {
	const uint8_t *text;		/* as written; a literal with its brackets */
	size_t len;
	enum rm_smtp_domain_kind kind;
	bool utf8;			/* has non-ASCII bytes */
	bool trailing_dot;		/* RM_SMTP_ADDR_TRAILING_DOT used */
	uint8_t ip[16];			/* IPV4: 4 bytes, IPV6: 16, network order */
};

#define RM_SMTP_LOCAL_PERCENT 0x01u
#define RM_SMTP_LOCAL_BANG 0x02u
#define RM_SMTP_LOCAL_AT 0x04u

struct rm_smtp_path {
	const uint8_t *text;		/* the path as written, "<" to ">" */
	size_t len;
	bool null;			/* "<>" */
	bool route;			/* a source route was given (ignored) */
	bool bare_postmaster;		/* "<Postmaster>": no domain */
	bool local_quoted;
	bool utf8;			/* non-ASCII anywhere (route included) */
	unsigned local_route_chars;	/* RM_SMTP_LOCAL_* */
	const uint8_t *mailbox;		/* local "@" domain as written, no route */
	size_t mailbox_len;
	const uint8_t *local;		/* as written, quotes included */
	size_t local_len;
	size_t local_unquoted_len;
	struct rm_smtp_domain domain;
};

void rm_smtp_addr_limits_default(struct rm_smtp_addr_limits *lim);
enum rm_smtp_addr_err rm_smtp_path_parse(const uint8_t *s, size_t len, unsigned flags,
					 const struct rm_smtp_addr_limits *lim,
					 struct rm_smtp_path *out, size_t *consumed);
enum rm_smtp_addr_err rm_smtp_mailbox_parse(const uint8_t *s, size_t len, unsigned flags,
					    const struct rm_smtp_addr_limits *lim,
					    struct rm_smtp_path *out);
enum rm_smtp_addr_err rm_smtp_domain_parse(const uint8_t *s, size_t len, unsigned flags,
					   const struct rm_smtp_addr_limits *lim,
					   struct rm_smtp_domain *out);
ssize_t rm_smtp_local_unquote(const struct rm_smtp_path *p, uint8_t *out, size_t cap);
ssize_t rm_smtp_mailbox_render(const struct rm_smtp_path *p, uint8_t *out, size_t cap);
ssize_t rm_smtp_path_render(const struct rm_smtp_path *p, uint8_t *out, size_t cap);
ssize_t rm_smtp_domain_normalise(const uint8_t *d, size_t len, uint8_t *out, size_t cap);
bool rm_smtp_path_is_postmaster(const struct rm_smtp_path *p);
bool rm_smtp_mailbox_split(const uint8_t *s, size_t len, size_t *at);
bool rm_smtp_utf8_valid(const uint8_t *s, size_t len);
const char *rm_smtp_addr_err_text(enum rm_smtp_addr_err err);

#endif
