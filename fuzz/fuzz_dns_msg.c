/*
 * NAME
 *	fuzz_dns_msg - libFuzzer harness for proto/dns_msg and proto/mx
 * DESCRIPTION
 *	Each input is a DNS response as a resolver could hand it.  It is
 *	walked record by record (every name decoded must be lower-case
 *	printable ASCII without a dot inside a label, at most 253 characters),
 *	then given to rm_mx_from_answer and rm_mx_addresses: the results stay
 *	inside their bounds (host counts, sorted preferences, a reason for every
 *	temporary failure).  The first input byte picks the random seed, so tie
 *	ordering is explored too.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proto/dns_msg.h"
#include "proto/mx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_name(const char *n)
{
	size_t len = strlen(n);

	if (len > RM_DNS_NAME_TEXT_MAX)
		abort();
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)n[i];

		if (ch <= 32 || ch > 126 || (ch >= 'A' && ch <= 'Z'))
			abort();
		if (ch == '.' && (i == 0 || n[i - 1] == '.' || i + 1 == len))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rm_dns_msg m;
	struct rm_dns_rr rr;
	struct rm_mx_result r;
	struct rm_mx_addrs a;
	uint8_t *copy;
	uint64_t seed;


	if (size < 1)
		return 0;
	seed = data[0];
	data++;
	size--;
	/* An exact copy: any read past the end is ASan's. */
	copy = malloc(size ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	if (rm_dns_msg_parse(copy, size, &m) == 0) {
		for (unsigned i = 0; i < RM_DNS_RECORDS_MAX + 2 && rm_dns_msg_next(&m, &rr) == 1; i++) {
			check_name(rr.name);
			if (rr.rdata_off + rr.rdlen > size)
				abort();
			if (rr.type == RM_DNS_TYPE_MX) {
				uint16_t pref;
				char host[RM_DNS_NAME_TEXT_MAX + 1];

				if (rm_dns_rr_mx(&m, &rr, &pref, host, sizeof(host)) == 0)
					check_name(host);
			}
		}
	}
	rm_mx_from_answer(copy, size, "example.org", seed, &r);
	if (r.count > RM_MX_HOSTS_MAX || (r.status == RM_MX_TEMPFAIL && r.why == NULL && r.count != 0))
		abort();
	for (unsigned i = 0; i < r.count; i++) {
		check_name(r.hosts[i].name);
		if (i > 0 && r.hosts[i].preference < r.hosts[i - 1].preference)
			abort();
	}
	if ((r.status == RM_MX_OK || r.status == RM_MX_IMPLICIT) && r.count == 0)
		abort();
	rm_mx_addresses(copy, size, "mx.example.org", &a);
	if (a.count > RM_MX_ADDRS_MAX || (a.count > 0 && a.family != AF_INET && a.family != AF_INET6))
		abort();
	free(copy);
	return 0;
}
