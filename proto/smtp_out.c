/*
 * NAME
 *	smtp_out - one outbound SMTP connection (see smtp_out.h)
 * DESCRIPTION
 *	A step is one command (or one pipelined group) and the replies it
 *	waits for.  Replies are parsed as they come (proto/smtp_client), each
 *	complete one handed to the step's handler in order.  While content is
 *	sent, on_writable feeds the next buffer: a read from the spool, dot-
 *	stuffed into the output, as long as output room lasts.
 */
#include "proto/smtp_out.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proto/smtp_client.h"
#include "tls/tls.h"

/* Content read from the spool per step; its stuffed form fits twice that. */
#define OUT_READ_BYTES 16384
#define OUT_STUFF_BYTES (2 * OUT_READ_BYTES + RM_SMTP_DOTSTUFF_END_BYTES_MAX)
/* Output queued past which content waits for on_writable. */
#define OUT_ROOM_MIN (OUT_STUFF_BYTES + 1024)

enum out_state {
	OS_CONNECTING = 0,
	OS_GREETING,
	OS_EHLO,
	OS_HELO,
	OS_STARTTLS,
	OS_TLS,			/* handshake */
	OS_EHLO_TLS,
	OS_AUTH,
	OS_IDLE,
	OS_MAIL,		/* waiting for MAIL's reply (then the RCPTs') */
	OS_RCPT,
	OS_DATA,		/* waiting for 354 */
	OS_CONTENT,		/* sending content */
	OS_END,			/* waiting for the reply to the end of data */
	OS_RSET,
	OS_PROBE,		/* RSET on a connection taken from idle, before MAIL */
	OS_QUIT,
	OS_CLOSED,
};

struct rm_smtp_out {
	struct rm_conn *c;
	struct rm_worker *w;
	const struct rm_smtp_out_ops *ops;
	void *arg;
	enum out_state state;
	bool ready_seen;		/* ops->ready was called once */
	bool closed_told;
	bool tls_done;
	struct rm_smtp_replyp rp;
	struct rm_smtp_ehlo ehlo;
	char host[256];
	char helo[256];
	char peer[128];			/* "host[ip]" for texts */
	char why[RM_SMTP_OUT_TEXT_MAX];	/* what ended the connection */
	char status[12];		/* its RFC 3463 code, "" until known */
	bool tls_failed;		/* the handshake failed under "may" */
	bool handoff;			/* inside job_done: the next job follows at once */
	bool probing;			/* the job's RSET probe has not been answered: nothing of it sent */
	uint32_t transactions;		/* jobs finished on this connection */
	uint8_t mail_cmd[RM_SMTP_CLIENT_CMD_BYTES_MAX];	/* MAIL, held behind an unpipelined probe */
	ssize_t mail_cmd_len;
	enum rm_tls_policy tls;
	char tls_ca[256];
	char auth_user[256];
	char auth_pass[1024];
	uint32_t timeout_ms, data_timeout_ms;
	/* the transaction */
	struct rm_smtp_out_job *job;
	bool pipelining;
	bool bdat;
	bool skip_rest;			/* every result is set: the pipelined replies left are only read */
	uint32_t rcpt_replied;
	uint32_t rcpt_accepted;
	uint64_t offset;		/* content sent so far */
	struct rm_smtp_dotstuff ds;
	uint8_t *buf;			/* OUT_READ_BYTES + OUT_STUFF_BYTES */
};

static const struct rm_session_ops out_ops;

static void out_free(struct rm_smtp_out *o)
{
	explicit_bzero(o->auth_pass, sizeof(o->auth_pass));
	free(o->buf);
	free(o);
}

/* Put "host[ip] said: CODE TEXT" (one line: the parser replaced controls) into dst. */
static void said(const struct rm_smtp_out *o, const struct rm_smtp_server_reply *r, char *dst, size_t size)
{
	int head = snprintf(dst, size, "%s said: %u%s%s ", o->peer, r->code, r->enhanced[0] ? " " : "", r->enhanced);
	size_t at = head > 0 && (size_t)head < size ? (size_t)head : size - 1;

	/* The text after it, lines joined by spaces, as much as fits. */
	for (size_t i = 0; i < r->text_len && at + 1 < size; i++)
		dst[at++] = r->text[i] == '\n' ? ' ' : r->text[i];
	dst[at] = '\0';
}

