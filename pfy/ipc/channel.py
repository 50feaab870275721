"""Attribute-protocol connections over Unix stream sockets.

Two drivers for the sans-I/O codec in pfy.ipc.attr, with the same methods:

    AttrConnection        blocking (commands, single-client daemons)
    AsyncAttrConnection   asyncio (multi-client daemons)

A server greets first (greet(protocol_name)); a client made with connect()
/ open() reads the greeting and checks the name before it sends anything,
as Postfix's attr clients check "protocol=...".  Sends are buffered until
flush() (request() flushes), so a request and its content records leave in
as few writes as possible.
"""

from __future__ import annotations

import collections
import socket
import struct
from typing import TYPE_CHECKING, AsyncIterator, Iterator

if TYPE_CHECKING:     # asyncio costs ~40 ms to import; blocking clients
    import asyncio    # (sendmail, postdrop) never need it

from pfy.ipc.attr import (
    FRAME_ATTRS, FRAME_GREETING, FRAME_LINES, FRAME_RECORD, MAX_FRAME, REC_LINES, Frame,
    FrameParser, ProtocolError, decode_attrs, encode_attrs, encode_greeting,
    encode_lines_frame, encode_record_frame,
)

__all__ = ["AttrConnection", "AsyncAttrConnection", "AsyncServiceClient", "REC_END_OF_STREAM"]

_LEN = struct.Struct(">I")
# Record streams end with an E record (pfy.queue.record.REC_END), the same
# terminator as a queue file, so a stream can be copied into a file as is.
REC_END_OF_STREAM = ord("E")
# Postfix's ipc_timeout default (postconf(5)): give up on a silent peer.
DEFAULT_TIMEOUT = 3600.0


def _check_greeting(frame: Frame, protocol_name: str) -> None:
    if frame.kind != FRAME_GREETING:
        raise ProtocolError(f"expected {protocol_name} greeting, got frame {chr(frame.kind)!r}")
    got = frame.body.decode("ascii", "replace")
    if got != protocol_name:
        raise ProtocolError(f"unexpected protocol {got!r}, want {protocol_name!r}")


def _record_of(frame: Frame) -> tuple[int, bytes]:
    """(type, payload) of a record frame; a lines frame is (REC_LINES,
    the lines joined by LF)."""
    if frame.kind == FRAME_RECORD and frame.body:
        return frame.body[0], frame.body[1:]
    if frame.kind == FRAME_LINES:
        return REC_LINES, frame.body
    raise ProtocolError(f"expected a record, got frame {chr(frame.kind)!r}")


def _attrs_body(frame: Frame, expect):
    if frame.kind != FRAME_ATTRS:
        raise ProtocolError(f"expected attributes, got frame {chr(frame.kind)!r}")
    return decode_attrs(frame.body, expect)


