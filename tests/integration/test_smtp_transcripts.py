"""Golden SMTP transcripts (as Postfix's protocol tests are golden files): each
file in transcripts/ is one SMTP session, the client's bytes and the server's
exact replies, played against the real daemon (smtputil.smtp_daemon) in up to
three ways that must all give the same replies.

Transcript format (UTF-8 text, one directive a line)
----------------------------------------------------
A header, then the body.  Lines starting with "#" are comments and blank lines
are ignored, anywhere.

Header (before the first body line; "listener" is required):
    listener: mx | submission | submissions | plain
        the smtp_daemon listener to connect to ("submissions" is implicit
        TLS: the socket is wrapped in TLS on connect, before the greeting)
    smtp: {JSON object}        merged over smtp_daemon's smtp settings
    limits: {JSON object}      merged over smtp_daemon's limits
    modes: step pipeline chunk the ways to play it (default "step pipeline");
        a transcript that cannot be pipelined leaves "pipeline" out and says
        why in a comment

Body:
    C: <text>   client bytes, CR LF appended ("C:" alone sends an empty line)
    R: <text>   client bytes sent raw, nothing appended (a BDAT chunk)
    S: <text>   one reply line the server must send next, exactly (without
                its CR LF); placeholders: {QID} a 13-character queue id
                ([0-9A-Z]{13}), {HOST} the configured smtp.hostname, {ANY}
                any text (one that cannot be predicted)
    STARTTLS    wrap the socket in TLS here (after the 220 of STARTTLS)
    CLOSE       the server must close the connection here, sending nothing
                more; nothing may follow but SPOOL lines
    SPOOL: {JSON object}
                the message acknowledged by the latest "S: 250 ... {QID}"
                line must be in the spool so; keys, all optional:
                  "from": sender ("" for the null sender),
                  "to": [recipients], "rcpt_count": N,
                  "content": the content after the Received: header,
                  "received": the Received: header (CR LF and tabs included),
                              a pattern with {QID} (this message's), {HOST}, {ANY},
                  "envelope": {key: value} that spool_envelope must show
                              ("rcpt": its list of lines; values compared
                              without trailing spaces)
    REPEAT <n> ... END
                the lines between (no nested REPEAT), n times; {I} in them
                is 0 .. n-1
In C, R and S text: the separator after "C:"/"R:"/"S:" is one optional space,
everything after it counts (write a trailing space as \\x20); escapes \\r \\n
\\t \\\\ \\{ \\} \\xHH; non-ASCII is sent as UTF-8.  In C and R text {TEXT*N}
is TEXT (no braces, '*' or escapes in it) N times: "C: NOOP {x*505}".
The S lines before the first C/R line are the greeting.

Every reply is checked, and every reply that acknowledges a message (a 250
line with {QID}) is collected: after each play the spool must hold exactly
the acknowledged messages (spool_messages: nothing lost, nothing extra), and
each SPOOL line is checked against its message.

The three ways to play (a separate daemon for each, so spools do not mix):
  step      each C/R line in its own write; the S lines after it are read
            before the next one is sent.
  pipeline  all client bytes up to the next boundary in one write, then all
            the replies up to it read.  Boundaries: the greeting (read first),
            STARTTLS, CLOSE, and any 334 reply (an AUTH continuation: the
            client answers only what it was asked).
  chunk     the client bytes before the first STARTTLS directive (so the
            STARTTLS command and its 220 are in) or up to the first 334 reply
            (the "prefix"), for each split point k, 0 < k < len: a fresh
            connection, the greeting read, bytes[:k] sent, a pause of
            CHUNK_PAUSE, bytes[k:] sent, the prefix's replies checked; so the
            server gives the same replies however its input is cut.  Only on
            transcripts whose header lists it (it costs a connection per byte).
A step or pipeline play that ends without CLOSE also checks that nothing
more arrives within END_QUIET seconds.

test_coverage checks that every verb is sent and that every reply text of
proto/smtp_cmd.c, proto/smtp_data.c and proto/smtp_session.c appears in some
transcript, but those listed in UNCOVERED with the reason.
"""
import json
import re
import socket
import ssl
import time
from pathlib import Path