static void fail_conn(struct rm_smtp_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The RFC 3463 code of the end, set once, before fail_conn. */
static void end_status(struct rm_smtp_out *o, const char *status)
{
	if (o->status[0] == '\0')
		snprintf(o->status, sizeof(o->status), "%s", status);
}

/*
 * A reply that ends the connection before a transaction (greeting, EHLO,
 * STARTTLS, AUTH): the next host or a deferral, never a bounce, so its
 * code is of class 4 whatever the server's class was.
 */
static void end_status_reply(struct rm_smtp_out *o, const struct rm_smtp_server_reply *r, const char *fallback)
{
	char st[12];

	if (r->enhanced[0] != '\0') {
		snprintf(st, sizeof(st), "4%s", r->enhanced + 1);
		end_status(o, st);
	}
	end_status(o, fallback);
}

/* The connection ends with a reason; on_close reports it. */
static void fail_conn(struct rm_smtp_out *o, const char *fmt, ...)
{
	va_list ap;

	if (o->why[0] == '\0') {
		va_start(ap, fmt);
		vsnprintf(o->why, sizeof(o->why), fmt, ap);
		va_end(ap);
	}
	o->state = OS_CLOSED;
	rm_conn_close(o->c);
}

static void send_cmd(struct rm_smtp_out *o, const uint8_t *buf, ssize_t n)
{
	if (n <= 0) {
		fail_conn(o, "cannot write a command (bad argument from the queue)");
		return;
	}
	if (rm_conn_write(o->c, buf, (size_t)n) < 0)
		fail_conn(o, "output full");
}

static void expect(struct rm_smtp_out *o, enum out_state st, uint32_t timeout_ms)
{
	o->state = st;
	rm_conn_timer(o->c, timeout_ms);
}

static void become_ready(struct rm_smtp_out *o)
{
	o->state = OS_IDLE;
	/* Idle time is the caller's to bound (it quits idle connections). */
	rm_conn_timer(o->c, 0);
	o->ready_seen = true;
	o->ops->ready(o, o->arg);
}

static void send_ehlo(struct rm_smtp_out *o, enum out_state st)
{
	uint8_t buf[RM_SMTP_CLIENT_CMD_BYTES_MAX];

	send_cmd(o, buf, rm_smtp_write_ehlo(buf, sizeof(buf), o->helo));
	expect(o, st, o->timeout_ms);
}

/*
 * The handshake after STARTTLS failed: refused by either side, or the
 * connection went during it (a server with no shared cipher or version
 * alerts and closes): RFC 3463 X.7.5, cryptographic failure, not a lost
 * connection.  Under "may", delivery tries again without TLS.
 */
static void tls_failure(struct rm_smtp_out *o, const char *reason)
{
	o->tls_failed = o->tls == RM_TLS_POLICY_MAY;
	end_status(o, "4.7.5");
	if (o->why[0] == '\0')
		snprintf(o->why, sizeof(o->why), "TLS with %s failed: %s", o->peer, reason);
}

static void tls_done(struct rm_conn *c, int err, void *arg)
{
	struct rm_smtp_out *o = arg;

	if (err != 0) {
		tls_failure(o, err == -EKEYREJECTED ? "certificate not verified" : strerror(-err));
		fail_conn(o, "%s", o->why);
		return;
	}
	o->tls_done = true;
	rm_smtp_replyp_init(&o->rp, RM_SMTP_CLIENT_LINE_BYTES_DEFAULT, RM_SMTP_CLIENT_LINES_DEFAULT);
	send_ehlo(o, OS_EHLO_TLS);
	(void)c;
}

/* After EHLO (or HELO): TLS by policy, then AUTH, then ready. */
static void after_hello(struct rm_smtp_out *o)
{
	uint8_t buf[RM_SMTP_CLIENT_AUTH_BYTES_MAX];

	if (!o->tls_done && o->tls != RM_TLS_POLICY_NONE) {
		if (o->ehlo.ext & RM_SMTP_EHLO_STARTTLS) {
			send_cmd(o, buf, rm_smtp_write_starttls(buf, sizeof(buf)));
			expect(o, OS_STARTTLS, o->timeout_ms);
			return;
		}
		if (o->tls != RM_TLS_POLICY_MAY) {
			end_status(o, "4.7.4");	/* security features not supported */
			fail_conn(o, "TLS is required for %s, which does not offer STARTTLS", o->peer);
			return;
		}
	}
	if (o->auth_user[0] != '\0') {
		if (!o->tls_done || !(o->ehlo.auth_mechs & RM_SMTP_AUTH_MECH_PLAIN)) {
			end_status(o, "4.7.4");
			fail_conn(o, "%s: AUTH PLAIN %s", o->peer, o->tls_done ? "not offered" : "needs TLS");
			return;
		}
		send_cmd(o, buf, rm_smtp_write_auth_plain(buf, sizeof(buf), NULL, o->auth_user, o->auth_pass));
		expect(o, OS_AUTH, o->timeout_ms);
		return;
	}
	become_ready(o);
}

static void set_result(struct rm_smtp_out *o, uint32_t i, const struct rm_smtp_server_reply *r)
{
	struct rm_smtp_out_result *res = &o->job->res[i];

	res->code = r->code;
	snprintf(res->enhanced, sizeof(res->enhanced), "%s", r->enhanced);
	said(o, r, res->text, sizeof(res->text));
}

static void set_result_text(struct rm_smtp_out *o, uint32_t i, uint16_t code, const char *enhanced, const char *text)
{
	struct rm_smtp_out_result *res = &o->job->res[i];

	res->code = code;
	snprintf(res->enhanced, sizeof(res->enhanced), "%s", enhanced);
	snprintf(res->text, sizeof(res->text), "%s", text);
}

/* The job is done (results set): report it, and RSET when it did not end cleanly. */
static void job_finished(struct rm_smtp_out *o, bool clean)
{
	struct rm_smtp_out_job *job = o->job;
	uint8_t buf[64];

	o->job = NULL;
	o->transactions++;
	if (!clean) {
		send_cmd(o, buf, rm_smtp_write_rset(buf, sizeof(buf)));
		expect(o, OS_RSET, o->timeout_ms);
	} else {
		o->state = OS_IDLE;
		rm_conn_timer(o->c, 0);
	}
	/* A job started from these callbacks follows at once: the connection was never idle. */
	o->handoff = true;
	o->ops->job_done(o, job, o->arg);
	if (clean && o->state == OS_IDLE && o->job == NULL)
		o->ops->ready(o, o->arg);
	o->handoff = false;
}

static void send_rcpt(struct rm_smtp_out *o, uint32_t i)
{
	const struct rm_queue_rcpt *r = &o->job->e->rcpts[o->job->idx[i]];
	struct rm_smtp_rcpt_args a = {
		.forward_path = r->addr, .forward_path_len = strlen(r->addr),
		.notify = r->notify, .orcpt = r->orcpt, .orcpt_len = strlen(r->orcpt),
		.smtputf8 = o->job->e->smtputf8 && (o->ehlo.ext & RM_SMTP_EHLO_SMTPUTF8),
	};
	uint8_t buf[RM_SMTP_CLIENT_CMD_BYTES_MAX];

	send_cmd(o, buf, rm_smtp_write_rcpt(buf, sizeof(buf), &a, &o->ehlo));
}

static void send_data_cmd(struct rm_smtp_out *o)
{
	uint8_t buf[64];

	if (o->bdat)
		return;	/* BDAT goes with the content, once a recipient is accepted */
	send_cmd(o, buf, rm_smtp_write_data(buf, sizeof(buf)));
}

static void feed_content(struct rm_smtp_out *o);

static void start_content(struct rm_smtp_out *o)
{
	o->offset = 0;
	rm_smtp_dotstuff_init(&o->ds);
	o->state = OS_CONTENT;
	rm_conn_timer(o->c, o->data_timeout_ms);
	if (o->bdat) {
		uint8_t buf[64];

		send_cmd(o, buf, rm_smtp_write_bdat(buf, sizeof(buf), o->job->e->size_bytes, true));
	}
	feed_content(o);
}

/* Content into the output while there is room; then the end of data. */
static void feed_content(struct rm_smtp_out *o)
{
	struct rm_queue_entry *e = o->job->e;
	uint8_t *in = o->buf, *out = o->buf + OUT_READ_BYTES;

	/* Each round sends up to OUT_READ_BYTES of content: bounded by the message. */
	while (o->state == OS_CONTENT && rm_conn_output_room(o->c) >= OUT_ROOM_MIN) {
		size_t want = e->size_bytes - o->offset < OUT_READ_BYTES ? (size_t)(e->size_bytes - o->offset)
									  : OUT_READ_BYTES;
		ssize_t got = want > 0 ? rm_spool_read(o->job->sp, e, o->offset, in, want) : 0;
		size_t used = 0;

		if (got < 0 || (want > 0 && got == 0)) {
			/* Nothing was lost: the message stays queued; this attempt ends. */
			for (uint32_t i = 0; i < o->job->count; i++)
				if (o->job->res[i].code == 0 || o->job->res[i].code / 100 == 2)
					set_result_text(o, i, 451, "4.3.0", "cannot read the queued message");
			fail_conn(o, "spool read of %" PRIx64 " failed: %s", e->qid,
				  got < 0 ? strerror((int)-got) : "short");
			return;
		}
		o->offset += (uint64_t)got;
		if (o->bdat) {
			if (got > 0 && rm_conn_write(o->c, in, (size_t)got) < 0) {
				fail_conn(o, "output full");
				return;
			}
		} else {
			while (used < (size_t)got) {
				size_t n = 0;

				used += rm_smtp_dotstuff_feed(&o->ds, in + used, (size_t)got - used, out,
							      OUT_STUFF_BYTES, &n);
				if (n > 0 && rm_conn_write(o->c, out, n) < 0) {
					fail_conn(o, "output full");
					return;
				}
			}
		}
		if (o->offset >= e->size_bytes) {
			if (!o->bdat) {
				ssize_t n = rm_smtp_dotstuff_end(&o->ds, out, OUT_STUFF_BYTES);

				send_cmd(o, out, n);
			}
			expect(o, OS_END, o->data_timeout_ms);
			return;
		}
	}
	/* Stopped for room, not refused by a write: nothing else would call on_writable. */
	if (o->state == OS_CONTENT)
		rm_conn_want_writable(o->c);
}

/* One complete reply, in the state that waited for it. */
static void on_reply(struct rm_smtp_out *o, const struct rm_smtp_server_reply *r)
{
	unsigned cls = r->code / 100;
	uint8_t buf[RM_SMTP_CLIENT_CMD_BYTES_MAX];
	char text[RM_SMTP_OUT_TEXT_MAX];

	switch (o->state) {
	case OS_GREETING:
		if (cls != 2) {
			end_status_reply(o, r, "4.4.0");
			said(o, r, text, sizeof(text));
			fail_conn(o, "%s", text);
			return;
		}
		send_ehlo(o, OS_EHLO);
		return;
	case OS_EHLO:
	case OS_EHLO_TLS:
		if (cls == 2) {
			rm_smtp_ehlo_parse(r, &o->ehlo);
			after_hello(o);
			return;
		}
		if (cls == 5 && o->state == OS_EHLO) {
			/* RFC 5321 3.2: an old server; HELO, without extensions. */
			memset(&o->ehlo, 0, sizeof(o->ehlo));
			send_cmd(o, buf, rm_smtp_write_helo(buf, sizeof(buf), o->helo));
			expect(o, OS_HELO, o->timeout_ms);
			return;
		}
		end_status_reply(o, r, "4.4.0");
		said(o, r, text, sizeof(text));
		fail_conn(o, "%s", text);
		return;
	case OS_HELO:
		if (cls != 2) {
			end_status_reply(o, r, "4.4.0");
			said(o, r, text, sizeof(text));
			fail_conn(o, "%s", text);
			return;
		}
		after_hello(o);
		return;
	case OS_STARTTLS: {
		struct rm_tls_client tc = { .policy = o->tls == RM_TLS_POLICY_MAY ? RM_TLS_POLICY_ENCRYPT : o->tls,
					    .ca_file = o->tls_ca, .name = o->host, .done = tls_done, .arg = o };
		int rc;

		if (r->code != 220) {
			if (o->tls == RM_TLS_POLICY_MAY) {
				/* Offered, then refused: go on in plaintext, as "may" allows. */
				o->tls_done = false;
				o->tls = RM_TLS_POLICY_NONE;
				after_hello(o);
				return;
			}
			end_status_reply(o, r, "4.7.4");
			said(o, r, text, sizeof(text));
			fail_conn(o, "STARTTLS refused: %s", text);
			return;
		}
		o->state = OS_TLS;
		rc = rm_tls_connect(o->c, &tc);
		if (rc != 0) {
			end_status(o, "4.7.5");
			fail_conn(o, "TLS with %s cannot start: %s", o->peer, strerror(-rc));
		}
		return;
	}
	case OS_AUTH:
		explicit_bzero(o->auth_pass, sizeof(o->auth_pass));
		if (r->code != 235) {
			end_status_reply(o, r, "4.7.0");
			said(o, r, text, sizeof(text));
			fail_conn(o, "AUTH failed: %s", text);
			return;
		}
		become_ready(o);
		return;
	case OS_MAIL:
		if (cls != 2) {
			for (uint32_t i = 0; i < o->job->count; i++)
				set_result(o, i, r);
			if (!o->pipelining) {
				job_finished(o, false);
				return;
			}
			/* The RCPT (and DATA) replies still come, refusals: read them. */
			o->skip_rest = true;
		} else if (!o->pipelining) {
			send_rcpt(o, 0);
		}
		o->state = OS_RCPT;
		o->rcpt_replied = 0;
		return;
	case OS_RCPT: {
		uint32_t i = o->rcpt_replied++;

		if (!o->skip_rest) {
			if (cls == 2)
				o->rcpt_accepted++;
			else
				set_result(o, i, r);
		}
		if (o->rcpt_replied < o->job->count) {
			if (!o->pipelining)
				send_rcpt(o, o->rcpt_replied);
			return;
		}
		if (o->rcpt_accepted == 0)
			o->skip_rest = true;
		if (o->skip_rest) {
			/* A pipelined DATA still gets its (refusing) reply; BDAT was never sent. */
			if (o->pipelining && !o->bdat) {
				o->state = OS_DATA;
				return;
			}
			job_finished(o, false);
			return;
		}
		if (o->bdat) {
			start_content(o);
			return;
		}
		if (!o->pipelining)
			send_data_cmd(o);
		expect(o, OS_DATA, o->timeout_ms);
		return;
	}
	case OS_DATA:
		if (o->skip_rest && r->code == 354) {
			/* A server that says 354 with no recipient: end an empty message. */
			send_cmd(o, (const uint8_t *)".\r\n", 3);
			expect(o, OS_END, o->data_timeout_ms);
			return;
		}
		if (o->skip_rest || r->code != 354) {
			for (uint32_t i = 0; i < o->job->count; i++)
				if (o->job->res[i].code == 0)
					set_result(o, i, r);
			job_finished(o, false);
			return;
		}
		start_content(o);
		return;
	case OS_END:
		for (uint32_t i = 0; i < o->job->count; i++)
			if (o->job->res[i].code == 0)
				set_result(o, i, r);
		job_finished(o, cls == 2 && !o->skip_rest);
		return;
	case OS_PROBE:
		if (cls != 2) {
			/* The job stays unsent (probing): the caller gives it another connection. */
			end_status_reply(o, r, "4.4.2");
			said(o, r, text, sizeof(text));
			fail_conn(o, "RSET refused: %s", text);
			return;
		}
		o->probing = false;
		if (!o->pipelining)
			send_cmd(o, o->mail_cmd, o->mail_cmd_len);
		expect(o, OS_MAIL, o->timeout_ms);
		return;
	case OS_RSET:
		if (cls != 2) {
			said(o, r, text, sizeof(text));
			fail_conn(o, "RSET refused: %s", text);
			return;
		}
		o->state = OS_IDLE;
		rm_conn_timer(o->c, 0);
		o->ops->ready(o, o->arg);
		return;
	case OS_QUIT:
		o->state = OS_CLOSED;
		rm_conn_close(o->c);
		return;
	case OS_IDLE:
		/* Unasked: a 421 before closing, most often. */
		said(o, r, text, sizeof(text));
		fail_conn(o, "%s", text);
		return;
	default:
		said(o, r, text, sizeof(text));
		fail_conn(o, "unexpected reply: %s", text);
		return;
	}
}

int rm_smtp_out_start(struct rm_smtp_out *o, struct rm_smtp_out_job *job)
{
	struct rm_queue_entry *e = job->e;
	struct rm_smtp_mail_args m = {
		.reverse_path = e->sender, .reverse_path_len = strlen(e->sender),
		.size_bytes = e->size_bytes,
		.body = e->body_type == RM_SPOOL_BODY_8BITMIME ? RM_SMTP_BODY_8BITMIME
		      : e->body_type == RM_SPOOL_BODY_7BIT ? RM_SMTP_BODY_7BIT : RM_SMTP_BODY_NONE,
		.smtputf8 = e->smtputf8,
		.ret = e->ret == RM_SPOOL_RET_FULL ? RM_SMTP_RET_FULL : e->ret == RM_SPOOL_RET_HDRS ? RM_SMTP_RET_HDRS
		     : RM_SMTP_RET_NONE,
		.envid = e->envid, .envid_len = strlen(e->envid),
	};
	uint8_t buf[RM_SMTP_CLIENT_CMD_BYTES_MAX];
	enum rm_smtp_mail_check chk;

	if (o->state != OS_IDLE || o->job != NULL)
		return -EBUSY;
	o->job = job;
	for (uint32_t i = 0; i < job->count; i++)
		memset(&job->res[i], 0, sizeof(job->res[i]));
	chk = rm_smtp_mail_check(&m, &o->ehlo);
	if (chk == RM_SMTP_MAIL_E_SIZE || chk == RM_SMTP_MAIL_E_SMTPUTF8 || chk == RM_SMTP_MAIL_E_BINARYMIME) {
		char text[RM_SMTP_OUT_TEXT_MAX];

		if (chk == RM_SMTP_MAIL_E_SIZE)
			snprintf(text, sizeof(text), "message size %" PRIu64 " exceeds the limit %" PRIu64 " of %s",
				 e->size_bytes, o->ehlo.size_bytes_max, o->peer);
		else
			snprintf(text, sizeof(text), "%s does not support %s, which this message needs", o->peer,
				 chk == RM_SMTP_MAIL_E_SMTPUTF8 ? "SMTPUTF8" : "BINARYMIME");
		for (uint32_t i = 0; i < job->count; i++)
			set_result_text(o, i, chk == RM_SMTP_MAIL_E_SIZE ? 552 : 553,
					chk == RM_SMTP_MAIL_E_SIZE ? "5.3.4" : "5.6.7", text);
		o->job = NULL;
		o->ops->job_done(o, job, o->arg);
		if (o->state == OS_IDLE && o->job == NULL)
			o->ops->ready(o, o->arg);
		return 0;
	}
	if (chk == RM_SMTP_MAIL_E_8BITMIME)
		m.body = RM_SMTP_BODY_NONE;	/* RFC 6152 leaves it to us; sent as Postfix does */
	o->pipelining = (o->ehlo.ext & RM_SMTP_EHLO_PIPELINING) != 0;
	o->bdat = (o->ehlo.ext & RM_SMTP_EHLO_CHUNKING) != 0;
	o->rcpt_replied = 0;
	o->rcpt_accepted = 0;
	o->skip_rest = false;
	o->offset = 0;
	/*
	 * A connection that sat idle may have been dropped by the server
	 * meanwhile: RSET first, as Postfix checks a cached session, so that a
	 * dead one costs a new connection, not a deferral (rm_smtp_out_job_unsent).
	 * Pipelined, it goes in the same write as MAIL.
	 */
	o->probing = !o->handoff && o->transactions > 0;
	o->mail_cmd_len = rm_smtp_write_mail(o->mail_cmd, sizeof(o->mail_cmd), &m, &o->ehlo);
	if (o->probing)
		send_cmd(o, buf, rm_smtp_write_rset(buf, sizeof(buf)));
	if (!o->probing || o->pipelining)
		send_cmd(o, o->mail_cmd, o->mail_cmd_len);
	if (o->pipelining) {
		for (uint32_t i = 0; i < job->count; i++)
			send_rcpt(o, i);
		send_data_cmd(o);
	}
	expect(o, o->probing ? OS_PROBE : OS_MAIL, o->timeout_ms);
	return 0;
}

void rm_smtp_out_quit(struct rm_smtp_out *o)
{
	uint8_t buf[64];

	if (o->state == OS_IDLE) {
		send_cmd(o, buf, rm_smtp_write_quit(buf, sizeof(buf)));
		expect(o, OS_QUIT, o->timeout_ms);
		return;
	}
	if (o->state != OS_CLOSED)
		fail_conn(o, "closed by us");
}

const char *rm_smtp_out_tls(const struct rm_smtp_out *o)
{
	return o->c != NULL && rm_tls_active(o->c) ? rm_tls_version(o->c) : NULL;
}

const char *rm_smtp_out_peer(const struct rm_smtp_out *o)
{
	return o->peer;
}

const char *rm_smtp_out_status(const struct rm_smtp_out *o)
{
	return o->status;
}

bool rm_smtp_out_tls_failed(const struct rm_smtp_out *o)
{
	return o->tls_failed;
}

bool rm_smtp_out_job_unsent(const struct rm_smtp_out *o)
{
	return o->probing;
}

/* ---------------------------------------------------------------- engine */

static void out_connect(struct rm_conn *c, int err)
{
	struct rm_smtp_out *o = c->session;

	if (err != 0) {
		end_status(o, "4.4.1");	/* RFC 3463: no answer from host */
		snprintf(o->why, sizeof(o->why), "connect to %s: %s", o->peer, strerror(-err));
		return;	/* on_close follows */
	}
	expect(o, OS_GREETING, o->timeout_ms);
}

static size_t out_data(struct rm_conn *c, const struct rm_rx *rx)
{
	struct rm_smtp_out *o = c->session;
	size_t used = 0;

	/* Each round takes bytes; a reply is at most lines_max lines. */
	while (used < rx->len && o->state != OS_CLOSED && c->state == RM_CONN_OPEN) {
		struct rm_smtp_server_reply r;
		size_t n = rm_smtp_replyp_feed(&o->rp, rx->data + used, rx->len - used, &r);

		used += n;
		if (rm_smtp_replyp_error(&o->rp) != RM_SMTP_REPLYP_OK) {
			fail_conn(o, "%s: bad reply: %s", o->peer, rm_smtp_replyp_err_text(rm_smtp_replyp_error(&o->rp)));
			return rx->len;
		}
		if (r.complete) {
			enum out_state before = o->state;

			on_reply(o, &r);
			if (before == OS_STARTTLS && o->state == OS_TLS)
				return rx->len;	/* nothing sent before the handshake may be read after it */
		}
		if (n == 0)
			break;
	}
	return rx->len;
}

static void out_writable(struct rm_conn *c)
{
	struct rm_smtp_out *o = c->session;

	if (o->state == OS_CONTENT)
		feed_content(o);
}

static void out_timeout(struct rm_conn *c)
{
	struct rm_smtp_out *o = c->session;

	fail_conn(o, "%s: timeout %s", o->peer, o->state == OS_GREETING ? "waiting for the greeting"
		  : o->state == OS_CONTENT || o->state == OS_END ? "sending the message"
		  : "waiting for a reply");
}

static void out_eof(struct rm_conn *c)
{
	struct rm_smtp_out *o = c->session;

	if (o->state == OS_TLS) {
		tls_failure(o, "connection closed during the handshake");
		fail_conn(o, "%s", o->why);
	} else if (o->state != OS_QUIT)
		fail_conn(o, "%s closed the connection", o->peer);
	else
		rm_conn_close(c);
}

static void out_close(struct rm_conn *c, int err)
{
	struct rm_smtp_out *o = c->session;
	struct rm_smtp_out_job *job;

	c->session = NULL;
	if (o == NULL)
		return;
	o->c = NULL;
	if (o->state == OS_TLS && o->why[0] == '\0') {
		char reason[96];

		snprintf(reason, sizeof(reason), "%s during the handshake", err != 0 ? strerror(-err) : "connection lost");
		tls_failure(o, reason);
	}
	if (o->why[0] == '\0')
		snprintf(o->why, sizeof(o->why), "%s: connection %s", o->peer,
			 o->state == OS_QUIT || o->state == OS_CLOSED ? "closed" : err ? strerror(-err) : "lost");
	/* Anything else: a timeout, a lost or a closed connection, a protocol error. */
	end_status(o, o->ready_seen || o->state != OS_CONNECTING ? "4.4.2" : "4.4.1");
	job = o->job;
	o->job = NULL;
	o->ops->closed(o, job, o->why, !o->ready_seen, o->arg);
	out_free(o);
}

static const struct rm_session_ops out_ops = {
	.protocol = "smtp-out",
	.on_data = out_data,
	.on_writable = out_writable,
	.on_timeout = out_timeout,
	.on_eof = out_eof,
	.on_close = out_close,
	.on_connect = out_connect,
};

struct rm_smtp_out *rm_smtp_out_open(struct rm_worker *w, const struct rm_smtp_out_params *p,
				     const struct rm_smtp_out_ops *ops, void *arg, int *err)
{
	struct rm_smtp_out *o = calloc(1, sizeof(*o));
	struct rm_connect_options co;
	char ip[INET6_ADDRSTRLEN] = "?";

	if (o == NULL || (o->buf = malloc(OUT_READ_BYTES + OUT_STUFF_BYTES)) == NULL) {
		free(o);
		*err = -ENOMEM;
		return NULL;
	}
	o->w = w;
	o->ops = ops;
	o->arg = arg;
	o->tls = p->tls;
	o->timeout_ms = p->timeout_ms;
	o->data_timeout_ms = p->data_timeout_ms;
	snprintf(o->host, sizeof(o->host), "%s", p->host != NULL ? p->host : "");
	snprintf(o->helo, sizeof(o->helo), "%s", p->helo);
	snprintf(o->tls_ca, sizeof(o->tls_ca), "%s", p->tls_ca != NULL ? p->tls_ca : "");
	if (p->auth_user != NULL) {
		snprintf(o->auth_user, sizeof(o->auth_user), "%s", p->auth_user);
		snprintf(o->auth_pass, sizeof(o->auth_pass), "%s", p->auth_pass != NULL ? p->auth_pass : "");
	}
	if (p->addr.sa.sa_family == AF_INET)
		inet_ntop(AF_INET, &p->addr.in4.sin_addr, ip, sizeof(ip));
	else if (p->addr.sa.sa_family == AF_INET6)
		inet_ntop(AF_INET6, &p->addr.in6.sin6_addr, ip, sizeof(ip));
	snprintf(o->peer, sizeof(o->peer), "%.40s[%s]", o->host[0] ? o->host : ip, ip);
	rm_smtp_replyp_init(&o->rp, RM_SMTP_CLIENT_LINE_BYTES_DEFAULT, RM_SMTP_CLIENT_LINES_DEFAULT);
	memset(&co, 0, sizeof(co));
	co.dest = &p->addr.sa;
	co.dest_len = p->addr_len;
	o->state = OS_CONNECTING;
	o->c = rm_conn_connect(w, &co, &out_ops, o, err);
	if (o->c == NULL) {
		out_free(o);
		return NULL;
	}
	return o;
}
