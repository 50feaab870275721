"""anvil - session count and request rate control, as Postfix's anvil(8).

    anvil unix - - y - 1 anvil          (master.cf; one process: -l)

smtpd asks anvil, for each (service, client address) "ident", how many
connections the client has open and how many connections, messages,
recipients, new TLS sessions and AUTH commands it made in the current
anvil_rate_time_unit; smtpd enforces its smtpd_client_*_limit parameters
with the answers (pfy.ipc.anvil_client).  Rates are counted in fixed
windows: the first event after a window of anvil_rate_time_unit has passed
starts a new window with all rates at zero (Postfix anvil.c).  An ident with
no open connection is forgotten one time unit after its last event.

Every anvil_status_update_time, and when it exits, anvil logs the peak
values since the last report, as Postfix does:

    statistics: max connection rate 3/60s for (smtp:127.0.0.1) at Nov 22 10:15:01
    statistics: max connection count 2 for (smtp:127.0.0.1) at Nov 22 10:15:01
    statistics: max cache size 1 at Nov 22 10:15:01

When an smtpd process goes away without saying "disconnect" (it crashed,
or was killed), anvil drops the connections that process had counted.

SECURITY
    Not security sensitive: it keeps counters in memory, talks only to local
    processes through private/anvil, and can run chrooted at fixed low
    privilege.  A compromised anvil can only make smtpd refuse or admit
    clients it should not.

PARAMETERS
    anvil_rate_time_unit, anvil_status_update_time (see postconf(5))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Imported here, not in functions: the daemon runs chrooted, where no
# module can be loaded any more.
from pfy.ipc.attr import ProtocolError
from pfy.ipc.channel import AsyncAttrConnection
from pfy.ipc.anvil_client import (PROTOCOL, REQUESTS, STAT_FAIL, STAT_OK, AnvilReply,
                                  AnvilRequest)

__all__ = ["AnvilCore", "main", "serve_client"]

MAX_INT = 2**31 - 1      # anvil.c counts stop at INT_MAX
MAX_IDENT = 1024         # longer than any service:address; refuse junk


@dataclass
class _Remote:
    start: float                      # start of the current rate window
    count: int = 0                    # open connections
    rate: int = 0                     # connections in this window
    mail: int = 0
    rcpt: int = 0
    newtls: int = 0
    auth: int = 0
    last: float = 0.0                 # last event, for expiry


@dataclass
class _Max:
    value: int = 0
    ident: str = ""
    when: float = 0.0


@dataclass
class _Stats:
    rate: _Max = field(default_factory=_Max)
    count: _Max = field(default_factory=_Max)
    mail: _Max = field(default_factory=_Max)
    rcpt: _Max = field(default_factory=_Max)
    newtls: _Max = field(default_factory=_Max)
    auth: _Max = field(default_factory=_Max)
    cache: _Max = field(default_factory=_Max)


def _stamp(when: float) -> str:
    # anvil.c prints ctime(&when) + 4, "%.15s": "Nov 22 10:15:01".
    return time.ctime(when)[4:19]


class AnvilCore:
    """The counters, apart from I/O; the caller passes the time (wall clock
    seconds: the statistics lines print it)."""

    def __init__(self, time_unit: int, clock=time.time):
        self.time_unit = max(1, int(time_unit))
        self.clock = clock
        self.remotes: dict[str, _Remote] = {}
        self.stats = _Stats()

    # -- bookkeeping -------------------------------------------------------------

    def _remote(self, ident: str, now: float) -> _Remote:
        r = self.remotes.get(ident)
        if r is None:
            r = self.remotes[ident] = _Remote(start=now)
            if len(self.remotes) > self.stats.cache.value:
                self.stats.cache = _Max(len(self.remotes), "", now)
        return r

    def _incr_rate(self, r: _Remote, what: str, now: float) -> int:
        if r.start + self.time_unit < now:
            r.start, r.rate, r.mail, r.rcpt, r.newtls, r.auth = now, 0, 0, 0, 0, 0
        value = getattr(r, what)
        if value < MAX_INT:
            value += 1
            setattr(r, what, value)
        return value

    def _peak(self, what: str, value: int, ident: str, now: float) -> None:
        m: _Max = getattr(self.stats, what)
        if value > m.value:
            setattr(self.stats, what, _Max(value, ident, now))

    def expire(self, now: float | None = None) -> int:
        """Forget idents with no connection and no event for a time unit."""
        now = self.clock() if now is None else now
        dead = [k for k, r in self.remotes.items()
                if r.count <= 0 and r.last + self.time_unit < now]
        for k in dead:
            del self.remotes[k]
        return len(dead)

    # -- requests ------------------------------------------------------------------

    def handle(self, request: str, ident: str, now: float | None = None) -> AnvilReply:
        now = self.clock() if now is None else now
        if request not in REQUESTS or not ident or len(ident) > MAX_IDENT:
            return AnvilReply(STAT_FAIL)
        if request == "lookup":
            r = self.remotes.get(ident)
            if r is None:
                return AnvilReply(STAT_OK)
            return AnvilReply(STAT_OK, r.count, r.rate, r.mail, r.rcpt, r.newtls, r.auth)
        if request == "disconnect":
            r = self.remotes.get(ident)
            if r is not None and r.count > 0:
                r.count -= 1
                r.last = now
            return AnvilReply(STAT_OK)
        if request == "newtls_status":
            r = self.remotes.get(ident)
            if r is None or r.start + self.time_unit < now:
                return AnvilReply(STAT_OK, newtls=0, rate=0)
            return AnvilReply(STAT_OK, rate=r.newtls, newtls=r.newtls)
        r = self._remote(ident, now)
        r.last = now
        if request == "connect":
            rate = self._incr_rate(r, "rate", now)
            if r.count < MAX_INT:
                r.count += 1
            self._peak("rate", rate, ident, now)
            self._peak("count", r.count, ident, now)
            return AnvilReply(STAT_OK, count=r.count, rate=rate)
        what = {"message": "mail", "recipient": "rcpt", "newtls": "newtls", "auth": "auth"}[request]
        rate = self._incr_rate(r, what, now)
        self._peak(what, rate, ident, now)
        return AnvilReply(STAT_OK, rate=rate)

    def drop_connections(self, counted: dict[str, int], now: float | None = None) -> None:
        """An anvil client went away: release the connections it held."""
        now = self.clock() if now is None else now
        for ident, n in counted.items():
            r = self.remotes.get(ident)
            if r is not None and n > 0:
                r.count = max(0, r.count - n)
                r.last = now

    def status_lines(self) -> list[str]:
        """The peak values since the last call (then reset), Postfix's lines."""
        s, unit, out = self.stats, self.time_unit, []
        if s.rate.value > 0:
            out.append(f"statistics: max connection rate {s.rate.value}/{unit}s for "
                       f"({s.rate.ident}) at {_stamp(s.rate.when)}")
        if s.count.value > 0:
            out.append(f"statistics: max connection count {s.count.value} for "
                       f"({s.count.ident}) at {_stamp(s.count.when)}")
        if s.mail.value > 0:
            out.append(f"statistics: max message rate {s.mail.value}/{unit}s for "
                       f"({s.mail.ident}) at {_stamp(s.mail.when)}")
        if s.rcpt.value > 0:
            out.append(f"statistics: max recipient rate {s.rcpt.value}/{unit}s for "
                       f"({s.rcpt.ident}) at {_stamp(s.rcpt.when)}")
        if s.newtls.value > 0:
            out.append(f"statistics: max new TLS sessions {s.newtls.value}/{unit}s for "
                       f"({s.newtls.ident}) at {_stamp(s.newtls.when)}")
        if s.auth.value > 0:
            out.append(f"statistics: max auth rate {s.auth.value}/{unit}s for "
                       f"({s.auth.ident}) at {_stamp(s.auth.when)}")
        if s.cache.value > 0:
            out.append(f"statistics: max cache size {s.cache.value} at {_stamp(s.cache.when)}")
        self.stats = _Stats()
        return out


