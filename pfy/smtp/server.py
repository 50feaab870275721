"""Sans-I/O ESMTP server: bytes in, events out, replies to bytes.

The smtpd daemon owns the socket, the clock and every lookup; this module
owns the protocol. The driver loop is:

    conn = SmtpServer(limits, now=clock(), namaddr="mx.example[192.0.2.7]")
    transport.write(conn.greet())                 # or conn.greet(reject_reply)
    on data:
        conn.receive(data, now=clock())
        while (evs := conn.events()):
            for ev in evs:
                if ev.needs_reply:                # always the last event
                    conn.send(decide(ev))         # a Reply, or None = default Ok
                else:
                    act_on(ev)                    # MessageLine -> cleanup, ...
        transport.write(conn.data_to_send())      # after conn.delay() seconds
        if conn.closed: close the connection

Decisions the core cannot make (access control, recipient validation, the
queue ID from cleanup) come back through send(). Everything else — syntax,
state, limits, pipelining, smuggling defences — is decided here, with
Postfix's reply texts (see replies.py).

Commands are taken one at a time, in order: while a decision is pending no
further input is parsed, so pipelined replies come out in command order
(RFC 2920 3.1). Message content leaves as MessageLine events of at most
line_length_limit bytes, and runs of ordinary lines as one MessageLines
event per read, so memory does not grow with message size and a large
message costs a few bytes operations per read instead of Python work per
line.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from enum import Enum

from pfy.smtp import replies
from pfy.smtp.esmtp_params import (
    MailParams, RcptParams, extract_address, parse_mail_params,
    parse_rcpt_params, split_path_argument,
)
from pfy.smtp.replies import Reply
from pfy.smtp.xtext import xtext_decode

__all__ = [
    "SmtpdLimits", "SmtpServer", "Event", "Helo", "MailFrom", "RcptTo",
    "DataStart", "MessageLine", "MessageLines", "MessageEnd", "MessageAborted", "Rset",
    "Vrfy", "Etrn", "StartTls", "Auth", "AuthResponse", "AuthAborted",
    "XClient", "XForward", "Quit", "Disconnect", "Rejected",
]

MAX_BDAT = 2 ** 63 - 1            # Postfix off_cvt_string(): largest off_t
AUTH_LINE_LIMIT = 12288           # RFC 4954 4: AUTH lines up to 12288 octets
BARE_NEWLINE_MODES = {"no": "no", "normalize": "normalize", "yes": "normalize",
                      "reject": "reject"}   # postconf(5) smtpd_forbid_bare_newline

XCLIENT_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN",
                 "REVERSE_NAME", "DESTADDR", "DESTPORT")      # XCLIENT_README
XFORWARD_ATTRS = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")  # XFORWARD_README
XFORWARD_VALUE_LIMIT = 255        # Postfix xforward_cmd: "attribute value too long"

# Postfix's disconnect statistics order (smtpd.c command table).
STAT_NAMES = ("helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail",
              "rcpt", "data", "bdat", "rset", "noop", "vrfy", "etrn", "quit",
              "unknown")

# Command flags, after Postfix's command table:
#   LAST    RFC 2920 3.1: must be the last command in a pipelined group
#   JUNK    counts against smtpd_junk_command_limit (postconf(5))
#   PRE_TLS allowed before STARTTLS when TLS is required
_LAST, _JUNK, _PRE_TLS = 1, 2, 4
_COMMANDS = {
    "HELO": _LAST | _PRE_TLS, "EHLO": _LAST | _PRE_TLS,
    "XCLIENT": _PRE_TLS, "XFORWARD": _PRE_TLS,
    "STARTTLS": _LAST | _PRE_TLS, "AUTH": _LAST,
    "MAIL": 0, "RCPT": 0, "DATA": _LAST, "BDAT": 0,
    "RSET": _JUNK, "NOOP": _LAST | _JUNK | _PRE_TLS, "VRFY": _LAST | _JUNK,
    "ETRN": _JUNK, "QUIT": _PRE_TLS,
}
_HEADER_LABEL = re.compile(r"^[!-9;-~]+:")   # a message header sent as a command


@dataclass(frozen=True)
class SmtpdLimits:
    """The main.cf settings the protocol core uses; the daemon fills it from
    the configuration (names and defaults are Postfix's, 3.9 where the
    defaults changed). Per-client variations (e.g. a client in
    smtpd_forbid_bare_newline_exclusions) are dataclasses.replace() copies."""
    myhostname: str = "localhost"
    smtpd_banner: str = "localhost ESMTP Postfix"      # expanded $smtpd_banner
    line_length_limit: int = 2048
    message_size_limit: int = 10240000                 # 0 = no limit
    smtpd_recipient_limit: int = 1000
    smtpd_recipient_overshoot_limit: int = 1000
    smtpd_soft_error_limit: int = 10
    smtpd_hard_error_limit: int = 20
    smtpd_error_sleep_time: float = 1.0
    smtpd_junk_command_limit: int = 100
    smtpd_timeout: float = 300.0
    smtpd_starttls_timeout: float = 300.0
    smtpd_helo_required: bool = False
    strict_rfc821_envelopes: bool = False
    disable_vrfy_command: bool = False
    smtpd_forbid_bare_newline: str = "normalize"        # Postfix 3.9 default
    smtpd_forbid_bare_newline_reject_code: int = 550
    smtpd_forbid_unauth_pipelining: bool = True         # Postfix 3.9 default
    smtpd_discard_ehlo_keywords: frozenset[str] = frozenset()
    smtpd_noop_commands: frozenset[str] = frozenset()
    smtpd_forbidden_commands: frozenset[str] = frozenset({"CONNECT", "GET", "POST"})
    # The default's regexp:{{/^[^A-Z]/ Bogus}}: a command that does not start
    # with a letter. Other regexp entries are the daemon's to apply.
    smtpd_forbid_nonalpha_commands: bool = True
    smtputf8_enable: bool = True
    broken_sasl_auth_clients: bool = False
    smtpd_tls_auth_only: bool = False

    def __post_init__(self) -> None:
        if self.smtpd_forbid_bare_newline.lower() not in BARE_NEWLINE_MODES:
            raise ValueError("smtpd_forbid_bare_newline: want no, normalize, yes or reject, "
                             f"got {self.smtpd_forbid_bare_newline!r}")
        if not 500 <= self.smtpd_forbid_bare_newline_reject_code <= 599:
            raise ValueError("smtpd_forbid_bare_newline_reject_code must be 5XX")
        if self.smtpd_hard_error_limit <= 0:
            raise ValueError("smtpd_hard_error_limit must be greater than zero")

    @property
    def bare_newline_mode(self) -> str:
        return BARE_NEWLINE_MODES[self.smtpd_forbid_bare_newline.lower()]


# ---------------------------------------------------------------------------
# Events

@dataclass(frozen=True)
class Event:
    needs_reply = False


@dataclass(frozen=True)
class _Decision(Event):
    needs_reply = True


@dataclass(frozen=True)
class Helo(_Decision):
    name: str
    esmtp: bool
    pipelined: bool = False       # input followed before our reply


@dataclass(frozen=True)
class MailFrom(_Decision):
    sender: str                   # internal form; "" for <>
    params: MailParams
    pipelined: bool = False


@dataclass(frozen=True)
class RcptTo(_Decision):
    recipient: str
    params: RcptParams
    pipelined: bool = False


@dataclass(frozen=True)
class DataStart(_Decision):
    """DATA, or the first BDAT of a transaction: smtpd_data_restrictions."""
    bdat: bool
    pipelined: bool = False


@dataclass(frozen=True)
class MessageLine(Event):
    """One content record: a line without its line ending, or a piece of a
    long line (partial=True: the line continues in the next event)."""
    data: bytes
    partial: bool = False


@dataclass(frozen=True)
class MessageLines(Event):
    """Many whole content lines at once, each without its line ending,
    none containing CR or LF, none longer than line_length_limit: what
    a run of MessageLine events would have carried."""
    lines: list[bytes]


@dataclass(frozen=True)
class MessageEnd(_Decision):
    """End of content; reply replies.queued(id) after cleanup's fsync."""
    size: int


