"""DANE for SMTP (RFC 6698, RFC 7671, RFC 7672): TLSA records and matching.

Pure functions: the caller looks the records up (pfy.dns, with the AD bit
of a trusted local validating resolver saying "secure") and hands the
server's certificate chain (DER, leaf first) to match_chain().

    recs = [Tlsa(3, 1, 1, bytes.fromhex("..."))]
    usable(recs, digests)          -> the records SMTP can use (RFC 7672 3.1.3)
    match_chain(chain, usable_recs, names, now=) -> DaneMatch(matched, error, usage)

Usages: DANE-EE(3) matches the leaf only, names and dates ignored (RFC 7672
3.1.1); DANE-TA(2) matches a certificate of the chain above the leaf (a
trust anchor the server must send: RFC 7672 3.1.2); the leaf must then chain
to it, be valid now, and carry one of the reference identifiers (Postfix:
the next-hop domain and the MX host name, RFC 7672 3.2.3, wildcards as
RFC 6125).  PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP and ignored.
Selectors: 0 full certificate, 1 SubjectPublicKeyInfo.  Matching types:
0 exact, 1 SHA2-256, 2 SHA2-512, each only when tls_dane_digests names it.

Known gap: a DANE-TA "2 1 0" record for a trust anchor that the server
does not send (a bare public key) is not used to check the top signature.

Error texts are OpenSSL's X509_verify_cert_error_string() (num=65 "no
matching DANE TLSA records", num=62 "hostname mismatch"), which Postfix's
tls_log_verify_error() logs as "server certificate verification failed for
host[addr]:port: num=65:no matching DANE TLSA records".
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
# Signature checks (DANE-TA) import these on first use, which inside the
# chroot would fail: load them with this module, before the jail.
import cryptography.hazmat.backends.openssl.backend  # noqa: F401,E402
from cryptography.hazmat.primitives.asymmetric import (  # noqa: F401,E402
    dsa, ec, ed448, ed25519, padding, rsa)

__all__ = ["Tlsa", "DaneMatch", "parse_tlsa", "usable", "match_chain", "digest_types",
           "DANE_TA", "DANE_EE", "ERR_NO_MATCH", "ERR_HOSTNAME"]

PKIX_TA, PKIX_EE, DANE_TA, DANE_EE = 0, 1, 2, 3
SEL_CERT, SEL_SPKI = 0, 1
# OpenSSL's numbers and texts (x509_txt.c), as Postfix logs them.
ERR_NO_MATCH = "num=65:no matching DANE TLSA records"
ERR_HOSTNAME = "num=62:hostname mismatch"
ERR_EXPIRED = "certificate has expired"

# RFC 6698 7.4 registry: matching type number and digest length.
_DIGESTS = {"sha256": (1, 32), "sha512": (2, 64)}


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


@dataclass(frozen=True)
class DaneMatch:
    matched: bool
    error: str = ""           # "num=65:..." when not matched
    usage: int | None = None  # DANE_EE or DANE_TA of the record that matched
    depth: int = 0            # chain depth of the matching certificate


def parse_tlsa(text: str) -> Tlsa | None:
    """"3 1 1 ABCD..." (presentation form, hex may contain blanks) -> Tlsa."""
    words = text.split()
    if len(words) < 4 or not all(w.isdigit() for w in words[:3]):
        return None
    try:
        data = bytes.fromhex("".join(words[3:]))
    except ValueError:
        return None
    return Tlsa(int(words[0]), int(words[1]), int(words[2]), data)


def digest_types(tls_dane_digests) -> dict[int, str]:
    """tls_dane_digests ("sha512 sha256", or "name=number") -> {mtype: name}."""
    if isinstance(tls_dane_digests, str):
        tls_dane_digests = tls_dane_digests.replace(",", " ").split()
    out: dict[int, str] = {}
    for item in tls_dane_digests or ():
        name, eq, num = item.lower().partition("=")
        if eq and num.isdigit():
            mtype = int(num)
        elif name in _DIGESTS:
            mtype = _DIGESTS[name][0]
        else:
            continue
        try:
            hashlib.new(name)
        except ValueError:
            continue
        if 0 < mtype < 256:
            out.setdefault(mtype, name)
    return out


def usable(records, digests: dict[int, str]) -> list[Tlsa]:
    """The records a DANE SMTP client can use (RFC 7672 3.1.3): usage 2 or
    3, selector 0 or 1, matching type 0 or a configured digest whose data
    has the digest's length."""
    out = []
    for r in records:
        if r.usage not in (DANE_TA, DANE_EE) or r.selector not in (SEL_CERT, SEL_SPKI):
            continue
        if r.mtype == 0:
            if not r.data:
                continue
        elif r.mtype in digests:
            if len(r.data) != hashlib.new(digests[r.mtype]).digest_size:
                continue
        else:
            continue
        out.append(r)
    return out


