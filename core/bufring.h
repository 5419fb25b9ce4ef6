/*
 * NAME
 *	bufring - accounting of a worker's provided receive buffers
 * SUMMARY
 *	#include "core/bufring.h"
 *
 *	void rm_bufring_init(struct rm_bufring *b, struct io_uring_buf_ring *ring,
 *			     uint8_t *base, uint16_t *refs, uint32_t count, uint32_t size);
 *	void rm_bufring_init_window(struct rm_bufring *b, struct io_uring_buf_ring *ring,
 *				    uint8_t *base, uint16_t *refs, uint16_t *spare,
 *				    uint32_t count, uint32_t size, uint32_t window);
 *	uint8_t *rm_bufring_addr(const struct rm_bufring *b, uint16_t bid);
 *	void rm_bufring_taken(struct rm_bufring *b, uint16_t bid);
 *	void rm_bufring_ref(struct rm_bufring *b, uint16_t bid);
 *	bool rm_bufring_unref(struct rm_bufring *b, uint16_t bid);
 *	void rm_bufring_grow(struct rm_bufring *b);
 * DESCRIPTION
 *	The kernel picks a buffer from the ring for each multishot recv completion
 *	(rm_bufring_taken: the buffer then has one reference, the engine's).  A
 *	session may keep pieces of it queued for sending (zero-copy echo, the
 *	proxy's relay) with rm_bufring_ref; each holder drops its reference with
 *	rm_bufring_unref, and the last one gives the buffer back (true
 *	returned).  free counts buffers that are not out: count - free are out.
 *
 *	The window: the ring is first-in first-out, so with every free buffer in
 *	it the kernel walks through all of them in turn and, under any load that
 *	receives count times, every page of the pool becomes resident for good
 *	(count x size: 16 MiB per worker by default) whatever the connections
 *	hold.  rm_bufring_init_window keeps at most window buffers in the ring and
 *	the other free ones on the spare stack, last returned on top; the ring is
 *	topped up from the top of that stack as the kernel takes buffers and as
 *	they come back.  Buffers then rotate among about window + the number out,
 *	and the rest of the pool is never touched.  rm_bufring_grow doubles the
 *	window (up to count): the engine calls it when a recv found the ring empty
 *	(ENOBUFS), so a load that needs more buffers in the ring gets them.
 *	rm_bufring_init is the window of count (every free buffer in the ring).
 *
 *	No system calls: the ring is shared memory registered with the kernel by
 *	the caller (io_uring_register_buf_ring), so the accounting can be tested
 *	on plain memory.  count is a power of two <= 32768.
 * DIAGNOSTICS
 *	Taking a buffer that is out, or dropping a reference that is not held,
 *	panics: either is a bug that would hand one buffer to two owners.
 */
#ifndef RM_BUFRING_H
#define RM_BUFRING_H

#include <stdbool.h>
#include <stdint.h>
#include <liburing.h>

struct rm_bufring {
	struct io_uring_buf_ring *ring;
	uint8_t *base;
	uint16_t *refs;		/* 0 = not out (in the ring or spare) */
	uint16_t *spare;	/* free buffers not in the ring, a stack: the last returned on top */
	uint32_t count;
	uint32_t size;		/* bytes per buffer */
	uint32_t free;		/* in the ring + spare */
	uint32_t published;	/* in the ring, as far as completions have told */
	uint32_t spare_top;
	uint32_t window;	/* at most this many in the ring */
};

void rm_bufring_init(struct rm_bufring *b, struct io_uring_buf_ring *ring, uint8_t *base,
		     uint16_t *refs, uint32_t count, uint32_t size);
void rm_bufring_init_window(struct rm_bufring *b, struct io_uring_buf_ring *ring, uint8_t *base,
			    uint16_t *refs, uint16_t *spare, uint32_t count, uint32_t size, uint32_t window);
void rm_bufring_taken(struct rm_bufring *b, uint16_t bid);
void rm_bufring_ref(struct rm_bufring *b, uint16_t bid);
bool rm_bufring_unref(struct rm_bufring *b, uint16_t bid);
void rm_bufring_grow(struct rm_bufring *b);

static inline uint8_t *rm_bufring_addr(const struct rm_bufring *b, uint16_t bid)
{
	return b->base + (size_t)bid * b->size;
}

#endif
