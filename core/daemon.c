/*
 * NAME
 *	daemon - start-up probe, listening sockets, workers, stop and reload
 * DESCRIPTION
 *	rm_probe_io_uring tries everything the engine needs (a ring with the
 *	flags we use, a provided-buffer ring, multishot recv on a socket pair) and
 *	says in one sentence what failed and what to do, so a sandbox without
 *	io_uring gets a message instead of a crash.
 *
 *	rm_daemon_bind opens one SO_REUSEPORT socket per listener per worker (the
 *	kernel spreads connections over workers) and the control socket.  It runs
 *	before privileges are dropped; nothing here reads a client byte.
 *
 *	rm_daemon_start spawns the workers; rm_daemon_request_stop and
 *	rm_daemon_notify_reload wake every worker through its eventfd, and each
 *	worker acts on its own thread (nothing crosses workers but that wake-up
 *	and the calls posted to a worker's mailbox, engine.h rm_worker_post).
 */
#include "core/engine_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "core/log.h"

static int read_int_file(const char *path, int *value)
{
	FILE *f = fopen(path, "r");
	int ok;

	if (f == NULL)
		return -1;
	ok = fscanf(f, "%d", value) == 1;
	fclose(f);
	return ok ? 0 : -1;
}

static void explain_setup_failure(int err, char *why, size_t why_size)
{
	int disabled = -1;

	read_int_file("/proc/sys/kernel/io_uring_disabled", &disabled);
	if (disabled == 2) {
		snprintf(why, why_size,
			 "io_uring is disabled on this host (sysctl kernel.io_uring_disabled = 2); "
			 "enable it with: sysctl -w kernel.io_uring_disabled=0");
	} else if (disabled == 1 && err == -EPERM) {
		snprintf(why, why_size,
			 "io_uring is limited to privileged users and the io_uring_group "
			 "(sysctl kernel.io_uring_disabled = 1); run ringmaild as root or in "
			 "kernel.io_uring_group, or set the sysctl to 0");
	} else if (err == -ENOSYS || err == -EPERM) {
		snprintf(why, why_size,
			 "io_uring_setup failed with %s: the kernel lacks io_uring (CONFIG_IO_URING) "
			 "or a seccomp filter blocks it (container runtimes' default profiles do); "
			 "allow io_uring_setup, io_uring_enter and io_uring_register in the seccomp "
			 "profile, or run on a host kernel with io_uring", strerror(-err));
	} else if (err == -ENOMEM) {
		snprintf(why, why_size,
			 "io_uring_setup failed with ENOMEM: raise RLIMIT_MEMLOCK (ulimit -l) "
			 "or use kernel 5.12 or later, which no longer charges rings to it");
	} else {
		snprintf(why, why_size, "io_uring_setup failed: %s", strerror(-err));
	}
}

/* Multishot recv with a provided-buffer ring on a socket pair: the core of the engine. */
static int probe_multishot_recv(struct io_uring *ring, char *why, size_t why_size)
{
	enum { COUNT = 8, SIZE = 64 };
	struct io_uring_buf_reg reg;
	struct io_uring_buf_ring *br;
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	static uint8_t bufs[COUNT][SIZE];
	int sv[2], ret, result = -1;

	br = aligned_alloc(4096, 4096);
	if (br == NULL) {
		snprintf(why, why_size, "out of memory");
		return -1;
	}
	memset(br, 0, 4096);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)br;
	reg.ring_entries = COUNT;
	reg.bgid = 7;
	ret = io_uring_register_buf_ring(ring, &reg, 0);
	if (ret < 0) {
		snprintf(why, why_size, "io_uring_register_buf_ring: %s (provided-buffer rings need kernel 5.19 or later)",
			 strerror(-ret));
		free(br);
		return -1;
	}
	io_uring_buf_ring_init(br);
	for (int i = 0; i < COUNT; i++)
		io_uring_buf_ring_add(br, bufs[i], SIZE, (unsigned short)i, io_uring_buf_ring_mask(COUNT), i);
	io_uring_buf_ring_advance(br, COUNT);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(why, why_size, "socketpair: %s", strerror(errno));
		goto out_unreg;
	}
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 7;
	io_uring_sqe_set_data64(sqe, 1);
	if (write(sv[1], "probe", 5) != 5) {
		snprintf(why, why_size, "socketpair write: %s", strerror(errno));
		goto out_close;
	}
	io_uring_submit(ring);
	ret = io_uring_wait_cqe(ring, &cqe);
	if (ret < 0) {
		snprintf(why, why_size, "io_uring_wait_cqe: %s", strerror(-ret));
		goto out_close;
	}
	if (cqe->res != 5 || !(cqe->flags & IORING_CQE_F_BUFFER) || !(cqe->flags & IORING_CQE_F_MORE)) {
		snprintf(why, why_size, "multishot recv does not work (res %d%s%s): kernel 6.0 or later is needed",
			 cqe->res, (cqe->flags & IORING_CQE_F_BUFFER) ? "" : ", no buffer",
			 (cqe->flags & IORING_CQE_F_MORE) ? "" : ", not multishot");
		io_uring_cqe_seen(ring, cqe);
		goto out_close;
	}
	io_uring_cqe_seen(ring, cqe);
	result = 0;
