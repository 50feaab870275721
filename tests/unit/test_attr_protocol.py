"""Attribute protocol: strict codec, framing, blocking and asyncio channels."""

import asyncio
import socket
import threading
import time
from dataclasses import dataclass

import pytest

from pfy.ipc.attr import (FRAME_ATTRS, FRAME_RECORD, FrameParser, ProtocolError,
                          decode_attrs, encode_attrs, encode_greeting,
                          encode_record_frame, protocol)
from pfy.ipc.channel import AsyncAttrConnection, AttrConnection
from pfy.queue.record import REC_CONT, REC_NORM

PROTO = "test_echo_protocol"


@protocol(PROTO)
@dataclass(frozen=True)
class Hop:
    host: str
    port: int


@protocol(PROTO)
@dataclass(frozen=True)
class EchoRequest:
    sender: str
    count: int
    flag: bool
    tags: list[str]
    hops: list[Hop]
    extra: dict[str, int]
    note: str | None


@protocol(PROTO, message="reply")
@dataclass(frozen=True)
class EchoReply:
    status: int
    text: str


def sample():
    return EchoRequest("a@x", 3, True, ["x", "y"], [Hop("mx", 25)], {"n": 1}, None)


def body(frame_bytes):
    [f] = FrameParser().feed(frame_bytes)
    assert f.kind == FRAME_ATTRS
    return f.body


# -- codec ---------------------------------------------------------------------

def test_roundtrip_all_types():
    assert decode_attrs(body(encode_attrs(sample())), EchoRequest) == sample()


def test_undecodable_bytes_survive_as_surrogates():
    r = EchoReply(1, "caf\udce9 ü")
    assert decode_attrs(body(encode_attrs(r)), EchoReply) == r


def raw(name: bytes, json_text: bytes) -> bytes:
    return bytes((len(name),)) + name + json_text


@pytest.mark.parametrize("payload, why", [
    (raw(b"reply", b'{"status":1}'), "missing attribute"),
    (raw(b"reply", b'{"status":1,"text":"x","evil":2}'), "unknown attribute"),
    (raw(b"reply", b'{"status":"1","text":"x"}'), "want int"),
    (raw(b"reply", b'{"status":true,"text":"x"}'), "want int"),
    (raw(b"reply", b'{"status":1,"text":2}'), "want str"),
    (raw(b"reply", b'[1,2]'), "not an object"),
    (raw(b"reply", b'{"status":1,'), "malformed"),
    (raw(b"EchoRequest", b'{}'), "unexpected message"),
    (b"", "short"),
])
def test_strict_decoding(payload, why):
    with pytest.raises(ProtocolError) as info:
        decode_attrs(payload, EchoReply)
    assert why in str(info.value), f"got {info.value} want {why}"


def test_nested_strictness():
    good = encode_attrs(sample())
    bad = good.replace(b'"port":25', b'"port":"25"')
    with pytest.raises(ProtocolError, match="port"):
        decode_attrs(body(bad.replace(good[:4], len(bad[4:]).to_bytes(4, "big"))), EchoRequest)


def test_one_of_several_expected():
    b = body(encode_attrs(EchoReply(0, "ok")))
    assert decode_attrs(b, (EchoRequest, EchoReply)) == EchoReply(0, "ok")


def test_frame_parser_byte_by_byte():
    data = (encode_greeting(PROTO) + encode_attrs(EchoReply(0, "ok"))
            + encode_record_frame(REC_NORM, b"line"))
    p = FrameParser()
    frames = []
    for i in range(len(data)):
        frames += p.feed(data[i:i + 1])
    assert [f.kind for f in frames] == [ord("P"), FRAME_ATTRS, FRAME_RECORD]
    assert frames[2].body == b"Nline" and p.pending == 0


