/*
 * NAME
 *	tls - wolfSSL under the engine (see tls.h)
 * DESCRIPTION
 *	Per connection, struct tls_conn: the WOLFSSL object, the received bytes
 *	being handed to wolfSSL (in, in_len, in_used: wolfSSL's read callback
 *	copies from there, and WANT_READ when they are used up), and plaintext
 *	the session has not taken yet (hold; allocated only then).  Decrypted
 *	records are produced into a per-worker buffer of one maximal record, so
 *	an idle TLS connection holds wolfSSL's own state and nothing of ours
 *	but this struct.
 *
 *	SNI: a server connection's WOLFSSL object is made once the first record
 *	(the ClientHello) is in: wolfSSL_SNI_GetFromBuffer reads the name from
 *	it, and the object is made from the context of that name's certificate,
 *	so that wolfSSL needs neither an SNI callback nor wolfSSL_set_SSL_CTX
 *	(both exist only with its OpenSSL compatibility layer, which costs some
 *	4 KB per connection: scripts/build-wolfssl.sh builds without it).  A
 *	first record split over several receives is gathered in hello until it
 *	is whole; a ClientHello spread over several records gets the default
 *	certificate.  The name is kept in name[] for the log.
 *
 *	Back-pressure: while hold has bytes, on_rx takes no more ciphertext
 *	(the engine holds it and stops receiving) and the engine is told
 *	(rm_conn_transport_held) so that it offers hold again (on_resume) when
 *	the session's output drains or it resumes.
 *
 *	Output: a session write is refused with -ENOBUFS unless the raw output
 *	has room for it plus record overhead, so a wolfSSL_write never stops
 *	half way for lack of room; the engine then reports on_writable as for
 *	plain output.
 * DIAGNOSTICS
 *	Handshake and record errors are logged with wolfSSL's reason and close
 *	the connection.  Broken invariants panic.
 */
#include "tls/tls.h"

#include "core/maps.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pthread.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <sys/random.h>

#include "core/log.h"

#define TLS_RECORD_PLAIN_MAX 16384	/* RFC 8446 5.1: a record's plaintext */
#define TLS_RECORD_OVERHEAD 64		/* header, explicit nonce, tag, padding: at most this per record */
#define TLS_READS_PER_RX 4096		/* bound: a 64 KiB receive buffer holds at most ~3000 records */
#define TLS_REASON_BYTES 80
#define TLS_RECORD_HEADER 5
#define TLS_HELLO_MAX (TLS_RECORD_HEADER + TLS_RECORD_PLAIN_MAX)	/* the first record, whole */

/* ECDHE key exchange with AEAD ciphers only; TLS 1.3 suites are all AEAD. */
static const char tls_default_ciphers[] =
	"TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct tls_conn {
	WOLFSSL *ssl;
	struct tls_server *srv;		/* referenced until the handshake is over */
	struct rm_conn *c;
	const uint8_t *in;		/* received bytes being offered to wolfSSL */
	size_t in_len, in_used;
	uint8_t *hold;			/* plaintext the session has not taken */
	size_t hold_len, hold_off;
	bool handshake_done;
	bool open_deferred;		/* implicit TLS: the session opens after the handshake */
	bool counted;			/* in the worker's handshakes-in-progress count */
	bool client;			/* we connected out: wolfSSL_connect, and done when over */
	bool verify;			/* client: chain and name were checked */
	rm_tls_done_fn done;
	void *done_arg;
	uint8_t *hello;			/* server: the first record, while it comes in pieces */
	size_t hello_len;
	char name[128];			/* client: the name sent (SNI) and verified; server: the SNI received */
};

/*
 * Client contexts: one that verifies nothing (policies may and encrypt), and
 * one per CA file that verifies (policy verify; "" is the system bundle).
 * Built with the server contexts, from the listeners that connect out.
 */
#define TLS_CLIENT_CAS_MAX (RM_LISTENERS_MAX + 1)
#define TLS_SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

struct client_ctx {
	char ca[256];
	WOLFSSL_CTX *ctx;
};

static WOLFSSL_CTX *client_plain;
static struct client_ctx client_verify[TLS_CLIENT_CAS_MAX];
static uint32_t client_verify_count;

/*
 * Per listener: the default context, and one per SNI entry (same settings,
 * its own certificate).  Counted: the table holds one reference and every
 * connection one until its WOLFSSL object is made (the ClientHello's name
 * picks the context), so a reload can retire a table while old handshakes
 * start; wolfSSL counts its own references to each context for the
 * connections that keep using it.
 */
struct tls_server {
	_Atomic uint32_t refs;
	WOLFSSL_CTX *ctx;
	uint32_t sni_count;
	char sni_name[RM_TLS_SNI_MAX][128];
	WOLFSSL_CTX *sni_ctx[RM_TLS_SNI_MAX];
};

/* The contexts by listener index: replaced whole on reload (rm_tls_reload). */
struct tls_table {
	struct tls_server *servers[RM_LISTENERS_MAX];
};

static _Atomic(struct tls_table *) tls_current;
static uint32_t handshakes[RM_WORKERS_MAX];	/* in progress, per worker (its own slot only) */
static __thread uint8_t plain[TLS_RECORD_PLAIN_MAX];

static const struct rm_transport_ops tls_ops;

