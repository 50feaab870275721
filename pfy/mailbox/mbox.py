"""UNIX mbox delivery: lock, append, fsync, or truncate back on failure.

Postfix global/mbox_open.c and local/mailbox.c: dot-lock first (it needs no
open file), then open O_APPEND|O_CREAT 0600, then the kernel lock; the file
must be a regular file and, with strict_mailbox_ownership, owned by the
recipient.  On any write error the file is truncated to its old length so a
reader never sees half a message.
"""

from __future__ import annotations

import os
import stat
from typing import Iterable

from pfy.mailbox._errors import MailboxError, mbox_dsn
from pfy.mailbox.copy import CopyOptions, copy_message
from pfy.mailbox.lock import LockSettings, dot_lock, dot_unlock, lock_fd

__all__ = ["deliver_mbox"]


def deliver_mbox(path: str, records: Iterable[tuple[int, bytes]], opts: CopyOptions,
                 locks: LockSettings = LockSettings(), owner_uid: int | None = None,
                 chown: tuple[int, int] | None = None, file_target: bool = False) -> None:
    """Append one message to the mbox at path; MailboxError on failure.

    owner_uid: with strict_mailbox_ownership, the uid the file must have
    (None: not checked).  chown: (uid, gid) to give a newly created file
    (delivery into a root-owned spool as root).
    file_target: a /file/name of an alias or .forward (local/file.c): a
    dot-lock that cannot be made for lack of permission is skipped
    (MBOX_DOT_LOCK_MAY_FAIL), and a file that is not regular (/dev/null,
    a FIFO) is written without locks or truncation.
    """
    dotlocked = False
    if file_target:
        try:
            special = not stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            special = False
    else:
        special = False
    if "dotlock" in locks.methods and not special:
        try:
            dot_lock(path, locks)
            dotlocked = True
        except MailboxError as exc:
            # MBOX_DOT_LOCK_MAY_FAIL: the directory of a /file target need
            # not be writable by its user; a lock held by another is not
            # skipped ("file exists": try again later).
            if not file_target or exc.reason.endswith("file exists"):
                raise
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise MailboxError(mbox_dsn(exc.errno, "4.2.0"),
                               f"cannot open file: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if chown is not None and st.st_size == 0 and st.st_uid != chown[0]:
                os.fchown(fd, *chown)
                st = os.fstat(fd)
            if file_target and not stat.S_ISREG(st.st_mode):
                try:
                    copy_message(records, fd, opts)
                except OSError as exc:
                    raise MailboxError(mbox_dsn(exc.errno, "4.3.0"),
                                       f"error writing message: {exc.strerror}") from None
                return
            for method in locks.methods:
                if method != "dotlock":
                    lock_fd(fd, method, locks)
            if not stat.S_ISREG(st.st_mode):
                raise MailboxError("4.2.0", f"destination {path} is not a regular file")
            if owner_uid is not None and st.st_uid != owner_uid:
                raise MailboxError("4.2.0", f"destination {path} is not owned by recipient")
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                copy_message(records, fd, opts, start=start)
                os.fsync(fd)
            except OSError as exc:
                _truncate(fd, start)
                raise MailboxError(mbox_dsn(exc.errno, "4.3.0"),
                                   f"error writing message: {exc.strerror}") from None
            except BaseException:
                _truncate(fd, start)
                raise
        finally:
            os.close(fd)
    finally:
        if dotlocked:
            dot_unlock(path)


def _truncate(fd: int, length: int) -> None:
    # mail_copy.c: "Complain about ignored undo errors? So sue me."
    try:
        os.ftruncate(fd, length)
    except OSError:
        pass
