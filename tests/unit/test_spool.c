/*
 * Tests of the durable spool writer (core/spool.c) on a real io_uring worker:
 * begin / append / commit and reading back, group commit, no acknowledgement
 * before the write and sync completed, recovery after a restart (marks,
 * holds, deferrals, deletions), uncommitted messages, segment rotation and
 * deletion, write failures (RLIMIT_FSIZE) and the limits.
 *
 * As in test_engine_file.c, a one-worker rm_daemon with no listeners runs each
 * scenario: its worker_start hook opens the spool and starts the scenario, its
 * worker_tick hook advances it (a 5 ms worker timer keeps the loop turning) and
 * returns false once the scenario is done, the spool's writes have completed
 * and the spool is closed.  A restart is a second daemon on the same directory.
 *
 * Each test runs in a forked child, with a fresh spool directory made by the
 * parent (mkdtemp under /tmp) and removed by the parent afterwards:
 *   - the scenario's checks run on the worker thread, where cmocka's asserts
 *     (longjmp) must not be used: CHECK records the first failure in memory
 *     shared with the parent, which reports it;
 *   - a panic (RM_ASSERT), a sanitizer abort or a stall (alarm) of the spool
 *     fails that test only, instead of killing or hanging the whole binary;
 *   - setrlimit(RLIMIT_FSIZE) and SIGXFSZ stay inside the child.
 * The child exits with exit(), so LeakSanitizer checks it too.
 *
 * Tests marked "BUG" below fail against core/spool.c as first written; each
 * says what it exposes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/engine.h"
#include "core/log.h"
#include "core/spool.h"
#include "core/spool_format.h"
#include "core/spool_recover.h"

#define MIB (1024u * 1024u)
#define CHILD_TIMEOUT_S 25	/* a child still running then is stalled: SIGALRM */
#define MSGS_MAX 128
#define SCRATCH_BYTES (8u * MIB)

/* ---- failure reporting (shared with the parent) --------------------------------- */

struct shared_result {
	char fail[2048];
};

static struct shared_result *shared;
static char test_dir[64];	/* this test's spool directory (made by the parent) */

static void note_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void note_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (shared->fail[0] != '\0')
		return;		/* the first failure is the one that matters */
	n = snprintf(shared->fail, sizeof(shared->fail), "%s:%d: ", file, line);
	if (n < 0 || (size_t)n >= sizeof(shared->fail))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(shared->fail + n, sizeof(shared->fail) - (size_t)n, fmt, ap);
	va_end(ap);
	fprintf(stderr, "test_spool: FAIL %s\n", shared->fail);
}

#define FAILED() (shared->fail[0] != '\0')

/* In a void function: record the failure and return. */
#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			note_fail(__FILE__, __LINE__, "check failed: %s", #cond);     \
			return;                                                       \
		}                                                                     \
	} while (0)
#define CHECKF(cond, ...)                                                             \
	do {                                                                          \
		if (!(cond)) {                                                        \
			note_fail(__FILE__, __LINE__, __VA_ARGS__);                   \
			return;                                                       \
		}                                                                     \
	} while (0)
#define CHECK_INT(a, op, b)                                                           \
	do {                                                                          \
		long long a_ = (long long)(a), b_ = (long long)(b);                   \
		if (!(a_ op b_)) {                                                    \
			note_fail(__FILE__, __LINE__, "check failed: %s %s %s (%lld %s %lld)", \
				  #a, #op, #b, a_, #op, b_);                          \
			return;                                                       \
		}                                                                     \
	} while (0)
#define CHECK_U64(a, op, b)                                                           \
	do {                                                                          \
		unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b); \
		if (!(a_ op b_)) {                                                    \
			note_fail(__FILE__, __LINE__, "check failed: %s %s %s (0x%llx %s 0x%llx)", \
				  #a, #op, #b, a_, #op, b_);                          \
			return;                                                       \
		}                                                                     \
	} while (0)
#define CHECK_STR(a, b)                                                               \
	do {                                                                          \
		const char *a_ = (a), *b_ = (b);                                      \
		if (a_ == NULL || strcmp(a_, b_) != 0) {                              \
			note_fail(__FILE__, __LINE__, "check failed: %s == \"%s\" (got \"%s\")", \
				  #a, b_, a_ ? a_ : "(null)");                        \
			return;                                                       \
		}                                                                     \
	} while (0)

/* ---- files ---------------------------------------------------------------------- */

static int rm_rf_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

static void rm_rf(const char *dir)
{
	nftw(dir, rm_rf_one, 16, FTW_DEPTH | FTW_PHYS);
}

static bool seg_file_name(const char *name, uint64_t *seq)
{
	unsigned long long s;
	char tail[8];

	if (strlen(name) != 20 || sscanf(name, "%16llx.%3s", &s, tail) != 2 || strcmp(tail, "seg") != 0)
		return false;
	*seq = s;
	return true;
}

/* Segment files of worker 0 now: how many, lowest and highest sequence. */
static unsigned count_segments(uint64_t *lo, uint64_t *hi)
{
	char path[128];
	DIR *d;
	struct dirent *de;
	unsigned n = 0;
	uint64_t seq;

	*lo = UINT64_MAX;
	*hi = 0;
	snprintf(path, sizeof(path), "%s/w00", test_dir);
	d = opendir(path);
	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (!seg_file_name(de->d_name, &seq))
			continue;
		n++;
		if (seq < *lo)
			*lo = seq;
		if (seq > *hi)
			*hi = seq;
	}
	closedir(d);
	return n;
}

static uint64_t file_size(uint64_t seq)
{
	char path[160];
	struct stat st;

	snprintf(path, sizeof(path), "%s/w00/%016llx.seg", test_dir, (unsigned long long)seq);
	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Records of one queue id in every segment of the directory, by the pure scanner. */
struct rec_count {
	unsigned begin, data, end, abort, other;
};

static void scan_records(uint64_t qid, struct rec_count *rc)
{
	char path[128], file[128 + 256 + 2];
	DIR *d;
	struct dirent *de;
	uint64_t seq;

	memset(rc, 0, sizeof(*rc));
	snprintf(path, sizeof(path), "%s/w00", test_dir);
	d = opendir(path);
	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		struct rm_scan s;
		struct rm_spool_record rec;
		size_t off;
		uint8_t *buf;
		int fd;

		if (!seg_file_name(de->d_name, &seq))
			continue;
		snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
		fd = open(file, O_RDONLY);
		if (fd < 0 || fstat(fd, &st) < 0) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		buf = malloc((size_t)st.st_size + 1);
		if (buf != NULL && pread(fd, buf, (size_t)st.st_size, 0) == st.st_size) {
			rm_scan_init(&s, buf, (size_t)st.st_size);
			while (rm_scan_next(&s, &rec, &off)) {
				if (rec.qid != qid)
					continue;
				switch (rec.type) {
				case RM_SPOOL_BEGIN: rc->begin++; break;
				case RM_SPOOL_DATA: rc->data++; break;
				case RM_SPOOL_END: rc->end++; break;
				case RM_SPOOL_ABORT: rc->abort++; break;
				default: rc->other++; break;
				}
			}
		}
		free(buf);
		close(fd);
	}
	closedir(d);
}

/* ---- scenario and messages ---------------------------------------------------------- */

struct sc;

struct tmsg {
	struct sc *sc;
	int id;
	struct rm_spool_msg *m;		/* open handle; NULL once gone */
	uint8_t *data;
	size_t len, sent;
	char sender[64];
	bool null_sender_ptr;		/* reverse_path = { NULL, 0 } */
	char rcpt[4][64];
	uint32_t nrcpt;
	uint64_t size_max;		/* 0 = unlimited */
	uint64_t received_ms;
	size_t chunk;			/* bytes per append call; 0 = all that is left */
	bool one_chunk;			/* one append per pump (the tick pumps again) */
	bool want_commit;		/* commit once everything is appended */
	bool verify_at_ack;		/* read the message back inside its commit callback */
	void (*on_done)(struct tmsg *t);
	/* results */
	bool begun, committed, waiting;
	uint64_t qid;
	int begin_rc, append_err, commit_rc;
	int done_calls, done_err;
	uint64_t done_qid;
	unsigned short_appends, zero_appends, room_calls, commit_eagain;
};

struct sc {
	struct rm_config cfg;
	struct rm_worker *w;
	struct rm_spool *sp;
	void (*start)(struct sc *sc);
	void (*step)(struct sc *sc);
	int run;			/* which daemon of the test: 0, 1, ... */
	int phase;
	bool finished;
	struct rm_worker_timer pulse;
	int in_commit;			/* inside rm_spool_commit */
	unsigned acked_inside_commit;
	unsigned acked, failed;
	struct tmsg msgs[MSGS_MAX];
	unsigned nmsgs;
	uint8_t *scratch;
	/* scenario state */
	uint64_t t_mark, u[8];
	int k;
	struct rlimit fsize_saved;
};

static uint64_t now_unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A message: content of len pseudo-random bytes, nrcpt recipients. */
static struct tmsg *tm_new(struct sc *sc, size_t len, uint32_t nrcpt)
{
	struct tmsg *t;
	uint64_t seed;

	if (sc->nmsgs == MSGS_MAX)
		abort();
	t = &sc->msgs[sc->nmsgs];
	memset(t, 0, sizeof(*t));
	t->sc = sc;
	t->id = (int)sc->nmsgs++;
	t->len = len;
	t->data = malloc(len ? len : 1);
	if (t->data == NULL)
		abort();
	seed = 0x9e3779b97f4a7c15ull * (uint64_t)(t->id + 1) + len;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = xorshift(&seed);
		size_t n = len - i < 8 ? len - i : 8;

		memcpy(t->data + i, &v, n);
	}
	snprintf(t->sender, sizeof(t->sender), "sender%d@example.org", t->id);
	t->nrcpt = nrcpt;
	for (uint32_t i = 0; i < nrcpt && i < 4; i++)
		snprintf(t->rcpt[i], sizeof(t->rcpt[i]), "rcpt%d.%u@example.net", t->id, i);
	t->received_ms = 1767225600000ull + (uint64_t)t->id * 1000u;
	t->want_commit = true;
	t->verify_at_ack = true;
	return t;
}

