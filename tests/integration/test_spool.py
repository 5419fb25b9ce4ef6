"""The durable spool through real connections (the "spooltest" protocol,
tests/spool_sink.h): group commit, recovery after kill -9, torn tails,
segment deletion, and what the log says.

The crash test is the spool's promise: a message whose "250 <id> <hash>"
reached the client is, after kill -9 at any moment and a restart, in the
queue exactly once with the same content.  The queue is read back with the
spool's own recovery and content reader (build/tools/spool_dump), which
prints every queued message with the xxh3-64 of the bytes it reads from the
segments; the client's own hash of what it sent must match.
"""
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import REPO, SinkClient, spool_daemon, tool_env

SPOOL_DUMP = REPO / "build" / "tools" / "spool_dump"


def xxh3_64(data):
    """xxh3-64 of data, computed by the spool_dump tool (Python has no xxhash here)."""
    r = subprocess.run([str(SPOOL_DUMP), "--hash"], input=data, capture_output=True,
                       env=tool_env(), timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode().strip()


def recovered_total(d, workers, timeout=30):
    """Wait for every worker's recovery line; the sum of what they recovered."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(r"spool \S+/w\d+: recovered (\d+) queued messages", d.log())
        if len(found) >= workers:
            return sum(int(x) for x in found)
        assert time.monotonic() < deadline, "recovery lines: %s; log:\n%s" % (found, d.log()[-3000:])
        time.sleep(0.05)


def kill_9(d):
    """SIGKILL our own daemon; it then counts as ended for the fixture."""
    os.kill(d.pid, signal.SIGKILL)
    d.proc.wait(10)
    assert not d.bad_log_lines(), d.bad_log_lines()[:10]
    d.close_log()
    d.proc = None


def dump(spool_dir, worker):
    """Recovered queue of one worker's spool: {qid: (size, hash, sender, rcpts)}."""
    r = subprocess.run([str(SPOOL_DUMP), str(spool_dir), str(worker)], capture_output=True,
                       env=tool_env(), timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = {}
    for line in r.stdout.decode().splitlines():
        if not line.startswith("msg "):
            continue
        _, qid, size, h, sender, rcpts = line.split(" ", 5)
        assert qid not in out, "queue id %s twice in the queue" % qid
        out[qid] = (int(size), h, sender, rcpts)
    return out, r.stdout.decode()


def dump_all(spool_dir, workers):
    allq = {}
    for w in range(workers):
        q, _ = dump(spool_dir, w)
        for k in q:
            assert k not in allq, "queue id %s in two workers' spools" % k
        allq.update(q)
    return allq


def payload(rng, size):
    return bytes(rng.getrandbits(8) for _ in range(size)) if size < 4096 else \
        rng.randbytes(size)


# ---- basic -----------------------------------------------------------------------------

def test_commit_then_recover_after_clean_stop(ringmaild):
    d = spool_daemon(ringmaild)
    rng = random.Random(1)
    sent = {}
    c = SinkClient(d.port("spool"))
    for size in (1, 100, 4095, 4096, 70000, 3 << 20):
        data = payload(rng, size)
        reply = c.msg(data, rcpt="r%d@example.test" % size)
        m = re.fullmatch(rb"250 ([0-9A-Z]{13}) ([0-9a-f]{16})", reply)
        assert m, reply
        assert m.group(2).decode() == xxh3_64(data)
        sent[m.group(1).decode()] = (size, m.group(2).decode(), "r%d@example.test" % size)
    c.close()
    assert "queued" in d.log()
    assert d.stop() == 0
    q = dump_all(d.dir / "spool", 2)
    assert set(q) == set(sent)
    for qid, (size, h, rcpt) in sent.items():
        assert q[qid][0] == size and q[qid][1] == h and q[qid][3] == rcpt
    # A restart recovers the same queue, and says so.
    d2 = spool_daemon(ringmaild)
    assert recovered_total(d2, 2) == len(sent), d2.log()
    assert d2.stop() == 0


def test_group_commit_shares_fdatasync(ringmaild):
    """100 clients committing at once cost far fewer than 100 fdatasyncs."""
    d = spool_daemon(ringmaild, workers=1)
    port = d.port("spool")
    clients = [SinkClient(port) for _ in range(100)]
    before = d.stats()["total"]
    data = b"x" * 1000
    for c in clients:
        c.send_msg(data)
    for c in clients:
        assert c.line().startswith(b"250 ")
    after = d.stats()["total"]
    commits = after["spool_committed"] - before["spool_committed"]
    syncs = after["spool_syncs"] - before["spool_syncs"]
    assert commits == 100
    assert syncs <= 20, (commits, syncs)
    for c in clients:
        c.close()
    assert d.stop() == 0


def test_deliver_empties_queue_and_deletes_segments(ringmaild):
    d = spool_daemon(ringmaild, workers=1, limits={"spool_segment_bytes_max": 4 << 20})
    c = SinkClient(d.port("spool"))
    ids = []
    for i in range(12):
        r = c.msg(b"y" * (1 << 20))
        assert r.startswith(b"250 "), r
        ids.append(r.split()[1].decode())
    segs = sorted((d.dir / "spool" / "w00").glob("*.seg"))
    assert len(segs) >= 3, segs
    for qid in ids:
        c.sock.sendall(b"DELIVER %s\r\n" % qid.encode())
        assert c.line() == b"250 ok"
    c.sock.sendall(b"DELIVER %s\r\n" % ids[0].encode())
    assert c.line() == b"550 no such message"
    # One more commit moves past the records that made them final; old segments go.
    assert c.msg(b"z" * 10).startswith(b"250 ")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = sorted((d.dir / "spool" / "w00").glob("*.seg"))
        if len(left) <= 2:
            break
        time.sleep(0.1)
    assert len(left) <= 2, left
    c.close()
    assert d.stop() == 0
    q = dump_all(d.dir / "spool", 1)
    assert len(q) == 1


def test_client_gone_mid_message_is_not_queued(ringmaild):
    d = spool_daemon(ringmaild, workers=1)
    c = SinkClient(d.port("spool"))
    c.sock.sendall(b"MSG 100000 a@example.test\r\n" + b"q" * 50000)
    time.sleep(0.3)
    c.sock.close()
    c2 = SinkClient(d.port("spool"))
    assert c2.msg(b"kept").startswith(b"250 ")
    c2.close()
    assert d.stop() == 0
    q = dump_all(d.dir / "spool", 1)
    assert len(q) == 1 and list(q.values())[0][0] == 4


def test_half_close_after_message_still_gets_its_reply(ringmaild):
    """printf 'MSG ...' | nc: the client shuts its sending side right after the
    content; the reply still comes (once durable), then the close."""
    d = spool_daemon(ringmaild, workers=1)
    c = SinkClient(d.port("spool"))
    c.send_msg(b"hello")
    c.sock.shutdown(socket.SHUT_WR)
    assert re.fullmatch(rb"250 [0-9A-Z]{13} [0-9a-f]{16}", c.line())
    assert c.sock.recv(1) == b""
    c.sock.close()


def test_torn_tail_is_never_acknowledged_data(ringmaild):
    """Garbage and a cut-off record after the last commit: recovery keeps the
    committed messages and logs the torn tail.  (Segments that grow as they
    are written: a preallocated one ends in zeros, the crash tests' case.)"""
    d = spool_daemon(ringmaild, workers=1, limits={"spool_preallocate": 0})
    c = SinkClient(d.port("spool"))
    assert c.msg(b"a" * 5000).startswith(b"250 ")
    c.close()
    assert d.stop() == 0
    seg = sorted((d.dir / "spool" / "w00").glob("*.seg"))[-1]
    with open(seg, "ab") as f:
        f.write(b"RMR1\x01\x00\x00\x00\xff\x00\x00\x00")     # a header promising more
    d2 = spool_daemon(ringmaild, workers=1, limits={"spool_preallocate": 0})
    d2.wait_log(r"torn tail", timeout=10)
    assert recovered_total(d2, 1) == 1
    assert d2.stop() == 0


def test_foreign_worker_spool_refuses_start(ringmaild):
    d = spool_daemon(ringmaild, workers=2)
    c = SinkClient(d.port("spool"))
    c.close()
    assert d.stop() == 0
    w5 = d.dir / "spool" / "w05"
    w5.mkdir()
    (w5 / "0000000000000001.seg").write_bytes(b"")
    d2 = spool_daemon(ringmaild, workers=2, start=False)
    d2.start(wait=False)
    assert d2.wait(20) == 1
    assert "holds segments of worker 5 but workers = 2" in d2.log()
    d2.proc = None


# ---- crash ----------------------------------------------------------------------------

def writer(port, idx, acked, stop, errors, seed):
    """Send messages one after another; record every 250 with its hash."""
    rng = random.Random(seed)
    try:
        c = SinkClient(port, timeout=20)
    except OSError:
        return
    n = 0
    try:
        while not stop.is_set() and n < 10000:
            size = rng.choice((1, 300, 1000, 4096, 9000, 65536, 200000))
            data = rng.randbytes(size)
            try:
                c.send_msg(data, rcpt="w%d-%d@example.test" % (idx, n))
                reply = c.line()
            except (OSError, EOFError):
                return          # the daemon was killed: whatever was not answered is not ours
            m = re.fullmatch(rb"250 ([0-9A-Z]{13}) ([0-9a-f]{16})", reply)
            if m:
                acked.append((m.group(1).decode(), size, m.group(2).decode(),
                               "w%d-%d@example.test" % (idx, n)))
            elif not reply.startswith(b"452 "):
                errors.append(reply)
            n += 1
    finally:
        c.sock.close()


def test_kill_9_never_loses_an_acknowledged_message(ringmaild):
    """Many concurrent writers, kill -9 at random moments over several rounds:
    after each restart, every acknowledged message is queued exactly once with
    its content intact (hash of the bytes read back from the segments)."""
    rng = random.Random(20261201)
    acked_all = {}
    workers = 2
    rounds = 5
    for rnd in range(rounds):
        d = spool_daemon(ringmaild, workers=workers, limits={"spool_segment_bytes_max": 4 << 20,
                                                             "spool_preallocate": 1})
        port = d.port("spool")
        acked, errors = [], []
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(port, i, acked, stop, errors, rnd * 1000 + i),
                                    daemon=True) for i in range(24)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.5, 2.5))
        kill_9(d)
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors[:5]
        assert len(acked) > 0, "round %d: nothing was acknowledged" % rnd
        for qid, size, h, rcpt in acked:
            assert qid not in acked_all
            acked_all[qid] = (size, h, rcpt)
        q = dump_all(d.dir / "spool", workers)
        missing = [k for k in acked_all if k not in q]
        assert not missing, "round %d: %d acknowledged messages lost, e.g. %s" % (rnd, len(missing), missing[:3])
        for qid, (size, h, rcpt) in acked_all.items():
            assert q[qid][0] == size and q[qid][1] == h and q[qid][3] == rcpt, (qid, q[qid], size, h)
        # Extra messages are fine: cut off before their reply, never acknowledged.
    # The last restart serves again and recovers them all.
    d = spool_daemon(ringmaild, workers=workers)
    assert recovered_total(d, workers) >= len(acked_all)
    assert d.stop() == 0


