"""Mailbox writers shared by the local(8) and virtual(8) delivery agents.

    from pfy.mailbox import MailboxError, CopyOptions, deliver_mbox, deliver_maildir
    from pfy.mailbox import delivered_to_set     # the Delivered-To loop check

Message content comes in as Postfix content records: an iterable of
``(rtype, data)`` pairs where rtype is REC_NORM (a line, newline implied) or
REC_CONT (a piece of a longer line).  It is streamed to the destination one
record at a time, so memory does not grow with the message size.

Failures raise MailboxError, which carries the RFC 3463 status; callers
never parse the text.  Every mailbox failure is transient (4.x.x): the
mail stays queued with the reason (see mbox_dsn() for why this differs
from Postfix).
"""

from pfy.mailbox._errors import MailboxError, mbox_dsn
from pfy.mailbox.copy import CopyOptions, copy_message
from pfy.mailbox.delivered import delivered_to_set
from pfy.mailbox.lock import LockSettings, parse_lock_methods
from pfy.mailbox.mbox import deliver_mbox
from pfy.mailbox.maildir import deliver_maildir

__all__ = [
    "MailboxError", "mbox_dsn", "CopyOptions", "copy_message",
    "LockSettings", "parse_lock_methods", "deliver_mbox", "deliver_maildir",
    "delivered_to_set",
]
