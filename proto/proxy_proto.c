/*
 * NAME
 *	proxy_proto - PROXY protocol (HAProxy v1 text, v2 binary) header codec
 * SUMMARY
 *	See proto/proxy_proto.h for the interface.
 * DESCRIPTION
 *	Every call parses from the first byte: the caller re-presents the
 *	whole prefix, so no state is kept between calls and the answer cannot
 *	depend on how the bytes were split.  What makes "every prefix gives
 *	NEED_MORE or the final answer" hold is that each decision is taken
 *	on bytes already seen, left to right: a field is judged when its
 *	terminator arrives, and a field still open is judged only on whether
 *	some continuation could make it valid (IPv6: whether the groups left
 *	still fit), never on a guess.
 *
 *	v1 reads at most RM_PROXY_V1_BYTES_MAX bytes of the input; running
 *	out of them is NEED_MORE below that many and RM_PROXY_E_V1_TOO_LONG
 *	at it, so the limit is the only thing that turns NEED_MORE into an
 *	error.  The address parsers are written here rather than calling
 *	inet_pton on a copy because inet_pton cannot tell a valid prefix from
 *	a wrong address; they accept the same strings as glibc's (the unit
 *	test and the fuzzer compare them).
 *
 *	v2 judges its fixed 16 bytes byte by byte, then waits for the length
 *	it announced (bounded by o->v2_bytes_max) and walks the body once:
 *	addresses, TLVs, then the CRC32C if one came.  Each TLV step moves
 *	forward by at least 3 bytes and is also counted against
 *	RM_PROXY_V2_TLVS_MAX, so the walk is bounded twice.
 * DIAGNOSTICS
 *	See the header.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "proto/proxy_proto.h"

static const uint8_t v2_sig[12] = { '\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n' };
static const uint8_t v1_sig[6] = { 'P', 'R', 'O', 'X', 'Y', ' ' };

/* v2 address blocks (proxy-protocol.txt 2.2): two addresses, two ports. */
#define V2_ADDR4_BYTES 12u
#define V2_ADDR6_BYTES 36u
/* PP2_TYPE_SSL: client (1), verify (4), then sub-TLVs. */
#define V2_SSL_FIXED_BYTES 5u
#define V2_TLV_HEAD_BYTES 3u
#define V2_LEN_FIELD_MAX 65535u

static const char *const err_texts[RM_PROXY_E_COUNT] = {
	[RM_PROXY_E_NONE] = "ok",
	[RM_PROXY_E_NOT_PROXY] = "not a PROXY protocol header",
	[RM_PROXY_E_VERSION_OFF] = "PROXY protocol version not enabled on this listener",
	[RM_PROXY_E_V1_TOO_LONG] = "PROXY v1 line longer than 107 bytes",
	[RM_PROXY_E_V1_PROTO] = "PROXY v1 protocol not TCP4, TCP6 or UNKNOWN",
	[RM_PROXY_E_V1_SYNTAX] = "PROXY v1 syntax error (fields or spaces)",
	[RM_PROXY_E_V1_SRC_ADDR] = "PROXY v1 bad source address",
	[RM_PROXY_E_V1_DST_ADDR] = "PROXY v1 bad destination address",
	[RM_PROXY_E_V1_SRC_PORT] = "PROXY v1 bad source port",
	[RM_PROXY_E_V1_DST_PORT] = "PROXY v1 bad destination port",
	[RM_PROXY_E_V1_CRLF] = "PROXY v1 line not ended by CR LF",
	[RM_PROXY_E_V2_VERSION] = "PROXY v2 version not 2",
	[RM_PROXY_E_V2_COMMAND] = "PROXY v2 command neither LOCAL nor PROXY",
	[RM_PROXY_E_V2_FAMILY] = "PROXY v2 address family not IPv4, IPv6 or UNSPEC",
	[RM_PROXY_E_V2_TRANSPORT] = "PROXY v2 transport not TCP",
	[RM_PROXY_E_V2_TOO_LONG] = "PROXY v2 header longer than the limit",
	[RM_PROXY_E_V2_ADDR_SHORT] = "PROXY v2 length shorter than its addresses",
	[RM_PROXY_E_V2_TLV_TRUNCATED] = "PROXY v2 TLV runs past the header",
	[RM_PROXY_E_V2_TLV_LENGTH] = "PROXY v2 TLV of a wrong length",
	[RM_PROXY_E_V2_TLV_DUP] = "PROXY v2 TLV repeated",
	[RM_PROXY_E_V2_TLV_COUNT] = "PROXY v2 too many TLVs",
	[RM_PROXY_E_V2_CRC] = "PROXY v2 CRC32C mismatch",
};

