/*
 * NAME
 *	route - where a recipient goes, and when a failed one is tried again
 * SUMMARY
 *	#include "core/route.h"
 *
 *	void rm_route_nexthop_parse(const char *text, uint16_t default_port,
 *				    struct rm_route *out);
 *	void rm_route_recipient(const struct rm_route_policy *p, const char *addr,
 *				struct rm_route *out);
 *	enum rm_tls_policy rm_route_tls_policy(const struct rm_route_policy *p,
 *					       const char *domain, const char *nexthop);
 *
 *	uint64_t rm_retry_backoff_ms(const struct rm_retry_policy *p, uint32_t attempts);
 *	void rm_retry_decide(const struct rm_retry_policy *p, const struct rm_retry_state *s,
 *			     struct rm_retry_verdict *out);
 * DESCRIPTION
 *	The delivery decisions that need no I/O, so that they are tested alone
 *	(tests/unit/test_route.c).  core/delivery.c calls them; nothing here
 *	allocates, blocks or keeps state.
 *
 *	Routing, in Postfix's order (transport maps, then relayhost, then MX):
 *	  - the recipient's domain in relay_domains: that domain's next hop;
 *	  - else the smarthost when one is set (out->smarthost: AUTH goes with it);
 *	  - else the MX of the domain; an address literal ("[192.0.2.1]",
 *	    "[IPv6:2001:db8::1]") is that address; no domain at all is
 *	    local_hostname's MX.
 *	A next hop is written "[host]:port" or "[host]" (that host's A/AAAA, no
 *	MX lookup: RM_ROUTE_HOST), "host:port" or "host" (the MX of host:
 *	RM_ROUTE_MX).  An IP address is always RM_ROUTE_HOST.  Domains and
 *	hosts are lower-cased.  out->key is equal for two recipients exactly
 *	when they share a destination (kind, name, port, smarthost), so a
 *	message's recipients with equal keys go in one transaction.
 *
 *	rm_route_tls_policy: tls_policy_map's entry for the next hop as written,
 *	else for the recipient's domain, else tls_default.  Values: none, may,
 *	encrypt, verify (anything else reads as may, the safe default that
 *	still delivers).
 *
 *	Retries: the n-th retry (attempts = n - 1 earlier deferrals) waits
 *	initial_ms doubled attempts times, at most max_ms.  rm_retry_decide,
 *	at the end of an attempt that left recipients deferred:
 *	  - expired: the message is older than lifetime_ms; its deferred
 *	    recipients bounce (5.4.7);
 *	  - else next_attempt_ms: now plus the backoff;
 *	  - delay_warning: delay_warning_ms > 0, the message is at least that
 *	    old, and its previous attempt (if any) was before that age, so the
 *	    warning goes once, with the first deferral past the mark.  The
 *	    previous attempt is derived from the schedule (this attempt was due
 *	    at due_ms, set to previous attempt + backoff(attempts - 1)), not
 *	    stored in the spool.  A flush makes due_ms earlier, so the derived
 *	    previous attempt is never later than the real one: a flush may send
 *	    a second warning, never lose the first.
 */
#ifndef RM_ROUTE_H
#define RM_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"

#define RM_ROUTE_NAME_MAX 254		/* a domain name's text */
#define RM_ROUTE_KEY_BYTES 320

enum rm_route_kind { RM_ROUTE_MX = 0, RM_ROUTE_HOST };

struct rm_map;

struct rm_route_policy {
	const struct rm_map *relay_domains;	/* domain -> next hop; NULL = none */
	const char *smarthost;			/* NULL or "" = none */
	const struct rm_map *tls_policy_map;	/* NULL = none */
	enum rm_tls_policy tls_default;
	uint16_t port;				/* a next hop's port when it names none */
	const char *local_hostname;		/* the domain of a recipient without one */
};

struct rm_route {
	enum rm_route_kind kind;
	char name[RM_ROUTE_NAME_MAX + 1];	/* the domain to look up, the host, or the address */
	uint16_t port;
	bool smarthost;
	enum rm_tls_policy tls;
	char key[RM_ROUTE_KEY_BYTES];
};

void rm_route_nexthop_parse(const char *text, uint16_t default_port, struct rm_route *out);
void rm_route_recipient(const struct rm_route_policy *p, const char *addr, struct rm_route *out);
enum rm_tls_policy rm_route_tls_policy(const struct rm_route_policy *p, const char *domain, const char *nexthop);

struct rm_retry_policy {
	uint64_t initial_ms;
	uint64_t max_ms;
	uint64_t lifetime_ms;
	uint64_t delay_warning_ms;	/* 0 = no delay warnings */
};

struct rm_retry_state {
	uint64_t received_ms;		/* all times Unix milliseconds */
	uint64_t now_ms;
	uint64_t due_ms;		/* when this attempt was due (0: at once, a first attempt) */
	uint32_t attempts;		/* earlier deferrals */
};

struct rm_retry_verdict {
	bool expired;
	bool delay_warning;
	uint64_t next_attempt_ms;	/* not expired */
};

uint64_t rm_retry_backoff_ms(const struct rm_retry_policy *p, uint32_t attempts);
void rm_retry_decide(const struct rm_retry_policy *p, const struct rm_retry_state *s, struct rm_retry_verdict *out);

#endif