/*
 * Session ticket keys, one set for the whole process so that a client
 * resumes on whichever worker its next connection lands.  The main thread
 * makes a new key every limits.tls_ticket_key_rotate_ms (rm_tls_tick) in the
 * slot after the current one, then publishes it; workers encrypt with the
 * current key and decrypt with the current or the previous one, so a ticket
 * lives at most two periods (forward secrecy: an old key is overwritten).
 * Three slots: the one being written is never one a worker may read.
 */
#define TICKET_KEYS 3
#define TICKET_PLAIN_MAX 4096		/* a ticket's state; wolfSSL's are far smaller */

struct ticket_key {
	uint8_t name[WOLFSSL_TICKET_NAME_SZ];
	uint8_t key[CHACHA20_POLY1305_AEAD_KEYSIZE];
	uint64_t created_ms;
};

static struct ticket_key ticket_keys[TICKET_KEYS];
static _Atomic uint32_t ticket_current;
static _Atomic uint64_t ticket_rotations;
static __thread uint8_t ticket_scratch[TICKET_PLAIN_MAX];

static int random_bytes(void *buf, size_t len)
{
	uint8_t *p = buf;

	for (size_t got = 0, guard = 0; got < len && guard < 16; guard++) {
		ssize_t n = getrandom(p + got, len - got, 0);

		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0)
			got += (size_t)n;
		if (guard == 15 && got < len)
			return -EIO;
	}
	return 0;
}

static int ticket_key_make(struct ticket_key *k, uint64_t now_ms)
{
	if (random_bytes(k->name, sizeof(k->name)) < 0 || random_bytes(k->key, sizeof(k->key)) < 0)
		return -1;
	k->created_ms = now_ms;
	return 0;
}

void rm_tls_tick(uint64_t now_ms, uint32_t rotate_ms)
{
	uint32_t cur = atomic_load_explicit(&ticket_current, memory_order_acquire);
	uint32_t next = (cur + 1) % TICKET_KEYS;

	if (now_ms - ticket_keys[cur].created_ms < rotate_ms)
		return;
	if (ticket_key_make(&ticket_keys[next], now_ms) < 0) {
		rm_warn(0, "TLS: no randomness for a new ticket key; keeping the current one");
		return;
	}
	atomic_store_explicit(&ticket_current, next, memory_order_release);
	atomic_fetch_add_explicit(&ticket_rotations, 1, memory_order_relaxed);
	rm_info(0, "TLS: session ticket key rotated");
}

/* wolfSSL's ticket callback: ChaCha20-Poly1305 with the key name as associated data. */
static int ticket_cb(WOLFSSL *ssl, unsigned char name[WOLFSSL_TICKET_NAME_SZ],
		     unsigned char iv[WOLFSSL_TICKET_IV_SZ], unsigned char mac[WOLFSSL_TICKET_MAC_SZ],
		     int enc, unsigned char *ticket, int in_len, int *out_len, void *arg)
{
	uint32_t cur = atomic_load_explicit(&ticket_current, memory_order_acquire);
	const struct ticket_key *k = NULL;

	if (in_len <= 0 || in_len > TICKET_PLAIN_MAX)
		return WOLFSSL_TICKET_RET_REJECT;
	if (enc) {
		k = &ticket_keys[cur];
		memcpy(name, k->name, WOLFSSL_TICKET_NAME_SZ);
		if (random_bytes(iv, WOLFSSL_TICKET_IV_SZ) < 0)
			return WOLFSSL_TICKET_RET_FATAL;
		memset(mac, 0, WOLFSSL_TICKET_MAC_SZ);
		if (wc_ChaCha20Poly1305_Encrypt(k->key, iv, name, WOLFSSL_TICKET_NAME_SZ, ticket, (word32)in_len,
						ticket_scratch, mac) != 0)
			return WOLFSSL_TICKET_RET_FATAL;
		memcpy(ticket, ticket_scratch, (size_t)in_len);
		*out_len = in_len;
		return WOLFSSL_TICKET_RET_OK;
	}
	bool previous = false;

	for (uint32_t back = 0; back < 2 && k == NULL; back++) {
		const struct ticket_key *c = &ticket_keys[(cur + TICKET_KEYS - back) % TICKET_KEYS];

		if (c->created_ms != 0 && memcmp(c->name, name, WOLFSSL_TICKET_NAME_SZ) == 0) {
			k = c;
			previous = back > 0;
		}
	}
	if (k == NULL)
		return WOLFSSL_TICKET_RET_REJECT;	/* older than two periods, or never ours */
	if (wc_ChaCha20Poly1305_Decrypt(k->key, iv, name, WOLFSSL_TICKET_NAME_SZ, ticket, (word32)in_len, mac,
					ticket_scratch) != 0)
		return WOLFSSL_TICKET_RET_REJECT;
	memcpy(ticket, ticket_scratch, (size_t)in_len);
	*out_len = in_len;
	/* A ticket of the previous key is good once more: give the client a fresh one. */
	return previous ? WOLFSSL_TICKET_RET_CREATE : WOLFSSL_TICKET_RET_OK;
}

/*
 * Debian's wolfSSL keeps a per-thread cache of ECC fixed points (FP_ECC)
 * that only wc_ecc_fp_free, on that thread, gives back: a thread key whose
 * destructor runs it as each worker ends.  A wolfSSL without FP_ECC
 * (scripts/build-wolfssl.sh) has no such cache, nor the function.
 */
