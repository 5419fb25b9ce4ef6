"""Outbound delivery (core/delivery.c, proto/smtp_out.c, core/dns.c) end to
end: ringmaild takes mail on its SMTP listener and delivers it to sinks found
through a private DNS server.

The world: one dnsmasq per module (tests/integration/dnsserver.py) holding
the MX, A and null MX records below; every other name under .test is
NXDOMAIN and names under slow.test fail (forwarded to a dead port).  MX hosts
are distinct loopback addresses 127.0.0.N, all on one free port per test
(delivery.port).  Sinks are aiosmtpd (tests/integration/mxsink.py) with knobs
for refusals, deferrals, held sessions, STARTTLS and AUTH.

Each outcome is checked on both sides: what the sink received, the daemon's
delivery log lines ("QID: to=<..>, relay=.., dsn=.., status=.."), ringmailctl
queue, and the spool (spool_dump).  Bounces are parsed as RFC 3464 reports
with Python's email package, delivered to the sender's domain's sink.
"""
import email
import email.policy
import json
import re
import smtplib
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port
from smtputil import spool_envelope
from dnsserver import Dnsmasq
from mxsink import Proxy, Sink
from smtputil import SmtpConn, queue_id, smtp_daemon, spool_content, spool_messages

# name -> loopback address of each MX host
HOSTS = {
    "mx1.fb.test": "127.0.0.2",        # nothing listens: connection refused
    "mx2.fb.test": "127.0.0.3",
    "mx1.gr.test": "127.0.0.4",        # greets with 421
    "mx2.gr.test": "127.0.0.5",
    "implicit.test": "127.0.0.6",      # no MX: the domain's own A record
    "mx.snd.test": "127.0.0.7",        # the senders' domain: bounces arrive here
    "mx.dst.test": "127.0.0.8",        # the general destination
    "mx.plain.test": "127.0.0.9",      # no STARTTLS
    "mx.tls.test": "127.0.0.10",       # STARTTLS, a certificate for mx.tls.test from the test CA
    "mx.wrong.test": "127.0.0.11",     # STARTTLS, the same certificate: the wrong name
    "smart.test": "127.0.0.12",        # a smarthost with AUTH over TLS
    "mx.e2e.test": "127.0.0.13",
    "mx.broken.test": "127.0.0.14",    # STARTTLS offered, then every handshake fails
}
MX = [
    ("fb.test", "mx1.fb.test", 10), ("fb.test", "mx2.fb.test", 20),
    ("gr.test", "mx1.gr.test", 10), ("gr.test", "mx2.gr.test", 20),
    ("snd.test", "mx.snd.test", 10),
    ("dst.test", "mx.dst.test", 10), ("dst2.test", "mx.dst.test", 10),
    ("may-plain.test", "mx.plain.test", 10), ("may-tls.test", "mx.tls.test", 10),
    ("enc-plain.test", "mx.plain.test", 10), ("enc-tls.test", "mx.tls.test", 10),
    ("ver-tls.test", "mx.tls.test", 10), ("ver-wrong.test", "mx.wrong.test", 10),
    ("e2e.test", "mx.e2e.test", 10),
    ("may-broken.test", "mx.broken.test", 10), ("enc-broken.test", "mx.broken.test", 10),
    ("dead.test", "mx1.fb.test", 10),
]
TLS_POLICY = {
    "may-plain.test": "may", "may-tls.test": "may", "enc-plain.test": "encrypt", "enc-tls.test": "encrypt",
    "ver-tls.test": "verify", "ver-wrong.test": "verify",
    "may-broken.test": "may", "enc-broken.test": "encrypt",
}

SENDER = "alice@snd.test"
LOG_LINE = (r"(?P<qid>[0-9A-Z]{13}): to=<(?P<to>[^>]*)>, relay=(?P<relay>\S+(?:, tls=\S+)?), delay=[0-9.]+, "
            r"dsn=(?P<dsn>[0-9.]+), status=(?P<status>sent|deferred|bounced) \((?P<why>.*)\)")


@pytest.fixture(scope="module")
def dns(tmp_path_factory):
    d = Dnsmasq(tmp_path_factory.mktemp("dns"), mx=MX, hosts=list(HOSTS.items()),
                null_mx=["nullmx.test"], servfail=["slow.test"])
    d.start()
    yield d
    d.stop()


@pytest.fixture
def sinks():
    """Factory: sinks(host name, **Sink kwargs) -> a started Sink on that host's
    address and the test's port; all stopped at teardown.  Tests name it before
    ringmaild, so the daemons stop first: a sink gone before the daemon would
    leave its idle connections' QUIT unanswered until the shutdown deadline."""
    made = []
    port = free_port()

    def make(name, **kw):
        s = Sink(HOSTS[name], port, name=name, **kw).start()
        made.append(s)
        return s

    make.port = port
    yield make
    for s in made:
        s.stop()


def relay_daemon(ringmaild, tmp_path, dns, port, delivery=None, limits=None, smtp=None, **kw):
    """An SMTP daemon (smtputil.smtp_daemon) with delivery on: DNS from dns,
    MX hosts on port, loopback clients may relay anywhere, quick retries."""
    dl = {"enabled": True, "dns_servers": dns.servers, "port": port, "tls": "may"}
    dl.update(delivery or {})
    lim = {"delivery_retry_initial_ms": 500, "delivery_retry_max_ms": 1000, "smtp_client_timeout_ms": 10000,
           "dns_timeout_ms": 500, "dns_tries": 1, "dns_ttl_max_ms": 60000}
    lim.update(limits or {})
    st = {"mynetworks": ["127.0.0.0/8"]}
    st.update(smtp or {})
    extra = dict(kw.pop("extra", {}))
    extra["delivery"] = dl
    return smtp_daemon(ringmaild, tmp_path, smtp=st, limits=lim, extra=extra, **kw)


def content_of(subject, body=b"hello\r\n"):
    return (b"From: <%s>\r\nTo: <x@y>\r\nSubject: %s\r\nMessage-ID: <%s@snd.test>\r\n\r\n"
            % (SENDER.encode(), subject.encode(), subject.replace(" ", "-").encode())) + body


def submit(d, rcpts, subject="test", sender=SENDER, content=None, conn=None):
    """One message over the mx listener; its queue id."""
    content = content if content is not None else content_of(subject)
    own = conn is None
    c = conn or SmtpConn(d.port("mx"))
    try:
        if own:
            c.ehlo()
        r = c.message(sender.encode(), [x.encode() for x in rcpts], content)
        return queue_id(r)
    finally:
        if own:
            c.close()


