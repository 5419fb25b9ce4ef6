/*
 * NAME
 *	test_sasl - unit tests of proto/sasl
 * DESCRIPTION
 *	Base64: the RFC 4648 section 10 vectors both ways; every output
 *	buffer smaller than the result refused, each an exact heap buffer (so
 *	ASan sees a write past it); every refused form (length, padding in
 *	the middle, too much padding, non-zero pad bits, white space, the URL
 *	alphabet, every byte value outside the alphabet at every position of a
 *	quartet); round trips of every length up to 300 with pseudo-random
 *	bytes; the length helpers, overflow included.
 *
 *	PLAIN: with and without authzid, every wrong NUL count, every field
 *	at its limit and one past it, empty fields, bad UTF-8 (truncated,
 *	overlong, surrogate, past U+10FFFF, stray continuation, 0xff) in each
 *	field, the order of the checks, spans set after a late failure, and a
 *	real initial response decoded then parsed.  LOGIN: the challenges, a
 *	good field, each error, the cap at and below the field's length, a
 *	NUL wiped from the output.  Cancel: "*" only.  Every error has its
 *	own text.  Inputs are heap copies of exact size.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto/sasl.h"

#define ROUND_TRIP_MAX 300u

/* An exact heap copy (one byte allocated for an empty input, never read). */
static uint8_t *dup_exact(const void *s, size_t n)
{
	uint8_t *p = malloc(n ? n : 1);

	assert_non_null(p);
	memcpy(p, s, n);
	return p;
}

static ssize_t decode_exact(const char *in, size_t len, uint8_t *out, size_t cap)
{
	uint8_t *copy = dup_exact(in, len);
	ssize_t n = rm_base64_decode(copy, len, out, cap);

	free(copy);
	return n;
}

struct vector {
	const char *plain;
	const char *b64;
};

/* RFC 4648 section 10. */
static const struct vector rfc_vectors[] = {
	{ "", "" },	     { "f", "Zg==" },	      { "fo", "Zm8=" },	       { "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
};

static void test_rfc4648_vectors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rfc_vectors) / sizeof(rfc_vectors[0]); i++) {
		const struct vector *v = &rfc_vectors[i];
		size_t plen = strlen(v->plain), blen = strlen(v->b64);
		uint8_t *in = dup_exact(v->plain, plen);

		assert_int_equal(rm_base64_encoded_len(plen), blen);
		/* Encode into an exact buffer, then every smaller one. */
		for (size_t cap = blen + 1; cap-- > 0;) {
			char *out = malloc(cap ? cap : 1);

			assert_non_null(out);
			if (cap == blen) {
				assert_int_equal(rm_base64_encode(in, plen, out, cap), (ssize_t)blen);
				assert_memory_equal(out, v->b64, blen);
			} else {
				assert_int_equal(rm_base64_encode(in, plen, out, cap), -1);
			}
			free(out);
		}
		/* Decode likewise. */
		for (size_t cap = plen + 1; cap-- > 0;) {
			uint8_t *out = malloc(cap ? cap : 1);

			assert_non_null(out);
			if (cap == plen) {
				assert_int_equal(decode_exact(v->b64, blen, out, cap), (ssize_t)plen);
				assert_memory_equal(out, v->plain, plen);
			} else {
				assert_int_equal(decode_exact(v->b64, blen, out, cap), -1);
			}
			free(out);
		}
		assert_true(rm_base64_decoded_max(blen) >= plen);
		assert_true(rm_base64_decoded_max(blen) - plen <= 2);
		free(in);
	}
}

static void test_decode_edges(void **state)
{
	uint8_t out[8];

	(void)state;
	assert_int_equal(decode_exact("AAAA", 4, out, 3), 3);
	assert_memory_equal(out, "\0\0\0", 3);
	assert_int_equal(decode_exact("////", 4, out, 3), 3);
	assert_memory_equal(out, "\xff\xff\xff", 3);
	assert_int_equal(decode_exact("+/+/", 4, out, 3), 3);
	assert_memory_equal(out, "\xfb\xff\xbf", 3);
	assert_int_equal(decode_exact("AA==", 4, out, 1), 1);
	assert_int_equal(out[0], 0);
	assert_int_equal(decode_exact("//8=", 4, out, 2), 2);
	assert_memory_equal(out, "\xff\xff", 2);
	assert_int_equal(decode_exact("/w==", 4, out, 1), 1);
	assert_int_equal(out[0], 0xff);
	/* Empty input: nothing, even with no room at all. */
	assert_int_equal(decode_exact("", 0, out, 0), 0);
}

