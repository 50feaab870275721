"""bounce(8) under master: the shipped master.cf's bounce/defer/trace
services (chrooted, as mail_owner when started by root) turn a logfile
into a notice that cleanup queues and qmgr picks up.

The qmgr side (calling flush when a recipient bounces) is qmgr's hook;
here the test plays qmgr: a held queue file, its bounce/ID, a flush.
"""

from __future__ import annotations

import os

from instance import Instance

from pfy.dsn.logfile import StatusRecord
from pfy.ipc.bounce_client import BounceClient, NoticeRequest, append_logfile
from pfy.queue import Queue


def _prepare(queue_dir: str):
    q = Queue(queue_dir)
    with q.create("hold") as w:
        w.time()
        w.sender("alice@example.com")
        off = w.recipient("bob@example.net", orig_rcpt="bob@example.net")
        w.begin_content()
        for line in (b"Subject: e2e", b"", b"body"):
            w.content_line(line)
        w.end_content()
        qid = w.commit()
    append_logfile(q, "bounce", qid, [StatusRecord(
        "bob@example.net", "5.1.1", "failed", "no such user", offset=off)])
    # The daemons run as mail_owner: give them what cleanup would have written.
    st = os.stat(os.path.join(queue_dir, "hold"))
    for p in (q.path("hold", qid), q.log_path("bounce", qid)):
        os.chown(p, st.st_uid, st.st_gid)
    return q, qid


def test_flush_under_master_queues_a_notice(tmp_path):
    with Instance(tmp_path, main_cf={"myhostname": "mx.example.com"}) as inst:
        inst.start()
        queue_dir = os.fspath(tmp_path / "queue")
        q, qid = _prepare(queue_dir)
        client = BounceClient(*(os.path.join(queue_dir, "private", n)
                                for n in ("bounce", "defer", "trace")), timeout=30)
        assert client.flush(NoticeRequest("hold", qid, "alice@example.com"))
        inst.wait_for_log(rf"postfix/bounce\[\d+\]: {qid}: sender non-delivery "
                          r"notification: [0-9A-F]+", timeout=15)
        # qmgr takes the notice: from the null sender, to the original sender.
        inst.wait_for_log(r"qmgr\[\d+\]: [0-9A-F]+: from=<>, size=\d+, nrcpt=1",
                          timeout=15)
        assert not os.path.exists(q.log_path("bounce", qid))
        # A client that is not a queue ID gets nothing done.
        assert not client.flush(NoticeRequest("hold", "../../x", "alice@example.com"))
