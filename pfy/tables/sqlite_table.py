"""sqlite:/path/to/config.cf - sqlite_table(5).

The configuration file holds "name = value" lines: dbpath, query (or the
legacy select_field/table/where_field/additional_conditions),
result_format, domain and expansion_limit. The query and result templates
are expanded as Postfix's db_common_expand() does; every value substituted
into the query is SQL-quoted (single quotes doubled, sqlite3 "%q").
"""

from __future__ import annotations

import sqlite3

from pfy.tables._base import Table, TableError, TableTempFail, logical_lines, read_source

__all__ = ["SqliteTable", "expand_template"]

_KNOWN = {"dbpath", "query", "result_format", "domain", "expansion_limit",
          "select_field", "table", "where_field", "additional_conditions"}


class _Suppress(Exception):
    """The template asks for a part the key does not have: no query, no result."""


def _sql_quote(text: str) -> str:
    return text.replace("'", "''")


def _split_key(key: str) -> tuple[str, str | None]:
    at = key.rfind("@")
    if at < 0:
        return key, None
    return key[:at], key[at + 1:]


def expand_template(template: str, key: str, value: str | None = None,
                    quote=lambda s: s) -> str:
    """db_common_expand(): expand %% %s %u %d %S %U %D %1-%9 in template.

    With value None (the query), lower- and upper-case forms both expand the
    key. With a value (result_format), lower-case forms expand the value and
    upper-case forms and digits the key. Raises _Suppress when a required
    part is missing.
    """
    out: list[str] = []
    i, n = 0, len(template)
    k_local, k_domain = _split_key(key)
    v_local, v_domain = _split_key(value) if value is not None else (None, None)
    while i < n:
        c = template[i]
        if c != "%" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        f = template[i + 1]
        i += 2
        if f == "%":
            out.append("%")
            continue
        use_value = value is not None and f in "sud"
        text, local, domain = (value, v_local, v_domain) if use_value else (key, k_local, k_domain)
        lf = f.lower()
        if lf == "s":
            if use_value and not text:
                raise _Suppress
            out.append(quote(text))
        elif lf == "u":
            if domain is not None:
                if not local:
                    raise _Suppress
                out.append(quote(local))
            else:
                out.append(quote(text))
        elif lf == "d":
            if domain is None:
                raise _Suppress
            out.append(quote(domain))
        elif f in "123456789":
            if k_domain is None:
                raise _Suppress
            labels = k_domain.split(".")
            idx = int(f)
            if idx > len(labels):
                raise _Suppress
            out.append(quote(labels[-idx]))
        else:
            raise TableError(f"invalid % expansion \"%{f}\" in \"{template}\"")
    return "".join(out)


class SqliteTable(Table):
    def __init__(self, name: str, cfg, fold: bool):
        self.type, self.name, self.fold = "sqlite", name, fold
        params = self._read_config(name, cfg)
        self.label = f"sqlite:{name}"
        self.dbpath = params.get("dbpath", "")
        if not self.dbpath:
            raise TableError(f"{name}: sqlite map: missing \"dbpath\" parameter")
        self.query = params.get("query") or self._legacy_query(params)
        self.result_format = params.get("result_format", "%s") or "%s"
        limit = params.get("expansion_limit", "0") or "0"
        if not limit.isdigit():
            raise TableError(f"{name}: bad expansion_limit value: \"{limit}\"")
        self.expansion_limit = int(limit)
        self.domains = None
        if params.get("domain"):
            from pfy.tables._base import split_braced
            self.domains = [_DomainMatcher(item, cfg) for item in split_braced(params["domain"])]
        for template in (self.query, self.result_format):
            try:
                expand_template(template, "u@a.b.c.d.e.f.g.h.i", "u@d")
            except _Suppress:
                pass
        try:
            self.db = sqlite3.connect(f"file:{self.dbpath}?mode=ro", uri=True,
                                      check_same_thread=False)
        except sqlite3.Error as err:
            raise TableError(f"{name}: open database {self.dbpath}: {err}") from None

    def _read_config(self, name: str, cfg) -> dict[str, str]:
        params: dict[str, str] = {}
        if name.startswith(("/", ".")):
            for lineno, line in logical_lines(read_source(name), name):
                pname, eq, value = line.partition("=")
                pname = pname.strip()
                if not eq or not pname:
                    raise TableError(f"{name}, line {lineno}: missing '=' after parameter name")
                params[pname] = value.strip()
            return params
        # Obsolete form: the parameters are NAME_query etc. in main.cf.
        for pname in _KNOWN:
            try:
                value = cfg.raw(f"{name}_{pname}") if cfg is not None else None
            except (KeyError, AttributeError):
                value = None
            if value is not None:
                params[pname] = cfg.expand(value)
        return params

    def _legacy_query(self, params: dict[str, str]) -> str:
        try:
            query = (f"SELECT {params['select_field']} FROM {params['table']} "
                     f"WHERE {params['where_field']} = '%s'")
        except KeyError as err:
            raise TableError(f"{self.name}: sqlite map: missing \"query\" or "
                             f"\"{err.args[0]}\" parameter") from None
        extra = params.get("additional_conditions", "")
        return f"{query} {extra}" if extra else query

    def lookup(self, key: str) -> str | None:
        if self.fold:
            key = key.lower()
        if self.domains is not None:
            local, domain = _split_key(key)
            if not local or domain is None or not any(d.match(domain) for d in self.domains):
                return None
        try:
            sql = expand_template(self.query, key, quote=_sql_quote)
        except _Suppress:
            return None
        try:
            rows = self.db.execute(sql).fetchall()
        except sqlite3.Error as err:
            raise TableTempFail(f"{self.label}: query error: {err}") from None
        results: list[str] = []
        for row in rows:
            for column in row:
                if column is None:
                    continue
                try:
                    results.append(expand_template(self.result_format, key, str(column)))
                except _Suppress:
                    continue
                if self.expansion_limit and len(results) > self.expansion_limit:
                    raise TableTempFail(f"{self.label}: {key}: Expansion limit exceeded")
        return ",".join(results) if results else None


class _DomainMatcher:
    """One element of the domain parameter: a domain name or a type:table."""

    def __init__(self, item: str, cfg):
        self.table = None
        self.name = item.lower()
        if ":" in item:
            from pfy.tables import open_table
            self.table = open_table(item, cfg)
        elif item.startswith("/"):
            self.names = {w.lower() for line in read_source(item) for w in line.split()
                          if not w.startswith("#")}
            self.name = None

    def match(self, domain: str) -> bool:
        domain = domain.lower()
        if self.table is not None:
            return self.table.lookup(domain) is not None
        if self.name is None:
            return domain in self.names
        return domain == self.name


def open_sqlite(kind, name, cfg, fold):
    return SqliteTable(name, cfg, fold)
