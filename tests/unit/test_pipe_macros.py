"""pipe(8)'s pure parts: master.cf arguments, attributes, macros, exit codes, copy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pfy.daemons.pipe import (MacroError, MacroValues, PipeAttrs, command_status,
                              copy_records, expand_argv, expand_macros, parse_attrs,
                              recipient_values, unescape, clean_output)
from pfy.ipc.delivery import RequestRecipient
from pfy.queue.record import REC_CONT, REC_NORM
from pfy.server.lifecycle import Fatal


# -- master's argv ---------------------------------------------------------------
# The skeleton splits it (ctx.options.service_args): tests/unit/test_server_options.py.

# -- attributes --------------------------------------------------------------------

def _pw(name):
    table = {"vmail": (5000, 5000), "root": (0, 0), "postfix": (100, 101), "wheelie": (6000, 0)}
    if name not in table:
        raise KeyError(name)
    uid, gid = table[name]
    return SimpleNamespace(pw_uid=uid, pw_gid=gid, pw_name=name)


def _gr(name):
    table = {"mailgrp": 8, "rootgrp": 0}
    if name not in table:
        raise KeyError(name)
    return SimpleNamespace(gr_gid=table[name])


def attrs(*args):
    return parse_attrs(list(args), "postfix", getpwnam=_pw, getgrnam=_gr)


def test_attributes_parsed():
    a = attrs("flags=DRhu", "user=vmail:mailgrp", "size=1000", "eol=\\r\\n",
              "null_sender=", "directory=/tmp", "argv=/usr/bin/lda", "-f", "${sender}")
    assert (a.uid, a.gid, a.flags, a.size_limit, a.eol, a.null_sender, a.directory) == \
        (5000, 8, "DRhu", 1000, b"\r\n", "", "/tmp")
    assert a.command == ["/usr/bin/lda", "-f", "${sender}"]
    assert attrs("user=vmail", "argv=/x").null_sender == "MAILER-DAEMON"


@pytest.mark.parametrize("args, why", [
    (("argv=/bin/true",), "missing user="),
    (("user=vmail",), "missing argv="),
    (("user=root", "argv=/bin/true"), "specifies root privileges"),
    (("user=postfix", "argv=/bin/true"), "mail system owner postfix"),
    (("user=vmail:rootgrp", "argv=/bin/true"), "privileged group id 0"),
    (("user=wheelie", "argv=/bin/true"), "privileged group id 0"),
    (("user=nobody-here", "argv=/bin/true"), "unknown user name"),
    (("user=vmail", "flags=Z", "argv=/bin/true"), "unknown flag"),
    (("user=vmail", "size=big", "argv=/bin/true"), "bad size= value"),
    (("user=vmail", "colour=blue", "argv=/bin/true"), "unknown attribute name"),
])
def test_bad_attributes_are_fatal(args, why):
    with pytest.raises(Fatal, match=why):
        attrs(*args)


def test_unescape():
    assert unescape(r"\r\n") == b"\r\n"
    assert unescape(r"\101\\x\t") == b"A\\x\t"
    assert unescape("plain") == b"plain"


# -- macros ------------------------------------------------------------------------

VALUES = {"sender": "a@x", "nexthop": "dest.example", "size": "42", "recipient": "b@y",
          "user": "b", "extension": "", "empty": ""}


def look(name):
    if name not in VALUES:
        raise MacroError(f"unknown macro name: {name}")
    return VALUES[name]


@pytest.mark.parametrize("text, want", [
    ("${sender}", "a@x"), ("$sender", "a@x"), ("$(sender)", "a@x"),
    ("-f$sender.", "-fa@x."), ("$$HOME", "$HOME"), ("100$$", "100$"),
    ("${user}@${nexthop}", "b@dest.example"),
    ("${extension?+}${extension}", ""), ("${size?big}", "big"),
    ("${extension:none}", "none"), ("${size:none}", ""),
    ("${extension?{has}:{has not}}", "has not"), ("${size?{has}:{has not}}", "has"),
    ("${empty?{x$sender}}", ""), ("${size?{x$sender}}", "xa@x"),
    ("no macros", "no macros"),
    ("${{$size} == {42} ? {yes} : {no}}", "yes"), ("${{$sender} != {a@x}?{diff}:{same}}", "same"),
    ("${{$size} > {100} ? {big} : {small}}", "small"), ("${{$size} <= {42}?{ok}}", "ok"),
    ("${{$user}=={b}?{-d $user}}", "-d b"),
])
def test_expand_macros(text, want):
    got = expand_macros(text, look)
    assert got == want, f"got {got!r} want {want!r}"


@pytest.mark.parametrize("text", ["${nosuch}", "$", "${sender", "${}", "${sender!x}",
                                  "${{$sender} < {1} ? {x}}", "${{a} ~ {b} ? {x}}",
                                  "${{a} == {b} {x}}"])
def test_bad_macros(text):
    with pytest.raises(MacroError):
        expand_macros(text, look)


def test_recipient_arguments_repeat_per_recipient():
    rv = [recipient_values(a, "", "", "+") for a in ("U1+ext@Dom.example", "u2@dom.example")]
    vals = MacroValues({"sender": "s@x", "nexthop": "n"}, rv)
    argv = expand_argv(["/bin/cmd", "-f", "${sender}", "--", "${recipient}", "${user}:${extension}",
                        "${size?x}${domain}"], vals)
    assert argv == ["/bin/cmd", "-f", "s@x", "--", "U1+ext@Dom.example", "u2@dom.example",
                    "U1:ext", "u2:", "Dom.example", "dom.example"]


def test_flags_h_q_u():
    r = recipient_values('Joe Bloggs+X@Example.COM', "", "hqu", "+")
    assert r["recipient"] == '"joe bloggs+x"@example.com'
    assert (r["user"], r["extension"], r["mailbox"], r["domain"]) == \
        ("joe bloggs", "x", "joe bloggs+x", "example.com")
    r = recipient_values("Joe@Example.COM", "Orig@Example.COM", "", "")
    assert (r["recipient"], r["original_recipient"]) == ("Joe@Example.COM", "Orig@Example.COM")


def test_relational_with_recipient_macro_repeats():
    rv = [recipient_values(a, "", "", "") for a in ("a@x", "b@x")]
    argv = expand_argv(["${{$domain} == {x} ? {-r $recipient}}"], MacroValues({}, rv))
    assert argv == ["-r a@x", "-r b@x"]


def test_unknown_macro_in_argv():
    with pytest.raises(MacroError, match="unknown macro name: bogus"):
        expand_argv(["/bin/x", "${bogus}"], MacroValues({}, []))


def test_hostile_values_stay_one_argument():
    """Text from the network never becomes more words or a shell command."""
    rv = [recipient_values('"a b; rm -rf /"@x', "", "", "")]
    argv = expand_argv(["/bin/cmd", "${recipient}"], MacroValues({}, rv))
    assert argv == ["/bin/cmd", '"a b; rm -rf /"@x']


# -- exit status -------------------------------------------------------------------

@pytest.mark.parametrize("code, output, dsn, reason", [
    (75, "", "4.3.0", "temporary failure"),
    (71, "no fork", "4.3.0", "system resource problem. Command output: no fork"),
    (67, "who?", "5.1.1", "user unknown. Command output: who?"),
    (65, "", "5.6.0", "data format error"),
    (74, "", "5.3.0", "input/output error"),
    (77, "", "5.7.0", "permission denied"),
    (78, "", "5.3.5", "local configuration error"),
    (1, "oops", "5.3.0", 'Command died with status 1: "/bin/c". Command output: oops'),
    (-9, "", "4.3.0", 'Command died with signal 9: "/bin/c"'),
    (1, "4.2.2 Mailbox full", "4.2.2", "Mailbox full"),
    (75, "5.1.1 no such mailbox", "5.1.1", "no such mailbox"),
])
def test_command_status(code, output, dsn, reason):
    got = command_status(code, output, "/bin/c")
    assert got == (dsn, reason), f"got {got} want {(dsn, reason)}"


def test_clean_output():
    assert clean_output(b"line one\nline\ttwo\x01\n") == "line one line two?"
    assert len(clean_output(b"x" * 5000)) == 1024


# -- message copy ------------------------------------------------------------------

def _copy(flags, eol=b"\n", sender="s@x", records=None):
    a = PipeAttrs(command=["x"], uid=1, gid=1, user="u", flags=flags, eol=eol)
    rcpt = RequestRecipient("r@y", "orig@y", 0)
    records = records or [(REC_NORM, b"Subject: t"), (REC_NORM, b""), (REC_NORM, b".dot"),
                          (REC_NORM, b"From me"), (REC_CONT, b"long "), (REC_NORM, b"line")]
    return b"".join(copy_records(records, a, sender, rcpt, 0.0))


def test_copy_plain():
    assert _copy("") == b"Subject: t\n\n.dot\nFrom me\nlong line\n"


def test_copy_flags():
    out = _copy("FRODB.>", eol=b"\r\n")
    lines = out.split(b"\r\n")
    assert lines[0].startswith(b"From s@x  ")
    assert lines[1:5] == [b"Return-Path: <s@x>", b"X-Original-To: orig@y",
                          b"Delivered-To: r@y", b"Subject: t"]
    assert lines[5:] == [b"", b"..dot", b">From me", b"long line", b"", b""]


def test_copy_null_sender_return_path():
    assert _copy("R", sender="").startswith(b"Return-Path: <>\n")
