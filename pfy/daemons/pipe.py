"""pipe - delivery to external commands named in master.cf.

SYNOPSIS
    pipe [generic daemon options] command_attributes...
    (master.cf:  dovecot unix - n n - - pipe
                   flags=DRhu user=vmail:vmail argv=/usr/lib/dovecot/dovecot-lda
                   -f ${sender} -d ${user}@${nexthop})

DESCRIPTION
    Postfix's pipe(8).  The attributes after the generic options are, in
    any order but argv= last: flags=BDFORXhqu.> (see pipe(8)), user=name
    or user=name:group (required), size=bytes, eol=string (C escapes,
    default \\n), null_sender=text (default MAILER-DAEMON), directory=path
    (default $queue_directory), chroot=path, argv=command args...

    The command runs without a shell: argv= is a word list in which the
    macros ${sender} ${recipient} ${user} ${extension} ${domain}
    ${mailbox} ${original_recipient} ${nexthop} ${size} ${queue_id}
    ${client_address} ${client_hostname} ${client_helo}
    ${client_protocol} ${client_port} ${sasl_method} ${sasl_username}
    ${sasl_sender} are replaced, in the forms $name, ${name}, $(name),
    ${name?text}, ${name:text}, ${name?{text}:{text}},
    ${{text1} == {text2} ? {text3} : {text4}} (also !=, and < <= > >=
    on numbers), and $$ for "$".
    An argument that uses a recipient macro (recipient, user, extension,
    domain, mailbox, original_recipient) becomes one argument per
    recipient; how many recipients a request has is up to qmgr
    ($transport_destination_recipient_limit).  Expanded text comes from
    the queue file and is passed as argv words only, never to a shell.

    A trace-only request (sendmail -bv) runs nothing: every recipient is
    "deliverable (delivers to command: ARGV0)" when the command exists
    and is executable, else undeliverable with exec's reason.

    Flag X (final delivery) is accepted; pfy's delivery status reports do
    not yet tell "relayed" from "delivered", so it changes nothing.

    The message goes to the command's standard input, with From_,
    Return-Path:, X-Original-To: and Delivered-To: lines as the F, R, O
    and D flags ask; its standard output and error are captured for the
    reason text.  The exit status decides, as Postfix's sys_exits.c:
        0                       sent ("delivered via SERVICE service")
        75 EX_TEMPFAIL, 71 EX_OSERR         deferred (4.3.0)
        64..78 others (67 EX_NOUSER 5.1.1, 65 EX_DATAERR 5.6.0, ...)
                                 bounced, "user unknown. Command output: ..."
        other non-zero           bounced, 'Command died with status N: "cmd"'
        killed by a signal       deferred
    Output that starts with an enhanced status code ("4.2.1 over quota")
    overrides the exit status's code and class.  A command that runs
    longer than $SERVICE_time_limit ($command_time_limit) is killed with
    its whole process group and the mail bounced (5.3.0), as Postfix's
    pipe_command.c does: 'Command time limit exceeded: "cmd"'.

SECURITY
    Security sensitive: runs as root (master.cf unpriv n) to start the
    command as user= (never root, never mail_owner: a fatal error, as
    Postfix).  Started by an ordinary user, the command runs as that user.
    The command environment holds only export_environment.

PARAMETERS
    SERVICE_time_limit, command_time_limit, export_environment,
    recipient_delimiter, mail_owner, soft_bounce (see postconf(5));
    SERVICE_destination_recipient_limit is qmgr's.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from pfy import log
from pfy.dsn.sys_exits import sys_exits_code, sys_exits_detail
from pfy.ipc.delivery import (AgentSession, DeliveryReply, DeliveryRequest, RequestRecipient,
                              deliver_queue_file, serve_request)
from pfy.mailbox.copy import from_line, quote_822_local
from pfy.mailbox.delivered import delivered_to_set
from pfy.queue.queue_file import QueueFileReader
from pfy.queue.record import REC_CONT, REC_NORM
from pfy.server.lifecycle import Fatal

__all__ = ["main", "PipeAttrs", "parse_attrs", "expand_macros",
           "expand_argv", "MacroError", "command_status", "PipeAgent",
           "unescape"]

# -- master.cf attributes ---------------------------------------------------------
# They follow master's generic options ("flags=R user=x argv=/bin/cmd -f
# ${sender}"); the skeleton hands them over in ctx.options.service_args.

_FLAG_CHARS = "BDFORXhqu.>"


@dataclass
class PipeAttrs:
    command: list[str]
    uid: int
    gid: int
    user: str
    flags: str = ""
    size_limit: int = 0
    eol: bytes = b"\n"
    null_sender: str = "MAILER-DAEMON"
    directory: str = ""
    chroot: str = ""


def unescape(text: str) -> bytes:
    """Postfix's unescape(): \\a \\b \\f \\n \\r \\t \\v \\ddd \\\\."""
    simple = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
    out = bytearray()
    i = 0
    raw = text.encode("utf-8", "surrogateescape")
    while i < len(raw):
        c = raw[i]
        if c != 0x5C or i + 1 >= len(raw):
            out.append(c)
            i += 1
            continue
        n = chr(raw[i + 1])
        if n in simple:
            out.append(simple[n])
            i += 2
        elif n in "01234567":
            j = i + 1
            while j < len(raw) and j < i + 4 and chr(raw[j]) in "01234567":
                j += 1
            out.append(int(raw[i + 1:j], 8) & 0xFF)
            i = j
        else:
            out.append(raw[i + 1])      # "\\" -> "\", "\x" -> "x"
            i += 2
    return bytes(out)