def outcomes(d, qid=None):
    """Every delivery log line so far: [(qid, to, relay, dsn, status, why)]."""
    out = []
    for m in re.finditer(LOG_LINE, d.log()):
        if qid is None or m.group("qid") == qid:
            out.append(m.groupdict())
    return out


def wait_outcome(d, qid, to, status, timeout=30.0, count=1):
    """Wait for the count-th log line of qid's recipient to with that status."""
    deadline = time.monotonic() + timeout
    while True:
        got = [o for o in outcomes(d, qid) if o["to"] == to and o["status"] == status]
        if len(got) >= count:
            return got[count - 1]
        if time.monotonic() >= deadline:
            raise AssertionError("no %s line for %s to=<%s> within %.0f s; lines: %r\nlog tail:\n%s"
                                 % (status, qid, to, timeout, outcomes(d, qid), d.log()[-3000:]))
        time.sleep(0.05)


def queue(d):
    """ringmailctl --json queue: {id: entry}."""
    r = d.ctl("--json", "queue", via_socket=True)
    assert r.returncode == 0, r.stderr
    return {e["id"]: e for e in json.loads(r.stdout)}


def wait_queue(d, pred, timeout=30.0, what="queue condition"):
    deadline = time.monotonic() + timeout
    while True:
        q = queue(d)
        if pred(q):
            return q
        if time.monotonic() >= deadline:
            raise AssertionError("%s not met within %.0f s: %r" % (what, timeout, q))
        time.sleep(0.05)


def wait_gone(d, qid, timeout=30.0):
    """Until the message has left the queue (delivered or bounced for good)."""
    wait_queue(d, lambda q: qid not in q, timeout, "%s gone from the queue" % qid)
    assert qid not in spool_messages(d), "%s still in the spool" % qid


def body_of(content):
    return content.split(b"\r\n\r\n", 1)[1]


def strip_received(content):
    """The content without the first (our) Received: header field and its continuation lines."""
    assert content.startswith(b"Received: "), content[:200]
    lines = content.split(b"\r\n")
    i = 1
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def parse_report(content):
    """A bounce as an email.message, with its parts checked for RFC 3464 form;
    returns (message, per-message fields, [per-recipient fields])."""
    msg = email.message_from_bytes(content, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status", msg["Content-Type"]
    parts = msg.get_payload()
    assert parts[0].get_content_type() == "text/plain"
    ds = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert len(ds) == 1, [p.get_content_type() for p in parts]
    # compat32 parses message/delivery-status into a list of header blocks.
    blocks = ds[0].get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2, blocks
    per_msg = dict(blocks[0].items())
    per_rcpt = [dict(b.items()) for b in blocks[1:]]
    assert "Reporting-MTA" in per_msg and per_msg["Reporting-MTA"].startswith("dns;"), per_msg
    for r in per_rcpt:
        for f in ("Final-Recipient", "Action", "Status"):
            assert f in r, (f, r)
    return msg, per_msg, per_rcpt


# ---- MX decisions ------------------------------------------------------------------------------

def test_mx_preference_and_fallback(sinks, ringmaild, tmp_path, dns):
    """The first MX refuses connections (nothing listens) or greets with 421:
    the second one gets the message; the first 421 host saw the connection."""
    mx2fb = sinks("mx2.fb.test")
    mx1gr = sinks("mx1.gr.test", greeting="421 4.3.2 too busy")
    mx2gr = sinks("mx2.gr.test")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port, log_level="debug")
    q1 = submit(d, ["u1@fb.test"], "fallback refused")
    q2 = submit(d, ["u2@gr.test"], "fallback 421")
    o1 = wait_outcome(d, q1, "u1@fb.test", "sent")
    o2 = wait_outcome(d, q2, "u2@gr.test", "sent")
    assert o1["relay"].startswith("mx2.fb.test[127.0.0.3]:%d" % sinks.port), o1
    assert o2["relay"].startswith("mx2.gr.test[127.0.0.5]:%d" % sinks.port), o2
    assert o1["dsn"] == "2.0.0" and "250" in o1["why"]
    m1 = mx2fb.wait_messages(1)
    m2 = mx2gr.wait_messages(1)
    assert [(m.sender, m.rcpts) for m in m1] == [(SENDER, ["u1@fb.test"])]
    assert [(m.sender, m.rcpts) for m in m2] == [(SENDER, ["u2@gr.test"])]
    assert body_of(m1[0].content) == b"hello\r\n"
    assert mx1gr.refused_greetings >= 1 and mx1gr.messages == []
    # Both tries left a trace in the debug log: refused, and the 421.
    log = d.log()
    assert re.search(r"connect to mx1\.fb\.test\[127\.0\.0\.2\]: Connection refused; trying the next host", log), log
    assert re.search(r"mx1\.gr\.test\[127\.0\.0\.4\] said: 421 4\.3\.2 too busy; trying the next host", log), log
    for q in (q1, q2):
        wait_gone(d, q)
    # Not a single deferral on the way.
    assert [o for o in outcomes(d) if o["status"] != "sent"] == []


def test_implicit_mx(sinks, ringmaild, tmp_path, dns):
    """No MX record: the domain's own A record is the exchanger (RFC 5321 5.1)."""
    s = sinks("implicit.test")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port)
    qid = submit(d, ["Someone@Implicit.Test"], "implicit")
    o = wait_outcome(d, qid, "Someone@Implicit.Test", "sent")
    assert o["relay"].startswith("implicit.test[127.0.0.6]:%d" % sinks.port), o
    m = s.wait_messages(1)
    assert m[0].rcpts == ["Someone@Implicit.Test"] and m[0].sender == SENDER
    wait_gone(d, qid)
    assert "MX" in dns.log() and "query[MX] implicit.test" in dns.log()


