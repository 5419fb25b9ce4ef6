/*
 * NAME
 *	wolfcrypt_speed - wolfCrypt's speed for what a TLS handshake and record cost
 * SYNOPSIS
 *	build/compare/wolfcrypt_speed [SECONDS]		(default 3 per primitive)
 *	taskset -c 0 build/compare/wolfcrypt_speed 3
 * DESCRIPTION
 *	Times, on the calling thread, for SECONDS each: ECDSA P-256 sign and
 *	verify (of a SHA-256 digest), P-256 key generation and ECDH derive, X25519
 *	key generation and derive (when the library has Curve25519), RSA-2048
 *	private-key sign (PKCS#1 v1.5; PSS costs the same private operation) and
 *	public-key verify, AES-128-GCM and ChaCha20-Poly1305 encryption of 16 KiB
 *	and 1 KiB records, SHA-256 of 16 KiB.  Each result is one line:
 *
 *	  wolfcrypt <TAB> NAME <TAB> OPS_PER_S <TAB> UNIT
 *
 *	UNIT is "ops/s" or "MB/s" (10^6 bytes).  The names match those the
 *	handshake script gives `openssl speed`'s figures, so the two can be put
 *	side by side.  The first lines say which wolfSSL this is (run-time
 *	version) and how it was built: AES-NI, Intel assembly, SP (single
 *	precision) ECC/RSA and its assembly, and the math library.
 *
 *	Built against the system wolfSSL (build/compare/wolfcrypt_speed) or
 *	against build/wolfssl (build/compare/wolfcrypt_speed_local): see the
 *	Makefile.
 * DIAGNOSTICS
 *	Exit 1 with a message when a primitive fails.
 */
#include <wolfssl/options.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <wolfssl/ssl.h>
#include <wolfssl/version.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/chacha20_poly1305.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/rsa.h>
#include <wolfssl/wolfcrypt/sha256.h>
#ifdef HAVE_CURVE25519
#include <wolfssl/wolfcrypt/curve25519.h>
#endif

static double seconds = 3.0;
static WC_RNG rng;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(int ret, const char *what)
{
	if (ret != 0) {
		fprintf(stderr, "wolfcrypt_speed: %s failed: %d\n", what, ret);
		exit(1);
	}
}

static void report(const char *name, double count, double elapsed, const char *unit)
{
	printf("wolfcrypt\t%s\t%.1f\t%s\n", name, count / elapsed, unit);
	fflush(stdout);
}

/* Run op until the time is up (checked every batch), return ops and elapsed time. */
#define TIMED(name, unit, scale, batch, body)                                              \
	do {                                                                                 \
		double t0_ = now(), t_ = t0_;                                                \
		unsigned long n_ = 0;                                                        \
		while (t_ - t0_ < seconds) {                                                 \
			for (unsigned b_ = 0; b_ < (batch); b_++) {                            \
				body;                                                        \
			}                                                                    \
			n_ += (batch);                                                       \
			t_ = now();                                                          \
		}                                                                            \
		report(name, (double)n_ * (scale), t_ - t0_, unit);                          \
	} while (0)

static void print_build(void)
{
	printf("# wolfSSL %s (run time; headers %s)\n", wolfSSL_lib_version(), LIBWOLFSSL_VERSION_STRING);
	printf("# built with:");
#ifdef WOLFSSL_AESNI
	printf(" WOLFSSL_AESNI");
#endif
#ifdef USE_INTEL_SPEEDUP
	printf(" USE_INTEL_SPEEDUP");
#endif
#ifdef HAVE_INTEL_AVX1
	printf(" HAVE_INTEL_AVX1");
#endif
#ifdef HAVE_INTEL_AVX2
	printf(" HAVE_INTEL_AVX2");
#endif
#ifdef WOLFSSL_SP_MATH_ALL
	printf(" WOLFSSL_SP_MATH_ALL");
#endif
#ifdef WOLFSSL_SP_MATH
	printf(" WOLFSSL_SP_MATH");
#endif
#ifdef WOLFSSL_HAVE_SP_ECC
	printf(" WOLFSSL_HAVE_SP_ECC");
#endif
#ifdef WOLFSSL_HAVE_SP_RSA
	printf(" WOLFSSL_HAVE_SP_RSA");
#endif
#ifdef WOLFSSL_SP_ASM
	printf(" WOLFSSL_SP_ASM");
#endif
#ifdef WOLFSSL_SP_X86_64_ASM
	printf(" WOLFSSL_SP_X86_64_ASM");
#endif
#ifdef WOLFSSL_SP_X86_64
	printf(" WOLFSSL_SP_X86_64");
#endif
#ifdef FP_ECC
	printf(" FP_ECC");
#endif
#ifdef ECC_TIMING_RESISTANT
	printf(" ECC_TIMING_RESISTANT");
#endif
#ifdef HAVE_CURVE25519
	printf(" HAVE_CURVE25519");
#endif
#ifdef CURVE25519_SMALL
	printf(" CURVE25519_SMALL");
#endif
#ifdef GCM_TABLE_4BIT
	printf(" GCM_TABLE_4BIT");
#endif
	printf("\n");
}