#ifdef FP_ECC
static pthread_key_t fp_cache_key;
static pthread_once_t fp_cache_once = PTHREAD_ONCE_INIT;

static void fp_cache_free(void *unused)
{
	wc_ecc_fp_free();
}

static void fp_cache_key_make(void)
{
	if (pthread_key_create(&fp_cache_key, fp_cache_free) != 0)
		rm_panic("tls: pthread_key_create failed");
}

static void fp_cache_track(void)
{
	static __thread bool tracked;

	if (tracked)
		return;
	tracked = true;
	pthread_once(&fp_cache_once, fp_cache_key_make);
	pthread_setspecific(fp_cache_key, &tracked);	/* any non-NULL value: the destructor runs */
}
#else
static void fp_cache_track(void)
{
}
#endif

static const char *reason(WOLFSSL *ssl, int ret, char buf[TLS_REASON_BYTES])
{
	int err = wolfSSL_get_error(ssl, ret);

	wolfSSL_ERR_error_string_n((unsigned long)err, buf, TLS_REASON_BYTES);
	return buf;
}

/* ---- set-up -------------------------------------------------------------------------- */

/* Every name of list must be one of tls_default_ciphers. */
static bool ciphers_allowed(const char *list, char *bad, size_t bad_size)
{
	const char *p = list;

	for (size_t guard = 0; *p != '\0' && guard < 256; guard++) {
		const char *end = strchr(p, ':');
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
		bool found = false;

		for (const char *q = tls_default_ciphers; *q != '\0' && !found;) {
			const char *qe = strchr(q, ':');
			size_t qn = qe != NULL ? (size_t)(qe - q) : strlen(q);

			found = qn == n && memcmp(p, q, n) == 0;
			q += qn + (qe != NULL);
		}
		if (!found) {
			snprintf(bad, bad_size, "%.*s", (int)n, p);
			return false;
		}
		p += n + (end != NULL);
	}
	return true;
}

/* "*.example.com" matches "mx.example.com", not "example.com" nor "a.b.example.com". */
static bool sni_matches(const char *pattern, const char *name)
{
	if (pattern[0] == '*') {
		const char *dot = strchr(name, '.');

		return dot != NULL && dot != name && strcasecmp(dot + 1, pattern + 2) == 0;
	}
	return strcasecmp(pattern, name) == 0;
}

/*
 * The context for the name the client sent: that host's certificate if the
 * listener has one (exact names before wildcards), else the default.
 */
static WOLFSSL_CTX *sni_context(const struct tls_server *srv, const char *name)
{
	for (int pass = 0; pass < 2 && name[0] != '\0'; pass++) {
		for (uint32_t i = 0; i < srv->sni_count; i++) {
			if ((srv->sni_name[i][0] == '*') == (pass == 1) && sni_matches(srv->sni_name[i], name))
				return srv->sni_ctx[i];
		}
	}
	return srv->ctx;
}

static WOLFSSL_CTX *server_new(const struct rm_listener_config *l, const char *cert, const char *key,
			       char *err, size_t err_size)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
	const char *ciphers = l->tls_ciphers[0] != '\0' ? l->tls_ciphers : tls_default_ciphers;
	char bad[64];

	if (ctx == NULL) {
		snprintf(err, err_size, "listener '%s': cannot create a TLS context", l->name);
		return NULL;
	}
	if (!ciphers_allowed(ciphers, bad, sizeof(bad))) {
		snprintf(err, err_size, "listener '%s': tls_ciphers: '%s' is not an ECDHE+AEAD suite "
			 "(allowed: %s)", l->name, bad, tls_default_ciphers);
		goto fail;
	}
	if (wolfSSL_CTX_SetMinVersion(ctx, l->tls_min_version == 0x0304 ? WOLFSSL_TLSV1_3 : WOLFSSL_TLSV1_2)
	    != WOLFSSL_SUCCESS || wolfSSL_CTX_set_cipher_list(ctx, ciphers) != WOLFSSL_SUCCESS) {
		snprintf(err, err_size, "listener '%s': cannot set the TLS version or cipher list", l->name);
		goto fail;
	}
	if (wolfSSL_CTX_use_certificate_chain_file(ctx, cert) != WOLFSSL_SUCCESS) {
		snprintf(err, err_size, "listener '%s': tls_cert %s: cannot load a PEM certificate chain",
			 l->name, cert);
		goto fail;
	}
	if (wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
		snprintf(err, err_size, "listener '%s': tls_key %s: cannot load a PEM private key",
			 l->name, key);
		goto fail;
	}
	if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS) {
		snprintf(err, err_size, "listener '%s': tls_key %s does not match tls_cert %s", l->name,
			 key, cert);
		goto fail;
	}
	/* Resumption: tickets (TLS 1.2 RFC 5077, TLS 1.3 PSK) and the session cache. */
	wolfSSL_CTX_UseSessionTicket(ctx);
	wolfSSL_CTX_set_TicketEncCb(ctx, ticket_cb);
	wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_SERVER);
	return ctx;
fail:
	wolfSSL_CTX_free(ctx);
	return NULL;
}

