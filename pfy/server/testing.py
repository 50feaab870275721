"""Run one daemon on its skeleton without master (tests/proc).

    from pfy.server.testing import start_daemon, unix_listener

    lsock, path = unix_listener(tmp_path / "private" / "rewrite")
    with start_daemon("trivial-rewrite", config_dir=tmp_path, listen=[lsock],
                      args=["-t", "unix"]) as d:
        d.wait_status(STAT_AVAIL)            # optional: reports as master sees them
        ... connect to path, talk ...
        d.master_exit()                      # as if master went away
        assert d.wait(5) == 0

The daemon gets the fd layout master gives it (pfy.server.master_proto):
the status channel on fd 5 and the listening endpoints from fd 6, and
MAIL_CONFIG=config_dir. The command is a file in daemon_directory (or any
path), started the way master starts it.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import socket
import subprocess
import threading
import time

from pfy.server import master_proto
from pfy.server.paths import daemon_argv, default_daemon_directory

__all__ = ["DaemonProcess", "start_daemon", "unix_listener", "inet_listener", "fifo_listener"]


def unix_listener(path) -> tuple[socket.socket, str]:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(100)
    return s, path


def inet_listener(host: str = "127.0.0.1") -> tuple[socket.socket, int]:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(100)
    return s, s.getsockname()[1]


def fifo_listener(path) -> tuple[int, str]:
    """A FIFO opened read-write, as master opens it (never an EOF)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path):
        os.mkfifo(path, 0o622)
    return os.open(path, os.O_RDWR | os.O_NONBLOCK), path


class DaemonProcess:
    def __init__(self, pid: int, master_end: socket.socket, argv: list[str]):
        self.pid = pid
        self.master_end = master_end
        self.argv = argv
        self.returncode: int | None = None
        # Drain the status channel at once, as master does: a SOCK_SEQPACKET
        # peer holds only net.unix.max_dgram_qlen (10) unread records, and
        # the daemon's next report would block.
        self._reports: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        fd = self.master_end.fileno()
        while True:
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    if self.master_end.fileno() < 0:
                        break
                    continue
                data = os.read(fd, 64)
            except (OSError, ValueError):
                break
            if not data:
                break
            rep = master_proto.decode_status(data)
            if rep is not None:
                self._reports.put(rep)
        self._reports.put(None)

    def read_status(self, timeout: float = 5.0) -> tuple[int, int, int] | None:
        """Next (pid, generation, status) report, or None on timeout/EOF."""
        try:
            rep = self._reports.get(timeout=timeout)
        except queue.Empty:
            return None
        if rep is None:
            self._reports.put(None)     # EOF stays EOF
        return rep

    def wait_status(self, status: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            rep = self.read_status(left)
            if rep is None:
                return False
            if rep[2] == status:
                return True
        return False

    def master_exit(self) -> None:
        """Close master's end of the status channel, as a dying master does."""
        self.master_end.close()
        self._reader.join(2)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(st)
        return self.returncode

    def wait(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.argv, timeout)
            time.sleep(0.01)
        return self.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def __enter__(self) -> "DaemonProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.poll() is None:
            self.kill()
            self.wait(10)
        if self.master_end.fileno() >= 0:
            self.master_end.close()


def start_daemon(command: str, *, config_dir, listen=(), args=(), env=None,
                 generation: int = 1, stderr=None) -> DaemonProcess:
    """Start `command` (a name in daemon_directory, or a path) under a fake master.

    listen: sockets or fds (fd 6, 7, ...); args: the master.cf-style argv
    after the command name (e.g. ["-t", "unix", "-o", "max_idle=2s"]);
    stderr: a file object or fd for the daemon's fd 2 (default: inherited).
    """
    path = command if os.sep in command else os.path.join(default_daemon_directory(), command)
    executable, prefix = daemon_argv(path)
    fds_in = [x if isinstance(x, int) else x.fileno() for x in listen]
    # -s before the other words, as master puts it (service words follow).
    count = ["-s", str(len(fds_in))] if len(fds_in) > 1 and "-s" not in args else []
    argv = prefix + count + list(args)
    master_end, child_end = master_proto.status_pair()
    devnull = os.open(os.devnull, os.O_RDWR)
    err = stderr if isinstance(stderr, int) else (stderr.fileno() if stderr is not None else 2)
    fds = {0: devnull, 1: err, 2: err, master_proto.STATUS_FD: child_end.fileno()}
    for i, fd in enumerate(fds_in):
        fds[master_proto.LISTEN_FD + i] = fd
    child_env = dict(os.environ if env is None else env)
    child_env["MAIL_CONFIG"] = os.fspath(config_dir)
    child_env[master_proto.GENERATION_ENV] = "%x" % generation
    try:
        pid = master_proto.spawn(argv, fds, child_env, executable=executable)
    finally:
        os.close(devnull)
        child_end.close()
    return DaemonProcess(pid, master_end, argv)
