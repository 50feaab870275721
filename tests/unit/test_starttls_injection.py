"""STARTTLS injection (CVE-2011-0411): plaintext pipelined after STARTTLS
is discarded, never executed after the handshake."""

from pfy.smtp.server import MailFrom, StartTls
from test_smtp_server_dialog import Dialog


def tls_dialog():
    d = Dialog(tls_offered=True, smtpd_forbid_unauth_pipelining=False)
    d.feed(b"EHLO c\r\n")
    return d


def test_pipelined_commands_after_starttls_are_dropped():
    d = tls_dialog()
    got = d.feed(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n")
    assert got == "220 2.0.0 Ready to start TLS\r\n", got
    d.feed(b"RCPT TO:<more-plaintext@x>\r\n")        # still before the handshake
    d.s.tls_established()
    assert d.feed(b"MAIL FROM:<a@x>\r\n") == "503 5.5.1 Error: send HELO/EHLO first\r\n" \
        or d.of(MailFrom)[-1].sender == "a@x"
    assert all(e.sender != "evil@x" for e in d.of(MailFrom))


def test_starttls_with_sync_check_hangs_up_on_injection():
    d = Dialog(tls_offered=True)
    d.feed(b"EHLO c\r\n")
    assert d.last(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n") == "554 5.5.0 Error: SMTP protocol synchronization"
    assert not d.of(StartTls)


def test_after_tls_ehlo_is_forgotten_and_starttls_not_offered():
    d = tls_dialog()
    d.feed(b"STARTTLS\r\n")
    d.s.tls_established()
    assert d.s.helo_name is None
    got = d.feed(b"EHLO c\r\n")
    assert "STARTTLS" not in got
    assert d.last(b"STARTTLS\r\n") == "554 5.5.1 Error: TLS already active"


def test_starttls_refused_by_driver():
    from pfy.smtp import replies
    d = Dialog(tls_offered=True, decide=lambda ev: replies.TLS_UNAVAILABLE if isinstance(ev, StartTls) else None)
    d.feed(b"EHLO c\r\n")
    assert d.last(b"STARTTLS\r\n") == "454 4.7.0 TLS not available due to local problem"
    assert d.last(b"NOOP\r\n") == "250 2.0.0 Ok"


def test_starttls_syntax():
    d = tls_dialog()
    assert d.last(b"STARTTLS now\r\n") == "501 5.5.4 Syntax: STARTTLS"