def _size(text: str) -> int:
    if not text.isdigit():
        raise Fatal(f"bad size= value: {text}")
    return int(text)


def parse_attrs(args: list[str], mail_owner: str = "postfix", *,
                getpwnam=pwd.getpwnam, getgrnam=grp.getgrnam) -> PipeAttrs:
    """pipe.c get_service_attr(): the attributes, or Fatal naming the problem."""
    flags, user, group, size, eol, null, directory, chroot = "", None, None, 0, b"\n", \
        "MAILER-DAEMON", "", ""
    command: list[str] | None = None
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        key = name.lower()
        if not eq:
            raise Fatal(f"unknown attribute name: {arg}")
        if key == "flags":
            bad = [c for c in value if c not in _FLAG_CHARS]
            if bad:
                raise Fatal(f"unknown flag: {bad[0]} (bad flags= value: {value})")
            flags = value
        elif key == "user":
            user, _, group = value.partition(":")
            if not user:
                raise Fatal(f"bad user= value: {value}")
        elif key == "size":
            size = _size(value)
        elif key == "eol":
            eol = unescape(value)
        elif key == "null_sender":
            null = value
        elif key == "directory":
            directory = value
        elif key == "chroot":
            chroot = value
        elif key == "argv":
            command = [value, *args[i + 1:]] if value else list(args[i + 1:])
            break
        else:
            raise Fatal(f"unknown attribute name: {arg}")
    if user is None:
        raise Fatal("missing user= command-line attribute")
    if not command or not command[0]:
        raise Fatal("missing argv= command-line attribute")
    try:
        pw = getpwnam(user)
    except KeyError:
        raise Fatal(f"user= command-line attribute: unknown user name: {user}") from None
    uid, gid = pw.pw_uid, pw.pw_gid
    if group:
        try:
            gid = getgrnam(group).gr_gid
        except KeyError:
            raise Fatal(f"user= command-line attribute: unknown group name: {group}") from None
    if uid == 0:
        raise Fatal("user= command-line attribute specifies root privileges")
    try:
        owner = getpwnam(mail_owner)
    except KeyError:
        owner = None
    if owner is not None and uid == owner.pw_uid:
        raise Fatal(f"user= command-line attribute specifies mail system owner {mail_owner}")
    if gid == 0:
        raise Fatal("user= command-line attribute specifies privileged group id 0")
    if owner is not None and gid == owner.pw_gid:
        raise Fatal(f"user= command-line attribute specifies mail system owner "
                    f"{mail_owner} group id {gid}")
    return PipeAttrs(command=command, uid=uid, gid=gid, user=user, flags=flags,
                     size_limit=size, eol=eol, null_sender=null, directory=directory,
                     chroot=chroot)


