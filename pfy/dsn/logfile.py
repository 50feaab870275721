"""Per-message status logfiles: bounce/ID, defer/ID and trace/ID.

The format is Postfix's (bounce_append_service.c, bounce_log.c): one block
per recipient of "name=value" lines, ended by an empty line.  Debian's
showq reads our defer logs and ours reads Postfix's, so the names are
Postfix's MAIL_ATTR_* words:

    recipient=user@example.com      quoted external form, "<>" for the null address
    orig_rcpt=alias@example.com     only when it differs from recipient
    offset=123                      the recipient's R record in the queue file
    dsn_orig_rcpt=rfc822;alias@...  the ORCPT parameter, as received
    notify_flags=4                  DSN NOTIFY bits (NOTIFY_* below)
    status=5.1.1
    action=failed                   failed / delayed / delivered / expanded / relayed / deliverable / undeliverable
    diag_type=smtp  diag_text=550 5.1.1 no such user    (Diagnostic-Code)
    mta_type=dns    mta_name=mx.example.net              (Remote-MTA)
    reason=host mx.example.net[192.0.2.1] said: 550 5.1.1 no such user

Writers append one whole block per write(2) with O_APPEND, so concurrent
writers (qmgr, several agents) never interleave inside a block; the reader
skips what it does not understand, as Postfix's does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import IO, Iterable, Iterator

from pfy.smtp.address import quote_local

__all__ = ["StatusRecord", "format_record", "append_records", "read_records",
           "NOTIFY_NEVER", "NOTIFY_SUCCESS", "NOTIFY_FAILURE", "NOTIFY_DELAY",
           "NOTIFY_ANY", "RET_FULL", "RET_HDRS", "format_status", "append_status"]

# dsn_mask.h: the NOTIFY parameter bits as stored in queue files (n records).
NOTIFY_NEVER = 1 << 0
NOTIFY_SUCCESS = 1 << 1
NOTIFY_FAILURE = 1 << 2
NOTIFY_DELAY = 1 << 3
NOTIFY_ANY = NOTIFY_SUCCESS | NOTIFY_FAILURE | NOTIFY_DELAY
# dsn_mask.h: RET parameter values (the queue file's "<" record).
RET_FULL = 1
RET_HDRS = 2


@dataclass
class StatusRecord:
    """One recipient's delivery status, as the bounce service reports it.

    recipient/orig_rcpt are in internal (unquoted) form when built by a
    writer; read_records() returns them as stored (quoted external form),
    which is what a report prints.
    """
    recipient: str
    status: str
    action: str
    reason: str
    orig_rcpt: str = ""
    offset: int = 0
    dsn_orcpt: str = ""
    notify: int = 0
    diag_type: str = ""
    diag_text: str = ""
    mta_type: str = ""
    mta_name: str = ""


def _printable(value: str) -> str:
    # Postfix's printable(value, '?'): a newline inside a value would start
    # a forged attribute, and the text ends up in mail headers.  UTF-8 text
    # stays (SMTPUTF8 addresses); only control characters are masked.
    return "".join("?" if (ord(c) < 32 or ord(c) == 127) else c for c in value)


def _external(address: str) -> str:
    return quote_local(address) if address else "<>"


def format_record(rec: StatusRecord, quote: bool = True) -> bytes:
    """One block, ending with its empty line.  quote=False: the addresses
    are already in external form (copied from another log)."""
    q = _external if quote else (lambda a: a or "<>")
    lines = [f"recipient={_printable(q(rec.recipient))}"]
    if rec.orig_rcpt and rec.orig_rcpt.lower() != rec.recipient.lower():
        lines.append(f"orig_rcpt={_printable(q(rec.orig_rcpt))}")
    if rec.offset > 0:
        lines.append(f"offset={rec.offset}")
    if rec.dsn_orcpt:
        lines.append(f"dsn_orig_rcpt={_printable(rec.dsn_orcpt)}")
    if rec.notify:
        lines.append(f"notify_flags={rec.notify}")
    if rec.status:
        lines.append(f"status={_printable(rec.status)}")
    if rec.action:
        lines.append(f"action={_printable(rec.action)}")
    if rec.diag_type and rec.diag_text:
        lines.append(f"diag_type={_printable(rec.diag_type)}")
        lines.append(f"diag_text={_printable(rec.diag_text)}")
    if rec.mta_type and rec.mta_name:
        lines.append(f"mta_type={_printable(rec.mta_type)}")
        lines.append(f"mta_name={_printable(rec.mta_name)}")
    if rec.reason:
        lines.append(f"reason={_printable(rec.reason)}")
    return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape")


def append_records(path: str, records: Iterable[StatusRecord], fsync: bool = True,
                   quote: bool = True) -> None:
    """Append the blocks in one write(2).

    fsync=True for bounce and trace logs: once a recipient is marked done
    in the queue file, this file is the only trace of the notice owed.  On
    a failed write the file is cut back to its old length, so a reader
    never sees half a block (bounce_append_service.c does the same).
    """
    data = b"".join(format_record(r, quote) for r in records)
    if not data:
        return
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path) or ".", 0o700, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(28, "short write")
            if fsync:
                os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


_INT_FIELDS = {"offset": "offset", "notify_flags": "notify"}
_STR_FIELDS = {"recipient": "recipient", "orig_rcpt": "orig_rcpt",
               "dsn_orig_rcpt": "dsn_orcpt", "status": "status", "action": "action",
               "reason": "reason", "diag_type": "diag_type", "diag_text": "diag_text",
               "mta_type": "mta_type", "mta_name": "mta_name"}


def read_records(source: str | IO[bytes]) -> Iterator[StatusRecord]:
    """The blocks of a logfile, in file order, one at a time.

    Lines that are not name=value (Postfix < 2.0 "<rcpt>: text" lines) and
    unknown names are skipped; a block without a recipient is dropped.
    Postfix's bounce_log_read() defaults: status 4.0.0/5.0.0 unknown ->
    "4.0.0"; action unknown -> "" (the caller picks by log type).
    """
    f = open(source, "rb") if isinstance(source, str) else source
    try:
        fields: dict = {}
        for raw in f:
            line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
            if not line.strip():
                rec = _build(fields)
                fields = {}
                if rec is not None:
                    yield rec
                continue
            name, eq, value = line.partition("=")
            if not eq:
                continue
            name = name.strip()
            if name in _STR_FIELDS:
                fields[_STR_FIELDS[name]] = value
            elif name in _INT_FIELDS:
                try:
                    fields[_INT_FIELDS[name]] = int(value.strip())
                except ValueError:
                    pass
        rec = _build(fields)
        if rec is not None:
            yield rec
    finally:
        if isinstance(source, str):
            f.close()


def _build(fields: dict) -> StatusRecord | None:
    if "recipient" not in fields:
        return None
    rcpt = fields["recipient"]
    fields["recipient"] = "" if rcpt == "<>" else rcpt
    fields.setdefault("status", "")
    fields.setdefault("action", "")
    fields.setdefault("reason", "")
    return StatusRecord(**fields)


# -- the qmgr's original writer interface (pfy.daemons.qmgr.logfile), kept so
# qmgr switches by changing its import only.
def format_status(recipient: str, orig_rcpt: str, offset: int, dsn_orcpt: str,
                  notify: int, status: str, action: str, reason: str) -> bytes:
    return format_record(StatusRecord(recipient, status, action, reason, orig_rcpt,
                                      offset, dsn_orcpt, notify))


def append_status(path: str, blocks: list[bytes], fsync: bool) -> None:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path) or ".", 0o700, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    try:
        os.write(fd, b"".join(blocks))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
