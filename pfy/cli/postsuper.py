"""postsuper - queue maintenance for the super-user (postsuper(1)).

    postsuper [-psSv] [-c config_dir] [-d queue_id] [-h queue_id]
              [-H queue_id] [-r queue_id] [queue...]

-d deletes messages (with their bounce, defer and trace logs), -h puts
them on hold, -H releases them to deferred/, -r requeues them through
maildrop/ so pickup and cleanup process them again.  Each takes a queue
ID, "-" (IDs on standard input, one a line) or ALL; queues named after
the options limit where to look.  -s checks and repairs the queue's
structure (files whose name does not match their inode, files in the
wrong hashed subfolder, alien directories), -p removes temporary files
left by crashes; without any option, both.  The per-message lines
("4ABC: removed") and the totals ("Deleted: 1 message") go to standard
error and the log, as Postfix's.

Who may run it: the super-user, or the owner of queue_directory (an
instance run by an ordinary user).  The super-user does the work as
mail_owner when mail_owner owns the queue, as Postfix's set_ugid().

RUNNING QMGR
    All operations are renames and unlinks, each atomic.  qmgr keeps an
    open descriptor on each active file, so deleting or holding an active
    message only makes qmgr's final move or unlink fail; the recipients it
    has not finished stay pending in the moved file and nothing delivered
    is marked undone.  Requeueing active mail can repeat deliveries in
    progress, as in Postfix.  By-ID operations are refused after -s had to
    rename files, since an ID might then name another message.

Requeue (-r) renames the queue file into maildrop/, as Postfix's does;
pickup(8) trusts the whole record set of a file owned by mail_owner or
root, so recipients already delivered stay done and original recipients
and client attributes are kept.
"""

from __future__ import annotations

import getopt
import os
import stat
import sys
import time

from pfy.cli import _common

__all__ = ["main", "run", "Super"]

USAGE = ("usage: {0} [-c config_dir] [-d queue_id (delete)] [-h queue_id (hold)] "
         "[-H queue_id (un-hold)] [-p (purge temporary files)] [-r queue_id (requeue)] "
         "[-s (structure fix)] [-v (verbose)] [queue...]")

ACTION_STRUCT = 1 << 0
ACTION_PURGE = 1 << 1
ACTION_DELETE_ONE = 1 << 2
ACTION_DELETE_ALL = 1 << 3
ACTION_REQUEUE_ONE = 1 << 4
ACTION_REQUEUE_ALL = 1 << 5
ACTION_HOLD_ONE = 1 << 6
ACTION_HOLD_ALL = 1 << 7
ACTION_RELEASE_ONE = 1 << 8
ACTION_RELEASE_ALL = 1 << 9
ACTION_DEFAULT = ACTION_STRUCT | ACTION_PURGE
ACTIONS_BY_QUEUE_ID = (ACTION_DELETE_ONE | ACTION_REQUEUE_ONE | ACTION_HOLD_ONE
                       | ACTION_RELEASE_ONE)
ACTIONS_AFTER_INUM_FIX = ACTION_REQUEUE_ALL | ACTION_HOLD_ALL | ACTION_RELEASE_ALL

_READY = stat.S_IRWXU
# Queue -> (expected owner permissions, step into subfolders): postsuper.c.
# maildrop is never entered: a writable maildrop could lead us elsewhere.
QUEUE_INFO = {
    "maildrop": (_READY, False), "incoming": (_READY, True),
    "active": (_READY, True), "deferred": (_READY, True), "hold": (_READY, True),
    "trace": (0o600, True), "defer": (0o600, True), "bounce": (0o600, True),
    "flush": (0o600, True),
}
LOG_QUEUES = ("bounce", "defer", "trace")
# Log folders first, so message renames find their logs in place.
DEFAULT_QUEUES = ("defer", "bounce", "maildrop", "incoming", "active",
                  "deferred", "hold", "flush")
DEFAULT_HOLD_QUEUES = ("incoming", "active", "deferred")
DEFAULT_RELEASE_QUEUES = ("hold",)
# postsuper.c MAX_TEMP_AGE: temporary files older than a day are debris.
MAX_TEMP_AGE = 24 * 3600
# Appended to a queue file renamed to match its inode, so no daemon takes
# it for a queue file until the second pass strips it.
SUFFIX = "#FIX"


class _Fatal(Exception):
    pass


