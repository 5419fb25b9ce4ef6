"""Integration-test harness: start the real ringmaild, talk to it, check its log.

A test asks for the ``ringmaild`` fixture, a factory::

    d = ringmaild(limits={"idle_timeout_ms": 500}, listeners=[...])

which writes a configuration into the test's own temporary directory (free
loopback ports are picked by binding port 0), starts the daemon
($RINGMAILD, else build/asan/ringmaild from the repository root) with its
stderr in a file, and waits for the "started" log line.  At teardown every
daemon still running gets SIGTERM (its own pid, nothing else), 20 s to exit,
then SIGKILL; the test then fails if the daemon did not exit 0 after that
SIGTERM or if its log holds a sanitizer report or a panic.

Only the Python standard library is used (Debian's /usr/bin/python3 with
python3-pytest runs this).
"""

import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RINGMAILD = Path(os.environ.get("RINGMAILD", REPO / "build" / "asan" / "ringmaild"))
RINGMAILCTL = Path(os.environ.get("RINGMAILCTL", RINGMAILD.parent / "ringmailctl"))

START_TIMEOUT = 10.0
STOP_TIMEOUT = 20.0

# What must never appear in a daemon's log.
BAD_LOG_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",          # UBSan
    "panic: ",                 # rm_panic: a broken invariant
)

# Sanitizer options for the daemon: stop at the first error, with a report.
SAN_ENV = {
    "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "halt_on_error=1:abort_on_error=1:detect_leaks=1"),
    "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "halt_on_error=1:abort_on_error=1:print_stacktrace=1"),
}


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


_raise_nofile()


def nofile_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DEFAULT_LIMITS = {
    "idle_timeout_ms": 300000,
    "shutdown_timeout_ms": 10000,
    "output_bytes_max": 262144,
    "line_length_max": 1000,
    "buffers_per_worker": 4096,
    "buffer_size_bytes": 4096,
    # 2 workers x 8192 stays under a 20000 open-files limit.
    "connections_per_worker": 8192,
    "write_blocks_per_worker": 8192,
    # Preallocated segments are 64 MiB per worker: over 400 test daemons that is
    # tens of GiB of disk.  The crash tests turn it on (the production default).
    "spool_preallocate": 0,
}


def _value(v):
    """libconfig text of a value: lists of dicts become lists of groups."""
    if isinstance(v, list):
        return "( " + ", ".join(_value(x) for x in v) + " )"
    if isinstance(v, dict):
        return "{ " + " ".join("%s = %s;" % (k, _value(x)) for k, x in v.items()) + " }"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def render_config(d):
    """libconfig text for the daemon's settings (dict form, see Daemon)."""
    lines = []
    for key in ("workers", "log_level", "allow_root", "user", "spool_dir", "control_socket"):
        if d.get(key) is not None:
            lines.append("%s = %s;" % (key, _value(d[key])))
    for key, v in d.get("extra", {}).items():
        lines.append("%s = %s;" % (key, _value(v)))
    lim = "; ".join("%s = %s" % (k, _value(v)) for k, v in d["limits"].items())
    lines.append("limits = { %s; };" % lim)
    ls = []
    for l in d["listeners"]:
        ls.append("  { " + " ".join("%s = %s;" % (k, _value(v)) for k, v in l.items()) + " }")
    lines.append("listeners = (\n" + ",\n".join(ls) + "\n);")
    return "\n".join(lines) + "\n"


def tool_env(leak_check=False):
    env = dict(os.environ)
    env.update(SAN_ENV)
    if not leak_check:
        env["ASAN_OPTIONS"] = env["ASAN_OPTIONS"] + ":detect_leaks=0"
    return env


def run_tool(argv, leak_check=False, timeout=30):
    """Run a short-lived program (ringmaild -t, ringmailctl, ...) to completion."""
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                          env=tool_env(leak_check), timeout=timeout)


class DaemonError(AssertionError):
    pass


