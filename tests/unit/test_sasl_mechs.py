"""PLAIN (RFC 4616) and LOGIN parsing, and the security-option filter."""

import pytest

from pfy.sasl.mechs import Credentials, LoginMechanism, MechError, PlainMechanism, parse_plain
from pfy.sasl.security import BUILTIN_PROPERTIES, mechanism_allowed, parse_security_options


@pytest.mark.parametrize("raw, want", [
    (b"\0tim\0tanstaaftanstaaf", ("tim", "tanstaaftanstaaf", "")),      # RFC 4616 4 example
    (b"Ursel\0Kurt\0xipj3plmq", ("Kurt", "xipj3plmq", "Ursel")),        # RFC 4616 4 example
    ("\0jörg\0päss".encode(), ("jörg", "päss", "")),                    # UTF-8
    (b"\0u\0p\0w\0r\0d", None),                                          # NUL inside the password
    (b"\0\0pw", None),                                                   # empty authcid
    (b"\0user\0", None),                                                 # empty password
    (b"user\0pw", None),                                                 # one NUL only
    (b"", None),
    (b"\0\xff\xfe\0pw", None),                                           # not UTF-8
    (b"\0" + b"u" * 256 + b"\0pw", None),                                # RFC 4616 2: 255 octets
])
def test_parse_plain(raw, want):
    if want is None:
        with pytest.raises(MechError):
            parse_plain(raw)
    else:
        c = parse_plain(raw)
        assert (c.authcid, c.password, c.authzid) == want, f"got {c} want {want}"


def test_credentials_repr_hides_password():
    assert "s3cret" not in repr(Credentials("u", "s3cret"))
    assert "s3cret" not in str(Credentials("u", "s3cret"))


def test_plain_without_initial_response_gets_empty_challenge():
    m = PlainMechanism()
    assert m.start(None) == b""
    assert m.step(b"\0u\0p") == Credentials("u", "p")
    with pytest.raises(MechError):
        m.step(b"\0u\0p")


def test_plain_with_empty_initial_response_fails():
    # "AUTH PLAIN =" is an empty response (RFC 4954 4), not a request for a challenge.
    with pytest.raises(MechError):
        PlainMechanism().start(b"")


def test_login_dialogue():
    m = LoginMechanism()
    assert m.start(None) == b"Username:"
    assert m.step(b"alice") == b"Password:"
    assert m.step(b"pw") == Credentials("alice", "pw")


def test_login_with_initial_response_skips_username_prompt():
    m = LoginMechanism()
    assert m.start(b"alice") == b"Password:"
    assert m.step(b"pw") == Credentials("alice", "pw")


@pytest.mark.parametrize("responses", [[b""], [b"a\0b"], [b"alice", b""]])
def test_login_rejects_empty_or_nul(responses):
    m = LoginMechanism()
    m.start(None)
    with pytest.raises(MechError):
        for r in responses:
            m.step(r)


@pytest.mark.parametrize("options, offered", [
    (["noanonymous"], {"PLAIN", "LOGIN"}),
    (["noplaintext", "noanonymous"], set()),
    ([], {"PLAIN", "LOGIN"}),
    (["mutual_auth"], set()),
    (["nodictionary", "noactive"], {"PLAIN", "LOGIN"}),
])
def test_security_options_filter_builtin(options, offered):
    opts = parse_security_options(options, "smtpd_sasl_security_options")
    got = {m for m, props in BUILTIN_PROPERTIES.items() if mechanism_allowed(props, opts)}
    assert got == offered, f"got {got} want {offered}"


def test_security_options_dovecot_properties():
    opts = parse_security_options(["noanonymous"], "x")
    assert not mechanism_allowed({"anonymous"}, opts)
    assert not mechanism_allowed({"private"}, parse_security_options([], "x"))
    assert mechanism_allowed({"dictionary", "active"}, opts)


def test_unknown_security_option_is_a_config_error():
    with pytest.raises(ValueError, match="smtpd_sasl_security_options"):
        parse_security_options(["noplain"], "smtpd_sasl_security_options")
