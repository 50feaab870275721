"""pfy.smtp.address: tokens, quoting, header address lists."""

import pytest

from pfy.smtp.address import (
    addresses_in, format_address_list, parse_address_list, quote_local,
    split_address, tokenize, unquote_local, externalize, strip_source_route,
)


@pytest.mark.parametrize("internal, external", [
    ("user@example.com", "user@example.com"),
    ("john smith@example.com", '"john smith"@example.com'),
    ('a"b@x', '"a\\"b"@x'),
    (".dot@x", '".dot"@x'),
    ("a..b@x", '"a..b"@x'),
    ("a.b@x", "a.b@x"),
    ("user", "user"),
    ("", ""),
    ("a@b@c", '"a@b"@c'),
])
def test_quote_roundtrip(internal, external):
    got = quote_local(internal)
    assert got == external, f"got {got!r} want {external!r}"
    assert unquote_local(external) == internal


def test_split_address_uses_last_at():
    assert split_address("a@b@c") == ("a@b", "c")
    assert split_address("user") == ("user", None)


def test_tokenize_kinds():
    kinds = [t.kind for t in tokenize('"q s"@[1.2.3.4] (c (nested)) a%b!c')]
    assert kinds == ["qstring", "@", "domlit", "comment", "atom", "%", "atom", "!", "atom"]


def test_unterminated_quote_does_not_raise():
    assert tokenize('"abc')[0].text == "abc"
    assert parse_address_list('<a@b, "x').addresses


def test_strip_source_route():
    assert externalize(strip_source_route(tokenize("@a,@b:user@c"))) == "user@c"
    assert externalize(strip_source_route(tokenize("@a"))) == "@a"


@pytest.mark.parametrize("value, want", [
    ("a@x, b@y", ["a@x", "b@y"]),
    ('"Smith, John" <john@x>, jane@y (Jane)', ["john@x", "jane@y"]),
    ("undisclosed-recipients:;", []),
    ("friends: a@x, b@y; c@z", ["a@x", "b@y", "c@z"]),
    ("<@r1,@r2:u@z>", ["@r1,@r2:u@z"]),
    ('"a b"@x', ["a b@x"]),
    ("<>", []),
])
def test_addresses_in(value, want):
    got = addresses_in(value)
    assert got == want, f"got {got} want {want}"


def test_format_roundtrip_normalizes_like_postfix():
    alist = parse_address_list('John  Smith <john@x>,jane@y (Jane D)')
    assert format_address_list(alist) == "John Smith <john@x>, jane@y (Jane D)"


def test_rewrite_in_place_keeps_phrase_and_group():
    alist = parse_address_list('"Smith, J" <john>, group: a, b;')
    for a in alist.addresses:
        a.replace(a.external + "@example.com")
    assert format_address_list(alist) == (
        '"Smith, J" <john@example.com>, group: a@example.com, b@example.com;')


def test_long_list_folds_after_comma():
    alist = parse_address_list(", ".join(f"user{i}@example.com" for i in range(10)))
    text = format_address_list(alist)
    lines = text.split("\n")
    assert len(lines) > 1
    assert all(line.startswith("\t") for line in lines[1:])
    assert all(len(line) < 90 for line in lines)
    assert addresses_in(text.replace("\n", "")) == [f"user{i}@example.com" for i in range(10)]
