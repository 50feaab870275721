"""Pure parts of the skeletons and master: daemon argv, status records,
master.cf endpoints and the argv master builds."""

import pytest

from pfy.config.master_cf import parse_master_text
from pfy.daemons.master.endpoints import Endpoint, EndpointError, inet_endpoints, local_endpoint
from pfy.daemons.master.supervisor import _child_argv
from pfy.server import master_proto as mp
from pfy.server.lifecycle import UsageError, parse_server_args


@pytest.mark.parametrize("argv, want", [
    (["-l", "-t", "unix", "-u"], dict(service="qmgr", transport="unix", solitary=True, unprivileged=True)),
    (["-n", "smtp", "-t", "inet", "-u", "-c", "-o", "stress=", "-s", "2"],
     dict(service="smtp", transport="inet", chroot=True, listen_count=2, overrides={"stress": ""})),
    (["-ostress=yes", "-vv"], dict(overrides={"stress": "yes"}, verbose=2)),
    (["-o", "smtpd_banner = $myhostname ESMTP"], dict(overrides={"smtpd_banner": "$myhostname ESMTP"})),
    (["-S"], dict(standalone=True)),
])
def test_parse_server_args(argv, want):
    opts = parse_server_args(argv, "qmgr")
    for k, v in want.items():
        assert getattr(opts, k) == v, f"{k}: got {getattr(opts, k)!r} want {v!r}"
    assert opts.argv == ["qmgr", *argv]


@pytest.mark.parametrize("argv, msg", [
    (["-x"], "invalid option -- 'x'"),
    (["-t"], "option requires an argument -- 't'"),
    (["-t", "tcp"], "unknown service type: tcp"),
    (["-o", "novalue"], "bad -o parameter setting: novalue"),
    (["-s", "0"], "invalid -s"),
    (["stray"], "unexpected command-line argument: stray"),
])
def test_parse_server_args_errors(argv, msg):
    with pytest.raises(UsageError, match=msg.replace("(", r"\(")):
        parse_server_args(argv, "smtpd")


# What follows master's options is the service's own (Postfix's skeletons
# hand the service argv + optind): getopt stops at the first word that is
# not an option, or after "--", which it drops.
@pytest.mark.parametrize("argv, service, overrides, args", [
    (["-n", "filter", "-t", "unix", "flags=Rq", "user=f", "argv=/bin/cat", "-f", "x"],
     "filter", {}, ["flags=Rq", "user=f", "argv=/bin/cat", "-f", "x"]),
    (["-t", "unix", "-o", "a=b", "-v", "user=f", "argv=/bin/cat"],
     "pipe", {"a": "b"}, ["user=f", "argv=/bin/cat"]),
    (["-tunix", "-ofoo=bar", "argv=x"], "pipe", {"foo": "bar"}, ["argv=x"]),
    # option-looking words after the first service word are the service's
    (["-t", "unix", "user=f", "argv=/bin/cmd", "-f", "${sender}", "-x", "--", "-o", "a=b"],
     "pipe", {}, ["user=f", "argv=/bin/cmd", "-f", "${sender}", "-x", "--", "-o", "a=b"]),
    # "--" ends the options and is dropped; only the first one
    (["-t", "unix", "--", "-weird"], "pipe", {}, ["-weird"]),
    (["-t", "unix", "--", "--", "x"], "pipe", {}, ["--", "x"]),
    (["-t", "unix", "--"], "pipe", {}, []),
    (["-t", "unix", "-", "x"], "pipe", {}, ["-", "x"]),   # "-" is not an option
    # an option's value is never a service word, whatever it looks like
    (["-n", "argv=x", "-t", "unix"], "argv=x", {}, []),
    (["-t", "unix"], "pipe", {}, []),
    ([], "pipe", {}, []),
])
def test_parse_server_args_service_args(argv, service, overrides, args):
    opts = parse_server_args(argv, "pipe", service_args=True)
    got = (opts.service, opts.overrides, opts.service_args)
    assert got == (service, overrides, args), f"got {got} want {(service, overrides, args)}"
    assert opts.transport == "unix"
    assert opts.argv == ["pipe", *argv]     # ps shows the whole command line


@pytest.mark.parametrize("argv, stray", [
    (["-t", "unix", "flags=R", "argv=/bin/cat"], "flags=R"),
    (["-t", "unix", "--", "-o", "a=b"], "-o"),
    (["-t", "unix", "-"], "-"),
])
def test_daemon_without_service_args_refuses_them(argv, stray):
    with pytest.raises(UsageError) as err:
        parse_server_args(argv, "smtpd")
    assert str(err.value) == f"unexpected command-line argument: {stray}"


