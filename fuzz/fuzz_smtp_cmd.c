/*
 * NAME
 *	fuzz_smtp_cmd - libFuzzer harness for proto/smtp_cmd
 * DESCRIPTION
 *	Input layout: byte 0 picks the options (bits 0-5 the advertised
 *	extensions, bit 6 an SMTPUTF8 transaction for RCPT, bit 7 trailing
 *	dots), the rest is one command line, parsed from a heap copy of exact
 *	size so ASan flags any read past it.
 *
 *	Invariants (any failure traps):
 *	- the result is one of the errors the parser may give (never the line
 *	  splitter's), out->err agrees, and its reply is valid for
 *	  proto/smtp_reply;
 *	- every string of a good result points into the line;
 *	- the same line with its verb in the other case gives the same result;
 *	- a good command written back in canonical form (upper-case verb, the
 *	  path rendered by proto/smtp_addr, each parameter as parsed) parses
 *	  again, to the same verb, path content and parameter values;
 *	- parameters only come from extensions in the mask, a MAIL path with
 *	  UTF-8 only with the SMTPUTF8 parameter, a RCPT one only in an
 *	  SMTPUTF8 transaction.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_cmd.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

enum { LINE_MAX_BYTES = 4096, CANON_MAX = 8192 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool inside(struct rm_smtp_span s, const uint8_t *line, size_t len)
{
	return s.ptr == NULL ? s.len == 0 : s.ptr >= line && s.ptr + s.len <= line + len;
}

static bool same_span(struct rm_smtp_span a, struct rm_smtp_span b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

struct canon {
	char buf[CANON_MAX];
	size_t len;
};

static void put(struct canon *c, const void *p, size_t n)
{
	CHECK(c->len + n <= sizeof(c->buf));
	memcpy(c->buf + c->len, p, n);
	c->len += n;
}

static void puts_(struct canon *c, const char *s)
{
	put(c, s, strlen(s));
}

static void put_span(struct canon *c, struct rm_smtp_span s)
{
	put(c, s.ptr, s.len);
}

/* The command as this harness would write it, from the parsed fields. */
static void canonical(const struct rm_smtp_cmd *m, struct canon *c)
{
	static const char *const bodies[] = { "", "7BIT", "8BITMIME", "BINARYMIME" };
	static const char *const rets[] = { "", "FULL", "HDRS" };
	char num[32];
	uint8_t path[1024];
	ssize_t n;

	c->len = 0;
	puts_(c, rm_smtp_verb_name(m->verb));
	switch (m->verb) {
	case RM_SMTP_VERB_MAIL:
	case RM_SMTP_VERB_RCPT:
		puts_(c, m->verb == RM_SMTP_VERB_MAIL ? " FROM:" : " TO:");
		n = rm_smtp_path_render(&m->path, path, sizeof(path));
		CHECK(n >= 2);
		put(c, path, (size_t)n);
		if (m->size_given) {
			snprintf(num, sizeof(num), " SIZE=%" PRIu64, m->size_bytes);
			puts_(c, num);
		}
		if (m->body != RM_SMTP_BODY_NONE) {
			puts_(c, " BODY=");
			puts_(c, bodies[m->body]);
		}
		if (m->smtputf8)
			puts_(c, " SMTPUTF8");
		if (m->ret != RM_SMTP_RET_NONE) {
			puts_(c, " RET=");
			puts_(c, rets[m->ret]);
		}
		if (m->envid.ptr) {
			puts_(c, " ENVID=");
			put_span(c, m->envid);
		}
		if (m->auth_param.ptr) {
			puts_(c, " AUTH=");
			put_span(c, m->auth_param);
		}
		if (m->notify) {
			static const char *const names[] = { "NEVER", "SUCCESS", "FAILURE", "DELAY" };
			const char *sep = " NOTIFY=";

			for (int b = 0; b < 4; b++)
				if (m->notify & (1u << b)) {
					puts_(c, sep);
					puts_(c, names[b]);
					sep = ",";
				}
		}
		if (m->orcpt.ptr) {
			puts_(c, " ORCPT=");
			put_span(c, m->orcpt_type);
			puts_(c, ";");
			put_span(c, m->orcpt);
		}
		break;
	case RM_SMTP_VERB_BDAT:
		snprintf(num, sizeof(num), " %" PRIu64 "%s", m->bdat_bytes, m->bdat_last ? " LAST" : "");
		puts_(c, num);
		break;
	case RM_SMTP_VERB_AUTH:
		puts_(c, " ");
		put_span(c, m->auth_mech);
		if (m->auth_initial.ptr) {
			puts_(c, " ");
			put_span(c, m->auth_initial);
		}
		break;
	case RM_SMTP_VERB_EHLO:
	case RM_SMTP_VERB_HELO:
		puts_(c, " ");
		put(c, m->helo.text, m->helo.len);
		break;
	default:
		if (m->arg.ptr) {
			puts_(c, " ");
			put_span(c, m->arg);
		}
		break;
	}
}

static void check_same_path(const struct rm_smtp_path *a, const struct rm_smtp_path *b)
{
	uint8_t ua[512], ub[512];
	ssize_t na = rm_smtp_local_unquote(a, ua, sizeof(ua));
	ssize_t nb = rm_smtp_local_unquote(b, ub, sizeof(ub));

	CHECK(a->null == b->null && a->bare_postmaster == b->bare_postmaster);
	CHECK(na >= 0 && na == nb && memcmp(ua, ub, (size_t)na) == 0);
	CHECK(a->domain.kind == b->domain.kind && a->domain.len == b->domain.len);
	CHECK(a->domain.len == 0 || memcmp(a->domain.text, b->domain.text, a->domain.len) == 0);
}

