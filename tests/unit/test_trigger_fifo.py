"""FIFO and unix-socket triggers: never block, say when nobody listens."""

import os
import socket
import stat
import threading
import time

from pfy.ipc.trigger import (FifoListener, fifo_trigger, make_fifo,
                             parse_requests, trigger, unix_trigger)


def test_fifo_without_reader_does_not_block(tmp_path):
    path = str(tmp_path / "qmgr")
    make_fifo(path)
    start = time.monotonic()
    assert fifo_trigger(path, b"I") is False          # ENXIO: nobody listens
    assert time.monotonic() - start < 1
    assert fifo_trigger(str(tmp_path / "missing"), b"I") is False


def test_fifo_delivers_to_listener(tmp_path):
    path = str(tmp_path / "pickup")
    make_fifo(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o622
    lst = FifoListener(path)
    assert lst.read_nowait() == b""
    assert fifo_trigger(path, b"W") and fifo_trigger(path, b"A")
    assert lst.read_nowait() == b"WA"
    # Writers came and went: no EOF storm, still just "nothing pending".
    assert lst.read_nowait() == b""
    lst.close()


def test_full_fifo_is_not_an_error(tmp_path):
    path = str(tmp_path / "qmgr")
    make_fifo(path)
    lst = FifoListener(path)
    for _ in range(70000):          # beyond the 64 KiB pipe buffer
        if not fifo_trigger(path, b"I"):
            raise AssertionError("trigger reported failure on a full pipe")
    assert set(lst.read_nowait()) == {ord("I")}
    lst.close()


def test_make_fifo_replaces_a_regular_file(tmp_path):
    path = str(tmp_path / "f")
    open(path, "w").close()
    make_fifo(path)
    assert stat.S_ISFIFO(os.stat(path).st_mode)


def test_parse_requests_collapses_and_orders_as_qmgr():
    assert parse_requests(b"IIDDAFI") == b"AFDI"
    assert parse_requests(b"WWW") == b"W"
    assert parse_requests(b"Zx") == b"Zx"


def test_unix_trigger(tmp_path):
    path = str(tmp_path / "sock")
    assert unix_trigger(path, b"W") is False            # no socket
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    got = []

    def accept():
        s, _ = srv.accept()
        data = b""
        while chunk := s.recv(10):
            data += chunk
        got.append(data)
        s.close()
    t = threading.Thread(target=accept)
    t.start()
    assert trigger(path, b"W") is True                 # by file type
    t.join(5)
    srv.close()
    assert got == [b"W"]
    assert unix_trigger(path, b"W") is False            # refused now
