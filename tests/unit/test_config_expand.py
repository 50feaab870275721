"""$name expansion as Postfix's mac_expand (postconf(5) "Parameter expansion")."""

import pytest

from pfy.config._expand import ExpandError, compare_levels, expand, split_list

VARS = {"a": "A", "empty": "", "ref": "$a", "loop1": "$loop2", "loop2": "$loop1",
        "level": "3.6", "deep": "${a?{x$a}:{y}}"}


def lookup(name):
    return VARS.get(name)


@pytest.mark.parametrize("text, want", [
    ("plain", "plain"),
    ("$a", "A"), ("${a}", "A"), ("$(a)", "A"), ("x$a.y", "xA.y"),
    ("$$a", "$a"), ("$undefined|", "|"),
    ("${a?set}", "set"), ("${empty?set}", ""), ("${nope?set}", ""),
    ("${a:unset}", ""), ("${empty:unset}", "unset"), ("${nope:unset}", "unset"),
    ("${a?{yes}:{no}}", "yes"), ("${empty?{yes}:{no}}", "no"),
    ("${a?{ spaced }}", "spaced"), ("${nope:{$a}}", "A"),
    ("$ref", "A"), ("${ref?$ref}", "A"), ("$deep", "xA"),
    ("${{$level} <level {3.6} ? {old} : {new}}", "new"),
    ("${{$level} >=level {3.6} ? {ge}}", "ge"),
    ("${{1.2} <level {1.10} ? {lt} : {ge}}", "lt"),
    ("${{3} < {10} ? {lt} : {ge}}", "lt"),
    ("${{abc} == {abc} ? {eq} : {ne}}", "eq"),
    ("${{abc} != {ABC} ? {ne} : {eq}}", "ne"),
])
def test_expand(text, want):
    got = expand(text, lookup)
    assert got == want, f"got {got!r} want {want!r}"


def test_without_recursion_values_stay_as_written():
    assert expand("$ref", lookup, recurse=False) == "$a"


def test_loop_is_unreasonable_nesting():
    with pytest.raises(ExpandError, match="unreasonable macro call nesting"):
        expand("$loop1", lookup)


@pytest.mark.parametrize("bad", ["a$", "${a", "${}", "${a!x}", "${{1} ~ {2} ? {x}}", "$ x"])
def test_bad_syntax_is_an_error(bad):
    with pytest.raises(ExpandError):
        expand(bad, lookup)


def test_undefined_names_are_reported():
    seen = []
    expand("$x ${y:z}", lookup, undefined=seen.append)
    assert seen == ["x", "y"]


def test_compare_levels():
    assert compare_levels("3.6", "3.10") < 0
    assert compare_levels("2", "2.0") == 0
    assert compare_levels("", "0") == 0


@pytest.mark.parametrize("text, want", [
    ("a, b c,,d", ["a", "b", "c", "d"]),
    ("check_policy_service { inet:h:9, timeout=10s }, x", ["check_policy_service", "inet:h:9, timeout=10s", "x"]),
    ("inline:{a=b, c=d} hash:/x", ["inline:{a=b, c=d}", "hash:/x"]),
    ("", []),
])
def test_split_list(text, want):
    assert split_list(text) == want
