"""smtpd's hand-off: stand-alone (sendmail -bs) to maildrop/, the daemon's
content_filter as a REC_FILT record, fatal reasons on stderr, and the
unix:passwd.byname table smtpd consults at RCPT."""

from __future__ import annotations

import os
import subprocess
import sys

from pfy.server.paths import default_daemon_directory


def _dialogue(p, commands):
    out = [p.stdout.readline()]
    for cmd in commands:
        p.stdin.write(cmd + b"\r\n")
        p.stdin.flush()
        while True:
            line = p.stdout.readline()
            out.append(line)
            if not line or line[3:4] != b"-":
                break
    return out


def test_standalone_message_goes_to_maildrop_not_cleanup(tmp_path):
    """smtpd -S (sendmail -bs) writes a maildrop file as postdrop would,
    whatever its cwd; there is no cleanup to talk to."""
    q = tmp_path / "q"
    (q / "maildrop").mkdir(parents=True)
    (q / "public").mkdir()
    (tmp_path / "main.cf").write_text(
        f"queue_directory = {q}\nmyhostname = mx.example\nalias_maps =\n"
        f"maillog_file = {tmp_path}/maillog\ncontent_filter = filter:dummy\n")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    p = subprocess.Popen([sys.executable, f"{default_daemon_directory()}/smtpd", "-S"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=cwd, env={"MAIL_CONFIG": str(tmp_path), "PATH": "/usr/bin:/bin"})
    out = _dialogue(p, [b"HELO me", b"MAIL FROM:<s@example.com>", b"RCPT TO:<r@example.com>",
                        b"DATA", b"Subject: t\r\n\r\nhi\r\n.", b"QUIT"])
    p.stdin.close()
    assert p.wait(timeout=30) == 0, p.stderr.read()
    assert out[3].startswith(b"250 2.1.5"), out
    assert out[5].startswith(b"250 2.0.0 Ok: queued as "), out
    (f,) = list((q / "maildrop").iterdir())
    assert f.name == out[5].split()[-1].decode()
    assert f.stat().st_mode & 0o777 == 0o740
    data = f.read_bytes()
    assert b"s@example.com" in data and b"r@example.com" in data and b"hi" in data
    # A user's file carries no filter and no network client attributes.
    assert b"filter:dummy" not in data and b"client_address" not in data


def test_standalone_maildrop_unwritable_is_a_queue_write_error(tmp_path):
    q = tmp_path / "q"
    q.mkdir()               # no maildrop/
    (tmp_path / "main.cf").write_text(
        f"queue_directory = {q}\nmyhostname = mx.example\nalias_maps =\n"
        f"maillog_file = {tmp_path}/maillog\n")
    p = subprocess.Popen([sys.executable, f"{default_daemon_directory()}/smtpd", "-S"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=tmp_path, env={"MAIL_CONFIG": str(tmp_path), "PATH": "/usr/bin:/bin"})
    out = _dialogue(p, [b"HELO me", b"MAIL FROM:<s@example.com>", b"RCPT TO:<r@example.com>",
                        b"QUIT"])
    p.stdin.close()
    p.wait(timeout=30)
    assert out[3] == b"451 4.3.0 Error: queue file write error\r\n", out


def test_fatal_in_standalone_reaches_stderr(tmp_path, capfd):
    import pfy.log as pfylog
    from pfy.daemons.smtpd import _fatal_on_stderr
    logger = pfylog.logger
    saved = logger.__dict__.copy()
    try:
        pfylog.init_logging("smtpd", maillog_file=str(tmp_path / "maillog"))
        _fatal_on_stderr()
        logger.log("info", "connect from localhost[127.0.0.1]")
        logger.log("fatal", "open lmdb:/x: no such file")
        err = capfd.readouterr().err
    finally:
        logger.close()
        logger.__dict__.clear()
        logger.__dict__.update(saved)
    assert err == "smtpd: fatal: open lmdb:/x: no such file\n", err
    log = (tmp_path / "maillog").read_text()
    assert "connect from" in log and "fatal: open lmdb:/x" in log


def test_content_filter_is_a_filt_record_after_the_time_stamp():
    from pfy.daemons.smtpd._cleanup import CleanupSession
    from pfy.queue.record import REC_FILT, REC_FROM, REC_TIME

    class Conn:
        def __init__(self):
            self.records = []

        def send_record(self, rtype, data):
            self.records.append((rtype, data))

    s = CleanupSession(Conn(), "Q")
    s.start("a@x", {}, arrival=0, content_filter="filter:dummy")
    assert [r for r, _ in s.conn.records] == [REC_TIME, REC_FILT, REC_FROM]
    assert s.conn.records[1][1] == b"filter:dummy"
    s = CleanupSession(Conn(), "Q")
    s.start("a@x", {}, arrival=0)
    assert REC_FILT not in [r for r, _ in s.conn.records]


def test_receive_override_options_reach_cleanup_flags():
    from pfy.daemons.cleanup.core import FLAG_BCC_OK, FLAG_MAP_OK, FLAG_MASK_EXTERNAL
    from pfy.ipc.cleanup_client import input_flags
    assert input_flags([]) == FLAG_MASK_EXTERNAL
    assert input_flags(["no_address_mappings"]) & (FLAG_MAP_OK | FLAG_BCC_OK) == 0


# -- unix:passwd.byname ------------------------------------------------------

def test_passwd_table_caches_and_rereads_on_change(tmp_path, monkeypatch):
    import pwd

    from pfy.access import _passwd
    me = pwd.getpwuid(os.getuid())
    calls = []
    real = pwd.getpwnam

    def counting(name):
        calls.append(name)
        return real(name)
    monkeypatch.setattr(_passwd.pwd, "getpwnam", counting)
    fake = tmp_path / "passwd"
    fake.write_text("x\n")
    t = _passwd.PasswdTable(passwd_file=str(fake))
    for _ in range(3):
        assert t.lookup(me.pw_name).startswith(f"{me.pw_name}:")
        assert t.lookup("no-such-user-pfy") is None
    assert calls == [me.pw_name, "no-such-user-pfy"], calls
    fake.write_text("x\ny\n")                 # the file changed: ask again
    assert t.lookup(me.pw_name) is not None
    assert calls[-1] == me.pw_name and len(calls) == 3
    assert t.lookup("a\0b") is None


def test_passwd_table_in_a_jail_uses_the_copy_from_before(tmp_path, monkeypatch):
    import pwd

    from pfy.access import _passwd
    me = pwd.getpwuid(os.getuid())
    t = _passwd.PasswdTable(passwd_file=str(tmp_path / "none"))
    monkeypatch.setattr(_passwd, "_root_id", lambda: (-1, -1))      # chrooted since

    def boom(name):
        raise AssertionError("getpwnam inside the jail")
    monkeypatch.setattr(_passwd.pwd, "getpwnam", boom)
    assert t.lookup(me.pw_name).startswith(f"{me.pw_name}:")
    assert t.lookup("no-such-user-pfy") is None
