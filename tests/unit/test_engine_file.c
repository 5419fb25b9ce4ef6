/*
 * Tests of the engine's worker-level services, on a real ring: file writes and
 * fdatasync through the worker (what the spool uses), linked write+sync order,
 * the bounded operation pool, and worker timers (firing, cancel, order).
 * A one-worker rm_daemon with no listeners runs each scenario from its
 * worker_start hook and stops when the scenario says it is done.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/engine.h"
#include "core/log.h"

struct scenario {
	int fd;
	int results[8];
	int order[8];
	int done_count;
	int fired[4];
	uint64_t fired_ms[4];
	uint64_t start_ms;
	int busy_seen;
	bool finished;
	struct rm_worker_timer timers[4];
};

static void run_daemon(void (*start)(struct rm_worker *, void *), struct scenario *sc);

static bool tick(struct rm_worker *w, void *arg)
{
	struct scenario *sc = arg;

	return !sc->finished;
}

static void run_daemon(void (*start)(struct rm_worker *, void *), struct scenario *sc)
{
	static struct rm_config cfg;
	struct rm_daemon *d = calloc(1, sizeof(*d));
	char err[256];

	rm_config_defaults(&cfg);
	cfg.workers = 1;
	cfg.limits.connections_per_worker = 16;
	cfg.limits.buffers_per_worker = 16;
	cfg.limits.write_blocks_per_worker = 16;
	d->worker_count = 1;
	d->hooks.worker_start = start;
	d->hooks.worker_tick = tick;
	d->hooks.arg = sc;
	atomic_store(&d->config_ptr, &cfg);
	assert_int_equal(rm_daemon_bind(d, err, sizeof(err)), 0);
	assert_int_equal(rm_daemon_start(d), 0);
	rm_daemon_join(d);
	for (unsigned i = 0; i < d->worker_count; i++)
		free(d->workers[i]);
	free(d);
}

/* ---- file writes -------------------------------------------------------------- */

static struct scenario *current;

static void file_done(void *arg, int res)
{
	struct scenario *sc = current;
	int which = (int)(intptr_t)arg;

	sc->results[which] = res;
	sc->order[sc->done_count++] = which;
	if (sc->done_count == 3)
		sc->finished = true;
}

static const char part1[] = "first part, ";
static const char part2[] = "second part\n";
static const char part3[] = "appended later\n";

static void start_writes(struct rm_worker *w, void *arg)
{
	struct scenario *sc = arg;
	struct iovec iov[2] = {
		{ (void *)part1, sizeof(part1) - 1 },
		{ (void *)part2, sizeof(part2) - 1 },
	};
	struct iovec iov3 = { (void *)part3, sizeof(part3) - 1 };
	size_t first = sizeof(part1) - 1 + sizeof(part2) - 1;

	current = sc;
	/* write, then (linked) fdatasync, then a write at a later offset */
	assert_int_equal(rm_file_writev(w, sc->fd, iov, 2, 0, true, file_done, (void *)0), 0);
	assert_int_equal(rm_file_fdatasync(w, sc->fd, false, file_done, (void *)1), 0);
	assert_int_equal(rm_file_writev(w, sc->fd, &iov3, 1, first, false, file_done, (void *)2), 0);
	assert_int_equal(rm_file_ops_in_flight(w), 3);
}

static void test_file_write_and_sync(void **state)
{
	struct scenario sc = { 0 };
	char path[] = "/tmp/rm-test-file-XXXXXX";
	char buf[128];
	ssize_t n;

	sc.fd = mkstemp(path);
	assert_true(sc.fd >= 0);
	run_daemon(start_writes, &sc);
	assert_int_equal(sc.done_count, 3);
	assert_int_equal(sc.results[0], (int)(sizeof(part1) - 1 + sizeof(part2) - 1));
	assert_int_equal(sc.results[1], 0);
	assert_int_equal(sc.results[2], (int)(sizeof(part3) - 1));
	/* The linked fdatasync completes after its write. */
	int pos_write = -1, pos_sync = -1;

	for (int i = 0; i < 3; i++) {
		if (sc.order[i] == 0)
			pos_write = i;
		if (sc.order[i] == 1)
			pos_sync = i;
	}
	assert_true(pos_write >= 0 && pos_sync > pos_write);
	n = pread(sc.fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, "first part, second part\nappended later\n");
	close(sc.fd);
	unlink(path);
}

