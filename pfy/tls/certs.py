"""New keys and self-signed certificates for an instance.

Postfix's `postfix tls new-server-cert` (postfix-tls(1)) makes a key and a
self-signed certificate for $myhostname in $config_directory, so that
opportunistic TLS works at once. new_server_cert() is that step; the
postfix command wires it to the command line and main.cf.

    key_path, cert_path = new_server_cert("/etc/pfy", "mx.example")
    key_pem, cert_pem = make_key_and_cert("mx.example", key_type="ecdsa")
"""

from __future__ import annotations

import datetime
import os
import time

__all__ = ["make_key_and_cert", "write_key_and_cert", "new_server_cert"]

DEFAULT_DAYS = 365          # postfix-tls(1): tls_cert_lifetime? -days 365 default
DEFAULT_RSA_BITS = 2048     # postfix-tls(1): -b 2048


def make_key_and_cert(hostname: str, key_type: str = "rsa", bits: int = DEFAULT_RSA_BITS,
                      days: int = DEFAULT_DAYS, now: float | None = None) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM): a new key ("rsa" or "ecdsa", P-256) and a
    self-signed certificate with CN and subjectAltName DNS:hostname."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif key_type in ("ecdsa", "ec"):
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        raise ValueError(f"unsupported key type: {key_type} (want rsa or ecdsa)")
    start = datetime.datetime.fromtimestamp(time.time() if now is None else now,
                                            datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - datetime.timedelta(minutes=5))
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def write_key_and_cert(key_path: str, cert_path: str, hostname: str, **kw) -> None:
    """Write both files; the key is created mode 0600 before any secret is
    in it. When key_path == cert_path, one file holds the key then the
    certificate (the smtpd_tls_chain_files layout)."""
    key_pem, cert_pem = make_key_and_cert(hostname, **kw)
    if key_path == cert_path:
        files = [(key_path, key_pem + cert_pem, 0o600)]
    else:
        files = [(key_path, key_pem, 0o600), (cert_path, cert_pem, 0o644)]
    for path, data, mode in files:
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)


def new_server_cert(config_dir: str, hostname: str, key_type: str = "rsa",
                    bits: int = DEFAULT_RSA_BITS, days: int = DEFAULT_DAYS) -> tuple[str, str]:
    """postfix tls new-server-cert: key-STAMP.pem and cert-STAMP.pem in
    config_dir (the names postfix-tls uses); returns (key_path, cert_path)
    for smtpd_tls_key_file / smtpd_tls_cert_file (or both as one
    smtpd_tls_chain_files entry after concatenation)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "rsa" if key_type == "rsa" else "ecdsa"
    key_path = os.path.join(config_dir, f"key-{kind}-{stamp}.pem")
    cert_path = os.path.join(config_dir, f"cert-{kind}-{stamp}.pem")
    write_key_and_cert(key_path, cert_path, hostname, key_type=key_type, bits=bits, days=days)
    return key_path, cert_path
