"""mailq - list the mail queue (the Sendmail-compatible name of postqueue -p).

    mailq [-v] [-C config_dir]

As Postfix's mailq, which is sendmail under another name, it takes
sendmail's -C (configuration directory, or a main.cf inside it) and -v;
the listing is postqueue -p's, from the showq service.  sendmail -bp
calls list_queue() here.
"""

from __future__ import annotations

import os
import sys

from pfy.cli import _common

__all__ = ["main", "list_queue"]

EX_USAGE = 64


def list_queue(config_dir: str | None = None, verbose: int = 0, out=None) -> int:
    """Print the queue listing; returns the exit status.  Errors are one
    "<program>: fatal: ..." line on stderr, as Postfix's."""
    from pfy.cli import postqueue
    from pfy.config import load_config
    cfg = load_config(_common.config_dir_from(config_dir))
    try:
        return postqueue.show_queue(cfg, "compat", verbose, out)
    except postqueue._Fatal as err:
        sys.stdout.flush()
        sys.stderr.write(f"{_common.program_name()}: fatal: {err}\n")
        return err.status


def _config_option(value: str) -> str:
    # sendmail -C accepts the main.cf file itself as well as its folder.
    if os.path.basename(value) == "main.cf" and not os.path.isdir(value):
        return os.path.dirname(value) or "."
    return value


def run(argv: list[str]) -> int:
    config = None
    verbose = 0
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            args.insert(0, arg)
            break
        if arg.startswith("-C"):
            value = arg[2:] or (args.pop(0) if args else None)
            if value is None:
                _common.fatal("option requires an argument -- 'C'", EX_USAGE)
            config = _config_option(value)
        elif arg == "-v":
            verbose += 1
        elif arg in ("-bp", "-Ac", "-Am"):
            continue                    # sendmail's own spellings of this mode
        else:
            _common.fatal("usage: mailq [-v] [-C config_dir]", EX_USAGE)
    if args:
        _common.fatal("display queue mode requires no recipient", EX_USAGE)
    return list_queue(config, verbose)


def main() -> None:
    _common.set_program_name("mailq")
    _common.run_main(run, sys.argv[1:])


if __name__ == "__main__":
    main()
