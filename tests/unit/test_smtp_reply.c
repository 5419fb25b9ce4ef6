/*
 * NAME
 *	test_smtp_reply - unit tests of proto/smtp_reply
 * DESCRIPTION
 *	Golden replies: one line and multi-line, with and without enhanced
 *	codes, empty texts, CR, LF and other forbidden bytes in the text
 *	(replaced, counted, never a line break), text at the line limit and
 *	one past it (continued on the next line), the EHLO answer with
 *	keywords; every code and enhanced-code form that must be refused;
 *	every buffer size below what a reply needs is refused without a write
 *	past it (exact heap buffers, so ASan sees any).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/smtp_reply.h"

static void assert_reply(ssize_t n, const uint8_t *buf, const char *want)
{
	size_t wlen = strlen(want);

	if (n < 0 || (size_t)n != wlen || memcmp(buf, want, wlen) != 0)
		fail_msg("reply (%zd) '%.*s', want '%s'", n, n > 0 ? (int)n : 0, (const char *)buf,
			 want);
}

/* rm_smtp_reply_line into buffers of every size: too small is -1, never an overrun. */
static void check_line_all_caps(unsigned code, const char *enh, const char *text, const char *want)
{
	size_t wlen = strlen(want);

	for (size_t cap = 0; cap <= wlen + 1; cap++) {
		uint8_t *buf = malloc(cap ? cap : 1);
		ssize_t n;

		assert_non_null(buf);
		n = rm_smtp_reply_line(buf, cap, code, enh, text);
		if (cap < wlen)
			assert_int_equal(n, -1);
		else
			assert_reply(n, buf, want);
		free(buf);
	}
}

static void test_one_line(void **state)
{
	check_line_all_caps(250, "2.0.0", "Ok", "250 2.0.0 Ok\r\n");
	check_line_all_caps(220, NULL, "mx.example.org ESMTP ringmail", "220 mx.example.org ESMTP ringmail\r\n");
	check_line_all_caps(354, NULL, "End data with <CR><LF>.<CR><LF>",
			    "354 End data with <CR><LF>.<CR><LF>\r\n");
	check_line_all_caps(550, "5.6.0", "Message refused", "550 5.6.0 Message refused\r\n");
	check_line_all_caps(421, "4.4.2", "Timeout", "421 4.4.2 Timeout\r\n");
	check_line_all_caps(250, NULL, "", "250\r\n");
	check_line_all_caps(250, "2.0.0", "", "250 2.0.0\r\n");
	check_line_all_caps(559, "5.999.999", "x", "559 5.999.999 x\r\n");
	check_line_all_caps(200, "2.0.0", "tab\there", "200 2.0.0 tab\there\r\n");
}

static void test_status(void **state)
{
	const struct rm_smtp_status st = { 555, "5.5.4", "Unsupported parameter" };
	uint8_t buf[128];

	assert_reply(rm_smtp_reply_status(buf, sizeof(buf), &st), buf,
		     "555 5.5.4 Unsupported parameter\r\n");
}

static void test_multi_line(void **state)
{
	struct rm_smtp_reply r;
	uint8_t buf[256];

	assert_true(rm_smtp_reply_begin(&r, buf, sizeof(buf), 250, NULL));
	rm_smtp_reply_add(&r, "a", 1);
	rm_smtp_reply_add(&r, "bb", 2);
	rm_smtp_reply_add(&r, "ccc", 3);
	assert_reply(rm_smtp_reply_end(&r), buf, "250-a\r\n250-bb\r\n250 ccc\r\n");
	assert_int_equal(r.lines, 3);

	assert_true(rm_smtp_reply_begin(&r, buf, sizeof(buf), 550, "5.1.1"));
	rm_smtp_reply_add(&r, "No such user", 12);
	rm_smtp_reply_add(&r, "here", 4);
	assert_reply(rm_smtp_reply_end(&r), buf, "550-5.1.1 No such user\r\n550 5.1.1 here\r\n");

	/* Empty lines in between and at the end. */
	assert_true(rm_smtp_reply_begin(&r, buf, sizeof(buf), 214, NULL));
	rm_smtp_reply_add(&r, "", 0);
	rm_smtp_reply_add(&r, "x", 1);
	rm_smtp_reply_add(&r, "", 0);
	assert_reply(rm_smtp_reply_end(&r), buf, "214-\r\n214-x\r\n214\r\n");
	assert_true(rm_smtp_reply_begin(&r, buf, sizeof(buf), 214, "2.0.0"));
	rm_smtp_reply_add(&r, "", 0);
	rm_smtp_reply_add(&r, "", 0);
	assert_reply(rm_smtp_reply_end(&r), buf, "214-2.0.0\r\n214 2.0.0\r\n");

	/* No line at all is not a reply. */
	assert_true(rm_smtp_reply_begin(&r, buf, sizeof(buf), 250, NULL));
	assert_int_equal(rm_smtp_reply_end(&r), -1);

	/* Text of a known length may hold a NUL: replaced like any control. */
	assert_true(rm_smtp_reply_begin(&r, buf, sizeof(buf), 250, NULL));
	rm_smtp_reply_add(&r, "a\0b", 3);
	assert_reply(rm_smtp_reply_end(&r), buf, "250 a?b\r\n");
	assert_int_equal(r.replaced, 1);
}

