"""Typed records: the one encoding of queue files and of content on the wire.

A record is Postfix's (global/record.c): one type byte, the payload length
as a little-endian base-128 varint (7 bits a byte, high bit = more), then
the payload.  Using Postfix's exact encoding and record types means Debian's
``postcat`` can read our queue files, and a queue file can be checked
against the reference implementation byte for byte.

Record types are Postfix's (global/rec_type.h); the ones pfy writes are
named below.  The layout of a whole queue file is documented in
pfy/queue/queue_file.py.
"""

from __future__ import annotations

import os

__all__ = [
    "REC_SIZE", "REC_TIME", "REC_CTIME", "REC_FULL", "REC_INSP", "REC_FILT",
    "REC_FROM", "REC_DONE", "REC_RCPT", "REC_ORCP", "REC_DRCP", "REC_WARN",
    "REC_ATTR", "REC_KILL", "REC_RDR", "REC_FLGS", "REC_DELAY", "REC_MESG",
    "REC_CONT", "REC_NORM", "REC_DTXT", "REC_XTRA", "REC_RRTO", "REC_ERTO",
    "REC_PRIO", "REC_PTR", "REC_VERP", "REC_DSN_RET", "REC_DSN_ENVID",
    "REC_DSN_ORCPT", "REC_DSN_NOTIFY", "REC_MILT_COUNT", "REC_END",
    "REC_NAMES", "MAX_RECORD", "RecordError", "encode_record", "RecordReader",
]

# Postfix global/rec_type.h, same letters.
REC_SIZE = ord("C")        # first record: fixed-width sizes, rewritten in place
REC_TIME = ord("T")        # arrival time "sec usec"
REC_CTIME = ord("c")       # create time "sec usec"
REC_FULL = ord("F")        # sender full name
REC_INSP = ord("I")        # inspector transport
REC_FILT = ord("L")        # content filter (same letter as CONT, as Postfix)
REC_FROM = ord("S")        # envelope sender ("" = null sender)
REC_DONE = ord("D")        # recipient already delivered (was R)
REC_RCPT = ord("R")        # recipient still to do
REC_ORCP = ord("O")        # original recipient of the R that follows
REC_DRCP = ord("/")        # cancelled recipient
REC_WARN = ord("W")        # next delay-warning time, fixed width, in place
REC_ATTR = ord("A")        # name=value attribute
REC_KILL = ord("K")        # killed record
REC_RDR = ord(">")         # redirect target
REC_FLGS = ord("f")        # cleanup processing flags
REC_DELAY = ord("d")       # cleanup delay upon arrival
REC_MESG = ord("M")        # start of message content
REC_CONT = ord("L")        # content: a piece of a long line (no newline after)
REC_NORM = ord("N")        # content: a line (newline implied)
REC_DTXT = ord("w")        # padding
REC_XTRA = ord("X")        # start of extracted information
REC_RRTO = ord("r")        # Return-Receipt-To, from headers
REC_ERTO = ord("e")        # Errors-To, from headers
REC_PRIO = ord("P")        # priority
REC_PTR = ord("p")         # pointer record (in-place editing by cleanup)
REC_VERP = ord("V")        # VERP delimiters
REC_DSN_RET = ord("<")     # DSN RET=FULL/HDRS (as the integer flag)
REC_DSN_ENVID = ord("i")   # DSN ENVID
REC_DSN_ORCPT = ord("o")   # DSN ORCPT of the R that follows
REC_DSN_NOTIFY = ord("n")  # DSN NOTIFY flags (integer) of the R that follows
REC_MILT_COUNT = ord("m")  # milter count
REC_END = ord("E")         # terminator

# Names as Postfix's rec_type_name() prints them (postcat -v).
REC_NAMES = {
    REC_SIZE: "message_size", REC_TIME: "message_arrival_time",
    REC_CTIME: "queue_file_create_time", REC_FULL: "sender_fullname",
    REC_INSP: "content_inspector", REC_FILT: "content_filter",
    REC_FROM: "sender", REC_DONE: "done_recipient", REC_RCPT: "recipient",
    REC_ORCP: "original_recipient", REC_DRCP: "canceled_recipient",
    REC_WARN: "warning_message_time", REC_ATTR: "named_attribute",
    REC_KILL: "killed_record", REC_RDR: "redirect_to",
    REC_FLGS: "cleanup_flags", REC_DELAY: "cleanup_delay",
    REC_MESG: "message_content", REC_NORM: "regular_text",
    REC_DTXT: "padding", REC_XTRA: "extracted_info",
    REC_RRTO: "return_receipt", REC_ERTO: "errors_to", REC_PRIO: "priority",
    REC_PTR: "pointer_record", REC_VERP: "verp_delimiters",
    REC_DSN_RET: "dsn_return_type", REC_DSN_ENVID: "dsn_envelope_id",
    REC_DSN_ORCPT: "dsn_original_recipient", REC_DSN_NOTIFY: "dsn_notify_flags",
    REC_MILT_COUNT: "milter_count", REC_END: "message_end",
}
# REC_CONT shares 'L' with REC_FILT; inside content it means a long line.

