"""bounce(8) on its skeleton, with real cleanup and trivial-rewrite.

A prepared queue file and logfile -> a request -> a notice queued in
incoming/ by cleanup, read back with the queue reader and parsed with
Python's email package.
"""

import email
import email.policy
import os
import textwrap

import pytest

from pfy.dsn.logfile import NOTIFY_NEVER, NOTIFY_SUCCESS, RET_HDRS, StatusRecord, append_records
from pfy.ipc.bounce_client import (FLAG_USR_VRFY, BounceClient, NoticeRequest,
                                   append_logfile)
from pfy.queue import Queue
from pfy.server.testing import start_daemon, unix_listener

T = 1700000000


def make_site(root, extra=""):
    """Config and queue for one instance of rewrite + cleanup + bounce/defer/trace."""
    for d in ("private", "public"):
        (root / d).mkdir(exist_ok=True)
    (root / "main.cf").write_text(textwrap.dedent(f"""\
        queue_directory = {root}
        myhostname = host.example.com
        mydomain = example.com
        myorigin = $myhostname
        mydestination = $myhostname, localhost
        inet_interfaces = 127.0.0.1
        maillog_file = {root}/maillog
        """) + extra)
    Queue(os.fspath(root)).make_dirs()


class Site:
    def __init__(self, root, extra=""):
        make_site(root, extra)
        self.root = root
        self.queue = Queue(os.fspath(root))
        self.procs = []
        socks = [("trivial-rewrite", "private/rewrite", []),
                 ("cleanup", "public/cleanup", [])]
        socks += [("bounce", f"private/{n}", ["-n", n]) for n in ("bounce", "defer", "trace")]
        for cmd, path, extra_args in socks:
            lsock, _ = unix_listener(root / path)
            self.procs.append(start_daemon(cmd, config_dir=root, listen=[lsock],
                                           args=["-t", "unix", *extra_args]))
            lsock.close()
        self.client = BounceClient(*(os.fspath(root / "private" / n)
                                     for n in ("bounce", "defer", "trace")), timeout=30)

    def close(self):
        for p in reversed(self.procs):
            p.master_exit()
            p.wait(10)

    def message(self, sender="alice@example.com", rcpts=("bob@example.net",),
                body=(b"Subject: test message", b"Message-Id: <m1@example.com>", b"",
                      b"hello", b"world"), queue_name="active", ret=0, envid="", notify=0):
        with self.queue.create(queue_name) as w:
            w.time(T)
            w.sender(sender)
            if ret or envid:
                w.dsn(ret=ret, envid=envid)
            offs = [w.recipient(r, orig_rcpt=r, dsn_notify=notify) for r in rcpts]
            w.begin_content()
            for line in body:
                w.content_line(line)
            w.end_content()
            qid = w.commit()
        return qid, offs

    def notices(self):
        """Every message cleanup queued: (envelope, parsed message)."""
        out = []
        for entry in self.queue.ready_files("incoming"):
            with self.queue.open(entry) as r:
                env = r.read_envelope()
                raw = b"\n".join(r.content_lines()) + b"\n"
            out.append((env, email.message_from_bytes(raw, policy=email.policy.compat32)))
        return out

    def log(self):
        p = self.root / "maillog"
        return p.read_text() if p.exists() else ""


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


def bounce_records(qid_offsets, rcpts=("bob@example.net",), notify=0):
    return [StatusRecord(r, "5.1.1", "failed", "host mx.example.net[192.0.2.1] said: 550 5.1.1 "
                         "no such user (in reply to RCPT TO command)", orig_rcpt=r,
                         offset=o, notify=notify, diag_type="smtp",
                         diag_text="550 5.1.1 no such user", mta_type="dns",
                         mta_name="mx.example.net")
            for r, o in zip(rcpts, qid_offsets)]


def parts(msg):
    """The report's own parts (walk() would also list the delivery-status blocks)."""
    return [msg.get_content_type()] + [p.get_content_type() for p in msg.get_payload()]