class AttrConnection:
    """Blocking attribute-protocol endpoint on a connected stream socket."""

    def __init__(self, sock: socket.socket, max_frame: int = MAX_FRAME):
        self.sock = sock
        self._rfile = sock.makefile("rb", buffering=65536)
        self._out = bytearray()
        self._max = max_frame

    @classmethod
    def connect(cls, path: str, protocol_name: str,
                timeout: float | None = DEFAULT_TIMEOUT) -> "AttrConnection":
        """Connect to a service socket and check its greeting."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            conn = cls(sock)
            _check_greeting(conn.receive_frame(), protocol_name)
        except BaseException:
            sock.close()
            raise
        return conn

    # -- send ----------------------------------------------------------------
    def greet(self, protocol_name: str) -> None:
        """Server side: announce the protocol (flushed at once)."""
        self._out += encode_greeting(protocol_name)
        self.flush()

    def send(self, obj) -> None:
        self._out += encode_attrs(obj)
        if len(self._out) >= 65536:
            self.flush()

    def send_record(self, rtype: int, data: bytes) -> None:
        self._out += encode_record_frame(rtype, data)
        if len(self._out) >= 65536:
            self.flush()

    def send_lines(self, lines: list[bytes]) -> None:
        """Whole content lines (N records) in one frame; none may hold LF."""
        self._out += encode_lines_frame(lines)
        if len(self._out) >= 65536:
            self.flush()

    def end_records(self) -> None:
        """The end-of-stream record that records() stops at."""
        self.send_record(REC_END_OF_STREAM, b"")

    def flush(self) -> None:
        if self._out:
            self.sock.sendall(self._out)
            self._out = bytearray()

    # -- receive ---------------------------------------------------------------
    def receive_frame(self) -> Frame:
        head = self._rfile.read(4)
        if len(head) < 4:
            if not head:
                raise EOFError("peer closed the connection")
            raise ProtocolError("connection closed inside a frame")
        (n,) = _LEN.unpack(head)
        if n == 0 or n > self._max:
            raise ProtocolError(f"bad frame length {n}")
        body = self._rfile.read(n)
        if len(body) < n:
            raise ProtocolError("connection closed inside a frame")
        return Frame(body[0], body[1:])

    def receive(self, expect):
        """Next frame as one of the classes in ``expect`` (class or tuple)."""
        return _attrs_body(self.receive_frame(), expect)

    def request(self, obj, expect):
        """send + flush + receive: one round trip."""
        self.send(obj)
        self.flush()
        return self.receive(expect)

    def receive_record(self) -> tuple[int, bytes]:
        return _record_of(self.receive_frame())

    def records(self, end: int = REC_END_OF_STREAM) -> Iterator[tuple[int, bytes]]:
        """(type, payload) records until the ``end`` record (not yielded)."""
        while True:
            rtype, data = self.receive_record()
            if rtype == end:
                return
            yield rtype, data

    def close(self) -> None:
        try:
            self.flush()
        except OSError:
            pass
        self._rfile.close()
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# Sends collect in our own buffer up to this size before they reach the
# transport: StreamWriter.write() tries a send(2) at once when its buffer is
# empty, so a message streamed record by record (one per line) cost one
# system call, and one wake-up of the peer, per line.  64 KB bounds memory
# like the blocking AttrConnection's buffer, and keeps large messages
# streaming.
_WRITE_CHUNK = 65536
_READ_CHUNK = 65536


class AsyncAttrConnection:
    """asyncio attribute-protocol endpoint on a StreamReader/StreamWriter.

    Like AttrConnection, sends are buffered until flush() (request()
    flushes); reading, and close(), hand buffered sends to the transport
    first, so a send is never stranded behind a wait for the peer.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_frame: int = MAX_FRAME):
        self.reader = reader
        self.writer = writer
        self._max = max_frame
        self._out: list[bytes] = []
        self._out_size = 0
        # Frames are cut from what the socket gives in one read, not read
        # with two readexactly() awaits each: a message streamed as records
        # arrives as a few large reads of many frames.
        self._parser = FrameParser(max_frame)
        self._frames: collections.deque[Frame] = collections.deque()

    @classmethod
    async def open(cls, path: str, protocol_name: str,
                   timeout: float | None = DEFAULT_TIMEOUT) -> "AsyncAttrConnection":
        """Connect to a service socket and check its greeting."""
        import asyncio
        # One timer for connect and greeting (asyncio.timeout; wait_for
        # would make a task for each await).
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path, limit=1 << 16)
            conn = cls(reader, writer)
            try:
                _check_greeting(await conn.receive_frame(), protocol_name)
            except BaseException:
                writer.close()
                raise
        return conn

    def _buffer(self, frame: bytes) -> None:
        self._out.append(frame)
        self._out_size += len(frame)
        if self._out_size >= _WRITE_CHUNK:
            self._push()

    def _push(self) -> None:
        """Hand buffered sends to the transport (one write)."""
        if self._out:
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out = []
            self._out_size = 0
            self.writer.write(data)

    def greet(self, protocol_name: str) -> None:
        self._buffer(encode_greeting(protocol_name))

    def send(self, obj) -> None:
        self._buffer(encode_attrs(obj))

    def send_record(self, rtype: int, data: bytes) -> None:
        self._buffer(encode_record_frame(rtype, data))

    def send_lines(self, lines: list[bytes]) -> None:
        self._buffer(encode_lines_frame(lines))

    def end_records(self) -> None:
        self.send_record(REC_END_OF_STREAM, b"")

    def pending(self) -> int:
        """Bytes sent but not yet written to the socket (flow control)."""
        return self._out_size + self.writer.transport.get_write_buffer_size()

    async def flush(self) -> None:
        self._push()
        await self.writer.drain()

    async def receive_frame(self) -> Frame:
        if self._out:
            self._push()
        frames = self._frames
        while not frames:
            data = await self.reader.read(_READ_CHUNK)
            if not data:
                if self._parser.pending:
                    raise ProtocolError("connection closed inside a frame")
                raise EOFError("peer closed the connection")
            frames.extend(self._parser.feed(data))
        return frames.popleft()

    async def receive(self, expect):
        return _attrs_body(await self.receive_frame(), expect)

    async def request(self, obj, expect):
        self.send(obj)
        await self.flush()
        return await self.receive(expect)

    async def receive_record(self) -> tuple[int, bytes]:
        return _record_of(await self.receive_frame())

    async def records(self, end: int = REC_END_OF_STREAM) -> AsyncIterator[tuple[int, bytes]]:
        while True:
            rtype, data = await self.receive_record()
            if rtype == end:
                return
            yield rtype, data

    def close(self) -> None:
        try:
            self._push()
        except Exception:   # noqa: BLE001 - closing a broken transport anyway
            pass
        self.writer.close()

    async def wait_closed(self) -> None:
        try:
            await self.writer.wait_closed()
        except (ConnectionError, BrokenPipeError):
            pass


