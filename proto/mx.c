/*
 * NAME
 *	mx - where mail for a domain goes (see mx.h)
 */
#include "proto/mx.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* The names records may be for: the question's, then each CNAME target in turn. */
struct owners {
	char names[RM_MX_CNAMES_MAX + 1][RM_DNS_NAME_TEXT_MAX + 1];
	unsigned count;
};

static bool owned(const struct owners *o, const char *name)
{
	for (unsigned i = 0; i < o->count; i++)
		if (rm_dns_name_equal(o->names[i], name))
			return true;
	return false;
}

/*
 * Follow the CNAME chain of the answer section from name.  Records may come
 * in any order, so the walk repeats until no new target is found (bounded
 * by the chain's depth).
 */
static int follow_cnames(const uint8_t *answer, size_t len, const char *name, struct owners *o)
{
	size_t n = strlen(name);

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n > RM_DNS_NAME_TEXT_MAX)
		return RM_DNS_E_NAME;
	memcpy(o->names[0], name, n);
	o->names[0][n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (o->names[0][i] >= 'A' && o->names[0][i] <= 'Z')
			o->names[0][i] = (char)(o->names[0][i] + 32);
	o->count = 1;
	for (unsigned depth = 0; depth < RM_MX_CNAMES_MAX; depth++) {
		struct rm_dns_msg m;
		struct rm_dns_rr rr;
		bool grew = false;
		int rc = rm_dns_msg_parse(answer, len, &m);

		if (rc < 0)
			return rc;
		while ((rc = rm_dns_msg_next(&m, &rr)) == 1 && rr.section == RM_DNS_ANSWER) {
			char target[RM_DNS_NAME_TEXT_MAX + 1];

			if (rr.type != RM_DNS_TYPE_CNAME || rr.cls != RM_DNS_CLASS_IN ||
			    !rm_dns_name_equal(rr.name, o->names[o->count - 1]))
				continue;
			rc = rm_dns_name_decode(m.buf, rr.rdata_off + rr.rdlen, rr.rdata_off, target, sizeof(target),
						NULL);
			if (rc < 0)
				return rc;
			if (owned(o, target) || o->count > RM_MX_CNAMES_MAX)
				return RM_DNS_E_NAME;	/* a CNAME loop */
			memcpy(o->names[o->count++], target, sizeof(target));
			grew = true;
			break;
		}
		if (rc < 0)
			return rc;
		if (!grew)
			return 0;
	}
	return 0;
}

/* RFC 2308 5: the negative TTL is min(SOA TTL, SOA MINIMUM). */
static uint32_t negative_ttl(const uint8_t *answer, size_t len)
{
	struct rm_dns_msg m;
	struct rm_dns_rr rr;

	if (rm_dns_msg_parse(answer, len, &m) < 0)
		return RM_MX_NEGATIVE_TTL_DEFAULT_S;
	while (rm_dns_msg_next(&m, &rr) == 1) {
		char name[RM_DNS_NAME_TEXT_MAX + 1];
		size_t end = 0;
		uint32_t minimum;

		if (rr.section != RM_DNS_AUTHORITY || rr.type != RM_DNS_TYPE_SOA)
			continue;
		/* MNAME, RNAME, then five 32-bit fields; MINIMUM is the last. */
		if (rm_dns_name_decode(m.buf, rr.rdata_off + rr.rdlen, rr.rdata_off, name, sizeof(name), &end) < 0 ||
		    rm_dns_name_decode(m.buf, rr.rdata_off + rr.rdlen, end, name, sizeof(name), &end) < 0 ||
		    end + 20 != rr.rdata_off + rr.rdlen)
			return RM_MX_NEGATIVE_TTL_DEFAULT_S;
		minimum = ((uint32_t)m.buf[end + 16] << 24) | ((uint32_t)m.buf[end + 17] << 16) |
			  ((uint32_t)m.buf[end + 18] << 8) | m.buf[end + 19];
		return minimum < rr.ttl ? minimum : rr.ttl;
	}
	return RM_MX_NEGATIVE_TTL_DEFAULT_S;
}

