"""The attribute protocol between daemons: frames, typed requests, records.

WIRE FORMAT
    Every frame is a 4-byte big-endian length L, then L bytes whose first
    byte says what the frame is:

      b"P" + protocol name         the server's greeting, sent on accept
      b"A" + n + name + JSON       a typed request or reply: n is one byte,
                                   the length of the message name (the
                                   dataclass name unless @protocol gives
                                   one); JSON is an object of its fields
      b"R" + type byte + payload   one record (pfy.queue.record types): how
                                   message content moves, one record a frame
      b"N" + line LF line ...      a run of whole content lines, each an N
                                   record's payload (none contains LF):
                                   smtpd sends a read's worth of plain lines
                                   as one frame; a reader sees it as one
                                   record of the pseudo type REC_LINES

    JSON (the C-accelerated stdlib codec) carries str, int, bool, float,
    lists and nested dataclasses; it never executes anything, unlike
    pickle/marshal, which matters between mutually distrustful processes.
    Strings with undecodable bytes travel as surrogate escapes.

STRICTNESS
    decode checks the message name against the classes the reader expects,
    that the field set is exactly the dataclass's (a missing or unknown
    attribute is an error, never a default) and every value's type.  Any
    violation is a ProtocolError.

This module is sans-I/O: bytes in, objects out.  pfy.ipc.channel moves the
frames over sockets (blocking and asyncio).
"""

from __future__ import annotations

import dataclasses
import json
import struct
import types
import typing
from typing import Any

__all__ = ["protocol", "ProtocolError", "encode_greeting", "encode_attrs",
           "encode_record_frame", "encode_lines_frame", "decode_attrs", "FrameParser", "Frame",
           "MAX_FRAME", "FRAME_GREETING", "FRAME_ATTRS", "FRAME_RECORD", "FRAME_LINES",
           "REC_LINES",
           "protocol_name_of"]

# A hostile or broken peer must not make us allocate without bound.  The
# largest legitimate frame is a content record (line_length_limit, 2048 by
# default) or a request holding a header (header_size_limit, 102400 by
# default, postconf(5)); 4 MiB leaves room for raised limits.
MAX_FRAME = 4 << 20

FRAME_GREETING = ord("P")
FRAME_ATTRS = ord("A")
FRAME_RECORD = ord("R")
FRAME_LINES = ord("N")
# What a reader's records() yields for a FRAME_LINES frame.  Postfix record
# types are single bytes, so this one can never be taken for a real record.
REC_LINES = 0x100

_LEN = struct.Struct(">I")
_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"),
                          check_circular=False).encode
_loads = json.JSONDecoder().decode


class ProtocolError(Exception):
    """The peer broke the protocol: wrong greeting, bad frame, bad attribute."""


# -- declaring messages -------------------------------------------------------

def protocol(name: str, message: str | None = None):
    """Class decorator: this frozen dataclass belongs to protocol ``name``.

    ``message`` is its name on the wire (default: the class name).
    """
    def wrap(cls):
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__}: @protocol needs a dataclass")
        wire = (message or cls.__name__).encode()
        if not 0 < len(wire) < 256:
            raise TypeError(f"{cls.__name__}: message name must be 1-255 bytes")
        cls.__attr_protocol__ = name
        cls.__attr_message__ = wire
        return cls
    return wrap


def protocol_name_of(cls) -> str:
    return cls.__attr_protocol__


_FIELD_CACHE: dict[type, tuple[tuple[str, Any], ...]] = {}


def _fields(cls) -> tuple[tuple[str, Any], ...]:
    """(name, type) of a dataclass's fields, resolved once per class."""
    fl = _FIELD_CACHE.get(cls)
    if fl is None:
        hints = typing.get_type_hints(cls)
        fl = tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))
        _FIELD_CACHE[cls] = fl
    return fl


# -- encode -------------------------------------------------------------------

def _to_plain(value):
    if dataclasses.is_dataclass(value):
        return {n: _to_plain(getattr(value, n)) for n, _ in _fields(type(value))}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def encode_greeting(protocol_name: str) -> bytes:
    body = b"P" + protocol_name.encode()
    return _LEN.pack(len(body)) + body


def encode_attrs(obj) -> bytes:
    """One frame for a @protocol dataclass instance."""
    cls = type(obj)
    wire = cls.__attr_message__
    plain = {}
    for name, tp in _fields(cls):
        v = getattr(obj, name)
        if tp is str or tp is int:
            plain[name] = v
        else:
            plain[name] = _to_plain(v)
    body = b"A" + bytes((len(wire),)) + wire + _dumps(plain).encode("ascii")
    return _LEN.pack(len(body)) + body