class Daemon:
    """One ringmaild process with its own directory, config, ports and log."""

    def __init__(self, tmpdir, name="d", workers=2, log_level="info", allow_root=True,
                 limits=None, listeners=None, user=None, extra=None):
        self.dir = Path(tmpdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "ringmail.conf"
        self.log_path = self.dir / "ringmaild.log"
        lim = dict(DEFAULT_LIMITS)
        lim.update(limits or {})
        if listeners is None:
            listeners = [{"name": "echo", "protocol": "echo", "idle_timeout_ms": 0}]
        ls = []
        for l in listeners:
            l = dict(l)
            l.setdefault("address", "127.0.0.1")
            l.setdefault("port", free_port())
            ls.append(l)
        self.settings = {
            "workers": workers,
            "log_level": log_level,
            "allow_root": allow_root,
            "user": user,
            "spool_dir": str(self.dir / "spool"),
            "control_socket": str(self.dir / "ctl.sock"),
            # Delivery is off unless a test turns it on: queued test mail must
            # stay where the test put it (and nothing looks up real domains).
            "extra": dict({"delivery": {"enabled": False}}, **(extra or {})),
            "limits": lim,
            "listeners": ls,
        }
        self.proc = None
        self.pid = None
        self.returncode = None
        self.stop_signalled = False     # SIGTERM/SIGINT sent: exit 0 expected
        self._log_file = None
        self.write_config()

    # ---- configuration ----------------------------------------------------
    @property
    def workers(self):
        return self.settings["workers"]

    @property
    def limits(self):
        return self.settings["limits"]

    def port(self, name="echo"):
        for l in self.settings["listeners"]:
            if l["name"] == name:
                return l["port"]
        raise KeyError(name)

    def write_config(self, text=None):
        """Write the settings (or raw text) to the config file, atomically."""
        if text is None:
            text = render_config(self.settings)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    # ---- process ------------------------------------------------------------
    def start(self, wait=True):
        if not RINGMAILD.exists():
            pytest.fail("%s not built (make asan)" % RINGMAILD)
        env = dict(os.environ)
        env.update(SAN_ENV)
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(RINGMAILD), "-c", str(self.config_path)],
                                     stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=env, cwd=str(self.dir))
        self.pid = self.proc.pid
        if wait:
            try:
                self.wait_log(r"ringmaild \S+ started: \d+ workers, pid %d" % self.pid,
                              timeout=START_TIMEOUT)
            except DaemonError:
                raise DaemonError("ringmaild did not start within %.0f s; log:\n%s"
                                  % (START_TIMEOUT, self.log()))
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        """Send sig to this daemon's own pid (never anything else)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.stop_signalled = True
            os.kill(self.pid, sig)

    def wait(self, timeout):
        """Wait for exit; return the exit code (negative: killed by a signal)."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait, SIGKILL after timeout.  Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.proc.kill()       # our own child, by its Popen handle
                self.proc.wait(timeout=10)
                self.returncode = self.proc.returncode
                raise DaemonError("ringmaild pid %d did not exit within %.0f s of SIGTERM; killed"
                                  % (self.pid, timeout))
        self.returncode = self.proc.returncode
        return self.returncode

    def close_log(self):
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # ---- log ----------------------------------------------------------------
    def log(self):
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def mark(self):
        """Position in the log; wait_log(..., since=mark) looks only after it."""
        return len(self.log())

    def wait_log(self, pattern, timeout=10.0, since=0):
        """Wait for a log line matching the regex; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log(), since)
            if m:
                return m
            if self.proc is not None and self.proc.poll() is not None:
                m = rx.search(self.log(), since)
                if m:
                    return m
                raise DaemonError("ringmaild exited (%s) before logging /%s/; log:\n%s"
                                  % (self.proc.returncode, pattern, self.log()[-4000:]))
            if time.monotonic() >= deadline:
                raise DaemonError("no log line /%s/ within %.1f s; log tail:\n%s"
                                  % (pattern, timeout, self.log()[-4000:]))
            time.sleep(0.02)

    def bad_log_lines(self):
        out = []
        for line in self.log().splitlines():
            if any(p in line for p in BAD_LOG_PATTERNS):
                out.append(line)
        return out

    # ---- control socket --------------------------------------------------------
    def ctl(self, *args, leak_check=False, timeout=15, via_socket=False):
        """Run ringmailctl -c CONFIG ARGS (-s SOCKET with via_socket: works while
        the config file is broken on purpose); return the CompletedProcess.

        ringmailctl is a short-lived client: these helpers check what it says,
        not its heap at exit, so LeakSanitizer is off unless asked for
        (test_short_lived_commands_leak_free checks that separately).
        """
        where = ["-s", self.settings["control_socket"]] if via_socket else ["-c", str(self.config_path)]
        return run_tool([str(RINGMAILCTL), *where, *args],
                        leak_check=leak_check, timeout=timeout)

    def stats(self):
        """ringmailctl --json stats, parsed."""
        r = self.ctl("--json", "stats", via_socket=True)
        if r.returncode != 0:
            raise DaemonError("ringmailctl --json stats: exit %d: %s"
                              % (r.returncode, r.stderr.decode(errors="replace")))
        return json.loads(r.stdout)

    def quiescent(self, stats):
        """Nothing but the stats request itself is open, and every pool is full.

        The control connection asking for stats is itself open on worker 0 and
        holds the receive buffer with its request while the reply is made, so
        worker 0 may show one connection and one buffer fewer; nothing else may.
        """
        bpw = self.limits["buffers_per_worker"]
        wpw = self.limits["write_blocks_per_worker"]
        for i, w in enumerate(stats["per_worker"]):
            slack = 1 if i == 0 else 0
            if w["connections_open"] > slack or w["buffers_free"] < bpw - slack:
                return False
            if w["buffers_free"] > bpw or w["write_blocks_free"] != wpw:
                return False
        return True

    def wait_quiescent(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if self.quiescent(s):
                return s
            if time.monotonic() >= deadline:
                raise DaemonError("not quiescent within %.1f s (want connections_open 0 but the "
                                  "stats request, buffers_free %d and write_blocks_free %d per worker): %s"
                                  % (timeout, self.limits["buffers_per_worker"],
                                     self.limits["write_blocks_per_worker"], s["per_worker"]))
            time.sleep(0.1)

    def total(self, name):
        return self.stats()["total"][name]

    def wait_stats(self, pred, timeout=10.0, what="condition"):
        """Poll stats until pred(total) is true; return the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if pred(s["total"]):
                return s
            if time.monotonic() >= deadline:
                raise DaemonError("stats never met %s within %.1f s: %s" % (what, timeout, s["total"]))
            time.sleep(0.1)


