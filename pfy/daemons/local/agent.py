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
from pfy.ipc.attr import ProtocolError
from pfy.ipc.cleanup_client import CleanupClient, CleanupRejected
from pfy.ipc.delivery import (AgentSession, DeliveryReply, DeliveryRequest,
                              RequestRecipient, read_request, send_reply)
from pfy.mailbox import (CopyOptions, LockSettings, MailboxError, deliver_maildir,
                         deliver_mbox)
from pfy.mailbox.copy import copy_message
from pfy.queue.queue_file import QueueFileReader

__all__ = ["User", "LocalAgent", "split_extension", "expand_local", "setup", "serve_one"]

# Postfix sys_exits.c: sysexits.h code -> DSN status and text.
SYS_EXITS = {
    64: ("5.3.0", "command line usage error"), 65: ("5.6.0", "data format error"),
    66: ("5.3.0", "cannot open input"), 67: ("5.1.1", "user unknown"),
    68: ("5.1.2", "host name unknown"), 69: ("5.3.0", "service unavailable"),
    70: ("5.3.0", "internal software error"), 71: ("4.3.0", "system resource problem"),
    72: ("5.3.0", "critical OS file missing"), 73: ("5.2.0", "can't create user output file"),
    74: ("5.3.0", "input/output error"), 75: ("4.3.0", "temporary failure"),
    76: ("5.5.0", "remote error in protocol"), 77: ("5.7.0", "permission denied"),
    78: ("5.3.5", "local configuration error"),
}
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
# How far _delivered_to() reads for Delivered-To: headers (Postfix's
# delivered_hdr reads the primary header only; this bounds a header-only
# message of any size).
MAX_HEADER_LINES = 10000
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


