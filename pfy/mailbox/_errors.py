"""Mailbox errors and the errno -> DSN status mapping."""

from __future__ import annotations

import errno as _errno

__all__ = ["MailboxError", "mbox_dsn"]


class MailboxError(Exception):
    """A delivery to a mailbox failed; ``status`` says whether to retry.

    ``status`` is an RFC 3463 code ("4.2.0": try again later, "5.2.2":
    mailbox full, bounce); ``reason`` is the text for the log and the
    delivery status notification.
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
    """Postfix global/mbox_open.c mbox_dsn(): errno -> status detail.

    EAGAIN/ESTALE: try again (4.2.0); ENOSPC: the system is full (4.3.0);
    EDQUOT/EFBIG: this mailbox is full (5.2.2, bounce, as Postfix does for
    mailbox_size_limit); anything else: the caller's default.
    """
    if err in (_errno.EAGAIN, _errno.ESTALE):
        return "4.2.0"
    if err == _errno.ENOSPC:
        return "4.3.0"
    if err in (_errno.EDQUOT, _errno.EFBIG):
        return "5.2.2"
    return default
