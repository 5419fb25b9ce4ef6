"""ringmailctl's queue commands against a real daemon: queue (text and
--json), hold / release / delete (and that a delete survives a restart),
flush, a listing far larger than the connection's output limit, and control
connections that go away before their reply.

Messages are put into the spool with the "spooltest" protocol
(tests/spool_sink.h) over several connections, so that both workers' queues
hold some: the listing must come from every worker (each owns its queue),
and an id command must reach the worker that owns the id.
"""
import json
import re
import socket
import threading
import time

import conftest
from conftest import run_tool, RINGMAILCTL, SinkClient


def spool_daemon(ringmaild, name="cq", **kw):
    return conftest.spool_daemon(ringmaild, name=name, **kw)

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def qid_worker(qid):
    """The worker a queue id belongs to (core/spool_format.h: 40 bits time,
    6 bits worker, 18 bits counter)."""
    v = 0
    for ch in qid:
        v = v * 32 + CROCKFORD.index(ch)
    return (v >> 18) & 63


def queued_id(reply):
    m = re.fullmatch(rb"250 ([0-9A-Z]{13}) ([0-9a-f]{16})", reply)
    assert m, reply
    return m.group(1).decode()


def put_messages(d, count, conns=8):
    """count messages over `conns` connections, sent round-robin so that they
    commit together; then, while one worker has none, one more message on a
    new connection (the kernel spreads connections over the workers).
    Returns {qid: (size, sender, rcpt)}."""
    port = d.port("spool")
    sent = {}
    clients = [SinkClient(port) for _ in range(conns)]

    def one(c, i):
        size = 1 + (i * 37) % 3000
        sender = "s%d@from.test" % i
        rcpt = "r%d@example.test" % i
        c.send_msg(b"m" * size, rcpt=rcpt, sender=sender)
        return (c, size, sender, rcpt)

    i = 0
    while i < count:
        batch = []
        for c in clients[:count - i]:
            batch.append(one(c, i))
            i += 1
        for c, size, sender, rcpt in batch:
            sent[queued_id(c.line())] = (size, sender, rcpt)
    for _ in range(64):
        if len({qid_worker(q) for q in sent}) == d.workers:
            break
        c = SinkClient(port)
        clients.append(c)
        _, size, sender, rcpt = one(c, i)
        i += 1
        sent[queued_id(c.line())] = (size, sender, rcpt)
    for c in clients:
        c.close()
    assert {qid_worker(q) for q in sent} == set(range(d.workers)), "messages on workers %s" % \
        sorted({qid_worker(q) for q in sent})
    return sent


def ctl_ok(d, *args, timeout=60):
    r = d.ctl(*args, timeout=timeout)
    assert r.returncode == 0, (args, r.returncode, r.stderr.decode(errors="replace")[-2000:])
    assert r.stderr == b"", r.stderr
    return r.stdout


def queue_json(d):
    out = ctl_ok(d, "--json", "queue")
    q = json.loads(out)
    assert isinstance(q, list)
    return q


