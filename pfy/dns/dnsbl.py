"""DNS block and allow lists (RFC 5782), as Postfix's reject_rbl_client
and relatives query them.

A list is named "domain" or "domain=filter". The filter (postconf(5),
reject_rbl_client) restricts which A records count as "listed": each octet
is a number, "[n..m]" a range, or "[a;b;c]" a set (the forms may be mixed:
"[2..4;10]"); "127.0.0.2" and "127.0.0.[2..11]" are typical.  Without a
filter any A record lists the name.

A hit carries the TXT records of the same name (the list's stated reason),
which Postfix offers to reply templates as $rbl_reason / $rbl_txt.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from pfy.dns import DnsStatus, Resolver, reverse_ip

__all__ = ["DnsblSpec", "DnsblHit", "parse_dnsbl", "query_dnsbl", "DnsblError"]


class DnsblError(ValueError):
    """A malformed list specification (a configuration error)."""


@dataclass(frozen=True)
class DnsblSpec:
    domain: str
    filter: tuple | None          # four sets of allowed octet values, or None
    text: str                     # as written, for messages

    def accepts(self, address: str) -> bool:
        if self.filter is None:
            return True
        parts = address.split(".")
        if len(parts) != 4:
            return False
        try:
            return all(int(p) in allowed for p, allowed in zip(parts, self.filter))
        except ValueError:
            return False


@dataclass(frozen=True)
class DnsblHit:
    domain: str
    query: str
    addresses: tuple[str, ...]
    txt: str                      # first TXT record, "" if none


def _octet(text: str) -> frozenset:
    if text.startswith("[") and text.endswith("]"):
        out: set[int] = set()
        for item in text[1:-1].split(";"):
            lo, sep, hi = item.partition("..")
            try:
                a = int(lo)
                b = int(hi) if sep else a
            except ValueError:
                raise DnsblError(f"bad octet pattern {text!r}") from None
            if not (0 <= a <= b <= 255):
                raise DnsblError(f"bad octet range {item!r}")
            out.update(range(a, b + 1))
        return frozenset(out)
    if text.isdigit() and int(text) <= 255:
        return frozenset({int(text)})
    raise DnsblError(f"bad octet {text!r}")


def parse_dnsbl(spec: str) -> DnsblSpec:
    domain, sep, filt = spec.partition("=")
    domain = domain.strip().rstrip(".").lower()
    if not domain:
        raise DnsblError(f"missing domain in {spec!r}")
    if not sep:
        return DnsblSpec(domain, None, spec)
    octets = re.findall(r"\[[^\]]*\]|[^.]+", filt.strip())
    if len(octets) != 4:
        raise DnsblError(f"bad reply filter {filt!r} in {spec!r}")
    return DnsblSpec(domain, tuple(_octet(o) for o in octets), spec)


async def query_dnsbl(resolver: Resolver, spec: DnsblSpec, what: str, *, is_ip: bool) -> DnsblHit | None:
    """Look what (an IP address, reversed; or a domain name) up in the list.
    None when not listed, or when the lookup failed temporarily: Postfix
    treats an unreachable list as not listing anyone (a list outage must not
    stop mail)."""
    if is_ip:
        try:
            ip = ipaddress.ip_address(what)
        except ValueError:
            return None
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        query = f"{reverse_ip(str(ip))}.{spec.domain}"
    else:
        name = what.rstrip(".")
        if not name or name.startswith("["):
            return None          # address literals are not in RHS lists
        query = f"{name}.{spec.domain}"
    ans = await resolver.lookup(query, "A")
    if ans.status is not DnsStatus.FOUND:
        return None
    hits = tuple(a for a in ans.records if spec.accepts(a))
    if not hits:
        return None
    txt = await resolver.txt(query)
    reason = txt.records[0] if txt.found and txt.records else ""
    return DnsblHit(spec.domain, query, hits, reason)
