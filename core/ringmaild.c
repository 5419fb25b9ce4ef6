/*
 * NAME
 *	ringmaild - the ringmail daemon
 * SYNOPSIS
 *	ringmaild [-c FILE] [-t] [-h] [-V]
 * DESCRIPTION
 *	Reads the configuration, checks that io_uring works here, binds every
 *	listener (one SO_REUSEPORT socket per worker), drops privileges, starts the
 *	workers and then only waits for signals:
 *	SIGTERM/SIGINT	stop accepting, let sessions finish until
 *			limits.shutdown_timeout_ms, exit 0;
 *	SIGHUP		re-read the file and apply what can change without a
 *			restart (log level, timeouts, per-connection limits); log
 *			what was applied and what needs a restart.
 * DIAGNOSTICS
 *	Exit 2 for a bad configuration ("FILE:LINE: what is wrong"), 1 for any
 *	other failure to start (io_uring unavailable, bind failure, refusing root).
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/control.h"
#include "core/engine.h"
#include "core/log.h"
#include "tests/line_echo.h"
#include "tests/relay.h"
#include "tests/spool_sink.h"
#include "core/authpool.h"
#include "core/delivery.h"
#include "core/maps.h"
#include "core/passwd.h"
#include "core/spool.h"
#include "proto/smtp_session.h"
#include "tls/tls.h"

#define RM_DEFAULT_CONFIG "/etc/ringmail/ringmail.conf"
#define RM_RETIRED_MAX 8	/* configs replaced by SIGHUP, awaiting every worker */
#define RM_VERSION "0.1.0"

static const struct rm_protocol protocols[] = {
	{ "echo", &rm_echo_ops },
	{ "relay", &rm_relay_client_ops },
	{ "spooltest", &rm_spool_sink_ops },
	{ "smtp", &rm_smtp_ops },
	{ NULL, NULL },
};

/*
 * Each worker opens its spool on its own thread before its loop runs: the
 * recovery reads of one worker do not wait for another's.  A spool that
 * cannot be opened (directory unusable, recovery over its limits) stops the
 * daemon before any client byte is read: serving without it would answer
 * mail it cannot keep.
 */
static void open_spool(struct rm_worker *w, void *arg)
{
	struct rm_spool *sp;

	if (rm_spool_open(w, rm_worker_config(w), &sp) < 0)
		rm_fatal("worker %u: cannot open the spool (see above)", rm_worker_index(w));
	if (rm_delivery_start(w) < 0)
		rm_fatal("worker %u: cannot start delivery (see above)", rm_worker_index(w));
}

/* A stopping worker stops delivering: no new attempts, idle connections quit. */
static void worker_stopping(struct rm_worker *w, void *arg)
{
	(void)arg;
	rm_delivery_stop(w);
}

/*
 * Spool directories of workers that this configuration does not start hold
 * mail that nobody would serve: refuse to start rather than leave it.
 */
static int check_spool_workers(const struct rm_config *cfg)
{
	for (unsigned wi = cfg->workers; wi < RM_WORKERS_MAX; wi++) {
		char path[300];
		DIR *d;
		struct dirent *de;
		bool segments = false;

		snprintf(path, sizeof(path), "%s/w%02u", cfg->spool_dir, wi);
		d = opendir(path);
		if (d == NULL)
			continue;
		while ((de = readdir(d)) != NULL && !segments)
			segments = strstr(de->d_name, ".seg") != NULL;
		closedir(d);
		if (segments) {
			rm_error(0, "spool: %s holds segments of worker %u but workers = %u; "
				 "start with workers >= %u so that its mail is served", path, wi, cfg->workers,
				 wi + 1);
			return -1;
		}
	}
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: ringmaild [-c FILE] [-t] [-h] [-V]\n"
		"  -c FILE  configuration file (default " RM_DEFAULT_CONFIG ")\n"
		"  -t       check the configuration and exit (0 good, 2 bad)\n"
		"  -h       this help\n"
		"  -V       print the version\n"
		"Signals: TERM/INT stop gracefully (limits.shutdown_timeout_ms), HUP reloads.\n");
}

