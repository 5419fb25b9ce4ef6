/*
 * NAME
 *	tls_conn_mem - wolfSSL's heap per idle server TLS connection, and where it goes
 * SYNOPSIS
 *	build/compare/tls_conn_mem -c CERT.pem -k KEY.pem [-n 1000] [-t 1.3|1.2]
 *		[-g x25519|p256] [-w 20] [-K] [-S] [-C] [-T] [-v]
 *	(make build/compare/tls_conn_mem: the system wolfSSL; build/compare/tls_conn_mem_local:
 *	build/wolfssl; both with jemalloc, ringmaild's allocator, so that "usable" is what
 *	ringmaild pays; built without -ljemalloc, glibc's malloc_usable_size and mallinfo2)
 * DESCRIPTION
 *	A wolfSSL server context set up as tls/tls.c's server_new does (TLS 1.2
 *	minimum, its cipher list, the certificate chain and key, session
 *	tickets with a ChaCha20-Poly1305 ticket callback, the server session
 *	cache, an SNI callback that keeps the default context), and a client
 *	context that verifies nothing and sends SNI "bench.localdomain" and one
 *	key share (X25519 by default: what OpenSSL's client offers first).
 *	Handshakes run over memory buffers through custom I/O callbacks, as
 *	tls/tls.c's run over the engine.  For each of -n connections:
 *	wolfSSL_new on both sides, the handshake, then on the server what
 *	tls/tls.c's handshake_done and read_plain do (wolfSSL_FreeArrays,
 *	wolfSSL_FreeHandshakeResources, a wolfSSL_read that wants more), the
 *	greeting written ("+OK echo ready"), read by the client (which takes the
 *	TLS 1.3 tickets with it); the client is then freed and the server object
 *	is kept, idle.  -w connections first are made and freed whole (first-use
 *	allocations: DRBG, session cache, lazy tables are not per connection).
 *
 *	wolfSSL's allocations go through wolfSSL_SetAllocators hooks that note,
 *	for every live block, its requested size, malloc_usable_size (what the
 *	allocator really gives: jemalloc's size classes, or glibc's chunks
 *	without -ljemalloc), whether the server or the client side was running,
 *	and the call site (the caller of wolfSSL_Malloc and its caller, from
 *	backtrace(3), named with addr2line(1): build/wolfssl is not stripped,
 *	Debian's library is, so its sites are library offsets).  Reported per
 *	idle server connection: bytes requested, bytes usable, blocks; then the
 *	blocks by call site and by size, largest first; mallinfo2's in-use
 *	delta and the RSS delta as a cross-check (those include the freed
 *	clients' fragmentation).
 *
 *	Options that change what the server does, to weigh run-time savings:
 *	  -K  skip wolfSSL_FreeArrays / wolfSSL_FreeHandshakeResources (tls.c before 2026-12)
 *	  -S  no session cache (WOLFSSL_SESS_CACHE_OFF): tickets only
 *	  -C  no SNI callback on the server context
 *	  -T  no session tickets (resumption by the session cache only)
 *	  -v  every site, not only those above 1% of the total
 *
 *	Certificates for a run like bench/compare/tls-handshake.sh's:
 *	  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
 *		-subj /CN=bench.localdomain -keyout /tmp/ecdsa.key -out /tmp/ecdsa.crt
 * DIAGNOSTICS
 *	Exit 1 with a message when a context cannot be set up or a handshake
 *	fails; 2 on bad usage.
 */
#define _GNU_SOURCE		/* dladdr */
#include <wolfssl/options.h>

#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <wolfssl/ssl.h>
#include <wolfssl/version.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/memory.h>

#define CONNS_MAX 20000
#define TAB_BITS 21			/* live blocks: far more than CONNS_MAX x ~40 */
#define TAB_SIZE (1u << TAB_BITS)
#define SITES_MAX 8192
#define PIPE_BYTES (256 * 1024)

enum side { SIDE_OTHER, SIDE_SERVER, SIDE_CLIENT };

