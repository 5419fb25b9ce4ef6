/*
 * NAME
 *	maps - lookup tables from Postfix-style text files ("texthash")
 * SUMMARY
 *	#include "core/maps.h"
 *
 *	int rm_map_load_file(const char *path, struct rm_map **out,
 *			     char *err, size_t err_size);
 *	int rm_map_load_buffer(const char *name, const char *text, size_t len,
 *			       struct rm_map **out, char *err, size_t err_size);
 *	const char *rm_map_get(const struct rm_map *m, const char *key, size_t key_len);
 *	const char *rm_map_get_address(const struct rm_map *m, const char *addr, size_t len);
 *	uint32_t rm_map_count(const struct rm_map *m);
 *	bool rm_map_entry(const struct rm_map *m, uint32_t i,
 *			  const char **key, const char **value, uint32_t *line);
 *	struct rm_map *rm_map_ref(struct rm_map *m);
 *	void rm_map_unref(struct rm_map *m);
 *	void rm_map_free(struct rm_map *m);
 *
 *	size_t rm_map_value_list(const char *value, const char **items, size_t *lens,
 *				 size_t max);
 * DESCRIPTION
 *	The file format is Postfix's texthash (what postmap(1) reads):
 *	  - each entry is "key<whitespace>value"; the key ends at the first
 *	    whitespace, the value is the rest with surrounding whitespace
 *	    trimmed and may contain spaces ("@example.org  alice, bob");
 *	  - empty and whitespace-only lines are ignored, and so are lines whose
 *	    first non-whitespace character is '#' (no comments after text);
 *	  - a line that starts with whitespace continues the entry before it
 *	    (so the value may also start on the next line); the pieces are
 *	    joined with one space (Postfix keeps the continuation's leading
 *	    whitespace as it is; values here never hold tabs or runs of
 *	    blanks that came from a line break).  As in Postfix, an empty line
 *	    or a line starting with text or with '#' ends the entry, while an
 *	    indented comment does not;
 *	  - keys are lower-cased (ASCII only: other bytes are kept as they
 *	    are, so UTF-8 keys match byte for byte) and looked up without
 *	    regard to ASCII case;
 *	  - whitespace is space, tab, CR, VT and FF; LF ends a line, so CRLF
 *	    files read as LF files; a NUL or another control character is an
 *	    error, as is a continuation with no entry before it, a key with no
 *	    value, and a key that appears twice (both line numbers are given:
 *	    Postfix keeps the last, silently, which hides mistakes).
 *	Limits: a line, and an entry with its continuations joined, at most
 *	RM_MAP_LINE_BYTES_MAX bytes (newline not counted); a key at most
 *	RM_MAP_KEY_BYTES_MAX; at most RM_MAP_ENTRIES_MAX entries; a file of
 *	at most RM_MAP_FILE_BYTES_MAX.  Going past one is an error naming it.
 *
 *	rm_map_load_buffer parses len bytes of text (no NUL needed); name is
 *	what error messages call it.  rm_map_load_file reads the whole file,
 *	then parses that buffer: the same code as the fuzzer drives.  The
 *	entries are counted and checked in a first pass, so the table is
 *	allocated once at its final size and a failed load allocates (and
 *	leaks) nothing; the map keeps no pointer into the text.
 *
 *	Lookups are O(1): an open-addressing hash table of at most 50% load
 *	(xxh3 of the lower-cased key).  rm_map_get returns the value, a
 *	NUL-terminated string that lives as long as the map, or NULL; a key
 *	longer than RM_MAP_KEY_BYTES_MAX is simply not found.
 *
 *	rm_map_get_address looks up a mailbox the way Postfix's access(5) and
 *	virtual(5) tables do, with the domain lower-cased and one trailing
 *	dot dropped, trying in order and returning the first found:
 *	  1. "user@domain"  the full address;
 *	  2. "@domain"      the whole domain (the catch-all that recipient
 *			    validation uses; a sender login map keys on 1 or 2);
 *	  3. "user@"        the local part in any domain.
 *	The caller passes the canonical rendered mailbox (quoted local part
 *	included as rendered); it is split at the last '@', since a quoted
 *	local part may hold '@' but a domain never does.  An address with no
 *	'@' is looked up as it is, and nothing else.  Step 2 is skipped for
 *	an empty domain, step 3 for an empty local part.  The whole match is
 *	case-insensitive (local parts too, as in Postfix: mailbox names that
 *	differ only in case are the same user everywhere we deliver).
 *	rm_map_get_address does not try parent domains (".example.org"
 *	style): Postfix's parent_domain_matches_subdomains is off for the
 *	tables this serves.
 *
 *	Sharing: a loaded map starts with one reference.  Maps are swapped at
 *	SIGHUP while workers may still be in the middle of a lookup in the old
 *	one: each holder takes a reference (rm_map_ref, which returns m) and
 *	drops it (rm_map_unref); the last drop frees.  The counter is atomic;
 *	the map itself is never written after load, so any number of threads
 *	may look up at once.  rm_map_free is for a map that was never shared:
 *	it asserts that one reference is left and frees.  Both accept NULL.
 *
 *	rm_map_count is the number of entries; rm_map_entry gives entry i
 *	(0 <= i < count) in file order, with its first line number (for
 *	ringmailctl and the fuzzer).
 *
 *	rm_map_value_list splits a value into items separated by commas
 *	and/or whitespace ("alice, bob carol" is three), skipping empty ones;
 *	it stores pointers into value and lengths (no NUL: the items are not
 *	terminated) for at most max items and returns how many it stored, so
 *	the result can index items and lens directly; items past max are
 *	ignored.  items or lens may be NULL: rm_map_value_list(v, NULL, NULL,
 *	SIZE_MAX) counts the items.
 * DIAGNOSTICS
 *	The loaders return 0, or a negative errno with one line in err (never
 *	a newline; control characters become '?'):
 *	  -EINVAL  "NAME:LINE: reason" for a syntax error or a limit;
 *	  -EFBIG   "NAME: reason", a file longer than RM_MAP_FILE_BYTES_MAX;
 *	  -ENOMEM  "NAME: out of memory";
 *	  -errno   "NAME: reason" when the file cannot be opened or read.
 *	Syntax and limits are checked over the whole text before duplicates
 *	(first pass, then second), so a syntax error later in the file is
 *	reported before a duplicate key earlier in it.  *out is NULL on
 *	failure.  Misuse (rm_map_free of a shared map) panics.
 */
#ifndef RM_MAPS_H
#define RM_MAPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RM_MAP_LINE_BYTES_MAX 4096
#define RM_MAP_KEY_BYTES_MAX 512
#define RM_MAP_ENTRIES_MAX 1000000u
#define RM_MAP_FILE_BYTES_MAX (256u << 20)

struct rm_map;

int rm_map_load_file(const char *path, struct rm_map **out, char *err, size_t err_size);
int rm_map_load_buffer(const char *name, const char *text, size_t len, struct rm_map **out,
		       char *err, size_t err_size);
const char *rm_map_get(const struct rm_map *m, const char *key, size_t key_len);
const char *rm_map_get_address(const struct rm_map *m, const char *addr, size_t len);
uint32_t rm_map_count(const struct rm_map *m);
bool rm_map_entry(const struct rm_map *m, uint32_t i, const char **key, const char **value,
		  uint32_t *line);
struct rm_map *rm_map_ref(struct rm_map *m);
void rm_map_unref(struct rm_map *m);
void rm_map_free(struct rm_map *m);

size_t rm_map_value_list(const char *value, const char **items, size_t *lens, size_t max);

#endif