static void raise_fd_limit(const struct rm_config *cfg)
{
	struct rlimit rl;
	uint64_t want = (uint64_t)cfg->workers * cfg->limits.connections_per_worker + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < want)
		rm_warn(0, "open files limit %llu is below workers x connections_per_worker (%llu): "
			"connections beyond it will be refused", (unsigned long long)rl.rlim_cur,
			(unsigned long long)want);
}

static int drop_privileges(const struct rm_config *cfg, uid_t uid, gid_t gid)
{
	if (setgroups(1, &gid) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
		rm_error(0, "cannot drop privileges to '%s': %s", cfg->user, strerror(errno));
		return -1;
	}
	/* Paranoia: getting root back must now fail. */
	if (uid != 0 && setuid(0) == 0) {
		rm_error(0, "privileges were not dropped: setuid(0) succeeded");
		return -1;
	}
	return 0;
}

static int make_dir(const char *path, uid_t uid, gid_t gid, bool chown_it)
{
	char tmp[256];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		mkdir(tmp, 0755);
		*p = '/';
	}
	if (mkdir(tmp, 0750) < 0 && errno != EEXIST) {
		rm_error(0, "spool_dir '%s': %s", path, strerror(errno));
		return -1;
	}
	if (chown_it && chown(tmp, uid, gid) < 0) {
		rm_error(0, "spool_dir '%s': chown: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static bool same_listeners(const struct rm_config *a, const struct rm_config *b)
{
	if (a->listener_count != b->listener_count)
		return false;
	for (unsigned i = 0; i < a->listener_count; i++) {
		const struct rm_listener_config *x = &a->listeners[i], *y = &b->listeners[i];

		if (strcmp(x->name, y->name) || strcmp(x->protocol, y->protocol) ||
		    strcmp(x->address, y->address) || x->port != y->port || x->tls != y->tls)
			return false;
	}
	return true;
}

/*
 * Build the configuration a reload may apply: the new file's values where they
 * can change live, the running values (with a warning) where a restart is needed.
 */
static void merge_reload(const struct rm_config *old, struct rm_config *next, char *applied, size_t applied_size)
{
	size_t used = 0;

#define APPLIED(...) do { if (used < applied_size) used += (size_t)snprintf(applied + used, applied_size - used, __VA_ARGS__); } while (0)
#define KEEP(field, name) do { if (old->field != next->field) { \
		rm_warn(0, "reload: %s changed; needs a restart, not applied", name); next->field = old->field; } } while (0)
#define LIVE(field, name) do { if (old->field != next->field) APPLIED(" %s=%llu", name, (unsigned long long)next->field); } while (0)

	if (!same_listeners(old, next)) {
		rm_warn(0, "reload: listeners changed; needs a restart, not applied");
		next->listener_count = old->listener_count;
		for (unsigned i = 0; i < old->listener_count; i++) {
			uint32_t idle = next->listeners[i].idle_timeout_ms;
			bool same = strcmp(next->listeners[i].name, old->listeners[i].name) == 0;

			next->listeners[i] = old->listeners[i];
			if (same && i < RM_LISTENERS_MAX)
				next->listeners[i].idle_timeout_ms = idle;
		}
	}
	for (unsigned i = 0; i < next->listener_count; i++)
		if (next->listeners[i].idle_timeout_ms != old->listeners[i].idle_timeout_ms)
			APPLIED(" listener %s idle_timeout_ms=%u", next->listeners[i].name,
				next->listeners[i].idle_timeout_ms);
	KEEP(workers, "workers");
	KEEP(limits.connections_per_worker, "limits.connections_per_worker");
	KEEP(limits.buffers_per_worker, "limits.buffers_per_worker");
	KEEP(limits.buffer_size_bytes, "limits.buffer_size_bytes");
	KEEP(limits.write_blocks_per_worker, "limits.write_blocks_per_worker");
	KEEP(limits.listen_backlog, "limits.listen_backlog");
	KEEP(allow_root, "allow_root");
	KEEP(log_syslog, "log_target");
	if (strcmp(old->user, next->user) != 0) {
		rm_warn(0, "reload: user changed; needs a restart, not applied");
		memcpy(next->user, old->user, sizeof(next->user));
	}
	if (strcmp(old->spool_dir, next->spool_dir) != 0) {
		rm_warn(0, "reload: spool_dir changed; needs a restart, not applied");
		memcpy(next->spool_dir, old->spool_dir, sizeof(next->spool_dir));
	}
	if (strcmp(old->control_socket, next->control_socket) != 0) {
		rm_warn(0, "reload: control_socket changed; needs a restart, not applied");
		memcpy(next->control_socket, old->control_socket, sizeof(next->control_socket));
	}
	if (old->log_level != next->log_level)
		APPLIED(" log_level=%s", rm_log_level_name(next->log_level));
	LIVE(limits.output_bytes_max, "limits.output_bytes_max");
	LIVE(limits.line_length_max, "limits.line_length_max");
	LIVE(limits.idle_timeout_ms, "limits.idle_timeout_ms");
	LIVE(limits.connect_timeout_ms, "limits.connect_timeout_ms");
	LIVE(limits.shutdown_timeout_ms, "limits.shutdown_timeout_ms");
	KEEP(limits.auth_threads, "limits.auth_threads");
	KEEP(limits.auth_queue_max, "limits.auth_queue_max");
	LIVE(limits.smtp_line_bytes_max, "limits.smtp_line_bytes_max");
	LIVE(limits.smtp_text_line_bytes_max, "limits.smtp_text_line_bytes_max");
	LIVE(limits.smtp_recipients_max, "limits.smtp_recipients_max");
	LIVE(limits.smtp_message_bytes_max, "limits.smtp_message_bytes_max");
	LIVE(limits.smtp_errors_max, "limits.smtp_errors_max");
	LIVE(limits.smtp_connections_max, "limits.smtp_connections_max");
	LIVE(limits.smtp_connections_per_client, "limits.smtp_connections_per_client");
	LIVE(limits.smtp_command_timeout_ms, "limits.smtp_command_timeout_ms");
	LIVE(limits.smtp_data_timeout_ms, "limits.smtp_data_timeout_ms");
	LIVE(limits.smtp_pregreet_wait_ms, "limits.smtp_pregreet_wait_ms");
	LIVE(limits.smtp_proxy_timeout_ms, "limits.smtp_proxy_timeout_ms");
	LIVE(limits.smtp_auth_failures_max, "limits.smtp_auth_failures_max");
	LIVE(limits.smtp_auth_failure_window_ms, "limits.smtp_auth_failure_window_ms");
	LIVE(limits.smtp_auth_failure_delay_ms, "limits.smtp_auth_failure_delay_ms");
	/* The smtp group's files are read again at every reload: say what they hold now. */
	if (next->smtp.passwd != NULL || next->smtp.recipient_map != NULL || next->smtp.sender_login_map != NULL ||
	    (next->smtp.relay_domains != NULL && rm_map_count(next->smtp.relay_domains) > 0))
		APPLIED(" smtp tables re-read (relay domains %u, password users %u, recipients %u, sender logins %u)",
			rm_map_count(next->smtp.relay_domains),
			next->smtp.passwd != NULL ? rm_passwd_count(next->smtp.passwd) : 0,
			next->smtp.recipient_map != NULL ? rm_map_count(next->smtp.recipient_map) : 0,
			next->smtp.sender_login_map != NULL ? rm_map_count(next->smtp.sender_login_map) : 0);
#undef APPLIED
#undef KEEP
#undef LIVE
	if (used == 0)
		snprintf(applied, applied_size, " nothing changed");
}

