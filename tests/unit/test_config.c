/*
 * NAME
 *	test_config - unit tests for core/config.c
 * DESCRIPTION
 *	Each validation rule has a test that loads a small configuration with
 *	rm_config_load_string(..., "test.conf", ...) and checks the exact
 *	"test.conf:LINE: " prefix and the part of the message that says what is
 *	wrong.  The texts are written one setting per line so that LINE means
 *	something.  Every failing load must also leave the caller's struct as it
 *	was, since a failed SIGHUP reload keeps the running configuration.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/cidr.h"
#include "core/maps.h"
#include "core/passwd.h"

/* The smallest valid listener list, for tests about other settings. */
#define LISTENER_OK \
	"listeners = (\n" \
	"  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007; }\n" \
	");\n"

/*
 * A loaded configuration owns its smtp tables; tests copy configurations
 * about freely, so the tables of each successful load are kept here and
 * freed once, after the last test.
 */
#define LOADED_MAX 512
static struct rm_smtp_config loaded[LOADED_MAX];
static size_t loaded_count;

static void keep(const struct rm_config *cfg)
{
	assert_true(loaded_count < LOADED_MAX);
	loaded[loaded_count++] = cfg->smtp;
}

static int free_loaded(void **state)
{
	static struct rm_config cfg;

	for (size_t i = 0; i < loaded_count; i++) {
		cfg.smtp = loaded[i];
		rm_config_free(&cfg);
	}
	loaded_count = 0;
	return 0;
}

/* Load text, which must succeed. */
static void load_ok(struct rm_config *cfg, const char *text)
{
	char err[512] = "";

	if (rm_config_load_string(cfg, text, "test.conf", err, sizeof(err)) != 0)
		fail_msg("unexpected error: %s\n--- text:\n%s", err, text);
	keep(cfg);
}

/*
 * Load text, which must fail with "test.conf:LINE: ..." containing fragment,
 * on one line, and leave the struct untouched.
 */
static void load_fail(const char *text, unsigned line, const char *fragment)
{
	struct rm_config cfg, before;
	char err[512];
	char prefix[64];

	rm_config_defaults(&cfg);
	cfg.workers = 77;		/* a value no load would produce */
	before = cfg;
	memset(err, 'x', sizeof(err));
	err[sizeof(err) - 1] = '\0';
	assert_int_equal(rm_config_load_string(&cfg, text, "test.conf", err, sizeof(err)), -1);
	snprintf(prefix, sizeof(prefix), "test.conf:%u: ", line);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("error \"%s\" does not start with \"%s\"", err, prefix);
	if (strstr(err, fragment) == NULL)
		fail_msg("error \"%s\" does not contain \"%s\"", err, fragment);
	assert_null(strchr(err, '\n'));
	assert_memory_equal(&cfg, &before, sizeof(cfg));
}

/* Load text, which must fail with exactly the message expected. */
static void load_fail_exact(const char *text, const char *expected)
{
	struct rm_config cfg;
	char err[512];

	rm_config_defaults(&cfg);
	assert_int_equal(rm_config_load_string(&cfg, text, "test.conf", err, sizeof(err)), -1);
	assert_string_equal(err, expected);
}

/* ------------------------------------------------------------ valid input */

static void test_full_config(void **state)
{
	struct rm_config cfg;

	load_ok(&cfg,
		"# every setting, none at its default\n"		/* 1 */
		"workers = 3;\n"					/* 2 */
		"log_level = \"debug\";\n"				/* 3 */
		"log_target = \"syslog\";\n"				/* 4 */
		"user = \"ringmail\";\n"				/* 5 */
		"allow_root = true;\n"					/* 6 */
		"spool_dir = \"/srv/spool\";\n"				/* 7 */
		"control_socket = \"/run/rm.sock\";\n"			/* 8 */
		"limits = {\n"						/* 9 */
		"  connections_per_worker = 100;\n"
		"  buffers_per_worker = 64;\n"
		"  buffer_size_bytes = 2048;\n"
		"  write_blocks_per_worker = 32;\n"
		"  output_bytes_max = 8192;\n"
		"  line_length_max = 512;\n"
		"  idle_timeout_ms = 1000;\n"
		"  connect_timeout_ms = 2000;\n"
		"  shutdown_timeout_ms = 0;\n"
		"  listen_backlog = 10L;\n"
		"};\n"							/* 20 */
		"listeners = (\n"					/* 21 */
		"  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\";\n"	/* 22 */
		"    port = 2007; tls = \"none\"; idle_timeout_ms = 0; },\n"
		"  {\n"							/* 24 */
		"    name = \"echo6_b-2\";\n"
		"    protocol = \"echo\";\n"
		"    address = \"::1\";\n"
		"    port = 0xFFFF;\n"
		"    idle_timeout_ms = 500;\n"
		"  }\n"
		");\n");
	assert_string_equal(cfg.path, "test.conf");
	assert_int_equal(cfg.workers, 3);
	assert_int_equal(cfg.log_level, RM_LOG_DEBUG);
	assert_true(cfg.log_syslog);
	assert_string_equal(cfg.user, "ringmail");
	assert_true(cfg.allow_root);
	assert_string_equal(cfg.spool_dir, "/srv/spool");
	assert_string_equal(cfg.control_socket, "/run/rm.sock");
	assert_int_equal(cfg.limits.connections_per_worker, 100);
	assert_int_equal(cfg.limits.buffers_per_worker, 64);
	assert_int_equal(cfg.limits.buffer_size_bytes, 2048);
	assert_int_equal(cfg.limits.write_blocks_per_worker, 32);
	assert_int_equal(cfg.limits.output_bytes_max, 8192);
	assert_int_equal(cfg.limits.line_length_max, 512);
	assert_int_equal(cfg.limits.idle_timeout_ms, 1000);
	assert_int_equal(cfg.limits.connect_timeout_ms, 2000);
	assert_int_equal(cfg.limits.shutdown_timeout_ms, 0);
	assert_int_equal(cfg.limits.listen_backlog, 10);
	assert_int_equal(cfg.listener_count, 2);
	assert_string_equal(cfg.listeners[0].name, "echo");
	assert_string_equal(cfg.listeners[0].protocol, "echo");
	assert_string_equal(cfg.listeners[0].address, "127.0.0.1");
	assert_int_equal(cfg.listeners[0].port, 2007);
	assert_int_equal(cfg.listeners[0].tls, RM_TLS_NONE);
	assert_int_equal(cfg.listeners[0].idle_timeout_ms, 0);
	assert_int_equal(cfg.listeners[0].config_line, 22);
	assert_string_equal(cfg.listeners[1].name, "echo6_b-2");
	assert_string_equal(cfg.listeners[1].address, "::1");
	assert_int_equal(cfg.listeners[1].port, 65535);
	assert_int_equal(cfg.listeners[1].idle_timeout_ms, 500);
	assert_int_equal(cfg.listeners[1].config_line, 24);
}

