/*
 * Unit tests of provided-buffer accounting (core/bufring.c): buffers go back
 * to the ring exactly when their last reference is dropped, at the right
 * address, and the free count always equals what is not out.  With a window,
 * the ring holds at most that many and the buffers used are the most
 * recently returned ones, so the rest of the pool is never touched.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/bufring.h"

#define COUNT 16
#define SIZE 256

struct fixture {
	struct io_uring_buf_ring *ring;
	uint8_t *base;
	uint16_t refs[COUNT];
	struct rm_bufring b;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	f->ring = aligned_alloc(4096, 4096);
	memset(f->ring, 0, 4096);
	f->base = malloc(COUNT * SIZE);
	rm_bufring_init(&f->b, f->ring, f->base, f->refs, COUNT, SIZE);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	free(f->ring);
	free(f->base);
	free(f);
	return 0;
}

/* The entry the ring's tail last published. */
static const struct io_uring_buf *last_added(const struct fixture *f)
{
	uint16_t tail = f->ring->tail;

	return &f->ring->bufs[(uint16_t)(tail - 1) & (COUNT - 1)];
}

static void test_init_publishes_every_buffer(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(f->b.free, COUNT);
	assert_int_equal(f->ring->tail, COUNT);
	for (unsigned i = 0; i < COUNT; i++) {
		assert_int_equal(f->ring->bufs[i].bid, i);
		assert_int_equal(f->ring->bufs[i].len, SIZE);
		assert_ptr_equal((void *)(uintptr_t)f->ring->bufs[i].addr, f->base + i * SIZE);
		assert_int_equal(f->refs[i], 0);
	}
}

static void test_taken_then_returned(void **state)
{
	struct fixture *f = *state;

	rm_bufring_taken(&f->b, 5);
	assert_int_equal(f->b.free, COUNT - 1);
	assert_true(rm_bufring_unref(&f->b, 5));
	assert_int_equal(f->b.free, COUNT);
	assert_int_equal(f->ring->tail, COUNT + 1);
	assert_int_equal(last_added(f)->bid, 5);
	assert_ptr_equal((void *)(uintptr_t)last_added(f)->addr, f->base + 5 * SIZE);
	assert_int_equal(last_added(f)->len, SIZE);
}

static void test_shared_buffer_returns_on_last_unref(void **state)
{
	struct fixture *f = *state;

	rm_bufring_taken(&f->b, 3);
	rm_bufring_ref(&f->b, 3);	/* a queued zero-copy send */
	rm_bufring_ref(&f->b, 3);	/* another */
	assert_false(rm_bufring_unref(&f->b, 3));	/* engine done with it */
	assert_false(rm_bufring_unref(&f->b, 3));	/* first send done */
	assert_int_equal(f->b.free, COUNT - 1);
	assert_int_equal(f->ring->tail, COUNT);
	assert_true(rm_bufring_unref(&f->b, 3));	/* last send done */
	assert_int_equal(f->b.free, COUNT);
	assert_int_equal(last_added(f)->bid, 3);
}

static void test_ring_wraps(void **state)
{
	struct fixture *f = *state;

	/* Far more cycles than entries: the 16-bit tail and the mask wrap. */
	for (unsigned round = 0; round < 70000; round++) {
		uint16_t bid = (uint16_t)(round * 7 % COUNT);

		rm_bufring_taken(&f->b, bid);
		assert_true(rm_bufring_unref(&f->b, bid));
		assert_int_equal(last_added(f)->bid, bid);
	}
	assert_int_equal(f->b.free, COUNT);
}

static void test_all_out_then_all_back(void **state)
{
	struct fixture *f = *state;

	for (uint16_t i = 0; i < COUNT; i++)
		rm_bufring_taken(&f->b, i);
	assert_int_equal(f->b.free, 0);
	for (uint16_t i = COUNT; i-- > 0;)
		assert_true(rm_bufring_unref(&f->b, i));
	assert_int_equal(f->b.free, COUNT);
	for (uint16_t i = 0; i < COUNT; i++)
		assert_int_equal(f->refs[i], 0);
}

#define WINDOW 4

struct window_fixture {
	struct io_uring_buf_ring *ring;
	uint8_t *base;
	uint16_t refs[COUNT], spare[COUNT];
	struct rm_bufring b;
};

static int setup_window(void **state)
{
	struct window_fixture *f = calloc(1, sizeof(*f));

	f->ring = aligned_alloc(4096, 4096);
	memset(f->ring, 0, 4096);
	f->base = malloc(COUNT * SIZE);
	rm_bufring_init_window(&f->b, f->ring, f->base, f->refs, f->spare, COUNT, SIZE, WINDOW);
	*state = f;
	return 0;
}

static int teardown_window(void **state)
{
	struct window_fixture *f = *state;

	free(f->ring);
	free(f->base);
	free(f);
	return 0;
}

