"""The "relay" test protocol (tests/relay.h), end to end: the real ringmaild
accepting a client, connecting out to a backend from the same worker and
moving bytes both ways, driven by real sockets, every byte checked.

Backends used here: the daemon's own "echo" listener (tests/line_echo.h), a
port nobody listens on (refused), a listener of ours whose accept queue is
full (SYNs dropped: the connect times out, or completes late once we make
room), and a foreign line server run by the test in a thread.

Run: /usr/bin/python3 -m pytest -q tests/integration/test_relay.py
Every loop is bounded in count and time; only 127.0.0.1 is used; only pids
started here are signalled.
"""

import asyncio
import random
import re
import select
import socket
import struct
import threading
import time

import pytest

from conftest import pattern_lines, first_diff, BYE, GREETING, EchoClient, free_port

SMALL = {"buffers_per_worker": 64, "output_bytes_max": 65536, "write_blocks_per_worker": 1024}
STALL_S = 10        # no byte for this long while bytes are due: a dead lock


# ---- helpers -------------------------------------------------------------------------

def relay_daemon(ringmaild, backend=None, **kw):
    """A daemon with an "echo" listener and a "relay" listener whose backend is
    that echo listener (or `backend`, "HOST:PORT")."""
    echo_port = free_port()
    listeners = [{"name": "echo", "protocol": "echo", "idle_timeout_ms": 0, "port": echo_port},
                 {"name": "relay", "protocol": "relay",
                  "backend": backend or "127.0.0.1:%d" % echo_port}]
    listeners += kw.pop("more_listeners", [])
    return ringmaild(listeners=listeners, **kw)


def check_bytes(got, want, what):
    if got != want:
        i = first_diff(got, want)
        raise AssertionError("%s differs at byte %d of %d (got %d bytes): want %r, got %r"
                             % (what, i, len(want), len(got), want[max(0, i - 40):i + 40],
                                got[max(0, i - 40):i + 40]))


class Stalled(AssertionError):
    pass


def read_all_checked(sock, want, timeout, what="relay", stall=None):
    """Read exactly len(want) bytes, checking each piece as it comes.  With
    stall, no byte for that many seconds raises Stalled (a dead lock, not
    slowness: the bytes move at hundreds of MB/s when they move at all)."""
    deadline = time.monotonic() + timeout
    off = 0
    mv = memoryview(want)
    while off < len(want):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("%s: timed out after %d of %d bytes" % (what, off, len(want)))
        sock.settimeout(min(left, stall) if stall else left)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            if stall and left > stall:
                raise Stalled("%s: stalled: no byte for %.0f s after %d of %d bytes"
                              % (what, stall, off, len(want)))
            raise
        if not chunk:
            raise AssertionError("%s: closed after %d of %d bytes" % (what, off, len(want)))
        if mv[off:off + len(chunk)] != chunk:
            check_bytes(bytes(mv[:off]) + chunk, bytes(mv[:off + len(chunk)]), what)
        off += len(chunk)


def closed_within(sock, timeout):
    """Seconds until the peer closes (EOF or reset) with no bytes; AssertionError
    on bytes or if still open after timeout."""
    t0 = time.monotonic()
    sock.settimeout(timeout)
    try:
        got = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - t0
    except socket.timeout:
        raise AssertionError("still open %.1f s later" % timeout)
    assert got == b"", "expected a close, got %r" % got[:200]
    return time.monotonic() - t0


def start_sender(sock, data):
    """sendall on a thread (errors after the test gave up on the socket are ignored)."""
    def run():
        try:
            sock.sendall(data)
        except OSError:
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def stall_report(d):
    """What the daemon's pools and connections look like, for a stall message."""
    try:
        s = d.stats()
    except AssertionError as e:     # the control connection needs worker 0's ring too
        return "no stats (%s)" % e
    return "per worker: %s" % [{k: w[k] for k in ("connections_open", "buffers_free", "write_blocks_free",
                                                 "recv_paused", "held_input_copied", "recv_enobufs", "bytes_received", "bytes_sent")}
                              for w in s["per_worker"]]


