"""The SMTP server (proto/smtp_session.c) under attack: what a hostile or
broken client can try, and what must come back.

  open relay      every trick for getting mail to a domain that is not a
                  relay domain past an unauthenticated outside client (the
                  default smtp_daemon has no mynetworks: 127.0.0.1 is
                  outside) gets 554 5.7.1 (or a 501 when the path is not
                  even an address); nothing is spooled; AUTH and mynetworks
                  are the positive controls
  STARTTLS        commands pipelined after STARTTLS in the same packet
                  (CVE-2011-0411) are never executed, not even as a partial
                  line completed over TLS
  smuggling       every bare CR / bare LF form of the end of data (SEC
                  Consult 2023), with and without a smuggled transaction
                  behind it: 550 5.6.0 and nothing spooled under bare_lf =
                  "reject", one message with only CR LF under "normalise";
                  the session stays in step either way
  AUTH            not before TLS (unless auth_plaintext), not on MX, and
                  MAIL before AUTH refused on submission
  oversize        command lines, content lines, messages, SIZE=, recipients
  slowloris       every state a client can stall in ends with 421 4.4.2
                  near its deadline, and the connection is gone from stats
  limits          smtp_connections_per_client and smtp_connections_max
  PROXY           v1 TCP4/TCP6 and v2 headers set the client address (the
                  Received: header, the envelope, the log, the per-client
                  limit, mynetworks); split headers, bad headers, an
                  untrusted proxy; swaks as a real PROXY client
  pregreet        talking before the greeting: 554 and close, or logged

Every listener and client is on loopback (127.0.0.0/8: some clients bind
127.0.0.2 ... to be other client addresses); every wait is bounded.
"""
import base64
import re
import select
import socket
import ssl
import struct
import subprocess
import time

import pytest

from smtputil import (SmtpConn, queue_id, smtp_daemon, spool_content, spool_envelope,
                      spool_messages)


def tls_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def plain_b64(user=b"demo@dev.test", password=b"demo"):
    return base64.b64encode(b"\0" + user + b"\0" + password)