import pytest

from conftest import REPO, free_port
from smtputil import SmtpConn, smtp_daemon, spool_content, spool_envelope, spool_messages

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"
LISTENERS = ("mx", "submission", "submissions", "plain")
MODES = ("step", "pipeline", "chunk")
DEFAULT_MODES = ("step", "pipeline")
DEFAULT_HOST = "mx.test.invalid"        # smtp_daemon's smtp.hostname
CHUNK_PAUSE = 0.002
CHUNK_BYTES_MAX = 4096                  # a prefix longer than this is a mistake for chunk mode
CHUNK_FAILURES_MAX = 5                  # stop a chunk play after this many failed splits
CHUNK_DETAIL_SPLITS = 3                 # SPOOL content/envelope checked on this many splits
END_QUIET = 0.05
REPLY_TIMEOUT = 10.0

# Replies the transcripts cannot reach here, with the reason (test_coverage).
UNCOVERED = {
    "421 4.7.0 %s Error: too many connections": "connection limits: test_smtp.test_connection_limits",
    "421 4.7.0 %s Error: too many connections from %s": "connection limits: test_smtp.test_connection_limits",
    "421 4.3.2 %s Service shutting down, closing transmission channel": "daemon shutdown (not a transcript)",
    "452 4.3.1 Insufficient system storage": "spool failure",
    "454 4.7.0 TLS not available due to temporary reason": "TLS failure",
    "454 4.7.0 Temporary authentication failure": "password check pool full",
    "553 5.7.1 <%s>: Sender address rejected: not owned by user %s":
        "needs a sender_login_map file: test_smtp.test_sender_login_map",
    "550 5.1.1 <%s>: Recipient address rejected: User unknown in relay recipient table":
        "needs a recipient_map file: test_smtp.test_recipient_map",
}


class TranscriptError(Exception):
    pass


# ---------------------------------------------------------------- parsing

_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\", "{": b"{", "}": b"}"}
_REPEAT_TEXT = re.compile(r"(?<!\\)\{([^{}*\\]+)\*(\d+)\}")
_PLACEHOLDER = re.compile(r"\{(QID|HOST|ANY)\}")


def unescape(text, where):
    """Transcript text to bytes: escapes decoded, anything else as UTF-8."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        nxt = text[i + 1:i + 2]
        if nxt in _ESCAPES:
            out += _ESCAPES[nxt]
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            raise TranscriptError("%s: bad escape %r" % (where, text[i:i + 4]))
    return bytes(out)


def client_bytes(text, where):
    out, pos = b"", 0
    for m in _REPEAT_TEXT.finditer(text):
        out += unescape(text[pos:m.start()], where) + unescape(m.group(1), where) * int(m.group(2))
        pos = m.end()
    return out + unescape(text[pos:], where)


def reply_regex(text, host, where):
    """An S line as a regex over the reply line's bytes; also whether it carries {QID}."""
    parts, pos, has_qid = [], 0, False
    for m in _PLACEHOLDER.finditer(text):
        parts.append(re.escape(unescape(text[pos:m.start()], where)))
        if m.group(1) == "QID":
            parts.append(rb"([0-9A-Z]{13})")
            has_qid = True
        elif m.group(1) == "HOST":
            parts.append(re.escape(host.encode()))
        else:
            parts.append(rb"(?:.*)")
        pos = m.end()
    parts.append(re.escape(unescape(text[pos:], where)))
    return re.compile(b"".join(parts), re.S), has_qid


class Event:
    """kind: send, expect, starttls, close, spool."""

    def __init__(self, kind, lineno, data=None, text=None, regex=None, qid=False, spec=None, qid_index=None):
        self.kind, self.lineno, self.data, self.text = kind, lineno, data, text
        self.regex, self.qid, self.spec, self.qid_index = regex, qid, spec, qid_index

    @property
    def continuation(self):
        return self.kind == "expect" and self.text.startswith("334")