# ---- disk full ------------------------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    """A 24 MiB tmpfs of our own, mounted for the test and unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "smallfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_answers_452_and_recovers(ringmaild, small_fs):
    """A full disk: the session gets 452 4.3.1, nothing unsynced is acknowledged,
    other sessions keep being served, and mail is accepted again once space
    returns.  Everything acknowledged survives, intact."""
    d = spool_daemon(ringmaild, workers=1, start=False, limits={"spool_segment_bytes_max": 4 << 20})
    d.settings["spool_dir"] = str(small_fs / "spool")
    d.write_config()
    d.start()
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (12 << 20))
    rng = random.Random(7)
    c = SinkClient(d.port("spool"))
    acked, refused = {}, 0
    for i in range(40):
        data = rng.randbytes(1 << 20)
        r = c.msg(data, rcpt="full%d@example.test" % i)
        if r.startswith(b"250 "):
            acked[r.split()[1].decode()] = (len(data), r.split()[2].decode())
        else:
            assert r.startswith(b"452 4.3.1 "), r
            refused += 1
            if refused >= 3:
                break
    assert refused >= 3 and acked, (refused, len(acked))
    assert re.search(r"spool: (short write|write of segment|cannot create)", d.log()), d.log()[-2000:]
    # Failed attempts leave no file behind each (a segment that never synced is dropped).
    assert len(list((small_fs / "spool" / "w00").glob("*.seg"))) <= 4
    # The daemon still answers other requests and other sessions.
    assert d.stats()["total"]["spool_write_errors"] >= 1
    c2 = SinkClient(d.port("spool"))
    r = c2.msg(b"x" * 100)
    assert r.split()[0] in (b"250", b"452"), r
    if r.startswith(b"250 "):
        acked[r.split()[1].decode()] = (100, r.split()[2].decode())
    # Space comes back: within a few retry intervals new mail is taken again.
    filler.unlink()
    deadline = time.monotonic() + 10
    while True:
        data = rng.randbytes(5000)
        r = c.msg(data, rcpt="after@example.test")
        if r.startswith(b"250 "):
            acked[r.split()[1].decode()] = (len(data), r.split()[2].decode())
            break
        assert r.startswith(b"452 "), r
        assert time.monotonic() < deadline, "still refused after space came back"
        time.sleep(0.3)
    c.close()
    c2.close()
    d.stop()
    q = dump_all(small_fs / "spool", 1)
    for qid, (size, h) in acked.items():
        assert qid in q and q[qid][0] == size and q[qid][1] == h, qid
    # ... and nothing that was answered 452 comes back: the failed segment's
    # tail after its last completed sync was cut off.
    assert set(q) == set(acked), sorted(set(q) - set(acked))


