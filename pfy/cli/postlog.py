"""postlog - Postfix-compatible logging utility (postlog(1)).

    postlog [-iv] [-c config_dir] [-p priority] [-t tag] [text...]

Logs the text given on the command line as one record, or else each line
of standard input as one record, in the instance's log (maillog_file or
syslog) with the tag $syslog_name/postlog unless -t says otherwise.  When
standard error is a terminal the records are shown there as well.

As Postfix's postlog, a fatal or panic priority logs the record and exits 0:
the priority describes the text, not this command's outcome.
"""

import getopt
import os
import sys

from pfy.cli import _common

# postlog(1): "info, warn, error, fatal, or panic"; msg_priority also takes
# "warning".
_PRIORITIES = {"info": "info", "warn": "warning", "warning": "warning",
               "error": "error", "fatal": "fatal", "panic": "panic"}
USAGE = "usage: postlog [-iv] [-c config_dir] [-p priority] [-t tag] [text...]"


def run(argv: list[str]) -> int:
    try:
        opts, args = getopt.getopt(argv, "c:ip:t:v")
    except getopt.GetoptError as err:
        _common.fatal(f"{err.msg}\n{USAGE}")
    config_opt = None
    priority = "info"
    tag = None
    verbose = 0
    for opt, val in opts:
        if opt == "-c":
            config_opt = val
        elif opt == "-p":
            if val not in _PRIORITIES:
                _common.fatal(f"unknown priority value: {val}")
            priority = _PRIORITIES[val]
        elif opt == "-t":
            tag = val
        elif opt == "-v":
            verbose += 1
        # -i: obsolete, the pid is always included (postlog(1)).

    from pfy.config import load_config
    from pfy import log
    cfg = load_config(_common.config_dir_from(config_opt))
    logger = log.init_logging(cfg, "postlog", verbose=verbose,
                              stderr=os.isatty(2))
    if tag is not None:
        # -t replaces the whole "syslog_name/process" tag, as Postfix's.
        logger.tag = tag
        logger.process_name = tag

    if args:
        logger.log(priority, " ".join(args))
        return 0
    stdin = sys.stdin.buffer
    for raw in stdin:
        line = raw.rstrip(b"\n").decode("utf-8", "surrogateescape")
        logger.log(priority, line)
    return 0


def main() -> None:
    _common.set_program_name("postlog")
    _common.run_main(run, sys.argv[1:])


if __name__ == "__main__":
    main()
