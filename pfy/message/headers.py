"""RFC 5322 header fields as Postfix classifies them (global/header_opts.c).

Each known header has flags saying what cleanup does with it: which ones
carry sender or recipient addresses (rewritten by canonical and masquerade
rules), which ones sendmail -t extracts recipients from, which are Resent-
headers, MIME headers, or dropped on input.
"""

from __future__ import annotations

__all__ = [
    "HeaderInfo", "header_info", "is_header", "split_header", "unfold",
    "SENDER", "RECIP", "XRECIP", "RESENT", "MIME", "DROP",
]

SENDER = 1 << 0     # HDR_OPT_SENDER: sender address header
RECIP = 1 << 1      # HDR_OPT_RECIP: recipient address header
XRECIP = 1 << 2     # HDR_OPT_EXTRACT: sendmail -t takes recipients from it
RESENT = 1 << 3     # HDR_OPT_RR: Resent- header
MIME = 1 << 4       # HDR_OPT_MIME: MIME header
DROP = 1 << 5       # HDR_OPT_DROP: removed on input


class HeaderInfo:
    __slots__ = ("name", "flags")

    def __init__(self, name: str, flags: int):
        self.name = name
        self.flags = flags

    def __repr__(self) -> str:
        return f"HeaderInfo({self.name!r}, {self.flags})"


# header_opts.c, Postfix 3.7 (Return-Path is dropped: local(8) adds its own).
_TABLE = [
    ("Apparently-To", RECIP),
    ("Bcc", RECIP | XRECIP),
    ("Cc", RECIP | XRECIP),
    ("Content-Description", MIME),
    ("Content-Disposition", MIME),
    ("Content-ID", MIME),
    ("Content-Length", 0),
    ("Content-Transfer-Encoding", MIME),
    ("Content-Type", MIME),
    ("Date", 0),
    ("Delivered-To", 0),
    ("Disposition-Notification-To", SENDER),
    ("Errors-To", SENDER),
    ("From", SENDER),
    ("Mail-Followup-To", SENDER),
    ("Message-ID", 0),
    ("MIME-Version", MIME),
    ("Received", 0),
    ("Reply-To", SENDER),
    ("Resent-Bcc", RECIP | XRECIP | RESENT),
    ("Resent-Cc", RECIP | XRECIP | RESENT),
    ("Resent-Date", RESENT),
    ("Resent-From", SENDER | RESENT),
    ("Resent-Message-ID", RESENT),
    ("Resent-Reply-To", RECIP | RESENT),
    ("Resent-Sender", SENDER | RESENT),
    ("Resent-To", RECIP | XRECIP | RESENT),
    ("Return-Path", SENDER | DROP),
    ("Return-Receipt-To", SENDER),
    ("Sender", SENDER),
    ("To", RECIP | XRECIP),
    ("X-Original-To", 0),
]
_INFO = {name.lower(): HeaderInfo(name, flags) for name, flags in _TABLE}


def header_info(name: str) -> HeaderInfo | None:
    return _INFO.get(name.lower())


def is_header(line: str) -> bool:
    """RFC 5322 2.2: field-name = 1*ftext (printable US-ASCII except ':'),
    then ':' (is_header.c also allows white space before the colon)."""
    n = 0
    for i, ch in enumerate(line):
        if ch == ":":
            return n > 0
        if ch in " \t":
            # only white space may follow until the colon
            rest = line[i:].lstrip(" \t")
            return n > 0 and rest.startswith(":")
        if not (33 <= ord(ch) <= 126):
            return False
        n += 1
    return False


def split_header(text: str) -> tuple[str, str]:
    """("Subject", " value\\n\\tmore") from a logical header."""
    colon = text.find(":")
    return text[:colon].rstrip(" \t"), text[colon + 1:]


def unfold(value: str) -> str:
    """RFC 5322 2.2.3: remove the CRLF of folded lines."""
    return value.replace("\r\n", "").replace("\n", "")