static void server_unref(struct tls_server *srv)
{
	if (srv == NULL || atomic_fetch_sub_explicit(&srv->refs, 1, memory_order_acq_rel) != 1)
		return;
	wolfSSL_CTX_free(srv->ctx);
	for (uint32_t k = 0; k < srv->sni_count; k++)
		wolfSSL_CTX_free(srv->sni_ctx[k]);
	free(srv);
}

static struct tls_server *server_build(const struct rm_listener_config *l, char *err, size_t err_size)
{
	struct tls_server *srv = calloc(1, sizeof(*srv));

	if (srv == NULL) {
		snprintf(err, err_size, "listener '%s': out of memory", l->name);
		return NULL;
	}
	atomic_init(&srv->refs, 1);
	srv->ctx = server_new(l, l->tls_cert, l->tls_key, err, err_size);
	if (srv->ctx == NULL) {
		free(srv);
		return NULL;
	}
	for (uint32_t k = 0; k < l->tls_sni_count; k++) {
		srv->sni_ctx[k] = server_new(l, l->tls_sni[k].cert, l->tls_sni[k].key, err, err_size);
		if (srv->sni_ctx[k] == NULL) {
			server_unref(srv);
			return NULL;
		}
		snprintf(srv->sni_name[k], sizeof(srv->sni_name[k]), "%s", l->tls_sni[k].name);
		srv->sni_count = k + 1;
	}
	return srv;
}

void rm_tls_retire(void *table)
{
	struct tls_table *t = table;

	if (t == NULL)
		return;
	for (uint32_t i = 0; i < RM_LISTENERS_MAX; i++)
		server_unref(t->servers[i]);
	free(t);
}

static WOLFSSL_CTX *client_new(const char *ca, char *err, size_t err_size)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
	const char *bundle = ca != NULL && ca[0] != '\0' ? ca : TLS_SYSTEM_CA_BUNDLE;

	if (ctx == NULL || wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_cipher_list(ctx, tls_default_ciphers) != WOLFSSL_SUCCESS) {
		snprintf(err, err_size, "cannot create a TLS client context");
		wolfSSL_CTX_free(ctx);
		return NULL;
	}
	if (ca == NULL) {
		wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
		return ctx;
	}
	if (wolfSSL_CTX_load_verify_locations(ctx, bundle, NULL) != WOLFSSL_SUCCESS) {
		snprintf(err, err_size, "CA file %s: cannot load PEM certificates", bundle);
		wolfSSL_CTX_free(ctx);
		return NULL;
	}
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
	return ctx;
}

/* The verifying client context for a CA file, made at set-up if needed. */
static WOLFSSL_CTX *client_for(const char *ca, bool make, char *err, size_t err_size)
{
	for (uint32_t i = 0; i < client_verify_count; i++)
		if (strcmp(client_verify[i].ca, ca) == 0)
			return client_verify[i].ctx;
	if (!make || client_verify_count == TLS_CLIENT_CAS_MAX)
		return NULL;
	WOLFSSL_CTX *ctx = client_new(ca, err, err_size);

	if (ctx == NULL)
		return NULL;
	snprintf(client_verify[client_verify_count].ca, sizeof(client_verify[0].ca), "%s", ca);
	client_verify[client_verify_count++].ctx = ctx;
	return ctx;
}

/* Does any delivery destination use the verify policy (the default, or the policy map)? */
static bool delivery_verifies(const struct rm_config *cfg)
{
	const struct rm_map *m = cfg->delivery.tls_policy_map;

	if (cfg->delivery.tls == RM_TLS_POLICY_VERIFY)
		return true;
	for (uint32_t i = 0; m != NULL && i < rm_map_count(m); i++) {
		const char *key, *value;
		uint32_t line;

		if (rm_map_entry(m, i, &key, &value, &line) && strcmp(value, "verify") == 0)
			return true;
	}
	return false;
}

static int clients_setup(const struct rm_config *cfg, char *err, size_t err_size)
{
	char why[300];

	if (client_plain == NULL && (client_plain = client_new(NULL, err, err_size)) == NULL)
		return -1;
	for (uint32_t i = 0; i < cfg->listener_count; i++) {
		const struct rm_listener_config *l = &cfg->listeners[i];

		if (l->backend_tls != RM_TLS_POLICY_VERIFY)
			continue;
		if (client_for(l->backend_tls_ca, true, why, sizeof(why)) == NULL) {
			snprintf(err, err_size, "listener '%s': backend_tls_ca: %s", l->name, why);
			return -1;
		}
	}
	/* Delivery verifies with delivery.tls_ca: by default, or for some next hop of the map. */
	if (cfg->delivery.enabled && delivery_verifies(cfg) &&
	    client_for(cfg->delivery.tls_ca, true, why, sizeof(why)) == NULL) {
		snprintf(err, err_size, "delivery.tls_ca: %s", why);
		return -1;
	}
	return 0;
}

int rm_tls_setup(const struct rm_config *cfg, char *err, size_t err_size)
{
	static bool initialised;
	struct tls_table *table;

	if (!initialised) {
		if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
			snprintf(err, err_size, "cannot initialise wolfSSL");
			return -1;
		}
		if (ticket_key_make(&ticket_keys[0], rm_now_ms()) < 0) {
			snprintf(err, err_size, "no randomness for a session ticket key");
			return -1;
		}
		initialised = true;
	}
	if (clients_setup(cfg, err, err_size) < 0)
		return -1;
	table = calloc(1, sizeof(*table));
	if (table == NULL) {
		snprintf(err, err_size, "out of memory");
		return -1;
	}
	for (uint32_t i = 0; i < cfg->listener_count; i++) {
		if (cfg->listeners[i].tls == RM_TLS_NONE)
			continue;
		table->servers[i] = server_build(&cfg->listeners[i], err, err_size);
		if (table->servers[i] == NULL) {
			rm_tls_retire(table);
			return -1;
		}
	}
	rm_tls_retire(atomic_exchange(&tls_current, table));
	return 0;
}

