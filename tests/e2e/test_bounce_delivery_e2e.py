"""Issue 4 end to end: qmgr's notices, through the real processes.

A permanent failure comes back to the sender's Maildir as a multipart/report;
NOTIFY=SUCCESS produces a success notice; `sendmail -bv` a verification
report without delivering anything; a bounce that cannot be delivered goes
to postmaster (2bounce_notice_recipient) once and never loops.

The instance runs as a throw-away user (root creates it), with Maildir
delivery to that user; transport_maps send whole domains to error:
(bounce) and retry: (defer).
"""

from __future__ import annotations

import email
import os
import re
import smtplib
import time
from pathlib import Path

import pytest

from instance import Instance
from localusers import local_users, messages_in_maildir, traversable_tmp

HOST = "localhost.localdomain"


@pytest.fixture
def tmp():
    with traversable_tmp() as path:
        yield path


def user_instance(tmp: Path, pw, **main_cf) -> Instance:
    root = tmp / "inst"
    root.mkdir()
    os.chown(root, pw.pw_uid, pw.pw_gid)
    return Instance(root, main_cf=main_cf, user=pw.pw_name)


def transport_file(tmp: Path, pw, text: str) -> str:
    path = tmp / "transport"
    path.write_text(text)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    return f"texthash:{path}"


def wait_messages(maildir: Path, count: int, timeout: float = 40) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msgs = messages_in_maildir(maildir)
        if len(msgs) >= count:
            return msgs
        time.sleep(0.2)
    raise AssertionError(f"{len(messages_in_maildir(maildir))} messages in {maildir}, want {count}")


def sendmail(inst: Instance, *args: str, body: bytes = b"Subject: test\n\nhello\n") -> None:
    p = inst.command("sendmail", *args, input=body)
    assert p.returncode == 0, p.stderr.decode()


def report_parts(raw: bytes):
    msg = email.message_from_bytes(raw)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    return msg, [p.get_content_type() for p in msg.get_payload()]


def base_cf(tmp: Path, me, transports: str, **extra) -> dict[str, str]:
    cf = {"home_mailbox": "Maildir/", "alias_maps": "",
          "transport_maps": transport_file(tmp, me, transports),
          "minimal_backoff_time": "2s", "maximal_backoff_time": "4s",
          "queue_run_delay": "1s"}
    cf.update(extra)
    return cf


def test_permanent_failure_bounces_to_sender_maildir(tmp):
    with local_users(tmp, 1, prefix="pfyb") as (me,):
        cf = base_cf(tmp, me, "dead.example error:5.1.2 no such domain here\n")
        with user_instance(tmp, me, **cf) as inst:
            inst.start()
            sendmail(inst, "-f", f"{me.pw_name}@{HOST}", "someone@dead.example")
            (raw,) = wait_messages(Path(me.pw_dir) / "Maildir", 1)
            msg, parts = report_parts(raw)
            assert msg["Subject"] == "Undelivered Mail Returned to Sender"
            assert parts[:2] == ["text/plain", "message/delivery-status"]
            status = msg.get_payload()[1].as_string()
            assert "Final-Recipient: rfc822; someone@dead.example" in status
            assert "Status: 5.1.2" in status and "Action: failed" in status
            log = inst.log()
            assert re.search(r"postfix/error\[\d+\]: (\w+): to=<someone@dead\.example>, "
                             r"relay=none, .*status=bounced \(no such domain here\)", log)
            qid = re.search(r"postfix/bounce\[\d+\]: (\w+): sender non-delivery notification",
                            log).group(1)
            inst.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: removed", timeout=15)


def test_notify_success_sends_a_success_notice(tmp):
    with local_users(tmp, 1, prefix="pfyb") as (me,):
        cf = base_cf(tmp, me, "")
        with user_instance(tmp, me, **cf) as inst:
            inst.start()
            sender = f"{me.pw_name}@{HOST}"
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
                s.ehlo("client.example")
                if not s.has_extn("dsn"):
                    pytest.skip("smtpd does not announce DSN")
                s.sendmail(sender, [sender], b"Subject: track me\r\n\r\nhi\r\n",
                           rcpt_options=["NOTIFY=SUCCESS"])
            msgs = wait_messages(Path(me.pw_dir) / "Maildir", 2)
            notices = [m for m in msgs if b"multipart/report" in m]
            assert len(notices) == 1, msgs
            msg, _ = report_parts(notices[0])
            assert msg["Subject"] == "Successful Mail Delivery Report"
            assert "Action: delivered" in msg.get_payload()[1].as_string()


def test_sendmail_bv_reports_without_delivering(tmp):
    with local_users(tmp, 1, prefix="pfyb") as (me,):
        cf = base_cf(tmp, me, "dead.example error:5.1.2 no such domain here\n")
        with user_instance(tmp, me, **cf) as inst:
            inst.start()
            p = inst.command("sendmail", "-f", f"{me.pw_name}@{HOST}", "-bv",
                             me.pw_name, "x@dead.example", input=b"")
            assert p.returncode == 0, p.stderr.decode()
            (raw,) = wait_messages(Path(me.pw_dir) / "Maildir", 1)
            msg, _ = report_parts(raw)
            assert msg["Subject"] == "Mail Delivery Status Report"
            status = msg.get_payload()[1].as_string()
            assert "Action: deliverable" in status and "Action: undeliverable" in status
            log = inst.log()
            assert re.search(rf"to=<{me.pw_name}@{HOST}>.*status=deliverable", log)
            assert re.search(r"to=<x@dead\.example>.*status=undeliverable", log)
            # the probe delivered nothing: the one message is the report
            time.sleep(1)
            assert len(messages_in_maildir(Path(me.pw_dir) / "Maildir")) == 1
            assert "status=sent (delivered to maildir" in log  # the report only
            assert len(re.findall(r"status=sent \(delivered to maildir", log)) == 1


def test_undeliverable_bounce_goes_to_postmaster_once(tmp):
    with local_users(tmp, 1, prefix="pfyb") as (me,):
        cf = base_cf(tmp, me, "dead.example error:5.1.2 no such domain here\n",
                     notify_classes="bounce, 2bounce, resource, software",
                     **{"2bounce_notice_recipient": f"{me.pw_name}@{HOST}",
                        "bounce_notice_recipient": f"{me.pw_name}@{HOST}"})
        with user_instance(tmp, me, **cf) as inst:
            inst.start()
            # The sender is undeliverable too: its bounce fails, and the
            # double bounce goes to postmaster (our user), once.
            sendmail(inst, "-f", "ghost@dead.example", "someone@dead.example")
            inst.wait_for_log(r"postfix/bounce\[\d+\]: \w+: postmaster non-delivery "
                              r"notification", timeout=30, count=2)
            time.sleep(3)          # room for a loop to show itself
            msgs = wait_messages(Path(me.pw_dir) / "Maildir", 2)
            log = inst.log()
            assert len(msgs) == 2, [m[:300] for m in msgs]    # postmaster copy + double bounce
            assert len(re.findall(r"status=bounced", log)) == 2, log
            assert "to=<ghost@dead.example>" in log
            assert len(re.findall(r"postfix/bounce\[\d+\]: .*notification", log)) == 3, log
