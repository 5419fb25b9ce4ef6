/*
 * NAME
 *	ringmailctl - talk to a running ringmaild over its control socket
 * SYNOPSIS
 *	ringmailctl [-c FILE | -s SOCKET] [--json] COMMAND [ARGUMENT]
 * DESCRIPTION
 *	Finds the control socket from the same configuration file ringmaild
 *	reads (-c, default /etc/ringmail/ringmail.conf) or takes it from -s, sends
 *	one command and prints the reply.  Commands:
 *	  stats           the daemon's counters (connections, bytes, buffers, ...)
 *	  ping            check that the daemon answers
 *	  queue           the queued messages: id, age, size, sender, recipients
 *	                  with their state, next attempt, attempts, last error, held
 *	  flush [DOMAIN]  make deferred messages (for DOMAIN) due now
 *	  delete ID       remove a message from the queue
 *	  hold ID         keep a message from delivery until released
 *	  release ID      undo hold
 *	With --json: stats prints one JSON object, queue exactly one JSON array
 *	([] when the queue is empty), flush {"flushed":N}, and delete / hold /
 *	release {"id":ID,"action":...,"ok":true}, for scripts.
 *
 *	Replies are read to their closing "." line and copied to standard output
 *	as they come (a queue listing can be large), without that line.
 * DIAGNOSTICS
 *	Exit 0 on success, 1 when the daemon cannot be reached or answers an
 *	error (printed on standard error, nothing on standard output), 2 for
 *	bad usage or a bad configuration file.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/config.h"

#define RM_DEFAULT_CONFIG "/etc/ringmail/ringmail.conf"
#define RM_CTL_TIMEOUT_S 30		/* no byte for this long: the daemon is stuck */
#define RM_CTL_ARG_MAX 255
#define RM_CTL_SHORT_MAX 65536		/* replies read whole (errors, flush, delete...) */
/* Past this a reply is a broken daemon: every worker's listing at its 64 MiB cut, and more. */
#define RM_CTL_REPLY_BYTES_MAX ((unsigned long long)RM_WORKERS_MAX * (65ull << 20))

static void usage(FILE *out)
{
	fprintf(out,
		"usage: ringmailctl [-c FILE | -s SOCKET] [--json] COMMAND [ARGUMENT]\n"
		"  -c FILE    ringmaild's configuration (default " RM_DEFAULT_CONFIG "): gives the control socket\n"
		"  -s SOCKET  the control socket's path instead\n"
		"  --json     machine-readable output (stats, queue, flush, delete, hold, release)\n"
		"commands:\n"
		"  stats           counters of the running daemon\n"
		"  ping            check that the daemon answers\n"
		"  queue           list the queued messages (--json: a JSON array, [] when empty)\n"
		"  flush [DOMAIN]  make deferred messages (with a recipient in DOMAIN) due now\n"
		"  delete ID       remove the message ID from the queue\n"
		"  hold ID         keep the message ID from delivery until released\n"
		"  release ID      let a held message be delivered again\n"
		"exit status: 0 done, 1 daemon unreachable or it answered an error, 2 usage\n");
}

enum kind { PASS, FLUSH, ID };	/* copy the reply as it comes / read it whole and convert */

static const struct command {
	const char *name;
	int args_min, args_max;
	enum kind kind;
	bool json_request;		/* --json adds " json" to the request */
} commands[] = {
	{ "stats", 0, 0, PASS, true },
	{ "ping", 0, 0, PASS, false },
	{ "queue", 0, 0, PASS, true },
	{ "flush", 0, 1, FLUSH, false },
	{ "delete", 1, 1, ID, false },
	{ "hold", 1, 1, ID, false },
	{ "release", 1, 1, ID, false },
};

static int send_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* An argument goes on the request line as one word. */
static bool arg_ok(const char *arg)
{
	size_t n = strlen(arg);

	if (n == 0 || n > RM_CTL_ARG_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)arg[i] <= 0x20 || arg[i] == 0x7f)
			return false;
	return true;
}

struct sink {
	bool pass;			/* copy to stdout */
	char *whole;			/* else: collected here, at most RM_CTL_SHORT_MAX */
	size_t whole_len;
	bool write_failed;
};

/* Hand reply bytes on: to stdout as they come, or into the bounded buffer. */
static void sink_put(struct sink *k, const char *p, size_t n)
{
	if (n == 0)
		return;
	if (k->pass) {
		if (fwrite(p, 1, n, stdout) != n)
			k->write_failed = true;
		return;
	}
	if (n > RM_CTL_SHORT_MAX - k->whole_len)
		n = RM_CTL_SHORT_MAX - k->whole_len;
	memcpy(k->whole + k->whole_len, p, n);
	k->whole_len += n;
}

/*
 * Read the reply up to its closing "." line.  Its first bytes say whether it
 * is an error (then it is collected, not copied, whatever pass says); after
 * that, everything but the last two bytes read so far goes on, since those
 * may be the ".\n" that ends the reply.  The end is "\n.\n", or ".\n" alone
 * for an empty reply: the daemon never sends a line "." inside a reply.
 * Returns 0, or -1 with a message printed.
 */
