/*
 * NAME
 *	engine - the per-worker io_uring loop and the connection API
 * DESCRIPTION
 *	See engine.h for the contract.  This file holds one worker's life:
 *	ring and buffer-ring set-up, the loop (wait, reap into an array, dispatch,
 *	run the deferred list, advance the timer wheel), connection slots, the
 *	output queue and the input held for back-pressure.
 *
 *	user_data of every SQE: op (8 bits) | slot index (24 bits) | generation
 *	(32 bits).  A slot is reused only when no operation of it is in the kernel
 *	(inflight == 0), so a completion always finds the connection it was for;
 *	the generation check turns a violation of that rule into a panic.
 * DIAGNOSTICS
 *	Resource failures at start are fatal with the reason; broken invariants panic.
 */
#include "core/engine_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "core/log.h"

#define RM_TICK_MS 10
#define RM_CQE_BATCH 512		/* completions reaped before dispatch */
#define RM_TIMER_BATCH 256		/* timers run per advance */
#define RM_STARVED_REARM_MAX 64		/* ENOBUFS re-arms per loop iteration */
#define RM_SEND_IOV_MAX 16
#define RM_WAIT_MS_MAX 1000

enum rm_op {
	RM_OP_ACCEPT = 1,
	RM_OP_RECV,
	RM_OP_SEND,
	RM_OP_CONNECT,
	RM_OP_CANCEL,
	RM_OP_WAKE,
	RM_OP_IGNORE,		/* cancels of listeners etc.: nothing to do */
	RM_OP_FILE,		/* index = file operation slot */
};

struct rm_file_op {
	struct rm_file_op *next_free;
	rm_file_done_fn done;
	void *arg;
	bool poll;			/* rm_worker_poll: not waited for by a stopping worker */
	struct iovec iov[RM_FILE_IOV_MAX];
};

enum {
	RM_CF_RECV_ARMED = 1u << 0,
	RM_CF_SEND_INFLIGHT = 1u << 1,
	RM_CF_PAUSED = 1u << 2,		/* recv cancelled or not re-armed: input held */
	RM_CF_STARVED = 1u << 3,
	RM_CF_WANT_WRITABLE = 1u << 4,
	RM_CF_EOF = 1u << 5,		/* peer closed; on_eof pending or done */
	RM_CF_EOF_DONE = 1u << 6,
	RM_CF_DEFERRED = 1u << 7,
	RM_CF_FLUSH = 1u << 8,
	RM_CF_RESUME = 1u << 9,
	RM_CF_CANCEL_SENT = 1u << 10,	/* recv cancel in flight */
	RM_CF_SHUTDOWN_SENT = 1u << 11,
	RM_CF_CONNECT_REPORTED = 1u << 12,
	RM_CF_FINISHING = 1u << 13,	/* on_close running: nothing may be queued */
	RM_CF_SHUT_WR = 1u << 14,	/* send FIN once output is drained */
	RM_CF_SHUT_WR_DONE = 1u << 15,
	RM_CF_POOL_WAIT = 1u << 16,	/* on the worker's pool-wait list */
	RM_CF_TRANSPORT_HELD = 1u << 17,	/* the transport keeps input the session has not taken */
	RM_CF_OPEN_DEFERRED = 1u << 18,	/* on_open waits for the transport (implicit TLS) */
};

enum rm_chunk_kind { RM_CHUNK_RX = 1, RM_CHUNK_BLOCK, RM_CHUNK_STATIC };

struct rm_chunk {
	struct rm_chunk *next;
	const uint8_t *data;
	uint32_t len;
	uint32_t block;		/* write block index (BLOCK) */
	uint16_t bid;		/* provided buffer (RX) */
	uint8_t kind;
};

struct rm_send_ctx {
	struct rm_send_ctx *next_free;
	struct msghdr msg;
	struct iovec iov[RM_SEND_IOV_MAX];
};

struct rm_daemon *rm_the_daemon;

static uint64_t pack_ud(enum rm_op op, uint32_t index, uint32_t gen)
{
	return (uint64_t)op | ((uint64_t)(index & 0xffffffu) << 8) | ((uint64_t)gen << 32);
}

uint64_t rm_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- SQEs ------------------------------------------------------------------ */

static struct io_uring_sqe *get_sqe(struct rm_worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	/* The SQ is full: hand what is queued to the kernel and take a fresh one. */
	for (int tries = 0; sqe == NULL && tries < 8; tries++) {
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
	}
	if (sqe == NULL)
		rm_panic("worker %u: submission queue stays full", w->index);
	return sqe;
}

/* ---- provided buffers ------------------------------------------------------- */

static uint8_t *buf_addr(struct rm_worker *w, uint16_t bid)
{
	return rm_bufring_addr(&w->bufs, bid);
}

static void buf_ref(struct rm_worker *w, uint16_t bid)
{
	rm_bufring_ref(&w->bufs, bid);
}

static void buf_unref(struct rm_worker *w, uint16_t bid)
{
	if (rm_bufring_unref(&w->bufs, bid))
		atomic_store_explicit(&w->stats.buffers_free, w->bufs.free, memory_order_relaxed);
}

static void buf_taken(struct rm_worker *w, uint16_t bid)
{
	rm_bufring_taken(&w->bufs, bid);
	atomic_store_explicit(&w->stats.buffers_free, w->bufs.free, memory_order_relaxed);
}

/* True while fewer than a quarter of the worker's receive buffers are in the ring. */
static bool ring_low(const struct rm_worker *w)
{
	return w->bufs.free < w->bufs.count / 4;
}

/* Input waits that the session has not taken: held raw bytes, or the transport's. */
static bool input_waiting(const struct rm_conn *c)
{
	return c->held_head != NULL || (c->flags & RM_CF_TRANSPORT_HELD);
}

/* Bytes for the session go through its transport, if it has one. */
static size_t offer(struct rm_conn *c, const struct rm_rx *rx)
{
	if (c->transport != NULL)
		return c->transport->on_rx(c, rx);
	return c->ops->on_data(c, rx);
}

/* ---- chunks and write blocks -------------------------------------------------- */

static uint32_t blocks_available(const struct rm_worker *w)
{
	return w->block_free_top + (w->block_count - w->blocks_fresh);
}

static uint32_t block_take(struct rm_worker *w)
{
	if (w->block_free_top > 0)
		return w->block_free[--w->block_free_top];
	RM_ASSERT(w->blocks_fresh < w->block_count);
	return w->blocks_fresh++;
}

static struct rm_chunk *chunk_get(struct rm_worker *w)
{
	struct rm_chunk *ch = w->chunk_free;

	/* Never-used entries are taken last-resort, so untouched pool memory stays
	 * untouched (and out of RSS) until load needs it. */
	if (ch != NULL)
		w->chunk_free = ch->next;
	else if (w->chunks_fresh < w->chunk_count)
		ch = &w->chunks[w->chunks_fresh++];
	else
		return NULL;
	w->chunks_free--;
	memset(ch, 0, sizeof(*ch));
	return ch;
}

static void chunk_release(struct rm_worker *w, struct rm_chunk *ch)
{
	switch (ch->kind) {
	case RM_CHUNK_RX:
		buf_unref(w, ch->bid);
		break;
	case RM_CHUNK_BLOCK:
		RM_ASSERT(w->block_free_top < w->block_count);
		w->block_free[w->block_free_top++] = ch->block;
		atomic_store_explicit(&w->stats.write_blocks_free, blocks_available(w),
				      memory_order_relaxed);
		break;
	default:
		break;
	}
	ch->next = w->chunk_free;
	w->chunk_free = ch;
	w->chunks_free++;
	w->pool_gen++;
}

static void chunk_list_release(struct rm_worker *w, struct rm_chunk **head, struct rm_chunk **tail)
{
	struct rm_chunk *ch = *head;

	while (ch != NULL) {
		struct rm_chunk *next = ch->next;

		chunk_release(w, ch);
		ch = next;
	}
	*head = *tail = NULL;
}

/* ---- connection lists ----------------------------------------------------------- */

#define FIFO_NEXT(f, c) (*(struct rm_conn **)((char *)(c) + (f)->link))

static void fifo_push(struct rm_conn_fifo *f, struct rm_conn *c)
{
	FIFO_NEXT(f, c) = NULL;
	if (f->tail != NULL)
		FIFO_NEXT(f, f->tail) = c;
	else
		f->head = c;
	f->tail = c;
}

static struct rm_conn *fifo_pop(struct rm_conn_fifo *f)
{
	struct rm_conn *c = f->head;

	if (c == NULL)
		return NULL;
	f->head = FIFO_NEXT(f, c);
	if (f->head == NULL)
		f->tail = NULL;
	FIFO_NEXT(f, c) = NULL;
	return c;
}

