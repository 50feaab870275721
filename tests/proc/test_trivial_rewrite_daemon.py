"""trivial-rewrite on its multi skeleton: rewrite and resolve over the socket."""

import os
import textwrap

import pytest

from pfy.ipc.rewrite_client import RewriteClient
from pfy.server.testing import start_daemon, unix_listener


@pytest.fixture
def rewrite_daemon(tmp_path):
    (tmp_path / "transport").write_text("special.example smtp:[gw.example]:2525\n")
    (tmp_path / "main.cf").write_text(textwrap.dedent(f"""\
        queue_directory = {tmp_path}
        myhostname = host.example.com
        mydomain = example.com
        mydestination = $myhostname, localhost
        relay_domains = relay.example
        virtual_alias_domains = alias.example
        transport_maps = texthash:{tmp_path}/transport
        inet_interfaces = 127.0.0.1
        maillog_file = {tmp_path}/maillog
        """))
    sock, path = unix_listener(tmp_path / "rewrite")
    proc = start_daemon("trivial-rewrite", config_dir=tmp_path, listen=[sock],
                        args=["-t", "unix"])
    sock.close()
    client = RewriteClient(os.fspath(path), timeout=10)
    yield client
    client.close()
    proc.master_exit()
    assert proc.wait(10) == 0


def test_rewrite_and_resolve(rewrite_daemon):
    rw = rewrite_daemon
    assert rw.rewrite("local", "user") == "user@host.example.com"
    assert rw.rewrite("remote", "user") == "user"
    r = rw.resolve("", "user")
    assert (r.transport, r.nexthop, r.recipient) == ("local", "host.example.com",
                                                     "user@host.example.com")
    assert r.is_local and r.is_final and r.relay_ok
    r = rw.resolve("a@b", "x@relay.example")
    assert (r.transport, r.nexthop) == ("relay", "relay.example") and r.relay_ok
    assert not r.is_final
    r = rw.resolve("a@b", "x@special.example")
    assert (r.transport, r.nexthop) == ("smtp", "[gw.example]:2525")
    r = rw.resolve("a@b", "x@else.org")
    assert (r.transport, r.nexthop) == ("smtp", "else.org") and not r.relay_ok
    r = rw.resolve("a@b", "x@[127.0.0.1]")
    assert r.is_local
    # A cached answer is the same answer.
    assert rw.resolve("a@b", "x@[127.0.0.1]") == r
    assert rw.resolve("a@b", "x@alias.example").transport == "error"


def test_unknown_rule_is_an_error_not_a_crash(rewrite_daemon):
    from pfy.ipc.rewrite_client import RewriteUnavailable
    with pytest.raises(RewriteUnavailable):
        rewrite_daemon.rewrite("bogus", "user")
    # compatibility_level 0 (no setting): append_dot_mydomain = yes, as Postfix
    assert rewrite_daemon.rewrite("local", "u@host") == "u@host.example.com"