static const char *const refused[] = {
	"Z", "Zg", "Zg=", "Zm9vY", "Zm9vYg=",		/* length not a multiple of 4 */
	"====", "Z===", "Zg=A", "Z=g=", "=Zg=", "Zm=v",	/* '=' out of place or too much */
	"Zg==Zg==", "Zm8=Zm9v", "Zg==AAAA",		/* padding in the middle */
	"Zh==", "Zv==", "Zm9=", "Zm+=", "//==", "//9=",	/* non-zero pad bits */
	"Zm 9", "Zm9v ", " Zm9v", "Zm9v\r\n", "Zm9v\n",	/* white space */
	"Zm\t9", "Zm-v", "Zm_v", "Zm.v", "Zm9v====",	/* tab, URL and crypt alphabets */
};

static void test_decode_refused(void **state)
{
	uint8_t out[16];

	(void)state;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		assert_int_equal(decode_exact(refused[i], strlen(refused[i]), out, sizeof(out)), -1);
	/* Their neighbours with the unused bits clear are good. */
	assert_int_equal(decode_exact("Zg==", 4, out, sizeof(out)), 1);	/* 'g' = 32: low bits 0000 */
	assert_int_equal(decode_exact("Zm8=", 4, out, sizeof(out)), 2);	/* '8' = 60: low bits 00 */
	assert_int_equal(decode_exact("/w==", 4, out, sizeof(out)), 1);
	assert_int_equal(decode_exact("//8=", 4, out, sizeof(out)), 2);
	/* NUL and non-ASCII bytes. */
	assert_int_equal(decode_exact("Zm\0v", 4, out, sizeof(out)), -1);
	assert_int_equal(decode_exact("Zm\xffv", 4, out, sizeof(out)), -1);
}