/* Rare (a connection dying while listed): linear, bounded by the slots. */
static void fifo_unlink(struct rm_conn_fifo *f, struct rm_conn *c, uint32_t bound)
{
	struct rm_conn *prev = NULL, *x = f->head;

	for (uint32_t n = 0; x != NULL && n < bound; n++, prev = x, x = FIFO_NEXT(f, x)) {
		if (x != c)
			continue;
		if (prev != NULL)
			FIFO_NEXT(f, prev) = FIFO_NEXT(f, c);
		else
			f->head = FIFO_NEXT(f, c);
		if (f->tail == c)
			f->tail = prev;
		FIFO_NEXT(f, c) = NULL;
		return;
	}
}

/* ---- deferred work ----------------------------------------------------------- */

static void defer(struct rm_conn *c, uint32_t what)
{
	struct rm_worker *w = c->worker;

	if (c->flags & RM_CF_FINISHING)
		return;
	c->flags |= what;
	if (c->flags & RM_CF_DEFERRED)
		return;
	c->flags |= RM_CF_DEFERRED;
	fifo_push(&w->deferred, c);
}

/* ---- connection slots ----------------------------------------------------------- */

static struct rm_conn *slot_get(struct rm_worker *w)
{
	struct rm_conn *c;
	uint32_t gen;

	if (w->free_top > 0) {
		c = &w->conns[w->free_stack[--w->free_top]];
	} else if (w->conns_fresh < w->conn_count) {
		c = &w->conns[w->conns_fresh];
		c->index = w->conns_fresh++;
	} else {
		return NULL;
	}
	RM_ASSERT(c->state == RM_CONN_FREE);
	RM_ASSERT(!rm_timer_armed(&c->timer) && !(c->flags & RM_CF_DEFERRED));
	gen = c->generation + 1;
	uint32_t index = c->index;
	memset(c, 0, sizeof(*c));
	c->index = index;
	c->generation = gen;
	c->worker = w;
	c->fd = -1;
	c->id = ((uint64_t)(w->index + 1) << 48) | ++w->conn_seq;
	c->opened_ms = w->now_ms;
	w->open_count++;
	atomic_store_explicit(&w->stats.open, w->open_count, memory_order_relaxed);
	return c;
}

static void slot_put(struct rm_worker *w, struct rm_conn *c)
{
	RM_ASSERT(c->inflight == 0);
	RM_ASSERT(c->out_head == NULL && c->held_head == NULL);
	c->state = RM_CONN_FREE;
	c->session = NULL;
	w->free_stack[w->free_top++] = c->index;
	RM_ASSERT(w->open_count > 0);
	w->open_count--;
	atomic_store_explicit(&w->stats.open, w->open_count, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->stats.closed, 1, memory_order_relaxed);
}

const struct rm_listener_config *rm_conn_listener(const struct rm_conn *c)
{
	if (c->listener_index < 0)
		return NULL;
	return &c->worker->cfg->listeners[c->listener_index];
}

uint32_t rm_conn_idle_timeout_ms(const struct rm_conn *c)
{
	const struct rm_config *cfg = c->worker->cfg;

	RM_ASSERT(cfg != NULL);
	if (c->listener_index >= 0 && cfg->listeners[c->listener_index].idle_timeout_ms != 0)
		return cfg->listeners[c->listener_index].idle_timeout_ms;
	return cfg->limits.idle_timeout_ms;
}

const char *rm_conn_peer_str(const struct rm_conn *c, char *buf, size_t size)
{
	char host[INET6_ADDRSTRLEN];

	switch (c->peer.sa.sa_family) {
	case AF_INET:
		inet_ntop(AF_INET, &c->peer.in4.sin_addr, host, sizeof(host));
		snprintf(buf, size, "%s:%u", host, ntohs(c->peer.in4.sin_port));
		break;
	case AF_INET6:
		inet_ntop(AF_INET6, &c->peer.in6.sin6_addr, host, sizeof(host));
		snprintf(buf, size, "[%s]:%u", host, ntohs(c->peer.in6.sin6_port));
		break;
	default:
		snprintf(buf, size, "local");
		break;
	}
	return buf;
}

/* ---- arming ---------------------------------------------------------------------- */

static void arm_recv(struct rm_conn *c)
{
	struct rm_worker *w = c->worker;
	struct io_uring_sqe *sqe;

	RM_ASSERT(!(c->flags & RM_CF_RECV_ARMED));
	sqe = get_sqe(w);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = RM_BUF_GROUP;
	io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_RECV, c->index, c->generation));
	c->flags |= RM_CF_RECV_ARMED;
	c->inflight++;
}

static void cancel_recv(struct rm_conn *c)
{
	struct io_uring_sqe *sqe;

	if (!(c->flags & RM_CF_RECV_ARMED) || (c->flags & RM_CF_CANCEL_SENT))
		return;
	sqe = get_sqe(c->worker);
	io_uring_prep_cancel64(sqe, pack_ud(RM_OP_RECV, c->index, c->generation), 0);
	io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_CANCEL, c->index, c->generation));
	c->flags |= RM_CF_CANCEL_SENT;
	c->inflight++;
}

static void arm_accept(struct rm_worker *w, unsigned li)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	io_uring_prep_multishot_accept(sqe, w->listen_fd[li], NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_ACCEPT, li, 0));
	w->accept_armed[li] = true;
}

static void arm_wake(struct rm_worker *w)
{
	struct io_uring_sqe *sqe = get_sqe(w);

	io_uring_prep_poll_multishot(sqe, w->wake_fd, POLLIN);
	io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_WAKE, 0, 0));
}

/* ---- closing -------------------------------------------------------------------- */

static void conn_kill(struct rm_conn *c, int err)
{
	struct rm_worker *w = c->worker;
	struct io_uring_sqe *sqe;

	if (c->state == RM_CONN_DEAD || c->state == RM_CONN_FREE)
		return;
	c->state = RM_CONN_DEAD;
	c->close_err = err;
	if (rm_timer_armed(&c->timer))
		rm_wheel_del(&w->wheel, &c->timer);
	chunk_list_release(w, &c->held_head, &c->held_tail);
	/*
	 * shutdown() wakes a pending recv or send at once; the fd-wide cancel covers
	 * a connect in progress and anything else still queued.  Output chunks stay
	 * until the in-flight send completes: the kernel may still read them.
	 */
	if (c->fd >= 0) {
		shutdown(c->fd, SHUT_RDWR);
		sqe = get_sqe(w);
		io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_CANCEL, c->index, c->generation));
		c->inflight++;
	}
	defer(c, 0);
}

/* Called from the deferred list once a dead connection has nothing in flight. */
static void conn_finish(struct rm_conn *c)
{
	struct rm_worker *w = c->worker;

	RM_ASSERT(c->state == RM_CONN_DEAD && c->inflight == 0);
	chunk_list_release(w, &c->out_head, &c->out_tail);
	c->out_bytes = 0;
	if (c->flags & RM_CF_STARVED) {
		fifo_unlink(&w->starved, c, w->conn_count);
		c->flags &= ~RM_CF_STARVED;
	}
	if (c->flags & RM_CF_POOL_WAIT) {
		fifo_unlink(&w->pool_wait, c, w->conn_count);
		c->flags &= ~RM_CF_POOL_WAIT;
	}
	c->flags |= RM_CF_FINISHING;
	if (c->ops->on_close != NULL && !(c->flags & RM_CF_OPEN_DEFERRED))
		c->ops->on_close(c, c->close_err);
	if (c->transport != NULL && c->transport->on_close != NULL)
		c->transport->on_close(c);
	c->transport = NULL;
	c->transport_state = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->listener_index != -1 || rm_log_enabled(RM_LOG_DEBUG)) {
		char peer[64];

		rm_log(c->listener_index == -1 ? RM_LOG_DEBUG : RM_LOG_INFO, c->id,
		       "disconnect from %s: in=%llu out=%llu bytes, %llu ms%s%s",
		       rm_conn_peer_str(c, peer, sizeof(peer)), (unsigned long long)c->bytes_in,
		       (unsigned long long)c->bytes_out, (unsigned long long)(w->now_ms - c->opened_ms),
		       c->close_err ? ", " : "", c->close_err ? strerror(-c->close_err) : "");
	}
	slot_put(w, c);
}

void rm_conn_abort(struct rm_conn *c, int err)
{
	conn_kill(c, err);
}

