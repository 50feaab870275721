"""cleanup address mapping: canonical, masquerade, virtual alias expansion."""

import pytest

from pfy.daemons.cleanup.addresses import ExpansionError, expand_virtual, map11, masquerade
from pfy.tables.search import Maps


class Dict:
    pattern = False
    spec = "test:d"

    def __init__(self, data):
        self.data = data

    def lookup(self, key):
        return self.data.get(key.lower())


def local(domain):
    return domain == "example.com"


def test_masquerade_with_exceptions():
    doms = ["!secret.example.com", "example.com"]
    assert masquerade("a@host.example.com", doms, set()) == "a@example.com"
    assert masquerade("a@x.secret.example.com", doms, set()) == "a@x.secret.example.com"
    assert masquerade("root@host.example.com", doms, {"root"}) == "root@host.example.com"
    assert masquerade("a@example.com", doms, set()) == "a@example.com"


def test_canonical_with_extension_and_domain_rewrite():
    maps = Maps([Dict({"joe@example.com": "Joe.User@example.com", "@old.org": "@new.org"})])
    assert map11([maps], "joe+tag@example.com", local, "+") == "Joe.User+tag@example.com"
    assert map11([maps], "x@old.org", local, "+") == "x@new.org"
    assert map11([maps], "x@other.org", local, "+") == "x@other.org"


def test_virtual_expansion_recursive_loop_safe_and_limited():
    maps = Maps([Dict({"a@example.com": "b@example.com, c@other.org",
                       "b@example.com": "b@example.com, d@other.org",
                       "l1@example.com": "l2@example.com", "l2@example.com": "l1@example.com"})])
    assert expand_virtual(maps, "a@example.com", local) == [
        "b@example.com", "d@other.org", "c@other.org"]
    assert expand_virtual(maps, "l1@example.com", local) == ["l1@example.com"]
    with pytest.raises(ExpansionError):
        expand_virtual(maps, "a@example.com", local, expansion_limit=1)
    deep = Maps([Dict({f"u{i}@example.com": f"u{i + 1}@example.com" for i in range(20)})])
    with pytest.raises(ExpansionError):
        expand_virtual(deep, "u0@example.com", local, recursion_limit=5)
