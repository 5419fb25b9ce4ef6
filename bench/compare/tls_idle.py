#!/usr/bin/env python3
"""tls_idle.py - memory a server spends per idle TLS connection.

SYNOPSIS
    python3 bench/compare/tls_idle.py --port PORT --pid PID [--conns 2000]
        [--tls 1.3|1.2] [--concurrency 64] [--settle 2] [--deadline 180]
        [--warmup 50] [--label NAME]

DESCRIPTION
    Opens --warmup TLS connections and closes them (first-use allocations of
    the server: session cache, DRBG, lazy tables), samples the server's
    VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup), then opens
    --conns connections, at most --concurrency handshakes at a time.  Each
    connection completes a full handshake (no resumption: a fresh session
    each), reads the server's first line (the greeting: "+OK echo ready"
    for ringmail's echo, "* OK ..." for nginx's imaps) and then sends
    nothing.  --settle seconds after the last one is established the server
    is sampled again; the deltas divided by the count are printed, and every
    connection is checked to be still open.  Then all are closed.

    Output: human-readable lines, then one line starting "RESULT\t" with
    tab-separated key=value pairs for the calling script.

    Loopback only (127.0.0.0/8 or ::1); every wait is bounded (--deadline
    for the whole run).  Standard library only.

DIAGNOSTICS
    Exit 0 when all --conns connections were established and still open at
    the second sample, 1 otherwise.
"""
import argparse
import asyncio
import ipaddress
import resource
import ssl
import sys
import time


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def sample(pid):
    rss = pss = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def context(version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
    ctx.minimum_version = ctx.maximum_version = v
    return ctx


async def open_one(host, port, ctx, sem, timeout):
    async with sem:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, server_hostname="bench.localdomain"), timeout)
        try:
            greeting = await asyncio.wait_for(reader.readline(), timeout)
        except BaseException:
            writer.close()
            raise
        if not greeting:
            writer.close()
            raise ConnectionError("closed before the greeting")
        return reader, writer, greeting


async def run(a):
    ctx = context(a.tls)
    sem = asyncio.Semaphore(a.concurrency)
    t_end = time.monotonic() + a.deadline
    cipher = None

    # Warm-up: first-use allocations of the server are not per-connection memory.
    warm = await asyncio.gather(*[open_one(a.host, a.port, ctx, sem, 30) for _ in range(a.warmup)],
                                return_exceptions=True)
    for w in warm:
        if isinstance(w, tuple):
            if cipher is None:
                obj = w[1].get_extra_info("ssl_object")
                cipher = "%s %s" % (obj.version(), obj.cipher()[0])
            w[1].close()
    await asyncio.sleep(1.0)
    rss0, pss0 = sample(a.pid)

    t0 = time.monotonic()
    tasks = [asyncio.ensure_future(open_one(a.host, a.port, ctx, sem, 30)) for _ in range(a.conns)]
    done, pending = await asyncio.wait(tasks, timeout=max(1.0, t_end - time.monotonic()))
    for p in pending:
        p.cancel()
    conns, errors = [], {}
    for t in done:
        if t.cancelled() or t.exception() is not None:
            e = "cancelled" if t.cancelled() else type(t.exception()).__name__
            errors[e] = errors.get(e, 0) + 1
        else:
            conns.append(t.result())
    if pending:
        errors["deadline"] = len(pending)
    t_est = time.monotonic() - t0
    greeting = conns[0][2].decode(errors="replace").strip() if conns else ""
    if conns and cipher is None:
        obj = conns[0][1].get_extra_info("ssl_object")
        cipher = "%s %s" % (obj.version(), obj.cipher()[0])

    await asyncio.sleep(a.settle)
    rss1, pss1 = sample(a.pid)
    alive = sum(1 for r, w, g in conns if not r.at_eof() and not w.is_closing())
    for r, w, g in conns:
        w.close()
    await asyncio.sleep(0.2)

    n = len(conns)
    per = lambda b, c: ((c - b) * 1024.0 / n) if n else 0.0
    print("%s: %d TLS %s connections to 127.0.0.1:%d in %.1f s (%s), greeting %r, errors %s" %
          (a.label, n, a.tls, a.port, t_est, cipher, greeting, errors or "none"))
    print("  server pid %d RSS %d -> %d kB, PSS %d -> %d kB; per connection RSS %.0f B, PSS %.0f B; alive %d" %
          (a.pid, rss0, rss1, pss0, pss1, per(rss0, rss1), per(pss0, pss1), alive))
    print("RESULT\tlabel=%s\ttls=%s\tconns=%d\talive=%d\trss0_kb=%d\trss1_kb=%d\tpss0_kb=%d\tpss1_kb=%d\t"
          "rss_per_conn_b=%.0f\tpss_per_conn_b=%.0f\tcipher=%s\terrors=%d" %
          (a.label, a.tls, n, alive, rss0, rss1, pss0, pss1, per(rss0, rss1), per(pss0, pss1),
           (cipher or "-").replace(" ", "_"), sum(errors.values())))
    return 0 if n == a.conns and alive == n else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the server process to sample")
    p.add_argument("--conns", type=int, default=2000)
    p.add_argument("--tls", choices=("1.2", "1.3"), default="1.3")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--deadline", type=float, default=180.0)
    p.add_argument("--label", default="server")
    a = p.parse_args()
    if not ipaddress.ip_address(a.host).is_loopback:
        sys.exit("tls_idle: only loopback addresses (127.0.0.0/8, ::1)")
    if not (1 <= a.conns <= 20000 and 1 <= a.concurrency <= 1024 and 0 < a.deadline <= 900
            and 0 <= a.warmup <= 1000 and 0 <= a.settle <= 60):
        sys.exit("tls_idle: --conns 1..20000, --concurrency 1..1024, --deadline (0, 900], --warmup 0..1000, "
                 "--settle 0..60")
    have = raise_nofile(a.conns + a.warmup + 64)
    if have < a.conns + 64:
        sys.exit("tls_idle: open-files limit %d is too low for %d connections" % (have, a.conns))
    sys.exit(asyncio.run(asyncio.wait_for(run(a), a.deadline + a.settle + 60)))


if __name__ == "__main__":
    main()
