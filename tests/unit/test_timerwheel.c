/*
 * NAME
 *	test_timerwheel - unit tests of core/timerwheel
 * DESCRIPTION
 *	Each test drives a wheel the way a worker loop does: add and delete
 *	timers, advance to a tick, run what came out.  The properties checked
 *	are the ones a loop relies on: a timer never fires before its tick,
 *	never is missed, comes out once, and rm_wheel_next_tick is the true
 *	minimum.  The last test replays random operations against a plain
 *	array model with a fixed seed, so a failure replays identically.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "core/timerwheel.h"

#define S ((uint64_t)RM_WHEEL_SLOTS)

/* One wheel per test, static: it is 37 KiB, too big for a comfortable stack frame. */
static struct rm_wheel wheel;

/* Drains everything due at now_tick, in batches of batch_max; returns the count. */
static size_t advance_all(struct rm_wheel *w, uint64_t now_tick, struct rm_timer **out,
			  size_t out_max, size_t batch_max)
{
	size_t n = 0;

	for (size_t calls = 0; calls <= out_max + 1; calls++) {
		size_t got = rm_wheel_advance(w, now_tick, out + n, batch_max);

		n += got;
		assert_true(n <= out_max);
		if (got < batch_max)
			return n;
		if (n + batch_max > out_max)
			batch_max = out_max - n;
		if (batch_max == 0)
			return n;
	}
	fail_msg("advance never finished");
	return n;
}

static void test_empty(void **state)
{
	struct rm_timer *out[4];

	rm_wheel_init(&wheel, 100);
	assert_int_equal(rm_wheel_next_tick(&wheel), UINT64_MAX);
	assert_int_equal(rm_wheel_advance(&wheel, 100, out, 4), 0);
	assert_int_equal(rm_wheel_advance(&wheel, 1000000, out, 4), 0);
	assert_int_equal(wheel.now_tick, 1000000);
	assert_int_equal(rm_wheel_advance(&wheel, 2000000, NULL, 0), 0);
	assert_int_equal(wheel.armed_count, 0);
}

static void test_add_del_readd(void **state)
{
	struct rm_timer a = { 0 }, b = { 0 };
	struct rm_timer *out[4];

	rm_wheel_init(&wheel, 0);
	assert_false(rm_timer_armed(&a));
	rm_wheel_add(&wheel, &a, 10);
	assert_true(rm_timer_armed(&a));
	assert_int_equal(wheel.armed_count, 1);
	assert_int_equal(rm_wheel_next_tick(&wheel), 10);

	rm_wheel_del(&wheel, &a);
	assert_false(rm_timer_armed(&a));
	assert_int_equal(wheel.armed_count, 0);
	assert_int_equal(rm_wheel_next_tick(&wheel), UINT64_MAX);
	rm_wheel_del(&wheel, &a);	/* not armed: nothing happens */
	assert_int_equal(wheel.armed_count, 0);

	/* Re-adding an armed timer moves it; the old tick must not fire. */
	rm_wheel_add(&wheel, &a, 10);
	rm_wheel_add(&wheel, &b, 10);
	rm_wheel_add(&wheel, &a, 20);
	assert_int_equal(wheel.armed_count, 2);
	assert_int_equal(rm_wheel_next_tick(&wheel), 10);
	assert_int_equal(rm_wheel_advance(&wheel, 19, out, 4), 1);
	assert_ptr_equal(out[0], &b);
	assert_int_equal(rm_wheel_next_tick(&wheel), 20);
	assert_int_equal(rm_wheel_advance(&wheel, 20, out, 4), 1);
	assert_ptr_equal(out[0], &a);
	assert_false(rm_timer_armed(&a));

	/* Moving to an earlier tick, and to the same slot one round later. */
	rm_wheel_add(&wheel, &a, 100);
	rm_wheel_add(&wheel, &a, 50);
	assert_int_equal(rm_wheel_next_tick(&wheel), 50);
	rm_wheel_add(&wheel, &a, 50 + S);
	assert_int_equal(rm_wheel_next_tick(&wheel), 50 + S);
	assert_int_equal(rm_wheel_advance(&wheel, 50 + S - 1, out, 4), 0);
	assert_int_equal(rm_wheel_advance(&wheel, 50 + S, out, 4), 1);
	assert_int_equal(wheel.armed_count, 0);
}

