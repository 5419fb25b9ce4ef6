"""ringmail-bench smtp (the SMTP load client) and ringmail-bench sink.

The client runs against Postfix's smtp-sink, a server it did not come with
(skipped when smtp-sink is not installed: Debian package postfix), with a small
bounded load, and its report is checked: every message answered 250 after the
data, counts that add up, and a non-zero exit with the 4xx counted when the
sink refuses the end of data.  The client and the bench's own sink are also run
against each other (pipelined DATA, BDAT, one command per write).

Every process here is started by the test on a free loopback port and stopped
by its own pid (Popen handle); every wait is bounded.
"""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import RINGMAILD, free_port, tool_env

BENCH = RINGMAILD.parent / "ringmail-bench"
SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None)

needs_smtp_sink = pytest.mark.skipif(
    SMTP_SINK is None, reason="smtp-sink is not installed (Debian package postfix; scripts/deps.sh)")


def run_bench(*args, timeout=120):
    return subprocess.run([str(BENCH), *args], capture_output=True, text=True,
                          env=tool_env(leak_check=True), timeout=timeout)


def result_line(stdout, mode="smtp"):
    """The RESULT key=value line of a report, as a dict of strings."""
    for line in stdout.splitlines():
        if line.startswith("RESULT mode=%s " % mode):
            return dict(kv.split("=", 1) for kv in line.split()[1:])
    raise AssertionError("no RESULT line in:\n" + stdout)