out_close:
	close(sv[0]);
	close(sv[1]);
	/* The recv ends with the socket; drain its last completion. */
	for (int i = 0; i < 4 && io_uring_peek_cqe(ring, &cqe) == 0; i++)
		io_uring_cqe_seen(ring, cqe);
out_unreg:
	io_uring_unregister_buf_ring(ring, 7);
	free(br);
	return result;
}

int rm_probe_io_uring(char *why, size_t why_size)
{
	static const struct { int op; const char *name; } needed[] = {
		{ IORING_OP_ACCEPT, "accept" }, { IORING_OP_RECV, "recv" },
		{ IORING_OP_SENDMSG, "sendmsg" }, { IORING_OP_CONNECT, "connect" },
		{ IORING_OP_ASYNC_CANCEL, "async_cancel" }, { IORING_OP_POLL_ADD, "poll_add" },
	};
	struct io_uring ring;
	struct io_uring_probe *probe;
	int ret;

	ret = rm_ring_init(&ring, 16, NULL, 0);
	if (ret < 0) {
		explain_setup_failure(ret, why, why_size);
		return -1;
	}
	probe = io_uring_get_probe_ring(&ring);
	if (probe == NULL) {
		snprintf(why, why_size, "io_uring probe failed: kernel 5.6 or later is needed");
		io_uring_queue_exit(&ring);
		return -1;
	}
	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		if (!io_uring_opcode_supported(probe, needed[i].op)) {
			snprintf(why, why_size, "io_uring operation %s is not supported by this kernel "
				 "(or is blocked); kernel 6.0 or later is needed", needed[i].name);
			io_uring_free_probe(probe);
			io_uring_queue_exit(&ring);
			return -1;
		}
	}
	io_uring_free_probe(probe);
	ret = probe_multishot_recv(&ring, why, why_size);
	io_uring_queue_exit(&ring);
	return ret;
}

/* ---- listening sockets ------------------------------------------------------------ */

static int parse_address(const struct rm_listener_config *l, union rm_sockaddr *sa, socklen_t *len)
{
	memset(sa, 0, sizeof(*sa));
	if (inet_pton(AF_INET, l->address, &sa->in4.sin_addr) == 1) {
		sa->in4.sin_family = AF_INET;
		sa->in4.sin_port = htons(l->port);
		*len = sizeof(sa->in4);
		return 0;
	}
	if (inet_pton(AF_INET6, l->address, &sa->in6.sin6_addr) == 1) {
		sa->in6.sin6_family = AF_INET6;
		sa->in6.sin6_port = htons(l->port);
		*len = sizeof(sa->in6);
		return 0;
	}
	return -1;
}