/* Advancing tick by tick: each timer comes out exactly at its tick, in order. */
static void test_expiry_exact(void **state)
{
	static const uint64_t ticks[] = { 1, 2, 2, 5, 63, 64, 65, 4095, 4096, 4097, 8191,
					  8192, 10000, 3 * 4096 + 17 };
	enum { N = sizeof(ticks) / sizeof(ticks[0]) };
	struct rm_timer t[N];
	struct rm_timer *out[N];
	size_t fired = 0;
	uint64_t last_tick = 0;

	memset(t, 0, sizeof(t));
	rm_wheel_init(&wheel, 0);
	for (size_t i = N; i-- > 0;)
		rm_wheel_add(&wheel, &t[i], ticks[i]);
	for (uint64_t now = 1; now <= 4 * S; now++) {
		size_t n = rm_wheel_advance(&wheel, now, out, N);

		for (size_t i = 0; i < n; i++) {
			assert_int_equal(out[i]->expire_tick, now);
			assert_true(out[i]->expire_tick >= last_tick);
			assert_false(rm_timer_armed(out[i]));
			last_tick = out[i]->expire_tick;
		}
		fired += n;
		if (fired < N)
			assert_true(rm_wheel_next_tick(&wheel) > now);
	}
	assert_int_equal(fired, N);
	assert_int_equal(wheel.armed_count, 0);
}

/* Timers many rounds ahead share slots with near ones and must wait their round. */
static void test_far_future(void **state)
{
	enum { ROUNDS = 40 };
	struct rm_timer t[ROUNDS];
	struct rm_timer *out[ROUNDS];
	size_t fired = 0;
	uint64_t now = 7;

	memset(t, 0, sizeof(t));
	rm_wheel_init(&wheel, now);
	for (size_t i = 0; i < ROUNDS; i++)	/* all in the same slot */
		rm_wheel_add(&wheel, &t[i], now + 5 + i * S);
	assert_int_equal(rm_wheel_next_tick(&wheel), now + 5);

	/* Steps of S - 1, S and S + 1 ticks land before, on and past slot ticks. */
	static const uint64_t steps[] = { S - 1, S, S + 1, 1, 3 };
	for (size_t k = 0; k < 10 * ROUNDS && fired < ROUNDS; k++) {
		now += steps[k % 5];
		size_t n = rm_wheel_advance(&wheel, now, out, ROUNDS);

		for (size_t i = 0; i < n; i++)
			assert_true(out[i]->expire_tick <= now);
		fired += n;
		for (size_t i = 0; i < ROUNDS; i++)
			assert_true(rm_timer_armed(&t[i]) == (t[i].expire_tick > now));
		uint64_t next = rm_wheel_next_tick(&wheel);
		if (fired < ROUNDS)
			assert_int_equal(next, 7 + 5 + fired * S);
		else
			assert_int_equal(next, UINT64_MAX);
	}
	assert_int_equal(fired, ROUNDS);
}

/* A jump of a trillion ticks visits each slot once and misses nothing. */
static void test_huge_gap(void **state)
{
	enum { N = 3000 };
	static struct rm_timer t[N];
	static struct rm_timer *out[N];
	const uint64_t gap = 1000000000000ull;
	size_t n;

	memset(t, 0, sizeof(t));
	rm_wheel_init(&wheel, 0);
	for (size_t i = 0; i < N; i++) {
		/* Thirds: inside the gap, just past it, many rounds past it. */
		uint64_t e = i % 3 == 0 ? 1 + i * 977 : i % 3 == 1 ? gap + 1 + i : gap + i * S;
		rm_wheel_add(&wheel, &t[i], e);
	}
	n = rm_wheel_advance(&wheel, gap, out, N);
	assert_int_equal(n, N / 3);
	for (size_t i = 0; i < n; i++)
		assert_true(out[i]->expire_tick <= gap);
	for (size_t i = 0; i < N; i++)
		assert_true(rm_timer_armed(&t[i]) == (i % 3 != 0));
	assert_int_equal(wheel.now_tick, gap);
	assert_int_equal(rm_wheel_next_tick(&wheel), gap + 1 + 1);

	/* The rest, at their exact ticks, with a second huge jump at the end. */
	n = rm_wheel_advance(&wheel, gap + 1, out, N);
	assert_int_equal(n, 0);
	n = rm_wheel_advance(&wheel, gap + 2, out, N);
	assert_int_equal(n, 1);
	assert_ptr_equal(out[0], &t[1]);
	n = advance_all(&wheel, gap + N + 1, out, N, 5);
	assert_int_equal(n, N / 3 - 1);
	n = advance_all(&wheel, gap + (N - 1) * S, out, N, N);
	assert_int_equal(n, N / 3);
	assert_int_equal(wheel.armed_count, 0);
	assert_int_equal(rm_wheel_next_tick(&wheel), UINT64_MAX);
}

