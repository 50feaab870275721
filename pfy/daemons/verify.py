"""verify - address verification service, as Postfix's verify(8).

    verify unix - - y - 1 verify          (master.cf; one process)

smtpd asks verify about an address (reject_unverified_recipient,
reject_unverified_sender); verify answers from its cache of address ->
(status, probed time, updated time, text).  When it knows nothing usable
about the address, it answers "in progress" (Postfix's DEL_RCPT_STAT_TODO,
"Address verification in progress") and sends a probe: a message without
content from $address_verify_sender to the address, submitted through
cleanup and marked as a probe (A trace_flags=DEL_REQ_FLAG_MTA_VRFY).  qmgr
hands the probe to the delivery agents in verify-only mode (smtp does MAIL
and RCPT, never DATA; local checks the user...), sends each result here as
an update, and removes the probe without any delivery, defer or bounce
notice.

The cache rules are verify.c's: an entry expires address_verify_positive_
expire_time (deliverable) or address_verify_negative_expire_time (not) after
its last update, and is refreshed by a new probe after address_verify_
positive_refresh_time / address_verify_negative_refresh_time, while queries
go on being answered from it.  A probe in flight is not repeated for 1000
seconds (PROBE_TTL).  A failed probe never replaces a deliverable entry
before it expires.  With address_verify_negative_cache = no, failures are
not stored.

The cache is in memory only: address_verify_map is not used, and the cache
is lost when verify restarts (postfix reload / stop).

SECURITY
    Not security sensitive: it keeps a table in memory, talks only to local
    processes through private/verify, and can run chrooted at fixed low
    privilege.  A compromised verify can make smtpd accept or refuse mail it
    should not, and send probe messages (which are never delivered).

PARAMETERS
    address_verify_sender, address_verify_negative_cache,
    address_verify_positive_expire_time, address_verify_positive_refresh_time,
    address_verify_negative_expire_time, address_verify_negative_refresh_time,
    cleanup_service_name, ipc_timeout (see postconf(5))
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Callable

# Imported here, not in functions: the daemon runs chrooted.
from pfy.ipc.attr import ProtocolError
from pfy.ipc.channel import AsyncAttrConnection
from pfy.ipc.cleanup_client import CleanupClient, CleanupRejected
from pfy.ipc.delivery import DEL_REQ_FLAG_MTA_VRFY
from pfy.ipc.verify_client import (PROTOCOL, REQ_QUERY, REQ_UPDATE, STAT_BOUNCE, STAT_DEFER,
                                   STAT_OK, STAT_TODO, TEXT_IN_PROGRESS, VRFY_STAT_BAD,
                                   VRFY_STAT_OK, VerifyReply, VerifyRequest)

__all__ = ["VerifyCore", "Entry", "serve_client", "submit_probe", "main"]

# verify.c: "Assume that a probe is lost if no response is received in 1000
# seconds."
PROBE_TTL = 1000
MAX_ADDRESS = 1024          # longer than any address smtpd accepts; refuse junk
MAX_WHY = 1024
CLEANUP_FLAG_MAP_OK = 1 << 5     # cleanup_user.h CLEANUP_FLAG_MASK_INTERNAL


@dataclass
class Entry:
    status: int
    probed: float           # when the last probe left (0: none outstanding)
    updated: float          # when the last result came (0: never)
    text: str


class VerifyCore:
    """The cache and its rules, apart from I/O (verify.c
    verify_query_service / verify_update_service)."""

    def __init__(self, *, pos_exp: float, pos_try: float, neg_exp: float, neg_try: float,
                 neg_cache: bool = True, clock: Callable[[], float] = time.time):
        self.pos_exp, self.pos_try = pos_exp, pos_try
        self.neg_exp, self.neg_try = neg_exp, neg_try
        self.neg_cache = neg_cache
        self.clock = clock
        self.cache: dict[str, Entry] = {}

    @classmethod
    def from_config(cls, cfg, clock=time.time) -> "VerifyCore":
        return cls(pos_exp=cfg.address_verify_positive_expire_time,
                   pos_try=cfg.address_verify_positive_refresh_time,
                   neg_exp=cfg.address_verify_negative_expire_time,
                   neg_try=cfg.address_verify_negative_refresh_time,
                   neg_cache=bool(cfg.address_verify_negative_cache), clock=clock)

    @staticmethod
    def key(address: str) -> str:
        # verify.c: "FIX 200501 IPv6 patch did not neuter ":" in address
        # literals"; the key is the address with ":" as "_".
        return address.replace(":", "_")

    def _expired(self, e: Entry, now: float) -> bool:
        if e.status == STAT_OK:
            return e.updated + self.pos_exp < now
        return e.updated + self.neg_exp < now

    def _refresh(self, e: Entry, now: float) -> bool:
        if e.status == STAT_OK:
            return e.updated + self.pos_try < now
        return e.updated + self.neg_try < now

    def query(self, address: str, now: float | None = None) -> tuple[int, str, bool]:
        """(addr_status, text, send_probe)."""
        now = self.clock() if now is None else now
        k = self.key(address)
        e = self.cache.get(k)
        if e is None or (now - e.probed > PROBE_TTL and self._expired(e, now)):
            if e is not None and not self.neg_cache:
                del self.cache[k]
            e = Entry(STAT_TODO, 0, 0, TEXT_IN_PROGRESS)
        status, text = e.status, e.text
        probe = now - e.probed > PROBE_TTL and self._refresh(e, now)
        if probe and (e.updated != 0 or self.neg_cache):
            # Remember that a probe is out, so that the next queries do not
            # send another before PROBE_TTL.
            self.cache[k] = Entry(e.status, now, e.updated, e.text)
        return status, text, probe

    def update(self, address: str, status: int, text: str, now: float | None = None) -> bool:
        """False for a status that is not a result (verify.c VRFY_STAT_BAD)."""
        if status not in (STAT_OK, STAT_DEFER, STAT_BOUNCE):
            return False
        now = self.clock() if now is None else now
        k = self.key(address)
        old = self.cache.get(k)
        # verify.c: "don't allow a failed probe to clobber an OK address
        # before it expires".
        if status == STAT_OK or old is None or old.status != STAT_OK:
            if status != STAT_OK and not self.neg_cache:
                # verify_append(): without negative caching a failure is
                # not stored (a pending record is forgotten).
                if old is not None and old.status != STAT_OK:
                    del self.cache[k]
                return True
            self.cache[k] = Entry(status, 0, now, text)
        return True

    def expire(self, now: float | None = None) -> int:
        """Forget entries past their expiry with no probe outstanding
        (address_verify_cache_cleanup_interval)."""
        now = self.clock() if now is None else now
        dead = [k for k, e in self.cache.items()
                if now - e.probed > PROBE_TTL and self._expired(e, now)]
        for k in dead:
            del self.cache[k]
        return len(dead)


def submit_probe(cleanup_path: str, sender: str, address: str, timeout: float) -> str:
    """One probe through cleanup: no content (verify.c: "Probe messages need
    no body content, because they are never delivered, deferred, or
    bounced").  Blocking: run it off the event loop.  Returns the queue ID."""
    with CleanupClient.open(cleanup_path, CLEANUP_FLAG_MAP_OK, timeout=timeout) as c:
        c.envelope("" if sender == "<>" else sender, [(address, address)],
                   attrs={"rewrite_context": "local",
                          "trace_flags": str(DEL_REQ_FLAG_MTA_VRFY)})
        return c.finish()


class VerifyService:
    def __init__(self, core: VerifyCore, *, cleanup_path: str, sender: str,
                 timeout: float, log):
        self.core = core
        self.cleanup_path = cleanup_path
        self.sender = sender
        self.timeout = timeout
        self.log = log
        self._tasks: set = set()

    def probe(self, address: str) -> None:
        task = asyncio.get_running_loop().create_task(self._probe(address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe(self, address: str) -> None:
        try:
            await asyncio.to_thread(submit_probe, self.cleanup_path, self.sender, address,
                                    self.timeout)
        except CleanupRejected as exc:
            self.log.warning(f"probe for {address} rejected by cleanup: {exc.reason}")
        except (OSError, EOFError, ProtocolError, ValueError) as exc:
            self.log.warning(f"cannot send probe for {address}: {exc}")

    def handle(self, req: VerifyRequest) -> VerifyReply:
        if not req.address or len(req.address) > MAX_ADDRESS:
            return VerifyReply(VRFY_STAT_BAD)
        if req.request == REQ_QUERY:
            status, text, probe = self.core.query(req.address)
            if probe:
                self.probe(req.address)
            return VerifyReply(VRFY_STAT_OK, status, text)
        if req.request == REQ_UPDATE:
            if not self.core.update(req.address, req.addr_status, req.why[:MAX_WHY]):
                self.log.warning(f"bad recipient status {req.addr_status} for recipient "
                                 f"{req.address}")
                return VerifyReply(VRFY_STAT_BAD)
            return VerifyReply(VRFY_STAT_OK)
        self.log.warning(f'unrecognized request: "{req.request[:40]}", ignored')
        return VerifyReply(VRFY_STAT_BAD)


async def serve_client(service: VerifyService, reader, writer) -> None:
    conn = AsyncAttrConnection(reader, writer)
    conn.greet(PROTOCOL)
    await conn.flush()
    while True:
        try:
            req = await conn.receive(VerifyRequest)
        except EOFError:
            return
        except ProtocolError as err:
            service.log.warning(f"verify: bad request: {err}")
            return
        conn.send(service.handle(req))
        await conn.flush()


def main() -> None:
    from pfy.log import logger
    from pfy.server import multi

    def post_jail(ctx) -> None:
        cfg = ctx.cfg
        core = VerifyCore.from_config(cfg)
        sender = cfg.address_verify_sender or "<>"
        ctx.data["service"] = VerifyService(
            core, cleanup_path=os.path.join("public", cfg.cleanup_service_name),
            sender=sender, timeout=float(cfg.ipc_timeout), log=logger)
        interval = max(1, int(cfg.address_verify_cache_cleanup_interval or 0) or 43200)

        def sweep() -> None:
            core.expire()
            ctx.call_later(interval, sweep)

        ctx.call_later(interval, sweep)

    async def session(ctx, reader, writer) -> None:
        await serve_client(ctx.data["service"], reader, writer)

    # solitary: one cache; unlimited: the cache is in memory (verify.c
    # post_jail_init turns max_use and max_idle off without a map).
    multi.serve(session, post_jail=post_jail, solitary=True, unlimited=True)
