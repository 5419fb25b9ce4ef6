/*
 * NAME
 *	test_passwd - unit tests of core/passwd
 * DESCRIPTION
 *	Password files written to a temporary directory, with hashes made
 *	here by crypt_gensalt_rn and crypt_rn: yescrypt ($y$), bcrypt ($2b$),
 *	sha512-crypt ($6$), and the legacy md5-crypt ($1$) and DES, which load
 *	with one warning each (through the callback, exact text) and still
 *	verify.  Good and bad passwords for each; unknown users; user names
 *	folded for ASCII only; empty, NUL-holding and over-long passwords
 *	refused; comments, blank lines, a last line without LF; every
 *	malformed line with its exact "FILE:LINE: reason" (no colon, empty
 *	user, SP in the user, empty hash, "*", a bare setting, a truncated
 *	hash, an extra field, CR LF, a NUL, a duplicate in another case, a
 *	user and a line at their limits and past them); a missing file and a
 *	directory; 10,000 users for the index, and the 1,000,000 user limit;
 *	an unknown user costs a yescrypt run too; references.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/passwd.h"

#define INDEX_USERS 10000u
#define PATH_BYTES 512

static char dir[] = "/tmp/test_passwd.XXXXXX";
static char path[PATH_BYTES];

/* Hashes made once (crypt is slow): password "secret" in each method. */
static char h_yescrypt[CRYPT_OUTPUT_SIZE], h_bcrypt[CRYPT_OUTPUT_SIZE], h_sha512[CRYPT_OUTPUT_SIZE];
static char h_md5[CRYPT_OUTPUT_SIZE], h_des[CRYPT_OUTPUT_SIZE];

static void make_hash(const char *prefix, unsigned long count, const char *pass, char *out)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data cd;
	const char *h;

	memset(&cd, 0, sizeof(cd));
	if (prefix != NULL && strcmp(prefix, "DES") == 0) {
		h = crypt_rn(pass, "ab", &cd, sizeof(cd));	/* crypt_gensalt makes no DES salt */
	} else {
		assert_non_null(crypt_gensalt_rn(prefix, count, NULL, 0, setting, sizeof(setting)));
		h = crypt_rn(pass, setting, &cd, sizeof(cd));
	}
	assert_non_null(h);
	assert_true(strlen(h) < CRYPT_OUTPUT_SIZE);
	snprintf(out, CRYPT_OUTPUT_SIZE, "%s", h);
}

static int setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/passwd", dir);
	make_hash("$y$", 0, "secret", h_yescrypt);
	make_hash("$2b$", 4, "secret", h_bcrypt);
	make_hash("$6$", 1000, "secret", h_sha512);
	make_hash("$1$", 0, "secret", h_md5);
	make_hash("DES", 0, "secret", h_des);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	rmdir(dir);
	return 0;
}

