"""The smtpd access engine: Postfix's smtpd_check.c, restriction by restriction.

Texts, codes and evaluation order are Postfix 3.7's (smtpd_check.c,
postconf(5), access(5), SMTPD_ACCESS_README, SMTPD_POLICY_README).  Each
restriction returns DUNNO (go on), OK (permit: stop this list) or REJECT
(stop, reply sent).  A reject is logged here, as smtpd_check_reject() does.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
from dataclasses import dataclass

from pfy import log
from pfy.access.facts import Action, SessionFacts, Stage, Verdict
from pfy.access.netlist import NetworkList
from pfy.access.policy_client import PolicyClient, PolicyError, parse_policy_arg
from pfy.dns import DnsStatus, Resolver, valid_hostaddr, valid_hostname
from pfy.dns.dnsbl import DnsblError, parse_dnsbl, query_dnsbl
from pfy.ipc.verify_client import STAT_BOUNCE as VRFY_BOUNCE, STAT_DEFER as VRFY_DEFER
from pfy.ipc.verify_client import STAT_OK as VRFY_OK, STAT_TODO as VRFY_TODO, VerifyClient
from pfy.message.domains import MatchList
from pfy.smtp.replies import Reply
from pfy.tables import TableError, TableTempFail, open_table
from pfy.tables import search

__all__ = ["AccessPolicy", "AccessConfigError", "format_whatsup"]

DUNNO, OK, REJECT = 0, 1, 2

# smtpd_check.c reply classes.
NAME_CLIENT = "Client host"
NAME_REV_CLIENT = "Unverified Client host"
NAME_HELO = "Helo command"
NAME_SENDER = "Sender address"
NAME_RECIPIENT = "Recipient address"
NAME_ETRN = "Etrn command"
NAME_DATA = "Data command"
NAME_EOD = "End-of-data"
NAME_CCERT = "Client certificate"
NAME_SASL = "SASL login name"
# smtpd_dsn_fix.h: the sender's DSN in reject_unverified_sender replies.
SND_DSN = "4.1.7"

# smtpd_check.c smtpd_check_init(): at least one of these in the relay or
# recipient restrictions, or Postfix refuses to start.
RCPT_REQUIRED = ("reject_unauth_destination", "defer_unauth_destination", "reject",
                 "defer", "defer_if_permit", "check_relay_domains")
# Postfix 2.10 default, used when compatibility_level < 1 left the relay
# restrictions unset: Postfix would then only log "using backwards-compatible
# default setting"; pfy never runs as an open relay, so it applies them.
SAFE_RELAY_DEFAULT = ["permit_mynetworks", "permit_sasl_authenticated", "defer_unauth_destination"]
MAX_RECURSION = 100          # smtpd_check.c "unreasonable recursion"

# Restrictions taking one argument (a table, a DNS list or a policy server).
_TABLE_ARG = {
    "check_client_access": "client", "check_reverse_client_hostname_access": "reverse",
    "check_helo_access": "helo", "check_sender_access": "sender",
    "check_recipient_access": "recipient", "check_etrn_access": "etrn",
    "check_sasl_access": "sasl", "check_ccert_access": "ccert",
}
_DNS_ARG = {"reject_rbl_client", "reject_rhsbl_client", "reject_rhsbl_reverse_client",
            "reject_rhsbl_sender", "reject_rhsbl_helo", "reject_rhsbl_recipient",
            "permit_dnswl_client", "permit_rhswl_client"}
_SIMPLE = {
    "permit", "reject", "defer", "defer_if_permit", "defer_if_reject", "warn_if_reject",
    "permit_mynetworks", "permit_sasl_authenticated", "permit_auth_destination",
    "reject_unauth_destination", "defer_unauth_destination", "check_relay_domains",
    "reject_unauth_pipelining", "reject_unknown_client_hostname", "reject_unknown_client",
    "reject_unknown_reverse_client_hostname", "reject_invalid_helo_hostname",
    "reject_invalid_hostname", "reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname",
    "reject_unknown_helo_hostname", "reject_unknown_hostname", "reject_non_fqdn_sender",
    "reject_non_fqdn_recipient", "reject_unknown_sender_domain",
    "reject_unknown_recipient_domain", "reject_unlisted_sender", "reject_unlisted_recipient",
    "check_recipient_maps", "reject_sender_login_mismatch",
    "reject_authenticated_sender_login_mismatch", "reject_known_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch", "permit_tls_clientcerts",
    "permit_tls_all_clientcerts", "reject_plaintext_session", "permit_inet_interfaces",
    "permit_naked_ip_address", "reject_multi_recipient_bounce",
    "reject_unverified_recipient", "reject_unverified_sender",
}

_CODE_RE = re.compile(r"^([2-5])(\d\d)(?:[ \t]+(.*))?$", re.S)
_DSN_RE = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}$")


class AccessConfigError(Exception):
    """What Postfix makes fatal at smtpd start (str names the parameter)."""


@dataclass
class Step:
    name: str
    arg: object = None        # opened table, DnsblSpec, PolicyClient
    text: str = ""            # argument as written


def format_whatsup(whatsup: str, where: str, facts: SessionFacts, text: str,
                   sender: str | None = None, recipient: str | None = None) -> str:
    """smtpd_check.c log_whatsup(): "QID: reject: RCPT from host[addr]: TEXT;
    from=<s> to=<r> proto=ESMTP helo=<h>" (from/to/helo only when known)."""
    out = f"{facts.queue_id or 'NOQUEUE'}: {whatsup}: {where} from {facts.namaddr}: {text};"
    if sender is not None:
        out += f" from=<{sender}>"
    if recipient is not None:
        out += f" to=<{recipient}>"
    if facts.protocol:
        out += f" proto={facts.protocol}"
    if facts.helo_name is not None:
        out += f" helo=<{facts.helo_name}>"
    return out


class _Unwind(Exception):
    """Postfix's longjmp(smtpd_check_buf): a lookup failure ends the list."""

    def __init__(self, status: int):
        self.status = status


class _Ctx:
    """One evaluation (one smtpd_check_xxx call)."""

    def __init__(self, facts: SessionFacts, stage: Stage, where: str, defer_if_permit=None):
        self.facts = facts
        self.stage = stage
        self.where = where
        self.warn_if_reject = 0
        self.recursion = 0
        self.defer_if_reject: Reply | None = None
        self.defer_if_permit: Reply | None = defer_if_permit
        self.reply: Reply | None = None
        self.actions: list[Action] = []
        self.list_kind = ""           # "relay"/"recipient" for permit_dnswl safety
        self.rcpt_maps_checked = False
        self.sender_maps_checked = False

    @property
    def log_sender(self):
        return None if self.stage in (Stage.CONNECT, Stage.HELO, Stage.ETRN) else self.facts.sender

    @property
    def log_recipient(self):
        if self.stage in (Stage.RCPT, Stage.VRFY):
            return self.facts.recipient
        if self.stage in (Stage.DATA, Stage.END_OF_DATA) and self.facts.recipient_count == 1:
            return self.facts.recipient
        return None


def _fix_dsn(dsn: str, code: int) -> str:
    """smtpd_check_reject(): the DSN class follows the reply code."""
    first = str(code)[0]
    return first + dsn[1:] if dsn and dsn[0] != first else dsn


def _split_dsn(text: str, default: str) -> tuple[str, str]:
    """"5.7.1 text" -> ("5.7.1", "text"); dsn_split()."""
    word, _, rest = text.partition(" ")
    if _DSN_RE.match(word):
        return word, rest.lstrip()
    return default, text


