/*
 * NAME
 *	log - one line per event, on stderr or syslog
 * SUMMARY
 *	#include "core/log.h"
 *
 *	void rm_log_init(const char *ident, enum rm_log_level level, bool use_syslog);
 *	void rm_log_set_level(enum rm_log_level level);
 *	bool rm_log_enabled(enum rm_log_level level);
 *	void rm_log(enum rm_log_level level, uint64_t conn_id, const char *fmt, ...);
 *	void rm_fatal(const char *fmt, ...);
 *	void rm_panic(const char *fmt, ...);
 * DESCRIPTION
 *	rm_log_init() sets the program name shown in each line (at most 31
 *	characters kept; NULL means "ringmaild"), the level, and the target.  With
 *	use_syslog it opens syslog with facility LOG_MAIL (LOG_NDELAY: the socket
 *	is opened now, before a chroot or privilege drop could make that fail).
 *	Call it before other threads start; only the level may change while they
 *	run.  Before any call, lines go to stderr as "ringmaild" at level info.
 *
 *	rm_log_set_level() changes the level at any time (SIGHUP); workers see the
 *	new value at their next line.  rm_log_enabled() says whether a level would
 *	be written, so that costly arguments are computed only then (rm_debug).
 *
 *	rm_log() writes one line when level is enabled.  On stderr:
 *	"2026-11-22T02:50:00.123Z ringmaild[PID]: info c00000000000a1b2: text\en",
 *	the time in UTC with milliseconds, "cID: " only when conn_id is not 0.  The
 *	line is built in a stack buffer of RM_LOG_LINE_MAX bytes (no allocation,
 *	usable when memory is short) and written with one write(2), so lines of
 *	concurrent workers never interleave (stderr is a pipe or journald in
 *	practice, and lines are shorter than PIPE_BUF).  A longer line is cut and
 *	ends in "...".  With syslog the same line without time and program name
 *	(syslog adds both) goes to syslog(3) at the matching priority.
 *
 *	Control characters in the text become '?': messages quote what clients
 *	sent, and a CR or LF from a client must not be able to forge a log line.
 *	errno is preserved, and "%m" may be used in formats.
 *
 *	rm_fatal() logs "fatal: text" at error level and exits 1: a resource
 *	failure or a bad environment.  rm_panic() logs "panic: text" and aborts: a
 *	broken invariant, that is a bug, and the core dump is what is wanted.
 * DIAGNOSTICS
 *	None: a line that cannot be written is dropped.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

/*
 * Most write(2) calls spent on one line: a pipe takes it whole, but a full
 * disk or a signal storm must not keep a worker here.
 */
#define RM_LOG_WRITE_TRIES 8

static _Atomic int log_level_now = RM_LOG_INFO;
static bool log_to_syslog;
static char log_ident[32] = "ringmaild";	/* openlog keeps the pointer */

/* Spelling in log lines; the same words as log_level in the configuration. */
static const char *level_word(enum rm_log_level level)
{
	switch (level) {
	case RM_LOG_ERROR:
		return "error";
	case RM_LOG_WARN:
		return "warn";
	case RM_LOG_INFO:
		return "info";
	case RM_LOG_DEBUG:
		return "debug";
	}
	return "unknown";
}

static int syslog_priority(enum rm_log_level level)
{
	switch (level) {
	case RM_LOG_ERROR:
		return LOG_ERR;
	case RM_LOG_WARN:
		return LOG_WARNING;
	case RM_LOG_INFO:
		return LOG_INFO;
	case RM_LOG_DEBUG:
		return LOG_DEBUG;
	}
	return LOG_ERR;
}

static enum rm_log_level clamp_level(enum rm_log_level level)
{
	if ((int)level < RM_LOG_ERROR)
		return RM_LOG_ERROR;
	if ((int)level > RM_LOG_DEBUG)
		return RM_LOG_DEBUG;
	return level;
}