class Transcript:
    def __init__(self, path):
        self.path = Path(path)
        self.name = self.path.stem
        self.listener = None
        self.smtp = {}
        self.limits = {}
        self.modes = DEFAULT_MODES
        self.events = []
        self.client_lines = []      # C/R texts, for test_coverage
        self.reply_lines = []       # S texts
        self._parse(self.path.read_text(encoding="utf-8"))

    @property
    def host(self):
        return self.smtp.get("hostname", DEFAULT_HOST)

    def _where(self, lineno):
        return "%s:%d" % (self.path.name, lineno)

    def _parse(self, text):
        body = []           # (lineno, line) after REPEAT expansion
        repeat = None       # (count, lineno, [(lineno, line)])
        in_header = True
        header_lines = []
        for lineno, line in enumerate(text.split("\n"), 1):
            if line.endswith("\r"):
                raise TranscriptError("%s: CR in the file (escape it as \\r)" % self._where(lineno))
            if line.strip() == "" or line.startswith("#"):
                continue
            m = re.match(r"^(listener|smtp|limits|modes):\s*(.*)$", line)
            if in_header and m:
                header_lines.append((lineno, m.group(1), m.group(2).strip()))
                continue
            in_header = False
            m = re.match(r"^REPEAT (\d+)$", line)
            if m:
                if repeat is not None:
                    raise TranscriptError("%s: nested REPEAT" % self._where(lineno))
                repeat = (int(m.group(1)), lineno, [])
                continue
            if line == "END":
                if repeat is None:
                    raise TranscriptError("%s: END without REPEAT" % self._where(lineno))
                count, _, lines = repeat
                for i in range(count):
                    body.extend((n, l.replace("{I}", str(i))) for n, l in lines)
                repeat = None
                continue
            (repeat[2] if repeat is not None else body).append((lineno, line))
        if repeat is not None:
            raise TranscriptError("%s: REPEAT without END" % self._where(repeat[1]))
        for lineno, key, value in header_lines:
            try:
                if key == "listener":
                    if value not in LISTENERS:
                        raise TranscriptError("unknown listener %r" % value)
                    self.listener = value
                elif key == "modes":
                    modes = tuple(value.split())
                    if not modes or any(m not in MODES for m in modes):
                        raise TranscriptError("modes: want some of %s" % " ".join(MODES))
                    self.modes = modes
                else:
                    obj = json.loads(value)
                    if not isinstance(obj, dict):
                        raise TranscriptError("%s: want a JSON object" % key)
                    setattr(self, key, obj)
            except (ValueError, TranscriptError) as e:
                raise TranscriptError("%s: %s" % (self._where(lineno), e))
        if self.listener is None:
            raise TranscriptError("%s: no 'listener:' header" % self.path.name)
        qids = 0
        for lineno, line in body:
            where = self._where(lineno)
            m = re.match(r"^([CRS]):(?: ?)(.*)$", line)
            if self.events and self.events[-1].kind == "close" and not line.startswith("SPOOL:"):
                raise TranscriptError("%s: only SPOOL lines may follow CLOSE" % where)
            if m:
                tag, rest = m.group(1), m.group(2)
                if tag == "C":
                    self.events.append(Event("send", lineno, data=client_bytes(rest, where) + b"\r\n", text=rest))
                    self.client_lines.append(rest)
                elif tag == "R":
                    self.events.append(Event("send", lineno, data=client_bytes(rest, where), text=rest))
                    self.client_lines.append(rest)
                else:
                    regex, has_qid = reply_regex(rest, self.host, where)
                    if not re.match(rb"^[2-5][0-5][0-9]([ -]|$)", unescape(rest, where)):
                        raise TranscriptError("%s: not a reply line: %r" % (where, rest))
                    qid = has_qid and rest.startswith("250")
                    self.events.append(Event("expect", lineno, text=rest, regex=regex, qid=qid))
                    self.reply_lines.append(rest)
                    qids += qid
            elif line == "STARTTLS":
                self.events.append(Event("starttls", lineno))
            elif line == "CLOSE":
                self.events.append(Event("close", lineno))
            elif line.startswith("SPOOL:"):
                if qids == 0:
                    raise TranscriptError("%s: SPOOL before any acknowledged message" % where)
                try:
                    spec = json.loads(line[6:])
                except ValueError as e:
                    raise TranscriptError("%s: SPOOL: %s" % (where, e))
                unknown = set(spec) - {"from", "to", "rcpt_count", "content", "received", "envelope"}
                if unknown:
                    raise TranscriptError("%s: SPOOL: unknown keys %s" % (where, sorted(unknown)))
                self.events.append(Event("spool", lineno, spec=spec, qid_index=qids - 1))
            else:
                raise TranscriptError("%s: cannot read %r" % (where, line))
        if not any(e.kind == "expect" for e in self.events):
            raise TranscriptError("%s: no replies" % self.path.name)

    def chunk_prefix(self):
        """(greeting expects, prefix bytes, prefix expects, closes) for chunk mode."""
        greeting, data, expects, closes = [], b"", [], False
        for e in self.events:
            if e.kind == "starttls":
                break
            if e.kind == "expect":
                (expects if data else greeting).append(e)
                if e.continuation:
                    break
            elif e.kind == "send":
                data += e.data
            elif e.kind == "close":
                closes = True
        return greeting, data, expects, closes


