#!/usr/bin/env bash
# NAME
#	tls-handshake.sh - TLS handshakes/s and idle memory: ringmaild against nginx, one run
# SYNOPSIS
#	bench/compare/tls-handshake.sh			(make bench-tls builds and runs it)
#	RUNS=3 SECS=5 IDLE_CONNS=2000 PHASES="memory handshake speed" bench/compare/tls-handshake.sh
# DESCRIPTION
#	In one run, on one machine, with the same certificates and the same kind of
#	port (implicit TLS, a server greeting after the handshake):
#
#	  nginx      a private nginx (Debian's, OpenSSL), mail module, ONE worker pinned
#	             to CPU 0 (worker_cpu_affinity 01), imaps listeners on 127.0.0.1:
#	             PORT_BASE (ECDSA P-256) and PORT_BASE+1 (RSA-2048); nginx's defaults
#	             otherwise (session tickets on, no session cache).
#	  ringmaild  build/ringmaild, workers = 1, under taskset -c 0, one implicit-TLS
#	             "echo" listener per certificate (PORT_BASE+2, +3); its defaults
#	             otherwise (session tickets and cache); log_level RM_LOG_LEVEL (warn).
#	  ringmaild-wolfssl-local
#	             build/compare/ringmaild-wolfssl-local when it exists (the same tree
#	             linked against build/wolfssl: scripts/build-wolfssl.sh), PORT_BASE+4, +5.
#
#	Phases (PHASES, in this order):
#	  memory     for TLS 1.3 and 1.2, on freshly started servers: bench/compare/tls_idle.py
#	             (pinned to CPU 1) opens IDLE_CONNS connections to the ECDSA port of each
#	             server, each finishing a full handshake and reading the greeting, then
#	             idle; RSS and PSS of the server process (nginx: its worker) before and
#	             after, per connection.
#	  handshake  on freshly started servers, RUNS rounds of every cell of CELLS
#	             (cert:tls:mode) on every server (order rotated each round), the
#	             client pinned to CPU 1:
#	               new     openssl s_time -connect 127.0.0.1:PORT -new -time SECS -tls1_3|-tls1_2
#	                       (a full handshake per connection, then close)
#	               reuse   openssl s_time ... -reuse (TLS 1.2 only: s_time never reads after
#	                       the handshake, so it cannot get a TLS 1.3 ticket)
#	               resume  python3 bench/compare/tls_resume.py --port PORT --tls 1.3|1.2 --secs SECS
#	                       (resumed handshakes for both versions: handshake with the previous
#	                       connection's session, read the greeting, close; see its header for
#	                       why s_time -reuse -www cannot do this against nginx's mail module)
#	             Reported: connections, resumed ones, handshakes/s of wall time (the
#	             client on the other core is the limit there), and handshakes per
#	             server CPU-second (utime+stime from /proc/PID/stat over the cell: nginx's
#	             worker; ringmaild's whole process, io_uring workers included).
#	  speed      RUNS rounds, each on CPU 0 (taskset -c 0): openssl speed -seconds SPEED_SECS
#	             ecdsap256 ecdhp256 ecdhx25519 rsa2048; openssl speed -seconds SPEED_SECS
#	             -bytes 16384 (and 1024) -evp aes-128-gcm / chacha20-poly1305;
#	             build/compare/wolfcrypt_speed SPEED_SECS (system wolfSSL) and
#	             build/compare/wolfcrypt_speed_local (build/wolfssl) when built.
#
#	Results: RESULTS (default build/compare/tls-results/<UTC time>/): handshake.tsv,
#	memory.tsv, speed.tsv, the raw outputs, and summary.md (bench/compare/tls_summary.py).
#
#	Only loopback.  Refuses to start if a port it needs is listening.  Every wait is
#	bounded; only the processes it started are stopped (nginx: "-s quit" on its own
#	pid file, then its master pid; ringmaild: SIGTERM to its pid, then SIGKILL).
# ENVIRONMENT
#	RUNS (3) SECS (5) IDLE_CONNS (2000) SPEED_SECS (3) PORT_BASE (12990)
#	PHASES ("memory handshake speed") CELLS (all 8) RM_LOG_LEVEL (warn)
#	RINGMAILD (build/ringmaild) RINGMAILD_LOCAL (build/compare/ringmaild-wolfssl-local;
#	"" to leave it out) RESULTS
# DIAGNOSTICS
#	Exit 0 when every phase ran; 1 on a failed start, a busy port or a failed phase.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)

