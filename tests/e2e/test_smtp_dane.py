"""smtp(8) DANE end to end: a loopback DNS server with AD bits, TLSA records,
and a private Debian Postfix receiver whose certificate a test CA signed
(the receiver sends the chain: leaf and CA, for DANE-TA).

main.cf: smtp_dns_support_level = dnssec, smtp_tls_security_level = dane,
no smtp_tls_CAfile (so an unauthenticated peer logs "Untrusted").  Each
domain has its own MX name (all on 127.0.0.3, the Postfix peer); TLSA
records sit at _PORT._tcp.<mx> (the port of the next hop):

    ee.example          secure; 3 1 1 <leaf SPKI>        Verified, sent
    ee0.example         secure; 3 0 2 <leaf cert SHA-512> Verified, sent
    bad.example         secure; 3 1 1 <another digest>   deferred 4.7.5, nothing sent
    insecure.example    TLSA right but no AD bit         "may": Untrusted, sent
    unusable.example    secure; only 1 1 1 (PKIX-EE)     "encrypt": Untrusted, sent
    ta.example          secure; 2 1 1 <CA SPKI>          Verified, sent
    taname.example      secure; 2 1 1 <CA SPKI>, MX name not in the cert: deferred
    insecuremx.example  MX without AD, host and TLSA secure: "half-dane"
                        (smtp_tls_dane_insecure_mx_policy = dane): Trusted, sent
    servfail.example    TLSA lookup SERVFAIL             deferred "TLSA lookup error"
    only.example        dane-only (policy map), no TLSA  deferred "no TLSA records found"
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from instance import Instance
from tests.conftest import postfix_bin
from tests.dnsserver import DnsServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_relay import PostfixPeer  # noqa: E402
from test_smtp_tls import make_ca_and_leaf  # noqa: E402

PEER = "127.0.0.3"
DOMAINS = ("ee", "ee0", "bad", "insecure", "unusable", "ta", "taname", "insecuremx",
           "servfail", "only")


def _spki_sha256(pem: Path) -> str:
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    postfix_bin("postfix")
    if os.geteuid() != 0:
        pytest.skip("needs root: the Postfix peer runs its own master")
    root = tmp_path_factory.mktemp("smtpdane")
    ca, key, cert, _ = make_ca_and_leaf(root, ["mx.dane.test", "*.dane.test"])
    chain = root / "chain.pem"
    chain.write_bytes(cert.read_bytes() + ca.read_bytes())
    leaf_der = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(
        serialization.Encoding.DER)
    peer = PostfixPeer(root / "peer", {
        "myhostname": "mx.dane.test",
        "relay_domains": " ".join(f"{d}.example" for d in DOMAINS),
        "relay_transport": "discard:", "default_transport": "discard:",
        "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": chain,
        "smtpd_tls_key_file": key, "smtpd_tls_loglevel": "1"}, host=PEER)
    port = peer.smtp_port
    leaf_spki = _spki_sha256(cert)
    tlsa = {
        "ee": [f"3 1 1 {leaf_spki}"],
        "ee0": [f"3 0 2 {hashlib.sha512(leaf_der).hexdigest()}"],
        "bad": ["3 1 1 " + "ab" * 32],
        "insecure": [f"3 1 1 {leaf_spki}"],
        "unusable": [f"1 1 1 {leaf_spki}"],
        "ta": [f"2 1 1 {_spki_sha256(ca)}"],
        "taname": [f"2 1 1 {_spki_sha256(ca)}"],
        "insecuremx": [f"3 1 1 {leaf_spki}"],
        "servfail": [f"3 1 1 {leaf_spki}"],
    }
    zones: dict = {}
    dns_secure = set()
    for d in DOMAINS:
        host = "mx-taname.other.test" if d == "taname" else f"mx-{d}.dane.test"
        zones[f"{d}.example"] = {"MX": [(10, host)]}
        zones[host] = {"A": [PEER]}
        names = [f"{d}.example", host]
        if d in tlsa:
            zones[f"_{port}._tcp.{host}"] = {"TLSA": tlsa[d]}
            names.append(f"_{port}._tcp.{host}")
        if d == "insecure":
            names.remove(f"_{port}._tcp.{host}")
        if d == "insecuremx":
            names.remove(f"{d}.example")
        dns_secure |= set(names)
    policy = root / "tls_policy"
    policy.write_text("only.example dane-only\n")
    mp = pytest.MonkeyPatch()
    try:
        with peer, DnsServer(zones) as dns:
            dns.secure |= dns_secure
            dns.fail.add(f"_{port}._tcp.mx-servfail.dane.test")
            peer.start()
            mp.setenv("PFY_RESOLV_CONF", dns.resolv_conf)
            with Instance(root / "pfy", main_cf={
                    "myhostname": "pfy.example", "smtp_tcp_port": str(port),
                    "smtp_dns_support_level": "dnssec",
                    "smtp_tls_security_level": "dane",
                    "smtp_tls_policy_maps": f"texthash:{policy}",
                    "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
                    "queue_run_delay": "1s"}) as inst:
                inst.start()
                for d in DOMAINS:
                    p = inst.command("sendmail", "-f", "a@pfy.example", f"u@{d}.example",
                                     input=f"Subject: dane {d}\n\nsecret {d}\n".encode())
                    assert p.returncode == 0, p.stderr
                yield inst, peer, port
    finally:
        mp.undo()


def _relay(d: str, port: int) -> str:
    host = "mx-taname\\.other\\.test" if d == "taname" else f"mx-{d}\\.dane\\.test"
    return f"{host}\\[127\\.0\\.0\\.3\\]:{port}"


def _status(inst, d, status) -> str:
    return inst.wait_for_log(rf"to=<u@{d}\.example>.*status={status}", timeout=20)[0]


@pytest.mark.parametrize("d,word", [("ee", "Verified"), ("ee0", "Verified"),
                                    ("ta", "Verified"), ("insecure", "Untrusted"),
                                    ("unusable", "Untrusted"), ("insecuremx", "Trusted")])
def test_delivered(world, d, word):
    inst, peer, port = world
    inst.wait_for_log(rf"postfix/smtp\[\d+\]: {word} TLS connection established to "
                      rf"{_relay(d, port)}: TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)",
                      timeout=20)
    sent = _status(inst, d, "sent")
    assert f"relay=mx-{d}.dane.test[{PEER}]:{port}" in sent
    peer.wait_for_log(rf"to=<u@{d}\.example>.*status=sent", timeout=20)


@pytest.mark.parametrize("d,error", [("bad", "num=65:no matching DANE TLSA records"),
                                     ("taname", "num=62:hostname mismatch")])
def test_tlsa_mismatch_defers_and_sends_nothing(world, d, error):
    inst, peer, port = world
    inst.wait_for_log(rf"postfix/smtp\[\d+\]: server certificate verification failed for "
                      rf"{_relay(d, port)}: {error}", timeout=20)
    inst.wait_for_log(rf"Untrusted TLS connection established to {_relay(d, port)}",
                      timeout=20)
    line = _status(inst, d, "deferred")
    assert "dsn=4.7.5" in line and "(Server certificate not verified)" in line
    assert f"to=<u@{d}.example>" not in peer.log()       # no MAIL FROM was sent
    assert not [ln for ln in inst.log().splitlines()
                if "Verified TLS" in ln and f"mx-{d}." in ln]


def test_tlsa_lookup_failure_defers(world):
    inst, peer, port = world
    inst.wait_for_log(rf"warning: TLS policy lookup for servfail\.example/"
                      rf"mx-servfail\.dane\.test: TLSA lookup error for "
                      rf"mx-servfail\.dane\.test:{port}", timeout=20)
    line = _status(inst, "servfail", "deferred")
    assert "dsn=4.7.5" in line
    assert f"(TLSA lookup error for mx-servfail.dane.test:{port})" in line
    assert "relay=none" in line
    assert "connection established to mx-servfail" not in inst.log()


def test_dane_only_without_tlsa_defers(world):
    inst, peer, port = world
    inst.wait_for_log(r"warning: TLS policy lookup for only\.example/mx-only\.dane\.test: "
                      r"no TLSA records found", timeout=20)
    line = _status(inst, "only", "deferred")
    assert "dsn=4.7.5" in line and "(no TLSA records found)" in line
    assert "to=<u@only.example>" not in peer.log()
