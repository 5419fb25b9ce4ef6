#!/usr/bin/env bash
# NAME
#	smtp-accept.sh - durable SMTP acceptance: ringmaild against Postfix, one run
# SYNOPSIS
#	bench/compare/smtp-accept.sh				(after make all)
#	SERVERS=postfix RUNS=1 MSGS=5000 bench/compare/smtp-accept.sh
# DESCRIPTION
#	In one run, on this machine, both servers with their queue on the same file
#	system (one work directory under BASE holds Postfix's queue and ringmaild's spool):
#
#	  postfix    a private Postfix instance (Debian's), smtpd on 127.0.0.1:PORT_BASE,
#	             relayhost = Postfix's smtp-sink on 127.0.0.1:PORT_BASE+1,
#	             mynetworks = 127.0.0.0/8, chroot off, defaults otherwise (cleanup
#	             fsyncs the queue file before the 250 to the end of data).  It queues,
#	             and delivers to the sink in the background while the load runs.
#	  ringmail   build/ringmaild with workers = WORKERS, one smtp listener on
#	             127.0.0.1:PORT_BASE+2, relay_domains example.com -> the same sink,
#	             mynetworks 127.0.0.0/8 (not limited per client, as Postfix exempts
#	             its mynetworks), defaults otherwise.  Like Postfix it queues
#	             and delivers to the sink in the background while the load runs; it
#	             is started on an empty spool for every cell.
#
#	For each server: a warm-up (WARMUP messages, not recorded), then RUNS rounds of
#	every cell, sessions in SESSIONS x size in SIZES, and in each cell two clients:
#	  smtp-source   smtp-source -4 -s SESS -m MSGS -l SIZE -d -f sender@example.org
#	                -t rcpt@example.com 127.0.0.1:PORT   (Postfix's load tool: one
#	                command per write, no pipelining; -d keeps each session's
#	                connection for all its messages).  Rate = MSGS / wall time.
#	  ringmail-bench build/ringmail-bench smtp --conns SESS --messages MSGS --size SIZE
#	                (pipelines MAIL/RCPT/DATA when offered): its messages/s and the
#	                p50 / p99 latency from the end of data written to its 250.
#	                A closed loop: at saturation its latency is mostly its own
#	                queueing (SESS / rate), so for ringmaild also
#	  ringmail-bench@RATE  the same at --rate RATE (an open loop, default 7000 msg/s:
#	                about ten times Postfix's rate on this kind of machine), for
#	                sessions in RATE_SESSIONS ("100") and sizes up to 4096: the latency
#	                at that load.
#	MSGS is MSGS_LARGE for sizes of 65536 and more.  Before every Postfix cell the
#	queue is drained (bounded by DRAIN_TIMEOUT), so each cell starts on an empty queue.
#
#	Results: build/bench-results/smtp-accept-<UTC>.tsv (one line per measurement),
#	.md next to it (median [min..max] per cell and the ratio ringmail / Postfix,
#	from bench/compare/smtp_summary.py), and machine.txt data at the top of the .md.
#
#	Only loopback.  Refuses to start if a port it needs is listening.  Every wait
#	and loop is bounded; only what it started is stopped: Postfix with
#	"postfix -c DIR stop" and then its recorded master pid, smtp-sink and ringmaild
#	by their pids (SIGTERM, then SIGKILL after 10 s).
# ENVIRONMENT
#	E2E (0; 1: also the end-to-end rate, from each client's start until the server's queue
#	is empty again, every message delivered to the sink: issue 6's figure)
#	SERVERS ("postfix ringmail ringmail-queue": ringmail-queue is ringmaild with delivery off,
#	the acceptance into the queue alone) RATE (7000) RATE_SESSIONS ("100") RUNS (3) MSGS (20000) MSGS_LARGE (5000) WARMUP (1000)
#	SESSIONS ("20 100") SIZES ("1024 4096 65536") PORT_BASE (12625) WORKERS (nproc)
#	BASE (var/smtp-accept) RINGMAILD (build/ringmaild) BENCH (build/ringmail-bench)
#	CELL_TIMEOUT (900 s per measurement) DRAIN_TIMEOUT (600 s) RESULTS (build/bench-results)
# DIAGNOSTICS
#	Exit 0 when every measurement of every server in SERVERS passed; 1 when a server
#	did not start, a port was taken or a measurement failed (its row says FAIL).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)

