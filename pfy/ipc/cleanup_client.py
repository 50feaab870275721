"""Client of cleanup (public/cleanup): submit one message.

    from pfy.ipc.cleanup_client import CleanupClient, CleanupRejected
    with CleanupClient.open(path, flags=FLAG_MASK_EXTERNAL) as c:
        c.queue_id                       # known at once, for the client's logs
        c.envelope(sender="a@x", recipients=["b@y"], full_name="A",
                   attrs={"rewrite_context": "local"}, arrival=time.time())
        for line in lines: c.line(b"...")          # content, streamed
        queue_id = c.finish()            # after cleanup's fsync + rename
    finish() raises CleanupRejected(status, dsn, reason) on reject/defer:
    err.permanent says bounce (5.x.x) vs try again (4.x.x).

pickup, which copies a maildrop file's records as they are, uses
c.record(rtype, data) for everything and c.finish().

Wire (cleanup_protocol): server greets; client sends CleanupOpen(flags);
server replies CleanupQueueId(queue_id); client streams records (Postfix's
envelope, M, content, X, extracted..., E) (E ends the stream); server replies
CleanupStatus only after the queue file is fsynced and renamed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pfy.ipc.attr import protocol
from pfy.ipc.channel import AttrConnection
from pfy.queue.record import (
    REC_ATTR, REC_END, REC_FROM, REC_FULL, REC_MESG, REC_NORM, REC_ORCP, REC_RCPT,
    REC_TIME, REC_XTRA, REC_CONT,
)

__all__ = ["PROTOCOL", "CleanupOpen", "CleanupQueueId", "CleanupStatus",
           "CleanupClient", "CleanupRejected", "input_flags"]

PROTOCOL = "cleanup_protocol"
# Content record size: line_length_limit's default (postconf(5)), so a
# long line travels as several L records and one N, as in queue files.
_PIECE = 2048


@protocol(PROTOCOL, "open")
@dataclass(frozen=True)
class CleanupOpen:
    flags: int              # FLAG_* of pfy/daemons/cleanup/core.py (Postfix's values)


@protocol(PROTOCOL, "queue_id")
@dataclass(frozen=True)
class CleanupQueueId:
    queue_id: str


@protocol(PROTOCOL, "status")
@dataclass(frozen=True)
class CleanupStatus:
    status: int             # 0 = queued; else cleanup_user.h bits
    queue_id: str
    code: int               # SMTP reply code for smtpd (250, 451, 550, ...)
    reason: str             # "5.7.1 message content rejected" ("" when queued)


# Postfix cleanup_user.h values (also in pfy.daemons.cleanup.core, which
# clients must not import).
_FLAG_BOUNCE = 1 << 0
_FLAG_FILTER = 1 << 1
_FLAG_BCC_OK = 1 << 4
_FLAG_MAP_OK = 1 << 5
_FLAG_MILTER = 1 << 6
_FLAG_MASK_EXTERNAL = _FLAG_FILTER | _FLAG_BCC_OK | _FLAG_MAP_OK | _FLAG_MILTER


def input_flags(receive_override_options, bounce: bool = False) -> int:
    """The cleanup flags of an external client (smtpd, pickup, qmqpd)
    less what receive_override_options turns off (Postfix input_transp.c):
    no_address_mappings (canonical, masquerade, virtual alias, bcc maps),
    no_header_body_checks, no_milters.  no_unknown_recipient_checks is
    smtpd's own business (pfy.access skips the unlisted recipient and
    sender checks)."""
    flags = _FLAG_MASK_EXTERNAL | (_FLAG_BOUNCE if bounce else 0)
    opts = {o.lower() for o in (receive_override_options or ())}
    if "no_address_mappings" in opts:
        flags &= ~(_FLAG_MAP_OK | _FLAG_BCC_OK)
    if "no_header_body_checks" in opts:
        flags &= ~_FLAG_FILTER
    if "no_milters" in opts:
        flags &= ~_FLAG_MILTER
    return flags


class CleanupRejected(Exception):
    def __init__(self, status: int, code: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.dsn = reason.split(" ", 1)[0] if reason else "4.3.0"

    @property
    def permanent(self) -> bool:
        return self.dsn.startswith("5")


class CleanupClient:
    def __init__(self, conn: AttrConnection, queue_id: str):
        self.conn = conn
        self.queue_id = queue_id
        self._content = False

    @classmethod
    def open(cls, path: str, flags: int, timeout: float = 3600.0) -> "CleanupClient":
        conn = AttrConnection.connect(path, PROTOCOL, timeout=timeout)
        try:
            reply = conn.request(CleanupOpen(flags), CleanupQueueId)
        except BaseException:
            conn.close()
            raise
        return cls(conn, reply.queue_id)

    def record(self, rtype: int, data: bytes) -> None:
        self.conn.send_record(rtype, data)

    def envelope(self, sender: str, recipients, full_name: str = "", attrs=None,
                 arrival: float | None = None) -> None:
        """Envelope records; recipients are addresses or (address, orig_rcpt)."""
        t = time.time() if arrival is None else arrival
        self.record(REC_TIME, b"%d %d" % (int(t), int((t % 1) * 1e6)))
        if full_name:
            self.record(REC_FULL, full_name.encode("utf-8", "surrogateescape"))
        self.record(REC_FROM, sender.encode("utf-8", "surrogateescape"))
        for name, value in (attrs or {}).items():
            self.record(REC_ATTR, f"{name}={value}".encode("utf-8", "surrogateescape"))
        for rcpt in recipients:
            addr, orig = (rcpt, "") if isinstance(rcpt, str) else rcpt
            if orig:
                self.record(REC_ORCP, orig.encode("utf-8", "surrogateescape"))
            self.record(REC_RCPT, addr.encode("utf-8", "surrogateescape"))

    def line(self, data: bytes) -> None:
        """One line of content, without its line ending."""
        if not self._content:
            self.record(REC_MESG, b"")
            self._content = True
        while len(data) > _PIECE:
            self.record(REC_CONT, data[:_PIECE])
            data = data[_PIECE:]
        self.record(REC_NORM, data)

    def finish(self) -> str:
        if not self._content:
            self.record(REC_MESG, b"")
            self._content = True
        self.record(REC_XTRA, b"")
        self.record(REC_END, b"")
        return self.finish_records()

    def finish_records(self) -> str:
        """Wait for the verdict; the records sent so far end with E (which
        is also the channel's end-of-stream record)."""
        self.conn.flush()
        reply = self.conn.receive(CleanupStatus)
        if reply.status:
            raise CleanupRejected(reply.status, reply.code, reply.reason)
        return reply.queue_id

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
