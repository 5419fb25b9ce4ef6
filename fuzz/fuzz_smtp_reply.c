/*
 * NAME
 *	fuzz_smtp_reply - libFuzzer harness for proto/smtp_reply
 * DESCRIPTION
 *	Input layout: byte 0 and 1 a reply code (0..1023, so most are
 *	invalid), byte 2 picks an enhanced code from a list of good and bad
 *	ones (or none), byte 3 the line length limit (RM_SMTP_REPLY_LINE_BYTES_MIN
 *	- 1 and up, or the default), byte 4 the output buffer size, bit 7 of
 *	byte 2 the EHLO builder instead; then texts, each a length byte and
 *	that many bytes (any bytes: CR, LF, NUL included).
 *
 *	The reply is checked byte for byte against a model written here from
 *	RFC 5321 4.2 (every line "CCC-" but the last "CCC ", or "CCC" alone
 *	when it has nothing after the code; the enhanced code on every line;
 *	text outside HT and 32-126 as '?'; text cut into lines of at most the
 *	limit).  The builder must give exactly the model's bytes when they fit
 *	the buffer and the code is valid, and -1 otherwise; the buffer is a heap
 *	block of exactly that size, so ASan sees any write past it.  For EHLO
 *	the texts are the domain, the greeting and keywords; the builder must
 *	refuse exactly the inputs the model refuses.  In every reply a CR or
 *	LF appears only as a line's CRLF.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp_reply.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

enum { TEXTS_MAX = 16, MODEL_MAX = 16384 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const enhanced_codes[] = {
	NULL, "2.0.0", "4.3.1", "5.5.4", "5.1.10", "2.999.999", "5.0.0", "3.0.0", "2.0",
	"5.1000.1", "x.1.1", "", "5.5.4 ", "4..1", "2.0.0.0",
};

struct model {
	char buf[MODEL_MAX];
	size_t len;
	bool overflow;
};

static void model_put(struct model *m, const void *p, size_t n)
{
	if (m->len + n > sizeof(m->buf)) {
		m->overflow = true;
		return;
	}
	memcpy(m->buf + m->len, p, n);
	m->len += n;
}

static bool code_ok(unsigned code)
{
	return code >= 200 && code <= 599 && code / 10 % 10 <= 5;
}

/* class.subject.detail, 1-3 digits each, class = first digit of the code, none for 3xx. */
static bool enhanced_ok(const char *e, unsigned code)
{
	int parts = 0, digits = 0;

	if (e == NULL)
		return true;
	if (code / 100 == 3 || e[0] != (char)('0' + code / 100))
		return false;
	for (const char *p = e;; p++) {
		if (*p >= '0' && *p <= '9') {
			if (++digits > 3)
				return false;
		} else if (*p == '.' || *p == '\0') {
			if (digits == 0 || (parts == 0 && digits != 1))
				return false;
			parts++;
			digits = 0;
			if (*p == '\0')
				break;
		} else {
			return false;
		}
	}
	return parts == 3;
}

static void model_reply(struct model *m, unsigned code, const char *enh, size_t line_max,
			const uint8_t *const *texts, const size_t *lens, size_t n)
{
	char c3[3] = { (char)('0' + code / 100), (char)('0' + code / 10 % 10), (char)('0' + code % 10) };
	size_t elen = enh ? strlen(enh) : 0;
	size_t room = line_max - 4 - (elen ? elen + 1 : 0) - 2;
	size_t total = 0, li = 0;

	/* Count the lines first, so the last one is known. */
	for (size_t t = 0; t < n; t++)
		total += lens[t] == 0 ? 1 : (lens[t] + room - 1) / room;
	for (size_t t = 0; t < n; t++) {
		size_t off = 0;

		do {
			size_t take = lens[t] - off < room ? lens[t] - off : room;
			bool last = ++li == total;

			model_put(m, c3, 3);
			if (last && elen == 0 && take == 0) {
				model_put(m, "\r\n", 2);
				break;
			}
			model_put(m, last ? " " : "-", 1);
			if (elen) {
				model_put(m, enh, elen);
				if (take)
					model_put(m, " ", 1);
			}
			for (size_t i = 0; i < take; i++) {
				uint8_t c = texts[t][off + i];
				char o = c == '\t' || (c >= 32 && c <= 126) ? (char)c : '?';

				model_put(m, &o, 1);
			}
			model_put(m, "\r\n", 2);
			off += take;
		} while (off < lens[t]);
	}
}

