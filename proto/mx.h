/*
 * NAME
 *	mx - where mail for a domain goes, from the DNS answers (RFC 5321 5.1, RFC 7505)
 * SUMMARY
 *	#include "proto/mx.h"
 *
 *	int rm_mx_from_answer(const uint8_t *answer, size_t len, const char *domain,
 *			      uint64_t random, struct rm_mx_result *out);
 *	int rm_mx_addresses(const uint8_t *answer, size_t len, const char *host,
 *			    struct rm_mx_addrs *out);
 *	const char *rm_mx_status_text(enum rm_mx_status st);
 * DESCRIPTION
 *	Pure: the decisions of RFC 5321 5.1 on the raw response to an MX query
 *	for domain (proto/dns_msg.h parses it), so that they are unit-tested and
 *	fuzzed apart from the resolver.
 *
 *	rm_mx_from_answer gives out->status:
 *	  RM_MX_OK         out->hosts[0..count) in the order to try: ascending
 *	                   preference, equal preferences in an order drawn from
 *	                   random (RFC 5321 5.1: spread the load), duplicates
 *	                   dropped, at most RM_MX_HOSTS_MAX;
 *	  RM_MX_IMPLICIT   no MX record (NOERROR, no data): the domain itself is
 *	                   the one host (the implicit MX), preference 0;
 *	  RM_MX_NULL       RFC 7505 null MX (one MX "0 ."): the domain takes no
 *	                   mail; bounce at once (5.1.10);
 *	  RM_MX_NXDOMAIN   the domain does not exist: bounce (5.1.2);
 *	  RM_MX_TEMPFAIL   SERVFAIL, REFUSED, a truncated or broken answer, an
 *	                   answer that is not for the question: defer (4.4.3).
 *	Records are taken for the domain or for the target of a CNAME in the
 *	answer that starts at the domain (at most RM_MX_CNAMES_MAX deep).  A
 *	"." exchange among real ones is ignored (RFC 7505 3).  out->ttl_s is
 *	the least TTL of the records used, or for NXDOMAIN / no data the
 *	negative TTL of the SOA in the authority section (RFC 2308 5:
 *	min(SOA TTL, SOA MINIMUM)), or RM_MX_NEGATIVE_TTL_DEFAULT_S without one;
 *	the caller caps it.
 *
 *	rm_mx_addresses collects the A or AAAA records for host from a
 *	response (following CNAMEs as above) into out, with their least TTL;
 *	out->status is RM_MX_OK (count > 0), RM_MX_IMPLICIT (no data: count 0),
 *	RM_MX_NXDOMAIN or RM_MX_TEMPFAIL.
 * DIAGNOSTICS
 *	Both return 0; the outcome is in out->status (a malformed answer is
 *	RM_MX_TEMPFAIL with out->why).
 */
#ifndef RM_MX_H
#define RM_MX_H

#include <stddef.h>
#include <stdint.h>

#include "proto/dns_msg.h"

#define RM_MX_HOSTS_MAX 16u
#define RM_MX_ADDRS_MAX 16u
#define RM_MX_CNAMES_MAX 8u
#define RM_MX_NEGATIVE_TTL_DEFAULT_S 300u

enum rm_mx_status { RM_MX_OK = 0, RM_MX_IMPLICIT, RM_MX_NULL, RM_MX_NXDOMAIN, RM_MX_TEMPFAIL };

struct rm_mx_host {
	char name[RM_DNS_NAME_TEXT_MAX + 1];
	uint16_t preference;
};

struct rm_mx_result {
	enum rm_mx_status status;
	const char *why;		/* TEMPFAIL: what was wrong */
	uint32_t ttl_s;
	unsigned count;
	struct rm_mx_host hosts[RM_MX_HOSTS_MAX];
};

struct rm_mx_addrs {
	enum rm_mx_status status;
	const char *why;
	uint32_t ttl_s;
	int family;			/* AF_INET (A) or AF_INET6 (AAAA) */
	unsigned count;
	uint8_t addr[RM_MX_ADDRS_MAX][16];
};

int rm_mx_from_answer(const uint8_t *answer, size_t len, const char *domain, uint64_t random,
		      struct rm_mx_result *out);
int rm_mx_addresses(const uint8_t *answer, size_t len, const char *host, struct rm_mx_addrs *out);
const char *rm_mx_status_text(enum rm_mx_status st);

#endif
