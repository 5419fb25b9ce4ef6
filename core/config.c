/*
 * NAME
 *	config - read and check the ringmaild configuration
 * SUMMARY
 *	#include "core/config.h"
 *
 *	void rm_config_defaults(struct rm_config *cfg);
 *	int rm_config_load_file(struct rm_config *cfg, const char *path,
 *				char *err, size_t err_size);
 *	int rm_config_load_string(struct rm_config *cfg, const char *text,
 *				  const char *name, char *err, size_t err_size);
 *	void rm_config_free(struct rm_config *cfg);
 *	const char *rm_log_level_name(enum rm_log_level level);
 *	const char *rm_tls_mode_name(enum rm_tls_mode mode);
 * DESCRIPTION
 *	rm_config_defaults() fills cfg with the built-in defaults, "workers = 0"
 *	already resolved to the number of online CPUs (at most RM_WORKERS_MAX).
 *	It sets no listener: a configuration without one is invalid.
 *
 *	rm_config_load_file() and rm_config_load_string() start from the defaults,
 *	apply the settings of the text, check every one of them, and only then copy
 *	the result into *cfg.  On failure *cfg is left exactly as it was, so a
 *	reload (SIGHUP) that fails keeps the running configuration.  The file is
 *	read here, not by libconfig, so that its size is bounded, a FIFO or a
 *	directory cannot hang or kill the reader, and a NUL byte cannot cut it
 *	short silently.
 *
 *	Before libconfig sees the text, a small scanner that follows the token
 *	rules of libconfig 1.5 rejects what that version would get wrong without
 *	saying so:
 *	- a plain integer outside the int range: 1.5 keeps only its low 32 bits,
 *	  so "idle_timeout_ms = 4294967396;" would read as 100;
 *	- "@include": an included directory makes libconfig's scanner call
 *	  exit(2) ("input in flex scanner failed"), and one file is what the rest
 *	  of ringmail documents;
 *	- an unterminated comment, which 1.5 accepts and which silently hides
 *	  the rest of the file;
 *	- "\x00" inside a string, which would end the string early.
 *
 *	rm_config_free() releases what a loaded configuration holds: the smtp
 *	group's tables (relay domains, recipient and sender login maps, the
 *	password file, network lists), which are loaded with it so that -t and
 *	a reload check them like any other setting.  A struct copied from a
 *	loaded one shares its tables: free exactly one of the copies.
 *
 *	rm_log_level_name() and rm_tls_mode_name() return the configuration
 *	spelling of a value ("info", "starttls"), or "unknown".
 * DIAGNOSTICS
 *	The load functions return 0, or -1 with one line "FILE:LINE: message"
 *	(no newline) in err.  LINE is the line of the offending setting, the line
 *	where libconfig found a syntax error, or 0 when the problem is about the
 *	file as a whole (cannot open it, no listener at all).  Control characters
 *	from the input are shown as '?', so the message stays one line.
 * BUGS
 *	libconfig 1.5 reports syntax errors as just "syntax error", and leaks
 *	the string token (1 to 64+ bytes) at which it detects one, e.g. in
 *	"a = (1 \"x\");".  Only a configuration that fails to load pays it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <libconfig.h>

#include "core/config.h"
#include "core/cidr.h"
#include "core/maps.h"
#include "core/passwd.h"
#include "proto/smtp_addr.h"

/*
 * A real configuration is a few KiB; the cap keeps a wrong path (a log file,
 * /dev/zero) from being read into memory whole.
 */
#define RM_CONFIG_TEXT_BYTES_MAX (1024 * 1024)

/* Most read(2) calls spent on one file; see rm_config_load_file. */
#define RM_CONFIG_READS_MAX 4096

/* Longest value shown back in a message; the rest becomes "...". */
#define RM_CONFIG_SHOW_CHARS_MAX 48

#define RM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* What one load keeps besides the configuration it builds. */
struct load_ctx {
	const char *name;		/* FILE in messages */
	char *err;
	size_t err_size;
	struct rm_config *cfg;		/* the copy being built */
	/* listener addresses in binary form, for the uniqueness checks */
	int addr_family[RM_LISTENERS_MAX];
	unsigned char addr_bytes[RM_LISTENERS_MAX][16];
	/* smtp.relay_domains as "domain nexthop" lines, for the map loader */
	char *relay_text;
	size_t relay_text_len;
	/* lines of the smtp table settings, for messages about their files */
	unsigned relay_domains_line, relay_domains_file_line, passwd_line, recipient_map_line,
		 sender_login_map_line, smarthost_password_line, tls_policy_map_line;
};

/* ---------------------------------------------------------------- messages */

static int fail(struct load_ctx *ctx, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Write "NAME:LINE: message" into err and return -1, so that every check can
 * end with "return fail(...)".  Values quoted in the message come from the
 * input; a newline among them would break the one-line promise.
 */
static int fail(struct load_ctx *ctx, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int used;

	if (ctx->err == NULL || ctx->err_size == 0)
		return -1;
	used = snprintf(ctx->err, ctx->err_size, "%s:%u: ", ctx->name, line);
	if (used >= 0 && (size_t)used < ctx->err_size) {
		va_start(ap, fmt);
		vsnprintf(ctx->err + used, ctx->err_size - (size_t)used, fmt, ap);
		va_end(ap);
	}
	for (size_t i = 0; i < ctx->err_size && ctx->err[i] != '\0'; i++) {
		unsigned char c = (unsigned char)ctx->err[i];

		if (c < 0x20 || c == 0x7f)
			ctx->err[i] = '?';
	}
	return -1;
}

/*
 * Render a setting's value the way it could be written in the file, for
 * "KEY = VALUE: must be ..." messages; long strings are cut.
 */
static const char *show_value(const config_setting_t *s, char *buf, size_t size)
{
	const char *str;

	switch (config_setting_type(s)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		snprintf(buf, size, "%lld", config_setting_get_int64(s));
		break;
	case CONFIG_TYPE_FLOAT:
		snprintf(buf, size, "%g", config_setting_get_float(s));
		break;
	case CONFIG_TYPE_BOOL:
		snprintf(buf, size, "%s", config_setting_get_bool(s) ? "true" : "false");
		break;
	case CONFIG_TYPE_STRING:
		str = config_setting_get_string(s);
		if (strlen(str) > RM_CONFIG_SHOW_CHARS_MAX)
			snprintf(buf, size, "\"%.*s...\"", RM_CONFIG_SHOW_CHARS_MAX, str);
		else
			snprintf(buf, size, "\"%s\"", str);
		break;
	case CONFIG_TYPE_GROUP:
		snprintf(buf, size, "{ ... }");
		break;
	case CONFIG_TYPE_LIST:
		snprintf(buf, size, "( ... )");
		break;
	case CONFIG_TYPE_ARRAY:
		snprintf(buf, size, "[ ... ]");
		break;
	default:
		snprintf(buf, size, "(a value of unknown type)");
		break;
	}
	return buf;
}

/* ----------------------------------------------------------- typed values */

/*
 * Read an integer setting into *out.  Both libconfig integer types are
 * accepted ("5" and "5L"); anything else, or a value outside [min, max], is
 * an error that names the key (label, e.g. "limits.idle_timeout_ms" or
 * "listener 'smtp': port") and the allowed range.
 */
static int get_uint32(struct load_ctx *ctx, const config_setting_t *s, const char *label,
		      uint32_t min, uint32_t max, uint32_t *out)
{
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	int type = config_setting_type(s);
	long long value;

	if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
		return fail(ctx, config_setting_source_line(s),
			    "%s = %s: must be an integer between %u and %u",
			    label, show_value(s, shown, sizeof(shown)), min, max);
	value = config_setting_get_int64(s);
	if (value < (long long)min || value > (long long)max)
		return fail(ctx, config_setting_source_line(s),
			    "%s = %lld: must be between %u and %u", label, value, min, max);
	*out = (uint32_t)value;
	return 0;
}

/*
 * Copy a string setting into buf (size bytes, NUL included).  Control
 * characters are refused: every string here ends up in a path, a log line or
 * a comparison, and none of them has a use for one.
 */
static int get_string(struct load_ctx *ctx, const config_setting_t *s, const char *label,
		      char *buf, size_t size)
{
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	const char *str;
	size_t len;

	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return fail(ctx, config_setting_source_line(s), "%s = %s: must be a string",
			    label, show_value(s, shown, sizeof(shown)));
	str = config_setting_get_string(s);
	len = strlen(str);
	if (len >= size)
		return fail(ctx, config_setting_source_line(s),
			    "%s = %s: too long (%zu characters): must be at most %zu",
			    label, show_value(s, shown, sizeof(shown)), len, size - 1);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)str[i];

		if (c < 0x20 || c == 0x7f)
			return fail(ctx, config_setting_source_line(s),
				    "%s = %s: must not contain control characters",
				    label, show_value(s, shown, sizeof(shown)));
	}
	memcpy(buf, str, len + 1);
	return 0;
}

static int get_bool(struct load_ctx *ctx, const config_setting_t *s, const char *label,
		    bool *out)
{
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];

	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return fail(ctx, config_setting_source_line(s),
			    "%s = %s: must be true or false",
			    label, show_value(s, shown, sizeof(shown)));
	*out = config_setting_get_bool(s) != 0;
	return 0;
}

/*
 * Match a string setting against a table of names; *index gets the position.
 * The message lists the allowed names (allowed, e.g. "error, warn, info, debug").
 */
static int get_choice(struct load_ctx *ctx, const config_setting_t *s, const char *label,
		      const char *const *names, size_t count, const char *allowed,
		      size_t *index)
{
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	const char *str;

	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return fail(ctx, config_setting_source_line(s), "%s = %s: must be one of %s",
			    label, show_value(s, shown, sizeof(shown)), allowed);
	str = config_setting_get_string(s);
	for (size_t i = 0; i < count; i++) {
		if (strcmp(str, names[i]) == 0) {
			*index = i;
			return 0;
		}
	}
	return fail(ctx, config_setting_source_line(s), "%s = %s: must be one of %s",
		    label, show_value(s, shown, sizeof(shown)), allowed);
}