def send_ignoring_reset(sock, data):
    try:
        sock.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        pass


def count_log(d, needle):
    return d.log().count(needle)


def wait_log_count(d, needle, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        n = count_log(d, needle)
        if n >= want or time.monotonic() >= deadline:
            return n
        time.sleep(0.05)


async def a_connect(port, timeout=10):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, limit=1 << 20), timeout)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def a_expect(reader, want, timeout, what):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got = bytearray()
    while len(got) < len(want):
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError("%s: timed out after %.0f s with %d of %d bytes"
                                 % (what, timeout, len(got), len(want)))
        try:
            chunk = await asyncio.wait_for(reader.read(len(want) - len(got)), left)
        except asyncio.TimeoutError:
            continue
        except ConnectionResetError:
            raise AssertionError("%s: reset after %d of %d bytes" % (what, len(got), len(want)))
        if not chunk:
            raise AssertionError("%s: closed after %d of %d bytes" % (what, len(got), len(want)))
        if chunk != want[len(got):len(got) + len(chunk)]:
            check_bytes(bytes(got) + chunk, want[:len(got) + len(chunk)], what)
        got += chunk


async def a_expect_eof(reader, timeout):
    try:
        extra = await asyncio.wait_for(reader.read(4096), timeout)
    except ConnectionResetError:
        return
    assert extra == b"", "expected close, got %r" % extra[:200]


async def gather_all(coros, what="connections"):
    results = await asyncio.gather(*coros, return_exceptions=True)
    bad = [r for r in results if isinstance(r, BaseException)]
    if bad:
        raise AssertionError("%d of %d %s failed; first: %s" % (
            len(bad), len(results), what, "; ".join("%s: %s" % (type(e).__name__, e) for e in bad[:5])))
    return results


def run_async(coro, timeout):
    async def main():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(main())


class FullListener:
    """A listening socket of ours with backlog 0 that never accepts on its own:
    one connection fills its accept queue, and then the kernel drops every
    further SYN (the connecting side sees no answer, not a reset).
    release() makes room again: a dropped SYN's retransmission then connects."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.fillers = []

    def fill(self):
        """Fill the accept queue; True once a probe's SYN went unanswered for 0.5 s."""
        for _ in range(6):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            _, w, _ = select.select([], [s], [], 0.5)
            if not w:
                s.close()          # never answered: the queue is full
                return True
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                s.close()
                return False
            self.fillers.append(s)
        return False

    def release(self):
        """Take the fillers off the accept queue (and close them)."""
        self.sock.settimeout(2.0)
        for f in self.fillers:
            a, _ = self.sock.accept()
            a.close()
            f.close()
        self.fillers = []

    def accept(self, timeout):
        self.sock.settimeout(timeout)
        a, peer = self.sock.accept()
        a.settimeout(timeout)
        return a, peer

    def close(self):
        for f in self.fillers:
            f.close()
        self.fillers = []
        self.sock.close()


def require_full(fl):
    if not fl.fill():
        fl.close()
        pytest.skip("this kernel does not drop SYNs to a full backlog-0 accept queue")


# ---- 1. relay to the daemon's own echo listener ---------------------------------------------

def test_relay_to_own_echo(ringmaild):
    d = relay_daemon(ringmaild)
    base = d.total("connections_outbound")
    with EchoClient(d.port("relay")) as c:          # the echo greeting, through the relay
        for line in (b"hello\r\n", b"bare lf\n", b"\r\n", b"\n", b"nul\x00byte\r\n",
                     bytes(range(256)).replace(b"\n", b"") + b"\r\n", b"quit\r\n",
                     b" QUIT\n", b"x" * 1000 + b"\r\n"):
            c.send(line)
            c.expect(line)
        batch = b"one\r\ntwo\n\nthree\r\n"
        c.send(batch)
        c.expect(batch)
        c.send(b"QUIT\r\n")
        c.expect(BYE)
        c.expect_eof()                       # the echo side closed: FIN passed on
        # Our side still open for writing: the relay waits for our EOF (both
        # sides have then sent EOF) and closes everything.
        c.sock.shutdown(socket.SHUT_WR)
        d.wait_quiescent(timeout=10)
    assert re.search(r"relay: backend 127\.0\.0\.1:%d is c[0-9a-f]{16}" % d.port("echo"), d.log())
    assert d.total("connections_outbound") == base + 1


