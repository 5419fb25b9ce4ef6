"""Outbound delivery to a real receiving MX: a private Postfix instance.

test_delivery.py checks delivery against aiosmtpd sinks that do what a test
tells them; here the MX is Debian's Postfix, with its own smtpd (PIPELINING,
CHUNKING, DSN, 8BITMIME, STARTTLS), its own replies for unknown users and
access-map deferrals, and virtual(8) writing what it accepted into Maildir
files.  What arrives in those files is what Postfix really took from us.

The world: one dnsmasq per module with MX records for pf.test and vf.test
pointing at mx.pf.test, whose A record is 127.0.0.1; Postfix's smtpd listens
on 127.0.0.1 on a free port, which is ringmaild's delivery.port (as the
other delivery tests point ringmaild at their sinks).  Each test starts its
own Postfix (the postfix fixture) before its ringmaild, so ringmaild stops
first and Postfix sees every session end with QUIT.

The instance lives in a directory of its own under /tmp, not under tmp_path:
Postfix's daemons run as user postfix and must traverse every directory
above their queue, data and Maildir directories, but every pytest session
that starts (anyone's, concurrently) puts /tmp/pytest-of-root back to 0700.
Its maillog and main.cf are copied into tmp_path at teardown, and the
directory is removed.  Nothing reaches outside: smtpd on 127.0.0.1 only, no
DNS in Postfix, every non-virtual destination is the error transport.  The
system's /etc/postfix instance is never touched; only the master pid this
fixture recorded is ever signalled.

test_message_larger_than_output_bytes_max found a ringmaild bug (fixed):
content over limits.output_bytes_max - 32 KiB never left, because the content
pump stopped for room without asking to be told when output drained.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port
from dnsserver import Dnsmasq
from smtputil import SmtpConn, dot_stuff, queue_id, spool_messages
from test_delivery import (make_ca_and_leaf, outcomes, parse_report, queue, relay_daemon, wait_gone,
                           wait_outcome, wait_queue)

POSTFIX = "/usr/sbin/postfix"
POSTFIX_DAEMONS = "/usr/lib/postfix/sbin"
_missing = [p for p in (POSTFIX, "/usr/sbin/postconf", os.path.join(POSTFIX_DAEMONS, "master"),
                        os.path.join(POSTFIX_DAEMONS, "smtpd"), os.path.join(POSTFIX_DAEMONS, "virtual"))
            if not os.access(p, os.X_OK)]
if _missing:
    pytest.skip("Postfix is not installed (scripts/deps.sh installs it): no %s" % ", ".join(_missing),
                allow_module_level=True)

MX_HOST = "mx.pf.test"
MX = [("pf.test", MX_HOST, 10), ("vf.test", MX_HOST, 10)]
SENDER = "alice@pf.test"          # bounces come back through Postfix into alice's Maildir
# Every mailbox any test uses; a recipient not listed is unknown to Postfix (550 5.1.1).
MAILBOXES = ["alice@pf.test", "u@pf.test", "good@pf.test", "ok@pf.test", "later@pf.test", "w@vf.test"] + \
    ["m%d@pf.test" % i for i in range(5)]

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# What Postfix's smtpd logs when a client gets the protocol wrong or leaves
# without QUIT: none of it may appear in any test (checked at teardown).
PF_PROTOCOL_PROBLEMS = ("improper command pipelining", "non-SMTP command", "lost connection",
                        "timeout after", "bare <LF>", "fatal:", "panic:")


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = Dnsmasq(tmp_path_factory.mktemp("dns"), mx=MX, hosts=[(MX_HOST, "127.0.0.1")])
    d.start()
    yield d
    d.stop()


# ---- the private Postfix instance ----------------------------------------------------------------

# Every service Postfix itself needs (Debian's master.cf.proto without its pipe
# examples), chroot off: the queue is not under /var/spool/postfix.  postlog is
# what makes maillog_file work.  The smtpd line is added with its address.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """One private Postfix instance: config, queue, data, Maildirs and log
    under its own directory; smtpd on 127.0.0.1:port; virtual(8) delivers
    mailboxes (addresses) into Maildirs; access maps the recipient access
    table (address -> action, e.g. "450 4.2.0 try later")."""

    def __init__(self, tmp_path, mailboxes=MAILBOXES, tls_cert=None, tls_key=None, access=None):
        self.tmp_path = Path(tmp_path)
        self.base = Path(tempfile.mkdtemp(prefix="ringmail-pf-", dir="/tmp"))
        os.chmod(self.base, 0o755)
        self.etc, self.queue_dir = self.base / "etc", self.base / "queue"
        self.data, self.mail = self.base / "data", self.base / "mail"
        self.maillog_path = self.base / "maillog"
        self.port = free_port()
        self.master_pid = None
        self.mark = 0                          # log() starts here: after the start-up probe
        self.tolerate = ()                     # protocol_problems() lines a test expects
        self.mailboxes = list(mailboxes)
        pw = pwd.getpwnam("postfix")
        self.etc.mkdir(mode=0o755)
        self.queue_dir.mkdir(mode=0o755)       # root's; postfix start makes its subdirectories
        for d in (self.data, self.mail):       # Postfix's own: tlsmgr's PRNG state; virtual(8) as static uid
            d.mkdir(mode=0o700)
            os.chown(d, pw.pw_uid, pw.pw_gid)
        vmap = "".join("%s %s/%s/\n" % (a, a.split("@")[1], a.split("@")[0]) for a in self.mailboxes)
        (self.etc / "vmailbox").write_text(vmap)      # the trailing / means Maildir
        self.set_access(access or {})
        domains = sorted({a.split("@")[1] for a in self.mailboxes})
        main = [
            "compatibility_level = 3.6",
            "queue_directory = %s" % self.queue_dir,
            "data_directory = %s" % self.data,
            "command_directory = /usr/sbin",
            "daemon_directory = %s" % POSTFIX_DAEMONS,
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "myhostname = %s" % MX_HOST,
            "mydomain = pf.test",
            "myorigin = $myhostname",
            "mydestination =",
            "local_recipient_maps =",
            "alias_maps =",
            "alias_database =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            # Nothing leaves: no DNS, no reverse lookup of the client, and any
            # destination but the virtual domains fails at once.
            "smtp_dns_support_level = disabled",
            "smtpd_peername_lookup = no",
            "default_transport = error:this test instance delivers nowhere else",
            "relay_transport = error:this test instance relays nowhere",
            # ringmaild on 127.0.0.1 is a remote client: Postfix must not add or
            # rewrite headers, so what lands in the Maildir is what we sent.
            "local_header_rewrite_clients =",
            "virtual_mailbox_domains = %s" % ", ".join(domains),
            "virtual_mailbox_base = %s" % self.mail,
            "virtual_mailbox_maps = texthash:%s/vmailbox" % self.etc,
            "virtual_uid_maps = static:%d" % pw.pw_uid,
            "virtual_gid_maps = static:%d" % pw.pw_gid,
            "smtpd_recipient_restrictions = check_recipient_access texthash:%s/access" % self.etc,
            # A temporary failure inside Postfix is retried within a test's waits.
            "queue_run_delay = 1s",
            "minimal_backoff_time = 1s",
            "maximal_backoff_time = 2s",
            "biff = no",
            "maillog_file_prefixes = %s" % self.base,
            "maillog_file = %s" % self.maillog_path,
        ]
        if tls_cert:
            shutil.copy(tls_cert, self.etc / "smtpd.crt")
            shutil.copy(tls_key, self.etc / "smtpd.key")
            os.chmod(self.etc / "smtpd.key", 0o600)     # read by smtpd as root, before it drops privileges
            main += [
                "smtpd_tls_security_level = may",
                "smtpd_tls_cert_file = %s/smtpd.crt" % self.etc,
                "smtpd_tls_key_file = %s/smtpd.key" % self.etc,
                # The protocol and cipher in the Received: header and the log.
                "smtpd_tls_received_header = yes",
                "smtpd_tls_loglevel = 1",
            ]
        else:
            main.append("smtpd_tls_security_level = none")
        (self.etc / "main.cf").write_text("\n".join(main) + "\n")
        (self.etc / "master.cf").write_text("127.0.0.1:%d inet n - n - - smtpd\n" % self.port + MASTER_CF)

    # ---- process ----------------------------------------------------------------------------
    def _postfix(self, *args, timeout=60):
        return subprocess.run([POSTFIX, "-c", str(self.etc), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout)

    def _diagnose(self, what):
        # postfix(1) prints its fatal errors only to a terminal (or syslog):
        # script(1) gives it one, so the failure shows why.
        r = subprocess.run(["script", "-qec", "%s -c %s check" % (POSTFIX, self.etc), "/dev/null"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        return "%s\npostfix check: %s\nmaillog:\n%s" % (what, r.stdout.decode(errors="replace"),
                                                       self.maillog()[-4000:])

    def start(self):
        r = self._postfix("start")
        if r.returncode != 0:
            raise AssertionError(self._diagnose("postfix -c %s start: exit %d %s"
                                                % (self.etc, r.returncode, r.stderr.decode(errors="replace"))))
        pidfile = self.queue_dir / "pid" / "master.pid"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.master_pid is None:
                try:
                    self.master_pid = int(pidfile.read_text().strip()) or None
                except (FileNotFoundError, ValueError):
                    pass
            if self.master_pid is not None and self._greets():
                # The probe's session is Postfix's, not ours: the tests look after it.
                m = self.wait_log(r"postfix/smtpd\[\d+\]: disconnect from .*\n", since_mark=False)[-1]
                self.mark = m.end()
                return self
            if time.monotonic() >= deadline:
                raise AssertionError(self._diagnose("postfix (master pid %s) did not greet on 127.0.0.1:%d "
                                                    "within %.0f s" % (self.master_pid, self.port, START_TIMEOUT)))
            time.sleep(0.1)

    def _greets(self):
        """One session: the 220 greeting, QUIT, its 221 (a clean end in Postfix's log)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(2)
                buf = b""
                while b"\r\n" not in buf:
                    chunk = s.recv(512)
                    if not chunk:
                        return False
                    buf += chunk
                if not buf.startswith(b"220 "):
                    return False
                s.sendall(b"QUIT\r\n")
                while b"221 " not in buf:
                    chunk = s.recv(512)
                    if not chunk:
                        return False
                    buf += chunk
                return True
        except OSError:
            return False

    def _ours_alive(self):
        """The recorded master still runs and is this instance's (its cwd is
        our queue directory: a pid reused by anything else is left alone)."""
        pid = self.master_pid
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
            return os.readlink("/proc/%d/cwd" % pid) == str(self.queue_dir)
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            return False

    def _wait_master_gone(self, timeout):
        deadline = time.monotonic() + timeout
        while self._ours_alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def reload(self):
        """postfix reload: new smtpd processes read the maps afresh."""
        r = self._postfix("reload")
        assert r.returncode == 0, self._diagnose("postfix reload: exit %d" % r.returncode)

    def stop(self):
        """postfix stop; then the recorded master pid (SIGTERM, SIGKILL) if it
        is still ours and alive.  Returns a problem text or None."""
        problem = None
        if self.master_pid is None:            # start() failed before it read the pid file
            try:
                self.master_pid = int((self.queue_dir / "pid" / "master.pid").read_text().strip()) or None
            except (FileNotFoundError, ValueError):
                pass
        if self.master_pid is not None:
            self._postfix("stop")
            if not self._wait_master_gone(STOP_TIMEOUT):
                problem = "postfix master pid %d still running %.0f s after postfix stop" \
                          % (self.master_pid, STOP_TIMEOUT)
                os.kill(self.master_pid, signal.SIGTERM)
                if not self._wait_master_gone(STOP_TIMEOUT) and self._ours_alive():
                    os.kill(self.master_pid, signal.SIGKILL)
                    self._wait_master_gone(STOP_TIMEOUT)
        return problem

    def cleanup(self):
        """Keep the log and main.cf in tmp_path for a post-mortem, remove the rest."""
        keep = self.tmp_path / "postfix"
        keep.mkdir(exist_ok=True)
        for f in (self.maillog_path, self.etc / "main.cf", self.etc / "master.cf"):
            if f.exists():
                shutil.copy(f, keep / f.name)
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- maps -------------------------------------------------------------------------------
    def set_access(self, access):
        """The recipient access table; a running instance needs reload()."""
        (self.etc / "access").write_text("".join("%s %s\n" % kv for kv in access.items()))

    # ---- log ----------------------------------------------------------------------------------
    def maillog(self):
        try:
            return self.maillog_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self):
        """The maillog after the start-up probe's session."""
        return self.maillog()[self.mark:]

    def wait_log(self, pattern, timeout=20.0, count=1, since_mark=True):
        """Wait until count lines of log() (maillog() if not since_mark) match
        the regex; return the matches."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            got = list(rx.finditer(self.log() if since_mark else self.maillog()))
            if len(got) >= count:
                return got
            if time.monotonic() >= deadline:
                raise AssertionError("%d of %d Postfix log lines /%s/ within %.0f s; maillog tail:\n%s"
                                     % (len(got), count, pattern, timeout, self.maillog()[-4000:]))
            time.sleep(0.05)

    def protocol_problems(self):
        return [l for l in self.maillog().splitlines()
                if any(p in l for p in PF_PROTOCOL_PROBLEMS) and not any(t in l for t in self.tolerate)]

    # ---- Maildirs -----------------------------------------------------------------------------
    def maildir(self, address):
        """The messages virtual(8) delivered to address (Maildir new/), oldest first."""
        local, domain = address.split("@")
        new = self.mail / domain / local / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [p.read_bytes() for p in files]

    def wait_mail(self, address, count=1, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            got = self.maildir(address)
            if len(got) >= count:
                return got
            if time.monotonic() >= deadline:
                raise AssertionError("%d of %d messages in %s's Maildir within %.0f s; maillog tail:\n%s"
                                     % (len(got), count, address, timeout, self.maillog()[-4000:]))
            time.sleep(0.05)


@pytest.fixture
def postfix(tmp_path):
    """Factory: postfix(**Postfix kwargs) -> a started private instance.  Name
    it before ringmaild: fixtures stop in reverse order, so ringmaild ends its
    sessions (QUIT) before Postfix stops, and Postfix's log can then be held
    to having seen no protocol problem at all."""
    made = []

    def make(**kw):
        pf = Postfix(tmp_path, **kw)
        made.append(pf)
        return pf.start()

    yield make
    problems = []
    for pf in made:
        mine = []
        p = pf.stop()
        if p:
            mine.append(p)
        bad = pf.protocol_problems()
        if bad:
            mine.append("Postfix logged protocol problems:\n  " + "\n  ".join(bad[:20]))
        if mine:
            mine.append("maillog tail (kept in %s):\n%s" % (pf.tmp_path / "postfix", pf.maillog()[-4000:]))
        problems += mine
        pf.cleanup()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---- helpers ----------------------------------------------------------------------------------------

def pf_daemon(ringmaild, tmp_path, dns, pf, **kw):
    """relay_daemon (test_delivery) with Postfix's port as delivery.port."""
    return relay_daemon(ringmaild, tmp_path, dns, pf.port, **kw)