/* expired_max reached mid-slot and mid-gap: the next calls resume, in order. */
static void test_partial_drain(void **state)
{
	enum { N = 300 };
	static struct rm_timer t[N];
	struct rm_timer *out[7];
	static bool seen[N];
	size_t total = 0;
	uint64_t last_tick = 0;

	memset(t, 0, sizeof(t));
	memset(seen, 0, sizeof(seen));
	rm_wheel_init(&wheel, 1000);
	for (size_t i = 0; i < N; i++)	/* 100 on tick 1010, the rest spread after it */
		rm_wheel_add(&wheel, &t[i], i < 100 ? 1010 : 1010 + (i - 100) * 3);

	for (int calls = 0; calls < 2 * N; calls++) {
		size_t n = rm_wheel_advance(&wheel, 2000, out, 7);

		for (size_t i = 0; i < n; i++) {
			size_t k = (size_t)(out[i] - t);

			assert_true(k < N);
			assert_false(seen[k]);
			seen[k] = true;
			assert_true(out[i]->expire_tick >= last_tick);	/* gap < S: in order */
			last_tick = out[i]->expire_tick;
		}
		total += n;
		if (n < 7)
			break;
		/* Stopped early: the wheel's tick stays before what is left. */
		assert_true(wheel.now_tick < 2000);
		assert_true(rm_wheel_next_tick(&wheel) <= 2000);
	}
	assert_int_equal(total, N);
	assert_int_equal(wheel.now_tick, 2000);

	/* Same over a gap longer than the wheel, where slots come out of order. */
	memset(seen, 0, sizeof(seen));
	for (size_t i = 0; i < N; i++)
		rm_wheel_add(&wheel, &t[i], 3000 + i * 131);
	total = 0;
	for (int calls = 0; calls < 2 * N; calls++) {
		size_t n = rm_wheel_advance(&wheel, 3000 + N * 131, out, 7);

		for (size_t i = 0; i < n; i++) {
			size_t k = (size_t)(out[i] - t);

			assert_false(seen[k]);
			seen[k] = true;
		}
		total += n;
		if (n < 7)
			break;
	}
	assert_int_equal(total, N);
	assert_int_equal(wheel.armed_count, 0);
}

/* Timers added while a drain is unfinished, due or not, come out when due. */
static void test_add_during_partial(void **state)
{
	struct rm_timer t[20], late = { 0 }, early = { 0 }, future = { 0 };
	struct rm_timer *out[20];
	size_t n;

	memset(t, 0, sizeof(t));
	rm_wheel_init(&wheel, 0);
	for (size_t i = 0; i < 20; i++)
		rm_wheel_add(&wheel, &t[i], 50);
	n = rm_wheel_advance(&wheel, 100, out, 5);
	assert_int_equal(n, 5);
	assert_true(wheel.now_tick < 50);
	rm_wheel_add(&wheel, &late, 80);	/* between the wheel's tick and the caller's */
	rm_wheel_add(&wheel, &early, 1);	/* already due */
	rm_wheel_add(&wheel, &future, 101);
	assert_int_equal(rm_wheel_next_tick(&wheel), 1);
	n = advance_all(&wheel, 100, out, 20, 20);
	assert_int_equal(n, 17);
	assert_ptr_equal(out[0], &early);
	assert_ptr_equal(out[n - 1], &late);
	assert_true(rm_timer_armed(&future));
	assert_int_equal(rm_wheel_next_tick(&wheel), 101);
}

/* Adding at or before the current tick: due on the next advance, even the same tick. */
static void test_overdue_add(void **state)
{
	struct rm_timer a = { 0 }, b = { 0 }, c = { 0 };
	struct rm_timer *out[4];

	rm_wheel_init(&wheel, 500);
	rm_wheel_add(&wheel, &a, 500);
	rm_wheel_add(&wheel, &b, 3);
	rm_wheel_add(&wheel, &c, 501);
	assert_int_equal(rm_wheel_next_tick(&wheel), 3);
	assert_int_equal(rm_wheel_advance(&wheel, 500, out, 4), 2);
	assert_int_equal(rm_wheel_next_tick(&wheel), 501);
	rm_wheel_del(&wheel, &c);
	assert_int_equal(rm_wheel_next_tick(&wheel), UINT64_MAX);

	/* A due timer deleted before the advance never comes out. */
	rm_wheel_add(&wheel, &a, 400);
	rm_wheel_del(&wheel, &a);
	assert_int_equal(rm_wheel_advance(&wheel, 500, out, 4), 0);

	/* An older now_tick expires nothing that is not yet due by it. */
	rm_wheel_add(&wheel, &a, 450);
	assert_int_equal(rm_wheel_advance(&wheel, 449, out, 4), 0);
	assert_int_equal(rm_wheel_advance(&wheel, 450, out, 4), 1);
}