@pytest.mark.parametrize("head", [b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"])
def test_frame_parser_rejects_bad_lengths(head):
    with pytest.raises(ProtocolError):
        FrameParser().feed(head + b"A")


# -- blocking channel ------------------------------------------------------------

def serve(path, handler, greeting=PROTO):
    """A thread that accepts one connection and runs handler(conn)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def run():
        s, _ = srv.accept()
        conn = AttrConnection(s)
        conn.greet(greeting)
        try:
            handler(conn)
        except EOFError:
            pass
        finally:
            conn.close()
            srv.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def echo_handler(conn):
    while True:
        req = conn.receive(EchoRequest)
        lines = list(conn.records())
        conn.send(EchoReply(len(lines), req.sender))
        for rtype, data in lines:
            conn.send_record(rtype, data)
        conn.end_records()
        conn.flush()


def test_blocking_request_and_record_stream(tmp_path):
    path = str(tmp_path / "s")
    t = serve(path, echo_handler)
    with AttrConnection.connect(path, PROTO, timeout=5) as c:
        c.send(sample())
        sent = [(REC_NORM, b"line %d" % i) for i in range(1000)] + [(REC_CONT, b"x" * 3000)]
        for r in sent:
            c.send_record(*r)
        c.end_records()
        c.flush()
        assert c.receive(EchoReply) == EchoReply(1001, "a@x")
        assert list(c.records()) == sent
    t.join(5)


def test_client_checks_greeting(tmp_path):
    path = str(tmp_path / "s")
    t = serve(path, lambda conn: None, greeting="other_protocol")
    with pytest.raises(ProtocolError, match="other_protocol"):
        AttrConnection.connect(path, PROTO, timeout=5)
    t.join(5)


def test_peer_closing_is_eof(tmp_path):
    path = str(tmp_path / "s")
    t = serve(path, lambda conn: None)
    c = AttrConnection.connect(path, PROTO, timeout=5)
    with pytest.raises(EOFError):
        c.receive(EchoReply)
    c.close()
    t.join(5)


def test_echo_round_trip_speed(tmp_path):
    """A relay makes tens of round trips per message: each must be cheap."""
    path = str(tmp_path / "s")

    def handler(conn):
        while True:
            req = conn.receive(EchoRequest)
            conn.send(EchoReply(req.count, req.sender))
            conn.flush()
    t = serve(path, handler)
    c = AttrConnection.connect(path, PROTO, timeout=5)
    n = 2000
    req = sample()
    start = time.perf_counter()
    for _ in range(n):
        c.request(req, EchoReply)
    per = (time.perf_counter() - start) / n
    c.close()
    t.join(5)
    print(f"attr echo round trip: {per * 1e6:.0f} us")
    # Generous bound for a loaded 2-core box; typical is ~50-100 us.
    assert per < 0.002


# -- asyncio ---------------------------------------------------------------------

def test_asyncio_server_and_client(tmp_path):
    path = str(tmp_path / "s")

    async def main():
        async def handle(reader, writer):
            conn = AsyncAttrConnection(reader, writer)
            conn.greet(PROTO)
            try:
                while True:
                    req = await conn.receive(EchoRequest)
                    lines = [r async for r in conn.records()]
                    conn.send(EchoReply(len(lines), req.sender))
                    await conn.flush()
            except EOFError:
                pass
            conn.close()

        server = await asyncio.start_unix_server(handle, path)
        async with server:
            c = await AsyncAttrConnection.open(path, PROTO, timeout=5)
            for k in range(3):
                c.send(sample())
                for i in range(k * 10):
                    c.send_record(REC_NORM, b"x")
                c.end_records()
                await c.flush()
                assert await c.receive(EchoReply) == EchoReply(k * 10, "a@x")
            # blocking client against the asyncio server too
            def blocking():
                with AttrConnection.connect(path, PROTO, timeout=5) as b:
                    b.send(sample())
                    b.end_records()
                    b.flush()
                    return b.receive(EchoReply)
            assert await asyncio.get_running_loop().run_in_executor(None, blocking) == EchoReply(0, "a@x")
            c.close()
            await c.wait_closed()

    asyncio.run(main())