def send(conn, rcpts, content, sender=SENDER, params=b""):
    """One transaction on an open SmtpConn (EHLO done); the queue id."""
    conn.cmd(b"MAIL FROM:<%s>%s" % (sender.encode(), params), 250)
    for r in rcpts:
        conn.cmd(b"RCPT TO:<%s>" % r.encode(), 250)
    conn.cmd(b"DATA", 354)
    conn.send(dot_stuff(content) + b".\r\n")
    r = conn.reply()
    assert r.code == 250, r
    return queue_id(r)


def submit(d, rcpts, content, **kw):
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        return send(c, rcpts, content, **kw)


def message(name, body=b"hello from ringmail\r\n", to="x@pf.test"):
    return (b"From: Alice <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: Sat, 02 Dec 2023 10:00:00 +0000\r\n"
            b"Message-ID: <%s@pf.test>\r\n\r\n" % (SENDER.encode(), to.encode(), name.encode(), name.encode())) + body


def tricky_body(n):
    """n CRLF lines with what SMTP and Maildir delivery could alter: dots
    first (stuffing), "From " first (mbox escaping), a 990-byte line, empty and
    whitespace-only lines, trailing spaces, tabs, 8-bit UTF-8."""
    lines = [b"x" * 990, b".", b"..", b". leading dot", b"From the start of a line", b"", b"trailing spaces   ",
             b"\t tab first", b"\xc3\xa4\xc3\xb6\xc3\xbc 8bit \xe2\x98\x83", b"-- ", b"a line\tbetween", b" \t "]
    return b"".join((lines[i % len(lines)] if i % 3 else b"%06d %s" % (i, lines[i % len(lines)])) + b"\r\n"
                    for i in range(n))


