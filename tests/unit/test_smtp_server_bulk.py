"""The DATA fast path (SmtpServer._data_bulk) decides nothing on its own:
for any content, any read size and every smtpd_forbid_bare_newline mode,
the session gives the same replies and the same content, line for line,
as the per-line path alone."""

import random

import pytest
from test_smtp_server_dialog import ready

from pfy.smtp.server import MessageLines, SmtpServer

LIMIT = 100                 # line_length_limit, small so that lines cross it

BODIES = {
    "plain": b"Subject: s\r\n\r\n" + b"".join(b"line %d\r\n" % i for i in range(300)),
    "dots": b"Subject: d\r\n\r\n..one\r\nmid\r\n.\r\n" + b"..\r\n.x\r\nlast\r\n",
    "bare-cr": b"a\rb\r\nplain\r\nc\r\r\nd\r\n",
    "bare-lf": b"one\ntwo\r\n.\nthree\r\n\n.\r\nfour\r\n",
    "lf-dot-lf": b"x\r\n\n.\n\r\nMAIL FROM:<evil@x.test>\r\ny\r\n",
    "long": (b"s" * (LIMIT - 2) + b"\r\n" + b"t" * (LIMIT - 1) + b"\r\n"
             + b"u" * LIMIT + b"\r\n" + b"v" * (LIMIT * 3 + 7) + b"\r\n" + b"w\r\n"),
    "cr-at-cut": b"p" * (LIMIT - 1) + b"\r\n" + b"q" * (LIMIT - 2) + b"\r\r\n",
    "empty": b"",
    "only-empty-lines": b"\r\n" * 50,
}


def _session(body: bytes, reads: list[int], bulk: bool, monkeypatch, **limits):
    if not bulk:
        monkeypatch.setattr(SmtpServer, "_data_bulk", lambda self: False)
    d = ready(line_length_limit=LIMIT, **limits)
    d.feed(b"DATA\r\n")
    data = body + b".\r\nRSET\r\nQUIT\r\n"
    pos = 0
    for n in reads:
        if pos >= len(data):
            break
        d.feed(data[pos:pos + n])
        pos += n
    if pos < len(data):
        d.feed(data[pos:])
    monkeypatch.undo()
    return d


@pytest.mark.parametrize("mode", ["normalize", "reject", "no"])
@pytest.mark.parametrize("name", sorted(BODIES))
def test_same_events_as_line_by_line(name, mode, monkeypatch):
    body = BODIES[name]
    rng = random.Random(name + mode)
    for reads in ([1 << 20], [1] * 40, [rng.randint(1, 300) for _ in range(60)]):
        want = _session(body, reads, False, monkeypatch, smtpd_forbid_bare_newline=mode)
        got = _session(body, reads, True, monkeypatch, smtpd_forbid_bare_newline=mode)
        assert got.out == want.out
        assert got.flat_events() == want.flat_events()


@pytest.mark.parametrize("size_limit", [50, 1000, 2600, 2700])
def test_size_limit_same_as_line_by_line(size_limit, monkeypatch):
    body = BODIES["plain"]
    for reads in ([1 << 20], [512] * 20):
        want = _session(body, reads, False, monkeypatch, message_size_limit=size_limit)
        got = _session(body, reads, True, monkeypatch, message_size_limit=size_limit)
        assert got.out == want.out
        assert got.flat_events() == want.flat_events()


def test_plain_content_comes_in_runs(monkeypatch):
    """The comparisons above only mean something if the fast path runs."""
    d = _session(BODIES["plain"], [1 << 20], True, monkeypatch)
    runs = [e for e in d.events if isinstance(e, MessageLines)]
    assert len(runs) == 1 and len(runs[0].lines) == 302