/* ------------------------------------------------------------- names */

/* Indexed by enum rm_log_level. */
static const char *const log_level_names[] = { "error", "warn", "info", "debug" };
static const char *const log_target_names[] = { "stderr", "syslog" };
/* Indexed by enum rm_tls_mode. */
static const char *const tls_mode_names[] = { "none", "starttls", "implicit" };

_Static_assert(RM_ARRAY_LEN(log_level_names) == RM_LOG_DEBUG + 1, "one name per log level");
_Static_assert(RM_ARRAY_LEN(tls_mode_names) == RM_TLS_IMPLICIT + 1, "one name per TLS mode");

const char *rm_log_level_name(enum rm_log_level level)
{
	if ((unsigned)level >= RM_ARRAY_LEN(log_level_names))
		return "unknown";
	return log_level_names[level];
}

const char *rm_tls_policy_name(enum rm_tls_policy policy)
{
	switch (policy) {
	case RM_TLS_POLICY_NONE: return "none";
	case RM_TLS_POLICY_MAY: return "may";
	case RM_TLS_POLICY_ENCRYPT: return "encrypt";
	case RM_TLS_POLICY_VERIFY: return "verify";
	}
	return "?";
}

const char *rm_tls_mode_name(enum rm_tls_mode mode)
{
	if ((unsigned)mode >= RM_ARRAY_LEN(tls_mode_names))
		return "unknown";
	return tls_mode_names[mode];
}

/*
 * The protocols a listener may serve.  A new protocol is one more row here
 * (and its handler in the engine); the message for an unknown protocol is
 * built from this table.
 */
static const char *const protocol_names[] = {
	"echo",		/* line echo: health checks and tests */
	"relay",	/* byte relay to `backend`: tests the engine's two-connection sessions */
	"spooltest",	/* messages straight into the spool: tests the spool from real connections */
	"smtp",		/* the SMTP server: MX (25), submission (587, 465) */
};

/* "a, b, c" from a table of names, for "must be one of ..." messages. */
static const char *join_names(const char *const *names, size_t count, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < count && used < size; i++) {
		int n = snprintf(buf + used, size - used, "%s%s", i > 0 ? ", " : "", names[i]);

		if (n < 0)
			break;
		used += (size_t)n;
	}
	return buf;
}

/* ------------------------------------------------------------- limits */

static const struct limit_rule {
	const char *name;
	size_t offset;			/* into struct rm_limits */
	uint32_t min;
	uint32_t max;
	bool power_of_two;		/* the kernel's buffer ring needs it */
} limit_rules[] = {
	{ "connections_per_worker", offsetof(struct rm_limits, connections_per_worker), 16, 1048576, false },
	{ "buffers_per_worker", offsetof(struct rm_limits, buffers_per_worker), 16, 32768, true },
	{ "buffer_size_bytes", offsetof(struct rm_limits, buffer_size_bytes), 512, 65536, false },
	{ "buffers_ring_window", offsetof(struct rm_limits, buffers_ring_window), 16, 32768, false },
	{ "write_blocks_per_worker", offsetof(struct rm_limits, write_blocks_per_worker), 16, 1048576, false },
	{ "output_bytes_max", offsetof(struct rm_limits, output_bytes_max), 4096, 67108864, false },
	{ "line_length_max", offsetof(struct rm_limits, line_length_max), 64, 65536, false },
	{ "idle_timeout_ms", offsetof(struct rm_limits, idle_timeout_ms), 100, 86400000, false },
	{ "connect_timeout_ms", offsetof(struct rm_limits, connect_timeout_ms), 100, 3600000, false },
	{ "shutdown_timeout_ms", offsetof(struct rm_limits, shutdown_timeout_ms), 0, 3600000, false },
	{ "listen_backlog", offsetof(struct rm_limits, listen_backlog), 1, 65535, false },
	{ "spool_segment_bytes_max", offsetof(struct rm_limits, spool_segment_bytes_max), 4194304, 2147483647u, false },
	/* A buffer must take the largest record (RM_SPOOL_RECORD_BYTES_MAX) and a segment header. */
	{ "spool_buffer_bytes", offsetof(struct rm_limits, spool_buffer_bytes), 2097152, 268435456, false },
	{ "spool_commit_interval_ms", offsetof(struct rm_limits, spool_commit_interval_ms), 0, 1000, false },
	{ "spool_commit_batch_max", offsetof(struct rm_limits, spool_commit_batch_max), 1, 1048576, false },
	{ "spool_messages_max", offsetof(struct rm_limits, spool_messages_max), 16, 16777216, false },
	{ "spool_receiving_max", offsetof(struct rm_limits, spool_receiving_max), 1, 1048576, false },
	{ "spool_segments_max", offsetof(struct rm_limits, spool_segments_max), 4, 1048576, false },
	{ "spool_preallocate", offsetof(struct rm_limits, spool_preallocate), 0, 1, false },
	{ "tls_handshake_timeout_ms", offsetof(struct rm_limits, tls_handshake_timeout_ms), 100, 600000, false },
	{ "tls_handshakes_max", offsetof(struct rm_limits, tls_handshakes_max), 1, 1048576, false },
	{ "tls_ticket_key_rotate_ms", offsetof(struct rm_limits, tls_ticket_key_rotate_ms), 1000, 604800000, false },
	/* RFC 5321 4.5.3.1.4: a server must take 512; RFC 4954 4: AUTH lines up to 12288. */
	{ "smtp_line_bytes_max", offsetof(struct rm_limits, smtp_line_bytes_max), 512, 12288, false },
	{ "smtp_text_line_bytes_max", offsetof(struct rm_limits, smtp_text_line_bytes_max), 0, 1048576, false },
	/* RFC 5321 4.5.3.1.8: at least 100 recipients must be accepted. */
	{ "smtp_recipients_max", offsetof(struct rm_limits, smtp_recipients_max), 100, 100000, false },
	{ "smtp_message_bytes_max", offsetof(struct rm_limits, smtp_message_bytes_max), 65536, 2147483647u, false },
	{ "smtp_errors_max", offsetof(struct rm_limits, smtp_errors_max), 1, 1000, false },
	{ "smtp_connections_max", offsetof(struct rm_limits, smtp_connections_max), 0, 16777216, false },
	{ "smtp_connections_per_client", offsetof(struct rm_limits, smtp_connections_per_client), 0, 1048576, false },
	{ "smtp_command_timeout_ms", offsetof(struct rm_limits, smtp_command_timeout_ms), 100, 3600000, false },
	{ "smtp_data_timeout_ms", offsetof(struct rm_limits, smtp_data_timeout_ms), 100, 3600000, false },
	{ "smtp_pregreet_wait_ms", offsetof(struct rm_limits, smtp_pregreet_wait_ms), 0, 60000, false },
	{ "smtp_proxy_timeout_ms", offsetof(struct rm_limits, smtp_proxy_timeout_ms), 100, 600000, false },
	{ "smtp_auth_failures_max", offsetof(struct rm_limits, smtp_auth_failures_max), 1, 1000000, false },
	{ "smtp_auth_failure_window_ms", offsetof(struct rm_limits, smtp_auth_failure_window_ms), 1000, 86400000, false },
	{ "smtp_auth_failure_delay_ms", offsetof(struct rm_limits, smtp_auth_failure_delay_ms), 0, 60000, false },
	{ "auth_threads", offsetof(struct rm_limits, auth_threads), 1, 64, false },
	{ "auth_queue_max", offsetof(struct rm_limits, auth_queue_max), 1, 1048576, false },
	{ "delivery_concurrency_per_destination", offsetof(struct rm_limits, delivery_concurrency_per_destination), 1, 10000, false },
	{ "delivery_connections_max", offsetof(struct rm_limits, delivery_connections_max), 1, 1048576, false },
	{ "delivery_messages_per_connection", offsetof(struct rm_limits, delivery_messages_per_connection), 1, 1000000, false },
	{ "delivery_connection_idle_ms", offsetof(struct rm_limits, delivery_connection_idle_ms), 0, 600000, false },
	{ "delivery_in_flight_max", offsetof(struct rm_limits, delivery_in_flight_max), 1, 1048576, false },
	{ "delivery_destinations_max", offsetof(struct rm_limits, delivery_destinations_max), 16, 1048576, false },
	{ "delivery_retry_initial_ms", offsetof(struct rm_limits, delivery_retry_initial_ms), 100, 86400000, false },
	{ "delivery_retry_max_ms", offsetof(struct rm_limits, delivery_retry_max_ms), 100, 604800000, false },
	{ "delivery_queue_lifetime_ms", offsetof(struct rm_limits, delivery_queue_lifetime_ms), 1000, 4000000000u, false },
	{ "delivery_dead_destination_ms", offsetof(struct rm_limits, delivery_dead_destination_ms), 0, 86400000, false },
	{ "delivery_delay_warning_ms", offsetof(struct rm_limits, delivery_delay_warning_ms), 0, 4000000000u, false },
	{ "smtp_client_timeout_ms", offsetof(struct rm_limits, smtp_client_timeout_ms), 100, 3600000, false },
	{ "smtp_client_data_timeout_ms", offsetof(struct rm_limits, smtp_client_data_timeout_ms), 100, 3600000, false },
	{ "dns_timeout_ms", offsetof(struct rm_limits, dns_timeout_ms), 100, 60000, false },
	{ "dns_tries", offsetof(struct rm_limits, dns_tries), 1, 10, false },
	{ "dns_queries_max", offsetof(struct rm_limits, dns_queries_max), 1, 1048576, false },
	{ "dns_ttl_max_ms", offsetof(struct rm_limits, dns_ttl_max_ms), 0, 86400000, false },
};

