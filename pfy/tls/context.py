"""Server ssl.SSLContext from Postfix's smtpd_tls_* parameters.

The parameters and their meaning are Postfix's (postconf(5), TLS_README):
    *_tls_security_level     none | may | encrypt (mandatory TLS)
    *_tls_cert_file/key_file RSA, *_tls_eccert_file/eckey_file ECDSA,
    *_tls_dcert_file/dkey_file DSA; *_tls_chain_files (key then chain in
    each file) replaces all of them when set
    *_tls_protocols / *_tls_mandatory_protocols  ">=TLSv1", "!SSLv2, !SSLv3"
    *_tls_ciphers / *_tls_mandatory_ciphers  a grade: high medium low export null,
    mapped through tls_<grade>_cipherlist; *_tls_exclude_ciphers (and
    *_tls_mandatory_exclude_ciphers at mandatory levels) appended as "!x"
    *_tls_ask_ccert, *_tls_req_ccert, *_tls_CAfile, *_tls_CApath
    tls_preempt_cipherlist, *_tls_dh1024_param_file

One context per (service, mandatory) pair, built before chroot.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

__all__ = ["TlsConfigError", "TlsSettings", "server_context", "cipher_list",
           "protocol_range", "GRADES"]

GRADES = ("high", "medium", "low", "export", "null")
# Postfix's protocol names, oldest first; SSLv2/SSLv3 are accepted in the
# syntax (administrators exclude them) but never enabled.
_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_TLS_VERSION = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
                "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class TlsConfigError(Exception):
    """Bad TLS configuration; str() names the parameter (a daemon's fatal)."""


@dataclass(frozen=True)
class TlsSettings:
    prefix: str = "smtpd"
    security_level: str = "none"
    cert_file: str = ""
    key_file: str = ""
    eccert_file: str = ""
    eckey_file: str = ""
    dcert_file: str = ""
    dkey_file: str = ""
    chain_files: tuple[str, ...] = ()
    protocols: tuple[str, ...] = (">=TLSv1",)
    mandatory_protocols: tuple[str, ...] = (">=TLSv1",)
    ciphers: str = "medium"
    mandatory_ciphers: str = "medium"
    exclude_ciphers: tuple[str, ...] = ()
    mandatory_exclude_ciphers: tuple[str, ...] = ()
    cipherlists: tuple[tuple[str, str], ...] = ()   # (grade, OpenSSL list)
    ask_ccert: bool = False
    req_ccert: bool = False
    ca_file: str = ""
    ca_path: str = ""
    preempt_cipherlist: bool = False
    dh_param_file: str = ""
    fingerprint_digest: str = "sha256"
    loglevel: int = 0
    received_header: bool = False
    wrappermode: bool = False

    @classmethod
    def from_config(cls, cfg, prefix: str = "smtpd") -> "TlsSettings":
        def get(name, default=None):
            try:
                return cfg[f"{prefix}_{name}"]
            except KeyError:
                return default
        level = (get("tls_security_level") or "").strip().lower()
        if not level:
            # The obsolete smtpd_use_tls / smtpd_enforce_tls (postconf(5)).
            if get("enforce_tls", False):
                level = "encrypt"
            elif get("use_tls", False):
                level = "may"
            else:
                level = "none"
        if level not in ("none", "may", "encrypt"):
            raise TlsConfigError(f"invalid {prefix}_tls_security_level value: {level}")
        lists = []
        for grade in GRADES:
            try:
                lists.append((grade, cfg[f"tls_{grade}_cipherlist"]))
            except KeyError:
                pass
        return cls(
            prefix=prefix, security_level=level,
            cert_file=get("tls_cert_file", ""), key_file=get("tls_key_file", ""),
            eccert_file=get("tls_eccert_file", ""), eckey_file=get("tls_eckey_file", ""),
            dcert_file=get("tls_dcert_file", ""), dkey_file=get("tls_dkey_file", ""),
            chain_files=tuple(get("tls_chain_files", ()) or ()),
            protocols=tuple(get("tls_protocols", ()) or ()),
            mandatory_protocols=tuple(get("tls_mandatory_protocols", ()) or ()),
            ciphers=get("tls_ciphers", "medium"),
            mandatory_ciphers=get("tls_mandatory_ciphers", "medium"),
            exclude_ciphers=tuple(get("tls_exclude_ciphers", ()) or ()),
            mandatory_exclude_ciphers=tuple(get("tls_mandatory_exclude_ciphers", ()) or ()),
            cipherlists=tuple(lists),
            ask_ccert=bool(get("tls_ask_ccert", False)),
            req_ccert=bool(get("tls_req_ccert", False)),
            ca_file=get("tls_CAfile", ""), ca_path=get("tls_CApath", ""),
            preempt_cipherlist=bool(cfg["tls_preempt_cipherlist"]),
            dh_param_file=get("tls_dh1024_param_file", ""),
            fingerprint_digest=(get("tls_fingerprint_digest", "sha256") or "sha256").lower(),
            loglevel=int(get("tls_loglevel", 0) or 0),
            received_header=bool(get("tls_received_header", False)),
            wrappermode=bool(get("tls_wrappermode", False)),
        )

    @property
    def enabled(self) -> bool:
        return self.security_level != "none" or self.wrappermode

    @property
    def mandatory(self) -> bool:
        return self.security_level == "encrypt"


def protocol_range(spec) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """Postfix's protocol list -> (minimum, maximum) TLS version.

    Forms (postconf(5) smtpd_tls_protocols): ">=TLSv1.2", "<=TLSv1.2",
    "!SSLv2, !SSLv3" (exclusions), "TLSv1.2 TLSv1.3" (inclusions). OpenSSL
    takes a range, so a hole in the middle ("!TLSv1.1" alone) widens to the
    enclosing range, as with OpenSSL's own min/max protocol settings."""
    if isinstance(spec, str):
        spec = spec.replace(",", " ").replace(":", " ").split()
    enabled = set(_PROTOCOLS)
    included: set[str] = set()
    for word in spec:
        if word.startswith(">="):
            name, op = word[2:], "min"
        elif word.startswith("<="):
            name, op = word[2:], "max"
        elif word.startswith("!"):
            name, op = word[1:], "not"
        else:
            name, op = word, "only"
        if name not in _PROTOCOLS:
            raise TlsConfigError(f"Invalid TLS protocol list \"{' '.join(spec)}\": "
                                 f"unknown protocol {name}")
        i = _PROTOCOLS.index(name)
        if op == "min":
            enabled -= set(_PROTOCOLS[:i])
        elif op == "max":
            enabled -= set(_PROTOCOLS[i + 1:])
        elif op == "not":
            enabled.discard(name)
        else:
            included.add(name)
    if included:
        enabled &= included
    tls = [p for p in _PROTOCOLS if p in enabled and p in _TLS_VERSION]
    if not tls:
        raise TlsConfigError(f"Invalid TLS protocol list \"{' '.join(spec)}\": "
                             "no TLS protocol left")
    return _TLS_VERSION[tls[0]], _TLS_VERSION[tls[-1]]


def cipher_list(settings: TlsSettings, mandatory: bool) -> str:
    """OpenSSL cipher string for the grade, minus the exclusions (Postfix
    tls_set_ciphers(): the grade's tls_<grade>_cipherlist, then ":!x")."""
    grade = (settings.mandatory_ciphers if mandatory else settings.ciphers).strip().lower()
    lists = dict(settings.cipherlists)
    if grade not in GRADES:
        raise TlsConfigError(f"invalid {settings.prefix}_tls_"
                             f"{'mandatory_' if mandatory else ''}ciphers value: {grade}")
    base = lists.get(grade) or {
        "high": "aNULL:-aNULL:HIGH:@STRENGTH",
        "medium": "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH",
        "low": "aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH",
        "export": "aNULL:-aNULL:HIGH:MEDIUM:LOW:EXPORT:+RC4:@STRENGTH",
        "null": "eNULL:!aNULL"}[grade]
    excludes = list(settings.exclude_ciphers)
    if mandatory:
        excludes += list(settings.mandatory_exclude_ciphers)
    for x in excludes:
        for word in x.replace(",", " ").split():
            base += ":!" + word
    return base


def _check_file(param: str, path: str) -> None:
    if not os.path.exists(path):
        raise TlsConfigError(f"cannot load certificate or key: {param} = {path}: "
                             "No such file or directory")


def server_context(settings: TlsSettings, mandatory: bool | None = None) -> ssl.SSLContext:
    """A server context for the settings; mandatory selects the
    mandatory_* protocol and cipher settings (security level encrypt)."""
    if mandatory is None:
        mandatory = settings.mandatory
    p = settings.prefix
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lo, hi = protocol_range(settings.mandatory_protocols if mandatory else settings.protocols)
    try:
        ctx.minimum_version, ctx.maximum_version = lo, hi
    except ValueError as err:
        raise TlsConfigError(f"{p}_tls_protocols: {err}") from None
    try:
        ctx.set_ciphers(cipher_list(settings, mandatory))
    except ssl.SSLError:
        raise TlsConfigError(f"{p}_tls_ciphers: no cipher matches "
                             f"\"{cipher_list(settings, mandatory)}\"") from None
    if settings.preempt_cipherlist:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    # No compression (CRIME), no renegotiation by the client.
    ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    pairs: list[tuple[str, str, str]] = []
    if settings.chain_files:
        pairs = [(f"{p}_tls_chain_files", f, f) for f in settings.chain_files]
    else:
        for kind in ("", "ec", "d"):
            cert = getattr(settings, f"{kind}cert_file")
            key = getattr(settings, f"{kind}key_file") or cert
            if cert:
                pairs.append((f"{p}_tls_{kind}cert_file", cert, key))
    if not pairs:
        raise TlsConfigError(f"no server certificates: set {p}_tls_chain_files or "
                             f"{p}_tls_cert_file (or {p}_tls_eccert_file)")
    for param, cert, key in pairs:
        _check_file(param, cert)
        _check_file(param, key)
        try:
            # Each key type fills its own slot in OpenSSL's SSL_CTX, so an RSA
            # and an ECDSA pair can both be loaded.
            ctx.load_cert_chain(cert, key if key != cert else None)
        except (ssl.SSLError, OSError) as err:
            raise TlsConfigError(f"cannot load certificate and key: {param} = {cert}: "
                                 f"{getattr(err, 'reason', None) or err}") from None
    if settings.dh_param_file:
        try:
            ctx.load_dh_params(settings.dh_param_file)
        except (ssl.SSLError, OSError) as err:
            raise TlsConfigError(f"{p}_tls_dh1024_param_file: {err}") from None
    if settings.ca_file or settings.ca_path:
        try:
            ctx.load_verify_locations(cafile=settings.ca_file or None,
                                      capath=settings.ca_path or None)
        except (ssl.SSLError, OSError) as err:
            raise TlsConfigError(f"{p}_tls_CAfile: {err}") from None
    if mandatory and settings.req_ccert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif settings.ask_ccert or settings.req_ccert:
        # XXX OpenSSL through Python's ssl cannot accept an unverifiable
        # client certificate the way Postfix's callback does ("Untrusted"):
        # such a client fails the handshake. Fix: a pyOpenSSL verify callback.
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
