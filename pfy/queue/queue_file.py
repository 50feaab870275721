"""Queue files: the layout, a streaming writer and a strict reader.

LAYOUT (Postfix's, global/rec_type.h and cleanup(8); ``postcat`` reads it)

    C  size        "%15ld %15ld %15ld %15ld %15ld": content size (bytes from
                   the first content record to X), data offset (of the first
                   content record), recipient count, qmgr flags, message
                   length (bytes of the message as text, newlines counted).
                   Fixed width so it is filled in place when the file ends.
    T  time        arrival "sec usec"
    c  ctime       queue file creation "sec usec" (optional)
    F  full name   (optional)
    S  sender      envelope sender; empty = null sender <>
    A  name=value  attributes: log_client_name, log_client_address,
                   log_message_origin, log_helo_name, log_protocol_name,
                   rewrite_context (local|remote), encoding (7bit|8bit),
                   dsn_orig_rcpt..., any number, any order
    <  dsn ret     i envid   V verp  W warn time (fixed width, in place)
    recipients:    [o dsn orcpt] [n dsn notify] [O orig rcpt] R rcpt
    M              start of content
    N / L          content: N is a line (newline implied), L a piece of a
                   line longer than the record limit (the line goes on in
                   the next record)
    X              start of extracted information
    extracted:     A, r, e, P, more recipients (sendmail -t)
    E              end: a file without E was never finished

DONE MARKS
    A recipient's type byte (R) is overwritten in place with D once its
    delivery is final (delivered, bounced or otherwise no longer to do):
    one pwrite of one byte, which cannot be half done, so a crash either
    leaves R (the recipient gets the message again: at-least-once) or D
    (never again).  Deferred recipients stay R; why they were deferred is
    in the defer log (defer/ID), as in Postfix.

COMPLETENESS
    The writer creates ``tmp.PID.N`` (mode 0600) in the target queue folder,
    streams records through a buffer, writes E, fills in C, fsyncs, sets the
    mode to 0700 (plus any extra bits asked for: maildrop files get 0744, as
    Postfix's postdrop) and only then renames the file to its queue ID.  So
    a queue ID name always means a complete, durable file; a file with a
    '.' in its name is work in progress or debris of a crash, and
    Queue.remove_stale_temp_files() deletes it once its writer is gone.
    Readers also check the 0700 bits (Postfix's MAIL_QUEUE_STAT_READY) and
    the final E record.
"""

from __future__ import annotations

import itertools
import os
import stat
import time
from typing import Iterable, Iterator

from pfy.queue import queue_id as _qid
from pfy.queue.record import (
    REC_ATTR, REC_CONT, REC_CTIME, REC_DONE, REC_DRCP, REC_DSN_ENVID,
    REC_DSN_NOTIFY, REC_DSN_ORCPT, REC_DSN_RET, REC_DTXT, REC_END, REC_ERTO,
    REC_FILT, REC_FLGS, REC_FROM, REC_FULL, REC_INSP, REC_MESG, REC_NORM,
    REC_ORCP, REC_PRIO, REC_PTR, REC_RCPT, REC_RDR, REC_RRTO, REC_SIZE,
    REC_TIME, REC_VERP, REC_WARN, REC_XTRA, RecordError, RecordReader,
    encode_record,
)

__all__ = [
    "CorruptQueueFile", "Recipient", "Envelope", "QueueFileWriter",
    "QueueFileReader", "mark_done", "update_warn_time", "STAT_READY",
    "CONTENT_RECORD_LIMIT", "is_temp_name",
]

