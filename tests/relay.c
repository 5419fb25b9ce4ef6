/*
 * NAME
 *	relay - the "relay" test protocol (see relay.h)
 */
#include "tests/relay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "tls/tls.h"

struct relay_session {
	struct rm_conn *client;
	struct rm_conn *backend;	/* NULL until connect started, and after close */
	bool backend_open;
	bool client_eof, backend_eof;	/* half-closes seen */
	unsigned live;			/* connections still pointing here */
};

static const struct rm_session_ops backend_ops;

static struct rm_conn *other_side(const struct relay_session *s, const struct rm_conn *c)
{
	return c == s->client ? s->backend : s->client;
}

static void release(struct relay_session *s)
{
	if (--s->live == 0)
		free(s);
}

static void client_open(struct rm_conn *c)
{
	const struct rm_listener_config *l = rm_conn_listener(c);
	struct relay_session *s = calloc(1, sizeof(*s));
	struct rm_connect_options opt;
	int err = 0;

	if (s == NULL) {
		rm_conn_abort(c, -ENOMEM);
		return;
	}
	s->client = c;
	s->live = 1;
	c->session = s;
	memset(&opt, 0, sizeof(opt));
	opt.dest = (const struct sockaddr *)&l->backend_addr;
	opt.dest_len = l->backend_addr_len;
	s->backend = rm_conn_connect(c->worker, &opt, &backend_ops, s, &err);
	if (s->backend == NULL) {
		rm_warn(c->id, "relay: cannot connect to %s: %s", l->backend, strerror(-err));
		rm_conn_abort(c, err);
		return;
	}
	s->live++;
	rm_info(c->id, "relay: backend %s is c%016llx", l->backend, (unsigned long long)s->backend->id);
}

/* Forward a received buffer to the other side by reference; hold it while that side is full. */
static size_t relay_data(struct rm_conn *c, const struct rm_rx *rx)
{
	struct relay_session *s = c->session;
	struct rm_conn *to = other_side(s, c);

	if (to == NULL || (c == s->client && !s->backend_open))
		return 0;	/* held until the backend is connected */
	if (rm_conn_send_rx(to, rx, 0, rx->len) < 0)
		return 0;	/* to's on_writable resumes us */
	rm_conn_timer(c, rm_worker_config(c->worker)->limits.idle_timeout_ms);
	return rx->len;
}

static void relay_writable(struct rm_conn *c)
{
	struct relay_session *s = c->session;
	struct rm_conn *from = other_side(s, c);

	if (from != NULL)
		rm_conn_resume(from);
}

/* A half-close travels on: the other side gets FIN after what is queued, and the
 * reply direction keeps flowing until it closes too. */
static void relay_eof(struct rm_conn *c)
{
	struct relay_session *s = c->session;
	struct rm_conn *to = other_side(s, c);

	if (c == s->client)
		s->client_eof = true;
	else
		s->backend_eof = true;
	if (to == NULL || (s->client_eof && s->backend_eof) || (c == s->client && !s->backend_open)) {
		rm_conn_close(c);
		if (to != NULL)
			rm_conn_close(to);
		return;
	}
	rm_conn_shutdown_write(to);
}

static void relay_close(struct rm_conn *c, int err)
{
	struct relay_session *s = c->session;
	struct rm_conn *to = other_side(s, c);

	if (c == s->client)
		s->client = NULL;
	else
		s->backend = NULL;
	if (to != NULL)
		rm_conn_close(to);
	c->session = NULL;
	release(s);
}

/* The backend is ready for the client's bytes: connected, and TLS done if asked for. */
static void backend_ready(struct relay_session *s, struct rm_conn *backend)
{
	s->backend_open = true;
	rm_conn_timer(backend, rm_worker_config(backend->worker)->limits.idle_timeout_ms);
	if (s->client != NULL)
		rm_conn_resume(s->client);
}

static void backend_tls_done(struct rm_conn *c, int err, void *arg)
{
	struct relay_session *s = arg;

	if (err == 0) {
		backend_ready(s, c);
		return;
	}
	/* The TLS layer logged why; the backend closes, and with it the client. */
	if (s->client != NULL)
		rm_conn_close(s->client);
}

static void backend_connect(struct rm_conn *c, int err)
{
	struct relay_session *s = c->session;
	const struct rm_listener_config *l = s->client != NULL ? rm_conn_listener(s->client) : NULL;

	if (err != 0) {
		if (s->client != NULL) {
			rm_warn(s->client->id, "relay: backend connect failed: %s", strerror(-err));
			rm_conn_abort(s->client, err);
		}
		return;
	}
	if (l != NULL && l->backend_tls != RM_TLS_POLICY_NONE) {
		struct rm_tls_client o = { .policy = l->backend_tls, .ca_file = l->backend_tls_ca,
					   .name = l->backend_tls_name, .done = backend_tls_done, .arg = s };
		int rc = rm_tls_connect(c, &o);

		if (rc < 0) {
			rm_warn(c->id, "relay: cannot start TLS to the backend: %s", strerror(-rc));
			rm_conn_abort(c, rc);
		}
		return;
	}
	backend_ready(s, c);
}

const struct rm_session_ops rm_relay_client_ops = {
	.protocol = "relay",
	.on_open = client_open,
	.on_data = relay_data,
	.on_writable = relay_writable,
	.on_eof = relay_eof,
	.on_close = relay_close,
};

static const struct rm_session_ops backend_ops = {
	.protocol = "relay-backend",
	.on_data = relay_data,
	.on_writable = relay_writable,
	.on_eof = relay_eof,
	.on_close = relay_close,
	.on_connect = backend_connect,
};
