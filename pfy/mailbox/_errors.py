"""Mailbox errors and the errno -> DSN status mapping."""

from __future__ import annotations

import errno as _errno

__all__ = ["MailboxError", "mbox_dsn"]


class MailboxError(Exception):
    """A delivery to a mailbox failed; ``status`` says whether to retry.

    ``status`` is an RFC 3463 code ("4.2.0": try again later, "4.2.2":
    mailbox full); ``reason`` is the text for the log and the delivery
    status notification.  The writers here only ever raise 4.x.x codes:
    see mbox_dsn() for why.
    """

    def __init__(self, status: str, reason: str):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason

    @property
    def transient(self) -> bool:
        return self.status.startswith("4")

    def prepend(self, text: str) -> "MailboxError":
        """The same error with context in front, as Postfix's
        vstring_sprintf_prepend(why->reason, ...) does."""
        return MailboxError(self.status, text + self.reason)


def mbox_dsn(err: int | None, default: str) -> str:
    """errno -> status detail, after Postfix global/mbox_open.c mbox_dsn().

    EAGAIN/ESTALE: try again (4.2.0); ENOSPC: the system is full (4.3.0);
    EDQUOT/EFBIG: this mailbox is full (4.2.2); anything else: the caller's
    default (4.2.0 for a mailbox we may not open, 4.3.0 for a write error).

    Unlike Postfix, which bounces a full mailbox (5.2.2) and an unwritable
    one (5.2.0), pfy keeps the mail queued: issue 3 asks that "a mailbox
    that cannot be written (permissions, full disk, size limit) leaves the
    mail queued with the reason", so an administrator can fix the mailbox
    and flush the queue instead of the sender getting a bounce.  The mail
    still bounces when it reaches maximal_queue_lifetime.  local(8) says so.
    """
    if err in (_errno.EAGAIN, _errno.ESTALE):
        return "4.2.0"
    if err == _errno.ENOSPC:
        return "4.3.0"
    if err in (_errno.EDQUOT, _errno.EFBIG):
        return "4.2.2"
    return default
