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
  removed when none is left, else moved to deferred/ after the defer log.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from pfy import log
from pfy.daemons.qmgr.logfile import append_status, format_status
from pfy.daemons.qmgr.scheduler import Delivery, Scheduler
from pfy.ipc.attr import ProtocolError
from pfy.ipc.delivery import (BOUNCED, DEFERRED, PROTOCOL, SENT, ClientInfo,
                              DeliveryReply, DeliveryRequest, RequestRecipient,
                              check_reply)
from pfy.queue.directory import Queue, QueueEntry
from pfy.queue.queue_file import CorruptQueueFile, Recipient, mark_done

__all__ = ["Resolved", "ResolveError", "ActiveQueue"]


@dataclass(frozen=True)
class Resolved:
    transport: str
    nexthop: str
    recipient: str


class ResolveError(Exception):
    """The address resolver failed for a while: defer the recipient."""


@dataclass
class _Message:
    entry: QueueEntry
    fd: int
    sender: str
    arrival: float
    active_time: float
    request_base: dict
    outstanding: int = 0
    deferred: list = field(default_factory=list)   # (Recipient, dsn, reason)
    bounced: list = field(default_factory=list)


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


class ActiveQueue:
    def __init__(self, queue: Queue, scheduler: Scheduler,
                 resolve: Callable[[str, str], Resolved],
                 agent_path: Callable[[str], str], *,
                 active_limit: int = 20000, recipient_limit: int = 20000,
                 retry_delay: float = 300.0, ipc_timeout: float = 60.0,
                 clock: Callable[[], float] = time.time):
        self.queue = queue
        self.sched = scheduler
        self.resolve = resolve
        self.agent_path = agent_path
        self.active_limit = active_limit
        self.recipient_limit = recipient_limit
        self.retry_delay = retry_delay
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
        msg = _Message(entry, fd, env.sender, env.arrival_time, self.clock(), dict(
            queue_id=entry.queue_id, data_offset=env.data_offset, data_size=env.content_size,
            encoding=env.attrs.get("encoding", ""), smtputf8=_int(env.attrs.get("smtputf8", "")),
            sender=env.sender, dsn_envid=env.dsn_envid, dsn_ret=env.dsn_ret,
            arrival_time=env.arrival_time, client=client))
        self.messages[entry.queue_id] = msg
        if not pending:
            self._settle(msg)
            return
        msg.outstanding = len(pending)
        self.rcpts_in_memory += len(pending)
        # Known answers come from the resolver's cache at once; only a
        # miss costs the hop to a worker thread (the lookup blocks).
        nowait = getattr(self.resolve, "nowait", None)
        routes = [nowait(env.sender, r.address) for r in pending] if nowait else [None]
        if None in routes:
            loop = asyncio.get_running_loop()
            try:
                routes = await loop.run_in_executor(None, self._resolve_all, env.sender, pending)
            except Exception as exc:         # noqa: BLE001 - a resolver bug defers, never loses
                routes = [ResolveError(f"address resolver failure: {exc}") for _ in pending]
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

    def _park_deferred(self, entry: QueueEntry) -> None:
        try:
            entry = self.queue.move(entry, "deferred")
            retry = self.clock() + self.retry_delay
            os.utime(entry.path, (retry, retry))
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
            flags=0, queue_name="active", nexthop=d.nexthop, active_time=msg.active_time,
            recipients=[RequestRecipient(r.address, r.orig_rcpt, r.offset, r.dsn_orcpt,
                                         r.dsn_notify) for r in rcpts],
            **msg.request_base)
        throttle = None
        failed = False
        try:
            reply = await self._call_agent(d.transport, req)
        except (OSError, asyncio.TimeoutError, EOFError, ProtocolError) as exc:
            reason = ("mail transport unavailable" if isinstance(exc, OSError)
                      else "unknown mail transport error")
            if not isinstance(exc, OSError):
                log.warning(f"{msg.entry.queue_id}: {d.transport} agent: {exc}")
            reply = DeliveryReply("", "", [])
            failed = True
            for r in rcpts:
                self._result_deferred(msg, r, "4.3.0", reason, count=False)
        else:
            if reply.throttle_dsn:
                throttle = (reply.throttle_dsn, reply.throttle_reason)
        by_offset = {r.offset: r for r in rcpts}
        seen = set()
        for res in reply.results:
            rcpt = by_offset.get(res.offset)
            if rcpt is None or res.offset in seen:
                continue
            seen.add(res.offset)
            if res.status == SENT:
                if not res.marked:
                    self._mark(msg, rcpt)
            elif res.status == BOUNCED:
                msg.bounced.append((rcpt, res.dsn, res.reason, res.marked))
            else:
                msg.deferred.append((rcpt, res.dsn, res.reason))
        for r in rcpts:
            if r.offset not in seen and not failed:
                msg.deferred.append((r, "4.3.0", "delivery agent did not report a status"))
        for other, handles, (dsn, reason) in self.sched.done(d, self.clock(), throttle):
            for r in handles:
                self._result_deferred(other, r, dsn, reason)
        self._finish_recipients(msg, len(rcpts))
        self.pump()

    async def _call_agent(self, transport: str, req: DeliveryRequest) -> DeliveryReply:
        from pfy.ipc.channel import AsyncAttrConnection
        conn = await AsyncAttrConnection.open(self.agent_path(transport), PROTOCOL,
                                              timeout=self.ipc_timeout)
        try:
            conn.send(req)
            await asyncio.wait_for(conn.flush(), self.ipc_timeout)
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
        msg.deferred.append((rcpt, dsn, reason))
        if count:
            self._finish_recipients(msg, 1)

    def _finish_recipients(self, msg: _Message, n: int) -> None:
        msg.outstanding -= n
        self.rcpts_in_memory -= n
        if msg.outstanding <= 0 and msg.entry.queue_id in self.messages:
            self._settle(msg)

    def _settle(self, msg: _Message) -> None:
        """All recipients reported: record bounces, then defer or remove."""
        qid = msg.entry.queue_id
        del self.messages[qid]
        self.sched.drop_message(msg)
        try:
            if msg.bounced:
                # The bounce record is durable before the done mark, so a
                # crash in between repeats the attempt instead of losing
                # the notice (issue 4's bounce service reads bounce/ID).
                append_status(self.queue.log_path("bounce", qid), [
                    format_status(r.address, r.orig_rcpt, r.offset, r.dsn_orcpt,
                                  r.dsn_notify, dsn, "failed", reason)
                    for r, dsn, reason, _ in msg.bounced], fsync=True)
                for r, _, _, marked in msg.bounced:
                    if not marked:
                        self._mark(msg, r)
            if msg.deferred:
                append_status(self.queue.log_path("defer", qid), [
                    format_status(r.address, r.orig_rcpt, r.offset, r.dsn_orcpt,
                                  r.dsn_notify, dsn, "delayed", reason)
                    for r, dsn, reason in msg.deferred], fsync=False)
                os.fsync(msg.fd)
                entry = self.queue.move(msg.entry, "deferred")
                # Postfix keeps the next retry time in the file's mtime.
                retry = self.clock() + self.retry_delay
                os.utime(entry.path, (retry, retry))
            else:
                # No fsync: the file is going away, and the done marks
                # that decided so were written by the agents (as Postfix,
                # which does not fsync a queue file before removing it).
                if self.queue.remove(msg.entry):
                    log.log_removed(qid)
        except OSError as exc:
            log.warning(f"{qid}: cannot update queue file: {exc.strerror}")
        finally:
            self._close_later(msg.fd)
        if self._starved and self._room():
            self._starved = False
            self.request_scan()