def id_ok(name: str) -> bool:
    """Postfix mail_queue_id_ok(): letters, digits and '_', at most 255."""
    return 0 < len(name) <= 255 and all(c.isascii() and (c.isalnum() or c == "_")
                                        for c in name)


def _plural(n: int) -> str:
    return "s" if n > 1 else ""


class Super:
    """The work of one postsuper run, counters included (unit-testable:
    ``root`` is queue_directory; ``log`` takes info/warning lines)."""

    def __init__(self, root: str, hash_queue_depth: int = 1,
                 hash_queue_names=("deferred", "defer"), long_ids: bool = False,
                 info=None, warn=None, verbose: int = 0, now=time.time):
        from pfy.queue import Queue
        self.root = root
        self.q = Queue(root, hash_queue_depth=hash_queue_depth,
                       hash_queue_names=hash_queue_names, long_ids=long_ids)
        self.hash_queue_names = set(hash_queue_names)
        self.hash_queue_depth = hash_queue_depth
        self.info = info or (lambda m: None)
        self.warn = warn or (lambda m: None)
        self.verbose = verbose
        self.now = now
        self.requeued = self.held = self.released = self.deleted = 0
        self.inode_fixed = self.inode_mismatch = self.position_mismatch = 0

    # -- careful file operations (postsuper.c postremove, postrename) ---------
    def _remove(self, path: str) -> bool:
        try:
            os.remove(path)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise _Fatal(f"remove file {path}: {err.strerror}")
        if self.verbose:
            self.info(f"removed file {path}")
        return True

    def _rename(self, old: str, new: str) -> bool:
        try:
            try:
                os.rename(old, new)
            except FileNotFoundError:
                if not os.path.lexists(old):
                    return False
                os.makedirs(os.path.dirname(new), 0o700, exist_ok=True)
                os.rename(old, new)
        except FileNotFoundError:
            return False
        except OSError as err:
            raise _Fatal(f"rename file {old} as {new}: {err.strerror}")
        if self.verbose:
            self.info(f"renamed file {old} as {new}")
        return True

    def _open_ok(self, queue: str, queue_id: str) -> str | None:
        """Postfix mail_open_ok(): the path of a complete message file."""
        path = self.q.path(queue, queue_id)
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            self.warn(f"{path}: uid {st.st_uid}: not a regular file")
            return None
        if queue == "maildrop":
            return path             # postdrop's own modes; complete or not
        if st.st_mode & _READY != _READY:
            return None
        if st.st_nlink > 1:
            self.warn(f"{path}: uid {st.st_uid}: file has {st.st_nlink} links")
            return None
        return path

    # -- by queue ID ---------------------------------------------------------
    def delete_one(self, queues, queue_id: str) -> int:
        if not id_ok(queue_id):
            self.warn(f"invalid mail queue id: {queue_id}")
            return 0
        for _ in range(2):
            for queue in queues:
                if QUEUE_INFO[queue][0] != _READY:
                    continue
                path = self._open_ok(queue, queue_id)
                if path is None:
                    continue
                # Logs first, and only when the message exists: narrows the
                # race with a reused queue ID (postsuper.c).
                for log_queue in LOG_QUEUES:
                    self._remove(self.q.path(log_queue, queue_id))
                if self._remove(path):
                    self.info(f"{queue_id}: removed")
                    return 1
        return 0

    def hold_one(self, queues, queue_id: str) -> int:
        if not id_ok(queue_id):
            self.warn(f"invalid mail queue id: {queue_id}")
            return 0
        for _ in range(2):
            for queue in queues:
                # maildrop mail is not yet sanitized: never mix it into hold.
                if queue in ("maildrop", "hold") or QUEUE_INFO[queue][0] != _READY:
                    continue
                path = self._open_ok(queue, queue_id)
                if path and self._rename(path, self.q.path("hold", queue_id)):
                    self.info(f"{queue_id}: placed on hold")
                    return 1
        return 0

    def release_one(self, queues, queue_id: str) -> int:
        if not id_ok(queue_id):
            self.warn(f"invalid mail queue id: {queue_id}")
            return 0
        if "hold" not in queues:
            return 0
        path = self._open_ok("hold", queue_id)
        if path and self._rename(path, self.q.path("deferred", queue_id)):
            self.info(f"{queue_id}: released from hold")
            return 1
        return 0

    def requeue_one(self, queues, queue_id: str) -> int:
        if not id_ok(queue_id):
            self.warn(f"invalid mail queue id: {queue_id}")
            return 0
        for _ in range(2):
            for queue in queues:
                if queue == "maildrop" or QUEUE_INFO[queue][0] != _READY:
                    continue
                path = self._open_ok(queue, queue_id)
                if path and self._requeue(path, queue_id):
                    self.info(f"{queue_id}: requeued")
                    return 1
        return 0

    def _requeue(self, path: str, queue_id: str) -> bool:
        """Rename the queue file into maildrop/ as it is (postsuper.c):
        pickup reads a file owned by mail_owner or root as a whole queue
        file, keeping original recipients, client attributes and done
        marks, and cleanup makes a new queue file of it.  Like Postfix,
        defer and bounce logs stay: qmgr may be about to use them."""
        return self._rename(path, self.q.path("maildrop", queue_id))

    def operate(self, names, op, queues, stdin=None) -> int:
        count = 0
        for name in names:
            if name == "ALL":
                continue
            if name == "-":
                for line in (stdin or sys.stdin):
                    count += op(queues, line.rstrip("\n"))
            else:
                count += op(queues, name)
        return count

    # -- whole queues (postsuper.c super()) -------------------------------------
    def _fix_queue_id(self, actual_path: str, queue: str, actual_id: str, inum: int) -> None:
        """Rename a message (logs first) to the ID its inode gives, plus
        #FIX; the second pass strips the suffix.  Deterministic, so an
        interrupted run is finished by the next."""
        new_id = _id_for_inode(actual_id, inum)
        for log_queue in LOG_QUEUES:
            self._rename(self.q.path(log_queue, actual_id),
                         self.q.path(log_queue, new_id) + SUFFIX)
        self._rename(actual_path, self.q.path(queue, new_id) + SUFFIX)

    def super(self, queues, action: int) -> int:
        for queue in queues:
            if self.verbose:
                self.info(f"queue: {queue}")
            perms, recurse = QUEUE_INFO[queue]
            wanted_depth = self.hash_queue_depth if queue in self.hash_queue_names else 0
            if wanted_depth > 0 and not recurse:
                raise _Fatal(f"{queue} queue must not be hashed")
            action = self._walk(os.path.join(self.root, queue), queue, perms,
                                recurse, 0, wanted_depth, action)
        return action

    def _walk(self, dirpath: str, queue: str, perms: int, recurse: bool,
              depth: int, wanted_depth: int, action: int) -> int:
        from pfy.queue.queue_file import is_temp_name
        try:
            names = os.listdir(dirpath)
        except (FileNotFoundError, NotADirectoryError):
            return action
        message_queue = perms == _READY
        for name in names:
            actual = os.path.join(dirpath, name)
            if len(name) == 1 and recurse and os.path.isdir(actual) \
                    and not os.path.islink(actual):
                action = self._walk(actual, queue, perms, recurse, depth + 1,
                                    wanted_depth, action)
                if depth + 1 > wanted_depth:
                    try:
                        os.rmdir(actual)
                        if self.verbose:
                            self.info(f"remove directory {actual}")
                    except FileNotFoundError:
                        pass
                    except OSError as err:
                        raise _Fatal(f"remove directory {actual}: {err.strerror}")
                continue
            try:
                st = os.stat(actual)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                # Alien directory: remove if empty, never abort over it.
                try:
                    os.rmdir(actual)
                    if self.verbose:
                        self.info(f"remove subdirectory {actual}")
                except FileNotFoundError:
                    pass
                except OSError as err:
                    self.warn(f"remove subdirectory {actual}: {err.strerror}")
                continue
            if action & ACTION_DELETE_ALL:
                if self._remove(actual) and message_queue \
                        and st.st_mode & _READY == _READY and not is_temp_name(name):
                    self.deleted += 1
                continue
            ready = st.st_mode & _READY == _READY
            if not stat.S_ISREG(st.st_mode) or (
                    action & ACTION_PURGE and message_queue and not ready
                    and (self.now() > st.st_mtime + MAX_TEMP_AGE
                         or (is_temp_name(name) and not _writer_alive(name)))):
                self._remove(actual)
                continue
            if is_temp_name(name):
                continue            # a writer's work in progress: not ours
            if action & ACTION_STRUCT and name.endswith(SUFFIX):
                name = name[:-len(SUFFIX)]
                if not id_ok(name):
                    self.warn(f"bogus file name: {actual}")
                    continue
                if message_queue:
                    inum = _inode_of_id(name)
                    if inum is None:
                        self.warn(f"bogus file name: {actual}")
                        continue
                    if inum != st.st_ino:
                        self.warn(f"name/inode mismatch: {actual}")
                        continue
                wanted = self.q.path(queue, name)
                if not self._rename(actual, wanted):
                    continue
                if message_queue:
                    self.inode_fixed += 1
                actual = wanted
            if not id_ok(name):
                self.warn(f"bogus file name: {actual}")
                continue
            if action & ACTION_STRUCT and message_queue:
                inum = _inode_of_id(name)
                if inum is None:
                    self.warn(f"bogus file name: {actual}")
                    continue
                if inum != st.st_ino:
                    self.inode_mismatch += 1
                    action &= ~ACTIONS_AFTER_INUM_FIX
                    self._fix_queue_id(actual, queue, name, st.st_ino)
                    continue
            if action & ACTION_REQUEUE_ALL and message_queue and queue != "maildrop":
                if ready and self._requeue(actual, name):
                    self.requeued += 1
                continue
            if (action & ACTION_HOLD_ALL and message_queue
                    and queue not in ("maildrop", "hold")):
                if self._rename(actual, self.q.path("hold", name)):
                    self.held += 1
                continue
            if action & ACTION_RELEASE_ALL and queue == "hold":
                if self._rename(actual, self.q.path("deferred", name)):
                    self.released += 1
                continue
            if action & ACTION_STRUCT:
                wanted = self.q.path(queue, name)
                if os.path.normpath(actual) != os.path.normpath(wanted):
                    self.position_mismatch += 1
                    self._rename(actual, wanted)
        return action

    def report(self) -> None:
        if self.requeued:
            self.info(f"Requeued: {self.requeued} message{_plural(self.requeued)}")
        if self.deleted:
            self.info(f"Deleted: {self.deleted} message{_plural(self.deleted)}")
        if self.held:
            self.info(f"Placed on hold: {self.held} message{_plural(self.held)}")
        if self.released:
            self.info(f"Released from hold: {self.released} message{_plural(self.released)}")
        if self.inode_fixed:
            self.info(f"Renamed to match inode number: {self.inode_fixed} "
                      f"message{_plural(self.inode_fixed)}")
        if self.inode_mismatch or self.inode_fixed:
            self.warn("QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS")


