"""showq - list the mail queue.

SYNOPSIS
    showq [generic daemon options]

DESCRIPTION
    The showq daemon reports the mail queue: for each message in maildrop,
    active, incoming, deferred and hold (in that order, each in directory
    order), the queue it is in, its queue ID, arrival time, size, whether
    it is forced to expire, the sender, and each recipient still to be
    delivered with the reason of its last deferral, from the message's
    defer log (defer/ID) where there is one.  postqueue(1) -p and -j (and
    so mailq and sendmail -bp) format what it sends (pfy.ipc.showq_client).

    Started by the super-user with -S (stand-alone), it serves one listing
    on the socket at its standard input: postqueue uses this when the mail
    system is down, as Postfix's does.

SECURITY
    Low risk: reads queue files and defer logs, writes nothing, takes no
    input from its client.  Runs chrooted at fixed low privilege; its
    socket is public, so local users can ask for listings (denial of
    service by repeated listings is possible, as with Postfix).

PARAMETERS
    duplicate_filter_limit, empty_address_recipient (see postconf(5))
"""

from __future__ import annotations

import os
import stat

# Everything is imported here, before the skeleton's chroot hides the
# Python library (showq runs chrooted in the shipped master.cf).
from pfy import log
from pfy.ipc.channel import AttrConnection
from pfy.log import printable as _printable
from pfy.queue import Queue
from pfy.queue.queue_id import is_queue_id
from pfy.smtp.address import quote_local
from pfy.ipc.showq_client import (
    PROTOCOL, ShowqDone, ShowqMessage, ShowqMessageEnd, ShowqRecipient,
)
from pfy.queue.record import (
    REC_END, REC_FROM, REC_MESG, REC_PTR, REC_RCPT, REC_SIZE, REC_TIME,
    RecordError, RecordReader,
)

__all__ = ["SHOWQ_QUEUES", "scan_queue", "report_file", "read_defer_log",
           "STAT_EXPIRE", "main"]

# Postfix showq.c, the order of its queue_info[] table.
SHOWQ_QUEUES = ("maildrop", "active", "incoming", "deferred", "hold")
# Postfix mail_queue.h MAIL_QUEUE_STAT_EXPIRE: postsuper -e/-f set the group
# execute bit to force a message to expire.
STAT_EXPIRE = stat.S_IXGRP
_STAT_READY = stat.S_IRWXU


def _quote(address: str) -> str:
    """Postfix quote_822_local() then printable(): the external form."""
    try:
        return _printable(quote_local(address))
    except Exception:                   # noqa: BLE001 - unparsable: show it raw
        return _printable(address)


