"""The contract between master and the processes it starts.

File descriptors (Postfix's master_proto.h numbers, so the layout is the one a
Postfix hacker expects):

    0            /dev/null
    1, 2         master's stdout/stderr (/dev/null once master daemonizes)
    STATUS_FD=5  one end of a SOCK_SEQPACKET socketpair shared by every child
                 of one service generation. A child sends one status record
                 (pid, generation, status) per busy/idle change; it reads
                 nothing, and end-of-file means master went away or the
                 service was reloaded: the child finishes its work and exits.
    LISTEN_FD=6  the first listening endpoint (inet or unix socket, FIFO);
                 an inet service bound to several addresses passes
                 6, 7, ... and "-s N" in argv says how many.

SOCK_SEQPACKET rather than Postfix's pipe: every report is one atomic record
whatever the number of writers, and the child sees EOF the moment master's
end closes (also after kill -9 of master).

Environment: MAIL_CONFIG (the configuration directory) and GENERATION (hex,
the service generation: reports of an older generation are ignored).
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct

__all__ = [
    "STATUS_FD", "LISTEN_FD", "STAT_TAKEN", "STAT_AVAIL", "GENERATION_ENV",
    "STATUS_SIZE", "encode_status", "decode_status", "status_pair",
    "spawn", "notify",
]

STATUS_FD = 5       # master_proto.h MASTER_STATUS_FD
LISTEN_FD = 6       # master_proto.h MASTER_LISTEN_FD
STAT_TAKEN = 0      # master_proto.h MASTER_STAT_TAKEN: busy with a client
STAT_AVAIL = 1      # master_proto.h MASTER_STAT_AVAIL: ready for a client
GENERATION_ENV = "GENERATION"   # master_proto.h MASTER_GEN_NAME

_STATUS = struct.Struct("=iIi")  # pid, generation, status: master_proto.h MASTER_STATUS
STATUS_SIZE = _STATUS.size


def encode_status(pid: int, generation: int, status: int) -> bytes:
    return _STATUS.pack(pid, generation & 0xFFFFFFFF, status)


def decode_status(record: bytes) -> tuple[int, int, int] | None:
    """(pid, generation, status), or None for a record of the wrong size."""
    if len(record) != STATUS_SIZE:
        return None
    return _STATUS.unpack(record)


def status_pair() -> tuple[socket.socket, socket.socket]:
    """(master end, child end) of a new status channel."""
    master_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    master_end.setblocking(False)
    return master_end, child_end


def notify(generation: int, status: int, fd: int = STATUS_FD) -> bool:
    """Tell master we are busy or idle; False if master is gone."""
    try:
        os.write(fd, encode_status(os.getpid(), generation, status))
        return True
    except OSError:
        return False


_CHILD_DEFAULT_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM,
                          signal.SIGCHLD, signal.SIGUSR1)


def _high_dup(fd: int) -> int:
    # Above every target number, so dup2 actions can never clobber a source.
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64)


def spawn(argv: list[str], fds: dict[int, int], env: dict[str, str],
          executable: str | None = None) -> int:
    """Start argv with exactly `fds` ({child fd: our fd}) open; return its pid.

    Every other descriptor of ours is close-on-exec (Python's default), so a
    child never inherits another service's sockets. posix_spawn is a vfork
    underneath: cheap, and safe in a process with signal handlers.
    """
    temps = [_high_dup(src) for src in fds.values()]
    try:
        actions = [(os.POSIX_SPAWN_DUP2, tmp, target)
                   for tmp, target in zip(temps, fds.keys())]
        # Signal dispositions and mask are master's business, not the child's.
        return os.posix_spawn(executable or argv[0], argv, env,
                              file_actions=actions, setsigmask=(),
                              setsigdef=_CHILD_DEFAULT_SIGNALS)
    finally:
        for tmp in temps:
            os.close(tmp)
