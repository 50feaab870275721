"""Every table type: found / not found / temporary failure, case folding,
file syntax, rebuilds seen by open tables."""

import logging
import os
import sqlite3
import time

import pytest

from pfy.tables import TableError, TableTempFail, open_table, split_spec
from pfy.tables._base import FileWatch, logical_lines
from pfy.tables._source import alias_entries, postmap_entries
from pfy.tables.maintenance import build_table, delete_key, update_table
from pfy.tables.regexp_table import posix_to_python


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING, logger="pfy.tables")
    return lambda: [r.getMessage() for r in caplog.records]


def write(path, text):
    path.write_text(text)
    return str(path)


# ---- spec and registry ---------------------------------------------------

@pytest.mark.parametrize("spec, want", [
    ("lmdb:/etc/x", ("lmdb", "/etc/x")),
    ("/etc/x", ("lmdb", "/etc/x")),                 # default_database_type
    ("inline:{a=b:c}", ("inline", "{a=b:c}")),
    ("hash:/etc/aliases", ("hash", "/etc/aliases")),
])
def test_split_spec(spec, want):
    assert split_spec(spec) == want


def test_unknown_type_is_one_line_error():
    with pytest.raises(TableError, match="^unsupported dictionary type: nis$"):
        open_table("nis:mail.aliases")


def test_proxy_opens_the_table_itself(tmp_path):
    """proxy:type:name is type:name (no proxymap: tables are opened before
    the jail); an unknown inner type is still an error naming it."""
    t = tmp_path / "t"
    t.write_text("key value\n")
    assert open_table(f"proxy:texthash:{t}").lookup("key") == "value"
    with pytest.raises(TableError, match="^unsupported dictionary type: nis$"):
        open_table("proxy:nis:mail.aliases")


# ---- logical lines and source parsers ---------------------------------------

def test_logical_lines_like_readllines():
    lines = ["k v   \n", "\n", "  a\n", "# c\n", "  # indented comment\n", "x y\n", " more\n"]
    assert list(logical_lines(lines, "f")) == [(1, "k v     a"), (6, "x y more")]


def test_postmap_entries_warn_with_file_and_line(warnings):
    got = list(postmap_entries(["novalue\n", "key: v\n", "k  v w \n"], "/t/src"))
    assert got == [(2, "key:", "v"), (3, "k", "v w")]
    assert warnings() == [
        "/t/src, line 1: expected format: key whitespace value",
        '/t/src, line 2: record is in "key: value" format; is this an alias file?',
    ]


def test_alias_entries_tokenize_like_postalias(warnings):
    src = ['Root: Foo, "bar baz",\n', '  |"/bin/cmd x"\n', '"Quoted Name" : q\n',
           'b\\c: d\n', 'bad line\n', 'x@y: z\n', 'i: x,,y ,\n', 'a: x"y z"w, foo . bar\n']
    got = [(k, v) for _, k, v in alias_entries(src, "al")]
    assert got == [
        ("Root", 'Foo, "bar baz", |"/bin/cmd x"'),
        ("Quoted Name", "q"),
        ("bc", "d"),
        ("i", "x, , y, "),
        ("a", 'x "y z" w, foo.bar'),
    ]
    assert warnings() == ["al, line 5: need name:value pair",
                          "al, line 6: name must be local and have no domain"]


# ---- static, inline, fail, environ -----------------------------------------------

def test_static():
    assert open_table("static:OK").lookup("anything") == "OK"
    assert open_table("static:{ text with spaces }").lookup("x") == "text with spaces"
    with pytest.raises(TableError, match="syntax error after"):
        open_table("static:{a b}x")


def test_inline():
    t = open_table("inline:{ K=v, { k2 = c  d }, k=w }")
    assert t.lookup("k") == "w"              # the last setting wins, keys fold
    assert t.lookup("K2") == "c  d"
    assert t.lookup("nope") is None
    assert open_table("inline:{K=v}", fold=False).lookup("k") is None
    for bad in ("inline:{ a b = c }", "inline:k=v", "inline:{ }"):
        with pytest.raises(TableError, match='need "inline:{name=value...}"'):
            open_table(bad)


def test_fail_is_temporary():
    with pytest.raises(TableTempFail):
        open_table("fail:x").lookup("k")


def test_environ(monkeypatch):
    monkeypatch.setenv("PFY_TEST_VAR", "v1")
    assert open_table("environ:env", fold=False).lookup("PFY_TEST_VAR") == "v1"
    assert open_table("environ:x").lookup("PFY_TEST_VAR") is None   # folded, as Postfix


# ---- texthash ----------------------------------------------------------------------

