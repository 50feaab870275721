"""unix:passwd.byname as a lookup table (Postfix's dict_unix), for the
default local_recipient_maps = proxy:unix:passwd.byname $alias_maps.

The table takes a copy of the password database when opened, before chroot
(where /etc/passwd is out of reach, which is why Postfix goes through
proxymap).  Outside a chroot, lookups are live (users added since are
found) but cached: smtpd asks once per RCPT, and getpwnam() reads the whole
file each time.  The cache, and the copy, are thrown away when
/etc/passwd's modification time changes.  Inside a chroot, the copy taken
before the jail answers, and getpwnam() is never called there (NSS would
look for its modules and files inside the jail).
"""

from __future__ import annotations

import os
import pwd

__all__ = ["PasswdTable"]

PASSWD_FILE = "/etc/passwd"
# Bound on remembered answers: RCPT keys come from the network, so a
# client must not grow our memory with made-up names.  Cleared when full.
CACHE_LIMIT = 4096


def _root_id() -> tuple[int, int] | None:
    try:
        st = os.stat("/")
    except OSError:
        return None
    return st.st_dev, st.st_ino


class PasswdTable:
    pattern = False

    def __init__(self, spec: str = "unix:passwd.byname", passwd_file: str = PASSWD_FILE):
        self.spec = spec
        self.passwd_file = passwd_file
        self._root = _root_id()
        self._cache: dict[str, pwd.struct_passwd | None] = {}
        self._load()

    def _mtime(self) -> tuple[int, int, int] | None:
        # Size and inode too: a coarse mtime can miss a change within its
        # tick, and useradd(8) renames a new file into place.
        try:
            st = os.stat(self.passwd_file)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _load(self) -> None:
        self._stamp = self._mtime()
        self._cache.clear()
        try:
            self._names = {p.pw_name: p for p in pwd.getpwall()}
        except OSError:
            self._names = {}

    def _jailed(self) -> bool:
        """True once the process has chrooted since the table was opened."""
        return _root_id() != self._root

    def _find(self, key: str) -> pwd.struct_passwd | None:
        if self._jailed():
            return self._names.get(key)
        if self._mtime() != self._stamp:
            self._load()
        try:
            return self._cache[key]
        except KeyError:
            pass
        try:
            p = pwd.getpwnam(key)
        except (KeyError, ValueError):      # ValueError: a NUL in the name
            p = None
        except OSError:
            p = self._names.get(key)
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = p
        return p

    def lookup(self, key: str) -> str | None:
        # dict_unix.c: the value is the passwd(5) line.
        p = self._find(key)
        if p is None:
            return None
        return ":".join(str(x) for x in (p.pw_name, p.pw_passwd, p.pw_uid, p.pw_gid,
                                          p.pw_gecos, p.pw_dir, p.pw_shell))
