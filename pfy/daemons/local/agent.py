"""local(8)'s delivery logic: one request, each recipient to its mailbox.

Kept apart from the skeleton so tests drive it with a socketpair and a
fake passwd.  Mailbox writes happen with the recipient's effective ids
(when we are root), so a mailbox path cannot be used to make root write
anywhere.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
import signal
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable

from pfy import log
from pfy.dsn.sys_exits import sys_exits_detail
from pfy.ipc.attr import ProtocolError
from pfy.ipc.cleanup_client import CleanupClient, CleanupRejected
from pfy.ipc.delivery import (AgentSession, DeliveryReply, DeliveryRequest, RequestRecipient,
                              deliver_each, deliver_queue_file, serve_request)
from pfy.mailbox import (CopyOptions, LockSettings, MailboxError, deliver_maildir,
                         deliver_mbox, delivered_to_set)
from pfy.mailbox.copy import copy_message
from pfy.queue.queue_file import QueueFileReader
from pfy.tables import TableError, TableTempFail, open_table

from .expand import (ALIAS_LOOP_LIMIT, EXPAND_ALIAS, EXPAND_FORWARD, EXPAND_INCLUDE,
                     Expansion, State, expand_forward_path, split_targets, sub_recipient)

__all__ = ["User", "LocalAgent", "split_extension", "expand_local", "setup", "serve_one"]

# local(8): "A limited amount of command output ... is captured"; Postfix
# keeps up to 1024 bytes (pipe_command.c: var_line_limit... "Command output").
COMMAND_OUTPUT_LIMIT = 1024
# local(8): the shell is used only when the command has shell magic.
_SHELL_MAGIC = re.compile(r"""[|&;<>()$`\\"'*?\[#~=%\n]""")
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")
_PATH = "/usr/bin:/bin"          # local(8): "PATH is reset to a system default"


# Postfix cleanup_user.h: CLEANUP_FLAG_MASK_INTERNAL = CLEANUP_FLAG_MAP_OK
# (1 << 5): mail re-submitted by local gets virtual alias expansion but no
# header/body checks and no bcc (those ran when it first arrived).
CLEANUP_FLAG_MASK_INTERNAL = 1 << 5
_LOCAL_VAR = re.compile(r"\$(?:\{(\w+)(?:([?:])([^}]*))?\}|(\w+))")


def expand_local(template: str, recipient: str, user: str, extension: str,
                 delimiter: str) -> str:
    """local(8)'s expansion of luser_relay (and, in issue 4, of .forward
    and alias commands): $user, $local, $extension, $domain, $recipient,
    $recipient_delimiter, and ${name?text} / ${name:text}."""
    local, at, domain = recipient.rpartition("@")
    if not at:
        local, domain = recipient, ""
    values = {"user": user, "local": local, "extension": extension, "domain": domain,
              "recipient": recipient,
              "recipient_delimiter": delimiter[:1] if extension else ""}

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(4)
        value = values.get(name.lower(), "")
        if m.group(2) == "?":
            return m.group(3) if value else ""
        if m.group(2) == ":":
            return "" if value else m.group(3)
        return value
    return _LOCAL_VAR.sub(sub, template)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


def split_extension(localpart: str, delimiters: str) -> tuple[str, str]:
    """"alice+lists" -> ("alice", "lists") with recipient_delimiter "+"."""
    if delimiters:
        for i, ch in enumerate(localpart):
            if ch in delimiters and i > 0:
                return localpart[:i], localpart[i + 1:]
    return localpart, ""


def _lookup_user(name: str) -> User | None:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return User(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell)


def _lookup_uid(uid: int) -> User | None:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return None
    return User(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell)


def _classes(value) -> frozenset:
    """A class list parameter ("alias, forward") as a set of names."""
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return frozenset(v.lower() for v in value)


def _table_owner(table) -> int:
    """dict_owner(): the uid owning the table's file; 0 (trusted) for
    tables without one (inline:, static:)."""
    for path in (getattr(table, "path", None), getattr(table, "name", "")):
        if path and path.startswith("/"):
            try:
                return os.stat(path).st_uid
            except OSError:
                continue
    return 0


def open_alias_maps(specs, cfg) -> list:
    """alias_maps, each table on its own (the owner of each decides the
    rights of its |command and /file entries).  A database file that does
    not exist is skipped with a warning -- Postfix's local(8) would stop
    with a fatal error; a host that never ran newaliases still delivers to
    its users here.  Other errors raise TableError."""
    tables = []
    for spec in specs:
        if spec.startswith("proxy:"):
            spec = spec[len("proxy:"):]          # aliases(5) SECURITY: opened directly
        try:
            tables.append(open_table(spec, cfg))
        except TableError as err:
            if "No such file or directory" not in str(err):
                raise
            log.warning(f"alias_maps: {err}; skipping {spec}")
    return tables


class LocalAgent:
    """Delivers the recipients of one request; see the module docstring.

    ``expanders``: callables (agent, session, rcpt, user, extension) ->
    bool, tried first (aliases, .forward: issue 4); True means handled.
    """

    def __init__(self, cfg, queue_root: str, service: str = "local",
                 getpw: Callable[[str], User | None] = _lookup_user,
                 euid: int | None = None, expanders=(), pass_to=None,
                 getpwuid: Callable[[int], User | None] = _lookup_uid,
                 alias_tables=None, resolve=None):
        """alias_tables: opened tables (None: open cfg.alias_maps now);
        resolve(sender, address) -> transport name or None (try again
        later); default: ask trivial-rewrite."""
        self.cfg = cfg
        self.getpwuid = getpwuid
        self.alias_tables = (open_alias_maps(cfg.alias_maps, cfg) if alias_tables is None
                             else list(alias_tables))
        self._rewrite = None
        self.resolve = resolve or self._resolve_with_rewrite
        self.queue_root = queue_root
        self.service = service
        self.getpw = getpw
        self.euid = os.geteuid() if euid is None else euid
        self.expanders = list(expanders)
        self.pass_to = pass_to or self._pass_to_transport
        self.locks = LockSettings.from_config(cfg)

    # -- one request ------------------------------------------------------
    def handle(self, req: DeliveryRequest) -> DeliveryReply:
        return deliver_queue_file(req, self.queue_root, self.service, self._deliver,
                                  soft_bounce_on=self.cfg.soft_bounce)

    def _deliver(self, s: AgentSession, reader: QueueFileReader) -> None:
        deliver_each(s, self.service, lambda rcpt: self.deliver_recipient(s, reader, rcpt))

    def deliver_recipient(self, s: AgentSession, reader: QueueFileReader,
                          rcpt: RequestRecipient) -> None:
        """One queue-file recipient: expand it (aliases, .forward,
        :include:) and deliver every part, then report the sum to qmgr
        (pfy/daemons/local/expand.py)."""
        exp = Expansion(s, rcpt, self.service, self.cfg.soft_bounce)
        state = State(sender=s.request.sender, orig=rcpt.orig_rcpt or rcpt.address,
                      delivered=rcpt.address)
        self._recipient(exp, reader, state, rcpt)
        self._flush_forwards(exp, reader)
        exp.settle()

    # -- the delivery switch (Postfix local/recipient.c) --------------------
    def _recipient(self, exp: Expansion, reader: QueueFileReader, state: State,
                   rcpt: RequestRecipient) -> None:
        """deliver_recipient(): duplicate filter, Delivered-To loop check,
        then the switch."""
        cfg = self.cfg
        b = exp.branch(state.sender)
        key = ("recipient", state.level, rcpt.address.lower())
        if key in exp.dups:
            return
        if len(exp.dups) < cfg.duplicate_filter_limit:
            exp.dups.add(key)
        if self._looping(exp, reader, rcpt.address):
            # local(8) delivered_hdr: "mail forwarding loop for %s", 5.4.6
            b.bounce(rcpt, "5.4.6", f"mail forwarding loop for {rcpt.address}", self.service)
            return
        local = rcpt.address.rpartition("@")[0] if "@" in rcpt.address else rcpt.address
        local = local.lower()
        no_alias = state.no_alias or local.startswith("\\")
        local = local.lstrip("\\")
        name, ext = split_extension(local, cfg.recipient_delimiter)
        if "/" in ext:
            log.warning(f"{b.request.queue_id}: address with illegal extension: {local}")
            name, ext = local, ""
        if not name:
            b.bounce(rcpt, "5.1.3", f"null username in {rcpt.address}", self.service)
            return
        state = dataclasses.replace(state, unmatched=ext, no_alias=False)
        if no_alias:
            # "\\user": no alias or .forward expansion (recipient.c).
            self._mailbox_switch(b, reader, rcpt, name, ext, state)
            return
        if state.level == 0:
            for expand in self.expanders:
                if expand(self, b, rcpt, name, ext):
                    return
        prop = _classes(cfg.propagate_unmatched_extensions)
        if self._alias(exp, reader, dataclasses.replace(state, unmatched=""), rcpt, local):
            return
        if ext:
            st = dataclasses.replace(state, unmatched=ext if "alias" in prop else "")
            if self._alias(exp, reader, st, rcpt, name):
                return
        # Mail aliased or forwarded to another local user goes out in a new
        # queue file when an owner is known; :include: members always do.
        if state.owner is not None and state.owner.lower() != name:
            self._indirect(exp, state, rcpt)
            return
        if state.exp_type == EXPAND_INCLUDE:
            self._indirect(exp, state, rcpt)
            return
        if self._dotforward(exp, reader, state, rcpt, local, name, ext):
            return
        self._mailbox_switch(b, reader, rcpt, name, ext, state)

    def _mailbox_switch(self, s, reader: QueueFileReader, rcpt: RequestRecipient,
                        name: str, ext: str, state: State | None = None) -> None:
        """mailbox_transport, the passwd entry, mailbox_command, the
        mailbox itself; unknown users: fallback_transport, luser_relay,
        or a 5.1.1 bounce."""
        delivered = state.delivered if state is not None else rcpt.address
        if self.cfg.mailbox_transport:
            self._pass(s, rcpt, self.cfg.mailbox_transport)
            return
        user = self.getpw(name)
        if user is None:
            if self.cfg.fallback_transport:
                self._pass(s, rcpt, self.cfg.fallback_transport)
                return
            # A raw parameter, as in Postfix's local.c raw_table: $user and
            # friends are local(8)'s, not main.cf's, so take it unexpanded.
            relay = self.cfg.raw_or_default("luser_relay")
            if relay:
                # local(8) unknown.c: the expanded luser_relay address gets
                # the message, re-submitted through cleanup.
                target = expand_local(relay, rcpt.address, name, ext,
                                      self.cfg.recipient_delimiter)
                self.forward(s, reader, rcpt, [target], delivered=delivered)
                return
            # local(8) unknown.c: "unknown user: \"%s\"", 5.1.1.
            s.bounce(rcpt, "5.1.1", f'unknown user: "{name}"', self.service)
            return
        if self.euid != 0 and user.uid != self.euid:
            s.defer(rcpt, "4.3.0", f'cannot deliver to user "{name}": this mail system '
                    f'runs without root privileges as uid {self.euid}', self.service)
            return
        if self.cfg.mailbox_command:
            self.deliver_command(s, reader, rcpt, user, name, ext, self.cfg.mailbox_command,
                                 delivered=delivered)
            return
        self.deliver_mailbox(s, reader, rcpt, user, delivered=delivered)

    def _pass(self, s, rcpt: RequestRecipient, spec: str) -> None:
        """mailbox_transport / fallback_transport.  A probe is answered
        here: the agent behind that transport might deliver it."""
        if s.verify_only:
            s.sent(rcpt, f"delivery via {spec.partition(':')[0]}", self.service)
            return
        self.pass_to(s, rcpt, spec)

    # -- aliases (Postfix local/alias.c) -------------------------------------
    def _alias(self, exp: Expansion, reader: QueueFileReader, state: State,
               rcpt: RequestRecipient, name: str) -> bool:
        """deliver_alias(): True when name is an alias (delivered, deferred
        or bounced here), False to go on with .forward and the mailbox."""
        b = exp.branch(state.sender)
        if state.exp_from is not None and state.exp_from.lower() == name:
            return False            # "alias: alias, other": the user gets it
        if state.level > ALIAS_LOOP_LIMIT:
            log.warning(f"alias database loop for {name}")
            b.bounce(rcpt, "5.4.6", f"alias database loop for {name}", self.service)
            return True
        for table in self.alias_tables:
            try:
                value = table.lookup(name)
            except TableTempFail:
                b.defer(rcpt, "4.3.0", "alias database unavailable", self.service)
                return True
            if value is None:
                continue
            child = state.child(exp_type=EXPAND_ALIAS, exp_from=name)
            # DELIVERY RIGHTS: the alias database owner's, or default_privs
            # for a database owned by root (alias.c dict_owner()).
            uid = _table_owner(table)
            if uid == 0:
                child.rights = None
            else:
                owner_pw = self.getpwuid(uid)
                if owner_pw is None:
                    log.warning(f"cannot find alias database owner for {table.spec}")
                    b.defer(rcpt, "4.3.0", "cannot find alias database owner", self.service)
                    return True
                child.rights = owner_pw
            # WHERE TO REPORT PROBLEMS: owner-NAME becomes the envelope
            # sender of the expansion (owner_request_special,
            # expand_owner_alias); its DSN original recipient goes.
            owner_found = None
            if self.cfg.owner_request_special:
                try:
                    owner_found = self._alias_find("owner-" + name)
                except TableTempFail:
                    b.defer(rcpt, "4.3.0", "alias database unavailable", self.service)
                    return True
            if owner_found is not None:
                owner = ("owner-" + name) if not self.cfg.expand_owner_alias \
                    else (split_targets(owner_found) or ["owner-" + name])[0]
                owner = self._canon(owner)
                child.owner = owner
                child.sender = owner
                child.orig = ""
            elif self.cfg.reset_owner_alias:
                child.owner = None
            exp.expanded = True
            count = self._deliver_tokens(exp, reader, child, rcpt, [value])
            if count < 1:
                log.warning(f"no recipient in alias lookup result for {name}")
                b.defer(rcpt, "4.3.0", "alias database unavailable", self.service)
            return True
        return False

    def _alias_find(self, name: str) -> str | None:
        for table in self.alias_tables:
            value = table.lookup(name)
            if value is not None:
                return value
        return None

    # -- .forward (Postfix local/dotforward.c) ------------------------------
    def _dotforward(self, exp: Expansion, reader: QueueFileReader, state: State,
                    rcpt: RequestRecipient, local: str, name: str, ext: str) -> bool:
        cfg = self.cfg
        # Raw, as luser_relay: $home, $user... are local(8)'s, not main.cf's.
        from pfy.config import split_list
        paths = split_list(cfg.raw_or_default("forward_path") or "")
        if not paths:
            return False
        user = self.getpw(name)
        if user is None:
            return False
        if self.euid != 0 and user.uid != self.euid:
            return False            # the mailbox code says why it cannot deliver
        child = state.child(exp_type=EXPAND_FORWARD, rights=user, owner=name)
        domain = rcpt.address.rpartition("@")[2] if "@" in rcpt.address else ""
        delim = ""
        if ext:
            delim = local[len(name)] if len(local) > len(name) else cfg.recipient_delimiter[:1]
        values = {"user": name, "home": user.home, "shell": user.shell,
                  "recipient": rcpt.address, "extension": ext, "domain": domain,
                  "local": local, "recipient_delimiter": delim}
        found = None
        for template in paths:
            path, used_ext = expand_forward_path(template, values, cfg.forward_expansion_filter)
            if path is None:
                continue
            try:
                st = self._as_user_call(user.uid, user.gid, os.lstat, path)
            except OSError:
                continue
            found = path
            if used_ext or "forward" not in _classes(cfg.propagate_unmatched_extensions):
                child.unmatched = ""
            break
        if found is None:
            return False
        if ("forward", found) in exp.dups:
            # We are inside our own .forward: the mailbox gets it, unless
            # the file was already expanded for this recipient.
            return ("forward-done", found) in exp.dups
        exp.dups.add(("forward", found))
        child.exp_from = local
        if not stat.S_ISREG(st.st_mode):
            log.warning(f"file {found} is not a regular file")
            return False
        if st.st_uid not in (0, user.uid):
            log.warning(f"file {found} has bad owner uid {st.st_uid}")
            return False
        if st.st_mode & stat.S_IWOTH:
            log.warning(f"file {found} is world writable")
            return False
        try:
            lines = self._read_lines_as(user.uid, user.gid, found)
        except OSError as exc:
            log.warning(f"cannot open file {found}: {exc.strerror}")
            return False
        count = self._deliver_tokens(exp, reader, child, rcpt, lines)
        if count > 0:
            exp.dups.add(("forward-done", found))
            exp.expanded = True
            return True
        return False

    # -- :include: (Postfix local/include.c) --------------------------------
    def _include(self, exp: Expansion, reader: QueueFileReader, state: State,
                 rcpt: RequestRecipient, path: str) -> None:
        b = exp.branch(state.sender)
        if not path.startswith("/"):
            log.warning(f":include:{path} uses a relative path")
            b.bounce(rcpt, "5.3.5", "mail system configuration error", self.service)
            return
        if ("include", path) in exp.dups:
            return
        exp.dups.add(("include", path))
        rights = self._rights(state.rights)
        if rights is None:
            b.defer(rcpt, "4.3.5", "mail system configuration error", self.service)
            return
        try:
            st = self._as_user_call(rights.uid, rights.gid, os.stat, path)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(0, "not a regular file")
            lines = self._read_lines_as(rights.uid, rights.gid, path)
        except OSError as exc:
            # An unreadable list is the administrator's to fix: keep the
            # mail queued rather than lose the list's recipients.
            log.warning(f"cannot open include file {path}: {exc.strerror}")
            b.defer(rcpt, "4.3.0", f"cannot open include file {path}: {exc.strerror}",
                    self.service)
            return
        if st.st_mode & stat.S_IWOTH:
            log.warning(f"file {path} is world writable")
            b.defer(rcpt, "4.3.5", "mail system configuration error", self.service)
            return
        child = state.child(exp_type=EXPAND_INCLUDE)
        if st.st_uid != 0:
            # include.c: a file owned by an ordinary user runs its commands
            # and files with that user's rights, never with ours.
            owner = self.getpwuid(st.st_uid)
            if owner is None:
                b.defer(rcpt, "4.3.0", "cannot find include file owner", self.service)
                return
            child.rights = owner
            if child.owner is None:
                child.owner = owner.name
        self._deliver_tokens(exp, reader, child, rcpt, lines)

    # -- one alias value, .forward or :include: line (Postfix local/token.c) -
    def _deliver_tokens(self, exp: Expansion, reader: QueueFileReader, state: State,
                        rcpt: RequestRecipient, lines) -> int:
        count = 0
        for line in lines:
            if line.startswith("#"):
                continue
            for target in split_targets(line):
                count += 1
                self._deliver_token(exp, reader, state, rcpt, target)
        return count

    def _deliver_token(self, exp: Expansion, reader: QueueFileReader, state: State,
                       rcpt: RequestRecipient, target: str) -> None:
        b = exp.branch(state.sender)
        sub = sub_recipient(rcpt, rcpt.address, state.orig)
        if target.startswith("/"):
            self._deliver_file(b, reader, state, sub, target)
        elif target.startswith("~"):
            rights = state.rights
            if not target.startswith("~/") or rights is None:
                log.warning(f"bad home directory syntax for: {target}")
                b.bounce(sub, "5.3.5", "mail system configuration error", self.service)
            else:
                self._deliver_file(b, reader, state, sub, rights.home.rstrip("/") + target[1:])
        elif target.startswith("|"):
            if state.exp_type not in _classes(self.cfg.allow_mail_to_commands):
                b.bounce(sub, "5.7.1", "mail to command is restricted", self.service)
                return
            rights = self._rights(state.rights)
            if rights is None:
                b.defer(sub, "4.3.5", "mail system configuration error", self.service)
                return
            local = rcpt.address.rpartition("@")[0] if "@" in rcpt.address else rcpt.address
            name, ext = split_extension(local.lower(), self.cfg.recipient_delimiter)
            self.deliver_command(b, reader, sub, rights, name, ext, target[1:].strip(),
                                 delivered=state.delivered)
        elif target[:9].lower() == ":include:":
            self._include(exp, reader, state, rcpt, target[9:].strip())
        else:
            self._deliver_address(exp, reader, state, rcpt, target)

    def _deliver_address(self, exp: Expansion, reader: QueueFileReader, state: State,
                         rcpt: RequestRecipient, target: str) -> None:
        """deliver_resolve_addr(): canonical form, the unmatched extension
        spliced in, then the local transport recurses and any other
        transport gets the message in a new queue file."""
        b = exp.branch(state.sender)
        no_alias = target.startswith("\\")
        addr = self._canon(target.lstrip("\\"))
        if state.unmatched:
            local, at, domain = addr.rpartition("@")
            addr = f"{local}{self.cfg.recipient_delimiter[:1]}{state.unmatched}{at}{domain}"
        sub = sub_recipient(rcpt, addr, state.orig)
        try:
            transport = self.resolve(state.sender, addr)
        except Exception as exc:  # noqa: BLE001 - any resolver trouble defers
            b.defer(sub, "4.3.0", f"address resolver failure: {exc}", self.service)
            return
        if transport is None:
            b.defer(sub, "4.3.0", "address resolver failure", self.service)
        elif transport == self.service:
            self._recipient(exp, reader, state.child(no_alias=no_alias), sub)
        else:
            self._indirect(exp, state, sub)

    def _indirect(self, exp: Expansion, state: State, rcpt: RequestRecipient) -> None:
        """forward_append(): remember it; _flush_forwards() sends them."""
        if exp.verify_only:
            # deliver_indirect(): "Don't forward a trace-only request."
            exp.branch(state.sender).sent(rcpt, f"forwards to {rcpt.address}", self.service)
            return
        exp.forwards.setdefault((state.sender, state.delivered), []).append(rcpt)

    def _flush_forwards(self, exp: Expansion, reader: QueueFileReader) -> None:
        """forward_finish(): one new queue file per (sender, Delivered-To),
        each address logged "forwarded as ID"."""
        for (sender, delivered), rcpts in exp.forwards.items():
            b = exp.branch(sender)
            try:
                queue_id = self._submit(exp.session.request, sender,
                                        [(r.address, r.orig_rcpt) for r in rcpts],
                                        reader, delivered)
            except CleanupRejected as exc:
                for r in rcpts:
                    b.status(r, exc.dsn, f"cannot forward: {exc.reason}", self.service)
                continue
            except (OSError, EOFError, ProtocolError) as exc:
                for r in rcpts:
                    b.defer(r, "4.3.0", f"mail forwarding transaction failed: {exc}",
                            self.service)
                continue
            for r in rcpts:
                b.sent(r, f"forwarded as {queue_id}", self.service)
        exp.forwards.clear()

    # -- /file (Postfix local/file.c) ----------------------------------------
    def _deliver_file(self, s, reader: QueueFileReader, state: State,
                      rcpt: RequestRecipient, path: str) -> None:
        if state.exp_type not in _classes(self.cfg.allow_mail_to_files):
            s.bounce(rcpt, "5.7.1", "mail to file is restricted", self.service)
            return
        rights = self._rights(state.rights)
        if rights is None:
            s.defer(rcpt, "4.3.5", "mail system configuration error", self.service)
            return
        if s.verify_only:                       # local/file.c: trace-only
            s.sent(rcpt, "delivers to maildir" if path.endswith("/")
                   else f"delivers to file: {path}", self.service)
            return
        delivered = (state.delivered if "file" in _classes(self.cfg.prepend_delivered_header)
                     else "")
        opts = CopyOptions(sender=s.request.sender, orig_rcpt=rcpt.orig_rcpt,
                           delivered=delivered, size_limit=self.cfg.mailbox_size_limit)
        maildir = path.endswith("/")

        def work():
            if maildir:
                deliver_maildir(path, reader.content_records(), opts)
            else:
                deliver_mbox(path, reader.content_records(),
                             dataclasses.replace(opts, mbox=True), locks=self.locks,
                             file_target=True)

        err = self._as_user(rights.uid, rights.gid, work)
        if err is None:
            s.sent(rcpt, "delivered to maildir" if maildir else f"delivered to file: {path}",
                   self.service)
            return
        status, reason = err
        what = "maildir delivery failed: " if maildir else f"cannot append message to file {path}: "
        s.status(rcpt, status, what + reason, self.service)

    # -- helpers --------------------------------------------------------------
    def _rights(self, user):
        """The user a |command or /file runs as: the given one, or
        default_privs in place of root or of no user (local(8) DELIVERY
        RIGHTS).  None when default_privs names no user."""
        if user is not None and user.uid != 0:
            return user
        privs = self.getpw(self.cfg.default_privs)
        if privs is not None and privs.uid != 0:
            return privs
        if self.euid != 0:
            # Unprivileged: every delivery runs as we are anyway.
            return user or privs or User(self.cfg.default_privs, self.euid, os.getegid(),
                                         "/", "/bin/sh")
        log.warning(f"unknown or privileged default_privs user: {self.cfg.default_privs}")
        return None

    def _canon(self, address: str) -> str:
        """canon_addr_internal(): user -> user@$myorigin."""
        if "@" in address:
            return address
        return f"{address}@{self.cfg.myorigin}"

    def _resolve_with_rewrite(self, sender: str, address: str) -> str | None:
        """The transport trivial-rewrite routes address to (None: try later)."""
        if self._rewrite is None:
            from pfy.ipc.rewrite_client import RewriteClient
            self._rewrite = RewriteClient(os.path.join(self.queue_root, "private", "rewrite"),
                                          timeout=self.cfg.ipc_timeout)
        reply = self._rewrite.resolve(sender, address)
        if reply.failed:
            return None
        return reply.transport

    def _as_user_call(self, uid: int, gid: int, fn, *args):
        """fn(*args) with the user's effective ids (as _as_user), raising
        what fn raises."""
        box: list = []

        def work():
            box.append(fn(*args))
        err: list = []

        def guarded():
            try:
                work()
            except OSError as exc:
                err.append(exc)
        self._as_user(uid, gid, guarded)
        if err:
            raise err[0]
        return box[0]

    def _read_lines_as(self, uid: int, gid: int, path: str) -> list[str]:
        """A .forward or :include: file, opened as the user; lines cut at
        line_length_limit (local(8): "broken up into chunks")."""
        limit = max(1, self.cfg.line_length_limit)

        def read():
            out = []
            with open(path, "rb") as fh:
                for raw in fh:
                    raw = raw.rstrip(b"\r\n")
                    for i in range(0, max(len(raw), 1), limit):
                        out.append(raw[i:i + limit].decode("utf-8", "surrogateescape"))
            return out
        return self._as_user_call(uid, gid, read)

    # -- mailbox ------------------------------------------------------------
    def deliver_mailbox(self, s: AgentSession, reader: QueueFileReader,
                        rcpt: RequestRecipient, user: User, delivered: str | None = None) -> None:
        cfg = self.cfg
        home_mb, spool = cfg.home_mailbox, cfg.mail_spool_directory
        if s.verify_only:                       # local/mailbox.c: trace-only
            maildir = (home_mb or spool).endswith("/")
            s.sent(rcpt, "delivers to maildir" if maildir else "delivers to mailbox",
                   self.service)
            return
        opts = CopyOptions(sender=s.request.sender, orig_rcpt=rcpt.orig_rcpt,
                           delivered=delivered or rcpt.address,
                           size_limit=cfg.mailbox_size_limit)
        run_uid, run_gid, chown = user.uid, user.gid, None
        if home_mb:
            path = os.path.join(user.home, home_mb)
            maildir = home_mb.endswith("/")
        elif spool.endswith("/"):
            path, maildir = os.path.join(spool, user.name) + "/", True
        else:
            path, maildir = os.path.join(spool, user.name), False
            # local/mailbox.c: a world-writable spool is written as the user,
            # a group-writable one with the spool's group, else as root with
            # a chown of a new mailbox.
            try:
                st = os.stat(spool)
                if not st.st_mode & stat.S_IWOTH:
                    if st.st_mode & stat.S_IWGRP:
                        run_gid = st.st_gid
                    else:
                        run_uid, run_gid, chown = 0, 0, (user.uid, user.gid)
            except OSError:
                pass
        owner = user.uid if cfg.strict_mailbox_ownership and not maildir else None

        def work():
            if maildir:
                deliver_maildir(path, reader.content_records(), opts)
            else:
                deliver_mbox(path, reader.content_records(),
                             dataclasses.replace(opts, mbox=True),
                             locks=self.locks, owner_uid=owner, chown=chown)

        err = self._as_user(run_uid, run_gid, work)
        if err is None:
            s.sent(rcpt, "delivered to maildir" if maildir else "delivered to mailbox", self.service)
            return
        status, reason = err
        prefix = ("maildir delivery failed: " if maildir
                  else f"cannot update mailbox {path} for user {user.name}. ")
        s.status(rcpt, status, prefix + reason, self.service)

    def _as_user(self, uid: int, gid: int, work: Callable[[], None]) -> tuple[str, str] | None:
        """Run work() with the given identity; (status, reason) on failure.

        As root: with the effective uid, gid and groups of the recipient
        (Postfix's set_eugid() around a mailbox write), so the kernel
        checks every open, create and link as that user and new files are
        theirs; root comes back from the saved uid afterwards.  A fork per
        delivery would cost more than the delivery itself (the profile of
        a Maildir stream showed it as half of local's time).
        Unprivileged: as we are (we already are the only user we deliver to).
        """
        if self.euid != 0 or os.geteuid() != 0:
            return _run_work(work)
        groups = os.getgroups()
        try:
            os.setgroups([gid])
            os.setegid(gid)
            if uid:
                os.seteuid(uid)
            return _run_work(work)
        finally:
            os.seteuid(0)           # first: the calls below need root
            os.setegid(0)
            os.setgroups(groups)

    # -- commands -----------------------------------------------------------
    def deliver_command(self, s: AgentSession, reader: QueueFileReader, rcpt: RequestRecipient,
                        user: User, name: str, ext: str, command: str,
                        delivered: str | None = None) -> None:
        if s.verify_only:                       # local/command.c: trace-only
            s.sent(rcpt, f"delivers to command: {command}", self.service)
            return
        domain = rcpt.address.rpartition("@")[2] if "@" in rcpt.address else ""
        client = s.request.client
        env = {"PATH": _PATH, "SHELL": user.shell, "HOME": user.home, "USER": name,
               "LOGNAME": name, "EXTENSION": ext, "DOMAIN": domain,
               "LOCAL": rcpt.address.rpartition("@")[0] if "@" in rcpt.address else rcpt.address,
               "ORIGINAL_RECIPIENT": rcpt.orig_rcpt or rcpt.address,
               "RECIPIENT": rcpt.address, "SENDER": s.request.sender,
               "CLIENT_ADDRESS": client.addr, "CLIENT_HELO": client.helo,
               "CLIENT_HOSTNAME": client.name, "CLIENT_PROTOCOL": client.proto,
               "SASL_METHOD": client.sasl_method, "SASL_SENDER": client.sasl_sender,
               "SASL_USERNAME": client.sasl_username}
        env = {k: _filter(v, self.cfg.command_expansion_filter) for k, v in env.items()}
        argv = ["/bin/sh", "-c", command] if _SHELL_MAGIC.search(command) else command.split()
        # prepend_delivered_header: "command" (in the default) adds it.
        opts = CopyOptions(sender=s.request.sender, orig_rcpt=rcpt.orig_rcpt,
                           delivered=(delivered or rcpt.address)
                           if "command" in _classes(self.cfg.prepend_delivered_header) else "",
                           from_line=True)
        as_root = self.euid == 0 and os.geteuid() == 0
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                    env=env, close_fds=True, start_new_session=True,
                    user=user.uid if as_root else None, group=user.gid if as_root else None,
                    extra_groups=[] if as_root else None)
            except OSError as exc:
                s.defer(rcpt, "4.3.0", f"cannot execute command: {exc.strerror}", self.service)
                return
            try:
                copy_message(reader.content_records(), proc.stdin.fileno(), opts)
            except BrokenPipeError:
                pass                  # the command need not read everything
            finally:
                proc.stdin.close()
            timed_out = False
            try:
                code = proc.wait(timeout=self.cfg.command_time_limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
                timed_out = True
            out.seek(0)
            output = out.read(COMMAND_OUTPUT_LIMIT).decode("utf-8", "replace").strip()
        if timed_out:
            # pipe_command.c: killed with its process group, and bounced.
            suffix = f". Command output: {output}" if output else ""
            s.bounce(rcpt, "5.3.0", f'Command time limit exceeded: "{command}"{suffix}',
                     self.service)
            return
        if code == 0:
            s.sent(rcpt, f"delivered to command: {command}", self.service)
            return
        suffix = f". Command output: {output}" if output else ""
        if code < 0:
            s.defer(rcpt, "4.3.0", f'Command died with signal {-code}: "{command}"{suffix}',
                    self.service)
            return
        dsn = sys_exits_detail(code).dsn       # 5.3.0 outside sysexits.h
        m = _ENHANCED.match(output)
        if m:                           # local(8): the command's own code wins
            dsn = m.group(1)
        s.status(rcpt, dsn, f'Command died with status {code}: "{command}"{suffix}', self.service)

    # -- re-submission (luser_relay now; aliases and .forward in issue 4) -------
    def forward(self, s: AgentSession, reader: QueueFileReader, rcpt: RequestRecipient,
                addresses: list[str], delivered: str | None = None) -> None:
        """Send the message on to new recipients: Postfix's forward_append()
        + forward_finish().  A new queue file is made by cleanup (with
        virtual alias expansion, without header/body checks: Postfix's
        CLEANUP_FLAG_MASK_INTERNAL), with "Delivered-To: rcpt" on top so a
        forwarding loop is seen; the recipient is then done, logged as
        "forwarded as ID".  An expander (issue 4) calls this for aliases
        and .forward entries that are addresses."""
        if s.verify_only:                       # deliver_indirect(): trace-only
            s.sent(rcpt, "forwards to " + ", ".join(addresses), self.service)
            return
        orig = rcpt.orig_rcpt or rcpt.address
        try:
            queue_id = self._submit(s.request, s.request.sender, [(a, orig) for a in addresses],
                                    reader, delivered or rcpt.address)
        except CleanupRejected as exc:
            s.status(rcpt, exc.dsn, f"cannot forward: {exc.reason}", self.service)
            return
        except (OSError, EOFError, ProtocolError) as exc:
            s.defer(rcpt, "4.3.0", f"mail forwarding transaction failed: {exc}", self.service)
            return
        s.sent(rcpt, f"forwarded as {queue_id}", self.service)

    def _submit(self, request, sender: str, recipients, reader: QueueFileReader,
                delivered: str) -> str:
        """forward_finish(): one new queue file through cleanup, with
        "Delivered-To: <delivered>" on top (prepend_delivered_header
        "forward") so that a forwarding loop is seen when it comes back."""
        path = os.path.join(self.queue_root, "public", "cleanup")
        with CleanupClient.open(path, CLEANUP_FLAG_MASK_INTERNAL,
                                timeout=self.cfg.ipc_timeout) as c:
            c.envelope(sender, recipients, attrs={"rewrite_context": "local"},
                       arrival=request.arrival_time)
            if "forward" in _classes(self.cfg.prepend_delivered_header):
                c.line(b"Delivered-To: " + delivered.encode("utf-8", "surrogateescape"))
            for rtype, data in reader.content_records():
                c.record(rtype, data)
            return c.finish()

    @staticmethod
    def _looping(exp: Expansion, reader: QueueFileReader, address: str) -> bool:
        """Does the message header already say Delivered-To: address?
        (delivered_hdr.c: the primary header's Delivered-To: values, read
        once per recipient expansion.)"""
        if exp.loop_info is None:
            exp.loop_info = delivered_to_set(reader.content_lines())
        return address.lower() in exp.loop_info

    # -- handing a recipient to another transport (deliver_pass) -------------
    def _pass_to_transport(self, s: AgentSession, rcpt: RequestRecipient, spec: str) -> None:
        from dataclasses import replace
        from pfy.ipc.channel import AttrConnection
        from pfy.ipc.delivery import PROTOCOL, check_reply
        transport, _, nexthop = spec.partition(":")
        req = replace(s.request, nexthop=nexthop or s.request.nexthop, recipients=[rcpt])
        path = os.path.join(self.queue_root, "private", transport)
        try:
            with AttrConnection.connect(path, PROTOCOL) as conn:
                reply = conn.request(req, DeliveryReply)
            check_reply(req, reply)
        except (OSError, EOFError, ProtocolError) as exc:
            s.defer(rcpt, "4.3.0", f"mail transport unavailable: {transport}: {exc}", self.service)
            return
        for res in reply.results:
            s.passed(rcpt, res)


def _filter(value: str, allowed: str) -> str:
    """local(8): characters outside command_expansion_filter become "_"."""
    ok = set(allowed)
    return "".join(c if c in ok else "_" for c in value)


def _run_work(work) -> list | None:
    try:
        work()
        return None
    except MailboxError as exc:
        return [exc.status, exc.reason]
    except ValueError as exc:         # corrupt content record
        return ["4.3.0", f"queue file read error: {exc}"]
    except OSError as exc:
        return ["4.3.0", f"delivery error: {exc.strerror}"]


# -- the skeleton glue ---------------------------------------------------------

def setup(ctx) -> None:
    # Before the jail: _resolve_with_rewrite() connects lazily, but its
    # module must be loaded while the chroot still shows it.
    import pfy.ipc.rewrite_client  # noqa: F401
    from pfy.server.lifecycle import Fatal
    try:
        ctx.data["agent"] = LocalAgent(ctx.cfg, ctx.queue_directory, service=ctx.service)
    except TableError as err:
        raise Fatal(str(err)) from None


def serve_one(ctx, sock) -> None:
    agent: LocalAgent = ctx.data["agent"]
    serve_request(sock, agent.handle, timeout=ctx.cfg.ipc_timeout)
