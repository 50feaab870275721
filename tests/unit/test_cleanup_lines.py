"""cleanup's batch path: a run of lines sent as one REC_LINES record gives
the same queue file content, size, status and 8-bit flag as the same lines
sent one N record each, whatever the content holds (headers, MIME
boundaries, nested messages, body_checks, long lines, 8-bit, the size
limit)."""

import logging

import pytest

from pfy.daemons.cleanup.core import FLAG_MASK_EXTERNAL, Cleanup, Settings
from pfy.ipc.attr import REC_LINES
from pfy.queue.queue_file import QueueFileReader, QueueFileWriter
from pfy.queue.record import REC_END, REC_FROM, REC_MESG, REC_NORM, REC_RCPT, REC_TIME, REC_XTRA
from pfy.tables import open_table
from pfy.tables.search import Maps

LOG = logging.getLogger("test_cleanup_lines")

MULTIPART = [
    b"From: a@x.test", b"To: b@y.test", b"Subject: parts",
    b"Content-Type: multipart/mixed; boundary=\"BB\"", b"", b"preamble",
    b"--BB", b"Content-Type: text/plain", b"", b"first part", b"-- not a boundary", b"",
    b"--BB", b"Content-Type: message/rfc822", b"",
    b"Subject: nested", b"X-Nested: yes", b"", b"nested body", b"forbidden line",
    b"--BB--", b"epilogue \xc3\xa9",
]
PLAIN = [b"Subject: plain", b"", *[b"line %d " % i + b"x" * (i % 90) for i in range(400)]]
LONG = [b"Subject: long", b"", b"a" * 5000, b"b" * 2048, b"c" * 2049, b"end"]
NO_HEADERS = [b"just a body line", b"another"]
LEADING_BLANK = [b"", b"body after an empty first line"]


def _run(tmp_path, name, lines, batched, split, settings):
    folder = tmp_path / name
    folder.mkdir()
    final = {}
    w = QueueFileWriter(str(folder), lambda qid: final.setdefault("p", str(folder / qid)),
                        fsync=False)
    core = Cleanup(settings, w, rewrite=lambda ctx, addr: addr, is_local=lambda d: False,
                   log=LOG, flags=FLAG_MASK_EXTERNAL)
    core.feed(REC_TIME, b"1700000000 0")
    core.feed(REC_FROM, b"a@x.test")
    core.feed(REC_RCPT, b"b@y.test")
    core.feed(REC_MESG, b"")
    if batched:
        for start in range(0, len(lines), split):
            core.feed(REC_LINES, b"\n".join(lines[start:start + split]))
    else:
        for line in lines:
            core.feed(REC_NORM, line)
    core.feed(REC_XTRA, b"")
    core.feed(REC_END, b"")
    result = core.finish()
    content = None
    if not result.status and not result.discarded:
        with QueueFileReader(final["p"]) as r:
            # The added Message-Id names the queue ID, which differs.
            content = [rec for rec in r.content_records() if not rec[1].startswith(b"Message-Id:")]
            size = r.read_envelope().content_size
    else:
        size = None
    return result.status, result.reason, core.eight_bit, core.size, content, size


@pytest.mark.parametrize("lines", [MULTIPART, PLAIN, LONG, NO_HEADERS, LEADING_BLANK],
                         ids=["multipart", "plain", "long", "no-headers", "leading-blank"])
@pytest.mark.parametrize("split", [1, 3, 7, 1000])
@pytest.mark.parametrize("checks", [False, True])
def test_lines_record_matches_line_records(tmp_path, lines, split, checks):
    settings = Settings(myhostname="mx.test")
    if checks:
        rx = tmp_path / "body_checks"
        rx.write_text("/^forbidden/ REPLACE replaced\n/^line 399/ IGNORE\n")
        settings.body_checks = Maps([open_table(f"regexp:{rx}")])
        settings.body_checks_size_limit = 2000
    one = _run(tmp_path, "one", lines, False, split, settings)
    many = _run(tmp_path, "many", lines, True, split, settings)
    assert many == one


@pytest.mark.parametrize("limit", [500, 5000, 30000])
def test_size_limit_same_verdict(tmp_path, limit):
    settings = Settings(myhostname="mx.test", message_size_limit=limit)
    one = _run(tmp_path, "one", PLAIN, False, 50, settings)
    many = _run(tmp_path, "many", PLAIN, True, 50, settings)
    assert many == one


def test_lines_before_content_is_a_protocol_error(tmp_path):
    w = QueueFileWriter(str(tmp_path), lambda qid: str(tmp_path / qid), fsync=False)
    core = Cleanup(Settings(), w, rewrite=lambda ctx, addr: addr, is_local=lambda d: False,
                   log=LOG)
    core.feed(REC_FROM, b"a@x.test")
    core.feed(REC_LINES, b"Subject: early\n\nbody")
    assert core.status & 1                  # STAT_BAD


def test_plain_body_takes_the_batch_path(tmp_path, monkeypatch):
    """The comparison above is only worth something if the batch path runs."""
    runs = []
    orig = QueueFileWriter.content_block
    monkeypatch.setattr(QueueFileWriter, "content_block",
                        lambda self, block, limit=2048: (runs.append(block.count(b"\n") + 1),
                                                         orig(self, block, limit))[1])
    _run(tmp_path, "many", PLAIN, True, 1000, Settings(myhostname="mx.test"))
    assert sum(runs) >= 399 and len(runs) == 1
    runs.clear()
    _run(tmp_path, "mp", MULTIPART, True, 1000, Settings(myhostname="mx.test"))
    assert runs                              # between the boundaries
