"""The flat RFC 822 tokenizer that postalias(1) uses for aliases(5) lines.

A port of the behaviour of Postfix's tok822_scan(), tok822_internalize() and
tok822_externalize() (no address grouping: postalias does not parse
addresses, it only needs quoting and ':' / ',' / '@' to be recognized).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Token", "TokenError", "tokenize", "internalize", "externalize"]

# tok822_parse.c: RFC 822 specials plus "%!" (not all the world is RFC 822)
# and "|" (for aliases file parsing).
OPCHARS = '|%!()<>@,;:\\".[]'
_SPACE = " \t\r\n"
ATOM, QSTRING, COMMENT, DOMLIT = "atom", "qstring", "comment", "domlit"
_WORDS = (ATOM, QSTRING, COMMENT, DOMLIT)


class TokenError(ValueError):
    pass


@dataclass
class Token:
    kind: str       # ATOM, QSTRING, COMMENT, DOMLIT, or the operator character
    text: str = ""


def _collect(s: str, i: int, stop) -> tuple[str, int]:
    """COLLECT(): copy until stop(ch); a backslash quotes the next character;
    whitespace becomes a space."""
    out = []
    n = len(s)
    while i < n:
        ch = s[i]
        if ch == "\\":
            i += 1
            if i >= n:
                break
            ch = s[i]
        elif stop(ch):
            break
        out.append(" " if ch in _SPACE else ch)
        i += 1
    return "".join(out), i


def tokenize(s: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        i += 1
        if ch in _SPACE:
            continue
        if ch == "(":
            depth, start = 1, i - 1
            while i < n and depth:
                c = s[i]
                i += 1
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                elif c == "\\" and i < n:
                    i += 1
            tokens.append(Token(COMMENT, s[start:i]))
        elif ch == "[":
            text, i = _collect(s, i, lambda c: c == "]")
            i += i < n
            tokens.append(Token(DOMLIT, text))
        elif ch == '"':
            text, i = _collect(s, i, lambda c: c == '"')
            i += i < n
            tokens.append(Token(QSTRING, text))
        elif ch != "\\" and ch in OPCHARS:
            tokens.append(Token(ch))
        else:
            text, i = _collect(s, i - 1, lambda c: c in _SPACE or c in OPCHARS)
            # tok822_quote_atom(): an atom holding a space, control or
            # operator character (from a backslash) is externalized quoted.
            if any(c == " " or ord(c) < 32 or ord(c) == 127 or c in OPCHARS for c in text):
                tokens.append(Token(QSTRING, text))
            else:
                tokens.append(Token(ATOM, text))
    return tokens


def _space_after(tokens: list[Token], i: int) -> bool:
    """tok822_append_space(): after ',' (even a final one: Postfix 3.7's
    postalias stores "x, " for "x,"), before '<', and between two words."""
    tp = tokens[i]
    if tp.kind == ",":
        return True
    if i + 1 >= len(tokens):
        return False
    nxt = tokens[i + 1]
    if nxt.kind == "<":
        return True
    return tp.kind in _WORDS and nxt.kind in _WORDS


def internalize(tokens: list[Token]) -> str:
    out = []
    for i, t in enumerate(tokens):
        if t.kind in (ATOM, QSTRING, COMMENT):
            out.append(t.text)
        elif t.kind == DOMLIT:
            out.append(f"[{t.text}]")
        else:
            out.append(t.kind)
        if _space_after(tokens, i):
            out.append(" ")
    return "".join(out)


def _quoted(text: str, specials: str) -> str:
    return "".join("\\" + c if c in specials else c for c in text)


def externalize(tokens: list[Token]) -> str:
    out = []
    for i, t in enumerate(tokens):
        if t.kind in (ATOM, COMMENT):
            out.append(t.text)
        elif t.kind == QSTRING:
            out.append('"' + _quoted(t.text, '"\\\r\n') + '"')
        elif t.kind == DOMLIT:
            out.append("[" + _quoted(t.text, "\\\r\n") + "]")
        else:
            out.append(t.kind)
        if _space_after(tokens, i):
            out.append(" ")
    return "".join(out)
