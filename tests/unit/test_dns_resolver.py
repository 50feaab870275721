"""pfy.dns against tests/dnsserver.py on loopback: typed outcomes, FCrDNS,
DNSBL reply filters."""

import asyncio

import pytest

from pfy.dns import DnsStatus, Resolver
from pfy.dns.dnsbl import parse_dnsbl, query_dnsbl
from tests.dnsserver import DnsServer

ZONES = {
    "mx.example": {"A": ["192.0.2.1"], "MX": [(10, "mx.example")], "TXT": ["hello"]},
    "1.2.0.192.in-addr.arpa": {"PTR": ["mx.example"]},
    "2.2.0.192.in-addr.arpa": {"PTR": ["liar.example"]},
    "liar.example": {"A": ["192.0.2.99"]},
    "1.2.0.192.zen.example": {"A": ["127.0.0.4"], "TXT": ["listed: see zen"]},
}


@pytest.fixture(scope="module")
def dns():
    with DnsServer(ZONES) as d:
        d.fail.add("broken.example")
        yield d


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("name,rdtype,status", [
    ("mx.example", "A", DnsStatus.FOUND), ("mx.example", "AAAA", DnsStatus.NOTFOUND),
    ("nx.example", "A", DnsStatus.NOTFOUND), ("broken.example", "A", DnsStatus.TEMPFAIL),
])
def test_outcomes(dns, name, rdtype, status):
    r = Resolver.from_file(dns.resolv_conf)
    got = run(r.lookup(name, rdtype)).status
    assert got is status, f"got {got} want {status}"


def test_mx_records(dns):
    r = Resolver.from_file(dns.resolv_conf)
    assert run(r.mx("mx.example")).records == [(10, "mx.example")]


def test_forward_confirmed_reverse_dns(dns):
    r = Resolver.from_file(dns.resolv_conf)
    ok = run(r.peer_names("192.0.2.1"))
    assert (ok.name, ok.name_status, ok.reverse_name) == ("mx.example", "ok", "mx.example")
    forged = run(r.peer_names("192.0.2.2"))
    assert (forged.name, forged.name_status, forged.reverse_name) == ("unknown", "forged", "liar.example")
    none = run(r.peer_names("192.0.2.3"))
    assert (none.name, none.name_status, none.reverse_name) == ("unknown", "perm", "unknown")


@pytest.mark.parametrize("spec,listed", [
    ("zen.example", True), ("zen.example=127.0.0.[2..11]", True),
    ("zen.example=127.0.0.[2;3]", False), ("zen.example=127.0.0.4", True),
])
def test_dnsbl_filters(dns, spec, listed):
    r = Resolver.from_file(dns.resolv_conf)
    hit = run(query_dnsbl(r, parse_dnsbl(spec), "192.0.2.1", is_ip=True))
    assert (hit is not None) == listed
    if hit:
        assert hit.txt == "listed: see zen"


def test_resolv_conf_port_extension(tmp_path):
    p = tmp_path / "resolv.conf"
    p.write_text("nameserver 127.0.0.1:5353\nnameserver [::1]:5354\noptions timeout:2\n")
    r = Resolver.from_file(str(p))
    assert r._res.nameserver_ports == {"127.0.0.1": 5353, "::1": 5354}
