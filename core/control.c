/*
 * NAME
 *	control - control socket sessions
 * DESCRIPTION
 *	See control.h.  Runs on worker 0.  Other workers' counters are read
 *	through their relaxed atomics; everything else of another worker (its
 *	spool, its queue) is reached only through its mailbox (engine.h
 *	rm_worker_post), never touched from here:
 *
 *	  worker 0  a request becomes a job with one part per worker concerned
 *	            (every worker for queue and flush, the owner of the queue
 *	            id for delete / hold / release); part_run is posted to each;
 *	  worker N  part_run does the work on its own queue and leaves its
 *	            answer in the part (for queue: its entries, sorted by id,
 *	            rendered into a buffer the part owns), then posts part_back
 *	            to worker 0;
 *	  worker 0  part_back; once every part is back, the reply is streamed
 *	            (queue: the parts merged by queue id, which sorts as text).
 *
 *	Lifetime: a job counts references, one for its session and one for
 *	each part away from worker 0.  The connection may close at any time:
 *	on_close detaches the session and drops its reference, and whoever drops
 *	the last one frees the job, exactly once: worker 0 when the last part
 *	comes back, or the part's worker when it cannot go back because worker
 *	0 has left its loop.
 *
 *	Worker 0's mailbox always has room for the parts coming back: at most
 *	RM_CONTROL_PARTS_MAX (half the mailbox) are away at once, and a request
 *	that would pass that is answered "error: busy".  Should something else
 *	ever fill that mailbox, a part waits RM_CONTROL_RETRY_MS on its worker's
 *	timer wheel and tries again.
 *
 *	Replies are streamed: written as far as rm_conn_output_room allows, the
 *	rest from on_writable, so a reply may be far larger than
 *	limits.output_bytes_max.  While a reply is pending the session takes no
 *	further input (the engine holds it: back-pressure), so replies never mix
 *	and a client that does not read stops only itself.
 */
#include "core/control.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/delivery.h"
#include "core/spool.h"
#include "core/spool_recover.h"
#include "proto/linesplit.h"

#define RM_CONTROL_IDLE_MS 60000
#define RM_CONTROL_REPLY_MAX 262144	/* stats of RM_WORKERS_MAX workers fit */
#define RM_QUEUE_PART_BYTES_MAX (64u << 20)	/* one worker's listing; past it: truncated */
#define RM_CONTROL_PARTS_MAX (RM_MAILBOX_MAX / 2)	/* job parts away from worker 0 at once */
#define RM_CONTROL_RETRY_MS 10		/* a part's way back found worker 0's mailbox full */
#define RM_DOMAIN_MAX 253

enum job_kind { JOB_QUEUE, JOB_FLUSH, JOB_DELETE, JOB_HOLD, JOB_RELEASE };

/* Where one rendered queue entry ends in its part's buffer. */
struct entry_mark {
	uint64_t qid;
	size_t end;			/* the entry is buf[previous end, end) */
};

struct job;

/*
 * One worker's share of a job.  That worker writes it (in part_run) and
 * then posts it back; worker 0 reads it only after part_back.  The mailbox's
 * mutex orders the two.
 */
struct part {
	struct job *job;
	unsigned worker;
	struct rm_worker_timer retry;	/* the way back was full: try again */
	/* queue */
	char *buf;
	size_t len, cap;
	struct entry_mark *marks;
	uint32_t count;
	uint64_t bytes;			/* sum of the listed messages' sizes */
	bool truncated, oom;
	/* flush */
	uint32_t flushed;
	/* delete, hold, release */
	char answer[160];
	/* worker 0, while streaming: the next entry of this part to merge */
	uint32_t next;
};

struct control_session;

struct job {
	_Atomic unsigned refs;		/* the session's + one per part away */
	enum job_kind kind;
	bool json;
	uint64_t now_unix_ms;		/* one "now" for every part's ages */
	uint64_t qid;			/* delete, hold, release */
	char domain[RM_DOMAIN_MAX + 1];	/* flush; "" = every message */
	/* worker 0 only */
	struct control_session *session;	/* NULL once the connection is gone */
	unsigned part_count, parts_back;
	int refused;			/* a part could not be posted: -errno */
	unsigned refused_worker;
	struct part parts[];
};

struct reply {
	char text[RM_CONTROL_REPLY_MAX];
	size_t len;
};

/* What the session is writing; QUEUE_* walk the merge of a queue job. */
enum out_stage {
	OUT_IDLE = 0,			/* no reply pending: take the next request */
	OUT_WAIT,			/* a job is away */
	OUT_QUEUE_HEAD,
	OUT_QUEUE_ENTRIES,
	OUT_QUEUE_TAIL,
	OUT_LAST,			/* piece is the reply's last (ends with ".\n") */
};

struct control_session {
	struct rm_conn *c;
	struct rm_lines lines;
	uint8_t hold[RM_CONTROL_LINE_MAX + 1];
	enum out_stage stage;
	struct job *job;		/* we hold a reference while set */
	struct reply *reply;		/* an owned reply text (stats) */
	const char *piece;		/* what is left to write of the current piece */
	size_t piece_len;
	struct part *pending;		/* JSON: the entry to write after its separator */
	uint32_t emitted;		/* queue entries written */
	bool eof;			/* the peer has finished sending: close after the reply */
	char small[640];		/* short replies, separators, the listing's tail */
};

