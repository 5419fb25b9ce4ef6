#!/bin/sh
# `make run`: ringmaild in the foreground with configs/dev.conf, spool under ./var.
# Prints one line per job saying how to try it, then the daemon's own log lines.
set -eu
cd "$(dirname "$0")/.."
mkdir -p var
# The dev TLS listeners need a certificate: a self-signed one, made once.
if [ ! -s var/tls/dev.crt ] || [ ! -s var/tls/dev.key ]; then
	mkdir -p var/tls
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
		-subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
		-keyout var/tls/dev.key -out var/tls/dev.crt 2>/dev/null
	chmod 600 var/tls/dev.key
	echo "make run: made a self-signed certificate, var/tls/dev.crt"
fi
build/ringmaild -t -c configs/dev.conf
# The next hop of dev.test (configs/dev.conf): a sink that takes every message and keeps
# none, started here and stopped with the daemon.
sink_pid=""
if ! ss -Hltn 'sport = :2026' | grep -q .; then
	build/ringmail-bench sink --listen 127.0.0.1:2026 --duration 86400 >var/sink.log 2>&1 &
	sink_pid=$!
fi
cat <<'MSG'
ringmail dev instance (configs/dev.conf), all on 127.0.0.1; Ctrl-C stops it gracefully.
  echo (engine health check):  printf 'hello\r\nQUIT\r\n' | nc 127.0.0.1 2007
  echo over TLS:               openssl s_client -quiet -connect 127.0.0.1:2017
  mail to the relay domain:    swaks --server 127.0.0.1:2025 --from you@example.org --to someone@dev.test
  submission (STARTTLS+AUTH):  swaks --server 127.0.0.1:2587 --tls \
                                 --auth PLAIN --auth-user demo@dev.test --auth-password demo \
                                 --from demo@dev.test --to anyone@example.net
  submission (implicit TLS):   swaks --server 127.0.0.1:2465 --tlsc --auth LOGIN \
                                 --auth-user demo@dev.test --auth-password demo --to anyone@example.net
  spool a message (test):      printf 'MSG 5 you@dev.test\r\nhello' | nc -q 2 127.0.0.1 2008
  the queue:                   build/ringmailctl -c configs/dev.conf queue
  daemon counters:             build/ringmailctl -c configs/dev.conf stats
  reload the configuration:    kill -HUP $(pgrep -f 'ringmaild -c configs/dev.conf')
  the sink on 2026 (dev.test's next hop) logs to var/sink.log
MSG
build/ringmaild -c configs/dev.conf || status=$?
[ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
exit "${status:-0}"
