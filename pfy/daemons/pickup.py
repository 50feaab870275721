"""pickup - take locally submitted mail from maildrop/ to cleanup.

    pickup [generic daemon options]      (run by master: pickup(8))

Woken through its master.cf endpoint (public/pickup, fifo or unix) by
sendmail/postdrop and by master's wakeup timer (60 seconds in the shipped
master.cf), pickup takes every complete file in maildrop/, oldest first,
streams it record by record to cleanup, and removes it only after cleanup
has answered with a queue ID (fsynced and renamed): a kill -9 at any moment
loses nothing; at worst a message is queued twice.

SECURITY
    Moderately sensitive: reads files written by any local user.  It runs
    chrooted as mail_owner where master.cf says so, writes no files, and
    trusts nothing in a file: the submitting user is the file's owner
    (st_uid, set by the kernel), logged as "uid=N from=<sender>" and put in
    the Received: header it adds, as Postfix's pickup does.  It opens with
    O_NOFOLLOW|O_NONBLOCK and refuses anything but a regular file with one
    link; attributes other than the few sendmail writes are dropped with a
    warning, so a user cannot pose as a network client.  postdrop(1)
    describes the maildrop folder and file modes that make this safe.

    Only a file whose owner is mail_owner or root (or, in an instance run
    by an ordinary user, that user: whoever the daemons run as) is read as
    a whole queue file: that is what "postsuper -r" renames into maildrop/
    (original recipients, client attributes, and done marks: a recipient
    already delivered is not sent to cleanup again).  Such a file is
    complete when it has the queue's 0700 bits; it is logged with
    "orig_id=" as Postfix's pickup logs requeued mail.  No other user can
    own such a file: the kernel sets st_uid, the link count must be 1, and
    Linux's fs.protected_hardlinks (on by default) stops linking in a file
    one does not own.

    authorized_submit_users is enforced here by file owner, since a user
    can create a maildrop file without sendmail: a refused user's file is
    removed with a warning.  Its tables and, when chrooted, a snapshot of
    the password database are loaded before the jail.

DIAGNOSTICS
    A file that cannot be parsed is removed with a warning naming the uid,
    as Postfix's pickup does (pickup cannot bounce: it has no trustworthy
    sender); a file still being written (mode 0600) is left alone.

PARAMETERS
    content_filter, receive_override_options, line_length_limit,
    myhostname, mail_name, ipc_timeout, cleanup_service_name,
    mail_owner, authorized_submit_users (postconf(5))
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from pfy import log
from pfy.cli._acl import is_static, user_name
from pfy.cli.postdrop import is_maildrop_name
from pfy.queue.queue_id import is_queue_id
from pfy.tables import TableTempFail
from pfy.ipc.cleanup_client import CleanupClient, CleanupRejected
from pfy.queue.record import (
    REC_ATTR, REC_CONT, REC_DSN_ENVID, REC_DSN_NOTIFY, REC_DSN_ORCPT, REC_DSN_RET, REC_END,
    REC_DTXT, REC_FILT, REC_FROM, REC_FULL, REC_MESG, REC_NORM, REC_RCPT, REC_TIME,
    REC_VERP, REC_XTRA, RecordError, RecordReader,
)
from pfy.server import trigger

__all__ = ["Outcome", "scan_maildrop", "pickup_file", "copy_file", "main",
           "cleanup_flags"]

# Postfix cleanup_user.h flag bits (the same as pfy's cleanup core).
FLAG_BOUNCE = 1 << 0
FLAG_FILTER = 1 << 1
FLAG_BCC_OK = 1 << 4
FLAG_MAP_OK = 1 << 5
FLAG_MASK_EXTERNAL = FLAG_FILTER | FLAG_BCC_OK | FLAG_MAP_OK

# Attributes a maildrop file may carry (what sendmail writes); the DSN ones
# become their own record types, as Postfix's rec_attr_map() does.
_ATTR_RECORDS = {"envelope_id": REC_DSN_ENVID, "ret_flags": REC_DSN_RET,
                 "notify_flags": REC_DSN_NOTIFY, "dsn_orig_rcpt": REC_DSN_ORCPT}
_ATTR_VALUES = {"rewrite_context": ("local", "remote"),
                "encoding": ("7bit", "8bit")}
# Record types allowed in each segment (Postfix pickup.c copy_segment with
# REC_TYPE_ENVELOPE, REC_TYPE_CONTENT, REC_TYPE_EXTRACT).
_ENVELOPE = frozenset((REC_TIME, REC_FULL, REC_FROM, REC_ATTR, REC_RCPT, REC_VERP, REC_MESG))
_CONTENT = frozenset((REC_NORM, REC_CONT, REC_XTRA))
_EXTRACT = frozenset((REC_ATTR, REC_RCPT, REC_END))
# pickup.c: warn about files dated more than 2 hours ahead (clock trouble)
# or older than a day.
_FUTURE_SLACK = 2 * 3600
# Mode of a complete maildrop file as the first pfy versions made it.
_LEGACY_READY = 0o640
_DAY = 86400


class Outcome:
    REMOVE = "remove"       # handed to cleanup, or garbage: delete the file
    KEEP = "keep"           # not ready, or try again later


class Malformed(Exception):
    """A maildrop file that is not what sendmail writes."""


def cleanup_flags(receive_override_options) -> int:
    """FLAG_BOUNCE | FLAG_MASK_EXTERNAL, less what receive_override_options
    turns off (Postfix input_transp.c)."""
    flags = FLAG_BOUNCE | FLAG_MASK_EXTERNAL
    opts = set(receive_override_options or ())
    if "no_address_mappings" in opts:
        flags &= ~FLAG_MAP_OK
    if "no_header_body_checks" in opts:
        flags &= ~FLAG_FILTER
    return flags


def mail_date(when: float) -> str:
    """Postfix's mail_date(): RFC 5322 3.3 date, local time, zone name."""
    tm = time.localtime(when)
    off = tm.tm_gmtoff
    sign = "-" if off < 0 else "+"
    off = abs(off) // 60
    return (time.strftime("%a, %d %b %Y %H:%M:%S ", tm)
            + f"{sign}{off // 60:02d}{off % 60:02d} ({tm.tm_zone})")