#define RM_LIMITS_KNOWN "connections_per_worker, buffers_per_worker, buffer_size_bytes, buffers_ring_window, " \
	"write_blocks_per_worker, output_bytes_max, line_length_max, idle_timeout_ms, " \
	"connect_timeout_ms, shutdown_timeout_ms, listen_backlog, spool_segment_bytes_max, " \
	"spool_buffer_bytes, spool_commit_interval_ms, spool_commit_batch_max, spool_messages_max, " \
	"spool_receiving_max, spool_segments_max, spool_preallocate, tls_handshake_timeout_ms, tls_handshakes_max, " \
	"tls_ticket_key_rotate_ms, smtp_line_bytes_max, smtp_text_line_bytes_max, smtp_recipients_max, " \
	"smtp_message_bytes_max, smtp_errors_max, smtp_connections_max, smtp_connections_per_client, " \
	"smtp_command_timeout_ms, smtp_data_timeout_ms, smtp_pregreet_wait_ms, smtp_proxy_timeout_ms, " \
	"smtp_auth_failures_max, smtp_auth_failure_window_ms, smtp_auth_failure_delay_ms, " \
	"auth_threads, auth_queue_max, delivery_concurrency_per_destination, delivery_connections_max, " \
	"delivery_messages_per_connection, delivery_connection_idle_ms, delivery_in_flight_max, " \
	"delivery_destinations_max, delivery_retry_initial_ms, delivery_retry_max_ms, " \
	"delivery_queue_lifetime_ms, delivery_dead_destination_ms, delivery_delay_warning_ms, smtp_client_timeout_ms, " \
	"smtp_client_data_timeout_ms, dns_timeout_ms, dns_tries, dns_queries_max, dns_ttl_max_ms"

static int parse_limits(struct load_ctx *ctx, const config_setting_t *group)
{
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	char label[64];
	int count;

	if (config_setting_type(group) != CONFIG_TYPE_GROUP)
		return fail(ctx, config_setting_source_line(group),
			    "limits = %s: must be a group { name = value; ... }",
			    show_value(group, shown, sizeof(shown)));
	count = config_setting_length(group);
	for (int i = 0; i < count; i++) {
		const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
		const struct limit_rule *rule = NULL;
		uint32_t *field;

		for (size_t r = 0; r < RM_ARRAY_LEN(limit_rules); r++) {
			if (strcmp(config_setting_name(s), limit_rules[r].name) == 0) {
				rule = &limit_rules[r];
				break;
			}
		}
		if (rule == NULL)
			return fail(ctx, config_setting_source_line(s),
				    "unknown setting 'limits.%s' (known: " RM_LIMITS_KNOWN ")",
				    config_setting_name(s));
		snprintf(label, sizeof(label), "limits.%s", rule->name);
		field = (uint32_t *)((char *)&ctx->cfg->limits + rule->offset);
		if (rule->power_of_two) {
			uint32_t v = 0;
			int type = config_setting_type(s);
			long long value = config_setting_get_int64(s);

			if ((type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
			    || value < rule->min || value > rule->max)
				v = 0;
			else
				v = (uint32_t)value;
			if (v == 0 || (v & (v - 1)) != 0)
				return fail(ctx, config_setting_source_line(s),
					    "%s = %s: must be a power of two between %u and %u",
					    label, show_value(s, shown, sizeof(shown)),
					    rule->min, rule->max);
			*field = v;
		} else if (get_uint32(ctx, s, label, rule->min, rule->max, field) != 0) {
			return -1;
		}
	}
	return 0;
}

/* ---------------------------------------------------------- listeners */

#define RM_LISTENER_KNOWN "name, protocol, address, port, tls, idle_timeout_ms, backend, " \
	"tls_cert, tls_key, tls_ciphers, tls_min_version, tls_sni, backend_tls, backend_tls_ca, " \
	"backend_tls_name, submission, proxy_protocol"

/* A host name for SNI: letters, digits, '-', '.', optionally "*." first. */
static bool sni_name_ok(const char *n)
{
	size_t len = strlen(n);

	if (len == 0 || len >= sizeof(((struct rm_tls_sni_config *)0)->name))
		return false;
	if (n[0] == '*') {
		if (n[1] != '.' || n[2] == '\0')
			return false;
		n += 2;
	}
	for (; *n != '\0'; n++)
		if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9') ||
		      *n == '-' || *n == '.'))
			return false;
	return true;
}

/* tls_sni = ( { name = "..."; cert = "..."; key = "..."; }, ... ) */
static int parse_tls_sni(struct load_ctx *ctx, const config_setting_t *list, struct rm_listener_config *l,
			 const char *label)
{
	unsigned line = config_setting_source_line(list);
	int count;

	if (config_setting_type(list) != CONFIG_TYPE_LIST)
		return fail(ctx, line, "%s: must be a list ( { name = \"...\"; cert = \"...\"; key = \"...\"; }, ... )",
			    label);
	count = config_setting_length(list);
	if (count > RM_TLS_SNI_MAX)
		return fail(ctx, line, "%s: at most %d entries", label, RM_TLS_SNI_MAX);
	for (int i = 0; i < count; i++) {
		const config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
		struct rm_tls_sni_config *e = &l->tls_sni[i];
		char elabel[96];
		const char *v;

		snprintf(elabel, sizeof(elabel), "%s[%d]", label, i);
		if (config_setting_type(g) != CONFIG_TYPE_GROUP)
			return fail(ctx, config_setting_source_line(g), "%s: must be a group { name; cert; key; }", elabel);
		memset(e, 0, sizeof(*e));
		for (int k = 0; k < config_setting_length(g); k++) {
			const config_setting_t *f = config_setting_get_elem(g, (unsigned)k);
			const char *fname = config_setting_name(f);
			char *dst = strcmp(fname, "name") == 0 ? e->name : strcmp(fname, "cert") == 0 ? e->cert :
				    strcmp(fname, "key") == 0 ? e->key : NULL;
			size_t size = dst == e->name ? sizeof(e->name) : sizeof(e->cert);

			if (dst == NULL)
				return fail(ctx, config_setting_source_line(f),
					    "%s: unknown setting '%s' (known: name, cert, key)", elabel, fname);
			if (get_string(ctx, f, elabel, dst, size) != 0)
				return -1;
		}
		v = e->name;
		if (!sni_name_ok(v))
			return fail(ctx, config_setting_source_line(g),
				    "%s: name = \"%s\": must be a host name or *.domain", elabel, v);
		if (e->cert[0] == '\0' || e->key[0] == '\0')
			return fail(ctx, config_setting_source_line(g), "%s: needs cert and key", elabel);
		for (int j = 0; j < i; j++)
			if (strcasecmp(l->tls_sni[j].name, e->name) == 0)
				return fail(ctx, config_setting_source_line(g), "%s: name \"%s\" given twice", elabel,
					    e->name);
	}
	l->tls_sni_count = (uint32_t)count;
	return 0;
}

/* "127.0.0.1:25" or "[::1]:25", numeric only: a listener's backend is no DNS name. */
static bool parse_host_port(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[64];
	const char *colon, *port_text;
	char *end;
	unsigned long port;
	size_t host_len;

	memset(ss, 0, sizeof(*ss));
	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (close == NULL || close[1] != ':')
			return false;
		host_len = (size_t)(close - text - 1);
		if (host_len >= sizeof(host))
			return false;
		memcpy(host, text + 1, host_len);
		port_text = close + 2;
	} else {
		colon = strrchr(text, ':');
		if (colon == NULL)
			return false;
		host_len = (size_t)(colon - text);
		if (host_len >= sizeof(host))
			return false;
		memcpy(host, text, host_len);
		port_text = colon + 1;
	}
	host[host_len] = '\0';
	errno = 0;
	port = strtoul(port_text, &end, 10);
	if (errno != 0 || end == port_text || *end != '\0' || port == 0 || port > 65535)
		return false;
	if (text[0] != '[') {
		struct sockaddr_in *in4 = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &in4->sin_addr) != 1)
			return false;
		in4->sin_family = AF_INET;
		in4->sin_port = htons((uint16_t)port);
		*len = sizeof(*in4);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
			return false;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*in6);
	}
	return true;
}

/* 1..31 characters of [A-Za-z0-9_-]: the name goes into log lines and ringmailctl. */
static bool listener_name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len >= RM_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
		      || c == '_' || c == '-'))
			return false;
	}
	return true;
}

static bool addr_is_wildcard(const unsigned char *bytes, int family)
{
	size_t len = family == AF_INET ? 4 : 16;

	for (size_t i = 0; i < len; i++)
		if (bytes[i] != 0)
			return false;
	return true;
}

/*
 * One listener field.  who is "listener 'NAME'" (or "listeners[N]" before the
 * name is known) and starts every message.
 */
static int parse_listener_field(struct load_ctx *ctx, const config_setting_t *s,
				struct rm_listener_config *l, const char *who, size_t index)
{
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	char label[80];
	const char *key = config_setting_name(s);
	unsigned line = config_setting_source_line(s);
	size_t choice = 0;

