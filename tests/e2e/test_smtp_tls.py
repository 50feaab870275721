"""smtp(8) TLS client end to end, every smtp_tls_security_level, against a
private Debian Postfix whose certificate a test CA signed.

One pfy instance sends one message to each of several domains; a loopback
DNS server gives each domain its own MX name (mx-LEVEL.tls.test, all on
127.0.0.1, the Postfix peer), so each log line names the level it belongs
to, and smtp_tls_policy_maps sets each domain's level:

    none.example         none         no STARTTLS at all
    may.example          may          "Trusted" (smtp_tls_CAfile has the CA)
    encrypt.example      encrypt      "Trusted"
    verify.example       verify       "Verified" (MX name *.tls.test in the cert)
    badverify.example    verify match=elsewhere.test   deferred, not verified
    secure.example       secure       "Verified" (next-hop secure.example in the cert)
    badsecure.example    secure       deferred: the cert does not name it
    fingerprint.example  fingerprint match=<sha256 of the cert>   "Verified"
    badfp.example        fingerprint match=<another digest>        deferred
    plain.example        encrypt      the MX is smtp-sink without STARTTLS:
                                      deferred, and nothing reached the sink
    fallback.example     may protocols=<=TLSv1.2   the peer speaks TLSv1.3 only:
                         the handshake fails, the first attempt defers, the
                         retry goes in plaintext (Postfix's opportunistic
                         fallback after minimal_backoff_time)
"""

from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instance import Instance
from tests.conftest import postfix_bin
from tests.dnsserver import DnsServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from bench_relay import PostfixPeer  # noqa: E402

# The peer's address: not 127.0.0.1, which is pfy's own (an MX there is a loop).
PEER = "127.0.0.3"
LEVELS = {
    "none": "none", "may": "may", "encrypt": "encrypt", "verify": "verify",
    "badverify": "verify match=elsewhere.test", "secure": "secure", "badsecure": "secure",
    "fingerprint": "fingerprint match={fp}", "badfp": "fingerprint match=" + ":".join(["AB"] * 32),
    "plain": "encrypt", "fallback": "may protocols=<=TLSv1.2",
}