const char *rm_proxy_err_text(enum rm_proxy_err err)
{
	RM_ASSERT((unsigned)err < RM_PROXY_E_COUNT);
	return err_texts[err];
}

void rm_proxy_opts_default(struct rm_proxy_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->versions = RM_PROXY_V1 | RM_PROXY_V2;
	o->v2_bytes_max = RM_PROXY_V2_BYTES_MAX_DEFAULT;
}

/* --- CRC32C ---------------------------------------------------------------- */

/* Reflected Castagnoli polynomial 0x82f63b78, four bits per step: a 64-byte table. */
static const uint32_t crc32c_nibble[16] = {
	0x00000000, 0x105ec76f, 0x20bd8ede, 0x30e349b1, 0x417b1dbc, 0x5125dad3, 0x61c69362, 0x7198540d,
	0x82f63b78, 0x92a8fc17, 0xa24bb5a6, 0xb21572c9, 0xc38d26c4, 0xd3d3e1ab, 0xe330a81a, 0xf36e6f75,
};

static uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		crc ^= p[i];
		crc = crc >> 4 ^ crc32c_nibble[crc & 0x0f];
		crc = crc >> 4 ^ crc32c_nibble[crc & 0x0f];
	}
	return crc;
}

uint32_t rm_proxy_crc32c(const uint8_t *p, size_t len)
{
	return ~crc32c_update(0xffffffffu, p, len);
}

/* --- address and port fields ----------------------------------------------- */

/*
 * A field scanner's verdict on the bytes of one field.  ended says the
 * field's terminator was seen; without it the bytes are a prefix and the
 * verdict is SCAN_MORE when some continuation could still be valid.
 */
enum scan { SCAN_OK, SCAN_MORE, SCAN_BAD };

static int hex_value(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Dotted quad as inet_pton(AF_INET) reads it: 4 parts 0-255, no leading zeros. */
static enum scan scan_ip4(const uint8_t *s, size_t n, bool ended, uint8_t out[4])
{
	unsigned parts = 0, val = 0, digits = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = s[i];

		if (c >= '0' && c <= '9') {
			if (digits == 1 && val == 0)
				return SCAN_BAD;	/* "01" */
			val = val * 10 + (unsigned)(c - '0');
			if (val > 255)
				return SCAN_BAD;	/* which also stops the digits at 3 */
			digits++;
		} else if (c == '.') {
			if (digits == 0 || parts == 3)
				return SCAN_BAD;
			out[parts++] = (uint8_t)val;
			val = 0;
			digits = 0;
		} else {
			return SCAN_BAD;
		}
	}
	if (!ended)
		return SCAN_MORE;	/* every state above can still be completed */
	if (parts != 3 || digits == 0)
		return SCAN_BAD;
	out[3] = (uint8_t)val;
	return SCAN_OK;
}

/*
 * IPv6 text as inet_pton(AF_INET6) reads it (glibc's inet_pton6 rules):
 * groups of 1-4 hex digits, at most one "::" standing for at least one
 * group, no single leading or trailing ':', and optionally a dotted quad
 * as the last 32 bits.  g counts the bytes filled so far (0..16); gap is
 * where "::" stood, or SIZE_MAX.
 */
static enum scan scan_ip6(const uint8_t *s, size_t n, bool ended, uint8_t out[16])
{
	uint8_t a[16] = { 0 };
	size_t g = 0, gap = SIZE_MAX, i = 0, tok = 0;
	unsigned val = 0, xdigits = 0;
	bool open_colon = false;	/* the last byte was a ':' that closed a group */
	bool tail4 = false;