def wait_listening(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError("server exited (%s) before listening on %d" % (proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("nothing listens on 127.0.0.1:%d after %.0f s" % (port, timeout))


def stop(proc, timeout=10.0):
    """SIGTERM to our own child, then SIGKILL; returns its stdout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is None or proc.stdout.closed:
        return ""
    out = proc.stdout.read()
    proc.stdout.close()
    return out


@pytest.fixture
def smtp_sink():
    """Factory: smtp_sink(*flags) -> port of a new smtp-sink on 127.0.0.1."""
    started = []

    def start(*flags):
        port = free_port()
        argv = [SMTP_SINK]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]    # required when run as root
        argv += ["-4", "-m", "100", *flags, "127.0.0.1:%d" % port, "100"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        wait_listening(port, proc)
        return port

    yield start
    for proc in started:
        stop(proc)


@pytest.fixture
def bench_sink():
    """Factory: bench_sink() -> (port, Popen) of ringmail-bench sink on 127.0.0.1."""
    started = []

    def start():
        port = free_port()
        proc = subprocess.Popen([str(BENCH), "sink", "--listen", "127.0.0.1:%d" % port, "--workers", "2",
                                 "--duration", "120"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=tool_env(leak_check=True))
        started.append(proc)
        wait_listening(port, proc)
        return port, proc

    yield start
    for proc in started:
        stop(proc)


def check_all_accepted(r, messages, sessions, rcpts=1):
    assert r["pass"] == "1", r
    assert int(r["ok"]) == messages, r
    for k in ("msg_4xx", "msg_5xx", "msg_failed", "not_sent", "replies_4xx", "replies_5xx",
              "sessions_failed", "rcpt_refused"):
        assert r[k] == "0", (k, r)
    assert int(r["sessions_ok"]) == sessions, r
    assert int(r["rcpt_ok"]) == messages * rcpts, r
    assert float(r["msgs_per_s"]) > 0, r
    assert 0 < int(r["p50_us"]) <= int(r["p90_us"]) <= int(r["p99_us"]) <= int(r["max_us"]), r


@needs_smtp_sink
@pytest.mark.parametrize("size", [1024, 65536])
def test_smtp_against_smtp_sink(smtp_sink, size):
    port = smtp_sink()
    proc = run_bench("smtp", "--port", str(port), "--conns", "4", "--messages", "200",
                     "--size", str(size), "--time-limit", "60", "--timeout", "20000")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = result_line(proc.stdout)
    check_all_accepted(r, 200, 4)
    assert int(r["size"]) == size, r
    # smtp-sink offers PIPELINING unless told not to: every session used it.
    assert r["offered_pipelining"] == "4", r
    assert "messages          250 200  4xx 0  5xx 0  failed 0  not sent 0  (of 200)" in proc.stdout


@needs_smtp_sink
def test_smtp_without_pipelining_and_several_recipients(smtp_sink):
    port = smtp_sink("-p")      # PIPELINING not offered: one command per write
    proc = run_bench("smtp", "--port", str(port), "--conns", "3", "--messages", "30",
                     "--size", "2000", "--rcpts", "3", "--time-limit", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = result_line(proc.stdout)
    check_all_accepted(r, 30, 3, rcpts=3)
    assert r["offered_pipelining"] == "0", r


@needs_smtp_sink
def test_smtp_4xx_at_end_of_data_fails_the_run(smtp_sink):
    port = smtp_sink("-r", ".")    # every end of data gets 450 4.3.0
    proc = run_bench("smtp", "--port", str(port), "--conns", "4", "--messages", "40",
                     "--size", "1024", "--time-limit", "60")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    r = result_line(proc.stdout)
    assert r["pass"] == "0" and r["ok"] == "0", r
    assert r["msg_4xx"] == "40" and r["replies_4xx"] == "40", r
    assert r["msg_5xx"] == "0" and r["msg_failed"] == "0" and r["not_sent"] == "0", r
    # Refused messages do not end the session: every session still said QUIT.
    assert r["sessions_ok"] == "4", r
    assert "4xx 40" in proc.stdout and "refused at end of data" in proc.stdout
    assert "450 4.3.0" in proc.stderr       # the first refusals are logged with their text


@needs_smtp_sink
def test_smtp_5xx_at_mail_and_421_are_counted(smtp_sink):
    port = smtp_sink("-f", "MAIL")
    proc = run_bench("smtp", "--port", str(port), "--conns", "2", "--messages", "10",
                     "--time-limit", "60")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    r = result_line(proc.stdout)
    assert r["msg_5xx"] == "10" and r["ok"] == "0", r

    port = smtp_sink("-Q", "DATA")     # 421 and a close after DATA
    proc = run_bench("smtp", "--port", str(port), "--conns", "2", "--messages", "10",
                     "--time-limit", "60")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    r = result_line(proc.stdout)
    # One message per session is refused by the 421; the rest were never sent.
    assert r["msg_4xx"] == "2" and r["not_sent"] == "8" and r["sessions_failed"] == "2", r


@pytest.mark.parametrize("mode", [[], ["--bdat"], ["--no-pipelining"], ["--no-pipelining", "--bdat"]])
def test_smtp_against_bench_sink(bench_sink, mode):
    port, sink = bench_sink()
    proc = run_bench("smtp", "--port", str(port), "--conns", "8", "--messages", "400",
                     "--size", "20000", "--rcpts", "2", "--time-limit", "60", *mode)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = result_line(proc.stdout)
    check_all_accepted(r, 400, 8, rcpts=2)
    assert r["offered_chunking"] == "8" and r["offered_pipelining"] == "8", r
    out = stop(sink)
    s = result_line(out, mode="sink")
    assert s["messages"] == "400" and s["refused"] == "0", out


def test_sink_refuses_a_taken_port_and_non_loopback():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_bench("sink", "--listen", "127.0.0.1:%d" % port, "--duration", "5", timeout=20)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "in use" in proc.stderr
    proc = run_bench("sink", "--listen", "10.0.0.1:2525", "--duration", "5", timeout=20)
    assert proc.returncode == 2 and "only loopback" in proc.stderr, proc.stderr


def test_smtp_refuses_non_loopback_and_bad_addresses():
    proc = run_bench("smtp", "--host", "192.0.2.1", "--port", "25", timeout=10)
    assert proc.returncode == 2 and "only loopback" in proc.stderr, proc.stderr
    proc = run_bench("smtp", "--port", "25", "--to", "no-domain", timeout=10)
    assert proc.returncode == 2, proc.stderr
    proc = run_bench("smtp", "--port", "25", "--lines", "3", timeout=10)
    assert proc.returncode == 2, proc.stderr
