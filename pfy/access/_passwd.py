"""unix:passwd.byname as a lookup table (Postfix's dict_unix), for the
default local_recipient_maps = proxy:unix:passwd.byname $alias_maps.

The table is read when opened, before chroot (where /etc/passwd is out of
reach, which is why Postfix goes through proxymap); when the process can
still see the password database, a live lookup finds users added since.
"""

from __future__ import annotations

import pwd

__all__ = ["PasswdTable"]


class PasswdTable:
    pattern = False

    def __init__(self, spec: str = "unix:passwd.byname"):
        self.spec = spec
        try:
            self._names = {p.pw_name: p for p in pwd.getpwall()}
        except OSError:
            self._names = {}

    def lookup(self, key: str) -> str | None:
        # dict_unix.c: the value is the passwd(5) line.
        try:
            p = pwd.getpwnam(key)
        except (KeyError, OSError):
            p = self._names.get(key)
        if p is None:
            return None
        return ":".join(str(x) for x in (p.pw_name, p.pw_passwd, p.pw_uid, p.pw_gid,
                                          p.pw_gecos, p.pw_dir, p.pw_shell))
