"""Client of Dovecot's authentication protocol (auth-client, version 1.x),
as Postfix's xsasl_dovecot_server.c speaks it, for smtpd_sasl_type = dovecot.

One connection per smtpd process, shared by all its sessions: requests carry
ids and replies are matched by id, so many sessions can authenticate at
once.  Handshake (client first, both directions at once):

    C: VERSION 1 2 / CPID <pid>
    S: VERSION 1 x / MECH <name> <props...>... / SPID / CUID / COOKIE / DONE
    C: AUTH <id> <mech> service=smtp nologin lip= rip= lport= rport= [secured] [resp=<b64>]
    S: CONT <id> <b64>  |  OK <id> user=<name> ...  |  FAIL <id> [reason=...] [temp] ...
    C: CONT <id> <b64>

Fields are TAB separated; values use Dovecot's escaping (\\001 + 1/t/r/n).
Nothing here logs request or reply lines: they carry passwords.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from dataclasses import dataclass

from pfy import log

__all__ = ["DovecotAuth", "DovecotReply", "parse_mech_line", "escape", "unescape",
           "AUTH_TIMEOUT"]

AUTH_TIMEOUT = 10            # Postfix xsasl_dovecot_server.c AUTH_TIMEOUT (seconds)
MAJOR, MINOR = 1, 2          # auth-client protocol we speak (Dovecot 2.x sends 1.2/1.3)
LINE_LIMIT = 65536           # Dovecot's AUTH_CLIENT_MAX_LINE_LENGTH is 16 KiB; be generous
RETRY_DELAY = 1.0            # after a failed connect, new sessions wait this long before retrying


def escape(value: str) -> str:
    """Dovecot str_tabescape(): \\001 -> \\0011, TAB -> \\001t, CR, LF."""
    return (value.replace("\001", "\0011").replace("\t", "\001t")
            .replace("\r", "\001r").replace("\n", "\001n"))


def unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\001" and i + 1 < len(value):
            out.append({"1": "\001", "t": "\t", "r": "\r", "n": "\n"}.get(value[i + 1], value[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_mech_line(args: list[str]) -> tuple[str, frozenset[str]] | None:
    """MECH <name> [props...] -> (NAME, {props}); None when empty."""
    if not args or not args[0]:
        return None
    return args[0].upper(), frozenset(a.lower() for a in args[1:])


@dataclass(frozen=True)
class DovecotReply:
    kind: str                     # "OK" | "CONT" | "FAIL" | "TEMP" (connection trouble)
    data: bytes = b""             # CONT: decoded challenge
    user: str | None = None       # OK/FAIL user=
    reason: str = ""              # FAIL reason= (printable)


def _printable(text: str) -> str:
    # Postfix printable(): anything outside printable ASCII becomes '?'.
    return "".join(c if " " <= c <= "~" else "?" for c in text)


class DovecotAuth:
    """The per-process connection to Dovecot's auth-client socket."""

    def __init__(self, path: str, *, timeout: float = AUTH_TIMEOUT):
        self.path = path
        self.timeout = timeout
        self.mechanisms: tuple[tuple[str, frozenset[str]], ...] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task | None = None
        self._failed_at = 0.0

    @property
    def connected(self) -> bool:
        return self._writer is not None

    async def _open(self):
        p = self.path
        if p.startswith("inet:"):
            host, _, port = p[5:].rpartition(":")
            host = host.strip("[]") or "localhost"
            return await asyncio.open_connection(host, int(port), limit=LINE_LIMIT)
        if p.startswith("unix:"):
            p = p[5:]
        return await asyncio.open_unix_connection(p, limit=LINE_LIMIT)

    async def connect(self) -> bool:
        """Connect and handshake unless connected; False (warning logged) on failure."""
        if self._writer is not None:
            return True
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._writer is not None:
                return True
            if time.monotonic() - self._failed_at < RETRY_DELAY:
                return False
            try:
                reader, writer = await asyncio.wait_for(self._open(), self.timeout)
            except (OSError, asyncio.TimeoutError, ValueError) as err:
                self._failed_at = time.monotonic()
                why = err.strerror if isinstance(err, OSError) and err.strerror else (str(err) or "timeout")
                log.warning(f"SASL: Connect to Dovecot auth socket '{self.path}' failed: {why}")
                return False
            try:
                mechs = await asyncio.wait_for(self._handshake(reader, writer), self.timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, ValueError) as err:
                mechs = None
                log.warning(f"SASL: Couldn't complete handshake with Dovecot auth socket "
                            f"'{self.path}': {type(err).__name__}")
            if mechs is None:
                self._failed_at = time.monotonic()
                writer.close()
                return False
            self.mechanisms = mechs
            self._reader, self._writer = reader, writer
            self._task = asyncio.get_running_loop().create_task(self._read_replies(reader))
            return True

    async def _handshake(self, reader, writer):
        writer.write(f"VERSION\t{MAJOR}\t{MINOR}\nCPID\t{os.getpid()}\n".encode("ascii"))
        await writer.drain()
        mechs: list[tuple[str, frozenset[str]]] = []
        have_mech = False
        while True:
            raw = await reader.readline()
            if not raw:
                log.warning(f"SASL: Dovecot auth socket '{self.path}' closed during handshake")
                return None
            fields = raw.rstrip(b"\r\n").decode("utf-8", "replace").split("\t")
            cmd, args = fields[0], fields[1:]
            if cmd == "VERSION":
                try:
                    major = int(args[0])
                except (IndexError, ValueError):
                    log.warning("SASL: Protocol version error")
                    return None
                if major != MAJOR:
                    log.warning(f"SASL: Protocol version mismatch ({major} vs. {MAJOR})")
                    return None
            elif cmd == "MECH":
                have_mech = True
                m = parse_mech_line(args)
                if m is not None and "private" not in m[1]:
                    mechs.append(m)
            elif cmd == "SPID" and not have_mech:
                # auth-master/auth-userdb send VERSION + SPID only (Postfix's check).
                log.warning("SASL: Connected to wrong auth socket (auth-master instead of auth-client)")
                return None
            elif cmd == "DONE":
                return tuple(mechs)
            # CUID, COOKIE and anything newer: ignored.

    async def _read_replies(self, reader) -> None:
        try:
            while True:
                raw = await reader.readline()
                if not raw:
                    break
                fields = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape").split("\t")
                if fields[0] not in ("OK", "CONT", "FAIL") or len(fields) < 2:
                    continue
                try:
                    rid = int(fields[1])
                except ValueError:
                    continue
                fut = self._pending.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(self._reply(fields[0], fields[2:]))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            self._lost()

    def _lost(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_result(DovecotReply("TEMP", reason="Connection lost to authentication server"))

    @staticmethod
    def _reply(cmd: str, args: list[str]) -> DovecotReply:
        if cmd == "CONT":
            try:
                data = base64.b64decode(args[0] if args else "", validate=True)
            except (binascii.Error, ValueError):
                return DovecotReply("FAIL", reason="Authentication backend error")
            return DovecotReply("CONT", data=data)
        user, reason, temp = None, "", False
        for a in args:
            if a.startswith("user="):
                user = _printable(unescape(a[5:]))
            elif a.startswith("reason="):
                reason = _printable(unescape(a[7:]))
            elif a == "temp" or a == "code=temp_fail":
                temp = True
        if cmd == "OK":
            if not user:
                log.warning("missing Dovecot server OK username field")
                return DovecotReply("FAIL", reason="Authentication backend error")
            return DovecotReply("OK", user=user)
        return DovecotReply("TEMP" if temp else "FAIL", user=user, reason=reason)

    async def _request(self, rid: int, line: str) -> DovecotReply:
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            self._writer.write(line.encode("utf-8", "surrogateescape"))
            await self._writer.drain()
        except (OSError, AttributeError):
            self._pending.pop(rid, None)
            self._lost()
            return DovecotReply("TEMP", reason="Connection lost to authentication server")
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except asyncio.TimeoutError:
            return DovecotReply("TEMP", reason="Connection lost to authentication server")
        finally:
            self._pending.pop(rid, None)

    async def auth(self, mech: str, initial: bytes | None, *, service: str, lip: str, rip: str,
                   lport: int | None, rport: int | None, secured: bool) -> tuple[int, DovecotReply]:
        """Start a request; returns (id, reply). Reconnects once, as Postfix does."""
        for _attempt in range(2):
            if not await self.connect():
                return 0, DovecotReply("TEMP", reason="Can't connect to authentication server")
            self._next_id = self._next_id % 0xFFFFFFF + 1
            rid = self._next_id
            parts = [f"AUTH\t{rid}\t{mech}\tservice={escape(service)}\tnologin"]
            if lip:
                parts.append(f"lip={escape(lip)}")
            if rip:
                parts.append(f"rip={escape(rip)}")
            if lport:
                parts.append(f"lport={int(lport)}")
            if rport:
                parts.append(f"rport={int(rport)}")
            if secured:
                parts.append("secured")
            if initial is not None:
                # RFC 4954 "=" (empty initial response) is "resp=" here.
                parts.append("resp=" + base64.b64encode(initial).decode("ascii"))
            reply = await self._request(rid, "\t".join(parts) + "\n")
            if reply.kind == "TEMP" and self._writer is None and _attempt == 0:
                continue          # the connection died under us: reconnect, try once more
            return rid, reply
        return 0, reply

    async def cont(self, rid: int, data: bytes) -> DovecotReply:
        if self._writer is None:
            return DovecotReply("TEMP", reason="Connection lost to authentication server")
        return await self._request(rid, f"CONT\t{rid}\t{base64.b64encode(data).decode('ascii')}\n")

    def forget(self, rid: int) -> None:
        """The client aborted: ignore a late reply for this id."""
        fut = self._pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.cancel()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._lost()
