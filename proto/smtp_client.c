/*
 * NAME
 *	smtp_client - SMTP client codec: server replies, EHLO keywords,
 *	commands, dot-stuffed DATA
 * SUMMARY
 *	See proto/smtp_client.h for the interface.
 * DESCRIPTION
 *	The reply parser is a state machine over bytes, so that no byte of
 *	input is kept across calls except the few of a line's start that may
 *	be an enhanced code:
 *	  D0 D1 D2   the three digits of the code;
 *	  SEP        after them: '-', SP, CR or LF;
 *	  SEP_CR     "CCC" CR: only LF may follow;
 *	  HEAD       the line's first text bytes, held in p->head until they
 *	             are known to be, or not to be, an enhanced code: at the
 *	             first SP, at the line end, or when ten bytes (the longest
 *	             code and its SP) are in;
 *	  TEXT       the rest of the line, stored as it comes (fast path: a
 *	             run up to the next CR or LF at a time);
 *	  CR         a CR in HEAD or TEXT: LF ends the line, anything else
 *	             makes the CR a text byte and is read again in the state
 *	             the CR came from (p->cr_from);
 *	  ERR        terminal.
 *	A line's bytes are counted as they come and the count is checked at
 *	each one, so a too long line fails at the same byte however the input
 *	is cut.  When a reply is complete feed returns at once; the next feed
 *	clears it first (the caller still reads out->text until then).
 *
 *	The writers build into the caller's buffer through put(), which
 *	refuses (and fails the command) rather than pass cap; arguments are
 *	checked before anything is written.  The dot-stuffer emits at most
 *	two bytes per input byte and owes the second when cap ends between
 *	them; runs of ordinary bytes are copied whole.
 * DIAGNOSTICS
 *	See the header.
 */
#include <string.h>

#include "core/log.h"
#include "proto/smtp_addr.h"
#include "proto/smtp_client.h"

enum { ST_D0, ST_D1, ST_D2, ST_SEP, ST_SEP_CR, ST_HEAD, ST_TEXT, ST_CR, ST_ERR };

static const char *const err_texts[RM_SMTP_REPLYP_E_COUNT] = {
	[RM_SMTP_REPLYP_OK] = "ok",
	[RM_SMTP_REPLYP_E_SYNTAX] = "not a reply line (three digits, then SP, '-' or the line end)",
	[RM_SMTP_REPLYP_E_CODE] = "reply code out of range (2xx-5xx, second digit 0-5)",
	[RM_SMTP_REPLYP_E_CODE_CHANGED] = "reply code changed inside a multi-line reply",
	[RM_SMTP_REPLYP_E_LINE_TOO_LONG] = "reply line too long",
	[RM_SMTP_REPLYP_E_TOO_MANY_LINES] = "reply has too many lines",
};

const char *rm_smtp_replyp_err_text(enum rm_smtp_replyp_err err)
{
	RM_ASSERT((unsigned)err < RM_SMTP_REPLYP_E_COUNT);
	return err_texts[err];
}

static bool is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* RFC 5321 textstring: HT and 32-126. */
static bool is_text(uint8_t c)
{
	return c == '\t' || (c >= 32 && c <= 126);
}

/*
 * First CR or LF in [p, end), or end.  Eight bytes at a time: a byte of
 * v ^ 0x0d.. (0x0a..) is zero where v has a CR (LF), and (x - 0x01..) &
 * ~x & 0x80.. marks the lowest zero byte of x correctly (a borrow can
 * only mark bytes above it), which is the only one used.
 */
static const uint8_t *find_eol(const uint8_t *p, const uint8_t *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const uint64_t lo = 0x0101010101010101ull, hi = 0x8080808080808080ull;

	while (end - p >= 8) {
		uint64_t v, cr, lf, mark;

		memcpy(&v, p, 8);
		cr = v ^ (lo * '\r');
		lf = v ^ (lo * '\n');
		mark = (((cr - lo) & ~cr) | ((lf - lo) & ~lf)) & hi;
		if (mark != 0)
			return p + (__builtin_ctzll(mark) >> 3);
		p += 8;
	}
#endif
	while (p < end && *p != '\r' && *p != '\n')
		p++;
	return p;
}

/* ---- reply parser ------------------------------------------------------ */