struct blk {
	uintptr_t p;
	uint32_t size, usable;
	uint16_t site;
	uint8_t side;
	uint8_t measured;		/* allocated after the baseline */
};

struct site {
	uintptr_t f[2];			/* the caller of wolfSSL_Malloc, and its caller */
	const char *dbg_func;		/* WOLFSSL_DEBUG_MEMORY builds: wolfSSL's own func:line */
	unsigned dbg_line;
	uint64_t count, bytes, usable;	/* live measured server blocks, at the report */
};

static struct blk tab[TAB_SIZE];
static struct site sites[SITES_MAX];
static uint32_t site_count;
static enum side cur_side;
static bool measuring;

struct totals {
	uint64_t blocks, bytes, usable;
};

static struct totals live[3];		/* by side */

static uint32_t slot_of(uintptr_t p)
{
	return (uint32_t)(((uint64_t)(p >> 4) * 0x9E3779B97F4A7C15ull) >> (64 - TAB_BITS));
}

static uint16_t site_find(uintptr_t f0, uintptr_t f1, const char *func, unsigned line)
{
	for (uint32_t i = 0; i < site_count; i++)
		if (sites[i].f[0] == f0 && sites[i].f[1] == f1 && sites[i].dbg_func == func &&
		    sites[i].dbg_line == line)
			return (uint16_t)i;
	if (site_count == SITES_MAX)
		return SITES_MAX - 1;
	sites[site_count] = (struct site){ .f = { f0, f1 }, .dbg_func = func, .dbg_line = line };
	return (uint16_t)site_count++;
}

/* Inside wolfSSL_Malloc or wolfSSL_Realloc (small functions; they may also tail-call the hook). */
static bool in_wolfssl_alloc(uintptr_t a)
{
	uintptr_t m = (uintptr_t)&wolfSSL_Malloc, r = (uintptr_t)&wolfSSL_Realloc;

	return (a > m && a < m + 256) || (a > r && a < r + 256);
}

static __attribute__((noinline)) void note(void *p, size_t size, const char *func, unsigned line)
{
	void *frames[7];
	int n = backtrace(frames, 7), k = 2;
	/* frames: [0] note, [1] the hook, then wolfSSL_Malloc or _Realloc, its caller, that one's caller */
	while (k < n && in_wolfssl_alloc((uintptr_t)frames[k]))
		k++;
	uintptr_t f0 = k < n ? (uintptr_t)frames[k] : 0, f1 = k + 1 < n ? (uintptr_t)frames[k + 1] : 0;
	uint32_t i = slot_of((uintptr_t)p);

	while (tab[i].p != 0)
		i = (i + 1) & (TAB_SIZE - 1);
	tab[i] = (struct blk){ .p = (uintptr_t)p, .size = (uint32_t)size,
			       .usable = (uint32_t)malloc_usable_size(p), .side = (uint8_t)cur_side,
			       .measured = measuring, .site = site_find(f0, f1, func, line) };
	live[cur_side].blocks++;
	live[cur_side].bytes += size;
	live[cur_side].usable += tab[i].usable;
}

/* Remove p; linear probing with backward-shift deletion. */
static void forget(void *p)
{
	uint32_t i = slot_of((uintptr_t)p);

	while (tab[i].p != 0 && tab[i].p != (uintptr_t)p)
		i = (i + 1) & (TAB_SIZE - 1);
	if (tab[i].p == 0)
		return;		/* not ours (allocated before the hooks) */
	live[tab[i].side].blocks--;
	live[tab[i].side].bytes -= tab[i].size;
	live[tab[i].side].usable -= tab[i].usable;
	for (uint32_t j = (i + 1) & (TAB_SIZE - 1);; j = (j + 1) & (TAB_SIZE - 1)) {
		if (tab[j].p == 0)
			break;
		uint32_t h = slot_of(tab[j].p);
		/* tab[j] may move to i if its home h is not in (i, j] cyclically. */
		if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
			tab[i] = tab[j];
			i = j;
		}
	}
	tab[i].p = 0;
}

