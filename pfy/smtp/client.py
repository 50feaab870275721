"""Sans-I/O SMTP and LMTP client: bytes in, replies and outcomes out.

The smtp(8)/lmtp(8) delivery agent (pfy.daemons.smtp) drives this core
with asyncio; tests drive it with literal bytes.  Nothing here touches a
socket, a file or the clock.

    c = SmtpClient(lmtp=False)
    c.receive(b"220 mx.example ESMTP\\r\\n")
    greeting = c.next_reply()                       # ClientReply, or None
    c.hello("client.example")                       # queues EHLO (LHLO for LMTP)
    out = c.data_to_send()                          # bytes for the socket
    ...
    tx = Transaction(sender, recipients, features, size=..., ...)
    c.send_commands(tx.commands())                  # MAIL, RCPT..., DATA
    for reply in c.replies(): tx.on_reply(reply)    # pipelined replies, in order
    enc = BodyEncoder(line_limit=998, downgrade=...)# dot-stuffing, QP, long lines
    c.send_raw(enc.record(rtype, data)) ...; c.send_raw(enc.finish())
    tx.data_done(...) -> per-recipient outcomes

Pieces:
    ReplyParser     RFC 5321 4.2 multi-line replies; garbage lines skipped as
                    Postfix's smtp_chat.c does; line and text bounded.
    Features        the EHLO keywords that matter (PIPELINING, SIZE, 8BITMIME,
                    DSN, SMTPUTF8, STARTTLS, AUTH, ENHANCEDSTATUSCODES).
    SmtpClient      a command FIFO: every reply is matched to the command it
                    answers (PIPELINING, RFC 2920 3.1: replies in order), so a
                    failure names its command ("in reply to RCPT TO command").
    Transaction     one mail transaction: MAIL, RCPT..., DATA; per-recipient
                    results typed sent / deferred / bounced with a DSN code and
                    the remote reply quoted; LMTP's one reply per accepted
                    recipient after the final dot (RFC 2033 4.2).
    BodyEncoder     queue-file content records -> DATA bytes: CRLF, dot
                    stuffing (RFC 5321 4.5.2), smtp_line_length_limit, and the
                    8BITMIME downgrade to quoted-printable (RFC 6152 3, as
                    Postfix's mime_state MIME_OPT_DOWNGRADE).

Outcome reasons are Postfix's texts (smtp_proto.c, smtp_trouble.c), e.g.
    host mx.y[192.0.2.3] said: 550 5.1.1 <b@y>: User unknown (in reply to RCPT TO command)
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Iterable

from pfy.smtp.address import quote_local
from pfy.smtp.xtext import xtext_encode

__all__ = [
    "ClientReply", "ReplyParser", "Features", "SmtpClient", "Outcome",
    "Transaction", "TxRecipient", "BodyEncoder", "ProtocolViolation",
    "SENT", "DEFERRED", "BOUNCED", "reply_dsn", "notify_param", "ret_param",
    "DSN_NOTIFY_NEVER", "DSN_NOTIFY_SUCCESS", "DSN_NOTIFY_FAILURE", "DSN_NOTIFY_DELAY",
    "DSN_RET_FULL", "DSN_RET_HDRS",
]

SENT, DEFERRED, BOUNCED = "sent", "deferred", "bounced"

# Postfix global/dsn_mask.h bits, as qmgr passes them in the request.
DSN_NOTIFY_NEVER = 1
DSN_NOTIFY_SUCCESS = 2
DSN_NOTIFY_FAILURE = 4
DSN_NOTIFY_DELAY = 8
DSN_RET_FULL = 1
DSN_RET_HDRS = 2

# Postfix smtp_chat.c reads reply lines with var_line_limit (2048) and keeps
# at most that much text of a (multi-line) reply; the rest is dropped.
REPLY_LINE_LIMIT = 2048
REPLY_TEXT_LIMIT = 2048
# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; a peer that sends
# endless continuation lines is cut off after this many (no Postfix limit;
# bounded so a hostile server cannot hold the process).
REPLY_MAX_LINES = 1000
# Garbage lines ignored before the peer is declared broken (bounded for the
# same reason).
GARBAGE_LIMIT = 100
# RFC 2045 6.7 (5): encoded lines at most 76 characters.
QP_LINE = 76
# Postfix header_size_limit default: a part's headers are buffered for the
# 8BITMIME downgrade up to this much, then passed through unchanged.
HEADER_BUFFER_LIMIT = 102400
# Postfix mime_nesting_limit default.
MIME_NESTING_LIMIT = 100

_STATUS_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


class ProtocolViolation(Exception):
    """The server broke the protocol beyond repair (the driver defers with
    "... protocol error")."""


# -- replies ----------------------------------------------------------------

@dataclass(frozen=True)
class ClientReply:
    """One complete server reply.  ``lines`` are the raw lines with their
    codes ("250-mx.example", "250 SIZE 1000"); ``dsn`` is the enhanced
    status code from the reply or "X.0.0" from the reply code, as
    smtp_chat.c derives it."""
    code: int
    dsn: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        """The lines joined by spaces: Postfix translit(reply, "\\n", " ")."""
        return " ".join(self.lines)

    @property
    def klass(self) -> int:
        return self.code // 100

    def texts(self) -> list[str]:
        """The text after "NNN-" / "NNN " of each line (EHLO keywords)."""
        return [ln[4:] for ln in self.lines]


def reply_dsn(code: int, first_text: str) -> str:
    """RFC 3463 code from the reply text if it is there and agrees with
    the reply code's class, else "X.0.0" (smtp_chat.c)."""
    m = _STATUS_RE.match(first_text)
    klass = code // 100
    if m and int(m.group(1)) == klass:
        return m.group(0)
    if klass in (2, 4, 5):
        return f"{klass}.0.0"
    # 1xx/3xx where a final reply was due: Postfix treats it as a
    # failure; it is the server's fault, so permanent ("5.5.0").
    return "5.5.0" if klass != 3 else "3.0.0"