static void bench_ecc(void)
{
	ecc_key key, peer, tmp;
	byte hash[WC_SHA256_DIGEST_SIZE], sig[ECC_MAX_SIG_SIZE], secret[32];
	word32 sig_len = sizeof(sig), secret_len;
	int verified = 0;

	memset(hash, 0x5a, sizeof(hash));
	check(wc_ecc_init(&key), "wc_ecc_init");
	check(wc_ecc_init(&peer), "wc_ecc_init");
	check(wc_ecc_make_key_ex(&rng, 32, &key, ECC_SECP256R1), "P-256 make key");
	check(wc_ecc_make_key_ex(&rng, 32, &peer, ECC_SECP256R1), "P-256 make key");
#ifdef ECC_TIMING_RESISTANT
	check(wc_ecc_set_rng(&key, &rng), "wc_ecc_set_rng");
	check(wc_ecc_set_rng(&peer, &rng), "wc_ecc_set_rng");
#endif
	check(wc_ecc_sign_hash(hash, sizeof(hash), sig, &sig_len, &rng, &key), "ECDSA sign");

	TIMED("ECDSA-P256-sign", "ops/s", 1, 16, {
		word32 l = sizeof(sig);
		check(wc_ecc_sign_hash(hash, sizeof(hash), sig, &l, &rng, &key), "ECDSA sign");
		sig_len = l;
	});
	TIMED("ECDSA-P256-verify", "ops/s", 1, 8, {
		check(wc_ecc_verify_hash(sig, sig_len, hash, sizeof(hash), &verified, &key), "ECDSA verify");
		if (!verified)
			check(-1, "ECDSA verify result");
	});
	/* What an ECDHE server does per handshake: a fresh key pair, then the shared secret. */
	TIMED("P256-keygen", "ops/s", 1, 16, {
		check(wc_ecc_init(&tmp), "wc_ecc_init");
		check(wc_ecc_make_key_ex(&rng, 32, &tmp, ECC_SECP256R1), "P-256 make key");
		wc_ecc_free(&tmp);
	});
	TIMED("P256-ecdh-derive", "ops/s", 1, 8, {
		secret_len = sizeof(secret);
		check(wc_ecc_shared_secret(&key, &peer, secret, &secret_len), "ECDH P-256");
	});
	wc_ecc_free(&key);
	wc_ecc_free(&peer);
}

static void bench_x25519(void)
{
#ifdef HAVE_CURVE25519
	curve25519_key key, peer, tmp;
	byte secret[CURVE25519_KEYSIZE];
	word32 secret_len;

	check(wc_curve25519_init(&key), "wc_curve25519_init");
	check(wc_curve25519_init(&peer), "wc_curve25519_init");
	check(wc_curve25519_make_key(&rng, CURVE25519_KEYSIZE, &key), "X25519 make key");
	check(wc_curve25519_make_key(&rng, CURVE25519_KEYSIZE, &peer), "X25519 make key");
	TIMED("X25519-keygen", "ops/s", 1, 16, {
		check(wc_curve25519_init(&tmp), "wc_curve25519_init");
		check(wc_curve25519_make_key(&rng, CURVE25519_KEYSIZE, &tmp), "X25519 make key");
		wc_curve25519_free(&tmp);
	});
	TIMED("X25519-derive", "ops/s", 1, 16, {
		secret_len = sizeof(secret);
		check(wc_curve25519_shared_secret(&key, &peer, secret, &secret_len), "X25519 derive");
	});
	wc_curve25519_free(&key);
	wc_curve25519_free(&peer);
#else
	printf("# X25519: not in this wolfSSL build\n");
#endif
}