def _inode_of_id(name: str) -> int | None:
    """The inode number a queue ID encodes (short: hex after 5 digits of
    microseconds; long: base 51 after the 'z'), None if it encodes none."""
    from pfy.queue.queue_id import SAFE_CHARS
    sep = name.rfind("z")
    if sep >= 10:
        value = 0
        for c in name[sep + 1:]:
            i = SAFE_CHARS.find(c)
            if i < 0 or i >= 51:
                return None
            value = value * 51 + i
        return value if name[sep + 1:] else None
    try:
        return int(name[5:], 16) if len(name) > 5 else None
    except ValueError:
        return None


def _id_for_inode(actual_id: str, inum: int) -> str:
    from pfy.queue.queue_id import SAFE_CHARS
    sep = actual_id.rfind("z")
    if sep >= 10:
        digits = ""
        n = inum
        while n:
            n, r = divmod(n, 51)
            digits = SAFE_CHARS[r] + digits
        return actual_id[:sep + 1] + (digits or "0")
    return "%.5s%X" % (actual_id, inum)


def _writer_alive(temp_name: str) -> bool:
    from pfy.queue.directory import _writer_alive as alive
    return alive(temp_name)


def _drop_privileges(cfg) -> None:
    """As the super-user, work as mail_owner when it owns the queue, so
    folders made on the way get the daemons' ownership (set_ugid())."""
    if os.geteuid() != 0:
        return
    import pwd
    try:
        pw = pwd.getpwnam(cfg.mail_owner)
        st = os.stat(cfg.queue_directory)
    except (KeyError, OSError):
        return
    if st.st_uid != pw.pw_uid:
        return
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def run(argv: list[str], stdin=None) -> int:
    prog = "postsuper"
    try:
        opts, queues = getopt.getopt(argv, "c:d:h:H:pr:sv")
    except getopt.GetoptError:
        _common.fatal(USAGE.format(prog))
    action = 0
    config_opt = None
    verbose = 0
    names = {"d": [], "h": [], "H": [], "r": []}
    one_all = {"d": (ACTION_DELETE_ONE, ACTION_DELETE_ALL),
               "h": (ACTION_HOLD_ONE, ACTION_HOLD_ALL),
               "H": (ACTION_RELEASE_ONE, ACTION_RELEASE_ALL),
               "r": (ACTION_REQUEUE_ONE, ACTION_REQUEUE_ALL)}
    for opt, val in opts:
        o = opt[1]
        if o == "c":
            if not val.startswith("/"):
                _common.fatal("-c requires absolute pathname")
            config_opt = val
        elif o in names:
            names[o].append(val)
            action |= one_all[o][1] if val == "ALL" else one_all[o][0]
        elif o == "p":
            action |= ACTION_PURGE
        elif o == "s":
            action |= ACTION_STRUCT
        elif o == "v":
            verbose += 1
    for q in queues:
        if q not in QUEUE_INFO:
            _common.fatal(f"invalid directory name: {q}")

    from pfy import log
    from pfy.config import load_config
    cfg = load_config(_common.config_dir_from(config_opt))
    logger = log.init_logging(cfg, prog, verbose=verbose, stderr=True)
    if os.geteuid() != 0:
        try:
            owner = os.stat(cfg.queue_directory).st_uid
        except OSError as err:
            _common.fatal(f"chdir {cfg.queue_directory}: {err.strerror}")
        if owner != os.geteuid():
            logger.fatal("use of this command is reserved for the superuser")
    try:
        os.chdir(cfg.queue_directory)
    except OSError as err:
        logger.fatal(f"chdir {cfg.queue_directory}: {err.strerror}")
    _drop_privileges(cfg)

    # Root "": paths in messages relative to the queue, as Postfix's ("hold/ID").
    s = Super("", cfg.hash_queue_depth, cfg.hash_queue_names,
              cfg.enable_long_queue_ids, info=logger.info, warn=logger.warning,
              verbose=verbose)
    for letter, word in (("d", "-d"), ("r", "-r"), ("h", "-h"), ("H", "-H")):
        one, all_ = one_all[letter]
        if action & all_ and action & one:
            logger.warning(f'option "{word} ALL" will ignore other command line queue IDs')
            action &= ~one
    if action == 0:
        action = ACTION_DEFAULT
    if queues:
        walk_queues = queues
    elif action == ACTION_HOLD_ALL:
        walk_queues = DEFAULT_HOLD_QUEUES
    elif action == ACTION_RELEASE_ALL:
        walk_queues = DEFAULT_RELEASE_QUEUES
    else:
        walk_queues = DEFAULT_QUEUES
    try:
        if action & ~ACTIONS_BY_QUEUE_ID:
            action = s.super(walk_queues, action)
        if s.inode_mismatch:
            s.super(walk_queues, action)
        if action & ACTIONS_BY_QUEUE_ID and (s.inode_mismatch or s.inode_fixed):
            logger.error("QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS")
            logger.fatal("CHECK YOUR QUEUE IDS AND RE-ISSUE THE COMMAND")
        if action & ACTION_DELETE_ONE:
            s.deleted += s.operate(names["d"], s.delete_one, queues or DEFAULT_QUEUES, stdin)
        if action & ACTION_REQUEUE_ONE:
            s.requeued += s.operate(names["r"], s.requeue_one, queues or DEFAULT_QUEUES, stdin)
        if action & ACTION_HOLD_ONE:
            s.held += s.operate(names["h"], s.hold_one, queues or DEFAULT_HOLD_QUEUES, stdin)
        if action & ACTION_RELEASE_ONE:
            s.released += s.operate(names["H"], s.release_one,
                                    queues or DEFAULT_RELEASE_QUEUES, stdin)
    except _Fatal as err:
        if s.inode_mismatch or s.inode_fixed or s.position_mismatch:
            logger.warning("OPERATION INCOMPLETE -- RERUN COMMAND TO FIX THE QUEUE FIRST")
        logger.fatal(str(err))
    s.report()
    return 0


def main() -> None:
    _common.set_program_name("postsuper")
    _common.run_main(run, sys.argv[1:])


if __name__ == "__main__":
    main()
