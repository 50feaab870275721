"""The queue folders under queue_directory and moves between them."""

from __future__ import annotations

import errno
import os
import time
from typing import Callable, Iterator, NamedTuple

from pfy.queue import queue_id as _qid
from pfy.queue.queue_file import (
    STAT_READY, CorruptQueueFile, QueueFileReader, QueueFileWriter, is_temp_name,
)

__all__ = ["Queue", "QueueEntry", "QUEUE_NAMES", "LOG_QUEUE_NAMES", "DIR_MODES",
           "TEMP_FILE_MAX_AGE"]

# Message queues, then the per-message log folders (bounce/defer/trace hold
# logfiles named after the queue ID: bounce(8)), then Postfix's two others:
# saved (postsuper -r keeps copies there) and flush (fast flush logs).
MESSAGE_QUEUE_NAMES = ("maildrop", "incoming", "active", "deferred", "hold",
                       "corrupt", "saved")
LOG_QUEUE_NAMES = ("bounce", "defer", "trace", "flush")
QUEUE_NAMES = MESSAGE_QUEUE_NAMES + LOG_QUEUE_NAMES

# Folder modes: every queue 0700 owned by mail_owner, except maildrop.
# Postfix makes maildrop 1730 group postdrop and lets the set-group-ID
# postdrop write there; Python cannot run set-group-ID, so maildrop is
# 3733 owned by mail_owner and its group: anyone may drop a file in, nobody
# but mail_owner may list it, the sticky bit stops users removing each
# other's files, and set-group-ID on the folder gives every file
# mail_owner's group so pickup can read what users cannot (postdrop(1)).
DIR_MODES = {"maildrop": 0o3733}
_DIR_MODES = DIR_MODES          # old private name, kept for callers
# Postfix's postsuper removes leftover temporary files after this age
# (postsuper.c MAX_TEMP_AGE: one day); a temp file whose writer process is
# gone is removed at once.
TEMP_FILE_MAX_AGE = 24 * 3600


class QueueEntry(NamedTuple):
    """One queue file: which queue, which ID, where (immutable)."""
    queue_name: str
    queue_id: str
    path: str