/* What a callback may do: delete other timers, expired or not, and re-add. */
static void test_delete_others(void **state)
{
	enum { N = 10 };
	struct rm_timer t[N];
	struct rm_timer *out[N];
	size_t n, ran = 0;

	memset(t, 0, sizeof(t));
	rm_wheel_init(&wheel, 0);
	for (size_t i = 0; i < N; i++)
		rm_wheel_add(&wheel, &t[i], i < 5 ? 10 : 11);
	n = rm_wheel_advance(&wheel, 10, out, N);
	assert_int_equal(n, 5);
	for (size_t i = 0; i < n; i++) {
		/*
		 * Callback of out[i]: the first deletes every timer, those of this
		 * batch (already unlinked) and those still armed; each re-adds
		 * itself for later.
		 */
		ran++;
		for (size_t k = 0; i == 0 && k < N; k++)
			rm_wheel_del(&wheel, &t[k]);
		rm_wheel_add(&wheel, out[i], 30);
	}
	assert_int_equal(ran, 5);
	assert_int_equal(wheel.armed_count, 5);
	assert_int_equal(rm_wheel_next_tick(&wheel), 30);
	assert_int_equal(rm_wheel_advance(&wheel, 29, out, N), 0);
	assert_int_equal(rm_wheel_advance(&wheel, 30, out, N), 5);
	for (size_t i = 0; i < 5; i++)
		assert_true(out[i] - t < 5);
	assert_int_equal(wheel.armed_count, 0);
}

/* The cached minimum across deletes of the minimum, ties and rounds. */
static void test_next_tick(void **state)
{
	struct rm_timer a = { 0 }, b = { 0 }, c = { 0 }, d = { 0 };
	struct rm_timer *out[4];

	rm_wheel_init(&wheel, 0);
	rm_wheel_add(&wheel, &a, 100);
	rm_wheel_add(&wheel, &b, 100);
	rm_wheel_add(&wheel, &c, 100 + S);	/* same slot, next round */
	rm_wheel_add(&wheel, &d, 99 + 2 * S);	/* slot before, two rounds on */
	assert_int_equal(rm_wheel_next_tick(&wheel), 100);
	rm_wheel_del(&wheel, &a);
	assert_int_equal(rm_wheel_next_tick(&wheel), 100);	/* tie survives */
	rm_wheel_del(&wheel, &b);
	assert_int_equal(rm_wheel_next_tick(&wheel), 100 + S);
	rm_wheel_del(&wheel, &c);
	assert_int_equal(rm_wheel_next_tick(&wheel), 99 + 2 * S);

	/* Add below a stale bound: it becomes the exact minimum at once. */
	rm_wheel_add(&wheel, &a, 5);
	rm_wheel_add(&wheel, &b, 6);
	rm_wheel_del(&wheel, &a);
	rm_wheel_add(&wheel, &c, 4);
	assert_int_equal(rm_wheel_next_tick(&wheel), 4);
	rm_wheel_del(&wheel, &c);
	assert_int_equal(rm_wheel_next_tick(&wheel), 6);

	/* Expiry of the minimum, and the search after a partial drain. */
	assert_int_equal(rm_wheel_advance(&wheel, 6, out, 4), 1);
	assert_int_equal(rm_wheel_next_tick(&wheel), 99 + 2 * S);
	rm_wheel_add(&wheel, &a, 20);
	rm_wheel_add(&wheel, &b, 20);
	rm_wheel_add(&wheel, &c, 21);
	assert_int_equal(rm_wheel_advance(&wheel, 30, out, 1), 1);
	assert_int_equal(rm_wheel_next_tick(&wheel), 20);
	assert_int_equal(rm_wheel_advance(&wheel, 30, out, 1), 1);
	assert_int_equal(rm_wheel_next_tick(&wheel), 21);
	assert_int_equal(rm_wheel_advance(&wheel, 30, out, 1), 1);
	assert_int_equal(rm_wheel_next_tick(&wheel), 99 + 2 * S);
	assert_int_equal(rm_wheel_advance(&wheel, 30, out, 1), 0);
}

