/*
 * NAME
 *	control - the daemon's control socket (ringmailctl talks to it)
 * DESCRIPTION
 *	A Unix socket (control_socket in the configuration, mode 0660, group of
 *	the daemon's user) served by worker 0.  Requests are single lines; each
 *	reply is zero or more lines followed by a line holding only ".".
 *	  stats            counters, "name value" per line, totals then per worker
 *	  stats json       the same as one JSON object on one line
 *	  ping             "pong"
 *	Unknown commands get "error: ..." and the connection stays usable.
 */
#ifndef RM_CONTROL_H
#define RM_CONTROL_H

#include "core/engine.h"

#define RM_CONTROL_LINE_MAX 512

extern const struct rm_session_ops rm_control_ops;

#endif
