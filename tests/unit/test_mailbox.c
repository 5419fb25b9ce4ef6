/*
 * Tests of the worker mailbox (engine.h rm_worker_post) on a real two-worker
 * rm_daemon with no listeners: calls posted from another worker and from a
 * plain thread arrive in each poster's order and all run on the target
 * worker's own thread; a full mailbox says -EAGAIN and queues nothing; a
 * stopping worker still runs what is posted to it (chains of posts too);
 * a worker that has left its loop says -ESHUTDOWN.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/engine.h"
#include "core/log.h"

#define WORKERS 2
#define PER_SOURCE 1000		/* more than RM_MAILBOX_MAX: posters meet a full mailbox */
#define SOURCES 2		/* worker 1, a plain thread */
#define RETRY_MAX 10000000	/* -EAGAIN retries per post before the test gives up */
#define CHAIN 50

struct scenario {
	pthread_t thread_of[WORKERS];
	_Atomic int started;		/* workers past their start hook */
	/* written on worker 0 only (by the posted calls), read after join */
	uint32_t got[SOURCES];		/* next expected sequence number per source */
	uint32_t out_of_order, wrong_thread, wrong_worker;
	int post_failed;		/* a poster gave up */
	/* the full-mailbox scenario */
	int full_rc, full_accepted, full_ran;
	/* the stopping scenario */
	int chain_ran;
	int chain_post_rc;
};

static struct scenario *sc_now;
static struct rm_daemon *daemon_now;

static void record_thread(struct rm_worker *w)
{
	sc_now->thread_of[rm_worker_index(w)] = pthread_self();
}

/* arg: source in the top bits, sequence number below. */
static void arrive(struct rm_worker *w, void *arg)
{
	struct scenario *sc = sc_now;
	uintptr_t v = (uintptr_t)arg;
	unsigned source = (unsigned)(v >> 20);
	uint32_t seq = (uint32_t)(v & 0xfffff);

	if (rm_worker_index(w) != 0)
		sc->wrong_worker++;
	if (!pthread_equal(pthread_self(), sc->thread_of[0]))
		sc->wrong_thread++;
	if (source >= SOURCES || seq != sc->got[source])
		sc->out_of_order++;
	else
		sc->got[source]++;
	if (sc->got[0] + sc->got[1] == SOURCES * PER_SOURCE)
		rm_daemon_request_stop(daemon_now);
}

/* Post, retrying (bounded) while the target's mailbox is full. */
static int post_retry(struct rm_worker *to, rm_worker_fn fn, void *arg)
{
	int rc = -EAGAIN;

	for (long i = 0; i < RETRY_MAX && rc == -EAGAIN; i++) {
		rc = rm_worker_post(to, fn, arg);
		if (rc == -EAGAIN)
			sched_yield();
	}
	return rc;
}

static void post_all(unsigned source)
{
	struct rm_worker *w0 = daemon_now->workers[0];

	for (uint32_t i = 0; i < PER_SOURCE; i++) {
		if (post_retry(w0, arrive, (void *)(((uintptr_t)source << 20) | i)) != 0) {
			sc_now->post_failed = 1;
			return;
		}
	}
}

/* Both workers record their thread; worker 1 then posts its series to worker 0. */
static void start_order(struct rm_worker *w, void *arg)
{
	record_thread(w);
	atomic_fetch_add(&sc_now->started, 1);
	/* Worker 0's thread id must be known before anything arrives there. */
	for (long i = 0; i < RETRY_MAX && atomic_load(&sc_now->started) < WORKERS; i++)
		sched_yield();
	if (rm_worker_index(w) == 1)
		post_all(0);
}

static void *plain_poster(void *arg)
{
	for (long i = 0; i < RETRY_MAX && atomic_load(&sc_now->started) < WORKERS; i++)
		sched_yield();
	post_all(1);
	return NULL;
}

static struct rm_daemon *daemon_begin(void (*start)(struct rm_worker *, void *), struct scenario *sc)
{
	static struct rm_config cfg;
	struct rm_daemon *d = calloc(1, sizeof(*d));
	char err[256];

