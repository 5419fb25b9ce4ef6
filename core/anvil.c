/*
 * NAME
 *	anvil - process-wide per-client-address counters, lock-free
 * SUMMARY
 *	See core/anvil.h for the interface.
 * DESCRIPTION
 *	Two tables, each RM_ANVIL_ROWS x RM_ANVIL_SLOTS, allocated zeroed at
 *	init (an all-zero _Atomic uint32_t is a valid 0 on every target we
 *	build for): connection counts, and authentication-failure slots of
 *	{count, window_start_s}.  One SipHash-2-4 per call gives both rows'
 *	indexes.  Slots of neighbouring indexes share cache lines; that costs
 *	some false sharing between workers counting different clients, and
 *	saves the 16x memory of padding every slot to a line.
 *
 *	Memory order: the counters are statistics, not guards of other data,
 *	so relaxed operations would do for the counts themselves; the window
 *	start is published with release and read with acquire so that a
 *	thread that sees a new window also sees the count reset that began
 *	it, in the common case (see the race described in core/anvil.h).
 *
 *	Counts saturate at RM_ANVIL_COUNT_MAX instead of wrapping: a wrapped
 *	row would read as a small number and let the minimum go under the
 *	true count, the one error the sketch must not make.
 *
 *	Loops: SipHash has fixed rounds; the compare-and-swap that keeps a
 *	slot from going below 0 is retried at most CAS_TRIES_MAX times (it
 *	fails only when another thread changed the slot in between); after
 *	that a plain atomic decrement is safe because the caller's own enter
 *	is still counted in the slot, so it is not 0.
 * DIAGNOSTICS
 *	See core/anvil.h.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/anvil.h"

#define ROW_MASK (RM_ANVIL_SLOTS - 1u)
#define RM_ANVIL_COUNT_MAX (UINT32_MAX / 2u)
#define CAS_TRIES_MAX 64
#define GETRANDOM_TRIES_MAX 8

_Static_assert((RM_ANVIL_SLOTS & (RM_ANVIL_SLOTS - 1u)) == 0, "RM_ANVIL_SLOTS: power of two");
_Static_assert(RM_ANVIL_SLOTS <= (1ull << 32), "row index comes from 32 bits of the hash");
_Static_assert(RM_ANVIL_ROWS == 2, "the hash gives two indexes");

struct auth_slot {
	_Atomic uint32_t count;
	_Atomic uint32_t window_start_s;
};

struct rm_anvil {
	uint64_t k0, k1;			/* SipHash key */
	_Atomic uint32_t *conn;			/* [row * RM_ANVIL_SLOTS + index] */
	struct auth_slot *auth;			/* same layout */
};

/* --- SipHash-2-4 of one 16-byte address ----------------------------------------- */

static uint64_t rotl(uint64_t x, unsigned b)
{
	return (x << b) | (x >> (64 - b));
}

static uint64_t load_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

#define SIPROUND()                                                               \
	do {                                                                     \
		v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);        \
		v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                           \
		v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                           \
		v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);        \
	} while (0)

static uint64_t siphash24_16(uint64_t k0, uint64_t k1, const uint8_t msg[16])
{
	uint64_t v0 = k0 ^ 0x736f6d6570736575ull;
	uint64_t v1 = k1 ^ 0x646f72616e646f6dull;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ull;
	uint64_t v3 = k1 ^ 0x7465646279746573ull;
	const uint64_t last = (uint64_t)16 << 56;	/* length byte, no tail bytes */

	for (unsigned w = 0; w < 2; w++) {
		uint64_t m = load_le64(msg + 8 * w);

		v3 ^= m;
		SIPROUND();
		SIPROUND();
		v0 ^= m;
	}
	v3 ^= last;
	SIPROUND();
	SIPROUND();
	v0 ^= last;
	v2 ^= 0xff;
	SIPROUND();
	SIPROUND();
	SIPROUND();
	SIPROUND();
	return v0 ^ v1 ^ v2 ^ v3;
}

/* The address as 16 bytes: IPv6, IPv4 as ::ffff:a.b.c.d, anything else "::". */
static void address_key(const struct sockaddr *sa, uint8_t key[16])
{
	memset(key, 0, 16);
	if (sa == NULL)
		return;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

		key[10] = 0xff;
		key[11] = 0xff;
		memcpy(key + 12, &in->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

		memcpy(key, in6->sin6_addr.s6_addr, 16);
	}
}

/* Flat indexes of the address's slot in row 0 and in row 1. */
static void slots_of(const struct rm_anvil *a, const struct sockaddr *sa, uint32_t idx[2])
{
	uint8_t key[16];
	uint64_t h;

	address_key(sa, key);
	h = siphash24_16(a->k0, a->k1, key);
	idx[0] = (uint32_t)h & ROW_MASK;
	idx[1] = RM_ANVIL_SLOTS + ((uint32_t)(h >> 32) & ROW_MASK);
}

/* --- init ----------------------------------------------------------------------- */

int rm_anvil_init_keyed(struct rm_anvil **out, const uint8_t key[RM_ANVIL_KEY_BYTES])
{
	struct rm_anvil *a = calloc(1, sizeof(*a));
	size_t n = (size_t)RM_ANVIL_ROWS * RM_ANVIL_SLOTS;

	*out = NULL;
	if (a == NULL)
		return -ENOMEM;
	a->conn = calloc(n, sizeof(*a->conn));
	a->auth = calloc(n, sizeof(*a->auth));
	if (a->conn == NULL || a->auth == NULL) {
		rm_anvil_free(a);
		return -ENOMEM;
	}
	a->k0 = load_le64(key);
	a->k1 = load_le64(key + 8);
	*out = a;
	return 0;
}

