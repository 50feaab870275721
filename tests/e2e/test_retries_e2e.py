"""Issue 4 part 2 end to end: the deferred queue, exponential backoff,
recovery, expiry, delay warnings, the hold queue and postqueue -f / -i.

Backoff times are shrunk to seconds (minimal_backoff_time=2s,
maximal_backoff_time=4s, queue_run_delay=1s) so the schedule shows in a
test's time; the instance runs as a throw-away user with Maildir delivery.
"""

from __future__ import annotations

import contextlib
import email
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from instance import Instance, free_port
from localusers import local_users, messages_in_maildir, traversable_tmp

from pfy.queue import Queue

HOST = "localhost.localdomain"
SMTP_SINK = "/usr/sbin/smtp-sink"


@pytest.fixture
def tmp():
    with traversable_tmp() as path:
        yield path


def user_instance(tmp: Path, pw, transports: str, **main_cf) -> Instance:
    root = tmp / "inst"
    root.mkdir()
    os.chown(root, pw.pw_uid, pw.pw_gid)
    tfile = tmp / "transport"
    tfile.write_text(transports)
    cf = {"home_mailbox": "Maildir/", "alias_maps": "",
          "transport_maps": f"texthash:{tfile}",
          "minimal_backoff_time": "2s", "maximal_backoff_time": "4s",
          "queue_run_delay": "1s", "smtp_connect_timeout": "5s"}
    cf.update(main_cf)
    return Instance(root, main_cf=cf, user=pw.pw_name)


