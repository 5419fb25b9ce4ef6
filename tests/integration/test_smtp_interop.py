"""The SMTP server (proto/smtp_session.c) against real SMTP clients: Python's
smtplib (plain, STARTTLS, SMTP_SSL, AUTH, send_message, SMTPUTF8, 8BITMIME,
DSN, and a small CHUNKING client on its lower-level calls), swaks, curl,
Postfix's smtp-source and openssl s_client.

Every test checks both sides: what the client says (its exit status, its
output, the replies it got) and what the server kept (spool_messages /
spool_content / spool_envelope: sender, recipients, the content after the
Received: header byte-identical to what the client sent, envelope fields),
and the Received: header itself (the "with" keyword of RFC 3848 / 6531, the
TLS comment, the authenticated sender only when smtp.received_auth_user).

The external programs come from Debian packages (swaks, postfix for
smtp-source, curl, openssl; scripts/deps.sh installs them in CI); a test
whose program is missing is skipped and says which.  Loopback only; every
program runs with a timeout.
"""
import base64
import re
import shutil
import smtplib
import ssl
import subprocess
from email.message import EmailMessage

import pytest

from conftest import first_diff, pattern_lines
from smtputil import SmtpConn, USERS, dot_stuff, queue_id, smtp_daemon, spool_content, spool_envelope, \
    spool_messages
import test_smtp
from test_smtp import tls_ctx

# test_smtp's fixture: the daemon of smtp_daemon's defaults (listeners mx, submission, submissions, plain).
smtpd = test_smtp.smtpd

RUN_TIMEOUT = 60
QID = rb"[0-9A-Z]{13}"


def need(program):
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        pytest.skip("%s is not installed (scripts/deps.sh installs it)" % program)
    return path


def run(argv, input=None, timeout=RUN_TIMEOUT):
    return subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


def qids_in(text):
    """The queue ids of every "queued as" in a client's output, in order."""
    if isinstance(text, str):
        text = text.encode()
    return [m.decode() for m in re.findall(rb"queued as (" + QID + rb")", text)]


def split_received(held):
    """(the Received: header, what follows it) of spooled content: the header
    is its first line and every continuation line (starting with a tab or space)."""
    assert held.startswith(b"Received: "), held[:200]
    pos = 0
    while True:
        pos = held.index(b"\r\n", pos) + 2
        if held[pos:pos + 1] not in (b"\t", b" "):
            return held[:pos], held[pos:]


def received_rx(qid, helo="client.example", client="127.0.0.1", with_="ESMTP", tls=None, auth=None,
                rcpt=None):
    """The Received: header the server must write, as a regex.  tls: None for
    none, else the TLS version (its cipher is checked apart); auth: the user
    in "(Authenticated sender: ...)", or None when it must be absent."""
    rx = rb"Received: from " + re.escape(helo.encode()) + rb" \(\[" + re.escape(client.encode()) + rb"\]\)\r\n"
    if tls is not None:
        rx += rb"\t\(using " + re.escape(tls.encode()) + rb" with cipher (?P<cipher>[A-Za-z0-9_-]+)\)\r\n"
    if auth is not None:
        rx += rb"\t\(Authenticated sender: " + re.escape(auth.encode()) + rb"\)\r\n"
    rx += rb"\tby mx\.test\.invalid \(ringmail\) with " + with_.encode() + rb" id " + qid.encode()
    if rcpt is not None:
        rx += rb"\r\n\tfor <" + re.escape(rcpt.encode()) + rb">"
    rx += rb"; [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n\Z"
    return re.compile(rx)


def same_cipher(server_name, client_name):
    """wolfSSL names TLS 1.3 suites TLS13-AES128-GCM-SHA256, OpenSSL
    TLS_AES_128_GCM_SHA256; TLS 1.2 names are OpenSSL's on both sides."""
    norm = lambda n: re.sub(r"[^A-Z0-9]", "", re.sub(r"^TLS(13)?[-_]", "", n.upper()))
    return norm(server_name) == norm(client_name)


def check_spooled(d, qid, sender, rcpts, content, **received):
    """The server's side of one message: spool_messages has it with this
    sender and these recipients, its content is one Received: header (as
    received_rx with **received) then exactly content.  Returns (the
    Received: match, the envelope)."""
    msgs = spool_messages(d)
    assert qid in msgs, "%s not spooled; have %s" % (qid, sorted(msgs))
    _size, _hash, got_sender, got_rcpts = msgs[qid]
    assert got_sender == (sender or "<>"), (got_sender, sender)
    assert got_rcpts == rcpts, (got_rcpts, rcpts)
    held = spool_content(d, qid)
    header, rest = split_received(held)
    if "rcpt" not in received and len(rcpts) == 1:
        received["rcpt"] = rcpts[0]
    m = received_rx(qid, **received).match(header)
    assert m, "Received: header not as expected (%r):\n%r" % (received, header)
    if rest != content:
        i = first_diff(rest, content)
        raise AssertionError("content (%d bytes) differs from what was sent (%d) at byte %d: %r != %r"
                             % (len(rest), len(content), i, rest[max(0, i - 40):i + 80],
                                content[max(0, i - 40):i + 80]))
    env = spool_envelope(d, qid)
    assert env["sender"] == sender and [r.split(" ")[0] for r in env["rcpt"]] == rcpts, env
    return m, env


# A message whose lines start with dots (one is a lone dot, one two dots),
# with a long line and an empty one: each client must dot-stuff it and the
# server must undo exactly that.
DOTTY = (b"From: sender@example.org\r\nTo: rcpt@relay.test\r\nSubject: dots\r\n\r\n"
         b"first line\r\n.leading dot\r\n..two dots\r\n.\r\n. space after dot\r\n\r\n"
         + b"L" * 900 + b"\r\nlast line\r\n")


