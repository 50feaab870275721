"""pickup's file handling on real files in a maildrop folder, with a fake
cleanup: what it trusts (st_uid), what it refuses (links, symlinks, garbage,
files still being written), and that it keeps a file cleanup did not take."""

import io
import os

import pytest

from pfy.cli import sendmail
from pfy.cli.postdrop import MAILDROP_READY, MaildropFile
from pfy.daemons import pickup
from pfy.ipc.cleanup_client import CleanupRejected

SETTINGS = {"line_length_limit": 2048, "content_filter": "", "myhostname": "h.example",
            "mail_name": "Postfix", "ipc_timeout": 5.0}


class FakeCleanup:
    def __init__(self, fail=None):
        self.queue_id = "4ABC123DEF"
        self.records = []
        self.fail = fail
        self.finished = False

    def record(self, rtype, data):
        self.records.append((chr(rtype), data))

    def finish_records(self):
        if self.fail:
            raise self.fail
        self.finished = True
        return self.queue_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def drop(tmp_path, argv, body=b"Subject: s\n\nbody\n"):
    md = tmp_path / "maildrop"
    md.mkdir(exist_ok=True)
    (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\n")
    rc = sendmail.run(["-C", str(tmp_path), *argv], "sendmail",
                      io.BufferedReader(io.BytesIO(body)), lambda s, m: None)
    assert rc == 0
    (f,) = list(md.iterdir())
    return str(f)


def run_pickup(path, client, warnings=None):
    warns = [] if warnings is None else warnings
    out = pickup.pickup_file(path, SETTINGS, "public/cleanup", pickup.cleanup_flags([]),
                             warn=warns.append, connect=lambda *a, **k: client)
    return out, warns


def test_sender_and_uid_come_from_file_and_owner(tmp_path, caplog):
    path = drop(tmp_path, ["-f", "alice@example.com", "-N", "success", "bob"])
    client = FakeCleanup()
    out, warns = run_pickup(path, client)
    assert out == pickup.Outcome.REMOVE and client.finished and not warns
    recs = client.records
    assert ("S", b"alice@example.com") in recs and ("R", b"bob") in recs
    assert ("n", b"2") in recs, "notify_flags becomes a DSN notify record"
    received = [d for t, d in recs if t == "N" and d.startswith(b"Received:")]
    assert received == [b"Received: by h.example (Postfix, from userid %d)" % os.getuid()]
    assert recs[-1] == ("E", b"")


def test_user_cannot_set_client_attributes(tmp_path):
    md = tmp_path / "maildrop"
    md.mkdir()
    with MaildropFile(str(md)) as f:
        f.record(ord("A"), b"log_client_address=192.0.2.1")
        f.record(ord("S"), b"a")
        f.record(ord("R"), b"b")
        for rt in b"MXE":
            f.record(rt, b"")
        f.commit()
        path = f.path
    client = FakeCleanup()
    out, warns = run_pickup(path, client)
    assert out == pickup.Outcome.REMOVE
    assert not any(d.startswith(b"log_client") for _, d in client.records)
    assert any("ignoring attribute record: log_client_address" in w for w in warns)


def test_file_being_written_is_kept(tmp_path):
    md = tmp_path / "maildrop"
    md.mkdir()
    f = MaildropFile(str(md))
    f.record(ord("S"), b"a")
    f._flush()
    client = FakeCleanup()
    assert run_pickup(f.path, client)[0] == pickup.Outcome.KEEP and not client.records
    f.abort()


def test_garbage_is_removed_with_a_warning(tmp_path):
    md = tmp_path / "maildrop"
    md.mkdir()
    path = md / "AAAAAAAAAAAAAAAAAAAAAAAAAA"
    path.write_bytes(b"\x00\x01garbage that is no record stream")
    os.chmod(path, MAILDROP_READY)
    out, warns = run_pickup(str(path), FakeCleanup())
    assert out == pickup.Outcome.REMOVE and any("uid=" in w for w in warns)


def test_hard_link_and_symlink_are_refused(tmp_path):
    path = drop(tmp_path, ["bob"])
    link = path[:-1] + ("A" if path[-1] != "A" else "B")
    os.link(path, link)
    out, warns = run_pickup(link, FakeCleanup())
    assert out == pickup.Outcome.REMOVE and "2 links" in warns[0]
    os.unlink(link)
    sym = tmp_path / "maildrop" / "SSSSSSSSSSSSSSSSSSSSSSSSSS"
    os.symlink(path, sym)
    out, warns = run_pickup(str(sym), FakeCleanup())
    assert out == pickup.Outcome.REMOVE and "symbolic link" in warns[0]


@pytest.mark.parametrize("error, want", [
    (CleanupRejected(4, 451, "4.3.0 queue file write error"), pickup.Outcome.KEEP),
    (EOFError("peer closed the connection"), pickup.Outcome.KEEP),
    (CleanupRejected(8, 550, "5.7.1 message content rejected"), pickup.Outcome.REMOVE),
])
def test_file_is_kept_until_cleanup_acknowledges(tmp_path, error, want):
    path = drop(tmp_path, ["bob"])
    out, _ = run_pickup(path, FakeCleanup(fail=error))
    assert out == want


def test_oldest_first(tmp_path):
    md = tmp_path / "maildrop"
    paths = [drop_one(tmp_path, i) for i in range(3)]
    for i, p in enumerate(paths):
        os.utime(p, (1000 + (3 - i), 1000 + (3 - i)))
    got = [p for _, p in pickup.ready_files(str(md))]
    assert got == list(reversed(paths))


def drop_one(tmp_path, i):
    md = tmp_path / "maildrop"
    md.mkdir(exist_ok=True)
    with MaildropFile(str(md)) as f:
        f.record(ord("S"), b"a%d" % i)
        f.commit()
        return f.path