	snprintf(label, sizeof(label), "%s: %s", who, key);
	if (strcmp(key, "name") == 0)
		return 0;	/* read first, by parse_listener */
	if (strcmp(key, "protocol") == 0) {
		char allowed[128];

		join_names(protocol_names, RM_ARRAY_LEN(protocol_names), allowed, sizeof(allowed));
		if (get_choice(ctx, s, label, protocol_names, RM_ARRAY_LEN(protocol_names),
			       allowed, &choice) != 0)
			return -1;
		snprintf(l->protocol, sizeof(l->protocol), "%s", protocol_names[choice]);
		return 0;
	}
	if (strcmp(key, "address") == 0) {
		unsigned char *bytes = ctx->addr_bytes[index];

		if (get_string(ctx, s, label, l->address, sizeof(l->address)) != 0)
			return -1;
		if (inet_pton(AF_INET, l->address, bytes) == 1)
			ctx->addr_family[index] = AF_INET;
		else if (inet_pton(AF_INET6, l->address, bytes) == 1)
			ctx->addr_family[index] = AF_INET6;
		else
			return fail(ctx, line, "%s = %s: must be a numeric IPv4 or IPv6 address"
				    " (e.g. 127.0.0.1, ::1, 0.0.0.0)",
				    label, show_value(s, shown, sizeof(shown)));
		return 0;
	}
	if (strcmp(key, "port") == 0) {
		uint32_t port = 0;

		if (get_uint32(ctx, s, label, 1, 65535, &port) != 0)
			return -1;
		l->port = (uint16_t)port;
		return 0;
	}
	if (strcmp(key, "tls") == 0) {
		if (get_choice(ctx, s, label, tls_mode_names, RM_ARRAY_LEN(tls_mode_names),
			       "none, starttls, implicit", &choice) != 0)
			return -1;
		l->tls = (enum rm_tls_mode)choice;
		return 0;
	}
	/* Files are only named here; tls/ loads and checks them (also for -t). */
	if (strcmp(key, "tls_cert") == 0)
		return get_string(ctx, s, label, l->tls_cert, sizeof(l->tls_cert));
	if (strcmp(key, "tls_key") == 0)
		return get_string(ctx, s, label, l->tls_key, sizeof(l->tls_key));
	if (strcmp(key, "tls_ciphers") == 0)
		return get_string(ctx, s, label, l->tls_ciphers, sizeof(l->tls_ciphers));
	if (strcmp(key, "tls_sni") == 0)
		return parse_tls_sni(ctx, s, l, label);
	if (strcmp(key, "backend_tls") == 0) {
		static const char *const policies[] = { "none", "may", "encrypt", "verify" };

		if (get_choice(ctx, s, label, policies, 4, "none, may, encrypt, verify", &choice) != 0)
			return -1;
		l->backend_tls = (enum rm_tls_policy)choice;
		return 0;
	}
	if (strcmp(key, "backend_tls_ca") == 0)
		return get_string(ctx, s, label, l->backend_tls_ca, sizeof(l->backend_tls_ca));
	if (strcmp(key, "submission") == 0)
		return get_bool(ctx, s, label, &l->submission);
	if (strcmp(key, "proxy_protocol") == 0)
		return get_bool(ctx, s, label, &l->proxy_protocol);
	if (strcmp(key, "backend_tls_name") == 0)
		return get_string(ctx, s, label, l->backend_tls_name, sizeof(l->backend_tls_name));
	if (strcmp(key, "tls_min_version") == 0) {
		static const char *const versions[] = { "1.2", "1.3" };

		if (get_choice(ctx, s, label, versions, 2, "1.2, 1.3", &choice) != 0)
			return -1;
		l->tls_min_version = choice == 0 ? 0x0303 : 0x0304;
		return 0;
	}
	if (strcmp(key, "idle_timeout_ms") == 0) {
		uint32_t ms = 0;

		if (get_uint32(ctx, s, label, 0, 86400000, &ms) != 0)
			return -1;
		if (ms != 0 && ms < 100)
			return fail(ctx, line, "%s = %u: must be 0 (use limits.idle_timeout_ms)"
				    " or between 100 and 86400000", label, ms);
		l->idle_timeout_ms = ms;
		return 0;
	}
	if (strcmp(key, "backend") == 0) {
		if (get_string(ctx, s, label, l->backend, sizeof(l->backend)) != 0)
			return -1;
		if (!parse_host_port(l->backend, &l->backend_addr, &l->backend_addr_len))
			return fail(ctx, line, "%s = %s: must be a numeric ADDRESS:PORT"
				    " (e.g. 127.0.0.1:2007 or [::1]:2007)",
				    label, show_value(s, shown, sizeof(shown)));
		return 0;
	}
	return fail(ctx, line, "%s: unknown setting '%s' (known: " RM_LISTENER_KNOWN ")",
		    who, key);
}

static int parse_listener(struct load_ctx *ctx, const config_setting_t *group, size_t index)
{
	struct rm_listener_config *l = &ctx->cfg->listeners[index];
	unsigned line = config_setting_source_line(group);
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	const config_setting_t *name;
	char who[RM_NAME_MAX + 16];
	char label[RM_NAME_MAX + 32];
	int count;

	memset(l, 0, sizeof(*l));
	l->tls = RM_TLS_NONE;
	l->config_line = (int)line;
	snprintf(who, sizeof(who), "listeners[%zu]", index);
	if (config_setting_type(group) != CONFIG_TYPE_GROUP)
		return fail(ctx, line, "%s = %s: must be a group { name = \"...\"; protocol = ...; }",
			    who, show_value(group, shown, sizeof(shown)));

	/* The name first: every later message about this listener uses it. */
	name = config_setting_get_member(group, "name");
	if (name == NULL)
		return fail(ctx, line, "%s: name is required (1 to %d characters of A-Z a-z 0-9 _ -)",
			    who, RM_NAME_MAX - 1);
	snprintf(label, sizeof(label), "%s: name", who);
	if (config_setting_type(name) != CONFIG_TYPE_STRING
	    || !listener_name_ok(config_setting_get_string(name)))
		return fail(ctx, config_setting_source_line(name),
			    "%s = %s: must be 1 to %d characters of A-Z a-z 0-9 _ -",
			    label, show_value(name, shown, sizeof(shown)), RM_NAME_MAX - 1);
	snprintf(l->name, sizeof(l->name), "%s", config_setting_get_string(name));
	for (size_t i = 0; i < index; i++) {
		if (strcmp(ctx->cfg->listeners[i].name, l->name) == 0)
			return fail(ctx, config_setting_source_line(name),
				    "listener '%s': name already used by the listener at line %d",
				    l->name, ctx->cfg->listeners[i].config_line);
	}
	snprintf(who, sizeof(who), "listener '%s'", l->name);

	count = config_setting_length(group);
	for (int i = 0; i < count; i++) {
		if (parse_listener_field(ctx, config_setting_get_elem(group, (unsigned)i),
					 l, who, index) != 0)
			return -1;
	}

	if (l->protocol[0] == '\0') {
		char allowed[128];

		join_names(protocol_names, RM_ARRAY_LEN(protocol_names), allowed, sizeof(allowed));
		return fail(ctx, line, "%s: protocol is required (one of %s)", who, allowed);
	}
	if (l->address[0] == '\0')
		return fail(ctx, line, "%s: address is required (a numeric IPv4 or IPv6 address)",
			    who);
	if (l->port == 0)
		return fail(ctx, line, "%s: port is required (1 to 65535)", who);
	if (strcmp(l->protocol, "relay") == 0 && l->backend[0] == '\0')
		return fail(ctx, line, "%s: protocol relay needs backend = \"ADDRESS:PORT\"", who);
	if (strcmp(l->protocol, "relay") != 0 && l->backend[0] != '\0')
		return fail(ctx, line, "%s: backend is only for protocol relay", who);
	if (l->backend[0] == '\0' && (l->backend_tls != RM_TLS_POLICY_NONE || l->backend_tls_ca[0] != '\0' ||
				      l->backend_tls_name[0] != '\0'))
		return fail(ctx, line, "%s: backend_tls* settings need a backend", who);
	if (l->backend_tls == RM_TLS_POLICY_VERIFY && l->backend_tls_name[0] == '\0')
		return fail(ctx, line, "%s: backend_tls = \"verify\" needs backend_tls_name (the name the "
			    "backend's certificate must carry)", who);
	if (l->tls != RM_TLS_NONE && (l->tls_cert[0] == '\0' || l->tls_key[0] == '\0'))
		return fail(ctx, line, "%s: tls = \"%s\" needs tls_cert and tls_key (PEM files)", who,
			    rm_tls_mode_name(l->tls));
	if (l->tls == RM_TLS_NONE && (l->tls_cert[0] != '\0' || l->tls_key[0] != '\0' ||
				      l->tls_ciphers[0] != '\0' || l->tls_min_version != 0 || l->tls_sni_count != 0))
		return fail(ctx, line, "%s: tls_* settings need tls = \"starttls\" or \"implicit\"", who);
	if (l->tls != RM_TLS_NONE && l->tls_min_version == 0)
		l->tls_min_version = 0x0303;
	if ((l->submission || l->proxy_protocol) && strcmp(l->protocol, "smtp") != 0)
		return fail(ctx, line, "%s: submission and proxy_protocol are for protocol smtp", who);

	/*
	 * Listeners bind with SO_REUSEPORT (one socket per worker), so the kernel
	 * would accept a duplicate, or a wildcard over a specific address, and
	 * split the connections between them without a word.
	 */
	for (size_t i = 0; i < index; i++) {
		const struct rm_listener_config *o = &ctx->cfg->listeners[i];
		int family = ctx->addr_family[index];

		if (o->port != l->port || ctx->addr_family[i] != family)
			continue;
		if (memcmp(ctx->addr_bytes[i], ctx->addr_bytes[index],
			   family == AF_INET ? 4 : 16) == 0)
			return fail(ctx, line, "%s: address %s port %u is already used by"
				    " listener '%s' (line %d)", who, l->address, l->port,
				    o->name, o->config_line);
		if (addr_is_wildcard(ctx->addr_bytes[i], family)
		    || addr_is_wildcard(ctx->addr_bytes[index], family))
			return fail(ctx, line, "%s: address %s port %u overlaps listener '%s'"
				    " (%s port %u, line %d): a wildcard address covers every other",
				    who, l->address, l->port, o->name, o->address, o->port,
				    o->config_line);
	}
	return 0;
}

