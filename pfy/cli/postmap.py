"""postmap - Postfix lookup table management (postmap(1)).

    postmap [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [file_type:]file_name ...

Builds file_name.lmdb from file_name (lmdb, hash and btree types are all
stored as LMDB), queries (-q), deletes (-d), lists (-s) and updates (-i)
tables, with Postfix's flags, messages and exit codes.

Options are parsed with getopt, not click: Postfix's commands take bundled
flags ("-fq key", "-hmq -") in getopt's way, and start-up time counts (cron
jobs and scripts run postmap -q in loops).
"""

from __future__ import annotations

import getopt
import sys

from pfy.cli import _common

__all__ = ["main", "run"]

USAGE = {
    "postmap": "usage: postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [map_type:]file...",
    "postalias": "usage: postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [map_type:]file...",
}
# Accepted for compatibility and ignored: -N/-n (trailing NUL: pfy's LMDB
# keys never have one, lookups behave as either), -o/-p (pfy builds as the
# source file's owner and copies its permissions unless root is not
# involved), -u/-U (SMTPUTF8 processing), -v (verbose), -m (MIME).
_OPTSTRING = {"postmap": "bc:d:fFhimnNopq:rsuUvw", "postalias": "c:d:fimnNopq:rsuvw"}


def _install_warning_handler() -> None:
    """Table warnings (duplicates, bad lines) print as "prog: warning: ..."."""
    import logging

    class _Handler(logging.Handler):
        def emit(self, record):
            _common.warning(record.getMessage())

    log = logging.getLogger("pfy.tables")
    log.addHandler(_Handler())
    log.setLevel(logging.WARNING)
    log.propagate = False


def run(program: str, argv: list[str]) -> int:
    aliases = program == "postalias"
    try:
        opts, args = getopt.getopt(argv, _OPTSTRING[program])
    except getopt.GetoptError:
        _common.fatal(USAGE[program])
    config_dir = query = delkey = None
    fold, incremental, sequence, dup = True, False, False, "warn"
    for opt, val in opts:
        if opt == "-c":
            config_dir = val
        elif opt == "-d":
            if query is not None or sequence:
                _common.fatal("specify only one of -s -q or -d")
            delkey = val
        elif opt == "-q":
            if delkey is not None or sequence:
                _common.fatal("specify only one of -s -q or -d")
            query = val
        elif opt == "-s":
            if delkey is not None or query is not None:
                _common.fatal("specify only one of -s -q or -d")
            sequence = True
        elif opt == "-f":
            fold = False
        elif opt == "-i":
            incremental = True
        elif opt == "-r":
            dup = "replace"
        elif opt == "-w":
            dup = "ignore"
        elif opt in ("-b", "-h", "-F"):
            _common.fatal(f"option {opt} (header/body checks, base64) is not supported by pfy")
    _install_warning_handler()

    from pfy.config import load_config
    from pfy.tables import TableError, TableTempFail
    from pfy.tables import maintenance as m

    cfg = load_config(_common.config_dir_from(config_dir))
    try:
        if delkey is not None:
            if not args:
                _common.fatal(USAGE[program])
            if delkey == "-":
                return 0 if m.delete_stream(args, sys.stdin, cfg, fold=fold) else 1
            return 0 if m.delete_key(args, [delkey], cfg, fold=fold) else 1
        if query is not None:
            if not args:
                _common.fatal(USAGE[program])
            sep = ":\t" if aliases else "\t"
            if query == "-":
                found = m.query_stream(args, sys.stdin, sys.stdout, cfg, fold=fold, sep=sep)
                return 0 if found else 1
            value = m.query_tables(args, query, cfg, fold=fold)
            if value is None:
                return 1
            sys.stdout.write(value + "\n")
            return 0
        if sequence:
            for spec in args:
                m.dump_table(spec, sys.stdout, cfg, fold=fold, sep=":\t" if aliases else "\t")
            return 0
        if not args:
            _common.fatal(USAGE[program])
        for spec in args:
            if incremental:
                m.update_table(spec, sys.stdin, cfg, aliases=aliases, dup=dup, fold=fold)
            else:
                m.build_table(spec, cfg, aliases=aliases, dup=dup, fold=fold)
        return 0
    except TableTempFail as err:
        _common.fatal(str(err))
    except TableError as err:
        _common.fatal(str(err))
    except OSError as err:
        _common.fatal(f"{err.filename or 'I/O'}: {err.strerror}")


def main() -> None:
    _common.set_program_name("postmap")
    _common.run_main(run, "postmap", sys.argv[1:])


if __name__ == "__main__":
    main()
