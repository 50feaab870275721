"""Small helpers every pfy command shares: where the configuration is, and
Postfix-style one-line diagnostics ("postconf: fatal: ...") with no traceback.

Import-light on purpose (only os and sys): commands run from scripts and
cron, and their start-up time is measured.
"""

import os
import sys

__all__ = ["program_name", "set_program_name", "warning", "error", "fatal",
           "config_dir_from", "run_main"]

_program: str | None = None


def program_name() -> str:
    """What Postfix's msg_vstream prefixes: argv[0] as invoked."""
    if _program is not None:
        return _program
    return sys.argv[0] if sys.argv and sys.argv[0] else "pfy"


def set_program_name(name: str) -> None:
    global _program
    _program = name


def _say(severity: str, msg: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(f"{program_name()}: {severity}{msg}\n")
    sys.stderr.flush()


def warning(msg: str) -> None:
    _say("warning: ", msg)


def error(msg: str) -> None:
    _say("error: ", msg)


def fatal(msg: str, status: int = 1) -> "NoReturn":  # noqa: F821
    """Print "prog: fatal: msg" and exit with status (1, as Postfix)."""
    _say("fatal: ", msg)
    raise SystemExit(status)


def config_dir_from(option: str | None) -> str:
    """-c DIR (or sendmail's -C), else $MAIL_CONFIG, else /etc/pfy.  The
    directory must exist, as Postfix insists (msg "open DIR/main.cf")."""
    from pfy.config import config_directory
    return config_directory(option)


def run_main(func, *args) -> None:
    """Run a command's body: ConfigError and OSError become one fatal line,
    ^C a quiet exit 1; never a Python traceback for bad input."""
    from pfy.config import ConfigError
    try:
        status = func(*args)
    except ConfigError as err:
        fatal(str(err))
    except BrokenPipeError:
        # `postconf | head`: the reader went away; not an error worth a word.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        raise SystemExit(1)
    except KeyboardInterrupt:
        raise SystemExit(1)
    raise SystemExit(status or 0)
