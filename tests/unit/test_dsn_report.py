"""Composition of RFC 3464 reports (pfy.dsn.report): golden text, MIME
structure as Python's email package parses it, and the rules that pick
what goes in."""

import email
import email.policy
import time

import pytest

from pfy.dsn.logfile import (NOTIFY_DELAY, NOTIFY_FAILURE, NOTIFY_NEVER, NOTIFY_SUCCESS,
                             RET_HDRS, StatusRecord)
from pfy.dsn.report import (NOTIFY_OVERRIDE, OriginalMessage, ReportSettings, compose,
                            line_wrap, select_records)
from pfy.dsn.templates import DEFAULT_TEMPLATES, expand_text
from pfy.queue.record import REC_CONT, REC_NORM

NOW = 1700000100
SETTINGS = ReportSettings("host.example.com", date=lambda t: time.strftime(
    "%a, %d %b %Y %H:%M:%S +0000 (UTC)", time.gmtime(t)))


class Sink:
    def __init__(self):
        self.records = []

    def line(self, data):
        self.records.append((REC_NORM, data))

    def record(self, rtype, data):
        self.records.append((rtype, data))

    def text(self):
        out, cur = [], b""
        for rtype, data in self.records:
            cur += data
            if rtype == REC_NORM:
                out.append(cur)
                cur = b""
        return b"\n".join(out).decode() + "\n"


CONTENT = [(REC_NORM, b"Subject: hi"), (REC_NORM, b"Message-Id: <m1@example.com>"),
           (REC_CONT, b"X-Long: " + b"a" * 10), (REC_NORM, b"b" * 5), (REC_NORM, b""),
           (REC_NORM, b"body line")]
SMTP_FAIL = StatusRecord(
    "bob@example.net", "5.1.1", "failed",
    "host mx.example.net[192.0.2.1] said: 550 5.1.1 <bob@example.net>: Recipient address "
    "rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)",
    diag_type="smtp", diag_text="550 5.1.1 <bob@example.net>: Recipient address rejected: "
    "User unknown in virtual mailbox table", mta_type="dns", mta_name="mx.example.net")


def report(records=(SMTP_FAIL,), cls="failure", content=CONTENT, size=60, **kw):
    msg = OriginalMessage("4ABC123", "alice@example.com", 1700000000, message_size=size,
                          content=(lambda: iter(content)) if content is not None else None,
                          **{k: kw.pop(k) for k in ("encoding", "envid", "smtputf8")
                             if k in kw})
    t = DEFAULT_TEMPLATES[cls]
    s = Sink()
    compose(s, template=t, text=expand_text(t, lambda n: {"myhostname": "host.example.com",
                                                          "delay_warning_time_hours": "4",
                                                          "maximal_queue_lifetime_days": "5"
                                                          }.get(n, "")),
            msg=msg, records=list(records), to="alice@example.com", settings=SETTINGS,
            now=NOW, **kw)
    return s.text()


GOLDEN_FAILURE = """\
From: Mail Delivery System <MAILER-DAEMON>
Subject: Undelivered Mail Returned to Sender
To: alice@example.com
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4ABC123.1700000100/host.example.com"

This is a MIME-encapsulated message.

--4ABC123.1700000100/host.example.com
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host host.example.com.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<bob@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1
    <bob@example.net>: Recipient address rejected: User unknown in virtual
    mailbox table (in reply to RCPT TO command)

--4ABC123.1700000100/host.example.com
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; host.example.com
X-Postfix-Queue-ID: 4ABC123
X-Postfix-Sender: rfc822; alice@example.com
Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000 (UTC)

Final-Recipient: rfc822; bob@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected:
    User unknown in virtual mailbox table

--4ABC123.1700000100/host.example.com
Content-Description: Undelivered Message
Content-Type: message/rfc822

Return-Path: <alice@example.com>
Subject: hi
Message-Id: <m1@example.com>
X-Long: aaaaaaaaaabbbbb

body line

--4ABC123.1700000100/host.example.com--
"""


def test_failure_report_golden():
    got = report()
    assert got == GOLDEN_FAILURE, f"got:\n{got}\nwant:\n{GOLDEN_FAILURE}"


def test_structure_parses_with_email_package():
    m = email.message_from_string(report(), policy=email.policy.compat32)
    assert m.get_content_type() == "multipart/report"
    assert m.get_param("report-type") == "delivery-status"
    assert m.get_boundary() == "4ABC123.1700000100/host.example.com"
    assert [p.get_content_type() for p in m.get_payload()] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    assert not m.defects and all(not p.defects for p in m.get_payload())
    per_msg, per_rcpt = m.get_payload(1).get_payload()
    assert per_rcpt["Status"] == "5.1.1"
    assert m.get_payload(2).get_payload(0)["Subject"] == "hi"