@pytest.mark.parametrize("argv", [["-t", "unix"], ["-t", "unix", "--"]])
def test_daemon_without_service_args_accepts_none(argv):
    assert parse_server_args(argv, "smtpd").service_args == []


@pytest.mark.parametrize("argv, msg", [
    (["-Q", "argv=/bin/cat"], "invalid option -- 'Q'"),
    (["-t", "unix", "-o", "novalue", "argv=/bin/cat"], "bad -o parameter setting: novalue"),
    (["-t"], "option requires an argument -- 't'"),
])
def test_bad_options_before_service_args_still_fail(argv, msg):
    with pytest.raises(UsageError, match=msg.replace("(", r"\(")):
        parse_server_args(argv, "pipe", service_args=True)


def test_status_record_round_trip():
    rec = mp.encode_status(1234, 7, mp.STAT_TAKEN)
    assert len(rec) == mp.STATUS_SIZE
    assert mp.decode_status(rec) == (1234, 7, mp.STAT_TAKEN)
    assert mp.decode_status(rec[:-1]) is None


def entry(line):
    return parse_master_text(line + "\n", "master.cf")[0]


@pytest.mark.parametrize("line, maxproc, want", [
    ("qmgr unix n - n 300 1 qmgr", 1, "qmgr -l -t unix -u"),
    ("smtp inet n - y - - smtpd -o stress=", 100, "smtpd -n smtp -t inet -u -c -o stress="),
    ("rewrite unix - - y - - trivial-rewrite", 100, "trivial-rewrite -n rewrite -t unix -u -c"),
    ("local unix - n n - - local", 100, "local -t unix"),
    ("pickup fifo n - n 60 1 pickup", 1, "pickup -l -t fifo -u"),
])
def test_child_argv_is_postfix_order(line, maxproc, want):
    e = entry(line)
    assert " ".join(_child_argv(e, e.service, e.command, maxproc, 0, 1)) == want


def test_child_argv_multiple_listeners_and_verbose():
    e = entry("smtp inet n - n - - smtpd")
    assert _child_argv(e, "smtp", "smtpd", 100, 1, 2) == \
        ["smtpd", "-n", "smtp", "-t", "inet", "-v", "-u", "-s", "2"]


def test_child_argv_listen_count_comes_before_the_service_words():
    """master_ent.c: -s N before master.cf's words, which the skeleton
    hands to the service once it meets the first non-option."""
    e = entry("filter unix - n n - - pipe flags=R argv=/bin/cat")
    assert _child_argv(e, "filter", "pipe", 100, 0, 2)[-4:] == \
        ["-s", "2", "flags=R", "argv=/bin/cat"]


@pytest.mark.parametrize("name, ifaces, protos, want", [
    ("127.0.0.1:2525", ["all"], ["all"], [("127.0.0.1", 2525)]),
    ("*:2525", ["all"], ["ipv4"], [("0.0.0.0", 2525)]),
    ("[::1]:2525", ["all"], ["all"], [("::1", 2525)]),
    ("2525", ["loopback-only"], ["ipv4"], [("127.0.0.1", 2525)]),
    ("2525", ["loopback-only"], ["all"], [("127.0.0.1", 2525), ("::1", 2525)]),
    ("2525", ["all"], ["all"], [("0.0.0.0", 2525), ("::", 2525)]),
    ("2525", ["127.0.0.1", "127.0.0.2"], ["all"], [("127.0.0.1", 2525), ("127.0.0.2", 2525)]),
    ("smtp", ["127.0.0.1"], ["ipv4"], [("127.0.0.1", 25)]),
])
def test_inet_endpoints(name, ifaces, protos, want):
    got = [(e.address, e.port) for e in inet_endpoints(name, ifaces, protos)]
    assert got == want, f"got {got} want {want}"


@pytest.mark.parametrize("name", ["127.0.0.1:99999", "127.0.0.1:nosuchservice-pfy", "[::1:25"])
def test_inet_endpoint_errors(name):
    with pytest.raises(EndpointError):
        inet_endpoints(name, ["all"], ["all"])


def test_local_endpoints():
    assert local_endpoint("unix", "cleanup", False) == Endpoint("unix", "public/cleanup")
    assert local_endpoint("unix", "rewrite", True) == Endpoint("unix", "private/rewrite")
    with pytest.raises(EndpointError):
        local_endpoint("unix", "../etc", True)
