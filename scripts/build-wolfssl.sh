#!/usr/bin/env bash
# NAME
#	build-wolfssl.sh - wolfSSL from Debian's own source package, with x86-64 assembly
# SYNOPSIS
#	scripts/build-wolfssl.sh		(as root; then: make WOLFSSL=local all)
#	PROFILE=debian scripts/build-wolfssl.sh	(Debian's own options, plus the assembly)
#	FORCE=1 scripts/build-wolfssl.sh	(rebuild even if build/wolfssl exists)
# DESCRIPTION
#	Debian 12's libwolfssl is built without AES-NI and without wolfSSL's
#	assembly public-key code (sp_int generic math, no SP ECC/RSA), and with
#	nearly every feature (--enable-distro = --enable-all): among them
#	session certificates, post-handshake authentication, DTLS and the whole
#	OpenSSL compatibility layer, which make every TLS connection cost about
#	60 KB of heap (bench/compare/tls_conn_mem.c says where).  This script
#	builds the very same upstream version from the source package of the
#	installed libwolfssl-dev:
#
#	  1. makes sure apt can fetch sources: if no deb-src entry exists, it
#	     writes /etc/apt/sources.list.d/ringmail-deb-src.sources with the
#	     deb-src twin of every Debian archive entry already configured (the
#	     same URIs, suites, components and keyring, read from the existing
#	     .sources / .list files: no host is named here), then apt-get update;
#	  2. apt-get source wolfssl=<installed version> into build/wolfssl-src/
#	     (dpkg-dev unpacks it, Debian's patches applied);
#	  3. configures it (PROFILE, below) with --prefix=build/wolfssl;
#	  4. make, make install into build/wolfssl/ (include/, lib/).
#
#	PROFILE=small (the default): what ringmail uses and nothing else, with
#	the assembly: TLS 1.2 and 1.3 (no older versions, no DTLS), ECC with
#	P-256 and X25519, RSA with PSS (TLS 1.3 signatures), AES-GCM,
#	ChaCha20-Poly1305, HKDF, SNI, session tickets, extended master secret,
#	supported curves, alternative certificate chains (the client's
#	verification), and --enable-aesni --enable-intelasm --enable-sp
#	--enable-sp-asm.  Left out: the OpenSSL compatibility layer, extra and
#	all (OPENSSL_EXTRA alone is some 4.8 KB per connection: a verify
#	parameter block, the suites kept after the handshake, and the peer
#	certificate it forces on, KEEP_PEER_CERT; tls/tls.c picks the SNI
#	certificate before wolfSSL_new and needs none of it), session
#	certificates (37.5 KB per connection), post-handshake authentication
#	(keeps the handshake hashes of every TLS 1.3 connection), DTLS, TLS <
#	1.2, PKCS#11, OCSP/CRL, FP_ECC (SP math has its own fixed tables), and
#	the 4-bit GCM tables (--enable-aesgcm=small: AES-NI's GCM never reads
#	them; 512 B per direction).
#
#	PROFILE=debian: Debian's own configure options (read from debian/rules
#	of that package: dh_auto_configure's arguments) plus --enable-aesni
#	--enable-intelasm --enable-sp --enable-sp-asm: the package as Debian
#	ships it, with the assembly only.
#
#	Nothing is installed system-wide but the build dependencies and the
#	deb-src entry; build/ is never committed.  The options used are written
#	to build/wolfssl/CONFIGURE-OPTIONS, the profile to build/wolfssl/PROFILE
#	(an existing build of another profile is rebuilt), and the resulting
#	options.h keeps them too.  `make WOLFSSL=local ...` then compiles and
#	links ringmail against build/wolfssl (include path, lib path, rpath).
# ENVIRONMENT
#	PROFILE (small | debian), FORCE, JOBS (nproc), PREFIX (build/wolfssl)
# DIAGNOSTICS
#	Exit 0 with build/wolfssl/lib/libwolfssl.so in place; otherwise the
#	failing step's error and exit 1.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SRC=$ROOT/build/wolfssl-src
PREFIX=${PREFIX:-$ROOT/build/wolfssl}
PROFILE=${PROFILE:-small}
ASM_OPTS=(--enable-aesni --enable-intelasm --enable-sp --enable-sp-asm)
# PROFILE=small: see DESCRIPTION.  Every feature is named, on or off, so that a different
# default of another upstream version changes nothing here.
SMALL_OPTS=(
	--enable-tls13 --enable-tlsv12 --disable-oldtls --disable-dtls --disable-sslv3
	--enable-ecc --enable-curve25519 --disable-ed25519 --disable-ed448 --disable-curve448
	--enable-rsapss --enable-dh --enable-aesgcm=small --disable-aesgcm-stream
	--enable-chacha --enable-poly1305 --enable-sha384 --enable-sha512 --enable-hkdf
	--enable-sni --enable-session-ticket --enable-extended-master --enable-supportedcurves
	--enable-altcertchains --disable-opensslextra
	--disable-opensslall --disable-sessioncerts --disable-postauth --disable-earlydata
	--disable-fpecc --disable-pkcs11 --disable-ocsp --disable-crl --disable-alpn
	--disable-maxfragment --disable-truncatedhmac --disable-psk --disable-savesession
	--disable-sessionexport --disable-pkcallbacks --disable-atomicuser
	--disable-examples --disable-crypttests --disable-static --enable-shared
	--disable-silent-rules
)
# What --enable-opensslextra would also have switched on and ringmail wants: an alert
# for every refused handshake (handshake_failure for no common cipher suite, not a bare close).
SMALL_CFLAGS="-DWOLFSSL_EXTRA_ALERTS"
DEBSRC_FILE=/etc/apt/sources.list.d/ringmail-deb-src.sources
JOBS=${JOBS:-$(nproc)}