	assert_non_null(d);
	rm_config_defaults(&cfg);
	cfg.workers = WORKERS;
	cfg.limits.connections_per_worker = 16;
	cfg.limits.buffers_per_worker = 16;
	cfg.limits.write_blocks_per_worker = 16;
	d->worker_count = WORKERS;
	d->hooks.worker_start = start;
	d->hooks.arg = sc;
	atomic_store(&d->config_ptr, &cfg);
	sc_now = sc;
	daemon_now = d;
	assert_int_equal(rm_daemon_bind(d, err, sizeof(err)), 0);
	assert_int_equal(rm_daemon_start(d), 0);
	return d;
}

static void daemon_end(struct rm_daemon *d)
{
	rm_daemon_join(d);
	for (unsigned i = 0; i < d->worker_count; i++)
		free(d->workers[i]);
	free(d);
}

static void test_order_and_thread(void **state)
{
	struct scenario sc = { 0 };
	struct rm_daemon *d;
	pthread_t t;

	d = daemon_begin(start_order, &sc);
	assert_int_equal(pthread_create(&t, NULL, plain_poster, NULL), 0);
	pthread_join(t, NULL);
	daemon_end(d);
	assert_int_equal(sc.post_failed, 0);
	assert_int_equal(sc.got[0], PER_SOURCE);
	assert_int_equal(sc.got[1], PER_SOURCE);
	assert_int_equal(sc.out_of_order, 0);
	assert_int_equal(sc.wrong_thread, 0);
	assert_int_equal(sc.wrong_worker, 0);
}

/* ---- a full mailbox --------------------------------------------------------------- */

static void count_full(struct rm_worker *w, void *arg)
{
	sc_now->full_ran++;
	if (sc_now->full_ran == sc_now->full_accepted)
		rm_daemon_request_stop(daemon_now);
}

static void never(struct rm_worker *w, void *arg)
{
	fail_msg("a refused post ran");
}

/* Worker 1 fills its own mailbox before its loop runs: nothing drains it meanwhile. */
static void start_full(struct rm_worker *w, void *arg)
{
	if (rm_worker_index(w) != 1)
		return;
	for (int i = 0; i < RM_MAILBOX_MAX; i++)
		if (rm_worker_post(w, count_full, NULL) == 0)
			sc_now->full_accepted++;
	sc_now->full_rc = rm_worker_post(w, never, NULL);
}

static void test_full_mailbox(void **state)
{
	struct scenario sc = { 0 };

	daemon_end(daemon_begin(start_full, &sc));
	assert_int_equal(sc.full_accepted, RM_MAILBOX_MAX);
	assert_int_equal(sc.full_rc, -EAGAIN);
	/* Everything accepted ran once the loop drained it; the refused one never. */
	assert_int_equal(sc.full_ran, RM_MAILBOX_MAX);
}

/* ---- a stopping worker, a stopped worker ---------------------------------------------- */

/* Each link posts the next one to its own, already stopping, worker. */
static void chain(struct rm_worker *w, void *arg)
{
	sc_now->chain_ran++;
	if (sc_now->chain_ran < CHAIN) {
		int rc = rm_worker_post(w, chain, NULL);

		if (rc != 0)
			sc_now->chain_post_rc = rc;
	}
}

static void start_stopping(struct rm_worker *w, void *arg)
{
	if (rm_worker_index(w) != 0)
		return;
	rm_daemon_request_stop(daemon_now);
	sc_now->chain_post_rc = rm_worker_post(w, chain, NULL);
}

static void test_stopping_worker_drains(void **state)
{
	struct scenario sc = { 0 };
	struct rm_daemon *d = daemon_begin(start_stopping, &sc);

	/* Every worker leaves its loop; the mailboxes then refuse. */
	for (long i = 0; i < 20000 && !rm_daemon_all_exited(d); i++)
		usleep(1000);
	assert_true(rm_daemon_all_exited(d));
	assert_int_equal(rm_worker_post(d->workers[0], never, NULL), -ESHUTDOWN);
	assert_int_equal(rm_worker_post(d->workers[1], never, NULL), -ESHUTDOWN);
	daemon_end(d);
	assert_int_equal(sc.chain_post_rc, 0);
	assert_int_equal(sc.chain_ran, CHAIN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_and_thread),
		cmocka_unit_test(test_full_mailbox),
		cmocka_unit_test(test_stopping_worker_drains),
	};

	/* A mailbox that never delivers must fail the run, not hang it. */
	alarm(60);
	rm_log_init("test_mailbox", RM_LOG_WARN, false);
	return cmocka_run_group_tests_name("mailbox", tests, NULL, NULL);
}