def test_null_mx_and_nxdomain_bounce_at_once(sinks, ringmaild, tmp_path, dns):
    """A null MX (RFC 7505) and a domain that does not exist bounce on the
    first attempt, without a connection: one report each to the sender."""
    snd = sinks("mx.snd.test")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port,
                     limits={"delivery_retry_initial_ms": 60000})   # a deferral would show as a hang
    q1 = submit(d, ["u@nullmx.test"], "null mx")
    q2 = submit(d, ["u@nx.test"], "nxdomain")
    o1 = wait_outcome(d, q1, "u@nullmx.test", "bounced")
    o2 = wait_outcome(d, q2, "u@nx.test", "bounced")
    assert o1["relay"] == "none" and o1["dsn"] == "5.1.10", o1     # RFC 7505 4.2
    assert "null MX" in o1["why"], o1
    assert o2["relay"] == "none" and o2["dsn"] == "5.1.2", o2
    assert "does not exist" in o2["why"], o2
    bounces = snd.wait_messages(2)
    assert sorted(m.rcpts[0] for m in bounces) == [SENDER, SENDER]
    assert all(m.sender == "" for m in bounces)
    by_rcpt = {}
    for m in bounces:
        msg, per_msg, per_rcpt = parse_report(m.content)
        assert msg["From"].startswith('"Mail Delivery System" <MAILER-DAEMON@'), msg["From"]
        assert msg["To"] == "<%s>" % SENDER or SENDER in msg["To"], msg["To"]
        assert len(per_rcpt) == 1
        by_rcpt[per_rcpt[0]["Final-Recipient"]] = per_rcpt[0]
    assert set(by_rcpt) == {"rfc822; u@nullmx.test", "rfc822; u@nx.test"}, by_rcpt
    for r in by_rcpt.values():
        assert r["Action"] == "failed" and re.fullmatch(r"5\.\d{1,3}\.\d{1,3}", r["Status"]), r
        assert "Diagnostic-Code" in r, r
    assert "null MX" in by_rcpt["rfc822; u@nullmx.test"]["Diagnostic-Code"]
    assert by_rcpt["rfc822; u@nullmx.test"]["Status"] == "5.1.10"
    assert by_rcpt["rfc822; u@nx.test"]["Status"] == "5.1.2"
    for q in (q1, q2):
        wait_gone(d, q)
    wait_queue(d, lambda q: q == {}, what="the bounces delivered too")
    assert d.stats()["total"]["spool_queued"] == 0
    assert len(re.findall(r"sender non-delivery notification: [0-9A-Z]{13}", d.log())) == 2
    # Only DNS was asked: no A lookups for the bounced domains.
    assert "query[A] nullmx.test" not in dns.log() and "query[A] nx.test" not in dns.log()


def test_dns_failure_defers_and_keeps_the_message(sinks, ringmaild, tmp_path, dns):
    """SERVFAIL or a timeout is a temporary failure: deferred, retried, queued."""
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port,
                     limits={"delivery_retry_initial_ms": 300, "delivery_retry_max_ms": 300})
    qid = submit(d, ["u@x.slow.test"], "servfail")
    o = wait_outcome(d, qid, "u@x.slow.test", "deferred")
    assert o["relay"] == "none" and o["dsn"].startswith("4."), o
    assert "MX lookup of x.slow.test" in o["why"], o
    # Retried (the DNS failure is not cached for long) and deferred again.
    wait_outcome(d, qid, "u@x.slow.test", "deferred", count=2)
    q = wait_queue(d, lambda q: qid in q and q[qid]["attempts"] >= 2 and q[qid]["last_error"], what="attempts")
    e = q[qid]
    assert e["recipients"] == [{"address": "u@x.slow.test", "state": "pending"}], e
    assert "MX lookup of x.slow.test" in e["last_error"], e
    assert qid in spool_messages(d)
    assert [o["status"] for o in outcomes(d, qid)] == ["deferred"] * len(outcomes(d, qid))
    r = d.ctl("queue", via_socket=True)
    assert b"last error: MX lookup of x.slow.test" in r.stdout, r.stdout


def test_deferral_then_success(sinks, ringmaild, tmp_path, dns):
    """The sink answers 451 to the end of data until told otherwise: deferred
    (the queue shows the error), then delivered on a later attempt."""
    s = sinks("mx.dst.test", data_reply="451 4.3.0 come back later")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port)
    qid = submit(d, ["u@dst.test"], "defer then send")
    o = wait_outcome(d, qid, "u@dst.test", "deferred")
    assert o["dsn"] == "4.3.0" and o["why"] == "451 4.3.0 come back later", o
    assert o["relay"].startswith("mx.dst.test[127.0.0.8]")
    q = wait_queue(d, lambda q: qid in q and "451 4.3.0 come back later" in q[qid]["last_error"],
                   what="last error shown")
    assert q[qid]["attempts"] >= 1 and q[qid]["recipients"][0]["state"] == "pending"
    assert qid in spool_messages(d)
    with s.lock:
        s.data_reply = None
    o = wait_outcome(d, qid, "u@dst.test", "sent")
    assert o["dsn"] == "2.0.0"
    m = s.wait_messages(1)
    assert len(m) == 1 and m[0].rcpts == ["u@dst.test"]
    assert s.data_count >= 2
    wait_gone(d, qid)
    assert "sender non-delivery notification" not in d.log()


def test_expiry_bounces_with_rfc3464_report(sinks, ringmaild, tmp_path, dns):
    """A message deferred past limits.delivery_queue_lifetime_ms bounces: the
    report goes from <> to the sender's domain, RFC 3464 in form."""
    s = sinks("mx.dst.test", data_reply="451 4.3.0 still not now")
    snd = sinks("mx.snd.test")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port,
                     limits={"delivery_queue_lifetime_ms": 1500, "delivery_retry_initial_ms": 300,
                             "delivery_retry_max_ms": 300})
    content = content_of("expiry", b"the original body\r\n")
    qid = submit(d, ["late@dst.test"], content=content)
    wait_outcome(d, qid, "late@dst.test", "deferred")
    o = wait_outcome(d, qid, "late@dst.test", "bounced", timeout=20)
    assert "message expired in the queue; last error: mx.dst.test[127.0.0.8] said: 451 4.3.0 still not now" \
        in o["why"] or "451 4.3.0 still not now" in o["why"], o
    b = snd.wait_messages(1)
    assert len(b) == 1 and b[0].sender == "" and b[0].rcpts == [SENDER]
    msg, per_msg, per_rcpt = parse_report(b[0].content)
    assert "Arrival-Date" in per_msg, per_msg
    assert len(per_rcpt) == 1
    r = per_rcpt[0]
    assert r["Final-Recipient"] == "rfc822; late@dst.test" and r["Action"] == "failed", r
    assert re.fullmatch(r"(5\.\d+\.\d+|4\.4\.7)", r["Status"]), r
    assert r["Status"].endswith(".4.7"), r
    assert "451 4.3.0 still not now" in r["Diagnostic-Code"], r
    assert r.get("Remote-MTA", "").startswith("dns; mx.dst.test"), r
    # The original's headers come back (Message-ID identifies it).
    parts = msg.get_payload()
    orig = [p for p in parts if p.get_content_type() in ("message/rfc822", "text/rfc822-headers")]
    assert orig, [p.get_content_type() for p in parts]
    assert b"Message-ID: <expiry@snd.test>" in b[0].content
    wait_gone(d, qid)
    assert s.messages == [] and s.data_count >= 2


