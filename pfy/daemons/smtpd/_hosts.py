"""/etc/hosts for client hostname lookups, read before chroot.

Postfix asks getnameinfo(), which consults /etc/hosts before DNS
(nsswitch "files dns"): a loopback client is "localhost[127.0.0.1]" even
without a DNS server. pfy.dns talks DNS only, so smtpd keeps the hosts
file's answers here. Not used when $PFY_RESOLV_CONF points the resolver
elsewhere (tests want DNS answers only).
"""

from __future__ import annotations

import ipaddress

__all__ = ["HostsFile"]


class HostsFile:
    def __init__(self, path: str = "/etc/hosts"):
        self.by_addr: dict[str, str] = {}
        self.by_name: dict[str, set[str]] = {}
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    words = line.split("#", 1)[0].split()
                    if len(words) < 2:
                        continue
                    try:
                        addr = str(ipaddress.ip_address(words[0].split("%")[0]))
                    except ValueError:
                        continue
                    self.by_addr.setdefault(addr, words[1].lower())
                    for name in words[1:]:
                        self.by_name.setdefault(name.lower().rstrip("."), set()).add(addr)
        except OSError:
            pass

    def peer_names(self, addr: str) -> tuple[str, str] | None:
        """(client_name, reverse_client_name) from the file, or None."""
        name = self.by_addr.get(addr)
        if name is None:
            return None
        confirmed = addr in self.by_name.get(name, ())
        return (name if confirmed else "unknown"), name