class ReplyParser:
    """Bytes in, complete replies out."""

    def __init__(self):
        self._buf = bytearray()
        self._lines: list[str] = []
        self._text_len = 0
        self._garbage = 0
        self._replies: deque[ClientReply] = deque()
        self._skipping = False          # inside an over-long line

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > REPLY_LINE_LIMIT:
                    # Keep the start of an over-long line, drop the rest
                    # until its end (smtp_chat.c truncates likewise).
                    if not self._skipping:
                        self._line(bytes(self._buf[:REPLY_LINE_LIMIT]))
                        self._skipping = True
                    del self._buf[:]
                return
            raw = bytes(self._buf[:nl])
            del self._buf[:nl + 1]
            if self._skipping:
                self._skipping = False
                continue
            self._line(raw[:REPLY_LINE_LIMIT])

    def _line(self, raw: bytes) -> None:
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        # Non-printables are the server's, not ours to log (printable()).
        if not line.isprintable():
            line = "".join(ch if ch.isprintable() else "?" for ch in line)
        ok = len(line) >= 3 and line[:3].isdigit() and (len(line) == 3 or line[3] in " -")
        if not ok:
            # smtp_chat.c: "ignore garbage" in a reply.
            self._garbage += 1
            if self._garbage > GARBAGE_LIMIT:
                raise ProtocolViolation("too much garbage in server reply")
            return
        if self._lines and line[:3] != self._lines[0][:3]:
            # RFC 5321 4.2.1: every line of a reply has the same code;
            # a different one ends the previous reply as Postfix reads it.
            self._emit()
        if len(self._lines) < REPLY_MAX_LINES and self._text_len < REPLY_TEXT_LIMIT:
            self._lines.append(line[:REPLY_TEXT_LIMIT - self._text_len].rstrip()
                               if len(line) > 3 else line[:3])
            self._text_len += len(line)
        elif len(self._lines) >= REPLY_MAX_LINES and line[3:4] == "-":
            raise ProtocolViolation("server reply has too many lines")
        if len(line) == 3 or line[3] == " ":
            self._emit()

    def _emit(self) -> None:
        first = self._lines[0]
        code = int(first[:3])
        self._replies.append(ClientReply(code, reply_dsn(code, first[4:]), tuple(self._lines)))
        self._lines = []
        self._text_len = 0
        self._garbage = 0

    def next_reply(self) -> ClientReply | None:
        return self._replies.popleft() if self._replies else None

    def discard(self) -> None:
        """Forget everything buffered (after STARTTLS: RFC 3207 5, bytes the
        server sent before the handshake must not be trusted afterwards)."""
        self._buf.clear()
        self._lines = []
        self._text_len = 0
        self._replies.clear()
        self._skipping = False

    @property
    def pending(self) -> bool:
        return bool(self._buf) or bool(self._lines) or bool(self._replies)