@dataclass(frozen=True)
class MessageAborted(Event):
    """Drop the message being received: reason is "size", "bare_lf",
    "rset", "helo", "timeout", "lost" or "rejected"."""
    reason: str


@dataclass(frozen=True)
class Rset(Event):
    pass


@dataclass(frozen=True)
class Vrfy(_Decision):
    address: str


@dataclass(frozen=True)
class Etrn(_Decision):
    domain: str


@dataclass(frozen=True)
class StartTls(_Decision):
    """Default reply starts TLS; then call tls_established() after the
    handshake. Plaintext pipelined after STARTTLS has been discarded."""


@dataclass(frozen=True)
class Auth(_Decision):
    """Answer with auth_challenge(bytes) or send(235 / 535 ...)."""
    mechanism: str
    initial_response: bytes | None


@dataclass(frozen=True)
class AuthResponse(_Decision):
    data: bytes


@dataclass(frozen=True)
class AuthAborted(Event):
    pass


@dataclass(frozen=True)
class XClient(_Decision):
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class XForward(_Decision):
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Quit(Event):
    pass


@dataclass(frozen=True)
class Rejected(Event):
    """A rejection the core decided that Postfix logs as a policy reject
    ("NOQUEUE: reject: MAIL from ...; from=<a@b> proto=ESMTP helo=<h>"):
    today the MAIL SIZE= check (smtpd_check_size). The reply is already sent."""
    where: str                    # "MAIL"
    reply: Reply
    sender: str | None = None


@dataclass(frozen=True)
class Disconnect(Event):
    """The core hangs up after its last reply: "errors", "timeout",
    "bare_lf", "sync", "forbidden", "protocol", "quit", "greeting"."""
    reason: str


class _S(Enum):
    PREGREET = "pregreet"
    COMMAND = "command"
    DATA = "data"                 # DATA content until <CR><LF>.<CR><LF>
    BDAT = "bdat"                 # reading a BDAT chunk
    AUTH = "auth"                 # waiting for a SASL continuation line
    TLS = "tls"                   # waiting for the TLS handshake
    CLOSED = "closed"