def test_relay_echo_then_client_closes(ringmaild):
    """The client closes outright mid-session: everything is torn down."""
    d = relay_daemon(ringmaild)
    for i in range(5):
        with EchoClient(d.port("relay")) as c:
            c.send(b"line %d\r\n" % i)
            c.expect(b"line %d\r\n" % i)
    d.wait_quiescent(timeout=10)


# ---- 2. early bytes and half-close -----------------------------------------------------------

def test_bytes_before_backend_connected(ringmaild):
    """Lines sent the moment the client's connect returns (the relay has hardly
    started its outbound connect) all arrive, after the greeting."""
    d = relay_daemon(ringmaild)
    rng = random.Random(3)
    for i in range(20):
        data = pattern_lines(rng.randint(10, 30000), seed=i)
        with EchoClient(d.port("relay"), greet=False) as c:
            c.send(data)
            read_all_checked(c.sock, GREETING + data, timeout=20, what="early bytes %d" % i)
            c.send(b"QUIT\n")
            c.expect(BYE)
            c.expect_eof()
    d.wait_quiescent(timeout=10)


def test_bytes_and_eof_held_until_backend_connects(ringmaild):
    """Deterministic version: the backend's accept queue is full, so the relay's
    SYN is dropped; the client sends its data and half-closes meanwhile; then we
    make room, the SYN retransmission connects, and the backend receives all of
    it followed by EOF; what it sends back reaches the client, then EOF."""
    fl = FullListener()
    try:
        require_full(fl)
        d = relay_daemon(ringmaild, backend="127.0.0.1:%d" % fl.port)
        base = d.total("connections_outbound")
        data = pattern_lines(100_000, seed=11)
        with EchoClient(d.port("relay"), greet=False) as c:
            c.send(data)
            c.sock.shutdown(socket.SHUT_WR)
            time.sleep(0.3)
            assert d.total("connections_outbound") == base, "backend connected despite the full queue"
            fl.release()
            b, peer = fl.accept(timeout=10)      # the relay's connection (SYN retransmitted)
            with b:
                assert peer[0] == "127.0.0.1"
                got = bytearray()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    chunk = b.recv(1 << 20)
                    if not chunk:
                        break
                    got += chunk
                else:
                    raise AssertionError("backend: no EOF after %d bytes" % len(got))
                check_bytes(bytes(got), data, "held client bytes at the backend")
                reply = b"+OK got %d bytes\r\n" % len(got)
                b.sendall(reply)
                b.shutdown(socket.SHUT_WR)
                c.expect(reply)
                c.expect_eof()
        d.wait_quiescent(timeout=10)
        assert d.total("connections_outbound") == base + 1
    finally:
        fl.close()


def test_half_close_gets_full_echo(ringmaild):
    """Send, then shutdown(SHUT_WR): the FIN goes on to the echo listener after
    the data, the echo comes back in full, then EOF."""
    d = relay_daemon(ringmaild)
    for i, size in enumerate((1, 5000, 300_000)):
        data = pattern_lines(size, seed=20 + i)
        with EchoClient(d.port("relay"), timeout=30) as c:
            t = threading.Thread(target=c.sock.sendall, args=(data,), daemon=True)
            t.start()
            t.join(30)
            assert not t.is_alive()
            c.sock.shutdown(socket.SHUT_WR)
            read_all_checked(c.sock, data, timeout=30, what="half-close echo")
            c.expect_eof()
    # The same, sent at once without waiting for the greeting.
    with EchoClient(d.port("relay"), greet=False) as c:
        data = pattern_lines(20_000, seed=29)
        c.send(data)
        c.sock.shutdown(socket.SHUT_WR)
        read_all_checked(c.sock, GREETING + data, timeout=30, what="early half-close echo")
        c.expect_eof()
    d.wait_quiescent(timeout=10)


# ---- 3. bulk --------------------------------------------------------------------------------