def header_fields(raw):
    """The header fields of a Maildir file as [(name, whole field text)] and
    the rest (the body with its empty line); Postfix writes LF line ends."""
    head, sep, body = raw.partition(b"\n\n")
    assert sep, raw[:300]
    fields = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            assert fields, raw[:300]
            fields[-1] = (fields[-1][0], fields[-1][1] + b"\n" + line)
        else:
            fields.append((line.split(b":", 1)[0].decode(), line))
    return fields, body


def as_delivered(raw, rcpt, qid):
    """Check what virtual(8) and Postfix's smtpd put in front of our message
    (Return-Path, X-Original-To, Delivered-To, Received) and our own Received
    (qid's); return (Postfix's Received field, the Return-Path field, the rest
    of the file: the message as submitted, in Postfix's LF form)."""
    fields, _ = header_fields(raw)
    names = [n for n, _ in fields[:5]]
    assert names == ["Return-Path", "X-Original-To", "Delivered-To", "Received", "Received"], (names, raw[:800])
    assert fields[1][1] == b"X-Original-To: " + rcpt.encode(), fields[1]
    assert fields[2][1] == b"Delivered-To: " + rcpt.encode(), fields[2]
    pf_received, ours = fields[3][1], fields[4][1]
    assert b"by %s (Postfix) with ESMTP" % MX_HOST.encode() in pf_received, pf_received
    assert b"(ringmail) with ESMTP id " + qid.encode() in ours, ours
    # The rest starts right after our Received: field and its continuation lines.
    skip = sum(len(f) + 1 for _, f in fields[:5])
    return pf_received, fields[0][1], raw[skip:]


