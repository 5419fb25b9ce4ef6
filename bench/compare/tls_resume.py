#!/usr/bin/env python3
"""tls_resume.py - resumed TLS handshakes per second, one connection after another.

SYNOPSIS
    python3 bench/compare/tls_resume.py --port PORT --tls 1.3|1.2 [--secs 5]

DESCRIPTION
    What `openssl s_time -reuse` measures, for servers that speak first (mail
    greetings).  The first connection makes a full handshake; every later one
    offers the session (TLS 1.3: the newest ticket) of the one before.  Each
    connection: TCP connect, TLS handshake, read the server's first line (the
    greeting: so that the TLS 1.3 tickets sent before it are read), close.

    Why not s_time: `s_time -reuse` without -www never reads after the
    handshake, so it never sees a TLS 1.3 ticket and cannot resume; with -www
    it sends its request at once, before the greeting, and nginx's mail module
    does not read a request that arrived during the handshake until the next
    event on the socket (the connection hangs; seen with nginx 1.22.1).

    After the handshake the client sets TCP_QUICKACK, so it acknowledges the
    server's ticket segment at once: a server that writes the tickets and the
    greeting as two small writes with Nagle's algorithm on (nginx's mail
    module does: shared/peers/RESULTS.md, P1) otherwise waits for the client's
    delayed ACK, about 40 ms per connection, and the run measures that timer
    instead of the handshake (--no-quickack shows it).

    Prints the lines s_time prints ("N connections in S real seconds") plus
    "resumed R" and "full F", so the same parser reads both.  Loopback only;
    at most --secs + 30 s.  Standard library only (Python's ssl is OpenSSL,
    the same client library as s_time).

DIAGNOSTICS
    Exit 0 when every connection got its greeting, 1 otherwise.
"""
import argparse
import ipaddress
import socket
import ssl
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
    p.add_argument("--secs", type=float, default=5.0)
    p.add_argument("--no-quickack", dest="quickack", action="store_false",
                   help="leave delayed ACKs on (see below)")
    a = p.parse_args()
    if not ipaddress.ip_address(a.host).is_loopback:
        sys.exit("tls_resume: only loopback addresses (127.0.0.0/8, ::1)")
    if not 0 < a.secs <= 60:
        sys.exit("tls_resume: --secs must be in (0, 60]")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[a.tls]
    ctx.minimum_version = ctx.maximum_version = v

    def one(session):
        with socket.create_connection((a.host, a.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="bench.localdomain", session=session) as s:
                if a.quickack:
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                got = b""
                while not got.endswith(b"\n") and len(got) < 4096:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                if not got.endswith(b"\n"):
                    raise ConnectionError("no greeting")
                return s.session, s.session_reused

    session, _ = one(None)		# the full handshake that makes the first session
    resumed = full = failed = 0
    t0 = time.monotonic()
    deadline = t0 + a.secs
    while time.monotonic() < deadline:
        try:
            new, reused = one(session)
        except (OSError, ssl.SSLError, ConnectionError):
            failed += 1
            if failed > 100:
                break
            continue
        if new is not None:
            session = new
        if reused:
            resumed += 1
        else:
            full += 1
    elapsed = time.monotonic() - t0
    n = resumed + full
    print("%d connections in %.2f real seconds" % (n, elapsed))
    print("resumed %d full %d failed %d" % (resumed, full, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
