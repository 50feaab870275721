"""Issue 3's local mail path end to end: `echo hi | sendmail alice` goes
through pickup, cleanup, qmgr and local, each its own process under master,
and lands in a Maildir or an mbox with Delivered-To and Return-Path; the log
reads like Postfix's.

Two privilege models (DESIGN.md "Privileges"):
- an ordinary-user instance: every process runs as that user (as root we
  create a throw-away user and run the whole instance as it);
- a root instance: pickup, cleanup and qmgr run as mail_owner, local runs
  as root but writes each mailbox as the recipient.

Also here: issue 3's rule that an unwritable mailbox (permissions, size
limit) keeps the mail queued with the reason, and that garbage queue files
go to corrupt/ while other mail keeps moving.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import time
from pathlib import Path

import pytest

from instance import Instance
from localusers import local_users, messages_in_maildir, messages_in_mbox, traversable_tmp

from pfy.ipc.trigger import trigger
from pfy.queue import Queue
from pfy.queue.queue_id import short_queue_id

HOST = "localhost.localdomain"


@pytest.fixture
def tmp():
    with traversable_tmp() as path:
        yield path
QID = r"[0-9A-Za-z]+"


def user_instance(tmp_path: Path, pw, **main_cf) -> Instance:
    """An instance that runs entirely as pw's user (created by root)."""
    root = tmp_path / "inst"
    root.mkdir()
    os.chown(root, pw.pw_uid, pw.pw_gid)
    return Instance(root, main_cf=main_cf, user=pw.pw_name)


def sendmail(inst: Instance, *args: str, body: bytes = b"hi\n") -> None:
    p = inst.command("sendmail", *args, input=body)
    assert p.returncode == 0, p.stderr.decode()


def delivery_log(inst: Instance, user: str, status: str = "sent",
                 what: str = "delivered to maildir") -> str:
    """Wait for the whole Postfix-shaped log story of one message to `user`;
    returns its queue ID."""
    (line,) = inst.wait_for_log(
        rf"postfix/local\[\d+\]: {QID}: to=<{user}@{HOST}>, orig_to=<{user}>, relay=local, "
        rf"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=\d\.\d\.\d, status={status} "
        rf"\({re.escape(what)}", timeout=30)
    return line.split(": ")[1]


def assert_postfix_story(inst: Instance, qid: str, sender: str, user: str) -> None:
    """pickup -> cleanup -> qmgr -> local -> qmgr removed, in that order."""
    lines = inst.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: removed", timeout=15)
    story = [ln.split("]: ", 1)[1] for ln in inst.log().splitlines() if f": {qid}: " in ln]
    want = [rf"{qid}: uid=\d+ from=<{sender}>$",
            rf"{qid}: message-id=<[^>]+@{HOST}>$",
            rf"{qid}: from=<{sender}@{HOST}>, size=\d+, nrcpt=1 \(queue active\)$",
            rf"{qid}: to=<{user}@{HOST}>, orig_to=<{user}>, relay=local, .*status=sent",
            rf"{qid}: removed$"]
    assert len(story) == len(want), f"got {story} want {want}"
    for got, rx in zip(story, want):
        assert re.match(rx, got), f"got {got!r} want /{rx}/"
    prog = [re.search(r"postfix/(\w+)\[", ln).group(1)
            for ln in inst.log().splitlines() if f": {qid}: " in ln]
    assert prog == ["pickup", "cleanup", "qmgr", "local", "qmgr"]
    assert lines


def assert_delivered(msg: bytes, sender: str, user: str) -> None:
    head, _, body = msg.partition(b"\n\n")
    lines = head.split(b"\n")
    if lines[0].startswith(b"From "):
        assert lines[0].startswith(f"From {sender}@{HOST}  ".encode())
        lines = lines[1:]
    assert lines[0] == f"Return-Path: <{sender}@{HOST}>".encode()
    assert f"Delivered-To: {user}@{HOST}".encode() in lines
    assert any(ln.startswith(b"Message-Id: ") or ln.startswith(b"Message-ID: ") for ln in lines)
    assert body.startswith(b"hi\n")


# -- an ordinary-user instance ---------------------------------------------------

def test_ordinary_user_maildir(tmp):
    with local_users(tmp, 1) as (me,):
        with user_instance(tmp, me, home_mailbox="Maildir/") as inst:
            inst.start()
            sendmail(inst, me.pw_name)
            qid = delivery_log(inst, me.pw_name)
            assert_postfix_story(inst, qid, me.pw_name, me.pw_name)
            (msg,) = messages_in_maildir(Path(me.pw_dir) / "Maildir")
            assert_delivered(msg, me.pw_name, me.pw_name)
            # Each daemon was its own process, all running as the user.
            pids = {m.group(1): m.group(2) for m in re.finditer(
                rf"postfix/(pickup|cleanup|qmgr|local)\[(\d+)\]: {qid}:", inst.log())}
            assert len(set(pids.values())) == 4, pids


