"""Our postmap/postalias against Debian's Postfix on the same source files:
the same -q answers, exit codes and warnings (apart from the program path)."""

import subprocess

import pytest

from tests.conftest import pfy_bin, postfix_bin

TEXT = """Foo bar
foo baz
x  y z
  cont
# comment
user@example.com   REJECT spam
novalue
.example.org OK
"""

REGEXP = r"""/^(.*)-outgoing@(.*)$/   550 Use ${1}@$(2) instead
if !/^owner-/
/^list-(.*)@/            OK $1
endif
!/@example\.com$/        REJECT not ours
/^[[:digit:]]+\.x$/      digits
/a(/ bad
"""

CIDR = """1.2.3.0/24 net
1.2.3.4/24 bad
if 192.168.0.0/16
192.168.1.0/24 inner
endif
!10.0.0.0/8 notten
[2001:db8::]/32 six
"""

ALIASES = """Root: Foo, "bar baz",
  |"/bin/cmd x"
postmaster:root
abc  :  x
abc: y
"quoted name": z
bad line
file: /tmp/f, :include:/tmp/inc
i: x,,y ,
"""

KEYS = ["foo", "FOO", "Foo", "x", "user@example.com", ".example.org", "none", "a-outgoing@b.org",
        "list-x@example.com", "owner-list-x@example.com", "who@other.org", "12.x", "1.2.3.9",
        "192.168.1.1", "8.8.8.8", "10.1.1.1", "2001:db8::1", "garbage", "root", "abc",
        "quoted name", "file", "i", "@"]


@pytest.fixture
def dirs(tmp_path):
    ours, theirs = tmp_path / "pfy", tmp_path / "postfix"
    for d in (ours, theirs):
        d.mkdir()
        (d / "main.cf").write_text("")
        (d / "master.cf").write_text("")
    return ours, theirs


def run(cmd, d, *args, stdin=None):
    p = subprocess.run([cmd, "-c", str(d), *args], input=stdin, capture_output=True, text=True)
    # Compare messages without the program path; Postfix's and ours name the same file.
    err = p.stderr.replace(str(d), "DIR")
    return p.returncode, p.stdout.replace(str(d), "DIR"), err


def both(dirs, prog, *args, files=(), stdin=None):
    ours_dir, theirs_dir = dirs
    out = []
    for cmd, d in ((pfy_bin(prog), ours_dir), (postfix_bin(prog), theirs_dir)):
        out.append(run(cmd, d, *[a.replace("DIR", str(d)) for a in args], stdin=stdin))
    return out


def setup_files(dirs, name, text):
    for d in dirs:
        (d / name).write_text(text)


@pytest.mark.parametrize("kind, name, text", [
    ("texthash", "t", TEXT), ("lmdb", "t", TEXT), ("regexp", "re", REGEXP),
    ("pcre", "re", REGEXP.replace("/a(/ bad\n", "")), ("cidr", "c", CIDR),
])
def test_same_query_answers(dirs, kind, name, text):
    setup_files(dirs, name, text)
    if kind == "lmdb":
        ours, theirs = both(dirs, "postmap", f"lmdb:DIR/{name}")
        assert ours == theirs
    for key in ("foo", "FOO", "none", "list-x@example.com", "1.2.3.9"):
        ours, theirs = both(dirs, "postmap", "-q", key, f"{kind}:DIR/{name}")
        assert ours == theirs, f"{kind} key {key!r}: got {ours} want {theirs}"
    batch = "\n".join(KEYS) + "\n"
    ours, theirs = both(dirs, "postmap", "-q", "-", f"{kind}:DIR/{name}", stdin=batch)
    assert ours == theirs


def test_same_answers_without_folding(dirs):
    setup_files(dirs, "t", TEXT)
    ours, theirs = both(dirs, "postmap", "-f", "lmdb:DIR/t")
    assert ours == theirs
    for key in ("Foo", "foo", "FOO"):
        assert both(dirs, "postmap", "-fq", key, "lmdb:DIR/t") == \
            both(dirs, "postmap", "-fq", key, "lmdb:DIR/t")[::-1]
    ours, theirs = both(dirs, "postmap", "-s", "lmdb:DIR/t")
    assert ours == theirs


def test_same_delete_and_incremental(dirs):
    setup_files(dirs, "t", TEXT)
    both(dirs, "postmap", "lmdb:DIR/t")
    for args in (("-d", "foo"), ("-d", "foo"), ("-d", "-")):
        ours, theirs = both(dirs, "postmap", *args, "lmdb:DIR/t", stdin="x\nnone\n")
        assert ours == theirs, args
    ours, theirs = both(dirs, "postmap", "-i", "lmdb:DIR/t", stdin="new val\nuser@example.com dup\n")
    assert ours == theirs
    assert both(dirs, "postmap", "-s", "lmdb:DIR/t")[0] == both(dirs, "postmap", "-s", "lmdb:DIR/t")[1]


@pytest.mark.parametrize("args", [
    ("-q", "x", "lmdb:/nonexistent/x"), ("/nonexistent/x",), ("-q", "x", "regexp:/nonexistent/x"),
    ("-q", "x"), ("-q", "x", "fail:x"), ("-s", "static:x"), ("-q", "x", "inline:{ a b = c }"),
    ("-q", "a", "-d", "b", "lmdb:x"), ("-q", "k", "inline:{ k=v, {k2 = c  d} }"),
])
def test_same_errors(dirs, args):
    ours, theirs = both(dirs, "postmap", *args)
    assert ours == theirs


def test_same_postalias(dirs):
    setup_files(dirs, "al", ALIASES)
    ours, theirs = both(dirs, "postalias", "lmdb:DIR/al")
    assert ours == theirs
    for key in ("root", "ABC", "quoted name", "i", "@", "none"):
        ours, theirs = both(dirs, "postalias", "-q", key, "lmdb:DIR/al")
        assert ours == theirs, f"key {key!r}: got {ours} want {theirs}"
    ours, theirs = both(dirs, "postalias", "-q", "-", "lmdb:DIR/al", stdin="root\nABC\nnone\n")
    assert ours == theirs
    # -s: the same entries, apart from the NIS YP_* keys pfy does not write.
    ours, theirs = both(dirs, "postalias", "-s", "lmdb:DIR/al")
    assert ours[1].splitlines() == [l for l in theirs[1].splitlines() if not l.startswith("YP_")]
