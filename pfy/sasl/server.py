"""The SASL server of one SMTP session, over one of two backends:

    smtpd_sasl_type = dovecot   Dovecot's auth service (pfy.sasl.dovecot)
    smtpd_sasl_type = pfy       the built-in scrypt user table (pfy.sasl.userdb)

The smtpd driver owns the wire (334 lines, base64, replies); this module
decides.  Outcomes carry Postfix's replies (smtpd_sasl_glue.c) and the
warning line to log; nothing here ever logs a response or a password.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401 - run_in_executor's pool, loaded before chroot
import os
from dataclasses import dataclass

from pfy import log
from pfy.smtp.replies import Reply, AUTH_OK
from pfy.sasl import mechs as _mechs
from pfy.sasl.dovecot import DovecotAuth
from pfy.sasl.security import (BUILTIN_PROPERTIES, SecurityOptions, mechanism_allowed,
                               parse_security_options)
from pfy.sasl.userdb import UserTable, UserTableError, verify_password

__all__ = ["SaslServerFactory", "SaslServer", "Challenge", "Success", "Failure",
           "SaslConfigError", "auth_failed", "auth_temp_failed", "default_user_table"]

REASON_UNAVAILABLE = "(reason unavailable)"     # Postfix's words for an empty reason
BAD_CREDENTIALS = "authentication failure"      # Cyrus SASL's text, as Postfix users know it


class SaslConfigError(Exception):
    """Bad SASL configuration; str() is one line naming the parameter."""


@dataclass(frozen=True)
class Challenge:
    data: bytes                   # raw; the driver base64-encodes it into "334 ..."

    def __repr__(self) -> str:
        return f"Challenge({len(self.data)} bytes)"


@dataclass(frozen=True)
class Success:
    username: str
    reply: Reply = AUTH_OK


@dataclass(frozen=True)
class Failure:
    reply: Reply                  # 535 5.7.8 ... or 454 4.7.0 ...
    log: str                      # the warning line (no AUTH data)
    temporary: bool = False


def auth_failed(reason: str) -> Reply:
    # RFC 4954 6 / smtpd_sasl_glue.c.
    return Reply(535, "5.7.8", f"Error: authentication failed: {reason}")


def auth_temp_failed(reason: str) -> Reply:
    return Reply(454, "4.7.0", f"Temporary authentication failure: {reason}")


def default_user_table(cfg) -> str:
    """pfy_sasl_user_table, or $config_directory/sasl_users while the
    parameter is not declared yet."""
    try:
        value = cfg["pfy_sasl_user_table"]
    except KeyError:
        value = ""
    value = value or f"{cfg.config_directory}/sasl_users"
    for prefix in ("lmdb:", "hash:", "btree:"):
        if value.startswith(prefix):
            value = value[len(prefix):]
    return value


_TABLES: dict[str, UserTable] = {}


def _shared_table(name: str) -> UserTable:
    # py-lmdb allows one environment per file per process: share it.
    path = os.path.realpath(name)
    t = _TABLES.get(path)
    if t is None or t.env is None:
        t = _TABLES[path] = UserTable(name)
    return t


class _MechFilter:
    """smtpd_sasl_mechanism_filter (default "!external, static:rest")."""

    def __init__(self, patterns, cfg):
        from pfy.message.domains import MatchList
        from pfy.tables import open_table
        self.list = MatchList(list(patterns), lambda spec: open_table(spec, cfg)) if patterns else None

    def allows(self, mech: str) -> bool:
        if self.list is None:
            return True
        try:
            return self.list.match(mech.lower())
        except Exception:                     # a table that fails: offer the mechanism
            return True


class SaslServerFactory:
    """Per process: configuration, the backend connection or table."""

    def __init__(self, *, sasl_type: str, options: SecurityOptions, tls_options: SecurityOptions,
                 service: str = "smtp", realm: str = "", dovecot: DovecotAuth | None = None,
                 table: UserTable | None = None, mech_filter=None):
        self.sasl_type = sasl_type
        self.options = options
        self.tls_options = tls_options
        self.service = service
        self.realm = realm
        self.dovecot = dovecot
        self.table = table
        self.mech_filter = mech_filter

    @classmethod
    def from_config(cls, cfg) -> "SaslServerFactory":
        sasl_type = (cfg.smtpd_sasl_type or "").strip().lower()
        try:
            options = parse_security_options(cfg.smtpd_sasl_security_options,
                                             "smtpd_sasl_security_options")
            tls_options = parse_security_options(cfg.smtpd_sasl_tls_security_options,
                                                 "smtpd_sasl_tls_security_options")
        except ValueError as err:
            raise SaslConfigError(str(err)) from None
        service = cfg.smtpd_sasl_service or "smtp"
        if any(c in service for c in "\t\r\n"):
            raise SaslConfigError(f"bad smtpd_sasl_service value: {service!r}")
        common = dict(options=options, tls_options=tls_options, service=service,
                      realm=cfg.smtpd_sasl_local_domain or "",
                      mech_filter=_MechFilter(cfg.smtpd_sasl_mechanism_filter, cfg))
        if sasl_type == "dovecot":
            path = cfg.smtpd_sasl_path
            if not path:
                raise SaslConfigError("smtpd_sasl_type = dovecot needs smtpd_sasl_path "
                                      "(e.g. private/auth)")
            return cls(sasl_type=sasl_type, dovecot=DovecotAuth(path), **common)
        if sasl_type == "pfy":
            name = default_user_table(cfg)
            try:
                table = _shared_table(name)
            except UserTableError as err:
                raise SaslConfigError(f"pfy_sasl_user_table: {err}") from None
            return cls(sasl_type=sasl_type, table=table, **common)
        raise SaslConfigError(f"unsupported SASL server implementation: {cfg.smtpd_sasl_type} "
                              f"(smtpd_sasl_type: use dovecot or pfy)")

    async def connect(self) -> bool:
        if self.dovecot is not None:
            return await self.dovecot.connect()
        return True

    def available_mechanisms(self) -> tuple[tuple[str, frozenset[str]], ...]:
        if self.dovecot is not None:
            return self.dovecot.mechanisms or ()
        return tuple(BUILTIN_PROPERTIES.items())

    async def session(self, *, client_addr: str = "", client_port: int | None = None,
                      server_addr: str = "", server_port: int | None = None,
                      tls_active: bool = False, namaddr: str = "") -> "SaslServer":
        if self.dovecot is not None and not self.dovecot.connected:
            await self.dovecot.connect()          # logs its own warning on failure
        return SaslServer(self, client_addr=client_addr, client_port=client_port,
                          server_addr=server_addr, server_port=server_port,
                          tls_active=tls_active,
                          namaddr=namaddr or f"unknown[{client_addr or 'unknown'}]")

    def close(self) -> None:
        if self.dovecot is not None:
            self.dovecot.close()


class SaslServer:
    """One SMTP session's SASL state."""

    def __init__(self, factory: SaslServerFactory, *, client_addr: str, client_port,
                 server_addr: str, server_port, tls_active: bool, namaddr: str):
        self.factory = factory
        self.client_addr = client_addr
        self.client_port = client_port
        self.server_addr = server_addr
        self.server_port = server_port
        self.tls_active = tls_active
        self.namaddr = namaddr
        self.username: str | None = None
        self.method: str | None = None
        self._mech = None             # built-in mechanism in progress
        self._rid = 0                 # Dovecot request in progress
        self._pending_method: str | None = None

    def tls_established(self) -> None:
        self.tls_active = True

    def mechanisms(self) -> tuple[str, ...]:
        opts = self.factory.tls_options if self.tls_active else self.factory.options
        out = []
        for name, props in self.factory.available_mechanisms():
            if mechanism_allowed(props, opts) and (
                    self.factory.mech_filter is None or self.factory.mech_filter.allows(name)):
                out.append(name)
        return tuple(out)

    # -- the exchange -------------------------------------------------------------

    async def start(self, mech: str, initial_response: bytes | None):
        mech = mech.upper()
        self.abort()
        self._pending_method = mech
        if mech not in self.mechanisms():
            return self._fail("Invalid authentication mechanism")
        if self.factory.dovecot is not None:
            rid, reply = await self.factory.dovecot.auth(
                mech, initial_response, service=self.factory.service, lip=self.server_addr,
                rip=self.client_addr, lport=self.server_port, rport=self.client_port,
                secured=self.tls_active)
            self._rid = rid
            return self._dovecot_outcome(reply)
        self._mech = _mechs.new_mechanism(mech)
        try:
            out = self._mech.start(initial_response)
        except _mechs.MechError as err:
            return self._fail(str(err))
        return await self._builtin_outcome(out)

    async def step(self, response: bytes):
        if self.factory.dovecot is not None and self._rid:
            reply = await self.factory.dovecot.cont(self._rid, response)
            return self._dovecot_outcome(reply)
        if self._mech is None:
            return self._fail("no authentication in progress")
        try:
            out = self._mech.step(response)
        except _mechs.MechError as err:
            return self._fail(str(err))
        return await self._builtin_outcome(out)

    def abort(self) -> None:
        if self._rid and self.factory.dovecot is not None:
            self.factory.dovecot.forget(self._rid)
        self._rid = 0
        self._mech = None

    def close(self) -> None:
        self.abort()

    # -- outcomes -------------------------------------------------------------------

    def _succeed(self, username: str) -> Success:
        self.username = username
        self.method = self._pending_method
        self.abort()
        return Success(username)

    def _fail(self, reason: str, *, user: str | None = None, temporary: bool = False) -> Failure:
        self.abort()
        reason = reason or REASON_UNAVAILABLE
        # Postfix 3.7's line, sasl_username included (fail2ban and friends key on it).
        line = (f"{self.namaddr}: SASL {self._pending_method or '?'} authentication failed: "
                f"{reason}, sasl_username={user if user else '(unavailable)'}")
        return Failure(auth_temp_failed(reason) if temporary else auth_failed(reason),
                       line, temporary)

    def _dovecot_outcome(self, reply):
        if reply.kind == "CONT":
            return Challenge(reply.data)
        if reply.kind == "OK":
            return self._succeed(reply.user)
        return self._fail(reply.reason, user=reply.user, temporary=reply.kind == "TEMP")

    async def _builtin_outcome(self, out):
        if isinstance(out, bytes):
            return Challenge(out)
        cred: _mechs.Credentials = out
        login = cred.authcid
        # smtpd_sasl_local_domain: the realm of names given without one (Cyrus's user_realm).
        key = login if ("@" in login or not self.factory.realm) else f"{login}@{self.factory.realm}"
        try:
            ok = await self._verify(key, cred.password)
        except UserTableError as err:
            log.warning(f"SASL: {err}")
            return self._fail("Authentication backend error", user=login, temporary=True)
        # RFC 4616 2: acting as another identity (authzid) needs an
        # authorization policy; the built-in table has none, so only "self".
        if not ok or (cred.authzid and cred.authzid not in (login, key)):
            return self._fail(BAD_CREDENTIALS, user=login)
        return self._succeed(login)

    async def _verify(self, key: str, password: str) -> bool:
        table = self.factory.table

        def check() -> bool:
            return verify_password(password, table.lookup(key))
        # scrypt takes tens of milliseconds on purpose: off the event loop.
        return await asyncio.get_running_loop().run_in_executor(None, check)
