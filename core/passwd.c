/*
 * NAME
 *	passwd - the password file of SMTP AUTH: user names and crypt hashes
 * SUMMARY
 *	See core/passwd.h for the interface.
 * DESCRIPTION
 *	Loading reads the file in 64 KiB blocks (read(2), so a NUL in it is a
 *	byte like any other and is refused by name, which fgets could not do),
 *	cuts lines into a buffer of RM_PASSWD_LINE_BYTES_MAX + 1 bytes, and
 *	appends each entry to two growing arrays: the entries (offset, lengths,
 *	line number) and one string arena ("user\0hash\0" per entry, the hash
 *	NUL-terminated for crypt_rn).  Offsets rather than pointers, since the
 *	arena moves as it grows.  When the file is read, the index is built:
 *	open addressing with linear probing over a power of two of at least
 *	twice the entries, each slot an entry number + 1 (0: empty), hashed
 *	with XXH3.  Duplicates are found while it is built, in file order, so
 *	the error names the second line and the first.
 *
 *	The file is the administrator's, not an attacker's, so the index needs
 *	no secret seed; every probe loop is still bounded by the table size.
 * DIAGNOSTICS
 *	See the header.
 */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/log.h"
#include "core/passwd.h"

_Static_assert(RM_PASSWD_HASH_BYTES_MAX == CRYPT_OUTPUT_SIZE - 1, "crypt output size");
_Static_assert(RM_PASSWD_USERS_MAX < UINT32_MAX / 4, "index slots fit 32 bits");

#define READ_BLOCK_BYTES 65536u
#define WARN_BYTES_MAX 1024u

/*
 * A yescrypt hash at libxcrypt's default cost (crypt_gensalt_rn("$y$", 0)),
 * of a password nobody knows: what an unknown user is checked against when
 * the file has no yescrypt hash of its own.
 */
static const char dummy_yescrypt[] =
	"$y$j9T$nDSYMteaNsXpKcs8WeAZJ.$eCMRpNmYRZl9sy29/xRyzjfNQ.hT/ZKdYeoZL2x8Nh6";

struct entry {
	size_t off;		/* into the arena: user, NUL, hash, NUL */
	unsigned long long line;
	uint16_t user_len;
	uint16_t hash_len;
};

struct rm_passwd {
	_Atomic uint32_t refs;
	uint32_t count;
	uint32_t mask;		/* slots - 1 */
	uint32_t *slots;	/* entry number + 1; 0: empty */
	struct entry *entries;
	char *arena;
	size_t arena_len;
	const char *dummy;	/* into the arena, or dummy_yescrypt */
};

/* Loading state. */
struct loader {
	const char *path;
	char *err;
	size_t err_size;
	rm_passwd_warn_fn warn;
	void *warn_arg;
	struct rm_passwd *pw;
	size_t entries_cap;
	size_t arena_cap;
};

/* The fixed output lengths of the methods that have one (see the header). */
struct method_len {
	const char *prefix;
	size_t len;		/* of the part after the last '$' */
};

static const struct method_len method_lens[] = {
	{ "$y$", 43 },  { "$gy$", 43 }, { "$7$", 43 },  { "$2b$", 53 }, { "$2a$", 53 },
	{ "$2y$", 53 }, { "$2x$", 53 }, { "$6$", 86 },  { "$5$", 43 },  { "$1$", 22 },
};

#define DES_HASH_BYTES 13u
#define BSDI_HASH_BYTES 20u

__attribute__((format(printf, 3, 4)))
static int fail(struct loader *ld, int rc, const char *fmt, ...)
{
	va_list ap;

	if (ld->err != NULL && ld->err_size > 0) {
		va_start(ap, fmt);
		vsnprintf(ld->err, ld->err_size, fmt, ap);
		va_end(ap);
	}
	return rc;
}

