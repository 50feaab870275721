"""trivial-rewrite: rewrite to canonical form and resolve to an address class.

Cases follow ADDRESS_REWRITING_README ("Rewrite addresses to standard form")
and ADDRESS_CLASS_README (the five address classes and their transports).
"""

import pytest

from pfy.daemons.trivial_rewrite.resolve import (
    CLASS_ALIAS, CLASS_DEFAULT, CLASS_LOCAL, CLASS_RELAY, CLASS_VIRTUAL,
    FLAG_ERROR, FLAG_FAIL, FLAG_FINAL, FLAG_ROUTED, Resolver, valid_hostname,
)
from pfy.daemons.trivial_rewrite.rewrite import Rewriter
from pfy.message.domains import LocalDomains, MatchList
from pfy.tables import TableTempFail
from pfy.tables.search import Maps


class Dict:
    """A fixed-string table for tests."""
    pattern = False
    spec = "test:dict"

    def __init__(self, data=None, fail=False):
        self.data = {k.lower(): v for k, v in (data or {}).items()}
        self.fail = fail

    def lookup(self, key):
        if self.fail:
            raise TableTempFail("test")
        return self.data.get(key.lower())


def rewriter(**kw):
    args = dict(myorigin="host.example.com", mydomain="example.com",
                append_dot_mydomain=True)
    args.update(kw)
    return Rewriter(**args)


@pytest.mark.parametrize("context, address, want", [
    ("local", "user", "user@host.example.com"),
    ("local", "user@host", "user@host.example.com"),
    ("local", "user@host.", "user@host"),            # dot appended? no: trailing dot stripped
    ("local", "user@other.org", "user@other.org"),
    ("local", "user@other.org.", "user@other.org"),
    ("local", "host!user", "user@host.example.com"),
    ("local", "a!b!user", "b!user@a.example.com"),
    ("local", "user%other.org", "user@other.org"),
    ("local", "@r1,@r2:user@other.org", "user@other.org"),
    ("local", "user@[1.2.3.4]", "user@[1.2.3.4]"),
    ("local", '"john smith"', '"john smith"@host.example.com'),
    ("local", "@", '""'),
    ("local", '""', '""'),
    ("remote", "user", "user"),                      # remote_header_rewrite_domain empty
    ("remote", "user@host", "user@host"),
])
def test_rewrite(context, address, want):
    got = rewriter().rewrite(context, address)
    assert got == want, f"got {got!r} want {want!r}"


def test_rewrite_trailing_dot_kept_when_dot_mydomain_off():
    r = rewriter(append_dot_mydomain=False)
    assert r.rewrite("local", "user@host") == "user@host"
    assert r.rewrite("local", "user@host.") == "user@host"


def test_rewrite_remote_domain():
    r = rewriter(remote_header_rewrite_domain="domain.invalid")
    assert r.rewrite("remote", "user") == "user@domain.invalid"
    assert r.rewrite("remote", "user@host") == "user@host.domain.invalid"


def test_rewrite_switches_off():
    r = rewriter(swap_bangpath=False, allow_percent_hack=False, append_at_myorigin=False)
    assert r.rewrite("local", "host!user") == "host!user"
    assert r.rewrite("local", "user%x.org") == "user%x.org"
    assert r.rewrite("local", "user") == "user"


def test_unknown_context_is_an_error():
    with pytest.raises(KeyError):
        rewriter().rewrite("bogus", "user")


def resolver(**kw):
    tables = kw.pop("tables", {})
    args = dict(
        rewriter=rewriter(), myhostname="host.example.com",
        local=LocalDomains(MatchList(["host.example.com", "localhost.example.com", "localhost"]),
                           ["127.0.0.1"], ["192.0.2.9"], own=lambda ip: False),
        virtual_alias_domains=MatchList(["alias.example"]),
        virtual_mailbox_domains=MatchList(["mbox.example"]),
        relay_domains=MatchList(["relay.example"], domain=True, parent=True),
        local_transport="local:host.example.com", virtual_transport="virtual",
        relay_transport="relay", default_transport="smtp",
    )
    args.update(kw)
    for name, table in tables.items():
        args[name] = Maps([table])
    return Resolver(**args)


