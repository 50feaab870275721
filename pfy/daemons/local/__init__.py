"""local - deliver to local users' mailboxes, Maildirs and commands.

SYNOPSIS
    local [generic daemon options]   (master.cf: local unix - n n - - local)

DESCRIPTION
    Takes delivery requests from qmgr (pfy.ipc.delivery) and, for each
    recipient, in Postfix's order of precedence (local(8)): aliases,
    .forward files, mailbox_transport, the user's passwd entry,
    mailbox_command, home_mailbox (Maildir when it ends in "/", mbox
    otherwise), mail_spool_directory, then for unknown users
    fallback_transport, luser_relay or a 5.1.1 bounce
    (unknown user: "name").  The localpart is folded to lower case.

    Aliases (alias_maps, aliases(5)): the full localpart (user+ext) is
    looked up first, then the bare user; an unmatched extension is put
    back on the result's addresses when propagate_unmatched_extensions
    lists "alias".  Values list addresses, /file/name (mbox, locked per
    mailbox_delivery_lock; a name ending in "/" is a Maildir),
    "|command" (run by /bin/sh when it has shell magic, with local(8)'s
    environment and command_time_limit), :include:/file/name and
    \\user (mailbox only).  An address that trivial-rewrite routes to
    this transport is expanded again in place (recursion, alias
    self-reference delivers to the user, 100 levels then "alias
    database loop"); any other address, and members of :include:
    files and of lists with an owner, is re-submitted through cleanup
    in one new queue file per envelope sender, with "Delivered-To:" on
    top, each logged "status=sent (forwarded as ID)".  owner-NAME, when
    it exists (owner_request_special), becomes the envelope sender of
    the expansion of NAME (its value with expand_owner_alias).

    .forward (forward_path, expanded with $user, $home, $shell,
    $recipient, $extension, $domain, $local, $recipient_delimiter,
    ${name?text}, ${name:text}; characters outside
    forward_expansion_filter become "_"): the first file that exists
    is read as the user; it must be a regular file owned by the user
    (or root) and not world-writable.  Listing yourself delivers to
    your mailbox; an empty file means the mailbox.

    Rights: |command and /file entries run as the alias database's
    owner, or default_privs when root owns it; as the .forward owner
    for .forward; as the :include: file's owner when an ordinary user
    owns it.  allow_mail_to_commands and allow_mail_to_files name the
    classes (alias, forward, include) allowed to use them: elsewhere
    they bounce 5.7.1 ("mail to command is restricted").  A command's
    exit status follows sysexits.h (75 defers, 67 bounces 5.1.1...);
    an enhanced status code at the start of its output wins, and the
    output goes into the bounce.  An :include: file that cannot be
    read defers (4.3.0).

    A recipient already named in a Delivered-To: header bounces 5.4.6
    "mail forwarding loop for X".  Every part of an expansion is logged
    on its own line (to=<part>, orig_to=<original>); the queue-file
    recipient is deferred when any part was, bounced when any part
    bounced, else done.  A missing alias database file is skipped with
    a warning (Postfix's local(8) stops with a fatal error instead).

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
    alias_maps, allow_mail_to_commands, allow_mail_to_files,
    default_privs, duplicate_filter_limit, expand_owner_alias,
    forward_expansion_filter, forward_path, owner_request_special,
    prepend_delivered_header, propagate_unmatched_extensions,
    reset_owner_alias, home_mailbox, mail_spool_directory, mailbox_command, mailbox_transport,
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