static int open_listener(const struct rm_listener_config *l, unsigned backlog, char *err, size_t err_size)
{
	union rm_sockaddr sa;
	socklen_t len;
	int fd, one = 1;

	if (parse_address(l, &sa, &len) < 0) {
		snprintf(err, err_size, "listener '%s': bad address '%s'", l->name, l->address);
		return -1;
	}
	fd = socket(sa.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, err_size, "listener '%s': socket: %s", l->name, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* One socket per worker on the same port: the kernel spreads connections. */
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	/* Inherited by accepted sockets: small replies go out at once (no Nagle
	 * wait behind a delayed ACK, the nginx TLS-greeting trap). */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (sa.sa.sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, &sa.sa, len) < 0 || listen(fd, (int)backlog) < 0) {
		snprintf(err, err_size, "listener '%s' %s port %u: %s", l->name, l->address, l->port,
			 strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int open_control(const char *path, char *err, size_t err_size)
{
	struct sockaddr_un sun;
	struct stat st;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, err_size, "control_socket '%s': path too long", path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, err_size, "control_socket '%s' exists and is not a socket", path);
			return -1;
		}
		/* A live daemon answers a connect; a stale socket file does not. */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			close(fd);
			snprintf(err, err_size, "control_socket '%s': another ringmaild is running", path);
			return -1;
		}
		if (fd >= 0)
			close(fd);
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 64) < 0) {
		snprintf(err, err_size, "control_socket '%s': %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	/* Root and the daemon's group only. */
	chmod(path, 0660);
	return fd;
}

int rm_daemon_bind(struct rm_daemon *d, char *err, size_t err_size)
{
	const struct rm_config *cfg = atomic_load(&d->config_ptr);

	d->control_fd = -1;
	for (unsigned wi = 0; wi < d->worker_count; wi++)
		for (unsigned li = 0; li < RM_LISTENERS_MAX; li++)
			d->listen_fds[wi][li] = -1;
	for (unsigned wi = 0; wi < d->worker_count; wi++) {
		for (unsigned li = 0; li < cfg->listener_count; li++) {
			int fd = open_listener(&cfg->listeners[li], cfg->limits.listen_backlog, err, err_size);

			if (fd < 0)
				return -1;
			d->listen_fds[wi][li] = fd;
		}
	}
	if (cfg->control_socket[0] != '\0' && d->control_ops != NULL) {
		d->control_fd = open_control(cfg->control_socket, err, err_size);
		if (d->control_fd < 0)
			return -1;
	}
	return 0;
}

static const struct rm_session_ops *find_protocol(const struct rm_daemon *d, const char *name)
{
	for (const struct rm_protocol *p = d->protocols; p != NULL && p->name != NULL; p++)
		if (strcmp(p->name, name) == 0)
			return p->ops;
	return NULL;
}

int rm_daemon_start(struct rm_daemon *d)
{
	struct rm_config *cfg = atomic_load(&d->config_ptr);
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	d->started_ms = rm_now_ms();
	rm_the_daemon = d;
	for (unsigned wi = 0; wi < d->worker_count; wi++) {
		struct rm_worker *w = calloc(1, sizeof(*w));
		int ret;

		if (w == NULL)
			rm_fatal("out of memory");
		w->daemon = d;
		w->index = wi;
		w->cpu = cpus > 1 ? (int)(wi % (unsigned)cpus) : -1;
		w->cfg = cfg;
		w->config_generation = atomic_load(&d->config_generation);
		atomic_store(&w->config_acked, w->config_generation);
		w->buf_count = cfg->limits.buffers_per_worker;
		w->buf_size = cfg->limits.buffer_size_bytes;
		for (unsigned li = 0; li < cfg->listener_count; li++) {
			w->listen_fd[li] = d->listen_fds[wi][li];
			w->listener_cfg_index[li] = (int)li;
			snprintf(w->listener_name[li], sizeof(w->listener_name[li]), "%s", cfg->listeners[li].name);
			w->listener_ops[li] = find_protocol(d, cfg->listeners[li].protocol);
			if (w->listener_ops[li] == NULL)
				rm_fatal("listener '%s': protocol '%s' is not in this program",
					 cfg->listeners[li].name, cfg->listeners[li].protocol);
			w->listener_count++;
		}
		if (wi == 0 && d->control_fd >= 0) {
			unsigned li = w->listener_count++;

			w->listen_fd[li] = d->control_fd;
			w->listener_cfg_index[li] = -2;
			snprintf(w->listener_name[li], sizeof(w->listener_name[li]), "control");
			w->listener_ops[li] = d->control_ops;
		}
		ret = rm_worker_prepare(w);
		if (ret < 0)
			rm_fatal("cannot start worker %u: %s", wi, strerror(-ret));
		d->workers[wi] = w;
	}
	/*
	 * Every worker is complete and published before the first one runs
	 * (pthread_create orders all of it before the new thread): a worker may
	 * read d->workers, wake another or post to it from its first moment.
	 */
	for (unsigned wi = 0; wi < d->worker_count; wi++) {
		int ret = rm_worker_spawn(d->workers[wi]);

		if (ret < 0)
			rm_fatal("cannot start worker %u: %s", wi, strerror(-ret));
	}
	return 0;
}

void rm_daemon_request_stop(struct rm_daemon *d)
{
	atomic_store_explicit(&d->stop_requested, 1, memory_order_release);
	for (unsigned wi = 0; wi < d->worker_count; wi++)
		if (d->workers[wi] != NULL)
			rm_worker_wake(d->workers[wi]);
}

void rm_daemon_notify_reload(struct rm_daemon *d)
{
	atomic_fetch_add_explicit(&d->config_generation, 1, memory_order_acq_rel);
	for (unsigned wi = 0; wi < d->worker_count; wi++)
		if (d->workers[wi] != NULL)
			rm_worker_wake(d->workers[wi]);
}

bool rm_daemon_reload_acked(const struct rm_daemon *d)
{
	uint32_t gen = atomic_load(&d->config_generation);

	for (unsigned wi = 0; wi < d->worker_count; wi++) {
		struct rm_worker *w = d->workers[wi];

		if (w != NULL && !atomic_load(&w->exited) && atomic_load(&w->config_acked) != gen)
			return false;
	}
	return true;
}

bool rm_daemon_all_exited(const struct rm_daemon *d)
{
	for (unsigned wi = 0; wi < d->worker_count; wi++)
		if (d->workers[wi] != NULL && !atomic_load(&d->workers[wi]->exited))
			return false;
	return true;
}

void rm_daemon_join(struct rm_daemon *d)
{
	for (unsigned wi = 0; wi < d->worker_count; wi++) {
		struct rm_worker *w = d->workers[wi];

		if (w == NULL)
			continue;
		pthread_join(w->thread, NULL);
	}
	/* Only once every worker is gone: until then one may post to (and wake)
	 * another that has already exited, and must get -ESHUTDOWN, not a
	 * destroyed mutex or a closed descriptor. */
	for (unsigned wi = 0; wi < d->worker_count; wi++) {
		struct rm_worker *w = d->workers[wi];

		if (w == NULL)
			continue;
		rm_worker_teardown(w);
	}
	if (d->control_fd >= 0) {
		const struct rm_config *cfg = atomic_load(&d->config_ptr);

		unlink(cfg->control_socket);
	}
}

void rm_daemon_stats_sum(const struct rm_daemon *d, struct rm_worker_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (unsigned wi = 0; wi < d->worker_count; wi++) {
		const struct rm_worker_stats *s;

		if (d->workers[wi] == NULL)
			continue;
		s = &d->workers[wi]->stats;
#define SUM(f) atomic_fetch_add_explicit(&out->f, atomic_load_explicit(&s->f, memory_order_relaxed), memory_order_relaxed)
		SUM(accepted); SUM(connected); SUM(closed); SUM(open); SUM(accept_refused);
		SUM(recv_bytes); SUM(sent_bytes); SUM(recv_enobufs); SUM(recv_paused); SUM(held_copied);
		SUM(timeouts); SUM(buffers_free); SUM(write_blocks_free); SUM(loop_iterations);
#undef SUM
	}
}
