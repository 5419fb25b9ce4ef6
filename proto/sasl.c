/*
 * NAME
 *	sasl - base64 and the SASL PLAIN and LOGIN messages (SMTP AUTH)
 * SUMMARY
 *	See proto/sasl.h for the interface.
 * DESCRIPTION
 *	Base64 decoding looks every character up in one 256-entry table whose
 *	valid entries carry bit 7, so a quartet is checked with one AND of its
 *	four entries instead of four comparisons.  The output length is known
 *	from the input length and the padding before anything is decoded, so
 *	a short buffer is refused before a byte is written, and the loop over
 *	the quartets writes exactly that many bytes: it cannot overrun.  The
 *	last quartet, the only one that may hold '=', is decoded on its own,
 *	where its unused bits are checked.
 *
 *	The PLAIN parser finds the NULs with memchr and runs each field's
 *	checks in turn; UTF-8 is proto/smtp_addr's validator.  Every loop here
 *	walks its input forward once and ends at its end.
 * DIAGNOSTICS
 *	See the header.
 */
#include <limits.h>
#include <string.h>

#include "core/log.h"
#include "proto/sasl.h"
#include "proto/smtp_addr.h"

/* Bit 7: a base64 character; bits 0-5: its value.  0: anything else ('=' included). */
#define V(v) (uint8_t)(0x80u | (v))
static const uint8_t b64_dec[256] = {
	['A'] = V(0), ['B'] = V(1), ['C'] = V(2), ['D'] = V(3), ['E'] = V(4), ['F'] = V(5),
	['G'] = V(6), ['H'] = V(7), ['I'] = V(8), ['J'] = V(9), ['K'] = V(10), ['L'] = V(11),
	['M'] = V(12), ['N'] = V(13), ['O'] = V(14), ['P'] = V(15), ['Q'] = V(16), ['R'] = V(17),
	['S'] = V(18), ['T'] = V(19), ['U'] = V(20), ['V'] = V(21), ['W'] = V(22), ['X'] = V(23),
	['Y'] = V(24), ['Z'] = V(25), ['a'] = V(26), ['b'] = V(27), ['c'] = V(28), ['d'] = V(29),
	['e'] = V(30), ['f'] = V(31), ['g'] = V(32), ['h'] = V(33), ['i'] = V(34), ['j'] = V(35),
	['k'] = V(36), ['l'] = V(37), ['m'] = V(38), ['n'] = V(39), ['o'] = V(40), ['p'] = V(41),
	['q'] = V(42), ['r'] = V(43), ['s'] = V(44), ['t'] = V(45), ['u'] = V(46), ['v'] = V(47),
	['w'] = V(48), ['x'] = V(49), ['y'] = V(50), ['z'] = V(51), ['0'] = V(52), ['1'] = V(53),
	['2'] = V(54), ['3'] = V(55), ['4'] = V(56), ['5'] = V(57), ['6'] = V(58), ['7'] = V(59),
	['8'] = V(60), ['9'] = V(61), ['+'] = V(62), ['/'] = V(63),
};
#undef V

static const char b64_enc[64] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const char *const err_texts[RM_SASL_E_COUNT] = {
	[RM_SASL_OK] = "ok",
	[RM_SASL_E_EMPTY] = "empty PLAIN message",
	[RM_SASL_E_NUL_MISSING] = "PLAIN message without two NUL separators",
	[RM_SASL_E_NUL_EXTRA] = "PLAIN message with more than two NULs",
	[RM_SASL_E_AUTHZID_TOO_LONG] = "authorization identity too long",
	[RM_SASL_E_AUTHZID_UTF8] = "authorization identity is not UTF-8",
	[RM_SASL_E_AUTHCID_EMPTY] = "empty authentication identity",
	[RM_SASL_E_AUTHCID_TOO_LONG] = "authentication identity too long",
	[RM_SASL_E_AUTHCID_UTF8] = "authentication identity is not UTF-8",
	[RM_SASL_E_PASSWD_EMPTY] = "empty password",
	[RM_SASL_E_PASSWD_TOO_LONG] = "password too long",
	[RM_SASL_E_PASSWD_UTF8] = "password is not UTF-8",
	[RM_SASL_E_BASE64] = "response is not base64",
	[RM_SASL_E_FIELD_EMPTY] = "empty LOGIN response",
	[RM_SASL_E_FIELD_TOO_LONG] = "LOGIN response too long",
	[RM_SASL_E_FIELD_NUL] = "LOGIN response with a NUL",
};

