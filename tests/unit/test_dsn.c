/*
 * NAME
 *	test_dsn - unit tests of proto/dsn
 * DESCRIPTION
 *	A golden DSN for one failed recipient, compared whole (the boundary a
 *	placeholder); several recipients with mixed actions (subject, fields,
 *	Will-Retry-Until only for the delayed one); ORCPT and ENVID decoded
 *	from xtext; RET=FULL against HDRS and the default; the size cap (a
 *	too big RET=FULL falls back to headers, the cap bounds what is
 *	included); replies with CR, LF, NUL, controls and non-ASCII, and one
 *	that tries to end the part with our own boundary (folded, never a line
 *	of its own); the boundary made longer when the content holds it, and
 *	broken with 'X' when the original was not scanned or the digits run
 *	past the limit; SMTPUTF8 (global types, utf-8 addresses in unitext);
 *	the original's bare CR and LF, NUL, 8-bit bytes and over-long lines;
 *	dates; rm_dsn_should_send; every report error.
 *
 *	Every output is checked in C for its structure: each line ends CR LF
 *	and has at most 998 bytes, the boundary occurs only in the
 *	Content-Type parameter and as delimiter lines, the close delimiter is
 *	last.  The same DSN is written with the original in chunks split at
 *	every byte and with output caps of 1 byte and up (exact heap buffers,
 *	so ASan sees a write past one): the bytes must be identical.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/dsn.h"

#define SPAN(s) ((struct rm_smtp_span){ (const uint8_t *)(s), sizeof(s) - 1 })
#define NOSPAN ((struct rm_smtp_span){ NULL, 0 })

struct out {
	uint8_t *buf;
	size_t len;
	size_t cap;
	char boundary[RM_DSN_BOUNDARY_BYTES_MAX + 1];
	uint64_t boundary_hits;
	uint64_t replaced;
	bool body_8bit;
};

static void out_add(struct out *o, const uint8_t *p, size_t n)
{
	if (o->len + n > o->cap) {
		size_t cap = (o->len + n) * 2 + 64;
		uint8_t *b = realloc(o->buf, cap);

		if (b == NULL)
			abort();	/* out of memory: nothing to test */
		o->buf = b;
		o->cap = cap;
	}
	if (n > 0)
		memcpy(o->buf + o->len, p, n);
	o->len += n;
}

static void out_free(struct out *o)
{
	free(o->buf);
	memset(o, 0, sizeof(*o));
}

/*
 * Writes the whole DSN: the original scanned (when scan) and fed in
 * chunks of chunk bytes (the first one split_at bytes when non-zero),
 * every write into an exact heap buffer of cap bytes.
 */
static void run_dsn(const struct rm_dsn_report *r, const uint8_t *orig, size_t orig_len, size_t cap,
		    size_t chunk, size_t split_at, bool scan, struct out *o)
{
	struct rm_dsn_writer w;
	uint8_t *tmp = malloc(cap);
	size_t pos = 0, n, blen, rounds = 0;
	const char *b;

	assert_non_null(tmp);
	memset(o, 0, sizeof(*o));
	assert_int_equal(rm_dsn_begin(&w, r), RM_DSN_OK);
	if (scan) {
		while (pos < orig_len) {
			size_t take = orig_len - pos < chunk ? orig_len - pos : chunk;
			size_t used;

			if (split_at > 0 && pos < split_at && take > split_at - pos)
				take = split_at - pos;
			used = rm_dsn_scan_original(&w, orig + pos, take);
			pos += used;
			if (used < take)
				break;
		}
	}
	do {
		n = rm_dsn_write_head(&w, tmp, cap);
		out_add(o, tmp, n);
		assert_true(++rounds < 10000000);
	} while (!rm_dsn_head_done(&w));
	pos = 0;
	while (pos < orig_len && !rm_dsn_original_done(&w)) {
		size_t take = orig_len - pos < chunk ? orig_len - pos : chunk;
		size_t used;

		if (split_at > 0 && pos < split_at && take > split_at - pos)
			take = split_at - pos;
		n = rm_dsn_feed_original(&w, orig + pos, take, tmp, cap, &used);
		assert_true(n <= cap && used <= take);
		out_add(o, tmp, n);
		pos += used;
		/* Progress: output, input, or the end of what is included. */
		assert_true(n > 0 || used > 0 || rm_dsn_original_done(&w));
		assert_true(++rounds < 10000000);
	}
	do {
		n = rm_dsn_end(&w, tmp, cap);
		out_add(o, tmp, n);
		assert_true(++rounds < 10000000);
	} while (!rm_dsn_done(&w));
	b = rm_dsn_boundary(&w, &blen);
	assert_non_null(b);
	memcpy(o->boundary, b, blen);
	o->boundary[blen] = '\0';
	o->boundary_hits = w.boundary_hits;
	o->replaced = w.replaced;
	o->body_8bit = w.body_8bit;
	free(tmp);
}

/*
 * Lines CR LF only and <= 998 bytes; the boundary only in the parameter and
 * in delimiter lines; returns how many parts there are (delimiters before
 * the close).
 */