def test_delay_warning_once_then_delivery(sinks, ringmaild, tmp_path, dns):
    """limits.delivery_delay_warning_ms: a message still deferred at that age
    sends its sender one RFC 3464 "delayed" notice (headers only, with
    Will-Retry-Until), however many deferrals follow; a recipient whose
    NOTIFY leaves DELAY out gets none; the message is then delivered and no
    failure report follows."""
    s = sinks("mx.dst.test", data_reply="451 4.3.0 not yet")
    snd = sinks("mx.snd.test")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port,
                     limits={"delivery_delay_warning_ms": 1000, "delivery_retry_initial_ms": 300,
                             "delivery_retry_max_ms": 300, "delivery_queue_lifetime_ms": 120000})
    qid = submit(d, ["slow@dst.test"], "delay warning", content=content_of("delay warning", b"body\r\n"))
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        c.cmd(b"MAIL FROM:<%s>" % SENDER.encode(), 250)
        c.cmd(b"RCPT TO:<quiet@dst.test> NOTIFY=FAILURE", 250)
        c.cmd(b"DATA", 354)
        c.send(content_of("no delay notice") + b".\r\n")
        q_quiet = queue_id(c.reply())
    # Past the mark, and several deferrals after it.
    wait_outcome(d, qid, "slow@dst.test", "deferred", count=8, timeout=30)
    wait_outcome(d, q_quiet, "quiet@dst.test", "deferred", count=8, timeout=30)
    notices = snd.wait_messages(1)
    time.sleep(0.5)
    assert len(snd.messages) == 1, [m.content[:300] for m in snd.messages]
    n = notices[0]
    assert n.sender == "" and n.rcpts == [SENDER]
    msg, per_msg, per_rcpt = parse_report(n.content)
    assert msg["Subject"] == "Delayed Mail (still being retried)", msg["Subject"]
    assert [r["Final-Recipient"] for r in per_rcpt] == ["rfc822; slow@dst.test"], per_rcpt
    r = per_rcpt[0]
    assert r["Action"] == "delayed" and r["Status"] == "4.3.0", r
    assert "Will-Retry-Until" in r, r
    assert "451 4.3.0 not yet" in r["Diagnostic-Code"], r
    types = [p.get_content_type() for p in msg.get_payload()]
    assert "text/rfc822-headers" in types and "message/rfc822" not in types, types
    assert b"Message-ID: <delay-warning@snd.test>" in n.content and b"\r\nbody\r\n" not in n.content
    assert len(re.findall(r"%s: sender delay notification: [0-9A-Z]{13}" % qid, d.log())) == 1
    assert "%s: sender delay notification" % q_quiet not in d.log()
    # Then the sink takes it: delivered, no failure report, still one notice.
    with s.lock:
        s.data_reply = None
    wait_outcome(d, qid, "slow@dst.test", "sent")
    wait_outcome(d, q_quiet, "quiet@dst.test", "sent")
    wait_gone(d, qid)
    wait_gone(d, q_quiet)
    assert len(snd.messages) == 1
    assert "sender non-delivery notification" not in d.log()


def test_5xx_fails_one_recipient_only(sinks, ringmaild, tmp_path, dns):
    """One refused recipient bounces; the others go in the same transaction;
    one report lists only the refused one."""
    s = sinks("mx.dst.test", rcpt_reply={"bad@dst.test": "550 5.1.1 no such user here"})
    snd = sinks("mx.snd.test")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port)
    qid = submit(d, ["good1@dst.test", "bad@dst.test", "good2@dst.test"], "partial")
    ob = wait_outcome(d, qid, "bad@dst.test", "bounced")
    assert ob["dsn"] == "5.1.1" and ob["why"] == "550 5.1.1 no such user here", ob
    for r in ("good1@dst.test", "good2@dst.test"):
        assert wait_outcome(d, qid, r, "sent")["dsn"] == "2.0.0"
    m = s.wait_messages(1)
    assert len(m) == 1 and m[0].rcpts == ["good1@dst.test", "good2@dst.test"]
    b = snd.wait_messages(1)
    msg, per_msg, per_rcpt = parse_report(b[0].content)
    assert [r["Final-Recipient"] for r in per_rcpt] == ["rfc822; bad@dst.test"]
    assert per_rcpt[0]["Status"] == "5.1.1" and per_rcpt[0]["Action"] == "failed"
    assert "550 5.1.1 no such user here" in per_rcpt[0]["Diagnostic-Code"]
    assert b"good1@dst.test" not in b[0].content.split(b"Content-Type: message/delivery-status")[1].split(
        b"\r\n\r\n--")[0]
    wait_gone(d, qid)
    wait_queue(d, lambda q: q == {}, what="empty queue")
    assert len(snd.messages) == 1
    assert len(re.findall(r"sender non-delivery notification", d.log())) == 1


def test_no_bounce_for_null_sender(sinks, ringmaild, tmp_path, dns):
    """A message from <> that fails (refused, null MX) bounces without a report."""
    s = sinks("mx.dst.test", rcpt_reply={"bad@dst.test": "550 5.1.1 no such user"})
    snd = sinks("mx.snd.test")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port)
    q1 = submit(d, ["bad@dst.test"], "from null 1", sender="")
    q2 = submit(d, ["u@nullmx.test"], "from null 2", sender="")
    wait_outcome(d, q1, "bad@dst.test", "bounced")
    wait_outcome(d, q2, "u@nullmx.test", "bounced")
    wait_gone(d, q1)
    wait_gone(d, q2)
    # The daemon's own queue is empty: no report was made, for <> or anyone.
    wait_queue(d, lambda q: q == {}, what="empty queue")
    assert d.stats()["total"]["spool_queued"] == 0
    assert "sender non-delivery notification" not in d.log()
    # RFC 5321 6.1: dropped, and the log says so for each.
    for q in (q1, q2):
        assert "%s: undeliverable message from the null sender dropped, no report" % q in d.log()
    assert snd.messages == [] and snd.connections == 0 and s.messages == []


# ---- TLS ------------------------------------------------------------------------------------------