static void test_defaults_when_absent(void **state)
{
	struct rm_config cfg, defaults;

	rm_config_defaults(&defaults);
	load_ok(&cfg, LISTENER_OK);
	assert_memory_equal(&cfg.limits, &defaults.limits, sizeof(cfg.limits));
	assert_int_equal(cfg.limits.connections_per_worker, 16384);
	assert_int_equal(cfg.limits.buffers_per_worker, 4096);
	assert_int_equal(cfg.limits.buffer_size_bytes, 4096);
	assert_int_equal(cfg.limits.write_blocks_per_worker, 8192);
	assert_int_equal(cfg.limits.output_bytes_max, 262144);
	assert_int_equal(cfg.limits.line_length_max, 1000);
	assert_int_equal(cfg.limits.idle_timeout_ms, 300000);
	assert_int_equal(cfg.limits.connect_timeout_ms, 30000);
	assert_int_equal(cfg.limits.shutdown_timeout_ms, 10000);
	assert_int_equal(cfg.limits.listen_backlog, 4096);
	assert_int_equal(cfg.log_level, RM_LOG_INFO);
	assert_false(cfg.log_syslog);
	assert_string_equal(cfg.user, "");
	assert_false(cfg.allow_root);
	assert_string_equal(cfg.spool_dir, "/var/spool/ringmail");
	assert_string_equal(cfg.control_socket, "");
	assert_true(cfg.workers >= 1 && cfg.workers <= RM_WORKERS_MAX);
	assert_int_equal(cfg.listeners[0].tls, RM_TLS_NONE);
	assert_int_equal(cfg.listeners[0].idle_timeout_ms, 0);

	/* An empty group is the same as none. */
	load_ok(&cfg, "limits = { };\n" LISTENER_OK);
	assert_memory_equal(&cfg.limits, &defaults.limits, sizeof(cfg.limits));
	/* One key set, the others stay at their defaults. */
	load_ok(&cfg, "limits = { line_length_max = 64; };\n" LISTENER_OK);
	assert_int_equal(cfg.limits.line_length_max, 64);
	assert_int_equal(cfg.limits.idle_timeout_ms, 300000);

	assert_int_equal(defaults.listener_count, 0);
	assert_true(defaults.workers >= 1);
}

static void test_workers_zero_resolves(void **state)
{
	struct rm_config cfg;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t expected = cpus < 1 ? 1 : cpus > RM_WORKERS_MAX ? RM_WORKERS_MAX : (uint32_t)cpus;

	load_ok(&cfg, "workers = 0;\n" LISTENER_OK);
	assert_true(cfg.workers >= 1);
	assert_true(cfg.workers <= RM_WORKERS_MAX);
	assert_int_equal(cfg.workers, expected);
	load_ok(&cfg, "workers = 64;\n" LISTENER_OK);
	assert_int_equal(cfg.workers, 64);
	load_ok(&cfg, "workers = 1;\n" LISTENER_OK);
	assert_int_equal(cfg.workers, 1);
}

static void test_names(void **state)
{
	assert_string_equal(rm_log_level_name(RM_LOG_ERROR), "error");
	assert_string_equal(rm_log_level_name(RM_LOG_WARN), "warn");
	assert_string_equal(rm_log_level_name(RM_LOG_INFO), "info");
	assert_string_equal(rm_log_level_name(RM_LOG_DEBUG), "debug");
	assert_string_equal(rm_log_level_name((enum rm_log_level)42), "unknown");
	assert_string_equal(rm_tls_mode_name(RM_TLS_NONE), "none");
	assert_string_equal(rm_tls_mode_name(RM_TLS_STARTTLS), "starttls");
	assert_string_equal(rm_tls_mode_name(RM_TLS_IMPLICIT), "implicit");
	assert_string_equal(rm_tls_mode_name((enum rm_tls_mode)-1), "unknown");
}

static void test_log_settings(void **state)
{
	struct rm_config cfg;
	static const struct { const char *word; enum rm_log_level level; } levels[] = {
		{ "error", RM_LOG_ERROR }, { "warn", RM_LOG_WARN },
		{ "info", RM_LOG_INFO }, { "debug", RM_LOG_DEBUG },
	};

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		char text[512];

		snprintf(text, sizeof(text), "log_level = \"%s\";\n" LISTENER_OK, levels[i].word);
		load_ok(&cfg, text);
		assert_int_equal(cfg.log_level, levels[i].level);
	}
	load_ok(&cfg, "log_target = \"stderr\";\n" LISTENER_OK);
	assert_false(cfg.log_syslog);
	load_fail("workers = 1;\nlog_level = \"verbose\";\n" LISTENER_OK, 2,
		  "log_level = \"verbose\": must be one of error, warn, info, debug");
	load_fail("log_level = \"INFO\";\n" LISTENER_OK, 1, "must be one of");
	load_fail("\n\nlog_target = \"file\";\n" LISTENER_OK, 3,
		  "log_target = \"file\": must be one of stderr, syslog");
}

/* ---------------------------------------------------------- unknown keys */

static void test_unknown_top_level(void **state)
{
	load_fail("workers = 2;\n"
		  "\n"
		  "foo = 1;\n" LISTENER_OK, 3, "unknown setting 'foo'");
	/* A typo of a real key. */
	load_fail(LISTENER_OK "worker = 2;\n", 4, "unknown setting 'worker'");
}

static void test_unknown_limits_key(void **state)
{
	load_fail("limits = {\n"
		  "  idle_timeout_ms = 1000;\n"
		  "  idle_timeout = 5;\n"
		  "};\n" LISTENER_OK, 3, "unknown setting 'limits.idle_timeout'");
}

