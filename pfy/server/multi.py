"""multi - the skeleton of a daemon that serves many clients at once.

    from pfy.server import multi

    async def session(ctx: multi.ServerContext, reader, writer) -> None:
        ...                       # asyncio streams; closed by the skeleton

    def main() -> None:
        multi.serve(session, pre_jail=load_tables)

Postfix's multi_server(3): one process, one event loop, many clients. As in
Postfix, the process reports itself busy to master only while it accepts, so
master keeps one process per service while it keeps up. With
max_clients=N the process reports busy and stops accepting once it has N
clients (master then starts another one, up to maxproc: CPU parallelism),
and idle again when it drops below N.

Blocking work (fsync, per-user deliveries) belongs in
`await ctx.loop.run_in_executor(None, fn)`, never on the loop itself.
On master going away (or reload) the process accepts no more and exits when
its last client is done.

`-S` (stand-alone, as `smtpd -S` behind `sendmail -bs`): one session on
fds 0 and 1, whatever they are (pipes, a terminal, regular files, /dev/null:
pfy.server._stdio); the process exits when it ends, once everything written
has reached fd 1, and with a fatal error if fd 0 or 1 failed.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Awaitable, Callable

from pfy.server import master_proto
from pfy.server._stdio import StdioBridge
from pfy.server.lifecycle import (Fatal, Lifecycle, ServerContext, _die, fd_kind,
                                  is_client_error, warn_client)

__all__ = ["serve", "ServerContext"]

Handler = Callable[[ServerContext, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class _Multi(Lifecycle):
    kind = "multi"

    def __init__(self, handler: Handler, max_clients: int | None = None, **kw):
        super().__init__(**kw)
        self.handler = handler
        self.max_clients = max_clients
        self.clients = 0
        self.socks: list[socket.socket] = []
        self._paused = False
        self.tasks: set[asyncio.Task] = set()

    def busy(self) -> bool:
        return self.clients > 0

    def preload(self) -> None:
        import asyncio.unix_events   # noqa: F401 - loaded lazily otherwise
        import asyncio.selector_events   # noqa: F401

    def setup(self, loop) -> None:
        ctx = self.ctx
        if ctx.options.standalone:
            self.tasks.add(loop.create_task(self._standalone()))
            return
        for fd in self.listen_fds:
            if fd_kind(fd) != "stream":
                _die(ctx, Fatal(f"{ctx.service}: descriptor {fd} is not a listening stream socket"))
            s = socket.socket(fileno=fd)
            s.setblocking(False)
            self.socks.append(s)
        self._resume()

    def _resume(self) -> None:
        for s in self.socks:
            self.ctx.loop.add_reader(s.fileno(), self._on_accept, s)

    def _pause(self) -> None:
        for s in self.socks:
            self.ctx.loop.remove_reader(s.fileno())

    async def _standalone(self) -> None:
        # fds 0 and 1 may be anything (a file, /dev/null): see _stdio.  An
        # error here must end the process, not die unseen in this task.
        ctx = self.ctx
        try:
            bridge = StdioBridge(ctx)
            reader, writer = await asyncio.open_connection(sock=bridge.sock)
        except BaseException as exc:   # noqa: BLE001 - fatal or panic
            _die(ctx, exc)
        await self._session(reader, writer)
        try:
            await writer.wait_closed()      # asyncio's buffer is in the socket
        except Exception:   # noqa: BLE001 - the session has had its say
            pass
        ctx.stopping = True
        try:
            bridge.close()                  # and from there on fd 1
        except Fatal as exc:
            _die(ctx, exc)
        ctx.loop.stop()

    def _on_accept(self, lsock: socket.socket) -> None:
        if self.ctx.stopping:
            return
        try:
            conn, _ = lsock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if self.pre_accept:
            self.pre_accept(self.ctx)
        self.clients += 1
        self.disarm_idle()
        # The loop keeps only weak references to tasks: hold them ourselves.
        task = self.ctx.loop.create_task(self._client(conn))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        # Master needs to know only when we stop being available.  A
        # taken/available pair around every client (Postfix's multi_server
        # sends one around every request) tells it nothing new and costs two
        # writes here and two wake-ups of master per connection; the first
        # pair is sent, so master knows this process has served a client (a
        # later crash is not a "bad command startup").
        first = self.ctx.use_count == 0
        if not self.served_one():
            # max_use or master gone: "taken" for good, so master starts a
            # replacement as soon as a client waits.
            self.notify(master_proto.STAT_TAKEN)
        elif self.max_clients and self.clients >= self.max_clients:
            self.notify(master_proto.STAT_TAKEN)
            self._paused = True
            self._pause()           # master starts another process
        elif first:
            self.notify(master_proto.STAT_TAKEN)
            self.notify(master_proto.STAT_AVAIL)

    async def _client(self, conn: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError as exc:
            conn.close()
            warn_client(self.ctx, exc)
            self._client_done()
            return
        await self._session(reader, writer)
        self._client_done()

    async def _session(self, reader, writer) -> None:
        try:
            await self.handler(self.ctx, reader, writer)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except BaseException as exc:   # noqa: BLE001 - sorted below
            if is_client_error(exc):
                warn_client(self.ctx, exc)
            else:
                _die(self.ctx, exc)
        finally:
            try:
                writer.close()
            except Exception:   # noqa: BLE001 - peer already gone
                pass

    def _client_done(self) -> None:
        self.clients -= 1
        if self._paused and not self.ctx.stopping and self.clients < self.max_clients:
            self._paused = False
            self.notify(master_proto.STAT_AVAIL)
            self._resume()
        if self.clients == 0:
            self.arm_idle()
        self.maybe_exit()

    def stop_accepting(self) -> None:
        if not self._paused:
            self._pause()
            self._paused = True
        super().stop_accepting()


def serve(handler: Handler, *, pre_jail=None, post_jail=None, pre_accept=None,
          max_clients: int | None = None, solitary: bool = False,
          unlimited: bool = False, service_args: bool = False,
          argv: list[str] | None = None, program: str | None = None) -> None:
    """Run `await handler(ctx, reader, writer)` for each client, many at once.
    Never returns.

    service_args=True: the words after master's options are the service's
    own, in ctx.options.service_args; else they are a fatal error."""
    _Multi(handler, max_clients=max_clients, pre_jail=pre_jail, post_jail=post_jail,
           pre_accept=pre_accept, solitary=solitary, unlimited=unlimited,
           service_args=service_args, argv=argv, program=program).run()
