"""texthash:/path - a postmap(1) source file read into memory at open time
(Postfix's dict_thash), no build step. Reread when the file changes."""

from __future__ import annotations

from pfy.tables._base import FileWatch, Table, TableError, read_source, warn
from pfy.tables._source import postmap_entries

__all__ = ["TexthashTable"]


class TexthashTable(Table):
    def __init__(self, name: str, fold: bool, dup: str = "warn"):
        self.type, self.name, self.fold, self.dup = "texthash", name, fold, dup
        self._load()

    def _load(self) -> None:
        try:
            lines = read_source(self.name)
        except TableError as err:
            # dict_thash words a missing file as a database open failure.
            raise TableError(str(err).replace("open ", "open database ", 1)) from None
        self.watch = FileWatch(self.name)
        data: dict[str, str] = {}
        for lineno, key, value in postmap_entries(lines, self.name, bad_line_suffix=" -- ignoring this line"):
            if self.fold:
                key = key.lower()
            if key in data:
                if self.dup == "replace":
                    data[key] = value
                elif self.dup == "warn":
                    warn(f"{self.name}, line {lineno}: duplicate entry: \"{key}\"")
                continue
            data[key] = value
        self.data = data

    def lookup(self, key: str) -> str | None:
        if self.watch.changed():
            self._load()
        return self.data.get(key.lower() if self.fold else key)

    def items(self):
        return iter(self.data.items())


def open_texthash(kind, name, cfg, fold):
    return TexthashTable(name, fold)