# -- EHLO features ------------------------------------------------------------

@dataclass(frozen=True)
class Features:
    esmtp: bool = False
    pipelining: bool = False
    size: int | None = None          # None: no SIZE; 0: SIZE without a limit
    eightbitmime: bool = False
    dsn: bool = False
    smtputf8: bool = False
    starttls: bool = False
    enhanced: bool = False
    chunking: bool = False
    auth: tuple[str, ...] = ()       # mechanisms, upper case

    @classmethod
    def from_ehlo(cls, reply: ClientReply, discard: Iterable[str] = ()) -> "Features":
        """Keywords from the EHLO/LHLO reply lines after the first (RFC
        5321 4.1.1.1); ``discard`` is smtp_discard_ehlo_keywords."""
        drop = {d.upper() for d in discard}
        kw: dict = {"esmtp": True}
        auth: list[str] = []
        for text in reply.texts()[1:]:
            words = text.replace("=", " ", 1).split() if text.upper().startswith("AUTH=") \
                else text.split()
            if not words:
                continue
            key = words[0].upper()
            if key in drop:
                continue
            if key == "PIPELINING":
                kw["pipelining"] = True
            elif key == "SIZE":
                size = 0
                if len(words) > 1 and words[1].isdigit():
                    size = int(words[1])
                kw["size"] = size
            elif key == "8BITMIME":
                kw["eightbitmime"] = True
            elif key == "DSN":
                kw["dsn"] = True
            elif key == "SMTPUTF8":
                kw["smtputf8"] = True
            elif key == "STARTTLS":
                kw["starttls"] = True
            elif key == "ENHANCEDSTATUSCODES":
                kw["enhanced"] = True
            elif key == "CHUNKING":
                kw["chunking"] = True
            elif key == "AUTH":
                for m in words[1:]:
                    if m.upper() not in auth:
                        auth.append(m.upper())
        kw["auth"] = tuple(auth)
        return cls(**kw)


# -- the command pipe ----------------------------------------------------------

# The words Postfix uses after "in reply to" and "while sending" for each
# command (smtp_proto.c xfer_request[] / xfer_states[]).
COMMAND_NAMES = {
    "EHLO": "EHLO", "HELO": "HELO", "LHLO": "LHLO", "STARTTLS": "STARTTLS",
    "AUTH": "AUTH", "MAIL": "MAIL FROM", "RCPT": "RCPT TO", "DATA": "DATA",
    "DOT": "end of DATA", "RSET": "RSET", "QUIT": "QUIT", "AUTHDATA": "AUTH",
}


class SmtpClient:
    """The connection: a reply parser and the FIFO of commands awaiting a
    reply.  ``lmtp`` makes hello() send LHLO and the final dot expect one
    reply per accepted recipient (the Transaction does that counting)."""

    def __init__(self, lmtp: bool = False):
        self.lmtp = lmtp
        self.parser = ReplyParser()
        self._out = bytearray()
        self.awaiting: deque[str] = deque()     # command kinds awaiting replies
        self.last_command = ""                  # for "while sending X"
        self.closed = False

    # bytes in / out
    def receive(self, data: bytes) -> None:
        self.parser.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_reply(self) -> ClientReply | None:
        return self.parser.next_reply()

    # commands
    def send_command(self, kind: str, line: str | bytes, replies: int = 1) -> None:
        data = line.encode("utf-8") if isinstance(line, str) else line
        if b"\r" in data or b"\n" in data:
            raise ValueError("CR or LF in an SMTP command")   # our bug, never the peer's
        self._out += data + b"\r\n"
        for _ in range(replies):
            self.awaiting.append(kind)
        self.last_command = kind

    def expect(self, kind: str, count: int = 1) -> None:
        """A reply is due without a command (greeting, LMTP's per-recipient
        replies after the dot)."""
        for _ in range(count):
            self.awaiting.append(kind)

    def send_raw(self, data: bytes) -> None:
        self._out += data

    def pop_reply(self) -> tuple[str, ClientReply] | None:
        """The next reply with the kind of command it answers."""
        if not self.awaiting:
            return None
        reply = self.parser.next_reply()
        if reply is None:
            return None
        return self.awaiting.popleft(), reply

    def hello_command(self, name: str, esmtp: bool = True) -> tuple[str, str]:
        if self.lmtp:
            return "LHLO", f"LHLO {name}"
        return ("EHLO", f"EHLO {name}") if esmtp else ("HELO", f"HELO {name}")

    def tls_started(self) -> None:
        """After the handshake: nothing from before it survives."""
        self.parser.discard()
        self.awaiting.clear()

    def in_progress(self) -> str:
        """What we were doing, for "lost connection ... while X"."""
        kind = self.awaiting[0] if self.awaiting else self.last_command
        return describe_state(kind)