static void sc_init(struct sc *sc)
{
	memset(sc, 0, sizeof(*sc));
	rm_config_defaults(&sc->cfg);
	sc->cfg.workers = 1;
	sc->cfg.limits.connections_per_worker = 16;
	sc->cfg.limits.buffers_per_worker = 16;
	sc->cfg.limits.write_blocks_per_worker = 16;
	sc->cfg.limits.spool_buffer_bytes = 2 * MIB;
	/* These tests read file sizes and make writes fail with RLIMIT_FSIZE, both
	 * of which need segments that grow as they are written. */
	sc->cfg.limits.spool_preallocate = 0;
	snprintf(sc->cfg.spool_dir, sizeof(sc->cfg.spool_dir), "%s", test_dir);
	sc->scratch = malloc(SCRATCH_BYTES);
	if (sc->scratch == NULL)
		abort();
}

static void sc_free(struct sc *sc)
{
	for (unsigned i = 0; i < sc->nmsgs; i++)
		free(sc->msgs[i].data);
	free(sc->scratch);
}

/* Reset for the next daemon on the same directory: messages (content, qids) stay. */
static void sc_next_run(struct sc *sc, void (*start)(struct sc *), void (*step)(struct sc *))
{
	sc->run++;
	sc->phase = 0;
	sc->finished = false;
	sc->start = start;
	sc->step = step;
	sc->w = NULL;
	sc->sp = NULL;
}

static const struct rm_spool_stats *stats(struct sc *sc)
{
	return rm_spool_stats(sc->sp);
}

/* ---- message operations -------------------------------------------------------------- */

static void tm_pump(struct tmsg *t);
static void tm_done(void *arg, uint64_t qid, int err);

static int tm_begin(struct tmsg *t)
{
	struct sc *sc = t->sc;
	struct rm_spool_envelope env;
	struct rm_spool_rcpt r[4];
	int rc;

	memset(&env, 0, sizeof(env));
	memset(r, 0, sizeof(r));
	env.received_unix_ms = t->received_ms;
	env.body_type = RM_SPOOL_BODY_8BITMIME;
	if (t->null_sender_ptr)
		env.reverse_path = (struct rm_spool_str){ NULL, 0 };
	else
		env.reverse_path = (struct rm_spool_str){ t->sender, strlen(t->sender) };
	env.client_addr = (struct rm_spool_str){ "192.0.2.7", 9 };
	env.helo = (struct rm_spool_str){ "client.example", 14 };
	for (uint32_t i = 0; i < t->nrcpt; i++)
		r[i].addr = (struct rm_spool_str){ t->rcpt[i], strlen(t->rcpt[i]) };
	rc = rm_spool_begin(sc->sp, &env, r, t->nrcpt, t->size_max ? t->size_max : UINT64_MAX, &t->m);
	t->begin_rc = rc;
	if (rc == 0) {
		t->begun = true;
		t->qid = rm_spool_msg_qid(t->m);
	} else {
		t->m = NULL;
	}
	return rc;
}

static void tm_commit_room(void *arg)
{
	struct tmsg *t = arg;

	t->waiting = false;
	t->room_calls++;
	tm_pump(t);
}

static void tm_commit(struct tmsg *t)
{
	struct sc *sc = t->sc;
	int rc;

	sc->in_commit++;
	rc = rm_spool_commit(t->m, tm_done, t);
	sc->in_commit--;
	t->commit_rc = rc;
	if (rc == 0) {
		t->committed = true;	/* the handle lives until the callback */
		return;
	}
	if (rc == -EAGAIN) {
		t->commit_eagain++;
		t->waiting = true;
		rm_spool_wait_room(t->m, tm_commit_room, t);
		return;
	}
	t->m = NULL;			/* failed: the handle is gone, done never comes */
}

static void tm_room(void *arg)
{
	struct tmsg *t = arg;

	t->waiting = false;
	t->room_calls++;
	tm_pump(t);		/* continue from the room callback */
}

/* Append what is left (or one chunk); wait for room on a short append; commit at the end. */
static void tm_pump(struct tmsg *t)
{
	for (unsigned guard = 0; t->m != NULL && !t->waiting && t->sent < t->len && guard < 1000000; guard++) {
		size_t want = t->len - t->sent;
		ssize_t r;

		if (t->chunk != 0 && want > t->chunk)
			want = t->chunk;
		r = rm_spool_append(t->m, t->data + t->sent, want);
		if (r < 0) {
			t->append_err = (int)r;
			return;
		}
		CHECKF((size_t)r <= want, "append took %zd of %zu bytes", r, want);
		t->sent += (size_t)r;
		if ((size_t)r < want) {
			t->short_appends++;
			if (r == 0)
				t->zero_appends++;
			t->waiting = true;
			rm_spool_wait_room(t->m, tm_room, t);
			return;
		}
		if (t->one_chunk)
			break;
	}
	if (t->m != NULL && !t->waiting && !t->committed && t->sent == t->len && t->want_commit &&
	    t->append_err == 0)
		tm_commit(t);
}

static void tm_abort(struct tmsg *t)
{
	if (t->m != NULL)
		rm_spool_abort(t->m);
	t->m = NULL;
}

/* Everything about a queued message: envelope, size, hash, and its bytes read back. */
static void verify_entry(struct sc *sc, const struct tmsg *t)
{
	struct rm_queue_entry *e = rm_queue_find(sc->sp, t->qid);
	static const uint64_t offs[] = { 0, 1, 4095, MIB - 7, MIB + 13, 2 * MIB - 100, 3 * MIB + 1 };
	uint8_t *buf = sc->scratch;
	ssize_t n;

	CHECKF(e != NULL, "message %d (qid %016llx) is not in the queue", t->id, (unsigned long long)t->qid);
	CHECK_U64(e->qid, ==, t->qid);
	CHECK_U64(e->size_bytes, ==, t->len);
	CHECK_U64(e->content_xxh3, ==, XXH3_64bits(t->data, t->len));
	CHECK_U64(e->received_unix_ms, ==, t->received_ms);
	CHECK_STR(e->sender, t->null_sender_ptr ? "" : t->sender);
	CHECK_INT(e->rcpt_total, ==, t->nrcpt);
	for (uint32_t i = 0; i < t->nrcpt; i++)
		CHECK_STR(e->rcpts[i].addr, t->rcpt[i]);
	CHECK(t->len + 64 <= SCRATCH_BYTES);
	/* the whole content, asking for more than there is */
	memset(buf, 0xa5, t->len + 64);
	n = rm_spool_read(sc->sp, e, 0, buf, t->len + 64);
	CHECK_INT(n, ==, (long long)t->len);
	CHECKF(memcmp(buf, t->data, t->len) == 0, "message %d: content read back differs", t->id);
	/* pieces at offsets (inside a record, across DATA records and buffers) */
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		uint64_t off = offs[i] < t->len ? offs[i] : t->len / 2;
		size_t want = 20000, expect = t->len - off < want ? (size_t)(t->len - off) : want;

		n = rm_spool_read(sc->sp, e, off, buf, want);
		CHECK_INT(n, ==, (long long)expect);
		CHECKF(memcmp(buf, t->data + off, expect) == 0, "message %d: read at offset %llu differs",
		       t->id, (unsigned long long)off);
	}
	/* at and past the end: nothing */
	CHECK_INT(rm_spool_read(sc->sp, e, t->len, buf, 10), ==, 0);
	CHECK_INT(rm_spool_read(sc->sp, e, t->len + 5, buf, 10), ==, 0);
}

static void tm_done(void *arg, uint64_t qid, int err)
{
	struct tmsg *t = arg;
	struct sc *sc = t->sc;

	t->done_calls++;
	t->done_qid = qid;
	t->done_err = err;
	t->m = NULL;
	if (sc->in_commit > 0)
		sc->acked_inside_commit++;
	if (err == 0)
		sc->acked++;
	else
		sc->failed++;
	if (err == 0 && t->verify_at_ack)
		verify_entry(sc, t);	/* acknowledged: written, so readable now */
	if (t->on_done != NULL)
		t->on_done(t);
}

/* A message whose callback came exactly once, with err 0 and its own qid. */
static void check_acked(const struct tmsg *t)
{
	CHECKF(t->done_calls == 1, "message %d: %d commit callbacks", t->id, t->done_calls);
	CHECKF(t->done_err == 0, "message %d: commit failed: %s", t->id, strerror(-t->done_err));
	CHECK_U64(t->done_qid, ==, t->qid);
	CHECK(t->qid != 0);
}

/* ---- the daemon ---------------------------------------------------------------------- */

static void pulse(struct rm_worker *w, void *arg)
{
	struct sc *sc = arg;

	if (!sc->finished)
		rm_worker_timer_set(w, &sc->pulse, 5);
}

static void on_worker_start(struct rm_worker *w, void *arg)
{
	struct sc *sc = arg;
	int rc;

	sc->w = w;
	rc = rm_spool_open(w, &sc->cfg, &sc->sp);
	if (rc != 0) {
		note_fail(__FILE__, __LINE__, "rm_spool_open: %s", strerror(-rc));
		sc->sp = NULL;
		sc->finished = true;
		return;
	}
	if (rm_spool_of(w) != sc->sp) {
		note_fail(__FILE__, __LINE__, "rm_spool_of does not return the opened spool");
		sc->finished = true;
		return;
	}
	sc->pulse.fire = pulse;
	sc->pulse.arg = sc;
	rm_worker_timer_set(w, &sc->pulse, 5);
	if (sc->start != NULL)
		sc->start(sc);
}

