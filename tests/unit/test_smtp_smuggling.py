"""SMTP smuggling (CVE-2023-51764 and relatives): no non-standard end of
DATA may end the message or start a second one, however the bytes arrive."""

import pytest

from pfy.smtp.server import MailFrom, MessageAborted, MessageEnd
from test_smtp_server_dialog import ready

VARIANTS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CR": b"\r.\r",
    "CRLF.LF": b"\r\n.\n",
    "CR.LF": b"\r.\n",
    "CR.CRLF": b"\r.\r\n",
}
SMUGGLED = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n"


def message(variant: bytes) -> bytes:
    return b"Subject: x\r\n\r\nhi" + variant + SMUGGLED + b"\r\n.\r\n"


def run(mode, chunks):
    d = ready(smtpd_forbid_bare_newline=mode)
    d.feed(b"DATA\r\n")
    d.feed(*chunks)
    return d


def check(d, mode, name):
    senders = [e.sender for e in d.of(MailFrom)]
    assert senders == ["a@x.test"], f"{mode}/{name}: got senders {senders} want only a@x.test"
    ends = d.of(MessageEnd)
    aborted = d.of(MessageAborted)
    if mode == "reject" and b"\n" in VARIANTS[name].replace(b"\r\n", b""):
        assert not ends and aborted == [MessageAborted("bare_lf")], f"{mode}/{name}: {d.events}"
        assert "550 5.5.2 mx.test Error: bare <LF> received" in d.out.decode()
    else:
        assert len(ends) == 1, f"{mode}/{name}: got {len(ends)} message ends want 1"
        assert b"MAIL FROM:<evil@x.test>" in d.content(), f"{mode}/{name}: smuggled text must stay content"


@pytest.mark.parametrize("mode", ["normalize", "reject"])
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_fed_whole(mode, name):
    check(run(mode, [message(VARIANTS[name])]), mode, name)


@pytest.mark.parametrize("mode", ["normalize", "reject"])
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_split_at_every_byte(mode, name):
    msg = message(VARIANTS[name])
    for i in range(1, len(msg)):
        check(run(mode, [msg[:i], msg[i:]]), mode, name)


def test_variant_fed_byte_by_byte():
    for name, variant in VARIANTS.items():
        msg = message(variant)
        check(run("normalize", [msg[i:i + 1] for i in range(len(msg))]), "normalize", name)


def test_legacy_no_mode_is_vulnerable_as_documented():
    # smtpd_forbid_bare_newline = no is Postfix < 3.9 behaviour: <LF>.<LF> ends DATA.
    d = ready(smtpd_forbid_bare_newline="no", smtpd_forbid_unauth_pipelining=False)
    d.feed(b"DATA\r\n", message(b"\n.\n"))
    assert len(d.of(MessageEnd)) == 2
    # ... unless smtpd_forbid_unauth_pipelining catches the smuggled DATA.
    d = run("no", [message(b"\n.\n")])
    assert len(d.of(MessageEnd)) == 1 and d.s.closed


def test_reject_with_521_hangs_up():
    d = ready(smtpd_forbid_bare_newline="reject", smtpd_forbid_bare_newline_reject_code=521)
    d.feed(b"DATA\r\n")
    d.feed(b"a\nb\r\n.\r\n")
    assert d.out.decode().endswith("521 5.5.2 mx.test Error: bare <LF> received\r\n")
    assert d.s.closed


def test_bare_lf_command_rejected_in_reject_mode():
    from test_smtp_server_dialog import Dialog
    d = Dialog(smtpd_forbid_bare_newline="reject")
    assert d.last(b"EHLO c.test\n") == "550 5.5.2 mx.test Error: bare <LF> received"
    assert d.s.closed


def test_bare_lf_command_accepted_in_normalize_mode():
    from test_smtp_server_dialog import Dialog
    assert Dialog().last(b"NOOP\n") == "250 2.0.0 Ok"


def test_dot_stuffing_and_bare_cr_stay_content():
    d = ready()
    d.feed(b"DATA\r\n")
    d.feed(b"..leading dot\r\na\rb\r\n.\r\n")
    assert d.content() == b".leading dot\r\na\rb\r\n"
