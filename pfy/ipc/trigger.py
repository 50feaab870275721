"""Triggers: one-byte wake-up requests to fifo and unix services.

Postfix's trigger requests (qmgr(8) TRIGGERS, pickup(8)): a client writes
a few bytes and goes away; it never waits for the service.  The server reads
"an entire buffer worth" and acts once per distinct request.

Client side never blocks and never fails loudly: a service that is not
running is normal (sendmail works with the daemons down; the file waits in
maildrop/ until pickup's timer or next start), so "nobody listens" is a
False return, not an exception.

    fifo_trigger(path, b"I")      open(O_WRONLY|O_NONBLOCK): ENXIO = no reader
    unix_trigger(path, b"W")      connect + send + close, with a timeout
    FifoListener(path)            server: opened O_RDWR (never sees EOF when
                                  writers come and go), non-blocking reads
"""

from __future__ import annotations

import errno
import os
# _socket, not socket: the socket module's import (enum, selectors...)
# cost 8.6 ms of every sendmail run that wakes pickup; _socket costs 1 ms
# and offers all this module uses.
import _socket as socket
import stat

__all__ = [
    "TRIGGER_WAKEUP", "QMGR_SCAN_INCOMING", "QMGR_SCAN_DEFERRED",
    "QMGR_SCAN_ALL", "QMGR_FLUSH_DEAD", "fifo_trigger", "unix_trigger",
    "trigger", "make_fifo", "FifoListener", "parse_requests",
    "qmgr_flush_site", "qmgr_flush_id", "QmgrRequest", "parse_qmgr_request",
]

# qmgr(8) TRIGGERS; master sends W to every service that has a wakeup time.
TRIGGER_WAKEUP = b"W"            # TRIGGER_REQ_WAKEUP
QMGR_SCAN_INCOMING = b"I"        # QMGR_REQ_SCAN_INCOMING
QMGR_SCAN_DEFERRED = b"D"        # QMGR_REQ_SCAN_DEFERRED
QMGR_SCAN_ALL = b"A"             # QMGR_REQ_SCAN_ALL: ignore deferred time stamps
QMGR_FLUSH_DEAD = b"F"           # QMGR_REQ_FLUSH_DEAD: forget dead destinations

# Postfix's trigger timeout for unix sockets (global/mail_trigger.c uses
# var_trigger_timeout, default 10s; we keep it short because callers such as
# sendmail must not stall on a wedged daemon).
UNIX_TRIGGER_TIMEOUT = 10.0
# Postfix reads triggers into a 1024-byte buffer (qmgr.c: char buf[1024]).
_READ_SIZE = 1024


def fifo_trigger(path: str, request: bytes = TRIGGER_WAKEUP) -> bool:
    """Write ``request`` to a FIFO without blocking; True if someone reads it.

    ENXIO (no process has it open for reading) and ENOENT (not created
    yet) mean the service is down: False.  EAGAIN (pipe full) means many
    triggers are already pending, so this one is redundant: True.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ENXIO, errno.ENOENT, errno.ECONNREFUSED):
            return False
        raise
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path}: not a fifo")
        try:
            os.write(fd, request)
        except BlockingIOError:
            pass
        except BrokenPipeError:         # reader left between open and write
            return False
        return True
    finally:
        os.close(fd)


def unix_trigger(path: str, request: bytes = TRIGGER_WAKEUP,
                 timeout: float = UNIX_TRIGGER_TIMEOUT) -> bool:
    """Send ``request`` to a unix stream service and hang up.

    False if nobody listens (no socket, refused); the service's skeleton
    reads until EOF and treats the bytes as trigger requests.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except BlockingIOError:
            # EAGAIN: the listen backlog is full, i.e. many wake-ups are
            # already waiting for the service; this one would add nothing
            # (Postfix's triggers are idempotent: "already woken").
            return True
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True
    finally:
        sock.close()


