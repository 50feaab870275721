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


# -- requeued queue files (postsuper -r) and the file owner -------------------

def requeued_file(tmp_path):
    """A deferred queue file with one recipient done, renamed into
    maildrop/ by postsuper -r; returns its path and queue ID."""
    from pfy.cli.postsuper import Super
    from pfy.queue import Queue
    q = Queue(str(tmp_path))
    q.make_dirs()
    with q.create("deferred") as w:
        w.time()
        w.sender("a@x")
        w.attr("rewrite_context", "remote")
        w.attr("log_client_address", "192.0.2.7")
        w.dsn(ret=2, envid="ENV1")
        w.warn_time(12345)
        w.recipient("done@y", orig_rcpt="alias-done@y", dsn_notify=2)
        w.recipient("todo@y", orig_rcpt="alias-todo@y", dsn_orcpt="rfc822;o@y", dsn_notify=4)
        w.begin_content()
        for line in (b"Subject: t", b"", b"body"):
            w.content_line(line)
        w.end_content()
        w.recipient("extracted@y")
        qid = w.commit()
    with q.open(q.entry("deferred", qid), writable=True) as r:
        r.mark_done(r.read_envelope().recipients[0])
    assert Super(str(tmp_path)).requeue_one(("deferred",), qid) == 1
    path = q.path("maildrop", qid)
    assert os.path.exists(path) and not os.path.exists(q.path("deferred", qid))
    return path, qid


def settings_trusting(uid):
    return dict(SETTINGS, trusted_uids=frozenset({uid}))


def test_requeued_file_of_mail_owner_keeps_its_record_set(tmp_path):
    path, qid = requeued_file(tmp_path)
    client = FakeCleanup()
    warns = []
    out = pickup.pickup_file(path, settings_trusting(os.getuid()), "public/cleanup",
                             pickup.cleanup_flags([]), warn=warns.append,
                             connect=lambda *a, **k: client)
    assert out == pickup.Outcome.REMOVE and client.finished, warns
    recs = client.records
    types = "".join(t for t, _ in recs)
    # Done recipient gone with its O and n; the pending one keeps o, n, O.
    assert (b"done@y" not in [d for _, d in recs]
            and b"alias-done@y" not in [d for _, d in recs]), recs
    i = recs.index(("R", b"todo@y"))
    assert recs[i - 3:i] == [("o", b"rfc822;o@y"), ("n", b"4"), ("O", b"alias-todo@y")]
    assert ("R", b"extracted@y") in recs
    # Client attributes and DSN envelope records are trusted and kept.
    assert ("A", b"log_client_address=192.0.2.7") in recs
    assert ("<", b"2") in recs and ("i", b"ENV1") in recs
    # Size and warn-time records are cleanup's to write anew.
    assert "C" not in types and "W" not in types
    assert not warns


def test_requeued_looking_file_of_another_user_is_a_postdrop_file(tmp_path):
    path, _ = requeued_file(tmp_path)
    client = FakeCleanup()
    warns = []
    # The same bytes, owned by someone pickup does not trust: the queue
    # file's size record is not what sendmail writes, so it is garbage.
    out = pickup.pickup_file(path, settings_trusting(os.getuid() + 12345), "public/cleanup",
                             pickup.cleanup_flags([]), warn=warns.append,
                             connect=lambda *a, **k: client)
    assert out == pickup.Outcome.REMOVE and not client.finished
    assert any("unexpected or malformed record type" in w for w in warns), warns


def test_requeued_file_is_found_by_the_scan_and_incomplete_one_waits(tmp_path):
    path, qid = requeued_file(tmp_path)
    assert [p for _, p in pickup.ready_files(str(tmp_path / "maildrop"))] == [path]
    os.chmod(path, 0o600)           # a queue file without its ready bits
    assert pickup.ready_files(str(tmp_path / "maildrop")) == []
    out = pickup.pickup_file(path, settings_trusting(os.getuid()), "public/cleanup",
                             pickup.cleanup_flags([]), warn=[].append,
                             connect=lambda *a, **k: FakeCleanup())
    assert out == pickup.Outcome.KEEP


def test_sendmail_file_of_trusted_owner_goes_through_the_trusted_path(tmp_path):
    path = drop(tmp_path, ["-f", "alice@example.com", "-N", "success", "bob"])
    client = FakeCleanup()
    out = pickup.pickup_file(path, settings_trusting(os.getuid()), "public/cleanup",
                             pickup.cleanup_flags([]), warn=[].append,
                             connect=lambda *a, **k: client)
    assert out == pickup.Outcome.REMOVE
    assert ("n", b"2") in client.records and ("R", b"bob") in client.records
    assert ("A", b"rewrite_context=local") in client.records


