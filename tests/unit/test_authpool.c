/*
 * NAME
 *	test_authpool - unit tests of core/authpool
 * DESCRIPTION
 *	No io_uring worker: the pool's poster is replaced (rm_authpool_set_poster)
 *	by a fake mailbox, a bounded ring drained by a thread of its own that
 *	plays the worker, with the contract of rm_worker_post (-EAGAIN when
 *	full, -ESHUTDOWN when closed).  A gated poster holds a pool thread
 *	inside its post, which makes "the thread is busy, the rest waits"
 *	deterministic.  The table is a password file in a temporary
 *	directory with sha512-crypt hashes of 1000 rounds, so that hundreds of
 *	verifications stay fast.
 *
 *	Covered: answers in submission order with one thread, each on the
 *	fake worker's thread, with the right result and the password wiped;
 *	the queue limit (-EAGAIN) while the thread is busy; stop with requests
 *	waiting (the running one answered with its result, the others with
 *	-ESHUTDOWN, submit refused from the moment stop begins); orphans when
 *	the post fails for good (-ESHUTDOWN at once, -EAGAIN after exactly
 *	RM_AUTHPOOL_POST_TRIES tries) and a post that succeeds after a few
 *	-EAGAIN; the pool's own table reference; bad arguments; restart; four
 *	submitting threads against four pool threads and a small mailbox.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/authpool.h"

#define ORDER_COUNT 20u
#define SUBMITTERS 4u
#define PER_SUBMITTER 200u
#define SUBMIT_TRIES 20000u		/* -EAGAIN retries per submit, 0.2 ms apart */
#define WAIT_MS_MAX 60000u		/* a test waits at most this long for its answers */
#define FAKE_RING_MAX 256u

static char dir[] = "/tmp/test_authpool.XXXXXX";
static char path[512];
static struct rm_passwd *table;

/* --- the fake worker --------------------------------------------------------- */

struct fake_worker {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct {
		rm_worker_fn fn;
		void *arg;
	} ring[FAKE_RING_MAX];
	unsigned head, count, cap;
	bool closed;		/* post says -ESHUTDOWN */
	bool quit;		/* the thread leaves once the ring is empty */
	pthread_t thread;
};

static struct fake_worker fake;

static struct rm_worker *as_worker(struct fake_worker *f)
{
	return (struct rm_worker *)(void *)f;
}

static int fake_post(struct rm_worker *to, rm_worker_fn fn, void *arg)
{
	struct fake_worker *f = (struct fake_worker *)(void *)to;
	int rc = 0;

	pthread_mutex_lock(&f->lock);
	if (f->closed) {
		rc = -ESHUTDOWN;
	} else if (f->count == f->cap) {
		rc = -EAGAIN;
	} else {
		unsigned i = (f->head + f->count) % FAKE_RING_MAX;

		f->ring[i].fn = fn;
		f->ring[i].arg = arg;
		f->count++;
		pthread_cond_signal(&f->cond);
	}
	pthread_mutex_unlock(&f->lock);
	return rc;
}

static void *fake_main(void *arg)
{
	struct fake_worker *f = arg;

	pthread_mutex_lock(&f->lock);
	for (;;) {
		while (f->count == 0 && !f->quit)
			pthread_cond_wait(&f->cond, &f->lock);
		if (f->count == 0)
			break;
		rm_worker_fn fn = f->ring[f->head].fn;
		void *a = f->ring[f->head].arg;

		f->head = (f->head + 1) % FAKE_RING_MAX;
		f->count--;
		pthread_mutex_unlock(&f->lock);
		fn(as_worker(f), a);
		pthread_mutex_lock(&f->lock);
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

static void fake_start(unsigned cap)
{
	memset(&fake, 0, sizeof(fake));
	pthread_mutex_init(&fake.lock, NULL);
	pthread_cond_init(&fake.cond, NULL);
	fake.cap = cap;
	assert_int_equal(pthread_create(&fake.thread, NULL, fake_main, &fake), 0);
}

static void fake_stop(void)
{
	pthread_mutex_lock(&fake.lock);
	fake.quit = true;
	pthread_cond_signal(&fake.cond);
	pthread_mutex_unlock(&fake.lock);
	pthread_join(fake.thread, NULL);
	pthread_mutex_destroy(&fake.lock);
	pthread_cond_destroy(&fake.cond);
}

/* --- the gate: a poster that holds the pool thread until opened ------------------ */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;
	unsigned entered;
} gate = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0 };