void rm_conn_close(struct rm_conn *c)
{
	if (c->state != RM_CONN_OPEN && c->state != RM_CONN_CONNECTING)
		return;
	if (c->state == RM_CONN_CONNECTING) {
		conn_kill(c, 0);
		return;
	}
	if (c->transport != NULL && c->transport->on_closing != NULL)
		c->transport->on_closing(c);
	c->state = RM_CONN_CLOSING;
	/* A peer that never reads must not keep a closing connection forever. */
	if (!rm_timer_armed(&c->timer))
		rm_conn_timer(c, c->worker->cfg->limits.idle_timeout_ms);
	cancel_recv(c);
	if (c->out_bytes == 0)
		conn_kill(c, 0);
}

/* ---- output ------------------------------------------------------------------------ */

size_t rm_conn_output_room(const struct rm_conn *c)
{
	if (c->transport != NULL)
		return c->transport->output_room(c, rm_conn_output_room_raw(c));
	return rm_conn_output_room_raw(c);
}

size_t rm_conn_output_room_raw(const struct rm_conn *c)
{
	const struct rm_worker *w = c->worker;
	size_t limit = w->cfg->limits.output_bytes_max;
	size_t room = c->out_bytes >= limit ? 0 : limit - c->out_bytes;
	size_t pool = (size_t)blocks_available(w) * RM_WRITE_BLOCK_BYTES;

	if (c->out_tail != NULL && c->out_tail->kind == RM_CHUNK_BLOCK)
		pool += RM_WRITE_BLOCK_BYTES - c->out_tail->len;
	if (w->chunks_free < 4)
		return 0;
	return room < pool ? room : pool;
}

static void out_append(struct rm_conn *c, struct rm_chunk *ch)
{
	ch->next = NULL;
	if (c->out_tail != NULL)
		c->out_tail->next = ch;
	else
		c->out_head = ch;
	c->out_tail = ch;
	c->out_bytes += ch->len;
	defer(c, RM_CF_FLUSH);
}

static bool can_queue(struct rm_conn *c, size_t len)
{
	if (c->state != RM_CONN_OPEN && c->state != RM_CONN_CONNECTING)
		return false;
	if (c->out_bytes + len > c->worker->cfg->limits.output_bytes_max) {
		c->flags |= RM_CF_WANT_WRITABLE;
		return false;
	}
	return true;
}

/* Output through the transport; a refusal reports writable later, as for plain output. */
static int transport_write(struct rm_conn *c, const void *data, size_t len)
{
	int rc = c->transport->write(c, data, len);

	if (rc == -ENOBUFS) {
		c->flags |= RM_CF_WANT_WRITABLE;
		if (c->out_bytes == 0)
			defer(c, 0);
	}
	return rc;
}

void rm_conn_want_writable(struct rm_conn *c)
{
	c->flags |= RM_CF_WANT_WRITABLE;
	if (c->out_bytes == 0)
		defer(c, 0);	/* nothing in flight will complete to report it */
}

int rm_conn_write(struct rm_conn *c, const void *data, size_t len)
{
	if (c->transport != NULL)
		return transport_write(c, data, len);
	return rm_conn_write_raw(c, data, len);
}

int rm_conn_write_raw(struct rm_conn *c, const void *data, size_t len)
{
	struct rm_worker *w = c->worker;
	const uint8_t *p = data;

	if (len == 0)
		return 0;
	if (!can_queue(c, len) || rm_conn_output_room_raw(c) < len) {
		c->flags |= RM_CF_WANT_WRITABLE;
		/* Refused for the worker's pools while nothing of ours is queued: no
		 * send completion will come to report writable, so check next round. */
		if (c->out_bytes == 0)
			defer(c, 0);
		return -ENOBUFS;
	}
	while (len > 0) {
		struct rm_chunk *tail = c->out_tail;
		size_t n;

		if (tail == NULL || tail->kind != RM_CHUNK_BLOCK || tail->len == RM_WRITE_BLOCK_BYTES) {
			struct rm_chunk *ch = chunk_get(w);

			RM_ASSERT(ch != NULL && blocks_available(w) > 0);	/* room was checked */
			ch->kind = RM_CHUNK_BLOCK;
			ch->block = block_take(w);
			ch->data = w->blocks + (size_t)ch->block * RM_WRITE_BLOCK_BYTES;
			atomic_store_explicit(&w->stats.write_blocks_free, blocks_available(w),
					      memory_order_relaxed);
			out_append(c, ch);
			tail = ch;
		}
		n = RM_WRITE_BLOCK_BYTES - tail->len;
		if (n > len)
			n = len;
		/* Appending past what an in-flight send covers is safe: that send's iovec
		 * ends at the old length. */
		memcpy((uint8_t *)tail->data + tail->len, p, n);
		tail->len += (uint32_t)n;
		c->out_bytes += (uint32_t)n;
		p += n;
		len -= n;
	}
	defer(c, RM_CF_FLUSH);
	return 0;
}

int rm_conn_send_rx(struct rm_conn *c, const struct rm_rx *rx, size_t offset, size_t len)
{
	struct rm_worker *w = c->worker;
	struct rm_chunk *tail = c->out_tail, *ch;
	const uint8_t *data = rx->data + offset;

	RM_ASSERT(offset + len <= rx->len);
	if (len == 0)
		return 0;
	if (c->transport != NULL)
		return transport_write(c, data, len);
	if (!can_queue(c, len))
		return -ENOBUFS;
	/*
	 * Zero copy pins the receive buffer until the peer takes the bytes.  When
	 * the ring runs low, copy instead, so that slow readers cannot drain the
	 * ring that every connection of this worker receives into.
	 */
	if (rx->bid == RM_RX_NO_BUFFER || ring_low(w))
		return rm_conn_write(c, data, len);
	/* Adjacent pieces of one buffer (pipelined lines) extend one chunk. */
	if (tail != NULL && tail->kind == RM_CHUNK_RX && tail->bid == rx->bid &&
	    tail->data + tail->len == data ) {
		tail->len += (uint32_t)len;
		c->out_bytes += (uint32_t)len;
		defer(c, RM_CF_FLUSH);
		return 0;
	}
	ch = chunk_get(w);
	if (ch == NULL) {
		c->flags |= RM_CF_WANT_WRITABLE;
		return -ENOBUFS;
	}
	ch->kind = RM_CHUNK_RX;
	ch->bid = rx->bid;
	ch->data = data;
	ch->len = (uint32_t)len;
	buf_ref(w, rx->bid);
	out_append(c, ch);
	return 0;
}

int rm_conn_send_static(struct rm_conn *c, const void *data, size_t len)
{
	struct rm_chunk *ch;

	if (len == 0)
		return 0;
	if (c->transport != NULL)
		return transport_write(c, data, len);
	if (!can_queue(c, len))
		return -ENOBUFS;
	ch = chunk_get(c->worker);
	if (ch == NULL) {
		c->flags |= RM_CF_WANT_WRITABLE;
		return -ENOBUFS;
	}
	ch->kind = RM_CHUNK_STATIC;
	ch->data = data;
	ch->len = (uint32_t)len;
	out_append(c, ch);
	return 0;
}

static void flush(struct rm_conn *c)
{
	struct rm_worker *w = c->worker;
	struct rm_send_ctx *ctx;
	struct io_uring_sqe *sqe;
	unsigned n = 0;
	uint32_t skip = c->out_offset;

	if ((c->flags & RM_CF_SEND_INFLIGHT) || c->out_head == NULL || c->fd < 0)
		return;
	if (c->state == RM_CONN_DEAD || c->state == RM_CONN_CONNECTING)
		return;
	ctx = w->send_free;
	if (ctx != NULL) {
		w->send_free = ctx->next_free;
	} else {
		RM_ASSERT(w->send_fresh < w->conn_count);	/* one per slot */
		ctx = &w->send_ctxs[w->send_fresh++];
	}
	for (struct rm_chunk *ch = c->out_head; ch != NULL && n < RM_SEND_IOV_MAX; ch = ch->next) {
		ctx->iov[n].iov_base = (void *)(ch->data + skip);
		ctx->iov[n].iov_len = ch->len - skip;
		skip = 0;
		n++;
	}
	memset(&ctx->msg, 0, sizeof(ctx->msg));
	ctx->msg.msg_iov = ctx->iov;
	ctx->msg.msg_iovlen = n;
	sqe = get_sqe(w);
	io_uring_prep_sendmsg(sqe, c->fd, &ctx->msg, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_SEND, c->index, c->generation));
	c->send_ctx = ctx;
	c->flags |= RM_CF_SEND_INFLIGHT;
	c->inflight++;
}

