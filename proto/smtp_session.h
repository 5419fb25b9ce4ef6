/*
 * NAME
 *	smtp_session - the SMTP server session: MX on 25, submission on 587 and 465
 * SUMMARY
 *	#include "proto/smtp_session.h"
 *
 *	extern const struct rm_session_ops rm_smtp_ops;
 *	int rm_smtp_global_init(void);
 *	void rm_smtp_global_free(void);
 * DESCRIPTION
 *	The session drives the SMTP codecs of proto/ (smtp_cmd, smtp_addr,
 *	smtp_data, smtp_reply, sasl, proxy_proto) on the engine, one
 *	connection each, on the connection's worker.  It is a state machine
 *	with one phase at a time: the PROXY header, the held-back greeting,
 *	commands, DATA content, a BDAT chunk, a SASL response, or waiting (for
 *	the spool to have room, for a commit to be durable, for the password
 *	check, for the delay before a failed AUTH's 535).  While it waits,
 *	on_data consumes nothing, so the engine holds the client's input
 *	and the client is paced by what it waits for.
 *
 *	PIPELINING (RFC 2920): every command of a received batch is taken in
 *	order, and the replies of one batch go out in one write (the engine
 *	sends what a callback queued once the callback returns).  Commands
 *	pipelined after DATA's end or after a BDAT LAST wait, unread, until
 *	the commit is durable and its 250 is queued: replies stay in order.
 *
 *	Policy (struct rm_smtp_config, limits.smtp_*): a recipient in a relay
 *	domain is accepted from anyone (checked against recipient_map when
 *	one is set); any other only from an authenticated session or a client
 *	in mynetworks, else 554 5.7.1 Relay access denied; a relay domain
 *	recipient whose local part holds a routing character (% ! or a quoted
 *	@) from such an outside client is refused the same way.  Submission
 *	listeners offer AUTH PLAIN and LOGIN (only over TLS unless
 *	smtp.auth_plaintext) and refuse MAIL before it; passwords are checked
 *	off the worker thread (core/authpool.h); failures are delayed and
 *	counted per client address (core/anvil.h), as are connections.
 *
 *	The end of data: a Received: header goes first into the spool, then
 *	the content as decoded; 250 2.0.0 with the queue id is sent only from
 *	the spool's commit callback, once the fdatasync that covers the
 *	message completed (452 4.3.1 when it failed).
 *
 *	rm_smtp_global_init sets up what sessions of all workers share (the
 *	per-client counters); call it once before the workers start.
 * DIAGNOSTICS
 *	One log line per transaction (queue id, client, HELO, TLS, user,
 *	sender, recipients, size), one per refused recipient or command that
 *	matters to an operator (relay denied, AUTH failed, limits).
 */
#ifndef RM_SMTP_SESSION_H
#define RM_SMTP_SESSION_H

#include "core/engine.h"

extern const struct rm_session_ops rm_smtp_ops;

int rm_smtp_global_init(void);
void rm_smtp_global_free(void);

#endif
