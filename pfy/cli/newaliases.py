"""newaliases - rebuild the alias databases (Sendmail compatibility).

    newaliases [-C config_dir] [-v]

Builds every indexed (lmdb:, hash:, btree:) table listed in alias_database,
as "postalias" would, one after the other. Like sendmail, it takes -C (not
-c) for the configuration directory. sendmail -bi does the same through
rebuild_aliases().
"""

from __future__ import annotations

import getopt
import sys

from pfy.cli import _common

__all__ = ["main", "rebuild_aliases"]


def rebuild_aliases(config_dir: str | None = None) -> int:
    """Build alias_database for the configuration in config_dir (or the
    default); the body of newaliases and sendmail -bi. Returns 0, or exits
    with a one-line fatal error."""
    from pfy.tables import TableError
    from pfy.tables.maintenance import build_aliases
    from pfy.cli.postmap import _install_warning_handler
    from pfy.config import load_config

    _install_warning_handler()
    cfg = load_config(_common.config_dir_from(config_dir))
    try:
        build_aliases(cfg)
    except TableError as err:
        _common.fatal(str(err))
    except OSError as err:
        _common.fatal(f"{err.filename or 'I/O'}: {err.strerror}")
    return 0


def run(argv: list[str]) -> int:
    try:
        # Sendmail's flags that make sense here; -v and -N are accepted and ignored.
        opts, args = getopt.getopt(argv, "C:vN:")
    except getopt.GetoptError:
        _common.fatal("usage: newaliases [-C config_dir] [-v]")
    if args:
        _common.fatal("usage: newaliases [-C config_dir] [-v]")
    config_dir = None
    for opt, val in opts:
        if opt == "-C":
            config_dir = val
    return rebuild_aliases(config_dir)


def main() -> None:
    _common.set_program_name("newaliases")
    _common.run_main(run, sys.argv[1:])


if __name__ == "__main__":
    main()
