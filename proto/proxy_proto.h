/*
 * NAME
 *	proxy_proto - PROXY protocol (HAProxy v1 text, v2 binary) header codec
 * SUMMARY
 *	#include "proto/proxy_proto.h"
 *
 *	void rm_proxy_opts_default(struct rm_proxy_opts *o);
 *	enum rm_proxy_status rm_proxy_parse(const uint8_t *in, size_t len,
 *			const struct rm_proxy_opts *o, struct rm_proxy_header *out);
 *	const char *rm_proxy_err_text(enum rm_proxy_err err);
 *	ssize_t rm_proxy_write_v1(const struct sockaddr *src, const struct sockaddr *dst,
 *			char *out, size_t cap);
 *	ssize_t rm_proxy_write_v2(const struct sockaddr *src, const struct sockaddr *dst,
 *			uint8_t *out, size_t cap);
 *	uint32_t rm_proxy_crc32c(const uint8_t *p, size_t len);
 * DESCRIPTION
 *	Pure codec (no I/O, no allocation, no state between calls) for the
 *	header a trusted proxy puts in front of a connection to tell the
 *	server who the client is.  The SMTP, IMAP and POP3 sessions of a
 *	listener with proxy_protocol enabled call rm_proxy_parse on the first
 *	bytes of the connection, before the greeting.  The header may arrive
 *	split over several receives: the caller keeps every byte it received
 *	and calls again with all of them, from the first, whenever more come.
 *	The answer depends only on the bytes given, never on how they were
 *	split: every prefix of an input gives either RM_PROXY_NEED_MORE or
 *	exactly the answer of the whole input.
 *
 *	  RM_PROXY_NEED_MORE  the bytes are a prefix of a header that may still
 *	                      be valid; call again with more.  At most
 *	                      RM_PROXY_V1_BYTES_MAX (107) bytes are ever
 *	                      needed for v1, 16 + o->v2_bytes_max for v2: past
 *	                      that the answer is RM_PROXY_ERROR.
 *	  RM_PROXY_OK         out->consumed bytes are the header; whatever
 *	                      follows is the protocol's own first bytes (a
 *	                      client may pipeline) and is not looked at.
 *	  RM_PROXY_ERROR      out->err says why (rm_proxy_err_text for the
 *	                      log); the session closes without a greeting.
 *
 *	Version: the v2 12-byte signature \r\n\r\n\0\r\nQUIT\n, or "PROXY "
 *	for v1.  Anything else is RM_PROXY_E_NOT_PROXY as soon as a byte
 *	differs from both ("EHLO": after one byte).  A signature of a version
 *	not in o->versions is read to its end and then refused with
 *	RM_PROXY_E_VERSION_OFF, so that the log can say what the proxy sent.
 *
 *	v1: "PROXY TCP4 src dst sport dport\r\n", the same with TCP6, or
 *	"PROXY UNKNOWN" followed by CR LF or by a space, any bytes but CR and
 *	LF, and CR LF.  Upper case, one space between fields.  Addresses as
 *	inet_pton(3) reads them, parsed here (IPv4: dotted quad, no leading
 *	zeros, each part at most 255; IPv6: hex groups, one "::", an IPv4
 *	tail), of the protocol's family; ports decimal 0-65535 without
 *	leading zeros.  CR LF ends the line; a bare LF, or CR without LF, is
 *	RM_PROXY_E_V1_CRLF.  The whole line is at most 107 bytes with its CR
 *	LF (the spec's worst case): a longer one is RM_PROXY_E_V1_TOO_LONG
 *	once 107 bytes are in.  Errors of syntax are found at the first byte
 *	that shows them.
 *
 *	v2: version 2; command LOCAL (0x20) or PROXY (0x21); family and
 *	transport TCP over IPv4 (0x11), TCP over IPv6 (0x21) or UNSPEC (0x00).
 *	UDP, AF_UNIX and unassigned values are refused: mail runs on TCP.
 *	The length (after the 16-byte fixed part) at most o->v2_bytes_max,
 *	and at least the family's address block (12, 36, 0), both judged as
 *	soon as the 16 bytes are in.  The rest (addresses, then TLVs: type,
 *	2-byte length, value) is judged once the whole header is in: every
 *	TLV, and every sub-TLV of PP2_TYPE_SSL, must end inside its parent
 *	(RM_PROXY_E_V2_TLV_TRUNCATED), at most RM_PROXY_V2_TLVS_MAX of them.
 *	Kept: PP2_TYPE_AUTHORITY (the SNI the proxy saw, 1-255 bytes, as a
 *	span into the input, not validated as a host name: the session must,
 *	before it uses it) and the PP2_CLIENT_SSL bit of PP2_TYPE_SSL.  A
 *	PP2_TYPE_CRC32C TLV (4 bytes, big-endian) must equal the CRC32C
 *	(Castagnoli) of the whole header with those 4 bytes zeroed.  Each of
 *	these three at most once (RM_PROXY_E_V2_TLV_DUP).  Other TLVs are
 *	skipped.  The family rules hold for LOCAL too (the spec lets a
 *	receiver ignore LOCAL's family; a proxy in front of mail has no
 *	reason to send UDP or UNIX there).
 *
 *	Result: out->local is true for v1 UNKNOWN, v2 LOCAL and v2 UNSPEC:
 *	the session keeps the socket's own addresses, and out->family is
 *	AF_UNSPEC with src and dst zero.  Otherwise out->family is AF_INET or
 *	AF_INET6 and src, dst are a sockaddr_in or sockaddr_in6 of it, ports
 *	in network byte order.  out->version is 1 or 2 from the moment the
 *	signature is complete (also with an error), else 0.
 *
 *	Writers, for tests and for the backends a proxy of ours will talk to:
 *	rm_proxy_write_v1 writes "PROXY TCP4|TCP6 ..." (no NUL), or "PROXY
 *	UNKNOWN\r\n" when an address is NULL or not AF_INET/AF_INET6;
 *	rm_proxy_write_v2 writes a PROXY header without TLVs, or LOCAL with
 *	UNSPEC in the same case.  One IPv4 and one IPv6 address are written
 *	as TCP6 with the IPv4 one mapped (::ffff:a.b.c.d), as HAProxy does.
 *	RM_PROXY_V1_BYTES_MAX and RM_PROXY_V2_WRITE_BYTES_MAX are always
 *	enough.
 *
 *	rm_proxy_crc32c is the CRC the v2 check uses (init and final XOR
 *	0xffffffff, reflected), for building headers in tests.
 * DIAGNOSTICS
 *	rm_proxy_parse returns the status; out->err is RM_PROXY_E_NONE unless
 *	it is RM_PROXY_ERROR.  out is overwritten on every call.  The writers
 *	return the length written, or -1 when cap is too small (nothing
 *	useful is then in out).
 */