def pf_reply(why):
    """Postfix's 250 to the end of data: (bytes it counted for BDAT or None, its queue id)."""
    m = re.fullmatch(r"250 2\.0\.0 Ok: (?:(\d+) bytes )?queued as ([0-9A-F]{6,})", why)
    assert m, why
    return (int(m.group(1)) if m.group(1) else None), m.group(2)


def pf_queue_id(received):
    m = re.search(rb"\(Postfix\) with ESMTPS? id ([0-9A-F]{6,})", received)
    assert m, received
    return m.group(1).decode()


def lf(content):
    """Our CRLF content as Postfix stores it."""
    assert b"\r" not in content.replace(b"\r\n", b""), "bare CR in test content"
    return content.replace(b"\r\n", b"\n")


def relay_of(pf, tls=False):
    return r"mx\.pf\.test\[127\.0\.0\.1\]:%d" % pf.port + (r", tls=(TLSv1\.[23])" if tls else "")


def sessions(pf):
    """Postfix's per-session summaries: [{"ehlo": "1", "mail": "1", ..., "commands": "5"}]
    (a count refused shows as accepted/given: "rcpt=1/2", "commands=4/5")."""
    out = []
    for m in re.finditer(r"postfix/smtpd\[\d+\]: disconnect from \S+ (.*)", pf.log()):
        out.append(dict(kv.split("=", 1) for kv in m.group(1).split()))
    return out