void rm_tls_shutdown(void)
{
	rm_tls_retire(atomic_exchange(&tls_current, NULL));
}

void *rm_tls_reload(const struct rm_config *cfg)
{
	struct tls_table *old = atomic_load(&tls_current), *table = calloc(1, sizeof(*table));
	char err[512];

	if (table == NULL || old == NULL) {
		free(table);
		return NULL;
	}
	for (uint32_t i = 0; i < cfg->listener_count; i++) {
		const struct rm_listener_config *l = &cfg->listeners[i];

		if (l->tls == RM_TLS_NONE)
			continue;
		table->servers[i] = server_build(l, err, sizeof(err));
		if (table->servers[i] != NULL) {
			rm_info(0, "reload: TLS certificates of listener '%s' loaded (%s%s)", l->name, l->tls_cert,
				l->tls_sni_count ? " and its tls_sni entries" : "");
			continue;
		}
		rm_error(0, "reload: %s; listener '%s' keeps the certificates in use", err, l->name);
		table->servers[i] = old->servers[i];
		if (table->servers[i] != NULL)
			atomic_fetch_add_explicit(&table->servers[i]->refs, 1, memory_order_relaxed);
	}
	/* The old table goes once every worker has taken the reload (see ringmaild.c). */
	atomic_store_explicit(&tls_current, table, memory_order_release);
	return old;
}

/* ---- wolfSSL's I/O, over the connection ----------------------------------------------------- */

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct tls_conn *t = arg;
	size_t avail = t->in_len - t->in_used;
	size_t n = (size_t)sz < avail ? (size_t)sz : avail;

	if (n == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	memcpy(buf, t->in + t->in_used, n);
	t->in_used += n;
	return (int)n;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct tls_conn *t = arg;

	/* Session writes were checked against the room (tls_write); a refusal
	 * here is a handshake flight beyond limits.output_bytes_max. */
	if (rm_conn_write_raw(t->c, buf, (size_t)sz) < 0) {
		rm_warn(t->c->id, "TLS: %d bytes of records do not fit the output limit; closing", sz);
		return WOLFSSL_CBIO_ERR_CONN_CLOSE;
	}
	return sz;
}

/* ---- the transport ------------------------------------------------------------------------- */

static int ssl_make(struct tls_conn *t, WOLFSSL_CTX *ctx)
{
	t->ssl = wolfSSL_new(ctx);
	if (t->ssl == NULL)
		return -ENOMEM;
	wolfSSL_SSLSetIORecv(t->ssl, io_recv);
	wolfSSL_SSLSetIOSend(t->ssl, io_send);
	wolfSSL_SetIOReadCtx(t->ssl, t);
	wolfSSL_SetIOWriteCtx(t->ssl, t);
	return 0;
}

/* ctx NULL: a server connection, whose WOLFSSL object waits for the ClientHello (server_begin). */
static struct tls_conn *tls_new(struct rm_conn *c, WOLFSSL_CTX *ctx)
{
	struct tls_conn *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->c = c;
	if (ctx != NULL && ssl_make(t, ctx) < 0) {
		free(t);
		return NULL;
	}
	return t;
}

/* The size of a first record that starts at p (TLS_RECORD_HEADER bytes there); 0: not a
 * handshake record of a size wolfSSL takes, so nothing to read a name from. */
static size_t hello_size(const uint8_t *p)
{
	size_t n = TLS_RECORD_HEADER + ((size_t)p[3] << 8 | p[4]);

	return p[0] == 22 && n <= TLS_HELLO_MAX ? n : 0;	/* 22: handshake (RFC 8446 5.1) */
}

/*
 * Server: the first record picks the context by its SNI, and the WOLFSSL
 * object is made.  1: made, and t->hello, unless NULL, holds bytes to offer
 * wolfSSL before data + *taken; 0: all of data kept in t->hello, more wanted;
 * -ENOMEM.
 */
