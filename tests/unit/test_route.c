/*
 * NAME
 *	test_route - unit tests of core/route (routing and the retry schedule)
 * DESCRIPTION
 *	Next hops in every written form ([host]:port, [ip], host:port, bare
 *	IPv4 and IPv6, bad ports, case); the routing order (relay_domains
 *	before the smarthost before MX), address literals, a recipient
 *	without a domain, keys that group recipients exactly by destination;
 *	TLS policy lookups (next hop before domain, unknown values); the
 *	backoff (first, doubling, the cap, huge attempt counts); expiry at the
 *	lifetime; and the delay warning, sent once on the first deferral past
 *	its mark whatever the schedule, including a flush and a first attempt
 *	that is already late.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "core/maps.h"
#include "core/route.h"

static struct rm_map *map_of(const char *text)
{
	struct rm_map *m = NULL;
	char err[256] = "";

	if (rm_map_load_buffer("t.map", text, strlen(text), &m, err, sizeof(err)) != 0)
		fail_msg("map: %s", err);
	return m;
}

static void test_nexthop_forms(void **state)
{
	static const struct {
		const char *text;
		const char *name;
		enum rm_route_kind kind;
		uint16_t default_port;
		uint16_t port;
	} cases[] = {
		{ "[mail.Example.ORG]:2525", "mail.example.org", RM_ROUTE_HOST, 25, 2525 },
		{ "[relay.example]", "relay.example", RM_ROUTE_HOST, 26, 26 },
		{ "example.net:587", "example.net", RM_ROUTE_MX, 25, 587 },
		{ "example.net", "example.net", RM_ROUTE_MX, 25, 25 },
		/* An IP address is never looked up, bracketed or not. */
		{ "192.0.2.7:2026", "192.0.2.7", RM_ROUTE_HOST, 25, 2026 },
		{ "[2001:db8::1]:2026", "2001:db8::1", RM_ROUTE_HOST, 25, 2026 },
		/* A bare IPv6 address: its colons are not a port. */
		{ "2001:DB8::25", "2001:db8::25", RM_ROUTE_HOST, 25, 25 },
		/* Ports that are not ports keep the default. */
		{ "[h.example]:0", "h.example", RM_ROUTE_HOST, 25, 25 },
		{ "[h.example]:70000", "h.example", RM_ROUTE_HOST, 25, 25 },
		{ "h.example:25x", "h.example", RM_ROUTE_MX, 24, 24 },
		/* No closing bracket: the rest is the host. */
		{ "[h.example", "h.example", RM_ROUTE_HOST, 25, 25 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rm_route r;

		rm_route_nexthop_parse(cases[i].text, cases[i].default_port, &r);
		if (r.kind != cases[i].kind || strcmp(r.name, cases[i].name) != 0 || r.port != cases[i].port)
			fail_msg("%s: got kind %d name %s port %u", cases[i].text, r.kind, r.name, r.port);
	}
}

