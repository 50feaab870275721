"""User access lists: authorized_submit_users, authorized_mailq_users,
authorized_flush_users (Postfix global/user_acl.c, check_user_acl_byuid()).

A list is a Postfix string list: user names, "!name" to exclude, type:table
lookups (the user name is the key; any value matches) and /file/name
entries holding more of the same; the first entry that matches decides.
As in Postfix:

- a list that *starts with* "static:" permits everyone without looking at
  anything (the default, static:anyone; it also keeps submission working
  when the password database is unreachable);
- a uid without a password entry is looked up as "unknown", so
  "!unknown" can refuse accounts that do not exist;
- root gets no exemption from authorized_submit_users (sendmail.c checks
  getuid() as it is); postqueue exempts root and mail_owner itself.

The caller prints Postfix's message: "User alice(1001) is not allowed to
submit mail" and exits EX_NOPERM (77).
"""

from __future__ import annotations

import os

__all__ = ["user_name", "check_user_acl", "check_user_acl_byuid", "is_static"]


def _words(acl) -> list[str]:
    if isinstance(acl, str):
        from pfy.config import split_list
        return split_list(acl)
    return list(acl)


def is_static(acl) -> bool:
    """user_acl.c: "we only need to match the static: substring"."""
    text = acl if isinstance(acl, str) else " ".join(acl)
    return text.lstrip().startswith("static:")


def user_name(uid: int, names: dict[int, str] | None = None) -> str:
    """The login name of uid, "unknown" without a password entry.
    `names` is a snapshot of the password database (a chrooted daemon)."""
    if names is not None:
        return names.get(uid, "unknown")
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "unknown"


def check_user_acl(acl, name: str, open_table=None) -> bool:
    """True when the user `name` is on the list.  open_table(spec) opens a
    type:table entry (default: pfy.tables.open_table); it may raise
    TableError (bad list) and lookups TableTempFail (try again later)."""
    if is_static(acl):
        return True
    from pfy.message.domains import MatchList
    if open_table is None:
        from pfy.tables import open_table as _open

        def open_table(spec):
            return _open(spec)
    return MatchList(_words(acl), open_table).match(name)


def check_user_acl_byuid(acl, uid: int | None = None, open_table=None,
                         names: dict[int, str] | None = None) -> str | None:
    """None when uid (default: the real uid) may proceed, else the name to
    put in the refusal ("unknown" for a uid without password entry)."""
    if is_static(acl):
        return None
    if uid is None:
        uid = os.getuid()
    name = user_name(uid, names)
    return None if check_user_acl(acl, name, open_table) else name