def test_disk_full_with_concurrent_writers_brings_back_no_refused_message(ringmaild, small_fs):
    """Several writers share each sync when the disk fills: the flight that
    fails holds whole messages in the part that was written.  They were
    answered 452, so after a restart they must not be in the queue (the
    client will send them again); every 250 must be."""
    d = spool_daemon(ringmaild, workers=1, start=False, limits={"spool_segment_bytes_max": 64 << 20})
    d.settings["spool_dir"] = str(small_fs / "spool")
    d.write_config()
    d.start()
    (small_fs / "filler").write_bytes(b"\0" * (18 << 20))
    port = d.port("spool")
    acked, refused, errors = {}, [], []
    lock = threading.Lock()

    def one(idx):
        rng = random.Random(idx)
        c = SinkClient(port)
        for n in range(100):
            data = rng.randbytes(rng.choice((100000, 200000, 300000)))
            r = c.msg(data, rcpt="c%d-%d@example.test" % (idx, n))
            with lock:
                if r.startswith(b"250 "):
                    acked[r.split()[1].decode()] = (len(data), r.split()[2].decode())
                elif r.startswith(b"452 "):
                    refused.append(r)
                    break
                else:
                    errors.append(r)
                    break
        c.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert refused and acked, (len(refused), len(acked))
    d.stop()
    q = dump_all(small_fs / "spool", 1)
    for qid, (size, h) in acked.items():
        assert qid in q and q[qid][0] == size and q[qid][1] == h, qid
    assert set(q) == set(acked), "%d refused messages came back" % len(set(q) - set(acked))
