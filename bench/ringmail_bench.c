/*
 * NAME
 *	ringmail-bench - load generator for ringmaild, built on the engine
 * SYNOPSIS
 *	ringmail-bench echo [--host A] [--port P] [--conns N] [--lines M]
 *		[--line-bytes L] [--pipeline K] [--ramp R] [common options]
 *	ringmail-bench idle [--host A] [--port P] [--conns N] [--hold S]
 *		[--ramp R] [common options]
 *	common options: [--workers W] [--time-limit S] [--connect-timeout MS]
 *		[--seed X] [--json] [-v]
 *	ringmail-bench spool --dir DIR [--writers N] [--size BYTES]
 *		[--messages M] [--workers W] [--keep] [--time-limit S] [--json] [-v]
 *	ringmail-bench spool-limit --dir DIR [--size BYTES] [--messages M]
 *		[--group G] [--keep] [--time-limit S] [--json]
 * DESCRIPTION
 *	The tool is itself an rm_daemon with no listener: every worker connects
 *	out with rm_conn_connect from its worker_start and worker_tick hooks, and
 *	drives its share of the connections (N / W, the first N % W workers one
 *	more) through the same session callbacks a protocol would use.  The
 *	server must speak the "echo" test protocol (tests/line_echo.h).
 *
 *	echo: each connection waits for the greeting, then sends M lines of L
 *	bytes (CR LF included; the text is pseudo-random printable ASCII that
 *	depends on the seed, the connection number and the line number, so
 *	nothing sent is kept: the expected echo is generated again when it
 *	arrives).  Lines go K per write; the next K are written only when every
 *	byte of the last K came back and matched, so at most K lines are ever
 *	outstanding and each batch gives one round-trip time.  Then QUIT, which
 *	must be answered "+OK bye" and a close.  Round-trip times go into a
 *	fixed-size log-linear histogram (about 3% resolution), not an array.
 *
 *	idle: opens N connections, waits for each greeting, and once every
 *	connection is settled (greeted, or failed) prints "ALL-ESTABLISHED N"
 *	(only when none failed) and flushes stdout, so that a script can sample
 *	the server's memory while they sit idle.  S seconds later every
 *	connection sends QUIT and must get "+OK bye" and a close.
 *
 *	New connections are paced by --ramp (connects per second for the whole
 *	run, split between workers; default 2000 in idle mode, unlimited in echo
 *	mode) and, whatever the ramp, at most CONNECTING_MAX per worker are in
 *	progress at once.  The engine has no worker-level timer, so a worker that
 *	must wake at a given time (next ramp slot, end of the hold) borrows the
 *	timer of one of its open connections (the "pacer"); the loop then runs
 *	worker_tick, which does the work.
 *
 *	Every run is bounded: after --time-limit seconds (default 300) the main
 *	thread asks the daemon to stop, open connections are aborted and count as
 *	failed, and the report says so.  SIGINT and SIGTERM do the same at once.
 *
 *	Only loopback targets are accepted (127.0.0.0/8, ::1, "localhost"): this
 *	is a test tool and must never load another host's network.
 *
 *	spool: durable commits per second of the spool (core/spool.h), no
 *	network.  Each of W workers (default 1) opens its spool in DIR/wNN from
 *	worker_start (rm_spool_open, configuration defaults but spool_dir = DIR)
 *	and runs its share of N writers and M messages.  A writer loops:
 *	rm_spool_begin (one recipient), BYTES of content through
 *	rm_spool_append in 4 KiB pieces (a short or zero return waits with
 *	rm_spool_wait_room and resumes from the room callback), rm_spool_commit
 *	(-EAGAIN: rm_spool_wait_room, then commit again), and it starts its next
 *	message only from the commit callback; -EAGAIN from begin waits with
 *	rm_spool_wait_begin.  A callback with err != 0, or any other error,
 *	counts as a failed message.  The run ends after M messages; the spool is
 *	closed on its worker when its writers are done and no file operation is
 *	in flight.  Reported: commits, seconds, commits/s, MB/s of content, the
 *	spool's own counters (syncs, writes: commits per fdatasync) and the
 *	commit latency from the first begin call to the durable callback
 *	(p50/p99/max, same histogram as echo).  A worker that sees no progress
 *	for STALL_REPORT_MS while writers wait and no file operation is in
 *	flight logs a "spool stalled" line with what each writer waits for.
 *
 *	spool-limit: the machine's own limit on the same file system, with no
 *	io_uring and no spool: one thread appends M records of BYTES to one new
 *	file DIR/spool-limit.dat with write(2) and calls fdatasync(2) after
 *	every G records (and once at the end).  G = 1 is one fdatasync per
 *	message; a large G is what perfect group commit could reach.
 *
 *	In both modes DIR must be new (it is created) or empty: anything else is
 *	refused so that runs never mix.  What the run wrote is deleted at the end
 *	(the segment files, the wNN directories, DIR when the run created it)
 *	unless --keep.  --time-limit stops the run (open messages are aborted,
 *	commits in flight are waited for, up to STOP_GRACE_MS more) and fails it.
 * DIAGNOSTICS
 *	Exit 0 only when every connection completed (echo: with every byte
 *	verified; idle: established and said bye; spool and spool-limit: all M
 *	messages durable, none failed); 1 when any failed or the time limit
 *	passed; 2 for bad usage or a failure to start (spool: DIR not empty, the
 *	spool did not open).  The report goes to stdout (--json adds one JSON
 *	line at the end); log lines go to stderr (warnings only, unless -v).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "core/config.h"
#include "core/engine.h"
#include "core/log.h"
#include "core/spool.h"

#define CONNECTING_MAX 256		/* connects in progress per worker */
#define PACER_POLL_MS 20		/* while waiting for other workers */
#define SHUTDOWN_GRACE_MS 2000		/* after the time limit */
#define FAILURES_LOGGED_MAX 5		/* detailed lines per worker */
#define LINE_BYTES_MIN 3		/* one character and CR LF */
#define LINE_BYTES_MAX (65536 + 2)	/* the server's line_length_max ceiling */
#define BATCH_BYTES_MAX (16u << 20)	/* pipeline x line-bytes */
#define CONNS_MAX 1000000u
#define IDLE_RAMP_DEFAULT 2000u
#define SPOOL_PIECE_BYTES 4096u		/* content arrives in pieces of this size */
#define SPOOL_SIZE_MAX (1u << 30)	/* --size */
#define SPOOL_MESSAGES_MAX 10000000u	/* --messages */
#define SPOOL_WRITERS_MAX 100000u	/* --writers */
#define SPOOL_GROUP_MAX 1000000u	/* --group */
#define STALL_REPORT_MS 3000		/* no progress, nothing in flight: say so */
#define STOP_GRACE_MS 5000		/* after the time limit, for commits in flight */
#define SMTP_ADDR_MAX_OPT 200u		/* --from, --to */
#define SMTP_CONNS_MAX_OPT 100000u	/* smtp --conns */
#define SMTP_SIZE_MAX_OPT (32u << 20)	/* smtp --size */
#define SMTP_RCPTS_MAX_OPT 1000u	/* --rcpts */

static const char greeting[] = "+OK echo ready\r\n";
static const char quit_line[] = "QUIT\r\n";
static const char bye[] = "+OK bye\r\n";

enum bench_mode { MODE_ECHO = 1, MODE_IDLE, MODE_SPOOL, MODE_SPOOL_LIMIT, MODE_SMTP, MODE_SINK };

struct bench_opts {
	enum bench_mode mode;
	char host[64];
	uint16_t port;
	union rm_sockaddr dest;
	socklen_t dest_len;
	union rm_sockaddr source;	/* --source: local address to connect from */
	socklen_t source_len;		/* 0 = the kernel chooses */
	uint32_t conns;
	uint32_t lines;
	uint32_t line_bytes;
	uint32_t pipeline;
	uint32_t hold_s;
	uint32_t ramp_per_s;		/* 0 = unlimited */
	uint32_t rate_per_s;		/* smtp: messages started per second, all sessions; 0 = as fast as replies come */
	uint32_t workers;
	uint32_t time_limit_s;
	uint32_t connect_timeout_ms;
	uint64_t seed;
	bool json;
	bool verbose;
	/* spool, spool-limit */
	char dir[240];
	uint32_t writers;
	uint64_t size_bytes;
	uint64_t messages;
	uint32_t group;
	bool keep;
	/* smtp */
	uint32_t rcpts;
	char from[256];
	char to[256];
	char helo[128];
	bool pipelining;
	bool bdat;
	uint32_t reply_timeout_ms;
	bool messages_set;		/* sink: stop after M messages */
};

/* ---- round-trip histogram --------------------------------------------------
 * Log-linear: values below 64 exactly, then 32 sub-buckets per power of two,
 * so any value is known to within 1/32.  Fixed size whatever the run length. */
#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_LINEAR 64u
#define HIST_BUCKETS (HIST_LINEAR + (64u - 6u) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t sum;
	uint64_t max;
	uint64_t buckets[HIST_BUCKETS];
};

static unsigned hist_index(uint64_t v)
{
	unsigned e;

	if (v < HIST_LINEAR)
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);		/* >= 6 */
	return HIST_LINEAR + (e - 6u) * HIST_SUB + (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The highest value that falls in bucket i. */
static uint64_t hist_upper(unsigned i)
{
	unsigned e, sub;

	if (i < HIST_LINEAR)
		return i;
	e = (i - HIST_LINEAR) / HIST_SUB + 6u;
	sub = (i - HIST_LINEAR) % HIST_SUB;
	return (((uint64_t)(HIST_SUB + sub) + 1) << (e - HIST_SUB_BITS)) - 1;
}

static void hist_add(struct hist *h, uint64_t v)
{
	unsigned i = hist_index(v);

	RM_ASSERT(i < HIST_BUCKETS);
	h->buckets[i]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

static void hist_merge(struct hist *into, const struct hist *from)
{
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		into->buckets[i] += from->buckets[i];
	into->count += from->count;
	into->sum += from->sum;
	if (from->max > into->max)
		into->max = from->max;
}

/* The value at quantile q (0..1]: the bucket's upper bound, never above the max seen. */
static uint64_t hist_quantile(const struct hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (h->count == 0)
		return 0;
	rank = (uint64_t)(q * (double)h->count + 0.999999);
	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= rank) {
			uint64_t v = hist_upper(i);

			return v < h->max ? v : h->max;
		}
	}
	return h->max;
}

/* ---- results ------------------------------------------------------------------ */

enum fail_reason {
	R_NONE = 0,
	R_CONNECT,		/* socket or connect failed */
	R_CONNECT_TIMEOUT,
	R_GREETING,		/* not "+OK echo ready" */
	R_MISMATCH,		/* echoed bytes differ from what was sent */
	R_UNEXPECTED,		/* bytes when none were due (e.g. "-ERR idle timeout") */
	R_BYE,			/* QUIT not answered "+OK bye" */
	R_EOF,			/* the server closed early */
	R_SOCKET,		/* the connection failed (reset, ...) */
	R_WRITE,		/* the engine refused our output */
	R_STOPPED,		/* time limit or signal */
	R_NOT_STARTED,		/* never connected: stopped first */
	R_COUNT
};

static const char *const reason_names[R_COUNT] = {
	[R_NONE] = "none",
	[R_CONNECT] = "connect failed",
	[R_CONNECT_TIMEOUT] = "connect timed out",
	[R_GREETING] = "bad greeting",
	[R_MISMATCH] = "echo mismatch",
	[R_UNEXPECTED] = "unexpected data",
	[R_BYE] = "bad reply to QUIT",
	[R_EOF] = "closed by server early",
	[R_SOCKET] = "socket error",
	[R_WRITE] = "output refused",
	[R_STOPPED] = "stopped (time limit or signal)",
	[R_NOT_STARTED] = "not started",
};

struct bench_result {
	uint64_t ok;
	uint64_t failed;
	uint64_t established;		/* greeting received */
	uint64_t byes;
	uint64_t lines;			/* lines echoed and verified */
	uint64_t bytes_verified;
	uint64_t bytes_sent;
	uint64_t mismatches;		/* bytes that differed */
	uint64_t reasons[R_COUNT];
	int last_connect_err;		/* -errno */
	struct hist rtt_us;		/* per batch */
};

/* ---- sessions and workers ----------------------------------------------------------- */

enum sess_state {
	S_UNUSED = 0,
	S_CONNECTING,
	S_GREETING,
	S_RUNNING,		/* echo: lines in flight */
	S_HOLDING,		/* idle: established, waiting for the end of the hold */
	S_QUIT_SENT,
	S_BYE,			/* "+OK bye" read; waiting for the server's close */
	S_DONE,			/* success; closing */
	S_FAILED,
};

struct bench_worker;

struct bench_session {
	struct bench_worker *bw;
	struct rm_conn *c;		/* NULL once closed */
	uint32_t conn_no;		/* global connection number: part of the line text */
	uint8_t state;			/* enum sess_state */
	uint8_t reason;			/* enum fail_reason, when failed */
	bool settled;			/* counted in shared.settled (idle) */
	uint32_t match_off;		/* bytes of the greeting or bye matched */
	uint32_t lines_sent;
	uint32_t rx_line;		/* line being verified */
	uint32_t rx_off;		/* bytes of it verified */
	uint64_t batch_start_us;
};

struct bench_shared;

struct bench_worker {
	struct bench_shared *sh;
	struct rm_worker *w;
	unsigned index;
	uint32_t first;			/* conn_no of this worker's first connection */
	uint32_t share;			/* connections this worker runs */
	uint32_t started;
	uint32_t connecting;
	uint32_t finished;		/* closed, ok or not */
	double ramp_per_ms;		/* 0 = unlimited */
	uint64_t t0_ms;
	uint64_t done_us;		/* when its share finished */
	bool quit_sent;			/* idle: the hold is over here */
	uint32_t failures_logged;
	struct bench_session *pacer;
	struct bench_session *sessions;	/* share entries */
	uint8_t *batch;			/* pipeline x line_bytes, to write a batch */
	struct bench_result r;
};

struct bench_shared {
	struct bench_opts opt;
	struct bench_worker *workers;
	uint64_t start_ms;
	uint64_t start_us;
	_Atomic uint64_t established;
	_Atomic uint64_t settled;	/* established, or failed before that */
	_Atomic uint64_t finished;
	_Atomic uint64_t all_settled_ms;	/* 0 until every connection settled */
};

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- line content ----------------------------------------------------------------------
 * Byte i of line n of connection k is a pure function of (seed, k, n, i), so the
 * receiver regenerates what it expects instead of keeping what it sent. */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* Bytes [from, from + len) of a line; the last two bytes of every line are CR LF. */
static void line_fill(const struct bench_opts *o, uint32_t conn_no, uint32_t line, uint32_t from,
		      uint32_t len, uint8_t *out)
{
	uint32_t text_len = o->line_bytes - 2;
	uint64_t key = mix64(o->seed ^ mix64(((uint64_t)conn_no << 32) | line));
	uint64_t block = UINT64_MAX, bits = 0;

	RM_ASSERT(from + len <= o->line_bytes);
	for (uint32_t i = 0; i < len; i++) {
		uint32_t pos = from + i;
		uint8_t b;

		if (pos >= text_len) {
			out[i] = pos == text_len ? '\r' : '\n';
			continue;
		}
		if (pos / 8 != block) {
			block = pos / 8;
			bits = mix64(key + block);
		}
		b = (uint8_t)(bits >> (8 * (pos % 8)));
		out[i] = (uint8_t)(0x21 + ((unsigned)b * 94u >> 8));	/* '!' .. '~' */
		/* A line must never read "QUIT": that would end the session. */
		if (pos == 0 && out[i] == 'Q')
			out[i] = 'q';
	}
}

/* Printable rendering of peer bytes for a log line (the logger turns control
 * characters into '?' anyway; this keeps CR/LF readable). */
static const char *escape(const uint8_t *p, size_t n, char *out, size_t size)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < size; i++) {
		uint8_t ch = p[i];

		if (ch == '\r' || ch == '\n') {
			out[o++] = '\\';
			out[o++] = ch == '\r' ? 'r' : 'n';
		} else if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
			out[o++] = (char)ch;
		} else {
			o += (size_t)snprintf(out + o, size - o, "\\x%02x", ch);
		}
	}
	if (o >= size)
		o = size - 1;
	out[o] = '\0';
	return out;
}

/* ---- session life ------------------------------------------------------------------------ */

static const struct rm_session_ops bench_ops;

static bool sess_final(const struct bench_session *s)
{
	return s->state == S_DONE || s->state == S_FAILED;
}

static void settle(struct bench_session *s, bool established)
{
	struct bench_shared *sh = s->bw->sh;
	uint64_t n;

	if (s->settled)
		return;
	s->settled = true;
	if (established)
		atomic_fetch_add_explicit(&sh->established, 1, memory_order_relaxed);
	n = atomic_fetch_add_explicit(&sh->settled, 1, memory_order_acq_rel) + 1;
	if (n == sh->opt.conns) {
		uint64_t est = atomic_load_explicit(&sh->established, memory_order_acquire);
		uint64_t t = rm_now_ms();

		atomic_store_explicit(&sh->all_settled_ms, t ? t : 1, memory_order_release);
		if (sh->opt.mode == MODE_IDLE) {
			/* The memory script keys on this line: print it at once. */
			if (est == sh->opt.conns)
				printf("ALL-ESTABLISHED %" PRIu64 "\n", est);
			else
				printf("SETTLED established %" PRIu64 " failed %" PRIu64 "\n", est,
				       (uint64_t)sh->opt.conns - est);
			fflush(stdout);
		}
	}
}

static void pacer_release(struct bench_session *s)
{
	if (s->bw->pacer != s)
		return;
	s->bw->pacer = NULL;
	if (s->c != NULL)
		rm_conn_timer(s->c, 0);
}

/* Record why the session failed (the first reason wins); log the first few. */
static bool note_failure(struct bench_session *s, enum fail_reason why, const char *detail)
{
	struct bench_worker *bw = s->bw;

	if (sess_final(s))
		return false;
	s->state = S_FAILED;
	s->reason = (uint8_t)why;
	/* A stop fails every open connection at once: the report counts them. */
	if (why != R_STOPPED && bw->failures_logged < FAILURES_LOGGED_MAX) {
		bw->failures_logged++;
		rm_warn(s->c != NULL ? s->c->id : 0, "connection %u: %s%s%s", s->conn_no, reason_names[why],
			detail != NULL ? ": " : "", detail != NULL ? detail : "");
	}
	pacer_release(s);
	return true;
}

/* The session failed: drop the connection now (on_close does the accounting). */
static void sess_fail(struct bench_session *s, enum fail_reason why, const char *detail)
{
	if (note_failure(s, why, detail) && s->c != NULL)
		rm_conn_abort(s->c, -EPROTO);
}

static void send_batch(struct bench_session *s)
{
	struct bench_worker *bw = s->bw;
	const struct bench_opts *o = &bw->sh->opt;
	uint32_t k = o->lines - s->lines_sent;
	size_t len;

	if (k > o->pipeline)
		k = o->pipeline;
	for (uint32_t i = 0; i < k; i++)
		line_fill(o, s->conn_no, s->lines_sent + i, 0, o->line_bytes, bw->batch + (size_t)i * o->line_bytes);
	len = (size_t)k * o->line_bytes;
	if (rm_conn_write(s->c, bw->batch, len) < 0) {
		sess_fail(s, R_WRITE, "batch does not fit the output queue");
		return;
	}
	s->lines_sent += k;
	bw->r.bytes_sent += len;
	s->batch_start_us = now_us();
}

static void send_quit(struct bench_session *s)
{
	if (rm_conn_send_static(s->c, quit_line, sizeof(quit_line) - 1) < 0) {
		sess_fail(s, R_WRITE, "QUIT does not fit the output queue");
		return;
	}
	s->state = S_QUIT_SENT;
	s->match_off = 0;
}

/* Match the next bytes against a fixed reply; returns bytes taken, or -1 on a difference. */
static long match_fixed(struct bench_session *s, const char *want, size_t want_len,
			const uint8_t *p, size_t n)
{
	size_t k = want_len - s->match_off;

	if (k > n)
		k = n;
	if (memcmp(p, want + s->match_off, k) != 0)
		return -1;
	s->match_off += (uint32_t)k;
	return (long)k;
}

/* Echo mode: check received bytes against the lines sent; returns bytes taken. */
static size_t verify_echo(struct bench_session *s, const uint8_t *p, size_t n)
{
	struct bench_worker *bw = s->bw;
	const struct bench_opts *o = &bw->sh->opt;
	uint8_t want[256];
	size_t pos = 0;

	while (pos < n && s->rx_line < s->lines_sent) {
		uint32_t k = o->line_bytes - s->rx_off;

		if (k > n - pos)
			k = (uint32_t)(n - pos);
		if (k > sizeof(want))
			k = sizeof(want);
		line_fill(o, s->conn_no, s->rx_line, s->rx_off, k, want);
		if (memcmp(want, p + pos, k) != 0) {
			char detail[200], got[64], exp[64];
			uint32_t bad = 0, first = UINT32_MAX;

			for (uint32_t i = 0; i < k; i++) {
				if (want[i] != p[pos + i]) {
					bad++;
					if (first == UINT32_MAX)
						first = i;
				}
			}
			if (first == UINT32_MAX)
				first = 0;	/* unreachable after memcmp != 0; keeps the analyzer sure */
			bw->r.mismatches += bad;
			snprintf(detail, sizeof(detail), "line %u byte %u: got \"%s\" want \"%s\"%s", s->rx_line,
				 s->rx_off + first, escape(p + pos + first, n - pos - first < 20 ? n - pos - first : 20, got, sizeof(got)),
				 escape(want + first, k - first < 20 ? k - first : 20, exp, sizeof(exp)),
				 s->rx_off == 0 && n - pos >= 18 && memcmp(p + pos, "-ERR line too long", 18) == 0 ?
				 " (the server's limits.line_length_max is below --line-bytes - 2)" : "");
			sess_fail(s, R_MISMATCH, detail);
			return n;
		}
		pos += k;
		s->rx_off += k;
		bw->r.bytes_verified += k;
		if (s->rx_off == o->line_bytes) {
			s->rx_off = 0;
			s->rx_line++;
			bw->r.lines++;
		}
	}
	return pos;
}