static bool in_alphabet(unsigned c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/* Every byte value at every position of a full quartet, first and last quartet. */
static void test_decode_every_byte(void **state)
{
	uint8_t out[6];

	(void)state;
	for (unsigned c = 0; c < 256; c++) {
		for (unsigned pos = 0; pos < 8; pos++) {
			char q[8];

			memcpy(q, "QUJDQUJD", 8);	/* "ABCABC" */
			q[pos] = (char)c;
			assert_int_equal(decode_exact(q, 8, out, sizeof(out)),
					 in_alphabet(c) ? 6 : -1);
		}
	}
}

static uint32_t rng_state = 0x12345678u;

static uint8_t rng8(void)
{
	/* xorshift32: deterministic, so a failure repeats. */
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return (uint8_t)rng_state;
}

static void test_round_trip(void **state)
{
	(void)state;
	for (size_t len = 0; len <= ROUND_TRIP_MAX; len++) {
		size_t elen = rm_base64_encoded_len(len);
		uint8_t *in = malloc(len ? len : 1), *back = malloc(len ? len : 1);
		char *enc = malloc(elen ? elen : 1);

		assert_non_null(in);
		assert_non_null(back);
		assert_non_null(enc);
		for (size_t i = 0; i < len; i++)
			in[i] = rng8();
		assert_int_equal(rm_base64_encode(in, len, enc, elen), (ssize_t)elen);
		assert_int_equal(rm_base64_decode((const uint8_t *)enc, elen, back, len), (ssize_t)len);
		assert_memory_equal(in, back, len);
		free(in);
		free(back);
		free(enc);
	}
}

static void test_lengths(void **state)
{
	(void)state;
	assert_int_equal(rm_base64_encoded_len(0), 0);
	assert_int_equal(rm_base64_encoded_len(1), 4);
	assert_int_equal(rm_base64_encoded_len(3), 4);
	assert_int_equal(rm_base64_encoded_len(4), 8);
	assert_int_equal(rm_base64_decoded_max(0), 0);
	assert_int_equal(rm_base64_decoded_max(4), 3);
	assert_int_equal(rm_base64_decoded_max(7), 3);
	assert_int_equal(rm_base64_decoded_max(8), 6);
	assert_true(rm_base64_encoded_len(SIZE_MAX) == SIZE_MAX);
	assert_true(rm_base64_encoded_len(SIZE_MAX / 4 * 3) == SIZE_MAX / 4 * 4);
	assert_true(rm_base64_encoded_len(SIZE_MAX / 4 * 3 + 1) == SIZE_MAX);
	assert_int_equal(RM_SASL_PLAIN_BASE64_BYTES_MAX, rm_base64_encoded_len(RM_SASL_PLAIN_BYTES_MAX));
}

/* --- PLAIN ------------------------------------------------------------------ */

static enum rm_sasl_err plain(const void *msg, size_t len, struct rm_sasl_plain *p, uint8_t **copy)
{
	*copy = dup_exact(msg, len);
	return rm_sasl_plain_parse(*copy, len, p);
}

#define MSG(s) s, sizeof(s) - 1

static void expect_span(struct rm_sasl_span s, const uint8_t *base, size_t off, const char *want)
{
	assert_ptr_equal(s.ptr, base + off);
	assert_int_equal(s.len, strlen(want));
	assert_memory_equal(s.ptr, want, s.len);
}

static void test_plain_good(void **state)
{
	struct rm_sasl_plain p;
	uint8_t *c;

	(void)state;
	assert_int_equal(plain(MSG("\0demo@dev.test\0secret"), &p, &c), RM_SASL_OK);
	expect_span(p.authzid, c, 0, "");
	expect_span(p.authcid, c, 1, "demo@dev.test");
	expect_span(p.passwd, c, 15, "secret");
	free(c);

	assert_int_equal(plain(MSG("admin\0demo\0pw"), &p, &c), RM_SASL_OK);
	expect_span(p.authzid, c, 0, "admin");
	expect_span(p.authcid, c, 6, "demo");
	expect_span(p.passwd, c, 11, "pw");
	free(c);

	/* UTF-8 in every field; a password of spaces and symbols is a password. */
	assert_int_equal(plain(MSG("j\xc3\xb6rg\0\xe6\x97\xa5\xe6\x9c\xac\0 \xf0\x9f\x94\x91 !:"),
			       &p, &c), RM_SASL_OK);
	assert_int_equal(p.authzid.len, 5);
	assert_int_equal(p.authcid.len, 6);
	assert_int_equal(p.passwd.len, 8);
	free(c);
}

static void test_plain_nuls(void **state)
{
	struct rm_sasl_plain p;
	uint8_t *c;

	(void)state;
	assert_int_equal(plain("", 0, &p, &c), RM_SASL_E_EMPTY);
	free(c);
	assert_int_equal(plain(MSG("userpass"), &p, &c), RM_SASL_E_NUL_MISSING);
	free(c);
	assert_int_equal(plain(MSG("user\0pass"), &p, &c), RM_SASL_E_NUL_MISSING);
	assert_null(p.authcid.ptr);
	free(c);
	assert_int_equal(plain(MSG("\0"), &p, &c), RM_SASL_E_NUL_MISSING);
	free(c);
	assert_int_equal(plain(MSG("\0\0"), &p, &c), RM_SASL_E_AUTHCID_EMPTY);
	free(c);
	assert_int_equal(plain(MSG("\0u\0"), &p, &c), RM_SASL_E_PASSWD_EMPTY);
	free(c);
	assert_int_equal(plain(MSG("\0\0\0"), &p, &c), RM_SASL_E_NUL_EXTRA);
	free(c);
	assert_int_equal(plain(MSG("a\0u\0p\0"), &p, &c), RM_SASL_E_NUL_EXTRA);
	free(c);
	assert_int_equal(plain(MSG("\0u\0p\0q"), &p, &c), RM_SASL_E_NUL_EXTRA);
	free(c);
	assert_int_equal(plain(MSG("\0u\0\0p"), &p, &c), RM_SASL_E_NUL_EXTRA);
	free(c);
}

/* A message of authzid, authcid and passwd of the given lengths ('z', 'c', 'p'). */
static uint8_t *make_plain(size_t zlen, size_t clen, size_t plen, size_t *len)
{
	uint8_t *m = malloc(zlen + clen + plen + 2);

	assert_non_null(m);
	memset(m, 'z', zlen);
	m[zlen] = 0;
	memset(m + zlen + 1, 'c', clen);
	m[zlen + 1 + clen] = 0;
	memset(m + zlen + clen + 2, 'p', plen);
	*len = zlen + clen + plen + 2;
	return m;
}

static void test_plain_limits(void **state)
{
	struct {
		size_t z, c, p;
		enum rm_sasl_err err;
	} cases[] = {
		{ RM_SASL_AUTHZID_BYTES_MAX, RM_SASL_AUTHCID_BYTES_MAX, RM_SASL_PASSWD_BYTES_MAX, RM_SASL_OK },
		{ RM_SASL_AUTHZID_BYTES_MAX + 1, 1, 1, RM_SASL_E_AUTHZID_TOO_LONG },
		{ 0, RM_SASL_AUTHCID_BYTES_MAX + 1, 1, RM_SASL_E_AUTHCID_TOO_LONG },
		{ 0, 1, RM_SASL_PASSWD_BYTES_MAX + 1, RM_SASL_E_PASSWD_TOO_LONG },
		{ 0, RM_SASL_AUTHCID_BYTES_MAX, 1, RM_SASL_OK },
		{ 0, 1, RM_SASL_PASSWD_BYTES_MAX, RM_SASL_OK },
		{ 0, 0, 1, RM_SASL_E_AUTHCID_EMPTY },
		{ 0, 1, 0, RM_SASL_E_PASSWD_EMPTY },
		/* The first failed check wins, in the order of the enum. */
		{ RM_SASL_AUTHZID_BYTES_MAX + 1, 0, 0, RM_SASL_E_AUTHZID_TOO_LONG },
		{ 0, RM_SASL_AUTHCID_BYTES_MAX + 1, 0, RM_SASL_E_AUTHCID_TOO_LONG },
		{ 0, 0, RM_SASL_PASSWD_BYTES_MAX + 1, RM_SASL_E_AUTHCID_EMPTY },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rm_sasl_plain p;
		size_t len;
		uint8_t *m = make_plain(cases[i].z, cases[i].c, cases[i].p, &len);

		assert_int_equal(rm_sasl_plain_parse(m, len, &p), cases[i].err);
		/* The spans are set whatever the later checks say. */
		assert_int_equal(p.authzid.len, cases[i].z);
		assert_int_equal(p.authcid.len, cases[i].c);
		assert_int_equal(p.passwd.len, cases[i].p);
		assert_ptr_equal(p.passwd.ptr + p.passwd.len, m + len);
		free(m);
	}
	assert_int_equal(RM_SASL_PLAIN_BYTES_MAX, 255 + 1 + 255 + 1 + 1024);
}

static const char *const bad_utf8[] = {
	"\xc3",			/* truncated */
	"a\xe6\x97",		/* truncated 3-byte */
	"\xc0\xaf",		/* overlong '/' */
	"\xe0\x80\xaf",		/* overlong 3-byte */
	"\xf0\x80\x80\xaf",	/* overlong 4-byte */
	"\xed\xa0\x80",		/* surrogate U+D800 */
	"\xf4\x90\x80\x80",	/* U+110000 */
	"\x80",			/* stray continuation */
	"ok\xff",		/* never in UTF-8 */
	"\xf8\x88\x80\x80\x80",	/* 5-byte form */
};

static void test_plain_utf8(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
		const char *b = bad_utf8[i];
		size_t blen = strlen(b);

		for (int field = 0; field < 3; field++) {
			static const enum rm_sasl_err want[3] = { RM_SASL_E_AUTHZID_UTF8,
								  RM_SASL_E_AUTHCID_UTF8,
								  RM_SASL_E_PASSWD_UTF8 };
			uint8_t msg[64];
			size_t n = 0;
			struct rm_sasl_plain p;
			uint8_t *c;

			for (int f = 0; f < 3; f++) {
				const char *text = f == field ? b : "x";
				size_t tl = f == field ? blen : 1;

				memcpy(msg + n, text, tl);
				n += tl;
				if (f < 2)
					msg[n++] = 0;
			}
			assert_int_equal(plain(msg, n, &p, &c), want[field]);
			free(c);
		}
	}
}

