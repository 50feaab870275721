"""The words after master's options (master.cf's "command + args" past the
generic ones): a skeleton started with service_args=True hands them to the
daemon in ctx.options.service_args, unchanged; any other daemon refuses
them with a fatal "unexpected command-line argument", as Postfix's do."""

import json
import os
import socket
import textwrap

import pytest

from pfy.server.testing import fifo_listener, start_daemon, unix_listener

# Each daemon answers (or, for trigger, writes to the file named by -o
# content_filter) the JSON of ctx.options.service_args.  TAKES is the
# serve() keyword under test.
DAEMONS = {
    "single": """
        import json
        from pfy.server import single
        def handler(ctx, sock):
            sock.sendall(json.dumps(ctx.options.service_args).encode())
        single.serve(handler{TAKES})
    """,
    "multi": """
        import json
        from pfy.server import multi
        async def handler(ctx, reader, writer):
            writer.write(json.dumps(ctx.options.service_args).encode())
            await writer.drain()
        multi.serve(handler{TAKES})
    """,
    "trigger": """
        import json
        from pfy.server import trigger
        def handler(ctx, data):
            with open(ctx.cfg.content_filter, "w") as f:
                f.write(json.dumps(ctx.options.service_args))
        trigger.serve(handler{TAKES})
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
    return tmp_path


def daemon(env, kind: str, takes: bool) -> str:
    p = env / f"{kind}-{'takes' if takes else 'refuses'}"
    body = textwrap.dedent(DAEMONS[kind]).replace("{TAKES}", ", service_args=True" if takes else "")
    p.write_text("#!/usr/bin/env python3\n" + body)
    p.chmod(0o755)
    return str(p)


def ask(path: str) -> list[str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return json.loads(out)


SERVICE_ARGS = ["flags=R", "user=x", "argv=/bin/cmd", "-f", "${sender}", "--", "${recipient}"]


@pytest.mark.parametrize("kind", ["single", "multi"])
def test_service_gets_its_args(env, kind):
    lsock, path = unix_listener(env / "q" / "private" / "svc")
    with start_daemon(daemon(env, kind, True), config_dir=env, listen=[lsock],
                      args=["-n", "svc", "-t", "unix", "-o", "max_use=1", *SERVICE_ARGS]) as d:
        got = ask(path)
        assert d.wait(10) == 0
    assert got == SERVICE_ARGS, f"got {got} want {SERVICE_ARGS}"


def test_trigger_service_gets_its_args(env):
    out = env / "out"
    fd, path = fifo_listener(env / "q" / "public" / "svc")
    try:
        with start_daemon(daemon(env, "trigger", True), config_dir=env, listen=[fd],
                          args=["-t", "fifo", "-o", f"content_filter={out}", "-o", "max_use=1",
                                "--", "-x", "y"]) as d:
            with open(path, "wb", buffering=0) as f:
                f.write(b"W")
            assert d.wait(10) == 0
    finally:
        os.close(fd)
    assert json.loads(out.read_text()) == ["-x", "y"]


@pytest.mark.parametrize("kind", ["single", "multi", "trigger"])
def test_daemon_without_service_args_refuses_them(env, kind):
    if kind == "trigger":
        listener, _ = fifo_listener(env / "q" / "public" / "svc")
        kind_args = ["-t", "fifo"]
    else:
        listener, _ = unix_listener(env / "q" / "private" / "svc")
        kind_args = ["-t", "unix"]
    err = env / "stderr"
    try:
        with open(err, "wb") as f:
            with start_daemon(daemon(env, kind, False), config_dir=env, listen=[listener],
                              args=[*kind_args, "flags=R", "argv=/bin/cat"], stderr=f) as d:
                assert d.wait(10) == 1
    finally:
        if isinstance(listener, int):
            os.close(listener)
        else:
            listener.close()
    text = err.read_text()
    assert "fatal: unexpected command-line argument: flags=R" in text, text
    assert "Traceback" not in text
