"""Address resolution: Postfix's trivial-rewrite "resolve".

resolve(sender, address) -> Resolved(transport, nexthop, recipient, flags),
following trivial-rewrite/resolve.c resolve_addr():

1. Strip, as long as there are any, local domains from the right of the
   address ("user@remote@local" -> "user@remote"), undoing "%" and "!"
   routing and cracking open a quoted local part ("\"a@b\"@local") when
   resolve_dequoted_address says so; this is what stops relaying through
   user@remote@local addresses.
2. A domain that is left over is remote; otherwise the address is local and
   gets back the last local domain stripped (or @$myhostname).
3. The address class (ADDRESS_CLASS_README), in this order: virtual alias
   domain (error:5.1.1 User unknown in virtual alias table), virtual mailbox
   domain (virtual_transport), relay domain (relay_transport), other remote
   (sender_dependent_default_transport_maps, else default_transport);
   relay and default destinations go to sender_dependent_relayhost_maps,
   else relayhost, else the recipient domain. Local: local_transport.
4. "transport:nexthop" in the main.cf setting gives the nexthop; then
   transport_maps may override both (transport(5) null-field rules), except
   for the virtual alias class; then relocated_maps.

Table lookups that fail for now set FLAG_FAIL: the caller tries later.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pfy.message.domains import LocalDomains, MatchList
from pfy.smtp.address import (
    QSTRING, Token, internalize, quote_local, tokenize,
)
from pfy.tables import TableTempFail
from pfy.tables.search import transport_lookup, virtual_lookup

from .rewrite import LOCAL, Rewriter

__all__ = [
    "Resolved", "Resolver", "FLAG_FINAL", "FLAG_ROUTED", "FLAG_ERROR", "FLAG_FAIL",
    "CLASS_LOCAL", "CLASS_ALIAS", "CLASS_VIRTUAL", "CLASS_RELAY", "CLASS_DEFAULT",
    "CLASS_FINAL", "class_name", "valid_hostname", "valid_hostliteral",
]

# Postfix global/resolve_clnt.h, same values so the flags mean the same
# number on the wire as in Postfix's logs and tools.
FLAG_FINAL = 1 << 0       # final delivery destination
FLAG_ROUTED = 1 << 1      # routing operators in the local part
FLAG_ERROR = 1 << 2       # bad destination syntax
FLAG_FAIL = 1 << 3        # table lookup failed: try again later
CLASS_LOCAL = 1 << 8      # mydestination, inet_interfaces, proxy_interfaces
CLASS_ALIAS = 1 << 9      # virtual_alias_domains
CLASS_VIRTUAL = 1 << 10   # virtual_mailbox_domains
CLASS_RELAY = 1 << 11     # relay_domains
CLASS_DEFAULT = 1 << 12   # everything else
CLASS_FINAL = CLASS_LOCAL | CLASS_ALIAS | CLASS_VIRTUAL

_CLASS_NAMES = {CLASS_LOCAL: "local", CLASS_ALIAS: "alias", CLASS_VIRTUAL: "virtual",
                CLASS_RELAY: "relay", CLASS_DEFAULT: "default"}


def class_name(flags: int) -> str:
    for bit, name in _CLASS_NAMES.items():
        if flags & bit:
            return name
    return "none"


@dataclass(frozen=True)
class Resolved:
    transport: str
    nexthop: str
    recipient: str
    flags: int

    @property
    def address_class(self) -> str:
        return class_name(self.flags)


# valid_hostname.c: VALID_HOSTNAME_LEN 255, VALID_LABEL_LEN 63.
_MAX_HOSTNAME = 255
_MAX_LABEL = 63


def valid_hostname(name: str) -> bool:
    """Letters, digits, '-' and '_' in labels of at most 63 characters, no
    hyphen at either end of a label, not all numeric (valid_hostname.c).
    Non-ASCII labels are accepted (SMTPUTF8 domains)."""
    if not name or len(name) > _MAX_HOSTNAME:
        return False
    numeric = True
    for label in name.split("."):
        if not label or len(label) > _MAX_LABEL or label[0] == "-" or label[-1] == "-":
            return False
        for ch in label:
            if not (ch.isalnum() or ch in "-_"):
                return False
            if not ch.isdigit():
                numeric = False
    return not numeric


def valid_hostliteral(literal: str) -> bool:
    if len(literal) < 3 or literal[0] != "[" or literal[-1] != "]":
        return False
    inner = literal[1:-1]
    if inner.lower().startswith("ipv6:"):
        try:
            return ipaddress.ip_address(inner[5:]).version == 6
        except ValueError:
            return False
    try:
        return ipaddress.ip_address(inner).version == 4
    except ValueError:
        return False


def _rfind(tokens: list[Token], kind: str) -> int:
    for i in range(len(tokens) - 1, -1, -1):
        if tokens[i].kind == kind:
            return i
    return -1


class Resolver:
    def __init__(self, *, rewriter: Rewriter, local: LocalDomains, myhostname: str,
                 virtual_alias_domains: MatchList, virtual_mailbox_domains: MatchList,
                 relay_domains: MatchList, local_transport: str, virtual_transport: str,
                 relay_transport: str, default_transport: str, relayhost: str = "",
                 transport_maps=None, sender_dependent_relayhost_maps=None,
                 sender_dependent_default_transport_maps=None, relocated_maps=None,
                 empty_address_recipient: str = "MAILER-DAEMON",
                 empty_address_relayhost_maps_lookup_key: str = "<>",
                 empty_address_default_transport_maps_lookup_key: str = "<>",
                 swap_bangpath: bool = True, allow_percent_hack: bool = True,
                 resolve_dequoted_address: bool = True, resolve_null_domain: bool = False,
                 show_user_unknown_table_name: bool = True, recipient_delimiter: str = "",
                 transport_parent: bool = False, warn=None):
        self.rewriter = rewriter
        self.local = local
        self.myhostname = myhostname
        self.virt_alias = virtual_alias_domains
        self.virt_mailbox = virtual_mailbox_domains
        self.relay_domains = relay_domains
        self.local_transport = local_transport
        self.virtual_transport = virtual_transport
        self.relay_transport = relay_transport
        self.default_transport = default_transport
        self.relayhost = relayhost
        self.transport_maps = transport_maps
        self.snd_relay = sender_dependent_relayhost_maps
        self.snd_transport = sender_dependent_default_transport_maps
        self.relocated = relocated_maps
        self.empty_addr = empty_address_recipient
        self.empty_relay_key = empty_address_relayhost_maps_lookup_key
        self.empty_transport_key = empty_address_default_transport_maps_lookup_key
        self.swap_bangpath = swap_bangpath
        self.percent_hack = allow_percent_hack
        self.dequoted = resolve_dequoted_address
        self.null_domain = resolve_null_domain
        self.unknown_table = show_user_unknown_table_name
        self.delimiters = recipient_delimiter
        self.transport_parent = transport_parent
        self.warn = warn or (lambda text: None)

    # -- step 1: strip local domains -------------------------------------

    def _canon(self, tokens: list[Token]) -> list[Token]:
        return self.rewriter.rewrite_tokens(LOCAL, tokens)

    def _strip_local(self, addr: str) -> tuple[list[Token], bool]:
        """Returns (tokens of the next recipient, remote?)."""
        tokens = tokenize(quote_local(addr))
        saved: list[Token] | None = None
        remote = False
        # resolve.c: loop_max = addr_len + 100, a guard for pathological input.
        for _ in range(len(addr) + 100):
            # Strip a trailing dot at the end of the domain, but not dot-dot.
            if (len(tokens) > 1 and tokens[-1].kind == "." and _rfind(tokens, "@") >= 0
                    and tokens[-2].kind != "."):
                tokens = tokens[:-1]
            if self.null_domain and tokens and tokens[-1].kind == "@":
                tokens = tokens[:-1]
            at = _rfind(tokens, "@")
            if at >= 0:
                domain = tokens[at + 1:]
                if domain and not self.local.is_local(internalize(domain)):
                    remote = True
                    break
                saved = tokens[at:]
                tokens = tokens[:at]
            kinds = {t.kind for t in tokens}
            if ("@" in kinds or (self.swap_bangpath and "!" in kinds)
                    or (self.percent_hack and "%" in kinds)):
                tokens = self._canon(tokens)
                continue
            if self.dequoted and len(tokens) == 1 and tokens[0].kind == QSTRING:
                local = tokens[0].text
                oper = local.rfind("@")
                if oper < 0 and self.percent_hack:
                    oper = local.rfind("%")
                if oper < 0 and self.swap_bangpath:
                    oper = local.rfind("!")
                if oper >= 0:
                    op = local[oper]
                    if op == "%":
                        local = local[:oper] + "@" + local[oper + 1:]
                        op = "@"
                    tokens = self._canon(tokenize(quote_local(local) if op == "@" else local))
                    continue
            # An empty local part becomes MAILER-DAEMON, as our From: headers.
            if len(tokens) == 1 and tokens[0].kind == QSTRING and tokens[0].text == "":
                tokens = []
            if not tokens:
                tokens = tokenize(self.empty_addr)
            break
        else:
            self.warn(f"resolve_addr: <{addr}>: giving up after {len(addr) + 100} iterations")
        if not remote:
            if saved is not None:
                tokens = tokens + saved
            else:
                tokens = tokens + [Token("@", "@")] + tokenize(self.myhostname)
        return tokens, remote

    # -- steps 2-4 --------------------------------------------------------

    def _sender_key(self, sender: str, empty_key: str) -> str:
        return sender if sender else empty_key

    def _sender_lookup(self, maps, sender: str, empty_key: str) -> str | None:
        if not maps:
            return None
        key = self._sender_key(sender, empty_key)
        found = virtual_lookup(maps, key, self.delimiters)
        if found is None or found.value.upper() == "DUNNO":
            return None   # DUNNO: stop, keep the global setting (postconf(5))
        return found.value

    def resolve(self, sender: str, address: str) -> Resolved:
        try:
            return self._resolve(sender, address)
        except TableTempFail:
            return Resolved("", "", address, FLAG_FAIL)

    def _resolve(self, sender: str, address: str) -> Resolved:
        flags = 0
        tokens, remote = self._strip_local(address)
        rcpt = internalize(tokens)
        rcpt_domain = rcpt[rcpt.rfind("@") + 1:]
        if not (valid_hostliteral(rcpt_domain) if rcpt_domain.startswith("[")
                else valid_hostname(rcpt_domain)):
            flags |= FLAG_ERROR
        # Routing operators in the local part, whatever our own settings:
        # the next MX host may honour them (resolve.c).
        cut = next((i for i, ch in enumerate(rcpt) if ch in "@!%"), len(rcpt))
        if rcpt[cut + 1:] != rcpt_domain:
            flags |= FLAG_ROUTED

        blame = ""
        if remote:
            if self.virt_alias.match(rcpt_domain):
                # resolve.c: the nexthop carries the DSN code, so the error
                # agent bounces with 5.1.1 rather than its generic 5.0.0.
                channel = "error"
                nexthop = "5.1.1 User unknown" + (" in virtual alias table"
                                                  if self.unknown_table else "")
                flags |= CLASS_ALIAS
            elif self.virt_mailbox.match(rcpt_domain):
                channel, nexthop, blame = self.virtual_transport, rcpt_domain, "virtual_transport"
                flags |= CLASS_VIRTUAL
            else:
                if self.relay_domains.match(rcpt_domain):
                    channel, blame = self.relay_transport, "relay_transport"
                    flags |= CLASS_RELAY
                else:
                    channel = self._sender_lookup(self.snd_transport, sender, self.empty_transport_key)
                    blame = "sender_dependent_default_transport_maps"
                    if channel is None:
                        channel, blame = self.default_transport, "default_transport"
                    flags |= CLASS_DEFAULT
                relay = self._sender_lookup(self.snd_relay, sender, self.empty_relay_key)
                nexthop = relay or self.relayhost or rcpt_domain
        else:
            channel, nexthop, blame = self.local_transport, rcpt_domain, "local_transport"
            flags |= CLASS_LOCAL
        if flags & CLASS_FINAL:
            flags |= FLAG_FINAL

        # "transport:nexthop" in main.cf overrides the nexthop.
        channel, colon, dest = channel.partition(":")
        if colon and dest:
            nexthop = dest
        if not channel:
            self.warn(f"parameter {blame}: null transport is not allowed")
            return Resolved("", "", rcpt, flags | FLAG_FAIL)

        if self.transport_maps and not flags & CLASS_ALIAS:
            found = transport_lookup(self.transport_maps, rcpt, self.delimiters,
                                     self.transport_parent)
            if found is not None:
                channel, nexthop = self._apply_transport(found.value, channel, nexthop, rcpt_domain)

        if self.relocated:
            moved = virtual_lookup(self.relocated, rcpt, self.delimiters,
                                   local_domain=bool(flags & CLASS_LOCAL))
            if moved is not None:
                channel, nexthop = "error", f"User has moved to {moved.value}"
        return Resolved(channel, nexthop, rcpt, flags)

    @staticmethod
    def _apply_transport(value: str, channel: str, nexthop: str, rcpt_domain: str) -> tuple[str, str]:
        """transport(5): null transport and nexthop = no change; a transport
        with a null nexthop resets the nexthop to the recipient domain; a
        null transport with a nexthop changes only the nexthop."""
        new_channel, _, new_host = value.strip().partition(":")
        if new_channel:
            channel = new_channel
            nexthop = new_host or rcpt_domain
        elif new_host:
            nexthop = new_host
        return channel, nexthop


def build_resolver(cfg, open_table, warn=None) -> Resolver:
    """A Resolver from a loaded configuration; open_table(spec) opens one
    table (so the caller owns table caching and error reporting)."""
    from pfy.tables.search import Maps, parent_style

    def maps(specs):
        return Maps([open_table(s) for s in specs]) if specs else None

    parent = cfg.parent_domain_matches_subdomains
    rewriter = Rewriter.from_config(cfg)
    local = LocalDomains(MatchList(cfg.mydestination, open_table),
                         cfg.inet_interfaces, cfg.proxy_interfaces)
    return Resolver(
        rewriter=rewriter, local=local, myhostname=cfg.myhostname,
        virtual_alias_domains=MatchList(cfg.virtual_alias_domains, open_table),
        virtual_mailbox_domains=MatchList(cfg.virtual_mailbox_domains, open_table),
        relay_domains=MatchList(cfg.relay_domains, open_table, domain=True,
                                parent=parent_style(parent, "relay_domains")),
        local_transport=cfg.local_transport, virtual_transport=cfg.virtual_transport,
        relay_transport=cfg.relay_transport, default_transport=cfg.default_transport,
        relayhost=cfg.relayhost, transport_maps=maps(cfg.transport_maps),
        sender_dependent_relayhost_maps=maps(cfg.sender_dependent_relayhost_maps),
        sender_dependent_default_transport_maps=maps(cfg.sender_dependent_default_transport_maps),
        relocated_maps=maps(cfg.relocated_maps),
        empty_address_recipient=cfg.empty_address_recipient,
        empty_address_relayhost_maps_lookup_key=cfg.empty_address_relayhost_maps_lookup_key,
        empty_address_default_transport_maps_lookup_key=cfg.empty_address_default_transport_maps_lookup_key,
        swap_bangpath=cfg.swap_bangpath, allow_percent_hack=cfg.allow_percent_hack,
        resolve_dequoted_address=cfg.resolve_dequoted_address,
        resolve_null_domain=cfg.resolve_null_domain,
        show_user_unknown_table_name=cfg.show_user_unknown_table_name,
        recipient_delimiter=cfg.recipient_delimiter,
        transport_parent=parent_style(parent, "transport_maps"), warn=warn)
