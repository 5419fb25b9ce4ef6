/*
 * NAME
 *	fuzz_linesplit - libFuzzer harness for proto/linesplit
 * DESCRIPTION
 *	Input layout: byte 0 picks line_max (0..64), byte 1 picks how the rest
 *	is cut into chunks (whole, byte by byte, fixed size 1..64, or sizes
 *	from a small generator seeded by byte 1), the rest is the stream.
 *
 *	The splitter's events are checked against a reference split of the
 *	whole stream done here directly: one event per LF, at exactly that
 *	LF, COMPLETE with the same text and crlf when the text fits line_max,
 *	TOO_LONG otherwise.  Each chunk is copied into a heap block of exact
 *	size and the hold buffer is exactly line_max + 1 bytes, so ASan flags
 *	any access past either.  Any broken invariant traps.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/linesplit.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

enum { LINE_MAX_MAX = 64, FIXED_CHUNK_MAX = 64 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct chunker {
	unsigned mode;
	size_t fixed_len;
	uint32_t rng;
};

static size_t chunk_len(struct chunker *ch, size_t left)
{
	size_t len;

	switch (ch->mode) {
	case 0:
		len = left;
		break;
	case 1:
		len = 1;
		break;
	case 2:
		len = ch->fixed_len;
		break;
	default:
		/* xorshift32: mostly short chunks, sometimes up to 255 bytes. */
		ch->rng ^= ch->rng << 13;
		ch->rng ^= ch->rng >> 17;
		ch->rng ^= ch->rng << 5;
		len = 1 + (ch->rng % 4 == 0 ? ch->rng % 255 : ch->rng % 9);
		break;
	}
	return len < left ? len : left;
}

/* The reference: the line ending at the next LF from *ref_pos, checked against ev. */
static void check_event(const uint8_t *body, size_t body_len, size_t *ref_pos,
			size_t consumed_to, size_t line_max, const struct rm_line *ev)
{
	const uint8_t *lf = memchr(body + *ref_pos, '\n', body_len - *ref_pos);

	CHECK(lf != NULL);
	size_t lf_at = (size_t)(lf - body);
	size_t pre_len = lf_at - *ref_pos;
	bool crlf = pre_len > 0 && body[lf_at - 1] == '\r';
	size_t text_len = pre_len - crlf;

	CHECK(consumed_to == lf_at + 1);	/* the event comes exactly with its LF */
	if (text_len > line_max) {
		CHECK(ev->kind == RM_LINE_TOO_LONG);
		CHECK(ev->text == NULL && ev->text_len == 0 && !ev->crlf);
	} else {
		CHECK(ev->kind == RM_LINE_COMPLETE);
		CHECK(ev->text_len == text_len && ev->crlf == crlf);
		CHECK(text_len == 0 || memcmp(ev->text, body + *ref_pos, text_len) == 0);
	}
	*ref_pos = lf_at + 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;

	size_t line_max = data[0] % (LINE_MAX_MAX + 1);
	struct chunker ch = {
		.mode = data[1] & 3,
		.fixed_len = 1 + (size_t)(data[1] >> 2) % FIXED_CHUNK_MAX,
		.rng = 0x9e3779b9u ^ data[1],
	};
	const uint8_t *body = data + 2;
	size_t body_len = size - 2;
	uint8_t *hold = malloc(line_max + 1);
	struct rm_lines ls;
	size_t pos = 0, ref_pos = 0;

	CHECK(hold != NULL);
	rm_lines_init(&ls, hold, line_max);
	while (pos < body_len) {
		size_t len = chunk_len(&ch, body_len - pos);
		uint8_t *chunk = malloc(len);
		size_t off = 0;

		CHECK(len > 0 && chunk != NULL);
		memcpy(chunk, body + pos, len);
		/* Each call consumes >= 1 byte, so len calls always suffice. */
		for (size_t calls = 0; off < len; calls++) {
			struct rm_line ev;
			bool hold_was_empty = ls.hold_len == 0;
			size_t n = rm_lines_feed(&ls, chunk + off, len - off, &ev);

			CHECK(calls < len);
			CHECK(n > 0 && n <= len - off);
			CHECK(ls.hold_len <= line_max + 1);
			if (ev.kind == RM_LINE_NONE) {
				CHECK(n == len - off && ev.text == NULL);
				CHECK(memchr(chunk + off, '\n', n) == NULL);
			} else {
				CHECK(ev.text_len <= line_max);
				if (ev.kind == RM_LINE_COMPLETE)
					CHECK(ev.text == (hold_was_empty ? chunk + off : hold));
				check_event(body, body_len, &ref_pos, pos + off + n, line_max, &ev);
			}
			off += n;
		}
		free(chunk);
		pos += len;
	}
	/* Nothing after the last event may end a line. */
	CHECK(memchr(body + ref_pos, '\n', body_len - ref_pos) == NULL);
	CHECK(ls.hold_len <= line_max + 1);
	free(hold);
	return 0;
}