static void bench_rsa(void)
{
	RsaKey key;
	byte digest_info[51], sig[256], out[256];
	int sig_len;

	memset(digest_info, 0x3c, sizeof(digest_info));	/* the size of a SHA-256 DigestInfo */
	check(wc_InitRsaKey(&key, NULL), "wc_InitRsaKey");
	check(wc_MakeRsaKey(&key, 2048, WC_RSA_EXPONENT, &rng), "RSA-2048 make key");
#ifdef WC_RSA_BLINDING
	check(wc_RsaSetRNG(&key, &rng), "wc_RsaSetRNG");
#endif
	sig_len = wc_RsaSSL_Sign(digest_info, sizeof(digest_info), sig, sizeof(sig), &key, &rng);
	if (sig_len <= 0)
		check(sig_len == 0 ? -1 : sig_len, "RSA sign");
	TIMED("RSA2048-sign", "ops/s", 1, 4, {
		int r = wc_RsaSSL_Sign(digest_info, sizeof(digest_info), sig, sizeof(sig), &key, &rng);
		if (r <= 0)
			check(r == 0 ? -1 : r, "RSA sign");
	});
	TIMED("RSA2048-verify", "ops/s", 1, 32, {
		int r = wc_RsaSSL_Verify(sig, (word32)sig_len, out, sizeof(out), &key);
		if (r != (int)sizeof(digest_info))
			check(r == 0 ? -1 : r, "RSA verify");
	});
	wc_FreeRsaKey(&key);
}

static void bench_bulk(size_t size)
{
	static byte in[16384], out[16384];
	byte key[32], iv[12], aad[13], tag[16];
	char name[64];
	Aes aes;

	memset(in, 0x11, sizeof(in));
	memset(key, 0x22, sizeof(key));
	memset(iv, 0x33, sizeof(iv));
	memset(aad, 0x44, sizeof(aad));
	check(wc_AesInit(&aes, NULL, INVALID_DEVID), "wc_AesInit");
	check(wc_AesGcmSetKey(&aes, key, 16), "AES-128-GCM key");
	snprintf(name, sizeof(name), "AES-128-GCM-%zu", size);
	TIMED(name, "MB/s", (double)size / 1e6, 64, {
		check(wc_AesGcmEncrypt(&aes, out, in, (word32)size, iv, sizeof(iv), tag, sizeof(tag), aad,
				       sizeof(aad)), "AES-128-GCM encrypt");
	});
	wc_AesFree(&aes);
	snprintf(name, sizeof(name), "ChaCha20-Poly1305-%zu", size);
	TIMED(name, "MB/s", (double)size / 1e6, 64, {
		check(wc_ChaCha20Poly1305_Encrypt(key, iv, aad, sizeof(aad), in, (word32)size, out, tag),
		      "ChaCha20-Poly1305 encrypt");
	});
}

static void bench_sha256(void)
{
	static byte in[16384];
	byte digest[WC_SHA256_DIGEST_SIZE];

	memset(in, 0x55, sizeof(in));
	TIMED("SHA256-16384", "MB/s", (double)sizeof(in) / 1e6, 64, {
		check(wc_Sha256Hash(in, sizeof(in), digest), "SHA-256");
	});
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		seconds = atof(argv[1]);
		if (seconds <= 0 || seconds > 60) {
			fprintf(stderr, "usage: wolfcrypt_speed [SECONDS (0..60]]\n");
			return 2;
		}
	}
	check(wolfCrypt_Init(), "wolfCrypt_Init");
	check(wc_InitRng(&rng), "wc_InitRng");
	print_build();
	bench_ecc();
	bench_x25519();
	bench_rsa();
	bench_bulk(16384);
	bench_bulk(1024);
	bench_sha256();
	wc_FreeRng(&rng);
#ifdef FP_ECC
	wc_ecc_fp_free();
#endif
	wolfCrypt_Cleanup();
	return 0;
}