static bool on_worker_tick(struct rm_worker *w, void *arg)
{
	struct sc *sc = arg;

	if (!sc->finished && !FAILED() && sc->step != NULL)
		sc->step(sc);
	if (!sc->finished && !FAILED())
		return true;
	/* Done (or failed): let the spool's writes complete, then close it. */
	if (rm_file_ops_in_flight(w) > 0)
		return true;
	if (sc->sp != NULL) {
		rm_spool_close(sc->sp);
		sc->sp = NULL;
	}
	rm_worker_timer_cancel(w, &sc->pulse);
	return false;
}

/* One daemon run on the directory; the scenario's checks run inside. */
static void run_daemon(struct sc *sc)
{
	struct rm_daemon *d = calloc(1, sizeof(*d));
	char err[256];

	if (d == NULL)
		abort();
	d->worker_count = 1;
	d->hooks.worker_start = on_worker_start;
	d->hooks.worker_tick = on_worker_tick;
	d->hooks.arg = sc;
	atomic_store(&d->config_ptr, &sc->cfg);
	if (rm_daemon_bind(d, err, sizeof(err)) != 0) {
		note_fail(__FILE__, __LINE__, "rm_daemon_bind: %s", err);
		free(d);
		return;
	}
	if (rm_daemon_start(d) != 0) {
		note_fail(__FILE__, __LINE__, "rm_daemon_start failed");
		free(d);
		return;
	}
	rm_daemon_join(d);
	for (unsigned i = 0; i < d->worker_count; i++)
		free(d->workers[i]);
	free(d);
	if (!FAILED() && sc->acked_inside_commit > 0)
		note_fail(__FILE__, __LINE__, "%u commit callbacks ran inside rm_spool_commit",
			  sc->acked_inside_commit);
	for (unsigned i = 0; i < sc->nmsgs && !FAILED(); i++)
		if (sc->msgs[i].done_calls > 1)
			note_fail(__FILE__, __LINE__, "message %u: %d commit callbacks", i, sc->msgs[i].done_calls);
}

/* Fork, run body in the child with a fresh spool directory, report in the parent. */
static void run_isolated(const char *name, void (*body)(void))
{
	char tmpl[] = "/tmp/rm-test-spool-XXXXXX";
	int status = 0;
	pid_t pid;

	assert_non_null(mkdtemp(tmpl));
	snprintf(test_dir, sizeof(test_dir), "%s", tmpl);
	memset(shared, 0, sizeof(*shared));
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(CHILD_TIMEOUT_S);
		body();
		exit(FAILED() ? 1 : 0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	rm_rf(tmpl);
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);

		fail_msg("%s: the child died of signal %d (%s)%s%s%s", name, sig, strsignal(sig),
			 sig == SIGALRM ? ": stalled, nothing woke it up" :
			 sig == SIGABRT ? ": a panic (RM_ASSERT) or an abort, see stderr above" : "",
			 shared->fail[0] ? "; first check failure: " : "", shared->fail);
	}
	if (WEXITSTATUS(status) != 0 || shared->fail[0] != '\0')
		fail_msg("%s: %s", name, shared->fail[0] ? shared->fail :
			 "the child exited with an error and no check failure: a sanitizer report, see stderr above");
}

/* In the child's main thread (between daemons): record and leave the body. */
#define REQUIRE(cond) CHECK(cond)

/* ===== 1. one message: commit, queue entry, reading back; a large one ===================== */

static void commit_one_step(struct sc *sc)
{
	struct tmsg *a = &sc->msgs[0], *big = &sc->msgs[1];
	struct rm_queue_entry *e;

	switch (sc->phase) {
	case 0:
		CHECK_INT(tm_begin(a), ==, 0);
		tm_pump(a);
		CHECK(a->committed);
		sc->phase = 1;
		break;
	case 1:
		if (a->done_calls == 0)
			return;
		check_acked(a);
		verify_entry(sc, a);
		CHECK_INT(rm_queue_count(sc->sp), ==, 1);
		e = rm_queue_find(sc->sp, a->qid);
		CHECK(e != NULL && e->attempts == 0 && !e->hold && e->next_attempt_unix_ms == 0);
		CHECK_INT(e->rcpt_pending, ==, 2);
		CHECK_STR(e->last_error, "");
		CHECK_U64(stats(sc)->committed, ==, 1);
		/* a message of several MiB, offered in one append call */
		CHECK_INT(tm_begin(big), ==, 0);
		tm_pump(big);
		sc->phase = 2;
		break;
	case 2:
		if (big->done_calls == 0)
			return;
		check_acked(big);
		CHECKF(big->short_appends >= 1 && big->room_calls >= 1,
		       "the large message never met a full buffer (%u short appends, %u room calls)",
		       big->short_appends, big->room_calls);
		verify_entry(sc, big);
		e = rm_queue_find(sc->sp, big->qid);
		CHECK(e != NULL);
		/* DATA payloads are at most RM_SPOOL_PAYLOAD_MAX: several records */
		CHECK_INT(e->content_count, >=, (big->len + RM_SPOOL_PAYLOAD_MAX - 1) / RM_SPOOL_PAYLOAD_MAX);
		verify_entry(sc, a);
		CHECK_INT(rm_queue_count(sc->sp), ==, 2);
		CHECK_U64(a->qid, <, big->qid);
		sc->finished = true;
		break;
	}
}

static void body_commit_one(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	sc_init(sc);
	tm_new(sc, 1000, 2);
	tm_new(sc, 5 * MIB + 12345, 1);	/* > two buffers of 2 MiB */
	sc->step = commit_one_step;
	run_daemon(sc);
	sc_free(sc);
	free(sc);
}

static void test_commit_one_and_read(void **state)
{
	run_isolated("commit_one_and_read", body_commit_one);
}

/* ===== 2. group commit: 100 commits in one loop iteration, few syncs; a lone one pays one ===== */

#define GROUP_N 100

static void group_start(struct sc *sc)
{
	sc->u[0] = stats(sc)->syncs;
	for (int i = 0; i < GROUP_N; i++)
		CHECK_INT(tm_begin(&sc->msgs[i]), ==, 0);
	for (int i = 0; i < GROUP_N; i++) {
		tm_pump(&sc->msgs[i]);
		CHECKF(sc->msgs[i].committed, "message %d: commit returned %d", i, sc->msgs[i].commit_rc);
	}
	CHECKF(sc->acked + sc->failed == 0, "a commit was acknowledged before any write completed");
}

static void group_step(struct sc *sc)
{
	struct tmsg *lone = &sc->msgs[GROUP_N];

	switch (sc->phase) {
	case 0:
		if (sc->acked + sc->failed < GROUP_N)
			return;
		for (int i = 0; i < GROUP_N; i++) {
			check_acked(&sc->msgs[i]);
			for (int j = 0; j < i; j++)
				CHECK_U64(sc->msgs[i].qid, !=, sc->msgs[j].qid);
		}
		CHECKF(stats(sc)->syncs - sc->u[0] <= 3 && stats(sc)->syncs > sc->u[0],
		       "%d commits in one iteration cost %llu fdatasyncs (expected 1..3)", GROUP_N,
		       (unsigned long long)(stats(sc)->syncs - sc->u[0]));
		CHECK_INT(rm_queue_count(sc->sp), ==, GROUP_N);
		for (int i = 0; i < GROUP_N; i++)
			verify_entry(sc, &sc->msgs[i]);
		CHECK_U64(stats(sc)->committed, ==, GROUP_N);
		CHECK_U64(stats(sc)->queued, ==, GROUP_N);
		/* a lone commit: exactly one fdatasync */
		sc->u[1] = stats(sc)->syncs;
		CHECK_INT(tm_begin(lone), ==, 0);
		tm_pump(lone);
		CHECK(lone->committed && lone->done_calls == 0);
		sc->phase = 1;
		break;
	case 1:
		if (lone->done_calls == 0)
			return;
		check_acked(lone);
		CHECK_U64(stats(sc)->syncs, ==, sc->u[1] + 1);
		CHECK_INT(rm_queue_count(sc->sp), ==, GROUP_N + 1);
		sc->finished = true;
		break;
	}
}

static void body_group_commit(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	sc_init(sc);
	for (int i = 0; i <= GROUP_N; i++)
		tm_new(sc, 200 + (size_t)i * 37, 1 + (uint32_t)(i % 3));
	sc->start = group_start;
	sc->step = group_step;
	run_daemon(sc);
	sc_free(sc);
	free(sc);
}

static void test_group_commit(void **state)
{
	run_isolated("group_commit", body_group_commit);
}

/* ===== 3. no acknowledgement inside rm_spool_commit, also for commits made from callbacks ===== */

static void chain_a_done(struct tmsg *a)
{
	struct sc *sc = a->sc;
	struct tmsg *b = &sc->msgs[1], *c = &sc->msgs[2];

	CHECK_INT(a->done_err, ==, 0);
	/* From inside A's acknowledgement: commit B (begun earlier), and begin,
	 * fill and commit C.  Neither may be acknowledged before a later sync. */
	b->want_commit = true;
	tm_pump(b);
	CHECK(b->committed);
	CHECK_INT(b->done_calls, ==, 0);
	CHECK_INT(tm_begin(c), ==, 0);
	tm_pump(c);
	CHECK(c->committed);
	CHECK_INT(c->done_calls, ==, 0);
}

static void chain_start(struct sc *sc)
{
	struct tmsg *a = &sc->msgs[0], *b = &sc->msgs[1];

	CHECK_INT(tm_begin(a), ==, 0);
	CHECK_INT(tm_begin(b), ==, 0);
	b->want_commit = false;
	tm_pump(b);
	a->on_done = chain_a_done;
	tm_pump(a);
	CHECK(a->committed);
	CHECKF(a->done_calls == 0, "commit callback ran inside rm_spool_commit");
}

