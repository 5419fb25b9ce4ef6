/*
 * NAME
 *	fuzz_proxy_proto - libFuzzer harness for proto/proxy_proto
 * DESCRIPTION
 *	Input layout: byte 0 picks the options and what the rest is.
 *	  bits 0-1  o->versions (0: both)
 *	  bits 2-4  o->v2_bytes_max: 0, 12, 36, 64, 255, 512, 1024, 65535
 *	  bits 5-6  0, 1: the rest is the first bytes of a connection;
 *	            2: the rest is an address text (bit 7: IPv6), put in a v1
 *	            line and compared with inet_pton;
 *	            3: the rest is two socket addresses (family byte, 16
 *	            address bytes, 2 port bytes each) to write and parse back.
 *	Every parse is of a heap copy of exact size, so ASan flags any read
 *	past the bytes given.
 *
 *	Invariants (any failure traps):
 *	- the status is one of the three, out->err is set exactly with
 *	  RM_PROXY_ERROR, and has a text;
 *	- NEED_MORE only below the bytes the header may need (107 for v1, 16
 *	  + the limit for v2);
 *	- a good header: consumed within the input and the limit, the family
 *	  and both addresses agree (or local, and all zero), the authority
 *	  inside the header, v1 without any v2 field;
 *	- every prefix of the input gives NEED_MORE or exactly the input's
 *	  answer, and no NEED_MORE after an answer: how the bytes were split
 *	  over receives never matters;
 *	- the addresses of a good header, written back as v1 and as v2,
 *	  parse to the same addresses;
 *	- the v1 address parser accepts exactly what inet_pton accepts, with
 *	  the same bytes;
 *	- the writers refuse a buffer one byte short, and what they write
 *	  parses back to what they were given.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proxy_proto.h"

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

/* The prefix check is quadratic: bound the input (v2 limits past this only need more). */
enum { INPUT_BYTES_MAX = 1200, ADDR_TEXT_BYTES_MAX = 64 };

static const size_t v2_limits[8] = { 0, 12, 36, 64, 255, 512, 1024, 65535 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t *heap_copy(const void *p, size_t len)
{
	uint8_t *b = malloc(len ? len : 1);

	CHECK(b != NULL);
	if (len)
		memcpy(b, p, len);
	return b;
}

static bool all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		if (b[i] != 0)
			return false;
	return true;
}

/* Two results, each pointing into its own copy, are the same. */
static bool same(const struct rm_proxy_header *a, const uint8_t *abuf, const struct rm_proxy_header *b,
		 const uint8_t *bbuf)
{
	if (a->err != b->err || a->version != b->version || a->local != b->local ||
	    a->family != b->family || a->consumed != b->consumed || a->ssl != b->ssl ||
	    a->crc32c != b->crc32c || a->authority.len != b->authority.len ||
	    (a->authority.ptr == NULL) != (b->authority.ptr == NULL))
		return false;
	if (a->authority.ptr != NULL && a->authority.ptr - abuf != b->authority.ptr - bbuf)
		return false;
	return memcmp(&a->src, &b->src, sizeof(a->src)) == 0 && memcmp(&a->dst, &b->dst, sizeof(a->dst)) == 0;
}

static enum rm_proxy_status parse_copy(const uint8_t *p, size_t len, const struct rm_proxy_opts *o,
				       struct rm_proxy_header *h, uint8_t **copy)
{
	*copy = heap_copy(p, len);
	return rm_proxy_parse(*copy, len, o, h);
}

static size_t v2_limit(const struct rm_proxy_opts *o)
{
	return RM_PROXY_V2_FIXED_BYTES + (o->v2_bytes_max < 65535 ? o->v2_bytes_max : 65535);
}

