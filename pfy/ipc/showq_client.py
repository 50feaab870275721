"""The showq protocol, its client, and Postfix's two queue listing formats.

Postfix 3.x's showq(8) sends an attribute stream that postqueue(1) turns
into text (showq_compat.c: mailq) or JSON (showq_json.c: postqueue -j).
pfy does the same over pfy.ipc.attr: per message one ShowqMessage frame,
then one ShowqRecipient frame per recipient, then ShowqMessageEnd; after
the last message, ShowqDone.  Recipients stream one frame each, so a
message with 100,000 recipients costs the client no more memory than one.

The formatters are sans-I/O over that event stream: they take an iterable
of the frame objects and a write(str) callable, so a unit test feeds them
literal events and compares text byte for byte with Postfix's output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from pfy.ipc.attr import protocol

__all__ = ["PROTOCOL", "ShowqMessage", "ShowqRecipient", "ShowqMessageEnd",
           "ShowqDone", "EVENT_TYPES", "read_events", "format_compat",
           "format_json", "json_quote", "ShowqFormatError"]

PROTOCOL = "showq_protocol"


@protocol(PROTOCOL)
@dataclass(frozen=True)
class ShowqMessage:
    """One queue file's heading (Postfix: MAIL_ATTR_QUEUE ... SENDER)."""
    queue_name: str
    queue_id: str
    arrival_time: int           # seconds since the epoch
    message_size: int
    forced_expire: bool
    sender: str                 # external (quoted) form, MAILER-DAEMON for <>


@protocol(PROTOCOL)
@dataclass(frozen=True)
class ShowqRecipient:
    address: str
    reason: str                 # "" = no delay reason known


@protocol(PROTOCOL)
@dataclass(frozen=True)
class ShowqMessageEnd:
    pass


@protocol(PROTOCOL)
@dataclass(frozen=True)
class ShowqDone:
    pass


EVENT_TYPES = (ShowqMessage, ShowqRecipient, ShowqMessageEnd, ShowqDone)


class ShowqFormatError(Exception):
    """Events out of order: Postfix says "malformed showq server response"."""


def read_events(conn) -> Iterator:
    """Events from an AttrConnection until (not including) ShowqDone."""
    while True:
        ev = conn.receive(EVENT_TYPES)
        if isinstance(ev, ShowqDone):
            return
        yield ev


# Postfix showq_compat.c: the historical short-ID layout is kept even though
# large inode numbers overflow it, because scripts parse this output.
_S_STRING = "%-11s %7s %-20s %s\n"
_S_SENDER = "%-11s %7d %20.20s %s\n"
_S_HEADINGS = ("-Queue ID-", "--Size--", "----Arrival Time----",
               "-Sender/Recipient-------")
_L_STRING = "%-17s %8s %-19s %s\n"
_L_SENDER = "%-17s %8d %19.19s %s\n"
_L_HEADINGS = ("----Queue ID-----", "--Size--", "---Arrival Time----",
               "--Sender/Recipient------")
# A reason line is right-aligned in 78 columns: "(" + reason + ")" padded on
# the left to 76 characters of reason (showq_compat.c).
_REASON_WIDTH = 76


def _asctime(t: int) -> str:
    """C's asctime(localtime(t)), newline included ("%20.20s" cuts it)."""
    return time.asctime(time.localtime(t)) + "\n"


def format_compat(events: Iterable, write: Callable[[str], None],
                  long_ids: bool = False) -> None:
    """The sendmail-style listing of ``postqueue -p`` / mailq."""
    string_fmt, sender_fmt, headings = ((_L_STRING, _L_SENDER, _L_HEADINGS)
                                        if long_ids else
                                        (_S_STRING, _S_SENDER, _S_HEADINGS))
    file_count = 0
    queue_size = 0
    in_message = False
    saved_reason = ""
    for ev in events:
        if isinstance(ev, ShowqMessage):
            if in_message:
                raise ShowqFormatError("message inside message")
            write("\n" if file_count else string_fmt % headings)
            status = ev.queue_id
            if ev.queue_name == "active":
                status += "*"
            elif ev.queue_name == "hold":
                status += "!"
            if ev.forced_expire:
                status += "#"
            write(sender_fmt % (status, ev.message_size,
                                _asctime(ev.arrival_time), ev.sender))
            queue_size += ev.message_size
            file_count += 1
            in_message = True
            saved_reason = ""
        elif isinstance(ev, ShowqRecipient):
            if not in_message:
                raise ShowqFormatError("recipient outside a message")
            # A "(reason)" line only when the reason changes; a recipient
            # without reason after one with a reason gets "(reason
            # unavailable)", as Postfix 3.x.
            if ev.reason != saved_reason:
                saved_reason = ev.reason
                show = saved_reason or "reason unavailable"
                write(" " * max(0, _REASON_WIDTH - len(show)) + f"({show})\n")
            write(string_fmt % ("", "", "", ev.address))
        elif isinstance(ev, ShowqMessageEnd):
            if not in_message:
                raise ShowqFormatError("message end outside a message")
            in_message = False
        else:
            raise ShowqFormatError(f"unexpected event {type(ev).__name__}")
    if in_message:
        raise ShowqFormatError("listing ends inside a message")
    if file_count == 0:
        write("Mail queue is empty\n")
    else:
        write("\n-- %d Kbytes in %d Request%s.\n"
              % (queue_size // 1024, file_count, "" if file_count == 1 else "s"))


_JSON_SHORT = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\\": "\\\\", '"': '\\"'}


def json_quote(text: str) -> str:
    """Postfix's json_quote(): short escapes for common controls, \\u00XX
    for other controls (DEL included), and nothing else escaped."""
    out = []
    for ch in text:
        if ch in _JSON_SHORT:
            out.append(_JSON_SHORT[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04X" % ord(ch))
        elif 0xD800 <= ord(ch) <= 0xDFFF:       # undecodable byte: printable() '?'
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def format_json(events: Iterable, write: Callable[[str], None]) -> None:
    """``postqueue -j``: one JSON object a line, Postfix's member order and
    spacing (showq_json.c), so line-oriented consumers see the same bytes."""
    rcpt_count = -1
    for ev in events:
        if isinstance(ev, ShowqMessage):
            if rcpt_count >= 0:
                raise ShowqFormatError("message inside message")
            write('{"queue_name": "%s", "queue_id": "%s", "arrival_time": %d, '
                  '"message_size": %d, "forced_expire": %s, "sender": "%s", '
                  '"recipients": ['
                  % (json_quote(ev.queue_name), json_quote(ev.queue_id),
                     ev.arrival_time, ev.message_size,
                     "true" if ev.forced_expire else "false",
                     json_quote(ev.sender)))
            rcpt_count = 0
        elif isinstance(ev, ShowqRecipient):
            if rcpt_count < 0:
                raise ShowqFormatError("recipient outside a message")
            sep = ", " if rcpt_count else ""
            reason = (', "delay_reason": "%s"' % json_quote(ev.reason)
                      if ev.reason else "")
            write('%s{"address": "%s"%s}' % (sep, json_quote(ev.address), reason))
            rcpt_count += 1
        elif isinstance(ev, ShowqMessageEnd):
            if rcpt_count < 0:
                raise ShowqFormatError("message end outside a message")
            write("]}\n")
            rcpt_count = -1
        else:
            raise ShowqFormatError(f"unexpected event {type(ev).__name__}")
    if rcpt_count >= 0:
        raise ShowqFormatError("listing ends inside a message")