static void chain_step(struct sc *sc)
{
	struct tmsg *a = &sc->msgs[0], *b = &sc->msgs[1], *c = &sc->msgs[2];

	switch (sc->phase) {
	case 0:
		/* nothing can be durable in the iteration that committed it */
		CHECK_INT(a->done_calls, ==, 0);
		sc->phase = 1;
		break;
	case 1:
		if (b->done_calls == 0 || c->done_calls == 0)
			return;
		check_acked(a);
		check_acked(b);
		check_acked(c);
		CHECK_U64(stats(sc)->syncs, ==, 2);	/* A alone, then B and C together */
		CHECK_INT(rm_queue_count(sc->sp), ==, 3);
		sc->finished = true;
		break;
	}
}

static void chain_recovered_step(struct sc *sc)
{
	CHECK_INT(rm_queue_count(sc->sp), ==, 3);
	for (int i = 0; i < 3; i++)
		verify_entry(sc, &sc->msgs[i]);
	sc->finished = true;
}

static void body_no_ack_inside_commit(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	sc_init(sc);
	tm_new(sc, 3000, 1);
	tm_new(sc, 7000, 2);
	tm_new(sc, 11000, 1);
	sc->start = chain_start;
	sc->step = chain_step;
	run_daemon(sc);
	if (!FAILED()) {
		sc_next_run(sc, NULL, chain_recovered_step);
		run_daemon(sc);
	}
	sc_free(sc);
	free(sc);
}

static void test_no_ack_inside_commit(void **state)
{
	run_isolated("no_ack_inside_commit", body_no_ack_inside_commit);
}

/* ===== 4. recovery: delivered, deferred, partly delivered, held, deleted ====================== */

#define DEFER_TEXT "451 4.4.1 mx.example.net: connection refused"

static void recovery_start(struct sc *sc)
{
	for (int i = 0; i < 6; i++) {
		CHECK_INT(tm_begin(&sc->msgs[i]), ==, 0);
		tm_pump(&sc->msgs[i]);	/* M5 (3 MiB) commits later, from its room callback */
		CHECK(sc->msgs[i].committed || (i == 5 && sc->msgs[i].waiting));
	}
}

static void recovery_step(struct sc *sc)
{
	struct tmsg *m = sc->msgs;
	struct rm_queue_entry *e;
	uint64_t now = now_unix_ms();
	static const uint32_t idx02[] = { 0, 2 };

	if (sc->phase != 0 || sc->acked + sc->failed < 6)
		return;
	for (int i = 0; i < 6; i++)
		check_acked(&m[i]);
	CHECK_INT(rm_queue_count(sc->sp), ==, 6);
	/* M0: delivered (all recipients) */
	e = rm_queue_next_due(sc->sp, now);
	CHECK(e != NULL);
	CHECK_U64(e->qid, ==, m[0].qid);
	CHECK(e->in_delivery);
	CHECK_INT(rm_spool_mark_delivered(sc->sp, e, NULL, 0), ==, 0);
	CHECK(rm_queue_find(sc->sp, m[0].qid) == NULL);
	/* M1: deferred for an hour */
	e = rm_queue_next_due(sc->sp, now);
	CHECK(e != NULL);
	CHECK_U64(e->qid, ==, m[1].qid);
	sc->u[0] = now + 3600u * 1000u;
	CHECK_INT(rm_spool_mark_deferred(sc->sp, e, sc->u[0], DEFER_TEXT), ==, 0);
	CHECK_INT(e->attempts, ==, 1);
	CHECK_U64(e->next_attempt_unix_ms, ==, sc->u[0]);
	CHECK_STR(e->last_error, DEFER_TEXT);
	CHECK(!e->in_delivery);
	/* M2 (3 recipients): recipients 0 and 2 delivered, 1 pending */
	e = rm_queue_next_due(sc->sp, now);
	CHECK(e != NULL);
	CHECK_U64(e->qid, ==, m[2].qid);
	CHECK_INT(rm_spool_mark_delivered(sc->sp, e, idx02, 2), ==, 0);
	CHECK(rm_queue_find(sc->sp, m[2].qid) == e);
	CHECK_INT(e->rcpt_pending, ==, 1);
	CHECK_INT(e->rcpts[0].state, ==, RM_RCPT_DELIVERED);
	CHECK_INT(e->rcpts[1].state, ==, RM_RCPT_PENDING);
	CHECK_INT(e->rcpts[2].state, ==, RM_RCPT_DELIVERED);
	CHECK_INT(rm_spool_mark_delivered(sc->sp, e, (const uint32_t[]){ 3 }, 1), ==, -EINVAL);
	CHECK_INT(e->rcpt_pending, ==, 1);
	/* M3: held; M4: deleted */
	e = rm_queue_find(sc->sp, m[3].qid);
	CHECK(e != NULL);
	CHECK_INT(rm_spool_hold(sc->sp, e, true), ==, 0);
	CHECK(e->hold);
	e = rm_queue_find(sc->sp, m[4].qid);
	CHECK(e != NULL);
	CHECK_INT(rm_spool_delete(sc->sp, e), ==, 0);
	CHECK(rm_queue_find(sc->sp, m[4].qid) == NULL);
	/* due now: only M5 (M1 later, M3 held, M2 taken) */
	e = rm_queue_next_due(sc->sp, now);
	CHECK(e != NULL);
	CHECK_U64(e->qid, ==, m[5].qid);
	CHECK(rm_queue_next_due(sc->sp, now) == NULL);
	CHECK_INT(rm_queue_count(sc->sp), ==, 4);
	sc->phase = 1;
	sc->finished = true;	/* the tick waits for the marks' sync, then closes */
}

static void recovered_step(struct sc *sc)
{
	struct tmsg *m = sc->msgs, *n = &sc->msgs[6];
	struct rm_queue_entry *e;
	uint64_t now = now_unix_ms();
	uint64_t old_max_seq = 0;

	switch (sc->phase) {
	case 0:
		CHECK_INT(rm_queue_count(sc->sp), ==, 4);
		CHECK(rm_queue_find(sc->sp, m[0].qid) == NULL);	/* delivered */
		CHECK(rm_queue_find(sc->sp, m[4].qid) == NULL);	/* deleted */
		for (int i = 1; i <= 5; i++) {
			if (i == 4)
				continue;
			verify_entry(sc, &m[i]);
			e = rm_queue_find(sc->sp, m[i].qid);
			CHECK(!e->in_delivery);
			for (uint32_t x = 0; x < e->content_count; x++)
				if (e->content[x].seq > old_max_seq)
					old_max_seq = e->content[x].seq;
		}
		sc->u[2] = old_max_seq;
		e = rm_queue_find(sc->sp, m[1].qid);
		CHECK_INT(e->attempts, ==, 1);
		CHECK_U64(e->next_attempt_unix_ms, ==, sc->u[0]);
		CHECK_STR(e->last_error, DEFER_TEXT);
		CHECK(!e->hold);
		CHECK_INT(e->rcpt_pending, ==, 1);
		e = rm_queue_find(sc->sp, m[2].qid);
		CHECK_INT(e->rcpt_pending, ==, 1);
		CHECK_INT(e->rcpts[0].state, ==, RM_RCPT_DELIVERED);
		CHECK_INT(e->rcpts[1].state, ==, RM_RCPT_PENDING);
		CHECK_INT(e->rcpts[2].state, ==, RM_RCPT_DELIVERED);
		CHECK_INT(e->attempts, ==, 0);
		e = rm_queue_find(sc->sp, m[3].qid);
		CHECK(e->hold);
		CHECK_INT(e->rcpt_pending, ==, 1);
		e = rm_queue_find(sc->sp, m[5].qid);
		CHECK(!e->hold);
		CHECK_INT(e->rcpt_pending, ==, 2);
		CHECK_INT(e->attempts, ==, 0);
		CHECK_STR(e->last_error, "");
		/* due now: M2, M5 in queue id order; not the deferred M1 nor the held M3 */
		e = rm_queue_next_due(sc->sp, now);
		CHECK(e != NULL);
		CHECK_U64(e->qid, ==, m[2].qid);
		e = rm_queue_next_due(sc->sp, now);
		CHECK(e != NULL);
		CHECK_U64(e->qid, ==, m[5].qid);
		CHECK(rm_queue_next_due(sc->sp, now) == NULL);
		e = rm_queue_next_due(sc->sp, sc->u[0]);
		CHECK(e != NULL);
		CHECK_U64(e->qid, ==, m[1].qid);
		e = rm_queue_find(sc->sp, m[3].qid);
		CHECK_INT(rm_spool_hold(sc->sp, e, false), ==, 0);
		e = rm_queue_next_due(sc->sp, now);
		CHECK(e != NULL);
		CHECK_U64(e->qid, ==, m[3].qid);
		/* a new message: a later queue id, in a new segment */
		CHECK_INT(tm_begin(n), ==, 0);
		tm_pump(n);
		sc->phase = 1;
		break;
	case 1:
		if (n->done_calls == 0)
			return;
		check_acked(n);
		for (int i = 0; i < 6; i++)
			CHECK_U64(n->qid, >, m[i].qid);
		e = rm_queue_find(sc->sp, n->qid);
		CHECK(e != NULL);
		CHECK_U64(e->first_seq, >, sc->u[2]);
		CHECK_INT(rm_queue_count(sc->sp), ==, 5);
		sc->finished = true;
		break;
	}
}

static void body_recovery(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	sc_init(sc);
	tm_new(sc, 1500, 1);		/* M0 delivered */
	tm_new(sc, 2500, 1);		/* M1 deferred */
	tm_new(sc, 300000, 3);		/* M2 partly delivered */
	tm_new(sc, 4500, 1);		/* M3 held */
	tm_new(sc, 5500, 1);		/* M4 deleted */
	tm_new(sc, 3 * MIB + 5, 2);	/* M5 untouched, several DATA records */
	tm_new(sc, 777, 1);		/* N: after the restart */
	sc->start = recovery_start;
	sc->step = recovery_step;
	run_daemon(sc);
	if (!FAILED()) {
		sc_next_run(sc, NULL, recovered_step);
		run_daemon(sc);
	}
	sc_free(sc);
	free(sc);
}