# Postfix global/mail_queue.h MAIL_QUEUE_STAT_READY: owner rwx = complete.
STAT_READY = stat.S_IRUSR | stat.S_IWUSR | stat.S_IXUSR
_STAT_WRITING = stat.S_IRUSR | stat.S_IWUSR
# Postfix splits content lines longer than line_length_limit (default 2048,
# postconf(5)) into L records; the writer does the same with this default.
CONTENT_RECORD_LIMIT = 2048
_SIZE_FORMAT = b"%15d %15d %15d %15d %15d"   # REC_TYPE_SIZE_FORMAT
_SIZE_LEN = 79                               # 5 * 15 digits + 4 spaces
_WARN_FORMAT = b"%15d"                       # REC_TYPE_WARN_FORMAT
# The type and length bytes of an N record for each payload length below
# 4096 (content_block() adds each line's in one lookup); built on first use.
_NORM_HEADS: tuple[bytes, ...] = ()
_NORM_HEADS_SIZE = 4096


def _norm_heads() -> tuple[bytes, ...]:
    global _NORM_HEADS
    if not _NORM_HEADS:
        _NORM_HEADS = tuple(bytes((REC_NORM, n)) if n < 0x80
                            else bytes((REC_NORM, (n & 0x7F) | 0x80, n >> 7))
                            for n in range(_NORM_HEADS_SIZE))
    return _NORM_HEADS

_TEMP_PREFIX = "tmp."
_temp_counter = itertools.count()

# Which records may appear where (Postfix's REC_TYPE_ENVELOPE/EXTRACT sets,
# plus the C record that starts the file).
_ENVELOPE_TYPES = frozenset(b"MCTcFILSDRO/WVA>K<iond")
_CONTENT_TYPES = frozenset(b"XLNw")
_EXTRACT_TYPES = frozenset(b"EDRO/PreAFIL>Kon")


class CorruptQueueFile(Exception):
    """A queue file that cannot be parsed; str() says where and why."""


def is_temp_name(name: str) -> bool:
    """True for a writer's work-in-progress name (never a queue ID)."""
    return name.startswith(_TEMP_PREFIX)


class _Record:
    """Plain slotted value class: dataclasses cost ~10 ms of import time in
    every command that touches the queue (sendmail, postdrop)."""
    __slots__ = ()

    def __eq__(self, other):
        return type(other) is type(self) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            f"{n}={getattr(self, n)!r}" for n in self.__slots__))


class Recipient(_Record):
    __slots__ = ("address", "orig_rcpt", "dsn_orcpt", "dsn_notify", "offset", "done")

    def __init__(self, address: str, orig_rcpt: str = "", dsn_orcpt: str = "",
                 dsn_notify: int = 0, offset: int = -1, done: bool = False):
        self.address = address
        self.orig_rcpt = orig_rcpt
        self.dsn_orcpt = dsn_orcpt
        self.dsn_notify = dsn_notify
        self.offset = offset          # of the R/D type byte, for mark_done()
        self.done = done


