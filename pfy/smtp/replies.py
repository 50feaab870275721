"""Every reply the SMTP server sends, each with its enhanced status code.

The texts are Postfix's (smtpd.c, smtpd_sasl_proto.c of Postfix 3.x), so log
parsers, monitoring and clients that match on reply text keep working. A few
texts could not be checked against the source here; they carry a
"# unverified" comment and the closest Postfix-style wording.

A Reply is a value: code, enhanced status code (RFC 3463; "" for none) and
one or more text lines. render() produces the wire form; with
enhanced=False (ENHANCEDSTATUSCODES discarded by smtpd_discard_ehlo_keywords)
the status code is left out, as Postfix's smtpd_chat.c strips it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Reply", "parse_reply"]

_STATUS_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


@dataclass(frozen=True)
class Reply:
    code: int
    status: str          # enhanced status code "X.Y.Z" or "" (RFC 3463)
    text: str = ""       # lines separated by "\n"; an empty text is allowed

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"bad SMTP reply code {self.code}")
        if self.status and not _STATUS_RE.match(self.status):
            raise ValueError(f"bad enhanced status code {self.status!r}")
        if "\r" in self.text:
            raise ValueError("reply text contains CR")

    @property
    def ok(self) -> bool:
        """2xx or 3xx: the command (or this step of it) succeeded."""
        return self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    def lines(self, enhanced: bool = True) -> list[str]:
        texts = self.text.split("\n") if self.text else [""]
        prefix = f"{self.status} " if (enhanced and self.status) else ""
        out = []
        for i, t in enumerate(texts):
            sep = "-" if i < len(texts) - 1 else " "
            out.append(f"{self.code}{sep}{prefix}{t}".rstrip(" "))
        return out

    def render(self, enhanced: bool = True) -> bytes:
        """Wire form; UTF-8 so SMTPUTF8 replies can echo addresses."""
        return "".join(line + "\r\n" for line in self.lines(enhanced)).encode("utf-8")

    def __str__(self) -> str:
        return "\n".join(self.lines())


def parse_reply(text: str) -> Reply:
    """'550 5.1.1 <x@y>: Recipient address rejected' -> Reply (for access
    tables and policy servers whose actions are reply texts). The enhanced
    code is optional; a missing one is derived from the first digit, as
    Postfix's smtpd_check does with "X.0.0"."""
    m = re.match(r"^([2-5]\d\d)(?:[ -](.*))?$", text.strip(), re.S)
    if not m:
        raise ValueError(f"not an SMTP reply: {text!r}")
    code = int(m.group(1))
    rest = m.group(2) or ""
    parts = rest.split(" ", 1)
    if parts and _STATUS_RE.match(parts[0]) and parts[0][0] == str(code)[0]:
        return Reply(code, parts[0], parts[1] if len(parts) > 1 else "")
    return Reply(code, f"{str(code)[0]}.0.0", rest)


# ---------------------------------------------------------------------------
# Greeting, HELO/EHLO

def greeting(banner: str) -> Reply:
    """220 $smtpd_banner (RFC 5321 4.2: the banner starts with the host name)."""
    return Reply(220, "", banner)


def helo_ok(myhostname: str) -> Reply:
    return Reply(250, "", myhostname)


def ehlo_ok(myhostname: str, keywords: list[str]) -> Reply:
    """250-host / 250-KEYWORD... : the EHLO reply has no enhanced codes
    (RFC 2034 3: only after the client has seen ENHANCEDSTATUSCODES)."""
    return Reply(250, "", "\n".join([myhostname, *keywords]))


SYNTAX_HELO = Reply(501, "", "Syntax: HELO hostname")     # Postfix: no enhanced code here
SYNTAX_EHLO = Reply(501, "", "Syntax: EHLO hostname")
NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")

# ---------------------------------------------------------------------------
# Generic

OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Error: command not recognized")   # Postfix 3.7: 500, checked side by side
BAD_SYNTAX = Reply(500, "5.5.2", "Error: bad syntax")
BAD_UTF8 = Reply(500, "5.5.2", "Error: bad UTF-8 syntax")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Error: command not implemented")
IN_TRANSACTION = Reply(503, "5.5.1", "Error: MAIL transaction in progress")
PROTOCOL_ERROR = Reply(521, "5.5.1", "Protocol error")
SYNC_ERROR = Reply(554, "5.5.0", "Error: SMTP protocol synchronization")  # postconf(5) smtpd_forbid_unauth_pipelining
# smtpd_forbidden_commands: Postfix's famous reply before it hangs up.
FORBIDDEN_COMMAND = Reply(221, "2.7.0", "Error: I can break rules, too. Goodbye.")
SYNTAX_RSET = Reply(501, "5.5.4", "Syntax: RSET")
SYNTAX_NOOP = Reply(501, "5.5.4", "Syntax: NOOP")
MUST_STARTTLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")


def too_many_errors(myhostname: str) -> Reply:
    return Reply(421, "4.7.0", f"{myhostname} Error: too many errors")


def timeout_exceeded(myhostname: str) -> Reply:
    return Reply(421, "4.4.2", f"{myhostname} Error: timeout exceeded")


def access_denied(namaddr: str) -> Reply:
    """After a greeting-time rejection (smtpd_delay_reject = no), every
    command but QUIT gets this (RFC 5321 3.1)."""
    return Reply(503, "5.7.0", f"Error: access denied for {namaddr}")


def bare_newline(code: int, myhostname: str) -> Reply:
    """smtpd_forbid_bare_newline = reject; code from
    smtpd_forbid_bare_newline_reject_code (521 disconnects)."""
    return Reply(code, "5.5.2", f"{myhostname} Error: bare <LF> received")


# ---------------------------------------------------------------------------
# MAIL / RCPT

MAIL_OK = Reply(250, "2.1.0", "Ok")
RCPT_OK = Reply(250, "2.1.5", "Ok")
SYNTAX_MAIL = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
SYNTAX_RCPT = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NO_VALID_RCPT = Reply(554, "5.5.1", "Error: no valid recipients")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RCPT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Error: too many recipients")
SIZE_EXCEEDED = Reply(552, "5.3.4", "Message size exceeds fixed limit")        # MAIL SIZE=
# After the content: cleanup's CLEANUP_STAT_SIZE as smtpd words it.
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Error: message file too big")
# BDAT whose announced size alone is over message_size_limit.
CHUNK_TOO_BIG = Reply(552, "5.3.4", "Chunk exceeds message size limit")
SIZE_OVERFLOW = Reply(552, "5.3.4", "Message size exceeds file system imposed limit")
BAD_SIZE = Reply(501, "5.5.4", "Bad message size syntax")
BAD_ENVID = Reply(501, "5.5.4", "Bad ENVID parameter syntax")
BAD_RET = Reply(501, "5.5.4", "Bad RET parameter syntax")
BAD_NOTIFY = Reply(501, "5.5.4", "Error: Bad NOTIFY parameter syntax")
BAD_ORCPT = Reply(501, "5.5.4", "Error: Bad ORCPT parameter syntax")
BAD_AUTH_PARAM = Reply(501, "5.5.4", "Bad AUTH parameter syntax")    # unverified (needs a SASL backend on the Postfix side)
AUTH_PARAM_DISABLED = Reply(503, "5.7.4", "Error: authentication disabled")
SMTPUTF8_DISABLED = Reply(555, "5.5.4", "Unsupported option: SMTPUTF8")


def unsupported_option(option: str) -> Reply:
    return Reply(555, "5.5.4", f"Unsupported option: {option}")


# ---------------------------------------------------------------------------
# DATA / BDAT