/* What a good (or any) result must look like on its own. */
static void check_result(enum rm_proxy_status st, const struct rm_proxy_header *h, const uint8_t *in,
			 size_t len, const struct rm_proxy_opts *o)
{
	CHECK(st == RM_PROXY_NEED_MORE || st == RM_PROXY_OK || st == RM_PROXY_ERROR);
	CHECK((unsigned)h->err < RM_PROXY_E_COUNT && rm_proxy_err_text(h->err) != NULL);
	CHECK((st == RM_PROXY_ERROR) == (h->err != RM_PROXY_E_NONE));
	CHECK(h->version <= 2 && (h->version == 0 || len >= (h->version == 1 ? 6u : 12u)));
	if (st == RM_PROXY_NEED_MORE) {
		CHECK(len < (h->version == 1 ? RM_PROXY_V1_BYTES_MAX : h->version == 2 ? v2_limit(o) : 12));
		CHECK(h->consumed == 0);
	}
	if (st != RM_PROXY_OK)
		return;
	CHECK(h->consumed > 0 && h->consumed <= len);
	CHECK(h->version == 1 ? in[0] == 'P' && h->consumed <= RM_PROXY_V1_BYTES_MAX
			      : in[0] == '\r' && h->consumed <= v2_limit(o));
	CHECK(o->versions & (h->version == 1 ? RM_PROXY_V1 : RM_PROXY_V2));
	if (h->local) {
		CHECK(h->family == AF_UNSPEC);
		CHECK(all_zero(&h->src, sizeof(h->src)) && all_zero(&h->dst, sizeof(h->dst)));
	} else {
		CHECK(h->family == AF_INET || h->family == AF_INET6);
		CHECK(h->src.ss_family == h->family && h->dst.ss_family == h->family);
	}
	if (h->authority.ptr != NULL)
		CHECK(h->authority.ptr >= in + RM_PROXY_V2_FIXED_BYTES &&
		      h->authority.ptr + h->authority.len <= in + h->consumed && h->authority.len > 0 &&
		      h->authority.len <= RM_PROXY_AUTHORITY_BYTES_MAX);
	else
		CHECK(h->authority.len == 0);
	if (h->version == 1)
		CHECK(h->authority.ptr == NULL && !h->ssl && !h->crc32c);
}

/* Write src, dst as v1 and v2 into exact buffers (and refuse one byte less); parse back. */
static void write_and_parse(const struct sockaddr *src, const struct sockaddr *dst, bool *local,
			    struct rm_proxy_header out[2])
{
	struct rm_proxy_opts o;
	char line[RM_PROXY_V1_BYTES_MAX];
	uint8_t bin[RM_PROXY_V2_WRITE_BYTES_MAX];
	ssize_t n1 = rm_proxy_write_v1(src, dst, line, sizeof(line));
	ssize_t n2 = rm_proxy_write_v2(src, dst, bin, sizeof(bin));

	rm_proxy_opts_default(&o);
	CHECK(n1 >= 15 && (size_t)n1 <= RM_PROXY_V1_BYTES_MAX && line[n1 - 2] == '\r' && line[n1 - 1] == '\n');
	CHECK(n2 >= 16 && (size_t)n2 <= RM_PROXY_V2_WRITE_BYTES_MAX);
	for (int v = 0; v < 2; v++) {
		size_t n = (size_t)(v == 0 ? n1 : n2);
		uint8_t *exact = malloc(n), *copy;
		ssize_t again = v == 0 ? rm_proxy_write_v1(src, dst, (char *)exact, n)
				       : rm_proxy_write_v2(src, dst, exact, n);

		CHECK(exact != NULL && again == (ssize_t)n);
		CHECK((v == 0 ? rm_proxy_write_v1(src, dst, (char *)exact, n - 1)
			      : rm_proxy_write_v2(src, dst, exact, n - 1)) == -1);
		CHECK(parse_copy(exact, n, &o, &out[v], &copy) == RM_PROXY_OK);
		CHECK(out[v].consumed == n && out[v].version == v + 1);
		free(copy);
		free(exact);
	}
	CHECK(out[0].local == out[1].local && out[0].family == out[1].family);
	CHECK(memcmp(&out[0].src, &out[1].src, sizeof(out[0].src)) == 0);
	CHECK(memcmp(&out[0].dst, &out[1].dst, sizeof(out[0].dst)) == 0);
	*local = out[0].local;
}

/* A connection's first bytes. */
static void fuzz_parse(const uint8_t *in, size_t len, const struct rm_proxy_opts *o)
{
	struct rm_proxy_header whole, part;
	uint8_t *wcopy, *pcopy;
	enum rm_proxy_status st = parse_copy(in, len, o, &whole, &wcopy);
	bool answered = false;

	check_result(st, &whole, wcopy, len, o);
	for (size_t k = 0; k < len; k++) {
		enum rm_proxy_status sk = parse_copy(in, k, o, &part, &pcopy);

		check_result(sk, &part, pcopy, k, o);
		if (sk == RM_PROXY_NEED_MORE) {
			CHECK(!answered);
		} else {
			answered = true;
			CHECK(sk == st && same(&part, pcopy, &whole, wcopy));
		}
		free(pcopy);
	}
	if (st == RM_PROXY_OK && !whole.local) {
		struct rm_proxy_header back[2];
		bool local;

		write_and_parse((const struct sockaddr *)&whole.src, (const struct sockaddr *)&whole.dst,
				&local, back);
		CHECK(!local && back[0].family == whole.family);
		CHECK(memcmp(&back[0].src, &whole.src, sizeof(whole.src)) == 0);
		CHECK(memcmp(&back[0].dst, &whole.dst, sizeof(whole.dst)) == 0);
	}
	free(wcopy);
}

