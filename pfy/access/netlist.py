"""Postfix's namadr_list: client host lists such as mynetworks.

Each pattern (postconf(5) mynetworks, debug_peer_list):
  net/mask (CIDR, "[::1]/128" too), an IP address ("[1.2.3.4]" too),
  a host or domain name (matches the client name; parent domains when the
  list's feature is in parent_domain_matches_subdomains, ".domain" always),
  "type:table" (the client name, then the address, looked up as keys: any
  answer is a match), "/file/name" (more patterns), "!pattern" (exclusion).
The first matching pattern decides (match_list.c).
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Iterable

__all__ = ["NetworkList"]


def _read_file(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        out = []
        for line in f:
            out.extend(line.split("#", 1)[0].replace(",", " ").split())
        return out


class NetworkList:
    def __init__(self, patterns: Iterable[str], open_table: Callable | None = None,
                 parent: bool = True):
        self.parent = parent
        self.entries: list[tuple[bool, str, object]] = []
        for p in patterns:
            self._add(p, open_table)

    def _add(self, pat: str, open_table) -> None:
        negate = False
        while pat.startswith("!"):
            negate, pat = not negate, pat[1:]
        if not pat:
            return
        if pat.startswith("/"):
            for sub in _read_file(pat):      # OSError: the caller's config error
                self._add(("!" if negate else "") + sub, open_table)
            return
        net = pat
        if net.startswith("["):
            inner, _, rest = net[1:].partition("]")
            net = inner + rest
        try:
            if "/" in net:
                self.entries.append((negate, "net", ipaddress.ip_network(net, strict=False)))
            else:
                self.entries.append((negate, "net", ipaddress.ip_network(net)))
            return
        except ValueError:
            pass
        colon = pat.find(":")
        if colon > 0 and open_table is not None:
            self.entries.append((negate, "table", open_table(pat)))
            return
        self.entries.append((negate, "name", pat.lower()))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def match(self, name: str, addr: str) -> bool:
        """Raises TableTempFail from a table; the caller defers."""
        try:
            ip = ipaddress.ip_address(addr.split("%")[0]) if addr else None
        except ValueError:
            ip = None
        if ip is not None and ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        name = (name or "").lower()
        for negate, kind, pat in self.entries:
            if kind == "net":
                hit = ip is not None and ip.version == pat.version and ip in pat
            elif kind == "table":
                hit = ((name and name != "unknown" and pat.lookup(name) is not None)
                       or (ip is not None and pat.lookup(str(ip)) is not None))
            else:
                hit = bool(name) and name != "unknown" and (
                    name == pat or (pat.startswith(".") and name.endswith(pat))
                    or (self.parent and name.endswith("." + pat)))
            if hit:
                return not negate
        return False
