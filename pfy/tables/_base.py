"""What every table type shares: the Table interface, errors, warnings, the
Postfix "logical line" reader, and reopening a file that was rebuilt."""

from __future__ import annotations

import logging
import os
import time
from typing import Iterator

_log = logging.getLogger("pfy.tables")


class TableError(Exception):
    """A table that cannot be used: bad spec, missing file, malformed line."""


class TableTempFail(Exception):
    """A lookup that failed for now (database busy, I/O error): try again later."""


def warn(message: str) -> None:
    """Report a table warning (duplicate key, ignored line...).

    Commands print it as "postmap: warning: ..."; daemons log it. The
    severity word is added by the handler, never here (STYLE.md).
    """
    _log.warning(message)


class Table:
    """One open lookup table.

    pattern: True for tables matched against the whole key only (regexp, pcre,
    cidr...). Postfix's search orders send partial keys (domain, user@,
    @domain, truncated addresses) only to fixed-string tables
    (DICT_FLAG_FIXED), so search.py asks this flag.
    fold: lookups lowercase the key (DICT_FLAG_FOLD_FIX).
    """

    type: str = ""
    name: str = ""
    pattern: bool = False
    fold: bool = True

    def lookup(self, key: str) -> str | None:
        """The value for key, or None; every table type defines it."""
        raise NotImplementedError(f"{type(self).__name__}: no lookup()")

    def items(self) -> Iterator[tuple[str, str]]:
        """Every (key, value) in storage order, for postmap -s."""
        raise TableError(f"table {self.type}:{self.name}: sequence operation is not supported")

    def close(self) -> None:
        pass

    @property
    def spec(self) -> str:
        return f"{self.type}:{self.name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


def logical_lines(lines, path: str) -> Iterator[tuple[int, str]]:
    """Postfix's readllines(): yield (first line number, logical line).

    A logical line starts with non-whitespace text; a line that starts with
    whitespace continues it (its text appended as is, leading whitespace
    kept, as Postfix does). Blank lines and lines whose first non-whitespace
    character is '#' are skipped and do not end a logical line. Trailing
    whitespace is removed. A continuation line with nothing to continue is
    kept as a line of its own (Postfix warns and does the same).
    """
    # Hot path of every build (a million lines): one logical line is usually
    # one physical line, so the list for continuations is made only when needed.
    cur: str | None = None
    more: list[str] | None = None
    start = 0
    for lineno, raw in enumerate(lines, 1):
        c = raw[:1]
        if c == " " or c == "\t":
            text = raw.strip()
            if not text or text[0] == "#":
                continue
            if cur is None:
                cur, start = text, lineno
                continue
            if more is None:
                more = [cur.rstrip("\r\n")]
            more.append(raw.rstrip("\r\n"))
            continue
        if c == "#" or c == "\n" or c == "\r" or not c or not raw.strip():
            continue
        if cur is not None:
            yield start, ("".join(more) if more else cur).rstrip()
        cur, more, start = raw, None, lineno
    if cur is not None:
        yield start, ("".join(more) if more else cur).rstrip()


def read_source(path: str) -> list[str]:
    """All lines of a table source file; TableError as Postfix words it."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.readlines()
    except OSError as err:
        raise TableError(f"open {path}: {err.strerror}") from None


def inline_rules(name: str) -> list[str] | None:
    """The rules of an inline pattern table "{ {rule-1}, {rule-2} }", else None.

    regexp_table(5)/pcre_table(5)/cidr_table(5) INLINE SPECIFICATION: Postfix
    ignores whitespace after '{' and before '}' and treats each rule as one
    line of a file.
    """
    text = name.strip()
    if not text.startswith("{"):
        return None
    if not text.endswith("}"):
        raise TableError(f"{name}: missing '}}' at end of inline table")
    return [item.strip() for item in split_braced(text[1:-1])]


def split_braced(text: str, seps: str = ", \t\r\n") -> list[str]:
    """Split at separators outside {...}; a {...} element loses its braces.

    This is Postfix's mystrtokq() with "{}" as grouping, plus the brace
    stripping that extpar() does for each element.
    """
    items: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in seps:
            i += 1
        if i >= n:
            break
        start, depth = i, 0
        while i < n and (depth > 0 or text[i] not in seps):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth < 0:
                    raise TableError(f"unexpected '}}' in \"{text}\"")
            i += 1
        if depth:
            raise TableError(f"missing '}}' in \"{text}\"")
        item = text[start:i]
        if item.startswith("{") and item.endswith("}"):
            item = item[1:-1].strip()
        items.append(item)
    return items


class FileWatch:
    """Notice that a table file was replaced or changed, cheaply.

    Rebuilds rename a new file into place, so the inode changes; in-place
    updates (postmap -i/-d) change the mtime. stat() runs at most once per
    CHECK_INTERVAL per table, so a busy daemon pays one syscall a second.
    """

    # Postfix daemons stat their tables when idle or between requests
    # (dict_changed_name()); one second bounds the staleness the same way
    # without a stat per lookup.
    CHECK_INTERVAL = 1.0

    def __init__(self, path: str):
        self.path = path
        self.ident = self._ident()
        self.next_check = time.monotonic() + self.CHECK_INTERVAL

    def _ident(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def changed(self) -> bool:
        now = time.monotonic()
        if now < self.next_check:
            return False
        self.next_check = now + self.CHECK_INTERVAL
        ident = self._ident()
        if ident is None or ident == self.ident:
            return False        # a vanished file: keep serving the old copy
        self.ident = ident
        return True