def test_bulk_8mib(ringmaild):
    d = relay_daemon(ringmaild)
    data = pattern_lines(8 << 20, seed=1)
    with EchoClient(d.port("relay"), timeout=60) as c:
        t = start_sender(c.sock, data + b"QUIT\r\n")
        read_all_checked(c.sock, data + BYE, timeout=120, what="8 MiB relayed echo", stall=STALL_S)
        t.join(30)
        assert not t.is_alive()
        c.expect_eof()
        c.sock.shutdown(socket.SHUT_WR)
        d.wait_quiescent(timeout=15)


def test_100_concurrent_256kib(ringmaild):
    d = relay_daemon(ringmaild)
    port = d.port("relay")
    base = d.stats()["total"]
    n_conns = 100
    per_conn = 256 << 10

    async def one(idx):
        data = pattern_lines(per_conn, seed=1000 + idx)
        reader, writer = await a_connect(port, timeout=30)
        await a_expect(reader, GREETING, 30, "conn %d greeting" % idx)

        async def send():
            writer.write(data + b"QUIT\r\n")
            await writer.drain()
        sender = asyncio.create_task(send())
        await a_expect(reader, data + BYE, 120, "conn %d echo" % idx)
        await sender
        await a_expect_eof(reader, 30)
        writer.close()

    async def all_of_them():
        await gather_all([one(i) for i in range(n_conns)])

    run_async(all_of_them(), 180)
    s = d.wait_quiescent(timeout=20)["total"]
    assert s["connections_outbound"] - base["connections_outbound"] == n_conns, s
    # Each session: the relay's client and the echo listener's accept.
    assert s["connections_accepted"] - base["connections_accepted"] >= 2 * n_conns, s
    # Every byte is received three times: relay client side, echo, relay backend side.
    assert s["bytes_received"] - base["bytes_received"] >= 3 * n_conns * per_conn, s


# ---- 4. back-pressure across the two sides ------------------------------------------------------

def test_backpressure_16mib_slow_reader(ringmaild):
    d = relay_daemon(ringmaild, limits=SMALL)
    data = pattern_lines(16 << 20, seed=2)
    with EchoClient(d.port("relay"), timeout=60) as c:
        t = start_sender(c.sock, data + b"QUIT\r\n")
        time.sleep(1.2)           # not reading: the relay must hold, not drop or grow
        mid = d.stats()
        assert d.running()
        assert mid["total"]["recv_paused"] > 0, mid["total"]
        for w in mid["per_worker"]:
            assert 0 <= w["buffers_free"] <= SMALL["buffers_per_worker"], w
            assert 0 <= w["write_blocks_free"] <= SMALL["write_blocks_per_worker"], w
        try:
            read_all_checked(c.sock, data + BYE, timeout=120, what="16 MiB after a pause", stall=STALL_S)
        except Stalled as e:
            raise Stalled("%s; %s" % (e, stall_report(d)))
        t.join(30)
        assert not t.is_alive()
        c.expect_eof()
        c.sock.shutdown(socket.SHUT_WR)
        assert d.running()
        d.wait_quiescent(timeout=15)


def test_blocked_direction_does_not_stop_the_other(ringmaild):
    """A backend that does not read, while it sends 16 MiB: the client->backend
    direction fills up all the way (the relay's backend connection has a full
    output queue with its send stuck in flight); the client pauses too, so the
    backend->client direction fills and the backend connection holds input.
    When the client reads, the backend->client direction must flow to the end
    although the other direction stays blocked: back-pressure stops only the
    direction whose reader is slow.  (Default limits.)"""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(10)
    try:
        d = relay_daemon(ringmaild, backend="127.0.0.1:%d" % srv.getsockname()[1])
        up = pattern_lines(32 << 20, seed=60)        # client -> backend: more than all the socket buffers
        down = pattern_lines(16 << 20, seed=61)      # backend -> client
        with EchoClient(d.port("relay"), greet=False, timeout=30) as c:
            b, _ = srv.accept()
            with b:
                start_sender(c.sock, up)
                time.sleep(1.0)              # the client->backend direction fills first
                start_sender(b, down)
                time.sleep(1.0)              # nobody reads: the other direction fills too
                try:
                    read_all_checked(c.sock, down, timeout=60, stall=STALL_S,
                                     what="backend->client while client->backend is blocked")
                except Stalled as e:
                    raise Stalled("%s; %s" % (e, stall_report(d)))
                # Now the backend reads: the other direction drains as well.
                read_all_checked(b, up, timeout=60, stall=STALL_S, what="client->backend, late")
                c.sock.shutdown(socket.SHUT_WR)
                b.settimeout(10)
                assert b.recv(1) == b"", "backend: expected the client's EOF"
                b.shutdown(socket.SHUT_WR)
                c.expect_eof()
        d.wait_quiescent(timeout=10)
    finally:
        srv.close()