@pytest.mark.parametrize("kw,ctype,desc", [
    ({}, "message/rfc822", "Undelivered Message"),
    ({"ret": RET_HDRS}, "text/rfc822-headers", "Undelivered Message Headers"),
    ({"size": 50001}, "text/rfc822-headers", "Undelivered Message Headers"),   # > bounce_size_limit
    ({"size": 0}, "text/rfc822-headers", "Undelivered Message Headers"),       # unknown size
    ({"smtputf8": True}, "message/global", "Undelivered Message"),
    ({"smtputf8": True, "ret": RET_HDRS}, "message/global-headers", "Undelivered Message Headers"),
])
def test_returned_message_part(kw, ctype, desc):
    m = email.message_from_string(report(**kw), policy=email.policy.compat32)
    last = m.get_payload(2)
    assert (last.get_content_type(), last["Content-Description"]) == (ctype, desc)
    if "headers" in ctype:
        assert "body line" not in last.as_string()
        assert "X-Long: aaaaaaaaaabbbbb" in last.as_string()


def test_success_report_uses_action_and_plain_description():
    rec = StatusRecord("bob@example.net", "2.0.0", "relayed",
                       "delivered via mx.example.net[192.0.2.1]:25: 250 ok",
                       dsn_orcpt="rfc822;Bob@Example.NET", notify=NOTIFY_SUCCESS)
    m = email.message_from_string(report([rec], cls="success", ret=RET_HDRS, envid="E1"),
                                  policy=email.policy.compat32)
    assert m["Subject"] == "Successful Mail Delivery Report"
    blocks = m.get_payload(1).get_payload()
    assert blocks[0]["Original-Envelope-Id"] == "E1"
    assert blocks[1]["Action"] == "relayed"
    assert blocks[1]["Original-Recipient"] == "rfc822;Bob@Example.NET"
    assert m.get_payload(2)["Content-Description"] == "Message Headers"


def test_delay_report_has_will_retry_until():
    rec = StatusRecord("bob@example.net", "4.4.1", "delayed", "connection refused")
    m = email.message_from_string(report([rec], cls="delay", ret=RET_HDRS),
                                  policy=email.policy.compat32)
    assert m["Subject"] == "Delayed Mail (still being retried)"
    assert "for more than 4 hour(s)" in m.get_payload(0).get_payload()
    r = m.get_payload(1).get_payload()[1]
    assert r["Action"] == "delayed"
    assert r["Will-Retry-Until"] == "Sun, 19 Nov 2023 22:13:20 +0000 (UTC)"
    assert r["Diagnostic-Code"] == "X-Postfix; connection refused"


def test_postmaster_copy_headers():
    text = report(postmaster_copy=True, boilerplate=False, ret=RET_HDRS)
    m = email.message_from_string(text, policy=email.policy.compat32)
    assert m["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert m["Auto-Submitted"] == "auto-generated"
    assert "I'm sorry" not in text


def test_8bit_original_declares_8bit_parts():
    m = email.message_from_string(report(encoding="8bit"), policy=email.policy.compat32)
    assert m["Content-Transfer-Encoding"] == "8bit"
    assert m.get_payload(0).get_param("charset") == "utf-8"
    assert m.get_payload(2)["Content-Transfer-Encoding"] == "8bit"
    m7 = email.message_from_string(report(encoding="7bit"), policy=email.policy.compat32)
    assert m7["Content-Transfer-Encoding"] == "7bit"
    assert m7.get_payload(0).get_param("charset") == "us-ascii"


def test_expanded_from_and_original_recipient():
    rec = StatusRecord("bob@example.net", "5.1.1", "failed", "no such user",
                       orig_rcpt="list@example.com")
    text = report([rec])
    assert "<bob@example.net> (expanded from <list@example.com>): no such user" in text
    assert "Original-Recipient: rfc822; list@example.com" in text


def test_message_unavailable_placeholder():
    text = report(content=None)
    assert "\t--- Undelivered message unavailable ---" in text
    assert text.endswith("--4ABC123.1700000100/host.example.com--\n")


def test_log_unavailable_placeholder():
    text = report([], log_unavailable=True)
    assert "\t--- Delivery report unavailable ---" in text
    assert "Final-Recipient" not in text


@pytest.mark.parametrize("notify,flt,chosen", [
    (0, NOTIFY_FAILURE, True),                 # no NOTIFY: failure and delay
    (0, NOTIFY_DELAY, True),
    (NOTIFY_NEVER, NOTIFY_FAILURE, False),     # NOTIFY=NEVER
    (NOTIFY_NEVER, NOTIFY_OVERRIDE, True),     # ... but postmaster sees it
    (NOTIFY_SUCCESS, NOTIFY_FAILURE, False),
    (NOTIFY_SUCCESS | NOTIFY_FAILURE, NOTIFY_FAILURE, True),
    (NOTIFY_DELAY, NOTIFY_DELAY, True),
    (NOTIFY_FAILURE, NOTIFY_DELAY, False),
])
def test_select_records_by_notify(notify, flt, chosen):
    rec = StatusRecord("b@x", "5.0.0", "failed", "r", notify=notify)
    assert bool(select_records([rec], flt)) == chosen


@pytest.mark.parametrize("text,want", [
    ("short", ["short"]),
    ("a " * 50, ["a " * 39 + "a", "    " + "a " * 9 + "a"]),
    ("x" * 100 + " y", ["x" * 100, "    y"]),      # a long word is never cut
    ("", [""]),
])
def test_line_wrap_as_postfix(text, want):
    got = line_wrap(text)
    assert got == [w.rstrip() for w in want], f"got {got} want {want}"