def _expand(template: str, lookup, filt: str) -> str:
    """mac_expand() subset for RBL reply templates: $name ${name}
    ${name?text} ${name:text}; values outside smtpd_expansion_filter become
    '_' (smtpd_expand_filter)."""
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt in "{(":
            close = "}" if nxt == "{" else ")"
            depth, j = 1, i + 2
            while j < n and depth:
                if template[j] == nxt:
                    depth += 1
                elif template[j] == close:
                    depth -= 1
                j += 1
            inner = template[i + 2:j - 1]
            i = j
            m = re.match(r"^([A-Za-z0-9_]+)(?:([?:])(.*))?$", inner, re.S)
            if not m:
                continue
            value = lookup(m.group(1))
            if m.group(2) == "?":
                if value:
                    out.append(_expand(m.group(3), lookup, filt))
            elif m.group(2) == ":":
                if not value:
                    out.append(_expand(m.group(3), lookup, filt))
            else:
                out.append(_filter(value or "", filt))
            continue
        m = re.match(r"[A-Za-z0-9_]+", template[i + 1:])
        if not m:
            out.append(ch)
            i += 1
            continue
        out.append(_filter(lookup(m.group(0)) or "", filt))
        i += 1 + len(m.group(0))
    return "".join(out)


def _filter(value: str, allowed: str) -> str:
    return "".join(c if c in allowed else "_" for c in value)


