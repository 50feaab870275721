"""Lookup tables: "type:name" -> a table object with lookup(key).

    from pfy.tables import open_table, TableTempFail, TableError
    t = open_table("lmdb:/etc/pfy/access", cfg)
    t.lookup("example.com")  -> "REJECT" | None     (raises TableTempFail)

A lookup has three outcomes, as in Postfix's dict(3): a value, None (not
found), or TableTempFail (try again later). TableError is a configuration
error (unknown type, missing file, malformed line); its str() is one line
naming the table, file and line.

Each table type lives in its own module and is imported only when a table of
that type is opened, so a command that opens one lmdb table does not pay for
sqlite3 or the regular expression translator.
"""

from __future__ import annotations

import importlib

from pfy.tables._base import Table, TableError, TableTempFail

__all__ = [
    "open_table", "open_tables", "split_spec", "Table", "TableError", "TableTempFail",
    "TABLE_TYPES", "DEFAULT_DATABASE_TYPE", "defer_open_errors",
]

# The default of default_database_type in pfy (Postfix's is "hash"; DESIGN.md
# makes LMDB the default, and hash/btree are stored as LMDB anyway).
DEFAULT_DATABASE_TYPE = "lmdb"

PROXY_PREFIX = "proxy:"

# type -> "module:factory". A factory is called as factory(type, name, cfg, fold)
# and returns a Table. Types Postfix has but pfy does not (nis, ldap, mysql,
# pgsql, memcache, socketmap, tcp...) are absent: opening one is a
# TableError naming the type, as Postfix's "unsupported dictionary type".
TABLE_TYPES: dict[str, str] = {
    "btree": "pfy.tables.lmdb_table:open_lmdb",
    "cidr": "pfy.tables.cidr_table:open_cidr",
    "environ": "pfy.tables.simple:open_environ",
    "fail": "pfy.tables.simple:open_fail",
    "hash": "pfy.tables.lmdb_table:open_lmdb",
    "inline": "pfy.tables.simple:open_inline",
    "lmdb": "pfy.tables.lmdb_table:open_lmdb",
    "pcre": "pfy.tables.regexp_table:open_pcre",
    "pipemap": "pfy.tables.composite:open_pipemap",
    "regexp": "pfy.tables.regexp_table:open_regexp",
    "sqlite": "pfy.tables.sqlite_table:open_sqlite",
    "static": "pfy.tables.simple:open_static",
    "texthash": "pfy.tables.texthash:open_texthash",
    "unionmap": "pfy.tables.composite:open_unionmap",
}


def _default_type(cfg) -> str:
    if cfg is None:
        return DEFAULT_DATABASE_TYPE
    try:
        return cfg.default_database_type or DEFAULT_DATABASE_TYPE
    except (KeyError, AttributeError):
        return DEFAULT_DATABASE_TYPE


def split_spec(spec: str, cfg=None) -> tuple[str, str]:
    """Split "type:name" into (type, name); a bare name gets default_database_type.

    As Postfix, the type is everything before the first ':' unless that would
    make a path or an inline "{...}" the type: "/etc/x" and "x" have no type.
    """
    colon = spec.find(":")
    if colon > 0 and "/" not in spec[:colon] and "{" not in spec[:colon]:
        return spec[:colon], spec[colon + 1:]
    return _default_type(cfg), spec


class SurrogateTable(Table):
    """A table that could not be opened, standing in for it in a daemon.

    Postfix's dict_surrogate(3): a long-running daemon does not die because
    one table is missing or broken (a fresh host without /etc/aliases.db);
    it logs a warning once, and every lookup is a temporary failure, so the
    mail that needs the table is deferred (451 4.3.0 in smtpd) and nothing
    is lost or wrongly rejected. Commands (postmap -q) still fail at once.
    """

    def __init__(self, kind: str, name: str, reason: str):
        self.type, self.name = kind, name
        self.reason = reason

    def lookup(self, key: str):
        raise TableTempFail(f"{self.spec} is unavailable: {self.reason}")


# Set by defer_open_errors(): where a daemon's "table is unavailable" warning goes.
_open_error_warn = None


def defer_open_errors(warn) -> None:
    """From now on, a table that cannot be opened becomes a SurrogateTable
    (after warn("type:name is unavailable. reason")) instead of TableError.
    The server skeleton turns this on for every daemon, as Postfix's daemons
    have it; unknown table types stay a configuration error."""
    global _open_error_warn
    _open_error_warn = warn


def open_table(spec: str, cfg=None, *, fold: bool = True) -> Table:
    """Open the table named by spec ("type:name"), ready for lookup().

    fold=True lowercases lookup keys of fixed-string tables (Postfix's
    DICT_FLAG_FOLD_FIX, which every daemon uses); postmap -f passes False.

    "proxy:type:name" opens type:name itself: Postfix's proxymap(8) exists
    so that chrooted processes can reach tables outside the jail and share
    database connections; every pfy process opens its tables before its
    jail, so the table is the same one without the hop.
    """
    while spec.startswith(PROXY_PREFIX):
        spec = spec[len(PROXY_PREFIX):]
    if _open_error_warn is None:
        return _open_table(spec, cfg, fold)
    try:
        return _open_table(spec, cfg, fold)
    except TableError as err:
        kind, name = split_spec(spec, cfg)
        if kind not in TABLE_TYPES:
            raise
        _open_error_warn(f"{kind}:{name} is unavailable. {err}")
        return SurrogateTable(kind, name, str(err))


def _open_table(spec: str, cfg, fold: bool) -> Table:
    kind, name = split_spec(spec, cfg)
    target = TABLE_TYPES.get(kind)
    if target is None:
        raise TableError(f"unsupported dictionary type: {kind}")
    if not name:
        raise TableError(f"{kind}: missing table name in \"{spec}\"")
    module_name, _, factory = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, factory)(kind, name, cfg, fold)


def open_tables(specs, cfg=None, *, fold: bool = True):
    """Open a list of tables (a maps parameter's value) as a search.Maps."""
    from pfy.tables.search import Maps
    return Maps([open_table(s, cfg, fold=fold) for s in specs])