static void test_unknown_listener_key(void **state)
{
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\";\n"
		  "    port = 2007;\n"
		  "    bogus = 1; }\n"
		  ");\n", 4, "listener 'echo': unknown setting 'bogus'");
}

/* ------------------------------------------------------------ wrong types */

static void test_wrong_types(void **state)
{
	load_fail("workers = \"two\";\n" LISTENER_OK, 1,
		  "workers = \"two\": must be an integer between 0 and 64");
	load_fail("workers = 2.5;\n" LISTENER_OK, 1, "workers = 2.5: must be an integer");
	load_fail("log_level = 3;\n" LISTENER_OK, 1, "log_level = 3: must be one of");
	load_fail("\nallow_root = 1;\n" LISTENER_OK, 2, "allow_root = 1: must be true or false");
	load_fail("allow_root = \"yes\";\n" LISTENER_OK, 1, "must be true or false");
	load_fail("user = 5;\n" LISTENER_OK, 1, "user = 5: must be a string");
	load_fail("spool_dir = [ \"a\" ];\n" LISTENER_OK, 1, "spool_dir = [ ... ]: must be a string");
	load_fail("limits = 5;\n" LISTENER_OK, 1, "limits = 5: must be a group");
	load_fail("limits = {\n  listen_backlog = \"many\";\n};\n" LISTENER_OK, 2,
		  "limits.listen_backlog = \"many\": must be an integer between 1 and 65535");
	load_fail("limits = {\n  buffers_per_worker = \"64\";\n};\n" LISTENER_OK, 2,
		  "limits.buffers_per_worker = \"64\": must be a power of two");
	load_fail("listeners = {\n  name = \"echo\";\n};\n", 1, "listeners = { ... }: must be a list");
	load_fail("listeners = (\n  5\n);\n", 2, "listeners[0] = 5: must be a group");
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\";\n"
		  "    port = \"2007\"; }\n"
		  ");\n", 3, "listener 'echo': port = \"2007\": must be an integer between 1 and 65535");
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\"; address = 127; port = 1; }\n"
		  ");\n", 2, "listener 'echo': address = 127: must be a string");
	load_fail("listeners = (\n"
		  "  { name = 5; protocol = \"echo\"; address = \"::1\"; port = 1; }\n"
		  ");\n", 2, "listeners[0]: name = 5: must be 1 to 31 characters");
}

/* -------------------------------------------------------------- ranges */

static void test_integer_ranges(void **state)
{
	load_fail("workers = 65;\n" LISTENER_OK, 1, "workers = 65: must be between 0 and 64");
	load_fail("workers = -1;\n" LISTENER_OK, 1, "workers = -1: must be between 0 and 64");
	load_fail("limits = {\n  connections_per_worker = 15;\n};\n" LISTENER_OK, 2,
		  "limits.connections_per_worker = 15: must be between 16 and 1048576");
	load_fail("limits = {\n  connections_per_worker = 1048577;\n};\n" LISTENER_OK, 2,
		  "must be between 16 and 1048576");
	load_fail("limits = {\n  buffer_size_bytes = 511;\n};\n" LISTENER_OK, 2,
		  "limits.buffer_size_bytes = 511: must be between 512 and 65536");
	load_fail("limits = {\n  write_blocks_per_worker = 0;\n};\n" LISTENER_OK, 2,
		  "must be between 16 and 1048576");
	load_fail("limits = {\n  output_bytes_max = 67108865;\n};\n" LISTENER_OK, 2,
		  "must be between 4096 and 67108864");
	load_fail("limits = {\n  line_length_max = 63;\n};\n" LISTENER_OK, 2,
		  "must be between 64 and 65536");
	load_fail("limits = {\n  idle_timeout_ms = 99;\n};\n" LISTENER_OK, 2,
		  "limits.idle_timeout_ms = 99: must be between 100 and 86400000");
	load_fail("limits = {\n  connect_timeout_ms = 3600001;\n};\n" LISTENER_OK, 2,
		  "must be between 100 and 3600000");
	load_fail("limits = {\n  shutdown_timeout_ms = -1;\n};\n" LISTENER_OK, 2,
		  "must be between 0 and 3600000");
	load_fail("limits = {\n  listen_backlog = 0;\n};\n" LISTENER_OK, 2,
		  "must be between 1 and 65535");
	/* 64-bit literals are range-checked like the others. */
	load_fail("limits = {\n  idle_timeout_ms = 4294967396L;\n};\n" LISTENER_OK, 2,
		  "limits.idle_timeout_ms = 4294967396: must be between 100 and 86400000");
}

static void test_power_of_two(void **state)
{
	struct rm_config cfg;

	load_fail_exact("workers = 1;\n"
			"limits = {\n"
			"  line_length_max = 100;\n"
			"  idle_timeout_ms = 1000;\n"
			"  connect_timeout_ms = 1000;\n"
			"  shutdown_timeout_ms = 1000;\n"
			"  buffers_per_worker = 1000;\n"
			"};\n" LISTENER_OK,
			"test.conf:7: limits.buffers_per_worker = 1000: must be a power of two"
			" between 16 and 32768");
	load_fail("limits = {\n  buffers_per_worker = 65536;\n};\n" LISTENER_OK, 2,
		  "must be a power of two between 16 and 32768");
	load_fail("limits = {\n  buffers_per_worker = 8;\n};\n" LISTENER_OK, 2, "power of two");
	load_fail("limits = {\n  buffers_per_worker = 0;\n};\n" LISTENER_OK, 2, "power of two");
	load_ok(&cfg, "limits = { buffers_per_worker = 16; };\n" LISTENER_OK);
	assert_int_equal(cfg.limits.buffers_per_worker, 16);
	load_ok(&cfg, "limits = { buffers_per_worker = 32768; };\n" LISTENER_OK);
	assert_int_equal(cfg.limits.buffers_per_worker, 32768);
	/* A spool buffer must hold the largest record (1 MiB payload) and a segment header. */
	load_fail("limits = {\n  spool_buffer_bytes = 1048576;\n};\n" LISTENER_OK, 2,
		  "limits.spool_buffer_bytes = 1048576: must be between 2097152 and 268435456");
	load_fail("limits = {\n  spool_commit_interval_ms = 5000;\n};\n" LISTENER_OK, 2,
		  "limits.spool_commit_interval_ms = 5000");
	load_ok(&cfg, "limits = { spool_buffer_bytes = 2097152; spool_segment_bytes_max = 4194304;"
		" spool_commit_interval_ms = 2; spool_commit_batch_max = 64; spool_messages_max = 16;"
		" spool_receiving_max = 1; spool_segments_max = 4; };\n" LISTENER_OK);
	assert_int_equal(cfg.limits.spool_buffer_bytes, 2097152);
	assert_int_equal(cfg.limits.spool_segment_bytes_max, 4194304);
	assert_int_equal(cfg.limits.spool_commit_interval_ms, 2);
	assert_int_equal(cfg.limits.spool_commit_batch_max, 64);
	assert_int_equal(cfg.limits.spool_messages_max, 16);
	assert_int_equal(cfg.limits.spool_receiving_max, 1);
	assert_int_equal(cfg.limits.spool_segments_max, 4);
}

