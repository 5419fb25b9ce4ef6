/*
 * NAME
 *	linesplit - bounded line splitter over arbitrary chunk boundaries
 * SUMMARY
 *	See proto/linesplit.h for the interface.
 * DESCRIPTION
 *	The bytes a line may have before its LF are its text plus one CR: at most
 *	line_max + 1.  So one feed looks for the LF only in the first
 *	line_max + 2 - hold_len bytes (memchr, the only per-byte work): if that
 *	window is full and holds no LF, the line is too long whatever follows,
 *	and the splitter drops the rest of it without copying.  Otherwise the
 *	partial line fits the hold buffer (line_max + 1 bytes, the CR included,
 *	since that CR may turn out to be text if no LF follows it).
 *
 *	Every event is decided at an LF from the bytes of that line alone, never
 *	from where a chunk ended, so any chunking of an input gives the same
 *	events as feeding it whole; tests and the fuzzer hold it to that.
 * DIAGNOSTICS
 *	Broken invariants (a bug in the caller or here) panic through RM_ASSERT.
 */
#include <string.h>

#include "core/log.h"
#include "proto/linesplit.h"

void rm_lines_init(struct rm_lines *ls, uint8_t *hold, size_t line_max)
{
	RM_ASSERT(hold != NULL);
	/* line_max + 2 below must not wrap. */
	RM_ASSERT(line_max <= SIZE_MAX / 2);
	ls->hold = hold;
	ls->line_max = line_max;
	rm_lines_reset(ls);
}

void rm_lines_reset(struct rm_lines *ls)
{
	ls->hold_len = 0;
	ls->discarding = false;
}

/*
 * Inside an over-long line: drop data[from..len) up to and including the
 * next LF, where the line ends and its one TOO_LONG event is due.
 */
static size_t lines_discard(struct rm_lines *ls, const uint8_t *data, size_t len, size_t from,
			    struct rm_line *out)
{
	const uint8_t *lf = memchr(data + from, '\n', len - from);

	if (lf == NULL)
		return len;
	ls->discarding = false;
	/* crlf stays false: the CR may have gone in an earlier chunk, unseen. */
	out->kind = RM_LINE_TOO_LONG;
	return (size_t)(lf - data) + 1;
}

size_t rm_lines_feed(struct rm_lines *ls, const uint8_t *data, size_t len, struct rm_line *out)
{
	out->kind = RM_LINE_NONE;
	out->text = NULL;
	out->text_len = 0;
	out->crlf = false;
	if (len == 0)
		return 0;
	RM_ASSERT(data != NULL);
	if (ls->discarding)
		return lines_discard(ls, data, len, 0, out);

	RM_ASSERT(ls->hold_len <= ls->line_max + 1);
	size_t room = ls->line_max + 2 - ls->hold_len;	/* >= 1: bytes the LF may still follow */
	size_t window = len < room ? len : room;
	const uint8_t *lf = memchr(data, '\n', window);

	if (lf == NULL) {
		if (window == room) {
			/* line_max + 2 bytes and no LF: too long even if the last is a CR. */
			ls->hold_len = 0;
			ls->discarding = true;
			return lines_discard(ls, data, len, window, out);
		}
		memcpy(ls->hold + ls->hold_len, data, len);
		ls->hold_len += len;
		return len;
	}

	size_t lf_at = (size_t)(lf - data);
	size_t line_len = ls->hold_len + lf_at;	/* bytes before the LF, <= line_max + 1 */
	uint8_t before_lf = lf_at > 0 ? data[lf_at - 1] :
		ls->hold_len > 0 ? ls->hold[ls->hold_len - 1] : 0;
	bool crlf = line_len > 0 && before_lf == '\r';
	size_t text_len = line_len - crlf;

	if (text_len > ls->line_max) {
		ls->hold_len = 0;
		out->kind = RM_LINE_TOO_LONG;
		return lf_at + 1;
	}
	if (ls->hold_len == 0) {
		out->text = data;	/* the whole line is in this chunk: no copy */
	} else {
		memcpy(ls->hold + ls->hold_len, data, lf_at);
		out->text = ls->hold;
		ls->hold_len = 0;
	}
	out->kind = RM_LINE_COMPLETE;
	out->text_len = text_len;
	out->crlf = crlf;
	return lf_at + 1;
}
