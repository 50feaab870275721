"""Client of the bounce, defer and trace services (bounce(8)).

What qmgr and the delivery agents call; Postfix's bounce_append(),
defer_append(), trace_append(), bounce_flush(), defer_flush(), defer_warn(),
trace_flush() and bounce_one().

    from pfy.ipc.bounce_client import BounceClient, StatusRecord
    bc = BounceClient.from_config(cfg)     # paths relative to queue_directory (the cwd)

    # 1. per-recipient status (the daemon appends to bounce/ID, defer/ID, trace/ID):
    bc.append("bounce", queue_id, [StatusRecord(rcpt, "5.1.1", "failed", reason,
              orig_rcpt=..., offset=..., dsn_orcpt=..., notify=...)])
    #    or, for a process that may write the logfile itself (qmgr):
    append_logfile(queue, "bounce", queue_id, records)      # same bytes, no IPC

    # 2. notices, each returns True when the notice is queued (or was not
    #    needed) and the logfile is gone, False to try again later:
    bc.flush(msg)          # non-delivery report from bounce/ID; deletes bounce/ID
    bc.defer_flush(msg)    # the message expired: report defer/ID as failed; deletes defer/ID
    bc.warn(msg)           # delay warning from defer/ID (defer/ID stays)
    bc.trace_flush(msg)    # NOTIFY=SUCCESS / sendmail -v / -bv report from trace/ID
    bc.bounce_one(msg, record)   # one recipient, no logfile
    #    msg = NoticeRequest(queue_name, queue_id, sender, encoding="", smtputf8=False,
    #                        envid="", ret=0, flags=0)   (from the queue file)

Every call is a short blocking round trip; asyncio callers (qmgr) use
loop.run_in_executor, or the a* variants (aflush, ...) that do the same.
Wire (bounce_protocol): the server greets; the client sends one request
(BounceAppend, BounceNotify); the server answers BounceStatus(status)
with status 0 on success.  One request per connection, as Postfix.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from pfy.dsn.logfile import StatusRecord, append_records
from pfy.ipc.attr import protocol
from pfy.ipc.channel import AttrConnection

__all__ = ["PROTOCOL", "BounceAppend", "BounceNotify", "BounceStatus", "NoticeRequest",
           "BounceClient", "StatusRecord", "append_logfile", "LOGFILES",
           "FLUSH", "WARN", "TRACE", "ONE", "FLAG_DELRCPT", "FLAG_USR_VRFY", "FLAG_RECORD"]

PROTOCOL = "bounce_protocol"
LOGFILES = ("bounce", "defer", "trace")

# Notice kinds (bounce_proto.h BOUNCE_CMD_*): which report from which log.
FLUSH = "flush"     # failure report from this service's log (bounce or defer)
WARN = "warn"       # delay warning from the defer log
TRACE = "trace"     # success / verify report from the trace log
ONE = "one"         # failure report for the one recipient in the request

# Request flags: deliver_request.h / bounce.h values.
FLAG_DELRCPT = 1 << 1       # BOUNCE_FLAG_DELRCPT: mark the reported recipients done
FLAG_USR_VRFY = 1 << 9      # DEL_REQ_FLAG_USR_VRFY: sendmail -bv (verify template)
FLAG_RECORD = 1 << 10       # DEL_REQ_FLAG_RECORD: sendmail -v (verify template)


@protocol(PROTOCOL, "append")
@dataclass(frozen=True)
class BounceAppend:
    queue_id: str
    records: list[StatusRecord]


@dataclass(frozen=True)
class NoticeRequest:
    """Which message a notice is about; values from its queue file."""
    queue_name: str             # where the queue file is now (active, deferred...)
    queue_id: str
    sender: str                 # the envelope sender, internal form ("" = <>)
    encoding: str = ""          # queue file A encoding= (7bit, 8bit or "")
    smtputf8: bool = False
    envid: str = ""             # DSN ENVID
    ret: int = 0                # DSN RET: 0 (not given), RET_FULL, RET_HDRS
    flags: int = 0              # FLAG_* above


@protocol(PROTOCOL, "notify")
@dataclass(frozen=True)
class BounceNotify:
    kind: str                   # FLUSH / WARN / TRACE / ONE
    msg: NoticeRequest
    records: list[StatusRecord] = field(default_factory=list)   # ONE only


@protocol(PROTOCOL, "status")
@dataclass(frozen=True)
class BounceStatus:
    status: int                 # 0 = done; else try again later


def append_logfile(queue, which: str, queue_id: str, records, fsync: bool = True) -> None:
    """Append records to bounce/ID, defer/ID or trace/ID directly, for a
    process that owns the queue (qmgr): no round trip to the daemon.
    queue is a pfy.queue.Queue (its log_path() knows the hashed folders)."""
    if which not in LOGFILES:
        raise ValueError(f"bad logfile name {which!r}")
    append_records(queue.log_path(which, queue_id), records, fsync=fsync)


class BounceClient:
    def __init__(self, bounce: str = "private/bounce", defer: str = "private/defer",
                 trace: str = "private/trace", timeout: float = 3600.0):
        self.paths = {"bounce": bounce, "defer": defer, "trace": trace}
        self.timeout = timeout

    @classmethod
    def from_config(cls, cfg, root: str = ".") -> "BounceClient":
        def p(name: str) -> str:
            return os.path.join(root, "private", name)
        return cls(p(cfg.bounce_service_name), p(cfg.defer_service_name),
                   p(cfg.trace_service_name), timeout=cfg.ipc_timeout)

    # -- blocking --
    def _call(self, service: str, request) -> int:
        conn = AttrConnection.connect(self.paths[service], PROTOCOL, timeout=self.timeout)
        try:
            return conn.request(request, BounceStatus).status
        finally:
            conn.close()

    def _ok(self, service: str, request) -> bool:
        try:
            return self._call(service, request) == 0
        except (OSError, EOFError, ValueError):
            # The service is down or died mid-request (ProtocolError is a
            # ValueError): the caller keeps the message and tries later.
            return False

    def append(self, which: str, queue_id: str, records: list[StatusRecord]) -> bool:
        """bounce_append()/defer_append()/trace_append() through the daemon."""
        if which not in LOGFILES:
            raise ValueError(f"bad logfile name {which!r}")
        return self._ok(which, BounceAppend(queue_id, list(records)))

    def flush(self, msg: NoticeRequest) -> bool:
        return self._ok("bounce", BounceNotify(FLUSH, msg))

    def defer_flush(self, msg: NoticeRequest) -> bool:
        return self._ok("defer", BounceNotify(FLUSH, msg))

    def warn(self, msg: NoticeRequest) -> bool:
        return self._ok("defer", BounceNotify(WARN, msg))

    def trace_flush(self, msg: NoticeRequest) -> bool:
        return self._ok("trace", BounceNotify(TRACE, msg))

    def bounce_one(self, msg: NoticeRequest, record: StatusRecord) -> bool:
        return self._ok("bounce", BounceNotify(ONE, msg, [record]))

    # -- asyncio (qmgr): the same calls off the event loop --
    async def _athread(self, fn, *args) -> bool:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def aflush(self, msg: NoticeRequest) -> bool:
        return await self._athread(self.flush, msg)

    async def adefer_flush(self, msg: NoticeRequest) -> bool:
        return await self._athread(self.defer_flush, msg)

    async def awarn(self, msg: NoticeRequest) -> bool:
        return await self._athread(self.warn, msg)

    async def atrace_flush(self, msg: NoticeRequest) -> bool:
        return await self._athread(self.trace_flush, msg)
