"""SMTP sinks for the delivery tests: what ringmaild's outbound client talks to.

    s = Sink("127.0.0.3", port).start()
    ... s.wait_messages(1) -> [Msg(conn, sender, rcpts, content, tls, auth)] ...
    s.stop()

A Sink is aiosmtpd (python3-aiosmtpd) in its own thread, with knobs a test
turns while it runs:
  greeting      "421 4.3.2 busy": answer every connection with it and close;
  rcpt_reply    {address: "550 5.1.1 no"}: refuse those recipients;
  data_reply    "451 4.3.0 later" (or None): the reply to every end of data
                while set (the message is counted, not kept);
  hold_s        end of data waits this long before its reply (sessions held
                open, to count concurrent ones);
  drop_data     close that many connections at the end of data, unanswered;
  tls_cert/key  STARTTLS offered with that certificate;
  rset_reply    [replies]: the next RSETs get these, one each (then 250);
  tls_ciphers   OpenSSL cipher list, TLS 1.2 at most: "ECDHE-ECDSA-AES128-SHA"
                (CBC, which ringmail never offers) makes every handshake fail
                after STARTTLS was accepted;
  auth          {user: password}: AUTH PLAIN/LOGIN over TLS, then required.
What it counts: connections (ones that said EHLO or HELO; the Controller's own
start-up probe does not), the most sessions at once, transactions per
connection, and every accepted message with its envelope and exact content.
"""
import asyncio
import ssl
import threading
import time
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass
class Msg:
    conn: int                   # the sink's number of the connection it came on
    sender: str
    rcpts: list
    content: bytes              # as received, dot-unstuffed, CR LF line ends
    tls: bool
    auth: str                   # the AUTH user, or ""
    mail_options: list = field(default_factory=list)
    rcpt_options: list = field(default_factory=list)


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.sink._hello(server)
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        self.sink._hello(server)
        session.host_name = hostname
        return "250 %s" % server.hostname

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.sink.lock:
            self.sink.transactions[server._sink_conn] = self.sink.transactions.get(server._sink_conn, 0) + 1
            self.sink.mails.append((server._sink_conn, address, list(mail_options)))
        envelope.mail_from = address        # "<>" for the null sender (aiosmtpd needs it true)
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.sink.rcpt_reply.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(list(rcpt_options))
        return "250 2.1.5 OK"

    async def handle_RSET(self, server, session, envelope):
        with self.sink.lock:
            self.sink.rsets += 1
            reply = self.sink.rset_reply.pop(0) if self.sink.rset_reply else None
            self.sink.cond.notify_all()
        return reply or "250 2.0.0 OK"

    async def handle_DATA(self, server, session, envelope):
        sink = self.sink
        with sink.lock:
            sink.in_data += 1
            sink.cond.notify_all()
            drop = sink.drop_data > 0
            if drop:
                sink.drop_data -= 1
        if drop:
            # The connection goes at the end of data, before any reply.
            server.transport.close()
            return "451 4.3.0 never seen"
        if sink.hold_s:
            await asyncio.sleep(sink.hold_s)
        with sink.lock:
            sink.data_count += 1
            reply = sink.data_reply
            if reply is None:
                sink.messages.append(Msg(server._sink_conn, "" if envelope.mail_from == "<>" else envelope.mail_from, list(envelope.rcpt_tos),
                                         bytes(envelope.original_content or envelope.content),
                                         session.ssl is not None,
                                         str(session.auth_data or "") if session.authenticated else "",
                                         list(envelope.mail_options), list(envelope.rcpt_options)))
            sink.cond.notify_all()
        return reply or "250 2.0.0 OK: queued"


class _SinkSMTP(SMTP):
    """aiosmtpd's SMTP with a connection number, a greeting refusal and counts."""

    def __init__(self, handler, sink, **kw):
        super().__init__(handler, **kw)
        self._sink = sink
        self._sink_conn = 0
        self._sink_counted = False

    async def _handle_client(self):
        greeting = self._sink.greeting
        if greeting is not None:
            with self._sink.lock:
                self._sink.refused_greetings += 1
                self._sink.cond.notify_all()
            await self.push(greeting)
            self.transport.close()
            return
        await super()._handle_client()

    def connection_lost(self, error):
        if self._sink_counted:
            self._sink_counted = False
            with self._sink.lock:
                self._sink.open_sessions -= 1
                self._sink.cond.notify_all()
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, sink, handler, **kw):
        self._sink = sink
        super().__init__(handler, **kw)

    def factory(self):
        return _SinkSMTP(self.handler, self._sink, **self.SMTP_kwargs)