# -- macros (Postfix's mac_expand() as pipe uses it) ---------------------------

class MacroError(ValueError):
    """A macro that pipe does not know, or a syntax error in argv=."""


RCPT_MACROS = frozenset({"recipient", "user", "extension", "domain", "mailbox",
                         "original_recipient"})
MESSAGE_MACROS = frozenset({"sender", "nexthop", "size", "queue_id", "client_address",
                            "client_hostname", "client_helo", "client_protocol",
                            "client_port", "sasl_method", "sasl_username", "sasl_sender"})
KNOWN_MACROS = RCPT_MACROS | MESSAGE_MACROS
_NAME = re.compile(r"[A-Za-z0-9_]+")


def _closing(text: str, start: int, open_ch: str, close_ch: str) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_ch:
            depth += 1
        elif text[i] == close_ch:
            depth -= 1
            if depth == 0:
                return i
    raise MacroError(f"unbalanced {open_ch} in: {text}")


def _braced(text: str) -> tuple[str, str]:
    """"{a}:{b}" -> ("a", "b"); "{a}" -> ("a", None-as-"")."""
    end = _closing(text, 0, "{", "}")
    first, rest = text[1:end], text[end + 1:].strip()
    if not rest:
        return first, ""
    if rest[0] != ":" or not rest[1:].strip().startswith("{"):
        raise MacroError(f"bad conditional text: {text}")
    rest = rest[1:].strip()
    end2 = _closing(rest, 0, "{", "}")
    if rest[end2 + 1:].strip():
        raise MacroError(f"bad conditional text: {text}")
    return first, rest[1:end2]


