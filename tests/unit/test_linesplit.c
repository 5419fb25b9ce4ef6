/*
 * NAME
 *	test_linesplit - unit tests of proto/linesplit
 * DESCRIPTION
 *	Each case is an input, a line_max and the events it must give (golden).
 *	Every case is fed whole, cut at every position, cut at every pair of
 *	positions (short inputs) and byte by byte: all must give exactly the
 *	golden events, because a peer may cut its bytes anywhere.  Every chunk
 *	and the hold buffer are heap blocks of exact size, so ASan sees any
 *	read or write past either.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/linesplit.h"

#define EVENTS_MAX 16
#define TEXT_MAX 64
#define CUTS_MAX 256

struct event {
	enum rm_line_kind kind;
	size_t text_len;
	bool crlf;
	uint8_t text[TEXT_MAX];
};

struct events {
	size_t count;
	struct event ev[EVENTS_MAX];
};

/* Golden events: "C" complete CR LF, "L" complete bare LF, "T" too long. */
struct want {
	char kind;
	const char *text;
	size_t text_len;
};

struct split_case {
	const char *name;
	const char *input;
	size_t input_len;
	size_t line_max;
	size_t want_count;
	struct want want[EVENTS_MAX];
};

#define IN(s) (s), sizeof(s) - 1
#define W(k, s) { (k), (s), sizeof(s) - 1 }
#define TOO_LONG { 'T', "", 0 }

static const struct split_case cases[] = {
	{ "smtp", IN("EHLO a.example\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"), 32, 4,
	  { W('C', "EHLO a.example"), W('C', "MAIL FROM:<a@b>"), W('C', "RCPT TO:<c@d>"),
	    W('C', "DATA") } },
	{ "crlf-lf-mixed", IN("a\nbb\r\n\n\r\nc\r\r\nd\re\n"), 16, 6,
	  { W('L', "a"), W('C', "bb"), W('L', ""), W('C', ""), W('C', "c\r"), W('L', "d\re") } },
	{ "line-max-exact", IN("abcd\nabcd\r\nabc\r\r\nabcde\nx\n"), 4, 5,
	  { W('L', "abcd"), W('C', "abcd"), W('C', "abc\r"), TOO_LONG, W('L', "x") } },
	{ "line-max-plus-cr", IN("abcde\r\nabcd\r\r\nabc\rd\nok\r\n"), 4, 4,
	  { TOO_LONG, TOO_LONG, TOO_LONG, W('C', "ok") } },
	{ "too-long-resync",
	  IN("0123456789abcdefghijklmnopqrstuvwxyz0123\r\nok\r\n"
	     "this line is far too long\n\nlast\r\n"), 8, 5,
	  { TOO_LONG, W('C', "ok"), TOO_LONG, W('L', ""), W('C', "last") } },
	{ "nul-bytes", IN("a\0b\r\n\0\n\0\0\0\0\0\0\0\0\0\r\n"), 8, 3,
	  { W('C', "a\0b"), W('L', "\0"), TOO_LONG } },
	{ "empty-lines", IN("\n\n\r\n\n"), 4, 4,
	  { W('L', ""), W('L', ""), W('C', ""), W('L', "") } },
	{ "cr-only", IN("\r\r\r\n\r\rx\r"), 8, 1, { W('C', "\r\r") } },
	{ "trailing-partial", IN("QUIT\r\nNOOP\r"), 8, 1, { W('C', "QUIT") } },
	{ "line-max-zero", IN("\n\r\nx\n\r\r\n\n"), 0, 5,
	  { W('L', ""), W('C', ""), TOO_LONG, TOO_LONG, W('L', "") } },
	{ "line-max-one", IN("a\r\nab\r\n\r\r\n\rb\nb\n"), 1, 5,
	  { W('C', "a"), TOO_LONG, W('C', "\r"), TOO_LONG, W('L', "b") } },
};

