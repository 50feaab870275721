"""Parsers for table source files: postmap's "key whitespace value" lines
and aliases(5) "name: value, value" lines. Pure: lines in, entries out;
problems go to the warn callback with Postfix's words."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from pfy.tables._base import logical_lines, warn as _warn

__all__ = ["postmap_entries", "alias_entries"]

_SPACE = " \t\r\n\v\f"


def postmap_entries(lines: Iterable[str], path: str, warn: Callable[[str], None] = _warn,
                    bad_line_suffix: str = "") -> Iterator[tuple[int, str, str]]:
    """Yield (line number, key, value) as postmap(1) reads its input.

    postmap.c: split at the first whitespace, trim the value; a line without
    key or value is skipped with a warning; "key:" draws the alias-file hint.
    """
    for lineno, line in logical_lines(lines, path):
        if line.isascii():
            # str.split() splits at exactly postmap's ASCII whitespace here.
            parts = line.split(None, 1)
            key, value = parts[0], parts[1] if len(parts) > 1 else ""
        else:
            cut = 0
            while cut < len(line) and line[cut] not in _SPACE:
                cut += 1
            key, value = line[:cut], line[cut:].strip(_SPACE)
        if not value:
            warn(f"{path}, line {lineno}: expected format: key whitespace value{bad_line_suffix}")
            continue
        if key[-1] == ":":
            warn(f"{path}, line {lineno}: record is in \"key: value\" format; is this an alias file?")
        yield lineno, key, value


def alias_entries(lines: Iterable[str], path: str,
                  warn: Callable[[str], None] = _warn) -> Iterator[tuple[int, str, str]]:
    """Yield (line number, name, value) as postalias(1) reads aliases(5).

    postalias.c tokenizes each logical line as RFC 822 text so that a quoted
    name may contain ':' or '@': the name is stored unquoted (internal form),
    the value re-quoted (external form) with the whitespace between tokens
    normalized, because local(8) parses it again at delivery time.
    """
    from pfy.tables._rfc822 import tokenize, internalize, externalize, TokenError

    for lineno, line in logical_lines(lines, path):
        try:
            tokens = tokenize(line)
        except TokenError:
            warn(f"{path}, line {lineno}: need name:value pair")
            continue
        if not tokens:
            continue
        colon = next((i for i, t in enumerate(tokens) if t.kind == ":"), None)
        if colon is None or colon == 0 or colon == len(tokens) - 1 \
                or any(t.kind == "," for t in tokens[:colon]):
            warn(f"{path}, line {lineno}: need name:value pair")
            continue
        if any(t.kind in ("@", "%") for t in tokens[:colon]):
            warn(f"{path}, line {lineno}: name must be local and have no domain")
            continue
        yield lineno, internalize(tokens[:colon]), externalize(tokens[colon + 1:])
