#!/bin/sh
# `make run`: ringmaild in the foreground with configs/dev.conf, spool under ./var.
# Prints one line per job saying how to try it, then the daemon's own log lines.
set -eu
cd "$(dirname "$0")/.."
mkdir -p var
build/ringmaild -t -c configs/dev.conf
cat <<'MSG'
ringmail dev instance (configs/dev.conf), all on 127.0.0.1; Ctrl-C stops it gracefully.
  echo (engine health check):  printf 'hello\r\nQUIT\r\n' | nc 127.0.0.1 2007
  spool a message:             printf 'MSG 5 you@dev.test\r\nhello' | nc -q 2 127.0.0.1 2008
  the queue:                   build/ringmailctl -c configs/dev.conf queue
  daemon counters:             build/ringmailctl -c configs/dev.conf stats
  reload the configuration:    kill -HUP $(pgrep -f 'ringmaild -c configs/dev.conf')
MSG
exec build/ringmaild -c configs/dev.conf
