#!/usr/bin/env bash
# Every test, in order (called by `make test` after the build):
#   a. each cmocka unit-test binary build/asan/tests/test_*
#   b. the pytest integration tests, tests/integration (real ringmaild, ASan build)
#   c. scripts/fuzz.sh regress: every fuzzer over its seed corpus
#   d. scripts/fuzz.sh short: a short coverage-guided run of every fuzzer
#   e. make tidy: clang-tidy's basic checks over every C file, warnings are errors
# A failing part does not stop the later ones.  At the end: each part's own
# summary lines, then one line "N passed, M failed".
#
# N and M count PARTS, not individual tests: each unit-test binary is one part,
# the pytest run is one, fuzz regress one, fuzz short one (the per-test counts are
# in the summary lines above that line).  Exit status: 0 only if every part passed.
# Full output of each part: build/test-logs/.
set -euo pipefail

cd "$(dirname "$0")/.."

PYTHON=/usr/bin/python3        # Debian's, with python3-pytest (not a pyenv python3)

# Sanitizer errors abort at once, with a stack; leaks are errors too.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}halt_on_error=1:abort_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:abort_on_error=1:print_stacktrace=1"

logs=build/test-logs
rm -rf "$logs"
mkdir -p "$logs"

passed=0
failed=0
summary=()      # lines printed at the end

record() {      # record NAME STATUS SUMMARY-LINES...
	local name=$1 status=$2
	shift 2
	if [ "$status" -eq 0 ]; then
		passed=$((passed + 1))
		summary+=("PASS $name")
	else
		failed=$((failed + 1))
		summary+=("FAIL $name (exit $status)")
	fi
	local line
	for line in "$@"; do
		summary+=("     $line")
	done
}

banner() {
	printf '\n==== %s\n' "$*"
}

# Run a command with its output to the terminal and to a log; return its status.
run_logged() {  # run_logged LOG CMD...
	local log=$1
	shift
	local status=0
	"$@" 2>&1 | tee "$log" || status=${PIPESTATUS[0]}
	return "$status"
}

# ---- a. unit tests -----------------------------------------------------------------
shopt -s nullglob
units=()
for t in build/asan/tests/test_*; do
	[ -f "$t" ] && [ -x "$t" ] && units+=("$t")
done
if [ ${#units[@]} -eq 0 ]; then
	record "unit tests" 1 "no unit-test binaries in build/asan/tests/ (make unit)"
fi
for t in "${units[@]}"; do
	name=$(basename "$t")
	banner "unit: $t"
	status=0
	run_logged "$logs/$name.log" timeout --kill-after=10 600 "$t" || status=$?
	mapfile -t lines < <(grep -E '^\[  (PASSED|FAILED)  \]' "$logs/$name.log" || true)
	if [ ${#lines[@]} -eq 0 ]; then
		lines=("no cmocka summary: crashed or killed; see $logs/$name.log")
	fi
	record "unit $name" "$status" "${lines[@]}"
done

# ---- b. integration tests --------------------------------------------------------------
banner "integration: $PYTHON -m pytest -q -p no:cacheprovider tests/integration"
status=0
# -p no:cacheprovider: no .pytest_cache in the source tree.
PYTHONDONTWRITEBYTECODE=1 run_logged "$logs/pytest.log" \
	timeout --kill-after=30 2700 "$PYTHON" -m pytest -q -p no:cacheprovider tests/integration || status=$?
# pytest's last line, e.g. "3 failed, 40 passed in 60.12s"; exit 5 = no tests collected.
last=$(grep -E '(passed|failed|error|no tests ran).* in [0-9.]+s' "$logs/pytest.log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//' || true)
[ -n "$last" ] || last="no pytest summary; see $logs/pytest.log"
if [ "$status" -eq 5 ]; then
	last="$last (exit 5: no tests collected counts as a failure)"
fi
mapfile -t failures < <(grep -E '^(FAILED|ERROR) ' "$logs/pytest.log" | cut -c 1-240 || true)
record "integration (pytest)" "$status" "$last" "${failures[@]}"

# ---- c. fuzzers over their seed corpora --------------------------------------------------------
banner "fuzz: scripts/fuzz.sh regress"
status=0
run_logged "$logs/fuzz-regress.log" scripts/fuzz.sh regress || status=$?
mapfile -t lines < <(grep -E '^fuzz(\.sh)? ' "$logs/fuzz-regress.log" || true)
record "fuzz regress" "$status" "${lines[@]}"

# ---- d. short fuzzing runs ----------------------------------------------------------------------------
banner "fuzz: scripts/fuzz.sh short"
status=0
run_logged "$logs/fuzz-short.log" scripts/fuzz.sh short || status=$?
mapfile -t lines < <(grep -E '^fuzz(\.sh)? ' "$logs/fuzz-short.log" || true)
record "fuzz short" "$status" "${lines[@]}"

# ---- e. static analysis --------------------------------------------------------------------------
banner "static analysis: make tidy"
status=0
run_logged "$logs/tidy.log" make --no-print-directory tidy || status=$?
mapfile -t lines < <(grep -E '^clang-tidy: |error:' "$logs/tidy.log" | head -20 || true)
record "clang-tidy" "$status" "${lines[@]}"

# ---- summary -----------------------------------------------------------------------------------------------
banner "summary (logs in $logs/)"
for line in "${summary[@]}"; do
	printf '%s\n' "$line"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
