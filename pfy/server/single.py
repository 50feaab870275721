"""single - the skeleton of a daemon that serves one client at a time.

    from pfy.server import single

    def deliver(ctx: single.ServerContext, sock: socket.socket) -> None:
        ...                       # blocking socket, closed by the skeleton

    def main() -> None:
        single.serve(deliver, pre_jail=open_tables)

Postfix's single_server(3): the process accepts one connection, reports busy
to master, runs the handler to completion, reports idle, and counts the
client towards max_use. Master starts more processes (up to maxproc) while
connections wait and none is idle. A handler may block: timers and the
master-gone check run between clients.

`-S` (stand-alone, as `showq -S` behind postqueue): one session on
stdin/stdout, passed to the handler as a socket when fd 0 is one; else the
handler gets sock=None and ctx.data["stdio"] = (0, 1), and does its own
blocking I/O on them, which works whatever they are (pipe, terminal,
regular file).  XXX pfy.server._stdio.StdioBridge could hand it a socket
on any fds 0 and 1, as multi does; no single daemon needs that yet.
"""

from __future__ import annotations

import os
import socket
from typing import Callable

from pfy.server import master_proto
from pfy.server.lifecycle import (Lifecycle, ServerContext, _die, fd_kind,
                                  is_client_error, warn_client)

__all__ = ["serve", "ServerContext"]

Handler = Callable[[ServerContext, "socket.socket | None"], None]


class _Single(Lifecycle):
    kind = "single"

    def __init__(self, handler: Handler, **kw):
        super().__init__(**kw)
        self.handler = handler
        self._busy = False

    def busy(self) -> bool:
        return self._busy

    def setup(self, loop) -> None:
        ctx = self.ctx
        if ctx.options.standalone:
            ctx.data["stdio"] = (0, 1)
            loop.call_soon(self._standalone)
            return
        self.socks = []
        for fd in self.listen_fds:
            if fd_kind(fd) != "stream":
                from pfy.server.lifecycle import Fatal
                _die(ctx, Fatal(f"{ctx.service}: descriptor {fd} is not a listening stream socket"))
            s = socket.socket(fileno=fd)
            s.setblocking(False)
            self.socks.append(s)
            loop.add_reader(fd, self._on_accept, s)

    def _standalone(self) -> None:
        stdin = None
        try:
            stdin = socket.socket(fileno=os.dup(0))
        except OSError:
            stdin = None        # a pipe or tty: the handler uses ctx.data["stdio"]
        self._run_one(stdin)
        self.ctx.stopping = True
        self.ctx.loop.stop()

    def _on_accept(self, lsock: socket.socket) -> None:
        if self.ctx.stopping:
            return
        if self.ctx.master_gone():
            # The status channel and a client became readable together:
            # an orphan takes no more work (the new master's processes will).
            self.stop_accepting()
            return
        try:
            conn, _ = lsock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return              # another process took it
        if self.pre_accept:
            self.pre_accept(self.ctx)
        self.disarm_idle()
        self.notify(master_proto.STAT_TAKEN)
        self._busy = True
        try:
            conn.setblocking(True)
            self._run_one(conn)
        finally:
            self._busy = False
            conn.close()
        if self.served_one():       # else stay "taken" until we exit
            self.notify(master_proto.STAT_AVAIL)
        self.arm_idle()
        self.maybe_exit()

    def _run_one(self, conn) -> None:
        try:
            self.handler(self.ctx, conn)
        except BaseException as exc:   # noqa: BLE001 - sorted below
            if is_client_error(exc):
                warn_client(self.ctx, exc)
            else:
                _die(self.ctx, exc)


def serve(handler: Handler, *, pre_jail=None, post_jail=None, pre_accept=None,
          solitary: bool = False, unlimited: bool = False, service_args: bool = False,
          argv: list[str] | None = None, program: str | None = None) -> None:
    """Run `handler(ctx, sock)` for each client, one at a time. Never returns.

    service_args=True: the words after master's options are the service's
    own, in ctx.options.service_args (pipe); else they are a fatal error."""
    _Single(handler, pre_jail=pre_jail, post_jail=post_jail, pre_accept=pre_accept,
            solitary=solitary, unlimited=unlimited, service_args=service_args,
            argv=argv, program=program).run()