static void test_plain_initial_response(void **state)
{
	/* "AUTH PLAIN AGRlbW9AZGV2LnRlc3QAc2VjcmV0" */
	static const char b64[] = "AGRlbW9AZGV2LnRlc3QAc2VjcmV0";
	uint8_t *buf = malloc(rm_base64_decoded_max(sizeof(b64) - 1));
	struct rm_sasl_plain p;
	ssize_t n;

	(void)state;
	assert_non_null(buf);
	n = decode_exact(b64, sizeof(b64) - 1, buf, rm_base64_decoded_max(sizeof(b64) - 1));
	assert_int_equal(n, 21);
	assert_int_equal(rm_sasl_plain_parse(buf, (size_t)n, &p), RM_SASL_OK);
	expect_span(p.authcid, buf, 1, "demo@dev.test");
	expect_span(p.passwd, buf, 15, "secret");
	free(buf);
}

/* --- LOGIN and cancel ---------------------------------------------------------- */

static enum rm_sasl_err login(const char *b64, uint8_t *out, size_t cap, size_t *out_len)
{
	uint8_t *copy = dup_exact(b64, strlen(b64));
	enum rm_sasl_err e = rm_sasl_login_field(copy, strlen(b64), out, cap, out_len);

	free(copy);
	return e;
}