SERVERS=${SERVERS:-"postfix ringmail ringmail-queue"}
RM_DELIVERY=true
RATE=${RATE:-7000}
RATE_SESSIONS=${RATE_SESSIONS:-100}
RUNS=${RUNS:-3}
MSGS=${MSGS:-20000}
MSGS_LARGE=${MSGS_LARGE:-5000}
WARMUP=${WARMUP:-1000}
SESSIONS=${SESSIONS:-"20 100"}
SIZES=${SIZES:-"1024 4096 65536"}
PORT_BASE=${PORT_BASE:-12625}
WORKERS=${WORKERS:-$(nproc)}
BASE=${BASE:-$ROOT/var/smtp-accept}
RINGMAILD=${RINGMAILD:-build/ringmaild}
BENCH=${BENCH:-build/ringmail-bench}
CELL_TIMEOUT=${CELL_TIMEOUT:-900}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
RESULTS=${RESULTS:-$ROOT/build/bench-results}

PF_PORT=$PORT_BASE
SINK_PORT=$((PORT_BASE + 1))
RM_PORT=$((PORT_BASE + 2))
HOST=127.0.0.1
FROM=sender@example.org
TO=rcpt@example.com

die() { echo "smtp-accept: $*" >&2; exit 1; }
note() { echo "smtp-accept: $*"; }

isnum() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
isnum "$RUNS" && ((RUNS <= 20)) || die "RUNS must be 1..20"
isnum "$MSGS" && ((MSGS <= 10000000)) || die "MSGS must be 1..10000000"
isnum "$MSGS_LARGE" && ((MSGS_LARGE <= 10000000)) || die "MSGS_LARGE must be 1..10000000"
isnum "$WARMUP" || die "WARMUP must be a positive integer"
isnum "$WORKERS" || die "WORKERS must be a positive integer"
for s in $SESSIONS; do isnum "$s" && ((s <= 1000)) || die "SESSIONS: 1..1000 each"; done
for s in $SIZES; do isnum "$s" && ((s <= 33554432)) || die "SIZES: 1..33554432 each"; done
for s in $SERVERS; do [[ $s == postfix || $s == ringmail || $s == ringmail-queue ]] || die "SERVERS: postfix, ringmail, ringmail-queue"; done
want() { [[ " $SERVERS " == *" $1 "* ]]; }

for b in smtp-sink smtp-source ss awk; do
	command -v "$b" >/dev/null || die "missing $b (Debian package postfix: scripts/deps.sh)"
done
if want postfix; then
	for b in postfix postconf; do command -v "$b" >/dev/null || die "missing $b (Debian package postfix)"; done
	[[ -r /etc/postfix/master.cf.proto ]] || die "no /etc/postfix/master.cf.proto (Debian package postfix)"
fi
[[ -x $BENCH ]] || die "$BENCH is missing: make all"
if want ringmail; then [[ -x $RINGMAILD ]] || die "$RINGMAILD is missing: make all"; fi

port_busy() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }
for p in $PF_PORT $SINK_PORT $RM_PORT; do
	port_busy "$p" && die "port $p is already in use; refusing (set PORT_BASE=...)"
done

mkdir -p "$BASE" "$RESULTS"
work=$(mktemp -d "$BASE/run.XXXXXX")
chmod 755 "$work"	# Postfix's daemons run as postfix: they must traverse it
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
TSV=$RESULTS/smtp-accept-$STAMP.tsv
MD=$RESULTS/smtp-accept-$STAMP.md
PFCONF=$work/postfix/etc
PFQ=$work/postfix/queue

SINK_PID=""
MASTER_PID=""
RM_PID=""
failed=0