def make_ca_and_leaf(d, name):
    """A CA and a leaf certificate for name signed by it (openssl)."""
    d = Path(d)
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    key, csr, crt, ext = d / "leaf.key", d / "leaf.csr", d / "leaf.crt", d / "leaf.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda argv: subprocess.run(argv, check=True, capture_output=True, timeout=60)
    run(["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "30",
         "-subj", "/CN=ringmail test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
    run(["openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=%s" % name])
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
                   "subjectAltName=DNS:%s\n" % name)
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(crt), "-days", "30", "-extfile", str(ext)])
    return ca_crt, crt, key


def tls_world(ringmaild, tmp_path, dns, sinks, domains):
    """Sinks without STARTTLS, with a test-CA certificate for mx.tls.test, and
    with that certificate under another name; a daemon whose tls_policy_map
    gives each of domains its policy (TLS_POLICY) and trusts the test CA."""
    ca, crt, key = make_ca_and_leaf(tmp_path, "mx.tls.test")
    plain = sinks("mx.plain.test")
    tls = sinks("mx.tls.test", tls_cert=crt, tls_key=key)
    wrong = sinks("mx.wrong.test", tls_cert=crt, tls_key=key)
    pmap = tmp_path / "tls_policy"
    pmap.write_text("".join("%s %s\n" % (dom, TLS_POLICY[dom]) for dom in domains))
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port,
                     delivery={"tls": "none", "tls_ca": str(ca), "tls_policy_map": str(pmap)},
                     limits={"delivery_retry_initial_ms": 60000})
    qids = {dom: submit(d, ["u@" + dom], "tls " + dom) for dom in domains}
    return d, qids, plain, tls, wrong


def test_starttls_may_and_encrypt(sinks, ringmaild, tmp_path, dns):
    """may: TLS when offered, plaintext otherwise; encrypt: TLS without
    verification, and a server without STARTTLS defers with the reason."""
    doms = ["may-plain.test", "may-tls.test", "enc-plain.test", "enc-tls.test"]
    d, qids, plain, tls, wrong = tls_world(ringmaild, tmp_path, dns, sinks, doms)
    sent = {dom: wait_outcome(d, qids[dom], "u@" + dom, "sent") for dom in ("may-plain.test", "may-tls.test",
                                                                            "enc-tls.test")}
    deferred = wait_outcome(d, qids["enc-plain.test"], "u@enc-plain.test", "deferred")
    assert ", tls=" not in sent["may-plain.test"]["relay"], sent
    for dom in ("may-tls.test", "enc-tls.test"):
        assert re.search(r", tls=TLSv1\.[23]$", sent[dom]["relay"]), sent[dom]
    assert deferred["dsn"].startswith("4.") and deferred["relay"] == "none", deferred
    assert "TLS is required for mx.plain.test[127.0.0.9], which does not offer STARTTLS" in deferred["why"]
    # The sinks' side: TLS exactly where the log says so; nothing sent in clear to enc-plain.
    assert [(m.rcpts, m.tls) for m in plain.wait_messages(1)] == [(["u@may-plain.test"], False)]
    got = sorted((m.rcpts[0], m.tls) for m in tls.wait_messages(2))
    assert got == [("u@enc-tls.test", True), ("u@may-tls.test", True)], got
    plain.wait(lambda s: s.connections >= 2, what="the enc-plain.test connection")
    assert len(plain.mails) == 1, plain.mails
    q = queue(d)
    assert set(q) == {qids["enc-plain.test"]}, q
    assert "does not offer STARTTLS" in q[qids["enc-plain.test"]]["last_error"]
    assert qids["enc-plain.test"] in spool_messages(d)


def test_starttls_verify(sinks, ringmaild, tmp_path, dns):
    """verify: the certificate must chain to delivery.tls_ca and carry the MX
    host's name; the wrong name defers with the reason logged."""
    doms = ["ver-tls.test", "ver-wrong.test"]
    d, qids, plain, tls, wrong = tls_world(ringmaild, tmp_path, dns, sinks, doms)
    ok = wait_outcome(d, qids["ver-tls.test"], "u@ver-tls.test", "sent", timeout=10)
    assert re.search(r"^mx\.tls\.test\[127\.0\.0\.10\]:\d+, tls=TLSv1\.[23]$", ok["relay"]), ok
    bad = wait_outcome(d, qids["ver-wrong.test"], "u@ver-wrong.test", "deferred", timeout=10)
    assert "TLS with mx.wrong.test[127.0.0.11] failed: certificate not verified" in bad["why"], bad
    assert [(m.rcpts, m.tls) for m in tls.wait_messages(1)] == [(["u@ver-tls.test"], True)]
    assert wrong.messages == [] and wrong.mails == []
    q = queue(d)
    assert set(q) == {qids["ver-wrong.test"]}, q
    assert "certificate not verified" in q[qids["ver-wrong.test"]]["last_error"]


def test_starttls_handshake_failure_falls_back_to_plaintext_under_may(sinks, ringmaild, tmp_path, dns):
    """A server that offers STARTTLS and then fails every handshake: under
    may the same host is tried again in plaintext (as Postfix does) and the
    message goes; under encrypt it defers with 4.7.5 and nothing is sent."""
    ca, crt, key = make_ca_and_leaf(tmp_path, "mx.broken.test")
    broken = sinks("mx.broken.test", tls_cert=crt, tls_key=key, tls_ciphers="ECDHE-ECDSA-AES128-SHA")
    pmap = tmp_path / "tls_policy"
    pmap.write_text("may-broken.test may\nenc-broken.test encrypt\n")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port,
                     delivery={"tls": "none", "tls_policy_map": str(pmap)},
                     limits={"delivery_retry_initial_ms": 60000})
    q_may = submit(d, ["u@may-broken.test"], "broken tls may")
    o = wait_outcome(d, q_may, "u@may-broken.test", "sent")
    assert ", tls=" not in o["relay"] and o["relay"].startswith("mx.broken.test[127.0.0.14]"), o
    m = broken.wait_messages(1)
    assert [(x.rcpts, x.tls) for x in m] == [(["u@may-broken.test"], False)]
    assert re.search(r"TLS with mx\.broken\.test\[127\.0\.0\.14\] failed: .*; trying "
                     r"mx\.broken\.test\[127\.0\.0\.14\] again without TLS", d.log()), d.log()[-2000:]
    wait_gone(d, q_may)
    # encrypt: one handshake that fails, no fallback, a deferral with the TLS code.
    conns = broken.connections
    q_enc = submit(d, ["u@enc-broken.test"], "broken tls encrypt")
    o = wait_outcome(d, q_enc, "u@enc-broken.test", "deferred")
    assert o["dsn"] == "4.7.5" and "TLS with mx.broken.test[127.0.0.14] failed" in o["why"], o
    assert broken.connections == conns + 1, (broken.connections, conns)
    assert len(broken.messages) == 1
    assert "TLS with mx.broken.test[127.0.0.14] failed" in queue(d)[q_enc]["last_error"]
    assert q_enc in spool_messages(d)


