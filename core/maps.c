/*
 * NAME
 *	maps - lookup tables from Postfix-style text files ("texthash")
 * SUMMARY
 *	See core/maps.h for the interface.
 * DESCRIPTION
 *	Two passes of the same parser over the text: the first checks every
 *	line and counts entries and string bytes, the second copies keys and
 *	values into one string block and inserts them into the hash table,
 *	where duplicates show.  Both passes see the same entries, so the
 *	second cannot fail except on a duplicate, and the sizes of the first
 *	are exact.  An entry is assembled in a fixed buffer of
 *	RM_MAP_LINE_BYTES_MAX + 1 bytes (its first line and continuations);
 *	only when a line that cannot continue it comes (or the end) is it
 *	split into key and value and handed on.
 *
 *	Layout: entries[] in file order (offsets into strings, the line
 *	number), strings (key NUL value NUL, entry after entry), hash[] of
 *	entry index + 1 (0 is empty) with linear probing.  Offsets are 32 bits:
 *	the text is at most RM_MAP_FILE_BYTES_MAX, and the strings of an
 *	entry take no more bytes than its lines plus one, so the block is
 *	below 2^32.
 *
 *	Loops: every parse loop advances through the text (bounded by len) or
 *	through one line (bounded by RM_MAP_LINE_BYTES_MAX); a probe visits at
 *	most every slot of the table; reading a file is bounded by its size
 *	and READ_EINTR_MAX interruptions.
 * DIAGNOSTICS
 *	See core/maps.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/log.h"
#include "core/maps.h"

#define HASH_SLOTS_MIN 16u
#define READ_EINTR_MAX 64
#define ERR_KEY_CHARS_MAX 64	/* of a key quoted in an error message */

struct map_entry {
	uint32_t key_off;
	uint32_t key_len;
	uint32_t value_off;
	uint32_t line;
};

struct rm_map {
	_Atomic uint32_t refs;
	uint32_t count;
	uint32_t hash_mask;
	struct map_entry *entries;
	uint32_t *hash;
	char *strings;
	size_t strings_bytes;
};

/* --- errors -------------------------------------------------------------------------- */