# ---- tests ------------------------------------------------------------------------------------------

def test_mx_delivery_to_postfix_byte_for_byte(postfix, ringmaild, tmp_path, dns):
    """A message for u@pf.test taken on the mx listener goes by the MX record
    to Postfix, which puts it in u's Maildir: the content is ours byte for
    byte (in Postfix's LF form) under Postfix's and our Received: lines, and
    ringmaild's reply shows the queue id Postfix gave it."""
    pf = postfix()
    d = pf_daemon(ringmaild, tmp_path, dns, pf)
    content = message("byte-for-byte", tricky_body(1700) + b".\r\n..\r\nlast line\r\n")
    # Big enough for many 16 KiB spool reads, under limits.output_bytes_max - 32 KiB:
    # past that delivery stalls (test_message_larger_than_output_bytes_max).
    assert 150 << 10 < len(content) < 200 << 10, len(content)
    qid = submit(d, ["u@pf.test"], content, params=b" BODY=8BITMIME")

    o = wait_outcome(d, qid, "u@pf.test", "sent")
    assert re.fullmatch(relay_of(pf), o["relay"]), o          # no STARTTLS offered: plaintext
    assert o["dsn"] == "2.0.0", o
    pf_bytes, pfqid = pf_reply(o["why"])

    raw, = pf.wait_mail("u@pf.test")
    pf_received, return_path, rest = as_delivered(raw, "u@pf.test", qid)
    assert return_path == b"Return-Path: <%s>" % SENDER.encode()
    assert pf_queue_id(pf_received) == pfqid, pf_received
    assert b"from mx.test.invalid (unknown [127.0.0.1])" in pf_received, pf_received
    # Postfix counted (BDAT) what we sent: our Received: field (CR LF again) and the content.
    ours = header_fields(raw)[0][4][1]
    assert pf_bytes == len(ours.replace(b"\n", b"\r\n")) + 2 + len(content), (pf_bytes, len(content))
    want = lf(content)
    assert rest == want, "differs at byte %d of %d" % (next((i for i in range(min(len(rest), len(want)))
                                                             if rest[i] != want[i]), min(len(rest), len(want))),
                                                       len(want))
    pf.wait_log(r"%s: to=<u@pf\.test>, relay=virtual, .*status=sent \(delivered to maildir\)" % pfqid)
    wait_gone(d, qid)
    assert queue(d) == {}
    r = d.ctl("queue", via_socket=True)       # and as an operator sees it: no message listed
    assert r.returncode == 0 and not re.search(rb"\b[0-9A-Z]{13}\b", r.stdout), r.stdout
    # Found through the MX record; nothing bounced back to alice.
    assert "query[MX] pf.test" in dns.log()
    assert pf.maildir(SENDER) == []
    # Postfix offered CHUNKING: the content went in BDAT, one session, every command accepted.
    pf.wait_log(r"disconnect from unknown\[127\.0\.0\.1\]", timeout=15)
    summary, = sessions(pf)
    assert summary.get("mail") == "1" and summary.get("rcpt") == "1" and "bdat" in summary, summary
    assert "/" not in summary["commands"], summary          # "commands=3/4": one was refused


