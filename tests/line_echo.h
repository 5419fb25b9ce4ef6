/*
 * NAME
 *	line_echo - test protocol "echo": a line protocol for exercising the engine
 * DESCRIPTION
 *	Not a mail protocol: the engine's integration tests (and a health check
 *	for operators) drive it.  Behaviour, which tests/integration relies on:
 *	- on connect the server sends "+OK echo ready\r\n";
 *	- every line (ended by LF, optionally CR LF) is sent back exactly as it
 *	  came, terminator included; a line lying wholly in one receive buffer is
 *	  sent from that buffer (zero copy), others from a copy;
 *	- a line longer than limits.line_length_max gets "-ERR line too long\r\n"
 *	  once, at its end, and the session goes on with the next line;
 *	- the line "QUIT" gets "+OK bye\r\n", then the server closes;
 *	- the line "STARTTLS" on a listener with tls = "starttls" gets
 *	  "+OK begin TLS\r\n" in clear, then a TLS handshake (tls/tls.h); whatever
 *	  else was received before it is dropped; elsewhere "-ERR TLS not available";
 *	- on a listener with tls = "implicit" all of it runs inside TLS;
 *	- no input for the listener's idle_timeout_ms (else limits.idle_timeout_ms)
 *	  gets "-ERR idle timeout\r\n" and a close;
 *	- when the peer stops sending (EOF), what is queued is sent, then close.
 *	A partial line is held in a buffer allocated only while one is pending, so
 *	an idle session costs its small struct and nothing else.
 */
#ifndef RM_LINE_ECHO_H
#define RM_LINE_ECHO_H

#include "core/engine.h"

extern const struct rm_session_ops rm_echo_ops;

#endif
