/*
 * NAME
 *	authpool - threads that verify passwords away from the io_uring workers
 * SUMMARY
 *	#include "core/authpool.h"
 *
 *	int rm_authpool_start(unsigned threads, unsigned queue_max);
 *	void rm_authpool_stop(void);
 *	int rm_authpool_submit(struct rm_auth_request *req);
 *	void rm_authpool_set_poster(rm_authpool_post_fn post);
 * DESCRIPTION
 *	crypt is slow on purpose (yescrypt at libxcrypt's default cost: tens
 *	of milliseconds and 16 MiB), and a worker that ran it would stall
 *	every connection it owns for that long.  So a session hands the
 *	verification to this pool and goes on; the answer comes back to the
 *	session's own worker through its mailbox (core/engine.h
 *	rm_worker_post), where done runs like any other posted call.  One pool
 *	per process (the functions take no handle); the daemon starts it
 *	before the workers and stops it before it stops them.
 *
 *	The request is the caller's memory (a session embeds one), filled
 *	before rm_authpool_submit: worker (where done must run), table (a
 *	password table the caller holds a reference to during the call), user
 *	and user_len (at most RM_PASSWD_USER_BYTES_MAX), pass and pass_len (at
 *	most RM_PASSWD_PASS_BYTES_MAX; SASL's limits), done, orphan (may be
 *	NULL) and arg (the caller's, untouched).  From a successful submit
 *	until done or orphan is called, the request belongs to the pool: the
 *	caller must neither change nor free it, even if its connection closes
 *	meanwhile (the session then frees it in done, which finds the
 *	connection gone).
 *
 *	Submit takes a reference to req->table, so the daemon may swap tables
 *	at SIGHUP (core/passwd.h) while requests wait: each is checked
 *	against the table it was submitted with; the pool drops the reference
 *	when the verification is over.  Requests are started in submission
 *	order (FIFO); with more than one thread they may finish out of order.
 *	At most queue_max requests wait (those being verified not counted);
 *	past that submit says -EAGAIN and the session answers 454 4.7.0
 *	("Temporary authentication failure").
 *
 *	When the verification is over, the pool writes the result (ok, and
 *	err = 0), wipes req->pass (explicit_bzero, pass_len = 0) and posts a
 *	call to req->worker that runs req->done(worker, req) there.  A full
 *	mailbox (-EAGAIN) is retried every RM_AUTHPOOL_POST_RETRY_US (1 ms)
 *	up to RM_AUTHPOOL_POST_TRIES (1000) times, a second in all: a worker
 *	that drains nothing for that long is stuck, and a pool thread must
 *	not wait on it forever.  When the post fails for good (the worker has
 *	left its loop: -ESHUTDOWN; or the retries ran out) done will never
 *	run; the pool then stores the post's error in req->post_err and calls
 *	req->orphan(req) on its own thread, whose one job is to free what the
 *	request holds (it must touch nothing of the worker's).  Without an
 *	orphan the request is simply given up, which leaks it: acceptable only
 *	for memory that dies with the process.
 *
 *	rm_authpool_stop makes submit say -ESHUTDOWN, lets each thread finish
 *	the verification it is running (its answer is posted as usual), joins
 *	the threads, and then answers every request still waiting with
 *	ok = false, err = -ESHUTDOWN (its password wiped, its table reference
 *	dropped) the same way, through done or orphan, from the calling
 *	thread.  It returns when every request has been answered; the pool may
 *	then be started again.  Workers must still be running for done to be
 *	posted to them; after they have left, every answer is an orphan.
 *
 *	rm_authpool_set_poster replaces rm_worker_post with post (NULL: back
 *	to rm_worker_post), with the same contract; it is for tests, which
 *	then need no io_uring workers.  Set it while the pool is stopped.
 * DIAGNOSTICS
 *	rm_authpool_start returns 0; -EINVAL for threads not in 1 ..
 *	RM_AUTHPOOL_THREADS_MAX or queue_max not in 1 .. RM_AUTHPOOL_QUEUE_MAX;
 *	-EALREADY if the pool runs; pthread_create's error (as a negative
 *	errno) if a thread could not be started, and then none runs.
 *	rm_authpool_submit returns 0; -EINVAL for a request without worker,
 *	table or done, or with a length past its limit; -EAGAIN for a full
 *	queue; -ESHUTDOWN when the pool is not running.  On an error nothing
 *	of req was touched and the caller still owns it (and its password,
 *	which it must wipe).
 */
#ifndef RM_AUTHPOOL_H
#define RM_AUTHPOOL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/engine.h"
#include "core/passwd.h"

#define RM_AUTHPOOL_THREADS_MAX 64u
#define RM_AUTHPOOL_QUEUE_MAX 65536u
#define RM_AUTHPOOL_POST_TRIES 1000u
#define RM_AUTHPOOL_POST_RETRY_US 1000u

struct rm_auth_request {
	/* Filled by the caller. */
	struct rm_worker *worker;
	struct rm_passwd *table;
	char user[RM_PASSWD_USER_BYTES_MAX + 1];
	size_t user_len;
	char pass[RM_PASSWD_PASS_BYTES_MAX];
	size_t pass_len;
	void (*done)(struct rm_worker *w, struct rm_auth_request *req);	/* on worker */
	void (*orphan)(struct rm_auth_request *req);	/* on a pool thread; may be NULL */
	void *arg;
	/* Written by the pool before done or orphan. */
	bool ok;		/* the password matches the user's hash */
	int err;		/* 0: verified (ok says how); -ESHUTDOWN: the pool stopped first */
	int post_err;		/* for orphan: why done could not be posted */
	/* The pool's. */
	struct rm_auth_request *next;
};

typedef int (*rm_authpool_post_fn)(struct rm_worker *to, rm_worker_fn fn, void *arg);

int rm_authpool_start(unsigned threads, unsigned queue_max);
void rm_authpool_stop(void);
int rm_authpool_submit(struct rm_auth_request *req);
void rm_authpool_set_poster(rm_authpool_post_fn post);

#endif
