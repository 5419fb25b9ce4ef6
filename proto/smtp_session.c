/*
 * NAME
 *	smtp_session - the SMTP server session (see smtp_session.h)
 * DESCRIPTION
 *	Reading order: the session struct and its phases; replies and error
 *	counting; opening (limits, PROXY, greeting); the commands; the
 *	transaction's content (DATA, BDAT) into the spool; AUTH; the engine's
 *	callbacks.
 *
 *	Lifetime: the session belongs to its connection until on_close.  A
 *	spool callback or a password check may still be owed then; the
 *	session is freed by whichever comes last (on_close, or the owed
 *	callback, which finds s->c == NULL).
 *
 *	The configuration is read afresh in every callback (rm_worker_config):
 *	a reload may retire the one a session started under once every
 *	worker has taken the new one, so no pointer into it is kept across
 *	callbacks, except the password table, on which a check holds a
 *	reference.
 */
#include "proto/smtp_session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/anvil.h"
#include "core/authpool.h"
#include "core/cidr.h"
#include "core/log.h"
#include "core/maps.h"
#include "core/passwd.h"
#include "core/spool.h"
#include "proto/linesplit.h"
#include "proto/proxy_proto.h"
#include "proto/sasl.h"
#include "proto/smtp_addr.h"
#include "proto/smtp_cmd.h"
#include "proto/smtp_data.h"
#include "proto/smtp_reply.h"
#include "tls/tls.h"

_Static_assert(RM_SMTP_NOTIFY_NEVER == RM_SPOOL_NOTIFY_NEVER && RM_SMTP_NOTIFY_SUCCESS == RM_SPOOL_NOTIFY_SUCCESS &&
	       RM_SMTP_NOTIFY_FAILURE == RM_SPOOL_NOTIFY_FAILURE && RM_SMTP_NOTIFY_DELAY == RM_SPOOL_NOTIFY_DELAY,
	       "DSN NOTIFY bits pass from the command parser to the spool unchanged");

/* The splitter takes AUTH lines (RFC 4954 4); other commands are held to
 * limits.smtp_line_bytes_max once complete. */
#define SMTP_SPLIT_LINE_MAX (RM_SMTP_AUTH_LINE_BYTES_MAX - 2)
/* A reply is one line but EHLO's; EHLO's keywords fit this too. */
#define SMTP_REPLY_BYTES_MAX 1024
/* Output queued but not sent past which commands wait: a client that
 * pipelines without reading replies is paced, not buffered. */
#define SMTP_OUTPUT_RESERVE_BYTES 2048
/* Spans per decoder call: enough that a call makes real progress. */
#define SMTP_DATA_SPANS 32
/* A client's content timer is rearmed after this much content even inside one long line. */
#define SMTP_DATA_PROGRESS_BYTES 1000
/* Decoded SASL response: 12288 base64 characters at most. */
#define SMTP_SASL_BYTES_MAX (RM_SMTP_AUTH_LINE_BYTES_MAX / 4 * 3)
#define SMTP_RECEIVED_BYTES_MAX 2048
#define SMTP_ADDR_TEXT_MAX (RM_SMTP_PATH_BYTES_MAX + 1)
/* The longest PROXY header the session collects: v2 at its default limit (v1 is shorter). */
#define RM_PROXY_BYTES_MAX (RM_PROXY_V2_FIXED_BYTES + RM_PROXY_V2_BYTES_MAX_DEFAULT)

enum smtp_phase {
	PH_PROXY = 0,		/* waiting for the PROXY header */
	PH_GREET_WAIT,		/* greeting held back: input now is talk before the greeting */
	PH_COMMAND,
	PH_DATA,		/* DATA content up to CR LF . CR LF */
	PH_BDAT,		/* the bytes of one BDAT chunk */
	PH_AUTH_LINE,		/* waiting for a SASL response line */
	PH_AUTH_VERIFY,		/* the auth pool has the credentials */
	PH_AUTH_DELAY,		/* the 535 waits out limits.smtp_auth_failure_delay_ms */
	PH_WAIT_BEGIN,		/* the spool said -EAGAIN to begin */
	PH_WAIT_ROOM,		/* content waits for spool room */
	PH_WAIT_COMMIT,		/* END written (or waiting to be); the reply comes from the commit */
	PH_DONE,		/* closing: take nothing more */
};

enum sasl_step { SASL_NONE = 0, SASL_PLAIN, SASL_LOGIN_USER, SASL_LOGIN_PASS };

/* A recipient: offsets into the transaction's arena (it may move as it grows). */
struct smtp_rcpt {
	uint32_t addr_off, addr_len;
	uint32_t orcpt_off, orcpt_len;
	uint8_t notify;
};

struct smtp_auth_job;

struct smtp_session {
	struct rm_conn *c;		/* NULL once the connection is gone */
	enum smtp_phase phase;
	bool spool_owes_callback;	/* a spool callback will come with this session */
	bool commit_accepted;		/* rm_spool_commit took it: commit_done will come */
	bool eof;			/* the client sent all it will: close after the reply */
	bool stopping;			/* the daemon is stopping: 421 at the next command */
	bool counted;			/* in the per-client and total counts */
	bool pregreet_logged;
	bool ehlo;			/* EHLO (not HELO) was given */
	struct smtp_auth_job *auth_job;	/* a password check in the pool */
	uint32_t errors;
	uint32_t transactions;
	union rm_sockaddr client;	/* the socket peer, or the PROXY header's source */
	char client_ip[INET6_ADDRSTRLEN];
	char helo[RM_SMTP_DOMAIN_BYTES_MAX + 1];	/* "" before HELO/EHLO */
	char user[RM_SASL_AUTHCID_BYTES_MAX + 1];	/* "" = not authenticated */
	/* line splitting */
	struct rm_lines lines;
	uint8_t *hold;			/* SMTP_SPLIT_LINE_MAX + 1 */
	/* PROXY header bytes collected over several receives */
	uint8_t *proxy_buf;
	size_t proxy_len;
	/* AUTH in progress */
	enum sasl_step sasl;
	char login_user[RM_SASL_AUTHCID_BYTES_MAX + 1];
	size_t login_user_len;
	/* the transaction */
	bool mail;			/* MAIL accepted */
	bool smtputf8;
	uint8_t body;			/* enum rm_spool_body */
	uint8_t ret;			/* enum rm_spool_ret */
	uint64_t size_declared;
	char sender[SMTP_ADDR_TEXT_MAX];	/* "" = null sender */
	char envid[RM_SMTP_ENVID_BYTES_MAX + 1];
	struct smtp_rcpt *rcpts;
	uint32_t rcpt_count, rcpt_cap;
	char *arena;
	size_t arena_len, arena_cap;
	/* the content */
	bool bdat;			/* this transaction's content comes by BDAT */
	bool bdat_last;
	uint64_t bdat_chunk;		/* bytes of the BDAT command waiting for begin */
	struct rm_smtp_data dec;
	struct rm_spool_msg *msg;	/* NULL while discarding */
	int content_err;		/* why the content is discarded: -EFBIG, -EMLINK, ... */
	const struct rm_smtp_status *content_reply;	/* a discarded chunk's reply */
	uint64_t progress_at;		/* content bytes when the data timer was last set */
	uint64_t qid;
	uint64_t received_bytes;	/* Received: header length */
};

struct smtp_auth_job {
	struct rm_auth_request req;	/* first: the pool hands it back */
	struct smtp_session *s;
};

static struct rm_anvil *smtp_anvil;
static _Atomic uint32_t smtp_sessions;	/* in the process, for limits.smtp_connections_max */

int rm_smtp_global_init(void)
{
	return smtp_anvil != NULL ? 0 : rm_anvil_init(&smtp_anvil);
}

void rm_smtp_global_free(void)
{
	if (smtp_anvil != NULL)
		rm_anvil_free(smtp_anvil);
	smtp_anvil = NULL;
}

static void session_free(struct smtp_session *s)
{
	free(s->hold);
	free(s->proxy_buf);
	free(s->rcpts);
	free(s->arena);
	free(s);
}

static const struct rm_config *cfg_of(const struct smtp_session *s)
{
	return rm_worker_config(s->c->worker);
}

/* ------------------------------------------------------------- replies */

static void reply_raw(struct smtp_session *s, const uint8_t *buf, ssize_t n)
{
	if (n <= 0) {
		rm_error(s->c->id, "smtp: a reply did not fit its buffer");
		rm_conn_abort(s->c, -EINVAL);
		return;
	}
	if (rm_conn_write(s->c, buf, (size_t)n) < 0)
		rm_conn_abort(s->c, -ENOBUFS);	/* more than output_bytes_max unread */
}

