/*
 * NAME
 *	fuzz_maps - libFuzzer harness for the map-file and network-list parsers
 * DESCRIPTION
 *	Each input goes, whole, to rm_map_load_buffer() (core/maps: the code
 *	rm_map_load_file runs on a file's bytes), then NUL-terminated to
 *	rm_cidr_list_add() (core/cidr), and each of its lines to
 *	rm_cidr_parse().  What is checked:
 *	  map loaded   every entry i < rm_map_count: a key of 1 to
 *		       RM_MAP_KEY_BYTES_MAX bytes with no whitespace, control
 *		       character or ASCII capital; a value of 1 to
 *		       RM_MAP_LINE_BYTES_MAX bytes with no control character but
 *		       whitespace, not starting or ending with whitespace; line
 *		       numbers from 1, increasing, within the input's lines;
 *		       rm_map_get of the key, and of the key upper-cased, gives
 *		       that very value (so keys are unique); rm_map_value_list
 *		       items lie inside the value, are non-empty and hold no
 *		       separator; address lookups of derived strings stay in
 *		       bounds; unref frees (LeakSanitizer checks).
 *	  map refused  *out NULL; err one line starting "fuzz.map:".
 *	  list added   each network formats and parses back to itself and
 *		       contains its own address; host bits past the prefix clear.
 *	  list refused the list unchanged; err one line.
 *	A broken promise aborts, which libFuzzer reports.
 *
 *	Seeds: fuzz/corpus/fuzz_maps/; dictionary: fuzz/fuzz_maps.dict.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cidr.h"
#include "core/maps.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) \
	do { if (!(cond)) { fprintf(stderr, "fuzz_maps: broken: %s\n", #cond); abort(); } } while (0)

#define VALUE_ITEMS_MAX 16

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int is_control(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

static void check_one_line(const char *err, size_t size)
{
	CHECK(memchr(err, '\0', size) != NULL);
	CHECK(strchr(err, '\n') == NULL);
}

static void check_value_list(const char *value)
{
	const char *items[VALUE_ITEMS_MAX];
	size_t lens[VALUE_ITEMS_MAX];
	size_t n = rm_map_value_list(value, items, lens, VALUE_ITEMS_MAX);
	size_t len = strlen(value);

	CHECK(n <= VALUE_ITEMS_MAX);
	for (size_t i = 0; i < n; i++) {
		CHECK(lens[i] > 0);
		CHECK(items[i] >= value && items[i] + lens[i] <= value + len);
		for (size_t j = 0; j < lens[i]; j++)
			CHECK(items[i][j] != ',' && !is_space(items[i][j]));
		if (i > 0)
			CHECK(items[i] >= items[i - 1] + lens[i - 1]);
	}
}

static void check_map(const struct rm_map *m, size_t lines)
{
	uint32_t count = rm_map_count(m), prev_line = 0;
	char upper[RM_MAP_KEY_BYTES_MAX];

	CHECK(count <= RM_MAP_ENTRIES_MAX);
	for (uint32_t i = 0; i < count; i++) {
		const char *key, *value;
		uint32_t line;
		size_t klen, vlen;

		CHECK(rm_map_entry(m, i, &key, &value, &line));
		klen = strlen(key);
		vlen = strlen(value);
		CHECK(klen >= 1 && klen <= RM_MAP_KEY_BYTES_MAX);
		CHECK(vlen >= 1 && vlen <= RM_MAP_LINE_BYTES_MAX);
		for (size_t j = 0; j < klen; j++) {
			CHECK(!is_space(key[j]) && !is_control((unsigned char)key[j]));
			CHECK(!(key[j] >= 'A' && key[j] <= 'Z'));
			upper[j] = key[j] >= 'a' && key[j] <= 'z' ? (char)(key[j] - 'a' + 'A') : key[j];
		}
		CHECK(key[0] != '#');
		for (size_t j = 0; j < vlen; j++)
			CHECK(is_space(value[j]) || !is_control((unsigned char)value[j]));
		CHECK(!is_space(value[0]) && !is_space(value[vlen - 1]));
		CHECK(line >= 1 && line > prev_line && line <= lines);
		prev_line = line;
		CHECK(rm_map_get(m, key, klen) == value);
		CHECK(rm_map_get(m, upper, klen) == value);
		check_value_list(value);
		/* Address lookups: the key itself and the value as an address. */
		(void)rm_map_get_address(m, key, klen);
		(void)rm_map_get_address(m, value, vlen);
	}
	CHECK(!rm_map_entry(m, count, NULL, NULL, NULL));
}

static void fuzz_map(const uint8_t *data, size_t size)
{
	struct rm_map *m = NULL;
	char err[256];
	size_t lines = 1;

	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	memset(err, 'x', sizeof(err));
	if (rm_map_load_buffer("fuzz.map", (const char *)data, size, &m, err, sizeof(err)) == 0) {
		CHECK(m != NULL);
		check_map(m, lines);
		/* A lookup of arbitrary text (the input's start) stays in bounds. */
		(void)rm_map_get(m, (const char *)data, size < 600 ? size : 600);
		(void)rm_map_get_address(m, (const char *)data, size < 600 ? size : 600);
		rm_map_unref(rm_map_ref(m));
		rm_map_unref(m);
	} else {
		CHECK(m == NULL);
		check_one_line(err, sizeof(err));
		CHECK(strncmp(err, "fuzz.map:", 9) == 0);
	}
}

static void check_network(const struct rm_cidr *c)
{
	char buf[RM_CIDR_TEXT_BYTES], small[12];
	struct rm_cidr again;
	struct sockaddr_storage ss;

	CHECK(c->family == AF_INET || c->family == AF_INET6);
	CHECK(c->prefix_len <= (c->family == AF_INET ? 32 : 128));
	rm_cidr_format(c, buf, sizeof(buf));
	CHECK(strlen(buf) < sizeof(buf) - 1);
	CHECK(rm_cidr_parse(buf, &again) == 0);
	CHECK(memcmp(c, &again, sizeof(again)) == 0);
	rm_cidr_format(c, small, sizeof(small));
	CHECK(memchr(small, '\0', sizeof(small)) != NULL);

	memset(&ss, 0, sizeof(ss));
	if (c->family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		in->sin_family = AF_INET;
		memcpy(&in->sin_addr, c->addr, 4);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		in6->sin6_family = AF_INET6;
		memcpy(&in6->sin6_addr, c->addr, 16);
	}
	CHECK(rm_cidr_contains(c, (const struct sockaddr *)&ss));
}

static void fuzz_cidr(const uint8_t *data, size_t size)
{
	static struct rm_cidr_list list;
	char *text = malloc(size + 1);
	char err[256];
	struct rm_cidr one;

	if (text == NULL)
		return;
	memcpy(text, data, size);
	text[size] = '\0';

	rm_cidr_list_init(&list);
	memset(err, 'x', sizeof(err));
	if (rm_cidr_list_add(&list, text, err, sizeof(err)) == 0) {
		CHECK(list.count <= RM_CIDR_LIST_MAX);
		for (uint32_t i = 0; i < list.count; i++)
			check_network(&list.entries[i]);
	} else {
		CHECK(list.count == 0);
		check_one_line(err, sizeof(err));
	}

	/* Each line alone, as one network. */
	char *save = NULL;

	for (char *line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		int rc = rm_cidr_parse(line, &one);

		if (rc == 0)
			check_network(&one);
		else
			CHECK(rc < 0 && rm_cidr_parse_error(rc)[0] != '\0');
	}
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_map(data, size);
	fuzz_cidr(data, size);
	return 0;
}