die() { echo "build-wolfssl: $*" >&2; exit 1; }

[[ $PROFILE == small || $PROFILE == debian ]] || die "PROFILE must be small or debian, not '$PROFILE'"
built_profile=$(cat "$PREFIX/PROFILE" 2>/dev/null || echo debian)	# builds before profiles were Debian's
if [[ -z ${FORCE:-} && -e $PREFIX/lib/libwolfssl.so && -e $PREFIX/include/wolfssl/options.h &&
	$built_profile == "$PROFILE" ]]; then
	echo "build-wolfssl: $PREFIX already built, PROFILE=$PROFILE (FORCE=1 to rebuild)"
	exit 0
fi
[[ $(id -u) -eq 0 ]] || die "needs root (apt-get source, build dependencies)"

version=$(dpkg-query -W -f='${Version}' libwolfssl-dev 2>/dev/null || true)
[[ -n $version ]] || die "libwolfssl-dev is not installed: run scripts/deps.sh first"
echo "build-wolfssl: installed libwolfssl-dev $version"

# Tools to unpack and build the source package (Debian's wolfssl uses dh with autoreconf).
need="dpkg-dev autoconf automake libtool make gcc"
missing=""
for p in $need; do
	[[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == "install ok installed" ]] || missing="$missing $p"
done
if [[ -n $missing ]]; then
	echo "build-wolfssl: installing:$missing"
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

