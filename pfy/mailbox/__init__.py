"""Mailbox writers shared by the local(8) and virtual(8) delivery agents.

    from pfy.mailbox import MailboxError, CopyOptions, deliver_mbox, deliver_maildir

Message content comes in as Postfix content records: an iterable of
``(rtype, data)`` pairs where rtype is REC_NORM (a line, newline implied) or
REC_CONT (a piece of a longer line).  It is streamed to the destination one
record at a time, so memory does not grow with the message size.

Failures raise MailboxError, which carries the RFC 3463 status that decides
between defer (4.x.x) and bounce (5.x.x), exactly as Postfix's mbox_dsn()
maps errno values; callers never parse the text.
"""

from pfy.mailbox._errors import MailboxError, mbox_dsn
from pfy.mailbox.copy import CopyOptions, copy_message
from pfy.mailbox.lock import LockSettings, parse_lock_methods
from pfy.mailbox.mbox import deliver_mbox
from pfy.mailbox.maildir import deliver_maildir

__all__ = [
    "MailboxError", "mbox_dsn", "CopyOptions", "copy_message",
    "LockSettings", "parse_lock_methods", "deliver_mbox", "deliver_maildir",
]
