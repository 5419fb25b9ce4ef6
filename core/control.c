/*
 * NAME
 *	control - control socket sessions
 * DESCRIPTION
 *	See control.h.  Runs on worker 0; it reads other workers' counters only
 *	through their relaxed atomics, never their state.
 */
#include "core/control.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/spool.h"
#include "proto/linesplit.h"

#define RM_CONTROL_IDLE_MS 60000
#define RM_CONTROL_REPLY_MAX 65536	/* stats of RM_WORKERS_MAX workers fit */

struct control_session {
	struct rm_lines lines;
	uint8_t hold[RM_CONTROL_LINE_MAX + 1];
};

struct reply {
	char text[RM_CONTROL_REPLY_MAX];
	size_t len;
};

static void add(struct reply *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct reply *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->len >= sizeof(r->text))
		return;
	va_start(ap, fmt);
	n = vsnprintf(r->text + r->len, sizeof(r->text) - r->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		r->len += (size_t)n < sizeof(r->text) - r->len ? (size_t)n : sizeof(r->text) - r->len - 1;
}

#define STAT_FIELDS(X) \
	X(accepted, "connections_accepted") X(connected, "connections_outbound") \
	X(closed, "connections_closed") X(open, "connections_open") \
	X(accept_refused, "connections_refused") X(recv_bytes, "bytes_received") \
	X(sent_bytes, "bytes_sent") X(recv_enobufs, "recv_enobufs") X(recv_paused, "recv_paused") \
	X(held_copied, "held_input_copied") \
	X(timeouts, "timeouts") X(buffers_free, "buffers_free") \
	X(write_blocks_free, "write_blocks_free") X(loop_iterations, "loop_iterations")

#define SPOOL_FIELDS(X) \
	X(committed, "spool_committed") X(commit_failed, "spool_commit_failed") \
	X(syncs, "spool_syncs") X(writes, "spool_writes") X(bytes_written, "spool_bytes_written") \
	X(queued, "spool_queued") X(segments, "spool_segments") X(write_errors, "spool_write_errors")

/* One worker's spool counters, or the sum over every worker (worker < 0). */
static void spool_stats(const struct rm_daemon *d, int worker, struct rm_spool_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < d->worker_count; i++) {
		const struct rm_spool *sp;

		if ((worker >= 0 && (unsigned)worker != i) || d->workers[i] == NULL)
			continue;
		sp = rm_spool_of(d->workers[i]);
		if (sp == NULL)
			continue;
#define X(f, name) atomic_fetch_add_explicit(&out->f, atomic_load_explicit(&rm_spool_stats(sp)->f, memory_order_relaxed), memory_order_relaxed);
		SPOOL_FIELDS(X)
#undef X
	}
}

static void stats_text(struct reply *r, const struct rm_worker_stats *s, const struct rm_spool_stats *sp,
		       const char *prefix)
{
#define X(f, name) add(r, "%s%s %llu\n", prefix, name, (unsigned long long)atomic_load_explicit(&s->f, memory_order_relaxed));
	STAT_FIELDS(X)
#undef X
#define X(f, name) add(r, "%s%s %llu\n", prefix, name, (unsigned long long)atomic_load_explicit(&sp->f, memory_order_relaxed));
	SPOOL_FIELDS(X)
#undef X
}

static void stats_json(struct reply *r, const struct rm_worker_stats *s, const struct rm_spool_stats *sp)
{
	const char *sep = "";

	add(r, "{");
#define X(f, name) do { add(r, "%s\"%s\":%llu", sep, name, (unsigned long long)atomic_load_explicit(&s->f, memory_order_relaxed)); sep = ","; } while (0);
	STAT_FIELDS(X)
#undef X
#define X(f, name) do { add(r, ",\"%s\":%llu", name, (unsigned long long)atomic_load_explicit(&sp->f, memory_order_relaxed)); } while (0);
	SPOOL_FIELDS(X)
#undef X
	add(r, "}");
}

