/*
 * NAME
 *	smtp_out - one outbound SMTP connection: the client session of delivery
 * SUMMARY
 *	#include "proto/smtp_out.h"
 *
 *	struct rm_smtp_out *rm_smtp_out_open(struct rm_worker *w,
 *			const struct rm_smtp_out_params *p,
 *			const struct rm_smtp_out_ops *ops, void *arg, int *err);
 *	int rm_smtp_out_start(struct rm_smtp_out *o, struct rm_smtp_out_job *job);
 *	void rm_smtp_out_quit(struct rm_smtp_out *o);
 *	const char *rm_smtp_out_tls(const struct rm_smtp_out *o);
 *	const char *rm_smtp_out_status(const struct rm_smtp_out *o);
 *	bool rm_smtp_out_tls_failed(const struct rm_smtp_out *o);
 *	bool rm_smtp_out_job_unsent(const struct rm_smtp_out *o);
 * DESCRIPTION
 *	Drives proto/smtp_client (reply parser, command writers, dot-stuffing)
 *	on an outbound engine connection, for core/delivery.c.  The connection
 *	is opened to one address; then: the greeting, EHLO (HELO when EHLO is
 *	refused with 5xx), STARTTLS by p->tls (may: when offered; encrypt and
 *	verify: required, the TLS layer checks the certificate for verify), EHLO
 *	again over TLS, AUTH PLAIN when p->auth_user is set (a smarthost: only
 *	over TLS, and only if offered), and ops->ready: the connection is idle.
 *
 *	rm_smtp_out_start runs one transaction (a job: one queued message and
 *	some of its recipients): MAIL FROM with the parameters the server
 *	offered (SIZE, BODY, SMTPUTF8, RET/ENVID), RCPT TO for each recipient
 *	(NOTIFY/ORCPT with DSN), then DATA with the content streamed from the
 *	spool and dot-stuffed on the fly, or BDAT with CHUNKING.  With
 *	PIPELINING, MAIL, the RCPTs and DATA go in one write and the replies
 *	are matched in order (RFC 2920).  The content is read from the spool
 *	(rm_spool_read) a buffer at a time as output room allows, so a large
 *	message is never in memory whole.  What the server said to each
 *	recipient lands in job->res (the RCPT reply if it refused, otherwise
 *	the reply to the end of data); ops->job_done then, and the connection
 *	is idle again (RSET first when the transaction did not complete).
 *	Before sending, rm_smtp_mail_check refuses what the server cannot take:
 *	a message larger than its SIZE (552 5.3.4), one that needs SMTPUTF8
 *	from a server without it (553 5.6.7, RFC 6531 3.4), as permanent
 *	results that never reach the wire.
 *
 *	ops->closed is the last call: the connection is gone (QUIT answered, a
 *	timeout, the server closed, a protocol error, a refused greeting, TLS
 *	that failed or was required and missing).  job is the transaction that
 *	was under way (its results are not set: the caller decides, usually
 *	"try the next host" or defer), why says what happened (a server reply
 *	as "host[ip] said: 421 ..." or ours), and before_ready says the
 *	connection never got as far as ready (connect, greeting, EHLO, TLS,
 *	AUTH): the next MX host should be tried.  o is freed after closed;
 *	during it, rm_smtp_out_status gives the end's RFC 3463 code, always of
 *	class 4 (4.4.1 no answer: connect failed; 4.4.2 bad connection: lost,
 *	closed, timed out; 4.7.4 TLS or AUTH required and not offered; 4.7.5
 *	the TLS handshake failed; 4.7.0 AUTH refused; a refused greeting or
 *	EHLO: the server's code in class 4, else 4.4.0), and
 *	rm_smtp_out_tls_failed says the TLS handshake failed under "may", so
 *	the same host may be tried again in plaintext (Postfix does the same).
 *
 *	A job started on a connection that was idle (not one started from
 *	job_done or ready right after the previous job) begins with RSET, as
 *	Postfix checks a cached session: pipelined in MAIL's write when
 *	PIPELINING is offered, else alone first.  If the connection fails
 *	before RSET's 2xx, closed is called with that job and
 *	rm_smtp_out_job_unsent true: nothing of it was sent, and it may go on
 *	another connection at once.
 *
 *	Timeouts (RFC 5321 4.5.3.2): p->timeout_ms for each reply but the end
 *	of data's, p->data_timeout_ms for that one.  A connection lives on
 *	between jobs until rm_smtp_out_quit.
 * DIAGNOSTICS
 *	rm_smtp_out_open: NULL with *err (-errno of the connect attempt).
 *	rm_smtp_out_start: -EBUSY when the connection is not idle.
 */
#ifndef RM_SMTP_OUT_H
#define RM_SMTP_OUT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/engine.h"
#include "core/spool.h"

#define RM_SMTP_OUT_TEXT_MAX 400	/* a server reply kept for logs and bounces */

struct rm_smtp_out;

struct rm_smtp_out_result {
	uint16_t code;			/* 0: no reply (not sent, or the connection went) */
	char enhanced[12];
	char text[RM_SMTP_OUT_TEXT_MAX];	/* "host[ip] said: 550 5.1.1 ..." or our reason */
};

struct rm_smtp_out_job {
	struct rm_spool *sp;
	struct rm_queue_entry *e;	/* in delivery: stays until the job is done */
	uint32_t count;
	uint32_t *idx;			/* recipients of e, count of them */
	struct rm_smtp_out_result *res;	/* count of them, filled by the session */
	void *arg;			/* the caller's */
};

struct rm_smtp_out_params {
	union rm_sockaddr addr;
	socklen_t addr_len;
	const char *host;		/* the server's name: logs, SNI, verify */
	const char *helo;		/* our name for EHLO */
	enum rm_tls_policy tls;
	const char *tls_ca;		/* verify: "" = the system bundle */
	const char *auth_user;		/* NULL: no AUTH */
	const char *auth_pass;
	uint32_t timeout_ms;
	uint32_t data_timeout_ms;
};

struct rm_smtp_out_ops {
	void (*ready)(struct rm_smtp_out *o, void *arg);
	void (*job_done)(struct rm_smtp_out *o, struct rm_smtp_out_job *job, void *arg);
	void (*closed)(struct rm_smtp_out *o, struct rm_smtp_out_job *job, const char *why, bool before_ready,
		       void *arg);
};

struct rm_smtp_out *rm_smtp_out_open(struct rm_worker *w, const struct rm_smtp_out_params *p,
				     const struct rm_smtp_out_ops *ops, void *arg, int *err);
int rm_smtp_out_start(struct rm_smtp_out *o, struct rm_smtp_out_job *job);
void rm_smtp_out_quit(struct rm_smtp_out *o);
const char *rm_smtp_out_tls(const struct rm_smtp_out *o);
const char *rm_smtp_out_peer(const struct rm_smtp_out *o);
const char *rm_smtp_out_status(const struct rm_smtp_out *o);
bool rm_smtp_out_tls_failed(const struct rm_smtp_out *o);
bool rm_smtp_out_job_unsent(const struct rm_smtp_out *o);

#endif
