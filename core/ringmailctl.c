/*
 * NAME
 *	ringmailctl - talk to a running ringmaild over its control socket
 * SYNOPSIS
 *	ringmailctl [-c FILE | -s SOCKET] [--json] COMMAND
 * DESCRIPTION
 *	Finds the control socket from the same configuration file ringmaild
 *	reads (-c, default /etc/ringmail/ringmail.conf) or takes it from -s, sends
 *	one command and prints the reply.  Commands:
 *	  stats    the daemon's counters (connections, bytes, buffers, ...)
 *	  ping     check that the daemon answers
 *	With --json the reply is one JSON object, for scripts.
 * DIAGNOSTICS
 *	Exit 0 on success, 1 when the daemon cannot be reached or answers an
 *	error, 2 for bad usage or a bad configuration file.
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
#define RM_CTL_REPLY_MAX (1024 * 1024)	/* a reply longer than this is a broken daemon */
#define RM_CTL_TIMEOUT_S 10

static void usage(FILE *out)
{
	fprintf(out,
		"usage: ringmailctl [-c FILE | -s SOCKET] [--json] COMMAND\n"
		"  -c FILE    ringmaild's configuration (default " RM_DEFAULT_CONFIG "): gives the control socket\n"
		"  -s SOCKET  the control socket's path instead\n"
		"  --json     machine-readable output\n"
		"commands:\n"
		"  stats      counters of the running daemon\n"
		"  ping       check that the daemon answers\n");
}

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

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = RM_DEFAULT_CONFIG, *socket_path = NULL;
	bool json = false;
	struct sockaddr_un sun;
	static char reply[RM_CTL_REPLY_MAX + 1];
	char request[128];
	size_t reply_len = 0;
	struct timeval tv = { RM_CTL_TIMEOUT_S, 0 };
	int opt, fd;

	while ((opt = getopt_long(argc, argv, "c:s:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c': config_path = optarg; break;
		case 's': socket_path = optarg; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[optind], "stats") != 0 && strcmp(argv[optind], "ping") != 0) {
		fprintf(stderr, "ringmailctl: unknown command '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (socket_path == NULL) {
		static struct rm_config cfg;
		char err[512];

		if (rm_config_load_file(&cfg, config_path, err, sizeof(err)) < 0) {
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
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	snprintf(request, sizeof(request), "%s%s\n", argv[optind], json && strcmp(argv[optind], "stats") == 0 ? " json" : "");
	if (send_all(fd, request, strlen(request)) < 0) {
		fprintf(stderr, "ringmailctl: write: %s\n", strerror(errno));
		return 1;
	}
	/* Read until the reply's closing "." line. */
	for (;;) {
		ssize_t n;

		if (reply_len >= 2 && (reply_len == 2 ? memcmp(reply, ".\n", 2) == 0 :
				       memcmp(reply + reply_len - 3, "\n.\n", 3) == 0))
			break;
		if (reply_len == RM_CTL_REPLY_MAX) {
			fprintf(stderr, "ringmailctl: reply too long\n");
			return 1;
		}
		n = read(fd, reply + reply_len, RM_CTL_REPLY_MAX - reply_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "ringmailctl: %s before the end of the reply\n",
				n == 0 ? "connection closed" : strerror(errno));
			return 1;
		}
		reply_len += (size_t)n;
	}
	reply_len -= 2;		/* drop ".\n" */
	fwrite(reply, 1, reply_len, stdout);
	close(fd);
	if (reply_len >= 6 && memcmp(reply, "error:", 6) == 0)
		return 1;
	return 0;
}