	if (n == 0)
		return ended ? SCAN_BAD : SCAN_MORE;
	if (s[0] == ':') {
		if (n == 1)
			return ended ? SCAN_BAD : SCAN_MORE;
		if (s[1] != ':')
			return SCAN_BAD;
		i = 1;	/* the second ':' below sets gap */
	}
	for (; i < n && !tail4; i++) {
		uint8_t c = s[i];
		int d = hex_value(c);

		if (d >= 0) {
			if (xdigits == 4)
				return SCAN_BAD;
			val = val << 4 | (unsigned)d;
			xdigits++;
			open_colon = false;
		} else if (c == ':') {
			tok = i + 1;
			if (xdigits == 0) {
				if (gap != SIZE_MAX)
					return SCAN_BAD;	/* a second "::", or ":::" */
				gap = g;
				open_colon = false;
				continue;
			}
			if (g + 2 > 16)
				return SCAN_BAD;
			a[g++] = (uint8_t)(val >> 8);
			a[g++] = (uint8_t)val;
			val = 0;
			xdigits = 0;
			open_colon = true;
		} else if (c == '.') {
			enum scan st;

			/* The tail is last: it must leave exactly 16 bytes, or room for "::". */
			if (gap != SIZE_MAX ? g + 4 > 14 : g + 4 != 16)
				return SCAN_BAD;
			st = scan_ip4(s + tok, n - tok, ended, a + g);
			if (st != SCAN_OK)
				return st;
			g += 4;
			xdigits = 0;
			tail4 = true;
		} else {
			return SCAN_BAD;
		}
	}
	if (!ended) {
		size_t room = gap != SIZE_MAX ? 14 : 16;	/* "::" keeps one group for itself */

		if (tail4)
			return SCAN_MORE;
		if (xdigits > 0)
			return g + 2 <= room ? SCAN_MORE : SCAN_BAD;	/* end the group here */
		if (open_colon)	/* another group, or "::" if there is none yet */
			return (gap != SIZE_MAX ? g + 2 <= 14 : g <= 14) ? SCAN_MORE : SCAN_BAD;
		return g < 16 ? SCAN_MORE : SCAN_BAD;	/* right after "::" */
	}
	if (open_colon)
		return SCAN_BAD;
	if (xdigits > 0) {
		if (g + 2 > 16)
			return SCAN_BAD;
		a[g++] = (uint8_t)(val >> 8);
		a[g++] = (uint8_t)val;
	}
	if (gap != SIZE_MAX) {
		size_t after = g - gap;

		if (g == 16)
			return SCAN_BAD;	/* "::" for no group at all */
		memmove(a + 16 - after, a + gap, after);
		memset(a + gap, 0, 16 - after - gap);
		g = 16;
	}
	if (g != 16)
		return SCAN_BAD;
	memcpy(out, a, 16);
	return SCAN_OK;
}

/* 0-65535, no leading zeros. */
static enum scan scan_port(const uint8_t *s, size_t n, bool ended, uint16_t *port)
{
	unsigned v = 0;

	if (n == 0)
		return ended ? SCAN_BAD : SCAN_MORE;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || (i == 1 && s[0] == '0'))
			return SCAN_BAD;
		v = v * 10 + (unsigned)(s[i] - '0');
		if (v > 65535)
			return SCAN_BAD;	/* which also stops the digits at 5 */
	}
	if (!ended)
		return SCAN_MORE;
	*port = (uint16_t)v;
	return SCAN_OK;
}

static enum rm_proxy_status fail(struct rm_proxy_header *out, enum rm_proxy_err err)
{
	out->err = err;
	return RM_PROXY_ERROR;
}

/* --- v1 -------------------------------------------------------------------- */

/* The bytes an address field is made of; any other byte ends it. */
static bool is_addr_char(uint8_t c)
{
	return hex_value(c) >= 0 || c == ':' || c == '.';
}

static bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* The v1 line in s[0..n), n at most RM_PROXY_V1_BYTES_MAX. */
struct v1_reader {
	const uint8_t *s;
	size_t n;
	size_t pos;
	bool at_limit;	/* n is the limit: running out is too long, not need-more */
};

