#!/usr/bin/env bash
# NAME
#	bench-spool.sh - durable commits per second of the spool, and the machine's limit
# SYNOPSIS
#	scripts/bench-spool.sh				(after `make all`; or `make bench-spool`)
#	SPOOL_BENCH_DIR=/mnt/fast/x ROUNDS=3 scripts/bench-spool.sh
# DESCRIPTION
#	One run gives the whole matrix, every figure measured in this run on the
#	same file system: for content sizes 1 KiB, 4 KiB and 64 KiB,
#	  ringmail-bench spool-limit --group 1	one fdatasync per message (write(2))
#	  ringmail-bench spool-limit --group 64	one fdatasync per 64 messages
#	  ringmail-bench spool --writers 1, 10, 100	the spool, one worker
#	then a table and, per size, the goal of the spool issue: at 100 writers
#	within 2x of the group-of-64 limit, and at least 10x the
#	one-fdatasync-per-message loop.
#
#	Each cell runs in a new directory under $SPOOL_BENCH_DIR (default
#	./var/bench-spool)/run.PID; the bench deletes what it wrote and the script
#	removes the directories it made.  Every cell runs ROUNDS times (default 3;
#	rounds interleaved, cells of one size back to back) and the table shows
#	the median round by messages/s, with the lowest and highest rate.  Before
#	the cells of each size an untimed spool-limit run writes and deletes
#	WARMUP_MB of page cache: on a VM that hands free memory back to the host
#	(virtio-balloon free page reporting), memory that has been free for a few
#	seconds is slow to touch again and the first cell after a pause would
#	measure that instead (see docs/BENCHMARKS.md).  `sync` runs between cells
#	so that one cell's deferred work (journal, discard) does not land in the
#	next.
#
#	Cells that fail (a failed commit, the time limit) are marked FAIL and the
#	script exits 1; whether the goal is met does not change the exit status.
# ENVIRONMENT
#	SPOOL_BENCH_DIR, ROUNDS (default 3), TIME_LIMIT (per cell, default 60 s),
#	WARMUP_MB (per size, default 400, 0 = none), BENCH (default
#	build/ringmail-bench).
set -euo pipefail

cd "$(dirname "$0")/.."

BENCH=${BENCH:-build/ringmail-bench}
BASE=${SPOOL_BENCH_DIR:-./var/bench-spool}
ROUNDS=${ROUNDS:-3}
TIME_LIMIT=${TIME_LIMIT:-60}
WARMUP_MB=${WARMUP_MB:-400}

if [[ ! -x $BENCH ]]; then
	echo "bench-spool: $BENCH is missing: run 'make all' first" >&2
	exit 1
fi
if ! [[ $ROUNDS =~ ^[1-9][0-9]*$ && $TIME_LIMIT =~ ^[1-9][0-9]*$ && $WARMUP_MB =~ ^[0-9]+$ ]]; then
	echo "bench-spool: ROUNDS and TIME_LIMIT must be positive integers, WARMUP_MB an integer" >&2
	exit 1
fi

# The directories this script makes (BASE and missing parents), removed at the end if empty.
made=()
d=$BASE
while [[ ! -e $d ]]; do
	made+=("$d")
	d=$(dirname "$d")
done
mkdir -p "$BASE"
RUN=$BASE/run.$$
mkdir "$RUN"	# new: never mixes with an earlier run

cleanup() {
	rmdir "$RUN" 2>/dev/null || echo "bench-spool: $RUN is not empty; left for inspection" >&2
	for d in "${made[@]}"; do
		rmdir "$d" 2>/dev/null || break
	done
}
trap cleanup EXIT

# The cells: "size mode n M" (mode limit: n = group; mode spool: n = writers).
# M keeps each cell between about 0.3 and 2 s on a virtio disk with ~0.2 ms fdatasync.
CELLS=(
	"1024 limit 1 3000"	"1024 limit 64 100000"
	"1024 spool 1 2000"	"1024 spool 10 20000"	"1024 spool 100 100000"
	"4096 limit 1 3000"	"4096 limit 64 50000"
	"4096 spool 1 2000"	"4096 spool 10 20000"	"4096 spool 100 50000"
	"65536 limit 1 1000"	"65536 limit 64 5000"
	"65536 spool 1 1000"	"65536 spool 10 5000"	"65536 spool 100 5000"
)

jget() {	# jget KEY JSON: a number or bare word from the bench's one-line JSON
	sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2"
}

fs_type=$(df -PT "$RUN" | awk 'NR == 2 { print $2 }')
fs_dev=$(df -PT "$RUN" | awk 'NR == 2 { print $1 }')
echo "bench-spool: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, kernel $(uname -r)," \
	"directory $RUN on $fs_type ($fs_dev), $ROUNDS round(s), time limit $TIME_LIMIT s per cell"

