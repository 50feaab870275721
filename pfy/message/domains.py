"""Domain lists and "is this domain mine?", as Postfix's match_list does.

Postfix matches mydestination, virtual_alias_domains and
virtual_mailbox_domains as *string lists* (exact name or table key), and
relay_domains as a *domain list* (a name also matches its subdomains when
relay_domains is in parent_domain_matches_subdomains; ".example.com" always
matches subdomains). Both accept "!pattern" negation, "type:table" lookups
and "/file/name" entries holding more patterns (match_list.c).

LocalDomains answers resolve_local() (global/resolve_local.c): a domain is
local when it is in mydestination, or when it is an address literal
"[1.2.3.4]" of one of inet_interfaces or proxy_interfaces. trivial-rewrite
uses it to choose the local address class; cleanup uses it for the
canonical(5)/virtual(5) "user without domain" lookups.

Table lookups raise TableTempFail through to the caller, which turns it into
Postfix's "try again later" (RESOLVE_FLAG_FAIL, 4.3.0).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Iterable

__all__ = ["MatchList", "LocalDomains", "interface_addresses", "is_own_address"]


def _read_pattern_file(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        # match_list.c: "open file: ..." is fatal in Postfix; a daemon that
        # cannot read its domain file must not guess, so nothing matches and
        # the caller's configuration check reports the file.
        return []
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        out.extend(line.replace(",", " ").split())
    return out


class MatchList:
    """A Postfix string list (parent=False) or domain list (parent=True)."""

    def __init__(self, patterns: Iterable[str], open_table: Callable | None = None,
                 *, domain: bool = False, parent: bool = False):
        self.domain = domain
        self.parent = parent
        self.entries: list[tuple[bool, str, object]] = []
        for pat in patterns:
            self._add(pat, open_table)

    def _add(self, pat: str, open_table) -> None:
        negate = False
        while pat.startswith("!"):
            negate = not negate
            pat = pat[1:]
        if not pat:
            return
        if pat.startswith("/"):
            for sub in _read_pattern_file(pat):
                self._add(("!" if negate else "") + sub, open_table)
            return
        colon = pat.find(":")
        if colon > 0 and "[" not in pat[:colon] and open_table is not None:
            self.entries.append((negate, "table", open_table(pat)))
            return
        self.entries.append((negate, "name", pat.lower()))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def _name_match(self, name: str, pat: str) -> bool:
        if name == pat:
            return True
        if not self.domain:
            return False
        if pat.startswith("."):
            return name.endswith(pat)
        return self.parent and name.endswith("." + pat)

    def _table_match(self, name: str, table) -> bool:
        if table.lookup(name) is not None:
            return True
        if not self.domain:
            return False
        # match_hostname(): parent domains, only in fixed-string tables.
        if getattr(table, "pattern", False):
            return False
        rest = name
        while True:
            dot = rest.find(".", 1)
            if dot < 0:
                return False
            rest = rest[dot:]
            key = rest[1:] if self.parent else rest
            if table.lookup(key) is not None:
                return True

    def match(self, name: str) -> bool:
        """First matching entry decides; a negated match means no."""
        name = name.lower()
        for negate, kind, pat in self.entries:
            hit = (self._table_match(name, pat) if kind == "table"
                   else self._name_match(name, pat))
            if hit:
                return not negate
        return False


def interface_addresses(spec: Iterable[str]) -> set[str] | None:
    """The addresses named by inet_interfaces/proxy_interfaces; None means
    "all" (every address of this host: checked with is_own_address)."""
    out: set[str] = set()
    for item in spec:
        low = item.lower()
        if low == "all":
            return None
        if low == "loopback-only":
            out.update({"127.0.0.1", "::1"})
            continue
        host = item.strip("[]")
        try:
            out.add(str(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        try:
            for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
                out.add(str(ipaddress.ip_address(info[4][0].split("%")[0])))
        except (OSError, UnicodeError):
            pass        # inet_addr_local: an unresolvable name adds nothing
    return out


def is_own_address(addr: str) -> bool:
    """True when addr is configured on this host. bind() to port 0 succeeds
    exactly for local addresses (EADDRNOTAVAIL otherwise), which answers
    "inet_interfaces = all" without parsing interface tables."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((str(ip), 0))
        return True
    except OSError:
        return False


class LocalDomains:
    """resolve_local(): mydestination, or [address] of our own interfaces."""

    def __init__(self, mydestination: MatchList, inet_interfaces: Iterable[str],
                 proxy_interfaces: Iterable[str], own: Callable[[str], bool] = is_own_address):
        self.mydestination = mydestination
        self.inet = interface_addresses(inet_interfaces)
        self.proxy = interface_addresses(proxy_interfaces) or set()
        self._own = own
        self._own_cache: dict[str, bool] = {}

    def is_local(self, domain: str) -> bool:
        # Strip one trailing dot but not dot-dot (resolve_local.c).
        if domain.endswith("."):
            domain = domain[:-1]
        if not domain or domain.endswith("."):
            return False
        if self.mydestination.match(domain):
            return True
        if len(domain) > 2 and domain[0] == "[" and domain[-1] == "]":
            literal = domain[1:-1]
            if literal.lower().startswith("ipv6:"):
                literal = literal[5:]
            try:
                ip = str(ipaddress.ip_address(literal))
            except ValueError:
                return False
            if ip in self.proxy:
                return True
            if self.inet is not None:
                return ip in self.inet
            if ip not in self._own_cache:
                self._own_cache[ip] = self._own(ip)
            return self._own_cache[ip]
        return False