stop_pid() {	# pid name: SIGTERM, 10 s, SIGKILL; our own child or recorded pid only
	local pid=$1 name=$2
	[[ -n $pid ]] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "smtp-accept: $name ($pid) still running after 10 s; SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}
stop_postfix() {
	[[ -f $PFCONF/main.cf ]] && postfix -c "$PFCONF" stop >/dev/null 2>&1 || true
	if [[ -n $MASTER_PID ]]; then
		for _ in $(seq 1 100); do
			kill -0 "$MASTER_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$MASTER_PID" 2>/dev/null && stop_pid "$MASTER_PID" postfix-master
	fi
	MASTER_PID=""
}
stop_ringmaild() { stop_pid "$RM_PID" ringmaild; RM_PID=""; }
cleanup() {
	stop_ringmaild
	stop_postfix
	stop_pid "$SINK_PID" smtp-sink
	SINK_PID=""
	rm -rf "$work"
	rmdir "$BASE" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the next hop: Postfix's smtp-sink (keeps nothing) -------------------------------------
sink_user=()
[[ $(id -u) -eq 0 ]] && sink_user=(-u nobody)
smtp-sink "${sink_user[@]}" -4 -m 2000 "$HOST:$SINK_PORT" 2048 >"$work/smtp-sink.log" 2>&1 &
SINK_PID=$!
for _ in $(seq 1 100); do port_busy "$SINK_PORT" && break; sleep 0.1; done
port_busy "$SINK_PORT" || die "smtp-sink did not listen on $SINK_PORT: $(cat "$work/smtp-sink.log")"

# ---- Postfix ----------------------------------------------------------------------------------
start_postfix() {
	mkdir -p "$PFCONF" "$PFQ" "$work/postfix/data"
	chown postfix:postfix "$work/postfix/data"
	chmod 700 "$work/postfix/data"
	cat >"$PFCONF/main.cf" <<EOF
# written by bench/compare/smtp-accept.sh: a private relay-only instance, defaults otherwise
compatibility_level = 3.6
queue_directory = $PFQ
data_directory = $work/postfix/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.localdomain
mydomain = localdomain
myorigin = \$myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = $HOST
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [$HOST]:$SINK_PORT
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions =
smtpd_banner = \$myhostname ESMTP
biff = no
smtputf8_enable = no
maillog_file_prefixes = $work
maillog_file = $work/postfix/maillog
EOF
	# The packaged master.cf with the smtpd moved to our port and chroot off (the
	# queue is not under /var/spool/postfix).
	awk -v listen="$HOST:$PF_PORT" '
		/^#/ || /^[ \t]/ || NF == 0 { print; next }
		$1 == "smtp" && $2 == "inet" { $1 = listen; $5 = "n"; print; next }
		NF >= 8 { if ($5 == "y") $5 = "n"; print; next }
		{ print }' /etc/postfix/master.cf.proto >"$PFCONF/master.cf"
	# postfix(1) prints fatal errors only to a terminal or syslog: script(1) shows them.
	if ! postfix -c "$PFCONF" check >/dev/null 2>&1; then
		script -qc "postfix -c $PFCONF check" /dev/null || true
		die "postfix check failed"
	fi
	postfix -c "$PFCONF" start >/dev/null 2>&1 || { script -qc "postfix -c $PFCONF start" /dev/null || true; die "postfix did not start"; }
	for _ in $(seq 1 100); do
		[[ -s $PFQ/pid/master.pid ]] && port_busy "$PF_PORT" && break
		sleep 0.1
	done
	[[ -s $PFQ/pid/master.pid ]] && port_busy "$PF_PORT" || die "postfix does not listen on $PF_PORT"
	MASTER_PID=$(tr -d ' ' <"$PFQ/pid/master.pid")
	note "postfix $(postconf -c "$PFCONF" -h mail_version), master pid $MASTER_PID, smtpd on $HOST:$PF_PORT, queue $PFQ"
}
pf_queue_count() {
	find "$PFQ/incoming" "$PFQ/active" "$PFQ/deferred" "$PFQ/maildrop" "$PFQ/hold" -type f 2>/dev/null | wc -l
}
pf_drain() {	# wait (bounded) until Postfix delivered everything to the sink
	local n
	for _ in $(seq 1 $((DRAIN_TIMEOUT * 10))); do
		n=$(pf_queue_count)
		((n == 0)) && return 0
		sleep 0.1
	done
	echo "smtp-accept: postfix queue still holds $n files after $DRAIN_TIMEOUT s" >&2
	return 1
}

# ---- ringmaild --------------------------------------------------------------------------------
start_ringmaild() {
	local d=$work/ringmail
	rm -rf "$d"
	mkdir -p "$d"
	cat >"$d/ringmail.conf" <<EOF
# written by bench/compare/smtp-accept.sh
workers = $WORKERS; log_level = "warn"; allow_root = true;
spool_dir = "$d/spool"; control_socket = "$d/ctl.sock";
# mynetworks are not limited per client (as Postfix's smtpd_client_event_limit_exceptions).
limits = { connections_per_worker = 4096; };
smtp = { hostname = "bench.test"; mynetworks = [ "127.0.0.0/8" ];
         relay_domains = ( { domain = "example.com"; nexthop = "[$HOST]:$SINK_PORT"; } ); };
delivery = { enabled = $RM_DELIVERY; };
listeners = ( { name = "mx"; protocol = "smtp"; address = "$HOST"; port = $RM_PORT; } );
EOF
	"$RINGMAILD" -c "$d/ringmail.conf" >"$d/ringmaild.log" 2>&1 &
	RM_PID=$!
	for _ in $(seq 1 100); do
		port_busy "$RM_PORT" && return 0
		if ! kill -0 "$RM_PID" 2>/dev/null; then
			wait "$RM_PID" 2>/dev/null || true
			RM_PID=""
			echo "smtp-accept: ringmaild exited at start (does it accept protocol \"smtp\" yet?):" >&2
			tail -n 5 "$d/ringmaild.log" >&2
			return 1
		fi
		sleep 0.1
	done
	echo "smtp-accept: ringmaild does not listen on $RM_PORT after 10 s" >&2
	stop_ringmaild
	return 1
}

# ---- one measurement --------------------------------------------------------------------------
echo -e "server\tclient\tsessions\tsize\trun\tmsgs\tseconds\tmsgs_per_s\tp50_us\tp99_us\tresult" >"$TSV"

# Messages still queued by the server under test (Postfix's queue files, ringmaild's spool).
queued_now() {	# server
	if [[ $1 == postfix ]]; then
		pf_queue_count
	else
		"$ROOT/build/ringmailctl" -s "$work/ringmail/ctl.sock" stats 2>/dev/null | awk '$1 == "spool_queued" { print $2; f = 1 } END { if (!f) print -1 }'
	fi
}

# End to end (E2E=1, servers that deliver): from the client's start until the queue is empty
# again, every message handed to the sink; one more TSV line, client "e2e:CLIENT".
e2e_line() {	# server client sess size run msgs t0
	local server=$1 client=$2 sess=$3 size=$4 run=$5 msgs=$6 t0=$7 n t1
	for _ in $(seq 1 $((DRAIN_TIMEOUT * 20))); do
		n=$(queued_now "$server")
		[[ $n == 0 ]] && break
		sleep 0.05
	done
	t1=$(date +%s.%N)
	awk -v a="$t0" -v b="$t1" -v m="$msgs" -v n="$n" -v s="$server" -v c="$client" -v S="$sess" -v z="$size" -v r="$run" 'BEGIN {
		d = b - a; printf "%s\te2e:%s\t%s\t%s\t%s\t%s\t%.3f\t%.1f\t-\t-\t%s\n", s, c, S, z, r, m, d, m / d, n == 0 ? "ok" : "FAIL" }' | tee -a "$TSV"
}

measure() {	# server port client sessions size run msgs
	local server=$1 port=$2 client=$3 sess=$4 size=$5 run=$6 msgs=$7 t0 t1 out rc=0 line start
	start=$(date +%s.%N)
	out=$work/$server-$client-$sess-$size-$run.out
	if [[ $client == smtp-source ]]; then
		t0=$(date +%s.%N)
		timeout "$CELL_TIMEOUT" smtp-source -4 -s "$sess" -m "$msgs" -l "$size" -d -f "$FROM" -t "$TO" \
			"$HOST:$port" >"$out" 2>&1 || rc=$?
		t1=$(date +%s.%N)
		line=$(awk -v a="$t0" -v b="$t1" -v n="$msgs" -v rc="$rc" 'BEGIN {
			d = b - a; printf "%.3f\t%.1f\t-\t-\t%s", d, n / d, rc == 0 ? "ok" : "FAIL" }')
	else
		local rate_opt=()
		[[ $client == ringmail-bench@* ]] && rate_opt=(--rate "${client#ringmail-bench@}")
		timeout "$CELL_TIMEOUT" "$BENCH" smtp --port "$port" --conns "$sess" --messages "$msgs" --size "$size" \
			"${rate_opt[@]}" --from "$FROM" --to "$TO" --time-limit "$CELL_TIMEOUT" >"$out" 2>&1 || rc=$?
		line=$(awk -F'[ =]' -v rc="$rc" '/^RESULT mode=smtp / {
			for (i = 2; i < NF; i += 2) v[$i] = $(i + 1)
			printf "%s\t%s\t%s\t%s\t%s", v["elapsed_s"], v["msgs_per_s"], v["p50_us"], v["p99_us"],
				rc == 0 && v["pass"] == 1 ? "ok" : "FAIL"; found = 1 }
			END { if (!found) printf "-\t-\t-\t-\tFAIL" }' "$out")
	fi
	[[ $line == *FAIL ]] && { failed=1; echo "smtp-accept: FAILED: $server $client $sess x $size run $run:" >&2; tail -n 8 "$out" >&2; }
	echo -e "$server\t$client\t$sess\t$size\t$run\t$msgs\t$line" | tee -a "$TSV"
	if [[ ${E2E:-0} == 1 && $server != ringmail-queue && $client != ringmail-bench@* ]]; then
		e2e_line "$server" "$client" "$sess" "$size" "$run" "$msgs" "$start"
	fi
}

cells() {	# server port: warm-up, then every cell RUNS times
	local server=$1 port=$2 run sess size msgs client
	for run in $(seq 1 "$RUNS"); do
		for sess in $SESSIONS; do
			for size in $SIZES; do
				msgs=$MSGS
				((size >= 65536)) && msgs=$MSGS_LARGE
				clients="smtp-source ringmail-bench"
				if [[ $server == ringmail* && " $RATE_SESSIONS " == *" $sess "* ]] && ((size <= 4096 && RATE > 0)); then
					clients="$clients ringmail-bench@$RATE"
				fi
				for client in $clients; do
					if [[ $server == postfix ]]; then
						pf_drain || failed=1
						sleep 1
					else
						# An empty spool for every measurement.
						stop_ringmaild
						start_ringmaild || { failed=1; return 1; }
					fi
					measure "$server" "$port" "$client" "$sess" "$size" "$run" "$msgs"
				done
			done
		done
	done
}

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "tree: $(git rev-parse --short HEAD 2>/dev/null || echo -) ($(git status --porcelain 2>/dev/null | grep -c . || true) files changed)"
	echo "nproc: $(nproc); kernel: $(uname -r); cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
	echo "file system of the queue and spool ($work): $(df -T "$work" | awk 'NR == 2 { print $2 " on " $1 }')"
	echo "postfix: $(postconf -d -h mail_version 2>/dev/null || echo -) ($(dpkg-query -W -f='${Version}' postfix 2>/dev/null || echo -))"
	echo "ringmaild: $RINGMAILD, workers = $WORKERS; ringmail-bench: $BENCH (workers: online CPUs)"
	echo "knobs: SERVERS=\"$SERVERS\" RUNS=$RUNS MSGS=$MSGS MSGS_LARGE=$MSGS_LARGE WARMUP=$WARMUP SESSIONS=\"$SESSIONS\" SIZES=\"$SIZES\""
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "note: both servers queue, and deliver to smtp-sink in the background during the load."
} | tee "$work/machine.txt"

