#!/usr/bin/env bash
# Run every libFuzzer harness build/fuzz/fuzz_NAME (source fuzz/fuzz_NAME.c,
# seed corpus fuzz/corpus/fuzz_NAME/, optional dictionary fuzz/fuzz_NAME.dict).
#
# usage: scripts/fuzz.sh regress|short|long
#   regress  execute every seed-corpus file once (no fuzzing); the repo is untouched
#   short    coverage-guided, FUZZ_SECONDS each (default 5 when CI=true, else 30),
#            in a scratch copy of the corpus, build/fuzz-work/NAME/corpus
#   long     coverage-guided, FUZZ_SECONDS each (default 600), then the new inputs
#            that add coverage are merged (-merge=1) into fuzz/corpus/NAME
# Crash, leak, timeout and OOM inputs go to build/fuzz-work/NAME/artifacts/; any of
# them fails the script, and their paths are printed.  Ends with one line
# "fuzz.sh MODE: N passed, M failed" (fuzzers).
# Build first: make fuzzers.
set -euo pipefail

cd "$(dirname "$0")/.."

usage() {
	echo "usage: scripts/fuzz.sh regress|short|long   (FUZZ_SECONDS=N to set the time per fuzzer)" >&2
}

mode=${1:-}
case "$mode" in
regress) seconds=0 ;;
short) if [ "${CI:-}" = "true" ]; then seconds=${FUZZ_SECONDS:-5}; else seconds=${FUZZ_SECONDS:-30}; fi ;;
long) seconds=${FUZZ_SECONDS:-600} ;;
-h | --help) usage; exit 0 ;;
*) usage; exit 2 ;;
esac
case "$seconds" in
'' | *[!0-9]*) echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" >&2; exit 2 ;;
esac

# Stop at the first sanitizer report; libFuzzer then saves the input.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}halt_on_error=1:abort_on_error=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}halt_on_error=1:abort_on_error=1:print_stacktrace=1"

shopt -s nullglob
fuzzers=()
for bin in build/fuzz/fuzz_*; do
	[ -f "$bin" ] && [ -x "$bin" ] && fuzzers+=("$bin")
done
if [ ${#fuzzers[@]} -eq 0 ]; then
	echo "fuzz.sh $mode: no fuzzers in build/fuzz/ (run: make fuzzers)" >&2
	echo "fuzz.sh $mode: 0 passed, 1 failed"
	exit 1
fi

passed=0
failed=0
# Common libFuzzer options: a per-input time limit (a hang is a bug too) and a
# memory limit, so a run always ends.
common=(-timeout=25 -rss_limit_mb=2048 -print_final_stats=1)

for bin in "${fuzzers[@]}"; do
	name=$(basename "$bin")
	seeds="fuzz/corpus/$name"
	dict="fuzz/$name.dict"
	work="build/fuzz-work/$name"
	artifacts="$work/artifacts"
	log="$work/$mode.log"
	rm -rf "$artifacts"
	mkdir -p "$artifacts"
	dict_opt=()
	[ -f "$dict" ] && dict_opt=(-dict="$dict")
	opts=("${common[@]}" -artifact_prefix="$artifacts/")
	status=0
	what=""

	case "$mode" in
	regress)
		# Just execute the seed files, each once.
		files=()
		if [ -d "$seeds" ]; then
			while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$seeds" -type f -print0 | sort -z)
		fi
		if [ ${#files[@]} -eq 0 ]; then
			# No seeds: at least run the empty input once.
			"$bin" "${opts[@]}" -runs=1 >"$log" 2>&1 || status=$?
			what="no seed files; empty input"
		else
			"$bin" "${opts[@]}" "${files[@]}" >"$log" 2>&1 || status=$?
			what="${#files[@]} seed files"
		fi
		;;
	short | long)
		corpus="$work/corpus"
		rm -rf "$corpus"
		mkdir -p "$corpus"
		if [ -d "$seeds" ]; then
			cp -R "$seeds/." "$corpus/"
		fi
		"$bin" "${opts[@]}" "${dict_opt[@]}" -max_total_time="$seconds" "$corpus" >"$log" 2>&1 || status=$?
		what="${seconds} s"
		if [ "$status" -eq 0 ] && [ "$mode" = long ]; then
			mkdir -p "$seeds"
			before=$(find "$seeds" -type f | wc -l)
			# Keep only inputs from the run that add coverage to the seeds.
			"$bin" "${common[@]}" -artifact_prefix="$artifacts/" -merge=1 "$seeds" "$corpus" \
				>>"$log" 2>&1 || status=$?
			after=$(find "$seeds" -type f | wc -l)
			what="$what, $((after - before)) new inputs merged into $seeds"
		fi
		;;
	esac

	crashes=()
	for f in "$artifacts"/*; do crashes+=("$f"); done
	runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -n 1 || true)
	if [ "$status" -eq 0 ] && [ ${#crashes[@]} -eq 0 ]; then
		passed=$((passed + 1))
		echo "fuzz $mode $name: ok ($what${runs:+, $runs runs})"
	else
		failed=$((failed + 1))
		echo "fuzz $mode $name: FAILED (exit $status; $what); log: $log"
		# The report itself (from its first line), else the log's end.
		first=$(grep -n -m 1 -E 'ERROR: |runtime error:|deadly signal|ALARM|out-of-memory|-timeout=' "$log" | cut -d: -f1 || true)
		if [ -n "$first" ]; then
			sed -n "${first},$((first + 30))p" "$log" | sed 's/^/    /'
		else
			tail -n 40 "$log" | sed 's/^/    /'
		fi
		for f in "${crashes[@]}"; do
			echo "fuzz $mode $name: crash input: $f"
		done
		if [ "$mode" = regress ]; then
			# The crashing seed is named in the log ("Running: FILE" before the report).
			grep -E '^Running: ' "$log" | tail -n 1 | sed "s/^Running: /fuzz $mode $name: crashing seed: /" || true
		fi
	fi
done

echo "fuzz.sh $mode: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