declare -A RESULTS	# "cell index,round" -> JSON line ("" = failed to produce one)
failed=0
for size in 1024 4096 65536; do
	if (( WARMUP_MB > 0 )); then
		"$BENCH" spool-limit --dir "$RUN/warmup" --size "$size" \
			--messages $(( WARMUP_MB * 1048576 / size )) --group 64 --time-limit "$TIME_LIMIT" \
			>/dev/null || echo "bench-spool: warm-up failed (ignored)" >&2
		sync
	fi
	for (( round = 1; round <= ROUNDS; round++ )); do
	for i in "${!CELLS[@]}"; do
		read -r csize mode n m <<<"${CELLS[$i]}"
		[[ $csize == "$size" ]] || continue
		dir=$RUN/c$i-r$round
		if [[ $mode == limit ]]; then
			cmd=("$BENCH" spool-limit --dir "$dir" --size "$size" --messages "$m" --group "$n")
		else
			cmd=("$BENCH" spool --dir "$dir" --writers "$n" --size "$size" --messages "$m" --workers 1)
		fi
		cmd+=(--time-limit "$TIME_LIMIT" --json)
		echo "  ${cmd[*]}"
		set +e
		out=$("${cmd[@]}" 2>&1)
		rc=$?
		set -e
		json=$(grep '^{' <<<"$out" | tail -n 1 || true)
		if (( rc != 0 )) || [[ -z $json ]]; then
			failed=1
			echo "bench-spool: FAILED (exit $rc):" >&2
			sed 's/^/    /' <<<"$out" >&2
		fi
		RESULTS[$i,$round]=$json
		sync
	done
	done
done

# The round whose rate is the median, per cell.
median_json() {
	local i=$1 r lines=()
	for (( r = 1; r <= ROUNDS; r++ )); do
		local j=${RESULTS[$i,$r]}
		[[ -z $j ]] && continue
		local rate
		rate=$(jget commits_per_s "$j")
		[[ -z $rate ]] && rate=$(jget messages_per_s "$j")
		lines+=("$rate $j")
	done
	(( ${#lines[@]} == 0 )) && return 0
	printf '%s\n' "${lines[@]}" | sort -n -k1,1 | sed -n "$(( (${#lines[@]} + 1) / 2 ))p" | cut -d' ' -f2-
}

rate_range() {	# lowest-highest rate of a cell over its rounds
	local i=$1 r rates=()
	for (( r = 1; r <= ROUNDS; r++ )); do
		local j=${RESULTS[$i,$r]} rate
		[[ -z $j ]] && continue
		rate=$(jget commits_per_s "$j")
		[[ -z $rate ]] && rate=$(jget messages_per_s "$j")
		rates+=("$rate")
	done
	(( ${#rates[@]} == 0 )) && { echo -; return 0; }
	printf '%s\n' "${rates[@]}" | sort -n | sed -n '1p;$p' | paste -sd- -
}

declare -A RATE
echo
FMT='| %-6s | %-26s | %6s | %10s | %-15s | %8s | %10s | %9s | %7s | %7s | %-4s |\n'
printf "$FMT" size run M "messages/s" "range" "MB/s" fdatasyncs "per fsync" "p50 ms" "p99 ms" ok
printf "$FMT" "" "" "" "" "" "" "" "" "" "" "" | tr ' ' -
for i in "${!CELLS[@]}"; do
	read -r size mode n m <<<"${CELLS[$i]}"
	j=$(median_json "$i")
	label=$(( size / 1024 ))KiB
	if [[ $mode == limit ]]; then
		what="limit: fdatasync every $n"
	else
		what="spool: $n writer$([[ $n == 1 ]] || echo s)"
	fi
	if [[ -z $j ]]; then
		printf "$FMT" "$label" "$what" "$m" - - - - - - - FAIL
		continue
	fi
	if [[ $mode == limit ]]; then
		rate=$(jget messages_per_s "$j")
		syncs=$(jget syncs "$j")
		per=$(awk -v d="$(jget durable "$j")" -v s="$syncs" 'BEGIN { printf "%.1f", s ? d / s : 0 }')
		p50=- p99=-
	else
		rate=$(jget commits_per_s "$j")
		syncs=$(jget syncs "$j")
		per=$(jget commits_per_sync "$j")
		p50=$(jget p50_ms "$j") p99=$(jget p99_ms "$j")
	fi
	RATE[$size,$mode,$n]=$rate
	printf "$FMT" "$label" "$what" "$m" "$rate" "$(rate_range "$i")" "$(jget mb_per_s "$j")" \
		"$syncs" "$per" "$p50" "$p99" \
		"$([[ $(jget pass "$j") == true ]] && echo yes || echo FAIL)"
done
echo "(median of $ROUNDS rounds by messages/s, range = lowest-highest; p50/p99: commit latency of that round,"
echo " first begin call to the durable callback; MB/s: content, 1 MB = 10^6 B)"

echo
echo "Goal at 100 writers: >= 0.5 x the group-of-64 limit, and >= 10 x the one-fdatasync-per-message loop"
for size in 1024 4096 65536; do
	s=${RATE[$size,spool,100]:-} g64=${RATE[$size,limit,64]:-} g1=${RATE[$size,limit,1]:-}
	if [[ -z $s || -z $g64 || -z $g1 ]]; then
		echo "  $(( size / 1024 )) KiB: not measured (a cell failed)"
		continue
	fi
	awk -v s="$s" -v g64="$g64" -v g1="$g1" -v k=$(( size / 1024 )) 'BEGIN {
		a = g64 ? s / g64 : 0; b = g1 ? s / g1 : 0
		printf "  %d KiB: spool %d/s = %.2f x limit-64 (%d/s) %s; = %.1f x limit-1 (%d/s) %s; goal %s\n",
			k, s, a, g64, (a >= 0.5) ? "ok" : "MISSED", b, g1, (b >= 10) ? "ok" : "MISSED",
			(a >= 0.5 && b >= 10) ? "MET" : "NOT MET"
	}'
done
exit $failed