def _selected(cert: x509.Certificate, der: bytes, selector: int) -> bytes:
    if selector == SEL_CERT:
        return der
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def _matches(rec: Tlsa, cert: x509.Certificate, der: bytes, digests: dict[int, str]) -> bool:
    data = _selected(cert, der, rec.selector)
    if rec.mtype == 0:
        return data == rec.data
    name = digests.get(rec.mtype)
    if name is None:
        return False
    return hashlib.new(name, data).digest() == rec.data


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
        if names:
            return list(names)
    except x509.ExtensionNotFound:
        pass
    from cryptography.x509.oid import NameOID
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def name_matches(cert_names: list[str], reference: list[str]) -> bool:
    """RFC 6125 6.4.3 as Postfix: exact, or "*" as the whole left-most label."""
    for want in reference:
        w = want.lower().rstrip(".")
        if not w:
            continue
        for name in cert_names:
            n = name.lower().rstrip(".")
            if n == w or (n.startswith("*.") and "." in w and w.split(".", 1)[1] == n[2:]):
                return True
    return False


def _signed_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
        return True
    except Exception:   # noqa: BLE001 - a bad signature or an unsupported key: no
        return False


def _valid_at(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def match_chain(chain: list[bytes], records: list[Tlsa], names: list[str],
                digests: dict[int, str] | None = None,
                now: datetime.datetime | None = None) -> DaneMatch:
    """Does the server's chain (DER, leaf first) match a usable record?

    DANE-EE: the leaf matches; nothing else is checked.  DANE-TA: a chain
    certificate above the leaf matches, every certificate below it is
    signed by its successor and valid now, and the leaf names one of
    ``names``."""
    digests = digests if digests is not None else digest_types(["sha512", "sha256"])
    if not chain:
        return DaneMatch(False, ERR_NO_MATCH)
    try:
        certs = [x509.load_der_x509_certificate(d) for d in chain]
    except ValueError:
        return DaneMatch(False, ERR_NO_MATCH)
    for rec in records:
        if rec.usage == DANE_EE and _matches(rec, certs[0], chain[0], digests):
            return DaneMatch(True, usage=DANE_EE)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    error = ERR_NO_MATCH
    ta_records = [r for r in records if r.usage == DANE_TA]
    for depth in range(1, len(certs)):
        if not any(_matches(r, certs[depth], chain[depth], digests) for r in ta_records):
            continue
        # The path from the leaf up to the trust anchor must hold together.
        ok = all(_signed_by(certs[i], certs[i + 1]) and _valid_at(certs[i], now)
                 for i in range(depth))
        if not ok:
            continue
        if not name_matches(_names(certs[0]), names):
            error = ERR_HOSTNAME
            continue
        return DaneMatch(True, usage=DANE_TA, depth=depth)
    return DaneMatch(False, error)


def spki_sha256(der: bytes) -> bytes:
    """The "3 1 1" data of a certificate (tests, tools)."""
    cert = x509.load_der_x509_certificate(der)
    return hashlib.sha256(_selected(cert, der, SEL_SPKI)).digest()
