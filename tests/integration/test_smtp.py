"""The SMTP server (proto/smtp_session.c) against real clients: a raw socket
client for exact replies, Python's smtplib for STARTTLS, SMTP_SSL and AUTH.

What is checked here: the EHLO keywords per listener kind and TLS state,
the message as spooled (Received: first, content dot-unstuffed, envelope
fields), relay policy (relay domains, mynetworks, AUTH, routing tricks),
AUTH PLAIN and LOGIN with yescrypt, bcrypt and sha512-crypt users, BDAT,
size limits, the error limit, PIPELINING in one batch, and smuggling.
"""
import base64
import re
import smtplib
import socket
import ssl
import time

import pytest

from smtputil import (SmtpConn, USERS, dot_stuff, queue_id, smtp_daemon, spool_content, spool_envelope,
                      spool_messages)


def tls_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def keywords(reply):
    return [l[4:].decode() for l in reply.lines[1:]]


@pytest.fixture
def smtpd(ringmaild, tmp_path):
    return smtp_daemon(ringmaild, tmp_path)


def test_greeting_and_ehlo_keywords(smtpd):
    with SmtpConn(smtpd.port("mx")) as c:
        assert c.greeting.lines == [b"220 mx.test.invalid ESMTP ringmail"]
        kw = keywords(c.ehlo())
        assert kw == ["PIPELINING", "SIZE 52428800", "VRFY", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
                      "SMTPUTF8", "CHUNKING", "STARTTLS"]
        assert c.cmd(b"HELO client.example").lines == [b"250 mx.test.invalid"]
    with SmtpConn(smtpd.port("plain")) as c:
        assert "STARTTLS" not in keywords(c.ehlo())
    with SmtpConn(smtpd.port("submission")) as c:
        kw = keywords(c.ehlo())
        assert "STARTTLS" in kw and not any(k.startswith("AUTH") for k in kw), kw
        c.cmd(b"STARTTLS", 220)
        c.starttls_wrap()
        kw = keywords(c.ehlo())
        assert "STARTTLS" not in kw and "AUTH PLAIN LOGIN" in kw, kw
    with SmtpConn(smtpd.port("submissions"), tls=True) as c:
        kw = keywords(c.ehlo())
        assert "STARTTLS" not in kw and "AUTH PLAIN LOGIN" in kw, kw


