"""local - deliver to local users' mailboxes, Maildirs and commands.

SYNOPSIS
    local [generic daemon options]   (master.cf: local unix - n n - - local)

DESCRIPTION
    Takes delivery requests from qmgr (pfy.ipc.delivery) and, for each
    recipient, in Postfix's order of precedence (local(8)): alias and
    .forward expansion (the ``expanders`` hook, filled by issue 4),
    mailbox_transport, the user's passwd entry, mailbox_command,
    home_mailbox (Maildir when it ends in "/", mbox otherwise),
    mail_spool_directory, then for unknown users fallback_transport or a
    5.1.1 bounce (luser_relay needs re-submission: issue 4).  The localpart
    is folded to lower case and loses its recipient_delimiter extension.

    Mailboxes are written by pfy.mailbox (locking per
    mailbox_delivery_lock, mailbox_size_limit, Delivered-To, Return-Path,
    X-Original-To, atomic Maildir tmp -> new).

SECURITY
    Security sensitive: runs as root under master (master.cf unpriv n) to
    write as any recipient.  Every write and every command runs in a child
    process that has switched to the recipient's uid and gid (never root),
    so the daemon itself only reads the queue file.  Unprivileged (the
    embedded mode), it can deliver only to the user it runs as; mail for
    any other user is deferred with a reason that says so.

PARAMETERS
    home_mailbox, mail_spool_directory, mailbox_command, mailbox_transport,
    fallback_transport, mailbox_delivery_lock, mailbox_size_limit,
    recipient_delimiter, strict_mailbox_ownership, command_time_limit,
    deliver_lock_attempts, deliver_lock_delay, stale_lock_time, soft_bounce.
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    from pfy.daemons.local.agent import serve_one, setup
    from pfy.server import single
    single.serve(serve_one, pre_jail=setup, program="local")
