/*
 * NAME
 *	test_maps - unit tests of core/maps
 * DESCRIPTION
 *	The texthash format (keys, values with spaces, comments, blank lines,
 *	continuation lines and what ends them, CRLF), every refusal with its
 *	"NAME:LINE: reason" message (duplicates with both lines), the limits
 *	(line, entry, key; the entry count with a generated million-line
 *	buffer), case-insensitive lookups, the address lookup order, value
 *	lists, loading from a file, and reference counting across threads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/maps.h"

static struct rm_map *load_ok(const char *text)
{
	struct rm_map *m = NULL;
	char err[256] = "";
	int rc = rm_map_load_buffer("t.map", text, strlen(text), &m, err, sizeof(err));

	if (rc != 0)
		fail_msg("load failed (%d): %s", rc, err);
	assert_non_null(m);
	return m;
}

static void load_fails(const char *text, const char *want_err)
{
	struct rm_map *m = (struct rm_map *)(uintptr_t)1;
	char err[256];
	int rc = rm_map_load_buffer("t.map", text, strlen(text), &m, err, sizeof(err));

	assert_int_equal(rc, -EINVAL);
	assert_null(m);
	if (strcmp(err, want_err) != 0)
		fail_msg("error \"%s\", want \"%s\"", err, want_err);
}

static const char *get(const struct rm_map *m, const char *key)
{
	return rm_map_get(m, key, strlen(key));
}

static void test_basic(void **state)
{
	struct rm_map *m = load_ok("# virtual aliases\n"
				   "\n"
				   "alice@example.org   alice\n"
				   "Bob@Example.ORG\tbob@elsewhere.net, carol  \n"
				   "   # an indented comment\n"
				   "@example.net  catch all  with   spaces\n"
				   "last-no-newline value");
	const char *key, *value;
	uint32_t line;

	assert_int_equal(rm_map_count(m), 4);
	assert_string_equal(get(m, "alice@example.org"), "alice");
	assert_string_equal(get(m, "ALICE@EXAMPLE.ORG"), "alice");
	assert_string_equal(get(m, "bob@example.org"), "bob@elsewhere.net, carol");
	assert_string_equal(get(m, "@example.net"), "catch all  with   spaces");
	assert_string_equal(get(m, "Last-No-Newline"), "value");
	assert_null(get(m, "carol"));
	assert_null(get(m, "alice"));
	assert_null(get(m, ""));
	assert_null(rm_map_get(m, "alice@example.org", 5));
	assert_string_equal(rm_map_get(m, "alice@example.orgXXX", 17), "alice");

	assert_true(rm_map_entry(m, 1, &key, &value, &line));
	assert_string_equal(key, "bob@example.org");	/* stored lower-cased */
	assert_string_equal(value, "bob@elsewhere.net, carol");
	assert_int_equal(line, 4);
	assert_true(rm_map_entry(m, 3, &key, NULL, &line));
	assert_int_equal(line, 7);
	assert_false(rm_map_entry(m, 4, &key, &value, &line));
	rm_map_free(m);

	/* Empty text and text of only comments: an empty map. */
	m = load_ok("");
	assert_int_equal(rm_map_count(m), 0);
	assert_null(get(m, "x"));
	rm_map_free(m);
	m = load_ok("#\n  \n\t\n# x y\n");
	assert_int_equal(rm_map_count(m), 0);
	rm_map_free(m);
	assert_null(rm_map_get(NULL, "x", 1));
	assert_int_equal(rm_map_count(NULL), 0);
	rm_map_free(NULL);
	rm_map_unref(NULL);
}

static void test_continuation(void **state)
{
	struct rm_map *m = load_ok("list   alice,\n"
				   "\tbob,\n"
				   "   # indented comment: the entry goes on\n"
				   "  carol   \n"
				   "next\n"
				   "  value on the next line\n"
				   "blank-ends it\n"
				   "   \n"
				   "comment-ends it\n"
				   "# column-0 comment ends it\n"
				   "crlf\tv1\r\n"
				   "\t v2\r\n");

	assert_string_equal(get(m, "list"), "alice, bob, carol");
	assert_string_equal(get(m, "next"), "value on the next line");
	assert_string_equal(get(m, "blank-ends"), "it");
	assert_string_equal(get(m, "comment-ends"), "it");
	assert_string_equal(get(m, "crlf"), "v1 v2");
	assert_int_equal(rm_map_count(m), 5);
	rm_map_free(m);

	/* After a blank line or a column-0 comment, an indented line has nothing to continue. */
	load_fails("a b\n\n  c\n",
		   "t.map:3: continuation line (starts with whitespace) with no entry before it");
	load_fails("a b\n# c\n  d\n",
		   "t.map:3: continuation line (starts with whitespace) with no entry before it");
	load_fails(" a b\n",
		   "t.map:1: continuation line (starts with whitespace) with no entry before it");
}

