#!/bin/sh
# Install the Debian 12 packages that building, running and testing ringmail need,
# if any is missing; extra package names given as arguments are added (benchmarks).  As root it runs apt-get; otherwise it prints the exact
# command and fails, so that `make run` and `make test` each stay one command
# on a fresh machine.
set -eu

# What each group is for:
#   build:    compiler, make and the libraries the daemon links
#   test:     unit tests (cmocka), fuzzers (clang + libFuzzer runtime), pytest,
#             microbenchmarks (Google Benchmark), real peers and clients (swaks, curl,
#             openssl, Postfix for smtp-source/smtp-sink, dnsmasq for test DNS
#             zones, aiosmtpd for sinks that answer 4xx/5xx on demand)
packages="gcc g++ make pkg-config
liburing-dev libwolfssl-dev libjemalloc-dev libxxhash-dev libconfig-dev libc-ares-dev libcrypt-dev
libcmocka-dev libbenchmark-dev clang clang-tidy libclang-rt-14-dev llvm python3 python3-pytest
openssl netcat-openbsd procps iproute2 curl util-linux swaks postfix dnsmasq-base python3-aiosmtpd"
# Peers that only a benchmark needs (make bench-tls: nginx) come as arguments.
packages="$packages $*"

missing=""
for p in $packages; do
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$status" in
	"install ok installed") ;;
	*) missing="$missing $p" ;;
	esac
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
	echo "deps: installing:$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	# Postfix is a test peer (smtp-source, smtp-sink, private instances), never
	# the machine's MTA: "No configuration" keeps it from setting one up.
	case "$missing" in
	*" postfix"*) echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections ;;
	esac
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
else
	echo "deps: missing Debian packages:$missing" >&2
	echo "deps: run: sudo apt-get update && sudo apt-get install -y --no-install-recommends$missing" >&2
	exit 1
fi
