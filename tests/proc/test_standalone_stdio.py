"""Stand-alone mode (-S) on any standard input and output: pipes, a
terminal, a socket, regular files (`sendmail -bs < commands > transcript`),
/dev/null.  The process ends, with the whole dialogue written, or with a
log line and a non-zero exit; it never hangs (pfy.server._stdio)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from pfy.server.paths import default_daemon_directory

SMTPD = f"{default_daemon_directory()}/smtpd"
TIMEOUT = 30

# A script sends everything at once, so the pipelining check of Postfix 3.9
# (our default) would end it after EHLO: the script is the client here.
MAIN_CF = ("queue_directory = {q}\nmyhostname = mx.example\nalias_maps =\n"
           "maillog_file = {d}/maillog\nsmtpd_forbid_unauth_pipelining = no\n")

SCRIPT = b"EHLO me\r\nNOOP\r\nQUIT\r\n"

TOYS = {
    # multi: echo each line back until EOF; "crash" panics
    "echo-multi": """
        from pfy.server import multi
        async def handler(ctx, reader, writer):
            while line := await reader.readline():
                if line == b"crash\\n":
                    writer.write(b"about to crash\\n")
                    await writer.drain()
                    raise RuntimeError("boom")
                writer.write(b"echo " + line)
                await writer.drain()
        multi.serve(handler)
    """,
    # trigger: append what woke us to the file named by -o content_filter
    "note-trigger": """
        from pfy.server import trigger
        def handler(ctx, data):
            with open(ctx.cfg.content_filter, "ab") as f:
                f.write(b"[" + data + b"]")
        trigger.serve(handler)
    """,
}


@pytest.fixture
def env(tmp_path):
    q = tmp_path / "q"
    (q / "maildrop").mkdir(parents=True)
    (q / "public").mkdir()
    (tmp_path / "main.cf").write_text(MAIN_CF.format(q=q, d=tmp_path))
    for name, body in TOYS.items():
        p = tmp_path / name
        p.write_text("#!/usr/bin/env python3\n" + textwrap.dedent(body))
        p.chmod(0o755)
    return tmp_path


def run(env, argv, stdin, stdout, **kw) -> subprocess.CompletedProcess:
    """The daemon with -S and the given fds 0 and 1 (a pipe on fd 0 when
    input= is given); a hang is a failure."""
    if "input" in kw:
        stdin = None
    return subprocess.run([sys.executable, *argv, "-S"], stdin=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, cwd=env, timeout=TIMEOUT,
                          env={"MAIL_CONFIG": str(env), "PATH": "/usr/bin:/bin"}, **kw)


def maillog(env) -> str:
    try:
        return (env / "maillog").read_text()
    except FileNotFoundError:
        return ""


def assert_whole_dialogue(out: bytes) -> None:
    assert out.startswith(b"220 mx.example ESMTP Postfix\r\n250-mx.example\r\n"), out
    assert out.endswith(b"250 CHUNKING\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"), out


# -- smtpd -S ----------------------------------------------------------------

def test_smtpd_file_in_file_out(env):
    (env / "in").write_bytes(SCRIPT)
    with open(env / "in", "rb") as fin, open(env / "out", "wb") as fout:
        p = run(env, [SMTPD], fin, fout)
    assert p.returncode == 0, p.stderr
    assert_whole_dialogue((env / "out").read_bytes())
    assert "ehlo=1 noop=1 quit=1 commands=3" in maillog(env)


def test_smtpd_file_in_pipe_out(env):
    (env / "in").write_bytes(SCRIPT)
    with open(env / "in", "rb") as fin:
        p = run(env, [SMTPD], fin, subprocess.PIPE)
    assert p.returncode == 0, p.stderr
    assert_whole_dialogue(p.stdout)


def test_smtpd_pipe_in_file_out(env):
    with open(env / "out", "wb") as fout:
        p = run(env, [SMTPD], None, fout, input=SCRIPT)
    assert p.returncode == 0, p.stderr
    assert_whole_dialogue((env / "out").read_bytes())


def test_smtpd_dev_null_both(env):
    """No input at all: a lost connection, logged, and a normal exit."""
    p = run(env, [SMTPD], subprocess.DEVNULL, subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert "lost connection after CONNECT from localhost[127.0.0.1]" in maillog(env)


def test_smtpd_socket_both(env):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        proc = subprocess.Popen([sys.executable, SMTPD, "-S"], stdin=theirs, stdout=theirs,
                                cwd=env, env={"MAIL_CONFIG": str(env), "PATH": "/usr/bin:/bin"})
        theirs.close()
        ours.settimeout(TIMEOUT)
        ours.sendall(SCRIPT)
        out = b""
        while chunk := ours.recv(65536):
            out += chunk
        assert proc.wait(TIMEOUT) == 0
    assert_whole_dialogue(out)


def test_smtpd_terminal_both_and_its_flags_untouched(env):
    """sendmail -bs typed at a terminal; the terminal stays blocking after
    (asyncio's pipe transports would have left O_NONBLOCK on it)."""
    import pty
    import tty
    master, slave = pty.openpty()
    try:
        tty.setraw(slave)
        proc = subprocess.Popen([sys.executable, SMTPD, "-S"], stdin=slave, stdout=slave,
                                cwd=env, env={"MAIL_CONFIG": str(env), "PATH": "/usr/bin:/bin"})
        out = b""
        for cmd, last in ((b"", b"220 "), (b"EHLO me", b"250 "), (b"NOOP", b"250 "),
                          (b"QUIT", b"221 ")):
            if cmd:
                os.write(master, cmd + b"\r\n")
            out += _read_reply(master, last)
        assert proc.wait(TIMEOUT) == 0
        assert os.get_blocking(slave)
    finally:
        os.close(master)
        os.close(slave)
    assert_whole_dialogue(out)


def _read_reply(fd: int, last: bytes) -> bytes:
    import select
    got = b""
    deadline = time.monotonic() + TIMEOUT
    while not any(line.startswith(last) for line in got.split(b"\r\n")):
        ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
        assert ready, f"no {last!r} reply: got {got!r}"
        got += os.read(fd, 65536)
    return got


def test_smtpd_big_output_to_a_slow_reader_is_all_written(env):
    """Flow control end to end: the session waits for a reader that takes
    its time, and every byte reaches it before the process exits."""
    (env / "in").write_bytes(b"EHLO me\r\n" * 2000 + b"QUIT\r\n")
    with open(env / "in", "rb") as fin:
        proc = subprocess.Popen([sys.executable, SMTPD, "-S"], stdin=fin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=env,
                                env={"MAIL_CONFIG": str(env), "PATH": "/usr/bin:/bin"})
        time.sleep(1.5)         # several pipe buffers' worth waits for us
        out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert out.count(b"250 CHUNKING\r\n") == 2000
    assert out.endswith(b"250 CHUNKING\r\n221 2.0.0 Bye\r\n")


def test_smtpd_output_write_error_is_fatal_not_a_hang(env):
    """/dev/full: the caller did not get the dialogue; exit 1, one line."""
    (env / "in").write_bytes(SCRIPT)
    with open(env / "in", "rb") as fin, open("/dev/full", "wb") as fout:
        p = run(env, [SMTPD], fin, fout)
    assert p.returncode == 1
    assert b"smtpd: fatal: standard output: write error: No space left on device" in p.stderr
    assert "fatal: standard output: write error: No space left on device" in maillog(env)


def test_smtpd_reader_gone_is_fatal_not_a_hang(env):
    (env / "in").write_bytes(b"EHLO me\r\n" * 2000 + b"QUIT\r\n")
    r, w = os.pipe()
    os.close(r)                 # nobody will read: EPIPE (Python ignores SIGPIPE)
    try:
        with open(env / "in", "rb") as fin:
            p = run(env, [SMTPD], fin, w)
    finally:
        os.close(w)
    assert p.returncode == 1
    assert "fatal: standard output: write error: Broken pipe" in maillog(env)


# -- the skeletons -------------------------------------------------------------

@pytest.mark.parametrize("stdin, want", [("file", b"echo one\necho two\n"),
                                         ("pipe", b"echo one\necho two\n"),
                                         ("devnull", b"")])
def test_multi_echo_on_any_stdin_to_a_file(env, stdin, want):
    data = b"one\ntwo\n"
    (env / "in").write_bytes(data)
    echo = [str(env / "echo-multi")]
    with open(env / "out", "wb") as fout:
        if stdin == "pipe":
            p = run(env, echo, None, fout, input=data)
        else:
            with open(env / "in" if stdin == "file" else os.devnull, "rb") as fin:
                p = run(env, echo, fin, fout)
    assert p.returncode == 0, p.stderr
    assert (env / "out").read_bytes() == want


def test_multi_panic_is_exit_2_with_what_was_written(env):
    (env / "in").write_bytes(b"one\ncrash\nnever\n")
    with open(env / "in", "rb") as fin, open(env / "out", "wb") as fout:
        p = run(env, [str(env / "echo-multi")], fin, fout)
    assert p.returncode == 2
    assert "panic: RuntimeError: boom" in maillog(env)
    assert (env / "out").read_bytes() == b"echo one\nabout to crash\n"


@pytest.mark.parametrize("stdin", ["file", "devnull"])
def test_trigger_reads_one_request_from_any_stdin(env, stdin):
    (env / "in").write_bytes(b"W")
    notes = env / "notes"
    with open(env / "in", "rb") if stdin == "file" else open(os.devnull, "rb") as fin:
        p = run(env, [str(env / "note-trigger"), "-o", f"content_filter={notes}"],
                fin, subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert notes.read_bytes() == (b"[W]" if stdin == "file" else b"[]")


def test_trigger_unreadable_stdin_is_fatal_not_a_hang(env):
    notes = env / "notes"
    with open(env / "in", "wb") as fin:        # open for writing only: EBADF on read
        p = run(env, [str(env / "note-trigger"), "-o", f"content_filter={notes}"],
                fin, subprocess.DEVNULL)
    assert p.returncode == 1
    assert "fatal: standard input: read error: Bad file descriptor" in maillog(env)
    assert not notes.exists()
