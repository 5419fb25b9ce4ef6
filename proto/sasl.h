/*
 * NAME
 *	sasl - base64 and the SASL PLAIN and LOGIN messages (SMTP AUTH)
 * SUMMARY
 *	#include "proto/sasl.h"
 *
 *	size_t rm_base64_decoded_max(size_t len);
 *	size_t rm_base64_encoded_len(size_t len);
 *	ssize_t rm_base64_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap);
 *	ssize_t rm_base64_encode(const uint8_t *in, size_t len, char *out, size_t cap);
 *	enum rm_sasl_err rm_sasl_plain_parse(const uint8_t *msg, size_t len,
 *					     struct rm_sasl_plain *out);
 *	enum rm_sasl_err rm_sasl_login_field(const uint8_t *b64, size_t len, uint8_t *out,
 *					     size_t cap, size_t *out_len);
 *	bool rm_sasl_is_cancel(const uint8_t *line, size_t len);
 *	const char *rm_sasl_err_text(enum rm_sasl_err err);
 *
 *	RM_SASL_LOGIN_CHALLENGE_USERNAME	"VXNlcm5hbWU6" ("Username:")
 *	RM_SASL_LOGIN_CHALLENGE_PASSWORD	"UGFzc3dvcmQ6" ("Password:")
 * DESCRIPTION
 *	Pure codec: no I/O, no allocation, no state.  The caller owns every
 *	buffer; nothing here keeps a pointer past the call.
 *
 *	Base64 is RFC 4648 section 4, strictly, because RFC 4954 section 4
 *	says the AUTH exchange carries exactly that: the standard alphabet
 *	(A-Z a-z 0-9 + /), padding required (len % 4 == 0), '=' only as the
 *	last one or two characters, no white space or line breaks, and the
 *	unused bits before the padding zero ("QQ==" is "A", "QR==" is
 *	refused: RFC 4648 3.5 lets a decoder refuse it, and accepting it would
 *	make several encodings of one password).  The empty input decodes to
 *	nothing.  rm_base64_decoded_max(len) is what rm_base64_decode may write
 *	for len input bytes (len / 4 * 3); rm_base64_encoded_len(len) is what
 *	rm_base64_encode writes exactly (4 * ceil(len / 3), SIZE_MAX when that
 *	does not fit a size_t).  The encoder writes no NUL.
 *
 *	PLAIN (RFC 4616 section 2): message = [authzid] NUL authcid NUL passwd,
 *	already base64-decoded by the caller.  Exactly two NULs; authzid may
 *	be empty (then the client asks to act as itself), authcid and passwd
 *	may not; authzid and authcid at most RM_SASL_AUTHZID_BYTES_MAX and
 *	RM_SASL_AUTHCID_BYTES_MAX (255, the RFC's own limit), passwd at most
 *	RM_SASL_PASSWD_BYTES_MAX (1024; ours: a bound for the verifier's
 *	buffer and for the work a client can ask of crypt); each valid UTF-8
 *	(RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF;
 *	the same check as proto/smtp_addr's).  SASLprep (RFC 4013) is not
 *	applied: the password is compared as bytes, which is what Dovecot and
 *	Cyrus do too.  The result is three spans into msg, valid as long as
 *	msg is; an empty authzid is a zero-length span at msg.  The checks run
 *	in the order of the enum, the first failure is the answer, and once
 *	the two NULs are found the spans are set even when a later check
 *	fails (the session may log the authcid, escaped; never the passwd).
 *
 *	LOGIN (draft-murchison-sasl-login): the server sends the two
 *	challenges RM_SASL_LOGIN_CHALLENGE_USERNAME and _PASSWORD in turn; each
 *	client line is one base64 field, which rm_sasl_login_field decodes into
 *	out (at most cap bytes: the session passes its user or password
 *	buffer, so cap is the field's limit) and checks: not empty, no NUL.
 *	It does not require UTF-8: LOGIN predates that rule and some clients
 *	send their locale's charset; a user name that is not UTF-8 simply
 *	matches nobody.
 *
 *	rm_sasl_is_cancel says whether a client response line (without CR LF)
 *	is "*", the RFC 4954 section 4 cancellation; the session then answers
 *	501 5.0.0 and the exchange is over.
 *
 *	What the session answers (RFC 4954 section 6): a base64 error, and
 *	any PLAIN or LOGIN error, is 501 5.5.2 "cannot decode response"; the
 *	session must not say which field was wrong, lest a client learn which
 *	part of a guess to change (the text is for the log).  Pass the
 *	decoded password only to the verifier and wipe it (explicit_bzero)
 *	after.
 * DIAGNOSTICS
 *	rm_base64_decode and rm_base64_encode return the output length, or -1
 *	for input that is not strict base64 or an output buffer smaller than
 *	the result (then what was written to out is unspecified).
 *	rm_sasl_plain_parse and rm_sasl_login_field return RM_SASL_OK or the
 *	first failed check; rm_sasl_err_text gives a short English text for
 *	each value.
 */
