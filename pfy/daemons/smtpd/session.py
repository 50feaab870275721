"""One SMTP session: the asyncio driver around the sans-I/O SmtpServer.

The core decides syntax, state, limits and smuggling defences; this driver
owns the socket, the clock, DNS, TLS, the access engine, SASL and the
cleanup session, and answers each decision event the core raises:

    read -> conn.receive() -> conn.events() -> decide / act -> write replies

Message content leaves as MessageLine and MessageLines events and goes to
cleanup as records (a run of whole lines in one frame), with cleanup's pace imposed on the client (drain), so memory does
not grow with message size. "250 Ok: queued as ID" is sent only after
cleanup's status reply, which cleanup sends after fsync and rename.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field

from pfy import log
from pfy.log import logger
from pfy.queue.record import REC_FILT, REC_FLGS, REC_RDR
from pfy.smtp import replies
from pfy.smtp.replies import Reply
from pfy.smtp.server import (
    Auth, AuthResponse, DataStart, Disconnect, Etrn, Helo, MailFrom, MessageAborted,
    MessageEnd, MessageLine, MessageLines, RcptTo, Rejected, Rset, SmtpServer, StartTls, Vrfy,
    XClient, XForward,
)
from pfy.daemons.smtpd._cleanup import CleanupError, CleanupSession
from pfy.daemons.smtpd.received import received_header
from pfy.daemons.smtpd import xclient as _x

__all__ = ["Service", "Session"]

READ_SIZE = 65536                  # one read; the core splits it into records
DSN_NOTIFY = {"NEVER": 1, "SUCCESS": 2, "FAILURE": 4, "DELAY": 8}   # Postfix dsn_mask.h
DSN_RET = {"FULL": 1, "HDRS": 2}
CLEANUP_FLAG_HOLD, CLEANUP_FLAG_DISCARD = 1 << 2, 1 << 3


@dataclass
class Service:
    """What every session of this process shares; built before chroot."""
    cfg: object
    limits: object
    policy: object
    cleanup_path: str
    cleanup_flags: int                 # input_flags(receive_override_options)
    content_filter: str = ""           # main.cf or master.cf -o: a REC_FILT record
    resolver: object = None            # pfy.dns.Resolver
    hosts: object = None               # _hosts.HostsFile or None
    tls: object = None                 # TlsSettings or None
    tls_ctx: ssl.SSLContext | None = None
    xclient_hosts: object = None
    xforward_hosts: object = None
    local_rewrite: object = None       # callable(session) -> bool
    sasl_factory: object = None        # callable(session) -> SASL server or None
    standalone: bool = False
    peername_lookup: bool = True
    client_port_logging: bool = False
    sasl_enable: bool = False
    sasl_auth_header: bool = False
    myhostname: str = "localhost"
    mail_name: str = "Postfix"
    service: str = "smtp"
    fast_flush: object = None          # MatchList of fast_flush_domains (ETRN)
    qmgr_path: str = "public/qmgr"
    anvil: object = None               # pfy.ipc.anvil_client.RateLimits or None
    stats: dict = field(default_factory=dict)


class Session:
    def __init__(self, svc: Service, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.svc = svc
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        peer = writer.get_extra_info("peername")
        if svc.standalone or not isinstance(peer, tuple):
            # smtpd_peer.c: not an Internet socket (sendmail -bs): the
            # client is this host, and the naming service is not asked.
            self.client_addr, self.client_port = "127.0.0.1", "0"
            self.client_name = self.reverse_client_name = "localhost"
        else:
            addr = peer[0]
            if addr.startswith("::ffff:") and "." in addr:
                addr = addr[7:]          # IPv4-mapped IPv6: log the IPv4 form
            self.client_addr, self.client_port = addr, str(peer[1])
            self.client_name = self.reverse_client_name = "unknown"
        self.name_tempfail = False
        self.peer_names = None             # pfy.dns.PeerNames when looked up
        self.out = bytearray()
        self.tls_info = None
        self.sasl = None
        self.sasl_method = self.sasl_username = self.sasl_sender = ""
        self.xforward: dict[str, str] = {}
        self.disconnect_reason = ""
        self.conn: SmtpServer | None = None
        sock = writer.get_extra_info("sockname")
        self.server_addr, self.server_port = (
            (sock[0], str(sock[1])) if isinstance(sock, tuple) else ("127.0.0.1", "0"))
        self.instance = ""
        self.rates = None                  # anvil_client.ClientRates when limits are set
        self._facts = svc.policy.new_facts()
        self._new_transaction()

    # -- identity --------------------------------------------------------------

    @property
    def namaddr(self) -> str:
        s = f"{self.client_name}[{self.client_addr}]"
        if self.svc.client_port_logging and self.client_port != "0":
            s += f":{self.client_port}"
        return s

    @property
    def protocol(self) -> str:
        if self.conn is None or not self.conn.esmtp:
            return self.proto_override or "SMTP"
        if self.proto_override:
            return self.proto_override
        return ("ESMTP" + ("S" if self.tls_info else "") + ("A" if self.sasl_username else ""))

    def facts(self, **extra):
        """The access engine's SessionFacts, brought up to date."""
        conn = self.conn
        tls = self.tls_info
        pn = self.peer_names
        cert = tls is not None and tls.peer_cert
        values = dict(
            client_addr=self.client_addr, client_port=self.client_port,
            client_name=self.client_name, reverse_client_name=self.reverse_client_name,
            client_name_status=pn.name_status if pn else ("temp" if self.name_tempfail else "ok"),
            reverse_client_name_status=pn.reverse_name_status if pn else "ok",
            helo_name=conn.helo_name if conn else None,
            protocol="ESMTP" if conn is not None and conn.esmtp else "SMTP",
            sender=self.sender, recipient=self.recipients[-1] if self.recipients else None,
            recipient_count=self.rcpt_count,
            sasl_method=self.sasl_method or None, sasl_username=self.sasl_username or None,
            sasl_sender=self.sasl_sender or None,
            tls_protocol=tls.protocol if tls else None, tls_cipher=tls.cipher_name if tls else None,
            tls_cipher_bits=tls.cipher_usebits if tls else None,
            ccert_subject=tls.peer_cn if cert else None,
            ccert_issuer=tls.issuer_cn if cert else None,
            ccert_fingerprint=tls.peer_cert_fprint if cert else None,
            ccert_pubkey_fingerprint=tls.peer_pkey_fprint if cert else None,
            ccert_verified=bool(cert and tls.peer_trusted),
            pipelined=False, size=self.declared_size, queue_id=self.queue_id,
            server_addr=self.server_addr, server_port=self.server_port,
            service=self.svc.service, instance=self.instance,
        )
        values.update(extra)
        self.svc.policy.update(self._facts, values)
        return self._facts

    async def check(self, stage: str, **extra):
        from pfy.daemons.smtpd._policy import Verdict
        if self.svc.standalone:
            return Verdict()            # SMTPD_STAND_ALONE: no access checks
        try:
            verdict = await self.svc.policy.check(stage, self.facts(**extra))
        except Exception:   # noqa: BLE001 - our failure: try again later, never an open door
            logger.error(f"{self.namaddr}: access check at {stage} failed")
            return Verdict(Reply(451, "4.3.0", "Error: internal error"))
        for w in verdict.warnings:
            logger.info(w)
        if verdict.reply is not None and not verdict.logged:
            self.log_reject(stage.replace("END_OF_DATA", "END-OF-MESSAGE"), verdict.reply,
                            extra.get("recipient"))
        return verdict

    def log_reject(self, stage: str, reply: Reply, rcpt: str | None = None,
                   sender: str | None = None) -> None:
        """The driver's own reject lines, in the access engine's shape
        (pfy.access.format_whatsup, Postfix's log_whatsup()): from=<> and
        to=<> only when known, so a rejection before MAIL has no from=."""
        from types import SimpleNamespace

        from pfy.access import format_whatsup
        conn = self.conn
        proto = self.proto_override or ("ESMTP" if conn is not None and conn.esmtp else "SMTP")
        who = SimpleNamespace(queue_id=self.queue_id, namaddr=self.namaddr, protocol=proto,
                              helo_name=conn.helo_name if conn is not None else None)
        text = str(reply).replace("\n", " ")
        logger.info(format_whatsup("reject", stage, who, text,
                                   sender=sender if sender is not None else self.sender,
                                   recipient=rcpt))

    # -- transaction -----------------------------------------------------------------

    def _new_transaction(self) -> None:
        self.sender: str | None = None
        self.mail_params = None
        self.declared_size = 0
        self.recipients: list[str] = []
        self.rcpt_count = 0
        self.cleanup: CleanupSession | None = None
        self.queue_id: str | None = None
        self.first_line = True
        self.hold = self.discard = False
        self.filter = self.redirect = ""
        self.prepend: list[str] = []
        self.proto_override = getattr(self, "proto_override", "")
        self.arrival = 0.0
        self.cleanup_failed = False

    def end_transaction(self) -> None:
        if self.cleanup is not None:
            self.cleanup.close()
        nt = getattr(self._facts, "new_transaction", None)
        if nt is not None:
            nt()
        self.xforward = {}
        self._new_transaction()

    def _apply(self, verdict) -> None:
        self.hold |= verdict.hold
        self.discard |= verdict.discard
        self.filter = verdict.filter or self.filter
        self.redirect = verdict.redirect or self.redirect
        self.prepend += verdict.prepend

    def cleanup_attrs(self) -> dict[str, str]:
        """Postfix smtpd's envelope attributes (mail_proto.h names)."""
        conn = self.conn
        fw = self.xforward
        helo = conn.helo_name or ""
        a = {
            "log_client_name": fw.get("NAME", self.client_name),
            "log_client_address": fw.get("ADDR", self.client_addr),
            "log_client_port": fw.get("PORT", self.client_port),
            "log_message_origin": self.namaddr,
            "log_helo_name": fw.get("HELO", helo),
            "log_protocol_name": fw.get("PROTO", self.protocol),
            "client_name": self.client_name,
            "reverse_client_name": self.reverse_client_name,
            "client_address": self.client_addr,
            "client_port": self.client_port,
            "helo_name": helo,
            "protocol_name": self.protocol,
            "rewrite_context": "local" if self.svc.local_rewrite(self) else "remote",
        }
        if fw.get("IDENT"):
            a["log_ident"] = fw["IDENT"]
        if self.sasl_username:
            a["sasl_method"] = self.sasl_method
            a["sasl_username"] = self.sasl_username
            if self.sasl_sender:
                a["sasl_sender"] = self.sasl_sender
        p = self.mail_params
        if p is not None:
            if p.body:
                a["encoding"] = "8bit" if p.body.upper() == "8BITMIME" else "7bit"
            if p.smtputf8:
                a["smtputf8"] = "1"
        return {k: v for k, v in a.items() if v is not None}

    async def open_cleanup(self) -> Reply | None:
        svc = self.svc
        if svc.standalone:
            # Postfix smtpd -S hands messages to postdrop, not to cleanup:
            # we run as the submitting user, and the message enters through
            # maildrop/ and pickup stamped with the kernel's uid (DESIGN.md
            # "Privileges"; cleanup refuses anyone but root and mail_owner).
            # Stand-alone is never chrooted, and the skeleton leaves an
            # ordinary user's cwd where it was: name queue_directory.
            from pfy.cli.postdrop import MaildropSession
            try:
                self.cleanup = await MaildropSession.open(svc.cfg.queue_directory,
                                                          svc.cfg.pickup_service_name)
            except OSError as err:
                logger.warning(f"{self.namaddr}: maildrop: {err}")
                return replies.QUEUE_WRITE_ERROR
        else:
            try:
                self.cleanup = await CleanupSession.open(svc.cleanup_path, svc.cleanup_flags)
            except CleanupError as err:
                logger.warning(f"{self.namaddr}: cleanup service unavailable: {err}")
                return replies.QUEUE_WRITE_ERROR
        self.queue_id = self.cleanup.queue_id
        self.arrival = time.time()
        extra = ""
        if self.sasl_username:
            extra = f", sasl_method={self.sasl_method}, sasl_username={self.sasl_username}"
            if self.sasl_sender:
                extra += f", sasl_sender={self.sasl_sender}"
        log.log_client(self.queue_id, self.namaddr if not self.xforward else
                       f"{self.xforward.get('NAME', self.client_name)}"
                       f"[{self.xforward.get('ADDR', self.client_addr)}]", extra)
        p = self.mail_params
        # Stand-alone: pickup adds its own content_filter; a user's maildrop
        # file may not carry one.
        filt = {} if svc.standalone else {"content_filter": svc.content_filter}
        self.cleanup.start(self.sender or "", self.cleanup_attrs(), arrival=self.arrival,
                           dsn_ret=DSN_RET.get((p.ret or "").upper(), 0) if p else 0,
                           dsn_envid=(p.envid or "") if p else "", **filt)
        return None

    # -- I/O ---------------------------------------------------------------------------

    def _take_output(self, data: bytes = b"") -> None:
        self.out += data
        if self.conn is not None:
            self.out += self.conn.data_to_send()

    async def flush(self) -> None:
        if not self.out:
            return
        delay = self.conn.delay() if self.conn is not None else 0.0
        if delay > 0:
            # Postfix smtpd_chat: sleep before replying to a client that
            # keeps making errors (smtpd_error_sleep_time).
            await asyncio.sleep(delay)
        data, self.out = bytes(self.out), bytearray()
        self.writer.write(data)
        await self.writer.drain()

    async def run(self) -> None:
        svc = self.svc
        if not svc.standalone and svc.peername_lookup and svc.resolver is not None:
            await self.lookup_peer()
        log.log_connect(self.namaddr)
        try:
            await self._run()
        except (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError):
            if not self.disconnect_reason:
                self.log_lost()
        finally:
            self.end_transaction()
            if self.sasl is not None:
                self.sasl.close()
            if self.rates is not None:
                try:
                    await self.rates.disconnect()
                except Exception:   # noqa: BLE001 - anvil never blocks or breaks a session
                    pass
            stats = self.conn.command_stats() if self.conn is not None else "commands=0"
            log.log_disconnect(self.namaddr, stats)

    async def lookup_peer(self) -> None:
        """smtpd_peer.c: reverse name, forward-confirmed (pfy.dns)."""
        hosts = self.svc.hosts
        if hosts is not None:
            found = hosts.peer_names(self.client_addr)
            if found is not None:
                self.client_name, self.reverse_client_name = found
                return
        try:
            names = await self.svc.resolver.peer_names(self.client_addr)
        except Exception as err:   # noqa: BLE001 - DNS trouble is temporary, never fatal
            logger.warning(f"{self.client_addr}: hostname lookup failed: {err.__class__.__name__}: {err}")
            self.client_name = self.reverse_client_name = "unknown"
            self.name_tempfail = True
            return
        self.client_name, self.reverse_client_name = names.name, names.reverse_name
        self.name_tempfail = names.name_status == "temp"
        self.peer_names = names

    async def _run(self) -> None:
        svc = self.svc
        tls_on = svc.tls_ctx is not None and not svc.standalone
        wrapper = tls_on and svc.tls.wrappermode
        self.conn = SmtpServer(
            svc.limits, now=self.loop.time(), namaddr=self.namaddr,
            tls_offered=tls_on and not wrapper,
            tls_active=False,
            auth_mechanisms=(),
            xclient_allowed=_x.allowed(svc.xclient_hosts, self),
            xforward_allowed=_x.allowed(svc.xforward_hosts, self),
            tls_required=tls_on and svc.tls.mandatory and not wrapper)
        if wrapper:
            # smtpd_tls_wrappermode (port 465): TLS before the banner.
            if not await self.handshake():
                self.disconnect_reason = "tls"
                return
            self.conn.tls_active = True
        await self.start_sasl()
        limited = await self.anvil_connect()
        if limited is None and wrapper:
            limited = await self.anvil_tls_handshake()
        if limited is not None:
            # Postfix: 421 instead of the banner, then hang up.
            self._take_output(self.conn.greet(limited))
            await self.flush()
            return
        verdict = await self.check("CONNECT")
        self._take_output(self.conn.greet(verdict.reply))
        await self.flush()
        conn = self.conn
        while not conn.closed:
            wait = conn.deadline - self.loop.time()
            try:
                if wait <= 0:
                    raise asyncio.TimeoutError
                # asyncio.timeout() arms one timer; wait_for() would also
                # wrap every read in a task of its own.
                async with asyncio.timeout(wait):
                    data = await self.reader.read(READ_SIZE)
            except asyncio.TimeoutError:
                logger.info(f"timeout after {conn.where} from {self.namaddr}")
                self.disconnect_reason = "timeout"
                self._take_output(conn.timeout())
                await self.notice_all(conn.connection_lost())
                await self.flush()
                return
            except (ConnectionError, OSError, ssl.SSLError):
                data = b""
            if not data:
                await self.notice_all(conn.connection_lost())
                self.log_lost()
                return
            conn.receive(data, now=self.loop.time())
            await self.pump()
            await self.flush()
        self.log_disconnect_reason()

    async def anvil_connect(self) -> Reply | None:
        """anvil(8) connection count and rate (smtpd.c smtpd_proto()).
        XCLIENT-authorized hosts are not counted, as in Postfix."""
        limits = self.svc.anvil
        if limits is None or self.svc.standalone:
            return None
        self.rates = limits.session(self.client_name, self.client_addr, self.namaddr,
                                    exempt=bool(self.conn is not None and self.conn.xclient_allowed))
        return self._anvil_verdict(await self.rates.connect())

    async def anvil_event(self, what: str) -> Reply | None:
        """mail / rcpt / auth / starttls: a 4xx reply when over the limit."""
        if self.rates is None:
            return None
        return self._anvil_verdict(await getattr(self.rates, what)())

    @staticmethod
    def _anvil_verdict(v) -> Reply | None:
        if v is None:
            return None
        logger.warning(v.warning)
        return v.reply

    def log_lost(self) -> None:
        conn = self.conn
        where = conn.where if conn is not None else "CONNECT"
        size = ""
        if where in ("DATA", "BDAT") and conn is not None:
            size = f" ({getattr(conn, '_size', 0)} bytes)"
        self.disconnect_reason = "lost"
        logger.info(f"lost connection after {where}{size} from {self.namaddr}")

    def log_disconnect_reason(self) -> None:
        r = self.disconnect_reason
        where = self.conn.where
        if r == "errors":
            logger.info(f"too many errors after {where} from {self.namaddr}")
        elif r == "sync":
            logger.info(f"improper command pipelining after {where} from {self.namaddr}")
        elif r == "forbidden":
            logger.warning(f"non-SMTP command from {self.namaddr}")
        elif r == "bare_lf":
            logger.info(f"disconnect: bare <LF> received from {self.namaddr}")

    async def pump(self) -> None:
        conn = self.conn
        while True:
            evs = conn.events()
            self._take_output()
            if not evs:
                return
            for ev in evs:
                if ev.needs_reply:
                    await self.decide(ev)
                else:
                    await self.notice(ev)
            self._take_output()

    async def notice_all(self, evs) -> None:
        for ev in evs:
            await self.notice(ev)

    # -- notifications -------------------------------------------------------------------

    def _first_line(self, c, data: bytes, partial: bool) -> None:
        """smtpd.c: a leading UNIX From_ line becomes X-Mailbox-Line, and
        content that starts with white space gets an empty record first,
        so it cannot continue our Received header."""
        self.first_line = False
        if data.lstrip(b">").startswith(b"From "):
            c.line(b"X-Mailbox-Line: " + data, partial)
            return
        if data[:1] in (b" ", b"\t"):
            c.line(b"")
        c.line(data, partial)

    async def _drain_cleanup(self, c) -> None:
        try:
            await c.drain()
        except CleanupError as err:
            logger.warning(f"{self.queue_id}: cleanup: {err}")
            self.cleanup_failed = True

    async def notice(self, ev) -> None:
        if isinstance(ev, MessageLines):
            c = self.cleanup
            if c is None or self.cleanup_failed:
                return
            lines = ev.lines
            if self.first_line:
                self._first_line(c, lines[0], False)
                lines = lines[1:]
            if lines:
                c.lines(lines)
            await self._drain_cleanup(c)
        elif isinstance(ev, MessageLine):
            c = self.cleanup
            if c is None or self.cleanup_failed:
                return
            if self.first_line:
                self._first_line(c, ev.data, ev.partial)
            else:
                c.line(ev.data, ev.partial)
            await self._drain_cleanup(c)
        elif isinstance(ev, MessageAborted):
            if ev.reason == "size":
                logger.warning(f"{self.queue_id or 'NOQUEUE'}: queue file size limit exceeded")
            if self.cleanup is not None:
                self.cleanup.close()
                self.cleanup = None
            if ev.reason in ("rset", "helo", "lost", "timeout", "rejected"):
                self.end_transaction()
        elif isinstance(ev, Rset):
            self.end_transaction()
        elif isinstance(ev, Rejected):
            self.log_reject(ev.where, ev.reply, sender=ev.sender)
        elif isinstance(ev, Disconnect):
            if not self.disconnect_reason:
                self.disconnect_reason = ev.reason

    # -- decisions -----------------------------------------------------------------------

    async def decide(self, ev) -> None:
        conn = self.conn
        try:
            handler = _DECIDE[type(ev)]
        except KeyError:
            self._take_output(conn.send(None))
            return
        await handler(self, ev)

    def _reply(self, reply: Reply | None) -> None:
        self._take_output(self.conn.send(reply))

    async def _helo(self, ev: Helo) -> None:
        # RFC 5321 4.1.4: HELO/EHLO resets the transaction (the core did).
        self.end_transaction()
        verdict = await self.check("HELO", helo_name=ev.name, pipelined=ev.pipelined)
        self.update_sasl()
        self._reply(verdict.reply)

    async def _mail(self, ev: MailFrom) -> None:
        self.end_transaction()
        limited = await self.anvil_event("mail")
        if limited is not None:
            return self._reply(limited)
        self.instance = f"{id(self):x}.{time.time_ns():x}"
        verdict = await self.check("MAIL", sender=ev.sender, pipelined=ev.pipelined,
                                   size=ev.params.size or 0)
        if verdict.reply is not None:
            return self._reply(verdict.reply)
        self.sender = ev.sender
        self.instance = f"{id(self):x}.{time.time_ns():x}"
        self.mail_params = ev.params
        self.declared_size = ev.params.size or 0
        self.sasl_sender = (ev.params.auth or "") if ev.params.auth not in (None, "<>") else ""
        self._apply(verdict)
        self._reply(None)

    async def _rcpt(self, ev: RcptTo) -> None:
        limited = await self.anvil_event("rcpt")
        if limited is not None:
            return self._reply(limited)
        verdict = await self.check("RCPT", recipient=ev.recipient, pipelined=ev.pipelined)
        if verdict.reply is not None:
            return self._reply(verdict.reply)
        if self.cleanup is None and not self.cleanup_failed:
            err = await self.open_cleanup()
            if err is not None:
                return self._reply(err)
        p = ev.params
        notify = 0
        for word in p.notify or ():
            notify |= DSN_NOTIFY.get(word.upper(), 0)
        orcpt = f"{p.orcpt_type};{p.orcpt}" if p.orcpt else ""
        self.cleanup.recipient(ev.recipient, dsn_orcpt=orcpt, dsn_notify=notify)
        self.recipients.append(ev.recipient)
        self.rcpt_count += 1
        self._apply(verdict)
        self._reply(None)

    async def _data(self, ev: DataStart) -> None:
        verdict = await self.check("DATA", pipelined=ev.pipelined)
        if verdict.reply is not None:
            return self._reply(verdict.reply)
        self._apply(verdict)
        c = self.cleanup
        if c is None:
            return self._reply(replies.QUEUE_WRITE_ERROR)
        flags = (CLEANUP_FLAG_HOLD if self.hold else 0) | (CLEANUP_FLAG_DISCARD if self.discard else 0)
        if flags:
            c.record(REC_FLGS, b"%d" % flags)
        c.begin_content()
        for line in self.prepend:
            c.line(line.encode("utf-8", "surrogateescape"))
        tls_lines = []
        if self.tls_info is not None and self.svc.tls is not None and self.svc.tls.received_header:
            tls_lines = self.tls_info.received_comment()
        for line in received_header(
                helo_name=self.conn.helo_name, client_name=self.client_name,
                client_addr=self.client_addr, myhostname=self.svc.myhostname,
                mail_name=self.svc.mail_name, protocol=self.protocol, queue_id=self.queue_id,
                recipients=self.recipients, arrival=self.arrival, tls_lines=tls_lines,
                sasl_username=self.sasl_username if (self.svc.sasl_enable and self.svc.sasl_auth_header)
                else None):
            c.line(line.encode("utf-8", "surrogateescape"))
        self.first_line = True
        self._reply(None)

    async def _end(self, ev: MessageEnd) -> None:
        c = self.cleanup
        if c is None or self.cleanup_failed:
            reply = replies.QUEUE_WRITE_ERROR
            self.end_transaction()
            return self._reply(reply)
        verdict = await self.check("END_OF_DATA", size=ev.size)
        if verdict.reply is not None:
            self.end_transaction()
            return self._reply(verdict.reply)
        self._apply(verdict)
        extracted = []
        if self.filter:
            extracted.append((REC_FILT, self.filter.encode()))
        if self.redirect:
            extracted.append((REC_RDR, self.redirect.encode()))
        flags = (CLEANUP_FLAG_HOLD if self.hold else 0) | (CLEANUP_FLAG_DISCARD if self.discard else 0)
        if flags:
            extracted.append((REC_FLGS, b"%d" % flags))
        try:
            status = await c.finish(extracted)
        except CleanupError as err:
            logger.warning(f"{self.queue_id}: {err}")
            reply = replies.QUEUE_WRITE_ERROR
        else:
            if status.status == 0:
                reply = replies.queued(status.queue_id or self.queue_id)
            else:
                reply = cleanup_reply(status)
        self.cleanup = None
        self.end_transaction()
        self._reply(reply)

    async def _vrfy(self, ev: Vrfy) -> None:
        # smtpd.c vrfy_cmd(): the address goes through smtpd_check_rcpt()
        # (relay and recipient restrictions, unknown users) before "252".
        verdict = await self.check("VRFY", recipient=ev.address)
        self._reply(verdict.reply)

    async def _etrn(self, ev: Etrn) -> None:
        verdict = await self.check("ETRN", etrn_domain=ev.domain)
        if verdict.reply is not None:
            return self._reply(verdict.reply)
        # Postfix asks flush(8), which refuses a domain outside
        # fast_flush_domains (459, and a warning). pfy has no per-site
        # flush logs: for an eligible domain it asks qmgr for a full
        # deferred-queue scan, as Postfix's first ETRN implementation did.
        if self.svc.standalone:
            logger.warning('do not use ETRN in "sendmail -bs" mode')
            return self._reply(replies.ETRN_UNAVAILABLE)
        fast = self.svc.fast_flush
        if fast is None or not fast.match(ev.domain.lower()):
            logger.warning(f"reject: ETRN {ev.domain[:100]}... from {self.namaddr}")
            return self._reply(replies.etrn_denied(ev.domain))
        from pfy.ipc.trigger import QMGR_FLUSH_DEAD, QMGR_SCAN_ALL, trigger
        try:
            ok = trigger(self.svc.qmgr_path, QMGR_FLUSH_DEAD + QMGR_SCAN_ALL)
        except OSError:
            ok = False
        if not ok:
            logger.warning("unable to talk to the queue manager")
            return self._reply(replies.ETRN_UNAVAILABLE)
        self._reply(replies.ETRN_OK)

    async def _starttls(self, ev: StartTls) -> None:
        if self.svc.tls_ctx is None:
            return self._reply(replies.TLS_UNAVAILABLE)
        limited = await self.anvil_event("starttls")
        if limited is not None:
            return self._reply(limited)
        self._reply(None)                      # 220 2.0.0 Ready to start TLS
        await self.flush()
        if not await self.handshake():
            self.disconnect_reason = "tls"
            self.conn.connection_lost()
            return
        self.conn.tls_established()
        self.conn.namaddr = self.namaddr
        self.update_sasl()
        await self.anvil_tls_handshake()

    async def handshake(self) -> bool:
        svc = self.svc
        # STARTTLS injection (CVE-2011-0411): plaintext that arrived after
        # STARTTLS and still waits in the stream's buffer must not become
        # the first "encrypted" command. The core dropped what it had seen.
        buffered = getattr(self.reader, "_buffer", None)
        if buffered is not None:
            buffered.clear()
        try:
            await self._start_tls_server(svc.tls_ctx, svc.limits.smtpd_starttls_timeout)
        except (ssl.SSLError, ConnectionError, OSError, asyncio.TimeoutError) as err:
            reason = getattr(err, "reason", None) or str(err) or type(err).__name__
            logger.warning(f"TLS library problem: {reason}" if isinstance(err, ssl.SSLError)
                           else f"SSL_accept error from {self.namaddr}: {reason}")
            logger.debug(f"{self.namaddr}: handshake: {err!r}")
            logger.info(f"lost connection after STARTTLS from {self.namaddr}")
            return False
        from pfy.tls import tls_info
        obj = self.writer.get_extra_info("ssl_object")
        self.tls_info = tls_info(obj, ask_ccert=svc.tls.ask_ccert, digest=svc.tls.fingerprint_digest)
        if self.tls_info.peer_cert and svc.tls.loglevel >= 1:
            logger.info(self.tls_info.cert_log_line(self.namaddr))
        logger.info(self.tls_info.log_line(self.namaddr))
        return True

    async def anvil_tls_handshake(self) -> Reply | None:
        """Count a new (not resumed) TLS session. A reply = over the limit:
        in wrapper mode 421 and hang up, as Postfix; after STARTTLS the
        check came before the handshake and this only counts."""
        if self.rates is None:
            return None
        obj = self.writer.get_extra_info("ssl_object")
        return self._anvil_verdict(
            await self.rates.tls_handshake(bool(obj is not None and obj.session_reused)))

    async def start_sasl(self) -> None:
        """A SASL server for this session (pfy.sasl), when AUTH is enabled."""
        factory = self.svc.sasl_factory
        if factory is None:
            return
        try:
            self.sasl = await factory.session(
                client_addr=self.client_addr, client_port=int(self.client_port or 0),
                server_addr=self.server_addr, server_port=int(self.server_port or 0),
                tls_active=self.tls_info is not None, namaddr=self.namaddr)
        except Exception as err:   # noqa: BLE001 - SASL backend trouble: no AUTH offered
            logger.warning(f"{self.namaddr}: SASL: {err}")
            self.sasl = None
        self.update_sasl()

    async def _start_tls_server(self, ctx: ssl.SSLContext, timeout: float) -> None:
        """loop.start_tls() as the server side. StreamWriter.start_tls()
        picks the side from how the stream was made, and the multi skeleton
        makes client-style streams (open_connection(sock=...)), so this is
        what StreamWriter.start_tls() does, with server_side=True."""
        w = self.writer
        protocol = w._protocol
        await w.drain()
        new = await self.loop.start_tls(w.transport, protocol, ctx, server_side=True,
                                        ssl_handshake_timeout=timeout)
        w._transport = new
        protocol._replace_writer(w)

    def update_sasl(self) -> None:
        """SASL mechanisms depend on TLS (smtpd_sasl_tls_security_options)."""
        if self.sasl is None or self.conn is None:
            return
        if self.tls_info is not None:
            self.sasl.tls_established()
        self.conn.auth_mechanisms = tuple(m.upper() for m in self.sasl.mechanisms())

    async def _auth(self, ev) -> None:
        sasl = self.sasl
        if sasl is None:
            return self._reply(replies.AUTH_NOT_ENABLED)
        if isinstance(ev, Auth):
            limited = await self.anvil_event("auth")
            if limited is not None:
                return self._reply(limited)
            self.auth_mech = ev.mechanism
            outcome = await sasl.start(ev.mechanism, ev.initial_response)
        else:
            outcome = await sasl.step(ev.data)
        data = getattr(outcome, "data", None)
        if data is not None and not hasattr(outcome, "username"):
            self._take_output(self.conn.auth_challenge(data))
            return
        username = getattr(outcome, "username", None)
        if username:
            self.sasl_method, self.sasl_username = self.auth_mech.upper(), username
            return self._reply(outcome.reply)
        log_line = getattr(outcome, "log", "")
        if log_line:
            logger.warning(log_line)
        self._reply(outcome.reply)

    async def _xclient(self, ev: XClient) -> None:
        reply = _x.apply_xclient(self, ev.attrs)
        if reply is None:
            self.end_transaction()
            self.conn.namaddr = self.namaddr
        self._reply(reply)

    async def _xforward(self, ev: XForward) -> None:
        self.xforward.update(_x.xforward_values(ev.attrs))
        self._reply(None)


def cleanup_reply(status) -> Reply:
    """cleanup's verdict as smtpd's reply (smtpd.c data_cmd(): reason text
    when cleanup gave one, "Error: <detail>" otherwise)."""
    code = status.code if 400 <= status.code <= 599 else 451
    reason = status.reason or ""
    dsn, _, text = reason.partition(" ")
    if dsn[:1] in "45" and dsn.count(".") == 2 and dsn[0] == str(code)[0]:
        return Reply(code, dsn, text)
    return Reply(code, f"{str(code)[0]}.3.0", reason or "Error: internal error")


_DECIDE = {
    Helo: Session._helo, MailFrom: Session._mail, RcptTo: Session._rcpt,
    DataStart: Session._data, MessageEnd: Session._end, Vrfy: Session._vrfy,
    Etrn: Session._etrn, StartTls: Session._starttls, Auth: Session._auth,
    AuthResponse: Session._auth, XClient: Session._xclient, XForward: Session._xforward,
}
