"""main.cf syntax, as Postfix's readlline(3) and split_nameval(3).

A logical line starts with a non-blank character; lines that start with
whitespace continue it (the newline is dropped, the whitespace kept).
Lines whose first non-blank character is '#' and blank lines are skipped,
also inside a logical line.  Each logical line is "name = value"; the last
assignment of a name wins (Postfix warns "overriding earlier entry").
"""

from dataclasses import dataclass

__all__ = ["Entry", "MainCfError", "logical_lines", "parse_main_cf"]


class MainCfError(ValueError):
    """A main.cf line that is not "name = value"; str() is Postfix's text."""


@dataclass(frozen=True)
class Entry:
    name: str
    value: str
    line: int          # first physical line of the logical line
    last_line: int     # its last physical line


def logical_lines(text: str, path: str, warn) -> list[tuple[str, int, int]]:
    """(logical line, first line number, last line number) for each logical
    line.  warn(msg) gets Postfix's warnings."""
    out: list[tuple[str, int, int]] = []
    buf: list[str] = []
    first = last = 0
    for number, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        stripped = line.lstrip(" \t\r\f\v")
        if not stripped or stripped.startswith("#"):
            continue
        if stripped is not line and line[0] in " \t\r\f\v":
            if not buf:
                warn(f'{path}: logical line must not start with whitespace: "{line}"')
                continue
            buf.append(line)
            last = number
            continue
        if buf:
            out.append(("".join(buf), first, last))
        buf, first, last = [line], number, number
    if buf:
        out.append(("".join(buf), first, last))
    return out


def split_nameval(line: str) -> tuple[str, str]:
    """'name = value' -> (name, value); MainCfError as split_nameval(3)."""
    s = line.lstrip()
    i = 0
    while i < len(s) and s[i] not in " \t=":
        i += 1
    name = s[:i]
    rest = s[i:].lstrip(" \t")
    if not name:
        raise MainCfError(f'missing attribute name: "{line}"')
    if not rest.startswith("="):
        raise MainCfError(f'missing \'=\' after attribute name: "{line}"')
    return name, rest[1:].strip(" \t\r\n\f\v")


def parse_main_cf(text: str, path: str, warn) -> list[Entry]:
    """Every assignment in order (duplicates included: the last wins)."""
    entries: list[Entry] = []
    for line, first, last in logical_lines(text, path, warn):
        try:
            name, value = split_nameval(line)
        except MainCfError as err:
            raise MainCfError(f"{path}, line {first}: {err}") from None
        entries.append(Entry(name, value, first, last))
    return entries