/*
 * libconfig 1.5 keeps only the low 32 bits of a plain integer literal; the
 * loader refuses such literals instead of reading 4294967396 as 100.
 */
static void test_integer_truncation_refused(void **state)
{
	load_fail("limits = {\n  idle_timeout_ms = 4294967396;\n};\n" LISTENER_OK, 2,
		  "4294967396: number too large");
	load_fail("\nworkers = 0x100000002;\n" LISTENER_OK, 2, "0x100000002: number too large");
	load_fail("workers = -99999999999;\n" LISTENER_OK, 1, "-99999999999: number too large");
	load_fail("workers = 2147483648;\n" LISTENER_OK, 1, "number too large");
	/* The edges of int still reach the range check. */
	load_fail("workers = 2147483647;\n" LISTENER_OK, 1, "workers = 2147483647: must be between");
	load_fail("workers = -2147483648;\n" LISTENER_OK, 1, "workers = -2147483648: must be between");
	/* Digits inside names, strings and comments are not numbers. */
	struct rm_config cfg;

	load_ok(&cfg, "# 99999999999\n/* 99999999999 */\nuser = \"u99999999999\";\n"
		"workers = 2; // 0x1ffffffff\n" LISTENER_OK);
	assert_string_equal(cfg.user, "u99999999999");
}

/* ------------------------------------------------------------ listeners */

static void test_listener_name(void **state)
{
	load_fail("listeners = (\n"
		  "  { protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007; }\n"
		  ");\n", 2, "listeners[0]: name is required");
	load_fail("listeners = (\n"
		  "  { name = \"a b\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007; }\n"
		  ");\n", 2, "listeners[0]: name = \"a b\": must be 1 to 31 characters of A-Z a-z 0-9 _ -");
	load_fail("listeners = (\n"
		  "  { name = \"\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007; }\n"
		  ");\n", 2, "name = \"\": must be 1 to 31 characters");
	load_fail("listeners = (\n"
		  "  { name = \"abcdefghijabcdefghijabcdefghij12\"; protocol = \"echo\";\n"
		  "    address = \"127.0.0.1\"; port = 2007; }\n"
		  ");\n", 2, "must be 1 to 31 characters");

	struct rm_config cfg;

	load_ok(&cfg, "listeners = (\n"
		"  { name = \"abcdefghijabcdefghijabcdefghij1\"; protocol = \"echo\";\n"
		"    address = \"127.0.0.1\"; port = 2007; }\n"
		");\n");
	assert_string_equal(cfg.listeners[0].name, "abcdefghijabcdefghijabcdefghij1");
}

static void test_listener_name_unique(void **state)
{
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007; },\n"
		  "  {\n"
		  "    name = \"echo\";\n"
		  "    protocol = \"echo\"; address = \"127.0.0.1\"; port = 2008; }\n"
		  ");\n", 4, "listener 'echo': name already used by the listener at line 2");
}

static void test_listener_protocol(void **state)
{
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; address = \"127.0.0.1\"; port = 2007; }\n"
		  ");\n", 2, "listener 'echo': protocol is required (one of echo, relay, spooltest, smtp)");
	load_fail("listeners = (\n"
		  "  { name = \"imap\";\n"
		  "    protocol = \"imap\"; address = \"127.0.0.1\"; port = 143; }\n"
		  ");\n", 3, "listener 'imap': protocol = \"imap\": must be one of echo, relay, spooltest, smtp");
}

static void test_listener_address(void **state)
{
	struct rm_config cfg;

	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\"; port = 2007; }\n"
		  ");\n", 2, "listener 'echo': address is required");
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\";\n"
		  "    address = \"localhost\"; port = 2007; }\n"
		  ");\n", 3, "listener 'echo': address = \"localhost\": must be a numeric IPv4 or IPv6");
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\";\n"
		  "    address = \"127.0.0.1 \"; port = 2007; }\n"
		  ");\n", 3, "must be a numeric IPv4 or IPv6");
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\";\n"
		  "    address = \"1234567890123456789012345678901234567890123456789012345678901234\";\n"
		  "    port = 2007; }\n"
		  ");\n", 3, "address = \"123456789012345678901234567890123456789012345678...\": "
		  "too long (64 characters): must be at most 63");
	load_ok(&cfg, "listeners = (\n"
		"  { name = \"a\"; protocol = \"echo\"; address = \"0.0.0.0\"; port = 1; },\n"
		"  { name = \"b\"; protocol = \"echo\"; address = \"::\"; port = 1; },\n"
		"  { name = \"c\"; protocol = \"echo\"; address = \"fe80::1:2:3:4\"; port = 2; }\n"
		");\n");
	assert_int_equal(cfg.listener_count, 3);
	assert_string_equal(cfg.listeners[2].address, "fe80::1:2:3:4");
}

static void test_listener_port(void **state)
{
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\"; }\n"
		  ");\n", 2, "listener 'echo': port is required (1 to 65535)");
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\";\n"
		  "    port = 0; }\n"
		  ");\n", 3, "listener 'echo': port = 0: must be between 1 and 65535");
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\";\n"
		  "    port = 65536; }\n"
		  ");\n", 3, "listener 'echo': port = 65536: must be between 1 and 65535");
}

