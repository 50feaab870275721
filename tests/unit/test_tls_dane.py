"""DANE TLSA matching (pfy.tls.dane) with literal and generated certificates,
and the DNSSEC AD bit through pfy.dns (tests/dnsserver.py on loopback)."""

from __future__ import annotations

import asyncio
import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pfy.dns import DnsStatus, Resolver
from pfy.tls import dane
from pfy.tls.dane import Tlsa, match_chain, parse_tlsa, usable, digest_types
from pfy.daemons.smtp.routing import parse_nexthop, resolve
from tests.dnsserver import DnsServer

# A self-signed P-256 certificate for mx.dane.test; the digests below were
# computed with the openssl(1) command, not with the code under test:
#   openssl x509 -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum
#   openssl x509 -outform DER | sha256sum
LITERAL = b"""-----BEGIN CERTIFICATE-----
MIIBnjCCAUSgAwIBAgIUKmXaCLx6do576XCmDO4EbaK49UUwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMbXguZGFuZS50ZXN0MCAXDTI2MTEyMjEzNTcyMFoYDzIxMjYx
MDI5MTM1NzIwWjAXMRUwEwYDVQQDDAxteC5kYW5lLnRlc3QwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAASwhdffowBD3/E7qKtL+jtsB1fchhYg00KISHpeCh6TeP8i
N8Z25be9tqgx1eUDdouJYTTBpnqxe9wtRaObtqJbo2wwajAdBgNVHQ4EFgQUCH7W
8ZG84aQ9jIUB+yZOE/P0SA4wHwYDVR0jBBgwFoAUCH7W8ZG84aQ9jIUB+yZOE/P0
SA4wDwYDVR0TAQH/BAUwAwEB/zAXBgNVHREEEDAOggxteC5kYW5lLnRlc3QwCgYI
KoZIzj0EAwIDSAAwRQIgAh5IeXY1ZtLTigqtEFYJG2tPcZSf6dKHxJHHQ73ZhtwC
IQCSlFofpLRdVKzrFVtvsAKK7q8hoZASqXTk/TQ3PPeWtQ==
-----END CERTIFICATE-----
"""
LIT_DER = ssl.PEM_cert_to_DER_cert(LITERAL.decode())
SPKI_SHA256 = "8f05d85e8b8492a6cd54292d4cc873b0c879d244c558cf35b38a44cc1aa34d5e"
CERT_SHA256 = "0946e6abb5b532ce9cfa80615863e55f88232b5fb37862633370f639519befc9"
SPKI_SHA512 = ("94aed7549e88a7109cc2f54c28d431de1bb7220ab4b335563d29613f1b4d3096"
               "199595c42c363000461605ad4a6a685e3076be963579d6f3ec830de4b534eed6")
OTHER = "ab" * 32
DIGESTS = digest_types(["sha512", "sha256"])


def rec(text: str) -> Tlsa:
    r = parse_tlsa(text)
    assert r is not None
    return r


@pytest.mark.parametrize("record", [
    f"3 1 1 {SPKI_SHA256}", f"3 0 1 {CERT_SHA256}", f"3 1 2 {SPKI_SHA512}",
    f"3 0 0 {LIT_DER.hex()}",
    f"3 1 1 {SPKI_SHA256[:32]} {SPKI_SHA256[32:]}",      # blanks inside the hex
])
def test_dane_ee_matches_the_literal_certificate(record):
    m = match_chain([LIT_DER], usable([rec(record)], DIGESTS), ["elsewhere.test"])
    assert m.matched and m.usage == dane.DANE_EE        # names do not matter for EE


def test_dane_ee_mismatch_is_num_65():
    m = match_chain([LIT_DER], usable([rec(f"3 1 1 {OTHER}")], DIGESTS), ["mx.dane.test"])
    assert not m.matched
    assert m.error == "num=65:no matching DANE TLSA records"


