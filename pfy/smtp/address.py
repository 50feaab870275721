"""RFC 5321/5322 addresses, tokenized the way Postfix's tok822 does.

Two forms of an address travel through a mail system (Postfix's words):

- *external* (quoted) form, as written in headers and SMTP commands:
  ``"john smith"@example.com``;
- *internal* (unquoted) form, as stored in queue files and looked up in
  tables: ``john smith@example.com``.

quote_local() and unquote_local() convert between them. tokenize() splits
text into RFC 822 tokens (atoms, quoted strings, domain literals, comments
and operator characters); parse_address_list() groups a header value into
addresses, display names and groups so that each address can be rewritten
in place and the header put back together with format_address_list().

Everything here is pure: strings in, strings and tokens out. Bad input never
raises; it tokenizes as well as it can, as Postfix's parser does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Token", "ATOM", "QSTRING", "DOMLIT", "COMMENT",
    "tokenize", "externalize", "internalize", "quote_local", "unquote_local",
    "split_address", "Address", "AddressList", "parse_address_list",
    "format_address_list", "strip_source_route", "addresses_in",
]

ATOM = "atom"
QSTRING = "qstring"
DOMLIT = "domlit"
COMMENT = "comment"
_WORDS = (ATOM, QSTRING, DOMLIT, COMMENT)

# RFC 822 3.3 specials, plus Postfix's extra operators "%!|" (tok822_parse.c
# tok822_opchar) so that the percent hack and bang paths see them as tokens.
_SPECIALS = '()<>@,;:\\".[]'
_OPCHARS = "%!|" + '<>@,;:.'

# quote_822_local.c: characters that force a local part into a quoted
# string (RFC 822 specials, space and controls).
_NEEDS_QUOTE = set(_SPECIALS.replace(".", "")) | {" ", "\t"}


@dataclass(frozen=True)
class Token:
    kind: str        # ATOM, QSTRING, DOMLIT, COMMENT, or an operator character
    text: str        # unquoted content (QSTRING, COMMENT without parens)

    def external(self) -> str:
        if self.kind == QSTRING:
            return '"' + self.text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if self.kind == COMMENT:
            return "(" + self.text + ")"
        return self.text

    def internal(self) -> str:
        return self.text if self.kind != COMMENT else "(" + self.text + ")"


def _scan_until(text: str, i: int, close: str, nest: str | None = None) -> tuple[str, int]:
    """Read a quoted construct starting after its opening character; handle
    backslash quoting and (for comments) nesting. An unterminated construct
    runs to the end of the text, as tok822_scan does."""
    out = []
    depth = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            if close == ")":          # comments keep their quoting verbatim
                out.append(ch)
            out.append(text[i + 1])
            i += 2
            continue
        if nest and ch == nest:
            depth += 1
        elif ch == close:
            if depth == 0:
                return "".join(out), i + 1
            depth -= 1
        out.append(ch)
        i += 1
    return "".join(out), n


def tokenize(text: str) -> list[Token]:
    """Split text into RFC 822 tokens (Postfix tok822_scan)."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "(":
            body, i = _scan_until(text, i + 1, ")", "(")
            tokens.append(Token(COMMENT, body))
        elif ch == '"':
            body, i = _scan_until(text, i + 1, '"')
            tokens.append(Token(QSTRING, body))
        elif ch == "[":
            body, i = _scan_until(text, i + 1, "]")
            tokens.append(Token(DOMLIT, "[" + body + "]"))
        elif ch in _OPCHARS:
            tokens.append(Token(ch, ch))
            i += 1
        else:
            start = i
            while i < n and text[i] not in _OPCHARS and text[i] not in ' \t\r\n"()[':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                i += 1
            tokens.append(Token(ATOM, text[start:i]))
    return tokens


def _join(tokens: list[Token], external: bool) -> str:
    # Inside an address Postfix writes tokens back to back; two adjacent
    # words (an invalid but possible "first last") keep a space between them.
    out = []
    prev = None
    for tok in tokens:
        if prev is not None and prev.kind in _WORDS and tok.kind in _WORDS:
            out.append(" ")
        out.append(tok.external() if external else tok.internal())
        prev = tok
    return "".join(out)


def externalize(tokens: list[Token]) -> str:
    """Tokens of one address back to quoted (external) form."""
    return _join(tokens, True)


def internalize(tokens: list[Token]) -> str:
    """Tokens of one address to unquoted (internal) form."""
    return _join(tokens, False)


def split_address(address: str) -> tuple[str, str | None]:
    """Split at the last '@': ("user", "example.com"), or (address, None)."""
    at = address.rfind("@")
    if at < 0:
        return address, None
    return address[:at], address[at + 1:]


def _is_dot_atom(local: str) -> bool:
    """RFC 5322 dot-atom (quote_822_local.c is_822_dot_string)."""
    if not local or local[0] == "." or local[-1] == "." or ".." in local:
        return False
    for ch in local:
        if ch in _NEEDS_QUOTE or ord(ch) < 32 or ord(ch) == 127:
            return False
    return True


def quote_local(address: str) -> str:
    """Internal to external form: quote the local part when it needs it.

    The domain is never quoted. The null address stays empty (quote_822_local
    leaves it to the caller to write "<>" where the protocol needs it).
    """
    if not address:
        return address
    local, domain = split_address(address)
    if not local or _is_dot_atom(local):
        return address
    quoted = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return quoted if domain is None else quoted + "@" + domain


def unquote_local(address: str) -> str:
    """External to internal form: remove quoting from the local part."""
    if '"' not in address and "\\" not in address:
        return address
    return internalize(tokenize(address))


def strip_source_route(tokens: list[Token]) -> list[Token]:
    """Drop an RFC 821 source route "@a,@b:" ahead of the mailbox
    (rewrite.c: tree starts with '@' and has a ':' that is not last)."""
    if tokens and tokens[0].kind == "@":
        for i, tok in enumerate(tokens):
            if tok.kind == ":" and i != len(tokens) - 1:
                return tokens[i + 1:]
    return tokens


# ---------------------------------------------------------------------------
# Header address lists (RFC 5322 3.4: address-list, mailbox, group)

@dataclass
class Address:
    """One address in a header; tokens are the addr-spec only (Postfix's
    TOK822_ADDR node), so rewriting replaces exactly them."""
    tokens: list[Token]

    @property
    def external(self) -> str:
        return externalize(self.tokens)

    @property
    def internal(self) -> str:
        return internalize(self.tokens)

    def replace(self, external_address: str) -> None:
        self.tokens = tokenize(external_address)


@dataclass
class AddressList:
    """A parsed header value: a sequence of Tokens and Addresses in order,
    so format_address_list() can put everything but the changed addresses
    back as it was (modulo whitespace, as Postfix)."""
    items: list = field(default_factory=list)

    @property
    def addresses(self) -> list[Address]:
        return [x for x in self.items if isinstance(x, Address)]


def _split_top(tokens: list[Token]) -> list[tuple[list[Token], Token | None]]:
    """Split at ',' ';' and group ':' outside angle brackets."""
    parts: list[tuple[list[Token], Token | None]] = []
    cur: list[Token] = []
    angle = 0
    for tok in tokens:
        if tok.kind == "<":
            angle += 1
        elif tok.kind == ">":
            angle = max(0, angle - 1)
        elif angle == 0 and tok.kind in ",;":
            parts.append((cur, tok))
            cur = []
            continue
        elif angle == 0 and tok.kind == ":" and not any(t.kind in "@<" for t in cur):
            # "display-name:" starts a group (RFC 5322 3.4 group).
            parts.append((cur, Token(":", ":")))
            cur = []
            continue
        cur.append(tok)
    parts.append((cur, None))
    return parts


def _element(tokens: list[Token]) -> list:
    """One mailbox: "phrase <addr-spec>" or "addr-spec (comment)"."""
    if not tokens:
        return []
    try:
        lt = next(i for i, t in enumerate(tokens) if t.kind == "<")
    except StopIteration:
        words = [t for t in tokens if t.kind != COMMENT]
        if not words:
            return list(tokens)
        # Comments anywhere in a bare address are kept after it (tok822_parse
        # moves them out of the address the same way).
        comments = [t for t in tokens if t.kind == COMMENT]
        return [Address(words)] + comments
    try:
        gt = next(i for i in range(len(tokens) - 1, lt, -1) if tokens[i].kind == ">")
    except StopIteration:
        gt = len(tokens)
    inner = [t for t in tokens[lt + 1:gt] if t.kind != COMMENT]
    out = list(tokens[:lt]) + [Token("<", "<"), Address(inner), Token(">", ">")]
    out += tokens[gt + 1:]
    return out


def parse_address_list(value: str) -> AddressList:
    """Parse a header value (To:, From:, Cc: ...) into an AddressList."""
    result = AddressList()
    for part, sep in _split_top(tokenize(value)):
        if sep is not None and sep.kind == ":":
            result.items.extend(part)        # a group's display name
        else:
            result.items.extend(_element(part))
        if sep is not None:
            result.items.append(sep)
    return result


def addresses_in(value: str) -> list[str]:
    """The addresses of a header value, in internal form (for sendmail -t)."""
    return [a.internal for a in parse_address_list(value).addresses if a.tokens]


def _space_after(item, nxt) -> bool:
    """tok822_append_space(): a space after ',' and group ':', before '<',
    and between two non-operator items."""
    if nxt is None:
        return False
    kind = "addr" if isinstance(item, Address) else item.kind
    nkind = "addr" if isinstance(nxt, Address) else nxt.kind
    if kind in (",", ":") or nkind == "<":
        return True
    words = _WORDS + ("addr",)
    return kind in words and nkind in words


def format_address_list(alist: AddressList, fold: bool = True) -> str:
    """Write a header value back. fold=True starts a new line after a comma
    when the line would pass 70 columns (cleanup_fold_header); continuation
    lines begin with a TAB, as Postfix writes them."""
    lines: list[str] = []
    cur: list[str] = []
    items = alist.items
    for i, item in enumerate(items):
        nxt = items[i + 1] if i + 1 < len(items) else None
        if isinstance(item, Address):
            text = item.external
        else:
            text = item.external()
        cur.append(text)
        if fold and not isinstance(item, Address) and item.kind == ",":
            line = "".join(cur)
            # Keep filling the line while it stays under 70 columns.
            if nxt is not None and len(line) + _len_until_comma(items, i + 1) >= 70:
                lines.append(line)
                cur = []
                continue
        if _space_after(item, nxt):
            cur.append(" ")
    lines.append("".join(cur))
    return "\n\t".join(lines)


def _len_until_comma(items, start: int) -> int:
    n = 1
    for item in items[start:]:
        if not isinstance(item, Address) and item.kind == ",":
            break
        n += len(item.external if isinstance(item, Address) else item.external()) + 1
    return n
