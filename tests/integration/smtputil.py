"""Shared helpers for the SMTP tests: a daemon with the three SMTP listener
kinds (MX, submission with STARTTLS, submission with implicit TLS), a password
file made here with real crypt(3) hashes, a raw line client that reads whole
(multi-line) replies, and a reader of what the spool holds.

Every listener binds 127.0.0.1 on a free port; every wait is bounded.
"""
import warnings
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt
import os
import re
import socket
import ssl
import subprocess
import time
import warnings
from pathlib import Path

from conftest import REPO, run_tool

SPOOL_DUMP = REPO / "build" / "tools" / "spool_dump"

# (user, password, crypt method prefix): yescrypt (Debian's default), bcrypt, sha512-crypt.
USERS = [
    ("demo@dev.test", "demo", "$y$j9T$"),
    ("bob@example.test", "b0b-secret", "$2b$05$"),
    ("carol@example.test", "carol pass", "$6$rounds=5000$"),
    ("dora@example.test", "p\u00e4ssw\u00f6rd \u2603", "$y$j9T$"),     # UTF-8 (smtplib cannot send it)
]


def crypt_hash(password, prefix):
    """A crypt(3) hash with a fresh salt of the method's alphabet and length."""
    alphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    rnd = os.urandom(22)
    if prefix.startswith("$y$"):
        # 16 bytes in 22 characters: the last one carries 2 bits, so it is one of the first four.
        salt = "".join(alphabet[b % 64] for b in rnd[:21]) + alphabet[rnd[21] % 4]
    elif prefix.startswith("$2b$"):
        # bcrypt's own alphabet; the last of 22 characters carries 2 bits: . O e u.
        bf = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        salt = "".join(bf[b % 64] for b in rnd[:21]) + ".Oeu"[rnd[21] % 4]
    else:
        salt = "".join(alphabet[b % 64] for b in rnd[:16])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        h = crypt.crypt(password, prefix + salt + ("" if prefix.startswith("$2b$") else "$"))
    assert h and h.startswith(prefix[:3]), "crypt(3) refused %s" % prefix
    return h


def write_passwd(path, users=USERS):
    lines = ["# test users"]
    for user, password, prefix in users:
        lines.append("%s:%s" % (user, crypt_hash(password, prefix)))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_cert(d, name="smtp", cn="localhost"):
    key, cert = Path(d) / (name + ".key"), Path(d) / (name + ".crt")
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=%s" % cn,
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
    return cert, key


def smtp_daemon(ringmaild, tmp_path, name="smtp", smtp=None, limits=None, listeners=None, workers=2,
                start=True, proxy=False, **kw):
    """A daemon with listeners mx (STARTTLS offered), submission (STARTTLS, AUTH)
    and submissions (implicit TLS, AUTH); smtp settings merged over a test default:
    relay domain relay.test, no mynetworks, the USERS password file."""
    d = Path(tmp_path) / ("%s-files" % name)
    d.mkdir(parents=True, exist_ok=True)
    cert, key = make_cert(d)
    passwd = d / "passwd"
    if not passwd.exists():
        write_passwd(passwd)
    tls = {"tls_cert": str(cert), "tls_key": str(key)}
    if listeners is None:
        listeners = [
            dict(name="mx", protocol="smtp", tls="starttls", **tls),
            dict(name="submission", protocol="smtp", tls="starttls", submission=True, **tls),
            dict(name="submissions", protocol="smtp", tls="implicit", submission=True, **tls),
            dict(name="plain", protocol="smtp"),
        ]
        if proxy:
            listeners.append(dict(name="proxied", protocol="smtp", proxy_protocol=True))
    settings = {
        "hostname": "mx.test.invalid",
        "relay_domains": [{"domain": "relay.test", "nexthop": "[127.0.0.1]:1"}],
        "mynetworks": [],
        "passwd_file": str(passwd),
    }
    settings.update(smtp or {})
    lim = {"spool_buffer_bytes": 2 << 20, "smtp_auth_failure_delay_ms": 0}
    lim.update(limits or {})
    extra = dict(kw.pop("extra", {}))
    extra["smtp"] = settings
    return ringmaild(start=start, name=name, workers=workers, limits=lim, listeners=listeners, extra=extra, **kw)


class Reply:
    def __init__(self, lines):
        self.lines = lines            # bytes, without CR LF
        self.code = int(lines[-1][:3])
        self.text = b"\n".join(l[4:] for l in lines)

    def __repr__(self):
        return "Reply(%r)" % (b"\\r\\n".join(self.lines),)