def make_ca_and_leaf(root: Path, names: list[str]) -> tuple[Path, Path, Path, str]:
    """A test CA and a server certificate it signed for ``names``:
    (ca.pem, key.pem, cert.pem, SHA-256 fingerprint of the leaf)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pfy test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem, key_pem, cert_pem = root / "ca.pem", root / "key.pem", root / "cert.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    os.chmod(key_pem, 0o600)
    fp = ":".join(f"{b:02X}" for b in hashlib.sha256(
        leaf.public_bytes(serialization.Encoding.DER)).digest())
    return ca_pem, key_pem, cert_pem, fp


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    postfix_bin("postfix")
    if os.geteuid() != 0:
        pytest.skip("needs root: the Postfix peer runs its own master")
    root = tmp_path_factory.mktemp("smtptls")
    ca, key, cert, fp = make_ca_and_leaf(root, ["mx.tls.test", "*.tls.test", "secure.example"])
    peer = PostfixPeer(root / "peer", {
        "myhostname": "mx.tls.test",
        "relay_domains": " ".join(f"{d}.example" for d in LEVELS),
        # Accept and throw away: the test is about how the mail got here.
        "relay_transport": "discard:", "default_transport": "discard:",
        "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": cert,
        "smtpd_tls_key_file": key, "smtpd_tls_loglevel": "1",
        # TLS 1.3 only, so that a client limited to TLS 1.2 fails the handshake.
        "smtpd_tls_protocols": ">=TLSv1.3", "smtpd_tls_mandatory_protocols": ">=TLSv1.3"},
        host=PEER)
    port = peer.smtp_port
    zones = {}
    for d in LEVELS:
        host = "mx-plain.other.test" if d == "plain" else f"mx-{d}.tls.test"
        zones[f"{d}.example"] = {"MX": [(10, host)]}
        zones[host] = {"A": ["127.0.0.2" if d == "plain" else PEER]}
    policy = root / "tls_policy"
    policy.write_text("".join(f"{d}.example {v.format(fp=fp)}\n" for d, v in LEVELS.items()))
    dump = root / "sink-dump"
    dump.mkdir()
    os.chmod(dump, 0o777)
    sink = subprocess.Popen([postfix_bin("smtp-sink"), "-u", "postfix", "-d", str(dump) + "/",
                             f"127.0.0.2:{port}", "20"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mp = pytest.MonkeyPatch()
    try:
        with peer, DnsServer(zones) as dns:
            peer.start()
            mp.setenv("PFY_RESOLV_CONF", dns.resolv_conf)
            with Instance(root / "pfy", main_cf={
                    "myhostname": "pfy.example", "smtp_tcp_port": str(port),
                    "smtp_tls_security_level": "may", "smtp_tls_CAfile": str(ca),
                    "smtp_tls_policy_maps": f"texthash:{policy}",
                    "smtp_tls_fingerprint_digest": "sha256",
                    "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
                    "queue_run_delay": "1s"}) as inst:
                inst.start()
                for d in LEVELS:
                    p = inst.command("sendmail", "-f", "a@pfy.example", f"u@{d}.example",
                                     input=f"Subject: tls {d}\n\nsecret {d}\n".encode())
                    assert p.returncode == 0, p.stderr
                yield inst, peer, dump
    finally:
        mp.undo()
        sink.kill()
        sink.wait()


def _mx(d: str) -> str:
    return f"mx-{d}\\.tls\\.test\\[127\\.0\\.0\\.3\\]:\\d+"


def _status(inst, d, status) -> str:
    return inst.wait_for_log(rf"to=<u@{d}\.example>.*status={status}", timeout=20)[0]


def test_level_none_sends_in_plaintext(world):
    inst, peer, _ = world
    _status(inst, "none", "sent")
    assert "connection established to mx-none" not in inst.log()


@pytest.mark.parametrize("d,word", [("may", "Trusted"), ("encrypt", "Trusted"),
                                    ("verify", "Verified"), ("secure", "Verified"),
                                    ("fingerprint", "Verified")])
def test_level_established(world, d, word):
    inst, peer, _ = world
    line = inst.wait_for_log(rf"postfix/smtp\[\d+\]: {word} TLS connection established to "
                             rf"{_mx(d)}: TLSv1\.3 with cipher \S+ \(\d+/\d+ bits\)", timeout=20)
    assert line
    sent = _status(inst, d, "sent")
    assert f"relay=mx-{d}.tls.test[{PEER}]:{peer.smtp_port}" in sent
    peer.wait_for_log(r"TLS connection established from .*TLSv1\.3")


@pytest.mark.parametrize("d", ["badverify", "badsecure", "badfp"])
def test_unverified_peer_is_deferred(world, d):
    inst, peer, _ = world
    line = _status(inst, d, "deferred")
    assert "dsn=4.7.5" in line
    assert "(Server certificate not verified)" in line
    # The session ended after the handshake: no MAIL FROM was sent.
    assert f"to=<u@{d}.example>, relay=mx-{d}" in line


def test_encrypt_without_starttls_defers_and_sends_nothing(world):
    inst, peer, dump = world
    line = _status(inst, "plain", "deferred")
    assert "dsn=4.7.4" in line
    assert "TLS is required, but was not offered by host mx-plain.other.test[127.0.0.2]" in line
    assert list(dump.iterdir()) == []                      # nothing in the clear


def test_may_falls_back_to_plaintext_after_handshake_failure(world):
    inst, peer, _ = world
    inst.wait_for_log(rf"SSL_connect error to {_mx('fallback')}", timeout=20)
    first = _status(inst, "fallback", "deferred")
    assert "Cannot start TLS: handshake failure" in first and "dsn=4.7.5" in first
    # The retry, once the message has waited minimal_backoff_time, goes in
    # plaintext to the same server.
    sent = inst.wait_for_log(r"to=<u@fallback\.example>.*status=sent", timeout=30)[0]
    assert f"relay=mx-fallback.tls.test[{PEER}]" in sent
    assert "connection established to mx-fallback" not in inst.log()
