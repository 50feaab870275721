"""trigger - the skeleton of a daemon woken through a FIFO or a socket.

    from pfy.server import trigger

    def scan(ctx: trigger.ServerContext, request: bytes) -> None:
        ...                       # request: the trigger bytes, e.g. b"W"

    def main() -> None:
        trigger.serve(scan, solitary=True)

Postfix's trigger_server(3): on a fifo service the process reads whatever
bytes are in the FIFO (master keeps it open read-write, so there is never an
EOF); on a unix (or inet) service it accepts a connection and reads the
bytes the client sends before it closes. Either way the handler gets the
bytes of one wake-up (up to TRIGGER_BUF_SIZE), and may use ctx.call_later
for its own timers (qmgr's scans). Several bytes can arrive at once
(b"WW", b"AF"); the handler decides what each means (pfy.ipc's trigger codes).
"""

from __future__ import annotations

import os
import select
import socket
import time
from typing import Callable

from pfy.server import master_proto
from pfy.server._stdio import read_fd
from pfy.server.lifecycle import (Fatal, Lifecycle, ServerContext, _die, fd_kind)

__all__ = ["serve", "ServerContext", "TRIGGER_BUF_SIZE"]

TRIGGER_BUF_SIZE = 1024     # trigger_server.c: char buf[1024]
TRIGGER_READ_TIMEOUT = 10   # trigger_server.c: read_wait(fd, 10) on a socket

Handler = Callable[[ServerContext, bytes], None]


class _Trigger(Lifecycle):
    kind = "trigger"

    def __init__(self, handler: Handler, buf_size: int = TRIGGER_BUF_SIZE, **kw):
        super().__init__(**kw)
        self.handler = handler
        self.buf_size = buf_size
        self._busy = False

    def busy(self) -> bool:
        return self._busy

    def setup(self, loop) -> None:
        ctx = self.ctx
        if ctx.options.standalone:
            loop.call_soon(self._standalone)
            return
        for fd in self.listen_fds:
            kind = fd_kind(fd)
            if kind == "fifo":
                os.set_blocking(fd, False)
                loop.add_reader(fd, self._on_fifo, fd)
            elif kind == "stream":
                s = socket.socket(fileno=fd)
                s.setblocking(False)
                loop.add_reader(fd, self._on_accept, s)
            elif kind == "dgram":
                s = socket.socket(fileno=fd)
                s.setblocking(False)
                loop.add_reader(fd, self._on_dgram, s)
            else:
                _die(ctx, Fatal(f"{ctx.service}: descriptor {fd} is not a FIFO or socket"))

    def _standalone(self) -> None:
        # Any fd 0 will do (a regular file, /dev/null, a non-blocking pipe);
        # an error must end the process here: raised from a loop callback
        # it would only be logged by asyncio, and the loop would run on.
        try:
            data = read_fd(0, self.buf_size)
        except OSError as exc:
            _die(self.ctx, Fatal(f"standard input: read error: {exc.strerror}"))
        self._wakeup(data)
        self.ctx.stopping = True
        self.ctx.loop.stop()

    def _on_fifo(self, fd: int) -> None:
        if self.ctx.stopping:
            return
        try:
            data = os.read(fd, self.buf_size)
        except (BlockingIOError, InterruptedError):
            return              # another process of this service read it
        if data:
            self._wakeup(data)

    def _on_dgram(self, s: socket.socket) -> None:
        if self.ctx.stopping:
            return
        try:
            data = s.recv(self.buf_size)
        except (BlockingIOError, InterruptedError):
            return
        self._wakeup(data)

    def _on_accept(self, lsock: socket.socket) -> None:
        if self.ctx.stopping:
            return
        try:
            conn, _ = lsock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        with conn:
            data = _read_until_eof(conn, self.buf_size)
        if data:
            self._wakeup(data)

    def _wakeup(self, data: bytes) -> None:
        if self.ctx.master_gone():
            # An orphan (master killed with -9) must not race the new
            # master's process of this service (pickup draining maildrop/).
            self.stop_accepting()
            return
        if self.pre_accept:
            self.pre_accept(self.ctx)
        self.disarm_idle()
        # A solitary service (maxproc 1: qmgr, pickup) can have no second
        # process, so busy/idle reports after the first (which tells master
        # this process works) change nothing there; they cost two writes
        # here and two wake-ups of master per trigger (qmgr is woken for
        # every message).
        report = not (self.ctx.options.solitary and self.ctx.use_count > 0)
        if report:
            self.notify(master_proto.STAT_TAKEN)
        self._busy = True
        try:
            self.handler(self.ctx, data)
        except BaseException as exc:   # noqa: BLE001 - fatal or panic
            _die(self.ctx, exc)
        finally:
            self._busy = False
        if self.served_one() and report:    # else stay "taken" until we exit
            self.notify(master_proto.STAT_AVAIL)
        self.arm_idle()
        self.maybe_exit()


def _read_until_eof(conn: socket.socket, limit: int) -> bytes:
    """The bytes a trigger client sends before it hangs up (pfy.ipc.trigger)."""
    data = b""
    deadline = time.monotonic() + TRIGGER_READ_TIMEOUT
    try:
        while len(data) < limit:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([conn], [], [], max(0.0, left))
            if not ready:
                break
            chunk = conn.recv(limit - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data


def serve(handler: Handler, *, pre_jail=None, post_jail=None, pre_accept=None,
          solitary: bool = False, unlimited: bool = False, service_args: bool = False,
          buf_size: int = TRIGGER_BUF_SIZE,
          argv: list[str] | None = None, program: str | None = None) -> None:
    """Run `handler(ctx, request_bytes)` for each wake-up. Never returns.

    service_args=True: the words after master's options are the service's
    own, in ctx.options.service_args; else they are a fatal error.
    buf_size: the most bytes one wake-up (one datagram) can carry."""
    _Trigger(handler, buf_size=buf_size, pre_jail=pre_jail, post_jail=post_jail,
             pre_accept=pre_accept, solitary=solitary, unlimited=unlimited,
             service_args=service_args, argv=argv, program=program).run()
