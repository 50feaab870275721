"""virtual - the virtual mailbox delivery agent.

SYNOPSIS
    virtual [generic daemon options]   (master.cf: virtual unix - n n - - virtual)

DESCRIPTION
    Postfix's virtual(8): delivers mail for the domains in
    virtual_mailbox_domains to mailboxes that belong to no system account.
    For each recipient (folded to lower case):

    1. Loop check: a message that already carries "Delivered-To: rcpt" is
       bounced (5.4.6 mail forwarding loop), as Postfix does.
    2. virtual_mailbox_maps, searched as virtual(5) tables are
       (user+ext@domain, user@domain, @domain; recipient_delimiter),
       gives the mailbox path relative to virtual_mailbox_base.  No entry:
       bounce 5.1.1 'unknown user: "rcpt"'.  A result that ends in "/" is
       a Maildir (created when missing), otherwise an mbox file, locked as
       virtual_mailbox_lock says.
    3. virtual_uid_maps and virtual_gid_maps (same search; "static:5000"
       for one owner) give the owner; a uid below virtual_minimum_uid, or
       a missing or bad entry, defers with "mail system configuration
       error" and a warning naming the table.
    4. The message is written with Return-Path, X-Original-To and
       Delivered-To headers (pfy.mailbox), at most virtual_mailbox_limit
       bytes per mbox file or Maildir message.

    A trace-only request (sendmail -bv) stops after step 3 and answers
    "deliverable (delivers to maildir)" or the reason it could not.

    Log lines as Postfix's: "to=<u@example.com>, relay=virtual, ...,
    dsn=2.0.0, status=sent (delivered to maildir)" or "(delivered to
    mailbox)".  Mailbox trouble (full, unwritable, locked) keeps the mail
    queued with the reason, as pfy's local(8) does.

SECURITY
    Security sensitive: runs as root (master.cf unpriv n) to write as any
    mapped uid.  Every mailbox is written by a forked child that has
    dropped to the mapped uid and gid (never root: virtual_minimum_uid is
    at least 1 in effect), so the table contents cannot make root write.

    Stricter than Postfix, which concatenates virtual_mailbox_base and the
    table result and opens that: a result with "." or ".." components, an
    absolute result when virtual_mailbox_base is set, or a path with a
    symbolic link anywhere below virtual_mailbox_base is refused (the mail
    is deferred with a warning that names the recipient and the path).
    The child walks the path one component at a time with O_NOFOLLOW
    relative to the directory it has already opened, then works inside
    the verified directory, so a symlink swapped in during delivery cannot
    redirect the write either.  virtual_mailbox_base itself is trusted.

    Started by an ordinary user (no root), the agent writes as that user
    and defers mail whose mapped uid is another one, saying why.

PARAMETERS
    virtual_mailbox_base, virtual_mailbox_maps, virtual_uid_maps,
    virtual_gid_maps, virtual_minimum_uid, virtual_mailbox_limit,
    virtual_mailbox_lock, recipient_delimiter, deliver_lock_attempts,
    deliver_lock_delay, stale_lock_time, soft_bounce (see postconf(5))
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
from dataclasses import dataclass
from typing import Callable

from pfy import log
from pfy.ipc.delivery import (AgentSession, DeliveryReply, DeliveryRequest, RequestRecipient,
                              deliver_each, deliver_queue_file, serve_request)
from pfy.mailbox import (CopyOptions, LockSettings, MailboxError, deliver_maildir, deliver_mbox,
                         delivered_to_set)
from pfy.queue.queue_file import QueueFileReader
from pfy.server.lifecycle import Fatal
from pfy.tables import TableError, TableTempFail, open_tables
from pfy.tables.search import virtual_lookup

__all__ = ["main", "VirtualAgent", "PathRefused", "mailbox_location"]

CONFIG_ERROR = ("4.3.5", "mail system configuration error")   # virtual/mailbox.c


class PathRefused(Exception):
    """A mailbox path that could leave virtual_mailbox_base."""


@dataclass(frozen=True)
class Location:
    base: str                 # directory the walk starts from (trusted)
    parts: tuple[str, ...]    # components below it, each a plain name
    maildir: bool

    @property
    def path(self) -> str:
        return os.path.join(self.base, *self.parts) + ("/" if self.maildir else "")


def mailbox_location(base: str, result: str) -> Location:
    """virtual_mailbox_base + table result -> Location, or PathRefused.

    Postfix: concatenate(base, "/", result); we refuse what could escape.
    """
    if not result or "\0" in result:
        raise PathRefused("empty mailbox path" if not result else "NUL in mailbox path")
    if base and result.startswith("/"):
        raise PathRefused("absolute mailbox path with virtual_mailbox_base set")
    maildir = result.endswith("/")
    parts = tuple(p for p in result.split("/") if p)
    if not parts:
        raise PathRefused("mailbox path names no file")
    for p in parts:
        if p in (".", ".."):
            raise PathRefused(f'mailbox path has a "{p}" component')
    return Location(base or "/", parts, maildir)


def _open_dir(name: str, dir_fd: int, create: bool) -> int:
    """Open one path component as a directory, never through a symlink."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass                   # made meanwhile; the open below checks it
        return os.open(name, flags, dir_fd=dir_fd)


