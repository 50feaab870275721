"""The Received: header smtpd prepends, line for line as Postfix's smtpd.c
(data_cmd()):

    Received: from helo.example (mx.example [192.0.2.7])
    \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
    \t(No client certificate requested)
    \t(Authenticated sender: alice)
    \tby mail.example (Postfix) with ESMTPSA id 3F2A81C0B1
    \tfor <bob@example.org>; Sat, 22 Nov 2025 10:15:01 +0000 (UTC)

Each element is one content record (the folded lines of one header). The
"for <rcpt>" part appears only with exactly one recipient, as in Postfix
(listing several would disclose Bcc recipients). The TLS lines need
smtpd_tls_received_header = yes, the sender line smtpd_sasl_auth_enable
and smtpd_sasl_authenticated_header = yes.
"""

from __future__ import annotations

import time

from pfy.smtp.address import quote_local

__all__ = ["received_header", "mail_date", "rfc_addr"]


def mail_date(t: float) -> str:
    """Postfix mail_date(): RFC 5322 date, numeric zone and its name."""
    lt = time.localtime(t)
    return time.strftime("%a, %d %b %Y %H:%M:%S %z (%Z)", lt)


def rfc_addr(addr: str) -> str:
    """smtpd_peer.c: IPv6 addresses get RFC 5321's "IPv6:" tag."""
    return f"IPv6:{addr}" if ":" in addr else addr


def _sanitize(text: str) -> str:
    """comment_sanitize(): balanced parentheses, printable text."""
    out, depth = [], 0
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


def received_header(*, helo_name: str | None, client_name: str, client_addr: str,
                    myhostname: str, mail_name: str, protocol: str, queue_id: str,
                    recipients: list[str], arrival: float, tls_lines: list[str] = (),
                    sasl_username: str | None = None) -> list[str]:
    """The header's lines (the first starts with "Received:", the others
    with a tab), one record each."""
    lines = [f"Received: from {helo_name or client_name} ({client_name} [{rfc_addr(client_addr)}])"]
    lines += list(tls_lines)
    if sasl_username:
        lines.append(f"\t(Authenticated sender: {_sanitize(sasl_username)})")
    by = f"\tby {myhostname} ({mail_name}) with {protocol} id {queue_id}"
    if len(recipients) == 1:
        lines.append(by)
        lines.append(f"\tfor <{quote_local(recipients[0])}>; {mail_date(arrival)}")
    else:
        lines.append(by + ";")
        lines.append(f"\t{mail_date(arrival)}")
    return lines