static void batch_done(struct bench_session *s)
{
	struct bench_worker *bw = s->bw;

	hist_add(&bw->r.rtt_us, now_us() - s->batch_start_us);
	if (s->lines_sent == bw->sh->opt.lines)
		send_quit(s);
	else
		send_batch(s);
}

static void greeted(struct bench_session *s)
{
	struct bench_worker *bw = s->bw;

	bw->r.established++;
	settle(s, true);
	if (bw->sh->opt.mode == MODE_IDLE) {
		s->state = S_HOLDING;
		return;
	}
	s->state = S_RUNNING;
	if (bw->sh->opt.lines == 0)
		send_quit(s);
	else
		send_batch(s);
}

static size_t bench_data(struct rm_conn *c, const struct rm_rx *rx)
{
	struct bench_session *s = c->session;
	const uint8_t *p = rx->data;
	size_t n = rx->len, pos = 0;
	char shown[64];

	RM_ASSERT(s != NULL && s->c == c);
	/* Everything is consumed: a client that verifies and drops never holds input. */
	while (pos < n && !sess_final(s)) {
		long k;

		switch (s->state) {
		case S_GREETING:
			k = match_fixed(s, greeting, sizeof(greeting) - 1, p + pos, n - pos);
			if (k < 0) {
				sess_fail(s, R_GREETING, escape(p + pos, n - pos < 40 ? n - pos : 40, shown, sizeof(shown)));
				break;
			}
			pos += (size_t)k;
			if (s->match_off == sizeof(greeting) - 1)
				greeted(s);
			break;
		case S_RUNNING:
			if (s->rx_line >= s->lines_sent) {
				sess_fail(s, R_UNEXPECTED, escape(p + pos, n - pos < 40 ? n - pos : 40, shown, sizeof(shown)));
				break;
			}
			pos += verify_echo(s, p + pos, n - pos);
			if (!sess_final(s) && s->rx_line == s->lines_sent && s->rx_off == 0)
				batch_done(s);
			break;
		case S_QUIT_SENT:
			k = match_fixed(s, bye, sizeof(bye) - 1, p + pos, n - pos);
			if (k < 0) {
				sess_fail(s, R_BYE, escape(p + pos, n - pos < 40 ? n - pos : 40, shown, sizeof(shown)));
				break;
			}
			pos += (size_t)k;
			if (s->match_off == sizeof(bye) - 1) {
				s->state = S_BYE;
				s->bw->r.byes++;
			}
			break;
		default:	/* S_HOLDING, S_BYE: nothing is due */
			sess_fail(s, R_UNEXPECTED, escape(p + pos, n - pos < 40 ? n - pos : 40, shown, sizeof(shown)));
			break;
		}
	}
	return n;
}

static void bench_connect(struct rm_conn *c, int err)
{
	struct bench_session *s = c->session;
	struct bench_worker *bw = s->bw;

	RM_ASSERT(s->state == S_CONNECTING);
	RM_ASSERT(bw->connecting > 0);
	bw->connecting--;
	if (err != 0) {
		/* The engine closes it next; on_close does the accounting. */
		bw->r.last_connect_err = err;
		note_failure(s, err == -ETIMEDOUT ? R_CONNECT_TIMEOUT : R_CONNECT, strerror(-err));
		return;
	}
	s->state = S_GREETING;
	s->match_off = 0;
	if (bw->pacer == NULL)
		bw->pacer = s;
}

static void bench_eof(struct rm_conn *c)
{
	struct bench_session *s = c->session;

	if (s->state != S_BYE) {
		sess_fail(s, R_EOF, NULL);
		return;
	}
	s->state = S_DONE;
	pacer_release(s);
	rm_conn_close(c);
}

/* Only the pacer's timer is ever armed; worker_tick runs right after this. */
static void bench_timeout(struct rm_conn *c)
{
}

static void bench_shutdown(struct rm_conn *c)
{
	struct bench_session *s = c->session;

	if (s->state == S_BYE) {
		/* Everything was verified; only the server's close was missing. */
		s->state = S_DONE;
		pacer_release(s);
		rm_conn_close(c);
		return;
	}
	if (s->state == S_CONNECTING) {
		RM_ASSERT(s->bw->connecting > 0);
		s->bw->connecting--;
	}
	sess_fail(s, R_STOPPED, NULL);
}

static void bench_close(struct rm_conn *c, int err)
{
	struct bench_session *s = c->session;
	struct bench_worker *bw = s->bw;
	struct bench_shared *sh = bw->sh;

	if (s->state == S_CONNECTING) {
		/* Killed before the connect reported (e.g. at shutdown). */
		RM_ASSERT(bw->connecting > 0);
		bw->connecting--;
		s->state = S_FAILED;
		s->reason = R_STOPPED;
	}
	if (s->state != S_DONE && s->state != S_FAILED) {
		s->state = S_FAILED;
		s->reason = err != 0 ? R_SOCKET : R_EOF;
		if (bw->failures_logged < FAILURES_LOGGED_MAX) {
			bw->failures_logged++;
			rm_warn(c->id, "connection %u: %s%s%s", s->conn_no, reason_names[s->reason],
				err != 0 ? ": " : "", err != 0 ? strerror(-err) : "");
		}
	}
	if (s->state == S_DONE) {
		bw->r.ok++;
	} else {
		bw->r.failed++;
		bw->r.reasons[s->reason]++;
	}
	settle(s, false);
	if (bw->pacer == s)
		bw->pacer = NULL;
	s->c = NULL;
	c->session = NULL;
	bw->finished++;
	atomic_fetch_add_explicit(&sh->finished, 1, memory_order_relaxed);
}

static const struct rm_session_ops bench_ops = {
	.protocol = "bench-client",
	.on_data = bench_data,
	.on_timeout = bench_timeout,
	.on_eof = bench_eof,
	.on_shutdown = bench_shutdown,
	.on_close = bench_close,
	.on_connect = bench_connect,
};

/* ---- the worker hooks ----------------------------------------------------------------- */

static void start_one(struct bench_worker *bw)
{
	struct bench_shared *sh = bw->sh;
	struct bench_session *s = &bw->sessions[bw->started];
	struct rm_connect_options co = {
		.dest = &sh->opt.dest.sa,
		.dest_len = sh->opt.dest_len,
		.source = sh->opt.source_len != 0 ? &sh->opt.source.sa : NULL,
		.source_len = sh->opt.source_len,
		.timeout_ms = sh->opt.connect_timeout_ms,
	};
	struct rm_conn *c;
	int err = 0;

	RM_ASSERT(bw->started < bw->share);
	memset(s, 0, sizeof(*s));
	s->bw = bw;
	s->conn_no = bw->first + bw->started;
	s->state = S_CONNECTING;
	bw->started++;
	c = rm_conn_connect(bw->w, &co, &bench_ops, s, &err);
	if (c == NULL) {
		/* No callback will come: account here. */
		s->state = S_FAILED;
		s->reason = R_CONNECT;
		bw->r.last_connect_err = err;
		bw->r.failed++;
		bw->r.reasons[R_CONNECT]++;
		if (bw->failures_logged < FAILURES_LOGGED_MAX) {
			bw->failures_logged++;
			rm_warn(0, "connection %u: cannot start: %s", s->conn_no, strerror(-err));
		}
		settle(s, false);
		bw->finished++;
		atomic_fetch_add_explicit(&sh->finished, 1, memory_order_relaxed);
		return;
	}
	s->c = c;
	bw->connecting++;
}

/* Start what the ramp allows; return when the next connect is due (UINT64_MAX: none). */
static uint64_t ramp(struct bench_worker *bw, uint64_t now_ms)
{
	uint64_t allowed, next;

	if (bw->ramp_per_ms <= 0) {
		allowed = bw->share;
	} else {
		/* One at once, then the rate: floor(rate x elapsed) + 1. */
		allowed = (uint64_t)(bw->ramp_per_ms * (double)(now_ms - bw->t0_ms)) + 1;
		if (allowed > bw->share)
			allowed = bw->share;
	}
	while (bw->started < allowed && bw->connecting < CONNECTING_MAX)
		start_one(bw);
	if (bw->started >= bw->share || bw->connecting >= CONNECTING_MAX)
		return UINT64_MAX;	/* done, or a connect completion will run the tick */
	next = bw->t0_ms + (uint64_t)((double)bw->started / bw->ramp_per_ms + 0.999);
	return next > now_ms ? next : now_ms + 1;
}

static void quit_all(struct bench_worker *bw)
{
	bw->quit_sent = true;
	for (uint32_t i = 0; i < bw->started; i++) {
		struct bench_session *s = &bw->sessions[i];

		if (s->state == S_HOLDING)
			send_quit(s);
	}
}

/* Some open connection whose timer can wake this worker, or NULL. */
static struct bench_session *find_pacer(struct bench_worker *bw)
{
	for (uint32_t i = 0; i < bw->started; i++) {
		struct bench_session *s = &bw->sessions[i];

		if (s->c != NULL && s->state >= S_GREETING && s->state <= S_QUIT_SENT)
			return s;
	}
	return NULL;
}

static bool bench_tick(struct rm_worker *w, void *arg)
{
	struct bench_worker *bw = rm_worker_user(w);
	struct bench_shared *sh = arg;
	uint64_t now = rm_worker_now_ms(w), wake = UINT64_MAX;

	RM_ASSERT(bw != NULL && bw->sh == sh);
	if (rm_worker_stopping(w)) {
		/* Time limit or signal: what never started counts as failed. */
		while (bw->started < bw->share) {
			struct bench_session *s = &bw->sessions[bw->started++];

			memset(s, 0, sizeof(*s));
			s->bw = bw;
			s->state = S_FAILED;
			bw->r.failed++;
			bw->r.reasons[R_NOT_STARTED]++;
			bw->finished++;
			atomic_fetch_add_explicit(&sh->finished, 1, memory_order_relaxed);
		}
	} else {
		if (bw->started < bw->share)
			wake = ramp(bw, now);
		if (sh->opt.mode == MODE_IDLE && !bw->quit_sent && bw->started == bw->share) {
			uint64_t settled_ms = atomic_load_explicit(&sh->all_settled_ms, memory_order_acquire);

			if (settled_ms == 0) {
				if (now + PACER_POLL_MS < wake)
					wake = now + PACER_POLL_MS;
			} else if (now >= settled_ms + (uint64_t)sh->opt.hold_s * 1000u) {
				quit_all(bw);
			} else if (settled_ms + (uint64_t)sh->opt.hold_s * 1000u < wake) {
				wake = settled_ms + (uint64_t)sh->opt.hold_s * 1000u;
			}
		}
		if (wake != UINT64_MAX) {
			if (bw->pacer == NULL)
				bw->pacer = find_pacer(bw);
			/* Without one the loop still wakes within a second. */
			if (bw->pacer != NULL)
				rm_conn_timer(bw->pacer->c, (uint32_t)(wake > now ? wake - now : 1));
		}
	}
	if (bw->finished < bw->share)
		return true;
	if (bw->done_us == 0)
		bw->done_us = now_us();
	return false;
}

static void bench_worker_start(struct rm_worker *w, void *arg)
{
	struct bench_shared *sh = arg;
	struct bench_worker *bw = &sh->workers[rm_worker_index(w)];

	bw->w = w;
	bw->t0_ms = rm_worker_now_ms(w);
	rm_worker_set_user(w, bw);
	/* The first connects go out now; the tick starts the rest. */
	if (bw->share > 0)
		ramp(bw, bw->t0_ms);
}

/* ---- options ---------------------------------------------------------------------------- */

static void usage(FILE *out)
{
	fprintf(out,
		"usage: ringmail-bench echo [options]   lines echoed byte-exact, pipelined\n"
		"       ringmail-bench idle [options]   many idle connections (memory tests)\n"
		"The server must speak the \"echo\" test protocol (ringmaild's echo listener).\n"
		"Common options:\n"
		"  --host ADDR           loopback only: 127.0.0.0/8, ::1 or localhost (default 127.0.0.1)\n"
		"  --source ADDR         connect from this loopback address (default: the kernel's choice)\n"
		"  --port PORT           default 2007\n"
		"  --conns N             connections (default 10 echo, 1000 idle)\n"
		"  --workers W           engine workers (default: online CPUs, at most N)\n"
		"  --ramp R              at most R new connects per second for the whole run\n"
		"                        (default unlimited for echo, %u for idle; 0 = unlimited)\n"
		"  --time-limit S        stop, report and fail after S seconds (default 300)\n"
		"  --connect-timeout MS  per connection (default 10000)\n"
		"  --json                add a one-line JSON report as the last line of stdout\n"
		"  -v, --verbose         log at info level and print progress every second\n"
		"  -h, --help            this help\n"
		"echo options:\n"
		"  --lines M             lines per connection (default 1000)\n"
		"  --line-bytes L        bytes per line, CR LF included (default 100, %u..%u;\n"
		"                        the server's limits.line_length_max must be >= L - 2)\n"
		"  --pipeline K          lines per write; at most K outstanding (default 1)\n"
		"  --seed X              varies the line content (default 1)\n"
		"idle options:\n"
		"  --hold S              seconds to stay idle once all are established (default 10)\n"
		"\n"
		"       ringmail-bench spool --dir DIR [options]         durable commits/s of the spool\n"
		"       ringmail-bench spool-limit --dir DIR [options]   write(2) + fdatasync(2) every G\n"
		"No network; --host, --port, --conns, --ramp and the echo and idle options do not apply.\n"
		"  --dir DIR             new or empty directory on the file system to measure\n"
		"  --size BYTES          content bytes per message (default 4096, 0..%u)\n"
		"  --messages M          messages in the whole run (default 1000)\n"
		"  --writers N           spool: concurrent writers (default 1)\n"
		"  --workers W           spool: workers, one spool each (default 1, at most N)\n"
		"  --group G             spool-limit: records per fdatasync (default 1)\n"
		"  --keep                leave what the run wrote in DIR\n"
		"  --time-limit S, --json, -v as above\n"
		"\n"
		"       ringmail-bench smtp [options]   SMTP load: messages answered 250 after the data\n"
		"  --host, --port (default 25), --source, --workers, --ramp, --connect-timeout as above\n"
		"  --conns N             sessions in the whole run (default 10; at most %u and M)\n"
		"  --messages M          messages in the whole run, spread over the sessions (default 1000)\n"
		"  --size BYTES          message size, headers included (default 4096, at most %u)\n"
		"  --rcpts K             recipients per message (default 1; K > 1: r1..rK@ the --to domain)\n"
		"  --from ADDR, --to ADDR  envelope (default sender@example.org, rcpt@example.com)\n"
		"  --helo NAME           EHLO argument (default ringmail-bench.localdomain)\n"
		"  --pipelining, --no-pipelining  MAIL, RCPT and DATA in one write when the server\n"
		"                        offers PIPELINING (default on)\n"
		"  --bdat                BDAT LAST instead of DATA when the server offers CHUNKING\n"
		"  --rate R              start at most R messages per second in all (open loop: latency\n"
		"                        at a given load, not at saturation); default 0 = as replies come\n"
		"  --timeout MS          for each reply (default 60000)\n"
		"  --duration S          same as --time-limit S (default 300)\n"
		"  --seed X, --json, -v  as above; every run also prints one RESULT key=value line\n"
		"\n"
		"       ringmail-bench sink --listen ADDR:PORT [options]   SMTP server that keeps nothing\n"
		"  --listen ADDR:PORT    loopback only (127.0.0.1:2525, [::1]:2525); refused if taken\n"
		"  --workers W           engine workers (default: online CPUs)\n"
		"  --duration S          stop after S seconds (default 3600); SIGTERM/SIGINT stop it too\n"
		"  --messages M          stop after M messages\n"
		"Exit status: 0 when every connection completed and verified (spool modes: every\n"
		"message durable), 1 otherwise, 2 usage or a failure to start.\n",
		IDLE_RAMP_DEFAULT, LINE_BYTES_MIN, LINE_BYTES_MAX, SPOOL_SIZE_MAX, SMTP_CONNS_MAX_OPT,
		SMTP_SIZE_MAX_OPT);
}

static bool parse_u64(const char *name, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	if (s == NULL || *s == '\0' || *s == '-')
		goto bad;
	v = strtoull(s, &end, 0);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		goto bad;
	*out = v;
	return true;
bad:
	fprintf(stderr, "ringmail-bench: --%s %s: must be an integer from %" PRIu64 " to %" PRIu64 "\n",
		name, s != NULL ? s : "", min, max);
	return false;
}

/* Numeric loopback addresses only: a load tool must not reach another host. */
static bool parse_loopback(const char *what, const char *host, uint16_t port, union rm_sockaddr *sa,
			   socklen_t *len)
{
	memset(sa, 0, sizeof(*sa));
	if (strcmp(host, "localhost") == 0)
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, &sa->in4.sin_addr) == 1) {
		if ((ntohl(sa->in4.sin_addr.s_addr) >> 24) != 127)
			goto bad;
		sa->in4.sin_family = AF_INET;
		sa->in4.sin_port = htons(port);
		*len = sizeof(sa->in4);
		return true;
	}
	if (inet_pton(AF_INET6, host, &sa->in6.sin6_addr) == 1) {
		if (!IN6_IS_ADDR_LOOPBACK(&sa->in6.sin6_addr))
			goto bad;
		sa->in6.sin6_family = AF_INET6;
		sa->in6.sin6_port = htons(port);
		*len = sizeof(sa->in6);
		return true;
	}
bad:
	fprintf(stderr, "ringmail-bench: --%s %s: only loopback addresses are allowed "
		"(127.0.0.0/8, ::1, localhost)\n", what, host);
	return false;
}

static bool parse_host(struct bench_opts *o, const char *host)
{
	if (strlen(host) >= sizeof(o->host)) {
		fprintf(stderr, "ringmail-bench: --host: too long\n");
		return false;
	}
	snprintf(o->host, sizeof(o->host), "%s", strcmp(host, "localhost") == 0 ? "127.0.0.1" : host);
	return parse_loopback("host", host, 0, &o->dest, &o->dest_len);
}

enum {
	OPT_HOST = 1000, OPT_PORT, OPT_CONNS, OPT_LINES, OPT_LINE_BYTES, OPT_PIPELINE, OPT_WORKERS,
	OPT_TIME_LIMIT, OPT_HOLD, OPT_RAMP, OPT_CONNECT_TIMEOUT, OPT_SEED, OPT_JSON, OPT_SOURCE,
	OPT_DIR, OPT_WRITERS, OPT_SIZE, OPT_MESSAGES, OPT_GROUP, OPT_KEEP,
	OPT_RATE, OPT_RCPTS, OPT_FROM, OPT_TO, OPT_HELO, OPT_PIPELINING, OPT_NO_PIPELINING, OPT_BDAT, OPT_TIMEOUT,
	OPT_DURATION, OPT_LISTEN,
};

/* sink --listen ADDR:PORT ([V6]:PORT): loopback only, like the targets. */
static bool parse_listen(struct bench_opts *o, const char *v)
{
	char host[64];
	const char *colon = strrchr(v, ':');
	const char *h = v;
	size_t hl;
	uint64_t port;

	if (colon == NULL || colon == v) {
		fprintf(stderr, "ringmail-bench: --listen %s: want ADDR:PORT (127.0.0.1:2525, [::1]:2525)\n", v);
		return false;
	}
	hl = (size_t)(colon - v);
	if (v[0] == '[' && hl >= 2 && v[hl - 1] == ']') {
		h = v + 1;
		hl -= 2;
	}
	if (hl >= sizeof(host) || hl >= sizeof(o->host)) {
		fprintf(stderr, "ringmail-bench: --listen: address too long\n");
		return false;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (!parse_u64("listen", colon + 1, 1, 65535, &port))
		return false;
	if (!parse_loopback("listen", host, (uint16_t)port, &o->dest, &o->dest_len))
		return false;
	snprintf(o->host, sizeof(o->host), "%s", strcmp(host, "localhost") == 0 ? "127.0.0.1" : host);
	o->port = (uint16_t)port;
	return true;
}

/* An address for MAIL FROM / RCPT TO as the bench writes it between < and >. */
static bool parse_smtp_addr(const char *name, const char *v, bool need_domain, char *out, size_t size)
{
	const char *at = strrchr(v, '@');
	size_t n = strlen(v);

	if (n >= SMTP_ADDR_MAX_OPT || n >= size)
		goto bad;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] <= ' ' || (unsigned char)v[i] >= 0x7f || v[i] == '<' || v[i] == '>')
			goto bad;
	if (need_domain && (at == NULL || at == v || at[1] == '\0'))
		goto bad;
	snprintf(out, size, "%s", v);
	return true;
bad:
	fprintf(stderr, "ringmail-bench: --%s '%s': want local@domain in printable ASCII, no spaces or "
		"angle brackets, under %u bytes%s\n", name, v, SMTP_ADDR_MAX_OPT,
		need_domain ? "" : " (or empty, the null reverse path)");
	return false;
}

/* The smtp mode's checks after the options were read; same convention as parse_args. */
static int check_smtp_args(struct bench_opts *o, bool spool_opt, bool echo_only, bool idle_only)
{
	if (spool_opt || echo_only || idle_only) {
		fprintf(stderr, "ringmail-bench: smtp: --dir, --writers, --group, --keep and the echo and idle "
			"options do not apply\n");
		return -1;
	}
	if (o->conns > SMTP_CONNS_MAX_OPT || o->size_bytes > SMTP_SIZE_MAX_OPT) {
		fprintf(stderr, "ringmail-bench: smtp: at most %u sessions and messages of %u bytes\n",
			SMTP_CONNS_MAX_OPT, SMTP_SIZE_MAX_OPT);
		return -1;
	}
	return 0;
}