/* The entry at position pos of the ring (as the kernel would take it). */
static const struct io_uring_buf *entry_at(const struct window_fixture *f, uint16_t pos)
{
	return &f->ring->bufs[pos & (COUNT - 1)];
}

static void test_window_publishes_the_first_buffers_only(void **state)
{
	struct window_fixture *f = *state;

	assert_int_equal(f->b.free, COUNT);
	assert_int_equal(f->b.published, WINDOW);
	assert_int_equal(f->ring->tail, WINDOW);
	for (uint16_t i = 0; i < WINDOW; i++) {
		assert_int_equal(entry_at(f, i)->bid, i);
		assert_ptr_equal((void *)(uintptr_t)entry_at(f, i)->addr, f->base + i * SIZE);
	}
}

/* The kernel takes in ring order; each taken buffer is replaced at once from the spare stack. */
static void test_window_kept_full_while_buffers_are_out(void **state)
{
	struct window_fixture *f = *state;
	uint16_t head = 0;

	for (uint16_t i = 0; i < WINDOW + 2; i++) {
		uint16_t bid = entry_at(f, head++)->bid;

		assert_int_equal(bid, i);
		rm_bufring_taken(&f->b, bid);
		assert_int_equal(f->b.published, WINDOW);
		assert_int_equal((uint16_t)(f->ring->tail - head), WINDOW);
	}
	assert_int_equal(f->b.free, COUNT - WINDOW - 2);
	for (uint16_t i = 0; i < WINDOW + 2; i++)
		assert_true(rm_bufring_unref(&f->b, i));
	assert_int_equal(f->b.free, COUNT);
	assert_int_equal(f->b.published, WINDOW);	/* the returned ones wait on the stack */
}

/* Taken and returned one at a time, over and over: only window + 1 buffers are ever used. */
static void test_window_reuses_recent_buffers(void **state)
{
	struct window_fixture *f = *state;
	uint16_t head = 0;
	bool used[COUNT] = { false };

	for (unsigned round = 0; round < 70000; round++) {
		uint16_t bid = entry_at(f, head++)->bid;

		used[bid] = true;
		rm_bufring_taken(&f->b, bid);
		assert_true(rm_bufring_unref(&f->b, bid));
	}
	for (uint16_t i = 0; i < COUNT; i++)
		assert_int_equal(used[i], i <= WINDOW);
	assert_int_equal(f->b.free, COUNT);
}

static void test_window_grows_to_count(void **state)
{
	struct window_fixture *f = *state;

	rm_bufring_grow(&f->b);
	assert_int_equal(f->b.window, 2 * WINDOW);
	assert_int_equal(f->b.published, 2 * WINDOW);
	assert_int_equal(f->ring->tail, 2 * WINDOW);
	for (uint16_t i = WINDOW; i < 2 * WINDOW; i++)
		assert_int_equal(entry_at(f, i)->bid, i);	/* next from the stack: the lowest ids */
	for (int i = 0; i < 8; i++)
		rm_bufring_grow(&f->b);
	assert_int_equal(f->b.window, COUNT);
	assert_int_equal(f->b.published, COUNT);
	assert_int_equal(f->b.spare_top, 0);
}

/* Every buffer out, then back: the first WINDOW go to the ring, the rest to the stack. */
static void test_window_all_out_then_all_back(void **state)
{
	struct window_fixture *f = *state;
	uint16_t head = 0;

	for (uint16_t i = 0; i < COUNT; i++) {
		uint16_t bid = entry_at(f, head++)->bid;

		rm_bufring_taken(&f->b, bid);
	}
	assert_int_equal(f->b.free, 0);
	assert_int_equal(f->b.published, 0);
	for (uint16_t i = 0; i < COUNT; i++)
		assert_true(rm_bufring_unref(&f->b, i));
	assert_int_equal(f->b.free, COUNT);
	assert_int_equal(f->b.published, WINDOW);
	assert_int_equal(f->b.spare_top, COUNT - WINDOW);
	assert_int_equal(f->spare[f->b.spare_top - 1], COUNT - 1);	/* the last returned is next */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_init_publishes_every_buffer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_taken_then_returned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_buffer_returns_on_last_unref, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_wraps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_out_then_all_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_window_publishes_the_first_buffers_only, setup_window,
						teardown_window),
		cmocka_unit_test_setup_teardown(test_window_kept_full_while_buffers_are_out, setup_window,
						teardown_window),
		cmocka_unit_test_setup_teardown(test_window_reuses_recent_buffers, setup_window, teardown_window),
		cmocka_unit_test_setup_teardown(test_window_grows_to_count, setup_window, teardown_window),
		cmocka_unit_test_setup_teardown(test_window_all_out_then_all_back, setup_window, teardown_window),
	};
	return cmocka_run_group_tests_name("bufring", tests, NULL, NULL);
}