def test_connection_failures_defer_with_4_4_x(sinks, ringmaild, tmp_path, dns):
    """RFC 3463 codes of the connection: nobody listening is 4.4.1 (no
    answer from host); a connection the server drops at the end of data is
    4.4.2 (bad connection); a DNS failure is 4.4.3."""
    s = sinks("mx.dst.test")
    with s.lock:
        s.drop_data = 1
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port,
                     limits={"delivery_retry_initial_ms": 60000, "delivery_dead_destination_ms": 0})
    q1 = submit(d, ["u@dead.test"], "refused")
    o = wait_outcome(d, q1, "u@dead.test", "deferred")
    assert o["dsn"] == "4.4.1" and "Connection refused" in o["why"], o
    q2 = submit(d, ["u@dst.test"], "dropped")
    o = wait_outcome(d, q2, "u@dst.test", "deferred")
    assert o["dsn"] == "4.4.2", o
    q3 = submit(d, ["u@x.slow.test"], "servfail")
    o = wait_outcome(d, q3, "u@x.slow.test", "deferred")
    assert o["dsn"] == "4.4.3", o
    for q in (q1, q2, q3):
        assert q in spool_messages(d)


def test_large_messages_over_tls_and_plaintext(sinks, ringmaild, tmp_path, dns):
    """Content several times limits.output_bytes_max, dot-stuffed DATA over
    TLS and in plaintext: every byte arrives (the content pump resumes each
    time output drains; it once stalled after output_bytes_max - 32 KiB)."""
    ca, crt, key = make_ca_and_leaf(tmp_path, "mx.tls.test")
    plain = sinks("mx.plain.test")
    tls = sinks("mx.tls.test", tls_cert=crt, tls_key=key)
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port, limits={"output_bytes_max": 65536})
    line = b".a line that starts with a dot, and more text to make it long enough\r\n"
    body = line * ((1300 << 10) // len(line) + 1)
    assert len(body) > 1 << 20
    qids = {dom: submit(d, ["big@" + dom], content=content_of("big " + dom, body))
            for dom in ("may-plain.test", "may-tls.test")}
    for dom, q in qids.items():
        o = wait_outcome(d, q, "big@" + dom, "sent", timeout=60)
        assert (", tls=" in o["relay"]) == (dom == "may-tls.test"), o
    for sink, dom in ((plain, "may-plain.test"), (tls, "may-tls.test")):
        m, = sink.wait_messages(1)
        assert m.rcpts == ["big@" + dom] and m.tls == (dom == "may-tls.test")
        assert strip_received(m.content) == content_of("big " + dom, body)


# ---- connections --------------------------------------------------------------------------------

def test_connection_reuse(sinks, ringmaild, tmp_path, dns):
    """Messages to one next hop share a connection, messages_per_connection at a time."""
    s = sinks("mx.dst.test")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port,
                     limits={"delivery_concurrency_per_destination": 1, "delivery_messages_per_connection": 3,
                             "delivery_connection_idle_ms": 10000})
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        qids = [submit(d, ["r%d@dst.test" % i], "reuse %d" % i, conn=c) for i in range(7)]
    for i, q in enumerate(qids):
        wait_outcome(d, q, "r%d@dst.test" % i, "sent")
    msgs = s.wait_messages(7)
    assert sorted(m.rcpts[0] for m in msgs) == sorted("r%d@dst.test" % i for i in range(7))
    # 7 messages, 3 per connection, one connection at a time: 3 connections.
    assert s.connections == 3, (s.connections, s.transactions)
    assert sorted(s.transactions.values()) == [1, 3, 3], s.transactions
    assert s.max_open == 1
    for q in qids:
        wait_gone(d, q)


def test_idle_connection_is_checked_with_rset(sinks, ringmaild, tmp_path, dns):
    """A connection taken from idle starts its job with RSET (as Postfix
    checks a cached session); one whose RSET is refused is closed and the
    job goes out on a new connection at once, never deferred.  A job handed
    straight from one transaction to the next sends no RSET."""
    s = sinks("mx.dst.test")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port, workers=1,
                     limits={"delivery_concurrency_per_destination": 1, "delivery_messages_per_connection": 100,
                             "delivery_connection_idle_ms": 20000})
    q1 = submit(d, ["i1@dst.test"], "idle 1")
    wait_outcome(d, q1, "i1@dst.test", "sent")
    s.wait(lambda x: x.open_sessions == 1, what="one idle session")
    q2 = submit(d, ["i2@dst.test"], "idle 2")
    wait_outcome(d, q2, "i2@dst.test", "sent")
    assert s.connections == 1 and s.rsets == 1, (s.connections, s.rsets)
    with s.lock:
        s.rset_reply = ["421 4.4.2 idle too long"]
    q3 = submit(d, ["i3@dst.test"], "idle 3")
    o = wait_outcome(d, q3, "i3@dst.test", "sent")
    assert o["dsn"] == "2.0.0", o
    assert [x["status"] for x in outcomes(d, q3)] == ["sent"], outcomes(d, q3)
    assert s.connections == 2 and s.rsets == 2, (s.connections, s.rsets)
    assert sorted(m.rcpts[0] for m in s.wait_messages(3)) == ["i1@dst.test", "i2@dst.test", "i3@dst.test"]
    # A burst on one connection: jobs follow one another without RSET.
    rsets = s.rsets
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        burst = [submit(d, ["b%d@dst.test" % i], "burst %d" % i, conn=c) for i in range(6)]
    for i, q in enumerate(burst):
        wait_outcome(d, q, "b%d@dst.test" % i, "sent")
    assert s.connections == 2, s.connections
    assert s.rsets - rsets < 6, (s.rsets, rsets)
    for q in [q1, q2, q3] + burst:
        wait_gone(d, q)


def test_concurrency_per_destination(sinks, ringmaild, tmp_path, dns):
    """A sink that holds each end of data for a while: never more sessions
    at once than limits.delivery_concurrency_per_destination."""
    s = sinks("mx.dst.test", hold_s=0.8)
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port, workers=1,
                     limits={"delivery_concurrency_per_destination": 3, "delivery_connection_idle_ms": 100})
    with SmtpConn(d.port("mx")) as c:
        c.ehlo()
        qids = [submit(d, ["c%d@dst.test" % i], "conc %d" % i, conn=c) for i in range(9)]
    msgs = s.wait_messages(9, timeout=60)
    assert len(msgs) == 9
    assert 2 <= s.max_open <= 3, s.max_open
    for i, q in enumerate(qids):
        wait_outcome(d, q, "c%d@dst.test" % i, "sent")
        wait_gone(d, q)