static int read_reply(int fd, struct sink *k, bool *is_error)
{
	static char buf[1 << 16];
	char first[6], last[3] = { 0, 0, 0 };
	size_t have = 0, first_len = 0;
	unsigned long long total = 0;
	bool decided = false;

	*is_error = false;
	for (;;) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - have);
		bool ended;

		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0) {
			fprintf(stderr, "ringmailctl: connection closed before the end of the reply\n");
			return -1;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			fprintf(stderr, "ringmailctl: no answer for %d s\n", RM_CTL_TIMEOUT_S);
			return -1;
		}
		if (n < 0) {
			fprintf(stderr, "ringmailctl: read: %s\n", strerror(errno));
			return -1;
		}
		for (ssize_t i = 0; i < n && first_len < sizeof(first); i++)
			first[first_len++] = buf[have + (size_t)i];
		for (ssize_t i = n > 3 ? n - 3 : 0; i < n; i++) {
			last[0] = last[1];
			last[1] = last[2];
			last[2] = buf[have + (size_t)i];
		}
		total += (unsigned long long)n;
		have += (size_t)n;
		if (total > RM_CTL_REPLY_BYTES_MAX) {
			fprintf(stderr, "ringmailctl: reply too long\n");
			return -1;
		}
		ended = (total == 2 && memcmp(first, ".\n", 2) == 0) ||
			(total >= 3 && memcmp(last, "\n.\n", 3) == 0);
		if (!decided && (total >= sizeof(first) || ended)) {
			decided = true;
			*is_error = total >= sizeof(first) && memcmp(first, "error:", 6) == 0;
			if (*is_error)
				k->pass = false;
		}
		if (!decided)
			continue;	/* fewer than 6 bytes so far: all still in buf */
		size_t emit = have >= 2 ? have - 2 : 0;

		sink_put(k, buf, emit);
		memmove(buf, buf + emit, have - emit);
		have -= emit;
		if (ended)
			return 0;
	}
}

/* "error: no such message\n" -> "ringmailctl: no such message" on stderr. */
static void print_error(const char *reply, size_t len)
{
	const char *p = reply + 6;

	while (len > 6 && (size_t)(p - reply) < len && *p == ' ')
		p++;
	len -= (size_t)(p - reply);
	while (len > 0 && p[len - 1] == '\n')
		len--;
	fprintf(stderr, "ringmailctl: %.*s\n", (int)len, p);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static char whole[RM_CTL_SHORT_MAX + 1];
	const char *config_path = RM_DEFAULT_CONFIG, *socket_path = NULL, *arg = NULL;
	const struct command *cmd = NULL;
	bool json = false, is_error;
	struct sockaddr_un sun;
	struct sink sink = { 0 };
	char request[RM_CTL_ARG_MAX + 64];
	struct timeval tv = { RM_CTL_TIMEOUT_S, 0 };
	int opt, fd, nargs;

	while ((opt = getopt_long(argc, argv, "c:s:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': config_path = optarg; break;
		case 's': socket_path = optarg; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[optind], commands[i].name) == 0)
			cmd = &commands[i];
	if (cmd == NULL) {
		fprintf(stderr, "ringmailctl: unknown command '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	nargs = argc - optind - 1;
	if (nargs < cmd->args_min || nargs > cmd->args_max) {
		fprintf(stderr, "ringmailctl: %s takes %s\n", cmd->name,
			cmd->args_max == 0 ? "no argument" : cmd->args_min == 0 ? "at most one argument" :
			"one argument");
		usage(stderr);
		return 2;
	}
	if (nargs == 1) {
		arg = argv[optind + 1];
		if (!arg_ok(arg)) {
			fprintf(stderr, "ringmailctl: bad argument '%.64s': one word of at most %d bytes\n",
				arg, RM_CTL_ARG_MAX);
			return 2;
		}
	}
	if (socket_path == NULL) {
		static struct rm_config cfg;
		char err[512];

		if (rm_config_load_file_flags(&cfg, config_path, RM_CONFIG_NO_TABLES, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
			return 2;
		}
		if (cfg.control_socket[0] == '\0') {
			fprintf(stderr, "ringmailctl: %s sets no control_socket\n", config_path);
			return 2;
		}
		socket_path = cfg.control_socket;	/* static: lives until exit */
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (strlen(socket_path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "ringmailctl: socket path too long: %s\n", socket_path);
		return 2;
	}
	memcpy(sun.sun_path, socket_path, strlen(socket_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		fprintf(stderr, "ringmailctl: cannot reach ringmaild at %s: %s\n", socket_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(request, sizeof(request), "%s%s%s%s\n", cmd->name, arg != NULL ? " " : "",
		 arg != NULL ? arg : "", json && cmd->json_request ? " json" : "");
	if (send_all(fd, request, strlen(request)) < 0) {
		fprintf(stderr, "ringmailctl: write: %s\n", strerror(errno));
		close(fd);
		return 1;
	}
	sink.pass = cmd->kind == PASS;
	sink.whole = whole;
	if (read_reply(fd, &sink, &is_error) < 0) {
		close(fd);
		return 1;
	}
	close(fd);
	if (is_error) {
		print_error(whole, sink.whole_len);
		return 1;
	}
	whole[sink.whole_len] = '\0';
	if (cmd->kind == FLUSH && json) {
		unsigned long long n;

		if (sscanf(whole, "flushed %llu", &n) != 1) {
			fprintf(stderr, "ringmailctl: unexpected reply: %s", whole);
			return 1;
		}
		printf("{\"flushed\":%llu}\n", n);
	} else if (cmd->kind == ID && json) {
		/* The daemon took the id, so it is base32 only: nothing to escape. */
		printf("{\"id\":\"%s\",\"action\":\"%s\",\"ok\":true}\n", arg, cmd->name);
	} else if (cmd->kind != PASS) {
		fwrite(whole, 1, sink.whole_len, stdout);
	}
	if (fflush(stdout) != 0 || sink.write_failed) {
		fprintf(stderr, "ringmailctl: writing the reply: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