RUNS=${RUNS:-3}
SECS=${SECS:-5}
IDLE_CONNS=${IDLE_CONNS:-2000}
SPEED_SECS=${SPEED_SECS:-3}
PORT_BASE=${PORT_BASE:-12990}
PHASES=${PHASES:-"memory handshake speed"}
CELLS=${CELLS:-"ecdsa:1.3:new ecdsa:1.3:resume ecdsa:1.2:new ecdsa:1.2:reuse ecdsa:1.2:resume rsa:1.3:new rsa:1.3:resume rsa:1.2:new rsa:1.2:reuse rsa:1.2:resume"}
RM_LOG_LEVEL=${RM_LOG_LEVEL:-warn}
RINGMAILD=${RINGMAILD:-build/ringmaild}
RINGMAILD_LOCAL=${RINGMAILD_LOCAL-build/compare/ringmaild-wolfssl-local}
RESULTS=${RESULTS:-$ROOT/build/compare/tls-results/$(date -u +%Y%m%dT%H%M%SZ)}
NGINX_MAIL_MODULE=${NGINX_MAIL_MODULE:-/usr/lib/nginx/modules/ngx_mail_module.so}

die() { echo "tls-handshake: $*" >&2; exit 1; }

((RUNS >= 1 && RUNS <= 20)) || die "RUNS must be 1..20"
((SECS >= 1 && SECS <= 60)) || die "SECS must be 1..60"
((IDLE_CONNS >= 1 && IDLE_CONNS <= 20000)) || die "IDLE_CONNS must be 1..20000"
((SPEED_SECS >= 1 && SPEED_SECS <= 10)) || die "SPEED_SECS must be 1..10"
for b in nginx openssl taskset ss python3 awk; do
	command -v "$b" >/dev/null || die "missing $b (make bench-tls installs it: scripts/deps.sh)"
done
[[ -e $NGINX_MAIL_MODULE ]] || die "no $NGINX_MAIL_MODULE (Debian package libnginx-mod-mail)"
[[ -x $RINGMAILD ]] || die "$RINGMAILD is missing: make all"
[[ $(nproc) -ge 2 ]] || die "needs 2 CPUs (server on CPU 0, client on CPU 1)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= IDLE_CONNS + 200)) || die "open-files limit $(ulimit -n) is too low for IDLE_CONNS=$IDLE_CONNS"

# name:binary:port_ecdsa:port_rsa
servers=("nginx:nginx:$PORT_BASE:$((PORT_BASE + 1))" "ringmaild:$RINGMAILD:$((PORT_BASE + 2)):$((PORT_BASE + 3))")
if [[ -n $RINGMAILD_LOCAL && -x $RINGMAILD_LOCAL ]]; then
	servers+=("ringmaild-wolfssl-local:$RINGMAILD_LOCAL:$((PORT_BASE + 4)):$((PORT_BASE + 5))")
fi

port_busy() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }
for s in "${servers[@]}"; do
	IFS=: read -r _ _ pe pr <<<"$s"
	for p in $pe $pr; do
		port_busy "$p" && die "port $p is already in use; refusing (set PORT_BASE=...)"
	done
done

mkdir -p "$RESULTS"
work=$(mktemp -d /tmp/ringmail-bench-tls.XXXXXX)
declare -A PID=()		# server name -> pid we started (nginx: master)
declare -A CPUPID=()		# server name -> pid whose CPU and memory count (nginx: worker)