static void reply_clear(struct rm_smtp_replyp *p)
{
	p->state = ST_D0;
	p->reset = false;
	p->last_line = false;
	p->line_bytes = 0;
	p->code = 0;
	p->line_code = 0;
	p->head_len = 0;
	p->lines = 0;
	p->replaced = 0;
	p->text_truncated = false;
	p->bare_lf = false;
	p->long_line = false;
	p->enhanced_len = 0;
	p->enhanced[0] = '\0';
	p->text_len = 0;
	p->text[0] = '\0';
}

void rm_smtp_replyp_init(struct rm_smtp_replyp *p, size_t line_bytes_max, unsigned lines_max)
{
	RM_ASSERT(line_bytes_max >= RM_SMTP_CLIENT_LINE_BYTES_MIN && lines_max >= 1);
	p->line_bytes_max = line_bytes_max;
	p->lines_max = lines_max;
	p->err = RM_SMTP_REPLYP_OK;
	p->cr_from = ST_TEXT;
	reply_clear(p);
}

enum rm_smtp_replyp_err rm_smtp_replyp_error(const struct rm_smtp_replyp *p)
{
	return p->err;
}

/* One text byte into the reply's text: sanitised, or dropped once it is full. */
static void text_byte(struct rm_smtp_replyp *p, uint8_t c)
{
	if (!is_text(c)) {
		c = '?';
		p->replaced++;
	}
	if (p->text_len < RM_SMTP_CLIENT_REPLY_BYTES_MAX)
		p->text[p->text_len++] = (char)c;
	else
		p->text_truncated = true;
}

/* The length of an RFC 3463 code of class `cls` at the start of h[0..n), or 0. */
static size_t enhanced_prefix(const uint8_t *h, size_t n, uint8_t cls)
{
	size_t i = 2;

	if (n < 5 || h[0] != cls || h[1] != '.')
		return 0;
	for (int part = 0; part < 2; part++) {
		size_t start = i;

		while (i < n && is_digit(h[i]) && i - start < 3)
			i++;
		if (i == start || (i < n && is_digit(h[i])))
			return 0;
		if (part == 0) {
			if (i >= n || h[i] != '.')
				return 0;
			i++;
		}
	}
	return i;
}

/*
 * The held head of a line is an enhanced code (then followed by its SP or
 * the line end) or text.  Only 2, 4 and 5 are RFC 3463 classes.
 */
static void head_decide(struct rm_smtp_replyp *p, bool at_end)
{
	unsigned cls = p->code / 100u;
	size_t n = p->head_len, k = 0;

	if (cls == 2 || cls == 4 || cls == 5)
		k = enhanced_prefix(p->head, n, (uint8_t)('0' + cls));
	if (k > 0 && ((at_end && k == n) || (k + 1 == n && p->head[k] == ' '))) {
		if (p->enhanced_len == 0) {
			memcpy(p->enhanced, p->head, k);
			p->enhanced[k] = '\0';
			p->enhanced_len = (uint8_t)k;
		}
	} else {
		for (size_t i = 0; i < n; i++)
			text_byte(p, p->head[i]);
	}
	p->head_len = 0;
}

static void head_byte(struct rm_smtp_replyp *p, uint8_t c)
{
	p->head[p->head_len++] = c;
	if (c == ' ' || p->head_len == sizeof(p->head)) {
		head_decide(p, false);
		p->state = ST_TEXT;
	}
}

static int fail(struct rm_smtp_replyp *p, enum rm_smtp_replyp_err err)
{
	p->err = err;
	p->state = ST_ERR;
	return -1;
}

/* The current line has ended (from state `from`): 1 when that ends the reply. */
static int line_end(struct rm_smtp_replyp *p, uint8_t from, bool bare)
{
	if (from == ST_HEAD)
		head_decide(p, true);
	if (bare)
		p->bare_lf = true;
	p->line_bytes = 0;
	p->state = ST_D0;
	if (p->last_line)
		return 1;
	/* Lines of the text are LF-separated; the separator counts as text. */
	if (p->text_len < RM_SMTP_CLIENT_REPLY_BYTES_MAX)
		p->text[p->text_len++] = '\n';
	else
		p->text_truncated = true;
	return 0;
}

