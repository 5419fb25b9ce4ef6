/*
 * NAME
 *	control - the daemon's control socket (ringmailctl talks to it)
 * DESCRIPTION
 *	A Unix socket (control_socket in the configuration, mode 0660, group of
 *	the daemon's user) served by worker 0.  Requests are single lines; each
 *	reply is zero or more lines followed by a line holding only ".".  One
 *	request is answered at a time, in order; a request sent before the
 *	previous reply ended waits.  A peer that closes its sending side after
 *	its requests still gets the replies, then the connection closes.
 *	  stats            counters, "name value" per line, totals then per worker
 *	  stats json       the same as one JSON object on one line
 *	  ping             "pong"
 *	  queue            every queued message, sorted by queue id, as a block
 *	                   of lines like postqueue -p:
 *	                     ID  age 2m05s  1234 bytes  from <sender>[  HELD]
 *	                         pending    rcpt@example.org
 *	                         next attempt now|in 4m10s|when released, attempts N
 *	                         last error: TEXT          (when there is one)
 *	                     (blank line)
 *	                   then "-- N messages, B bytes", or "queue is empty";
 *	                   control bytes in addresses and errors as \xNN, a
 *	                   backslash as \\
 *	  queue json       a JSON array, one object a line, [] when empty:
 *	                   {"id","worker","age_s","size","sender",
 *	                    "recipients":[{"address","state"}],
 *	                    "next_attempt_unix_ms","attempts","last_error","hold"}
 *	                   state is pending, delivered or bounced;
 *	                   next_attempt_unix_ms 0 means due now; strings are
 *	                   escaped (quote, backslash, control bytes as \u00XX;
 *	                   bytes that are not UTF-8 as \u00XX, read as Latin-1)
 *	  flush [DOMAIN]   make every deferred message (with a pending recipient
 *	                   in DOMAIN) due now: "flushed N"
 *	  delete ID        remove a message from the queue (a DELETED record:
 *	                   it stays deleted after a restart)
 *	  hold ID          keep a message from delivery until released
 *	  release ID       undo hold
 *	delete, hold and release answer "ok", "error: no such message", or the
 *	spool's error.  Any error is one line "error: ..." and the connection
 *	stays usable.
 *
 *	The queue belongs to the workers (each its own spool): queue and flush
 *	go to every worker, an ID only to the worker that owns it, through the
 *	workers' mailboxes; replies of any size are streamed within
 *	limits.output_bytes_max.  One worker's listing is cut at 64 MiB with a
 *	marker ("-- truncated: ..." line; a last JSON element
 *	{"truncated":true,"worker":N,"reason":...}).
 */
#ifndef RM_CONTROL_H
#define RM_CONTROL_H

#include "core/engine.h"

#define RM_CONTROL_LINE_MAX 512

extern const struct rm_session_ops rm_control_ops;

#endif