static size_t check_structure(const struct out *o)
{
	const uint8_t *p = o->buf;
	size_t len = o->len, start = 0, blen = strlen(o->boundary), delims = 0;
	bool closed = false, in_header = true, param = false;

	assert_true(blen >= 1 && blen <= RM_DSN_BOUNDARY_BYTES_MAX);
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\n')
			fail_msg("bare LF at %zu", i);
		if (p[i] != '\r')
			continue;
		if (i + 1 >= len || p[i + 1] != '\n')
			fail_msg("bare CR at %zu", i);
		if (i - start > RM_DSN_LINE_BYTES_MAX)
			fail_msg("line of %zu bytes at %zu", i - start, start);
		/* This line: p[start..i). */
		const uint8_t *l = p + start;
		size_t ll = i - start;

		if (in_header && ll == 0)
			in_header = false;
		if (closed)
			fail_msg("bytes after the close delimiter");
		if (ll >= 2 + blen && l[0] == '-' && l[1] == '-' && memcmp(l + 2, o->boundary, blen) == 0) {
			if (ll == 2 + blen) {
				delims++;
			} else if (ll == 4 + blen && l[2 + blen] == '-' && l[3 + blen] == '-') {
				closed = true;
			} else {
				fail_msg("line starting with the boundary at %zu", start);
			}
		} else {
			/* Anywhere else only as the header parameter. */
			for (size_t k = 0; k + blen <= ll; k++) {
				if (memcmp(l + k, o->boundary, blen) != 0)
					continue;
				if (in_header && !param && k >= 10 && memcmp(l + k - 10, "boundary=\"", 10) == 0)
					param = true;
				else
					fail_msg("boundary inside a line at %zu", start + k);
			}
		}
		start = i + 2;
		i++;
	}
	assert_int_equal(start, len);
	assert_true(param);
	assert_true(closed);
	return delims;
}

static bool contains(const struct out *o, const char *s)
{
	if (o->buf == NULL)
		return false;
	return memmem(o->buf, o->len, s, strlen(s)) != NULL;
}

static size_t count(const struct out *o, const char *s)
{
	size_t n = 0, k = strlen(s);
	const uint8_t *p = o->buf, *end = o->buf + o->len;

	if (p == NULL)
		return 0;
	while ((p = memmem(p, (size_t)(end - p), s, k)) != NULL) {
		n++;
		p += k;
	}
	return n;
}

/* want with every "{B}" the boundary. */
static void assert_golden(const struct out *o, const char *want)
{
	char *exp = malloc(strlen(want) * 2 + 1024);
	size_t n = 0;

	assert_non_null(exp);
	for (const char *p = want; *p;) {
		if (strncmp(p, "{B}", 3) == 0) {
			n += (size_t)sprintf(exp + n, "%s", o->boundary);
			p += 3;
		} else {
			exp[n++] = *p++;
		}
	}
	if (n != o->len || memcmp(exp, o->buf, n) != 0) {
		size_t d = 0;

		while (d < n && d < o->len && exp[d] == (char)o->buf[d])
			d++;
		fail_msg("DSN differs at byte %zu:\n--- got\n%.*s\n--- want\n%.*s", d, (int)o->len,
			 (const char *)o->buf, (int)n, exp);
	}
	free(exp);
}

/* --- reports ----------------------------------------------------------------- */

#define NOW 1700000000LL		/* Tue, 14 Nov 2023 22:13:20 +0000 */
#define ARRIVAL 1699990000LL		/* Tue, 14 Nov 2023 19:26:40 +0000 */

static const char orig_msg[] =
	"From: alice@example.com\r\n"
	"To: bob@example.net\r\n"
	"Subject: hi\r\n"
	"\r\n"
	"Hello Bob.\r\n";

static struct rm_dsn_rcpt failed_rcpt(void)
{
	struct rm_dsn_rcpt rc = {
		.addr = SPAN("bob@example.net"),
		.action = RM_DSN_FAILED,
		.status = "5.1.1",
		.remote_mta = SPAN("mx.example.net"),
		.reply = SPAN("550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"),
		.last_attempt_unix_s = NOW,
	};

	return rc;
}

static struct rm_dsn_report base_report(const struct rm_dsn_rcpt *rc, size_t n)
{
	struct rm_dsn_report r = {
		.hostname = SPAN("mx.example.org"),
		.from_display = SPAN("Mail Delivery System"),
		.id = SPAN("Q1A2B3"),
		.sender = SPAN("alice@example.com"),
		.envid = NOSPAN,
		.ret = RM_SMTP_RET_NONE,
		.arrival_unix_s = ARRIVAL,
		.now_unix_s = NOW,
		.original_bytes = sizeof(orig_msg) - 1,
		.original_bytes_max = 10 * 1024 * 1024,
		.rcpt = rc,
		.rcpt_count = n,
	};

	return r;
}

static void run_simple(const struct rm_dsn_report *r, const char *orig, struct out *o)
{
	run_dsn(r, (const uint8_t *)orig, strlen(orig), 4096, 4096, 0, true, o);
}

