/*
 * NAME
 *	test_smtp_cmd - unit tests of proto/smtp_cmd
 * DESCRIPTION
 *	A table of command lines, each with the error (or none) and the verb
 *	it must give: every verb in its good forms, and for every error code at
 *	least one line (most several) that must produce exactly it.  Each line
 *	is parsed from a heap copy of exact size (ASan sees any read past it),
 *	and every string of a good result must point into the line.  Then the
 *	values: every MAIL and RCPT parameter, SIZE and BDAT at 2^64-1 and
 *	past it, xtext decoding, UTF-8 paths with and without SMTPUTF8, the
 *	extension mask, verbs in every mix of case, and the reply table (every
 *	error its own reply, every reply valid for proto/smtp_reply).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/smtp_cmd.h"

/* Option variants a case runs under. */
enum opt_variant {
	O_ALL = 0,		/* every extension, no SMTPUTF8 transaction */
	O_NONE,			/* no extension */
	O_UTF8_TXN,		/* RCPT in a transaction whose MAIL had SMTPUTF8 */
	O_NO_BINARY,		/* every extension but BINARYMIME */
	O_BINARY_ONLY,		/* BINARYMIME but not 8BITMIME */
	O_TDOT,			/* trailing dots accepted in domains */
};

struct cmd_case {
	const char *line;
	size_t len;
	enum opt_variant opt;
	enum rm_smtp_cmd_err err;
	enum rm_smtp_verb verb;
};

#define L(s) (s), sizeof(s) - 1
#define GOOD(s, v) { L(s), O_ALL, RM_SMTP_OK, RM_SMTP_VERB_##v }
#define GOODO(s, o, v) { L(s), (o), RM_SMTP_OK, RM_SMTP_VERB_##v }
#define ERR(s, e, v) { L(s), O_ALL, RM_SMTP_E_##e, RM_SMTP_VERB_##v }
#define ERRO(s, o, e, v) { L(s), (o), RM_SMTP_E_##e, RM_SMTP_VERB_##v }

#define L65 "lllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll"
#define D63 "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
#define X101 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define X100 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