def test_many_messages_arrive_exactly_once(postfix, ringmaild, tmp_path, dns):
    """20 messages over two client sessions, one of them for two pf.test
    recipients: every copy arrives once, and the two-recipient message went
    to Postfix as one transaction (one Postfix queue id, nrcpt=2)."""
    pf = postfix()
    d = pf_daemon(ringmaild, tmp_path, dns, pf)
    want = {}           # Message-ID -> recipients
    qids = {}
    conns = [SmtpConn(d.port("mx")) for _ in range(2)]
    try:
        for c in conns:
            c.ehlo()
        for i in range(20):
            rcpts = ["m0@pf.test", "m1@pf.test"] if i == 7 else ["m%d@pf.test" % (i % 5)]
            name = "many-%02d" % i
            qids[name] = send(conns[i % 2], rcpts, message(name, b"message %d\r\n" % i))
            want["<%s@pf.test>" % name] = rcpts
    finally:
        for c in conns:
            c.close()
    n_copies = sum(len(r) for r in want.values())
    assert n_copies == 21
    for name, qid in qids.items():
        for r in want["<%s@pf.test>" % name]:
            o = wait_outcome(d, qid, r, "sent")
            assert re.fullmatch(relay_of(pf), o["relay"]), o
    for q in qids.values():
        wait_gone(d, q)
    # All 21 copies delivered by virtual(8); then no more come.
    pf.wait_log(r"relay=virtual, .*status=sent", count=n_copies)
    time.sleep(1.0)
    got = {}            # (mailbox, Message-ID) -> [Postfix queue id]
    for box in ("m%d@pf.test" % i for i in range(5)):
        for raw in pf.maildir(box):
            fields, _ = header_fields(raw)
            mid = next(f[1].split(b" ", 1)[1].decode() for f in fields if f[0] == "Message-ID")
            got.setdefault((box, mid), []).append(pf_queue_id(fields[3][1]))
    expected = {(r, mid) for mid, rs in want.items() for r in rs}
    assert set(got) == expected, sorted(set(got) ^ expected)
    assert all(len(v) == 1 for v in got.values()), {k: v for k, v in got.items() if len(v) != 1}
    assert len(re.findall(r"relay=virtual, .*status=sent", pf.log())) == n_copies
    # The two-recipient message: one Postfix queue id for both copies, logged with nrcpt=2.
    mid = "<many-07@pf.test>"
    ids = {got[("m0@pf.test", mid)][0], got[("m1@pf.test", mid)][0]}
    assert len(ids) == 1, ids
    pfqid, = ids
    assert re.search(r"%s: from=<%s>, size=\d+, nrcpt=2 \(queue active\)" % (pfqid, re.escape(SENDER)),
                     pf.log()), pf.log()[-3000:]
    whys = [pf_reply(o["why"])[1] for o in outcomes(d, qids["many-07"])]
    assert whys == [pfqid, pfqid], whys
    # 20 transactions in all, none refused, every session ended with QUIT
    # (sessions end when ringmaild's idle connections time out).
    deadline = time.monotonic() + 15
    while sum(int(s.get("mail", 0)) for s in sessions(pf)) < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    ss = sessions(pf)
    assert sum(int(s.get("mail", 0)) for s in ss) == 20, ss
    assert sum(int(s.get("rcpt", 0)) for s in ss) == 21, ss
    assert len([s for s in ss if s.get("rcpt") == "2" and s.get("mail") == "1"]) == 1, ss
    for s in ss:
        assert "/" not in s["commands"] and s.get("quit") == "1", s
    assert pf.maildir(SENDER) == []


