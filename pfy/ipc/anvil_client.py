"""Client of the anvil(8) service, and the smtpd rate-limit policy on top.

anvil counts, per (service, client address), simultaneous connections and
connection / message / recipient / new-TLS-session / AUTH rates per
anvil_rate_time_unit.  smtpd asks at each event and compares the answer with
its smtpd_client_*_limit parameters; the replies and warning lines are
Postfix's (smtpd.c, smtpd_sasl_proto.c).

Never let anvil block mail: every call answers None when anvil cannot be
reached or is slow (a warning is logged at most once a minute), and the
policy then lets the client through, as Postfix does.

Wire: the pfy attribute protocol on private/anvil, protocol "anvil_protocol";
AnvilRequest(request, ident) -> AnvilReply(status, count, rate, mail, rcpt,
newtls, auth).  request is Postfix's: connect, disconnect, message, recipient,
newtls, newtls_status, auth, lookup; ident is "service:addr".
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pfy import log
from pfy.ipc.attr import protocol
from pfy.ipc.channel import AsyncServiceClient    # at import: smtpd runs chrooted
from pfy.smtp.replies import Reply

__all__ = ["PROTOCOL", "AnvilRequest", "AnvilReply", "AnvilClient", "AnvilCounts",
           "RateLimits", "ClientRates", "Verdict", "anvil_ident", "REQUESTS",
           "STAT_OK", "STAT_FAIL"]

PROTOCOL = "anvil_protocol"
STAT_OK, STAT_FAIL = 0, -1          # anvil_clnt.h ANVIL_STAT_OK / ANVIL_STAT_FAIL
REQUESTS = ("connect", "disconnect", "message", "recipient", "newtls",
            "newtls_status", "auth", "lookup")

# An anvil that does not answer within this time is treated as down: a
# rate limit is not worth delaying a client's greeting for.
REQUEST_TIMEOUT = 5.0
RETRY_DELAY = 5.0                    # after a failure, leave anvil alone this long
WARN_INTERVAL = 60.0                 # at most one "anvil unreachable" warning a minute


@protocol(PROTOCOL, message="request")
@dataclass(frozen=True)
class AnvilRequest:
    request: str
    ident: str


@protocol(PROTOCOL, message="reply")
@dataclass(frozen=True)
class AnvilReply:
    status: int
    count: int = 0
    rate: int = 0
    mail: int = 0
    rcpt: int = 0
    newtls: int = 0
    auth: int = 0


def anvil_ident(service: str, addr: str) -> str:
    """anvil_clnt.h ANVIL_IDENT: "service:addr"."""
    return f"{service}:{addr}"


@dataclass(frozen=True)
class AnvilCounts:
    count: int       # simultaneous connections, this one included
    rate: int        # connections in the current time unit


class AnvilClient:
    """One per smtpd process; safe for many sessions (pfy.ipc.channel's
    AsyncServiceClient: lazy connection, requests take turns, never raises)."""

    def __init__(self, path: str = "private/anvil", *, timeout: float = REQUEST_TIMEOUT,
                 clock=time.monotonic):
        self.service = AsyncServiceClient(path, PROTOCOL, timeout=timeout,
                                          retry_delay=RETRY_DELAY, warn_interval=WARN_INTERVAL,
                                          clock=clock)

    async def _call(self, request: str, ident: str) -> AnvilReply | None:
        reply = await self.service.call(AnvilRequest(request, ident), AnvilReply)
        return reply if reply is not None and reply.status == STAT_OK else None

    def close(self) -> None:
        self.service.close()

    async def connect(self, service: str, addr: str) -> AnvilCounts | None:
        r = await self._call("connect", anvil_ident(service, addr))
        return None if r is None else AnvilCounts(r.count, r.rate)

    async def disconnect(self, service: str, addr: str) -> None:
        await self._call("disconnect", anvil_ident(service, addr))

    async def message(self, service: str, addr: str) -> int | None:
        r = await self._call("message", anvil_ident(service, addr))
        return None if r is None else r.rate

    async def recipient(self, service: str, addr: str) -> int | None:
        r = await self._call("recipient", anvil_ident(service, addr))
        return None if r is None else r.rate

    async def newtls(self, service: str, addr: str) -> int | None:
        r = await self._call("newtls", anvil_ident(service, addr))
        return None if r is None else r.rate

    async def newtls_status(self, service: str, addr: str) -> int | None:
        r = await self._call("newtls_status", anvil_ident(service, addr))
        return None if r is None else r.rate

    async def auth(self, service: str, addr: str) -> int | None:
        r = await self._call("auth", anvil_ident(service, addr))
        return None if r is None else r.rate

    async def lookup(self, service: str, addr: str) -> AnvilReply | None:
        return await self._call("lookup", anvil_ident(service, addr))


# ---------------------------------------------------------------------------
# Policy: limits from main.cf, counts from anvil -> Postfix's reply and warning

@dataclass(frozen=True)
class Verdict:
    reply: Reply
    warning: str              # log with logger.warning()


class RateLimits:
    """Per process: the smtpd_client_*_limit values and the exceptions list."""

    def __init__(self, anvil: AnvilClient | None, *, service: str, myhostname: str,
                 connection_count_limit: int = 0, connection_rate_limit: int = 0,
                 message_rate_limit: int = 0, recipient_rate_limit: int = 0,
                 new_tls_session_rate_limit: int = 0, auth_rate_limit: int = 0,
                 exceptions=None):
        self.anvil = anvil
        self.service = service
        self.myhostname = myhostname
        self.connection_count_limit = connection_count_limit
        self.connection_rate_limit = connection_rate_limit
        self.message_rate_limit = message_rate_limit
        self.recipient_rate_limit = recipient_rate_limit
        self.new_tls_session_rate_limit = new_tls_session_rate_limit
        self.auth_rate_limit = auth_rate_limit
        self.exceptions = exceptions

    @classmethod
    def from_config(cls, cfg, anvil: AnvilClient | None, *, service: str, exceptions=None):
        def num(name: str) -> int:
            try:
                return max(0, int(cfg[name]))
            except (KeyError, TypeError, ValueError):
                return 0
        return cls(anvil, service=service, myhostname=cfg.myhostname,
                   connection_count_limit=num("smtpd_client_connection_count_limit"),
                   connection_rate_limit=num("smtpd_client_connection_rate_limit"),
                   message_rate_limit=num("smtpd_client_message_rate_limit"),
                   recipient_rate_limit=num("smtpd_client_recipient_rate_limit"),
                   new_tls_session_rate_limit=num("smtpd_client_new_tls_session_rate_limit"),
                   auth_rate_limit=num("smtpd_client_auth_rate_limit"),
                   exceptions=exceptions)

    @property
    def enabled(self) -> bool:
        """smtpd.c creates its anvil client only when some limit is set."""
        return self.anvil is not None and any((
            self.connection_count_limit, self.connection_rate_limit, self.message_rate_limit,
            self.recipient_rate_limit, self.new_tls_session_rate_limit, self.auth_rate_limit))

    def session(self, name: str, addr: str, namaddr: str, *, exempt: bool = False) -> "ClientRates":
        """exempt=True for clients anvil must not see at all (Postfix: XCLIENT-
        authorized hosts, stand-alone mode)."""
        if not exempt and self.exceptions is not None:
            try:
                exempt = bool(self.exceptions.match(name, addr))
            except Exception as err:        # a table lookup failure: do not limit
                log.warning(f"smtpd_client_event_limit_exceptions: {err}")
                exempt = True
        return ClientRates(self, name, addr, namaddr, exempt or not self.enabled)


class ClientRates:
    """One SMTP session's view: call at each event; None = carry on."""

    def __init__(self, limits: RateLimits, name: str, addr: str, namaddr: str, exempt: bool):
        self.limits = limits
        self.name = name
        self.addr = addr
        self.namaddr = namaddr
        self.exempt = exempt
        self._connected = False

    def _warn(self, what: str, value: int) -> str:
        return f"{what}: {value} from {self.namaddr} for service {self.limits.service}"

    async def connect(self) -> Verdict | None:
        L = self.limits
        if self.exempt:
            return None
        counts = await L.anvil.connect(L.service, self.addr)
        if counts is None:
            return None
        self._connected = True
        reply = Reply(421, "4.7.0", f"{L.myhostname} Error: too many connections from {self.addr}")
        if L.connection_count_limit > 0 and counts.count > L.connection_count_limit:
            return Verdict(reply, self._warn("Connection concurrency limit exceeded", counts.count))
        if L.connection_rate_limit > 0 and counts.rate > L.connection_rate_limit:
            return Verdict(reply, self._warn("Connection rate limit exceeded", counts.rate))
        return None

    async def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            await self.limits.anvil.disconnect(self.limits.service, self.addr)

    async def _rate(self, limit: int, call, reply: Reply, what: str) -> Verdict | None:
        if self.exempt or limit <= 0:
            return None
        rate = await call(self.limits.service, self.addr)
        if rate is not None and rate > limit:
            return Verdict(reply, self._warn(what, rate))
        return None

    async def mail(self) -> Verdict | None:
        L = self.limits
        return await self._rate(L.message_rate_limit, L.anvil.message if L.anvil else None,
                                Reply(450, "4.7.1", f"Error: too much mail from {self.addr}"),
                                "Message delivery request rate limit exceeded")

    async def rcpt(self) -> Verdict | None:
        L = self.limits
        return await self._rate(L.recipient_rate_limit, L.anvil.recipient if L.anvil else None,
                                Reply(450, "4.7.1", f"Error: too many recipients from {self.addr}"),
                                "Recipient address rate limit exceeded")

    async def auth(self) -> Verdict | None:
        L = self.limits
        return await self._rate(L.auth_rate_limit, L.anvil.auth if L.anvil else None,
                                Reply(450, "4.7.1", f"Error: too many AUTH commands from {self.addr}"),
                                "AUTH command rate limit exceeded")

    async def starttls(self) -> Verdict | None:
        """Before STARTTLS: a status query that counts nothing."""
        L = self.limits
        return await self._rate(L.new_tls_session_rate_limit,
                                L.anvil.newtls_status if L.anvil else None,
                                Reply(454, "4.7.0", f"Error: too many new TLS sessions from {self.addr}"),
                                "New TLS session rate limit exceeded")

    async def tls_handshake(self, reused: bool) -> Verdict | None:
        """After a handshake: count it unless the session was resumed.  A
        verdict here (wrapper mode, port 465) is 421 and hang up."""
        L = self.limits
        if reused:
            return None
        return await self._rate(L.new_tls_session_rate_limit, L.anvil.newtls if L.anvil else None,
                                Reply(421, "4.7.0", f"{L.myhostname} Error: too many new TLS "
                                                    f"sessions from {self.addr}"),
                                "New TLS session rate limit exceeded")
