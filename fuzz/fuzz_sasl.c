/*
 * NAME
 *	fuzz_sasl - libFuzzer harness for proto/sasl
 * DESCRIPTION
 *	Input layout: byte 0 is a small output capacity (for the "too small a
 *	buffer" paths); the rest is the text, given to every function, each
 *	time as a heap copy of exact size and with output buffers of exact
 *	size, so ASan flags any read or write past them.
 *
 *	Invariants (any failure traps):
 *	- encode then decode gives the text back; the encoding has exactly
 *	  rm_base64_encoded_len bytes, of the alphabet, and no smaller buffer
 *	  takes it;
 *	- decoding the text as base64 either fails or gives at most
 *	  rm_base64_decoded_max bytes that encode back to exactly the text
 *	  (strict base64 has one encoding per content); one byte less of room
 *	  is refused, and a small capacity never gets more than it holds;
 *	- rm_sasl_plain_parse, on the text and on its decoding: every span
 *	  lies inside the input; on success the three fields and the two NULs
 *	  tile the input exactly, within the limits, authcid and passwd not
 *	  empty and none with a NUL; without two NULs no span is set;
 *	- rm_sasl_login_field agrees with rm_base64_decode: the same bytes
 *	  when it succeeds, no NUL, at most cap, and a length of 0 otherwise;
 *	- rm_sasl_is_cancel is exactly the one-byte line "*"; every error has
 *	  a text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/sasl.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *heap(size_t n)
{
	uint8_t *p = malloc(n ? n : 1);

	CHECK(p != NULL);
	return p;
}

static bool inside(struct rm_sasl_span s, const uint8_t *base, size_t len)
{
	return s.ptr >= base && s.len <= len && s.ptr + s.len <= base + len;
}

static bool b64_char(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/' || c == '=';
}

static void check_round_trip(const uint8_t *text, size_t len)
{
	size_t elen = rm_base64_encoded_len(len);
	char *enc = (char *)heap(elen);
	uint8_t *back = heap(len);

	CHECK(rm_base64_encode(text, len, enc, elen) == (ssize_t)elen);
	CHECK(elen % 4 == 0 && elen >= len);
	for (size_t i = 0; i < elen; i++)
		CHECK(b64_char((uint8_t)enc[i]));
	if (elen > 0)
		CHECK(rm_base64_encode(text, len, enc, elen - 1) == -1);
	CHECK(rm_base64_decode((const uint8_t *)enc, elen, back, len) == (ssize_t)len);
	CHECK(len == 0 || memcmp(back, text, len) == 0);
	free(enc);
	free(back);
}

static void check_plain(const uint8_t *msg, size_t len)
{
	uint8_t *copy = heap(len);
	struct rm_sasl_plain p;
	enum rm_sasl_err e;
	size_t nuls = 0;

	memcpy(copy, msg, len);
	e = rm_sasl_plain_parse(copy, len, &p);
	CHECK((unsigned)e < RM_SASL_E_COUNT && rm_sasl_err_text(e) != NULL);
	for (size_t i = 0; i < len; i++)
		nuls += copy[i] == 0;
	if (e == RM_SASL_E_EMPTY || e == RM_SASL_E_NUL_MISSING || e == RM_SASL_E_NUL_EXTRA) {
		CHECK(p.authzid.ptr == NULL && p.authcid.ptr == NULL && p.passwd.ptr == NULL);
		CHECK(e != RM_SASL_E_NUL_EXTRA || nuls > 2);
		CHECK(e == RM_SASL_E_NUL_EXTRA || nuls < 2);
	} else {
		CHECK(nuls == 2);
		CHECK(inside(p.authzid, copy, len) && inside(p.authcid, copy, len) &&
		      inside(p.passwd, copy, len));
		/* authzid NUL authcid NUL passwd, end to end. */
		CHECK(p.authzid.ptr == copy && p.authzid.ptr[p.authzid.len] == 0);
		CHECK(p.authcid.ptr == p.authzid.ptr + p.authzid.len + 1);
		CHECK(p.authcid.ptr[p.authcid.len] == 0);
		CHECK(p.passwd.ptr == p.authcid.ptr + p.authcid.len + 1);
		CHECK(p.passwd.ptr + p.passwd.len == copy + len);
	}
	if (e == RM_SASL_OK) {
		CHECK(p.authzid.len <= RM_SASL_AUTHZID_BYTES_MAX);
		CHECK(p.authcid.len >= 1 && p.authcid.len <= RM_SASL_AUTHCID_BYTES_MAX);
		CHECK(p.passwd.len >= 1 && p.passwd.len <= RM_SASL_PASSWD_BYTES_MAX);
		CHECK(len <= RM_SASL_PLAIN_BYTES_MAX);
		CHECK(memchr(p.passwd.ptr, 0, p.passwd.len) == NULL);
	}
	free(copy);
}

