/*
 * NAME
 *	engine - thread-per-core io_uring runtime: workers, connections, buffers, timers
 * SUMMARY
 *	#include "core/engine.h"
 * DESCRIPTION
 *	One worker per core, each pinned, each with its own ring, its own
 *	SO_REUSEPORT listening sockets (multishot accept), its own provided-buffer
 *	ring (multishot recv), a preallocated array of connection slots, pools of
 *	output chunks and write blocks, and one timer wheel.  Connections never move
 *	between workers; nothing is shared between workers but the read-only
 *	configuration, relaxed statistics counters and each worker's mailbox
 *	(rm_worker_post, below), through which work for a worker is handed to it.
 *
 *	The engine knows no protocol.  A protocol plugs in through struct
 *	rm_session_ops; every callback runs on the connection's worker thread, from
 *	the loop's dispatch of already reaped completions (never from inside
 *	reaping, never recursively from another callback of the same connection):
 *
 *	on_open(c)        a connection was accepted (rm_conn_listener(c) says on
 *	                  which listener); outbound connections get on_connect;
 *	on_data(c, rx)    bytes arrived in a provided buffer.  Return how many bytes
 *	                  were consumed.  Anything not consumed is held (the buffer
 *	                  stays out of the ring), receiving pauses, and the rest is
 *	                  offered again after output drains (on_writable time) or
 *	                  after rm_conn_resume.  This is the back-pressure path:
 *	                  a session that cannot queue its reply does not consume.
 *	on_writable(c)    queued output fell to zero after a write was refused or
 *	                  input was held;
 *	on_timeout(c)     the connection's timer expired (rm_conn_timer);
 *	on_eof(c)         the peer closed its sending side (after all data);
 *	on_shutdown(c)    the daemon is stopping: finish soon (the engine closes
 *	                  what is left at the shutdown deadline);
 *	on_close(c, err)  the connection is gone (err: 0, or a negative errno);
 *	                  last callback; c->session must be released here;
 *	on_connect(c,err) outbound connect finished (err 0, or -errno / -ETIMEDOUT).
 *
 *	Output is always in order: rm_conn_write copies into pooled 4 KiB write
 *	blocks; rm_conn_send_rx queues a received buffer by reference (zero copy,
 *	for the proxy's client<->backend relay and echo); rm_conn_send_static queues
 *	memory the caller keeps alive.  One send is in flight per connection.
 *
 *	Received buffers: rx->bid names a provided buffer.  It returns to the ring
 *	when every reference (the engine's own while on_data runs or input is held,
 *	and one per queued send) is gone.  When the ring runs dry, multishot recv
 *	ends with ENOBUFS: the connection waits on a starved list and is re-armed
 *	as buffers come back (back-pressure, not an error).
 */
#ifndef RM_ENGINE_H
#define RM_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/config.h"
#include "core/timerwheel.h"

struct rm_worker;
struct rm_conn;
struct rm_daemon;

struct rm_rx {
	const uint8_t *data;
	size_t len;
	uint16_t bid;		/* provided buffer holding data, or RM_RX_NO_BUFFER */
};
/* Held input that the engine moved out of the ring (see engine.c, hold_copy):
 * rm_conn_send_rx copies it instead of taking a reference. */
#define RM_RX_NO_BUFFER UINT16_MAX

struct rm_session_ops {
	const char *protocol;
	void (*on_open)(struct rm_conn *c);
	size_t (*on_data)(struct rm_conn *c, const struct rm_rx *rx);
	void (*on_writable)(struct rm_conn *c);
	void (*on_timeout)(struct rm_conn *c);
	void (*on_eof)(struct rm_conn *c);
	void (*on_shutdown)(struct rm_conn *c);
	void (*on_close)(struct rm_conn *c, int err);
	void (*on_connect)(struct rm_conn *c, int err);
};

/* A protocol as the daemon knows it: its ops and what it needs per listener. */
struct rm_protocol {
	const char *name;
	const struct rm_session_ops *ops;
};


/* Per-worker counters; written by the worker, read by anyone (relaxed). */
struct rm_worker_stats {
	_Atomic uint64_t accepted;
	_Atomic uint64_t connected;
	_Atomic uint64_t closed;
	_Atomic uint64_t open;
	_Atomic uint64_t accept_refused;	/* no free slot */
	_Atomic uint64_t recv_bytes;
	_Atomic uint64_t sent_bytes;
	_Atomic uint64_t recv_enobufs;		/* multishot recv ended for lack of buffers */
	_Atomic uint64_t recv_paused;		/* input held for back-pressure */
	_Atomic uint64_t held_copied;		/* held input moved out of a low ring */
	_Atomic uint64_t timeouts;
	_Atomic uint64_t buffers_free;
	_Atomic uint64_t write_blocks_free;
	_Atomic uint64_t loop_iterations;
};

