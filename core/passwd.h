/*
 * NAME
 *	passwd - the password file of SMTP AUTH: user names and crypt hashes
 * SUMMARY
 *	#include "core/passwd.h"
 *
 *	int rm_passwd_load(const char *path, struct rm_passwd **out, char *err,
 *			   size_t err_size, rm_passwd_warn_fn warn, void *arg);
 *	void rm_passwd_ref(struct rm_passwd *pw);
 *	void rm_passwd_unref(struct rm_passwd *pw);
 *	bool rm_passwd_verify(const struct rm_passwd *pw, const char *user, size_t user_len,
 *			      const char *pass, size_t pass_len);
 *	uint32_t rm_passwd_count(const struct rm_passwd *pw);
 * DESCRIPTION
 *	The file is what Dovecot's passwd-file and a Postfix SASL database
 *	hold, reduced to two fields: one "user:hash" per line, LF ended (the
 *	last line may lack it).  An empty line, or one of only SP and HT, is
 *	blank; a line whose first byte is '#' is a comment; both are skipped.
 *	Any other line is an entry: the user name is everything before the
 *	first ':', the hash everything after it.  No other white space, no
 *	CR (a CR LF file is refused, naming the line: fix the file rather than
 *	have a password that cannot match), no control byte, no extra fields.
 *
 *	User names: 1 to RM_PASSWD_USER_BYTES_MAX (255, the SASL authcid
 *	limit) bytes, no SP.  Names are compared as bytes after ASCII A-Z is
 *	folded to a-z in the whole name, at load and at verify, so
 *	"Demo@Dev.Test" and "demo@dev.test" are one user (and two lines for
 *	them a duplicate); other bytes, UTF-8 included, are compared exactly.
 *	RFC 5321 would leave the local part's case to the domain; a mail
 *	relay's own login names gain nothing from that but confusion.  A name
 *	twice is an error.
 *
 *	Hashes: crypt(5) strings, at most RM_PASSWD_HASH_BYTES_MAX (383, what
 *	crypt_rn can produce), judged by libxcrypt's crypt_checksalt:
 *	  CRYPT_SALT_OK                     loaded ($y$ yescrypt, $gy$, $7$,
 *	                                    $2b$ bcrypt, $6$ sha512-crypt, ...)
 *	  CRYPT_SALT_INVALID                refused ("*", "!", "x", garbage:
 *	                                    a locked account is a line removed)
 *	  CRYPT_SALT_METHOD_DISABLED        refused
 *	  CRYPT_SALT_METHOD_LEGACY          loaded, and warned about ($1$ md5,
 *	  CRYPT_SALT_TOO_CHEAP              $5$, DES "abJnggxhB/yWI", "_"...):
 *	                                    they still verify, but should be
 *	                                    replaced by a yescrypt hash
 *	crypt_checksalt judges the setting (method and parameters), and takes
 *	"$y$" or "$6$abc$x" as good settings; a hash must also be complete, so
 *	for the methods whose output length is fixed (yescrypt, gost-yescrypt,
 *	scrypt, bcrypt, sha512-, sha256-, md5-crypt, DES, BSDi) the part after
 *	the last '$' (or the whole hash, for DES and BSDi) must have that
 *	length in crypt's alphabet ./0-9A-Za-z; for any other method it must
 *	not be empty.  Otherwise the line is refused as an incomplete hash.
 *	Legacy DES, in particular, loads with a warning: it uses only the
 *	first 8 bytes of a password.
 *
 *	Limits: RM_PASSWD_LINE_BYTES_MAX (4096) bytes a line without its LF,
 *	RM_PASSWD_USERS_MAX (1,000,000) entries, RM_PASSWD_FILE_BYTES_MAX
 *	(1 GiB) the file.  The table (entries, their strings and an open
 *	addressing index of 2 to 4 slots per entry) is allocated once the file
 *	is read; it is never changed after, so any number of threads may
 *	verify against it at once.
 *
 *	Life: rm_passwd_load gives a table with one reference.  At SIGHUP the
 *	daemon loads the file again and, if that worked, publishes the new
 *	table and drops its reference to the old one; whoever still uses the
 *	old one (a verification in the auth pool) holds a reference of its own
 *	(rm_passwd_ref, atomic) and drops it when done (rm_passwd_unref); the
 *	last unref frees it.  A NULL table is ignored by rm_passwd_unref.
 *
 *	rm_passwd_verify runs crypt_rn (tens of milliseconds for yescrypt: on
 *	an auth pool thread, never on an io_uring worker) with a struct
 *	crypt_data on its own stack (32 KiB; and yescrypt's own 16 MiB or so
 *	that libxcrypt allocates), compares the result with the stored hash in
 *	time that does not depend on where they differ, and wipes its copies
 *	of the password (explicit_bzero).  For a user that is not in the table
 *	it still runs crypt_rn, against the first yescrypt hash of the file
 *	(so with its cost), or against a fixed yescrypt hash of libxcrypt's
 *	default cost when the file has none, so that timing does not tell
 *	which users exist (in a file of mixed methods it tells a user's
 *	method, which is all the more reason for one method).  An empty
 *	password, one longer than RM_PASSWD_PASS_BYTES_MAX (1024, the SASL
 *	limit) or one holding a NUL (crypt would stop there) is refused before
 *	any lookup.
 * DIAGNOSTICS
 *	rm_passwd_load returns 0 and sets *out; or a negative errno (-EINVAL
 *	for the file's content, -EFBIG, -ENOMEM, or open's and read's own),
 *	sets *out to NULL, and writes one line without LF into err (if not
 *	NULL): "FILE:LINE: reason", or "FILE: reason" for what concerns the
 *	whole file.  Each legacy hash is reported, in the same form, through
 *	warn (if not NULL) while loading; warnings do not fail the load.  On
 *	success err is the empty string.
 *
 *	rm_passwd_verify returns true only for a user in the table whose hash
 *	the password matches; crypt failures count as a mismatch.
 */
#ifndef RM_PASSWD_H
#define RM_PASSWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RM_PASSWD_USERS_MAX 1000000u
#define RM_PASSWD_LINE_BYTES_MAX 4096u
#define RM_PASSWD_FILE_BYTES_MAX (1024ull * 1024 * 1024)
/* The SASL limits (proto/sasl.h RM_SASL_AUTHCID_BYTES_MAX, RM_SASL_PASSWD_BYTES_MAX). */
#define RM_PASSWD_USER_BYTES_MAX 255u
#define RM_PASSWD_PASS_BYTES_MAX 1024u
/* CRYPT_OUTPUT_SIZE - 1: the longest string crypt_rn returns. */
#define RM_PASSWD_HASH_BYTES_MAX 383u

struct rm_passwd;

typedef void (*rm_passwd_warn_fn)(const char *msg, void *arg);

int rm_passwd_load(const char *path, struct rm_passwd **out, char *err, size_t err_size,
		   rm_passwd_warn_fn warn, void *arg);
void rm_passwd_ref(struct rm_passwd *pw);
void rm_passwd_unref(struct rm_passwd *pw);
bool rm_passwd_verify(const struct rm_passwd *pw, const char *user, size_t user_len,
		      const char *pass, size_t pass_len);
uint32_t rm_passwd_count(const struct rm_passwd *pw);

#endif
