/*
 * NAME
 *	line_echo - the "echo" test protocol (see line_echo.h)
 */
#include "tests/line_echo.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proto/linesplit.h"
#include "tls/tls.h"

static const char greeting[] = "+OK echo ready\r\n";
static const char too_long[] = "-ERR line too long\r\n";
static const char bye[] = "+OK bye\r\n";
static const char idle[] = "-ERR idle timeout\r\n";
static const char tls_go[] = "+OK begin TLS\r\n";
static const char tls_no[] = "-ERR TLS not available\r\n";

struct echo_session {
	struct rm_lines lines;		/* hold allocated only while a partial line waits */
	uint32_t line_max;
	uint32_t idle_ms;
};

static void echo_open(struct rm_conn *c)
{
	struct echo_session *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		rm_conn_abort(c, -ENOMEM);
		return;
	}
	s->line_max = rm_worker_config(c->worker)->limits.line_length_max;
	/* The splitter's hold buffer is attached only while a partial line waits
	 * (ensure_hold / release_hold); its other state lives here all along. */
	s->lines.line_max = s->line_max;
	c->session = s;
	rm_conn_send_static(c, greeting, sizeof(greeting) - 1);
	rm_conn_timer(c, rm_conn_idle_timeout_ms(c));
}

static bool ensure_hold(struct echo_session *s)
{
	if (s->lines.hold != NULL)
		return true;
	s->lines.hold = malloc(s->line_max + 1);
	return s->lines.hold != NULL;
}

static void release_hold(struct echo_session *s)
{
	if (s->lines.hold != NULL && s->lines.hold_len == 0 && !s->lines.discarding) {
		free(s->lines.hold);
		s->lines.hold = NULL;
	}
}

static size_t echo_data(struct rm_conn *c, const struct rm_rx *rx)
{
	struct echo_session *s = c->session;
	size_t pos = 0;

	if (!ensure_hold(s)) {
		rm_conn_abort(c, -ENOMEM);
		return rx->len;
	}
	/* Take a line only when its echo surely fits: otherwise leave the bytes to
	 * the engine, which holds them and pauses receiving (back-pressure). */
	while (pos < rx->len && rm_conn_output_room(c) >= (size_t)s->line_max + 64) {
		struct rm_line line;
		const uint8_t *start = rx->data + pos;
		size_t n = rm_lines_feed(&s->lines, start, rx->len - pos, &line);

		pos += n;
		if (line.kind == RM_LINE_TOO_LONG) {
			rm_conn_send_static(c, too_long, sizeof(too_long) - 1);
			continue;
		}
		if (line.kind != RM_LINE_COMPLETE)
			continue;
		if (line.text_len == 4 && memcmp(line.text, "QUIT", 4) == 0) {
			rm_conn_send_static(c, bye, sizeof(bye) - 1);
			rm_conn_close(c);
			release_hold(s);
			return rx->len;
		}
		if (line.text_len == 8 && memcmp(line.text, "STARTTLS", 8) == 0) {
			const struct rm_listener_config *l = rm_conn_listener(c);

			if (l == NULL || l->tls != RM_TLS_STARTTLS || rm_tls_active(c)) {
				rm_conn_send_static(c, tls_no, sizeof(tls_no) - 1);
				continue;
			}
			/* The go-ahead in clear, then nothing read before the handshake
			 * counts: the rest of this buffer and any partial line go. */
			rm_conn_send_static(c, tls_go, sizeof(tls_go) - 1);
			rm_lines_reset(&s->lines);
			if (rm_tls_starttls(c) < 0)
				rm_conn_close(c);
			release_hold(s);
			return rx->len;
		}
		if (line.text >= rx->data && line.text < rx->data + rx->len) {
			/* Whole line in this buffer: send it from there, terminator too. */
			size_t off = (size_t)(line.text - rx->data);

			rm_conn_send_rx(c, rx, off, line.text_len + (line.crlf ? 2 : 1));
		} else {
			rm_conn_write(c, line.text, line.text_len);
			rm_conn_write(c, line.crlf ? "\r\n" : "\n", line.crlf ? 2 : 1);
		}
	}
	release_hold(s);
	rm_conn_timer(c, s->idle_ms ? s->idle_ms : rm_conn_idle_timeout_ms(c));
	return pos;
}

static void echo_timeout(struct rm_conn *c)
{
	rm_info(c->id, "echo: idle timeout");
	rm_conn_send_static(c, idle, sizeof(idle) - 1);
	rm_conn_close(c);
}

static void echo_close(struct rm_conn *c, int err)
{
	struct echo_session *s = c->session;

	if (s != NULL) {
		free(s->lines.hold);
		free(s);
	}
	c->session = NULL;
}

const struct rm_session_ops rm_echo_ops = {
	.protocol = "echo",
	.on_open = echo_open,
	.on_data = echo_data,
	.on_timeout = echo_timeout,
	.on_close = echo_close,
};