enum rm_conn_state {
	RM_CONN_FREE = 0,
	RM_CONN_CONNECTING,
	RM_CONN_OPEN,
	RM_CONN_CLOSING,	/* flushing output, then close */
	RM_CONN_DEAD,		/* shut down; waiting for in-flight operations */
};

struct rm_chunk;
struct rm_send_ctx;

union rm_sockaddr {
	struct sockaddr sa;
	struct sockaddr_in in4;
	struct sockaddr_in6 in6;
};

/*
 * A transport under a connection (tls/ is the one there is): the engine hands
 * it the bytes received instead of the session, and the session's output
 * instead of the socket.  It hands the session what it decodes by calling
 * c->ops->on_data itself (a piece that is not wholly taken it keeps, and says
 * so with rm_conn_transport_held), and queues what it encodes with
 * rm_conn_write_raw.  Every hook runs on the connection's worker, from the
 * loop, like a session callback.
 *	on_rx        bytes arrived: return how many it took (the rest is held, as
 *	             with on_data); rx->bid may be RM_RX_NO_BUFFER;
 *	write        the session queues output (rm_conn_write, _send_rx,
 *	             _send_static): 0, or -ENOBUFS as rm_conn_write says it;
 *	output_room  what the session may queue, given the raw room;
 *	on_resume    the session may take input again: offer what it kept;
 *	on_timeout   the connection timer fired: true if it was the transport's
 *	             (a handshake deadline), false to pass it to the session;
 *	on_closing   rm_conn_close was called: queue the transport's goodbye
 *	             (TLS close_notify) before the queued output drains;
 *	on_close     the connection is gone (after the session's on_close).
 */
struct rm_transport_ops {
	size_t (*on_rx)(struct rm_conn *c, const struct rm_rx *rx);
	int (*write)(struct rm_conn *c, const void *data, size_t len);
	size_t (*output_room)(const struct rm_conn *c, size_t raw_room);
	void (*on_resume)(struct rm_conn *c);
	bool (*on_timeout)(struct rm_conn *c);
	void (*on_closing)(struct rm_conn *c);
	void (*on_close)(struct rm_conn *c);
};

struct rm_conn {
	uint64_t id;			/* unique in the process; repeated in every log line */
	struct rm_worker *worker;
	const struct rm_session_ops *ops;
	void *session;			/* the protocol's state */
	struct rm_timer timer;
	union rm_sockaddr peer;
	socklen_t peer_len;
	int fd;
	uint32_t index;			/* slot index in the worker */
	uint32_t generation;		/* bumped at every reuse, checked on completions */
	int16_t listener_index;		/* -1 outbound, -2 control socket */
	uint8_t state;			/* enum rm_conn_state */
	uint8_t inflight;		/* operations in the kernel */
	uint32_t flags;			/* RM_CF_* in engine.c */
	int close_err;
	uint64_t opened_ms;
	uint64_t bytes_in, bytes_out;	/* for the close log line */
	uint32_t out_bytes;		/* queued output, sent or not yet acknowledged */
	uint32_t out_offset;		/* bytes of out_head already sent */
	struct rm_chunk *out_head, *out_tail;
	struct rm_chunk *held_head, *held_tail;	/* input not yet consumed */
	struct rm_conn *next_starved;	/* on the worker's ENOBUFS list */
	struct rm_conn *next_deferred;	/* on the worker's run-after-dispatch list */
	struct rm_conn *next_pool_wait;	/* input held while the worker's pools were short */
	struct rm_send_ctx *send_ctx;	/* while a send is in flight */
	const struct rm_transport_ops *transport;	/* NULL: plain bytes */
	void *transport_state;
};

/* Connection API (call only from the connection's worker). */
int rm_conn_write(struct rm_conn *c, const void *data, size_t len);
int rm_conn_send_rx(struct rm_conn *c, const struct rm_rx *rx, size_t offset, size_t len);
int rm_conn_send_static(struct rm_conn *c, const void *data, size_t len);
size_t rm_conn_output_room(const struct rm_conn *c);
/* on_writable once queued output has drained, though no write was refused: a
 * producer that stops itself below some room (streaming a file) resumes then. */
