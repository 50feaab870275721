"""Every command in every state, every limit: case tables read like a spec."""

import pytest

from pfy.smtp import replies
from pfy.smtp.replies import Reply
from pfy.smtp.server import (Auth, AuthAborted, AuthResponse, Disconnect, Helo, MailFrom,
                             MessageAborted, RcptTo, Rset, SmtpdLimits, XClient)
from test_smtp_server_dialog import Dialog, ready

STATES = {
    "fresh": [],
    "helo": [b"HELO c.test\r\n"],
    "ehlo": [b"EHLO c.test\r\n"],
    "mail": [b"EHLO c.test\r\n", b"MAIL FROM:<a@x>\r\n"],
    "rcpt": [b"EHLO c.test\r\n", b"MAIL FROM:<a@x>\r\n", b"RCPT TO:<b@y>\r\n"],
}

# (state, command, want last reply line)
CASES = [
    ("fresh", b"HELO c.test", "250 mx.test"),
    ("fresh", b"HELO", "501 Syntax: HELO hostname"),
    ("fresh", b"EHLO", "501 Syntax: EHLO hostname"),
    ("fresh", b"MAIL FROM:<a@x>", "250 2.1.0 Ok"),
    ("fresh", b"RCPT TO:<b@y>", "503 5.5.1 Error: need MAIL command"),
    ("fresh", b"DATA", "503 5.5.1 Error: need RCPT command"),
    ("fresh", b"RSET", "250 2.0.0 Ok"),
    ("fresh", b"RSET x", "501 5.5.4 Syntax: RSET"),
    ("fresh", b"NOOP", "250 2.0.0 Ok"),
    ("fresh", b"NOOP anything", "250 2.0.0 Ok"),
    ("fresh", b"VRFY", "501 5.5.4 Syntax: VRFY address"),
    ("fresh", b"VRFY <u@x>", "252 2.0.0 <u@x>"),
    ("fresh", b"ETRN", "500 Syntax: ETRN domain"),
    ("fresh", b"ETRN @x.test", "250 Queuing started"),
    ("fresh", b"ETRN bad..name", "501 Error: invalid parameter syntax"),
    ("fresh", b"STARTTLS", "502 5.5.1 Error: command not implemented"),
    ("fresh", b"AUTH PLAIN", "503 5.5.1 Error: authentication not enabled"),
    ("fresh", b"XCLIENT NAME=x", "550 5.7.0 Error: insufficient authorization"),
    ("fresh", b"XFORWARD NAME=x", "550 5.7.0 Error: insufficient authorization"),
    ("fresh", b"BOGUS", "500 5.5.2 Error: command not recognized"),
    ("fresh", b"", "500 5.5.2 Error: bad syntax"),
    ("fresh", b"EHLO a\0b", "500 5.5.2 Error: bad syntax"),
    ("fresh", b"EHLO \xff\xfe", "500 5.5.2 Error: bad UTF-8 syntax"),
    ("fresh", b"QUIT", "221 2.0.0 Bye"),
    ("fresh", b"ehlo c.test", "250 CHUNKING"),
    ("helo", b"MAIL FROM:<a@x>", "250 2.1.0 Ok"),
    ("helo", b"HELO again", "250 mx.test"),
    ("ehlo", b"MAIL FROM:<>", "250 2.1.0 Ok"),
    ("ehlo", b"MAIL FROM: <a@x>", "250 2.1.0 Ok"),
    ("ehlo", b"MAIL FROM:a@x", "250 2.1.0 Ok"),
    ("ehlo", b"MAIL FROM:<a@x", "501 5.1.7 Bad sender address syntax"),
    ("ehlo", b"MAIL <a@x>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    ("ehlo", b"MAIL FROM:", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    ("ehlo", b"MAIL FROM:<a@x> SIZE=20000000", "552 5.3.4 Message size exceeds fixed limit"),
    ("ehlo", b"MAIL FROM:<a@x> SIZE=abc", "501 5.5.4 Bad message size syntax"),
    ("ehlo", b"MAIL FROM:<a@x> FOO=1", "555 5.5.4 Unsupported option: FOO=1"),
    ("ehlo", b"MAIL FROM:<a@x> BODY=BINARYMIME", "555 5.5.4 Unsupported option: BODY=BINARYMIME"),
    ("ehlo", b"MAIL FROM:<a@x> RET=NONE", "501 5.5.4 Bad RET parameter syntax"),
    ("ehlo", b"MAIL FROM:<a@x> AUTH=<>", "250 2.1.0 Ok"),
    ("ehlo", b"RCPT TO:<b@y>", "503 5.5.1 Error: need MAIL command"),
    ("ehlo", b"AUTH PLAIN", "503 5.5.1 Error: authentication not enabled"),
    ("mail", b"MAIL FROM:<a@x>", "503 5.5.1 Error: nested MAIL command"),
    ("mail", b"RCPT TO:<b@y>", "250 2.1.5 Ok"),
    ("mail", b"RCPT TO:<>", "501 5.1.3 Bad recipient address syntax"),
    ("mail", b"RCPT <b@y>", "501 5.5.4 Syntax: RCPT TO:<address>"),
    ("mail", b"RCPT TO:<b@y> NOTIFY=NEVER,SUCCESS", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    ("mail", b"RCPT TO:<b@y> ORCPT=foo", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
    ("mail", b"DATA", "554 5.5.1 Error: no valid recipients"),
    ("mail", b"ETRN x.test", "503 Error: MAIL transaction in progress"),
    ("rcpt", b"DATA", "354 End data with <CR><LF>.<CR><LF>"),
    ("rcpt", b"DATA x", "501 5.5.4 Syntax: DATA"),
    ("rcpt", b"RCPT TO:<c@y>", "250 2.1.5 Ok"),
    ("rcpt", b"RSET", "250 2.0.0 Ok"),
    ("rcpt", b"EHLO c.test", "250 CHUNKING"),
    ("rcpt", b"XFORWARD NAME=x", "503 5.5.1 Error: MAIL transaction in progress"),
    ("rcpt", b"QUIT", "221 2.0.0 Bye"),
]


@pytest.mark.parametrize("state,command,want", CASES)
def test_command_in_state(state, command, want):
    d = Dialog(smtpd_forbid_unauth_pipelining=False)
    for line in STATES[state]:
        d.feed(line)
    got = d.last(command + b"\r\n")
    assert got == want, f"{state}: {command!r}: got {got!r} want {want!r}"


def test_helo_and_rset_reset_the_transaction():
    for cmd in (b"RSET\r\n", b"EHLO again\r\n", b"HELO again\r\n"):
        d = Dialog()
        for line in STATES["rcpt"]:
            d.feed(line)
        d.feed(cmd)
        assert d.last(b"RCPT TO:<b@y>\r\n") == "503 5.5.1 Error: need MAIL command", cmd


def test_policy_rejection_is_counted_and_state_unchanged():
    def decide(ev):
        if isinstance(ev, MailFrom):
            return replies.parse_reply("554 5.7.1 <a@x>: Sender address rejected: Access denied")
    d = Dialog(decide=decide)
    d.feed(b"EHLO c\r\n")
    assert d.last(b"MAIL FROM:<a@x>\r\n") == "554 5.7.1 <a@x>: Sender address rejected: Access denied"
    assert d.s.sender is None and d.s.error_count == 1
    assert d.last(b"RCPT TO:<b@y>\r\n") == "503 5.5.1 Error: need MAIL command"
    d.feed(b"QUIT\r\n")
    assert d.s.command_stats() == "ehlo=1 mail=0/1 rcpt=0/1 quit=1 commands=2/4"


def test_helo_required():
    d = Dialog(smtpd_helo_required=True)
    assert d.last(b"MAIL FROM:<a@x>\r\n") == "503 5.5.1 Error: send HELO/EHLO first"
    # Postfix's etrn_cmd() words it without an enhanced status code.
    assert d.last(b"ETRN x.test\r\n") == "503 Error: send HELO/EHLO first"


def test_strict_rfc821_envelopes():
    d = Dialog(strict_rfc821_envelopes=True)
    d.feed(b"EHLO c\r\n")
    assert d.last(b"MAIL FROM:a@x\r\n") == "501 5.1.7 Bad sender address syntax"
    assert d.last(b"MAIL FROM:<a@x> (comment)\r\n").startswith("555")  # "(comment)" is a parameter
    assert d.last(b"MAIL FROM: <a@x>\r\n") == "250 2.1.0 Ok"
    assert d.last(b"RCPT TO:<Name <b@y>>\r\n") == "501 5.1.3 Bad recipient address syntax"


def test_lenient_envelopes_take_the_route_addr():
    d = Dialog()
    d.feed(b"EHLO c\r\n", b"MAIL FROM:<@r1,@r2:a@x>\r\n")
    d.feed(b"RCPT TO:<Name <b@y>>\r\n")
    assert [e.sender for e in d.of(MailFrom)] == ["a@x"]
    assert [e.recipient for e in d.of(RcptTo)] == ["b@y"]


def test_vrfy_disabled():
    assert Dialog(disable_vrfy_command=True).last(b"VRFY u\r\n") == "502 5.5.1 VRFY command is disabled"
    assert "VRFY" not in Dialog(disable_vrfy_command=True).feed(b"EHLO c\r\n")


def test_recipient_limit_and_overshoot():
    d = Dialog(smtpd_recipient_limit=2, smtpd_recipient_overshoot_limit=1,
               smtpd_forbid_unauth_pipelining=False)
    d.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\n")
    got = d.feed(b"RCPT TO:<1@y>\r\nRCPT TO:<2@y>\r\nRCPT TO:<3@y>\r\nRCPT TO:<4@y>\r\n")
    want = "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n" \
           "452 4.5.3 Error: too many recipients\r\n"
    assert got == want, f"got {got!r} want {want!r}"
    # first excess recipient is within the overshoot; the second counts as an error
    assert d.s.error_count == 1


def test_hard_error_limit_hangs_up():
    d = Dialog(smtpd_hard_error_limit=3)
    got = d.feed(b"BOGUS\r\n", b"BOGUS\r\n", b"BOGUS\r\n", b"NOOP\r\n")
    want = ("500 5.5.2 Error: command not recognized\r\n" * 3
            + "421 4.7.0 mx.test Error: too many errors\r\n")
    assert got == want, f"got {got!r} want {want!r}"
    assert d.s.closed and d.of(Disconnect)[-1].reason == "errors"


def test_soft_error_limit_asks_driver_to_sleep():
    d = Dialog(smtpd_soft_error_limit=2, smtpd_error_sleep_time=1.5)
    d.feed(b"BOGUS\r\n")
    assert d.s.delay() == 0
    d.feed(b"BOGUS\r\n")
    assert d.s.delay() == 1.5


def test_junk_command_limit():
    d = Dialog(smtpd_junk_command_limit=2)
    for _ in range(3):
        d.feed(b"NOOP\r\n")
    assert d.s.error_count == 0
    d.feed(b"NOOP\r\n")        # Postfix: junk_cmds++ > limit
    assert d.s.error_count == 1


def test_errors_forgiven_after_delivery():
    d = Dialog()
    d.feed(b"BOGUS\r\n", b"EHLO c\r\n", b"MAIL FROM:<a@x>\r\n", b"RCPT TO:<b@y>\r\n",
           b"DATA\r\n", b"x\r\n.\r\n")
    assert d.s.error_count == 0


def test_timeout_reply_and_deadline():
    d = Dialog(now=100.0, smtpd_timeout=300)
    assert d.s.deadline == 400.0
    d.s.receive(b"NO", now=150.0)
    assert d.s.deadline == 450.0
    assert d.s.timeout() == b"421 4.4.2 mx.test Error: timeout exceeded\r\n"
    assert d.s.closed


def test_timeout_in_data_aborts_message():
    d = Dialog()
    d.feed(b"EHLO c\r\n", b"MAIL FROM:<a@x>\r\n", b"RCPT TO:<b@y>\r\n", b"DATA\r\n", b"partial")
    d.s.timeout()
    got = d.s.events()
    want = [MessageAborted("timeout"), Disconnect("timeout")]
    assert got == want, f"got {got} want {want}"


def test_forbidden_commands_hang_up():
    for cmd in (b"GET / HTTP/1.0", b"POST /x", b"CONNECT x:25", b"Subject: hi", b"123"):
        d = Dialog()
        assert d.last(cmd + b"\r\n") == "221 2.7.0 Error: I can break rules, too. Goodbye.", cmd
        assert d.s.closed


def test_noop_commands():
    assert Dialog(smtpd_noop_commands=frozenset({"XYZZY"})).last(b"XYZZY plugh\r\n") == "250 2.0.0 Ok"


def test_greeting_rejection_denies_all_but_quit():
    d = Dialog(greet=False, namaddr="h[192.0.2.1]")
    assert d.s.greet(Reply(554, "5.7.1", "h[192.0.2.1]: Client host rejected")) \
        == b"554 5.7.1 h[192.0.2.1]: Client host rejected\r\n"
    assert d.last(b"EHLO c\r\n") == "503 5.7.0 Error: access denied for h[192.0.2.1]"
    assert d.last(b"QUIT\r\n") == "221 2.0.0 Bye"


def test_discard_ehlo_keywords():
    d = Dialog(smtpd_discard_ehlo_keywords=frozenset({"pipelining", "dsn", "enhancedstatuscodes", "chunking"}))
    got = d.feed(b"EHLO c\r\n")
    assert "PIPELINING" not in got and "DSN" not in got and "ENHANCEDSTATUSCODES" not in got
    assert "CHUNKING" not in got
    # enhanced status codes are stripped from every reply, as Postfix does
    assert d.last(b"MAIL FROM:<a@x> RET=FULL\r\n") == "555 Unsupported option: RET=FULL"


def test_ehlo_full_keyword_order():
    d = Dialog(tls_offered=True, auth_mechanisms=("PLAIN", "LOGIN"), xclient_allowed=True,
               xforward_allowed=True, broken_sasl_auth_clients=True, message_size_limit=0)
    got = [ln[4:] for ln in d.feed(b"EHLO c\r\n").split("\r\n") if ln]
    want = ["mx.test", "PIPELINING", "SIZE", "VRFY", "ETRN", "STARTTLS", "AUTH PLAIN LOGIN",
            "AUTH=PLAIN LOGIN",
            "XCLIENT NAME ADDR PORT PROTO HELO LOGIN REVERSE_NAME DESTADDR DESTPORT",
            "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE",
            "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]
    assert got == want, f"got {got} want {want}"


def test_tls_auth_only_hides_auth():
    d = Dialog(tls_offered=True, auth_mechanisms=("PLAIN",), smtpd_tls_auth_only=True)
    assert "AUTH" not in d.feed(b"EHLO c\r\n")
    assert d.last(b"AUTH PLAIN\r\n") == "538 5.7.11 Encryption required for requested authentication mechanism"


def test_tls_required_blocks_mail():
    d = Dialog(tls_offered=True, tls_required=True)
    d.feed(b"EHLO c\r\n")
    assert d.last(b"MAIL FROM:<a@x>\r\n") == "530 5.7.0 Must issue a STARTTLS command first"
    assert d.last(b"NOOP\r\n") == "250 2.0.0 Ok"


# -- pipelining ---------------------------------------------------------------

def test_pipelined_replies_in_order():
    d = ready()
    d = Dialog()
    d.feed(b"EHLO c\r\n")
    got = d.feed(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<>\r\nRCPT TO:<c@y>\r\nDATA\r\n")
    want = ("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n501 5.1.3 Bad recipient address syntax\r\n"
            "250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
    assert got == want, f"got {got!r} want {want!r}"
    assert [e.pipelined for e in d.of(RcptTo)] == [True, True]


def test_unauth_pipelining_after_ehlo_is_sync_error():
    d = Dialog()
    assert d.last(b"EHLO c\r\nMAIL FROM:<a@x>\r\n") == "554 5.5.0 Error: SMTP protocol synchronization"
    assert d.s.closed and d.of(Disconnect)[-1].reason == "sync"


def test_pipelining_after_helo_is_sync_error():
    d = Dialog()
    d.feed(b"HELO c\r\n")
    assert d.last(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n") == "554 5.5.0 Error: SMTP protocol synchronization"


def test_data_content_before_354_is_sync_error():
    d = ready()
    assert d.last(b"DATA\r\nSubject: x\r\n") == "554 5.5.0 Error: SMTP protocol synchronization"


def test_unauth_pipelining_reported_when_allowed():
    d = Dialog(smtpd_forbid_unauth_pipelining=False)
    d.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\n")
    assert d.of(Helo)[0].pipelined is True     # for reject_unauth_pipelining


def test_pregreet_bytes_reported():
    d = Dialog(greet=False)
    d.s.receive(b"EHLO early\r\n")
    d.s.greet()
    assert d.s.pregreet_bytes == 12


# -- AUTH ---------------------------------------------------------------------

def auth_dialog(decide):
    d = Dialog(decide=decide, auth_mechanisms=("PLAIN", "LOGIN"))
    d.feed(b"EHLO c\r\n")
    return d


def test_auth_plain_initial_response():
    d = auth_dialog(lambda ev: replies.AUTH_OK if isinstance(ev, Auth) else None)
    assert d.last(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n") == "235 2.7.0 Authentication successful"
    assert d.of(Auth)[0].initial_response == b"\0user\0pass"
    assert d.s.authenticated
    assert d.last(b"AUTH PLAIN\r\n") == "503 5.5.1 Error: already authenticated"


def test_auth_login_continuations():
    def decide(ev):
        if isinstance(ev, Auth):
            return ("challenge", b"Username:")
        if isinstance(ev, AuthResponse) and ev.data == b"user":
            return ("challenge", b"Password:")
        return replies.auth_failed() if isinstance(ev, AuthResponse) else None
    d = auth_dialog(decide)
    assert d.last(b"AUTH LOGIN\r\n") == "334 VXNlcm5hbWU6"
    assert d.last(b"dXNlcg==\r\n") == "334 UGFzc3dvcmQ6"
    assert d.last(b"d3Jvbmc=\r\n") == "535 5.7.8 Error: authentication failed: authentication failure"
    assert not d.s.authenticated and d.s.error_count == 1


@pytest.mark.parametrize("line,want", [
    (b"*", "501 5.7.0 Authentication aborted"),
    (b"not base64!", "501 5.5.2 Cannot decode response"),
])
def test_auth_continuation_errors(line, want):
    d = auth_dialog(lambda ev: ("challenge", b"") if isinstance(ev, Auth) else None)
    assert d.last(b"AUTH LOGIN\r\n") == "334"
    assert d.last(line + b"\r\n") == want
    assert d.last(b"NOOP\r\n") == "250 2.0.0 Ok"       # back in command state


@pytest.mark.parametrize("command,want", [
    (b"AUTH", "501 5.5.4 Syntax: AUTH mechanism"),
    (b"AUTH CRAM-MD5", "535 5.7.8 Error: authentication failed: Invalid authentication mechanism"),
    (b"AUTH PLAIN %%%", "501 5.5.2 Cannot decode response"),
])
def test_auth_command_errors(command, want):
    assert auth_dialog(lambda ev: None).last(command + b"\r\n") == want


def test_auth_in_transaction():
    d = auth_dialog(lambda ev: None)
    d.feed(b"MAIL FROM:<a@x>\r\n")
    assert d.last(b"AUTH PLAIN\r\n") == "503 5.5.1 Error: MAIL transaction in progress"


def test_auth_param_when_auth_offered():
    d = auth_dialog(lambda ev: None)
    d.feed(b"MAIL FROM:<a@x> AUTH=u+2Bv@x\r\n")
    assert d.of(MailFrom)[0].params.auth == "u+v@x"


# -- XCLIENT / XFORWARD ---------------------------------------------------------

def test_xclient_attributes_and_restart():
    d = Dialog(xclient_allowed=True)
    d.feed(b"EHLO c\r\n")
    assert d.last(b"XCLIENT NAME=spike.porcupine.org ADDR=168.100.189.2 LOGIN=u+40x\r\n") \
        == "220 mx.test ESMTP Postfix"
    assert d.of(XClient)[0].attrs == {"NAME": "spike.porcupine.org", "ADDR": "168.100.189.2",
                                      "LOGIN": "u@x"}
    assert d.s.helo_name is None


@pytest.mark.parametrize("command,want", [
    (b"XCLIENT", "501 5.5.4 Syntax: XCLIENT attribute=value..."),
    (b"XCLIENT NAME", "501 5.5.4 Error: attribute=value expected"),
    (b"XCLIENT FOO=bar", "501 5.5.4 Bad XCLIENT attribute name: FOO"),
    (b"XFORWARD IDENT=" + b"x" * 256, "501 5.5.4 Error: attribute value too long"),
    (b"XFORWARD NAME=a+zz", "501 5.5.4 Bad NAME syntax: a+zz"),
    (b"XFORWARD NAME=a ADDR=1.2.3.4", "250 2.0.0 Ok"),
])
def test_x_command_errors(command, want):
    d = Dialog(xclient_allowed=True, xforward_allowed=True)
    assert d.last(command + b"\r\n") == want


# -- long command lines -----------------------------------------------------------

def test_long_command_line_is_truncated_and_rest_skipped():
    d = Dialog(line_length_limit=20, smtpd_forbid_unauth_pipelining=False)
    got = d.feed(b"NOOP " + b"x" * 100, b"y" * 50 + b"\r\nNOOP\r\n")
    assert got == "250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n", got


def test_rset_event_aborts_message():
    d = ready()
    d.feed(b"DATA\r\n", b"Subject: x\r\n")
    # no RSET possible inside DATA; after an aborted DATA (size) and RSET:
    d.feed(b".\r\n", b"RSET\r\n")
    assert d.of(Rset)


def test_connection_lost_in_data():
    d = ready()
    d.feed(b"DATA\r\n", b"partial")
    assert d.s.connection_lost() == [MessageAborted("lost")]
    assert d.s.where == "DATA"


def test_limits_validation():
    with pytest.raises(ValueError):
        SmtpdLimits(smtpd_forbid_bare_newline="maybe")
    assert SmtpdLimits(smtpd_forbid_bare_newline="yes").bare_newline_mode == "normalize"


def test_auth_failed_counter_and_stats():
    d = auth_dialog(lambda ev: replies.auth_failed() if isinstance(ev, Auth) else None)
    d.feed(b"AUTH PLAIN AHUAcA==\r\n", b"QUIT\r\n")
    assert d.s.command_stats() == "ehlo=1 auth=0/1 quit=1 commands=2/3"
