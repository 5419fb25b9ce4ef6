/*
 * NAME
 *	cidr - network lists (IPv4 and IPv6 prefixes), like Postfix's mynetworks
 * SUMMARY
 *	See core/cidr.h for the interface.
 * DESCRIPTION
 *	The text is copied into a bounded local buffer so that inet_pton(3),
 *	which wants a NUL-terminated address, sees only the address part.
 *	Matching compares whole bytes, then the top bits of one byte, with the
 *	client address first brought to the form the entries are stored in
 *	(IPv4-mapped IPv6 to IPv4), so a comparison never needs to know the
 *	entry's spelling.  Every loop is bounded by 16 address bytes, by
 *	RM_CIDR_TEXT_MAX, by RM_CIDR_LIST_MAX, or by the length of the text
 *	given to rm_cidr_list_add.
 * DIAGNOSTICS
 *	See core/cidr.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "core/cidr.h"

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

const char *rm_cidr_parse_error(int rc)
{
	switch (rc) {
	case 0: return "ok";
	case RM_CIDR_EEMPTY: return "empty network";
	case RM_CIDR_ETOOLONG: return "network text too long";
	case RM_CIDR_EADDRESS: return "not an IPv4 or IPv6 address";
	case RM_CIDR_EPREFIX: return "prefix length is not a decimal number";
	case RM_CIDR_ERANGE: return "prefix length out of range (IPv4: 0-32, IPv6: 0-128)";
	case RM_CIDR_EHOSTBITS: return "address has bits set beyond the prefix length";
	case RM_CIDR_EBRACKET: return "unbalanced '[' or text after ']'";
	}
	return "unknown error";
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* "/N": decimal, no sign, no leading zero (so "/08" is refused like "010" in an address). */
static int parse_prefix(const char *p, unsigned *out)
{
	unsigned v = 0;
	size_t n = 0;

	for (; n < 4 && is_digit(p[n]); n++)
		v = v * 10 + (unsigned)(p[n] - '0');
	if (n == 0 || p[n] != '\0' || (n > 1 && p[0] == '0'))
		return RM_CIDR_EPREFIX;
	*out = v;
	return 0;
}

/* Network with host bits as written; the caller checks them. */
static int parse_raw(const char *text, struct rm_cidr *out)
{
	char buf[RM_CIDR_TEXT_MAX + 1];
	size_t len;
	char *addr, *slash;
	unsigned prefix, max;
	uint8_t bytes[16];

	if (text == NULL || text[0] == '\0')
		return RM_CIDR_EEMPTY;
	len = strnlen(text, RM_CIDR_TEXT_MAX + 1);
	if (len > RM_CIDR_TEXT_MAX)
		return RM_CIDR_ETOOLONG;
	memcpy(buf, text, len + 1);

	addr = buf;
	slash = strchr(buf, '/');
	if (buf[0] == '[') {
		char *close = strchr(buf, ']');

		if (close == NULL || (close[1] != '\0' && close[1] != '/'))
			return RM_CIDR_EBRACKET;
		addr = buf + 1;
		*close = '\0';
		slash = close[1] == '/' ? close + 1 : NULL;
	} else if (strchr(buf, ']') != NULL) {
		return RM_CIDR_EBRACKET;
	}
	if (slash != NULL)
		*slash = '\0';

	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, addr, bytes) == 1) {
		out->family = AF_INET;
		memcpy(out->addr, bytes, 4);
		max = 32;
	} else if (inet_pton(AF_INET6, addr, bytes) == 1) {
		out->family = AF_INET6;
		memcpy(out->addr, bytes, 16);
		max = 128;
	} else {
		return RM_CIDR_EADDRESS;
	}
	prefix = max;
	if (slash != NULL) {
		int rc = parse_prefix(slash + 1, &prefix);

		if (rc != 0)
			return rc;
		if (prefix > max)
			return RM_CIDR_ERANGE;
	}
	out->prefix_len = (uint8_t)prefix;

	/* Stored the way a mapped client is compared: as IPv4. */
	if (out->family == AF_INET6 && prefix >= 96
	    && memcmp(out->addr, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
		memmove(out->addr, out->addr + 12, 4);
		memset(out->addr + 4, 0, 12);
		out->family = AF_INET;
		out->prefix_len = (uint8_t)(prefix - 96);
	}
	return 0;
}

static unsigned addr_bytes(const struct rm_cidr *c)
{
	return c->family == AF_INET ? 4 : 16;
}

/* Clears the bits past the prefix; returns whether any was set. */
static bool clear_host_bits(struct rm_cidr *c)
{
	bool any = false;
	unsigned n = addr_bytes(c);

	for (unsigned i = 0; i < n; i++) {
		unsigned first_bit = i * 8;
		uint8_t keep;

		if (c->prefix_len >= first_bit + 8)
			keep = 0xff;
		else if (c->prefix_len <= first_bit)
			keep = 0;
		else
			keep = (uint8_t)(0xff << (8 - (c->prefix_len - first_bit)));
		if ((c->addr[i] & (uint8_t)~keep) != 0)
			any = true;
		c->addr[i] &= keep;
	}
	return any;
}

