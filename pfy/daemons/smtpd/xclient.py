"""XCLIENT and XFORWARD (Postfix XCLIENT_README, XFORWARD_README).

XCLIENT, from hosts in smtpd_authorized_xclient_hosts, replaces what smtpd
knows about its client (for access control, logging and the Received
header): a proxy or a test tool speaks for the real client. XFORWARD, from
smtpd_authorized_xforward_hosts, only changes what is logged and recorded
for the message (log_client_name..., as cleanup's log_* attributes) and is
forgotten after each transaction. The core checked attribute names and
xtext; the values are checked here.
"""

from __future__ import annotations

import ipaddress

from pfy.smtp.replies import Reply, bad_x_value

__all__ = ["allowed", "apply_xclient", "xforward_values", "UNAVAILABLE", "TEMPUNAVAIL"]

UNAVAILABLE = "[UNAVAILABLE]"
TEMPUNAVAIL = "[TEMPUNAVAIL]"


def allowed(hosts, session) -> bool:
    if not hosts or session.svc.standalone:
        return False
    return hosts.match(session.client_name, session.client_addr)


def _addr(value: str) -> str | None:
    v = value
    if v.upper().startswith("IPV6:"):
        v = v[5:]
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        return None


def apply_xclient(session, attrs: dict[str, str]) -> Reply | None:
    """Update the session's client identity; a Reply on a bad value."""
    new = {}
    for name, value in attrs.items():
        unavailable = value.upper() in (UNAVAILABLE, TEMPUNAVAIL)
        if name == "ADDR":
            if unavailable:
                new["client_addr"] = "unknown"
                continue
            a = _addr(value)
            if a is None:
                return bad_x_value(name, value)
            new["client_addr"] = a
        elif name == "PORT":
            if unavailable:
                new["client_port"] = "0"
            elif not value.isdigit() or int(value) > 65535:
                return bad_x_value(name, value)
            else:
                new["client_port"] = value
        elif name == "NAME":
            new["client_name"] = "unknown" if unavailable else value.lower()
            new["name_tempfail"] = value.upper() == TEMPUNAVAIL
        elif name == "REVERSE_NAME":
            new["reverse_client_name"] = "unknown" if unavailable else value.lower()
        elif name == "PROTO":
            if value.upper() not in ("SMTP", "ESMTP"):
                return bad_x_value(name, value)
            new["proto_override"] = value.upper()
        elif name == "HELO":
            new["xclient_helo"] = None if unavailable else value
        elif name == "LOGIN":
            new["sasl_username"] = "" if unavailable else value
            new["sasl_method"] = "XCLIENT" if not unavailable else ""
        # DESTADDR / DESTPORT describe the server side: only logged by Postfix.
    if "client_name" in new and "reverse_client_name" not in new:
        new["reverse_client_name"] = new["client_name"]
    for key, value in new.items():
        setattr(session, key, value)
    return None


def xforward_values(attrs: dict[str, str]) -> dict[str, str]:
    """XFORWARD attributes as they go to cleanup's log_* attributes."""
    out = {}
    for name, value in attrs.items():
        if value.upper() in (UNAVAILABLE, TEMPUNAVAIL):
            continue
        if name == "ADDR":
            a = _addr(value)
            if a is None:
                continue
            value = a
        out[name] = value
    return out