def test_concurrency_shared_by_workers(sinks, ringmaild, tmp_path, dns):
    """Two workers share the limit (each its part, rounded up): 2 -> 1 each."""
    s = sinks("mx.dst.test", hold_s=0.5)
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port, workers=2,
                     limits={"delivery_concurrency_per_destination": 2})
    conns = [SmtpConn(d.port("mx")) for _ in range(4)]
    qids = []
    for i in range(8):
        c = conns[i % 4]
        if i < 4:
            c.ehlo()
        qids.append(submit(d, ["w%d@dst.test" % i], "workers %d" % i, conn=c))
    for c in conns:
        c.close()
    s.wait_messages(8, timeout=60)
    assert s.max_open <= 2, s.max_open
    for q in qids:
        wait_gone(d, q)


def test_recipients_sharing_a_next_hop_go_in_one_transaction(sinks, ringmaild, tmp_path, dns):
    """Recipients of one domain: one MAIL, several RCPT.  Two relay domains with
    the same next hop: one transaction too.  Another domain with the same MX
    host is another next hop: its own transaction."""
    s = sinks("mx.dst.test")
    nexthop = "[127.0.0.8]:%d" % sinks.port
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port,
                     smtp={"relay_domains": [{"domain": "r1.test", "nexthop": nexthop},
                                             {"domain": "r2.test", "nexthop": nexthop}]})
    rcpts = ["a@dst.test", "d@r1.test", "b@dst.test", "c@dst2.test", "e@r2.test", "f@DST.test"]
    qid = submit(d, rcpts, "one transaction")
    for r in rcpts:
        wait_outcome(d, qid, r, "sent")
    msgs = s.wait_messages(3)
    assert len(msgs) == 3 and len(s.mails) == 3, (s.mails, [m.rcpts for m in msgs])
    assert sorted(tuple(m.rcpts) for m in msgs) == sorted([("a@dst.test", "b@dst.test", "f@DST.test"),
                                                            ("c@dst2.test",), ("d@r1.test", "e@r2.test")])
    relays = {o["to"]: o["relay"] for o in outcomes(d, qid)}
    assert relays["d@r1.test"].startswith("127.0.0.8[127.0.0.8]:%d" % sinks.port), relays
    # One content, the same in every transaction.
    assert len({m.content for m in msgs}) == 1
    wait_gone(d, qid)


# ---- end to end ----------------------------------------------------------------------------------

def test_end_to_end_submission_to_mx(sinks, ringmaild, tmp_path, dns):
    """Submitted on 587 with STARTTLS and AUTH, relayed through an MX lookup to
    a sink: the content arrives byte for byte, only our Received: added."""
    s = sinks("mx.e2e.test")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port, smtp={"mynetworks": []})
    lines = [b"From: demo@dev.test", b"To: bob@e2e.test", b"Subject: end to end", b"MIME-Version: 1.0",
             b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: 8bit", b""]
    for i in range(3000):
        lines.append(b"%05d %s" % (i, (b"x" * (i % 97))))
        if i % 50 == 0:
            lines += [b".", b"..", b". leading dot", b"", b"\xc3\xa4\xc3\xb6 8bit \xe2\x98\x83", b"\t tab"]
    content = b"\r\n".join(lines) + b"\r\n"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", d.port("submission"), timeout=30) as c:
        c.ehlo("client.example")
        c.starttls(context=ctx)
        c.ehlo("client.example")
        c.login("demo@dev.test", "demo")
        c.mail("demo@dev.test", ["BODY=8BITMIME"])
        assert c.rcpt("bob@e2e.test")[0] == 250
        code, reply = c.data(content)
        assert code == 250, reply
        qid = re.search(rb"queued as ([0-9A-Z]{13})", reply).group(1).decode()
    o = wait_outcome(d, qid, "bob@e2e.test", "sent")
    assert o["relay"].startswith("mx.e2e.test[127.0.0.13]:%d" % sinks.port), o
    m = s.wait_messages(1)[0]
    assert m.sender == "demo@dev.test" and m.rcpts == ["bob@e2e.test"]
    assert "BODY=8BITMIME" in m.mail_options, m.mail_options
    assert m.content.startswith(b"Received: from client.example"), m.content[:300]
    assert b"with ESMTPSA id " + qid.encode() in m.content.split(b"\r\n", 3)[1] + m.content.split(b"\r\n", 3)[2] \
        or qid.encode() in m.content[:400], m.content[:400]
    got = strip_received(m.content)
    assert got == content, "differs at byte %d" % next(i for i in range(min(len(got), len(content)))
                                                       if got[i] != content[i])
    wait_gone(d, qid)


def test_smarthost_with_auth_over_tls(sinks, ringmaild, tmp_path, dns):
    """delivery.smarthost with AUTH: every outside domain goes there, over
    STARTTLS, authenticated; the smarthost requires both."""
    ca, crt, key = make_ca_and_leaf(tmp_path, "smart.test")
    s = sinks("smart.test", tls_cert=crt, tls_key=key, auth={"relayuser": "s3cret pass"})
    pw = tmp_path / "smarthost.pw"
    pw.write_text("s3cret pass\n")
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port,
                     delivery={"smarthost": "[smart.test]", "smarthost_user": "relayuser",
                               "smarthost_password_file": str(pw), "tls": "encrypt"})
    qid = submit(d, ["x@elsewhere.example", "y@dst.test"], "via smarthost")
    for r in ("x@elsewhere.example", "y@dst.test"):
        o = wait_outcome(d, qid, r, "sent")
        assert o["relay"].startswith("smart.test[127.0.0.12]:%d, tls=TLSv1." % sinks.port), o
    m = s.wait_messages(1)
    assert len(m) == 1 and m[0].rcpts == ["x@elsewhere.example", "y@dst.test"]
    assert m[0].tls and m[0].auth == "relayuser", m[0]
    assert s.auth_attempts == [("PLAIN", "relayuser")]
    wait_gone(d, qid)
    assert "query[A] smart.test" in dns.log()         # "[smart.test]": its address, no MX lookup
    assert "query[MX] smart.test" not in dns.log() and "query[MX] elsewhere.example" not in dns.log()