stop_server() {
	local name=$1 pid=${PID[$1]:-}
	[[ -n $pid ]] || return 0
	if [[ $name == nginx ]]; then
		# "stop", not "quit": a graceful quit waits for idle mail sessions (timeout 600 s).
		nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" -s stop 2>/dev/null || true
	else
		kill -TERM "$pid" 2>/dev/null || true
	fi
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "tls-handshake: $name ($pid) still running after 10 s; SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	# nginx's worker is the master's child: gone with it (checked, never signalled by name).
	if [[ $name == nginx && -n ${CPUPID[nginx]:-} ]] && kill -0 "${CPUPID[nginx]}" 2>/dev/null; then
		sleep 1
		kill -0 "${CPUPID[nginx]}" 2>/dev/null && kill -KILL "${CPUPID[nginx]}" 2>/dev/null || true
	fi
	unset "PID[$name]" "CPUPID[$name]"
}

stop_all() {
	local n
	for n in "${!PID[@]}"; do stop_server "$n"; done
}

cleanup() {
	stop_all
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- certificates: the same files for every server ------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
	-subj "/CN=bench.localdomain" -keyout "$work/ecdsa.key" -out "$work/ecdsa.crt" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
	-subj "/CN=bench.localdomain" -keyout "$work/rsa.key" -out "$work/rsa.crt" 2>/dev/null
chmod 644 "$work"/*.crt "$work"/*.key

start_nginx() {
	local pe=$1 pr=$2 d=$work/nginx
	rm -rf "$d"
	mkdir -p "$d"
	cat >"$d/nginx.conf" <<EOF
# written by bench/compare/tls-handshake.sh
load_module $NGINX_MAIL_MODULE;
user www-data;
worker_processes 1;
worker_cpu_affinity 01;
worker_rlimit_nofile 30000;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 25000; }
mail {
  server_name bench.localdomain;
  auth_http 127.0.0.1:9/auth;          # never asked: no client logs in
  ssl_protocols TLSv1.2 TLSv1.3;
  timeout 600s;
  server { listen 127.0.0.1:$pe ssl; protocol imap;
           ssl_certificate $work/ecdsa.crt; ssl_certificate_key $work/ecdsa.key; }
  server { listen 127.0.0.1:$pr ssl; protocol imap;
           ssl_certificate $work/rsa.crt; ssl_certificate_key $work/rsa.key; }
}
EOF
	nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" -t -q || die "nginx -t failed"
	taskset -c 0 nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" || die "nginx did not start"
	local master="" worker=""
	for _ in $(seq 1 100); do
		[[ -s $d/nginx.pid ]] && master=$(cat "$d/nginx.pid")
		[[ -n $master ]] && worker=$(ps -o pid= --ppid "$master" | head -n 1 | tr -d ' ')
		[[ -n $worker ]] && port_busy "$pe" && port_busy "$pr" && break
		sleep 0.1
	done
	[[ -n $master && -n $worker ]] || die "nginx did not come up (see $d/error.log)"
	PID[nginx]=$master
	CPUPID[nginx]=$worker
}

start_ringmaild() {
	local name=$1 bin=$2 pe=$3 pr=$4 d=$work/$1
	rm -rf "$d"
	mkdir -p "$d"
	cat >"$d/ringmail.conf" <<EOF
# written by bench/compare/tls-handshake.sh
workers = 1;
log_level = "$RM_LOG_LEVEL";
log_target = "stderr";
allow_root = true;
spool_dir = "$d/spool";
control_socket = "$d/ringmail.sock";
limits = {
  connections_per_worker = 25000;
  idle_timeout_ms = 600000;
  shutdown_timeout_ms = 2000;
};
listeners = (
  { name = "tls-ecdsa"; protocol = "echo"; address = "127.0.0.1"; port = $pe;
    tls = "implicit"; tls_cert = "$work/ecdsa.crt"; tls_key = "$work/ecdsa.key"; },
  { name = "tls-rsa"; protocol = "echo"; address = "127.0.0.1"; port = $pr;
    tls = "implicit"; tls_cert = "$work/rsa.crt"; tls_key = "$work/rsa.key"; }
);
EOF
	taskset -c 0 "$bin" -c "$d/ringmail.conf" >"$d/ringmaild.log" 2>&1 &
	local pid=$!
	for _ in $(seq 1 100); do
		port_busy "$pe" && port_busy "$pr" && break
		kill -0 "$pid" 2>/dev/null || { cat "$d/ringmaild.log" >&2; die "$name exited at start"; }
		sleep 0.1
	done
	port_busy "$pe" && port_busy "$pr" || die "$name does not listen after 10 s"
	PID[$name]=$pid
	CPUPID[$name]=$pid
}

start_all() {
	local s name bin pe pr
	for s in "${servers[@]}"; do
		IFS=: read -r name bin pe pr <<<"$s"
		if [[ $name == nginx ]]; then start_nginx "$pe" "$pr"; else start_ringmaild "$name" "$bin" "$pe" "$pr"; fi
	done
	sleep 0.5
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK=$(getconf CLK_TCK)

# ---- what is measured -------------------------------------------------------------------------------
{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "tree: $(git rev-parse --short HEAD 2>/dev/null || echo -) $(git status --porcelain 2>/dev/null | grep -c . || true) files changed"
	echo "nproc: $(nproc); kernel: $(uname -r); cpu: $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
	echo "cpu flags: $(grep -m1 -o -w -E 'aes|avx|avx2|bmi2|adx|pclmulqdq' /proc/cpuinfo | sort -u | tr '\n' ' ')"
	echo "openssl: $(openssl version)"
	echo "nginx: $(nginx -v 2>&1 | sed 's/.*: //'); $(nginx -V 2>&1 | grep -o 'built with OpenSSL [^ ]* [^)]*)*' | head -n 1)"
	echo "wolfSSL (system): libwolfssl35 $(dpkg-query -W -f='${Version}' libwolfssl35 2>/dev/null || echo '?')"
	if [[ -e build/wolfssl/DEBIAN-VERSION ]]; then
		echo "wolfSSL (build/wolfssl): $(cat build/wolfssl/DEBIAN-VERSION) source, configure $(tr '\n' ' ' <build/wolfssl/CONFIGURE-OPTIONS)"
	fi
	for s in "${servers[@]}"; do
		IFS=: read -r name bin _ _ <<<"$s"
		[[ $name == nginx ]] && continue
		echo "$name: $bin -> $(ldd "$bin" | awk '/libwolfssl/ { print $3 }')"
	done
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine shares the 2 cores)"
	echo "knobs: RUNS=$RUNS SECS=$SECS IDLE_CONNS=$IDLE_CONNS SPEED_SECS=$SPEED_SECS RM_LOG_LEVEL=$RM_LOG_LEVEL"
} | tee "$RESULTS/machine.txt"

# ---- memory per idle TLS connection --------------------------------------------------------------
phase_memory() {
	local tls s name pe out
	echo -e "server\ttls\tconns\talive\trss0_kb\trss1_kb\tpss0_kb\tpss1_kb\trss_per_conn_b\tpss_per_conn_b\tcipher" \
		>"$RESULTS/memory.tsv"
	for tls in 1.3 1.2; do
		start_all
		for s in "${servers[@]}"; do
			IFS=: read -r name _ pe _ <<<"$s"
			out=$RESULTS/idle-$name-tls$tls.txt
			echo "== idle: $name TLS $tls, $IDLE_CONNS connections, port $pe (pid ${CPUPID[$name]})"
			timeout 300 taskset -c 1 python3 bench/compare/tls_idle.py --port "$pe" --pid "${CPUPID[$name]}" \
				--conns "$IDLE_CONNS" --tls "$tls" --label "$name" >"$out" 2>&1 || true
			grep -v '^RESULT' "$out"
			awk -F'\t' -v s="$name" '/^RESULT/ {
				for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
				printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s, v["tls"], v["conns"], v["alive"],
					v["rss0_kb"], v["rss1_kb"], v["pss0_kb"], v["pss1_kb"], v["rss_per_conn_b"],
					v["pss_per_conn_b"], v["cipher"] }' "$out" >>"$RESULTS/memory.tsv"
		done
		stop_all
	done
}

# ---- handshakes ----------------------------------------------------------------------------------
probe() {	# negotiated protocol, cipher and key exchange, once per server, cert and version
	local name=$1 port=$2 cert=$3 tls=$4 line
	line=$(echo | timeout 10 openssl s_client -brief -connect "127.0.0.1:$port" "-tls${tls/./_}" 2>&1 |
		awk -F': ' '/^Protocol version|^Ciphersuite|^Server Temp Key/ { printf "%s%s", sep, $2; sep = ", " }')
	echo -e "$name\t$cert\t$tls\t$line" >>"$RESULTS/negotiated.tsv"
}

phase_handshake() {
	local r cell cert tls mode i s name pe pr port c0 c1 t0 t1 n res out k
	echo -e "server\tcert\ttls\tmode\trun\tconns\tresumed\twall_s\ths_per_s\tcpu_s\ths_per_cpu_s" >"$RESULTS/handshake.tsv"
	: >"$RESULTS/negotiated.tsv"
	start_all
	for s in "${servers[@]}"; do
		IFS=: read -r name _ pe pr <<<"$s"
		for tls in 1.3 1.2; do
			probe "$name" "$pe" ecdsa "$tls"
			probe "$name" "$pr" rsa "$tls"
		done
	done
	echo "== negotiated (openssl s_client -brief)"
	column -t -s $'\t' "$RESULTS/negotiated.tsv" || cat "$RESULTS/negotiated.tsv"
	local count=${#servers[@]}
	for r in $(seq 1 "$RUNS"); do
		for cell in $CELLS; do
			IFS=: read -r cert tls mode <<<"$cell"
			for k in $(seq 0 $((count - 1))); do
				i=$(((k + r - 1) % count))	# rotate who goes first
				IFS=: read -r name _ pe pr <<<"${servers[$i]}"
				port=$pe
				[[ $cert == rsa ]] && port=$pr
				out=$RESULTS/hs-$name-$cert-tls$tls-$mode-$r.txt
				local cmd
				case $mode in
				new | reuse) cmd=(openssl s_time -connect "127.0.0.1:$port" "-$mode" -time "$SECS" "-tls${tls/./_}") ;;
				resume) cmd=(python3 bench/compare/tls_resume.py --port "$port" --tls "$tls" --secs "$SECS") ;;
				*) die "unknown mode $mode in CELLS (new, reuse, resume)" ;;
				esac
				c0=$(cpu_ticks "${CPUPID[$name]}")
				t0=$(date +%s.%N)
				timeout $((SECS + 30)) taskset -c 1 "${cmd[@]}" >"$out" 2>&1 || true
				t1=$(date +%s.%N)
				c1=$(cpu_ticks "${CPUPID[$name]}")
				n=$(awk '/connections in .* real seconds/ { n = $1 } END { print n + 0 }' "$out")
				case $mode in
				new) res=0 ;;
				reuse) res=$(grep -E '^[rt3*]+$' "$out" | tr -cd 'r' | wc -c) ;;	# s_time: 'r' per resumed
				resume) res=$(awk '/^resumed / { print $2 }' "$out") ;;
				esac
				awk -v s="$name" -v c="$cert" -v t="$tls" -v m="$mode" -v r="$r" -v n="$n" -v res="$res" \
					-v a="$t0" -v b="$t1" -v cc=$((c1 - c0)) -v hz="$CLK" 'BEGIN {
					w = b - a; cpu = cc / hz
					printf "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%.2f\t%.0f\t%.2f\t%.0f\n", s, c, t, m, r, n, res, w,
						n / w, cpu, (cpu > 0 ? n / cpu : 0) }' | tee -a "$RESULTS/handshake.tsv"
			done
		done
	done
	stop_all
}

# ---- primitives --------------------------------------------------------------------------------------
phase_speed() {
	local r f b lib
	echo -e "lib\tprimitive\trun\tvalue\tunit" >"$RESULTS/speed.tsv"
	for r in $(seq 1 "$RUNS"); do
		f=$RESULTS/openssl-speed-$r.txt
		echo "== round $r: openssl speed (taskset -c 0, -seconds $SPEED_SECS)"
		taskset -c 0 openssl speed -seconds "$SPEED_SECS" ecdsap256 ecdhp256 ecdhx25519 rsa2048 >"$f" 2>/dev/null
		for b in aes-128-gcm chacha20-poly1305; do
			taskset -c 0 openssl speed -seconds "$SPEED_SECS" -bytes 16384 -evp "$b" >>"$f" 2>/dev/null
			taskset -c 0 openssl speed -seconds "$SPEED_SECS" -bytes 1024 -evp "$b" >>"$f" 2>/dev/null
		done
		awk -v r="$r" '
		     /^ *253 bits ecdh \(X25519\)/ { print "openssl\tX25519-derive\t" r "\t" $NF "\tops/s" }
		     /^ *256 bits ecdh \(nistp256\)/ { print "openssl\tP256-ecdh-derive\t" r "\t" $NF "\tops/s" }
		     /^ *256 bits ecdsa \(nistp256\)/ { print "openssl\tECDSA-P256-sign\t" r "\t" $(NF - 1) "\tops/s";
		                                       print "openssl\tECDSA-P256-verify\t" r "\t" $NF "\tops/s" }
		     /^rsa 2048 bits/ { print "openssl\tRSA2048-sign\t" r "\t" $(NF - 1) "\tops/s";
		                        print "openssl\tRSA2048-verify\t" r "\t" $NF "\tops/s" }
		     /^type/ { size = $NF; sub(/ bytes$/, "", size); if ($NF == "bytes") size = $(NF - 1) }
		     tolower($1) ~ /^(aes-128-gcm|chacha20-poly1305)$/ {
			name = tolower($1) == "aes-128-gcm" ? "AES-128-GCM" : "ChaCha20-Poly1305"
			v = $NF; sub(/k$/, "", v)
			printf "openssl\t%s-%s\t%s\t%.1f\tMB/s\n", name, size, r, v / 1000 }' "$f" |
			tee -a "$RESULTS/speed.tsv"
		for b in build/compare/wolfcrypt_speed build/compare/wolfcrypt_speed_local; do
			[[ -x $b ]] || continue
			lib=wolfssl-system
			[[ $b == *_local ]] && lib=wolfssl-local
			f=$RESULTS/$(basename "$b")-$r.txt
			echo "== round $r: $b $SPEED_SECS (taskset -c 0)"
			timeout 300 taskset -c 0 "$b" "$SPEED_SECS" >"$f" 2>&1 || die "$b failed: $(tail -n 1 "$f")"
			grep '^#' "$f"
			awk -F'\t' -v lib="$lib" -v r="$r" '$1 == "wolfcrypt" { print lib "\t" $2 "\t" r "\t" $3 "\t" $4 }' "$f" |
				tee -a "$RESULTS/speed.tsv"
		done
	done
}

for ph in $PHASES; do
	case $ph in
	memory) phase_memory ;;
	handshake) phase_handshake ;;
	speed) phase_speed ;;
	*) die "unknown phase $ph (memory, handshake, speed)" ;;
	esac
done

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RESULTS/machine.txt"
python3 bench/compare/tls_summary.py "$RESULTS" | tee "$RESULTS/summary.md"
echo "results: $RESULTS"
