"""Asynchronous DNS for the daemons, over dnspython, with typed outcomes.

Postfix's dns_lookup() has three outcomes that matter to its callers, and so
does this module: found, not found (NXDOMAIN, or the name exists without
records of that type: DNS_NOTFOUND), and temporary failure (SERVFAIL,
timeout, no server reachable: DNS_RETRY).  Callers decide what a temporary
failure means (usually "defer if permitted"); nobody parses exception text.

Configuration is read once, before chroot: $PFY_RESOLV_CONF when set, else
/etc/resolv.conf.  The file has resolv.conf(5) syntax; as a pfy extension a
"nameserver" line may carry a port ("nameserver 127.0.0.1:5353",
"nameserver [::1]:5353"), which is how tests point every daemon of an
instance at a DNS server on loopback (tests/dnsserver.py).  Names are always
looked up as absolute names: like Postfix's smtpd (RES_DEFNAMES and
RES_DNSRCH off), no search list is applied to client-supplied names.

DNSSEC (smtp_dns_support_level = dnssec): like Postfix, pfy does not
validate; it asks with the DO bit and the AD flag set (RFC 6840 5.7) and
believes the AD bit of the answer from the configured resolver, which must
be a trusted, local, validating one.  DnsAnswer.secure is that bit; without
Resolver.dnssec it is always False.

Answers are cached per process for their TTL (at most CACHE_MAX_TTL), like
Postfix's per-process ctable caches of RBL and address lookups, so that
smtpd_delay_reject's per-RCPT re-evaluation costs no extra queries.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import time
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from pfy import log

__all__ = ["Resolver", "DnsStatus", "DnsAnswer", "PeerNames", "RESOLV_CONF_ENV",
           "valid_hostname", "valid_hostaddr", "reverse_ip"]

RESOLV_CONF_ENV = "PFY_RESOLV_CONF"
# Postfix ctable caches hold 100 entries for the process life; a TTL bound
# keeps a long-lived multi-session process honest about zone changes.
CACHE_MAX_TTL = 300
CACHE_NEG_TTL = 60
CACHE_SIZE = 2000


def preload() -> None:
    """Import what dnspython loads lazily (rdata classes, the asyncio
    backend, the IDNA codec), so that lookups work after chroot, where
    the modules can no longer be found. Called before the jail."""
    import encodings.idna  # noqa: F401
    import dns.asyncbackend
    import dns.asyncquery  # noqa: F401
    import dns.edns  # noqa: F401
    import dns.rdata
    import dns.rdataclass
    dns.asyncbackend.get_backend("asyncio")
    for rdtype in ("A", "AAAA", "PTR", "MX", "TXT", "CNAME", "NS", "SOA", "SPF", "OPT", "TLSA"):
        dns.rdata.get_rdata_class(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))


class DnsStatus(enum.Enum):
    FOUND = "found"
    NOTFOUND = "notfound"      # NXDOMAIN or NODATA (Postfix DNS_NOTFOUND)
    TEMPFAIL = "tempfail"      # SERVFAIL, timeout, no servers (DNS_RETRY)


@dataclass(frozen=True)
class DnsAnswer:
    status: DnsStatus
    records: list = field(default_factory=list)
    ttl: int = 0
    reason: str = ""           # for log lines only
    secure: bool = False       # the AD bit (only when the resolver asks for DNSSEC)

    @property
    def found(self) -> bool:
        return self.status is DnsStatus.FOUND


@dataclass(frozen=True)
class PeerNames:
    """smtpd_peer.c results: name is forward-confirmed (else "unknown")."""
    name: str
    name_status: str           # "ok" | "temp" | "perm" | "forged"
    reverse_name: str
    reverse_name_status: str   # "ok" | "temp" | "perm"


def valid_hostname(name: str) -> bool:
    """Postfix valid_hostname(): labels of letters, digits, '-' and '_',
    not starting or ending with '-', at most 63 octets each, 255 in all;
    not all-numeric (that is an address)."""
    if not name or len(name) > 255:
        return False
    labels = name.split(".")
    for label in labels:
        if not label or len(label) > 63:
            return False
        if label[0] == "-" or label[-1] == "-":
            return False
        for ch in label:
            if not (ch.isascii() and (ch.isalnum() or ch in "-_")):
                return False
    # valid_hostname.c: "numeric hostname" when every label is numeric.
    if all(label.isdigit() for label in labels):
        return False
    return True


def valid_hostaddr(addr: str) -> bool:
    if addr.lower().startswith("ipv6:"):
        addr = addr[5:]
    try:
        ipaddress.ip_address(addr)
        return True
    except ValueError:
        return False


def reverse_ip(addr: str) -> str:
    """1.2.3.4 -> "4.3.2.1"; IPv6 -> nibbles (RFC 5782 2.1 and 2.4)."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return ".".join(reversed(str(ip).split(".")))
    return ".".join(reversed(ip.exploded.replace(":", "")))


