#!/usr/bin/env bash
# NAME
#	bench-idle.sh - ringmaild's memory per idle plaintext connection
# SYNOPSIS
#	scripts/bench-idle.sh			(after `make all`)
#	CONNS=20000 PORT=2207 HOLD=5 scripts/bench-idle.sh
# DESCRIPTION
#	Starts build/ringmaild with a throw-away configuration (2 workers, one
#	echo listener on 127.0.0.1:$PORT, idle timeout far beyond the run, spool
#	and control socket in a mktemp directory), samples its VmRSS
#	(/proc/PID/status) and Pss (/proc/PID/smaps_rollup), opens $CONNS idle
#	connections with `ringmail-bench idle`, samples again about 2 s into the
#	hold (after the bench printed ALL-ESTABLISHED), and prints the deltas per
#	connection.  Only the ringmaild this script started is stopped (SIGTERM to
#	its pid, then wait).  Builds nothing.
#
#	What the delta measures: the user-space memory ringmaild touches for a
#	connection after start (its session struct, allocator growth, the part of
#	any pool first touched by it).  The engine reserves its per-slot arrays at
#	start but touches a slot's pages only when the slot is first used, so
#	the connection slot itself (struct rm_conn) is in the delta too.  Socket buffers and
#	TCP state live in the kernel and are not in RSS: the script prints the
#	system-wide Slab delta as an indication (both ends of every connection are
#	on this host, and other activity adds noise).
# DIAGNOSTICS
#	Exit 0 when the bench passed (all established, all said bye), 1 otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."

CONNS=${CONNS:-10000}
PORT=${PORT:-2107}
HOLD=${HOLD:-5}
SAMPLE_AFTER_S=${SAMPLE_AFTER_S:-2}	# into the hold, after ALL-ESTABLISHED
DAEMON=build/ringmaild
BENCH=build/ringmail-bench

for bin in "$DAEMON" "$BENCH"; do
	if [[ ! -x $bin ]]; then
		echo "bench-idle: $bin is missing: run 'make all' first" >&2
		exit 1
	fi
done
if (( HOLD <= SAMPLE_AFTER_S )); then
	echo "bench-idle: HOLD ($HOLD s) must exceed SAMPLE_AFTER_S ($SAMPLE_AFTER_S s)" >&2
	exit 1
fi
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && (( CONNS + 64 > hard )); then
	echo "bench-idle: CONNS=$CONNS needs more open files than the hard limit $hard allows" >&2
	exit 1
fi

