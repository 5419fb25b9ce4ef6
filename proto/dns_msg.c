/*
 * NAME
 *	dns_msg - DNS response messages (see dns_msg.h)
 */
#include "proto/dns_msg.h"

#include <string.h>

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int rm_dns_name_decode(const uint8_t *buf, size_t len, size_t off, char *out, size_t cap, size_t *end)
{
	size_t pos = off, text = 0, wire = 0;
	unsigned pointers = 0;
	bool jumped = false;

	if (cap == 0)
		return RM_DNS_E_NAME;
	/* Each round takes a label or a pointer; the wire bound ends it. */
	for (unsigned guard = 0; guard < RM_DNS_NAME_BYTES_MAX + RM_DNS_POINTERS_MAX + 1; guard++) {
		uint8_t b;

		if (pos >= len)
			return RM_DNS_E_SHORT;
		b = buf[pos];
		if ((b & 0xc0) == 0xc0) {
			size_t target;

			if (pos + 1 >= len)
				return RM_DNS_E_SHORT;
			target = ((size_t)(b & 0x3f) << 8) | buf[pos + 1];
			/* Only backwards: no loop can be built, and the bound holds anyway. */
			if (target >= pos || ++pointers > RM_DNS_POINTERS_MAX)
				return RM_DNS_E_NAME;
			if (!jumped && end != NULL)
				*end = pos + 2;
			jumped = true;
			pos = target;
			continue;
		}
		if ((b & 0xc0) != 0)
			return RM_DNS_E_NAME;	/* 0x40 / 0x80: extended label types */
		if (b == 0) {
			if (!jumped && end != NULL)
				*end = pos + 1;
			if (wire + 1 > RM_DNS_NAME_BYTES_MAX)
				return RM_DNS_E_NAME;
			out[text] = '\0';
			return 0;
		}
		if (pos + 1 + b > len)
			return RM_DNS_E_SHORT;
		wire += 1u + b;
		if (wire + 1 > RM_DNS_NAME_BYTES_MAX)
			return RM_DNS_E_NAME;
		if (text != 0) {
			if (text + 1 >= cap)
				return RM_DNS_E_NAME;
			out[text++] = '.';
		}
		for (size_t i = 0; i < b; i++) {
			uint8_t ch = buf[pos + 1 + i];

			if (ch <= 32 || ch > 126 || ch == '.')
				return RM_DNS_E_NAME;
			if (text + 1 >= cap)
				return RM_DNS_E_NAME;
			out[text++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
		}
		pos += 1u + b;
	}
	return RM_DNS_E_NAME;
}

int rm_dns_msg_parse(const uint8_t *buf, size_t len, struct rm_dns_msg *m)
{
	uint16_t flags, qd;
	size_t pos = 12;

	memset(m, 0, sizeof(*m));
	if (len < 12)
		return RM_DNS_E_SHORT;
	m->buf = buf;
	m->len = len;
	m->id = get16(buf);
	flags = get16(buf + 2);
	if (!(flags & 0x8000))
		return RM_DNS_E_NOT_RESPONSE;
	m->aa = (flags & 0x0400) != 0;
	m->tc = (flags & 0x0200) != 0;
	m->rcode = (uint8_t)(flags & 0x000f);
	qd = get16(buf + 4);
	m->counts[0] = get16(buf + 6);
	m->counts[1] = get16(buf + 8);
	m->counts[2] = get16(buf + 10);
	if ((unsigned)qd + m->counts[0] + m->counts[1] + m->counts[2] > RM_DNS_RECORDS_MAX)
		return RM_DNS_E_TOO_MANY;
	for (uint16_t i = 0; i < qd; i++) {
		char name[RM_DNS_NAME_TEXT_MAX + 1];
		size_t end = 0;
		int rc = rm_dns_name_decode(buf, len, pos, name, sizeof(name), &end);

		if (rc < 0)
			return rc;
		if (end + 4 > len)
			return RM_DNS_E_SHORT;
		pos = end + 4;
	}
	m->pos = pos;
	m->section = RM_DNS_ANSWER;
	m->left = m->counts[0];
	return 0;
}

int rm_dns_msg_next(struct rm_dns_msg *m, struct rm_dns_rr *rr)
{
	size_t end = 0;
	int rc;

	while (m->left == 0) {
		if (m->section == RM_DNS_ADDITIONAL)
			return 0;
		m->section++;
		m->left = m->counts[m->section];
	}
	if (++m->walked > RM_DNS_RECORDS_MAX)
		return RM_DNS_E_TOO_MANY;
	rc = rm_dns_name_decode(m->buf, m->len, m->pos, rr->name, sizeof(rr->name), &end);
	if (rc < 0)
		return rc;
	if (end + 10 > m->len)
		return RM_DNS_E_SHORT;
	rr->type = get16(m->buf + end);
	rr->cls = get16(m->buf + end + 2);
	rr->ttl = get32(m->buf + end + 4);
	/* RFC 2181 8: a TTL with the top bit set is to be read as zero. */
	if (rr->ttl & 0x80000000u)
		rr->ttl = 0;
	rr->rdlen = get16(m->buf + end + 8);
	rr->rdata_off = end + 10;
	rr->section = (enum rm_dns_section)m->section;
	if (rr->rdata_off + rr->rdlen > m->len)
		return RM_DNS_E_SHORT;
	if (rr->cls == RM_DNS_CLASS_IN && ((rr->type == RM_DNS_TYPE_A && rr->rdlen != 4) ||
					   (rr->type == RM_DNS_TYPE_AAAA && rr->rdlen != 16) ||
					   (rr->type == RM_DNS_TYPE_MX && rr->rdlen < 3)))
		return RM_DNS_E_RDATA;
	m->pos = rr->rdata_off + rr->rdlen;
	m->left--;
	return 1;
}

int rm_dns_rr_mx(const struct rm_dns_msg *m, const struct rm_dns_rr *rr, uint16_t *preference, char *host,
		 size_t cap)
{
	size_t end = 0;
	int rc;

	if (rr->type != RM_DNS_TYPE_MX || rr->rdlen < 3)
		return RM_DNS_E_RDATA;
	*preference = get16(m->buf + rr->rdata_off);
	/* The exchange lies inside the RDATA (pointers may leave it: that is allowed). */
	rc = rm_dns_name_decode(m->buf, rr->rdata_off + rr->rdlen, rr->rdata_off + 2, host, cap, &end);
	if (rc < 0)
		return rc;
	if (end != rr->rdata_off + rr->rdlen)
		return RM_DNS_E_RDATA;
	return 0;
}

bool rm_dns_name_equal(const char *a, const char *b)
{
	/* Both are decoded (lower case, no final dot); a caller's name may have one. */
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	if (la != lb)
		return false;
	for (size_t i = 0; i < la; i++) {
		char x = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] + 32) : a[i];
		char y = b[i] >= 'A' && b[i] <= 'Z' ? (char)(b[i] + 32) : b[i];

		if (x != y)
			return false;
	}
	return true;
}

const char *rm_dns_msg_error(int err)
{
	switch (err) {
	case RM_DNS_E_SHORT: return "message ends inside a record";
	case RM_DNS_E_NOT_RESPONSE: return "not a response";
	case RM_DNS_E_NAME: return "bad name";
	case RM_DNS_E_RDATA: return "record data of the wrong length";
	case RM_DNS_E_TOO_MANY: return "too many records";
	default: return "no error";
	}
}
