/*
 * NAME
 *	config - ringmaild configuration (libconfig syntax)
 * SUMMARY
 *	#include "core/config.h"
 *
 *	int rm_config_load_file(struct rm_config *cfg, const char *path,
 *				char *err, size_t err_size);
 *	int rm_config_load_string(struct rm_config *cfg, const char *text,
 *				  const char *name, char *err, size_t err_size);
 *	void rm_config_free(struct rm_config *cfg);
 * DESCRIPTION
 *	The whole configuration is read and checked at once into a plain struct
 *	that the rest of the daemon reads without libconfig.  Every limit has a
 *	named setting and a default (rm_config_defaults); unknown settings are
 *	errors, so that a typo never silently falls back to a default.
 *
 *	The load functions return 0 on success.  On failure they return -1 and
 *	write exactly one line "FILE:LINE: what is wrong" (no newline) into err;
 *	cfg then holds nothing that needs freeing.
 * DIAGNOSTICS
 *	None printed: the caller prints err and exits 2.
 */
#ifndef RM_CONFIG_H
#define RM_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/socket.h>

#define RM_LISTENERS_MAX 32
#define RM_WORKERS_MAX 64
#define RM_NAME_MAX 32

enum rm_log_level { RM_LOG_ERROR = 0, RM_LOG_WARN, RM_LOG_INFO, RM_LOG_DEBUG };

enum rm_tls_mode { RM_TLS_NONE = 0, RM_TLS_STARTTLS, RM_TLS_IMPLICIT };

/* TLS policy of an outbound connection (Postfix's smtp_tls_security_level). */
enum rm_tls_policy {
	RM_TLS_POLICY_NONE = 0,		/* plaintext */
	RM_TLS_POLICY_MAY,		/* encrypt when possible, do not verify */
	RM_TLS_POLICY_ENCRYPT,		/* encrypt or fail, do not verify */
	RM_TLS_POLICY_VERIFY,		/* encrypt, verify the chain and the host name, or fail */
};

#define RM_TLS_SNI_MAX 8		/* extra certificates per listener, chosen by SNI */

struct rm_tls_sni_config {
	char name[128];			/* "mx.example.com" or "*.example.com" (one label) */
	char cert[256];
	char key[256];
};

struct rm_listener_config {
	char name[RM_NAME_MAX];
	char protocol[RM_NAME_MAX];	/* "echo", "relay"; smtp/imap/pop3 later */
	char address[64];		/* numeric IPv4/IPv6, or a path for protocol "control" */
	uint16_t port;
	enum rm_tls_mode tls;
	uint32_t idle_timeout_ms;	/* 0 = the global limits.idle_timeout_ms */
	char backend[64];		/* "HOST:PORT" / "[V6]:PORT"; protocol "relay" only */
	char tls_cert[256];		/* PEM chain (leaf first); required with tls */
	char tls_key[256];		/* PEM private key (RSA or ECDSA) */
	char tls_ciphers[512];		/* "" = the built-in ECDHE+AEAD list (tls/tls.c) */
	uint16_t tls_min_version;	/* 0x0303 (TLS 1.2, default) or 0x0304 (1.3 only) */
	uint32_t tls_sni_count;
	struct rm_tls_sni_config tls_sni[RM_TLS_SNI_MAX];	/* tls_cert/tls_key serve any other name */
	/* protocol "relay": TLS to the backend (the proxy's backend side) */
	enum rm_tls_policy backend_tls;
	char backend_tls_ca[256];	/* "" = the system bundle */
	char backend_tls_name[128];	/* SNI and the name to verify; "" = none sent, verify refused */
	struct sockaddr_storage backend_addr;
	socklen_t backend_addr_len;
	/* protocol "smtp" */
	bool submission;		/* AUTH offered, and required before MAIL (587, 465) */
	bool proxy_protocol;		/* a PROXY v1/v2 header first, from smtp.proxy_trusted only */
	int config_line;		/* where it was defined, for later messages */
};