static int parse_listeners(struct load_ctx *ctx, const config_setting_t *list)
{
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	unsigned line = config_setting_source_line(list);
	int count;

	if (config_setting_type(list) != CONFIG_TYPE_LIST)
		return fail(ctx, line, "listeners = %s: must be a list ( { ... }, { ... } )",
			    show_value(list, shown, sizeof(shown)));
	count = config_setting_length(list);
	if (count < 1)
		return fail(ctx, line, "listeners: at least one listener is required");
	if (count > RM_LISTENERS_MAX)
		return fail(ctx, line, "listeners: %d listeners: at most %d are allowed",
			    count, RM_LISTENERS_MAX);
	for (int i = 0; i < count; i++) {
		if (parse_listener(ctx, config_setting_get_elem(list, (unsigned)i), (size_t)i) != 0)
			return -1;
		ctx->cfg->listener_count = (uint32_t)i + 1;
	}
	return 0;
}


/* ---------------------------------------------------------------- smtp */

#define RM_SMTP_KNOWN "hostname, banner, relay_domains, relay_domains_file, mynetworks, " \
	"proxy_trusted, passwd_file, recipient_map, sender_login_map, vrfy, auth_plaintext, " \
	"received_auth_user, pregreet, bare_lf"

/* Relay domains given inline; a longer list belongs in relay_domains_file. */
#define RM_SMTP_RELAY_DOMAINS_INLINE_MAX 4096

/*
 * A next hop as Postfix writes a transport's: HOST, HOST:PORT, [HOST] or
 * [HOST]:PORT (brackets: no MX lookup), HOST a domain or numeric address.
 * Only the form is checked here; routing (issue 6) resolves it.
 */
static bool nexthop_ok(const char *t)
{
	const char *host = t, *end, *colon;
	size_t host_len;

	if (t[0] == '[') {
		host = t + 1;
		end = strchr(host, ']');
		if (end == NULL)
			return false;
		host_len = (size_t)(end - host);
		colon = end[1] == ':' ? end + 1 : NULL;
		if (end[1] != '\0' && colon == NULL)
			return false;
	} else {
		colon = strrchr(t, ':');
		if (colon != NULL && strchr(t, ':') != colon)
			return false;	/* an IPv6 address needs brackets */
		host_len = colon != NULL ? (size_t)(colon - t) : strlen(t);
	}
	if (host_len == 0 || host_len > RM_SMTP_DOMAIN_BYTES_MAX)
		return false;
	for (size_t i = 0; i < host_len; i++) {
		char ch = host[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '-' || ch == ':'))
			return false;
	}
	if (colon != NULL) {
		char *stop = NULL;
		long port;

		if (colon[1] < '1' || colon[1] > '9')
			return false;
		port = strtol(colon + 1, &stop, 10);
		if (*stop != '\0' || port < 1 || port > 65535)
			return false;
	}
	return true;
}

/* A domain for policy lookups: RFC 5321 syntax, then lower case without a trailing dot. */
static bool domain_normalised(const char *in, char *out, size_t size)
{
	struct rm_smtp_domain d;
	ssize_t n;

	if (rm_smtp_domain_parse((const uint8_t *)in, strlen(in), RM_SMTP_ADDR_TRAILING_DOT, NULL, &d)
	    != RM_SMTP_ADDR_OK || d.kind != RM_SMTP_DOMAIN_NAME)
		return false;
	n = rm_smtp_domain_normalise((const uint8_t *)in, strlen(in), (uint8_t *)out, size - 1);
	if (n <= 0)
		return false;
	out[n] = '\0';
	return true;
}

static int parse_cidrs(struct load_ctx *ctx, const config_setting_t *s, const char *label,
		       struct rm_cidr_list *list)
{
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	unsigned line = config_setting_source_line(s);
	int count;

	if (config_setting_type(s) != CONFIG_TYPE_ARRAY && config_setting_type(s) != CONFIG_TYPE_LIST)
		return fail(ctx, line, "%s = %s: must be a list of networks [ \"127.0.0.0/8\", \"::1/128\" ]",
			    label, show_value(s, shown, sizeof(shown)));
	memset(list, 0, sizeof(*list));
	count = config_setting_length(s);
	for (int i = 0; i < count; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char why[160];

		if (config_setting_type(e) != CONFIG_TYPE_STRING)
			return fail(ctx, config_setting_source_line(e), "%s[%d] = %s: must be a string",
				    label, i, show_value(e, shown, sizeof(shown)));
		if (rm_cidr_list_add(list, config_setting_get_string(e), why, sizeof(why)) != 0)
			return fail(ctx, config_setting_source_line(e), "%s[%d] = %s: %s", label, i,
				    show_value(e, shown, sizeof(shown)), why);
	}
	return 0;
}

/* relay_domains = ( { domain = "..."; nexthop = "..."; }, ... ) into "domain nexthop" lines. */
static int parse_relay_domains(struct load_ctx *ctx, const config_setting_t *list)
{
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	int count;
	size_t used = 0, cap;

	if (config_setting_type(list) != CONFIG_TYPE_LIST)
		return fail(ctx, config_setting_source_line(list),
			    "smtp.relay_domains = %s: must be a list ( { domain = \"...\"; nexthop = \"...\"; } )",
			    show_value(list, shown, sizeof(shown)));
	count = config_setting_length(list);
	if (count > RM_SMTP_RELAY_DOMAINS_INLINE_MAX)
		return fail(ctx, config_setting_source_line(list),
			    "smtp.relay_domains: %d entries; at most %d here, use relay_domains_file", count,
			    RM_SMTP_RELAY_DOMAINS_INLINE_MAX);
	cap = (size_t)count * (RM_SMTP_DOMAIN_BYTES_MAX + 300) + 1;
	free(ctx->relay_text);
	ctx->relay_text = malloc(cap);
	if (ctx->relay_text == NULL)
		return fail(ctx, 0, "out of memory");
	ctx->relay_text[0] = '\0';
	for (int i = 0; i < count; i++) {
		const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
		unsigned line = config_setting_source_line(e);
		const char *domain = NULL, *nexthop = NULL;
		char norm[RM_SMTP_DOMAIN_BYTES_MAX + 2];
		int n;

		if (config_setting_type(e) != CONFIG_TYPE_GROUP)
			return fail(ctx, line, "smtp.relay_domains[%d]: must be a group { domain = \"...\"; nexthop = \"...\"; }", i);
		for (int k = 0; k < config_setting_length(e); k++) {
			const config_setting_t *f = config_setting_get_elem(e, (unsigned)k);
			const char *key = config_setting_name(f);

			if (strcmp(key, "domain") != 0 && strcmp(key, "nexthop") != 0)
				return fail(ctx, config_setting_source_line(f),
					    "smtp.relay_domains[%d]: unknown setting '%s' (known: domain, nexthop)", i, key);
			if (config_setting_type(f) != CONFIG_TYPE_STRING)
				return fail(ctx, config_setting_source_line(f),
					    "smtp.relay_domains[%d]: %s = %s: must be a string", i, key,
					    show_value(f, shown, sizeof(shown)));
			if (strcmp(key, "domain") == 0)
				domain = config_setting_get_string(f);
			else
				nexthop = config_setting_get_string(f);
		}
		if (domain == NULL || !domain_normalised(domain, norm, sizeof(norm)))
			return fail(ctx, line, "smtp.relay_domains[%d]: domain must be a domain name (e.g. example.org)", i);
		if (nexthop == NULL || !nexthop_ok(nexthop) || strlen(nexthop) >= 300)
			return fail(ctx, line, "smtp.relay_domains[%d] (%s): nexthop must be HOST, HOST:PORT, "
				    "[HOST] or [HOST]:PORT", i, norm);
		n = snprintf(ctx->relay_text + used, cap - used, "%s %s\n", norm, nexthop);
		if (n < 0 || (size_t)n >= cap - used)
			return fail(ctx, line, "smtp.relay_domains: too long");
		used += (size_t)n;
	}
	ctx->relay_text_len = used;
	return 0;
}