def test_one_matching_record_of_several_is_enough():
    recs = usable([rec(f"3 1 1 {OTHER}"), rec(f"3 1 1 {SPKI_SHA256}")], DIGESTS)
    assert match_chain([LIT_DER], recs, []).matched


def test_unusable_records_are_dropped():
    recs = [rec(f"0 1 1 {SPKI_SHA256}"), rec(f"1 1 1 {SPKI_SHA256}"),   # PKIX-TA/EE
            rec(f"3 2 1 {SPKI_SHA256}"),                                # selector 2
            rec(f"3 1 3 {SPKI_SHA256}"),                                # unknown mtype
            rec(f"3 1 1 {SPKI_SHA256[:-2]}"),                           # short digest
            rec(f"3 1 2 {SPKI_SHA256}")]                                # sha512 length wrong
    assert usable(recs, DIGESTS) == []
    # PKIX-EE would match by digest, but RFC 7672 says it is unusable.
    assert not match_chain([LIT_DER], usable(recs, DIGESTS), ["mx.dane.test"]).matched


def test_tls_dane_digests_limits_matching_types():
    only256 = digest_types(["sha256"])
    assert only256 == {1: "sha256"}
    assert usable([rec(f"3 1 2 {SPKI_SHA512}")], only256) == []
    assert usable([rec(f"3 1 1 {SPKI_SHA256}")], only256)
    assert digest_types("sha512, sha256") == {2: "sha512", 1: "sha256"}


def test_parse_tlsa_rejects_nonsense():
    assert parse_tlsa("3 1 1") is None
    assert parse_tlsa("x 1 1 abcd") is None
    assert parse_tlsa("3 1 1 zz") is None


# -- DANE-TA with a generated chain -----------------------------------------

def _cert(subject, issuer_name, key, issuer_key, ca, names=(), days=(-1, 2)):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=days[0]))
         .not_valid_after(now + datetime.timedelta(days=days[1]))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def chain():
    """root -> intermediate -> leaf (mx.ta.test, *.wild.test)."""
    rk, ik, lk = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("root", "root", rk, rk, True)
    inter = _cert("inter", "root", ik, rk, True)
    leaf = _cert("mx.ta.test", "inter", lk, ik, False, ["mx.ta.test", "*.wild.test"])
    expired = _cert("mx.ta.test", "inter", lk, ik, False, ["mx.ta.test"], days=(-3, -1))
    stranger = _cert("inter", "root", ec.generate_private_key(ec.SECP256R1()), rk, True)
    return {"root": root, "inter": inter, "leaf": leaf, "expired": expired,
            "stranger": stranger}


def _ta(der: bytes, selector: int = 1) -> Tlsa:
    if selector == 1:
        return Tlsa(2, 1, 1, dane.spki_sha256(der))
    import hashlib
    return Tlsa(2, 0, 1, hashlib.sha256(der).digest())


@pytest.mark.parametrize("anchor,selector,depth", [("inter", 1, 1), ("inter", 0, 1),
                                                   ("root", 1, 2), ("root", 0, 2)])
def test_dane_ta_matches_chain_and_name(chain, anchor, selector, depth):
    certs = [chain["leaf"], chain["inter"], chain["root"]]
    m = match_chain(certs, [_ta(chain[anchor], selector)], ["mx.ta.test"])
    assert m.matched and m.usage == dane.DANE_TA and m.depth == depth


def test_dane_ta_wildcard_name(chain):
    certs = [chain["leaf"], chain["inter"]]
    assert match_chain(certs, [_ta(chain["inter"])], ["smtp.wild.test"]).matched
    assert not match_chain(certs, [_ta(chain["inter"])], ["a.b.wild.test"]).matched


def test_dane_ta_name_mismatch_is_num_62(chain):
    m = match_chain([chain["leaf"], chain["inter"]], [_ta(chain["inter"])], ["mx.other.test"])
    assert not m.matched and m.error == "num=62:hostname mismatch"