@pytest.fixture
def ringmaild(tmp_path, request):
    """Factory: ringmaild(**Daemon kwargs, start=True) -> started Daemon."""
    made = []

    def make(start=True, **kw):
        kw.setdefault("name", "d%d" % len(made))
        d = Daemon(tmp_path, **kw)
        made.append(d)
        if start:
            d.start()
        return d

    yield make

    problems = []
    for d in made:
        if d.proc is None:
            continue
        try:
            rc = d.stop()
        except DaemonError as e:
            problems.append(str(e))
            rc = d.returncode
        d.close_log()
        if d.stop_signalled and rc != 0:
            problems.append("ringmaild pid %d exited %s after SIGTERM/SIGINT (want 0)" % (d.pid, rc))
        elif not d.stop_signalled:
            problems.append("ringmaild pid %d exited by itself (%s) before the end of the test" % (d.pid, rc))
        bad = d.bad_log_lines()
        if bad:
            problems.append("ringmaild pid %d log (%s) has sanitizer/panic reports:\n  %s"
                            % (d.pid, d.log_path, "\n  ".join(bad[:20])))
        if problems:
            problems.append("log tail of pid %d:\n%s" % (d.pid, d.log()[-6000:]))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def echo_daemon(ringmaild):
    """A daemon with the default test configuration and one echo listener."""
    return ringmaild()


# ---- a blocking echo client --------------------------------------------------------

GREETING = b"+OK echo ready\r\n"
BYE = b"+OK bye\r\n"
TOO_LONG = b"-ERR line too long\r\n"
IDLE = b"-ERR idle timeout\r\n"


class EchoClient:
    def __init__(self, port, timeout=10.0, greet=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        if greet:
            self.expect(GREETING)

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out after %d of %d bytes: %r" % (len(buf), n, bytes(buf[-200:])))
            self.sock.settimeout(left)
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise AssertionError("connection closed after %d of %d bytes: %r" % (len(buf), n, bytes(buf[-200:])))
            buf += chunk
        return bytes(buf)

    def expect(self, data, timeout=10.0):
        got = self.recv_exact(len(data), timeout)
        assert got == data, "expected %r, got %r" % (data[:300], got[:300])

    def expect_eof(self, timeout=10.0):
        """The server closes: EOF (or a reset) with no further bytes."""
        self.sock.settimeout(timeout)
        try:
            extra = self.sock.recv(4096)
        except ConnectionResetError:
            return
        assert extra == b"", "expected close, got %r" % extra[:300]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# ---- test data shared by the test files ----------------------------------------------

def pattern_lines(total_bytes, seed, max_len=200):
    """Deterministic lines totalling about total_bytes (fast to build), CRLF and LF mixed."""
    rng = random.Random(seed)
    filler = bytes(range(32, 127)) * 4
    parts, size, i = [], 0, 0
    while size < total_bytes:
        n = rng.randint(0, max_len)
        line = b"%08d " % i + filler[i % 95:i % 95 + n] + (b"\r\n" if i & 1 else b"\n")
        parts.append(line)
        size += len(line)
        i += 1
    return b"".join(parts)


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


# ---- the spooltest protocol (tests/spool_sink.h) ----------------------------------------

def spool_daemon(ringmaild, name="sp", workers=2, limits=None, start=True, **kw):
    """A daemon with a spooltest listener; the same name means the same spool
    directory, so a second one recovers what the first left."""
    lim = {"spool_buffer_bytes": 2 << 20}
    lim.update(limits or {})
    return ringmaild(start=start, name=name, workers=workers, limits=lim,
                     listeners=[{"name": "spool", "protocol": "spooltest", "idle_timeout_ms": 0}], **kw)


class SinkClient:
    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        assert self.line() == b"220 spooltest ready"

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; had %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send_msg(self, data, rcpt="user@example.test", sender=None):
        head = b"MSG %d %s%s\r\n" % (len(data), rcpt.encode(), (b" " + sender.encode()) if sender else b"")
        self.sock.sendall(head + data)

    def msg(self, data, rcpt="user@example.test", sender=None):
        self.send_msg(data, rcpt, sender)
        return self.line()

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.line()
        except OSError:
            pass
        self.sock.close()