/* One code digit: ranges on the first line, equality with it on the others. */
static int code_digit(struct rm_smtp_replyp *p, uint8_t c, unsigned idx)
{
	static const uint16_t weight[3] = { 100, 10, 1 };
	unsigned d = (unsigned)(c - '0');

	if (!is_digit(c))
		return fail(p, RM_SMTP_REPLYP_E_SYNTAX);
	if (p->lines > 1) {
		if (p->code / weight[idx] % 10 != d)
			return fail(p, RM_SMTP_REPLYP_E_CODE_CHANGED);
	} else if ((idx == 0 && (d < 2 || d > 5)) || (idx == 1 && d > 5)) {
		return fail(p, RM_SMTP_REPLYP_E_CODE);
	}
	p->line_code = (uint16_t)(p->line_code + d * weight[idx]);
	if (idx == 2 && p->lines == 1)
		p->code = p->line_code;
	return 0;
}

/* One byte: 0 to go on, 1 when it ends a reply, -1 on an error. */
static int step(struct rm_smtp_replyp *p, uint8_t c)
{
	if (++p->line_bytes > p->line_bytes_max)
		return fail(p, RM_SMTP_REPLYP_E_LINE_TOO_LONG);
	if (p->line_bytes > RM_SMTP_REPLY_LINE_BYTES_MAX)
		p->long_line = true;
	/* At most twice round: a CR that turns out to be text, then c in its old state. */
	for (int round = 0; round < 2; round++) {
		switch (p->state) {
		case ST_D0:
			p->lines++;
			p->line_code = 0;
			p->last_line = false;
			if (code_digit(p, c, 0) < 0)
				return -1;
			p->state = ST_D1;
			return 0;
		case ST_D1:
			if (code_digit(p, c, 1) < 0)
				return -1;
			p->state = ST_D2;
			return 0;
		case ST_D2:
			if (code_digit(p, c, 2) < 0)
				return -1;
			p->state = ST_SEP;
			return 0;
		case ST_SEP:
			if (c == '-') {
				/* A continuation promises another line. */
				if (p->lines >= p->lines_max)
					return fail(p, RM_SMTP_REPLYP_E_TOO_MANY_LINES);
				p->state = ST_HEAD;
				p->head_len = 0;
				return 0;
			}
			p->last_line = true;
			if (c == ' ') {
				p->state = ST_HEAD;
				p->head_len = 0;
				return 0;
			}
			if (c == '\r') {
				p->state = ST_SEP_CR;
				return 0;
			}
			if (c == '\n')
				return line_end(p, ST_SEP, true);
			return fail(p, RM_SMTP_REPLYP_E_SYNTAX);
		case ST_SEP_CR:
			if (c != '\n')
				return fail(p, RM_SMTP_REPLYP_E_SYNTAX);
			return line_end(p, ST_SEP, false);
		case ST_HEAD:
		case ST_TEXT:
			if (c == '\r') {
				p->cr_from = p->state;
				p->state = ST_CR;
				return 0;
			}
			if (c == '\n')
				return line_end(p, p->state, true);
			if (p->state == ST_HEAD)
				head_byte(p, c);
			else
				text_byte(p, c);
			return 0;
		case ST_CR:
			if (c == '\n')
				return line_end(p, p->cr_from, false);
			/* The CR was text; read c again where the CR came from. */
			p->state = p->cr_from;
			if (p->state == ST_HEAD)
				head_byte(p, '\r');
			else
				text_byte(p, '\r');
			break;
		default:
			return -1;
		}
	}
	/* c is in HEAD or TEXT after a CR, and the round above handles every byte. */
	rm_panic("smtp_client: reply parser state %u", (unsigned)p->state);
}

static void reply_out(const struct rm_smtp_replyp *p, struct rm_smtp_server_reply *out)
{
	out->complete = true;
	out->code = p->code;
	memcpy(out->enhanced, p->enhanced, sizeof(out->enhanced));
	out->text = p->text;
	out->text_len = p->text_len;
	out->lines = p->lines;
	out->replaced = p->replaced;
	out->text_truncated = p->text_truncated;
	out->bare_lf = p->bare_lf;
	out->long_line = p->long_line;
}

size_t rm_smtp_replyp_feed(struct rm_smtp_replyp *p, const uint8_t *in, size_t len,
			   struct rm_smtp_server_reply *out)
{
	size_t i = 0;

