"""The built-in SASL user table: user name -> scrypt password hash, in one
LMDB file (pfy_sasl_user_table, default $config_directory/sasl_users, stored
as sasl_users.lmdb), written by pfy-saslpasswd(1) and read by smtpd.

Hash format (PHC string style, so the parameters travel with each hash and
can be raised later without invalidating old entries):

    $scrypt$ln=14,r=8,p=1$<salt, base64>$<key, base64>

ln is log2(N).  N=2^14, r=8, p=1 is the interactive-login setting of the
scrypt paper and RFC 7914 12 (16 MiB, tens of milliseconds); each user has a
16-byte random salt (os.urandom).  Comparison is constant time
(hmac.compare_digest), and an unknown user costs the same scrypt run as a
known one, so timing tells a client nothing about which names exist.

Concurrency as pfy.tables.lmdb_table: the writer holds an exclusive flock()
on the file for its one transaction, readers a shared flock() per lookup.
Readers keep their environment open (smtpd opens the table before chroot
and privilege drop) and adopt a grown map with set_mapsize(0).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import re

import lmdb

__all__ = ["hash_password", "verify_password", "UserTable", "UserTableError",
           "set_password", "delete_user", "list_users", "db_path",
           "SCRYPT_LOG_N", "SCRYPT_R", "SCRYPT_P"]

SCRYPT_LOG_N = 14            # N = 16384: RFC 7914 12 / scrypt paper, interactive logins
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16              # 128 bits: NIST SP 800-132 5.1 asks for at least 128
KEY_BYTES = 32
MAX_LOG_N = 20               # refuse absurd stored parameters (memory = 128*r*N bytes)
MAX_KEY = 511                # LMDB's default maximum key size
MAP_SIZE = 1024 * 1024       # grows by doubling

_HASH_RE = re.compile(r"^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$")


class UserTableError(Exception):
    """Cannot open/read/write the table; str() names the file."""


def db_path(name: str) -> str:
    return name if name.endswith(".lmdb") else name + ".lmdb"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int, dklen: int) -> bytes:
    n = 1 << log_n
    return hashlib.scrypt(password.encode("utf-8", "surrogateescape"), salt=salt,
                          n=n, r=r, p=p, dklen=dklen, maxmem=256 * r * n + (1 << 20))


def hash_password(password: str, *, log_n: int = SCRYPT_LOG_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P, salt: bytes | None = None) -> str:
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    key = _scrypt(password, salt, log_n, r, p, KEY_BYTES)
    return f"$scrypt$ln={log_n},r={r},p={p}${_b64(salt)}${_b64(key)}"


# A fixed dummy hash: verifying against it costs what a real check costs.
_DUMMY = None


def _dummy_hash() -> str:
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password("", salt=b"\0" * SALT_BYTES)
    return _DUMMY


def verify_password(password: str, stored: str | None) -> bool:
    """True when password matches the stored hash.  stored None (no such
    user) or malformed still runs one scrypt, so it takes the same time."""
    m = _HASH_RE.match(stored or "")
    if m is None:
        _scrypt_check(password, _dummy_hash())
        return False
    return _scrypt_check(password, stored, m)


def _scrypt_check(password: str, stored: str, m=None) -> bool:
    m = m or _HASH_RE.match(stored)
    log_n, r, p = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= log_n <= MAX_LOG_N and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    try:
        salt = base64.b64decode(m.group(4), validate=True)
        want = base64.b64decode(m.group(5), validate=True)
    except (binascii.Error, ValueError):
        return False
    if not want:
        return False
    got = _scrypt(password, salt, log_n, r, p, len(want))
    return hmac.compare_digest(got, want)


def _key(user: str) -> bytes:
    k = user.encode("utf-8", "surrogateescape")
    if not k or len(k) > MAX_KEY:
        raise ValueError("user name is empty or longer than 511 bytes")
    return k


class UserTable:
    """Read side, for smtpd: open before chroot; lookup() from any thread."""

    def __init__(self, name: str):
        self.name = name
        self.path = db_path(name)
        self.fd = -1
        self.env = None
        self._open()

    def _open(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise UserTableError(f"open database {self.path}: {err.strerror}") from None
        try:
            env = lmdb.open(self.path, subdir=False, readonly=True, lock=False,
                            max_dbs=0, readahead=False)
        except lmdb.Error as err:
            os.close(fd)
            raise UserTableError(f"open database {self.path}: {err}") from None
        self.close()
        self.fd, self.env = fd, env
        self._ino = os.fstat(fd).st_ino

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _replaced(self) -> bool:
        # A table rebuilt by rename (restored from a backup...) has a new
        # inode; inside a chroot the path is gone and we keep the open file.
        try:
            return os.stat(self.path).st_ino != self._ino
        except OSError:
            return False

    def lookup(self, user: str) -> str | None:
        """The stored hash, or None. Raises UserTableError (try again later)."""
        try:
            k = _key(user)
        except ValueError:
            return None
        if self._replaced():
            self._open()
        for _attempt in range(2):
            try:
                fcntl.flock(self.fd, fcntl.LOCK_SH)
                try:
                    with self.env.begin() as txn:
                        v = txn.get(k)
                finally:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
                return None if v is None else v.decode("ascii", "replace")
            except lmdb.MapResizedError:
                # The writer grew the file past our map: adopt its size.
                self.env.set_mapsize(0)
            except (lmdb.Error, OSError) as err:
                raise UserTableError(f"read database {self.path}: {err}") from None
        raise UserTableError(f"read database {self.path}: map resized twice")


def _write(name: str, fn, *, create: bool, mode: int = 0o640):
    """Run fn(txn) in one write transaction under an exclusive lock."""
    path = db_path(name)
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, mode)
    except OSError as err:
        raise UserTableError(f"open database {path}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = max(MAP_SIZE, os.fstat(fd).st_size * 2)
        while True:
            env = lmdb.open(path, subdir=False, map_size=size, lock=False, max_dbs=0)
            try:
                with env.begin(write=True) as txn:
                    result = fn(txn)
                env.sync(True)
                return result
            except lmdb.MapFullError:
                size *= 2
            finally:
                env.close()
    except lmdb.Error as err:
        raise UserTableError(f"update database {path}: {err}") from None
    finally:
        os.close(fd)       # also drops the lock


def set_password(name: str, user: str, password: str, **hash_args) -> None:
    k = _key(user)
    h = hash_password(password, **hash_args).encode("ascii")
    _write(name, lambda txn: txn.put(k, h), create=True)


def delete_user(name: str, user: str) -> bool:
    k = _key(user)
    if not os.path.exists(db_path(name)):
        return False
    return bool(_write(name, lambda txn: txn.delete(k), create=False))


def list_users(name: str) -> list[str]:
    t = UserTable(name)
    try:
        fcntl.flock(t.fd, fcntl.LOCK_SH)
        try:
            with t.env.begin() as txn:
                return [k.decode("utf-8", "surrogateescape") for k, _ in txn.cursor()]
        finally:
            fcntl.flock(t.fd, fcntl.LOCK_UN)
    finally:
        t.close()
