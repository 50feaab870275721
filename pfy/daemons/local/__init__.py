"""local - deliver to local users' mailboxes, Maildirs and commands.

SYNOPSIS
    local [generic daemon options]   (master.cf: local unix - n n - - local)

DESCRIPTION
    Takes delivery requests from qmgr (pfy.ipc.delivery) and, for each
    recipient, in Postfix's order of precedence (local(8)): alias and
    .forward expansion (the ``expanders`` hook, filled by issue 4),
    mailbox_transport, the user's passwd entry, mailbox_command,
    home_mailbox (Maildir when it ends in "/", mbox otherwise),
    mail_spool_directory, then for unknown users fallback_transport,
    luser_relay or a 5.1.1 bounce.  The localpart is folded to lower case
    and loses its recipient_delimiter extension.

    luser_relay is expanded ($user, $local, $extension, $domain,
    $recipient, $recipient_delimiter, ${name?text}, ${name:text}) and the
    message re-submitted to cleanup for that address with
    "Delivered-To: <recipient>" on top, logged "status=sent (forwarded as
    ID)"; a message that already carries that Delivered-To is a
    forwarding loop and bounces 5.4.6.  Issue 4's alias and .forward
    expanders re-submit through the same LocalAgent.forward().

    Mailboxes are written by pfy.mailbox (locking per
    mailbox_delivery_lock, mailbox_size_limit, Delivered-To, Return-Path,
    X-Original-To, atomic Maildir tmp -> new).

    A mailbox that cannot be written keeps the mail queued with the reason
    where Postfix would bounce (a deliberate difference): no permission to create or open
    it, not a regular file, not owned by the recipient: 4.2.0; a write
    error or a full file system: 4.3.0; mailbox_size_limit or a quota
    exceeded: 4.2.2.  The message waits in deferred/ ("mailq" shows the
    reason) and is retried on the normal schedule, so an administrator can
    fix the mailbox and flush the queue; it bounces only at
    maximal_queue_lifetime.

SECURITY
    Security sensitive: runs as root under master (master.cf unpriv n) to
    write as any recipient.  Every mailbox write runs with the recipient's
    effective uid, gid and groups (as Postfix's set_eugid()), so the kernel
    checks each path component as that user and a mailbox path cannot make
    root write anywhere; commands run in a child that has switched to the
    recipient's real and effective ids.  Unprivileged (the
    embedded mode), it can deliver only to the user it runs as; mail for
    any other user is deferred with a reason that says so.

PARAMETERS
    home_mailbox, mail_spool_directory, mailbox_command, mailbox_transport,
    fallback_transport, luser_relay, mailbox_delivery_lock, mailbox_size_limit,
    recipient_delimiter, strict_mailbox_ownership, command_time_limit,
    deliver_lock_attempts, deliver_lock_delay, stale_lock_time, soft_bounce.
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    from pfy.daemons.local.agent import serve_one, setup
    from pfy.server import single
    single.serve(serve_one, pre_jail=setup, program="local")