void rm_conn_want_writable(struct rm_conn *c);
void rm_conn_close(struct rm_conn *c);		/* after queued output is sent */
void rm_conn_abort(struct rm_conn *c, int err);	/* now, output dropped */
void rm_conn_resume(struct rm_conn *c);		/* re-offer held input */
void rm_conn_shutdown_write(struct rm_conn *c);	/* FIN after queued output; reading goes on */
void rm_conn_timer(struct rm_conn *c, uint32_t timeout_ms);	/* 0 = cancel */
/* The listener this connection came in on, from the current config; NULL if outbound. */
const struct rm_listener_config *rm_conn_listener(const struct rm_conn *c);
const char *rm_conn_peer_str(const struct rm_conn *c, char *buf, size_t size);
/* The listener's idle_timeout_ms, else limits.idle_timeout_ms (outbound: the latter). */
uint32_t rm_conn_idle_timeout_ms(const struct rm_conn *c);

/* Transports (see struct rm_transport_ops). */
void rm_conn_set_transport(struct rm_conn *c, const struct rm_transport_ops *t, void *state);
int rm_conn_write_raw(struct rm_conn *c, const void *data, size_t len);
size_t rm_conn_output_room_raw(const struct rm_conn *c);
void rm_conn_transport_held(struct rm_conn *c, bool held);	/* it keeps input the session has not taken */
/* Drop every received byte not yet offered (STARTTLS: nothing sent before the
 * handshake may be read after it). */
void rm_conn_discard_input(struct rm_conn *c);
/* An accepted connection whose transport deferred the session's on_open
 * (implicit TLS: after the handshake) opens it now. */
void rm_conn_open_session(struct rm_conn *c);
bool rm_worker_stopping(const struct rm_worker *w);

struct rm_connect_options {
	const struct sockaddr *dest;
	socklen_t dest_len;
	const struct sockaddr *source;	/* NULL = any */
	socklen_t source_len;
	uint32_t timeout_ms;		/* 0 = limits.connect_timeout_ms */
};
/* Start an outbound connection; ops->on_connect reports the result. */
struct rm_conn *rm_conn_connect(struct rm_worker *w, const struct rm_connect_options *opt,
				const struct rm_session_ops *ops, void *session, int *err);

/*
 * Worker timers: for work that belongs to no connection (the spool's commit
 * interval, the queue manager's next due message, a load tool's pacing).
 * Same wheel as connection timers; fire(w, arg) runs from the loop.
 */
struct rm_worker_timer {
	struct rm_timer timer;
	void (*fire)(struct rm_worker *w, void *arg);
	void *arg;
};
void rm_worker_timer_set(struct rm_worker *w, struct rm_worker_timer *t, uint32_t timeout_ms);
void rm_worker_timer_cancel(struct rm_worker *w, struct rm_worker_timer *t);

/*
 * File operations through the worker's ring (the spool's appends and
 * fdatasync).  done(arg, res) runs from the loop with the kernel's result
 * (bytes written, 0, or -errno).  The iovec array is copied (at most
 * RM_FILE_IOV_MAX entries); the bytes it points to must stay put until done.
 * link = true chains the next file operation of this worker after this one
 * (IOSQE_IO_LINK: a write then its fdatasync, in order, in one submission).
 * Returns 0, or -EBUSY when all RM_FILE_OPS_MAX operations are in flight
 * (nothing queued; the caller retries from a later completion).
 */
#define RM_FILE_IOV_MAX 64
#define RM_FILE_OPS_MAX 1024
struct iovec;
typedef void (*rm_file_done_fn)(void *arg, int res);
int rm_file_writev(struct rm_worker *w, int fd, const struct iovec *iov, unsigned iov_count,
		   uint64_t offset, bool link, rm_file_done_fn done, void *arg);
int rm_file_fdatasync(struct rm_worker *w, int fd, bool link, rm_file_done_fn done, void *arg);
unsigned rm_file_ops_in_flight(const struct rm_worker *w);

/*
 * Readiness of a file descriptor the engine does not own (the resolver's
 * sockets), through the worker's ring: one shot, done(arg, res) from the
 * loop with the poll(2) revents (> 0) or -errno (-ECANCELED after
 * rm_worker_poll_cancel, which is only a request: done still comes, and the
 * handle is valid until then).  Shares the file operations' slots; returns a
 * handle >= 0, or -EBUSY.  A stopping worker does not wait for polls.
 */