static void test_listener_address_port_unique(void **state)
{
	struct rm_config cfg;

	load_fail("listeners = (\n"
		  "  { name = \"a\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007; },\n"
		  "  { name = \"b\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007; }\n"
		  ");\n", 3, "listener 'b': address 127.0.0.1 port 2007 is already used by listener 'a'");
	/* The same address written two ways. */
	load_fail("listeners = (\n"
		  "  { name = \"a\"; protocol = \"echo\"; address = \"::1\"; port = 2007; },\n"
		  "  { name = \"b\"; protocol = \"echo\"; address = \"0:0::0:1\"; port = 2007; }\n"
		  ");\n", 3, "is already used by listener 'a'");
	/* A wildcard covers every address of its family. */
	load_fail("listeners = (\n"
		  "  { name = \"a\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007; },\n"
		  "  { name = \"b\"; protocol = \"echo\"; address = \"0.0.0.0\"; port = 2007; }\n"
		  ");\n", 3, "listener 'b': address 0.0.0.0 port 2007 overlaps listener 'a'");
	load_ok(&cfg, "listeners = (\n"
		"  { name = \"a\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007; },\n"
		"  { name = \"b\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2008; },\n"
		"  { name = \"c\"; protocol = \"echo\"; address = \"127.0.0.2\"; port = 2007; },\n"
		"  { name = \"d\"; protocol = \"echo\"; address = \"::1\"; port = 2007; }\n"
		");\n");
	assert_int_equal(cfg.listener_count, 4);
}

static void test_listener_tls(void **state)
{
	struct rm_config cfg;

	load_fail_exact("listeners = (\n"
			"  { name = \"X\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 465;\n"
			"    tls = \"implicit\"; }\n"
			");\n",
			"test.conf:2: listener 'X': tls = \"implicit\" needs tls_cert and tls_key (PEM files)");
	load_fail("listeners = (\n"
		  "  { name = \"sub\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 587;\n"
		  "    tls = \"starttls\"; tls_cert = \"/c.pem\"; }\n"
		  ");\n", 2, "listener 'sub': tls = \"starttls\" needs tls_cert and tls_key");
	load_fail("listeners = (\n"
		  "  { name = \"p\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 25;\n"
		  "    tls_cert = \"/c.pem\"; }\n"
		  ");\n", 2, "listener 'p': tls_* settings need tls = \"starttls\" or \"implicit\"");
	load_fail("listeners = (\n"
		  "  { name = \"sub\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 587;\n"
		  "    tls = \"implicit\"; tls_cert = \"/c\"; tls_key = \"/k\"; tls_min_version = \"1.1\"; }\n"
		  ");\n", 3, "tls_min_version = \"1.1\": must be one of 1.2, 1.3");
	load_ok(&cfg, "listeners = (\n"
		"  { name = \"s\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 465;\n"
		"    tls = \"implicit\"; tls_cert = \"/c.pem\"; tls_key = \"/k.pem\"; }\n"
		");\n");
	assert_int_equal(cfg.listeners[0].tls, RM_TLS_IMPLICIT);
	assert_string_equal(cfg.listeners[0].tls_cert, "/c.pem");
	assert_int_equal(cfg.listeners[0].tls_min_version, 0x0303);
	load_ok(&cfg, "listeners = (\n"
		"  { name = \"s\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 465;\n"
		"    tls = \"implicit\"; tls_cert = \"/c.pem\"; tls_key = \"/k.pem\";\n"
		"    tls_sni = ( { name = \"mx.example.com\"; cert = \"/mx.pem\"; key = \"/mx.key\"; },\n"
		"                { name = \"*.example.org\"; cert = \"/w.pem\"; key = \"/w.key\"; } ); }\n"
		");\n");
	assert_int_equal(cfg.listeners[0].tls_sni_count, 2);
	assert_string_equal(cfg.listeners[0].tls_sni[1].name, "*.example.org");
	assert_string_equal(cfg.listeners[0].tls_sni[1].key, "/w.key");
	load_fail("listeners = (\n"
		  "  { name = \"s\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 465;\n"
		  "    tls = \"implicit\"; tls_cert = \"/c\"; tls_key = \"/k\";\n"
		  "    tls_sni = ( { name = \"bad name\"; cert = \"/a\"; key = \"/b\"; } ); }\n"
		  ");\n", 4, "tls_sni[0]: name = \"bad name\": must be a host name or *.domain");
	load_fail("listeners = (\n"
		  "  { name = \"s\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 465;\n"
		  "    tls = \"implicit\"; tls_cert = \"/c\"; tls_key = \"/k\";\n"
		  "    tls_sni = ( { name = \"a.b\"; cert = \"/a\"; } ); }\n"
		  ");\n", 4, "tls_sni[0]: needs cert and key");
	load_fail("listeners = (\n"
		  "  { name = \"s\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 465;\n"
		  "    tls = \"implicit\"; tls_cert = \"/c\"; tls_key = \"/k\";\n"
		  "    tls_sni = ( { name = \"a.b\"; cert = \"/a\"; key = \"/k\"; pin = \"x\"; } ); }\n"
		  ");\n", 4, "unknown setting 'pin' (known: name, cert, key)");
	load_fail("listeners = (\n"
		  "  { name = \"sub\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 587;\n"
		  "    tls = \"yes\"; }\n"
		  ");\n", 3, "listener 'sub': tls = \"yes\": must be one of none, starttls, implicit");
	load_fail("listeners = (\n"
		  "  { name = \"sub\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 587;\n"
		  "    tls = true; }\n"
		  ");\n", 3, "tls = true: must be one of none, starttls, implicit");
}

static void test_listener_idle_timeout(void **state)
{
	struct rm_config cfg;

	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007;\n"
		  "    idle_timeout_ms = 50; }\n"
		  ");\n", 3, "listener 'echo': idle_timeout_ms = 50: must be 0 (use limits.idle_timeout_ms)"
		  " or between 100 and 86400000");
	load_fail("listeners = (\n"
		  "  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007;\n"
		  "    idle_timeout_ms = 86400001; }\n"
		  ");\n", 3, "idle_timeout_ms = 86400001: must be between 0 and 86400000");
	load_ok(&cfg, "listeners = (\n"
		"  { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007;\n"
		"    idle_timeout_ms = 100; }\n"
		");\n");
	assert_int_equal(cfg.listeners[0].idle_timeout_ms, 100);
}