def test_dane_ta_does_not_match_the_leaf_itself(chain):
    # A TA record names an issuer: the leaf's own key is not a trust anchor.
    m = match_chain([chain["leaf"], chain["inter"]], [_ta(chain["leaf"])], ["mx.ta.test"])
    assert not m.matched and m.error.startswith("num=65:")


def test_dane_ta_needs_signatures_and_dates(chain):
    # The sent "intermediate" matches the record but did not sign the leaf.
    m = match_chain([chain["leaf"], chain["stranger"]], [_ta(chain["stranger"])],
                    ["mx.ta.test"])
    assert not m.matched
    # An expired leaf under a good anchor fails; DANE-EE ignores dates.
    m = match_chain([chain["expired"], chain["inter"]], [_ta(chain["inter"])], ["mx.ta.test"])
    assert not m.matched
    ee = Tlsa(3, 1, 1, dane.spki_sha256(chain["expired"]))
    assert match_chain([chain["expired"]], [ee], []).matched


def test_dane_ta_anchor_not_sent_is_no_match(chain):
    # Known gap: a "2 x x" for a key the server does not send is not used.
    m = match_chain([chain["leaf"], chain["inter"]], [_ta(chain["root"])], ["mx.ta.test"])
    assert not m.matched


# -- the AD bit and TLSA records through pfy.dns ------------------------------

def resolve_targets(resolv_conf: str, domains: list[str]):
    async def go():
        r = Resolver.from_file(resolv_conf)
        r.enable_dnssec()
        return [await resolve(parse_nexthop(dom, 25), resolver=r, host_lookup=["dns"],
                              protocols=["ipv4"], mx_address_limit=5, ours=set())
                for dom in domains]
    return asyncio.run(go())


def test_resolver_reports_the_ad_bit():
    zones = {"mx.signed.test": {"A": ["192.0.2.1"]},
             "_25._tcp.mx.signed.test": {"TLSA": [f"3 1 1 {SPKI_SHA256}"]},
             "mx.plain.test": {"A": ["192.0.2.2"]}}
    with DnsServer(zones) as d:
        d.secure |= {"mx.signed.test", "_25._tcp.mx.signed.test"}

        async def go():
            plain = Resolver.from_file(d.resolv_conf)
            sec = Resolver.from_file(d.resolv_conf)
            sec.enable_dnssec()
            a = await sec.addresses("mx.signed.test")
            t = await sec.tlsa(25, "mx.signed.test")
            u = await sec.addresses("mx.plain.test")
            n = await plain.addresses("mx.signed.test")     # DNSSEC not asked for
            missing = await sec.tlsa(25, "mx.plain.test")
            return a, t, u, n, missing
        a, t, u, n, missing = asyncio.run(go())
    assert a.found and a.secure
    assert t.found and t.secure and parse_tlsa(t.records[0]) == rec(f"3 1 1 {SPKI_SHA256}")
    assert u.found and not u.secure
    assert n.found and not n.secure
    assert missing.status is DnsStatus.NOTFOUND


def test_routing_carries_dnssec_status():
    zones = {"signed.test": {"MX": [(10, "mx.signed.test")]},
             "mx.signed.test": {"A": ["192.0.2.1"]},
             "unsigned.test": {"MX": [(10, "mx.signed.test")]},
             "nomx.test": {"A": ["192.0.2.3"]}}
    with DnsServer(zones) as d:
        d.secure |= {"signed.test", "mx.signed.test", "nomx.test"}
        got = resolve_targets(d.resolv_conf, ["signed.test", "unsigned.test", "nomx.test"])
    (s,), (u,), (n,) = got
    assert (s.dnssec, s.mx_dnssec) == (True, True)
    assert (u.dnssec, u.mx_dnssec) == (True, False)
    assert (n.dnssec, n.mx_dnssec) == (True, None)       # implicit MX: no MX RRset