static void test_nexthop_long_name_is_cut(void **state)
{
	char text[600];
	struct rm_route r;

	(void)state;
	memset(text, 'a', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	rm_route_nexthop_parse(text, 25, &r);
	assert_int_equal(strlen(r.name), RM_ROUTE_NAME_MAX);
	assert_true(strlen(r.key) < sizeof(r.key));
}

static void test_routing_order(void **state)
{
	struct rm_map *relay = map_of("internal.example [10.0.0.5]:2525\nmx.example mail.mx.example\n");
	struct rm_route_policy p = { .relay_domains = relay, .port = 25, .local_hostname = "me.example" };
	struct rm_route r;

	(void)state;
	/* No smarthost: relay domains to their next hop, the rest by MX. */
	rm_route_recipient(&p, "a@Internal.Example", &r);
	assert_int_equal(r.kind, RM_ROUTE_HOST);
	assert_string_equal(r.name, "10.0.0.5");
	assert_int_equal(r.port, 2525);
	assert_false(r.smarthost);

	rm_route_recipient(&p, "b@mx.example", &r);
	assert_int_equal(r.kind, RM_ROUTE_MX);
	assert_string_equal(r.name, "mail.mx.example");

	rm_route_recipient(&p, "c@Elsewhere.ORG", &r);
	assert_int_equal(r.kind, RM_ROUTE_MX);
	assert_string_equal(r.name, "elsewhere.org");
	assert_int_equal(r.port, 25);
	assert_false(r.smarthost);

	/* With a smarthost: relay domains still go their way, everything else to it, with AUTH. */
	p.smarthost = "[smart.example]:587";
	rm_route_recipient(&p, "a@internal.example", &r);
	assert_string_equal(r.name, "10.0.0.5");
	assert_false(r.smarthost);
	rm_route_recipient(&p, "c@elsewhere.org", &r);
	assert_int_equal(r.kind, RM_ROUTE_HOST);
	assert_string_equal(r.name, "smart.example");
	assert_int_equal(r.port, 587);
	assert_true(r.smarthost);

	/* An empty smarthost is none. */
	p.smarthost = "";
	rm_route_recipient(&p, "c@elsewhere.org", &r);
	assert_int_equal(r.kind, RM_ROUTE_MX);
	rm_map_unref(relay);
}

static void test_literals_and_no_domain(void **state)
{
	struct rm_route_policy p = { .port = 2025, .local_hostname = "Me.Example" };
	struct rm_route r;

	(void)state;
	rm_route_recipient(&p, "u@[192.0.2.9]", &r);
	assert_int_equal(r.kind, RM_ROUTE_HOST);
	assert_string_equal(r.name, "192.0.2.9");
	assert_int_equal(r.port, 2025);

	rm_route_recipient(&p, "u@[IPv6:2001:db8::9]", &r);
	assert_int_equal(r.kind, RM_ROUTE_HOST);
	assert_string_equal(r.name, "2001:db8::9");

	/* "postmaster" alone: the local host's MX. */
	rm_route_recipient(&p, "postmaster", &r);
	assert_int_equal(r.kind, RM_ROUTE_MX);
	assert_string_equal(r.name, "me.example");

	/* The last @ separates the domain (a quoted local part may hold one). */
	rm_route_recipient(&p, "\"a@b\"@c.example", &r);
	assert_string_equal(r.name, "c.example");
}

static void test_keys_group_by_destination(void **state)
{
	struct rm_map *relay = map_of("a.example [10.0.0.1]:25\nb.example [10.0.0.1]:25\nc.example [10.0.0.1]:26\n"
				      "d.example 10.0.0.1\n");
	struct rm_route_policy p = { .relay_domains = relay, .port = 25, .local_hostname = "me" };
	struct rm_route r1, r2;

	(void)state;
	/* Two domains with one next hop: one destination (one transaction). */
	rm_route_recipient(&p, "x@a.example", &r1);
	rm_route_recipient(&p, "y@b.example", &r2);
	assert_string_equal(r1.key, r2.key);
	/* Another port, another destination. */
	rm_route_recipient(&p, "z@c.example", &r2);
	assert_string_not_equal(r1.key, r2.key);
	/* "10.0.0.1" unbracketed is the same host as "[10.0.0.1]". */
	rm_route_recipient(&p, "w@d.example", &r2);
	assert_string_equal(r1.key, r2.key);
	/* The same name by MX and as a host are two destinations. */
	rm_route_recipient(&p, "v@10.0.0.1.example", &r1);
	rm_route_nexthop_parse("[10.0.0.1.example]", 25, &r2);
	assert_string_not_equal(r1.key, r2.key);
	/* Case does not split a destination. */
	rm_route_recipient(&p, "v@MX.Example", &r1);
	rm_route_recipient(&p, "v@mx.example", &r2);
	assert_string_equal(r1.key, r2.key);
	/* The smarthost with AUTH is not the same destination as that host by relay_domains. */
	p.smarthost = "[10.0.0.1]:25";
	rm_route_recipient(&p, "x@a.example", &r1);
	rm_route_recipient(&p, "x@other.example", &r2);
	assert_string_not_equal(r1.key, r2.key);
	rm_map_unref(relay);
}

static void test_tls_policy(void **state)
{
	struct rm_map *relay = map_of("in.example [10.0.0.2]:25\n");
	struct rm_map *tls = map_of("secure.example verify\n[10.0.0.2]:25 encrypt\nin.example none\n"
				    "plain.example none\nodd.example sometimes\n");
	struct rm_route_policy p = { .relay_domains = relay, .tls_policy_map = tls, .tls_default = RM_TLS_POLICY_MAY,
				     .port = 25, .local_hostname = "me" };
	struct rm_route r;

	(void)state;
	rm_route_recipient(&p, "a@secure.example", &r);
	assert_int_equal(r.tls, RM_TLS_POLICY_VERIFY);
	rm_route_recipient(&p, "a@plain.example", &r);
	assert_int_equal(r.tls, RM_TLS_POLICY_NONE);
	/* The next hop's entry wins over the domain's. */
	rm_route_recipient(&p, "a@in.example", &r);
	assert_int_equal(r.tls, RM_TLS_POLICY_ENCRYPT);
	/* No entry: the default; an unknown value: may. */
	rm_route_recipient(&p, "a@other.example", &r);
	assert_int_equal(r.tls, RM_TLS_POLICY_MAY);
	p.tls_default = RM_TLS_POLICY_ENCRYPT;
	rm_route_recipient(&p, "a@other.example", &r);
	assert_int_equal(r.tls, RM_TLS_POLICY_ENCRYPT);
	rm_route_recipient(&p, "a@odd.example", &r);
	assert_int_equal(r.tls, RM_TLS_POLICY_MAY);
	/* No map at all. */
	p.tls_policy_map = NULL;
	assert_int_equal(rm_route_tls_policy(&p, "secure.example", NULL), RM_TLS_POLICY_ENCRYPT);
	rm_map_unref(relay);
	rm_map_unref(tls);
}

static const struct rm_retry_policy defaults = {
	.initial_ms = 300000, .max_ms = 3600000, .lifetime_ms = 432000000, .delay_warning_ms = 0,
};

static void test_backoff(void **state)
{
	(void)state;
	/* 5 min, 10, 20, 40, then the 1 hour cap, for ever. */
	assert_int_equal(rm_retry_backoff_ms(&defaults, 0), 300000);
	assert_int_equal(rm_retry_backoff_ms(&defaults, 1), 600000);
	assert_int_equal(rm_retry_backoff_ms(&defaults, 2), 1200000);
	assert_int_equal(rm_retry_backoff_ms(&defaults, 3), 2400000);
	assert_int_equal(rm_retry_backoff_ms(&defaults, 4), 3600000);
	assert_int_equal(rm_retry_backoff_ms(&defaults, 1000), 3600000);
	assert_int_equal(rm_retry_backoff_ms(&defaults, UINT32_MAX), 3600000);
	/* A cap below the first interval wins. */
	{
		struct rm_retry_policy p = { .initial_ms = 5000, .max_ms = 1000, .lifetime_ms = 1 };

		assert_int_equal(rm_retry_backoff_ms(&p, 0), 1000);
	}
	/* A huge cap: doubling stops long before overflow. */
	{
		struct rm_retry_policy p = { .initial_ms = 1, .max_ms = UINT64_MAX };

		assert_true(rm_retry_backoff_ms(&p, UINT32_MAX) >= (uint64_t)1 << 63);
	}
}

static void test_expiry(void **state)
{
	const uint64_t t0 = 1800000000000ull;
	struct rm_retry_state s = { .received_ms = t0, .now_ms = t0 + 432000000 - 1, .attempts = 40 };
	struct rm_retry_verdict v;

	(void)state;
	rm_retry_decide(&defaults, &s, &v);
	assert_false(v.expired);
	assert_int_equal(v.next_attempt_ms, s.now_ms + 3600000);
	s.now_ms = t0 + 432000000;
	rm_retry_decide(&defaults, &s, &v);
	assert_true(v.expired);
	assert_false(v.delay_warning);
	/* A clock that went back reads as age 0, not as a huge age. */
	s.now_ms = t0 - 5000;
	rm_retry_decide(&defaults, &s, &v);
	assert_false(v.expired);
}

/*
 * Follows a message through its schedule (each attempt at the time the
 * previous one set) and counts the warnings: exactly one, at the first
 * attempt at or past the mark.
 */
static unsigned warnings_over_schedule(const struct rm_retry_policy *p, uint64_t first_delay_ms, uint64_t *warned_age)
{
	const uint64_t t0 = 1800000000000ull;
	struct rm_retry_state s = { .received_ms = t0, .now_ms = t0 + first_delay_ms, .due_ms = 0, .attempts = 0 };
	unsigned warnings = 0;

	for (unsigned i = 0; i < 10000; i++) {
		struct rm_retry_verdict v;

		rm_retry_decide(p, &s, &v);
		if (v.expired)
			break;
		if (v.delay_warning) {
			if (warnings == 0)
				*warned_age = s.now_ms - t0;
			warnings++;
		}
		s.due_ms = v.next_attempt_ms;
		s.now_ms = v.next_attempt_ms + 20;	/* the tick takes it a little later */
		s.attempts++;
	}
	return warnings;
}

static void test_delay_warning_once(void **state)
{
	struct rm_retry_policy p = defaults;
	uint64_t age = 0;

	(void)state;
	/* Off by default. */
	assert_int_equal(warnings_over_schedule(&p, 0, &age), 0);
	/* 4 hours: attempts at 0, 5, 15, 35, 75, 135, 195, 255 min: the one at 255 warns. */
	p.delay_warning_ms = 4 * 3600000ull;
	assert_int_equal(warnings_over_schedule(&p, 0, &age), 1);
	assert_true(age >= p.delay_warning_ms);
	assert_true(age < p.delay_warning_ms + p.max_ms + 1000);
	/* A mark that falls exactly on an attempt warns at that attempt. */
	p.delay_warning_ms = 300000;
	assert_int_equal(warnings_over_schedule(&p, 0, &age), 1);
	assert_true(age >= 300000 && age < 300000 + 1000);
	/* A first attempt already past the mark (queued while stopped): it warns, once. */
	p.delay_warning_ms = 60000;
	assert_int_equal(warnings_over_schedule(&p, 3600000, &age), 1);
	assert_int_equal(age, 3600000);
	/* Past the lifetime nothing warns: a mark beyond it is never reached. */
	p.delay_warning_ms = p.lifetime_ms + 1;
	assert_int_equal(warnings_over_schedule(&p, 0, &age), 0);
}

static void test_delay_warning_after_flush(void **state)
{
	const uint64_t t0 = 1800000000000ull, min = 60000;
	struct rm_retry_policy p = defaults;
	struct rm_retry_state s = { .received_ms = t0, .attempts = 3 };
	struct rm_retry_verdict v;

	(void)state;
	p.delay_warning_ms = 30 * min;
	/* Attempts at 0, 5 and 15 min; the next was due at 35.  A flush at 32
	 * makes it due at 32: the previous attempt reads as 32 - 20 = 12 min,
	 * before the mark, as the real one (15) was: it warns. */
	s.now_ms = s.due_ms = t0 + 32 * min;
	rm_retry_decide(&p, &s, &v);
	assert_true(v.delay_warning);
	assert_int_equal(v.next_attempt_ms, s.now_ms + 40 * min);
	/* Flushed before the mark: no warning yet. */
	s.now_ms = s.due_ms = t0 + 25 * min;
	rm_retry_decide(&p, &s, &v);
	assert_false(v.delay_warning);
	/* Not flushed: due at 35, previous at 15, warns at 35; then at 75 (previous 35) not again. */
	s.now_ms = s.due_ms = t0 + 35 * min;
	rm_retry_decide(&p, &s, &v);
	assert_true(v.delay_warning);
	s.attempts = 4;
	s.now_ms = s.due_ms = t0 + 75 * min;
	rm_retry_decide(&p, &s, &v);
	assert_false(v.delay_warning);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_nexthop_forms),
		cmocka_unit_test(test_nexthop_long_name_is_cut),
		cmocka_unit_test(test_routing_order),
		cmocka_unit_test(test_literals_and_no_domain),
		cmocka_unit_test(test_keys_group_by_destination),
		cmocka_unit_test(test_tls_policy),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_expiry),
		cmocka_unit_test(test_delay_warning_once),
		cmocka_unit_test(test_delay_warning_after_flush),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
