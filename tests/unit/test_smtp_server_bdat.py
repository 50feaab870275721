"""CHUNKING (RFC 3030): BDAT sequences, mixing with DATA, limits."""

import pytest

from pfy.smtp import replies
from pfy.smtp.server import DataStart, MessageAborted, MessageEnd, MessageLine
from test_smtp_server_dialog import Dialog, ready


def test_two_chunks_then_last():
    d = ready()
    assert d.feed(b"BDAT 12\r\nSubject: x\r\n") == "250 2.0.0 Ok: 12 bytes\r\n"
    assert d.feed(b"BDAT 6 LAST\r\n\r\nhi\r\n") == "250 2.0.0 Ok: 18 bytes queued as QID\r\n"
    assert d.content() == b"Subject: x\r\n\r\nhi\r\n"
    assert d.of(MessageEnd)[0].size == 18
    assert len(d.of(DataStart)) == 1            # data restrictions once per message


def test_dots_are_not_special_in_bdat():
    d = ready()
    d.feed(b"BDAT 8 LAST\r\n.\r\n..\r\n.")
    assert d.content() == b".\r\n..\r\n.\r\n"


def test_bdat_zero_last():
    d = ready()
    d.feed(b"BDAT 5\r\nab\r\nc")
    # Postfix counts the unterminated last line with its CRLF: 7 bytes.
    assert d.feed(b"BDAT 0 LAST\r\n") == "250 2.0.0 Ok: 7 bytes queued as QID\r\n"
    assert d.content() == b"ab\r\nc\r\n"


def test_crlf_split_across_chunks():
    d = ready()
    d.feed(b"BDAT 3\r\nab\r", b"BDAT 1 LAST\r\n\n")
    assert [e.data for e in d.of(MessageLine)] == [b"ab"]


@pytest.mark.parametrize("command", [b"BDAT", b"BDAT x", b"BDAT 1 FIRST", b"BDAT -1", b"BDAT 1 LAST x"])
def test_bad_bdat_syntax_hangs_up(command):
    d = ready()
    assert d.last(command + b"\r\n") == "521 5.5.4 Syntax: BDAT count [LAST]"
    assert d.s.closed


@pytest.mark.parametrize("setup,want", [
    ([], "503 5.5.1 Error: need RCPT command"),
    ([b"MAIL FROM:<a@x>\r\n"], "554 5.5.1 Error: no valid recipients"),
])
def test_bdat_without_transaction_skips_chunk(setup, want):
    d = Dialog()
    d.feed(b"EHLO c\r\n", *setup)
    assert d.last(b"BDAT 6\r\nNOOP\r\n") == want      # the 5 bytes are data, not a command
    assert d.last(b"NOOP\r\n") == "250 2.0.0 Ok"


def test_data_after_bdat():
    d = ready()
    d.feed(b"BDAT 3\r\nabc")
    assert d.last(b"DATA\r\n") == "503 5.5.1 Error: DATA after BDAT"


def test_bdat_size_limit():
    d = ready(message_size_limit=10)
    # Postfix refuses a chunk by its announced size, before reading it.
    got = d.feed(b"BDAT 20\r\n" + b"x" * 18 + b"\r\n")
    assert got == "552 5.3.4 Chunk exceeds message size limit\r\n", got
    assert MessageAborted("size") in d.events
    # later chunks of the failed transaction get the same answer, LAST ends it
    assert d.last(b"BDAT 2 LAST\r\nab") == "552 5.3.4 Chunk exceeds message size limit"
    assert d.last(b"MAIL FROM:<a@x>\r\n") == "250 2.1.0 Ok"


def test_bdat_chunks_add_up_over_the_limit():
    d = ready(message_size_limit=10)
    assert d.feed(b"BDAT 6\r\nabcd\r\n") == "250 2.0.0 Ok: 6 bytes\r\n"
    assert d.last(b"BDAT 6 LAST\r\nefgh\r\n") == "552 5.3.4 Chunk exceeds message size limit"
    assert not d.of(MessageEnd)


def test_bdat_content_over_the_limit():
    # Within the limit as announced, over it once the last line gets its CRLF.
    d = ready(message_size_limit=10)
    assert d.last(b"BDAT 10 LAST\r\nabcdefghij") == "552 5.3.4 Error: message file too big"


def test_bdat_rejected_by_data_restrictions():
    d = ready(decide=lambda ev: replies.parse_reply("554 5.7.1 Error: no") if isinstance(ev, DataStart) else None)
    assert d.last(b"BDAT 3\r\nabc") == "554 5.7.1 Error: no"
    assert d.last(b"BDAT 3 LAST\r\nabc") == "554 5.7.1 Error: no"
    assert not d.of(MessageLine)


def test_chunking_discarded():
    d = ready(smtpd_discard_ehlo_keywords=frozenset({"chunking"}))
    assert d.last(b"BDAT 3 LAST\r\nabc") == "502 5.5.1 Error: command not implemented"
    assert d.last(b"NOOP\r\n") == "250 2.0.0 Ok"


def test_bare_lf_in_bdat_reject_mode():
    d = ready(smtpd_forbid_bare_newline="reject")
    assert d.last(b"BDAT 5 LAST\r\na\nb\r\n") == "550 5.5.2 mx.test Error: bare <LF> received"


def test_long_lines_split_in_bdat():
    d = ready(line_length_limit=30)
    d.feed(b"BDAT 77 LAST\r\n" + b"y" * 75 + b"\r\n")
    got = [(e.data, e.partial) for e in d.of(MessageLine)]
    assert got == [(b"y" * 30, True), (b"y" * 30, True), (b"y" * 15, False)], got
    assert d.s.command_stats() == "ehlo=1 mail=1 rcpt=1 bdat=1 commands=4"