static int parse_smtp(struct load_ctx *ctx, const config_setting_t *group)
{
	static const char *const pregreet_names[] = { "reject", "log" };
	static const char *const bare_lf_names[] = { "reject", "normalise" };
	struct rm_smtp_config *sc = &ctx->cfg->smtp;
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	char label[80];
	size_t choice = 0;

	if (config_setting_type(group) != CONFIG_TYPE_GROUP)
		return fail(ctx, config_setting_source_line(group),
			    "smtp = %s: must be a group { name = value; ... }",
			    show_value(group, shown, sizeof(shown)));
	for (int i = 0; i < config_setting_length(group); i++) {
		const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
		const char *key = config_setting_name(s);
		unsigned line = config_setting_source_line(s);
		int rc;

		snprintf(label, sizeof(label), "smtp.%s", key);
		if (strcmp(key, "hostname") == 0) {
			char norm[RM_SMTP_DOMAIN_BYTES_MAX + 2];

			if (get_string(ctx, s, label, sc->hostname, sizeof(sc->hostname)) != 0)
				return -1;
			if (!domain_normalised(sc->hostname, norm, sizeof(norm)))
				return fail(ctx, line, "%s = %s: must be a domain name (e.g. mx.example.org)",
					    label, show_value(s, shown, sizeof(shown)));
			memcpy(sc->hostname, norm, strlen(norm) + 1);
			rc = 0;
		} else if (strcmp(key, "banner") == 0) {
			rc = get_string(ctx, s, label, sc->banner, sizeof(sc->banner));
		} else if (strcmp(key, "relay_domains") == 0) {
			ctx->relay_domains_line = line;
			rc = parse_relay_domains(ctx, s);
		} else if (strcmp(key, "relay_domains_file") == 0) {
			ctx->relay_domains_file_line = line;
			rc = get_string(ctx, s, label, sc->relay_domains_file, sizeof(sc->relay_domains_file));
		} else if (strcmp(key, "mynetworks") == 0) {
			rc = parse_cidrs(ctx, s, label, sc->mynetworks);
		} else if (strcmp(key, "proxy_trusted") == 0) {
			rc = parse_cidrs(ctx, s, label, sc->proxy_trusted);
		} else if (strcmp(key, "passwd_file") == 0) {
			ctx->passwd_line = line;
			rc = get_string(ctx, s, label, sc->passwd_file, sizeof(sc->passwd_file));
		} else if (strcmp(key, "recipient_map") == 0) {
			ctx->recipient_map_line = line;
			rc = get_string(ctx, s, label, sc->recipient_map_file, sizeof(sc->recipient_map_file));
		} else if (strcmp(key, "sender_login_map") == 0) {
			ctx->sender_login_map_line = line;
			rc = get_string(ctx, s, label, sc->sender_login_map_file, sizeof(sc->sender_login_map_file));
		} else if (strcmp(key, "vrfy") == 0) {
			rc = get_bool(ctx, s, label, &sc->vrfy);
		} else if (strcmp(key, "auth_plaintext") == 0) {
			rc = get_bool(ctx, s, label, &sc->auth_plaintext);
		} else if (strcmp(key, "received_auth_user") == 0) {
			rc = get_bool(ctx, s, label, &sc->received_auth_user);
		} else if (strcmp(key, "pregreet") == 0) {
			rc = get_choice(ctx, s, label, pregreet_names, 2, "reject, log", &choice);
			sc->pregreet = (enum rm_smtp_pregreet)choice;
		} else if (strcmp(key, "bare_lf") == 0) {
			rc = get_choice(ctx, s, label, bare_lf_names, 2, "reject, normalise", &choice);
			sc->bare_lf = (enum rm_smtp_bare_lf)choice;
		} else {
			return fail(ctx, line, "unknown setting '%s' (known: " RM_SMTP_KNOWN ")", label);
		}
		if (rc != 0)
			return -1;
	}
	if (ctx->relay_text != NULL && sc->relay_domains_file[0] != '\0')
		return fail(ctx, config_setting_source_line(group),
			    "smtp: relay_domains and relay_domains_file: give one of them");
	return 0;
}

static void smtp_tables_free(struct rm_smtp_config *sc, struct rm_delivery_config *dc)
{
	if (sc->relay_domains != NULL)
		rm_map_unref(sc->relay_domains);
	if (sc->recipient_map != NULL)
		rm_map_unref(sc->recipient_map);
	if (sc->sender_login_map != NULL)
		rm_map_unref(sc->sender_login_map);
	if (sc->passwd != NULL)
		rm_passwd_unref(sc->passwd);
	free(sc->mynetworks);
	free(sc->proxy_trusted);
	if (dc->tls_policy_map != NULL)
		rm_map_unref(dc->tls_policy_map);
	dc->tls_policy_map = NULL;
	explicit_bzero(dc->smarthost_password, sizeof(dc->smarthost_password));
	sc->relay_domains = sc->recipient_map = sc->sender_login_map = NULL;
	sc->passwd = NULL;
	sc->mynetworks = sc->proxy_trusted = NULL;
}

/* A table named by the configuration failed: "CONFIG:LINE: smtp.KEY: FILE:LINE: why". */
static int table_fail(struct load_ctx *ctx, unsigned line, const char *key, const char *why)
{
	return fail(ctx, line, "smtp.%s: %s", key, why);
}

/*
 * After every setting is read: the files the smtp group names.  Loaded here
 * so that ringmaild -t and a reload check them like any setting.
 */
static int load_smtp_tables(struct load_ctx *ctx)
{
	struct rm_smtp_config *sc = &ctx->cfg->smtp;
	char why[512];

	if (sc->hostname[0] == '\0') {
		char host[RM_SMTP_DOMAIN_BYTES_MAX + 1] = "";
		char norm[sizeof(sc->hostname)];

		if (gethostname(host, sizeof(host) - 1) != 0 || !domain_normalised(host, norm, sizeof(norm)))
			snprintf(norm, sizeof(norm), "%s", "localhost.localdomain");
		snprintf(sc->hostname, sizeof(sc->hostname), "%s", norm);
	}
	if (sc->relay_domains_file[0] != '\0') {
		if (rm_map_load_file(sc->relay_domains_file, &sc->relay_domains, why, sizeof(why)) != 0)
			return table_fail(ctx, ctx->relay_domains_file_line, "relay_domains_file", why);
	} else {
		const char *text = ctx->relay_text != NULL ? ctx->relay_text : "";

		if (rm_map_load_buffer("smtp.relay_domains", text, ctx->relay_text != NULL ? ctx->relay_text_len : 0,
				       &sc->relay_domains, why, sizeof(why)) != 0)
			return table_fail(ctx, ctx->relay_domains_line, "relay_domains", why);
	}
	if (sc->recipient_map_file[0] != '\0' &&
	    rm_map_load_file(sc->recipient_map_file, &sc->recipient_map, why, sizeof(why)) != 0)
		return table_fail(ctx, ctx->recipient_map_line, "recipient_map", why);
	if (sc->sender_login_map_file[0] != '\0' &&
	    rm_map_load_file(sc->sender_login_map_file, &sc->sender_login_map, why, sizeof(why)) != 0)
		return table_fail(ctx, ctx->sender_login_map_line, "sender_login_map", why);
	if (sc->passwd_file[0] != '\0' &&
	    rm_passwd_load(sc->passwd_file, &sc->passwd, why, sizeof(why), NULL, NULL) != 0)
		return table_fail(ctx, ctx->passwd_line, "passwd_file", why);
	return 0;
}

/* ------------------------------------------------------------ delivery */

#define RM_DELIVERY_KNOWN "enabled, smarthost, smarthost_user, smarthost_password_file, tls, tls_ca, " \
	"tls_policy_map, dns_servers, helo_name, port"

static int parse_delivery(struct load_ctx *ctx, const config_setting_t *group)
{
	static const char *const policies[] = { "none", "may", "encrypt", "verify" };
	struct rm_delivery_config *dc = &ctx->cfg->delivery;
	char shown[RM_CONFIG_SHOW_CHARS_MAX + 16];
	char label[80];
	size_t choice = 0;

	if (config_setting_type(group) != CONFIG_TYPE_GROUP)
		return fail(ctx, config_setting_source_line(group),
			    "delivery = %s: must be a group { name = value; ... }",
			    show_value(group, shown, sizeof(shown)));
	for (int i = 0; i < config_setting_length(group); i++) {
		const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
		const char *key = config_setting_name(s);
		unsigned line = config_setting_source_line(s);
		int rc;

		snprintf(label, sizeof(label), "delivery.%s", key);
		if (strcmp(key, "enabled") == 0) {
			rc = get_bool(ctx, s, label, &dc->enabled);
		} else if (strcmp(key, "smarthost") == 0) {
			rc = get_string(ctx, s, label, dc->smarthost, sizeof(dc->smarthost));
			if (rc == 0 && dc->smarthost[0] != '\0' && !nexthop_ok(dc->smarthost))
				return fail(ctx, line, "%s = %s: must be HOST, HOST:PORT, [HOST] or [HOST]:PORT", label,
					    show_value(s, shown, sizeof(shown)));
		} else if (strcmp(key, "smarthost_user") == 0) {
			rc = get_string(ctx, s, label, dc->smarthost_user, sizeof(dc->smarthost_user));
		} else if (strcmp(key, "smarthost_password_file") == 0) {
			ctx->smarthost_password_line = line;
			rc = get_string(ctx, s, label, dc->smarthost_password_file, sizeof(dc->smarthost_password_file));
		} else if (strcmp(key, "tls") == 0) {
			rc = get_choice(ctx, s, label, policies, 4, "none, may, encrypt, verify", &choice);
			dc->tls = (enum rm_tls_policy)choice;
		} else if (strcmp(key, "tls_ca") == 0) {
			rc = get_string(ctx, s, label, dc->tls_ca, sizeof(dc->tls_ca));
		} else if (strcmp(key, "tls_policy_map") == 0) {
			ctx->tls_policy_map_line = line;
			rc = get_string(ctx, s, label, dc->tls_policy_map_file, sizeof(dc->tls_policy_map_file));
		} else if (strcmp(key, "port") == 0) {
			uint32_t port = 0;

			rc = get_uint32(ctx, s, label, 1, 65535, &port);
			dc->port = (uint16_t)port;
		} else if (strcmp(key, "dns_servers") == 0) {
			rc = get_string(ctx, s, label, dc->dns_servers, sizeof(dc->dns_servers));
		} else if (strcmp(key, "helo_name") == 0) {
			char norm[RM_SMTP_DOMAIN_BYTES_MAX + 2];

			rc = get_string(ctx, s, label, dc->helo_name, sizeof(dc->helo_name));
			if (rc == 0 && dc->helo_name[0] != '\0' && !domain_normalised(dc->helo_name, norm, sizeof(norm)))
				return fail(ctx, line, "%s = %s: must be a domain name", label,
					    show_value(s, shown, sizeof(shown)));
		} else {
			return fail(ctx, line, "unknown setting '%s' (known: " RM_DELIVERY_KNOWN ")", label);
		}
		if (rc != 0)
			return -1;
	}
	if ((dc->smarthost_user[0] != '\0') != (dc->smarthost_password_file[0] != '\0'))
		return fail(ctx, config_setting_source_line(group),
			    "delivery: smarthost_user and smarthost_password_file go together");
	if (dc->smarthost_user[0] != '\0' && dc->smarthost[0] == '\0')
		return fail(ctx, config_setting_source_line(group), "delivery: smarthost_user needs a smarthost");
	return 0;
}