static void test_recovery(void **state)
{
	run_isolated("recovery", body_recovery);
}

/* ===== 5. an uncommitted or aborted message is not recovered ================================== */

static void uncommitted_start(struct sc *sc)
{
	struct tmsg *u = &sc->msgs[0], *a = &sc->msgs[1], *c = &sc->msgs[2];

	u->want_commit = false;
	CHECK_INT(tm_begin(u), ==, 0);
	tm_pump(u);
	CHECK_INT(u->sent, ==, u->len);
	a->want_commit = false;
	CHECK_INT(tm_begin(a), ==, 0);
	tm_pump(a);
	tm_abort(a);
	/* C's commit writes U's and A's records too (same buffer) */
	CHECK_INT(tm_begin(c), ==, 0);
	tm_pump(c);
}

static void uncommitted_step(struct sc *sc)
{
	struct tmsg *u = &sc->msgs[0], *a = &sc->msgs[1], *c = &sc->msgs[2];

	if (c->done_calls == 0)
		return;
	check_acked(c);
	CHECK(rm_queue_find(sc->sp, u->qid) == NULL);
	CHECK(rm_queue_find(sc->sp, a->qid) == NULL);
	CHECK_INT(rm_queue_count(sc->sp), ==, 1);
	CHECK_INT(u->done_calls + a->done_calls, ==, 0);
	/* U is still open; give up the handle without anything written after
	 * (its ABORT record stays in the buffer): on disk it has no END. */
	tm_abort(u);
	sc->finished = true;
}

static void uncommitted_recovered_step(struct sc *sc)
{
	CHECK_INT(rm_queue_count(sc->sp), ==, 1);
	CHECK(rm_queue_find(sc->sp, sc->msgs[0].qid) == NULL);
	CHECK(rm_queue_find(sc->sp, sc->msgs[1].qid) == NULL);
	verify_entry(sc, &sc->msgs[2]);
	sc->finished = true;
}

static void body_uncommitted(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));
	struct rec_count rc;
	uint64_t lo, hi;

	sc_init(sc);
	tm_new(sc, 3000, 1);		/* U: never committed */
	tm_new(sc, 2000, 1);		/* A: aborted */
	tm_new(sc, 1000, 1);		/* C: committed */
	sc->start = uncommitted_start;
	sc->step = uncommitted_step;
	run_daemon(sc);
	if (FAILED())
		goto out;
	/* what is on disk makes the test meaningful */
	scan_records(sc->msgs[0].qid, &rc);
	REQUIRE(rc.begin == 1 && rc.data >= 1 && rc.end == 0 && rc.abort == 0);
	scan_records(sc->msgs[1].qid, &rc);
	REQUIRE(rc.begin == 1 && rc.end == 0 && rc.abort == 1);
	scan_records(sc->msgs[2].qid, &rc);
	REQUIRE(rc.begin == 1 && rc.end == 1);
	sc_next_run(sc, NULL, uncommitted_recovered_step);
	run_daemon(sc);
	if (FAILED())
		goto out;
	/* the second run wrote nothing: its segment file is empty; a third start copes */
	REQUIRE(count_segments(&lo, &hi) >= 2);
	REQUIRE(file_size(hi) == 0);
	sc_next_run(sc, NULL, uncommitted_recovered_step);
	run_daemon(sc);
out:
	sc_free(sc);
	free(sc);
}

static void test_uncommitted_not_recovered(void **state)
{
	run_isolated("uncommitted_not_recovered", body_uncommitted);
}

/* ===== 6. segment rotation, and deletion of segments once their messages are final ============ */

#define ROT_N 10
#define ROT_CONCURRENT 2

static void rotation_pump_active(struct sc *sc)
{
	unsigned active = 0;

	for (int i = 0; i < ROT_N; i++) {
		struct tmsg *t = &sc->msgs[i];

		if (t->begun && t->done_calls == 0 && !t->committed) {
			active++;
			if (!t->waiting)
				tm_pump(t);
		}
	}
	while (active < ROT_CONCURRENT && sc->k < ROT_N) {
		struct tmsg *t = &sc->msgs[sc->k];
		int rc = tm_begin(t);

		/* Both buffers busy (a new segment waits for the flight): next tick. */
		if (rc == -EAGAIN)
			break;
		CHECK_INT(rc, ==, 0);
		sc->k++;
		tm_pump(t);
		active++;
	}
}

static void rotation_step(struct sc *sc)
{
	uint64_t lo, hi, now = now_unix_ms();
	unsigned nseg;
	struct rm_queue_entry *e;
	struct tmsg *keep = NULL;

	switch (sc->phase) {
	case 0:		/* write ROT_N messages, ROT_CONCURRENT at a time, interleaved */
		rotation_pump_active(sc);
		if (sc->acked + sc->failed < ROT_N)
			return;
		for (int i = 0; i < ROT_N; i++)
			check_acked(&sc->msgs[i]);
		nseg = count_segments(&lo, &hi);
		CHECKF(nseg >= 3, "%u segment files after %u MiB in segments of 4 MiB", nseg,
		       (unsigned)(ROT_N * sc->msgs[0].len / MIB));
		CHECK_U64(stats(sc)->segments, ==, nseg);
		CHECK_U64(hi - lo + 1, ==, nseg);
		/* keep one message that began in a middle segment (prefer one spanning two) */
		for (int i = 0; i < ROT_N; i++) {
			e = rm_queue_find(sc->sp, sc->msgs[i].qid);
			CHECK(e != NULL);
			if (e->first_seq <= lo || e->first_seq >= hi)
				continue;
			if (keep == NULL || e->content[e->content_count - 1].seq != e->first_seq)
				keep = &sc->msgs[i];
		}
		CHECKF(keep != NULL, "no message began in a middle segment (%llu..%llu)",
		       (unsigned long long)lo, (unsigned long long)hi);
		sc->k = keep->id;
		e = rm_queue_find(sc->sp, keep->qid);
		sc->u[0] = e->first_seq;
		/* deliver all the others */
		for (unsigned guard = 0; guard < 2 * ROT_N && (e = rm_queue_next_due(sc->sp, now)) != NULL; guard++)
			if (e->qid != keep->qid)
				CHECK_INT(rm_spool_mark_delivered(sc->sp, e, NULL, 0), ==, 0);
		CHECK_INT(rm_queue_count(sc->sp), ==, 1);
		sc->phase = 1;
		break;
	case 1:		/* the marks are written: segments older than keep's BEGIN are gone */
		if (rm_file_ops_in_flight(sc->w) > 0)
			return;
		nseg = count_segments(&lo, &hi);
		CHECKF(lo == sc->u[0], "oldest segment %llu, the kept message began in %llu",
		       (unsigned long long)lo, (unsigned long long)sc->u[0]);
		CHECK_U64(hi - lo + 1, ==, nseg);
		CHECK_U64(stats(sc)->segments, ==, nseg);
		verify_entry(sc, &sc->msgs[sc->k]);	/* still readable, across segments */
		e = rm_queue_find(sc->sp, sc->msgs[sc->k].qid);
		CHECK(e != NULL);
		CHECK_INT(rm_spool_mark_delivered(sc->sp, e, NULL, 0), ==, 0);
		CHECK_INT(rm_queue_count(sc->sp), ==, 0);
		sc->t_mark = rm_now_ms();
		sc->phase = 2;
		break;
	case 2:		/* eventually only the current segment is left */
		nseg = count_segments(&lo, &hi);
		if ((nseg != 1 || rm_file_ops_in_flight(sc->w) > 0) && rm_now_ms() < sc->t_mark + 3000)
			return;
		CHECKF(nseg == 1, "%u segment files left (%llu..%llu) with every message delivered", nseg,
		       (unsigned long long)lo, (unsigned long long)hi);
		CHECK_U64(stats(sc)->segments, ==, 1);
		sc->finished = true;
		break;
	}
}

static void rotation_recovered_step(struct sc *sc)
{
	CHECK_INT(rm_queue_count(sc->sp), ==, 0);
	sc->finished = true;
}

static void body_rotation(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	sc_init(sc);
	sc->cfg.limits.spool_segment_bytes_max = 4 * MIB;
	for (int i = 0; i < ROT_N; i++) {
		struct tmsg *t = tm_new(sc, 3 * MIB / 2 + (size_t)i * 1000, 1);

		t->chunk = 256 * 1024;
		t->one_chunk = true;
	}
	sc->step = rotation_step;
	run_daemon(sc);
	if (!FAILED()) {
		sc_next_run(sc, NULL, rotation_recovered_step);
		run_daemon(sc);
	}
	sc_free(sc);
	free(sc);
}

static void test_segment_rotation_and_deletion(void **state)
{
	run_isolated("segment_rotation_and_deletion", body_rotation);
}

/* ===== 7. a failing write: the commit fails, open messages fail, a new segment follows ========= */

static void fsize_limit(struct sc *sc, uint64_t bytes)
{
	struct rlimit rl = sc->fsize_saved;

	rl.rlim_cur = bytes;
	if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
		note_fail(__FILE__, __LINE__, "setrlimit: %s", strerror(errno));
}

static void fsize_restore(struct sc *sc)
{
	if (setrlimit(RLIMIT_FSIZE, &sc->fsize_saved) != 0)
		note_fail(__FILE__, __LINE__, "setrlimit: %s", strerror(errno));
}

