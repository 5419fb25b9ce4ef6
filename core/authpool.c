/*
 * NAME
 *	authpool - threads that verify passwords away from the io_uring workers
 * SUMMARY
 *	See core/authpool.h for the interface.
 * DESCRIPTION
 *	One mutex and one condition variable guard a FIFO of waiting requests
 *	(linked through req->next, so the queue needs no memory of its own) and
 *	the pool's state.  A thread takes the head, verifies it outside the
 *	lock, posts the answer outside the lock, and comes back; it leaves
 *	when it finds the pool stopping, without taking more.  The requests
 *	still queued then are answered by rm_authpool_stop itself once every
 *	thread has been joined, so nothing can race with that drain.
 *
 *	Start and stop are serialised by a second mutex, held for their whole
 *	run (stop joins threads; the queue lock must not be held for that).
 *
 *	The threads are created with every signal blocked: ringmaild's main
 *	thread takes its signals with sigtimedwait, which needs every other
 *	thread to leave them alone.
 * DIAGNOSTICS
 *	See the header.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "core/authpool.h"
#include "core/log.h"

static struct {
	pthread_mutex_t ctl;		/* start and stop, one at a time */
	pthread_mutex_t lock;		/* everything below */
	pthread_cond_t cond;		/* work queued, or stopping */
	bool running;			/* submit accepts */
	bool stopping;			/* threads leave */
	unsigned threads;
	unsigned queue_max;
	unsigned queued;
	struct rm_auth_request *head, *tail;
	pthread_t tid[RM_AUTHPOOL_THREADS_MAX];
} pool = {
	.ctl = PTHREAD_MUTEX_INITIALIZER,
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
};

static _Atomic(rm_authpool_post_fn) poster;

void rm_authpool_set_poster(rm_authpool_post_fn post)
{
	atomic_store(&poster, post);
}

/* On req->worker: the caller's done. */
static void run_done(struct rm_worker *w, void *arg)
{
	struct rm_auth_request *req = arg;

	req->done(w, req);
}

/* Hand the answer to req->worker, or to req->orphan if that cannot be. */
static void deliver(struct rm_auth_request *req)
{
	rm_authpool_post_fn post = atomic_load(&poster);
	const struct timespec pause = { 0, (long)RM_AUTHPOOL_POST_RETRY_US * 1000 };
	int rc = -EAGAIN;

	if (post == NULL)
		post = rm_worker_post;
	req->post_err = 0;
	for (unsigned tries = 0; tries < RM_AUTHPOOL_POST_TRIES; tries++) {
		if (tries > 0)
			nanosleep(&pause, NULL);
		rc = post(req->worker, run_done, req);
		/* Posted: req is the worker's now (done may already have freed it). */
		if (rc == 0)
			return;
		if (rc != -EAGAIN)
			break;
	}
	req->post_err = rc;
	if (req->orphan != NULL)
		req->orphan(req);
}

/* The answer is written: the password and the table reference are not needed any more. */
static void finish(struct rm_auth_request *req, bool ok, int err)
{
	req->ok = ok;
	req->err = err;
	explicit_bzero(req->pass, sizeof(req->pass));
	req->pass_len = 0;
	rm_passwd_unref(req->table);
	deliver(req);
}

static void *thread_main(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&pool.lock);
	for (;;) {
		struct rm_auth_request *req;
		bool ok;

		while (!pool.stopping && pool.head == NULL)
			pthread_cond_wait(&pool.cond, &pool.lock);
		if (pool.stopping)
			break;
		req = pool.head;
		pool.head = req->next;
		if (pool.head == NULL)
			pool.tail = NULL;
		pool.queued--;
		pthread_mutex_unlock(&pool.lock);

		ok = rm_passwd_verify(req->table, req->user, req->user_len, req->pass,
				      req->pass_len);
		finish(req, ok, 0);

		pthread_mutex_lock(&pool.lock);
	}
	pthread_mutex_unlock(&pool.lock);
	return NULL;
}

/* Called with ctl held and the pool marked stopping: wake, join, and forget the threads. */
static void join_threads(void)
{
	pthread_cond_broadcast(&pool.cond);
	for (unsigned i = 0; i < pool.threads; i++)
		pthread_join(pool.tid[i], NULL);
	pool.threads = 0;
}

int rm_authpool_start(unsigned threads, unsigned queue_max)
{
	sigset_t all, old;
	int rc = 0;

	if (threads == 0 || threads > RM_AUTHPOOL_THREADS_MAX || queue_max == 0 ||
	    queue_max > RM_AUTHPOOL_QUEUE_MAX)
		return -EINVAL;
	pthread_mutex_lock(&pool.ctl);
	if (pool.running) {
		pthread_mutex_unlock(&pool.ctl);
		return -EALREADY;
	}
	pthread_mutex_lock(&pool.lock);
	pool.stopping = false;
	pool.queue_max = queue_max;
	pool.queued = 0;
	pool.head = pool.tail = NULL;
	pthread_mutex_unlock(&pool.lock);

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < threads; i++) {
		rc = -pthread_create(&pool.tid[i], NULL, thread_main, NULL);
		if (rc != 0)
			break;
		pthread_setname_np(pool.tid[i], "rm-auth");
		pool.threads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	pthread_mutex_lock(&pool.lock);
	if (rc != 0)
		pool.stopping = true;
	else
		pool.running = true;
	pthread_mutex_unlock(&pool.lock);
	if (rc != 0)
		join_threads();
	pthread_mutex_unlock(&pool.ctl);
	return rc;
}

void rm_authpool_stop(void)
{
	struct rm_auth_request *req;
	unsigned left;

	pthread_mutex_lock(&pool.ctl);
	pthread_mutex_lock(&pool.lock);
	if (!pool.running) {
		pthread_mutex_unlock(&pool.lock);
		pthread_mutex_unlock(&pool.ctl);
		return;
	}
	pool.running = false;
	pool.stopping = true;
	pthread_mutex_unlock(&pool.lock);
	join_threads();

	/* No thread left and submit refuses: the queue is ours alone. */
	pthread_mutex_lock(&pool.lock);
	req = pool.head;
	left = pool.queued;
	pool.head = pool.tail = NULL;
	pool.queued = 0;
	pthread_mutex_unlock(&pool.lock);
	for (; req != NULL; left--) {
		struct rm_auth_request *next = req->next;

		RM_ASSERT(left > 0);
		finish(req, false, -ESHUTDOWN);
		req = next;
	}
	RM_ASSERT(left == 0);
	pthread_mutex_unlock(&pool.ctl);
}

int rm_authpool_submit(struct rm_auth_request *req)
{
	if (req->worker == NULL || req->table == NULL || req->done == NULL ||
	    req->user_len > RM_PASSWD_USER_BYTES_MAX || req->pass_len > RM_PASSWD_PASS_BYTES_MAX)
		return -EINVAL;
	pthread_mutex_lock(&pool.lock);
	if (!pool.running) {
		pthread_mutex_unlock(&pool.lock);
		return -ESHUTDOWN;
	}
	if (pool.queued >= pool.queue_max) {
		pthread_mutex_unlock(&pool.lock);
		return -EAGAIN;
	}
	rm_passwd_ref(req->table);
	req->next = NULL;
	if (pool.tail != NULL)
		pool.tail->next = req;
	else
		pool.head = req;
	pool.tail = req;
	pool.queued++;
	pthread_cond_signal(&pool.cond);
	pthread_mutex_unlock(&pool.lock);
	return 0;
}
