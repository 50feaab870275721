"""Server side of the PLAIN (RFC 4616) and LOGIN SASL mechanisms, sans-I/O.

Used by the built-in ("pfy") backend; with smtpd_sasl_type = dovecot, Dovecot
parses the client's data itself and pfy only relays it.

A mechanism is fed the client's decoded responses and answers with either
more challenge bytes or the credentials it collected.  Nothing here logs:
these bytes are passwords.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Credentials", "MechError", "PlainMechanism", "LoginMechanism",
           "parse_plain", "new_mechanism", "MECHANISMS"]

# RFC 4616 2: authcid, authzid and passwd are each at most 255 octets.
MAX_FIELD = 255


@dataclass(frozen=True)
class Credentials:
    authcid: str          # who logs in
    password: str
    authzid: str = ""     # who to act as ("" = the same user)

    def __repr__(self) -> str:             # never show a password in a traceback
        return f"Credentials(authcid={self.authcid!r}, authzid={self.authzid!r}, password=***)"


class MechError(Exception):
    """Malformed client data; str() is safe to show and log (no AUTH data)."""


def _text(raw: bytes, what: str) -> str:
    if len(raw) > MAX_FIELD:
        raise MechError(f"{what} too long")
    try:
        return raw.decode("utf-8")          # RFC 4616 2: UTF-8 encoded
    except UnicodeDecodeError:
        raise MechError(f"{what} is not UTF-8") from None


def parse_plain(message: bytes) -> Credentials:
    """RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd."""
    parts = message.split(b"\0")
    if len(parts) != 3:
        raise MechError("malformed PLAIN message")
    authzid, authcid, passwd = parts
    if not authcid or not passwd:
        raise MechError("empty user name or password")
    return Credentials(_text(authcid, "user name"), _text(passwd, "password"),
                       _text(authzid, "authorization ID"))


class PlainMechanism:
    name = "PLAIN"

    def __init__(self) -> None:
        self.done = False

    def start(self, initial: bytes | None) -> bytes | Credentials:
        if initial is None:
            # RFC 4954 4: no initial response -> an empty challenge ("334 ").
            return b""
        return self.step(initial)

    def step(self, data: bytes) -> bytes | Credentials:
        if self.done:
            raise MechError("unexpected response")
        self.done = True
        return parse_plain(data)


class LoginMechanism:
    """The obsolete but universal LOGIN mechanism (draft-murchison-sasl-login):
    "Username:" and "Password:" challenges, one field per response."""

    name = "LOGIN"

    def __init__(self) -> None:
        self._user: str | None = None
        self.done = False

    def start(self, initial: bytes | None) -> bytes | Credentials:
        if initial is None or initial == b"":
            return b"Username:"
        return self.step(initial)

    def step(self, data: bytes) -> bytes | Credentials:
        if self.done:
            raise MechError("unexpected response")
        if self._user is None:
            if not data or b"\0" in data:
                raise MechError("empty or malformed user name")
            self._user = _text(data, "user name")
            return b"Password:"
        self.done = True
        if not data or b"\0" in data:
            raise MechError("empty or malformed password")
        return Credentials(self._user, _text(data, "password"))


MECHANISMS = {"PLAIN": PlainMechanism, "LOGIN": LoginMechanism}


def new_mechanism(name: str):
    return MECHANISMS[name.upper()]()