static int gated_post(struct rm_worker *to, rm_worker_fn fn, void *arg)
{
	pthread_mutex_lock(&gate.lock);
	gate.entered++;
	pthread_cond_broadcast(&gate.cond);
	while (!gate.open)
		pthread_cond_wait(&gate.cond, &gate.lock);
	pthread_mutex_unlock(&gate.lock);
	return fake_post(to, fn, arg);
}

static void gate_reset(void)
{
	pthread_mutex_lock(&gate.lock);
	gate.open = false;
	gate.entered = 0;
	pthread_mutex_unlock(&gate.lock);
}

static void gate_wait_entered(unsigned n)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_MS_MAX / 1000;
	pthread_mutex_lock(&gate.lock);
	while (gate.entered < n)
		if (pthread_cond_timedwait(&gate.cond, &gate.lock, &until) == ETIMEDOUT)
			break;
	assert_true(gate.entered >= n);
	pthread_mutex_unlock(&gate.lock);
}

static void gate_open(void)
{
	pthread_mutex_lock(&gate.lock);
	gate.open = true;
	pthread_cond_broadcast(&gate.cond);
	pthread_mutex_unlock(&gate.lock);
}

/* --- answers ------------------------------------------------------------------ */

struct req_ctx {
	unsigned index;
	bool want_ok;
	_Atomic unsigned done_calls, orphan_calls;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned answers;		/* done + orphan calls */
	unsigned order[ORDER_COUNT];	/* index of each answer, in arrival order */
	unsigned wrong_result, wrong_thread, not_wiped;
} seen = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, { 0 }, 0, 0, 0 };

static void seen_reset(void)
{
	pthread_mutex_lock(&seen.lock);
	seen.answers = seen.wrong_result = seen.wrong_thread = seen.not_wiped = 0;
	pthread_mutex_unlock(&seen.lock);
}

static bool wiped(const struct rm_auth_request *req)
{
	for (size_t i = 0; i < sizeof(req->pass); i++)
		if (req->pass[i] != 0)
			return false;
	return req->pass_len == 0;
}

/* Runs on the fake worker or a pool thread: records, never asserts (cmocka's are for the test thread). */
static void note(struct rm_auth_request *req, struct rm_worker *w)
{
	struct req_ctx *c = req->arg;
	bool on_worker = w != NULL;

	pthread_mutex_lock(&seen.lock);
	if (seen.answers < ORDER_COUNT)
		seen.order[seen.answers] = c->index;
	if (req->err == 0 && req->ok != c->want_ok)
		seen.wrong_result++;
	if (on_worker && (!pthread_equal(pthread_self(), fake.thread) || w != as_worker(&fake)))
		seen.wrong_thread++;
	if (!wiped(req))
		seen.not_wiped++;
	seen.answers++;
	pthread_cond_broadcast(&seen.cond);
	pthread_mutex_unlock(&seen.lock);
}

static void on_done(struct rm_worker *w, struct rm_auth_request *req)
{
	struct req_ctx *c = req->arg;

	atomic_fetch_add(&c->done_calls, 1);
	note(req, w);
}

static pthread_t orphan_thread;

static void on_orphan(struct rm_auth_request *req)
{
	struct req_ctx *c = req->arg;

	orphan_thread = pthread_self();
	atomic_fetch_add(&c->orphan_calls, 1);
	note(req, NULL);
}

static void wait_answers(unsigned n)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_MS_MAX / 1000;
	pthread_mutex_lock(&seen.lock);
	while (seen.answers < n)
		if (pthread_cond_timedwait(&seen.cond, &seen.lock, &until) == ETIMEDOUT)
			break;
	assert_int_equal(seen.answers, n);
	pthread_mutex_unlock(&seen.lock);
}