def encode_record_frame(rtype: int, data: bytes) -> bytes:
    n = len(data) + 2
    return _LEN.pack(n) + bytes((FRAME_RECORD, rtype)) + data


def encode_lines_frame(lines: list[bytes]) -> bytes:
    """One frame for many whole content lines (no LF inside any)."""
    body = b"\n".join(lines)
    if not lines or body.count(b"\n") != len(lines) - 1:
        raise ValueError("a lines frame needs one or more lines without LF")
    return _LEN.pack(len(body) + 1) + b"N" + body


# -- decode -------------------------------------------------------------------

def _check(value, tp, where: str):
    """Return value converted to tp, or raise ProtocolError."""
    if tp is str:
        if type(value) is str:
            return value
    elif tp is int:
        if type(value) is int:
            return value
    elif tp is bool:
        if type(value) is bool:
            return value
    elif tp is float:
        if type(value) in (int, float):
            return float(value)
    elif dataclasses.is_dataclass(tp):
        if type(value) is dict:
            return _build(tp, value, where)
    else:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (list, tuple) and type(value) is list:
            if origin is tuple:
                if len(args) == 2 and args[1] is Ellipsis:
                    return tuple(_check(v, args[0], where) for v in value)
                if len(args) != len(value):
                    raise ProtocolError(f"{where}: want {len(args)} items")
                return tuple(_check(v, a, where) for v, a in zip(value, args))
            return [_check(v, args[0], where) for v in value]
        if origin is dict and type(value) is dict:
            return {_check(k, args[0], where): _check(v, args[1], where)
                    for k, v in value.items()}
        if origin is typing.Union or origin is types.UnionType:
            if value is None and type(None) in args:
                return None
            for a in args:
                if a is type(None):
                    continue
                try:
                    return _check(value, a, where)
                except ProtocolError:
                    pass
    raise ProtocolError(f"{where}: bad value type {type(value).__name__}, want {tp}")


def _build(cls, plain: dict, where: str):
    fl = _fields(cls)
    if len(plain) != len(fl):
        names = {n for n, _ in fl}
        missing = names - plain.keys()
        unknown = plain.keys() - names
        raise ProtocolError(
            f"{where}: " + "; ".join(
                ([f"missing attribute(s) {', '.join(sorted(missing))}"] if missing else [])
                + ([f"unknown attribute(s) {', '.join(sorted(unknown))}"] if unknown else [])))
    kw = {}
    for name, tp in fl:
        try:
            v = plain[name]
        except KeyError:
            raise ProtocolError(f"{where}: missing attribute {name}") from None
        if tp is str:
            if type(v) is not str:
                raise ProtocolError(f"{where}.{name}: want str, got {type(v).__name__}")
            kw[name] = v
        elif tp is int:
            if type(v) is not int:
                raise ProtocolError(f"{where}.{name}: want int, got {type(v).__name__}")
            kw[name] = v
        else:
            kw[name] = _check(v, tp, f"{where}.{name}")
    return cls(**kw)


def decode_attrs(body: bytes, expect) -> Any:
    """Decode an attribute frame body (after the b"A") into one of ``expect``.

    ``expect``: a class or a tuple of classes (the replies or requests that
    are valid at this point of the conversation).
    """
    if not isinstance(expect, tuple):
        expect = (expect,)
    if len(body) < 2:
        raise ProtocolError("short attribute frame")
    n = body[0]
    wire = body[1:1 + n]
    for cls in expect:
        if cls.__attr_message__ == wire:
            break
    else:
        raise ProtocolError(
            f"unexpected message {wire.decode('ascii', 'replace')!r}, want "
            + " or ".join(c.__attr_message__.decode() for c in expect))
    try:
        plain = _loads(body[1 + n:].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"{cls.__name__}: malformed attribute encoding") from None
    if type(plain) is not dict:
        raise ProtocolError(f"{cls.__name__}: attributes are not an object")
    return _build(cls, plain, cls.__name__)


# -- framing (sans-I/O) -----------------------------------------------------

class Frame(typing.NamedTuple):
    kind: int          # FRAME_GREETING, FRAME_ATTRS, FRAME_RECORD or FRAME_LINES
    body: bytes        # after the kind byte


class FrameParser:
    """Feed bytes, take complete frames; for event-loop protocols."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self._buf = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[Frame]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            if n == 0 or n > self._max:
                raise ProtocolError(f"bad frame length {n}")
            if end - pos - 4 < n:
                break
            out.append(Frame(buf[pos + 4], bytes(buf[pos + 5:pos + 4 + n])))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held (0 at a frame boundary)."""
        return len(self._buf)
