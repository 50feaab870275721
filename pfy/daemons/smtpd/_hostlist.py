"""Client lists by name or address (Postfix namadr_list, match_list(3)):
smtpd_authorized_xclient_hosts, smtpd_authorized_xforward_hosts,
smtpd_forbid_bare_newline_exclusions.

Patterns, first match wins, "!" negates: an address ("192.0.2.7",
"[::1]"), a network ("127.0.0.0/8", "[fd00::]/64"), a host or domain name
(".example.com", or "example.com" with parent_domain_matches_subdomains),
"type:table" (looked up by name, then address), "/file/name" (patterns).
"""

from __future__ import annotations

import ipaddress
from typing import Callable

__all__ = ["HostList"]


def _net(text: str):
    t = text
    if t.startswith("["):
        t = t.replace("[", "").replace("]", "")
    try:
        return ipaddress.ip_network(t, strict=False)
    except ValueError:
        return None


class HostList:
    def __init__(self, patterns, open_table: Callable | None = None, parent: bool = True):
        self.parent = parent
        self.entries: list[tuple[bool, str, object]] = []
        for pat in patterns or ():
            self._add(pat, open_table)

    def _add(self, pat: str, open_table) -> None:
        negate = False
        while pat.startswith("!"):
            negate, pat = not negate, pat[1:]
        if not pat:
            return
        if pat.startswith("/"):
            try:
                with open(pat) as f:
                    for line in f:
                        for sub in line.split("#", 1)[0].replace(",", " ").split():
                            self._add(("!" if negate else "") + sub, open_table)
            except OSError:
                pass
            return
        if ":" in pat and not pat.startswith("[") and _net(pat) is None and open_table:
            self.entries.append((negate, "table", open_table(pat)))
            return
        net = _net(pat)
        if net is not None:
            self.entries.append((negate, "net", net))
            return
        self.entries.append((negate, "name", pat.lower()))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def match(self, name: str, addr: str) -> bool:
        name = (name or "").lower()
        try:
            ip = ipaddress.ip_address(addr.split("%")[0]) if addr else None
        except ValueError:
            ip = None
        for negate, kind, pat in self.entries:
            if kind == "net":
                hit = ip is not None and ip.version == pat.version and ip in pat
            elif kind == "name":
                hit = bool(name) and name != "unknown" and (
                    name == pat or (pat.startswith(".") and name.endswith(pat))
                    or (self.parent and name.endswith("." + pat)))
            else:
                hit = (name and name != "unknown" and pat.lookup(name) is not None) or (
                    bool(addr) and pat.lookup(addr) is not None)
            if hit:
                return not negate
        return False
