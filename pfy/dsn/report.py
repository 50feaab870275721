"""RFC 3464 delivery status notifications, composed as a stream of lines.

The layout is Postfix's bounce_notify_util.c, line for line, so a report
from pfy and one from Postfix have the same headers, MIME structure and
delivery-status fields:

    From / Subject / To / [References, In-Reply-To] / Auto-Submitted
    MIME-Version: 1.0
    Content-Type: multipart/report; report-type=delivery-status;
            boundary="QUEUEID.TIME/HOST"
    --- text/plain: the template text and one paragraph per recipient
    --- message/delivery-status: per-message fields, then per recipient
    --- message/rfc822 (RET=FULL) or text/rfc822-headers (RET=HDRS, or the
        message is larger than bounce_size_limit, which keeps the MIME
        structure whole instead of cutting the message)

Nothing is held in memory but the current line: the original message is
copied record by record from the queue file into the sink (a
pfy.ipc.cleanup_client.CleanupClient, or any object with line(bytes) and
record(rtype, bytes)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

from pfy.dsn.logfile import NOTIFY_NEVER, RET_FULL, RET_HDRS, StatusRecord
from pfy.dsn.templates import Template
from pfy.queue.record import REC_CONT, REC_NORM
from pfy.smtp.address import quote_local

__all__ = ["OriginalMessage", "ReportSettings", "Sink", "compose", "select_records",
           "line_wrap", "mail_date", "mime_boundary", "NOTIFY_OVERRIDE"]

# dsn_mask.h DSN_NOTIFY_OVERRIDE: every recipient, whatever its NOTIFY
# (postmaster copies and trace reports).
NOTIFY_OVERRIDE = 0xFF
WRAP_LENGTH = 79     # bounce_notify_util.c LENGTH: fits an 80-column terminal
WRAP_INDENT = 4      # continuation lines of a wrapped field or paragraph


class Sink(Protocol):
    def line(self, data: bytes) -> None: ...
    def record(self, rtype: int, data: bytes) -> None: ...


@dataclass
class OriginalMessage:
    """What a report says about the message it is about."""
    queue_id: str
    sender: str                 # internal form; "" = the null sender
    arrival_time: float
    encoding: str = ""          # the queue file's encoding attribute: 7bit, 8bit or ""
    smtputf8: bool = False      # the message asked for SMTPUTF8
    envid: str = ""             # DSN ENVID
    message_size: int = 0       # content size (the queue file's size record)
    message_id: str = ""        # "<...>" for threaded bounces, else ""
    content: Callable[[], Iterable[tuple[int, bytes]]] | None = None
    #   content(): the message's content records (REC_NORM / REC_CONT) from
    #   the start of its headers; None when the queue file is gone.


@dataclass(frozen=True)
class ReportSettings:
    myhostname: str
    mail_name: str = "Postfix"
    bounce_size_limit: int = 50000
    maximal_queue_lifetime: int = 5 * 86400
    date: Callable[[float], str] | None = None    # mail_date() unless given


def mail_date(when: float) -> str:
    """Postfix's mail_date(): RFC 5322 date in local time, with the zone name."""
    tm = time.localtime(when)
    off = tm.tm_gmtoff
    sign = "-" if off < 0 else "+"
    off = abs(off) // 60
    return (time.strftime("%a, %d %b %Y %H:%M:%S ", tm)
            + f"{sign}{off // 60:02d}{off % 60:02d} ({tm.tm_zone})")


def mime_boundary(queue_id: str, now: float, myhostname: str) -> str:
    """bounce_mail_alloc(): unique per queue ID and second on this host;
    characters a queue ID and a host name may hold are all legal in a
    boundary (RFC 2046 5.1.1 bchars)."""
    return f"{queue_id}.{int(now)}/{myhostname}"


def line_wrap(text: str, length: int = WRAP_LENGTH, indent: int = WRAP_INDENT) -> list[str]:
    """Postfix's line_wrap(): break at blanks before `length` columns;
    continuation lines are indented; a word longer than a line stays whole."""
    out: list[str] = []
    curr_indent, curr_len = 0, length
    start = 0
    pos = 0
    n = len(text)
    first = True
    while True:
        nxt = pos
        while nxt < n and text[nxt] not in " \t":
            nxt += 1
        if pos > start and nxt - start > curr_len:
            out.append(" " * curr_indent + text[start:pos].rstrip(" \t"))
            while pos < n and text[pos] in " \t":
                pos += 1
            if first:
                curr_indent += indent
                curr_len -= indent
                first = False
            start = pos
            continue
        if nxt >= n:
            break
        pos = nxt + 1
    out.append(" " * curr_indent + text[start:].rstrip(" \t"))
    return out


