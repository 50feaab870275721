"""mbox and Maildir writers: headers, quoting, locking, limits, atomicity."""

import errno
import os
import threading
import time

import pytest

from pfy.mailbox import (CopyOptions, LockSettings, MailboxError, deliver_maildir,
                         deliver_mbox, mbox_dsn, parse_lock_methods)
from pfy.mailbox.copy import from_line, quote_822_local
from pfy.queue.record import REC_CONT, REC_NORM, REC_XTRA


def lines(*texts):
    return [(REC_NORM, t) for t in texts]


MSG = lines(b"Subject: hi", b"", b"From me to you", b">From quoted", b"body")
NOW = 1700000000.0


def test_from_line_has_two_spaces_and_asctime():
    got = from_line("a@x", NOW)
    want = f"From a@x  {time.asctime(time.localtime(NOW))}\n".encode()
    assert got == want, f"got {got!r} want {want!r}"
    assert from_line("", NOW).startswith(b"From MAILER-DAEMON  ")


@pytest.mark.parametrize("addr,want", [
    ("alice@x", "alice@x"),
    ("a.b+c@x", "a.b+c@x"),
    ("a b@x", '"a b"@x'),
    ('a"b@x', '"a\\"b"@x'),
    ("a..b@x", '"a..b"@x'),
    ("", ""),
])
def test_quote_822_local(addr, want):
    assert quote_822_local(addr) == want