static void sanitize_line(char *s, size_t size)
{
	for (size_t i = 0; i < size && s[i] != '\0'; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			s[i] = '?';
}

/* "NAME:LINE: reason" (line 0: "NAME: reason"), one line. */
static void __attribute__((format(printf, 5, 6)))
set_err(char *err, size_t err_size, const char *name, uint32_t line, const char *fmt, ...)
{
	va_list ap;
	int used;

	if (err == NULL || err_size == 0)
		return;
	if (line > 0)
		used = snprintf(err, err_size, "%s:%u: ", name, line);
	else
		used = snprintf(err, err_size, "%s: ", name);
	if (used >= 0 && (size_t)used < err_size) {
		va_start(ap, fmt);
		vsnprintf(err + used, err_size - (size_t)used, fmt, ap);
		va_end(ap);
	}
	sanitize_line(err, err_size);
}

/* --- parser ---------------------------------------------------------------------------- */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_bad_control(unsigned char c)
{
	return (c < 0x20 && !is_space((char)c)) || c == 0x7f;
}

static char lower_ascii(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

enum pass { PASS_COUNT, PASS_FILL };

struct parser {
	const char *name;
	const char *text;
	size_t len;
	size_t pos;			/* start of the next physical line */
	uint32_t line;			/* number of the line last read */
	char *err;
	size_t err_size;
	enum pass pass;

	/* The entry being assembled. */
	bool open;
	uint32_t entry_line;
	size_t entry_len;
	char entry[RM_MAP_LINE_BYTES_MAX + 1];

	/* PASS_COUNT results. */
	uint32_t count;
	size_t string_bytes;

	/* PASS_FILL target. */
	struct rm_map *map;
	size_t string_used;
};

static uint64_t key_hash(const char *key, size_t len)
{
	return XXH3_64bits(key, len);
}

static const char *entry_key(const struct rm_map *m, const struct map_entry *e)
{
	return m->strings + e->key_off;
}

/*
 * Finds lower-cased key in the table: returns the slot holding it, or
 * the empty slot where it would go (*found false).  At most 50% load, so
 * an empty slot always exists; the limit makes that an assertion.
 */
static uint32_t probe(const struct rm_map *m, const char *key, size_t len, bool *found)
{
	uint32_t i = (uint32_t)key_hash(key, len) & m->hash_mask;

	for (uint32_t n = 0; n <= m->hash_mask; n++, i = (i + 1) & m->hash_mask) {
		uint32_t v = m->hash[i];
		const struct map_entry *e;

		if (v == 0) {
			*found = false;
			return i;
		}
		e = &m->entries[v - 1];
		if (e->key_len == len && memcmp(entry_key(m, e), key, len) == 0) {
			*found = true;
			return i;
		}
	}
	rm_panic("maps: hash table full (count %u, slots %u)", m->count, m->hash_mask + 1);
}

/* Quoted key for messages, cut to ERR_KEY_CHARS_MAX. */
static int err_key_len(size_t len)
{
	return (int)(len > ERR_KEY_CHARS_MAX ? ERR_KEY_CHARS_MAX : len);
}

static int entry_done(struct parser *p)
{
	char *s = p->entry;
	size_t n = p->entry_len, key_len, v;

	p->open = false;
	/* The entry starts with text and has no trailing whitespace (trimmed on append). */
	for (key_len = 0; key_len < n && !is_space(s[key_len]); key_len++)
		s[key_len] = lower_ascii(s[key_len]);
	for (v = key_len; v < n && is_space(s[v]); v++)
		;
	if (key_len > RM_MAP_KEY_BYTES_MAX) {
		set_err(p->err, p->err_size, p->name, p->entry_line,
			"key longer than %d bytes", RM_MAP_KEY_BYTES_MAX);
		return -EINVAL;
	}
	if (v == n) {
		set_err(p->err, p->err_size, p->name, p->entry_line,
			"key \"%.*s\" has no value (expected: key whitespace value)",
			err_key_len(key_len), s);
		return -EINVAL;
	}

	if (p->pass == PASS_COUNT) {
		if (p->count >= RM_MAP_ENTRIES_MAX) {
			set_err(p->err, p->err_size, p->name, p->entry_line,
				"more than %u entries", RM_MAP_ENTRIES_MAX);
			return -EINVAL;
		}
		p->count++;
		p->string_bytes += key_len + 1 + (n - v) + 1;
		return 0;
	}

	struct rm_map *m = p->map;
	bool found;
	uint32_t slot;
	struct map_entry *e;

	RM_ASSERT(m->count < p->count);
	RM_ASSERT(p->string_used + key_len + 1 + (n - v) + 1 <= m->strings_bytes);
	slot = probe(m, s, key_len, &found);
	if (found) {
		set_err(p->err, p->err_size, p->name, p->entry_line,
			"duplicate key \"%.*s\" (first at line %u)", err_key_len(key_len), s,
			m->entries[m->hash[slot] - 1].line);
		return -EINVAL;
	}
	e = &m->entries[m->count];
	e->key_off = (uint32_t)p->string_used;
	e->key_len = (uint32_t)key_len;
	memcpy(m->strings + p->string_used, s, key_len);
	p->string_used += key_len;
	m->strings[p->string_used++] = '\0';
	e->value_off = (uint32_t)p->string_used;
	memcpy(m->strings + p->string_used, s + v, n - v);
	p->string_used += n - v;
	m->strings[p->string_used++] = '\0';
	e->line = p->entry_line;
	m->count++;
	m->hash[slot] = m->count;
	return 0;
}

/* Appends a piece of text (no surrounding whitespace) to the entry, after one space. */
static int entry_append(struct parser *p, const char *piece, size_t n)
{
	size_t sep = p->entry_len > 0 ? 1 : 0;

	if (p->entry_len + sep + n > RM_MAP_LINE_BYTES_MAX) {
		set_err(p->err, p->err_size, p->name, p->line,
			"entry (line %u with its continuation lines) longer than %d bytes",
			p->entry_line, RM_MAP_LINE_BYTES_MAX);
		return -EINVAL;
	}
	if (sep)
		p->entry[p->entry_len++] = ' ';
	memcpy(p->entry + p->entry_len, piece, n);
	p->entry_len += n;
	p->entry[p->entry_len] = '\0';
	return 0;
}

/* One physical line, without its LF; checks its length and bytes. */
static int read_line(struct parser *p, const char **line, size_t *n)
{
	const char *s = p->text + p->pos;
	size_t rest = p->len - p->pos;
	const char *lf = memchr(s, '\n', rest);
	size_t len = lf != NULL ? (size_t)(lf - s) : rest;

	p->line++;
	p->pos += len + (lf != NULL ? 1 : 0);
	if (len > RM_MAP_LINE_BYTES_MAX) {
		set_err(p->err, p->err_size, p->name, p->line, "line longer than %d bytes",
			RM_MAP_LINE_BYTES_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < len; i++) {
		if (is_bad_control((unsigned char)s[i])) {
			set_err(p->err, p->err_size, p->name, p->line,
				"control character 0x%02x at column %zu", (unsigned char)s[i],
				i + 1);
			return -EINVAL;
		}
	}
	*line = s;
	*n = len;
	return 0;
}

static int parse(struct parser *p)
{
	int rc;

	p->pos = 0;
	p->line = 0;
	p->open = false;
	/* Each turn consumes at least one byte (a line's text or its LF). */
	while (p->pos < p->len) {
		const char *s;
		size_t n, b, e;
		bool indented;

		rc = read_line(p, &s, &n);
		if (rc != 0)
			return rc;
		for (b = 0; b < n && is_space(s[b]); b++)
			;
		for (e = n; e > b && is_space(s[e - 1]); e--)
			;
		indented = b > 0;
		if (b == n) {				/* blank: ends the entry */
			if (p->open && (rc = entry_done(p)) != 0)
				return rc;
			continue;
		}
		if (s[b] == '#') {			/* comment */
			if (!indented && p->open && (rc = entry_done(p)) != 0)
				return rc;
			continue;
		}
		if (indented) {				/* continuation */
			if (!p->open) {
				set_err(p->err, p->err_size, p->name, p->line,
					"continuation line (starts with whitespace) with no entry before it");
				return -EINVAL;
			}
			rc = entry_append(p, s + b, e - b);
			if (rc != 0)
				return rc;
			continue;
		}
		if (p->open && (rc = entry_done(p)) != 0)	/* text: a new entry */
			return rc;
		p->open = true;
		p->entry_line = p->line;
		p->entry_len = 0;
		rc = entry_append(p, s, e);
		if (rc != 0)
			return rc;
	}
	if (p->open)
		return entry_done(p);
	return 0;
}

/* --- load ------------------------------------------------------------------------------ */

static void map_destroy(struct rm_map *m)
{
	if (m == NULL)
		return;
	free(m->entries);
	free(m->hash);
	free(m->strings);
	free(m);
}

static uint32_t hash_slots_for(uint32_t count)
{
	uint32_t slots = HASH_SLOTS_MIN;

	/* count <= RM_MAP_ENTRIES_MAX < 2^20, so this stops by 2^21. */
	while (slots < 2u * count)
		slots <<= 1;
	return slots;
}

int rm_map_load_buffer(const char *name, const char *text, size_t len, struct rm_map **out,
		       char *err, size_t err_size)
{
	struct parser *p;
	struct rm_map *m;
	uint32_t slots;
	int rc;

	*out = NULL;
	if (name == NULL)
		name = "(map)";
	if (err != NULL && err_size > 0)
		err[0] = '\0';
	if (len > RM_MAP_FILE_BYTES_MAX) {
		set_err(err, err_size, name, 0, "longer than %u bytes", RM_MAP_FILE_BYTES_MAX);
		return -EFBIG;
	}
	if (text == NULL && len > 0) {
		set_err(err, err_size, name, 0, "no text");
		return -EINVAL;
	}
	/* The parser holds a line buffer: off the stack of a worker thread. */
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		set_err(err, err_size, name, 0, "out of memory");
		return -ENOMEM;
	}
	p->name = name;
	p->text = text;
	p->len = len;
	p->err = err;
	p->err_size = err_size;
	p->pass = PASS_COUNT;
	rc = parse(p);
	if (rc != 0)
		goto out;

	rc = -ENOMEM;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		goto nomem;
	slots = hash_slots_for(p->count);
	m->hash_mask = slots - 1;
	m->strings_bytes = p->string_bytes;
	m->entries = calloc(p->count > 0 ? p->count : 1, sizeof(*m->entries));
	m->hash = calloc(slots, sizeof(*m->hash));
	m->strings = malloc(p->string_bytes > 0 ? p->string_bytes : 1);
	if (m->entries == NULL || m->hash == NULL || m->strings == NULL) {
		map_destroy(m);
		goto nomem;
	}
	atomic_init(&m->refs, 1);

	p->pass = PASS_FILL;
	p->map = m;
	rc = parse(p);
	if (rc != 0) {
		map_destroy(m);
		goto out;
	}
	RM_ASSERT(m->count == p->count && p->string_used == p->string_bytes);
	*out = m;
	goto out;
nomem:
	set_err(err, err_size, name, 0, "out of memory");
out:
	free(p);
	return rc;
}

int rm_map_load_file(const char *path, struct rm_map **out, char *err, size_t err_size)
{
	struct stat st;
	char *buf;
	size_t size, got = 0;
	unsigned interrupted = 0;
	int fd, rc;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		set_err(err, err_size, path, 0, "cannot open: %s", strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		set_err(err, err_size, path, 0, "cannot stat: %s", strerror(errno));
		close(fd);
		return rc;
	}
	if (!S_ISREG(st.st_mode)) {
		set_err(err, err_size, path, 0, "not a regular file");
		close(fd);
		return -EINVAL;
	}
	if (st.st_size > (off_t)RM_MAP_FILE_BYTES_MAX) {
		set_err(err, err_size, path, 0, "longer than %u bytes", RM_MAP_FILE_BYTES_MAX);
		close(fd);
		return -EFBIG;
	}
	size = (size_t)st.st_size;
	buf = malloc(size > 0 ? size : 1);
	if (buf == NULL) {
		set_err(err, err_size, path, 0, "out of memory");
		close(fd);
		return -ENOMEM;
	}
	/* Up to the size seen at fstat: a file that grows meanwhile is read as it was. */
	while (got < size) {
		ssize_t n = read(fd, buf + got, size - got);

		if (n > 0) {
			got += (size_t)n;
		} else if (n == 0) {
			break;				/* shrank meanwhile */
		} else if (errno == EINTR && interrupted++ < READ_EINTR_MAX) {
			continue;
		} else {
			rc = -errno;
			set_err(err, err_size, path, 0, "cannot read: %s", strerror(errno));
			free(buf);
			close(fd);
			return rc;
		}
	}
	close(fd);
	rc = rm_map_load_buffer(path, buf, got, out, err, err_size);
	free(buf);
	return rc;
}

/* --- lookups --------------------------------------------------------------------------- */

const char *rm_map_get(const struct rm_map *m, const char *key, size_t key_len)
{
	char lower[RM_MAP_KEY_BYTES_MAX];
	bool found;
	uint32_t slot;

	if (m == NULL || key == NULL || key_len == 0 || key_len > RM_MAP_KEY_BYTES_MAX)
		return NULL;
	for (size_t i = 0; i < key_len; i++)
		lower[i] = lower_ascii(key[i]);
	slot = probe(m, lower, key_len, &found);
	if (!found)
		return NULL;
	return m->strings + m->entries[m->hash[slot] - 1].value_off;
}

static const char *get_joined(const struct rm_map *m, const char *a, size_t a_len,
			      const char *b, size_t b_len)
{
	char key[RM_MAP_KEY_BYTES_MAX];

	if (a_len + 1 + b_len > sizeof(key))
		return NULL;
	memcpy(key, a, a_len);
	key[a_len] = '@';
	memcpy(key + a_len + 1, b, b_len);
	return rm_map_get(m, key, a_len + 1 + b_len);
}

const char *rm_map_get_address(const struct rm_map *m, const char *addr, size_t len)
{
	const char *at, *domain, *value;
	size_t local_len, domain_len;

	if (m == NULL || addr == NULL)
		return NULL;
	at = memrchr(addr, '@', len);
	if (at == NULL)
		return rm_map_get(m, addr, len);
	local_len = (size_t)(at - addr);
	domain = at + 1;
	domain_len = len - local_len - 1;
	if (domain_len > 0 && domain[domain_len - 1] == '.')
		domain_len--;

	value = get_joined(m, addr, local_len, domain, domain_len);
	if (value == NULL && domain_len > 0)
		value = get_joined(m, "", 0, domain, domain_len);
	if (value == NULL && local_len > 0)
		value = get_joined(m, addr, local_len, "", 0);
	return value;
}

uint32_t rm_map_count(const struct rm_map *m)
{
	return m == NULL ? 0 : m->count;
}

bool rm_map_entry(const struct rm_map *m, uint32_t i, const char **key, const char **value,
		  uint32_t *line)
{
	const struct map_entry *e;

	if (m == NULL || i >= m->count)
		return false;
	e = &m->entries[i];
	if (key != NULL)
		*key = m->strings + e->key_off;
	if (value != NULL)
		*value = m->strings + e->value_off;
	if (line != NULL)
		*line = e->line;
	return true;
}

/* --- sharing --------------------------------------------------------------------------- */

struct rm_map *rm_map_ref(struct rm_map *m)
{
	if (m != NULL) {
		uint32_t old = atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);

		RM_ASSERT(old > 0 && old < UINT32_MAX);
	}
	return m;
}

void rm_map_unref(struct rm_map *m)
{
	uint32_t old;

	if (m == NULL)
		return;
	/* Release our uses of the map; the last one acquires them all before freeing. */
	old = atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel);
	RM_ASSERT(old > 0);
	if (old == 1)
		map_destroy(m);
}

void rm_map_free(struct rm_map *m)
{
	if (m == NULL)
		return;
	RM_ASSERT(atomic_load_explicit(&m->refs, memory_order_acquire) == 1);
	map_destroy(m);
}

/* --- value lists ----------------------------------------------------------------------- */

size_t rm_map_value_list(const char *value, const char **items, size_t *lens, size_t max)
{
	size_t total = 0;
	size_t len, i = 0;

	if (value == NULL)
		return 0;
	len = strlen(value);
	while (i < len && total < max) {
		size_t start;

		while (i < len && (value[i] == ',' || is_space(value[i]) || value[i] == '\n'))
			i++;
		if (i == len)
			break;
		start = i;
		while (i < len && !(value[i] == ',' || is_space(value[i]) || value[i] == '\n'))
			i++;
		if (items != NULL)
			items[total] = value + start;
		if (lens != NULL)
			lens[total] = i - start;
		total++;
	}
	return total;
}