@pytest.mark.parametrize("workers", [2, 1])
def test_backpressure_two_sessions_16mib_rounds(ringmaild, workers):
    """The same on two sessions at once, three rounds: each reader pauses while
    both directions of its relay fill up, then reads everything; a session
    that gets no byte for STALL_S seconds is a dead lock.  Two found so far:
    - a backend connection holding input for the client while its own send
      is in flight and its output more than half full ignores the client's
      rm_conn_resume (test_blocked_direction_does_not_stop_the_other shows
      that one alone, every time);
    - with both sessions on one worker, held input pinned every buffer of the
      64-buffer ring, and the connections that would drain it waited for
      buffers (the stall report showed buffers_free 0 on that worker); held
      input now moves out of a low ring (engine.c, hold_copy).  With one
      worker, both sessions and both echo backends share its ring every time."""
    d = relay_daemon(ringmaild, limits=SMALL, workers=workers)
    port = d.port("relay")
    datas = [pattern_lines(16 << 20, seed=40 + i) for i in range(2)]
    for rnd in range(3):
        errors = [None, None]

        def one(i):
            try:
                with EchoClient(port, timeout=60) as c:
                    start_sender(c.sock, datas[i] + b"QUIT\r\n")
                    time.sleep(1.0)
                    read_all_checked(c.sock, datas[i] + BYE, timeout=120, stall=STALL_S,
                                     what="round %d session %d" % (rnd, i))
                    c.expect_eof()
                    c.sock.shutdown(socket.SHUT_WR)
            except BaseException as e:      # reported below, with the daemon's state
                errors[i] = e

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        assert not any(t.is_alive() for t in threads), "round %d: a reader is still running" % rnd
        bad = [e for e in errors if e is not None]
        if bad:
            raise AssertionError("round %d: %s; %s" % (rnd, "; ".join(str(e) for e in bad), stall_report(d)))
        assert d.running()
        d.wait_quiescent(timeout=15)


def test_backpressure_many_slow_readers(ringmaild):
    """40 relayed sessions, all sending 512 KiB and not reading for a second,
    on a 64-buffer ring per worker: nobody stalls for good, pools come back."""
    d = relay_daemon(ringmaild, limits=SMALL)
    port = d.port("relay")
    n_conns = 40

    async def one(idx):
        data = pattern_lines(512 << 10, seed=300 + idx)
        reader, writer = await a_connect(port, timeout=30)

        async def send():
            writer.write(data + b"QUIT\r\n")
            await writer.drain()
        sender = asyncio.create_task(send())
        await asyncio.sleep(1.0)
        await a_expect(reader, GREETING + data + BYE, 120, "conn %d echo" % idx)
        await sender
        await a_expect_eof(reader, 30)
        writer.close()

    async def all_of_them():
        await gather_all([one(i) for i in range(n_conns)])

    run_async(all_of_them(), 150)
    s = d.wait_quiescent(timeout=20)["total"]
    assert s["recv_paused"] > 0, s
    # The ring ran low under 40 paused sessions: held input left it (hold_copy).
    assert s["held_input_copied"] > 0, s


# ---- 5. backend refused ---------------------------------------------------------------------

