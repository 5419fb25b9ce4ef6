/*
 * NAME
 *	log - one line per event, on stderr or syslog
 * SUMMARY
 *	#include "core/log.h"
 *
 *	void rm_log_init(const char *ident, enum rm_log_level level, bool use_syslog);
 *	void rm_log_set_level(enum rm_log_level level);
 *	void rm_log(enum rm_log_level level, uint64_t conn_id, const char *fmt, ...);
 *	void rm_fatal(const char *fmt, ...);
 *	void rm_panic(const char *fmt, ...);
 * DESCRIPTION
 *	Each call writes one line.  On stderr the line is
 *	"2026-11-22T02:50:00.123Z ringmaild[PID]: LEVEL [cCONNID] text" and goes
 *	out with a single write(2), so lines of concurrent workers never mix.
 *	conn_id 0 means the line is about no connection; otherwise "c%016llx"
 *	(RM_CONN_ID_FMT) is printed, and every line about that connection repeats it.
 *	The level is read with a relaxed atomic so SIGHUP can change it live.
 *
 *	rm_fatal logs at error level and exits 1 (resource failure, bad
 *	environment).  rm_panic logs and aborts (a broken invariant: a bug).
 */
#ifndef RM_LOG_H
#define RM_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include "core/config.h"

#define RM_LOG_LINE_MAX 1024

/* How a connection id is printed everywhere (log lines, ringmailctl); pass (unsigned long long)id. */
#define RM_CONN_ID_FMT "c%016llx"

void rm_log_init(const char *ident, enum rm_log_level level, bool use_syslog);
void rm_log_set_level(enum rm_log_level level);
bool rm_log_enabled(enum rm_log_level level);
void rm_log(enum rm_log_level level, uint64_t conn_id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
_Noreturn void rm_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void rm_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define rm_error(cid, ...) rm_log(RM_LOG_ERROR, (cid), __VA_ARGS__)
#define rm_warn(cid, ...) rm_log(RM_LOG_WARN, (cid), __VA_ARGS__)
#define rm_info(cid, ...) rm_log(RM_LOG_INFO, (cid), __VA_ARGS__)
#define rm_debug(cid, ...) \
	do { if (rm_log_enabled(RM_LOG_DEBUG)) rm_log(RM_LOG_DEBUG, (cid), __VA_ARGS__); } while (0)

/* Invariants: checked in every build; a failure is a bug, not bad input. */
#define RM_ASSERT(cond) \
	do { if (__builtin_expect(!(cond), 0)) rm_panic("%s:%d: assertion failed: %s", __FILE__, __LINE__, #cond); } while (0)

#endif