/* --- tests ------------------------------------------------------------------- */

static void test_golden_failed(void **state)
{
	struct rm_dsn_rcpt rc = failed_rcpt();
	struct rm_dsn_report r = base_report(&rc, 1);
	struct out o;

	run_simple(&r, orig_msg, &o);
	assert_string_equal(o.boundary, "=_rm.Q1A2B3.1");
	assert_golden(&o,
		"From: \"Mail Delivery System\" <MAILER-DAEMON@mx.example.org>\r\n"
		"To: alice@example.com\r\n"
		"Subject: Undelivered Mail Returned to Sender\r\n"
		"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
		"Message-ID: <Q1A2B3.1700000000@mx.example.org>\r\n"
		"Auto-Submitted: auto-replied\r\n"
		"MIME-Version: 1.0\r\n"
		"Content-Type: multipart/report; report-type=delivery-status;\r\n"
		"\tboundary=\"{B}\"\r\n"
		"\r\n"
		"This is a MIME-encapsulated message.\r\n"
		"\r\n"
		"--{B}\r\n"
		"Content-Description: Notification\r\n"
		"Content-Type: text/plain; charset=us-ascii\r\n"
		"\r\n"
		"This is the mail delivery system at mx.example.org.\r\n"
		"\r\n"
		"Your message could not be delivered to one or more of its recipients.\r\n"
		"The reasons are given below.\r\n"
		"The headers of your message are attached.\r\n"
		"\r\n"
		"<bob@example.net>: delivery failed (status 5.1.1)\r\n"
		"    host mx.example.net said: 550 5.1.1 <bob@example.net>: Recipient address\r\n"
		"    rejected: User unknown\r\n"
		"\r\n"
		"\r\n"
		"--{B}\r\n"
		"Content-Description: Delivery report\r\n"
		"Content-Type: message/delivery-status\r\n"
		"\r\n"
		"Reporting-MTA: dns; mx.example.org\r\n"
		"Arrival-Date: Tue, 14 Nov 2023 19:26:40 +0000\r\n"
		"\r\n"
		"Final-Recipient: rfc822; bob@example.net\r\n"
		"Action: failed\r\n"
		"Status: 5.1.1\r\n"
		"Remote-MTA: dns; mx.example.net\r\n"
		"Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address\r\n"
		" rejected: User unknown\r\n"
		"Last-Attempt-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
		"\r\n"
		"--{B}\r\n"
		"Content-Description: Original message headers\r\n"
		"Content-Type: text/rfc822-headers\r\n"
		"\r\n"
		"From: alice@example.com\r\n"
		"To: bob@example.net\r\n"
		"Subject: hi\r\n"
		"\r\n"
		"--{B}--\r\n");
	assert_int_equal(check_structure(&o), 3);
	assert_false(o.body_8bit);
	assert_int_equal(o.boundary_hits, 0);
	out_free(&o);
}