def load_all():
    return [Transcript(p) for p in sorted(TRANSCRIPTS.glob("*.txt"))]


def _cases():
    try:
        ts = load_all()
    except TranscriptError as e:        # reported by test_transcripts_parse
        return [pytest.param(None, None, id="unparsable-%s" % str(e)[:40])]
    return [pytest.param(t, m, id="%s-%s" % (t.name, m)) for t in ts for m in t.modes]


def count_checks():
    """(transcripts, reply checks) over all the plays of the suite: for the report."""
    ts = load_all()
    checks = 0
    for t in ts:
        n = sum(e.kind == "expect" for e in t.events)
        for m in t.modes:
            if m == "chunk":
                greeting, data, expects, _ = t.chunk_prefix()
                checks += (len(data) - 1) * (len(greeting) + len(expects))
            else:
                checks += n
    return len(ts), checks


# ---------------------------------------------------------------- playing

class Mismatch(AssertionError):
    pass


class Play:
    """One connection playing (part of) a transcript.  A player appends each
    connection's list of acknowledged queue ids to runs as it goes, so that a
    mismatch still leaves what was acknowledged before it to check."""

    def __init__(self, t, daemon, label):
        self.t, self.label = t, label
        self.conn = SmtpConn(daemon.port(t.listener), timeout=REPLY_TIMEOUT, greet=False,
                             tls=t.listener == "submissions")
        self.qids = []          # acknowledged, in order
        self.checks = 0

    def fail(self, e, what):
        raise Mismatch("%s: %s line %d: %s" % (self.t.path.name, self.label, e.lineno, what))

    def send(self, data, e):
        try:
            self.conn.send(data)
        except OSError as err:
            self.fail(e, "cannot send (%s): the server closed early?" % err)

    def expect(self, e):
        try:
            line = self.conn.line()
        except EOFError as err:
            self.fail(e, "want %r, but %s" % (e.text, err))
        except (OSError, AssertionError) as err:
            self.fail(e, "want %r, but: %s" % (e.text, err))
        m = e.regex.fullmatch(line)
        if not m:
            self.fail(e, "want %r, got %r" % (e.text, line))
        self.checks += 1
        if e.qid:
            self.qids.append(m.group(1).decode())

    def starttls(self, e):
        if self.conn.buf:
            self.fail(e, "bytes before TLS: %r" % self.conn.buf[:200])
        try:
            self.conn.starttls_wrap()
        except (OSError, ssl.SSLError) as err:
            self.fail(e, "TLS handshake failed: %s" % err)

    def expect_close(self, e):
        if self.conn.buf:
            self.fail(e, "want the close, got %r" % self.conn.buf[:200])
        self.conn.sock.settimeout(REPLY_TIMEOUT)
        try:
            extra = self.conn.sock.recv(4096)
        except (ConnectionResetError, ssl.SSLError):
            extra = b""
        except socket.timeout:
            self.fail(e, "want the close; the connection stayed open")
        if extra:
            self.fail(e, "want the close, got %r" % extra[:200])
        self.checks += 1

    def expect_quiet(self):
        """Nothing more than the transcript's replies (no close expected)."""
        if self.conn.buf:
            raise Mismatch("%s: %s: after the last line, unexpected %r"
                           % (self.t.path.name, self.label, self.conn.buf[:200]))
        self.conn.sock.settimeout(END_QUIET)
        try:
            extra = self.conn.sock.recv(4096)
        except (socket.timeout, ssl.SSLWantReadError):
            return
        except (ConnectionResetError, ssl.SSLError):
            extra = b"<reset>"
        raise Mismatch("%s: %s: after the last line, unexpected %r"
                       % (self.t.path.name, self.label, extra[:200] or b"<close>"))

    def close(self):
        self.conn.close()