/* Parts away from worker 0; touched on worker 0 only. */
static unsigned parts_away;

static void job_done(struct control_session *s);
static void pump(struct control_session *s);

/* Queue times (received, next attempt) are wall-clock ms, not the loop's monotonic clock. */
static uint64_t unix_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- stats (worker 0 reads counters only) --------------------------------------------- */

/* Append to a reply made at once (stats); past its size the rest is cut, and
 * command() still ends it with the "." line. */
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

#define DELIVERY_FIELDS(X) \
	X(attempts, "delivery_attempts") X(delivered, "delivery_delivered") X(deferred, "delivery_deferred") \
	X(bounced, "delivery_bounced") X(dsn_sent, "delivery_dsn_sent") X(connections, "delivery_connections") \
	X(connections_reused, "delivery_connections_reused") X(dns_queries, "delivery_dns_queries") \
	X(in_flight, "delivery_in_flight")

/* One worker's delivery counters, or the sum over every worker (worker < 0). */
static void delivery_stats(const struct rm_daemon *d, int worker, struct rm_delivery_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < d->worker_count; i++) {
		const struct rm_delivery_stats *ds = rm_delivery_stats(i);

		if ((worker >= 0 && (unsigned)worker != i) || ds == NULL)
			continue;
#define X(f, name) atomic_fetch_add_explicit(&out->f, atomic_load_explicit(&ds->f, memory_order_relaxed), memory_order_relaxed);
		DELIVERY_FIELDS(X)
#undef X
	}
}

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
		       const struct rm_delivery_stats *ds, const char *prefix)
{
#define X(f, name) add(r, "%s%s %llu\n", prefix, name, (unsigned long long)atomic_load_explicit(&s->f, memory_order_relaxed));
	STAT_FIELDS(X)
#undef X
#define X(f, name) add(r, "%s%s %llu\n", prefix, name, (unsigned long long)atomic_load_explicit(&sp->f, memory_order_relaxed));
	SPOOL_FIELDS(X)
#undef X
#define X(f, name) add(r, "%s%s %llu\n", prefix, name, (unsigned long long)atomic_load_explicit(&ds->f, memory_order_relaxed));
	DELIVERY_FIELDS(X)
#undef X
}

static void stats_json(struct reply *r, const struct rm_worker_stats *s, const struct rm_spool_stats *sp,
		       const struct rm_delivery_stats *ds)
{
	const char *sep = "";

	add(r, "{");
#define X(f, name) do { add(r, "%s\"%s\":%llu", sep, name, (unsigned long long)atomic_load_explicit(&s->f, memory_order_relaxed)); sep = ","; } while (0);
	STAT_FIELDS(X)
#undef X
#define X(f, name) do { add(r, ",\"%s\":%llu", name, (unsigned long long)atomic_load_explicit(&sp->f, memory_order_relaxed)); } while (0);
	SPOOL_FIELDS(X)
#undef X
#define X(f, name) do { add(r, ",\"%s\":%llu", name, (unsigned long long)atomic_load_explicit(&ds->f, memory_order_relaxed)); } while (0);
	DELIVERY_FIELDS(X)
#undef X
	add(r, "}");
}

static void do_stats(struct rm_conn *c, struct reply *r, bool json)
{
	const struct rm_daemon *d = rm_the_daemon;
	struct rm_worker_stats total;
	struct rm_spool_stats spool;
	struct rm_delivery_stats deliv;
	uint64_t uptime = rm_worker_now_ms(c->worker) - d->started_ms;

	rm_daemon_stats_sum(d, &total);
	if (json) {
		add(r, "{\"pid\":%d,\"uptime_ms\":%llu,\"workers\":%u,\"config_generation\":%u,\"total\":",
		    (int)getpid(), (unsigned long long)uptime, d->worker_count,
		    (unsigned)atomic_load(&d->config_generation));
		spool_stats(d, -1, &spool);
		delivery_stats(d, -1, &deliv);
		stats_json(r, &total, &spool, &deliv);
		add(r, ",\"per_worker\":[");
		for (unsigned i = 0; i < d->worker_count; i++) {
			if (i > 0)
				add(r, ",");
			spool_stats(d, (int)i, &spool);
			delivery_stats(d, (int)i, &deliv);
			stats_json(r, rm_worker_stats(d->workers[i]), &spool, &deliv);
		}
		add(r, "]}\n");
		return;
	}
	add(r, "pid %d\nuptime_ms %llu\nworkers %u\nconfig_generation %u\n", (int)getpid(),
	    (unsigned long long)uptime, d->worker_count, (unsigned)atomic_load(&d->config_generation));
	spool_stats(d, -1, &spool);
	delivery_stats(d, -1, &deliv);
	stats_text(r, &total, &spool, &deliv, "");
	for (unsigned i = 0; i < d->worker_count; i++) {
		char prefix[32];

		snprintf(prefix, sizeof(prefix), "worker%u.", i);
		spool_stats(d, (int)i, &spool);
		delivery_stats(d, (int)i, &deliv);
		stats_text(r, rm_worker_stats(d->workers[i]), &spool, &deliv, prefix);
	}
}