#ifndef RM_PROXY_PROTO_H
#define RM_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* o->versions */
#define RM_PROXY_V1 0x01u
#define RM_PROXY_V2 0x02u

/* proxy-protocol.txt 2.1: the longest v1 line, CR LF included. */
#define RM_PROXY_V1_BYTES_MAX 107u
/* v2: signature (12), ver_cmd, fam, 2-byte length; then the length's bytes. */
#define RM_PROXY_V2_FIXED_BYTES 16u
#define RM_PROXY_V2_BYTES_MAX_DEFAULT 512u
/* TLVs and SSL sub-TLVs together; HAProxy sends fewer than ten. */
#define RM_PROXY_V2_TLVS_MAX 64u
/* A host name (RFC 1035: 255 octets at most). */
#define RM_PROXY_AUTHORITY_BYTES_MAX 255u
/* What rm_proxy_write_v2 writes at most: the fixed part and IPv6 addresses. */
#define RM_PROXY_V2_WRITE_BYTES_MAX (RM_PROXY_V2_FIXED_BYTES + 36u)

/* TLV types (proxy-protocol.txt 2.2) */
#define RM_PP2_TYPE_AUTHORITY 0x02u
#define RM_PP2_TYPE_CRC32C 0x03u
#define RM_PP2_TYPE_NOOP 0x04u
#define RM_PP2_TYPE_SSL 0x20u
#define RM_PP2_CLIENT_SSL 0x01u