def test_texthash_duplicates_and_reload(tmp_path, warnings, monkeypatch):
    src = write(tmp_path / "t", "Foo bar\nfoo baz\n")
    t = open_table(f"texthash:{src}")
    assert t.lookup("FOO") == "bar"
    assert warnings() == [f'{src}, line 2: duplicate entry: "foo"']
    monkeypatch.setattr(FileWatch, "CHECK_INTERVAL", 0.0)
    t.watch.next_check = 0
    write(tmp_path / "t", "foo new\n")
    os.utime(src, ns=(time.time_ns() + 10**9,) * 2)
    assert t.lookup("foo") == "new"


def test_texthash_missing_file():
    with pytest.raises(TableError, match="^open database /nonexistent/x: No such file"):
        open_table("texthash:/nonexistent/x")


# ---- lmdb (and hash/btree) ---------------------------------------------------------

def test_lmdb_build_query_case(tmp_path, warnings):
    src = write(tmp_path / "access", "Example.COM REJECT\nexample.com OK\nuser@x  DISCARD  why \n")
    assert build_table(f"lmdb:{src}") == 2
    assert os.path.exists(src + ".lmdb")
    t = open_table(f"lmdb:{src}")
    assert t.lookup("EXAMPLE.com") == "REJECT"       # the first wins
    assert t.lookup("user@x") == "DISCARD  why"
    assert t.lookup("absent") is None
    assert warnings() == [f'lmdb:{src}: duplicate entry: "example.com"']
    assert list(t.items()) == [("example.com", "REJECT"), ("user@x", "DISCARD  why")]


@pytest.mark.parametrize("dup, want", [("replace", "OK"), ("ignore", "REJECT")])
def test_lmdb_duplicate_policies(tmp_path, warnings, dup, want):
    src = write(tmp_path / "a", "k REJECT\nk OK\n")
    build_table(f"hash:{src}", dup=dup)
    assert open_table(f"hash:{src}").lookup("k") == want
    assert warnings() == []


def test_lmdb_no_fold_keeps_case(tmp_path):
    src = write(tmp_path / "a", "Foo bar\nfoo baz\n")
    build_table(f"lmdb:{src}", fold=False)
    assert open_table(f"lmdb:{src}", fold=False).lookup("Foo") == "bar"
    assert open_table(f"lmdb:{src}").lookup("Foo") == "baz"


