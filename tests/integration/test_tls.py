"""TLS under the engine (tls/tls.h) with real clients: Python's ssl module and
openssl s_client, TLS 1.2 and 1.3, implicit TLS and STARTTLS, on the "echo"
test protocol (tests/line_echo.h) until the mail protocols arrive.

Negative cases: plaintext on an implicit-TLS port, a garbage or cut-off
ClientHello, a client that stalls mid-handshake (dropped at the deadline, slot
freed), a client offering only RC4 / NULL / anonymous suites (refused),
commands pipelined after STARTTLS (dropped, never read as if sent over TLS),
and certificates or cipher lists that must not load.
"""
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import RINGMAILD, free_port, run_tool

GREETING = b"+OK echo ready\r\n"


def make_cert(d, name, kind="ec", days=30, cn="localhost"):
    key, cert = d / (name + ".key"), d / (name + ".crt")
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec" else \
        ["-newkey", "rsa:2048"]
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", str(days), "-subj", "/CN=%s" % cn], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    return {"ec": make_cert(d, "ec"), "rsa": make_cert(d, "rsa", kind="rsa"), "dir": d}


def tls_daemon(ringmaild, certs, kind="ec", limits=None, **extra):
    cert, key = certs[kind]
    common = {"tls_cert": str(cert), "tls_key": str(key)}
    common.update(extra)
    listeners = [
        dict(name="implicit", protocol="echo", idle_timeout_ms=0, tls="implicit", **common),
        dict(name="starttls", protocol="echo", idle_timeout_ms=0, tls="starttls", **common),
        dict(name="plain", protocol="echo", idle_timeout_ms=0),
    ]
    lim = {"tls_handshake_timeout_ms": 1000}
    lim.update(limits or {})
    return ringmaild(listeners=listeners, limits=lim)