for server in $SERVERS; do
	case $server in
	postfix)
		start_postfix
		note "postfix warm-up: $WARMUP messages with each client"
		timeout "$CELL_TIMEOUT" smtp-source -4 -s 20 -m "$WARMUP" -l 4096 -d -f "$FROM" -t "$TO" "$HOST:$PF_PORT" >/dev/null 2>&1 || die "postfix warm-up failed"
		timeout "$CELL_TIMEOUT" "$BENCH" smtp --port "$PF_PORT" --conns 20 --messages "$WARMUP" --size 4096 >/dev/null 2>&1 || die "postfix warm-up (ringmail-bench) failed"
		cells postfix "$PF_PORT" || true
		pf_drain || failed=1
		grep -E 'warning|fatal|panic' "$work/postfix/maillog" 2>/dev/null | sed 's/^.*postfix/postfix/' | sort | uniq -c | sort -rn | head -n 5 || true
		stop_postfix
		;;
	ringmail | ringmail-queue)
		RM_DELIVERY=true
		[[ $server == ringmail-queue ]] && RM_DELIVERY=false
		if start_ringmaild; then
			note "ringmaild warm-up: $WARMUP messages with each client"
			timeout "$CELL_TIMEOUT" smtp-source -4 -s 20 -m "$WARMUP" -l 4096 -d -f "$FROM" -t "$TO" "$HOST:$RM_PORT" >/dev/null 2>&1 || note "ringmaild warm-up with smtp-source failed"
			timeout "$CELL_TIMEOUT" "$BENCH" smtp --port "$RM_PORT" --conns 20 --messages "$WARMUP" --size 4096 >/dev/null 2>&1 || note "ringmaild warm-up with ringmail-bench failed"
			cells "$server" "$RM_PORT" || true
			stop_ringmaild
		else
			failed=1
			note "ringmaild: NOT MEASURED (it did not start)"
		fi
		;;
	esac
done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$work/machine.txt"
{
	echo "# SMTP acceptance: ringmaild and Postfix, one run"
	echo
	sed 's/^/    /' "$work/machine.txt"
	echo
	python3 bench/compare/smtp_summary.py "$TSV"
} >"$MD"
cat "$MD"
echo "results: $TSV $MD"
exit "$failed"
