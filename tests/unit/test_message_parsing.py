"""pfy.message: header classes, MIME walking, checks actions."""

from pfy.message.checks import dsn_reply, parse_action
from pfy.message.headers import DROP, RECIP, SENDER, header_info, is_header
from pfy.message.mime import BODY, MULTIPART, NESTED, PRIMARY, ContentWalker


def test_header_classes():
    assert header_info("from").flags & SENDER
    assert header_info("TO").flags & RECIP
    assert header_info("Return-Path").flags & DROP
    assert header_info("X-Whatever") is None
    assert is_header("Subject: x") and is_header("Subject : x")
    assert not is_header(" folded") and not is_header("no colon") and not is_header(": x")


def walk(lines, **kw):
    w = ContentWalker(**kw)
    events = []
    for line in lines:
        events += w.feed(line)
    return events + w.end()


def test_mime_structure():
    msg = ["Subject: a", " folded", "Content-Type: multipart/mixed;", ' boundary="XX"', "",
           "preamble", "--XX", "Content-Type: text/plain", "", "hello", "--XX",
           "Content-Type: message/rfc822", "", "Subject: inner", "", "inner body", "--XX--", "end"]
    ev = walk(msg)
    headers = [(k, t) for e, k, t in ev if e == "header"]
    assert headers[0] == (PRIMARY, "Subject: a\n folded")
    assert (MULTIPART, "Content-Type: text/plain") in headers
    assert (NESTED, "Subject: inner") in headers
    body = [t for e, k, t in ev if e == "body"]
    assert "hello" in body and "inner body" in body and body[-1] == "end"


def test_header_size_limit_truncates():
    w = ContentWalker(header_size_limit=20)
    ev = w.feed("Subject: " + "x" * 50) + w.feed("") + w.end()
    assert len(ev[0][2]) < 20 and "header too long" in w.errors


def test_no_mime_processing():
    ev = walk(["Content-Type: multipart/mixed; boundary=b", "", "--b", "X-Part: 1"], mime=False)
    assert [k for e, k, t in ev if e == "header"] == [PRIMARY]


def test_actions():
    a = parse_action("reject  go away")
    assert (a.verb, a.text) == ("REJECT", "go away")
    assert parse_action("BOGUS x").verb == ""
    assert dsn_reply("") == "5.7.1 message content rejected"
    assert dsn_reply("4.7.0 later") == "4.7.0 later"
    assert dsn_reply("spam") == "5.7.1 spam"