def describe_state(kind: str) -> str:
    """Postfix's words for a protocol phase (smtp_proto.c, smtp_connect.c)."""
    return {
        "GREETING": "receiving the initial server greeting",
        "EHLO": "performing the EHLO handshake",
        "HELO": "performing the HELO handshake",
        "LHLO": "performing the LHLO handshake",
        "STARTTLS": "receiving the STARTTLS response",
        "AUTH": "authenticating", "AUTHDATA": "authenticating",
        "MAIL": "sending MAIL FROM", "RCPT": "sending RCPT TO",
        "DATA": "sending DATA command", "BODY": "sending message body",
        "DOT": "sending end of data -- message may be sent more than once",
        "RSET": "sending RSET", "QUIT": "sending QUIT",
    }.get(kind, "talking to the server")


def in_reply_to(kind: str) -> str:
    return COMMAND_NAMES.get(kind, kind)


# -- DSN parameters ---------------------------------------------------------------

def notify_param(mask: int) -> str:
    """Postfix dsn_notify_str(): NEVER, or SUCCESS,FAILURE,DELAY in that order."""
    if mask & DSN_NOTIFY_NEVER:
        return "NEVER"
    words = [w for bit, w in ((DSN_NOTIFY_SUCCESS, "SUCCESS"), (DSN_NOTIFY_FAILURE, "FAILURE"),
                              (DSN_NOTIFY_DELAY, "DELAY")) if mask & bit]
    return ",".join(words)


def ret_param(ret: int) -> str:
    return "FULL" if ret & DSN_RET_FULL else ("HDRS" if ret & DSN_RET_HDRS else "")


def quote_address(addr: str) -> str:
    """Internal form -> RFC 5321 path text (quote_821_local)."""
    return quote_local(addr) if addr else ""


# -- one transaction ----------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    status: str          # sent / deferred / bounced
    dsn: str
    reason: str
    # The server's reply when the outcome is its word ("550 5.1.1 <b@y>:
    # User unknown"): the DSN's Diagnostic-Code "smtp; ..." (Postfix's
    # DSB_DTYPE_SMTP); "" when we decided ourselves (DSN_BY_LOCAL_MTA).
    diag: str = ""


@dataclass
class TxRecipient:
    address: str          # internal form
    orig_rcpt: str = ""
    dsn_orcpt: str = ""   # "rfc822;addr" as stored by cleanup, or ""
    dsn_notify: int = 0
    key: object = None    # the driver's handle
    outcome: Outcome | None = None
    accepted: bool = False


def _fail(reply: ClientReply, namaddr: str, kind: str) -> Outcome:
    """smtp_rcpt_fail()/smtp_mesg_fail(): 4xx deferred, else bounced."""
    reason = f"host {namaddr} said: {reply.text} (in reply to {in_reply_to(kind)} command)"
    dsn = reply.dsn
    if reply.klass == 4:
        return Outcome(DEFERRED, dsn, reason, reply.text)
    if dsn[0] != "5":
        dsn = "5" + dsn[1:]
    return Outcome(BOUNCED, dsn, reason, reply.text)


