"""header_checks(5) / body_checks actions: parse what a table returned.

A lookup result is "ACTION optional text". parse_action() turns it into an
Action; cleanup decides what each one does to the message. Unknown actions
are reported (Postfix: "unknown command in header_checks map") and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Action", "parse_action", "ACTIONS", "dsn_reply"]

# header_checks(5) ACTIONS, Postfix 3.7.
ACTIONS = frozenset({
    "BCC", "DISCARD", "DUNNO", "FILTER", "HOLD", "IGNORE", "INFO", "OK",
    "PREPEND", "REDIRECT", "REJECT", "REPLACE", "WARN",
})


@dataclass(frozen=True)
class Action:
    verb: str        # upper case, one of ACTIONS, or "" for an unknown command
    text: str        # the rest, stripped
    raw: str         # the table value as returned


def parse_action(value: str) -> Action:
    value = value.strip()
    head, _, rest = value.partition(" ")
    if "\t" in head:
        head, _, more = head.partition("\t")
        rest = more + " " + rest
    verb = head.upper()
    return Action(verb if verb in ACTIONS else "", rest.strip(), value)


def dsn_reply(text: str, default_dsn: str = "5.7.1",
              default_text: str = "message content rejected") -> str:
    """The REJECT text with a DSN status in front, as cleanup_act.c: an
    optional leading "4.x.y"/"5.x.y" is kept, else default_dsn is added."""
    text = text.strip() or default_text
    head = text.split(" ", 1)[0]
    parts = head.split(".")
    if len(parts) == 3 and parts[0] in ("4", "5") and all(p.isdigit() for p in parts):
        return text
    return f"{default_dsn} {text}"