def test_flush_queues_a_non_delivery_report(site):
    qid, offs = site.message()
    append_logfile(site.queue, "bounce", qid, bounce_records(offs))
    assert site.client.flush(NoticeRequest("active", qid, "alice@example.com"))
    assert not os.path.exists(site.queue.log_path("bounce", qid))     # flushed
    [(env, msg)] = site.notices()
    assert env.sender == ""                                     # never bounces back
    assert [r.address for r in env.recipients] == ["alice@example.com"]
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@host.example.com>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert parts(msg) == ["multipart/report", "text/plain", "message/delivery-status",
                          "message/rfc822"]
    text = msg.get_payload(0).get_payload()
    assert "This is the mail system at host host.example.com." in text
    assert "<bob@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1 no" in text
    ds = msg.get_payload(1).get_payload()
    assert ds[0]["Reporting-MTA"] == "dns; host.example.com"
    assert ds[0]["X-Postfix-Queue-ID"] == qid
    assert ds[0]["X-Postfix-Sender"] == "rfc822; alice@example.com"
    assert ds[1]["Final-Recipient"] == "rfc822; bob@example.net"
    assert ds[1]["Action"] == "failed" and ds[1]["Status"] == "5.1.1"
    assert ds[1]["Remote-MTA"] == "dns; mx.example.net"
    assert ds[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    orig = msg.get_payload(2).get_payload(0)
    assert orig["Subject"] == "test message" and orig.get_payload() == "hello\nworld\n"
    new_id = site.queue.ready_files("incoming").__next__().queue_id
    assert f"{qid}: sender non-delivery notification: {new_id}" in site.log()


def test_ret_hdrs_and_size_limit_send_headers_only(tmp_path):
    s = Site(tmp_path, "bounce_size_limit = 100\n")
    try:
        qid, offs = s.message(body=[b"Subject: big", b""] + [b"x" * 60] * 5)
        append_logfile(s.queue, "bounce", qid, bounce_records(offs))
        assert s.client.flush(NoticeRequest("active", qid, "alice@example.com"))
        qid2, offs2 = s.message(ret=RET_HDRS)
        append_logfile(s.queue, "bounce", qid2, bounce_records(offs2))
        assert s.client.flush(NoticeRequest("active", qid2, "alice@example.com", ret=RET_HDRS))
        for _, msg in s.notices():
            last = msg.get_payload(2)
            assert last.get_content_type() == "text/rfc822-headers"
            assert last["Content-Description"] == "Undelivered Message Headers"
            assert "xxxx" not in last.get_payload() and "hello" not in last.get_payload()
            assert "Subject: " in last.get_payload()
    finally:
        s.close()


def test_bounce_of_a_bounce_goes_to_postmaster_once(tmp_path):
    s = Site(tmp_path, "notify_classes = 2bounce\n")
    try:
        qid, offs = s.message(sender="")
        append_logfile(s.queue, "bounce", qid, bounce_records(offs))
        assert s.client.flush(NoticeRequest("active", qid, ""))
        [(env, msg)] = s.notices()
        assert env.sender == "double-bounce@host.example.com"
        assert [r.address for r in env.recipients] == ["postmaster@host.example.com"]
        assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
        assert msg["Auto-Submitted"] == "auto-generated"
        assert "postmaster non-delivery notification" in s.log()
        # ... and when that double bounce fails, it is dropped: no triple bounce.
        for e in list(s.queue.ready_files("incoming")):
            s.queue.remove(e)
        qid2, offs2 = s.message(sender="double-bounce@host.example.com",
                                rcpts=("postmaster@host.example.com",))
        append_logfile(s.queue, "bounce", qid2, bounce_records(offs2, ("postmaster@host.example.com",)))
        assert s.client.flush(NoticeRequest("active", qid2, "double-bounce@host.example.com"))
        assert s.notices() == []
        assert f"{qid2}: undeliverable postmaster notification discarded" in s.log()
        assert not os.path.exists(s.queue.log_path("bounce", qid2))
    finally:
        s.close()


def test_null_sender_bounce_dropped_by_default(site):
    # Postfix's default notify_classes (resource, software) has no 2bounce.
    qid, offs = site.message(sender="")
    append_logfile(site.queue, "bounce", qid, bounce_records(offs))
    assert site.client.flush(NoticeRequest("active", qid, ""))
    assert site.notices() == []
    assert not os.path.exists(site.queue.log_path("bounce", qid))


def test_notify_never_sends_nothing(site):
    qid, offs = site.message(notify=NOTIFY_NEVER)
    append_logfile(site.queue, "bounce", qid, bounce_records(offs, notify=NOTIFY_NEVER))
    assert site.client.flush(NoticeRequest("active", qid, "alice@example.com"))
    assert site.notices() == []
    assert not os.path.exists(site.queue.log_path("bounce", qid))


def test_postmaster_copy_per_notify_classes(tmp_path):
    s = Site(tmp_path, "notify_classes = bounce\nbounce_notice_recipient = boss\n")
    try:
        qid, offs = s.message()
        append_logfile(s.queue, "bounce", qid, bounce_records(offs))
        assert s.client.flush(NoticeRequest("active", qid, "alice@example.com"))
        got = {tuple(r.address for r in env.recipients): msg for env, msg in s.notices()}
        pm = got[("boss@host.example.com",)]
        assert pm["Subject"] == "Postmaster Copy: Undelivered Mail"
        assert parts(pm)[-1] == "text/rfc822-headers"
        assert "I'm sorry" not in pm.get_payload(0).get_payload()    # no boilerplate
        assert got[("alice@example.com",)]["Subject"] == "Undelivered Mail Returned to Sender"
    finally:
        s.close()


def test_delay_warning_keeps_the_defer_log(tmp_path):
    s = Site(tmp_path, "delay_warning_time = 4h\n")
    try:
        qid, offs = s.message(queue_name="deferred")
        recs = [StatusRecord("bob@example.net", "4.4.1", "delayed",
                             "connect to mx.example.net[192.0.2.1]:25: Connection refused",
                             offset=offs[0])]
        append_logfile(s.queue, "defer", qid, recs)
        assert s.client.warn(NoticeRequest("deferred", qid, "alice@example.com"))
        assert os.path.exists(s.queue.log_path("defer", qid))
        [(_, msg)] = s.notices()
        assert msg["Subject"] == "Delayed Mail (still being retried)"
        text = msg.get_payload(0).get_payload()
        assert "delivered for more than 4 hour(s)" in text
        assert "retried until it is 5 day(s) old" in text
        ds = msg.get_payload(1).get_payload()
        assert ds[1]["Action"] == "delayed" and ds[1]["Will-Retry-Until"]
        assert msg.get_payload(2).get_content_type() == "text/rfc822-headers"
        assert "sender delay notification" in s.log()
        # The message expired: the defer log becomes a non-delivery report.
        assert s.client.defer_flush(NoticeRequest("deferred", qid, "alice@example.com"))
        assert not os.path.exists(s.queue.log_path("defer", qid))
        subjects = sorted(m["Subject"] for _, m in s.notices())
        assert subjects == ["Delayed Mail (still being retried)",
                            "Undelivered Mail Returned to Sender"]
    finally:
        s.close()


def test_success_notice_for_notify_success(site):
    qid, offs = site.message(notify=NOTIFY_SUCCESS, envid="ENV-42")
    append_logfile(site.queue, "trace", qid, [
        StatusRecord("bob@example.net", "2.0.0", "delivered", "delivered to mailbox",
                     offset=offs[0], notify=NOTIFY_SUCCESS)])
    assert site.client.trace_flush(NoticeRequest("active", qid, "alice@example.com",
                                                 envid="ENV-42"))
    [(env, msg)] = site.notices()
    assert msg["Subject"] == "Successful Mail Delivery Report"
    ds = msg.get_payload(1).get_payload()
    assert ds[0]["Original-Envelope-Id"] == "ENV-42"
    assert ds[1]["Action"] == "delivered" and ds[1]["Status"] == "2.0.0"
    assert msg.get_payload(2)["Content-Description"] == "Message Headers"
    assert "sender delivery status notification" in site.log()
    assert not os.path.exists(site.queue.log_path("trace", qid))


def test_verify_report_for_sendmail_bv(site):
    qid, offs = site.message(body=[b"Subject: probe", b""])
    site.client.append("trace", qid, [StatusRecord("bob@example.net", "2.0.0", "deliverable",
                                                   "delivers to mailbox", offset=offs[0])])
    assert os.path.exists(site.queue.log_path("trace", qid))
    assert site.client.trace_flush(NoticeRequest("active", qid, "alice@example.com",
                                                 flags=FLAG_USR_VRFY))
    [(_, msg)] = site.notices()
    assert msg["Subject"] == "Mail Delivery Status Report"
    assert "Enclosed is the mail delivery report that you requested." in \
        msg.get_payload(0).get_payload()
    assert msg.get_payload(1).get_payload()[1]["Action"] == "deliverable"


def test_append_through_the_daemon_matches_direct_writes(site):
    qid, offs = site.message()
    rec = bounce_records(offs)
    assert site.client.append("defer", qid, rec)
    direct = site.root / "direct"
    append_records(os.fspath(direct), rec)
    assert open(site.queue.log_path("defer", qid), "rb").read() == direct.read_bytes()


def test_bad_queue_id_is_refused(site):
    assert not site.client.append("bounce", "../../etc/x", bounce_records([1]))
    assert not site.client.flush(NoticeRequest("active", "../x", "a@example.com"))


def test_missing_queue_file_still_reports(site):
    qid, offs = site.message()
    append_logfile(site.queue, "bounce", qid, bounce_records(offs))
    site.queue.remove(site.queue.entry("active", qid))
    assert site.client.flush(NoticeRequest("active", qid, "alice@example.com"))
    [entry] = site.queue.ready_files("incoming")
    with site.queue.open(entry) as r:
        lines = list(r.content_lines())
    # As Postfix: a placeholder where the message was, and (unlike
    # Postfix) the closing delimiter still ends the multipart.
    assert b"\t--- Undelivered message unavailable ---" in lines
    assert lines[-1].startswith(b"--") and lines[-1].endswith(b"--")


def test_cleanup_down_means_try_again(site):
    qid, offs = site.message()
    append_logfile(site.queue, "bounce", qid, bounce_records(offs))
    os.unlink(site.root / "public" / "cleanup")
    assert not site.client.flush(NoticeRequest("active", qid, "alice@example.com"))
    assert os.path.exists(site.queue.log_path("bounce", qid))     # kept for the retry
