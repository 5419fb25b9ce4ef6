/*
 * NAME
 *	spool_sink - the "spooltest" test protocol (see spool_sink.h)
 * DESCRIPTION
 *	A session is in one state at a time: reading commands, streaming a
 *	message's content, discarding the content of a refused message, or
 *	waiting (for the spool to have room, or for the commit to be durable).
 *	While it waits, on_data consumes nothing, so the engine holds input and
 *	the client is paced by the spool (back-pressure end to end).  The spool's
 *	callbacks come from the loop; one that finds the connection gone frees
 *	the session, which on_close left to it.
 */
#include "tests/spool_sink.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/spool.h"
#include "proto/linesplit.h"

#define SINK_LINE_MAX 512

enum sink_state {
	SINK_COMMAND = 0,
	SINK_BODY,		/* content of an accepted MSG */
	SINK_DISCARD,		/* content of a refused MSG */
	SINK_WAIT_BEGIN,	/* the spool said -EAGAIN to begin */
	SINK_WAIT_COMMIT,	/* END written (or waiting for room to write it); reply pending */
};

struct sink_session {
	struct rm_conn *c;		/* NULL once the connection is gone */
	struct rm_lines lines;
	uint8_t hold[SINK_LINE_MAX + 1];
	enum sink_state state;
	bool spool_owes_callback;	/* a spool callback will come with this session */
	bool commit_accepted;		/* rm_spool_commit took it: commit_done will come */
	bool eof;			/* the client has sent all it will: close after the reply */
	struct rm_spool_msg *msg;
	uint64_t left;			/* content bytes still to come */
	uint64_t size;
	int refused;			/* the error to answer after a discarded body */
	char rcpt[256], sender[256];
	XXH3_state_t hash;
};

static void reply(struct sink_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(struct sink_session *s, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0 && rm_conn_write(s->c, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1) < 0)
		rm_conn_abort(s->c, -ENOBUFS);	/* a test client that never reads */
}

static void sink_open(struct rm_conn *c)
{
	struct sink_session *s = calloc(1, sizeof(*s));
	static const char greeting[] = "220 spooltest ready\r\n";

	if (s == NULL) {
		rm_conn_abort(c, -ENOMEM);
		return;
	}
	s->c = c;
	rm_lines_init(&s->lines, s->hold, SINK_LINE_MAX);
	c->session = s;
	rm_conn_send_static(c, greeting, sizeof(greeting) - 1);
	rm_conn_timer(c, rm_worker_config(c->worker)->limits.idle_timeout_ms);
}

/* The spool called back for a session whose connection has gone: finish it. */
static bool orphaned(struct sink_session *s)
{
	s->spool_owes_callback = false;
	if (s->c != NULL)
		return false;
	free(s);
	return true;
}

static void start_message(struct sink_session *s);

static void begin_room(void *arg)
{
	struct sink_session *s = arg;

	if (orphaned(s))
		return;
	start_message(s);
	if (s->state != SINK_WAIT_BEGIN)
		rm_conn_resume(s->c);
}

static void start_message(struct sink_session *s)
{
	struct rm_spool *sp = rm_spool_of(s->c->worker);
	struct rm_spool_envelope env;
	struct rm_spool_rcpt rcpt;
	char peer[64];
	int rc;

	memset(&env, 0, sizeof(env));
	memset(&rcpt, 0, sizeof(rcpt));
	env.received_unix_ms = (uint64_t)time(NULL) * 1000u;
	env.reverse_path = (struct rm_spool_str){ s->sender, strlen(s->sender) };
	rm_conn_peer_str(s->c, peer, sizeof(peer));
	env.client_addr = (struct rm_spool_str){ peer, strlen(peer) };
	rcpt.addr = (struct rm_spool_str){ s->rcpt, strlen(s->rcpt) };
	XXH3_64bits_reset(&s->hash);
	rc = sp != NULL ? rm_spool_begin(sp, &env, &rcpt, 1, s->size, &s->msg) : -ENODEV;
	if (rc == -EAGAIN) {
		s->state = SINK_WAIT_BEGIN;
		s->spool_owes_callback = true;
		rm_spool_wait_begin(sp, begin_room, s);
		return;
	}
	s->left = s->size;
	s->refused = rc;
	s->state = rc == 0 ? SINK_BODY : SINK_DISCARD;
}

