"""The active queue: admit messages, run deliveries, settle each message.

Driven by asyncio on the trigger skeleton's loop.  Blocking work that can
take long (trivial-rewrite lookups) goes to the default executor; queue
file moves and one-byte done marks are quick local system calls.

Crash safety (kill -9 at any moment):
- a message is in exactly one queue folder at a time (rename);
- at start every file left in active/ goes back to incoming/ (Postfix's
  qmgr does the same), and a file is re-read from disk each time it
  enters active/, so recipients marked done are skipped;
- a message leaves active/ only after all its recipients are settled:
  removed when none is left, else moved to deferred/ after the defer log;
- notices come before removal: a bounced recipient is written to bounce/ID
  (fsync) before it is marked done, and bounce/ID (and trace/ID) are
  handed to the bounce service while the queue file still exists (the
  notice quotes it); a failed hand-off keeps the file in deferred/, and
  any later pass that finds the logfile flushes it again.

Settling a message (Postfix's qmgr_active_done() and its continuations):
    defer/ID for this attempt -> bounce flush (bounce/ID) -> trace flush
    (trace/ID: NOTIFY=SUCCESS, sendmail -v/-bv) -> if recipients are
    still deferred: expired? (maximal_queue_lifetime, bounce_queue_lifetime
    for <>) "status=expired, returned to sender" and a defer flush that
    fails them : delay warning due? (the W record) a warning -> deferred/
    with the next retry time as mtime (exponential backoff between
    minimal_backoff_time and maximal_backoff_time), else removed.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from pfy import log
from pfy.daemons.qmgr.scheduler import Delivery, Scheduler
from pfy.dsn.logfile import NOTIFY_SUCCESS, StatusRecord, append_records
from pfy.ipc.attr import ProtocolError
from pfy.ipc.bounce_client import NoticeRequest
from pfy.ipc.delivery import (BOUNCED, DEFERRED, DELIVERABLE, DEL_REQ_FLAG_MTA_VRFY,
                              DEL_REQ_FLAG_RECORD, DEL_REQ_FLAG_USR_VRFY, DSN_PASSED,
                              PROTOCOL, SENT, UNDELIVERABLE, ClientInfo, DeliveryReply,
                              DeliveryRequest, RecipientResult, RequestRecipient,
                              check_reply, trace_only)
from pfy.ipc.verify_client import STAT_BOUNCE as VRFY_BOUNCE, STAT_DEFER as VRFY_DEFER
from pfy.ipc.verify_client import STAT_OK as VRFY_OK
from pfy.queue.directory import Queue, QueueEntry
from pfy.queue.queue_file import CorruptQueueFile, Recipient, mark_done, update_warn_time

__all__ = ["Resolved", "ResolveError", "ActiveQueue", "RetryPolicy", "filter_route"]


@dataclass(frozen=True)
class Resolved:
    transport: str
    nexthop: str
    recipient: str


class ResolveError(Exception):
    """The address resolver failed for a while: defer the recipient."""


@dataclass(frozen=True)
class RetryPolicy:
    """Postfix's retry and expiry parameters, in seconds (postconf(5))."""
    minimal_backoff_time: float = 300.0
    maximal_backoff_time: float = 4000.0
    maximal_queue_lifetime: float = 5 * 86400.0
    bounce_queue_lifetime: float = 5 * 86400.0

    @classmethod
    def from_config(cls, cfg) -> "RetryPolicy":
        lo = float(cfg.minimal_backoff_time)
        # postconf(5): maximal_backoff_time below minimal_backoff_time is
        # raised to it (Postfix's qmgr warns and does the same).
        hi = max(lo, float(cfg.maximal_backoff_time))
        return cls(lo, hi, float(cfg.maximal_queue_lifetime), float(cfg.bounce_queue_lifetime))

    def next_retry(self, now: float, since: float) -> float:
        """qmgr_active_done_3_generic(): the message waits as long as it
        has been queued, clamped to [minimal, maximal]_backoff_time, so the
        interval doubles with each attempt (exponential backoff)."""
        delay = now - since if since > 0 else self.minimal_backoff_time
        return now + min(self.maximal_backoff_time, max(self.minimal_backoff_time, delay))

    def expired(self, now: float, arrival: float, sender: str) -> bool:
        """A bounce (null sender) gets bounce_queue_lifetime, others
        maximal_queue_lifetime; 0 means one attempt only."""
        lifetime = self.maximal_queue_lifetime if sender else self.bounce_queue_lifetime
        return now >= arrival + lifetime