const char *rm_sasl_err_text(enum rm_sasl_err err)
{
	RM_ASSERT((unsigned)err < RM_SASL_E_COUNT);
	return err_texts[err];
}

size_t rm_base64_decoded_max(size_t len)
{
	return len / 4 * 3;
}

size_t rm_base64_encoded_len(size_t len)
{
	size_t groups = len / 3 + (len % 3 != 0);

	return groups > SIZE_MAX / 4 ? SIZE_MAX : groups * 4;
}

/*
 * The exact decoded length that the shape of the input (its length and its
 * trailing '=') promises, or -1.  The characters themselves are checked by
 * the decoder: "A===" has the shape of one byte and fails there.
 */
static ssize_t decoded_len(const uint8_t *in, size_t len)
{
	size_t pad;

	if (len % 4 != 0)
		return -1;
	if (len == 0)
		return 0;
	pad = in[len - 1] != '=' ? 0 : in[len - 2] != '=' ? 1 : 2;
	if (len / 4 * 3 - pad > (size_t)SSIZE_MAX)
		return -1;
	return (ssize_t)(len / 4 * 3 - pad);
}

/*
 * Decode the last quartet (which may end in padding) into out, writing
 * 3, 2 or 1 bytes; false if it is not base64 or its unused bits are set.
 */
static bool decode_last(const uint8_t *q, uint8_t *out)
{
	uint8_t a = b64_dec[q[0]], b = b64_dec[q[1]], c, d;

	if (!(a & b & 0x80))
		return false;
	if (q[2] == '=') {
		/* "xx==": 12 bits for 8; the low 4 bits of the second must be zero. */
		if (q[3] != '=' || (b & 0x0f) != 0)
			return false;
		out[0] = (uint8_t)((a & 0x3f) << 2 | (b & 0x3f) >> 4);
		return true;
	}
	c = b64_dec[q[2]];
	if (q[3] == '=') {
		/* "xxx=": 18 bits for 16; the low 2 bits of the third must be zero. */
		if (!(c & 0x80) || (c & 0x03) != 0)
			return false;
		out[0] = (uint8_t)((a & 0x3f) << 2 | (b & 0x3f) >> 4);
		out[1] = (uint8_t)((b & 0x0f) << 4 | (c & 0x3f) >> 2);
		return true;
	}
	d = b64_dec[q[3]];
	if (!(c & d & 0x80))
		return false;
	out[0] = (uint8_t)((a & 0x3f) << 2 | (b & 0x3f) >> 4);
	out[1] = (uint8_t)((b & 0x0f) << 4 | (c & 0x3f) >> 2);
	out[2] = (uint8_t)((c & 0x03) << 6 | (d & 0x3f));
	return true;
}

/* Decode len (a non-zero multiple of 4) bytes into out, which has room for all of it. */
static bool decode_into(const uint8_t *in, size_t len, uint8_t *out)
{
	size_t quartets = len / 4;

	for (size_t i = 0; i + 1 < quartets; i++) {
		const uint8_t *q = in + 4 * i;
		uint8_t a = b64_dec[q[0]], b = b64_dec[q[1]], c = b64_dec[q[2]], d = b64_dec[q[3]];
		uint32_t v;

		if (!(a & b & c & d & 0x80))
			return false;
		v = (uint32_t)(a & 0x3f) << 18 | (uint32_t)(b & 0x3f) << 12 |
		    (uint32_t)(c & 0x3f) << 6 | (uint32_t)(d & 0x3f);
		out[3 * i] = (uint8_t)(v >> 16);
		out[3 * i + 1] = (uint8_t)(v >> 8);
		out[3 * i + 2] = (uint8_t)v;
	}
	return decode_last(in + len - 4, out + 3 * (quartets - 1));
}

/* Whether in is strict base64, without writing anything (for a result too big to hold). */
static bool valid_b64(const uint8_t *in, size_t len)
{
	uint8_t scratch[3];

	if (decoded_len(in, len) < 0)
		return false;
	if (len == 0)
		return true;
	for (size_t i = 0; i + 4 < len; i += 4)
		if (!(b64_dec[in[i]] & b64_dec[in[i + 1]] & b64_dec[in[i + 2]] & b64_dec[in[i + 3]] &
		      0x80))
			return false;
	return decode_last(in + len - 4, scratch);
}

ssize_t rm_base64_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
	ssize_t n = decoded_len(in, len);

	if (n <= 0)
		return n;
	if ((size_t)n > cap || !decode_into(in, len, out))
		return -1;
	return n;
}

