"""SASL client side of SMTP AUTH (RFC 4954) for the smtp/lmtp agent.

Mechanisms: PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login),
the two Postfix users configure for smarthosts.  Both send the password
in the clear, so they count as "plaintext" mechanisms for
smtp_sasl_security_options / smtp_sasl_tls_security_options (postconf(5),
SASL_README "Postfix SMTP client"): with the default "noplaintext,
noanonymous" no password is ever sent, and the agent defers the mail
with "SASL authentication failed; ... no mechanism available" as
Postfix does with Cyrus' "No worthy mechs found".  An administrator
allows them with "smtp_sasl_security_options = noanonymous" (and
usually keeps "noplaintext" out of smtp_sasl_tls_security_options
only, so the password travels only over TLS).

Password lookup (smtp_sasl_glue.c smtp_sasl_passwd_lookup()):
    1. with smtp_sender_dependent_authentication: the sender address,
       then "@domain" of the sender;
    2. the remote host name ("mail.isp.example");
    3. the next-hop destination as written ("[mail.isp.example]:587",
       "isp.example").
The value is "username:password" (the password may contain ":").

Sans-I/O: responses are computed from challenges; the agent does I/O.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

__all__ = ["PLAINTEXT_MECHANISMS", "SUPPORTED", "choose_mechanism", "SaslClient",
           "lookup_credentials", "SaslError"]

SUPPORTED = ("PLAIN", "LOGIN")               # our preference order
PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
ANONYMOUS_MECHANISMS = frozenset({"ANONYMOUS"})
# RFC 4954 4: a 334 challenge is base64; anything longer than Postfix's
# line limit (2048) is a broken server.
MAX_CHALLENGE = 2048


class SaslError(Exception):
    """The server's challenge makes no sense (defer, never escape)."""


def choose_mechanism(offered: tuple[str, ...] | list[str], mechanism_filter: list[str],
                     security_options: list[str]) -> str | None:
    """The first of our mechanisms the server offers that passes
    smtp_sasl_mechanism_filter (empty: all) and the security options."""
    opts = {o.lower() for o in security_options}
    wanted = {m.upper() for m in mechanism_filter}
    offered_up = [m.upper() for m in offered]
    for mech in SUPPORTED:
        if mech not in offered_up:
            continue
        if wanted and mech not in wanted:
            continue
        if "noplaintext" in opts and mech in PLAINTEXT_MECHANISMS:
            continue
        if "noanonymous" in opts and mech in ANONYMOUS_MECHANISMS:
            continue
        return mech
    return None


def lookup_credentials(maps, *, host: str, nexthop: str, sender: str,
                       sender_dependent: bool) -> tuple[str, str] | None:
    """(username, password) from smtp_sasl_password_maps, or None.
    ``maps`` is a pfy.tables Maps (or anything with lookup(key));
    TableTempFail propagates (the caller defers)."""
    keys: list[str] = []
    if sender_dependent and sender:
        keys.append(sender)
        if "@" in sender:
            keys.append("@" + sender.rpartition("@")[2])
    keys.append(host)
    keys.append(nexthop)
    for key in keys:
        if not key:
            continue
        value = maps.lookup(key)
        if value is not None:
            user, _, password = value.partition(":")
            return user, password
    return None


@dataclass
class SaslClient:
    mechanism: str
    username: str
    password: str
    step_no: int = 0

    def initial_command(self) -> str:
        """The AUTH command line (PLAIN carries its initial response, RFC 4954 4)."""
        if self.mechanism == "PLAIN":
            token = f"\0{self.username}\0{self.password}".encode("utf-8")
            return f"AUTH PLAIN {base64.b64encode(token).decode('ascii')}"
        return f"AUTH {self.mechanism}"

    def respond(self, challenge_b64: str) -> str:
        """The base64 line answering a 334 challenge."""
        if len(challenge_b64) > MAX_CHALLENGE:
            raise SaslError("SASL challenge too long")
        try:
            challenge = base64.b64decode(challenge_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SaslError("malformed SASL challenge") from None
        self.step_no += 1
        if self.mechanism == "PLAIN":
            if self.step_no > 1:
                raise SaslError("unexpected SASL challenge")
            token = f"\0{self.username}\0{self.password}".encode("utf-8")
            return base64.b64encode(token).decode("ascii")
        if self.mechanism == "LOGIN":
            # Servers send "Username:" then "Password:"; go by the step,
            # as Cyrus does, not by the (localised) prompt text.
            del challenge
            if self.step_no == 1:
                return base64.b64encode(self.username.encode("utf-8")).decode("ascii")
            if self.step_no == 2:
                return base64.b64encode(self.password.encode("utf-8")).decode("ascii")
            raise SaslError("unexpected SASL challenge")
        raise SaslError(f"unsupported mechanism {self.mechanism}")