#ifdef WOLFSSL_DEBUG_MEMORY
#define HOOK_ARGS , const char *func, unsigned int line
#define HOOK_SITE func, line
#else
#define HOOK_ARGS
#define HOOK_SITE NULL, 0
#endif
#ifdef WOLFSSL_STATIC_MEMORY
#error "tls_conn_mem: a wolfSSL with WOLFSSL_STATIC_MEMORY has other allocator hooks"
#endif

static void *hook_malloc(size_t size HOOK_ARGS)
{
	void *p = malloc(size);

	if (p != NULL)
		note(p, size, HOOK_SITE);
	return p;
}

static void hook_free(void *p HOOK_ARGS)
{
	if (p != NULL)
		forget(p);
	free(p);
}

static void *hook_realloc(void *p, size_t size HOOK_ARGS)
{
	void *q;

	if (p != NULL)
		forget(p);
	q = realloc(p, size);
	if (q != NULL)
		note(q, size, HOOK_SITE);
	return q;
}

/* ---- memory "sockets" ----------------------------------------------------------------------- */

struct pipe {
	uint8_t buf[PIPE_BYTES];
	size_t len, off;
};

static struct pipe c2s, s2c;

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct pipe *p = arg;
	size_t n = p->len - p->off;

	(void)ssl;
	if (n == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	if (n > (size_t)sz)
		n = (size_t)sz;
	memcpy(buf, p->buf + p->off, n);
	p->off += n;
	if (p->off == p->len)
		p->off = p->len = 0;
	return (int)n;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct pipe *p = arg;

	(void)ssl;
	if (p->len + (size_t)sz > sizeof(p->buf))
		return WOLFSSL_CBIO_ERR_WANT_WRITE;
	memcpy(p->buf + p->len, buf, (size_t)sz);
	p->len += (size_t)sz;
	return sz;
}

/* ---- the contexts, as tls/tls.c makes them --------------------------------------------------------- */

static const char ciphers[] =
	"TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:TLS13-CHACHA20-POLY1305-SHA256:"
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

static uint8_t ticket_name[WOLFSSL_TICKET_NAME_SZ] = "tls_conn_mem-key";
static uint8_t ticket_key[CHACHA20_POLY1305_AEAD_KEYSIZE] = "0123456789abcdef0123456789abcdef";
static uint8_t ticket_scratch[4096];

static int ticket_cb(WOLFSSL *ssl, unsigned char name[WOLFSSL_TICKET_NAME_SZ],
		     unsigned char iv[WOLFSSL_TICKET_IV_SZ], unsigned char mac[WOLFSSL_TICKET_MAC_SZ],
		     int enc, unsigned char *ticket, int in_len, int *out_len, void *arg)
{
	static uint32_t counter = 1;	/* wolfSSL refuses an all-zero IV */

	(void)ssl;
	(void)arg;
	if (in_len <= 0 || in_len > (int)sizeof(ticket_scratch))
		return WOLFSSL_TICKET_RET_REJECT;
	if (enc) {
		memcpy(name, ticket_name, WOLFSSL_TICKET_NAME_SZ);
		memset(iv, 0, WOLFSSL_TICKET_IV_SZ);
		memcpy(iv, &counter, sizeof(counter));
		counter++;
		memset(mac, 0, WOLFSSL_TICKET_MAC_SZ);
		if (wc_ChaCha20Poly1305_Encrypt(ticket_key, iv, name, WOLFSSL_TICKET_NAME_SZ, ticket,
						(word32)in_len, ticket_scratch, mac) != 0)
			return WOLFSSL_TICKET_RET_FATAL;
	} else {
		if (memcmp(name, ticket_name, WOLFSSL_TICKET_NAME_SZ) != 0 ||
		    wc_ChaCha20Poly1305_Decrypt(ticket_key, iv, name, WOLFSSL_TICKET_NAME_SZ, ticket,
						(word32)in_len, mac, ticket_scratch) != 0)
			return WOLFSSL_TICKET_RET_REJECT;
	}
	memcpy(ticket, ticket_scratch, (size_t)in_len);
	*out_len = in_len;
	return WOLFSSL_TICKET_RET_OK;
}

