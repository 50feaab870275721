"""The smtp/lmtp delivery logic: one delivery request, many at once.

A request (pfy.ipc.delivery) names a next hop and recipients.  The agent
finds targets (routing.py), takes a cached session or connects, says
EHLO/LHLO, does STARTTLS and AUTH as policy says, runs the pipelined
transaction with the sans-I/O core (pfy.smtp.client), streams the content
from the queue file, and reports each recipient: sent (marked done at
once), deferred or bounced, with Postfix's reason texts and log lines.

Session failures (connect, greeting, handshake, lost connection) move the
recipients still to do on to the next MX address, up to
smtp_mx_session_limit sessions and smtp_mx_address_limit addresses, then
smtp_fallback_relay; a 4xx for a recipient likewise tries the next host,
as Postfix's smtp does.  After the final dot nothing is retried elsewhere
(that could deliver twice).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import time
from dataclasses import dataclass, replace

from pfy import log
from pfy.config import split_list
from pfy.daemons.smtp.cache import ConnectionCache
from pfy.daemons.smtp.routing import (RouteError, Target, our_addresses, parse_nexthop,
                                      resolve)
from pfy.ipc.delivery import DSN_PASSED, AgentSession, DeliveryRequest, trace_only
from pfy.smtp.client import (BOUNCED, DEFERRED, DSN_NOTIFY_SUCCESS, SENT, BodyEncoder,
                             ClientReply, Features, Outcome, ProtocolViolation, SmtpClient,
                             Transaction, TxRecipient, in_reply_to)
from pfy.smtp.sasl_client import SaslClient, SaslError, choose_mechanism, lookup_credentials
from pfy.tables import TableTempFail
from pfy.dns import DnsStatus
from pfy.tls import dane
from pfy.tls.client import ClientTlsPolicy, parse_policy

__all__ = ["Agent", "Settings"]

# Queue-file bytes read (and so content bytes handed to the socket) per
# batch: bounded memory, one chunk plus at most one record carried over.
READ_CHUNK = 65536
# A record carried over between reads is at most pfy.queue.record's
# MAX_RECORD (1 MiB) plus its header; more is a corrupt file.
MAX_CARRY = (1 << 20) + 6


class SessionFailed(Exception):
    """This session (or this target) cannot be used; ``dsn`` class says
    whether the recipients are deferred (4) or bounced (5)."""

    def __init__(self, dsn: str, reason: str, try_next: bool = True, after_dot: bool = False,
                 diag: str = "", mta: str = ""):
        super().__init__(reason)
        self.dsn = dsn
        self.reason = reason
        # The server's reply and name when the failure is its word (a 5xx
        # greeting, a refused EHLO): Diagnostic-Code and Remote-MTA.
        self.diag = diag
        self.mta = mta
        self.try_next = try_next
        self.after_dot = after_dot
        self.relay = "none"          # host[addr]:port once connected
        # An opportunistic (level may) STARTTLS handshake failed: the same
        # address may be tried again in plaintext (_connect()).
        self.tls_retry_plain = False


@dataclass
class Settings:
    """main.cf values for one service (smtp_* or lmtp_*), read once."""
    lmtp: bool
    helo_name: str
    port: int
    timeouts: dict
    skip_5xx_greeting: bool
    never_send_ehlo: bool
    line_limit: int
    mx_address_limit: int
    mx_session_limit: int
    host_lookup: list
    protocols: list
    bind4: str
    bind6: str
    fallback_relay: list
    tls_level: str
    sasl_enable: bool
    sasl_filter: list
    sasl_options: list
    sasl_tls_options: list
    sender_dependent_auth: bool
    cache_on_demand: bool
    cache_destinations: list
    cache_time_limit: int
    reuse_time_limit: int
    downgrade_ok: bool
    smtputf8_enable: bool
    myhostname: str
    soft_bounce: bool
    discard_ehlo: list
    min_backoff: int
    assume_final: bool
    dnssec: bool = False                 # smtp_dns_support_level = dnssec
    dane_insecure_mx: str = "may"        # smtp_tls_dane_insecure_mx_policy
    force_tlsa: bool = False             # smtp_tls_force_insecure_host_tlsa_lookup

    @classmethod
    def from_config(cls, cfg, lmtp: bool) -> "Settings":
        p = "lmtp" if lmtp else "smtp"
        g = lambda n: cfg[f"{p}_{n}"]            # noqa: E731
        hello = "lhlo" if lmtp else "helo"
        level = (g("tls_security_level") or "").strip().lower()
        if not level:
            level = "encrypt" if g("enforce_tls") else ("may" if g("use_tls") else "none")
        port_text = str(g("tcp_port"))
        try:
            port = int(port_text) if port_text.isdigit() else socket.getservbyname(port_text, "tcp")
        except OSError:
            port = 24 if lmtp else 25
        return cls(
            lmtp=lmtp, helo_name=g(f"{hello}_name"), port=port,
            timeouts={
                "connect": g("connect_timeout"), "helo": g(f"{hello}_timeout"),
                "starttls": g("starttls_timeout"), "mail": g("mail_timeout"),
                "rcpt": g("rcpt_timeout"), "data_init": g("data_init_timeout"),
                "data_xfer": g("data_xfer_timeout"), "data_done": g("data_done_timeout"),
                "quit": g("quit_timeout"), "rset": g("rset_timeout"),
            },
            skip_5xx_greeting=g("skip_5xx_greeting"),
            never_send_ehlo=False if lmtp else g("never_send_ehlo"),
            line_limit=g("line_length_limit"),
            mx_address_limit=g("mx_address_limit"), mx_session_limit=g("mx_session_limit"),
            host_lookup=g("host_lookup"), protocols=cfg.inet_protocols,
            bind4=g("bind_address"), bind6=g("bind_address6"),
            fallback_relay=_as_list(g("fallback_relay")), tls_level=level,
            sasl_enable=g("sasl_auth_enable"), sasl_filter=g("sasl_mechanism_filter"),
            sasl_options=g("sasl_security_options"),
            sasl_tls_options=g("sasl_tls_security_options"),
            sender_dependent_auth=g("sender_dependent_authentication"),
            cache_on_demand=g("connection_cache_on_demand"),
            cache_destinations=g("connection_cache_destinations"),
            cache_time_limit=g("connection_cache_time_limit"),
            reuse_time_limit=g("connection_reuse_time_limit"),
            downgrade_ok=not cfg.disable_mime_output_conversion,
            smtputf8_enable=cfg.smtputf8_enable, myhostname=cfg.myhostname,
            soft_bounce=cfg.soft_bounce,
            discard_ehlo=(g("discard_lhlo_keywords") if lmtp else g("discard_ehlo_keywords")),
            min_backoff=cfg.minimal_backoff_time,
            assume_final=bool(cfg.lmtp_assume_final) if lmtp else False,
            dnssec=(g("dns_support_level") or "").strip().lower() == "dnssec",
            dane_insecure_mx=(cfg["smtp_tls_dane_insecure_mx_policy"] or "may").strip().lower(),
            force_tlsa=bool(g("tls_force_insecure_host_tlsa_lookup")),
        )


class Session:
    """One live connection to a server."""

    def __init__(self, reader, writer, target: Target, lmtp: bool, clock=time.monotonic):
        self.reader = reader
        self.writer = writer
        self.target = target
        self.client = SmtpClient(lmtp=lmtp)
        self.features = Features()
        self.tls = False
        self.created = clock()
        self.uses = 0
        self.broken = False
        self.dest = ""

    def usable(self, now: float, reuse_limit: float) -> bool:
        return (not self.broken and not self.reader.at_eof()
                and now - self.created < reuse_limit and not self.writer.is_closing())

    async def flush(self, timeout: float) -> None:
        data = self.client.data_to_send()
        if data:
            self.writer.write(data)
        await drain(self.writer, timeout)

    async def reply(self, timeout: float) -> tuple[str, ClientReply]:
        while True:
            got = self.client.pop_reply()
            if got is not None:
                return got
            # asyncio.timeout() arms one timer; wait_for() would also make
            # a task per read, which is most of the agent's CPU per message.
            async with asyncio.timeout(timeout or None):
                data = await self.reader.read(65536)
            if not data:
                raise ConnectionResetError("EOF")
            self.client.receive(data)


async def drain(writer, timeout: float) -> None:
    """Wait (at most ``timeout``) until the kernel took what we wrote.
    Small writes go straight into the socket: then there is nothing to
    wait for, and no timer or task is made (the common case per command)."""
    transport = writer.transport
    if transport.get_write_buffer_size() == 0 and not transport.is_closing():
        return
    async with asyncio.timeout(timeout or None):
        await writer.drain()


class Agent:
    def __init__(self, cfg, lmtp: bool, resolver=None, tls=None, sasl_maps=None,
                 policy_maps=None, clock=time.time):
        self.cfg = cfg
        self.lmtp = lmtp
        self.s = Settings.from_config(cfg, lmtp)
        self.resolver = resolver
        self.tls = tls
        self.sasl_maps = sasl_maps
        self.policy_maps = policy_maps
        self.clock = clock
        self.ours = our_addresses(cfg)
        self.cache = ConnectionCache(self.s.cache_time_limit, self.s.reuse_time_limit,
                                     self._quit)
        self.name = "lmtp" if lmtp else "smtp"

    # -- one request ---------------------------------------------------------
    async def deliver(self, req: DeliveryRequest, queue_fd: int | None) -> "object":
        conn_use = [0]

        def log_status(**kw):
            log.log_delivery(**kw, conn_use=conn_use[0])
        s = AgentSession(req, queue_fd, log_status=log_status, soft_bounce_on=self.s.soft_bounce,
                         clock=self.clock)
        rcpts = [TxRecipient(r.address, r.orig_rcpt, r.dsn_orcpt, r.dsn_notify, key=r)
                 for r in req.recipients]
        try:
            await self._deliver(req, s, rcpts, queue_fd, conn_use)
        except Exception as exc:   # noqa: BLE001 - our bug defers, never loses mail
            log.warning(f"{req.queue_id}: {self.name} delivery failed: {exc!r}")
            for r in rcpts:
                if r.outcome is None:
                    r.outcome = Outcome(DEFERRED, "4.3.0", "mail system error")
        relay = "none"
        for r in rcpts:
            out = r.outcome or Outcome(DEFERRED, "4.3.0", "delivery agent did not report a status")
            relay = getattr(r, "relay", "none")
            if not s.reported(r.key):
                conn_use[0] = getattr(r, "conn_use", 0)
                s.status(r.key, out.dsn, out.reason, relay, **_dsn_details(r, out))
        return s.finish(relay)

    def _nexthop_text(self, req: DeliveryRequest) -> str:
        if req.nexthop:
            return req.nexthop
        addr = req.recipients[0].address
        return addr.rpartition("@")[2] if "@" in addr else self.s.myhostname

    async def _deliver(self, req, s: AgentSession, rcpts, queue_fd, conn_use) -> None:
        nh_text = self._nexthop_text(req)
        try:
            nexthop = parse_nexthop(nh_text, self.s.port, self.lmtp)
        except RouteError as e:
            self._settle_all(rcpts, e.dsn, e.reason)
            return
        # SMTPUTF8 needed but which server offers it is known only later;
        # checked per session in _transact().
        cache_key = (nh_text, req.sender if self.s.sender_dependent_auth else "")
        caching = self.s.cache_on_demand or nh_text in self.s.cache_destinations \
            or nexthop.host in self.s.cache_destinations
        sessions = 0
        last: SessionFailed | None = None
        # 1. a cached session for this next hop
        sess = self.cache.get(cache_key) if caching else None
        if sess is not None:
            try:
                sess.client.send_command("RSET", "RSET")
                await sess.flush(self.s.timeouts["rset"])
                kind, reply = await sess.reply(self.s.timeouts["rset"])
                if reply.klass != 2:
                    raise ConnectionResetError("RSET refused")
            except (OSError, asyncio.TimeoutError, ProtocolViolation, EOFError):
                self._abort(sess)
                sess = None
        if sess is not None:
            s.delays.conn_done = self.clock()
            try:
                done = await self._run_session(req, s, sess, rcpts, queue_fd, conn_use, nexthop,
                                               cache_key, caching, more_targets=True)
            except SessionFailed as e:
                done = False
                last = e
            if done:
                return
        # 2. targets from the routing
        try:
            targets = await resolve(nexthop, resolver=self.resolver, host_lookup=self.s.host_lookup,
                                    protocols=self.s.protocols,
                                    mx_address_limit=self.s.mx_address_limit,
                                    ours=self.ours if not self.lmtp else set(), lmtp=self.lmtp)
        except RouteError as e:
            targets = []
            last = SessionFailed(e.dsn, e.reason)
            if e.dsn.startswith("5") or not self.s.fallback_relay:
                self._settle_all(rcpts, e.dsn, e.reason)
                if e.dsn.startswith("4"):
                    s.throttle = (e.dsn, e.reason)
                return
        targets = list(targets)
        fallback_used = False
        i = 0
        while True:
            if i >= len(targets):
                if fallback_used or not self.s.fallback_relay or self.lmtp:
                    break
                fallback_used = True
                for fb in self.s.fallback_relay:
                    try:
                        fnh = parse_nexthop(fb, self.s.port, False)
                        targets += await resolve(fnh, resolver=self.resolver,
                                                 host_lookup=self.s.host_lookup,
                                                 protocols=self.s.protocols,
                                                 mx_address_limit=self.s.mx_address_limit,
                                                 ours=self.ours)
                    except RouteError as e:
                        last = SessionFailed(e.dsn, e.reason)
                if i >= len(targets):
                    break
                sessions = 0
            if sessions >= self.s.mx_session_limit > 0:
                i += 1
                if not fallback_used:
                    continue
                break
            t = targets[i]
            i += 1
            try:
                sess = await self._connect(t, req, nexthop)
            except SessionFailed as e:
                if e.reason.startswith("connect to"):
                    log.info(e.reason)          # Postfix logs each failed address
                last = e
                if not e.try_next:
                    break
                continue
            sessions += 1
            s.delays.conn_done = self.clock()
            more = i < len(targets) or (not fallback_used and bool(self.s.fallback_relay))
            try:
                done = await self._run_session(req, s, sess, rcpts, queue_fd, conn_use, nexthop,
                                               cache_key, caching, more_targets=more)
            except SessionFailed as e:
                last = e
                if not e.try_next:
                    break
                continue
            if done:
                return
        # Nothing (more) to try: settle everyone still open.
        if last is None:
            last = SessionFailed("4.4.1", "no route to destination")
        for r in rcpts:
            if r.outcome is None:
                r.outcome = Outcome(BOUNCED if last.dsn.startswith("5") else DEFERRED,
                                    last.dsn, last.reason, last.diag)
                r.relay = last.relay
                r.mta = last.mta
        if last.dsn.startswith("4") and not any(r.outcome.status == SENT for r in rcpts):
            s.throttle = (last.dsn, last.reason)

    def _settle_all(self, rcpts, dsn: str, reason: str) -> None:
        status = BOUNCED if dsn.startswith("5") else DEFERRED
        for r in rcpts:
            if r.outcome is None:
                r.outcome = Outcome(status, dsn, reason)

    # -- connection setup ---------------------------------------------------------
    async def _connect(self, t: Target, req, nexthop) -> Session:
        """A ready session (greeting, EHLO, STARTTLS, AUTH done) with ``t``.

        When an opportunistic TLS handshake fails, the same address is tried
        again at once with TLS off, as Postfix's smtp_connect.c does
        (RETRY_AS_PLAINTEXT), but only under its conditions
        (PLAINTEXT_FALLBACK_OK_AFTER_STARTTLS_FAILURE): the message has
        waited in the queue at least minimal_backoff_time before this
        delivery (so a first attempt defers and mail to a host with a
        passing TLS fault is not sent in the clear at once), and no SASL
        password would go to this server (a password never follows a
        failed handshake in plaintext).
        """
        policy = await self._target_policy(t, nexthop)
        try:
            return await self._connect_once(t, req, nexthop, policy, plaintext=False)
        except SessionFailed as e:
            if not e.tls_retry_plain or not self._plaintext_fallback_ok(req, nexthop, t):
                raise
        return await self._connect_once(t, req, nexthop, policy, plaintext=True)

    async def _target_policy(self, t: Target, nexthop):
        """The TLS policy for this target, before connecting (Postfix's
        smtp_tls_policy_cache_query() in smtp_connect.c): a policy that
        cannot be used ("TLSA lookup error", dane-only without TLSA) is a
        warning and a deferral for this address, as Postfix's
        "TLS policy lookup for dest/host: reason"."""
        policy = self._tls_policy(nexthop) if (self.tls or self.s.tls_level != "none") else None
        if policy is None or policy.level not in ("dane", "dane-only"):
            return policy
        try:
            return await self._dane_policy(policy, t, nexthop)
        except SessionFailed as e:
            log.warning(f"TLS policy lookup for {nexthop.text}/{t.hostname}: {e.reason}")
            raise

    async def _dane_policy(self, policy: ClientTlsPolicy, t: Target, nexthop) -> ClientTlsPolicy:
        """smtp_tls_policy.c dane_init(): the effective level at ``t``."""
        dest = nexthop.text
        only = policy.level == "dane-only"

        def incompat(kind: str, text: str) -> ClientTlsPolicy:
            # dane_incompat(): dane falls back (to encrypt when records
            # exist but cannot authenticate, else may); dane-only defers.
            if kind == "config":
                log.warning(text)
                if only:
                    raise SessionFailed("4.7.5", "client TLS configuration problem")
            elif only:
                raise SessionFailed("4.7.5", text)
            return replace(policy, level="encrypt" if kind == "cantauth" else "may")
        if t.unix:
            log.warning(f"{dest}: the \"dane\" security level is invalid for delivery via "
                        f"unix-domain sockets")
            raise SessionFailed("4.7.5", "client TLS configuration problem")
        hosts = [h.lower() for h in (self.s.host_lookup if not isinstance(self.s.host_lookup, str)
                                     else self.s.host_lookup.replace(",", " ").split())]
        if not self.s.dnssec or "dns" not in hosts or self.resolver is None:
            return incompat("config", f"{dest}: {policy.level} configured with dnssec "
                                      f"lookups disabled")
        insecure_mx = t.mx_dnssec is False
        if insecure_mx and (only or self.s.dane_insecure_mx in ("may", "none")):
            return incompat("dest", "non DNSSEC destination")
        records: list = []
        if t.dnssec or self.s.force_tlsa:
            ans = await self.resolver.tlsa(t.port, t.hostname)
            if ans.status is DnsStatus.TEMPFAIL:
                raise SessionFailed("4.7.5", f"TLSA lookup error for {t.hostname}:{t.port}")
            if ans.found and ans.secure:
                records = [r for r in (dane.parse_tlsa(x) for x in ans.records) if r is not None]
        if not records:
            return incompat("dest", "no TLSA records found")
        good = dane.usable(records, self.tls.dane_digests if self.tls else
                           dane.digest_types(["sha512", "sha256"]))
        if not good:
            return incompat("cantauth", "TLSA records unusable")
        if insecure_mx and self.s.dane_insecure_mx == "encrypt":
            return incompat("cantauth", "Verification not possible, MX RRset is insecure")
        # RFC 7672 3.2.3: DANE-TA reference identifier: the TLSA base domain
        # (the MX host name); name checks are not configurable.
        return replace(policy, level="dane", tlsa=tuple(good), dane_names=(t.hostname,),
                       half_dane=insecure_mx)

    def _plaintext_fallback_ok(self, req, nexthop, t: Target) -> bool:
        if req.active_time - req.arrival_time < self.s.min_backoff:
            return False
        if self.s.sasl_enable and self.sasl_maps is not None:
            try:
                creds = lookup_credentials(self.sasl_maps, host=t.hostname, nexthop=nexthop.text,
                                           sender=req.sender,
                                           sender_dependent=self.s.sender_dependent_auth)
            except TableTempFail:
                return False
            if creds is not None:
                return False
        return True

    async def _connect_once(self, t: Target, req, nexthop, policy, plaintext: bool) -> Session:
        to = self.s.timeouts
        where = t.relay
        try:
            if t.unix:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(t.address, limit=1 << 16), to["connect"] or None)
                t = Target(self.s.myhostname, t.address, 0, unix=True)
            else:
                fam = socket.AF_INET6 if ":" in t.address else socket.AF_INET
                bind = self.s.bind6 if fam == socket.AF_INET6 else self.s.bind4
                local = (bind, 0) if bind else None
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(t.address, t.port, family=fam, local_addr=local,
                                            limit=1 << 16), to["connect"] or None)
        except asyncio.TimeoutError:
            raise SessionFailed("4.4.1", f"connect to {where}: Connection timed out") from None
        except OSError as err:
            # asyncio's "Connect call failed (...)" carries the errno: use
            # the C library's text, as Postfix's "Connection refused".
            why = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
            raise SessionFailed("4.4.1", f"connect to {where}: {why}") from None
        sess = Session(reader, writer, t, self.lmtp)
        sess.dest = nexthop.host or nexthop.text
        try:
            try:
                await self._handshake(sess, req, nexthop, policy, plaintext)
            except SessionFailed:
                self._abort(sess)
                raise
            except (OSError, EOFError, asyncio.IncompleteReadError):
                self._abort(sess)
                raise SessionFailed("4.4.2", f"lost connection with {t.namaddr} while "
                                             f"{sess.client.in_progress()}") from None
            except asyncio.TimeoutError:
                self._abort(sess)
                raise SessionFailed("4.4.2", f"conversation with {t.namaddr} timed out while "
                                             f"{sess.client.in_progress()}") from None
            except ProtocolViolation as e:
                self._abort(sess)
                raise SessionFailed("4.5.0", f"host {t.namaddr} said: {e} (protocol error)") from None
        except SessionFailed as e:
            e.relay = t.relay
            raise
        return sess

    def _tls_policy(self, nexthop):
        level = self.s.tls_level
        pol = self.tls.default_policy(level) if self.tls else ClientTlsPolicy(level)
        if self.policy_maps is not None:
            keys = [nexthop.text, nexthop.host]
            parts = nexthop.host.split(".")
            keys += ["." + ".".join(parts[i:]) for i in range(1, len(parts))]
            for k in keys:
                if not k:
                    continue
                val = self.policy_maps.lookup(k)
                if val is not None:
                    base = self.tls.default_policy(val.split()[0].lower()) if self.tls and val.split() \
                        else ClientTlsPolicy()
                    try:
                        return parse_policy(val, base)
                    except Exception as e:   # noqa: BLE001 - bad table entry: defer
                        raise SessionFailed("4.7.5", f"TLS policy lookup for {k}: {e}",
                                            try_next=False) from None
        return pol

    async def _handshake(self, sess: Session, req, nexthop, policy,
                         plaintext: bool = False) -> None:
        to = self.s.timeouts
        c = sess.client
        t = sess.target
        c.expect("GREETING")
        kind, greet = await sess.reply(to["helo"])
        if greet.klass != 2:
            # smtp_skip_5xx_greeting: a 5xx greeting means "try the next host".
            if greet.klass == 5 and not self.s.skip_5xx_greeting:
                raise SessionFailed(greet.dsn, f"host {t.namaddr} refused to talk to me: {greet.text}",
                                    diag=greet.text, mta=t.hostname)
            dsn = "4" + greet.dsn[1:] if greet.klass == 5 else greet.dsn
            raise SessionFailed(dsn, f"host {t.namaddr} refused to talk to me: {greet.text}",
                                diag=greet.text, mta=t.hostname)
        await self._hello(sess, esmtp=not self.s.never_send_ehlo)
        if policy is not None and policy.enabled and not t.unix and not plaintext:
            if sess.features.starttls and self.tls is not None:
                await self._starttls(sess, policy, nexthop)
            elif policy.mandatory:
                raise SessionFailed("4.7.4", f"TLS is required, but was not offered by host "
                                             f"{t.namaddr}")
        if self.s.sasl_enable and self.sasl_maps is not None:
            await self._auth(sess, req, nexthop)

    async def _hello(self, sess: Session, esmtp: bool) -> None:
        to = self.s.timeouts
        c = sess.client
        t = sess.target
        kind, line = c.hello_command(self.s.helo_name, esmtp)
        c.send_command(kind, line)
        await sess.flush(to["helo"])
        _, reply = await sess.reply(to["helo"])
        if reply.klass != 2 and kind == "EHLO":
            # RFC 5321 3.2: fall back to HELO when EHLO is refused.
            kind, line = c.hello_command(self.s.helo_name, esmtp=False)
            c.send_command(kind, line)
            await sess.flush(to["helo"])
            _, reply = await sess.reply(to["helo"])
        if reply.klass != 2:
            raise SessionFailed(reply.dsn, f"host {t.namaddr} refused to talk to me: {reply.text}"
                                if reply.klass == 5 else
                                f"host {t.namaddr} said: {reply.text} (in reply to "
                                f"{in_reply_to(kind)} command)",
                                diag=reply.text, mta=t.hostname)
        # smtp_proto.c: a server that greets with our own name is us.
        words = reply.texts()[0].split() if reply.lines else []
        if not self.lmtp and words and words[0].lower() == self.s.myhostname.lower():
            raise SessionFailed("5.4.6", f"mail for {sess.dest} loops back to myself",
                                try_next=False)
        sess.features = Features.from_ehlo(reply, self.s.discard_ehlo) if kind != "HELO" \
            else Features()

    async def _starttls(self, sess: Session, policy, nexthop) -> None:
        to = self.s.timeouts
        c = sess.client
        t = sess.target
        c.send_command("STARTTLS", "STARTTLS")
        await sess.flush(to["starttls"])
        _, reply = await sess.reply(to["starttls"])
        if reply.klass != 2:
            if policy.mandatory:
                raise SessionFailed("4.7.4", f"TLS is required, but host {t.namaddr} refused "
                                             f"to start TLS: {reply.text}",
                                    diag=reply.text, mta=t.hostname)
            return
        ctx = self.tls.context(policy)
        try:
            await asyncio.wait_for(sess.writer.start_tls(
                ctx, server_hostname=t.hostname if not _is_ip(t.hostname) else None),
                to["starttls"] or None)
        except ssl.SSLCertVerificationError:
            raise SessionFailed("4.7.5", "Server certificate not trusted") from None
        except (ssl.SSLError, OSError, asyncio.TimeoutError) as err:
            log.info(f"SSL_connect error to {t.relay}: {_ssl_error_text(err)}")
            e = SessionFailed("4.7.5", "Cannot start TLS: handshake failure")
            e.tls_retry_plain = policy.level == "may"
            raise e from None
        c.tls_started()
        sess.tls = True
        sslobj = sess.writer.get_extra_info("ssl_object")
        check = self.tls.check_peer(sslobj, policy, t.hostname, nexthop.host)
        if check.verify_error:
            # tls_verify.c tls_log_verify_error(), before the summary line.
            log.info(f"server certificate verification failed for {t.relay}: "
                     f"{check.verify_error}")
        log.info(self.tls.log_line(check.level_word, t.relay, sslobj))
        if check.reason and policy.level in ("verify", "secure", "fingerprint", "dane"):
            raise SessionFailed("4.7.5", check.reason)
        await self._hello(sess, esmtp=True)

    async def _auth(self, sess: Session, req, nexthop) -> None:
        to = self.s.timeouts
        c = sess.client
        t = sess.target
        try:
            creds = lookup_credentials(self.sasl_maps, host=t.hostname, nexthop=nexthop.text,
                                       sender=req.sender,
                                       sender_dependent=self.s.sender_dependent_auth)
        except TableTempFail:
            raise SessionFailed("4.3.0", "smtp_sasl_password_maps lookup error",
                                try_next=False) from None
        if creds is None or not sess.features.auth:
            return
        opts = self.s.sasl_tls_options if sess.tls else self.s.sasl_options
        mech = choose_mechanism(sess.features.auth, self.s.sasl_filter, opts)
        if mech is None:
            log.warning("SASL authentication failure: No worthy mechs found")
            raise SessionFailed("4.7.0", f"SASL authentication failed; cannot authenticate to "
                                         f"server {t.namaddr}: no mechanism available")
        sc = SaslClient(mech, creds[0], creds[1])
        c.send_command("AUTH", sc.initial_command())
        await sess.flush(to["helo"])
        while True:
            _, reply = await sess.reply(to["helo"])
            if reply.code == 334:
                try:
                    c.send_command("AUTHDATA", sc.respond(reply.texts()[0].strip()))
                except SaslError as e:
                    c.send_command("AUTHDATA", "*")          # RFC 4954 4: cancel
                    await sess.flush(to["helo"])
                    raise SessionFailed("4.7.0", f"SASL authentication failed; server "
                                                 f"{t.namaddr}: {e}") from None
                await sess.flush(to["helo"])
                continue
            if reply.klass == 2:
                return
            raise SessionFailed("4.7.0" if reply.klass == 4 else reply.dsn.replace("5.", "4.", 1),
                                f"SASL authentication failed; server {t.namaddr} said: "
                                f"{reply.text}", diag=reply.text, mta=t.hostname)

    # -- the transaction ------------------------------------------------------------
    async def _run_session(self, req, s, sess: Session, rcpts, queue_fd, conn_use, nexthop,
                           cache_key, caching, more_targets: bool) -> bool:
        """Deliver what is open over this session; True when every recipient
        has a final outcome (or one we will not retry elsewhere)."""
        t = sess.target
        open_rcpts = [r for r in rcpts if r.outcome is None]
        sess.uses += 1
        try:
            await self._transact(req, sess, open_rcpts, queue_fd)
        except SessionFailed as e:
            self._abort(sess)
            e.relay = t.relay
            raise
        except (OSError, EOFError, asyncio.IncompleteReadError) as exc:
            self._abort(sess)
            where = sess.client.in_progress()
            reason = f"lost connection with {t.namaddr} while {where}"
            after_dot = "end of data" in where
            for r in open_rcpts:
                if r.outcome is None and after_dot:
                    r.outcome = Outcome(DEFERRED, "4.4.2", reason)
            if after_dot:
                self._mark_relay(open_rcpts, t, sess)
                return True
            e = SessionFailed("4.4.2", reason)
            e.relay = t.relay
            raise e from exc
        except asyncio.TimeoutError:
            self._abort(sess)
            where = sess.client.in_progress()
            reason = f"conversation with {t.namaddr} timed out while {where}"
            if "end of data" in where:
                for r in open_rcpts:
                    if r.outcome is None:
                        r.outcome = Outcome(DEFERRED, "4.4.2", reason)
                self._mark_relay(open_rcpts, t, sess)
                return True
            e = SessionFailed("4.4.2", reason)
            e.relay = t.relay
            raise e from None
        except ProtocolViolation as e:
            self._abort(sess)
            f = SessionFailed("4.5.0", f"host {t.namaddr} said: {e} (protocol error)")
            f.relay = t.relay
            raise f from None
        self._mark_relay(open_rcpts, t, sess)
        # Report final outcomes now (sent ones are marked done at once).
        for r in open_rcpts:
            if r.outcome is None:
                continue
            if r.outcome.status == DEFERRED and more_targets:
                # Postfix tries the next MX host for soft-failed recipients.
                r.retry_outcome = r.outcome
                r.outcome = None
                r.accepted = False
                continue
            conn_use[0] = sess.uses if sess.uses > 1 else 0
            s.status(r.key, r.outcome.dsn, r.outcome.reason, t.relay,
                     **_dsn_details(r, r.outcome))
        if caching and not sess.broken:
            self.cache.put(cache_key, sess)
        else:
            await self._quit(sess)
        if any(r.outcome is None for r in rcpts):
            return False
        return True

    def _mark_relay(self, rcpts, t: Target, sess: Session) -> None:
        dsn_server = sess.features.dsn
        for r in rcpts:
            r.relay = t.relay
            r.mta = t.hostname
            r.conn_use = sess.uses if sess.uses > 1 else 0
            # smtp_rcpt.c smtp_rcpt_done(): a server that announced DSN
            # took NOTIFY along and sends any success notice itself
            # (DSN_PASSED: qmgr sends none); otherwise "relayed", or
            # "delivered" from an LMTP server under lmtp_assume_final.
            if dsn_server and r.dsn_notify & DSN_NOTIFY_SUCCESS:
                r.sent_action = DSN_PASSED
            elif not dsn_server and self.s.assume_final:
                r.sent_action = ""
            else:
                r.sent_action = "relayed"

    async def _transact(self, req, sess: Session, rcpts: list[TxRecipient], queue_fd) -> None:
        to = self.s.timeouts
        c = sess.client
        t = sess.target
        f = sess.features
        for r in rcpts:
            r.accepted = False
        # SIZE (RFC 1870 6): refuse before sending when the server said no.
        if f.size and req.data_size > f.size:
            out = Outcome(BOUNCED, "5.3.4", f"message size {req.data_size} exceeds size limit "
                                            f"{f.size} of server {t.namaddr}")
            for r in rcpts:
                r.outcome = out
            return
        if req.smtputf8 and not f.smtputf8 and _needs_utf8(req):
            out = Outcome(BOUNCED, "5.6.7", f"SMTPUTF8 is required, but was not offered by "
                                            f"host {t.namaddr}")
            for r in rcpts:
                r.outcome = out
            return
        body_8bit = req.encoding == "8bit"
        downgrade = body_8bit and not f.eightbitmime and self.s.downgrade_ok
        tx = Transaction(req.sender, rcpts, f, t.namaddr, lmtp=self.lmtp,
                         size=req.data_size, body_8bit=body_8bit,
                         smtputf8=bool(req.smtputf8) and self.s.smtputf8_enable,
                         dsn_ret=req.dsn_ret, dsn_envid=req.dsn_envid,
                         probe=trace_only(req.flags))
        timeout_of = {"MAIL": to["mail"], "RCPT": to["rcpt"], "DATA": to["data_init"]}
        for kind, line in tx.commands():
            c.send_command(kind, line)
        await sess.flush(to["mail"])
        while tx.awaiting_replies:
            kind = c.awaiting[0] if c.awaiting else "MAIL"
            kind, reply = await sess.reply(timeout_of.get(kind, to["rcpt"]))
            nxt = tx.on_reply(reply)
            for k, line in nxt:
                c.send_command(k, line)
            if nxt:
                await sess.flush(to["mail"])
        if not tx.want_body:
            # Nothing to send: end the transaction so the session can be reused.
            if tx.mail_ok:
                c.send_command("RSET", "RSET")
                await sess.flush(to["rset"])
                _, r = await sess.reply(to["rset"])
                if r.klass != 2:
                    sess.broken = True
            return
        c.last_command = "BODY"
        enc = BodyEncoder(self.s.line_limit, downgrade=downgrade)
        tail = await self._send_body(req, sess, enc, queue_fd)
        c.send_raw(tail + enc.finish())
        n = tx.end_of_data()
        c.expect("DOT", n)
        c.last_command = "DOT"
        await sess.flush(to["data_xfer"])
        while tx.awaiting_replies:
            _, reply = await sess.reply(to["data_done"])
            tx.on_reply(reply)

    async def _send_body(self, req, sess: Session, enc: BodyEncoder, queue_fd) -> bytes:
        """Stream the content records to the socket, a READ_CHUNK of the
        queue file at a time, encoded in one batch per chunk
        (BodyEncoder.encode_records).  Returns the last chunk's bytes, not
        yet written: they go out with the final dot, one write for a small
        message."""
        xfer = self.s.timeouts["data_xfer"]
        if queue_fd is None:
            raise SessionFailed("4.3.0", "cannot read queue file", try_next=False)
        pos = req.data_offset
        stop = req.data_offset + req.data_size
        carry = b""
        out = b""
        try:
            while pos < stop:
                chunk = os.pread(queue_fd, min(READ_CHUNK, stop - pos), pos)
                if not chunk:
                    break
                pos += len(chunk)
                data = carry + chunk if carry else chunk
                if out:
                    sess.writer.write(out)
                    await drain(sess.writer, xfer)
                out, used = enc.encode_records(data)
                carry = data[used:]
                if len(carry) > MAX_CARRY:
                    raise ValueError(f"record too long at offset {pos - len(carry)}")
        except (OSError, ValueError) as e:
            raise SessionFailed("4.3.0", f"queue file read error: {e}", try_next=False) from None
        if carry or pos < stop:
            raise SessionFailed("4.3.0", "queue file is truncated", try_next=False)
        return out

    # -- ending sessions ---------------------------------------------------------------
    def _abort(self, sess: Session) -> None:
        sess.broken = True
        try:
            sess.writer.close()
        except Exception:   # noqa: BLE001 - already gone
            pass

    async def _quit(self, sess: Session) -> None:
        if sess.broken:
            return
        sess.broken = True
        try:
            sess.client.send_command("QUIT", "QUIT")
            await sess.flush(self.s.timeouts["quit"])
            # Postfix waits for the QUIT reply only briefly (smtp_skip_quit_response).
            await asyncio.wait_for(sess.reader.read(512), min(self.s.timeouts["quit"], 5) or None)
        except (OSError, asyncio.TimeoutError, EOFError):
            pass
        finally:
            try:
                sess.writer.close()
            except Exception:   # noqa: BLE001
                pass


def _as_list(value) -> list[str]:
    """smtp_fallback_relay is declared as a string (its default is
    "$fallback_relay", Postfix's old name), lmtp_fallback_relay as a list:
    take either."""
    if isinstance(value, str):
        return split_list(value)
    return list(value or [])


def _ssl_error_text(err: BaseException) -> str:
    """Postfix logs "SSL_connect error to host[addr]:port: -1" and OpenSSL's
    reason; an empty TimeoutError says nothing, so name it."""
    if isinstance(err, asyncio.TimeoutError):
        return "timed out"
    return str(err) or type(err).__name__


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _dsn_details(r: TxRecipient, out: Outcome) -> dict:
    """The RFC 3464 fields of a result (AgentSession extras), as Postfix's
    smtp fills its DSN buffer: a server's reply gives "Remote-MTA: dns;
    host" and "Diagnostic-Code: smtp; reply" (DSB_MTYPE_DNS, DSB_DTYPE_SMTP);
    what we decided ourselves (connect failures, SIZE) gives neither."""
    extra = {}
    mta = getattr(r, "mta", "")
    if out.diag and mta:
        extra = {"diag_type": "smtp", "diag_text": out.diag, "mta_type": "dns", "mta_name": mta}
    if out.status == SENT:
        extra["action"] = getattr(r, "sent_action", "relayed")
    return extra


def _needs_utf8(req: DeliveryRequest) -> bool:
    """RFC 6531 3.2: the envelope needs SMTPUTF8 when an address is not ASCII."""
    return not req.sender.isascii() or any(not r.address.isascii() for r in req.recipients)
