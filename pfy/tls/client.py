"""TLS for the smtp/lmtp client: policy levels, contexts, peer checks, log lines.

Levels (postconf(5) smtp_tls_security_level, TLS_README "Client-side"):
    none         never STARTTLS
    may          STARTTLS when offered, plaintext otherwise.  After a failed
                 handshake the agent tries the same address again in
                 plaintext when the message has waited minimal_backoff_time
                 and no SASL password is configured for the server (Postfix's
                 PLAINTEXT_FALLBACK_OK_AFTER_STARTTLS_FAILURE); a first
                 attempt defers "Cannot start TLS: handshake failure"
    encrypt      STARTTLS required (mandatory protocols/ciphers), no
                 certificate check
    fingerprint  required, the certificate (or public key) digest must be
                 one of match=... / smtp_tls_fingerprint_cert_match
    verify       required, the chain must verify (smtp_tls_CAfile,
                 smtp_tls_CApath) and a name match smtp_tls_verify_cert_match
                 (hostname: the MX host name; nexthop; dot-nexthop)
    secure       as verify, names from smtp_tls_secure_cert_match
                 (nexthop, dot-nexthop: the next-hop domain, not the MX
                 name, which DNS could forge)
    dane         needs smtp_dns_support_level = dnssec (else "may", with a
                 warning).  When the MX lookup was secure (or there was no
                 MX) and the host's address lookup was secure, TLSA records
                 at _port._tcp.host are looked up: a secure RRset with
                 usable records (DANE-TA(2)/DANE-EE(3), pfy.tls.dane) makes
                 TLS mandatory and the chain must match one (logged
                 "Verified"; no match: "server certificate verification
                 failed for host[addr]:port: num=65:no matching DANE TLSA
                 records" and 4.7.5 "Server certificate not verified").
                 Only unusable records: "encrypt".  No records, or not
                 secure: "may".  A failed TLSA lookup defers (4.7.5 "TLSA
                 lookup error for host:port").  An insecure MX follows
                 smtp_tls_dane_insecure_mx_policy: may (the default unless
                 the main.cf level is dane), encrypt, or dane ("half-dane":
                 the match is logged "Trusted", a miss defers "Server
                 certificate not trusted").  (smtp_tls_policy.c dane_init())
    dane-only    as dane, but where dane falls back to may or encrypt the
                 delivery defers (4.7.5 "non DNSSEC destination", "no TLSA
                 records found", "TLSA records unusable").

smtp_tls_policy_maps: "domain  level [match=a:b] [protocols=..] [ciphers=..]"
keyed by the next-hop destination as written ("[host]:port", "domain"),
then parent domains with a leading dot (".example.com").

Log lines (tls_client.c tls_log_summary()):
    Untrusted TLS connection established to mx.y[192.0.2.3]:25: TLSv1.3 with
    cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
"Trusted" when the chain verifies but no name was checked (levels may and
encrypt check none), "Verified" when the chain verifies and a name matches
(verify, secure) or the fingerprint matched.

Every file (CA certificates) is read when the contexts are built: before chroot.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import _ssl
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

try:            # pyOpenSSL: "Trusted" at levels that do not verify (optional)
    from OpenSSL import crypto as _crypto
except ImportError:      # pragma: no cover
    _crypto = None

from pfy.tls import dane as _dane
from pfy.tls.context import TlsConfigError, cipher_list, protocol_range, TlsSettings

__all__ = ["LEVELS", "ClientTlsPolicy", "ClientTls", "parse_policy", "PeerCheck",
           "match_hostname"]

LEVELS = ("none", "may", "encrypt", "fingerprint", "verify", "secure", "dane", "dane-only")
MANDATORY = ("encrypt", "fingerprint", "verify", "secure", "dane-only")


@dataclass(frozen=True)
class ClientTlsPolicy:
    level: str = "none"
    match: tuple[str, ...] = ()         # names or fingerprints, per level
    protocols: tuple[str, ...] | None = None   # policy override of mandatory_protocols
    ciphers: str | None = None
    exclude: tuple[str, ...] = ()
    # Level "dane" after the TLSA lookup (pfy.daemons.smtp): the usable
    # records, the reference identifiers for DANE-TA (next-hop domain, MX
    # host), and "half-dane" (insecure MX: a match is only "Trusted").
    tlsa: tuple = ()
    dane_names: tuple[str, ...] = ()
    half_dane: bool = False

    @property
    def mandatory(self) -> bool:
        return self.level in MANDATORY or (self.level == "dane" and bool(self.tlsa))

    @property
    def enabled(self) -> bool:
        return self.level != "none"


def parse_policy(value: str, defaults: ClientTlsPolicy) -> ClientTlsPolicy:
    """One smtp_tls_policy_maps value; TlsConfigError when malformed
    (Postfix: "invalid TLS policy" warning and the delivery deferred)."""
    words = value.split()
    if not words:
        raise TlsConfigError("empty TLS policy")
    level = words[0].lower()
    if level not in LEVELS:
        raise TlsConfigError(f"invalid TLS security level \"{words[0]}\"")
    match: tuple[str, ...] = ()
    protocols = None
    ciphers = None
    exclude: tuple[str, ...] = ()
    for w in words[1:]:
        name, eq, val = w.partition("=")
        name = name.lower()
        if not eq:
            raise TlsConfigError(f"malformed attribute/value pair \"{w}\"")
        if name == "match":
            match = tuple(x for x in val.split(":") if x) if level != "fingerprint" \
                else tuple(x for x in val.split("|") if x)
        elif name == "protocols":
            protocols = tuple(val.replace(":", " ").split())
        elif name == "ciphers":
            ciphers = val
        elif name == "exclude":
            exclude = tuple(val.replace(":", " ").split())
        elif name in ("tafile", "connection_reuse", "servername", "enable_rpk"):
            pass                                    # accepted, not used here
        else:
            raise TlsConfigError(f"unknown TLS policy attribute \"{name}\"")
    if not match:
        match = defaults.match if level == defaults.level else ()
    return ClientTlsPolicy(level, match, protocols, ciphers, exclude)


def match_hostname(pattern_names: list[str], want: str) -> bool:
    """RFC 6125 6.4: exact, or "*" as the whole left-most label."""
    want = want.lower().rstrip(".")
    for name in pattern_names:
        n = name.lower().rstrip(".")
        if n == want:
            return True
        if n.startswith("*.") and "." in want and want.split(".", 1)[1] == n[2:]:
            return True
    return False


@dataclass(frozen=True)
class PeerCheck:
    trusted: bool
    matched: bool
    level_word: str            # Untrusted / Trusted / Verified
    reason: str = ""           # why a mandatory level failed
    verify_error: str = ""     # tls_log_verify_error() detail ("num=65:...")


def _cert_names(der: bytes) -> list[str]:
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
        if names:
            return list(names)
    except x509.ExtensionNotFound:
        pass
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _fingerprints(der: bytes, digest: str) -> tuple[str, str]:
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)

    def fp(data: bytes) -> str:
        try:
            h = hashlib.new(digest, data)
        except ValueError:
            h = hashlib.sha256(data)
        return ":".join(f"{b:02X}" for b in h.digest())
    return fp(der), fp(spki)


class ClientTls:
    """Contexts and checks for one agent process, built before chroot."""

    def __init__(self, cfg, prefix: str = "smtp"):
        self.prefix = prefix
        self.settings = TlsSettings.from_config(_LevelFreeConfig(cfg, prefix), prefix)
        self.ca_file = cfg[f"{prefix}_tls_CAfile"]
        self.ca_path = cfg[f"{prefix}_tls_CApath"]
        self.digest = (cfg[f"{prefix}_tls_fingerprint_digest"] or "sha256").lower()
        self.verify_match = tuple(cfg[f"{prefix}_tls_verify_cert_match"])
        self.secure_match = tuple(cfg[f"{prefix}_tls_secure_cert_match"])
        self.fingerprints = tuple(cfg[f"{prefix}_tls_fingerprint_cert_match"])
        self.dane_digests = _dane.digest_types(cfg["tls_dane_digests"])
        self._contexts: dict[tuple, ssl.SSLContext] = {}
        self._store = self._load_store()

    # CA certificates for "Trusted" at levels that do not require it.
    def _load_store(self):
        crypto = _crypto
        if crypto is None:               # pyOpenSSL absent: such peers log "Untrusted"
            return None
        store = crypto.X509Store()
        files = []
        if self.ca_file:
            files.append(self.ca_file)
        if self.ca_path and os.path.isdir(self.ca_path):
            files += [os.path.join(self.ca_path, f) for f in sorted(os.listdir(self.ca_path))]
        for path in files:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            for block in data.split(b"-----END CERTIFICATE-----"):
                if b"-----BEGIN CERTIFICATE-----" not in block:
                    continue
                try:
                    store.add_cert(crypto.load_certificate(
                        crypto.FILETYPE_PEM, block + b"-----END CERTIFICATE-----\n"))
                except crypto.Error:
                    continue
        return store

    def default_policy(self, level: str) -> ClientTlsPolicy:
        match = {"verify": self.verify_match, "secure": self.secure_match,
                 "fingerprint": self.fingerprints}.get(level, ())
        return ClientTlsPolicy(level, match)

    def context(self, policy: ClientTlsPolicy) -> ssl.SSLContext:
        verify = policy.level in ("verify", "secure")
        key = (policy.mandatory, verify, policy.protocols, policy.ciphers, policy.exclude)
        ctx = self._contexts.get(key)
        if ctx is not None:
            return ctx
        s = self.settings
        if policy.exclude:
            s = replace(s, mandatory_exclude_ciphers=s.mandatory_exclude_ciphers + policy.exclude)
        if policy.ciphers:
            s = replace(s, mandatory_ciphers=policy.ciphers)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False            # names are checked by policy below
        protos = policy.protocols if policy.protocols is not None else (
            s.mandatory_protocols if policy.mandatory else s.protocols)
        lo, hi = protocol_range(protos or (">=TLSv1",))
        try:
            ctx.minimum_version, ctx.maximum_version = lo, hi
        except ValueError as err:
            raise TlsConfigError(f"{self.prefix}_tls_protocols: {err}") from None
        try:
            ctx.set_ciphers(cipher_list(s, policy.mandatory))
        except ssl.SSLError:
            raise TlsConfigError(f"{self.prefix}_tls_ciphers: no cipher matches") from None
        ctx.options |= ssl.OP_NO_COMPRESSION
        if verify:
            # OpenSSL checks the chain (with the server's intermediates);
            # a failure ends the handshake: "Server certificate not trusted".
            ctx.verify_mode = ssl.CERT_REQUIRED
            if self.ca_file or self.ca_path:
                try:
                    ctx.load_verify_locations(cafile=self.ca_file or None,
                                              capath=self.ca_path or None)
                except (ssl.SSLError, OSError) as err:
                    raise TlsConfigError(f"{self.prefix}_tls_CAfile: {err}") from None
        else:
            ctx.verify_mode = ssl.CERT_NONE
        self._contexts[key] = ctx
        return ctx

    def preload(self, levels=LEVELS) -> None:
        """Build the contexts of the configured level before chroot."""
        for level in levels:
            if level != "none":
                try:
                    self.context(ClientTlsPolicy(level))
                except TlsConfigError:
                    raise

    def _chain_trusted(self, der: bytes) -> bool:
        if self._store is None:
            return False
        try:
            crypto = _crypto
            cert = crypto.load_certificate(crypto.FILETYPE_ASN1, der)
            crypto.X509StoreContext(self._store, cert).verify_certificate()
            return True
        except Exception:   # noqa: BLE001 - any failure is "not trusted"
            return False

    def check_peer(self, ssl_object, policy: ClientTlsPolicy, hostname: str,
                   nexthop_domain: str) -> PeerCheck:
        """After the handshake: Untrusted / Trusted / Verified, and for a
        mandatory level that requires it, why the peer is refused."""
        der = ssl_object.getpeercert(binary_form=True) or b""
        if policy.level == "dane" and policy.tlsa:
            return self._check_dane(ssl_object, der, policy)
        verified_by_openssl = policy.level in ("verify", "secure")
        trusted = bool(der) and (verified_by_openssl or self._chain_trusted(der))
        if policy.level == "fingerprint":
            if not der:
                return PeerCheck(False, False, "Untrusted", "Server certificate not verified")
            cert_fp, pkey_fp = _fingerprints(der, self.digest)
            wanted = {m.upper() for m in policy.match}
            if cert_fp in wanted or pkey_fp in wanted:
                return PeerCheck(True, True, "Verified")
            return PeerCheck(trusted, False, "Trusted" if trusted else "Untrusted",
                             "Server certificate not verified")
        matched = False
        # tls_client.c verify_extract_name(): names are matched only at the
        # levels that must match (TLS_MUST_MATCH: verify, secure); at may and
        # encrypt a good chain is "Trusted", never "Verified".
        if trusted and der and policy.level in ("verify", "secure"):
            names = _cert_names(der)
            rules = policy.match or (self.verify_match if policy.level != "secure"
                                     else self.secure_match)
            for rule in rules:
                r = rule.lower()
                if r == "hostname":
                    matched = match_hostname(names, hostname)
                elif r == "nexthop":
                    matched = match_hostname(names, nexthop_domain)
                elif r == "dot-nexthop":
                    matched = any(n.lower().rstrip(".").endswith("." + nexthop_domain.lower())
                                  for n in names)
                elif r.startswith("."):
                    matched = any(n.lower().endswith(r) for n in names)
                else:
                    matched = match_hostname(names, r)
                if matched:
                    break
        word = "Verified" if matched else ("Trusted" if trusted else "Untrusted")
        reason = ""
        if policy.level in ("verify", "secure") and not matched:
            reason = "Server certificate not verified"
        return PeerCheck(trusted, matched, word, reason)

    def _check_dane(self, ssl_object, der: bytes, policy: ClientTlsPolicy) -> PeerCheck:
        """RFC 7672: the chain must match a usable TLSA record."""
        chain = peer_chain(ssl_object) or ([der] if der else [])
        m = _dane.match_chain(chain, list(policy.tlsa), list(policy.dane_names),
                              self.dane_digests)
        if m.matched:
            # tls_client.c: a DANE match is "Verified", except when the MX
            # name could be forged (half-dane): "Trusted".
            return PeerCheck(True, not policy.half_dane,
                             "Trusted" if policy.half_dane else "Verified")
        reason = "Server certificate not trusted" if policy.half_dane \
            else "Server certificate not verified"
        return PeerCheck(False, False, "Untrusted", reason, m.error)

    @staticmethod
    def log_line(word: str, namaddr_port: str, ssl_object) -> str:
        name, _, bits = ssl_object.cipher() or ("unknown", "", 0)
        proto = ssl_object.version() or "unknown"
        return (f"{word} TLS connection established to {namaddr_port}: {proto} with cipher "
                f"{name} ({bits}/{bits} bits)")


def peer_chain(ssl_object) -> list[bytes]:
    """The certificates the server sent, leaf first (DER), as OpenSSL's
    SSL_get_peer_cert_chain(): public in Python 3.13, private before."""
    get = getattr(ssl_object, "get_unverified_chain", None)
    if get is None:
        get = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if get is None:
        return []
    try:
        certs = get() or []
    except (ssl.SSLError, ValueError):
        return []
    out = []
    for c in certs:
        if isinstance(c, bytes):
            out.append(c)
        else:
            out.append(c.public_bytes(_ssl.ENCODING_DER))
    return out


class _LevelFreeConfig:
    """TlsSettings.from_config() knows the server levels only; the client's
    level is handled here, so hand it a neutral one."""

    def __init__(self, cfg, prefix: str):
        self._cfg = cfg
        self._prefix = prefix

    def __getitem__(self, name: str):
        if name == f"{self._prefix}_tls_security_level":
            return "none"
        if name in (f"{self._prefix}_enforce_tls", f"{self._prefix}_use_tls"):
            return False
        return self._cfg[name]