def filter_route(content_filter: str, address: str, default_nexthop: str = "") -> tuple[str, str]:
    """(transport, nexthop) of a REC_FILT "transport:nexthop" record.

    An empty next-hop is default_filter_nexthop, else the recipient's
    domain (Postfix >= 2.7, postconf(5) content_filter)."""
    transport, _, nexthop = content_filter.partition(":")
    if not nexthop:
        nexthop = default_nexthop or address.rpartition("@")[2]
    return transport.strip(), nexthop


@dataclass
class _Message:
    entry: QueueEntry
    fd: int
    sender: str
    arrival: float
    active_time: float
    request_base: dict
    notice: NoticeRequest = None          # what the bounce service needs
    trace_flags: int = 0                  # A trace_flags= (sendmail -bv / -v)
    warn_time: int = 0                    # W record: delay warning due (0: none/sent)
    warn_offset: int = -1
    outstanding: int = 0
    deferred: list = field(default_factory=list)   # (Recipient, StatusRecord)
    bounced: list = field(default_factory=list)    # (Recipient, StatusRecord, marked)
    probed: list = field(default_factory=list)     # verify(8) probe: (Recipient, status, why)

    @property
    def is_probe(self) -> bool:
        """An address probe of verify(8) (DEL_REQ_FLAG_MTA_VRFY): its results
        go to the verify service, never to a notice."""
        return bool(self.trace_flags & DEL_REQ_FLAG_MTA_VRFY) \
            and not self.trace_flags & DEL_REQ_FLAG_USR_VRFY


# Queue file attributes (A records, written by cleanup) that a delivery
# agent logs or exports to commands (local(8) CLIENT_* variables).
_CLIENT_ATTRS = {
    "name": "log_client_name", "addr": "log_client_address", "port": "log_client_port",
    "helo": "log_helo_name", "proto": "log_protocol_name",
    "sasl_method": "sasl_method", "sasl_username": "sasl_username",
    "sasl_sender": "sasl_sender", "log_ident": "log_ident",
    "rewrite_context": "rewrite_context",
}