async def serve_client(core: AnvilCore, reader, writer, log=None) -> None:
    """One anvil client (an smtpd process) for as long as it stays connected."""
    conn = AsyncAttrConnection(reader, writer)
    conn.greet(PROTOCOL)
    await conn.flush()
    counted: dict[str, int] = {}
    try:
        while True:
            try:
                req = await conn.receive(AnvilRequest)
            except EOFError:
                return
            except ProtocolError as err:
                if log:
                    log.warning(f"anvil: bad request: {err}")
                return
            reply = core.handle(req.request, req.ident)
            if reply.status == STAT_OK:
                if req.request == "connect":
                    counted[req.ident] = counted.get(req.ident, 0) + 1
                elif req.request == "disconnect" and counted.get(req.ident, 0) > 0:
                    counted[req.ident] -= 1
            elif log:
                log.warning(f"anvil: unknown request or bad ident: {req.request[:40]!r}")
            conn.send(reply)
            await conn.flush()
    finally:
        core.drop_connections(counted)


def main() -> None:
    from pfy.log import logger
    from pfy.server import multi

    def post_jail(ctx) -> None:
        cfg = ctx.cfg
        core = ctx.data["core"] = AnvilCore(cfg.anvil_rate_time_unit)
        update = max(1, int(cfg.anvil_status_update_time))

        def dump() -> None:
            for line in core.status_lines():
                logger.info(line)

        def tick() -> None:
            dump()
            core.expire()
            ctx.call_later(update, tick)

        def sweep() -> None:
            core.expire()
            ctx.call_later(core.time_unit, sweep)

        ctx.call_later(update, tick)
        ctx.call_later(core.time_unit, sweep)
        ctx.at_exit(dump)

    async def session(ctx, reader, writer) -> None:
        await serve_client(ctx.data["core"], reader, writer, log=logger)

    # solitary: one set of counters; unlimited: the counters must outlive
    # max_use/max_idle (smtpd processes come and go far more often).
    multi.serve(session, post_jail=post_jail, solitary=True, unlimited=True)
