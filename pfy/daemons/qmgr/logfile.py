"""Per-message defer and bounce logfiles (defer/ID, bounce/ID).

One block per recipient, "name=value" lines ended by an empty line, as
Postfix's bounce logs (global/bounce_log.c).  mailq shows the defer reason
from here; the bounce service (issue 4) builds notices from both.
"""

from __future__ import annotations

import os

__all__ = ["append_status", "format_status"]


def _clean(value: str) -> str:
    # A newline inside a value would start a forged attribute.
    return value.replace("\n", " ").replace("\r", " ")


def format_status(recipient: str, orig_rcpt: str, offset: int, dsn_orcpt: str,
                  notify: int, status: str, action: str, reason: str) -> bytes:
    lines = [f"recipient={_clean(recipient)}", f"orig_rcpt={_clean(orig_rcpt)}",
             f"offset={offset}", f"dsn_orig_rcpt={_clean(dsn_orcpt)}",
             f"notify_flags={notify}", f"status={_clean(status)}",
             f"action={action}", f"reason={_clean(reason)}"]
    return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape")


def append_status(path: str, blocks: list[bytes], fsync: bool) -> None:
    """Append records in one write (O_APPEND keeps concurrent writers apart)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"".join(blocks))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