/* Users of the table: good (password "secret"), other (password "hunter2"). */
static void fill(struct rm_auth_request *req, struct req_ctx *c, unsigned index, int kind)
{
	static const struct {
		const char *user, *pass;
		bool ok;
	} kinds[] = {
		{ "good@dev.test", "secret", true },
		{ "good@dev.test", "wrong", false },
		{ "Other@Dev.Test", "hunter2", true },
		{ "nobody@dev.test", "secret", false },
	};

	memset(req, 0, sizeof(*req));
	memset(c, 0, sizeof(*c));
	c->index = index;
	c->want_ok = kinds[kind].ok;
	req->worker = as_worker(&fake);
	req->table = table;
	req->user_len = strlen(kinds[kind].user);
	memcpy(req->user, kinds[kind].user, req->user_len);
	req->pass_len = strlen(kinds[kind].pass);
	memcpy(req->pass, kinds[kind].pass, req->pass_len);
	req->done = on_done;
	req->orphan = on_orphan;
	req->arg = c;
}

/* --- setup -------------------------------------------------------------------- */

static void make_hash(const char *pass, char *out)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data cd;
	const char *h;

	memset(&cd, 0, sizeof(cd));
	assert_non_null(crypt_gensalt_rn("$6$", 1000, NULL, 0, setting, sizeof(setting)));
	h = crypt_rn(pass, setting, &cd, sizeof(cd));
	assert_non_null(h);
	snprintf(out, CRYPT_OUTPUT_SIZE, "%s", h);
}

static struct rm_passwd *load_table(const char *good_pass)
{
	char h1[CRYPT_OUTPUT_SIZE], h2[CRYPT_OUTPUT_SIZE], err[1024];
	struct rm_passwd *pw = NULL;
	FILE *f;

	make_hash(good_pass, h1);
	make_hash("hunter2", h2);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "good@dev.test:%s\nother@dev.test:%s\n", h1, h2);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(rm_passwd_load(path, &pw, err, sizeof(err), NULL, NULL), 0);
	return pw;
}

static int setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/passwd", dir);
	table = load_table("secret");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	rm_passwd_unref(table);
	unlink(path);
	rmdir(dir);
	return 0;
}

/* --- tests -------------------------------------------------------------------- */

static void test_args(void **state)
{
	struct rm_auth_request req;
	struct req_ctx c;

	(void)state;
	rm_authpool_set_poster(fake_post);
	assert_int_equal(rm_authpool_start(0, 8), -EINVAL);
	assert_int_equal(rm_authpool_start(RM_AUTHPOOL_THREADS_MAX + 1, 8), -EINVAL);
	assert_int_equal(rm_authpool_start(1, 0), -EINVAL);
	assert_int_equal(rm_authpool_start(1, RM_AUTHPOOL_QUEUE_MAX + 1), -EINVAL);
	fill(&req, &c, 0, 0);
	assert_int_equal(rm_authpool_submit(&req), -ESHUTDOWN);
	rm_authpool_stop();	/* not running: nothing to do */

	assert_int_equal(rm_authpool_start(1, 8), 0);
	assert_int_equal(rm_authpool_start(1, 8), -EALREADY);
	fill(&req, &c, 0, 0);
	req.done = NULL;
	assert_int_equal(rm_authpool_submit(&req), -EINVAL);
	fill(&req, &c, 0, 0);
	req.table = NULL;
	assert_int_equal(rm_authpool_submit(&req), -EINVAL);
	fill(&req, &c, 0, 0);
	req.worker = NULL;
	assert_int_equal(rm_authpool_submit(&req), -EINVAL);
	fill(&req, &c, 0, 0);
	req.user_len = RM_PASSWD_USER_BYTES_MAX + 1;
	assert_int_equal(rm_authpool_submit(&req), -EINVAL);
	fill(&req, &c, 0, 0);
	req.pass_len = RM_PASSWD_PASS_BYTES_MAX + 1;
	assert_int_equal(rm_authpool_submit(&req), -EINVAL);
	/* A refused request is untouched: its password is still there. */
	assert_memory_equal(req.pass, "secret", 6);
	rm_authpool_stop();
	rm_authpool_stop();
	assert_int_equal(rm_authpool_submit(&req), -EINVAL);
	fill(&req, &c, 0, 0);
	assert_int_equal(rm_authpool_submit(&req), -ESHUTDOWN);
}

