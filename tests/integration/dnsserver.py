"""A private DNS server for the delivery tests: dnsmasq in the foreground on
a free loopback port, answering only from what the test gives it.

    dns = Dnsmasq(tmp_path, mx=[("a.test", "mx1.a.test", 10)],
                  hosts=[("mx1.a.test", "127.0.0.2")],
                  null_mx=["nullmx.test"], servfail=["slow.test"])
    dns.start()            # returns once it answers a query
    ... delivery.dns_servers = dns.servers ...
    dns.stop()             # SIGTERM to its own pid, then SIGKILL

Every name under test. that it was not told about is NXDOMAIN (--local=/test/);
a name under a servfail domain is forwarded to a port nobody listens on, so
the query fails (SERVFAIL or a timeout: both are temporary failures).
Only the Python standard library and /usr/sbin/dnsmasq (dnsmasq-base).
"""
import os
import random
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

DNSMASQ = "/usr/sbin/dnsmasq"


def free_udp_port():
    """A loopback port free for both UDP and TCP now (dnsmasq binds both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def query_packet(name, qtype, qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack(">HH", qtype, 1)


def query(port, name, qtype=1, timeout=1.0):
    """One UDP query; (rcode, ancount) of the answer, or None on timeout."""
    qid = random.randrange(65536)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query_packet(name, qtype, qid), ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(4096)
        except socket.timeout:
            return None
    rid, flags, _, an = struct.unpack(">HHHH", data[:8])
    if rid != qid:
        return None
    return flags & 0xF, an


class Dnsmasq:
    def __init__(self, tmpdir, mx=(), hosts=(), null_mx=(), servfail=(), local=("test",)):
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_udp_port()
        self.dead_port = free_udp_port()     # nothing listens: forwarded queries fail
        self.log_path = self.dir / "dnsmasq.log"
        argv = [DNSMASQ, "--keep-in-foreground", "--no-daemon", "--no-resolv", "--no-hosts", "--no-poll",
                "--pid-file", "--user=root", "--group=root", "--port=%d" % self.port,
                "--listen-address=127.0.0.1", "--bind-interfaces", "--cache-size=0",
                "--log-facility=-", "--log-queries"]
        for d in local:
            argv.append("--local=/%s/" % d)
        for domain, target, pref in mx:
            argv.append("--mx-host=%s,%s,%d" % (domain, target, pref))
        for name, addr in hosts:
            argv.append("--host-record=%s,%s" % (name, addr))
        for name in null_mx:
            # RFC 7505: one MX of preference 0 and the root as exchanger.
            argv.append("--dns-rr=%s,15,000000" % name)
        for d in servfail:
            argv.append("--server=/%s/127.0.0.1#%d" % (d, self.dead_port))
        self.argv = argv
        self.proc = None
        self.probe = hosts[0][0] if hosts else None
        self._log = None

    @property
    def servers(self):
        return "127.0.0.1:%d" % self.port

    def start(self, timeout=10.0):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("dnsmasq exited %s: %s" % (self.proc.returncode, self.log()))
            r = query(self.port, self.probe or "probe.test", 1, timeout=0.2)
            if r is not None:
                return self
            if time.monotonic() >= deadline:
                raise RuntimeError("dnsmasq not answering within %.0f s: %s" % (timeout, self.log()))
            time.sleep(0.05)

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