@pytest.fixture
def smtpd_auth_user(ringmaild, tmp_path):
    return smtp_daemon(ringmaild, tmp_path, name="smtpa", smtp={"received_auth_user": True})


# ---- Python smtplib ---------------------------------------------------------------------------

class Recording:
    """smtplib with a memory: the recipients it gave RCPT, every DATA content
    handed to data() and the reply to it."""

    def __init__(self, *a, **kw):
        self.sent, self.replies, self.rcpts = [], [], []
        super().__init__(*a, **kw)

    def rcpt(self, recip, options=()):
        r = super().rcpt(recip, options)
        if r[0] == 250:
            self.rcpts.append(recip)
        return r

    def data(self, msg):
        self.sent.append(bytes(msg))
        r = super().data(msg)
        self.replies.append(r)
        return r

    def last_qid(self):
        code, text = self.replies[-1]
        assert code == 250, self.replies[-1]
        ids = qids_in(text)
        assert ids, text
        return ids[0]


class RSMTP(Recording, smtplib.SMTP):
    pass


class RSMTP_SSL(Recording, smtplib.SMTP_SSL):
    pass


def test_smtplib_plain_mx_to_relay_domain(smtpd):
    with RSMTP("127.0.0.1", smtpd.port("mx"), timeout=30) as s:
        code, _ = s.ehlo("client.example")
        assert code == 250 and s.does_esmtp and s.has_extn("pipelining") and s.has_extn("starttls")
        assert not s.has_extn("auth")
        refused = s.sendmail("sender@example.org", ["rcpt@relay.test"], DOTTY)
        assert refused == {}
        qid = s.last_qid()
    _, env = check_spooled(smtpd, qid, "sender@example.org", ["rcpt@relay.test"], DOTTY)
    assert env["helo"] == "client.example" and env["client"] == "127.0.0.1" and env["auth"] == ""
    assert env["size_declared"] == str(len(DOTTY))      # smtplib sends SIZE=len(msg)
    assert env["smtputf8"] == "0" and env["body"] == "0" and env["ret"] == "0" and env["envid"] == ""
    assert env["rcpt"] == ["rcpt@relay.test notify 0 orcpt "]


def test_smtplib_helo_gives_smtp(smtpd):
    """After HELO (no ESMTP) smtplib sends no parameters; Received: says "with SMTP"."""
    with RSMTP("127.0.0.1", smtpd.port("mx"), timeout=30) as s:
        code, text = s.helo("old.client.example")
        assert code == 250 and text == b"mx.test.invalid" and not s.does_esmtp
        s.sendmail("sender@example.org", ["rcpt@relay.test"], DOTTY)
        qid = s.last_qid()
    _, env = check_spooled(smtpd, qid, "sender@example.org", ["rcpt@relay.test"], DOTTY,
                           helo="old.client.example", with_="SMTP")
    assert env["size_declared"] == "0"


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_smtplib_starttls_mx(smtpd, version):
    ctx = tls_ctx()
    ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version.replace(".", "_"))
    with RSMTP("127.0.0.1", smtpd.port("mx"), timeout=30) as s:
        s.ehlo("client.example")
        code, _ = s.starttls(context=ctx)
        assert code == 220
        assert s.sock.version() == version
        client_cipher = s.sock.cipher()[0]
        s.ehlo("client.example")
        assert not s.has_extn("starttls")
        s.sendmail("sender@example.org", ["rcpt@relay.test"], DOTTY)
        qid = s.last_qid()
    m, _ = check_spooled(smtpd, qid, "sender@example.org", ["rcpt@relay.test"], DOTTY, with_="ESMTPS",
                         tls=version)
    assert same_cipher(m.group("cipher").decode(), client_cipher), (m.group("cipher"), client_cipher)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_smtplib_ssl_auth(smtpd, mech):
    """SMTP_SSL on the implicit-TLS submission listener, AUTH with each mechanism
    (the second user's bcrypt hash, a password with a space for LOGIN)."""
    user, password, _ = USERS[1] if mech == "PLAIN" else USERS[2]
    with RSMTP_SSL("127.0.0.1", smtpd.port("submissions"), timeout=30, context=tls_ctx()) as s:
        s.ehlo("client.example")
        assert s.has_extn("auth") and s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        s.user, s.password = user, password
        code, text = s.auth(mech, getattr(s, "auth_" + mech.lower()))
        assert code == 235, text
        version, client_cipher = s.sock.version(), s.sock.cipher()[0]
        s.sendmail(user, ["someone@elsewhere.example"], DOTTY)
        qid = s.last_qid()
    m, env = check_spooled(smtpd, qid, user, ["someone@elsewhere.example"], DOTTY, with_="ESMTPSA",
                           tls=version)
    assert same_cipher(m.group("cipher").decode(), client_cipher)
    assert env["auth"] == user


def test_smtplib_starttls_submission_login(smtpd_auth_user):
    """STARTTLS on 587, login() choosing the mechanism, with received_auth_user on."""
    d = smtpd_auth_user
    with RSMTP("127.0.0.1", d.port("submission"), timeout=30) as s:
        s.ehlo("client.example")
        assert not s.has_extn("auth")
        s.starttls(context=tls_ctx())
        s.ehlo("client.example")
        code, _ = s.login("demo@dev.test", "demo")
        assert code == 235
        version = s.sock.version()
        s.sendmail("demo@dev.test", ["far@elsewhere.example"], DOTTY)
        qid = s.last_qid()
    _, env = check_spooled(d, qid, "demo@dev.test", ["far@elsewhere.example"], DOTTY, with_="ESMTPSA",
                           tls=version, auth="demo@dev.test")
    assert env["auth"] == "demo@dev.test"


