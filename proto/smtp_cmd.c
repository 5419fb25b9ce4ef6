/*
 * NAME
 *	smtp_cmd - SMTP server command line parser
 * SUMMARY
 *	See proto/smtp_cmd.h for the interface.
 * DESCRIPTION
 *	One pass, left to right, and the first thing wrong is the error: the
 *	verb (looked up as one 32- or 64-bit word, case folded), then every
 *	byte of the line for control characters, then the verb's own grammar.
 *	MAIL and RCPT hand the path to proto/smtp_addr, which says where it
 *	ended, and then read the parameters from there; each parameter has a
 *	definition (keyword, extension, verb, whether it takes a value) and a
 *	value checker.
 *
 *	SMTPUTF8 comes after the path it governs, so a MAIL path is parsed
 *	with UTF-8 allowed whenever the extension is advertised, and refused
 *	afterwards if it held UTF-8 but the parameter was not there.
 *
 *	Every loop walks the line forward and ends at its end, so the work is
 *	linear in the line, which the line splitter bounds.
 * DIAGNOSTICS
 *	See the header.
 */
#include <string.h>

#include "core/log.h"
#include "proto/smtp_cmd.h"

static const struct rm_smtp_status statuses[RM_SMTP_E_COUNT] = {
	[RM_SMTP_OK] = { 250, "2.0.0", "Ok" },
	[RM_SMTP_E_EMPTY] = { 500, "5.5.2", "Empty command" },
	[RM_SMTP_E_UNKNOWN_VERB] = { 500, "5.5.1", "Command unrecognized" },
	[RM_SMTP_E_LINE_TOO_LONG] = { 500, "5.5.6", "Line too long" },
	[RM_SMTP_E_BAD_CHAR] = { 501, "5.5.2", "Invalid character in command" },
	[RM_SMTP_E_NO_ARGS] = { 501, "5.5.4", "Syntax: no parameters allowed" },
	[RM_SMTP_E_ARG_MISSING] = { 501, "5.5.4", "Syntax: argument required" },
	[RM_SMTP_E_ARG_SYNTAX] = { 501, "5.5.4", "Syntax error in argument" },
	[RM_SMTP_E_HELO_SYNTAX] = { 501, "5.5.4", "Syntax: EHLO domain-or-address-literal" },
	[RM_SMTP_E_HELO_DOMAIN] = { 501, "5.5.4", "Invalid domain name" },
	[RM_SMTP_E_MAIL_SYNTAX] = { 501, "5.5.4", "Syntax: MAIL FROM:<address>" },
	[RM_SMTP_E_RCPT_SYNTAX] = { 501, "5.5.4", "Syntax: RCPT TO:<address>" },
	[RM_SMTP_E_SENDER_SYNTAX] = { 501, "5.1.7", "Bad sender address syntax" },
	[RM_SMTP_E_SENDER_TOO_LONG] = { 501, "5.1.7", "Sender address too long" },
	[RM_SMTP_E_SENDER_UTF8] = { 553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8" },
	[RM_SMTP_E_RCPT_ADDR_SYNTAX] = { 501, "5.1.3", "Bad recipient address syntax" },
	[RM_SMTP_E_RCPT_TOO_LONG] = { 501, "5.1.3", "Recipient address too long" },
	[RM_SMTP_E_RCPT_NULL] = { 501, "5.1.3", "Null recipient address not allowed" },
	[RM_SMTP_E_RCPT_UTF8] = { 553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8" },
	[RM_SMTP_E_AFTER_PATH] = { 501, "5.5.4", "Syntax error after address" },
	[RM_SMTP_E_PARAM_SYNTAX] = { 501, "5.5.4", "Syntax error in parameters" },
	[RM_SMTP_E_PARAM_UNKNOWN] = { 555, "5.5.4", "Unsupported parameter" },
	[RM_SMTP_E_PARAM_DUP] = { 501, "5.5.4", "Duplicate parameter" },
	[RM_SMTP_E_PARAM_NO_VALUE] = { 501, "5.5.4", "Parameter needs a value" },
	[RM_SMTP_E_PARAM_HAS_VALUE] = { 501, "5.5.4", "Parameter takes no value" },
	[RM_SMTP_E_SIZE_VALUE] = { 501, "5.5.4", "Invalid SIZE value" },
	[RM_SMTP_E_BODY_VALUE] = { 504, "5.5.4", "Unsupported BODY value" },
	[RM_SMTP_E_RET_VALUE] = { 501, "5.5.4", "Invalid RET value" },
	[RM_SMTP_E_ENVID_VALUE] = { 501, "5.5.4", "Invalid ENVID value" },
	[RM_SMTP_E_AUTH_PARAM_VALUE] = { 501, "5.5.4", "Invalid AUTH value" },
	[RM_SMTP_E_NOTIFY_VALUE] = { 501, "5.5.4", "Invalid NOTIFY value" },
	[RM_SMTP_E_ORCPT_VALUE] = { 501, "5.5.4", "Invalid ORCPT value" },
	[RM_SMTP_E_BDAT_SYNTAX] = { 501, "5.5.4", "Syntax: BDAT size [LAST]" },
	[RM_SMTP_E_AUTH_SYNTAX] = { 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]" },
	[RM_SMTP_E_AUTH_RESPONSE] = { 501, "5.5.2", "Initial response is not base64" },
};

static const char *const verb_names[RM_SMTP_VERB_COUNT] = {
	[RM_SMTP_VERB_UNKNOWN] = "UNKNOWN", [RM_SMTP_VERB_EHLO] = "EHLO",
	[RM_SMTP_VERB_HELO] = "HELO", [RM_SMTP_VERB_MAIL] = "MAIL", [RM_SMTP_VERB_RCPT] = "RCPT",
	[RM_SMTP_VERB_DATA] = "DATA", [RM_SMTP_VERB_BDAT] = "BDAT", [RM_SMTP_VERB_RSET] = "RSET",
	[RM_SMTP_VERB_NOOP] = "NOOP", [RM_SMTP_VERB_QUIT] = "QUIT", [RM_SMTP_VERB_VRFY] = "VRFY",
	[RM_SMTP_VERB_EXPN] = "EXPN", [RM_SMTP_VERB_HELP] = "HELP",
	[RM_SMTP_VERB_STARTTLS] = "STARTTLS", [RM_SMTP_VERB_AUTH] = "AUTH",
};

const struct rm_smtp_status *rm_smtp_cmd_status(enum rm_smtp_cmd_err err)
{
	RM_ASSERT((unsigned)err < RM_SMTP_E_COUNT);
	return &statuses[err];
}

const char *rm_smtp_verb_name(enum rm_smtp_verb verb)
{
	RM_ASSERT((unsigned)verb < RM_SMTP_VERB_COUNT);
	return verb_names[verb];
}

void rm_smtp_cmd_opts_default(struct rm_smtp_cmd_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->ext = RM_SMTP_EXT_ALL;
	rm_smtp_addr_limits_default(&o->addr);
	o->envid_bytes_max = RM_SMTP_ENVID_BYTES_MAX;
	o->orcpt_bytes_max = RM_SMTP_ORCPT_BYTES_MAX;
}

/* ASCII letters folded to lower case, four at a time; no other byte becomes a letter. */
#define W4(a, b, c, d) ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)

static uint32_t fold4(const uint8_t *p)
{
	return W4(p[0], p[1], p[2], p[3]) | 0x20202020u;
}

static enum rm_smtp_verb verb_lookup(const uint8_t *s, size_t n)
{
	if (n == 8)
		return fold4(s) == W4('s', 't', 'a', 'r') && fold4(s + 4) == W4('t', 't', 'l', 's') ?
		       RM_SMTP_VERB_STARTTLS : RM_SMTP_VERB_UNKNOWN;
	if (n != 4)
		return RM_SMTP_VERB_UNKNOWN;
	switch (fold4(s)) {
	case W4('e', 'h', 'l', 'o'): return RM_SMTP_VERB_EHLO;
	case W4('h', 'e', 'l', 'o'): return RM_SMTP_VERB_HELO;
	case W4('m', 'a', 'i', 'l'): return RM_SMTP_VERB_MAIL;
	case W4('r', 'c', 'p', 't'): return RM_SMTP_VERB_RCPT;
	case W4('d', 'a', 't', 'a'): return RM_SMTP_VERB_DATA;
	case W4('b', 'd', 'a', 't'): return RM_SMTP_VERB_BDAT;
	case W4('r', 's', 'e', 't'): return RM_SMTP_VERB_RSET;
	case W4('n', 'o', 'o', 'p'): return RM_SMTP_VERB_NOOP;
	case W4('q', 'u', 'i', 't'): return RM_SMTP_VERB_QUIT;
	case W4('v', 'r', 'f', 'y'): return RM_SMTP_VERB_VRFY;
	case W4('e', 'x', 'p', 'n'): return RM_SMTP_VERB_EXPN;
	case W4('h', 'e', 'l', 'p'): return RM_SMTP_VERB_HELP;
	case W4('a', 'u', 't', 'h'): return RM_SMTP_VERB_AUTH;
	default: return RM_SMTP_VERB_UNKNOWN;
	}
}

static bool is_alnum(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 5322 atext, for ORCPT's addr-type. */
static bool is_atext(uint8_t c)
{
	return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* ASCII case-insensitive equality of n bytes; word is upper case. */
static bool ci_equal(const uint8_t *p, const char *word, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t c = p[i];

		if ((c >= 'a' && c <= 'z' ? c - 32 : c) != (uint8_t)word[i])
			return false;
	}
	return true;
}

static bool span_is(struct rm_smtp_span v, const char *word)
{
	size_t n = strlen(word);

	return v.len == n && ci_equal(v.ptr, word, n);
}

static struct rm_smtp_span span(const uint8_t *p, size_t n)
{
	return (struct rm_smtp_span){ p, n };
}

/*
 * xtext (RFC 3461 4): xchar (33-126 but '+' and '=') or "+" two upper-case
 * hex digits.  With printable, every decoded octet must be 32-126 too.
 */
static bool xtext_scan(const uint8_t *s, size_t len, bool printable, size_t *decoded_len)
{
	size_t i = 0, n = 0;

	while (i < len) {
		uint8_t c = s[i];

		if (c == '+') {
			unsigned v = 0;

			if (len - i < 3)
				return false;
			for (size_t k = 1; k <= 2; k++) {
				uint8_t h = s[i + k];

				if (is_digit(h))
					v = v << 4 | (unsigned)(h - '0');
				else if (h >= 'A' && h <= 'F')
					v = v << 4 | (unsigned)(h - 'A' + 10);
				else
					return false;
			}
			if (printable && (v < 32 || v > 126))
				return false;
			i += 3;
		} else if (c >= 33 && c <= 126 && c != '=') {
			i++;
		} else {
			return false;
		}
		n++;
	}
	*decoded_len = n;
	return true;
}

bool rm_smtp_xtext_valid(const uint8_t *s, size_t len, size_t *decoded_len)
{
	return xtext_scan(s, len, false, decoded_len);
}

ssize_t rm_smtp_xtext_decode(const uint8_t *s, size_t len, uint8_t *out, size_t cap)
{
	size_t n, i = 0, o = 0;

	if (!xtext_scan(s, len, false, &n) || n > cap)
		return -1;
	while (i < len) {
		if (s[i] == '+') {
			uint8_t hi = s[i + 1], lo = s[i + 2];

			hi = (uint8_t)(is_digit(hi) ? hi - '0' : hi - 'A' + 10);
			lo = (uint8_t)(is_digit(lo) ? lo - '0' : lo - 'A' + 10);
			out[o++] = (uint8_t)(hi << 4 | lo);
			i += 3;
		} else {
			out[o++] = s[i++];
		}
	}
	RM_ASSERT(o == n);
	return (ssize_t)o;
}

/* 1..RM_SMTP_SIZE_DIGITS_MAX digits; *overflow when the value passes 2^64-1. */
static bool parse_digits(struct rm_smtp_span v, uint64_t *value, bool *overflow)
{
	uint64_t x = 0;

	*overflow = false;
	if (v.len == 0 || v.len > RM_SMTP_SIZE_DIGITS_MAX)
		return false;
	for (size_t i = 0; i < v.len; i++) {
		unsigned d;

		if (!is_digit(v.ptr[i]))
			return false;
		d = (unsigned)(v.ptr[i] - '0');
		if (x > (UINT64_MAX - d) / 10)
			*overflow = true;
		x = x * 10 + d;
	}
	*value = *overflow ? UINT64_MAX : x;
	return true;
}

enum param_id { P_SIZE, P_BODY, P_SMTPUTF8, P_RET, P_ENVID, P_AUTH, P_NOTIFY, P_ORCPT, P_COUNT };

static const struct param_def {
	const char *name;
	uint8_t name_len;
	bool takes_value;
	enum rm_smtp_verb verb;
	uint32_t ext;
} param_defs[P_COUNT] = {
#define DEF(name, verb, ext, value) { name, sizeof(name) - 1, value, RM_SMTP_VERB_##verb, ext }
	[P_SIZE] = DEF("SIZE", MAIL, RM_SMTP_EXT_SIZE, true),
	[P_BODY] = DEF("BODY", MAIL, RM_SMTP_EXT_8BITMIME | RM_SMTP_EXT_BINARYMIME, true),
	[P_SMTPUTF8] = DEF("SMTPUTF8", MAIL, RM_SMTP_EXT_SMTPUTF8, false),
	[P_RET] = DEF("RET", MAIL, RM_SMTP_EXT_DSN, true),
	[P_ENVID] = DEF("ENVID", MAIL, RM_SMTP_EXT_DSN, true),
	[P_AUTH] = DEF("AUTH", MAIL, RM_SMTP_EXT_AUTH, true),
	[P_NOTIFY] = DEF("NOTIFY", RCPT, RM_SMTP_EXT_DSN, true),
	[P_ORCPT] = DEF("ORCPT", RCPT, RM_SMTP_EXT_DSN, true),
#undef DEF
};

static enum rm_smtp_cmd_err value_body(const struct rm_smtp_cmd_opts *o, struct rm_smtp_cmd *c,
				       struct rm_smtp_span v)
{
	if (span_is(v, "7BIT"))
		c->body = RM_SMTP_BODY_7BIT;
	else if (span_is(v, "8BITMIME") && (o->ext & RM_SMTP_EXT_8BITMIME))
		c->body = RM_SMTP_BODY_8BITMIME;
	else if (span_is(v, "BINARYMIME") && (o->ext & RM_SMTP_EXT_BINARYMIME))
		c->body = RM_SMTP_BODY_BINARYMIME;
	else
		return RM_SMTP_E_BODY_VALUE;
	return RM_SMTP_OK;
}

/* NOTIFY=NEVER, or SUCCESS, FAILURE and DELAY in any order, each at most once. */
static enum rm_smtp_cmd_err value_notify(struct rm_smtp_cmd *c, struct rm_smtp_span v)
{
	static const struct {
		const char *name;
		uint8_t bit;
	} words[] = {
		{ "NEVER", RM_SMTP_NOTIFY_NEVER }, { "SUCCESS", RM_SMTP_NOTIFY_SUCCESS },
		{ "FAILURE", RM_SMTP_NOTIFY_FAILURE }, { "DELAY", RM_SMTP_NOTIFY_DELAY },
	};
	size_t i = 0;
	uint8_t bits = 0;

	while (i <= v.len) {
		const uint8_t *comma = memchr(v.ptr + i, ',', v.len - i);
		size_t end = comma != NULL ? (size_t)(comma - v.ptr) : v.len;
		struct rm_smtp_span item = span(v.ptr + i, end - i);
		uint8_t bit = 0;

		for (size_t k = 0; k < sizeof(words) / sizeof(words[0]); k++)
			if (span_is(item, words[k].name))
				bit = words[k].bit;
		if (bit == 0 || (bits & bit))
			return RM_SMTP_E_NOTIFY_VALUE;
		bits |= bit;
		i = end + 1;
	}
	if ((bits & RM_SMTP_NOTIFY_NEVER) && bits != RM_SMTP_NOTIFY_NEVER)
		return RM_SMTP_E_NOTIFY_VALUE;
	c->notify = bits;
	return RM_SMTP_OK;
}

/* ORCPT=addr-type ";" xtext, addr-type an RFC 5322 atom. */
static enum rm_smtp_cmd_err value_orcpt(const struct rm_smtp_cmd_opts *o, struct rm_smtp_cmd *c,
					struct rm_smtp_span v)
{
	const uint8_t *semi = memchr(v.ptr, ';', v.len);
	size_t type_len, n;

	if (v.len > o->orcpt_bytes_max || semi == NULL)
		return RM_SMTP_E_ORCPT_VALUE;
	type_len = (size_t)(semi - v.ptr);
	if (type_len == 0 || type_len + 1 == v.len)
		return RM_SMTP_E_ORCPT_VALUE;
	for (size_t i = 0; i < type_len; i++)
		if (!is_atext(v.ptr[i]))
			return RM_SMTP_E_ORCPT_VALUE;
	if (!xtext_scan(semi + 1, v.len - type_len - 1, true, &n))
		return RM_SMTP_E_ORCPT_VALUE;
	c->orcpt_type = span(v.ptr, type_len);
	c->orcpt = span(semi + 1, v.len - type_len - 1);
	c->orcpt_decoded_len = n;
	return RM_SMTP_OK;
}

/* The value of a known parameter; v.ptr is NULL when it came without "=value". */
static enum rm_smtp_cmd_err param_value(const struct rm_smtp_cmd_opts *o, struct rm_smtp_cmd *c,
					enum param_id id, struct rm_smtp_span v)
{
	bool overflow;
	size_t n;

	switch (id) {
	case P_SIZE:
		if (!parse_digits(v, &c->size_bytes, &overflow))
			return RM_SMTP_E_SIZE_VALUE;
		c->size_given = true;
		return RM_SMTP_OK;
	case P_BODY:
		return value_body(o, c, v);
	case P_SMTPUTF8:
		c->smtputf8 = true;
		return RM_SMTP_OK;
	case P_RET:
		if (span_is(v, "FULL"))
			c->ret = RM_SMTP_RET_FULL;
		else if (span_is(v, "HDRS"))
			c->ret = RM_SMTP_RET_HDRS;
		else
			return RM_SMTP_E_RET_VALUE;
		return RM_SMTP_OK;
	case P_ENVID:
		if (v.len > o->envid_bytes_max || !xtext_scan(v.ptr, v.len, true, &n))
			return RM_SMTP_E_ENVID_VALUE;
		c->envid = v;
		c->envid_decoded_len = n;
		return RM_SMTP_OK;
	case P_AUTH:
		if (!xtext_scan(v.ptr, v.len, true, &n))
			return RM_SMTP_E_AUTH_PARAM_VALUE;
		c->auth_param = v;
		return RM_SMTP_OK;
	case P_NOTIFY:
		return value_notify(c, v);
	case P_ORCPT:
		return value_orcpt(o, c, v);
	default:
		rm_panic("smtp_cmd: parameter %d", (int)id);
	}
}

/*
 * The parameters from s[pos] (an SP) to the end: esmtp-keyword ["="
 * esmtp-value], one SP apart, nothing after the last.
 */
static enum rm_smtp_cmd_err parse_params(const uint8_t *s, size_t len, size_t pos,
					 const struct rm_smtp_cmd_opts *o, struct rm_smtp_cmd *c)
{
	unsigned seen = 0;

	while (pos < len) {
		size_t k0, k1;
		struct rm_smtp_span v = { NULL, 0 };
		enum param_id id = P_COUNT;
		enum rm_smtp_cmd_err err;

		RM_ASSERT(s[pos] == ' ');
		k0 = ++pos;
		if (pos >= len || !is_alnum(s[pos]))
			return RM_SMTP_E_PARAM_SYNTAX;
		while (pos < len && (is_alnum(s[pos]) || s[pos] == '-'))
			pos++;
		k1 = pos;
		if (pos < len && s[pos] == '=') {
			size_t v0 = ++pos;

			/* esmtp-value: 33-60 / 62-126 */
			while (pos < len && s[pos] >= 33 && s[pos] <= 126 && s[pos] != '=')
				pos++;
			if (pos == v0)
				return RM_SMTP_E_PARAM_SYNTAX;
			v = span(s + v0, pos - v0);
		}
		if (pos < len && s[pos] != ' ')
			return RM_SMTP_E_PARAM_SYNTAX;
		for (int i = 0; i < P_COUNT; i++) {
			const struct param_def *d = &param_defs[i];

			if (d->name_len == k1 - k0 && d->verb == c->verb && (d->ext & o->ext) &&
			    ci_equal(s + k0, d->name, k1 - k0))
				id = (enum param_id)i;
		}
		if (id == P_COUNT)
			return RM_SMTP_E_PARAM_UNKNOWN;
		if (seen & (1u << id))
			return RM_SMTP_E_PARAM_DUP;
		seen |= 1u << id;
		if (param_defs[id].takes_value && v.ptr == NULL)
			return RM_SMTP_E_PARAM_NO_VALUE;
		if (!param_defs[id].takes_value && v.ptr != NULL)
			return RM_SMTP_E_PARAM_HAS_VALUE;
		err = param_value(o, c, id, v);
		if (err != RM_SMTP_OK)
			return err;
	}
	return RM_SMTP_OK;
}

static enum rm_smtp_cmd_err path_error(enum rm_smtp_addr_err e, bool mail)
{
	switch (e) {
	case RM_SMTP_ADDR_E_NO_OPEN:
		return mail ? RM_SMTP_E_MAIL_SYNTAX : RM_SMTP_E_RCPT_SYNTAX;
	case RM_SMTP_ADDR_E_NULL:
		return RM_SMTP_E_RCPT_NULL;
	case RM_SMTP_ADDR_E_UTF8:
		return mail ? RM_SMTP_E_SENDER_UTF8 : RM_SMTP_E_RCPT_UTF8;
	case RM_SMTP_ADDR_E_LOCAL_TOO_LONG:
	case RM_SMTP_ADDR_E_DOMAIN_TOO_LONG:
	case RM_SMTP_ADDR_E_PATH_TOO_LONG:
		return mail ? RM_SMTP_E_SENDER_TOO_LONG : RM_SMTP_E_RCPT_TOO_LONG;
	default:
		return mail ? RM_SMTP_E_SENDER_SYNTAX : RM_SMTP_E_RCPT_ADDR_SYNTAX;
	}
}

/* MAIL FROM:<path> [SP params] or RCPT TO:<path> [SP params], from after the verb. */
static enum rm_smtp_cmd_err parse_mail_rcpt(const uint8_t *s, size_t len, size_t pos,
					    const struct rm_smtp_cmd_opts *o, struct rm_smtp_cmd *c)
{
	bool mail = c->verb == RM_SMTP_VERB_MAIL;
	const char *word = mail ? " FROM:" : " TO:";
	size_t wlen = strlen(word), used;
	unsigned flags = o->addr_flags & RM_SMTP_ADDR_TRAILING_DOT;
	enum rm_smtp_cmd_err err;

	if (len - pos < wlen || !ci_equal(s + pos, word, wlen))
		return mail ? RM_SMTP_E_MAIL_SYNTAX : RM_SMTP_E_RCPT_SYNTAX;
	pos += wlen;
	if (pos < len && s[pos] == ' ')
		pos++;	/* "MAIL FROM: <a@b>": tolerated */
	if (mail)
		flags |= RM_SMTP_ADDR_NULL_OK | (o->ext & RM_SMTP_EXT_SMTPUTF8 ? RM_SMTP_ADDR_UTF8 : 0);
	else
		flags |= RM_SMTP_ADDR_POSTMASTER | (o->smtputf8 ? RM_SMTP_ADDR_UTF8 : 0);
	c->addr_err = rm_smtp_path_parse(s + pos, len - pos, flags, &o->addr, &c->path, &used);
	if (c->addr_err != RM_SMTP_ADDR_OK)
		return path_error(c->addr_err, mail);
	pos += used;
	if (pos < len && s[pos] != ' ')
		return RM_SMTP_E_AFTER_PATH;
	err = parse_params(s, len, pos, o, c);
	if (err != RM_SMTP_OK)
		return err;
	if (mail && c->path.utf8 && !c->smtputf8) {
		c->addr_err = RM_SMTP_ADDR_E_UTF8;
		return RM_SMTP_E_SENDER_UTF8;
	}
	return RM_SMTP_OK;
}

/* BDAT SP 1*DIGIT [SP "LAST"], from after the verb. */
static enum rm_smtp_cmd_err parse_bdat(struct rm_smtp_span arg, bool has_arg,
				       struct rm_smtp_cmd *c)
{
	const uint8_t *sp = has_arg ? memchr(arg.ptr, ' ', arg.len) : NULL;
	struct rm_smtp_span size = span(arg.ptr, sp != NULL ? (size_t)(sp - arg.ptr) : arg.len);
	bool overflow;

	if (!has_arg || !parse_digits(size, &c->bdat_bytes, &overflow) || overflow)
		return RM_SMTP_E_BDAT_SYNTAX;
	if (sp != NULL) {
		if (!span_is(span(sp + 1, arg.len - size.len - 1), "LAST"))
			return RM_SMTP_E_BDAT_SYNTAX;
		c->bdat_last = true;
	}
	return RM_SMTP_OK;
}

/* "=" or base64 (RFC 4648 alphabet, padded to a multiple of 4). */
static bool initial_response_valid(struct rm_smtp_span r)
{
	size_t pad = 0;

	if (r.len == 1 && r.ptr[0] == '=')
		return true;
	if (r.len == 0 || r.len % 4 != 0)
		return false;
	for (size_t i = 0; i < r.len; i++) {
		uint8_t ch = r.ptr[i];

		if (ch == '=') {
			pad++;
			continue;
		}
		if (pad > 0 || !(is_alnum(ch) || ch == '+' || ch == '/'))
			return false;
	}
	return pad <= 2;
}

/* AUTH SP mechanism [SP initial-response], from after the verb. */
static enum rm_smtp_cmd_err parse_auth(struct rm_smtp_span arg, bool has_arg,
				       struct rm_smtp_cmd *c)
{
	const uint8_t *sp = has_arg ? memchr(arg.ptr, ' ', arg.len) : NULL;
	struct rm_smtp_span mech = span(arg.ptr, sp != NULL ? (size_t)(sp - arg.ptr) : arg.len);

	if (!has_arg || mech.len == 0 || mech.len > RM_SMTP_SASL_MECH_BYTES_MAX)
		return RM_SMTP_E_AUTH_SYNTAX;
	for (size_t i = 0; i < mech.len; i++)
		if (!is_alnum(mech.ptr[i]) && mech.ptr[i] != '-' && mech.ptr[i] != '_')
			return RM_SMTP_E_AUTH_SYNTAX;
	c->auth_mech = mech;
	if (sp == NULL)
		return RM_SMTP_OK;

	struct rm_smtp_span resp = span(sp + 1, arg.len - mech.len - 1);

	if (resp.len == 0 || memchr(resp.ptr, ' ', resp.len) != NULL)
		return RM_SMTP_E_AUTH_SYNTAX;
	if (!initial_response_valid(resp))
		return RM_SMTP_E_AUTH_RESPONSE;
	c->auth_initial = resp;
	return RM_SMTP_OK;
}

/* Control bytes never, non-ASCII only where a path may be. */
static bool chars_ok(const uint8_t *s, size_t len, bool high_ok)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t ch = s[i];

		if (ch < 32 || ch == 127 || (ch >= 128 && !high_ok))
			return false;
	}
	return true;
}

static enum rm_smtp_cmd_err parse_verb_args(const uint8_t *s, size_t len, size_t vlen,
					    const struct rm_smtp_cmd_opts *o, struct rm_smtp_cmd *c)
{
	bool has_arg = len > vlen;
	struct rm_smtp_span arg = c->arg;

	switch (c->verb) {
	case RM_SMTP_VERB_DATA:
	case RM_SMTP_VERB_RSET:
	case RM_SMTP_VERB_QUIT:
	case RM_SMTP_VERB_STARTTLS:
		return has_arg ? RM_SMTP_E_NO_ARGS : RM_SMTP_OK;
	case RM_SMTP_VERB_VRFY:
	case RM_SMTP_VERB_EXPN:
		if (!has_arg)
			return RM_SMTP_E_ARG_MISSING;
		/* fall through */
	case RM_SMTP_VERB_NOOP:
	case RM_SMTP_VERB_HELP:
		if (has_arg && (arg.len == 0 || arg.ptr[0] == ' ' || arg.ptr[arg.len - 1] == ' '))
			return RM_SMTP_E_ARG_SYNTAX;
		return RM_SMTP_OK;
	case RM_SMTP_VERB_EHLO:
	case RM_SMTP_VERB_HELO:
		if (!has_arg || arg.len == 0)
			return RM_SMTP_E_HELO_SYNTAX;
		c->addr_err = rm_smtp_domain_parse(arg.ptr, arg.len,
						   o->addr_flags & RM_SMTP_ADDR_TRAILING_DOT,
						   &o->addr, &c->helo);
		return c->addr_err == RM_SMTP_ADDR_OK ? RM_SMTP_OK : RM_SMTP_E_HELO_DOMAIN;
	case RM_SMTP_VERB_MAIL:
	case RM_SMTP_VERB_RCPT:
		return parse_mail_rcpt(s, len, vlen, o, c);
	case RM_SMTP_VERB_BDAT:
		return parse_bdat(arg, has_arg, c);
	case RM_SMTP_VERB_AUTH:
		return parse_auth(arg, has_arg, c);
	default:
		rm_panic("smtp_cmd: verb %d", (int)c->verb);
	}
}

enum rm_smtp_cmd_err rm_smtp_cmd_parse(const uint8_t *line, size_t len,
				       const struct rm_smtp_cmd_opts *o, struct rm_smtp_cmd *out)
{
	const uint8_t *sp;
	size_t vlen;

	memset(out, 0, sizeof(*out));
	if (len == 0)
		return out->err = RM_SMTP_E_EMPTY;
	sp = memchr(line, ' ', len);
	vlen = sp != NULL ? (size_t)(sp - line) : len;
	out->verb_text = span(line, vlen);
	out->verb = verb_lookup(line, vlen);
	if (out->verb == RM_SMTP_VERB_UNKNOWN)
		return out->err = RM_SMTP_E_UNKNOWN_VERB;
	if (!chars_ok(line, len, out->verb == RM_SMTP_VERB_MAIL || out->verb == RM_SMTP_VERB_RCPT))
		return out->err = RM_SMTP_E_BAD_CHAR;
	if (len > vlen)
		out->arg = span(line + vlen + 1, len - vlen - 1);
	return out->err = parse_verb_args(line, len, vlen, o, out);
}