static void record(struct events *evs, const struct rm_line *line)
{
	struct event *e;

	assert_true(evs->count < EVENTS_MAX);
	assert_true(line->text_len <= TEXT_MAX);
	e = &evs->ev[evs->count++];
	memset(e, 0, sizeof(*e));
	e->kind = line->kind;
	e->text_len = line->text_len;
	e->crlf = line->crlf;
	if (line->text_len > 0) {
		if (line->text == NULL) {
			fail_msg("text_len %zu with a NULL text", line->text_len);
			return;
		}
		memcpy(e->text, line->text, line->text_len);
	}
}

/*
 * Feeds input cut at cuts[0..ncuts) (increasing) into a fresh splitter and
 * records the events.  Checks the per-call contract as it goes.
 */
static void run_chunks(const struct split_case *c, const size_t *cuts, size_t ncuts,
		       struct events *evs)
{
	struct rm_lines ls;
	uint8_t *hold = malloc(c->line_max + 1);
	size_t start = 0;

	assert_non_null(hold);
	rm_lines_init(&ls, hold, c->line_max);
	evs->count = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : c->input_len;
		size_t len = end - start;
		uint8_t *chunk = malloc(len ? len : 1);
		const uint8_t *p = chunk;

		assert_non_null(chunk);
		memcpy(chunk, c->input + start, len);
		for (size_t calls = 0; len > 0; calls++) {
			struct rm_line line;
			bool hold_was_empty = ls.hold_len == 0;
			size_t n = rm_lines_feed(&ls, p, len, &line);

			assert_true(calls < c->input_len + 1);
			assert_true(n > 0 && n <= len);
			assert_true(ls.hold_len <= c->line_max + 1);
			switch (line.kind) {
			case RM_LINE_NONE:
				assert_int_equal(n, len);	/* a partial line takes all */
				assert_null(line.text);
				break;
			case RM_LINE_COMPLETE:
				assert_true(line.text_len <= c->line_max);
				/* Zero copy exactly when the line started in this chunk. */
				if (hold_was_empty)
					assert_ptr_equal(line.text, p);
				else
					assert_ptr_equal(line.text, hold);
				assert_int_equal(p[n - 1], '\n');
				record(evs, &line);
				break;
			case RM_LINE_TOO_LONG:
				assert_null(line.text);
				assert_int_equal(line.text_len, 0);
				assert_false(line.crlf);
				assert_int_equal(p[n - 1], '\n');
				record(evs, &line);
				break;
			default:
				fail_msg("bad kind %d", (int)line.kind);
			}
			p += n;
			len -= n;
		}
		free(chunk);
		start = end;
	}
	free(hold);
}

static void check_golden(const struct split_case *c, const struct events *evs,
			 const char *how)
{
	if (evs->count != c->want_count) {
		fail_msg("%s (%s): %zu events, want %zu", c->name, how, evs->count,
			 c->want_count);
		return;
	}
	for (size_t i = 0; i < c->want_count; i++) {
		const struct want *w = &c->want[i];
		const struct event *e = &evs->ev[i];

		if (w->kind == 'T') {
			assert_int_equal(e->kind, RM_LINE_TOO_LONG);
			continue;
		}
		if (e->kind != RM_LINE_COMPLETE || e->crlf != (w->kind == 'C') ||
		    e->text_len != w->text_len || memcmp(e->text, w->text, w->text_len) != 0)
			fail_msg("%s (%s): event %zu differs", c->name, how, i);
	}
}

static void test_golden_whole(void **state)
{
	struct events evs;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		run_chunks(&cases[i], NULL, 0, &evs);
		check_golden(&cases[i], &evs, "whole");
	}
}

static void test_every_cut(void **state)
{
	struct events evs;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct split_case *c = &cases[i];

		for (size_t cut = 1; cut < c->input_len; cut++) {
			run_chunks(c, &cut, 1, &evs);
			check_golden(c, &evs, "one cut");
		}
	}
}

static void test_every_cut_pair(void **state)
{
	struct events evs;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct split_case *c = &cases[i];

		for (size_t a = 1; a < c->input_len; a++) {
			for (size_t b = a + 1; b < c->input_len; b++) {
				size_t cuts[2] = { a, b };

				run_chunks(c, cuts, 2, &evs);
				check_golden(c, &evs, "two cuts");
			}
		}
	}
}