def test_ordinary_user_mbox_in_spool(tmp):
    with local_users(tmp, 1) as (me,):
        spool = tmp / "spool"
        spool.mkdir()
        os.chown(spool, me.pw_uid, me.pw_gid)
        with user_instance(tmp, me, mail_spool_directory=str(spool)) as inst:
            inst.start()
            sendmail(inst, me.pw_name)
            sendmail(inst, me.pw_name, body=b"Subject: q\n\nFrom here\nhi\n")
            inst.wait_for_log(r"status=sent \(delivered to mailbox\)", timeout=30, count=2)
            msgs = messages_in_mbox(spool / me.pw_name)
            assert len(msgs) == 2
            for m in msgs:
                assert m.endswith(b"\n\n")          # mbox: a blank line ends each message
            assert_delivered(msgs[0], me.pw_name, me.pw_name)
            assert b"\n>From here\n" in msgs[1]       # From_ quoting


# -- root: daemons as mail_owner, delivery as the recipient -------------------------

def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def test_root_instance_delivers_as_the_recipient(tmp):
    with local_users(tmp, 2) as (alice, bob):
        spool = tmp / "spool"
        spool.mkdir()
        os.chmod(spool, 0o755)        # root-owned, like /var/mail without group write
        with Instance(tmp / "inst", main_cf={
                "home_mailbox": "Maildir/", "max_idle": "60s"}) as inst:
            inst.start()
            sendmail(inst, alice.pw_name)
            qid = delivery_log(inst, alice.pw_name)
            assert_postfix_story(inst, qid, "root", alice.pw_name)
            (path,) = (Path(alice.pw_dir) / "Maildir" / "new").iterdir()
            st = path.stat()
            assert (st.st_uid, st.st_gid) == (alice.pw_uid, alice.pw_gid)
            assert_delivered(path.read_bytes(), "root", alice.pw_name)
            # The daemons that handled it run as mail_owner; local is root
            # (master.cf unpriv n) and writes only from a child that is the
            # recipient: the file's owner above shows it.
            postfix_uid = pwd.getpwnam("postfix").pw_uid
            by_name = {}
            for pid, cmd in inst.children():
                by_name.setdefault(cmd.split()[0].rsplit("/", 1)[-1], []).append(pid)
            for name in ("pickup", "cleanup", "qmgr", "trivial-rewrite"):
                for pid in by_name.get(name, []):
                    assert _uid_of(pid) == postfix_uid, (name, pid)
            assert by_name.get("qmgr") and by_name.get("pickup"), by_name

            # mbox in a root-owned spool: created for bob, owned by bob.
            inst.set_main_cf(home_mailbox="", mail_spool_directory=str(spool))
            inst.reload()
            time.sleep(0.5)
            sendmail(inst, bob.pw_name)
            delivery_log(inst, bob.pw_name, what="delivered to mailbox")
            box = spool / bob.pw_name
            st = box.stat()
            assert (st.st_uid, st.st_mode & 0o777) == (bob.pw_uid, 0o600)
            (msg,) = messages_in_mbox(box)
            assert_delivered(msg, "root", bob.pw_name)


# -- a mailbox that cannot be written keeps the mail queued -------------------

def _flush(inst: Instance) -> None:
    """What `postqueue -f` does: ask qmgr to retry all of deferred/."""
    trigger(str(inst.queue_dir / "public" / "qmgr"), b"A")


def _queue(inst: Instance) -> Queue:
    return Queue(str(inst.queue_dir), hash_queue_depth=1)      # Postfix's default depth


def _queue_files(inst: Instance, name: str) -> list[Path]:
    return [p for p in (inst.queue_dir / name).rglob("*") if p.is_file()]


def test_unwritable_maildir_defers_then_delivers_when_fixed(tmp):
    with local_users(tmp, 1) as (me,):
        md = Path(me.pw_dir) / "Maildir"
        for sub in ("tmp", "new", "cur"):
            (md / sub).mkdir(parents=True)
        for p in (md, md / "tmp", md / "new", md / "cur"):
            os.chown(p, me.pw_uid, me.pw_gid)
        os.chmod(md / "tmp", 0o500)       # the user itself cannot create files
        with user_instance(tmp, me, home_mailbox="Maildir/") as inst:
            inst.start()
            sendmail(inst, me.pw_name)
            qid = delivery_log(inst, me.pw_name, status="deferred",
                               what="maildir delivery failed: create maildir file")
            line = inst.wait_for_log(rf"{qid}: to=.*status=deferred")[0]
            assert "dsn=4.2.0" in line and "Permission denied" in line
            inst.wait_until(lambda: _queue_files(inst, "deferred"), what="deferred/ file")
            (deferred,) = _queue_files(inst, "deferred")
            assert deferred.name == qid
            reason = Path(_queue(inst).log_path("defer", qid)).read_text()
            assert "status=4.2.0" in reason and "Permission denied" in reason
            assert f"{qid}: removed" not in inst.log()

            os.chmod(md / "tmp", 0o700)
            _flush(inst)
            inst.wait_for_log(rf"{qid}: to=.*status=sent \(delivered to maildir\)", timeout=30)
            inst.wait_for_log(rf"{qid}: removed")
            assert len(messages_in_maildir(md)) == 1


