"""smtpd's door to the access engine (pfy.access), and a stand-in until it
is installed.

The engine (AccessPolicy, SessionFacts, Stage) decides every restriction
list; smtpd asks it at each stage and acts on the verdict. When pfy.access
is missing, _Fallback applies the default smtpd_relay_restrictions only
(permit_mynetworks, permit_sasl_authenticated, reject/defer_unauth_destination)
so that an instance is never an open relay.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pfy.smtp.replies import Reply

__all__ = ["Verdict", "load_policy", "STAGES"]

STAGES = ("CONNECT", "HELO", "MAIL", "RCPT", "DATA", "END_OF_DATA", "ETRN", "VRFY")


@dataclass
class Verdict:
    """What smtpd needs from a decision, whatever engine made it."""
    reply: Reply | None = None            # None: go ahead
    hold: bool = False
    discard: bool = False
    filter: str = ""
    redirect: str = ""
    prepend: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    logged: bool = False                  # the engine logged its reject line


def _verdict_from(v) -> Verdict:
    """pfy.access.Verdict(reply, actions=[Action(kind, value)]) -> Verdict."""
    out = Verdict(reply=v.reply, logged=True)
    for a in v.actions or ():
        kind = a.kind.upper()
        if kind == "HOLD":
            out.hold = True
        elif kind == "DISCARD":
            out.discard = True
        elif kind == "FILTER":
            out.filter = a.value
        elif kind == "REDIRECT":
            out.redirect = a.value
        elif kind == "PREPEND":
            out.prepend.append(a.value)
    return out


class _Engine:
    """pfy.access (docs/INTERNALS.md "pfy.access")."""

    def __init__(self, module, policy):
        self.m = module
        self.policy = policy
        import dataclasses
        self.fields = {f.name for f in dataclasses.fields(module.SessionFacts)}

    def new_facts(self):
        return self.m.SessionFacts()

    def update(self, facts, values: dict) -> None:
        for k, v in values.items():
            if k in self.fields:
                setattr(facts, k, v)

    async def check(self, stage: str, facts) -> Verdict:
        return _verdict_from(await self.policy.check(getattr(self.m.Stage, stage), facts))

    def close(self) -> None:
        close = getattr(self.policy, "close", None)
        if close:
            close()


class _Facts(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class _Fallback:
    """Default relay control only, until pfy.access is installed."""

    def __init__(self, cfg, mynetworks, resolve):
        self.mynetworks = mynetworks
        self.resolve = resolve            # async (sender, rcpt) -> ResolveReply | None
        words = [w.lower() for w in cfg.smtpd_relay_restrictions] + \
                [w.lower() for w in cfg.smtpd_recipient_restrictions]
        if not any(w.endswith("_unauth_destination") for w in words):
            # Postfix refuses to run without a relay restriction; the
            # stand-in never runs as an open relay either.
            words = ["permit_mynetworks", "permit_sasl_authenticated",
                     "reject_unauth_destination"]
        self.words = words
        self.relay_code = int(cfg.relay_domains_reject_code)

    def new_facts(self):
        return _Facts()

    def update(self, facts, values: dict) -> None:
        facts.update(values)

    def close(self) -> None:
        pass

    async def check(self, stage: str, facts) -> Verdict:
        if stage != "RCPT":
            return Verdict()
        for word in self.words:
            if word == "permit_mynetworks" and self.mynetworks.match(
                    facts.client_name, facts.client_addr):
                return Verdict()
            if word == "permit_sasl_authenticated" and facts.get("sasl_username"):
                return Verdict()
            if word in ("reject_unauth_destination", "defer_unauth_destination"):
                r = await self.resolve(facts.sender or "", facts.recipient)
                if r is None or r.failed:
                    return Verdict(Reply(451, "4.3.0",
                                         f"<{facts.recipient}>: Temporary lookup failure"))
                if r.is_final or r.relay_ok:
                    return Verdict()
                if word.startswith("defer"):
                    return Verdict(Reply(454, "4.7.1", f"<{facts.recipient}>: Relay access denied"))
                return Verdict(Reply(self.relay_code, "5.7.1",
                                     f"<{facts.recipient}>: Relay access denied"))
            if word == "permit":
                return Verdict()
            if word == "reject":
                return Verdict(Reply(554, "5.7.1", f"<{facts.recipient}>: Recipient address rejected: Access denied"))
        return Verdict()


def load_policy(cfg, *, mynetworks, resolve, rewrite=None, resolver=None):
    """The access engine for this process (pre_jail: tables open before chroot).
    Raises ValueError (one line naming the parameter) for a fatal config."""
    try:
        import pfy.access as access
        engine_cls = access.AccessPolicy
    except (ImportError, AttributeError):
        return _Fallback(cfg, mynetworks, resolve)
    try:
        policy = engine_cls.from_config(cfg, resolver=resolver, rewrite=rewrite)
    except getattr(access, "AccessConfigError", ValueError) as err:
        raise ValueError(str(err)) from None
    return _Engine(access, policy)