static enum rm_proxy_status v1_out_of_bytes(const struct v1_reader *r, struct rm_proxy_header *out)
{
	if (!r->at_limit)
		return RM_PROXY_NEED_MORE;
	out->err = RM_PROXY_E_V1_TOO_LONG;
	return RM_PROXY_ERROR;
}


/*
 * One field from r->pos: its bytes up to the first one not in its alphabet.
 * Returns the field's end in *end and whether the terminator is there.
 */
static bool v1_field(const struct v1_reader *r, bool (*in_alphabet)(uint8_t), size_t *end)
{
	size_t e = r->pos;

	while (e < r->n && in_alphabet(r->s[e]))
		e++;
	*end = e;
	return e < r->n;
}

/* "\r\n" at r->pos; on RM_PROXY_OK out->consumed is set. */
static enum rm_proxy_status v1_crlf(struct v1_reader *r, struct rm_proxy_header *out)
{
	if (r->pos >= r->n)
		return v1_out_of_bytes(r, out);
	if (r->s[r->pos] != '\r')
		return fail(out, r->s[r->pos] == '\n' ? RM_PROXY_E_V1_CRLF : RM_PROXY_E_V1_SYNTAX);
	if (r->pos + 1 >= r->n)
		return v1_out_of_bytes(r, out);
	if (r->s[r->pos + 1] != '\n')
		return fail(out, RM_PROXY_E_V1_CRLF);
	out->consumed = r->pos + 2;
	return RM_PROXY_OK;
}

/* "PROXY UNKNOWN": then CR LF, or SP and anything but CR and LF up to CR LF. */
static enum rm_proxy_status v1_unknown(struct v1_reader *r, struct rm_proxy_header *out)
{
	if (r->pos < r->n && r->s[r->pos] == ' ') {
		r->pos++;
		while (r->pos < r->n && r->s[r->pos] != '\r' && r->s[r->pos] != '\n')
			r->pos++;
	}
	return v1_crlf(r, out);
}

static enum rm_proxy_status v1_addr(struct v1_reader *r, int family, bool is_src, void *addr,
				    struct rm_proxy_header *out)
{
	size_t end;
	bool ended = v1_field(r, is_addr_char, &end);
	enum scan st = family == AF_INET ? scan_ip4(r->s + r->pos, end - r->pos, ended, addr)
					 : scan_ip6(r->s + r->pos, end - r->pos, ended, addr);

	if (st == SCAN_BAD)
		return fail(out, is_src ? RM_PROXY_E_V1_SRC_ADDR : RM_PROXY_E_V1_DST_ADDR);
	if (st == SCAN_MORE)
		return v1_out_of_bytes(r, out);
	if (r->s[end] != ' ')
		return fail(out, RM_PROXY_E_V1_SYNTAX);
	r->pos = end + 1;
	return RM_PROXY_OK;
}

/* A port and what must follow it: SP after the source port, CR LF after the destination's. */
static enum rm_proxy_status v1_port(struct v1_reader *r, bool is_src, uint16_t *port,
				    struct rm_proxy_header *out)
{
	size_t end;
	bool ended = v1_field(r, is_digit, &end);
	enum scan st = scan_port(r->s + r->pos, end - r->pos, ended, port);

	if (st == SCAN_BAD)
		return fail(out, is_src ? RM_PROXY_E_V1_SRC_PORT : RM_PROXY_E_V1_DST_PORT);
	if (st == SCAN_MORE)
		return v1_out_of_bytes(r, out);
	r->pos = end;
	if (!is_src)
		return v1_crlf(r, out);
	if (r->s[end] != ' ')
		return fail(out, RM_PROXY_E_V1_SYNTAX);
	r->pos++;
	return RM_PROXY_OK;
}

static bool is_proto_char(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || is_digit(c);
}

/* TCP4 / TCP6 / UNKNOWN as a prefix while open, exactly once ended. */
static enum rm_proxy_status v1_proto(struct v1_reader *r, int *family, struct rm_proxy_header *out)
{
	static const struct {
		const char *word;
		int family;
	} protos[] = { { "TCP4", AF_INET }, { "TCP6", AF_INET6 }, { "UNKNOWN", AF_UNSPEC } };
	size_t end, n;
	bool ended = v1_field(r, is_proto_char, &end);

