"""Client of trivial-rewrite (private/rewrite): rewrite and resolve.

    from pfy.ipc.rewrite_client import RewriteClient
    rw = RewriteClient(path)                  # $queue_directory/private/rewrite
    rw.rewrite("local", "user")          -> "user@myorigin"       (external form)
    rw.resolve("sender@x", "rcpt@y")     -> ResolveReply(flags, transport, nexthop,
                                                          recipient, ...)

As Postfix's rewrite_clnt.c and resolve_clnt.c, each client remembers its
last answer for 30 seconds: cleanup and smtpd ask the same question many
times in a row (one sender, then its recipients...). The connection is made
on first use and remade after a failure; a request that cannot be answered
for RETRY_LIMIT attempts raises RewriteUnavailable (the caller defers).

The protocol dataclasses below are the wire contract; the server is
pfy/daemons/trivial_rewrite.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from pfy.ipc.attr import ProtocolError, protocol
from pfy.ipc.channel import AttrConnection

__all__ = [
    "PROTOCOL", "RewriteRequest", "RewriteReply", "ResolveRequest", "ResolveReply",
    "RewriteClient", "RewriteUnavailable", "REWRITE_LOCAL", "REWRITE_REMOTE",
]

PROTOCOL = "trivial_rewrite_protocol"
REWRITE_LOCAL = "local"
REWRITE_REMOTE = "remote"

# rewrite_clnt.c / resolve_clnt.c: "last_expire = time + 30".
CACHE_TTL = 30.0
# Answers kept by one client, per kind (rewrite, resolve).
RESOLVE_CACHE_SIZE = 512
# clnt_stream retries forever with a sleep; a bounded number of attempts lets
# the caller defer with 4.3.0 instead of hanging a client session forever.
RETRY_LIMIT = 5
RETRY_DELAY = 1.0


@protocol(PROTOCOL, "rewrite")
@dataclass(frozen=True)
class RewriteRequest:
    rule: str          # "local" or "remote"
    address: str       # external (quoted) form


@protocol(PROTOCOL, "rewrite_reply")
@dataclass(frozen=True)
class RewriteReply:
    flags: int         # 0, or FLAG_FAIL (unknown rule / server trouble)
    address: str


@protocol(PROTOCOL, "resolve")
@dataclass(frozen=True)
class ResolveRequest:
    sender: str        # internal (unquoted) form; "" = null sender
    address: str       # internal form


@protocol(PROTOCOL, "resolve_reply")
@dataclass(frozen=True)
class ResolveReply:
    flags: int         # resolve_clnt.h flags and address class bits
    transport: str
    nexthop: str
    recipient: str

    # Postfix global/resolve_clnt.h values.
    FLAG_FINAL = 1 << 0
    FLAG_ROUTED = 1 << 1
    FLAG_ERROR = 1 << 2
    FLAG_FAIL = 1 << 3
    CLASS_LOCAL = 1 << 8
    CLASS_ALIAS = 1 << 9
    CLASS_VIRTUAL = 1 << 10
    CLASS_RELAY = 1 << 11
    CLASS_DEFAULT = 1 << 12

    @property
    def is_local(self) -> bool:
        return bool(self.flags & self.CLASS_LOCAL)

    @property
    def is_final(self) -> bool:
        """local, virtual alias or virtual mailbox: we are the destination."""
        return bool(self.flags & (self.CLASS_LOCAL | self.CLASS_ALIAS | self.CLASS_VIRTUAL))

    @property
    def relay_ok(self) -> bool:
        """A destination that reject_unauth_destination permits."""
        return bool(self.flags & (self.CLASS_LOCAL | self.CLASS_ALIAS
                                  | self.CLASS_VIRTUAL | self.CLASS_RELAY))

    @property
    def failed(self) -> bool:
        return bool(self.flags & self.FLAG_FAIL)


class RewriteUnavailable(Exception):
    """trivial-rewrite could not be reached: defer (4.3.0)."""


class RewriteClient:
    """Blocking client; thread-safe (one request at a time on one connection)."""

    def __init__(self, path: str, timeout: float = 3600.0, clock=time.monotonic):
        self.path = path
        self.timeout = timeout
        self._clock = clock
        self._conn: AttrConnection | None = None
        self._lock = threading.Lock()
        # Postfix's rewrite_clnt keeps its last answer only; cleanup asks
        # for the sender, each recipient and the header addresses of every
        # message in turn, so one entry would miss nearly every time.
        self._rewritten: dict[tuple[str, str], tuple[float, str]] = {}
        # (sender, address) -> (expiry, reply).  Postfix's resolve_clnt
        # keeps only its last answer; qmgr alternates between recipients
        # (several users, several domains), so a few hundred answers are
        # kept, each for CACHE_TTL so that table changes are seen soon.
        self._resolved: dict[tuple[str, str], tuple[float, ResolveReply]] = {}

    def _request(self, obj, expect):
        last_err: Exception | None = None
        for attempt in range(RETRY_LIMIT):
            try:
                if self._conn is None:
                    self._conn = AttrConnection.connect(self.path, PROTOCOL, timeout=self.timeout)
                return self._conn.request(obj, expect)
            except (OSError, EOFError, ProtocolError) as err:
                last_err = err
                self.close()
                if attempt + 1 < RETRY_LIMIT:
                    time.sleep(RETRY_DELAY)
        raise RewriteUnavailable(f"{self.path}: {last_err}")

    def rewrite(self, rule: str, address: str) -> str:
        with self._lock:
            now = self._clock()
            key = (rule, address)
            hit = self._rewritten.get(key)
            if hit is not None and now < hit[0]:
                return hit[1]
            reply = self._request(RewriteRequest(rule, address), RewriteReply)
            if reply.flags:
                raise RewriteUnavailable(f"rewrite {rule!r} {address!r}: server error")
            if len(self._rewritten) >= RESOLVE_CACHE_SIZE:
                self._rewritten.pop(next(iter(self._rewritten)))
            self._rewritten[key] = (now + CACHE_TTL, reply.address)
            return reply.address

    def resolve(self, sender: str, address: str) -> ResolveReply:
        with self._lock:
            hit = self._cached(sender, address)
            if hit is not None:
                return hit
            reply = self._request(ResolveRequest(sender, address), ResolveReply)
            if not reply.failed:        # never cache "try again later"
                if len(self._resolved) >= RESOLVE_CACHE_SIZE:
                    self._resolved.pop(next(iter(self._resolved)))   # oldest first
                self._resolved[(sender, address)] = (self._clock() + CACHE_TTL, reply)
            return reply

    def resolve_nowait(self, sender: str, address: str) -> ResolveReply | None:
        """The cached answer, or None: never blocks on trivial-rewrite, so
        an event loop (qmgr) can skip the hop to a worker thread when the
        answer is known."""
        with self._lock:
            return self._cached(sender, address)

    def _cached(self, sender: str, address: str) -> ResolveReply | None:
        hit = self._resolved.get((sender, address))
        if hit is None:
            return None
        if self._clock() >= hit[0]:
            del self._resolved[(sender, address)]
            return None
        return hit[1]

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None