__attribute__((format(printf, 2, 3)))
static void warn(struct loader *ld, const char *fmt, ...)
{
	char msg[WARN_BYTES_MAX];
	va_list ap;

	if (ld->warn == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ld->warn(msg, ld->warn_arg);
}

static bool crypt64_char(char c)
{
	return c == '.' || c == '/' || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
	       (c >= 'a' && c <= 'z');
}

static bool crypt64_span(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!crypt64_char(s[i]))
			return false;
	return true;
}

/* Whether a hash that crypt_checksalt accepts is a whole hash, not only a setting. */
static bool hash_complete(const char *h, size_t len)
{
	const char *last;
	size_t tail;

	if (h[0] != '$') {
		/* DES is 13 characters, BSDi "_" 20, all of crypt's alphabet after the "_". */
		if (h[0] == '_')
			return len == BSDI_HASH_BYTES && crypt64_span(h + 1, len - 1);
		return len == DES_HASH_BYTES && crypt64_span(h, len);
	}
	last = memrchr(h, '$', len);
	tail = len - (size_t)(last - h) - 1;
	for (size_t i = 0; i < sizeof(method_lens) / sizeof(method_lens[0]); i++) {
		size_t plen = strlen(method_lens[i].prefix);

		if (len > plen && memcmp(h, method_lens[i].prefix, plen) == 0)
			return (size_t)(last - h) >= plen - 1 && tail == method_lens[i].len &&
			       crypt64_span(last + 1, tail);
	}
	return tail > 0;
}

static void lower_ascii(char *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = src[i] >= 'A' && src[i] <= 'Z' ? (char)(src[i] - 'A' + 'a') : src[i];
}

/* Room for one more entry of need arena bytes; grown by doubling, within the limits. */
static int reserve(struct loader *ld, size_t need)
{
	struct rm_passwd *pw = ld->pw;

	if (pw->count == ld->entries_cap) {
		size_t cap = ld->entries_cap == 0 ? 64 : ld->entries_cap * 2;
		struct entry *e;

		if (cap > RM_PASSWD_USERS_MAX)
			cap = RM_PASSWD_USERS_MAX;
		e = realloc(pw->entries, cap * sizeof(*e));
		if (e == NULL)
			return -ENOMEM;
		pw->entries = e;
		ld->entries_cap = cap;
	}
	if (ld->arena_cap - pw->arena_len < need) {
		size_t cap = ld->arena_cap == 0 ? 4096 : ld->arena_cap;
		char *a;

		/* need <= 2 * RM_PASSWD_LINE_BYTES_MAX and the arena < 2 GiB: no overflow. */
		while (cap - pw->arena_len < need)
			cap *= 2;
		a = realloc(pw->arena, cap);
		if (a == NULL)
			return -ENOMEM;
		pw->arena = a;
		ld->arena_cap = cap;
	}
	return 0;
}

static bool blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t')
			return false;
	return true;
}

static int check_hash(struct loader *ld, unsigned long long line, const char *user,
		      const char *hash, size_t hash_len)
{
	int cs;

	if (hash_len == 0)
		return fail(ld, -EINVAL, "%s:%llu: empty hash", ld->path, line);
	if (hash_len > RM_PASSWD_HASH_BYTES_MAX)
		return fail(ld, -EINVAL, "%s:%llu: hash longer than %u bytes", ld->path, line,
			    RM_PASSWD_HASH_BYTES_MAX);
	if (memchr(hash, ' ', hash_len) != NULL || memchr(hash, ':', hash_len) != NULL)
		return fail(ld, -EINVAL, "%s:%llu: SP or ':' in hash (one user:hash a line)",
			    ld->path, line);
	cs = crypt_checksalt(hash);
	switch (cs) {
	case CRYPT_SALT_OK:
		break;
	case CRYPT_SALT_METHOD_LEGACY:
		warn(ld, "%s:%llu: user %s: legacy hash method; replace it with yescrypt ($y$)",
		     ld->path, line, user);
		break;
	case CRYPT_SALT_TOO_CHEAP:
		warn(ld, "%s:%llu: user %s: hash cost too low; replace it with yescrypt ($y$)",
		     ld->path, line, user);
		break;
	case CRYPT_SALT_METHOD_DISABLED:
		return fail(ld, -EINVAL, "%s:%llu: hash method disabled in libxcrypt", ld->path,
			    line);
	case CRYPT_SALT_INVALID:
	default:
		return fail(ld, -EINVAL, "%s:%llu: invalid hash (not a crypt hash libxcrypt knows)",
			    ld->path, line);
	}
	if (!hash_complete(hash, hash_len))
		return fail(ld, -EINVAL, "%s:%llu: incomplete hash (a setting without its hash?)",
			    ld->path, line);
	return 0;
}