static const struct cmd_case cases[] = {
	/* HELO / EHLO */
	GOOD("EHLO mail.example.org", EHLO),
	GOOD("ehlo [192.0.2.1]", EHLO),
	GOOD("EhLo [IPv6:2001:db8::1]", EHLO),
	GOOD("HELO x", HELO),
	GOOD("HELO [127.0.0.1]", HELO),
	GOODO("EHLO client.example.", O_TDOT, EHLO),
	ERR("EHLO", HELO_SYNTAX, EHLO),
	ERR("HELO ", HELO_SYNTAX, HELO),
	ERR("EHLO a b", HELO_DOMAIN, EHLO),
	ERR("EHLO my_host", HELO_DOMAIN, EHLO),
	ERR("EHLO  x", HELO_DOMAIN, EHLO),
	ERR("EHLO x.", HELO_DOMAIN, EHLO),
	ERR("EHLO [1.2.3]", HELO_DOMAIN, EHLO),
	ERR("EHLO -x.example", HELO_DOMAIN, EHLO),
	ERR("EHLO ex\xc3\xa4mple.org", BAD_CHAR, EHLO),
	/* MAIL */
	GOOD("MAIL FROM:<alice@example.org>", MAIL),
	GOOD("MAIL FROM: <alice@example.org>", MAIL),
	GOOD("mail from:<>", MAIL),
	GOOD("MAIL FROM:<> SIZE=0", MAIL),
	GOOD("MAIL FROM:<@a,@b:u@d>", MAIL),
	GOOD("MAIL FROM:<\"a b\"@example.org> BODY=7BIT", MAIL),
	GOOD("MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159 AUTH=<>", MAIL),
	GOOD("MAIL FROM:<a@b> body=binarymime", MAIL),
	GOOD("MAIL FROM:<a@b> AUTH=e+3Dmc2@example.com", MAIL),
	GOOD("MAIL FROM:<j\xc3\xb6rg@m\xc3\xbcller.example> SMTPUTF8", MAIL),
	ERR("MAIL", MAIL_SYNTAX, MAIL),
	ERR("MAIL ", MAIL_SYNTAX, MAIL),
	ERR("MAIL TO:<a@b>", MAIL_SYNTAX, MAIL),
	ERR("MAIL FROM<a@b>", MAIL_SYNTAX, MAIL),
	ERR("MAIL FROM :<a@b>", MAIL_SYNTAX, MAIL),
	ERR("MAIL  FROM:<a@b>", MAIL_SYNTAX, MAIL),
	ERR("MAIL FROM:", MAIL_SYNTAX, MAIL),
	ERR("MAIL FROM:a@b", MAIL_SYNTAX, MAIL),
	ERR("MAIL FROM:  <a@b>", MAIL_SYNTAX, MAIL),
	ERR("MAIL FROM: a@b", MAIL_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@>", SENDER_SYNTAX, MAIL),
	ERR("MAIL FROM:<a b@c>", SENDER_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b", SENDER_SYNTAX, MAIL),
	ERR("MAIL FROM:<a..b@c>", SENDER_SYNTAX, MAIL),
	ERR("MAIL FROM:<Postmaster>", SENDER_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@[1.2.3.4.5]>", SENDER_SYNTAX, MAIL),
	ERR("MAIL FROM:<" L65 "@example.org>", SENDER_TOO_LONG, MAIL),
	ERR("MAIL FROM:<j\xc3\xb6rg@x>", SENDER_UTF8, MAIL),
	ERR("MAIL FROM:<j\xc3\xb6rg@x> SIZE=10", SENDER_UTF8, MAIL),
	ERRO("MAIL FROM:<j\xc3\xb6rg@x> SMTPUTF8", O_NONE, SENDER_UTF8, MAIL),
	ERR("MAIL FROM:<a\xc0\xaf@x> SMTPUTF8", SENDER_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b>x", AFTER_PATH, MAIL),
	ERR("MAIL FROM:<a@b><c@d>", AFTER_PATH, MAIL),
	ERR("MAIL FROM:<>>", AFTER_PATH, MAIL),
	/* RCPT */
	GOOD("RCPT TO:<bob@example.net>", RCPT),
	GOOD("rcpt to: <bob@example.net>", RCPT),
	GOOD("RCPT TO:<Postmaster>", RCPT),
	GOOD("RCPT TO:<postmaster@example.net>", RCPT),
	GOOD("RCPT TO:<bob@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.net", RCPT),
	GOOD("RCPT TO:<bob@example.net> notify=never", RCPT),
	GOOD("RCPT TO:<bob@[IPv6:::ffff:192.0.2.1]>", RCPT),
	GOODO("RCPT TO:<j\xc3\xb6rg@x>", O_UTF8_TXN, RCPT),
	GOODO("RCPT TO:<bob@example.net.>", O_TDOT, RCPT),
	ERR("RCPT", RCPT_SYNTAX, RCPT),
	ERR("RCPT FROM:<a@b>", RCPT_SYNTAX, RCPT),
	ERR("RCPT TO:a@b", RCPT_SYNTAX, RCPT),
	ERR("RCPT TO:", RCPT_SYNTAX, RCPT),
	ERR("RCPT TO :<a@b>", RCPT_SYNTAX, RCPT),
	ERR("RCPT TO:<a@b..c>", RCPT_ADDR_SYNTAX, RCPT),
	ERR("RCPT TO:<postmistress>", RCPT_ADDR_SYNTAX, RCPT),
	ERR("RCPT TO:<bob@example.net.>", RCPT_ADDR_SYNTAX, RCPT),
	ERR("RCPT TO:<a@" D63 "." D63 "." D63 "." D63 ">", RCPT_TOO_LONG, RCPT),
	ERR("RCPT TO:<" L65 "@x>", RCPT_TOO_LONG, RCPT),
	ERR("RCPT TO:<>", RCPT_NULL, RCPT),
	ERR("RCPT TO:<j\xc3\xb6rg@x>", RCPT_UTF8, RCPT),
	ERR("RCPT TO:<a@b> SMTPUTF8", PARAM_UNKNOWN, RCPT),
	ERR("RCPT TO:<a@b>>", AFTER_PATH, RCPT),
	/* Parameters: syntax, unknown, duplicate, value presence */
	ERR("MAIL FROM:<a@b> ", PARAM_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b>  SIZE=1", PARAM_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b> SIZE=", PARAM_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b> =1", PARAM_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b> -X=1", PARAM_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b> SIZE=1=2", PARAM_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b> SI_ZE=1", PARAM_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b> SIZE=1 ", PARAM_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b> SIZE=\xc3\xa9", PARAM_SYNTAX, MAIL),
	ERR("MAIL FROM:<a@b> FOO=1", PARAM_UNKNOWN, MAIL),
	ERR("MAIL FROM:<a@b> X-FOO", PARAM_UNKNOWN, MAIL),
	ERR("MAIL FROM:<a@b> NOTIFY=NEVER", PARAM_UNKNOWN, MAIL),
	ERR("RCPT TO:<a@b> SIZE=1", PARAM_UNKNOWN, RCPT),
	ERR("RCPT TO:<a@b> RET=FULL", PARAM_UNKNOWN, RCPT),
	ERRO("MAIL FROM:<a@b> SIZE=1", O_NONE, PARAM_UNKNOWN, MAIL),
	ERRO("MAIL FROM:<a@b> BODY=8BITMIME", O_NONE, PARAM_UNKNOWN, MAIL),
	ERRO("MAIL FROM:<a@b> SMTPUTF8", O_NONE, PARAM_UNKNOWN, MAIL),
	ERRO("MAIL FROM:<a@b> ENVID=x", O_NONE, PARAM_UNKNOWN, MAIL),
	ERRO("MAIL FROM:<a@b> AUTH=<>", O_NONE, PARAM_UNKNOWN, MAIL),
	ERRO("RCPT TO:<a@b> ORCPT=rfc822;a@b", O_NONE, PARAM_UNKNOWN, RCPT),
	ERR("MAIL FROM:<a@b> SIZE=1 SIZE=2", PARAM_DUP, MAIL),
	ERR("MAIL FROM:<a@b> size=1 SIZE=1", PARAM_DUP, MAIL),
	ERR("MAIL FROM:<a@b> SMTPUTF8 SMTPUTF8", PARAM_DUP, MAIL),
	ERR("MAIL FROM:<a@b> BODY=7BIT BODY=7BIT", PARAM_DUP, MAIL),
	ERR("RCPT TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER", PARAM_DUP, RCPT),
	ERR("RCPT TO:<a@b> ORCPT=rfc822;x ORCPT=rfc822;x", PARAM_DUP, RCPT),
	ERR("MAIL FROM:<a@b> SIZE", PARAM_NO_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> BODY", PARAM_NO_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> RET", PARAM_NO_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> ENVID", PARAM_NO_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> AUTH", PARAM_NO_VALUE, MAIL),
	ERR("RCPT TO:<a@b> NOTIFY", PARAM_NO_VALUE, RCPT),
	ERR("RCPT TO:<a@b> ORCPT", PARAM_NO_VALUE, RCPT),
	ERR("MAIL FROM:<a@b> SMTPUTF8=YES", PARAM_HAS_VALUE, MAIL),
	/* Parameter values */
	ERR("MAIL FROM:<a@b> SIZE=abc", SIZE_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> SIZE=-1", SIZE_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> SIZE=1k", SIZE_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> SIZE=123456789012345678901", SIZE_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> BODY=9BIT", BODY_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> BODY=8BIT", BODY_VALUE, MAIL),
	ERRO("MAIL FROM:<a@b> BODY=BINARYMIME", O_NO_BINARY, BODY_VALUE, MAIL),
	ERRO("MAIL FROM:<a@b> BODY=8BITMIME", O_BINARY_ONLY, BODY_VALUE, MAIL),
	GOODO("MAIL FROM:<a@b> BODY=BINARYMIME", O_BINARY_ONLY, MAIL),
	ERR("MAIL FROM:<a@b> RET=ALL", RET_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> RET=FULLHDRS", RET_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> ENVID=a+2", ENVID_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> ENVID=a+2g", ENVID_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> ENVID=a+2f", ENVID_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> ENVID=+00", ENVID_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> ENVID=a+7F", ENVID_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> ENVID=" X101, ENVID_VALUE, MAIL),
	GOOD("MAIL FROM:<a@b> ENVID=" X100, MAIL),
	ERR("MAIL FROM:<a@b> AUTH=a+zz", AUTH_PARAM_VALUE, MAIL),
	ERR("MAIL FROM:<a@b> AUTH=+0A", AUTH_PARAM_VALUE, MAIL),
	ERR("RCPT TO:<a@b> NOTIFY=NEVER,SUCCESS", NOTIFY_VALUE, RCPT),
	ERR("RCPT TO:<a@b> NOTIFY=DELAY,NEVER", NOTIFY_VALUE, RCPT),
	ERR("RCPT TO:<a@b> NOTIFY=SUCCESS,SUCCESS", NOTIFY_VALUE, RCPT),
	ERR("RCPT TO:<a@b> NOTIFY=SUCCESS,", NOTIFY_VALUE, RCPT),
	ERR("RCPT TO:<a@b> NOTIFY=,SUCCESS", NOTIFY_VALUE, RCPT),
	ERR("RCPT TO:<a@b> NOTIFY=SUCCESS,,DELAY", NOTIFY_VALUE, RCPT),
	ERR("RCPT TO:<a@b> NOTIFY=ALWAYS", NOTIFY_VALUE, RCPT),
	ERR("RCPT TO:<a@b> ORCPT=rfc822", ORCPT_VALUE, RCPT),
	ERR("RCPT TO:<a@b> ORCPT=;a@b", ORCPT_VALUE, RCPT),
	ERR("RCPT TO:<a@b> ORCPT=rfc822;", ORCPT_VALUE, RCPT),
	ERR("RCPT TO:<a@b> ORCPT=rfc822;a+2", ORCPT_VALUE, RCPT),
	ERR("RCPT TO:<a@b> ORCPT=rf(c;a@b", ORCPT_VALUE, RCPT),
	ERR("RCPT TO:<a@b> ORCPT=rfc822;a+00b", ORCPT_VALUE, RCPT),
	/* No-argument verbs */
	GOOD("DATA", DATA), GOOD("data", DATA), GOOD("RSET", RSET), GOOD("QUIT", QUIT),
	GOOD("STARTTLS", STARTTLS), GOOD("starttls", STARTTLS),
	ERR("DATA x", NO_ARGS, DATA),
	ERR("DATA ", NO_ARGS, DATA),
	ERR("RSET now", NO_ARGS, RSET),
	ERR("QUIT ", NO_ARGS, QUIT),
	ERR("STARTTLS x", NO_ARGS, STARTTLS),
	/* Free-text verbs */
	GOOD("NOOP", NOOP), GOOD("NOOP anything here", NOOP), GOOD("HELP", HELP),
	GOOD("HELP MAIL", HELP), GOOD("VRFY postmaster", VRFY), GOOD("VRFY John Smith", VRFY),
	GOOD("VRFY <a@b>", VRFY), GOOD("EXPN staff", EXPN),
	ERR("VRFY", ARG_MISSING, VRFY),
	ERR("EXPN", ARG_MISSING, EXPN),
	ERR("NOOP ", ARG_SYNTAX, NOOP),
	ERR("HELP  x", ARG_SYNTAX, HELP),
	ERR("VRFY x ", ARG_SYNTAX, VRFY),
	ERR("EXPN  ", ARG_SYNTAX, EXPN),
	/* BDAT */
	GOOD("BDAT 0 LAST", BDAT), GOOD("BDAT 1000", BDAT), GOOD("bdat 86 last", BDAT),
	GOOD("BDAT 18446744073709551615", BDAT), GOOD("BDAT 00000000000000000007 LAST", BDAT),
	ERR("BDAT", BDAT_SYNTAX, BDAT),
	ERR("BDAT ", BDAT_SYNTAX, BDAT),
	ERR("BDAT x", BDAT_SYNTAX, BDAT),
	ERR("BDAT -1", BDAT_SYNTAX, BDAT),
	ERR("BDAT 1 2", BDAT_SYNTAX, BDAT),
	ERR("BDAT 1 LASTX", BDAT_SYNTAX, BDAT),
	ERR("BDAT 1  LAST", BDAT_SYNTAX, BDAT),
	ERR("BDAT 1 LAST ", BDAT_SYNTAX, BDAT),
	ERR("BDAT  1", BDAT_SYNTAX, BDAT),
	ERR("BDAT 18446744073709551616", BDAT_SYNTAX, BDAT),
	ERR("BDAT 123456789012345678901", BDAT_SYNTAX, BDAT),
	/* AUTH */
	GOOD("AUTH PLAIN", AUTH), GOOD("AUTH PLAIN AGFsaWNlAHNlY3JldA==", AUTH),
	GOOD("AUTH LOGIN =", AUTH), GOOD("auth scram-sha-256", AUTH), GOOD("AUTH X_Y", AUTH),
	GOOD("AUTH PLAIN YWJj", AUTH), GOOD("AUTH PLAIN YWI=", AUTH),
	GOOD("AUTH ABCDEFGHIJKLMNOPQRST", AUTH),
	ERR("AUTH", AUTH_SYNTAX, AUTH),
	ERR("AUTH ", AUTH_SYNTAX, AUTH),
	ERR("AUTH PL@IN", AUTH_SYNTAX, AUTH),
	ERR("AUTH ABCDEFGHIJKLMNOPQRSTU", AUTH_SYNTAX, AUTH),
	ERR("AUTH PLAIN  YWJj", AUTH_SYNTAX, AUTH),
	ERR("AUTH PLAIN YWJj YWJj", AUTH_SYNTAX, AUTH),
	ERR("AUTH PLAIN ", AUTH_SYNTAX, AUTH),
	ERR("AUTH PLAIN abc", AUTH_RESPONSE, AUTH),
	ERR("AUTH PLAIN ab=c", AUTH_RESPONSE, AUTH),
	ERR("AUTH PLAIN a===", AUTH_RESPONSE, AUTH),
	ERR("AUTH PLAIN ====", AUTH_RESPONSE, AUTH),
	ERR("AUTH PLAIN ab!c", AUTH_RESPONSE, AUTH),
	ERR("AUTH PLAIN ==", AUTH_RESPONSE, AUTH),
	/* Empty, unknown, bad bytes */
	ERR("", EMPTY, UNKNOWN),
	ERR("FOO", UNKNOWN_VERB, UNKNOWN),
	ERR("MAI", UNKNOWN_VERB, UNKNOWN),
	ERR("MAILX FROM:<a@b>", UNKNOWN_VERB, UNKNOWN),
	ERR("MAIL\tFROM:<a@b>", UNKNOWN_VERB, UNKNOWN),
	ERR(" MAIL FROM:<a@b>", UNKNOWN_VERB, UNKNOWN),
	ERR("STARTTLSX", UNKNOWN_VERB, UNKNOWN),
	ERR("XCLIENT ADDR=192.0.2.1", UNKNOWN_VERB, UNKNOWN),
	ERR("DATA\r", UNKNOWN_VERB, UNKNOWN),
	ERR("D\x00TA", UNKNOWN_VERB, UNKNOWN),
	ERR("\xc4\xc1\xd4\xc1", UNKNOWN_VERB, UNKNOWN),
	ERR("GET / HTTP/1.1", UNKNOWN_VERB, UNKNOWN),
	ERR("NOOP a\x01" "b", BAD_CHAR, NOOP),
	ERR("MAIL FROM:<a@b>\x00", BAD_CHAR, MAIL),
	ERR("RCPT TO:<a@b>\t", BAD_CHAR, RCPT),
	ERR("VRFY \xc3\xa9", BAD_CHAR, VRFY),
	ERR("EHLO a\x7f", BAD_CHAR, EHLO),
	ERR("DATA \r", BAD_CHAR, DATA),
	ERR("AUTH PLAIN YWJj\r", BAD_CHAR, AUTH),
};

static void opts_for(enum opt_variant v, struct rm_smtp_cmd_opts *o)
{
	rm_smtp_cmd_opts_default(o);
	switch (v) {
	case O_ALL:
		break;
	case O_NONE:
		o->ext = 0;
		break;
	case O_UTF8_TXN:
		o->smtputf8 = true;
		break;
	case O_NO_BINARY:
		o->ext &= ~RM_SMTP_EXT_BINARYMIME;
		break;
	case O_BINARY_ONLY:
		o->ext &= ~RM_SMTP_EXT_8BITMIME;
		break;
	case O_TDOT:
		o->addr_flags = RM_SMTP_ADDR_TRAILING_DOT;
		break;
	}
}

static bool span_inside(struct rm_smtp_span s, const uint8_t *line, size_t len)
{
	return s.ptr == NULL ? s.len == 0 : s.ptr >= line && s.ptr + s.len <= line + len;
}

static uint8_t *last_line;

/* Parses a heap copy of exact size; checks what holds for every result. */
static enum rm_smtp_cmd_err parse(const char *text, size_t len, const struct rm_smtp_cmd_opts *o,
				  struct rm_smtp_cmd *c, uint8_t **keep)
{
	uint8_t *line = malloc(len ? len : 1);
	enum rm_smtp_cmd_err err;

	assert_non_null(line);
	memcpy(line, text, len);
	err = rm_smtp_cmd_parse(line, len, o, c);
	assert_int_equal(err, c->err);
	if (err == RM_SMTP_OK) {
		assert_true(span_inside(c->verb_text, line, len));
		assert_true(span_inside(c->arg, line, len));
		assert_true(span_inside(c->envid, line, len));
		assert_true(span_inside(c->auth_param, line, len));
		assert_true(span_inside(c->orcpt_type, line, len));
		assert_true(span_inside(c->orcpt, line, len));
		assert_true(span_inside(c->auth_mech, line, len));
		assert_true(span_inside(c->auth_initial, line, len));
		if (c->path.len > 0)
			assert_true(c->path.text >= line && c->path.text + c->path.len <= line + len);
		if (c->helo.len > 0)
			assert_true(c->helo.text >= line && c->helo.text + c->helo.len <= line + len);
		assert_int_equal(c->addr_err, RM_SMTP_ADDR_OK);
	}
	/* The result points into the line: it lives until the next parse. */
	free(last_line);
	last_line = NULL;
	if (keep != NULL)
		*keep = line;
	else
		last_line = line;
	return err;
}

static void test_table(void **state)
{
	bool seen[RM_SMTP_E_COUNT] = { false };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct cmd_case *k = &cases[i];
		struct rm_smtp_cmd_opts o;
		struct rm_smtp_cmd c;
		enum rm_smtp_cmd_err err;

		opts_for(k->opt, &o);
		err = parse(k->line, k->len, &o, &c, NULL);
		if (err != k->err || c.verb != k->verb)
			fail_msg("'%.*s': error %d (%s), verb %s; want %d (%s), %s", (int)k->len, k->line,
				 err, rm_smtp_cmd_status(err)->text, rm_smtp_verb_name(c.verb), k->err,
				 rm_smtp_cmd_status(k->err)->text, rm_smtp_verb_name(k->verb));
		seen[err] = true;
	}
	/* Every error the parser can give is exercised (the line splitter's is not the parser's). */
	for (int e = 0; e < RM_SMTP_E_COUNT; e++)
		if (!seen[e] && e != RM_SMTP_E_LINE_TOO_LONG)
			fail_msg("no case gives error %d (%s)", e, rm_smtp_cmd_status((enum rm_smtp_cmd_err)e)->text);
}

static void assert_span(struct rm_smtp_span s, const char *want)
{
	size_t n = strlen(want);

	if (s.len != n || (n > 0 && memcmp(s.ptr, want, n) != 0))
		fail_msg("span '%.*s', want '%s'", (int)s.len, s.ptr ? (const char *)s.ptr : "", want);
}

static void test_mail_values(void **state)
{
	static const char line[] =
		"MAIL FROM:<alice@example.org> SIZE=48213 BODY=8BITMIME SMTPUTF8 RET=HDRS "
		"ENVID=QQ+2B314159 AUTH=<>";
	struct rm_smtp_cmd_opts o;
	struct rm_smtp_cmd c;
	uint8_t *keep, dec[64];

	rm_smtp_cmd_opts_default(&o);
	assert_int_equal(parse(line, sizeof(line) - 1, &o, &c, &keep), RM_SMTP_OK);
	assert_int_equal(c.verb, RM_SMTP_VERB_MAIL);
	assert_false(c.path.null);
	assert_int_equal(c.path.mailbox_len, 17);
	assert_memory_equal(c.path.mailbox, "alice@example.org", 17);
	assert_true(c.size_given);
	assert_int_equal(c.size_bytes, 48213);
	assert_int_equal(c.body, RM_SMTP_BODY_8BITMIME);
	assert_true(c.smtputf8);
	assert_int_equal(c.ret, RM_SMTP_RET_HDRS);
	assert_span(c.envid, "QQ+2B314159");
	assert_int_equal(c.envid_decoded_len, 9);
	assert_int_equal(rm_smtp_xtext_decode(c.envid.ptr, c.envid.len, dec, sizeof(dec)), 9);
	assert_memory_equal(dec, "QQ+314159", 9);
	assert_span(c.auth_param, "<>");
	assert_int_equal(c.notify, 0);
	free(keep);

	/* Nothing given: nothing set. */
	assert_int_equal(parse(L("MAIL FROM:<>"), &o, &c, &keep), RM_SMTP_OK);
	assert_true(c.path.null);
	assert_false(c.size_given || c.smtputf8);
	assert_int_equal(c.body, RM_SMTP_BODY_NONE);
	assert_int_equal(c.ret, RM_SMTP_RET_NONE);
	assert_null(c.envid.ptr);
	assert_null(c.auth_param.ptr);
	free(keep);

	/* SIZE at 2^64-1, past it (read as UINT64_MAX: any limit refuses it), zero, zeros. */
	assert_int_equal(parse(L("MAIL FROM:<a@b> SIZE=18446744073709551615"), &o, &c, NULL), RM_SMTP_OK);
	assert_true(c.size_bytes == UINT64_MAX);
	assert_int_equal(parse(L("MAIL FROM:<a@b> SIZE=18446744073709551616"), &o, &c, NULL), RM_SMTP_OK);
	assert_true(c.size_bytes == UINT64_MAX);
	assert_int_equal(parse(L("MAIL FROM:<a@b> SIZE=99999999999999999999"), &o, &c, NULL), RM_SMTP_OK);
	assert_true(c.size_bytes == UINT64_MAX);
	assert_int_equal(parse(L("MAIL FROM:<a@b> SIZE=0"), &o, &c, NULL), RM_SMTP_OK);
	assert_true(c.size_given);
	assert_int_equal(c.size_bytes, 0);
	assert_int_equal(parse(L("MAIL FROM:<a@b> SIZE=00000000000000000042"), &o, &c, NULL), RM_SMTP_OK);
	assert_int_equal(c.size_bytes, 42);
	/* Values in any case. */
	assert_int_equal(parse(L("MAIL FROM:<a@b> Body=7bit ret=full"), &o, &c, NULL), RM_SMTP_OK);
	assert_int_equal(c.body, RM_SMTP_BODY_7BIT);
	assert_int_equal(c.ret, RM_SMTP_RET_FULL);
	assert_int_equal(parse(L("MAIL FROM:<a@b> BODY=BinaryMime"), &o, &c, NULL), RM_SMTP_OK);
	assert_int_equal(c.body, RM_SMTP_BODY_BINARYMIME);
	/* The space after FROM: is skipped; the path starts at '<'. */
	assert_int_equal(parse(L("MAIL FROM: <a@b>"), &o, &c, &keep), RM_SMTP_OK);
	assert_ptr_equal(c.path.text, keep + 11);
	assert_int_equal(c.path.len, 5);
	free(keep);
	/* ENVID at its limit, as a parameter. */
	o.envid_bytes_max = 3;
	assert_int_equal(parse(L("MAIL FROM:<a@b> ENVID=abc"), &o, &c, NULL), RM_SMTP_OK);
	assert_int_equal(parse(L("MAIL FROM:<a@b> ENVID=abcd"), &o, &c, NULL), RM_SMTP_E_ENVID_VALUE);
}

static void test_rcpt_values(void **state)
{
	struct rm_smtp_cmd_opts o;
	struct rm_smtp_cmd c;
	uint8_t dec[64];

	rm_smtp_cmd_opts_default(&o);
	assert_int_equal(parse(L("RCPT TO:<bob@example.net> NOTIFY=FAILURE,DELAY,SUCCESS "
				 "ORCPT=rfc822;Bob+2BSmith+40example.net"), &o, &c, NULL), RM_SMTP_OK);
	assert_int_equal(c.notify, RM_SMTP_NOTIFY_SUCCESS | RM_SMTP_NOTIFY_FAILURE | RM_SMTP_NOTIFY_DELAY);
	assert_span(c.orcpt_type, "rfc822");
	assert_span(c.orcpt, "Bob+2BSmith+40example.net");
	assert_int_equal(c.orcpt_decoded_len, 21);
	assert_int_equal(rm_smtp_xtext_decode(c.orcpt.ptr, c.orcpt.len, dec, sizeof(dec)), 21);
	assert_memory_equal(dec, "Bob+Smith@example.net", 21);
	assert_int_equal(parse(L("RCPT TO:<bob@example.net> NOTIFY=Never"), &o, &c, NULL), RM_SMTP_OK);
	assert_int_equal(c.notify, RM_SMTP_NOTIFY_NEVER);
	assert_int_equal(parse(L("RCPT TO:<Postmaster>"), &o, &c, NULL), RM_SMTP_OK);
	assert_true(c.path.bare_postmaster);
	assert_true(rm_smtp_path_is_postmaster(&c.path));
	assert_int_equal(c.path.domain.kind, RM_SMTP_DOMAIN_NONE);
	/* ORCPT at its limit. */
	o.orcpt_bytes_max = 9;
	assert_int_equal(parse(L("RCPT TO:<a@b> ORCPT=rfc822;ab"), &o, &c, NULL), RM_SMTP_OK);
	assert_int_equal(parse(L("RCPT TO:<a@b> ORCPT=rfc822;abc"), &o, &c, NULL), RM_SMTP_E_ORCPT_VALUE);
	/* The address codec's reason is kept for the log. */
	assert_int_equal(parse(L("RCPT TO:<a@b..c>"), &o, &c, NULL), RM_SMTP_E_RCPT_ADDR_SYNTAX);
	assert_int_equal(c.addr_err, RM_SMTP_ADDR_E_DOMAIN);
	assert_int_equal(c.verb, RM_SMTP_VERB_RCPT);
}

static void test_utf8(void **state)
{
	struct rm_smtp_cmd_opts o;
	struct rm_smtp_cmd c;

	rm_smtp_cmd_opts_default(&o);
	assert_int_equal(parse(L("MAIL FROM:<j\xc3\xb6rg@m\xc3\xbcller.example> SMTPUTF8"), &o, &c, NULL),
			 RM_SMTP_OK);
	assert_true(c.path.utf8 && c.smtputf8);
	/* Without the parameter: refused after the parameters, with the reason kept. */
	assert_int_equal(parse(L("MAIL FROM:<j\xc3\xb6rg@x> BODY=8BITMIME"), &o, &c, NULL),
			 RM_SMTP_E_SENDER_UTF8);
	assert_int_equal(c.addr_err, RM_SMTP_ADDR_E_UTF8);
	/* ASCII with SMTPUTF8 is fine. */
	assert_int_equal(parse(L("MAIL FROM:<a@b> SMTPUTF8"), &o, &c, NULL), RM_SMTP_OK);
	assert_false(c.path.utf8);
	/* RCPT follows the transaction. */
	assert_int_equal(parse(L("RCPT TO:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b.x>"), &o, &c, NULL),
			 RM_SMTP_E_RCPT_UTF8);
	o.smtputf8 = true;
	assert_int_equal(parse(L("RCPT TO:<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b.x>"), &o, &c, NULL),
			 RM_SMTP_OK);
	assert_true(c.path.utf8);
	assert_int_equal(parse(L("RCPT TO:<a\xed\xa0\x80@x>"), &o, &c, NULL), RM_SMTP_E_RCPT_ADDR_SYNTAX);
	assert_int_equal(c.addr_err, RM_SMTP_ADDR_E_BAD_UTF8);
}

static void test_bdat_auth_values(void **state)
{
	struct rm_smtp_cmd_opts o;
	struct rm_smtp_cmd c;

	rm_smtp_cmd_opts_default(&o);
	assert_int_equal(parse(L("BDAT 86 LAST"), &o, &c, NULL), RM_SMTP_OK);
	assert_int_equal(c.bdat_bytes, 86);
	assert_true(c.bdat_last);
	assert_int_equal(parse(L("BDAT 0"), &o, &c, NULL), RM_SMTP_OK);
	assert_int_equal(c.bdat_bytes, 0);
	assert_false(c.bdat_last);
	assert_int_equal(parse(L("BDAT 18446744073709551615 last"), &o, &c, NULL), RM_SMTP_OK);
	assert_true(c.bdat_bytes == UINT64_MAX && c.bdat_last);

	assert_int_equal(parse(L("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), &o, &c, NULL), RM_SMTP_OK);
	assert_span(c.auth_mech, "PLAIN");
	assert_span(c.auth_initial, "AGFsaWNlAHNlY3JldA==");
	assert_int_equal(parse(L("AUTH LOGIN"), &o, &c, NULL), RM_SMTP_OK);
	assert_span(c.auth_mech, "LOGIN");
	assert_null(c.auth_initial.ptr);
	assert_int_equal(parse(L("AUTH PLAIN ="), &o, &c, NULL), RM_SMTP_OK);
	assert_span(c.auth_initial, "=");

	assert_int_equal(parse(L("EHLO [IPv6:::1]"), &o, &c, NULL), RM_SMTP_OK);
	assert_int_equal(c.helo.kind, RM_SMTP_DOMAIN_IPV6);
	assert_span((struct rm_smtp_span){ c.helo.text, c.helo.len }, "[IPv6:::1]");
	assert_int_equal(parse(L("VRFY John Smith"), &o, &c, NULL), RM_SMTP_OK);
	assert_span(c.arg, "John Smith");
	assert_int_equal(parse(L("NOOP"), &o, &c, NULL), RM_SMTP_OK);
	assert_null(c.arg.ptr);
	assert_int_equal(parse(L("FOO bar"), &o, &c, NULL), RM_SMTP_E_UNKNOWN_VERB);
	assert_span(c.verb_text, "FOO");
}

/* Every verb in every mix of upper and lower case. */
static void test_verb_case(void **state)
{
	static const char *const verbs[] = {
		"EHLO x", "HELO x", "MAIL FROM:<>", "RCPT TO:<a@b>", "DATA", "BDAT 1", "RSET", "NOOP",
		"QUIT", "VRFY x", "EXPN x", "HELP", "STARTTLS", "AUTH PLAIN",
	};
	struct rm_smtp_cmd_opts o;

	rm_smtp_cmd_opts_default(&o);
	for (size_t v = 0; v < sizeof(verbs) / sizeof(verbs[0]); v++) {
		size_t len = strlen(verbs[v]);
		const char *sp = strchr(verbs[v], ' ');
		size_t vlen = sp ? (size_t)(sp - verbs[v]) : len;
		char line[32];

		for (unsigned mask = 0; mask < (1u << vlen); mask++) {
			struct rm_smtp_cmd c;

			memcpy(line, verbs[v], len);
			for (size_t i = 0; i < vlen; i++)
				if (mask & (1u << i))
					line[i] = (char)(line[i] | 0x20);
			assert_int_equal(parse(line, len, &o, &c, NULL), RM_SMTP_OK);
			assert_int_equal(c.verb, (enum rm_smtp_verb)(v + 1));
			assert_int_equal(strlen(rm_smtp_verb_name(c.verb)), vlen);
			assert_memory_equal(rm_smtp_verb_name(c.verb), verbs[v], vlen);
		}
	}
	/* A byte that is not a letter never folds into one. */
	for (unsigned b = 0; b < 256; b++) {
		char line[4] = { 'D', 'A', 'T', (char)b };
		struct rm_smtp_cmd c;

		parse(line, 4, &o, &c, NULL);
		assert_int_equal(c.verb == RM_SMTP_VERB_DATA, b == 'A' || b == 'a');
	}
}

static void test_xtext(void **state)
{
	uint8_t out[16];
	size_t n;

	assert_true(rm_smtp_xtext_valid((const uint8_t *)"a+2Bb", 5, &n));
	assert_int_equal(n, 3);
	assert_int_equal(rm_smtp_xtext_decode((const uint8_t *)"a+2Bb", 5, out, 3), 3);
	assert_memory_equal(out, "a+b", 3);
	assert_int_equal(rm_smtp_xtext_decode((const uint8_t *)"a+2Bb", 5, out, 2), -1);
	assert_true(rm_smtp_xtext_valid((const uint8_t *)"+00+FF", 6, &n));	/* syntax only */
	assert_int_equal(n, 2);
	assert_int_equal(rm_smtp_xtext_decode((const uint8_t *)"+00+FF", 6, out, 2), 2);
	assert_int_equal(out[0], 0);
	assert_int_equal(out[1], 0xff);
	assert_true(rm_smtp_xtext_valid((const uint8_t *)"", 0, &n));
	assert_int_equal(n, 0);
	static const char *const bad[] = { "a=b", "a b", "+", "+1", "+1g", "+ab", "a\x7f", "\xc3\xa9" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_false(rm_smtp_xtext_valid((const uint8_t *)bad[i], strlen(bad[i]), &n));
		assert_int_equal(rm_smtp_xtext_decode((const uint8_t *)bad[i], strlen(bad[i]), out,
						      sizeof(out)), -1);
	}
}

/* Each error its own reply; every reply one proto/smtp_reply accepts. */
static void test_statuses(void **state)
{
	uint8_t buf[RM_SMTP_REPLY_LINE_BYTES_MAX];

	for (int a = 0; a < RM_SMTP_E_COUNT; a++) {
		const struct rm_smtp_status *s = rm_smtp_cmd_status((enum rm_smtp_cmd_err)a);

		assert_non_null(s->text);
		assert_true(rm_smtp_enhanced_valid(s->enhanced, s->code));
		assert_true(rm_smtp_reply_status(buf, sizeof(buf), s) > 0);
		for (int b = 0; b < a; b++)
			assert_string_not_equal(s->text,
						rm_smtp_cmd_status((enum rm_smtp_cmd_err)b)->text);
	}
	assert_int_equal(rm_smtp_cmd_status(RM_SMTP_E_UNKNOWN_VERB)->code, 500);
	assert_int_equal(rm_smtp_cmd_status(RM_SMTP_E_LINE_TOO_LONG)->code, 500);
	assert_string_equal(rm_smtp_cmd_status(RM_SMTP_E_LINE_TOO_LONG)->enhanced, "5.5.6");
	assert_int_equal(rm_smtp_cmd_status(RM_SMTP_E_PARAM_UNKNOWN)->code, 555);
	assert_int_equal(rm_smtp_cmd_status(RM_SMTP_E_BODY_VALUE)->code, 504);
	assert_int_equal(rm_smtp_cmd_status(RM_SMTP_E_SENDER_UTF8)->code, 553);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_mail_values),
		cmocka_unit_test(test_rcpt_values),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_bdat_auth_values),
		cmocka_unit_test(test_verb_case),
		cmocka_unit_test(test_xtext),
		cmocka_unit_test(test_statuses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
