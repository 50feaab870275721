"""max_use and master going away, seen from master's side of the status
channel: a process that will take no more clients must not report itself
available (master would leave new clients in the listen queue until it
exits), and a trigger handler can see master go between units of work
(pickup between maildrop files: an orphan must not race the new master's
pickup)."""

import os
import socket
import textwrap
import time

import pytest

from pfy.server import master_proto as mp
from pfy.server.testing import fifo_listener, start_daemon, unix_listener

DAEMONS = {
    "echo-single": """
        from pfy.server import single
        def handler(ctx, sock):
            line = sock.makefile("rb").readline()
            sock.sendall(line)
        single.serve(handler)
    """,
    "echo-multi": """
        from pfy.server import multi
        async def handler(ctx, reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
        multi.serve(handler)
    """,
    # Works "file by file" until master goes away, noting each step in the
    # file named by content_filter (any str parameter).
    "drain-trigger": """
        import time
        from pfy.server import trigger
        def handler(ctx, data):
            with open(ctx.cfg.content_filter, "ab", buffering=0) as f:
                f.write(b"start|")
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    if ctx.master_gone():
                        f.write(b"gone|")
                        return
                    time.sleep(0.01)
                f.write(b"timeout|")
        trigger.serve(handler, solitary=True)
    """,
}


@pytest.fixture
def env(tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "main.cf").write_text(textwrap.dedent(f"""\
        queue_directory = {tmp_path}/q
        data_directory = {tmp_path}/d
        maillog_file = {tmp_path}/maillog
        max_idle = 30s
    """))
    for name, body in DAEMONS.items():
        p = tmp_path / name
        p.write_text("#!/usr/bin/env python3\n" + textwrap.dedent(body))
        p.chmod(0o755)
    return tmp_path


def talk(path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def reports(d, timeout=2.0) -> list[int]:
    """Every status record until `timeout` passes without one."""
    out = []
    while (rep := d.read_status(timeout)) is not None:
        out.append(rep[2])
    return out


@pytest.mark.parametrize("daemon", ["echo-single", "echo-multi"])
def test_last_use_is_not_reported_available(env, daemon):
    lsock, path = unix_listener(env / "q" / "private" / "echo")
    with start_daemon(str(env / daemon), config_dir=env, listen=[lsock],
                      args=["-t", "unix", "-o", "max_use=2"]) as d:
        assert talk(path, b"a\n") == b"a\n"
        assert talk(path, b"b\n") == b"b\n"
        assert d.wait(10) == 0
        got = reports(d, 0.5)
    want = [mp.STAT_TAKEN, mp.STAT_AVAIL, mp.STAT_TAKEN]
    assert got == want, f"got {got} want {want}"


def test_trigger_handler_sees_master_go_between_units_of_work(env):
    fd, path = fifo_listener(env / "q" / "public" / "drain")
    out = env / "notes"
    with start_daemon(str(env / "drain-trigger"), config_dir=env, listen=[fd],
                      args=["-l", "-t", "fifo", "-o", f"content_filter={out}"]) as d:
        w = os.open(path, os.O_WRONLY)
        os.write(w, b"W")
        os.close(w)
        deadline = time.monotonic() + 10
        while not (out.exists() and out.read_bytes().startswith(b"start|")):
            assert time.monotonic() < deadline, "handler did not start"
            time.sleep(0.02)
        assert out.read_bytes() == b"start|"      # master still there
        d.master_exit()
        assert d.wait(10) == 0
        assert out.read_bytes() == b"start|gone|"
    os.close(fd)