/*
 * One line, without its LF, in a buffer with room for a NUL after it: blank,
 * comment, or an entry appended to the table.
 */
static int add_line(struct loader *ld, char *s, size_t n, unsigned long long line)
{
	struct rm_passwd *pw = ld->pw;
	const char *colon;
	size_t user_len, hash_len;
	char *dst;
	int rc;

	s[n] = '\0';	/* crypt_checksalt reads the hash as a C string */
	if (blank(s, n) || s[0] == '#')
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			return fail(ld, -EINVAL, "%s:%llu: control character 0x%02x%s", ld->path,
				    line, c, c == '\r' ? " (CR LF line end?)" : "");
	}
	colon = memchr(s, ':', n);
	if (colon == NULL)
		return fail(ld, -EINVAL, "%s:%llu: no ':' between user and hash", ld->path, line);
	user_len = (size_t)(colon - s);
	hash_len = n - user_len - 1;
	if (user_len == 0)
		return fail(ld, -EINVAL, "%s:%llu: empty user name", ld->path, line);
	if (user_len > RM_PASSWD_USER_BYTES_MAX)
		return fail(ld, -EINVAL, "%s:%llu: user name longer than %u bytes", ld->path, line,
			    RM_PASSWD_USER_BYTES_MAX);
	if (memchr(s, ' ', user_len) != NULL)
		return fail(ld, -EINVAL, "%s:%llu: SP in user name", ld->path, line);
	if (pw->count == RM_PASSWD_USERS_MAX)
		return fail(ld, -EINVAL, "%s:%llu: more than %u users", ld->path, line,
			    RM_PASSWD_USERS_MAX);
	/* Lower-case in place, so the warning and the table both show the name as compared. */
	lower_ascii(s, s, user_len);
	s[user_len] = '\0';
	rc = check_hash(ld, line, s, colon + 1, hash_len);
	if (rc != 0)
		return rc;
	rc = reserve(ld, user_len + hash_len + 2);
	if (rc != 0)
		return fail(ld, rc, "%s:%llu: out of memory", ld->path, line);
	dst = pw->arena + pw->arena_len;
	memcpy(dst, s, user_len + 1);
	memcpy(dst + user_len + 1, colon + 1, hash_len);
	dst[user_len + 1 + hash_len] = '\0';
	pw->entries[pw->count] = (struct entry){ .off = pw->arena_len, .line = line,
						 .user_len = (uint16_t)user_len,
						 .hash_len = (uint16_t)hash_len };
	pw->count++;
	pw->arena_len += user_len + hash_len + 2;
	return 0;
}

static const char *entry_user(const struct rm_passwd *pw, const struct entry *e)
{
	return pw->arena + e->off;
}

static const char *entry_hash(const struct rm_passwd *pw, const struct entry *e)
{
	return pw->arena + e->off + e->user_len + 1;
}

/* The entry of a (lower-cased) user, or NULL.  At most mask + 1 probes. */
static const struct entry *lookup(const struct rm_passwd *pw, const char *user, size_t len)
{
	uint32_t i = (uint32_t)XXH3_64bits(user, len) & pw->mask;

	for (uint32_t probes = 0; probes <= pw->mask; probes++, i = (i + 1) & pw->mask) {
		const struct entry *e;

		if (pw->slots[i] == 0)
			return NULL;
		e = &pw->entries[pw->slots[i] - 1];
		if (e->user_len == len && memcmp(entry_user(pw, e), user, len) == 0)
			return e;
	}
	return NULL;
}

