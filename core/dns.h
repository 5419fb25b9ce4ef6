/*
 * NAME
 *	dns - a worker's resolver: c-ares, its sockets polled through the ring
 * SUMMARY
 *	#include "core/dns.h"
 *
 *	int rm_dns_open(struct rm_worker *w, const struct rm_dns_options *o,
 *			struct rm_dns **out, char *err, size_t err_size);
 *	void rm_dns_close(struct rm_dns *d);
 *	int rm_dns_query(struct rm_dns *d, const char *name, int type,
 *			 rm_dns_done_fn done, void *arg);
 *	unsigned rm_dns_pending(const struct rm_dns *d);
 * DESCRIPTION
 *	One c-ares channel per worker, never shared.  c-ares opens and closes
 *	its UDP and TCP sockets itself and says, through its socket state
 *	callback, which to watch for reading and writing; each watched socket
 *	gets a one-shot poll on the worker's ring (rm_worker_poll), re-armed
 *	after c-ares has processed it.  c-ares's retransmission timeouts run on
 *	a worker timer set from ares_timeout after every step.  So no thread is
 *	spent on lookups and nothing blocks the loop; a lookup costs the ring
 *	operations of its packets.
 *
 *	rm_dns_query sends one query (class IN, type ns_t_mx, ns_t_a,
 *	ns_t_aaaa, ...; the name is absolute: no search list, no ndots) and
 *	calls done(arg, status, answer, len) once (from the loop, or before
 *	rm_dns_query returns for a name c-ares refuses at once): status 0 with
 *	the raw response (the caller parses it: proto/ has the DNS message
 *	codec; the response's RCODE is the caller's to read, NXDOMAIN included),
 *	or a negative status: -ETIMEDOUT (no server answered within the tries),
 *	-ECONNREFUSED, -EPROTO (a malformed response), -ECANCELED (closing),
 *	-ENOMEM.  The answer is valid during the call only.
 *
 *	Options (limits.dns_*, dns_servers): the servers as "ADDR[:PORT]"
 *	separated by commas ("" = /etc/resolv.conf), the per-try timeout and
 *	the number of tries; at most o->pending_max queries at once (-EAGAIN
 *	beyond).  Tests point it at a DNS server they start on a loopback port.
 * DIAGNOSTICS
 *	rm_dns_open: -1 with the reason in err (c-ares could not start, a bad
 *	server list).
 */
#ifndef RM_DNS_H
#define RM_DNS_H

#include <stddef.h>
#include <stdint.h>

#include "core/engine.h"

struct rm_dns;

struct rm_dns_options {
	const char *servers;		/* "127.0.0.1:5353,[::1]:53"; "" = resolv.conf */
	uint32_t timeout_ms;		/* per try */
	uint32_t tries;
	uint32_t pending_max;
};

typedef void (*rm_dns_done_fn)(void *arg, int status, const uint8_t *answer, size_t len);

int rm_dns_open(struct rm_worker *w, const struct rm_dns_options *o, struct rm_dns **out, char *err,
		size_t err_size);
void rm_dns_close(struct rm_dns *d);
int rm_dns_query(struct rm_dns *d, const char *name, int type, rm_dns_done_fn done, void *arg);
unsigned rm_dns_pending(const struct rm_dns *d);

#endif