/* Commit A; then, with RLIMIT_FSIZE just past the segment's end, B (64 KiB) fails. */
static void fail_prepare_step(struct sc *sc)
{
	struct tmsg *a = &sc->msgs[0], *c1 = &sc->msgs[1], *c2 = &sc->msgs[2], *b = &sc->msgs[3];
	uint64_t lo, hi;

	switch (sc->phase) {
	case 0:
		CHECK_INT(tm_begin(a), ==, 0);
		tm_pump(a);
		sc->phase = 1;
		break;
	case 1:
		if (a->done_calls == 0)
			return;
		check_acked(a);
		/* two messages open across the failure */
		c1->want_commit = c2->want_commit = false;
		CHECK_INT(tm_begin(c1), ==, 0);
		tm_pump(c1);
		CHECK_INT(tm_begin(c2), ==, 0);
		tm_pump(c2);
		CHECK(count_segments(&lo, &hi) == 1);
		sc->u[0] = hi;
		sc->u[1] = file_size(hi);
		CHECK(sc->u[1] > 0);
		fsize_limit(sc, sc->u[1] + 4096);
		CHECK_INT(tm_begin(b), ==, 0);
		tm_pump(b);
		CHECK(b->committed);
		sc->phase = 2;
		break;
	}
}

/* No retry yet: lift the limit and wait past the retry interval before F begins. */
static void fail_wait_retry(struct sc *sc)
{
	fsize_restore(sc);
	sc->t_mark = rm_now_ms();
	sc->phase = 4;
}

static void fail_step(struct sc *sc)
{
	struct tmsg *a = &sc->msgs[0], *c1 = &sc->msgs[1], *c2 = &sc->msgs[2], *b = &sc->msgs[3];
	struct tmsg *d = &sc->msgs[4], *f = &sc->msgs[5];
	struct rm_queue_entry *e, *ea;
	uint64_t lo, hi;
	int rc;

	fail_prepare_step(sc);
	if (FAILED() || sc->phase < 2)
		return;
	switch (sc->phase) {
	case 2:
		if (b->done_calls == 0)
			return;
		CHECKF(b->done_err < 0, "a commit whose write failed was acknowledged with err %d", b->done_err);
		CHECK_INT(b->done_calls, ==, 1);
		CHECK_U64(b->done_qid, ==, b->qid);
		CHECK(rm_queue_find(sc->sp, b->qid) == NULL);
		CHECK_U64(stats(sc)->write_errors, >=, 1);
		CHECK_U64(stats(sc)->commit_failed, >=, 1);
		/* open messages fail at their next call, commits without a callback */
		CHECK(rm_spool_append(c1->m, "x", 1) < 0);
		tm_abort(c1);
		tm_commit(c2);
		CHECKF(c2->commit_rc < 0 && c2->commit_rc != -EAGAIN,
		       "commit of a message open across a failed write returned %d", c2->commit_rc);
		/* A was durable before: still queued and readable */
		verify_entry(sc, a);
		/* The disk still fails (the limit stays): D, 64 KiB, cannot be written either. */
		rc = tm_begin(d);
		if (rc != 0) {
			CHECKF(rc < 0 && rc != -EAGAIN, "begin after a failed write: %d", rc);
			fail_wait_retry(sc);
			return;
		}
		tm_pump(d);
		sc->phase = 3;
		break;
	case 3:
		if (d->done_calls == 0)
			return;
		CHECKF(d->done_err < 0, "a commit written past RLIMIT_FSIZE was acknowledged");
		CHECK(rm_queue_find(sc->sp, d->qid) == NULL);
		/* Either a new segment is tried at once, or begin fails until the retry interval. */
		rc = tm_begin(f);
		if (rc != 0) {
			CHECKF(rc < 0 && rc != -EAGAIN, "begin after a failed write: %d", rc);
			fail_wait_retry(sc);
			return;
		}
		fsize_restore(sc);
		tm_pump(f);
		sc->phase = 5;
		break;
	case 4:		/* limit lifted; a new segment is tried again after the retry interval */
		if (rm_now_ms() < sc->t_mark + 1100)
			return;
		CHECK_INT(tm_begin(f), ==, 0);
		tm_pump(f);
		sc->phase = 5;
		break;
	case 5:
		if (f->done_calls == 0)
			return;
		check_acked(f);
		e = rm_queue_find(sc->sp, f->qid);
		ea = rm_queue_find(sc->sp, a->qid);
		CHECK(e != NULL && ea != NULL);
		CHECKF(e->first_seq > ea->first_seq, "the message after the failure is in segment %llu, "
		       "the failed one was %llu", (unsigned long long)e->first_seq,
		       (unsigned long long)ea->first_seq);
		CHECK(count_segments(&lo, &hi) >= 2);
		CHECK(lo == ea->first_seq && hi == e->first_seq);
		CHECK_INT(c1->done_calls + c2->done_calls, ==, 0);
		CHECK_INT(rm_queue_count(sc->sp), ==, 2);
		verify_entry(sc, a);
		sc->finished = true;
		break;
	}
}

static void fail_recovered_step(struct sc *sc)
{
	CHECK_INT(rm_queue_count(sc->sp), ==, 2);
	verify_entry(sc, &sc->msgs[0]);
	verify_entry(sc, &sc->msgs[5]);
	for (int i = 1; i <= 4; i++)
		CHECK(rm_queue_find(sc->sp, sc->msgs[i].qid) == NULL);
	sc->finished = true;
}

static void body_write_failure(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	signal(SIGXFSZ, SIG_IGN);
	sc_init(sc);
	if (getrlimit(RLIMIT_FSIZE, &sc->fsize_saved) != 0)
		abort();
	tm_new(sc, 1000, 1);		/* A: before the failure */
	tm_new(sc, 100, 1);		/* C1: open across it, then appends */
	tm_new(sc, 100, 1);		/* C2: open across it, then commits */
	tm_new(sc, 64 * 1024, 1);	/* B: its write fails */
	tm_new(sc, 64 * 1024, 1);	/* D: fails too, while the limit stays */
	tm_new(sc, 2000, 1);		/* F: once the limit is lifted */
	sc->step = fail_step;
	run_daemon(sc);
	fsize_restore(sc);
	if (!FAILED()) {
		sc_next_run(sc, NULL, fail_recovered_step);
		run_daemon(sc);
	}
	signal(SIGXFSZ, SIG_DFL);
	sc_free(sc);
	free(sc);
}

static void test_write_failure(void **state)
{
	run_isolated("write_failure", body_write_failure);
}

/* ===== 7b. BUG: a message begun from the callback of a failed commit loses its BEGIN ============
 *
 * spool_failed() calls the failed commits' callbacks (fail_commits) before it
 * discards the fill buffer (stage_reset) and sets need_segment.  A callback
 * that begins the next message (allowed: "their callbacks may begin, append
 * and commit other messages") gets 0 from rm_spool_begin, its BEGIN record
 * going into the fill buffer that is then thrown away.  The message's content
 * and END later go to a new segment and the commit is acknowledged (err 0),
 * but no BEGIN of it exists anywhere: after a restart the acknowledged
 * message is gone.  The test fails at the recovery check.
 */

static void e_begin_room(void *arg);

static void e_try_begin(struct tmsg *e)
{
	struct sc *sc = e->sc;
	int rc = tm_begin(e);

	if (rc == -EAGAIN) {
		rm_spool_wait_begin(sc->sp, e_begin_room, e);
		return;
	}
	if (rc < 0) {
		sc->t_mark = rm_now_ms();	/* the tick tries again after the retry interval */
		sc->u[3] = 1;
	}
}

static void e_begin_room(void *arg)
{
	e_try_begin(arg);
}

static void b_failed(struct tmsg *b)
{
	struct sc *sc = b->sc;

	fsize_restore(sc);
	CHECKF(b->done_err < 0, "a commit whose write failed was acknowledged");
	/* the next message, begun from inside the callback */
	e_try_begin(&sc->msgs[2]);
}

static void begin_in_cb_step(struct sc *sc)
{
	struct tmsg *a = &sc->msgs[0], *b = &sc->msgs[1], *e = &sc->msgs[2];
	uint64_t lo, hi;

	switch (sc->phase) {
	case 0:
		CHECK_INT(tm_begin(a), ==, 0);
		tm_pump(a);
		sc->phase = 1;
		break;
	case 1:
		if (a->done_calls == 0)
			return;
		check_acked(a);
		CHECK(count_segments(&lo, &hi) == 1);
		fsize_limit(sc, file_size(hi) + 4096);
		b->on_done = b_failed;
		CHECK_INT(tm_begin(b), ==, 0);
		tm_pump(b);
		sc->phase = 2;
		break;
	case 2:		/* B failed; E is begun (now or after a retry); then it is filled and committed */
		if (b->done_calls == 0)
			return;
		if (!e->begun) {
			if (sc->u[3] != 0 && rm_now_ms() >= sc->t_mark + 1100) {
				sc->u[3] = 0;
				e_try_begin(e);
			}
			return;
		}
		tm_pump(e);
		sc->phase = 3;
		break;
	case 3:
		if (e->done_calls == 0)
			return;
		check_acked(e);		/* acknowledged: it must survive a restart */
		sc->finished = true;
		break;
	}
}

static void begin_in_cb_recovered_step(struct sc *sc)
{
	struct tmsg *e = &sc->msgs[2];

	verify_entry(sc, &sc->msgs[0]);
	CHECKF(rm_queue_find(sc->sp, e->qid) != NULL,
	       "BUG: message E (qid %016llx) was acknowledged with err 0 but is not recovered: its BEGIN, "
	       "written from the failed commit's callback, was discarded by spool_failed's stage_reset",
	       (unsigned long long)e->qid);
	verify_entry(sc, e);
	CHECK_INT(rm_queue_count(sc->sp), ==, 2);
	sc->finished = true;
}

