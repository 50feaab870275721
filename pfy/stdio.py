"""Standard descriptors 0, 1 and 2 that were closed when we started.

Postfix's commands and daemons begin by giving a closed fd 0, 1 or 2
/dev/null (sendmail.c, msg_vstream), so that no file opened later (the
maillog, a queue file) becomes someone's "standard output": run with stdout
closed, `sendmail -bs` would otherwise have smtpd write its SMTP dialogue
into the maillog.  Python needs one more step: it starts with sys.stdout
None for a closed fd 1, and then opens the script it runs on that lowest
free descriptor (close-on-exec), so fd 1 looks open but is not stdout, and
is closed again in any program we exec.
"""

import os
import sys

__all__ = ["reopen_closed_stdio"]


def reopen_closed_stdio() -> None:
    """Put /dev/null on each of fd 0-2 that was closed at start, and give
    sys.stdin/stdout/stderr to the ones Python left as None."""
    streams = (("stdin", "r"), ("stdout", "w"), ("stderr", "w"))
    for fd, (name, mode) in enumerate(streams):
        closed = getattr(sys, name) is None
        if not closed:
            try:
                os.fstat(fd)
            except OSError:
                closed = True
        if not closed:
            continue
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)           # inheritable: programs we run get it too
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False))