static uint64_t next_random(uint64_t *state)
{
	/* splitmix64: the caller's seed spread over the draws. */
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The header's verdict before any record is read; -1 when records must say. */
static int header_status(const struct rm_dns_msg *m, enum rm_mx_status *st, const char **why)
{
	if (m->tc) {
		*st = RM_MX_TEMPFAIL;
		*why = "truncated answer";
		return 0;
	}
	if (m->rcode == RM_DNS_RCODE_NXDOMAIN) {
		*st = RM_MX_NXDOMAIN;
		return 0;
	}
	if (m->rcode != RM_DNS_RCODE_NOERROR) {
		*st = RM_MX_TEMPFAIL;
		*why = m->rcode == RM_DNS_RCODE_SERVFAIL ? "SERVFAIL" : m->rcode == RM_DNS_RCODE_REFUSED ? "REFUSED"
		     : "DNS error";
		return 0;
	}
	return -1;
}

/*
 * What both readers do first: parse, let the header decide when it can
 * (NXDOMAIN with its negative TTL, SERVFAIL, TC), follow the CNAMEs from
 * name.  False when the outcome is already in *st (TEMPFAIL with *why on a
 * broken answer); true with m ready at the answer section.
 */
static bool answer_open(const uint8_t *answer, size_t len, const char *name, struct rm_dns_msg *m,
			struct owners *o, enum rm_mx_status *st, const char **why, uint32_t *ttl_s)
{
	int rc = rm_dns_msg_parse(answer, len, m);

	*st = RM_MX_TEMPFAIL;
	if (rc < 0) {
		*why = rm_dns_msg_error(rc);
		return false;
	}
	if (header_status(m, st, why) == 0) {
		if (*st == RM_MX_NXDOMAIN)
			*ttl_s = negative_ttl(answer, len);
		return false;
	}
	rc = follow_cnames(answer, len, name, o);
	if (rc < 0) {
		*st = RM_MX_TEMPFAIL;
		*why = rm_dns_msg_error(rc);
		return false;
	}
	return true;
}

int rm_mx_from_answer(const uint8_t *answer, size_t len, const char *domain, uint64_t random,
		      struct rm_mx_result *out)
{
	struct owners o;
	struct rm_dns_msg m;
	struct rm_dns_rr rr;
	uint32_t ttl = UINT32_MAX;
	unsigned nulls = 0, records = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!answer_open(answer, len, domain, &m, &o, &out->status, &out->why, &out->ttl_s))
		return 0;
	while ((rc = rm_dns_msg_next(&m, &rr)) == 1) {
		struct rm_mx_host h;
		bool dup = false;

		if (rr.section != RM_DNS_ANSWER || rr.type != RM_DNS_TYPE_MX || rr.cls != RM_DNS_CLASS_IN ||
		    !owned(&o, rr.name))
			continue;
		rc = rm_dns_rr_mx(&m, &rr, &h.preference, h.name, sizeof(h.name));
		if (rc < 0)
			break;
		records++;
		if (rr.ttl < ttl)
			ttl = rr.ttl;
		if (h.name[0] == '\0') {
			nulls++;
			continue;
		}
		for (unsigned i = 0; i < out->count && !dup; i++)
			dup = rm_dns_name_equal(out->hosts[i].name, h.name);
		if (!dup && out->count < RM_MX_HOSTS_MAX)
			out->hosts[out->count++] = h;
	}
	if (rc < 0) {
		out->count = 0;
		out->why = rm_dns_msg_error(rc);
		return 0;
	}
	if (records == 0) {
		out->status = RM_MX_IMPLICIT;
		out->count = 1;
		snprintf(out->hosts[0].name, sizeof(out->hosts[0].name), "%s", o.names[0]);
		out->ttl_s = negative_ttl(answer, len);
		return 0;
	}
	out->ttl_s = ttl;
	if (out->count == 0) {
		/* Only "." exchanges: RFC 7505 null MX. */
		out->status = nulls > 0 ? RM_MX_NULL : RM_MX_TEMPFAIL;
		return 0;
	}
	/* Insertion sort by preference with random keys to break ties: count <= 16. */
	{
		uint64_t keys[RM_MX_HOSTS_MAX], state = random;

		for (unsigned i = 0; i < out->count; i++)
			keys[i] = ((uint64_t)out->hosts[i].preference << 48) | (next_random(&state) >> 16);
		for (unsigned i = 1; i < out->count; i++) {
			struct rm_mx_host h = out->hosts[i];
			uint64_t k = keys[i];
			unsigned j = i;

			while (j > 0 && keys[j - 1] > k) {
				keys[j] = keys[j - 1];
				out->hosts[j] = out->hosts[j - 1];
				j--;
			}
			keys[j] = k;
			out->hosts[j] = h;
		}
	}
	out->status = RM_MX_OK;
	return 0;
}

int rm_mx_addresses(const uint8_t *answer, size_t len, const char *host, struct rm_mx_addrs *out)
{
	struct owners o;
	struct rm_dns_msg m;
	struct rm_dns_rr rr;
	uint32_t ttl = UINT32_MAX;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!answer_open(answer, len, host, &m, &o, &out->status, &out->why, &out->ttl_s))
		return 0;
	while ((rc = rm_dns_msg_next(&m, &rr)) == 1) {
		size_t n;

		if (rr.section != RM_DNS_ANSWER || rr.cls != RM_DNS_CLASS_IN || !owned(&o, rr.name) ||
		    (rr.type != RM_DNS_TYPE_A && rr.type != RM_DNS_TYPE_AAAA))
			continue;
		/* One family per answer: the first record's (a query asks for one). */
		if (out->family == 0)
			out->family = rr.type == RM_DNS_TYPE_A ? AF_INET : AF_INET6;
		if ((out->family == AF_INET) != (rr.type == RM_DNS_TYPE_A) || out->count >= RM_MX_ADDRS_MAX)
			continue;
		n = rr.type == RM_DNS_TYPE_A ? 4 : 16;
		memset(out->addr[out->count], 0, sizeof(out->addr[0]));
		memcpy(out->addr[out->count], m.buf + rr.rdata_off, n);
		out->count++;
		if (rr.ttl < ttl)
			ttl = rr.ttl;
	}
	if (rc < 0) {
		out->count = 0;
		out->why = rm_dns_msg_error(rc);
		return 0;
	}
	if (out->count == 0) {
		out->status = RM_MX_IMPLICIT;	/* no data for this family */
		out->ttl_s = negative_ttl(answer, len);
		return 0;
	}
	out->ttl_s = ttl;
	out->status = RM_MX_OK;
	return 0;
}

const char *rm_mx_status_text(enum rm_mx_status st)
{
	switch (st) {
	case RM_MX_OK: return "MX found";
	case RM_MX_IMPLICIT: return "no MX: the domain itself (implicit MX)";
	case RM_MX_NULL: return "the domain accepts no mail (null MX, RFC 7505)";
	case RM_MX_NXDOMAIN: return "the domain does not exist";
	case RM_MX_TEMPFAIL: return "temporary DNS failure";
	}
	return "unknown";
}
