/*
 * NAME
 *	engine_impl - the worker structure, shared by engine.c and daemon.c only
 * DESCRIPTION
 *	Sessions never include this: they see struct rm_worker as opaque and use
 *	the functions of engine.h.
 */
#ifndef RM_ENGINE_IMPL_H
#define RM_ENGINE_IMPL_H

#include <pthread.h>
#include <liburing.h>
#include <netinet/tcp.h>

#include "core/bufring.h"
#include "core/engine.h"

#define RM_RING_ENTRIES 4096
#define RM_BUF_GROUP 0
#define RM_WRITE_BLOCK_BYTES 4096

/* A posted call (rm_worker_post). */
struct rm_mail {
	rm_worker_fn fn;
	void *arg;
};

/* An intrusive FIFO of connections; link is the offset of its next pointer. */
struct rm_conn_fifo {
	struct rm_conn *head, *tail;
	size_t link;
};

struct rm_worker {
	struct rm_daemon *daemon;
	unsigned index;
	int cpu;			/* pinned CPU, -1 = none */
	pthread_t thread;
	struct io_uring ring;
	const struct rm_config *cfg;	/* the generation this worker applied */
	uint32_t config_generation;
	_Atomic uint32_t config_acked;
	_Atomic int exited;
	int wake_fd;			/* eventfd: stop, reload and mailbox */
	bool wake_pending;

	/* mailbox: the only field other threads write; all under mailbox_lock */
	pthread_mutex_t mailbox_lock;
	struct rm_mail mailbox[RM_MAILBOX_MAX];
	uint32_t mailbox_head, mailbox_count;
	bool mailbox_closed;		/* the loop has ended: posts say -ESHUTDOWN */

	/* listening sockets of this worker (SO_REUSEPORT copies) */
	unsigned listener_count;
	int listen_fd[RM_LISTENERS_MAX + 1];
	bool accept_armed[RM_LISTENERS_MAX + 1];
	int listener_cfg_index[RM_LISTENERS_MAX + 1];	/* -2 = control socket */
	const struct rm_session_ops *listener_ops[RM_LISTENERS_MAX + 1];
	char listener_name[RM_LISTENERS_MAX + 1][RM_NAME_MAX];	/* copies: configs are freed on reload */

	/* provided receive buffers */
	struct rm_bufring bufs;
	uint32_t buf_count, buf_size;	/* from the config at start */

	/* connection slots */
	struct rm_conn *conns;
	uint32_t conn_count;
	uint32_t *free_stack;
	uint32_t free_top;
	uint32_t conns_fresh;		/* slots never used yet: [conns_fresh, conn_count) */
	uint32_t open_count;
	uint64_t conn_seq;

	/* output pools */
	struct rm_chunk *chunks, *chunk_free;
	uint32_t chunk_count, chunks_free, chunks_fresh;
	uint8_t *blocks;
	uint32_t *block_free;
	uint32_t block_count, block_free_top, blocks_fresh;
	struct rm_send_ctx *send_ctxs, *send_free;
	uint32_t send_fresh;

	/* lists of connections, each threaded through its own link in rm_conn */
	struct rm_conn_fifo deferred;	/* work to run after this dispatch round */
	struct rm_conn_fifo starved;	/* multishot recv ended with ENOBUFS */
	struct rm_conn_fifo pool_wait;	/* input held while the pools were short */
	uint64_t pool_gen;		/* bumped whenever a chunk or block is freed */
	uint64_t pool_gen_resumed;	/* pool_gen at the last re-offer to pool waiters */

	struct rm_file_op *file_ops;	/* RM_FILE_OPS_MAX, touched on first use */
	struct rm_file_op *file_free;
	uint32_t file_fresh, file_in_flight;

	struct rm_wheel wheel;
	uint64_t now_ms;
	uint64_t refused_logged_ms;
	bool stopping;
	uint64_t stop_deadline_ms;
	void *user;			/* for the worker_start hook's own state */
	struct rm_worker_stats stats;
};

int rm_ring_init(struct io_uring *ring, unsigned entries, char *why, size_t why_size);
/* The worker's eventfd and mailbox: before it is published in d->workers,
 * so that anyone who sees it may wake it and post to it. */
int rm_worker_prepare(struct rm_worker *w);
int rm_worker_spawn(struct rm_worker *w);
void rm_worker_wake(struct rm_worker *w);
/* Undo rm_worker_prepare, once every worker is joined. */
void rm_worker_teardown(struct rm_worker *w);

#endif