# Postfix's rec_get() refuses a length whose varint is longer than an int
# (global/record.c: "shift > NBBY * sizeof(int)"): 5 groups of 7 bits.
_MAX_LEN_BYTES = 5
# Largest payload we accept.  Content records are bounded by line_length_limit
# (2048 by default, postconf(5)); envelope records by address and header
# limits (header_size_limit 102400).  1 MiB leaves room for any setting and
# keeps a corrupt length from making a reader allocate gigabytes.
MAX_RECORD = 1 << 20


class RecordError(Exception):
    """A byte stream that is not a well-formed record sequence."""


def encode_record(rtype: int, data: bytes) -> bytes:
    """One record: type byte, varint length, payload."""
    n = len(data)
    if n < 0x80:
        return bytes((rtype, n)) + data
    head = bytearray((rtype,))
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            head.append(b | 0x80)
        else:
            head.append(b)
            break
    return bytes(head) + data


class RecordReader:
    """Read records from a file descriptor, tracking each record's offset.

    Reads in large chunks through its own buffer (no per-byte read calls),
    so memory stays at one chunk plus one record whatever the file size.
    ``offset`` of each record is the position of its type byte, which is
    what in-place updates (done marks, warn time) need.
    """

    CHUNK = 65536

    def __init__(self, fd: int, offset: int = 0, max_record: int = MAX_RECORD):
        self._fd = fd
        self._buf = b""
        self._pos = 0
        self._base = offset          # file offset of _buf[0]
        self._max = max_record
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)

    def seek(self, offset: int) -> None:
        """Continue reading at a file offset (e.g. the extracted segment)."""
        os.lseek(self._fd, offset, os.SEEK_SET)
        self._buf = b""
        self._pos = 0
        self._base = offset

    def tell(self) -> int:
        return self._base + self._pos

    def _fill(self, need: int) -> bool:
        """Make at least ``need`` bytes available after _pos; False at EOF."""
        while len(self._buf) - self._pos < need:
            chunk = os.read(self._fd, max(self.CHUNK, need))
            if not chunk:
                return False
            self._base += self._pos
            self._buf = self._buf[self._pos:] + chunk
            self._pos = 0
        return True

    def read(self) -> tuple[int, int, bytes] | None:
        """Next record as (offset, type, payload); None at a clean end of file.

        A record cut short, or a length that is absurd, raises RecordError.
        """
        if not self._fill(2):
            if len(self._buf) - self._pos == 0:
                return None
            raise RecordError(f"truncated record header at offset {self.tell()}")
        buf, pos = self._buf, self._pos
        start = self._base + pos
        rtype = buf[pos]
        b = buf[pos + 1]
        if b < 0x80:                  # the common case: payload < 128 bytes
            length, hlen = b, 2
        else:
            length, shift, hlen = 0, 0, 1
            while True:
                if hlen > _MAX_LEN_BYTES:
                    raise RecordError(f"bad record length at offset {start}")
                if not self._fill(hlen + 1):
                    raise RecordError(f"truncated record length at offset {start}")
                buf, pos = self._buf, self._pos
                b = buf[pos + hlen]
                length |= (b & 0x7F) << shift
                shift += 7
                hlen += 1
                if b < 0x80:
                    break
            if length > self._max:
                raise RecordError(
                    f"record length {length} exceeds {self._max} at offset {start}")
        if not self._fill(hlen + length):
            raise RecordError(f"truncated record payload at offset {start}")
        pos = self._pos
        data = self._buf[pos + hlen:pos + hlen + length]
        self._pos = pos + hlen + length
        return start, rtype, data

    def __iter__(self):
        while (rec := self.read()) is not None:
            yield rec
