"""sysexits.h exit statuses as delivery status: Postfix's global/sys_exits.c.

A command that local(8) or pipe(8) runs says how delivery went through its
exit status.  The sendmail-compatible codes 64..78 (EX__BASE..EX__MAX)
each carry an RFC 3463 status and a text; every other non-zero status is an
unknown error, 5.3.0.

    sys_exits_code(code)     SYS_EXITS_CODE(): is code one of sysexits.h's?
    sys_exits_detail(code)   -> SysExitsDetail(status, dsn, text)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SysExitsDetail", "EX__BASE", "EX__MAX", "sys_exits_code", "sys_exits_detail"]


@dataclass(frozen=True)
class SysExitsDetail:
    status: int      # the exit status
    dsn: str         # RFC 3463; class 4 is a recoverable error (sys_exits_softerror())
    text: str


EX__BASE, EX__MAX = 64, 78          # sysexits.h: the first and last code

_TABLE = {d.status: d for d in (
    SysExitsDetail(64, "5.3.0", "command line usage error"),        # EX_USAGE
    SysExitsDetail(65, "5.6.0", "data format error"),               # EX_DATAERR
    SysExitsDetail(66, "5.3.0", "cannot open input"),               # EX_NOINPUT
    SysExitsDetail(67, "5.1.1", "user unknown"),                    # EX_NOUSER
    SysExitsDetail(68, "5.1.2", "host name unknown"),               # EX_NOHOST
    SysExitsDetail(69, "5.3.0", "service unavailable"),             # EX_UNAVAILABLE
    SysExitsDetail(70, "5.3.0", "internal software error"),         # EX_SOFTWARE
    SysExitsDetail(71, "4.3.0", "system resource problem"),         # EX_OSERR
    SysExitsDetail(72, "5.3.0", "critical OS file missing"),        # EX_OSFILE
    SysExitsDetail(73, "5.2.0", "can't create user output file"),   # EX_CANTCREAT
    SysExitsDetail(74, "5.3.0", "input/output error"),              # EX_IOERR
    SysExitsDetail(75, "4.3.0", "temporary failure"),               # EX_TEMPFAIL
    SysExitsDetail(76, "5.5.0", "remote error in protocol"),        # EX_PROTOCOL
    SysExitsDetail(77, "5.7.0", "permission denied"),               # EX_NOPERM
    SysExitsDetail(78, "5.3.5", "local configuration error"),       # EX_CONFIG
)}


def sys_exits_code(code: int) -> bool:
    """SYS_EXITS_CODE(): True for a sendmail-compatible exit status."""
    return EX__BASE <= code <= EX__MAX


def sys_exits_detail(code: int) -> SysExitsDetail:
    """The status and text for an exit status; for one outside sysexits.h,
    Postfix's generic entry: 5.3.0 "unknown mail system error N"."""
    if sys_exits_code(code):
        return _TABLE[code]
    return SysExitsDetail(code, "5.3.0", f"unknown mail system error {code}")