static void test_order(void **state)
{
	struct rm_auth_request reqs[ORDER_COUNT];
	struct req_ctx ctx[ORDER_COUNT];

	(void)state;
	seen_reset();
	fake_start(FAKE_RING_MAX);
	rm_authpool_set_poster(fake_post);
	assert_int_equal(rm_authpool_start(1, ORDER_COUNT), 0);
	for (unsigned i = 0; i < ORDER_COUNT; i++) {
		/* One unknown user (a yescrypt run of the fixed hash) among them. */
		fill(&reqs[i], &ctx[i], i, i == 7 ? 3 : (int)(i % 3));
		assert_int_equal(rm_authpool_submit(&reqs[i]), 0);
	}
	wait_answers(ORDER_COUNT);
	for (unsigned i = 0; i < ORDER_COUNT; i++) {
		assert_int_equal(seen.order[i], i);
		assert_int_equal(atomic_load(&ctx[i].done_calls), 1);
		assert_int_equal(atomic_load(&ctx[i].orphan_calls), 0);
		assert_int_equal(reqs[i].err, 0);
		assert_int_equal(reqs[i].post_err, 0);
		assert_int_equal(reqs[i].ok, ctx[i].want_ok);
	}
	assert_int_equal(seen.wrong_result, 0);
	assert_int_equal(seen.wrong_thread, 0);
	assert_int_equal(seen.not_wiped, 0);
	rm_authpool_stop();
	fake_stop();
}

static void test_queue_full(void **state)
{
	enum { QUEUE = 4 };
	struct rm_auth_request reqs[QUEUE + 2];
	struct req_ctx ctx[QUEUE + 2];

	(void)state;
	seen_reset();
	gate_reset();
	fake_start(FAKE_RING_MAX);
	rm_authpool_set_poster(gated_post);
	assert_int_equal(rm_authpool_start(1, QUEUE), 0);
	fill(&reqs[0], &ctx[0], 0, 0);
	assert_int_equal(rm_authpool_submit(&reqs[0]), 0);
	gate_wait_entered(1);	/* the one thread is busy posting the first answer */
	for (unsigned i = 1; i <= QUEUE; i++) {
		fill(&reqs[i], &ctx[i], i, 1);
		assert_int_equal(rm_authpool_submit(&reqs[i]), 0);
	}
	fill(&reqs[QUEUE + 1], &ctx[QUEUE + 1], QUEUE + 1, 0);
	assert_int_equal(rm_authpool_submit(&reqs[QUEUE + 1]), -EAGAIN);
	gate_open();
	wait_answers(QUEUE + 1);
	for (unsigned i = 0; i <= QUEUE; i++)
		assert_int_equal(seen.order[i], i);
	assert_int_equal(atomic_load(&ctx[QUEUE + 1].done_calls), 0);
	/* Room again. */
	assert_int_equal(rm_authpool_submit(&reqs[QUEUE + 1]), 0);
	wait_answers(QUEUE + 2);
	assert_int_equal(seen.wrong_result, 0);
	assert_int_equal(seen.not_wiped, 0);
	rm_authpool_stop();
	fake_stop();
}

static void *stopper(void *arg)
{
	(void)arg;
	rm_authpool_stop();
	return NULL;
}

