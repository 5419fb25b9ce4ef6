"""The start-up probe: where io_uring cannot be used, ringmaild says why in one
line and exits 1 (not a crash).

tests/tools/deny_io_uring runs the daemon under a seccomp filter that fails
io_uring_setup/enter/register with EPERM or ENOSYS, as container runtimes'
default profiles do.
"""

import subprocess

import pytest

from conftest import REPO, RINGMAILD, SAN_ENV, free_port

DENY = REPO / "build" / "tools" / "deny_io_uring"


@pytest.mark.parametrize("errno_name", ["EPERM", "ENOSYS"])
def test_probe_explains_blocked_io_uring(tmp_path, errno_name):
    conf = tmp_path / "probe.conf"
    conf.write_text(
        "workers = 1;\nallow_root = true;\n"
        f'spool_dir = "{tmp_path}/spool";\n'
        f'control_socket = "{tmp_path}/ctl.sock";\n'
        "listeners = ( { name = \"echo\"; protocol = \"echo\"; address = \"127.0.0.1\"; "
        f"port = {free_port()}; }} );\n")
    proc = subprocess.run([str(DENY), errno_name, str(RINGMAILD), "-c", str(conf)],
                          capture_output=True, text=True, timeout=30, env=SAN_ENV)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if " error " in line]
    assert len(errors) == 1, proc.stderr
    line = errors[0]
    assert "cannot use io_uring" in line
    assert "seccomp" in line and "io_uring_setup" in line
    assert ("Operation not permitted" if errno_name == "EPERM" else "Function not implemented") in line
    for bad in ("AddressSanitizer", "runtime error:", "panic: "):
        assert bad not in proc.stderr
    # Nothing was left listening or bound.
    assert not (tmp_path / "ctl.sock").exists()
