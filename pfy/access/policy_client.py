"""check_policy_service: Postfix's policy delegation protocol (SMTPD_POLICY_README).

The request is "name=value" lines ended by an empty line; the reply is
"action=..." (and possibly other attributes) ended by an empty line.  One
connection per server per process is reused for many requests, as Postfix's
attr_clnt does, within smtpd_policy_service_max_idle (close when idle),
_max_ttl (close when old) and _request_limit; a request that fails is
retried _try_limit times, _retry_delay apart, each step bounded by
_timeout; after that the _default_action answers.  Per-server overrides use
Postfix 3.0's syntax: check_policy_service { inet:host:port, timeout=10s,
default_action=DUNNO, policy_context=foo, max_idle=..., max_ttl=...,
request_limit=..., retry_delay=..., try_limit=... }.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pfy import log
from pfy.config import time_value

__all__ = ["PolicySettings", "PolicyClient", "PolicyError", "parse_policy_arg"]

# Postfix's smtpd_policy_service_* parameters, in the order Postfix logs them.
_SETTINGS = ("default_action", "max_idle", "max_ttl", "request_limit", "retry_delay",
             "timeout", "try_limit", "policy_context")
# attr_clnt.c: a reply line or a whole reply longer than this is an error.
MAX_REPLY = 100_000


class PolicyError(ValueError):
    """A malformed check_policy_service argument (configuration error)."""


@dataclass(frozen=True)
class PolicySettings:
    endpoint: str
    default_action: str
    max_idle: int
    max_ttl: int
    request_limit: int
    retry_delay: int
    timeout: int
    try_limit: int
    policy_context: str


def parse_policy_arg(arg: str, cfg) -> PolicySettings:
    words = [w for w in arg.replace(",", " ").split() if w]
    if not words:
        raise PolicyError('empty policy service: "%s"' % arg)
    values = {k: cfg[f"smtpd_policy_service_{k}"] for k in _SETTINGS}
    endpoint = words[0]
    # "{ endpoint, default_action=450 4.3.0 text }": default_action may have spaces.
    rest = arg.split(None, 1)[1] if len(arg.split(None, 1)) > 1 else ""
    rest = rest.lstrip(", ")
    for item in _split_settings(rest):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or name not in _SETTINGS:
            raise PolicyError(f"policy service syntax error: {arg}")
        value = value.strip()
        if name in ("max_idle", "max_ttl", "retry_delay", "timeout"):
            values[name] = time_value(value, "s") if not isinstance(value, int) else value
        elif name in ("request_limit", "try_limit"):
            values[name] = int(value)
        else:
            values[name] = value
    if not (endpoint.startswith("inet:") or endpoint.startswith("unix:")):
        # Postfix: a bare name is a unix-domain socket (attr_clnt "unix:" default)
        endpoint = "unix:" + endpoint
    return PolicySettings(endpoint, **values)


def _split_settings(text: str) -> list[str]:
    """name=value items separated by commas; a value may contain spaces."""
    out: list[str] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece:
            continue
        if "=" in piece.split(None, 1)[0] or not out:
            out.append(piece)
        else:
            out[-1] += ", " + piece
    return out


def _connect_target(endpoint: str):
    kind, _, where = endpoint.partition(":")
    if kind == "inet":
        if where.startswith("["):
            host, _, port = where[1:].partition("]:")
        else:
            host, _, port = where.rpartition(":")
        return "inet", host or "127.0.0.1", int(port)
    return "unix", where, None


class PolicyClient:
    def __init__(self, settings: PolicySettings, clock=time.monotonic):
        self.s = settings
        self._clock = clock
        self._lock = asyncio.Lock()
        self._reader = self._writer = None
        self._born = 0.0
        self._used = 0.0
        self._count = 0
        self._idle_timer = None

    def close(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass
        self._reader = self._writer = None

    async def _connect(self) -> None:
        kind, host, port = _connect_target(self.s.endpoint)
        if kind == "inet":
            coro = asyncio.open_connection(host, port)
        else:
            coro = asyncio.open_unix_connection(host)
        self._reader, self._writer = await asyncio.wait_for(coro, self.s.timeout)
        self._born = self._clock()
        self._count = 0

    async def _one(self, payload: bytes) -> dict[str, str]:
        now = self._clock()
        if self._writer is not None and (
                now - self._used > self.s.max_idle or now - self._born > self.s.max_ttl
                or (self.s.request_limit and self._count >= self.s.request_limit)):
            self.close()
        if self._writer is None:
            await self._connect()
        self._writer.write(payload)
        await asyncio.wait_for(self._writer.drain(), self.s.timeout)
        attrs: dict[str, str] = {}
        total = 0
        while True:
            line = await asyncio.wait_for(self._reader.readline(), self.s.timeout)
            if not line:
                raise ConnectionError("connection closed by server")
            total += len(line)
            if total > MAX_REPLY:
                raise ConnectionError("reply too long")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text == "":
                break
            name, eq, value = text.partition("=")
            if not eq:
                raise ValueError(f"malformed server reply: {text[:100]}")
            attrs.setdefault(name, value)
        self._count += 1
        self._used = self._clock()
        return attrs

    async def query(self, attrs: list[tuple[str, str]]) -> str:
        """The action for this request; the default action on failure."""
        lines = []
        for name, value in attrs:
            # The protocol is line-based: never let a value end a line early.
            value = str(value).replace("\r", " ").replace("\n", " ")
            lines.append(f"{name}={value}\n")
        payload = ("".join(lines) + "\n").encode("utf-8", "surrogateescape")
        async with self._lock:
            for attempt in range(max(1, self.s.try_limit)):
                try:
                    reply = await self._one(payload)
                    action = reply.get("action")
                    if action is None:
                        log.warning("missing attribute action in input from %s", self.s.endpoint)
                        break
                    return action
                except (OSError, EOFError, ConnectionError, asyncio.TimeoutError, ValueError) as err:
                    self.close()
                    if isinstance(err, asyncio.TimeoutError):
                        why = "timeout"
                    elif isinstance(err, OSError) and err.strerror:
                        why = err.strerror          # "Connection refused", as Postfix words it
                    else:
                        why = str(err) or err.__class__.__name__
                    log.warning("problem talking to server %s: %s", self.s.endpoint.partition(":")[2], why)
                    if attempt + 1 < self.s.try_limit:
                        await asyncio.sleep(self.s.retry_delay)
            return self.s.default_action
