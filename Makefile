# ringmail build.  `make` builds the three binaries; `make test` and `make run`
# install missing Debian packages first (scripts/deps.sh).
#
# Variants, each in its own folder so they never mix objects:
#   build/         -O2 -g, jemalloc as the allocator: what is installed and benchmarked
#   build/asan/    ASan+UBSan, system malloc: unit and integration tests
#   build/fuzz/    clang, libFuzzer instrumentation + ASan+UBSan: fuzzers
#   build/bench/   Google Benchmark microbenchmarks over the -O2 objects

CC      ?= gcc
CXX     ?= g++
CLANG   ?= clang
PREFIX  ?= /usr/local
FUZZ_SECONDS ?= 60

WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
CPPFLAGS := -D_GNU_SOURCE -I.
CFLAGS   := -std=gnu11 -O2 -g -pthread $(WARN)
SAN      := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LIBS     := -luring -lconfig -lxxhash -lcares -lcrypt -lwolfssl -lpthread

# Library sources: everything in core/, proto/, tls/ except the programs' mains,
# plus the test protocol handlers that ringmaild serves as protocols "echo"
# (tests/line_echo.c), "relay" (tests/relay.c) and "spooltest" (tests/spool_sink.c).
MAINS    := core/ringmaild.c core/ringmailctl.c bench/ringmail_bench.c
LIB_SRC  := $(filter-out $(MAINS),$(wildcard core/*.c proto/*.c tls/*.c)) tests/line_echo.c tests/relay.c tests/spool_sink.c
LIB_HDR  := $(wildcard core/*.h proto/*.h tls/*.h tests/*.h)

OBJ      := $(patsubst %.c,build/obj/%.o,$(LIB_SRC))
ASAN_OBJ := $(patsubst %.c,build/asan/obj/%.o,$(LIB_SRC))
FUZZ_OBJ := $(patsubst %.c,build/fuzz/obj/%.o,$(LIB_SRC))

BINS      := build/ringmaild build/ringmail-bench build/ringmailctl
ASAN_BINS := build/asan/ringmaild build/asan/ringmail-bench build/asan/ringmailctl

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,build/asan/tests/%,$(UNIT_SRC))
FUZZ_SRC  := $(wildcard fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst fuzz/%.c,build/fuzz/%,$(FUZZ_SRC))
BENCH_SRC := $(wildcard bench/bench_*.cc)
BENCH_BINS:= $(patsubst bench/%.cc,build/bench/%,$(BENCH_SRC))

TOOL_SRC  := $(wildcard tests/tools/*.c)
TOOL_BINS := $(patsubst tests/tools/%.c,build/tools/%,$(TOOL_SRC))

.PHONY: all asan unit fuzzers benches deps test run fuzz bench bench-idle bench-spool install clean tidy
all: $(BINS)
asan: $(ASAN_BINS) $(TOOL_BINS)
unit: $(UNIT_BINS)
fuzzers: $(FUZZ_BINS)
benches: $(BENCH_BINS)

deps:
	@./scripts/deps.sh

# --- release build ---------------------------------------------------------
build/obj/%.o: %.c $(LIB_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

build/libringmail.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

build/ringmaild: build/obj/core/ringmaild.o build/libringmail.a
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS) -ljemalloc
build/ringmailctl: build/obj/core/ringmailctl.o build/libringmail.a
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS) -ljemalloc
build/ringmail-bench: build/obj/bench/ringmail_bench.o build/libringmail.a
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS) -ljemalloc

# --- sanitizer build (tests) -------------------------------------------------
build/asan/obj/%.o: %.c $(LIB_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -O1 $(SAN) -c $< -o $@

build/asan/libringmail.a: $(ASAN_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/asan/ringmaild: build/asan/obj/core/ringmaild.o build/asan/libringmail.a
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LIBS)
build/asan/ringmailctl: build/asan/obj/core/ringmailctl.o build/asan/libringmail.a
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LIBS)
build/asan/ringmail-bench: build/asan/obj/bench/ringmail_bench.o build/asan/libringmail.a
	$(CC) $(CFLAGS) $(SAN) -o $@ $^ $(LIBS)

build/asan/tests/%: tests/unit/%.c build/asan/libringmail.a $(LIB_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -O1 $(SAN) -o $@ $< build/asan/libringmail.a -lcmocka $(LIBS)

# Test tools (tests/tools): small programs the integration tests run.
build/tools/%: tests/tools/%.c build/libringmail.a $(LIB_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< build/libringmail.a $(LIBS)

# --- fuzzers (clang + libFuzzer) ------------------------------------------
FUZZ_CFLAGS := -std=gnu11 -O1 -g -pthread $(WARN) -Wno-unknown-warning-option \
	-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined

build/fuzz/obj/%.o: %.c $(LIB_HDR)
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) $(FUZZ_CFLAGS) -c $< -o $@

build/fuzz/libringmail.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/fuzz/%: fuzz/%.c build/fuzz/libringmail.a $(LIB_HDR)
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build/fuzz/libringmail.a $(LIBS)

# --- microbenchmarks (Google Benchmark) -------------------------------------
build/bench/%: bench/%.cc build/libringmail.a $(LIB_HDR)
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) -std=c++17 -O2 -g -Wall -Wextra -Werror -o $@ $< build/libringmail.a \
		-lbenchmark -lbenchmark_main $(LIBS)

# --- static analysis: clang-tidy's basic checks (.clang-tidy), warnings are errors ---
TIDY_SRC := $(LIB_SRC) $(MAINS) $(UNIT_SRC) $(FUZZ_SRC) $(TOOL_SRC)
# One file per run: clang-tidy 14 carries analyzer state (valist) across files
# of one invocation and then reports false positives.
tidy:
	@set -e; for f in $(TIDY_SRC); do clang-tidy -quiet $$f -- -std=gnu11 -D_GNU_SOURCE -I. 2>/dev/null; done; \
		echo "clang-tidy: $(words $(TIDY_SRC)) files clean"

# --- entry points -------------------------------------------------------------
test: deps
	$(MAKE) all asan unit fuzzers benches
	./scripts/test.sh

run: deps
	$(MAKE) all
	./scripts/run.sh

# Long fuzz runs; new inputs are kept in fuzz/corpus/NAME.
fuzz: deps
	$(MAKE) fuzzers
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./scripts/fuzz.sh long

bench: deps
	$(MAKE) benches
	@set -e; for b in $(BENCH_BINS); do echo "== $$b"; $$b --benchmark_min_time=0.2; done

# ringmail-bench load run: memory per idle connection (docs/BENCHMARKS.md).
bench-idle: deps
	$(MAKE) all
	./scripts/bench-idle.sh

# Spool: durable commits per second against the machine's write+fdatasync limit (docs/BENCHMARKS.md).
bench-spool: deps
	$(MAKE) all
	./scripts/bench-spool.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/ringmail \
		$(DESTDIR)$(PREFIX)/share/man/man8
	install -m 755 build/ringmaild $(DESTDIR)$(PREFIX)/sbin/ringmaild
	install -m 755 build/ringmailctl $(DESTDIR)$(PREFIX)/sbin/ringmailctl
	install -m 755 build/ringmail-bench $(DESTDIR)$(PREFIX)/bin/ringmail-bench
	test -e $(DESTDIR)/etc/ringmail/ringmail.conf || \
		install -m 644 configs/ringmail.conf $(DESTDIR)/etc/ringmail/ringmail.conf
	install -m 644 docs/ringmaild.8 $(DESTDIR)$(PREFIX)/share/man/man8/ringmaild.8

clean:
	rm -rf build

# --- TLS against nginx (docs/BENCHMARKS.md, "TLS: handshakes and idle memory") -----
# WOLFSSL=local: compile and link ringmail against build/wolfssl, the wolfSSL that
# scripts/build-wolfssl.sh builds from Debian's own source package with AES-NI, Intel
# assembly and SP (assembly) math, instead of the system libwolfssl (include path, lib
# path, rpath).  build/wolfssl-flavor records which wolfSSL the objects were compiled
# against; when it changes, every object and program is rebuilt, so the two never mix.
WOLFSSL        ?= system
WOLFSSL_LOCAL  := $(CURDIR)/build/wolfssl
WOLFSSL_LOCAL_FLAGS := -I$(WOLFSSL_LOCAL)/include
WOLFSSL_LOCAL_LIBS  := -L$(WOLFSSL_LOCAL)/lib -Wl,-rpath,$(WOLFSSL_LOCAL)/lib -lwolfssl
ifeq ($(WOLFSSL),local)
CPPFLAGS += $(WOLFSSL_LOCAL_FLAGS)
LIBS     := $(patsubst -lwolfssl,$(WOLFSSL_LOCAL_LIBS),$(LIBS))
else ifneq ($(WOLFSSL),system)
$(error WOLFSSL must be "system" (default) or "local", not "$(WOLFSSL)")
endif

# Rewritten only when the flavour changes (its time stamp then rebuilds what depends on it).
# A first stamp for the system library is dated 1970 so that it rebuilds nothing.
build/wolfssl-flavor: FORCE
	@mkdir -p build
	@if [ "$(WOLFSSL)" = local ] && [ ! -e $(WOLFSSL_LOCAL)/include/wolfssl/options.h ]; then \
		echo "WOLFSSL=local: no wolfSSL in $(WOLFSSL_LOCAL): run scripts/build-wolfssl.sh" >&2; exit 1; fi
	@if [ ! -e $@ ] && [ "$(WOLFSSL)" = system ]; then echo system > $@; touch -d @0 $@; \
	elif [ "$$(cat $@ 2>/dev/null)" != "$(WOLFSSL)" ]; then echo "$(WOLFSSL)" > $@; fi
FORCE:

$(OBJ) $(ASAN_OBJ) $(FUZZ_OBJ) build/obj/core/ringmaild.o build/obj/core/ringmailctl.o \
build/obj/bench/ringmail_bench.o build/asan/obj/core/ringmaild.o build/asan/obj/core/ringmailctl.o \
build/asan/obj/bench/ringmail_bench.o $(UNIT_BINS) $(TOOL_BINS) $(FUZZ_BINS) $(BENCH_BINS): build/wolfssl-flavor

# wolfCrypt's own speed: against the system wolfSSL, and against build/wolfssl when built.
build/compare/wolfcrypt_speed: bench/compare/wolfcrypt_speed.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -g $(WARN) -o $@ $< -lwolfssl
build/compare/wolfcrypt_speed_local: bench/compare/wolfcrypt_speed.c $(WOLFSSL_LOCAL)/include/wolfssl/options.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -g $(WARN) $(WOLFSSL_LOCAL_FLAGS) -o $@ $< $(WOLFSSL_LOCAL_LIBS)

# wolfSSL's heap per idle server TLS connection, by call site (bench/compare/tls_conn_mem.c),
# with ringmaild's allocator (jemalloc): against the system wolfSSL, and build/wolfssl.
build/compare/tls_conn_mem: bench/compare/tls_conn_mem.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -g $(WARN) -o $@ $< -lwolfssl -ldl -ljemalloc
build/compare/tls_conn_mem_local: bench/compare/tls_conn_mem.c $(WOLFSSL_LOCAL)/include/wolfssl/options.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -g $(WARN) $(WOLFSSL_LOCAL_FLAGS) -o $@ $< $(WOLFSSL_LOCAL_LIBS) -ldl -ljemalloc

# A ringmaild against build/wolfssl beside the default one, so that one run of the
# handshake script measures both (objects of its own under build/compare/wl/).
WL_OBJ := $(patsubst %.c,build/compare/wl/obj/%.o,$(LIB_SRC) core/ringmaild.c)
build/compare/wl/obj/%.o: %.c $(LIB_HDR) $(WOLFSSL_LOCAL)/include/wolfssl/options.h
	@mkdir -p $(dir $@)
	$(CC) $(filter-out $(WOLFSSL_LOCAL_FLAGS),$(CPPFLAGS)) $(WOLFSSL_LOCAL_FLAGS) $(CFLAGS) -c $< -o $@
build/compare/ringmaild-wolfssl-local: $(WL_OBJ)
	$(CC) $(CFLAGS) -o $@ $^ $(filter-out -lwolfssl $(WOLFSSL_LOCAL_LIBS),$(LIBS)) $(WOLFSSL_LOCAL_LIBS) -ljemalloc

# Full and resumed handshakes/s, idle memory per TLS connection and primitive speed,
# ringmaild against a private nginx (mail, OpenSSL) in one run.  With build/wolfssl
# present (scripts/build-wolfssl.sh) the run measures the ringmaild built against it too.
bench-tls:
	./scripts/deps.sh nginx libnginx-mod-mail
	$(MAKE) all build/compare/wolfcrypt_speed
	@if [ -e $(WOLFSSL_LOCAL)/include/wolfssl/options.h ]; then \
		$(MAKE) build/compare/ringmaild-wolfssl-local build/compare/wolfcrypt_speed_local; fi
	./bench/compare/tls-handshake.sh
.PHONY: bench-tls FORCE