static int sni_cb(WOLFSSL *ssl, int *alert, void *arg)
{
	(void)alert;
	(void)arg;
	void *name = NULL;

	(void)wolfSSL_SNI_GetRequest(ssl, WOLFSSL_SNI_HOST_NAME, &name);
	return 0;
}

static void die(const char *what)
{
	fprintf(stderr, "tls_conn_mem: %s\n", what);
	exit(1);
}

struct opts {
	const char *cert, *key;
	int conns, warm;
	bool tls12, p256, keep, no_cache, no_sni, no_tickets, verbose;
};

static WOLFSSL_CTX *server_ctx(const struct opts *o)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());

	if (ctx == NULL || wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_cipher_list(ctx, ciphers) != WOLFSSL_SUCCESS)
		die("server context");
	if (wolfSSL_CTX_use_certificate_chain_file(ctx, o->cert) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_use_PrivateKey_file(ctx, o->key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS)
		die("cannot load the certificate or key (PEM)");
	if (!o->no_tickets) {
		wolfSSL_CTX_UseSessionTicket(ctx);
		wolfSSL_CTX_set_TicketEncCb(ctx, ticket_cb);
	} else {
		wolfSSL_CTX_NoTicketTLSv12(ctx);
#ifdef WOLFSSL_TLS13
		wolfSSL_CTX_no_ticket_TLSv13(ctx);
#endif
	}
	wolfSSL_CTX_set_session_cache_mode(ctx, o->no_cache ? WOLFSSL_SESS_CACHE_OFF : WOLFSSL_SESS_CACHE_SERVER);
#ifdef OPENSSL_EXTRA	/* wolfSSL defines the SNI callback only with the OpenSSL layer (and friends) */
	if (!o->no_sni)
		wolfSSL_CTX_set_servername_callback(ctx, sni_cb);
#else
	(void)sni_cb;
#endif
	wolfSSL_CTX_SetIORecv(ctx, io_recv);
	wolfSSL_CTX_SetIOSend(ctx, io_send);
	return ctx;
}

static WOLFSSL_CTX *client_ctx(const struct opts *o)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(o->tls12 ? wolfTLSv1_2_client_method() : wolfTLSv1_3_client_method());

	if (ctx == NULL || wolfSSL_CTX_set_cipher_list(ctx, ciphers) != WOLFSSL_SUCCESS)
		die("client context");
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
	wolfSSL_CTX_SetIORecv(ctx, io_recv);
	wolfSSL_CTX_SetIOSend(ctx, io_send);
	return ctx;
}

static bool want(WOLFSSL *ssl, int ret)
{
	int e = wolfSSL_get_error(ssl, ret);

	return e == WOLFSSL_ERROR_WANT_READ || e == WOLFSSL_ERROR_WANT_WRITE;
}

static void fail(WOLFSSL *ssl, int ret, const char *what)
{
	char buf[96];

	wolfSSL_ERR_error_string_n((unsigned long)wolfSSL_get_error(ssl, ret), buf, sizeof(buf));
	fprintf(stderr, "tls_conn_mem: %s: %s\n", what, buf);
	exit(1);
}

