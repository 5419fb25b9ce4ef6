/*
 * NAME
 *	linesplit - bounded line splitter over arbitrary chunk boundaries
 * SUMMARY
 *	#include "proto/linesplit.h"
 *
 *	void rm_lines_init(struct rm_lines *ls, uint8_t *hold, size_t line_max);
 *	size_t rm_lines_feed(struct rm_lines *ls, const uint8_t *data, size_t len,
 *			     struct rm_line *out);
 *	void rm_lines_reset(struct rm_lines *ls);
 * DESCRIPTION
 *	Pure codec (no I/O, no allocation): the base of every line protocol here
 *	(SMTP commands, IMAP and POP3 pre-auth, the test echo protocol, the control
 *	socket).  A line ends at LF; the CR before it, if any, is part of what the
 *	caller sees as "terminator", not of the line text.
 *
 *	rm_lines_feed looks at data[0..len) and produces at most one event in *out,
 *	returning how many input bytes it consumed (always > 0 when len > 0, so a
 *	caller loop "while (len) { n = feed(); ...; data += n; len -= n; }" ends).
 *	Events (out->kind):
 *	  RM_LINE_NONE      all consumed bytes were a partial line, copied into hold;
 *	  RM_LINE_COMPLETE  a whole line: out->text/out->text_len (without CR LF),
 *	                    out->crlf (true if it ended CR LF, false for a bare LF);
 *	                    text points into data when the line lay wholly inside
 *	                    this chunk (zero copy), else into hold;
 *	  RM_LINE_TOO_LONG  the line passed line_max bytes (terminator excluded); the
 *	                    splitter then discards up to and including the next LF and
 *	                    reports RM_LINE_TOO_LONG once per such line, at its end,
 *	                    so the caller answers once and stays in sync (text is
 *	                    NULL and crlf false: the CR may be long gone).
 *	A line of exactly line_max bytes is complete; line_max + 1 is too long.
 *	The events do not depend on how the input was cut into chunks.
 *	hold must have room for line_max + 1 bytes (a CR may wait there for its
 *	LF); the returned text stays valid until the next call.  Lines hold any
 *	byte except LF, including NUL and bare CR.  rm_lines_reset forgets a
 *	partial line (after STARTTLS, pending plaintext must go).
 */
#ifndef RM_LINESPLIT_H
#define RM_LINESPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rm_line_kind { RM_LINE_NONE = 0, RM_LINE_COMPLETE, RM_LINE_TOO_LONG };

struct rm_line {
	enum rm_line_kind kind;
	const uint8_t *text;
	size_t text_len;
	bool crlf;
};

struct rm_lines {
	uint8_t *hold;		/* partial line carried across chunks */
	size_t hold_len;
	size_t line_max;
	bool discarding;	/* inside an over-long line */
};

void rm_lines_init(struct rm_lines *ls, uint8_t *hold, size_t line_max);
void rm_lines_reset(struct rm_lines *ls);
size_t rm_lines_feed(struct rm_lines *ls, const uint8_t *data, size_t len, struct rm_line *out);

#endif
