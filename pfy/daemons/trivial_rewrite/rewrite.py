"""Address rewriting to canonical form: Postfix's trivial-rewrite "rewrite".

The rules, in order (ADDRESS_REWRITING_README "Rewrite addresses to standard
form"; trivial-rewrite/rewrite.c rewrite_tree()):

1. the null address and a lone "@" stay null;
2. a source route "@a,@b:user@c" becomes "user@c";
3. an address without "@": "site!user" becomes "user@site"
   (swap_bangpath), else "user%domain" becomes "user@domain"
   (allow_percent_hack), else "@$myorigin" is appended (append_at_myorigin);
4. "user@host" gets ".$mydomain" appended when host has no dot and is not an
   address literal (append_dot_mydomain);
5. one trailing dot of the domain is removed.

In the "remote" context, $myorigin and $mydomain are both replaced by
remote_header_rewrite_domain; when that is empty, nothing is appended.
"""

from __future__ import annotations

from dataclasses import dataclass

from pfy.smtp.address import (
    DOMLIT, QSTRING, Token, externalize, strip_source_route, tokenize,
)

__all__ = ["RewriteContext", "Rewriter", "LOCAL", "REMOTE"]

LOCAL = "local"
REMOTE = "remote"


@dataclass(frozen=True)
class RewriteContext:
    origin: str      # appended as "@origin" to a bare user
    domain: str      # appended as ".domain" to a dotless host


def _rfind(tokens: list[Token], kind: str) -> int:
    for i in range(len(tokens) - 1, -1, -1):
        if tokens[i].kind == kind:
            return i
    return -1


def _find(tokens: list[Token], kind: str) -> int:
    for i, tok in enumerate(tokens):
        if tok.kind == kind:
            return i
    return -1


class Rewriter:
    def __init__(self, *, myorigin: str, mydomain: str, remote_header_rewrite_domain: str = "",
                 swap_bangpath: bool = True, allow_percent_hack: bool = True,
                 append_at_myorigin: bool = True, append_dot_mydomain: bool = False):
        self.contexts = {
            LOCAL: RewriteContext(myorigin, mydomain),
            REMOTE: RewriteContext(remote_header_rewrite_domain, remote_header_rewrite_domain),
        }
        self.swap_bangpath = swap_bangpath
        self.percent_hack = allow_percent_hack
        self.append_at_myorigin = append_at_myorigin
        self.append_dot_mydomain = append_dot_mydomain
        # Scanning the origin and domain once, not per address.
        self._scanned = {name: (tokenize(c.origin), tokenize(c.domain))
                         for name, c in self.contexts.items()}

    @classmethod
    def from_config(cls, cfg) -> "Rewriter":
        return cls(myorigin=cfg.myorigin, mydomain=cfg.mydomain,
                   remote_header_rewrite_domain=cfg.remote_header_rewrite_domain,
                   swap_bangpath=cfg.swap_bangpath, allow_percent_hack=cfg.allow_percent_hack,
                   append_at_myorigin=cfg.append_at_myorigin,
                   append_dot_mydomain=cfg.append_dot_mydomain)

    def rewrite(self, context: str, address: str) -> str:
        """Rewrite an external-form address; context is "local" or "remote".
        An unknown context raises KeyError (the server answers it as an
        error, as rewrite_proto() does)."""
        if not address:
            return address
        return externalize(self.rewrite_tokens(context, tokenize(address)))

    def rewrite_tokens(self, context: str, tokens: list[Token]) -> list[Token]:
        ctx = self.contexts[context]
        origin_toks, domain_toks = self._scanned[context]
        if not tokens:
            return tokens
        if len(tokens) == 1 and tokens[0].kind == QSTRING and tokens[0].text == "":
            return tokens
        if len(tokens) == 1 and tokens[0].kind == "@":
            return [Token(QSTRING, "")]
        tokens = strip_source_route(list(tokens))

        if _rfind(tokens, "@") < 0:
            bang = _find(tokens, "!") if self.swap_bangpath else -1
            pct = _rfind(tokens, "%") if self.percent_hack else -1
            if bang >= 0:
                # domain!user -> user@domain
                tokens = tokens[bang + 1:] + [Token("@", "@")] + tokens[:bang]
            elif pct >= 0:
                tokens[pct] = Token("@", "@")
            elif self.append_at_myorigin and ctx.origin:
                tokens = tokens + [Token("@", "@")] + origin_toks

        at = _rfind(tokens, "@")
        if (self.append_dot_mydomain and ctx.domain and at >= 0 and at != len(tokens) - 1
                and not any(t.kind == DOMLIT or t.kind == "." for t in tokens[at + 1:])):
            tokens = tokens + [Token(".", ".")] + domain_toks

        # Strip one trailing dot, but not dot-dot or "@.".
        if (len(tokens) > 1 and tokens[-1].kind == "."
                and tokens[-2].kind not in (".", "@")):
            tokens = tokens[:-1]
        return tokens