int rm_anvil_init(struct rm_anvil **out)
{
	uint8_t key[RM_ANVIL_KEY_BYTES];
	size_t got = 0;
	int rc;

	*out = NULL;
	/* 16 bytes never come back short from getrandom(2); only EINTR is retried. */
	for (unsigned tries = 0; tries < GETRANDOM_TRIES_MAX && got < sizeof(key); tries++) {
		ssize_t n = getrandom(key + got, sizeof(key) - got, 0);

		if (n > 0)
			got += (size_t)n;
		else if (n < 0 && errno != EINTR)
			return -errno;
	}
	if (got < sizeof(key))
		return -EAGAIN;
	rc = rm_anvil_init_keyed(out, key);
	memset(key, 0, sizeof(key));
	return rc;
}

void rm_anvil_free(struct rm_anvil *a)
{
	if (a == NULL)
		return;
	free(a->conn);
	free(a->auth);
	memset(a, 0, sizeof(*a));
	free(a);
}

/* --- connections ------------------------------------------------------------------ */

static uint32_t slot_add(_Atomic uint32_t *slot)
{
	uint32_t old = atomic_load_explicit(slot, memory_order_relaxed);

	if (old >= RM_ANVIL_COUNT_MAX)
		return old;
	return atomic_fetch_add_explicit(slot, 1, memory_order_relaxed) + 1;
}

static void slot_sub(_Atomic uint32_t *slot)
{
	uint32_t old = atomic_load_explicit(slot, memory_order_relaxed);

	for (unsigned tries = 0; tries < CAS_TRIES_MAX; tries++) {
		if (old == 0)
			return;		/* a leave without its enter: absorbed */
		if (atomic_compare_exchange_weak_explicit(slot, &old, old - 1, memory_order_relaxed,
							  memory_order_relaxed))
			return;
	}
	/* Contended that long: our own enter is still in the slot, so it is >= 1. */
	atomic_fetch_sub_explicit(slot, 1, memory_order_relaxed);
}

static uint32_t min_u32(uint32_t x, uint32_t y)
{
	return x < y ? x : y;
}

uint32_t rm_anvil_conn_enter(struct rm_anvil *a, const struct sockaddr *sa)
{
	uint32_t idx[2];

	slots_of(a, sa, idx);
	return min_u32(slot_add(&a->conn[idx[0]]), slot_add(&a->conn[idx[1]]));
}

void rm_anvil_conn_leave(struct rm_anvil *a, const struct sockaddr *sa)
{
	uint32_t idx[2];

	slots_of(a, sa, idx);
	slot_sub(&a->conn[idx[0]]);
	slot_sub(&a->conn[idx[1]]);
}

uint32_t rm_anvil_conn_count(const struct rm_anvil *a, const struct sockaddr *sa)
{
	uint32_t idx[2];

	slots_of(a, sa, idx);
	return min_u32(atomic_load_explicit(&a->conn[idx[0]], memory_order_relaxed),
		       atomic_load_explicit(&a->conn[idx[1]], memory_order_relaxed));
}

/* --- authentication failures ------------------------------------------------------ */

static uint32_t window_seconds(uint32_t window_ms)
{
	uint64_t s = ((uint64_t)window_ms + 999u) / 1000u;

	return s == 0 ? 1 : (uint32_t)s;
}

/* Seconds, modulo 2^32: differences stay right for windows under 68 years. */
static uint32_t now_seconds(uint64_t now_ms)
{
	return (uint32_t)(now_ms / 1000u);
}

static bool window_over(uint32_t count, uint32_t start_s, uint32_t now_s, uint32_t window_s)
{
	return count == 0 || (uint32_t)(now_s - start_s) >= window_s;
}

static uint32_t auth_slot_fail(struct auth_slot *s, uint32_t now_s, uint32_t window_s)
{
	uint32_t start = atomic_load_explicit(&s->window_start_s, memory_order_acquire);
	uint32_t count = atomic_load_explicit(&s->count, memory_order_relaxed);

	if (window_over(count, start, now_s, window_s)) {
		/* One thread wins the restart; a loser counts into the new window. */
		if (atomic_compare_exchange_strong_explicit(&s->window_start_s, &start, now_s,
							    memory_order_acq_rel,
							    memory_order_acquire)) {
			atomic_store_explicit(&s->count, 1, memory_order_release);
			return 1;
		}
	}
	return slot_add(&s->count);
}

static uint32_t auth_slot_read(const struct auth_slot *s, uint32_t now_s, uint32_t window_s)
{
	uint32_t start = atomic_load_explicit(&s->window_start_s, memory_order_acquire);
	uint32_t count = atomic_load_explicit(&s->count, memory_order_relaxed);

	return window_over(count, start, now_s, window_s) ? 0 : count;
}

uint32_t rm_anvil_auth_fail(struct rm_anvil *a, const struct sockaddr *sa, uint64_t now_ms,
			    uint32_t window_ms)
{
	uint32_t idx[2];
	uint32_t now_s = now_seconds(now_ms), window_s = window_seconds(window_ms);

	slots_of(a, sa, idx);
	return min_u32(auth_slot_fail(&a->auth[idx[0]], now_s, window_s),
		       auth_slot_fail(&a->auth[idx[1]], now_s, window_s));
}

uint32_t rm_anvil_auth_failures(const struct rm_anvil *a, const struct sockaddr *sa,
				uint64_t now_ms, uint32_t window_ms)
{
	uint32_t idx[2];
	uint32_t now_s = now_seconds(now_ms), window_s = window_seconds(window_ms);

	slots_of(a, sa, idx);
	return min_u32(auth_slot_read(&a->auth[idx[0]], now_s, window_s),
		       auth_slot_read(&a->auth[idx[1]], now_s, window_s));
}
