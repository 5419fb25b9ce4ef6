/*
 * NAME
 *	dns_msg - DNS response messages (RFC 1035): header, answers, MX, A, AAAA
 * SUMMARY
 *	#include "proto/dns_msg.h"
 *
 *	int rm_dns_msg_parse(const uint8_t *buf, size_t len, struct rm_dns_msg *m);
 *	int rm_dns_msg_next(struct rm_dns_msg *m, struct rm_dns_rr *rr);
 *	int rm_dns_name_decode(const uint8_t *buf, size_t len, size_t off,
 *			       char *out, size_t cap, size_t *end);
 *	int rm_dns_rr_mx(const struct rm_dns_msg *m, const struct rm_dns_rr *rr,
 *			 uint16_t *preference, char *host, size_t cap);
 *	bool rm_dns_name_equal(const char *a, const char *b);
 *	const char *rm_dns_msg_error(int err);
 * DESCRIPTION
 *	Pure codec over a response as c-ares hands it (core/dns.h gives the raw
 *	bytes; the parsing is ours so that it is fuzzed and bounded here).
 *	rm_dns_msg_parse reads the 12-byte header and steps over the question
 *	section; m then walks the records of the answer, authority and
 *	additional sections in order with rm_dns_msg_next, which fills rr with
 *	the owner name (decoded), type, class, TTL and where its RDATA lies,
 *	and the section it came from.  Nothing is copied but names, into the
 *	caller's buffers.
 *
 *	Names (RFC 1035 4.1.4) are decoded with compression pointers followed
 *	at most RM_DNS_POINTERS_MAX times and only backwards (a pointer at or
 *	after its own position is refused, so no loop is possible), labels of
 *	1..63 bytes, the whole name at most 255 bytes on the wire; the text form
 *	is the labels joined by '.', without the final dot ("" for the root),
 *	lower-cased ASCII, and a label holding '.', a control byte or a byte
 *	over 126 is refused (nothing a mail domain can be; it would otherwise
 *	smuggle a different name into logs and lookups).
 *
 *	rm_dns_rr_mx decodes MX RDATA: preference and exchange (the name may be
 *	compressed: the message is needed).  A record type that does not match
 *	its RDATA length (A not 4 bytes, AAAA not 16) is an error for
 *	rm_dns_msg_next.  m->rcode, m->tc (truncated), m->aa are from the header.
 * DIAGNOSTICS
 *	rm_dns_msg_parse: 0 or a negative RM_DNS_E_*; rm_dns_msg_next: 1 with a
 *	record, 0 at the end, or a negative RM_DNS_E_*; rm_dns_msg_error names
 *	them.  After an error the message must not be walked further.
 */
#ifndef RM_DNS_MSG_H
#define RM_DNS_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RM_DNS_NAME_BYTES_MAX 255u	/* on the wire, RFC 1035 2.3.4 */
#define RM_DNS_NAME_TEXT_MAX 254u	/* text form without the final dot, NUL excluded */
#define RM_DNS_POINTERS_MAX 32u
#define RM_DNS_RECORDS_MAX 512u		/* records walked per message */

#define RM_DNS_TYPE_A 1u
#define RM_DNS_TYPE_NS 2u
#define RM_DNS_TYPE_CNAME 5u
#define RM_DNS_TYPE_SOA 6u
#define RM_DNS_TYPE_MX 15u
#define RM_DNS_TYPE_AAAA 28u
#define RM_DNS_CLASS_IN 1u

#define RM_DNS_RCODE_NOERROR 0u
#define RM_DNS_RCODE_FORMERR 1u
#define RM_DNS_RCODE_SERVFAIL 2u
#define RM_DNS_RCODE_NXDOMAIN 3u
#define RM_DNS_RCODE_REFUSED 5u

enum {
	RM_DNS_E_SHORT = -1,		/* ends inside the header or a record */
	RM_DNS_E_NOT_RESPONSE = -2,	/* QR bit clear */
	RM_DNS_E_NAME = -3,		/* bad label, name too long, bad pointer */
	RM_DNS_E_RDATA = -4,		/* RDATA length wrong for its type */
	RM_DNS_E_TOO_MANY = -5,		/* more than RM_DNS_RECORDS_MAX records */
};

enum rm_dns_section { RM_DNS_ANSWER = 0, RM_DNS_AUTHORITY, RM_DNS_ADDITIONAL };

struct rm_dns_msg {
	const uint8_t *buf;
	size_t len;
	uint16_t id;
	uint8_t rcode;
	bool tc, aa;
	uint16_t counts[3];		/* answer, authority, additional */
	/* walking */
	size_t pos;
	uint8_t section;
	uint16_t left;			/* records left in the section */
	unsigned walked;
};

struct rm_dns_rr {
	char name[RM_DNS_NAME_TEXT_MAX + 1];
	uint16_t type;
	uint16_t cls;
	uint32_t ttl;
	enum rm_dns_section section;
	size_t rdata_off;		/* into m->buf */
	uint16_t rdlen;
};

int rm_dns_msg_parse(const uint8_t *buf, size_t len, struct rm_dns_msg *m);
int rm_dns_msg_next(struct rm_dns_msg *m, struct rm_dns_rr *rr);
int rm_dns_name_decode(const uint8_t *buf, size_t len, size_t off, char *out, size_t cap, size_t *end);
int rm_dns_rr_mx(const struct rm_dns_msg *m, const struct rm_dns_rr *rr, uint16_t *preference, char *host,
		 size_t cap);
bool rm_dns_name_equal(const char *a, const char *b);
const char *rm_dns_msg_error(int err);

#endif
