/*
 * NAME
 *	delivery - a worker's queue manager: routing, DNS, connections, retries, bounces
 * SUMMARY
 *	#include "core/delivery.h"
 *
 *	int rm_delivery_start(struct rm_worker *w);
 *	void rm_delivery_stop(struct rm_worker *w);
 *	void rm_delivery_kick(struct rm_worker *w);
 *	struct rm_delivery_stats *rm_delivery_stats(unsigned worker);
 * DESCRIPTION
 *	Each worker delivers what its own spool holds: nothing is shared.  A
 *	worker timer takes due messages off the queue (rm_queue_next_due),
 *	at most limits.delivery_in_flight_max in delivery at once, and routes
 *	each pending recipient to a next hop:
 *	  - its domain in smtp.relay_domains: that domain's next hop
 *	    ("[host]:port" or "[ip]:port": no MX lookup; "host[:port]": MX of host);
 *	  - else delivery.smarthost when one is set (the same forms);
 *	  - else the MX of its domain (an address literal: that address).
 *	Recipients of one message with the same next hop go in one
 *	transaction (a job); a message's jobs may run at once on different
 *	next hops.
 *
 *	A next hop (a destination) keeps its DNS results (MX sorted by
 *	preference, random among equals; then A and AAAA of each exchanger,
 *	through core/dns.c) for their TTL, capped by limits.dns_ttl_max_ms: this
 *	is the per-worker DNS cache.  Its jobs wait in its queue for a
 *	connection: an idle one is reused (RSET is not needed after a clean
 *	transaction), or a new one is opened while fewer than
 *	limits.delivery_concurrency_per_destination (this worker's share:
 *	divided by the workers, rounded up) and limits.delivery_connections_max
 *	are open.  A connection carries limits.delivery_messages_per_connection
 *	messages, then QUITs; idle, it waits limits.delivery_connection_idle_ms
 *	for more.  A job whose connection fails before it is ready (refused,
 *	timeout, 4xx/5xx greeting, TLS required and missing) tries the next
 *	address, then the next exchanger; when none answers, the next hop is
 *	dead for limits.delivery_dead_destination_ms and its jobs defer at once.
 *
 *	Results per recipient: 2xx delivered; 5xx bounced; 4xx, a lost
 *	connection or a DNS failure deferred.  When a message's jobs are all
 *	done: rm_spool_mark_delivered / _bounced, and if any recipient is
 *	deferred, rm_spool_mark_deferred with the next attempt after
 *	limits.delivery_retry_initial_ms doubling per attempt up to
 *	limits.delivery_retry_max_ms, unless the message is older than
 *	limits.delivery_queue_lifetime_ms: then those bounce too ("expired").
 *	The schedule, the routing order and the TLS policy lookup are
 *	core/route.h's.  With limits.delivery_delay_warning_ms, the first
 *	deferral past that age sends one RFC 3464 "delayed" notice.  Under
 *	TLS "may", a failed handshake tries the same host again in plaintext.
 *	A bounce is an RFC 3464 report (proto/dsn.h) from the null sender to
 *	the envelope sender, spooled like any message; never for a message
 *	from the null sender, nor when NOTIFY says not to.  Every recipient's
 *	outcome is logged once per attempt, as Postfix does: queue id, to,
 *	relay, delay, TLS, dsn, status (sent / deferred / bounced) and the
 *	reply.
 * DIAGNOSTICS
 *	rm_delivery_start: -1 with a logged reason (the resolver could not start).
 */
#ifndef RM_DELIVERY_H
#define RM_DELIVERY_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/engine.h"

struct rm_delivery_stats {
	_Atomic uint64_t attempts;	/* jobs started */
	_Atomic uint64_t delivered;	/* recipients */
	_Atomic uint64_t deferred;
	_Atomic uint64_t bounced;
	_Atomic uint64_t dsn_sent;	/* bounce messages spooled */
	_Atomic uint64_t connections;	/* opened */
	_Atomic uint64_t connections_reused;	/* jobs on a connection that had one before */
	_Atomic uint64_t dns_queries;
	_Atomic uint64_t in_flight;	/* messages in delivery now */
};

int rm_delivery_start(struct rm_worker *w);
void rm_delivery_stop(struct rm_worker *w);
void rm_delivery_kick(struct rm_worker *w);
const struct rm_delivery_stats *rm_delivery_stats(unsigned worker);

#endif