def test_lmdb_rebuild_is_seen_by_open_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(FileWatch, "CHECK_INTERVAL", 0.0)
    src = write(tmp_path / "a", "k one\n")
    build_table(f"lmdb:{src}")
    reader = open_table(f"lmdb:{src}")
    assert reader.lookup("k") == "one"
    inode = os.stat(src + ".lmdb").st_ino
    write(tmp_path / "a", "k two\n")
    build_table(f"lmdb:{src}")
    assert os.stat(src + ".lmdb").st_ino != inode          # atomic rename, never in place
    assert reader.lookup("k") == "two"
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_lmdb_incremental_and_delete(tmp_path, monkeypatch):
    # The writer is another process, as postmap -i is for a daemon's reader.
    import subprocess
    import sys
    monkeypatch.setattr(FileWatch, "CHECK_INTERVAL", 0.0)
    src = write(tmp_path / "a", "k one\n")
    build_table(f"lmdb:{src}")
    reader = open_table(f"lmdb:{src}")
    assert reader.lookup("k") == "one"
    code = ("import io, sys; from pfy.tables.maintenance import update_table as u; "
            "u(sys.argv[1], io.StringIO('new val\\nk dup\\n'))")
    proc = subprocess.run([sys.executable, "-c", code, f"lmdb:{src}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f'lmdb:{src}: duplicate entry: "k"' in proc.stderr
    os.utime(src + ".lmdb", ns=(time.time_ns() + 10**9,) * 2)
    assert reader.lookup("new") == "val"
    assert reader.lookup("k") == "one"
    reader.close()
    assert delete_key([f"lmdb:{src}"], ["K"]) is True
    assert delete_key([f"lmdb:{src}"], ["K"]) is False
    assert open_table(f"lmdb:{src}").lookup("k") is None


def test_lmdb_grows_past_map_size(tmp_path):
    src = tmp_path / "big"
    with open(src, "w") as f:
        for i in range(3000):
            f.write(f"key{i} {'v' * 300}\n")
    from pfy.tables.lmdb_table import build_lmdb
    from pfy.tables._source import postmap_entries as pe
    build_lmdb(str(src), pe(open(src), str(src)), spec="lmdb:big", map_size=64 * 1024)
    assert open_table(f"lmdb:{src}").lookup("key2999") == "v" * 300


def test_lmdb_errors(tmp_path):
    with pytest.raises(TableError, match=r"^open database /nonexistent/x\.lmdb: No such file"):
        open_table("lmdb:/nonexistent/x")
    with pytest.raises(TableError, match="^open /nonexistent/x: No such file"):
        build_table("lmdb:/nonexistent/x")
    with pytest.raises(TableError, match="does not support bulk-mode creation"):
        build_table(f"texthash:{tmp_path}/x")


def test_postalias_build_adds_sentinel(tmp_path):
    src = write(tmp_path / "aliases", "Root: admin, |\"/bin/cmd x\"\n")
    build_table(f"lmdb:{src}", aliases=True)
    t = open_table(f"lmdb:{src}")
    assert t.lookup("root") == 'admin, |"/bin/cmd x"'
    assert t.lookup("@") == "@"


# ---- regexp and pcre ------------------------------------------------------------------

REGEXP_SRC = r"""# comment
/^(.*)-outgoing@(.*)$/   550 Use ${1}@$(2) instead, $$5
if !/^owner-/
/^list-(.*)@/            OK $1
endif
!/@example\.com$/        REJECT not ours
/^[[:digit:]]+\.x$/      digits
"""


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
@pytest.mark.parametrize("key, want", [
    ("a-outgoing@b.org", "550 Use a@b.org instead, $5"),
    ("list-x@example.com", "OK x"),
    ("owner-list-x@example.com", None),       # skipped by the if !/^owner-/
    ("who@other.org", "REJECT not ours"),
    ("12@example.com", None),
    ("LIST-Y@EXAMPLE.COM", "OK Y"),           # case-insensitive by default
])
def test_regexp_pcre_rules(tmp_path, kind, key, want):
    src = write(tmp_path / "re", REGEXP_SRC)
    got = open_table(f"{kind}:{src}").lookup(key)
    assert got == want, f"got {got!r} want {want!r}"


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
def test_regexp_bad_rules_warn_and_skip(tmp_path, warnings, kind):
    src = write(tmp_path / "re", "/a(/ bad\n/x/q r\n/unterminated r\n/(a)/ $2\nendif\n/ok/ fine\n")
    t = open_table(f"{kind}:{src}")
    assert t.lookup("ok") == "fine"
    got = warnings()
    assert got[0].startswith(f"{kind} map {src}, line 1: ")
    assert got[1:] == [
        f'{kind} map {src}, line 2: unknown regexp option "q": skipping this rule',
        f'{kind} map {src}, line 3: no closing regexp delimiter "/": skipping this rule',
        f'{kind} map {src}, line 4: out of range replacement index "2": skipping this rule',
        f"{kind} map {src}, line 5: ignoring ENDIF without matching IF",
    ]


def test_inline_regexp_and_flags():
    t = open_table("regexp:{ {/^ABC$/i case-sensitive}, {/x/ other} }")
    assert t.lookup("abc") is None and t.lookup("ABC") == "case-sensitive"
    t = open_table("pcre:{ {/^a.b$/s dotall-off}, {/^a.b$/ dotall-on} }")
    assert t.lookup("a\nb") == "dotall-on"


@pytest.mark.parametrize("posix, extended, subject, matches", [
    (r"a\.b", True, "a.b", True),
    (r"a\.b", True, "axb", False),
    (r"\d", True, "d", True),                      # not a digit class in POSIX
    (r"[\d]", True, "\\", True),                   # backslash literal in a bracket
    (r"[]x]", True, "]", True),
    (r"[^[:alpha:]]", True, "1", True),
    (r"^ab$", True, "ab\n", False),                # $ is the very end
    (r"a{2}", True, "aa", True),
    (r"*a", True, "*a", True),                     # leading * is literal
    (r"\(a\)\{2\}", False, "aa", True),            # BRE groups and intervals
    (r"a+", False, "a+", True),                    # + is literal in BRE
    (r"\<word\>", True, "a word here", True),
])
def test_posix_translation(posix, extended, subject, matches):
    import re
    rx = re.compile(posix_to_python(posix, extended=extended), re.S)
    assert bool(rx.search(subject)) == matches


# ---- cidr -------------------------------------------------------------------------------

CIDR_SRC = """1.2.3.0/24 net
if 192.168.0.0/16
192.168.1.0/24 inner
endif
!10.0.0.0/8 notten
[2001:db8::]/32 six
"""


@pytest.mark.parametrize("key, want", [
    ("1.2.3.9", "net"), ("192.168.1.1", "inner"), ("192.168.2.1", "notten"),
    ("10.1.1.1", None), ("8.8.8.8", "notten"), ("2001:db8::1", "six"),
    ("2001:db9::1", None),          # IPv6 never matches an IPv4 pattern, negated or not
    ("garbage", None), ("010.1.1.1", None),
])
def test_cidr(tmp_path, key, want):
    t = open_table(f"cidr:{write(tmp_path / 'c', CIDR_SRC)}")
    assert t.lookup(key) == want


def test_cidr_bad_rules(tmp_path, warnings):
    src = write(tmp_path / "c", "1.2.3.4/24 a\nfoo bar\n1.2.3.5\n10.0.0.0/33 x\n")
    open_table(f"cidr:{src}")
    assert warnings() == [
        f'cidr map {src}, line 1: non-null host address bits in "1.2.3.4/24", '
        f'perhaps you should use "1.2.3.0/24" instead: skipping this rule',
        f'cidr map {src}, line 2: bad address pattern: "foo": skipping this rule',
        f"cidr map {src}, line 3: no lookup result: skipping this rule",
        f'cidr map {src}, line 4: bad mask length in "10.0.0.0/33": skipping this rule',
    ]


# ---- sqlite ----------------------------------------------------------------------------------

@pytest.fixture
def sqlite_db(tmp_path):
    db = tmp_path / "db.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE v (addr TEXT, dest TEXT, dom TEXT)")
    con.executemany("INSERT INTO v VALUES (?, ?, ?)", [
        ("u@example.com", "x@dest", "example.com"), ("o'neil@example.com", "quoted@dest", "example.com"),
        ("multi@example.com", "a@d", "example.com"), ("multi@example.com", "b@d", "example.com"),
    ])
    con.commit()
    con.close()
    return db


def sqlite_cf(tmp_path, db, extra=""):
    return write(tmp_path / "v.cf", f"dbpath = {db}\nquery = SELECT dest FROM v WHERE addr = '%s'\n{extra}")


def test_sqlite_query_quoting_and_results(tmp_path, sqlite_db):
    t = open_table(f"sqlite:{sqlite_cf(tmp_path, sqlite_db)}")
    assert t.lookup("U@Example.com") == "x@dest"
    assert t.lookup("o'neil@example.com") == "quoted@dest"    # quoted, not an SQL error
    assert t.lookup("x' OR '1'='1") is None
    assert t.lookup("multi@example.com") == "a@d,b@d"


def test_sqlite_result_format_domain_and_limit(tmp_path, sqlite_db):
    cf = sqlite_cf(tmp_path, sqlite_db, "result_format = smtp:[%d] %U %1\n")
    assert open_table(f"sqlite:{cf}").lookup("u@example.com") == "smtp:[dest] u com"
    cf = sqlite_cf(tmp_path, sqlite_db, "domain = other.org\n")
    assert open_table(f"sqlite:{cf}").lookup("u@example.com") is None
    t = open_table(f"sqlite:{sqlite_cf(tmp_path, sqlite_db, 'expansion_limit = 1')}")
    with pytest.raises(TableTempFail):
        t.lookup("multi@example.com")
    cf = write(tmp_path / "d.cf", f"dbpath = {sqlite_db}\nquery = SELECT dest FROM v WHERE dom = '%d' AND addr LIKE '%u@%%'\n")
    assert open_table(f"sqlite:{cf}").lookup("u@example.com") == "x@dest"
    assert open_table(f"sqlite:{cf}").lookup("unqualified") is None   # %d suppresses


def test_sqlite_broken_query_is_tempfail(tmp_path, sqlite_db):
    cf = write(tmp_path / "b.cf", f"dbpath = {sqlite_db}\nquery = SELECT nope FROM missing WHERE a='%s'\n")
    with pytest.raises(TableTempFail):
        open_table(f"sqlite:{cf}").lookup("k")


# ---- unionmap and pipemap ----------------------------------------------------------------------

def test_unionmap_and_pipemap():
    u = open_table("unionmap:{inline:{a=1}, inline:{a=2, b=3}}")
    assert u.lookup("a") == "1,2" and u.lookup("b") == "3" and u.lookup("c") is None
    p = open_table("pipemap:{inline:{a=b}, inline:{b=final}}")
    assert p.lookup("a") == "final" and p.lookup("b") is None
    with pytest.raises(TableTempFail):
        open_table("unionmap:{inline:{a=1}, fail:x}").lookup("a")
    with pytest.raises(TableError):
        open_table("unionmap:inline:{a=1}")


def test_daemons_get_a_surrogate_for_a_table_that_cannot_be_opened(tmp_path):
    """Postfix's dict_surrogate: a missing table is a warning and temporary
    lookup failures in a daemon, never a crash; commands still fail."""
    import pytest
    import pfy.tables as tables
    missing = f"lmdb:{tmp_path}/aliases"
    with pytest.raises(tables.TableError):
        tables.open_table(missing)
    warnings = []
    tables.defer_open_errors(warnings.append)
    try:
        t = tables.open_table(missing)
        assert warnings == [f"{missing} is unavailable. open database {tmp_path}/aliases.lmdb: "
                            "No such file or directory"], f"got {warnings}"
        with pytest.raises(tables.TableTempFail):
            t.lookup("root")
        with pytest.raises(tables.TableError):       # an unknown type stays an error
            tables.open_table("nosuchtype:x")
    finally:
        tables.defer_open_errors(None)