static void commit_done(void *arg, uint64_t qid, int err)
{
	struct sink_session *s = arg;
	char id[RM_QUEUE_ID_TEXT_BYTES];

	s->msg = NULL;
	s->commit_accepted = false;
	if (orphaned(s))
		return;
	rm_queue_id_format(qid, id);
	if (err == 0) {
		rm_info(s->c->id, "%s: queued, from=<%s> to=<%s> size=%" PRIu64, id, s->sender, s->rcpt, s->size);
		reply(s, "250 %s %016" PRIx64 "\r\n", id, (uint64_t)XXH3_64bits_digest(&s->hash));
	} else {
		rm_warn(s->c->id, "%s: not queued: %s", id, strerror(-err));
		reply(s, "452 4.3.1 %s\r\n", strerror(-err));
	}
	s->state = SINK_COMMAND;
	if (s->eof)
		rm_conn_close(s->c);
	else
		rm_conn_resume(s->c);
}

static void finish_message(struct sink_session *s);

static void commit_room(void *arg)
{
	struct sink_session *s = arg;

	if (orphaned(s))
		return;
	finish_message(s);
}

static void finish_message(struct sink_session *s)
{
	int rc = rm_spool_commit(s->msg, commit_done, s);

	s->state = SINK_WAIT_COMMIT;
	if (rc == 0) {
		s->spool_owes_callback = true;
		s->commit_accepted = true;
	} else if (rc == -EAGAIN) {
		s->spool_owes_callback = true;
		rm_spool_wait_room(s->msg, commit_room, s);
	} else {
		s->msg = NULL;
		reply(s, "452 4.3.1 %s\r\n", strerror(-rc));
		s->state = SINK_COMMAND;
		rm_conn_resume(s->c);
	}
}

static void append_room(void *arg)
{
	struct sink_session *s = arg;

	if (orphaned(s))
		return;
	rm_conn_resume(s->c);
}

static void command(struct sink_session *s, const struct rm_line *line)
{
	char text[SINK_LINE_MAX + 1];
	unsigned long long size;
	char id[32];
	int fields;

	if (line->kind == RM_LINE_TOO_LONG) {
		reply(s, "500 line too long\r\n");
		return;
	}
	memcpy(text, line->text, line->text_len);
	text[line->text_len] = '\0';
	if (strcmp(text, "QUIT") == 0) {
		reply(s, "221 bye\r\n");
		rm_conn_close(s->c);
		return;
	}
	s->sender[0] = '\0';
	fields = sscanf(text, "MSG %llu %255s %255s", &size, s->rcpt, s->sender);
	if (fields >= 2 && size > 0) {
		if (fields == 2)
			snprintf(s->sender, sizeof(s->sender), "%s", "sender@spooltest.invalid");
		s->size = size;
		start_message(s);
		return;
	}
	if (sscanf(text, "DELIVER %31s", id) == 1) {
		struct rm_spool *sp = rm_spool_of(s->c->worker);
		uint64_t qid;
		struct rm_queue_entry *e;

		if (rm_queue_id_parse(id, &qid) != 0 || (e = rm_queue_find(sp, qid)) == NULL) {
			reply(s, "550 no such message\r\n");
			return;
		}
		if (e->in_delivery) {
			reply(s, "452 4.3.0 in delivery\r\n");	/* the delivery's marks are its own */
			return;
		}
		int rc = rm_spool_mark_delivered(sp, e, NULL, 0);

		if (rc == 0)
			reply(s, "250 ok\r\n");
		else
			reply(s, "452 4.3.1 %s\r\n", strerror(-rc));
		return;
	}
	reply(s, "500 unknown command\r\n");
}