struct rm_limits {
	uint32_t connections_per_worker;	/* preallocated slots */
	uint32_t buffers_per_worker;		/* provided-buffer ring entries, power of 2 */
	uint32_t buffers_ring_window;		/* of them in the kernel's ring at start; grows on starvation */
	uint32_t buffer_size_bytes;		/* each provided buffer */
	uint32_t write_blocks_per_worker;	/* 4 KiB blocks for copied output */
	uint32_t output_bytes_max;		/* queued output per connection */
	uint32_t line_length_max;		/* for line protocols (echo) */
	uint32_t idle_timeout_ms;
	uint32_t connect_timeout_ms;
	uint32_t shutdown_timeout_ms;		/* SIGTERM grace for sessions */
	uint32_t listen_backlog;
	/* the spool (core/spool.h), per worker */
	uint32_t spool_segment_bytes_max;	/* a new segment once one is this big */
	uint32_t spool_buffer_bytes;		/* each of the two group-commit buffers */
	uint32_t spool_commit_interval_ms;	/* wait this long for more commits; 0 = none */
	uint32_t spool_commit_batch_max;	/* this many waiting commits sync at once */
	uint32_t spool_messages_max;		/* queued messages; more get 452 */
	uint32_t spool_receiving_max;		/* messages being received at once */
	uint32_t spool_segments_max;		/* segment files kept; more: 452 */
	uint32_t spool_preallocate;		/* 1: a segment's blocks allocated at creation (faster syncs) */
	uint32_t tls_handshake_timeout_ms;	/* a handshake not done by then is dropped */
	uint32_t tls_handshakes_max;		/* handshakes in progress per worker */
	uint32_t tls_ticket_key_rotate_ms;	/* a new session ticket key this often */
	/* SMTP sessions (proto/smtp_session.c) */
	uint32_t smtp_line_bytes_max;		/* a command line, CR LF included (AUTH: 12288) */
	uint32_t smtp_text_line_bytes_max;	/* a line of content, CR LF included; 0 = unchecked */
	uint32_t smtp_recipients_max;		/* per message */
	uint32_t smtp_message_bytes_max;	/* content as received (SIZE) */
	uint32_t smtp_errors_max;		/* client errors per session, then 421 */
	uint32_t smtp_connections_max;		/* SMTP sessions in the process; 0 = no limit */
	uint32_t smtp_connections_per_client;	/* per client address; 0 = no limit */
	uint32_t smtp_command_timeout_ms;	/* for a whole command line to arrive */
	uint32_t smtp_data_timeout_ms;		/* for the next line of content */
	uint32_t smtp_pregreet_wait_ms;		/* greeting held back this long; 0 = at once */
	uint32_t smtp_proxy_timeout_ms;		/* for the PROXY header */
	uint32_t smtp_auth_failures_max;	/* per client address per window, then 421 */
	uint32_t smtp_auth_failure_window_ms;
	uint32_t smtp_auth_failure_delay_ms;	/* before a 535 */
	uint32_t auth_threads;			/* password verification threads */
	uint32_t auth_queue_max;		/* verifications waiting; more: 454 */
	/* outbound delivery (core/delivery.c), per worker unless said otherwise */
	uint32_t delivery_concurrency_per_destination;	/* connections to one next hop, process-wide */
	uint32_t delivery_connections_max;	/* outbound connections per worker */
	uint32_t delivery_messages_per_connection;	/* then QUIT and a new connection */
	uint32_t delivery_connection_idle_ms;	/* an idle connection is kept this long for reuse */
	uint32_t delivery_in_flight_max;	/* messages in delivery per worker */
	uint32_t delivery_destinations_max;	/* next hops known per worker (with their DNS results) */
	uint32_t delivery_retry_initial_ms;	/* first retry after a temporary failure */
	uint32_t delivery_retry_max_ms;		/* the backoff doubles up to this */
	uint32_t delivery_queue_lifetime_ms;	/* then a temporary failure bounces */
	uint32_t delivery_delay_warning_ms;	/* a deferred message this old warns its sender once; 0 = never */
	uint32_t delivery_dead_destination_ms;	/* a next hop none of whose hosts answered is not tried for this long */
	uint32_t smtp_client_timeout_ms;	/* for each reply */
	uint32_t smtp_client_data_timeout_ms;	/* for the reply to the end of data */
	uint32_t dns_timeout_ms;		/* per try */
	uint32_t dns_tries;
	uint32_t dns_queries_max;		/* in flight per worker */
	uint32_t dns_ttl_max_ms;		/* cached DNS results live at most this long */
};