def client_ctx(version=None, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def recv_until(s, want, timeout=10):
    s.settimeout(timeout)
    got = b""
    while not got.endswith(want) and len(got) < 1 << 20:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def recv_exact(s, n, timeout=30):
    s.settimeout(timeout)
    got = b""
    while len(got) < n:
        chunk = s.recv(min(65536, n - len(got)))
        if not chunk:
            break
        got += chunk
    return got


def echo_roundtrip(s, size):
    line = (b"0123456789abcdef" * (size // 16 + 1))[:size] + b"\r\n"
    s.sendall(line)
    assert recv_until(s, b"\r\n") == line


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_implicit_tls_python(ringmaild, certs, version, kind):
    d = tls_daemon(ringmaild, certs, kind=kind)
    with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as raw:
        with client_ctx(version).wrap_socket(raw, server_hostname="mx.example.test") as s:
            assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            name = s.cipher()[0]
            assert "GCM" in name or "CHACHA20" in name, name
            if version == ssl.TLSVersion.TLSv1_2:
                assert name.startswith("ECDHE-"), name
            assert recv_until(s, b"\r\n") == GREETING
            for size in (1, 100, 999):
                echo_roundtrip(s, size)
            # Many lines at once, more than one record and more than the output window.
            lines = b"".join(b"line %06d %s\r\n" % (i, b"z" * 300) for i in range(3000))
            s.sendall(lines)
            got = recv_exact(s, len(lines))
            assert got == lines, (len(got), len(lines))
            s.sendall(b"QUIT\r\n")
            assert recv_until(s, b"+OK bye\r\n") == b"+OK bye\r\n"
    log = d.wait_log(r"TLS TLSv1\.[23] \S+ sni=mx\.example\.test from 127\.0\.0\.1:\d+")
    assert log


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_implicit_tls_openssl_s_client(ringmaild, certs, flag):
    d = tls_daemon(ringmaild, certs)
    p = subprocess.run(["openssl", "s_client", "-quiet", flag, "-servername", "s-client.test",
                        "-connect", "127.0.0.1:%d" % d.port("implicit")],
                       input=b"hello over tls\r\nQUIT\r\n", capture_output=True, timeout=20)
    assert b"+OK echo ready\r\nhello over tls\r\n+OK bye\r\n" in p.stdout, (p.stdout, p.stderr)
    # The server ended with close_notify: no "unexpected eof".
    assert b"unexpected eof" not in p.stderr, p.stderr
    d.wait_log(r"TLS TLSv1\.%s .* sni=s-client\.test" % ("2" if flag == "-tls1_2" else "3"))


def test_starttls_drops_pipelined_plaintext(ringmaild, certs):
    """CVE-2011-0411 class: what the client sent after STARTTLS in clear must
    never be read as if it had come over TLS."""
    d = tls_daemon(ringmaild, certs)
    with socket.create_connection(("127.0.0.1", d.port("starttls")), timeout=10) as raw:
        assert recv_until(raw, b"\r\n") == GREETING
        raw.sendall(b"STARTTLS\r\nINJECTED COMMAND\r\nQUIT\r\n")
        assert recv_until(raw, b"\r\n") == b"+OK begin TLS\r\n"
        with client_ctx().wrap_socket(raw, server_hostname="st.test") as s:
            s.sendall(b"after tls\r\n")
            assert recv_until(s, b"\r\n") == b"after tls\r\n"
            s.sendall(b"STARTTLS\r\n")      # not twice
            assert recv_until(s, b"\r\n") == b"-ERR TLS not available\r\n"
            s.sendall(b"QUIT\r\n")
            assert recv_until(s, b"+OK bye\r\n") == b"+OK bye\r\n"


def test_starttls_only_where_configured(ringmaild, certs):
    d = tls_daemon(ringmaild, certs)
    with socket.create_connection(("127.0.0.1", d.port("plain")), timeout=10) as raw:
        assert recv_until(raw, b"\r\n") == GREETING
        raw.sendall(b"STARTTLS\r\n")
        assert recv_until(raw, b"\r\n") == b"-ERR TLS not available\r\n"


def test_plaintext_to_implicit_port(ringmaild, certs):
    d = tls_daemon(ringmaild, certs)
    base = d.stats()["total"]["connections_open"]
    for payload in (b"EHLO plain.example\r\n", b"\x16\x03\x01\x00\x05garbage-after-header",
                    bytes(range(256)) * 4):
        with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as s:
            s.sendall(payload)
            s.settimeout(10)
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            # Nothing in clear comes back: at most a TLS alert record.
            assert GREETING not in data and (data == b"" or data[0] == 0x15), data[:20]
    d.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: ")
    d.wait_stats(lambda t: t["connections_open"] <= base, what="slots freed")
    assert d.running()


def test_truncated_client_hello_stall_times_out(ringmaild, certs):
    """Half a ClientHello, then nothing: dropped at the handshake deadline, slot freed."""
    d = tls_daemon(ringmaild, certs, limits={"tls_handshake_timeout_ms": 500})
    # A real ClientHello from Python's own ssl, cut in half.
    inbuf, outbuf = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx().wrap_bio(inbuf, outbuf, server_hostname="x.test")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outbuf.read()
    assert len(hello) > 100
    with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as s:
        s.sendall(hello[:len(hello) // 2])
        t0 = time.monotonic()
        s.settimeout(10)
        assert s.recv(100) == b""
        assert 0.3 < time.monotonic() - t0 < 5
    d.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ timed out")
    d.wait_stats(lambda t: t["connections_open"] <= 1, what="slot freed")


def client_hello(suites):
    """A TLS 1.2 ClientHello offering exactly these cipher suites (as numbers),
    with the extensions an ECDHE suite needs: no client library will offer
    RC4 any more, so the test speaks for one."""
    def ext(t, body):
        return t.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body
    groups = b"".join(g.to_bytes(2, "big") for g in (23, 24, 29))
    sigalgs = b"".join(a.to_bytes(2, "big") for a in (0x0403, 0x0503, 0x0804, 0x0401, 0x0201))
    exts = ext(10, len(groups).to_bytes(2, "big") + groups) + ext(11, b"\x01\x00") + \
        ext(13, len(sigalgs).to_bytes(2, "big") + sigalgs)
    cs = b"".join(x.to_bytes(2, "big") for x in suites)
    body = b"\x03\x03" + bytes(range(32)) + b"\x00" + len(cs).to_bytes(2, "big") + cs + b"\x01\x00" + \
        len(exts).to_bytes(2, "big") + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


WEAK_SUITES = {
    # TLS_RSA_WITH_RC4_128_MD5/SHA, TLS_ECDHE_RSA/ECDSA_WITH_RC4_128_SHA, TLS_DH_anon_WITH_RC4_128_MD5
    "rc4": [0x0004, 0x0005, 0xC011, 0xC007, 0x0018],
    # TLS_RSA_WITH_NULL_MD5/SHA/SHA256, TLS_ECDHE_RSA/ECDSA_WITH_NULL_SHA
    "null": [0x0001, 0x0002, 0x003B, 0xC010, 0xC006],
    # DH_anon and ECDH_anon with AES (CBC and GCM)
    "anon": [0x0034, 0x003A, 0x006C, 0x00A6, 0xC018, 0xC019],
}


@pytest.mark.parametrize("kind", sorted(WEAK_SUITES))
def test_weak_suites_refused(ringmaild, certs, kind):
    """A client offering only RC4, NULL or anonymous suites gets a
    handshake_failure alert and no session; the log says why."""
    d = tls_daemon(ringmaild, certs)
    with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as s:
        s.sendall(client_hello(WEAK_SUITES[kind]))
        s.settimeout(10)
        reply = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    # One alert record (content type 21), fatal (2), handshake_failure (40); no ServerHello.
    assert reply[:1] == b"\x15" and reply[5:7] == b"\x02\x28", reply[:20]
    d.wait_log(r"TLS handshake with 127\.0\.0\.1:\d+ failed: can't match cipher suite")


def test_strong_suite_accepted_by_the_same_hello(ringmaild, certs):
    """The hand-made ClientHello is right: with one ECDHE+AEAD suite among the
    weak ones, the server answers with a ServerHello choosing that suite."""
    d = tls_daemon(ringmaild, certs)
    with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as s:
        s.sendall(client_hello(WEAK_SUITES["rc4"] + [0xC02B]))    # ECDHE-ECDSA-AES128-GCM-SHA256
        reply = recv_exact(s, 11, timeout=10)
    assert reply[:1] == b"\x16" and reply[5:6] == b"\x02", reply    # handshake: ServerHello


def test_resumption_tls12_and_tls13(ringmaild, certs):
    d = tls_daemon(ringmaild, certs)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_ctx(version)
        with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="r.test") as s:
                assert recv_until(s, b"\r\n") == GREETING     # TLS 1.3 tickets come after the handshake
                echo_roundtrip(s, 10)
                session = s.session
                assert not s.session_reused
        with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="r.test", session=session) as s:
                assert recv_until(s, b"\r\n") == GREETING
                assert s.session_reused, version
    d.wait_log(r"TLS TLSv1\.2 \S+ sni=r\.test resumed")
    d.wait_log(r"TLS TLSv1\.3 \S+ sni=r\.test resumed")


def test_tls13_only_listener_refuses_tls12(ringmaild, certs):
    d = tls_daemon(ringmaild, certs, tls_min_version="1.3")
    with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            with client_ctx(ssl.TLSVersion.TLSv1_2).wrap_socket(raw, server_hostname="x.test") as s:
                s.recv(10)
    with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as raw:
        with client_ctx(ssl.TLSVersion.TLSv1_3).wrap_socket(raw, server_hostname="x.test") as s:
            assert recv_until(s, b"\r\n") == GREETING


def write_conf(tmp_path, listener_extra):
    conf = tmp_path / "t.conf"
    conf.write_text('allow_root = true;\nspool_dir = "%s";\nlisteners = ( { name = "s"; protocol = "echo"; '
                    'address = "127.0.0.1"; port = 1465; tls = "implicit"; %s } );\n'
                    % (tmp_path / "spool", listener_extra))
    return conf


def test_bad_certificates_refuse_to_load(tmp_path, certs):
    ec_cert, ec_key = certs["ec"]
    rsa_cert, rsa_key = certs["rsa"]
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n")
    cases = [
        ('tls_cert = "%s"; tls_key = "%s";' % (tmp_path / "missing.pem", ec_key), "tls_cert .*cannot load"),
        ('tls_cert = "%s"; tls_key = "%s";' % (garbage, ec_key), "tls_cert .*cannot load"),
        ('tls_cert = "%s"; tls_key = "%s";' % (ec_cert, rsa_key), "does not match"),
        ('tls_cert = "%s"; tls_key = "%s"; tls_ciphers = "RC4-SHA";' % (ec_cert, ec_key),
         "tls_ciphers: 'RC4-SHA' is not an ECDHE\\+AEAD suite"),
        ('tls_cert = "%s"; tls_key = "%s"; tls_ciphers = "ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA";'
         % (rsa_cert, rsa_key), "'AES128-SHA' is not an ECDHE\\+AEAD suite"),
    ]
    for extra, want in cases:
        r = run_tool([str(RINGMAILD), "-t", "-c", str(write_conf(tmp_path, extra))])
        assert r.returncode == 2, (extra, r.stdout, r.stderr)
        assert re.search(want, r.stderr.decode()), (want, r.stderr)
    r = run_tool([str(RINGMAILD), "-t", "-c", str(write_conf(tmp_path, 'tls_cert = "%s"; tls_key = "%s";'
                                                              % (rsa_cert, rsa_key)))])
    assert r.returncode == 0, r.stderr


def test_ticket_keys_rotate(ringmaild, certs):
    """Ticket keys rotate on schedule (here every second): a TLS 1.3 ticket
    resumes under the current and the previous key, and not once the key that
    made it has been replaced twice."""
    d = tls_daemon(ringmaild, certs, limits={"tls_ticket_key_rotate_ms": 1000})
    ctx = client_ctx(ssl.TLSVersion.TLSv1_3)

    def connect(session=None):
        with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="rot.test", session=session) as s:
                assert recv_until(s, b"\r\n") == GREETING
                echo_roundtrip(s, 5)
                return s.session, s.session_reused

    session, reused = connect()
    assert not reused
    _, reused = connect(session)
    assert reused, "a fresh ticket must resume"
    d.wait_log(r"TLS: session ticket key rotated")
    mark = d.mark()
    d.wait_log(r"TLS: session ticket key rotated", since=mark, timeout=5)
    mark = d.mark()
    d.wait_log(r"TLS: session ticket key rotated", since=mark, timeout=5)
    _, reused = connect(session)
    assert not reused, "a ticket older than two key periods must not resume"


def test_sni_chooses_the_certificate(ringmaild, certs):
    d_ = certs["dir"]
    a = make_cert(d_, "sni-a", cn="a.sni.test")
    w = make_cert(d_, "sni-w", kind="rsa", cn="*.wild.sni.test")
    sni = [{"name": "a.sni.test", "cert": str(a[0]), "key": str(a[1])},
           {"name": "*.wild.sni.test", "cert": str(w[0]), "key": str(w[1])}]
    d = tls_daemon(ringmaild, certs, tls_sni=sni)

    def served(name):
        with socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10) as raw:
            with client_ctx().wrap_socket(raw, server_hostname=name) as s:
                assert recv_until(s, b"\r\n") == GREETING
                return s.getpeercert(binary_form=True)

    der = lambda path: ssl.PEM_cert_to_DER_cert(path.read_text())
    assert served("a.sni.test") == der(a[0])
    assert served("A.SNI.TEST") == der(a[0])
    assert served("mx.wild.sni.test") == der(w[0])
    assert served("wild.sni.test") == der(certs["ec"][0])        # a wildcard is one label, not zero
    assert served("b.mx.wild.sni.test") == der(certs["ec"][0])   # ... nor two
    assert served("other.test") == der(certs["ec"][0])
    d.wait_log(r"TLS TLSv1\.3 \S+ sni=mx\.wild\.sni\.test from")


def test_sighup_reloads_certificates_without_dropping_connections(ringmaild, certs, tmp_path):
    one, two = make_cert(tmp_path, "one", cn="one.test"), make_cert(tmp_path, "two", cn="two.test")
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    cert.write_bytes(one[0].read_bytes())
    key.write_bytes(one[1].read_bytes())
    d = ringmaild(listeners=[dict(name="implicit", protocol="echo", idle_timeout_ms=0, tls="implicit",
                                  tls_cert=str(cert), tls_key=str(key))])
    der = lambda path: ssl.PEM_cert_to_DER_cert(path.read_text())

    def connect():
        raw = socket.create_connection(("127.0.0.1", d.port("implicit")), timeout=10)
        s = client_ctx().wrap_socket(raw, server_hostname="reload.test")
        assert recv_until(s, b"\r\n") == GREETING
        return s

    old = connect()
    assert old.getpeercert(binary_form=True) == der(one[0])
    # The files are replaced (as a renewal does) and the daemon told.
    cert.write_bytes(two[0].read_bytes())
    key.write_bytes(two[1].read_bytes())
    mark = d.mark()
    d.signal(signal.SIGHUP)
    d.wait_log(r"reload: TLS certificates of listener 'implicit' loaded", since=mark)
    new = connect()
    assert new.getpeercert(binary_form=True) == der(two[0])
    echo_roundtrip(old, 50)             # the connection from before the reload goes on
    echo_roundtrip(new, 50)
    # A broken file: the reload says why and the certificate in use keeps serving.
    cert.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    mark = d.mark()
    d.signal(signal.SIGHUP)
    d.wait_log(r"reload: listener 'implicit': tls_cert \S+: cannot load a PEM certificate chain; "
               r"listener 'implicit' keeps the certificates in use", since=mark)
    third = connect()
    assert third.getpeercert(binary_form=True) == der(two[0])
    for s in (old, new, third):
        echo_roundtrip(s, 10)
        s.close()


# ---- the client side: the relay's backend connection over TLS ------------------------------

CA_CNF = """[ ca ]
default_ca = test
[ test ]
dir = .
database = ./index.txt
serial = ./serial
new_certs_dir = .
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
[ leaf ]
subjectAltName = DNS:%s
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA, and leaves it signed: good (backend.test), another name, expired."""
    d = tmp_path_factory.mktemp("pki")
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True, cwd=str(d))
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "30", "-subj", "/CN=ringmail test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    (d / "index.txt").write_text("")
    (d / "serial").write_text("01\n")
    out = {"ca": d / "ca.crt"}
    for name, cn, dates in (("good", "backend.test", None), ("other", "other.test", None),
                            ("expired", "backend.test", ("20200101000000Z", "20200201000000Z"))):
        (d / ("%s.cnf" % name)).write_text(CA_CNF % cn)
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
        when = ["-startdate", dates[0], "-enddate", dates[1]] if dates else ["-days", "30"]
        run("openssl", "ca", "-batch", "-config", name + ".cnf", "-cert", "ca.crt", "-keyfile", "ca.key",
            "-in", name + ".csr", "-out", name + ".crt", "-extensions", "leaf", *when)
        out[name] = (d / (name + ".crt"), d / (name + ".key"))
    return out