def expand_macros(text: str, lookup: Callable[[str], str], names: set[str] | None = None) -> str:
    """Expand $name ${name} $(name) ${name?x} ${name:x} ${name?{x}:{y}} $$.

    lookup(name) -> value, or raises MacroError for an unknown name.
    names, when given, collects every macro name used (also in the
    untaken branch of a conditional): pipe's scan for recipient macros.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$":
            j = text.find("$", i)
            j = n if j < 0 else j
            out.append(text[i:j])
            i = j
            continue
        if i + 1 >= n:
            raise MacroError(f"$ at the end of: {text}")
        c2 = text[i + 1]
        if c2 == "$":
            out.append("$")
            i += 2
            continue
        if c2 in "{(":
            close = "}" if c2 == "{" else ")"
            end = _closing(text, i + 1, c2, close)
            inner = text[i + 2:end]
            i = end + 1
            if c2 == "{" and inner.lstrip().startswith("{"):
                out.append(_relational(inner.strip(), lookup, names))
                continue
            m = _NAME.match(inner)
            if not m:
                raise MacroError(f"bad macro name in: ${c2}{inner}{close}")
            name, rest = m.group(0), inner[m.end():]
            value = lookup(name)
            if names is not None:
                names.add(name)
            if not rest:
                out.append(value)
                continue
            op, body = rest[0], rest[1:]
            if op not in "?:":
                raise MacroError(f"bad macro syntax: ${c2}{inner}{close}")
            if body.lstrip().startswith("{"):
                yes, no = _braced(body.strip())
                if op == ":" and no:
                    raise MacroError(f"bad macro syntax: ${c2}{inner}{close}")
                if op == ":":
                    yes, no = "", yes
            else:
                yes, no = (body, "") if op == "?" else ("", body)
            if names is not None:        # scan both branches
                expand_macros(yes, lookup, names)
                expand_macros(no, lookup, names)
            out.append(expand_macros(yes if value else no, lookup, names))
            continue
        m = _NAME.match(text, i + 1)
        if not m:
            raise MacroError(f"bad macro syntax in: {text}")
        value = lookup(m.group(0))
        if names is not None:
            names.add(m.group(0))
        out.append(value)
        i = m.end()
    return "".join(out)


_REL_OPS = ("==", "!=", "<=", ">=", "<", ">")


def _take_braced(text: str) -> tuple[str, str]:
    """"{a} rest" -> ("a", "rest") with nested braces."""
    if not text.startswith("{"):
        raise MacroError(f"expected {{ in: {text}")
    end = _closing(text, 0, "{", "}")
    return text[1:end], text[end + 1:].lstrip()


def _relational(inner: str, lookup, names) -> str:
    """postconf(5) (Postfix 3.0): ${{text1} op {text2} ? {text3} : {text4}},
    op one of == != < <= > >= (the last four compare numbers)."""
    a, rest = _take_braced(inner)
    op = next((o for o in _REL_OPS if rest.startswith(o)), None)
    if op is None:
        raise MacroError(f"bad relational operator in: ${{{inner}}}")
    b, rest = _take_braced(rest[len(op):].lstrip())
    if not rest.startswith("?"):
        raise MacroError(f"missing ? in: ${{{inner}}}")
    yes, rest = _take_braced(rest[1:].lstrip())
    no = ""
    if rest:
        if not rest.startswith(":"):
            raise MacroError(f"missing : in: ${{{inner}}}")
        no, rest = _take_braced(rest[1:].lstrip())
        if rest:
            raise MacroError(f"text after the conditional in: ${{{inner}}}")
    left, right = expand_macros(a, lookup, names), expand_macros(b, lookup, names)
    if op in ("==", "!="):
        truth = (left == right) == (op == "==")
    else:
        try:
            x, y = int(left), int(right)
        except ValueError:
            if names is None:
                raise MacroError(f"non-numeric operand for {op}: {left!r} {right!r}") from None
            x = y = 0          # scanning for macro names only: any branch will do
        truth = {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
    if names is not None:
        expand_macros(yes, lookup, names)
        expand_macros(no, lookup, names)
    return expand_macros(yes if truth else no, lookup, names)


@dataclass
class MacroValues:
    """Everything a macro can name for one request (recipient ones per rcpt)."""
    message: dict[str, str]
    recipients: list[dict[str, str]] = field(default_factory=list)


def _split_rcpt(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, "")


def recipient_values(address: str, orig: str, flags: str, delimiters: str) -> dict[str, str]:
    """pipe.c expand_argv(): the per-recipient macros, after h, q and u."""
    from pfy.tables.search import split_addr

    def full(addr: str) -> str:
        local, domain = _split_rcpt(addr)
        if "u" in flags:
            local = local.lower()
        if "h" in flags:
            domain = domain.lower()
        joined = local + ("@" + domain if "@" in addr else "")
        return quote_822_local(joined) if "q" in flags and joined else joined

    local, domain = _split_rcpt(address)
    if "u" in flags:
        local = local.lower()
    if "h" in flags:
        domain = domain.lower()
    split = split_addr(local, delimiters)
    user, ext = (split[0], split[2]) if split else (local, "")
    return {"recipient": full(address), "original_recipient": full(orig or address),
            "mailbox": local, "user": user, "extension": ext, "domain": domain}


def message_values(req: DeliveryRequest, attrs: PipeAttrs) -> dict[str, str]:
    sender = req.sender or attrs.null_sender
    if sender and "q" in attrs.flags:
        sender = quote_822_local(sender)
    nexthop = req.nexthop.lower() if "h" in attrs.flags else req.nexthop
    c = req.client
    return {"sender": sender, "nexthop": nexthop, "size": str(req.data_size),
            "queue_id": req.queue_id, "client_address": c.addr, "client_hostname": c.name,
            "client_helo": c.helo, "client_protocol": c.proto, "client_port": c.port,
            "sasl_method": c.sasl_method, "sasl_username": c.sasl_username,
            "sasl_sender": c.sasl_sender}


def expand_argv(command: list[str], values: MacroValues) -> list[str]:
    """The command's argv: arguments with recipient macros repeat per
    recipient, the others expand once (pipe.c expand_argv())."""
    def scan_lookup(name: str) -> str:
        if name not in KNOWN_MACROS:
            raise MacroError(f"unknown macro name: {name}")
        return "x"             # any non-empty value: both branches are scanned

    out: list[str] = []
    for arg in command:
        used: set[str] = set()
        expand_macros(arg, scan_lookup, used)
        if used & RCPT_MACROS:
            for rv in values.recipients:
                out.append(expand_macros(arg, lambda n, rv=rv: rv.get(n, values.message.get(n, ""))))
        else:
            out.append(expand_macros(arg, lambda n: values.message.get(n, "")))
    return out


# -- exit status -> delivery status (Postfix global/sys_exits.c: pfy.dsn.sys_exits) --

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
# How much command output goes into the reason (Postfix keeps one line's
# worth; the reason also ends up in bounce messages and defer logs).
OUTPUT_LIMIT = 1024


def clean_output(data: bytes) -> str:
    """Command output for a log line: printable, whitespace runs as one space."""
    text = data[:OUTPUT_LIMIT].decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() or ch in " \t\n\r" else "?" for ch in text)
    return " ".join(text.split())


def command_status(code: int, output: str, command: str) -> tuple[str, str]:
    """(dsn, reason) for a command that did not exit 0; dsn class 4 = defer.

    code < 0 is death by signal -code (subprocess's convention)."""
    suffix = f". Command output: {output}" if output else ""
    if code < 0:
        return "4.3.0", f'Command died with signal {-code}: "{command}"{suffix}'
    m = _ENHANCED.match(output)
    if m:                 # pipe(8): the command's own enhanced status wins
        dsn, text = m.group(0), output[m.end():].strip()
        if dsn[0] == "2":
            dsn = "5" + dsn[1:]        # a failed command is never a success
        return dsn, text or output
    if sys_exits_code(code):
        detail = sys_exits_detail(code)
        return detail.dsn, detail.text + suffix
    return "5.3.0", f'Command died with status {code}: "{command}"{suffix}'


# -- message copy (Postfix mail_copy() with pipe's flags) -------------------------

def copy_records(records: Iterable[tuple[int, bytes]], attrs: PipeAttrs, sender: str,
                 rcpt: RequestRecipient | None, now: float) -> Iterator[bytes]:
    """The bytes the command reads: envelope lines the flags ask for, the
    content with eol= line ends, "." and ">From " quoting, B's blank line."""
    flags, eol = attrs.flags, attrs.eol

    def enc(text: str) -> bytes:
        return text.encode("utf-8", "surrogateescape")
    if "F" in flags:
        yield from_line(sender, now).rstrip(b"\n") + eol
    if "R" in flags:
        yield b"Return-Path: <" + enc(quote_822_local(sender)) + b">" + eol
    if "O" in flags and rcpt is not None:
        yield b"X-Original-To: " + enc(quote_822_local(rcpt.orig_rcpt or rcpt.address)) + eol
    if "D" in flags and rcpt is not None:
        yield b"Delivered-To: " + enc(quote_822_local(rcpt.address)) + eol
    at_start = True
    buf = bytearray()
    for rtype, data in records:
        if rtype not in (REC_NORM, REC_CONT):
            raise ValueError(f"bad record type {rtype} in message content")
        if at_start:
            if "." in flags and data.startswith(b"."):
                buf += b"."
            if ">" in flags and data.startswith(b"From "):
                buf += b">"
        buf += data
        at_start = rtype == REC_NORM
        if at_start:
            buf += eol
        if len(buf) >= 65536:
            yield bytes(buf)
            buf.clear()
    if not at_start:
        buf += eol
    if "B" in flags:
        buf += eol
    if buf:
        yield bytes(buf)


# -- running the command -----------------------------------------------------------

@dataclass
class RunResult:
    code: int | None           # exit status, -signal, None when timed out
    output: bytes
    write_error: str = ""      # writing stdin failed (not EPIPE)


def run_command(argv: list[str], chunks: Iterable[bytes], *, time_limit: float,
                env: dict[str, str], cwd: str, uid: int | None, gid: int | None,
                chroot: str = "") -> RunResult:
    """Start argv (no shell) in its own process group, feed it chunks,
    collect up to OUTPUT_LIMIT bytes of output; SIGKILL the group at
    time_limit.  OSError from exec (no such file, ...) propagates."""
    popen_ids: dict = {}
    preexec: Callable[[], None] | None = None
    if chroot:
        def _jail() -> None:              # runs in the child before exec
            os.chroot(chroot)
            os.chdir(cwd or "/")
            if gid is not None:
                os.setgroups([gid])
                os.setgid(gid)
            if uid is not None:
                os.setuid(uid)
        preexec = _jail
    elif uid is not None:
        popen_ids = dict(user=uid, group=gid, extra_groups=[gid])
    deadline = time.monotonic() + time_limit
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.STDOUT, env=env,
                                cwd=None if chroot else (cwd or None), close_fds=True,
                                start_new_session=True, preexec_fn=preexec, **popen_ids)
        timed_out = False
        write_error = ""
        fd = proc.stdin.fileno()
        os.set_blocking(fd, False)
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        timed_out = True
                        break
                    _, w, _ = select.select([], [fd], [], left)
                    if not w:
                        continue
                    try:
                        view = view[os.write(fd, view):]
                    except BlockingIOError:
                        continue
                if timed_out:
                    break
        except BrokenPipeError:
            pass                      # pipe(8): the command need not read it all
        except OSError as exc:
            write_error = exc.strerror or str(exc)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if not timed_out:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            # pipe_command.c: kill the child and its offspring, then reap.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        out.seek(0)
        output = out.read(OUTPUT_LIMIT)
    return RunResult(None if timed_out else proc.returncode, output, write_error)