ssize_t rm_base64_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
	size_t n = rm_base64_encoded_len(len), full = len / 3, o = 0;

	if (n == SIZE_MAX || n > cap || n > (size_t)SSIZE_MAX)
		return -1;
	for (size_t i = 0; i < full; i++, o += 4) {
		const uint8_t *t = in + 3 * i;
		uint32_t v = (uint32_t)t[0] << 16 | (uint32_t)t[1] << 8 | t[2];

		out[o] = b64_enc[v >> 18];
		out[o + 1] = b64_enc[(v >> 12) & 0x3f];
		out[o + 2] = b64_enc[(v >> 6) & 0x3f];
		out[o + 3] = b64_enc[v & 0x3f];
	}
	if (len % 3 != 0) {
		const uint8_t *t = in + 3 * full;
		uint32_t v = (uint32_t)t[0] << 16 | (len % 3 == 2 ? (uint32_t)t[1] << 8 : 0);

		out[o] = b64_enc[v >> 18];
		out[o + 1] = b64_enc[(v >> 12) & 0x3f];
		out[o + 2] = len % 3 == 2 ? b64_enc[(v >> 6) & 0x3f] : '=';
		out[o + 3] = '=';
	}
	return (ssize_t)n;
}

static struct rm_sasl_span span(const uint8_t *p, size_t n)
{
	return (struct rm_sasl_span){ p, n };
}

enum rm_sasl_err rm_sasl_plain_parse(const uint8_t *msg, size_t len, struct rm_sasl_plain *out)
{
	const uint8_t *nul1, *nul2, *end = msg + len;

	memset(out, 0, sizeof(*out));
	if (len == 0)
		return RM_SASL_E_EMPTY;
	nul1 = memchr(msg, 0, len);
	if (nul1 == NULL)
		return RM_SASL_E_NUL_MISSING;
	nul2 = memchr(nul1 + 1, 0, (size_t)(end - nul1 - 1));
	if (nul2 == NULL)
		return RM_SASL_E_NUL_MISSING;
	if (memchr(nul2 + 1, 0, (size_t)(end - nul2 - 1)) != NULL)
		return RM_SASL_E_NUL_EXTRA;
	out->authzid = span(msg, (size_t)(nul1 - msg));
	out->authcid = span(nul1 + 1, (size_t)(nul2 - nul1 - 1));
	out->passwd = span(nul2 + 1, (size_t)(end - nul2 - 1));

	if (out->authzid.len > RM_SASL_AUTHZID_BYTES_MAX)
		return RM_SASL_E_AUTHZID_TOO_LONG;
	if (!rm_smtp_utf8_valid(out->authzid.ptr, out->authzid.len))
		return RM_SASL_E_AUTHZID_UTF8;
	if (out->authcid.len == 0)
		return RM_SASL_E_AUTHCID_EMPTY;
	if (out->authcid.len > RM_SASL_AUTHCID_BYTES_MAX)
		return RM_SASL_E_AUTHCID_TOO_LONG;
	if (!rm_smtp_utf8_valid(out->authcid.ptr, out->authcid.len))
		return RM_SASL_E_AUTHCID_UTF8;
	if (out->passwd.len == 0)
		return RM_SASL_E_PASSWD_EMPTY;
	if (out->passwd.len > RM_SASL_PASSWD_BYTES_MAX)
		return RM_SASL_E_PASSWD_TOO_LONG;
	if (!rm_smtp_utf8_valid(out->passwd.ptr, out->passwd.len))
		return RM_SASL_E_PASSWD_UTF8;
	return RM_SASL_OK;
}

enum rm_sasl_err rm_sasl_login_field(const uint8_t *b64, size_t len, uint8_t *out, size_t cap,
				     size_t *out_len)
{
	ssize_t n;

	*out_len = 0;
	if (!valid_b64(b64, len))
		return RM_SASL_E_BASE64;
	n = decoded_len(b64, len);
	if (n == 0)
		return RM_SASL_E_FIELD_EMPTY;
	if ((size_t)n > cap)
		return RM_SASL_E_FIELD_TOO_LONG;
	/* Cannot fail: the input was checked above, and out has room. */
	RM_ASSERT(decode_into(b64, len, out));
	if (memchr(out, 0, (size_t)n) != NULL) {
		/* It may be a password: leave none of it behind. */
		explicit_bzero(out, (size_t)n);
		return RM_SASL_E_FIELD_NUL;
	}
	*out_len = (size_t)n;
	return RM_SASL_OK;
}

bool rm_sasl_is_cancel(const uint8_t *line, size_t len)
{
	return len == 1 && line[0] == '*';
}