class Transaction:
    """MAIL, RCPT..., DATA for one message to one server.

    commands() gives the (kind, line) list to send; with PIPELINING all at
    once (RFC 2920 3.1: DATA may end the group), else the driver sends
    them one by one, each after the previous reply (next_command()).
    on_reply() consumes the replies in order.  When ``want_body`` is true
    the driver streams the content and calls end_of_data(); the final
    replies go to on_reply() again.  ``done`` is true when every recipient
    has an outcome.
    """

    def __init__(self, sender: str, recipients: list[TxRecipient], features: Features,
                 namaddr: str, *, lmtp: bool = False, size: int = 0, body_8bit: bool = False,
                 send_8bitmime: bool = True, smtputf8: bool = False, dsn_ret: int = 0,
                 dsn_envid: str = "", probe: bool = False):
        self.sender = sender
        self.rcpts = recipients
        self.features = features
        self.namaddr = namaddr
        self.lmtp = lmtp
        self.size = size
        self.body_8bit = body_8bit
        self.send_8bitmime = send_8bitmime
        self.smtputf8 = smtputf8
        self.dsn_ret = dsn_ret
        self.dsn_envid = dsn_envid
        # An address probe (sendmail -bv, verify(8)): MAIL and RCPT only;
        # a RCPT 2xx is the recipient's final "deliverable" outcome, and
        # the driver ends the transaction with RSET (smtp_proto.c: a
        # DEL_REQ_TRACE_ONLY request goes no further than RCPT).
        self.probe = probe
        self._queue: deque[tuple[str, str, int]] = deque()   # kind, line, rcpt index
        self._awaiting: deque[tuple[str, int]] = deque()
        self.mail_ok = False
        self.mail_failed: Outcome | None = None
        self.data_ok = False
        self.want_body = False
        self._dot_pending: list[int] = []
        self._build()

    # -- commands -------------------------------------------------------------
    def mail_command(self) -> str:
        f = self.features
        parts = [f"MAIL FROM:<{quote_address(self.sender)}>"]
        if f.size is not None and self.size:
            parts.append(f"SIZE={self.size}")
        if f.eightbitmime and self.send_8bitmime:
            # Postfix sends BODY=8BITMIME when the message claims 8-bit
            # content and the peer announced 8BITMIME (RFC 6152 2).
            if self.body_8bit:
                parts.append("BODY=8BITMIME")
        if f.smtputf8 and self.smtputf8:
            parts.append("SMTPUTF8")                       # RFC 6531 3.4
        if f.dsn:
            ret = ret_param(self.dsn_ret)
            if ret:
                parts.append(f"RET={ret}")
            if self.dsn_envid:
                parts.append(f"ENVID={xtext_encode(self.dsn_envid)}")
        return " ".join(parts)

    def rcpt_command(self, r: TxRecipient) -> str:
        parts = [f"RCPT TO:<{quote_address(r.address)}>"]
        if self.features.dsn:
            if r.dsn_notify:
                parts.append(f"NOTIFY={notify_param(r.dsn_notify)}")
            if r.dsn_orcpt:
                kind, semi, addr = r.dsn_orcpt.partition(";")
                if semi:
                    parts.append(f"ORCPT={kind};{xtext_encode(addr)}")
            elif r.orig_rcpt:
                # smtp_proto.c: ORCPT from the original recipient when no
                # ORCPT was received (RFC 3461 4.2).
                parts.append(f"ORCPT=rfc822;{xtext_encode(quote_address(r.orig_rcpt))}")
        return " ".join(parts)

    def _build(self) -> None:
        self._queue.append(("MAIL", self.mail_command(), -1))
        for i, r in enumerate(self.rcpts):
            if r.outcome is None:
                self._queue.append(("RCPT", self.rcpt_command(r), i))
        if not self.probe:
            self._queue.append(("DATA", "DATA", -1))

    def commands(self) -> list[tuple[str, str]]:
        """The next group to send: everything with PIPELINING, else one."""
        out = []
        while self._queue:
            kind, line, idx = self._queue.popleft()
            self._awaiting.append((kind, idx))
            out.append((kind, line))
            if not self.features.pipelining:
                break
        return out

    # -- replies ----------------------------------------------------------------
    def on_reply(self, reply: ClientReply) -> list[tuple[str, str]]:
        """Consume one reply; returns the next commands to send (without
        PIPELINING) — possibly none."""
        if self._dot_pending:
            self._on_dot_reply(reply)
            return []
        if not self._awaiting:
            raise ProtocolViolation("unexpected server reply")
        kind, idx = self._awaiting.popleft()
        if kind == "MAIL":
            if reply.klass == 2:
                self.mail_ok = True
            else:
                self.mail_failed = _fail(reply, self.namaddr, "MAIL")
                for r in self.rcpts:
                    if r.outcome is None:
                        r.outcome = self.mail_failed
                if not self.features.pipelining:
                    self._queue.clear()       # no RCPT/DATA after a failed MAIL
        elif kind == "RCPT":
            r = self.rcpts[idx]
            if not self.mail_ok:
                pass                         # outcome set by the MAIL failure
            elif reply.klass == 2:
                r.accepted = True
                if self.probe:
                    r.outcome = Outcome(SENT, reply.dsn, reply.text, reply.text)
            else:
                r.outcome = _fail(reply, self.namaddr, "RCPT")
            if not self.features.pipelining and not self._awaiting:
                if not self._queue or (self._queue[0][0] == "DATA" and not self.accepted()):
                    self._queue.clear()      # nobody accepted: no DATA
        elif kind == "DATA":
            if reply.code == 354 and self.mail_ok and self.accepted():
                self.data_ok = True
                self.want_body = True
            elif self.mail_ok and self.accepted():
                if reply.klass == 3 or reply.klass == 2:
                    # A 2xx/3xx other than 354 (RFC 5321 4.3.2): protocol error.
                    reply = ClientReply(reply.code, "5.5.0", reply.lines)
                out = _fail(reply, self.namaddr, "DATA")
                for r in self.accepted():
                    r.outcome = out
            # else: DATA answered after nobody was accepted: pipelined
            # DATA is refused (503) by a correct server; nothing to do.
        return self.commands() if not self.features.pipelining and not self._awaiting else []

    def accepted(self) -> list[TxRecipient]:
        return [r for r in self.rcpts if r.accepted and r.outcome is None]

    @property
    def awaiting_replies(self) -> int:
        return len(self._awaiting) + len(self._dot_pending)

    def end_of_data(self) -> int:
        """The final dot was sent: how many replies to expect (LMTP: one per
        accepted recipient, RFC 2033 4.2; SMTP: one)."""
        self.want_body = False
        acc = [i for i, r in enumerate(self.rcpts) if r.accepted and r.outcome is None]
        self._dot_pending = acc if self.lmtp else [-1]
        self._dot_rcpts = acc
        return len(self._dot_pending)

    def _on_dot_reply(self, reply: ClientReply) -> None:
        idx = self._dot_pending.pop(0)
        targets = self._dot_rcpts if idx == -1 else [idx]
        for i in targets:
            r = self.rcpts[i]
            if reply.klass == 2:
                r.outcome = Outcome(SENT, reply.dsn, reply.text, reply.text)
            else:
                r.outcome = _fail(reply, self.namaddr, "DOT")

    def fail_unsettled(self, status: str, dsn: str, reason: str) -> None:
        """The session broke: every recipient without an outcome gets this."""
        for r in self.rcpts:
            if r.outcome is None:
                r.outcome = Outcome(status, dsn, reason)

    @property
    def done(self) -> bool:
        return all(r.outcome is not None for r in self.rcpts)


