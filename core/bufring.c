/*
 * NAME
 *	bufring - provided receive buffer accounting (see bufring.h)
 */
#include "core/bufring.h"

#include <string.h>

#include "core/log.h"

static void publish(struct rm_bufring *b, uint16_t bid)
{
	io_uring_buf_ring_add(b->ring, rm_bufring_addr(b, bid), b->size, bid, io_uring_buf_ring_mask(b->count), 0);
	io_uring_buf_ring_advance(b->ring, 1);
	b->published++;
}

/* Fill the ring up to the window from the spare stack's top: the most recently used buffers. */
static void top_up(struct rm_bufring *b)
{
	while (b->published < b->window && b->spare_top > 0)
		publish(b, b->spare[--b->spare_top]);
}

void rm_bufring_init_window(struct rm_bufring *b, struct io_uring_buf_ring *ring, uint8_t *base,
			    uint16_t *refs, uint16_t *spare, uint32_t count, uint32_t size, uint32_t window)
{
	RM_ASSERT(count > 0 && count <= 32768 && (count & (count - 1)) == 0);
	RM_ASSERT(size > 0);
	RM_ASSERT(window > 0 && window <= count && (window == count || spare != NULL));
	b->ring = ring;
	b->base = base;
	b->refs = refs;
	b->spare = spare;
	b->count = count;
	b->size = size;
	b->window = window;
	b->published = 0;
	memset(refs, 0, count * sizeof(*refs));
	io_uring_buf_ring_init(ring);
	/* Low ids on top of the stack, so that the ring starts with buffers 0 .. window - 1. */
	b->spare_top = 0;
	for (uint32_t i = count; i-- > window;)
		spare[b->spare_top++] = (uint16_t)i;
	for (uint32_t i = 0; i < window; i++)
		io_uring_buf_ring_add(ring, rm_bufring_addr(b, (uint16_t)i), size, (unsigned short)i,
				      io_uring_buf_ring_mask(count), (int)i);
	io_uring_buf_ring_advance(ring, (int)window);
	b->published = window;
	b->free = count;
}

void rm_bufring_init(struct rm_bufring *b, struct io_uring_buf_ring *ring, uint8_t *base,
		     uint16_t *refs, uint32_t count, uint32_t size)
{
	rm_bufring_init_window(b, ring, base, refs, NULL, count, size, count);
}

void rm_bufring_taken(struct rm_bufring *b, uint16_t bid)
{
	RM_ASSERT(bid < b->count);
	RM_ASSERT(b->refs[bid] == 0);
	RM_ASSERT(b->free > 0 && b->published > 0);
	b->refs[bid] = 1;
	b->free--;
	b->published--;
	top_up(b);
}

void rm_bufring_ref(struct rm_bufring *b, uint16_t bid)
{
	RM_ASSERT(bid < b->count);
	RM_ASSERT(b->refs[bid] > 0 && b->refs[bid] < UINT16_MAX);
	b->refs[bid]++;
}

bool rm_bufring_unref(struct rm_bufring *b, uint16_t bid)
{
	RM_ASSERT(bid < b->count);
	RM_ASSERT(b->refs[bid] > 0);
	if (--b->refs[bid] > 0)
		return false;
	b->free++;
	RM_ASSERT(b->free <= b->count);
	if (b->published < b->window) {
		publish(b, bid);
	} else {
		RM_ASSERT(b->spare_top < b->count);
		b->spare[b->spare_top++] = bid;
	}
	return true;
}

void rm_bufring_grow(struct rm_bufring *b)
{
	if (b->window == b->count)
		return;
	b->window = b->window * 2 < b->count ? b->window * 2 : b->count;
	top_up(b);
}