	memset(out, 0, sizeof(*out));
	RM_ASSERT(in != NULL || len == 0);
	if (p->err != RM_SMTP_REPLYP_OK)
		return 0;
	if (p->reset)
		reply_clear(p);
	while (i < len) {
		int r;

		if (p->state == ST_TEXT) {
			/* Fast path: the run of text before the next CR or LF, within the line limit. */
			const uint8_t *eol = find_eol(in + i, in + len);
			size_t run = (size_t)(eol - (in + i)), room = p->line_bytes_max - p->line_bytes;

			if (run > room)
				run = room;
			if (p->line_bytes + run > RM_SMTP_REPLY_LINE_BYTES_MAX)
				p->long_line = true;
			p->line_bytes += run;
			for (size_t k = 0; k < run; k++)
				text_byte(p, in[i + k]);
			i += run;
			if (i == len)
				break;
		}
		r = step(p, in[i++]);
		if (r < 0)
			return i;
		if (r > 0) {
			p->text[p->text_len] = '\0';
			p->reset = true;
			reply_out(p, out);
			return i;
		}
	}
	return i;
}

/* ---- EHLO -------------------------------------------------------------- */

/* s[0..n) is the upper-case word w, in any case. */
static bool word_is(const char *s, size_t n, const char *w)
{
	size_t i = 0;

	for (; i < n && w[i] != '\0'; i++) {
		char c = s[i];

		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c != w[i])
			return false;
	}
	return i == n && w[i] == '\0';
}

static uint32_t auth_mech(const char *s, size_t n)
{
	if (word_is(s, n, "PLAIN"))
		return RM_SMTP_AUTH_MECH_PLAIN;
	if (word_is(s, n, "LOGIN"))
		return RM_SMTP_AUTH_MECH_LOGIN;
	return 0;
}

/* SIZE's parameter: digits, saturating; 0 (no limit known) if not a number. */
static uint64_t size_value(const char *s, size_t n)
{
	uint64_t v = 0;

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned d = (unsigned)(uint8_t)s[i] - '0';

		if (d > 9)
			return 0;
		v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
	}
	return v;
}

/* The length first, so most lines are told from most keywords without a letter read. */
#define WORD(w, bit) { w, sizeof(w) - 1, bit }
static const struct {
	const char *name;
	size_t len;
	uint32_t bit;
} ehlo_words[] = {
	WORD("PIPELINING", RM_SMTP_EHLO_PIPELINING),
	WORD("SIZE", RM_SMTP_EHLO_SIZE),
	WORD("8BITMIME", RM_SMTP_EHLO_8BITMIME),
	WORD("SMTPUTF8", RM_SMTP_EHLO_SMTPUTF8),
	WORD("CHUNKING", RM_SMTP_EHLO_CHUNKING),
	WORD("BINARYMIME", RM_SMTP_EHLO_BINARYMIME),
	WORD("DSN", RM_SMTP_EHLO_DSN),
	WORD("ENHANCEDSTATUSCODES", RM_SMTP_EHLO_ENHANCEDSTATUSCODES),
	WORD("STARTTLS", RM_SMTP_EHLO_STARTTLS),
	WORD("AUTH", RM_SMTP_EHLO_AUTH),
};
#undef WORD

/* One ehlo-line s[0..n): keyword, then SP-separated parameters. */
static void ehlo_line(const char *s, size_t n, struct rm_smtp_ehlo *out)
{
	size_t i = 0, kw_len, eq;
	uint32_t bit = 0;
	bool first_param = true;

	while (i < n && s[i] != ' ')
		i++;
	kw_len = i;
	/* "AUTH=LOGIN PLAIN": the keyword with its first mechanism. */
	for (eq = 0; eq < kw_len && s[eq] != '='; eq++)
		;
	if (eq < kw_len) {
		if (!word_is(s, eq, "AUTH"))
			return;
		out->ext |= RM_SMTP_EHLO_AUTH;
		out->auth_mechs |= auth_mech(s + eq + 1, kw_len - eq - 1);
		bit = RM_SMTP_EHLO_AUTH;
	} else {
		for (size_t k = 0; k < sizeof(ehlo_words) / sizeof(ehlo_words[0]); k++) {
			if (kw_len == ehlo_words[k].len && word_is(s, kw_len, ehlo_words[k].name)) {
				bit = ehlo_words[k].bit;
				break;
			}
		}
		if (bit == 0)
			return;
		out->ext |= bit;
	}
	/* Parameters; more than one SP between them is tolerated. */
	while (i < n) {
		size_t start;

		while (i < n && s[i] == ' ')
			i++;
		start = i;
		while (i < n && s[i] != ' ')
			i++;
		if (i == start)
			break;
		if (bit == RM_SMTP_EHLO_AUTH)
			out->auth_mechs |= auth_mech(s + start, i - start);
		else if (bit == RM_SMTP_EHLO_SIZE && first_param)
			out->size_bytes_max = size_value(s + start, i - start);
		first_param = false;
	}
}