def test_message_spooled_with_received_header(smtpd):
    content = (b"From: a@example.org\r\nSubject: test\r\n\r\nline one\r\n.leading dot\r\n..two dots\r\n"
               b".\r\nlast\r\n")
    with SmtpConn(smtpd.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<sender@example.org> SIZE=%d BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef" % len(content), 250)
        c.cmd(b"RCPT TO:<User@Relay.Test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;User@Relay.Test", 250)
        c.cmd(b"DATA", 354)
        c.send(dot_stuff(content) + b".\r\n")
        r = c.reply()
        assert r.code == 250 and re.match(rb"^250 2\.0\.0 Ok: queued as [0-9A-Z]{13}$", r.lines[0]), r
        qid = queue_id(r)
        c.cmd(b"QUIT", 221)
    held = spool_content(smtpd, qid)
    m = re.match(rb"Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n"
                 rb"\tby mx\.test\.invalid \(ringmail\) with ESMTP id " + qid.encode() + rb"\r\n"
                 rb"\tfor <User@Relay\.Test>; [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n",
                 held)
    assert m, held[:400]
    assert held[m.end():] == content
    msgs = spool_messages(smtpd)
    assert msgs[qid][2] == "sender@example.org" and msgs[qid][3] == ["User@Relay.Test"]
    env = spool_envelope(smtpd, qid)
    assert env["helo"] == "client.example" and env["client"] == "127.0.0.1" and env["auth"] == ""
    assert env["envid"] == "abc+2Bdef" and env["ret"] == "2" and env["body"] == "2"
    assert env["size_declared"] == str(len(content))
    assert env["rcpt"] == ["User@Relay.Test notify 6 orcpt rfc822;User@Relay.Test"]


def test_relay_policy(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path)
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<outside@example.org>", 250)
        c.cmd(b"RCPT TO:<someone@relay.test>", 250)
        c.cmd(b"RCPT TO:<someone@RELAY.TEST.>", 501)      # trailing dot is not RFC 5321
        for trick in (b"<someone@elsewhere.example>", b"<someone%elsewhere.example@relay.test>",
                      b"<elsewhere.example!someone@relay.test>", b"<\"someone@elsewhere.example\"@relay.test>",
                      b"<@relay.test:someone@elsewhere.example>", b"<someone@[127.0.0.1]>"):
            r = c.cmd(b"RCPT TO:" + trick)
            assert r.code == 554 and b"5.7.1" in r.lines[0] and b"Relay access denied" in r.lines[0], (trick, r)
        r = c.cmd(b"RCPT TO:<Postmaster>", 250)
        c.cmd(b"DATA", 354)
        c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        qid = queue_id(c.reply())
    assert spool_messages(d)[qid][3] == ["someone@relay.test", "postmaster"]
    assert "relay denied: from=<outside@example.org> to=<someone@elsewhere.example>" in d.log()


def test_mynetworks_may_relay(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, smtp={"mynetworks": ["10.0.0.0/8", "127.0.0.0/8"]})
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<inside@example.org>", 250)
        c.cmd(b"RCPT TO:<someone@elsewhere.example>", 250)
        c.cmd(b"RCPT TO:<someone%other@relay.test>", 250)     # trusted clients may route
        c.cmd(b"DATA", 354)
        c.send(b"\r\n.\r\n")
        c.reply()


def test_recipient_map(ringmaild, tmp_path):
    m = tmp_path / "recipients"
    m.write_text("known@relay.test ok\n@catchall.test ok\n")
    d = smtp_daemon(ringmaild, tmp_path, smtp={
        "recipient_map": str(m),
        "relay_domains": [{"domain": "relay.test", "nexthop": "[127.0.0.1]:1"},
                          {"domain": "catchall.test", "nexthop": "[127.0.0.1]:1"}]})
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<>", 250)
        c.cmd(b"RCPT TO:<Known@Relay.Test>", 250)
        r = c.cmd(b"RCPT TO:<unknown@relay.test>", 550)
        assert b"5.1.1" in r.lines[0] and b"User unknown" in r.lines[0]
        c.cmd(b"RCPT TO:<anyone@catchall.test>", 250)


def smtplib_ctx():
    return tls_ctx()


@pytest.mark.parametrize("user,password,prefix", USERS[:3])
def test_auth_smtplib_starttls(smtpd, user, password, prefix):
    with smtplib.SMTP("127.0.0.1", smtpd.port("submission"), timeout=30) as s:
        s.ehlo("client.example")
        assert not s.has_extn("auth")
        s.starttls(context=smtplib_ctx())
        s.ehlo("client.example")
        assert s.has_extn("auth")
        s.login(user, password)
        refused = s.sendmail(user, ["anyone@elsewhere.example"], b"Subject: via 587\r\n\r\nbody\r\n")
        assert refused == {}
    assert "AUTH ok: user=%s" % user.encode("ascii", "replace").decode() in smtpd.log() or "AUTH ok" in smtpd.log()


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_auth_smtp_ssl(smtpd, mech):
    with smtplib.SMTP_SSL("127.0.0.1", smtpd.port("submissions"), timeout=30, context=smtplib_ctx()) as s:
        s.ehlo("client.example")
        s.user, s.password = "demo@dev.test", "demo"
        code, _ = s.auth(mech, getattr(s, "auth_" + mech.lower()))
        assert code == 235
        s.sendmail("demo@dev.test", ["x@elsewhere.example"], b"Subject: via 465\r\n\r\nbody\r\n")


def test_auth_failures(smtpd):
    with SmtpConn(smtpd.port("submission")) as c:
        c.ehlo()
        r = c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0demo@dev.test\0demo"), 530)
        assert r.lines == [b"530 5.7.0 Must issue a STARTTLS command first"]
        r = c.cmd(b"MAIL FROM:<demo@dev.test>", 530)
        c.cmd(b"STARTTLS", 220)
        c.starttls_wrap()
        c.ehlo()
        assert c.cmd(b"MAIL FROM:<demo@dev.test>", 530).lines == [b"530 5.7.0 Authentication required"]
        assert c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0demo@dev.test\0wrong"), 535).lines == \
            [b"535 5.7.8 Authentication credentials invalid"]
        assert c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0nobody@dev.test\0demo"), 535)
        assert c.cmd(b"AUTH CRAM-MD5", 504)
        assert c.cmd(b"AUTH PLAIN not-base64!", 501)
        c.cmd(b"AUTH LOGIN", 334)
        assert c.cmd(b"*", 501).lines == [b"501 5.0.0 Authentication aborted"]
        c.cmd(b"AUTH PLAIN", 334)
        c.cmd(base64.b64encode(b"\0demo@dev.test\0demo"), 235)
        c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0demo@dev.test\0demo"), 503)
    assert smtpd.log().count("AUTH failed") == 2


def test_auth_utf8_password(smtpd):
    user, password, _ = USERS[3]
    with SmtpConn(smtpd.port("submissions"), tls=True) as c:
        c.ehlo()
        c.cmd(b"AUTH PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()), 235)


def test_auth_failures_limited_per_client(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_auth_failures_max": 3})
    bad = b"AUTH PLAIN " + base64.b64encode(b"\0demo@dev.test\0wrong")
    with SmtpConn(d.port("submissions"), tls=True) as c:
        c.ehlo()
        for _ in range(3):
            c.cmd(bad, 535)
    # The count is per address, across sessions and workers.
    with SmtpConn(d.port("submissions"), tls=True) as c:
        c.ehlo()
        r = c.cmd(bad, 421)
        assert b"4.7.0" in r.lines[0]
        c.expect_close()


def test_sender_login_map(ringmaild, tmp_path):
    m = tmp_path / "senders"
    m.write_text("demo@dev.test demo@dev.test\n@shared.test demo@dev.test, bob@example.test\n")
    d = smtp_daemon(ringmaild, tmp_path, smtp={"sender_login_map": str(m)})
    with smtplib.SMTP_SSL("127.0.0.1", d.port("submissions"), timeout=30, context=tls_ctx()) as s:
        s.login("demo@dev.test", "demo")
        s.sendmail("demo@dev.test", ["x@elsewhere.example"], b"\r\nok\r\n")
        s.sendmail("team@shared.test", ["x@elsewhere.example"], b"\r\nok\r\n")
        s.sendmail("", ["x@elsewhere.example"], b"\r\nbounce\r\n")
        with pytest.raises(smtplib.SMTPSenderRefused) as e:
            s.sendmail("bob@example.test", ["x@elsewhere.example"], b"\r\nnot mine\r\n")
        assert e.value.smtp_code == 553


def test_bdat(smtpd):
    with SmtpConn(smtpd.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.cmd(b"RCPT TO:<b@relay.test>", 250)
        c.send(b"BDAT 9\r\nSubject: ")
        assert c.reply().lines == [b"250 2.0.0 9 octets received"]
        body = b"x\r\n\r\n.not stuffed\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        qid = queue_id(c.reply())
        # BDAT 0 LAST ends a message too; BDAT without a transaction is read, then refused.
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.cmd(b"RCPT TO:<b@relay.test>", 250)
        c.send(b"BDAT 3\r\nabc")
        c.reply()
        qid0 = queue_id(c.cmd(b"BDAT 0 LAST", 250))
        c.send(b"BDAT 5\r\nhello")
        assert c.reply().code == 503
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.cmd(b"RCPT TO:<b@relay.test>", 250)
        c.cmd(b"DATA", 354)
        c.send(b"x\r\n.\r\n")
        c.reply()
        c.cmd(b"NOOP", 250)
    assert spool_content(smtpd, qid).split(b"\r\n", 3)[3] == b"Subject: x\r\n\r\n.not stuffed\r\n"
    assert spool_content(smtpd, qid0).endswith(b"abc")


def test_size_limits(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_message_bytes_max": 65536})
    with SmtpConn(d.port("mx")) as c:
        kw = keywords(c.ehlo())
        assert "SIZE 65536" in kw
        r = c.cmd(b"MAIL FROM:<a@example.org> SIZE=65537", 552)
        assert b"5.3.4" in r.lines[0]
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.cmd(b"RCPT TO:<b@relay.test>", 250)
        c.cmd(b"DATA", 354)
        c.send((b"x" * 998 + b"\r\n") * 70 + b".\r\n")
        r = c.reply()
        assert r.code == 552 and b"5.3.4" in r.lines[0]
        # In step afterwards: a new transaction works.
        c.message(b"a@example.org", [b"b@relay.test"], b"small\r\n")
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.cmd(b"RCPT TO:<b@relay.test>", 250)
        c.send(b"BDAT 70000 LAST\r\n" + b"y" * 70000)
        assert c.reply().code == 552
        c.cmd(b"NOOP", 250)
    assert len(spool_messages(d)) == 1


def test_recipient_limit(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_recipients_max": 100, "smtp_errors_max": 1000})
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.send(b"".join(b"RCPT TO:<r%d@relay.test>\r\n" % i for i in range(105)))
        codes = [c.reply().code for _ in range(105)]
        assert codes == [250] * 100 + [452] * 5
        c.cmd(b"DATA", 354)
        c.send(b"\r\n.\r\n")
        qid = queue_id(c.reply())
    assert len(spool_messages(d)[qid][3]) == 100


def test_line_too_long_keeps_sync(smtpd):
    with SmtpConn(smtpd.port("mx")) as c:
        c.ehlo()
        c.send(b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n")
        assert c.reply().lines == [b"500 5.5.6 Line too long"]
        assert c.reply().code == 250
        c.send(b"MAIL FROM:<" + b"a" * 20000 + b"@example.org>\r\nRSET\r\n")
        assert c.reply().code == 500
        assert c.reply().code == 250


def test_error_limit_disconnects(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_errors_max": 3})
    with SmtpConn(d.port("mx")) as c:
        c.send(b"BOGUS\r\nBOGUS\r\nBOGUS\r\nNOOP\r\n")
        # Postfix's order: the third error's reply, then 421 and the end.
        assert [c.reply().code for _ in range(4)] == [500, 500, 500, 421]
        c.expect_close()


def test_pipelined_batch(smtpd):
    with SmtpConn(smtpd.port("mx")) as c:
        batch = (b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@relay.test>\r\n"
                 b"RCPT TO:<c@nowhere.example>\r\nRCPT TO:<d@relay.test>\r\nDATA\r\n"
                 b"Subject: p\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@relay.test>\r\n"
                 b"DATA\r\nsecond\r\n.\r\nQUIT\r\n")
        c.send(batch)
        codes = [c.reply().code for _ in range(12)]
        assert codes == [250, 250, 250, 554, 250, 354, 250, 250, 250, 354, 250, 221]
        c.expect_close()
    assert len(spool_messages(smtpd)) == 2


@pytest.mark.parametrize("payload", [
    b"a\r\n\n.\n\r\nMAIL FROM:<x@evil>\r\n",      # LF . LF
    b"a\r\n.\n",                                   # CR LF . LF
    b"a\n.\r\n",                                   # LF . CR LF
    b"a\r.\r",                                     # CR . CR
    b"a\r\n.\r",                                   # CR LF . CR
])
def test_smuggling_refused(smtpd, payload):
    with SmtpConn(smtpd.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.cmd(b"RCPT TO:<b@relay.test>", 250)
        c.cmd(b"DATA", 354)
        c.send(payload + b"\r\nmore\r\n.\r\n")
        r = c.reply()
        assert r.code == 550 and b"5.6.0" in r.lines[0], r
        c.cmd(b"NOOP", 250)        # the smuggled "MAIL" was content, not a command
    assert spool_messages(smtpd) == {}


def test_smuggling_normalised(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, smtp={"bare_lf": "normalise"})
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.cmd(b"RCPT TO:<b@relay.test>", 250)
        c.cmd(b"DATA", 354)
        c.send(b"one\ntwo\r\n.\nthree\r\n.\r\n")
        qid = queue_id(c.reply())
    held = spool_content(d, qid)
    assert held.split(b"\r\n", 3)[3] == b"one\r\ntwo\r\n.\r\nthree\r\n"


def test_vrfy_expn_help_noop_rset(smtpd):
    with SmtpConn(smtpd.port("mx")) as c:
        c.ehlo()
        assert c.cmd(b"VRFY someone", 252).lines[0].startswith(b"252 2.0.0")
        assert c.cmd(b"EXPN list", 502).lines[0].startswith(b"502 5.5.1")
        assert c.cmd(b"HELP", 214)
        c.cmd(b"NOOP", 250)
        c.cmd(b"MAIL FROM:<a@example.org>", 250)
        c.cmd(b"MAIL FROM:<a@example.org>", 503)
        c.cmd(b"RSET", 250)
        c.cmd(b"RCPT TO:<b@relay.test>", 503)
        c.cmd(b"DATA", 503)
        c.cmd(b"STARTTLS", 220)


def test_helo_required_and_unknown(smtpd):
    with SmtpConn(smtpd.port("plain")) as c:
        assert c.cmd(b"MAIL FROM:<a@example.org>", 503).lines == [b"503 5.5.1 Error: send HELO/EHLO first"]
        assert c.cmd(b"FOO", 500).lines[0].startswith(b"500 5.5.1")
        assert c.cmd(b"STARTTLS", 502)


def test_connection_limits(ringmaild, tmp_path):
    d = smtp_daemon(ringmaild, tmp_path, limits={"smtp_connections_per_client": 3})
    conns = [SmtpConn(d.port("mx")) for _ in range(3)]
    try:
        with SmtpConn(d.port("mx"), greet=False) as c:
            r = c.reply()
            assert r.code == 421 and b"4.7.0" in r.lines[0], r
            c.expect_close()
    finally:
        for c in conns:
            c.close()
    # Slots come back when sessions end.
    deadline = time.monotonic() + 10
    while True:
        with SmtpConn(d.port("mx"), greet=False) as c:
            if c.reply().code == 220:
                break
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_reload_rereads_tables(ringmaild, tmp_path):
    """SIGHUP reads the password file and maps again; a bad file keeps the running ones."""
    import signal
    from smtputil import crypt_hash
    d = smtp_daemon(ringmaild, tmp_path)
    passwd = tmp_path / "smtp-files" / "passwd"
    plain = lambda u, p: b"AUTH PLAIN " + base64.b64encode(b"\0" + u + b"\0" + p)
    with SmtpConn(d.port("submissions"), tls=True) as c:
        c.ehlo()
        c.cmd(plain(b"new@example.test", b"fresh"), 535)
    passwd.write_text(passwd.read_text() + "new@example.test:%s\n" % crypt_hash("fresh", "$6$rounds=5000$"))
    mark = d.mark()
    d.signal(signal.SIGHUP)
    d.wait_log(r"reload of .*smtp tables re-read \(relay domains 1, password users 5", since=mark)
    with SmtpConn(d.port("submissions"), tls=True) as c:
        c.ehlo()
        c.cmd(plain(b"new@example.test", b"fresh"), 235)
    passwd.write_text(passwd.read_text() + "broken line\n")
    mark = d.mark()
    d.signal(signal.SIGHUP)
    d.wait_log(r"reload: .*smtp\.passwd_file: .*keeping the running configuration", since=mark)
    with SmtpConn(d.port("submissions"), tls=True) as c:
        c.ehlo()
        c.cmd(plain(b"new@example.test", b"fresh"), 235)


def test_sigterm_says_421_between_commands(ringmaild, tmp_path):
    import signal
    d = smtp_daemon(ringmaild, tmp_path)
    with SmtpConn(d.port("mx")) as idle, SmtpConn(d.port("mx")) as busy:
        idle.ehlo()
        busy.ehlo()
        busy.cmd(b"MAIL FROM:<a@example.org>", 250)
        busy.cmd(b"RCPT TO:<b@relay.test>", 250)
        busy.cmd(b"DATA", 354)
        busy.send(b"Subject: in flight\r\n\r\n")
        d.signal(signal.SIGTERM)
        r = idle.reply()
        assert r.code == 421 and b"4.3.2" in r.lines[0], r
        idle.expect_close()
        # The transaction under way finishes, then its session is told too.
        busy.send(b"body\r\n.\r\n")
        qid = queue_id(busy.reply())
        r = busy.cmd(b"NOOP")
        assert r.code == 421, r
    assert d.wait(30) == 0
    assert qid in d.log()
