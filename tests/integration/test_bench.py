"""ringmail-bench, the engine's own load client, against the real daemon.

This exercises the engine's outbound side (rm_conn_connect with a deadline and
a chosen source address) from a second process, with every echoed byte
checked by the bench itself, and its refusal to aim at anything but loopback.
"""

import json
import subprocess

from conftest import RINGMAILD, tool_env

BENCH = RINGMAILD.parent / "ringmail-bench"


def run_bench(*args, timeout=120):
    return subprocess.run([str(BENCH), *args], capture_output=True, text=True,
                          env=tool_env(leak_check=True), timeout=timeout)


def test_echo_load_from_chosen_source_address(echo_daemon):
    port = str(echo_daemon.port())
    proc = run_bench("echo", "--port", port, "--source", "127.0.0.9", "--conns", "300",
                     "--lines", "200", "--line-bytes", "120", "--pipeline", "8", "--json",
                     "--time-limit", "90")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] == 300 and report["failed"] == 0, report
    assert report["mismatches"] == 0, report
    assert report["lines"] == 300 * 200, report
    assert report["bytes_verified"] == report["bytes_sent"] > 0, report
    # The daemon saw every connection come from the address the bench bound.
    log = echo_daemon.log()
    assert log.count("connect from 127.0.0.9:") >= 300
    stats = echo_daemon.stats()
    assert stats["total"]["connections_accepted"] >= 300


def test_idle_connections_held_then_closed(echo_daemon):
    proc = run_bench("idle", "--port", str(echo_daemon.port()), "--conns", "500",
                     "--hold", "1", "--ramp", "5000", "--time-limit", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ALL-ESTABLISHED 500" in proc.stdout


def test_refuses_non_loopback_targets():
    for args in (["--host", "10.1.2.3"], ["--host", "8.8.8.8"], ["--source", "192.168.1.1"],
                 ["--host", "::2"]):
        proc = run_bench("echo", "--port", "9", *args, timeout=10)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "only loopback" in proc.stderr


def test_connection_refused_is_reported():
    # Port 1 on loopback: nobody listens, the kernel answers RST at once.
    proc = run_bench("echo", "--port", "1", "--conns", "5", "--lines", "1", "--time-limit", "20")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "failed 5" in proc.stdout or "refused" in (proc.stdout + proc.stderr).lower()