def test_backend_refused(ringmaild):
    dead = free_port()          # nobody listens there
    d = relay_daemon(ringmaild, backend="127.0.0.1:%d" % dead)
    base = d.stats()["total"]
    needle = "relay: backend connect failed"
    n_before = count_log(d, needle)
    n = 50
    for i in range(n):
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", d.port("relay")), timeout=5)
        with s:
            if i % 2:
                send_ignoring_reset(s, b"lost line %d\r\n" % i)   # dropped with the client
            closed_within(s, 2.0)
            assert time.monotonic() - t0 < 2.0
    assert wait_log_count(d, needle, n_before + n) == n_before + n
    assert "backend connect failed: Connection refused" in d.log()
    s = d.wait_quiescent(timeout=10)["total"]
    assert s["connections_outbound"] == base["connections_outbound"], s
    assert d.running()
    # The echo listener still works, and the daemon is as good as new.
    with EchoClient(d.port("echo")) as c:
        c.send(b"still fine\r\n")
        c.expect(b"still fine\r\n")


def test_backend_refused_concurrent(ringmaild):
    """Refusals on many sessions at once (both workers) leak no slot either."""
    d = relay_daemon(ringmaild, backend="127.0.0.1:%d" % free_port())
    port = d.port("relay")

    async def one(idx):
        reader, writer = await a_connect(port, timeout=10)
        writer.write(b"hello %d\r\n" % idx)
        await a_expect_eof(reader, 5)
        writer.close()

    async def all_of_them():
        await gather_all([one(i) for i in range(200)])

    run_async(all_of_them(), 60)
    d.wait_quiescent(timeout=10)
    assert wait_log_count(d, "relay: backend connect failed", 200) == 200


# ---- 6. backend connect timeout ---------------------------------------------------------------

def test_backend_connect_timeout(ringmaild):
    fl = FullListener()
    try:
        require_full(fl)
        d = relay_daemon(ringmaild, backend="127.0.0.1:%d" % fl.port,
                         limits={"connect_timeout_ms": 500})
        base = d.stats()["total"]
        needle = "relay: backend connect failed: Connection timed out"
        for i in range(4):
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", d.port("relay")), timeout=5) as s:
                send_ignoring_reset(s, b"never delivered\r\n")
                closed_within(s, 2.5)
                took = time.monotonic() - t0
            # Not refused at once (the SYN was dropped), closed near the 500 ms deadline.
            assert 0.4 <= took <= 2.0, "closed after %.2f s" % took
        assert wait_log_count(d, needle, 4) == 4, d.log()[-2000:]
        s = d.wait_quiescent(timeout=10)["total"]
        assert s["connections_outbound"] == base["connections_outbound"], s
        assert s["timeouts"] - base["timeouts"] >= 4, s
        # Several at once: each is closed at its own deadline.
        socks = [socket.create_connection(("127.0.0.1", d.port("relay")), timeout=5) for _ in range(10)]
        t0 = time.monotonic()
        try:
            for s in socks:
                closed_within(s, max(0.1, t0 + 2.5 - time.monotonic()))
            assert time.monotonic() - t0 <= 2.5
        finally:
            for s in socks:
                s.close()
        d.wait_quiescent(timeout=10)
        assert d.total("connections_outbound") == base["connections_outbound"]
    finally:
        fl.close()


# ---- 7. a foreign backend ----------------------------------------------------------------------

