"""smtpd access control and recipient validation, as Postfix's smtpd_check.

    policy = AccessPolicy.from_config(cfg, resolver=..., rewrite=...)   # pre_jail
    verdict = await policy.check(Stage.RCPT, facts)

See docs/INTERNALS.md "pfy.access" for the contract with the smtpd driver.
"""

from pfy.access.engine import AccessConfigError, AccessPolicy, format_whatsup
from pfy.access.facts import Action, SessionFacts, Stage, Verdict

__all__ = ["AccessPolicy", "AccessConfigError", "SessionFacts", "Stage", "Verdict",
           "Action", "format_whatsup"]
