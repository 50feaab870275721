"""The values the access engine works on: stages, session facts, verdicts."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pfy.smtp.replies import Reply

__all__ = ["Stage", "SessionFacts", "Action", "Verdict"]


class Stage(enum.Enum):
    CONNECT = "CONNECT"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END_OF_DATA = "END-OF-MESSAGE"
    ETRN = "ETRN"
    VRFY = "VRFY"


@dataclass
class SessionFacts:
    """What is known about one SMTP session (Postfix's SMTPD_STATE, the part
    that restrictions and policy servers read).  The driver fills it in as
    the session goes; the engine keeps its per-session notes in it too."""
    client_addr: str = ""
    client_port: int | str = ""
    client_name: str = "unknown"             # forward-confirmed, else "unknown"
    reverse_client_name: str = "unknown"     # PTR name, unverified
    client_name_status: str = "ok"           # ok | temp | perm | forged
    reverse_client_name_status: str = "ok"   # ok | temp | perm
    helo_name: str | None = None
    protocol: str = "SMTP"                   # SMTP | ESMTP
    sender: str | None = None                # None before MAIL; "" = <>
    recipient: str | None = None
    recipient_count: int = 0
    sasl_method: str | None = None
    sasl_username: str | None = None
    sasl_sender: str | None = None
    tls_protocol: str | None = None
    tls_cipher: str | None = None
    tls_cipher_bits: int | None = None
    ccert_subject: str | None = None
    ccert_issuer: str | None = None
    ccert_fingerprint: str | None = None
    ccert_pubkey_fingerprint: str | None = None
    ccert_verified: bool = False
    etrn_domain: str | None = None
    size: int = 0
    queue_id: str | None = None
    instance: str = ""
    pipelined: bool = False
    stress: bool = False
    server_addr: str = ""
    server_port: int | str = ""
    service: str = "smtp"
    # Engine notes kept across stages of one session (Postfix's
    # defer_if_permit_{client,helo,sender} and rcptmap_checked flags).
    notes: dict = field(default_factory=dict, repr=False)

    @property
    def namaddr(self) -> str:
        return f"{self.client_name}[{self.client_addr}]"

    def new_transaction(self) -> None:
        """MAIL, RSET or the end of a message: forget per-message notes."""
        self.sender = None
        self.recipient = None
        self.recipient_count = 0
        self.size = 0
        self.queue_id = None
        for k in ("defer_if_permit_sender", "sender_rcptmap_checked"):
            self.notes.pop(k, None)


@dataclass(frozen=True)
class Action:
    kind: str        # HOLD DISCARD FILTER REDIRECT BCC PREPEND
    value: str = ""


@dataclass
class Verdict:
    reply: Reply | None = None
    actions: list[Action] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reply is None