def _unescape(text: str) -> str:
    """Postfix unescape() for smtpd_expansion_filter: \\t \\40 \\\\."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            m = re.match(r"[0-7]{1,3}", text[i + 1:])
            if m:
                out.append(chr(int(m.group(0), 8)))
                i += 1 + len(m.group(0))
                continue
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


class _StaticResolve:
    """Address classes without trivial-rewrite (unit tests, or no rewrite
    client given): mydestination -> local, virtual_*_domains -> alias or
    virtual, relay_domains -> relay, else default.  Any routing operator
    left in the local part (user@remote, user%remote, remote!user) marks the
    address ROUTED, so it never counts as an authorized destination."""

    def __init__(self, cfg, opener):
        from pfy.ipc.rewrite_client import ResolveReply
        self.R = ResolveReply
        self.mydest = MatchList(cfg.mydestination, opener)
        self.valias = MatchList(cfg.virtual_alias_domains, opener)
        self.vmbox = MatchList(cfg.virtual_mailbox_domains, opener)
        parent = search.parent_style(cfg.parent_domain_matches_subdomains, "relay_domains")
        self.relay = MatchList(cfg.relay_domains, opener, domain=True, parent=parent)
        self.myorigin = cfg.myorigin

    def resolve(self, sender: str, addr: str):
        R = self.R
        local, at, domain = addr.rpartition("@")
        if not at:
            local, domain = addr, self.myorigin
        domain = domain.lower().rstrip(".")
        flags = R.FLAG_ROUTED if any(c in local for c in "@%!") else 0
        if self.mydest.match(domain):
            flags |= R.CLASS_LOCAL
            transport = "local"
        elif self.valias.match(domain):
            flags |= R.CLASS_ALIAS
            transport = "error"
        elif self.vmbox.match(domain):
            flags |= R.CLASS_VIRTUAL
            transport = "virtual"
        elif self.relay.match(domain):
            flags |= R.CLASS_RELAY
            transport = "relay"
        else:
            flags |= R.CLASS_DEFAULT
            transport = "smtp"
        nexthop = "User unknown in virtual alias table" if transport == "error" else domain
        return R(flags, transport, nexthop, f"{local}@{domain}".lower())


class AccessPolicy:
    """All restriction lists of one smtpd process, parsed and opened once."""

    def __init__(self, cfg, resolver: Resolver | None = None, rewrite=None, opener=None,
                 verify=None):
        self.cfg = cfg
        # verify(8) client (reject_unverified_*): connects on first use, so
        # made here, before the jail, and harmless when never used.
        self.verify = verify if verify is not None else VerifyClient(
            os.path.join("private", cfg.address_verify_service_name))
        try:
            self.verify_poll_count = max(1, int(str(cfg.address_verify_poll_count).strip()))
        except (TypeError, ValueError):
            self.verify_poll_count = 3          # postconf -d: ${stress?{1}:{3}}
        self.verify_poll_delay = float(cfg.address_verify_poll_delay)
        self.resolver = resolver if resolver is not None else Resolver.from_environment()
        self._tables: dict[str, object] = {}
        self._opener = opener or self._open_table
        self._policy: dict[str, PolicyClient] = {}
        self._resolve_cache: dict[tuple[str, str], object] = {}
        self.rewrite = rewrite
        self._static = _StaticResolve(cfg, self._opener)
        c = cfg
        self.delay_reject = c.smtpd_delay_reject
        self.parent = search.parent_style(c.parent_domain_matches_subdomains, "smtpd_access_maps")
        self.delimiters = c.recipient_delimiter
        self.double_bounce = c.double_bounce_sender
        self.null_key = c.smtpd_null_access_lookup_key
        self.soft_bounce = c.soft_bounce
        # Read now, before chroot: computed defaults import code lazily.
        self._compat_level = str(c.raw_or_default("compatibility_level") or "0")
        self._mail_version = str(c.mail_version)
        # A "raw" parameter in Postfix (never $-expanded: it contains "$").
        self.expand_filter = _unescape(c.raw_or_default("smtpd_expansion_filter") or "")
        self.mynetworks = NetworkList(c.mynetworks, self._opener,
                                      parent=search.parent_style(c.parent_domain_matches_subdomains, "mynetworks"))
        self.relay_before_rcpt = c.smtpd_relay_before_recipient_restrictions
        # receive_override_options = no_unknown_recipient_checks (input_transp.c
        # INPUT_TRANSP_UNKNOWN_RCPT), typically on the re-injection smtpd
        # after a content filter: smtpd_check.c check_recipient_rcpt_maps()
        # and check_sender_rcpt_maps() return at once, so nothing rejects an
        # unknown recipient or sender (see _check_rcpt_maps).  Lower-cased as
        # pfy.ipc.cleanup_client.input_flags() reads the same parameter.
        self.unknown_rcpt_checks = "no_unknown_recipient_checks" not in {
            o.lower() for o in (c.receive_override_options or ())}
        try:
            self.classes: dict[str, list[Step]] = {}
            names = list(c.smtpd_restriction_classes)
            for name in names:
                raw = c.raw(name)
                if not raw:
                    raise AccessConfigError(f"restriction class `{name}' needs a definition")
                self.classes[name] = None   # placeholder: names known before parsing
            for name in names:
                from pfy.config import split_list
                self.classes[name] = self._parse(split_list(c.expand(c.raw(name))), name)
            self.lists = {
                "client": self._parse(c.smtpd_client_restrictions, "smtpd_client_restrictions"),
                "helo": self._parse(c.smtpd_helo_restrictions, "smtpd_helo_restrictions"),
                "sender": self._parse(c.smtpd_sender_restrictions, "smtpd_sender_restrictions"),
                "recipient": self._parse(c.smtpd_recipient_restrictions, "smtpd_recipient_restrictions"),
                "etrn": self._parse(c.smtpd_etrn_restrictions, "smtpd_etrn_restrictions"),
                "data": self._parse(c.smtpd_data_restrictions, "smtpd_data_restrictions"),
                "eod": self._parse(c.smtpd_end_of_data_restrictions, "smtpd_end_of_data_restrictions"),
            }
            relay = c.smtpd_relay_restrictions
            if not relay and c.raw("smtpd_relay_restrictions") is None and _compat_level(c) < 1:
                relay = SAFE_RELAY_DEFAULT
            self.lists["relay"] = self._parse(relay, "smtpd_relay_restrictions")
            if not (self._has_required(self.lists["recipient"]) or self._has_required(self.lists["relay"])):
                raise AccessConfigError(
                    "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, "
                    "specify at least one working instance of: " + _or_list(RCPT_REQUIRED))
            maps = lambda name: search.Maps([self._opener(s) for s in c[name]])
            self.local_rcpt_maps = maps("local_recipient_maps")
            self.virtual_alias_maps = maps("virtual_alias_maps")
            self.virtual_mailbox_maps = maps("virtual_mailbox_maps")
            self.relay_rcpt_maps = maps("relay_recipient_maps")
            self.canonical_maps = maps("canonical_maps")
            self.rcpt_canonical_maps = maps("recipient_canonical_maps")
            self.sender_canonical_maps = maps("sender_canonical_maps")
            self.sender_login_maps = maps("smtpd_sender_login_maps")
            self.rbl_reply_maps = maps("rbl_reply_maps")
            self.relay_clientcerts = maps("relay_clientcerts")
        except (TableError, OSError, DnsblError, PolicyError) as err:
            raise AccessConfigError(str(err)) from None

    @classmethod
    def from_config(cls, cfg, resolver: Resolver | None = None, rewrite=None, opener=None,
                    verify=None) -> "AccessPolicy":
        return cls(cfg, resolver=resolver, rewrite=rewrite, opener=opener, verify=verify)

    def close(self) -> None:
        for client in self._policy.values():
            client.close()
        self.verify.close()

    # -- configuration ------------------------------------------------
    def _open_table(self, spec: str):
        if spec.startswith("proxy:"):
            spec = spec[len("proxy:"):]   # pfy has no proxymap: open directly, before chroot
        if spec in self._tables:
            return self._tables[spec]
        if spec == "unix:passwd.byname":
            from pfy.access._passwd import PasswdTable
            table = PasswdTable(spec)
        else:
            table = open_table(spec, self.cfg)
        self._tables[spec] = table
        return table

    def _parse(self, words: list[str], param: str) -> list[Step]:
        steps: list[Step] = []
        it = iter(words)
        for word in it:
            name = word.lower() if ":" not in word else word
            if name in _TABLE_ARG or name in _DNS_ARG or name == "check_policy_service":
                arg = next(it, None)
                if arg is None:
                    raise AccessConfigError(f"{param}: restriction {name} requires an argument")
                if name in _TABLE_ARG:
                    steps.append(Step(name, self._opener(arg), arg))
                elif name in _DNS_ARG:
                    steps.append(Step(name, parse_dnsbl(arg), arg))
                else:
                    settings = parse_policy_arg(arg, self.cfg)
                    client = self._policy.get(arg)
                    if client is None:
                        client = self._policy[arg] = PolicyClient(settings)
                    steps.append(Step(name, client, arg))
            elif ":" in word and word.split(":", 1)[0].isidentifier():
                # A bare "type:table": the access map of the list's context.
                steps.append(Step("maptype:mapname", self._opener(word), word))
            else:
                # Unknown names are Postfix's run-time "unknown smtpd
                # restriction" (451 4.3.5); classes resolve at run time.
                if name not in _SIMPLE and word not in self.classes:
                    log.warning('unknown smtpd restriction: "%s" in %s', word, param)
                steps.append(Step(name if name in _SIMPLE else word))
        return steps

    def _has_required(self, steps: list[Step], depth: int = 0) -> bool:
        skip = False
        for step in steps:
            if skip:
                skip = False
                continue
            if step.name == "warn_if_reject":
                skip = True          # has_required(): warn_if_reject X does not count
                continue
            if step.name in RCPT_REQUIRED:
                return True
            sub = self.classes.get(step.name)
            if sub and depth < MAX_RECURSION and self._has_required(sub, depth + 1):
                return True
        return False

    # -- the public entry ---------------------------------------------
    async def check(self, stage: Stage, facts: SessionFacts) -> Verdict:
        where = stage.value
        if stage is Stage.HELO:
            where = "EHLO" if facts.protocol == "ESMTP" else "HELO"
        try:
            return await self._check(stage, facts, where)
        except Exception:               # noqa: BLE001 - a bug must not kill the session silently
            log.error("%s: access check at %s failed: internal error",
                      facts.queue_id or "NOQUEUE", where)
            import traceback
            for line in traceback.format_exc().splitlines():
                log.error("%s", line)
            return Verdict(Reply(451, "4.3.5", "Server configuration error"))

    async def _check(self, stage: Stage, facts: SessionFacts, where: str) -> Verdict:
        notes = facts.notes
        actions: list[Action] = []

        async def run(kind: str, name: str, reply_name: str, reply_class: str, carry=None) -> _Ctx:
            ctx = _Ctx(facts, stage, where, carry)
            ctx.list_kind = kind
            status = DUNNO
            try:
                if self.lists.get(kind):
                    status = await self._generic(ctx, self.lists[kind], reply_name, reply_class, kind)
            except _Unwind as u:
                status = u.status
            ctx.status = status
            actions.extend(ctx.actions)
            return ctx

        async def client() -> _Ctx:
            ctx = await run("client", "client", facts.namaddr, NAME_CLIENT)
            notes["defer_if_permit_client"] = ctx.defer_if_permit
            return ctx

        async def helo() -> _Ctx:
            ctx = await run("helo", "helo", facts.helo_name or "", NAME_HELO,
                            notes.get("defer_if_permit_client"))
            notes["defer_if_permit_helo"] = ctx.defer_if_permit
            return ctx

        async def mail() -> _Ctx:
            carry = notes.get("defer_if_permit_client") or notes.get("defer_if_permit_helo")
            ctx = await run("sender", "sender", facts.sender or "", NAME_SENDER, carry)
            notes["defer_if_permit_sender"] = ctx.defer_if_permit
            if (ctx.status != REJECT and self.cfg.smtpd_reject_unlisted_sender
                    and not ctx.sender_maps_checked and facts.sender):
                await self._guard(ctx, self._check_rcpt_maps(ctx, facts.sender, NAME_SENDER))
            return ctx

        def done(ctx: _Ctx) -> Verdict:
            if ctx.status == REJECT:
                return Verdict(ctx.reply, actions)
            return Verdict(None, actions)

        if stage is Stage.CONNECT:
            if self.delay_reject:
                return Verdict()
            return done(await client())
        if stage is Stage.HELO:
            if self.delay_reject:
                return Verdict()
            return done(await helo())
        if stage is Stage.MAIL:
            if self.delay_reject:
                return Verdict()
            return done(await mail())
        if stage in (Stage.RCPT, Stage.VRFY):
            if self.delay_reject:
                for sub in (client, helo, mail):
                    if sub is mail and facts.sender is None:
                        continue           # VRFY outside a transaction
                    ctx = await sub()
                    if ctx.status == REJECT:
                        return done(ctx)
            rcpt = facts.recipient or ""
            carry = (notes.get("defer_if_permit_client") or notes.get("defer_if_permit_helo")
                     or notes.get("defer_if_permit_sender"))
            order = ("relay", "recipient") if self.relay_before_rcpt else ("recipient", "relay")
            ctx = None
            for kind in order:
                ctx = await run(kind, kind, rcpt, NAME_RECIPIENT, carry if ctx is None else ctx.defer_if_permit)
                if ctx.status == REJECT:
                    return done(ctx)
                carry = ctx.defer_if_permit
            await self._force_defer(ctx)
            if ctx.status != REJECT and self.cfg.smtpd_reject_unlisted_recipient \
                    and not notes.get("rcpt_maps_checked_now"):
                await self._guard(ctx, self._check_rcpt_maps(ctx, rcpt, NAME_RECIPIENT))
            notes.pop("rcpt_maps_checked_now", None)
            return done(ctx)
        if stage is Stage.ETRN:
            if self.delay_reject:
                for sub in (client, helo):
                    ctx = await sub()
                    if ctx.status == REJECT:
                        return done(ctx)
            carry = notes.get("defer_if_permit_client") or notes.get("defer_if_permit_helo")
            ctx = await run("etrn", "etrn", facts.etrn_domain or "", NAME_ETRN, carry)
            await self._force_defer(ctx)
            return done(ctx)
        if stage is Stage.DATA:
            ctx = await run("data", "data", "DATA", NAME_DATA)
            await self._force_defer(ctx)
            return done(ctx)
        if stage is Stage.END_OF_DATA:
            ctx = await run("eod", "eod", "END-OF-MESSAGE", NAME_EOD)
            await self._force_defer(ctx)
            return done(ctx)
        return Verdict()

    async def _guard(self, ctx: _Ctx, coro) -> None:
        try:
            status = await coro
        except _Unwind as u:
            status = u.status
        if status == REJECT:
            ctx.status = REJECT

    async def _force_defer(self, ctx: _Ctx) -> None:
        """smtpd_check_rcpt(): "Force permission into deferral when some
        earlier temporary error may have prevented us from rejecting mail"."""
        if ctx.status != REJECT and ctx.defer_if_permit is not None:
            r = ctx.defer_if_permit
            ctx.warn_if_reject = 0
            ctx.status = self._reject(ctx, r.code, r.status, r.text)

    # -- reject/defer bookkeeping (smtpd_check_reject, defer_if) --------
    def _reject(self, ctx: _Ctx, code: int, dsn: str, text: str, software: bool = False) -> int:
        warn = bool(ctx.warn_if_reject) and not software
        if not (400 <= code <= 599):
            log.warning("response code configuration error: %d %s", code, text)
            code, dsn, text = 450, "4.7.1", "Service unavailable"
        dsn = _fix_dsn(dsn or f"{str(code)[0]}.7.1", code)
        text = "".join(c if c.isprintable() else " " for c in text)
        if not warn and ctx.defer_if_reject is not None and code >= 500:
            r = ctx.defer_if_reject
            ctx.defer_if_reject = None
            return self._reject(ctx, r.code, r.status, r.text)
        if self.soft_bounce and code >= 500:
            code, dsn = code - 100, "4" + dsn[1:]
        reply = Reply(code, dsn, text)
        log.info("%s", format_whatsup("reject_warning" if warn else "reject", ctx.where, ctx.facts,
                                      f"{code} {dsn} {text}", ctx.log_sender, ctx.log_recipient))
        if warn:
            return DUNNO
        ctx.reply = reply
        return REJECT

    def _defer_if(self, ctx: _Ctx, which: str, code: int, dsn: str, text: str) -> None:
        if which == "permit" and ctx.warn_if_reject:
            # DEFER_IF_PERMIT under warn_if_reject: log the would-be deferral.
            self._reject(ctx, code, dsn, text)
            return
        attr = "defer_if_permit" if which == "permit" else "defer_if_reject"
        if getattr(ctx, attr) is None:          # keep the first reason
            setattr(ctx, attr, Reply(code, _fix_dsn(dsn, code), text))

    def _tempfail_action(self, ctx: _Ctx, action: str, code: int, dsn: str, text: str) -> int:
        """reject_tempfail_action and friends: defer now, or defer_if_permit."""
        if action.strip().lower() == "defer":
            return self._reject(ctx, code, dsn, text)
        self._defer_if(ctx, "permit", code, dsn, text)
        return DUNNO

    def _lookup_fail(self, ctx: _Ctx, name: str):
        """reject_dict_retry(): 451 4.3.0 <x>: Temporary lookup failure."""
        raise _Unwind(self._reject(ctx, 451, "4.3.0", f"<{name}>: Temporary lookup failure", software=True))

    def _log_action(self, ctx: _Ctx, whatsup: str, text: str) -> None:
        log.info("%s", format_whatsup(whatsup, ctx.where, ctx.facts, text,
                                      ctx.log_sender, ctx.log_recipient))

    # -- the restriction loop (generic_checks) ------------------------
    async def _generic(self, ctx: _Ctx, steps: list[Step], reply_name: str, reply_class: str,
                       kind: str) -> int:
        ctx.recursion += 1
        try:
            if ctx.recursion > MAX_RECURSION:
                log.warning("too many levels of nested restriction classes")
                return self._reject(ctx, 451, "4.3.5", "Server configuration error", software=True)
            status = DUNNO
            for step in steps:
                if step.name == "warn_if_reject":
                    if ctx.warn_if_reject == 0:
                        ctx.warn_if_reject = ctx.recursion
                    continue
                status = await self._one(ctx, step, reply_name, reply_class, kind)
                if ctx.warn_if_reject >= ctx.recursion:
                    ctx.warn_if_reject = 0
                if status != DUNNO:
                    break
            return status
        finally:
            ctx.recursion -= 1

    async def _one(self, ctx: _Ctx, step: Step, reply_name: str, reply_class: str, kind: str) -> int:
        f = ctx.facts
        n = step.name
        c = self.cfg
        rcpt = f.recipient if ctx.stage in (Stage.RCPT, Stage.VRFY) else None
        sender = f.sender if ctx.stage not in (Stage.CONNECT, Stage.HELO) else None
        if n == "permit":
            return OK
        if n == "reject":
            return self._reject(ctx, c.reject_code, "5.7.1", f"<{reply_name}>: {reply_class} rejected: Access denied")
        if n == "defer":
            return self._reject(ctx, c.defer_code, "4.7.1", f"<{reply_name}>: {reply_class} rejected: Try again later")
        if n == "defer_if_permit":
            self._defer_if(ctx, "permit", c.defer_code, "4.7.1",
                           f"<{reply_name}>: {reply_class} rejected: defer_if_permit requested")
            return DUNNO
        if n == "defer_if_reject":
            self._defer_if(ctx, "reject", c.defer_code, "4.7.1",
                           f"<{reply_name}>: {reply_class} rejected: defer_if_reject requested")
            return DUNNO
        if n == "permit_mynetworks":
            try:
                return OK if self.mynetworks.match(f.client_name, f.client_addr) else DUNNO
            except TableTempFail:
                self._lookup_fail(ctx, f.namaddr)
        if n == "permit_sasl_authenticated":
            return OK if f.sasl_username else DUNNO
        if n == "permit_inet_interfaces":
            from pfy.message.domains import interface_addresses, is_own_address
            addrs = interface_addresses(c.inet_interfaces)
            own = is_own_address(f.client_addr) if addrs is None else f.client_addr in addrs
            return OK if own else DUNNO
        if n in ("permit_tls_clientcerts", "permit_tls_all_clientcerts"):
            if not f.ccert_verified:
                return DUNNO
            if n == "permit_tls_all_clientcerts":
                return OK
            for fp in (f.ccert_fingerprint, f.ccert_pubkey_fingerprint):
                if fp and self._safe_find(ctx, self.relay_clientcerts, fp, f.namaddr) is not None:
                    return OK
            return DUNNO
        if n == "reject_plaintext_session":
            if not f.tls_protocol:
                return self._reject(ctx, c.plaintext_reject_code, "4.7.1", "Session encryption is required")
            return DUNNO
        if n in ("reject_unauth_destination", "defer_unauth_destination", "check_relay_domains"):
            if rcpt is None:
                return DUNNO
            if await self._permit_auth_destination(ctx, rcpt) == OK:
                return DUNNO if n != "check_relay_domains" else OK
            if n == "defer_unauth_destination":
                # smtpd_check.c: var_relay_code - 100 with DSN 4.7.1.
                return self._reject(ctx, c.relay_domains_reject_code - 100, "4.7.1", f"<{rcpt}>: Relay access denied")
            return self._reject(ctx, c.relay_domains_reject_code, "5.7.1", f"<{rcpt}>: Relay access denied")
        if n == "permit_auth_destination":
            return await self._permit_auth_destination(ctx, rcpt) if rcpt is not None else DUNNO
        if n == "reject_unauth_pipelining":
            if f.pipelined and (f.protocol.upper() != "ESMTP" or ctx.stage is Stage.DATA):
                return self._reject(ctx, 503, "5.5.0",
                                    f"<{reply_name}>: {reply_class} rejected: Improper use of SMTP command pipelining")
            return DUNNO
        if n in ("reject_unknown_client_hostname", "reject_unknown_client"):
            if f.client_name_status != "ok" or f.client_name == "unknown":
                code = c.unknown_client_reject_code if f.client_name_status in ("perm", "forged") else 450
                return self._reject(ctx, code, "4.7.1",
                                    f"Client host rejected: cannot find your hostname, [{f.client_addr}]")
            return DUNNO
        if n == "reject_unknown_reverse_client_hostname":
            if f.reverse_client_name_status != "ok" or f.reverse_client_name == "unknown":
                code = c.unknown_client_reject_code if f.reverse_client_name_status == "perm" else 450
                return self._reject(ctx, code, "4.7.1",
                                    f"Client host rejected: cannot find your reverse hostname, [{f.client_addr}]")
            return DUNNO
        if n in ("reject_invalid_helo_hostname", "reject_invalid_hostname",
                 "reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname",
                 "reject_unknown_helo_hostname", "reject_unknown_hostname"):
            helo = f.helo_name
            if not helo:
                return DUNNO
            if helo.startswith("["):
                return self._invalid_hostaddr(ctx, helo, helo, NAME_HELO)
            if n in ("reject_invalid_helo_hostname", "reject_invalid_hostname"):
                if not valid_hostname(_truncate_dot(helo)):
                    return self._reject(ctx, c.invalid_hostname_reject_code, "5.5.2",
                                        f"<{helo}>: {NAME_HELO} rejected: Invalid name")
                return DUNNO
            if n in ("reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname"):
                t = _truncate_dot(helo)
                if not valid_hostname(t) or "." not in t:
                    return self._reject(ctx, c.non_fqdn_reject_code, "5.5.2",
                                        f"<{helo}>: {NAME_HELO} rejected: need fully-qualified hostname")
                return DUNNO
            return await self._unknown_hostname(ctx, helo)
        if n in ("reject_non_fqdn_sender", "reject_non_fqdn_recipient"):
            addr, cls = (sender, NAME_SENDER) if n.endswith("sender") else (rcpt, NAME_RECIPIENT)
            if not addr:
                return DUNNO
            return self._non_fqdn_address(ctx, addr, cls)
        if n in ("reject_unknown_sender_domain", "reject_unknown_recipient_domain"):
            addr, cls = (sender, NAME_SENDER) if n.endswith("sender_domain") else (rcpt, NAME_RECIPIENT)
            if not addr:
                return DUNNO
            return await self._unknown_address(ctx, addr, cls)
        if n == "reject_unlisted_sender":
            if sender:
                ctx.sender_maps_checked = True
                return await self._check_rcpt_maps(ctx, sender, NAME_SENDER)
            return DUNNO
        if n in ("reject_unlisted_recipient", "check_recipient_maps"):
            if rcpt is not None:
                f.notes["rcpt_maps_checked_now"] = True
                return await self._check_rcpt_maps(ctx, rcpt, NAME_RECIPIENT)
            return DUNNO
        if n in ("reject_sender_login_mismatch", "reject_authenticated_sender_login_mismatch",
                 "reject_known_sender_login_mismatch", "reject_unauthenticated_sender_login_mismatch"):
            if not sender:
                return DUNNO
            status = DUNNO
            if n != "reject_unauthenticated_sender_login_mismatch":
                status = await self._auth_login_mismatch(ctx, sender, n == "reject_known_sender_login_mismatch")
            if status != REJECT and n != "reject_authenticated_sender_login_mismatch":
                status = await self._unauth_login_mismatch(ctx, sender)
            return status
        if n == "reject_multi_recipient_bounce":
            if sender == "" and (f.recipient_count > 0 if ctx.stage is Stage.RCPT else f.recipient_count > 1):
                return self._reject(ctx, c.multi_recipient_bounce_reject_code, "5.5.3",
                                    f"<{reply_name}>: {reply_class} rejected: Multi-recipient bounce")
            return DUNNO
        if n == "reject_unverified_recipient":
            if not rcpt:
                return DUNNO
            return await self._unverified(ctx, rcpt, NAME_RECIPIENT, c.unverified_recipient_defer_code,
                                          c.unverified_recipient_reject_code,
                                          c.unverified_recipient_tempfail_action,
                                          c.unverified_recipient_reject_reason or "")
        if n == "reject_unverified_sender":
            if not sender:
                return DUNNO
            return await self._unverified(ctx, sender, NAME_SENDER, c.unverified_sender_defer_code,
                                          c.unverified_sender_reject_code,
                                          c.unverified_sender_tempfail_action,
                                          c.unverified_sender_reject_reason or "")
        if n == "permit_naked_ip_address":
            helo = f.helo_name or ""
            return OK if helo and valid_hostaddr(helo) else DUNNO
        if n in _TABLE_ARG or n == "maptype:mapname":
            return await self._check_access(ctx, step, _TABLE_ARG[n] if n in _TABLE_ARG else _implicit(kind), reply_name, reply_class)
        if n in _DNS_ARG:
            return await self._dnsbl(ctx, step)
        if n == "check_policy_service":
            action = await step.arg.query(self._policy_attrs(ctx, step.arg))
            return await self._table_result(ctx, "policy query", action, reply_name, reply_class, kind)
        sub = self.classes.get(step.name)
        if sub is not None:
            return await self._generic(ctx, sub, reply_name, reply_class, kind)
        log.warning('unknown smtpd restriction: "%s"', step.name)
        return self._reject(ctx, 451, "4.3.5", "Server configuration error", software=True)

    # -- helpers ------------------------------------------------------
    async def _unverified(self, ctx: _Ctx, addr: str, cls: str, dcode: int, rcode: int,
                          tf_act: str, alt_reply: str) -> int:
        """smtpd_check.c reject_unverified_address(): ask verify(8), polling
        address_verify_poll_count times while the answer is "in progress"."""
        dsn = SND_DSN if cls == NAME_SENDER else "4.1.1"
        answer = None
        for count in range(self.verify_poll_count):
            answer = await self.verify.query(addr)
            if answer is None or answer[0] != VRFY_TODO:
                break
            if count + 1 < self.verify_poll_count:
                await asyncio.sleep(self.verify_poll_delay)
        if answer is None:
            log.warning("%s service failure", self.cfg.address_verify_service_name)
            return self._tempfail_action(ctx, tf_act, 450, dsn,
                                         f"<{addr}>: {cls} rejected: address verification problem")
        status, why = answer
        if status in (VRFY_TODO, VRFY_DEFER):
            code = dcode
        elif status == VRFY_BOUNCE:
            code = rcode
        else:
            if status != VRFY_OK:
                log.warning("unknown address verification status %d", status)
            return DUNNO
        if code >= 400 and alt_reply:
            why = alt_reply
        if code // 100 == 2:
            return DUNNO
        if code // 100 == 4:
            return self._tempfail_action(ctx, tf_act, code, dsn,
                                         f"<{addr}>: {cls} rejected: unverified address: {why[:250]}")
        return self._reject(ctx, code, dsn, f"<{addr}>: {cls} rejected: undeliverable address: {why}")

    def _safe_find(self, ctx, maps, key, reply_name):
        try:
            return maps.find(key)
        except TableTempFail:
            self._lookup_fail(ctx, reply_name)

    async def _resolve(self, ctx: _Ctx, sender: str, addr: str):
        key = (sender or "", addr)
        hit = self._resolve_cache.get(key)
        if hit is not None:
            return hit
        if self.rewrite is None:
            reply = self._static.resolve(sender, addr)
        else:
            try:
                res = self.rewrite.resolve(sender or "", addr) if _is_async(self.rewrite.resolve) \
                    else await asyncio.to_thread(self.rewrite.resolve, sender or "", addr)
                reply = await res if inspect.isawaitable(res) else res
            except Exception as err:      # RewriteUnavailable, OSError: try again later
                log.warning("trivial-rewrite: %s", err)
                self._lookup_fail(ctx, addr)
            if reply.failed:
                self._lookup_fail(ctx, addr)
            reply = type(reply)(reply.flags, reply.transport, reply.nexthop, reply.recipient.lower())
        if len(self._resolve_cache) > 100:        # smtpd_resolve_cache: ctable of 100
            self._resolve_cache.clear()
        self._resolve_cache[key] = reply
        return reply

    async def _permit_auth_destination(self, ctx: _Ctx, rcpt: str) -> int:
        reply = await self._resolve(ctx, ctx.facts.sender or "", rcpt)
        if "@" not in reply.recipient:
            return OK                   # "special case that is not supposed to happen"
        if not self.cfg.allow_untrusted_routing and reply.flags & reply.FLAG_ROUTED:
            return DUNNO                # source-routed: uncertain destination
        if reply.is_final or reply.flags & reply.CLASS_RELAY:
            return OK
        return DUNNO

    def _invalid_hostaddr(self, ctx, addr, reply_name, reply_class) -> int:
        inner = addr[1:-1] if addr.startswith("[") and addr.endswith("]") and len(addr) > 2 else addr
        if not valid_hostaddr(inner):
            return self._reject(ctx, self.cfg.invalid_hostname_reject_code, "5.5.2",
                                f"<{reply_name}>: {reply_class} rejected: invalid ip address")
        return DUNNO

    def _non_fqdn_address(self, ctx, addr: str, cls: str) -> int:
        domain = addr.rpartition("@")[2] if "@" in addr else ""
        if domain.startswith("[") and domain.endswith("]"):
            return DUNNO
        t = _truncate_dot(domain)
        if not t or not valid_hostname(t) or "." not in t:
            return self._reject(ctx, self.cfg.non_fqdn_reject_code, "5.5.2",
                                f"<{addr}>: {cls} rejected: need fully-qualified address")
        return DUNNO

    async def _host_status(self, name: str) -> DnsStatus:
        """dns_lookup_types(name, A, AAAA, MX): found if any type answers."""
        statuses = []
        for rr in ("A", "AAAA", "MX"):
            ans = await self.resolver.lookup(name, rr)
            if ans.found:
                return DnsStatus.FOUND
            statuses.append(ans.status)
        return DnsStatus.TEMPFAIL if DnsStatus.TEMPFAIL in statuses else DnsStatus.NOTFOUND

    async def _unknown_hostname(self, ctx, helo: str) -> int:
        st = await self._host_status(_truncate_dot(helo))
        if st is DnsStatus.NOTFOUND:
            return self._reject(ctx, self.cfg.unknown_hostname_reject_code, "4.7.1",
                                f"<{helo}>: {NAME_HELO} rejected: Host not found")
        if st is DnsStatus.TEMPFAIL:
            return self._tempfail_action(ctx, self.cfg.unknown_helo_hostname_tempfail_action, 450, "4.7.1",
                                         f"<{helo}>: {NAME_HELO} rejected: Host not found")
        return DUNNO

    async def _unknown_address(self, ctx, addr: str, cls: str) -> int:
        reply = await self._resolve(ctx, ctx.facts.sender or "", addr)
        if reply.is_final:
            return DUNNO
        domain = reply.recipient.rpartition("@")[2]
        if not domain or domain.startswith("["):
            return DUNNO
        dsn = "4.1.8" if cls == NAME_SENDER else "4.1.2"
        mx = await self.resolver.mx(domain)
        if mx.found:
            # RFC 7505 null MX: one MX of preference 0 and host "." (".").
            if len(mx.records) == 1 and mx.records[0][1] in ("", "."):
                return self._reject(ctx, 556, "5.7.27" if cls == NAME_SENDER else "5.1.10",
                                    f"<{addr}>: {cls} rejected: Domain {domain} does not accept mail (nullMX)")
            return DUNNO
        st = mx.status
        if st is DnsStatus.NOTFOUND:
            st = await self._host_status(domain)
        if st is DnsStatus.NOTFOUND:
            return self._reject(ctx, self.cfg.unknown_address_reject_code, dsn,
                                f"<{addr}>: {cls} rejected: Domain not found")
        if st is DnsStatus.TEMPFAIL:
            return self._tempfail_action(ctx, self.cfg.unknown_address_tempfail_action, 450, dsn,
                                         f"<{addr}>: {cls} rejected: Domain not found")
        return DUNNO

    def _addr_find(self, ctx, maps, addr: str, local: bool, reply_name: str):
        try:
            return search.virtual_lookup(maps, addr, self.delimiters, local_domain=local,
                                         double_bounce_sender=self.double_bounce)
        except TableTempFail:
            self._lookup_fail(ctx, reply_name)

    async def _check_rcpt_maps(self, ctx: _Ctx, addr: str, cls: str) -> int:
        """smtpd_check.c check_rcpt_maps(): unknown users in our domains.

        Every unknown-user check comes through here: the implicit
        smtpd_reject_unlisted_recipient (RCPT, VRFY) and
        smtpd_reject_unlisted_sender (MAIL), and the explicit
        reject_unlisted_recipient, check_recipient_maps and
        reject_unlisted_sender.  With no_unknown_recipient_checks all of
        them are skipped before the address is even resolved, as Postfix's
        check_{recipient,sender}_rcpt_maps() do; reject_unverified_* and
        reject_unknown_*_domain are not affected."""
        if not addr or not self.unknown_rcpt_checks:
            return DUNNO
        c = self.cfg
        reply = await self._resolve(ctx, ctx.facts.sender or "", addr)
        r = reply.recipient
        local = reply.is_local
        if (self._addr_find(ctx, self.rcpt_canonical_maps, r, local, addr)
                or (cls == NAME_SENDER and self._addr_find(ctx, self.sender_canonical_maps, r, local, addr))
                or self._addr_find(ctx, self.canonical_maps, r, local, addr)
                or self._addr_find(ctx, self.virtual_alias_maps, r, local, addr)):
            return DUNNO
        sender_cls = cls == NAME_SENDER
        if reply.transport == "error":
            dsn, text = _split_dsn(reply.nexthop, "5.1.0" if sender_cls else "5.1.1")
            code = c.unknown_virtual_alias_reject_code if reply.flags & reply.CLASS_ALIAS else 550
            return self._reject(ctx, code, dsn, f"<{addr}>: {cls} rejected: {text}")
        if reply.transport == "retry":
            dsn, text = _split_dsn(reply.nexthop, "4.1.0" if sender_cls else "4.1.1")
            return self._reject(ctx, 450, dsn, f"<{addr}>: {cls} rejected: {text}")
        dsn = "5.1.0" if sender_cls else "5.1.1"
        local_part = r.rpartition("@")[0].lower()
        show = c.show_user_unknown_table_name
        if reply.flags & reply.CLASS_LOCAL:
            if (self.local_rcpt_maps and local_part not in (self.double_bounce.lower(), "postmaster", "mailer-daemon")
                    and not self._addr_find(ctx, self.local_rcpt_maps, r, True, addr)):
                return self._reject(ctx, c.unknown_local_recipient_reject_code, dsn,
                                    f"<{addr}>: {cls} rejected: User unknown" + (" in local recipient table" if show else ""))
        elif reply.flags & reply.CLASS_VIRTUAL:
            if self.virtual_mailbox_maps and not self._addr_find(ctx, self.virtual_mailbox_maps, r, False, addr):
                return self._reject(ctx, c.unknown_virtual_mailbox_reject_code, dsn,
                                    f"<{addr}>: {cls} rejected: User unknown" + (" in virtual mailbox table" if show else ""))
        elif reply.flags & reply.CLASS_RELAY:
            if self.relay_rcpt_maps and not self._addr_find(ctx, self.relay_rcpt_maps, r, False, addr):
                return self._reject(ctx, c.unknown_relay_recipient_reject_code, dsn,
                                    f"<{addr}>: {cls} rejected: User unknown" + (" in relay recipient table" if show else ""))
        return DUNNO

    async def _login_owners(self, ctx, sender: str):
        reply = await self._resolve(ctx, ctx.facts.recipient or "", sender)
        m = self._addr_find(ctx, self.sender_login_maps, reply.recipient, reply.is_local, sender)
        return None if m is None else m.value

    async def _auth_login_mismatch(self, ctx, sender: str, allow_unknown: bool) -> int:
        f = ctx.facts
        if not (self.sender_login_maps and f.sasl_username):
            return DUNNO
        owners = await self._login_owners(ctx, sender)
        if owners is None and allow_unknown:
            return DUNNO
        names = (owners or "").replace(",", " ").split()
        if not any(n.lower() == f.sasl_username.lower() for n in names):
            return self._reject(ctx, 553, "5.7.1",
                                f"<{sender}>: Sender address rejected: not owned by user {f.sasl_username}")
        return DUNNO

    async def _unauth_login_mismatch(self, ctx, sender: str) -> int:
        if not self.sender_login_maps or ctx.facts.sasl_username:
            return DUNNO
        if await self._login_owners(ctx, sender) is not None:
            return self._reject(ctx, 553, "5.7.1", f"<{sender}>: Sender address rejected: not logged in")
        return DUNNO

    async def _check_access(self, ctx: _Ctx, step: Step, what: str, reply_name: str, reply_class: str) -> int:
        f = ctx.facts
        table = step.arg
        found = None
        try:
            if what == "client":
                if f.client_name and f.client_name != "unknown":
                    found = search.access_host(table, f.client_name.lower(), self.parent)
                    if found is not None and found.value.strip().upper() == "DUNNO":
                        found = None
                    if found is not None:
                        return await self._table_result(ctx, step.text, found.value, f.namaddr, NAME_CLIENT, "client")
                found = search.access_ip(table, f.client_addr)
                name, cls = f.namaddr, NAME_CLIENT
            elif what == "reverse":
                if f.reverse_client_name and f.reverse_client_name != "unknown":
                    found = search.access_host(table, f.reverse_client_name.lower(), self.parent)
                    if found is not None and found.value.strip().upper() == "DUNNO":
                        found = None
                    if found is not None:
                        return await self._table_result(ctx, step.text, found.value,
                                                        f"{f.reverse_client_name}[{f.client_addr}]", NAME_CLIENT, "client")
                found = search.access_ip(table, f.client_addr)
                name, cls = f"{f.reverse_client_name}[{f.client_addr}]", NAME_CLIENT
            elif what == "helo":
                if not f.helo_name:
                    return DUNNO
                found = search.access_host(table, _truncate_dot(f.helo_name).lower(), self.parent)
                name, cls = f.helo_name, NAME_HELO
            elif what in ("sender", "recipient"):
                addr = f.sender if what == "sender" else f.recipient
                if addr is None or (what == "recipient" and ctx.stage not in (Stage.RCPT, Stage.VRFY)):
                    return DUNNO
                if addr == "":
                    found = table.lookup(self.null_key)
                    found = found and search.Match(self.null_key, found)
                else:
                    reply = await self._resolve(ctx, f.sender or "", addr)
                    found = search.access_address(table, reply.recipient, self.delimiters, self.parent,
                                                  self.double_bounce)
                name, cls = addr, NAME_SENDER if what == "sender" else NAME_RECIPIENT
            elif what == "etrn":
                if not f.etrn_domain:
                    return DUNNO
                found = search.access_host(table, f.etrn_domain.lower(), self.parent)
                name, cls = f.etrn_domain, NAME_ETRN
            elif what == "sasl":
                if not f.sasl_username:
                    return DUNNO
                user = f.sasl_username
                found = (search.access_address(table, user, self.delimiters, self.parent, self.double_bounce)
                         if "@" in user else (lambda v: v and search.Match(user, v))(table.lookup(user)))
                name, cls = user, NAME_SASL
            elif what == "ccert":
                if not (f.ccert_fingerprint or f.ccert_pubkey_fingerprint):
                    return DUNNO
                for fp in (f.ccert_fingerprint, f.ccert_pubkey_fingerprint):
                    v = table.lookup(fp) if fp else None
                    if v is not None:
                        found = search.Match(fp, v)
                        break
                name, cls = f.ccert_subject or f.namaddr, NAME_CCERT
            else:
                return DUNNO
        except TableTempFail:
            self._lookup_fail(ctx, reply_name)
        if found is None:
            return DUNNO
        return await self._table_result(ctx, step.text, found.value, name, cls, what)

    async def _table_result(self, ctx: _Ctx, table: str, value: str, reply_name: str,
                            reply_class: str, kind: str) -> int:
        """smtpd_check.c check_table_result(): what an access(5) value means."""
        c = self.cfg
        value = value.strip()
        word, _, rest = value.partition(" ")
        cmd = word.upper()
        rest = rest.strip()
        # access(5) ACCEPT ACTIONS
        if cmd in ("OK", "RELAY"):
            return OK
        if value.isdigit():
            return OK                 # all-numerical: OK (backwards compatibility)
        if cmd == "DUNNO":
            return DUNNO
        # REJECT ACTIONS
        if cmd == "REJECT":
            dsn, text = _split_dsn(rest, "5.7.1")
            return self._reject(ctx, c.access_map_reject_code, dsn,
                                f"<{reply_name}>: {reply_class} rejected: {text or 'Access denied'}")
        if cmd == "DEFER":
            dsn, text = _split_dsn(rest, "4.7.1")
            return self._reject(ctx, c.access_map_defer_code, dsn,
                                f"<{reply_name}>: {reply_class} rejected: {text or 'Access denied'}")
        if cmd in ("DEFER_IF_PERMIT", "DEFER_IF_REJECT"):
            dsn, text = _split_dsn(rest, "4.7.1")
            self._defer_if(ctx, "permit" if cmd == "DEFER_IF_PERMIT" else "reject", c.access_map_defer_code, dsn,
                           f"<{reply_name}>: {reply_class} rejected: {text or 'Service unavailable'}")
            return DUNNO
        m = _CODE_RE.match(value)
        if m and len(word) == 3:
            code = int(word)
            if code < 400:
                log.warning("access table %s: with %s specified, action %s is unavailable", table, word, value)
                return self._reject(ctx, 451, "4.3.5", "Server configuration error", software=True)
            dsn, text = _split_dsn(rest, f"{word[0]}.7.1")
            return self._reject(ctx, code, dsn, f"<{reply_name}>: {reply_class} rejected: {text or 'Access denied'}")
        # OTHER ACTIONS
        if cmd in ("HOLD", "DISCARD"):
            text = rest or f"triggers {cmd} action"
            self._log_action(ctx, cmd.lower(), f"<{reply_name}>: {reply_class} {text}")
            ctx.actions.append(Action(cmd, rest))
            return OK if cmd == "DISCARD" else DUNNO
        if cmd in ("FILTER", "REDIRECT", "BCC"):
            if not rest or (cmd == "FILTER" and ":" not in rest):
                log.warning('access table %s entry "%s" requires %s', table, value,
                            "transport:destination" if cmd == "FILTER" else "user@domain")
                return DUNNO
            self._log_action(ctx, cmd.lower(), f"<{reply_name}>: {reply_class} triggers {cmd} {rest}")
            ctx.actions.append(Action(cmd, rest))
            return DUNNO
        if cmd == "PREPEND":
            if not re.match(r"^[!-9;-~]+:", rest):
                log.warning('access table %s entry "%s" requires header: text', table, value)
                return DUNNO
            ctx.actions.append(Action("PREPEND", rest))
            return DUNNO
        if cmd in ("WARN", "INFO"):
            self._log_action(ctx, cmd.lower(), f"<{reply_name}>: {reply_class} {rest}")
            return DUNNO
        # Anything else: a list of restrictions (or class names) to evaluate.
        words = [w for w in value.replace(",", " ").split() if w]
        try:
            steps = self._parse(words, f"access table {table}")
        except (AccessConfigError, TableError, DnsblError, PolicyError, OSError) as err:
            log.warning("access table %s: %s", table, err)
            return self._reject(ctx, 451, "4.3.5", "Server configuration error", software=True)
        return await self._generic(ctx, steps, reply_name, reply_class, kind)

    async def _dnsbl(self, ctx: _Ctx, step: Step) -> int:
        f = ctx.facts
        n = step.name
        spec = step.arg
        sender = f.sender if ctx.stage not in (Stage.CONNECT, Stage.HELO) else None
        rcpt = f.recipient if ctx.stage in (Stage.RCPT, Stage.VRFY) else None
        if n in ("reject_rbl_client", "permit_dnswl_client"):
            what, cls, is_ip = f.client_addr, NAME_CLIENT, True
        elif n in ("reject_rhsbl_client", "permit_rhswl_client"):
            what, cls, is_ip = (f.client_name if f.client_name != "unknown" else ""), NAME_CLIENT, False
        elif n == "reject_rhsbl_reverse_client":
            what, cls, is_ip = (f.reverse_client_name if f.reverse_client_name != "unknown" else ""), NAME_REV_CLIENT, False
        elif n == "reject_rhsbl_sender":
            what, cls, is_ip = (sender.rpartition("@")[2] if sender and "@" in sender else ""), NAME_SENDER, False
        elif n == "reject_rhsbl_recipient":
            what, cls, is_ip = (rcpt.rpartition("@")[2] if rcpt and "@" in rcpt else ""), NAME_RECIPIENT, False
        else:  # reject_rhsbl_helo
            what, cls, is_ip = (f.helo_name or ""), NAME_HELO, False
        if not what:
            return DUNNO
        hit = await query_dnsbl(self.resolver, spec, what, is_ip=is_ip)
        if hit is None:
            return DUNNO
        if n.startswith("permit_"):
            # postconf(5): permit_dnswl_client/permit_rhswl_client never
            # override reject_unauth_destination.
            if rcpt is not None and ctx.list_kind in ("relay", "recipient"):
                if await self._permit_auth_destination(ctx, rcpt) != OK:
                    return DUNNO
            return OK
        return self._rbl_reject(ctx, spec.domain, what, cls, hit.txt)

    def _rbl_reject(self, ctx: _Ctx, domain: str, what: str, cls: str, txt: str) -> int:
        f = ctx.facts
        c = self.cfg
        try:
            m = self.rbl_reply_maps.find(domain) if self.rbl_reply_maps else None
        except TableTempFail:
            self._lookup_fail(ctx, domain)
        # default_rbl_reply is a "raw" parameter: its $names are expanded here.
        template = m.value if m else (c.raw_or_default("default_rbl_reply") or "")
        sender = f.sender or ""
        rcpt = f.recipient or ""
        values = {
            "rbl_code": str(c.maps_rbl_reject_code), "rbl_domain": domain, "rbl_reason": txt,
            "rbl_txt": txt, "rbl_what": what, "rbl_class": cls,
            "client_address": f.client_addr, "client_name": f.client_name,
            "reverse_client_name": f.reverse_client_name, "helo_name": f.helo_name or "",
            "sender": sender, "sender_name": sender.rpartition("@")[0] if "@" in sender else sender,
            "sender_domain": sender.rpartition("@")[2] if "@" in sender else "",
            "recipient": rcpt, "recipient_name": rcpt.rpartition("@")[0] if "@" in rcpt else rcpt,
            "recipient_domain": rcpt.rpartition("@")[2] if "@" in rcpt else "",
        }
        # Only the values are filtered: the template is the admin's text.
        text = _expand(template, values.get, self.expand_filter)
        m = _CODE_RE.match(text.strip())
        if not m:
            log.warning("response code configuration error: %s", text)
            return self._reject(ctx, 450, "4.7.1", "Service unavailable")
        code = int(text[:3])
        dsn, rest = _split_dsn((m.group(3) or "").strip(), "5.7.1")
        return self._reject(ctx, code, dsn, rest)

    def _policy_attrs(self, ctx: _Ctx, client: PolicyClient) -> list[tuple[str, str]]:
        """SMTPD_POLICY_README "Protocol description", Postfix 3.7 attributes."""
        f = ctx.facts
        c = self.cfg
        rcpt = f.recipient if ctx.stage in (Stage.RCPT, Stage.VRFY) or (
            ctx.stage in (Stage.DATA, Stage.END_OF_DATA) and f.recipient_count == 1) else ""
        return [
            ("request", "smtpd_access_policy"),
            ("protocol_state", ctx.where),
            ("protocol_name", f.protocol),
            ("helo_name", f.helo_name or ""),
            ("queue_id", f.queue_id or ""),
            ("sender", f.sender or ""),
            ("recipient", rcpt or ""),
            ("recipient_count", str(f.recipient_count if ctx.stage in (Stage.DATA, Stage.END_OF_DATA) else 0)),
            ("client_address", f.client_addr),
            ("client_name", f.client_name),
            ("client_port", str(f.client_port)),
            ("reverse_client_name", f.reverse_client_name),
            ("server_address", f.server_addr),
            ("server_port", str(f.server_port)),
            ("instance", f.instance),
            ("sasl_method", f.sasl_method or ""),
            ("sasl_username", f.sasl_username or ""),
            ("sasl_sender", f.sasl_sender or ""),
            ("size", str(f.size or 0)),
            ("ccert_subject", f.ccert_subject or ""),
            ("ccert_issuer", f.ccert_issuer or ""),
            ("ccert_fingerprint", f.ccert_fingerprint or ""),
            ("ccert_pubkey_fingerprint", f.ccert_pubkey_fingerprint or ""),
            ("encryption_protocol", f.tls_protocol or ""),
            ("encryption_cipher", f.tls_cipher or ""),
            ("encryption_keysize", str(f.tls_cipher_bits or 0)),
            ("etrn_domain", f.etrn_domain or ""),
            ("stress", "yes" if f.stress else ""),
            ("policy_context", client.s.policy_context),
            ("compatibility_level", self._compat_level),
            ("mail_version", self._mail_version),
        ]


def _is_async(fn) -> bool:
    return inspect.iscoroutinefunction(fn)


def _implicit(kind: str) -> str:
    """A bare type:table in a list is the access map of that list's context."""
    return {"client": "client", "helo": "helo", "sender": "sender", "recipient": "recipient",
            "relay": "recipient", "etrn": "etrn"}.get(kind, "client")


def _truncate_dot(name: str) -> str:
    """dup_if_truncate(): drop one trailing dot, but not from "..". """
    if len(name) > 1 and name.endswith(".") and name[-2] != ".":
        return name[:-1]
    return name


def _or_list(items) -> str:
    items = list(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _compat_level(cfg) -> float:
    raw = str(cfg.raw_or_default("compatibility_level") or "0")
    try:
        parts = raw.split(".")
        return float(parts[0] + ("." + parts[1] if len(parts) > 1 else ""))
    except ValueError:
        return 0.0