struct retired {
	struct rm_config *cfg[RM_RETIRED_MAX];
	void *tls[RM_RETIRED_MAX];	/* TLS context tables replaced by the same reload */
	unsigned count;
};

static void reload(struct rm_daemon *d, struct retired *retired)
{
	struct rm_config *old = atomic_load(&d->config_ptr);
	struct rm_config *next;
	char err[512], applied[1024];

	if (retired->count == RM_RETIRED_MAX) {
		rm_warn(0, "reload: workers have not yet taken the previous reloads; try again");
		return;
	}
	next = malloc(sizeof(*next));
	if (next == NULL) {
		rm_error(0, "reload: out of memory");
		return;
	}
	if (rm_config_load_file(next, old->path, err, sizeof(err)) < 0) {
		rm_error(0, "reload: %s; keeping the running configuration", err);
		free(next);
		return;
	}
	merge_reload(old, next, applied, sizeof(applied));
	atomic_store_explicit(&d->config_ptr, next, memory_order_release);
	retired->tls[retired->count] = rm_tls_reload(next);
	retired->cfg[retired->count++] = old;
	rm_daemon_notify_reload(d);
	/* Logged at the more verbose of the two levels, so that a reload that
	 * quiets the log still says it happened. */
	rm_log_set_level(next->log_level > old->log_level ? next->log_level : old->log_level);
	rm_info(0, "reload of %s: applied:%s", next->path, applied);
	rm_log_set_level(next->log_level);
}