static bool keyword_ok(const uint8_t *s, size_t len)
{
	size_t i = 0;

	if (len == 0)
		return false;
	for (; i < len && s[i] != ' '; i++) {
		bool alnum = (s[i] >= '0' && s[i] <= '9') || ((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z');

		if (!(alnum || (i > 0 && s[i] == '-')))
			return false;
	}
	if (i == 0)
		return false;
	while (i < len) {
		size_t start = ++i;	/* past the SP */

		while (i < len && s[i] >= 33 && s[i] <= 126)
			i++;
		if (i == start || (i < len && s[i] != ' '))
			return false;
	}
	return true;
}

/* Only CRLF pairs at line ends; each line at most line_max bytes. */
static void check_lines(const uint8_t *buf, size_t len, size_t line_max)
{
	size_t start = 0;

	for (size_t i = 0; i < len; i++) {
		if (buf[i] == '\r') {
			CHECK(i + 1 < len && buf[i + 1] == '\n');
			CHECK(i + 2 - start <= line_max);
			start = i + 2;
			i++;
		} else {
			CHECK(buf[i] != '\n');
		}
	}
	CHECK(start == len);
}

static char *cstr(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	CHECK(s != NULL);
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static void fuzz_ehlo(const uint8_t *const *texts, const size_t *lens, size_t n, uint8_t *buf,
		      size_t cap)
{
	char *domain, *greeting, *kw[TEXTS_MAX];
	size_t nk = n > 2 ? n - 2 : 0;
	bool ok = true;
	struct model m = { .len = 0 };
	ssize_t got;

	if (n < 1)
		return;
	domain = cstr(texts[0], lens[0]);
	greeting = n > 1 ? cstr(texts[1], lens[1]) : NULL;
	for (size_t k = 0; k < nk; k++)
		kw[k] = cstr(texts[k + 2], lens[k + 2]);

	/* The model, on the C strings (a NUL ends a text early, as it does for the builder). */
	size_t dlen = strlen(domain), glen = greeting ? strlen(greeting) : 0;

	ok = dlen > 0 && 4 + dlen + (glen ? glen + 1 : 0) + 2 <= RM_SMTP_REPLY_LINE_BYTES_MAX;
	for (size_t i = 0; i < dlen; i++)
		ok = ok && (uint8_t)domain[i] >= 33 && (uint8_t)domain[i] <= 126;
	for (size_t k = 0; k < nk; k++)
		ok = ok && keyword_ok((const uint8_t *)kw[k], strlen(kw[k])) &&
		     4 + strlen(kw[k]) + 2 <= RM_SMTP_REPLY_LINE_BYTES_MAX;
	if (ok) {
		model_put(&m, nk ? "250-" : "250 ", 4);
		model_put(&m, domain, dlen);
		if (glen) {
			model_put(&m, " ", 1);
			for (size_t i = 0; i < glen; i++) {
				uint8_t c = (uint8_t)greeting[i];
				char o = c == '\t' || (c >= 32 && c <= 126) ? (char)c : '?';

				model_put(&m, &o, 1);
			}
		}
		model_put(&m, "\r\n", 2);
		for (size_t k = 0; k < nk; k++) {
			model_put(&m, k + 1 < nk ? "250-" : "250 ", 4);
			model_put(&m, kw[k], strlen(kw[k]));
			model_put(&m, "\r\n", 2);
		}
	}
	got = rm_smtp_reply_ehlo(buf, cap, domain, greeting, (const char *const *)kw, nk);
	if (ok && !m.overflow && m.len <= cap) {
		CHECK(got == (ssize_t)m.len && memcmp(buf, m.buf, m.len) == 0);
		check_lines(buf, (size_t)got, RM_SMTP_REPLY_LINE_BYTES_MAX);
	} else {
		CHECK(got == -1 || m.overflow);
	}
	free(domain);
	free(greeting);
	for (size_t k = 0; k < nk; k++)
		free(kw[k]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 5)
		return 0;

	unsigned code = ((unsigned)data[0] << 8 | data[1]) % 1024;
	bool ehlo = data[2] & 0x80;
	const char *enh = enhanced_codes[(data[2] & 0x7f) % (sizeof(enhanced_codes) / sizeof(enhanced_codes[0]))];
	size_t line_max = data[3] == 255 ? RM_SMTP_REPLY_LINE_BYTES_MAX :
			  RM_SMTP_REPLY_LINE_BYTES_MIN - 1 + data[3];
	size_t cap = (size_t)data[4] * 8;
	const uint8_t *texts[TEXTS_MAX];
	size_t lens[TEXTS_MAX], n = 0, pos = 5;
	uint8_t *buf = malloc(cap ? cap : 1);

	CHECK(buf != NULL);
	while (pos < size && n < TEXTS_MAX) {
		size_t len = data[pos++];

		if (len > size - pos)
			len = size - pos;
		texts[n] = data + pos;
		lens[n++] = len;
		pos += len;
	}
	if (ehlo) {
		fuzz_ehlo(texts, lens, n, buf, cap);
		free(buf);
		return 0;
	}

	struct rm_smtp_reply r;
	struct model m = { .len = 0 };
	bool valid = code_ok(code) && enhanced_ok(enh, code);
	bool begun = rm_smtp_reply_begin(&r, buf, cap, code, enh);
	ssize_t got;

	CHECK(begun == valid);
	CHECK(rm_smtp_enhanced_valid(enh, code) == valid);
	r.line_bytes_max = line_max;
	for (size_t t = 0; t < n; t++)
		rm_smtp_reply_add(&r, (const char *)texts[t], lens[t]);
	got = rm_smtp_reply_end(&r);
	CHECK(r.len <= cap);
	if (!valid || n == 0 || line_max < RM_SMTP_REPLY_LINE_BYTES_MIN) {
		CHECK(got == -1);
	} else {
		model_reply(&m, code, enh, line_max, texts, lens, n);
		if (m.overflow || m.len > cap) {
			CHECK(got == -1);
		} else {
			CHECK(got == (ssize_t)m.len && memcmp(buf, m.buf, m.len) == 0);
			check_lines(buf, (size_t)got, line_max);
		}
	}
	free(buf);
	return 0;
}