static void reply(struct smtp_session *s, unsigned code, const char *enhanced, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void reply(struct smtp_session *s, unsigned code, const char *enhanced, const char *fmt, ...)
{
	char text[RM_SMTP_REPLY_LINE_BYTES_MAX];
	uint8_t buf[SMTP_REPLY_BYTES_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	reply_raw(s, buf, rm_smtp_reply_line(buf, sizeof(buf), code, enhanced, text));
}

static void reply_status(struct smtp_session *s, const struct rm_smtp_status *st)
{
	uint8_t buf[SMTP_REPLY_BYTES_MAX];

	reply_raw(s, buf, rm_smtp_reply_status(buf, sizeof(buf), st));
}

static void close_after_reply(struct smtp_session *s)
{
	s->phase = PH_DONE;
	rm_conn_close(s->c);
}

/*
 * A client error (bad syntax, bad sequence, refused recipient, failed
 * AUTH): after limits.smtp_errors_max of them the session ends, as Postfix's
 * smtpd_hard_error_limit does, so a client cannot probe for ever.
 */
static void client_error(struct smtp_session *s)
{
	if (++s->errors < cfg_of(s)->limits.smtp_errors_max || s->phase == PH_DONE)
		return;
	rm_warn(s->c->id, "smtp: %s: %u errors: disconnecting", s->client_ip, s->errors);
	reply(s, 421, "4.7.0", "%s Error: too many errors", cfg_of(s)->smtp.hostname);
	close_after_reply(s);
}

static void reply_error(struct smtp_session *s, unsigned code, const char *enhanced, const char *text)
{
	reply(s, code, enhanced, "%s", text);
	client_error(s);
}

static void set_timer_command(struct smtp_session *s)
{
	rm_conn_timer(s->c, cfg_of(s)->limits.smtp_command_timeout_ms);
}

/* ---------------------------------------------------------- transaction */

static void txn_reset(struct smtp_session *s)
{
	if (s->msg != NULL && !s->commit_accepted) {
		rm_spool_abort(s->msg);	/* also leaves any room wait list */
		s->spool_owes_callback = false;
	}
	s->msg = NULL;
	s->mail = false;
	s->smtputf8 = false;
	s->body = RM_SPOOL_BODY_NONE;
	s->ret = RM_SPOOL_RET_NONE;
	s->size_declared = 0;
	s->sender[0] = '\0';
	s->envid[0] = '\0';
	s->rcpt_count = 0;
	s->arena_len = 0;
	s->bdat = false;
	s->bdat_last = false;
	s->content_err = 0;
	s->content_reply = NULL;
}

/* Copy bytes into the transaction's arena; its offset, or UINT32_MAX without memory. */
static uint32_t arena_put(struct smtp_session *s, const void *p, size_t len)
{
	uint32_t off;

	if (s->arena_len + len > s->arena_cap) {
		size_t cap = s->arena_cap ? s->arena_cap : 1024;
		char *grown;

		while (cap < s->arena_len + len)
			cap *= 2;
		grown = realloc(s->arena, cap);
		if (grown == NULL)
			return UINT32_MAX;
		s->arena = grown;
		s->arena_cap = cap;
	}
	off = (uint32_t)s->arena_len;
	memcpy(s->arena + off, p, len);
	s->arena_len += len;
	return off;
}

/* ------------------------------------------------------------- policy */

static bool client_trusted(const struct smtp_session *s, const struct rm_config *cfg)
{
	return s->user[0] != '\0' ||
	       (cfg->smtp.mynetworks != NULL && rm_cidr_list_match(cfg->smtp.mynetworks, &s->client.sa));
}

static bool tls_active(const struct smtp_session *s)
{
	return rm_tls_active(s->c);
}

static bool auth_offered(const struct smtp_session *s, const struct rm_config *cfg)
{
	const struct rm_listener_config *l = rm_conn_listener(s->c);

	return l != NULL && l->submission && cfg->smtp.passwd != NULL &&
	       (tls_active(s) || cfg->smtp.auth_plaintext);
}

static bool starttls_offered(const struct smtp_session *s)
{
	const struct rm_listener_config *l = rm_conn_listener(s->c);

	return l != NULL && l->tls == RM_TLS_STARTTLS && !tls_active(s);
}

static uint32_t extensions(const struct smtp_session *s, const struct rm_config *cfg)
{
	uint32_t ext = RM_SMTP_EXT_SIZE | RM_SMTP_EXT_8BITMIME | RM_SMTP_EXT_SMTPUTF8 | RM_SMTP_EXT_DSN;

	if (auth_offered(s, cfg))
		ext |= RM_SMTP_EXT_AUTH;
	return ext;
}

/* ------------------------------------------------------------- opening */

static void greet(struct smtp_session *s)
{
	const struct rm_config *cfg = cfg_of(s);

	reply(s, 220, NULL, "%s %s", cfg->smtp.hostname, cfg->smtp.banner);
	s->phase = PH_COMMAND;
	set_timer_command(s);
}

/*
 * The client's address is known (the socket's, or the PROXY header's): count
 * it, refuse past the limits (421 4.7.0 at connect, as Postfix's anvil
 * does), then greet, or hold the greeting back to see who talks first.
 */
static void client_known(struct smtp_session *s)
{
	const struct rm_config *cfg = cfg_of(s);
	const struct rm_limits *lim = &cfg->limits;
	uint32_t total, mine;

	if (s->client.sa.sa_family == AF_INET)
		inet_ntop(AF_INET, &s->client.in4.sin_addr, s->client_ip, sizeof(s->client_ip));
	else if (s->client.sa.sa_family == AF_INET6)
		inet_ntop(AF_INET6, &s->client.in6.sin6_addr, s->client_ip, sizeof(s->client_ip));
	else
		snprintf(s->client_ip, sizeof(s->client_ip), "%s", "unknown");
	total = atomic_fetch_add_explicit(&smtp_sessions, 1, memory_order_relaxed) + 1;
	mine = smtp_anvil != NULL ? rm_anvil_conn_enter(smtp_anvil, &s->client.sa) : 0;
	s->counted = true;
	if (lim->smtp_connections_max != 0 && total > lim->smtp_connections_max) {
		rm_warn(s->c->id, "smtp: %s: %u sessions (limits.smtp_connections_max): refused",
			s->client_ip, total);
		reply(s, 421, "4.7.0", "%s Error: too many connections", cfg->smtp.hostname);
		close_after_reply(s);
		return;
	}
	/* As Postfix's smtpd_client_event_limit_exceptions: mynetworks are not limited per client. */
	if (lim->smtp_connections_per_client != 0 && mine > lim->smtp_connections_per_client &&
	    (cfg->smtp.mynetworks == NULL || !rm_cidr_list_match(cfg->smtp.mynetworks, &s->client.sa))) {
		rm_warn(s->c->id, "smtp: %s: %u connections from it (limits.smtp_connections_per_client): refused",
			s->client_ip, mine);
		reply(s, 421, "4.7.0", "%s Error: too many connections from %s", cfg->smtp.hostname,
		      s->client_ip);
		close_after_reply(s);
		return;
	}
	rm_info(s->c->id, "smtp: connect from [%s]%s%s", s->client_ip, tls_active(s) ? " tls=" : "",
		tls_active(s) ? rm_tls_version(s->c) : "");
	if (lim->smtp_pregreet_wait_ms > 0) {
		s->phase = PH_GREET_WAIT;
		rm_conn_timer(s->c, lim->smtp_pregreet_wait_ms);
		return;
	}
	greet(s);
}

static void smtp_open(struct rm_conn *c)
{
	const struct rm_listener_config *l = rm_conn_listener(c);
	const struct rm_config *cfg = rm_worker_config(c->worker);
	struct smtp_session *s = calloc(1, sizeof(*s));

	if (s != NULL)
		s->hold = malloc(SMTP_SPLIT_LINE_MAX + 1);
	if (s == NULL || s->hold == NULL) {
		if (s != NULL)
			free(s);
		rm_conn_abort(c, -ENOMEM);
		return;
	}
	s->c = c;
	c->session = s;
	rm_lines_init(&s->lines, s->hold, SMTP_SPLIT_LINE_MAX);
	memcpy(&s->client, &c->peer, sizeof(s->client));
	if (l != NULL && l->proxy_protocol) {
		char peer[64];

		if (cfg->smtp.proxy_trusted == NULL || !rm_cidr_list_match(cfg->smtp.proxy_trusted, &c->peer.sa)) {
			rm_warn(c->id, "smtp: PROXY listener '%s': %s is not in smtp.proxy_trusted: closed", l->name,
				rm_conn_peer_str(c, peer, sizeof(peer)));
			s->phase = PH_DONE;
			rm_conn_abort(c, -EPERM);
			return;
		}
		s->phase = PH_PROXY;
		rm_conn_timer(c, cfg->limits.smtp_proxy_timeout_ms);
		return;
	}
	client_known(s);
}

/* PROXY v1/v2 header, possibly over several receives; returns bytes taken. */
static size_t take_proxy(struct smtp_session *s, const uint8_t *p, size_t len)
{
	struct rm_proxy_opts o;
	struct rm_proxy_header h;
	enum rm_proxy_status st;
	size_t room, take;

	rm_proxy_opts_default(&o);
	if (s->proxy_buf == NULL) {
		st = rm_proxy_parse(p, len, &o, &h);
		if (st == RM_PROXY_OK) {
			if (!h.local)
				memcpy(&s->client, &h.src, h.family == AF_INET ? sizeof(struct sockaddr_in)
									   : sizeof(struct sockaddr_in6));
			rm_debug(s->c->id, "smtp: PROXY v%u: client %s", h.version, h.local ? "(local)" : "from header");
			client_known(s);
			return h.consumed;
		}
		if (st == RM_PROXY_ERROR)
			goto bad;
		s->proxy_buf = malloc(RM_PROXY_BYTES_MAX);
		if (s->proxy_buf == NULL) {
			rm_conn_abort(s->c, -ENOMEM);
			return len;
		}
	}
	/* Collect, at most the largest header; parse what is collected. */
	room = RM_PROXY_BYTES_MAX - s->proxy_len;
	take = len < room ? len : room;
	memcpy(s->proxy_buf + s->proxy_len, p, take);
	s->proxy_len += take;
	st = rm_proxy_parse(s->proxy_buf, s->proxy_len, &o, &h);
	if (st == RM_PROXY_NEED_MORE && s->proxy_len < RM_PROXY_BYTES_MAX)
		return take;
	if (st == RM_PROXY_OK) {
		/* Bytes collected past the header are the client's first: give back what came from p. */
		size_t extra = s->proxy_len - h.consumed;
		size_t given_back = extra < take ? extra : take;

		if (extra > take) {
			/* Can only happen if an earlier receive held bytes after the header,
			 * which NEED_MORE excludes. */
			rm_conn_abort(s->c, -EPROTO);
			return len;
		}
		if (!h.local)
			memcpy(&s->client, &h.src, h.family == AF_INET ? sizeof(struct sockaddr_in)
								   : sizeof(struct sockaddr_in6));
		free(s->proxy_buf);
		s->proxy_buf = NULL;
		client_known(s);
		return take - given_back;
	}
bad:
	{
		char peer[64];

		rm_warn(s->c->id, "smtp: bad PROXY header from %s: %s", rm_conn_peer_str(s->c, peer, sizeof(peer)),
			st == RM_PROXY_ERROR ? rm_proxy_err_text(h.err) : "too long");
	}
	s->phase = PH_DONE;
	rm_conn_abort(s->c, -EPROTO);
	return len;
}

/* ------------------------------------------------------------- commands */

static void cmd_helo(struct smtp_session *s, const struct rm_smtp_cmd *cmd)
{
	const struct rm_config *cfg = cfg_of(s);
	size_t n = cmd->helo.len < sizeof(s->helo) - 1 ? cmd->helo.len : sizeof(s->helo) - 1;

	txn_reset(s);	/* RFC 5321 4.1.4: EHLO/HELO is an implicit RSET */
	memcpy(s->helo, cmd->helo.text, n);
	s->helo[n] = '\0';
	s->ehlo = cmd->verb == RM_SMTP_VERB_EHLO;
	if (!s->ehlo) {
		reply(s, 250, NULL, "%s", cfg->smtp.hostname);
		return;
	}
	{
		char size_kw[40];
		const char *kw[12];
		size_t k = 0;
		uint8_t buf[SMTP_REPLY_BYTES_MAX];

		snprintf(size_kw, sizeof(size_kw), "SIZE %" PRIu32, cfg->limits.smtp_message_bytes_max);
		kw[k++] = "PIPELINING";
		kw[k++] = size_kw;
		if (cfg->smtp.vrfy)
			kw[k++] = "VRFY";
		kw[k++] = "ENHANCEDSTATUSCODES";
		kw[k++] = "8BITMIME";
		kw[k++] = "DSN";
		kw[k++] = "SMTPUTF8";
		kw[k++] = "CHUNKING";
		if (starttls_offered(s))
			kw[k++] = "STARTTLS";
		if (auth_offered(s, cfg))
			kw[k++] = "AUTH PLAIN LOGIN";
		reply_raw(s, buf, rm_smtp_reply_ehlo(buf, sizeof(buf), cfg->smtp.hostname, "Hello", kw, k));
	}
}

static const struct rm_smtp_status st_need_helo = { 503, "5.5.1", "Error: send HELO/EHLO first" };
static const struct rm_smtp_status st_need_mail = { 503, "5.5.1", "Error: need MAIL command" };
static const struct rm_smtp_status st_need_rcpt = { 554, "5.5.1", "Error: no valid recipients" };
static const struct rm_smtp_status st_too_big = { 552, "5.3.4", "Message size exceeds fixed limit" };
static const struct rm_smtp_status st_no_storage = { 452, "4.3.1", "Insufficient system storage" };
static const struct rm_smtp_status st_long_line = { 500, "5.5.6", "Line too long in message content" };

static void cmd_mail(struct smtp_session *s, const struct rm_smtp_cmd *cmd)
{
	const struct rm_config *cfg = cfg_of(s);
	const struct rm_listener_config *l = rm_conn_listener(s->c);
	uint8_t addr[SMTP_ADDR_TEXT_MAX];
	ssize_t n;

	if (s->helo[0] == '\0') {
		reply_status(s, &st_need_helo);
		client_error(s);
		return;
	}
	if (s->mail) {
		reply_error(s, 503, "5.5.1", "Error: nested MAIL command");
		return;
	}
	if (l != NULL && l->submission && s->user[0] == '\0') {
		if (!tls_active(s) && !cfg->smtp.auth_plaintext)
			reply_error(s, 530, "5.7.0", "Must issue a STARTTLS command first");
		else
			reply_error(s, 530, "5.7.0", "Authentication required");
		return;
	}
	if (cmd->size_given && cmd->size_bytes > cfg->limits.smtp_message_bytes_max) {
		reply(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
		client_error(s);
		return;
	}
	n = cmd->path.null ? 0 : rm_smtp_mailbox_render(&cmd->path, addr, sizeof(addr) - 1);
	if (n < 0) {
		reply_error(s, 501, "5.1.7", "Bad sender address syntax");
		return;
	}
	addr[n] = '\0';
	/* An authenticated user sends only as the addresses the map gives it (Postfix's
	 * reject_sender_login_mismatch); the null sender stays allowed (bounces). */
	if (s->user[0] != '\0' && cfg->smtp.sender_login_map != NULL && n > 0) {
		const char *owners = rm_map_get_address(cfg->smtp.sender_login_map, (const char *)addr, (size_t)n);
		const char *items[64];
		size_t lens[64], count = owners != NULL ? rm_map_value_list(owners, items, lens, 64) : 0;
		bool owned = false;

		for (size_t i = 0; i < count && !owned; i++)
			owned = lens[i] == strlen(s->user) && strncasecmp(items[i], s->user, lens[i]) == 0;
		if (!owned) {
			rm_warn(s->c->id, "smtp: %s: sender <%s> refused: not owned by user %s", s->client_ip,
				(const char *)addr, s->user);
			reply(s, 553, "5.7.1", "<%s>: Sender address rejected: not owned by user %s",
			      (const char *)addr, s->user);
			client_error(s);
			return;
		}
	}
	txn_reset(s);
	memcpy(s->sender, addr, (size_t)n + 1);
	s->mail = true;
	s->smtputf8 = cmd->smtputf8;
	s->size_declared = cmd->size_given ? cmd->size_bytes : 0;
	s->body = cmd->body == RM_SMTP_BODY_8BITMIME ? RM_SPOOL_BODY_8BITMIME
		: cmd->body == RM_SMTP_BODY_7BIT ? RM_SPOOL_BODY_7BIT : RM_SPOOL_BODY_NONE;
	s->ret = cmd->ret == RM_SMTP_RET_FULL ? RM_SPOOL_RET_FULL
	       : cmd->ret == RM_SMTP_RET_HDRS ? RM_SPOOL_RET_HDRS : RM_SPOOL_RET_NONE;
	if (cmd->envid.ptr != NULL && cmd->envid.len < sizeof(s->envid)) {
		memcpy(s->envid, cmd->envid.ptr, cmd->envid.len);
		s->envid[cmd->envid.len] = '\0';
	}
	reply(s, 250, "2.1.0", "Ok");
}

/* The recipient's domain for policy: lower case, no trailing dot; "" when it has none. */
static void rcpt_domain(const struct rm_smtp_path *p, char *out, size_t size)
{
	ssize_t n = -1;

	if (p->domain.kind == RM_SMTP_DOMAIN_NAME)
		n = rm_smtp_domain_normalise(p->domain.text, p->domain.len, (uint8_t *)out, size - 1);
	out[n > 0 ? n : 0] = '\0';
}

static void cmd_rcpt(struct smtp_session *s, const struct rm_smtp_cmd *cmd)
{
	const struct rm_config *cfg = cfg_of(s);
	char domain[RM_SMTP_DOMAIN_BYTES_MAX + 2];
	uint8_t addr[SMTP_ADDR_TEXT_MAX];
	bool relay_domain, trusted;
	struct smtp_rcpt *r;
	ssize_t n;

	if (!s->mail) {
		reply_status(s, &st_need_mail);
		client_error(s);
		return;
	}
	if (s->bdat) {
		/* RFC 3030 2: the envelope is in the spool with the first chunk; no more recipients. */
		reply_error(s, 503, "5.5.1", "Error: RCPT after BDAT");
		return;
	}
	if (s->rcpt_count >= cfg->limits.smtp_recipients_max) {
		/* RFC 5321 4.5.3.1.10: 452, and the client sends the rest in another transaction. */
		reply(s, 452, "4.5.3", "Error: too many recipients");
		return;
	}
	if (cmd->path.bare_postmaster) {
		memcpy(addr, "postmaster", 11);
		n = 10;
	} else {
		n = rm_smtp_mailbox_render(&cmd->path, addr, sizeof(addr) - 1);
	}
	if (n <= 0) {
		reply_error(s, 501, "5.1.3", "Bad recipient address syntax");
		return;
	}
	addr[n] = '\0';
	rcpt_domain(&cmd->path, domain, sizeof(domain));
	relay_domain = domain[0] != '\0' && cfg->smtp.relay_domains != NULL &&
		       rm_map_get(cfg->smtp.relay_domains, domain, strlen(domain)) != NULL;
	trusted = client_trusted(s, cfg);
	/*
	 * RFC 5321 4.5.1: <Postmaster> without a domain is always accepted.  A
	 * relay domain takes mail from anyone, but not with the old routing forms
	 * (user%other@relay, host!user@relay, "user@other"@relay) from outside:
	 * a next hop that honours them would make this an open relay.
	 */
	if (!cmd->path.bare_postmaster && !trusted &&
	    (!relay_domain || cmd->path.local_route_chars != 0)) {
		rm_warn(s->c->id, "smtp: %s: relay denied: from=<%s> to=<%s> helo=%s", s->client_ip, s->sender,
			(const char *)addr, s->helo);
		reply(s, 554, "5.7.1", "<%s>: Relay access denied", (const char *)addr);
		client_error(s);
		return;
	}
	if (relay_domain && cfg->smtp.recipient_map != NULL &&
	    rm_map_get_address(cfg->smtp.recipient_map, (const char *)addr, (size_t)n) == NULL) {
		rm_info(s->c->id, "smtp: %s: unknown recipient <%s>", s->client_ip, (const char *)addr);
		reply(s, 550, "5.1.1", "<%s>: Recipient address rejected: User unknown in relay recipient table",
		      (const char *)addr);
		client_error(s);
		return;
	}
	if (s->rcpt_count == s->rcpt_cap) {
		uint32_t cap = s->rcpt_cap ? s->rcpt_cap * 2 : 8;
		struct smtp_rcpt *grown = realloc(s->rcpts, cap * sizeof(*grown));

		if (grown == NULL) {
			reply(s, 452, "4.3.1", "Insufficient system storage");
			return;
		}
		s->rcpts = grown;
		s->rcpt_cap = cap;
	}
	r = &s->rcpts[s->rcpt_count];
	memset(r, 0, sizeof(*r));
	r->addr_off = arena_put(s, addr, (size_t)n);
	r->addr_len = (uint32_t)n;
	r->notify = cmd->notify;
	if (cmd->orcpt.ptr != NULL) {
		/* Kept as sent, "type;xtext", for the DSN (RFC 3461 4.2). */
		char orcpt[RM_SMTP_ORCPT_BYTES_MAX + 64];
		int len = snprintf(orcpt, sizeof(orcpt), "%.*s;%.*s", (int)cmd->orcpt_type.len,
				   (const char *)cmd->orcpt_type.ptr, (int)cmd->orcpt.len, (const char *)cmd->orcpt.ptr);

		if (len > 0 && (size_t)len < sizeof(orcpt)) {
			r->orcpt_off = arena_put(s, orcpt, (size_t)len);
			r->orcpt_len = (uint32_t)len;
		}
	}
	if (r->addr_off == UINT32_MAX || r->orcpt_off == UINT32_MAX) {
		reply(s, 452, "4.3.1", "Insufficient system storage");
		return;
	}
	s->rcpt_count++;
	reply(s, 250, "2.1.5", "Ok");
}

static void start_content(struct smtp_session *s);

static void cmd_data(struct smtp_session *s)
{
	if (!s->mail) {
		reply_status(s, &st_need_mail);
		client_error(s);
		return;
	}
	if (s->bdat) {
		reply_error(s, 503, "5.5.1", "Error: DATA after BDAT");
		return;
	}
	if (s->rcpt_count == 0) {
		reply_status(s, &st_need_rcpt);
		client_error(s);
		return;
	}
	start_content(s);
}

static size_t take_content(struct smtp_session *s, const uint8_t *p, size_t len);

/* A BDAT chunk of 0 bytes has no bytes to wait for: finish it now. */
static void chunk_empty_check(struct smtp_session *s)
{
	if (s->phase == PH_BDAT && s->dec.chunk_left == 0)
		take_content(s, (const uint8_t *)"", 0);
}

static void discard_chunk(struct smtp_session *s, uint64_t bytes, bool last,
			  const struct rm_smtp_status *why)
{
	struct rm_smtp_data_opts o;

	rm_smtp_data_opts_default(&o);
	rm_smtp_data_init_bdat(&s->dec, &o, false);
	rm_smtp_data_bdat_chunk(&s->dec, bytes, last);
	s->msg = NULL;
	s->content_reply = why;
	s->phase = PH_BDAT;
	rm_conn_timer(s->c, cfg_of(s)->limits.smtp_data_timeout_ms);
	chunk_empty_check(s);
}

static void cmd_bdat(struct smtp_session *s, const struct rm_smtp_cmd *cmd)
{
	const struct rm_config *cfg = cfg_of(s);

	/* RFC 3030 3: the chunk's bytes follow whatever the reply: read them, then answer. */
	if (!s->mail || s->rcpt_count == 0) {
		discard_chunk(s, cmd->bdat_bytes, cmd->bdat_last, !s->mail ? &st_need_mail : &st_need_rcpt);
		return;
	}
	if (s->bdat && s->msg == NULL) {
		/* The transaction already failed (too big, no storage): keep refusing. */
		discard_chunk(s, cmd->bdat_bytes, cmd->bdat_last,
			      s->content_err == -EFBIG ? &st_too_big : &st_no_storage);
		return;
	}
	if (cmd->bdat_bytes > cfg->limits.smtp_message_bytes_max ||
	    (s->bdat && s->dec.content_bytes + cmd->bdat_bytes > cfg->limits.smtp_message_bytes_max)) {
		txn_reset(s);
		discard_chunk(s, cmd->bdat_bytes, cmd->bdat_last, &st_too_big);
		return;
	}
	s->bdat_chunk = cmd->bdat_bytes;
	s->bdat_last = cmd->bdat_last;
	if (!s->bdat) {
		s->bdat = true;
		start_content(s);
		return;
	}
	rm_smtp_data_bdat_chunk(&s->dec, cmd->bdat_bytes, cmd->bdat_last);
	s->phase = PH_BDAT;
	rm_conn_timer(s->c, cfg->limits.smtp_data_timeout_ms);
	chunk_empty_check(s);
}

static void cmd_rset(struct smtp_session *s)
{
	txn_reset(s);
	reply(s, 250, "2.0.0", "Ok");
}

static void cmd_vrfy(struct smtp_session *s, const struct rm_smtp_cmd *cmd)
{
	if (cmd->verb == RM_SMTP_VERB_VRFY && cfg_of(s)->smtp.vrfy) {
		/* RFC 5321 3.5.3: 252 when the server will not say, but will take mail. */
		reply(s, 252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery");
		return;
	}
	reply_error(s, 502, "5.5.1", cmd->verb == RM_SMTP_VERB_VRFY ? "VRFY command is disabled"
								  : "EXPN command is disabled");
}

/* Returns true when the rest of the received bytes must go (the handshake starts). */
static bool cmd_starttls(struct smtp_session *s)
{
	const struct rm_listener_config *l = rm_conn_listener(s->c);
	int rc;

	if (l == NULL || l->tls != RM_TLS_STARTTLS) {
		reply_error(s, 502, "5.5.1", "Error: command not implemented");
		return false;
	}
	if (tls_active(s)) {
		reply_error(s, 554, "5.5.1", "Error: TLS already active");
		return false;
	}
	rc = rm_tls_starttls_check(s->c);
	if (rc != 0) {
		reply(s, 454, "4.7.0", "TLS not available due to temporary reason");
		return false;
	}
	reply(s, 220, "2.0.0", "Ready to start TLS");
	/* RFC 3207 4.2: forget everything learnt before TLS. */
	txn_reset(s);
	s->helo[0] = '\0';
	s->ehlo = false;
	s->user[0] = '\0';
	rm_lines_reset(&s->lines);
	rc = rm_tls_starttls(s->c);
	if (rc != 0) {
		rm_warn(s->c->id, "smtp: STARTTLS failed to start: %s", strerror(-rc));
		close_after_reply(s);
	}
	return true;
}

/* ---------------------------------------------------------------- AUTH */

static void auth_done(struct rm_worker *w, struct rm_auth_request *req);
static void auth_orphan(struct rm_auth_request *req);

static void auth_submit(struct smtp_session *s, const uint8_t *user, size_t user_len, const uint8_t *pass,
			size_t pass_len)
{
	const struct rm_config *cfg = cfg_of(s);
	struct smtp_auth_job *job;
	int rc;

	if (user_len == 0 || user_len >= sizeof(job->req.user) || pass_len == 0 ||
	    pass_len > sizeof(job->req.pass) || cfg->smtp.passwd == NULL) {
		reply_error(s, 535, "5.7.8", "Authentication credentials invalid");
		s->phase = PH_COMMAND;
		return;
	}
	job = calloc(1, sizeof(*job));
	if (job == NULL) {
		reply(s, 454, "4.7.0", "Temporary authentication failure");
		s->phase = PH_COMMAND;
		return;
	}
	job->s = s;
	job->req.worker = s->c->worker;
	job->req.table = cfg->smtp.passwd;
	memcpy(job->req.user, user, user_len);
	job->req.user_len = user_len;
	memcpy(job->req.pass, pass, pass_len);
	job->req.pass_len = pass_len;
	job->req.done = auth_done;
	job->req.orphan = auth_orphan;
	rc = rm_authpool_submit(&job->req);
	if (rc != 0) {
		explicit_bzero(job->req.pass, sizeof(job->req.pass));
		free(job);
		rm_warn(s->c->id, "smtp: %s: AUTH: password check queue full (%s)", s->client_ip, strerror(-rc));
		reply(s, 454, "4.7.0", "Temporary authentication failure");
		s->phase = PH_COMMAND;
		return;
	}
	s->auth_job = job;
	s->phase = PH_AUTH_VERIFY;
}

/* A SASL PLAIN message (decoded): authzid NUL authcid NUL passwd. */
static void auth_plain(struct smtp_session *s, const uint8_t *msg, size_t len)
{
	struct rm_sasl_plain p;
	enum rm_sasl_err e = rm_sasl_plain_parse(msg, len, &p);

	if (e != RM_SASL_OK) {
		rm_info(s->c->id, "smtp: %s: AUTH PLAIN: %s", s->client_ip, rm_sasl_err_text(e));
		reply_error(s, 501, "5.5.2", "Cannot decode response");
		s->phase = PH_COMMAND;
		return;
	}
	/* Acting for another identity is not offered: an authzid must be the user itself. */
	if (p.authzid.len != 0 && (p.authzid.len != p.authcid.len ||
				   memcmp(p.authzid.ptr, p.authcid.ptr, p.authcid.len) != 0)) {
		reply_error(s, 535, "5.7.8", "Authentication credentials invalid");
		s->phase = PH_COMMAND;
		return;
	}
	auth_submit(s, p.authcid.ptr, p.authcid.len, p.passwd.ptr, p.passwd.len);
}

/* A client response line of AUTH (RFC 4954 4): base64, or "*" to cancel. */
static void auth_line(struct smtp_session *s, const uint8_t *line, size_t len)
{
	uint8_t buf[SMTP_SASL_BYTES_MAX];
	size_t n = 0;

	if (rm_sasl_is_cancel(line, len)) {
		s->sasl = SASL_NONE;
		s->phase = PH_COMMAND;
		reply_error(s, 501, "5.0.0", "Authentication aborted");
		return;
	}
	if (s->sasl == SASL_PLAIN) {
		ssize_t d = rm_base64_decode(line, len, buf, sizeof(buf));

		s->sasl = SASL_NONE;
		if (d < 0) {
			s->phase = PH_COMMAND;
			reply_error(s, 501, "5.5.2", "Cannot decode response");
			return;
		}
		auth_plain(s, buf, (size_t)d);
		return;
	}
	if (rm_sasl_login_field(line, len, buf, sizeof(buf), &n) != RM_SASL_OK) {
		s->sasl = SASL_NONE;
		s->phase = PH_COMMAND;
		reply_error(s, 501, "5.5.2", "Cannot decode response");
		return;
	}
	if (s->sasl == SASL_LOGIN_USER) {
		if (n == 0 || n >= sizeof(s->login_user)) {
			s->sasl = SASL_NONE;
			s->phase = PH_COMMAND;
			reply_error(s, 535, "5.7.8", "Authentication credentials invalid");
			return;
		}
		memcpy(s->login_user, buf, n);
		s->login_user_len = n;
		s->sasl = SASL_LOGIN_PASS;
		reply(s, 334, NULL, "%s", RM_SASL_LOGIN_CHALLENGE_PASSWORD);
		return;
	}
	s->sasl = SASL_NONE;
	auth_submit(s, (const uint8_t *)s->login_user, s->login_user_len, buf, n);
	explicit_bzero(buf, sizeof(buf));
}

static void cmd_auth(struct smtp_session *s, const struct rm_smtp_cmd *cmd)
{
	const struct rm_config *cfg = cfg_of(s);
	const struct rm_listener_config *l = rm_conn_listener(s->c);
	const struct rm_smtp_span *mech = &cmd->auth_mech;

	if (l == NULL || !l->submission || cfg->smtp.passwd == NULL) {
		reply_error(s, 503, "5.5.1", "Error: authentication not enabled");
		return;
	}
	if (!tls_active(s) && !cfg->smtp.auth_plaintext) {
		reply_error(s, 530, "5.7.0", "Must issue a STARTTLS command first");
		return;
	}
	if (s->helo[0] == '\0') {
		reply_status(s, &st_need_helo);
		client_error(s);
		return;
	}
	if (s->user[0] != '\0') {
		reply_error(s, 503, "5.5.1", "Error: already authenticated");
		return;
	}
	if (smtp_anvil != NULL &&
	    rm_anvil_auth_failures(smtp_anvil, &s->client.sa, rm_worker_now_ms(s->c->worker),
				   cfg->limits.smtp_auth_failure_window_ms) >= cfg->limits.smtp_auth_failures_max) {
		rm_warn(s->c->id, "smtp: %s: too many failed AUTH attempts (limits.smtp_auth_failures_max): disconnecting",
			s->client_ip);
		reply(s, 421, "4.7.0", "%s Error: too many failed authentications", cfg->smtp.hostname);
		close_after_reply(s);
		return;
	}
	if (mech->len == 5 && strncasecmp((const char *)mech->ptr, "PLAIN", 5) == 0) {
		if (cmd->auth_initial.ptr == NULL) {
			static const char empty_challenge[] = "334 \r\n";	/* RFC 4954: "334" SP, then nothing */

			s->sasl = SASL_PLAIN;
			s->phase = PH_AUTH_LINE;
			reply_raw(s, (const uint8_t *)empty_challenge, (ssize_t)sizeof(empty_challenge) - 1);
			return;
		}
		{
			uint8_t buf[SMTP_SASL_BYTES_MAX];
			ssize_t d = cmd->auth_initial.len == 1 && cmd->auth_initial.ptr[0] == '='
				? 0 : rm_base64_decode(cmd->auth_initial.ptr, cmd->auth_initial.len, buf, sizeof(buf));

			if (d < 0) {
				reply_error(s, 501, "5.5.2", "Cannot decode response");
				return;
			}
			auth_plain(s, buf, (size_t)d);
			explicit_bzero(buf, sizeof(buf));
		}
		return;
	}
	if (mech->len == 5 && strncasecmp((const char *)mech->ptr, "LOGIN", 5) == 0) {
		s->phase = PH_AUTH_LINE;
		if (cmd->auth_initial.ptr != NULL) {
			/* An initial response to LOGIN is the user name. */
			s->sasl = SASL_LOGIN_USER;
			auth_line(s, cmd->auth_initial.ptr, cmd->auth_initial.len);
			return;
		}
		s->sasl = SASL_LOGIN_USER;
		reply(s, 334, NULL, "%s", RM_SASL_LOGIN_CHALLENGE_USERNAME);
		return;
	}
	reply_error(s, 504, "5.5.4", "Unrecognized authentication type");
}

/* The session a pool answer belongs to; NULL (and freed) when its connection has gone. */
static struct smtp_session *auth_job_finish(struct smtp_auth_job *job)
{
	struct smtp_session *s = job->s;

	explicit_bzero(job->req.pass, sizeof(job->req.pass));
	s->auth_job = NULL;
	if (s->c != NULL)
		return s;
	if (!s->spool_owes_callback)
		session_free(s);
	return NULL;
}

static void auth_orphan(struct rm_auth_request *req)
{
	/*
	 * The worker left its loop before the answer could reach it: the daemon
	 * is stopping.  A worker leaves only with every connection closed, so the
	 * session's on_close has run and nothing else will touch it.
	 */
	struct smtp_auth_job *job = (struct smtp_auth_job *)req;
	struct smtp_session *s = job->s;

	explicit_bzero(job->req.pass, sizeof(job->req.pass));
	if (s->c == NULL)
		session_free(s);
	free(job);
}

static void auth_done(struct rm_worker *w, struct rm_auth_request *req)
{
	struct smtp_auth_job *job = (struct smtp_auth_job *)req;
	struct smtp_session *s = auth_job_finish(job);
	const struct rm_config *cfg = rm_worker_config(w);

	if (s == NULL) {
		free(job);
		return;
	}
	if (req->ok) {
		size_t n = req->user_len < sizeof(s->user) - 1 ? req->user_len : sizeof(s->user) - 1;

		/* Logged and put in headers: keep printable ASCII only. */
		for (size_t i = 0; i < n; i++) {
			unsigned char ch = (unsigned char)req->user[i];

			s->user[i] = ch > 32 && ch < 127 ? (char)ch : '?';
		}
		s->user[n] = '\0';
		rm_info(s->c->id, "smtp: %s: AUTH ok: user=%s", s->client_ip, s->user);
		reply(s, 235, "2.7.0", "Authentication successful");
		s->phase = PH_COMMAND;
		set_timer_command(s);
		rm_conn_resume(s->c);
	} else {
		uint32_t fails = smtp_anvil != NULL
			? rm_anvil_auth_fail(smtp_anvil, &s->client.sa, rm_worker_now_ms(w),
					     cfg->limits.smtp_auth_failure_window_ms) : 0;

		rm_warn(s->c->id, "smtp: %s: AUTH failed (%u in the window)%s", s->client_ip, fails,
			req->err != 0 ? ": password check unavailable" : "");
		s->phase = PH_AUTH_DELAY;
		rm_conn_timer(s->c, cfg->limits.smtp_auth_failure_delay_ms ? cfg->limits.smtp_auth_failure_delay_ms : 1);
	}
	free(job);
}

/* --------------------------------------------------------- the content */

/* "Sun, 06 Dec 2026 10:00:00 +0000": RFC 5322 3.3 date-time, C locale names. */
static void date_rfc5322(char *out, size_t size)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t now = time(NULL);
	struct tm tm;
	long off;

	localtime_r(&now, &tm);
	off = tm.tm_gmtoff / 60;
	snprintf(out, size, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday % 7], tm.tm_mday,
		 months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, off < 0 ? '-' : '+',
		 (off < 0 ? -off : off) / 60, (off < 0 ? -off : off) % 60);
}

/*
 * RFC 5321 4.4 trace header, laid out as Postfix does, with the protocol
 * keyword of RFC 3848 (ESMTP, ESMTPS, ESMTPA, ESMTPSA; SMTP after HELO;
 * UTF8 forms of RFC 6531).  Everything in it is either ours or was checked
 * by a codec (HELO is a domain or address literal, the user printable
 * ASCII), so no client byte can end a header line early.
 */
static size_t received_header(struct smtp_session *s, char *out, size_t size)
{
	const struct rm_config *cfg = cfg_of(s);
	char qid[RM_QUEUE_ID_TEXT_BYTES], date[64], with[16], tls[160] = "", auth[320] = "", rcpt[400] = "";
	bool t = tls_active(s);
	int n;

	rm_queue_id_format(s->qid, qid);
	date_rfc5322(date, sizeof(date));
	if (!s->ehlo)
		snprintf(with, sizeof(with), "%s", "SMTP");
	else
		snprintf(with, sizeof(with), "%s%s%s", s->smtputf8 ? "UTF8SMTP" : "ESMTP", t ? "S" : "",
			 s->user[0] != '\0' ? "A" : "");
	if (t)
		snprintf(tls, sizeof(tls), "\r\n\t(using %s with cipher %s)", rm_tls_version(s->c), rm_tls_cipher(s->c));
	if (s->user[0] != '\0' && cfg->smtp.received_auth_user)
		snprintf(auth, sizeof(auth), "\r\n\t(Authenticated sender: %s)", s->user);
	if (s->rcpt_count == 1 && s->rcpts[0].addr_len < 300)
		snprintf(rcpt, sizeof(rcpt), "\r\n\tfor <%.*s>", (int)s->rcpts[0].addr_len,
			 s->arena + s->rcpts[0].addr_off);
	n = snprintf(out, size, "Received: from %s ([%s])%s%s\r\n\tby %s (ringmail) with %s id %s%s; %s\r\n",
		     s->helo, s->client_ip, tls, auth, cfg->smtp.hostname, with, qid, rcpt, date);
	return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

static void begin_room(void *arg);

/* Open the spool message (DATA, or the first BDAT): envelope, then Received:. */
static void start_content(struct smtp_session *s)
{
	const struct rm_config *cfg = cfg_of(s);
	struct rm_spool *sp = rm_spool_of(s->c->worker);
	struct rm_spool_envelope env;
	struct rm_spool_rcpt *rcpts;
	struct rm_smtp_data_opts o;
	char received[SMTP_RECEIVED_BYTES_MAX];
	size_t rlen;
	int rc;

	rcpts = calloc(s->rcpt_count, sizeof(*rcpts));
	if (rcpts == NULL || sp == NULL) {
		free(rcpts);
		rc = sp == NULL ? -ENODEV : -ENOMEM;
		goto failed;
	}
	for (uint32_t i = 0; i < s->rcpt_count; i++) {
		rcpts[i].addr = (struct rm_spool_str){ s->arena + s->rcpts[i].addr_off, s->rcpts[i].addr_len };
		rcpts[i].orcpt = (struct rm_spool_str){ s->arena + s->rcpts[i].orcpt_off, s->rcpts[i].orcpt_len };
		rcpts[i].notify = s->rcpts[i].notify;
	}
	memset(&env, 0, sizeof(env));
	env.received_unix_ms = (uint64_t)time(NULL) * 1000u;
	env.size_declared_bytes = s->size_declared;
	env.body_type = s->body;
	env.ret = s->ret;
	env.smtputf8 = s->smtputf8;
	env.reverse_path = (struct rm_spool_str){ s->sender, strlen(s->sender) };
	env.envid = (struct rm_spool_str){ s->envid, strlen(s->envid) };
	env.client_addr = (struct rm_spool_str){ s->client_ip, strlen(s->client_ip) };
	env.helo = (struct rm_spool_str){ s->helo, strlen(s->helo) };
	env.auth_user = (struct rm_spool_str){ s->user, strlen(s->user) };
	/* The header is not the client's: the size limit is on what the client sends. */
	rc = rm_spool_begin(sp, &env, rcpts, s->rcpt_count,
			    (uint64_t)cfg->limits.smtp_message_bytes_max + SMTP_RECEIVED_BYTES_MAX, &s->msg);
	free(rcpts);
	if (rc == -EAGAIN) {
		s->phase = PH_WAIT_BEGIN;
		s->spool_owes_callback = true;
		rm_spool_wait_begin(sp, begin_room, s);
		return;
	}
	if (rc != 0)
		goto failed;
	s->qid = rm_spool_msg_qid(s->msg);
	rlen = received_header(s, received, sizeof(received));
	/* A fresh message has buffer room for a header (begin checked it). */
	if (rlen == 0 || rm_spool_append(s->msg, received, rlen) != (ssize_t)rlen) {
		rc = -ENOBUFS;
		rm_spool_abort(s->msg);
		s->msg = NULL;
		goto failed;
	}
	s->received_bytes = rlen;
	rm_smtp_data_opts_default(&o);
	o.mode = cfg->smtp.bare_lf == RM_SMTP_BARE_LF_NORMALISE ? RM_SMTP_DATA_NORMALISE : RM_SMTP_DATA_REJECT;
	o.line_bytes_max = cfg->limits.smtp_text_line_bytes_max;
	s->content_err = 0;
	s->content_reply = NULL;
	s->progress_at = 0;
	if (s->bdat) {
		rm_smtp_data_init_bdat(&s->dec, &o, false);
		rm_smtp_data_bdat_chunk(&s->dec, s->bdat_chunk, s->bdat_last);
		s->phase = PH_BDAT;
	} else {
		rm_smtp_data_init(&s->dec, &o);
		reply(s, 354, NULL, "%s", "End data with <CR><LF>.<CR><LF>");
		s->phase = PH_DATA;
	}
	rm_conn_timer(s->c, cfg->limits.smtp_data_timeout_ms);
	chunk_empty_check(s);
	return;
failed:
	rm_warn(s->c->id, "smtp: %s: cannot queue: %s", s->client_ip, strerror(-rc));
	if (s->bdat) {
		s->content_err = rc;
		discard_chunk(s, s->bdat_chunk, s->bdat_last, &st_no_storage);
		return;
	}
	reply_status(s, &st_no_storage);
	txn_reset(s);
	s->phase = PH_COMMAND;
}

/* The spool callback found the connection gone: free the session if nothing else is owed. */
static bool orphaned(struct smtp_session *s)
{
	s->spool_owes_callback = false;
	if (s->c != NULL)
		return false;
	if (s->auth_job == NULL)
		session_free(s);
	return true;
}

static void begin_room(void *arg)
{
	struct smtp_session *s = arg;

	if (orphaned(s))
		return;
	start_content(s);
	if (s->phase != PH_WAIT_BEGIN)
		rm_conn_resume(s->c);
}

static void content_room(void *arg)
{
	struct smtp_session *s = arg;

	if (orphaned(s))
		return;
	s->phase = s->bdat ? PH_BDAT : PH_DATA;
	rm_conn_resume(s->c);
}

static void log_transaction(struct smtp_session *s, const char *qid)
{
	char rcpts[1024];
	size_t used = 0;

	rcpts[0] = '\0';
	for (uint32_t i = 0; i < s->rcpt_count && used + 8 < sizeof(rcpts); i++) {
		int n = snprintf(rcpts + used, sizeof(rcpts) - used, "%s<%.*s>", i ? "," : "",
				 (int)s->rcpts[i].addr_len, s->arena + s->rcpts[i].addr_off);

		if (n < 0 || (size_t)n >= sizeof(rcpts) - used) {
			snprintf(rcpts + used, sizeof(rcpts) - used, ",...");
			break;
		}
		used += (size_t)n;
	}
	rm_info(s->c->id, "%s: client=[%s] helo=%s tls=%s%s%s user=%s from=<%s> to=%s nrcpt=%u size=%" PRIu64,
		qid, s->client_ip, s->helo, tls_active(s) ? rm_tls_version(s->c) : "none", tls_active(s) ? "/" : "",
		tls_active(s) ? rm_tls_cipher(s->c) : "", s->user[0] ? s->user : "-", s->sender, rcpts, s->rcpt_count,
		s->dec.content_bytes);
}

static void commit_done(void *arg, uint64_t qid, int err)
{
	struct smtp_session *s = arg;
	char id[RM_QUEUE_ID_TEXT_BYTES];

	s->msg = NULL;
	s->commit_accepted = false;
	if (orphaned(s))
		return;
	rm_queue_id_format(qid, id);
	if (err == 0) {
		log_transaction(s, id);
		reply(s, 250, "2.0.0", "Ok: queued as %s", id);
		s->transactions++;
	} else {
		rm_warn(s->c->id, "%s: not queued: %s", id, strerror(-err));
		reply_status(s, &st_no_storage);
	}
	txn_reset(s);
	s->phase = PH_COMMAND;
	set_timer_command(s);
	if (s->eof)
		close_after_reply(s);
	else
		rm_conn_resume(s->c);
}

static void commit_room(void *arg);

static void commit(struct smtp_session *s)
{
	int rc = rm_spool_commit(s->msg, commit_done, s);

	s->phase = PH_WAIT_COMMIT;
	if (rc == 0) {
		s->spool_owes_callback = true;
		s->commit_accepted = true;
	} else if (rc == -EAGAIN) {
		s->spool_owes_callback = true;
		rm_spool_wait_room(s->msg, commit_room, s);
	} else {
		s->msg = NULL;
		rm_warn(s->c->id, "smtp: %s: commit refused: %s", s->client_ip, strerror(-rc));
		reply_status(s, &st_no_storage);
		txn_reset(s);
		s->phase = PH_COMMAND;
		set_timer_command(s);
	}
}

static void commit_room(void *arg)
{
	struct smtp_session *s = arg;

	if (orphaned(s))
		return;
	commit(s);
	if (s->phase == PH_COMMAND)
		rm_conn_resume(s->c);
}

/* The content (DATA's, or the LAST chunk's) has ended: answer or commit. */
static void content_end(struct smtp_session *s)
{
	const struct rm_smtp_status *st = rm_smtp_data_status(&s->dec);

	if (s->msg != NULL && st == NULL && s->dec.long_line)
		st = &st_long_line;
	if (s->msg == NULL || st != NULL) {
		if (st == NULL)
			st = s->content_reply != NULL ? s->content_reply
			   : s->content_err == -EFBIG ? &st_too_big : &st_no_storage;
		if (rm_smtp_data_status(&s->dec) != NULL)
			rm_warn(s->c->id, "smtp: %s: refused: bare CR or LF around a lone dot (SMTP smuggling)",
				s->client_ip);
		else if (st == &st_too_big)
			rm_warn(s->c->id, "smtp: %s: refused: message over limits.smtp_message_bytes_max", s->client_ip);
		reply_status(s, st);
		txn_reset(s);
		s->phase = PH_COMMAND;
		set_timer_command(s);
		if (st->code >= 500 && st != &st_too_big)
			client_error(s);
		return;
	}
	commit(s);
}

/* Content bytes of DATA or a BDAT chunk: decode, append, follow the end. */
static size_t take_content(struct smtp_session *s, const uint8_t *p, size_t len)
{
	struct rm_smtp_data_span spans[SMTP_DATA_SPANS];
	struct rm_smtp_data_out out = { .span = spans, .span_max = SMTP_DATA_SPANS, .bytes_max = SIZE_MAX };
	struct rm_smtp_data checkpoint = s->dec;
	uint64_t before = s->dec.content_bytes;
	size_t used = rm_smtp_data_feed(&s->dec, p, len, &out);
	size_t taken = 0;

	if (s->msg != NULL && s->dec.content_bytes > cfg_of(s)->limits.smtp_message_bytes_max) {
		/* Past the limit on what the client sends (our Received: aside): read on, then 552. */
		rm_spool_abort(s->msg);
		s->msg = NULL;
		s->content_err = -EFBIG;
	}
	if (s->msg != NULL) {
		for (size_t i = 0; i < out.span_count; i++) {
			ssize_t r = rm_spool_append(s->msg, spans[i].ptr, spans[i].len);

			if (r < 0) {
				/* -EFBIG: past the size limit.  Read on to the end, then 552. */
				rm_spool_abort(s->msg);
				s->msg = NULL;
				s->content_err = (int)r;
				taken = out.bytes;
				break;
			}
			taken += (size_t)r;
			if ((size_t)r < spans[i].len)
				break;
		}
		if (s->msg != NULL && taken < out.bytes) {
			/* The spool took only part: redo the call up to exactly what it took. */
			s->dec = checkpoint;
			out.bytes_max = taken;
			used = rm_smtp_data_feed(&s->dec, p, len, &out);
			s->phase = PH_WAIT_ROOM;
			s->spool_owes_callback = true;
			rm_spool_wait_room(s->msg, content_room, s);
			return used;
		}
	}
	/* The data timer is a deadline per line (Postfix's smtpd_per_record_deadline):
	 * a client that trickles one byte at a time cannot keep it alive. */
	if (s->dec.content_bytes - before > s->dec.line_bytes ||
	    s->dec.content_bytes - s->progress_at >= SMTP_DATA_PROGRESS_BYTES) {
		s->progress_at = s->dec.content_bytes;
		rm_conn_timer(s->c, cfg_of(s)->limits.smtp_data_timeout_ms);
	}
	if (s->phase == PH_DATA && rm_smtp_data_done(&s->dec)) {
		content_end(s);
	} else if (s->phase == PH_BDAT && rm_smtp_data_chunk_done(&s->dec)) {
		if (s->dec.last) {
			content_end(s);
		} else {
			if (s->msg != NULL || s->content_reply == NULL)
				reply(s, 250, "2.0.0", "%" PRIu64 " octets received", s->bdat_chunk);
			else {
				reply_status(s, s->content_reply);
				client_error(s);
			}
			s->phase = PH_COMMAND;
			set_timer_command(s);
		}
	}
	return used;
}

/* ---------------------------------------------------------- dispatching */

static bool verb_is_auth(const uint8_t *t, size_t len)
{
	return len >= 5 && strncasecmp((const char *)t, "AUTH ", 5) == 0;
}

/* One command line.  Returns true when the rest of the input must be dropped (STARTTLS). */
static bool command(struct smtp_session *s, const struct rm_line *line)
{
	const struct rm_config *cfg = cfg_of(s);
	struct rm_smtp_cmd_opts o;
	struct rm_smtp_cmd cmd;

	if (line->kind == RM_LINE_TOO_LONG ||
	    (line->text_len + 2 > cfg->limits.smtp_line_bytes_max && !verb_is_auth(line->text, line->text_len))) {
		reply_status(s, rm_smtp_cmd_status(RM_SMTP_E_LINE_TOO_LONG));
		client_error(s);
		return false;
	}
	set_timer_command(s);
	if (s->stopping) {
		reply(s, 421, "4.3.2", "%s Service shutting down, closing transmission channel", cfg->smtp.hostname);
		close_after_reply(s);
		return false;
	}
	rm_smtp_cmd_opts_default(&o);
	o.ext = extensions(s, cfg);
	o.smtputf8 = s->smtputf8;
	if (rm_smtp_cmd_parse(line->text, line->text_len, &o, &cmd) != RM_SMTP_OK) {
		if (cmd.verb == RM_SMTP_VERB_BDAT) {
			/* How many bytes follow is unknown: nothing after can be read in step. */
			reply_status(s, rm_smtp_cmd_status(cmd.err));
			close_after_reply(s);
			return false;
		}
		reply_status(s, rm_smtp_cmd_status(cmd.err));
		client_error(s);
		return false;
	}
	switch (cmd.verb) {
	case RM_SMTP_VERB_EHLO:
	case RM_SMTP_VERB_HELO:
		cmd_helo(s, &cmd);
		break;
	case RM_SMTP_VERB_MAIL:
		cmd_mail(s, &cmd);
		break;
	case RM_SMTP_VERB_RCPT:
		cmd_rcpt(s, &cmd);
		break;
	case RM_SMTP_VERB_DATA:
		cmd_data(s);
		break;
	case RM_SMTP_VERB_BDAT:
		cmd_bdat(s, &cmd);
		break;
	case RM_SMTP_VERB_RSET:
		cmd_rset(s);
		break;
	case RM_SMTP_VERB_NOOP:
		reply(s, 250, "2.0.0", "Ok");
		break;
	case RM_SMTP_VERB_QUIT:
		reply(s, 221, "2.0.0", "Bye");
		close_after_reply(s);
		break;
	case RM_SMTP_VERB_VRFY:
	case RM_SMTP_VERB_EXPN:
		cmd_vrfy(s, &cmd);
		break;
	case RM_SMTP_VERB_HELP:
		reply(s, 214, "2.0.0", "%s", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH; see RFC 5321");
		break;
	case RM_SMTP_VERB_STARTTLS:
		return cmd_starttls(s);
	case RM_SMTP_VERB_AUTH:
		cmd_auth(s, &cmd);
		break;
	default:
		reply_status(s, rm_smtp_cmd_status(RM_SMTP_E_UNKNOWN_VERB));
		client_error(s);
		break;
	}
	return false;
}

static size_t smtp_data(struct rm_conn *c, const struct rm_rx *rx)
{
	struct smtp_session *s = c->session;
	size_t used = 0;

	/* Each round consumes bytes or changes phase; the bound is generous. */
	for (size_t guard = 0; used < rx->len && guard < 2 * rx->len + 16; guard++) {
		const uint8_t *p = rx->data + used;
		size_t len = rx->len - used;

		if (c->state != RM_CONN_OPEN)
			return rx->len;
		switch (s->phase) {
		case PH_PROXY:
			used += take_proxy(s, p, len);
			break;
		case PH_GREET_WAIT:
			if (!s->pregreet_logged) {
				s->pregreet_logged = true;
				rm_warn(c->id, "smtp: %s: PREGREET: talked before the greeting", s->client_ip);
			}
			if (cfg_of(s)->smtp.pregreet == RM_SMTP_PREGREET_REJECT) {
				reply(s, 554, "5.5.1", "%s Error: talk before the greeting", cfg_of(s)->smtp.hostname);
				close_after_reply(s);
				return rx->len;
			}
			return used;	/* held until the greeting has gone */
		case PH_COMMAND:
		case PH_AUTH_LINE: {
			struct rm_line line;

			if (rm_conn_output_room(c) < SMTP_OUTPUT_RESERVE_BYTES)
				return used;	/* replies wait for output room: back-pressure */
			used += rm_lines_feed(&s->lines, p, len, &line);
			if (line.kind == RM_LINE_NONE)
				break;
			if (s->phase == PH_AUTH_LINE) {
				set_timer_command(s);	/* a deadline per line, as for commands */
				if (line.kind == RM_LINE_TOO_LONG) {
					s->sasl = SASL_NONE;
					s->phase = PH_COMMAND;
					reply_error(s, 500, "5.5.6", "Authentication exchange line is too long");
				} else {
					auth_line(s, line.text, line.text_len);
				}
				break;
			}
			if (command(s, &line))
				return rx->len;
			break;
		}
		case PH_DATA:
		case PH_BDAT:
			used += take_content(s, p, len);
			break;
		case PH_AUTH_VERIFY:
		case PH_AUTH_DELAY:
		case PH_WAIT_BEGIN:
		case PH_WAIT_ROOM:
		case PH_WAIT_COMMIT:
			return used;
		case PH_DONE:
			return rx->len;
		}
	}
	return used;
}

static void smtp_timeout(struct rm_conn *c)
{
	struct smtp_session *s = c->session;
	const struct rm_config *cfg = rm_worker_config(c->worker);

	switch (s->phase) {
	case PH_GREET_WAIT:
		greet(s);
		rm_conn_resume(c);
		return;
	case PH_AUTH_DELAY:
		reply_error(s, 535, "5.7.8", "Authentication credentials invalid");
		if (s->phase != PH_DONE) {
			s->phase = PH_COMMAND;
			set_timer_command(s);
			rm_conn_resume(c);
		}
		return;
	case PH_AUTH_VERIFY:
	case PH_WAIT_BEGIN:
	case PH_WAIT_ROOM:
	case PH_WAIT_COMMIT:
		/* The server is slow, not the client: wait on. */
		rm_conn_timer(c, cfg->limits.smtp_command_timeout_ms);
		return;
	case PH_PROXY:
		rm_warn(c->id, "smtp: no PROXY header within limits.smtp_proxy_timeout_ms: closed");
		s->phase = PH_DONE;
		rm_conn_abort(c, -ETIMEDOUT);
		return;
	case PH_DONE:
		rm_conn_abort(c, -ETIMEDOUT);
		return;
	default:
		break;
	}
	rm_info(c->id, "smtp: %s: timeout in %s", s->client_ip,
		s->phase == PH_DATA || s->phase == PH_BDAT ? "content" : "command");
	reply(s, 421, "4.4.2", "%s Error: timeout exceeded", cfg->smtp.hostname);
	close_after_reply(s);
}

static void smtp_eof(struct rm_conn *c)
{
	struct smtp_session *s = c->session;

	s->eof = true;
	if (s->phase != PH_WAIT_COMMIT && s->phase != PH_WAIT_BEGIN && s->phase != PH_WAIT_ROOM &&
	    s->phase != PH_AUTH_VERIFY && s->phase != PH_AUTH_DELAY)
		close_after_reply(s);
}

static void smtp_shutdown(struct rm_conn *c)
{
	struct smtp_session *s = c->session;

	s->stopping = true;
	if (s->phase == PH_COMMAND || s->phase == PH_GREET_WAIT || s->phase == PH_PROXY) {
		reply(s, 421, "4.3.2", "%s Service shutting down, closing transmission channel",
		      rm_worker_config(c->worker)->smtp.hostname);
		close_after_reply(s);
	}
}

static void smtp_close(struct rm_conn *c, int err)
{
	struct smtp_session *s = c->session;

	c->session = NULL;
	if (s == NULL)
		return;
	if (s->counted) {
		atomic_fetch_sub_explicit(&smtp_sessions, 1, memory_order_relaxed);
		if (smtp_anvil != NULL)
			rm_anvil_conn_leave(smtp_anvil, &s->client.sa);
	}
	rm_debug(c->id, "smtp: disconnect from [%s] transactions=%u errors=%u", s->client_ip, s->transactions,
		 s->errors);
	s->c = NULL;
	/* A message being received is abandoned (never acknowledged); one whose
	 * commit is under way finishes, and its callback frees the session. */
	if (s->msg != NULL && !s->commit_accepted) {
		rm_spool_abort(s->msg);	/* also takes it off the room wait list */
		s->msg = NULL;
		s->spool_owes_callback = false;
	}
	/* Still owed (a begin-room wait, a commit, a password check): that callback frees it. */
	if (!s->spool_owes_callback && s->auth_job == NULL)
		session_free(s);
}

const struct rm_session_ops rm_smtp_ops = {
	.protocol = "smtp",
	.on_open = smtp_open,
	.on_data = smtp_data,
	.on_timeout = smtp_timeout,
	.on_eof = smtp_eof,
	.on_shutdown = smtp_shutdown,
	.on_close = smtp_close,
};