def test_smtplib_starttls_large_data(smtpd):
    """A 3 MB message through DATA over TLS (many records, spool buffer
    boundaries, dot lines among them), and a second message on the session."""
    lines = pattern_lines(3 << 20, seed=821).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    content = b"Subject: big\r\n\r\n" + lines.replace(b"\r\n0000", b"\r\n.0000") + b".\r\n"
    with RSMTP("127.0.0.1", smtpd.port("mx"), timeout=60) as s:
        s.starttls(context=tls_ctx())
        s.sendmail("sender@example.org", ["big@relay.test"], content)
        qid = s.last_qid()
        s.sendmail("sender@example.org", ["small@relay.test"], DOTTY)
        qid2 = s.last_qid()
        version = s.sock.version()
    _, env = check_spooled(smtpd, qid, "sender@example.org", ["big@relay.test"], content, with_="ESMTPS",
                           tls=version, helo=s.local_hostname)
    assert env["size_declared"] == str(len(content))
    check_spooled(smtpd, qid2, "sender@example.org", ["small@relay.test"], DOTTY, with_="ESMTPS", tls=version,
                  helo=s.local_hostname)


def test_smtplib_send_message_multi_recipient(smtpd):
    msg = EmailMessage()
    msg["From"] = "Sender <sender@example.org>"
    msg["To"] = "One <one@relay.test>, two@relay.test"
    msg["Cc"] = "three@relay.test"
    msg["Bcc"] = "hidden@relay.test"
    msg["Subject"] = "send_message to four"
    msg.set_content("Hello all.\n.a dot line\n..\nbye\n")
    with RSMTP("127.0.0.1", smtpd.port("mx"), timeout=30) as s:
        refused = s.send_message(msg)
        assert refused == {}
        sent = s.sent[-1]
        qid = s.last_qid()
    assert b"Bcc:" not in sent and b"\r\n.a dot line\r\n" in sent      # what smtplib sent
    # smtplib takes the recipients from To, Bcc, Cc, in that order.
    rcpts = ["one@relay.test", "two@relay.test", "hidden@relay.test", "three@relay.test"]
    assert s.rcpts == rcpts
    # More than one recipient: no "for <...>" in Received:.
    check_spooled(smtpd, qid, "sender@example.org", rcpts, sent, helo=s.local_hostname, rcpt=None)


def test_smtplib_dot_lines_only(smtpd):
    """Content that is nothing but dot lines, and one ending in a dot line."""
    bodies = [b".\r\n", b"..\r\n...\r\n.\r\n", b"x\r\n.\r\n.x\r\n", b".end\r\n"]
    with RSMTP("127.0.0.1", smtpd.port("mx"), timeout=30) as s:
        s.ehlo("client.example")
        qids = []
        for b in bodies:
            s.sendmail("sender@example.org", ["rcpt@relay.test"], b)
            qids.append(s.last_qid())
    for qid, b in zip(qids, bodies):
        check_spooled(smtpd, qid, "sender@example.org", ["rcpt@relay.test"], b)