class Envelope(_Record):
    """Everything but the content; addresses decoded UTF-8 (surrogateescape)."""
    __slots__ = (
        "queue_id", "content_size", "data_offset", "rcpt_count", "qmgr_flags",
        "message_size", "arrival_time", "create_time", "sender", "full_name",
        "attrs", "recipients", "warn_time", "warn_offset", "dsn_ret",
        "dsn_envid", "verp", "filter", "inspector", "redirect", "errors_to",
        "return_receipt", "priority", "flags")

    def __init__(self, queue_id: str = ""):
        self.queue_id = queue_id
        self.content_size = self.data_offset = self.rcpt_count = 0
        self.qmgr_flags = self.message_size = 0
        self.arrival_time = self.create_time = 0.0
        self.sender = self.full_name = ""
        self.attrs: dict[str, str] = {}
        self.recipients: list[Recipient] = []
        self.warn_time = 0
        self.warn_offset = -1
        self.dsn_ret = 0
        self.dsn_envid = self.verp = self.filter = self.inspector = ""
        self.redirect = self.errors_to = self.return_receipt = self.priority = ""
        self.flags = 0

    @property
    def pending(self) -> list[Recipient]:
        """Recipients not yet marked done."""
        return [r for r in self.recipients if not r.done]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class QueueFileWriter:
    """Stream one message into a new queue file; see the module docstring.

    Use through Queue.create().  Envelope records first (time, sender,
    attr, recipient...), then begin_content(), content lines, end_content(),
    optional extracted records, then commit() which returns the queue ID.
    Leaving a ``with`` block without commit() removes the file.
    """

    def __init__(self, directory: str, final_path_of, long_ids: bool = False,
                 extra_mode: int = 0, fsync: bool = True,
                 now: float | None = None):
        self._dir = directory
        self._final_path_of = final_path_of
        self._extra_mode = extra_mode
        self._fsync = fsync
        self.temp_path = os.path.join(
            directory, f"{_TEMP_PREFIX}{os.getpid()}.{next(_temp_counter)}")
        self._fd = os.open(self.temp_path,
                           os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                           _STAT_WRITING)
        try:
            st = os.fstat(self._fd)
            t = time.time() if now is None else now
            sec, usec = int(t), int((t - int(t)) * 1_000_000)
            self.create_time = (sec, usec)
            self.queue_id = (_qid.long_queue_id(sec, usec, st.st_ino) if long_ids
                             else _qid.short_queue_id(usec, st.st_ino))
            self.path = ""               # final path, set by commit()
            self._buf = bytearray()
            self._offset = 0             # file offset of _buf[0]
            self._rcpt_count = 0
            self._data_offset = 0
            self._xtra_offset = 0
            self._message_size = 0
            self._state = "envelope"
            self._committed = False
            self.write_record(REC_SIZE, b" " * _SIZE_LEN)
        except BaseException:
            self.abort()
            raise

    # -- plumbing -----------------------------------------------------------
    def _flush(self) -> None:
        view = memoryview(self._buf)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._offset += len(self._buf)
        self._buf = bytearray()

    def tell(self) -> int:
        """File offset where the next record starts."""
        return self._offset + len(self._buf)

    def write_record(self, rtype: int, data: bytes) -> int:
        """Append one record; returns its offset.  Raw access for pickup."""
        off = self._offset + len(self._buf)
        self._buf += encode_record(rtype, data)
        if len(self._buf) >= 65536:
            self._flush()
        return off

    # -- envelope -----------------------------------------------------------
    def time(self, arrival: float | None = None) -> None:
        """T record (arrival time; default: the file's creation time)."""
        if arrival is None:
            sec, usec = self.create_time
        else:
            sec, usec = int(arrival), int((arrival - int(arrival)) * 1_000_000)
        self.write_record(REC_TIME, b"%d %d" % (sec, usec))

    def full_name(self, name: str) -> None:
        self.write_record(REC_FULL, _bytes(name))

    def sender(self, address: str) -> None:
        self.write_record(REC_FROM, _bytes(address))

    def attr(self, name: str, value: str) -> None:
        """A record ``name=value`` (log_client_name, rewrite_context, ...)."""
        if "=" in name or not name:
            raise ValueError(f"bad attribute name {name!r}")
        self.write_record(REC_ATTR, _bytes(f"{name}={value}"))

    def dsn(self, ret: int = 0, envid: str = "") -> None:
        if ret:
            self.write_record(REC_DSN_RET, b"%d" % ret)
        if envid:
            self.write_record(REC_DSN_ENVID, _bytes(envid))

    def warn_time(self, when: int) -> int:
        """W record (fixed width, updated in place later); returns its offset."""
        return self.write_record(REC_WARN, _WARN_FORMAT % when)

    def recipient(self, address: str, orig_rcpt: str = "", dsn_orcpt: str = "",
                  dsn_notify: int = 0) -> int:
        """[o] [n] [O] R records; returns the offset of R (for mark_done)."""
        if self._state == "content":
            raise ValueError("recipient inside message content")
        if dsn_orcpt:
            self.write_record(REC_DSN_ORCPT, _bytes(dsn_orcpt))
        if dsn_notify:
            self.write_record(REC_DSN_NOTIFY, b"%d" % dsn_notify)
        if orig_rcpt:
            self.write_record(REC_ORCP, _bytes(orig_rcpt))
        self._rcpt_count += 1
        return self.write_record(REC_RCPT, _bytes(address))

    # -- content ------------------------------------------------------------
    def begin_content(self) -> None:
        """M record: everything after is message content until end_content()."""
        if self._state != "envelope":
            raise ValueError("begin_content twice")
        self.write_record(REC_MESG, b"")
        self._data_offset = self.tell()
        self._state = "content"

    def content_line(self, line: bytes, limit: int = CONTENT_RECORD_LIMIT) -> None:
        """One line of content, without its newline (CRLF already removed)."""
        self._message_size += len(line) + 1
        while len(line) > limit:
            self.write_record(REC_CONT, line[:limit])
            line = line[limit:]
        self.write_record(REC_NORM, line)

    def content_lines(self, lines: Iterable[bytes]) -> None:
        for line in lines:
            self.content_line(line)

    def content_block(self, block: bytes, limit: int = CONTENT_RECORD_LIMIT) -> None:
        """Lines joined by LF (none ending in it): the same records as
        content_line() for each, encoded in one pass."""
        lines = block.split(b"\n")
        if max(map(len, lines)) > min(limit, _NORM_HEADS_SIZE - 1):
            for line in lines:
                self.content_line(line, limit)
            return
        self._message_size += len(block) + 1
        heads = _NORM_HEADS or _norm_heads()
        parts: list[bytes] = []
        add = parts.extend
        for line in lines:
            add((heads[len(line)], line))
        self._buf += b"".join(parts)
        if len(self._buf) >= 65536:
            self._flush()

    def content_record(self, rtype: int, data: bytes) -> None:
        """A content record as received (N or L), e.g. streamed from postdrop."""
        if rtype not in (REC_NORM, REC_CONT):
            raise ValueError(f"not a content record type: {rtype!r}")
        self._message_size += len(data) + (rtype == REC_NORM)
        self.write_record(rtype, data)

    def end_content(self) -> None:
        """X record: extracted information may follow."""
        if self._state != "content":
            raise ValueError("end_content without begin_content")
        self._xtra_offset = self.write_record(REC_XTRA, b"")
        self._state = "extracted"

    # -- finish -------------------------------------------------------------
    def commit(self, qmgr_flags: int = 0) -> str:
        """Write E, fill in C, fsync, mark ready, rename; returns the queue ID.

        Only after this returns may anyone acknowledge the message
        (DESIGN.md: 250 only after fsync + rename).
        """
        if self._state == "envelope":
            self.begin_content()
        if self._state == "content":
            self.end_content()
        self.write_record(REC_END, b"")
        self._flush()
        size = _SIZE_FORMAT % (self._xtra_offset - self._data_offset,
                               self._data_offset, self._rcpt_count,
                               qmgr_flags, self._message_size)
        os.pwrite(self._fd, size, 2)    # after 'C' and the one-byte length 79
        if self._fsync:
            os.fsync(self._fd)
        os.fchmod(self._fd, STAT_READY | self._extra_mode)
        os.close(self._fd)
        self._fd = -1
        final = self._final_path_of(self.queue_id)
        try:
            os.rename(self.temp_path, final)
        except FileNotFoundError:       # hashed subfolder not made yet
            os.makedirs(os.path.dirname(final), mode=0o700, exist_ok=True)
            os.rename(self.temp_path, final)
        self.path = final
        self._committed = True
        return self.queue_id

    def abort(self) -> None:
        """Forget the message: close and remove the temporary file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._committed:
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._committed:
            self.abort()
        return False


class QueueFileReader:
    """Read a complete queue file: envelope at once, content as a stream.

    ``open`` checks nothing but that the file exists; read_envelope() parses
    the envelope and the extracted segment (seeking over the content with
    the offsets in the C record, so content is never read for it) and raises
    CorruptQueueFile for anything unparseable.  The file descriptor is
    opened read-write when ``writable`` so done marks can be set through it.
    """

    def __init__(self, path: str, writable: bool = False, queue_id: str = ""):
        self.path = path
        self.queue_id = queue_id or os.path.basename(path)
        flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC
        self.fd = os.open(path, flags)
        self._envelope: Envelope | None = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _corrupt(self, why: str) -> CorruptQueueFile:
        return CorruptQueueFile(f"{self.path}: {why}")

    def read_envelope(self) -> Envelope:
        """Envelope, attributes and recipients of both segments."""
        if self._envelope is not None:
            return self._envelope
        env = Envelope(queue_id=self.queue_id)
        reader = RecordReader(self.fd, 0)
        try:
            first = reader.read()
            if first is None or first[1] != REC_SIZE:
                raise self._corrupt("no size record at start of file")
            self._parse_size(env, first[2])
            self._parse_segment(env, reader, _ENVELOPE_TYPES, REC_MESG)
            if reader.tell() != env.data_offset:
                raise self._corrupt(
                    f"data offset {env.data_offset} in size record, "
                    f"content starts at {reader.tell()}")
            reader.seek(env.data_offset + env.content_size)
            rec = reader.read()
            if rec is None or rec[1] != REC_XTRA:
                raise self._corrupt("no extracted-information record where "
                                    "the size record says content ends")
            self._parse_segment(env, reader, _EXTRACT_TYPES, REC_END)
        except RecordError as err:
            raise self._corrupt(str(err)) from None
        if not env.arrival_time:
            raise self._corrupt("no arrival time record")
        self._envelope = env
        return env

    def _parse_size(self, env: Envelope, data: bytes) -> None:
        try:
            fields = [int(x) for x in data.split()]
        except ValueError:
            raise self._corrupt(f"bad size record {data!r}") from None
        # Postfix reads files with 2 to 5 fields (older versions wrote fewer).
        if not 2 <= len(fields) <= 5 or min(fields) < 0:
            raise self._corrupt(f"bad size record {data!r}")
        fields += [0] * (5 - len(fields))
        (env.content_size, env.data_offset, env.rcpt_count,
         env.qmgr_flags, env.message_size) = fields

    def _parse_segment(self, env: Envelope, reader: RecordReader,
                       allowed: frozenset, end: int) -> None:
        orig = dsn_orcpt = ""
        notify = 0
        for off, rtype, data in reader:
            if rtype not in allowed:
                raise self._corrupt(
                    f"unexpected record type {chr(rtype)!r} at offset {off}")
            if rtype == end:
                return
            if rtype in (REC_RCPT, REC_DONE, REC_DRCP):
                if rtype != REC_DRCP:
                    env.recipients.append(Recipient(
                        _text(data), orig, dsn_orcpt, notify, off,
                        rtype == REC_DONE))
                orig = dsn_orcpt = ""
                notify = 0
            elif rtype == REC_ORCP:
                orig = _text(data)
            elif rtype == REC_DSN_ORCPT:
                dsn_orcpt = _text(data)
            elif rtype == REC_DSN_NOTIFY:
                notify = self._int(data, off)
            elif rtype == REC_FROM:
                env.sender = _text(data)
            elif rtype == REC_ATTR:
                name, eq, value = _text(data).partition("=")
                if not eq or not name:
                    raise self._corrupt(f"bad attribute record at offset {off}")
                env.attrs[name] = value
            elif rtype == REC_TIME:
                env.arrival_time = self._time(data, off)
            elif rtype == REC_CTIME:
                env.create_time = self._time(data, off)
            elif rtype == REC_FULL:
                env.full_name = _text(data)
            elif rtype == REC_WARN:
                env.warn_time = self._int(data, off)
                env.warn_offset = off
            elif rtype == REC_DSN_RET:
                env.dsn_ret = self._int(data, off)
            elif rtype == REC_DSN_ENVID:
                env.dsn_envid = _text(data)
            elif rtype == REC_VERP:
                env.verp = _text(data)
            elif rtype == REC_FILT:
                env.filter = _text(data)
            elif rtype == REC_INSP:
                env.inspector = _text(data)
            elif rtype == REC_RDR:
                env.redirect = _text(data)
            elif rtype == REC_ERTO:
                env.errors_to = _text(data)
            elif rtype == REC_RRTO:
                env.return_receipt = _text(data)
            elif rtype == REC_PRIO:
                env.priority = _text(data)
            elif rtype == REC_FLGS:
                env.flags = self._int(data, off)
            # K (killed), d (delay), m, p, w: nothing to keep.
        raise self._corrupt("file ends before its end record"
                            if end == REC_END else "no message content record")

    def _int(self, data: bytes, off: int) -> int:
        try:
            return int(data)
        except ValueError:
            raise self._corrupt(f"bad number {data!r} at offset {off}") from None

    def _time(self, data: bytes, off: int) -> float:
        parts = data.split()
        try:
            sec = int(parts[0])
            usec = int(parts[1]) if len(parts) > 1 else 0
        except (ValueError, IndexError):
            raise self._corrupt(f"bad time {data!r} at offset {off}") from None
        return sec + usec / 1_000_000

    def content_records(self) -> Iterator[tuple[int, bytes]]:
        """(type, payload) of every content record, N or L, in order."""
        env = self.read_envelope()
        reader = RecordReader(self.fd, env.data_offset)
        stop = env.data_offset + env.content_size
        try:
            while reader.tell() < stop:
                rec = reader.read()
                if rec is None:
                    raise self._corrupt("file ends inside message content")
                _, rtype, data = rec
                if rtype == REC_NORM or rtype == REC_CONT:
                    yield rtype, data
                elif rtype not in (REC_DTXT, REC_PTR):
                    raise self._corrupt(
                        f"unexpected record type {chr(rtype)!r} in content")
        except RecordError as err:
            raise self._corrupt(str(err)) from None

    def content_lines(self) -> Iterator[bytes]:
        """Message lines without newline, long lines joined (bounded by the
        message's own line: L pieces are joined as Postfix's delivery agents
        do when they write the line out)."""
        pending: list[bytes] = []
        for rtype, data in self.content_records():
            if rtype == REC_CONT:
                pending.append(data)
            elif pending:
                pending.append(data)
                yield b"".join(pending)
                pending = []
            else:
                yield data
        if pending:
            yield b"".join(pending)

    def mark_done(self, recipient: Recipient | int) -> None:
        """Overwrite a recipient's R with D (reader opened ``writable``)."""
        mark_done(self.fd, recipient if isinstance(recipient, int) else recipient.offset)


def mark_done(fd: int, offset: int, fsync: bool = False) -> None:
    """Mark the recipient whose R record starts at ``offset`` as done.

    One pwrite of one byte: it happens wholly or not at all.  Postfix does
    not fsync here either (deliver_completed()): a process crash keeps the
    mark in the page cache; only a host crash can lose it, and then the
    recipient gets a duplicate, never a loss.  ``fsync`` trades speed for
    closing that window too.
    """
    if os.pread(fd, 1, offset) not in (b"R", b"D"):
        raise CorruptQueueFile(f"offset {offset} is not a recipient record")
    os.pwrite(fd, b"D", offset)
    if fsync:
        os.fsync(fd)


def update_warn_time(fd: int, offset: int, when: int) -> None:
    """Rewrite a W record's fixed-width time in place (qmgr's delay warnings)."""
    if os.pread(fd, 2, offset) != bytes((REC_WARN, 15)):
        raise CorruptQueueFile(f"offset {offset} is not a warn record")
    os.pwrite(fd, _WARN_FORMAT % when, offset + 2)