void rm_smtp_ehlo_parse(const struct rm_smtp_server_reply *r, struct rm_smtp_ehlo *out)
{
	const char *s = r->text, *end;
	unsigned line = 0;

	memset(out, 0, sizeof(*out));
	if (!r->complete || r->code != 250 || s == NULL)
		return;
	end = s + r->text_len;
	/* Each round takes one line; a reply has at most r->lines of them. */
	while (s <= end && line < r->lines) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		const char *le = nl != NULL ? nl : end;

		/* A truncated text's last line may be cut: it is not read. */
		if (nl == NULL && r->text_truncated)
			break;
		if (line > 0)
			ehlo_line(s, (size_t)(le - s), out);
		line++;
		if (nl == NULL)
			break;
		s = nl + 1;
	}
}

enum rm_smtp_mail_check rm_smtp_mail_check(const struct rm_smtp_mail_args *m,
					   const struct rm_smtp_ehlo *e)
{
	const uint32_t binary = RM_SMTP_EHLO_BINARYMIME | RM_SMTP_EHLO_CHUNKING;

	if (m->body == RM_SMTP_BODY_BINARYMIME && (e->ext & binary) != binary)
		return RM_SMTP_MAIL_E_BINARYMIME;
	if (m->smtputf8 && !(e->ext & RM_SMTP_EHLO_SMTPUTF8))
		return RM_SMTP_MAIL_E_SMTPUTF8;
	if ((e->ext & RM_SMTP_EHLO_SIZE) && e->size_bytes_max != 0 && m->size_bytes > e->size_bytes_max)
		return RM_SMTP_MAIL_E_SIZE;
	if (m->body == RM_SMTP_BODY_8BITMIME && !(e->ext & RM_SMTP_EHLO_8BITMIME))
		return RM_SMTP_MAIL_E_8BITMIME;
	return RM_SMTP_MAIL_OK;
}

/* ---- command writers ----------------------------------------------------- */

struct cmd {
	uint8_t *buf;
	size_t cap;
	size_t len;
	bool failed;
};

static void put(struct cmd *c, const void *p, size_t n)
{
	if (c->failed || c->cap - c->len < n) {
		c->failed = true;
		return;
	}
	if (n == 0)
		return;	/* p may be NULL then (an empty argument) */
	memcpy(c->buf + c->len, p, n);
	c->len += n;
}

static void put_str(struct cmd *c, const char *s)
{
	put(c, s, strlen(s));
}