int rm_worker_poll(struct rm_worker *w, int fd, unsigned events, rm_file_done_fn done, void *arg);
void rm_worker_poll_cancel(struct rm_worker *w, int handle);

/*
 * Worker mailbox: the one way to hand work to another worker (or to a worker
 * from a thread that is none, or to one's own worker for "later").  Workers
 * share nothing, so whatever must happen on worker N (its spool, its queue,
 * its connections) is posted there as fn(w, arg) and runs on N's thread,
 * from N's loop (never inside reaping, never inside another callback), in
 * the order posted by any one poster.  arg belongs to the poster until fn
 * runs; answering goes the same way back.
 *
 * rm_worker_post is callable from any thread: a mutex-protected ring of
 * RM_MAILBOX_MAX entries per worker, then the worker's eventfd.  Returns 0;
 * -EAGAIN when the mailbox is full, -ESHUTDOWN when the worker has left its
 * loop (it drains its mailbox while stopping and leaves only when the
 * mailbox is empty and nothing else is open).  On an error nothing is
 * queued and fn will never run: the poster still owns arg.  The receiving
 * worker runs at most RM_MAILBOX_MAX per loop iteration; what fn posts runs
 * in a later iteration.
 */
#define RM_MAILBOX_MAX 256
typedef void (*rm_worker_fn)(struct rm_worker *w, void *arg);
int rm_worker_post(struct rm_worker *to, rm_worker_fn fn, void *arg);

/* Worker-level helpers for sessions and tools. */
const struct rm_config *rm_worker_config(const struct rm_worker *w);
unsigned rm_worker_index(const struct rm_worker *w);
uint64_t rm_worker_now_ms(const struct rm_worker *w);

/*
 * The daemon: workers, listeners, signals.  Used by ringmaild and by
 * ringmail-bench (which has no listeners and drives outbound connections from
 * its per-worker start hook).
 */
struct rm_daemon_hooks {
	/* Run on each worker thread once its ring is up, before the loop. */
	void (*worker_start)(struct rm_worker *w, void *arg);
	/* Run in the loop after each dispatch round; return false to stop the worker. */
	bool (*worker_tick)(struct rm_worker *w, void *arg);
	/* Run once when the worker begins to stop (before its sessions' on_shutdown). */
	void (*worker_stopping)(struct rm_worker *w, void *arg);
	void *arg;
};

/*
 * Called for each connection accepted on a listener with tls = "implicit",
 * before on_open: 0 = nothing attached (on_open now), 1 = a transport is
 * attached and will call rm_conn_open_session itself, < 0 = refuse (abort).
 */
typedef int (*rm_transport_attach_fn)(struct rm_conn *c, const struct rm_listener_config *l);

struct rm_daemon {
	_Atomic(struct rm_config *) config_ptr;	/* current; replaced on SIGHUP */
	rm_transport_attach_fn transport_attach;	/* NULL: implicit TLS listeners refuse */
	unsigned worker_count;
	struct rm_worker *workers[RM_WORKERS_MAX];
	int listen_fds[RM_WORKERS_MAX][RM_LISTENERS_MAX];
	int control_fd;				/* Unix socket, served by worker 0 */
	struct rm_daemon_hooks hooks;
	const struct rm_protocol *protocols;	/* table ending in {NULL}; from main */
	const struct rm_session_ops *control_ops;	/* NULL = no control socket */
	_Atomic int stop_requested;
	_Atomic uint32_t config_generation;
	uint64_t started_ms;
};

extern struct rm_daemon *rm_the_daemon;

int rm_probe_io_uring(char *why, size_t why_size);
int rm_daemon_bind(struct rm_daemon *d, char *err, size_t err_size);
int rm_daemon_start(struct rm_daemon *d);
void rm_daemon_request_stop(struct rm_daemon *d);
void rm_daemon_notify_reload(struct rm_daemon *d);
void rm_daemon_join(struct rm_daemon *d);
bool rm_daemon_reload_acked(const struct rm_daemon *d);	/* every worker took the newest config */
bool rm_daemon_all_exited(const struct rm_daemon *d);
void rm_daemon_stats_sum(const struct rm_daemon *d, struct rm_worker_stats *out);
const struct rm_worker_stats *rm_worker_stats(const struct rm_worker *w);
void *rm_worker_user(const struct rm_worker *w);
void rm_worker_set_user(struct rm_worker *w, void *user);

uint64_t rm_now_ms(void);

#endif
