"""smtpd's side of one cleanup session, on asyncio.

The blocking pfy.ipc.cleanup_client serves commands; smtpd has many
sessions in one event loop, so it speaks the same cleanup_protocol through
AsyncAttrConnection. Records go out in 64 KB writes (the connection
buffers them: one system call per line was a third of smtpd's time);
drain() gives the TCP peer's pace to the cleanup socket's, so memory stays
flat whatever the message size.
"""

from __future__ import annotations

import asyncio
import time

from pfy.ipc.attr import ProtocolError
from pfy.ipc.channel import AsyncAttrConnection
from pfy.ipc.cleanup_client import PROTOCOL, CleanupOpen, CleanupQueueId, CleanupStatus
from pfy.queue.record import (REC_ATTR, REC_CONT, REC_DSN_ENVID, REC_DSN_NOTIFY,
                              REC_DSN_ORCPT, REC_DSN_RET, REC_END, REC_FILT, REC_FROM, REC_MESG,
                              REC_NORM, REC_ORCP, REC_RCPT, REC_TIME, REC_XTRA)

__all__ = ["CleanupSession", "CleanupError"]

HIGH_WATER = 256 * 1024        # bytes queued to cleanup before we wait for it
CONNECT_TIMEOUT = 100.0        # Postfix ipc_timeout default (postconf(5))


class CleanupError(Exception):
    """cleanup could not be reached or broke the protocol: our failure,
    "451 4.3.0 Error: queue file write error" for the client."""


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class CleanupSession:
    def __init__(self, conn: AsyncAttrConnection, queue_id: str):
        self.conn = conn
        self.queue_id = queue_id
        self.content = False
        self.failed = False

    @classmethod
    async def open(cls, path: str, flags: int, timeout: float = CONNECT_TIMEOUT) -> "CleanupSession":
        try:
            conn = await AsyncAttrConnection.open(path, PROTOCOL, timeout=timeout)
        except (OSError, EOFError, ProtocolError, asyncio.TimeoutError) as err:
            raise CleanupError(f"connect to {path}: {err}") from None
        try:
            async with asyncio.timeout(timeout):
                reply = await conn.request(CleanupOpen(flags), CleanupQueueId)
        except (OSError, EOFError, ProtocolError, asyncio.TimeoutError) as err:
            conn.close()
            raise CleanupError(f"{path}: {err}") from None
        return cls(conn, reply.queue_id)

    # -- envelope -------------------------------------------------------------

    def record(self, rtype: int, data: bytes) -> None:
        self.conn.send_record(rtype, data)

    def start(self, sender: str, attrs: dict[str, str], arrival: float | None = None,
              dsn_ret: int = 0, dsn_envid: str = "", content_filter: str = "") -> None:
        t = time.time() if arrival is None else arrival
        self.record(REC_TIME, b"%d %d" % (int(t), int((t % 1) * 1e6)))
        # smtpd.c mail_open_stream(): content_filter goes right after the
        # time stamp; cleanup never reads the parameter itself, so that a
        # re-injection service with "-o content_filter=" ends the loop.  An
        # access FILTER action, sent after the content, replaces it.
        if content_filter:
            self.record(REC_FILT, _b(content_filter))
        self.record(REC_FROM, _b(sender))
        for name, value in attrs.items():
            self.record(REC_ATTR, _b(f"{name}={value}"))
        if dsn_ret:
            self.record(REC_DSN_RET, b"%d" % dsn_ret)
        if dsn_envid:
            self.record(REC_DSN_ENVID, _b(dsn_envid))

    def recipient(self, addr: str, orig_rcpt: str = "", dsn_orcpt: str = "",
                  dsn_notify: int = 0) -> None:
        if dsn_orcpt:
            self.record(REC_DSN_ORCPT, _b(dsn_orcpt))
        if dsn_notify:
            self.record(REC_DSN_NOTIFY, b"%d" % dsn_notify)
        if orig_rcpt:
            self.record(REC_ORCP, _b(orig_rcpt))
        self.record(REC_RCPT, _b(addr))

    def attr(self, name: str, value: str) -> None:
        self.record(REC_ATTR, _b(f"{name}={value}"))

    # -- content -----------------------------------------------------------------

    def begin_content(self) -> None:
        if not self.content:
            self.record(REC_MESG, b"")
            self.content = True

    def line(self, data: bytes, partial: bool = False) -> None:
        self.record(REC_CONT if partial else REC_NORM, data)

    def lines(self, lines: list[bytes]) -> None:
        """Whole lines without CR or LF: one frame for the lot."""
        self.conn.send_lines(lines)

    async def drain(self) -> None:
        """Wait while cleanup is behind, so that a fast client cannot fill
        our memory with its message."""
        if self.conn.pending() > HIGH_WATER:
            try:
                await self.conn.flush()
            except (OSError, ConnectionError) as err:
                self.failed = True
                raise CleanupError(str(err)) from None

    async def finish(self, extracted: list[tuple[int, bytes]] = ()) -> CleanupStatus:
        """End the records and wait for cleanup's verdict (sent after its
        fsync and rename: only then may we say "queued")."""
        self.begin_content()
        self.record(REC_XTRA, b"")
        for rtype, data in extracted:
            self.record(rtype, data)
        self.record(REC_END, b"")
        try:
            await self.conn.flush()
            return await self.conn.receive(CleanupStatus)
        except (OSError, EOFError, ProtocolError, ConnectionError) as err:
            raise CleanupError(f"{self.queue_id}: {err}") from None
        finally:
            self.close()

    def close(self) -> None:
        """Abandon: cleanup removes its temporary file when we go away
        without the end record."""
        try:
            self.conn.close()
        except Exception:   # noqa: BLE001 - already gone
            pass
