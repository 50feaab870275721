"""Search orders of access(5), aliases(5), virtual(5), canonical(5), transport(5)."""

import pytest

from pfy.tables import TableTempFail, open_table
from pfy.tables.search import (
    Maps, access_address, access_host, access_ip, alias_lookup, canonical_lookup,
    ip_patterns, split_addr, transport_lookup, virtual_lookup,
)


class Recorder:
    """A fixed-string table that records every key it is asked for."""

    type, name, fold = "test", "rec", True

    def __init__(self, data=None, pattern=False):
        self.data = data or {}
        self.pattern = pattern
        self.asked = []

    spec = "test:rec"

    def lookup(self, key):
        self.asked.append(key)
        return self.data.get(key.lower())


@pytest.mark.parametrize("local, delims, want", [
    ("user+foo", "+", ("user", "+", "foo")),
    ("user-foo", "+-", ("user", "-", "foo")),       # multi-character delimiter set
    ("user+a-b", "-+", ("user", "+", "a-b")),       # first occurrence of any delimiter
    ("user", "+", None),
    ("+foo", "+", None),                            # would leave an empty local part
    ("owner-list", "-", None),                      # Sendmail compatibility
    ("list-request", "-", None),
    ("Postmaster", "t", None),                      # never split, whatever the delimiter
    ("MAILER-DAEMON", "-", None),
    ("postmaster+x", "+", ("postmaster", "+", "x")),
    ("double-bounce", "-", None),
    ("user+foo", "", None),
])
def test_split_addr(local, delims, want):
    got = split_addr(local, delims)
    assert got == want, f"got {got} want {want}"


def test_access_address_order_with_extension():
    # access(5): user+foo@domain, user@domain, domain, user+foo@, user@
    t = Recorder()
    assert access_address(t, "user+foo@a.example.com", "+", parent=True) is None
    assert t.asked == ["user+foo@a.example.com", "user@a.example.com",
                       "a.example.com", "example.com", "com", "user+foo@", "user@"]


def test_access_address_dot_style_parents():
    t = Recorder()
    access_address(t, "u@a.example.com", "", parent=False)
    assert t.asked == ["u@a.example.com", "a.example.com", ".example.com", ".com", "u@"]


@pytest.mark.parametrize("data, want_key, want_ext", [
    ({"user+foo@example.com": "A"}, "user+foo@example.com", None),
    ({"user@example.com": "B"}, "user@example.com", "foo"),
    ({"example.com": "C", "user@": "D"}, "example.com", None),
    ({"user@": "D"}, "user@", "foo"),
])
def test_access_address_first_match(data, want_key, want_ext):
    m = access_address(Recorder(data), "user+foo@example.com", "+")
    assert (m.key, m.extension) == (want_key, want_ext)


def test_partial_keys_skip_pattern_tables():
    regexp = Recorder(pattern=True)
    fixed = Recorder()
    access_address(Maps([regexp, fixed]), "u+x@example.com", "+")
    assert regexp.asked == ["u+x@example.com"]
    assert len(fixed.asked) > 1


def test_access_host_and_ip():
    t = Recorder()
    access_host(t, "mail.example.com", parent=True)
    assert t.asked == ["mail.example.com", "example.com", "com"]
    assert ip_patterns("192.0.2.7") == ["192.0.2.7", "192.0.2", "192.0", "192"]
    assert ip_patterns("2001:db8:1:2::7")[:3] == ["2001:db8:1:2::7", "2001:db8:1:2:", "2001:db8:1:2"]
    m = access_ip(Recorder({"192.0": "REJECT"}), "[192.0.2.7]")
    assert (m.key, m.value) == ("192.0", "REJECT")


def test_alias_lookup_folds_and_strips_extension():
    t = Recorder({"root": "admin"})
    m = alias_lookup(t, "Root+Cron", "+")
    assert (m.key, m.value, m.extension, m.delimiter) == ("root", "admin", "cron", "+")
    assert t.asked == ["root+cron", "root"]


def test_virtual_order_local_domain():
    # virtual(5): user+foo@domain, user@domain, user+foo, user, @domain
    t = Recorder()
    virtual_lookup(t, "user+foo@example.com", "+", local_domain=True)
    assert t.asked == ["user+foo@example.com", "user@example.com", "user+foo", "user", "@example.com"]


def test_virtual_order_remote_domain_skips_local_part():
    t = Recorder()
    canonical_lookup(t, "user+foo@example.com", "+", local_domain=False)
    assert t.asked == ["user+foo@example.com", "user@example.com", "@example.com"]


def test_virtual_catchall_reports_no_extension():
    m = virtual_lookup(Recorder({"@example.com": "catch@x"}), "user+foo@example.com", "+")
    assert (m.key, m.extension) == ("@example.com", None)


def test_transport_order():
    t = Recorder()
    transport_lookup(t, "user+foo@a.example.com", "+", parent=False)
    assert t.asked == ["user+foo@a.example.com", "user@a.example.com", "a.example.com",
                       ".example.com", ".com", "*"]
    t = Recorder()
    transport_lookup(t, "u@a.example.com", "", parent=True)
    assert t.asked == ["u@a.example.com", "a.example.com", "example.com", "com", "*"]


def test_transport_wildcard():
    m = transport_lookup(Recorder({"*": "relay:[gw]"}), "u@example.org")
    assert (m.key, m.value) == ("*", "relay:[gw]")


def test_tempfail_stops_the_search():
    maps = Maps([open_table("fail:x"), open_table("inline:{example.com=OK}")])
    with pytest.raises(TableTempFail):
        access_address(maps, "u@example.com")


def test_fixed_tables_fold_case_pattern_tables_do_not():
    m = access_address([open_table("inline:{user@example.com=OK}")], "USER@Example.COM")
    assert m.value == "OK"
    m = access_address([open_table("regexp:{{/^USER@/i OK}}")], "user@example.com")
    assert m is None
