"""Test helper for the sans-I/O SMTP server (not a test module itself):
a Dialog drives SmtpServer the way the smtpd daemon will."""

from __future__ import annotations

import dataclasses

from pfy.smtp import replies
from pfy.smtp.server import MessageEnd, SmtpdLimits, SmtpServer

LIMIT_FIELDS = {f.name for f in dataclasses.fields(SmtpdLimits)}


class Dialog:
    def __init__(self, decide=None, greet=True, **kw):
        lim = {k: v for k, v in kw.items() if k in LIMIT_FIELDS}
        lim.setdefault("myhostname", "mx.test")
        lim.setdefault("smtpd_banner", "mx.test ESMTP Postfix")
        sess = {k: v for k, v in kw.items() if k not in LIMIT_FIELDS}
        self.s = SmtpServer(SmtpdLimits(**lim), **sess)
        self.decide = decide or (lambda ev: None)
        self.events = []
        self.out = b""
        if greet:
            self.out += self.s.greet()

    def _answer(self, ev):
        ans = self.decide(ev)
        if isinstance(ans, tuple) and ans[0] == "challenge":
            return self.s.auth_challenge(ans[1])
        if ans is None and isinstance(ev, MessageEnd):
            ans = replies.queued("QID")
        return self.s.send(ans)

    def feed(self, *chunks: bytes) -> str:
        """Feed each chunk, run to quiescence; return the replies written."""
        start = len(self.out)
        for data in chunks:
            self.s.receive(data)
            while (evs := self.s.events()):
                for ev in evs:
                    self.events.append(ev)
                    if ev.needs_reply:
                        self.out += self._answer(ev)
            self.out += self.s.data_to_send()
        return self.out[start:].decode("utf-8", "replace")

    def last(self, *chunks: bytes) -> str:
        """The last reply line written for these chunks."""
        text = self.feed(*chunks)
        lines = [ln for ln in text.split("\r\n") if ln]
        return lines[-1] if lines else ""

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]

    def flat_events(self) -> list:
        """The events with each MessageLines as the MessageLine events it
        stands for: how many lines come at once depends on the reads."""
        from pfy.smtp.server import MessageLine, MessageLines
        out = []
        for e in self.events:
            if isinstance(e, MessageLines):
                out.extend(MessageLine(line, False) for line in e.lines)
            else:
                out.append(e)
        return out

    def content(self) -> bytes:
        """The content as cleanup gets it: every MessageLine and every
        line of a MessageLines, in order."""
        from pfy.smtp.server import MessageLine, MessageLines
        out = b""
        for e in self.events:
            if isinstance(e, MessageLine):
                out += e.data + (b"" if e.partial else b"\r\n")
            elif isinstance(e, MessageLines):
                out += b"".join(line + b"\r\n" for line in e.lines)
        return out


def ready(**kw) -> Dialog:
    """A session after EHLO, MAIL and RCPT."""
    d = Dialog(**kw)
    d.feed(b"EHLO c.test\r\n")
    d.feed(b"MAIL FROM:<a@x.test>\r\n")
    d.feed(b"RCPT TO:<b@y.test>\r\n")
    return d


# The helper's own checks: a whole session reads like the Postfix dialogue.

def test_plain_session_reads_like_postfix():
    d = Dialog()
    assert d.out == b"220 mx.test ESMTP Postfix\r\n"
    got = d.feed(b"EHLO c.test\r\n")
    want = ("250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-VRFY\r\n"
            "250-ETRN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n"
            "250-SMTPUTF8\r\n250 CHUNKING\r\n")
    assert got == want, f"got {got!r} want {want!r}"
    assert d.feed(b"MAIL FROM:<a@x>\r\n") == "250 2.1.0 Ok\r\n"
    assert d.feed(b"RCPT TO:<b@y>\r\n") == "250 2.1.5 Ok\r\n"
    assert d.feed(b"DATA\r\n") == "354 End data with <CR><LF>.<CR><LF>\r\n"
    assert d.feed(b"Subject: hi\r\n\r\nbody\r\n.\r\n") == "250 2.0.0 Ok: queued as QID\r\n"
    assert d.feed(b"QUIT\r\n") == "221 2.0.0 Bye\r\n"
    assert d.s.closed
    assert d.content() == b"Subject: hi\r\n\r\nbody\r\n"
    assert d.s.command_stats() == "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"