static void test_mixed_actions(void **state)
{
	struct rm_dsn_rcpt rc[3] = { failed_rcpt(), failed_rcpt(), failed_rcpt() };
	struct rm_dsn_report r;
	struct out o;

	rc[1].addr = SPAN("carol@example.net");
	rc[1].action = RM_DSN_DELAYED;
	rc[1].status = "4.4.1";
	rc[1].reply = NOSPAN;
	rc[1].remote_mta = NOSPAN;
	rc[1].reason = SPAN("connect to mx.example.net[192.0.2.1]:25: Connection timed out");
	rc[1].retry_until_unix_s = NOW + 5 * 86400;
	rc[2].addr = SPAN("dave@example.net");
	rc[2].action = RM_DSN_DELIVERED;
	rc[2].status = "2.0.0";
	rc[2].reply = SPAN("250 2.0.0 Ok: queued as 4ABC");
	r = base_report(rc, 3);
	run_simple(&r, orig_msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(contains(&o, "Subject: Undelivered Mail Returned to Sender\r\n"));
	assert_int_equal(count(&o, "Final-Recipient: "), 3);
	assert_true(contains(&o, "\r\n\r\nFinal-Recipient: rfc822; carol@example.net\r\n"
				 "Action: delayed\r\nStatus: 4.4.1\r\n"
				 "Diagnostic-Code: X-ringmail; connect to mx.example.net[192.0.2.1]:25:\r\n"
				 " Connection timed out\r\n"
				 "Last-Attempt-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
				 "Will-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000\r\n"));
	assert_int_equal(count(&o, "Will-Retry-Until:"), 1);
	assert_true(contains(&o, "Action: delivered\r\nStatus: 2.0.0\r\n"));
	assert_true(contains(&o, "<carol@example.net>: not yet delivered (status 4.4.1)\r\n"
				 "    connect to mx.example.net[192.0.2.1]:25: Connection timed out\r\n"
				 "    Delivery will be tried until Sun, 19 Nov 2023 22:13:20 +0000.\r\n"));
	assert_true(contains(&o, "<dave@example.net>: delivered (status 2.0.0)\r\n"));
	out_free(&o);

	/* Only delayed: the delay subject and text. */
	r = base_report(&rc[1], 1);
	run_simple(&r, orig_msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(contains(&o, "Subject: Delayed Mail (still being retried)\r\n"));
	assert_true(contains(&o, "Delivery is still being attempted"));
	out_free(&o);

	/* Only delivered: a success report. */
	r = base_report(&rc[2], 1);
	run_simple(&r, orig_msg, &o);
	assert_true(contains(&o, "Subject: Successful Mail Delivery Report\r\n"));
	out_free(&o);
}

static void test_orcpt_envid(void **state)
{
	struct rm_dsn_rcpt rc[2] = { failed_rcpt(), failed_rcpt() };
	struct rm_dsn_report r;
	struct out o;

	rc[0].orcpt_type = SPAN("rfc822");
	rc[0].orcpt = SPAN("Bob+2Btag@Example.NET");
	/* Not xtext ('+' without hex): as sent. */
	rc[1].orcpt_type = SPAN("rfc822");
	rc[1].orcpt = SPAN("x+zz@example.net");
	r = base_report(rc, 2);
	r.envid = SPAN("QQ+3D314159");
	run_simple(&r, orig_msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(contains(&o, "\r\n\r\nOriginal-Envelope-Id: QQ=314159\r\n"
				 "Reporting-MTA: dns; mx.example.org\r\n"));
	assert_true(contains(&o, "\r\n\r\nOriginal-Recipient: rfc822; Bob+tag@Example.NET\r\n"
				 "Final-Recipient: rfc822; bob@example.net\r\n"));
	assert_true(contains(&o, "Original-Recipient: rfc822; x+zz@example.net\r\n"));
	out_free(&o);

	/* Decoded controls are not trusted either. */
	rc[0].orcpt = SPAN("a+0D+0Ab@example.net");
	r = base_report(rc, 1);
	run_simple(&r, orig_msg, &o);
	assert_true(contains(&o, "Original-Recipient: rfc822; a??b@example.net\r\n"));
	out_free(&o);
}

static const char big_msg[] =
	"From: alice@example.com\r\n"
	"Subject: the body\r\n"
	"\r\n"
	"line one\r\n"
	"line two\r\n";

static void test_ret_full_hdrs(void **state)
{
	struct rm_dsn_rcpt rc = failed_rcpt();
	struct rm_dsn_report r = base_report(&rc, 1);
	struct out o;

	r.original_bytes = sizeof(big_msg) - 1;
	r.ret = RM_SMTP_RET_FULL;
	run_simple(&r, big_msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(contains(&o, "Your message is attached.\r\n"));
	assert_true(contains(&o, "Content-Type: message/rfc822\r\n\r\n"
				 "From: alice@example.com\r\nSubject: the body\r\n\r\n"
				 "line one\r\nline two\r\n\r\n--"));
	out_free(&o);

	r.ret = RM_SMTP_RET_HDRS;
	run_simple(&r, big_msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(contains(&o, "Content-Type: text/rfc822-headers\r\n\r\n"
				 "From: alice@example.com\r\nSubject: the body\r\n\r\n--"));
	assert_false(contains(&o, "line one"));
	out_free(&o);

	/* No original at all. */
	r.original_bytes_max = 0;
	run_simple(&r, big_msg, &o);
	assert_int_equal(check_structure(&o), 2);
	assert_true(contains(&o, "Your message is not attached.\r\n"));
	assert_false(contains(&o, "Subject: the body"));
	out_free(&o);
}

static void test_size_cap(void **state)
{
	struct rm_dsn_rcpt rc = failed_rcpt();
	struct rm_dsn_report r = base_report(&rc, 1);
	struct out o;

	/* RET=FULL but larger than the cap: headers only, and the text says why. */
	r.ret = RM_SMTP_RET_FULL;
	r.original_bytes = sizeof(big_msg) - 1;
	r.original_bytes_max = r.original_bytes - 1;
	run_simple(&r, big_msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(contains(&o, "Your message was larger than 65 bytes, so only its headers are attached.\r\n"));
	assert_true(contains(&o, "Content-Type: text/rfc822-headers\r\n\r\n"
				 "From: alice@example.com\r\nSubject: the body\r\n\r\n--"));
	out_free(&o);

	/* The cap bounds the headers too: cut inside a line, which is ended. */
	r.original_bytes_max = 30;
	run_simple(&r, big_msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(contains(&o, "\r\n\r\nFrom: alice@example.com\r\nSubje\r\n\r\n--"));
	out_free(&o);

	/* And RET=FULL within the cap stops at the cap even if more is fed. */
	r.original_bytes = 10;
	r.original_bytes_max = 10;
	run_simple(&r, big_msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(contains(&o, "Content-Type: message/rfc822\r\n\r\nFrom: alic\r\n\r\n--"));
	out_free(&o);
}

static void test_hostile_reply(void **state)
{
	static const char reply[] =
		"550-5.7.1 first line\r\n550-5.7.1 \0second\x80\xff line\n\n\r\n550 5.7.1 \x01last\x7f\r\r";
	static const char inject[] =
		"550 ok\r\n\r\n--=_rm.Q1A2B3.1--\r\nX-Injected: yes\r\n\r\nMore";
	struct rm_dsn_rcpt rc = failed_rcpt();
	struct rm_dsn_report r;
	struct out o;

	rc.reply = (struct rm_smtp_span){ (const uint8_t *)reply, sizeof(reply) - 1 };
	r = base_report(&rc, 1);
	run_simple(&r, orig_msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(contains(&o, "Diagnostic-Code: smtp; 550-5.7.1 first line\r\n"
				 " 550-5.7.1 ?second?? line\r\n"
				 " 550 5.7.1 ?last?\r\n"));
	assert_true(contains(&o, "    host mx.example.net said: 550-5.7.1 first line\r\n"
				 "    550-5.7.1 ?second?? line\r\n"
				 "    550 5.7.1 ?last?\r\n"));
	out_free(&o);

	/* A reply holding our boundary: the boundary grows, the text is folded. */
	rc.reply = SPAN(inject);
	r = base_report(&rc, 1);
	run_simple(&r, orig_msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_string_equal(o.boundary, "=_rm.Q1A2B3.10");
	assert_true(contains(&o, "Diagnostic-Code: smtp; 550 ok\r\n --=_rm.Q1A2B3.1--\r\n"
				 " X-Injected: yes\r\n More\r\n"));
	assert_false(contains(&o, "\r\nX-Injected"));
	assert_int_equal(o.boundary_hits, 0);
	out_free(&o);

	/* Non-ASCII in a 7-bit DSN: one '?' per character; a word past 998 bytes is cut. */
	{
		size_t n = 3000;
		uint8_t *t = malloc(n);

		assert_non_null(t);
		memset(t, 'a', n);
		memcpy(t, "550 \xc3\xa9t\xc3\xa9 ", 10);
		rc.reply = (struct rm_smtp_span){ t, n };
		r = base_report(&rc, 1);
		run_simple(&r, orig_msg, &o);
		assert_int_equal(check_structure(&o), 3);
		assert_true(contains(&o, "Diagnostic-Code: smtp; 550 ?t?\r\n aaaa"));
		assert_false(o.body_8bit);
		for (size_t i = 0; i < o.len; i++)
			assert_true(o.buf[i] < 0x80);
		out_free(&o);
		free(t);
	}
}

static void test_boundary_collision(void **state)
{
	static const char trap[] =
		"From: alice@example.com\r\n"
		"X-Trap: --=_rm.Q1A2B3.1\r\n"
		"X-Trap2: =_rm.Q1A2B3.123 and =_rm.Q1A2B3.99\r\n"
		"\r\n"
		"--=_rm.Q1A2B3.1--\r\n";
	struct rm_dsn_rcpt rc = failed_rcpt();
	struct rm_dsn_report r = base_report(&rc, 1);
	struct out o;
	char *msg;
	size_t n;

	r.ret = RM_SMTP_RET_FULL;
	r.original_bytes = sizeof(trap) - 1;
	run_simple(&r, trap, &o);
	assert_string_equal(o.boundary, "=_rm.Q1A2B3.1000");
	assert_int_equal(check_structure(&o), 3);
	assert_int_equal(o.boundary_hits, 0);
	assert_true(contains(&o, trap));	/* the original unchanged */
	out_free(&o);

	/* Not scanned: the boundary stays short and its occurrences are broken. */
	run_dsn(&r, (const uint8_t *)trap, sizeof(trap) - 1, 4096, 4096, 0, false, &o);
	assert_string_equal(o.boundary, "=_rm.Q1A2B3.1");
	assert_int_equal(check_structure(&o), 3);
	assert_int_equal(o.boundary_hits, 3);
	assert_true(contains(&o, "X-Trap: --=_rm.Q1A2B3.X\r\n"));
	assert_true(contains(&o, "\r\n--=_rm.Q1A2B3.X--\r\n"));
	out_free(&o);

	/* A run of digits longer than the boundary may be: the guard breaks it. */
	msg = malloc(200);
	assert_non_null(msg);
	n = (size_t)sprintf(msg, "X-Long: =_rm.Q1A2B3.1");
	memset(msg + n, '0', 80);
	n += 80;
	n += (size_t)sprintf(msg + n, "\r\n\r\n");
	r.original_bytes = n;
	run_dsn(&r, (const uint8_t *)msg, n, 4096, 4096, 0, true, &o);
	assert_int_equal(strlen(o.boundary), RM_DSN_BOUNDARY_BYTES_MAX);
	assert_int_equal(check_structure(&o), 3);
	assert_int_equal(o.boundary_hits, 1);
	out_free(&o);
	free(msg);
}

static void test_smtputf8(void **state)
{
	struct rm_dsn_rcpt rc[2] = { failed_rcpt(), failed_rcpt() };
	struct rm_dsn_report r;
	struct out o;
	static const char u8msg[] = "From: \xc3\xa1lice@ex\xc3\xa4mple.com\r\nSubject: gr\xc3\xbc\xc3\x9f\r\n\r\nbody\r\n";

	rc[0].addr = SPAN("b\xc3\xb8" "b@example.net");
	rc[0].reply = SPAN("550 5.1.1 b\xc3\xb8" "b: no such user \xff");
	rc[1].addr = SPAN("b\xc3\xb8+tag=x@example.net");
	rc[1].orcpt_type = SPAN("utf-8");
	rc[1].orcpt = SPAN("b\\x{F8}+2Btag@example.net");
	r = base_report(rc, 2);
	r.smtputf8 = true;
	r.sender = SPAN("\xc3\xa1lice@ex\xc3\xa4mple.com");
	r.original_bytes = sizeof(u8msg) - 1;
	run_simple(&r, u8msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(o.body_8bit);
	assert_true(contains(&o, "report-type=global-delivery-status;\r\n"));
	assert_true(contains(&o, "To: \xc3\xa1lice@ex\xc3\xa4mple.com\r\n"));
	assert_true(contains(&o, "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"));
	assert_true(contains(&o, "Content-Type: message/global-delivery-status\r\n"));
	assert_true(contains(&o, "Final-Recipient: utf-8; b\xc3\xb8" "b@example.net\r\n"));
	assert_true(contains(&o, "Final-Recipient: utf-8; b\xc3\xb8\\x{2B}tag\\x{3D}x@example.net\r\n"));
	assert_true(contains(&o, "Original-Recipient: utf-8; b\\x{F8}+tag@example.net\r\n"));
	assert_true(contains(&o, "Diagnostic-Code: smtp; 550 5.1.1 b\xc3\xb8" "b: no such user ?\r\n"));
	assert_true(contains(&o, "Content-Type: message/global-headers\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
				 "From: \xc3\xa1lice@ex\xc3\xa4mple.com\r\nSubject: gr\xc3\xbc\xc3\x9f\r\n\r\n--"));
	out_free(&o);

	/* The same without SMTPUTF8: 7-bit throughout, rfc822 types. */
	r.smtputf8 = false;
	run_simple(&r, u8msg, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_true(contains(&o, "Final-Recipient: rfc822; b?b@example.net\r\n"));
	assert_true(contains(&o, "To: ?lice@ex?mple.com\r\n"));
	/* The original's 8-bit headers are passed on, and labelled so. */
	assert_true(contains(&o, "Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 8bit\r\n"));
	assert_true(o.body_8bit);
	out_free(&o);

	/* Not scanned: 8-bit bytes of the original become '?', the DSN stays 7-bit. */
	run_dsn(&r, (const uint8_t *)u8msg, sizeof(u8msg) - 1, 4096, 4096, 0, false, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_false(o.body_8bit);
	assert_int_equal(o.replaced, 8);
	for (size_t i = 0; i < o.len; i++)
		assert_true(o.buf[i] < 0x80);
	out_free(&o);
}

/* An original with every line end, NUL, and lines past 998 bytes in header and body. */
static size_t odd_original(uint8_t **out)
{
	size_t cap = 8000, n = 0;
	uint8_t *m = malloc(cap);

	assert_non_null(m);
	n += (size_t)sprintf((char *)m + n, "From: a@b\nX-Bare-CR: x\rX-Nul: a");
	m[n++] = 0;
	n += (size_t)sprintf((char *)m + n, "b\r\nX-Long: ");
	memset(m + n, 'h', 2100);
	n += 2100;
	n += (size_t)sprintf((char *)m + n, "\r\n\n");	/* CRLF then a bare LF: the empty line */
	memset(m + n, 'b', 2500);
	n += 2500;
	n += (size_t)sprintf((char *)m + n, "\r\r\nlast line without end");
	*out = m;
	return n;
}

static void test_original_normalised(void **state)
{
	struct rm_dsn_rcpt rc = failed_rcpt();
	struct rm_dsn_report r = base_report(&rc, 1);
	struct out o;
	uint8_t *m;
	size_t n = odd_original(&m);
	const uint8_t *p;

	r.ret = RM_SMTP_RET_FULL;
	r.original_bytes = n;
	run_dsn(&r, m, n, 4096, 4096, 0, true, &o);
	assert_int_equal(check_structure(&o), 3);
	assert_int_equal(o.replaced, 1);
	assert_true(contains(&o, "\r\n\r\nFrom: a@b\r\nX-Bare-CR: x\r\nX-Nul: a?b\r\nX-Long: hhh"));
	/* The header line goes on folded, the body line is cut. */
	p = memmem(o.buf, o.len, "X-Long: ", 8);
	assert_non_null(p);
	assert_memory_equal(p + 998, "\r\n h", 4);
	p = memmem(o.buf, o.len, "\r\n\r\nbbb", 7);
	assert_non_null(p);
	assert_memory_equal(p + 4 + 998, "\r\nbbb", 5);
	assert_true(contains(&o, "bbb\r\n\r\nlast line without end\r\n\r\n--"));
	out_free(&o);
	free(m);
}

/* The same DSN whatever the chunks and caps. */
static void test_chunks_and_caps(void **state)
{
	struct rm_dsn_rcpt rc[2] = { failed_rcpt(), failed_rcpt() };
	struct rm_dsn_report r;
	struct out ref, o;
	uint8_t *m;
	size_t n = odd_original(&m);

	rc[1].addr = SPAN("eve@example.net");
	rc[1].action = RM_DSN_DELAYED;
	rc[1].status = "4.2.2";
	rc[1].retry_until_unix_s = NOW + 3600;
	rc[1].reply = SPAN("452-4.2.2 Mailbox full\r\n452 4.2.2 try later");
	r = base_report(rc, 2);
	r.ret = RM_SMTP_RET_FULL;
	r.original_bytes = n;
	run_dsn(&r, m, n, 1 << 20, 1 << 20, 0, true, &ref);
	assert_int_equal(check_structure(&ref), 3);

	/* Split in two at every byte. */
	for (size_t k = 1; k < n; k++) {
		run_dsn(&r, m, n, 1 << 20, 1 << 20, k, true, &o);
		if (o.len != ref.len || memcmp(o.buf, ref.buf, o.len) != 0)
			fail_msg("split at %zu differs", k);
		out_free(&o);
	}
	/* Every chunk size up to 64, and byte by byte. */
	for (size_t c = 1; c <= 64; c++) {
		run_dsn(&r, m, n, 1 << 20, c, 0, true, &o);
		if (o.len != ref.len || memcmp(o.buf, ref.buf, o.len) != 0)
			fail_msg("chunks of %zu differ", c);
		out_free(&o);
	}
	/* Small caps, resumed: 1 to 64 bytes, then a few odd ones. */
	for (size_t cap = 1; cap <= 80; cap++) {
		size_t c = cap > 64 ? 4096 : cap * 7 % 13 + 1;

		run_dsn(&r, m, n, cap > 64 ? cap * 31 : cap, c, 0, true, &o);
		if (o.len != ref.len || memcmp(o.buf, ref.buf, o.len) != 0)
			fail_msg("cap %zu differs", cap);
		out_free(&o);
	}
	out_free(&ref);
	free(m);
}

static void test_dates(void **state)
{
	struct rm_dsn_rcpt rc = failed_rcpt();
	struct rm_dsn_report r = base_report(&rc, 1);
	struct out o;

	r.now_unix_s = 951782400;	/* 2000-02-29 00:00:00Z, a Tuesday */
	run_simple(&r, orig_msg, &o);
	assert_true(contains(&o, "\r\nDate: Tue, 29 Feb 2000 00:00:00 +0000\r\n"));
	out_free(&o);
	r.tz_offset_min = -300;
	run_simple(&r, orig_msg, &o);
	assert_true(contains(&o, "\r\nDate: Mon, 28 Feb 2000 19:00:00 -0500\r\n"));
	assert_true(contains(&o, "Arrival-Date: Tue, 14 Nov 2023 14:26:40 -0500\r\n"));
	out_free(&o);
	r.tz_offset_min = 330;
	r.now_unix_s = 1;
	run_simple(&r, orig_msg, &o);
	assert_true(contains(&o, "\r\nDate: Thu, 1 Jan 1970 05:30:01 +0530\r\n"));
	out_free(&o);
	r.tz_offset_min = -1439;
	run_simple(&r, orig_msg, &o);
	assert_true(contains(&o, "\r\nDate: Wed, 31 Dec 1969 00:01:01 -2359\r\n"));
	out_free(&o);
	r.tz_offset_min = 0;
	r.now_unix_s = 253402300799LL;
	run_simple(&r, orig_msg, &o);
	assert_true(contains(&o, "\r\nDate: Fri, 31 Dec 9999 23:59:59 +0000\r\n"));
	out_free(&o);
}

static void test_should_send(void **state)
{
	const uint8_t *s = (const uint8_t *)"a@b";

	assert_false(rm_dsn_should_send(s, 0, 0, RM_DSN_FAILED, true));
	assert_false(rm_dsn_should_send((const uint8_t *)"<>", 2, 0, RM_DSN_FAILED, true));
	assert_false(rm_dsn_should_send(NULL, 0, 0, RM_DSN_FAILED, true));
	assert_true(rm_dsn_should_send(s, 3, 0, RM_DSN_FAILED, false));
	assert_false(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_NEVER, RM_DSN_FAILED, true));
	assert_false(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_NEVER, RM_DSN_DELAYED, true));
	assert_false(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_SUCCESS, RM_DSN_FAILED, true));
	assert_false(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_DELAY, RM_DSN_FAILED, true));
	assert_true(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_FAILURE | RM_SMTP_NOTIFY_DELAY,
				       RM_DSN_FAILED, true));
	assert_true(rm_dsn_should_send(s, 3, 0, RM_DSN_DELAYED, true));
	assert_false(rm_dsn_should_send(s, 3, 0, RM_DSN_DELAYED, false));
	assert_false(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_FAILURE, RM_DSN_DELAYED, true));
	assert_true(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_DELAY, RM_DSN_DELAYED, false));
	assert_false(rm_dsn_should_send(s, 3, 0, RM_DSN_DELIVERED, true));
	assert_true(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_SUCCESS, RM_DSN_DELIVERED, false));
	assert_true(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_SUCCESS, RM_DSN_RELAYED, false));
	assert_true(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_SUCCESS, RM_DSN_EXPANDED, false));
	assert_false(rm_dsn_should_send(s, 3, RM_SMTP_NOTIFY_FAILURE, RM_DSN_RELAYED, false));
}

static void test_report_errors(void **state)
{
	struct rm_dsn_rcpt rc[2] = { failed_rcpt(), failed_rcpt() };
	struct rm_dsn_report r;
	struct rm_dsn_writer w;
	char longs[600];

	memset(longs, 'a', sizeof(longs));
#define EXPECT(err) assert_int_equal(rm_dsn_begin(&w, &r), (err))
	r = base_report(rc, 2);
	EXPECT(RM_DSN_OK);
	r.hostname = SPAN("mx example.org");
	EXPECT(RM_DSN_E_HOSTNAME);
	r.hostname = NOSPAN;
	EXPECT(RM_DSN_E_HOSTNAME);
	r = base_report(rc, 2);
	r.id = SPAN("Q=1");
	EXPECT(RM_DSN_E_ID);
	r.id = (struct rm_smtp_span){ (const uint8_t *)longs, RM_DSN_ID_BYTES_MAX + 1 };
	EXPECT(RM_DSN_E_ID);
	r.id = (struct rm_smtp_span){ (const uint8_t *)longs, RM_DSN_ID_BYTES_MAX };
	EXPECT(RM_DSN_OK);
	r = base_report(rc, 2);
	r.from_display = SPAN("Mail\r\nBcc: x");
	EXPECT(RM_DSN_E_DISPLAY);
	r = base_report(rc, 2);
	r.sender = SPAN("<>");
	EXPECT(RM_DSN_E_SENDER);
	r.sender = NOSPAN;
	EXPECT(RM_DSN_E_SENDER);
	r = base_report(rc, 2);
	r.envid = (struct rm_smtp_span){ (const uint8_t *)longs, RM_SMTP_ENVID_BYTES_MAX + 1 };
	EXPECT(RM_DSN_E_ENVID);
	r = base_report(rc, 2);
	r.tz_offset_min = 1440;
	EXPECT(RM_DSN_E_TIME);
	r.tz_offset_min = 0;
	r.now_unix_s = 0;
	EXPECT(RM_DSN_E_TIME);
	r.now_unix_s = 253402300800LL;
	EXPECT(RM_DSN_E_TIME);
	r = base_report(rc, 0);
	EXPECT(RM_DSN_E_RCPT_COUNT);
	r = base_report(rc, 2);
	rc[1].status = "4.1.1";
	EXPECT(RM_DSN_E_STATUS);
	assert_int_equal(w.err_rcpt, 1);
	rc[1].status = "5.1";
	EXPECT(RM_DSN_E_STATUS);
	rc[1].status = NULL;
	EXPECT(RM_DSN_E_STATUS);
	rc[1] = failed_rcpt();
	rc[1].action = RM_DSN_ACTION_COUNT;
	EXPECT(RM_DSN_E_ACTION);
	rc[1] = failed_rcpt();
	rc[1].addr = NOSPAN;
	EXPECT(RM_DSN_E_RCPT_ADDR);
	rc[1] = failed_rcpt();
	rc[1].orcpt_type = SPAN("rfc822");
	rc[1].orcpt = (struct rm_smtp_span){ (const uint8_t *)longs, RM_SMTP_ORCPT_BYTES_MAX + 1 };
	EXPECT(RM_DSN_E_ORCPT);
	rc[1].orcpt = SPAN("a@b");
	rc[1].orcpt_type = SPAN("rfc 822");
	EXPECT(RM_DSN_E_ORCPT);
	rc[1] = failed_rcpt();
	rc[1].remote_mta = SPAN("mx\r\nX: y");
	EXPECT(RM_DSN_E_REMOTE_MTA);
	rc[1] = failed_rcpt();
	rc[1].last_attempt_unix_s = -5;
	EXPECT(RM_DSN_E_TIME);
	rc[1] = failed_rcpt();
	EXPECT(RM_DSN_OK);
#undef EXPECT
	for (int e = 0; e <= RM_DSN_E_COUNT; e++)
		assert_non_null(rm_dsn_err_text((enum rm_dsn_err)e));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_failed),
		cmocka_unit_test(test_mixed_actions),
		cmocka_unit_test(test_orcpt_envid),
		cmocka_unit_test(test_ret_full_hdrs),
		cmocka_unit_test(test_size_cap),
		cmocka_unit_test(test_hostile_reply),
		cmocka_unit_test(test_boundary_collision),
		cmocka_unit_test(test_smtputf8),
		cmocka_unit_test(test_original_normalised),
		cmocka_unit_test(test_chunks_and_caps),
		cmocka_unit_test(test_dates),
		cmocka_unit_test(test_should_send),
		cmocka_unit_test(test_report_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
