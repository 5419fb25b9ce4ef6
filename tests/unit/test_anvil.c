/*
 * NAME
 *	test_anvil - unit tests of core/anvil
 * DESCRIPTION
 *	Connection counts for one address and for many; IPv4 and IPv4-mapped
 *	IPv6 count as one client, the port does not matter; leave never goes
 *	below zero; four threads entering and leaving on the same addresses
 *	end at zero; authentication-failure windows under a fake clock; and
 *	the over-estimate bound: after 1000 distinct addresses, a fresh one
 *	reads 0 in the vast majority of cases.  Tests that depend on which
 *	slots addresses land in use a fixed key, so they replay identically.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/un.h>

#include "core/anvil.h"

static const uint8_t fixed_key[RM_ANVIL_KEY_BYTES] = {
	0x13, 0x37, 0xc0, 0xde, 0x01, 0x02, 0x03, 0x04,
	0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x10, 0x20,
};

static struct sockaddr_in v4(uint32_t host_order, uint16_t port)
{
	struct sockaddr_in in;

	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons(port);
	in.sin_addr.s_addr = htonl(host_order);
	return in;
}

static struct sockaddr_in6 v6(const char *text, uint16_t port)
{
	struct sockaddr_in6 in6;

	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	in6.sin6_port = htons(port);
	assert_int_equal(inet_pton(AF_INET6, text, &in6.sin6_addr), 1);
	return in6;
}

#define SA(x) ((const struct sockaddr *)&(x))

static struct rm_anvil *new_anvil(bool keyed)
{
	struct rm_anvil *a = NULL;

	if (keyed)
		assert_int_equal(rm_anvil_init_keyed(&a, fixed_key), 0);
	else
		assert_int_equal(rm_anvil_init(&a), 0);
	assert_non_null(a);
	return a;
}

static void test_one_address(void **state)
{
	struct rm_anvil *a = new_anvil(false);
	struct sockaddr_in c = v4(0xc0000201, 40000);	/* 192.0.2.1 */

	assert_int_equal(rm_anvil_conn_count(a, SA(c)), 0);
	for (uint32_t i = 1; i <= 100; i++)
		assert_int_equal(rm_anvil_conn_enter(a, SA(c)), i);
	assert_int_equal(rm_anvil_conn_count(a, SA(c)), 100);
	for (uint32_t i = 100; i > 0; i--) {
		rm_anvil_conn_leave(a, SA(c));
		assert_int_equal(rm_anvil_conn_count(a, SA(c)), i - 1);
	}
	/* A leave too many is absorbed: the count stays at 0, it does not wrap. */
	rm_anvil_conn_leave(a, SA(c));
	assert_int_equal(rm_anvil_conn_count(a, SA(c)), 0);
	assert_int_equal(rm_anvil_conn_enter(a, SA(c)), 1);
	rm_anvil_conn_leave(a, SA(c));
	rm_anvil_free(a);
	rm_anvil_free(NULL);
}

static void test_many_addresses(void **state)
{
	struct rm_anvil *a = new_anvil(true);
	enum { N = 2000 };

	/* Address i enters i % 5 + 1 times. */
	for (uint32_t i = 0; i < N; i++) {
		struct sockaddr_in c = v4(0x0a000000 + i * 7919u, 1);

		for (uint32_t k = 0; k <= i % 5; k++)
			(void)rm_anvil_conn_enter(a, SA(c));
	}
	/* Never below the true count; exact for nearly all (a fixed key: deterministic). */
	unsigned exact = 0;

	for (uint32_t i = 0; i < N; i++) {
		struct sockaddr_in c = v4(0x0a000000 + i * 7919u, 1);
		uint32_t n = rm_anvil_conn_count(a, SA(c));

		assert_true(n >= i % 5 + 1);
		exact += n == i % 5 + 1;
	}
	assert_true(exact >= N - N / 100);
	for (uint32_t i = 0; i < N; i++) {
		struct sockaddr_in c = v4(0x0a000000 + i * 7919u, 1);

		for (uint32_t k = 0; k <= i % 5; k++)
			rm_anvil_conn_leave(a, SA(c));
	}
	for (uint32_t i = 0; i < N; i++) {
		struct sockaddr_in c = v4(0x0a000000 + i * 7919u, 1);

		assert_int_equal(rm_anvil_conn_count(a, SA(c)), 0);
	}
	rm_anvil_free(a);
}