enum rm_smtp_pregreet { RM_SMTP_PREGREET_REJECT = 0, RM_SMTP_PREGREET_LOG };
enum rm_smtp_bare_lf { RM_SMTP_BARE_LF_REJECT = 0, RM_SMTP_BARE_LF_NORMALISE };

struct rm_cidr_list;
struct rm_map;
struct rm_passwd;

/* Outbound delivery (group delivery). */
struct rm_delivery_config {
	bool enabled;			/* the queue is delivered (false: only received) */
	char smarthost[300];		/* "" = MX; else every recipient outside relay_domains goes there */
	char smarthost_user[256];	/* AUTH PLAIN to the smarthost, over TLS */
	char smarthost_password_file[256];
	char smarthost_password[256];	/* read from the file at load */
	enum rm_tls_policy tls;		/* the default policy: may */
	char tls_ca[256];		/* verify: "" = the system bundle */
	char tls_policy_map_file[256];	/* "domain-or-nexthop policy" lines */
	struct rm_map *tls_policy_map;
	char dns_servers[256];		/* "ADDR[:PORT],..."; "" = /etc/resolv.conf */
	char helo_name[256];		/* "" = smtp.hostname */
	uint16_t port;			/* of MX hosts (25; tests use another) */
};

/*
 * The SMTP server's policy (group smtp).  The tables are loaded with the
 * configuration (so -t checks them and a reload that cannot load one keeps
 * the running configuration) and freed with it; sessions take a reference
 * on passwd for a verification that outlives the callback.
 */
struct rm_smtp_config {
	char hostname[256];		/* greeting, EHLO, Received:; default: gethostname */
	char banner[128];		/* after "220 hostname " */
	bool vrfy;			/* VRFY answered 252 (true) or 502 */
	bool auth_plaintext;		/* AUTH offered before TLS */
	bool received_auth_user;	/* the authenticated user in Received: */
	enum rm_smtp_pregreet pregreet;
	enum rm_smtp_bare_lf bare_lf;
	char relay_domains_file[256];
	char passwd_file[256];
	char recipient_map_file[256];
	char sender_login_map_file[256];
	struct rm_map *relay_domains;	/* domain -> next hop (NULL only with RM_CONFIG_NO_TABLES) */
	struct rm_map *recipient_map;	/* NULL: no recipient validation */
	struct rm_map *sender_login_map;	/* NULL: any sender */
	struct rm_passwd *passwd;	/* NULL: no AUTH possible */
	struct rm_cidr_list *mynetworks;	/* relay from these without AUTH; never NULL */
	struct rm_cidr_list *proxy_trusted;	/* PROXY headers only from these; never NULL */
};

struct rm_config {
	char path[256];
	uint32_t workers;			/* 0 in file = online CPUs; resolved here */
	enum rm_log_level log_level;
	bool log_syslog;			/* log_target = "syslog" */
	char user[64];				/* "" = stay as started */
	int user_line;				/* where user was set, for later messages */
	bool allow_root;
	char spool_dir[256];
	char control_socket[256];		/* "" = no control socket */
	struct rm_limits limits;
	struct rm_smtp_config smtp;
	struct rm_delivery_config delivery;
	uint32_t listener_count;
	struct rm_listener_config listeners[RM_LISTENERS_MAX];
};

void rm_config_defaults(struct rm_config *cfg);
int rm_config_load_file(struct rm_config *cfg, const char *path, char *err, size_t err_size);
int rm_config_load_string(struct rm_config *cfg, const char *text, const char *name,
			  char *err, size_t err_size);
/* RM_CONFIG_NO_TABLES: the smtp group's files are not read (ringmailctl needs only
 * the control socket, and may not be allowed to read the password file). */
#define RM_CONFIG_NO_TABLES 0x01u
int rm_config_load_file_flags(struct rm_config *cfg, const char *path, unsigned flags, char *err,
			      size_t err_size);
void rm_config_free(struct rm_config *cfg);

const char *rm_log_level_name(enum rm_log_level level);
const char *rm_tls_mode_name(enum rm_tls_mode mode);
const char *rm_tls_policy_name(enum rm_tls_policy policy);

#endif
