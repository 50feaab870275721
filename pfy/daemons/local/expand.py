"""Alias, .forward and :include: expansion for local(8): Postfix's
local/alias.c, dotforward.c, include.c, token.c, resolve.c and the
delivery switch of recipient.c, as one recursive walk per recipient.

One queue-file recipient (the "top") may expand into many deliveries:
mailboxes, files, commands, and addresses forwarded in a new queue file.
Every one of them is logged on its own line, as Postfix does
(``to=<alice@host>, orig_to=<postmaster@host> ... (delivered to mailbox)``),
and the top recipient's fate is the sum of them: any deferral defers it
(the whole expansion is tried again later; a file or command may then see
the message twice, as local(8) BUGS says), else a bounce bounces it, else
it is done.  ``Expansion`` collects those results and is handed to the
mailbox, command and file writers in the place of the request's
AgentSession (it has the same reporting methods), through ``Branch``,
which also carries the envelope sender of that part of the expansion
(owner-NAME aliases replace it).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

from pfy import log
from pfy.ipc.delivery import (BOUNCED, DEFERRED, DELIVERABLE, SENT, UNDELIVERABLE,
                              RecipientResult, soft_bounce)

__all__ = ["State", "Expansion", "Branch", "split_targets", "expand_forward_path",
           "EXPAND_ALIAS", "EXPAND_FORWARD", "EXPAND_INCLUDE", "ALIAS_LOOP_LIMIT"]

# local.h EXPAND_TYPE_*: what kind of expansion a |command or /file came
# from; allow_mail_to_commands / allow_mail_to_files list these names.
EXPAND_ALIAS, EXPAND_FORWARD, EXPAND_INCLUDE = "alias", "forward", "include"
# alias.c: "bail out when nesting reaches some unreasonable depth".
ALIAS_LOOP_LIMIT = 100


@dataclass
class State:
    """Postfix's LOCAL_STATE + DELIVER_ATTR + USER_ATTR, copied at each level
    (C passes the struct by value, so a child's changes never leak back)."""
    sender: str                       # envelope sender of this branch
    orig: str                         # orig_to= of the deliveries below
    delivered: str                    # the Delivered-To address (frozen_delivered_to)
    level: int = 0
    exp_type: str | None = None       # EXPAND_*: where a |command or /file came from
    exp_from: str | None = None       # the alias/local part being expanded
    owner: str | None = None          # owner- alias address or .forward user
    unmatched: str = ""               # extension to splice into addresses
    rights: object | None = None      # User whose rights |command and /file use
    no_alias: bool = False            # "\user": mailbox only

    def child(self, **changes) -> "State":
        return dataclasses.replace(self, level=self.level + 1, **changes)


def split_targets(text: str) -> list[str]:
    """The right-hand side of an alias (or a .forward / :include: line)
    split at top-level commas, as tok822_parse() does: quotes, <> and ()
    protect commas; a target that is one quoted string loses its quotes
    ("|cmd arg" -> |cmd arg).  Comments in parentheses are dropped."""
    out: list[str] = []
    cur: list[str] = []
    quote = False
    depth = 0          # () comment nesting
    angle = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\" and i + 1 < len(text):
                cur.append(text[i:i + 2])
                i += 2
                continue
            if ch == '"':
                quote = False
            cur.append(ch)
        elif depth:
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
        elif ch == '"':
            quote = True
            cur.append(ch)
        elif ch == "(":
            depth = 1
        elif ch == "<":
            angle += 1
            cur.append(ch)
        elif ch == ">":
            angle = max(0, angle - 1)
            cur.append(ch)
        elif ch == "," and not angle:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    targets = []
    for item in out:
        item = item.strip()
        if not item:
            continue
        if "<" in item and item.endswith(">") and not item.startswith(("|", '"|')):
            item = item[item.rindex("<") + 1:-1].strip()     # phrase <addr>
        if len(item) >= 2 and item[0] == '"' and item[-1] == '"' and '"' not in item[1:-1].replace('\\"', ""):
            item = item[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif item.startswith('"') and '"@' in item:
            pass                                                 # "a b"@domain stays quoted
        targets.append(item)
    return targets


def expand_forward_path(template: str, values: dict[str, str],
                        allowed: str) -> tuple[str | None, bool]:
    """local_expand() for one forward_path entry: $name, ${name},
    ${name?text}, ${name:text}; characters outside forward_expansion_filter
    become "_" (in values, not in the template).  Returns (path, used_ext):
    path None when a plainly used $name is empty (MAC_PARSE_UNDEF: skip
    the entry), used_ext when a non-empty $extension went into the path
    (LOCAL_EXP_EXTENSION_MATCHED)."""
    ok = set(allowed)
    out: list[str] = []
    used_ext = False
    i = 0
    n = len(template)
    while i < n:
        ch = template[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        j = i + 1
        if template[j] == "{":
            end = template.find("}", j)
            if end < 0:
                return None, False
            body = template[j + 1:end]
            i = end + 1
            name, op, text = body, "", ""
            for k, c in enumerate(body):
                if c in "?:":
                    name, op, text = body[:k], c, body[k + 1:]
                    break
        else:
            k = j
            while k < n and (template[k].isalnum() or template[k] == "_"):
                k += 1
            name, op, text = template[j:k], "", ""
            i = k
        value = values.get(name.lower(), "")
        if op == "?":
            if value:
                out.append(text.strip("{}"))
            continue
        if op == ":":
            if not value:
                out.append(text.strip("{}"))
            continue
        if not value:
            return None, False
        if name.lower() == "extension":
            used_ext = True
        out.append("".join(c if c in ok else "_" for c in value))
    return "".join(out), used_ext


class Expansion:
    """The results of one top-level recipient's expansion, and the
    addresses waiting to be forwarded in a new queue file."""

    def __init__(self, session, top, relay: str, soft_bounce_on: bool, clock=time.time):
        self.session = session
        self.top = top
        self.relay = relay
        self.soft = soft_bounce_on
        self.clock = clock
        self.results: list[tuple[str, str, str, str]] = []   # status, dsn, reason, address
        self.dups: set = set()                                # been_here()
        self.forwards: dict[tuple[str, str], list] = {}      # (sender, delivered) -> [rcpt]
        self.loop_info: set[str] | None = None               # Delivered-To: values
        self.expanded = False          # an alias or .forward replaced the top address

    @property
    def verify_only(self) -> bool:
        """A trace-only request (sendmail -bv): probe, never deliver."""
        return bool(getattr(self.session, "verify_only", False))

    def branch(self, sender: str) -> "Branch":
        return Branch(self, sender)

    def record(self, rcpt, status: str, dsn: str, reason: str, relay: str) -> None:
        s = self.session
        delay, delays = s.delays.line(self.clock())
        shown = status
        if self.verify_only:        # Postfix's probe lines: status=deliverable
            shown = DELIVERABLE if status == SENT else UNDELIVERABLE
        log.log_delivery(queue_id=s.request.queue_id, to=rcpt.address,
                         orig_to=rcpt.orig_rcpt, relay=relay, delay=delay, delays=delays,
                         dsn=dsn, status=shown, reason=reason)
        self.results.append((status, dsn, reason, rcpt.address))

    def settle(self) -> None:
        """Report the top recipient to qmgr: deferred if any part was,
        else bounced if any part was, else done (marked now, as
        AgentSession.sent() would)."""
        s, top = self.session, self.top
        verify = self.verify_only
        for want in (DEFERRED, BOUNCED):
            for status, dsn, reason, addr in self.results:
                if status == want:
                    if verify and addr.lower() != top.address.lower():
                        reason = f"<{addr}>: {reason}"
                    s.passed(top, RecipientResult(top.offset, top.address, status, dsn,
                                                  reason, False,
                                                  action=UNDELIVERABLE if verify else ""))
                    return
        marked = False
        if s.queue_fd is not None and top.offset >= 0 and not verify:
            from pfy.queue.queue_file import mark_done
            mark_done(s.queue_fd, top.offset)
            marked = True
        if verify:
            # The probe's answer names every address the expansion reached
            # (Postfix's trace lists them one by one; qmgr takes one result
            # per queue-file recipient here).
            reason = "; ".join(
                r if a.lower() == top.address.lower() else f"<{a}>: {r}"
                for _st, _dsn, r, a in self.results) or "delivers to mailbox"
            action = DELIVERABLE
        else:
            reason = self.results[0][2] if self.results else "delivered"
            # RFC 3464 2.3.3: an alias or .forward that handed the mail on
            # to other addresses "expanded" it (success notices say so).
            action = "expanded" if self.expanded else ""
        s.passed(top, RecipientResult(top.offset, top.address, SENT, "2.0.0", reason, marked,
                                      action=action))


class Branch:
    """What the delivery code sees as its session for one part of an
    expansion: AgentSession's reporting methods, and a request whose
    sender is this branch's envelope sender."""

    def __init__(self, exp: Expansion, sender: str):
        self.exp = exp
        req = exp.session.request
        self.request = req if sender == req.sender else dataclasses.replace(req, sender=sender)

    @property
    def verify_only(self) -> bool:
        return self.exp.verify_only

    def sent(self, rcpt, reason: str, relay: str, dsn: str = "2.0.0") -> None:
        self.exp.record(rcpt, SENT, dsn, reason, relay)

    def defer(self, rcpt, dsn: str, reason: str, relay: str) -> None:
        if not dsn.startswith("4"):
            dsn = "4" + dsn[1:]
        self.exp.record(rcpt, DEFERRED, dsn, reason, relay)

    def bounce(self, rcpt, dsn: str, reason: str, relay: str) -> None:
        if self.exp.soft:
            self.defer(rcpt, soft_bounce(dsn), reason, relay)
            return
        self.exp.record(rcpt, BOUNCED, dsn, reason, relay)

    def status(self, rcpt, dsn: str, reason: str, relay: str) -> None:
        if dsn.startswith("2"):
            self.sent(rcpt, reason, relay, dsn)
        elif dsn.startswith("5"):
            self.bounce(rcpt, dsn, reason, relay)
        else:
            self.defer(rcpt, dsn, reason, relay)

    def passed(self, rcpt, result) -> None:
        """Another agent (mailbox_transport) delivered and logged it."""
        self.exp.results.append((result.status, result.dsn, result.reason, rcpt.address))

    def reported(self, rcpt) -> bool:
        return False


def sub_recipient(top, address: str, orig: str):
    """A RequestRecipient for an expanded address: no queue-file offset
    (only the top recipient is ever marked), the top's original address."""
    return dataclasses.replace(top, address=address, orig_rcpt=orig, offset=-1)


@dataclass
class Pending:
    rcpt: object
    state: State
    extra: dict = field(default_factory=dict)