#ifndef RM_SASL_H
#define RM_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* RFC 4616 section 2: authzid and authcid at most 255 octets; passwd: ours. */
#define RM_SASL_AUTHZID_BYTES_MAX 255u
#define RM_SASL_AUTHCID_BYTES_MAX 255u
#define RM_SASL_PASSWD_BYTES_MAX 1024u
/* The longest PLAIN message that can be good, and its base64 form. */
#define RM_SASL_PLAIN_BYTES_MAX \
	(RM_SASL_AUTHZID_BYTES_MAX + 1u + RM_SASL_AUTHCID_BYTES_MAX + 1u + RM_SASL_PASSWD_BYTES_MAX)
#define RM_SASL_PLAIN_BASE64_BYTES_MAX ((RM_SASL_PLAIN_BYTES_MAX + 2u) / 3u * 4u)

/* The LOGIN server challenges, base64 of "Username:" and "Password:". */
#define RM_SASL_LOGIN_CHALLENGE_USERNAME "VXNlcm5hbWU6"
#define RM_SASL_LOGIN_CHALLENGE_PASSWORD "UGFzc3dvcmQ6"

enum rm_sasl_err {
	RM_SASL_OK = 0,
	RM_SASL_E_EMPTY,		/* PLAIN: an empty message */
	RM_SASL_E_NUL_MISSING,		/* PLAIN: fewer than two NULs */
	RM_SASL_E_NUL_EXTRA,		/* PLAIN: more than two NULs */
	RM_SASL_E_AUTHZID_TOO_LONG,
	RM_SASL_E_AUTHZID_UTF8,
	RM_SASL_E_AUTHCID_EMPTY,
	RM_SASL_E_AUTHCID_TOO_LONG,
	RM_SASL_E_AUTHCID_UTF8,
	RM_SASL_E_PASSWD_EMPTY,
	RM_SASL_E_PASSWD_TOO_LONG,
	RM_SASL_E_PASSWD_UTF8,
	RM_SASL_E_BASE64,		/* LOGIN: the line is not strict base64 */
	RM_SASL_E_FIELD_EMPTY,		/* LOGIN: decodes to nothing */
	RM_SASL_E_FIELD_TOO_LONG,	/* LOGIN: decodes to more than cap bytes */
	RM_SASL_E_FIELD_NUL,		/* LOGIN: decodes to something with a NUL */
	RM_SASL_E_COUNT
};

struct rm_sasl_span {
	const uint8_t *ptr;
	size_t len;
};

struct rm_sasl_plain {
	struct rm_sasl_span authzid;	/* may be empty: act as authcid */
	struct rm_sasl_span authcid;
	struct rm_sasl_span passwd;
};

size_t rm_base64_decoded_max(size_t len);
size_t rm_base64_encoded_len(size_t len);
ssize_t rm_base64_decode(const uint8_t *in, size_t len, uint8_t *out, size_t cap);
ssize_t rm_base64_encode(const uint8_t *in, size_t len, char *out, size_t cap);
enum rm_sasl_err rm_sasl_plain_parse(const uint8_t *msg, size_t len, struct rm_sasl_plain *out);
enum rm_sasl_err rm_sasl_login_field(const uint8_t *b64, size_t len, uint8_t *out, size_t cap,
				     size_t *out_len);
bool rm_sasl_is_cancel(const uint8_t *line, size_t len);
const char *rm_sasl_err_text(enum rm_sasl_err err);

#endif