def test_starttls_to_postfix(postfix, ringmaild, tmp_path, dns):
    """Postfix offers STARTTLS with a certificate for mx.pf.test from a test
    CA: delivery.tls = encrypt (pf.test) and verify from the policy map
    (vf.test, chain to the CA and the MX name) both go over TLS; Postfix's
    Received: header and log say so, with the protocol ringmaild logs."""
    ca, crt, key = make_ca_and_leaf(tmp_path, MX_HOST)
    pf = postfix(tls_cert=crt, tls_key=key)
    pmap = tmp_path / "tls_policy"
    pmap.write_text("vf.test verify\n")
    d = pf_daemon(ringmaild, tmp_path, dns, pf,
                  delivery={"tls": "encrypt", "tls_ca": str(ca), "tls_policy_map": str(pmap)})
    c1 = message("tls-encrypt", b"over TLS, not verified\r\n")
    c2 = message("tls-verify", b"over TLS, verified\r\n", to="w@vf.test")
    q1 = submit(d, ["u@pf.test"], c1)
    q2 = submit(d, ["w@vf.test"], c2)
    versions = set()
    for qid, rcpt, content in ((q1, "u@pf.test", c1), (q2, "w@vf.test", c2)):
        o = wait_outcome(d, qid, rcpt, "sent")
        m = re.fullmatch(relay_of(pf, tls=True), o["relay"])
        assert m, o
        versions.add(m.group(1))
        raw, = pf.wait_mail(rcpt)
        pf_received, _, rest = as_delivered(raw, rcpt, qid)
        assert b"(using %s with cipher " % m.group(1).encode() in pf_received, pf_received
        assert b"with ESMTPS id" in pf_received, pf_received
        assert rest == lf(content)
        wait_gone(d, qid)
    # Postfix's side: every session it had with ringmaild was TLS, the same protocol.
    tls_lines = pf.wait_log(r"Anonymous TLS connection established from unknown\[127\.0\.0\.1\]: (TLSv1\.[23])",
                            count=2)
    assert {t.group(1) for t in tls_lines} == versions, (tls_lines, versions)
    assert len(re.findall(r"postfix/smtpd\[\d+\]: connect from", pf.log())) == len(tls_lines), pf.log()
    assert "certificate not verified" not in d.log()


def test_unknown_user_bounces_that_recipient_only(postfix, ringmaild, tmp_path, dns):
    """Postfix refuses nobody@pf.test at RCPT (550 5.1.1, not in the virtual
    mailbox table): only that recipient bounces, good@pf.test of the same
    message is delivered, and the RFC 3464 report goes from <> through
    Postfix into the sender's Maildir, listing only the refused recipient."""
    pf = postfix()
    d = pf_daemon(ringmaild, tmp_path, dns, pf, limits={"delivery_retry_initial_ms": 60000})
    content = message("partial", b"the original body\r\n", to="good@pf.test")
    qid = submit(d, ["good@pf.test", "nobody@pf.test"], content)
    refusal = "550 5.1.1 <nobody@pf.test>: Recipient address rejected: User unknown in virtual mailbox table"
    ob = wait_outcome(d, qid, "nobody@pf.test", "bounced")
    assert ob["dsn"] == "5.1.1" and ob["why"] == refusal, ob
    og = wait_outcome(d, qid, "good@pf.test", "sent")
    assert re.fullmatch(relay_of(pf), og["relay"]) and og["dsn"] == "2.0.0", og
    raw, = pf.wait_mail("good@pf.test")
    _, _, rest = as_delivered(raw, "good@pf.test", qid)
    assert rest == lf(content)
    pf.wait_log(r"reject: RCPT from unknown\[127\.0\.0\.1\]: %s; from=<%s> to=<nobody@pf\.test>"
                % (re.escape(refusal), re.escape(SENDER)))

    # The report: ringmaild's own message from <>, delivered by MX lookup like any other.
    bounce, = pf.wait_mail(SENDER)
    fields, _ = header_fields(bounce)
    assert fields[0][1] == b"Return-Path: <>", fields[0]
    msg, per_msg, per_rcpt = parse_report(bounce)
    assert msg["From"].startswith('"Mail Delivery System" <MAILER-DAEMON@'), msg["From"]
    assert SENDER in msg["To"], msg["To"]
    assert [r["Final-Recipient"] for r in per_rcpt] == ["rfc822; nobody@pf.test"], per_rcpt
    r = per_rcpt[0]
    assert r["Action"] == "failed" and r["Status"] == "5.1.1", r
    assert refusal in " ".join(r["Diagnostic-Code"].split()), r
    assert r.get("Remote-MTA", "").startswith("dns; mx.pf.test"), r
    status_part = bounce.split(b"Content-Type: message/delivery-status")[1].split(b"\n--")[0]
    assert b"good@pf.test" not in status_part, status_part
    assert b"Message-ID: <partial@pf.test>" in bounce
    wait_gone(d, qid)
    wait_queue(d, lambda q: q == {}, what="the report delivered too")
    assert len(re.findall(r"sender non-delivery notification", d.log())) == 1
    assert pf.maildir("good@pf.test") == [raw] and len(pf.maildir(SENDER)) == 1
    assert re.search(r": from=<>, size=\d+, nrcpt=1 \(queue active\)", pf.log()), pf.log()[-3000:]