static void test_listener_count(void **state)
{
	char text[8192];
	size_t used = 0;

	load_fail("workers = 1;\n", 0, "listeners: at least one listener is required");
	load_fail("workers = 1;\nlisteners = ( );\n", 2, "listeners: at least one listener is required");

	used += (size_t)snprintf(text + used, sizeof(text) - used, "listeners = (\n");
	for (int i = 0; i < RM_LISTENERS_MAX + 1; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used,
					 "  { name = \"l%d\"; protocol = \"echo\"; address = \"127.0.0.1\";"
					 " port = %d; }%s\n", i, 1000 + i, i < RM_LISTENERS_MAX ? "," : "");
	snprintf(text + used, sizeof(text) - used, ");\n");
	assert_true(used < sizeof(text) - 8);
	load_fail(text, 1, "listeners: 33 listeners: at most 32 are allowed");

	/* Exactly the maximum is fine. */
	struct rm_config cfg;

	used = (size_t)snprintf(text, sizeof(text), "listeners = (\n");
	for (int i = 0; i < RM_LISTENERS_MAX; i++)
		used += (size_t)snprintf(text + used, sizeof(text) - used,
					 "  { name = \"l%d\"; protocol = \"echo\"; address = \"127.0.0.1\";"
					 " port = %d; }%s\n", i, 1000 + i, i < RM_LISTENERS_MAX - 1 ? "," : "");
	snprintf(text + used, sizeof(text) - used, ");\n");
	load_ok(&cfg, text);
	assert_int_equal(cfg.listener_count, RM_LISTENERS_MAX);
	assert_int_equal(cfg.listeners[31].port, 1031);
}

/* -------------------------------------------------------------- strings */

static void test_string_lengths(void **state)
{
	struct rm_config cfg;
	char text[1024], value[400];

	/* user: 63 characters fit, 64 do not. */
	memset(value, 'u', 63);
	value[63] = '\0';
	snprintf(text, sizeof(text), "user = \"%s\";\n" LISTENER_OK, value);
	load_ok(&cfg, text);
	assert_int_equal(strlen(cfg.user), 63);
	memset(value, 'u', 64);
	value[64] = '\0';
	snprintf(text, sizeof(text), "\nuser = \"%s\";\n" LISTENER_OK, value);
	load_fail(text, 2, "too long (64 characters): must be at most 63");

	/* spool_dir: 255 fit, 256 do not. */
	value[0] = '/';
	memset(value + 1, 's', 255);
	value[256] = '\0';
	snprintf(text, sizeof(text), "spool_dir = \"%s\";\n" LISTENER_OK, value);
	load_fail(text, 1, "spool_dir = \"/sss");
	load_fail(text, 1, "...\": too long (256 characters): must be at most 255");
	value[255] = '\0';
	snprintf(text, sizeof(text), "spool_dir = \"%s\";\n" LISTENER_OK, value);
	load_ok(&cfg, text);
	assert_int_equal(strlen(cfg.spool_dir), 255);
	load_fail("spool_dir = \"\";\n" LISTENER_OK, 1, "spool_dir = \"\": must name a directory");

	/* control_socket: must fit sun_path (108 bytes with the NUL). */
	value[0] = '/';
	memset(value + 1, 'c', 107);
	value[108] = '\0';
	snprintf(text, sizeof(text), "control_socket = \"%s\";\n" LISTENER_OK, value);
	load_fail(text, 1, "too long (108 characters): must be at most 107");
	value[107] = '\0';
	snprintf(text, sizeof(text), "control_socket = \"%s\";\n" LISTENER_OK, value);
	load_ok(&cfg, text);
	assert_int_equal(strlen(cfg.control_socket), 107);
	load_ok(&cfg, "control_socket = \"\";\n" LISTENER_OK);
	assert_string_equal(cfg.control_socket, "");
}

static void test_control_characters(void **state)
{
	/* The message must stay one line even when the value holds a newline. */
	load_fail("user = \"a\\nb\";\n" LISTENER_OK, 1,
		  "user = \"a?b\": must not contain control characters");
	load_fail("user = \"a\\x00b\";\n" LISTENER_OK, 1,
		  "\\x00 in a string: strings cannot contain NUL characters");
	load_fail("user = \"a\\x01b\";\n" LISTENER_OK, 1, "must not contain control characters");
}

/* ----------------------------------------------------------- the syntax */

static void test_syntax_error(void **state)
{
	load_fail("workers = 2;\n"
		  "log_level = \"info\";\n"
		  "limits = {\n"
		  "  idle_timeout_ms = ;\n"
		  "};\n" LISTENER_OK, 4, "syntax error");
	/*
	 * libconfig reports an unterminated string at the end of the text.  (Not
	 * one followed by more settings: libconfig 1.5 leaks a string token that
	 * a syntax error is detected at, and LeakSanitizer would fail this test.)
	 */
	load_fail("workers = 2;\nuser = \"unterminated;\n", 3, "syntax error");
	load_fail("workers = 2;\nworkers = 3;\n" LISTENER_OK, 2, "duplicate setting name");
	load_fail("", 0, "listeners: at least one listener is required");
}

static void test_refused_constructs(void **state)
{
	load_fail("workers = 2;\n"
		  "  @include \"/etc/ringmail/other.conf\"\n" LISTENER_OK, 2,
		  "@include is not supported");
	load_fail("workers = 2;\n"
		  "/* forgot to close\n"
		  LISTENER_OK, 2, "unterminated /* comment");

	/* "@include" elsewhere is text, not a directive. */
	struct rm_config cfg;

	load_ok(&cfg, "user = \"@include\"; # @include\n" LISTENER_OK);
	assert_string_equal(cfg.user, "@include");
}