void rm_log_init(const char *ident, enum rm_log_level level, bool use_syslog)
{
	snprintf(log_ident, sizeof(log_ident), "%s", ident != NULL ? ident : "ringmaild");
	rm_log_set_level(level);
	if (log_to_syslog && !use_syslog)
		closelog();
	log_to_syslog = use_syslog;
	if (use_syslog)
		openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void rm_log_set_level(enum rm_log_level level)
{
	atomic_store_explicit(&log_level_now, (int)clamp_level(level), memory_order_relaxed);
}

bool rm_log_enabled(enum rm_log_level level)
{
	return (int)level <= atomic_load_explicit(&log_level_now, memory_order_relaxed);
}

/*
 * Append to buf (size bytes) at *used, never past size - 1 so that one byte
 * stays for the terminating newline.  Returns false when the text was cut.
 */
static bool vappend(char *buf, size_t size, size_t *used, const char *fmt, va_list ap)
	__attribute__((format(printf, 4, 0)));

static bool vappend(char *buf, size_t size, size_t *used, const char *fmt, va_list ap)
{
	size_t room = size - *used;	/* includes the byte vsnprintf puts NUL in */
	int n;

	if (room <= 1)
		return false;
	n = vsnprintf(buf + *used, room, fmt, ap);
	if (n < 0)
		return true;	/* a bad format: keep what came before */
	if ((size_t)n >= room) {
		*used = size - 1;
		return false;
	}
	*used += (size_t)n;
	return true;
}

static bool append(char *buf, size_t size, size_t *used, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static bool append(char *buf, size_t size, size_t *used, const char *fmt, ...)
{
	va_list ap;
	bool fit;

	va_start(ap, fmt);
	fit = vappend(buf, size, used, fmt, ap);
	va_end(ap);
	return fit;
}

static void write_line(const char *buf, size_t len)
{
	size_t done = 0;

	for (int tries = 0; done < len && tries < RM_LOG_WRITE_TRIES; tries++) {
		ssize_t n = write(STDERR_FILENO, buf + done, len - done);

		if (n > 0)
			done += (size_t)n;
		else if (n < 0 && errno != EINTR)
			return;
	}
}

/* Build and send one line; prefix is "" or "fatal: " / "panic: ". */
static void log_line(enum rm_log_level level, uint64_t conn_id, const char *prefix,
		     const char *fmt, va_list ap)
{
	char buf[RM_LOG_LINE_MAX];
	int saved_errno = errno;
	size_t used = 0, text_start;
	bool fit = true;

	_Static_assert(RM_LOG_LINE_MAX >= 128, "room for the prefix and some text");
	if (!log_to_syslog) {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		append(buf, sizeof(buf), &used, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld]: ",
		       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		       tm.tm_sec, ts.tv_nsec / 1000000L, log_ident, (long)getpid());
	}
	append(buf, sizeof(buf), &used, "%s ", level_word(level));
	if (conn_id != 0)
		append(buf, sizeof(buf), &used, RM_CONN_ID_FMT ": ", (unsigned long long)conn_id);
	text_start = used;
	fit = append(buf, sizeof(buf), &used, "%s", prefix);
	errno = saved_errno;	/* for %m */
	if (fit)
		fit = vappend(buf, sizeof(buf), &used, fmt, ap);

	for (size_t i = text_start; i < used; i++) {
		unsigned char c = (unsigned char)buf[i];

		if (c < 0x20 || c == 0x7f)
			buf[i] = '?';
	}
	if (!fit && used >= text_start + 3)
		memcpy(buf + used - 3, "...", 3);

	if (log_to_syslog) {
		buf[used] = '\0';
		syslog(syslog_priority(level), "%s", buf);
	} else {
		buf[used++] = '\n';
		write_line(buf, used);
	}
	errno = saved_errno;
}

void rm_log(enum rm_log_level level, uint64_t conn_id, const char *fmt, ...)
{
	va_list ap;

	if (!rm_log_enabled(level))
		return;
	va_start(ap, fmt);
	log_line(level, conn_id, "", fmt, ap);
	va_end(ap);
}

void rm_fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(RM_LOG_ERROR, 0, "fatal: ", fmt, ap);
	va_end(ap);
	exit(1);
}

void rm_panic(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(RM_LOG_ERROR, 0, "panic: ", fmt, ap);
	va_end(ap);
	abort();
}