static void body_begin_in_failed_callback(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	signal(SIGXFSZ, SIG_IGN);
	sc_init(sc);
	if (getrlimit(RLIMIT_FSIZE, &sc->fsize_saved) != 0)
		abort();
	tm_new(sc, 1000, 1);		/* A */
	tm_new(sc, 64 * 1024, 1);	/* B: its write fails */
	tm_new(sc, 3000, 1);		/* E: begun from B's callback */
	sc->step = begin_in_cb_step;
	run_daemon(sc);
	fsize_restore(sc);
	if (!FAILED()) {
		struct rec_count rc;

		scan_records(sc->msgs[2].qid, &rc);
		if (rc.end == 1 && rc.begin == 0)
			note_fail(__FILE__, __LINE__, "BUG: on disk, the acknowledged message E (qid %016llx) has "
				  "%u DATA records and its END but no BEGIN: the BEGIN written from the failed "
				  "commit's callback was discarded by spool_failed's stage_reset",
				  (unsigned long long)sc->msgs[2].qid, rc.data);
	}
	if (!FAILED()) {
		sc_next_run(sc, NULL, begin_in_cb_recovered_step);
		run_daemon(sc);
	}
	signal(SIGXFSZ, SIG_DFL);
	sc_free(sc);
	free(sc);
}

static void test_begin_in_failed_commit_callback(void **state)
{
	run_isolated("begin_in_failed_commit_callback (BUG: spool_failed order)", body_begin_in_failed_callback);
}

/* ===== 8. limits: size_max_bytes, receiving_max, messages_max ================================= */

static void limits_start(struct sc *sc)
{
	struct tmsg *x = &sc->msgs[0], *y = &sc->msgs[1];
	uint8_t chunk[1000];
	struct tmsg *extra = &sc->msgs[6];

	memset(chunk, 'x', sizeof(chunk));
	/* size_max_bytes = 1000 */
	x->size_max = 1000;
	CHECK_INT(tm_begin(x), ==, 0);
	CHECK_INT(rm_spool_append(x->m, chunk, 600), ==, 600);
	CHECK_INT(rm_spool_append(x->m, chunk, 401), ==, -EFBIG);
	CHECK_INT(rm_spool_append(x->m, chunk, 400), ==, 400);	/* exactly the limit */
	CHECK_INT(rm_spool_append(x->m, chunk, 1), ==, -EFBIG);
	CHECK_U64(rm_spool_msg_bytes(x->m), ==, 1000);
	tm_abort(x);
	y->size_max = y->len;		/* exactly at the limit: accepted */
	CHECK_INT(tm_begin(y), ==, 0);
	/* receiving_max = 4: y and three more, then -EMLINK */
	for (int i = 2; i <= 4; i++) {
		sc->msgs[i].want_commit = false;
		CHECK_INT(tm_begin(&sc->msgs[i]), ==, 0);
	}
	CHECK_INT(tm_begin(extra), ==, -EMLINK);
	CHECK(extra->m == NULL);
	/* an abort frees a place */
	tm_abort(&sc->msgs[4]);
	CHECK_INT(tm_begin(&sc->msgs[5]), ==, 0);
	CHECK_INT(tm_begin(extra), ==, -EMLINK);
	/* commit the four being received (committing ones count until acknowledged) */
	tm_pump(y);
	for (int i = 2; i <= 5; i++) {
		if (i == 4)
			continue;
		sc->msgs[i].want_commit = true;
		tm_pump(&sc->msgs[i]);
		CHECK(sc->msgs[i].committed);
	}
	CHECK(y->committed);
	CHECK_INT(tm_begin(extra), ==, -EMLINK);
}

static void limits_step(struct sc *sc)
{
	struct tmsg *y = &sc->msgs[1], *extra = &sc->msgs[6];
	struct rm_queue_entry *e;

	switch (sc->phase) {
	case 0:
		if (sc->acked + sc->failed < 4)
			return;
		check_acked(y);
		for (int i = 2; i <= 5; i++)
			if (i != 4)
				check_acked(&sc->msgs[i]);
		e = rm_queue_find(sc->sp, y->qid);
		CHECK(e != NULL);
		CHECK_U64(e->size_bytes, ==, y->len);
		CHECK_INT(rm_queue_count(sc->sp), ==, 4);
		/* messages_max = 6: 4 queued + 2 being received is the limit */
		for (int i = 7; i <= 8; i++) {
			sc->msgs[i].want_commit = false;
			CHECK_INT(tm_begin(&sc->msgs[i]), ==, 0);
		}
		CHECK_INT(tm_begin(extra), ==, -EMLINK);
		/* a delivered message frees a place */
		e = rm_queue_next_due(sc->sp, now_unix_ms());
		CHECK(e != NULL);
		CHECK_INT(rm_spool_mark_delivered(sc->sp, e, NULL, 0), ==, 0);
		CHECK_INT(tm_begin(extra), ==, 0);
		extra->want_commit = false;
		CHECK_INT(tm_begin(&sc->msgs[9]), ==, -EMLINK);
		tm_abort(extra);
		tm_abort(&sc->msgs[7]);
		tm_abort(&sc->msgs[8]);
		/* bad arguments */
		{
			struct rm_spool_envelope env;
			struct rm_spool_msg *m = (struct rm_spool_msg *)1;

			memset(&env, 0, sizeof(env));
			CHECK_INT(rm_spool_begin(sc->sp, &env, NULL, 0, 100, &m), ==, -EINVAL);
			CHECK(m == NULL);
		}
		sc->finished = true;
		break;
	}
}

static void body_limits(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	sc_init(sc);
	sc->cfg.limits.spool_receiving_max = 4;
	sc->cfg.limits.spool_messages_max = 6;
	for (int i = 0; i < 10; i++)
		tm_new(sc, 1000 + (size_t)i, 1);
	sc->start = limits_start;
	sc->step = limits_step;
	run_daemon(sc);
	sc_free(sc);
	free(sc);
}

static void test_limits(void **state)
{
	run_isolated("limits", body_limits);
}

/* ===== 9. BUG: more sessions waiting to begin than spool_receiving_max panics ==================
 *
 * rm_spool_begin says -EAGAIN while both buffers are busy whatever the number
 * of messages being received, and every such caller then calls
 * rm_spool_wait_begin; but the waiter table has only receiving_max entries
 * and rm_spool_wait_begin asserts (RM_ASSERT -> abort) when it is full.  With
 * the defaults (4096 receiving, 16384 connections per worker) a burst of
 * MAIL FROMs while a large message streams crashes the daemon.  Here:
 * receiving_max = 2, one large message fills both buffers, three sessions
 * begin: the third wait_begin aborts the process.
 */

static void waiter_room(void *arg);

static void waiter_try(struct tmsg *t)
{
	struct sc *sc = t->sc;
	int rc = tm_begin(t);

	if (rc == -EAGAIN) {
		t->commit_eagain++;	/* reused: times it had to wait */
		t->waiting = true;
		rm_spool_wait_begin(sc->sp, waiter_room, t);
		return;
	}
	if (rc == 0) {
		tm_abort(t);
		t->begin_rc = 0;
		t->committed = true;	/* reused: resolved */
		return;
	}
	CHECKF(rc == -EMLINK, "begin returned %d", rc);
	t->committed = true;		/* refused for the limit: resolved */
}

static void waiter_room(void *arg)
{
	struct tmsg *t = arg;

	t->waiting = false;
	t->room_calls++;
	waiter_try(t);
}

static void waiters_start(struct sc *sc)
{
	struct tmsg *x = &sc->msgs[0];

	CHECK_INT(tm_begin(x), ==, 0);
	tm_pump(x);
	CHECKF(x->waiting, "the large message did not fill both buffers");
	for (int i = 1; i <= 3; i++)
		waiter_try(&sc->msgs[i]);
}

static void waiters_step(struct sc *sc)
{
	if (sc->msgs[0].done_calls == 0)
		return;
	for (int i = 1; i <= 3; i++)
		if (!sc->msgs[i].committed)
			return;
	check_acked(&sc->msgs[0]);
	sc->finished = true;
}

static void body_begin_waiters(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	sc_init(sc);
	sc->cfg.limits.spool_receiving_max = 2;
	tm_new(sc, 6 * MIB, 1);
	for (int i = 0; i < 3; i++)
		tm_new(sc, 10, 1);
	sc->start = waiters_start;
	sc->step = waiters_step;
	run_daemon(sc);
	sc_free(sc);
	free(sc);
}

static void test_begin_waiters_beyond_receiving_max(void **state)
{
	run_isolated("begin_waiters_beyond_receiving_max (BUG: rm_spool_wait_begin table)", body_begin_waiters);
}

/* ===== 10. BUG: the null sender given as { NULL, 0 } ===========================================
 *
 * The record codec accepts an empty string with a NULL pointer (str_valid:
 * len == 0 || ptr != NULL), but entry_from_envelope copies reverse_path with
 * xstrndup -> memcpy(p, NULL, 0): undefined behaviour, which UBSan reports
 * ("null pointer passed as argument 2") and, with -fno-sanitize-recover,
 * stops on.  The null sender <> is every bounce's reverse path.
 */

static void null_sender_start(struct sc *sc)
{
	struct tmsg *t = &sc->msgs[0];

	t->null_sender_ptr = true;
	CHECK_INT(tm_begin(t), ==, 0);
	tm_pump(t);
}

static void null_sender_step(struct sc *sc)
{
	if (sc->msgs[0].done_calls == 0)
		return;
	check_acked(&sc->msgs[0]);
	sc->finished = true;
}

static void null_sender_recovered_step(struct sc *sc)
{
	verify_entry(sc, &sc->msgs[0]);
	sc->finished = true;
}

static void body_null_sender(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	sc_init(sc);
	tm_new(sc, 500, 1);
	sc->start = null_sender_start;
	sc->step = null_sender_step;
	run_daemon(sc);
	if (!FAILED()) {
		sc_next_run(sc, NULL, null_sender_recovered_step);
		run_daemon(sc);
	}
	sc_free(sc);
	free(sc);
}