DATA_GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
SYNTAX_DATA = Reply(501, "5.5.4", "Syntax: DATA")
SYNTAX_BDAT = Reply(521, "5.5.4", "Syntax: BDAT count [LAST]")   # Postfix hangs up: chunk length unknown
DATA_AFTER_BDAT = Reply(503, "5.5.1", "Error: DATA after BDAT")
QUEUE_WRITE_ERROR = Reply(451, "4.3.0", "Error: queue file write error")


def etrn_denied(domain: str) -> Reply:
    """The flush service refused: domain not in fast_flush_domains."""
    return Reply(459, "", f"<{domain}>: service unavailable")


def queued(queue_id: str) -> Reply:
    """Only after cleanup has fsynced the queue file (DESIGN.md invariant)."""
    return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


def bdat_queued(nbytes: int, queue_id: str) -> Reply:
    """BDAT LAST: Postfix names the message size (its act_size: the
    content with the last line ended by CRLF)."""
    return Reply(250, "2.0.0", f"Ok: {nbytes} bytes queued as {queue_id}")


def bdat_chunk_ok(nbytes: int) -> Reply:
    return Reply(250, "2.0.0", f"Ok: {nbytes} bytes")


# ---------------------------------------------------------------------------
# VRFY / ETRN

VRFY_DISABLED = Reply(502, "5.5.1", "VRFY command is disabled")
SYNTAX_VRFY = Reply(501, "5.5.4", "Syntax: VRFY address")
# Postfix's etrn_cmd() sends these without an enhanced status code.
SYNTAX_ETRN = Reply(500, "", "Syntax: ETRN domain")
BAD_ETRN = Reply(501, "", "Error: invalid parameter syntax")
ETRN_NEED_HELO = Reply(503, "", "Error: send HELO/EHLO first")
ETRN_IN_TRANSACTION = Reply(503, "", "Error: MAIL transaction in progress")
ETRN_UNAVAILABLE = Reply(458, "", "Unable to queue messages")
ETRN_OK = Reply(250, "", "Queuing started")                      # RFC 1985


def vrfy_ok(address: str) -> Reply:
    """252: cannot verify, will accept (RFC 5321 3.5.3)."""
    return Reply(252, "2.0.0", address)


# ---------------------------------------------------------------------------
# STARTTLS

STARTTLS_GO = Reply(220, "2.0.0", "Ready to start TLS")
SYNTAX_STARTTLS = Reply(501, "5.5.4", "Syntax: STARTTLS")
TLS_ACTIVE = Reply(554, "5.5.1", "Error: TLS already active")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available due to local problem")

# ---------------------------------------------------------------------------
# AUTH (smtpd_sasl_proto.c, smtpd_sasl_glue.c)

AUTH_NOT_ENABLED = Reply(503, "5.5.1", "Error: authentication not enabled")
AUTH_ALREADY = Reply(503, "5.5.1", "Error: already authenticated")
SYNTAX_AUTH = Reply(501, "5.5.4", "Syntax: AUTH mechanism")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")            # unverified
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")


def auth_failed(reason: str = "authentication failure") -> Reply:
    return Reply(535, "5.7.8", f"Error: authentication failed: {reason}")


def auth_challenge(b64: str) -> Reply:
    """334 base64-challenge (RFC 4954 4); no enhanced code on 334."""
    return Reply(334, "", b64)


# ---------------------------------------------------------------------------
# XCLIENT / XFORWARD (XCLIENT_README, XFORWARD_README)

XAUTH_DENIED = Reply(550, "5.7.0", "Error: insufficient authorization")
ATTR_EXPECTED = Reply(501, "5.5.4", "Error: attribute=value expected")
ATTR_TOO_LONG = Reply(501, "5.5.4", "Error: attribute value too long")


def syntax_x(command: str) -> Reply:
    return Reply(501, "5.5.4", f"Syntax: {command} attribute=value...")


def bad_x_attribute(command: str, name: str) -> Reply:
    return Reply(501, "5.5.4", f"Bad {command} attribute name: {name}")


def bad_x_value(name: str, value: str) -> Reply:
    return Reply(501, "5.5.4", f"Bad {name} syntax: {value}")
