"""The delivery request protocol between qmgr and every delivery agent.

One connection carries one request, as in Postfix (global/deliver_request.c):

    agent -> qmgr   greeting "delivery_protocol"
    qmgr  -> agent  DeliveryRequest   (queue file, sender, nexthop, recipients)
    agent -> qmgr   DeliveryReply     (one RecipientResult per recipient)

The agent reads the message itself from the queue file (queue_name,
queue_id, data_offset); content never crosses this socket.

WHO MARKS WHAT (kill -9 at any moment loses nothing)
    sent      the agent overwrites the recipient's R with D in the queue file
              (pfy.queue.queue_file.mark_done) right after the delivery, before
              it replies, as Postfix's deliver_completed().  If the agent dies
              between the delivery and the mark, the recipient is delivered
              again (at-least-once); if qmgr dies after the mark, nobody is.
    bounced   qmgr marks the recipient done after it has recorded the bounce
              for the non-delivery notice (issue 4: the bounce service), so a
              crash between the two re-tries the recipient rather than lose the
              notice.  ``marked`` tells qmgr the agent has already done it.
    deferred  nothing is marked; qmgr appends the reason to the defer log
              (defer/ID, read by mailq) and moves the message to deferred/.
    Every agent logs its own ``status=`` lines (it knows relay and delays).

TRACE-ONLY REQUESTS (sendmail -bv: flags & DEL_REQ_FLAG_USR_VRFY)
    The agent probes and reports but delivers nothing and marks nothing
    (AgentSession.verify_only; VERIFY_AGENTS lists the agents that do);
    qmgr records every result in trace/ID, marks the recipients done and
    asks the trace service for the report.

A reply-level ``throttle`` (non-empty dsn) says the destination as a whole
failed (connection or handshake failure in smtp/lmtp): qmgr applies negative
concurrency feedback and may declare the destination dead
(SCHEDULER_README, "Concurrency scheduling").  Per-recipient trouble is
reported in the recipient results only.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from pfy.ipc.attr import (FRAME_ATTRS, FRAME_GREETING, FrameParser, ProtocolError,
                          decode_attrs, encode_attrs, encode_greeting, protocol)
# Imported at load, not on first use: chrooted agents (discard, error...)
# cannot import anything once the jail hides the package.
import pfy.log as _log
from pfy.queue.queue_file import CorruptQueueFile, QueueFileReader
from pfy.queue.queue_file import mark_done as _mark_done

__all__ = [
    "PROTOCOL", "ClientInfo", "RequestRecipient", "DeliveryRequest",
    "RecipientResult", "DeliveryReply", "SENT", "DEFERRED", "BOUNCED",
    "DEL_REQ_FLAG_VERIFY", "DEL_REQ_FLAG_EXPAND", "DEL_REQ_FLAG_RECORD",
    "DEL_REQ_FLAG_MTA_VRFY", "DEL_REQ_FLAG_USR_VRFY", "trace_only",
    "DELIVERABLE", "UNDELIVERABLE", "DSN_PASSED", "VERIFY_AGENTS",
    "Delays", "soft_bounce", "read_request", "send_reply", "serve_request",
    "request_nowait", "AgentSession", "deliver_queue_file", "deliver_each",
]

PROTOCOL = "delivery_protocol"

SENT, DEFERRED, BOUNCED = "sent", "deferred", "bounced"
_STATUSES = (SENT, DEFERRED, BOUNCED)

# Postfix global/deliver_request.h request flags, as the queue file's
# "A trace_flags=N" carries them (sendmail -bv / -v write it).
DEL_REQ_FLAG_MTA_VRFY = 1 << 8   # MTA-requested address probe (verify(8))
DEL_REQ_FLAG_USR_VRFY = 1 << 9   # user-requested address probe (sendmail -bv)
DEL_REQ_FLAG_RECORD = 1 << 10    # deliver and record every result (sendmail -v)
DEL_REQ_FLAG_VERIFY = DEL_REQ_FLAG_MTA_VRFY     # older names, kept for callers
DEL_REQ_FLAG_EXPAND = DEL_REQ_FLAG_USR_VRFY
_TRACE_ONLY = DEL_REQ_FLAG_MTA_VRFY | DEL_REQ_FLAG_USR_VRFY


def trace_only(flags: int) -> bool:
    """DEL_REQ_TRACE_ONLY(): probe the address, never deliver."""
    return bool(flags & _TRACE_ONLY)


# Actions of a trace-only request's results (Postfix's "status=deliverable").
DELIVERABLE, UNDELIVERABLE = "deliverable", "undeliverable"
# RecipientResult.action of a "sent" result whose next hop took the DSN
# request along (smtp to a server that announced DSN): that hop sends the
# success notice, so qmgr records none here (Postfix's smtp clears
# NOTIFY=SUCCESS before it calls sent()).
DSN_PASSED = "relayed-dsn"

# Agents (master.cf command names) that honour trace-only requests: they
# probe without delivering and report through AgentSession, which turns
# their sent/bounce/defer into deliverable/undeliverable.  error and
# discard deliver nothing anyway.  qmgr answers trace-only requests for
# every other transport itself ("deliverable via TRANSPORT") rather than
# let an agent deliver mail that was only to be verified; an agent's owner
# adds its name here once it checks ``session.verify_only`` before
# delivering.
VERIFY_AGENTS = frozenset({"error", "discard", "smtp", "lmtp", "local", "virtual", "pipe"})

# Bounds on what an agent accepts from its peer: a recipient list longer than
# any configured per-delivery limit is a broken peer.  default_recipient_limit
# (20000, postconf(5)) is the largest in-memory recipient count qmgr keeps.
MAX_RECIPIENTS = 20000


@protocol(PROTOCOL)
@dataclass(frozen=True)
class ClientInfo:
    """Who submitted the message (queue file A records), for logs and $ENV."""
    name: str = ""
    addr: str = ""
    port: str = ""
    helo: str = ""
    proto: str = ""
    sasl_method: str = ""
    sasl_username: str = ""
    sasl_sender: str = ""
    log_ident: str = ""
    rewrite_context: str = ""


@protocol(PROTOCOL)
@dataclass(frozen=True)
class RequestRecipient:
    address: str
    orig_rcpt: str
    offset: int          # of the recipient's R record in the queue file; -1: none
    dsn_orcpt: str = ""
    dsn_notify: int = 0


@protocol(PROTOCOL)
@dataclass(frozen=True)
class DeliveryRequest:
    flags: int
    queue_name: str
    queue_id: str
    data_offset: int     # first content record
    data_size: int       # content bytes (size record)
    nexthop: str
    encoding: str        # 7bit / 8bit
    smtputf8: int
    sender: str
    dsn_envid: str
    dsn_ret: int
    arrival_time: float  # message arrival (delay= and delays=a)
    active_time: float   # entered the active queue (delays=b)
    client: ClientInfo
    recipients: list[RequestRecipient]


@protocol(PROTOCOL)
@dataclass(frozen=True)
class RecipientResult:
    offset: int          # identifies the request recipient
    address: str
    status: str          # sent / deferred / bounced
    dsn: str             # RFC 3463 code, "2.0.0"
    reason: str          # text after status= in the log, and in DSNs
    marked: bool         # the agent marked it done in the queue file
    # DSN details for bounce/trace logs (RFC 3464 per-recipient fields);
    # optional, so an agent that knows none of them needs no change.
    action: str = ""     # "" (by status) / relayed / expanded / DSN_PASSED /
                         # deliverable / undeliverable (trace-only requests)
    diag_type: str = ""  # Diagnostic-Code type: "smtp" for a server reply
    diag_text: str = ""  #   and its text: "550 5.1.1 <u@example.com>: no such user"
    mta_type: str = ""   # Remote-MTA type: "dns"
    mta_name: str = ""   #   and name: "mx.example.com"


@protocol(PROTOCOL)
@dataclass(frozen=True)
class DeliveryReply:
    throttle_dsn: str    # "" or the status of a destination-level failure
    throttle_reason: str
    results: list[RecipientResult]


def soft_bounce(dsn: str) -> str:
    """soft_bounce = yes: a 5.x.x becomes 4.x.x (postconf(5))."""
    return "4" + dsn[1:] if dsn.startswith("5") else dsn


def check_request(req: DeliveryRequest) -> None:
    """Values the codec cannot check; ProtocolError when a peer is broken."""
    if not req.recipients:
        raise ProtocolError("delivery request without recipients")
    if len(req.recipients) > MAX_RECIPIENTS:
        raise ProtocolError(f"delivery request with {len(req.recipients)} recipients")
    if "/" in req.queue_name or "/" in req.queue_id or req.queue_id in ("", ".", ".."):
        raise ProtocolError(f"bad queue file name {req.queue_name}/{req.queue_id}")


def check_reply(req: DeliveryRequest, reply: DeliveryReply) -> None:
    """Each result names a request recipient, with a known status."""
    offsets = {r.offset for r in req.recipients}
    for res in reply.results:
        if res.status not in _STATUSES:
            raise ProtocolError(f"bad recipient status {res.status!r}")
        if res.offset not in offsets:
            raise ProtocolError(f"result for unknown recipient offset {res.offset}")
        if not (len(res.dsn) >= 5 and res.dsn[0] in "245" and res.dsn[1] == "."):
            raise ProtocolError(f"bad DSN status {res.dsn!r}")


# -- delays= ------------------------------------------------------------------

@dataclass
class Delays:
    """The four parts of delays=a/b/c/d (postconf(5) delay_logging):
    a before the queue manager, b in it, c connection setup, d transmission."""
    arrival: float
    active: float
    handoff: float                 # the agent received the request
    conn_done: float | None = None

    def line(self, now: float) -> tuple[float, tuple[float, float, float, float]]:
        """(delay, (a, b, c, d)) for pfy.log.log_delivery."""
        conn = self.handoff if self.conn_done is None else self.conn_done
        return (now - self.arrival,
                (self.active - self.arrival, self.handoff - self.active,
                 conn - self.handoff, now - conn))


# -- the agent side (blocking, one request per connection) ---------------------

def _read_frame(sock: socket.socket, parser: FrameParser, timeout: float):
    sock.settimeout(timeout)
    while True:
        frames = parser.feed(b"")
        if frames:
            return frames[0]
        data = sock.recv(65536)
        if not data:
            raise ProtocolError("peer closed the connection")
        frames = parser.feed(data)
        if frames:
            if len(frames) > 1:
                raise ProtocolError("unexpected extra frames")
            return frames[0]


def read_request(sock: socket.socket, timeout: float = 60.0) -> DeliveryRequest:
    """Greet, then read and check one request (ProtocolError if bad)."""
    sock.settimeout(timeout)
    sock.sendall(encode_greeting(PROTOCOL))
    frame = _read_frame(sock, FrameParser(), timeout)
    if frame.kind != FRAME_ATTRS:
        raise ProtocolError("expected a delivery request")
    req = decode_attrs(frame.body, DeliveryRequest)
    check_request(req)
    return req


def send_reply(sock: socket.socket, reply: DeliveryReply) -> None:
    sock.sendall(encode_attrs(reply))


def serve_request(sock: socket.socket, handle: Callable[[DeliveryRequest], DeliveryReply],
                  timeout: float = 60.0) -> None:
    """One qmgr connection to a blocking agent: read_request(), then
    send_reply(handle(request)).  A broken request is logged ("delivery
    request: REASON") and the connection dropped: qmgr defers the mail."""
    try:
        req = read_request(sock, timeout=timeout)
    except (ProtocolError, OSError, ValueError) as exc:
        _log.warning(f"delivery request: {exc}")
        return
    send_reply(sock, handle(req))


class AgentSession:
    """What a delivery agent's handler gets: the request and the reporters.

    The handler calls sent(), defer() or bounce() once per recipient.  Each
    logs the status line (through ``log_status``), sent() marks the
    recipient done in the queue file at once; finish() builds the reply,
    deferring any recipient the handler did not report (a bug must not
    make mail disappear).
    """

    def __init__(self, request: DeliveryRequest, queue_fd: int | None,
                 log_status: Callable[..., None] | None = None, soft_bounce_on: bool = False,
                 clock: Callable[[], float] = time.time):
        self.request = request
        self.queue_fd = queue_fd
        self.clock = clock
        self.delays = Delays(request.arrival_time, request.active_time, clock())
        # pfy.log.log_delivery looked up per call (tests replace it).
        self._log = log_status or (lambda **kw: _log.log_delivery(**kw))
        self._soft = soft_bounce_on
        self._results: dict[int, RecipientResult] = {}
        self.throttle: tuple[str, str] | None = None

    @property
    def verify_only(self) -> bool:
        """A trace-only request (sendmail -bv): the agent must probe the
        address (aliases, mailbox, RCPT) and report, never deliver.  Its
        sent() then means "deliverable", bounce() and defer()
        "undeliverable", and nothing is marked done (qmgr does that after
        recording the result for the report)."""
        return trace_only(self.request.flags)

    def _record(self, rcpt: RequestRecipient, status: str, dsn: str, reason: str,
                relay: str, marked: bool, extra: dict) -> None:
        delay, delays = self.delays.line(self.clock())
        action = extra.get("action", "")
        if self.verify_only:
            # Postfix's log line for a probe: status=deliverable / undeliverable.
            action = DELIVERABLE if status == SENT else UNDELIVERABLE
        self._log(queue_id=self.request.queue_id, to=rcpt.address,
                  orig_to=rcpt.orig_rcpt, relay=relay, delay=delay, delays=delays,
                  dsn=dsn, status=action if self.verify_only else status, reason=reason)
        self._results[rcpt.offset] = RecipientResult(
            rcpt.offset, rcpt.address, status, dsn, reason, marked, action=action,
            **{k: v for k, v in extra.items() if k != "action"})

    def reported(self, rcpt: RequestRecipient) -> bool:
        return rcpt.offset in self._results

    # The DSN details (all optional) go into the bounce/trace logs:
    # action=, diag_type=, diag_text=, mta_type=, mta_name= (RecipientResult).
    def sent(self, rcpt: RequestRecipient, reason: str, relay: str, dsn: str = "2.0.0",
             **extra: str) -> None:
        marked = False
        if self.queue_fd is not None and rcpt.offset >= 0 and not self.verify_only:
            _mark_done(self.queue_fd, rcpt.offset)
            marked = True
        self._record(rcpt, SENT, dsn, reason, relay, marked, extra)

    def defer(self, rcpt: RequestRecipient, dsn: str, reason: str, relay: str,
              **extra: str) -> None:
        if not dsn.startswith("4"):
            dsn = "4" + dsn[1:]
        self._record(rcpt, DEFERRED, dsn, reason, relay, False, extra)

    def bounce(self, rcpt: RequestRecipient, dsn: str, reason: str, relay: str,
               **extra: str) -> None:
        if self._soft and not self.verify_only:
            self.defer(rcpt, soft_bounce(dsn), reason, relay, **extra)
            return
        self._record(rcpt, BOUNCED, dsn, reason, relay, False, extra)

    def passed(self, rcpt: RequestRecipient, result: RecipientResult) -> None:
        """Adopt the result of another agent that delivered this recipient
        for us (local's mailbox_transport, Postfix's deliver_pass()); that
        agent has logged it already."""
        self._results[rcpt.offset] = replace(result, offset=rcpt.offset, address=rcpt.address)

    def status(self, rcpt: RequestRecipient, dsn: str, reason: str, relay: str,
               **extra: str) -> None:
        """Report by the DSN class: 2 sent, 4 deferred, 5 bounced."""
        if dsn.startswith("2"):
            self.sent(rcpt, reason, relay, dsn, **extra)
        elif dsn.startswith("5"):
            self.bounce(rcpt, dsn, reason, relay, **extra)
        else:
            self.defer(rcpt, dsn, reason, relay, **extra)

    def finish(self, relay: str, default_reason: str = "delivery agent did not report a status",
               ) -> DeliveryReply:
        for rcpt in self.request.recipients:
            if rcpt.offset not in self._results:
                self.defer(rcpt, "4.3.0", default_reason, relay)
        dsn, why = self.throttle or ("", "")
        return DeliveryReply(dsn, why, [self._results[r.offset] for r in self.request.recipients
                                        if r.offset in self._results])


def deliver_queue_file(req: DeliveryRequest, queue_root: str, relay: str,
                       deliver: Callable[[AgentSession, QueueFileReader], None], *,
                       soft_bounce_on: bool = False) -> DeliveryReply:
    """An agent's handle() around its own work (in Postfix, deliver_request
    opens the queue file for every agent): open the request's queue file
    below queue_root for done marks, let deliver(session, reader) report
    the recipients, and build the reply.  A file that cannot be opened
    defers every recipient, "cannot open queue file: REASON"; a
    CorruptQueueFile out of deliver() is logged and defers the recipients
    not yet reported, "queue file format error"."""
    path = os.path.join(queue_root, req.queue_name, req.queue_id)
    try:
        reader = QueueFileReader(path, writable=True, queue_id=req.queue_id)
    except OSError as exc:
        session = AgentSession(req, None, soft_bounce_on=soft_bounce_on)
        return session.finish(relay, f"cannot open queue file: {exc.strerror}")
    with reader:
        session = AgentSession(req, reader.fd, soft_bounce_on=soft_bounce_on)
        try:
            deliver(session, reader)
        except CorruptQueueFile as exc:
            _log.warning(f"{req.queue_id}: {exc}")
            return session.finish(relay, "queue file format error")
        return session.finish(relay)


def deliver_each(session: AgentSession, relay: str,
                 deliver_one: Callable[[RequestRecipient], None]) -> None:
    """deliver_one(rcpt) for every recipient of the request, one at a time.
    An exception out of one recipient's delivery is logged and defers that
    recipient, "mail system error" (unless it was reported already); the
    others still go: a bug must not lose mail, nor stop the rest."""
    for rcpt in session.request.recipients:
        try:
            deliver_one(rcpt)
        except Exception as exc:   # noqa: BLE001 - defer, never lose
            _log.warning(f"{session.request.queue_id}: delivery to {rcpt.address} "
                         f"failed: {exc!r}")
            if not session.reported(rcpt):
                session.defer(rcpt, "4.3.0", "mail system error", relay)


# -- the qmgr side (sans-I/O pieces; the asyncio driver lives in qmgr) ---------

def request_nowait(req: DeliveryRequest) -> bytes:
    """The bytes qmgr sends once the agent's greeting has arrived."""
    return encode_attrs(req)


def parse_greeting(frame) -> None:
    if frame.kind != FRAME_GREETING or frame.body.decode("ascii", "replace") != PROTOCOL:
        raise ProtocolError("peer does not speak " + PROTOCOL)


def parse_reply(frame, req: DeliveryRequest) -> DeliveryReply:
    if frame.kind != FRAME_ATTRS:
        raise ProtocolError("expected a delivery reply")
    reply = decode_attrs(frame.body, DeliveryReply)
    check_reply(req, reply)
    return reply