static void on_send_done(struct rm_conn *c, int res)
{
	struct rm_worker *w = c->worker;
	uint32_t left = res > 0 ? (uint32_t)res : 0;

	c->flags &= ~RM_CF_SEND_INFLIGHT;
	c->send_ctx->next_free = w->send_free;
	w->send_free = c->send_ctx;
	c->send_ctx = NULL;
	if (res < 0) {
		conn_kill(c, res);
		return;
	}
	atomic_fetch_add_explicit(&w->stats.sent_bytes, left, memory_order_relaxed);
	c->bytes_out += left;
	RM_ASSERT(left <= c->out_bytes);
	c->out_bytes -= left;
	/* Free what was sent; a partly sent head keeps its offset. */
	while (c->out_head != NULL) {
		struct rm_chunk *ch = c->out_head;
		uint32_t rest = ch->len - c->out_offset;

		if (left < rest) {
			c->out_offset += left;
			break;
		}
		left -= rest;
		c->out_offset = 0;
		c->out_head = ch->next;
		if (c->out_head == NULL)
			c->out_tail = NULL;
		chunk_release(w, ch);
	}
	if (c->state == RM_CONN_DEAD)
		return;
	if (c->out_head != NULL) {
		flush(c);
		if (c->out_bytes > w->cfg->limits.output_bytes_max / 2)
			return;
	}
	if (c->state == RM_CONN_CLOSING) {
		if (c->out_head == NULL)
			conn_kill(c, 0);
		return;
	}
	if (input_waiting(c))
		defer(c, RM_CF_RESUME);
	if ((c->flags & RM_CF_WANT_WRITABLE) || ((c->flags & RM_CF_SHUT_WR) && c->out_bytes == 0))
		defer(c, 0);
}

/* ---- input -------------------------------------------------------------------------- */

static void held_append(struct rm_conn *c, struct rm_chunk *ch)
{
	ch->next = NULL;
	if (c->held_tail != NULL)
		c->held_tail->next = ch;
	else
		c->held_head = ch;
	c->held_tail = ch;
}

/*
 * Copy held input into write blocks so that its receive buffer can go back to
 * the ring.  Held input pins a buffer for as long as the session waits, and
 * what it waits for may be another connection of this worker that needs a
 * buffer to receive (a relay whose backend is on the same worker, or two
 * sessions whose outputs feed each other): with every buffer pinned that is a
 * dead lock.  Once the ring runs low, new held input therefore never pins a
 * buffer, so pinned buffers stop growing while a quarter of the ring is still
 * free.  Returns false (nothing changed) when the block or chunk pool is short.
 */
static bool hold_copy(struct rm_conn *c, const uint8_t *data, size_t len)
{
	struct rm_worker *w = c->worker;
	uint32_t blocks = (uint32_t)((len + RM_WRITE_BLOCK_BYTES - 1) / RM_WRITE_BLOCK_BYTES);

	/* Keep a reserve for output, which is what eventually drains everything. */
	if (blocks_available(w) < blocks + 16 || w->chunks_free < blocks + 16)
		return false;
	while (len > 0) {
		struct rm_chunk *ch = chunk_get(w);
		size_t n = len < RM_WRITE_BLOCK_BYTES ? len : RM_WRITE_BLOCK_BYTES;

		RM_ASSERT(ch != NULL);
		ch->kind = RM_CHUNK_BLOCK;
		ch->block = block_take(w);
		ch->data = w->blocks + (size_t)ch->block * RM_WRITE_BLOCK_BYTES;
		ch->bid = RM_RX_NO_BUFFER;
		memcpy((uint8_t *)ch->data, data, n);
		ch->len = (uint32_t)n;
		held_append(c, ch);
		data += n;
		len -= n;
	}
	atomic_store_explicit(&w->stats.write_blocks_free, blocks_available(w), memory_order_relaxed);
	atomic_fetch_add_explicit(&w->stats.held_copied, 1, memory_order_relaxed);
	return true;
}

/* Keep input the session did not take; consumes the caller's buffer reference. */
static void hold_input(struct rm_conn *c, uint16_t bid, const uint8_t *data, size_t len)
{
	struct rm_chunk *ch;

	if (ring_low(c->worker) && hold_copy(c, data, len)) {
		buf_unref(c->worker, bid);
	} else if ((ch = chunk_get(c->worker)) == NULL) {
		/* Pool sized for every slot; running out means a session is not
		 * consuming at all while the peer keeps sending. */
		rm_warn(c->id, "input held beyond the chunk pool; closing");
		buf_unref(c->worker, bid);
		conn_kill(c, -ENOBUFS);
		return;
	} else {
		ch->kind = RM_CHUNK_RX;
		ch->bid = bid;
		ch->data = data;
		ch->len = (uint32_t)len;
		held_append(c, ch);
	}
	if (!(c->flags & RM_CF_PAUSED)) {
		c->flags |= RM_CF_PAUSED;
		atomic_fetch_add_explicit(&c->worker->stats.recv_paused, 1, memory_order_relaxed);
	}
	cancel_recv(c);
}

/*
 * Input is held but nothing of this connection is queued or in flight, so no
 * send completion will re-offer it: the session was short of the worker's
 * shared pools (or waits for an event of its own, which then resumes it).
 * Re-offer when pool memory has been freed since.
 */
static void wait_for_pool(struct rm_conn *c)
{
	struct rm_worker *w = c->worker;

	if (c->held_head == NULL || c->out_bytes != 0 || (c->flags & (RM_CF_SEND_INFLIGHT | RM_CF_POOL_WAIT)))
		return;
	c->flags |= RM_CF_POOL_WAIT;
	fifo_push(&w->pool_wait, c);
}

static void resume_pool_waiters(struct rm_worker *w)
{
	if (w->pool_wait.head == NULL || w->pool_gen == w->pool_gen_resumed)
		return;
	w->pool_gen_resumed = w->pool_gen;
	for (unsigned n = 0; n < RM_STARVED_REARM_MAX && w->pool_wait.head != NULL; n++) {
		struct rm_conn *c = fifo_pop(&w->pool_wait);

		c->flags &= ~RM_CF_POOL_WAIT;
		defer(c, RM_CF_RESUME);
	}
}

/* Offer bytes to the session; keep what it does not take.  Consumes our reference. */
static void deliver(struct rm_conn *c, uint16_t bid, const uint8_t *data, size_t len)
{
	struct rm_rx rx = { .data = data, .len = len, .bid = bid };
	size_t used;

	if (c->state != RM_CONN_OPEN || c->held_head != NULL) {
		if (c->state == RM_CONN_OPEN)
			hold_input(c, bid, data, len);
		else
			buf_unref(c->worker, bid);
		return;
	}
	used = offer(c, &rx);
	RM_ASSERT(used <= len);
	if (used < len && c->state == RM_CONN_OPEN) {
		/* hold_input takes over our reference */
		hold_input(c, bid, data + used, len - used);
		wait_for_pool(c);
		return;
	}
	buf_unref(c->worker, bid);
}

static void starve(struct rm_conn *c)
{
	struct rm_worker *w = c->worker;

	if (c->flags & RM_CF_STARVED)
		return;
	c->flags |= RM_CF_STARVED;
	fifo_push(&w->starved, c);
	atomic_fetch_add_explicit(&w->stats.recv_enobufs, 1, memory_order_relaxed);
}

static void maybe_rearm_recv(struct rm_conn *c)
{
	if (c->state != RM_CONN_OPEN || (c->flags & (RM_CF_RECV_ARMED | RM_CF_EOF | RM_CF_STARVED)))
		return;
	if (c->held_head != NULL)
		return;
	c->flags &= ~RM_CF_PAUSED;
	arm_recv(c);
}

static void on_recv(struct rm_conn *c, int res, uint32_t cqe_flags)
{
	struct rm_worker *w = c->worker;
	bool more = cqe_flags & IORING_CQE_F_MORE;

	if (!more) {
		c->flags &= ~RM_CF_RECV_ARMED;
		c->inflight--;
	}
	if (res > 0) {
		uint16_t bid;

		RM_ASSERT(cqe_flags & IORING_CQE_F_BUFFER);
		bid = (uint16_t)(cqe_flags >> IORING_CQE_BUFFER_SHIFT);
		buf_taken(w, bid);
		atomic_fetch_add_explicit(&w->stats.recv_bytes, (uint64_t)res, memory_order_relaxed);
		c->bytes_in += (uint64_t)res;
		deliver(c, bid, buf_addr(w, bid), (size_t)res);
	} else if (res == 0) {
		c->flags |= RM_CF_EOF;
		if (c->state == RM_CONN_OPEN && !input_waiting(c))
			defer(c, 0);
	} else if (res == -ENOBUFS) {
		if (c->state == RM_CONN_OPEN)
			starve(c);
	} else if (res != -ECANCELED) {
		conn_kill(c, res);
		return;
	}
	if (!more) {
		c->flags &= ~RM_CF_CANCEL_SENT;
		if (c->state == RM_CONN_DEAD)
			defer(c, 0);
		else
			maybe_rearm_recv(c);
	}
}

