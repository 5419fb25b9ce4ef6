/*
 * NAME
 *	bufring - provided receive buffer accounting (see bufring.h)
 */
#include "core/bufring.h"

#include <string.h>

#include "core/log.h"

void rm_bufring_init(struct rm_bufring *b, struct io_uring_buf_ring *ring, uint8_t *base,
		     uint16_t *refs, uint32_t count, uint32_t size)
{
	RM_ASSERT(count > 0 && count <= 32768 && (count & (count - 1)) == 0);
	RM_ASSERT(size > 0);
	b->ring = ring;
	b->base = base;
	b->refs = refs;
	b->count = count;
	b->size = size;
	memset(refs, 0, count * sizeof(*refs));
	io_uring_buf_ring_init(ring);
	for (uint32_t i = 0; i < count; i++)
		io_uring_buf_ring_add(ring, rm_bufring_addr(b, (uint16_t)i), size, (unsigned short)i,
				      io_uring_buf_ring_mask(count), (int)i);
	io_uring_buf_ring_advance(ring, (int)count);
	b->free = count;
}

void rm_bufring_taken(struct rm_bufring *b, uint16_t bid)
{
	RM_ASSERT(bid < b->count);
	RM_ASSERT(b->refs[bid] == 0);
	RM_ASSERT(b->free > 0);
	b->refs[bid] = 1;
	b->free--;
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
	io_uring_buf_ring_add(b->ring, rm_bufring_addr(b, bid), b->size, bid,
			      io_uring_buf_ring_mask(b->count), 0);
	io_uring_buf_ring_advance(b->ring, 1);
	b->free++;
	RM_ASSERT(b->free <= b->count);
	return true;
}
