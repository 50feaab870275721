"""Copy a queued message into a mailbox file: Postfix's mail_copy().

The prepended lines and their order are Postfix's (global/mail_copy.c):

    From sender  Mon Nov 22 10:15:01 2021     (mbox only; two spaces)
    Return-Path: <sender>
    X-Original-To: orig_rcpt                   (when known)
    Delivered-To: final recipient

then the content with ">From " quoting (mbox) and, for mbox, one blank
line at the end so that the next "From " line is found by mail readers.
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass
from typing import Iterable

from pfy.queue.record import REC_CONT, REC_NORM

__all__ = ["CopyOptions", "copy_message", "quote_822_local", "from_line"]

# Postfix global/mail_addr.h MAIL_ADDR_MAIL_DAEMON: the From_ name of the
# null sender.
MAIL_DAEMON = "MAILER-DAEMON"

# Flush to the kernel in chunks: one write per record would be a system call
# per line.  64 KiB is a few pipe/page buffers and keeps memory flat.
_FLUSH_AT = 65536

# RFC 5322 3.2.3 atext plus "." (dot-atom); anything else needs quoting.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+\Z")


def quote_822_local(address: str) -> str:
    """Quote the localpart when it is not a dot-atom (quote_822_local.c).

    The domain is left alone; "" stays "" (the null sender).
    """
    if not address:
        return address
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if _DOT_ATOM.match(local) and not local.startswith(".") \
            and not local.endswith(".") and ".." not in local:
        return address
    quoted = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return quoted + (at + domain if at else "")


def from_line(sender: str, now: float) -> bytes:
    """The mbox "From " envelope line (mail_copy.c: "From %s  %.24s")."""
    name = quote_822_local(sender) if sender else MAIL_DAEMON
    stamp = time.asctime(time.localtime(now))[:24]
    return f"From {name}  {stamp}\n".encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class CopyOptions:
    """What to prepend and how to quote; one per delivery."""
    sender: str
    orig_rcpt: str = ""
    delivered: str | None = None      # None: no Delivered-To header
    mbox: bool = False                # From_ line, >From quoting, blank line
    return_path: bool = True
    size_limit: int = 0               # file size limit, 0 = none (mailbox_size_limit)
    from_line: bool = False           # From_ line without mbox quoting (commands)


class _LimitedWriter:
    """Buffered writes to a raw fd that fail like RLIMIT_FSIZE would.

    Postfix enforces mailbox_size_limit with setrlimit(RLIMIT_FSIZE), so a
    write past the limit fails with EFBIG; we raise the same errno so that
    mbox_dsn() maps it the same way (4.2.2: mail stays queued).
    """

    def __init__(self, fd: int, start: int, limit: int):
        self.fd = fd
        self.pos = start
        self.limit = limit
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        if self.limit and self.pos + len(data) > self.limit:
            self.flush()
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        self.buf += data
        self.pos += len(data)
        if len(self.buf) >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        data, done = bytes(self.buf), 0
        self.buf.clear()
        while done < len(data):
            done += os.write(self.fd, data[done:] if done else data)


def copy_message(records: Iterable[tuple[int, bytes]], fd: int, opts: CopyOptions,
                 start: int = 0, now: float | None = None) -> int:
    """Write the prepended lines and the content to fd; return bytes written.

    ``start`` is the current file size (for the size limit).  Raises OSError
    from the destination, and MailboxError-free ValueError for a record that
    is not content (the queue file is corrupt).  The caller fsyncs and, on
    failure, truncates back to ``start``.
    """
    out = _LimitedWriter(fd, start, opts.size_limit)
    if opts.mbox or opts.from_line:
        out.write(from_line(opts.sender, time.time() if now is None else now))
    if opts.return_path:
        out.write(b"Return-Path: <" + _enc(quote_822_local(opts.sender)) + b">\n")
    if opts.orig_rcpt:
        # mail_copy.c: an empty original recipient means the feature was off.
        out.write(b"X-Original-To: " + _enc(quote_822_local(opts.orig_rcpt)) + b"\n")
    if opts.delivered is not None:
        out.write(b"Delivered-To: " + _enc(quote_822_local(opts.delivered)) + b"\n")
    prev = REC_NORM
    for rtype, data in records:
        if rtype != REC_NORM and rtype != REC_CONT:
            raise ValueError(f"bad record type {rtype} in message content")
        if prev == REC_NORM and opts.mbox and data.startswith(b"From "):
            out.write(b">")
        out.write(data)
        if rtype == REC_NORM:
            out.write(b"\n")
        prev = rtype
    if prev != REC_NORM:
        out.write(b"\n")              # finish a last partial line
    if opts.mbox:
        out.write(b"\n")
    out.flush()
    return out.pos - start


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