# ---- 1. a deb-src entry for the archive already configured ----------------------------------
has_debsrc() {
	grep -hsE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | grep -q . && return 0
	grep -hsiE '^Types:.*deb-src' /etc/apt/sources.list.d/*.sources | grep -q .
}

write_debsrc() {
	local out
	out=$(mktemp)
	{
		echo "# written by ringmail's scripts/build-wolfssl.sh: the deb-src twins of the"
		echo "# Debian archive entries configured on this machine (apt-get source wolfssl)."
		# deb822 stanzas of Debian's archive (signed with Debian's archive keyring).
		for f in /etc/apt/sources.list.d/*.sources; do
			[[ -e $f && $f != "$DEBSRC_FILE" ]] || continue
			awk 'BEGIN { RS = ""; FS = "\n" }
			     /[Ss]igned-[Bb]y:[^\n]*debian-archive-keyring/ && /(^|\n)Types:[^\n]*deb([ \t\n]|$)/ {
				out = ""
				for (i = 1; i <= NF; i++) {
					if ($i ~ /^#/) continue
					if ($i ~ /^Types:/) $i = "Types: deb-src"
					out = out $i "\n"
				}
				printf "\n%s", out
			     }' "$f"
		done
		# One-line entries: "deb [opts] URI suite comps..." of Debian's archive.
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[[ -e $f ]] || continue
			awk '$1 == "deb" && /debian/ {
				uri = ""; suite = ""; comps = ""; i = 2
				if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				uri = $i; suite = $(i + 1)
				for (j = i + 2; j <= NF; j++) comps = comps " " $j
				printf "\nTypes: deb-src\nURIs: %s\nSuites: %s\nComponents:%s\n", uri, suite, comps
			}' "$f"
		done
	} >"$out"
	grep -q '^Types: deb-src' "$out" || { rm -f "$out"; die "no Debian archive entry found in /etc/apt to derive a deb-src entry from"; }
	install -m 644 "$out" "$DEBSRC_FILE"
	rm -f "$out"
	echo "build-wolfssl: wrote $DEBSRC_FILE:"
	sed 's/^/  /' "$DEBSRC_FILE"
}

if ! has_debsrc; then
	write_debsrc
	apt-get update -q
elif ! apt-cache showsrc wolfssl 2>/dev/null | grep -q '^Package: wolfssl'; then
	apt-get update -q
fi

# ---- 2. the source package of the installed version --------------------------------------------
rm -rf "$SRC"
mkdir -p "$SRC"
upstream=${version%-*}
upstream=${upstream#*:}
(
	cd "$SRC"
	# The installed version if its source is still in the archive, else the newest there.
	if ! apt-get source -q "wolfssl=$version"; then
		echo "build-wolfssl: source of $version not available; taking apt-get source wolfssl" >&2
		apt-get source -q wolfssl
	fi
) || die "apt-get source wolfssl failed (see above)"
tree=$(find "$SRC" -mindepth 1 -maxdepth 1 -type d -name 'wolfssl-*' | head -n 1)
[[ -n $tree && -f $tree/debian/rules ]] || die "no unpacked source tree with debian/rules under $SRC"
echo "build-wolfssl: source tree $tree (upstream $upstream)"

# ---- 3. the configure options of the profile -------------------------------------------------
# debian/rules passes Debian's to dh_auto_configure ("dh_auto_configure -- OPTIONS", possibly
# continued over several lines with backslashes); they are read for either profile, to be
# recorded, and used as they are for PROFILE=debian.
mapfile -t deb_opts < <(
	awk '/^[ \t]+dh_auto_configure/ { on = 1 }
	     on { line = line " " $0; if ($0 !~ /\\$/) { print line; exit } }' "$tree/debian/rules" |
	sed -e 's/\\//g' -e 's/.*dh_auto_configure[^-]*--//' | tr -s ' \t' '\n' | grep -E '^--' || true
)
((${#deb_opts[@]} > 0)) || die "could not read dh_auto_configure options from $tree/debian/rules"
opts=()
if [[ $PROFILE == debian ]]; then
	for o in "${deb_opts[@]}"; do
		case $o in
		--prefix=* | --libdir=* | --includedir=*) ;;	# ours below
		*) opts+=("$o") ;;
		esac
	done
else
	opts+=("${SMALL_OPTS[@]}")
fi
opts+=("${ASM_OPTS[@]}" "--prefix=$PREFIX" "--libdir=$PREFIX/lib")
echo "build-wolfssl: Debian's options: ${deb_opts[*]}"
echo "build-wolfssl: PROFILE=$PROFILE: configure ${opts[*]}"

(
	cd "$tree"
	if [[ ! -x configure ]]; then
		./autogen.sh >/dev/null 2>&1 || autoreconf -fi
	fi
	# Debian's CFLAGS (dpkg-buildflags, with debian/rules' hardening=+all), so that only
	# the options differ from the package.
	export DEB_BUILD_MAINT_OPTIONS=hardening=+all
	profile_cflags=""
	[[ $PROFILE == small ]] && profile_cflags=$SMALL_CFLAGS
	CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS) $profile_cflags" \
	LDFLAGS="$(dpkg-buildflags --get LDFLAGS)" \
		./configure "${opts[@]}" >"$SRC/configure.log" 2>&1 ||
		{ tail -n 30 "$SRC/configure.log" >&2; exit 1; }
	make -j"$JOBS" >"$SRC/make.log" 2>&1 || { tail -n 40 "$SRC/make.log" >&2; exit 1; }
	rm -rf "$PREFIX"
	make install >"$SRC/install.log" 2>&1 || { tail -n 20 "$SRC/install.log" >&2; exit 1; }
	# A distro build leaves options.h out of make install; Debian installs it from
	# debian/libwolfssl-dev.install, and so does this.
	install -m 644 wolfssl/options.h "$PREFIX/include/wolfssl/options.h"
) || die "configure/make failed (logs in $SRC)"

printf '%s\n' "${opts[@]}" >"$PREFIX/CONFIGURE-OPTIONS"
if [[ $PROFILE == small ]]; then echo "CFLAGS+=$SMALL_CFLAGS" >>"$PREFIX/CONFIGURE-OPTIONS"; fi
echo "$PROFILE" >"$PREFIX/PROFILE"
echo "$version" >"$PREFIX/DEBIAN-VERSION"
[[ -e $PREFIX/lib/libwolfssl.so ]] || die "no $PREFIX/lib/libwolfssl.so after make install"
echo "build-wolfssl: installed into $PREFIX (PROFILE=$PROFILE)"
grep -E '^#define (WOLFSSL_AESNI|HAVE_INTEL_AVX[12]|USE_INTEL_SPEEDUP|WOLFSSL_SP_ASM|WOLFSSL_SP_X86_64_ASM|WOLFSSL_HAVE_SP_ECC|WOLFSSL_HAVE_SP_RSA)' \
	"$PREFIX/include/wolfssl/options.h" | sed 's/^/  /'