# -- message body -----------------------------------------------------------------

# Queue record types (pfy.queue.record, Postfix's rec_type.h).
REC_NORM = ord("N")
REC_CONT = ord("L")
# pfy.queue.record: at most 5 length bytes (35 bits) and 1 MiB of payload;
# beyond either the queue file is corrupt.
RECORD_LENGTH_BYTES = 5
MAX_RECORD_PAYLOAD = 1 << 20

_SAFE_QP = frozenset(range(33, 127)) - {ord("=")}


def qp_encode_line(line: bytes) -> list[bytes]:
    """One line -> quoted-printable lines (RFC 2045 6.7): soft breaks "="
    keep each at most 76 characters; trailing white space is encoded."""
    out: list[bytes] = []
    cur = bytearray()
    n = len(line)
    for i, b in enumerate(line):
        if b in _SAFE_QP or ((b == 32 or b == 9) and i != n - 1):
            tok = bytes((b,))
        else:
            tok = b"=%02X" % b
        if len(cur) + len(tok) > QP_LINE - 1:      # room for the soft break "="
            out.append(bytes(cur) + b"=")
            cur = bytearray()
        cur += tok
    out.append(bytes(cur))
    return out


_CTE_RE = re.compile(rb"^content-transfer-encoding\s*:\s*([^\s;(]+)", re.I)
_CT_RE = re.compile(rb"^content-type\s*:\s*([^\s;/(]+)\s*/\s*([^\s;(]+)", re.I)
_BOUNDARY_RE = re.compile(rb"""boundary\s*=\s*(?:"([^"]*)"|([^\s;]+))""", re.I)


