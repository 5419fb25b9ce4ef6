/*
 * NAME
 *	spool_sink - test protocol "spooltest": messages straight into the spool
 * DESCRIPTION
 *	Not a mail protocol: it drives the spool's receiving API from real
 *	connections until the SMTP server does (the crash test and the
 *	ringmailctl tests use it).  Behaviour, which tests/integration relies on:
 *	- on connect: "220 spooltest ready\r\n";
 *	- "MSG <bytes> <recipient> [<sender>]\r\n" then exactly <bytes> raw bytes:
 *	  the message is begun, its content streamed into the spool as it
 *	  arrives, and committed; only once the commit is durable the reply is
 *	  "250 <queue id> <xxh3-64 of the content, 16 hex digits>\r\n";
 *	  a spool that cannot take it answers "452 4.3.1 <reason>\r\n" (after
 *	  the <bytes> are read, so the session stays in step);
 *	- "DELIVER <queue id>\r\n": marks every recipient delivered: "250 ok";
 *	  "550 no such message" when it is not queued on this worker;
 *	- "QUIT\r\n": "221 bye\r\n", then close; anything else: "500 ...".
 *	Input after a MSG's content waits (is held) until that MSG is answered.
 */
#ifndef RM_SPOOL_SINK_H
#define RM_SPOOL_SINK_H

#include "core/engine.h"

extern const struct rm_session_ops rm_spool_sink_ops;

#endif