def test_ringmail_to_ringmail_pipelining_bdat_dsn(sinks, ringmaild, tmp_path, dns):
    """Delivery to a server with PIPELINING and CHUNKING (another ringmaild,
    through a recording relay): MAIL and every RCPT in one go, the content in
    one BDAT LAST, DSN parameters passed on, a recipient the server refuses in
    the pipelined batch bounced alone, the content byte for byte."""
    snd = sinks("mx.snd.test")
    rmap = tmp_path / "recipients"
    rmap.write_text("a@dst.test ok\nb@dst.test ok\n")
    rx = smtp_daemon(ringmaild, tmp_path, name="rx", listeners=[dict(name="plain", protocol="smtp")],
                     smtp={"recipient_map": str(rmap),
                           "relay_domains": [{"domain": "dst.test", "nexthop": "[127.0.0.1]:1"}]})
    proxy = Proxy("127.0.0.8", sinks.port, ("127.0.0.1", rx.port("plain"))).start()
    try:
        d = relay_daemon(ringmaild, tmp_path, dns, sinks.port, delivery={"tls": "none"})
        lines = [b"From: <alice@snd.test>", b"Subject: to ringmail", b""]
        for i in range(4000):
            lines.append(b".%d" % i if i % 7 == 0 else b"line %d %s" % (i, b"y" * (i % 60)))
        content = b"\r\n".join(lines) + b"\r\n"
        with SmtpConn(d.port("mx")) as c:
            c.ehlo()
            c.cmd(b"MAIL FROM:<alice@snd.test> RET=HDRS ENVID=env123", 250)
            c.cmd(b"RCPT TO:<a@dst.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@dst.test", 250)
            c.cmd(b"RCPT TO:<unknown@dst.test>", 250)
            c.cmd(b"RCPT TO:<b@dst.test>", 250)
            c.cmd(b"DATA", 354)
            from smtputil import dot_stuff
            c.send(dot_stuff(content) + b".\r\n")
            qid = queue_id(c.reply())
        for r in ("a@dst.test", "b@dst.test"):
            assert wait_outcome(d, qid, r, "sent")["relay"].startswith("mx.dst.test[127.0.0.8]")
        o = wait_outcome(d, qid, "unknown@dst.test", "bounced")
        assert o["dsn"] == "5.1.1" and "550" in o["why"], o
        # The receiver's side: one message for the two it knows, DSN fields kept.
        held = spool_messages(rx)
        assert len(held) == 1, held
        (rqid, (size, _, sender, rcpts)), = held.items()
        assert sender == "alice@snd.test" and rcpts == ["a@dst.test", "b@dst.test"], held
        env = spool_envelope(rx, rqid)
        assert env["envid"] == "env123" and env["ret"] == "2", env
        assert env["rcpt"][0] == "a@dst.test notify 6 orcpt rfc822;a@dst.test", env["rcpt"]
        got = strip_received(strip_received(spool_content(rx, rqid)))
        assert got == content
        # On the wire: pipelined MAIL and RCPTs, then BDAT with the whole content.
        sent = proxy.client_bytes()
        as_sent = strip_received(spool_content(rx, rqid))     # the sender's Received: and the content
        assert b"BDAT %d LAST\r\n" % len(as_sent) in sent, sent[:600]
        assert b"\r\nDATA\r\n" not in sent
        log = proxy.log
        i_mail = next(i for i, (k, b) in enumerate(log) if k == "c>s" and b"MAIL FROM:" in b)
        seen, i_rcpt = 0, None
        for i in range(i_mail, len(log)):
            assert log[i][0] == "c>s", "a server reply came between MAIL and the last RCPT: %r" % log[i_mail:i + 1]
            seen += log[i][1].count(b"RCPT TO:")
            if seen >= 3:
                i_rcpt = i
                break
        assert i_rcpt is not None
        # The report lists only the refused recipient.
        b = snd.wait_messages(1)
        _, _, per_rcpt = parse_report(b[0].content)
        assert [r["Final-Recipient"] for r in per_rcpt] == ["rfc822; unknown@dst.test"]
        wait_gone(d, qid)
    finally:
        proxy.stop()


def test_connection_lost_at_end_of_data_defers_then_delivers(sinks, ringmaild, tmp_path, dns):
    """The server closes at the end of data without a reply: deferred (the
    outcome is unknown), retried, delivered; never bounced."""
    s = sinks("mx.dst.test")
    s.drop_data = 1
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port)
    qid = submit(d, ["lost@dst.test", "lost2@dst.test"], "lost")
    o = wait_outcome(d, qid, "lost@dst.test", "deferred")
    assert o["dsn"].startswith("4."), o
    assert "closed the connection" in o["why"] or "connection" in o["why"], o
    wait_outcome(d, qid, "lost@dst.test", "sent")
    wait_outcome(d, qid, "lost2@dst.test", "sent")
    m = s.wait_messages(1)
    assert len(m) == 1 and m[0].rcpts == ["lost@dst.test", "lost2@dst.test"]
    assert s.in_data == 2 and s.connections == 2
    wait_gone(d, qid)
    assert "bounced" not in [o["status"] for o in outcomes(d)]


def test_stop_during_delivery_keeps_the_message(sinks, ringmaild, tmp_path, dns):
    """SIGTERM while a transaction waits for its end-of-data reply and while a
    DNS query is out: ringmaild exits 0, clean under ASan; after a restart on
    the same spool both messages are delivered (the held one perhaps twice:
    at least once is the rule)."""
    s = sinks("mx.dst.test", hold_s=30)
    d = relay_daemon(ringmaild, tmp_path, dns, sinks.port, name="stop",
                     limits={"dns_timeout_ms": 5000, "shutdown_timeout_ms": 2000})
    q1 = submit(d, ["held@dst.test"], "held")
    q2 = submit(d, ["u@x.slow.test"], "dns out")
    s.wait(lambda s: s.in_data >= 1, what="the end of data reached")
    deadline = time.monotonic() + 10
    while "query[MX] x.slow.test" not in dns.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    d.signal(__import__("signal").SIGTERM)
    assert d.wait(20) == 0, d.log()[-3000:]
    assert d.bad_log_lines() == []
    held = spool_messages(d)
    assert q1 in held and q2 in held, held
    with s.lock:
        s.hold_s = 0
    d2 = relay_daemon(ringmaild, tmp_path, dns, sinks.port, name="stop")
    wait_outcome(d2, q1, "held@dst.test", "sent")
    assert any(m.rcpts == ["held@dst.test"] for m in s.wait_messages(1))
    wait_outcome(d2, q2, "u@x.slow.test", "deferred")
