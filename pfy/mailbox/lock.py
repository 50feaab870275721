"""Mailbox locking: fcntl, flock and dot-lock, as mailbox_delivery_lock says.

Retries and stale-lock removal follow Postfix (util/dot_lockfile.c,
global/deliver_flock.c): deliver_lock_attempts tries, deliver_lock_delay
apart; a "file.lock" older than stale_lock_time is removed.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from pfy.mailbox._errors import MailboxError, mbox_dsn

__all__ = ["LockSettings", "parse_lock_methods", "dot_lock", "dot_unlock", "lock_fd"]

_METHODS = ("fcntl", "flock", "dotlock")


def parse_lock_methods(value: str | list[str]) -> tuple[str, ...]:
    """mailbox_delivery_lock ("fcntl, dotlock") -> ("fcntl", "dotlock").

    An unknown method is a configuration error (ValueError naming it), as
    Postfix's mbox_lock_mask() makes it fatal.
    """
    items = value if isinstance(value, list) else value.replace(",", " ").split()
    out = []
    for item in items:
        item = item.strip().lower()
        if item not in _METHODS:
            raise ValueError(f"unknown mailbox lock method: {item!r} "
                             f"(known: {', '.join(_METHODS)})")
        if item not in out:
            out.append(item)
    return tuple(out)


@dataclass(frozen=True)
class LockSettings:
    methods: tuple[str, ...] = ("fcntl", "dotlock")   # postconf -d mailbox_delivery_lock
    attempts: int = 20          # deliver_lock_attempts
    delay: float = 1.0          # deliver_lock_delay
    stale_time: float = 500.0   # stale_lock_time
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    @classmethod
    def from_config(cls, cfg, methods_param: str = "mailbox_delivery_lock") -> "LockSettings":
        return cls(methods=parse_lock_methods(cfg[methods_param]),
                   attempts=max(1, cfg.deliver_lock_attempts),
                   delay=cfg.deliver_lock_delay,
                   stale_time=cfg.stale_lock_time)


def dot_lock(path: str, settings: LockSettings) -> None:
    """Create path.lock exclusively; MailboxError when it cannot be had."""
    lock_path = path + ".lock"
    err = 0
    for attempt in range(1, settings.attempts + 1):
        try:
            os.close(os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0))
            return
        except OSError as exc:
            err = exc.errno
            if exc.errno != errno.EEXIST or attempt >= settings.attempts:
                break
        try:
            if time.time() > os.stat(lock_path).st_mtime + settings.stale_time:
                os.unlink(lock_path)
                continue
        except OSError:
            continue                  # the holder released it meanwhile
        settings.sleep(settings.delay)
    if err == errno.EEXIST:
        # mbox_open.c: a lock held by someone else is "try again".
        raise MailboxError(mbox_dsn(errno.EAGAIN, "4.2.0"),
                           f"unable to create lock file {lock_path}: file exists")
    raise MailboxError(mbox_dsn(err, "4.2.0"),
                       f"unable to create lock file {lock_path}: {os.strerror(err)}")


def dot_unlock(path: str) -> None:
    try:
        os.unlink(path + ".lock")
    except FileNotFoundError:
        pass


def lock_fd(fd: int, method: str, settings: LockSettings) -> None:
    """Take an exclusive kernel lock (fcntl or flock) with retries."""
    op = fcntl.lockf if method == "fcntl" else fcntl.flock
    for attempt in range(1, settings.attempts + 1):
        try:
            op(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise MailboxError(mbox_dsn(exc.errno, "4.2.0"),
                                   f"unable to lock for exclusive access: {exc.strerror}")
        if attempt < settings.attempts:
            settings.sleep(settings.delay)
    raise MailboxError(mbox_dsn(errno.EAGAIN, "4.2.0"),
                       "unable to lock for exclusive access: "
                       + os.strerror(errno.EAGAIN))