def test_postfix_4xx_defers_then_delivers(postfix, ringmaild, tmp_path, dns):
    """Postfix's access map answers 450 for later@pf.test: that recipient is
    deferred with Postfix's reply as the queue's last error, ok@pf.test of
    the same message is delivered; once the map lets it through (postfix
    reload), the retry delivers later@pf.test alone: each gets one copy."""
    pf = postfix(access={"later@pf.test": "450 4.2.0 try later"})
    # One message per connection: after the reload only new smtpd processes
    # have the new map, and a connection kept from before would reach an old one.
    d = pf_daemon(ringmaild, tmp_path, dns, pf, limits={"delivery_messages_per_connection": 1})
    content = message("later", b"deferred once\r\n", to="ok@pf.test")
    qid = submit(d, ["ok@pf.test", "later@pf.test"], content)
    reply = "450 4.2.0 <later@pf.test>: Recipient address rejected: try later"
    o = wait_outcome(d, qid, "later@pf.test", "deferred")
    assert o["dsn"] == "4.2.0" and o["why"] == reply, o
    assert wait_outcome(d, qid, "ok@pf.test", "sent")["dsn"] == "2.0.0"
    q = wait_queue(d, lambda q: qid in q and reply in (q[qid].get("last_error") or ""), what="last error shown")
    assert {r["address"]: r["state"] for r in q[qid]["recipients"]}["later@pf.test"] == "pending", q[qid]
    assert qid in spool_messages(d)
    r = d.ctl("queue", via_socket=True)
    assert qid.encode() in r.stdout and b"last error: " in r.stdout and reply.encode() in r.stdout, r.stdout
    pf.wait_log(r"reject: RCPT from unknown\[127\.0\.0\.1\]: %s" % re.escape(reply))

    pf.set_access({})
    pf.reload()
    o = wait_outcome(d, qid, "later@pf.test", "sent", timeout=30)
    assert re.fullmatch(relay_of(pf), o["relay"]), o
    wait_gone(d, qid)
    raw, = pf.wait_mail("later@pf.test")
    _, _, rest = as_delivered(raw, "later@pf.test", qid)
    assert rest == lf(content)
    # The retry went to the pending recipient only.
    assert len(pf.maildir("ok@pf.test")) == 1
    assert [x["status"] for x in outcomes(d, qid) if x["to"] == "ok@pf.test"] == ["sent"]
    assert pf.maildir(SENDER) == [] and "sender non-delivery notification" not in d.log()


def test_message_larger_than_output_bytes_max(postfix, ringmaild, tmp_path, dns):
    """A message of 400 KiB, over limits.output_bytes_max (256 KiB, the default
    too): it must arrive whole, as smaller ones do.  (It stalled after
    output_bytes_max - 32 KiB: feed_content in proto/smtp_out.c stopped for
    room without a refused write, so nothing called on_writable again.)"""
    pf = postfix()
    d = pf_daemon(ringmaild, tmp_path, dns, pf, limits={"shutdown_timeout_ms": 1000})
    content = message("large", tricky_body(4400))
    assert len(content) > 400 << 10 and d.limits["output_bytes_max"] == 256 << 10, len(content)
    qid = submit(d, ["u@pf.test"], content, params=b" BODY=8BITMIME")
    # Postfix takes it in well under a second on loopback; a stall waits 600 s
    # (smtp_client_data_timeout_ms), so 15 s tells them apart.
    wait_outcome(d, qid, "u@pf.test", "sent", timeout=15)
    raw, = pf.wait_mail("u@pf.test")
    _, _, rest = as_delivered(raw, "u@pf.test", qid)
    assert rest == lf(content)
    wait_gone(d, qid)