static int server_begin(struct tls_conn *t, const uint8_t *data, size_t len, size_t *taken)
{
	const uint8_t *rec = NULL;
	size_t size = 0;
	char name[256];
	word32 name_len = sizeof(name) - 1;
	WOLFSSL_CTX *ctx = t->srv->ctx;

	*taken = 0;
	if (t->hello == NULL && len >= TLS_RECORD_HEADER && ((size = hello_size(data)) == 0 || size <= len)) {
		rec = data;	/* whole here (or not a ClientHello: wolfSSL says why) */
	} else {
		if (t->hello == NULL) {
			t->hello = malloc(TLS_HELLO_MAX);
			t->hello_len = 0;
			if (t->hello == NULL)
				return -ENOMEM;
		}
		size = TLS_RECORD_HEADER;
		while (*taken < len) {
			if (t->hello_len >= TLS_RECORD_HEADER && (size = hello_size(t->hello)) == 0)
				break;
			if (t->hello_len >= size)
				break;
			size_t n = size - t->hello_len < len - *taken ? size - t->hello_len : len - *taken;

			memcpy(t->hello + t->hello_len, data + *taken, n);
			t->hello_len += n;
			*taken += n;
		}
		if (t->hello_len >= TLS_RECORD_HEADER)
			size = hello_size(t->hello);
		if (t->hello_len < TLS_RECORD_HEADER || (size != 0 && t->hello_len < size))
			return 0;
		rec = t->hello;
	}
	/* A name that fills the buffer may have been cut short, and one with a NUL in it is no
	 * host name: neither picks a certificate. */
	if (size == 0 || wolfSSL_SNI_GetFromBuffer(rec, (word32)size, WOLFSSL_SNI_HOST_NAME, (unsigned char *)name,
						   &name_len) != WOLFSSL_SUCCESS || name_len >= sizeof(name) - 1)
		name_len = 0;
	name[name_len] = '\0';
	if (strlen(name) != name_len)
		name[0] = '\0';
	if (name[0] != '\0')
		ctx = sni_context(t->srv, name);
	snprintf(t->name, sizeof(t->name), "%.*s", (int)sizeof(t->name) - 1, name);	/* the log's copy */
	if (ssl_make(t, ctx) < 0)
		return -ENOMEM;
	server_unref(t->srv);	/* the context is chosen; wolfSSL holds it */
	t->srv = NULL;
	return 1;
}

static void count_handshake(struct tls_conn *t, bool on)
{
	uint32_t *n = &handshakes[rm_worker_index(t->c->worker)];

	if (on && !t->counted) {
		(*n)++;
		t->counted = true;
	} else if (!on && t->counted) {
		RM_ASSERT(*n > 0);
		(*n)--;
		t->counted = false;
	}
}

static bool handshakes_full(const struct rm_conn *c)
{
	return handshakes[rm_worker_index(c->worker)] >= rm_worker_config(c->worker)->limits.tls_handshakes_max;
}

static void handshake_done(struct tls_conn *t)
{
	struct rm_conn *c = t->c;
	const char *sni = t->name;
	char peer[64];

	t->handshake_done = true;
	count_handshake(t, false);
	/* Debian's options keep the handshake's arrays and hashes for post-handshake
	 * authentication, which we never ask for: give them back now. */
	wolfSSL_FreeArrays(t->ssl);
	(void)wolfSSL_FreeHandshakeResources(t->ssl);
	rm_conn_timer(c, rm_conn_idle_timeout_ms(c));
	if (t->client) {
		/* What was checked, in words an operator can act on. */
		rm_info(c->id, "TLS client %s %s to %s sni=%s: %s%s%s", wolfSSL_get_version(t->ssl),
			wolfSSL_get_cipher_name(t->ssl), rm_conn_peer_str(c, peer, sizeof(peer)),
			t->name[0] != '\0' ? t->name : "-",
			t->verify ? "verified (chain to the CA, name " : "not verified (policy does not ask)",
			t->verify ? t->name : "", t->verify ? ")" : "");
		if (t->done != NULL)
			t->done(c, 0, t->done_arg);
		return;
	}
	rm_info(c->id, "TLS %s %s sni=%s%s from %s", wolfSSL_get_version(t->ssl),
		wolfSSL_get_cipher_name(t->ssl), sni != NULL && sni[0] != '\0' ? sni : "-",
		wolfSSL_session_reused(t->ssl) ? " resumed" : "", rm_conn_peer_str(c, peer, sizeof(peer)));
	if (t->open_deferred) {
		t->open_deferred = false;
		rm_conn_open_session(c);
	}
}

/* Offer kept plaintext to the session; true when all of it was taken. */
static bool offer_hold(struct tls_conn *t)
{
	struct rm_conn *c = t->c;

	while (t->hold_off < t->hold_len && c->state == RM_CONN_OPEN) {
		struct rm_rx rx = { .data = t->hold + t->hold_off, .len = t->hold_len - t->hold_off,
				    .bid = RM_RX_NO_BUFFER };
		size_t used = c->ops->on_data(c, &rx);

		if (used == 0)
			return false;
		t->hold_off += used;
	}
	free(t->hold);
	t->hold = NULL;
	t->hold_len = t->hold_off = 0;
	rm_conn_transport_held(c, false);
	return true;
}

static void keep(struct tls_conn *t, const uint8_t *data, size_t len)
{
	t->hold = malloc(len);
	if (t->hold == NULL) {
		rm_conn_abort(t->c, -ENOMEM);
		return;
	}
	memcpy(t->hold, data, len);
	t->hold_len = len;
	t->hold_off = 0;
	rm_conn_transport_held(t->c, true);
}

/* Decrypt what wolfSSL has and hand it to the session, until it has no more or the session stops. */
static void read_plain(struct tls_conn *t)
{
	struct rm_conn *c = t->c;
	char why[TLS_REASON_BYTES];

	for (unsigned n = 0; n < TLS_READS_PER_RX && c->state == RM_CONN_OPEN && t->hold == NULL; n++) {
		int got = wolfSSL_read(t->ssl, plain, sizeof(plain));

		if (got > 0) {
			struct rm_rx rx = { .data = plain, .len = (size_t)got, .bid = RM_RX_NO_BUFFER };
			size_t used = c->ops->on_data(c, &rx);

			if (used < (size_t)got && c->state == RM_CONN_OPEN)
				keep(t, plain + used, (size_t)got - used);
			continue;
		}
		int err = wolfSSL_get_error(t->ssl, got);

		if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
			return;
		if (err == WOLFSSL_ERROR_ZERO_RETURN)
			return;		/* close_notify: the TCP EOF that follows ends the session */
		rm_warn(c->id, "TLS read failed: %s", reason(t->ssl, got, why));
		rm_conn_abort(c, -EPROTO);
		return;
	}
}