static void test_byte_by_byte(void **state)
{
	static size_t cuts[CUTS_MAX];
	struct events evs;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct split_case *c = &cases[i];

		assert_true(c->input_len <= CUTS_MAX);
		for (size_t k = 1; k < c->input_len; k++)
			cuts[k - 1] = k;
		run_chunks(c, cuts, c->input_len ? c->input_len - 1 : 0, &evs);
		check_golden(c, &evs, "byte by byte");
	}
}

/* A line longer than the hold buffer many times over, in several chunk sizes. */
static void test_long_line_chunks(void **state)
{
	enum { LONG_LEN = 5000 };
	static char input[LONG_LEN + 16];
	static size_t cuts[LONG_LEN];
	struct split_case c = { "long", input, 0, 16, 2, { TOO_LONG, W('C', "ok") } };
	struct events evs;

	memset(input, 'x', LONG_LEN);
	memcpy(input + LONG_LEN, "\r\nok\r\n", 6);
	c.input_len = LONG_LEN + 6;
	for (size_t step = 1; step <= 40; step++) {
		size_t ncuts = 0;

		for (size_t at = step; at < c.input_len && ncuts < LONG_LEN; at += step)
			cuts[ncuts++] = at;
		run_chunks(&c, cuts, ncuts, &evs);
		check_golden(&c, &evs, "steps");
	}
}

/* A partial line survives any number of calls until its LF arrives. */
static void test_partial_then_rest(void **state)
{
	uint8_t hold[9];
	struct rm_lines ls;
	struct rm_line line;

	rm_lines_init(&ls, hold, 8);
	assert_int_equal(rm_lines_feed(&ls, (const uint8_t *)"NOOP", 4, &line), 4);
	assert_int_equal(line.kind, RM_LINE_NONE);
	assert_int_equal(rm_lines_feed(&ls, (const uint8_t *)"\r", 1, &line), 1);
	assert_int_equal(line.kind, RM_LINE_NONE);
	assert_int_equal(rm_lines_feed(&ls, NULL, 0, &line), 0);
	assert_int_equal(line.kind, RM_LINE_NONE);
	assert_int_equal(rm_lines_feed(&ls, (const uint8_t *)"\nQUIT\n", 6, &line), 1);
	assert_int_equal(line.kind, RM_LINE_COMPLETE);
	assert_true(line.crlf);
	assert_int_equal(line.text_len, 4);
	assert_memory_equal(line.text, "NOOP", 4);
	assert_ptr_equal(line.text, hold);
}

/* Reset forgets a partial line and an over-long one alike. */
static void test_reset(void **state)
{
	uint8_t hold[5];
	struct rm_lines ls;
	struct rm_line line;
	const uint8_t *ok = (const uint8_t *)"ok\n";

	rm_lines_init(&ls, hold, 4);
	rm_lines_feed(&ls, (const uint8_t *)"abc", 3, &line);
	rm_lines_reset(&ls);
	assert_int_equal(rm_lines_feed(&ls, ok, 3, &line), 3);
	assert_int_equal(line.kind, RM_LINE_COMPLETE);
	assert_int_equal(line.text_len, 2);
	assert_ptr_equal(line.text, ok);

	assert_int_equal(rm_lines_feed(&ls, (const uint8_t *)"0123456789", 10, &line), 10);
	assert_int_equal(line.kind, RM_LINE_NONE);
	assert_true(ls.discarding);
	rm_lines_reset(&ls);
	assert_int_equal(rm_lines_feed(&ls, ok, 3, &line), 3);
	assert_int_equal(line.kind, RM_LINE_COMPLETE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_whole),
		cmocka_unit_test(test_every_cut),
		cmocka_unit_test(test_every_cut_pair),
		cmocka_unit_test(test_byte_by_byte),
		cmocka_unit_test(test_long_line_chunks),
		cmocka_unit_test(test_partial_then_rest),
		cmocka_unit_test(test_reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