static void test_errors(void **state)
{
	load_fails("a 1\nb 2\nA 3\n", "t.map:3: duplicate key \"a\" (first at line 1)");
	load_fails("x y\nlonely\n", "t.map:2: key \"lonely\" has no value (expected: key whitespace value)");
	load_fails("lonely   \n", "t.map:1: key \"lonely\" has no value (expected: key whitespace value)");
	load_fails("a b\nc\x01 d\n", "t.map:2: control character 0x01 at column 2");
	load_fails("a b\x7f\n", "t.map:1: control character 0x7f at column 4");

	/* A NUL byte (the buffer is given by length, not as a string). */
	struct rm_map *m = NULL;
	char err[256];
	static const char nul[] = "a b\nc \0d\n";

	assert_int_equal(rm_map_load_buffer("n.map", nul, sizeof(nul) - 1, &m, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "n.map:2: control character 0x00 at column 3");
	assert_null(m);

	/* A syntax error anywhere is found before a duplicate (the first pass checks syntax). */
	load_fails("a 1\na 2\nb\n", "t.map:3: key \"b\" has no value (expected: key whitespace value)");
	/* err NULL or tiny is fine. */
	assert_int_equal(rm_map_load_buffer("t.map", "x", 1, &m, NULL, 0), -EINVAL);
	assert_int_equal(rm_map_load_buffer("t.map", "x", 1, &m, err, 6), -EINVAL);
	assert_string_equal(err, "t.map");
	/* Long keys in messages are cut and the message stays one line. */
	char text[700];

	memset(text, 'k', 300);
	memcpy(text + 300, "\nz 1\n", 6);
	assert_int_equal(rm_map_load_buffer("t.map", text, strlen(text), &m, err, sizeof(err)),
			 -EINVAL);
	assert_null(strchr(err, '\n'));
	assert_true(strlen(err) < 160);
}

static void test_limits(void **state)
{
	static char text[3 * RM_MAP_LINE_BYTES_MAX];
	struct rm_map *m = NULL;
	char err[256];
	size_t n;

	/* A line of exactly RM_MAP_LINE_BYTES_MAX bytes is fine, one more is not. */
	memset(text, 'v', RM_MAP_LINE_BYTES_MAX);
	text[0] = 'k';
	text[1] = ' ';
	text[RM_MAP_LINE_BYTES_MAX] = '\n';
	assert_int_equal(rm_map_load_buffer("t.map", text, RM_MAP_LINE_BYTES_MAX + 1, &m, err,
					    sizeof(err)), 0);
	assert_int_equal(strlen(get(m, "k")), RM_MAP_LINE_BYTES_MAX - 2);
	rm_map_free(m);
	memset(text, 'v', RM_MAP_LINE_BYTES_MAX + 1);
	text[0] = 'k';
	text[1] = ' ';
	assert_int_equal(rm_map_load_buffer("t.map", text, RM_MAP_LINE_BYTES_MAX + 1, &m, err,
					    sizeof(err)), -EINVAL);
	assert_string_equal(err, "t.map:1: line longer than 4096 bytes");

	/* Continuations that push the entry past the limit. */
	memset(text, 'v', 3000);
	memcpy(text, "k ", 2);
	text[3000] = '\n';
	memset(text + 3001, ' ', 1);
	memset(text + 3002, 'w', 2000);
	text[5002] = '\n';
	assert_int_equal(rm_map_load_buffer("t.map", text, 5003, &m, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "t.map:2: entry (line 1 with its continuation lines) longer than 4096 bytes");

	/* Keys: 512 bytes are fine, 513 not. */
	memset(text, 'a', RM_MAP_KEY_BYTES_MAX);
	memcpy(text + RM_MAP_KEY_BYTES_MAX, " v\n", 4);
	m = load_ok(text);
	assert_string_equal(rm_map_get(m, text, RM_MAP_KEY_BYTES_MAX), "v");
	rm_map_free(m);
	memset(text, 'a', RM_MAP_KEY_BYTES_MAX + 1);
	memcpy(text + RM_MAP_KEY_BYTES_MAX + 1, " v\n", 4);
	load_fails(text, "t.map:1: key longer than 512 bytes");
	/* A lookup key longer than any key is simply not found. */
	m = load_ok("a b\n");
	assert_null(rm_map_get(m, text, RM_MAP_KEY_BYTES_MAX + 1));
	rm_map_free(m);

	/* Too big a buffer is refused before anything is parsed. */
	n = (size_t)RM_MAP_FILE_BYTES_MAX + 1;
	assert_int_equal(rm_map_load_buffer("big", "", n, &m, err, sizeof(err)), -EFBIG);
	assert_string_equal(err, "big: longer than 268435456 bytes");
}

/* Writes "kN N\n" for N in [0, count) into a new buffer. */
static char *numbered(uint32_t count, size_t *len)
{
	size_t cap = (size_t)count * 20 + 1, used = 0;
	char *buf = malloc(cap);

	assert_non_null(buf);
	for (uint32_t i = 0; i < count; i++)
		used += (size_t)snprintf(buf + used, cap - used, "k%u %u\n", i, i);
	*len = used;
	return buf;
}

static void test_entry_limit(void **state)
{
	struct rm_map *m = NULL;
	char err[256];
	size_t len;
	char *buf = numbered(RM_MAP_ENTRIES_MAX, &len);

	assert_int_equal(rm_map_load_buffer("big.map", buf, len, &m, err, sizeof(err)), 0);
	assert_int_equal(rm_map_count(m), RM_MAP_ENTRIES_MAX);
	assert_string_equal(get(m, "k0"), "0");
	assert_string_equal(get(m, "k999999"), "999999");
	assert_string_equal(get(m, "K123456"), "123456");
	assert_null(get(m, "k1000000"));
	rm_map_free(m);
	free(buf);

	buf = numbered(RM_MAP_ENTRIES_MAX + 1, &len);
	assert_int_equal(rm_map_load_buffer("big.map", buf, len, &m, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "big.map:1000001: more than 1000000 entries");
	assert_null(m);
	free(buf);
}

static void test_address(void **state)
{
	struct rm_map *m = load_ok("alice@example.org     full\n"
				   "@example.org          domain\n"
				   "postmaster@           local\n"
				   "\"a@b\"@example.net    quoted\n"
				   "nodomain              bare\n"
				   "@sub.example.org      sub\n");
	const char *a;

#define ADDR(s) rm_map_get_address(m, (s), strlen(s))
	assert_string_equal(ADDR("alice@example.org"), "full");
	assert_string_equal(ADDR("Alice@EXAMPLE.org"), "full");
	assert_string_equal(ADDR("alice@example.org."), "full");	/* trailing dot */
	assert_string_equal(ADDR("bob@example.org"), "domain");
	assert_string_equal(ADDR("bob@Example.Org."), "domain");
	/* The domain comes before the local part. */
	assert_string_equal(ADDR("postmaster@example.org"), "domain");
	assert_string_equal(ADDR("postmaster@other.net"), "local");
	assert_null(ADDR("bob@other.net"));
	/* Split at the last '@': the quoted local part may hold one. */
	assert_string_equal(ADDR("\"a@b\"@example.net"), "quoted");
	assert_null(ADDR("\"a@b\"@other.net"));
	/* No parent-domain matching. */
	assert_null(ADDR("x@deep.sub.example.org"));
	assert_string_equal(ADDR("x@sub.example.org"), "sub");
	/* No '@': the string as it is, and nothing else. */
	assert_string_equal(ADDR("NoDomain"), "bare");
	assert_null(ADDR("postmaster"));
	/* Empty parts. */
	assert_string_equal(ADDR("@example.org"), "domain");
	assert_string_equal(ADDR("postmaster@"), "local");
	assert_null(ADDR("@"));
	assert_null(ADDR(""));
	/* Only len bytes are read. */
	a = "alice@example.orgZZZ";
	assert_string_equal(rm_map_get_address(m, a, 17), "full");
	/* A local part too long for a key: the domain still matches. */
	char big[700];

	memset(big, 'u', 600);
	snprintf(big + 600, sizeof(big) - 600, "%s", "@example.org");
	assert_string_equal(ADDR(big), "domain");
	assert_null(rm_map_get_address(NULL, "a@b", 3));
#undef ADDR
	rm_map_free(m);
}

static void test_value_list(void **state)
{
	const char *items[4];
	size_t lens[4];
	size_t n;

	/* At most max are stored and the result never exceeds max: callers index with it. */
	n = rm_map_value_list("alice, bob carol,,dave ,\t eve", items, lens, 4);
	assert_int_equal(n, 4);
	assert_int_equal(rm_map_value_list("alice, bob carol,,dave ,\t eve", NULL, NULL, SIZE_MAX), 5);
	assert_int_equal(rm_map_value_list("a b", items, lens, 0), 0);
	assert_int_equal(lens[0], 5);
	assert_memory_equal(items[0], "alice", 5);
	assert_memory_equal(items[1], "bob", 3);
	assert_int_equal(lens[1], 3);
	assert_memory_equal(items[2], "carol", 5);
	assert_memory_equal(items[3], "dave", 4);
	assert_int_equal(lens[3], 4);
	assert_int_equal(rm_map_value_list("", items, lens, 4), 0);
	assert_int_equal(rm_map_value_list(" , ,", items, lens, 4), 0);
	assert_int_equal(rm_map_value_list(NULL, items, lens, 4), 0);
	assert_int_equal(rm_map_value_list("one", items, lens, 4), 1);
	assert_int_equal(lens[0], 3);
	/* Counting only. */
	assert_int_equal(rm_map_value_list("a b c", NULL, NULL, SIZE_MAX), 3);
}

static void test_file(void **state)
{
	char path[] = "/tmp/test_maps.XXXXXX";
	int fd = mkstemp(path);
	static const char text[] = "Key1 value one\n#\nkey2 two\n";
	struct rm_map *m = NULL;
	char err[256];

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
	close(fd);
	assert_int_equal(rm_map_load_file(path, &m, err, sizeof(err)), 0);
	assert_string_equal(get(m, "key1"), "value one");
	assert_string_equal(get(m, "KEY2"), "two");
	rm_map_free(m);

	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "key1 again\n", 11), 11);
	close(fd);
	assert_int_equal(rm_map_load_file(path, &m, err, sizeof(err)), -EINVAL);
	char want[300];

	snprintf(want, sizeof(want), "%s:4: duplicate key \"key1\" (first at line 1)", path);
	assert_string_equal(err, want);
	assert_null(m);
	unlink(path);

	assert_int_equal(rm_map_load_file(path, &m, err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
	assert_string_equal(err, want);
	assert_int_equal(rm_map_load_file("/tmp", &m, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "/tmp: not a regular file");
	assert_null(m);
}

/* --- sharing ----------------------------------------------------------------------- */

enum { REF_THREADS = 4, REF_ROUNDS = 5000 };

static void *lookup_worker(void *p)
{
	struct rm_map *m = p;	/* this thread's reference, taken by the creator */

	for (unsigned i = 0; i < REF_ROUNDS; i++) {
		struct rm_map *mine = rm_map_ref(m);

		assert_string_equal(get(mine, "k"), "v");
		rm_map_unref(mine);
	}
	rm_map_unref(m);
	return NULL;
}

static void test_refcount(void **state)
{
	struct rm_map *m = load_ok("k v\n");
	pthread_t th[REF_THREADS];

	assert_ptr_equal(rm_map_ref(m), m);
	rm_map_unref(m);
	for (unsigned i = 0; i < REF_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, lookup_worker, rm_map_ref(m)), 0);
	/* "SIGHUP": the loader drops its reference while the workers still look up. */
	rm_map_unref(m);
	for (unsigned i = 0; i < REF_THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	/* The last worker freed it: ASan reports a leak or a double free otherwise. */
	assert_null(rm_map_ref(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_basic),
		cmocka_unit_test(test_continuation),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_entry_limit),
		cmocka_unit_test(test_address),
		cmocka_unit_test(test_value_list),
		cmocka_unit_test(test_file),
		cmocka_unit_test(test_refcount),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