def test_mailbox_size_limit_defers_422(tmp):
    with local_users(tmp, 1) as (me,):
        spool = tmp / "spool"
        spool.mkdir()
        os.chown(spool, me.pw_uid, me.pw_gid)
        box = spool / me.pw_name
        box.write_bytes(b"From old  Mon Nov 22 10:00:00 2021\n" + b"x" * 1900 + b"\n\n")
        os.chown(box, me.pw_uid, me.pw_gid)
        before = box.read_bytes()
        with user_instance(tmp, me, mail_spool_directory=str(spool),
                           mailbox_size_limit="2000", message_size_limit="1500") as inst:
            inst.start()
            sendmail(inst, me.pw_name)
            qid = delivery_log(inst, me.pw_name, status="deferred",
                               what=f"cannot update mailbox {box} for user {me.pw_name}.")
            line = inst.wait_for_log(rf"{qid}: to=.*status=deferred")[0]
            assert "dsn=4.2.2" in line and "File too large" in line
            inst.wait_until(lambda: _queue_files(inst, "deferred"), what="deferred/ file")
            assert box.read_bytes() == before          # truncated back, nothing half-written


# -- corrupt queue files ---------------------------------------------------------

def test_garbage_in_incoming_and_deferred_goes_to_corrupt(tmp):
    with local_users(tmp, 1) as (me,):
        with user_instance(tmp, me, home_mailbox="Maildir/") as inst:
            inst.start()
            now = time.time()
            bad_in = short_queue_id(int(now * 1e6) % 1_000_000, 0x1234)
            bad_def = short_queue_id(int(now * 1e6 + 7) % 1_000_000, 0x5678)
            paths = [inst.queue_dir / "incoming" / bad_in]
            paths.append(Path(_queue(inst).path("deferred", bad_def)))
            hashed = paths[-1].parent
            hashed.mkdir(exist_ok=True)
            os.chown(hashed, me.pw_uid, me.pw_gid)
            for p, junk in zip(paths, (b"\x00garbage\xff" * 50, b"not a queue file\n")):
                p.write_bytes(junk)
                os.chown(p, me.pw_uid, me.pw_gid)
                os.chmod(p, 0o700)                 # "ready", as a committed file
                os.utime(p, (now - 3600, now - 3600))
            sendmail(inst, me.pw_name)             # wakes qmgr: incoming/ scanned
            _flush(inst)                           # deferred/ too
            delivery_log(inst, me.pw_name)
            for qid in (bad_in, bad_def):
                inst.wait_for_log(rf"postfix/qmgr\[\d+\]: warning: {qid}: .*; "
                                  r"moving to corrupt queue", timeout=20)
                assert (inst.queue_dir / "corrupt" / qid).exists()
            # the queue keeps moving after the corrupt files
            sendmail(inst, me.pw_name)
            inst.wait_for_log(r"status=sent \(delivered to maildir\)", count=2, timeout=30)
            assert len(messages_in_maildir(Path(me.pw_dir) / "Maildir")) == 2
            inst.wait_until(lambda: not _queue_files(inst, "incoming")
                            and not _queue_files(inst, "active"), what="an empty queue")


# -- luser_relay: re-submission through cleanup ----------------------------------

def test_luser_relay_resubmits_to_the_catch_all(tmp):
    with local_users(tmp, 1) as (me,):
        with user_instance(tmp, me, home_mailbox="Maildir/",
                           luser_relay=f"{me.pw_name}+$user@{HOST}",
                           recipient_delimiter="+") as inst:
            inst.start()
            sendmail(inst, "nosuchuser")
            (line,) = inst.wait_for_log(
                rf"postfix/local\[\d+\]: ({QID}): to=<nosuchuser@{HOST}>, orig_to=<nosuchuser>, "
                rf"relay=local, .*dsn=2\.0\.0, status=sent \(forwarded as ({QID})\)", timeout=30)
            first, second = re.search(r": (\w+): to=.*forwarded as (\w+)\)", line).groups()
            assert first != second
            inst.wait_for_log(rf"{second}: to=<{me.pw_name}\+nosuchuser@{HOST}>, "
                              rf"orig_to=<nosuchuser>, .*status=sent \(delivered to maildir\)",
                              timeout=30)
            inst.wait_for_log(rf"{first}: removed")
            (msg,) = messages_in_maildir(Path(me.pw_dir) / "Maildir")
            head = msg.split(b"\n\n", 1)[0].split(b"\n")
            # newest Delivered-To first: the catch-all, then the unknown user
            delivered = [ln for ln in head if ln.startswith(b"Delivered-To: ")]
            assert delivered == [f"Delivered-To: {me.pw_name}+nosuchuser@{HOST}".encode(),
                                 f"Delivered-To: nosuchuser@{HOST}".encode()]
            assert msg.split(b"\n\n", 1)[1].startswith(b"hi\n")