def trigger(path: str, request: bytes = TRIGGER_WAKEUP) -> bool:
    """fifo_trigger or unix_trigger, whichever ``path`` is."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISSOCK(mode):
        return unix_trigger(path, request)
    return fifo_trigger(path, request)


def make_fifo(path: str, mode: int = 0o622) -> None:
    """Create (or re-create) a FIFO with Postfix's public fifo mode.

    0622: anyone may write a trigger (public/pickup, public/qmgr), only the
    owner reads.  An existing non-FIFO at ``path`` is replaced.
    """
    try:
        st = os.lstat(path)
        if stat.S_ISFIFO(st.st_mode):
            os.chmod(path, mode)
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.mkfifo(path, mode)
    os.chmod(path, mode)            # umask must not narrow it


def parse_requests(data: bytes, order: bytes = b"AFDIW") -> bytes:
    """Collapse duplicate requests and sort them as qmgr(8) does.

    "Multiple identical trigger requests are collapsed into one, and trigger
    requests are sorted so that A and F precede D and I."  Bytes not in
    ``order`` keep their first-seen order after the known ones.
    """
    seen = set(data)
    known = bytes(c for c in order if c in seen)
    rest = bytes(dict.fromkeys(c for c in data if c not in set(order)))
    return known + rest


class FifoListener:
    """Server side of a FIFO trigger service.

    Opened O_RDWR|O_NONBLOCK: holding a write end ourselves means read()
    never returns EOF after the last client closes (Postfix does the same),
    and open() does not wait for a writer.  Use ``fd`` with select/poll or
    ``loop.add_reader(listener.fd, ...)``, then read_nowait().
    """

    def __init__(self, path: str | None = None, fd: int | None = None):
        if fd is None:
            if path is None:
                raise ValueError("FifoListener needs a path or an fd")
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        else:
            os.set_blocking(fd, False)
        self.fd = fd

    def read_nowait(self) -> bytes:
        """All pending request bytes (b"" when none); never blocks."""
        chunks = []
        while True:
            try:
                chunk = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunk) < _READ_SIZE:
                break
        return b"".join(chunks)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- qmgr requests with an argument (pfy's stand-in for flush(8)) -----------
#
# Postfix's "postqueue -s site" and "-i queue_id" go to the flush(8) daemon,
# which moves the deferred files concerned to incoming/ and wakes qmgr.
# pfy has no flush daemon: anyone may ask qmgr directly over public/qmgr
# (qmgr owns the queue, so an unprivileged postqueue needs no write access).
# Such a request is framed "{site DOMAIN}" or "{id QUEUE_ID}": braces occur
# in no host name, address literal or queue ID, and the frame never
# contains an upper-case single-byte command outside its braces, so it
# mixes safely with ordinary one-byte triggers in one read.  One write of a
# frame (<= PIPE_BUF) reaches a FIFO reader whole.

_MAX_ARG = 255                   # a domain name's maximum length (RFC 1035 2.3.4)


def _frame(kind: str, arg: str) -> bytes:
    if not arg or len(arg) > _MAX_ARG or any(c in arg for c in "{} \t\r\n\0"):
        raise ValueError(f"bad {kind} for a qmgr request: {arg[:100]!r}")
    return b"{" + kind.encode() + b" " + arg.encode("ascii") + b"}"


def qmgr_flush_site(site: str) -> bytes:
    """Deliver the deferred mail for SITE now (postqueue -s), forgetting
    that the destination was dead.  Send with trigger(public/qmgr, ...)."""
    return _frame("site", site.lower())


def qmgr_flush_id(queue_id: str) -> bytes:
    """Deliver deferred message QUEUE_ID now (postqueue -i)."""
    return _frame("id", queue_id)


class QmgrRequest:
    """What one wake-up asked of qmgr: single-byte codes (deduplicated and
    ordered as parse_requests), and the sites and IDs to flush."""

    __slots__ = ("codes", "sites", "ids")

    def __init__(self, codes: bytes = b"", sites=(), ids=()):
        self.codes = codes
        self.sites = list(sites)
        self.ids = list(ids)

    def __repr__(self) -> str:
        return f"QmgrRequest({self.codes!r}, sites={self.sites}, ids={self.ids})"


def parse_qmgr_request(data: bytes) -> QmgrRequest:
    """Split a wake-up's bytes into codes and framed requests.  Malformed
    or cut-off frames are dropped: a trigger is a hint, never a command
    whose loss matters (the timer scan catches up)."""
    codes = bytearray()
    sites: list[str] = []
    ids: list[str] = []
    i = 0
    while i < len(data):
        c = data[i]
        if c != 0x7B:                       # "{"
            codes.append(c)
            i += 1
            continue
        end = data.find(b"}", i)
        if end < 0:
            break
        kind, _, arg = data[i + 1:end].partition(b" ")
        i = end + 1
        try:
            text = arg.decode("ascii")
        except UnicodeDecodeError:
            continue
        if not text or len(text) > _MAX_ARG or any(ch in text for ch in "{ \t\r\n\0/"):
            continue
        if kind == b"site" and text.lower() not in sites:
            sites.append(text.lower())
        elif kind == b"id" and text not in ids:
            ids.append(text)
    return QmgrRequest(parse_requests(bytes(codes)), sites, ids)
