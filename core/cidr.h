/*
 * NAME
 *	cidr - network lists (IPv4 and IPv6 prefixes), like Postfix's mynetworks
 * SUMMARY
 *	#include "core/cidr.h"
 *
 *	int rm_cidr_parse(const char *text, struct rm_cidr *out);
 *	const char *rm_cidr_parse_error(int rc);
 *	bool rm_cidr_contains(const struct rm_cidr *c, const struct sockaddr *sa);
 *	const char *rm_cidr_format(const struct rm_cidr *c, char *buf, size_t size);
 *
 *	void rm_cidr_list_init(struct rm_cidr_list *l);
 *	int rm_cidr_list_add(struct rm_cidr_list *l, const char *text,
 *			     char *err, size_t err_size);
 *	bool rm_cidr_list_match(const struct rm_cidr_list *l, const struct sockaddr *sa);
 * DESCRIPTION
 *	Pure: no allocation, no I/O, no clock; a list is a fixed array that
 *	may be static, on the stack or inside a configuration, and that any
 *	number of threads may match against at once once it is built.
 *
 *	rm_cidr_parse reads one network, the whole of text:
 *	  "10.0.0.0/8", "192.168.1.7" (a host: /32), "::1/128", "2001:db8::/32",
 *	  "[::1]/128", "[2001:db8::]/32", "[10.0.0.1]" (brackets, as Postfix
 *	  allows them around IPv6 addresses, around either family).
 *	The address is what inet_pton(3) accepts (so no octal, hex or short
 *	IPv4 forms, no zone index); the prefix length is decimal without
 *	leading zeros, 0 to 32 or 0 to 128.  Any bit set past the prefix is an
 *	error (RM_CIDR_EHOSTBITS): Postfix only warns about "10.0.0.1/8" and
 *	then matches 10.0.0.0/8, which is rarely what was meant, so here the
 *	configuration is refused and the message names the network that would
 *	have matched.  An IPv4-mapped IPv6 network (::ffff:0:0/96 or longer)
 *	is stored as the IPv4 network it covers ("::ffff:10.0.0.0/104" is
 *	10.0.0.0/8), because clients are compared the same way (below).
 *
 *	rm_cidr_contains and rm_cidr_list_match take a client address as the
 *	kernel gives it (accept(2), getpeername(2)): AF_INET, or AF_INET6
 *	where an IPv4-mapped address (::ffff:a.b.c.d, a dual-stack listener's
 *	IPv4 client) is compared as the IPv4 address a.b.c.d, so it matches
 *	IPv4 entries and never IPv6 ones; "::/0" matches every IPv6 client and
 *	no IPv4 one.  Any other family (AF_UNIX) or NULL matches nothing.
 *	A list is matched by a scan of its entries in order, at most
 *	RM_CIDR_LIST_MAX: a first match wins (there is no exclusion syntax).
 *
 *	rm_cidr_list_add takes one or more networks separated by commas
 *	and/or whitespace (the way mynetworks is written) and adds them all or
 *	none: on any error the list is unchanged.  Duplicates are kept (they
 *	are harmless).  Text of only separators adds nothing and succeeds.
 *
 *	rm_cidr_format writes "ADDRESS/PREFIX" (RFC 5952 text for IPv6) and
 *	returns buf; a buffer of RM_CIDR_TEXT_BYTES always suffices, a
 *	shorter one gets a truncated, NUL-terminated text.
 * DIAGNOSTICS
 *	rm_cidr_parse returns 0 or a negative RM_CIDR_E* code and leaves *out
 *	unchanged on error; rm_cidr_parse_error gives its text.
 *	rm_cidr_list_add returns 0, -EINVAL with a one-line message in err
 *	("NETWORK: reason") for a network that does not parse, or -ENOSPC
 *	when the list would exceed RM_CIDR_LIST_MAX entries.
 */
#ifndef RM_CIDR_H
#define RM_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define RM_CIDR_LIST_MAX 256
/* The longest network text parsed, brackets and prefix included: longer is junk. */
#define RM_CIDR_TEXT_MAX 64
/* A buffer for rm_cidr_format: INET6_ADDRSTRLEN (46) + "/128". */
#define RM_CIDR_TEXT_BYTES 52

enum rm_cidr_error {
	RM_CIDR_EEMPTY = -1,		/* no text */
	RM_CIDR_ETOOLONG = -2,		/* longer than RM_CIDR_TEXT_MAX */
	RM_CIDR_EADDRESS = -3,		/* not an IPv4 or IPv6 address */
	RM_CIDR_EPREFIX = -4,		/* prefix length not a decimal number */
	RM_CIDR_ERANGE = -5,		/* prefix length above 32 (IPv4) or 128 (IPv6) */
	RM_CIDR_EHOSTBITS = -6,		/* bits set past the prefix */
	RM_CIDR_EBRACKET = -7,		/* '[' without ']', or junk after it */
};

struct rm_cidr {
	uint8_t addr[16];		/* network address: 4 bytes used for AF_INET */
	uint8_t prefix_len;		/* bits: 0..32 or 0..128 */
	uint8_t family;			/* AF_INET or AF_INET6 */
};

struct rm_cidr_list {
	uint32_t count;
	struct rm_cidr entries[RM_CIDR_LIST_MAX];
};

int rm_cidr_parse(const char *text, struct rm_cidr *out);
const char *rm_cidr_parse_error(int rc);
bool rm_cidr_contains(const struct rm_cidr *c, const struct sockaddr *sa);
const char *rm_cidr_format(const struct rm_cidr *c, char *buf, size_t size);

void rm_cidr_list_init(struct rm_cidr_list *l);
int rm_cidr_list_add(struct rm_cidr_list *l, const char *text, char *err, size_t err_size);
bool rm_cidr_list_match(const struct rm_cidr_list *l, const struct sockaddr *sa);

#endif
