"""unionmap:{type:name, ...} and pipemap:{type:name, ...} (Postfix 3.0).

unionmap: look the key up in every table; the result is the comma-separated
list of every value found (not found if none). pipemap: the result of each
table is the key for the next; not found as soon as one stage finds nothing.
A temporary failure in any table is a temporary failure of the whole.
"""

from __future__ import annotations

from pfy.tables._base import Table, TableError, split_braced

__all__ = ["UnionTable", "PipeTable"]


def _components(kind: str, name: str, cfg, fold) -> list[Table]:
    from pfy.tables import open_table

    text = name.strip()
    need = f'need "{kind}:{{type:name...}}"'
    if not (text.startswith("{") and text.endswith("}")):
        raise TableError(f"bad syntax: \"{kind}:{name}\"; {need}")
    try:
        specs = split_braced(text[1:-1])
    except TableError:
        raise TableError(f"bad syntax: \"{kind}:{name}\"; {need}") from None
    if not specs:
        raise TableError(f"empty table: \"{kind}:{name}\"; {need}")
    tables = []
    for spec in specs:
        colon = spec.find(":")
        if colon <= 0:
            raise TableError(f"{kind} map: \"{spec}\": need \"type:name\" form")
        tables.append(open_table(spec, cfg, fold=fold))
    return tables


class UnionTable(Table):
    def __init__(self, name: str, cfg, fold: bool):
        self.type, self.name, self.fold = "unionmap", name, fold
        self.tables = _components("unionmap", name, cfg, fold)
        # A composite is a pattern table if any member is: a member regexp
        # must never see the partial keys of a search order.
        self.pattern = any(t.pattern for t in self.tables)

    def lookup(self, key: str) -> str | None:
        found = [v for v in (t.lookup(key) for t in self.tables) if v is not None]
        return ",".join(found) if found else None


class PipeTable(Table):
    def __init__(self, name: str, cfg, fold: bool):
        self.type, self.name, self.fold = "pipemap", name, fold
        self.tables = _components("pipemap", name, cfg, fold)
        if len(self.tables) < 2:
            raise TableError(f"bad syntax: \"pipemap:{name}\"; need at least two tables")
        self.pattern = any(t.pattern for t in self.tables)

    def lookup(self, key: str) -> str | None:
        value: str | None = key
        for table in self.tables:
            value = table.lookup(value)
            if value is None:
                return None
        return value


def open_unionmap(kind, name, cfg, fold):
    return UnionTable(name, cfg, fold)


def open_pipemap(kind, name, cfg, fold):
    return PipeTable(name, cfg, fold)