/* --- random operations against a reference model ----------------------------- */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* splitmix64: fixed seed, so a failure replays. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

enum { MODEL_TIMERS = 96, MODEL_OPS = 200000 };

struct model {
	struct rm_timer t[MODEL_TIMERS];
	bool armed[MODEL_TIMERS];
	uint64_t expire_tick[MODEL_TIMERS];
};

static uint64_t model_min(const struct model *m)
{
	uint64_t min_tick = UINT64_MAX;

	for (size_t i = 0; i < MODEL_TIMERS; i++)
		if (m->armed[i] && m->expire_tick[i] < min_tick)
			min_tick = m->expire_tick[i];
	return min_tick;
}

static void model_check(const struct model *m)
{
	size_t count = 0;

	for (size_t i = 0; i < MODEL_TIMERS; i++) {
		assert_true(rm_timer_armed(&m->t[i]) == m->armed[i]);
		count += m->armed[i];
	}
	assert_int_equal(wheel.armed_count, count);
	assert_int_equal(rm_wheel_next_tick(&wheel), model_min(m));
}

static uint64_t random_expire(uint64_t now)
{
	switch (rng() % 6) {
	case 0:
		return now - rng() % (now < 50 ? now + 1 : 50);	/* already due */
	case 1:
	case 2:
		return now + 1 + rng() % 64;
	case 3:
		return now + rng() % S;
	case 4:
		return now + rng() % (8 * S);
	default:
		return now + S * (1 + rng() % 4) + rng() % 3;	/* slot-aligned rounds */
	}
}

static void model_op(struct model *m, uint64_t now)
{
	size_t i = (size_t)(rng() % MODEL_TIMERS);

	if (rng() % 3 == 0) {
		rm_wheel_del(&wheel, &m->t[i]);
		m->armed[i] = false;
	} else {
		uint64_t e = random_expire(now);

		rm_wheel_add(&wheel, &m->t[i], e);
		m->armed[i] = true;
		m->expire_tick[i] = e;
	}
}

static void test_random_model(void **state)
{
	static struct model m;
	struct rm_timer *out[MODEL_TIMERS];
	uint64_t now = 1u << 20;

	memset(&m, 0, sizeof(m));
	rng_state = 20261122;
	rm_wheel_init(&wheel, now);
	for (int op = 0; op < MODEL_OPS; op++) {
		uint64_t r = rng() % 100;

		if (r < 55) {
			model_op(&m, now);
		} else {
			/* Mostly small steps; sometimes none, a round, or a huge jump. */
			uint64_t step = r < 85 ? rng() % 8 : r < 95 ? rng() % (2 * S) :
				r < 98 ? 0 : rng() % (1u << 30);
			size_t batch_max = 1 + (size_t)(rng() % 8);

			now += step;
			for (int calls = 0; calls <= 2 * MODEL_TIMERS; calls++) {
				size_t n = rm_wheel_advance(&wheel, now, out, batch_max);

				for (size_t k = 0; k < n; k++) {
					size_t i = (size_t)(out[k] - m.t);

					assert_true(i < MODEL_TIMERS);
					assert_true(m.armed[i]);
					assert_true(m.expire_tick[i] <= now);	/* never early */
					assert_false(rm_timer_armed(out[k]));
					m.armed[i] = false;
				}
				if (n < batch_max)
					break;
				/* Callbacks between batches change timers, due ones too. */
				if (rng() % 4 == 0)
					model_op(&m, now);
				model_check(&m);
				assert_true(calls < 2 * MODEL_TIMERS);
			}
			/* Never missed: nothing still armed is due. */
			for (size_t i = 0; i < MODEL_TIMERS; i++)
				assert_false(m.armed[i] && m.expire_tick[i] <= now);
			assert_true(rm_wheel_next_tick(&wheel) > now);
		}
		model_check(&m);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_add_del_readd),
		cmocka_unit_test(test_expiry_exact),
		cmocka_unit_test(test_far_future),
		cmocka_unit_test(test_huge_gap),
		cmocka_unit_test(test_partial_drain),
		cmocka_unit_test(test_add_during_partial),
		cmocka_unit_test(test_overdue_add),
		cmocka_unit_test(test_delete_others),
		cmocka_unit_test(test_next_tick),
		cmocka_unit_test(test_random_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