def select_records(records: Iterable[StatusRecord], notify_filter: int) -> list[StatusRecord]:
    """The recipients a report covers: those without DSN NOTIFY (the
    default: notify on failure and delay) and those whose NOTIFY asks for
    this kind of report (bounce_diagnostic_log()).  NOTIFY=NEVER only
    matches NOTIFY_OVERRIDE (postmaster copies)."""
    return [r for r in records
            if r.notify == 0 or (r.notify & notify_filter)
            or (notify_filter == NOTIFY_OVERRIDE and r.notify & NOTIFY_NEVER)]


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _addr_type(smtputf8: bool, address: str) -> str:
    # RFC 6533 3.2: "utf-8" only for a message that asked for SMTPUTF8 and
    # an address that needs it.
    return "utf-8" if smtputf8 and address and not address.isascii() else "rfc822"


def _is_header(line: bytes) -> bool:
    """is_header(): a field name of printable non-colon characters, then
    optional blanks and ':'."""
    i = 0
    while i < len(line) and 33 <= line[i] <= 126 and line[i] != 58:
        i += 1
    if i == 0:
        return False
    while i < len(line) and line[i] in (32, 9):
        i += 1
    return i < len(line) and line[i] == 58


def compose(sink: Sink, *, template: Template, text: list[str], msg: OriginalMessage,
            records: list[StatusRecord], to: str, settings: ReportSettings,
            postmaster_copy: bool = False, boilerplate: bool = True,
            ret: int = RET_FULL, boundary: str | None = None,
            log_unavailable: bool = False, now: float | None = None) -> None:
    """Write one report into sink.

    template/text: the template and its expanded text (expand_text());
    records: the recipients, already chosen with select_records();
    to: the report's recipient (internal form), for the To: header;
    postmaster_copy: the Postmaster-Subject and Auto-Submitted: auto-generated;
    boilerplate: False for postmaster copies, which skip the text;
    ret: RET_FULL or RET_HDRS for the returned message;
    log_unavailable: the logfile could not be read ("--- Delivery report
    unavailable ---", as Postfix says rather than cancelling the notice).
    """
    date = settings.date or mail_date
    when = time.time() if now is None else now
    b = boundary or mime_boundary(msg.queue_id, when, settings.myhostname)
    # The message's declared encoding decides the report's (the returned
    # message and 8-bit addresses are inside it); none declared, none said.
    mime_encoding = msg.encoding if msg.encoding in ("7bit", "8bit") else ""
    eight_bit = mime_encoding == "8bit"
    mail_name = "".join("-" if c in ' \t\r\n()<>@,;:\\".[]' else c for c in settings.mail_name)
    sender = quote_local(msg.sender) if msg.sender else "MAILER-DAEMON"
    out = sink.line

    def put(s: str) -> None:
        out(_enc(s))

    def wrapped(s: str) -> None:
        for piece in line_wrap(s):
            put(piece)

    # -- message headers (bounce_header) --
    put(f"From: {template.from_}")
    put("Subject: " + (template.postmaster_subject
                       if postmaster_copy and template.postmaster_subject else template.subject))
    put(f"To: {quote_local(to)}")
    if msg.message_id:
        put(f"References: {msg.message_id}")
        put(f"In-Reply-To: {msg.message_id}")
    # RFC 3834 5: replies by a program say so; a postmaster copy is generated.
    put("Auto-Submitted: " + ("auto-generated" if postmaster_copy else "auto-replied"))
    put("MIME-Version: 1.0")
    put("Content-Type: multipart/report; report-type=delivery-status;")
    put(f'\tboundary="{b}"')
    if mime_encoding:
        put("Content-Transfer-Encoding: "
            + (template.encoding if mime_encoding == "7bit" else mime_encoding))
    put("")
    put("This is a MIME-encapsulated message.")
    put("")
    put(f"--{b}")
    put("Content-Description: Notification")
    charset = (template.charset if template.charset.lower() != "us-ascii"
               else "utf-8" if eight_bit else "us-ascii")
    put(f"Content-Type: text/plain; charset={charset}")
    if eight_bit:
        put(f"Content-Transfer-Encoding: {mime_encoding}")
    put("")

    # -- human-readable part (bounce_boilerplate, bounce_diagnostic_log) --
    if boilerplate:
        for line in text:
            put(line)
    if log_unavailable:
        if template.is_failure:
            put("")
            put("\t--- Delivery report unavailable ---")
    else:
        for r in records:
            put("")
            rcpt = r.recipient or "<>"
            if r.orig_rcpt:
                wrapped(f"<{rcpt}> (expanded from <{r.orig_rcpt}>): {r.reason}")
            else:
                wrapped(f"<{rcpt}>: {r.reason}")

    # -- machine-readable part (bounce_header_dsn, bounce_recipient_dsn) --
    put("")
    put(f"--{b}")
    put("Content-Description: Delivery report")
    put(f"Content-Type: message/{'global-' if msg.smtputf8 else ''}delivery-status")
    if eight_bit and msg.smtputf8:
        put(f"Content-Transfer-Encoding: {mime_encoding}")
    put("")
    put(f"Reporting-MTA: dns; {settings.myhostname}")
    if msg.envid:
        put(f"Original-Envelope-Id: {msg.envid}")
    put(f"X-{mail_name}-Queue-ID: {msg.queue_id}")
    put(f"X-{mail_name}-Sender: {_addr_type(msg.smtputf8, sender)}; {sender}")
    if msg.arrival_time > 0:
        put(f"Arrival-Date: {date(msg.arrival_time)}")
    if not log_unavailable:
        for r in records:
            put("")
            put(f"Final-Recipient: {_addr_type(msg.smtputf8, r.recipient)}; {r.recipient}")
            # RFC 3464 6.3.d says no Original-Recipient without ORCPT; Postfix
            # reports the original address anyway, since it relays it as
            # ORCPT too (bounce_notify_util.c).
            if r.dsn_orcpt:
                put(f"Original-Recipient: {r.dsn_orcpt}")
            elif r.orig_rcpt:
                put(f"Original-Recipient: {_addr_type(msg.smtputf8, r.orig_rcpt)}; {r.orig_rcpt}")
            put("Action: " + ("failed" if template.is_failure else r.action))
            put(f"Status: {r.status}")
            if r.mta_type and r.mta_name:
                wrapped(f"Remote-MTA: {r.mta_type}; {r.mta_name}")
            if r.diag_type and r.diag_text:
                wrapped(f"Diagnostic-Code: {r.diag_type}; {r.diag_text}")
            else:
                wrapped(f"Diagnostic-Code: X-{mail_name}; {r.reason}")
            if template.is_delay:
                put("Will-Retry-Until: "
                    + date(msg.arrival_time + settings.maximal_queue_lifetime))

    # -- the returned message (bounce_original) --
    headers_only = ret == RET_HDRS
    if (settings.bounce_size_limit > 0 and msg.content is not None
            and (msg.message_size <= 0 or msg.message_size > settings.bounce_size_limit)):
        # Cutting a message would break its MIME structure: send its headers.
        headers_only = True
    undelivered = template.cls in ("failure", "delay")
    put("")
    put(f"--{b}")
    put("Content-Description: " + ("Undelivered " if undelivered else "")
        + ("Message Headers" if headers_only else "Message"))
    if msg.smtputf8:
        put("Content-Type: message/" + ("global-headers" if headers_only else "global"))
    else:
        put("Content-Type: " + ("text/rfc822-headers" if headers_only else "message/rfc822"))
    if eight_bit:
        put(f"Content-Transfer-Encoding: {mime_encoding}")
    put("")
    if msg.content is None:
        put("\t--- Undelivered message unavailable ---")
    else:
        # cleanup drops Return-Path: from submissions; put one back so the
        # sender sees where the message came from (and header_checks can).
        put(f"Return-Path: <{sender}>")
        _copy_original(sink, msg.content(), headers_only)
    # Deliberately unlike Postfix, which omits the closing delimiter when
    # the message is gone: the multipart is always closed (RFC 2046 5.1.1).
    put("")
    put(f"--{b}--")


def _copy_original(sink: Sink, records: Iterator[tuple[int, bytes]], headers_only: bool) -> None:
    at_line_start = True
    for rtype, data in records:
        if rtype not in (REC_NORM, REC_CONT):
            break
        if headers_only and at_line_start and not (data[:1] in (b" ", b"\t") or _is_header(data)):
            break
        sink.record(rtype, data)
        at_line_start = rtype == REC_NORM