class SmtpServer:
    """One SMTP session. Nothing here blocks, sleeps or reads the clock."""

    def __init__(self, limits: SmtpdLimits, *, now: float = 0.0,
                 namaddr: str = "unknown[unknown]", tls_offered: bool = False,
                 tls_active: bool = False, auth_mechanisms: tuple[str, ...] = (),
                 xclient_allowed: bool = False, xforward_allowed: bool = False,
                 discard_ehlo_keywords: frozenset[str] = frozenset(),
                 tls_required: bool = False) -> None:
        self.limits = limits
        self.namaddr = namaddr
        self.tls_offered = tls_offered
        self.tls_active = tls_active
        self.tls_required = tls_required           # smtpd_tls_security_level = encrypt
        self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self.xclient_allowed = xclient_allowed
        self.xforward_allowed = xforward_allowed
        self._discard = {k.lower() for k in limits.smtpd_discard_ehlo_keywords | discard_ehlo_keywords}
        self._enhanced = "enhancedstatuscodes" not in self._discard
        self._bare_mode = limits.bare_newline_mode
        self._state = _S.PREGREET
        self._buf = bytearray()
        self._out = bytearray()
        self._events: list[Event] = []
        self._pending: Event | None = None
        self._pending_cmd = ""
        self._now = now
        self._last_io = now
        # session state
        self.helo_name: str | None = None
        self.esmtp = False
        self.authenticated = False
        self.access_denied = False
        self.pregreet_bytes = 0
        self.error_count = 0
        self.junk_cmds = 0
        self.where = "CONNECT"                      # Postfix "lost connection after X"
        self._stats: dict[str, list[int]] = {}
        self._long_line: bytes | None = None
        self._reset_transaction()

    # -- driver interface --------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._state is _S.CLOSED

    @property
    def deadline(self) -> float:
        """When the driver must call timeout() if no input arrived."""
        limit = (self.limits.smtpd_starttls_timeout if self._state is _S.TLS
                 else self.limits.smtpd_timeout)
        return self._last_io + limit

    def delay(self) -> float:
        """Seconds to wait before writing replies: Postfix's smtpd_chat.c
        sleeps $smtpd_error_sleep_time once error_count reaches
        $smtpd_soft_error_limit."""
        if self.error_count >= self.limits.smtpd_soft_error_limit:
            return self.limits.smtpd_error_sleep_time
        return 0.0

    def greet(self, reply: Reply | None = None) -> bytes:
        """Send the 220 banner, or a connect-time rejection (4xx/5xx: every
        later command but QUIT gets 503 access denied; 421/521 hang up)."""
        if self._state is not _S.PREGREET:
            raise RuntimeError("greet() called twice")
        self.pregreet_bytes = len(self._buf)
        self._state = _S.COMMAND
        if reply is None:
            reply = replies.greeting(self.limits.smtpd_banner)
        elif reply.code >= 400:
            self.access_denied = True
        self._reply(reply)
        if reply.code in (421, 521):
            self._close("greeting")
        return self.data_to_send()

    def receive(self, data: bytes, now: float | None = None) -> None:
        if now is not None:
            self._now = now
        self._last_io = self._now
        if self._state is _S.CLOSED:
            return
        if self._state is _S.TLS:
            # STARTTLS injection (CVE-2011-0411): anything sent in plaintext
            # after STARTTLS, before the handshake, is never a command.
            return
        self._buf += data

    def events(self) -> list[Event]:
        """Process buffered input until a decision is needed or input runs
        out. A decision event, if any, is the last one in the list."""
        while (self._pending is None and self._state not in (_S.CLOSED, _S.TLS, _S.PREGREET)
               and self._step()):
            pass
        evs, self._events = self._events, []
        return evs

    def send(self, reply: Reply | None = None) -> bytes:
        """Answer the pending decision; None means the default success."""
        ev = self._pending
        if ev is None:
            raise RuntimeError("send() without a pending decision")
        self._pending = None
        self._decide(ev, reply)
        return self.data_to_send()

    accept = send

    def auth_challenge(self, data: bytes) -> bytes:
        """Continue a SASL exchange: 334 base64(data)."""
        ev = self._pending
        if not isinstance(ev, (Auth, AuthResponse)):
            raise RuntimeError("auth_challenge() outside AUTH")
        self._pending = None
        self._reply(replies.auth_challenge(base64.b64encode(data).decode("ascii")))
        self._state = _S.AUTH
        return self.data_to_send()

    def tls_established(self) -> None:
        """After the handshake: RFC 3207 4.2, forget everything learned
        before TLS; the client must send EHLO again."""
        if self._state is not _S.TLS:
            raise RuntimeError("tls_established() without STARTTLS")
        self.tls_active = True
        self._buf.clear()
        self._state = _S.COMMAND
        self._reset_helo()

    def timeout(self, now: float | None = None) -> bytes:
        """smtpd_timeout expired: 421 and hang up."""
        if self._state is not _S.CLOSED:
            self._abort_message("timeout")
            self._reply(replies.timeout_exceeded(self.limits.myhostname))
            self._close("timeout")
        return self.data_to_send()

    def connection_lost(self) -> list[Event]:
        if self._state is not _S.CLOSED:
            self._abort_message("lost")
            self._state = _S.CLOSED
        evs, self._events = self._events, []
        return evs

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def command_stats(self) -> str:
        """Postfix's disconnect counters: 'ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4'."""
        parts = []
        ok_all = total_all = 0
        for name in STAT_NAMES:
            if name not in self._stats:
                continue
            ok, total = self._stats[name]
            ok_all += ok
            total_all += total
            parts.append(f"{name}={ok}" if ok == total else f"{name}={ok}/{total}")
        parts.append(f"commands={ok_all}" if ok_all == total_all else f"commands={ok_all}/{total_all}")
        return " ".join(parts)

    @property
    def in_transaction(self) -> bool:
        return self.sender is not None

    # -- replies, stats, errors ---------------------------------------------

    def _reply(self, reply: Reply) -> None:
        self._out += reply.render(self._enhanced)

    def _count(self, name: str, ok: bool) -> None:
        s = self._stats.setdefault(name, [0, 0])
        s[1] += 1
        if ok:
            s[0] += 1

    def _done(self, name: str, reply: Reply, *, error: bool | None = None) -> None:
        """Finish a command: reply, count it, count an error (Postfix: a
        command that fails increments the session error count)."""
        self._reply(reply)
        self._count(name, reply.ok)
        if error if error is not None else not reply.ok:
            self.error_count += 1
        if self.error_count >= self.limits.smtpd_hard_error_limit and self._state is not _S.CLOSED:
            self._abort_message("rejected")
            self._reply(replies.too_many_errors(self.limits.myhostname))
            self._close("errors")

    def _close(self, reason: str) -> None:
        self._state = _S.CLOSED
        self._buf.clear()
        self._events.append(Disconnect(reason))

    def _reset_transaction(self) -> None:
        self.sender: str | None = None
        self.mail_params: MailParams | None = None
        self.rcpt_count = 0
        self.rcpt_overshoot = 0
        self._bdat_used = False
        self._bdat_error: Reply | None = None
        self._in_message = False

    def _reset_helo(self) -> None:
        self._abort_message("helo")
        self.helo_name = None
        self.esmtp = False
        self._reset_transaction()

    def _abort_message(self, reason: str) -> None:
        if self._in_message:
            self._events.append(MessageAborted(reason))
            self._in_message = False

    def _offer(self, keyword: str) -> bool:
        return keyword.lower() not in self._discard

    # -- input ----------------------------------------------------------------

    def _step(self) -> bool:
        if self._state is _S.DATA:
            return self._data_step()
        if self._state is _S.BDAT:
            return self._bdat_step()
        line = self._take_line(AUTH_LINE_LIMIT if self._state is _S.AUTH
                               else self.limits.line_length_limit)
        if line is None:
            return False
        text, bare_lf = line
        if bare_lf and self._bare_mode == "reject":
            # Postfix 3.9: reply and hang up on a command with bare <LF>.
            code = self.limits.smtpd_forbid_bare_newline_reject_code
            self._abort_message("bare_lf")
            self._reply(replies.bare_newline(code, self.limits.myhostname))
            self._count("unknown" if self._state is _S.COMMAND else "auth", False)
            self._close("bare_lf")
            return False
        if self._state is _S.AUTH:
            self._auth_line(text)
        else:
            self._command(text)
        return True

    def _take_line(self, limit: int) -> tuple[bytes, bool] | None:
        """Next line without its ending, and whether it ended in a bare LF.
        A line longer than limit is cut there and the rest skipped, as
        Postfix's smtp_get(..., SMTP_GET_FLAG_SKIP) does; the cut line is
        handed out once its end has arrived."""
        buf = self._buf
        while True:
            if self._long_line is not None:
                nl = buf.find(b"\n")
                if nl < 0:
                    keep = 1 if buf.endswith(b"\r") else 0
                    del buf[:len(buf) - keep]
                    return None
                bare = nl == 0 or buf[nl - 1] != 0x0D
                del buf[:nl + 1]
                line, self._long_line = self._long_line, None
                return line, bare
            nl = buf.find(b"\n", 0, limit + 2)
            if nl < 0:
                if len(buf) <= limit + 1:
                    return None
                self._long_line = bytes(buf[:limit])
                del buf[:limit]
                continue
            line = bytes(buf[:nl])
            del buf[:nl + 1]
            bare = not line.endswith(b"\r")
            if not bare:
                line = line[:-1]
            if len(line) > limit:
                line = line[:limit]
            return line, bare

    # -- commands -----------------------------------------------------------------

    def _command(self, raw: bytes) -> None:
        pipelined = len(self._buf) > 0
        if b"\0" in raw or b"\r" in raw:
            self._done("unknown", replies.BAD_SYNTAX)
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            if self.limits.smtputf8_enable:
                self._done("unknown", replies.BAD_UTF8)
                return
            text = raw.decode("utf-8", "surrogateescape")
        text = text.strip(" \t")
        verb, _, rest = text.partition(" ")
        if "\t" in verb:
            verb, _, more = verb.partition("\t")
            rest = more + " " + rest
        verb = verb.upper()
        if not verb:
            self._done("unknown", replies.BAD_SYNTAX)
            return
        if (verb in self.limits.smtpd_forbidden_commands or _HEADER_LABEL.match(text)
                or (self.limits.smtpd_forbid_nonalpha_commands and not ("A" <= verb[0] <= "Z"))):
            self._reply(replies.FORBIDDEN_COMMAND)
            self._count("unknown", False)
            self._close("forbidden")
            return
        if verb in self.limits.smtpd_noop_commands:
            self._done("noop", replies.OK)
            return
        flags = _COMMANDS.get(verb)
        name = verb.lower() if flags is not None else "unknown"
        if flags is not None:
            self.where = verb
        if flags is None:
            self._done("unknown", replies.UNKNOWN_COMMAND)
            return
        # RFC 2920 3.1 / postconf(5) smtpd_forbid_unauth_pipelining.
        if (pipelined and self.limits.smtpd_forbid_unauth_pipelining and verb != "QUIT"
                and (flags & _LAST or not self.esmtp or not self._offer("pipelining"))):
            self._reply(replies.SYNC_ERROR)
            self._count(name, False)
            self._close("sync")
            return
        if self.access_denied and verb != "QUIT":
            self._done(name, replies.access_denied(self.namaddr))
            return
        if flags & _JUNK:
            if self.junk_cmds > self.limits.smtpd_junk_command_limit:
                self.error_count += 1
            self.junk_cmds += 1
        if self.tls_required and not self.tls_active and not flags & _PRE_TLS:
            self._done(name, replies.MUST_STARTTLS)
            return
        getattr(self, "_cmd_" + verb.lower())(rest.strip(" \t"), pipelined)

    def _ask(self, name: str, event: Event) -> None:
        self._pending = event
        self._pending_cmd = name
        self._events.append(event)

    def _cmd_helo(self, arg: str, pipelined: bool, esmtp: bool = False) -> None:
        if not arg:
            self._done("ehlo" if esmtp else "helo", replies.SYNTAX_EHLO if esmtp else replies.SYNTAX_HELO)
            return
        # RFC 5321 4.1.4: HELO/EHLO in a transaction is an implicit RSET.
        self._abort_message("helo")
        self._reset_transaction()
        self._ask("ehlo" if esmtp else "helo", Helo(arg, esmtp, pipelined))

    def _cmd_ehlo(self, arg: str, pipelined: bool) -> None:
        self._cmd_helo(arg, pipelined, esmtp=True)

    def ehlo_keywords(self) -> list[str]:
        """The EHLO reply keywords in Postfix's order, minus
        smtpd_discard_ehlo_keywords."""
        lim = self.limits
        kws = ["PIPELINING",
               f"SIZE {lim.message_size_limit}" if lim.message_size_limit else "SIZE"]
        if not lim.disable_vrfy_command:
            kws.append("VRFY")
        kws.append("ETRN")
        if self.tls_offered and not self.tls_active:
            kws.append("STARTTLS")
        if self._auth_offered():
            kws.append("AUTH " + " ".join(self.auth_mechanisms))
            if lim.broken_sasl_auth_clients:
                kws.append("AUTH=" + " ".join(self.auth_mechanisms))
        if self.xclient_allowed:
            kws.append("XCLIENT " + " ".join(XCLIENT_ATTRS))
        if self.xforward_allowed:
            kws.append("XFORWARD " + " ".join(XFORWARD_ATTRS))
        kws += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if lim.smtputf8_enable:
            kws.append("SMTPUTF8")
        kws.append("CHUNKING")
        return [k for k in kws if self._offer(k.split(" ")[0].split("=")[0])]

    def _auth_offered(self) -> bool:
        return (bool(self.auth_mechanisms) and self._offer("auth")
                and (self.tls_active or not self.limits.smtpd_tls_auth_only))

    def _cmd_mail(self, arg: str, pipelined: bool) -> None:
        if self.limits.smtpd_helo_required and self.helo_name is None:
            return self._done("mail", replies.NEED_HELO)
        if self.sender is not None:
            return self._done("mail", replies.NESTED_MAIL)
        split = split_path_argument(arg, "FROM")
        if split is None:
            return self._done("mail", replies.SYNTAX_MAIL)
        path, params = split
        sender = extract_address(path, strict=self.limits.strict_rfc821_envelopes)
        if sender is None:
            return self._done("mail", replies.BAD_SENDER_SYNTAX)
        parsed = parse_mail_params(params, dsn=self._offer("dsn"),
                                   smtputf8=self.limits.smtputf8_enable and self._offer("smtputf8"),
                                   auth=self._auth_offered())
        if isinstance(parsed, Reply):
            return self._done("mail", parsed)
        limit = self.limits.message_size_limit
        if parsed.size is not None and limit and parsed.size > limit:
            self._events.append(Rejected("MAIL", replies.SIZE_EXCEEDED, sender))
            return self._done("mail", replies.SIZE_EXCEEDED)
        self._ask("mail", MailFrom(sender, parsed, pipelined))

    def _cmd_rcpt(self, arg: str, pipelined: bool) -> None:
        if self.sender is None:
            return self._done("rcpt", replies.NEED_MAIL)
        split = split_path_argument(arg, "TO")
        if split is None:
            return self._done("rcpt", replies.SYNTAX_RCPT)
        lim = self.limits
        if lim.smtpd_recipient_limit and self.rcpt_count >= lim.smtpd_recipient_limit:
            # Postfix rcpt_cmd: no error until the overshoot is used up.
            over = self.rcpt_overshoot >= lim.smtpd_recipient_overshoot_limit
            self.rcpt_overshoot += 1
            return self._done("rcpt", replies.TOO_MANY_RCPTS, error=over)
        path, params = split
        rcpt = extract_address(path, strict=lim.strict_rfc821_envelopes)
        if not rcpt:
            return self._done("rcpt", replies.BAD_RCPT_SYNTAX)
        parsed = parse_rcpt_params(params, dsn=self._offer("dsn"))
        if isinstance(parsed, Reply):
            return self._done("rcpt", parsed)
        self._ask("rcpt", RcptTo(rcpt, parsed, pipelined))

    def _data_precheck(self) -> Reply | None:
        if self.rcpt_count == 0:
            return replies.NEED_RCPT if self.sender is None else replies.NO_VALID_RCPT
        return None

    def _cmd_data(self, arg: str, pipelined: bool) -> None:
        if arg:
            return self._done("data", replies.SYNTAX_DATA)
        err = self._data_precheck()
        if err is None and self._bdat_used:
            err = replies.DATA_AFTER_BDAT
        if err is not None:
            return self._done("data", err)
        self._ask("data", DataStart(False, pipelined))

    def _cmd_bdat(self, arg: str, pipelined: bool) -> None:
        words = arg.split()
        if (not 1 <= len(words) <= 2 or not words[0].isascii() or not words[0].isdigit()
                or int(words[0]) > MAX_BDAT or (len(words) == 2 and words[1].upper() != "LAST")):
            # The chunk length is unknown, so the input cannot be resynchronized.
            self._reply(replies.SYNTAX_BDAT)
            self._count("bdat", False)
            self._close("protocol")
            return
        self._chunk_left = int(words[0])
        self._chunk_size = self._chunk_left
        self._chunk_last = len(words) == 2
        err = None
        limit = self.limits.message_size_limit
        if not self._offer("chunking"):
            err = replies.NOT_IMPLEMENTED
        elif self._bdat_error is not None:
            err = self._bdat_error
        else:
            err = self._data_precheck()
            if err is None and limit and self._chunk_size > limit - (self._size if self._bdat_used else 0):
                # Postfix refuses the chunk from its announced size, before
                # reading it, and the message can no longer be completed.
                err = replies.CHUNK_TOO_BIG
                self._bdat_error = err
                self._events.append(MessageAborted("size"))
        if err is not None:
            self._skip_chunk(err)
            return
        if not self._bdat_used:
            # The chunk itself follows BDAT by design; only bytes beyond it
            # are pipelined input.
            self._ask("bdat", DataStart(True, len(self._buf) > self._chunk_left))
            return
        self._start_chunk()

    def _skip_chunk(self, err: Reply) -> None:
        self._chunk_reply = err
        self._chunk_skip = True
        self._state = _S.BDAT

    def _start_chunk(self) -> None:
        self._chunk_skip = False
        self._chunk_reply = None
        self._state = _S.BDAT

    def _cmd_rset(self, arg: str, pipelined: bool) -> None:
        if arg:
            return self._done("rset", replies.SYNTAX_RSET)
        self._abort_message("rset")
        self._reset_transaction()
        self._events.append(Rset())
        self._done("rset", replies.OK)

    def _cmd_noop(self, arg: str, pipelined: bool) -> None:
        # RFC 5321 4.1.1.9: NOOP may carry a parameter, which is ignored.
        self._done("noop", replies.OK)

    def _cmd_vrfy(self, arg: str, pipelined: bool) -> None:
        if self.limits.disable_vrfy_command:
            return self._done("vrfy", replies.VRFY_DISABLED)
        if not arg:
            return self._done("vrfy", replies.SYNTAX_VRFY)
        address = extract_address(arg, strict=False)
        if not address:
            return self._done("vrfy", replies.BAD_RCPT_SYNTAX)
        self._vrfy_arg = arg
        self._ask("vrfy", Vrfy(address))

    def _cmd_etrn(self, arg: str, pipelined: bool) -> None:
        if self.limits.smtpd_helo_required and self.helo_name is None:
            return self._done("etrn", replies.ETRN_NEED_HELO)
        if self.sender is not None:
            return self._done("etrn", replies.ETRN_IN_TRANSACTION)
        words = arg.split()
        if len(words) != 1:
            return self._done("etrn", replies.SYNTAX_ETRN)
        domain = words[0]
        # RFC 1985 5: "@domain" and "#queuename" forms; Postfix skips the
        # first character when it is not alphanumeric.
        if not domain[0].isalnum():
            domain = domain[1:]
        if not _valid_hostname(domain):
            return self._done("etrn", replies.BAD_ETRN)
        self._ask("etrn", Etrn(domain))

    def _cmd_quit(self, arg: str, pipelined: bool) -> None:
        self._abort_message("lost")
        self._events.append(Quit())
        self._reply(replies.BYE)
        self._count("quit", True)
        self._close("quit")

    def _cmd_starttls(self, arg: str, pipelined: bool) -> None:
        if arg:
            return self._done("starttls", replies.SYNTAX_STARTTLS)
        if self.tls_active:
            return self._done("starttls", replies.TLS_ACTIVE)
        if not self.tls_offered or not self._offer("starttls"):
            return self._done("starttls", replies.NOT_IMPLEMENTED)
        self._ask("starttls", StartTls())

    def _cmd_auth(self, arg: str, pipelined: bool) -> None:
        if self.limits.smtpd_helo_required and self.helo_name is None:
            return self._done("auth", replies.NEED_HELO)
        if not self.auth_mechanisms or not self._offer("auth"):
            return self._done("auth", replies.AUTH_NOT_ENABLED)
        if self.sender is not None:
            return self._done("auth", replies.IN_TRANSACTION)
        if self.limits.smtpd_tls_auth_only and not self.tls_active:
            return self._done("auth", replies.AUTH_ENCRYPTION_REQUIRED)
        if self.authenticated:
            return self._done("auth", replies.AUTH_ALREADY)
        words = arg.split()
        if not 1 <= len(words) <= 2:
            return self._done("auth", replies.SYNTAX_AUTH)
        mech = words[0].upper()
        if mech not in self.auth_mechanisms:
            return self._done("auth", replies.auth_failed("Invalid authentication mechanism"))
        initial = None
        if len(words) == 2:
            initial = _b64(words[1])     # RFC 4954 4: "=" is an empty response
            if initial is None:
                return self._done("auth", replies.AUTH_BAD_BASE64)
        self._ask("auth", Auth(mech, initial))

    def _auth_line(self, raw: bytes) -> None:
        self._state = _S.COMMAND
        if raw.strip() == b"*":
            # RFC 4954 4: the client cancels the exchange.
            self._events.append(AuthAborted())
            return self._done("auth", replies.AUTH_ABORTED)
        data = _b64(raw.decode("latin-1").strip())
        if data is None:
            return self._done("auth", replies.AUTH_BAD_BASE64)
        self._ask("auth", AuthResponse(data))

    def _x_command(self, cmd: str, arg: str, allowed: bool, names: tuple[str, ...],
                   value_limit: int | None) -> dict[str, str] | None:
        stat = cmd.lower()
        if self.sender is not None:
            return self._done(stat, replies.IN_TRANSACTION)
        if not arg:
            return self._done(stat, replies.syntax_x(cmd))
        if not allowed:
            return self._done(stat, replies.XAUTH_DENIED)
        attrs: dict[str, str] = {}
        for item in arg.split():
            name, eq, value = item.partition("=")
            if not eq or not value:
                return self._done(stat, replies.ATTR_EXPECTED)
            if value_limit is not None and len(value) > value_limit:
                return self._done(stat, replies.ATTR_TOO_LONG)
            if name.upper() not in names:
                return self._done(stat, replies.bad_x_attribute(cmd, name))
            decoded = xtext_decode(value)
            if decoded is None or not decoded.isprintable():
                return self._done(stat, replies.bad_x_value(name.upper(), value))
            attrs[name.upper()] = decoded
        return attrs

    def _cmd_xclient(self, arg: str, pipelined: bool) -> None:
        attrs = self._x_command("XCLIENT", arg, self.xclient_allowed, XCLIENT_ATTRS, None)
        if attrs is not None:
            self._ask("xclient", XClient(attrs))

    def _cmd_xforward(self, arg: str, pipelined: bool) -> None:
        attrs = self._x_command("XFORWARD", arg, self.xforward_allowed, XFORWARD_ATTRS,
                                XFORWARD_VALUE_LIMIT)
        if attrs is not None:
            self._ask("xforward", XForward(attrs))

    # -- decisions ------------------------------------------------------------

    def _decide(self, ev: Event, reply: Reply | None) -> None:
        name = self._pending_cmd
        if isinstance(ev, Helo):
            if reply is None or reply.ok:
                self.helo_name = ev.name
                self.esmtp = ev.esmtp
                if reply is None:
                    reply = (replies.ehlo_ok(self.limits.myhostname, self.ehlo_keywords())
                             if ev.esmtp else replies.helo_ok(self.limits.myhostname))
            return self._done(name, reply)
        if isinstance(ev, MailFrom):
            reply = reply or replies.MAIL_OK
            if reply.ok:
                self.sender = ev.sender
                self.mail_params = ev.params
            return self._done(name, reply)
        if isinstance(ev, RcptTo):
            reply = reply or replies.RCPT_OK
            if reply.ok:
                self.rcpt_count += 1
            return self._done(name, reply)
        if isinstance(ev, DataStart):
            if reply is not None and not reply.ok:
                if ev.bdat:
                    self._bdat_used = True
                    self._bdat_error = reply
                    self._skip_chunk(reply)
                    return
                return self._done(name, reply)
            self._in_message = True
            self._size = 0
            self._over = False
            self._bare_seen = False
            self._prev_crlf = True          # the DATA line ended the previous line
            self._at_line_start = True
            self._slow_lines = 0
            self._line_buf = bytearray()
            if ev.bdat:
                self._bdat_used = True
                self._start_chunk()
                return
            self._reply(reply or replies.DATA_GO_AHEAD)
            self._state = _S.DATA
            return
        if isinstance(ev, MessageEnd):
            if reply is None:
                raise ValueError("MessageEnd needs a reply: replies.queued(queue_id) or an error")
            self._in_message = False
            self._state = _S.COMMAND
            stat = "bdat" if self._bdat_used else "data"
            if stat == "bdat" and reply.code == 250 and reply.text.startswith("Ok: queued as "):
                reply = replies.bdat_queued(self._size, reply.text[len("Ok: queued as "):])
            self._reset_transaction()
            if reply.ok:
                # Postfix forgives earlier errors once mail is delivered.
                self.error_count = 0
                self.junk_cmds = 0
            return self._done(stat, reply)
        if isinstance(ev, Vrfy):
            return self._done(name, reply or replies.vrfy_ok(self._vrfy_arg))
        if isinstance(ev, Etrn):
            return self._done(name, reply or replies.ETRN_OK)
        if isinstance(ev, StartTls):
            reply = reply or replies.STARTTLS_GO
            self._done(name, reply)
            if reply.code == 220 and self._state is not _S.CLOSED:
                self._buf.clear()          # STARTTLS injection: drop pipelined plaintext
                self._state = _S.TLS
            return
        if isinstance(ev, (Auth, AuthResponse)):
            if reply is None:
                reply = replies.AUTH_OK
            if reply.code == 235:
                self.authenticated = True
            return self._done(name, reply)
        if isinstance(ev, XClient):
            reply = reply or replies.greeting(self.limits.smtpd_banner)
            if reply.ok:
                # XCLIENT_README: the session restarts as if just connected.
                self._reset_helo()
                self.authenticated = False
            return self._done(name, reply)
        if isinstance(ev, XForward):
            return self._done(name, reply or replies.OK)
        raise RuntimeError(f"no decision for {ev!r}")

    # -- DATA content -------------------------------------------------------------

    def _content_line(self, line: bytes, partial: bool) -> None:
        if not self._in_message or self._over or self._bare_seen:
            return
        if not partial:
            self._size += len(line) + 2       # counted with CRLF, as Postfix's act_size
        else:
            self._size += len(line)
        limit = self.limits.message_size_limit
        if limit and self._size > limit:
            self._over = True
            self._events.append(MessageAborted("size"))
            return
        self._events.append(MessageLine(line, partial))

    def _bare_lf_content(self) -> None:
        if not self._bare_seen and not self._over:
            self._events.append(MessageAborted("bare_lf"))
        self._bare_seen = True

    def _data_bulk(self) -> bool:
        """Take every complete line in the buffer at once, up to the next
        line that starts with "." (dot-stuffed content or the end of data),
        when the run is plain: CRLF line endings only (no bare LF), no
        line longer than the per-line path would cut, within the size
        limit.  Anything else goes to _data_step() line by line (for as
        many lines as the run had, so a client sending bare LFs costs one
        scan, not one per line), which keeps every smuggling and size
        decision in one place.  The events are what _data_step() would
        have made, in one MessageLines."""
        if self._slow_lines > 0 or not self._at_line_start:
            return False
        buf = self._buf
        end = buf.rfind(b"\r\n")
        if end < 0 or buf[:1] == b".":
            return False
        dot = buf.find(b"\r\n.", 0, end)
        cut = (dot if dot >= 0 else end) + 2
        chunk = bytes(buf[:cut])
        lines = chunk.split(b"\r\n")
        lines.pop()                         # chunk ends with CRLF
        # A bare CR stays inside its line on both paths; a bare LF is a
        # line ending (or an error) only the per-line path may judge.
        plain = (chunk.count(b"\n") == len(lines)
                 and max(map(len, lines)) < self.limits.line_length_limit)
        limit = self.limits.message_size_limit
        counting = self._in_message and not self._over and not self._bare_seen
        if not plain or (counting and limit and self._size + len(chunk) > limit):
            self._slow_lines = chunk.count(b"\n")
            return False
        del buf[:cut]
        self._prev_crlf = True
        if counting:
            self._size += len(chunk)        # each line with its CRLF, as act_size
            self._events.append(MessageLines(lines))
        return True

    def _data_step(self) -> bool:
        if self._data_bulk():
            return True
        buf = self._buf
        piece_limit = self.limits.line_length_limit
        nl = buf.find(b"\n", 0, piece_limit + 1)
        if nl < 0:
            if len(buf) <= piece_limit:
                return False
            # Long line: emit a piece, keep a trailing CR with the rest so
            # that a CRLF split over the boundary is still seen.
            cut = piece_limit - 1 if buf[piece_limit - 1] == 0x0D else piece_limit
            piece = bytes(buf[:cut])
            del buf[:cut]
            if self._at_line_start and piece.startswith(b"."):
                piece = piece[1:]          # RFC 5321 4.5.2 dot-unstuffing
            self._at_line_start = False
            self._prev_crlf = False
            self._content_line(piece, True)
            return True
        line = bytes(buf[:nl])
        del buf[:nl + 1]
        self._slow_lines -= 1
        crlf = line.endswith(b"\r")
        if crlf:
            line = line[:-1]
        mode = self._bare_mode
        at_start = self._at_line_start
        self._at_line_start = True
        # End of data. RFC 5321 4.1.1.4: <CRLF>.<CRLF>. With bare newlines
        # forbidden (normalize/reject) both line endings must be CRLF, so
        # <LF>.<LF>, <LF>.<CRLF> and <CRLF>.<LF> are content, never the end
        # (SMTP smuggling). A bare CR is never a line ending.
        if at_start and line == b"." and (mode == "no" or (crlf and self._prev_crlf)):
            self._end_of_data()
            return True
        if not crlf and mode == "reject":
            self._bare_lf_content()
        self._prev_crlf = crlf
        if at_start and line.startswith(b"."):
            line = line[1:]
        self._content_line(line, False)
        return True

    def _end_of_data(self) -> None:
        self._state = _S.COMMAND
        self.where = "END-OF-MESSAGE"
        if self._over or self._bare_seen:
            self._in_message = False
            if self._over:
                reply = replies.MESSAGE_TOO_BIG
            else:
                code = self.limits.smtpd_forbid_bare_newline_reject_code
                reply = replies.bare_newline(code, self.limits.myhostname)
            stat = "bdat" if self._bdat_used else "data"
            self._reset_transaction()
            self._done(stat, reply)
            if reply.code == 521 and self._state is not _S.CLOSED:
                self._close("bare_lf")
            return
        self._ask("data", MessageEnd(self._size))

    # -- BDAT content -----------------------------------------------------------------

    def _bdat_step(self) -> bool:
        if self._chunk_left > 0:
            if not self._buf:
                return False
            n = min(self._chunk_left, len(self._buf))
            data = bytes(self._buf[:n])
            del self._buf[:n]
            self._chunk_left -= n
            if not self._chunk_skip:
                self._bdat_content(data)
            return True
        # chunk complete
        self._state = _S.COMMAND
        if self._chunk_skip:
            reply = self._chunk_reply
            if self._chunk_last or reply is replies.NOT_IMPLEMENTED:
                self._reset_transaction()
            self._done("bdat", reply)
            return True
        if self._over or self._bare_seen:
            reply = replies.MESSAGE_TOO_BIG if self._over else replies.bare_newline(
                self.limits.smtpd_forbid_bare_newline_reject_code, self.limits.myhostname)
            self._in_message = False
            if self._chunk_last:
                self._reset_transaction()
            else:
                self._bdat_error = reply
            self._done("bdat", reply)
            if reply.code == 521 and self._state is not _S.CLOSED:
                self._close("bare_lf")
            return True
        if not self._chunk_last:
            self._done("bdat", replies.bdat_chunk_ok(self._chunk_size))
            return True
        if self._line_buf:
            self._content_line(bytes(self._line_buf), False)
            self._line_buf.clear()
        self.where = "END-OF-MESSAGE"
        if self._over:
            self._in_message = False
            self._reset_transaction()
            self._done("bdat", replies.MESSAGE_TOO_BIG)
            return True
        self._ask("bdat", MessageEnd(self._size))
        return True

    def _bdat_content(self, data: bytes) -> None:
        """BDAT payload: no dot-stuffing (RFC 3030 2); split into records
        at line endings, long lines into pieces, as for DATA."""
        lb = self._line_buf
        lb += data
        limit = self.limits.line_length_limit
        start = 0
        n = len(lb)
        while start < n:
            nl = lb.find(b"\n", start, start + limit + 1)
            if nl >= 0:
                line = bytes(lb[start:nl])
                start = nl + 1
                if line.endswith(b"\r"):
                    line = line[:-1]
                elif self._bare_mode == "reject":
                    self._bare_lf_content()
                self._content_line(line, False)
                continue
            if n - start > limit:
                cut = start + limit
                if lb[cut - 1] == 0x0D:
                    cut -= 1           # keep a CR with what follows: it may be a CRLF
                self._content_line(bytes(lb[start:cut]), True)
                start = cut
                continue
            break
        del lb[:start]


def _b64(text: str) -> bytes | None:
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _valid_hostname(name: str) -> bool:
    """Postfix valid_hostname(): dot-separated labels, at most 255 chars."""
    if not name or len(name) > 255 or name.endswith(".") and len(name) == 1:
        return False
    labels = name.rstrip(".").split(".")
    return all(_LABEL.match(label) for label in labels)