static void write_file(const void *text, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

struct warnings {
	unsigned count;
	char last[1024];
};

static void on_warn(const char *msg, void *arg)
{
	struct warnings *w = arg;

	w->count++;
	snprintf(w->last, sizeof(w->last), "%s", msg);
}

/* Load text; expect rc, and for an error the message "PATH<suffix>". */
static struct rm_passwd *load_text(const char *text, size_t len, int want_rc, const char *want_err,
				   struct warnings *w)
{
	struct rm_passwd *pw = (struct rm_passwd *)(uintptr_t)1;
	char err[1024] = "junk", want[1200];
	int rc;

	write_file(text, len);
	rc = rm_passwd_load(path, &pw, err, sizeof(err), w != NULL ? on_warn : NULL, w);
	assert_int_equal(rc, want_rc);
	if (rc == 0) {
		assert_non_null(pw);
		assert_string_equal(err, "");
	} else {
		assert_null(pw);
		snprintf(want, sizeof(want), "%s%s", path, want_err);
		assert_string_equal(err, want);
	}
	return pw;
}

static struct rm_passwd *load_str(const char *text, int want_rc, const char *want_err)
{
	return load_text(text, strlen(text), want_rc, want_err, NULL);
}

static bool verify(const struct rm_passwd *pw, const char *user, const char *pass)
{
	return rm_passwd_verify(pw, user, strlen(user), pass, strlen(pass));
}

static void test_methods(void **state)
{
	char text[4096];
	struct warnings w = { 0 };
	struct rm_passwd *pw;

	(void)state;
	snprintf(text, sizeof(text),
		 "# ringmail users\n"
		 "\n"
		 "yes@dev.test:%s\n"
		 "   \t\n"
		 "bc@dev.test:%s\n"
		 "#sha512 next\n"
		 "sha@dev.test:%s\n",
		 h_yescrypt, h_bcrypt, h_sha512);
	pw = load_text(text, strlen(text), 0, NULL, &w);
	assert_int_equal(w.count, 0);
	assert_int_equal(rm_passwd_count(pw), 3);
	assert_true(verify(pw, "yes@dev.test", "secret"));
	assert_true(verify(pw, "bc@dev.test", "secret"));
	assert_true(verify(pw, "sha@dev.test", "secret"));
	assert_false(verify(pw, "yes@dev.test", "Secret"));
	assert_false(verify(pw, "bc@dev.test", "secret "));
	assert_false(verify(pw, "sha@dev.test", "secre"));
	/* Another user's password is not this one's. */
	assert_false(verify(pw, "nobody@dev.test", "secret"));
	assert_false(verify(pw, "", "secret"));
	assert_false(verify(pw, "yes@dev.tes", "secret"));
	/* Refused before any lookup. */
	assert_false(rm_passwd_verify(pw, "yes@dev.test", 12, "", 0));
	assert_false(rm_passwd_verify(pw, "yes@dev.test", 12, "secret\0x", 8));
	assert_false(rm_passwd_verify(pw, "yes@dev.test", 12, "secret\0", 7));
	{
		char *big = malloc(RM_PASSWD_PASS_BYTES_MAX + 1);
		char user[RM_PASSWD_USER_BYTES_MAX + 2];

		assert_non_null(big);
		memset(big, 'a', RM_PASSWD_PASS_BYTES_MAX + 1);
		assert_false(rm_passwd_verify(pw, "yes@dev.test", 12, big, RM_PASSWD_PASS_BYTES_MAX + 1));
		assert_false(rm_passwd_verify(pw, "yes@dev.test", 12, big, RM_PASSWD_PASS_BYTES_MAX));
		memset(user, 'u', sizeof(user));
		assert_false(rm_passwd_verify(pw, user, sizeof(user), "secret", 6));
		free(big);
	}
	rm_passwd_unref(pw);
}

static void test_legacy(void **state)
{
	char text[2048], want[1200], trunc8[CRYPT_OUTPUT_SIZE];
	struct warnings w = { 0 };
	struct rm_passwd *pw;

	(void)state;
	/* The DES hash of the brief's example loads too (its password is not ours). */
	snprintf(text, sizeof(text), "md5:%s\nDes:%s\nold:abJnggxhB/yWI", h_md5, h_des);
	pw = load_text(text, strlen(text), 0, NULL, &w);
	assert_int_equal(w.count, 3);
	snprintf(want, sizeof(want), "%s:3: user old: legacy hash method; replace it with yescrypt ($y$)",
		 path);
	assert_string_equal(w.last, want);
	assert_int_equal(rm_passwd_count(pw), 3);
	assert_true(verify(pw, "md5", "secret"));
	assert_true(verify(pw, "des", "secret"));
	assert_false(verify(pw, "des", "secreT"));
	rm_passwd_unref(pw);

	/* DES reads 8 bytes of a password: the reason for the warning. */
	make_hash("DES", 0, "12345678x", trunc8);
	snprintf(text, sizeof(text), "des:%s\n", trunc8);
	pw = load_text(text, strlen(text), 0, NULL, &w);
	assert_true(verify(pw, "des", "12345678x"));
	assert_true(verify(pw, "des", "12345678-anything"));
	assert_false(verify(pw, "des", "1234567"));
	rm_passwd_unref(pw);

	/* One warning for a single line, with its number; no callback is fine too. */
	w.count = 0;
	snprintf(text, sizeof(text), "# x\nmd5:%s\n", h_md5);
	pw = load_text(text, strlen(text), 0, NULL, &w);
	assert_int_equal(w.count, 1);
	snprintf(want, sizeof(want), "%s:2: user md5: legacy hash method; replace it with yescrypt ($y$)",
		 path);
	assert_string_equal(w.last, want);
	rm_passwd_unref(pw);
	pw = load_text(text, strlen(text), 0, NULL, NULL);
	rm_passwd_unref(pw);
}

static void test_case(void **state)
{
	char text[2048];
	struct rm_passwd *pw;

	(void)state;
	snprintf(text, sizeof(text), "Demo@Dev.TEST:%s\nj\xc3\xb6rg@dev.test:%s\n", h_sha512, h_sha512);
	pw = load_str(text, 0, NULL);
	assert_true(verify(pw, "demo@dev.test", "secret"));
	assert_true(verify(pw, "DEMO@DEV.TEST", "secret"));
	assert_true(verify(pw, "Demo@Dev.TEST", "secret"));
	/* Only ASCII is folded: O WITH DIAERESIS is another user in upper case. */
	assert_true(verify(pw, "J\xc3\xb6RG@dev.test", "secret"));
	assert_false(verify(pw, "j\xc3\x96rg@dev.test", "secret"));
	/* The password is never folded. */
	assert_false(verify(pw, "demo@dev.test", "SECRET"));
	rm_passwd_unref(pw);

	/* Two lines for one name in two cases are a duplicate. */
	snprintf(text, sizeof(text), "# users\ndemo@dev.test:%s\nDEMO@dev.test:%s\n", h_sha512,
		 h_bcrypt);
	load_str(text, -EINVAL, ":3: duplicate user demo@dev.test (first at line 2)");
}

struct bad_case {
	const char *text;
	const char *err;	/* after the path */
};

static void test_malformed(void **state)
{
	char text[2048], trunc[CRYPT_OUTPUT_SIZE];
	struct bad_case cases[] = {
		{ "demo@dev.test\n", ":1: no ':' between user and hash" },
		{ "# c\n\n:HASH\n", ":3: empty user name" },
		{ "demo@dev.test:\n", ":1: empty hash" },
		{ "demo@dev.test:*\n", ":1: invalid hash (not a crypt hash libxcrypt knows)" },
		{ "demo@dev.test:!\n", ":1: invalid hash (not a crypt hash libxcrypt knows)" },
		{ "demo@dev.test:$y$\n", ":1: incomplete hash (a setting without its hash?)" },
		{ "demo@dev.test:$6$abc$x\n", ":1: incomplete hash (a setting without its hash?)" },
		{ "demo@dev.test:ab\n", ":1: incomplete hash (a setting without its hash?)" },
		{ "demo user:abJnggxhB/yWI\n", ":1: SP in user name" },
		{ " demo:abJnggxhB/yWI\n", ":1: SP in user name" },
		{ "\tdemo:abJnggxhB/yWI\n", ":1: control character 0x09" },
		{ "demo:abJnggxhB/yWI\r\n", ":1: control character 0x0d (CR LF line end?)" },
		{ "demo:abJnggxhB/yWI:1000:1000\n", ":1: SP or ':' in hash (one user:hash a line)" },
		{ "demo:abJnggxhB/yWI #\n", ":1: SP or ':' in hash (one user:hash a line)" },
	};
	struct warnings w = { 0 };

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		load_text(cases[i].text, strlen(cases[i].text), -EINVAL, cases[i].err, &w);

	/* A truncated yescrypt hash, and one with a character too many. */
	snprintf(trunc, sizeof(trunc), "%s", h_yescrypt);
	trunc[strlen(trunc) - 1] = '\0';
	snprintf(text, sizeof(text), "a:%s\nb:%s\n", h_yescrypt, trunc);
	load_str(text, -EINVAL, ":2: incomplete hash (a setting without its hash?)");
	snprintf(text, sizeof(text), "a:%sA\n", h_sha512);
	load_str(text, -EINVAL, ":1: incomplete hash (a setting without its hash?)");
	snprintf(text, sizeof(text), "a:%sA\n", h_bcrypt);
	load_str(text, -EINVAL, ":1: incomplete hash (a setting without its hash?)");

	/* A NUL in a line. */
	static const char nul[] = "ok:abJnggxhB/yWI\nde\0mo:abJnggxhB/yWI\n";

	load_text(nul, sizeof(nul) - 1, -EINVAL, ":2: control character 0x00", &w);
}

static void test_limits(void **state)
{
	char *text = malloc(2 * RM_PASSWD_LINE_BYTES_MAX);
	char want[64];
	struct rm_passwd *pw;
	size_t n;

	(void)state;
	assert_non_null(text);
	/* A user name of 255 bytes, then 256. */
	memset(text, 'u', RM_PASSWD_USER_BYTES_MAX);
	n = RM_PASSWD_USER_BYTES_MAX;
	n += (size_t)sprintf(text + n, ":%s\n", h_sha512);
	pw = load_text(text, n, 0, NULL, NULL);
	text[RM_PASSWD_USER_BYTES_MAX] = '\0';
	assert_true(verify(pw, text, "secret"));
	rm_passwd_unref(pw);
	memset(text, 'u', RM_PASSWD_USER_BYTES_MAX + 1);
	n = RM_PASSWD_USER_BYTES_MAX + 1;
	n += (size_t)sprintf(text + n, ":%s\n", h_sha512);
	load_text(text, n, -EINVAL, ":1: user name longer than 255 bytes", NULL);

	/* A hash of 384 bytes (crypt_checksalt aside, it is too long to be one). */
	n = (size_t)sprintf(text, "u:$6$");
	memset(text + n, 'a', RM_PASSWD_HASH_BYTES_MAX + 1 - 3);
	n += RM_PASSWD_HASH_BYTES_MAX + 1 - 3;
	load_text(text, n, -EINVAL, ":1: hash longer than 383 bytes", NULL);

	/* A comment line of 4096 bytes is fine; 4097 is not, wherever it is. */
	text[0] = '#';
	memset(text + 1, 'c', RM_PASSWD_LINE_BYTES_MAX - 1);
	n = RM_PASSWD_LINE_BYTES_MAX;
	n += (size_t)sprintf(text + n, "\nu:%s", h_sha512);	/* no LF at the end */
	pw = load_text(text, n, 0, NULL, NULL);
	assert_int_equal(rm_passwd_count(pw), 1);
	assert_true(verify(pw, "u", "secret"));
	rm_passwd_unref(pw);
	memcpy(text, "\n\n#", 3);
	memset(text + 3, 'c', RM_PASSWD_LINE_BYTES_MAX - 1 + 1);
	n = 3 + RM_PASSWD_LINE_BYTES_MAX;
	snprintf(want, sizeof(want), ":3: line longer than %u bytes", RM_PASSWD_LINE_BYTES_MAX);
	load_text(text, n, -EINVAL, want, NULL);
	pw = load_text(text, n - 1, 0, NULL, NULL);
	assert_int_equal(rm_passwd_count(pw), 0);
	rm_passwd_unref(pw);
	free(text);
}

static void test_empty_and_files(void **state)
{
	char err[1024], want[1200];
	struct rm_passwd *pw = NULL;
	int rc;

	(void)state;
	pw = load_str("", 0, NULL);
	assert_int_equal(rm_passwd_count(pw), 0);
	/* Nobody to find, and the fixed yescrypt hash is what is checked against. */
	assert_false(verify(pw, "demo", "secret"));
	rm_passwd_unref(pw);
	pw = load_str("# nobody\n\n", 0, NULL);
	assert_int_equal(rm_passwd_count(pw), 0);
	rm_passwd_unref(pw);

	rc = rm_passwd_load("/nonexistent/passwd", &pw, err, sizeof(err), NULL, NULL);
	assert_int_equal(rc, -ENOENT);
	assert_null(pw);
	assert_string_equal(err, "/nonexistent/passwd: No such file or directory");
	rc = rm_passwd_load(dir, &pw, err, sizeof(err), NULL, NULL);
	assert_int_equal(rc, -EINVAL);
	snprintf(want, sizeof(want), "%s: not a regular file", dir);
	assert_string_equal(err, want);
	/* No error buffer, or a tiny one: the code still says what happened. */
	assert_int_equal(rm_passwd_load("/nonexistent/passwd", &pw, NULL, 0, NULL, NULL), -ENOENT);
	assert_int_equal(rm_passwd_load("/nonexistent/passwd", &pw, err, 4, NULL, NULL), -ENOENT);
	assert_string_equal(err, "/no");
}

static void test_many_users(void **state)
{
	size_t cap = (size_t)INDEX_USERS * 160, n = 0;
	char *text = malloc(cap), user[32];
	struct rm_passwd *pw;

	(void)state;
	assert_non_null(text);
	for (unsigned i = 0; i < INDEX_USERS; i++)
		n += (size_t)snprintf(text + n, cap - n, "user%u@dev.test:%s\n", i, h_sha512);
	pw = load_text(text, n, 0, NULL, NULL);
	assert_int_equal(rm_passwd_count(pw), INDEX_USERS);
	for (unsigned i = 0; i < INDEX_USERS; i += INDEX_USERS / 7) {
		snprintf(user, sizeof(user), "USER%u@dev.test", i);
		assert_true(verify(pw, user, "secret"));
	}
	snprintf(user, sizeof(user), "user%u@dev.test", INDEX_USERS);
	assert_false(verify(pw, user, "secret"));
	rm_passwd_unref(pw);
	free(text);
}

/* RM_PASSWD_USERS_MAX entries load, one more is refused, with DES hashes (13 bytes). */
static void test_users_max(void **state)
{
	size_t cap = ((size_t)RM_PASSWD_USERS_MAX + 1) * 24, n = 0;
	char *text = malloc(cap), want[128];
	struct warnings w = { 0 };
	struct rm_passwd *pw;

	(void)state;
	assert_non_null(text);
	for (unsigned i = 0; i < RM_PASSWD_USERS_MAX; i++)
		n += (size_t)snprintf(text + n, cap - n, "%x:%s\n", i, h_des);
	pw = load_text(text, n, 0, NULL, &w);
	assert_int_equal(w.count, RM_PASSWD_USERS_MAX);
	assert_int_equal(rm_passwd_count(pw), RM_PASSWD_USERS_MAX);
	assert_true(verify(pw, "f423f", "secret"));	/* the last: 999999 */
	assert_true(verify(pw, "0", "secret"));
	rm_passwd_unref(pw);
	n += (size_t)snprintf(text + n, cap - n, "last:%s\n", h_des);
	snprintf(want, sizeof(want), ":%u: more than %u users", RM_PASSWD_USERS_MAX + 1,
		 RM_PASSWD_USERS_MAX);
	load_text(text, n, -EINVAL, want, NULL);
	free(text);
}

static double seconds_of(const struct rm_passwd *pw, const char *user, const char *pass)
{
	struct timespec a, b;
	double best = 1e9;

	for (int i = 0; i < 3; i++) {
		clock_gettime(CLOCK_MONOTONIC, &a);
		(void)verify(pw, user, pass);
		clock_gettime(CLOCK_MONOTONIC, &b);
		double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;

		if (s < best)
			best = s;
	}
	return best;
}

/* An unknown user costs a yescrypt run like a known one (loosely: a third at least). */
static void test_unknown_user_cost(void **state)
{
	char text[1024];
	struct rm_passwd *pw;
	double known, unknown;

	(void)state;
	snprintf(text, sizeof(text), "demo:%s\n", h_yescrypt);
	pw = load_str(text, 0, NULL);
	known = seconds_of(pw, "demo", "wrong");
	unknown = seconds_of(pw, "nobody", "wrong");
	assert_true(unknown > known / 3);
	rm_passwd_unref(pw);
	/* Without a yescrypt entry, the fixed hash: still a yescrypt run. */
	snprintf(text, sizeof(text), "demo:%s\n", h_sha512);
	pw = load_str(text, 0, NULL);
	unknown = seconds_of(pw, "nobody", "wrong");
	assert_true(unknown > known / 3);
	rm_passwd_unref(pw);
}

static void test_refs(void **state)
{
	char text[1024];
	struct rm_passwd *pw;

	(void)state;
	snprintf(text, sizeof(text), "demo:%s\n", h_sha512);
	pw = load_str(text, 0, NULL);
	rm_passwd_ref(pw);
	rm_passwd_ref(pw);
	rm_passwd_unref(pw);
	rm_passwd_unref(pw);
	/* One reference left: still usable (ASan would see a use after free). */
	assert_true(verify(pw, "demo", "secret"));
	rm_passwd_unref(pw);	/* freed: LeakSanitizer checks nothing is left */
	rm_passwd_unref(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_legacy),
		cmocka_unit_test(test_case),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_empty_and_files),
		cmocka_unit_test(test_many_users),
		cmocka_unit_test(test_users_max),
		cmocka_unit_test(test_unknown_user_cost),
		cmocka_unit_test(test_refs),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
