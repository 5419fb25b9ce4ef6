"""The spool's crash promise through SMTP: a message whose "250 2.0.0 Ok:
queued as ID" reached the client is, after kill -9 at any moment and a
restart, in the queue exactly once with the content the client sent.

Several rounds on one spool: concurrent SMTP clients (raw sockets,
PIPELINING: MAIL, RCPT and DATA in one send) send messages of random sizes
(100 B .. 200 KB) whose content carries a unique id and whose one recipient
names the attempt (r<round>-t<thread>-<n>@relay.test); the daemon is killed
with SIGKILL (its own pid) at a random moment of the load, the queue is read
back with the spool's own recovery (build/tools/spool_dump, through
test_spool's helpers), and the next round's daemon starts on the same spool.

Checked after every kill, over every round so far:
  - every acknowledged queue id is queued, once, with its recipient and
    sender, and the size of the client's content plus our Received: header;
  - no attempt is queued twice (under two ids);
  - anything queued that was never acknowledged is a whole message that some
    client sent (checked byte for byte), never a part;
  - for a sample of the acknowledged ones, the content after the Received:
    header is byte-identical (sha256) to what the client sent.
and after each restart, that the daemon's recovery finds the same number.
"""
import hashlib
import random
import re
import threading
import time

from smtputil import SmtpConn, dot_stuff, smtp_daemon, spool_content
from test_spool import dump_all, kill_9, recovered_total

WORKERS = 2
ROUNDS = 4
THREADS = 16
LOAD_S = (0.8, 2.0)           # the kill comes this long after the load started
SAMPLE_PER_ROUND = 15
HOST = b"mx.test.invalid"
HELO = b"crash.example"
SENDER = "crash@example.org"

RECEIVED_RX = re.compile(
    rb"Received: from crash\.example \(\[127\.0\.0\.1\]\)\r\n"
    rb"\tby mx\.test\.invalid \(ringmail\) with ESMTP id ([0-9A-Z]{13})\r\n"
    rb"\tfor <([^>]+)>; [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n")
DATE_LEN = len(b"Wed, 02 Dec 2026 03:31:34 +0000")

PRINTABLE = bytes(range(33, 127)) + b" " * 10
TRANSLATE = bytes(PRINTABLE[i % len(PRINTABLE)] for i in range(256))


def rcpt_of(rnd, idx, n):
    return "r%d-t%d-%d@relay.test" % (rnd, idx, n)


def content_of(rcpt):
    """The content of attempt rcpt, rebuilt from its name (deterministic): CR LF lines of at
    most 998 octets, some starting with '.', the unique id first."""
    rng = random.Random(rcpt)
    size = rng.randint(100, 200000)
    head = b"X-Test-Id: %s\r\nSubject: crash test\r\n\r\n" % rcpt.encode()
    raw = rng.randbytes(size).translate(TRANSLATE)
    parts, pos = [head], 0
    total = len(head)
    while total < size:
        n = min(rng.randint(0, 998), size - total)
        line = raw[pos:pos + n]
        if n and rng.random() < 0.05:
            line = b"." + line[1:]
        pos += n
        parts.append(line + b"\r\n")
        total += n + 2
    return b"".join(parts)


def received_len(qid, rcpt):
    return len(b"Received: from %s ([127.0.0.1])\r\n\tby %s (ringmail) with ESMTP id %s\r\n\tfor <%s>; "
               % (HELO, HOST, qid.encode(), rcpt.encode())) + DATE_LEN + 2


def client(port, rnd, idx, acked, attempted, stop, errors, lock):
    """Send messages one after another until stopped or the daemon dies."""
    try:
        c = SmtpConn(port, timeout=20)
        c.ehlo(HELO)
    except (OSError, EOFError, AssertionError):
        return
    try:
        for n in range(10000):
            if stop.is_set():
                return
            rcpt = rcpt_of(rnd, idx, n)
            data = content_of(rcpt)
            with lock:
                attempted.add(rcpt)
            try:
                c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (SENDER.encode(), rcpt.encode()))
                codes = [c.reply().code for _ in range(3)]
                if codes != [250, 250, 354]:
                    errors.append((rcpt, codes))
                    return
                c.send(dot_stuff(data) + b".\r\n")
                r = c.reply()
            except (OSError, EOFError):
                return          # killed: an unanswered message is not ours to count
            except AssertionError as e:
                if stop.is_set():
                    return
                errors.append((rcpt, str(e)))
                return
            m = re.fullmatch(rb"250 2\.0\.0 Ok: queued as ([0-9A-Z]{13})", r.lines[-1])
            if m:
                with lock:
                    acked[m.group(1).decode()] = rcpt
            elif r.code != 452:
                errors.append((rcpt, r))
                return
    finally:
        c.close()


