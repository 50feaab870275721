"""smtpd_sasl_security_options and smtpd_sasl_tls_security_options: which
mechanisms a session may offer (Postfix xsasl_dovecot_server.c semantics,
which the built-in backend shares).

A mechanism carries properties as Dovecot's MECH lines name them
(plaintext, active, dictionary, anonymous, forward-secrecy, mutual-auth,
private).  The options "noX" drop mechanisms that have property X; the
positive options (forward_secrecy, mutual_auth) keep only mechanisms that
have it.  "private" mechanisms are never offered.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["SecurityOptions", "parse_security_options", "mechanism_allowed",
           "BUILTIN_PROPERTIES"]

# option word (postconf(5)) -> (Dovecot property, positive?)
_OPTIONS = {
    "noplaintext": ("plaintext", False),
    "noactive": ("active", False),
    "nodictionary": ("dictionary", False),
    "noanonymous": ("anonymous", False),
    "forward_secrecy": ("forward-secrecy", True),
    "mutual_auth": ("mutual-auth", True),
}

# Both built-in mechanisms send the password in the clear (RFC 4616 9).
BUILTIN_PROPERTIES = {"PLAIN": frozenset({"plaintext"}),
                      "LOGIN": frozenset({"plaintext"})}


class SecurityOptions:
    __slots__ = ("excluded", "required")

    def __init__(self, excluded: frozenset[str], required: frozenset[str]):
        self.excluded = excluded
        self.required = required

    def __repr__(self) -> str:
        return f"SecurityOptions(excluded={set(self.excluded)}, required={set(self.required)})"


def parse_security_options(words: Iterable[str], param: str) -> SecurityOptions:
    """Raise ValueError naming the parameter on an unknown word (Postfix:
    NAME_MASK_FATAL, i.e. a fatal configuration error)."""
    excluded, required = set(), set()
    for word in words:
        w = word.lower()
        if w not in _OPTIONS:
            raise ValueError(f"unknown {param} value \"{word}\"")
        prop, positive = _OPTIONS[w]
        (required if positive else excluded).add(prop)
    return SecurityOptions(frozenset(excluded), frozenset(required))


def mechanism_allowed(properties: Iterable[str], opts: SecurityOptions) -> bool:
    props = {p.lower() for p in properties}
    if "private" in props:
        return False
    return opts.required <= props and not (opts.excluded & props)