void rm_conn_shutdown_write(struct rm_conn *c)
{
	if (c->state != RM_CONN_OPEN || (c->flags & RM_CF_SHUT_WR))
		return;
	defer(c, RM_CF_SHUT_WR);
}

void rm_conn_resume(struct rm_conn *c)
{
	if (c->state == RM_CONN_OPEN)
		defer(c, RM_CF_RESUME);
}

/* Re-offer held input in order; stop at the first piece not wholly taken. */
static void redeliver(struct rm_conn *c)
{
	struct rm_worker *w = c->worker;

	for (uint32_t n = 0; c->held_head != NULL && c->state == RM_CONN_OPEN && n < w->chunk_count; n++) {
		struct rm_chunk *ch = c->held_head;
		struct rm_rx rx = { .data = ch->data, .len = ch->len, .bid = ch->bid };
		size_t used = offer(c, &rx);

		/* A kill released the held list, ch included. */
		if (c->state == RM_CONN_DEAD)
			return;
		RM_ASSERT(used <= ch->len);
		if (used < ch->len) {
			ch->data += used;
			ch->len -= (uint32_t)used;
			wait_for_pool(c);
			return;
		}
		c->held_head = ch->next;
		if (c->held_head == NULL)
			c->held_tail = NULL;
		chunk_release(w, ch);
	}
	if (c->held_head == NULL && c->state == RM_CONN_OPEN) {
		if (c->flags & RM_CF_EOF)
			defer(c, 0);
		else
			maybe_rearm_recv(c);
	}
}

/* ---- the deferred list: run after each dispatch round ---------------------------------- */

static void run_deferred_one(struct rm_conn *c)
{
	uint32_t f = c->flags;

	c->flags &= ~(RM_CF_DEFERRED | RM_CF_FLUSH | RM_CF_RESUME);
	if (c->state == RM_CONN_DEAD) {
		if (c->inflight == 0)
			conn_finish(c);
		return;
	}
	if (c->state == RM_CONN_FREE)
		return;
	/* Whoever asked (our own drained output, or a session whose other
	 * connection drained) gets the held input offered; the session decides
	 * whether it can take it, whatever this connection's own output holds. */
	if ((f & RM_CF_RESUME) && (c->flags & RM_CF_TRANSPORT_HELD) && c->transport->on_resume != NULL)
		c->transport->on_resume(c);
	if ((f & RM_CF_RESUME) && c->held_head != NULL && !(c->flags & RM_CF_TRANSPORT_HELD))
		redeliver(c);
	if (c->state == RM_CONN_OPEN && (c->flags & RM_CF_EOF) && !(c->flags & RM_CF_EOF_DONE) &&
	    !input_waiting(c)) {
		c->flags |= RM_CF_EOF_DONE;
		if (c->ops->on_eof != NULL && !(c->flags & RM_CF_OPEN_DEFERRED))
			c->ops->on_eof(c);
		else
			rm_conn_close(c);
	}
	/* Input dropped (rm_conn_discard_input) or taken by the transport: receive again. */
	if (c->state == RM_CONN_OPEN && !input_waiting(c) && !(c->flags & RM_CF_RECV_ARMED))
		maybe_rearm_recv(c);
	if ((c->flags & RM_CF_WANT_WRITABLE) && c->out_bytes == 0 && c->state == RM_CONN_OPEN &&
	    !(c->flags & RM_CF_OPEN_DEFERRED)) {
		c->flags &= ~RM_CF_WANT_WRITABLE;
		if (c->ops->on_writable != NULL)
			c->ops->on_writable(c);
	}
	if (c->state == RM_CONN_CLOSING && c->out_bytes == 0) {
		conn_kill(c, 0);
		return;
	}
	if (c->state == RM_CONN_OPEN && (c->flags & RM_CF_SHUT_WR) && !(c->flags & RM_CF_SHUT_WR_DONE) &&
	    c->out_bytes == 0) {
		c->flags |= RM_CF_SHUT_WR_DONE;
		shutdown(c->fd, SHUT_WR);
	}
	if (c->state != RM_CONN_DEAD)
		flush(c);
}

static void run_deferred(struct rm_worker *w)
{
	/* Callbacks may defer more work; bound the rounds so one busy peer cannot
	 * starve the ring (leftovers run next iteration). */
	for (uint32_t n = 0; w->deferred.head != NULL && n < 4 * w->conn_count + 16; n++)
		run_deferred_one(fifo_pop(&w->deferred));
}

static void rearm_starved(struct rm_worker *w)
{
	/* Recvs found the ring empty since the last round: more buffers go into it. */
	if (w->starved.head != NULL)
		rm_bufring_grow(&w->bufs);
	for (unsigned n = 0; n < RM_STARVED_REARM_MAX && w->starved.head != NULL && w->bufs.free > 0; n++) {
		struct rm_conn *c = fifo_pop(&w->starved);

		c->flags &= ~RM_CF_STARVED;
		maybe_rearm_recv(c);
	}
}

/* ---- accept and connect ----------------------------------------------------------------- */

/* An accepted connection: its transport first (implicit TLS), then the session. */
static void accept_open(struct rm_conn *c)
{
	const struct rm_listener_config *l = rm_conn_listener(c);
	rm_transport_attach_fn attach = c->worker->daemon->transport_attach;

	if (l != NULL && l->tls == RM_TLS_IMPLICIT) {
		int rc = attach != NULL ? attach(c, l) : -EPROTONOSUPPORT;

		if (rc < 0) {
			conn_kill(c, rc);
			return;
		}
		if (rc > 0) {
			c->flags |= RM_CF_OPEN_DEFERRED;
			return;
		}
	}
	if (c->ops->on_open != NULL)
		c->ops->on_open(c);
}

void rm_conn_open_session(struct rm_conn *c)
{
	if (!(c->flags & RM_CF_OPEN_DEFERRED) || c->state != RM_CONN_OPEN)
		return;
	c->flags &= ~RM_CF_OPEN_DEFERRED;
	if (c->ops->on_open != NULL)
		c->ops->on_open(c);
}

void rm_conn_set_transport(struct rm_conn *c, const struct rm_transport_ops *t, void *state)
{
	RM_ASSERT(c->transport == NULL && t != NULL && t->on_rx != NULL && t->write != NULL);
	c->transport = t;
	c->transport_state = state;
}

void rm_conn_transport_held(struct rm_conn *c, bool held)
{
	if (held)
		c->flags |= RM_CF_TRANSPORT_HELD;
	else
		c->flags &= ~RM_CF_TRANSPORT_HELD;
	if (!held && c->held_head != NULL)
		defer(c, RM_CF_RESUME);	/* raw input waited behind what the transport kept */
}

void rm_conn_discard_input(struct rm_conn *c)
{
	chunk_list_release(c->worker, &c->held_head, &c->held_tail);
	if (c->flags & RM_CF_POOL_WAIT) {
		fifo_unlink(&c->worker->pool_wait, c, c->worker->conn_count);
		c->flags &= ~RM_CF_POOL_WAIT;
	}
	defer(c, 0);		/* receiving resumes from the deferred list */
}

static void on_accept(struct rm_worker *w, unsigned li, int res, uint32_t cqe_flags)
{
	struct rm_conn *c;
	char peer[64];

	if (!(cqe_flags & IORING_CQE_F_MORE))
		w->accept_armed[li] = false;
	if (res < 0) {
		if (res != -ECANCELED && !w->stopping)
			rm_warn(0, "worker %u: accept on %s: %s", w->index, w->listener_name[li], strerror(-res));
	} else if (w->stopping) {
		close(res);
	} else if ((c = slot_get(w)) == NULL) {
		atomic_fetch_add_explicit(&w->stats.accept_refused, 1, memory_order_relaxed);
		if (w->refused_logged_ms + 1000 <= w->now_ms) {
			rm_warn(0, "worker %u: all %u connection slots in use; refusing connections on %s",
				w->index, w->conn_count, w->listener_name[li]);
			w->refused_logged_ms = w->now_ms;
		}
		close(res);
	} else {
		c->fd = res;
		c->listener_index = (int16_t)w->listener_cfg_index[li];
		c->ops = w->listener_ops[li];
		c->state = RM_CONN_OPEN;
		c->peer_len = sizeof(c->peer);
		if (getpeername(res, &c->peer.sa, &c->peer_len) < 0)
			c->peer_len = 0;
		atomic_fetch_add_explicit(&w->stats.accepted, 1, memory_order_relaxed);
		rm_info(c->id, "connect from %s to %s", rm_conn_peer_str(c, peer, sizeof(peer)),
			w->listener_name[li]);
		arm_recv(c);
		accept_open(c);
	}
	if (!w->accept_armed[li] && !w->stopping && w->listen_fd[li] >= 0)
		arm_accept(w, li);
}