static void test_login(void **state)
{
	uint8_t out[64];
	size_t n;

	(void)state;
	assert_int_equal(login(RM_SASL_LOGIN_CHALLENGE_USERNAME, out, sizeof(out), &n), RM_SASL_OK);
	assert_int_equal(n, 9);
	assert_memory_equal(out, "Username:", 9);
	assert_int_equal(login(RM_SASL_LOGIN_CHALLENGE_PASSWORD, out, sizeof(out), &n), RM_SASL_OK);
	assert_int_equal(n, 9);
	assert_memory_equal(out, "Password:", 9);

	/* "demo@dev.test": an exact buffer works, every smaller one is too small. */
	for (size_t cap = 14; cap-- > 0;) {
		uint8_t *o = malloc(cap ? cap : 1);

		assert_non_null(o);
		n = 99;
		if (cap == 13) {
			assert_int_equal(login("ZGVtb0BkZXYudGVzdA==", o, cap, &n), RM_SASL_OK);
			assert_int_equal(n, 13);
			assert_memory_equal(o, "demo@dev.test", 13);
		} else {
			assert_int_equal(login("ZGVtb0BkZXYudGVzdA==", o, cap, &n),
					 RM_SASL_E_FIELD_TOO_LONG);
			assert_int_equal(n, 0);
		}
		free(o);
	}

	assert_int_equal(login("", out, sizeof(out), &n), RM_SASL_E_FIELD_EMPTY);
	assert_int_equal(login("=", out, sizeof(out), &n), RM_SASL_E_BASE64);
	assert_int_equal(login("*", out, sizeof(out), &n), RM_SASL_E_BASE64);
	assert_int_equal(login("ZGVtbw", out, sizeof(out), &n), RM_SASL_E_BASE64);
	assert_int_equal(login("ZGVtbw= ", out, sizeof(out), &n), RM_SASL_E_BASE64);
	/* Not base64 beats too long: the client's line is wrong, not its length. */
	assert_int_equal(login("ZGVt!G8=", out, 1, &n), RM_SASL_E_BASE64);
	assert_int_equal(login("ZGVtbx==", out, 1, &n), RM_SASL_E_BASE64);	/* pad bits */
	/* "a\0b": refused, and nothing of it left in out. */
	memset(out, 0x55, sizeof(out));
	assert_int_equal(login("YQBi", out, sizeof(out), &n), RM_SASL_E_FIELD_NUL);
	assert_int_equal(n, 0);
	assert_memory_equal(out, "\0\0\0", 3);
	assert_int_equal(login("AA==", out, sizeof(out), &n), RM_SASL_E_FIELD_NUL);
}

static void test_cancel(void **state)
{
	(void)state;
	assert_true(rm_sasl_is_cancel((const uint8_t *)"*", 1));
	assert_false(rm_sasl_is_cancel((const uint8_t *)"", 0));
	assert_false(rm_sasl_is_cancel((const uint8_t *)"**", 2));
	assert_false(rm_sasl_is_cancel((const uint8_t *)" *", 2));
	assert_false(rm_sasl_is_cancel((const uint8_t *)"* ", 2));
	assert_false(rm_sasl_is_cancel((const uint8_t *)"=", 1));
}

static void test_err_texts(void **state)
{
	(void)state;
	for (int i = 0; i < RM_SASL_E_COUNT; i++) {
		const char *t = rm_sasl_err_text((enum rm_sasl_err)i);

		assert_non_null(t);
		assert_true(strlen(t) > 0);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(t, rm_sasl_err_text((enum rm_sasl_err)j));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc4648_vectors),
		cmocka_unit_test(test_decode_edges),
		cmocka_unit_test(test_decode_refused),
		cmocka_unit_test(test_decode_every_byte),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_plain_good),
		cmocka_unit_test(test_plain_nuls),
		cmocka_unit_test(test_plain_limits),
		cmocka_unit_test(test_plain_utf8),
		cmocka_unit_test(test_plain_initial_response),
		cmocka_unit_test(test_login),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_err_texts),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