/* CR, LF and every other byte outside textstring: replaced, never a new line. */
static void test_injection(void **state)
{
	struct rm_smtp_reply r;
	uint8_t buf[256];
	static const char evil[] = "ok\r\n250 fake\rx\ny\x01\x7f\x80\xff.";

	assert_true(rm_smtp_reply_begin(&r, buf, sizeof(buf), 550, "5.7.1"));
	rm_smtp_reply_add(&r, evil, sizeof(evil) - 1);
	assert_reply(rm_smtp_reply_end(&r), buf, "550 5.7.1 ok??250 fake?x?y????.\r\n");
	assert_int_equal(r.replaced, 8);
	for (unsigned c = 0; c < 256; c++) {
		char t[2] = { (char)c, 0 };
		uint8_t one[32];
		ssize_t n;

		rm_smtp_reply_begin(&r, one, sizeof(one), 250, NULL);
		rm_smtp_reply_add(&r, t, 1);
		n = rm_smtp_reply_end(&r);
		assert_int_equal(n, 7);
		assert_int_equal(one[4], c == '\t' || (c >= 32 && c <= 126) ? c : '?');
	}
}

/* Text at the line limit fits one line; one byte more continues on the next. */
static void test_line_limit(void **state)
{
	static char text[2000];
	static uint8_t buf[4096];
	struct rm_smtp_reply r;
	ssize_t n;

	memset(text, 'x', sizeof(text));
	/* 512 - "550-5.1.1 " - CRLF = 500 bytes of text per line. */
	rm_smtp_reply_begin(&r, buf, sizeof(buf), 550, "5.1.1");
	rm_smtp_reply_add(&r, text, 500);
	n = rm_smtp_reply_end(&r);
	assert_int_equal(n, 512);
	assert_int_equal(r.lines, 1);
	rm_smtp_reply_begin(&r, buf, sizeof(buf), 550, "5.1.1");
	rm_smtp_reply_add(&r, text, 501);
	n = rm_smtp_reply_end(&r);
	assert_int_equal(r.lines, 2);
	assert_int_equal(n, 512 + 10 + 1 + 2);
	assert_memory_equal(buf, "550-5.1.1 x", 11);
	assert_memory_equal(buf + 512, "550 5.1.1 x\r\n", 13);
	/* Without an enhanced code: 512 - "250-" - CRLF = 506. */
	rm_smtp_reply_begin(&r, buf, sizeof(buf), 250, NULL);
	rm_smtp_reply_add(&r, text, 506 * 3);
	n = rm_smtp_reply_end(&r);
	assert_int_equal(r.lines, 3);
	assert_int_equal(n, 512 * 3);
	for (int i = 0; i < 3; i++)
		assert_memory_equal(buf + 512 * i, i < 2 ? "250-" : "250 ", 4);
	/* The limit is a parameter. */
	rm_smtp_reply_begin(&r, buf, sizeof(buf), 250, NULL);
	r.line_bytes_max = RM_SMTP_REPLY_LINE_BYTES_MIN;
	rm_smtp_reply_add(&r, "abcdefghijklmnopqrstuvwxyz", 26);
	assert_reply(rm_smtp_reply_end(&r), buf, "250-abcdefghijklmn\r\n250 opqrstuvwxyz\r\n");
	rm_smtp_reply_begin(&r, buf, sizeof(buf), 250, NULL);
	r.line_bytes_max = RM_SMTP_REPLY_LINE_BYTES_MIN - 1;
	rm_smtp_reply_add(&r, "a", 1);
	assert_int_equal(rm_smtp_reply_end(&r), -1);
}