struct rm_conn *rm_conn_connect(struct rm_worker *w, const struct rm_connect_options *opt,
				const struct rm_session_ops *ops, void *session, int *err)
{
	struct rm_conn *c;
	struct io_uring_sqe *sqe;
	int fd, one = 1;

	if (opt->dest_len > sizeof(union rm_sockaddr)) {
		*err = -EINVAL;
		return NULL;
	}
	c = slot_get(w);
	if (c == NULL) {
		*err = -EMFILE;
		return NULL;
	}
	fd = socket(opt->dest->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*err = -errno;
		slot_put(w, c);
		atomic_fetch_sub_explicit(&w->stats.closed, 1, memory_order_relaxed);
		return NULL;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (opt->source != NULL && bind(fd, opt->source, opt->source_len) < 0) {
		*err = -errno;
		close(fd);
		slot_put(w, c);
		atomic_fetch_sub_explicit(&w->stats.closed, 1, memory_order_relaxed);
		return NULL;
	}
	c->fd = fd;
	c->ops = ops;
	c->session = session;
	c->listener_index = -1;
	c->state = RM_CONN_CONNECTING;
	memcpy(&c->peer, opt->dest, opt->dest_len);
	c->peer_len = opt->dest_len;
	sqe = get_sqe(w);
	io_uring_prep_connect(sqe, fd, &c->peer.sa, c->peer_len);
	io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_CONNECT, c->index, c->generation));
	c->inflight++;
	rm_conn_timer(c, opt->timeout_ms ? opt->timeout_ms : w->cfg->limits.connect_timeout_ms);
	*err = 0;
	return c;
}

static void report_connect(struct rm_conn *c, int err)
{
	if (c->flags & RM_CF_CONNECT_REPORTED)
		return;
	c->flags |= RM_CF_CONNECT_REPORTED;
	if (c->ops->on_connect != NULL)
		c->ops->on_connect(c, err);
}

static void on_connect_done(struct rm_conn *c, int res)
{
	struct rm_worker *w = c->worker;

	c->inflight--;
	if (c->state != RM_CONN_CONNECTING) {
		defer(c, 0);
		return;
	}
	if (res < 0) {
		report_connect(c, res);
		conn_kill(c, res);
		return;
	}
	rm_conn_timer(c, 0);
	c->state = RM_CONN_OPEN;
	atomic_fetch_add_explicit(&w->stats.connected, 1, memory_order_relaxed);
	arm_recv(c);
	report_connect(c, 0);
	defer(c, RM_CF_FLUSH);
}

/* ---- timers -------------------------------------------------------------------------------- */

void rm_conn_timer(struct rm_conn *c, uint32_t timeout_ms)
{
	struct rm_worker *w = c->worker;

	if (c->state == RM_CONN_DEAD || c->state == RM_CONN_FREE)
		return;
	if (timeout_ms == 0) {
		if (rm_timer_armed(&c->timer))
			rm_wheel_del(&w->wheel, &c->timer);
		return;
	}
	rm_wheel_add(&w->wheel, &c->timer, (w->now_ms + timeout_ms + RM_TICK_MS - 1) / RM_TICK_MS);
}

static void run_timers(struct rm_worker *w)
{
	struct rm_timer *expired[RM_TIMER_BATCH];
	size_t n;

	n = rm_wheel_advance(&w->wheel, w->now_ms / RM_TICK_MS, expired, RM_TIMER_BATCH);
	for (size_t i = 0; i < n; i++) {
		const char *p = (const char *)expired[i];
		struct rm_conn *c;

		/* A timer outside the slot array is a worker timer. */
		if (p < (const char *)w->conns || p >= (const char *)(w->conns + w->conn_count)) {
			struct rm_worker_timer *t = (struct rm_worker_timer *)(void *)expired[i];

			t->fire(w, t->arg);
			continue;
		}
		c = (struct rm_conn *)(void *)(p - offsetof(struct rm_conn, timer));

		atomic_fetch_add_explicit(&w->stats.timeouts, 1, memory_order_relaxed);
		if (c->transport != NULL && c->transport->on_timeout != NULL && c->state == RM_CONN_OPEN &&
		    c->transport->on_timeout(c))
			continue;
		if (c->state == RM_CONN_OPEN && (c->flags & RM_CF_OPEN_DEFERRED)) {
			conn_kill(c, -ETIMEDOUT);
			continue;
		}
		if (c->state == RM_CONN_CONNECTING) {
			report_connect(c, -ETIMEDOUT);
			conn_kill(c, -ETIMEDOUT);
		} else if (c->state == RM_CONN_OPEN || c->state == RM_CONN_CLOSING) {
			if (c->ops->on_timeout != NULL && c->state == RM_CONN_OPEN)
				c->ops->on_timeout(c);
			else
				conn_kill(c, -ETIMEDOUT);
		}
	}
}

void rm_worker_timer_set(struct rm_worker *w, struct rm_worker_timer *t, uint32_t timeout_ms)
{
	RM_ASSERT(t->fire != NULL);
	rm_wheel_add(&w->wheel, &t->timer, (w->now_ms + timeout_ms + RM_TICK_MS - 1) / RM_TICK_MS);
}

void rm_worker_timer_cancel(struct rm_worker *w, struct rm_worker_timer *t)
{
	if (rm_timer_armed(&t->timer))
		rm_wheel_del(&w->wheel, &t->timer);
}

/* ---- file operations ------------------------------------------------------------------------ */

static struct rm_file_op *file_op_get(struct rm_worker *w, uint32_t *index)
{
	struct rm_file_op *op = w->file_free;

	if (op != NULL)
		w->file_free = op->next_free;
	else if (w->file_fresh < RM_FILE_OPS_MAX)
		op = &w->file_ops[w->file_fresh++];
	else
		return NULL;
	*index = (uint32_t)(op - w->file_ops);
	w->file_in_flight++;
	op->poll = false;
	return op;
}

int rm_file_writev(struct rm_worker *w, int fd, const struct iovec *iov, unsigned iov_count,
		   uint64_t offset, bool link, rm_file_done_fn done, void *arg)
{
	struct io_uring_sqe *sqe;
	struct rm_file_op *op;
	uint32_t index;

	RM_ASSERT(iov_count > 0 && iov_count <= RM_FILE_IOV_MAX);
	op = file_op_get(w, &index);
	if (op == NULL)
		return -EBUSY;
	op->done = done;
	op->arg = arg;
	memcpy(op->iov, iov, iov_count * sizeof(*iov));
	sqe = get_sqe(w);
	io_uring_prep_writev(sqe, fd, op->iov, iov_count, offset);
	if (link)
		sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_FILE, index, 0));
	return 0;
}

int rm_file_fdatasync(struct rm_worker *w, int fd, bool link, rm_file_done_fn done, void *arg)
{
	struct io_uring_sqe *sqe;
	struct rm_file_op *op;
	uint32_t index;

	op = file_op_get(w, &index);
	if (op == NULL)
		return -EBUSY;
	op->done = done;
	op->arg = arg;
	sqe = get_sqe(w);
	io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
	if (link)
		sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_FILE, index, 0));
	return 0;
}

unsigned rm_file_ops_in_flight(const struct rm_worker *w)
{
	return w->file_in_flight;
}

int rm_worker_poll(struct rm_worker *w, int fd, unsigned events, rm_file_done_fn done, void *arg)
{
	struct io_uring_sqe *sqe;
	struct rm_file_op *op;
	uint32_t index;

	op = file_op_get(w, &index);
	if (op == NULL)
		return -EBUSY;
	/* A poll waits on the outside world (a resolver that never answers):
	 * a stopping worker must not wait for it, unlike a write. */
	op->poll = true;
	w->file_in_flight--;
	op->done = done;
	op->arg = arg;
	sqe = get_sqe(w);
	io_uring_prep_poll_add(sqe, fd, events);
	io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_FILE, index, 0));
	return (int)index;
}

void rm_worker_poll_cancel(struct rm_worker *w, int handle)
{
	struct io_uring_sqe *sqe;

	RM_ASSERT(handle >= 0 && (uint32_t)handle < w->file_fresh && w->file_ops[handle].poll);
	sqe = get_sqe(w);
	io_uring_prep_poll_remove(sqe, pack_ud(RM_OP_FILE, (uint32_t)handle, 0));
	io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_IGNORE, 0, 0));
}

