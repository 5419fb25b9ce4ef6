/*
 * NAME
 *	tls - wolfSSL under the engine: implicit TLS, STARTTLS, and the client side
 * SUMMARY
 *	#include "tls/tls.h"
 *
 *	int rm_tls_setup(const struct rm_config *cfg, char *err, size_t err_size);
 *	int rm_tls_connect(struct rm_conn *c, const struct rm_tls_client *o);
 *	int rm_tls_attach_implicit(struct rm_conn *c, const struct rm_listener_config *l);
 *	int rm_tls_starttls_check(const struct rm_conn *c);
 *	int rm_tls_starttls(struct rm_conn *c);
 *	bool rm_tls_active(const struct rm_conn *c);
 *	const char *rm_tls_version(const struct rm_conn *c);
 *	const char *rm_tls_cipher(const struct rm_conn *c);
 * DESCRIPTION
 *	wolfSSL never sees a socket: it runs over the connection through custom
 *	I/O callbacks.  Received ciphertext comes from the engine (the transport's
 *	on_rx: the bytes are handed to wolfSSL's read callback where they lie),
 *	decrypted records go to the session's on_data from a per-worker buffer,
 *	and every record wolfSSL writes is queued with rm_conn_write_raw.  The
 *	handshake advances from completions; WANT_READ just means "wait for the
 *	next bytes".  One copy at wolfSSL's boundary each way, as DESIGN.md says.
 *
 *	rm_tls_setup builds one server context per listener with tls =
 *	"starttls" or "implicit": the certificate chain and key (RSA or ECDSA,
 *	PEM), TLS 1.2 minimum (tls_min_version = "1.3" for 1.3 only), and an
 *	explicit cipher list of ECDHE key exchange with AEAD ciphers only
 *	(Debian's wolfSSL compiles in RC4, NULL and anonymous suites: none of
 *	them is ever offered; tls_ciphers may narrow the list, and a list that
 *	names anything but ECDHE+AEAD is refused).  Session tickets (TLS 1.2
 *	and 1.3) and the session cache give resumption; ticket keys are the
 *	process's own (ChaCha20-Poly1305), made new every
 *	limits.tls_ticket_key_rotate_ms by rm_tls_tick from the main thread, and
 *	a ticket is honoured under the current and the previous key only.  It runs before the
 *	workers start and for ringmaild -t; errors name the listener and file.
 *
 *	rm_tls_attach_implicit is the daemon's transport_attach for implicit-TLS
 *	listeners: the session's on_open runs once the handshake is done.
 *	rm_tls_starttls is for the sessions: call it from on_data right after
 *	queuing the reply that says "go ahead" (220 / OK / +OK), and return all
 *	of rx->len from that on_data.  Every byte received and not yet offered
 *	is dropped first (the CVE-2011-0411 class: commands pipelined after
 *	STARTTLS must never be read as if they came over TLS); the reply goes out
 *	in clear, everything after it encrypted.  Resetting the protocol state
 *	(RFC 3207: forget EHLO, MAIL, ...) is the session's part.  Returns 0, or
 *	-EALREADY (TLS already active), -ENOPROTOOPT (no TLS on this listener),
 *	-EBUSY (limits.tls_handshakes_max handshakes in progress on this worker).
 *	rm_tls_starttls_check says the same without starting anything, so that
 *	a session can answer "not now" (454) instead of its go-ahead.
 *
 *	rm_tls_reload (SIGHUP, main thread) loads every TLS listener's files
 *	again into a new table and publishes it for new connections; a listener
 *	whose new files do not load keeps the contexts it has, and the log says
 *	why.  Connections keep the context they started with.  The old table is
 *	returned, to rm_tls_retire once every worker has taken the reload.
 *
 *	rm_tls_connect starts TLS on an outbound connection (the relay's backend
 *	side now; the SMTP client and the proxy's backends later): SNI sent,
 *	and under policy verify the chain checked against the CA file (one that
 *	rm_tls_setup saw in the configuration) and the host name matched
 *	(RFC 6125); done reports the outcome, and the log says what was verified.
 *	Falling back to plaintext (policy may against a server without TLS) is
 *	the protocol's decision, before it calls this.
 *
 *	A handshake must finish within limits.tls_handshake_timeout_ms; one
 *	that fails is logged with wolfSSL's reason and the connection closed.
 *	Each completed handshake logs one line: version, cipher, SNI, resumed
 *	or not, peer address.
 * DIAGNOSTICS
 *	rm_tls_setup: -1 with "listener 'NAME': tls_cert FILE: reason" in err.
 */
#ifndef RM_TLS_H
#define RM_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/engine.h"

int rm_tls_setup(const struct rm_config *cfg, char *err, size_t err_size);

/* Outbound: the result of the handshake (0, -EKEYREJECTED: verification failed,
 * -EPROTO, -ETIMEDOUT); on an error the connection is closing. */
typedef void (*rm_tls_done_fn)(struct rm_conn *c, int err, void *arg);
struct rm_tls_client {
	enum rm_tls_policy policy;	/* may / encrypt: no verification; verify: chain and name */
	const char *ca_file;		/* verify: "" or NULL = the system bundle */
	const char *name;		/* sent as SNI; verify: the name the certificate must carry */
	rm_tls_done_fn done;
	void *arg;
};
int rm_tls_connect(struct rm_conn *c, const struct rm_tls_client *o);
void rm_tls_tick(uint64_t now_ms, uint32_t rotate_ms);
void *rm_tls_reload(const struct rm_config *cfg);
void rm_tls_retire(void *table);
void rm_tls_shutdown(void);	/* after the workers are gone */
int rm_tls_attach_implicit(struct rm_conn *c, const struct rm_listener_config *l);
int rm_tls_starttls_check(const struct rm_conn *c);
int rm_tls_starttls(struct rm_conn *c);
bool rm_tls_active(const struct rm_conn *c);
const char *rm_tls_version(const struct rm_conn *c);
const char *rm_tls_cipher(const struct rm_conn *c);

#endif
