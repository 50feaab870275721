"""pfy-saslpasswd - manage the users of the built-in SASL table
(smtpd_sasl_type = pfy), in the manner of Cyrus saslpasswd2(8) and
sasldblistusers2(8).

    pfy-saslpasswd [-c config_dir] [-f table] [-p] [-u realm] user      set a password
    pfy-saslpasswd [-c config_dir] [-f table] [-a] [-p] [-u realm] user add; fail if present
    pfy-saslpasswd [-c config_dir] [-f table] -d [-u realm] user        delete
    pfy-saslpasswd [-c config_dir] [-f table] -l                        list user names

The table is pfy_sasl_user_table (default $config_directory/sasl_users,
stored as sasl_users.lmdb) unless -f names another.  Passwords are stored
as scrypt hashes with a per-user random salt (pfy.sasl.userdb); they are
prompted for twice on a terminal, or read from the first line of standard
input with -p or when standard input is not a terminal.  No password ever
appears on the command line or in a log.

When run by root the table is made readable by mail_owner's group (mode
0640), so smtpd can reopen it after dropping privileges.
"""

from __future__ import annotations

import getopt
import os
import sys

from pfy.cli import _common

__all__ = ["main", "run"]

PROG = "pfy-saslpasswd"
USAGE = (f"usage: {PROG} [-c config_dir] [-f table] [-a] [-p] [-u realm] user\n"
         f"       {PROG} [-c config_dir] [-f table] -d [-u realm] user\n"
         f"       {PROG} [-c config_dir] [-f table] -l")


def _read_password(pipe: bool) -> str:
    if pipe or not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    import getpass
    first = getpass.getpass("Password: ")
    again = getpass.getpass("Again (for verification): ")
    if first != again:
        _common.fatal("passwords don't match")
    return first


def _fix_owner(cfg, path: str) -> None:
    if os.geteuid() != 0:
        return
    import pwd
    try:
        gid = pwd.getpwnam(cfg.mail_owner).pw_gid
    except KeyError:
        _common.warning(f"unknown mail_owner {cfg.mail_owner}: {path} stays readable by root only")
        os.chmod(path, 0o600)
        return
    os.chown(path, 0, gid)
    os.chmod(path, 0o640)


def run(argv: list[str]) -> int:
    from pfy.config import load_config
    from pfy.sasl import default_user_table
    from pfy.sasl import userdb

    try:
        opts, args = getopt.getopt(argv, "ac:df:lpu:v")
    except getopt.GetoptError as err:
        _common.fatal(f"{err}\n{USAGE}")
    flags = dict(opts)
    listing, delete, add = "-l" in flags, "-d" in flags, "-a" in flags
    if listing and (args or delete or add) or (not listing and len(args) != 1) or (delete and add):
        _common.fatal(USAGE)
    cfg = load_config(_common.config_dir_from(flags.get("-c")))
    table = flags.get("-f") or default_user_table(cfg)
    for prefix in ("lmdb:", "hash:", "btree:"):
        if table.startswith(prefix):
            table = table[len(prefix):]
    path = userdb.db_path(table)
    os.umask(0o077)            # never a moment where the hashes are world-readable

    try:
        if listing:
            if not os.path.exists(path):
                return 0
            for user in userdb.list_users(table):
                print(user)
            return 0
        user = args[0]
        realm = flags.get("-u")
        if realm and "@" not in user:
            user = f"{user}@{realm}"
        if any(c in user for c in "\t\r\n\0") or not user or len(user.encode()) > userdb.MAX_KEY:
            _common.fatal(f"invalid user name: {user!r}")
        if delete:
            if not userdb.delete_user(table, user):
                _common.fatal(f"user {user} not found in {path}")
            return 0
        if add and os.path.exists(path):
            t = userdb.UserTable(table)
            try:
                exists = t.lookup(user) is not None
            finally:
                t.close()          # py-lmdb: one environment per file per process
            if exists:
                _common.fatal(f"user {user} already exists in {path}")
        password = _read_password("-p" in flags)
        if not password:
            _common.fatal("empty password")
        userdb.set_password(table, user, password)
        _fix_owner(cfg, path)
        return 0
    except userdb.UserTableError as err:
        _common.fatal(str(err))
    except OSError as err:
        _common.fatal(f"{err.filename or path}: {err.strerror}")


def main() -> None:
    _common.set_program_name(PROG)
    _common.run_main(run, sys.argv[1:])


if __name__ == "__main__":
    main()