# What a trusted file (mail_owner's or root's: a queue file that
# "postsuper -r" renamed into maildrop/) may hold: the whole queue file
# record set (pfy/queue/queue_file.py, Postfix's REC_TYPE_ENVELOPE, _CONTENT,
# _EXTRACT).  Of these, pickup.c passes on what describes the message and
# drops what cleanup must decide anew: the size record, warn time, content
# filter and redirect (re-decided from content_filter, header_checks...),
# Return-Receipt-To / Errors-To, and extracted attributes other than DSN.
_T_ENVELOPE = frozenset(b"MCTcFILSDRO/WVA>K<iondfmp")
_T_CONTENT = frozenset(b"XLNw")
_T_EXTRACT = frozenset(b"EDRO/PreAFIL>Kon")
_T_DROP = frozenset(b"CcWK>Idfmpw")          # never passed on
_RCPT_PREFIX = frozenset((ord("O"), ord("o"), ord("n")))   # belong to the next R
REC_DONE = ord("D")
REC_CANCELLED = ord("/")


def copy_file(fd: int, st: os.stat_result, client, queue_id: str,
              settings: dict, warn, trusted: bool = False,
              orig_id: str | None = None) -> str:
    """Stream one maildrop file to cleanup; returns the sender.

    Raises Malformed for a file that is not a maildrop file.  The uid is
    st.st_uid, never anything the file says.  `trusted` (the owner is
    mail_owner or root, see pickup_file) passes the whole record set of a
    queue file: original recipients, client attributes, and recipients
    already done stay done (not sent to cleanup at all, with the O/o/n
    records that belong to them), as Postfix's cleanup skips them.
    Otherwise only what sendmail writes is accepted and attributes other
    than the DSN ones and rewrite_context/encoding/trace_flags are dropped.
    """
    uid = st.st_uid
    reader = RecordReader(fd, max_record=settings["line_length_limit"])
    send = client.record
    if settings["content_filter"]:
        send(REC_FILT, settings["content_filter"].encode())

    def records(allowed):
        try:
            for _, rtype, data in reader:
                if rtype not in allowed:
                    raise Malformed(f"uid={uid}: unexpected or malformed record type {rtype}")
                yield rtype, data
        except RecordError as err:
            raise Malformed(f"uid={uid}: malformed record: {err}") from None
        raise Malformed(f"uid={uid}: file ends before its end record")

    def attr(data: bytes, where: str) -> None:
        name, eq, value = data.decode("utf-8", "surrogateescape").partition("=")
        if not eq:
            if trusted:
                warn(f"{queue_id}: ignoring malformed attribute record: {name[:100]}")
                return
            raise Malformed(f"uid={uid}: malformed attribute record")
        if name in _ATTR_RECORDS:
            # rec_attr_map(): named DSN attributes become their records.
            if not value.isdigit() and name not in ("envelope_id", "dsn_orig_rcpt"):
                raise Malformed(f"uid={uid}: bad {name} value")
            send(_ATTR_RECORDS[name], value.encode("utf-8", "surrogateescape"))
        elif trusted:
            # pickup.c: client attributes of a requeued message stay; the
            # extracted segment's other attributes (header/body actions)
            # are decided anew.
            if where == "envelope":
                send(REC_ATTR, data)
        elif name in _ATTR_VALUES and value in _ATTR_VALUES[name] \
                or name == "trace_flags" and value.isdigit():
            send(REC_ATTR, data)
        else:
            # A user may not set log_client_address and friends.
            warn(f"{queue_id}: uid={uid}: ignoring attribute record: {name[:100]}")

    prefix: list[tuple[int, bytes]] = []    # O/o/n waiting for their R

    def recipient_part(rtype: int, data: bytes) -> bool:
        """Trusted files: hold O/o/n until their recipient is known, so a
        done (D) or cancelled (/) recipient takes them along.  True when
        the record was dealt with here."""
        if not trusted:
            return False
        if rtype in _RCPT_PREFIX:
            prefix.append((rtype, data))
            return True
        if rtype in (REC_DONE, REC_CANCELLED):
            prefix.clear()              # already delivered: stays done
            return True
        if rtype == REC_RCPT:
            for p in prefix:
                send(*p)
            prefix.clear()
            send(rtype, data)
            return True
        return False

    sender = None
    time_seen = False
    for rtype, data in records(_T_ENVELOPE if trusted else _ENVELOPE):
        if rtype == REC_MESG:
            break
        if rtype == REC_TIME:
            time_seen = True
        elif rtype == REC_FROM:
            if sender is None:
                sender = data.decode("utf-8", "surrogateescape")
            if not time_seen:
                send(REC_TIME, b"%d" % int(st.st_mtime))
                time_seen = True
        if recipient_part(rtype, data):
            continue
        if rtype == REC_ATTR:
            attr(data, "envelope")
        elif rtype in _T_DROP or rtype == REC_FILT:
            continue                    # (trusted only) see _T_DROP
        else:
            send(rtype, data)
    if sender is None:
        raise Malformed(f"uid={uid}: no envelope sender")
    # pickup.c MAIL_IS_REQUEUED: a requeued message names its old queue ID.
    log.log_pickup(queue_id, uid, sender, orig_id)

    # Trace the local submission without revealing the login name (pickup.c).
    send(REC_MESG, b"")
    send(REC_NORM, b"Received: by %s (%s, from userid %d)" % (
        settings["myhostname"].encode(), settings["mail_name"].encode(), uid))
    send(REC_NORM, b"\tid %s; %s" % (queue_id.encode(), mail_date(st.st_mtime).encode()))
    first = True
    for rtype, data in records(_T_CONTENT if trusted else _CONTENT):
        if rtype == REC_XTRA:
            break
        if rtype == REC_DTXT:
            continue                    # padding
        # Content that starts with white space would continue our Received:
        # header; an empty line first keeps it apart (pickup.c's "kluge").
        if first and data[:1] in (b" ", b"\t"):
            send(REC_NORM, b"")
        first = False
        send(rtype, data)
    send(REC_XTRA, b"")
    prefix.clear()
    for rtype, data in records(_T_EXTRACT if trusted else _EXTRACT):
        if rtype == REC_END:
            break
        if recipient_part(rtype, data):
            continue
        if rtype == REC_ATTR:
            attr(data, "extracted")
        elif rtype == REC_RCPT:
            send(rtype, data)
        # trusted extracted F, I, L, P, r, e, >, K: decided anew by cleanup
    send(REC_END, b"")
    return sender