class LocalAgent:
    """Delivers the recipients of one request; see the module docstring.

    ``expanders``: callables (agent, session, rcpt, user, extension) ->
    bool, tried first (aliases, .forward: issue 4); True means handled.
    """

    def __init__(self, cfg, queue_root: str, service: str = "local",
                 getpw: Callable[[str], User | None] = _lookup_user,
                 euid: int | None = None, expanders=(), pass_to=None):
        self.cfg = cfg
        self.queue_root = queue_root
        self.service = service
        self.getpw = getpw
        self.euid = os.geteuid() if euid is None else euid
        self.expanders = list(expanders)
        self.pass_to = pass_to or self._pass_to_transport
        self.locks = LockSettings.from_config(cfg)

    # -- one request ------------------------------------------------------
    def handle(self, req: DeliveryRequest) -> DeliveryReply:
        path = os.path.join(self.queue_root, req.queue_name, req.queue_id)
        try:
            reader = QueueFileReader(path, writable=True, queue_id=req.queue_id)
        except OSError as exc:
            session = AgentSession(req, None, soft_bounce_on=self.cfg.soft_bounce)
            return session.finish(self.service, f"cannot open queue file: {exc.strerror}")
        with reader:
            session = AgentSession(req, reader.fd, soft_bounce_on=self.cfg.soft_bounce)
            for rcpt in req.recipients:
                try:
                    self.deliver_recipient(session, reader, rcpt)
                except Exception as exc:   # noqa: BLE001 - defer, never lose
                    log.warning(f"{req.queue_id}: delivery to {rcpt.address} failed: {exc!r}")
                    if not session.reported(rcpt):
                        session.defer(rcpt, "4.3.0", "mail system error", self.service)
            return session.finish(self.service)

    def deliver_recipient(self, s: AgentSession, reader: QueueFileReader,
                          rcpt: RequestRecipient) -> None:
        local = rcpt.address.rpartition("@")[0] if "@" in rcpt.address else rcpt.address
        name, ext = split_extension(local.lower(), self.cfg.recipient_delimiter)
        for expand in self.expanders:
            if expand(self, s, rcpt, name, ext):
                return
        if self.cfg.mailbox_transport:
            self.pass_to(s, rcpt, self.cfg.mailbox_transport)
            return
        user = self.getpw(name)
        if user is None:
            if self.cfg.fallback_transport:
                self.pass_to(s, rcpt, self.cfg.fallback_transport)
                return
            # A raw parameter, as in Postfix's local.c raw_table: $user and
            # friends are local(8)'s, not main.cf's, so take it unexpanded.
            relay = self.cfg.raw_or_default("luser_relay")
            if relay:
                # local(8) unknown.c: the expanded luser_relay address gets
                # the message, re-submitted through cleanup.
                target = expand_local(relay, rcpt.address, name, ext,
                                      self.cfg.recipient_delimiter)
                self.forward(s, reader, rcpt, [target])
                return
            # local(8) unknown.c: "unknown user: \"%s\"", 5.1.1.
            s.bounce(rcpt, "5.1.1", f'unknown user: "{name}"', self.service)
            return
        if self.euid != 0 and user.uid != self.euid:
            s.defer(rcpt, "4.3.0", f'cannot deliver to user "{name}": this mail system '
                    f'runs without root privileges as uid {self.euid}', self.service)
            return
        if self.cfg.mailbox_command:
            self.deliver_command(s, reader, rcpt, user, name, ext, self.cfg.mailbox_command)
            return
        self.deliver_mailbox(s, reader, rcpt, user)

    # -- mailbox ------------------------------------------------------------
    def deliver_mailbox(self, s: AgentSession, reader: QueueFileReader,
                        rcpt: RequestRecipient, user: User) -> None:
        cfg = self.cfg
        opts = CopyOptions(sender=s.request.sender, orig_rcpt=rcpt.orig_rcpt,
                           delivered=rcpt.address, size_limit=cfg.mailbox_size_limit)
        home_mb, spool = cfg.home_mailbox, cfg.mail_spool_directory
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
                        user: User, name: str, ext: str, command: str) -> None:
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
        opts = CopyOptions(sender=s.request.sender, orig_rcpt=rcpt.orig_rcpt,
                           delivered=rcpt.address, from_line=True)
        as_root = os.geteuid() == 0
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
            try:
                code = proc.wait(timeout=self.cfg.command_time_limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                s.defer(rcpt, "4.3.0", f'Command time limit exceeded: "{command}"', self.service)
                return
            out.seek(0)
            output = out.read(COMMAND_OUTPUT_LIMIT).decode("utf-8", "replace").strip()
        if code == 0:
            s.sent(rcpt, f"delivered to command: {command}", self.service)
            return
        suffix = f". Command output: {output}" if output else ""
        if code < 0:
            s.defer(rcpt, "4.3.0", f'Command died with signal {-code}: "{command}"{suffix}',
                    self.service)
            return
        dsn = SYS_EXITS.get(code, ("5.3.0", ""))[0]
        m = _ENHANCED.match(output)
        if m:                           # local(8): the command's own code wins
            dsn = m.group(1)
        s.status(rcpt, dsn, f'Command died with status {code}: "{command}"{suffix}', self.service)

    # -- re-submission (luser_relay now; aliases and .forward in issue 4) -------
    def forward(self, s: AgentSession, reader: QueueFileReader, rcpt: RequestRecipient,
                addresses: list[str]) -> None:
        """Send the message on to new recipients: Postfix's forward_append()
        + forward_finish().  A new queue file is made by cleanup (with
        virtual alias expansion, without header/body checks: Postfix's
        CLEANUP_FLAG_MASK_INTERNAL), with "Delivered-To: rcpt" on top so a
        forwarding loop is seen; the recipient is then done, logged as
        "forwarded as ID".  An expander (issue 4) calls this for aliases
        and .forward entries that are addresses."""
        if self._delivered_to(reader, rcpt.address):
            # local(8) delivered_hdr: "mail forwarding loop for %s", 5.4.6
            s.bounce(rcpt, "5.4.6", f"mail forwarding loop for {rcpt.address}", self.service)
            return
        req = s.request
        path = os.path.join(self.queue_root, "public", "cleanup")
        orig = rcpt.orig_rcpt or rcpt.address
        attrs = {"rewrite_context": "local"}
        try:
            with CleanupClient.open(path, CLEANUP_FLAG_MASK_INTERNAL,
                                    timeout=self.cfg.ipc_timeout) as c:
                c.envelope(req.sender, [(a, orig) for a in addresses], attrs=attrs,
                           arrival=req.arrival_time)
                c.line(b"Delivered-To: " + rcpt.address.encode("utf-8", "surrogateescape"))
                for rtype, data in reader.content_records():
                    c.record(rtype, data)
                queue_id = c.finish()
        except CleanupRejected as exc:
            s.status(rcpt, exc.dsn, f"cannot forward: {exc.reason}", self.service)
            return
        except (OSError, EOFError, ProtocolError) as exc:
            s.defer(rcpt, "4.3.0", f"mail forwarding transaction failed: {exc}", self.service)
            return
        s.sent(rcpt, f"forwarded as {queue_id}", self.service)

    @staticmethod
    def _delivered_to(reader: QueueFileReader, address: str) -> bool:
        """Does the message header already say Delivered-To: address?"""
        want = address.lower().encode("utf-8", "surrogateescape")
        for n, line in enumerate(reader.content_lines()):
            if not line or n >= MAX_HEADER_LINES:
                return False
            if line[:13].lower() == b"delivered-to:" and line[13:].strip().lower() == want:
                return True
        return False

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
    ctx.data["agent"] = LocalAgent(ctx.cfg, ctx.queue_directory, service=ctx.service)


def serve_one(ctx, sock) -> None:
    agent: LocalAgent = ctx.data["agent"]
    try:
        req = read_request(sock, timeout=ctx.cfg.ipc_timeout)
    except (ProtocolError, OSError, ValueError) as exc:
        log.warning(f"delivery request: {exc}")
        return
    send_reply(sock, agent.handle(req))