def ctl_raw(d, timeout=30):
    """A plain connection to the control socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(d.settings["control_socket"])
    return s


def read_replies(s, n):
    """Read until n replies (each ends with a "." line) have arrived."""
    buf = b""
    while True:
        ends = buf.count(b"\n.\n") + (1 if buf.startswith(b".\n") else 0)
        if ends >= n:
            return buf
        chunk = s.recv(1 << 20)
        if not chunk:
            raise EOFError("closed after %d bytes" % len(buf))
        buf += chunk


# ---- listing --------------------------------------------------------------------------------

def test_queue_lists_every_workers_messages(ringmaild):
    d = spool_daemon(ringmaild)
    # Empty: exactly [] and a sentence.
    assert ctl_ok(d, "--json", "queue") == b"[]\n"
    assert ctl_ok(d, "queue") == b"queue is empty\n"

    before = time.time()
    sent = put_messages(d, 40)
    q = queue_json(d)
    assert [m["id"] for m in q] == sorted(sent), "listing not exactly the messages, sorted by id"
    for m in q:
        size, sender, rcpt = sent[m["id"]]
        assert m["size"] == size
        assert m["sender"] == sender
        assert m["recipients"] == [{"address": rcpt, "state": "pending"}]
        assert m["worker"] == qid_worker(m["id"])
        assert m["hold"] is False
        assert m["attempts"] == 0
        assert m["last_error"] == ""
        assert 0 <= m["age_s"] <= time.time() - before + 2
        assert m["next_attempt_unix_ms"] <= time.time() * 1000 + 1000
        assert set(m) == {"id", "worker", "age_s", "size", "sender", "recipients",
                          "next_attempt_unix_ms", "attempts", "last_error", "hold"}

    text = ctl_ok(d, "queue").decode()
    for qid, (size, sender, rcpt) in sent.items():
        m = re.search(r"^%s  age \S+  (\d+) bytes  from <([^>]*)>\n    pending    (\S+)\n" % qid, text, re.M)
        assert m, "no block for %s in:\n%s" % (qid, text[:2000])
        assert (int(m.group(1)), m.group(2), m.group(3)) == (size, sender, rcpt)
    ids_in_order = re.findall(r"^([0-9A-Z]{13})  age ", text, re.M)
    assert ids_in_order == sorted(sent)
    assert text.endswith("-- %d messages, %d bytes\n" % (len(sent), sum(v[0] for v in sent.values())))
    assert d.stop() == 0


# ---- hold, release, delete -------------------------------------------------------------------

def test_hold_release_delete_and_restart(ringmaild):
    d = spool_daemon(ringmaild, name="hrd")
    sent = put_messages(d, 12)
    ids = sorted(sent)
    # One of each worker for each action.
    by_worker = {}
    for qid in ids:
        by_worker.setdefault(qid_worker(qid), []).append(qid)
    held = [v[0] for v in by_worker.values()]
    gone = [v[-1] for v in by_worker.values()]

    for qid in held:
        assert ctl_ok(d, "hold", qid) == b"ok\n"
    q = {m["id"]: m for m in queue_json(d)}
    assert all(q[x]["hold"] is (x in held) for x in ids)
    text = ctl_ok(d, "queue").decode()
    for qid in held:
        assert re.search(r"^%s  .*  HELD$" % qid, text, re.M), text
    # Holding twice is fine; lower case ids are the same ids.
    assert ctl_ok(d, "hold", held[0].lower()) == b"ok\n"

    out = ctl_ok(d, "--json", "release", held[0])
    assert json.loads(out) == {"id": held[0], "action": "release", "ok": True}
    q = {m["id"]: m for m in queue_json(d)}
    assert q[held[0]]["hold"] is False
    assert all(q[x]["hold"] is True for x in held[1:])

    for qid in gone:
        assert ctl_ok(d, "delete", qid) == b"ok\n"
    left = [m["id"] for m in queue_json(d)]
    assert left == [x for x in ids if x not in gone]

    # Deleting again, or an id nobody has: exit 1, the error on stderr only.
    for args in (("delete", gone[0]), ("--json", "delete", gone[0]), ("hold", gone[1])):
        r = d.ctl(*args)
        assert r.returncode == 1, (args, r.returncode, r.stdout, r.stderr)
        assert r.stdout == b""
        assert r.stderr == b"ringmailctl: no such message\n", r.stderr
    r = d.ctl("delete", "not-an-id")
    assert r.returncode == 1 and b"bad queue id" in r.stderr, r.stderr
    # A well-formed id of worker 5, which this daemon does not have.
    v = 5 << 18
    w5 = "".join(CROCKFORD[(v >> (60 - 5 * k)) & (15 if k == 0 else 31)] for k in range(13))
    assert qid_worker(w5) == 5
    r = d.ctl("release", w5)
    assert r.returncode == 1 and b"worker 5" in r.stderr, r.stderr

    # A restart on the same spool: the deleted stay deleted, the held stay held.
    assert d.stop() == 0
    d2 = spool_daemon(ringmaild, name="hrd")
    q = {m["id"]: m for m in queue_json(d2)}
    assert sorted(q) == [x for x in ids if x not in gone]
    for qid in q:
        assert q[qid]["hold"] is (qid in held[1:]), (qid, q[qid])
        assert q[qid]["size"] == sent[qid][0]
    assert d2.stop() == 0


def test_flush(ringmaild):
    d = spool_daemon(ringmaild, name="fl")
    put_messages(d, 6)
    # Nothing is deferred yet (no delivery has run): every message is due already.
    assert ctl_ok(d, "flush") == b"flushed 0\n"
    assert json.loads(ctl_ok(d, "--json", "flush")) == {"flushed": 0}
    assert ctl_ok(d, "flush", "example.test") == b"flushed 0\n"
    assert len(queue_json(d)) >= 6
    assert d.stop() == 0


def test_usage_errors(ringmaild):
    d = spool_daemon(ringmaild, name="us")
    for args in (("delete",), ("hold", "a", "b"), ("queue", "x"), ("frob",), ("flush", "a b"), ()):
        r = d.ctl(*args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert r.stdout == b""
    r = run_tool([str(RINGMAILCTL), "--help"])
    assert r.returncode == 0
    for word in (b"queue", b"flush [DOMAIN]", b"delete ID", b"hold ID", b"release ID", b"--json"):
        assert word in r.stdout, word
    # The new commands' paths under LeakSanitizer (ringmailctl's own heap at exit).
    sent = put_messages(d, 3, conns=3)
    qid = sorted(sent)[0]
    for args, rc in ((("--json", "queue"), 0), (("queue",), 0), (("flush", "example.test"), 0),
                     (("--json", "hold", qid), 0), (("release", qid), 0), (("delete", qid), 0),
                     (("delete", qid), 1), (("hold",), 2)):
        r = d.ctl(*args, leak_check=True)
        assert r.returncode == rc, (args, r.returncode, r.stderr)
        assert b"LeakSanitizer" not in r.stderr, r.stderr.decode(errors="replace")
    assert d.stop() == 0


# ---- size and lifetime -------------------------------------------------------------------------

def test_large_listing_streams_and_early_closes(ringmaild):
    """3000 messages: the listing is many times output_bytes_max and arrives
    whole; control connections that close before (or while) their reply is
    made cost nothing (the fixture checks the daemon's sanitizer report)."""
    d = spool_daemon(ringmaild, name="big", limits={"output_bytes_max": 65536})
    sent = put_messages(d, 3000, conns=30)
    assert len(sent) >= 3000

    out = ctl_ok(d, "--json", "queue")
    assert len(out) > 4 * 65536
    q = json.loads(out)
    assert [m["id"] for m in q] == sorted(sent)
    assert all(m["size"] == sent[m["id"]][0] for m in q)

    text = ctl_ok(d, "queue").decode()
    assert re.findall(r"^([0-9A-Z]{13})  age ", text, re.M) == sorted(sent)
    assert ("-- %d messages," % len(sent)) in text

    # Close right after asking, close after a first piece, half-close and read.
    for i in range(30):
        s = ctl_raw(d)
        s.sendall(b"queue json\n" if i % 2 else b"queue\n")
        if i % 3 == 1:
            s.recv(1000)
        s.close()
    # Close with the pong unread: a reset, which the daemon sees while the
    # listing's parts are still away on the workers.
    for i in range(30):
        s = ctl_raw(d)
        s.sendall(b"ping\nqueue json\n")
        time.sleep(0.002)
        s.close()
    s = ctl_raw(d)
    s.sendall(b"queue json\n")
    s.shutdown(socket.SHUT_WR)
    buf = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    s.close()
    assert buf.endswith(b"\n]\n.\n")
    assert len(json.loads(buf[:-2])) == len(sent)

    # Pipelined requests are answered in order, each whole.
    s = ctl_raw(d)
    s.sendall(b"ping\nqueue json\nping\nbogus\n")
    buf = read_replies(s, 4)
    s.close()
    assert buf.startswith(b"pong\n.\n[\n")
    assert buf.endswith(b"\n]\n.\npong\n.\nerror: unknown command 'bogus'\n.\n")

    # Many at once from threads: every listing complete.
    results = []

    def lister():
        r = d.ctl("--json", "queue", timeout=120)
        results.append((r.returncode, len(json.loads(r.stdout)) if r.returncode == 0 else r.stderr))

    threads = [threading.Thread(target=lister) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert results == [(0, len(sent))] * 6, results

    assert ctl_ok(d, "ping") == b"pong\n"
    d.wait_quiescent(timeout=15)
    assert d.stop() == 0


def test_stop_while_listings_are_in_flight(ringmaild):
    """SIGTERM while control requests are on their way between the workers:
    the daemon still exits 0, and what was posted is freed (the fixture checks
    the sanitizer report, LeakSanitizer included)."""
    d = spool_daemon(ringmaild, name="stop")
    sent = put_messages(d, 600, conns=20)
    stop = threading.Event()
    outcomes = []

    def hammer():
        while not stop.is_set():
            try:
                s = ctl_raw(d, timeout=10)
                s.sendall(b"queue json\nqueue\nflush\n")
                s.recv(4096)
                s.close()
            except OSError as e:
                outcomes.append(type(e).__name__)
                return

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert d.stop() == 0
    stop.set()
    for t in threads:
        t.join(20)
    # The queue is intact after all that.
    d2 = spool_daemon(ringmaild, name="stop")
    assert [m["id"] for m in queue_json(d2)] == sorted(sent)
    assert d2.stop() == 0