static void test_stop_pending(void **state)
{
	enum { PENDING = 3, PROBES = 5000 };
	struct rm_auth_request reqs[1 + PENDING], *probe = calloc(PROBES, sizeof(*probe));
	struct req_ctx ctx[1 + PENDING], *probe_ctx = calloc(PROBES, sizeof(*probe_ctx));
	unsigned probes_in = 0, shut = 0;
	pthread_t t;

	(void)state;
	assert_non_null(probe);
	assert_non_null(probe_ctx);
	seen_reset();
	gate_reset();
	fake_start(FAKE_RING_MAX);
	rm_authpool_set_poster(gated_post);
	assert_int_equal(rm_authpool_start(1, PROBES + PENDING), 0);
	fill(&reqs[0], &ctx[0], 0, 0);
	assert_int_equal(rm_authpool_submit(&reqs[0]), 0);
	gate_wait_entered(1);
	for (unsigned i = 1; i <= PENDING; i++) {
		fill(&reqs[i], &ctx[i], i, 2);
		assert_int_equal(rm_authpool_submit(&reqs[i]), 0);
	}
	assert_int_equal(pthread_create(&t, NULL, stopper, NULL), 0);
	/* From the moment stop begins, submit says -ESHUTDOWN; until then it queues. */
	for (unsigned i = 0; i < PROBES; i++) {
		int rc;

		fill(&probe[i], &probe_ctx[i], 100 + i, 0);
		rc = rm_authpool_submit(&probe[i]);
		if (rc == -ESHUTDOWN) {
			shut = 1;
			break;
		}
		assert_int_equal(rc, 0);
		probes_in++;
		usleep(100);
	}
	assert_int_equal(shut, 1);
	gate_open();
	pthread_join(t, NULL);
	/* stop returned: every request has been answered (posted), the fake drains them. */
	wait_answers(1 + PENDING + probes_in);
	assert_int_equal(reqs[0].err, 0);
	assert_true(reqs[0].ok);
	for (unsigned i = 1; i <= PENDING; i++) {
		assert_int_equal(reqs[i].err, -ESHUTDOWN);
		assert_false(reqs[i].ok);
		assert_int_equal(atomic_load(&ctx[i].done_calls), 1);
	}
	for (unsigned i = 0; i < probes_in; i++)
		assert_int_equal(probe[i].err, -ESHUTDOWN);
	assert_int_equal(seen.not_wiped, 0);
	fill(&reqs[0], &ctx[0], 0, 0);
	assert_int_equal(rm_authpool_submit(&reqs[0]), -ESHUTDOWN);
	fake_stop();
	free(probe);
	free(probe_ctx);
}

static _Atomic unsigned post_calls;
static _Atomic int post_script;	/* -1: always -EAGAIN; 0: -ESHUTDOWN; n > 0: n -EAGAIN, then post */

static int scripted_post(struct rm_worker *to, rm_worker_fn fn, void *arg)
{
	unsigned call = atomic_fetch_add(&post_calls, 1);
	int script = atomic_load(&post_script);

	if (script == 0)
		return -ESHUTDOWN;
	if (script < 0 || call < (unsigned)script)
		return -EAGAIN;
	return fake_post(to, fn, arg);
}

static void test_orphans(void **state)
{
	struct rm_auth_request req;
	struct req_ctx c;

	(void)state;
	seen_reset();
	fake_start(FAKE_RING_MAX);
	rm_authpool_set_poster(scripted_post);
	assert_int_equal(rm_authpool_start(1, 4), 0);

	/* The worker is gone: orphan at once, on the pool's thread. */
	atomic_store(&post_calls, 0);
	atomic_store(&post_script, 0);
	fill(&req, &c, 0, 0);
	assert_int_equal(rm_authpool_submit(&req), 0);
	wait_answers(1);
	assert_int_equal(atomic_load(&c.orphan_calls), 1);
	assert_int_equal(atomic_load(&c.done_calls), 0);
	assert_int_equal(atomic_load(&post_calls), 1);
	assert_int_equal(req.post_err, -ESHUTDOWN);
	assert_int_equal(req.err, 0);
	assert_true(req.ok);
	assert_false(pthread_equal(orphan_thread, pthread_self()));

	/* A mailbox that stays full: RM_AUTHPOOL_POST_TRIES tries (about a second), then orphan. */
	atomic_store(&post_calls, 0);
	atomic_store(&post_script, -1);
	fill(&req, &c, 1, 1);
	assert_int_equal(rm_authpool_submit(&req), 0);
	wait_answers(2);
	assert_int_equal(atomic_load(&c.orphan_calls), 1);
	assert_int_equal(atomic_load(&post_calls), RM_AUTHPOOL_POST_TRIES);
	assert_int_equal(req.post_err, -EAGAIN);
	assert_false(req.ok);

	/* Full three times, then room: done, once. */
	atomic_store(&post_calls, 0);
	atomic_store(&post_script, 3);
	fill(&req, &c, 2, 2);
	assert_int_equal(rm_authpool_submit(&req), 0);
	wait_answers(3);
	assert_int_equal(atomic_load(&c.done_calls), 1);
	assert_int_equal(atomic_load(&c.orphan_calls), 0);
	assert_int_equal(atomic_load(&post_calls), 4);
	assert_true(req.ok);

	/* No orphan callback: the answer is dropped, nothing else happens. */
	atomic_store(&post_calls, 0);
	atomic_store(&post_script, 0);
	fill(&req, &c, 3, 0);
	req.orphan = NULL;
	assert_int_equal(rm_authpool_submit(&req), 0);
	rm_authpool_stop();	/* joins: the request has been given up by now */
	assert_int_equal(atomic_load(&post_calls), 1);
	assert_int_equal(seen.answers, 3);
	assert_int_equal(seen.wrong_result, 0);
	assert_int_equal(seen.not_wiped, 0);
	fake_stop();
}