static void test_bad_codes(void **state)
{
	static const unsigned bad_codes[] = { 0, 99, 199, 160, 260, 599, 600, 999, 1250 };
	static const struct {
		unsigned code;
		const char *enh;
	} bad_enh[] = {
		{ 250, "5.1.1" }, { 550, "2.0.0" }, { 450, "5.0.0" }, { 354, "3.0.0" },
		{ 354, "2.0.0" }, { 250, "2.0" }, { 250, "2.0.0.0" }, { 250, "2.1000.0" },
		{ 250, "2.0.1000" }, { 250, "2..0" }, { 250, "2.0." }, { 250, "2.0.0 " },
		{ 250, "" }, { 250, "x.0.0" }, { 250, "2" }, { 250, "2.a.0" }, { 250, " 2.0.0" },
		{ 250, "20.0.0" }, { 250, "2.0.0x" },
	};
	static const struct {
		unsigned code;
		const char *enh;
	} good[] = {
		{ 250, "2.0.0" }, { 250, "2.100.999" }, { 250, "2.0.000" }, { 452, "4.3.1" },
		{ 500, "5.5.1" }, { 354, NULL }, { 334, NULL }, { 250, NULL }, { 555, "5.5.4" },
		{ 200, NULL }, { 559, NULL },
	};
	uint8_t buf[64];
	struct rm_smtp_reply r;

	for (size_t i = 0; i < sizeof(bad_codes) / sizeof(bad_codes[0]); i++) {
		assert_false(rm_smtp_reply_code_valid(bad_codes[i]));
		assert_false(rm_smtp_reply_begin(&r, buf, sizeof(buf), bad_codes[i], NULL));
		assert_int_equal(rm_smtp_reply_line(buf, sizeof(buf), bad_codes[i], NULL, "x"), -1);
	}
	for (size_t i = 0; i < sizeof(bad_enh) / sizeof(bad_enh[0]); i++) {
		if (rm_smtp_enhanced_valid(bad_enh[i].enh, bad_enh[i].code))
			fail_msg("%u %s accepted", bad_enh[i].code, bad_enh[i].enh);
		assert_int_equal(rm_smtp_reply_line(buf, sizeof(buf), bad_enh[i].code, bad_enh[i].enh,
						    "x"), -1);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (!rm_smtp_enhanced_valid(good[i].enh, good[i].code))
			fail_msg("%u %s refused", good[i].code, good[i].enh ? good[i].enh : "-");
		assert_true(rm_smtp_reply_line(buf, sizeof(buf), good[i].code, good[i].enh, "x") > 0);
	}
}

static void test_ehlo(void **state)
{
	static const char *const kw[] = {
		"PIPELINING", "SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
		"CHUNKING", "DSN", "STARTTLS", "AUTH PLAIN LOGIN",
	};
	static const char want[] =
		"250-mx.example.org Hello client.example\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n"
		"250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n"
		"250-DSN\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n";
	uint8_t buf[512];

	assert_reply(rm_smtp_reply_ehlo(buf, sizeof(buf), "mx.example.org", "Hello client.example",
					kw, 9), buf, want);
	for (size_t cap = 0; cap < sizeof(want) - 1; cap++) {
		uint8_t *small = malloc(cap ? cap : 1);

		assert_non_null(small);
		assert_int_equal(rm_smtp_reply_ehlo(small, cap, "mx.example.org",
						    "Hello client.example", kw, 9), -1);
		free(small);
	}
	assert_reply(rm_smtp_reply_ehlo(buf, sizeof(buf), "mx", NULL, NULL, 0), buf, "250 mx\r\n");
	assert_reply(rm_smtp_reply_ehlo(buf, sizeof(buf), "mx", "", kw, 1), buf,
		     "250-mx\r\n250 PIPELINING\r\n");
	assert_reply(rm_smtp_reply_ehlo(buf, sizeof(buf), "[192.0.2.1]", "hi\r\n250 X", kw, 0), buf,
		     "250 [192.0.2.1] hi??250 X\r\n");

	/* Bad domains and keyword lines are refused, not repaired. */
	static const char *const bad_domains[] = { "", "a b", "a\r\n", "a\tb", "\xc3\xa9" };
	static const char *const bad_kw[] = {
		"", "-X", "A  B", "A ", " A", "A\r\nB", "A\tB", "A_B", "SIZE 1\r\n250 X", "A B\x7f",
		"\xc3\xa9",
	};

	for (size_t i = 0; i < sizeof(bad_domains) / sizeof(bad_domains[0]); i++)
		assert_int_equal(rm_smtp_reply_ehlo(buf, sizeof(buf), bad_domains[i], "x", kw, 1), -1);
	for (size_t i = 0; i < sizeof(bad_kw) / sizeof(bad_kw[0]); i++) {
		const char *one[2] = { "PIPELINING", bad_kw[i] };

		if (rm_smtp_reply_ehlo(buf, sizeof(buf), "mx", NULL, one, 2) != -1)
			fail_msg("keyword '%s' accepted", bad_kw[i]);
	}
	/* A first line or keyword longer than a reply line is refused. */
	static char longer[600];

	memset(longer, 'a', sizeof(longer) - 1);
	assert_int_equal(rm_smtp_reply_ehlo(buf, sizeof(buf), "mx", longer, NULL, 0), -1);
	longer[506] = '\0';
	{
		uint8_t big[2048];
		const char *one[1] = { longer };

		assert_int_equal(rm_smtp_reply_ehlo(big, sizeof(big), "mx", NULL, one, 1), 8 + 512);
		longer[506] = 'a';
		longer[507] = '\0';
		assert_int_equal(rm_smtp_reply_ehlo(big, sizeof(big), "mx", NULL, one, 1), -1);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_line),
		cmocka_unit_test(test_status),
		cmocka_unit_test(test_multi_line),
		cmocka_unit_test(test_injection),
		cmocka_unit_test(test_line_limit),
		cmocka_unit_test(test_bad_codes),
		cmocka_unit_test(test_ehlo),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