/* ---------------------------------------------------------------- files */

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void test_load_file(void **state)
{
	char dir[] = "/tmp/test_config.XXXXXX";
	char path[128], err[512];
	struct rm_config cfg, before;
	static const char text[] = "workers = 2;\n" LISTENER_OK;
	static const char with_nul[] = "workers = 2;\n\0" LISTENER_OK;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ringmail.conf", dir);
	write_file(path, text, sizeof(text) - 1);
	assert_int_equal(rm_config_load_file(&cfg, path, err, sizeof(err)), 0);
	keep(&cfg);
	assert_string_equal(cfg.path, path);
	assert_int_equal(cfg.workers, 2);
	assert_int_equal(cfg.listener_count, 1);

	/* Syntax errors name the file. */
	write_file(path, "workers = 2;\nuser = ;\n", 22);
	rm_config_defaults(&cfg);
	before = cfg;
	assert_int_equal(rm_config_load_file(&cfg, path, err, sizeof(err)), -1);
	{
		char expected[256];

		snprintf(expected, sizeof(expected), "%s:2: syntax error", path);
		assert_string_equal(err, expected);
	}
	assert_memory_equal(&cfg, &before, sizeof(cfg));

	/* A NUL byte would end the text early without a word. */
	write_file(path, with_nul, sizeof(with_nul) - 1);
	assert_int_equal(rm_config_load_file(&cfg, path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":2: NUL byte"));

	/* A directory is refused before libconfig's scanner could exit() on it. */
	assert_int_equal(rm_config_load_file(&cfg, dir, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":0: not a regular file"));

	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

static void test_missing_file(void **state)
{
	struct rm_config cfg;
	char err[512];

	rm_config_defaults(&cfg);
	assert_int_equal(rm_config_load_file(&cfg, "/nonexistent/ringmail.conf", err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/ringmail.conf:0: cannot open: No such file or directory");
}

static void test_small_err_buffer(void **state)
{
	struct rm_config cfg;
	char err[16];

	rm_config_defaults(&cfg);
	memset(err, 'x', sizeof(err));
	assert_int_equal(rm_config_load_string(&cfg, "foo = 1;\n", "test.conf", err, sizeof(err)), -1);
	assert_string_equal(err, "test.conf:1: un");
	/* No buffer at all is allowed too. */
	assert_int_equal(rm_config_load_string(&cfg, "foo = 1;\n", "test.conf", NULL, 0), -1);
}

/* The installed default configuration must load. */
static void test_shipped_config(void **state)
{
	static const char *const candidates[] = {
		"configs/ringmail.conf", "../configs/ringmail.conf", "../../configs/ringmail.conf",
	};
	struct rm_config cfg;
	char err[512];
	size_t i;

	for (i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
		if (access(candidates[i], R_OK) == 0)
			break;
	if (i == sizeof(candidates) / sizeof(candidates[0])) {
		skip();
		return;
	}
	if (rm_config_load_file(&cfg, candidates[i], err, sizeof(err)) != 0)
		fail_msg("%s", err);
	keep(&cfg);
	assert_int_equal(cfg.listener_count, 1);
	assert_string_equal(cfg.listeners[0].protocol, "echo");
	assert_string_equal(cfg.listeners[0].address, "127.0.0.1");
	assert_int_equal(cfg.listeners[0].port, 2007);
	assert_string_equal(cfg.user, "ringmail");
	assert_string_equal(cfg.control_socket, "/run/ringmail/control.sock");
	assert_false(cfg.allow_root);
}


/* ----------------------------------------------------------------- smtp */

#define SMTP_LISTENER \
	"listeners = (\n" \
	"  { name = \"mx\"; protocol = \"smtp\"; address = \"127.0.0.1\"; port = 2025; }\n" \
	");\n"

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void test_smtp_group(void **state)
{
	static struct rm_config cfg;
	char dir[] = "/tmp/rm-test-config-smtp-XXXXXX";
	char map[128], passwd[128], text[2048];

	assert_non_null(mkdtemp(dir));
	snprintf(map, sizeof(map), "%s/recipients", dir);
	snprintf(passwd, sizeof(passwd), "%s/passwd", dir);
	write_text(map, "known@example.org ok\n@catchall.example ok\n");
	/* sha512-crypt of "x" with salt "salt" */
	write_text(passwd, "u@example.org:$6$salt$wZU8LXJfJJqoagopbB7RuK6JEotEMZ0CQDy0phpPAuLMYQFcmf6L6BdAbs/Q7w7o1qsZ9pFqFVY4yuUSWgaYt1\n");

	/* Defaults. */
	load_ok(&cfg, SMTP_LISTENER);
	assert_true(cfg.smtp.hostname[0] != '\0');
	assert_string_equal(cfg.smtp.banner, "ESMTP ringmail");
	assert_true(cfg.smtp.vrfy);
	assert_false(cfg.smtp.auth_plaintext);
	assert_int_equal(cfg.smtp.pregreet, RM_SMTP_PREGREET_REJECT);
	assert_int_equal(cfg.smtp.bare_lf, RM_SMTP_BARE_LF_REJECT);
	assert_non_null(cfg.smtp.relay_domains);
	assert_int_equal(rm_map_count(cfg.smtp.relay_domains), 0);
	assert_null(cfg.smtp.passwd);
	assert_int_equal(cfg.limits.smtp_message_bytes_max, 52428800);
	assert_int_equal(cfg.limits.smtp_recipients_max, 1000);
	assert_int_equal(cfg.limits.smtp_line_bytes_max, 512);
	assert_int_equal(cfg.limits.smtp_text_line_bytes_max, 1000);

	snprintf(text, sizeof(text),
		 "smtp = {\n"
		 "  hostname = \"MX.Example.ORG\";\n"
		 "  banner = \"ESMTP ready\";\n"
		 "  relay_domains = ( { domain = \"Example.ORG.\"; nexthop = \"[10.0.0.1]:2525\"; },\n"
		 "                    { domain = \"catchall.example\"; nexthop = \"mail.example\"; } );\n"
		 "  mynetworks = [ \"127.0.0.0/8\", \"::1/128\" ];\n"
		 "  proxy_trusted = [ \"10.1.0.0/16\" ];\n"
		 "  passwd_file = \"%s\";\n"
		 "  recipient_map = \"%s\";\n"
		 "  vrfy = false; auth_plaintext = true; received_auth_user = true;\n"
		 "  pregreet = \"log\"; bare_lf = \"normalise\";\n"
		 "};\n"
		 "limits = { smtp_message_bytes_max = 1048576; smtp_recipients_max = 100; };\n"
		 "listeners = (\n"
		 "  { name = \"sub\"; protocol = \"smtp\"; address = \"127.0.0.1\"; port = 2587;"
		 " submission = true; proxy_protocol = true; }\n"
		 ");\n", passwd, map);
	load_ok(&cfg, text);
	assert_string_equal(cfg.smtp.hostname, "mx.example.org");
	assert_string_equal(cfg.smtp.banner, "ESMTP ready");
	assert_string_equal(rm_map_get(cfg.smtp.relay_domains, "example.org", 11), "[10.0.0.1]:2525");
	assert_string_equal(rm_map_get(cfg.smtp.relay_domains, "catchall.example", 16), "mail.example");
	assert_int_equal(cfg.smtp.mynetworks->count, 2);
	assert_int_equal(cfg.smtp.proxy_trusted->count, 1);
	assert_int_equal(rm_passwd_count(cfg.smtp.passwd), 1);
	assert_true(rm_passwd_verify(cfg.smtp.passwd, "u@example.org", 13, "x", 1));
	assert_non_null(rm_map_get_address(cfg.smtp.recipient_map, "Known@example.org", 17));
	assert_false(cfg.smtp.vrfy);
	assert_true(cfg.smtp.auth_plaintext && cfg.smtp.received_auth_user);
	assert_int_equal(cfg.smtp.pregreet, RM_SMTP_PREGREET_LOG);
	assert_int_equal(cfg.smtp.bare_lf, RM_SMTP_BARE_LF_NORMALISE);
	assert_true(cfg.listeners[0].submission && cfg.listeners[0].proxy_protocol);

	/* Mistakes, each with its line. */
	load_fail("smtp = { hostname = \"not a host\"; };\n" SMTP_LISTENER, 1,
		  "smtp.hostname = \"not a host\": must be a domain name");
	load_fail("smtp = {\n  colour = 1;\n};\n" SMTP_LISTENER, 2, "unknown setting 'smtp.colour'");
	load_fail("smtp = { relay_domains = ( { domain = \"ex ample\"; nexthop = \"x\"; } ); };\n" SMTP_LISTENER, 1,
		  "smtp.relay_domains[0]: domain must be a domain name");
	load_fail("smtp = { relay_domains = ( { domain = \"a.example\"; nexthop = \"::1:25\"; } ); };\n"
		  SMTP_LISTENER, 1, "nexthop must be HOST, HOST:PORT, [HOST] or [HOST]:PORT");
	load_fail("smtp = { relay_domains = ( { domain = \"a.example\"; nexthop = \"[::1]:0\"; } ); };\n"
		  SMTP_LISTENER, 1, "nexthop must be");
	load_fail("smtp = { relay_domains = ( { domain = \"a.example\"; nexthop = \"h\"; colour = 1; } ); };\n"
		  SMTP_LISTENER, 1, "unknown setting 'colour'");
	load_fail("smtp = { relay_domains = ( { domain = \"a.example\"; nexthop = \"h\"; },\n"
		  "  { domain = \"A.example\"; nexthop = \"h\"; } ); };\n" SMTP_LISTENER, 1, "duplicate key");
	load_fail("smtp = { mynetworks = [ \"10.0.0.1/8\" ]; };\n" SMTP_LISTENER, 1,
		  "smtp.mynetworks[0] = \"10.0.0.1/8\"");
	load_fail("smtp = { mynetworks = \"10.0.0.0/8\"; };\n" SMTP_LISTENER, 1, "must be a list of networks");
	load_fail("smtp = { pregreet = \"drop\"; };\n" SMTP_LISTENER, 1, "must be one of reject, log");
	load_fail("smtp = {\n  passwd_file = \"/nonexistent/passwd\";\n};\n" SMTP_LISTENER, 2,
		  "smtp.passwd_file: /nonexistent/passwd");
	load_fail("smtp = {\n\n  recipient_map = \"/nonexistent/map\";\n};\n" SMTP_LISTENER, 3,
		  "smtp.recipient_map: /nonexistent/map");
	load_fail("smtp = { relay_domains = ( ); relay_domains_file = \"/x\"; };\n" SMTP_LISTENER, 1,
		  "give one of them");
	load_fail("limits = { smtp_line_bytes_max = 100; };\n" SMTP_LISTENER, 1,
		  "limits.smtp_line_bytes_max = 100: must be");
	load_fail("limits = { smtp_recipients_max = 99; };\n" SMTP_LISTENER, 1, "limits.smtp_recipients_max = 99");
	load_fail("listeners = (\n"
		  "  { name = \"e\"; protocol = \"echo\"; address = \"127.0.0.1\"; port = 2007; submission = true; }\n"
		  ");\n", 2, "submission and proxy_protocol are for protocol smtp");
	write_text(passwd, "u@example.org:*\n");
	snprintf(text, sizeof(text), "smtp = { passwd_file = \"%s\"; };\n" SMTP_LISTENER, passwd);
	load_fail(text, 1, "smtp.passwd_file: ");
	unlink(map);
	unlink(passwd);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_config),
		cmocka_unit_test(test_smtp_group),
		cmocka_unit_test(test_defaults_when_absent),
		cmocka_unit_test(test_workers_zero_resolves),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_log_settings),
		cmocka_unit_test(test_unknown_top_level),
		cmocka_unit_test(test_unknown_limits_key),
		cmocka_unit_test(test_unknown_listener_key),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_integer_ranges),
		cmocka_unit_test(test_power_of_two),
		cmocka_unit_test(test_integer_truncation_refused),
		cmocka_unit_test(test_listener_name),
		cmocka_unit_test(test_listener_name_unique),
		cmocka_unit_test(test_listener_protocol),
		cmocka_unit_test(test_listener_address),
		cmocka_unit_test(test_listener_port),
		cmocka_unit_test(test_listener_address_port_unique),
		cmocka_unit_test(test_listener_tls),
		cmocka_unit_test(test_listener_idle_timeout),
		cmocka_unit_test(test_listener_count),
		cmocka_unit_test(test_string_lengths),
		cmocka_unit_test(test_control_characters),
		cmocka_unit_test(test_syntax_error),
		cmocka_unit_test(test_refused_constructs),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_small_err_buffer),
		cmocka_unit_test(test_shipped_config),
	};

	return cmocka_run_group_tests(tests, NULL, free_loaded);
}