/* ---- rendering a worker's queue (on that worker) ----------------------------------------- */

/*
 * Room for `more` bytes in the part's buffer.  The buffer doubles; it never
 * grows past RM_QUEUE_PART_BYTES_MAX by more than one entry's fields (the
 * callers stop there), so the doubling loop is short and cannot overflow.
 * A failed allocation marks the part (its listing says so) and every later
 * append does nothing.
 */
static bool part_reserve(struct part *p, size_t more)
{
	size_t cap;
	char *nb;

	if (p->oom)
		return false;
	if (p->len + more <= p->cap)
		return true;
	cap = p->cap != 0 ? p->cap : 16384;
	while (cap < p->len + more)
		cap *= 2;
	nb = realloc(p->buf, cap);
	if (nb == NULL) {
		p->oom = true;
		return false;
	}
	p->buf = nb;
	p->cap = cap;
	return true;
}

/* Raw bytes; the reserve check makes every writer below bounds-safe. */
static void part_put(struct part *p, const char *s, size_t n)
{
	if (!part_reserve(p, n))
		return;
	memcpy(p->buf + p->len, s, n);
	p->len += n;
}

/* Numbers and fixed words only: strings go through put_text / put_json. */
static void part_printf(struct part *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void part_printf(struct part *p, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		part_put(p, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* A string for people: control bytes as \xNN (and so a backslash as \\),
 * so that an address or an error text can never end a line early (or fake
 * the "." that ends a reply).  Everything else, UTF-8 included, as it is. */
static void put_text(struct part *p, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = strlen(s);
	char *o;

	if (!part_reserve(p, 4 * n))
		return;
	o = p->buf + p->len;
	for (const unsigned char *u = (const unsigned char *)s; *u != '\0'; u++) {
		if (*u == '\\') {
			*o++ = '\\';
			*o++ = '\\';
		} else if (*u < 0x20 || *u == 0x7f) {
			*o++ = '\\';
			*o++ = 'x';
			*o++ = hex[*u >> 4];
			*o++ = hex[*u & 15];
		} else {
			*o++ = (char)*u;
		}
	}
	p->len = (size_t)(o - p->buf);
}

/* Length of the well-formed UTF-8 sequence (2..4 bytes) starting at s, or 0.
 * s is NUL-terminated; a NUL fails every continuation test, so nothing is
 * read past it. */
static int utf8_seq(const unsigned char *s)
{
	unsigned char c = s[0], lo, hi;

	if (c >= 0xc2 && c <= 0xdf)
		return (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		lo = c == 0xe0 ? 0xa0 : 0x80;	/* no overlong forms */
		hi = c == 0xed ? 0x9f : 0xbf;	/* no surrogates */
		return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		lo = c == 0xf0 ? 0x90 : 0x80;
		hi = c == 0xf4 ? 0x8f : 0xbf;	/* nothing past U+10FFFF */
		return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80 ? 4 : 0;
	}
	return 0;
}

/*
 * A JSON string: quote and backslash escaped, control bytes (and DEL) as
 * \u00XX, well-formed UTF-8 as it is.  A byte that is not part of
 * well-formed UTF-8 (the spool keeps envelope bytes as the client sent them)
 * also comes out as \u00XX, i.e. read as Latin-1: the output is always valid
 * JSON, and plain ASCII, the usual case, is unchanged.
 */
static void put_json(struct part *p, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = strlen(s);
	const unsigned char *u = (const unsigned char *)s, *end = u + n;
	char *o;

	if (!part_reserve(p, 6 * n + 2))
		return;
	o = p->buf + p->len;
	*o++ = '"';
	while (u < end) {
		int k;

		if (*u == '"' || *u == '\\') {
			*o++ = '\\';
			*o++ = (char)*u++;
		} else if (*u >= 0x20 && *u < 0x7f) {
			*o++ = (char)*u++;
		} else if (*u >= 0x80 && (k = utf8_seq(u)) > 0) {
			memcpy(o, u, (size_t)k);
			o += k;
			u += k;
		} else {
			memcpy(o, "\\u00", 4);
			o += 4;
			*o++ = hex[*u >> 4];
			*o++ = hex[*u & 15];
			u++;
		}
	}
	*o++ = '"';
	p->len = (size_t)(o - p->buf);
}

/* The names both output formats use (and scripts compare against). */
static const char *rcpt_state_name(uint8_t state)
{
	switch (state) {
	case RM_RCPT_PENDING: return "pending";
	case RM_RCPT_DELIVERED: return "delivered";
	case RM_RCPT_BOUNCED: return "bounced";
	default: return "unknown";
	}
}

/* 45s, 12m05s, 3h07m, 2d04h: what a person reads at a glance. */
static void fmt_duration(char *out, size_t size, uint64_t ms)
{
	unsigned long long s = ms / 1000;

	if (s < 60)
		snprintf(out, size, "%llus", s);
	else if (s < 3600)
		snprintf(out, size, "%llum%02llus", s / 60, s % 60);
	else if (s < 86400)
		snprintf(out, size, "%lluh%02llum", s / 3600, s / 60 % 60);
	else
		snprintf(out, size, "%llud%02lluh", s / 86400, s / 3600 % 24);
}

/*
 * One message as a block of lines, like postqueue -p: id, age, size, sender
 * and the held mark; each recipient indented with its state; next attempt
 * and attempts; the last error if any; a blank line.  A part past its byte
 * bound stops listing recipients (and is marked truncated).
 */
static void render_text(struct part *p, const struct rm_queue_entry *e, uint64_t now)
{
	char id[RM_QUEUE_ID_TEXT_BYTES], age[32], next[48];

	rm_queue_id_format(e->qid, id);
	fmt_duration(age, sizeof(age), now > e->received_unix_ms ? now - e->received_unix_ms : 0);
	part_printf(p, "%s  age %s  %llu bytes  from <", id, age, (unsigned long long)e->size_bytes);
	put_text(p, e->sender);
	part_printf(p, ">%s\n", e->hold ? "  HELD" : "");
	for (uint32_t i = 0; i < e->rcpt_total; i++) {
		if (p->len > RM_QUEUE_PART_BYTES_MAX) {
			p->truncated = true;
			part_printf(p, "    ... %u more recipients\n", e->rcpt_total - i);
			break;
		}
		part_printf(p, "    %-9s  ", rcpt_state_name(e->rcpts[i].state));
		put_text(p, e->rcpts[i].addr);
		part_put(p, "\n", 1);
	}
	if (e->hold)
		snprintf(next, sizeof(next), "when released");
	else if (e->next_attempt_unix_ms <= now)
		snprintf(next, sizeof(next), "now");
	else {
		char in[32];

		fmt_duration(in, sizeof(in), e->next_attempt_unix_ms - now);
		snprintf(next, sizeof(next), "in %s", in);
	}
	part_printf(p, "    next attempt %s, attempts %u%s\n", next, e->attempts,
		    e->in_delivery ? ", being delivered" : "");
	if (e->last_error[0] != '\0') {
		part_put(p, "    last error: ", 16);
		put_text(p, e->last_error);
		part_put(p, "\n", 1);
	}
	part_put(p, "\n", 1);
}

/* One message as one JSON object (see control.h for the fields). */
static void render_json(struct part *p, const struct rm_queue_entry *e, uint64_t now)
{
	char id[RM_QUEUE_ID_TEXT_BYTES];

	rm_queue_id_format(e->qid, id);
	part_printf(p, "{\"id\":\"%s\",\"worker\":%u,\"age_s\":%llu,\"size\":%llu,\"sender\":", id, p->worker,
		    (unsigned long long)(now > e->received_unix_ms ? (now - e->received_unix_ms) / 1000 : 0),
		    (unsigned long long)e->size_bytes);
	put_json(p, e->sender);
	part_put(p, ",\"recipients\":[", 15);
	for (uint32_t i = 0; i < e->rcpt_total; i++) {
		if (p->len > RM_QUEUE_PART_BYTES_MAX) {
			p->truncated = true;
			break;
		}
		part_put(p, i > 0 ? ",{\"address\":" : "{\"address\":", i > 0 ? 12 : 11);
		put_json(p, e->rcpts[i].addr);
		part_printf(p, ",\"state\":\"%s\"}", rcpt_state_name(e->rcpts[i].state));
	}
	part_printf(p, "],\"next_attempt_unix_ms\":%llu,\"attempts\":%u,\"last_error\":",
		    (unsigned long long)e->next_attempt_unix_ms, e->attempts);
	put_json(p, e->last_error);
	part_printf(p, ",\"hold\":%s}", e->hold ? "true" : "false");
}

struct collect {
	const struct rm_queue_entry **v;
	uint32_t n, cap;
};

/* rm_queue_walk visitor: the array was sized by rm_queue_count, and a full
 * array stops the walk, so a count that changed under us cannot overflow it. */
static bool collect_one(const struct rm_queue_entry *e, void *arg)
{
	struct collect *col = arg;

	if (col->n == col->cap)
		return false;
	col->v[col->n++] = e;
	return true;
}

/* Queue ids sort numerically as they sort as text: this is the listing's order. */
static int qid_cmp(const void *a, const void *b)
{
	const struct rm_queue_entry *x = *(const struct rm_queue_entry *const *)a;
	const struct rm_queue_entry *y = *(const struct rm_queue_entry *const *)b;

	return x->qid < y->qid ? -1 : x->qid > y->qid;
}

/*
 * This worker's queue, rendered into the part.  rm_queue_walk visits in the
 * order of the queue's hash table, so the entries are collected and sorted by
 * id first; worker 0 then only merges the workers' sorted runs.  Each entry's
 * end is marked so that the merge can take whole entries.  All of it runs in
 * one go on this worker's loop: the listing is a snapshot, never a mix of
 * before and after a change.
 */
static void part_queue(struct rm_worker *w, struct part *p)
{
	struct rm_spool *sp = rm_spool_of(w);
	const struct job *job = p->job;
	struct collect col = { 0 };

	if (sp == NULL || rm_queue_count(sp) == 0)
		return;
	col.cap = rm_queue_count(sp);
	col.v = malloc((size_t)col.cap * sizeof(*col.v));
	p->marks = malloc((size_t)col.cap * sizeof(*p->marks));
	if (col.v == NULL || p->marks == NULL) {
		p->oom = true;
		free(col.v);
		return;
	}
	rm_queue_walk(sp, collect_one, &col);
	qsort(col.v, col.n, sizeof(*col.v), qid_cmp);
	for (uint32_t i = 0; i < col.n; i++) {
		if (p->len > RM_QUEUE_PART_BYTES_MAX) {
			p->truncated = true;
			break;
		}
		if (job->json)
			render_json(p, col.v[i], job->now_unix_ms);
		else
			render_text(p, col.v[i], job->now_unix_ms);
		if (p->oom)
			break;		/* a half-rendered entry is never marked, so never sent */
		p->marks[p->count].qid = col.v[i]->qid;
		p->marks[p->count].end = p->len;
		p->count++;
		p->bytes += col.v[i]->size_bytes;
		if (p->truncated)
			break;
	}
	free(col.v);
}

/* delete / hold / release of one message of this worker's queue. */
static void part_id(struct rm_worker *w, struct part *p)
{
	struct rm_spool *sp = rm_spool_of(w);
	const struct job *job = p->job;
	struct rm_queue_entry *e = sp != NULL ? rm_queue_find(sp, job->qid) : NULL;
	char id[RM_QUEUE_ID_TEXT_BYTES];
	const char *verb;
	int rc;

	rm_queue_id_format(job->qid, id);
	if (e == NULL) {
		snprintf(p->answer, sizeof(p->answer), "error: no such message");
		return;
	}
	switch (job->kind) {
	case JOB_DELETE:
		/* A delivery holds the entry: it must not be freed under it. */
		if (e->in_delivery) {
			snprintf(p->answer, sizeof(p->answer), "error: message is being delivered; try again");
			return;
		}
		verb = "deleted";
		rc = rm_spool_delete(sp, e);	/* frees e */
		break;
	case JOB_HOLD:
		verb = "held";
		rc = rm_spool_hold(sp, e, true);
		break;
	default:
		verb = "released";
		rc = rm_spool_hold(sp, e, false);
		break;
	}
	if (rc == -EAGAIN)
		snprintf(p->answer, sizeof(p->answer), "error: the spool is busy; try again");
	else if (rc < 0)
		snprintf(p->answer, sizeof(p->answer), "error: %s", strerror(-rc));
	else
		snprintf(p->answer, sizeof(p->answer), "ok");
	if (rc == 0)
		rm_info(0, "%s: %s by the control socket", id, verb);
	else
		rm_warn(0, "%s: control socket could not make it %s: %s", id, verb, strerror(-rc));
}

/* ---- a job's way there and back ---------------------------------------------------------- */

/* Any thread: the last reference frees the job and every part's buffers.
 * acq_rel: the freeing thread sees everything the others wrote into it. */
static void job_unref(struct job *job)
{
	if (atomic_fetch_sub_explicit(&job->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (unsigned i = 0; i < job->part_count; i++) {
		free(job->parts[i].buf);
		free(job->parts[i].marks);
	}
	free(job);
}

/* On worker 0: one part is back; the last one starts the reply. */
static void part_back(struct rm_worker *w, void *arg)
{
	struct part *p = arg;
	struct job *job = p->job;

	RM_ASSERT(parts_away > 0 && job->parts_back < job->part_count);
	parts_away--;
	job->parts_back++;
	if (job->parts_back == job->part_count && job->session != NULL)
		job_done(job->session);
	job_unref(job);		/* the part's reference */
}

static void part_return(struct rm_worker *w, struct part *p);

/* The retry timer of part_return, on the part's worker. */
static void part_retry(struct rm_worker *w, void *arg)
{
	part_return(w, arg);
}

/* On the part's worker: send it back to worker 0.  Once posted, the part is
 * worker 0's: nothing here touches it again. */
static void part_return(struct rm_worker *w, struct part *p)
{
	int rc = rm_worker_post(rm_the_daemon->workers[0], part_back, p);

	if (rc == -EAGAIN) {
		p->retry.fire = part_retry;
		p->retry.arg = p;
		rm_worker_timer_set(w, &p->retry, RM_CONTROL_RETRY_MS);
	} else if (rc < 0) {
		/* Worker 0 has left its loop: its sessions are gone, nobody waits. */
		job_unref(p->job);
	}
}

/* On the part's worker: do its share, then go back. */
static void part_run(struct rm_worker *w, void *arg)
{
	struct part *p = arg;
	struct job *job = p->job;

	switch (job->kind) {
	case JOB_QUEUE:
		part_queue(w, p);
		break;
	case JOB_FLUSH: {
		struct rm_spool *sp = rm_spool_of(w);

		p->flushed = sp != NULL ? rm_queue_flush(sp, job->domain[0] != '\0' ? job->domain : NULL,
							 job->now_unix_ms) : 0;
		break;
	}
	default:
		part_id(w, p);
		break;
	}
	part_return(w, p);
}

/* ---- writing replies (worker 0) ----------------------------------------------------------- */

/* The reply is out (or at least queued): ready for the next request. */
static void reply_finished(struct control_session *s)
{
	if (s->job != NULL) {
		s->job->session = NULL;
		job_unref(s->job);
		s->job = NULL;
	}
	free(s->reply);
	s->reply = NULL;
	s->stage = OUT_IDLE;
	s->piece = NULL;
	s->piece_len = 0;
	s->pending = NULL;
	s->emitted = 0;
	if (s->eof)
		rm_conn_close(s->c);	/* sends what is queued first */
	else
		rm_conn_resume(s->c);	/* input held meanwhile: the next request */
}

/* A reply made at once: small (in s->small) or owned (s->reply). */
static void reply_now(struct control_session *s, const char *text, size_t len)
{
	s->piece = text;
	s->piece_len = len;
	s->stage = OUT_LAST;
	pump(s);
}

/* A one-line (or few-line) reply into s->small, ".\n" appended; a text too
 * long for it is cut, never left without its end. */
static void reply_small(struct control_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply_small(struct control_session *s, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(s->small, sizeof(s->small) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(s->small) - 3)
		n = (int)sizeof(s->small) - 3;
	memcpy(s->small + n, ".\n", 3);
	reply_now(s, s->small, (size_t)n + 2);
}

/* The part whose next entry has the smallest queue id, or NULL when all are written. */
static struct part *merge_next(struct job *job)
{
	struct part *best = NULL;

	for (unsigned i = 0; i < job->part_count; i++) {
		struct part *p = &job->parts[i];

		if (p->next < p->count &&
		    (best == NULL || p->marks[p->next].qid < best->marks[best->next].qid))
			best = p;
	}
	return best;
}

/* The part's next whole entry becomes the piece (its bytes stay in the part). */
static void take_entry(struct control_session *s, struct part *p)
{
	size_t start = p->next > 0 ? p->marks[p->next - 1].end : 0;

	s->piece = p->buf + start;
	s->piece_len = p->marks[p->next].end - start;
	p->next++;
	s->emitted++;
}

/* The end of a listing: JSON's closing bracket, or the summary line; then ".". */
static void queue_tail(struct control_session *s)
{
	const struct job *job = s->job;
	uint64_t bytes = 0;
	int truncated = -1, n;
	bool oom = false;

	for (unsigned i = 0; i < job->part_count; i++) {
		bytes += job->parts[i].bytes;
		if ((job->parts[i].truncated || job->parts[i].oom) && truncated < 0) {
			truncated = (int)i;
			oom = job->parts[i].oom;
		}
	}
	if (job->json) {
		if (truncated >= 0)
			n = snprintf(s->small, sizeof(s->small), "%s{\"truncated\":true,\"worker\":%d,\"reason\":\"%s\"}\n]\n.\n",
				     s->emitted > 0 ? ",\n" : "\n", truncated, oom ? "out of memory" : "size limit");
		else
			n = snprintf(s->small, sizeof(s->small), "%s]\n.\n", s->emitted > 0 ? "\n" : "");
	} else {
		char trunc[160] = "";

		if (truncated >= 0)
			snprintf(trunc, sizeof(trunc), "-- truncated: worker %d's listing %s\n", truncated,
				 oom ? "ran out of memory" : "passed its size limit");
		if (s->emitted == 0 && truncated < 0)
			n = snprintf(s->small, sizeof(s->small), "queue is empty\n.\n");
		else
			n = snprintf(s->small, sizeof(s->small), "%s-- %u message%s, %llu bytes\n.\n", trunc,
				     s->emitted, s->emitted == 1 ? "" : "s", (unsigned long long)bytes);
	}
	s->piece = s->small;
	s->piece_len = n > 0 ? (size_t)n : 0;
}

/*
 * The next piece of the reply into s->piece; false when the reply is
 * complete.  A piece is never empty.  At most four stage steps per call.
 */
static bool next_piece(struct control_session *s)
{
	for (int step = 0; step < 4; step++) {
		switch (s->stage) {
		case OUT_QUEUE_HEAD:
			s->stage = OUT_QUEUE_ENTRIES;
			if (s->job->json) {
				s->piece = "[";
				s->piece_len = 1;
				return true;
			}
			break;
		case OUT_QUEUE_ENTRIES: {
			struct part *p = s->pending;

			if (p != NULL) {
				s->pending = NULL;
				take_entry(s, p);
				return true;
			}
			p = merge_next(s->job);
			if (p == NULL) {
				s->stage = OUT_QUEUE_TAIL;
				break;
			}
			if (!s->job->json) {
				take_entry(s, p);
				return true;
			}
			/* JSON: one object a line, the separator first. */
			s->pending = p;
			s->piece = s->emitted > 0 ? ",\n" : "\n";
			s->piece_len = s->emitted > 0 ? 2 : 1;
			return true;
		}
		case OUT_QUEUE_TAIL:
			s->stage = OUT_LAST;
			queue_tail(s);
			return true;
		default:
			return false;	/* OUT_LAST written */
		}
	}
	return false;
}

/*
 * Write as much of the reply as the connection takes now.  When it takes no
 * more, the refused write asks the engine for on_writable (output drained,
 * or the worker's pools have room again), which calls this again.  Each
 * round writes at least one byte of the room there was at the start (room
 * only grows when sends complete, never during this call) or ends the
 * reply, so the bound below is never reached in practice.
 */
static void pump(struct control_session *s)
{
	struct rm_conn *c = s->c;
	size_t bound = 2 * (size_t)rm_worker_config(c->worker)->limits.output_bytes_max + 16;

	for (size_t round = 0; round < bound; round++) {
		size_t room, len;

		if (s->piece_len == 0 && !next_piece(s)) {
			reply_finished(s);
			return;
		}
		room = rm_conn_output_room(c);
		len = s->piece_len < room ? s->piece_len : room;
		if (len == 0)
			len = s->piece_len;	/* refused: on_writable comes */
		if (rm_conn_write(c, s->piece, len) < 0)
			return;			/* full, or the connection is closing */
		s->piece += len;
		s->piece_len -= len;
	}
}

/* On worker 0, every part back: turn the job's results into the reply. */
static void job_done(struct control_session *s)
{
	struct job *job = s->job;

	RM_ASSERT(job != NULL && s->stage == OUT_WAIT);
	rm_conn_timer(s->c, RM_CONTROL_IDLE_MS);
	if (job->refused != 0) {
		reply_small(s, "error: worker %u %s\n", job->refused_worker,
			    job->refused == -EAGAIN ? "is busy; try again" :
			    job->refused == -ESHUTDOWN ? "has stopped" : "does not exist");
		return;
	}
	switch (job->kind) {
	case JOB_QUEUE:
		s->stage = OUT_QUEUE_HEAD;
		pump(s);
		break;
	case JOB_FLUSH: {
		uint64_t n = 0;

		for (unsigned i = 0; i < job->part_count; i++)
			n += job->parts[i].flushed;
		reply_small(s, "flushed %llu\n", (unsigned long long)n);
		break;
	}
	default:
		reply_small(s, "%s\n", job->parts[0].answer);
		break;
	}
}

/*
 * Start a job: one part per worker (queue, flush) or for the worker that owns
 * the queue id.  A part whose post is refused counts as back at once and
 * makes the reply an error, after the parts already away have come back.
 */
static void start_job(struct control_session *s, enum job_kind kind, bool json, unsigned target,
		      uint64_t qid, const char *domain)
{
	const struct rm_daemon *d = rm_the_daemon;
	unsigned n = kind == JOB_QUEUE || kind == JOB_FLUSH ? d->worker_count : 1;
	struct job *job;

	if (parts_away + n > RM_CONTROL_PARTS_MAX) {
		reply_small(s, "error: busy: too many control requests at once; try again\n");
		return;
	}
	job = calloc(1, sizeof(*job) + n * sizeof(job->parts[0]));
	if (job == NULL) {
		reply_small(s, "error: out of memory\n");
		return;
	}
	job->kind = kind;
	job->json = json;
	job->now_unix_ms = unix_now_ms();
	job->qid = qid;
	if (domain != NULL)
		snprintf(job->domain, sizeof(job->domain), "%s", domain);
	job->session = s;
	job->part_count = n;
	atomic_init(&job->refs, 1);
	s->job = job;
	s->stage = OUT_WAIT;
	for (unsigned i = 0; i < n; i++) {
		struct part *p = &job->parts[i];
		struct rm_worker *w;
		int rc;

		p->job = job;
		p->worker = n == 1 ? target : i;
		w = p->worker < d->worker_count ? d->workers[p->worker] : NULL;
		/* Taken before the post: the part may be dropped on its worker. */
		atomic_fetch_add_explicit(&job->refs, 1, memory_order_relaxed);
		parts_away++;
		rc = w != NULL ? rm_worker_post(w, part_run, p) : -ENODEV;
		if (rc < 0) {
			atomic_fetch_sub_explicit(&job->refs, 1, memory_order_relaxed);
			parts_away--;
			job->parts_back++;
			if (job->refused == 0) {
				job->refused = rc;
				job->refused_worker = p->worker;
			}
		}
	}
	if (job->parts_back == n)
		job_done(s);
}

/* delete / hold / release ID: checked here, done by the worker that owns it. */
static void id_command(struct control_session *s, enum job_kind kind, const char *arg)
{
	const struct rm_daemon *d = rm_the_daemon;
	uint64_t qid;
	unsigned worker;

	if (arg == NULL || arg[0] == '\0') {
		reply_small(s, "error: a queue id is needed\n");
		return;
	}
	if (rm_queue_id_parse(arg, &qid) != 0) {
		reply_small(s, "error: bad queue id '%.64s'\n", arg);
		return;
	}
	worker = rm_queue_id_worker(qid);
	if (worker >= d->worker_count) {
		reply_small(s, "error: queue id %.64s belongs to worker %u; this daemon has %u workers\n", arg,
			    worker, d->worker_count);
		return;
	}
	start_job(s, kind, false, worker, qid, NULL);
}

/* flush DOMAIN: one word of a domain's length; no '@' (a domain, not an address). */
static bool domain_ok(const char *domain)
{
	size_t n = strlen(domain);

	if (n == 0 || n > RM_DOMAIN_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)domain[i] <= 0x20 || domain[i] == '@' || domain[i] == 0x7f)
			return false;
	return true;
}

/* One request line: answered at once (stats, ping, errors) or started as a job. */
static void command(struct control_session *s, const uint8_t *text, size_t len)
{
	char line[RM_CONTROL_LINE_MAX + 1], cmd[RM_CONTROL_LINE_MAX + 1];
	char *arg;

	memcpy(line, text, len);
	line[len] = '\0';
	memcpy(cmd, line, len + 1);
	arg = strchr(cmd, ' ');
	if (arg != NULL)
		*arg++ = '\0';
	if (strcmp(cmd, "stats") == 0 && (arg == NULL || strcmp(arg, "json") == 0)) {
		struct reply *r = malloc(sizeof(*r));

		if (r == NULL) {
			reply_small(s, "error: out of memory\n");
			return;
		}
		r->len = 0;
		do_stats(s->c, r, arg != NULL);
		if (r->len > sizeof(r->text) - 3)
			r->len = sizeof(r->text) - 3;	/* cut, but always ended */
		memcpy(r->text + r->len, ".\n", 3);
		r->len += 2;
		s->reply = r;
		reply_now(s, r->text, r->len);
	} else if (strcmp(cmd, "ping") == 0 && arg == NULL) {
		reply_small(s, "pong\n");
	} else if (strcmp(cmd, "queue") == 0 && (arg == NULL || strcmp(arg, "json") == 0)) {
		start_job(s, JOB_QUEUE, arg != NULL, 0, 0, NULL);
	} else if (strcmp(cmd, "flush") == 0) {
		if (arg != NULL && !domain_ok(arg))
			reply_small(s, "error: bad domain '%.64s'\n", arg);
		else
			start_job(s, JOB_FLUSH, false, 0, 0, arg);
	} else if (strcmp(cmd, "delete") == 0) {
		id_command(s, JOB_DELETE, arg);
	} else if (strcmp(cmd, "hold") == 0) {
		id_command(s, JOB_HOLD, arg);
	} else if (strcmp(cmd, "release") == 0) {
		id_command(s, JOB_RELEASE, arg);
	} else {
		reply_small(s, "error: unknown command '%.64s'\n", line);
	}
}

/* ---- the session ------------------------------------------------------------------------------ */

/* The session lives in its own allocation so that a job can detach from it. */
static void control_open(struct rm_conn *c)
{
	struct control_session *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		rm_conn_abort(c, -ENOMEM);
		return;
	}
	s->c = c;
	rm_lines_init(&s->lines, s->hold, RM_CONTROL_LINE_MAX);
	c->session = s;
	rm_conn_timer(c, RM_CONTROL_IDLE_MS);
}

/* One request at a time: while its reply is pending, what follows is not
 * consumed (the engine holds it and offers it again after rm_conn_resume).
 * Every round consumes at least one byte. */
static size_t control_data(struct rm_conn *c, const struct rm_rx *rx)
{
	struct control_session *s = c->session;
	size_t pos = 0;

	while (pos < rx->len && s->stage == OUT_IDLE) {
		struct rm_line line;

		pos += rm_lines_feed(&s->lines, rx->data + pos, rx->len - pos, &line);
		if (line.kind == RM_LINE_COMPLETE)
			command(s, line.text, line.text_len);
		else if (line.kind == RM_LINE_TOO_LONG)
			reply_now(s, "error: line too long\n.\n", 23);
	}
	rm_conn_timer(c, RM_CONTROL_IDLE_MS);
	return pos;
}

/* Output drained after a refused write: continue the reply being streamed. */
static void control_writable(struct rm_conn *c)
{
	struct control_session *s = c->session;

	if (s == NULL || s->stage == OUT_IDLE || s->stage == OUT_WAIT)
		return;
	rm_conn_timer(c, RM_CONTROL_IDLE_MS);
	pump(s);
}

/* The peer sent everything (`echo queue | socat - UNIX:...`): answer, then close. */
static void control_eof(struct rm_conn *c)
{
	struct control_session *s = c->session;

	if (s != NULL && s->stage != OUT_IDLE)
		s->eof = true;
	else
		rm_conn_close(c);
}

/* The connection is gone, maybe with a job away: detach, so that the parts
 * coming back find no session, and drop the session's reference. */
static void control_close(struct rm_conn *c, int err)
{
	struct control_session *s = c->session;

	if (s != NULL) {
		if (s->job != NULL) {
			s->job->session = NULL;	/* its parts may still be away */
			job_unref(s->job);
		}
		free(s->reply);
		free(s);
	}
	c->session = NULL;
}

const struct rm_session_ops rm_control_ops = {
	.protocol = "control",
	.on_open = control_open,
	.on_data = control_data,
	.on_writable = control_writable,
	.on_eof = control_eof,
	.on_close = control_close,
};