	n = end - r->pos;
	for (size_t k = 0; k < sizeof(protos) / sizeof(protos[0]); k++) {
		size_t wlen = strlen(protos[k].word);

		if (n > wlen || memcmp(r->s + r->pos, protos[k].word, n) != 0)
			continue;
		if (!ended)
			return v1_out_of_bytes(r, out);
		if (n < wlen)
			continue;
		*family = protos[k].family;
		r->pos = end;
		return RM_PROXY_OK;
	}
	return fail(out, RM_PROXY_E_V1_PROTO);
}

static enum rm_proxy_status parse_v1(const uint8_t *in, size_t len, struct rm_proxy_header *out)
{
	struct v1_reader r = {
		.s = in,
		.n = len < RM_PROXY_V1_BYTES_MAX ? len : RM_PROXY_V1_BYTES_MAX,
		.pos = sizeof(v1_sig),
		.at_limit = len >= RM_PROXY_V1_BYTES_MAX,
	};
	uint8_t src[16], dst[16];
	uint16_t sport = 0, dport = 0;
	int family = AF_UNSPEC;
	enum rm_proxy_status st;

	st = v1_proto(&r, &family, out);
	if (st != RM_PROXY_OK)
		return st;
	if (family == AF_UNSPEC) {
		st = v1_unknown(&r, out);
		out->local = st == RM_PROXY_OK;
		return st;
	}
	if (r.s[r.pos] != ' ')	/* v1_proto saw the terminator */
		return fail(out, RM_PROXY_E_V1_SYNTAX);
	r.pos++;
	if ((st = v1_addr(&r, family, true, src, out)) != RM_PROXY_OK ||
	    (st = v1_addr(&r, family, false, dst, out)) != RM_PROXY_OK ||
	    (st = v1_port(&r, true, &sport, out)) != RM_PROXY_OK ||
	    (st = v1_port(&r, false, &dport, out)) != RM_PROXY_OK)
		return st;

	out->family = family;
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src, *d4 = (struct sockaddr_in *)&out->dst;

		s4->sin_family = d4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, src, 4);
		memcpy(&d4->sin_addr, dst, 4);
		s4->sin_port = htons(sport);
		d4->sin_port = htons(dport);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->src, *d6 = (struct sockaddr_in6 *)&out->dst;

		s6->sin6_family = d6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, src, 16);
		memcpy(&d6->sin6_addr, dst, 16);
		s6->sin6_port = htons(sport);
		d6->sin6_port = htons(dport);
	}
	return RM_PROXY_OK;
}

/* --- v2 -------------------------------------------------------------------- */

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* Sub-TLVs of PP2_TYPE_SSL in p[0..n): bounds only, none is interpreted. */
static enum rm_proxy_err v2_ssl_subs(const uint8_t *p, size_t n, unsigned *count)
{
	size_t pos = 0;

	while (pos < n) {
		size_t vlen;

		if (++*count > RM_PROXY_V2_TLVS_MAX)
			return RM_PROXY_E_V2_TLV_COUNT;
		if (n - pos < V2_TLV_HEAD_BYTES)
			return RM_PROXY_E_V2_TLV_TRUNCATED;
		vlen = be16(p + pos + 1);
		if (vlen > n - pos - V2_TLV_HEAD_BYTES)
			return RM_PROXY_E_V2_TLV_TRUNCATED;
		pos += V2_TLV_HEAD_BYTES + vlen;
	}
	return RM_PROXY_E_NONE;
}

/*
 * The TLVs in h[start..end) of the header h.  *crc_at is set to the offset
 * of a CRC32C value (0: none).
 */
static enum rm_proxy_err v2_tlvs(const uint8_t *h, size_t start, size_t end, size_t *crc_at,
				 struct rm_proxy_header *out)
{
	size_t pos = start;
	unsigned count = 0;
	bool seen_ssl = false;