/* One connection; returns the server object, idle, or frees it too when !keep. */
static WOLFSSL *connection(WOLFSSL_CTX *sctx, WOLFSSL_CTX *cctx, const struct opts *o, bool keep)
{
	static const char greeting[] = "+OK echo ready\r\n";
	char buf[256];
	WOLFSSL *s, *c;
	bool s_done = false, c_done = false;
	int ret;

	c2s.len = c2s.off = s2c.len = s2c.off = 0;
	cur_side = SIDE_SERVER;
	s = wolfSSL_new(sctx);
	if (s == NULL)
		die("wolfSSL_new (server)");
	wolfSSL_SetIOReadCtx(s, &c2s);
	wolfSSL_SetIOWriteCtx(s, &s2c);
	cur_side = SIDE_CLIENT;
	c = wolfSSL_new(cctx);
	if (c == NULL)
		die("wolfSSL_new (client)");
	wolfSSL_SetIOReadCtx(c, &s2c);
	wolfSSL_SetIOWriteCtx(c, &c2s);
	if (wolfSSL_UseSNI(c, WOLFSSL_SNI_HOST_NAME, "bench.localdomain", 17) != WOLFSSL_SUCCESS)
		die("wolfSSL_UseSNI");
#ifdef WOLFSSL_TLS13
	if (!o->tls12 && wolfSSL_UseKeyShare(c, o->p256 ? WOLFSSL_ECC_SECP256R1 : WOLFSSL_ECC_X25519) != WOLFSSL_SUCCESS)
		die("wolfSSL_UseKeyShare");
#endif
	for (int round = 0; round < 64 && !(s_done && c_done); round++) {
		if (!c_done) {
			cur_side = SIDE_CLIENT;
			ret = wolfSSL_connect(c);
			if (ret == WOLFSSL_SUCCESS)
				c_done = true;
			else if (!want(c, ret))
				fail(c, ret, "client handshake");
		}
		if (!s_done) {
			cur_side = SIDE_SERVER;
			ret = wolfSSL_accept(s);
			if (ret == WOLFSSL_SUCCESS)
				s_done = true;
			else if (!want(s, ret))
				fail(s, ret, "server handshake");
		}
	}
	if (!s_done || !c_done)
		die("handshake did not finish in 64 rounds");
	/* tls/tls.c: handshake_done, then read_plain, then the session's greeting. */
	cur_side = SIDE_SERVER;
	if (!o->keep) {
		wolfSSL_FreeArrays(s);
		(void)wolfSSL_FreeHandshakeResources(s);
	}
	ret = wolfSSL_read(s, buf, sizeof(buf));
	if (ret > 0 || !want(s, ret))
		fail(s, ret, "server read after the handshake");
	if (wolfSSL_write(s, greeting, (int)sizeof(greeting) - 1) != (int)sizeof(greeting) - 1)
		die("server write");
	cur_side = SIDE_CLIENT;
	ret = wolfSSL_read(c, buf, sizeof(buf));
	if (ret != (int)sizeof(greeting) - 1)
		fail(c, ret, "client read of the greeting");
	wolfSSL_free(c);
	cur_side = SIDE_OTHER;
	if (keep)
		return s;
	cur_side = SIDE_SERVER;
	wolfSSL_free(s);
	cur_side = SIDE_OTHER;
	return NULL;
}

/* ---- the report ------------------------------------------------------------------------------ */

static void symbol(uintptr_t addr, char *out, size_t out_size)
{
	Dl_info di;
	char cmd[1024], line[512];
	FILE *f;
	size_t used = 0;

	snprintf(out, out_size, "%#lx", (unsigned long)addr);
	if (addr == 0 || dladdr((void *)addr, &di) == 0 || di.dli_fname == NULL)
		return;
	uintptr_t off = addr - (uintptr_t)di.dli_fbase - 1;	/* the call, not the return address */
	const char *base = strrchr(di.dli_fname, '/');

	snprintf(out, out_size, "%s+%#lx", base != NULL ? base + 1 : di.dli_fname, (unsigned long)off);
	snprintf(cmd, sizeof(cmd), "addr2line -p -f -s -i -e '%s' %#lx 2>/dev/null", di.dli_fname,
		 (unsigned long)off);
	f = popen(cmd, "r");
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f) != NULL && used + 2 < out_size) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "??", 2) == 0)
			break;
		/* "func at file.c:123", then " (inlined by) g at file.c:45" lines */
		int n = snprintf(out + used, out_size - used, "%s%s", used ? " <" : "",
				 strncmp(line, " (inlined by) ", 14) == 0 ? line + 14 : line);
		if (n < 0)
			break;
		used += (size_t)n < out_size - used ? (size_t)n : out_size - used - 1;
	}
	pclose(f);
}