class Sink:
    def __init__(self, host, port, name="sink", tls_cert=None, tls_key=None, auth=None, greeting=None,
                 rcpt_reply=None, data_reply=None, hold_s=0, tls_ciphers=None):
        self.host, self.port, self.name = host, port, name
        self.greeting = greeting
        self.rcpt_reply = {k.lower(): v for k, v in (rcpt_reply or {}).items()}
        self.data_reply = data_reply
        self.hold_s = hold_s
        self.auth = auth
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.messages = []
        self.mails = []                 # (conn, sender, options) of every MAIL FROM
        self.transactions = {}          # conn -> MAIL commands on it
        self.connections = 0
        self.open_sessions = 0
        self.max_open = 0
        self.data_count = 0
        self.refused_greetings = 0
        self.in_data = 0                # ends of data reached (before the reply)
        self.drop_data = 0              # close that many connections at the end of data
        self.rset_reply = []            # replies for the next RSETs
        self.rsets = 0
        kw = dict(hostname=host, port=port, server_hostname=name, ident="sink", decode_data=False,
                  enable_SMTPUTF8=True, timeout=60)
        if tls_cert is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(tls_cert), str(tls_key))
            if tls_ciphers is not None:
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.set_ciphers(tls_ciphers)
            kw["tls_context"] = ctx
        if auth is not None:
            kw.update(authenticator=self._authenticate, auth_require_tls=True, auth_required=True)
        self.controller = _Controller(self, _Handler(self), **kw)

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            with self.lock:
                self.auth_attempts = getattr(self, "auth_attempts", []) + [(mechanism, user)]
            if self.auth.get(user) == password:
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    def _hello(self, server):
        with self.lock:
            if server._sink_conn == 0:
                self.connections += 1
                server._sink_conn = self.connections
            if not server._sink_counted:
                server._sink_counted = True
                self.open_sessions += 1
                self.max_open = max(self.max_open, self.open_sessions)
            self.cond.notify_all()

    def start(self):
        greeting, self.greeting = self.greeting, None     # the start-up probe gets a normal greeting
        self.controller.start()
        self.greeting = greeting
        return self

    def stop(self):
        try:
            self.controller.stop()
        except AssertionError:
            pass

    def wait(self, pred, timeout=30.0, what="condition"):
        """Wait until pred(self) holds (under the lock); bounded."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("sink %s (%s:%d): %s not met within %.0f s; messages %r"
                                         % (self.name, self.host, self.port, what, timeout,
                                            [(m.sender, m.rcpts) for m in self.messages]))
                self.cond.wait(min(left, 0.2))

    def wait_messages(self, n, timeout=30.0):
        self.wait(lambda s: len(s.messages) >= n, timeout, "%d messages" % n)
        with self.lock:
            return list(self.messages)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()


class Proxy:
    """A TCP relay that records both directions in order: listen on host:port,
    forward each connection to target.  log is [(direction, bytes)] with
    direction "c>s" or "s>c", an entry appended before the bytes go on, so the
    order shows what the client could have seen when it sent something."""

    def __init__(self, host, port, target):
        import socket as _socket
        self.target = target
        self.log = []
        self.lock = threading.Lock()
        self.sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.threads = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)

    def start(self):
        self.accepter.start()
        return self

    def _accept(self):
        import socket as _socket
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except (_socket.timeout, OSError):
                continue
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c):
        import select
        import socket as _socket
        try:
            s = _socket.create_connection(self.target, timeout=10)
        except OSError:
            c.close()
            return
        ends = {c: (s, "c>s"), s: (c, "s>c")}
        deadline = time.monotonic() + 120
        try:
            while ends and not self.stopping and time.monotonic() < deadline:
                r, _, _ = select.select(list(ends), [], [], 0.2)
                for a in r:
                    b, direction = ends[a]
                    data = a.recv(65536)
                    if not data:
                        return
                    with self.lock:
                        self.log.append((direction, data))
                    b.sendall(data)
        except OSError:
            pass
        finally:
            c.close()
            s.close()

    def client_bytes(self):
        with self.lock:
            return b"".join(d for k, d in self.log if k == "c>s")

    def stop(self):
        self.stopping = True
        self.accepter.join(timeout=5)
        for t in self.threads:
            t.join(timeout=5)
        self.sock.close()
