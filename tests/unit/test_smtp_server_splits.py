"""Property: however the network splits a session, the events are the same."""

import random

from test_smtp_server_dialog import Dialog

from pfy.smtp.server import MessageLines

SESSION = (b"EHLO c.test\r\n", b"MAIL FROM:<a@x> SIZE=100 BODY=8BITMIME\r\n",
           b"RCPT TO:<b@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40y\r\n",
           b"RCPT TO:<c@y>\r\n", b"DATA\r\n",
           b"Subject: t\r\n\r\n..dot\r\nbare\nlf\r\n" + b"z" * 5000 + b"\r\n\xc3\xa9\0nul\r\n.\r\n",
           b"MAIL FROM:<>\r\n", b"RCPT TO:<d@y>\r\n",
           b"BDAT 7\r\nab\r\ncd\r", b"BDAT 3 LAST\r\n\nef", b"QUIT\r\n")


def run(split_points_for):
    """Feed each step (a command waits for its reply, as a client does),
    cutting each step's bytes at the given points."""
    d = Dialog()
    for step in SESSION:
        cuts = sorted(split_points_for(step))
        parts, last = [], 0
        for c in cuts:
            parts.append(step[last:c])
            last = c
        parts.append(step[last:])
        d.feed(*[p for p in parts if p])
    return d


def test_random_splits_give_same_events():
    whole = run(lambda step: [])
    assert whole.s.closed and whole.s.command_stats() == \
        "ehlo=1 mail=2 rcpt=3 data=1 bdat=2 quit=1 commands=10"
    rng = random.Random(5321)
    for _ in range(200):
        d = run(lambda step: rng.sample(range(1, len(step)), min(len(step) - 1, rng.randint(0, 6))))
        assert d.flat_events() == whole.flat_events(), "events differ for a split session"
        assert d.out == whole.out


def test_byte_at_a_time():
    whole = run(lambda step: [])
    d = run(lambda step: range(1, len(step)))
    assert d.flat_events() == whole.flat_events() and d.out == whole.out


def test_large_message_keeps_buffers_bounded():
    """Content leaves as events as it arrives: the core never holds more
    than one network read plus one line (a 50 MB message is the same loop)."""
    from test_smtp_server_dialog import ready
    d = ready(message_size_limit=0)
    d.feed(b"DATA\r\n")
    line = b"x" * 76 + b"\r\n"
    chunk = line * 800                      # ~62 KB per read
    biggest = 0
    s = d.s
    for _ in range(64):                     # ~4 MB
        s.receive(chunk)
        evs = s.events()
        biggest = max(biggest, len(s._buf))
        assert sum(len(e.lines) if isinstance(e, MessageLines) else 1 for e in evs) == 800
        assert len(evs) == 1                # plain lines: one event per read
    s.receive(b".\r\n")
    assert len(s.events()) == 1             # MessageEnd
    assert biggest < len(chunk) + 2048