static int by_bytes(const void *a, const void *b)
{
	const struct site *x = *(const struct site *const *)a, *y = *(const struct site *const *)b;

	return x->usable < y->usable ? 1 : x->usable > y->usable ? -1 : 0;
}

struct size_row {
	uint32_t size, usable;
	uint64_t count;
};

static int by_size_bytes(const void *a, const void *b)
{
	const struct size_row *x = a, *y = b;
	uint64_t bx = x->count * x->usable, by = y->count * y->usable;

	return bx < by ? 1 : bx > by ? -1 : 0;
}

static long rss_kb(void)
{
	long pages = 0, res = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f != NULL) {
		if (fscanf(f, "%ld %ld", &pages, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void report(const struct opts *o, const struct totals *base, size_t mi0, long rss0)
{
	struct totals t = live[SIDE_SERVER];
	double n = o->conns;
	static struct site *order[SITES_MAX];
	static struct size_row rows[4096];
	uint32_t nrows = 0;
	struct mallinfo2 mi = mallinfo2();

	for (uint32_t i = 0; i < TAB_SIZE; i++) {
		const struct blk *b = &tab[i];

		if (b->p == 0 || b->side != SIDE_SERVER || !b->measured)
			continue;
		sites[b->site].count++;
		sites[b->site].bytes += b->size;
		sites[b->site].usable += b->usable;
		uint32_t r = 0;

		while (r < nrows && rows[r].size != b->size)
			r++;
		if (r == nrows && nrows < 4096)
			rows[nrows++] = (struct size_row){ .size = b->size, .usable = b->usable };
		if (r < nrows)
			rows[r].count++;
	}
	printf("per idle server connection (%d connections, TLS %s): %.0f B requested, %.0f B usable, "
	       "%.1f blocks\n", o->conns, o->tls12 ? "1.2" : "1.3", (double)(t.bytes - base->bytes) / n,
	       (double)(t.usable - base->usable) / n, (double)(t.blocks - base->blocks) / n);
	printf("cross-check: mallinfo2 in use %+.0f B, RSS %+.0f B per connection (include the freed "
	       "clients' fragmentation)\n", ((double)mi.uordblks - (double)mi0) / n,
	       (double)(rss_kb() - rss0) * 1024.0 / n);
	printf("\nby call site (per connection: blocks, requested B, usable B; caller of XMALLOC < its caller)\n");
	for (uint32_t i = 0; i < site_count; i++)
		order[i] = &sites[i];
	qsort(order, site_count, sizeof(order[0]), by_bytes);
	uint64_t total = t.usable - base->usable;

	for (uint32_t i = 0; i < site_count && order[i]->count > 0; i++) {
		char a[1024], b[1024];

		if (!o->verbose && order[i]->usable * 100 < total)
			break;
		if (order[i]->dbg_func != NULL) {
			snprintf(a, sizeof(a), "%s:%u", order[i]->dbg_func, order[i]->dbg_line);
			b[0] = '\0';
		} else {
			symbol(order[i]->f[0], a, sizeof(a));
			symbol(order[i]->f[1], b, sizeof(b));
		}
		printf("  %5.2f %8.0f %8.0f  %s%s%s\n", (double)order[i]->count / n, (double)order[i]->bytes / n,
		       (double)order[i]->usable / n, a, b[0] ? "  <  " : "", b);
	}
	printf("\nby size (per connection: blocks x requested B (usable B) = usable B)\n");
	qsort(rows, nrows, sizeof(rows[0]), by_size_bytes);
	for (uint32_t r = 0; r < nrows; r++) {
		double per = (double)rows[r].count / n;

		if (!o->verbose && per * rows[r].usable * 100 < (double)total / n)
			break;
		printf("  %5.2f x %6u (%6u) = %8.0f\n", per, rows[r].size, rows[r].usable, per * rows[r].usable);
	}
	printf("RESULT\tlib=%s\ttls=%s\tconns=%d\tbytes_per_conn=%.0f\tusable_per_conn=%.0f\tblocks_per_conn=%.1f\n",
	       wolfSSL_lib_version(), o->tls12 ? "1.2" : "1.3", o->conns, (double)(t.bytes - base->bytes) / n,
	       (double)(t.usable - base->usable) / n, (double)(t.blocks - base->blocks) / n);
}

static void usage(void)
{
	fprintf(stderr, "usage: tls_conn_mem -c CERT.pem -k KEY.pem [-n CONNS] [-t 1.3|1.2] [-g x25519|p256] "
		"[-w WARMUP] [-K] [-S] [-C] [-T] [-v]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct opts o = { .conns = 1000, .warm = 20 };
	static WOLFSSL *keep[CONNS_MAX];
	int opt;

	while ((opt = getopt(argc, argv, "c:k:n:t:g:w:KSCTv")) != -1) {
		switch (opt) {
		case 'c': o.cert = optarg; break;
		case 'k': o.key = optarg; break;
		case 'n': o.conns = atoi(optarg); break;
		case 'w': o.warm = atoi(optarg); break;
		case 't':
			if (strcmp(optarg, "1.2") != 0 && strcmp(optarg, "1.3") != 0)
				usage();
			o.tls12 = strcmp(optarg, "1.2") == 0;
			break;
		case 'g':
			if (strcmp(optarg, "p256") != 0 && strcmp(optarg, "x25519") != 0)
				usage();
			o.p256 = strcmp(optarg, "p256") == 0;
			break;
		case 'K': o.keep = true; break;
		case 'S': o.no_cache = true; break;
		case 'C': o.no_sni = true; break;
		case 'T': o.no_tickets = true; break;
		case 'v': o.verbose = true; break;
		default: usage();
		}
	}
	if (o.cert == NULL || o.key == NULL || o.conns < 1 || o.conns > CONNS_MAX || o.warm < 0 || o.warm > 1000)
		usage();
	if (wolfSSL_SetAllocators(hook_malloc, hook_free, hook_realloc) != 0)
		die("wolfSSL_SetAllocators");
	if (wolfSSL_Init() != WOLFSSL_SUCCESS)
		die("wolfSSL_Init");
	printf("wolfSSL %s; options:%s%s%s%s%s%s%s\n\n", wolfSSL_lib_version(),
#ifdef SESSION_CERTS
	       " SESSION_CERTS",
#else
	       "",
#endif
#ifdef KEEP_PEER_CERT
	       " KEEP_PEER_CERT",
#else
	       "",
#endif
#ifdef WOLFSSL_POST_HANDSHAKE_AUTH
	       " POST_HANDSHAKE_AUTH",
#else
	       "",
#endif
#ifdef WOLFSSL_DTLS
	       " DTLS",
#else
	       "",
#endif
#ifdef OPENSSL_ALL
	       " OPENSSL_ALL",
#else
	       "",
#endif
#ifdef OPENSSL_EXTRA
	       " OPENSSL_EXTRA",
#else
	       "",
#endif
#ifdef WOLFSSL_AESNI
	       " AESNI"
#else
	       ""
#endif
	);
	cur_side = SIDE_OTHER;
	WOLFSSL_CTX *sctx = server_ctx(&o), *cctx = client_ctx(&o);

	for (int i = 0; i < o.warm; i++)
		(void)connection(sctx, cctx, &o, false);
	struct totals base = live[SIDE_SERVER];
	size_t mi0 = mallinfo2().uordblks;
	long rss0 = rss_kb();

	measuring = true;
	for (int i = 0; i < o.conns; i++)
		keep[i] = connection(sctx, cctx, &o, true);
	measuring = false;
	report(&o, &base, mi0, rss0);
	cur_side = SIDE_SERVER;
	for (int i = 0; i < o.conns; i++)
		wolfSSL_free(keep[i]);
	cur_side = SIDE_OTHER;
	wolfSSL_CTX_free(sctx);
	wolfSSL_CTX_free(cctx);
	wolfSSL_Cleanup();
	return 0;
}