static int build_index(struct loader *ld)
{
	struct rm_passwd *pw = ld->pw;
	uint32_t slots = 16;

	while (slots < 2 * pw->count)
		slots *= 2;
	pw->slots = calloc(slots, sizeof(*pw->slots));
	if (pw->slots == NULL)
		return fail(ld, -ENOMEM, "%s: out of memory", ld->path);
	pw->mask = slots - 1;
	for (uint32_t n = 0; n < pw->count; n++) {
		const struct entry *e = &pw->entries[n];
		const char *user = entry_user(pw, e);
		uint32_t i = (uint32_t)XXH3_64bits(user, e->user_len) & pw->mask;

		/* At least half the slots are empty, so this ends well before slots probes. */
		for (uint32_t probes = 0; pw->slots[i] != 0; probes++, i = (i + 1) & pw->mask) {
			const struct entry *o = &pw->entries[pw->slots[i] - 1];

			RM_ASSERT(probes < slots);
			if (o->user_len == e->user_len &&
			    memcmp(entry_user(pw, o), user, e->user_len) == 0)
				return fail(ld, -EINVAL, "%s:%llu: duplicate user %s (first at line %llu)",
					    ld->path, e->line, user, o->line);
		}
		pw->slots[i] = n + 1;
		if (pw->dummy == NULL && strncmp(entry_hash(pw, e), "$y$", 3) == 0)
			pw->dummy = entry_hash(pw, e);
	}
	if (pw->dummy == NULL)
		pw->dummy = dummy_yescrypt;
	return 0;
}