static void put_u64(struct cmd *c, uint64_t v)
{
	char d[20];
	size_t n = 0;

	do {
		d[sizeof(d) - ++n] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	put(c, d + sizeof(d) - n, n);
}

static ssize_t finish(struct cmd *c)
{
	put(c, "\r\n", 2);
	return c->failed ? -1 : (ssize_t)c->len;
}

static ssize_t fixed(uint8_t *buf, size_t cap, const char *line)
{
	struct cmd c = { buf, cap, 0, false };

	put_str(&c, line);
	return finish(&c);
}

/*
 * A stored mailbox: exactly one RFC 5321 Mailbox, so nothing can follow it;
 * and no '<' or '>' even quoted, so that a server that reads the path up to
 * the first '>' (not every one parses quoted strings) sees the same path.
 */
static bool mailbox_ok(const char *s, size_t n, bool utf8)
{
	struct rm_smtp_path path;
	unsigned flags = RM_SMTP_ADDR_TRAILING_DOT | (utf8 ? RM_SMTP_ADDR_UTF8 : 0);

	if (n == 0 || memchr(s, '<', n) != NULL || memchr(s, '>', n) != NULL)
		return false;
	return rm_smtp_mailbox_parse((const uint8_t *)s, n, flags, NULL, &path) == RM_SMTP_ADDR_OK;
}

static bool xtext_ok(const char *s, size_t n, size_t max)
{
	size_t decoded;

	return n > 0 && n <= max && rm_smtp_xtext_valid((const uint8_t *)s, n, &decoded);
}

/* RFC 5322 atext: ALPHA, DIGIT and these. */
static bool is_atext(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
	       (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* ORCPT's value as the server side stores it: addr-type ";" xtext. */
static bool orcpt_ok(const char *s, size_t n)
{
	const char *semi = n > 0 ? memchr(s, ';', n) : NULL;
	size_t type_len;

	if (n > RM_SMTP_ORCPT_BYTES_MAX || semi == NULL)
		return false;
	type_len = (size_t)(semi - s);
	if (type_len == 0)
		return false;
	for (size_t i = 0; i < type_len; i++)
		if (!is_atext((uint8_t)s[i]))
			return false;
	return xtext_ok(semi + 1, n - type_len - 1, RM_SMTP_ORCPT_BYTES_MAX);
}

static ssize_t write_hello(uint8_t *buf, size_t cap, const char *verb, const char *domain)
{
	struct cmd c = { buf, cap, 0, false };
	struct rm_smtp_domain d;
	size_t n = strnlen(domain, RM_SMTP_DOMAIN_BYTES_MAX + 1);

	if (n == 0 || n > RM_SMTP_DOMAIN_BYTES_MAX ||
	    rm_smtp_domain_parse((const uint8_t *)domain, n, 0, NULL, &d) != RM_SMTP_ADDR_OK)
		return -1;
	put_str(&c, verb);
	put(&c, domain, n);
	return finish(&c);
}

ssize_t rm_smtp_write_ehlo(uint8_t *buf, size_t cap, const char *domain)
{
	return write_hello(buf, cap, "EHLO ", domain);
}

ssize_t rm_smtp_write_helo(uint8_t *buf, size_t cap, const char *domain)
{
	return write_hello(buf, cap, "HELO ", domain);
}

ssize_t rm_smtp_write_mail(uint8_t *buf, size_t cap, const struct rm_smtp_mail_args *m,
			   const struct rm_smtp_ehlo *e)
{
	struct cmd c = { buf, cap, 0, false };
	bool utf8 = m->smtputf8 && (e->ext & RM_SMTP_EHLO_SMTPUTF8);
	bool dsn = e->ext & RM_SMTP_EHLO_DSN;
	const uint32_t binary = RM_SMTP_EHLO_BINARYMIME | RM_SMTP_EHLO_CHUNKING;

	/* Every argument is checked, whether or not it is sent, before a byte is written. */
	if (m->reverse_path_len > 0 && !mailbox_ok(m->reverse_path, m->reverse_path_len, utf8))
		return -1;
	if ((unsigned)m->body > RM_SMTP_BODY_BINARYMIME || (unsigned)m->ret > RM_SMTP_RET_HDRS)
		return -1;
	if (m->body == RM_SMTP_BODY_BINARYMIME && (e->ext & binary) != binary)
		return -1;
	if (m->envid_len > 0 && !xtext_ok(m->envid, m->envid_len, RM_SMTP_ENVID_BYTES_MAX))
		return -1;

	put_str(&c, "MAIL FROM:<");
	put(&c, m->reverse_path, m->reverse_path_len);
	put_str(&c, ">");
	if (m->size_bytes > 0 && (e->ext & RM_SMTP_EHLO_SIZE)) {
		put_str(&c, " SIZE=");
		put_u64(&c, m->size_bytes);
	}
	if (m->body == RM_SMTP_BODY_BINARYMIME)
		put_str(&c, " BODY=BINARYMIME");
	else if (m->body != RM_SMTP_BODY_NONE && (e->ext & RM_SMTP_EHLO_8BITMIME))
		put_str(&c, m->body == RM_SMTP_BODY_7BIT ? " BODY=7BIT" : " BODY=8BITMIME");
	if (utf8)
		put_str(&c, " SMTPUTF8");
	if (dsn && m->ret != RM_SMTP_RET_NONE)
		put_str(&c, m->ret == RM_SMTP_RET_FULL ? " RET=FULL" : " RET=HDRS");
	if (dsn && m->envid_len > 0) {
		put_str(&c, " ENVID=");
		put(&c, m->envid, m->envid_len);
	}
	return finish(&c);
}

ssize_t rm_smtp_write_rcpt(uint8_t *buf, size_t cap, const struct rm_smtp_rcpt_args *r,
			   const struct rm_smtp_ehlo *e)
{
	static const struct {
		uint8_t bit;
		const char *name;
	} notify[] = {
		{ RM_SMTP_NOTIFY_SUCCESS, "SUCCESS" },
		{ RM_SMTP_NOTIFY_FAILURE, "FAILURE" },
		{ RM_SMTP_NOTIFY_DELAY, "DELAY" },
	};
	const uint8_t all = RM_SMTP_NOTIFY_NEVER | RM_SMTP_NOTIFY_SUCCESS | RM_SMTP_NOTIFY_FAILURE |
			    RM_SMTP_NOTIFY_DELAY;
	struct cmd c = { buf, cap, 0, false };
	bool dsn = e->ext & RM_SMTP_EHLO_DSN;

	if (!mailbox_ok(r->forward_path, r->forward_path_len, r->smtputf8))
		return -1;
	/* RFC 3461 4.1: NEVER excludes the others. */
	if ((r->notify & ~all) != 0 ||
	    ((r->notify & RM_SMTP_NOTIFY_NEVER) && r->notify != RM_SMTP_NOTIFY_NEVER))
		return -1;
	if (r->orcpt_len > 0 && !orcpt_ok(r->orcpt, r->orcpt_len))
		return -1;

	put_str(&c, "RCPT TO:<");
	put(&c, r->forward_path, r->forward_path_len);
	put_str(&c, ">");
	if (dsn && r->notify != 0) {
		put_str(&c, " NOTIFY=");
		if (r->notify == RM_SMTP_NOTIFY_NEVER) {
			put_str(&c, "NEVER");
		} else {
			bool comma = false;

			for (size_t k = 0; k < sizeof(notify) / sizeof(notify[0]); k++) {
				if (!(r->notify & notify[k].bit))
					continue;
				if (comma)
					put_str(&c, ",");
				put_str(&c, notify[k].name);
				comma = true;
			}
		}
	}
	if (dsn && r->orcpt_len > 0) {
		put_str(&c, " ORCPT=");
		put(&c, r->orcpt, r->orcpt_len);
	}
	return finish(&c);
}

ssize_t rm_smtp_write_data(uint8_t *buf, size_t cap)
{
	return fixed(buf, cap, "DATA");
}

ssize_t rm_smtp_write_bdat(uint8_t *buf, size_t cap, uint64_t bytes, bool last)
{
	struct cmd c = { buf, cap, 0, false };

	put_str(&c, "BDAT ");
	put_u64(&c, bytes);
	if (last)
		put_str(&c, " LAST");
	return finish(&c);
}

ssize_t rm_smtp_write_rset(uint8_t *buf, size_t cap)
{
	return fixed(buf, cap, "RSET");
}

ssize_t rm_smtp_write_quit(uint8_t *buf, size_t cap)
{
	return fixed(buf, cap, "QUIT");
}

ssize_t rm_smtp_write_starttls(uint8_t *buf, size_t cap)
{
	return fixed(buf, cap, "STARTTLS");
}

ssize_t rm_smtp_write_auth_plain(uint8_t *buf, size_t cap, const char *authzid,
				 const char *authcid, const char *passwd)
{
	uint8_t msg[RM_SASL_PLAIN_BYTES_MAX];
	struct cmd c = { buf, cap, 0, false };
	size_t zl = authzid != NULL ? strnlen(authzid, RM_SASL_AUTHZID_BYTES_MAX + 1) : 0;
	size_t cl = strnlen(authcid, RM_SASL_AUTHCID_BYTES_MAX + 1);
	size_t pl = strnlen(passwd, RM_SASL_PASSWD_BYTES_MAX + 1);
	size_t n = zl + 1 + cl + 1 + pl, b64 = rm_base64_encoded_len(n);
	ssize_t w;

	if (zl > RM_SASL_AUTHZID_BYTES_MAX || cl == 0 || cl > RM_SASL_AUTHCID_BYTES_MAX || pl == 0 ||
	    pl > RM_SASL_PASSWD_BYTES_MAX)
		return -1;
	put_str(&c, "AUTH PLAIN ");
	if (c.failed || cap - c.len < b64 + 2)
		return -1;
	/* RFC 4616: [authzid] NUL authcid NUL passwd. */
	if (zl > 0)
		memcpy(msg, authzid, zl);
	msg[zl] = '\0';
	memcpy(msg + zl + 1, authcid, cl);
	msg[zl + 1 + cl] = '\0';
	memcpy(msg + zl + 2 + cl, passwd, pl);
	w = rm_base64_encode(msg, n, (char *)buf + c.len, cap - c.len);
	explicit_bzero(msg, sizeof(msg));
	if (w < 0)
		return -1;
	c.len += (size_t)w;
	return finish(&c);
}

/* ---- dot-stuffing -------------------------------------------------------- */

void rm_smtp_dotstuff_init(struct rm_smtp_dotstuff *st)
{
	memset(st, 0, sizeof(*st));
	st->line_start = true;	/* the DATA command's CR LF */
}

/* Two output bytes; the second is owed when cap ends between them. */
static void emit2(struct rm_smtp_dotstuff *st, uint8_t *out, size_t cap, size_t *o, uint8_t a,
		  uint8_t b)
{
	out[(*o)++] = a;
	if (*o < cap)
		out[(*o)++] = b;
	else
		st->owed = b;
}

size_t rm_smtp_dotstuff_feed(struct rm_smtp_dotstuff *st, const uint8_t *in, size_t len,
			     uint8_t *out, size_t out_cap, size_t *out_len)
{
	size_t i = 0, o = 0;

	RM_ASSERT(in != NULL || len == 0);
	/* Each round writes a byte or consumes one: at most out_cap + len rounds. */
	while (o < out_cap) {
		uint8_t c;

		if (st->owed != 0) {
			out[o++] = st->owed;
			st->owed = 0;
			continue;
		}
		if (i == len)
			break;
		c = in[i];
		if (st->after_cr) {
			st->after_cr = false;
			if (c == '\n') {
				/* CR LF: its LF went out with the CR. */
				i++;
				continue;
			}
			st->bare_cr = true;
		}
		if (c == '\r' || c == '\n') {
			/*
			 * Every line end, CR LF, bare CR or bare LF, goes out as CR LF.
			 * A CR LF in this input is one step; a CR at its end waits for
			 * the next byte (after_cr) to know which it was.
			 */
			if (c == '\r' && i + 1 < len && in[i + 1] == '\n')
				i++;
			else if (c == '\r')
				st->after_cr = true;
			else
				st->bare_lf = true;
			emit2(st, out, out_cap, &o, '\r', '\n');
			st->line_start = true;
			i++;
		} else if (st->line_start && c == '.') {
			emit2(st, out, out_cap, &o, '.', '.');
			st->line_start = false;
			i++;
		} else {
			const uint8_t *eol = find_eol(in + i, in + len);
			size_t run = (size_t)(eol - (in + i));

			if (run > out_cap - o)
				run = out_cap - o;
			memcpy(out + o, in + i, run);
			o += run;
			i += run;
			st->line_start = false;
		}
	}
	/* An input that ends right after a CR: the LF, if it comes, is read next call. */
	if (o == out_cap && st->owed == 0 && i < len && st->after_cr && in[i] == '\n') {
		st->after_cr = false;
		i++;
	}
	st->in_bytes += i;
	st->out_bytes += o;
	*out_len = o;
	return i;
}

ssize_t rm_smtp_dotstuff_end(struct rm_smtp_dotstuff *st, uint8_t *out, size_t cap)
{
	static const uint8_t term[] = "\r\n.\r\n";
	size_t o = 0, tail = st->line_start ? 3 : 5;
	size_t need = (st->owed != 0 ? 1 : 0) + tail;

	if (cap < need)
		return -1;
	if (st->owed != 0) {
		out[o++] = st->owed;
		st->owed = 0;
	}
	memcpy(out + o, term + 5 - tail, tail);
	o += tail;
	if (st->after_cr)
		st->bare_cr = true;	/* the content ended with a CR */
	st->after_cr = false;
	st->line_start = true;
	st->out_bytes += o;
	return (ssize_t)o;
}