/* The smarthost password: the file's first line, so it is not in the configuration. */
static int read_password_file(const char *path, char *out, size_t size, char *why, size_t why_size)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (f == NULL) {
		snprintf(why, why_size, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (fgets(out, (int)size, f) == NULL) {
		snprintf(why, why_size, "%s: empty", path);
		fclose(f);
		return -1;
	}
	fclose(f);
	n = strcspn(out, "\r\n");
	out[n] = '\0';
	if (n == 0) {
		snprintf(why, why_size, "%s: the first line is empty", path);
		return -1;
	}
	return 0;
}

static int load_delivery_tables(struct load_ctx *ctx)
{
	struct rm_delivery_config *dc = &ctx->cfg->delivery;
	char why[512];

	if (dc->helo_name[0] == '\0')
		snprintf(dc->helo_name, sizeof(dc->helo_name), "%s", ctx->cfg->smtp.hostname);
	if (dc->tls_policy_map_file[0] != '\0') {
		if (rm_map_load_file(dc->tls_policy_map_file, &dc->tls_policy_map, why, sizeof(why)) != 0)
			return fail(ctx, ctx->tls_policy_map_line, "delivery.tls_policy_map: %s", why);
		for (uint32_t i = 0; i < rm_map_count(dc->tls_policy_map); i++) {
			const char *key, *value;
			uint32_t line;

			if (rm_map_entry(dc->tls_policy_map, i, &key, &value, &line) &&
			    strcmp(value, "none") != 0 && strcmp(value, "may") != 0 && strcmp(value, "encrypt") != 0 &&
			    strcmp(value, "verify") != 0)
				return fail(ctx, ctx->tls_policy_map_line,
					    "delivery.tls_policy_map: %s:%u: %s: the policy must be none, may, encrypt or verify",
					    dc->tls_policy_map_file, line, key);
		}
	}
	if (dc->smarthost_password_file[0] != '\0' &&
	    read_password_file(dc->smarthost_password_file, dc->smarthost_password, sizeof(dc->smarthost_password),
			       why, sizeof(why)) != 0)
		return fail(ctx, ctx->smarthost_password_line, "delivery.smarthost_password_file: %s", why);
	return 0;
}

/* ---------------------------------------------------------- top level */

static uint32_t online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	if (n > RM_WORKERS_MAX)
		return RM_WORKERS_MAX;
	return (uint32_t)n;
}

static int parse_top(struct load_ctx *ctx, const config_setting_t *s)
{
	struct rm_config *cfg = ctx->cfg;
	const char *key = config_setting_name(s);
	unsigned line = config_setting_source_line(s);
	size_t choice = 0;

	if (strcmp(key, "workers") == 0) {
		if (get_uint32(ctx, s, key, 0, RM_WORKERS_MAX, &cfg->workers) != 0)
			return -1;
		if (cfg->workers == 0)
			cfg->workers = online_cpus();
		return 0;
	}
	if (strcmp(key, "log_level") == 0) {
		if (get_choice(ctx, s, key, log_level_names, RM_ARRAY_LEN(log_level_names),
			       "error, warn, info, debug", &choice) != 0)
			return -1;
		cfg->log_level = (enum rm_log_level)choice;
		return 0;
	}
	if (strcmp(key, "log_target") == 0) {
		if (get_choice(ctx, s, key, log_target_names, RM_ARRAY_LEN(log_target_names),
			       "stderr, syslog", &choice) != 0)
			return -1;
		cfg->log_syslog = choice == 1;
		return 0;
	}
	if (strcmp(key, "user") == 0) {
		cfg->user_line = (int)line;
		return get_string(ctx, s, key, cfg->user, sizeof(cfg->user));
	}
	if (strcmp(key, "allow_root") == 0)
		return get_bool(ctx, s, key, &cfg->allow_root);
	if (strcmp(key, "spool_dir") == 0) {
		if (get_string(ctx, s, key, cfg->spool_dir, sizeof(cfg->spool_dir)) != 0)
			return -1;
		if (cfg->spool_dir[0] == '\0')
			return fail(ctx, line, "spool_dir = \"\": must name a directory");
		return 0;
	}
	if (strcmp(key, "control_socket") == 0) {
		/* bind() takes the path in sockaddr_un.sun_path, NUL included. */
		char path[sizeof(((struct sockaddr_un *)0)->sun_path)];

		_Static_assert(sizeof(path) <= sizeof(cfg->control_socket),
			       "control_socket holds any sun_path");
		if (get_string(ctx, s, key, path, sizeof(path)) != 0)
			return -1;
		memcpy(cfg->control_socket, path, strlen(path) + 1);
		return 0;
	}
	if (strcmp(key, "limits") == 0)
		return parse_limits(ctx, s);
	if (strcmp(key, "listeners") == 0)
		return parse_listeners(ctx, s);
	if (strcmp(key, "smtp") == 0)
		return parse_smtp(ctx, s);
	if (strcmp(key, "delivery") == 0)
		return parse_delivery(ctx, s);
	return fail(ctx, line, "unknown setting '%s' (known: workers, log_level, log_target,"
		    " user, allow_root, spool_dir, control_socket, limits, smtp, delivery, listeners)", key);
}

/* ------------------------------------------------------------- prescan */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool is_name_start(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '*';
}

static bool is_name_char(char c)
{
	return is_name_start(c) || is_digit(c) || c == '-' || c == '_';
}

/*
 * One number token at text[*pos], matched as libconfig 1.5's scanner would
 * (longest match among integer, integer64, hex, hex64 and float).  A plain
 * integer or hex number whose value does not fit in an int is an error:
 * 1.5 would keep only its low 32 bits.  Advances *pos past the token, or by
 * one character when there is no number here (a lone sign).
 */
static int prescan_number(struct load_ctx *ctx, const char *text, size_t *pos, unsigned line)
{
	size_t start = *pos, i = *pos, digits_start, digits;
	bool negative = false, is_float = false;
	unsigned long long value = 0;

	if (text[i] == '-' || text[i] == '+') {
		negative = text[i] == '-';
		i++;
	}
	digits_start = i;
	while (is_digit(text[i]))
		i++;
	digits = i - digits_start;

	if (start == digits_start && digits == 1 && text[start] == '0'
	    && (text[i] == 'x' || text[i] == 'X') && hex_value(text[i + 1]) >= 0) {
		i++;
		while (hex_value(text[i]) >= 0) {
			if (value <= 0x7fffffffULL)
				value = value * 16 + (unsigned)hex_value(text[i]);
			i++;
		}
		if (text[i] == 'L') {
			i += text[i + 1] == 'L' ? 2 : 1;
		} else if (value > 0x7fffffffULL) {
			return fail(ctx, line, "%.*s: number too large (at most 0x7fffffff)",
				    (int)(i - start > 40 ? 40 : i - start), text + start);
		}
		*pos = i;
		return 0;
	}

	if (text[i] == '.') {
		is_float = true;
		i++;
		while (is_digit(text[i]))
			i++;
	}
	if ((text[i] == 'e' || text[i] == 'E') && (digits > 0 || is_float)) {
		size_t e = i + 1;

		if (text[e] == '-' || text[e] == '+')
			e++;
		if (is_digit(text[e])) {
			while (is_digit(text[e]))
				e++;
			is_float = true;
			i = e;
		}
	}
	if (is_float) {
		*pos = i;
		return 0;
	}
	if (digits == 0) {
		*pos = start + 1;
		return 0;
	}
	i = digits_start + digits;
	if (text[i] == 'L') {
		*pos = i + (text[i + 1] == 'L' ? 2 : 1);
		return 0;
	}
	for (size_t d = digits_start; d < i; d++) {
		if (value <= 2147483648ULL)
			value = value * 10 + (unsigned)(text[d] - '0');
	}
	if (value > (negative ? 2147483648ULL : 2147483647ULL))
		return fail(ctx, line, "%.*s: number too large (between -2147483648 and 2147483647)",
			    (int)(i - start > 40 ? 40 : i - start), text + start);
	*pos = i;
	return 0;
}

/*
 * Walk the text with the token rules of libconfig 1.5 (strings, comments,
 * names, numbers) and refuse what it would accept wrongly; see DESCRIPTION.
 * Every iteration advances by at least one character, so the walk ends.
 */
static int prescan(struct load_ctx *ctx, const char *text, size_t len)
{
	enum { IN_CODE, IN_STRING, IN_COMMENT } state = IN_CODE;
	unsigned line = 1, comment_line = 0;
	bool line_start = true;
	size_t i = 0;

	while (i < len) {
		char c = text[i];

		if (state == IN_COMMENT) {
			if (c == '*' && text[i + 1] == '/') {
				state = IN_CODE;
				i += 2;
				continue;
			}
			if (c == '\n')
				line++;
			i++;
			continue;
		}
		if (state == IN_STRING) {
			if (c == '"') {
				state = IN_CODE;
			} else if (c == '\\') {
				if (text[i + 1] == '"' || text[i + 1] == '\\') {
					i += 2;
					continue;
				}
				if ((text[i + 1] == 'x' || text[i + 1] == 'X')
				    && text[i + 2] == '0' && text[i + 3] == '0')
					return fail(ctx, line, "\\x00 in a string: strings cannot"
						    " contain NUL characters");
			} else if (c == '\n') {
				line++;
			}
			i++;
			continue;
		}

		/* libconfig recognizes "@include" only at the start of a line. */
		if (line_start) {
			size_t j = i;

			while (text[j] == ' ' || text[j] == '\t')
				j++;
			if (strncmp(text + j, "@include", 8) == 0)
				return fail(ctx, line, "@include is not supported: keep the"
					    " configuration in this one file");
			line_start = false;
		}
		if (c == '\n') {
			line++;
			line_start = true;
			i++;
		} else if (c == '"') {
			state = IN_STRING;
			i++;
		} else if (c == '/' && text[i + 1] == '*') {
			state = IN_COMMENT;
			comment_line = line;
			i += 2;
		} else if (c == '#' || (c == '/' && text[i + 1] == '/')) {
			while (i < len && text[i] != '\n')
				i++;
		} else if (is_name_start(c)) {
			while (is_name_char(text[i]))
				i++;
		} else if (is_digit(c) || c == '-' || c == '+' || c == '.') {
			if (prescan_number(ctx, text, &i, line) != 0)
				return -1;
		} else {
			i++;
		}
	}
	if (state == IN_COMMENT)
		return fail(ctx, comment_line, "unterminated /* comment: it would hide the rest"
			    " of the file");
	/* An unterminated string is left to libconfig, which reports it. */
	return 0;
}