class SmtpConn:
    """A raw SMTP client: send bytes, read whole replies.  greet: read the 220."""

    def __init__(self, port, timeout=20.0, greet=True, tls=False, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        if tls:
            self.starttls_wrap()
        self.greeting = self.reply() if greet else None

    def starttls_wrap(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        assert self.buf == b"", "bytes left before TLS: %r" % self.buf
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        deadline = time.monotonic() + self.timeout
        while b"\r\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no reply line within %.0f s; have %r" % (self.timeout, self.buf[:300]))
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; had %r" % self.buf[:300])
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        lines = []
        for _ in range(1000):
            line = self.line()
            assert re.match(rb"^[2-5][0-5][0-9][ -]", line) or re.match(rb"^[2-5][0-5][0-9]$", line), \
                "not a reply line: %r" % line
            lines.append(line)
            if len(line) == 3 or line[3:4] == b" ":
                return Reply(lines)
        raise AssertionError("reply of over 1000 lines")

    def cmd(self, line, expect=None):
        self.send(line + b"\r\n")
        r = self.reply()
        if expect is not None:
            assert r.code == expect, "%r: want %d, got %r" % (line, expect, r)
        return r

    def ehlo(self, name=b"client.example"):
        return self.cmd(b"EHLO " + name, 250)

    def message(self, sender, rcpts, content, expect=250):
        """MAIL, RCPT..., DATA, content (dot-stuffed here), '.'; returns the final reply."""
        self.cmd(b"MAIL FROM:<%s>" % sender, 250)
        for r in rcpts:
            self.cmd(b"RCPT TO:<%s>" % r, 250)
        self.cmd(b"DATA", 354)
        self.send(dot_stuff(content) + b".\r\n")
        r = self.reply()
        assert r.code == expect, "end of data: want %d, got %r" % (expect, r)
        return r

    def expect_close(self, timeout=10.0):
        self.sock.settimeout(timeout)
        try:
            extra = self.buf + self.sock.recv(4096)
        except (ConnectionResetError, ssl.SSLError):
            return
        assert extra == b"" or not self.sock.recv(4096), "expected close, got %r" % extra[:300]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def dot_stuff(content):
    """RFC 5321 4.5.2 for content whose lines end in CR LF (the last one too)."""
    assert content == b"" or content.endswith(b"\r\n")
    out = []
    for line in content.split(b"\r\n")[:-1]:
        out.append((b"." + line) if line.startswith(b".") else line)
    return b"".join(l + b"\r\n" for l in out)


def queue_id(reply):
    m = re.search(rb"queued as ([0-9A-Z]{13})", reply.lines[-1])
    assert m, "no queue id in %r" % reply
    return m.group(1).decode()


def spool_messages(daemon):
    """{queue id: (size, xxh3, sender, [rcpts])} of every worker's spool, by recovery."""
    out = {}
    for w in range(daemon.workers):
        r = run_tool([str(SPOOL_DUMP), daemon.settings["spool_dir"], str(w)])
        assert r.returncode == 0, r.stderr.decode()
        for line in r.stdout.decode().splitlines():
            if line.startswith("msg "):
                parts = line.split(" ")
                out[parts[1]] = (int(parts[2]), parts[3], parts[4], parts[5].split(",") if len(parts) > 5 else [])
    return out


def spool_content(daemon, qid):
    """The content the spool holds for qid (the Received: header included)."""
    for w in range(daemon.workers):
        r = run_tool([str(SPOOL_DUMP), "--content", qid, daemon.settings["spool_dir"], str(w)])
        if r.returncode == 0:
            return r.stdout
    raise AssertionError("message %s not in the spool" % qid)


def spool_envelope(daemon, qid):
    """The envelope of qid as spooled: {key: value}, "rcpt": [lines]."""
    for w in range(daemon.workers):
        r = run_tool([str(SPOOL_DUMP), "--envelope", qid, daemon.settings["spool_dir"], str(w)])
        if r.returncode == 0:
            env = {"rcpt": []}
            for line in r.stdout.decode().splitlines():
                key, _, value = line.partition(" ")
                if key == "rcpt":
                    env["rcpt"].append(value)
                else:
                    env[key] = value
            return env
    raise AssertionError("message %s not in the spool" % qid)
