"""What a finished TLS handshake tells us, in Postfix's words.

Log line (tls_server.c, tls_log_summary()):
    Anonymous TLS connection established from host[addr]: TLSv1.3 with cipher
    TLS_AES_256_GCM_SHA384 (256/256 bits)
"Trusted" replaces "Anonymous" when the client presented a certificate that
verified against the CA files ("Untrusted" when it did not).
Received header comment (smtpd.c, with smtpd_tls_received_header = yes):
    (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
    (No client certificate requested)
Fingerprints for check_ccert_access: the digest of the DER certificate (or
of its SubjectPublicKeyInfo), upper-case hex pairs joined by ":".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["TlsInfo", "tls_info", "fingerprint"]


def fingerprint(der: bytes, digest: str = "sha256") -> str:
    """Postfix tls_fingerprint(): 'AB:CD:...'."""
    try:
        h = hashlib.new(digest, der)
    except ValueError:
        h = hashlib.sha256(der)
    return ":".join(f"{b:02X}" for b in h.digest())


@dataclass(frozen=True)
class TlsInfo:
    protocol: str                 # "TLSv1.3"
    cipher_name: str              # "TLS_AES_256_GCM_SHA384"
    cipher_usebits: int
    cipher_algbits: int
    peer_cert: bool = False       # the client presented a certificate
    peer_trusted: bool = False    # ... and it verified against our CAs
    peer_cn: str = ""
    issuer_cn: str = ""
    peer_cert_fprint: str = ""
    peer_pkey_fprint: str = ""
    ask_ccert: bool = False

    @property
    def level_word(self) -> str:
        if not self.peer_cert:
            return "Anonymous"
        return "Trusted" if self.peer_trusted else "Untrusted"

    def log_line(self, namaddr: str, reused: bool = False) -> str:
        return (f"{self.level_word} TLS connection {'reused' if reused else 'established'} "
                f"from {namaddr}: {self.protocol} with cipher {self.cipher_name} "
                f"({self.cipher_usebits}/{self.cipher_algbits} bits)")

    def cert_log_line(self, namaddr: str) -> str:
        """tls_server.c at loglevel >= 1 when a client certificate came."""
        return (f"{namaddr}: {'Trusted' if self.peer_trusted else 'Untrusted'}: "
                f"subject_CN={self.peer_cn}, issuer={self.issuer_cn}, "
                f"fingerprint={self.peer_cert_fprint}, pkey_fingerprint={self.peer_pkey_fprint}")

    def received_comment(self) -> list[str]:
        """The lines smtpd.c adds to its Received header (each starts with a tab)."""
        lines = [f"\t(using {self.protocol} with cipher {self.cipher_name} "
                 f"({self.cipher_usebits}/{self.cipher_algbits} bits))"]
        if self.peer_cert and self.peer_cn:
            lines.append(f"\t(Client CN \"{_sanitize(self.peer_cn)}\", Issuer "
                         f"\"{_sanitize(self.issuer_cn)}\" "
                         f"({'verified OK' if self.peer_trusted else 'not verified'}))")
        elif self.ask_ccert:
            lines.append("\t(Client did not present a certificate)")
        else:
            lines.append("\t(No client certificate requested)")
        return lines


def _sanitize(text: str) -> str:
    """Postfix comment_sanitize(): keep a comment balanced and printable."""
    out = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                continue
            depth -= 1
        elif ch == "\\" or not ch.isprintable():
            ch = "?"
        out.append(ch)
    return "".join(out) + ")" * depth


def _cn(name) -> str:
    from cryptography.x509.oid import NameOID
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def tls_info(ssl_object, ask_ccert: bool = False, digest: str = "sha256") -> TlsInfo:
    """From an ssl.SSLObject/SSLSocket after the handshake."""
    name, version, bits = ssl_object.cipher() or ("unknown", "unknown", 0)
    protocol = ssl_object.version() or version
    der = None
    try:
        der = ssl_object.getpeercert(binary_form=True)
    except ValueError:
        der = None
    if not der:
        return TlsInfo(protocol, name, bits or 0, bits or 0, ask_ccert=ask_ccert)
    peer_cn = issuer = pkey_fp = ""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        cert = x509.load_der_x509_certificate(der)
        peer_cn, issuer = _cn(cert.subject), _cn(cert.issuer)
        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        pkey_fp = fingerprint(spki, digest)
    except Exception:   # noqa: BLE001 - a peer's odd certificate is not our failure
        pass
    # Python's ssl hands out a certificate only if it verified (CERT_OPTIONAL
    # with a failed verification aborts the handshake).
    trusted = bool(ssl_object.getpeercert())
    return TlsInfo(protocol, name, bits or 0, bits or 0, peer_cert=True, peer_trusted=trusted,
                   peer_cn=peer_cn, issuer_cn=issuer, peer_cert_fprint=fingerprint(der, digest),
                   peer_pkey_fprint=pkey_fp, ask_ccert=ask_ccert)
