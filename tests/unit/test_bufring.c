/*
 * Unit tests of provided-buffer accounting (core/bufring.c): buffers go back
 * to the ring exactly when their last reference is dropped, at the right
 * address, and the free count always equals what is in the ring.
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_init_publishes_every_buffer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_taken_then_returned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shared_buffer_returns_on_last_unref, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ring_wraps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_out_then_all_back, setup, teardown),
	};
	return cmocka_run_group_tests_name("bufring", tests, NULL, NULL);
}