int rm_cidr_parse(const char *text, struct rm_cidr *out)
{
	struct rm_cidr c;
	int rc = parse_raw(text, &c);

	if (rc != 0)
		return rc;
	if (clear_host_bits(&c))
		return RM_CIDR_EHOSTBITS;
	*out = c;
	return 0;
}

/* The client address as entries are stored: family and 4 or 16 bytes. */
static bool client_key(const struct sockaddr *sa, uint8_t *family, uint8_t bytes[16])
{
	if (sa == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

		*family = AF_INET;
		memcpy(bytes, &in->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		const uint8_t *a = in6->sin6_addr.s6_addr;

		if (memcmp(a, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
			*family = AF_INET;
			memcpy(bytes, a + 12, 4);
		} else {
			*family = AF_INET6;
			memcpy(bytes, a, 16);
		}
		return true;
	}
	return false;
}

static bool contains_key(const struct rm_cidr *c, uint8_t family, const uint8_t *bytes)
{
	unsigned whole, rest;

	if (c->family != family)
		return false;
	whole = c->prefix_len / 8u;
	rest = c->prefix_len % 8u;
	if (memcmp(c->addr, bytes, whole) != 0)
		return false;
	if (rest != 0) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));

		if ((bytes[whole] & mask) != c->addr[whole])
			return false;
	}
	return true;
}

bool rm_cidr_contains(const struct rm_cidr *c, const struct sockaddr *sa)
{
	uint8_t family, bytes[16];

	if (!client_key(sa, &family, bytes))
		return false;
	return contains_key(c, family, bytes);
}

const char *rm_cidr_format(const struct rm_cidr *c, char *buf, size_t size)
{
	char addr[INET6_ADDRSTRLEN];

	if (buf == NULL || size == 0)
		return buf;
	if (inet_ntop(c->family == AF_INET ? AF_INET : AF_INET6, c->addr, addr, sizeof(addr))
	    == NULL)
		snprintf(addr, sizeof(addr), "?");
	snprintf(buf, size, "%s/%u", addr, (unsigned)c->prefix_len);
	return buf;
}

void rm_cidr_list_init(struct rm_cidr_list *l)
{
	l->count = 0;
}

static bool is_separator(char c)
{
	return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
	       || c == '\v';
}

static void set_err(char *err, size_t err_size, const char *word, size_t word_len,
		    const char *reason)
{
	if (err == NULL || err_size == 0)
		return;
	if (word_len > RM_CIDR_TEXT_MAX)
		snprintf(err, err_size, "%.*s...: %s", RM_CIDR_TEXT_MAX, word, reason);
	else
		snprintf(err, err_size, "%.*s: %s", (int)word_len, word, reason);
	/* One line, whatever the text held. */
	for (size_t i = 0; i < err_size && err[i] != '\0'; i++)
		if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
			err[i] = '?';
}

int rm_cidr_list_add(struct rm_cidr_list *l, const char *text, char *err, size_t err_size)
{
	uint32_t count = l->count;
	size_t len = text == NULL ? 0 : strlen(text);
	size_t i = 0;

	/* Entries go past l->count first and are published at the end: all or nothing. */
	while (i < len) {
		char word[RM_CIDR_TEXT_MAX + 1];
		size_t start, word_len;
		struct rm_cidr c;
		int rc;

		while (i < len && is_separator(text[i]))
			i++;
		if (i == len)
			break;
		start = i;
		while (i < len && !is_separator(text[i]))
			i++;
		word_len = i - start;
		if (word_len > RM_CIDR_TEXT_MAX) {
			set_err(err, err_size, text + start, word_len,
				rm_cidr_parse_error(RM_CIDR_ETOOLONG));
			return -EINVAL;
		}
		memcpy(word, text + start, word_len);
		word[word_len] = '\0';
		rc = parse_raw(word, &c);
		if (rc == 0 && clear_host_bits(&c)) {
			char net[RM_CIDR_TEXT_BYTES], reason[160];

			rm_cidr_format(&c, net, sizeof(net));
			snprintf(reason, sizeof(reason),
				 "address has bits set beyond the /%u prefix (the network is %s)",
				 (unsigned)c.prefix_len, net);
			set_err(err, err_size, word, word_len, reason);
			return -EINVAL;
		}
		if (rc != 0) {
			set_err(err, err_size, word, word_len, rm_cidr_parse_error(rc));
			return -EINVAL;
		}
		if (count >= RM_CIDR_LIST_MAX) {
			char reason[64];

			snprintf(reason, sizeof(reason), "more than %u networks in the list",
				 RM_CIDR_LIST_MAX);
			set_err(err, err_size, word, word_len, reason);
			return -ENOSPC;
		}
		l->entries[count++] = c;
	}
	l->count = count;
	return 0;
}

bool rm_cidr_list_match(const struct rm_cidr_list *l, const struct sockaddr *sa)
{
	uint8_t family, bytes[16];
	uint32_t n = l->count < RM_CIDR_LIST_MAX ? l->count : RM_CIDR_LIST_MAX;

	if (!client_key(sa, &family, bytes))
		return false;
	for (uint32_t i = 0; i < n; i++)
		if (contains_key(&l->entries[i], family, bytes))
			return true;
	return false;
}