/* The session learns that its outbound handshake failed, then the connection closes. */
static void client_failed(struct tls_conn *t, int err)
{
	rm_tls_done_fn done = t->done;

	t->done = NULL;
	if (done != NULL)
		done(t->c, err, t->done_arg);
}

/* Advance the handshake; true once it is done. */
static bool handshake_step(struct tls_conn *t)
{
	struct rm_conn *c = t->c;
	int ret = t->client ? wolfSSL_connect(t->ssl) : wolfSSL_accept(t->ssl);
	char why[TLS_REASON_BYTES], peer[64];
	int err;

	if (ret == WOLFSSL_SUCCESS)
		return true;
	err = wolfSSL_get_error(t->ssl, ret);
	if (err == WOLFSSL_ERROR_WANT_READ || err == WOLFSSL_ERROR_WANT_WRITE)
		return false;
	rm_warn(c->id, "TLS %shandshake with %s failed: %s%s%s", t->client ? "client " : "",
		rm_conn_peer_str(c, peer, sizeof(peer)), reason(t->ssl, ret, why),
		t->client && t->verify ? "; verifying the name " : "", t->client && t->verify ? t->name : "");
	if (t->client)
		client_failed(t, t->verify ? -EKEYREJECTED : -EPROTO);
	/* Close, not abort: the alert wolfSSL queued tells the peer why. */
	rm_conn_close(c);
	t->in_used = t->in_len;
	return false;
}

static size_t tls_rx(struct rm_conn *c, const struct rm_rx *rx)
{
	struct tls_conn *t = c->transport_state;

	size_t base = 0;

	if (t->hold != NULL)
		return 0;		/* the session has not taken what came before */
	if (t->ssl == NULL) {
		int rc = server_begin(t, rx->data, rx->len, &base);

		if (rc < 0)
			rm_conn_abort(c, rc);
		if (rc <= 0)
			return rx->len;
		if (t->hello != NULL) {
			/* The gathered first record: wolfSSL cannot finish a handshake on it alone. */
			t->in = t->hello;
			t->in_len = t->hello_len;
			t->in_used = 0;
			(void)handshake_step(t);
			t->in = NULL;
			t->in_len = t->in_used = 0;
			free(t->hello);
			t->hello = NULL;
			t->hello_len = 0;
			if (c->state != RM_CONN_OPEN || base == rx->len)
				return rx->len;
		}
	}
	t->in = rx->data + base;
	t->in_len = rx->len - base;
	t->in_used = 0;
	if (!t->handshake_done) {
		if (!handshake_step(t))
			goto out;
		handshake_done(t);
	}
	read_plain(t);
out:;
	size_t used = base + t->in_used;

	/* Nothing of rx may be read after this returns: the engine owns it again. */
	t->in = NULL;
	t->in_len = t->in_used = 0;
	return used;
}

static void tls_resume(struct rm_conn *c)
{
	struct tls_conn *t = c->transport_state;

	if (!offer_hold(t))
		return;
	/* wolfSSL may still have whole records buffered. */
	if (t->handshake_done)
		read_plain(t);
}

static size_t tls_room(const struct rm_conn *c, size_t raw)
{
	size_t overhead = (raw / TLS_RECORD_PLAIN_MAX + 1) * TLS_RECORD_OVERHEAD;
	const struct tls_conn *t = c->transport_state;

	if (!t->handshake_done)
		return 0;
	return raw > overhead ? raw - overhead : 0;
}

static int tls_write(struct rm_conn *c, const void *data, size_t len)
{
	struct tls_conn *t = c->transport_state;
	char why[TLS_REASON_BYTES];
	int ret;

	if (len == 0)
		return 0;
	if (c->state != RM_CONN_OPEN || len > INT32_MAX || tls_room(c, rm_conn_output_room_raw(c)) < len)
		return -ENOBUFS;
	ret = wolfSSL_write(t->ssl, data, (int)len);
	if (ret != (int)len) {
		rm_warn(c->id, "TLS write failed: %s", reason(t->ssl, ret, why));
		rm_conn_abort(c, -EPROTO);
		return -EPIPE;
	}
	return 0;
}

static bool tls_timeout(struct rm_conn *c)
{
	struct tls_conn *t = c->transport_state;
	char peer[64];

	if (t->handshake_done)
		return false;
	rm_warn(c->id, "TLS %shandshake with %s timed out", t->client ? "client " : "",
		rm_conn_peer_str(c, peer, sizeof(peer)));
	if (t->client)
		client_failed(t, -ETIMEDOUT);
	rm_conn_abort(c, -ETIMEDOUT);
	return true;
}

/* A clean end: close_notify (RFC 8446 6.1) goes out after what is queued. */
static void tls_closing(struct rm_conn *c)
{
	struct tls_conn *t = c->transport_state;

	if (t->handshake_done)
		(void)wolfSSL_shutdown(t->ssl);	/* sends the alert; the peer's answer is not awaited */
}