@pytest.mark.parametrize("address, transport, nexthop, rcpt, cls", [
    # ADDRESS_CLASS_README: the local domain class
    ("user@host.example.com", "local", "host.example.com", "user@host.example.com", CLASS_LOCAL),
    ("user@localhost", "local", "host.example.com", "user@localhost", CLASS_LOCAL),
    ("user", "local", "host.example.com", "user@host.example.com", CLASS_LOCAL),
    ("user@[127.0.0.1]", "local", "host.example.com", "user@[127.0.0.1]", CLASS_LOCAL),
    ("user@[192.0.2.9]", "local", "host.example.com", "user@[192.0.2.9]", CLASS_LOCAL),
    ("", "local", "host.example.com", "MAILER-DAEMON@host.example.com", CLASS_LOCAL),
    # the virtual alias domain class
    ("user@alias.example", "error", "5.1.1 User unknown in virtual alias table",
     "user@alias.example", CLASS_ALIAS),
    # the virtual mailbox domain class
    ("user@mbox.example", "virtual", "mbox.example", "user@mbox.example", CLASS_VIRTUAL),
    # the relay domain class, subdomains included (parent_domain_matches_subdomains)
    ("user@relay.example", "relay", "relay.example", "user@relay.example", CLASS_RELAY),
    ("user@sub.relay.example", "relay", "sub.relay.example", "user@sub.relay.example", CLASS_RELAY),
    # the default domain class
    ("user@other.org", "smtp", "other.org", "user@other.org", CLASS_DEFAULT),
    ("user@[192.0.2.1]", "smtp", "[192.0.2.1]", "user@[192.0.2.1]", CLASS_DEFAULT),
    # local domains are stripped off: user@remote@local is remote mail
    ("user@other.org@host.example.com", "smtp", "other.org", "user@other.org", CLASS_DEFAULT),
    ("user%other.org@host.example.com", "smtp", "other.org", "user@other.org", CLASS_DEFAULT),
    ("other.org!user@localhost", "smtp", "other.org", "user@other.org", CLASS_DEFAULT),
    # resolve_dequoted_address: a quoted "a@b" local part is cracked open
    ('user@other.org@localhost', "smtp", "other.org", "user@other.org", CLASS_DEFAULT),
])
def test_resolve_classes(address, transport, nexthop, rcpt, cls):
    got = resolver().resolve("sender@x", address)
    want = (transport, nexthop, rcpt)
    assert (got.transport, got.nexthop, got.recipient) == want, f"got {got} want {want}"
    assert got.flags & 0xff00 == cls
    assert bool(got.flags & FLAG_FINAL) == bool(cls & (CLASS_LOCAL | CLASS_ALIAS | CLASS_VIRTUAL))


def test_routed_flag_even_when_percent_hack_off():
    r = resolver(allow_percent_hack=False, rewriter=rewriter(allow_percent_hack=False))
    got = r.resolve("", "user%other.org@relay.example")
    assert got.recipient == "user%other.org@relay.example"
    assert got.flags & FLAG_ROUTED
    assert not resolver().resolve("", "user@relay.example").flags & FLAG_ROUTED


def test_invalid_domain_sets_error_flag():
    assert resolver().resolve("", "user@bad_.-x").flags & FLAG_ERROR
    assert resolver().resolve("", "user@1.2.3.4").flags & FLAG_ERROR     # numeric host
    assert not resolver().resolve("", "user@other.org").flags & FLAG_ERROR


def test_relayhost_overrides_nexthop_for_remote_only():
    r = resolver(relayhost="[smarthost.example]:587")
    assert r.resolve("", "u@other.org").nexthop == "[smarthost.example]:587"
    assert r.resolve("", "u@relay.example").nexthop == "[smarthost.example]:587"
    assert r.resolve("", "u@mbox.example").nexthop == "mbox.example"
    assert r.resolve("", "u@localhost").nexthop == "host.example.com"


@pytest.mark.parametrize("value, want", [
    ("smtp:[gw.example]", ("smtp", "[gw.example]")),
    ("uucp", ("uucp", "other.org")),          # transport only: nexthop = domain
    (":[gw.example]", ("smtp", "[gw.example]")),  # nexthop only
    (":", ("smtp", "other.org")),             # no change
    ("error:go away", ("error", "go away")),
])
def test_transport_maps_null_fields(value, want):
    r = resolver(tables={"transport_maps": Dict({"other.org": value})})
    got = r.resolve("", "u@other.org")
    assert (got.transport, got.nexthop) == want, f"got {got} want {want}"


def test_transport_maps_do_not_override_virtual_alias_class():
    r = resolver(tables={"transport_maps": Dict({"*": "smtp:[gw]"})})
    assert r.resolve("", "u@alias.example").transport == "error"
    assert r.resolve("", "u@localhost").transport == "smtp"


def test_sender_dependent_maps():
    r = resolver(tables={
        "sender_dependent_relayhost_maps": Dict({"@a.example": "[relay-a]", "<>": "[bounce-relay]",
                                                 "b@b.example": "DUNNO"}),
        "sender_dependent_default_transport_maps": Dict({"@a.example": "special"}),
    }, relayhost="[global]")
    got = r.resolve("joe@a.example", "u@other.org")
    assert (got.transport, got.nexthop) == ("special", "[relay-a]")
    got = r.resolve("", "u@other.org")
    assert (got.transport, got.nexthop) == ("smtp", "[bounce-relay]")
    assert r.resolve("b@b.example", "u@other.org").nexthop == "[global]"
    # sender_dependent_default_transport_maps applies to the default class only
    assert r.resolve("joe@a.example", "u@relay.example").transport == "relay"


def test_table_failure_sets_fail_flag():
    r = resolver(tables={"transport_maps": Dict(fail=True)})
    assert r.resolve("", "u@other.org").flags & FLAG_FAIL


def test_relocated():
    r = resolver(tables={"relocated_maps": Dict({"old@other.org": "new@else.org"})})
    got = r.resolve("", "old@other.org")
    assert (got.transport, got.nexthop) == ("error", "User has moved to new@else.org")


def test_negated_and_table_domain_lists():
    lst = MatchList(["!bad.example", "example"], domain=True, parent=True)
    assert lst.match("x.example") and not lst.match("bad.example")
    t = MatchList(["test:x"], lambda spec: Dict({"virt.example": "x"}))
    assert t.match("VIRT.example") and not t.match("sub.virt.example")


def test_valid_hostname():
    assert valid_hostname("a-b.example_x.com")
    assert not valid_hostname("-a.com") and not valid_hostname("a..b") and not valid_hostname("a" * 64)