class ForeignServer:
    """A line server that is not ringmaild: a banner, each line sent back in
    upper case; "BYE" gets "221 closing" and a close; "RST" a reset; "HALF" gets
    "half-closed", then a shutdown(SHUT_WR), and it reads on until EOF.
    Every byte received is kept per connection."""

    BANNER = b"220 foreign.test ready\r\n"

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sessions = []        # dicts: peer, received, eof, error
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self.acceptor.start()

    def _accept_loop(self):
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sess = {"peer": peer, "received": bytearray(), "eof": False, "error": None, "done": threading.Event()}
            with self.lock:
                self.sessions.append(sess)
            t = threading.Thread(target=self._serve, args=(conn, sess), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn, sess):
        try:
            with conn:
                conn.settimeout(60)
                conn.sendall(self.BANNER)
                pending = b""
                half = False
                for _ in range(1_000_000):
                    chunk = conn.recv(65536)
                    if not chunk:
                        sess["eof"] = True
                        return
                    sess["received"] += chunk
                    if half:
                        continue
                    pending += chunk
                    out = []
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        word = line.rstrip(b"\r")
                        if word == b"BYE":
                            conn.sendall(b"".join(out) + b"221 closing\r\n")
                            return
                        if word == b"RST":
                            conn.sendall(b"".join(out))
                            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            return          # closed with a reset
                        if word == b"HALF":
                            conn.sendall(b"".join(out) + b"half-closed\r\n")
                            conn.shutdown(socket.SHUT_WR)
                            half = True
                            out = []
                            break
                        out.append(line.upper() + b"\n")
                    if out:
                        conn.sendall(b"".join(out))
        except Exception as e:          # reported by the test
            sess["error"] = "%s: %s" % (type(e).__name__, e)
        finally:
            sess["done"].set()

    def wait_sessions(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.sessions) >= n and all(s["done"].is_set() for s in self.sessions[:n]):
                    return list(self.sessions)
            time.sleep(0.02)
        with self.lock:
            raise AssertionError("foreign server: %d sessions, done %s"
                                 % (len(self.sessions), [s["done"].is_set() for s in self.sessions]))

    def close(self):
        self.stop.set()
        self.sock.close()
        self.acceptor.join(5)
        for t in self.threads:
            t.join(5)


def test_relay_to_foreign_server(ringmaild):
    fs = ForeignServer()
    try:
        d = relay_daemon(ringmaild, backend="127.0.0.1:%d" % fs.port)
        base = d.total("connections_outbound")
        rng = random.Random(7)
        sent_all = []
        for i in range(3):
            with EchoClient(d.port("relay"), greet=False) as c:
                c.expect(ForeignServer.BANNER)
                sent = bytearray()
                for j in range(50):
                    line = b"Line %d.%d mixed Case \xe9\xff " % (i, j) + bytes(rng.randint(97, 122) for _ in range(rng.randint(0, 80)))
                    line += b"\r\n" if j % 2 else b"\n"
                    c.send(line)
                    sent += line
                    c.expect(line.upper())
                # A bulk megabyte of lines, sent while reading.
                bulk = pattern_lines(1 << 20, seed=70 + i).lower()
                t = start_sender(c.sock, bulk)
                read_all_checked(c.sock, bulk.upper(), timeout=60, what="foreign upper-case bulk",
                                 stall=STALL_S)
                t.join(30)
                sent += bulk
                c.send(b"BYE\r\n")
                sent += b"BYE\r\n"
                c.expect(b"221 closing\r\n")
                c.expect_eof()
                sent_all.append(bytes(sent))
        sessions = fs.wait_sessions(3)
        assert len(sessions) == 3
        for sess, sent in zip(sessions, sent_all):
            assert sess["error"] is None, sess["error"]
            assert sess["peer"][0] == "127.0.0.1"
            check_bytes(bytes(sess["received"]), sent, "bytes at the foreign server")
        d.wait_quiescent(timeout=10)
        assert d.total("connections_outbound") == base + 3
    finally:
        fs.close()


def test_foreign_server_half_close_other_direction_flows(ringmaild):
    """The backend half-closes: the client gets its last reply and EOF, and can
    still send; the backend receives all of it; the client's EOF ends it all."""
    fs = ForeignServer()
    try:
        d = relay_daemon(ringmaild, backend="127.0.0.1:%d" % fs.port)
        with EchoClient(d.port("relay"), greet=False, timeout=30) as c:
            c.expect(ForeignServer.BANNER)
            c.send(b"abc\r\nHALF\r\n")
            c.expect(b"ABC\r\nhalf-closed\r\n")
            c.expect_eof()
            more = pattern_lines(300_000, seed=8)
            c.send(more)
            c.sock.shutdown(socket.SHUT_WR)
            sess = fs.wait_sessions(1, timeout=30)[0]
            assert sess["error"] is None, sess["error"]
            assert sess["eof"], "the backend never got the client's EOF"
            check_bytes(bytes(sess["received"]), b"abc\r\nHALF\r\n" + more, "bytes after the half-close")
            d.wait_quiescent(timeout=10)
    finally:
        fs.close()


