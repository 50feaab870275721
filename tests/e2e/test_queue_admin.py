"""Queue administration on a running instance: mailq/postqueue through the
showq service under master, postsuper and postcat on the same messages."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from instance import Instance  # noqa: E402

from pfy.queue import Queue  # noqa: E402


def hold_message(inst, sender, rcpt):
    """A message parked in hold/ (no daemon touches it), as cleanup's HOLD."""
    q = Queue(str(inst.queue_dir))
    with q.create("hold") as w:
        w.time()
        w.sender(sender)
        w.recipient(rcpt)
        w.begin_content()
        w.content_line(b"Subject: held")
        w.content_line(b"")
        w.content_line(b"body")
        w.end_content()
        qid = w.commit()
    if os.geteuid() == 0:
        st = os.stat(inst.queue_dir / "hold")
        os.chown(w.path, st.st_uid, st.st_gid)
    return qid


def test_mailq_postqueue_postsuper_postcat(tmp_path):
    with Instance(tmp_path) as inst:
        inst.start()
        p = inst.command("postqueue", "-p")
        assert p.returncode == 0, p.stderr
        assert p.stdout == b"Mail queue is empty\n"
        assert b"accessing queue directly" not in p.stderr     # showq answered

        qid = hold_message(inst, "alice@example.com", "bob@example.net")
        p = inst.command("mailq")
        assert p.returncode == 0, p.stderr
        lines = p.stdout.decode().splitlines()
        assert lines[0].startswith("-Queue ID-  --Size--")
        assert lines[1].startswith(f"{qid}!") and lines[1].endswith("alice@example.com")
        assert lines[2].strip() == "bob@example.net"
        assert lines[-1] == "-- 0 Kbytes in 1 Request."

        p = inst.command("postqueue", "-j")
        obj = json.loads(p.stdout)
        assert obj["queue_name"] == "hold" and obj["queue_id"] == qid
        assert obj["recipients"] == [{"address": "bob@example.net"}]

        p = inst.command("postcat", "-q", qid)
        assert b"sender: alice@example.com" in p.stdout and b"Subject: held" in p.stdout

        p = inst.command("postsuper", "-d", qid)
        assert p.returncode == 0, p.stderr
        assert p.stderr.decode().splitlines() == [
            f"postsuper: {qid}: removed", "postsuper: Deleted: 1 message"]
        assert inst.command("postqueue", "-p").stdout == b"Mail queue is empty\n"
        inst.wait_for_log(rf"postfix/postsuper\[\d+\]: {qid}: removed")


def test_postqueue_when_the_system_is_down(tmp_path):
    with Instance(tmp_path) as inst:
        Queue(str(inst.queue_dir)).make_dirs()
        p = inst.command("postqueue", "-p")
        # The caller owns (or is root over) the queue: direct access.
        assert p.returncode == 0, p.stderr
        assert p.stdout == b"Mail queue is empty\n"
        assert b"Mail system is down -- accessing queue directly" in p.stderr
        p = inst.command("postqueue", "-f")
        assert p.returncode == 69
        assert p.stderr == b"postqueue: fatal: Cannot flush mail queue - mail system is down\n"