static bool spool_mode(enum bench_mode m)
{
	return m == MODE_SPOOL || m == MODE_SPOOL_LIMIT;
}

/* The spool modes' checks after the options were read; same convention as parse_args. */
static int check_spool_args(struct bench_opts *o, const char *dir, bool net_opt, bool echo_only,
			    bool idle_only, bool workers_set, bool writers_set, bool group_set)
{
	const char *mode = o->mode == MODE_SPOOL ? "spool" : "spool-limit";

	if (net_opt || echo_only || idle_only) {
		fprintf(stderr, "ringmail-bench: %s: --host, --source, --port, --conns, --ramp, "
			"--connect-timeout and the echo and idle options do not apply\n", mode);
		return -1;
	}
	if (dir == NULL || *dir == '\0') {
		fprintf(stderr, "ringmail-bench: %s: --dir DIR is required\n", mode);
		return -1;
	}
	if (strlen(dir) >= sizeof(o->dir)) {
		fprintf(stderr, "ringmail-bench: --dir: at most %zu bytes\n", sizeof(o->dir) - 1);
		return -1;
	}
	snprintf(o->dir, sizeof(o->dir), "%s", dir);
	if (o->mode == MODE_SPOOL) {
		if (group_set) {
			fprintf(stderr, "ringmail-bench: --group is for spool-limit\n");
			return -1;
		}
		if (!workers_set)
			o->workers = 1;
		if (o->workers > o->writers)
			o->workers = o->writers;
		if (o->messages < o->workers)
			o->workers = o->messages > 0 ? (uint32_t)o->messages : 1;
	} else {
		if (workers_set || writers_set) {
			fprintf(stderr, "ringmail-bench: spool-limit is one thread: --workers and --writers "
				"are for spool\n");
			return -1;
		}
		o->workers = 0;
	}
	return 0;
}