def check_body(d, qid, rcpt):
    held = spool_content(d, qid)
    m = RECEIVED_RX.match(held)
    assert m, "%s: no Received: header of ours first: %r" % (qid, held[:300])
    assert m.group(1).decode() == qid and m.group(2).decode() == rcpt, (qid, rcpt, held[:300])
    want = content_of(rcpt)
    body = held[m.end():]
    assert len(held) == received_len(qid, rcpt) + len(want), (qid, len(held), received_len(qid, rcpt), len(want))
    assert hashlib.sha256(body).digest() == hashlib.sha256(want).digest(), \
        "%s (%s): content differs from what was sent (%d vs %d bytes)" % (qid, rcpt, len(body), len(want))


def check_queue(d, acked_all, attempted_all, rng, rnd):
    """The queue on disk against what the clients saw; returns (queued, unacknowledged queued)."""
    q = dump_all(d.dir / "spool", WORKERS)
    by_rcpt = {}
    for qid, (size, h, sender, rcpts) in q.items():
        assert rcpts in attempted_all, "%s: queued for %r, which no client sent" % (qid, rcpts)
        assert rcpts not in by_rcpt, "attempt %s queued twice: %s and %s" % (rcpts, by_rcpt[rcpts], qid)
        by_rcpt[rcpts] = qid
        assert sender == SENDER, (qid, sender)
    missing = [qid for qid in acked_all if qid not in q]
    assert not missing, "round %d: %d of %d acknowledged messages lost, e.g. %s" % (
        rnd, len(missing), len(acked_all), [(k, acked_all[k]) for k in missing[:3]])
    for qid, rcpt in acked_all.items():
        size = q[qid][0]
        assert q[qid][3] == rcpt, (qid, q[qid], rcpt)
        want = received_len(qid, rcpt) + len(content_of(rcpt))
        assert size == want, "%s (%s): queued size %d, sent %d with the header" % (qid, rcpt, size, want)
    # Never acknowledged but queued: cut off between the commit and the reply.  Whole, or absent.
    unacked = [qid for qid in q if qid not in acked_all]
    for qid in unacked:
        check_body(d, qid, q[qid][3])
    for qid in rng.sample(sorted(acked_all), min(SAMPLE_PER_ROUND, len(acked_all))):
        check_body(d, qid, acked_all[qid])
    return len(q), len(unacked)


def test_kill_9_mid_smtp_never_loses_an_acknowledged_message(ringmaild, tmp_path):
    rng = random.Random(20261202)
    acked_all, attempted_all = {}, set()
    report = []
    expect_recovered = 0
    for rnd in range(ROUNDS):
        d = smtp_daemon(ringmaild, tmp_path, name="crash", workers=WORKERS,
                        limits={"spool_segment_bytes_max": 4 << 20, "smtp_connections_per_client": 0,
                                "spool_preallocate": 1})
        if rnd > 0:
            assert recovered_total(d, WORKERS) == expect_recovered, d.log()[-3000:]
        port = d.port("plain")
        acked, attempted, errors = {}, set(), []
        stop, lock = threading.Event(), threading.Lock()
        threads = [threading.Thread(target=client, args=(port, rnd, i, acked, attempted, stop, errors, lock),
                                    daemon=True) for i in range(THREADS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(rng.uniform(*LOAD_S))
        kill_9(d)
        stop.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads), "a client thread did not end"
        assert not errors, errors[:5]
        assert acked, "round %d: nothing was acknowledged in %.1f s" % (rnd, time.monotonic() - t0)
        for qid in acked:
            assert qid not in acked_all, "queue id %s given twice" % qid
        acked_all.update(acked)
        attempted_all |= attempted
        queued, unacked = check_queue(d, acked_all, attempted_all, rng, rnd)
        expect_recovered = queued
        report.append("round %d: %d sent, %d acknowledged, %d queued in all, %d queued unacknowledged"
                      % (rnd, len(attempted), len(acked), queued, unacked))
    # The last restart recovers them all, serves, and stops cleanly with the queue intact.
    d = smtp_daemon(ringmaild, tmp_path, name="crash", workers=WORKERS)
    assert recovered_total(d, WORKERS) == expect_recovered
    with SmtpConn(d.port("plain")) as c:
        c.ehlo(HELO)
        c.cmd(b"NOOP", 250)
    assert d.stop() == 0
    q = dump_all(d.dir / "spool", WORKERS)
    assert all(qid in q for qid in acked_all)
    print("\n".join(report + ["total: %d acknowledged, %d queued" % (len(acked_all), len(q))]))
