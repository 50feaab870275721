"""MAIL/RCPT path and ESMTP parameter parsing, and xtext."""

import pytest

from pfy.smtp import replies
from pfy.smtp.esmtp_params import (MailParams, RcptParams, extract_address, parse_mail_params,
                                   parse_rcpt_params, split_path_argument)
from pfy.smtp.xtext import xtext_decode, xtext_encode

ADDRESSES = [  # (path, lenient, strict)
    ("<a@b>", "a@b", "a@b"),
    ("a@b", "a@b", None),
    ("<>", "", ""),
    ("<@r1,@r2:u@x>", "u@x", "u@x"),
    ("<Name <u@x>>", "u@x", None),
    ('<"john smith"@x>', "john smith@x", "john smith@x"),
    ("<a(comment)@b>", "a@b", None),
    ("<a@b", None, None),
    ("<a\x01@b>", None, None),
    ("<postmaster>", "postmaster", "postmaster"),
]


@pytest.mark.parametrize("path,lenient,strict", ADDRESSES)
def test_extract_address(path, lenient, strict):
    got = (extract_address(path, strict=False), extract_address(path, strict=True))
    assert got == (lenient, strict), f"{path!r}: got {got} want {(lenient, strict)}"


@pytest.mark.parametrize("rest,want", [
    ("FROM:<a@b>", ("<a@b>", [])),
    ("from: <a@b> SIZE=1", ("<a@b>", ["SIZE=1"])),
    ('FROM:<"a b"@c> BODY=8BITMIME', ('<"a b"@c>', ["BODY=8BITMIME"])),
    ("FROM:<Name <a@b>> X", ("<Name <a@b>>", ["X"])),
    ("FROM <a@b>", None),
    ("TO:<a@b>", None),
    ("FROM:", None),
])
def test_split_path_argument(rest, want):
    assert split_path_argument(rest, "FROM") == want


MAIL_CASES = [
    (["SIZE=100"], MailParams(size=100)),
    (["size=0"], MailParams(size=0)),
    (["SIZE=1x"], replies.BAD_SIZE),
    (["SIZE=99999999999999999999999"], replies.SIZE_OVERFLOW),
    (["BODY=8bitmime"], MailParams(body="8BITMIME")),
    (["BODY=7BIT"], MailParams(body="7BIT")),
    (["BODY=BINARYMIME"], replies.unsupported_option("BODY=BINARYMIME")),
    (["SMTPUTF8"], MailParams(smtputf8=True)),
    (["RET=hdrs"], MailParams(ret="HDRS")),
    (["RET=FULL", "RET=HDRS"], replies.BAD_RET),
    (["RET=x"], replies.BAD_RET),
    (["ENVID=QQ+2B1"], MailParams(envid="QQ+1")),
    (["ENVID=a+zz"], replies.BAD_ENVID),
    (["ENVID=" + "a" * 101], replies.BAD_ENVID),
    (["ENVID="], replies.BAD_ENVID),
    (["AUTH=<>"], MailParams(auth="<>")),
    (["AUTH=u+40x"], MailParams(auth="u@x")),
    (["AUTH=bad+"], replies.BAD_AUTH_PARAM),
    (["FOO"], replies.unsupported_option("FOO")),
]


@pytest.mark.parametrize("params,want", MAIL_CASES)
def test_mail_params(params, want):
    got = parse_mail_params(params, dsn=True, smtputf8=True, auth=True)
    assert got == want, f"{params}: got {got} want {want}"


def test_mail_params_gated_by_offer():
    assert parse_mail_params(["RET=FULL"], dsn=False, smtputf8=True, auth=True) \
        == replies.unsupported_option("RET=FULL")
    assert parse_mail_params(["SMTPUTF8"], dsn=True, smtputf8=False, auth=True) \
        == replies.unsupported_option("SMTPUTF8")
    # Postfix 3.7 ignores AUTH= when it offers no AUTH (checked side by side).
    assert parse_mail_params(["AUTH=<>"], dsn=True, smtputf8=True, auth=False) == MailParams()


RCPT_CASES = [
    (["NOTIFY=NEVER"], RcptParams(notify=("NEVER",))),
    (["NOTIFY=delay,success"], RcptParams(notify=("SUCCESS", "DELAY"))),
    (["NOTIFY=NEVER,FAILURE"], replies.BAD_NOTIFY),
    (["NOTIFY=SUCCESS,SUCCESS"], replies.BAD_NOTIFY),
    (["NOTIFY="], replies.BAD_NOTIFY),
    (["NOTIFY=SOMETIMES"], replies.BAD_NOTIFY),
    (["ORCPT=rfc822;a+40b"], RcptParams(orcpt_type="rfc822", orcpt="a@b")),
    (["ORCPT=RFC822;a@b"], RcptParams(orcpt_type="rfc822", orcpt="a@b")),
    (["ORCPT=x400;a"], RcptParams(orcpt_type="x400", orcpt="a")),   # Postfix: any type
    (["ORCPT=;a"], replies.BAD_ORCPT),
    (["ORCPT=rfc822"], replies.BAD_ORCPT),
    (["ORCPT=rfc822;a+4"], replies.BAD_ORCPT),
    (["BODY=8BITMIME"], replies.unsupported_option("BODY=8BITMIME")),
]


@pytest.mark.parametrize("params,want", RCPT_CASES)
def test_rcpt_params(params, want):
    got = parse_rcpt_params(params, dsn=True)
    assert got == want, f"{params}: got {got} want {want}"


@pytest.mark.parametrize("text,want", [
    ("abc", "abc"), ("a+2Bb", "a+b"), ("a+3Db", "a=b"), ("a+2bb", "a+b"),
    ("a+", None), ("a+G0", None), ("a b", None), ("a=b", None), ("", ""),
])
def test_xtext_decode(text, want):
    assert xtext_decode(text) == want


def test_xtext_round_trip():
    for text in ["plain", "a+b=c d", "ü@x", "\x01"]:
        enc = xtext_encode(text)
        assert enc.isascii() and " " not in enc
        assert xtext_decode(enc).encode("latin-1") == text.encode("utf-8")