static void on_file_done(struct rm_worker *w, uint32_t index, int res)
{
	struct rm_file_op *op;

	RM_ASSERT(index < w->file_fresh);
	op = &w->file_ops[index];
	if (!op->poll) {
		RM_ASSERT(w->file_in_flight > 0);
		w->file_in_flight--;
	}
	rm_file_done_fn done = op->done;
	void *arg = op->arg;

	/* Back on the free list first: done() may start the next operation. */
	op->next_free = w->file_free;
	w->file_free = op;
	done(arg, res);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static void dispatch(struct rm_worker *w, uint64_t ud, int res, uint32_t cqe_flags)
{
	enum rm_op op = (enum rm_op)(ud & 0xff);
	uint32_t index = (uint32_t)(ud >> 8) & 0xffffffu;
	uint32_t gen = (uint32_t)(ud >> 32);
	struct rm_conn *c;

	switch (op) {
	case RM_OP_ACCEPT:
		on_accept(w, index, res, cqe_flags);
		return;
	case RM_OP_WAKE:
		w->wake_pending = true;
		if (!(cqe_flags & IORING_CQE_F_MORE))
			arm_wake(w);
		return;
	case RM_OP_IGNORE:
		return;
	case RM_OP_FILE:
		on_file_done(w, index, res);
		return;
	default:
		break;
	}
	RM_ASSERT(index < w->conn_count);
	c = &w->conns[index];
	if (c->generation != gen || c->state == RM_CONN_FREE)
		rm_panic("worker %u: completion op %d for slot %u gen %u, slot has gen %u state %d",
			 w->index, op, index, gen, c->generation, c->state);
	switch (op) {
	case RM_OP_RECV:
		on_recv(c, res, cqe_flags);
		break;
	case RM_OP_SEND:
		c->inflight--;
		on_send_done(c, res);
		if (c->state == RM_CONN_DEAD)
			defer(c, 0);
		break;
	case RM_OP_CONNECT:
		on_connect_done(c, res);
		break;
	case RM_OP_CANCEL:
		c->inflight--;
		if (c->state == RM_CONN_DEAD)
			defer(c, 0);
		break;
	default:
		rm_panic("worker %u: unknown op %d", w->index, op);
	}
}

/* ---- stop and reload ------------------------------------------------------------------------- */

static void close_listeners(struct rm_worker *w)
{
	for (unsigned li = 0; li < w->listener_count; li++) {
		if (w->listen_fd[li] < 0)
			continue;
		struct io_uring_sqe *sqe = get_sqe(w);

		io_uring_prep_cancel_fd(sqe, w->listen_fd[li], IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data64(sqe, pack_ud(RM_OP_IGNORE, 0, 0));
		io_uring_submit(&w->ring);
		close(w->listen_fd[li]);
		w->listen_fd[li] = -1;
	}
}

static void begin_stop(struct rm_worker *w)
{
	if (w->stopping)
		return;
	w->stopping = true;
	w->stop_deadline_ms = w->now_ms + w->cfg->limits.shutdown_timeout_ms;
	close_listeners(w);
	if (w->daemon->hooks.worker_stopping != NULL)
		w->daemon->hooks.worker_stopping(w, w->daemon->hooks.arg);
	for (uint32_t i = 0; i < w->conns_fresh; i++) {
		struct rm_conn *c = &w->conns[i];

		if (c->state != RM_CONN_OPEN && c->state != RM_CONN_CONNECTING)
			continue;
		if (c->ops->on_shutdown != NULL)
			c->ops->on_shutdown(c);
	}
	if (w->index == 0)
		rm_info(0, "stopping: %u connections on worker 0, deadline %u ms", w->open_count,
			w->cfg->limits.shutdown_timeout_ms);
}

/* ---- the mailbox --------------------------------------------------------------------------------- */

int rm_worker_prepare(struct rm_worker *w)
{
	int rc;

	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->wake_fd < 0)
		return -errno;
	rc = pthread_mutex_init(&w->mailbox_lock, NULL);
	if (rc != 0) {
		close(w->wake_fd);
		w->wake_fd = -1;
		return -rc;
	}
	w->mailbox_head = w->mailbox_count = 0;
	w->mailbox_closed = false;
	return 0;
}

void rm_worker_teardown(struct rm_worker *w)
{
	close(w->wake_fd);
	w->wake_fd = -1;
	pthread_mutex_destroy(&w->mailbox_lock);
}

/*
 * Any thread.  The lock covers only the ring's few words, never a call of fn,
 * so a worker posting to a worker that is posting back cannot dead-lock.
 * The wake comes after the entry is in: the receiver reads its eventfd before
 * draining, so a post is either seen by the drain under way or wakes another.
 */
int rm_worker_post(struct rm_worker *to, rm_worker_fn fn, void *arg)
{
	int rc = 0;

	RM_ASSERT(to != NULL && fn != NULL);
	pthread_mutex_lock(&to->mailbox_lock);
	if (to->mailbox_closed) {
		rc = -ESHUTDOWN;
	} else if (to->mailbox_count == RM_MAILBOX_MAX) {
		rc = -EAGAIN;
	} else {
		struct rm_mail *m = &to->mailbox[(to->mailbox_head + to->mailbox_count) % RM_MAILBOX_MAX];

		m->fn = fn;
		m->arg = arg;
		to->mailbox_count++;
	}
	pthread_mutex_unlock(&to->mailbox_lock);
	if (rc == 0)
		rm_worker_wake(to);
	return rc;
}

/*
 * Run what was posted, in order, from the loop.  Everything queued when we
 * look is taken at once (at most RM_MAILBOX_MAX), so posters find room again
 * while it runs; what fn posts meanwhile, to this worker too, waits for the
 * next iteration (its post wrote the eventfd again), which bounds one drain.
 */
static void drain_mailbox(struct rm_worker *w)
{
	struct rm_mail batch[RM_MAILBOX_MAX];
	uint32_t n;

	pthread_mutex_lock(&w->mailbox_lock);
	n = w->mailbox_count;
	for (uint32_t i = 0; i < n; i++) {
		struct rm_mail *m = &w->mailbox[(w->mailbox_head + i) % RM_MAILBOX_MAX];

		batch[i] = *m;
		/* No stale pointer left behind: it would hide a leaked arg from
		 * LeakSanitizer (the worker, and so its mailbox, stays reachable). */
		m->fn = NULL;
		m->arg = NULL;
	}
	w->mailbox_head = (w->mailbox_head + n) % RM_MAILBOX_MAX;
	w->mailbox_count = 0;
	pthread_mutex_unlock(&w->mailbox_lock);
	for (uint32_t i = 0; i < n; i++)
		batch[i].fn(w, batch[i].arg);
}

/*
 * The loop is about to end: refuse further posts.  With only_if_empty the
 * mailbox is closed only when nothing waits in it (checked under the same
 * lock, so no post can slip in between), which is how a stopping worker
 * keeps draining until every posted call has run.  Returns whether it closed.
 */
static bool close_mailbox(struct rm_worker *w, bool only_if_empty)
{
	bool closed;

	pthread_mutex_lock(&w->mailbox_lock);
	if (!only_if_empty || w->mailbox_count == 0)
		w->mailbox_closed = true;
	closed = w->mailbox_closed;
	pthread_mutex_unlock(&w->mailbox_lock);
	return closed;
}

static void handle_wake(struct rm_worker *w)
{
	struct rm_daemon *d = w->daemon;
	uint64_t v;
	uint32_t gen;

	w->wake_pending = false;
	while (read(w->wake_fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
	gen = atomic_load_explicit(&d->config_generation, memory_order_acquire);
	if (gen != w->config_generation) {
		w->cfg = atomic_load_explicit(&d->config_ptr, memory_order_acquire);
		w->config_generation = gen;
		atomic_store_explicit(&w->config_acked, gen, memory_order_release);
	}
	if (atomic_load_explicit(&d->stop_requested, memory_order_acquire))
		begin_stop(w);
	/* After the eventfd was read: a post from now on wakes us again. */
	drain_mailbox(w);
}

/* ---- the loop ------------------------------------------------------------------------------------ */

struct rm_cqe_copy {
	uint64_t user_data;
	int32_t res;
	uint32_t flags;
};

static void worker_loop(struct rm_worker *w)
{
	struct rm_cqe_copy batch[RM_CQE_BATCH];
	bool aborted = false;

	for (;;) {
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts;
		uint64_t wait_ms = RM_WAIT_MS_MAX, next_tick;
		unsigned head, n = 0;

		w->now_ms = rm_now_ms();
		run_timers(w);
		run_deferred(w);
		rearm_starved(w);
		resume_pool_waiters(w);
		if (w->wake_pending)
			handle_wake(w);
		if (w->stopping) {
			/* File operations (spool writes) finish even after the last
			 * connection: an acknowledged record is never abandoned. */
			/* Posted calls run too (the wake for one still in the
			 * mailbox is on its way): a poster waiting for an answer,
			 * or for its arg back, is never left hanging. */
			if (w->open_count == 0 && w->file_in_flight == 0 && close_mailbox(w, true))
				break;
			/* A kernel operation that never completes must not hold the
			 * process forever.  What is still posted runs once, here. */
			if (aborted && w->now_ms >= w->stop_deadline_ms + 2000) {
				rm_warn(0, "worker %u: %u connections still waiting for the kernel; exiting",
					w->index, w->open_count);
				close_mailbox(w, false);
				drain_mailbox(w);
				break;
			}
			if (!aborted && w->now_ms >= w->stop_deadline_ms) {
				rm_info(0, "worker %u: shutdown deadline passed; closing %u connections",
					w->index, w->open_count);
				for (uint32_t i = 0; i < w->conns_fresh; i++)
					conn_kill(&w->conns[i], -ESHUTDOWN);
				aborted = true;
				continue;
			}
		}
		if (!w->stopping && w->daemon->hooks.worker_tick != NULL &&
		    !w->daemon->hooks.worker_tick(w, w->daemon->hooks.arg)) {
			begin_stop(w);
			continue;
		}
		if (w->deferred.head != NULL)
			wait_ms = 0;
		next_tick = rm_wheel_next_tick(&w->wheel);
		if (next_tick != UINT64_MAX) {
			uint64_t due = next_tick * RM_TICK_MS;
			uint64_t until = due > w->now_ms ? due - w->now_ms : 0;

			if (until < wait_ms)
				wait_ms = until;
		}
		if (w->stopping && w->stop_deadline_ms > w->now_ms &&
		    w->stop_deadline_ms - w->now_ms < wait_ms)
			wait_ms = w->stop_deadline_ms - w->now_ms;
		ts.tv_sec = (long long)(wait_ms / 1000);
		ts.tv_nsec = (long long)(wait_ms % 1000) * 1000000;
		if (wait_ms == 0)
			io_uring_submit_and_get_events(&w->ring);
		else
			io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
		atomic_fetch_add_explicit(&w->stats.loop_iterations, 1, memory_order_relaxed);

		/* Copy first, dispatch after: a callback never runs inside reaping. */
		io_uring_for_each_cqe(&w->ring, head, cqe) {
			if (n == RM_CQE_BATCH)
				break;
			batch[n].user_data = cqe->user_data;
			batch[n].res = cqe->res;
			batch[n].flags = cqe->flags;
			n++;
		}
		io_uring_cq_advance(&w->ring, n);
		w->now_ms = rm_now_ms();
		for (unsigned i = 0; i < n; i++)
			dispatch(w, batch[i].user_data, batch[i].res, batch[i].flags);
	}
}

/* ---- set-up -------------------------------------------------------------------------------------- */

static void *map_zeroed(size_t size, const char *what, unsigned worker)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		rm_fatal("worker %u: cannot map %zu bytes for %s: %s", worker, size, what, strerror(errno));
	return p;
}

int rm_ring_init(struct io_uring *ring, unsigned entries, char *why, size_t why_size)
{
	struct io_uring_params p;
	int ret;

	/* Newest flags first; each fallback is for an older kernel. */
	static const uint32_t flag_sets[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE,
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE,
		IORING_SETUP_CQSIZE,
	};
	ret = -EINVAL;
	for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
		memset(&p, 0, sizeof(p));
		p.flags = flag_sets[i];
		p.cq_entries = entries * 4;
		ret = io_uring_queue_init_params(entries, ring, &p);
		if (ret != -EINVAL)
			break;
	}
	if (ret < 0 && why != NULL)
		snprintf(why, why_size, "io_uring_setup: %s", strerror(-ret));
	return ret;
}

static void setup_buffers(struct rm_worker *w)
{
	struct io_uring_buf_reg reg;
	struct io_uring_buf_ring *ring;
	uint8_t *base;
	uint16_t *refs, *spare;
	int ret;

	ring = map_zeroed((size_t)w->buf_count * sizeof(struct io_uring_buf), "buffer ring", w->index);
	base = map_zeroed((size_t)w->buf_count * w->buf_size, "receive buffers", w->index);
	refs = map_zeroed((size_t)w->buf_count * sizeof(uint16_t), "buffer references", w->index);
	spare = map_zeroed((size_t)w->buf_count * sizeof(uint16_t), "spare buffer stack", w->index);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)ring;
	reg.ring_entries = w->buf_count;
	reg.bgid = RM_BUF_GROUP;
	ret = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (ret < 0)
		rm_fatal("worker %u: io_uring_register_buf_ring: %s (kernel 5.19 or later needed)",
			 w->index, strerror(-ret));
	rm_bufring_init_window(&w->bufs, ring, base, refs, spare, w->buf_count, w->buf_size,
			       w->buf_count < w->cfg->limits.buffers_ring_window ? w->buf_count
			       : w->cfg->limits.buffers_ring_window);
	atomic_store_explicit(&w->stats.buffers_free, w->bufs.free, memory_order_relaxed);
}