/* Returns -1 to exit 2, 1 to exit 0 (help), 0 to run. */
static int parse_args(int argc, char **argv, struct bench_opts *o)
{
	static const struct option longopts[] = {
		{ "host", required_argument, NULL, OPT_HOST },
		{ "source", required_argument, NULL, OPT_SOURCE },
		{ "port", required_argument, NULL, OPT_PORT },
		{ "conns", required_argument, NULL, OPT_CONNS },
		{ "lines", required_argument, NULL, OPT_LINES },
		{ "line-bytes", required_argument, NULL, OPT_LINE_BYTES },
		{ "pipeline", required_argument, NULL, OPT_PIPELINE },
		{ "workers", required_argument, NULL, OPT_WORKERS },
		{ "time-limit", required_argument, NULL, OPT_TIME_LIMIT },
		{ "hold", required_argument, NULL, OPT_HOLD },
		{ "ramp", required_argument, NULL, OPT_RAMP },
		{ "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
		{ "seed", required_argument, NULL, OPT_SEED },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "dir", required_argument, NULL, OPT_DIR },
		{ "writers", required_argument, NULL, OPT_WRITERS },
		{ "size", required_argument, NULL, OPT_SIZE },
		{ "messages", required_argument, NULL, OPT_MESSAGES },
		{ "group", required_argument, NULL, OPT_GROUP },
		{ "keep", no_argument, NULL, OPT_KEEP },
		{ "rcpts", required_argument, NULL, OPT_RCPTS },
		{ "rate", required_argument, NULL, OPT_RATE },
		{ "from", required_argument, NULL, OPT_FROM },
		{ "to", required_argument, NULL, OPT_TO },
		{ "helo", required_argument, NULL, OPT_HELO },
		{ "pipelining", no_argument, NULL, OPT_PIPELINING },
		{ "no-pipelining", no_argument, NULL, OPT_NO_PIPELINING },
		{ "bdat", no_argument, NULL, OPT_BDAT },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "duration", required_argument, NULL, OPT_DURATION },
		{ "listen", required_argument, NULL, OPT_LISTEN },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *host = "127.0.0.1", *source = NULL, *dir = NULL;
	const char *from = "sender@example.org", *to = "rcpt@example.com", *listen_arg = NULL;
	bool time_set = false, size_set = false;
	bool ramp_set = false, echo_only = false, idle_only = false, smtp_opt = false, msg_opt = false;
	bool net_opt = false, spool_opt = false, workers_set = false, writers_set = false, group_set = false;
	uint64_t v;
	int opt;

	if (argc < 2) {
		usage(stderr);
		return -1;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return 1;
	}
	if (strcmp(argv[1], "echo") == 0) {
		o->mode = MODE_ECHO;
	} else if (strcmp(argv[1], "idle") == 0) {
		o->mode = MODE_IDLE;
	} else if (strcmp(argv[1], "spool") == 0) {
		o->mode = MODE_SPOOL;
	} else if (strcmp(argv[1], "spool-limit") == 0) {
		o->mode = MODE_SPOOL_LIMIT;
	} else if (strcmp(argv[1], "smtp") == 0) {
		o->mode = MODE_SMTP;
	} else if (strcmp(argv[1], "sink") == 0) {
		o->mode = MODE_SINK;
	} else {
		fprintf(stderr, "ringmail-bench: unknown mode '%s' (echo, idle, smtp, sink, spool or spool-limit)\n",
			argv[1]);
		usage(stderr);
		return -1;
	}
	o->port = o->mode == MODE_SMTP ? 25 : 2007;
	o->conns = o->mode == MODE_ECHO || o->mode == MODE_SMTP ? 10 : 1000;
	o->rcpts = 1;
	o->pipelining = true;
	o->reply_timeout_ms = 60000;
	snprintf(o->helo, sizeof(o->helo), "ringmail-bench.localdomain");
	o->lines = 1000;
	o->line_bytes = 100;
	o->pipeline = 1;
	o->hold_s = 10;
	o->time_limit_s = 300;
	o->connect_timeout_ms = 10000;
	o->seed = 1;
	o->writers = 1;
	o->size_bytes = 4096;
	o->messages = 1000;
	o->group = 1;
	optind = 2;
	while ((opt = getopt_long(argc, argv, "vh", longopts, NULL)) != -1) {
		switch (opt) {
		case OPT_HOST: host = optarg; net_opt = true; break;
		case OPT_SOURCE: source = optarg; net_opt = true; break;
		case OPT_PORT:
			if (!parse_u64("port", optarg, 1, 65535, &v)) return -1;
			o->port = (uint16_t)v;
			net_opt = true;
			break;
		case OPT_CONNS:
			if (!parse_u64("conns", optarg, 1, CONNS_MAX, &v)) return -1;
			o->conns = (uint32_t)v;
			net_opt = true;
			break;
		case OPT_LINES:
			if (!parse_u64("lines", optarg, 0, UINT32_MAX, &v)) return -1;
			o->lines = (uint32_t)v;
			echo_only = true;
			break;
		case OPT_LINE_BYTES:
			if (!parse_u64("line-bytes", optarg, LINE_BYTES_MIN, LINE_BYTES_MAX, &v)) return -1;
			o->line_bytes = (uint32_t)v;
			echo_only = true;
			break;
		case OPT_PIPELINE:
			if (!parse_u64("pipeline", optarg, 1, 65536, &v)) return -1;
			o->pipeline = (uint32_t)v;
			echo_only = true;
			break;
		case OPT_SEED:
			if (!parse_u64("seed", optarg, 0, UINT64_MAX, &v)) return -1;
			o->seed = v;
			if (o->mode != MODE_SMTP)
				echo_only = true;
			break;
		case OPT_WORKERS:
			if (!parse_u64("workers", optarg, 1, RM_WORKERS_MAX, &v)) return -1;
			o->workers = (uint32_t)v;
			workers_set = true;
			break;
		case OPT_TIME_LIMIT:
			if (!parse_u64("time-limit", optarg, 1, 86400, &v)) return -1;
			o->time_limit_s = (uint32_t)v;
			time_set = true;
			break;
		case OPT_HOLD:
			if (!parse_u64("hold", optarg, 0, 86400, &v)) return -1;
			o->hold_s = (uint32_t)v;
			idle_only = true;
			break;
		case OPT_RAMP:
			if (!parse_u64("ramp", optarg, 0, 10000000, &v)) return -1;
			o->ramp_per_s = (uint32_t)v;
			ramp_set = true;
			net_opt = true;
			break;
		case OPT_CONNECT_TIMEOUT:
			if (!parse_u64("connect-timeout", optarg, 1, 3600000, &v)) return -1;
			o->connect_timeout_ms = (uint32_t)v;
			net_opt = true;
			break;
		case OPT_JSON: o->json = true; break;
		case OPT_DIR: dir = optarg; spool_opt = true; break;
		case OPT_WRITERS:
			if (!parse_u64("writers", optarg, 1, SPOOL_WRITERS_MAX, &v)) return -1;
			o->writers = (uint32_t)v;
			spool_opt = writers_set = true;
			break;
		case OPT_SIZE:
			if (!parse_u64("size", optarg, 0, SPOOL_SIZE_MAX, &v)) return -1;
			o->size_bytes = v;
			msg_opt = size_set = true;
			break;
		case OPT_MESSAGES:
			if (!parse_u64("messages", optarg, 1, SPOOL_MESSAGES_MAX, &v)) return -1;
			o->messages = v;
			o->messages_set = true;
			msg_opt = true;
			break;
		case OPT_GROUP:
			if (!parse_u64("group", optarg, 1, SPOOL_GROUP_MAX, &v)) return -1;
			o->group = (uint32_t)v;
			spool_opt = group_set = true;
			break;
		case OPT_KEEP: o->keep = true; spool_opt = true; break;
		case OPT_RATE:
			if (!parse_u64("rate", optarg, 0, 10000000, &v)) return -1;
			o->rate_per_s = (uint32_t)v;
			smtp_opt = true;
			break;
		case OPT_RCPTS:
			if (!parse_u64("rcpts", optarg, 1, SMTP_RCPTS_MAX_OPT, &v)) return -1;
			o->rcpts = (uint32_t)v;
			smtp_opt = true;
			break;
		case OPT_FROM: from = optarg; smtp_opt = true; break;
		case OPT_TO: to = optarg; smtp_opt = true; break;
		case OPT_HELO:
			if (strlen(optarg) == 0 || strlen(optarg) >= sizeof(o->helo) || strpbrk(optarg, " \r\n\t") != NULL) {
				fprintf(stderr, "ringmail-bench: --helo: a domain of at most %zu bytes\n",
					sizeof(o->helo) - 1);
				return -1;
			}
			snprintf(o->helo, sizeof(o->helo), "%s", optarg);
			smtp_opt = true;
			break;
		case OPT_PIPELINING: o->pipelining = true; smtp_opt = true; break;
		case OPT_NO_PIPELINING: o->pipelining = false; smtp_opt = true; break;
		case OPT_BDAT: o->bdat = true; smtp_opt = true; break;
		case OPT_TIMEOUT:
			if (!parse_u64("timeout", optarg, 1, 3600000, &v)) return -1;
			o->reply_timeout_ms = (uint32_t)v;
			smtp_opt = true;
			break;
		case OPT_DURATION:
			if (!parse_u64("duration", optarg, 1, 86400, &v)) return -1;
			o->time_limit_s = (uint32_t)v;
			time_set = true;
			break;
		case OPT_LISTEN: listen_arg = optarg; break;
		case 'v': o->verbose = true; break;
		case 'h': usage(stdout); return 1;
		default: usage(stderr); return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ringmail-bench: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (o->mode == MODE_SINK) {
		if (net_opt || echo_only || idle_only || spool_opt || smtp_opt || size_set) {
			fprintf(stderr, "ringmail-bench: sink takes --listen, --workers, --duration, --messages "
				"and -v only\n");
			return -1;
		}
		if (listen_arg == NULL) {
			fprintf(stderr, "ringmail-bench: sink: --listen ADDR:PORT is required\n");
			return -1;
		}
		if (!time_set)
			o->time_limit_s = 3600;
		return parse_listen(o, listen_arg) ? 0 : -1;
	}
	if (listen_arg != NULL) {
		fprintf(stderr, "ringmail-bench: --listen is for sink mode\n");
		return -1;
	}
	if (spool_mode(o->mode)) {
		if (smtp_opt) {
			fprintf(stderr, "ringmail-bench: the smtp options are for smtp mode\n");
			return -1;
		}
		return check_spool_args(o, dir, net_opt, echo_only, idle_only, workers_set, writers_set,
					group_set);
	}
	if (o->mode == MODE_SMTP) {
		if (check_smtp_args(o, spool_opt, echo_only, idle_only) < 0 ||
		    !parse_smtp_addr("from", from, false, o->from, sizeof(o->from)) ||
		    !parse_smtp_addr("to", to, true, o->to, sizeof(o->to)))
			return -1;
	} else if (smtp_opt) {
		fprintf(stderr, "ringmail-bench: --rcpts, --from, --to, --helo, --[no-]pipelining, --bdat and "
			"--timeout are for smtp mode\n");
		return -1;
	}
	if (o->mode != MODE_SMTP && (spool_opt || msg_opt)) {
		fprintf(stderr, "ringmail-bench: --dir, --writers, --size, --messages, --group and --keep "
			"are for the spool modes\n");
		return -1;
	}
	if (!parse_host(o, host))
		return -1;
	if (source != NULL) {
		if (!parse_loopback("source", source, 0, &o->source, &o->source_len))
			return -1;
		if (o->source.sa.sa_family != o->dest.sa.sa_family) {
			fprintf(stderr, "ringmail-bench: --source %s and --host %s are of different families\n",
				source, host);
			return -1;
		}
	}
	if (o->mode == MODE_ECHO && idle_only) {
		fprintf(stderr, "ringmail-bench: --hold is for idle mode\n");
		return -1;
	}
	if (o->mode == MODE_IDLE && echo_only) {
		fprintf(stderr, "ringmail-bench: --lines, --line-bytes, --pipeline and --seed are for echo mode\n");
		return -1;
	}
	if ((uint64_t)o->pipeline * o->line_bytes > BATCH_BYTES_MAX) {
		fprintf(stderr, "ringmail-bench: --pipeline x --line-bytes must be at most %u bytes\n",
			BATCH_BYTES_MAX);
		return -1;
	}
	if (!ramp_set && o->mode == MODE_IDLE)
		o->ramp_per_s = IDLE_RAMP_DEFAULT;
	if (o->dest.sa.sa_family == AF_INET)
		o->dest.in4.sin_port = htons(o->port);
	else
		o->dest.in6.sin6_port = htons(o->port);
	return 0;
}

/* ---- start-up and report ------------------------------------------------------------------- */

static bool raise_fd_limit(uint32_t conns)
{
	struct rlimit rl;
	uint64_t want = (uint64_t)conns + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return true;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < want) {
		fprintf(stderr, "ringmail-bench: --conns %u needs %" PRIu64 " open files; the limit is %llu "
			"(hard limit %llu): lower --conns or raise the hard limit\n", conns, want,
			(unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
		return false;
	}
	return true;
}

/* The bench daemon's configuration: no listener, pools sized for this run. */
static void make_config(const struct bench_opts *o, struct rm_config *cfg)
{
	uint32_t share_max = (o->conns + o->workers - 1) / o->workers;
	uint64_t batch = (uint64_t)o->pipeline * o->line_bytes;
	uint64_t out_max, blocks;

	rm_config_defaults(cfg);
	cfg->workers = o->workers;
	cfg->log_level = o->verbose ? RM_LOG_INFO : RM_LOG_WARN;
	cfg->listener_count = 0;
	cfg->control_socket[0] = '\0';
	cfg->limits.connections_per_worker = share_max + 16;
	/* A new batch may be queued before the previous send completion is reaped. */
	out_max = 2 * batch + 4096;
	if (out_max < cfg->limits.output_bytes_max)
		out_max = cfg->limits.output_bytes_max;
	cfg->limits.output_bytes_max = (uint32_t)out_max;
	/* Untouched blocks cost nothing (the engine maps them MAP_NORESERVE). */
	blocks = o->mode == MODE_ECHO ? (uint64_t)share_max * (2 * ((batch + 4095) / 4096) + 2) + 64 : 64;
	if (blocks < cfg->limits.write_blocks_per_worker)
		blocks = cfg->limits.write_blocks_per_worker;
	if (blocks > 1048576)
		blocks = 1048576;
	cfg->limits.write_blocks_per_worker = (uint32_t)blocks;
	cfg->limits.connect_timeout_ms = o->connect_timeout_ms;
	cfg->limits.shutdown_timeout_ms = SHUTDOWN_GRACE_MS;
}

static double seconds_between(uint64_t from_ms, uint64_t to_ms)
{
	return to_ms > from_ms ? (double)(to_ms - from_ms) / 1000.0 : 0.0;
}

static double seconds_between_us(uint64_t from_us, uint64_t to_us)
{
	return to_us > from_us ? (double)(to_us - from_us) / 1e6 : 0.0;
}

static void print_reasons(const struct bench_result *r)
{
	for (unsigned i = 1; i < R_COUNT; i++) {
		if (r->reasons[i] == 0)
			continue;
		printf("  failed: %-30s %" PRIu64 "%s%s\n", reason_names[i], r->reasons[i],
		       i == R_CONNECT && r->last_connect_err ? "  last error: " : "",
		       i == R_CONNECT && r->last_connect_err ? strerror(-r->last_connect_err) : "");
	}
}

static bool report(const struct bench_shared *sh, const struct bench_result *r, uint64_t end_us, bool timed_out,
		   bool interrupted)
{
	const struct bench_opts *o = &sh->opt;
	double elapsed = seconds_between_us(sh->start_us, end_us);
	uint64_t settled_ms = atomic_load(&sh->all_settled_ms);
	bool pass;

	if (o->mode == MODE_ECHO) {
		double lps = elapsed > 0 ? (double)r->lines / elapsed : 0;
		double mbps = elapsed > 0 ? (double)r->bytes_verified / elapsed / 1e6 : 0;
		uint64_t p50 = hist_quantile(&r->rtt_us, 0.50), p99 = hist_quantile(&r->rtt_us, 0.99);

		pass = !timed_out && !interrupted && r->ok == o->conns && r->failed == 0 && r->mismatches == 0 &&
		       r->lines == (uint64_t)o->conns * o->lines;
		printf("ringmail-bench echo: %s port %u, %u connections x %u lines x %u bytes, pipeline %u, "
		       "%u workers\n", o->host, o->port, o->conns, o->lines, o->line_bytes, o->pipeline, o->workers);
		printf("  connections       ok %" PRIu64 "  failed %" PRIu64 "\n", r->ok, r->failed);
		print_reasons(r);
		printf("  lines verified    %" PRIu64 " of %" PRIu64 "\n", r->lines, (uint64_t)o->conns * o->lines);
		printf("  bytes verified    %" PRIu64 " (sent %" PRIu64 ")\n", r->bytes_verified, r->bytes_sent);
		printf("  mismatches        %" PRIu64 " bytes\n", r->mismatches);
		printf("  elapsed           %.3f s\n", elapsed);
		printf("  throughput        %.0f lines/s  %.2f MB/s (echoed bytes verified, 1 MB = 10^6 B)\n",
		       lps, mbps);
		printf("  batch round trip  p50 %" PRIu64 " us  p99 %" PRIu64 " us  max %" PRIu64 " us  "
		       "(%" PRIu64 " batches)\n", p50, p99, r->rtt_us.max, r->rtt_us.count);
		if (timed_out)
			printf("  TIME LIMIT of %u s reached\n", o->time_limit_s);
		if (interrupted)
			printf("  INTERRUPTED\n");
		printf("  result            %s\n", pass ? "PASS" : "FAIL");
		if (o->json)
			printf("{\"mode\":\"echo\",\"host\":\"%s\",\"port\":%u,\"conns\":%u,\"lines_per_conn\":%u,"
			       "\"line_bytes\":%u,\"pipeline\":%u,\"workers\":%u,\"ok\":%" PRIu64 ",\"failed\":%" PRIu64 ","
			       "\"lines\":%" PRIu64 ",\"bytes_verified\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 ","
			       "\"mismatches\":%" PRIu64 ",\"elapsed_s\":%.3f,\"lines_per_s\":%.0f,\"mb_per_s\":%.3f,"
			       "\"rtt_us\":{\"batches\":%" PRIu64 ",\"p50\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"max\":%" PRIu64 "},"
			       "\"timed_out\":%s,\"pass\":%s}\n",
			       o->host, o->port, o->conns, o->lines, o->line_bytes, o->pipeline, o->workers, r->ok,
			       r->failed, r->lines, r->bytes_verified, r->bytes_sent, r->mismatches, elapsed, lps, mbps,
			       r->rtt_us.count, p50, p99, r->rtt_us.max, timed_out ? "true" : "false",
			       pass ? "true" : "false");
	} else {
		double est_s = settled_ms ? seconds_between(sh->start_ms, settled_ms) : 0;

		pass = !timed_out && !interrupted && r->established == o->conns && r->byes == o->conns &&
		       r->ok == o->conns && r->failed == 0;
		printf("ringmail-bench idle: %s port %u, %u connections, ramp %u/s, hold %u s, %u workers\n",
		       o->host, o->port, o->conns, o->ramp_per_s, o->hold_s, o->workers);
		printf("  established       %" PRIu64 " of %u", r->established, o->conns);
		if (settled_ms)
			printf(" (all settled after %.3f s)", est_s);
		printf("\n  failed            %" PRIu64 "\n", r->failed);
		print_reasons(r);
		printf("  said bye          %" PRIu64 "\n", r->byes);
		printf("  elapsed           %.3f s\n", elapsed);
		if (timed_out)
			printf("  TIME LIMIT of %u s reached\n", o->time_limit_s);
		if (interrupted)
			printf("  INTERRUPTED\n");
		printf("  result            %s\n", pass ? "PASS" : "FAIL");
		if (o->json)
			printf("{\"mode\":\"idle\",\"host\":\"%s\",\"port\":%u,\"conns\":%u,\"workers\":%u,"
			       "\"ramp_per_s\":%u,\"hold_s\":%u,\"established\":%" PRIu64 ",\"failed\":%" PRIu64 ","
			       "\"byes\":%" PRIu64 ",\"established_s\":%.3f,\"elapsed_s\":%.3f,\"timed_out\":%s,"
			       "\"pass\":%s}\n",
			       o->host, o->port, o->conns, o->workers, o->ramp_per_s, o->hold_s, r->established,
			       r->failed, r->byes, est_s, elapsed, timed_out ? "true" : "false", pass ? "true" : "false");
	}
	fflush(stdout);
	return pass;
}

/* ---- spool modes ---------------------------------------------------------------------------
 * No network: the workers drive the spool directly (spool), or one thread
 * drives write(2) and fdatasync(2) (spool-limit). */

enum writer_state {
	W_IDLE = 0,		/* between messages */
	W_BEGIN,		/* about to call rm_spool_begin */
	W_WAIT_BEGIN,		/* begin said -EAGAIN: rm_spool_wait_begin */
	W_APPEND,		/* appending content */
	W_WAIT_APPEND,		/* append took less than offered: rm_spool_wait_room */
	W_COMMIT,		/* about to call rm_spool_commit */
	W_WAIT_COMMIT,		/* commit said -EAGAIN: rm_spool_wait_room */
	W_COMMITTING,		/* commit accepted: its callback is owed */
	W_DONE,
	W_STATES
};

static const char *const writer_state_names[W_STATES] = {
	[W_IDLE] = "idle", [W_BEGIN] = "begin", [W_WAIT_BEGIN] = "waiting for begin room",
	[W_APPEND] = "append", [W_WAIT_APPEND] = "waiting for append room", [W_COMMIT] = "commit",
	[W_WAIT_COMMIT] = "waiting for commit room", [W_COMMITTING] = "waiting for the commit callback",
	[W_DONE] = "done",
};

enum spool_fail {
	SF_BEGIN = 0,		/* rm_spool_begin: -errno other than -EAGAIN */
	SF_APPEND,		/* rm_spool_append: -errno */
	SF_COMMIT,		/* rm_spool_commit: -errno other than -EAGAIN */
	SF_CALLBACK,		/* the commit callback's err != 0 */
	SF_COUNT
};

static const char *const spool_fail_names[SF_COUNT] = {
	[SF_BEGIN] = "rm_spool_begin", [SF_APPEND] = "rm_spool_append",
	[SF_COMMIT] = "rm_spool_commit", [SF_CALLBACK] = "commit callback",
};

struct spool_worker;

struct spool_writer {
	struct spool_worker *sw;
	uint32_t no;			/* in the whole run */
	uint8_t state;			/* enum writer_state */
	struct rm_spool_msg *m;		/* from begin until commit is accepted, or abort */
	uint64_t sent;			/* content bytes the spool took */
	uint64_t begin_us;		/* first begin call of this message */
};

struct spool_stats_copy {
	uint64_t committed, commit_failed, syncs, writes, bytes_written, segments, write_errors;
};

struct spool_worker {
	struct spool_shared *ss;
	struct rm_worker *w;
	struct rm_spool *sp;		/* NULL before open, after close */
	unsigned index;
	uint32_t writer_count;
	uint64_t quota;			/* messages this worker runs */
	uint64_t started;		/* messages taken from the quota (at the first begin call) */
	uint64_t committed;		/* callbacks with err 0 */
	uint64_t failed;
	uint64_t aborted;		/* open messages dropped at a stop */
	uint64_t fails[SF_COUNT];
	int last_err;
	uint32_t failures_logged;
	uint32_t active;		/* writers not W_DONE */
	int open_err;			/* rm_spool_open's result */
	bool opened, closed, stopping, stall_reported;
	uint64_t t0_us, last_commit_us;
	uint64_t last_progress_ms;
	struct spool_stats_copy st;
	struct hist lat_us;
	struct spool_writer *writers;
};

struct spool_shared {
	struct bench_opts opt;
	struct spool_worker *workers;
	_Atomic int stop;		/* time limit or signal: finish what is in flight */
	_Atomic uint32_t workers_done;
};

/* Content the writers append: pseudo-random bytes, the same for every message. */
static uint8_t spool_content[SPOOL_PIECE_BYTES];

static const char spool_sender[] = "bench@ringmail-bench.invalid";
static const char spool_rcpt[] = "sink@ringmail-bench.invalid";
static const char spool_client[] = "127.0.0.1";
static const char spool_helo[] = "ringmail-bench";

static void writer_run(struct spool_writer *wr);

static void writer_fail(struct spool_writer *wr, enum spool_fail why, int err)
{
	struct spool_worker *sw = wr->sw;

	sw->failed++;
	sw->fails[why]++;
	sw->last_err = err;
	if (sw->failures_logged < FAILURES_LOGGED_MAX) {
		sw->failures_logged++;
		rm_warn(0, "spool worker %u writer %u: %s: %s", sw->index, wr->no, spool_fail_names[why],
			strerror(-err));
	}
}

static void writer_done(struct spool_writer *wr)
{
	RM_ASSERT(wr->sw->active > 0);
	wr->state = W_DONE;
	wr->sw->active--;
}

static void spool_progress(struct spool_worker *sw)
{
	sw->last_progress_ms = rm_worker_now_ms(sw->w);
	sw->stall_reported = false;
}

static void spool_begin_room(void *arg)
{
	struct spool_writer *wr = arg;

	/* A writer stopped while it waited is W_DONE: the late call is ignored. */
	if (wr->state != W_WAIT_BEGIN)
		return;
	spool_progress(wr->sw);
	wr->state = W_BEGIN;
	writer_run(wr);
}

static void spool_append_room(void *arg)
{
	struct spool_writer *wr = arg;

	RM_ASSERT(wr->state == W_WAIT_APPEND);
	spool_progress(wr->sw);
	wr->state = W_APPEND;
	writer_run(wr);
}

static void spool_commit_room(void *arg)
{
	struct spool_writer *wr = arg;

	RM_ASSERT(wr->state == W_WAIT_COMMIT);
	spool_progress(wr->sw);
	wr->state = W_COMMIT;
	writer_run(wr);
}

static void spool_commit_done(void *arg, uint64_t qid, int err)
{
	struct spool_writer *wr = arg;
	struct spool_worker *sw = wr->sw;
	uint64_t t = now_us();

	RM_ASSERT(wr->state == W_COMMITTING);
	wr->m = NULL;		/* the handle is gone after this callback */
	if (err == 0) {
		sw->committed++;
		hist_add(&sw->lat_us, t - wr->begin_us);
	} else {
		writer_fail(wr, SF_CALLBACK, err);
	}
	sw->last_commit_us = t;
	spool_progress(sw);
	wr->state = W_IDLE;
	writer_run(wr);		/* the next message starts only here */
}

/*
 * Drive one writer as far as it goes without waiting.  Every pass of the loop
 * either returns (waiting, done) or ends a message that failed at once, so the
 * loop is bounded by the worker's quota.
 */
static void writer_run(struct spool_writer *wr)
{
	struct spool_worker *sw = wr->sw;
	const struct bench_opts *o = &sw->ss->opt;

	for (uint64_t guard = 0; guard <= sw->quota + 1; guard++) {
		switch (wr->state) {
		case W_IDLE:
			if (sw->stopping || sw->started >= sw->quota) {
				writer_done(wr);
				return;
			}
			/* Taken now, not when begin succeeds: a writer waiting for begin
			 * room holds its message, so the run never exceeds M. */
			sw->started++;
			wr->begin_us = now_us();
			wr->state = W_BEGIN;
			/* fall through */
		case W_BEGIN: {
			struct rm_spool_envelope env = {
				.received_unix_ms = (uint64_t)time(NULL) * 1000u,
				.reverse_path = { spool_sender, sizeof(spool_sender) - 1 },
				.client_addr = { spool_client, sizeof(spool_client) - 1 },
				.helo = { spool_helo, sizeof(spool_helo) - 1 },
			};
			struct rm_spool_rcpt rcpt = { .addr = { spool_rcpt, sizeof(spool_rcpt) - 1 } };
			int rc = rm_spool_begin(sw->sp, &env, &rcpt, 1, o->size_bytes, &wr->m);

			if (rc == -EAGAIN) {
				wr->state = W_WAIT_BEGIN;
				rm_spool_wait_begin(sw->sp, spool_begin_room, wr);
				return;
			}
			if (rc < 0) {
				wr->m = NULL;
				writer_fail(wr, SF_BEGIN, rc);
				wr->state = W_IDLE;
				continue;
			}
			wr->sent = 0;
			wr->state = W_APPEND;
		}
			/* fall through */
		case W_APPEND:
			while (wr->sent < o->size_bytes) {
				size_t at = (size_t)(wr->sent % SPOOL_PIECE_BYTES);
				size_t piece = SPOOL_PIECE_BYTES - at;
				ssize_t n;

				if (piece > o->size_bytes - wr->sent)
					piece = (size_t)(o->size_bytes - wr->sent);
				n = rm_spool_append(wr->m, spool_content + at, piece);
				if (n < 0) {
					rm_spool_abort(wr->m);
					wr->m = NULL;
					writer_fail(wr, SF_APPEND, (int)n);
					wr->state = W_IDLE;
					break;
				}
				RM_ASSERT((size_t)n <= piece);
				wr->sent += (uint64_t)n;
				if ((size_t)n < piece) {
					/* Short or zero: the rest of this piece goes from the room callback. */
					wr->state = W_WAIT_APPEND;
					rm_spool_wait_room(wr->m, spool_append_room, wr);
					return;
				}
			}
			if (wr->state == W_IDLE)
				continue;
			wr->state = W_COMMIT;
			/* fall through */
		case W_COMMIT: {
			int rc = rm_spool_commit(wr->m, spool_commit_done, wr);

			if (rc == 0) {
				wr->state = W_COMMITTING;
				return;
			}
			if (rc == -EAGAIN) {
				wr->state = W_WAIT_COMMIT;
				rm_spool_wait_room(wr->m, spool_commit_room, wr);
				return;
			}
			wr->m = NULL;	/* a failed commit frees the message */
			writer_fail(wr, SF_COMMIT, rc);
			wr->state = W_IDLE;
			continue;
		}
		default:	/* waiting or done: a callback moves it on */
			return;
		}
	}
	rm_panic("spool writer %u: no progress after %" PRIu64 " rounds", wr->no, sw->quota + 2);
}

/* Time limit or signal: drop what is not committed; commits in flight finish. */
static void spool_stop_writers(struct spool_worker *sw)
{
	sw->stopping = true;
	for (uint32_t i = 0; i < sw->writer_count; i++) {
		struct spool_writer *wr = &sw->writers[i];

		switch (wr->state) {
		case W_WAIT_APPEND:
		case W_WAIT_COMMIT:
			rm_spool_abort(wr->m);	/* also takes it off the room waiters */
			wr->m = NULL;
			sw->aborted++;
			writer_done(wr);
			break;
		case W_WAIT_BEGIN:
			/* Its room call may still come; spool_begin_room ignores it.
			 * The message it held was never begun. */
			RM_ASSERT(sw->started > 0);
			sw->started--;
			writer_done(wr);
			break;
		default:	/* W_COMMITTING: the callback comes; W_DONE */
			break;
		}
	}
}

static void spool_stats_copy(struct spool_worker *sw)
{
	const struct rm_spool_stats *s = rm_spool_stats(sw->sp);

	sw->st.committed = atomic_load_explicit(&s->committed, memory_order_relaxed);
	sw->st.commit_failed = atomic_load_explicit(&s->commit_failed, memory_order_relaxed);
	sw->st.syncs = atomic_load_explicit(&s->syncs, memory_order_relaxed);
	sw->st.writes = atomic_load_explicit(&s->writes, memory_order_relaxed);
	sw->st.bytes_written = atomic_load_explicit(&s->bytes_written, memory_order_relaxed);
	sw->st.segments = atomic_load_explicit(&s->segments, memory_order_relaxed);
	sw->st.write_errors = atomic_load_explicit(&s->write_errors, memory_order_relaxed);
}

static void spool_report_stall(struct spool_worker *sw, uint64_t now)
{
	uint32_t count[W_STATES] = { 0 };
	char line[512];
	size_t o = 0;

	for (uint32_t i = 0; i < sw->writer_count; i++)
		count[sw->writers[i].state]++;
	for (unsigned k = 0; k < W_STATES && o < sizeof(line); k++)
		if (count[k] != 0 && k != W_DONE)
			o += (size_t)snprintf(line + o, sizeof(line) - o, "%s%u %s", o ? ", " : "", count[k],
					      writer_state_names[k]);
	rm_warn(0, "spool worker %u stalled: no progress for %" PRIu64 " ms with no file operation in flight; "
		"%" PRIu64 " of %" PRIu64 " messages begun, %" PRIu64 " committed; writers: %s", sw->index,
		now - sw->last_progress_ms, sw->started, sw->quota, sw->committed, o ? line : "none");
	sw->stall_reported = true;
}

static bool spool_tick(struct rm_worker *w, void *arg)
{
	struct spool_worker *sw = rm_worker_user(w);
	struct spool_shared *ss = arg;
	uint64_t now = rm_worker_now_ms(w);

	RM_ASSERT(sw != NULL && sw->ss == ss);
	if (sw->sp == NULL)
		return false;		/* never opened */
	if (!sw->stopping && atomic_load_explicit(&ss->stop, memory_order_acquire))
		spool_stop_writers(sw);
	if (sw->active > 0 || rm_file_ops_in_flight(w) > 0) {
		/* The loop wakes at least once a second, so this runs even when nothing moves. */
		if (!sw->stall_reported && rm_file_ops_in_flight(w) == 0 &&
		    now >= sw->last_progress_ms + STALL_REPORT_MS)
			spool_report_stall(sw, now);
		return true;
	}
	/* Every writer is done and nothing is in the kernel: close on this thread. */
	spool_stats_copy(sw);
	rm_spool_close(sw->sp);
	sw->sp = NULL;
	sw->closed = true;
	atomic_fetch_add_explicit(&ss->workers_done, 1, memory_order_acq_rel);
	return false;
}

static void spool_worker_start(struct rm_worker *w, void *arg)
{
	struct spool_shared *ss = arg;
	struct spool_worker *sw = &ss->workers[rm_worker_index(w)];
	int rc;

	sw->w = w;
	rm_worker_set_user(w, sw);
	rc = rm_spool_open(w, rm_worker_config(w), &sw->sp);
	if (rc < 0) {
		sw->open_err = rc;
		sw->sp = NULL;
		rm_warn(0, "spool worker %u: rm_spool_open: %s", sw->index, strerror(-rc));
		atomic_fetch_add_explicit(&ss->workers_done, 1, memory_order_acq_rel);
		return;
	}
	sw->opened = true;
	sw->t0_us = now_us();
	spool_progress(sw);
	sw->active = sw->writer_count;
	for (uint32_t i = 0; i < sw->writer_count; i++)
		writer_run(&sw->writers[i]);
}

/* DIR must be new (then it is made, parents too) or empty: runs never mix. */
static int dir_prepare(const char *dir, bool *created)
{
	char path[sizeof(((struct bench_opts *)0)->dir)];
	struct dirent *de;
	DIR *d;

	*created = false;
	d = opendir(dir);
	if (d != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			fprintf(stderr, "ringmail-bench: --dir %s is not empty (it holds %s): refusing, so that "
				"runs do not mix; give a new or empty directory\n", dir, de->d_name);
			closedir(d);
			return -1;
		}
		closedir(d);
		return 0;
	}
	if (errno != ENOENT) {
		fprintf(stderr, "ringmail-bench: --dir %s: %s\n", dir, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s", dir);
	for (char *p = path + 1; ; p++) {
		bool end = *p == '\0';

		if (*p != '/' && !end)
			continue;
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			fprintf(stderr, "ringmail-bench: mkdir %s: %s\n", path, strerror(errno));
			return -1;
		}
		if (end)
			break;
		*p = '/';
	}
	*created = true;
	return 0;
}

/* Remove what a spool run wrote: DIR/wNN/<seq>.seg and DIR/wNN. */
static bool spool_dir_clean(const char *dir, unsigned workers)
{
	bool ok = true;

	for (unsigned i = 0; i < workers; i++) {
		char sub[sizeof(((struct bench_opts *)0)->dir) + 16];	/* "/w" and up to 10 digits */
		struct dirent *de;
		DIR *d;

		snprintf(sub, sizeof(sub), "%s/w%02u", dir, i);
		d = opendir(sub);
		if (d == NULL) {
			if (errno != ENOENT) {
				fprintf(stderr, "ringmail-bench: cleaning %s: %s\n", sub, strerror(errno));
				ok = false;
			}
			continue;
		}
		while ((de = readdir(d)) != NULL) {
			size_t len = strlen(de->d_name);

			if (len != 20 || strcmp(de->d_name + 16, ".seg") != 0)
				continue;
			if (unlinkat(dirfd(d), de->d_name, 0) < 0) {
				fprintf(stderr, "ringmail-bench: unlink %s/%s: %s\n", sub, de->d_name, strerror(errno));
				ok = false;
			}
		}
		closedir(d);
		if (rmdir(sub) < 0) {
			fprintf(stderr, "ringmail-bench: rmdir %s: %s\n", sub, strerror(errno));
			ok = false;
		}
	}
	return ok;
}

static void dir_remove_created(const char *dir, bool created)
{
	if (created && rmdir(dir) < 0)
		fprintf(stderr, "ringmail-bench: rmdir %s: %s\n", dir, strerror(errno));
}

/* A JSON string: the directory is the only free text in the reports. */
static void json_string(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

/* The spool configuration of a run: defaults, the directory, room for the run. */
static void spool_make_config(const struct bench_opts *o, struct rm_config *cfg)
{
	uint64_t writers_max = (o->writers + o->workers - 1) / o->workers;
	uint64_t quota_max = (o->messages + o->workers - 1) / o->workers;
	uint64_t need;

	rm_config_defaults(cfg);
	snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "%s", o->dir);
	cfg->workers = o->workers;
	cfg->log_level = o->verbose ? RM_LOG_INFO : RM_LOG_WARN;
	cfg->listener_count = 0;
	cfg->control_socket[0] = '\0';
	cfg->limits.connections_per_worker = 16;
	cfg->limits.shutdown_timeout_ms = SHUTDOWN_GRACE_MS;
	/* Every committed message stays queued (nothing delivers): room for all. */
	need = quota_max + writers_max + 16;
	if (need > cfg->limits.spool_messages_max)
		cfg->limits.spool_messages_max = (uint32_t)(need < 16777216 ? need : 16777216);
	/* A commit callback begins the next message before the spool frees the last. */
	need = 2 * writers_max + 16;
	if (need > cfg->limits.spool_receiving_max)
		cfg->limits.spool_receiving_max = (uint32_t)(need < 1048576 ? need : 1048576);
}

static double ms_of_us(uint64_t us)
{
	return (double)us / 1000.0;
}

static int spool_main(struct bench_opts *o)
{
	static struct rm_daemon d;
	static struct rm_config cfg;
	static struct spool_shared ss;
	static struct hist latency;
	struct hist *lat = &latency;
	struct spool_stats_copy st = { 0 };
	uint64_t started = 0, committed = 0, failed = 0, aborted = 0, fails[SF_COUNT] = { 0 };
	uint64_t t0 = UINT64_MAX, t1 = 0, stop_ms = 0, deadline_ms;
	uint32_t open_failed = 0, not_closed = 0;
	bool created, timed_out = false, interrupted = false, forced = false, cleaned = true, pass;
	char err[512];
	sigset_t sigs;
	double secs, cps, mbps, wmbps;
	int last_err = 0;

	rm_log_init("ringmail-bench", o->verbose ? RM_LOG_INFO : RM_LOG_WARN, false);
	if (rm_probe_io_uring(err, sizeof(err)) < 0) {
		fprintf(stderr, "ringmail-bench: cannot use io_uring: %s\n", err);
		return 2;
	}
	if (dir_prepare(o->dir, &created) < 0)
		return 2;
	for (size_t i = 0; i < sizeof(spool_content); i += 8) {
		uint64_t x = mix64(o->seed + i);

		memcpy(spool_content + i, &x, 8);
	}
	ss.opt = *o;
	ss.workers = calloc(o->workers, sizeof(*ss.workers));
	if (ss.workers == NULL)
		rm_fatal("out of memory");
	for (uint32_t i = 0, first = 0; i < o->workers; i++) {
		struct spool_worker *sw = &ss.workers[i];

		sw->ss = &ss;
		sw->index = i;
		sw->writer_count = o->writers / o->workers + (i < o->writers % o->workers ? 1 : 0);
		sw->quota = o->messages / o->workers + (i < o->messages % o->workers ? 1 : 0);
		sw->writers = calloc(sw->writer_count, sizeof(*sw->writers));
		if (sw->writers == NULL)
			rm_fatal("out of memory");
		for (uint32_t k = 0; k < sw->writer_count; k++) {
			sw->writers[k].sw = sw;
			sw->writers[k].no = first + k;
		}
		first += sw->writer_count;
	}
	spool_make_config(o, &cfg);
	d.worker_count = o->workers;
	d.protocols = NULL;
	d.control_ops = NULL;
	d.hooks.worker_start = spool_worker_start;
	d.hooks.worker_tick = spool_tick;
	d.hooks.arg = &ss;
	atomic_store(&d.config_ptr, &cfg);
	if (rm_daemon_bind(&d, err, sizeof(err)) < 0) {
		fprintf(stderr, "ringmail-bench: %s\n", err);
		dir_remove_created(o->dir, created);
		return 2;
	}
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	deadline_ms = rm_now_ms() + (uint64_t)o->time_limit_s * 1000u;
	rm_daemon_start(&d);
	/* Bounded: the time limit sets stop; STOP_GRACE_MS later the daemon is stopped,
	 * and a stopping worker exits within its shutdown timeout plus 2 s. */
	for (;;) {
		struct timespec wait = { 0, 20 * 1000 * 1000 };
		int sig = sigtimedwait(&sigs, NULL, &wait);
		uint64_t now = rm_now_ms();

		if (rm_daemon_all_exited(&d))
			break;
		if ((sig == SIGINT || sig == SIGTERM) && stop_ms == 0) {
			interrupted = true;
			rm_warn(0, "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
		}
		if (now >= deadline_ms && stop_ms == 0 && !interrupted) {
			timed_out = true;
			rm_warn(0, "time limit of %u s reached: stopping", o->time_limit_s);
		}
		if ((timed_out || interrupted) && stop_ms == 0) {
			stop_ms = now;
			atomic_store_explicit(&ss.stop, 1, memory_order_release);
		}
		if (stop_ms != 0 && !forced && now >= stop_ms + STOP_GRACE_MS) {
			forced = true;
			rm_warn(0, "commits still owed %u ms after the stop: stopping the workers", STOP_GRACE_MS);
			rm_daemon_request_stop(&d);
		}
	}
	rm_daemon_join(&d);

	for (uint32_t i = 0; i < o->workers; i++) {
		struct spool_worker *sw = &ss.workers[i];

		if (!sw->opened) {
			open_failed++;
			last_err = sw->open_err;
			continue;
		}
		if (!sw->closed) {
			/* Stopped with commits owed: the spool cannot be closed safely. */
			not_closed++;
			spool_stats_copy(sw);
		}
		started += sw->started;
		committed += sw->committed;
		failed += sw->failed;
		aborted += sw->aborted;
		for (unsigned k = 0; k < SF_COUNT; k++)
			fails[k] += sw->fails[k];
		if (sw->last_err != 0)
			last_err = sw->last_err;
		st.committed += sw->st.committed;
		st.commit_failed += sw->st.commit_failed;
		st.syncs += sw->st.syncs;
		st.writes += sw->st.writes;
		st.bytes_written += sw->st.bytes_written;
		st.segments += sw->st.segments;
		st.write_errors += sw->st.write_errors;
		hist_merge(lat, &sw->lat_us);
		if (sw->t0_us < t0)
			t0 = sw->t0_us;
		if (sw->last_commit_us > t1)
			t1 = sw->last_commit_us;
	}
	if (!o->keep) {
		cleaned = spool_dir_clean(o->dir, o->workers);
		dir_remove_created(o->dir, created);
	}
	if (open_failed > 0) {
		fprintf(stderr, "ringmail-bench: the spool did not open in %s: %s\n", o->dir,
			strerror(last_err < 0 ? -last_err : EIO));
		return 2;
	}
	secs = t0 != UINT64_MAX ? seconds_between_us(t0, t1) : 0;
	cps = secs > 0 ? (double)committed / secs : 0;
	mbps = secs > 0 ? (double)committed * (double)o->size_bytes / secs / 1e6 : 0;
	wmbps = secs > 0 ? (double)st.bytes_written / secs / 1e6 : 0;
	pass = !timed_out && !interrupted && not_closed == 0 && committed == o->messages && failed == 0;
	printf("ringmail-bench spool: %s, %u writers x %" PRIu64 " bytes, %" PRIu64 " messages, %u workers\n",
	       o->dir, o->writers, o->size_bytes, o->messages, o->workers);
	printf("  spool             buffers 2 x %u bytes, commit interval %u ms, segments of %u bytes\n",
	       cfg.limits.spool_buffer_bytes, cfg.limits.spool_commit_interval_ms,
	       cfg.limits.spool_segment_bytes_max);
	printf("  commits           ok %" PRIu64 "  failed %" PRIu64 "  (of %" PRIu64 "; %" PRIu64 " begun",
	       committed, failed, o->messages, started);
	if (aborted)
		printf(", %" PRIu64 " aborted at the stop", aborted);
	printf(")\n");
	for (unsigned k = 0; k < SF_COUNT; k++)
		if (fails[k])
			printf("  failed: %-24s %" PRIu64 "  last error: %s\n", spool_fail_names[k], fails[k],
			       strerror(last_err < 0 ? -last_err : EIO));
	printf("  elapsed           %.3f s (first begin to last commit callback)\n", secs);
	printf("  throughput        %.0f commits/s  %.2f MB/s content  %.2f MB/s written (1 MB = 10^6 B)\n",
	       cps, mbps, wmbps);
	printf("  spool counters    %" PRIu64 " syncs, %" PRIu64 " writes, %.1f commits per fdatasync, "
	       "%" PRIu64 " bytes written, %" PRIu64 " segments, %" PRIu64 " write errors\n",
	       st.syncs, st.writes, st.syncs ? (double)st.committed / (double)st.syncs : 0.0,
	       st.bytes_written, st.segments, st.write_errors);
	printf("  commit latency    p50 %.2f ms  p99 %.2f ms  max %.2f ms  (begin to durable callback, "
	       "%" PRIu64 " commits)\n", ms_of_us(hist_quantile(lat, 0.50)), ms_of_us(hist_quantile(lat, 0.99)),
	       ms_of_us(lat->max), lat->count);
	if (not_closed)
		printf("  %u spools NOT CLOSED: commits were still owed when the workers were stopped\n",
		       not_closed);
	if (timed_out)
		printf("  TIME LIMIT of %u s reached\n", o->time_limit_s);
	if (interrupted)
		printf("  INTERRUPTED\n");
	if (!o->keep && !cleaned)
		printf("  DIR not fully cleaned (see the messages above)\n");
	printf("  result            %s\n", pass ? "PASS" : "FAIL");
	if (o->json) {
		printf("{\"mode\":\"spool\",\"dir\":");
		json_string(o->dir);
		printf(",\"writers\":%u,\"size\":%" PRIu64 ",\"messages\":%" PRIu64 ",\"workers\":%u,"
		       "\"commits\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"seconds\":%.3f,\"commits_per_s\":%.0f,"
		       "\"mb_per_s\":%.3f,\"written_mb_per_s\":%.3f,\"syncs\":%" PRIu64 ",\"writes\":%" PRIu64 ","
		       "\"commits_per_sync\":%.2f,\"bytes_written\":%" PRIu64 ",\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
		       "\"max_ms\":%.3f,\"buffer_bytes\":%u,\"commit_interval_ms\":%u,\"timed_out\":%s,\"pass\":%s}\n",
		       o->writers, o->size_bytes, o->messages, o->workers, committed, failed, secs, cps, mbps, wmbps,
		       st.syncs, st.writes, st.syncs ? (double)st.committed / (double)st.syncs : 0.0,
		       st.bytes_written, ms_of_us(hist_quantile(lat, 0.50)), ms_of_us(hist_quantile(lat, 0.99)),
		       ms_of_us(lat->max), cfg.limits.spool_buffer_bytes, cfg.limits.spool_commit_interval_ms,
		       timed_out ? "true" : "false", pass ? "true" : "false");
	}
	fflush(stdout);
	for (uint32_t i = 0; i < o->workers; i++)
		free(ss.workers[i].writers);
	free(ss.workers);
	return pass ? 0 : 1;
}

static volatile sig_atomic_t limit_signal;

static void limit_on_signal(int sig)
{
	limit_signal = sig;
}

/* write(2) all of it; false on an error (errno set). */
static bool write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR && limit_signal == 0)
				continue;
			return false;
		}
		p += n;
		len -= (size_t)n;
	}
	return true;
}

