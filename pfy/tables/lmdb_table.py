"""lmdb:/path (and hash:/path, btree:/path) - an indexed table in
/path.lmdb, built by postmap(1) or postalias(1).

hash: and btree: are accepted for main.cf compatibility and stored the same
way, in /path.lmdb (not Berkeley DB's /path.db).

File format: one LMDB environment in a single file (MDB_NOSUBDIR), keys and
values UTF-8 without the trailing NUL that Postfix's postmap -N adds. pfy
cannot read Postfix's .lmdb files and Postfix cannot read pfy's: rebuild
from the source files.

Concurrency, as Postfix's dict_lmdb (MDB_NOLOCK plus its own locks):
- A build writes a new file beside the old one, syncs it and renames it into
  place, so a reader sees the old table or the new one, never half of one.
- In-place updates (postmap -i / -d) hold an exclusive flock() on the file;
  readers hold a shared flock() for each lookup, so LMDB page reuse by a
  writer can never pull a page from under a reader.
- Readers notice a rebuilt file (FileWatch: new inode or mtime, checked at
  most once a second) and reopen it.
"""

from __future__ import annotations

import errno
import fcntl
import os

import lmdb

from pfy.tables._base import FileWatch, Table, TableError, TableTempFail, warn

__all__ = ["LmdbTable", "build_lmdb", "update_lmdb", "db_path", "DEFAULT_MAP_SIZE"]

# Postfix's lmdb_map_size default (postconf -d: 16777216). The map grows by
# doubling when full, as dict_lmdb does, so this is only a starting size.
DEFAULT_MAP_SIZE = 16 * 1024 * 1024
SUFFIX = ".lmdb"