@contextlib.contextmanager
def smtp_sink(port: int):
    if not os.path.exists(SMTP_SINK):
        pytest.skip("Postfix's smtp-sink is not installed")
    p = subprocess.Popen([SMTP_SINK, "-u", "nobody", f"127.0.0.1:{port}", "10"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield p
    finally:
        p.kill()
        p.wait(5)


def sendmail(inst: Instance, *args: str, body: bytes = b"Subject: retry me\n\nhello\n") -> None:
    p = inst.command("sendmail", *args, input=body)
    assert p.returncode == 0, p.stderr.decode()


def queued(inst: Instance, name: str) -> list[str]:
    return sorted(e.queue_id for e in Queue(str(inst.queue_dir)).ready_files(name))


def qid_of(inst: Instance, rcpt: str) -> str:
    (line,) = inst.wait_for_log(rf"postfix/\w+\[\d+\]: \w+: to=<{re.escape(rcpt)}>", timeout=30)
    return re.search(r"\]: (\w+): to=", line).group(1)


def test_temporary_failure_retries_on_schedule_then_delivers(tmp):
    port = free_port()
    with local_users(tmp, 1, prefix="pfyr") as (me,):
        with user_instance(tmp, me, f"later.example smtp:[127.0.0.1]:{port}\n") as inst:
            inst.start()
            sendmail(inst, "-f", f"{me.pw_name}@{HOST}", "u@later.example")
            qid = qid_of(inst, "u@later.example")
            inst.wait_for_log(rf"{qid}: to=<u@later\.example>, relay=none, .*status=deferred",
                              timeout=30)
            inst.wait_until(lambda: queued(inst, "deferred") == [qid], timeout=10,
                            what="deferred file")
            # the retry time is the file's mtime: minimal_backoff_time ahead
            q = Queue(str(inst.queue_dir))
            ahead = os.stat(q.path("deferred", qid)).st_mtime - time.time()
            assert 0 < ahead <= 4.5, ahead
            # mailq shows the reason from defer/ID
            listing = inst.command("mailq").stdout.decode()
            assert qid in listing and "later.example" in listing
            # a second attempt comes on schedule, still refused
            inst.wait_for_log(rf"{qid}: to=<u@later\.example>, .*status=deferred",
                              timeout=20, count=2)
            with smtp_sink(port):
                inst.wait_for_log(rf"{qid}: to=<u@later\.example>, relay=127\.0\.0\.1"
                                  rf"\[127\.0\.0\.1\]:{port}, .*status=sent", timeout=30)
                inst.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: removed", timeout=10)
            assert queued(inst, "deferred") == []
            assert messages_in_maildir(Path(me.pw_dir) / "Maildir") == []   # no notice


def test_expired_message_is_returned_to_sender(tmp):
    with local_users(tmp, 1, prefix="pfyr") as (me,):
        with user_instance(tmp, me, "never.example retry:4.4.1 try again later\n",
                           maximal_queue_lifetime="5s") as inst:
            inst.start()
            sender = f"{me.pw_name}@{HOST}"
            sendmail(inst, "-f", sender, "u@never.example")
            qid = qid_of(inst, "u@never.example")
            inst.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: from=<{sender}>, "
                              r"status=expired, returned to sender", timeout=40)
            inst.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: removed", timeout=15)
            maildir = Path(me.pw_dir) / "Maildir"
            inst.wait_until(lambda: messages_in_maildir(maildir), timeout=20, what="notice")
            (raw,) = messages_in_maildir(maildir)
            msg = email.message_from_bytes(raw)
            assert msg["Subject"] == "Undelivered Mail Returned to Sender"
            status = msg.get_payload()[1].as_string()
            assert "Action: failed" in status and "Status: 4.4.1" in status
            assert "try again later" in status
            assert queued(inst, "deferred") == []


def test_delay_warning_is_sent_once(tmp):
    with local_users(tmp, 1, prefix="pfyr") as (me,):
        with user_instance(tmp, me, "slow.example retry:4.4.1 still trying\n",
                           delay_warning_time="2s") as inst:
            inst.start()
            sender = f"{me.pw_name}@{HOST}"
            sendmail(inst, "-f", sender, "u@slow.example")
            qid = qid_of(inst, "u@slow.example")
            q = Queue(str(inst.queue_dir))
            inst.wait_until(lambda: queued(inst, "deferred") == [qid], timeout=10,
                            what="deferred file")
            with q.open(q.entry("deferred", qid)) as r:
                assert r.read_envelope().warn_offset > 0      # cleanup's W record
            inst.wait_for_log(rf"postfix/bounce\[\d+\]: {qid}: sender delay notification",
                              timeout=30)
            maildir = Path(me.pw_dir) / "Maildir"
            inst.wait_until(lambda: messages_in_maildir(maildir), timeout=20, what="warning")
            inst.wait_for_log(rf"{qid}: to=<u@slow\.example>, .*status=deferred",
                              timeout=20, count=4)
            (raw,) = messages_in_maildir(maildir)
            msg = email.message_from_bytes(raw)
            assert msg["Subject"] == "Delayed Mail (still being retried)"
            assert "Action: delayed" in msg.get_payload()[1].as_string()
            assert len(re.findall(rf"{qid}: sender delay notification", inst.log())) == 1


def test_hold_queue_and_postqueue_flush(tmp):
    with local_users(tmp, 1, prefix="pfyr") as (me,):
        tfile = tmp / "transport"
        with user_instance(tmp, me, "fix.example retry:4.4.1 not yet\n",
                           minimal_backoff_time="300s", maximal_backoff_time="600s") as inst:
            inst.start()
            sender = f"{me.pw_name}@{HOST}"
            sendmail(inst, "-f", sender, "a@fix.example")
            sendmail(inst, "-f", sender, "b@fix.example")
            a, b = qid_of(inst, "a@fix.example"), qid_of(inst, "b@fix.example")
            inst.wait_until(lambda: queued(inst, "deferred") == sorted([a, b]), timeout=10,
                            what="both deferred")
            p = inst.command("postsuper", "-h", b)
            assert p.returncode == 0, p.stderr.decode()
            assert queued(inst, "hold") == [b]
            # recovery: the destination now works (discard stands in for it)
            tfile.write_text("fix.example discard:fixed\n")
            inst.postfix("reload")
            time.sleep(2)
            # backoff is 300 s: nothing happens until postqueue -i asks
            assert queued(inst, "deferred") == [a]
            p = inst.command("postqueue", "-i", a)
            assert p.returncode == 0, p.stderr.decode()
            inst.wait_for_log(rf"{a}: to=<a@fix\.example>, .*status=sent \(fixed\)", timeout=20)
            # a held message is never scheduled, not even by postqueue -f
            p = inst.command("postqueue", "-f")
            assert p.returncode == 0, p.stderr.decode()
            time.sleep(2)
            assert queued(inst, "hold") == [b]
            assert not re.search(rf"{b}: to=<b@fix\.example>, .*status=sent", inst.log())
            p = inst.command("postsuper", "-H", b)
            assert p.returncode == 0, p.stderr.decode()
            inst.command("postqueue", "-f")
            inst.wait_for_log(rf"{b}: to=<b@fix\.example>, .*status=sent \(fixed\)", timeout=20)
            inst.wait_for_log(rf"postfix/qmgr\[\d+\]: {b}: removed", timeout=10)