def pickup_file(path: str, settings: dict, cleanup_path: str, flags: int,
                warn=log.warning, connect=CleanupClient.open,
                remove: bool = False) -> str:
    """Hand one maildrop file to cleanup; returns Outcome.REMOVE or KEEP.

    With remove=True a file whose outcome is REMOVE is unlinked here, while
    its lock is held (see _claim): no other pickup can take it between
    cleanup's answer and the unlink.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return Outcome.KEEP                 # its owner removed it meanwhile
        if err.errno == errno.ELOOP:
            warn(f"{path}: removed symbolic link")
            if remove:
                _remove(path)
            return Outcome.REMOVE
        warn(f"open input file {path}: {err.strerror}")
        if err.errno == errno.EACCES:
            # Not readable through the group: maildrop/ lacks its setgid
            # bit, or the owner changed the group.  Keep: never lose mail
            # for a fixable permission problem (postfix set-permissions).
            warn(f"maildrop must be mode 3733 with mail_owner's group "
                 f"(see postdrop(1)); keeping {path}")
            return Outcome.KEEP
        if remove:
            _remove(path)
        return Outcome.REMOVE
    try:
        outcome = _pickup_fd(fd, path, settings, cleanup_path, flags, warn, connect)
        if outcome == Outcome.REMOVE and remove:
            _remove(path)
        return outcome
    finally:
        os.close(fd)        # releases the lock, after the unlink


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        log.warning(f"remove {path}: {err.strerror}")


def _claim(fd: int) -> bool:
    """Take the file for this pickup: a non-blocking exclusive flock.

    Normally one pickup runs (maxproc 1), but an orphan whose master was
    killed with -9 may still be draining maildrop/ while the new master's
    pickup starts: whoever holds the lock owns the file until it is
    unlinked, and the other skips it (no duplicate queue file).  The lock
    dies with its holder, so a kill -9 never strands a file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR):
            return False
        raise
    return True