static void do_stats(struct rm_conn *c, struct reply *r, bool json)
{
	const struct rm_daemon *d = rm_the_daemon;
	struct rm_worker_stats total;
	struct rm_spool_stats spool;
	uint64_t uptime = rm_worker_now_ms(c->worker) - d->started_ms;

	rm_daemon_stats_sum(d, &total);
	if (json) {
		add(r, "{\"pid\":%d,\"uptime_ms\":%llu,\"workers\":%u,\"config_generation\":%u,\"total\":",
		    (int)getpid(), (unsigned long long)uptime, d->worker_count,
		    (unsigned)atomic_load(&d->config_generation));
		spool_stats(d, -1, &spool);
		stats_json(r, &total, &spool);
		add(r, ",\"per_worker\":[");
		for (unsigned i = 0; i < d->worker_count; i++) {
			if (i > 0)
				add(r, ",");
			spool_stats(d, (int)i, &spool);
			stats_json(r, rm_worker_stats(d->workers[i]), &spool);
		}
		add(r, "]}\n");
		return;
	}
	add(r, "pid %d\nuptime_ms %llu\nworkers %u\nconfig_generation %u\n", (int)getpid(),
	    (unsigned long long)uptime, d->worker_count, (unsigned)atomic_load(&d->config_generation));
	spool_stats(d, -1, &spool);
	stats_text(r, &total, &spool, "");
	for (unsigned i = 0; i < d->worker_count; i++) {
		char prefix[32];

		snprintf(prefix, sizeof(prefix), "worker%u.", i);
		spool_stats(d, (int)i, &spool);
		stats_text(r, rm_worker_stats(d->workers[i]), &spool, prefix);
	}
}

static void command(struct rm_conn *c, const uint8_t *text, size_t len)
{
	struct reply *r = malloc(sizeof(*r));
	char cmd[RM_CONTROL_LINE_MAX + 1];

	if (r == NULL) {
		rm_conn_abort(c, -12);
		return;
	}
	r->len = 0;
	memcpy(cmd, text, len);
	cmd[len] = '\0';
	if (strcmp(cmd, "stats") == 0)
		do_stats(c, r, false);
	else if (strcmp(cmd, "stats json") == 0)
		do_stats(c, r, true);
	else if (strcmp(cmd, "ping") == 0)
		add(r, "pong\n");
	else
		add(r, "error: unknown command '%.64s'\n", cmd);
	add(r, ".\n");
	if (rm_conn_write(c, r->text, r->len) < 0) {
		rm_warn(c->id, "control: reply does not fit the output limit; closing");
		rm_conn_abort(c, -105);
	}
	free(r);
}

static void control_open(struct rm_conn *c)
{
	struct control_session *s = malloc(sizeof(*s));

	if (s == NULL) {
		rm_conn_abort(c, -12);
		return;
	}
	rm_lines_init(&s->lines, s->hold, RM_CONTROL_LINE_MAX);
	c->session = s;
	rm_conn_timer(c, RM_CONTROL_IDLE_MS);
}

static size_t control_data(struct rm_conn *c, const struct rm_rx *rx)
{
	struct control_session *s = c->session;
	size_t pos = 0;

	/* Replies are at most RM_CONTROL_REPLY_MAX: take a line only when that fits. */
	while (pos < rx->len && (rm_conn_output_room(c) >= RM_CONTROL_REPLY_MAX || c->out_bytes == 0)) {
		struct rm_line line;

		pos += rm_lines_feed(&s->lines, rx->data + pos, rx->len - pos, &line);
		if (line.kind == RM_LINE_COMPLETE)
			command(c, line.text, line.text_len);
		else if (line.kind == RM_LINE_TOO_LONG)
			rm_conn_write(c, "error: line too long\n.\n", 23);
	}
	rm_conn_timer(c, RM_CONTROL_IDLE_MS);
	return pos;
}

static void control_close(struct rm_conn *c, int err)
{
	free(c->session);
	c->session = NULL;
}

const struct rm_session_ops rm_control_ops = {
	.protocol = "control",
	.on_open = control_open,
	.on_data = control_data,
	.on_close = control_close,
};