class TlsEchoBackend:
    """A TLS line echo server (Python's ssl) on a loopback port, one thread per connection."""

    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.snis = []
        self.ctx.sni_callback = lambda s, name, c: self.snis.append(name)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        for _ in range(50):
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(raw,), daemon=True).start()

    def one(self, raw):
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as s:
                s.settimeout(10)
                while True:
                    data = s.recv(65536)
                    if not data:
                        return
                    s.sendall(data)
        except (OSError, ssl.SSLError):
            pass

    def close(self):
        self.sock.close()


def relay_tls_daemon(ringmaild, backend_port, policy, ca=None, name="backend.test"):
    l = {"name": "relay", "protocol": "relay", "idle_timeout_ms": 0,
         "backend": "127.0.0.1:%d" % backend_port, "backend_tls": policy}
    if ca is not None:
        l["backend_tls_ca"] = str(ca)
    if name is not None:
        l["backend_tls_name"] = name
    return ringmaild(listeners=[l], limits={"tls_handshake_timeout_ms": 2000})


def relayed(d, data=b"through tls\r\n"):
    with socket.create_connection(("127.0.0.1", d.port("relay")), timeout=10) as s:
        s.sendall(data)
        s.settimeout(10)
        got = b""
        try:
            while len(got) < len(data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return got


@pytest.mark.parametrize("policy", ["may", "encrypt", "verify"])
def test_client_tls_to_a_good_backend(ringmaild, pki, policy):
    b = TlsEchoBackend(*pki["good"])
    try:
        d = relay_tls_daemon(ringmaild, b.port, policy, ca=pki["ca"] if policy == "verify" else None)
        assert relayed(d) == b"through tls\r\n"
        big = b"".join(b"%06d %s\r\n" % (i, b"q" * 200) for i in range(2000))
        assert relayed(d, big) == big
        assert "backend.test" in b.snis                      # SNI was sent
        if policy == "verify":
            d.wait_log(r"TLS client TLSv1\.3 \S+ to 127\.0\.0\.1:\d+ sni=backend\.test: verified "
                       r"\(chain to the CA, name backend\.test\)")
        else:
            d.wait_log(r"TLS client TLSv1\.3 \S+ to 127\.0\.0\.1:\d+ sni=backend\.test: not verified")
    finally:
        b.close()


@pytest.mark.parametrize("leaf,why", [("other", "domain name mismatch|name"),
                                      ("expired", "date|expired|ASN")])
def test_client_verify_refuses_a_wrong_or_expired_certificate(ringmaild, pki, leaf, why):
    b = TlsEchoBackend(*pki[leaf])
    try:
        d = relay_tls_daemon(ringmaild, b.port, "verify", ca=pki["ca"])
        assert relayed(d) == b""
        m = d.wait_log(r"TLS client handshake with 127\.0\.0\.1:\d+ failed: ([^\n]*); verifying the name "
                       r"backend\.test")
        assert re.search(why, m.group(1), re.I), m.group(0)
        # The same certificate is accepted where the policy does not verify.
        d2 = relay_tls_daemon(ringmaild, b.port, "encrypt")
        assert relayed(d2) == b"through tls\r\n"
    finally:
        b.close()


def test_client_verify_refuses_an_unknown_ca(ringmaild, pki, certs):
    """A self-signed certificate (not from the configured CA) is refused under verify."""
    b = TlsEchoBackend(*certs["ec"])
    try:
        d = relay_tls_daemon(ringmaild, b.port, "verify", ca=pki["ca"], name="localhost")
        assert relayed(d) == b""
        d.wait_log(r"TLS client handshake with 127\.0\.0\.1:\d+ failed: .*; verifying the name localhost")
    finally:
        b.close()


def test_client_tls_against_openssl_s_server(ringmaild, pki):
    """openssl s_server -rev (lines come back reversed) as the backend, verified."""
    port = free_port()
    cert, key = pki["good"]
    p = subprocess.Popen(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-cert", str(cert),
                          "-key", str(key), "-rev", "-naccept", "3"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        d = relay_tls_daemon(ringmaild, port, "verify", ca=pki["ca"])
        with socket.create_connection(("127.0.0.1", d.port("relay")), timeout=10) as s:
            s.sendall(b"abcdef\n")
            assert recv_until(s, b"\n") == b"fedcba\n"
        d.wait_log(r"TLS client \S+ \S+ to 127\.0\.0\.1:%d sni=backend\.test: verified" % port)
    finally:
        p.kill()        # our own child, by its Popen handle
        p.wait(10)


def test_backend_tls_config_errors(tmp_path):
    base = 'allow_root = true;\nspool_dir = "%s";\nlisteners = ( { name = "r"; protocol = "relay"; ' \
           'address = "127.0.0.1"; port = 1999; backend = "127.0.0.1:1998"; %s } );\n'
    for extra, want in (('backend_tls = "verify";', 'backend_tls = "verify" needs backend_tls_name'),
                        ('backend_tls = "sometimes";', 'must be one of none, may, encrypt, verify'),
                        ('backend_tls = "verify"; backend_tls_name = "b"; backend_tls_ca = "/nonexistent.pem";',
                         "backend_tls_ca: CA file /nonexistent.pem: cannot load")):
        conf = tmp_path / "r.conf"
        conf.write_text(base % (tmp_path / "spool", extra))
        r = run_tool([str(RINGMAILD), "-t", "-c", str(conf)])
        assert r.returncode == 2, (extra, r.stdout, r.stderr)
        assert want in r.stderr.decode(), (want, r.stderr)


@pytest.mark.parametrize("flag", ["--tlsv1.2 --tls-max 1.2", "--tlsv1.3"])
def test_curl_handshake(ringmaild, certs, flag):
    """curl (OpenSSL) over implicit TLS: the echo protocol is no HTTP, but the
    handshake is curl's, and the request it sends comes back through TLS."""
    d = tls_daemon(ringmaild, certs)
    p = subprocess.run(["curl", "-v", "-k", "--http0.9", "--max-time", "3", *flag.split(),
                        "https://127.0.0.1:%d/ringmail" % d.port("implicit")],
                       capture_output=True, timeout=20)
    err = p.stderr.decode(errors="replace")
    want = "TLSv1.2" if "1.2" in flag else "TLSv1.3"
    assert re.search(r"SSL connection using %s / \S+" % want, err), err[-2000:]
    assert b"+OK echo ready\r\nGET /ringmail HTTP/1.1\r\n" in p.stdout, p.stdout[:300]