enum rm_proxy_status {
	RM_PROXY_NEED_MORE = 0,
	RM_PROXY_OK,
	RM_PROXY_ERROR,
};

enum rm_proxy_err {
	RM_PROXY_E_NONE = 0,
	RM_PROXY_E_NOT_PROXY,		/* neither signature */
	RM_PROXY_E_VERSION_OFF,		/* a version not in o->versions */
	RM_PROXY_E_V1_TOO_LONG,		/* no complete line in 107 bytes */
	RM_PROXY_E_V1_PROTO,		/* not TCP4, TCP6, UNKNOWN */
	RM_PROXY_E_V1_SYNTAX,		/* a field missing, an extra one, a stray byte */
	RM_PROXY_E_V1_SRC_ADDR,		/* not an address of the protocol's family */
	RM_PROXY_E_V1_DST_ADDR,
	RM_PROXY_E_V1_SRC_PORT,		/* not 0-65535 without leading zeros */
	RM_PROXY_E_V1_DST_PORT,
	RM_PROXY_E_V1_CRLF,		/* bare LF, or CR not followed by LF */
	RM_PROXY_E_V2_VERSION,		/* version nibble not 2 */
	RM_PROXY_E_V2_COMMAND,		/* neither LOCAL nor PROXY */
	RM_PROXY_E_V2_FAMILY,		/* AF_UNIX or unassigned family */
	RM_PROXY_E_V2_TRANSPORT,	/* UDP, or a transport that does not go with the family */
	RM_PROXY_E_V2_TOO_LONG,		/* length past o->v2_bytes_max */
	RM_PROXY_E_V2_ADDR_SHORT,	/* length below the family's address block */
	RM_PROXY_E_V2_TLV_TRUNCATED,	/* a TLV or SSL sub-TLV past its parent's end */
	RM_PROXY_E_V2_TLV_LENGTH,	/* AUTHORITY 0 or >255, CRC32C not 4, SSL below 5 bytes */
	RM_PROXY_E_V2_TLV_DUP,		/* AUTHORITY, CRC32C or SSL twice */
	RM_PROXY_E_V2_TLV_COUNT,	/* more than RM_PROXY_V2_TLVS_MAX */
	RM_PROXY_E_V2_CRC,		/* CRC32C TLV does not match */
	RM_PROXY_E_COUNT
};

struct rm_proxy_span {
	const uint8_t *ptr;
	size_t len;
};

struct rm_proxy_opts {
	unsigned versions;		/* RM_PROXY_V1 | RM_PROXY_V2 accepted */
	size_t v2_bytes_max;		/* after the fixed 16; the field itself stops at 65535 */
};

struct rm_proxy_header {
	enum rm_proxy_err err;
	uint8_t version;		/* 1 or 2 once the signature is complete, else 0 */
	bool local;			/* keep the socket's own addresses */
	int family;			/* AF_INET, AF_INET6; AF_UNSPEC when local */
	struct sockaddr_storage src;	/* the client, as the proxy saw it */
	struct sockaddr_storage dst;	/* the address the client connected to */
	size_t consumed;		/* header bytes, with RM_PROXY_OK */
	struct rm_proxy_span authority;	/* v2 PP2_TYPE_AUTHORITY, into the input; ptr NULL if absent */
	bool ssl;			/* v2 PP2_TYPE_SSL with PP2_CLIENT_SSL */
	bool crc32c;			/* v2 PP2_TYPE_CRC32C present (and so verified) */
};

void rm_proxy_opts_default(struct rm_proxy_opts *o);
enum rm_proxy_status rm_proxy_parse(const uint8_t *in, size_t len, const struct rm_proxy_opts *o,
				    struct rm_proxy_header *out);
const char *rm_proxy_err_text(enum rm_proxy_err err);
ssize_t rm_proxy_write_v1(const struct sockaddr *src, const struct sockaddr *dst, char *out,
			  size_t cap);
ssize_t rm_proxy_write_v2(const struct sockaddr *src, const struct sockaddr *dst, uint8_t *out,
			  size_t cap);
uint32_t rm_proxy_crc32c(const uint8_t *p, size_t len);

#endif