/* The v1 address parser against inet_pton. */
static void fuzz_addr(const uint8_t *text, size_t n, bool v6)
{
	char nul[ADDR_TEXT_BYTES_MAX + 1], line[160];
	uint8_t want[16], *copy;
	struct rm_proxy_opts o;
	struct rm_proxy_header h;
	enum rm_proxy_status st;
	int len, good;

	if (n > ADDR_TEXT_BYTES_MAX || memchr(text, 0, n) || memchr(text, ' ', n) || memchr(text, '\r', n) ||
	    memchr(text, '\n', n))
		return;
	memcpy(nul, text, n);
	nul[n] = 0;
	good = inet_pton(v6 ? AF_INET6 : AF_INET, nul, want);
	len = snprintf(line, sizeof(line), "PROXY %s %s %s 1 2\r\n", v6 ? "TCP6" : "TCP4", nul,
		       v6 ? "::1" : "1.1.1.1");
	CHECK(len > 0 && (size_t)len <= RM_PROXY_V1_BYTES_MAX);
	rm_proxy_opts_default(&o);
	st = parse_copy((const uint8_t *)line, (size_t)len, &o, &h, &copy);
	free(copy);
	CHECK((st == RM_PROXY_OK) == (good == 1));
	if (st == RM_PROXY_OK)
		CHECK(memcmp(v6 ? (const void *)&((struct sockaddr_in6 *)&h.src)->sin6_addr
				: (const void *)&((struct sockaddr_in *)&h.src)->sin_addr,
			     want, v6 ? 16 : 4) == 0);
	else
		CHECK(h.err == RM_PROXY_E_V1_SRC_ADDR || h.err == RM_PROXY_E_V1_SYNTAX);
}

/* One socket address from 19 bytes: family selector, 16 address bytes, port. */
static const struct sockaddr *make_sa(const uint8_t *p, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	switch (p[0] & 3) {
	case 0: {
		struct sockaddr_in *s = (struct sockaddr_in *)ss;

		s->sin_family = AF_INET;
		memcpy(&s->sin_addr, p + 1, 4);
		memcpy(&s->sin_port, p + 17, 2);
		return (const struct sockaddr *)ss;
	}
	case 1: {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;

		s->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, p + 1, 16);
		memcpy(&s->sin6_port, p + 17, 2);
		return (const struct sockaddr *)ss;
	}
	case 2:
		ss->ss_family = AF_UNIX;
		return (const struct sockaddr *)ss;
	default:
		return NULL;
	}
}

static void fuzz_write(const uint8_t *p, size_t n)
{
	struct sockaddr_storage s, d;
	const struct sockaddr *src, *dst;
	struct rm_proxy_header back[2];
	bool local, known;

	if (n < 38)
		return;
	src = make_sa(p, &s);
	dst = make_sa(p + 19, &d);
	write_and_parse(src, dst, &local, back);
	known = src != NULL && dst != NULL && (src->sa_family == AF_INET || src->sa_family == AF_INET6) &&
		(dst->sa_family == AF_INET || dst->sa_family == AF_INET6);
	CHECK(local == !known);
	if (known && src->sa_family == dst->sa_family) {
		CHECK(back[0].family == src->sa_family);
		CHECK(memcmp(&back[0].src, &s, sizeof(s)) == 0 && memcmp(&back[0].dst, &d, sizeof(d)) == 0);
	} else if (known) {
		const struct sockaddr_in *v4 = (const struct sockaddr_in *)(src->sa_family == AF_INET ? &s : &d);
		const struct sockaddr_in6 *m = (const struct sockaddr_in6 *)(src->sa_family == AF_INET ?
									    &back[0].src : &back[0].dst);
		static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

		CHECK(back[0].family == AF_INET6);
		CHECK(memcmp(&m->sin6_addr, mapped, 12) == 0);
		CHECK(memcmp((const uint8_t *)&m->sin6_addr + 12, &v4->sin_addr, 4) == 0);
		CHECK(m->sin6_port == v4->sin_port);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rm_proxy_opts o;

	if (size < 1 || size - 1 > INPUT_BYTES_MAX)
		return 0;
	rm_proxy_opts_default(&o);
	if (data[0] & 3)
		o.versions = data[0] & 3;
	o.v2_bytes_max = v2_limits[(data[0] >> 2) & 7];
	switch ((data[0] >> 5) & 3) {
	case 2:
		fuzz_addr(data + 1, size - 1, data[0] & 0x80);
		break;
	case 3:
		fuzz_write(data + 1, size - 1);
		break;
	default:
		fuzz_parse(data + 1, size - 1, &o);
		break;
	}
	return 0;
}
