"""The three skeletons, each running a tiny daemon under a fake master
(pfy.server.testing: status channel and listening fds faked by socketpairs)."""

import os
import socket
import textwrap
import threading
import time

import pytest

from pfy.server import master_proto as mp
from pfy.server.testing import fifo_listener, inet_listener, start_daemon, unix_listener

DAEMONS = {
    # single: echo one line back, then close. "crash" panics, "fatal" is fatal.
    "echo-single": """
        from pfy.server import single
        from pfy.server.lifecycle import Fatal
        def handler(ctx, sock):
            line = sock.makefile("rb").readline()
            if line == b"crash\\n":
                raise RuntimeError("boom")
            if line == b"fatal\\n":
                raise Fatal("file x: parameter y: bad")
            sock.sendall(b"%s %d %s" % (ctx.service.encode(), ctx.use_count, line))
        single.serve(handler)
    """,
    # multi: each client gets its line back after everyone connected
    "echo-multi": """
        import asyncio
        from pfy.server import multi
        async def handler(ctx, reader, writer):
            line = await reader.readline()
            await asyncio.sleep(0.2)
            writer.write(b"multi " + line)
            await writer.drain()
        multi.serve(handler)
    """,
    # trigger: log what woke us to a file named by -o content_filter (any str param)
    "note-trigger": """
        import os
        from pfy.server import trigger
        def handler(ctx, data):
            with open(ctx.cfg.content_filter, "ab") as f:
                f.write(data + b"|")
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


def talk(addr, data: bytes, family=socket.AF_UNIX) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(addr)
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def log(env) -> str:
    try:
        return (env / "maillog").read_text()
    except FileNotFoundError:
        return ""


def test_single_serves_clients_in_turn_and_reports_busy_idle(env):
    lsock, path = unix_listener(env / "q" / "private" / "echo")
    with start_daemon(str(env / "echo-single"), config_dir=env, listen=[lsock],
                      args=["-n", "echo", "-t", "unix"]) as d:
        assert talk(path, b"one\n") == b"echo 0 one\n"
        assert talk(path, b"two\n") == b"echo 1 two\n"
        reports = [d.read_status(5)[2] for _ in range(4)]
        assert reports == [mp.STAT_TAKEN, mp.STAT_AVAIL] * 2, f"got {reports}"
        d.master_exit()
        assert d.wait(10) == 0


def test_single_on_inet_socket(env):
    lsock, port = inet_listener()
    with start_daemon(str(env / "echo-single"), config_dir=env, listen=[lsock],
                      args=["-n", "smtp", "-t", "inet"]) as d:
        assert talk(("127.0.0.1", port), b"hi\n", socket.AF_INET) == b"smtp 0 hi\n"
        d.master_exit()
        assert d.wait(10) == 0


def test_max_use_ends_the_process(env):
    lsock, path = unix_listener(env / "q" / "private" / "echo")
    with start_daemon(str(env / "echo-single"), config_dir=env, listen=[lsock],
                      args=["-t", "unix", "-o", "max_use=2"]) as d:
        talk(path, b"a\n")
        talk(path, b"b\n")
        assert d.wait(10) == 0


def test_max_idle_ends_the_process(env):
    lsock, _ = unix_listener(env / "q" / "private" / "echo")
    with start_daemon(str(env / "echo-single"), config_dir=env, listen=[lsock],
                      args=["-t", "unix", "-o", "max_idle=1s"]) as d:
        t0 = time.monotonic()
        assert d.wait(10) == 0
        assert 0.8 < time.monotonic() - t0 < 8


def test_panic_logs_traceback_and_exits_non_zero(env):
    lsock, path = unix_listener(env / "q" / "private" / "echo")
    with start_daemon(str(env / "echo-single"), config_dir=env, listen=[lsock],
                      args=["-t", "unix"]) as d:
        talk(path, b"crash\n")
        assert d.wait(10) == 2
    text = log(env)
    assert "panic: RuntimeError: boom" in text
    assert "panic: Traceback (most recent call last):" in text


def test_fatal_exits_1_with_one_line(env):
    lsock, path = unix_listener(env / "q" / "private" / "echo")
    with start_daemon(str(env / "echo-single"), config_dir=env, listen=[lsock],
                      args=["-t", "unix"]) as d:
        talk(path, b"fatal\n")
        assert d.wait(10) == 1
    assert "fatal: file x: parameter y: bad" in log(env)
    assert "Traceback" not in log(env)


def test_bad_main_cf_is_fatal_naming_file_and_line(env):
    (env / "main.cf").write_text((env / "main.cf").read_text() + "this line has no equals\n")
    err = env / "stderr"
    with open(err, "wb") as f:
        lsock, _ = unix_listener(env / "q" / "private" / "echo")
        with start_daemon(str(env / "echo-single"), config_dir=env, listen=[lsock],
                          args=["-t", "unix"], stderr=f) as d:
            assert d.wait(10) == 1
    text = err.read_text()
    assert "fatal:" in text and "main.cf" in text and "line 5" in text, text
    assert "Traceback" not in text


def test_bad_option_is_fatal(env):
    err = env / "stderr"
    with open(err, "wb") as f:
        lsock, _ = unix_listener(env / "q" / "private" / "echo")
        with start_daemon(str(env / "echo-single"), config_dir=env, listen=[lsock],
                          args=["-t", "unix", "-Q"], stderr=f) as d:
            assert d.wait(10) == 1
    assert "fatal: invalid option -- 'Q'" in err.read_text()


def test_multi_serves_clients_concurrently(env):
    lsock, path = unix_listener(env / "q" / "private" / "m")
    with start_daemon(str(env / "echo-multi"), config_dir=env, listen=[lsock],
                      args=["-n", "m", "-t", "unix"]) as d:
        results = []

        def client(i):
            results.append(talk(path, b"%d\n" % i))
        threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        assert sorted(results) == sorted(b"multi %d\n" % i for i in range(20))
        # 20 clients x 0.2 s each would be 4 s one at a time
        assert elapsed < 2.5, f"got {elapsed:.2f}s want < 2.5s: not concurrent"
        d.master_exit()
        assert d.wait(10) == 0


def test_multi_finishes_current_client_after_master_goes_away(env):
    lsock, path = unix_listener(env / "q" / "private" / "m")
    with start_daemon(str(env / "echo-multi"), config_dir=env, listen=[lsock],
                      args=["-t", "unix"]) as d:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(path)
            assert d.wait_status(mp.STAT_AVAIL)
            d.master_exit()
            time.sleep(0.2)
            assert d.poll() is None          # still serving us
            s.sendall(b"late\n")
            assert s.recv(100) == b"multi late\n"
        assert d.wait(10) == 0


def test_trigger_on_fifo_and_solitary(env):
    fd, path = fifo_listener(env / "q" / "public" / "note")
    out = env / "notes"
    with start_daemon(str(env / "note-trigger"), config_dir=env, listen=[fd],
                      args=["-l", "-t", "fifo", "-o", f"content_filter={out}"]) as d:
        w = os.open(path, os.O_WRONLY)
        os.write(w, b"W")
        os.close(w)
        assert d.wait_status(mp.STAT_AVAIL)
        assert out.read_bytes() == b"W|"
        d.master_exit()
        assert d.wait(10) == 0
    os.close(fd)


def test_trigger_on_unix_socket_reads_until_hangup(env):
    lsock, path = unix_listener(env / "q" / "public" / "note")
    out = env / "notes"
    with start_daemon(str(env / "note-trigger"), config_dir=env, listen=[lsock],
                      args=["-l", "-t", "unix", "-o", f"content_filter={out}"]) as d:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            s.sendall(b"A")
            time.sleep(0.1)
            s.sendall(b"F")
        assert d.wait_status(mp.STAT_AVAIL)
        assert out.read_bytes() == b"AF|"


def test_solitary_service_refuses_maxproc_above_1(env):
    fd, _ = fifo_listener(env / "q" / "public" / "note")
    with start_daemon(str(env / "note-trigger"), config_dir=env, listen=[fd],
                      args=["-t", "fifo"]) as d:
        assert d.wait(10) == 1
    os.close(fd)
    assert "requires a process limit of 1" in log(env)


def test_proc_title_is_postfix_style(env):
    lsock, _ = unix_listener(env / "q" / "private" / "rewrite")
    with start_daemon(str(env / "echo-single"), config_dir=env, listen=[lsock],
                      args=["-n", "rewrite", "-t", "unix", "-u"]) as d:
        assert d.wait_status(mp.STAT_AVAIL, timeout=0.5) is False   # no client: no report
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cmd = open(f"/proc/{d.pid}/cmdline", "rb").read().replace(b"\0", b" ").strip()
            if cmd.startswith(b"echo-single"):
                break
            time.sleep(0.05)
        assert cmd == b"echo-single -n rewrite -t unix -u", cmd


def test_post_jail_may_schedule_timers(env):
    p = env / "timer-trigger"
    out = env / "ticks"
    p.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env python3
        from pfy.server import trigger
        def tick(ctx):
            open("{out}", "a").write("tick")
        def post_jail(ctx):
            ctx.call_later(0, lambda: tick(ctx))
        trigger.serve(lambda ctx, data: None, post_jail=post_jail)
    """))
    fd, _ = fifo_listener(env / "q" / "public" / "t")
    with start_daemon(str(p), config_dir=env, listen=[fd], args=["-t", "fifo"]) as d:
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.read_text() == "tick"
        d.master_exit()
        assert d.wait(10) == 0
    os.close(fd)