	while (pos < end) {
		const uint8_t *v;
		size_t vlen;
		enum rm_proxy_err err;

		if (++count > RM_PROXY_V2_TLVS_MAX)
			return RM_PROXY_E_V2_TLV_COUNT;
		if (end - pos < V2_TLV_HEAD_BYTES)
			return RM_PROXY_E_V2_TLV_TRUNCATED;
		vlen = be16(h + pos + 1);
		if (vlen > end - pos - V2_TLV_HEAD_BYTES)
			return RM_PROXY_E_V2_TLV_TRUNCATED;
		v = h + pos + V2_TLV_HEAD_BYTES;
		switch (h[pos]) {
		case RM_PP2_TYPE_AUTHORITY:
			if (out->authority.ptr != NULL)
				return RM_PROXY_E_V2_TLV_DUP;
			if (vlen == 0 || vlen > RM_PROXY_AUTHORITY_BYTES_MAX)
				return RM_PROXY_E_V2_TLV_LENGTH;
			out->authority.ptr = v;
			out->authority.len = vlen;
			break;
		case RM_PP2_TYPE_CRC32C:
			if (*crc_at != 0)
				return RM_PROXY_E_V2_TLV_DUP;
			if (vlen != 4)
				return RM_PROXY_E_V2_TLV_LENGTH;
			*crc_at = (size_t)(v - h);
			break;
		case RM_PP2_TYPE_SSL:
			if (seen_ssl)
				return RM_PROXY_E_V2_TLV_DUP;
			if (vlen < V2_SSL_FIXED_BYTES)
				return RM_PROXY_E_V2_TLV_LENGTH;
			seen_ssl = true;
			out->ssl = (v[0] & RM_PP2_CLIENT_SSL) != 0;
			err = v2_ssl_subs(v + V2_SSL_FIXED_BYTES, vlen - V2_SSL_FIXED_BYTES, &count);
			if (err != RM_PROXY_E_NONE)
				return err;
			break;
		default:
			break;
		}
		pos += V2_TLV_HEAD_BYTES + vlen;
	}
	return RM_PROXY_E_NONE;
}

/* The CRC32C of h[0..n) with the 4 bytes at crc_at taken as zero, against those 4 bytes. */
static bool v2_crc_ok(const uint8_t *h, size_t n, size_t crc_at)
{
	static const uint8_t zero[4] = { 0 };
	uint32_t crc = 0xffffffffu, want;

	want = (uint32_t)h[crc_at] << 24 | (uint32_t)h[crc_at + 1] << 16 |
	       (uint32_t)h[crc_at + 2] << 8 | h[crc_at + 3];
	crc = crc32c_update(crc, h, crc_at);
	crc = crc32c_update(crc, zero, sizeof(zero));
	crc = crc32c_update(crc, h + crc_at + 4, n - crc_at - 4);
	return ~crc == want;
}

static void v2_addresses(const uint8_t *a, uint8_t fam, struct rm_proxy_header *out)
{
	if (fam == 0x11) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src, *d4 = (struct sockaddr_in *)&out->dst;

		out->family = s4->sin_family = d4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
		memcpy(&d4->sin_addr, a + 4, 4);
		memcpy(&s4->sin_port, a + 8, 2);	/* both in network order already */
		memcpy(&d4->sin_port, a + 10, 2);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->src, *d6 = (struct sockaddr_in6 *)&out->dst;

		out->family = s6->sin6_family = d6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
		memcpy(&d6->sin6_addr, a + 16, 16);
		memcpy(&s6->sin6_port, a + 32, 2);
		memcpy(&d6->sin6_port, a + 34, 2);
	}
}

static enum rm_proxy_status parse_v2(const uint8_t *in, size_t len, const struct rm_proxy_opts *o,
				     struct rm_proxy_header *out)
{
	size_t max = o->v2_bytes_max < V2_LEN_FIELD_MAX ? o->v2_bytes_max : V2_LEN_FIELD_MAX;
	size_t body, addr_len, crc_at = 0;
	uint8_t cmd, fam;
	enum rm_proxy_err err;