def _enter(loc: Location) -> str:
    """In the delivery child: chdir into the verified parent (mbox) or the
    maildir itself, one O_NOFOLLOW component at a time, creating missing
    directories (mode 0700, owned by the mapped uid: we run as it).  Returns the name
    to deliver to, relative to the new cwd.  MailboxError on refusal."""
    dirs = loc.parts if loc.maildir else loc.parts[:-1]
    try:
        fd = os.open(loc.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise MailboxError("4.2.0", f"cannot open virtual_mailbox_base {loc.base}: "
                                    f"{exc.strerror}") from None
    try:
        for i, part in enumerate(dirs):
            try:
                nfd = _open_dir(part, fd, create=True)
            except OSError as exc:
                where = os.path.join(loc.base, *dirs[:i + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PathRefused(f"{where} is a symbolic link or not a directory") from None
                raise MailboxError("4.2.0", f"cannot open directory {where}: "
                                            f"{exc.strerror}") from None
            os.close(fd)
            fd = nfd
        os.fchdir(fd)
    finally:
        os.close(fd)
    if not loc.maildir:
        try:
            st = os.lstat(loc.parts[-1])
            if stat.S_ISLNK(st.st_mode):
                raise PathRefused(f"{loc.path} is a symbolic link")
        except FileNotFoundError:
            pass               # created by deliver_mbox with O_NOFOLLOW
        return loc.parts[-1]
    for sub in ("tmp", "new", "cur"):
        try:
            if not stat.S_ISDIR(os.lstat(sub).st_mode):
                raise PathRefused(f"{os.path.join(loc.path, sub)} is a symbolic link "
                                  f"or not a directory")
        except FileNotFoundError:
            pass               # deliver_maildir creates it, mode 0700
    return "."


def _in_child(uid: int | None, gid: int | None, work: Callable[[], None]
              ) -> tuple[str, str, bool] | None:
    """Run work() in a forked child (as uid/gid when given; we are root
    then); (status, reason, refused) on failure, None on success.

    Always a child, also unprivileged: the walk changes the cwd, and the
    daemon's cwd must stay queue_directory."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                       # child
        code = 0
        try:
            os.close(r)
            if gid is not None:
                os.setgroups([])
                os.setgid(gid)
            if uid is not None:
                os.setuid(uid)
            try:
                work()
                res = None
            except PathRefused as exc:
                res = [CONFIG_ERROR[0], str(exc), True]
            except MailboxError as exc:
                res = [exc.status, exc.reason, False]
            os.write(w, json.dumps(res).encode())
        except BaseException:                          # noqa: BLE001 - report by exit code
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and chunks:
        res = json.loads(b"".join(chunks))
        return None if res is None else (str(res[0]), str(res[1]), bool(res[2]))
    return ("4.3.0", "mail system error: delivery process failed", False)


class VirtualAgent:
    """Delivers the recipients of one request; see the module docstring."""

    def __init__(self, cfg, queue_root: str, service: str = "virtual",
                 euid: int | None = None, maps=None):
        self.cfg = cfg
        self.queue_root = queue_root
        self.service = service
        self.euid = os.geteuid() if euid is None else euid
        if maps is None:
            maps = {name: open_tables(cfg[name], cfg) for name in
                    ("virtual_mailbox_maps", "virtual_uid_maps", "virtual_gid_maps")}
        self.maps = maps
        self.locks = LockSettings.from_config(cfg, "virtual_mailbox_lock")

    def handle(self, req: DeliveryRequest) -> DeliveryReply:
        return deliver_queue_file(req, self.queue_root, self.service, self._deliver,
                                  soft_bounce_on=self.cfg.soft_bounce)

    def _deliver(self, s: AgentSession, reader: QueueFileReader) -> None:
        # Read once for all recipients; a corrupt header defers them all.
        seen = delivered_to_set(reader.content_lines())
        deliver_each(s, self.service,
                     lambda rcpt: self.deliver_recipient(s, reader, rcpt, seen))

    def _find(self, table: str, key: str):
        return virtual_lookup(self.maps[table], key, self.cfg.recipient_delimiter)

    def _config_error(self, s: AgentSession, rcpt: RequestRecipient, warning: str) -> None:
        log.warning(f"{s.request.queue_id}: recipient {rcpt.address}: {warning}")
        s.defer(rcpt, *CONFIG_ERROR, self.service)

    def deliver_recipient(self, s: AgentSession, reader: QueueFileReader,
                          rcpt: RequestRecipient, seen: set[str]) -> None:
        cfg, user = self.cfg, rcpt.address.lower()
        if user in seen:
            # virtual/recipient.c: delivered_hdr_find() -> 5.4.6
            s.bounce(rcpt, "5.4.6", f"mail forwarding loop for {rcpt.address}", self.service)
            return
        try:
            box = self._find("virtual_mailbox_maps", user)
            if box is None:
                s.bounce(rcpt, "5.1.1", f'unknown user: "{user}"', self.service)
                return
            uid_m = self._find("virtual_uid_maps", user)
            gid_m = self._find("virtual_gid_maps", user)
        except TableTempFail as exc:
            s.defer(rcpt, "4.3.0", f"table lookup failure: {exc}", self.service)
            return
        if uid_m is None:
            return self._config_error(s, rcpt, "uid not found in virtual_uid_maps")
        if gid_m is None:
            return self._config_error(s, rcpt, "gid not found in virtual_gid_maps")
        uid, gid = _number(uid_m.value), _number(gid_m.value)
        if uid is None or uid < max(1, cfg.virtual_minimum_uid):
            return self._config_error(s, rcpt, f"bad uid {uid_m.value} in {uid_m.table}")
        if gid is None or gid <= 0:
            return self._config_error(s, rcpt, f"bad gid {gid_m.value} in {gid_m.table}")
        try:
            loc = mailbox_location(cfg.virtual_mailbox_base, box.value)
        except PathRefused as exc:
            return self._config_error(
                s, rcpt, f'mailbox path "{box.value}" from {box.table} refused: {exc}')
        if self.euid != 0 and uid != self.euid:
            s.defer(rcpt, "4.3.0", f"cannot deliver as uid {uid}: this mail system runs "
                    f"without root privileges as uid {self.euid}", self.service)
            return
        if s.verify_only:
            # sendmail -bv (virtual/mailbox.c, DEL_REQ_TRACE_ONLY): the map
            # lookups above are the probe; nothing is written.
            s.sent(rcpt, "delivers to maildir" if loc.maildir else "delivers to mailbox",
                   self.service)
            return
        opts = CopyOptions(sender=s.request.sender, orig_rcpt=rcpt.orig_rcpt,
                           delivered=rcpt.address, size_limit=cfg.virtual_mailbox_limit)

        def work() -> None:
            name = _enter(loc)
            if loc.maildir:
                deliver_maildir(name, reader.content_records(), opts)
            else:
                deliver_mbox(name, reader.content_records(),
                             dataclasses.replace(opts, mbox=True), locks=self.locks)

        as_root = self.euid == 0 and os.geteuid() == 0
        err = _in_child(uid if as_root else None, gid if as_root else None, work)
        if err is None:
            s.sent(rcpt, "delivered to maildir" if loc.maildir else "delivered to mailbox",
                   self.service)
            return
        status, reason, refused = err
        if refused:
            return self._config_error(s, rcpt, f"mailbox path {loc.path} refused: {reason}")
        prefix = ("maildir delivery failed: " if loc.maildir
                  else f"cannot update mailbox {loc.path} for user {user}. ")
        s.status(rcpt, status, prefix + reason, self.service)


def _number(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


# -- the skeleton glue ---------------------------------------------------------

def setup(ctx) -> None:
    cfg = ctx.cfg
    # virtual.c: a mailbox limit below the message size limit would bounce
    # mail that was accepted; Postfix refuses to start.
    if cfg.virtual_mailbox_limit and cfg.message_size_limit \
            and cfg.virtual_mailbox_limit < cfg.message_size_limit:
        raise Fatal("main.cf configuration error: virtual_mailbox_limit is smaller "
                    "than message_size_limit")
    try:
        ctx.data["agent"] = VirtualAgent(cfg, ctx.queue_directory, service=ctx.service)
    except (TableError, ValueError) as exc:
        raise Fatal(str(exc)) from None


def serve_one(ctx, sock) -> None:
    agent: VirtualAgent = ctx.data["agent"]
    agent.queue_root = ctx.queue_directory
    serve_request(sock, agent.handle, timeout=ctx.cfg.ipc_timeout)


def main() -> None:
    from pfy.server import single
    single.serve(serve_one, pre_jail=setup, program="virtual")