# -- one request ---------------------------------------------------------------

class PipeAgent:
    def __init__(self, cfg, attrs: PipeAttrs, service: str, queue_root: str,
                 euid: int | None = None, runner=run_command):
        self.cfg = cfg
        self.attrs = attrs
        self.service = service
        self.queue_root = queue_root
        self.euid = os.geteuid() if euid is None else euid
        self.runner = runner
        self.time_limit = cfg[f"{service}_time_limit"] if _param_ok(cfg, service) \
            else cfg.command_time_limit

    def handle(self, req: DeliveryRequest) -> DeliveryReply:
        return deliver_queue_file(req, self.queue_root, self.service, self.deliver,
                                  soft_bounce_on=self.cfg.soft_bounce)

    def _all(self, s: AgentSession, dsn: str, reason: str) -> None:
        for rcpt in s.request.recipients:
            s.status(rcpt, dsn, reason, self.service)

    def _probe(self, s: AgentSession, command: str) -> None:
        """sendmail -bv (pipe.c, DEL_REQ_TRACE_ONLY): the command is not
        run; deliverable when it exists and is executable (inside
        chroot= when set), else the reason exec would give."""
        path = command
        if not os.path.isabs(path):
            path = shutil.which(command, path=os.environ.get("PATH", os.defpath)) or ""
        full = os.path.join(self.attrs.chroot, path.lstrip("/")) if self.attrs.chroot and path \
            else path
        if not full or not os.path.exists(full):
            return self._all(s, "4.3.0", f'Command failed: No such file or directory: "{command}"')
        if os.path.isdir(full) or not os.access(full, os.X_OK):
            return self._all(s, "4.3.0", f'Command failed: Permission denied: "{command}"')
        for rcpt in s.request.recipients:
            s.sent(rcpt, f"delivers to command: {command}", self.service)

    def deliver(self, s: AgentSession, reader: QueueFileReader) -> None:
        req, attrs = s.request, self.attrs
        rcpts = req.recipients
        for flag in "DO":
            if flag in attrs.flags and len(rcpts) > 1:
                log.warning(f"pipe flag `{flag}' requires "
                            f"{self.service}_destination_recipient_limit = 1")
                return self._all(s, "4.3.5", "mail system configuration error")
        if attrs.size_limit and req.data_size > attrs.size_limit:
            return self._all(s, "5.2.3", "message too large")
        if "D" in attrs.flags and \
                rcpts[0].address.lower() in delivered_to_set(reader.content_lines()):
            return self._all(s, "5.4.6", f"mail forwarding loop for {rcpts[0].address}")
        values = MacroValues(message_values(req, attrs), [
            recipient_values(r.address, r.orig_rcpt, attrs.flags, self.cfg.recipient_delimiter)
            for r in rcpts])
        try:
            argv = expand_argv(attrs.command, values)
        except MacroError as exc:
            log.warning(f"{self.service}: {exc}")
            return self._all(s, "4.3.5", "mail system configuration error")
        if s.verify_only:
            return self._probe(s, argv[0])
        sender = req.sender or attrs.null_sender
        env = {k: os.environ[k] for k in self.cfg.export_environment if k in os.environ}
        as_root = self.euid == 0 and os.geteuid() == 0
        cwd = attrs.directory or self.cfg.queue_directory
        chunks = copy_records(reader.content_records(), attrs, sender,
                              rcpts[0] if len(rcpts) == 1 else None, time.time())
        try:
            res = self.runner(argv, chunks, time_limit=self.time_limit, env=env, cwd=cwd,
                              uid=attrs.uid if as_root else None,
                              gid=attrs.gid if as_root else None, chroot=attrs.chroot)
        except OSError as exc:
            # exec failed before the command ran (no such file, permission,
            # bad directory=): the admin can fix it, so keep the mail.
            return self._all(s, "4.3.0", f'Command failed: {exc.strerror}: "{argv[0]}"')
        output = clean_output(res.output)
        if res.code is None:
            suffix = f". Command output: {output}" if output else ""
            # pipe_command.c: PIPE_STAT_BOUNCE, 5.3.0.
            return self._all(s, "5.3.0", f'Command time limit exceeded: "{argv[0]}"{suffix}')
        if res.code == 0:
            if res.write_error:
                return self._all(s, "4.3.0", f'Command failed: {res.write_error}: "{argv[0]}"')
            # pipe.c eval_command_status(): "delivered via %s service"
            for rcpt in rcpts:
                s.sent(rcpt, f"delivered via {self.service} service", self.service)
            return
        dsn, reason = command_status(res.code, output, argv[0])
        self._all(s, dsn, reason)