static void setup_pools(struct rm_worker *w)
{
	const struct rm_limits *lim = &w->cfg->limits;

	/*
	 * Everything is reserved now and bounded by the configuration, but pages
	 * are touched only as entries are first used: free lists start empty and
	 * the *_fresh counters hand out never-used entries.  Idle capacity then
	 * costs address space, not memory.
	 */
	w->conn_count = lim->connections_per_worker;
	w->conns = map_zeroed((size_t)w->conn_count * sizeof(struct rm_conn), "connection slots", w->index);
	w->free_stack = map_zeroed((size_t)w->conn_count * sizeof(uint32_t), "slot stack", w->index);
	w->send_ctxs = map_zeroed((size_t)w->conn_count * sizeof(struct rm_send_ctx), "send contexts", w->index);

	/* Chunks: every output piece and every held input piece.  Enough for all
	 * blocks and all buffers to be in use at once, plus a few per connection. */
	w->chunk_count = lim->write_blocks_per_worker + w->bufs.count * 2 + w->conn_count;
	w->chunks = map_zeroed((size_t)w->chunk_count * sizeof(struct rm_chunk), "chunks", w->index);
	w->chunks_free = w->chunk_count;

	w->block_count = lim->write_blocks_per_worker;
	w->blocks = map_zeroed((size_t)w->block_count * RM_WRITE_BLOCK_BYTES, "write blocks", w->index);
	w->block_free = map_zeroed((size_t)w->block_count * sizeof(uint32_t), "block stack", w->index);
	w->file_ops = map_zeroed((size_t)RM_FILE_OPS_MAX * sizeof(struct rm_file_op), "file operations", w->index);
	atomic_store_explicit(&w->stats.write_blocks_free, blocks_available(w), memory_order_relaxed);
}

static void *worker_main(void *arg)
{
	struct rm_worker *w = arg;
	char why[256];
	int ret;

	if (w->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
			rm_warn(0, "worker %u: cannot pin to CPU %d", w->index, w->cpu);
	}
	/* The ring is made on the thread that will submit (SINGLE_ISSUER). */
	ret = rm_ring_init(&w->ring, RM_RING_ENTRIES, why, sizeof(why));
	if (ret < 0)
		rm_fatal("worker %u: %s", w->index, why);
	setup_buffers(w);
	setup_pools(w);
	w->deferred.link = offsetof(struct rm_conn, next_deferred);
	w->starved.link = offsetof(struct rm_conn, next_starved);
	w->pool_wait.link = offsetof(struct rm_conn, next_pool_wait);
	rm_wheel_init(&w->wheel, rm_now_ms() / RM_TICK_MS);
	w->now_ms = rm_now_ms();
	arm_wake(w);
	for (unsigned li = 0; li < w->listener_count; li++)
		arm_accept(w, li);
	if (w->daemon->hooks.worker_start != NULL)
		w->daemon->hooks.worker_start(w, w->daemon->hooks.arg);
	worker_loop(w);
	io_uring_queue_exit(&w->ring);
	atomic_store_explicit(&w->exited, 1, memory_order_release);
	return NULL;
}

int rm_worker_spawn(struct rm_worker *w)
{
	return -pthread_create(&w->thread, NULL, worker_main, w);
}

void rm_worker_wake(struct rm_worker *w)
{
	uint64_t one = 1;

	if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		rm_warn(0, "wake worker %u: %s", w->index, strerror(errno));
}

const struct rm_config *rm_worker_config(const struct rm_worker *w) { return w->cfg; }
unsigned rm_worker_index(const struct rm_worker *w) { return w->index; }
uint64_t rm_worker_now_ms(const struct rm_worker *w) { return w->now_ms; }
bool rm_worker_stopping(const struct rm_worker *w) { return w->stopping; }
const struct rm_worker_stats *rm_worker_stats(const struct rm_worker *w) { return &w->stats; }
void *rm_worker_user(const struct rm_worker *w) { return w->user; }
void rm_worker_set_user(struct rm_worker *w, void *user) { w->user = user; }
