"""The cleanup state machine: records in, a queue file out.

One Cleanup object per message. feed(rtype, data) takes the records a
client streams (Postfix's order: T F S A... [o n O] R ... M content X
extracted... E); finish() completes the queue file and returns the status.
Everything it needs from outside is injected: the queue file writer, the
rewrite function (trivial-rewrite), the tables, the local-domain test, the
logger and the clock, so tests drive it with literal records.

What it does, in Postfix's order (cleanup(8)):
- envelope: sender and recipients rewritten to standard form (local
  context), canonical_maps/sender_canonical_maps/recipient_canonical_maps
  per their classes, masquerade_domains per masquerade_classes; recipients
  expanded with virtual_alias_maps and de-duplicated; recipient_bcc_maps;
- headers: header_checks, mime_header_checks, nested_header_checks and
  body_checks actions; Return-Path and (Resent-)Bcc removed; sender and
  recipient headers rewritten in the client's context; Received counted
  against hopcount_limit; missing (Resent-)Message-Id, Date, From and
  undisclosed_recipients_header added (when the context allows or
  always_add_missing_headers);
- extracted: always_bcc, sender_bcc_maps, FILTER, REDIRECT, HOLD.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pfy.ipc.attr import REC_LINES
from pfy.message.checks import dsn_reply, parse_action
from pfy.message.headers import RECIP, RESENT, SENDER, header_info, split_header
from pfy.message.mime import BODY, PRIMARY, ContentWalker
from pfy.queue.record import (
    REC_ATTR, REC_CONT, REC_DSN_ENVID, REC_DSN_NOTIFY, REC_DSN_ORCPT, REC_DSN_RET,
    REC_END, REC_FILT, REC_FLGS, REC_FROM, REC_FULL, REC_MESG, REC_NORM, REC_ORCP, REC_RCPT,
    REC_RDR, REC_TIME, REC_XTRA,
)
from pfy.smtp.address import (
    format_address_list, parse_address_list, quote_local, tokenize, unquote_local,
)
from pfy.tables import TableTempFail
from pfy.tables.search import virtual_lookup

from .addresses import ExpansionError, expand_virtual, map11, masquerade

__all__ = [
    "Cleanup", "Settings", "Result",
    "FLAG_BOUNCE", "FLAG_FILTER", "FLAG_HOLD", "FLAG_DISCARD", "FLAG_BCC_OK",
    "FLAG_MAP_OK", "FLAG_MILTER", "FLAG_MASK_EXTERNAL", "FLAG_MASK_EXTRA",
    "STAT_OK", "STAT_BAD", "STAT_WRITE", "STAT_SIZE", "STAT_CONT", "STAT_HOPS",
    "STAT_RCPT", "STAT_DEFER", "status_reply",
]

# Postfix global/cleanup_user.h: client request flags.
FLAG_BOUNCE = 1 << 0       # bounce (not reject) bad mail
FLAG_FILTER = 1 << 1       # header/body checks
FLAG_HOLD = 1 << 2         # put the message on hold
FLAG_DISCARD = 1 << 3      # discard the message
FLAG_BCC_OK = 1 << 4       # always_bcc, sender/recipient_bcc_maps
FLAG_MAP_OK = 1 << 5       # canonical, masquerade, virtual alias maps
FLAG_MILTER = 1 << 6       # milter applications (pfy has none yet)
FLAG_MASK_EXTERNAL = FLAG_FILTER | FLAG_BCC_OK | FLAG_MAP_OK | FLAG_MILTER
# cleanup_user.h CLEANUP_FLAG_MASK_EXTRA: what a REC_FLGS record in the
# envelope may add (smtpd's HOLD and DISCARD access actions).
FLAG_MASK_EXTRA = FLAG_HOLD | FLAG_DISCARD

# Postfix global/cleanup_user.h: status bits.
STAT_OK = 0
STAT_BAD = 1 << 0          # internal protocol error
STAT_WRITE = 1 << 1        # queue file write error
STAT_SIZE = 1 << 2         # message too big
STAT_CONT = 1 << 3         # content rejected
STAT_HOPS = 1 << 4         # too many hops
STAT_RCPT = 1 << 6         # no recipients
STAT_DEFER = 1 << 8        # temporary reject

# cleanup_strerror.c: status -> (SMTP code, DSN, text), most important first.
_STATUS_MAP = [
    (STAT_DEFER, 451, "4.7.1", "service unavailable"),
    (STAT_BAD, 451, "4.3.0", "internal protocol error"),
    (STAT_RCPT, 550, "5.1.0", "no recipients specified"),
    (STAT_HOPS, 554, "5.4.0", "too many hops"),
    (STAT_SIZE, 552, "5.3.4", "message file too big"),
    (STAT_CONT, 550, "5.7.1", "message content rejected"),
    (STAT_WRITE, 451, "4.3.0", "queue file write error"),
]


def status_reply(status: int) -> tuple[int, str, str]:
    for bit, code, dsn, text in _STATUS_MAP:
        if status & bit:
            return code, dsn, text
    return 250, "2.0.0", "Ok"


@dataclass
class Settings:
    """What cleanup needs from main.cf, with the tables already open."""
    myhostname: str = "localhost"
    canonical_maps: object = None
    sender_canonical_maps: object = None
    recipient_canonical_maps: object = None
    canonical_classes: frozenset = frozenset(
        {"envelope_sender", "envelope_recipient", "header_sender", "header_recipient"})
    sender_canonical_classes: frozenset = frozenset({"envelope_sender", "header_sender"})
    recipient_canonical_classes: frozenset = frozenset({"envelope_recipient", "header_recipient"})
    masquerade_domains: list = field(default_factory=list)
    masquerade_exceptions: frozenset = frozenset()
    masquerade_classes: frozenset = frozenset({"envelope_sender", "header_sender", "header_recipient"})
    virtual_alias_maps: object = None
    virtual_alias_expansion_limit: int = 1000
    virtual_alias_recursion_limit: int = 1000
    always_bcc: str = ""
    sender_bcc_maps: object = None
    recipient_bcc_maps: object = None
    header_checks: object = None
    mime_header_checks: object = None
    nested_header_checks: object = None
    body_checks: object = None
    message_size_limit: int = 10240000
    header_size_limit: int = 102400
    hopcount_limit: int = 50
    mime_nesting_limit: int = 100
    disable_mime_input_processing: bool = False
    undisclosed_recipients_header: str = ""
    always_add_missing_headers: bool = False
    header_from_format: str = "standard"
    enable_original_recipient: bool = True
    recipient_delimiter: str = ""
    propagate_canonical: bool = True
    propagate_virtual: bool = True
    duplicate_filter_limit: int = 1000
    remote_header_rewrite_domain: str = ""
    enable_long_queue_ids: bool = False
    line_length_limit: int = 2048
    # postconf -d message_drop_headers (Postfix 3.7)
    message_drop_headers: frozenset = frozenset(
        {"bcc", "content-length", "resent-bcc", "return-path"})
    body_checks_size_limit: int = 51200
    delay_warning_time: int = 0         # seconds; 0: no delay warnings


@dataclass
class Result:
    status: int
    queue_id: str
    reason: str = ""            # "5.7.1 message content rejected" etc.
    hold: bool = False
    discarded: bool = False


def _mail_date(t: float) -> str:
    """RFC 5322 date in local time with the zone name: mail_date.c."""
    lt = time.localtime(t)
    off = lt.tm_gmtoff // 60
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    # "%e": the day padded with a space, as Postfix writes it ("Tue,  2 Jan").
    return (time.strftime("%a, %e %b %Y %H:%M:%S ", lt)
            + f"{sign}{off // 60:02d}{off % 60:02d} ({lt.tm_zone})")


class Cleanup:
    def __init__(self, settings: Settings, writer, *, rewrite, is_local, log,
                 flags: int = FLAG_MASK_EXTERNAL, hold_target=None, now=time.time,
                 client: str = "local"):
        self.st = settings
        self.w = writer
        self.queue_id = writer.queue_id
        self.rewrite = rewrite          # rewrite(context, external address) -> external
        self.is_local = is_local        # is_local(domain) -> bool
        self.log = log
        self.flags = flags
        self.hold_target = hold_target  # callable: switch the final queue to "hold"
        self.now = now
        self.client = client            # "from local" / "from host[addr]" in logs

        self.status = STAT_OK
        self.reason = ""
        self.sender: str | None = None
        self.first_rcpt: str | None = None
        self.fullname = ""
        self.arrival: float | None = None
        self.time_written = False
        self.attrs: dict[str, str] = {}
        self.hdr_context: str | None = "local"
        self.orig_rcpt = ""
        self.dsn_orcpt = ""
        self.dsn_notify = 0
        self.dups: set[str] = set()
        self.rcpt_count = 0
        self.stage = "envelope"        # envelope, content, extracted, done
        self.headers_seen: set[str] = set()
        self.resent = ""
        self.hop_count = 0
        self.size = 0
        self.walker = ContentWalker(settings.header_size_limit, settings.mime_nesting_limit,
                                    mime=not settings.disable_mime_input_processing)
        self.line_parts: list[bytes] = []
        self._body_started: bool | None = None   # False: primary headers just ended
        self.content_seen = False
        self.hold = False
        self.discard = False
        self.filter = ""
        self.redirect = ""
        self.extra_bcc: list[str] = []
        self.sender_bcc = ""
        self.client_filter = ""         # REC_FILT from the client (content_filter, FILTER)
        self.client_redirect = ""       # REC_RDR from the client (REDIRECT access action)
        self.eight_bit = False          # 8-bit content seen: "encoding=8bit"
        self.body_checked = 0           # body bytes inspected in this MIME part

    # -- helpers -----------------------------------------------------------------
    def _fail(self, bit: int, reason: str = "") -> None:
        if not self.status:
            self.reason = reason or " ".join(status_reply(bit)[1:])
        self.status |= bit

    def _rewrite_internal(self, context: str, address: str) -> str:
        if not address:
            return address
        return unquote_local(self.rewrite(context, quote_local(address)))

    def _canon(self, address: str, cls: str, is_sender: bool) -> str:
        st = self.st
        if not self.flags & FLAG_MAP_OK:
            return address
        maps = []
        if is_sender and st.sender_canonical_maps and cls in st.sender_canonical_classes:
            maps.append(st.sender_canonical_maps)
        if not is_sender and st.recipient_canonical_maps and cls in st.recipient_canonical_classes:
            maps.append(st.recipient_canonical_maps)
        if st.canonical_maps and cls in st.canonical_classes:
            maps.append(st.canonical_maps)
        if maps:
            address = map11(maps, address, self.is_local, st.recipient_delimiter,
                            st.propagate_canonical)
        if st.masquerade_domains and cls in st.masquerade_classes:
            address = masquerade(address, st.masquerade_domains, st.masquerade_exceptions)
        return address

    def _log_action(self, action: str, where: str, content: str, text: str = "") -> None:
        """cleanup_act_log(): "ID: reject: header Subject: x from local;
        from=<a> to=<b>: text"."""
        line = f"{self.queue_id}: {action}: {where} {content[:200]} from {self.client};"
        if self.sender is not None:
            line += f" from=<{self.sender}>"
        if self.first_rcpt is not None:
            line += f" to=<{self.first_rcpt}>"
        for name, fmt in (("log_protocol_name", " proto={}"), ("log_helo_name", " helo=<{}>")):
            if name in self.attrs:
                line += fmt.format(self.attrs[name])
        if text:
            line += f": {text}"
        self.log.info(line)

    # -- envelope -----------------------------------------------------------------
    def _sender(self, data: bytes) -> None:
        raw = data.decode("utf-8", "surrogateescape")
        try:
            addr = self._rewrite_internal("local", raw)
            addr = self._canon(addr, "envelope_sender", True)
            if self.flags & FLAG_BCC_OK and self.st.sender_bcc_maps and addr:
                found = virtual_lookup(self.st.sender_bcc_maps, addr, self.st.recipient_delimiter,
                                       local_domain=self._addr_local(addr))
                if found:
                    self.sender_bcc = unquote_local(found.value.strip())
        except TableTempFail:
            self._fail(STAT_DEFER, "4.3.0 address mapping lookup failure")
            addr = raw
        self.sender = addr
        self.w.sender(addr)

    def _addr_local(self, addr: str) -> bool:
        at = addr.rfind("@")
        return at < 0 or self.is_local(addr[at + 1:])

    def _out_recipient(self, orig: str, rcpt: str, expand: bool = True) -> None:
        """cleanup_out_recipient(): virtual alias expansion, duplicates, write."""
        st = self.st
        targets = [rcpt]
        if expand and self.flags & FLAG_MAP_OK and st.virtual_alias_maps:
            targets = expand_virtual(st.virtual_alias_maps, rcpt, self.is_local,
                                     st.recipient_delimiter, st.virtual_alias_expansion_limit,
                                     st.virtual_alias_recursion_limit, st.propagate_virtual)
        for target in targets:
            if target in self.dups:
                continue
            if len(self.dups) < st.duplicate_filter_limit:
                self.dups.add(target)
            self.w.recipient(target, orig_rcpt=orig if st.enable_original_recipient else "",
                             dsn_orcpt=self.dsn_orcpt, dsn_notify=self.dsn_notify)
            self.rcpt_count += 1

    def _recipient(self, data: bytes) -> None:
        raw = data.decode("utf-8", "surrogateescape")
        orig = self.orig_rcpt or raw
        try:
            addr = self._rewrite_internal("local", raw)
            addr = self._canon(addr, "envelope_recipient", False)
            if self.first_rcpt is None:
                self.first_rcpt = addr
            self._out_recipient(orig, addr)
            if self.flags & FLAG_BCC_OK and self.st.recipient_bcc_maps:
                found = virtual_lookup(self.st.recipient_bcc_maps, addr,
                                       self.st.recipient_delimiter,
                                       local_domain=self._addr_local(addr))
                if found:
                    self.extra_bcc.append(unquote_local(found.value.strip()))
        except TableTempFail:
            self._fail(STAT_DEFER, "4.3.0 address mapping lookup failure")
        except ExpansionError as err:
            self.log.warning(f"{self.queue_id}: {err} -- message not accepted, try again later")
            self._fail(STAT_DEFER, "4.3.0 virtual alias expansion error")
        self.orig_rcpt = ""
        self.dsn_orcpt = ""
        self.dsn_notify = 0

    def _time(self) -> None:
        """T, then W: cleanup generates the delay warning time instead of
        relaying a client's (cleanup_envelope.c, Postfix 2.7 and later),
        so qmgr sends one delay notice after delay_warning_time."""
        if self.time_written:
            return                      # the first T wins
        self.time_written = True
        self.w.time(self.arrival)
        if self.st.delay_warning_time > 0:
            arrival = self.arrival if self.arrival is not None else self.w.create_time[0]
            self.w.warn_time(int(arrival) + self.st.delay_warning_time)

    def _envelope(self, rtype: int, data: bytes) -> None:
        if rtype == REC_TIME:
            if self.time_written:
                return
            try:
                self.arrival = float(data.split()[0])
            except (ValueError, IndexError):
                self.arrival = None
            self._time()
        elif rtype == REC_FULL:
            self.fullname = data.decode("utf-8", "surrogateescape")
            self.w.full_name(self.fullname)
        elif rtype == REC_FROM:
            self._sender(data)
        elif rtype == REC_ORCP:
            self.orig_rcpt = data.decode("utf-8", "surrogateescape")
        elif rtype == REC_DSN_ORCPT:
            self.dsn_orcpt = data.decode("utf-8", "surrogateescape")
        elif rtype == REC_DSN_NOTIFY:
            self.dsn_notify = int(data or b"0") if data.isdigit() else 0
        elif rtype == REC_RCPT:
            self._recipient(data)
        elif rtype == REC_ATTR:
            name, _, value = data.decode("utf-8", "surrogateescape").partition("=")
            if name == "rewrite_context":
                if value == "local":
                    self.hdr_context = "local"
                elif value == "remote":
                    # No header rewriting for remote mail unless asked to
                    # (cleanup_envelope.c, remote_header_rewrite_domain).
                    self.hdr_context = "remote" if self.st.remote_header_rewrite_domain else None
                else:
                    self.log.warning(f"{self.queue_id}: message rejected: bad rewriting context: {value[:100]}")
                    self._fail(STAT_BAD)
                    return
            self.attrs[name] = value
            self.w.attr(name, value)
        elif rtype in (REC_DSN_RET, REC_DSN_ENVID):
            self.w.write_record(rtype, data)
        elif rtype in (REC_FLGS, REC_FILT, REC_RDR):
            self._client_request(rtype, data)
        elif rtype == REC_MESG:
            if self.sender is None:
                self._fail(STAT_BAD)
                self.log.warning(f"{self.queue_id}: message rejected: missing sender envelope record")
            if self.arrival is None:
                self.arrival = self.now()
                self._time()
            self.w.begin_content()
            self.stage = "content"
            self.content_seen = True
        else:
            # Records we do not act on (Postfix ignores unknown envelope
            # records from trusted clients) are not copied either.
            pass

    # -- content ------------------------------------------------------------------
    def _write_line(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        if not self.eight_bit and not data.isascii():
            self.eight_bit = True
        self.size += len(data) + 1
        if self.size > self.st.message_size_limit > 0:
            self._fail(STAT_SIZE)
            return
        if not self.status:
            self.w.content_line(data, self.st.line_length_limit)

    def _write_header(self, text: str) -> None:
        for line in text.split("\n"):
            self._write_line(line)

    def _check(self, maps, where: str, text: str):
        """Look text up in a header/body checks table; apply the
        message-wide part of the action. Returns (verb, text) for the
        per-line part (IGNORE/REPLACE/PREPEND) or None."""
        if not maps or not self.flags & FLAG_FILTER:
            return None
        try:
            found = maps.find(text)
        except TableTempFail:
            self._fail(STAT_DEFER, "4.3.0 header or body check lookup failure")
            return None
        if found is None:
            return None
        act = parse_action(found.value)
        verb, arg = act.verb, act.text
        if verb == "REJECT":
            reply = dsn_reply(arg)
            self._log_action("reject", where, text, reply)
            self._fail(STAT_CONT, reply)
        elif verb == "WARN":
            self._log_action("warning", where, text, arg)
        elif verb == "INFO":
            self._log_action("info", where, text, arg)
        elif verb == "DISCARD":
            self._log_action("discard", where, text, arg)
            self.discard = True
        elif verb == "HOLD":
            self._log_action("hold", where, text, arg)
            self.hold = True
        elif verb == "FILTER":
            if ":" not in arg:
                self.log.warning(f"{self.queue_id}: bad FILTER action: {arg}")
            else:
                self._log_action("filter", where, text, arg)
                self.filter = arg
        elif verb == "REDIRECT":
            if "@" not in arg:
                self.log.warning(f"{self.queue_id}: bad REDIRECT target: {arg}")
            else:
                self._log_action("redirect", where, text, arg)
                self.redirect = arg
        elif verb == "BCC":
            self.extra_bcc.append(arg)
        elif verb == "REPLACE":
            self._log_action("replace", where, text, arg)
            return verb, arg
        elif verb in ("IGNORE", "PREPEND"):
            return verb, arg
        elif verb in ("DUNNO", "OK"):
            return None
        else:
            self.log.warning(f"{self.queue_id}: unknown command in {where} checks: {act.raw}")
        return None

    def _rewrite_header(self, name: str, value: str, info) -> str | None:
        """Rewrite the addresses of a sender/recipient header; None when
        nothing changed (the header is then written as received)."""
        cls = "header_sender" if info.flags & SENDER else "header_recipient"
        alist = parse_address_list(value)
        changed = False
        try:
            for addr in alist.addresses:
                if not addr.tokens:
                    continue
                ext = addr.external
                new = self.rewrite(self.hdr_context, ext)
                internal = unquote_local(new)
                mapped = self._canon(internal, cls, cls == "header_sender")
                if mapped != internal:
                    new = quote_local(mapped)
                if new != ext:
                    addr.tokens = tokenize(new)
                    changed = True
        except TableTempFail:
            self._fail(STAT_DEFER, "4.3.0 address mapping lookup failure")
            return None
        if not changed:
            return None
        return f"{name}: " + format_address_list(alist)

    def _header(self, kind: str, text: str) -> None:
        self.body_checked = 0
        maps = {PRIMARY: self.st.header_checks, "mime": self.st.mime_header_checks,
                "nested": self.st.nested_header_checks}[kind]
        action = self._check(maps, kind, text)
        if action:
            verb, arg = action
            if verb == "IGNORE":
                return
            if verb == "PREPEND":
                self._write_header(arg)
            elif verb == "REPLACE":
                text = arg
        if kind != PRIMARY:
            self._write_header(text)
            return
        name, value = split_header(text)
        info = header_info(name)
        low = name.lower()
        if low in self.st.message_drop_headers:
            # message_drop_headers (after header_checks, as Postfix 3.7):
            # Bcc: recipients came in the envelope (sendmail -t extracted
            # them); Return-Path and Content-Length are the MTA's own.
            self.headers_seen.add(low)
            return
        if info is not None:
            if info.flags & RESENT:
                self.resent = "Resent-"
            if low == "received":
                self.hop_count += 1
            elif low in ("message-id", "resent-message-id"):
                self.log.info(f"{self.queue_id}: {'resent-' if low.startswith('r') else ''}"
                              f"message-id={value.strip()[:200]}")
            if (info.flags & (SENDER | RECIP) and self.hdr_context
                    and low not in ("return-path",)):
                new = self._rewrite_header(name, value, info)
                if new is not None:
                    text = new
        self.headers_seen.add(low)
        self._write_header(text)

    def _headers_done(self) -> None:
        """cleanup_header_done_callback(): add what is missing."""
        st = self.st
        if self.hop_count >= st.hopcount_limit:
            self.log.warning(f"{self.queue_id}: message rejected: hopcount exceeded")
            self._fail(STAT_HOPS)
        add = bool(self.hdr_context) or st.always_add_missing_headers
        rs = self.resent
        seen = self.headers_seen
        if add and f"{rs}message-id".lower() not in seen:
            if st.enable_long_queue_ids:
                mid = f"{self.queue_id}@{st.myhostname}"
            else:
                stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(self.w.create_time[0]))
                mid = f"{stamp}.{self.queue_id}@{st.myhostname}"
            self._write_line(f"{rs}Message-Id: <{mid}>")
            self.log.info(f"{self.queue_id}: {'resent-' if rs else ''}message-id=<{mid}>")
            seen.add(f"{rs}message-id".lower())
        elif "message-id" not in seen and not rs:
            self.log.info(f"{self.queue_id}: message-id=<>")
        if add and f"{rs}date".lower() not in seen:
            self._write_line(f"{rs}Date: {_mail_date(self.arrival or self.now())}")
        if add and f"{rs}from".lower() not in seen:
            self._write_line(self._from_header(rs))
        if (add and not seen & {"to", "resent-to", "cc", "resent-cc"}
                and st.undisclosed_recipients_header):
            text = st.undisclosed_recipients_header
            if ":" not in text:
                self.log.warning("bad undisclosed_recipients_header header text "
                                 f"\"{text}\" -- need \"headername: headervalue\"")
            else:
                self._write_line(text)

    def _from_header(self, rs: str) -> str:
        sender = quote_local(self.sender) if self.sender else "MAILER-DAEMON"
        name = self.fullname.replace("\r", " ").replace("\n", " ")
        if not (self.sender and name):
            return f"{rs}From: {sender}"
        if self.st.header_from_format == "obsolete":
            return f"{rs}From: {sender} ({name})"
        # "phrase <addr>": quote the phrase when it has specials or "%!"
        # (cleanup_message.c, header_from_format = standard).
        if any(ch in name for ch in '()<>@,;:\\".[]%!'):
            phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            phrase = " ".join(name.split())
        return f"{rs}From: {phrase} <{sender}>"

    def _events(self, events) -> None:
        for ev, kind, text in events:
            if ev == "header":
                self._header(kind, text)
            elif ev == "header_end":
                if kind == PRIMARY:
                    self._headers_done()
                    self._body_started = False
            else:
                if self._body_started is False:
                    self._body_started = True
                    if text != "":
                        # A non-header line ended the primary headers (as
                        # in `echo hi | sendmail user`): Postfix's MIME
                        # state machine puts the missing empty line in, so
                        # readers see "hi" as body, not as a broken header.
                        self._write_line("")
                self._body(text)

    def _body(self, line: str) -> None:
        # body_checks_size_limit: only the first N bytes of each body part
        # are inspected (the counter restarts at each MIME part's headers).
        action = None
        if self.body_checked < self.st.body_checks_size_limit:
            self.body_checked += len(line) + 1
            action = self._check(self.st.body_checks, "body", line)
        if action:
            verb, arg = action
            if verb == "IGNORE":
                return
            if verb == "PREPEND":
                self._write_line(arg)
            elif verb == "REPLACE":
                line = arg
        self._write_line(line)

    def _content(self, rtype: int, data: bytes) -> None:
        if rtype == REC_CONT:
            self.line_parts.append(data)
            # Keep memory flat: beyond line_length_limit a line is written
            # in pieces, each checked on its own, as Postfix's records are.
            if sum(map(len, self.line_parts)) >= self.st.line_length_limit and self.walker.kind == BODY:
                piece = b"".join(self.line_parts)
                self.line_parts = []
                self._body_piece(piece)
            return
        if rtype == REC_NORM:
            if self.line_parts:
                self.line_parts.append(data)
                data = b"".join(self.line_parts)
                self.line_parts = []
            self._events(self.walker.feed(data.decode("utf-8", "surrogateescape")))
        elif rtype == REC_XTRA:
            if self.line_parts:
                self._events(self.walker.feed(b"".join(self.line_parts).decode("utf-8", "surrogateescape")))
                self.line_parts = []
            self._events(self.walker.end())
            if "header too long" in self.walker.errors:
                self.log.warning(f"{self.queue_id}: message header length exceeds safety limit")
            self.w.end_content()
            self.stage = "extracted"

    def _bulk_body(self) -> bool:
        """Whether the next lines are plain body that nothing inspects one
        by one: the primary headers are over (and their first body line
        written), no MIME part headers are being read, and body_checks
        are off or past body_checks_size_limit."""
        if self.walker.kind != BODY or self._body_started is not True or self.line_parts:
            return False
        st = self.st
        return not (st.body_checks and self.flags & FLAG_FILTER
                    and self.body_checked < st.body_checks_size_limit)

    def _content_lines(self, block: bytes) -> None:
        """A run of whole lines (REC_LINES: payloads joined by LF).  Plain
        body goes to the queue file as a batch; lines that something must
        see (headers, MIME boundaries while a multipart is open, body
        checks) take the per-line path, so the result is the same record
        for record."""
        data = block + b"\n"               # every line now ends in LF
        pos, n = 0, len(data)
        walker = self.walker
        while pos < n:
            if not self._bulk_body() or (walker.boundaries and data.startswith(b"--", pos)):
                nl = data.index(b"\n", pos)
                self._content(REC_NORM, data[pos:nl])
                pos = nl + 1
                continue
            cut = data.find(b"\n--", pos) if walker.boundaries else -1
            end = n if cut < 0 else cut + 1
            self._body_run(data[pos:end - 1])
            pos = end

    def _body_run(self, run: bytes) -> None:
        """Plain body lines joined by LF: _body() for each, in one go."""
        if not self.eight_bit and not run.isascii():
            self.eight_bit = True
        self.size += len(run) + 1
        if self.size > self.st.message_size_limit > 0:
            self._fail(STAT_SIZE)
            return
        if not self.status:
            self.w.content_block(run, self.st.line_length_limit)

    def _body_piece(self, piece: bytes) -> None:
        action = None
        if self.body_checked < self.st.body_checks_size_limit:
            self.body_checked += len(piece)
            action = self._check(self.st.body_checks, "body", piece.decode("utf-8", "surrogateescape"))
        if action and action[0] == "IGNORE":
            return
        if not self.eight_bit and not piece.isascii():
            self.eight_bit = True
        self.size += len(piece)
        if self.size > self.st.message_size_limit > 0:
            self._fail(STAT_SIZE)
            return
        if not self.status:
            self.w.content_record(REC_CONT, piece)

    def _client_request(self, rtype: int, data: bytes) -> None:
        """REC_FLGS / REC_FILT / REC_RDR from a trusted client (smtpd's
        HOLD, DISCARD, FILTER and REDIRECT access actions, content_filter
        from smtpd or pickup), in the envelope or after the content, as
        cleanup_envelope.c and cleanup_extracted.c take them."""
        text = data.decode("utf-8", "surrogateescape")
        if rtype == REC_FLGS:
            try:
                extra = int(text)
            except ValueError:
                self.log.warning(f"{self.queue_id}: bad cleanup flags record: {text[:100]}")
                return
            if extra & ~FLAG_MASK_EXTRA:
                self.log.warning(f"{self.queue_id}: ignoring bad extra flags: 0x{extra:x}")
            self.flags |= extra & FLAG_MASK_EXTRA
        elif rtype == REC_FILT:
            if ":" in text:
                self.client_filter = text
            elif text:
                self.log.warning(f"{self.queue_id}: ignoring bad content filter: {text[:100]}")
        elif rtype == REC_RDR:
            if text:
                self.client_redirect = text

    def _extracted(self, rtype: int, data: bytes) -> None:
        if rtype == REC_RCPT:
            self.stage = "envelope-extra"
            self._recipient(data)
        elif rtype == REC_ORCP:
            self.orig_rcpt = data.decode("utf-8", "surrogateescape")
        elif rtype == REC_DSN_ORCPT:
            # sendmail -t and requeued mail carry DSN details for the
            # recipients they list after the content.
            self.dsn_orcpt = data.decode("utf-8", "surrogateescape")
        elif rtype == REC_DSN_NOTIFY:
            self.dsn_notify = int(data) if data.isdigit() else 0
        elif rtype in (REC_FLGS, REC_FILT, REC_RDR):
            self._client_request(rtype, data)
        elif rtype == REC_ATTR:
            name, _, value = data.decode("utf-8", "surrogateescape").partition("=")
            self.attrs[name] = value

    # -- the interface ---------------------------------------------------------------
    def feed(self, rtype: int, data: bytes) -> None:
        """One record from the client. Never raises for bad input: a
        malformed stream sets STAT_BAD."""
        if self.stage == "done":
            self._fail(STAT_BAD)
            return
        if rtype == REC_END:
            if self.stage == "content":
                self._content(REC_XTRA, b"")
            self.stage = "done"
            return
        if rtype == REC_LINES and self.stage != "content":
            self._fail(STAT_BAD)            # content lines outside the content
        elif self.stage == "envelope":
            self._envelope(rtype, data)
        elif self.stage == "content":
            if rtype == REC_LINES:
                self._content_lines(data)
            elif rtype in (REC_NORM, REC_CONT, REC_XTRA):
                self._content(rtype, data)
            else:
                self._fail(STAT_BAD)
        else:
            self._extracted(rtype, data)

    def finish(self) -> Result:
        """Complete the queue file (fsync + rename) or throw it away."""
        st = self.st
        if self.stage != "done" or not self.content_seen:
            self._fail(STAT_BAD)
        if not self.status and self.rcpt_count == 0 and not (self.redirect or self.client_redirect):
            self._fail(STAT_RCPT)
        if self.discard or self.flags & FLAG_DISCARD:
            self.w.abort()
            return Result(STAT_OK, self.queue_id, discarded=True)
        if self.status:
            self.w.abort()
            return Result(self.status, self.queue_id, self.reason)
        try:
            # Extracted segment: things decided after the content was seen.
            if self.flags & FLAG_BCC_OK:
                for bcc in ([st.always_bcc] if st.always_bcc else []) + (
                        [self.sender_bcc] if self.sender_bcc else []) + self.extra_bcc:
                    self._out_recipient(bcc, bcc)
            # A FILTER action of header/body checks wins over the client's
            # (smtpd's access FILTER or content_filter, pickup's
            # content_filter).  cleanup never reads content_filter itself:
            # in Postfix only smtpd, pickup and qmqpd do, so a re-injection
            # path with "-o content_filter=" ends the filter loop.
            filt = self.filter or self.client_filter
            if filt:
                self.w.write_record(REC_FILT, filt.encode("utf-8", "surrogateescape"))
            redirect = self.redirect or self.client_redirect
            if redirect:
                self.w.write_record(REC_RDR, redirect.encode("utf-8", "surrogateescape"))
            if self.eight_bit and "encoding" not in self.attrs:
                # The body is 8-bit though no client said so (sendmail
                # without -B8BITMIME): say it, so that smtp(8) knows to
                # ask for 8BITMIME or convert (Postfix's MAIL_ATTR_ENCODING).
                self.w.attr("encoding", "8bit")
            if self.hold or self.flags & FLAG_HOLD:
                if self.hold_target:
                    self.hold_target()
            self.w.commit()
        except TableTempFail:
            self.w.abort()
            return Result(STAT_DEFER, self.queue_id, "4.3.0 address mapping lookup failure")
        except ExpansionError as err:
            self.log.warning(f"{self.queue_id}: {err} -- message not accepted, try again later")
            self.w.abort()
            return Result(STAT_DEFER, self.queue_id, "4.3.0 virtual alias expansion error")
        except OSError as err:
            self.log.warning(f"{self.queue_id}: queue file write error: {err}")
            self.w.abort()
            return Result(STAT_WRITE, self.queue_id, "4.3.0 queue file write error")
        return Result(STAT_OK, self.queue_id, hold=self.hold or bool(self.flags & FLAG_HOLD))