/* A bad descriptor comes back as -EBADF through done(), not as a crash. */
static void start_bad_fd(struct rm_worker *w, void *arg)
{
	struct scenario *sc = arg;
	struct iovec iov = { (void *)part1, 4 };

	current = sc;
	sc->done_count = 1;	/* only two completions expected: finish at 3 */
	assert_int_equal(rm_file_writev(w, 987654, &iov, 1, 0, false, file_done, (void *)0), 0);
	assert_int_equal(rm_file_fdatasync(w, 987654, false, file_done, (void *)1), 0);
}

static void test_file_errors_reported(void **state)
{
	struct scenario sc = { 0 };

	run_daemon(start_bad_fd, &sc);
	assert_int_equal(sc.results[0], -EBADF);
	assert_int_equal(sc.results[1], -EBADF);
}

/* The pool is bounded: past RM_FILE_OPS_MAX in flight, -EBUSY and nothing queued. */
static int pool_done_count;
static struct scenario *pool_sc;

static void pool_done(void *arg, int res)
{
	if (++pool_done_count == RM_FILE_OPS_MAX)
		pool_sc->finished = true;
}

static void start_pool(struct rm_worker *w, void *arg)
{
	struct scenario *sc = arg;

	pool_sc = sc;
	for (int i = 0; i < RM_FILE_OPS_MAX; i++)
		assert_int_equal(rm_file_fdatasync(w, sc->fd, false, pool_done, NULL), 0);
	sc->busy_seen = rm_file_fdatasync(w, sc->fd, false, pool_done, NULL);
}

static void test_file_pool_bounded(void **state)
{
	struct scenario sc = { 0 };
	char path[] = "/tmp/rm-test-pool-XXXXXX";

	sc.fd = mkstemp(path);
	assert_true(sc.fd >= 0);
	run_daemon(start_pool, &sc);
	assert_int_equal(sc.busy_seen, -EBUSY);
	assert_int_equal(pool_done_count, RM_FILE_OPS_MAX);
	close(sc.fd);
	unlink(path);
}

/* ---- worker timers -------------------------------------------------------------- */

static void timer_fired(struct rm_worker *w, void *arg)
{
	struct scenario *sc = current;
	int which = (int)(intptr_t)arg;

	sc->fired[which]++;
	sc->fired_ms[which] = rm_now_ms() - sc->start_ms;
	if (which == 2)
		sc->finished = true;
}

static void start_timers(struct rm_worker *w, void *arg)
{
	struct scenario *sc = arg;

	current = sc;
	sc->start_ms = rm_now_ms();
	for (int i = 0; i < 3; i++) {
		sc->timers[i].fire = timer_fired;
		sc->timers[i].arg = (void *)(intptr_t)i;
	}
	rm_worker_timer_set(w, &sc->timers[0], 50);
	rm_worker_timer_set(w, &sc->timers[1], 100);
	rm_worker_timer_set(w, &sc->timers[2], 200);
	rm_worker_timer_cancel(w, &sc->timers[1]);
}

static void test_worker_timers(void **state)
{
	struct scenario sc = { 0 };

	run_daemon(start_timers, &sc);
	assert_int_equal(sc.fired[0], 1);
	assert_int_equal(sc.fired[1], 0);	/* cancelled */
	assert_int_equal(sc.fired[2], 1);
	assert_true(sc.fired_ms[0] >= 50);	/* never early */
	assert_true(sc.fired_ms[2] >= 200);
	assert_true(sc.fired_ms[0] < sc.fired_ms[2]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_write_and_sync),
		cmocka_unit_test(test_file_errors_reported),
		cmocka_unit_test(test_file_pool_bounded),
		cmocka_unit_test(test_worker_timers),
	};

	rm_log_init("test_engine_file", RM_LOG_WARN, false);
	return cmocka_run_group_tests_name("engine_file", tests, NULL, NULL);
}
