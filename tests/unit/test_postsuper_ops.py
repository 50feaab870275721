"""postsuper's operations on a queue in a temporary folder: the per-message
lines and totals Postfix prints, and the structure repairs of -s / -p."""

import os
import time

import pytest

from pfy.cli.postsuper import (
    ACTION_DEFAULT, ACTION_DELETE_ALL, ACTION_HOLD_ALL, ACTION_PURGE,
    ACTION_RELEASE_ALL, ACTION_STRUCT, Super, id_ok,
)
from pfy.queue import Queue


@pytest.fixture
def env(tmp_path):
    q = Queue(str(tmp_path))
    q.make_dirs()
    lines = []
    s = Super(str(tmp_path), info=lines.append, warn=lambda m: lines.append("warning: " + m))
    return q, s, lines


def write(q, queue, rcpts=("b@y",)):
    with q.create(queue) as w:
        w.time()
        w.sender("a@x")
        w.attr("rewrite_context", "remote")
        for r in rcpts:
            w.recipient(r)
        w.begin_content()
        w.content_line(b"Subject: t")
        w.content_line(b"")
        w.content_line(b"body")
        w.end_content()
        return w.commit(), w.path


def test_delete_one_removes_logs_and_reports(env):
    q, s, lines = env
    qid, path = write(q, "deferred")
    log = q.log_path("defer", qid)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    open(log, "w").close()
    assert s.delete_one(("hold", "incoming", "active", "deferred"), qid) == 1
    assert not os.path.exists(path) and not os.path.exists(log)
    assert lines == [f"{qid}: removed"]
    assert s.delete_one(("deferred",), qid) == 0
    assert s.delete_one(("deferred",), "../etc") == 0
    assert lines[-1] == "warning: invalid mail queue id: ../etc"


def test_hold_release_and_totals(env):
    q, s, lines = env
    qid, _ = write(q, "active")
    assert s.hold_one(("incoming", "active", "deferred"), qid) == 1
    assert os.path.exists(q.path("hold", qid))
    s.held = 1
    assert s.release_one(("hold",), qid) == 1
    assert os.path.exists(q.path("deferred", qid))
    s.released = 1
    s.report()
    assert lines == [f"{qid}: placed on hold", f"{qid}: released from hold",
                     "Placed on hold: 1 message", "Released from hold: 1 message"]


def test_maildrop_mail_is_never_held(env):
    q, s, _ = env
    qid, path = write(q, "maildrop")
    assert s.hold_one(("maildrop", "incoming"), qid) == 0
    assert os.path.exists(path)


def test_requeue_renames_the_queue_file_into_maildrop(env):
    """postsuper -r is a plain rename, as Postfix's: pickup trusts the whole
    record set of a file owned by mail_owner, and a recipient already
    delivered stays done (it is never delivered twice)."""
    q, s, lines = env
    qid, path = write(q, "deferred", ("one@y", "two@y"))
    with q.open(q.entry("deferred", qid), writable=True) as r:
        r.mark_done(r.read_envelope().recipients[0])
    assert s.requeue_one(("deferred",), qid) == 1
    assert not os.path.exists(path)
    [new] = list(os.scandir(q.dir("maildrop")))
    assert new.name == qid
    assert oct(os.stat(new.path).st_mode & 0o700) == oct(0o700)   # complete mark
    with q.open(q.entry("maildrop", new.name)) as r:
        env_ = r.read_envelope()
        assert [(x.address, x.done) for x in env_.recipients] == [("one@y", True), ("two@y", False)]
        assert env_.sender == "a@x"
        assert list(r.content_lines()) == [b"Subject: t", b"", b"body"]
    assert lines == [f"{qid}: requeued"]


def test_mass_operations(env):
    q, s, _ = env
    ids = [write(q, "deferred")[0] for _ in range(3)]
    s.super(("incoming", "active", "deferred"), ACTION_HOLD_ALL)
    assert s.held == 3 and all(os.path.exists(q.path("hold", i)) for i in ids)
    s.super(("hold",), ACTION_RELEASE_ALL)
    assert s.released == 3
    s.super(("defer", "bounce", "deferred", "hold"), ACTION_DELETE_ALL)
    assert s.deleted == 3
    assert list(q.ready_files("deferred")) == []


def test_structure_fix_wrong_hash_folder_and_misnamed_file(env, tmp_path):
    q, s, lines = env
    qid, path = write(q, "deferred")
    # Wrong place: deferred/ID instead of deferred/X/ID.
    flat = os.path.join(q.dir("deferred"), qid)
    os.rename(path, flat)
    # Misnamed: an ID that does not match the inode (restored from backup).
    qid2, path2 = write(q, "incoming")
    bad = os.path.join(q.dir("incoming"), qid2[:5] + "ABC")
    os.rename(path2, bad)
    os.mkdir(os.path.join(q.dir("incoming"), "Z"))          # stray subfolder
    action = s.super(("defer", "incoming", "deferred"), ACTION_STRUCT)
    if s.inode_mismatch:
        s.super(("defer", "incoming", "deferred"), action)
    assert os.path.exists(path)
    assert s.position_mismatch == 1
    assert os.path.exists(path2) and not os.path.exists(bad)
    assert s.inode_fixed == 1
    assert not os.path.exists(os.path.join(q.dir("incoming"), "Z"))
    s.report()
    assert "Renamed to match inode number: 1 message" in lines
    assert "warning: QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS" in lines


def test_purge_removes_old_or_orphaned_temp_files_only(env):
    q, s, lines = env
    inc = q.dir("incoming")
    old = os.path.join(inc, "ABCDEF0001")             # a crash left it half written
    open(old, "w").close()
    os.chmod(old, 0o600)
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    orphan = os.path.join(inc, "tmp.999999999.1")     # writer process gone
    open(orphan, "w").close()
    mine = os.path.join(inc, f"tmp.{os.getpid()}.7")  # writer alive: keep
    open(mine, "w").close()
    young = os.path.join(inc, "ABCDEF0002")
    open(young, "w").close()
    os.chmod(young, 0o600)
    s.super(("incoming",), ACTION_PURGE)
    assert not os.path.exists(old) and not os.path.exists(orphan)
    assert os.path.exists(mine) and os.path.exists(young)


def test_default_action_keeps_good_queue_intact(env):
    q, s, lines = env
    ids = [write(q, name)[0] for name in ("incoming", "active", "deferred", "hold")]
    s.super(("defer", "bounce", "maildrop", "incoming", "active", "deferred",
             "hold", "flush"), ACTION_DEFAULT)
    assert s.inode_mismatch == s.position_mismatch == 0
    assert lines == []
    assert all(q.find(i) for i in ids)


@pytest.mark.parametrize("name,ok", [("ABCDEF12", True), ("a_b", True), ("", False),
                                     ("../x", False), ("tmp.1.2", False), ("x" * 256, False)])
def test_queue_id_syntax(name, ok):
    assert id_ok(name) is ok