static void check_good(const struct rm_smtp_cmd *m, const uint8_t *line, size_t len,
		       const struct rm_smtp_cmd_opts *o)
{
	CHECK(m->verb != RM_SMTP_VERB_UNKNOWN && m->addr_err == RM_SMTP_ADDR_OK);
	CHECK(inside(m->verb_text, line, len) && inside(m->arg, line, len));
	CHECK(inside(m->envid, line, len) && inside(m->auth_param, line, len));
	CHECK(inside(m->orcpt_type, line, len) && inside(m->orcpt, line, len));
	CHECK(inside(m->auth_mech, line, len) && inside(m->auth_initial, line, len));
	CHECK(m->path.len == 0 || (m->path.text >= line && m->path.text + m->path.len <= line + len));
	CHECK(m->helo.len == 0 || (m->helo.text >= line && m->helo.text + m->helo.len <= line + len));
	/* Parameters only from advertised extensions. */
	CHECK(!m->size_given || (o->ext & RM_SMTP_EXT_SIZE));
	CHECK(!m->smtputf8 || (o->ext & RM_SMTP_EXT_SMTPUTF8));
	CHECK(m->body != RM_SMTP_BODY_8BITMIME || (o->ext & RM_SMTP_EXT_8BITMIME));
	CHECK(m->body != RM_SMTP_BODY_BINARYMIME || (o->ext & RM_SMTP_EXT_BINARYMIME));
	CHECK((m->ret == RM_SMTP_RET_NONE && !m->envid.ptr && !m->notify && !m->orcpt.ptr) ||
	      (o->ext & RM_SMTP_EXT_DSN));
	CHECK(!m->auth_param.ptr || (o->ext & RM_SMTP_EXT_AUTH));
	CHECK(m->envid.len <= o->envid_bytes_max);
	CHECK(!m->notify || !(m->notify & RM_SMTP_NOTIFY_NEVER) || m->notify == RM_SMTP_NOTIFY_NEVER);
	if (m->verb == RM_SMTP_VERB_MAIL)
		CHECK(!m->path.utf8 || m->smtputf8);
	if (m->verb == RM_SMTP_VERB_RCPT)
		CHECK((!m->path.utf8 || o->smtputf8) && !m->path.null);
	if (m->verb != RM_SMTP_VERB_MAIL && m->verb != RM_SMTP_VERB_RCPT)
		for (size_t i = 0; i < len; i++)
			CHECK(line[i] >= 32 && line[i] < 127);
}

static void check_canonical(const struct rm_smtp_cmd *m, const struct rm_smtp_cmd_opts *o)
{
	static struct canon c;
	struct rm_smtp_cmd again;
	uint8_t *copy;

	canonical(m, &c);
	copy = malloc(c.len);
	CHECK(copy != NULL);
	memcpy(copy, c.buf, c.len);
	CHECK(rm_smtp_cmd_parse(copy, c.len, o, &again) == RM_SMTP_OK);
	CHECK(again.verb == m->verb);
	CHECK(again.size_given == m->size_given && again.size_bytes == m->size_bytes);
	CHECK(again.body == m->body && again.ret == m->ret && again.smtputf8 == m->smtputf8);
	CHECK(same_span(again.envid, m->envid) && again.envid_decoded_len == m->envid_decoded_len);
	CHECK(same_span(again.auth_param, m->auth_param));
	CHECK(again.notify == m->notify);
	CHECK(same_span(again.orcpt_type, m->orcpt_type) && same_span(again.orcpt, m->orcpt));
	CHECK(again.bdat_bytes == m->bdat_bytes && again.bdat_last == m->bdat_last);
	CHECK(same_span(again.auth_mech, m->auth_mech) && same_span(again.auth_initial, m->auth_initial));
	CHECK(again.helo.kind == m->helo.kind && again.helo.len == m->helo.len);
	if (m->verb == RM_SMTP_VERB_MAIL || m->verb == RM_SMTP_VERB_RCPT)
		check_same_path(&m->path, &again.path);
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size - 1 > LINE_MAX_BYTES)
		return 0;

	struct rm_smtp_cmd_opts o;
	size_t len = size - 1;
	uint8_t *line = malloc(len ? len : 1);
	struct rm_smtp_cmd m, flipped;
	enum rm_smtp_cmd_err err;
	uint8_t buf[RM_SMTP_REPLY_LINE_BYTES_MAX];

	CHECK(line != NULL);
	memcpy(line, data + 1, len);
	rm_smtp_cmd_opts_default(&o);
	o.ext = data[0] & RM_SMTP_EXT_ALL;
	o.smtputf8 = data[0] & 0x40;
	o.addr_flags = data[0] & 0x80 ? RM_SMTP_ADDR_TRAILING_DOT : 0;

	err = rm_smtp_cmd_parse(line, len, &o, &m);
	CHECK(err == m.err && (unsigned)err < RM_SMTP_E_COUNT && err != RM_SMTP_E_LINE_TOO_LONG);
	CHECK(rm_smtp_reply_status(buf, sizeof(buf), rm_smtp_cmd_status(err)) > 0);
	CHECK((err == RM_SMTP_E_UNKNOWN_VERB || err == RM_SMTP_E_EMPTY) ==
	      (m.verb == RM_SMTP_VERB_UNKNOWN));
	if (err == RM_SMTP_OK) {
		check_good(&m, line, len, &o);
		check_canonical(&m, &o);
	}

	/* The verb in the other case: the same result. */
	for (size_t i = 0; i < m.verb_text.len && i < len; i++) {
		uint8_t ch = line[i];

		if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z')
			line[i] = ch ^ 0x20;
	}
	CHECK(rm_smtp_cmd_parse(line, len, &o, &flipped) == err && flipped.verb == m.verb);
	free(line);
	return 0;
}