static void test_mapped_is_ipv4(void **state)
{
	struct rm_anvil *a = new_anvil(false);
	struct sockaddr_in c4 = v4(0xcb007109, 1025);		/* 203.0.113.9 */
	struct sockaddr_in c4b = v4(0xcb007109, 65000);		/* another port */
	struct sockaddr_in6 c6 = v6("::ffff:203.0.113.9", 2000);
	struct sockaddr_in6 compat = v6("::203.0.113.9", 2000);	/* not mapped: another client */
	struct sockaddr_in6 other = v6("2001:db8::1", 25);

	assert_int_equal(rm_anvil_conn_enter(a, SA(c4)), 1);
	assert_int_equal(rm_anvil_conn_enter(a, SA(c6)), 2);
	assert_int_equal(rm_anvil_conn_enter(a, SA(c4b)), 3);
	assert_int_equal(rm_anvil_conn_count(a, SA(c6)), 3);
	assert_int_equal(rm_anvil_conn_count(a, SA(compat)), 0);
	assert_int_equal(rm_anvil_conn_count(a, SA(other)), 0);
	rm_anvil_conn_leave(a, SA(c6));
	rm_anvil_conn_leave(a, SA(c4));
	assert_int_equal(rm_anvil_conn_count(a, SA(c4b)), 1);
	rm_anvil_conn_leave(a, SA(c4b));

	/* Failures too. */
	assert_int_equal(rm_anvil_auth_fail(a, SA(c4), 5000, 60000), 1);
	assert_int_equal(rm_anvil_auth_fail(a, SA(c6), 5000, 60000), 2);
	assert_int_equal(rm_anvil_auth_failures(a, SA(c4b), 5000, 60000), 2);

	/* Non-IP families and NULL are one client, "::". */
	struct sockaddr_un un;
	struct sockaddr_in6 any = v6("::", 0);

	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	assert_int_equal(rm_anvil_conn_enter(a, (const struct sockaddr *)&un), 1);
	assert_int_equal(rm_anvil_conn_enter(a, NULL), 2);
	assert_int_equal(rm_anvil_conn_count(a, SA(any)), 2);
	rm_anvil_conn_leave(a, NULL);
	rm_anvil_conn_leave(a, (const struct sockaddr *)&un);
	assert_int_equal(rm_anvil_conn_count(a, SA(any)), 0);
	rm_anvil_free(a);
}

/* --- threads ---------------------------------------------------------------------- */

enum { THREADS = 4, ROUNDS = 20000, THREAD_ADDRS = 8 };

struct thread_arg {
	struct rm_anvil *a;
	unsigned id;
	uint32_t max_seen;
};