/* spool-limit: M records of BYTES appended with write(2), fdatasync(2) every G. */
static int limit_main(struct bench_opts *o)
{
	static struct hist sync_hist;
	struct hist *sync_us = &sync_hist;
	char path[sizeof(o->dir) + 32];
	struct sigaction sa;
	uint8_t *rec;
	uint64_t done = 0, syncs = 0, t0, t1, deadline_ms, since = 0;
	bool created, timed_out = false, pass, ok = true;
	const char *failed_call = NULL;
	int fd, dfd, saved = 0;
	double secs, mps, mbps;

	if (dir_prepare(o->dir, &created) < 0)
		return 2;
	rec = malloc(o->size_bytes ? (size_t)o->size_bytes : 1);
	if (rec == NULL)
		rm_fatal("out of memory");
	for (uint64_t i = 0; i < o->size_bytes; i++)
		rec[i] = (uint8_t)(mix64(o->seed + i / 8) >> (8 * (i % 8)));
	snprintf(path, sizeof(path), "%s/spool-limit.dat", o->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "ringmail-bench: create %s: %s\n", path, strerror(errno));
		dir_remove_created(o->dir, created);
		free(rec);
		return 2;
	}
	/* The new name is durable before the clock starts, as the spool does for a segment. */
	dfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		if (fsync(dfd) < 0)
			fprintf(stderr, "ringmail-bench: fsync %s: %s\n", o->dir, strerror(errno));
		close(dfd);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = limit_on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	deadline_ms = rm_now_ms() + (uint64_t)o->time_limit_s * 1000u;
	t0 = now_us();
	/* Bounded by M; the time limit and signals end it sooner. */
	while (done < o->messages) {
		if (limit_signal != 0 || rm_now_ms() >= deadline_ms) {
			timed_out = limit_signal == 0;
			break;
		}
		if (!write_all(fd, rec, (size_t)o->size_bytes)) {
			saved = errno;
			failed_call = "write";
			ok = false;
			break;
		}
		done++;
		if (++since == o->group || done == o->messages) {
			uint64_t s0 = now_us();

			if (fdatasync(fd) < 0) {
				saved = errno;
				failed_call = "fdatasync";
				ok = false;
				break;
			}
			hist_add(sync_us, now_us() - s0);
			syncs++;
			since = 0;
		}
	}
	t1 = now_us();
	close(fd);
	if (!o->keep) {
		if (unlink(path) < 0)
			fprintf(stderr, "ringmail-bench: unlink %s: %s\n", path, strerror(errno));
		dir_remove_created(o->dir, created);
	}
	/* Only durable records count. */
	if (since > 0)
		done -= since;
	secs = seconds_between_us(t0, t1);
	mps = secs > 0 ? (double)done / secs : 0;
	mbps = secs > 0 ? (double)done * (double)o->size_bytes / secs / 1e6 : 0;
	pass = ok && !timed_out && limit_signal == 0 && done == o->messages;
	printf("ringmail-bench spool-limit: %s, %" PRIu64 " records x %" PRIu64 " bytes, fdatasync every %u\n",
	       o->dir, o->messages, o->size_bytes, o->group);
	printf("  records durable   %" PRIu64 " of %" PRIu64 "\n", done, o->messages);
	if (failed_call != NULL)
		printf("  failed:           %s: %s\n", failed_call, strerror(saved));
	printf("  elapsed           %.3f s\n", secs);
	printf("  throughput        %.0f messages/s  %.2f MB/s (1 MB = 10^6 B)\n", mps, mbps);
	printf("  fdatasync         %" PRIu64 " calls, %.1f records each; p50 %.2f ms  p99 %.2f ms  max %.2f ms\n",
	       syncs, syncs ? (double)done / (double)syncs : 0.0, ms_of_us(hist_quantile(sync_us, 0.50)),
	       ms_of_us(hist_quantile(sync_us, 0.99)), ms_of_us(sync_us->max));
	if (timed_out)
		printf("  TIME LIMIT of %u s reached\n", o->time_limit_s);
	if (limit_signal != 0)
		printf("  INTERRUPTED\n");
	printf("  result            %s\n", pass ? "PASS" : "FAIL");
	if (o->json) {
		printf("{\"mode\":\"spool-limit\",\"dir\":");
		json_string(o->dir);
		printf(",\"size\":%" PRIu64 ",\"messages\":%" PRIu64 ",\"group\":%u,\"durable\":%" PRIu64 ","
		       "\"seconds\":%.3f,\"messages_per_s\":%.0f,\"mb_per_s\":%.3f,\"syncs\":%" PRIu64 ","
		       "\"sync_p50_ms\":%.3f,\"sync_p99_ms\":%.3f,\"timed_out\":%s,\"pass\":%s}\n",
		       o->size_bytes, o->messages, o->group, done, secs, mps, mbps, syncs,
		       ms_of_us(hist_quantile(sync_us, 0.50)), ms_of_us(hist_quantile(sync_us, 0.99)),
		       timed_out ? "true" : "false", pass ? "true" : "false");
	}
	fflush(stdout);
	free(rec);
	return pass ? 0 : 1;
}

/* ---- smtp mode ------------------------------------------------------------------------------
 * An SMTP load client: each session connects, reads the greeting, says EHLO
 * once, then runs its share of the messages on that connection (MAIL, RCPT x K,
 * DATA or BDAT, the content) and says QUIT.  Everything that is the same for
 * every message (the commands, the body in its DATA and BDAT forms) is built
 * once and queued by reference (rm_conn_send_static); only the headers, which
 * carry a unique Message-ID, are copied per message. */

#define SMTP_REPLY_LINE_MAX 1024u	/* RFC 5321 says 512 with CR LF; some slack */
#define SMTP_TEXT_MAX 120u		/* reply text kept for the log */
#define SMTP_BODY_LINE_MAX 78u		/* text per body line, CR LF not counted */
#define SMTP_HEADER_MAX 1024u

enum smtp_state {
	T_UNUSED = 0,
	T_CONNECTING,
	T_GREETING,	/* waiting for 220 */
	T_EHLO,
	T_HELO,		/* EHLO was refused with 5xx */
	T_MAIL,		/* the replies of one transaction, in order */
	T_RCPT,
	T_DATA,		/* waiting for 354 */
	T_CONTENT,	/* content sent; waiting for the reply to its end */
	T_RSET,
	T_QUIT,
	T_DONE,
	T_FAILED,
};

enum smtp_fail {
	Q_NONE = 0,
	Q_CONNECT,
	Q_CONNECT_TIMEOUT,
	Q_GREETING,		/* not 220 */
	Q_EHLO,			/* neither EHLO nor HELO accepted */
	Q_TIMEOUT,		/* no reply within --timeout */
	Q_PROTOCOL,		/* a reply that does not parse */
	Q_CLOSING,		/* 421: the server closes */
	Q_QUIT,			/* QUIT not answered 221 */
	Q_EOF,			/* closed by the server before QUIT */
	Q_SOCKET,
	Q_WRITE,
	Q_STOPPED,
	Q_NOT_STARTED,
	Q_COUNT
};

static const char *const smtp_fail_names[Q_COUNT] = {
	[Q_NONE] = "none",
	[Q_CONNECT] = "connect failed",
	[Q_CONNECT_TIMEOUT] = "connect timed out",
	[Q_GREETING] = "greeting not 220",
	[Q_EHLO] = "EHLO (or HELO) refused",
	[Q_TIMEOUT] = "no reply within --timeout",
	[Q_PROTOCOL] = "reply does not parse",
	[Q_CLOSING] = "421: server closing",
	[Q_QUIT] = "QUIT not answered 221",
	[Q_EOF] = "closed by server early",
	[Q_SOCKET] = "socket error",
	[Q_WRITE] = "output refused",
	[Q_STOPPED] = "stopped (time limit or signal)",
	[Q_NOT_STARTED] = "not started",
};

/* Where a transaction that failed got its first non-2xx/3xx reply. */
enum smtp_stage { G_MAIL = 0, G_RCPT, G_DATA, G_END, G_COUNT };

static const char *const smtp_stage_names[G_COUNT] = {
	[G_MAIL] = "MAIL", [G_RCPT] = "RCPT", [G_DATA] = "DATA/BDAT", [G_END] = "end of data",
};

struct smtp_result {
	uint64_t sessions_ok, sessions_failed;
	uint64_t reasons[Q_COUNT];
	int last_connect_err;
	uint64_t msg_ok;		/* 2xx after the end of data */
	uint64_t msg_4xx, msg_5xx;	/* by the class of the transaction's first refusal */
	uint64_t msg_failed;		/* in flight when the session failed */
	uint64_t msg_unsent;		/* never begun: the session failed first */
	uint64_t stage_4xx[G_COUNT], stage_5xx[G_COUNT];
	uint64_t replies_4xx, replies_5xx;	/* every reply, greeting and RSET included */
	uint64_t rcpt_ok, rcpt_refused;
	uint64_t content_bytes;		/* message bytes as sent (stuffed, terminator included) */
	uint64_t offered_pipelining, offered_chunking, helo_fallback;
	uint64_t size_limit;		/* SIZE offered (0: none), the last one seen */
	struct hist lat_us;		/* end of content written -> its 250 */
};

struct smtp_worker;

struct smtp_session {
	struct smtp_worker *bw;
	struct rm_conn *c;
	uint32_t conn_no;
	uint8_t state;			/* enum smtp_state */
	uint8_t reason;			/* enum smtp_fail */
	bool pipelining, chunking;	/* offered in the EHLO reply */
	bool pipelined;			/* this transaction was sent in one write */
	bool bdat;			/* this transaction uses BDAT */
	bool in_tx;			/* a message is under way */
	bool mail_ok;
	int16_t tx_fail_code;		/* first refusal of this transaction, 0 none */
	uint8_t tx_fail_stage;
	uint32_t quota;			/* messages of this session */
	uint32_t msgs_done;		/* transactions ended (ok or not) */
	uint32_t rcpt_sent, rcpt_replies, rcpt_ok;
	uint32_t reply_lines;		/* lines of the reply being read */
	int reply_code;
	uint64_t content_us;		/* when the content (or its BDAT) was written */
	uint16_t line_len;
	uint8_t line[SMTP_REPLY_LINE_MAX];
	char text[SMTP_TEXT_MAX];	/* last reply line, for the log */
};

struct smtp_shared;

struct smtp_worker {
	struct smtp_shared *sh;
	struct rm_worker *w;
	unsigned index;
	uint32_t first, share, started, connecting, finished;
	double ramp_per_ms;
	double rate_per_ms;		/* --rate: this worker's share */
	uint64_t rate_started;		/* messages started under --rate */
	uint64_t rate_t0_ms;		/* when the first session was ready to send */
	struct smtp_session **rate_wait;	/* sessions waiting for their turn (FIFO ring of share) */
	uint32_t rate_head, rate_count;
	uint64_t t0_ms, done_us;
	uint32_t failures_logged;
	struct rm_worker_timer pace;
	struct smtp_session *sessions;
	struct smtp_result r;
};

/* What every message of the run shares; built once, read by every worker. */
struct smtp_wire {
	char *batch;		/* MAIL, RCPT x K, then DATA or BDAT (see below) */
	size_t mail_len;	/* "MAIL FROM:<...>\r\n" */
	size_t *rcpt_off;	/* K + 1 offsets into batch: RCPT i is [off[i], off[i + 1]) */
	size_t data_len;	/* "DATA\r\n" at batch + rcpt_off[K] */
	char *bdat_batch;	/* the same with "BDAT n LAST\r\n" instead of DATA */
	size_t bdat_len;	/* the BDAT line */
	uint8_t *body_wire;	/* the body dot-stuffed, then ".\r\n" */
	size_t body_wire_len;
	uint8_t *body_raw;	/* the body as it is (BDAT) */
	size_t body_len;
	size_t header_len;	/* every message's headers have this length */
	unsigned subject_pad;	/* so that no body of one byte is needed */
	uint64_t run_id;	/* in every Message-ID */
	uint32_t dot_lines;	/* body lines that start with '.' */
};

struct smtp_shared {
	struct bench_opts opt;
	struct smtp_wire wire;
	struct smtp_worker *workers;
	uint64_t start_ms, start_us;
	_Atomic uint64_t finished;
	_Atomic uint64_t established;
	_Atomic uint64_t accepted;	/* messages answered 2xx: progress only */
};

static bool smtp_final(const struct smtp_session *s)
{
	return s->state == T_DONE || s->state == T_FAILED;
}

/* Messages of session k: M / N each, the first M % N one more. */
static uint32_t smtp_quota(const struct bench_opts *o, uint32_t conn_no)
{
	return (uint32_t)(o->messages / o->conns + (conn_no < o->messages % o->conns ? 1 : 0));
}

/* The headers of one message: fixed widths, so every message has the same length. */
static size_t smtp_header(const struct smtp_shared *sh, uint32_t conn_no, uint32_t msg, char *out, size_t size)
{
	const struct bench_opts *o = &sh->opt;
	const char *at = strchr(o->to, '@');
	char to[sizeof(((struct bench_opts *)0)->to) + 8];
	int n;

	if (o->rcpts > 1)
		snprintf(to, sizeof(to), "r1%s", at != NULL ? at : "");
	else
		snprintf(to, sizeof(to), "%s", o->to);
	n = snprintf(out, size,
		     "From: <%s>\r\n"
		     "To: <%s>\r\n"
		     "Subject: ringmail-bench message %010u of session %010u%.*s\r\n"
		     "Message-ID: <%016" PRIx64 ".%010u.%010u@ringmail-bench.invalid>\r\n"
		     "\r\n",
		     o->from, to, msg, conn_no, (int)sh->wire.subject_pad, "xxxxxxxx",
		     sh->wire.run_id, conn_no, msg);
	RM_ASSERT(n > 0 && (size_t)n < size);
	return (size_t)n;
}

/* The body: printable lines of 1 to 78 characters, every seventh starting with '.'
 * (some are a lone "."), lengths chosen so that the body is exactly len bytes. */