listening() {
	if command -v ss >/dev/null 2>&1; then
		[[ -n $(ss -Htln "sport = :$PORT" 2>/dev/null) ]]
	else
		(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
	fi
}

# ringmaild binds with SO_REUSEPORT: a second one on a busy port would split
# the connections with whatever is there and spoil the measurement.
if listening; then
	echo "bench-idle: port $PORT is already in use; set PORT=..." >&2
	exit 1
fi

dir=$(mktemp -d /tmp/ringmail-bench-idle.XXXXXX)
daemon_pid=
bench_pid=

cleanup() {
	if [[ -n $bench_pid ]] && kill -0 "$bench_pid" 2>/dev/null; then
		kill -TERM "$bench_pid" 2>/dev/null || true
		wait "$bench_pid" 2>/dev/null || true
	fi
	if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
		kill -TERM "$daemon_pid" 2>/dev/null || true
		for _ in $(seq 1 150); do
			kill -0 "$daemon_pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$daemon_pid" 2>/dev/null; then
			echo "bench-idle: ringmaild $daemon_pid ignored SIGTERM for 15 s; killing it" >&2
			kill -KILL "$daemon_pid" 2>/dev/null || true
		fi
		wait "$daemon_pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$dir/ringmail.conf" <<EOF
# written by scripts/bench-idle.sh
workers = 2;
log_level = "warn";
log_target = "stderr";
allow_root = true;
spool_dir = "$dir/spool";
control_socket = "$dir/ringmail.sock";
limits = {
  connections_per_worker = 8192;
  idle_timeout_ms = 3600000;
  shutdown_timeout_ms = 2000;
};
listeners = (
  { name = "echo"; protocol = "echo"; address = "127.0.0.1"; port = $PORT; }
);
EOF

daemon_cmd=("$DAEMON" -c "$dir/ringmail.conf")
bench_cmd=("$BENCH" idle --host 127.0.0.1 --port "$PORT" --conns "$CONNS" --hold "$HOLD")

"${daemon_cmd[@]}" >"$dir/ringmaild.log" 2>&1 &
daemon_pid=$!

for _ in $(seq 1 100); do
	listening && break
	if ! kill -0 "$daemon_pid" 2>/dev/null; then
		echo "bench-idle: ringmaild exited at start:" >&2
		cat "$dir/ringmaild.log" >&2
		exit 1
	fi
	sleep 0.1
done
if ! listening; then
	echo "bench-idle: ringmaild does not listen on port $PORT after 10 s" >&2
	exit 1
fi

# Values in kB, as the kernel prints them.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$daemon_pid/status"; }
pss_kb() { awk '/^Pss:/ { print $2 }' "/proc/$daemon_pid/smaps_rollup"; }
slab_kb() { awk '/^Slab:/ { print $2 }' /proc/meminfo; }

sleep 0.5	# let the workers finish setting up
rss_before=$(rss_kb)
pss_before=$(pss_kb)
slab_before=$(slab_kb)

timeout 120 "${bench_cmd[@]}" >"$dir/bench.out" 2>"$dir/bench.err" &
bench_pid=$!

# Bounded by the bench's own timeout: it either prints the line or exits.
while ! grep -q '^ALL-ESTABLISHED' "$dir/bench.out" 2>/dev/null; do
	if ! kill -0 "$bench_pid" 2>/dev/null; then
		break
	fi
	sleep 0.05
done
established_line=$(grep -m1 '^ALL-ESTABLISHED' "$dir/bench.out" || true)
rss_after=
pss_after=
slab_after=
if [[ -n $established_line ]]; then
	sleep "$SAMPLE_AFTER_S"
	rss_after=$(rss_kb)
	pss_after=$(pss_kb)
	slab_after=$(slab_kb)
fi

bench_status=0
wait "$bench_pid" || bench_status=$?
bench_pid=

echo "== ringmail-bench output"
cat "$dir/bench.out"
if [[ -s $dir/bench.err ]]; then
	echo "== ringmail-bench stderr (first 20 lines)"
	head -n 20 "$dir/bench.err"
fi

echo "== memory of ringmaild (pid $daemon_pid) per idle plaintext connection"
echo "commands:"
echo "  ${daemon_cmd[*]}    # config below"
echo "  timeout 120 ${bench_cmd[*]}"
echo "  RSS: VmRSS in /proc/$daemon_pid/status; PSS: Pss in /proc/$daemon_pid/smaps_rollup"
echo "  sampled before the bench, and ${SAMPLE_AFTER_S} s after ALL-ESTABLISHED (hold ${HOLD} s)"
if [[ -z $rss_after ]]; then
	echo "connections: not all established (no ALL-ESTABLISHED line): no 'after' sample"
	echo "ringmail-bench exit status: $bench_status"
	exit 1
fi
awk -v n="$CONNS" -v rb="$rss_before" -v ra="$rss_after" -v pb="$pss_before" -v pa="$pss_after" \
    -v sb="$slab_before" -v sa="$slab_after" 'BEGIN {
	printf "connections          %d\n", n
	printf "RSS before / after   %d kB / %d kB   delta %d kB\n", rb, ra, ra - rb
	printf "PSS before / after   %d kB / %d kB   delta %d kB\n", pb, pa, pa - pb
	printf "bytes per connection RSS %.0f   PSS %.0f\n", (ra - rb) * 1024 / n, (pa - pb) * 1024 / n
	printf "kernel Slab delta    %d kB, %.0f bytes per connection (system-wide, both socket ends: indicative)\n", \
		sa - sb, (sa - sb) * 1024 / n
	printf "note: slot arrays are reserved at start and touched on first use: slots are in the delta\n"
}'
echo "config:"
sed 's/^/  /' "$dir/ringmail.conf"
echo "ringmail-bench exit status: $bench_status"
exit $(( bench_status == 0 ? 0 : 1 ))
