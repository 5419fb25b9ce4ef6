/*
 * NAME
 *	relay - test protocol "relay": one session, two connections
 * DESCRIPTION
 *	Each accepted connection makes an outbound connection to the listener's
 *	backend (from the client's worker, through the engine) and relays bytes
 *	both ways.  Received buffers move to the other side's output by reference
 *	(rm_conn_send_rx): no copy, the buffer returns to the ring when the other
 *	side's send completes.  It is the engine's proof for the IMAP/POP3 proxy:
 *	connect with a deadline, a session owning two connections, back-pressure
 *	across them (a side whose peer is slow stops reading the other side).
 *	- client bytes that arrive before the backend is connected are held;
 *	- a failed or timed-out backend connect closes the client;
 *	- EOF from one side is passed on as a half-close (FIN after the queued
 *	  output) and the other direction keeps flowing; when both sides have sent
 *	  EOF, or one side closes, both are closed after their output is sent.
 */
#ifndef RM_RELAY_H
#define RM_RELAY_H

#include "core/engine.h"

extern const struct rm_session_ops rm_relay_client_ops;

#endif