static void smtp_build_body(struct smtp_wire *wr, uint64_t seed, size_t len)
{
	size_t left = len, o = 0, wo = 0;
	uint32_t line = 0;

	wr->body_raw = malloc(len ? len : 1);
	/* Worst case every line is ".\r\n" stuffed to "..\r\n": 4/3, plus the terminator. */
	wr->body_wire = malloc(len + len / 3 + 8);
	if (wr->body_raw == NULL || wr->body_wire == NULL)
		rm_fatal("out of memory");
	while (left > 0) {
		uint64_t h = mix64(seed ^ mix64(0x5eedull + line));
		size_t text = 1 + (size_t)(h % SMTP_BODY_LINE_MAX);

		RM_ASSERT(left >= 2);
		if (line == 3)
			text = 1;		/* a lone ".": stuffed to ".." on the wire */
		if (left <= SMTP_BODY_LINE_MAX + 2)
			text = left - 2;		/* the last line takes the rest */
		else if (left - (text + 2) == 1)
			text = text < SMTP_BODY_LINE_MAX ? text + 1 : text - 1;	/* never leave one byte */
		for (size_t i = 0; i < text; i++) {
			uint64_t b = mix64(h + i / 8) >> (8 * (i % 8));
			uint8_t ch = (uint8_t)(0x20 + ((unsigned)(b & 0xff) * 95u >> 8));	/* ' ' .. '~' */

			if (i == 0 && ch == ' ')
				ch = 'a';
			if (i == 0 && line % 7 == 3)
				ch = '.';
			else if (i == 0 && ch == '.')
				ch = ',';
			if (i + 1 == text && ch == ' ')
				ch = 'z';	/* no trailing white space */
			wr->body_raw[o + i] = ch;
		}
		if (text > 0 && wr->body_raw[o] == '.') {
			wr->body_wire[wo++] = '.';
			wr->dot_lines++;
		}
		memcpy(wr->body_wire + wo, wr->body_raw + o, text);
		wo += text;
		wr->body_raw[o + text] = '\r';
		wr->body_raw[o + text + 1] = '\n';
		wr->body_wire[wo++] = '\r';
		wr->body_wire[wo++] = '\n';
		o += text + 2;
		left -= text + 2;
		line++;
	}
	memcpy(wr->body_wire + wo, ".\r\n", 3);
	wr->body_wire_len = wo + 3;
	wr->body_len = len;
}

static void smtp_build_wire(struct smtp_shared *sh)
{
	const struct bench_opts *o = &sh->opt;
	struct smtp_wire *wr = &sh->wire;
	const char *at = strchr(o->to, '@');
	size_t cap = 32 + strlen(o->from) + (size_t)o->rcpts * (strlen(o->to) + 32) + 64, off;
	char hdr[SMTP_HEADER_MAX], bdat_line[64];
	size_t body;
	int n;

	wr->run_id = mix64(o->seed ^ now_us() ^ ((uint64_t)getpid() << 32));
	wr->subject_pad = 0;
	wr->header_len = smtp_header(sh, 0, 0, hdr, sizeof(hdr));
	body = o->size_bytes > wr->header_len ? (size_t)o->size_bytes - wr->header_len : 0;
	if (body == 1) {
		/* A body of one byte cannot be a line: one more byte of subject instead. */
		wr->subject_pad = 1;
		wr->header_len++;
		body = 0;
	}
	smtp_build_body(wr, o->seed, body);
	wr->batch = malloc(cap);
	wr->bdat_batch = malloc(cap);
	wr->rcpt_off = calloc((size_t)o->rcpts + 1, sizeof(*wr->rcpt_off));
	if (wr->batch == NULL || wr->bdat_batch == NULL || wr->rcpt_off == NULL)
		rm_fatal("out of memory");
	n = snprintf(wr->batch, cap, "MAIL FROM:<%s>\r\n", o->from);
	RM_ASSERT(n > 0 && (size_t)n < cap);
	wr->mail_len = (size_t)n;
	off = wr->mail_len;
	for (uint32_t i = 0; i < o->rcpts; i++) {
		wr->rcpt_off[i] = off;
		if (o->rcpts > 1)
			n = snprintf(wr->batch + off, cap - off, "RCPT TO:<r%u%s>\r\n", i + 1, at != NULL ? at : "");
		else
			n = snprintf(wr->batch + off, cap - off, "RCPT TO:<%s>\r\n", o->to);
		RM_ASSERT(n > 0 && (size_t)n < cap - off);
		off += (size_t)n;
	}
	wr->rcpt_off[o->rcpts] = off;
	memcpy(wr->bdat_batch, wr->batch, off);
	RM_ASSERT(off + 7 <= cap);
	memcpy(wr->batch + off, "DATA\r\n", 6);
	wr->data_len = 6;
	n = snprintf(bdat_line, sizeof(bdat_line), "BDAT %zu LAST\r\n", wr->header_len + wr->body_len);
	RM_ASSERT(n > 0 && (size_t)n < sizeof(bdat_line) && off + (size_t)n <= cap);
	memcpy(wr->bdat_batch + off, bdat_line, (size_t)n);
	wr->bdat_len = (size_t)n;
}

static void smtp_free_wire(struct smtp_wire *wr)
{
	free(wr->batch);
	free(wr->bdat_batch);
	free(wr->rcpt_off);
	free(wr->body_wire);
	free(wr->body_raw);
}

/* Record why the session failed (the first reason wins) and log the first few. */
static bool smtp_note_failure(struct smtp_session *s, enum smtp_fail why, const char *detail)
{
	struct smtp_worker *bw = s->bw;

	if (smtp_final(s))
		return false;
	s->state = T_FAILED;
	s->reason = (uint8_t)why;
	if (why != Q_STOPPED && bw->failures_logged < FAILURES_LOGGED_MAX) {
		bw->failures_logged++;
		rm_warn(s->c != NULL ? s->c->id : 0, "session %u: %s%s%s", s->conn_no, smtp_fail_names[why],
			detail != NULL ? ": " : "", detail != NULL ? detail : "");
	}
	return true;
}

static void smtp_fail(struct smtp_session *s, enum smtp_fail why, const char *detail)
{
	if (smtp_note_failure(s, why, detail) && s->c != NULL)
		rm_conn_abort(s->c, -EPROTO);
}

/* Queue output; false (and the session failed) when the engine refuses it. */
static bool smtp_out(struct smtp_session *s, const void *p, size_t len, bool copy)
{
	int rc;

	if (smtp_final(s))
		return false;
	rc = copy ? rm_conn_write(s->c, p, len) : rm_conn_send_static(s->c, p, len);
	if (rc < 0) {
		smtp_fail(s, Q_WRITE, "the output queue is full");
		return false;
	}
	return true;
}

static void smtp_arm(struct smtp_session *s)
{
	rm_conn_timer(s->c, s->bw->sh->opt.reply_timeout_ms);
}

static void smtp_send_quit(struct smtp_session *s)
{
	static const char quit[] = "QUIT\r\n";

	if (smtp_out(s, quit, sizeof(quit) - 1, false))
		s->state = T_QUIT;
}

/* The message content: its headers (copied: they are unique) and the shared body.
 * The caller sets the state: T_CONTENT, or T_MAIL for pipelined BDAT, where the
 * MAIL and RCPT replies come first. */
static void smtp_send_content(struct smtp_session *s)
{
	const struct smtp_shared *sh = s->bw->sh;
	const struct smtp_wire *wr = &sh->wire;
	char hdr[SMTP_HEADER_MAX];
	size_t hl = smtp_header(sh, s->conn_no, s->msgs_done, hdr, sizeof(hdr));

	RM_ASSERT(hl == wr->header_len);
	if (!smtp_out(s, hdr, hl, true))
		return;
	if (s->bdat) {
		if (!smtp_out(s, wr->body_raw, wr->body_len, false))
			return;
		s->bw->r.content_bytes += hl + wr->body_len;
	} else {
		if (!smtp_out(s, wr->body_wire, wr->body_wire_len, false))
			return;
		s->bw->r.content_bytes += hl + wr->body_wire_len;
	}
	s->content_us = now_us();
}

/* Start the next message, or QUIT when the session's share is done. */
/*
 * --rate: an open-loop load.  A message may start once the worker's share of
 * the rate allows it (counted from the first one); a session that is early
 * waits in a FIFO (at most one entry per session) that smtp_tick drains.
 */
static bool smtp_rate_allows(struct smtp_worker *bw, uint64_t now_ms)
{
	if (bw->rate_t0_ms == 0)
		bw->rate_t0_ms = now_ms;
	return (double)bw->rate_started < bw->rate_per_ms * (double)(now_ms - bw->rate_t0_ms) + 1.0;
}

static bool smtp_rate_take(struct smtp_session *s)
{
	struct smtp_worker *bw = s->bw;

	if (bw->rate_count == 0 && smtp_rate_allows(bw, rm_worker_now_ms(bw->w))) {
		bw->rate_started++;
		return true;
	}
	RM_ASSERT(bw->rate_count < bw->share);
	bw->rate_wait[(bw->rate_head + bw->rate_count++) % bw->share] = s;
	rm_worker_timer_set(bw->w, &bw->pace, 1);
	return false;
}

static void smtp_next_now(struct smtp_session *s);

/* Start the waiting sessions the rate allows now; the next one's turn sets the timer. */
static void smtp_rate_drain(struct smtp_worker *bw, uint64_t now_ms)
{
	while (bw->rate_count > 0 && smtp_rate_allows(bw, now_ms)) {
		struct smtp_session *s = bw->rate_wait[bw->rate_head];

		bw->rate_head = (bw->rate_head + 1) % bw->share;
		bw->rate_count--;
		bw->rate_started++;
		if (s->c != NULL && s->state != T_FAILED)
			smtp_next_now(s);
	}
	if (bw->rate_count > 0)
		rm_worker_timer_set(bw->w, &bw->pace, 1);
}

static void smtp_next(struct smtp_session *s)
{
	if (s->msgs_done >= s->quota) {
		smtp_send_quit(s);
		return;
	}
	if (s->bw->rate_per_ms > 0 && !smtp_rate_take(s))
		return;	/* waits in the worker's queue; smtp_tick starts it */
	smtp_next_now(s);
}

/* The next transaction, now. */
static void smtp_next_now(struct smtp_session *s)
{
	const struct smtp_shared *sh = s->bw->sh;
	const struct bench_opts *o = &sh->opt;
	const struct smtp_wire *wr = &sh->wire;

	s->in_tx = true;
	s->mail_ok = false;
	s->tx_fail_code = 0;
	s->rcpt_sent = s->rcpt_replies = s->rcpt_ok = 0;
	s->bdat = o->bdat && s->chunking;
	s->pipelined = o->pipelining && s->pipelining;
	s->state = T_MAIL;
	if (!s->pipelined) {
		smtp_out(s, wr->batch, wr->mail_len, false);
		return;
	}
	/* One write: MAIL, every RCPT, DATA (RFC 2920 waits for 354 before the
	 * content) or BDAT with the content itself (RFC 3030 allows that). */
	s->rcpt_sent = o->rcpts;
	if (!s->bdat) {
		smtp_out(s, wr->batch, wr->rcpt_off[o->rcpts] + wr->data_len, false);
		return;
	}
	if (smtp_out(s, wr->bdat_batch, wr->rcpt_off[o->rcpts] + wr->bdat_len, false))
		smtp_send_content(s);
}

/* The transaction is over: count it by its first refusal (or as accepted). */
static void smtp_tx_end(struct smtp_session *s, int end_code)
{
	struct smtp_result *r = &s->bw->r;
	int code = s->tx_fail_code != 0 ? s->tx_fail_code : end_code;
	unsigned stage = s->tx_fail_code != 0 ? s->tx_fail_stage : G_END;

	s->in_tx = false;
	s->msgs_done++;
	if (s->tx_fail_code == 0 && end_code / 100 == 2) {
		r->msg_ok++;
		atomic_fetch_add_explicit(&s->bw->sh->accepted, 1, memory_order_relaxed);
		hist_add(&r->lat_us, now_us() - s->content_us);
	} else if (code / 100 == 4) {
		r->msg_4xx++;
		r->stage_4xx[stage]++;
	} else {
		r->msg_5xx++;
		r->stage_5xx[stage]++;
	}
}

static void smtp_tx_refused(struct smtp_session *s, int code, enum smtp_stage stage)
{
	struct smtp_worker *bw = s->bw;

	if (s->tx_fail_code != 0)
		return;
	s->tx_fail_code = (int16_t)code;
	s->tx_fail_stage = (uint8_t)stage;
	if (bw->failures_logged < FAILURES_LOGGED_MAX) {
		bw->failures_logged++;
		rm_warn(s->c->id, "session %u message %u: %s refused: %s", s->conn_no, s->msgs_done,
			smtp_stage_names[stage], s->text);
	}
}

/* A failed transaction whose replies are all in: RSET, then the next message. */
static void smtp_rset(struct smtp_session *s)
{
	static const char rset[] = "RSET\r\n";

	smtp_tx_end(s, 0);
	if (smtp_out(s, rset, sizeof(rset) - 1, false))
		s->state = T_RSET;
}

static void smtp_send_ehlo(struct smtp_session *s, const char *verb)
{
	char line[160];
	int n = snprintf(line, sizeof(line), "%s %s\r\n", verb, s->bw->sh->opt.helo);

	RM_ASSERT(n > 0 && (size_t)n < sizeof(line));
	smtp_out(s, line, (size_t)n, true);
}

/* One complete reply (the code of its last line) in the session's current state. */
static void smtp_reply(struct smtp_session *s, int code)
{
	struct smtp_worker *bw = s->bw;
	const struct bench_opts *o = &bw->sh->opt;
	const struct smtp_wire *wr = &bw->sh->wire;
	bool ok = code / 100 == 2;

	if (code / 100 == 4)
		bw->r.replies_4xx++;
	else if (code / 100 == 5)
		bw->r.replies_5xx++;
	if (code == 421 && s->state != T_QUIT) {
		/* The server is going away: what is in flight is lost. */
		if (s->in_tx) {
			smtp_tx_refused(s, code, s->state == T_MAIL ? G_MAIL : s->state == T_RCPT ? G_RCPT :
					s->state == T_CONTENT ? G_END : G_DATA);
			smtp_tx_end(s, code);
		}
		smtp_fail(s, Q_CLOSING, s->text);
		return;
	}
	switch (s->state) {
	case T_GREETING:
		if (code != 220) {
			smtp_fail(s, Q_GREETING, s->text);
			return;
		}
		atomic_fetch_add_explicit(&bw->sh->established, 1, memory_order_relaxed);
		smtp_send_ehlo(s, "EHLO");
		s->state = T_EHLO;
		return;
	case T_EHLO:
	case T_HELO:
		if (!ok) {
			if (s->state == T_EHLO && code / 100 == 5) {
				bw->r.helo_fallback++;
				s->pipelining = s->chunking = false;
				smtp_send_ehlo(s, "HELO");
				s->state = T_HELO;
				return;
			}
			smtp_fail(s, Q_EHLO, s->text);
			return;
		}
		if (s->pipelining)
			bw->r.offered_pipelining++;
		if (s->chunking)
			bw->r.offered_chunking++;
		smtp_next(s);
		return;
	case T_MAIL:
		s->mail_ok = ok;
		if (!ok)
			smtp_tx_refused(s, code, G_MAIL);
		if (s->pipelined) {
			s->state = T_RCPT;
			return;
		}
		if (!ok) {
			smtp_rset(s);
			return;
		}
		s->state = T_RCPT;
		s->rcpt_sent = 1;
		smtp_out(s, wr->batch + wr->rcpt_off[0], wr->rcpt_off[1] - wr->rcpt_off[0], false);
		return;
	case T_RCPT:
		s->rcpt_replies++;
		if (ok) {
			s->rcpt_ok++;
			bw->r.rcpt_ok++;
		} else {
			bw->r.rcpt_refused++;
			/* One recipient refused while others pass is not the message's failure. */
			if (s->rcpt_replies == o->rcpts && s->rcpt_ok == 0)
				smtp_tx_refused(s, code, G_RCPT);
		}
		if (s->rcpt_replies < o->rcpts) {
			if (!s->pipelined) {
				uint32_t i = s->rcpt_sent++;

				smtp_out(s, wr->batch + wr->rcpt_off[i], wr->rcpt_off[i + 1] - wr->rcpt_off[i], false);
			}
			return;
		}
		if (s->pipelined) {
			/* Pipelined BDAT: the next reply is the chunk's. */
			s->state = s->bdat ? T_CONTENT : T_DATA;
			return;
		}
		if (s->rcpt_ok == 0) {
			smtp_rset(s);
			return;
		}
		if (s->bdat) {
			s->state = T_CONTENT;
			if (smtp_out(s, wr->bdat_batch + wr->rcpt_off[o->rcpts], wr->bdat_len, false))
				smtp_send_content(s);
			return;
		}
		s->state = T_DATA;
		smtp_out(s, wr->batch + wr->rcpt_off[o->rcpts], wr->data_len, false);
		return;
	case T_DATA:
		if (code != 354) {
			smtp_tx_refused(s, code, G_DATA);
			smtp_rset(s);
			return;
		}
		/* 354 after a refused MAIL or no recipient: the content still has to end the data. */
		s->state = T_CONTENT;
		smtp_send_content(s);
		return;
	case T_CONTENT:
		if (!ok)
			smtp_tx_refused(s, code, s->bdat && (!s->mail_ok || s->rcpt_ok == 0) ? G_DATA : G_END);
		smtp_tx_end(s, code);
		smtp_next(s);
		return;
	case T_RSET:
		smtp_next(s);
		return;
	case T_QUIT:
		if (code != 221) {
			smtp_fail(s, Q_QUIT, s->text);
			return;
		}
		s->state = T_DONE;
		rm_conn_timer(s->c, 0);
		rm_conn_close(s->c);
		return;
	default:
		smtp_fail(s, Q_PROTOCOL, "a reply when none was due");
		return;
	}
}

/* The EHLO keywords we act on (RFC 5321 4.1.1.1: keyword, then parameters). */
static void smtp_ehlo_line(struct smtp_session *s, const uint8_t *p, size_t n)
{
	size_t k = 0;

	while (k < n && p[k] != ' ')
		k++;
	if (k == 10 && strncasecmp((const char *)p, "PIPELINING", 10) == 0)
		s->pipelining = true;
	else if (k == 8 && strncasecmp((const char *)p, "CHUNKING", 8) == 0)
		s->chunking = true;
	else if (k == 4 && strncasecmp((const char *)p, "SIZE", 4) == 0) {
		uint64_t v = 0;

		for (size_t i = 5; i < n && i < 24 && p[i] >= '0' && p[i] <= '9'; i++)
			v = v * 10 + (uint64_t)(p[i] - '0');
		s->bw->r.size_limit = v;
	}
}

/* One reply line (LF and any CR stripped by the caller). */
static void smtp_reply_line(struct smtp_session *s, const uint8_t *p, size_t n)
{
	char shown[64];
	int code;
	char sep;

	if (n < 3 || p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' ||
	    (n > 3 && p[3] != ' ' && p[3] != '-')) {
		smtp_fail(s, Q_PROTOCOL, escape(p, n < 40 ? n : 40, shown, sizeof(shown)));
		return;
	}
	code = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
	sep = n > 3 ? (char)p[3] : ' ';
	if (s->reply_lines > 0 && code != s->reply_code) {
		smtp_fail(s, Q_PROTOCOL, "the lines of a multi-line reply differ in their code");
		return;
	}
	s->reply_code = code;
	if (s->state == T_EHLO && s->reply_lines > 0 && n > 4)
		smtp_ehlo_line(s, p + 4, n - 4);
	s->reply_lines++;
	if (sep == '-')
		return;
	escape(p, n, s->text, sizeof(s->text));
	s->reply_lines = 0;
	smtp_reply(s, code);
}

static size_t smtp_on_data(struct rm_conn *c, const struct rm_rx *rx)
{
	struct smtp_session *s = c->session;
	const uint8_t *p = rx->data;
	size_t n = rx->len, pos = 0;

	RM_ASSERT(s != NULL && s->c == c);
	if (!smtp_final(s))
		smtp_arm(s);
	/* Everything is consumed; a line cut by the buffer waits in s->line. */
	while (pos < n && !smtp_final(s)) {
		const uint8_t *lf = memchr(p + pos, '\n', n - pos);
		size_t take = lf != NULL ? (size_t)(lf - (p + pos)) + 1 : n - pos;
		const uint8_t *line;
		size_t len;

		if (s->line_len + take > sizeof(s->line)) {
			smtp_fail(s, Q_PROTOCOL, "reply line longer than 1024 bytes");
			break;
		}
		if (lf == NULL) {
			memcpy(s->line + s->line_len, p + pos, take);
			s->line_len = (uint16_t)(s->line_len + take);
			break;
		}
		if (s->line_len == 0) {
			line = p + pos;
			len = take;
		} else {
			memcpy(s->line + s->line_len, p + pos, take);
			line = s->line;
			len = s->line_len + take;
			s->line_len = 0;
		}
		pos += take;
		len--;				/* LF */
		if (len > 0 && line[len - 1] == '\r')
			len--;
		smtp_reply_line(s, line, len);
	}
	return n;
}

static void smtp_on_connect(struct rm_conn *c, int err)
{
	struct smtp_session *s = c->session;
	struct smtp_worker *bw = s->bw;

	RM_ASSERT(s->state == T_CONNECTING && bw->connecting > 0);
	bw->connecting--;
	if (err != 0) {
		bw->r.last_connect_err = err;
		smtp_note_failure(s, err == -ETIMEDOUT ? Q_CONNECT_TIMEOUT : Q_CONNECT, strerror(-err));
		return;
	}
	s->state = T_GREETING;
	smtp_arm(s);
}

static void smtp_on_timeout(struct rm_conn *c)
{
	struct smtp_session *s = c->session;
	char detail[96];

	snprintf(detail, sizeof(detail), "%u ms in state %u after %u of %u messages",
		 s->bw->sh->opt.reply_timeout_ms, s->state, s->msgs_done, s->quota);
	smtp_fail(s, Q_TIMEOUT, detail);
}

static void smtp_on_eof(struct rm_conn *c)
{
	struct smtp_session *s = c->session;

	char detail[SMTP_TEXT_MAX + 16];

	if (s->state == T_DONE)
		return;
	snprintf(detail, sizeof(detail), "last reply: %s", s->text[0] != '\0' ? s->text : "none");
	smtp_fail(s, Q_EOF, detail);
}

static void smtp_on_shutdown(struct rm_conn *c)
{
	struct smtp_session *s = c->session;

	if (s->state == T_DONE)
		return;
	if (s->state == T_CONNECTING) {
		RM_ASSERT(s->bw->connecting > 0);
		s->bw->connecting--;
	}
	smtp_fail(s, Q_STOPPED, NULL);
}