def _pickup_fd(fd: int, path: str, settings: dict, cleanup_path: str, flags: int,
               warn, connect) -> str:
    if not _claim(fd):
        return Outcome.KEEP                 # another pickup has it
    st = os.fstat(fd)
    if st.st_nlink == 0 and stat.S_ISREG(st.st_mode):
        # Removed after we opened it: another pickup handed it to
        # cleanup and unlinked it before releasing its lock.
        return Outcome.KEEP
    if not stat.S_ISREG(st.st_mode):
        warn(f"{path}: uid={st.st_uid}: removed non-regular file")
        return Outcome.REMOVE
    if st.st_nlink != 1:
        # A hard link could replay someone else's file under our eyes.
        warn(f"{path}: uid={st.st_uid}: file has {st.st_nlink} links; removed")
        return Outcome.REMOVE
    trusted = st.st_uid in settings.get("trusted_uids", ())
    if not is_ready(st.st_mode, trusted):
        return Outcome.KEEP                 # still being written
    name = os.path.basename(path)
    orig_id = name if trusted and is_queue_id(name) else None
    if not trusted:
        refused = _acl_refuses(settings, st.st_uid)
        if refused is not None:
            # Postfix refuses in postdrop; here the file is already in
            # maildrop/ (written without sendmail), so it goes.
            warn(f"{path}: uid={st.st_uid}: User {refused}({st.st_uid}) "
                 f"is not allowed to submit mail; removed")
            return Outcome.REMOVE
    now = time.time()
    if st.st_mtime > now + _FUTURE_SLACK:
        warn(f"{path}: message dated {int(st.st_mtime - now)} seconds into the future")
    elif st.st_mtime < now - _DAY:
        warn(f"{path}: message has been queued for {int((now - st.st_mtime) // _DAY)} days")
    try:
        client = connect(cleanup_path, flags, timeout=settings["ipc_timeout"])
    except (OSError, EOFError) as err:
        warn(f"connect to {cleanup_path}: {getattr(err, 'strerror', None) or err}")
        raise _CleanupDown() from None
    with client:
        try:
            copy_file(fd, st, client, client.queue_id, settings, warn,
                      trusted=trusted, orig_id=orig_id)
        except Malformed as err:
            warn(f"{client.queue_id}: {err}")
            return Outcome.REMOVE
        try:
            client.finish_records()
        except CleanupRejected as err:
            if err.permanent:
                # cleanup has bounced it to the sender (FLAG_BOUNCE).
                return Outcome.REMOVE
            warn(f"{path}: {err.reason or 'cleanup: temporary failure'}")
            return Outcome.KEEP
        except (OSError, EOFError) as err:
            warn(f"{path}: cleanup: {err}")
            return Outcome.KEEP
    return Outcome.REMOVE


class _CleanupDown(Exception):
    """cleanup cannot be reached: stop this scan, retry on the next wakeup."""


def is_ready(mode: int, trusted: bool) -> bool:
    """Complete?  A postdrop file is complete when it has its ready mode
    (postdrop(1); 0640 from pfy before the owner-x mark, still accepted); a
    queue file renamed here by postsuper -r has the queue's 0700 bits."""
    mode = stat.S_IMODE(mode)
    if mode & 0o700 == 0o700:
        return True
    return mode == _LEGACY_READY and not trusted


