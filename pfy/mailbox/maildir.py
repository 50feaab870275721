"""Maildir delivery (https://cr.yp.to/proto/maildir.html), as local/maildir.c.

Write tmp/<time>.P<pid>Q<n>.<host> (O_EXCL), fsync, then link it to
new/<time>.V<dev>I<ino>M<usec>.<host> and remove the tmp name.  The link
makes the message appear in new/ whole or not at all, and never replaces an
existing file (rename would).  Missing tmp/, new/, cur/ are created 0700.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import time
from typing import Iterable

from pfy.mailbox._errors import MailboxError, mbox_dsn
from pfy.mailbox.copy import CopyOptions, copy_message

__all__ = ["deliver_maildir", "maildir_hostname"]

# Distinguishes deliveries from one process within the same second (the
# spec's "starttime.pid_count"); a thread-safe counter.
_counter = itertools.count(1)


def maildir_hostname() -> str:
    """gethostname() with "/" and ":" escaped, as the Maildir spec asks."""
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def deliver_maildir(path: str, records: Iterable[tuple[int, bytes]],
                    opts: CopyOptions, now: float | None = None) -> str:
    """Deliver one message into the maildir at path; return the new/ name.

    Raises MailboxError (status from mbox_dsn(), default 4.2.0: queued).
    """
    path = path.rstrip("/")
    tmpdir, newdir, curdir = (os.path.join(path, d) for d in ("tmp", "new", "cur"))
    now = time.time() if now is None else now
    sec, usec = int(now), int((now % 1) * 1_000_000)
    host = maildir_hostname()
    tmpfile = os.path.join(tmpdir, f"{sec}.P{os.getpid()}Q{next(_counter)}.{host}")
    try:
        fd = _create(tmpfile, tmpdir)
    except OSError as exc:
        raise MailboxError(mbox_dsn(exc.errno, "4.2.0"),
                           f"create maildir file {tmpfile}: {exc.strerror}") from None
    newfile = None
    try:
        try:
            st = os.fstat(fd)
            copy_message(records, fd, opts, start=0, now=now)
            os.fsync(fd)
        except OSError as exc:
            raise MailboxError(mbox_dsn(exc.errno, "4.3.0"),
                               f"error writing message: {exc.strerror}") from None
        finally:
            os.close(fd)
        newfile = os.path.join(newdir, f"{sec}.V{st.st_dev:x}I{st.st_ino:x}M{usec}.{host}")
        try:
            _link(tmpfile, newfile, newdir, curdir)
        except OSError as exc:
            raise MailboxError(mbox_dsn(exc.errno, "4.2.0"),
                               f"create maildir file {newfile}: {exc.strerror}") from None
        # No fsync of new/ itself, as Postfix's maildir.c: no process crash
        # (kill -9) can undo a link(); only a power loss within the file
        # system's commit interval could, the exposure Postfix accepts too.
        # It was a second fsync per message on the delivery path.
    finally:
        try:
            os.unlink(tmpfile)
        except OSError:
            pass
    return newfile


def _create(tmpfile: str, tmpdir: str) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        return os.open(tmpfile, flags, 0o600)
    except FileNotFoundError:
        os.makedirs(tmpdir, 0o700, exist_ok=True)
        return os.open(tmpfile, flags, 0o600)


def _link(tmpfile: str, newfile: str, newdir: str, curdir: str) -> None:
    try:
        os.link(tmpfile, newfile)
    except FileNotFoundError:
        os.makedirs(curdir, 0o700, exist_ok=True)
        os.makedirs(newdir, 0o700, exist_ok=True)
        os.link(tmpfile, newfile)
    except OSError as exc:
        # Some file systems (and unprivileged containers) refuse hard links:
        # fall back to rename, which is atomic too but may replace a name.
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP):
            raise
        if os.path.exists(newfile):
            raise
        os.rename(tmpfile, newfile)
