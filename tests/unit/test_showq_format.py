"""showq's listing: Postfix's mailq layout and postqueue -j JSON, from
literal events (golden text derived from showq_compat.c / showq_json.c and
checked against Debian's postqueue on the same queue), and the queue scan
that produces the events."""

import os
import time

import pytest

from pfy.daemons.showq import read_defer_log, scan_queue
from pfy.ipc.attr import decode_attrs, encode_attrs
from pfy.ipc.showq_client import (
    EVENT_TYPES, ShowqFormatError, ShowqMessage, ShowqMessageEnd,
    ShowqRecipient, format_compat, format_json,
)
from pfy.queue import Queue

T = 1700000000


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def text(events, **kw):
    out = []
    format_compat(events, out.append, **kw)
    return "".join(out)


def json_text(events):
    out = []
    format_json(events, out.append)
    return "".join(out)


MSGS = [
    ShowqMessage("active", "46A7320E101", T, 21, False, '"a b"@q.r'),
    ShowqRecipient("dave@q.r", ""), ShowqMessageEnd(),
    ShowqMessage("deferred", "434BD20E0B1", T, 2100, False, "alice@example.com"),
    ShowqRecipient("bob@example.net", "connect to example.net[1.2.3.4]:25: Connection refused"),
    ShowqRecipient("carl@example.net", "connect to example.net[1.2.3.4]:25: Connection refused"),
    ShowqRecipient("carol@example.org", ""), ShowqMessageEnd(),
    ShowqMessage("hold", "4541020E0F3", T, 1000, True, "MAILER-DAEMON"),
    ShowqRecipient("x@y.z", ""), ShowqMessageEnd(),
]

GOLDEN = """\
-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
46A7320E101*      21 Tue Nov 14 22:13:20  "a b"@q.r
                                         dave@q.r

434BD20E0B1    2100 Tue Nov 14 22:13:20  alice@example.com
                      (connect to example.net[1.2.3.4]:25: Connection refused)
                                         bob@example.net
                                         carl@example.net
                                                          (reason unavailable)
                                         carol@example.org

4541020E0F3!#    1000 Tue Nov 14 22:13:20  MAILER-DAEMON
                                         x@y.z

-- 3 Kbytes in 3 Requests.
"""


def test_mailq_layout_golden():
    got = text(MSGS)
    assert got == GOLDEN, f"got:\n{got}\nwant:\n{GOLDEN}"


def test_empty_queue():
    assert text([]) == "Mail queue is empty\n"
    assert json_text([]) == ""


def test_one_request_singular_and_long_reason_unpadded():
    reason = "x" * 90
    got = text([ShowqMessage("deferred", "ABCDEF123", T, 5000, False, "a@b"),
                ShowqRecipient("c@d", reason), ShowqMessageEnd()])
    assert f"\n({reason})\n" in got
    assert got.endswith("\n-- 4 Kbytes in 1 Request.\n")


def test_long_queue_id_layout():
    got = text([ShowqMessage("active", "4VbH8x0Y8Hz1Nk", T, 12, False, "a@b"),
                ShowqRecipient("c@d", ""), ShowqMessageEnd()], long_ids=True)
    lines = got.splitlines()
    assert lines[0] == ("----Queue ID----- --Size-- ---Arrival Time---- "
                        "--Sender/Recipient------")
    assert lines[1] == "4VbH8x0Y8Hz1Nk*         12 Tue Nov 14 22:13:20 a@b"
    assert lines[2] == " " * 47 + "c@d"


def test_json_lines_golden():
    got = json_text(MSGS).splitlines()
    assert got[0] == ('{"queue_name": "active", "queue_id": "46A7320E101", '
                      '"arrival_time": 1700000000, "message_size": 21, '
                      '"forced_expire": false, "sender": "\\"a b\\"@q.r", '
                      '"recipients": [{"address": "dave@q.r"}]}')
    assert got[1].endswith('"recipients": [{"address": "bob@example.net", '
                           '"delay_reason": "connect to example.net[1.2.3.4]:25: '
                           'Connection refused"}, {"address": "carl@example.net", '
                           '"delay_reason": "connect to example.net[1.2.3.4]:25: '
                           'Connection refused"}, {"address": "carol@example.org"}]}')
    assert '"forced_expire": true' in got[2]


