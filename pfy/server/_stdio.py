"""Standard input and output for a skeleton's stand-alone mode (-S).

smtpd -S behind `sendmail -bs` talks SMTP on whatever its caller made of
fds 0 and 1: pipes, a terminal, a socket, regular files
(`sendmail -bs < commands > transcript`), /dev/null.  asyncio's pipe
transports refuse regular files ("Pipe transport is only for pipes,
sockets and character devices") and epoll refuses /dev/null (EPERM), so the
session gets one end of a socketpair instead, and two threads copy bytes
between the other end and fds 0 and 1 with plain blocking read(2) and
write(2), whatever the fds are:

    bridge = StdioBridge(ctx)           # Fatal when fd 0 or 1 is not open
    reader, writer = await asyncio.open_connection(sock=bridge.sock)
    ...                                 # the session; then close the writer
    bridge.close()                      # fd 1 has it all; Fatal on a read or
                                        # write error on fd 0 or 1

Flow control stays end to end: each thread holds one buffer and blocks
while the next hop is full, so a slow reader of fd 1 stalls the session's
drain() as a socket peer would.  No fd's flags are changed (asyncio's pipe
transports set O_NONBLOCK, which outlives the process on a shared terminal
or pipe).  Everything the session wrote reaches fd 1 before the process
exits: StdioBridge registers finish() with ctx.at_exit, so this holds after
a fatal error or a panic too (for what had left asyncio's buffer by then).
A caller that stops reading stalls that exit only until the daemon_timeout
watchdog, as a stalled client stalls any daemon.
"""

from __future__ import annotations

import os
import select
import socket
import threading

from pfy.server.lifecycle import Fatal, ServerContext

__all__ = ["StdioBridge", "read_fd"]

# One read(2) or write(2): a Linux pipe's capacity (pipe(7)), so one read
# takes all that a full pipe holds; the socketpair's buffers hold the rest.
BUF_SIZE = 65536


def read_fd(fd: int, size: int) -> bytes:
    """os.read that also waits on a non-blocking fd (O_NONBLOCK set by
    whoever shares it with us), instead of failing with EAGAIN."""
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            _wait(fd, select.POLLIN)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            _wait(fd, select.POLLOUT)


def _wait(fd: int, events: int) -> None:
    poller = select.poll()
    poller.register(fd, events)
    poller.poll()           # returns on the event, or on POLLERR/POLLHUP: the
                            # next read/write then says which


class StdioBridge:
    """fds 0 and 1 as one stream socket, `sock`, for asyncio (see above)."""

    def __init__(self, ctx: ServerContext, infd: int = 0, outfd: int = 1):
        # A closed fd 0 or 1 would be reused by the socketpair itself.
        for fd, name in ((infd, "standard input"), (outfd, "standard output")):
            try:
                os.fstat(fd)
            except OSError as exc:
                raise Fatal(f"{name}: {exc.strerror}") from None
        self.infd, self.outfd = infd, outfd
        self.sock, self._far = socket.socketpair()
        self.error: str | None = None   # first read error on fd 0 / write error on fd 1
        self._in = threading.Thread(target=self._copy_in, name="stdin", daemon=True)
        self._out = threading.Thread(target=self._copy_out, name="stdout", daemon=True)
        self._in.start()
        self._out.start()
        ctx.at_exit(self.finish)

    def _copy_in(self) -> None:
        try:
            while True:
                try:
                    data = read_fd(self.infd, BUF_SIZE)
                except OSError as exc:
                    self._failed(f"standard input: read error: {exc.strerror}")
                    return
                if not data:
                    return
                try:
                    self._far.sendall(data)
                except OSError:
                    return      # the session is over: the rest is not for it
        finally:
            _shutdown(self._far, socket.SHUT_WR)    # end of input for the session

    def _copy_out(self) -> None:
        while True:
            try:
                data = self._far.recv(BUF_SIZE)
            except OSError:
                return
            if not data:
                return          # the session closed its end and all is written
            try:
                _write_all(self.outfd, data)
            except OSError as exc:
                # Nobody takes our output any more: the session sees its
                # connection go, as with a client that hangs up.
                self._failed(f"standard output: write error: {exc.strerror}")
                _shutdown(self._far, socket.SHUT_RDWR)
                return

    def _failed(self, text: str) -> None:
        if self.error is None:
            self.error = text

    def finish(self) -> None:
        """Wait until everything written to `sock` has reached fd 1.

        The session's end of the socketpair gets an EOF here if it is still
        open (a fatal error or panic in the session); the stdout thread
        then writes what it holds and stops.  The stdin thread may still
        be waiting on a terminal: it goes with the process."""
        _shutdown(self.sock, socket.SHUT_WR)
        self._out.join()

    def close(self) -> None:
        """finish(), then Fatal if fd 0 could not be read or fd 1 written:
        the caller did not get the whole dialogue."""
        self.finish()
        if self.error is not None:
            raise Fatal(self.error)


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass                # closed already, or never connected