/* Count what the session did; every message of its share ends up in exactly one counter. */
static void smtp_account(struct smtp_session *s)
{
	struct smtp_worker *bw = s->bw;
	uint32_t unsent = s->quota - s->msgs_done;

	if (s->state == T_DONE) {
		bw->r.sessions_ok++;
	} else {
		bw->r.sessions_failed++;
		bw->r.reasons[s->reason]++;
	}
	if (s->in_tx) {
		bw->r.msg_failed++;
		unsent--;
	}
	bw->r.msg_unsent += unsent;
	bw->finished++;
	atomic_fetch_add_explicit(&bw->sh->finished, 1, memory_order_relaxed);
}

static void smtp_on_close(struct rm_conn *c, int err)
{
	struct smtp_session *s = c->session;
	struct smtp_worker *bw = s->bw;

	if (s->state == T_CONNECTING) {
		RM_ASSERT(bw->connecting > 0);
		bw->connecting--;
		s->state = T_FAILED;
		s->reason = Q_STOPPED;
	}
	if (!smtp_final(s)) {
		s->state = T_FAILED;
		s->reason = err != 0 ? Q_SOCKET : Q_EOF;
		if (bw->failures_logged < FAILURES_LOGGED_MAX) {
			bw->failures_logged++;
			rm_warn(c->id, "session %u: %s%s%s", s->conn_no, smtp_fail_names[s->reason],
				err != 0 ? ": " : "", err != 0 ? strerror(-err) : "");
		}
	}
	smtp_account(s);
	s->c = NULL;
	c->session = NULL;
}

static const struct rm_session_ops smtp_client_ops = {
	.protocol = "bench-smtp-client",
	.on_data = smtp_on_data,
	.on_timeout = smtp_on_timeout,
	.on_eof = smtp_on_eof,
	.on_shutdown = smtp_on_shutdown,
	.on_close = smtp_on_close,
	.on_connect = smtp_on_connect,
};

static void smtp_start_one(struct smtp_worker *bw)
{
	struct smtp_shared *sh = bw->sh;
	struct smtp_session *s = &bw->sessions[bw->started];
	struct rm_connect_options co = {
		.dest = &sh->opt.dest.sa,
		.dest_len = sh->opt.dest_len,
		.source = sh->opt.source_len != 0 ? &sh->opt.source.sa : NULL,
		.source_len = sh->opt.source_len,
		.timeout_ms = sh->opt.connect_timeout_ms,
	};
	int err = 0;

	RM_ASSERT(bw->started < bw->share);
	memset(s, 0, sizeof(*s));
	s->bw = bw;
	s->conn_no = bw->first + bw->started;
	s->quota = smtp_quota(&sh->opt, s->conn_no);
	s->state = T_CONNECTING;
	bw->started++;
	s->c = rm_conn_connect(bw->w, &co, &smtp_client_ops, s, &err);
	if (s->c == NULL) {
		/* No callback will come: account here. */
		s->state = T_FAILED;
		s->reason = Q_CONNECT;
		bw->r.last_connect_err = err;
		if (bw->failures_logged < FAILURES_LOGGED_MAX) {
			bw->failures_logged++;
			rm_warn(0, "session %u: cannot start: %s", s->conn_no, strerror(-err));
		}
		smtp_account(s);
		return;
	}
	bw->connecting++;
}

static void smtp_pace_fire(struct rm_worker *w, void *arg)
{
	/* Nothing to do here: worker_tick runs after the timers and starts what is due. */
}

/* Start what the ramp allows; return when the next connect is due (UINT64_MAX: none). */
static uint64_t smtp_ramp(struct smtp_worker *bw, uint64_t now_ms)
{
	uint64_t allowed, next;

	if (bw->ramp_per_ms <= 0) {
		allowed = bw->share;
	} else {
		allowed = (uint64_t)(bw->ramp_per_ms * (double)(now_ms - bw->t0_ms)) + 1;
		if (allowed > bw->share)
			allowed = bw->share;
	}
	while (bw->started < allowed && bw->connecting < CONNECTING_MAX)
		smtp_start_one(bw);
	if (bw->started >= bw->share || bw->connecting >= CONNECTING_MAX)
		return UINT64_MAX;
	next = bw->t0_ms + (uint64_t)((double)bw->started / bw->ramp_per_ms + 0.999);
	return next > now_ms ? next : now_ms + 1;
}

static bool smtp_tick(struct rm_worker *w, void *arg)
{
	struct smtp_worker *bw = rm_worker_user(w);
	uint64_t now = rm_worker_now_ms(w);

	RM_ASSERT(bw != NULL && bw->sh == arg);
	if (rm_worker_stopping(w)) {
		/* Time limit or signal: what never started counts as not sent. */
		while (bw->started < bw->share) {
			struct smtp_session *s = &bw->sessions[bw->started++];

			memset(s, 0, sizeof(*s));
			s->bw = bw;
			s->conn_no = bw->first + bw->started - 1;
			s->quota = smtp_quota(&bw->sh->opt, s->conn_no);
			s->state = T_FAILED;
			s->reason = Q_NOT_STARTED;
			smtp_account(s);
		}
		rm_worker_timer_cancel(w, &bw->pace);
	} else if (bw->rate_count > 0) {
		smtp_rate_drain(bw, now);
	}
	if (rm_worker_stopping(w)) {
		/* nothing more */
	} else if (bw->started < bw->share) {
		uint64_t wake = smtp_ramp(bw, now);

		rm_worker_timer_cancel(w, &bw->pace);
		/* A connect completion runs the tick too; the loop wakes at least once a second. */
		if (wake != UINT64_MAX)
			rm_worker_timer_set(w, &bw->pace, (uint32_t)(wake > now ? wake - now : 1));
	}
	if (bw->finished < bw->share)
		return true;
	if (bw->done_us == 0)
		bw->done_us = now_us();
	return false;
}

static void smtp_worker_start(struct rm_worker *w, void *arg)
{
	struct smtp_shared *sh = arg;
	struct smtp_worker *bw = &sh->workers[rm_worker_index(w)];

	bw->w = w;
	bw->t0_ms = rm_worker_now_ms(w);
	bw->pace.fire = smtp_pace_fire;
	bw->pace.arg = bw;
	rm_worker_set_user(w, bw);
	if (bw->share > 0)
		smtp_ramp(bw, bw->t0_ms);
}

/* The client daemon's configuration: no listener, output room for a whole message. */
static void smtp_make_config(const struct smtp_shared *sh, struct rm_config *cfg)
{
	const struct bench_opts *o = &sh->opt;
	const struct smtp_wire *wr = &sh->wire;
	uint32_t share_max = (o->conns + o->workers - 1) / o->workers;
	uint64_t msg = wr->rcpt_off[o->rcpts] + wr->bdat_len + wr->header_len +
		       (wr->body_wire_len > wr->body_len ? wr->body_wire_len : wr->body_len);
	uint64_t out_max = 2 * msg + 65536, copied, blocks;

	rm_config_defaults(cfg);
	cfg->workers = o->workers;
	cfg->log_level = o->verbose ? RM_LOG_INFO : RM_LOG_WARN;
	cfg->listener_count = 0;
	cfg->control_socket[0] = '\0';
	cfg->limits.connections_per_worker = share_max + 16;
	if (out_max > UINT32_MAX / 2)
		out_max = UINT32_MAX / 2;
	if (out_max > cfg->limits.output_bytes_max)
		cfg->limits.output_bytes_max = (uint32_t)out_max;
	/* Copied per session and message: the headers and a command line; the rest is static. */
	copied = (wr->header_len + 512 + 4095) / 4096 + 1;
	blocks = (uint64_t)share_max * 2 * copied + 64;
	if (blocks < cfg->limits.write_blocks_per_worker)
		blocks = cfg->limits.write_blocks_per_worker;
	if (blocks > 1048576)
		blocks = 1048576;
	cfg->limits.write_blocks_per_worker = (uint32_t)blocks;
	cfg->limits.connect_timeout_ms = o->connect_timeout_ms;
	cfg->limits.shutdown_timeout_ms = SHUTDOWN_GRACE_MS;
}

static void smtp_sum(const struct smtp_shared *sh, struct smtp_result *t)
{
	const struct bench_opts *o = &sh->opt;

	for (uint32_t i = 0; i < o->workers; i++) {
		const struct smtp_result *r = &sh->workers[i].r;

		t->sessions_ok += r->sessions_ok;
		t->sessions_failed += r->sessions_failed;
		for (unsigned k = 0; k < Q_COUNT; k++)
			t->reasons[k] += r->reasons[k];
		if (r->last_connect_err != 0)
			t->last_connect_err = r->last_connect_err;
		t->msg_ok += r->msg_ok;
		t->msg_4xx += r->msg_4xx;
		t->msg_5xx += r->msg_5xx;
		t->msg_failed += r->msg_failed;
		t->msg_unsent += r->msg_unsent;
		for (unsigned k = 0; k < G_COUNT; k++) {
			t->stage_4xx[k] += r->stage_4xx[k];
			t->stage_5xx[k] += r->stage_5xx[k];
		}
		t->replies_4xx += r->replies_4xx;
		t->replies_5xx += r->replies_5xx;
		t->rcpt_ok += r->rcpt_ok;
		t->rcpt_refused += r->rcpt_refused;
		t->content_bytes += r->content_bytes;
		t->offered_pipelining += r->offered_pipelining;
		t->offered_chunking += r->offered_chunking;
		t->helo_fallback += r->helo_fallback;
		if (r->size_limit != 0)
			t->size_limit = r->size_limit;
		hist_merge(&t->lat_us, &r->lat_us);
	}
}

static bool smtp_report(const struct smtp_shared *sh, const struct smtp_result *r, uint64_t end_us,
			bool timed_out, bool interrupted)
{
	const struct bench_opts *o = &sh->opt;
	const struct smtp_wire *wr = &sh->wire;
	double elapsed = seconds_between_us(sh->start_us, end_us);
	double mps = elapsed > 0 ? (double)r->msg_ok / elapsed : 0;
	double mbps = elapsed > 0 ? (double)r->msg_ok * (double)(wr->header_len + wr->body_len) / elapsed / 1e6 : 0;
	uint64_t p50 = hist_quantile(&r->lat_us, 0.50), p90 = hist_quantile(&r->lat_us, 0.90);
	uint64_t p99 = hist_quantile(&r->lat_us, 0.99);
	uint64_t sessions = r->sessions_ok + r->sessions_failed;
	bool pass;

	pass = !timed_out && !interrupted && r->msg_ok == o->messages && r->sessions_ok == o->conns &&
	       r->sessions_failed == 0 && r->replies_4xx == 0 && r->replies_5xx == 0;
	printf("ringmail-bench smtp: %s port %u, %u sessions, %" PRIu64 " messages of %zu bytes "
	       "(%zu of headers), %u recipient%s each, %u workers\n", o->host, o->port, o->conns, o->messages,
	       wr->header_len + wr->body_len, wr->header_len, o->rcpts, o->rcpts == 1 ? "" : "s", o->workers);
	printf("  asked             pipelining %s, %s; offered by the server: PIPELINING %" PRIu64 " of %" PRIu64
	       " sessions, CHUNKING %" PRIu64 ", SIZE %" PRIu64 "%s\n",
	       o->pipelining ? "on" : "off", o->bdat ? "BDAT" : "DATA", r->offered_pipelining, sessions,
	       r->offered_chunking, r->size_limit, r->helo_fallback ? " (some fell back to HELO)" : "");
	if (o->bdat && r->offered_chunking < sessions)
		printf("  note              --bdat: sessions without CHUNKING used DATA\n");
	printf("  sessions          ok %" PRIu64 "  failed %" PRIu64 "\n", r->sessions_ok, r->sessions_failed);
	for (unsigned i = 1; i < Q_COUNT; i++)
		if (r->reasons[i] != 0)
			printf("  failed: %-30s %" PRIu64 "%s%s\n", smtp_fail_names[i], r->reasons[i],
			       i == Q_CONNECT && r->last_connect_err ? "  last error: " : "",
			       i == Q_CONNECT && r->last_connect_err ? strerror(-r->last_connect_err) : "");
	printf("  messages          250 %" PRIu64 "  4xx %" PRIu64 "  5xx %" PRIu64 "  failed %" PRIu64
	       "  not sent %" PRIu64 "  (of %" PRIu64 ")\n", r->msg_ok, r->msg_4xx, r->msg_5xx, r->msg_failed,
	       r->msg_unsent, o->messages);
	for (unsigned k = 0; k < G_COUNT; k++)
		if (r->stage_4xx[k] != 0 || r->stage_5xx[k] != 0)
			printf("  refused at %-12s 4xx %" PRIu64 "  5xx %" PRIu64 "\n", smtp_stage_names[k],
			       r->stage_4xx[k], r->stage_5xx[k]);
	printf("  replies           4xx %" PRIu64 "  5xx %" PRIu64 "  (every reply)\n", r->replies_4xx, r->replies_5xx);
	printf("  recipients        accepted %" PRIu64 "  refused %" PRIu64 "\n", r->rcpt_ok, r->rcpt_refused);
	printf("  content           %" PRIu64 " bytes sent, %u body lines dot-stuffed per message\n",
	       r->content_bytes, wr->dot_lines);
	printf("  elapsed           %.3f s\n", elapsed);
	printf("  throughput        %.0f messages/s  %.2f MB/s (messages answered 250, 1 MB = 10^6 B)\n", mps, mbps);
	printf("  250 after data    p50 %" PRIu64 " us  p90 %" PRIu64 " us  p99 %" PRIu64 " us  max %" PRIu64
	       " us  (%" PRIu64 " messages)\n", p50, p90, p99, r->lat_us.max, r->lat_us.count);
	if (timed_out)
		printf("  TIME LIMIT of %u s reached\n", o->time_limit_s);
	if (interrupted)
		printf("  INTERRUPTED\n");
	printf("  result            %s\n", pass ? "PASS" : "FAIL");
	printf("RESULT mode=smtp host=%s port=%u conns=%u workers=%u rate=%u messages=%" PRIu64 " size=%zu rcpts=%u "
	       "pipelining=%d bdat=%d offered_pipelining=%" PRIu64 " offered_chunking=%" PRIu64 " ok=%" PRIu64
	       " msg_4xx=%" PRIu64 " msg_5xx=%" PRIu64 " msg_failed=%" PRIu64 " not_sent=%" PRIu64
	       " replies_4xx=%" PRIu64 " replies_5xx=%" PRIu64 " rcpt_ok=%" PRIu64 " rcpt_refused=%" PRIu64
	       " sessions_ok=%" PRIu64 " sessions_failed=%" PRIu64 " elapsed_s=%.3f msgs_per_s=%.1f mb_per_s=%.3f"
	       " p50_us=%" PRIu64 " p90_us=%" PRIu64 " p99_us=%" PRIu64 " max_us=%" PRIu64 " timed_out=%d pass=%d\n",
	       o->host, o->port, o->conns, o->workers, o->rate_per_s, o->messages, wr->header_len + wr->body_len, o->rcpts,
	       o->pipelining, o->bdat, r->offered_pipelining, r->offered_chunking, r->msg_ok, r->msg_4xx, r->msg_5xx,
	       r->msg_failed, r->msg_unsent, r->replies_4xx, r->replies_5xx, r->rcpt_ok, r->rcpt_refused,
	       r->sessions_ok, r->sessions_failed, elapsed, mps, mbps, p50, p90, p99, r->lat_us.max,
	       timed_out, pass);
	if (o->json)
		printf("{\"mode\":\"smtp\",\"host\":\"%s\",\"port\":%u,\"conns\":%u,\"workers\":%u,\"messages\":%" PRIu64 ","
		       "\"size\":%zu,\"rcpts\":%u,\"pipelining\":%s,\"bdat\":%s,\"ok\":%" PRIu64 ",\"msg_4xx\":%" PRIu64 ","
		       "\"msg_5xx\":%" PRIu64 ",\"msg_failed\":%" PRIu64 ",\"not_sent\":%" PRIu64 ",\"replies_4xx\":%" PRIu64 ","
		       "\"replies_5xx\":%" PRIu64 ",\"sessions_ok\":%" PRIu64 ",\"sessions_failed\":%" PRIu64 ","
		       "\"elapsed_s\":%.3f,\"msgs_per_s\":%.1f,\"latency_us\":{\"count\":%" PRIu64 ",\"p50\":%" PRIu64 ","
		       "\"p90\":%" PRIu64 ",\"p99\":%" PRIu64 ",\"max\":%" PRIu64 "},\"timed_out\":%s,\"pass\":%s}\n",
		       o->host, o->port, o->conns, o->workers, o->messages, wr->header_len + wr->body_len, o->rcpts,
		       o->pipelining ? "true" : "false", o->bdat ? "true" : "false", r->msg_ok, r->msg_4xx, r->msg_5xx,
		       r->msg_failed, r->msg_unsent, r->replies_4xx, r->replies_5xx, r->sessions_ok, r->sessions_failed,
		       elapsed, mps, r->lat_us.count, p50, p90, p99, r->lat_us.max, timed_out ? "true" : "false",
		       pass ? "true" : "false");
	fflush(stdout);
	return pass;
}

static int smtp_main(struct bench_opts *o)
{
	static struct rm_daemon d;
	static struct rm_config cfg;
	static struct smtp_shared sh;
	static struct smtp_result total;
	char err[512];
	sigset_t sigs;
	uint64_t deadline_ms, last_progress_ms, end_us = 0;
	bool timed_out = false, interrupted = false, all_done = false, pass;
	long cpus;

	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	/* A session without a message would only say EHLO and QUIT. */
	if (o->conns > o->messages)
		o->conns = (uint32_t)o->messages;
	if (o->workers == 0)
		o->workers = cpus > 0 ? (uint32_t)(cpus < RM_WORKERS_MAX ? cpus : RM_WORKERS_MAX) : 1;
	if (o->workers > o->conns)
		o->workers = o->conns;
	rm_log_init("ringmail-bench", o->verbose ? RM_LOG_INFO : RM_LOG_WARN, false);
	if (!raise_fd_limit(o->conns))
		return 2;
	if (rm_probe_io_uring(err, sizeof(err)) < 0) {
		fprintf(stderr, "ringmail-bench: cannot use io_uring: %s\n", err);
		return 2;
	}
	sh.opt = *o;
	smtp_build_wire(&sh);
	sh.workers = calloc(o->workers, sizeof(*sh.workers));
	if (sh.workers == NULL)
		rm_fatal("out of memory");
	for (uint32_t i = 0, first = 0; i < o->workers; i++) {
		struct smtp_worker *bw = &sh.workers[i];

		bw->sh = &sh;
		bw->index = i;
		bw->first = first;
		bw->share = o->conns / o->workers + (i < o->conns % o->workers ? 1 : 0);
		first += bw->share;
		bw->ramp_per_ms = o->ramp_per_s ? (double)o->ramp_per_s / o->workers / 1000.0 : 0;
		bw->rate_per_ms = o->rate_per_s ? (double)o->rate_per_s / o->workers / 1000.0 : 0;
		bw->sessions = calloc(bw->share ? bw->share : 1, sizeof(*bw->sessions));
		bw->rate_wait = calloc(bw->share ? bw->share : 1, sizeof(*bw->rate_wait));
		if (bw->sessions == NULL || bw->rate_wait == NULL)
			rm_fatal("out of memory");
	}
	smtp_make_config(&sh, &cfg);
	d.worker_count = o->workers;
	d.protocols = NULL;
	d.control_ops = NULL;
	d.hooks.worker_start = smtp_worker_start;
	d.hooks.worker_tick = smtp_tick;
	d.hooks.arg = &sh;
	atomic_store(&d.config_ptr, &cfg);
	if (rm_daemon_bind(&d, err, sizeof(err)) < 0) {
		fprintf(stderr, "ringmail-bench: %s\n", err);
		return 2;
	}
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	sh.start_ms = rm_now_ms();
	sh.start_us = now_us();
	deadline_ms = sh.start_ms + (uint64_t)o->time_limit_s * 1000u;
	last_progress_ms = sh.start_ms;
	rm_daemon_start(&d);
	/* Bounded by the time limit: then the workers are stopped, and they exit
	 * within the shutdown grace. */
	for (;;) {
		struct timespec wait = { 0, 20 * 1000 * 1000 };
		int sig = sigtimedwait(&sigs, NULL, &wait);
		uint64_t now = rm_now_ms();

		if (rm_daemon_all_exited(&d))
			break;
		if (!all_done && atomic_load(&sh.finished) == o->conns) {
			all_done = true;
			rm_daemon_request_stop(&d);
		}
		if ((sig == SIGINT || sig == SIGTERM) && !interrupted && !timed_out && !all_done) {
			interrupted = true;
			end_us = now_us();
			rm_warn(0, "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
			rm_daemon_request_stop(&d);
		}
		if (now >= deadline_ms && !timed_out && !interrupted && !all_done) {
			timed_out = true;
			end_us = now_us();
			rm_warn(0, "time limit of %u s reached: stopping", o->time_limit_s);
			rm_daemon_request_stop(&d);
		}
		if (o->verbose && now >= last_progress_ms + 1000) {
			last_progress_ms = now;
			fprintf(stderr, "ringmail-bench: %.1f s: greeted %" PRIu64 ", finished %" PRIu64 " of %u "
				"sessions, %" PRIu64 " messages accepted\n", seconds_between(sh.start_ms, now),
				atomic_load(&sh.established), atomic_load(&sh.finished), o->conns, atomic_load(&sh.accepted));
		}
	}
	rm_daemon_join(&d);
	smtp_sum(&sh, &total);
	if (end_us == 0) {
		for (uint32_t i = 0; i < o->workers; i++)
			if (sh.workers[i].done_us > end_us)
				end_us = sh.workers[i].done_us;
		if (end_us == 0)
			end_us = now_us();
	}
	pass = smtp_report(&sh, &total, end_us, timed_out, interrupted);
	for (uint32_t i = 0; i < o->workers; i++) {
		free(sh.workers[i].sessions);
		free(sh.workers[i].rate_wait);
	}
	free(sh.workers);
	smtp_free_wire(&sh.wire);
	return pass ? 0 : 1;
}

/* ---- sink mode -------------------------------------------------------------------------------
 * An SMTP server that accepts every message and keeps nothing: the next hop for
 * tests and for `make run`.  ringmail-bench's daemon gets one listener here,
 * filled in directly (the configuration parser knows only ringmaild's
 * protocols; the daemon looks the name up in the table this program passes).
 * Commands are read as lines (at most SINK_LINE_MAX bytes); DATA content is
 * scanned for CR LF "." CR LF and dropped; BDAT chunks are counted and
 * dropped.  Replies are queued only while the output has room: otherwise the
 * input is left unconsumed (held) and offered again when the output drains. */

#define SINK_LINE_MAX 1000u		/* RFC 5321 command line, CR LF included */
#define SINK_REPLY_ROOM 1024u		/* output room wanted before a command is taken */

enum sink_mode_state { K_CMD = 0, K_DATA, K_BDAT, K_CLOSING };

/* The end-of-data scanner: only CR LF "." CR LF ends the content. */
enum sink_dfa { D_LINE_START = 0, D_DOT, D_DOT_CR, D_MID, D_CR };

struct sink_worker;

struct sink_session {
	struct sink_worker *sw;
	uint8_t state;		/* enum sink_mode_state */
	uint8_t dfa;		/* enum sink_dfa, in K_DATA */
	bool greeted_ehlo;
	bool mail;		/* MAIL accepted, transaction open */
	bool bdat_last;
	bool bdat_refused;	/* the chunk is read, then refused (no transaction) */
	bool overlong;		/* dropping an over-long line up to its LF */
	uint32_t rcpts;
	uint64_t bdat_left;
	uint64_t msg_bytes;
	uint16_t line_len;
	uint8_t line[SINK_LINE_MAX];
};

struct sink_worker {
	uint64_t sessions, messages, bytes, refused;
};

struct sink_shared {
	struct bench_opts opt;
	struct sink_worker workers[RM_WORKERS_MAX];
	_Atomic uint64_t messages;
};

static struct sink_shared *sink_sh;

static bool sink_reply(struct rm_conn *c, const char *text)
{
	/* Room was checked before the command was taken; a refusal ends the session. */
	if (rm_conn_write(c, text, strlen(text)) < 0) {
		rm_conn_abort(c, -ENOBUFS);
		return false;
	}
	return true;
}

static void sink_on_open(struct rm_conn *c)
{
	struct sink_session *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		rm_conn_abort(c, -ENOMEM);
		return;
	}
	s->sw = &sink_sh->workers[rm_worker_index(c->worker)];
	s->sw->sessions++;
	c->session = s;
	rm_conn_timer(c, rm_conn_idle_timeout_ms(c));
	sink_reply(c, "220 ringmail-bench sink ESMTP\r\n");
}