def test_authorized_submit_users_is_enforced_by_file_owner(tmp_path):
    import pwd
    from pfy.message.domains import MatchList
    me = pwd.getpwuid(os.getuid()).pw_name
    path = drop(tmp_path, ["bob"])
    client = FakeCleanup()
    warns = []
    settings = dict(SETTINGS, trusted_uids=frozenset(),
                    submit_acl=MatchList([f"!{me}", "static:anyone"]))
    out = pickup.pickup_file(path, settings, "public/cleanup", pickup.cleanup_flags([]),
                             warn=warns.append, connect=lambda *a, **k: client)
    assert out == pickup.Outcome.REMOVE and not client.records
    assert f"User {me}({os.getuid()}) is not allowed to submit mail" in warns[0]
    # Anyone else on the list gets through.
    path = drop_again(tmp_path)
    settings["submit_acl"] = MatchList([me])
    out = pickup.pickup_file(path, settings, "public/cleanup", pickup.cleanup_flags([]),
                             warn=warns.append, connect=lambda *a, **k: client)
    assert out == pickup.Outcome.REMOVE and client.finished


def drop_again(tmp_path):
    for f in (tmp_path / "maildrop").iterdir():
        f.unlink()
    return drop(tmp_path, ["bob"])


def test_smtpd_stand_alone_session_writes_what_pickup_takes(tmp_path):
    """pfy.cli.postdrop.MaildropSession (smtpd -S's route into the queue):
    client attributes a user could fake are left out, DSN fields survive."""
    import asyncio
    from pfy.cli.postdrop import MaildropSession
    (tmp_path / "maildrop").mkdir()

    async def session():
        s = await MaildropSession.open(str(tmp_path))
        s.start("s@example.com", {"log_client_address": "127.0.0.1", "rewrite_context": "remote",
                                  "encoding": "8bit"}, dsn_ret=2, dsn_envid="E1")
        s.recipient("r@example.com", dsn_orcpt="rfc822;o@example.com", dsn_notify=6)
        s.line(b"Subject: x")
        s.line(b"")
        s.line(b"long", partial=True)
        s.line(b" line")
        await s.drain()
        return s.queue_id, await s.finish([(ord("L"), b"smtp:evil")])

    name, status = asyncio.run(session())
    assert status.status == 0 and status.queue_id == name and status.code == 250
    path = tmp_path / "maildrop" / name
    assert os.stat(path).st_mode & 0o777 == MAILDROP_READY
    client = FakeCleanup()
    warns = []
    out = pickup.pickup_file(str(path), dict(SETTINGS, trusted_uids=frozenset()), "public/cleanup",
                             pickup.cleanup_flags([]), warn=warns.append,
                             connect=lambda *a, **k: client)
    assert out == pickup.Outcome.REMOVE and client.finished and not warns, warns
    recs = client.records
    assert ("A", b"rewrite_context=remote") in recs and ("A", b"encoding=8bit") in recs
    assert not any(d.startswith(b"log_client") for _, d in recs)
    i = recs.index(("R", b"r@example.com"))
    assert recs[i - 2:i] == [("o", b"rfc822;o@example.com"), ("n", b"6")]
    assert ("<", b"2") in recs and ("i", b"E1") in recs
    assert ("L", b"long") in recs and ("N", b" line") in recs
    assert ("L", b"smtp:evil") not in recs


def test_smtpd_stand_alone_session_abandoned_leaves_nothing(tmp_path):
    from pfy.cli.postdrop import MaildropSession
    (tmp_path / "maildrop").mkdir()
    s = MaildropSession(str(tmp_path))
    s.start("s@example.com", {})
    s.close()
    assert not list((tmp_path / "maildrop").iterdir())


def test_postsuper_purge_keeps_a_complete_file_waiting_for_days(tmp_path):
    """The ready mode carries Postfix's "complete" bits (owner rwx), so
    postsuper -p, which removes incomplete files older than a day, leaves
    mail alone that waited while the daemons were down."""
    import time
    from pfy.cli.postsuper import ACTION_PURGE, Super
    path = drop(tmp_path, ["bob"])
    os.utime(path, (time.time() - 3 * 86400,) * 2)
    Super(str(tmp_path)).super(("maildrop",), ACTION_PURGE)
    assert os.path.exists(path)
