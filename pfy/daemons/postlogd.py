"""postlogd - write the log records of processes that cannot open the maillog.

SYNOPSIS
    postlog unix-dgram n - n - 1 postlogd        (master.cf, as Postfix ships it)

DESCRIPTION
    With maillog_file set, every pfy process appends its own lines to that
    file, opened before it drops privileges.  A process that cannot open
    the file -- an ordinary user's sendmail, postqueue or postlog when the
    maillog belongs to root -- sends each line, formatted, as one datagram
    to $queue_directory/public/$postlog_service_name; postlogd appends it
    to maillog_file, so the log tells what every process did.  Without the
    service those processes log to their standard error.

    A record must be one line in the maillog's own shape ("Nov 22 10:15:01
    host tag[pid]: text"); anything else is dropped with a warning.  Each
    record is cut at the longest line a process writes and made printable,
    so one datagram is at most one line and carries no terminal escapes.

SECURITY
    Any local user can reach the socket (public/, as Postfix's; there is no
    postdrop group to narrow it, see postdrop(1)), and so can add a line
    with a tag of their choosing to the maillog, as Postfix's postlog(1)
    lets any user do.  postlogd opens maillog_file before dropping root and
    writes nothing else; it holds no other file and runs no command.

PARAMETERS
    maillog_file, postlog_service_name (see postconf(5))
"""

from __future__ import annotations

import re

from pfy.log import MAX_TEXT, logger, printable
from pfy.server import trigger
from pfy.server.lifecycle import Fatal

__all__ = ["main", "write_record", "RECORD_SIZE"]

# The largest record a client sends: MAX_TEXT characters of text (up to 4
# bytes each in UTF-8) after the time stamp, host and tag.
RECORD_SIZE = 4 * MAX_TEXT + 512
_MAX_LINE = MAX_TEXT + 256
# format_line(): "Mmm dd hh:mm:ss host tag[pid]: "
_SHAPE = re.compile(rb"[A-Z][a-z]{2} [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2} \S+ [^\s\[\]]+\[[0-9]+\]: ")


def write_record(ctx, data: bytes) -> None:
    """One datagram: one line for the maillog, or a warning."""
    line = data[:-1] if data.endswith(b"\n") else data
    if not _SHAPE.match(line):
        logger.warning(f"dropping a record of {len(data)} bytes that is not a log line")
        return
    logger.write_line(printable(line.decode("utf-8", "surrogateescape")[:_MAX_LINE]))


def _check_file(ctx) -> None:
    if not ctx.cfg.maillog_file:
        raise Fatal("maillog_file is empty: processes log to syslog, there is nothing "
                    "for postlogd to do")
    if not logger.writes_file:
        # Our own lines must not go to our own socket: syslog says why.
        logger.init(ctx.program, ctx.cfg.syslog_name, ctx.cfg.syslog_facility)
        raise Fatal(f"cannot open maillog_file {ctx.cfg.maillog_file}")


def main() -> None:
    trigger.serve(write_record, pre_jail=_check_file, solitary=True, unlimited=True,
                  buf_size=RECORD_SIZE, program="postlogd")