class _Downgrader:
    """Streaming 8BITMIME downgrade (RFC 6152 3; Postfix mime_state with
    MIME_OPT_DOWNGRADE): a body part that declares 8bit or binary
    Content-Transfer-Encoding gets "quoted-printable" and its lines are
    encoded; multipart parts are followed through their boundaries and
    message/rfc822 into the enclosed headers.  Headers are not changed
    otherwise (Postfix leaves 8-bit header text alone too)."""

    def __init__(self):
        self.in_headers = True
        self.headers: list[bytes] = []
        self.header_bytes = 0
        self.boundaries: list[bytes] = []
        self.encode_body = False
        self.nested_message = False     # the part's body is message/rfc822

    def line(self, line: bytes) -> list[bytes]:
        if self.in_headers:
            if line == b"" or line == b"\r":
                out = self._end_headers() + [line]
                if self.nested_message:
                    # message/rfc822: the enclosed message's headers follow.
                    self.nested_message = False
                    self.in_headers = True
                return out
            if self.header_bytes + len(line) > HEADER_BUFFER_LIMIT:
                out = self.headers + [line]
                self.headers = []
                self.header_bytes = 0
                return out
            if line[:1] not in (b" ", b"\t") and b":" not in line and not self.headers:
                # Not a header at all: the body starts (no blank line).
                return self._end_headers() + self._body(line)
            self.headers.append(line)
            self.header_bytes += len(line)
            return []
        return self._body(line)

    def _body(self, line: bytes) -> list[bytes]:
        if self.boundaries and line.startswith(b"--"):
            for depth in range(len(self.boundaries) - 1, -1, -1):
                b = self.boundaries[depth]
                if line.startswith(b"--" + b) and line.rstrip(b" \t\r")[2 + len(b):] in (b"", b"--"):
                    del self.boundaries[depth + 1:]
                    if line.rstrip(b" \t\r").endswith(b"--") and \
                            line.rstrip(b" \t\r") == b"--" + b + b"--":
                        self.boundaries.pop()
                        self.encode_body = False
                    else:
                        self.in_headers = True
                        self.encode_body = False
                    return [line]
        if self.encode_body:
            return qp_encode_line(line[:-1] if line.endswith(b"\r") else line)
        return [line]

    def _end_headers(self) -> list[bytes]:
        # Unfold to find Content-Type and Content-Transfer-Encoding.
        logical: list[list[int]] = []
        for i, h in enumerate(self.headers):
            if h[:1] in (b" ", b"\t") and logical:
                logical[-1].append(i)
            else:
                logical.append([i])
        ctype = None
        boundary = None
        cte_idx = None
        cte = None
        for group in logical:
            text = b" ".join(self.headers[i].strip() for i in group)
            m = _CT_RE.match(text)
            if m:
                ctype = (m.group(1).lower(), m.group(2).lower())
                bm = _BOUNDARY_RE.search(text)
                if bm:
                    boundary = bm.group(1) if bm.group(1) is not None else bm.group(2)
            m = _CTE_RE.match(text)
            if m:
                cte = m.group(1).lower()
                cte_idx = group
        out = list(self.headers)
        self.headers = []
        self.header_bytes = 0
        self.in_headers = False
        self.encode_body = False
        if ctype and ctype[0] == b"multipart" and boundary:
            if len(self.boundaries) < MIME_NESTING_LIMIT:
                self.boundaries.append(boundary)
            return out
        if ctype == (b"message", b"rfc822"):
            self.nested_message = True
            return out
        if cte in (b"8bit", b"binary") and cte_idx is not None:
            first = cte_idx[0]
            out[first] = b"Content-Transfer-Encoding: quoted-printable"
            for i in reversed(cte_idx[1:]):
                del out[i]
            self.encode_body = True
        return out