def _parse_resolv_conf(path: str) -> tuple[list[str], dict[str, int], float, int]:
    servers: list[str] = []
    ports: dict[str, int] = {}
    timeout, attempts = 5.0, 2          # resolv.conf(5) defaults
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            words = line.split("#", 1)[0].split(";", 1)[0].split()
            if not words:
                continue
            if words[0] == "nameserver" and len(words) > 1:
                host, port = words[1], 53
                if host.startswith("["):
                    inner, _, rest = host[1:].partition("]")
                    host = inner
                    if rest.startswith(":") and rest[1:].isdigit():
                        port = int(rest[1:])
                elif host.count(":") == 1:
                    h, _, p = host.partition(":")
                    if p.isdigit():
                        host, port = h, int(p)
                try:
                    ipaddress.ip_address(host)
                except ValueError:
                    continue
                servers.append(host)
                ports[host] = port
            elif words[0] == "options":
                for opt in words[1:]:
                    name, _, val = opt.partition(":")
                    if name == "timeout" and val.isdigit():
                        timeout = float(val)
                    elif name == "attempts" and val.isdigit():
                        attempts = max(1, int(val))
    return servers, ports, timeout, attempts


class Resolver:
    """Async lookups with typed outcomes and a small per-process cache."""

    def __init__(self, nameservers: list[str] | None = None, ports: dict[str, int] | None = None,
                 timeout: float = 5.0, attempts: int = 2, clock=time.monotonic):
        self._res = dns.asyncresolver.Resolver(configure=False)
        self._res.nameservers = list(nameservers or ["127.0.0.1"])
        self._res.nameserver_ports = dict(ports or {})
        self._res.timeout = timeout
        self._res.lifetime = timeout * attempts
        self._res.use_search_by_default = False
        self._res.search = []
        self._res.cache = None
        self._cache: dict[tuple[str, str], tuple[float, DnsAnswer]] = {}
        self._clock = clock
        self.dnssec = False

    def enable_dnssec(self) -> None:
        """smtp_dns_support_level = dnssec: queries carry the DO bit and
        the AD flag; answers report the AD bit as DnsAnswer.secure."""
        self.dnssec = True
        self._res.use_edns(0, dns.flags.DO, 1232)
        self._res.flags = dns.flags.RD | dns.flags.AD
        self._cache.clear()

    @classmethod
    def from_file(cls, path: str) -> "Resolver":
        servers, ports, timeout, attempts = _parse_resolv_conf(path)
        return cls(servers, ports, timeout, attempts)

    @classmethod
    def from_environment(cls) -> "Resolver":
        preload()
        """$PFY_RESOLV_CONF, else /etc/resolv.conf; a missing file means
        the local resolver on 127.0.0.1, as the C library assumes."""
        path = os.environ.get(RESOLV_CONF_ENV) or "/etc/resolv.conf"
        try:
            return cls.from_file(path)
        except OSError as err:
            log.warning("cannot read resolver configuration %s: %s", path, err)
            return cls()

    async def lookup(self, name: str, rdtype: str) -> DnsAnswer:
        key = (name.lower().rstrip("."), rdtype)
        now = self._clock()
        hit = self._cache.get(key)
        if hit and hit[0] > now:
            return hit[1]
        ans = await self._query(name, rdtype)
        if ans.status is not DnsStatus.TEMPFAIL:
            ttl = min(ans.ttl, CACHE_MAX_TTL) if ans.found else CACHE_NEG_TTL
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = (now + ttl, ans)
        return ans

    async def _query(self, name: str, rdtype: str) -> DnsAnswer:
        try:
            qname = dns.name.from_text(name.rstrip(".") + ".") if name else None
        except (dns.exception.DNSException, ValueError, UnicodeError) as err:
            # A malformed name cannot exist: Postfix treats it as not found.
            return DnsAnswer(DnsStatus.NOTFOUND, reason=f"malformed name: {err}")
        if qname is None:
            return DnsAnswer(DnsStatus.NOTFOUND, reason="empty name")
        try:
            answer = await self._res.resolve(qname, rdtype, search=False,
                                             raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return DnsAnswer(DnsStatus.NOTFOUND, reason="Host not found")
        except dns.resolver.YXDOMAIN:
            return DnsAnswer(DnsStatus.NOTFOUND, reason="name too long")
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as err:
            return DnsAnswer(DnsStatus.TEMPFAIL, reason=f"Host not found, try again ({err.__class__.__name__})")
        except dns.exception.DNSException as err:
            return DnsAnswer(DnsStatus.TEMPFAIL, reason=str(err) or err.__class__.__name__)
        rrset = answer.rrset
        secure = self.dnssec and bool(answer.response.flags & dns.flags.AD)
        if rrset is None:
            return DnsAnswer(DnsStatus.NOTFOUND, reason="No data", secure=secure)
        records: list = []
        for rd in rrset:
            if rdtype == "MX":
                records.append((rd.preference, rd.exchange.to_text(omit_final_dot=True).lower()))
            elif rdtype == "TXT":
                records.append(b"".join(rd.strings).decode("utf-8", "replace"))
            elif rdtype in ("PTR", "CNAME", "NS"):
                records.append(rd.target.to_text(omit_final_dot=True))
            else:
                records.append(rd.to_text())
        return DnsAnswer(DnsStatus.FOUND, records, rrset.ttl, secure=secure)

    async def addresses(self, name: str) -> DnsAnswer:
        """A then AAAA: found if either has records; temporary failure only
        if neither found anything and one failed temporarily."""
        a = await self.lookup(name, "A")
        aaaa = await self.lookup(name, "AAAA")
        records = (a.records if a.found else []) + (aaaa.records if aaaa.found else [])
        if records:
            found = [x for x in (a, aaaa) if x.found]
            return DnsAnswer(DnsStatus.FOUND, records, min(x.ttl for x in found),
                             secure=all(x.secure for x in found))
        if DnsStatus.TEMPFAIL in (a.status, aaaa.status):
            return DnsAnswer(DnsStatus.TEMPFAIL, reason=a.reason or aaaa.reason)
        return DnsAnswer(DnsStatus.NOTFOUND, reason=a.reason)

    async def txt(self, name: str) -> DnsAnswer:
        return await self.lookup(name, "TXT")

    async def mx(self, name: str) -> DnsAnswer:
        return await self.lookup(name, "MX")

    async def tlsa(self, port: int, host: str) -> DnsAnswer:
        """_port._tcp.host TLSA (RFC 7672 2.2.3); records in presentation
        form ("3 1 1 <hex>"), secure from the AD bit."""
        return await self.lookup(f"_{port}._tcp.{host}", "TLSA")

    async def ptr(self, addr: str) -> DnsAnswer:
        try:
            rev = dns.reversename.from_address(addr).to_text(omit_final_dot=True)
        except (dns.exception.DNSException, ValueError):
            return DnsAnswer(DnsStatus.NOTFOUND, reason="bad address")
        return await self.lookup(rev, "PTR")

    async def peer_names(self, addr: str) -> PeerNames:
        """Postfix smtpd_peer.c: the PTR name becomes reverse_client_name;
        client_name is that name only when it resolves back to addr
        (forward-confirmed reverse DNS), else "unknown"."""
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return PeerNames("unknown", "perm", "unknown", "perm")
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        addr = str(ip)
        ptr = await self.ptr(addr)
        if not ptr.found:
            status = "temp" if ptr.status is DnsStatus.TEMPFAIL else "perm"
            return PeerNames("unknown", status, "unknown", status)
        name = ptr.records[0]
        if valid_hostaddr(name):
            log.warning("numeric hostname: %s", name)
            return PeerNames("unknown", "perm", "unknown", "perm")
        if not valid_hostname(name):
            log.warning("malformed hostname: %s", name)   # unverified text
            return PeerNames("unknown", "perm", "unknown", "perm")
        fwd = await (self.lookup(name, "A") if ip.version == 4 else self.lookup(name, "AAAA"))
        if not fwd.found:
            status = "temp" if fwd.status is DnsStatus.TEMPFAIL else "perm"
            log.warning("hostname %s does not resolve to address %s: %s",
                        name, addr, fwd.reason or "No address associated with hostname")
            return PeerNames("unknown", status, name, "ok")
        for rec in fwd.records:
            try:
                if ipaddress.ip_address(rec) == ip:
                    return PeerNames(name, "ok", name, "ok")
            except ValueError:
                continue
        log.warning("hostname %s does not resolve to address %s", name, addr)
        return PeerNames("unknown", "forged", name, "ok")
