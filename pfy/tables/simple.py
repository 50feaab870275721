"""Tables without a file: static, inline, fail and environ (Postfix's
dict_static, dict_inline, dict_fail and dict_environ)."""

from __future__ import annotations

import os
import re

from pfy.tables._base import Table, TableError, TableTempFail, split_braced

__all__ = ["StaticTable", "InlineTable", "FailTable", "EnvironTable"]


class StaticTable(Table):
    """static:value, static:{ value with spaces }: every key finds value."""

    def __init__(self, name: str):
        self.type, self.name = "static", name
        text = name
        if text.startswith("{"):
            end = text.rfind("}")
            if end < 0:
                raise TableError(f"bad static:name syntax: missing '}}' in \"{name}\"")
            if text[end + 1:].strip():
                raise TableError(f"bad static:name syntax: syntax error after '}}' in \"{name}\"")
            text = text[1:end].strip()
        self.value = text

    def lookup(self, key: str) -> str | None:
        return self.value


_INLINE_NEED = 'need "inline:{name=value...}"'
_NAME_VALUE = re.compile(r"\s*([^\s=]+)\s*=\s*(.*?)\s*\Z", re.S)


class InlineTable(Table):
    """inline:{ key=value, { key = text with spaces } } (Postfix 3.0).

    A key has no whitespace; a value with whitespace is written inside
    braces. The last setting of a key wins, as in Postfix.
    """

    def __init__(self, name: str, fold: bool):
        self.type, self.name, self.fold = "inline", name, fold
        spec = f"inline:{name}"
        text = name.strip()
        if not (text.startswith("{") and text.endswith("}")):
            raise TableError(f"bad syntax: \"{spec}\"; {_INLINE_NEED}")
        try:
            items = split_braced(text[1:-1])
        except TableError:
            raise TableError(f"bad syntax: \"{spec}\"; {_INLINE_NEED}") from None
        if not items:
            raise TableError(f"empty table: \"{spec}\"; {_INLINE_NEED}")
        self.data: dict[str, str] = {}
        for item in items:
            m = _NAME_VALUE.match(item)
            if not m:
                raise TableError(f"missing '=' after attribute name: \"{spec}\"; {_INLINE_NEED}")
            key = m.group(1).lower() if fold else m.group(1)
            self.data[key] = m.group(2)

    def lookup(self, key: str) -> str | None:
        return self.data.get(key.lower() if self.fold else key)

    def items(self):
        return iter(self.data.items())


class FailTable(Table):
    """fail:name: every lookup fails temporarily (testing, or disabling a feature)."""

    pattern = True   # dict_fail registers as a pattern table: no partial lookups

    def __init__(self, name: str):
        self.type, self.name = "fail", name

    def lookup(self, key: str) -> str | None:
        raise TableTempFail(f"table fail:{self.name}: query error: Application error")


class EnvironTable(Table):
    """environ:name: the process environment. Keys fold like any fixed table,
    so "postmap -q PATH environ:" finds nothing without -f, as in Postfix."""

    def __init__(self, name: str, fold: bool):
        self.type, self.name, self.fold = "environ", name, fold

    def lookup(self, key: str) -> str | None:
        return os.environ.get(key.lower() if self.fold else key)

    def items(self):
        return iter(os.environ.items())


def open_static(kind, name, cfg, fold):
    return StaticTable(name)


def open_inline(kind, name, cfg, fold):
    return InlineTable(name, fold)


def open_fail(kind, name, cfg, fold):
    return FailTable(name)


def open_environ(kind, name, cfg, fold):
    return EnvironTable(name, fold)
