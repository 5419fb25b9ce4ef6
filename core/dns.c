/*
 * NAME
 *	dns - a worker's resolver (see dns.h)
 * DESCRIPTION
 *	c-ares tells which sockets it wants watched (sock_state); each gets a
 *	slot here with a one-shot ring poll for the events wanted.  A poll's
 *	completion hands the socket to ares_process_fd and arms the poll again
 *	if c-ares still wants it.  When c-ares changes what it wants from a
 *	socket (or drops it: it then closes the fd) the poll in flight is
 *	cancelled; its completion, which always comes, frees or re-arms the slot.
 *
 *	Socket slots live in a static table per worker, not in struct rm_dns: a
 *	poll completion may arrive after rm_dns_close has freed the resolver
 *	(the handle stays valid until its completion), and finds the slot
 *	detached (d == NULL) instead of freed memory.
 */
#include "core/dns.h"

#include <arpa/nameser.h>
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <ares.h>

#include "core/log.h"

/* c-ares uses one UDP socket per server, and a TCP one for truncated answers. */
#define RM_DNS_SOCKETS_MAX 32

struct dns_sock {
	struct rm_dns *d;		/* NULL: free, or detached by rm_dns_close */
	int fd;
	unsigned want;			/* POLLIN / POLLOUT c-ares asks for; 0 = dropped */
	unsigned armed;			/* events of the poll in flight; 0 = none */
	int handle;			/* of the poll in flight */
	bool cancelled;			/* a cancel is on its way */
};

struct rm_dns {
	struct rm_worker *w;
	ares_channel ch;
	struct dns_sock *socks;		/* this worker's RM_DNS_SOCKETS_MAX */
	struct rm_worker_timer timer;
	unsigned pending, pending_max;
	bool in_process;		/* inside ares_process_fd: arm after it returns */
};

struct dns_query {
	struct rm_dns *d;
	rm_dns_done_fn done;
	void *arg;
};

static struct dns_sock sock_table[RM_WORKERS_MAX][RM_DNS_SOCKETS_MAX];
static _Atomic int library_users;

static void arm(struct dns_sock *s);
static void set_timer(struct rm_dns *d);

static void poll_done(void *arg, int res)
{
	struct dns_sock *s = arg;
	struct rm_dns *d = s->d;
	unsigned got = s->armed;

	s->armed = 0;
	s->cancelled = false;
	if (d == NULL) {
		s->fd = -1;	/* detached: the slot is free now */
		return;
	}
	if (s->want == 0) {
		/* c-ares dropped the socket (and closed it) while the poll was out. */
		s->d = NULL;
		s->fd = -1;
		return;
	}
	if (res > 0) {
		int fd = s->fd;

		d->in_process = true;
		ares_process_fd(d->ch, (res & (POLLIN | POLLERR | POLLHUP)) && (got & POLLIN) ? fd : ARES_SOCKET_BAD,
				(res & (POLLOUT | POLLERR | POLLHUP)) && (got & POLLOUT) ? fd : ARES_SOCKET_BAD);
		d->in_process = false;
	}
	/* Still wanted (c-ares may have dropped it meanwhile): watch again. */
	for (unsigned i = 0; i < RM_DNS_SOCKETS_MAX; i++)
		if (d->socks[i].d == d && d->socks[i].want != 0 && d->socks[i].armed == 0)
			arm(&d->socks[i]);
	set_timer(d);
}

static void arm(struct dns_sock *s)
{
	int h;

	if (s->armed != 0 || s->want == 0)
		return;
	h = rm_worker_poll(s->d->w, s->fd, s->want, poll_done, s);
	if (h < 0) {
		/* No operation slot now: the timer retries (c-ares then times the query out). */
		rm_worker_timer_set(s->d->w, &s->d->timer, 10);
		return;
	}
	s->handle = h;
	s->armed = s->want;
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct rm_dns *d = data;
	unsigned want = (readable ? POLLIN : 0u) | (writable ? POLLOUT : 0u);
	struct dns_sock *s = NULL, *free_slot = NULL;

	for (unsigned i = 0; i < RM_DNS_SOCKETS_MAX; i++) {
		if (d->socks[i].d == d && d->socks[i].fd == fd)
			s = &d->socks[i];
		else if (d->socks[i].d == NULL && d->socks[i].armed == 0 && free_slot == NULL)
			free_slot = &d->socks[i];
	}
	if (s == NULL) {
		if (want == 0)
			return;
		if (free_slot == NULL) {
			/* More sockets than c-ares ever opens for our servers: refuse to watch;
			 * its query times out. */
			rm_warn(0, "dns: more than %d resolver sockets; not watching fd %d", RM_DNS_SOCKETS_MAX, fd);
			return;
		}
		s = free_slot;
		memset(s, 0, sizeof(*s));
		s->d = d;
		s->fd = fd;
	}
	s->want = want;
	if (s->armed != 0 && s->armed != want && !s->cancelled) {
		rm_worker_poll_cancel(d->w, s->handle);
		s->cancelled = true;
		return;	/* poll_done re-arms with what is wanted then */
	}
	if (want == 0 && s->armed == 0) {
		s->d = NULL;
		s->fd = -1;
		return;
	}
	if (!d->in_process)
		arm(s);
}

static void on_timer(struct rm_worker *w, void *arg)
{
	struct rm_dns *d = arg;

	(void)w;
	d->in_process = true;
	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	d->in_process = false;
	for (unsigned i = 0; i < RM_DNS_SOCKETS_MAX; i++)
		if (d->socks[i].d == d && d->socks[i].want != 0 && d->socks[i].armed == 0)
			arm(&d->socks[i]);
	set_timer(d);
}