static void check_decode(const uint8_t *text, size_t len, size_t small_cap)
{
	size_t max = rm_base64_decoded_max(len);
	uint8_t *out = heap(max), *small = heap(small_cap);
	ssize_t n = rm_base64_decode(text, len, out, max), m;

	CHECK(n >= -1 && (n < 0 || (size_t)n <= max));
	m = rm_base64_decode(text, len, small, small_cap);
	if (n >= 0) {
		size_t elen = rm_base64_encoded_len((size_t)n);
		char *enc = (char *)heap(elen);

		/* Canonical: the one encoding of what it decodes to is the text itself. */
		CHECK(elen == len);
		CHECK(rm_base64_encode(out, (size_t)n, enc, elen) == (ssize_t)len);
		CHECK(len == 0 || memcmp(enc, text, len) == 0);
		free(enc);
		if (n > 0) {
			uint8_t *tight = heap((size_t)n - 1);

			CHECK(rm_base64_decode(text, len, tight, (size_t)n - 1) == -1);
			free(tight);
		}
		CHECK(m == ((size_t)n <= small_cap ? n : -1));
		CHECK(m <= 0 || memcmp(small, out, (size_t)m) == 0);
		check_plain(out, (size_t)n);
	} else {
		CHECK(m == -1);
	}
	free(out);
	free(small);
}

static void check_login(const uint8_t *text, size_t len, size_t cap)
{
	uint8_t *out = heap(cap), *ref = heap(rm_base64_decoded_max(len));
	size_t out_len = 12345;
	enum rm_sasl_err e = rm_sasl_login_field(text, len, out, cap, &out_len);
	ssize_t n = rm_base64_decode(text, len, ref, rm_base64_decoded_max(len));

	CHECK((unsigned)e < RM_SASL_E_COUNT && rm_sasl_err_text(e) != NULL);
	if (e == RM_SASL_OK) {
		CHECK(n > 0 && (size_t)n == out_len && out_len <= cap);
		CHECK(memcmp(out, ref, out_len) == 0);
		CHECK(memchr(out, 0, out_len) == NULL);
	} else {
		CHECK(out_len == 0);
		CHECK(e == RM_SASL_E_BASE64 || e == RM_SASL_E_FIELD_EMPTY ||
		      e == RM_SASL_E_FIELD_TOO_LONG || e == RM_SASL_E_FIELD_NUL);
		CHECK((e == RM_SASL_E_BASE64) == (n < 0));
		CHECK(e != RM_SASL_E_FIELD_EMPTY || n == 0);
		CHECK(e != RM_SASL_E_FIELD_TOO_LONG || (size_t)n > cap);
		CHECK(e != RM_SASL_E_FIELD_NUL || memchr(ref, 0, (size_t)n) != NULL);
	}
	free(out);
	free(ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t cap, len;
	uint8_t *text;

	if (size == 0)
		return 0;
	cap = data[0];
	len = size - 1;
	text = heap(len);
	memcpy(text, data + 1, len);

	check_round_trip(text, len);
	check_decode(text, len, cap);
	check_plain(text, len);
	check_login(text, len, cap);
	CHECK(rm_sasl_is_cancel(text, len) == (len == 1 && text[0] == '*'));
	free(text);
	return 0;
}