	if (len < 13)
		return RM_PROXY_NEED_MORE;
	if ((in[12] & 0xf0) != 0x20)
		return fail(out, RM_PROXY_E_V2_VERSION);
	cmd = in[12] & 0x0f;
	if (cmd > 1)
		return fail(out, RM_PROXY_E_V2_COMMAND);
	if (len < 14)
		return RM_PROXY_NEED_MORE;
	fam = in[13];
	switch (fam >> 4) {
	case 0:	/* UNSPEC: no transport either */
		if (fam != 0x00)
			return fail(out, RM_PROXY_E_V2_TRANSPORT);
		addr_len = 0;
		break;
	case 1:
	case 2:
		if ((fam & 0x0f) != 0x01)
			return fail(out, RM_PROXY_E_V2_TRANSPORT);
		addr_len = fam >> 4 == 1 ? V2_ADDR4_BYTES : V2_ADDR6_BYTES;
		break;
	default:
		return fail(out, RM_PROXY_E_V2_FAMILY);
	}
	if (len < RM_PROXY_V2_FIXED_BYTES)
		return RM_PROXY_NEED_MORE;
	body = be16(in + 14);
	if (body > max)
		return fail(out, RM_PROXY_E_V2_TOO_LONG);
	if (body < addr_len)
		return fail(out, RM_PROXY_E_V2_ADDR_SHORT);
	if (len < RM_PROXY_V2_FIXED_BYTES + body)
		return RM_PROXY_NEED_MORE;

	err = v2_tlvs(in, RM_PROXY_V2_FIXED_BYTES + addr_len, RM_PROXY_V2_FIXED_BYTES + body, &crc_at, out);
	if (err == RM_PROXY_E_NONE && crc_at != 0 && !v2_crc_ok(in, RM_PROXY_V2_FIXED_BYTES + body, crc_at))
		err = RM_PROXY_E_V2_CRC;
	if (err != RM_PROXY_E_NONE)
		return fail(out, err);
	out->crc32c = crc_at != 0;
	out->local = cmd == 0 || fam == 0x00;
	if (!out->local)
		v2_addresses(in + RM_PROXY_V2_FIXED_BYTES, fam, out);
	out->consumed = RM_PROXY_V2_FIXED_BYTES + body;
	return RM_PROXY_OK;
}

/* --- entry ------------------------------------------------------------------- */

enum rm_proxy_status rm_proxy_parse(const uint8_t *in, size_t len, const struct rm_proxy_opts *o,
				    struct rm_proxy_header *out)
{
	size_t n1 = len < sizeof(v1_sig) ? len : sizeof(v1_sig);
	size_t n2 = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
	bool maybe_v1, maybe_v2;
	enum rm_proxy_status st;

	memset(out, 0, sizeof(*out));	/* padding too: results compare with memcmp */
	if (len == 0)
		return RM_PROXY_NEED_MORE;
	maybe_v1 = memcmp(in, v1_sig, n1) == 0;
	maybe_v2 = memcmp(in, v2_sig, n2) == 0;
	if (!maybe_v1 && !maybe_v2)
		return fail(out, RM_PROXY_E_NOT_PROXY);
	/* The two signatures differ in their first byte: at most one is still possible. */
	if (maybe_v1) {
		if (len < sizeof(v1_sig))
			return RM_PROXY_NEED_MORE;
		out->version = 1;
		if (!(o->versions & RM_PROXY_V1))
			return fail(out, RM_PROXY_E_VERSION_OFF);
		st = parse_v1(in, len, out);
	} else {
		if (len < sizeof(v2_sig))
			return RM_PROXY_NEED_MORE;
		out->version = 2;
		if (!(o->versions & RM_PROXY_V2))
			return fail(out, RM_PROXY_E_VERSION_OFF);
		st = parse_v2(in, len, o, out);
	}
	if (st != RM_PROXY_OK) {
		/* Nothing half-filled: an answer other than OK carries only err and version. */
		uint8_t version = out->version;
		enum rm_proxy_err err = out->err;

		memset(out, 0, sizeof(*out));
		out->version = version;
		out->err = st == RM_PROXY_ERROR ? err : RM_PROXY_E_NONE;
	}
	return st;
}

/* --- writers ----------------------------------------------------------------- */