def test_mbox_headers_quoting_and_blank_line(tmp_path):
    box = tmp_path / "alice"
    opts = CopyOptions(sender="bob@y", orig_rcpt="Alice@X", delivered="alice@x", mbox=True)
    deliver_mbox(str(box), MSG, opts)
    deliver_mbox(str(box), MSG, opts)
    data = box.read_bytes()
    one = data[: len(data) // 2]
    head, rest = one.split(b"\n", 1)
    assert head.startswith(b"From bob@y  ")
    assert rest == (b"Return-Path: <bob@y>\nX-Original-To: Alice@X\nDelivered-To: alice@x\n"
                    b"Subject: hi\n\n>From me to you\n>From quoted\nbody\n\n"), rest
    assert data.count(b"\nFrom bob@y  ") == 1      # second message starts a line
    assert not (tmp_path / "alice.lock").exists()  # dot-lock released
    assert oct(box.stat().st_mode & 0o777) == "0o600"


def test_null_sender_return_path(tmp_path):
    box = tmp_path / "m"
    deliver_mbox(str(box), lines(b"x"), CopyOptions(sender="", mbox=True))
    data = box.read_bytes()
    assert data.startswith(b"From MAILER-DAEMON  ")
    assert b"\nReturn-Path: <>\n" in data


def test_continuation_records_are_one_line_and_quoted_once(tmp_path):
    box = tmp_path / "m"
    recs = [(REC_CONT, b"From "), (REC_NORM, b"From x"), (REC_CONT, b"tail")]
    deliver_mbox(str(box), recs, CopyOptions(sender="a@x", mbox=True, return_path=False))
    body = box.read_bytes().split(b"\n", 1)[1]
    assert body == b">From From x\ntail\n\n", body


def test_size_limit_truncates_back_and_defers(tmp_path):
    box = tmp_path / "m"
    opts = CopyOptions(sender="a@x", mbox=True)
    deliver_mbox(str(box), lines(b"x" * 100), opts)
    before = box.read_bytes()
    big = CopyOptions(sender="a@x", mbox=True, size_limit=len(before) + 150)
    with pytest.raises(MailboxError) as info:
        deliver_mbox(str(box), lines(b"y" * 300), big)
    assert info.value.status == "4.2.2"
    assert "File too large" in info.value.reason
    assert box.read_bytes() == before


def test_corrupt_content_record_truncates(tmp_path):
    box = tmp_path / "m"
    box.write_bytes(b"old\n")
    with pytest.raises(ValueError):
        deliver_mbox(str(box), [(REC_NORM, b"a"), (REC_XTRA, b"")], CopyOptions(sender="a@x", mbox=True))
    assert box.read_bytes() == b"old\n"


def test_not_regular_file_and_wrong_owner(tmp_path):
    with pytest.raises(MailboxError) as info:
        deliver_mbox(str(tmp_path), MSG, CopyOptions(sender="a@x", mbox=True),
                     locks=LockSettings(methods=("fcntl",)))
    assert info.value.status.startswith("4.2")     # queued, not bounced (issue 3)
    box = tmp_path / "m"
    with pytest.raises(MailboxError) as info:
        deliver_mbox(str(box), MSG, CopyOptions(sender="a@x", mbox=True),
                     owner_uid=os.getuid() + 1)
    assert info.value.status == "4.2.0"
    assert "not owned by recipient" in info.value.reason


def test_held_dotlock_defers_after_attempts(tmp_path):
    box = tmp_path / "m"
    (tmp_path / "m.lock").write_bytes(b"")
    sleeps = []
    locks = LockSettings(methods=("dotlock",), attempts=3, delay=1, sleep=sleeps.append)
    with pytest.raises(MailboxError) as info:
        deliver_mbox(str(box), MSG, CopyOptions(sender="a@x", mbox=True), locks=locks)
    assert info.value.transient and sleeps == [1, 1]


def test_stale_dotlock_is_removed(tmp_path):
    box = tmp_path / "m"
    lock = tmp_path / "m.lock"
    lock.write_bytes(b"")
    os.utime(lock, (time.time() - 1000, time.time() - 1000))
    locks = LockSettings(methods=("dotlock",), attempts=3, delay=0, stale_time=500)
    deliver_mbox(str(box), MSG, CopyOptions(sender="a@x", mbox=True), locks=locks)
    assert box.exists() and not lock.exists()


def test_fcntl_lock_held_by_other_process_defers(tmp_path):
    box = tmp_path / "m"
    box.write_bytes(b"")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                      # child holds the lock until told to stop
        import fcntl
        fd = os.open(box, os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX)
        os.write(w, b"x")
        time.sleep(5)
        os._exit(0)
    try:
        os.read(r, 1)
        locks = LockSettings(methods=("fcntl",), attempts=2, delay=0)
        with pytest.raises(MailboxError) as info:
            deliver_mbox(str(box), MSG, CopyOptions(sender="a@x", mbox=True), locks=locks)
        assert info.value.status == "4.2.0"
        assert "unable to lock for exclusive access" in info.value.reason
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_lock_methods_parse():
    assert parse_lock_methods("fcntl, dotlock") == ("fcntl", "dotlock")
    assert parse_lock_methods(["flock"]) == ("flock",)
    with pytest.raises(ValueError):
        parse_lock_methods("fcntl, bogus")


def test_mbox_dsn_table():
    assert mbox_dsn(errno.EAGAIN, "5.2.0") == "4.2.0"
    assert mbox_dsn(errno.ENOSPC, "5.2.0") == "4.3.0"
    # issue 3: a full or unwritable mailbox keeps the mail queued.
    assert mbox_dsn(errno.EDQUOT, "4.2.0") == "4.2.2"
    assert mbox_dsn(errno.EFBIG, "4.2.0") == "4.2.2"
    assert mbox_dsn(errno.EACCES, "4.2.0") == "4.2.0"


def test_maildir_creates_dirs_and_moves_tmp_to_new(tmp_path):
    md = tmp_path / "Maildir"
    opts = CopyOptions(sender="bob@y", orig_rcpt="alice@x", delivered="alice@x")
    name = deliver_maildir(str(md) + "/", MSG, opts, now=NOW)
    for sub in ("tmp", "new", "cur"):
        assert (md / sub).is_dir()
    assert os.listdir(md / "tmp") == []
    assert os.listdir(md / "new") == [os.path.basename(name)]
    assert os.path.basename(name).startswith(f"{int(NOW)}.V")
    data = open(name, "rb").read()
    assert data == (b"Return-Path: <bob@y>\nX-Original-To: alice@x\nDelivered-To: alice@x\n"
                    b"Subject: hi\n\nFrom me to you\n>From quoted\nbody\n"), data


def test_maildir_names_unique_under_threads(tmp_path):
    md = str(tmp_path / "M")
    opts = CopyOptions(sender="a@x")
    threads = [threading.Thread(target=deliver_maildir, args=(md, MSG, opts, NOW)) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(os.listdir(os.path.join(md, "new"))) == 20


def test_maildir_size_limit_leaves_nothing(tmp_path):
    md = tmp_path / "M"
    with pytest.raises(MailboxError) as info:
        deliver_maildir(str(md), lines(b"x" * 500), CopyOptions(sender="a@x", size_limit=100))
    assert info.value.status == "4.2.2"
    assert os.listdir(md / "tmp") == [] and not (md / "new").exists()


def test_maildir_unwritable_is_reported(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    md = tmp_path / "M"
    md.mkdir()
    md.chmod(0o500)
    with pytest.raises(MailboxError) as info:
        deliver_maildir(str(md), MSG, CopyOptions(sender="a@x"))
    assert "create maildir file" in info.value.reason
    assert info.value.status == "4.2.0"