class Queue:
    """The queue folders of one instance.

    ``root`` is queue_directory, or "." / "" for a daemon that already
    chdir'ed or chrooted into it.  Hashing follows hash_queue_depth and
    hash_queue_names; IDs follow enable_long_queue_ids.
    """

    def __init__(self, root: str, hash_queue_depth: int = 1,
                 hash_queue_names: tuple[str, ...] | list[str] = ("deferred", "defer"),
                 long_ids: bool = False, fsync: bool = True):
        self.root = root
        self.hash_queue_depth = hash_queue_depth
        self.hash_queue_names = frozenset(hash_queue_names)
        self.long_ids = long_ids
        self.fsync = fsync

    # -- paths ----------------------------------------------------------------
    def dir(self, queue_name: str) -> str:
        return os.path.join(self.root, queue_name)

    def path(self, queue_name: str, queue_id: str) -> str:
        """Where queue_id lives (or would live) in queue_name."""
        if queue_name in self.hash_queue_names:
            return os.path.join(self.root, queue_name,
                                *_qid.hash_dirs(queue_id, self.hash_queue_depth),
                                queue_id)
        return os.path.join(self.root, queue_name, queue_id)

    def entry(self, queue_name: str, queue_id: str) -> QueueEntry:
        if not _qid.is_queue_id(queue_id):
            raise ValueError(f"bad queue ID {queue_id!r}")
        return QueueEntry(queue_name, queue_id, self.path(queue_name, queue_id))

    def log_path(self, kind: str, queue_id: str) -> str:
        """The bounce/defer/trace logfile of a message (named by its ID)."""
        if kind not in LOG_QUEUE_NAMES:
            raise ValueError(f"not a log queue: {kind!r}")
        return self.path(kind, queue_id)

    def make_dirs(self) -> None:
        """Create missing queue folders with Postfix's modes (no chown)."""
        os.makedirs(self.root or ".", exist_ok=True)
        for name in QUEUE_NAMES:
            try:
                os.mkdir(self.dir(name), _DIR_MODES.get(name, 0o700))
            except FileExistsError:
                continue
            os.chmod(self.dir(name), _DIR_MODES.get(name, 0o700))

    # -- write ---------------------------------------------------------------
    def create(self, queue_name: str = "incoming", extra_mode: int = 0,
               now: float | None = None) -> QueueFileWriter:
        """A writer for a new message in queue_name (see QueueFileWriter).

        ``extra_mode``: permission bits added when the file is complete
        (postdrop's maildrop files: 0o044, so pickup can read them).
        """
        return QueueFileWriter(
            self.dir(queue_name), lambda qid: self.path(queue_name, qid),
            long_ids=self.long_ids, extra_mode=extra_mode, fsync=self.fsync,
            now=now)

    # -- read ----------------------------------------------------------------
    def open(self, entry: QueueEntry, writable: bool = False) -> QueueFileReader:
        return QueueFileReader(entry.path, writable=writable, queue_id=entry.queue_id)

    def ready_files(self, queue_name: str) -> Iterator[QueueEntry]:
        """Complete queue files in queue_name (hashed subfolders included).

        Skips temp files, names that are not queue IDs, and files whose
        mode lacks the 0700 "ready" bits.  Order is the file system's;
        callers that want oldest first sort by mtime themselves.
        """
        yield from self._scan(self.dir(queue_name), queue_name,
                              self.hash_queue_depth
                              if queue_name in self.hash_queue_names else 0)

    def _scan(self, path: str, queue_name: str, depth: int) -> Iterator[QueueEntry]:
        try:
            it = os.scandir(path)
        except FileNotFoundError:
            return
        with it:
            entries = list(it)
        for de in entries:
            name = de.name
            if len(name) == 1 and depth > 0:
                if de.is_dir(follow_symlinks=False):
                    yield from self._scan(de.path, queue_name, depth - 1)
                continue
            if not _qid.is_queue_id(name):
                continue
            try:
                st = de.stat(follow_symlinks=False)
            except FileNotFoundError:       # moved away meanwhile
                continue
            if st.st_mode & STAT_READY == STAT_READY and not de.is_dir(follow_symlinks=False):
                yield QueueEntry(queue_name, name, de.path)

    def find(self, queue_id: str, queue_names=MESSAGE_QUEUE_NAMES) -> QueueEntry | None:
        """The queue a message is in, or None (postsuper/postcat -q)."""
        for name in queue_names:
            e = self.entry(name, queue_id)
            if os.path.exists(e.path):
                return e
        return None

    # -- move / remove --------------------------------------------------------
    def move(self, entry: QueueEntry, to_queue: str) -> QueueEntry:
        """Atomic rename into another queue (one file system: rename(2))."""
        dst = self.path(to_queue, entry.queue_id)
        try:
            os.rename(entry.path, dst)
        except FileNotFoundError:
            if not os.path.exists(entry.path):
                raise
            os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
            os.rename(entry.path, dst)
        return QueueEntry(to_queue, entry.queue_id, dst)

    def remove(self, entry: QueueEntry) -> bool:
        """Unlink a queue file; False if it was already gone."""
        try:
            os.unlink(entry.path)
            return True
        except FileNotFoundError:
            return False

    def move_to_corrupt(self, entry: QueueEntry, reason: str,
                        log: Callable[[str], None] | None = None) -> QueueEntry:
        """Park an unparseable file in corrupt/ with Postfix's log line.

        The mode drops to 0600 as Postfix's MAIL_QUEUE_STAT_CORRUPT, so no
        scan takes it for a ready file even if it is moved back by hand.
        """
        if log is None:
            from pfy import log as _log
            log = _log.warning
        log(f"{entry.queue_id}: {reason}; moving to corrupt queue")
        try:
            os.chmod(entry.path, 0o600)
        except FileNotFoundError:
            pass
        return self.move(entry, "corrupt")

    def remove_stale_temp_files(self, queue_name: str,
                                max_age: int = TEMP_FILE_MAX_AGE,
                                now: float | None = None) -> list[str]:
        """Delete crash debris: temp files whose writer is gone or that are
        older than max_age.  Returns the paths removed."""
        now = time.time() if now is None else now
        removed = []
        try:
            names = os.listdir(self.dir(queue_name))
        except FileNotFoundError:
            return removed
        for name in names:
            if not is_temp_name(name):
                continue
            path = os.path.join(self.dir(queue_name), name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if now - st.st_mtime > max_age or not _writer_alive(name):
                try:
                    os.unlink(path)
                    removed.append(path)
                except FileNotFoundError:
                    pass
        return removed


def _writer_alive(temp_name: str) -> bool:
    """Is the process named in ``tmp.PID.N`` still running?"""
    try:
        pid = int(temp_name.split(".")[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # exists, belongs to someone else
        return True
    except OSError as err:
        return err.errno != errno.ESRCH
    return True


# Re-exported for callers that catch it next to Queue operations.
CorruptQueueFile = CorruptQueueFile