static size_t sink_data(struct rm_conn *c, const struct rm_rx *rx)
{
	struct sink_session *s = c->session;
	size_t used = 0;

	rm_conn_timer(c, rm_worker_config(c->worker)->limits.idle_timeout_ms);
	/* Each round consumes bytes or changes state; the bound is generous. */
	for (size_t guard = 0; used < rx->len && guard < 2 * rx->len + 8; guard++) {
		const uint8_t *p = rx->data + used;
		size_t len = rx->len - used;

		if (c->state != RM_CONN_OPEN)
			return rx->len;
		switch (s->state) {
		case SINK_COMMAND: {
			struct rm_line line;

			if (rm_conn_output_room(c) < 256)
				return used;	/* replies wait for output room: back-pressure */
			used += rm_lines_feed(&s->lines, p, len, &line);
			if (line.kind != RM_LINE_NONE)
				command(s, &line);
			break;
		}
		case SINK_BODY: {
			size_t n = len < s->left ? len : (size_t)s->left;
			ssize_t r = rm_spool_append(s->msg, p, n);

			if (r < 0) {
				rm_spool_abort(s->msg);
				s->msg = NULL;
				s->refused = (int)r;
				s->state = SINK_DISCARD;
				break;
			}
			XXH3_64bits_update(&s->hash, p, (size_t)r);
			used += (size_t)r;
			s->left -= (uint64_t)r;
			if ((size_t)r < n) {
				s->spool_owes_callback = true;
				rm_spool_wait_room(s->msg, append_room, s);
				return used;
			}
			if (s->left == 0) {
				finish_message(s);
				if (s->state == SINK_WAIT_COMMIT)
					return used;
			}
			break;
		}
		case SINK_DISCARD: {
			size_t n = len < s->left ? len : (size_t)s->left;

			used += n;
			s->left -= n;
			if (s->left == 0) {
				reply(s, "452 4.3.1 %s\r\n", strerror(-s->refused));
				s->state = SINK_COMMAND;
			}
			break;
		}
		case SINK_WAIT_BEGIN:
		case SINK_WAIT_COMMIT:
			return used;
		}
	}
	return used;
}

static void sink_timeout(struct rm_conn *c)
{
	struct sink_session *s = c->session;

	if (s->state == SINK_WAIT_COMMIT || s->state == SINK_WAIT_BEGIN) {
		/* The spool is slow, not the client: wait on. */
		rm_conn_timer(c, rm_worker_config(c->worker)->limits.idle_timeout_ms);
		return;
	}
	reply(s, "421 idle timeout\r\n");
	rm_conn_close(c);
}

/* A client may half-close after its last message (printf ... | nc): answer it, then close. */
static void sink_eof(struct rm_conn *c)
{
	struct sink_session *s = c->session;

	s->eof = true;
	if (s->state != SINK_WAIT_COMMIT && s->state != SINK_WAIT_BEGIN)
		rm_conn_close(c);
}

static void sink_close(struct rm_conn *c, int err)
{
	struct sink_session *s = c->session;

	c->session = NULL;
	if (s == NULL)
		return;
	s->c = NULL;
	/* A message being received is abandoned (never acknowledged); one whose
	 * commit is under way finishes, and its callback frees the session. */
	if (s->msg != NULL && !s->commit_accepted) {
		rm_spool_abort(s->msg);	/* also takes it off the room wait list */
		s->msg = NULL;
		s->spool_owes_callback = false;
	}
	if (!s->spool_owes_callback)
		free(s);
}

const struct rm_session_ops rm_spool_sink_ops = {
	.protocol = "spooltest",
	.on_open = sink_open,
	.on_data = sink_data,
	.on_timeout = sink_timeout,
	.on_eof = sink_eof,
	.on_close = sink_close,
};