def read_defer_log(path: str) -> list[tuple[str, str]]:
    """(recipient, reason) per entry of a defer log, in file order.

    The format is Postfix's bounce_log.c: blocks of "name=value" lines ended
    by an empty line; an entry needs a recipient.  A missing file is an
    empty list (delivery not tried yet, or the reason not recorded).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return []
    entries = []
    rcpt: str | None = None
    reason = ""
    for raw in data.decode("utf-8", "surrogateescape").split("\n") + [""]:
        line = raw.strip()
        if not line:
            if rcpt is not None:
                entries.append((rcpt, reason))
            rcpt, reason = None, ""
            continue
        name, eq, value = line.partition("=")
        if not eq:
            continue                    # not name=value: Postfix skips it too
        name = name.strip()
        if name == "recipient":
            rcpt = value.strip()
        elif name == "reason":
            reason = value.strip()
    return entries


def report_file(queue_name: str, queue_id: str, fd: int, st: os.stat_result,
                defer_log: str, empty_addr: str = "MAILER-DAEMON",
                dup_filter_limit: int = 1000, warn=None):
    """Events for one queue file, as Postfix's showq_report().

    Record driven and tolerant like Postfix's: it needs a sender record
    before recipients and reads to the end record or end of file; content
    is skipped with the size in the C record.  Recipients named in the
    defer log come first with their reasons; queue-file recipients (R only:
    done ones are delivered) follow unless the log already listed them.
    """
    warn = warn or (lambda msg: None)
    reader = RecordReader(fd, 0)
    arrival = 0
    msg_size = st.st_size
    size_ok = False
    sender_seen = False
    listed: set[str] | None = None
    while True:
        try:
            rec = reader.read()
        except RecordError as err:
            warn(f"{queue_id}: {err}")
            break
        if rec is None:
            break
        _, rtype, data = rec
        if rtype == REC_TIME:
            if not arrival:
                try:
                    arrival = int(data.split()[0])
                except (ValueError, IndexError):
                    pass
        elif rtype == REC_SIZE:
            if not size_ok:
                text = data.decode("ascii", "replace")
                fields = text.split()
                size_ok = (bool(fields) and all(c in "0123456789 " for c in text))
                if size_ok:
                    msg_size = int(fields[0])
                else:
                    warn(f"{queue_id}: malformed size record: {_printable(text[:100])} "
                         "-- using file size instead")
                    msg_size = st.st_size
        elif rtype == REC_FROM:
            sender = data.decode("utf-8", "surrogateescape") or empty_addr
            if sender_seen:
                warn(f"{queue_id}: duplicate sender address: {_quote(sender)} "
                     "-- skipping remainder of this file")
                break
            sender_seen = True
            yield ShowqMessage(queue_name, queue_id,
                               arrival if arrival > 0 else int(st.st_mtime),
                               msg_size, bool(st.st_mode & STAT_EXPIRE),
                               _quote(sender))
            entries = read_defer_log(defer_log)
            if entries:
                listed = set()
                for address, reason in entries:
                    if not dup_filter_limit or len(listed) < dup_filter_limit:
                        listed.add(address)
                    yield ShowqRecipient(address, _printable(reason))
        elif rtype == REC_RCPT:
            if not sender_seen:
                warn(f"{queue_id}: missing sender address -- skipping remainder "
                     "of this file")
                break
            address = _quote(data.decode("utf-8", "surrogateescape") or empty_addr)
            if listed is None or address not in listed:
                yield ShowqRecipient(address, "")
        elif rtype == REC_MESG:
            if size_ok:
                reader.seek(reader.tell() + msg_size)
        elif rtype == REC_PTR:
            # Postfix's rec_get() follows pointer records (cleanup's in-place
            # edits); offset 0 is a dummy.
            try:
                target = int(data)
            except ValueError:
                warn(f"{queue_id}: malformed pointer record")
                break
            if target > 0:
                reader.seek(target)
        elif rtype == REC_END:
            break
    if sender_seen:
        yield ShowqMessageEnd()


def _queue_files(root: str, queue_name: str, recurse: bool):
    """(queue_id, path) in directory order; hashed subfolders walked where
    found (mail_scan_dir_next), so a change of hash_queue_depth shows."""
    try:
        with os.scandir(os.path.join(root, queue_name)) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return
    for de in entries:
        if len(de.name) == 1 and recurse:
            if de.is_dir(follow_symlinks=False):
                sub = os.path.join(queue_name, de.name)
                yield from _queue_files(root, sub, recurse)
            continue
        if is_queue_id(de.name):
            yield de.name, de.path


def scan_queue(root: str, empty_addr: str = "MAILER-DAEMON",
               dup_filter_limit: int = 1000, defer_log_of=None, warn=None,
               queues=SHOWQ_QUEUES):
    """Every listable message's events, queue by queue (Postfix's order).

    ``defer_log_of(queue_id)`` gives the defer log path (hashing follows
    the instance's settings); files that are not ready (mode lacks 0700),
    not regular, or vanish meanwhile are skipped, as mail_open_ok().
    """
    if defer_log_of is None:
        def defer_log_of(qid):
            return os.path.join(root, "defer", qid)
    for queue_name in queues:
        for queue_id, path in _queue_files(root, queue_name, queue_name != "maildrop"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            except (FileNotFoundError, OSError) as err:
                if not isinstance(err, FileNotFoundError) and warn:
                    warn(f"open {queue_name} {queue_id}: {err.strerror}")
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_mode & _STAT_READY != _STAT_READY:
                    continue
                yield from report_file(queue_name.split("/")[0], queue_id, fd, st,
                                       defer_log_of(queue_id), empty_addr,
                                       dup_filter_limit, warn)
            finally:
                os.close(fd)


# -- the daemon --------------------------------------------------------------

def _serve(ctx, sock) -> None:
    cfg = ctx.cfg
    if sock is None:
        raise RuntimeError("showq -S needs a socket on standard input")
    q = Queue(".", hash_queue_depth=cfg.hash_queue_depth,
              hash_queue_names=cfg.hash_queue_names)
    conn = AttrConnection(sock)
    conn.greet(PROTOCOL)
    for ev in scan_queue(".", cfg.empty_address_recipient,
                         cfg.duplicate_filter_limit,
                         lambda qid: q.log_path("defer", qid), log.warning):
        conn.send(ev)
    conn.send(ShowqDone())
    conn.flush()
    try:
        sock.shutdown(2)
    except OSError:
        pass


def main() -> None:
    from pfy.server import single
    single.serve(_serve)


if __name__ == "__main__":
    main()
