"""Where a delivery goes: next-hop syntax, MX and address lookups.

Next-hop forms (smtp(8), lmtp(8), transport(5)):
    smtp:  domain           MX lookup (smtp_host_lookup = dns), A/AAAA when
                            there is no MX (RFC 5321 5.1)
           [host]           no MX lookup; host may be [192.0.2.1] or [ipv6:...]
           host:port, [host]:port    with a port (number or service name)
    lmtp:  unix:/path       a UNIX-domain socket (relative to queue_directory,
                            the chroot jail)
           inet:host:port, inet:[host]:port, [host]:port, host: no MX lookups
                            (LMTP is for a final store), default port 24

MX rules (Postfix smtp_addr.c, RFC 5321 5.1, RFC 7505):
    - sorted by preference, random order among equal preferences;
    - a single MX with an empty host (".") is a null MX: bounce 5.1.0;
    - MX hosts at or above the preference of an MX that is this host
      (inet_interfaces / proxy_interfaces) are dropped; if nothing is
      left: "mail for X loops back to myself" (5.4.6);
    - at most smtp_mx_address_limit addresses in all;
    - a temporary DNS failure defers with the resolver's reason (4.4.3);
      a name that does not exist bounces (5.4.4).
Sans-I/O pieces (parse_nexthop, order_mx) are pure; resolve() awaits
pfy.dns or the system resolver (smtp_host_lookup = native).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from dataclasses import dataclass

from pfy.dns import DnsStatus

__all__ = ["Nexthop", "Target", "RouteError", "parse_nexthop", "order_mx", "resolve",
           "our_addresses"]


@dataclass(frozen=True)
class Nexthop:
    host: str            # domain, host name or address literal (no brackets)
    port: int
    mx: bool             # look up MX records
    unix: str = ""       # LMTP unix-domain socket path
    text: str = ""       # as written (for logs, SASL and TLS policy keys)

    @property
    def domain(self) -> str:
        return self.host


@dataclass(frozen=True)
class Target:
    hostname: str        # MX host name (or the address for a literal)
    address: str         # IP address, or the socket path for unix:
    port: int
    pref: int = 0
    unix: bool = False
    # DNSSEC (smtp_dns_support_level = dnssec): the AD bit of the address
    # lookup, and of the MX lookup (None: no MX record was used).
    dnssec: bool = False
    mx_dnssec: bool | None = None

    @property
    def namaddr(self) -> str:
        return f"{self.hostname}[{self.address}]"

    @property
    def relay(self) -> str:
        """relay= in the log: host[addr]:port, or host[path] for unix."""
        return self.namaddr if self.unix else f"{self.namaddr}:{self.port}"


class RouteError(Exception):
    """No target: ``dsn`` 4.x.x means try later, 5.x.x bounce."""

    def __init__(self, dsn: str, reason: str):
        super().__init__(reason)
        self.dsn = dsn
        self.reason = reason


def _port(text: str, default: int) -> int:
    if not text:
        return default
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    try:
        return socket.getservbyname(text, "tcp")
    except OSError:
        raise RouteError("5.4.4", f"unknown service: {text}/tcp") from None


def parse_nexthop(text: str, default_port: int, lmtp: bool = False) -> Nexthop:
    """Next-hop string -> Nexthop; RouteError for nonsense."""
    raw = text
    if lmtp:
        if text.startswith("unix:"):
            return Nexthop("", 0, False, unix=text[5:], text=raw)
        if text.startswith("inet:"):
            text = text[5:]
    mx = not lmtp
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RouteError("5.4.4", f"malformed next-hop destination: {raw}")
        host, rest = text[1:end], text[end + 1:]
        mx = False
        if rest and not rest.startswith(":"):
            raise RouteError("5.4.4", f"malformed next-hop destination: {raw}")
        port = _port(rest[1:], default_port)
    else:
        host, _, port_text = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        port = _port(port_text, default_port)
    if host.lower().startswith("ipv6:"):
        host = host[5:]
    if not host:
        raise RouteError("5.4.4", f"empty next-hop destination: {raw}")
    try:
        ipaddress.ip_address(host)
        mx = False
    except ValueError:
        pass
    return Nexthop(host.rstrip(".").lower() if not _is_ip(host) else host, port, mx, text=raw)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def order_mx(records: list[tuple[int, str]], rng: random.Random | None = None) -> list[tuple[int, str]]:
    """Preference order; equal preferences shuffled (RFC 5321 5.1)."""
    rng = rng or random
    groups: dict[int, list[str]] = {}
    for pref, host in records:
        groups.setdefault(pref, []).append(host)
    out = []
    for pref in sorted(groups):
        hosts = groups[pref]
        rng.shuffle(hosts)
        out += [(pref, h) for h in hosts]
    return out


def our_addresses(cfg) -> set[str]:
    """inet_interfaces and proxy_interfaces as addresses (loop detection)."""
    out: set[str] = set()
    for spec in list(cfg.inet_interfaces) + list(cfg.proxy_interfaces):
        s = spec.strip().lower()
        if not s:
            continue
        if s == "all":
            try:
                from pfy.config._interfaces import local_addresses
                out |= {str(i.ip) for i in local_addresses()}
            except Exception:   # noqa: BLE001 - no interface list: no extra loop check
                pass
        elif s in ("loopback-only", "localhost"):
            out |= {"127.0.0.1", "::1"}
        else:
            s = s.strip("[]")
            if _is_ip(s):
                out.add(str(ipaddress.ip_address(s)))
            else:
                try:
                    for info in socket.getaddrinfo(s, None):
                        out.add(info[4][0])
                except OSError:
                    pass
    return out


def _family_ok(addr: str, protocols: list[str]) -> bool:
    protos = {p.lower() for p in protocols}
    if "all" in protos or not protos:
        return True
    v = ipaddress.ip_address(addr).version
    return ("ipv4" in protos) if v == 4 else ("ipv6" in protos)


async def _host_addresses(resolver, host: str, lookup: str, protocols: list[str]):
    """(status, [addresses], reason, dnssec) for a host name."""
    if _is_ip(host):
        return DnsStatus.FOUND, [host], "", False
    if lookup == "native" or resolver is None:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as err:
            status = DnsStatus.TEMPFAIL if err.errno == socket.EAI_AGAIN else DnsStatus.NOTFOUND
            return status, [], err.strerror or "Host not found", False
        addrs = []
        for info in infos:
            if info[4][0] not in addrs:
                addrs.append(info[4][0])
        return DnsStatus.FOUND, [a for a in addrs if _family_ok(a, protocols)], "", False
    ans = await resolver.addresses(host)
    if not ans.found:
        return ans.status, [], ans.reason, False
    return DnsStatus.FOUND, [a for a in ans.records if _family_ok(a, protocols)], "", ans.secure


async def resolve(nexthop: Nexthop, *, resolver, host_lookup: list[str], protocols: list[str],
                  mx_address_limit: int, ours: set[str], lmtp: bool = False,
                  rng: random.Random | None = None) -> list[Target]:
    """The ordered targets for a next hop, or RouteError."""
    if nexthop.unix:
        return [Target("", nexthop.unix, 0, unix=True)]
    if isinstance(host_lookup, str):
        host_lookup = host_lookup.replace(",", " ").split()
    lookup = "dns" if "dns" in [h.lower() for h in host_lookup] else "native"
    name = nexthop.host
    mx_hosts: list[tuple[int, str]]
    mx_dnssec: bool | None = None
    if nexthop.mx and lookup == "dns" and resolver is not None:
        ans = await resolver.mx(name)
        if ans.status is DnsStatus.TEMPFAIL:
            raise RouteError("4.4.3", f"Host or domain name not found. Name service error "
                                      f"for name={name} type=MX: {ans.reason or 'Host not found, try again'}")
        if ans.found and ans.records:
            if len(ans.records) == 1 and ans.records[0][1] in ("", ".", "@"):
                raise RouteError("5.1.0", f"Domain {name} does not accept mail (nullMX)")
            mx_hosts = order_mx([(p, h) for p, h in ans.records if h not in ("", ".", "@")], rng)
            mx_dnssec = ans.secure
        else:
            mx_hosts = [(0, name)]          # RFC 5321 5.1: implicit MX
            nexthop = Nexthop(name, nexthop.port, False, text=nexthop.text)
    else:
        mx_hosts = [(0, name)]
    targets: list[Target] = []
    tempfail = ""
    notfound = ""
    for pref, host in mx_hosts:
        status, addrs, reason, secure = await _host_addresses(resolver, host, lookup, protocols)
        if status is DnsStatus.TEMPFAIL:
            tempfail = tempfail or (f"Host or domain name not found. Name service error for "
                                    f"name={host} type=A: {reason or 'Host not found, try again'}")
            continue
        if not addrs:
            notfound = notfound or (f"Host or domain name not found. Name service error for "
                                    f"name={host} type=A: {reason or 'Host not found'}")
            continue
        for a in addrs:
            targets.append(Target(host, a, nexthop.port, pref, dnssec=secure,
                                  mx_dnssec=mx_dnssec))
    # Loop detection (smtp_addr.c smtp_truncate_self): drop MX hosts at or
    # above the preference of one that is us.
    if nexthop.mx and ours:
        self_pref = min((t.pref for t in targets if _norm(t.address) in ours), default=None)
        if self_pref is not None:
            targets = [t for t in targets if t.pref < self_pref]
            if not targets:
                raise RouteError("5.4.6", f"mail for {name} loops back to myself")
    if not targets:
        if tempfail:
            raise RouteError("4.4.3", tempfail)
        raise RouteError("5.4.4", notfound or f"Host or domain name not found. "
                                              f"Name service error for name={name} type=A: Host not found")
    if mx_address_limit > 0:
        targets = targets[:mx_address_limit]
    return targets


def _norm(addr: str) -> str:
    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        return addr