class BoundConn(SmtpConn):
    """SmtpConn from a chosen loopback source address (another client to the server)."""

    def __init__(self, port, source, timeout=20.0, greet=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.greeting = self.reply() if greet else None


def pending(sock, wait=0.0):
    """Bytes already waiting on sock (after up to wait seconds), without consuming them."""
    r, _, _ = select.select([sock], [], [], wait)
    if not r:
        return b""
    sock.setblocking(False)
    try:
        return sock.recv(65536, socket.MSG_PEEK)
    except (BlockingIOError, ConnectionResetError):
        return b""
    finally:
        sock.setblocking(True)


def closed_without_reply(sock, timeout):
    """Wait (bounded) for the server to close: returns (seconds, bytes received before)."""
    t0 = time.monotonic()
    got = b""
    sock.settimeout(timeout)
    try:
        while len(got) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    except socket.timeout:
        raise AssertionError("server did not close within %.1f s; got %r" % (timeout, got[:200]))
    return time.monotonic() - t0, got


def expect_timeout(c, started, deadline_s, slack=2.5):
    """The 421 4.4.2 timeout reply near the deadline, then the close."""
    r = c.reply()
    took = time.monotonic() - started
    assert r.code == 421 and r.lines[0].startswith(b"421 4.4.2 ") and b"timeout exceeded" in r.lines[0], r
    assert deadline_s * 0.8 <= took <= deadline_s + slack, "421 after %.2f s (deadline %.1f s)" % (took, deadline_s)
    c.expect_close(timeout=5)
    return took


def txn(c, sender=b"a@example.org", rcpts=(b"b@relay.test",)):
    c.cmd(b"MAIL FROM:<%s>" % sender, 250)
    for r in rcpts:
        c.cmd(b"RCPT TO:<%s>" % r, 250)


def body_of(held):
    """Spooled content after our Received: header (its first line, then the TAB-continued ones)."""
    assert held.startswith(b"Received: "), held[:200]
    pos = held.index(b"\r\n") + 2
    while held[pos:pos + 1] == b"\t":
        pos = held.index(b"\r\n", pos) + 2
    return held[pos:]


# ---- open relay ---------------------------------------------------------------------------

# (recipient path as sent, why): every one of these names a mailbox outside relay.test, or routes
# through relay.test to one, and must get 554 5.7.1 from an outside client.
RELAY_DENIED = [
    (b"<someone@elsewhere.example>", "plain foreign domain"),
    (b"<someone@ELSEWHERE.EXAMPLE>", "foreign, upper case"),
    (b"<postmaster@elsewhere.example>", "foreign postmaster"),
    (b"<someone@sub.relay.test>", "subdomain of the relay domain is not the relay domain"),
    (b"<someone@relay.test.elsewhere.example>", "relay domain as a prefix"),
    (b"<someone@xrelay.test>", "relay domain as a suffix"),
    (b"<someone@relay-test.example>", "look-alike"),
    (b"<someone%elsewhere.example@relay.test>", "percent hack"),
    (b"<someone%elsewhere.example@RELAY.TEST>", "percent hack, upper case"),
    (b"<someone%elsewhere.example%relay.test@relay.test>", "double percent hack"),
    (b"<elsewhere.example!someone@relay.test>", "bang path"),
    (b"<ELSEWHERE.EXAMPLE!someone@Relay.Test>", "bang path, mixed case"),
    (b"<\"someone@elsewhere.example\"@relay.test>", "quoted @"),
    (b"<\"someone%elsewhere.example\"@relay.test>", "quoted %"),
    (b"<\"elsewhere.example!someone\"@relay.test>", "quoted !"),
    (b"<\"someone\\@elsewhere.example\"@relay.test>", "quoted-pair @"),
    (b"<\"someone\\%elsewhere.example\"@relay.test>", "quoted-pair %"),
    (b"<@relay.test:someone@elsewhere.example>", "source route through the relay domain"),
    (b"<@relay.test,@relay.test:someone@elsewhere.example>", "two-hop source route"),
    (b"<@RELAY.TEST:someone%other.example@relay.test>", "source route and percent hack"),
    (b"<someone@[127.0.0.1]>", "IPv4 address literal"),
    (b"<postmaster@[127.0.0.1]>", "postmaster at an address literal"),
    (b"<someone@[192.0.2.1]>", "foreign IPv4 literal"),
    (b"<someone@[IPv6:::1]>", "IPv6 literal"),
    (b"<someone@[ipv6:2001:db8::1]>", "IPv6 literal, lower-case tag"),
    (b"<someone@" + b"a" * 60 + b"." + b"b" * 60 + b"." + b"c" * 60 + b"." + b"d" * 55 + b".example>",
     "long (but legal) foreign domain"),
]

# Not even an address (or not one RFC 5321 allows): refused as syntax, 501, never 250.
RELAY_MALFORMED = [
    (b"<someone@relay.test.>", "trailing dot"),
    (b"<someone@RELAY.TEST.>", "trailing dot, upper case"),
    (b"<someone@relay.test..>", "two trailing dots"),
    (b"<someone@.relay.test>", "leading dot"),
    (b"<someone@relay.test@elsewhere.example>", "two @"),
    (b"<someone@elsewhere.example@relay.test>", "two @, relay last"),
    (b"<someone@relay.test\x00.elsewhere.example>", "NUL in the domain"),
    (b"<someone@elsewhere.example\x00@relay.test>", "NUL before a second @"),
    (b"<some\x00one@relay.test>", "NUL in the local part"),
    (b"<someone@relay.test>\x00", "NUL after the path"),
    (b"<someone@relay.test\x01>", "control byte"),
    (b"<someone\x7f@relay.test>", "DEL"),
    (b"<someone@relay.test\x1b[0m>", "escape sequence"),
    (b"<someone@relay.test\t>", "tab"),
    (b"<someone@elsewhere.example\r@relay.test>", "bare CR inside the path"),
    (b"<someone@" + b"x" * 64 + b".relay.test>", "label over 63"),
    (b"<someone@" + b"a." * 125 + b"relay.test>", "domain over 255, ending in the relay domain"),
    (b"<someone@" + b"abcdefghi." * 30 + b"elsewhere.example>", "domain over 255"),
    (b"<" + b"l" * 65 + b"@relay.test>", "local part over 64"),
    (b"<someone@[127.0.0.1>", "broken literal"),
    (b"<someone@[IPv6:::1]relay.test>", "literal then a name"),
    (b"<someone@[TEST:relay.test]>", "general address literal"),
    (b"<someone@relay_test>", "underscore"),
    (b"someone@elsewhere.example", "no brackets"),
    (b"<someone@relay.test> <x@elsewhere.example>", "second path"),
]


@pytest.fixture
def relayd(ringmaild, tmp_path):
    return smtp_daemon(ringmaild, tmp_path, limits={"smtp_errors_max": 1000})


def test_open_relay_refused_from_outside(relayd):
    d = relayd
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<outside@example.org>", 250)
        wrong = []
        for path, why in RELAY_DENIED:
            r = c.cmd(b"RCPT TO:" + path)
            if not (r.code == 554 and r.lines[0].startswith(b"554 5.7.1 ") and b"Relay access denied" in r.lines[0]):
                wrong.append((why, path, r))
        for path, why in RELAY_MALFORMED:
            # Refused as syntax before any policy is asked (501 5.1.3, 5.5.2 or 5.5.4).
            r = c.cmd(b"RCPT TO:" + path)
            if r.code != 501:
                wrong.append((why, path, r))
        assert not wrong, "\n".join("%s %r: %r" % w for w in wrong)
        # No recipient was taken: DATA has none to send to.
        r = c.cmd(b"DATA", 554)
        assert b"5.5.1" in r.lines[0], r
        c.cmd(b"NOOP", 250)
        # The same with SMTPUTF8: a Unicode look-alike of the relay domain is another domain.
        c.cmd(b"RSET", 250)
        c.cmd(b"MAIL FROM:<outside@example.org> SMTPUTF8", 250)
        for path in ("<someone@relay.te\u017ft>", "<someone@r\u0435lay.test>", "<someone@relay.test\u3002>",
                     "<someone@\uff52elay.test>"):
            r = c.cmd(b"RCPT TO:" + path.encode())
            assert r.code >= 500 and r.code != 555, (path, r)
        c.cmd(b"DATA", 554)
    assert spool_messages(d) == {}
    log = d.log()
    assert log.count("relay denied: from=<outside@example.org>") >= len(RELAY_DENIED), log[-3000:]


def test_relay_domain_variants_accepted_and_only_they_are_spooled(relayd):
    d = relayd
    good = [(b"<user1@relay.test>", "user1@relay.test"),
            (b"<user2@RELAY.TEST>", "user2@RELAY.TEST"),
            (b"<User3@ReLaY.TeSt>", "User3@ReLaY.TeSt"),
            (b"<\"user4\"@relay.test>", "user4@relay.test"),          # quoting without routing characters
            (b"<@elsewhere.example:user5@relay.test>", "user5@relay.test"),   # source route ignored
            (b"<Postmaster>", "postmaster")]
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<outside@example.org>", 250)
        for path, _ in good:
            c.cmd(b"RCPT TO:" + path, 250)
        for path, _ in RELAY_DENIED[:12]:      # interleaved refusals do not disturb the transaction
            c.cmd(b"RCPT TO:" + path, 554)
        c.cmd(b"DATA", 354)
        c.send(b"Subject: relay\r\n\r\nbody\r\n.\r\n")
        qid = queue_id(c.reply())
        c.cmd(b"QUIT", 221)
    msgs = spool_messages(d)
    assert list(msgs) == [qid]
    assert msgs[qid][3] == [s for _, s in good], msgs[qid]


def test_authenticated_client_may_relay(relayd):
    d = relayd
    with SmtpConn(d.port("submissions"), tls=True) as c:
        c.ehlo()
        c.cmd(b"AUTH PLAIN " + plain_b64(), 235)
        c.cmd(b"MAIL FROM:<demo@dev.test>", 250)
        c.cmd(b"RCPT TO:<someone@elsewhere.example>", 250)
        c.cmd(b"RCPT TO:<someone%other.example@relay.test>", 250)    # trusted: may route
        c.cmd(b"RCPT TO:<x@[192.0.2.1]>", 250)
        c.cmd(b"DATA", 354)
        c.send(b"Subject: auth relay\r\n\r\nok\r\n.\r\n")
        qid = queue_id(c.reply())
    # The same user over STARTTLS on 587.
    with SmtpConn(d.port("submission")) as c:
        c.ehlo()
        c.cmd(b"STARTTLS", 220)
        c.starttls_wrap()
        c.ehlo()
        c.cmd(b"AUTH PLAIN " + plain_b64(), 235)
        c.message(b"demo@dev.test", [b"other@elsewhere.example"], b"Subject: 587\r\n\r\nok\r\n")
    msgs = spool_messages(d)
    assert len(msgs) == 2
    assert msgs[qid][3] == ["someone@elsewhere.example", "someone%other.example@relay.test", "x@[192.0.2.1]"]
    assert spool_envelope(d, qid)["auth"] == "demo@dev.test"


def test_mynetworks_client_may_relay(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, smtp={"mynetworks": ["127.0.0.0/8"]})
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.message(b"inside@example.org", [b"someone@elsewhere.example", b"x@[192.0.2.1]"], b"\r\nok\r\n")
    # A mynetworks entry that does not hold the client: outside again.
    d2 = smtp_daemon(ringmaild, tmp_path, name="smtp2", smtp={"mynetworks": ["10.0.0.0/8", "::1/128"]})
    with SmtpConn(d2.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<inside@example.org>", 250)
        assert c.cmd(b"RCPT TO:<someone@elsewhere.example>").code == 554
    assert len(spool_messages(d)) == 1 and spool_messages(d2) == {}


# ---- STARTTLS command injection (CVE-2011-0411) ----------------------------------------------

def assert_no_plaintext_after_220(c):
    extra = c.buf + pending(c.sock, wait=0.3)
    assert extra == b"", "plaintext after 220 (pipelined commands executed before TLS): %r" % extra


def test_starttls_injection_in_one_packet(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path)
    for listener in ("mx", "submission"):
        with SmtpConn(d.port(listener)) as c:
            c.ehlo()
            c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<x@evil.example>\r\nRCPT TO:<v@relay.test>\r\n")
            r = c.reply()
            assert r.lines == [b"220 2.0.0 Ready to start TLS"], r
            assert_no_plaintext_after_220(c)
            c.starttls_wrap()
            # The first reply over TLS is for the first command sent over TLS, and the
            # session knows nothing from before: no HELO, no transaction.
            r = c.cmd(b"MAIL FROM:<a@example.org>")
            assert r.lines == [b"503 5.5.1 Error: send HELO/EHLO first"], (listener, r)
            r = c.ehlo()
            assert r.lines[0] == b"250-mx.test.invalid Hello", r
            if listener == "mx":
                c.cmd(b"MAIL FROM:<a@example.org>", 250)        # not 503 nested: the injected MAIL never ran
                c.cmd(b"RCPT TO:<b@relay.test>", 250)
                c.cmd(b"DATA", 354)
                c.send(b"Subject: after tls\r\n\r\nok\r\n.\r\n")
                qid = queue_id(c.reply())
            c.cmd(b"QUIT", 221)
            c.expect_close()
    msgs = spool_messages(d)
    assert list(msgs) == [qid] and msgs[qid][2] == "a@example.org" and msgs[qid][3] == ["b@relay.test"]


def test_starttls_injection_partial_lines(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path)
    # A partial command after STARTTLS in the same packet: it must not be completed by
    # the first bytes sent over TLS.
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nMAIL FROM:<x@evil.example>")
        assert c.reply().code == 220
        assert_no_plaintext_after_220(c)
        c.starttls_wrap()
        r = c.cmd(b"EHLO client.example")
        assert r.code == 250 and r.lines[0] == b"250-mx.test.invalid Hello", r
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
    # The STARTTLS line itself arrives in two sends, the second with injected commands.
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.send(b"NOOP\r\nSTART")
        assert c.reply().code == 250
        time.sleep(0.1)
        c.send(b"TLS\r\nRSET\r\nEHLO evil.example\r\nMAIL FROM:<x@evil.example>\r\n")
        assert c.reply().code == 220
        assert_no_plaintext_after_220(c)
        c.starttls_wrap()
        assert c.cmd(b"RCPT TO:<b@relay.test>").code == 503       # no MAIL: the injected one never ran
        c.ehlo()
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.cmd(b"QUIT", 221)
    # Bytes of the client's first TLS record pipelined with STARTTLS itself are not
    # plaintext commands either: whatever happens to the handshake, nothing is executed.
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nQUIT\r\n")
        assert c.reply().code == 220
        assert_no_plaintext_after_220(c)
        c.starttls_wrap()
        c.ehlo()
        c.cmd(b"NOOP", 250)
    assert spool_messages(d) == {}
    assert "evil.example" not in d.log()


# ---- SMTP smuggling ------------------------------------------------------------------------

SMUGGLED_TXN = (b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@relay.test>\r\nDATA\r\n"
                b"From: ceo@bank.example\r\nSubject: smuggled\r\n\r\npay now\r\n")

END_VARIANTS = [
    (b"\n.\n", "LF . LF"),
    (b"\r.\r", "CR . CR"),
    (b"\r\n.\r", "CR LF . CR"),
    (b"\n.\r\n", "LF . CR LF"),
    (b"\r\n.\n", "CR LF . LF"),
    (b"\r.\r\n", "CR . CR LF"),
    (b"\r.\n", "CR . LF"),
    (b"\n.\r", "LF . CR"),
]


def smuggle_payloads():
    out = []
    for end, name in END_VARIANTS:
        out.append((b"Subject: s\r\n\r\nfirst" + end + b"more\r\n", name))
        out.append((b"Subject: s\r\n\r\nfirst" + end + SMUGGLED_TXN, name + " + smuggled transaction"))
        out.append((b"Subject: s\r\n\r\nfirst" + end + b"\r\n" + SMUGGLED_TXN, name + " CR LF + smuggled"))
    return out


def test_smuggling_refused_in_reject_mode(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_errors_max": 1000})
    wrong = []
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        for payload, name in smuggle_payloads():
            txn(c)
            c.cmd(b"DATA", 354)
            # The client's real end of data: CR LF . CR LF (the payload ends in CR LF).
            c.send(payload + b".\r\n" + b"RSET\r\nNOOP\r\n")
            r = c.reply()
            if not (r.code == 550 and r.lines[0].startswith(b"550 5.6.0 ")):
                wrong.append((name, "end of data", r))
            # In step: exactly the two replies of the two commands sent after, no more.
            r1, r2 = c.reply(), c.reply()
            if r1.lines != [b"250 2.0.0 Ok"] or r2.lines != [b"250 2.0.0 Ok"]:
                wrong.append((name, "after", (r1, r2)))
            left = c.buf + pending(c.sock, wait=0.05)
            if left:
                wrong.append((name, "extra replies", left))
                c.buf = b""
        c.cmd(b"QUIT", 221)
        c.expect_close()
    assert not wrong, "\n".join("%s: %s: %r" % w for w in wrong)
    assert spool_messages(d) == {}
    assert "SMTP smuggling" in d.log()


def test_smuggling_normalised_is_one_message_of_crlf_lines(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, smtp={"bare_lf": "normalise"})
    sent = []
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        for i, (payload, name) in enumerate(smuggle_payloads()):
            txn(c, rcpts=[b"n%d@relay.test" % i])
            c.cmd(b"DATA", 354)
            c.send(payload + b".\r\nNOOP\r\n")
            r = c.reply()
            assert r.code == 250, (name, r)
            sent.append((queue_id(r), i, payload, name))
            assert c.reply().lines == [b"250 2.0.0 Ok"], name
            assert c.buf + pending(c.sock, wait=0.05) == b"", name
        c.cmd(b"QUIT", 221)
    msgs = spool_messages(d)
    # One message per DATA: the smuggled transaction is content, never a second message.
    assert len(msgs) == len(sent), (len(msgs), len(sent))
    for qid, i, payload, name in sent:
        assert msgs[qid][3] == ["n%d@relay.test" % i], (name, msgs[qid])
        held = spool_content(d, qid)
        body = body_of(held)
        lines = held.split(b"\r\n")
        assert all(b"\r" not in l and b"\n" not in l for l in lines), (name, held[-300:])
        assert held.endswith(b"\r\n"), name
        if b"MAIL FROM:<ceo@bank.example>" in payload:
            assert b"MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@relay.test>\r\nDATA\r\n" in body, (name, body)
        assert body.startswith(b"Subject: s\r\n\r\nfirst\r\n"), (name, body[:80])


# ---- AUTH policy ----------------------------------------------------------------------------

def test_auth_requires_tls_on_submission(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path)
    with SmtpConn(d.port("submission")) as c:
        kw = c.ehlo().lines
        assert not any(b"AUTH" in l for l in kw), kw
        for line in (b"AUTH PLAIN " + plain_b64(), b"AUTH LOGIN", b"AUTH PLAIN"):
            assert c.cmd(line).lines == [b"530 5.7.0 Must issue a STARTTLS command first"], line
        assert c.cmd(b"MAIL FROM:<demo@dev.test>").lines == [b"530 5.7.0 Must issue a STARTTLS command first"]
        c.cmd(b"STARTTLS", 220)
        c.starttls_wrap()
        c.ehlo()
        assert c.cmd(b"MAIL FROM:<demo@dev.test>").lines == [b"530 5.7.0 Authentication required"]
        assert c.cmd(b"RCPT TO:<x@relay.test>").code == 503
        c.cmd(b"AUTH PLAIN " + plain_b64(), 235)
        c.message(b"demo@dev.test", [b"x@elsewhere.example"], b"\r\nok\r\n")
    # The password never went over plaintext: nothing about demo was checked before TLS.
    assert d.log().count("AUTH ok: user=demo@dev.test") == 1
    assert "AUTH failed" not in d.log()


def test_auth_plaintext_allows_auth_before_tls(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, smtp={"auth_plaintext": True})
    with SmtpConn(d.port("submission")) as c:
        assert b"250-AUTH PLAIN LOGIN" in c.ehlo().lines or b"250 AUTH PLAIN LOGIN" in c.ehlo().lines
        assert c.cmd(b"MAIL FROM:<demo@dev.test>").lines == [b"530 5.7.0 Authentication required"]
        c.cmd(b"AUTH LOGIN", 334)
        c.cmd(base64.b64encode(b"demo@dev.test"), 334)
        c.cmd(base64.b64encode(b"demo"), 235)
        c.message(b"demo@dev.test", [b"x@elsewhere.example"], b"\r\nplaintext auth\r\n")
    # A submission listener without STARTTLS ("plain" is not submission: AUTH stays refused there).
    with SmtpConn(d.port("plain")) as c:
        c.ehlo()
        assert c.cmd(b"AUTH PLAIN " + plain_b64()).code == 503
    assert len(spool_messages(d)) == 1


def test_auth_refused_on_mx(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, smtp={"auth_plaintext": True})
    with SmtpConn(d.port("mx")) as c:
        assert not any(b"AUTH" in l for l in c.ehlo().lines)
        r = c.cmd(b"AUTH PLAIN " + plain_b64())
        assert r.lines == [b"503 5.5.1 Error: authentication not enabled"], r
        c.cmd(b"STARTTLS", 220)
        c.starttls_wrap()
        assert not any(b"AUTH" in l for l in c.ehlo().lines)
        assert c.cmd(b"AUTH PLAIN " + plain_b64()).code == 503
        assert c.cmd(b"AUTH LOGIN").code == 503
        # Not authenticated, so still no relaying.
        c.cmd(b"MAIL FROM:<demo@dev.test>", 250)
        assert c.cmd(b"RCPT TO:<x@elsewhere.example>").code == 554
    assert "AUTH ok" not in d.log()


# ---- oversize ----------------------------------------------------------------------------------

def test_command_line_limits(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path)
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        # 512 octets with the CR LF is a command line; 513 is not.
        c.cmd(b"NOOP " + b"x" * 505, 250)
        assert c.cmd(b"NOOP " + b"x" * 506).lines == [b"500 5.5.6 Line too long"]
        c.cmd(b"NOOP", 250)
        c.send(b"RCPT TO:<" + b"a" * 600 + b"@relay.test>\r\nMAIL FROM:<a@example.org>\r\n")
        assert c.reply().code == 500
        assert c.reply().code == 250                 # the MAIL after it ran, in step
        c.cmd(b"RSET", 250)
        # A 100 KB line, in one send and trickled in pieces: one 500, then in step.
        c.send(b"NOOP " + b"y" * 100000 + b"\r\nNOOP\r\n")
        assert c.reply().lines == [b"500 5.5.6 Line too long"]
        assert c.reply().code == 250
        for i in range(20):
            c.send(b"z" * 5000)
        c.send(b"\r\nHELP\r\n")
        assert c.reply().code == 500
        assert c.reply().code == 214
        assert c.buf + pending(c.sock, wait=0.05) == b""
    assert spool_messages(d) == {}


def test_auth_line_up_to_12288(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path)
    with SmtpConn(d.port("submissions"), tls=True) as c:
        c.ehlo()
        # An initial response making the line 12287 octets with its CR LF: a line (not 500
        # 5.5.6): too long a password is a failed AUTH, 535.
        resp = base64.b64encode(b"\0demo@dev.test\0" + b"p" * 9190)[:12272]
        line = b"AUTH PLAIN " + resp
        assert len(line) + 2 <= 12288
        r = c.cmd(line)
        assert r.code in (535, 501) and not r.lines[0].startswith(b"500 5.5.6"), r
        # The SASL response line on its own: 12284 base64 characters, 12286 with CR LF.
        c.cmd(b"AUTH PLAIN", 334)
        r = c.cmd(base64.b64encode(b"\0demo@dev.test\0" + b"q" * 9198)[:12284])
        assert r.code in (535, 501) and not r.lines[0].startswith(b"500 5.5.6"), r
        # Past 12288 it is too long, for AUTH too; in step after.
        r = c.cmd(b"AUTH PLAIN " + b"A" * 13000)
        assert r.lines[0].startswith(b"500 5.5.6"), r
        c.cmd(b"AUTH LOGIN", 334)
        r = c.cmd(b"B" * 13000)
        assert r.lines[0].startswith(b"500 5.5.6"), r
        # Still able to authenticate afterwards (errors did not wedge the session).
        c.cmd(b"AUTH PLAIN " + plain_b64(), 235)
        # A long line that only starts like AUTH is not an AUTH line.
        r = c.cmd(b"NOOP AUTH " + b"x" * 1000)
        assert r.lines == [b"500 5.5.6 Line too long"], r


def test_message_size_limit(ringmaild, tmp_path):
    lim = 65536
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_message_bytes_max": lim})

    def content(n):
        line = b"x" * 98 + b"\r\n"
        body = line * (n // 100)
        return body + b"y" * (n - len(body) - 2) + b"\r\n"

    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        r = c.cmd(b"MAIL FROM:<a@example.org> SIZE=%d" % (lim + 1))
        assert r.code == 552 and r.lines[0].startswith(b"552 5.3.4 "), r
        r = c.cmd(b"MAIL FROM:<a@example.org> SIZE=99999999999999999999999")
        assert r.code in (552, 501), r
        c.cmd(b"MAIL FROM:<a@example.org> SIZE=%d" % lim, 250)
        c.cmd(b"RSET", 250)
        # Exactly the limit: taken.
        exact = content(lim)
        assert len(exact) == lim
        qid = queue_id(c.message(b"a@example.org", [b"b@relay.test"], exact))
        # One byte over, by DATA: 552 after the data, nothing spooled.
        wrong = []
        for over in (lim + 1, lim + 100, lim + 1500, lim + 5000, 3 * lim):
            txn(c)
            c.cmd(b"DATA", 354)
            c.send(content(over) + b".\r\n")
            r = c.reply()
            if not (r.code == 552 and r.lines[0].startswith(b"552 5.3.4 ")):
                wrong.append((over, r))
            c.cmd(b"NOOP", 250)
        assert not wrong, "messages over smtp_message_bytes_max = %d not refused: %r" % (lim, wrong)
        # BDAT: chunks adding up to one byte over the limit.
        txn(c)
        c.send(b"BDAT 40000\r\n" + b"z" * 40000)
        assert c.reply().code == 250
        c.send(b"BDAT %d LAST\r\n" % (lim + 1 - 40000) + b"z" * (lim + 1 - 40000))
        r = c.reply()
        assert r.code == 552 and b"5.3.4" in r.lines[0], r
        c.cmd(b"NOOP", 250)
    msgs = spool_messages(d)
    assert list(msgs) == [qid], msgs
    assert body_of(spool_content(d, qid)) == exact


def test_recipient_limit_452(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_recipients_max": 100, "smtp_errors_max": 1000})
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.send(b"".join(b"RCPT TO:<r%d@relay.test>\r\n" % i for i in range(130)))
        replies = [c.reply() for _ in range(130)]
        assert [r.code for r in replies] == [250] * 100 + [452] * 30
        assert all(r.lines[0].startswith(b"452 4.5.3 ") for r in replies[100:]), replies[100]
        c.cmd(b"DATA", 354)
        c.send(b"\r\n.\r\n")
        qid = queue_id(c.reply())
    assert spool_messages(d)[qid][3] == ["r%d@relay.test" % i for i in range(100)]


def test_content_line_limit(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path)          # smtp_text_line_bytes_max: 1000 (the default)
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        ok = b"Subject: l\r\n\r\n" + b"a" * 998 + b"\r\n"
        qid = queue_id(c.message(b"a@example.org", [b"b@relay.test"], ok))
        for body in (b"a" * 999 + b"\r\n", b"short\r\n" + b"b" * 5000 + b"\r\nshort\r\n",
                     b"c" * 200000 + b"\r\n"):
            txn(c)
            c.cmd(b"DATA", 354)
            c.send(body + b".\r\n")
            r = c.reply()
            assert r.code == 500 and r.lines[0].startswith(b"500 5.5.6 "), (len(body), r)
            c.cmd(b"NOOP", 250)
        # The same through BDAT.
        txn(c)
        body = b"d" * 1500 + b"\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        r = c.reply()
        assert r.code == 500 and r.lines[0].startswith(b"500 5.5.6 "), r
        c.cmd(b"NOOP", 250)
    assert list(spool_messages(d)) == [qid]


# ---- slowloris ---------------------------------------------------------------------------------

SLOW = {"smtp_command_timeout_ms": 1000, "smtp_data_timeout_ms": 1000, "smtp_proxy_timeout_ms": 1000,
        "tls_handshake_timeout_ms": 1000}


@pytest.fixture
def slowd(ringmaild, tmp_path):
    return smtp_daemon(ringmaild, tmp_path, limits=SLOW, proxy=True,
                       smtp={"proxy_trusted": ["127.0.0.0/8"]})


def trickle(c, data, every):
    """Send data one byte every `every` seconds until the server answers or closes;
    returns the seconds from the first byte.  Bounded by len(data)."""
    t0 = time.monotonic()
    for i in range(len(data)):
        try:
            c.send(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            break
        if pending(c.sock, wait=every):
            break
    return t0


def test_slowloris_silent_after_greeting(slowd):
    c = SmtpConn(slowd.port("mx"))
    with c:
        expect_timeout(c, time.monotonic(), 1.0)
    slowd.wait_quiescent(timeout=5)
    assert re.search(r"smtp: 127\.0\.0\.1: timeout in command", slowd.log())


def test_slowloris_command_trickled(slowd):
    with SmtpConn(slowd.port("mx")) as c:
        c.ehlo()
        line = b"MAIL FROM:<slow@example.org>\r\n"         # 30 bytes: 9 s at this pace
        t0 = trickle(c, line, 0.3)
        took = expect_timeout(c, t0, 1.0)
        assert took < 3.0
    slowd.wait_quiescent(timeout=5)


def test_command_deadline_is_per_line(slowd):
    """The positive control: each line within the deadline keeps the session alive."""
    with SmtpConn(slowd.port("mx")) as c:
        c.ehlo()
        t0 = time.monotonic()
        for _ in range(4):
            time.sleep(0.6)
            c.cmd(b"NOOP", 250)
        assert time.monotonic() - t0 > 2.0
        c.cmd(b"QUIT", 221)


def test_slowloris_idle_in_data(slowd):
    with SmtpConn(slowd.port("mx")) as c:
        c.ehlo()
        txn(c)
        c.cmd(b"DATA", 354)
        c.send(b"Subject: half\r\n\r\nsome content\r\n")
        expect_timeout(c, time.monotonic(), 1.0)
    slowd.wait_quiescent(timeout=5)
    assert spool_messages(slowd) == {}
    assert "timeout in content" in slowd.log()


def test_slowloris_data_trickled(slowd):
    with SmtpConn(slowd.port("mx")) as c:
        c.ehlo()
        txn(c)
        c.cmd(b"DATA", 354)
        # A line takes 40 x 0.25 s = 10 s here, far over the 1 s per line.
        t0 = trickle(c, b"x" * 38 + b"\r\n", 0.25)
        expect_timeout(c, t0, 1.0)
    slowd.wait_quiescent(timeout=5)
    assert spool_messages(slowd) == {}


def test_data_deadline_is_per_line(slowd):
    """Lines that each come within the deadline: the message is taken though it took longer."""
    with SmtpConn(slowd.port("mx")) as c:
        c.ehlo()
        txn(c)
        c.cmd(b"DATA", 354)
        t0 = time.monotonic()
        for i in range(4):
            time.sleep(0.6)
            c.send(b"line %d\r\n" % i)
        assert pending(c.sock) == b""
        c.send(b".\r\n")
        queue_id(c.reply())
        assert time.monotonic() - t0 > 2.0


def test_slowloris_idle_in_auth(slowd):
    for mech, first in ((b"AUTH LOGIN", (b"334 VXNlcm5hbWU6",)), (b"AUTH PLAIN", (b"334", b"334 "))):
        with SmtpConn(slowd.port("submissions"), tls=True) as c:
            c.ehlo()
            r = c.cmd(mech, 334)
            assert r.lines[0] in first, r
            expect_timeout(c, time.monotonic(), 1.0)
    # In the middle of LOGIN: user name given, password never comes.
    with SmtpConn(slowd.port("submissions"), tls=True) as c:
        c.ehlo()
        c.cmd(b"AUTH LOGIN", 334)
        c.cmd(base64.b64encode(b"demo@dev.test"), 334)
        expect_timeout(c, time.monotonic(), 1.0)
    slowd.wait_quiescent(timeout=5)


def test_auth_deadline_is_per_line(slowd):
    """Each SASL response line has the deadline of a line (as commands do)."""
    with SmtpConn(slowd.port("submissions"), tls=True) as c:
        c.ehlo()
        c.cmd(b"AUTH LOGIN", 334)
        time.sleep(0.6)
        c.cmd(base64.b64encode(b"demo@dev.test"), 334)
        time.sleep(0.6)
        c.cmd(base64.b64encode(b"demo"), 235)


def test_slowloris_idle_in_bdat(slowd):
    with SmtpConn(slowd.port("mx")) as c:
        c.ehlo()
        txn(c)
        c.send(b"BDAT 1000 LAST\r\n" + b"b" * 100)
        expect_timeout(c, time.monotonic(), 1.0)
    with SmtpConn(slowd.port("mx")) as c:
        c.ehlo()
        txn(c)
        c.send(b"BDAT 10\r\n0123456789")
        assert c.reply().code == 250
        c.send(b"BDAT 50000\r\n")
        t0 = trickle(c, b"q" * 50, 0.25)
        expect_timeout(c, t0, 1.0)
    slowd.wait_quiescent(timeout=5)
    assert spool_messages(slowd) == {}


def test_slowloris_tls_handshake_stalls(slowd):
    # STARTTLS, then no ClientHello; then one cut short.
    for hello in (b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        with SmtpConn(slowd.port("mx")) as c:
            c.ehlo()
            c.cmd(b"STARTTLS", 220)
            if hello:
                c.send(hello)
            took, got = closed_without_reply(c.sock, 6)
            assert 0.7 <= took <= 3.5, took
    # Implicit TLS: nothing at all from the client.
    s = socket.create_connection(("127.0.0.1", slowd.port("submissions")), timeout=10)
    with s:
        took, got = closed_without_reply(s, 6)
        assert got == b"" and 0.7 <= took <= 3.5, (took, got)
    slowd.wait_quiescent(timeout=5)


def test_slowloris_proxy_header_never_comes(slowd):
    for first in (b"", b"PROXY TCP4 192.0.2.1 ", b"\r\n\r\n\x00\r\nQUIT\n\x21"):
        s = socket.create_connection(("127.0.0.1", slowd.port("proxied")), timeout=10)
        with s:
            if first:
                s.sendall(first)
            took, got = closed_without_reply(s, 6)
            assert got == b"", "no greeting without a PROXY header: %r" % got
            assert 0.7 <= took <= 3.5, took
    slowd.wait_quiescent(timeout=5)
    assert "no PROXY header within limits.smtp_proxy_timeout_ms" in slowd.log()


def test_slowloris_many_at_once_all_cut(slowd):
    """Twenty silent clients in every state at once: all cut near the deadline, none left."""
    conns = []
    try:
        for i in range(5):
            conns.append(SmtpConn(slowd.port("mx")))
        for i in range(5):
            c = SmtpConn(slowd.port("mx"))
            c.ehlo()
            txn(c)
            c.cmd(b"DATA", 354)
            conns.append(c)
        for i in range(5):
            c = SmtpConn(slowd.port("plain"))
            c.send(b"NOOP")
            conns.append(c)
        t0 = time.monotonic()
        for c in conns:
            expect_timeout(c, t0, 1.0, slack=3.0)
    finally:
        for c in conns:
            c.close()
    slowd.wait_quiescent(timeout=5)


# ---- connection limits -------------------------------------------------------------------------

def test_connections_per_client(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_connections_per_client": 3})
    held = []
    try:
        # The count is per address across listeners.
        held.append(SmtpConn(d.port("mx")))
        held.append(SmtpConn(d.port("submission")))
        held.append(SmtpConn(d.port("plain")))
        for listener in ("mx", "plain"):
            with SmtpConn(d.port(listener), greet=False) as c:
                r = c.reply()
                assert r.code == 421 and r.lines[0].startswith(b"421 4.7.0 ") and \
                    b"too many connections from 127.0.0.1" in r.lines[0], r
                c.expect_close()
        # Another address is another client.
        others = [BoundConn(d.port("mx"), "127.0.0.2") for _ in range(3)]
        held.extend(others)
        with BoundConn(d.port("mx"), "127.0.0.2", greet=False) as c:
            assert c.reply().code == 421
        with BoundConn(d.port("mx"), "127.0.0.3") as c:
            assert c.greeting.code == 220
            c.ehlo()
    finally:
        for c in held:
            c.close()
    # Refused connections were not left counted: three fit again.
    deadline = time.monotonic() + 10
    while True:
        conns = [SmtpConn(d.port("mx"), greet=False) for _ in range(3)]
        codes = [c.reply().code for c in conns]
        for c in conns:
            c.close()
        if codes == [220] * 3:
            break
        assert time.monotonic() < deadline, codes
        time.sleep(0.2)
    assert "limits.smtp_connections_per_client" in d.log()


def test_connections_max(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_connections_max": 4, "smtp_connections_per_client": 0})
    held = [BoundConn(d.port("mx"), "127.0.0.%d" % (10 + i)) for i in range(4)]
    try:
        with BoundConn(d.port("plain"), "127.0.0.20", greet=False) as c:
            r = c.reply()
            assert r.code == 421 and r.lines[0].startswith(b"421 4.7.0 ") and b"too many connections" in r.lines[0], r
            c.expect_close()
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:
            c = BoundConn(d.port("mx"), "127.0.0.21", greet=False)
            code = c.reply().code
            if code == 220:
                held.append(c)
                break
            c.close()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        held[-1].ehlo()
    finally:
        for c in held:
            c.close()
    assert "limits.smtp_connections_max" in d.log()
    d.wait_quiescent(timeout=10)


# ---- PROXY protocol ----------------------------------------------------------------------------

PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def proxy_v1(src, dst="127.0.0.1", sport=40000, dport=25):
    fam = b"TCP6" if ":" in src else b"TCP4"
    return b"PROXY %s %s %s %d %d\r\n" % (fam, src.encode(), dst.encode(), sport, dport)


def proxy_v2(src, dst=None, sport=40000, dport=25, command=0x21, tlvs=b"", crc=False):
    if src is None:
        fam, addr = 0x00, b""
    elif ":" in src:
        fam = 0x21
        addr = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst or "::1") + \
            struct.pack("!HH", sport, dport)
    else:
        fam = 0x11
        addr = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst or "127.0.0.1") + \
            struct.pack("!HH", sport, dport)
    if crc:
        tlvs += b"\x03\x00\x04\x00\x00\x00\x00"
    rest = addr + tlvs
    hdr = PP2_SIG + bytes([command, fam]) + struct.pack("!H", len(rest)) + rest
    if crc:
        hdr = hdr[:-4] + struct.pack("!I", crc32c(hdr))
    return hdr


@pytest.fixture
def proxyd(ringmaild, tmp_path):
    return smtp_daemon(ringmaild, tmp_path, proxy=True,
                       smtp={"proxy_trusted": ["127.0.0.0/8"], "mynetworks": ["10.0.0.0/8"]})


def proxied(d, header, chunks=1):
    c = SmtpConn(d.port("proxied"), greet=False)
    step = max(1, -(-len(header) // chunks))
    for i in range(0, len(header), step):
        c.send(header[i:i + step])
        if chunks > 1:
            time.sleep(0.02)
    c.greeting = c.reply()
    return c


def proxied_message(d, header, client, helo=b"proxied.example", chunks=1, rcpt=b"b@relay.test"):
    with proxied(d, header, chunks) as c:
        assert c.greeting.lines == [b"220 mx.test.invalid ESMTP ringmail"], c.greeting
        c.ehlo(helo)
        qid = queue_id(c.message(b"a@example.org", [rcpt], b"Subject: proxied\r\n\r\nhi\r\n"))
        c.cmd(b"QUIT", 221)
    held = spool_content(d, qid)
    assert held.startswith(b"Received: from %s ([%s])\r\n" % (helo, client.encode())), held[:200]
    assert spool_envelope(d, qid)["client"] == client
    assert re.search(r"%s: client=\[%s\] helo=%s " % (qid, re.escape(client), helo.decode()), d.log()), \
        d.log()[-2000:]
    assert "smtp: connect from [%s]" % client in d.log()
    return qid


def test_proxy_v1_tcp4_and_tcp6(proxyd):
    proxied_message(proxyd, proxy_v1("192.0.2.10"), "192.0.2.10")
    proxied_message(proxyd, proxy_v1("2001:db8::10", "2001:db8::1"), "2001:db8::10", helo=b"six.example")
    # A header split over several sends, and one byte at a time.
    proxied_message(proxyd, proxy_v1("192.0.2.11", sport=1, dport=587), "192.0.2.11", chunks=3)
    proxied_message(proxyd, proxy_v1("192.0.2.12"), "192.0.2.12", chunks=len(proxy_v1("192.0.2.12")))
    # PROXY UNKNOWN keeps the socket's address.
    proxied_message(proxyd, b"PROXY UNKNOWN\r\n", "127.0.0.1")


def test_proxy_v2(proxyd):
    proxied_message(proxyd, proxy_v2("198.51.100.7"), "198.51.100.7")
    proxied_message(proxyd, proxy_v2("2001:db8::77", "2001:db8::1"), "2001:db8::77")
    # With TLVs: AUTHORITY, NOOP, and a CRC32C that must match; split in pieces.
    tlvs = b"\x02\x00\x0bexample.com" + b"\x04\x00\x03abc"
    h = proxy_v2("198.51.100.8", tlvs=tlvs, crc=True)
    proxied_message(proxyd, h, "198.51.100.8", chunks=5)
    proxied_message(proxyd, proxy_v2("198.51.100.9"), "198.51.100.9", chunks=len(proxy_v2("198.51.100.9")))
    # LOCAL (a proxy's health check) keeps the socket's address.
    proxied_message(proxyd, proxy_v2(None, command=0x20), "127.0.0.1")


def test_proxy_header_with_pipelined_commands(proxyd):
    with SmtpConn(proxyd.port("proxied"), greet=False) as c:
        c.send(proxy_v1("192.0.2.30") + b"EHLO pipelined.example\r\nNOOP\r\n")
        assert c.reply().code == 220
        assert c.reply().code == 250
        assert c.reply().code == 250
    with SmtpConn(proxyd.port("proxied"), greet=False) as c:
        h = proxy_v2("192.0.2.31")
        c.send(h[:10])
        time.sleep(0.05)
        c.send(h[10:] + b"HELO two.example\r\n")
        assert c.reply().code == 220
        assert c.reply().lines == [b"250 mx.test.invalid"]


def test_proxy_address_is_the_policy_address(proxyd):
    """mynetworks (10.0.0.0/8 here) is judged on the header's address, not the proxy's."""
    with proxied(proxyd, proxy_v1("10.1.2.3")) as c:
        c.ehlo()
        c.message(b"a@example.org", [b"x@elsewhere.example"], b"\r\ninside\r\n")
    with proxied(proxyd, proxy_v1("192.0.2.40")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        assert c.cmd(b"RCPT TO:<x@elsewhere.example>").code == 554
        assert c.cmd(b"RCPT TO:<x%elsewhere.example@relay.test>").code == 554
    assert "smtp: 192.0.2.40: relay denied" in proxyd.log()


def test_proxy_per_client_limit_counts_header_address(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, proxy=True, limits={"smtp_connections_per_client": 2},
                    smtp={"proxy_trusted": ["127.0.0.0/8"]})
    held = []
    try:
        held += [proxied(d, proxy_v1("192.0.2.20")) for _ in range(2)]
        assert all(c.greeting.code == 220 for c in held)
        c = proxied(d, proxy_v2("192.0.2.20"))
        with c:
            assert c.greeting.code == 421 and b"too many connections from 192.0.2.20" in c.greeting.lines[0], \
                c.greeting
            c.expect_close()
        # Another header address, and the proxy's own address, are other clients.
        held.append(proxied(d, proxy_v1("192.0.2.21")))
        held += [SmtpConn(d.port("mx")) for _ in range(2)]
        assert all(c.greeting.code == 220 for c in held[2:]), [c.greeting for c in held]
    finally:
        for c in held:
            c.close()
    d.wait_quiescent(timeout=10)


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 999.0.2.1 127.0.0.1 1 25\r\n",
    b"PROXY TCP4 192.0.2.1 127.0.0.1 1 25\n",
    b"PROXY TCP4 192.0.2.1 127.0.0.1 01 25\r\n",
    b"PROXY TCP6 192.0.2.1 127.0.0.1 1 25\r\n",
    b"PROXY UDP4 192.0.2.1 127.0.0.1 1 25\r\n",
    b"PROXY TCP4 192.0.2.1 127.0.0.1 1 25 extra\r\n",
    b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
    b"EHLO client.example\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    PP2_SIG + b"\x31\x11\x00\x0c" + b"\0" * 12,          # version 3
    PP2_SIG + b"\x21\x12\x00\x0c" + b"\0" * 12,          # UDP
    PP2_SIG + b"\x21\x11\x00\x08" + b"\0" * 8,           # address block short
    PP2_SIG + b"\x21\x11\x04\x00" + b"\0" * 1024,        # too long
], ids=["v1-addr", "v1-bare-lf", "v1-port-zero", "v1-family", "v1-udp", "v1-extra", "v1-long", "smtp",
        "http", "v2-version", "v2-udp", "v2-short", "v2-long"])
def test_proxy_bad_header_closes(proxyd, header):
    s = socket.create_connection(("127.0.0.1", proxyd.port("proxied")), timeout=10)
    with s:
        s.sendall(header)
        took, got = closed_without_reply(s, 5)
        assert got == b"", "a greeting after a bad PROXY header: %r" % got
        assert took < 2.5
    assert "bad PROXY header" in proxyd.log()


def test_proxy_bad_crc_closes(proxyd):
    h = bytearray(proxy_v2("192.0.2.50", crc=True))
    h[-1] ^= 1
    for data in (bytes(h), bytes(h[:20]) + bytes(h[20:])):
        s = socket.create_connection(("127.0.0.1", proxyd.port("proxied")), timeout=10)
        with s:
            s.sendall(data)
            _, got = closed_without_reply(s, 5)
            assert got == b""
    assert "bad PROXY header" in proxyd.log()


def test_proxy_untrusted_peer_closed_without_greeting(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, proxy=True, smtp={"proxy_trusted": ["10.0.0.0/8", "::1/128"]})
    for header in (b"", proxy_v1("192.0.2.60"), proxy_v2("192.0.2.60")):
        s = socket.create_connection(("127.0.0.1", d.port("proxied")), timeout=10)
        with s:
            if header:
                try:
                    s.sendall(header)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            took, got = closed_without_reply(s, 5)
            assert got == b"" and took < 2.5, (took, got)
    assert "is not in smtp.proxy_trusted: closed" in d.log()
    # The direct listeners are unaffected.
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
    d.wait_quiescent(timeout=10)
    assert spool_messages(d) == {}


@pytest.mark.parametrize("version", ["1", "2"])
def test_proxy_swaks(proxyd, version):
    family = {"1": "TCP4", "2": "AF_INET"}[version]
    src = "203.0.113.%s" % version
    argv = ["swaks", "--server", "127.0.0.1", "--port", str(proxyd.port("proxied")), "--helo", "swaks.example",
            "--from", "a@example.org", "--to", "b@relay.test", "--body", "swaks via proxy v%s" % version,
            "--timeout", "20", "--proxy-version", version, "--proxy-family", family, "--proxy-source", src,
            "--proxy-source-port", "4321", "--proxy-dest", "127.0.0.1", "--proxy-dest-port", "25"]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    m = re.search(r"<[-~]\s+250 2\.0\.0 Ok: queued as ([0-9A-Z]{13})", out)
    assert m, out
    qid = m.group(1)
    assert spool_envelope(proxyd, qid)["client"] == src
    assert spool_content(proxyd, qid).startswith(b"Received: from swaks.example ([%s])" % src.encode())
    assert "client=[%s]" % src in proxyd.log()


# ---- pregreet ----------------------------------------------------------------------------------

def test_pregreet_reject(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_pregreet_wait_ms": 500}, smtp={"pregreet": "reject"})
    # Talks first: 554, closed, never greeted.
    with SmtpConn(d.port("mx"), greet=False) as c:
        c.send(b"EHLO eager.example\r\nMAIL FROM:<a@example.org>\r\n")
        r = c.reply()
        assert r.code == 554 and b"talk before the greeting" in r.lines[0], r
        assert b"220" not in r.lines[0]
        c.expect_close()
    # Waits: greeted after the delay, served.
    t0 = time.monotonic()
    with SmtpConn(d.port("mx")) as c:
        took = time.monotonic() - t0
        assert c.greeting.code == 220 and 0.4 <= took <= 3.0, (c.greeting, took)
        c.ehlo()
        c.message(b"a@example.org", [b"b@relay.test"], b"\r\npatient\r\n")
    assert "PREGREET: talked before the greeting" in d.log()
    assert len(spool_messages(d)) == 1


def test_pregreet_log(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_pregreet_wait_ms": 500}, smtp={"pregreet": "log"})
    t0 = time.monotonic()
    with SmtpConn(d.port("mx"), greet=False) as c:
        c.send(b"EHLO eager.example\r\nNOOP\r\n")
        r = c.reply()
        assert r.code == 220 and time.monotonic() - t0 >= 0.4, r     # the greeting first, after the wait
        assert c.reply().lines[0] == b"250-mx.test.invalid Hello"
        assert c.reply().code == 250
        c.message(b"a@example.org", [b"b@relay.test"], b"\r\neager\r\n")
    assert "PREGREET: talked before the greeting" in d.log()
    assert len(spool_messages(d)) == 1