@pytest.mark.parametrize("listener", ["mx", "submissions"])
def test_smtplib_smtputf8(smtpd, listener):
    sender, rcpt = "se\u00f1or@example.org", "j\u00f6rg.m\u00fcller@relay.test"
    content = ("From: Se\u00f1or <%s>\r\nTo: <%s>\r\nSubject: gr\u00fc\u00dfe \u2603\r\n\r\n"
               "\u00e7a va \u2014 \u65e5\u672c\u8a9e\r\n.\u00e9 after a dot\r\n" % (sender, rcpt)).encode()
    if listener == "mx":
        s = RSMTP("127.0.0.1", smtpd.port("mx"), timeout=30)
        with_, auth_user = "UTF8SMTP", ""
    else:
        s = RSMTP_SSL("127.0.0.1", smtpd.port("submissions"), timeout=30, context=tls_ctx())
        with_, auth_user = "UTF8SMTPSA", "demo@dev.test"
    with s:
        tls = s.sock.version() if listener != "mx" else None
        s.ehlo("client.example")
        assert s.has_extn("smtputf8")
        if auth_user:
            s.login(auth_user, "demo")
        s.sendmail(sender, [rcpt], content, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        qid = s.last_qid()
    _, env = check_spooled(smtpd, qid, sender, [rcpt], content, with_=with_, tls=tls)
    assert env["smtputf8"] == "1" and env["body"] == "2" and env["auth"] == auth_user


def test_smtplib_8bitmime(smtpd):
    content = b"Subject: 8bit\r\nContent-Type: text/plain; charset=iso-8859-1\r\n" \
              b"Content-Transfer-Encoding: 8bit\r\n\r\n" + bytes(range(0xa0, 0x100)) + b"\r\n\xe9t\xe9\r\n"
    with RSMTP("127.0.0.1", smtpd.port("mx"), timeout=30) as s:
        s.ehlo("client.example")
        assert s.has_extn("8bitmime")
        s.sendmail("sender@example.org", ["rcpt@relay.test"], content, mail_options=["BODY=8BITMIME"])
        qid = s.last_qid()
        s.sendmail("sender@example.org", ["rcpt@relay.test"], b"Subject: 7\r\n\r\nascii\r\n",
                   mail_options=["BODY=7BIT"])
        qid7 = s.last_qid()
    _, env = check_spooled(smtpd, qid, "sender@example.org", ["rcpt@relay.test"], content)
    assert env["body"] == "2" and env["smtputf8"] == "0"
    assert spool_envelope(smtpd, qid7)["body"] == "1"


def test_smtplib_dsn_options(smtpd):
    """RFC 3461 through smtplib: RET and ENVID on MAIL, NOTIFY and ORCPT on
    RCPT (sendmail's rcpt_options go to every recipient), and per-recipient
    options through the lower-level calls."""
    with RSMTP("127.0.0.1", smtpd.port("mx"), timeout=30) as s:
        s.ehlo("client.example")
        assert s.has_extn("dsn")
        refused = s.sendmail("sender@example.org", ["a@relay.test", "b@relay.test"], DOTTY,
                             mail_options=["RET=HDRS", "ENVID=QQ+2Bid-1"],
                             rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;orig+2Bx@relay.test"])
        assert refused == {}
        qid1 = s.last_qid()
        assert s.mail("sender@example.org", ["RET=FULL", "ENVID=second"])[0] == 250
        assert s.rcpt("c@relay.test", ["NOTIFY=NEVER"])[0] == 250
        assert s.rcpt("d@relay.test", ["NOTIFY=FAILURE", "ORCPT=rfc822;D@Relay.Test"])[0] == 250
        assert s.rcpt("e@relay.test")[0] == 250
        code, _ = s.data(b"Subject: per rcpt\r\n\r\nbody\r\n")
        assert code == 250
        qid2 = s.last_qid()
    _, env = check_spooled(smtpd, qid1, "sender@example.org", ["a@relay.test", "b@relay.test"], DOTTY, rcpt=None)
    assert env["ret"] == "2" and env["envid"] == "QQ+2Bid-1"
    assert env["rcpt"] == ["a@relay.test notify 10 orcpt rfc822;orig+2Bx@relay.test",
                           "b@relay.test notify 10 orcpt rfc822;orig+2Bx@relay.test"]
    env = spool_envelope(smtpd, qid2)
    assert env["ret"] == "1" and env["envid"] == "second"
    assert env["rcpt"] == ["c@relay.test notify 1 orcpt ", "d@relay.test notify 4 orcpt rfc822;D@Relay.Test",
                           "e@relay.test notify 0 orcpt "]


# ---- a CHUNKING client on smtplib's lower-level calls -----------------------------------------

class ChunkingSMTP(RSMTP):
    """BDAT (RFC 3030) on smtplib: send() and getreply() for the chunks."""

    def bdat(self, chunk, last=False):
        self.send(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk)
        return self.getreply()

    def bdat_message(self, sender, rcpts, chunks, mail_options=(), pipelined=False):
        """MAIL, RCPT..., then chunks (the last with LAST); lock-step, or all
        BDATs at once (RFC 3030 allows them pipelined) and their replies after.
        Returns the replies to the BDATs."""
        self.ehlo_or_helo_if_needed()
        assert self.has_extn("chunking"), "server does not offer CHUNKING"
        assert self.mail(sender, list(mail_options))[0] == 250
        for r in rcpts:
            assert self.rcpt(r)[0] == 250
        replies = []
        if pipelined:
            self.send(b"".join(b"BDAT %d%s\r\n" % (len(c), b" LAST" if i == len(chunks) - 1 else b"") + c
                               for i, c in enumerate(chunks)))
            replies = [self.getreply() for _ in chunks]
        else:
            for i, c in enumerate(chunks):
                replies.append(self.bdat(c, last=i == len(chunks) - 1))
        self.replies.append(replies[-1])
        return replies


def test_bdat_several_chunks(smtpd):
    # Chunks cut anywhere: inside CR LF, before a dot line, a dot line alone, an empty chunk
    # in the middle; no dot-stuffing in BDAT, so ".\r\n" is content.
    content = b"Subject: chunks\r\n\r\n.not stuffed\r\n.\r\nCR|LF split\r\n..two\r\nend\r\n"
    lone = content.index(b"\r\n.\r\n") + 2
    split = content.index(b"split\r\n") + 6
    cut = [0, 9, content.index(b"\r\n") + 1, content.index(b".not"), lone, lone + 3, lone + 3, split,
           len(content)]
    chunks = [content[a:b] for a, b in zip(cut, cut[1:])]
    assert chunks[4] == b".\r\n" and chunks[5] == b"" and chunks[6].endswith(b"split\r")
    with ChunkingSMTP("127.0.0.1", smtpd.port("mx"), timeout=30) as s:
        s.ehlo("client.example")
        replies = s.bdat_message("sender@example.org", ["rcpt@relay.test"], chunks)
        for (code, text), c in zip(replies[:-1], chunks):
            assert code == 250 and text == b"2.0.0 %d octets received" % len(c), (code, text)
        qid = s.last_qid()
        # BDAT 0 LAST ends a message sent in chunks without LAST.
        assert s.mail("sender@example.org")[0] == 250 and s.rcpt("rcpt@relay.test")[0] == 250
        assert s.bdat(b"Subject: zero last\r\n\r\n")[0] == 250
        assert s.bdat(b"body\r\n")[0] == 250
        code, text = s.bdat(b"", last=True)
        assert code == 250, text
        qid0 = qids_in(text)[0]
        # A DATA transaction on the same session afterwards.
        s.sendmail("sender@example.org", ["rcpt@relay.test"], DOTTY)
        qid_data = s.last_qid()
    check_spooled(smtpd, qid, "sender@example.org", ["rcpt@relay.test"], content)
    check_spooled(smtpd, qid0, "sender@example.org", ["rcpt@relay.test"], b"Subject: zero last\r\n\r\nbody\r\n")
    check_spooled(smtpd, qid_data, "sender@example.org", ["rcpt@relay.test"], DOTTY)


@pytest.mark.parametrize("pipelined", [False, True], ids=["lockstep", "pipelined"])
def test_bdat_2mb_in_64k_chunks(smtpd, pipelined):
    # CR LF lines only (pattern_lines mixes in bare LF), 8-bit bytes in, 2 MiB.
    content = pattern_lines(2 << 20, seed=3030).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    content = content[:content.rindex(b"\r\n", 0, (2 << 20) - 40) + 2] + b"\xe9\xe8 .\r\n.\r\n..\r\nthe end\r\n"
    chunks = [content[i:i + 65536] for i in range(0, len(content), 65536)]
    assert len(chunks) == 32 and len(chunks[-1]) < 65536
    with ChunkingSMTP("127.0.0.1", smtpd.port("mx"), timeout=60) as s:
        s.ehlo("client.example")
        replies = s.bdat_message("sender@example.org", ["big@relay.test"], chunks,
                                 mail_options=["SIZE=%d" % len(content), "BODY=8BITMIME"], pipelined=pipelined)
        assert [r[0] for r in replies] == [250] * len(chunks), replies
        assert all(r[1] == b"2.0.0 65536 octets received" for r in replies[:-1]), replies[:3]
        qid = s.last_qid()
    _, env = check_spooled(smtpd, qid, "sender@example.org", ["big@relay.test"], content)
    assert env["size_declared"] == str(len(content)) and env["body"] == "2"


# ---- swaks --------------------------------------------------------------------------------------

def swaks(*args, timeout=RUN_TIMEOUT):
    argv = [need("swaks"), "--server", "127.0.0.1", "--helo", "client.example", *args]
    return run(argv, timeout=timeout)


def swaks_ok(p):
    out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
    assert p.returncode == 0, "swaks exit %d:\n%s" % (p.returncode, out[-3000:])
    return out


def swaks_data_file(tmp_path, content, name="swaks.eml"):
    """A --data @file swaks sends as content exactly: CR LF lines and its own
    closing dot (swaks adds a CR LF and a dot otherwise), no %TOKENS%."""
    f = tmp_path / name
    f.write_bytes(content + b".\r\n")
    return "@%s" % f


def test_swaks_pipeline_data_file_with_dot_lines(smtpd, tmp_path):
    data = swaks_data_file(tmp_path, DOTTY)
    p = swaks("--port", str(smtpd.port("mx")), "--pipeline", "--from", "sender@example.org",
              "--to", "one@relay.test,two@relay.test", "--data", data)
    out = swaks_ok(p)
    # Pipelined: MAIL, both RCPTs and DATA went out before the first reply came back.
    assert re.search(r" -> MAIL FROM:<sender@example.org>\n -> RCPT TO:<one@relay.test>\n"
                     r" -> RCPT TO:<two@relay.test>\n -> DATA\n<-  250 2\.1\.0 Ok\n<-  250 2\.1\.5 Ok\n"
                     r"<-  250 2\.1\.5 Ok\n<-  354 ", out), out
    assert " -> ...two dots\n -> ..\n" in out.replace("\r", "")     # swaks stuffed the dot lines
    [qid] = qids_in(out)
    check_spooled(smtpd, qid, "sender@example.org", ["one@relay.test", "two@relay.test"], DOTTY, rcpt=None)


def swaks_tls_version(out):
    m = re.search(r"=== TLS started with cipher (TLSv1\.[23]):(\S+):\d+", out)
    assert m, out[-3000:]
    return m.group(1), m.group(2)


def test_swaks_starttls_mx(smtpd, tmp_path):
    p = swaks("--port", str(smtpd.port("mx")), "--tls", "--from", "sender@example.org", "--to", "rcpt@relay.test",
              "--data", swaks_data_file(tmp_path, DOTTY))
    out = swaks_ok(p)
    version, cipher = swaks_tls_version(out)
    assert " -> STARTTLS\n<-  220 " in out and " ~> EHLO client.example\n" in out
    [qid] = qids_in(out)
    m, _ = check_spooled(smtpd, qid, "sender@example.org", ["rcpt@relay.test"], DOTTY, with_="ESMTPS", tls=version)
    assert same_cipher(m.group("cipher").decode(), cipher)


@pytest.mark.parametrize("tls,listener,mech,who", [
    ("--tls", "submission", "PLAIN", 0),
    ("--tls", "submission", "LOGIN", 2),
    ("--tlsc", "submissions", "PLAIN", 1),
    ("--tlsc", "submissions", "LOGIN", 0),
    ("--tlsc", "submissions", "PLAIN", 3),       # a UTF-8 password
    ("--tls", "submission", "LOGIN", 3),
])
def test_swaks_tls_auth(smtpd_auth_user, tmp_path, tls, listener, mech, who):
    d = smtpd_auth_user
    user, password, _ = USERS[who]
    p = swaks("--port", str(d.port(listener)), tls, "--auth", mech, "--auth-user", user,
              "--auth-password", password, "--from", user, "--to", "far@elsewhere.example",
              "--data", swaks_data_file(tmp_path, DOTTY))
    out = swaks_ok(p)
    version, _ = swaks_tls_version(out)
    assert re.search(r" ~> AUTH %s\b" % mech, out) and "<~  235 2.7.0 Authentication successful" in out, out
    if tls == "--tlsc":
        assert "STARTTLS" not in out
    [qid] = qids_in(out)
    _, env = check_spooled(d, qid, user, ["far@elsewhere.example"], DOTTY, with_="ESMTPSA", tls=version,
                           auth=user)
    assert env["auth"] == user


def test_swaks_auth_refused(smtpd):
    p = swaks("--port", str(smtpd.port("submissions")), "--tlsc", "--auth", "PLAIN", "--auth-user",
              "demo@dev.test", "--auth-password", "wrong", "--from", "demo@dev.test", "--to", "x@elsewhere.example")
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 28, (p.returncode, out[-2000:])     # swaks: AUTH failed
    assert "<~* 535 5.7.8 Authentication credentials invalid" in out
    assert spool_messages(smtpd) == {}


@pytest.mark.parametrize("version,family,source", [
    ("1", "TCP4", "192.0.2.7"),
    ("2", "AF_INET", "192.0.2.7"),
    ("1", "TCP6", "2001:db8::7"),
    ("2", "AF_INET6", "2001:db8::7"),
])
def test_swaks_proxy(ringmaild, tmp_path, version, family, source):
    d = smtp_daemon(ringmaild, tmp_path, proxy=True, smtp={"proxy_trusted": ["127.0.0.0/8"]})
    dest = "198.51.100.1" if "6" not in family else "2001:db8::1"
    p = swaks("--port", str(d.port("proxied")), "--proxy-version", version, "--proxy-family", family,
              "--proxy-source", source, "--proxy-source-port", "40007", "--proxy-dest", dest,
              "--proxy-dest-port", "25", "--from", "sender@example.org", "--to", "rcpt@relay.test",
              "--data", swaks_data_file(tmp_path, DOTTY))
    out = swaks_ok(p)
    if version == "1":
        # (swaks writes IPv6 addresses in upper case)
        assert (" -> PROXY %s %s %s 40007 25\n" % (family, source, dest)).lower() in out.lower(), out[:500]
    [qid] = qids_in(out)
    _, env = check_spooled(d, qid, "sender@example.org", ["rcpt@relay.test"], DOTTY, client=source)
    assert env["client"] == source


def test_swaks_proxy_raw_header(ringmaild, tmp_path):
    """--proxy passes the v1 text after "PROXY " as given (here UNKNOWN: the socket's address stays)."""
    d = smtp_daemon(ringmaild, tmp_path, proxy=True, smtp={"proxy_trusted": ["127.0.0.0/8"]})
    p = swaks("--port", str(d.port("proxied")), "--proxy", "UNKNOWN", "--from", "sender@example.org",
              "--to", "rcpt@relay.test", "--data", swaks_data_file(tmp_path, DOTTY))
    out = swaks_ok(p)
    [qid] = qids_in(out)
    _, env = check_spooled(d, qid, "sender@example.org", ["rcpt@relay.test"], DOTTY)
    assert env["client"] == "127.0.0.1"


def test_swaks_proxy_untrusted_refused(ringmaild, tmp_path):
    """A PROXY listener and a client outside smtp.proxy_trusted: closed before the greeting."""
    d = smtp_daemon(ringmaild, tmp_path, proxy=True, smtp={"proxy_trusted": ["192.0.2.0/24"]})
    p = swaks("--port", str(d.port("proxied")), "--proxy-version", "1", "--proxy-family", "TCP4",
              "--proxy-source", "192.0.2.7", "--proxy-source-port", "1", "--proxy-dest", "198.51.100.1",
              "--proxy-dest-port", "25", "--from", "sender@example.org", "--to", "rcpt@relay.test")
    assert p.returncode != 0 and "queued as" not in p.stdout.decode(errors="replace")
    d.wait_log(r"smtp: PROXY listener 'proxied': 127\.0\.0\.1:\d+ is not in smtp\.proxy_trusted: closed")
    assert spool_messages(d) == {}


# ---- curl ---------------------------------------------------------------------------------------

def curl(*args, timeout=RUN_TIMEOUT):
    return run([need("curl"), "-sS", "-v", "--max-time", "30", *args], timeout=timeout)


def curl_ok(p):
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, "curl exit %d:\n%s" % (p.returncode, err[-3000:])
    return err


def upload(tmp_path, content, name="curl.eml"):
    f = tmp_path / name
    f.write_bytes(content)
    return str(f)


def test_curl_smtp_upload(smtpd, tmp_path):
    p = curl("smtp://127.0.0.1:%d/client.example" % smtpd.port("mx"), "--mail-from", "sender@example.org",
             "--mail-rcpt", "one@relay.test", "--mail-rcpt", "two@relay.test", "--upload-file",
             upload(tmp_path, DOTTY))
    err = curl_ok(p)
    assert "> EHLO client.example" in err and "> MAIL FROM:<sender@example.org> SIZE=%d" % len(DOTTY) in err
    [qid] = qids_in(err)
    _, env = check_spooled(smtpd, qid, "sender@example.org", ["one@relay.test", "two@relay.test"], DOTTY, rcpt=None)
    assert env["size_declared"] == str(len(DOTTY))


@pytest.mark.parametrize("login", [[], ["--login-options", "AUTH=LOGIN"], ["--sasl-ir"]],
                         ids=["plain", "login", "plain-ir"])
def test_curl_smtps_auth(smtpd_auth_user, tmp_path, login):
    d = smtpd_auth_user
    user, password, _ = USERS[2]
    p = curl("smtps://127.0.0.1:%d/client.example" % d.port("submissions"), "--insecure",
             "--user", "%s:%s" % (user, password), *login, "--mail-from", user, "--mail-rcpt", "far@elsewhere.example",
             "--upload-file", upload(tmp_path, DOTTY))
    err = curl_ok(p)
    m = re.search(r"SSL connection using (TLSv1\.[23]) / (\S+)", err)
    assert m, err[-2000:]
    mech = "LOGIN" if login and login[0] == "--login-options" else "PLAIN"
    assert re.search(r"> AUTH %s" % mech, err) and "< 235 2.7.0" in err, err[-3000:]
    [qid] = qids_in(err)
    cm, env = check_spooled(d, qid, user, ["far@elsewhere.example"], DOTTY, with_="ESMTPSA", tls=m.group(1),
                            auth=user)
    assert same_cipher(cm.group("cipher").decode(), m.group(2))
    assert env["auth"] == user


@pytest.mark.parametrize("listener", ["mx", "submission"])
def test_curl_ssl_reqd_starttls(smtpd, tmp_path, listener):
    auth = ["--user", "demo@dev.test:demo"] if listener == "submission" else []
    sender = "demo@dev.test" if auth else "sender@example.org"
    rcpt = "far@elsewhere.example" if auth else "rcpt@relay.test"
    p = curl("smtp://127.0.0.1:%d/client.example" % smtpd.port(listener), "--ssl-reqd", "--insecure", *auth,
             "--mail-from", sender, "--mail-rcpt", rcpt, "--upload-file", upload(tmp_path, DOTTY))
    err = curl_ok(p)
    assert "> STARTTLS" in err and "< 220 2.0.0" in err, err[-3000:]
    m = re.search(r"SSL connection using (TLSv1\.[23]) / (\S+)", err)
    assert m, err[-2000:]
    [qid] = qids_in(err)
    _, env = check_spooled(smtpd, qid, sender, [rcpt], DOTTY, with_="ESMTPSA" if auth else "ESMTPS",
                           tls=m.group(1))
    assert env["auth"] == ("demo@dev.test" if auth else "")


def test_curl_ssl_reqd_without_starttls_fails(smtpd, tmp_path):
    """The listener without TLS offers no STARTTLS: curl --ssl-reqd gives up (64,
    CURLE_USE_SSL_FAILED) and sends no mail."""
    p = curl("smtp://127.0.0.1:%d/client.example" % smtpd.port("plain"), "--ssl-reqd", "--mail-from",
             "sender@example.org", "--mail-rcpt", "rcpt@relay.test", "--upload-file", upload(tmp_path, DOTTY))
    assert p.returncode == 64, (p.returncode, p.stderr[-2000:])
    assert spool_messages(smtpd) == {}


# ---- Postfix's smtp-source ----------------------------------------------------------------------

def smtp_source(*args, timeout=120):
    return run([need("smtp-source"), *args], timeout=timeout)


SMTP_SOURCE_HEAD = re.compile(rb"From: <sender@example\.org>\r\nTo: <rcpt@relay\.test>\r\nDate: [^\r\n]+\r\n"
                              rb"Message-Id: <[^\r\n]+>\r\n\r\n")


def check_smtp_source_spool(d, count):
    msgs = spool_messages(d)
    assert len(msgs) == count, "spooled %d of %d" % (len(msgs), count)
    for qid, (_size, _h, sender, rcpts) in msgs.items():
        assert sender == "sender@example.org" and rcpts == ["rcpt@relay.test"], (qid, sender, rcpts)
    # The content of a few: smtp-source's headers, then -l 4096 of payload lines.
    for qid in sorted(msgs)[::max(1, count // 5)]:
        header, rest = split_received(spool_content(d, qid))
        # smtp-source speaks HELO: "with SMTP".
        assert received_rx(qid, with_="SMTP", rcpt="rcpt@relay.test").match(header), header
        m = SMTP_SOURCE_HEAD.match(rest)
        assert m, rest[:300]
        body = rest[m.end():]
        assert body.endswith(b"\r\n") and re.fullmatch(rb"(\d*X*\r\n)+", body), body[-200:]
        assert 3900 <= len(body) <= 4200, len(body)


def test_smtp_source_parallel(smtpd):
    before = smtpd.total("connections_accepted")
    p = smtp_source("-s", "5", "-m", "200", "-l", "4096", "-M", "client.example", "-f", "sender@example.org",
                    "-t", "rcpt@relay.test", "127.0.0.1:%d" % smtpd.port("mx"))
    assert p.returncode == 0 and p.stderr == b"", (p.returncode, p.stderr[-2000:])
    check_smtp_source_spool(smtpd, 200)
    # A connection per message (and the stats requests' own).
    assert smtpd.total("connections_accepted") - before >= 200


def test_smtp_source_reuse_and_count(smtpd):
    before = smtpd.total("connections_accepted")
    p = smtp_source("-d", "-c", "-s", "5", "-m", "200", "-l", "4096", "-M", "client.example",
                    "-f", "sender@example.org", "-t", "rcpt@relay.test", "127.0.0.1:%d" % smtpd.port("mx"))
    assert p.returncode == 0 and p.stderr == b"", (p.returncode, p.stderr[-2000:])
    # -c: a running counter of completed DATA commands, up to 200.
    assert [int(x) for x in p.stdout.split()] == list(range(1, 201)), p.stdout[-200:]
    check_smtp_source_spool(smtpd, 200)
    # -d: the five sessions carried all 200 (one more accept: the first stats request).
    assert smtpd.total("connections_accepted") - before <= 5 + 2


def test_smtp_source_file_with_dot_lines(smtpd, tmp_path):
    """-F: a pre-formatted message; smtp-source stuffs the dots, ends each line
    in CR LF, and sends one empty line after the file (seen against a plain
    socket sink too: it is smtp-source's doing)."""
    f = tmp_path / "msg.txt"
    f.write_bytes(DOTTY.replace(b"\r\n", b"\n"))
    p = smtp_source("-F", str(f), "-m", "3", "-M", "client.example", "-f", "sender@example.org",
                    "-t", "rcpt@relay.test", "127.0.0.1:%d" % smtpd.port("mx"))
    assert p.returncode == 0, p.stderr
    msgs = spool_messages(smtpd)
    assert len(msgs) == 3
    for qid in msgs:
        check_spooled(smtpd, qid, "sender@example.org", ["rcpt@relay.test"], DOTTY + b"\r\n", with_="SMTP")


# ---- openssl s_client ---------------------------------------------------------------------------

def s_client(args, stdin, timeout=30):
    return run([need("openssl"), "s_client", "-brief", "-ign_eof", *args], input=stdin, timeout=timeout)


@pytest.mark.parametrize("flag,version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
@pytest.mark.parametrize("listener", ["submission", "mx"])
def test_s_client_starttls(smtpd, flag, version, listener):
    p = s_client(["-starttls", "smtp", flag, "-connect", "127.0.0.1:%d" % smtpd.port(listener)],
                 b"EHLO client.example\r\nQUIT\r\n")
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert p.returncode == 0, (p.returncode, out, err)
    assert "Protocol version: %s" % version in err, err
    # The EHLO over TLS: no STARTTLS any more; AUTH on the submission listener only.
    m = re.search(r"250-mx\.test\.invalid Hello\r?\n((?:250-.*\r?\n)*250 .*)\r?\n", out)
    assert m, out
    kws = [l[4:].rstrip("\r") for l in m.group(1).splitlines()]
    assert "STARTTLS" not in kws and "PIPELINING" in kws and "CHUNKING" in kws, kws
    assert ("AUTH PLAIN LOGIN" in kws) == (listener == "submission"), kws
    assert re.search(r"221 2\.0\.0 Bye", out), out
    smtpd.wait_log(r"TLS %s \S+ sni=- from 127\.0\.0\.1:\d+" % re.escape(version))


@pytest.mark.parametrize("flag,version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_s_client_implicit_tls(smtpd, flag, version):
    p = s_client([flag, "-connect", "127.0.0.1:%d" % smtpd.port("submissions")],
                 b"EHLO client.example\r\nQUIT\r\n")
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert p.returncode == 0, (p.returncode, out, err)
    assert "Protocol version: %s" % version in err, err
    assert out.startswith("220 mx.test.invalid ESMTP ringmail\r\n"), out
    assert "250 AUTH PLAIN LOGIN\r\n" in out and "STARTTLS" not in out and "221 2.0.0 Bye" in out, out


@pytest.mark.parametrize("flag,version", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_s_client_implicit_tls_whole_session_in_one_write(smtpd, flag, version):
    """s_client writes what it reads from stdin: EHLO, AUTH, MAIL, RCPT, DATA,
    the (stuffed) content and QUIT arrive together; the server must take
    them in order, AUTH's verification on the thread pool included."""
    auth = base64.b64encode(b"\0demo@dev.test\0demo")
    stdin = (b"EHLO client.example\r\nAUTH PLAIN " + auth + b"\r\nMAIL FROM:<demo@dev.test>\r\n"
             b"RCPT TO:<far@elsewhere.example>\r\nDATA\r\n" + dot_stuff(DOTTY) + b".\r\nQUIT\r\n")
    p = s_client([flag, "-connect", "127.0.0.1:%d" % smtpd.port("submissions")], stdin)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert p.returncode == 0, (p.returncode, out, err)
    assert "Protocol version: %s" % version in err, err
    codes = [int(l[:3]) for l in out.splitlines() if re.match(r"^\d{3} ", l)]
    assert codes == [220, 250, 235, 250, 250, 354, 250, 221], out
    [qid] = qids_in(out)
    check_spooled(smtpd, qid, "demo@dev.test", ["far@elsewhere.example"], DOTTY, with_="ESMTPSA", tls=version)


# ---- the Received: header's "with", TLS and AUTH parts --------------------------------------------

def raw_session(d, listener, helo_verb, tls, user):
    """One message over SmtpConn: returns its queue id and the TLS version used."""
    implicit = listener == "submissions"
    with SmtpConn(d.port(listener), tls=implicit) as c:
        version = c.sock.version() if implicit else None
        c.cmd(helo_verb + b" client.example", 250)
        if tls and not implicit:
            c.cmd(b"STARTTLS", 220)
            c.starttls_wrap()
            version = c.sock.version()
            c.cmd(helo_verb + b" client.example", 250)
        if user:
            pw = dict((u, p) for u, p, _ in USERS)[user]
            c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0" + pw.encode()), 235)
        sender = user or "sender@example.org"
        rcpt = b"far@elsewhere.example" if user else b"rcpt@relay.test"
        qid = queue_id(c.message(sender.encode(), [rcpt], DOTTY))
        c.cmd(b"QUIT", 221)
    return qid, version, sender, rcpt.decode()


@pytest.mark.parametrize("listener,verb,tls,user,with_", [
    ("mx", b"EHLO", False, None, "ESMTP"),
    ("mx", b"HELO", False, None, "SMTP"),
    ("plain", b"EHLO", False, None, "ESMTP"),
    ("mx", b"EHLO", True, None, "ESMTPS"),
    ("submission", b"EHLO", True, "demo@dev.test", "ESMTPSA"),
    ("submissions", b"EHLO", True, "bob@example.test", "ESMTPSA"),
])
@pytest.mark.parametrize("received_auth_user", [False, True], ids=["auth-user-off", "auth-user-on"])
def test_received_header(ringmaild, tmp_path, listener, verb, tls, user, with_, received_auth_user):
    d = smtp_daemon(ringmaild, tmp_path, smtp={"received_auth_user": received_auth_user})
    qid, version, sender, rcpt = raw_session(d, listener, verb, tls, user)
    held = spool_content(d, qid)
    header, rest = split_received(held)
    assert rest == DOTTY
    want_auth = user if (user and received_auth_user) else None
    m = received_rx(qid, with_=with_, tls=version, auth=want_auth, rcpt=rcpt).match(header)
    assert m, "want with %s, tls %s, auth %s:\n%r" % (with_, version, want_auth, header)
    assert (b"(using " in header) == tls
    assert (b"(Authenticated sender:" in header) == bool(want_auth)
    env = spool_envelope(d, qid)
    assert env["auth"] == (user or "")        # the envelope has the user either way
