"""Table maintenance shared by postmap(1), postalias(1), newaliases(1) and
sendmail -bi: build, incremental update, query, delete and dump.

Errors are TableError with Postfix's wording; the commands print them as
one "prog: fatal: ..." line.
"""

from __future__ import annotations

import os
from typing import Iterable, TextIO

from pfy.tables import TableError, open_table, split_spec
from pfy.tables._base import read_source

__all__ = ["BUILDABLE", "build_table", "update_table", "query_tables", "query_stream",
           "delete_key", "delete_stream", "dump_table", "build_aliases"]

# Types that postmap/postalias can create: the indexed ones, all stored in LMDB.
BUILDABLE = ("lmdb", "hash", "btree")


def _map_size(cfg) -> int:
    from pfy.tables.lmdb_table import DEFAULT_MAP_SIZE
    try:
        return int(cfg.lmdb_map_size) if cfg is not None else DEFAULT_MAP_SIZE
    except (KeyError, AttributeError, TypeError, ValueError):
        return DEFAULT_MAP_SIZE


def _buildable(spec: str, cfg) -> tuple[str, str]:
    kind, name = split_spec(spec, cfg)
    if kind not in BUILDABLE:
        from pfy.tables import TABLE_TYPES
        if kind not in TABLE_TYPES:
            raise TableError(f"unsupported dictionary type: {kind}")
        raise TableError(f"unsupported dictionary type: {kind} does not support bulk-mode creation.")
    return kind, name


def _entries(lines: Iterable[str], path: str, aliases: bool):
    from pfy.tables._source import alias_entries, postmap_entries
    return (alias_entries if aliases else postmap_entries)(lines, path)


def build_table(spec: str, cfg=None, *, aliases: bool = False, dup: str = "warn",
                fold: bool = True) -> int:
    """postmap [type:]file / postalias [type:]file: (re)build file.lmdb from
    file, atomically. Returns the number of keys stored."""
    from pfy.tables.lmdb_table import build_lmdb

    kind, name = _buildable(spec, cfg)
    lines = read_source(name)
    st = os.stat(name)
    entries = _entries(lines, name, aliases)
    if aliases:
        # Sendmail compatibility, as postalias: the "@" key says that the
        # database is complete. (The NIS YP_* keys are not written: pfy has
        # no NIS client.)
        entries = _with_sentinel(entries)
    return build_lmdb(name, entries, spec=f"{kind}:{name}", dup=dup, fold=fold,
                      source_stat=st, map_size=_map_size(cfg))


def _with_sentinel(entries):
    yield from entries
    yield 0, "@", "@"


def update_table(spec: str, stream: TextIO, cfg=None, *, aliases: bool = False,
                 dup: str = "warn", fold: bool = True) -> int:
    """postmap -i / postalias -i: add entries from stream without truncating."""
    from pfy.tables.lmdb_table import update_lmdb

    kind, name = _buildable(spec, cfg)
    puts = list(_entries(stream, "stdin", aliases))
    count = update_lmdb(name, puts=puts, spec=f"{kind}:{name}", dup=dup, fold=fold,
                        map_size=_map_size(cfg))
    if aliases:
        update_lmdb(name, puts=[(0, "@", "@")], spec=f"{kind}:{name}", dup="replace",
                    fold=fold, map_size=_map_size(cfg))
    return count


def query_tables(specs: list[str], key: str, cfg=None, *, fold: bool = True) -> str | None:
    """postmap -q KEY: the first table (opened in turn) that has key."""
    for spec in specs:
        value = open_table(spec, cfg, fold=fold).lookup(key)
        if value is not None:
            return value
    return None


def query_stream(specs: list[str], stream: TextIO, out: TextIO, cfg=None, *,
                 fold: bool = True, sep: str = "\t") -> bool:
    """postmap -q -: one key a line; print "key<sep>value" for each found.
    Tables are opened on first use, as Postfix does. True if any was found."""
    tables: list = [None] * len(specs)
    found = False
    write = out.write
    for line in stream:
        key = line[:-1] if line.endswith("\n") else line
        for i, spec in enumerate(specs):
            table = tables[i]
            if table is None:
                table = tables[i] = open_table(spec, cfg, fold=fold)
            value = table.lookup(key)
            if value is not None:
                write(f"{key}{sep}{value}\n")
                found = True
                break
    return found


def _writable(spec: str, cfg):
    kind, name = split_spec(spec, cfg)
    if kind not in BUILDABLE:
        from pfy.tables import TABLE_TYPES
        if kind not in TABLE_TYPES:
            raise TableError(f"unsupported dictionary type: {kind}")
        raise TableError(f"{kind}:{name} map requires O_RDONLY access mode")
    return kind, name


def delete_key(specs: list[str], keys: list[str], cfg=None, *, fold: bool = True) -> bool:
    """postmap -d KEY / -d -: remove keys from every table; True if any removed."""
    from pfy.tables.lmdb_table import update_lmdb

    targets = [_writable(spec, cfg) for spec in specs]
    removed = 0
    for kind, name in targets:
        removed += update_lmdb(name, deletes=keys, spec=f"{kind}:{name}", fold=fold,
                               create=False, map_size=_map_size(cfg))
    return removed > 0


def delete_stream(specs: list[str], stream: TextIO, cfg=None, *, fold: bool = True) -> bool:
    keys = [line[:-1] if line.endswith("\n") else line for line in stream]
    return delete_key(specs, keys, cfg, fold=fold)


def dump_table(spec: str, out: TextIO, cfg=None, *, fold: bool = True, sep: str = "\t") -> None:
    """postmap -s: every key and value, in storage order."""
    write = out.write
    for key, value in open_table(spec, cfg, fold=fold).items():
        write(f"{key}{sep}{value}\n")


def build_aliases(cfg, *, dup: str = "warn") -> list[str]:
    """newaliases / sendmail -bi: build every indexed table in alias_database.

    Other table types there (texthash, regexp, ...) need no build and are
    skipped, as Postfix's newaliases does. Returns the specs built.
    """
    built = []
    for spec in cfg.alias_database:
        kind, _ = split_spec(spec, cfg)
        if kind in BUILDABLE:
            build_table(spec, cfg, aliases=True, dup=dup)
            built.append(spec)
    return built