class AsyncServiceClient:
    """A long-lived client of one small service (anvil, verify) for an
    asyncio daemon: one lazy connection shared by every session (requests
    take turns, as Postfix's clnt_stream), one fresh attempt when the
    service closed an idle connection, and after a failure the service is
    left alone for ``retry_delay`` seconds, with at most one warning per
    ``warn_interval``.  call() never raises: None means "the service did
    not answer", and the caller decides what that costs."""

    # asyncio, time and pfy.log are imported where used (this module also
    # serves blocking commands that must start fast); an asyncio daemon has
    # them loaded long before its jail.

    def __init__(self, path: str, protocol_name: str, *, timeout: float,
                 retry_delay: float = 5.0, warn_interval: float = 60.0, clock=None):
        import time
        self.path = path
        self.protocol_name = protocol_name
        self.timeout = timeout
        self.retry_delay = retry_delay
        self.warn_interval = warn_interval
        self.clock = clock or time.monotonic
        self._conn: AsyncAttrConnection | None = None
        self._lock = None
        self._down_until = 0.0
        self._warned_at = -warn_interval

    async def call(self, request, expect):
        import asyncio
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self.clock() < self._down_until:
            return None
        async with self._lock:
            for attempt in range(2):
                try:
                    async with asyncio.timeout(self.timeout):
                        if self._conn is None:
                            self._conn = await AsyncAttrConnection.open(self.path,
                                                                        self.protocol_name)
                        return await self._conn.request(request, expect)
                except (OSError, EOFError, ProtocolError, asyncio.TimeoutError,
                        asyncio.IncompleteReadError, ValueError) as err:
                    self.close()
                    # A connection the service closed while idle (it was
                    # restarted): one fresh attempt before calling it down.
                    if attempt == 0 and not isinstance(
                            err, (asyncio.TimeoutError, FileNotFoundError, ConnectionRefusedError)):
                        continue
                    self._down_until = self.clock() + self.retry_delay
                    if self.clock() - self._warned_at >= self.warn_interval:
                        self._warned_at = self.clock()
                        from pfy import log
                        why = getattr(err, "strerror", None) or type(err).__name__
                        log.warning(f"problem talking to service {self.path}: {why}")
                    return None
        return None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:   # noqa: BLE001 - already gone
                pass
