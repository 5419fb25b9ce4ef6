/*
 * NAME
 *	anvil - process-wide per-client-address counters, lock-free
 * SUMMARY
 *	#include "core/anvil.h"
 *
 *	int rm_anvil_init(struct rm_anvil **out);
 *	int rm_anvil_init_keyed(struct rm_anvil **out, const uint8_t key[RM_ANVIL_KEY_BYTES]);
 *	void rm_anvil_free(struct rm_anvil *a);
 *
 *	uint32_t rm_anvil_conn_enter(struct rm_anvil *a, const struct sockaddr *sa);
 *	void rm_anvil_conn_leave(struct rm_anvil *a, const struct sockaddr *sa);
 *	uint32_t rm_anvil_conn_count(const struct rm_anvil *a, const struct sockaddr *sa);
 *
 *	uint32_t rm_anvil_auth_fail(struct rm_anvil *a, const struct sockaddr *sa,
 *				    uint64_t now_ms, uint32_t window_ms);
 *	uint32_t rm_anvil_auth_failures(const struct rm_anvil *a, const struct sockaddr *sa,
 *					uint64_t now_ms, uint32_t window_ms);
 * DESCRIPTION
 *	What Postfix's anvil server counts (connections per client, failed
 *	logins per client), in-process: one struct rm_anvil shared by every
 *	worker thread, updated with C11 atomics and no lock.  It must be
 *	process-wide because SO_REUSEPORT spreads one client's connections
 *	over all the workers: a per-worker count would be a fraction.
 *
 *	Each table is a count-min sketch: two rows of RM_ANVIL_SLOTS slots,
 *	an address adds to one slot of each row, and a read returns the
 *	smaller of its two slots.  Since every slot holds the sum over all the
 *	addresses that land in it, a count can only be over-estimated (by the
 *	other addresses sharing both of its slots), never under-estimated:
 *	a limit may refuse a client early when the sketch is crowded, but
 *	never lets one past it.  With n busy addresses, the chance that a
 *	given other address shares both slots is about (n / RM_ANVIL_SLOTS)^2:
 *	1000 addresses give about 1 in 4300.  Memory is fixed whatever the
 *	number of clients (1.5 MiB), and nothing ever needs to be evicted.
 *
 *	The slots are picked by SipHash-2-4 of the 16-byte address under a
 *	128-bit key drawn from getrandom(2) at init: low and high bits of the
 *	64-bit result are the two rows' indexes (independent, since the hash
 *	is a keyed pseudo-random function), so a client cannot choose
 *	addresses that collide with a victim's without knowing the key.  The
 *	key is the IPv6 form of the address: an IPv4 client and the same
 *	client seen as IPv4-mapped IPv6 (::ffff:a.b.c.d, on a dual-stack
 *	listener) are one key.  The port is not part of it.  Any other family,
 *	and NULL, share the key of "::" (so AF_UNIX clients are one client;
 *	a caller that wants no limit for them does not count them).
 *	rm_anvil_init_keyed takes the key from the caller, so that tests
 *	replay identically; the daemon uses rm_anvil_init.
 *
 *	Connections: rm_anvil_conn_enter adds one for the address and returns
 *	its count including this one; rm_anvil_conn_leave takes one away and
 *	must be called once for every enter, with the same address.  A slot
 *	never goes below 0 (a leave without an enter is a caller bug and is
 *	absorbed rather than wrapping a counter to 4 billion); a slot cannot
 *	overflow while fewer than 2^32 connections are open.
 *	rm_anvil_conn_count reads without changing anything.
 *
 *	Authentication failures: a slot holds a count and the second its
 *	window started (window_start_s, from now_ms / 1000, so windows have a
 *	resolution of one second: window_ms is rounded up to whole seconds,
 *	at least 1).  rm_anvil_auth_fail records one failure and returns the
 *	failures in the current window, this one included; when a slot's
 *	window is over, the failure starts a new one at count 1.
 *	rm_anvil_auth_failures returns the same number without recording (0
 *	for a window that is over).  now_ms is the caller's clock, which must
 *	not go backwards (CLOCK_MONOTONIC; tests pass a fake one).  A slot's
 *	window is shared by every address landing in it, so a colliding
 *	address may restart it; the count returned is still never less than
 *	the address's own failures since that slot's window began.  Between
 *	threads, a failure recorded by one thread while another restarts the
 *	window may be lost, and the thread that saw the old window can
 *	return the old count plus one: at most a few counts, only at a window
 *	edge, which is acceptable for a rate limit and the price of no lock.
 *
 *	All the functions except init and free may be called from any
 *	thread at any time; every operation is a bounded number of atomic
 *	instructions (compare-and-swap loops are capped, see anvil.c).
 * DIAGNOSTICS
 *	rm_anvil_init returns 0, -ENOMEM, or the negative errno of a failed
 *	getrandom(2).  Nothing else fails.
 */
#ifndef RM_ANVIL_H
#define RM_ANVIL_H

#include <stdint.h>
#include <sys/socket.h>

#define RM_ANVIL_SLOTS 65536u		/* per row; a power of two, at most 2^32 */
#define RM_ANVIL_ROWS 2u
#define RM_ANVIL_KEY_BYTES 16

struct rm_anvil;

int rm_anvil_init(struct rm_anvil **out);
int rm_anvil_init_keyed(struct rm_anvil **out, const uint8_t key[RM_ANVIL_KEY_BYTES]);
void rm_anvil_free(struct rm_anvil *a);

uint32_t rm_anvil_conn_enter(struct rm_anvil *a, const struct sockaddr *sa);
void rm_anvil_conn_leave(struct rm_anvil *a, const struct sockaddr *sa);
uint32_t rm_anvil_conn_count(const struct rm_anvil *a, const struct sockaddr *sa);

uint32_t rm_anvil_auth_fail(struct rm_anvil *a, const struct sockaddr *sa, uint64_t now_ms,
			    uint32_t window_ms);
uint32_t rm_anvil_auth_failures(const struct rm_anvil *a, const struct sockaddr *sa,
				uint64_t now_ms, uint32_t window_ms);

#endif