static void sink_message_done(struct sink_session *s)
{
	s->sw->messages++;
	s->sw->bytes += s->msg_bytes;
	atomic_fetch_add_explicit(&sink_sh->messages, 1, memory_order_relaxed);
	s->mail = false;
	s->rcpts = 0;
	s->msg_bytes = 0;
}

static bool verb_is(const uint8_t *p, size_t n, const char *verb)
{
	size_t k = strlen(verb);

	return n >= k && strncasecmp((const char *)p, verb, k) == 0 && (n == k || p[k] == ' ');
}

/* One command line, CR LF stripped. */
static void sink_command(struct rm_conn *c, struct sink_session *s, const uint8_t *p, size_t n)
{
	if (verb_is(p, n, "EHLO")) {
		s->mail = false;
		s->rcpts = 0;
		sink_reply(c, "250-ringmail-bench sink\r\n250-PIPELINING\r\n250-CHUNKING\r\n250-8BITMIME\r\n"
			   "250 ENHANCEDSTATUSCODES\r\n");
	} else if (verb_is(p, n, "HELO")) {
		s->mail = false;
		s->rcpts = 0;
		sink_reply(c, "250 ringmail-bench sink\r\n");
	} else if (verb_is(p, n, "MAIL")) {
		if (s->mail) {
			s->sw->refused++;
			sink_reply(c, "503 5.5.1 Error: nested MAIL command\r\n");
			return;
		}
		s->mail = true;
		s->rcpts = 0;
		s->msg_bytes = 0;
		sink_reply(c, "250 2.1.0 Ok\r\n");
	} else if (verb_is(p, n, "RCPT")) {
		if (!s->mail) {
			s->sw->refused++;
			sink_reply(c, "503 5.5.1 Error: need MAIL command\r\n");
			return;
		}
		s->rcpts++;
		sink_reply(c, "250 2.1.5 Ok\r\n");
	} else if (verb_is(p, n, "DATA")) {
		if (!s->mail || s->rcpts == 0) {
			s->sw->refused++;
			sink_reply(c, "503 5.5.1 Error: need RCPT command\r\n");
			return;
		}
		s->state = K_DATA;
		s->dfa = D_LINE_START;
		sink_reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
	} else if (verb_is(p, n, "BDAT")) {
		uint64_t size = 0;
		size_t i = 5, digits = 0;

		for (; i < n && p[i] >= '0' && p[i] <= '9' && digits < 18; i++, digits++)
			size = size * 10 + (uint64_t)(p[i] - '0');
		if (digits == 0 || (i < n && p[i] != ' ') ||
		    (i < n && !(n - i == 5 && strncasecmp((const char *)p + i, " LAST", 5) == 0))) {
			s->sw->refused++;
			sink_reply(c, "501 5.5.4 Syntax: BDAT size [LAST]\r\n");
			return;
		}
		s->state = K_BDAT;
		s->bdat_left = size;
		s->bdat_last = i < n;
		s->bdat_refused = !s->mail || s->rcpts == 0;
	} else if (verb_is(p, n, "RSET")) {
		s->mail = false;
		s->rcpts = 0;
		sink_reply(c, "250 2.0.0 Ok\r\n");
	} else if (verb_is(p, n, "NOOP")) {
		sink_reply(c, "250 2.0.0 Ok\r\n");
	} else if (verb_is(p, n, "QUIT")) {
		if (sink_reply(c, "221 2.0.0 Bye\r\n")) {
			s->state = K_CLOSING;
			rm_conn_close(c);
		}
	} else {
		s->sw->refused++;
		sink_reply(c, "502 5.5.2 Error: command not recognized\r\n");
	}
}

/* DATA content from p: returns the bytes taken; s->state leaves K_DATA at the end. */
static size_t sink_data(struct rm_conn *c, struct sink_session *s, const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t ch = p[i];

		if (s->dfa == D_MID) {
			const uint8_t *cr = memchr(p + i, '\r', n - i);

			if (cr == NULL)
				break;		/* all of it is content */
			i = (size_t)(cr - p) + 1;
			s->dfa = D_CR;
			continue;
		}
		i++;
		switch (s->dfa) {
		case D_LINE_START:
			s->dfa = ch == '.' ? D_DOT : ch == '\r' ? D_CR : D_MID;
			break;
		case D_DOT:
			s->dfa = ch == '\r' ? D_DOT_CR : D_MID;
			break;
		case D_DOT_CR:
			if (ch == '\n') {
				s->msg_bytes += i;
				s->state = K_CMD;
				sink_message_done(s);
				sink_reply(c, "250 2.0.0 Ok: queued\r\n");
				return i;
			}
			s->dfa = ch == '\r' ? D_CR : D_MID;
			break;
		default:	/* D_CR */
			s->dfa = ch == '\n' ? D_LINE_START : ch == '\r' ? D_CR : D_MID;
			break;
		}
	}
	s->msg_bytes += n;
	return n;
}

static size_t sink_bdat(struct rm_conn *c, struct sink_session *s, const uint8_t *p, size_t n)
{
	size_t k = s->bdat_left < n ? (size_t)s->bdat_left : n;

	s->bdat_left -= k;
	s->msg_bytes += k;
	if (s->bdat_left > 0)
		return k;
	s->state = K_CMD;
	if (s->bdat_refused) {
		s->sw->refused++;
		sink_reply(c, "503 5.5.1 Error: need RCPT command\r\n");
	} else if (s->bdat_last) {
		sink_message_done(s);
		sink_reply(c, "250 2.0.0 Ok: queued\r\n");
	} else {
		sink_reply(c, "250 2.0.0 Ok: chunk received\r\n");
	}
	return k;
}

static size_t sink_on_data(struct rm_conn *c, const struct rm_rx *rx)
{
	struct sink_session *s = c->session;
	const uint8_t *p = rx->data;
	size_t n = rx->len, pos = 0;

	if (s == NULL)
		return n;
	rm_conn_timer(c, rm_conn_idle_timeout_ms(c));
	/* Each pass takes a line, or content: bounded by n. */
	while (pos < n && s->state != K_CLOSING && c->state == RM_CONN_OPEN) {
		const uint8_t *lf;
		size_t take;

		if (s->state == K_DATA) {
			pos += sink_data(c, s, p + pos, n - pos);
			continue;
		}
		if (s->state == K_BDAT) {
			pos += sink_bdat(c, s, p + pos, n - pos);
			continue;
		}
		if (rm_conn_output_room(c) < SINK_REPLY_ROOM)
			break;		/* held: offered again once the output drains */
		lf = memchr(p + pos, '\n', n - pos);
		take = lf != NULL ? (size_t)(lf - (p + pos)) + 1 : n - pos;
		if (s->overlong || s->line_len + take > sizeof(s->line)) {
			/* Drop up to the LF, then answer once. */
			s->overlong = lf == NULL;
			s->line_len = 0;
			pos += take;
			if (lf != NULL) {
				s->sw->refused++;
				sink_reply(c, "500 5.5.0 Error: line too long\r\n");
			}
			continue;
		}
		memcpy(s->line + s->line_len, p + pos, take);
		s->line_len = (uint16_t)(s->line_len + take);
		pos += take;
		if (lf != NULL) {
			size_t len = s->line_len - 1u;

			if (len > 0 && s->line[len - 1] == '\r')
				len--;
			s->line_len = 0;
			sink_command(c, s, s->line, len);
		}
	}
	return s->state == K_CLOSING || c->state != RM_CONN_OPEN ? n : pos;
}

static void sink_on_timeout(struct rm_conn *c)
{
	if (rm_conn_write(c, "421 4.4.2 Error: timeout exceeded\r\n", 35) < 0) {
		rm_conn_abort(c, -ETIMEDOUT);
		return;
	}
	rm_conn_close(c);
}

static void sink_on_eof(struct rm_conn *c)
{
	rm_conn_close(c);
}

static void sink_on_shutdown(struct rm_conn *c)
{
	struct sink_session *s = c->session;

	if (s != NULL && s->state == K_CMD && rm_conn_write(c, "421 4.3.2 Shutting down\r\n", 25) == 0) {
		rm_conn_close(c);
		return;
	}
	rm_conn_abort(c, -ESHUTDOWN);
}

static void sink_on_close(struct rm_conn *c, int err)
{
	free(c->session);
	c->session = NULL;
}

static const struct rm_session_ops sink_ops = {
	.protocol = "sink",
	.on_open = sink_on_open,
	.on_data = sink_on_data,
	.on_timeout = sink_on_timeout,
	.on_eof = sink_on_eof,
	.on_shutdown = sink_on_shutdown,
	.on_close = sink_on_close,
};

static bool sink_tick(struct rm_worker *w, void *arg)
{
	return true;	/* the main thread decides when to stop */
}

/* Refuse a port somebody listens on: SO_REUSEPORT would share it silently. */
static bool sink_port_free(const union rm_sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return true;	/* the daemon's own bind reports it */
	/* SO_REUSEADDR, as the daemon binds: connections in TIME_WAIT are no listener. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 }, sizeof(int));
	ok = bind(fd, &sa->sa, len) == 0 && listen(fd, 1) == 0;
	if (!ok)
		fprintf(stderr, "ringmail-bench: sink: --listen %s port %u: %s\n",
			sink_sh->opt.host, sink_sh->opt.port, strerror(errno));
	close(fd);
	return ok;
}

static int sink_main(struct bench_opts *o)
{
	static struct rm_daemon d;
	static struct rm_config cfg;
	static struct sink_shared sh;
	static const struct rm_protocol protocols[] = { { "sink", &sink_ops }, { NULL, NULL } };
	struct rm_listener_config *l = &cfg.listeners[0];
	uint64_t deadline_ms, messages = 0, sessions = 0, bytes = 0, refused = 0, t0;
	bool interrupted = false, timed_out = false, reached = false;
	char err[512];
	sigset_t sigs;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	sink_sh = &sh;
	sh.opt = *o;
	if (o->workers == 0)
		o->workers = cpus > 0 ? (uint32_t)(cpus < RM_WORKERS_MAX ? cpus : RM_WORKERS_MAX) : 1;
	rm_log_init("ringmail-bench", o->verbose ? RM_LOG_INFO : RM_LOG_WARN, false);
	if (!raise_fd_limit(1024))
		return 2;
	if (rm_probe_io_uring(err, sizeof(err)) < 0) {
		fprintf(stderr, "ringmail-bench: cannot use io_uring: %s\n", err);
		return 2;
	}
	if (!sink_port_free(&o->dest, o->dest_len))
		return 2;
	rm_config_defaults(&cfg);
	cfg.workers = o->workers;
	cfg.log_level = o->verbose ? RM_LOG_INFO : RM_LOG_WARN;
	cfg.control_socket[0] = '\0';
	cfg.limits.shutdown_timeout_ms = SHUTDOWN_GRACE_MS;
	cfg.limits.connections_per_worker = 4096;
	cfg.listener_count = 1;
	memset(l, 0, sizeof(*l));
	snprintf(l->name, sizeof(l->name), "sink");
	snprintf(l->protocol, sizeof(l->protocol), "sink");
	snprintf(l->address, sizeof(l->address), "%s", o->host);
	l->port = o->port;
	l->tls = RM_TLS_NONE;
	d.worker_count = o->workers;
	d.protocols = protocols;
	d.control_ops = NULL;
	d.hooks.worker_tick = sink_tick;
	d.hooks.arg = &sh;
	atomic_store(&d.config_ptr, &cfg);
	if (rm_daemon_bind(&d, err, sizeof(err)) < 0) {
		fprintf(stderr, "ringmail-bench: %s\n", err);
		return 2;
	}
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	t0 = now_us();
	deadline_ms = rm_now_ms() + (uint64_t)o->time_limit_s * 1000u;
	rm_daemon_start(&d);
	printf("ringmail-bench sink: listening on %s port %u, %u workers, for at most %u s%s\n", o->host, o->port,
	       o->workers, o->time_limit_s, o->messages_set ? "" : " (or until SIGTERM)");
	fflush(stdout);
	/* Bounded by the duration; a signal or --messages ends it sooner. */
	for (;;) {
		struct timespec wait = { 0, 20 * 1000 * 1000 };
		int sig = sigtimedwait(&sigs, NULL, &wait);

		if (rm_daemon_all_exited(&d))
			break;
		if (interrupted || timed_out || reached)
			continue;
		if (sig == SIGINT || sig == SIGTERM)
			interrupted = true;
		else if (rm_now_ms() >= deadline_ms)
			timed_out = true;
		else if (o->messages_set && atomic_load(&sh.messages) >= o->messages)
			reached = true;
		if (interrupted || timed_out || reached)
			rm_daemon_request_stop(&d);
	}
	rm_daemon_join(&d);
	for (uint32_t i = 0; i < o->workers; i++) {
		sessions += sh.workers[i].sessions;
		messages += sh.workers[i].messages;
		bytes += sh.workers[i].bytes;
		refused += sh.workers[i].refused;
	}
	printf("ringmail-bench sink: %" PRIu64 " sessions, %" PRIu64 " messages, %" PRIu64 " bytes of content, "
	       "%" PRIu64 " commands refused, %.3f s (%s)\n", sessions, messages, bytes, refused,
	       seconds_between_us(t0, now_us()),
	       interrupted ? "signal" : timed_out ? "duration reached" : "--messages reached");
	printf("RESULT mode=sink sessions=%" PRIu64 " messages=%" PRIu64 " bytes=%" PRIu64 " refused=%" PRIu64 "\n",
	       sessions, messages, bytes, refused);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	static struct rm_daemon bench_daemon;
	static struct rm_config cfg;
	static struct bench_shared sh;
	static struct bench_result total;
	struct bench_opts *o = &sh.opt;
	char err[512];
	sigset_t sigs;
	uint64_t deadline_ms, last_progress_ms, end_us = 0;
	bool timed_out = false, interrupted = false, all_done = false, pass;
	long cpus;
	int ret;

	ret = parse_args(argc, argv, o);
	if (ret != 0)
		return ret > 0 ? 0 : 2;
	if (o->mode == MODE_SPOOL)
		return spool_main(o);
	if (o->mode == MODE_SPOOL_LIMIT)
		return limit_main(o);
	if (o->mode == MODE_SMTP)
		return smtp_main(o);
	if (o->mode == MODE_SINK)
		return sink_main(o);
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (o->workers == 0)
		o->workers = cpus > 0 ? (uint32_t)(cpus < RM_WORKERS_MAX ? cpus : RM_WORKERS_MAX) : 1;
	if (o->workers > o->conns)
		o->workers = o->conns;
	if (o->workers == 0)
		o->workers = 1;
	rm_log_init("ringmail-bench", o->verbose ? RM_LOG_INFO : RM_LOG_WARN, false);
	if (!raise_fd_limit(o->conns))
		return 2;
	if (rm_probe_io_uring(err, sizeof(err)) < 0) {
		fprintf(stderr, "ringmail-bench: cannot use io_uring: %s\n", err);
		return 2;
	}

	sh.workers = calloc(o->workers, sizeof(*sh.workers));
	if (sh.workers == NULL)
		rm_fatal("out of memory");
	for (uint32_t i = 0, first = 0; i < o->workers; i++) {
		struct bench_worker *bw = &sh.workers[i];

		bw->sh = &sh;
		bw->index = i;
		bw->first = first;
		bw->share = o->conns / o->workers + (i < o->conns % o->workers ? 1 : 0);
		first += bw->share;
		bw->ramp_per_ms = o->ramp_per_s ? (double)o->ramp_per_s / o->workers / 1000.0 : 0;
		bw->sessions = calloc(bw->share ? bw->share : 1, sizeof(*bw->sessions));
		bw->batch = malloc((size_t)o->pipeline * o->line_bytes);
		if (bw->sessions == NULL || bw->batch == NULL)
			rm_fatal("out of memory");
	}

	make_config(o, &cfg);
	bench_daemon.worker_count = o->workers;
	bench_daemon.protocols = NULL;
	bench_daemon.control_ops = NULL;
	bench_daemon.hooks.worker_start = bench_worker_start;
	bench_daemon.hooks.worker_tick = bench_tick;
	bench_daemon.hooks.arg = &sh;
	atomic_store(&bench_daemon.config_ptr, &cfg);
	if (rm_daemon_bind(&bench_daemon, err, sizeof(err)) < 0) {
		fprintf(stderr, "ringmail-bench: %s\n", err);
		return 2;
	}

	/* Workers inherit the mask: only this thread takes the signals. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	sh.start_ms = rm_now_ms();
	sh.start_us = now_us();
	deadline_ms = sh.start_ms + (uint64_t)o->time_limit_s * 1000u;
	last_progress_ms = sh.start_ms;
	rm_daemon_start(&bench_daemon);
	for (;;) {
		struct timespec wait = { 0, 20 * 1000 * 1000 };
		int sig = sigtimedwait(&sigs, NULL, &wait);
		uint64_t now = rm_now_ms();

		if (rm_daemon_all_exited(&bench_daemon))
			break;
		/* A worker whose worker_tick said stop may still sleep up to a second
		 * in the engine's wait before it notices; the stop request wakes it. */
		if (!all_done && atomic_load(&sh.finished) == o->conns) {
			all_done = true;
			rm_daemon_request_stop(&bench_daemon);
		}
		if ((sig == SIGINT || sig == SIGTERM) && !interrupted && !timed_out && !all_done) {
			interrupted = true;
			end_us = now_us();
			rm_warn(0, "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
			rm_daemon_request_stop(&bench_daemon);
		}
		if (now >= deadline_ms && !timed_out && !interrupted && !all_done) {
			timed_out = true;
			end_us = now_us();
			rm_warn(0, "time limit of %u s reached: stopping", o->time_limit_s);
			rm_daemon_request_stop(&bench_daemon);
		}
		if (o->verbose && now >= last_progress_ms + 1000) {
			last_progress_ms = now;
			fprintf(stderr, "ringmail-bench: %.1f s: established %" PRIu64 ", finished %" PRIu64 " of %u\n",
				seconds_between(sh.start_ms, now), atomic_load(&sh.established),
				atomic_load(&sh.finished), o->conns);
		}
	}
	rm_daemon_join(&bench_daemon);

	for (uint32_t i = 0; i < o->workers; i++) {
		const struct bench_result *r = &sh.workers[i].r;

		total.ok += r->ok;
		total.failed += r->failed;
		total.established += r->established;
		total.byes += r->byes;
		total.lines += r->lines;
		total.bytes_verified += r->bytes_verified;
		total.bytes_sent += r->bytes_sent;
		total.mismatches += r->mismatches;
		for (unsigned k = 0; k < R_COUNT; k++)
			total.reasons[k] += r->reasons[k];
		if (r->last_connect_err != 0)
			total.last_connect_err = r->last_connect_err;
		hist_merge(&total.rtt_us, &r->rtt_us);
	}
	if (end_us == 0) {
		/* Finished normally: the run ended when its last worker's share did. */
		for (uint32_t i = 0; i < o->workers; i++)
			if (sh.workers[i].done_us > end_us)
				end_us = sh.workers[i].done_us;
		if (end_us == 0)
			end_us = now_us();
	}
	pass = report(&sh, &total, end_us, timed_out, interrupted);
	for (uint32_t i = 0; i < o->workers; i++) {
		free(sh.workers[i].sessions);
		free(sh.workers[i].batch);
	}
	free(sh.workers);
	return pass ? 0 : 1;
}