/* --------------------------------------------------------------- loading */

void rm_config_defaults(struct rm_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->workers = online_cpus();
	cfg->log_level = RM_LOG_INFO;
	cfg->log_syslog = false;
	cfg->allow_root = false;
	snprintf(cfg->spool_dir, sizeof(cfg->spool_dir), "%s", "/var/spool/ringmail");
	cfg->limits = (struct rm_limits) {
		.connections_per_worker = 16384,
		.buffers_per_worker = 4096,
		.buffers_ring_window = 256,
		.buffer_size_bytes = 4096,
		.write_blocks_per_worker = 8192,
		.output_bytes_max = 262144,
		.line_length_max = 1000,
		.idle_timeout_ms = 300000,
		.connect_timeout_ms = 30000,
		.shutdown_timeout_ms = 10000,
		.listen_backlog = 4096,
		.spool_segment_bytes_max = 67108864,
		.spool_buffer_bytes = 4194304,
		.spool_commit_interval_ms = 0,
		.spool_commit_batch_max = 4096,
		.spool_messages_max = 100000,
		.spool_receiving_max = 4096,
		.spool_segments_max = 4096,
		.spool_preallocate = 1,
		.tls_handshake_timeout_ms = 10000,
		.tls_handshakes_max = 1024,
		.tls_ticket_key_rotate_ms = 3600000,
		.smtp_line_bytes_max = 512,
		.smtp_text_line_bytes_max = 1000,
		.smtp_recipients_max = 1000,
		.smtp_message_bytes_max = 52428800,
		.smtp_errors_max = 20,
		.smtp_connections_max = 20000,
		.smtp_connections_per_client = 50,
		.smtp_command_timeout_ms = 300000,
		.smtp_data_timeout_ms = 180000,
		.smtp_pregreet_wait_ms = 0,
		.smtp_proxy_timeout_ms = 10000,
		.smtp_auth_failures_max = 10,
		.smtp_auth_failure_window_ms = 600000,
		.smtp_auth_failure_delay_ms = 1000,
		.auth_threads = 2,
		.auth_queue_max = 1024,
		.delivery_concurrency_per_destination = 20,
		.delivery_connections_max = 1000,
		.delivery_messages_per_connection = 100,
		.delivery_connection_idle_ms = 2000,
		.delivery_in_flight_max = 10000,
		.delivery_destinations_max = 4096,
		.delivery_retry_initial_ms = 300000,
		.delivery_retry_max_ms = 3600000,
		.delivery_queue_lifetime_ms = 432000000,
		.delivery_dead_destination_ms = 60000,
		.delivery_delay_warning_ms = 0,
		.smtp_client_timeout_ms = 300000,
		.smtp_client_data_timeout_ms = 600000,
		.dns_timeout_ms = 5000,
		.dns_tries = 2,
		.dns_queries_max = 1024,
		.dns_ttl_max_ms = 3600000,
	};
	cfg->delivery.enabled = true;
	cfg->delivery.port = 25;
	cfg->delivery.tls = RM_TLS_POLICY_MAY;
	snprintf(cfg->smtp.banner, sizeof(cfg->smtp.banner), "%s", "ESMTP ringmail");
	cfg->smtp.vrfy = true;
	cfg->listener_count = 0;
}

/*
 * Parse text (NUL-terminated, len bytes) into a fresh configuration and copy
 * it into *out only if everything is valid.  The libconfig tree lives only
 * inside this function: config_destroy runs on every path.
 */
static int load_text(struct rm_config *out, const char *text, size_t len, const char *name,
		     unsigned flags, char *err, size_t err_size)
{
	struct load_ctx ctx;
	struct rm_config cfg;
	config_setting_t *root;
	config_t lc;
	int count, rc = 0;

	memset(&ctx, 0, sizeof(ctx));
	ctx.name = name;
	ctx.err = err;
	ctx.err_size = err_size;
	ctx.cfg = &cfg;
	rm_config_defaults(&cfg);

	if (strlen(name) >= sizeof(cfg.path))
		return fail(&ctx, 0, "path too long: at most %zu characters", sizeof(cfg.path) - 1);
	snprintf(cfg.path, sizeof(cfg.path), "%s", name);
	if (prescan(&ctx, text, len) != 0)
		return -1;
	cfg.smtp.mynetworks = calloc(1, sizeof(*cfg.smtp.mynetworks));
	cfg.smtp.proxy_trusted = calloc(1, sizeof(*cfg.smtp.proxy_trusted));
	if (cfg.smtp.mynetworks == NULL || cfg.smtp.proxy_trusted == NULL) {
		smtp_tables_free(&cfg.smtp, &cfg.delivery);
		return fail(&ctx, 0, "out of memory");
	}

	config_init(&lc);
	if (config_read_string(&lc, text) != CONFIG_TRUE) {
		const char *why = config_error_text(&lc);
		int line = config_error_line(&lc);

		rc = fail(&ctx, line > 0 ? (unsigned)line : 0, "%s",
			  why != NULL ? why : "cannot parse");
		config_destroy(&lc);
		smtp_tables_free(&cfg.smtp, &cfg.delivery);
		return rc;
	}
	root = config_root_setting(&lc);
	count = config_setting_length(root);
	for (int i = 0; i < count && rc == 0; i++)
		rc = parse_top(&ctx, config_setting_get_elem(root, (unsigned)i));
	if (rc == 0 && cfg.listener_count == 0)
		rc = fail(&ctx, 0, "listeners: at least one listener is required");
	config_destroy(&lc);
	if (rc == 0 && !(flags & RM_CONFIG_NO_TABLES))
		rc = load_smtp_tables(&ctx);
	if (rc == 0 && !(flags & RM_CONFIG_NO_TABLES))
		rc = load_delivery_tables(&ctx);
	free(ctx.relay_text);
	if (rc == 0)
		*out = cfg;
	else
		smtp_tables_free(&cfg.smtp, &cfg.delivery);
	return rc;
}

int rm_config_load_string(struct rm_config *cfg, const char *text, const char *name,
			  char *err, size_t err_size)
{
	struct load_ctx ctx = { .name = name != NULL ? name : "(string)", .err = err,
				.err_size = err_size };
	size_t len = strnlen(text, RM_CONFIG_TEXT_BYTES_MAX + 1);

	if (len > RM_CONFIG_TEXT_BYTES_MAX)
		return fail(&ctx, 0, "configuration too large: at most %d bytes",
			    RM_CONFIG_TEXT_BYTES_MAX);
	return load_text(cfg, text, len, ctx.name, 0, err, err_size);
}

int rm_config_load_file(struct rm_config *cfg, const char *path, char *err, size_t err_size)
{
	return rm_config_load_file_flags(cfg, path, 0, err, err_size);
}

int rm_config_load_file_flags(struct rm_config *cfg, const char *path, unsigned flags, char *err,
			      size_t err_size)
{
	struct load_ctx ctx = { .name = path, .err = err, .err_size = err_size };
	struct stat st;
	size_t len = 0;
	char *text;
	int fd, rc;

	/* O_NONBLOCK: opening a FIFO by mistake must not wait for a writer. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return fail(&ctx, 0, "cannot open: %s", strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = fail(&ctx, 0, "cannot stat: %s", strerror(errno));
		close(fd);
		return rc;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return fail(&ctx, 0, "not a regular file");
	}
	if (st.st_size > RM_CONFIG_TEXT_BYTES_MAX) {
		close(fd);
		return fail(&ctx, 0, "file too large (%lld bytes): at most %d bytes",
			    (long long)st.st_size, RM_CONFIG_TEXT_BYTES_MAX);
	}
	/* One byte more than allowed, to notice a file that grew since fstat. */
	text = malloc(RM_CONFIG_TEXT_BYTES_MAX + 2);
	if (text == NULL) {
		close(fd);
		return fail(&ctx, 0, "out of memory");
	}
	/*
	 * A regular file comes back in one or two reads; the bound only turns a
	 * file system that returns a byte at a time (or endless EINTR) into an
	 * error instead of a hang.
	 */
	for (unsigned reads = 0; len <= RM_CONFIG_TEXT_BYTES_MAX; reads++) {
		ssize_t n;

		if (reads == RM_CONFIG_READS_MAX) {
			free(text);
			close(fd);
			return fail(&ctx, 0, "cannot read: no end after %d reads", RM_CONFIG_READS_MAX);
		}
		n = read(fd, text + len, RM_CONFIG_TEXT_BYTES_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = fail(&ctx, 0, "cannot read: %s", strerror(errno));
			free(text);
			close(fd);
			return rc;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (len > RM_CONFIG_TEXT_BYTES_MAX) {
		free(text);
		return fail(&ctx, 0, "file too large: at most %d bytes", RM_CONFIG_TEXT_BYTES_MAX);
	}
	text[len] = '\0';
	if (strlen(text) != len) {
		unsigned line = 1;

		for (size_t i = 0; text[i] != '\0'; i++)
			line += text[i] == '\n';
		free(text);
		return fail(&ctx, line, "NUL byte in the file: it is not a text file");
	}
	rc = load_text(cfg, text, len, path, flags, err, err_size);
	free(text);
	return rc;
}

void rm_config_free(struct rm_config *cfg)
{
	smtp_tables_free(&cfg->smtp, &cfg->delivery);
	/* Clearing makes use after free visible. */
	cfg->listener_count = 0;
}