def _param_ok(cfg, service: str) -> bool:
    try:
        cfg[f"{service}_time_limit"]
        return True
    except (KeyError, AttributeError):
        return False


# -- the skeleton glue ---------------------------------------------------------

def setup(ctx) -> None:
    # Before the jail: recipient_values() needs pfy.tables.search (and with
    # it pfy.tables and pfy.tables._base), which a chroot may hide.
    import pfy.tables.search  # noqa: F401

    # pipe.c parses its attributes at the first request and dies there,
    # so that qmgr sees the failure; we parse now and keep the error for
    # the first request (a fatal before serving would leave qmgr's
    # connection waiting in the listen queue).
    try:
        attrs = parse_attrs(ctx.options.service_args, ctx.cfg.mail_owner)
    except Fatal as exc:
        ctx.data["error"] = str(exc)
        return
    ctx.data["agent"] = PipeAgent(ctx.cfg, attrs, ctx.service, ctx.queue_directory)
    if os.geteuid() != 0 and attrs.uid != os.geteuid():
        log.info(f"running without root privileges: commands run as uid {os.geteuid()}, "
                 f"not as user={attrs.user}")


def serve_one(ctx, sock) -> None:
    def handle(req: DeliveryRequest) -> DeliveryReply:
        if "error" in ctx.data:
            raise Fatal(ctx.data["error"])      # after reading: see setup()
        agent: PipeAgent = ctx.data["agent"]
        agent.queue_root = ctx.queue_directory
        return agent.handle(req)
    serve_request(sock, handle, timeout=ctx.cfg.ipc_timeout)


def main() -> None:
    from pfy.server import single
    single.serve(serve_one, pre_jail=setup, service_args=True, program="pipe")