static void set_timer(struct rm_dns *d)
{
	struct timeval tv, *t;
	uint64_t ms;

	if (d->pending == 0) {
		rm_worker_timer_cancel(d->w, &d->timer);
		return;
	}
	t = ares_timeout(d->ch, NULL, &tv);
	if (t == NULL)
		return;
	ms = (uint64_t)t->tv_sec * 1000u + (uint64_t)t->tv_usec / 1000u + 1;
	rm_worker_timer_set(d->w, &d->timer, ms > 60000 ? 60000 : (uint32_t)ms);
}

static int status_errno(int status)
{
	switch (status) {
	case ARES_SUCCESS:
	case ARES_ENODATA:
	case ARES_ENOTFOUND:
	case ARES_ESERVFAIL:
	case ARES_EREFUSED:
	case ARES_ENOTIMP:
	case ARES_EFORMERR:
		return 0;	/* an answer: its RCODE says the rest */
	case ARES_ETIMEOUT:
		return -ETIMEDOUT;
	case ARES_ECONNREFUSED:
		return -ECONNREFUSED;
	case ARES_EBADRESP:
		return -EPROTO;
	case ARES_ENOMEM:
		return -ENOMEM;
	case ARES_EDESTRUCTION:
	case ARES_ECANCELLED:
		return -ECANCELED;
	default:
		return -EIO;
	}
}

static void query_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dns_query *q = arg;
	int err = status_errno(status);

	(void)timeouts;
	q->d->pending--;
	if (err == 0 && (abuf == NULL || alen < HFIXEDSZ))
		err = -EPROTO;
	q->done(q->arg, err, err == 0 ? abuf : NULL, err == 0 ? (size_t)alen : 0);
	free(q);
}

int rm_dns_query(struct rm_dns *d, const char *name, int type, rm_dns_done_fn done, void *arg)
{
	struct dns_query *q;

	if (d->pending >= d->pending_max)
		return -EAGAIN;
	q = malloc(sizeof(*q));
	if (q == NULL)
		return -ENOMEM;
	q->d = d;
	q->done = done;
	q->arg = arg;
	d->pending++;
	/* ares_query may answer at once (a closed channel): done has then run. */
	ares_query(d->ch, name, ns_c_in, type, query_done, q);
	set_timer(d);
	return 0;
}

unsigned rm_dns_pending(const struct rm_dns *d)
{
	return d->pending;
}

int rm_dns_open(struct rm_worker *w, const struct rm_dns_options *o, struct rm_dns **out, char *err,
		size_t err_size)
{
	struct ares_options opts;
	struct rm_dns *d;
	int rc;

	if (atomic_fetch_add(&library_users, 1) == 0 && ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
		atomic_fetch_sub(&library_users, 1);
		snprintf(err, err_size, "c-ares: library init failed");
		return -1;
	}
	d = calloc(1, sizeof(*d));
	if (d == NULL) {
		snprintf(err, err_size, "out of memory");
		atomic_fetch_sub(&library_users, 1);
		return -1;
	}
	d->w = w;
	d->socks = sock_table[rm_worker_index(w)];
	d->pending_max = o->pending_max ? o->pending_max : 1024;
	d->timer.fire = on_timer;
	d->timer.arg = d;
	memset(&opts, 0, sizeof(opts));
	/* Names are absolute (MX targets, recipient domains): no search list. */
	opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_EDNS;
	opts.timeout = (int)(o->timeout_ms ? o->timeout_ms : 5000);
	opts.tries = (int)(o->tries ? o->tries : 2);
	opts.ndots = 0;
	opts.ednspsz = 1232;
	opts.sock_state_cb = sock_state;
	opts.sock_state_cb_data = d;
	rc = ares_init_options(&d->ch, &opts, ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NDOTS |
				   ARES_OPT_EDNSPSZ | ARES_OPT_SOCK_STATE_CB);
	if (rc != ARES_SUCCESS) {
		snprintf(err, err_size, "c-ares: %s", ares_strerror(rc));
		free(d);
		atomic_fetch_sub(&library_users, 1);
		return -1;
	}
	if (o->servers != NULL && o->servers[0] != '\0' &&
	    (rc = ares_set_servers_ports_csv(d->ch, o->servers)) != ARES_SUCCESS) {
		snprintf(err, err_size, "dns servers \"%s\": %s", o->servers, ares_strerror(rc));
		ares_destroy(d->ch);
		free(d);
		atomic_fetch_sub(&library_users, 1);
		return -1;
	}
	*out = d;
	return 0;
}

void rm_dns_close(struct rm_dns *d)
{
	if (d == NULL)
		return;
	/* Every pending query ends now with -ECANCELED; c-ares closes its sockets. */
	d->in_process = true;
	ares_destroy(d->ch);
	rm_worker_timer_cancel(d->w, &d->timer);
	for (unsigned i = 0; i < RM_DNS_SOCKETS_MAX; i++) {
		struct dns_sock *s = &d->socks[i];

		if (s->d != d)
			continue;
		if (s->armed != 0 && !s->cancelled)
			rm_worker_poll_cancel(d->w, s->handle);
		s->d = NULL;	/* detached: the poll's completion frees the slot */
		if (s->armed == 0)
			s->fd = -1;
	}
	free(d);
	if (atomic_fetch_sub(&library_users, 1) == 1)
		ares_library_cleanup();
}