static void free_retired(const struct rm_daemon *d, struct retired *retired)
{
	if (retired->count == 0 || !rm_daemon_reload_acked(d))
		return;
	for (unsigned i = 0; i < retired->count; i++) {
		rm_config_free(retired->cfg[i]);
		free(retired->cfg[i]);
		rm_tls_retire(retired->tls[i]);
	}
	retired->count = 0;
}

int main(int argc, char **argv)
{
	static struct rm_daemon daemon;
	struct retired retired = { .count = 0 };
	const char *path = RM_DEFAULT_CONFIG;
	bool check_only = false;
	struct rm_config *cfg;
	char err[512];
	struct passwd *pw = NULL;
	sigset_t sigs;
	int opt;

	while ((opt = getopt(argc, argv, "c:thV")) != -1) {
		switch (opt) {
		case 'c': path = optarg; break;
		case 't': check_only = true; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("ringmaild %s\n", RM_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	cfg = malloc(sizeof(*cfg));
	if (cfg == NULL)
		return 1;
	if (rm_config_load_file(cfg, path, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		free(cfg);
		return 2;
	}
	if (cfg->user[0] != '\0') {
		pw = getpwnam(cfg->user);
		if (pw == NULL) {
			fprintf(stderr, "%s:%d: user = \"%s\": no such user on this system\n", path,
				cfg->user_line, cfg->user);
			rm_config_free(cfg);
			free(cfg);
			return 2;
		}
	}
	/* Certificates and keys load now, still as the starting user (root can read
	 * keys the dropped user cannot), and -t checks them too. */
	if (rm_tls_setup(cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", path, err);
		rm_config_free(cfg);
		free(cfg);
		return 2;
	}
	if (check_only) {
		printf("ringmaild: configuration %s is valid (%u workers, %u listeners)\n", path,
		       cfg->workers, cfg->listener_count);
		rm_tls_shutdown();
		rm_config_free(cfg);
		free(cfg);
		return 0;
	}

	rm_log_init("ringmaild", cfg->log_level, cfg->log_syslog);
	if (geteuid() == 0 && pw == NULL) {
		if (!cfg->allow_root) {
			rm_error(0, "refusing to run as root: set user = \"...\" to drop privileges "
				 "after binding, or allow_root = true");
			goto fail;
		}
		rm_warn(0, "running as root (allow_root = true): only for development");
	}
	if (pw != NULL && geteuid() != 0 && geteuid() != pw->pw_uid) {
		rm_error(0, "user = \"%s\" needs ringmaild to start as root", cfg->user);
		goto fail;
	}
	if (rm_probe_io_uring(err, sizeof(err)) < 0) {
		rm_error(0, "cannot use io_uring: %s", err);
		goto fail;
	}

	/* Workers inherit this mask: only the main thread takes these signals. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	raise_fd_limit(cfg);
	if (make_dir(cfg->spool_dir, pw ? pw->pw_uid : 0, pw ? pw->pw_gid : 0, pw != NULL && geteuid() == 0) < 0)
		goto fail;

	if (check_spool_workers(cfg) < 0)
		goto fail;
	/* Shared by the SMTP sessions of every worker: per-client counts, password checks. */
	if (rm_smtp_global_init() < 0) {
		rm_error(0, "cannot set up the SMTP client counters: out of memory");
		goto fail;
	}
	if (rm_authpool_start(cfg->limits.auth_threads, cfg->limits.auth_queue_max) < 0) {
		rm_error(0, "cannot start %u password check threads", cfg->limits.auth_threads);
		goto fail;
	}
	daemon.worker_count = cfg->workers;
	daemon.hooks.worker_start = open_spool;
	daemon.hooks.worker_stopping = worker_stopping;
	daemon.transport_attach = rm_tls_attach_implicit;
	daemon.protocols = protocols;
	daemon.control_ops = &rm_control_ops;
	atomic_store(&daemon.config_ptr, cfg);
	if (rm_daemon_bind(&daemon, err, sizeof(err)) < 0) {
		rm_error(0, "%s", err);
		goto fail;
	}
	if (pw != NULL && geteuid() == 0) {
		if (daemon.control_fd >= 0 && chown(cfg->control_socket, 0, pw->pw_gid) < 0)
			rm_warn(0, "control_socket: chown: %s", strerror(errno));
		if (drop_privileges(cfg, pw->pw_uid, pw->pw_gid) < 0)
			goto fail;
		rm_info(0, "privileges dropped to %s (uid %u gid %u)", cfg->user, (unsigned)pw->pw_uid,
			(unsigned)pw->pw_gid);
		/* kernel.io_uring_disabled = 1 admits root only: check again as the user. */
		if (rm_probe_io_uring(err, sizeof(err)) < 0) {
			rm_error(0, "cannot use io_uring as user %s: %s", cfg->user, err);
			goto fail;
		}
	}
	rm_daemon_start(&daemon);
	for (unsigned i = 0; i < cfg->listener_count; i++)
		rm_info(0, "listening on %s port %u: %s (%s)%s", cfg->listeners[i].address,
			cfg->listeners[i].port, cfg->listeners[i].name, cfg->listeners[i].protocol,
			cfg->listeners[i].tls == RM_TLS_NONE ? "" : " TLS");
	if (daemon.control_fd >= 0)
		rm_info(0, "control socket %s", cfg->control_socket);
	rm_info(0, "ringmaild %s started: %u workers, pid %d", RM_VERSION, cfg->workers, (int)getpid());

	for (;;) {
		struct timespec wait = { 0, 200 * 1000 * 1000 };
		siginfo_t info;
		int sig = sigtimedwait(&sigs, &info, &wait);

		free_retired(&daemon, &retired);
		rm_tls_tick(rm_now_ms(), atomic_load(&daemon.config_ptr)->limits.tls_ticket_key_rotate_ms);
		if (sig == SIGTERM || sig == SIGINT) {
			if (!atomic_load(&daemon.stop_requested))
				rm_info(0, "%s: stopping (no new connections; sessions have %u ms)",
					sig == SIGTERM ? "SIGTERM" : "SIGINT",
					atomic_load(&daemon.config_ptr)->limits.shutdown_timeout_ms);
			rm_daemon_request_stop(&daemon);
		} else if (sig == SIGHUP) {
			reload(&daemon, &retired);
		}
		if (rm_daemon_all_exited(&daemon))
			break;
	}
	rm_daemon_join(&daemon);
	rm_authpool_stop();
	rm_smtp_global_free();
	rm_tls_shutdown();
	rm_info(0, "stopped");
	return 0;
fail:
	/* No worker started yet: the pool, the counters and the configuration to give back. */
	rm_authpool_stop();
	rm_smtp_global_free();
	rm_config_free(cfg);
	free(cfg);
	return 1;
}