/* The IPv6 form of an AF_INET or AF_INET6 address (IPv4 mapped), with its port. */
static void as_ip6(const struct sockaddr *sa, uint8_t a[16], uint16_t *port_net)
{
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		memcpy(a, &s6->sin6_addr, 16);
		*port_net = s6->sin6_port;
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		memset(a, 0, 10);
		a[10] = a[11] = 0xff;
		memcpy(a + 12, &s4->sin_addr, 4);
		*port_net = s4->sin_port;
	}
}

/* inet_ntop only fails for an unknown family or a short buffer: neither can happen here. */
static void ntop(int family, const void *addr, char text[INET6_ADDRSTRLEN])
{
	if (inet_ntop(family, addr, text, INET6_ADDRSTRLEN) == NULL)
		rm_panic("proxy_proto: inet_ntop family %d", family);
}

static bool writable(const struct sockaddr *sa)
{
	return sa != NULL && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6);
}

ssize_t rm_proxy_write_v1(const struct sockaddr *src, const struct sockaddr *dst, char *out,
			  size_t cap)
{
	char line[RM_PROXY_V1_BYTES_MAX + 1], sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
	int n;

	if (!writable(src) || !writable(dst)) {
		n = snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n");
	} else if (src->sa_family == AF_INET && dst->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)src;
		const struct sockaddr_in *d4 = (const struct sockaddr_in *)dst;

		ntop(AF_INET, &s4->sin_addr, sa);
		ntop(AF_INET, &d4->sin_addr, da);
		n = snprintf(line, sizeof(line), "PROXY TCP4 %s %s %u %u\r\n", sa, da,
			     (unsigned)ntohs(s4->sin_port), (unsigned)ntohs(d4->sin_port));
	} else {
		uint8_t s6[16], d6[16];
		uint16_t sp, dp;

		as_ip6(src, s6, &sp);
		as_ip6(dst, d6, &dp);
		ntop(AF_INET6, s6, sa);
		ntop(AF_INET6, d6, da);
		n = snprintf(line, sizeof(line), "PROXY TCP6 %s %s %u %u\r\n", sa, da,
			     (unsigned)ntohs(sp), (unsigned)ntohs(dp));
	}
	/* inet_ntop's IPv6 text is at most 39 bytes (its dotted forms are shorter): 104 in all. */
	RM_ASSERT(n > 0 && (size_t)n <= RM_PROXY_V1_BYTES_MAX);
	if ((size_t)n > cap)
		return -1;
	memcpy(out, line, (size_t)n);
	return n;
}

ssize_t rm_proxy_write_v2(const struct sockaddr *src, const struct sockaddr *dst, uint8_t *out,
			  size_t cap)
{
	uint8_t h[RM_PROXY_V2_WRITE_BYTES_MAX];
	size_t body;

	memcpy(h, v2_sig, sizeof(v2_sig));
	if (!writable(src) || !writable(dst)) {
		h[12] = 0x20;	/* LOCAL */
		h[13] = 0x00;	/* UNSPEC */
		body = 0;
	} else if (src->sa_family == AF_INET && dst->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)src;
		const struct sockaddr_in *d4 = (const struct sockaddr_in *)dst;

		h[12] = 0x21;
		h[13] = 0x11;
		body = V2_ADDR4_BYTES;
		memcpy(h + 16, &s4->sin_addr, 4);
		memcpy(h + 20, &d4->sin_addr, 4);
		memcpy(h + 24, &s4->sin_port, 2);
		memcpy(h + 26, &d4->sin_port, 2);
	} else {
		uint16_t sp, dp;

		h[12] = 0x21;
		h[13] = 0x21;
		body = V2_ADDR6_BYTES;
		as_ip6(src, h + 16, &sp);
		as_ip6(dst, h + 32, &dp);
		memcpy(h + 48, &sp, 2);
		memcpy(h + 50, &dp, 2);
	}
	h[14] = (uint8_t)(body >> 8);
	h[15] = (uint8_t)body;
	if (RM_PROXY_V2_FIXED_BYTES + body > cap)
		return -1;
	memcpy(out, h, RM_PROXY_V2_FIXED_BYTES + body);
	return (ssize_t)(RM_PROXY_V2_FIXED_BYTES + body);
}