static void *worker(void *p)
{
	struct thread_arg *t = p;

	for (unsigned r = 0; r < ROUNDS; r++) {
		/* Shared addresses, half of them seen as IPv4-mapped IPv6. */
		unsigned k = (r + t->id) % THREAD_ADDRS;
		struct sockaddr_in c4 = v4(0xc6336400 + k, (uint16_t)(1000 + t->id));
		struct sockaddr_in6 c6;
		const struct sockaddr *sa = SA(c4);

		if ((r & 1) != 0) {
			memset(&c6, 0, sizeof(c6));
			c6.sin6_family = AF_INET6;
			c6.sin6_addr.s6_addr[10] = 0xff;
			c6.sin6_addr.s6_addr[11] = 0xff;
			memcpy(&c6.sin6_addr.s6_addr[12], &c4.sin_addr, 4);
			sa = SA(c6);
		}
		uint32_t n = rm_anvil_conn_enter(t->a, sa);

		if (n > t->max_seen)
			t->max_seen = n;
		if (r % 3 == 0) {			/* sometimes hold two */
			(void)rm_anvil_conn_enter(t->a, sa);
			rm_anvil_conn_leave(t->a, sa);
		}
		rm_anvil_conn_leave(t->a, sa);
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct rm_anvil *a = new_anvil(false);
	pthread_t th[THREADS];
	struct thread_arg args[THREADS];

	for (unsigned i = 0; i < THREADS; i++) {
		args[i] = (struct thread_arg){ .a = a, .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
	}
	for (unsigned i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	for (unsigned k = 0; k < THREAD_ADDRS; k++) {
		struct sockaddr_in c = v4(0xc6336400 + k, 1);

		assert_int_equal(rm_anvil_conn_count(a, SA(c)), 0);
	}
	for (unsigned i = 0; i < THREADS; i++) {
		/* A thread holds at most 2 at a time; at most THREADS x 2 overall, plus collisions. */
		assert_true(args[i].max_seen >= 1);
		assert_true(args[i].max_seen <= 2 * THREADS * THREAD_ADDRS);
	}
	rm_anvil_free(a);
}

/* --- authentication failures -------------------------------------------------------- */

static void test_auth_window(void **state)
{
	struct rm_anvil *a = new_anvil(false);
	struct sockaddr_in c = v4(0xc0000263, 1);	/* 192.0.2.99 */
	struct sockaddr_in d = v4(0xc0000264, 1);
	const uint32_t window_ms = 60000;
	uint64_t t0 = 1000000;				/* a monotonic clock, in ms */

	assert_int_equal(rm_anvil_auth_failures(a, SA(c), t0, window_ms), 0);
	for (uint32_t i = 1; i <= 5; i++)
		assert_int_equal(rm_anvil_auth_fail(a, SA(c), t0 + i * 1000, window_ms), i);
	assert_int_equal(rm_anvil_auth_failures(a, SA(c), t0 + 6000, window_ms), 5);
	assert_int_equal(rm_anvil_auth_failures(a, SA(d), t0 + 6000, window_ms), 0);
	/* The window began at the first failure's second (t0 + 1 s): still in it at +60.999 s. */
	assert_int_equal(rm_anvil_auth_failures(a, SA(c), t0 + 60999, window_ms), 5);
	/* Over at +61 s: reads 0, and the next failure starts a new window at 1. */
	assert_int_equal(rm_anvil_auth_failures(a, SA(c), t0 + 61000, window_ms), 0);
	assert_int_equal(rm_anvil_auth_fail(a, SA(c), t0 + 61000, window_ms), 1);
	assert_int_equal(rm_anvil_auth_fail(a, SA(c), t0 + 62000, window_ms), 2);
	assert_int_equal(rm_anvil_auth_failures(a, SA(c), t0 + 120999, window_ms), 2);
	assert_int_equal(rm_anvil_auth_failures(a, SA(c), t0 + 121000, window_ms), 0);
	/* Reading alone never records. */
	assert_int_equal(rm_anvil_auth_failures(a, SA(d), t0 + 121000, window_ms), 0);

	/* Windows round up to whole seconds, at least one. */
	struct sockaddr_in e = v4(0xc0000265, 1);

	assert_int_equal(rm_anvil_auth_fail(a, SA(e), 5000, 0), 1);
	assert_int_equal(rm_anvil_auth_fail(a, SA(e), 5999, 0), 2);
	assert_int_equal(rm_anvil_auth_fail(a, SA(e), 6000, 0), 1);
	assert_int_equal(rm_anvil_auth_fail(a, SA(e), 6000, 1500), 2);
	assert_int_equal(rm_anvil_auth_fail(a, SA(e), 7999, 1500), 3);	/* 2 s window */
	assert_int_equal(rm_anvil_auth_fail(a, SA(e), 8000, 1500), 1);
	/* Clock starting at 0 (the zeroed slots' window start) works as well. */
	struct sockaddr_in f = v4(0xc0000266, 1);

	assert_int_equal(rm_anvil_auth_fail(a, SA(f), 0, 10000), 1);
	assert_int_equal(rm_anvil_auth_fail(a, SA(f), 9999, 10000), 2);
	assert_int_equal(rm_anvil_auth_fail(a, SA(f), 10000, 10000), 1);
	/* A huge window (49.7 days) does not overflow: the window from 10 s is still open. */
	assert_int_equal(rm_anvil_auth_fail(a, SA(f), 20000, UINT32_MAX), 2);
	assert_int_equal(rm_anvil_auth_fail(a, SA(f), 20000 + 86400000ull, UINT32_MAX), 3);
	assert_int_equal(rm_anvil_auth_failures(a, SA(f), 10000 + (uint64_t)UINT32_MAX + 1000,
						UINT32_MAX), 0);
	rm_anvil_free(a);
}

static void test_overestimate_bound(void **state)
{
	struct rm_anvil *a = new_anvil(true);
	enum { INSERTED = 1000, FRESH = 10000 };
	unsigned nonzero = 0, auth_nonzero = 0;

	for (uint32_t i = 0; i < INSERTED; i++) {
		struct sockaddr_in6 c = v6("2001:db8::", 1);

		memcpy(&c.sin6_addr.s6_addr[12], &i, sizeof(i));
		assert_true(rm_anvil_conn_enter(a, SA(c)) >= 1);
		assert_true(rm_anvil_auth_fail(a, SA(c), 1000, 60000) >= 1);
	}
	for (uint32_t i = 0; i < FRESH; i++) {
		struct sockaddr_in c = v4(0x64400000 + i, 1);	/* 100.64.0.0/10, not inserted */

		nonzero += rm_anvil_conn_count(a, SA(c)) != 0;
		auth_nonzero += rm_anvil_auth_failures(a, SA(c), 2000, 60000) != 0;
	}
	/* Expected about FRESH x (1000 / 65536)^2 = 2.3; allow 1%. */
	print_message("fresh addresses over-estimated: %u connections, %u failures of %u\n",
		      nonzero, auth_nonzero, FRESH);
	assert_true(nonzero <= FRESH / 100);
	assert_true(auth_nonzero <= FRESH / 100);
	rm_anvil_free(a);

	/* The same with a random key: the bound is a property of the sketch, not of one key. */
	a = new_anvil(false);
	nonzero = 0;
	for (uint32_t i = 0; i < INSERTED; i++) {
		struct sockaddr_in c = v4(0x0a000000 + i, 1);

		(void)rm_anvil_conn_enter(a, SA(c));
	}
	for (uint32_t i = 0; i < FRESH; i++) {
		struct sockaddr_in c = v4(0x0b000000 + i, 1);

		nonzero += rm_anvil_conn_count(a, SA(c)) != 0;
	}
	assert_true(nonzero <= FRESH / 100);
	rm_anvil_free(a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_address),
		cmocka_unit_test(test_many_addresses),
		cmocka_unit_test(test_mapped_is_ipv4),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_auth_window),
		cmocka_unit_test(test_overestimate_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
