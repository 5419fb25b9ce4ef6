/*
 * NAME
 *	bufring - accounting of a worker's provided receive buffers
 * SUMMARY
 *	#include "core/bufring.h"
 *
 *	void rm_bufring_init(struct rm_bufring *b, struct io_uring_buf_ring *ring,
 *			     uint8_t *base, uint16_t *refs, uint32_t count, uint32_t size);
 *	uint8_t *rm_bufring_addr(const struct rm_bufring *b, uint16_t bid);
 *	void rm_bufring_taken(struct rm_bufring *b, uint16_t bid);
 *	void rm_bufring_ref(struct rm_bufring *b, uint16_t bid);
 *	bool rm_bufring_unref(struct rm_bufring *b, uint16_t bid);
 * DESCRIPTION
 *	The kernel picks a buffer from the ring for each multishot recv completion
 *	(rm_bufring_taken: the buffer then has one reference, the engine's).  A
 *	session may keep pieces of it queued for sending (zero-copy echo, the
 *	proxy's relay) with rm_bufring_ref; each holder drops its reference with
 *	rm_bufring_unref, and the last one puts the buffer back in the ring (true
 *	returned).  free counts buffers in the ring: count - free are out.
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
	uint16_t *refs;		/* 0 = in the ring */
	uint32_t count;
	uint32_t size;		/* bytes per buffer */
	uint32_t free;
};

void rm_bufring_init(struct rm_bufring *b, struct io_uring_buf_ring *ring, uint8_t *base,
		     uint16_t *refs, uint32_t count, uint32_t size);
void rm_bufring_taken(struct rm_bufring *b, uint16_t bid);
void rm_bufring_ref(struct rm_bufring *b, uint16_t bid);
bool rm_bufring_unref(struct rm_bufring *b, uint16_t bid);

static inline uint8_t *rm_bufring_addr(const struct rm_bufring *b, uint16_t bid)
{
	return b->base + (size_t)bid * b->size;
}

#endif
