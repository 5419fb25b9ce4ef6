/*
 * NAME
 *	fuzz_config - libFuzzer harness for the configuration loader
 * DESCRIPTION
 *	Feeds each input, NUL-terminated, to rm_config_load_string() (our
 *	libconfig-1.5 prescan, libconfig's parser, then every validation rule).
 *	A load that succeeds must give a configuration that keeps the promises
 *	the rest of the daemon relies on without checking again: 1 to
 *	RM_LISTENERS_MAX listeners, nonzero ports, valid unique names, numeric
 *	addresses, limits within their ranges, every string NUL-terminated
 *	inside its buffer.  A load that fails must write one line starting with
 *	"fuzz.conf:".  A broken promise aborts, which libFuzzer reports.
 *
 *	Seeds: fuzz/corpus/fuzz_config/; dictionary: fuzz/fuzz_config.dict.
 * BUGS
 *	libconfig 1.5 leaks the string token at which its parser detects a
 *	syntax error: the bison grammar has no %destructor for TOK_STRING.  The
 *	text "\"x\"" (a string where a setting name belongs) or "a = (1 \"x\");"
 *	leaks 64 bytes (realloc in strbuf_append, called by libconfig_yylex);
 *	"\"\"" leaks 1 byte (calloc in libconfig_yylex, the empty string).  The
 *	leak is in libconfig, not here, and would end every run within seconds,
 *	so LeakSanitizer ignores allocations made inside the scanner
 *	(libconfig_yylex) and nothing else.  A leak of ours, such as a missing
 *	config_destroy, still shows: the setting tree is allocated by the parser
 *	(config_setting_create), outside the scanner.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);
const char *__lsan_default_options(void);

const char *__lsan_default_suppressions(void)
{
	return "leak:libconfig_yylex\nleak:strbuf_append\n";
}

/* Otherwise every leak check prints the suppression table again. */
const char *__lsan_default_options(void)
{
	return "print_suppressions=0";
}

#define CHECK(cond) \
	do { if (!(cond)) { fprintf(stderr, "fuzz_config: broken: %s\n", #cond); abort(); } } while (0)

static int terminated(const char *buf, size_t size)
{
	return memchr(buf, '\0', size) != NULL;
}

static int in_range(uint32_t v, uint32_t min, uint32_t max)
{
	return v >= min && v <= max;
}

static void check_config(const struct rm_config *cfg)
{
	const struct rm_limits *l = &cfg->limits;

	CHECK(terminated(cfg->path, sizeof(cfg->path)));
	CHECK(strcmp(cfg->path, "fuzz.conf") == 0);
	CHECK(terminated(cfg->user, sizeof(cfg->user)));
	CHECK(terminated(cfg->spool_dir, sizeof(cfg->spool_dir)));
	CHECK(cfg->spool_dir[0] != '\0');
	CHECK(terminated(cfg->control_socket, 108));
	CHECK(in_range(cfg->workers, 1, RM_WORKERS_MAX));
	CHECK(cfg->log_level >= RM_LOG_ERROR && cfg->log_level <= RM_LOG_DEBUG);

	CHECK(in_range(l->connections_per_worker, 16, 1048576));
	CHECK(in_range(l->buffers_per_worker, 16, 32768));
	CHECK((l->buffers_per_worker & (l->buffers_per_worker - 1)) == 0);
	CHECK(in_range(l->buffer_size_bytes, 512, 65536));
	CHECK(in_range(l->write_blocks_per_worker, 16, 1048576));
	CHECK(in_range(l->output_bytes_max, 4096, 67108864));
	CHECK(in_range(l->line_length_max, 64, 65536));
	CHECK(in_range(l->idle_timeout_ms, 100, 86400000));
	CHECK(in_range(l->connect_timeout_ms, 100, 3600000));
	CHECK(in_range(l->shutdown_timeout_ms, 0, 3600000));
	CHECK(in_range(l->listen_backlog, 1, 65535));

	CHECK(in_range(cfg->listener_count, 1, RM_LISTENERS_MAX));
	for (uint32_t i = 0; i < cfg->listener_count; i++) {
		const struct rm_listener_config *x = &cfg->listeners[i];
		unsigned char bytes[16];

		CHECK(terminated(x->name, sizeof(x->name)));
		CHECK(terminated(x->protocol, sizeof(x->protocol)));
		CHECK(terminated(x->address, sizeof(x->address)));
		CHECK(x->name[0] != '\0');
		CHECK(strspn(x->name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			     "0123456789_-") == strlen(x->name));
		CHECK(strcmp(x->protocol, "echo") == 0);
		CHECK(inet_pton(AF_INET, x->address, bytes) == 1
		      || inet_pton(AF_INET6, x->address, bytes) == 1);
		CHECK(x->port != 0);
		CHECK(x->tls == RM_TLS_NONE);
		CHECK(x->idle_timeout_ms == 0 || in_range(x->idle_timeout_ms, 100, 86400000));
		CHECK(x->config_line >= 1);
		for (uint32_t j = 0; j < i; j++) {
			CHECK(strcmp(cfg->listeners[j].name, x->name) != 0);
			CHECK(cfg->listeners[j].port != x->port
			      || strcmp(cfg->listeners[j].address, x->address) != 0);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rm_config cfg, before;
	char err[256];
	char *text;

	text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	rm_config_defaults(&cfg);
	before = cfg;
	memset(err, 'x', sizeof(err));
	if (rm_config_load_string(&cfg, text, "fuzz.conf", err, sizeof(err)) == 0) {
		check_config(&cfg);
		rm_config_free(&cfg);
	} else {
		CHECK(terminated(err, sizeof(err)));
		CHECK(strncmp(err, "fuzz.conf:", 10) == 0);
		CHECK(strchr(err, '\n') == NULL);
		/* A failed load (a failed reload) leaves the configuration alone. */
		CHECK(memcmp(&cfg, &before, sizeof(cfg)) == 0);
	}
	free(text);
	return 0;
}