static void tls_close(struct rm_conn *c)
{
	struct tls_conn *t = c->transport_state;

	count_handshake(t, false);
	wolfSSL_free(t->ssl);
	server_unref(t->srv);
	free(t->hold);
	free(t->hello);
	free(t);
}

static const struct rm_transport_ops tls_ops = {
	.on_rx = tls_rx,
	.write = tls_write,
	.output_room = tls_room,
	.on_resume = tls_resume,
	.on_timeout = tls_timeout,
	.on_closing = tls_closing,
	.on_close = tls_close,
};

/* ---- entry points ------------------------------------------------------------------------------- */

static int start(struct rm_conn *c, bool open_deferred)
{
	struct tls_table *table = atomic_load_explicit(&tls_current, memory_order_acquire);
	struct tls_server *srv;
	struct tls_conn *t;

	if (c->transport == &tls_ops)
		return -EALREADY;
	if (c->listener_index < 0 || table == NULL || (srv = table->servers[c->listener_index]) == NULL)
		return -ENOPROTOOPT;
	if (handshakes_full(c)) {
		rm_warn(c->id, "TLS: %u handshakes in progress on this worker (limits.tls_handshakes_max); "
			"refusing", handshakes[rm_worker_index(c->worker)]);
		return -EBUSY;
	}
	t = tls_new(c, NULL);
	if (t == NULL)
		return -ENOMEM;
	atomic_fetch_add_explicit(&srv->refs, 1, memory_order_relaxed);
	t->srv = srv;
	fp_cache_track();
	t->open_deferred = open_deferred;
	count_handshake(t, true);
	rm_conn_set_transport(c, &tls_ops, t);
	rm_conn_timer(c, rm_worker_config(c->worker)->limits.tls_handshake_timeout_ms);
	return 0;
}

int rm_tls_connect(struct rm_conn *c, const struct rm_tls_client *o)
{
	WOLFSSL_CTX *ctx;
	struct tls_conn *t;
	char err[300];

	if (c->transport == &tls_ops)
		return -EALREADY;
	if (o->policy == RM_TLS_POLICY_NONE || o->done == NULL)
		return -EINVAL;
	if (o->policy == RM_TLS_POLICY_VERIFY) {
		if (o->name == NULL || o->name[0] == '\0')
			return -EINVAL;	/* nothing to verify the certificate against */
		ctx = client_for(o->ca_file != NULL ? o->ca_file : "", false, err, sizeof(err));
	} else {
		ctx = client_plain;
	}
	if (ctx == NULL)
		return -ENOPROTOOPT;	/* a CA file rm_tls_setup was not told of */
	t = tls_new(c, ctx);
	if (t == NULL)
		return -ENOMEM;
	fp_cache_track();
	t->client = true;
	t->verify = o->policy == RM_TLS_POLICY_VERIFY;
	t->done = o->done;
	t->done_arg = o->arg;
	if (o->name != NULL)
		snprintf(t->name, sizeof(t->name), "%s", o->name);
	if ((t->name[0] != '\0' &&
	     wolfSSL_UseSNI(t->ssl, WOLFSSL_SNI_HOST_NAME, t->name, (unsigned short)strlen(t->name)) != WOLFSSL_SUCCESS) ||
	    (t->verify && wolfSSL_check_domain_name(t->ssl, t->name) != WOLFSSL_SUCCESS)) {
		wolfSSL_free(t->ssl);
		free(t);
		return -EINVAL;
	}
	count_handshake(t, true);
	rm_conn_set_transport(c, &tls_ops, t);
	rm_conn_timer(c, rm_worker_config(c->worker)->limits.tls_handshake_timeout_ms);
	/* The client speaks first: the ClientHello goes out now. */
	if (handshake_step(t))
		handshake_done(t);
	return 0;
}

int rm_tls_attach_implicit(struct rm_conn *c, const struct rm_listener_config *l)
{
	int rc = start(c, true);

	return rc < 0 ? rc : 1;
}

int rm_tls_starttls_check(const struct rm_conn *c)
{
	struct tls_table *table = atomic_load_explicit(&tls_current, memory_order_acquire);

	if (c->transport == &tls_ops)
		return -EALREADY;
	if (c->listener_index < 0 || table == NULL || table->servers[c->listener_index] == NULL)
		return -ENOPROTOOPT;
	return handshakes_full(c) ? -EBUSY : 0;
}

int rm_tls_starttls(struct rm_conn *c)
{
	int rc = c->transport == &tls_ops ? -EALREADY : 0;

	if (rc == 0)
		rc = start(c, false);
	if (rc == 0)
		rm_conn_discard_input(c);
	return rc;
}

bool rm_tls_active(const struct rm_conn *c)
{
	return c->transport == &tls_ops && ((const struct tls_conn *)c->transport_state)->handshake_done;
}

const char *rm_tls_version(const struct rm_conn *c)
{
	return rm_tls_active(c) ? wolfSSL_get_version(((const struct tls_conn *)c->transport_state)->ssl) : NULL;
}

const char *rm_tls_cipher(const struct rm_conn *c)
{
	return rm_tls_active(c) ? wolfSSL_get_cipher_name(((const struct tls_conn *)c->transport_state)->ssl) : NULL;
}
