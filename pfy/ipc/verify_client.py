"""Client of the verify(8) address verification service.

    client = VerifyClient("private/verify")
    status, why = await client.query("user@example.com")   # None: service down
    ok = await client.update("user@example.com", STAT_OK, "250 2.1.5 Ok")

smtpd queries (reject_unverified_recipient / reject_unverified_sender);
qmgr updates with the result of each probe.  Calls never block an event
loop and never raise: a verify service that cannot be reached, or does not
answer within the timeout, is None / False (Postfix: VRFY_STAT_FAIL), and
the caller applies unverified_*_tempfail_action.

Wire: the pfy attribute protocol on private/verify, protocol
"verify_protocol"; VerifyRequest(request, address, addr_status, why) ->
VerifyReply(status, addr_status, why).  request is Postfix's: "query" or
"update" (verify_clnt.h VRFY_REQ_QUERY / VRFY_REQ_UPDATE).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pfy import log
from pfy.ipc.attr import ProtocolError, protocol
from pfy.ipc.channel import AsyncAttrConnection    # at import: smtpd runs chrooted

__all__ = ["PROTOCOL", "VerifyRequest", "VerifyReply", "VerifyClient",
           "REQ_QUERY", "REQ_UPDATE", "VRFY_STAT_OK", "VRFY_STAT_FAIL", "VRFY_STAT_BAD",
           "STAT_OK", "STAT_DEFER", "STAT_BOUNCE", "STAT_TODO", "TEXT_IN_PROGRESS"]

PROTOCOL = "verify_protocol"
REQ_QUERY, REQ_UPDATE = "query", "update"                # verify_clnt.h
VRFY_STAT_OK, VRFY_STAT_FAIL, VRFY_STAT_BAD = 0, -1, -2  # verify_clnt.h
# deliver_request.h DEL_RCPT_STAT_*: the address status in the cache.
STAT_OK, STAT_DEFER, STAT_BOUNCE, STAT_TODO = 0, 1, 2, 3
TEXT_IN_PROGRESS = "Address verification in progress"   # verify.c

REQUEST_TIMEOUT = 10.0      # a verify that does not answer in this time is down
RETRY_DELAY = 5.0           # after a failure, leave verify alone this long
WARN_INTERVAL = 60.0


@protocol(PROTOCOL, message="request")
@dataclass(frozen=True)
class VerifyRequest:
    request: str
    address: str
    addr_status: int = 0
    why: str = ""


@protocol(PROTOCOL, message="reply")
@dataclass(frozen=True)
class VerifyReply:
    status: int
    addr_status: int = STAT_TODO
    why: str = ""


class VerifyClient:
    """One per process, shared by its sessions (requests take turns on one
    connection, as Postfix's clnt_stream)."""

    def __init__(self, path: str = "private/verify", *, timeout: float = REQUEST_TIMEOUT,
                 clock=time.monotonic):
        self.path = path
        self.timeout = timeout
        self.clock = clock
        self._conn = None
        self._lock: asyncio.Lock | None = None
        self._down_until = 0.0
        self._warned_at = -WARN_INTERVAL

    async def _call(self, req: VerifyRequest) -> VerifyReply | None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self.clock() < self._down_until:
            return None
        async with self._lock:
            for attempt in range(2):
                try:
                    async with asyncio.timeout(self.timeout):
                        if self._conn is None:
                            self._conn = await AsyncAttrConnection.open(self.path, PROTOCOL)
                        return await self._conn.request(req, VerifyReply)
                except (OSError, EOFError, ProtocolError, asyncio.TimeoutError,
                        asyncio.IncompleteReadError, ValueError) as err:
                    self._drop()
                    # A connection verify closed while idle: one fresh try.
                    if attempt == 0 and not isinstance(
                            err, (asyncio.TimeoutError, FileNotFoundError, ConnectionRefusedError)):
                        continue
                    self._down_until = self.clock() + RETRY_DELAY
                    if self.clock() - self._warned_at >= WARN_INTERVAL:
                        self._warned_at = self.clock()
                        why = getattr(err, "strerror", None) or type(err).__name__
                        log.warning(f"problem talking to service {self.path}: {why}")
                    return None
        return None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def close(self) -> None:
        self._drop()

    async def query(self, address: str) -> tuple[int, str] | None:
        """(addr_status, why), or None when the service failed."""
        r = await self._call(VerifyRequest(REQ_QUERY, address))
        if r is None or r.status != VRFY_STAT_OK:
            return None
        return r.addr_status, r.why

    async def update(self, address: str, addr_status: int, why: str) -> bool:
        r = await self._call(VerifyRequest(REQ_UPDATE, address, addr_status, why))
        return r is not None and r.status == VRFY_STAT_OK