def play_step(t, daemon, runs):
    p = Play(t, daemon, "step")
    runs.append(p.qids)
    try:
        for e in t.events:
            if e.kind == "send":
                p.send(e.data, e)
            elif e.kind == "expect":
                p.expect(e)
            elif e.kind == "starttls":
                p.starttls(e)
            elif e.kind == "close":
                p.expect_close(e)
        if not any(e.kind == "close" for e in t.events):
            p.expect_quiet()
    finally:
        p.close()
    return p.checks


def play_pipeline(t, daemon, runs):
    p = Play(t, daemon, "pipeline")
    runs.append(p.qids)
    data, expects, first = b"", [], None

    def flush():
        nonlocal data, expects, first
        if data:
            p.send(data, first)
        for x in expects:
            p.expect(x)
        data, expects, first = b"", [], None

    try:
        sent_any = False
        for e in t.events:
            if e.kind == "send":
                # Wait points: the greeting, and a 334 the client must see before answering.
                if expects and (not sent_any or expects[-1].continuation):
                    flush()
                first = first or e
                data += e.data
                sent_any = True
            elif e.kind == "expect":
                expects.append(e)
            elif e.kind == "starttls":
                flush()
                p.starttls(e)
            elif e.kind == "close":
                flush()
                p.expect_close(e)
        flush()
        if not any(e.kind == "close" for e in t.events):
            p.expect_quiet()
    finally:
        p.close()
    return p.checks


def play_chunk(t, daemon, runs):
    greeting, data, expects, closes = t.chunk_prefix()
    assert 2 <= len(data) <= CHUNK_BYTES_MAX, \
        "%s: chunk mode wants a prefix of 2..%d bytes, has %d" % (t.path.name, CHUNK_BYTES_MAX, len(data))
    checks, failures = 0, []
    for k in range(1, len(data)):
        p = Play(t, daemon, "chunk split %d/%d (%r | %r)" % (k, len(data), data[max(0, k - 12):k], data[k:k + 12]))
        try:
            for e in greeting:
                p.expect(e)
            p.send(data[:k], expects[0] if expects else greeting[0])
            time.sleep(CHUNK_PAUSE)
            p.send(data[k:], expects[0] if expects else greeting[0])
            for e in expects:
                p.expect(e)
            if closes:
                p.expect_close(expects[-1])
        except Mismatch as err:
            failures.append(str(err))
            if len(failures) >= CHUNK_FAILURES_MAX:
                break
        finally:
            p.close()
            runs.append(p.qids)
            checks += p.checks
    if failures:
        raise Mismatch("%d of the splits failed (the first %d):\n%s"
                       % (len(failures), len(failures), "\n".join(failures)))
    return checks


