"""Delivery status notifications (RFC 3461-3464): logfiles, templates, reports.

    pfy.dsn.logfile     the bounce/defer/trace logfile format (StatusRecord)
    pfy.dsn.templates   Postfix's bounce templates and bounce(5) files
    pfy.dsn.report      composing a multipart/report, streamed into cleanup
    pfy.dsn.sys_exits   sysexits.h exit status -> DSN status and text (local, pipe)

The bounce(8) daemon (pfy.daemons.bounce) puts them together; qmgr and
the delivery agents reach it through pfy.ipc.bounce_client.
"""

from pfy.dsn.logfile import (NOTIFY_DELAY, NOTIFY_FAILURE, NOTIFY_NEVER, NOTIFY_SUCCESS,
                             RET_FULL, RET_HDRS, StatusRecord, append_records, read_records)

__all__ = ["StatusRecord", "append_records", "read_records", "NOTIFY_NEVER",
           "NOTIFY_SUCCESS", "NOTIFY_FAILURE", "NOTIFY_DELAY", "RET_FULL", "RET_HDRS"]