class BodyEncoder:
    """Queue content records -> the bytes of DATA, streaming.

    - CRLF line ends; a leading "." doubled (RFC 5321 4.5.2);
    - lines longer than ``line_limit`` broken by inserting CRLF SPACE
      (postconf(5) smtp_line_length_limit; 0 = no limit);
    - ``downgrade``: 8-bit MIME parts converted to quoted-printable for a
      server without 8BITMIME (RFC 6152 3).
    finish() gives the last partial line and the final ".".
    """

    def __init__(self, line_limit: int = 998, downgrade: bool = False):
        self.line_limit = line_limit
        self.down = _Downgrader() if downgrade else None
        self._partial: list[bytes] = []
        self._partial_len = 0
        self._col = 0            # output column within a long line (line_limit)
        self.bytes_out = 0

    def record(self, rtype: int, data: bytes) -> bytes:
        if rtype == REC_CONT:
            if self.down is None:
                return self._emit_piece(data, end=False)
            # Downgrade needs whole lines; long lines are bounded by the
            # queue's own record handling (cleanup's line_length_limit).
            self._partial.append(data)
            self._partial_len += len(data)
            return b""
        if self.down is None:
            return self._emit_piece(data, end=True)
        if self._partial:
            self._partial.append(data)
            data = b"".join(self._partial)
            self._partial = []
            self._partial_len = 0
        out = bytearray()
        for ln in self.down.line(data):
            out += self._emit_piece(ln, end=True)
        return bytes(out)

    def encode_records(self, buf: bytes, pos: int = 0) -> tuple[bytes, int]:
        """Raw queue-file bytes (a run of content records, as read from the
        file) -> (DATA bytes, offset of the first record not complete in
        ``buf``).  The caller keeps ``buf[offset:]`` and prepends it to the
        next read, so memory stays one read chunk plus one record.

        The same output as record() per record, in batches: complete lines
        that need neither breaking nor downgrading are joined with CRLF in
        one bytes operation, and dot-stuffed with one replace() (RFC 5321
        4.5.2) -- about a tenth of the per-record cost at 100 KB.  Record
        types other than N and L (padding, pointers) are skipped, as the
        per-record path of the driver did.
        """
        end = len(buf)
        out: list[bytes] = []
        lines: list[bytes] = []
        fast = self.down is None
        at_line_start = fast and self._col == 0
        append = lines.append
        limit = self.line_limit if self.line_limit > 0 else MAX_RECORD_PAYLOAD
        norm, cont = REC_NORM, REC_CONT
        while pos + 2 <= end:
            rtype = buf[pos]
            n = buf[pos + 1]
            if n < 0x80:
                start = pos + 2
            else:
                # Postfix rec_put(): 7 bits per byte, low bits first.
                n &= 0x7F
                shift, i = 7, pos + 2
                while True:
                    if i >= end:
                        n = -1
                        break
                    b = buf[i]
                    n |= (b & 0x7F) << shift
                    shift += 7
                    i += 1
                    if b < 0x80:
                        break
                    if i - pos > RECORD_LENGTH_BYTES:
                        raise ValueError(f"bad record length at content offset {pos}")
                if n < 0:
                    break
                if n > MAX_RECORD_PAYLOAD:
                    raise ValueError(f"record length {n} at content offset {pos}")
                start = i
            stop = start + n
            if stop > end:
                break
            if rtype == norm and at_line_start and n <= limit:
                append(buf[start:stop])
            elif rtype == norm or rtype == cont:
                if lines:
                    out.append(self._join_lines(lines))
                    lines = []
                    append = lines.append
                out.append(self.record(rtype, buf[start:stop]))
                at_line_start = fast and self._col == 0
            pos = stop
        if lines:
            out.append(self._join_lines(lines))
        return b"".join(out), pos

    def _join_lines(self, lines: list[bytes]) -> bytes:
        """Complete lines at column 0 -> CRLF-ended, dot-stuffed bytes.
        Queue records never hold a newline, so every b"\n." in the joined
        text is a line start of ours."""
        data = b"\r\n".join(lines)
        data += b"\r\n"
        if b"\n." in data:
            data = data.replace(b"\n.", b"\n..")
        if data[:1] == b".":
            data = b"." + data
        self.bytes_out += len(data)
        return data

    def _emit_piece(self, data: bytes, end: bool) -> bytes:
        out = bytearray()
        if self._col == 0 and data[:1] == b".":
            out += b"."
        limit = self.line_limit
        if limit > 0:
            while self._col + len(data) > limit:
                take = limit - self._col
                out += data[:take]
                out += b"\r\n "
                data = data[take:]
                self._col = 1
        out += data
        if end:
            out += b"\r\n"
            self._col = 0
        else:
            self._col += len(data)
        self.bytes_out += len(out)
        return bytes(out)

    def finish(self) -> bytes:
        out = bytearray()
        if self._partial:
            out += self.record(REC_NORM, b"")
        elif self._col:
            out += b"\r\n"
            self._col = 0
        out += b".\r\n"
        return bytes(out)