def test_json_quoting_controls():
    got = json_text([ShowqMessage("hold", "ABCDEF1", T, 1, False, "a\tb\x01\x7f\\"),
                     ShowqMessageEnd()])
    assert '"sender": "a\\tb\\u0001\\u007F\\\\"' in got


@pytest.mark.parametrize("events", [
    [ShowqRecipient("a@b", "")],
    [ShowqMessage("hold", "ABCDEF1", T, 1, False, "a"), ShowqMessage("hold", "ABCDEF2", T, 1, False, "a")],
    [ShowqMessage("hold", "ABCDEF1", T, 1, False, "a")],
    [ShowqMessageEnd()],
])
def test_malformed_event_stream(events):
    with pytest.raises(ShowqFormatError):
        text(events)
    with pytest.raises(ShowqFormatError):
        json_text(events)


def test_events_round_trip_the_wire():
    for ev in MSGS:
        frame = encode_attrs(ev)
        body = frame[4:]
        assert decode_attrs(body[1:], EVENT_TYPES) == ev


# -- scanning the queue ---------------------------------------------------------

def write(q, queue, sender, rcpts, done=()):
    with q.create(queue) as w:
        w.time(T + 0.25)
        w.sender(sender)
        offs = [w.recipient(r) for r in rcpts]
        w.begin_content()
        w.content_line(b"Subject: hi")
        w.content_line(b"")
        w.content_line(b"body")
        w.end_content()
        qid = w.commit()
    for i in done:
        fd = os.open(w.path, os.O_RDWR)
        os.pwrite(fd, b"D", offs[i])
        os.close(fd)
    return qid, w.path


def test_scan_queue_order_reasons_done_and_dedup(tmp_path):
    q = Queue(str(tmp_path))
    q.make_dirs()
    a, _ = write(q, "active", "a@x", ["r1@y"])
    d, _ = write(q, "deferred", "", ["r1@y", "r2@y", "r3@y"], done=[2])
    h, _ = write(q, "hold", "h@x", ["r@y"])
    log = q.log_path("defer", d)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "w") as f:
        f.write("recipient=r1@y\noffset=1\nstatus=4.4.1\naction=delayed\n"
                "reason=connect to y[1.2.3.4]:25: Connection refused\n\n")
    evs = list(scan_queue(str(tmp_path), defer_log_of=lambda qid: q.log_path("defer", qid)))
    heads = [e for e in evs if isinstance(e, ShowqMessage)]
    assert [(e.queue_name, e.queue_id) for e in heads] == [
        ("active", a), ("deferred", d), ("hold", h)]
    assert heads[1].sender == "MAILER-DAEMON"
    assert heads[1].arrival_time == T
    assert heads[1].message_size == 21          # content bytes, as Postfix's C record
    i = evs.index(heads[1])
    assert evs[i + 1:i + 4] == [
        ShowqRecipient("r1@y", "connect to y[1.2.3.4]:25: Connection refused"),
        ShowqRecipient("r2@y", ""),             # done r3 is not listed
        ShowqMessageEnd()]


def test_scan_skips_incomplete_and_flags_forced_expire(tmp_path):
    q = Queue(str(tmp_path))
    q.make_dirs()
    _, path = write(q, "deferred", "a@x", ["b@y"])
    os.chmod(path, 0o600)                      # not ready: being written
    assert list(scan_queue(str(tmp_path))) == []
    os.chmod(path, 0o710)                      # postsuper -e/-f mark
    heads = [e for e in scan_queue(str(tmp_path)) if isinstance(e, ShowqMessage)]
    assert heads[0].forced_expire is True


def test_scan_survives_a_truncated_file(tmp_path):
    q = Queue(str(tmp_path))
    q.make_dirs()
    _, path = write(q, "incoming", "a@x", ["b@y"])
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 30)
    warnings = []
    evs = list(scan_queue(str(tmp_path), warn=warnings.append))
    assert isinstance(evs[0], ShowqMessage) and isinstance(evs[-1], ShowqMessageEnd)


def test_read_defer_log_blocks(tmp_path):
    p = tmp_path / "log"
    p.write_text("recipient=a@b\nreason=one\n\nrecipient=c@d\nstatus=4.0.0\nreason=two\n"
                 "\nnonsense line\nreason=no recipient\n\n")
    assert read_defer_log(str(p)) == [("a@b", "one"), ("c@d", "two")]
    assert read_defer_log(str(tmp_path / "missing")) == []
