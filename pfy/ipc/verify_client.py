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

import time
from dataclasses import dataclass

from pfy.ipc.attr import protocol
from pfy.ipc.channel import AsyncServiceClient    # at import: smtpd runs chrooted

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
    """One per process, shared by its sessions (pfy.ipc.channel's
    AsyncServiceClient: lazy connection, requests take turns, never raises)."""

    def __init__(self, path: str = "private/verify", *, timeout: float = REQUEST_TIMEOUT,
                 clock=time.monotonic):
        self.service = AsyncServiceClient(path, PROTOCOL, timeout=timeout,
                                          retry_delay=RETRY_DELAY, warn_interval=WARN_INTERVAL,
                                          clock=clock)

    async def _call(self, req: VerifyRequest) -> VerifyReply | None:
        return await self.service.call(req, VerifyReply)

    def close(self) -> None:
        self.service.close()

    async def query(self, address: str) -> tuple[int, str] | None:
        """(addr_status, why), or None when the service failed."""
        r = await self._call(VerifyRequest(REQ_QUERY, address))
        if r is None or r.status != VRFY_STAT_OK:
            return None
        return r.addr_status, r.why

    async def update(self, address: str, addr_status: int, why: str) -> bool:
        r = await self._call(VerifyRequest(REQ_UPDATE, address, addr_status, why))
        return r is not None and r.status == VRFY_STAT_OK