def db_path(name: str) -> str:
    return name + SUFFIX


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _dec(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _map_size(cfg) -> int:
    if cfg is not None:
        try:
            return int(cfg.lmdb_map_size) or DEFAULT_MAP_SIZE
        except (KeyError, AttributeError, TypeError, ValueError):
            pass
    return DEFAULT_MAP_SIZE


class LmdbTable(Table):
    def __init__(self, kind: str, name: str, fold: bool = True):
        self.type, self.name, self.fold = kind, name, fold
        self.path = db_path(name)
        self.env = None
        self.fd = -1
        self._open()

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise TableError(f"open database {self.path}: {err.strerror}") from None
        # py-lmdb allows one environment per file per process: let go of the
        # old one (if any) before opening the file again.
        self.close()
        try:
            env = lmdb.open(self.path, subdir=False, readonly=True, lock=False,
                            max_dbs=0, readahead=False)
        except lmdb.Error as err:
            os.close(fd)
            raise TableError(f"open database {self.path}: {_lmdb_reason(err)}") from None
        self.fd, self.env = fd, env
        self.watch = FileWatch(self.path)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lookup(self, key: str) -> str | None:
        if self.watch.changed():
            self._reopen()
        if self.fold:
            key = key.lower()
        k = _enc(key)
        if not k or len(k) > 511:   # LMDB's default maximum key size (mdb_env_get_maxkeysize)
            return None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            try:
                with self.env.begin() as txn:
                    value = txn.get(k)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        except lmdb.MapResizedError:
            # An in-place update grew the file beyond our map: reopen, retry once.
            self._reopen()
            return self.lookup(key)
        except (lmdb.Error, OSError) as err:
            raise TableTempFail(f"table {self.spec}: query error: {err}") from None
        return None if value is None else _dec(value)

    def _reopen(self) -> None:
        try:
            self._open()
        except TableError as err:
            raise TableTempFail(str(err)) from None

    def items(self):
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        try:
            with self.env.begin() as txn:
                rows = [(_dec(k), _dec(v)) for k, v in txn.cursor()]
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        return iter(rows)


def _lmdb_reason(err: Exception) -> str:
    text = str(err)
    return text.split(": ", 1)[-1] if ": " in text else text


def open_lmdb(kind, name, cfg, fold):
    return LmdbTable(kind, name, fold)


def _target_mode(source_mode: int | None) -> int:
    """postmap/postalias create the result "with the same group and other
    read permissions as the source file": umask 022 | (~source & 077)."""
    if source_mode is None:
        return 0o644
    umask = 0o022 | (~source_mode & 0o077)
    return 0o666 & ~umask


def build_lmdb(name: str, entries, *, spec: str, dup: str = "warn", fold: bool = True,
               source_stat: os.stat_result | None = None, map_size: int = DEFAULT_MAP_SIZE,
               warn_dup=None) -> int:
    """Create name.lmdb from entries ((lineno, key, value)...), atomically.

    dup: "warn" keeps the first and warns (postmap default), "replace"
    keeps the last (-r), "ignore" keeps the first silently (-w).
    Returns the number of keys stored.
    """
    data: dict[bytes, bytes] = {}
    warn_dup = warn_dup or (lambda key, lineno: warn(f"{spec}: duplicate entry: \"{key}\""))
    total = 0
    setdefault = data.setdefault
    for lineno, key, value in entries:
        if fold:
            key = key.lower()
        k = key.encode("utf-8", "surrogateescape")
        v = value.encode("utf-8", "surrogateescape")
        if setdefault(k, v) is not v:        # one dict operation per entry
            if dup == "replace":
                data[k] = v
            elif dup == "warn":
                warn_dup(key, lineno)
            continue
        total += len(k) + len(v)
    _check_keys(data, spec)
    items = sorted(data.items())
    # Estimate: data plus B-tree overhead (about 16 bytes per node entry and
    # half-full pages in the worst case), so most builds never regrow.
    need = 2 * (total + 16 * len(items)) + 1024 * 1024
    size = max(map_size, need)
    path = db_path(name)
    tmp = f"{path}.{os.getpid()}.tmp"
    while True:
        try:
            _write_new(tmp, items, size)
            break
        except lmdb.MapFullError:
            size *= 2
        except (lmdb.Error, OSError) as err:
            _unlink(tmp)
            raise TableError(f"create database {path}: {_lmdb_reason(err)}") from None
    try:
        os.chmod(tmp, _target_mode(source_stat.st_mode if source_stat else None))
        if source_stat is not None and os.geteuid() == 0:
            # postmap runs as the owner of the source file when root.
            os.chown(tmp, source_stat.st_uid, source_stat.st_gid)
        os.rename(tmp, path)
        _fsync_dir(path)
    except OSError as err:
        _unlink(tmp)
        raise TableError(f"create database {path}: {err.strerror}") from None
    return len(items)


def _check_keys(data: dict[bytes, bytes], spec: str) -> None:
    for k in data:
        if len(k) > 511:
            raise TableError(f"table {spec}: key too long ({len(k)} bytes, LMDB maximum 511): "
                             f"\"{_dec(k[:40])}...\"")


def _write_new(tmp: str, items, size: int) -> None:
    _unlink(tmp)
    # No writemap: the file then holds only the pages written, not the
    # whole map size; the final env.sync() makes it durable before rename.
    env = lmdb.open(tmp, subdir=False, map_size=size, lock=False, sync=False,
                    metasync=False, max_dbs=0, readahead=False)
    try:
        with env.begin(write=True) as txn:
            # Sorted input with MDB_APPEND fills pages left to right: the
            # fastest way to load LMDB and the most compact result.
            txn.cursor().putmulti(items, append=True)
        env.sync(True)
    except BaseException:
        env.close()
        _unlink(tmp)
        raise
    env.close()


def update_lmdb(name: str, *, puts=(), deletes=(), spec: str, dup: str = "warn",
                fold: bool = True, create: bool = True, map_size: int = DEFAULT_MAP_SIZE,
                warn_dup=None) -> int:
    """Change name.lmdb in place (postmap -i, -d): exclusive lock, one transaction.

    Returns the number of keys deleted (for -d's exit status) or stored.
    """
    path = db_path(name)
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        raise TableError(f"open database {path}: {err.strerror}") from None
    warn_dup = warn_dup or (lambda key, lineno: warn(f"{spec}: duplicate entry: \"{key}\""))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        puts = list(puts)
        need = sum(len(k) + len(v) + 64 for _, k, v in puts) * 2
        size = max(map_size, os.fstat(fd).st_size * 2 + need)
        while True:
            env = lmdb.open(path, subdir=False, map_size=size, lock=False, max_dbs=0)
            try:
                count = 0
                with env.begin(write=True) as txn:
                    for lineno, key, value in puts:
                        k = _enc(key.lower() if fold else key)
                        if len(k) > 511:
                            raise TableError(f"table {spec}: key too long: \"{key[:40]}...\"")
                        if dup == "replace":
                            txn.put(k, _enc(value))
                            count += 1
                        elif txn.put(k, _enc(value), overwrite=False):
                            count += 1
                        elif dup == "warn":
                            warn_dup(key.lower() if fold else key, lineno)
                    for key in deletes:
                        k = _enc(key.lower() if fold else key)
                        if k and len(k) <= 511 and txn.delete(k):
                            count += 1
                env.sync(True)
                return count
            except lmdb.MapFullError:
                size *= 2       # the transaction was aborted: redo it all
            finally:
                env.close()
    except lmdb.Error as err:
        raise TableError(f"update database {path}: {_lmdb_reason(err)}") from None
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as err:
        if err.errno != errno.ENOENT:
            raise


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