/* The pool's own reference keeps a table alive that its owner has dropped. */
static void test_table_ref(void **state)
{
	struct rm_auth_request reqs[2];
	struct req_ctx ctx[2];
	struct rm_passwd *t2;

	(void)state;
	seen_reset();
	gate_reset();
	fake_start(FAKE_RING_MAX);
	rm_authpool_set_poster(gated_post);
	assert_int_equal(rm_authpool_start(1, 4), 0);
	fill(&reqs[0], &ctx[0], 0, 0);
	assert_int_equal(rm_authpool_submit(&reqs[0]), 0);
	gate_wait_entered(1);
	/* A "reloaded" table where good@dev.test has another password. */
	t2 = load_table("new-secret");
	fill(&reqs[1], &ctx[1], 1, 0);
	reqs[1].table = t2;
	memcpy(reqs[1].pass, "new-secret", 10);
	reqs[1].pass_len = 10;
	assert_int_equal(rm_authpool_submit(&reqs[1]), 0);
	rm_passwd_unref(t2);	/* the "daemon" swaps it out before it is used */
	gate_open();
	wait_answers(2);
	assert_true(reqs[0].ok);
	assert_true(reqs[1].ok);	/* verified against t2, which is freed after */
	rm_authpool_stop();
	fake_stop();
}

struct submitter {
	unsigned id;
	struct rm_auth_request reqs[PER_SUBMITTER];
	struct req_ctx ctx[PER_SUBMITTER];
	unsigned again;		/* -EAGAIN answers seen */
	int failed;
};

static void *submit_main(void *arg)
{
	struct submitter *s = arg;

	for (unsigned i = 0; i < PER_SUBMITTER; i++) {
		unsigned tries = 0;
		int rc;

		fill(&s->reqs[i], &s->ctx[i], s->id * PER_SUBMITTER + i, (int)((i + s->id) % 3));
		while ((rc = rm_authpool_submit(&s->reqs[i])) == -EAGAIN && tries++ < SUBMIT_TRIES) {
			s->again++;
			usleep(200);
		}
		if (rc != 0) {
			s->failed = rc;
			break;
		}
	}
	return NULL;
}

static void test_concurrent(void **state)
{
	struct submitter *subs = calloc(SUBMITTERS, sizeof(*subs));
	pthread_t t[SUBMITTERS];
	unsigned again = 0;

	(void)state;
	assert_non_null(subs);
	seen_reset();
	fake_start(16);		/* a small mailbox: the pool meets -EAGAIN too */
	rm_authpool_set_poster(fake_post);
	assert_int_equal(rm_authpool_start(4, 32), 0);
	for (unsigned i = 0; i < SUBMITTERS; i++) {
		subs[i].id = i;
		assert_int_equal(pthread_create(&t[i], NULL, submit_main, &subs[i]), 0);
	}
	for (unsigned i = 0; i < SUBMITTERS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(subs[i].failed, 0);
		again += subs[i].again;
	}
	wait_answers(SUBMITTERS * PER_SUBMITTER);
	rm_authpool_stop();
	fake_stop();
	for (unsigned i = 0; i < SUBMITTERS; i++)
		for (unsigned j = 0; j < PER_SUBMITTER; j++) {
			assert_int_equal(atomic_load(&subs[i].ctx[j].done_calls), 1);
			assert_int_equal(subs[i].reqs[j].err, 0);
		}
	assert_int_equal(seen.wrong_result, 0);
	assert_int_equal(seen.wrong_thread, 0);
	assert_int_equal(seen.not_wiped, 0);
	print_message("concurrent: %u requests, %u -EAGAIN on submit\n",
		      SUBMITTERS * PER_SUBMITTER, again);
	free(subs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_args),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_queue_full),
		cmocka_unit_test(test_stop_pending),
		cmocka_unit_test(test_orphans),
		cmocka_unit_test(test_table_ref),
		cmocka_unit_test(test_concurrent),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