def reset_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_client_reset_closes_both(ringmaild):
    """One side closes (a reset, not a FIN): the relay closes the other side too."""
    d = relay_daemon(ringmaild)
    for i in range(10):
        c = EchoClient(d.port("relay"))
        c.send(b"before reset %d\r\n" % i)
        c.expect(b"before reset %d\r\n" % i)
        if i % 2:
            c.send(pattern_lines(200_000, seed=i))      # and bytes in flight both ways
        reset_close(c.sock)
    d.wait_quiescent(timeout=10)
    with EchoClient(d.port("relay")) as c:
        c.send(b"after\r\n")
        c.expect(b"after\r\n")


def test_backend_reset_closes_client(ringmaild):
    fs = ForeignServer()
    try:
        d = relay_daemon(ringmaild, backend="127.0.0.1:%d" % fs.port)
        for i in range(5):
            with EchoClient(d.port("relay"), greet=False) as c:
                c.expect(ForeignServer.BANNER)
                c.send(b"abc %d\r\nRST\r\n" % i)
                c.expect(b"ABC %d\r\n" % i)
                closed_within(c.sock, 2.0)      # not left half-open: closed, within 2 s
        d.wait_quiescent(timeout=10)
    finally:
        fs.close()


def test_foreign_server_concurrent(ringmaild):
    fs = ForeignServer()
    try:
        d = relay_daemon(ringmaild, backend="127.0.0.1:%d" % fs.port)
        port = d.port("relay")
        n_conns = 30

        async def one(idx):
            reader, writer = await a_connect(port)
            await a_expect(reader, ForeignServer.BANNER, 10, "banner %d" % idx)
            data = pattern_lines(64 << 10, seed=900 + idx).lower()
            writer.write(data)
            await a_expect(reader, data.upper(), 60, "conn %d" % idx)
            writer.write(b"BYE\n")
            await a_expect(reader, b"221 closing\r\n", 10, "bye %d" % idx)
            await a_expect_eof(reader, 10)
            writer.close()

        async def all_of_them():
            await gather_all([one(i) for i in range(n_conns)])

        run_async(all_of_them(), 120)
        sessions = fs.wait_sessions(n_conns, timeout=20)
        assert all(s["error"] is None for s in sessions), [s["error"] for s in sessions if s["error"]]
        d.wait_quiescent(timeout=10)
    finally:
        fs.close()


# ---- 8. outbound statistics ----------------------------------------------------------------------

def test_connections_outbound_counts_connected_backends(ringmaild):
    fl = FullListener()
    try:
        full = fl.fill()
        d = relay_daemon(ringmaild, limits={"connect_timeout_ms": 300}, more_listeners=[
            {"name": "dead", "protocol": "relay", "backend": "127.0.0.1:%d" % free_port()},
            {"name": "slow", "protocol": "relay", "backend": "127.0.0.1:%d" % fl.port}])
        s0 = d.stats()
        base = s0["total"]["connections_outbound"]
        assert base == sum(w["connections_outbound"] for w in s0["per_worker"])
        good, refused, timed_out = 7, 5, 3 if full else 0
        for i in range(good):
            with EchoClient(d.port("relay")) as c:
                c.send(b"QUIT\r\n")
                c.expect(BYE)
                c.expect_eof()
        for i in range(refused):
            with socket.create_connection(("127.0.0.1", d.port("dead")), timeout=5) as s:
                closed_within(s, 2.0)
        for i in range(timed_out):
            with socket.create_connection(("127.0.0.1", d.port("slow")), timeout=5) as s:
                closed_within(s, 2.0)
        s1 = d.wait_quiescent(timeout=10)
        assert s1["total"]["connections_outbound"] - base == good, s1["total"]
        assert s1["total"]["connections_outbound"] == sum(w["connections_outbound"] for w in s1["per_worker"])
        assert wait_log_count(d, "relay: backend connect failed", refused + timed_out) == refused + timed_out
    finally:
        fl.close()