PLAYERS = {"step": play_step, "pipeline": play_pipeline, "chunk": play_chunk}


# ---------------------------------------------------------------- the spool

def split_received(held):
    """(Received: header, the rest) of a spooled message."""
    assert held.startswith(b"Received: "), held[:200]
    end = held.index(b"\r\n") + 2
    while held[end:end + 1] == b"\t":
        end = held.index(b"\r\n", end) + 2
    return held[:end], held[end:]


def check_spool(t, daemon, runs, played_out=True):
    """The spool holds exactly the acknowledged messages; SPOOL lines hold for them.
    After a mismatch (not played_out) replies went unread: only what was read is checked."""
    problems = []
    msgs = spool_messages(daemon)
    acked = [q for run in runs for q in run]
    if len(set(acked)) != len(acked):
        problems.append("a queue id acknowledged twice: %s" % sorted(q for q in acked if acked.count(q) > 1))
    missing = sorted(set(acked) - set(msgs))
    extra = sorted(set(msgs) - set(acked))
    if missing:
        problems.append("acknowledged but not in the spool: %s" % missing)
    if extra and played_out:
        problems.append("in the spool but never acknowledged: %s" % {q: msgs[q] for q in extra})
    specs = [e for e in t.events if e.kind == "spool"]
    detail_runs = set(range(len(runs)))
    if len(runs) > CHUNK_DETAIL_SPLITS:
        detail_runs = {0, len(runs) // 2, len(runs) - 1}
    for r, run in enumerate(runs):
        for e in specs:
            if e.qid_index >= len(run):
                continue        # the play failed before: already reported
            qid = run[e.qid_index]
            where = "%s line %d (%s)" % (t.path.name, e.lineno, qid)
            if qid not in msgs:
                continue
            size, _, sender, rcpts = msgs[qid]
            spec = e.spec
            if "from" in spec and sender != (spec["from"] or "<>"):
                problems.append("%s: sender %r, want %r" % (where, sender, spec["from"]))
            if "to" in spec and rcpts != spec["to"]:
                problems.append("%s: recipients %r, want %r" % (where, rcpts, spec["to"]))
            if "rcpt_count" in spec and len(rcpts) != spec["rcpt_count"]:
                problems.append("%s: %d recipients, want %d" % (where, len(rcpts), spec["rcpt_count"]))
            if r not in detail_runs:
                continue
            if "content" in spec or "received" in spec:
                received, content = split_received(spool_content(daemon, qid))
                if "content" in spec and content != spec["content"].encode("utf-8"):
                    problems.append("%s: content %r, want %r" % (where, content[:300], spec["content"][:300]))
                if "received" in spec:
                    rx, _ = reply_regex(spec["received"].replace("{QID}", qid), t.host, where)
                    if not rx.fullmatch(received):
                        problems.append("%s: Received: %r, want %r" % (where, received, spec["received"]))
            if "envelope" in spec:
                env = spool_envelope(daemon, qid)
                for key, want in spec["envelope"].items():
                    got = env.get(key)
                    if key == "rcpt":
                        ok = [g.rstrip() for g in got] == [w.rstrip() for w in want]
                    else:
                        ok = got is not None and got.rstrip() == str(want).rstrip()
                    if not ok:
                        problems.append("%s: envelope %s %r, want %r" % (where, key, got, want))
    return problems


# ---------------------------------------------------------------- tests

def test_transcripts_parse():
    ts = load_all()
    assert len(ts) >= 25, "only %d transcripts" % len(ts)
    for t in ts:
        if "chunk" in t.modes:
            _, data, _, _ = t.chunk_prefix()
            assert 2 <= len(data) <= CHUNK_BYTES_MAX, "%s: chunk prefix of %d bytes" % (t.name, len(data))


@pytest.mark.parametrize("t,mode", _cases())
def test_transcript(ringmaild, tmp_path, t, mode):
    if t is None:
        load_all()      # raises the parse error
    d = smtp_daemon(ringmaild, tmp_path, smtp=t.smtp, limits=t.limits, start=False)
    # free_port() may hand out one port twice in a row: pick again rather than fail to start.
    while len({l["port"] for l in d.settings["listeners"]}) != len(d.settings["listeners"]):
        for l in d.settings["listeners"]:
            l["port"] = free_port()
    d.write_config()
    d.start()
    runs, problems = [], []
    try:
        PLAYERS[mode](t, d, runs)
    except Mismatch as e:
        problems.append(str(e))
    # The spool is checked even after a mismatch: what was acknowledged so far must be there.
    problems += check_spool(t, d, runs, played_out=not problems)
    assert not problems, "\n".join(problems)


def _c_string(s):
    return bytes(s, "utf-8").decode("unicode_escape")


def _source_replies():
    """Every reply the parser's table, the data decoder and the session's code can give, as 'CODE ENH TEXT' (%s kept)."""
    out = set()
    cmd = (REPO / "proto" / "smtp_cmd.c").read_text()
    for m in re.finditer(r'\[RM_SMTP_E_\w+\] = \{ (\d{3}), "([^"]*)", "([^"]*)" \}', cmd):
        out.add("%s %s %s" % m.groups())
    data = (REPO / "proto" / "smtp_data.c").read_text()
    for m in re.finditer(r'struct rm_smtp_status \w+ = \{\s*(\d{3}), "([^"]*)",\s*"((?:[^"\\]|\\.)*)"\s*\}', data):
        out.add("%s %s %s" % m.groups())
    sess = (REPO / "proto" / "smtp_session.c").read_text()
    sess = re.sub(r'"\s*PRI[a-zA-Z0-9]+\s*"', "u", sess)     # "%" PRIu64 " octets": one literal
    for m in re.finditer(r'struct rm_smtp_status \w+ = \{\s*(\d{3}), "([^"]*)",\s*"((?:[^"\\]|\\.)*)"\s*\}', sess):
        out.add("%s %s %s" % m.groups())
    for m in re.finditer(r'reply(?:_error)?\(s, (\d{3}), (NULL|"[^"]*"), "((?:[^"\\]|\\.)*)"', sess):
        code, enh, text = m.groups()
        if text == "%s":
            continue        # text from an argument: HELP, 334, 354, reply_error's callers
        text = re.sub(r"%[-#0-9.*]*(?:l|ll|z|j)?[sdux]", "%s", _c_string(text))
        out.add(" ".join(x for x in (code, enh.strip('"') if enh != "NULL" else "", text) if x))
    return out


def test_coverage():
    """Every verb is sent, and every reply of the parser and the session is in a transcript."""
    ts = load_all()
    sent = [c.split(" ", 1)[0].upper() for t in ts for c in t.client_lines]
    verbs = ["EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
             "STARTTLS", "AUTH"]
    assert [v for v in verbs if v not in sent] == []
    lines = [l.replace("{HOST}", DEFAULT_HOST) for t in ts for l in t.reply_lines]
    replies = _source_replies()
    assert len(replies) > 50, "the source scan found only %d replies" % len(replies)
    missing = []
    for r in sorted(replies):
        if r in UNCOVERED:
            continue
        head, _, text = r.partition(" ")
        rx = re.compile(r"^%s[ -]%s$" % (head, ".*".join(re.escape(p) for p in r[4:].split("%s"))))
        if not any(rx.match(l) for l in lines):
            missing.append(r)
    assert missing == [], "replies in no transcript (add one, or to UNCOVERED with the reason): %s" % missing
    stale = [r for r in UNCOVERED if r not in replies]
    assert stale == [], "UNCOVERED lists replies the source no longer gives: %s" % stale
