"""cleanup: who may connect (SO_PEERCRED), the records trusted clients
send besides the message (REC_FLGS, REC_FILT, REC_RDR, extracted DSN
records), message_drop_headers, encoding=8bit, content_filter (never read
by cleanup itself), the W record of delay_warning_time and a client that
leaves without a message."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))

from pfy.daemons.cleanup.core import FLAG_HOLD, FLAG_MASK_EXTERNAL  # noqa: E402
from pfy.ipc.cleanup_client import CleanupClient, input_flags  # noqa: E402
from pfy.queue import Queue  # noqa: E402
from pfy.queue.record import (REC_DSN_NOTIFY, REC_FILT, REC_FLGS, REC_RCPT,  # noqa: E402
                              REC_RDR)
from pfy.server.testing import start_daemon, unix_listener  # noqa: E402


@pytest.fixture
def instance(tmp_path):
    yield from _instance(tmp_path)


def _instance(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    os.chmod(tmp_path, 0o755)
    (tmp_path / "private").mkdir()
    (tmp_path / "public").mkdir(mode=0o755)
    (tmp_path / "body_checks").write_text("/^forbidden/ REJECT\n")
    (tmp_path / "main.cf").write_text(textwrap.dedent(f"""\
        queue_directory = {tmp_path}
        myhostname = host.example.com
        mydomain = example.com
        myorigin = example.com
        mydestination = $myhostname, $mydomain, localhost
        inet_interfaces = 127.0.0.1
        body_checks = regexp:{tmp_path}/body_checks
        body_checks_size_limit = 100
        content_filter = scan:[127.0.0.1]:10025
        delay_warning_time = 4h
        maillog_file = {tmp_path}/maillog
        """))
    Queue(os.fspath(tmp_path)).make_dirs()
    rsock, _ = unix_listener(tmp_path / "private" / "rewrite")
    csock, cpath = unix_listener(tmp_path / "public" / "cleanup")
    os.chmod(cpath, 0o666)
    procs = [start_daemon("trivial-rewrite", config_dir=tmp_path, listen=[rsock], args=["-t", "unix"]),
             start_daemon("cleanup", config_dir=tmp_path, listen=[csock], args=["-t", "unix"])]
    rsock.close()
    csock.close()
    yield tmp_path, os.fspath(cpath)
    for p in reversed(procs):
        p.master_exit()
        p.wait(10)


def submit(path, lines, flags=FLAG_MASK_EXTERNAL, envelope_extra=(), extracted=()):
    with CleanupClient.open(path, flags, timeout=20) as c:
        c.envelope("joe@example.com", ["ann@example.org"], attrs={"rewrite_context": "local"})
        for rec in envelope_extra:
            c.record(*rec)
        for line in lines:
            c.line(line)
        c.record(ord("X"), b"")
        for rec in extracted:
            c.record(*rec)
        c.record(ord("E"), b"")
        return c.finish_records()


def read(root, queue_id, queue="incoming"):
    q = Queue(os.fspath(root))
    with q.open(q.entry(queue, queue_id)) as r:
        env = r.read_envelope()
        return env, [x for x in r.content_lines()]


def maillog(root):
    try:
        return (root / "maillog").read_text()
    except FileNotFoundError:
        return ""


def test_drop_headers_8bit_and_no_content_filter_of_its_own(instance):
    root, path = instance
    qid = submit(path, [b"Subject: hi", b"Bcc: x@y", b"Content-Length: 5",
                        b"Return-Path: <a@b>", b"", "caf\u00e9".encode()])
    env, lines = read(root, qid)
    assert not [ln for ln in lines if ln.split(b":")[0].lower()
                in (b"bcc", b"content-length", b"return-path")]
    assert env.attrs.get("encoding") == "8bit"
    # main.cf's content_filter is smtpd's and pickup's to send (REC_FILT):
    # a re-injection path with "-o content_filter=" must end the loop.
    assert env.filter == ""


def test_warn_time_record_from_delay_warning_time(instance):
    root, path = instance
    qid = submit(path, [b"Subject: hi", b"", b"x"],
                 envelope_extra=[(ord("W"), b"%15d" % 1)])     # a client's W is not relayed
    env, _ = read(root, qid)
    assert env.warn_offset > 0
    assert env.warn_time == int(env.arrival_time) + 4 * 3600, (env.warn_time, env.arrival_time)


def test_client_filter_redirect_and_hold_flags(instance):
    root, path = instance
    qid = submit(path, [b"Subject: hi", b"", b"x"],
                 envelope_extra=[(REC_FLGS, b"%d" % FLAG_HOLD)],
                 extracted=[(REC_FILT, b"smtp:[10.0.0.1]"), (REC_RDR, b"red@example.net")])
    env, _ = read(root, qid, "hold")
    assert env.filter == "smtp:[10.0.0.1]"
    assert env.redirect == "red@example.net"


def test_extracted_dsn_notify_belongs_to_its_recipient(instance):
    root, path = instance
    qid = submit(path, [b"Subject: hi", b"", b"x"],
                 extracted=[(REC_DSN_NOTIFY, b"9"), (REC_RCPT, b"cc@example.org")])
    env, _ = read(root, qid)
    by = {r.address: r.dsn_notify for r in env.recipients}
    assert by == {"ann@example.org": 0, "cc@example.org": 9}


def test_no_address_mappings_and_no_header_body_checks(instance):
    root, path = instance
    flags = input_flags(["no_header_body_checks"])
    qid = submit(path, [b"Subject: hi", b"", b"forbidden"], flags=flags)
    assert read(root, qid)[1][-1] == b"forbidden"
    assert input_flags(["no_address_mappings"]) & (1 << 5) == 0


def test_body_checks_size_limit(instance):
    root, path = instance
    # the match lies beyond body_checks_size_limit = 100 bytes: not inspected
    qid = submit(path, [b"Subject: hi", b""] + [b"y" * 60] * 3 + [b"forbidden"])
    assert read(root, qid)[1][-1] == b"forbidden"


def test_session_without_message_is_not_an_error(instance):
    root, path = instance
    c = CleanupClient.open(path, FLAG_MASK_EXTERNAL, timeout=20)
    c.envelope("joe@example.com", ["ann@example.org"])
    c.conn.flush()
    c.close()                 # as smtpd on RSET / QUIT after RCPT
    time.sleep(0.5)
    assert "client disconnected" not in maillog(root)


def test_ordinary_user_is_refused():
    """A local user must go through sendmail/postdrop (DESIGN, Privileges)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: connects as a throw-away user")
    from pathlib import Path

    from localusers import local_users, traversable_tmp
    with traversable_tmp() as base:
        gen = _instance(Path(base) / "q")
        root, path = next(gen)
        try:
            _refused_as_user(root, path, local_users)
        finally:
            gen.close()


def _refused_as_user(root, path, local_users):
    with local_users(root, 1) as (user,):
        # The system interpreter, without pfy: the user may not read ours.
        # cleanup greets at once; a refused client sees EOF instead.
        code = textwrap.dedent(f"""\
            import socket
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect({path!r})
            print("accepted" if s.recv(100) else "refused")
            """)
        out = subprocess.run(["/usr/bin/python3", "-c", code], user=user.pw_uid,
                             group=user.pw_gid, extra_groups=[], capture_output=True,
                             text=True, timeout=30, cwd="/")
        assert out.stdout.startswith("refused"), out.stdout + out.stderr
        deadline = time.time() + 5
        while "refusing connection from uid" not in maillog(root) and time.time() < deadline:
            time.sleep(0.1)
        assert f"refusing connection from uid {user.pw_uid}" in maillog(root)