def ready_files(maildrop: str) -> list[tuple[float, str]]:
    """Candidate files, oldest first: postdrop's names and queue IDs
    (postsuper -r), complete or not regular files (those are dealt with,
    warned about and removed, in pickup_file)."""
    found = []
    try:
        with os.scandir(maildrop) as it:
            for de in it:
                if not (is_maildrop_name(de.name) or is_queue_id(de.name)):
                    continue
                try:
                    st = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode) and not (
                        st.st_mode & 0o700 == 0o700
                        or stat.S_IMODE(st.st_mode) == _LEGACY_READY):
                    continue
                found.append((st.st_mtime, de.path))
    except FileNotFoundError:
        return []
    found.sort()
    return found


def _acl_refuses(settings: dict, uid: int) -> str | None:
    """authorized_submit_users by the file owner: maildrop/ is writable
    without sendmail, so pickup is where the list is enforced."""
    acl = settings.get("submit_acl")
    if acl is None:
        return None
    try:
        return None if acl.match(user_name(uid, settings.get("passwd"))) \
            else user_name(uid, settings.get("passwd"))
    except TableTempFail:
        raise _CleanupDown() from None  # try the whole scan again later


def scan_maildrop(ctx, request: bytes) -> None:
    """Feed every complete maildrop file to cleanup, oldest first; scan
    again while files are being removed (pickup.c pickup_service)."""
    settings = ctx.data["settings"]
    while True:
        removed = 0
        for _, path in ready_files("maildrop"):
            if ctx.master_gone():
                return      # an orphan: the new master's pickup takes over
            try:
                outcome = pickup_file(path, settings, settings["cleanup_path"],
                                      settings["flags"], remove=True)
            except _CleanupDown:
                return
            if outcome == Outcome.REMOVE:
                removed += 1
        if not removed:
            return


def _settings(cfg) -> dict:
    return {
        "line_length_limit": max(int(cfg.line_length_limit), 256),
        "content_filter": cfg.content_filter,
        "myhostname": cfg.myhostname,
        "mail_name": cfg.mail_name,
        "ipc_timeout": float(cfg.ipc_timeout),
        "cleanup_path": os.path.join("public", cfg.cleanup_service_name),
        "flags": cleanup_flags(cfg.receive_override_options),
    }


def _pre_jail(ctx) -> None:
    """What the jail hides: mail_owner's uid, and for a non-default
    authorized_submit_users its tables and a snapshot of the password
    database (uid -> name; a user added later is known after
    "postfix reload", like any main.cf change)."""
    import pwd
    cfg = ctx.cfg
    trusted = {0}
    try:
        trusted.add(pwd.getpwnam(cfg.mail_owner).pw_uid)
    except KeyError:
        pass                # an unprivileged instance: its user, added below
    ctx.data["trusted_uids"] = trusted
    acl = cfg.authorized_submit_users
    if acl and not is_static(acl):
        from pfy.message.domains import MatchList
        from pfy.server.lifecycle import Fatal
        from pfy.tables import TableError, open_table
        try:
            ctx.data["submit_acl"] = MatchList(acl, lambda spec: open_table(spec, cfg))
        except TableError as err:
            raise Fatal(f"authorized_submit_users: {err}") from None
        names: dict[int, str] = {}
        for pw in pwd.getpwall():
            names.setdefault(pw.pw_uid, pw.pw_name)
        ctx.data["passwd"] = names
    elif not acl:
        # An empty list permits no one (string_list_match of nothing).
        from pfy.message.domains import MatchList
        ctx.data["submit_acl"] = MatchList([])


def _post_jail(ctx) -> None:
    settings = _settings(ctx.cfg)
    # Our own uid is mail_owner's after the privilege drop, and the
    # instance owner's in an instance run by an ordinary user, whose
    # daemons write the queue files that postsuper -r brings back.
    settings["trusted_uids"] = frozenset(ctx.data["trusted_uids"] | {os.geteuid()})
    settings["submit_acl"] = ctx.data.get("submit_acl")
    # Outside a chroot the password database stays reachable: look up live.
    settings["passwd"] = ctx.data.get("passwd") if ctx.chrooted else None
    ctx.data["settings"] = settings
    # Mail that waited in maildrop/ while the system was down goes at once,
    # not at master's first timer wakeup (up to 60 s later).  The serve loop
    # does not exist yet, so this first scan runs here.
    scan_maildrop(ctx, b"W")


def main() -> None:
    trigger.serve(scan_maildrop, solitary=True, pre_jail=_pre_jail,
                  post_jail=_post_jail, program="pickup")


if __name__ == "__main__":
    main()
