"""Privileges: ringmaild started as root binds, then drops to `user` (every
thread), hands the control socket to the user's group and the spool directory
to the user; an unknown user is a configuration error; allow_root = true
without a user runs as root with a warning.

Run (as root): /usr/bin/python3 -m pytest -q tests/integration/test_privileges.py
Only pids started here are signalled (the conftest fixture: SIGTERM to its own
daemon, exit 0 expected, log checked for sanitizer reports and panics).
"""

import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BYE, RINGMAILCTL, RINGMAILD, EchoClient, run_tool, tool_env

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs to run as root")


def status_fields(path):
    """The Uid/Gid/Groups/Cap* lines of a /proc/.../status file, as lists of strings."""
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups", "CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs"):
            out[key] = value.split()
    return out


@pytest.fixture
def open_dir():
    """A directory every user can traverse (0755, in /tmp), removed afterwards.
    pytest's own tmp dirs are 0700 root: the daemon, once it is nobody, could
    not reach a spool directory or socket inside them."""
    d = Path(tempfile.mkdtemp(prefix="ringmail-priv-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---- 1. user = "nobody" ------------------------------------------------------------------------

@needs_root
def test_drops_to_nobody(ringmaild, open_dir):
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody here")
    uid, gid = pw.pw_uid, pw.pw_gid
    group = grp.getgrgid(gid).gr_name
    d = ringmaild(start=False, user="nobody", allow_root=False)
    spool = open_dir / "var" / "spool"           # parents made by the daemon too
    sock = open_dir / "ctl.sock"
    d.settings["spool_dir"] = str(spool)
    d.settings["control_socket"] = str(sock)
    d.write_config()
    d.start()
    d.wait_log(r"info privileges dropped to nobody \(uid %d gid %d\)" % (uid, gid), timeout=5)
    assert "running as root" not in d.log()

    # Every thread of the process, not only the main one.
    tasks = sorted(Path("/proc/%d/task" % d.pid).iterdir())
    assert len(tasks) >= 1 + d.workers, "want the main thread and %d workers, got %d tasks" % (d.workers, len(tasks))
    for t in tasks:
        f = status_fields(t / "status")
        assert f["Uid"] == [str(uid)] * 4, (t.name, f)
        assert f["Gid"] == [str(gid)] * 4, (t.name, f)
        assert f["Groups"] == [str(gid)], (t.name, f)
        assert int(f["CapEff"][0], 16) == 0 and int(f["CapPrm"][0], 16) == 0, (t.name, f)
        assert int(f["CapAmb"][0], 16) == 0, (t.name, f)

    # The echo listener works.
    with EchoClient(d.port()) as c:
        c.send(b"as nobody\r\n")
        c.expect(b"as nobody\r\n")
        c.send(b"QUIT\r\n")
        c.expect(BYE)
        c.expect_eof()

    # The control socket: 0660, root, the user's group.
    st = os.lstat(sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert (st.st_uid, st.st_gid) == (0, gid), (st.st_uid, st.st_gid, group)
    r = d.ctl("stats")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert ("pid %d" % d.pid).encode() in r.stdout.splitlines()
    # The user's group may use it too; another unprivileged user may not.
    env = tool_env()
    r = subprocess.run([str(RINGMAILCTL), "-s", str(sock), "ping"], capture_output=True, env=env,
                       timeout=30, user=uid, group=gid, extra_groups=[], stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout == b"pong\n", r.stderr.decode(errors="replace")
    r = subprocess.run([str(RINGMAILCTL), "-s", str(sock), "ping"], capture_output=True, env=env,
                       timeout=30, user=54321, group=54321, extra_groups=[], stdin=subprocess.DEVNULL)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert b"Permission denied" in r.stderr, r.stderr

    # The spool directory: made by the daemon, owned by the user, usable by it.
    st = os.stat(spool)
    assert stat.S_ISDIR(st.st_mode)
    assert (st.st_uid, st.st_gid) == (uid, gid), (st.st_uid, st.st_gid)
    assert stat.S_IMODE(st.st_mode) == 0o750, oct(st.st_mode)
    r = subprocess.run(["/bin/sh", "-c", 'echo x > "$1/probe" && rm "$1/probe"', "sh", str(spool)],
                       capture_output=True, timeout=10, user=uid, group=gid, extra_groups=[])
    assert r.returncode == 0, r.stderr

    # No thread may get root back (the daemon checked setuid(0) fails; the
    # state here says the same): it is still nobody after serving.
    for t in Path("/proc/%d/task" % d.pid).iterdir():
        f = status_fields(t / "status")
        assert f["Uid"] == [str(uid)] * 4, (t.name, f)


# ---- 2. an unknown user ------------------------------------------------------------------------

def test_unknown_user_is_a_config_error(tmp_path):
    text = ('workers = 1;\nlog_level = "info";\nallow_root = false;\n'
            'spool_dir = "%s";\n'
            'user = "no_such_user_xyz";\n'
            'listeners = (\n  { name = "echo"; protocol = "echo"; address = "127.0.0.1"; port = 2007; }\n);\n'
            % (tmp_path / "spool"))
    user_line = 5
    p = tmp_path / "bad-user.conf"
    p.write_text(text)
    assert text.splitlines()[user_line - 1].startswith("user = ")
    r = run_tool([str(RINGMAILD), "-t", "-c", str(p)])
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, (r.returncode, err)
    assert err.startswith("%s:%d: user" % (p, user_line)), err
    assert "no_such_user_xyz" in err
    assert len(err.splitlines()) == 1, err
    assert r.stdout == b""
    assert not (tmp_path / "spool").exists()
    # Started for real (not -t), the same error, and nothing is bound.
    r = run_tool([str(RINGMAILD), "-c", str(p)])
    assert r.returncode == 2, r.stderr
    assert r.stderr.decode(errors="replace").startswith("%s:%d: user" % (p, user_line))


# ---- 3. allow_root = true without user -------------------------------------------------------------

@needs_root
def test_allow_root_warns(ringmaild):
    d = ringmaild(allow_root=True, user=None)
    m = re.search(r"^.*running as root.*$", d.log(), re.M)
    assert m, d.log()
    assert " warn " in m.group(0), m.group(0)
    assert "privileges dropped" not in d.log()
    for t in Path("/proc/%d/task" % d.pid).iterdir():
        f = status_fields(t / "status")
        assert f["Uid"] == ["0"] * 4, (t.name, f)
    with EchoClient(d.port()) as c:
        c.send(b"root\n")
        c.expect(b"root\n")