def _int(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _status(rcpt: Recipient, dsn: str, action: str, reason: str,
            res: RecipientResult | None = None) -> StatusRecord:
    """One recipient's block for bounce/, defer/ or trace/ID."""
    return StatusRecord(
        rcpt.address, dsn, action, reason, orig_rcpt=rcpt.orig_rcpt,
        offset=max(0, rcpt.offset), dsn_orcpt=rcpt.dsn_orcpt, notify=rcpt.dsn_notify,
        diag_type=res.diag_type if res else "", diag_text=res.diag_text if res else "",
        mta_type=res.mta_type if res else "", mta_name=res.mta_name if res else "")


class _NoBounceService:
    """No bounce service configured (unit tests of the engine): every
    notice "fails", so messages that owe one stay queued, never lost."""

    async def _no(self, msg) -> bool:
        return False

    aflush = adefer_flush = awarn = atrace_flush = _no


class ActiveQueue:
    def __init__(self, queue: Queue, scheduler: Scheduler,
                 resolve: Callable[[str, str], Resolved],
                 agent_path: Callable[[str], str], *,
                 active_limit: int = 20000, recipient_limit: int = 20000,
                 retry_delay: float | None = None, ipc_timeout: float = 60.0,
                 retry: RetryPolicy | None = None, bounce=None,
                 default_filter_nexthop: str = "",
                 verify_ok: Callable[[str], bool] = lambda transport: True,
                 verify=None,
                 clock: Callable[[], float] = time.time):
        """bounce: a pfy.ipc.bounce_client.BounceClient (its a* calls);
        verify_ok(transport): whether that transport's agent honours
        trace-only requests (else qmgr answers them itself); verify: a
        pfy.ipc.verify_client.VerifyClient for the results of verify(8)
        probes."""
        self.queue = queue
        self.sched = scheduler
        self.resolve = resolve
        self.agent_path = agent_path
        self.active_limit = active_limit
        self.recipient_limit = recipient_limit
        if retry is None:
            retry = RetryPolicy() if retry_delay is None else RetryPolicy(
                retry_delay, max(retry_delay, RetryPolicy.maximal_backoff_time))
        self.retry = retry
        self.retry_delay = retry.minimal_backoff_time
        self.bounce = bounce or _NoBounceService()
        self.default_filter_nexthop = default_filter_nexthop
        self.verify_ok = verify_ok
        self.verify = verify
        self.ipc_timeout = ipc_timeout
        self.clock = clock
        self.messages: dict[str, _Message] = {}
        self.rcpts_in_memory = 0
        self._tasks: set[asyncio.Task] = set()
        self._feeding = False
        self._again = False
        self._scan_deferred_all: bool | None = None
        self._starved = False
        self.idle = asyncio.Event()

    # -- start-up and scans ------------------------------------------------
    def recover(self) -> None:
        """Move what a previous qmgr left in active/ back to incoming/."""
        for entry in list(self.queue.ready_files("active")):
            try:
                self.queue.move(entry, "incoming")
            except FileNotFoundError:
                pass

    def request_scan(self, deferred: bool = False, all_deferred: bool = False) -> None:
        """Ask for a feed of the active queue (coalesces repeated triggers)."""
        if deferred or all_deferred:
            self._scan_deferred_all = bool(all_deferred or self._scan_deferred_all)
        self._again = True
        if not self._feeding:
            self._spawn(self._feed())

    async def _feed(self) -> None:
        self._feeding = True
        try:
            while self._again:
                self._again = False
                if self._scan_deferred_all is not None:
                    everything, self._scan_deferred_all = self._scan_deferred_all, None
                    self._promote_deferred(everything)
                await self._feed_incoming()
        finally:
            self._feeding = False
            self._check_idle()

    def _promote_deferred(self, everything: bool) -> None:
        """Deferred files whose retry time (mtime, as Postfix) has come go to
        incoming/, where the normal feed picks them up."""
        now = self.clock()
        for entry in list(self.queue.ready_files("deferred")):
            try:
                if not everything and os.stat(entry.path).st_mtime > now:
                    continue
                self.queue.move(entry, "incoming")
            except FileNotFoundError:
                continue

    # -- postqueue -i / -s (pfy's flush(8) stand-in) -------------------------
    def flush_ids(self, queue_ids: list[str]) -> None:
        """Deliver these deferred messages now: a fresh time stamp and
        incoming/, as flush(8)'s flush_one_file()."""
        for qid in queue_ids:
            try:
                entry = self.queue.entry("deferred", qid)
            except ValueError:
                log.warning(f"flush request for bad queue ID: {qid[:100]}")
                continue
            self._send_now(entry)
        self.request_scan()

    async def flush_sites(self, sites: list[str]) -> None:
        """Deliver now the deferred messages with a pending recipient in
        one of ``sites`` (domain names or [address] literals), and forget
        that those destinations were dead."""
        wanted = {s.lower() for s in sites}
        for site in wanted:
            self.sched.flush_dead(site)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._send_sites, wanted)
        self.request_scan()

    def _send_sites(self, wanted: set[str]) -> None:
        # Runs in a worker thread: reading every deferred envelope may take
        # a while on a big queue, and touches only files in deferred/.
        for entry in list(self.queue.ready_files("deferred")):
            try:
                with self.queue.open(entry) as r:
                    env = r.read_envelope()
            except (OSError, CorruptQueueFile, ValueError, UnicodeError):
                continue
            if any(rc.address.rpartition("@")[2].lower() in wanted for rc in env.pending):
                self._send_now(entry)

    def _send_now(self, entry: QueueEntry) -> None:
        now = self.clock()
        try:
            os.utime(entry.path, (now, now))
            self.queue.move(entry, "incoming")
        except FileNotFoundError:
            pass                             # not deferred (any more): nothing to do

    def _room(self) -> bool:
        return (len(self.messages) < self.active_limit
                and (self.rcpts_in_memory < self.recipient_limit or not self.messages))

    async def _feed_incoming(self) -> None:
        entries = []
        for e in self.queue.ready_files("incoming"):
            try:
                entries.append((os.stat(e.path).st_mtime, e))
            except FileNotFoundError:
                continue
        entries.sort(key=lambda x: x[0])      # oldest first, as Postfix's scan order
        for _, entry in entries:
            if not self._room():
                self._starved = True          # fed again when a message leaves
                return
            if entry.queue_id in self.messages:
                continue
            await self._activate(entry)

    async def _activate(self, entry: QueueEntry) -> None:
        try:
            entry = self.queue.move(entry, "active")
        except FileNotFoundError:
            return
        # A deferred message gets a fresh defer log on this attempt.
        try:
            os.unlink(self.queue.log_path("defer", entry.queue_id))
        except FileNotFoundError:
            pass
        try:
            reader = self.queue.open(entry, writable=True)
        except FileNotFoundError:
            return                           # postsuper removed it meanwhile
        except OSError as exc:
            # Postfix's qmgr dies here (msg_fatal); we keep the queue moving
            # and retry the file later instead of leaving it in active/.
            log.warning(f"{entry.queue_id}: open active queue file: {exc.strerror}")
            self._park_deferred(entry)
            return
        try:
            env = reader.read_envelope()
        except (CorruptQueueFile, ValueError, UnicodeError) as exc:
            reader.close()
            self.queue.move_to_corrupt(entry, str(exc).replace(entry.path + ": ", ""),
                                       log=log.warning)
            return
        fd = reader.fd
        reader.fd = -1                       # the message owns the descriptor now
        pending = env.pending
        log.log_qmgr_from(entry.queue_id, env.sender, env.message_size or env.content_size,
                          env.rcpt_count or len(env.recipients))
        client = ClientInfo(**{k: env.attrs.get(v, "") for k, v in _CLIENT_ATTRS.items()})
        trace_flags = _int(env.attrs.get("trace_flags", ""))
        smtputf8 = _int(env.attrs.get("smtputf8", ""))
        msg = _Message(entry, fd, env.sender, env.arrival_time, self.clock(), dict(
            queue_id=entry.queue_id, data_offset=env.data_offset, data_size=env.content_size,
            encoding=env.attrs.get("encoding", ""), smtputf8=smtputf8,
            sender=env.sender, dsn_envid=env.dsn_envid, dsn_ret=env.dsn_ret,
            arrival_time=env.arrival_time, client=client),
            notice=NoticeRequest(entry.queue_name, entry.queue_id, env.sender,
                                 env.attrs.get("encoding", ""), smtputf8=bool(smtputf8),
                                 envid=env.dsn_envid, ret=env.dsn_ret, flags=trace_flags),
            trace_flags=trace_flags, warn_time=env.warn_time, warn_offset=env.warn_offset)
        self.messages[entry.queue_id] = msg
        if env.redirect and pending:
            # REDIRECT (access/header_checks, REC_RDR) overrides all else,
            # once per message: the first pending recipient's record is
            # delivered to the redirect address and the others are not
            # delivered at all (qmgr_message_resolve()).  They keep their
            # R marks; the file goes once that one delivery is settled.
            first = pending[0]
            pending = [Recipient(env.redirect, first.orig_rcpt or first.address,
                                 first.dsn_orcpt, first.dsn_notify, first.offset)]
        if not pending:
            self._settle(msg)
            return
        msg.outstanding = len(pending)
        self.rcpts_in_memory += len(pending)
        if env.filter:
            # content_filter / FILTER (REC_FILT "transport:nexthop"): every
            # recipient goes to the filter, unresolved; the filter re-injects
            # and the copy is routed normally then.
            routes = []
            for r in pending:
                transport, nexthop = filter_route(env.filter, r.address,
                                                  self.default_filter_nexthop)
                routes.append(Resolved(transport, nexthop, r.address) if transport else
                              ResolveError(f"bad content filter: {env.filter[:100]}"))
        else:
            routes = await self._routes(env.sender, pending)
        groups: dict[tuple[str, str], list] = {}
        for rcpt, route in zip(pending, routes):
            if isinstance(route, ResolveError):
                self._result_deferred(msg, rcpt, "4.3.0", str(route))
                continue
            groups.setdefault((route.transport, route.nexthop), []).append((route.recipient, rcpt))
        now = self.clock()
        for (transport, nexthop), items in groups.items():
            refused = self.sched.add(msg, transport, nexthop, items, now)
            for _, handles, (dsn, reason) in refused:
                for rcpt in handles:
                    self._result_deferred(msg, rcpt, dsn or "4.4.1", reason or "destination is dead")
        self.pump()

    async def _routes(self, sender: str, pending: list[Recipient]) -> list:
        # Known answers come from the resolver's cache at once; only a
        # miss costs the hop to a worker thread (the lookup blocks).
        nowait = getattr(self.resolve, "nowait", None)
        routes = [nowait(sender, r.address) for r in pending] if nowait else [None]
        if None in routes:
            loop = asyncio.get_running_loop()
            try:
                routes = await loop.run_in_executor(None, self._resolve_all, sender, pending)
            except Exception as exc:         # noqa: BLE001 - a resolver bug defers, never loses
                routes = [ResolveError(f"address resolver failure: {exc}") for _ in pending]
        return routes

    def _park_deferred(self, entry: QueueEntry) -> None:
        try:
            entry = self.queue.move(entry, "deferred")
            retry = self.clock() + self.retry.minimal_backoff_time
            os.utime(entry.path, (retry, retry))
        except FileNotFoundError:
            pass                             # postsuper removed or held it: fine
        except OSError as exc:
            log.warning(f"{entry.queue_id}: cannot move to deferred queue: {exc.strerror}")

    def _resolve_all(self, sender: str, pending: list[Recipient]) -> list:
        out = []
        for rcpt in pending:
            try:
                out.append(self.resolve(sender, rcpt.address))
            except ResolveError as exc:
                out.append(exc)
        return out

    # -- deliveries ------------------------------------------------------------
    def pump(self) -> None:
        now = self.clock()
        while (d := self.sched.next_delivery(now)) is not None:
            self._spawn(self._deliver(d))

    def _spawn(self, coro) -> None:
        self.idle.clear()
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.panic(f"qmgr task failed: {exc!r}")
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._tasks and not self._feeding:
            self.idle.set()

    async def _deliver(self, d: Delivery) -> None:
        msg: _Message = d.message
        rcpts: list[Recipient] = d.recipients
        req = DeliveryRequest(
            flags=msg.trace_flags, queue_name="active", nexthop=d.nexthop,
            active_time=msg.active_time,
            recipients=[RequestRecipient(r.address, r.orig_rcpt, r.offset, r.dsn_orcpt,
                                         r.dsn_notify) for r in rcpts],
            **msg.request_base)
        throttle = None
        failed = False
        try:
            if trace_only(msg.trace_flags) and not self.verify_ok(d.transport):
                reply = self._verify_for_agent(d, req)
            else:
                reply = await self._call_agent(d.transport, req)
        except (OSError, asyncio.TimeoutError, EOFError, ProtocolError) as exc:
            reason = ("mail transport unavailable" if isinstance(exc, OSError)
                      else "unknown mail transport error")
            if not isinstance(exc, OSError):
                log.warning(f"{msg.entry.queue_id}: {d.transport} agent: {exc}")
            reply = DeliveryReply("", "", [])
            failed = True
            if trace_only(msg.trace_flags):
                # A probe is answered, never retried (Postfix: the verify
                # result is "undeliverable" with the reason).
                self._verify_results(msg, [(r, RecipientResult(
                    r.offset, r.address, DEFERRED, "4.3.0", reason, False)) for r in rcpts])
            else:
                for r in rcpts:
                    self._result_deferred(msg, r, "4.3.0", reason, count=False)
        else:
            if reply.throttle_dsn:
                throttle = (reply.throttle_dsn, reply.throttle_reason)
        by_offset = {r.offset: r for r in rcpts}
        seen = set()
        results = []
        for res in reply.results:
            rcpt = by_offset.get(res.offset)
            if rcpt is None or res.offset in seen:
                continue
            seen.add(res.offset)
            results.append((rcpt, res))
        for r in rcpts:
            if r.offset not in seen and not failed:
                results.append((r, RecipientResult(r.offset, r.address, DEFERRED, "4.3.0",
                                                   "delivery agent did not report a status",
                                                   False)))
        if trace_only(msg.trace_flags):
            self._verify_results(msg, results)
        else:
            self._results(msg, results)
        for other, handles, (dsn, reason) in self.sched.done(d, self.clock(), throttle):
            for r in handles:
                self._result_deferred(other, r, dsn, reason)
        self._finish_recipients(msg, len(rcpts))
        self.pump()

    def _results(self, msg: _Message, results: list) -> None:
        """Settle a delivery's per-recipient results (normal mail)."""
        record_all = bool(msg.trace_flags & DEL_REQ_FLAG_RECORD)     # sendmail -v
        trace: list[StatusRecord] = []
        for rcpt, res in results:
            if res.status == SENT:
                if not res.marked:
                    self._mark(msg, rcpt)
                # NOTIFY=SUCCESS: a success notice, unless the next hop
                # took the DSN request along (it notifies then).
                if record_all or (rcpt.dsn_notify & NOTIFY_SUCCESS and res.action != DSN_PASSED):
                    # A hop that took the DSN request along relayed it
                    # (Postfix's "relayed" for sendmail -v as well).
                    action = ("relayed" if res.action == DSN_PASSED
                              else res.action or "delivered")
                    trace.append(_status(rcpt, res.dsn, action, res.reason, res))
            elif res.status == BOUNCED:
                st = _status(rcpt, res.dsn, "failed", res.reason, res)
                msg.bounced.append((rcpt, st, res.marked))
                if record_all:
                    trace.append(st)
            else:
                st = _status(rcpt, res.dsn, "delayed", res.reason, res)
                msg.deferred.append((rcpt, st))
                if record_all:
                    trace.append(st)
        if trace:
            self._append_log("trace", msg, trace)

    def _verify_results(self, msg: _Message, results: list) -> None:
        """A trace-only message (sendmail -bv): every result is final.  The
        trace record is durable before the recipient is marked done, so a
        crash repeats the probe rather than lose its answer.  A verify(8)
        probe's results wait in msg.probed for the verify service (sent
        when the message settles)."""
        if msg.is_probe:
            for rcpt, res in results:
                # verify_append(): sent = deliverable (DEL_RCPT_STAT_OK); a
                # bounce or a deferral is undeliverable, with its status.
                st = (VRFY_OK if res.status == SENT
                      else VRFY_BOUNCE if res.status == BOUNCED else VRFY_DEFER)
                msg.probed.append((rcpt, st, res.reason))
            return
        trace = []
        for rcpt, res in results:
            action = res.action if res.action in (DELIVERABLE, UNDELIVERABLE) else (
                DELIVERABLE if res.status == SENT else UNDELIVERABLE)
            trace.append(_status(rcpt, res.dsn, action, res.reason, res))
        if not trace:
            return
        if self._append_log("trace", msg, trace):
            for rcpt, _ in results:
                self._mark(msg, rcpt)
        else:
            for rcpt, res in results:
                msg.deferred.append((rcpt, _status(rcpt, "4.3.0", "delayed",
                                                   "cannot record the verification result")))

    async def _probe_updates(self, msg: _Message) -> None:
        """Each result of a verify(8) probe to the verify service, for the
        address as probed and as delivered (verify_append() updates both),
        then the recipient is done: a probe never leaves a notice, and one
        whose answer is lost is sent again by verify after its PROBE_TTL."""
        qid = msg.entry.queue_id
        probed, msg.probed = msg.probed, []
        for rcpt, st, why in probed:
            ok = self.verify is not None
            for addr in dict.fromkeys(a for a in (rcpt.orig_rcpt, rcpt.address) if a):
                if ok:
                    ok = await self.verify.update(addr, st, why)
            if not ok:
                log.warning(f"{qid}: {rcpt.address}: address verification service failure")
            self._mark(msg, rcpt)

    def _verify_for_agent(self, d: Delivery, req: DeliveryRequest) -> DeliveryReply:
        """Answer a trace-only request for an agent that would deliver it
        (not in VERIFY_AGENTS): routing is all we know, so the address is
        deliverable "via" its transport.  Logged as the agent would."""
        from pfy.ipc.delivery import AgentSession
        s = AgentSession(req, None)
        for r in req.recipients:
            s.sent(r, f"delivery via {d.transport}", d.transport)
        return s.finish(d.transport)

    def _append_log(self, which: str, msg: _Message, records: list[StatusRecord],
                    fsync: bool = True) -> bool:
        try:
            append_records(self.queue.log_path(which, msg.entry.queue_id), records, fsync=fsync)
            return True
        except OSError as exc:
            log.warning(f"{msg.entry.queue_id}: cannot append {which} logfile: {exc.strerror}")
            return False

    async def _call_agent(self, transport: str, req: DeliveryRequest) -> DeliveryReply:
        from pfy.ipc.channel import AsyncAttrConnection
        conn = await AsyncAttrConnection.open(self.agent_path(transport), PROTOCOL,
                                              timeout=self.ipc_timeout)
        try:
            conn.send(req)
            async with asyncio.timeout(self.ipc_timeout):
                await conn.flush()
            # No timeout on the reply: the agent enforces its own limits
            # (command_time_limit...), and a dead agent closes the socket.
            reply = await conn.receive(DeliveryReply)
            check_reply(req, reply)
            return reply
        finally:
            conn.close()

    # -- settling ----------------------------------------------------------
    def _close_later(self, fd: int) -> None:
        """Close a queue file off the event loop: the last close of an
        unlinked file frees its blocks, which on a file system mounted
        with "discard" waits for the device (a fifth of qmgr's time in a
        profile of a Maildir stream)."""
        try:
            asyncio.get_running_loop().run_in_executor(None, os.close, fd)
        except RuntimeError:                 # no loop (tests driving _settle)
            os.close(fd)

    def _mark(self, msg: _Message, rcpt: Recipient) -> None:
        try:
            mark_done(msg.fd, rcpt.offset)
        except (OSError, CorruptQueueFile) as exc:
            log.warning(f"{msg.entry.queue_id}: cannot mark recipient done: {exc}")

    def _result_deferred(self, msg: _Message, rcpt: Recipient, dsn: str, reason: str,
                         count: bool = True) -> None:
        msg.deferred.append((rcpt, _status(rcpt, dsn, "delayed", reason)))
        if count:
            self._finish_recipients(msg, 1)

    def _finish_recipients(self, msg: _Message, n: int) -> None:
        msg.outstanding -= n
        self.rcpts_in_memory -= n
        if msg.outstanding <= 0 and msg.entry.queue_id in self.messages:
            self._settle(msg)

    def _settle(self, msg: _Message) -> None:
        """All recipients reported: the message leaves the scheduler now;
        its notices and the queue file move are finished in a task (the
        bounce service is a round trip)."""
        del self.messages[msg.entry.queue_id]
        self.sched.drop_message(msg)
        self._spawn(self._settle_async(msg))

    async def _settle_async(self, msg: _Message) -> None:
        qid = msg.entry.queue_id
        try:
            await self._settle_steps(msg)
        except OSError as exc:
            log.warning(f"{qid}: cannot update queue file: {exc.strerror}")
        finally:
            self._close_later(msg.fd)
        if self._starved and self._room():
            self._starved = False
            self.request_scan()

    def _log_exists(self, which: str, qid: str) -> bool:
        """Whether a non-empty logfile waits to be flushed (an empty one is
        debris: removed, as qmgr_active_done() does)."""
        path = self.queue.log_path(which, qid)
        try:
            if os.stat(path).st_size > 0:
                return True
            os.unlink(path)
        except FileNotFoundError:
            pass
        return False

    async def _settle_steps(self, msg: _Message) -> None:
        qid = msg.entry.queue_id
        if trace_only(msg.trace_flags) and msg.deferred:
            # A probe is answered, not retried: what could not even be
            # tried (resolver failure, dead destination) is undeliverable.
            held, msg.deferred = msg.deferred, []
            self._verify_results(msg, [(r, RecipientResult(r.offset, r.address, DEFERRED,
                                                            st.status, st.reason, False))
                                       for r, st in held])
        if msg.probed:
            await self._probe_updates(msg)
        if msg.bounced:
            # The bounce record is durable before the done mark, so a
            # crash in between repeats the attempt instead of losing the
            # notice.
            append_records(self.queue.log_path("bounce", qid),
                           [st for _, st, _ in msg.bounced], fsync=True)
            for r, _, marked in msg.bounced:
                if not marked:
                    self._mark(msg, r)
        if msg.deferred:
            # Before the notices: the defer flush and the delay warning
            # read this attempt's reasons from it (mailq too).
            append_records(self.queue.log_path("defer", qid),
                           [st for _, st in msg.deferred], fsync=False)
        failed = False
        # Notices while the queue file is still in active/: the bounce
        # service quotes the original message from it.  A logfile left by
        # an earlier pass (crash, or the service was down) is flushed too.
        if self._log_exists("bounce", qid):
            failed |= not await self.bounce.aflush(msg.notice)
        if not failed and self._log_exists("trace", qid):
            failed |= not await self.bounce.atrace_flush(msg.notice)
        if failed:
            log.warning(f"{qid}: bounce or trace service failure")
        if msg.deferred:
            now = self.clock()
            if self.retry.expired(now, msg.arrival, msg.sender):
                log.log_expired(qid, msg.sender)
                if await self.bounce.adefer_flush(msg.notice):
                    # The sender has its notice: nothing is left to try.
                    for r, _ in msg.deferred:
                        self._mark(msg, r)
                    msg.deferred = []
                else:
                    failed = True
                    log.warning(f"{qid}: bounce or trace service failure")
            elif msg.warn_time > 0 and now >= msg.warn_time - 1:
                # delay_warning_time (cleanup's W record): once per message.
                if await self.bounce.awarn(msg.notice):
                    try:
                        update_warn_time(msg.fd, msg.warn_offset, 0)
                    except (OSError, CorruptQueueFile) as exc:
                        log.warning(f"{qid}: cannot update warning time: {exc}")
        if msg.deferred or failed:
            # No fsync of the done marks before this point was needed for
            # removal; a file that stays must keep them across a crash.
            os.fsync(msg.fd)
            try:
                entry = self.queue.move(msg.entry, "deferred")
            except FileNotFoundError:
                return                       # postsuper deleted or held it meanwhile
            # Postfix keeps the next retry time in the file's mtime.
            retry = self.retry.next_retry(self.clock(), msg.arrival)
            os.utime(entry.path, (retry, retry))
        else:
            # No fsync: the file is going away, and the done marks
            # that decided so were written by the agents (as Postfix,
            # which does not fsync a queue file before removing it).
            if self.queue.remove(msg.entry):
                log.log_removed(qid)