static void test_null_sender_null_pointer(void **state)
{
	run_isolated("null_sender_null_pointer (BUG: memcpy from NULL in entry_from_envelope)", body_null_sender);
}

/* ===== 11. BUG: deferring a message that is still in the due index ===========================
 *
 * rm_spool_mark_deferred changes next_attempt_unix_ms and then calls
 * heap_insert, which returns at once when the entry is already in the heap
 * (heap_index != NONE): the heap is not re-sifted.  Deferring a message not
 * taken by rm_queue_next_due (an operator's "defer", or a mark on a message
 * found with rm_queue_find) leaves it at the top with a future time, and
 * rm_queue_next_due then returns NULL although other messages are due.
 */

static void defer_start(struct sc *sc)
{
	for (int i = 0; i < 2; i++) {
		CHECK_INT(tm_begin(&sc->msgs[i]), ==, 0);
		tm_pump(&sc->msgs[i]);
	}
}

static void defer_step(struct sc *sc)
{
	struct rm_queue_entry *e;
	uint64_t now = now_unix_ms();

	if (sc->acked + sc->failed < 2)
		return;
	check_acked(&sc->msgs[0]);
	check_acked(&sc->msgs[1]);
	e = rm_queue_find(sc->sp, sc->msgs[0].qid);	/* the earliest: top of the due index */
	CHECK(e != NULL && !e->in_delivery);
	CHECK_INT(rm_spool_mark_deferred(sc->sp, e, now + 3600u * 1000u, "deferred by hand"), ==, 0);
	e = rm_queue_next_due(sc->sp, now);
	CHECKF(e != NULL && e->qid == sc->msgs[1].qid,
	       "BUG: after deferring message 0 for an hour, rm_queue_next_due returns %s instead of message 1 "
	       "(mark_deferred does not re-sift an entry already in the due heap)",
	       e == NULL ? "NULL" : "another entry");
	CHECK(rm_queue_next_due(sc->sp, now) == NULL);
	sc->finished = true;
}

static void body_defer_queued(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	sc_init(sc);
	tm_new(sc, 100, 1);
	tm_new(sc, 200, 1);
	sc->start = defer_start;
	sc->step = defer_step;
	run_daemon(sc);
	sc_free(sc);
	free(sc);
}

static void test_defer_message_in_due_index(void **state)
{
	run_isolated("defer_message_in_due_index (BUG: heap not re-sifted)", body_defer_queued);
}

/* ===== next-hop index: messages listed under every next hop of their pending recipients ====== */

static bool count_hop(const char *nexthop, uint32_t messages, void *arg)
{
	(*(unsigned *)arg)++;
	return true;
}

static void hops_start(struct sc *sc)
{
	for (int i = 0; i < 2; i++) {
		CHECK_INT(tm_begin(&sc->msgs[i]), ==, 0);
		tm_pump(&sc->msgs[i]);
	}
}

static void hops_step(struct sc *sc)
{
	struct tmsg *m0 = &sc->msgs[0], *m1 = &sc->msgs[1];
	uint64_t now = now_unix_ms();
	struct rm_queue_entry *e, *e1;
	const uint32_t first = 0;
	unsigned hops = 0;
	char name[64];

	if (sc->acked + sc->failed < 2)
		return;
	check_acked(m0);
	check_acked(m1);
	rm_queue_nexthop_of("User@Mail.Example.", name, sizeof(name));
	CHECK_STR(name, "mail.example");
	rm_queue_nexthop_of("postmaster", name, sizeof(name));
	CHECK_STR(name, "");
	/* m0: one.example and two.example (written in two forms); m1: two.example */
	CHECK_INT(rm_queue_hop_messages(sc->sp, "one.example"), ==, 1);
	CHECK_INT(rm_queue_hop_messages(sc->sp, "two.example"), ==, 2);
	CHECK_INT(rm_queue_hop_messages(sc->sp, "three.example"), ==, 0);
	e = rm_queue_next_due_at(sc->sp, "one.example", now);
	CHECK(e != NULL && e->qid == m0->qid && e->in_delivery);
	CHECK(rm_queue_next_due_at(sc->sp, "one.example", now) == NULL);	/* in delivery */
	/* Its one.example recipient is delivered: that hop empties, two.example keeps it. */
	CHECK_INT(rm_spool_mark_delivered(sc->sp, e, &first, 1), ==, 0);
	CHECK_INT(rm_queue_hop_messages(sc->sp, "one.example"), ==, 0);
	CHECK_INT(rm_queue_hop_messages(sc->sp, "two.example"), ==, 2);
	CHECK_INT(rm_spool_mark_deferred(sc->sp, e, now + 3600u * 1000u, "later"), ==, 0);
	e1 = rm_queue_next_due_at(sc->sp, "two.example", now);
	CHECK(e1 != NULL && e1->qid == m1->qid);	/* m0 is not due for an hour */
	CHECK_INT(rm_spool_mark_deferred(sc->sp, e1, now + 3600u * 1000u, "later"), ==, 0);
	CHECK(rm_queue_next_due_at(sc->sp, "two.example", now) == NULL);
	CHECK(rm_queue_next_due(sc->sp, now) == NULL);
	/* flush of the domain (any case, trailing dot) makes both due again */
	CHECK_INT(rm_queue_flush(sc->sp, "TWO.Example.", now), ==, 2);
	CHECK_INT(rm_queue_flush(sc->sp, "one.example", now), ==, 0);
	e = rm_queue_next_due_at(sc->sp, "two.example", now);
	CHECK(e != NULL && e->qid == m0->qid);		/* the older first */
	rm_queue_hop_walk(sc->sp, count_hop, &hops);
	CHECK_INT(hops, ==, 1);
	sc->finished = true;
}

static void body_hops(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));
	struct tmsg *t;

	sc_init(sc);
	t = tm_new(sc, 300, 3);
	snprintf(t->rcpt[0], sizeof(t->rcpt[0]), "a@one.example");
	snprintf(t->rcpt[1], sizeof(t->rcpt[1]), "b@two.example");
	snprintf(t->rcpt[2], sizeof(t->rcpt[2]), "c@TWO.EXAMPLE.");
	t = tm_new(sc, 400, 1);
	snprintf(t->rcpt[0], sizeof(t->rcpt[0]), "d@two.example");
	sc->start = hops_start;
	sc->step = hops_step;
	run_daemon(sc);
	sc_free(sc);
	free(sc);
}

static void test_next_hop_index(void **state)
{
	run_isolated("next_hop_index", body_hops);
}

/* ===== a mark while both buffers are busy: kept and written, never refused ====================== */

/*
 * BUG: a mark made while one buffer was being written and the other was
 * full said -EAGAIN, which delivery (having nothing to wait with) ignored:
 * the message was delivered but stayed "being delivered" for good.
 */
static void marks_busy_start(struct sc *sc)
{
	CHECK_INT(tm_begin(&sc->msgs[0]), ==, 0);
	tm_pump(&sc->msgs[0]);
}

static void marks_busy_step(struct sc *sc)
{
	struct tmsg *c = &sc->msgs[0], *b = &sc->msgs[1];
	const uint32_t first = 0;
	struct rm_queue_entry *e;

	if (sc->phase == 0) {
		if (c->done_calls == 0)
			return;
		check_acked(c);
		e = rm_queue_next_due(sc->sp, now_unix_ms());
		CHECK(e != NULL && e->qid == c->qid);
		/* B fills the fill buffer while the first one is written: both busy. */
		CHECK_INT(tm_begin(b), ==, 0);
		tm_pump(b);
		CHECK(b->waiting && b->sent < b->len);
		CHECK_INT(rm_spool_mark_delivered(sc->sp, e, &first, 1), ==, 0);
		CHECK(rm_queue_find(sc->sp, c->qid) == NULL);
		sc->phase = 1;
		return;
	}
	if (b->done_calls == 0)
		return;
	/* B's commit is durable after the flight that took the kept mark. */
	check_acked(b);
	sc->finished = true;
}

static void marks_busy_recovered_step(struct sc *sc)
{
	CHECK(rm_queue_find(sc->sp, sc->msgs[0].qid) == NULL);
	CHECK_INT(rm_queue_count(sc->sp), ==, 1);
	verify_entry(sc, &sc->msgs[1]);
	sc->finished = true;
}

static void body_marks_busy(void)
{
	struct sc *sc = calloc(1, sizeof(*sc));

	sc_init(sc);
	tm_new(sc, 1000, 1);			/* C: committed, then delivered */
	tm_new(sc, 3 * 2 * MIB, 1);		/* B: more than both buffers */
	sc->start = marks_busy_start;
	sc->step = marks_busy_step;
	run_daemon(sc);
	if (FAILED())
		goto out;
	sc_next_run(sc, NULL, marks_busy_recovered_step);
	run_daemon(sc);
out:
	sc_free(sc);
	free(sc);
}

static void test_mark_while_buffers_busy(void **state)
{
	run_isolated("mark_while_buffers_busy (BUG: -EAGAIN ignored, message stuck in delivery)", body_marks_busy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commit_one_and_read),
		cmocka_unit_test(test_group_commit),
		cmocka_unit_test(test_no_ack_inside_commit),
		cmocka_unit_test(test_recovery),
		cmocka_unit_test(test_uncommitted_not_recovered),
		cmocka_unit_test(test_segment_rotation_and_deletion),
		cmocka_unit_test(test_write_failure),
		cmocka_unit_test(test_begin_in_failed_commit_callback),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_begin_waiters_beyond_receiving_max),
		cmocka_unit_test(test_null_sender_null_pointer),
		cmocka_unit_test(test_defer_message_in_due_index),
		cmocka_unit_test(test_next_hop_index),
		cmocka_unit_test(test_mark_while_buffers_busy),
	};

	shared = mmap(NULL, sizeof(*shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		return 1;
	rm_log_init("test_spool", RM_LOG_WARN, false);
	return cmocka_run_group_tests_name("spool", tests, NULL, NULL);
}