/* Read the whole file, line by line, into ld->pw. */
static int read_file(struct loader *ld, int fd)
{
	static const size_t line_cap = RM_PASSWD_LINE_BYTES_MAX;
	char *block = malloc(READ_BLOCK_BYTES), *line = malloc(line_cap + 1);
	unsigned long long lineno = 1, total = 0;
	size_t len = 0;
	int rc = 0;

	if (block == NULL || line == NULL) {
		rc = fail(ld, -ENOMEM, "%s: out of memory", ld->path);
		goto out;
	}
	for (;;) {
		ssize_t got = read(fd, block, READ_BLOCK_BYTES);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = -errno;
			fail(ld, rc, "%s:%llu: read: %s", ld->path, lineno, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		total += (unsigned long long)got;
		if (total > RM_PASSWD_FILE_BYTES_MAX) {
			rc = fail(ld, -EFBIG, "%s: larger than %llu bytes", ld->path,
				  RM_PASSWD_FILE_BYTES_MAX);
			goto out;
		}
		for (size_t i = 0; i < (size_t)got;) {
			const char *nl = memchr(block + i, '\n', (size_t)got - i);
			size_t take = nl != NULL ? (size_t)(nl - block) - i : (size_t)got - i;

			if (take > line_cap - len) {
				rc = fail(ld, -EINVAL, "%s:%llu: line longer than %zu bytes", ld->path,
					  lineno, line_cap);
				goto out;
			}
			memcpy(line + len, block + i, take);
			len += take;
			i += take;
			if (nl == NULL)
				break;
			rc = add_line(ld, line, len, lineno);
			if (rc != 0)
				goto out;
			lineno++;
			len = 0;
			i++;	/* the LF */
		}
	}
	if (len > 0)
		rc = add_line(ld, line, len, lineno);
out:
	free(block);
	if (line != NULL)
		explicit_bzero(line, line_cap + 1);
	free(line);
	return rc;
}

static void destroy(struct rm_passwd *pw)
{
	if (pw == NULL)
		return;
	/* Hashes are not passwords, but they are what an offline attack needs. */
	if (pw->arena != NULL)
		explicit_bzero(pw->arena, pw->arena_len);
	free(pw->arena);
	free(pw->entries);
	free(pw->slots);
	free(pw);
}

int rm_passwd_load(const char *path, struct rm_passwd **out, char *err, size_t err_size,
		   rm_passwd_warn_fn warn_fn, void *arg)
{
	struct loader ld = { .path = path, .err = err, .err_size = err_size, .warn = warn_fn,
			     .warn_arg = arg };
	struct stat st;
	int fd, rc;

	*out = NULL;
	if (err != NULL && err_size > 0)
		err[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return fail(&ld, -errno, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) != 0) {
		rc = fail(&ld, -errno, "%s: %s", path, strerror(errno));
		close(fd);
		return rc;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return fail(&ld, -EINVAL, "%s: not a regular file", path);
	}
	ld.pw = calloc(1, sizeof(*ld.pw));
	if (ld.pw == NULL) {
		close(fd);
		return fail(&ld, -ENOMEM, "%s: out of memory", path);
	}
	rc = read_file(&ld, fd);
	close(fd);
	if (rc == 0)
		rc = build_index(&ld);
	if (rc != 0) {
		destroy(ld.pw);
		return rc;
	}
	atomic_init(&ld.pw->refs, 1);
	*out = ld.pw;
	return 0;
}

void rm_passwd_ref(struct rm_passwd *pw)
{
	uint32_t prev = atomic_fetch_add_explicit(&pw->refs, 1, memory_order_relaxed);

	RM_ASSERT(prev > 0 && prev < UINT32_MAX);
}

void rm_passwd_unref(struct rm_passwd *pw)
{
	uint32_t prev;

	if (pw == NULL)
		return;
	/* Release our uses of the table; the last one acquires everybody's before freeing. */
	prev = atomic_fetch_sub_explicit(&pw->refs, 1, memory_order_acq_rel);
	RM_ASSERT(prev > 0);
	if (prev == 1)
		destroy(pw);
}

uint32_t rm_passwd_count(const struct rm_passwd *pw)
{
	return pw->count;
}

/*
 * crypt's output against the stored hash, in time that depends only on their
 * lengths (public: fixed by the method), not on where they differ.
 */
static bool same_hash(const char *got, const char *want)
{
	size_t got_len = strnlen(got, CRYPT_OUTPUT_SIZE), want_len = strlen(want);
	volatile unsigned char diff = got_len != want_len;

	for (size_t i = 0; i < want_len; i++)
		diff |= (unsigned char)((i < got_len ? got[i] : 0) ^ want[i]);
	return diff == 0;
}

bool rm_passwd_verify(const struct rm_passwd *pw, const char *user, size_t user_len,
		      const char *pass, size_t pass_len)
{
	char key[RM_PASSWD_USER_BYTES_MAX];
	char phrase[RM_PASSWD_PASS_BYTES_MAX + 1];
	struct crypt_data cd;
	const struct entry *e = NULL;
	const char *setting, *res;
	bool ok;

	/* Nothing here depends on the user: refusing early tells nothing about who exists. */
	if (pass_len == 0 || pass_len > RM_PASSWD_PASS_BYTES_MAX || memchr(pass, 0, pass_len) != NULL)
		return false;
	if (user_len > 0 && user_len <= sizeof(key)) {
		lower_ascii(key, user, user_len);
		e = lookup(pw, key, user_len);
	}
	setting = e != NULL ? entry_hash(pw, e) : pw->dummy;
	memcpy(phrase, pass, pass_len);
	phrase[pass_len] = '\0';
	memset(&cd, 0, sizeof(cd));
	res = crypt_rn(phrase, setting, &cd, (int)sizeof(cd));
	ok = res != NULL && same_hash(res, setting) && e != NULL;
	explicit_bzero(phrase, sizeof(phrase));
	explicit_bzero(&cd, sizeof(cd));
	return ok;
}
